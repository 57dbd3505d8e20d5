//! Drives one control core: reads both sides when the core wants their bytes, writes what it
//! says, sets up the data channels it asks for, and reports time and data-channel endings
//! back. Generic over the streams, so a TLS stream can stand in for TCP; every decision is the
//! core's.

use super::data::{open_active, open_listeners, open_passive, start_connect, DataTask, Endpoints};
use super::kernel_transfer::{KernelTransfers, Report};
use super::registry::{EndedBy, Registered};
use super::stream::ControlStream;
use super::transfer_log;
use super::Shared;
use crate::data::DataOutcome;
use crate::labels::{DataMode, Reason, ReplyClass};
use crate::metrics::Metrics;
use crate::session::{
    Action, ControlCore, DataId, DataReady, DataRequest, Note, Outcome, PhaseName, Side, TransferInfo,
};
use crate::tls::{DataTls, Upgrade};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

const IAC_IP_IAC: [u8; 3] = [255, 244, 255];
const DM: u8 = 242;

enum Event {
    Client(io::Result<usize>),
    Server(io::Result<usize>),
    DataDone(Result<DataOutcome, tokio::task::JoinError>),
    AdminEnd(Result<EndedBy, tokio::sync::oneshot::error::RecvError>),
    Timeout,
}

/// What the registry was last told, so that it is told only changes.
struct Published {
    phase: PhaseName,
    user: Option<String>,
    transfer: Option<DataId>,
    tls: (bool, bool),
}

/// A session's TLS configurations: toward its clients (made when first needed: under
/// inspection it is a certificate issued for this server) and toward its server (with the
/// session's own resumption store, shared by its data connections).
#[derive(Default)]
pub(super) struct SessionTls {
    pub for_client: Option<Arc<ServerConfig>>,
    pub for_server: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

pub(super) struct Driver<'a> {
    pub shared: &'a Shared,
    pub ep: Endpoints,
    pub tls: SessionTls,
    data: Option<(DataId, DataTask)>,
    /// The kernel path: its transfers' final replies, the connection an ABOR cuts.
    kernel: KernelTransfers,
    /// Data bytes relayed toward the server and toward the client.
    pub up: u64,
    pub down: u64,
    /// The session's entry in the live-sessions registry.
    registered: Registered,
    published: Published,
}

async fn admin_end(
    ended: &mut Option<tokio::sync::oneshot::Receiver<EndedBy>>,
) -> Result<EndedBy, tokio::sync::oneshot::error::RecvError> {
    match ended {
        Some(rx) => {
            let r = rx.await;
            *ended = None;
            r
        }
        None => std::future::pending().await,
    }
}

async fn data_done(data: &mut Option<(DataId, DataTask)>) -> Result<DataOutcome, tokio::task::JoinError> {
    match data {
        Some((_, t)) => (&mut t.handle).await,
        None => std::future::pending().await,
    }
}

async fn timed(limit: Duration, f: impl std::future::Future<Output = io::Result<()>>) -> io::Result<()> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "peer does not read")),
    }
}

/// Writes and flushes: a TLS stream may keep records of a write it accepted until the next
/// write or flush, and a reply must not wait for the client's next command.
async fn write_flushed<W: ControlStream>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

impl<'a> Driver<'a> {
    pub fn new(shared: &'a Shared, ep: Endpoints, registered: Registered) -> Self {
        let published = Published { phase: PhaseName::Greeting, user: None, transfer: None, tls: (false, false) };
        Self {
            shared,
            ep,
            tls: SessionTls::default(),
            data: None,
            kernel: KernelTransfers::default(),
            up: 0,
            down: 0,
            registered,
            published,
        }
    }

    /// Tells the registry what changed since the last event: phase, user, the transfer under
    /// way. Nothing is locked when nothing changed.
    fn publish(&mut self, core: &ControlCore) {
        let (entry, seen) = (&self.registered.entry, &mut self.published);
        let phase = core.phase();
        if phase != seen.phase {
            entry.set_phase(phase);
            seen.phase = phase;
        }
        let tls = core.tls_sides();
        if tls != seen.tls {
            entry.set_tls(super::registry::TlsState::of(tls.0, tls.1));
            seen.tls = tls;
        }
        if core.user() != seen.user.as_deref() {
            entry.set_user(core.user());
            seen.user = core.user().map(str::to_owned);
        }
        match (core.transfer(), &self.data) {
            (Some(t), Some((id, task))) if seen.transfer != Some(*id) => {
                entry.transfer_started(t.clone(), task.mode, Instant::now(), task.bytes.clone());
                seen.transfer = Some(*id);
            }
            (None, _) if seen.transfer.is_some() => {
                entry.transfer_gone();
                seen.transfer = None;
            }
            _ => {}
        }
    }

    /// A data channel is gone: what it moved joins the session's totals in the registry.
    fn channel_gone(&mut self, task: &DataTask) {
        self.registered.entry.channel_done(task.bytes.to_client(), task.bytes.to_server());
        self.published.transfer = None;
    }

    pub async fn run<C: ControlStream, S: ControlStream>(
        &mut self,
        core: &mut ControlCore,
        client: &mut C,
        server: &mut S,
    ) -> Outcome {
        let mut cchunk = [0u8; 2048];
        let mut schunk = [0u8; 4096];
        loop {
            if let Some(outcome) = self.carry_out(core, client, server).await {
                return outcome;
            }
            self.publish(core);
            // A closed core has no deadline; it handed out Close above, so this is never far.
            let deadline = core.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let event = tokio::select! {
                r = client.read(&mut cchunk), if core.wants_client_input() => Event::Client(r),
                r = server.read(&mut schunk), if core.wants_server_input() => Event::Server(r),
                r = data_done(&mut self.data) => Event::DataDone(r),
                r = admin_end(&mut self.registered.ended) => Event::AdminEnd(r),
                _ = tokio::time::sleep_until(deadline.into()) => Event::Timeout,
            };
            let now = Instant::now();
            match event {
                Event::Client(Ok(0) | Err(_)) => core.handle_client_eof(now),
                Event::Client(Ok(n)) => {
                    core.handle_client_bytes(&cchunk[..n], now);
                    if let Some(m) = client.read_past_urgent_mark(&mut cchunk) {
                        core.handle_client_bytes(&cchunk[..m], now);
                    }
                }
                Event::Server(Ok(0) | Err(_)) => core.handle_server_eof(now),
                Event::Server(Ok(n)) => {
                    // A reply to the transfer command while a kernel channel waits (its 150, its
                    // 226): check it now. Not before that command: a channel seen ended before
                    // it could not be told which transfer it carried.
                    let waiting = self.data.as_ref().and_then(|(_, t)| t.wake.as_ref());
                    if let Some(wake) = waiting.filter(|_| core.transfer().is_some()) {
                        wake.notify_one();
                    }
                    core.handle_server_bytes(&schunk[..n], now)
                }
                Event::DataDone(r) => {
                    if let Some((id, task)) = self.data.take() {
                        self.channel_gone(&task);
                        let handed = task.flow.filter(|_| r.as_ref().is_ok_and(|o| o.result.is_ok()));
                        let delivered = r.as_ref().is_ok_and(|o| o.handed_over || o.result.is_ok());
                        let transfer = core.handle_data_finished(id, delivered, now).flatten();
                        match handed {
                            Some(flow) => self.report_in_kernel(flow, &task, transfer, core.user()),
                            None => {
                                self.kernel.reset();
                                let client = self.ep.client.ip();
                                let (up, down) =
                                    transfer_log::channel_ended(self.shared, client, r, transfer.as_ref(), core.user());
                                self.up += up;
                                self.down += down;
                            }
                        }
                    }
                }
                Event::AdminEnd(Ok(by)) => {
                    info!(by_peer = %by.peer, by = %by.identity, "session ended by the administrator");
                    core.handle_admin_close(now);
                }
                // The registry keeps the sender while the session lives: this does not happen.
                Event::AdminEnd(Err(_)) => {}
                Event::Timeout => core.handle_timeout(now),
            }
        }
    }

    /// Carries out every action the core has; `Some` when the session is over.
    async fn carry_out<C: ControlStream, S: ControlStream>(
        &mut self,
        core: &mut ControlCore,
        client: &mut C,
        server: &mut S,
    ) -> Option<Outcome> {
        let t = &self.shared.cfg.live.timeouts;
        while let Some(action) = core.poll_action() {
            let written = match action {
                Action::ToClient { bytes, .. } | Action::ToClientOutOfBand(bytes) => {
                    timed(t.idle, write_flushed(client, &bytes)).await
                }
                Action::ToServer(bytes) => timed(t.reply, write_flushed(server, &bytes)).await,
                Action::ToServerUrgent(bytes) => self.write_urgent(server, &bytes).await,
                Action::StartTls(side) => {
                    self.start_tls(core, client, server, side).await;
                    Ok(())
                }
                Action::OpenData { id, request } => {
                    let now = Instant::now();
                    match self.open(id, request, core.protection()).await {
                        Ok(ready) => core.handle_data_ready(id, ready, now),
                        Err(e) => {
                            self.data_failed(request.mode(), &e);
                            core.handle_data_failed(id, &e.to_string(), now);
                        }
                    }
                    Ok(())
                }
                Action::DataCarries { id, toward } => {
                    if let Some((_, task)) = self.data.as_ref().filter(|(d, _)| *d == id) {
                        task.carries.send(toward);
                    }
                    Ok(())
                }
                Action::DropData(id) => {
                    if self.data.as_ref().is_some_and(|(d, _)| *d == id) {
                        if let Some((_, task)) = self.data.take() {
                            self.channel_gone(&task);
                            // Its pinhole may have been used a moment ago, unseen yet.
                            if let Some(flow) = task.flow {
                                self.kernel.reset();
                                self.cut(flow);
                            }
                            debug!(after_ms = task.started.elapsed().as_millis() as u64, "data channel closed");
                        }
                    }
                    Ok(())
                }
                // The kernel's connection ends first, so a server blocked on a client that
                // stopped reading gets to the ABOR.
                Action::Note(Note::Aborting) => {
                    if let Some(flow) = self.kernel.abort() {
                        self.cut(flow);
                    }
                    Ok(())
                }
                Action::Note(Note::TransferAborted { id, transfer }) => {
                    if let Some((_, task)) = self.data.as_ref().filter(|(d, _)| *d == id) {
                        transfer_log::aborted(self.shared, self.ep.client.ip(), task, &transfer, core.user());
                    }
                    Ok(())
                }
                Action::Note(n) => {
                    if let Note::ServerReply(code @ 200..) = n {
                        self.kernel_transfer_reply(core, code);
                    }
                    note(&self.shared.metrics, n);
                    Ok(())
                }
                Action::Close(outcome) => return Some(outcome),
                // The login phase ended before this driver started.
                Action::Connect(target) => {
                    warn!(%target, "connection asked for after the login phase, closing");
                    return Some(Outcome::Error);
                }
            };
            if let Err(e) = written {
                debug!(error = %e, "control connection write failed");
                return Some(Outcome::Error);
            }
        }
        None
    }

    /// The configuration a client's TLS is served with, made on first use.
    fn client_config(&mut self) -> Result<Arc<ServerConfig>, String> {
        if let Some(c) = &self.tls.for_client {
            return Ok(c.clone());
        }
        let c = self.shared.tls.for_clients(self.ep.upstream)?;
        self.tls.for_client = Some(c.clone());
        Ok(c)
    }

    /// Switches one side's control connection to TLS and tells the core how it went.
    async fn start_tls<C: ControlStream, S: ControlStream>(
        &mut self,
        core: &mut ControlCore,
        client: &mut C,
        server: &mut S,
        side: Side,
    ) {
        let limit = self.shared.cfg.live.timeouts.reply;
        let r = match side {
            Side::Client => match self.client_config() {
                Ok(cfg) => client.start_tls(Upgrade::Accept(cfg), limit).await,
                Err(e) => Err(io::Error::other(e)),
            },
            Side::Server => match self.tls.for_server.clone() {
                Some((cfg, name)) => server.start_tls(Upgrade::Connect(cfg, name), limit).await,
                None => Err(io::Error::other("no TLS configuration toward servers")),
            },
        };
        let now = Instant::now();
        match r {
            Ok(i) => {
                info!(side = side.label(), tls_version = %i.version, cipher = %i.cipher, resumed = i.resumed, "TLS established");
                core.handle_tls_ready(side, now);
            }
            Err(e) => {
                let reason = crate::tls::failure_reason(&e);
                self.shared.metrics.tls_handshake_failed(side.label(), reason);
                core.handle_tls_failed(side, &format!("{e} ({reason})"), now);
            }
        }
    }

    /// RFC 959 abort: Telnet IP, then the Synch (DM as urgent data), then the command.
    async fn write_urgent<S: ControlStream>(&self, server: &mut S, bytes: &[u8]) -> io::Result<()> {
        let wait = self.shared.cfg.live.timeouts.reply;
        timed(wait, server.write_all(&IAC_IP_IAC)).await?;
        if let Err(e) = server.send_urgent(DM) {
            debug!(error = %e, "urgent data not sent; ABOR goes in band");
        }
        timed(wait, write_flushed(server, bytes)).await
    }

    /// Has the kernel reset the connection that used `flow` (see `kernel_data`).
    fn cut(&self, flow: crate::pinhole::Pinhole) {
        if let Some(pinholes) = &self.shared.pinholes {
            debug!(?flow, "cutting the kernel data connection");
            pinholes.cut(flow, super::kernel_data::CUT_FOR);
        }
    }

    async fn open(
        &mut self,
        id: DataId,
        request: DataRequest,
        prot: crate::session::Protection,
    ) -> io::Result<DataReady> {
        let tls = DataTls {
            client: if prot.client { Some(self.client_config().map_err(io::Error::other)?) } else { None },
            server: if prot.server { self.tls.for_server.clone() } else { None },
        };
        // A new channel: the connection before it finished with its transfer.
        self.kernel.reset();
        let (shared, ep) = (self.shared, &self.ep);
        let (ready, task) = match (&shared.pinholes, request) {
            (Some(pinholes), request) => super::kernel_data::open(shared, pinholes, ep, request).await?,
            (None, request) => self.open_relay(request, tls)?,
        };
        debug!(mode = request.mode().label(), channel = %id, ready = ?ready, "data channel open");
        self.data = Some((id, task));
        Ok(ready)
    }

    fn open_relay(&self, request: DataRequest, tls: DataTls) -> io::Result<(DataReady, DataTask)> {
        let (shared, ep) = (self.shared, &self.ep);
        Ok(match request {
            DataRequest::Passive { server_data } => {
                open_passive(shared, ep, server_data, tls).map(|(at, task)| (DataReady::Listening(at), task))?
            }
            DataRequest::Active { client_data } => {
                open_active(shared, ep, client_data, tls).map(|(at, task)| (DataReady::Listening(at), task))?
            }
            DataRequest::Listeners => open_listeners(shared, ep, tls)
                .map(|(advertise, listen, task)| (DataReady::Listeners { advertise, listen }, task))?,
            DataRequest::Connect { server_data, client_data } => {
                (DataReady::Connecting, start_connect(shared, ep, server_data, client_data, tls)?)
            }
        })
    }

    /// A data channel could not be set up: counted by cause; the core answers the client 425.
    fn data_failed(&self, mode: DataMode, e: &io::Error) {
        // Every port of the configured range taken, or every data channel of the gateway.
        let reason = if e.kind() == io::ErrorKind::AddrInUse { Reason::PortExhausted } else { Reason::Limit };
        warn!(reason = reason.label(), mode = mode.label(), error = %e, "cannot open a data channel");
        self.shared.metrics.reject(reason);
    }

    /// A final reply from the server: on the kernel path, the first one to the transfer the
    /// kernel carries says whether it was whole (a 426 after the client reset the connection).
    fn kernel_transfer_reply(&mut self, core: &ControlCore, code: u16) {
        let waiting = self.data.as_ref().is_some_and(|(_, t)| t.flow.is_some()) && core.transfer().is_some();
        self.kernel.final_reply(code, waiting);
    }

    /// A kernel channel whose connection the kernel now carries: reported once the server's
    /// final reply and, where the kernel counts, the connection's end are in.
    fn report_in_kernel(
        &mut self,
        flow: crate::pinhole::Pinhole,
        task: &DataTask,
        transfer: Option<TransferInfo>,
        user: Option<&str>,
    ) {
        let verdict = self.kernel.handed_over(flow);
        let Some(pinholes) = &self.shared.pinholes else { return };
        debug!(mode = task.mode.label(), "transfer with the kernel; reported when decided");
        Report {
            pinholes: pinholes.clone(),
            pinhole: flow,
            mode: task.mode,
            transfer,
            user: user.map(str::to_owned),
            client: self.ep.client.ip(),
            xferlog: self.shared.xferlog.clone(),
            metrics: self.shared.metrics.clone(),
            idle: self.shared.cfg.live.timeouts.data_idle,
            started: task.started,
            verdict,
        }
        .spawn();
    }
}

/// Logs and counts what the core noted.
pub(super) fn note(m: &Metrics, n: Note) {
    match n {
        Note::Refused(why) => {
            warn!(reason = why.label().label(), fault = why.fault().label(), "refused: {why}");
            m.reject(why.label());
        }
        Note::Quirk(what) => info!(quirk = what, "server quirk handled"),
        // Not a refusal: the client asked nothing yet. Were it to use the feature anyway, that
        // command is refused, logged and counted.
        Note::FeatureHidden(name) => {
            debug!(reason = Reason::Policy.label(), feature = %name, "FEAT: feature the policy refuses left out")
        }
        Note::ServerReply(code) => {
            if let Some(class) = ReplyClass::from_code(code) {
                m.server_reply(class);
            }
        }
        Note::Timeout(text) => {
            warn!(reason = Reason::Timeout.label(), "{text}");
            m.reject(Reason::Timeout);
        }
        Note::StaleData { id, event } => debug!(channel = %id, event, "report about a data channel that is gone"),
        // Handled by the driver itself, which has the channel's counts.
        Note::TransferAborted { .. } | Note::Aborting => {}
    }
}
