//! Drives one control session: reads both sides, feeds the state machine, carries out its
//! actions, enforces the phase timeouts.

use super::data::{open_active, open_listeners, open_passive, start_connect, DataTask, Endpoints};
use super::Shared;
use crate::addr::{canonical, nat64_embedded, ClientAddr, LocalAddr, UpstreamAddr};
use crate::data::sockets::{connect, from_ip};
use crate::data::{DataError, DataOutcome};
use crate::metrics::{metrics, verb_label};
use crate::protocol::reply::reply_line;
use crate::protocol::{Frame, LineFramer, TelnetEvent, TelnetFilter};
use crate::session::{Action, Session};
use socket2::SockRef;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tracing::{debug, info, info_span, warn, Instrument};

/// Server reply lines may be longer than command lines (paths in 257, long 211 texts).
const MAX_REPLY_LINE: usize = 8192;
const IAC_IP_IAC: [u8; 3] = [255, 244, 255];
const DM: u8 = 242;

/// Why a session ended, for the session log line and `ftpgate_sessions_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    ClientQuit,
    ClientClosed,
    ServerClosed,
    Refused,
    IdleTimeout,
    ReplyTimeout,
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::ClientQuit => "client_quit",
            Outcome::ClientClosed => "client_closed",
            Outcome::ServerClosed => "server_closed",
            Outcome::Refused => "refused",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::ReplyTimeout => "reply_timeout",
            Outcome::Error => "error",
        }
    }
}

/// Counts a session as active for as long as it lives.
struct ActiveSession;

impl ActiveSession {
    fn new() -> Self {
        metrics().sessions_active.inc();
        Self
    }
}

impl Drop for ActiveSession {
    fn drop(&mut self) {
        metrics().sessions_active.dec();
    }
}

pub async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    let _active = ActiveSession::new();
    let client_addr = ClientAddr(canonical(peer));
    let local = match client.local_addr() {
        Ok(a) => LocalAddr(canonical(a)),
        Err(e) => {
            warn!(client = %client_addr, error = %e, "cannot read local address of accepted connection");
            return;
        }
    };
    let span =
        info_span!("session", client = %client_addr, dst = tracing::field::Empty, upstream = tracing::field::Empty);
    let started = Instant::now();
    async move {
        let (outcome, up, down) = run(&shared, client, client_addr, local).await;
        let m = metrics();
        m.sessions.with_label_values(&[outcome.label()]).inc();
        m.session_duration.observe(started.elapsed().as_secs_f64());
        info!(outcome = ?outcome, duration_ms = started.elapsed().as_millis() as u64, bytes_to_client = down, bytes_to_server = up, "session end");
    }
    .instrument(span)
    .await;
}

async fn refuse(mut client: TcpStream, code: u16, text: &str) -> (Outcome, u64, u64) {
    let _ = tokio::time::timeout(Duration::from_secs(5), client.write_all(&reply_line(code, text))).await;
    (Outcome::Refused, 0, 0)
}

async fn run(shared: &Shared, client: TcpStream, client_addr: ClientAddr, local: LocalAddr) -> (Outcome, u64, u64) {
    let cfg = &shared.cfg.live;
    let original = match shared.interceptor.original_dst(&client, client_addr.0, local) {
        Ok(o) => o,
        Err(e) => {
            warn!(reason = "intercept", error = %e, "cannot tell where the client was going");
            metrics().reject("intercept");
            return refuse(client, 421, "Gateway cannot determine the destination").await;
        }
    };
    let upstream = match (original, cfg.upstream) {
        (_, Some(u)) => UpstreamAddr(canonical(u)),
        (Some(dst), None) => {
            if shared.interceptor.is_loop(dst, local, &shared.listening) {
                warn!(reason = "loop", %dst, "connection addressed to ftpgate itself, refused");
                metrics().reject("loop");
                return refuse(client, 421, "Connection to the gateway itself refused (not diverted)").await;
            }
            match (cfg.nat64_prefix, dst.ip()) {
                (Some(prefix), IpAddr::V6(v6)) => match nat64_embedded(prefix, v6) {
                    Some(v4) => UpstreamAddr(SocketAddr::new(IpAddr::V4(v4), dst.port())),
                    None => UpstreamAddr(dst.0),
                },
                _ => UpstreamAddr(dst.0),
            }
        }
        (None, None) => return refuse(client, 421, "No upstream configured").await,
    };
    let span = tracing::Span::current();
    if let Some(dst) = original {
        span.record("dst", tracing::field::display(dst));
    }
    span.record("upstream", tracing::field::display(upstream));

    let connect_started = Instant::now();
    let server = match connect(upstream.0, from_ip(cfg.upstream_source), cfg.timeouts.connect, cfg.control_tags).await {
        Ok(s) => s,
        Err(e) => {
            warn!(reason = "upstream_connect", error = %e, "cannot connect to server");
            metrics().upstream_connect_failures.inc();
            metrics().reject("upstream_connect");
            return refuse(client, 421, &format!("Cannot connect to {upstream}: {e}")).await;
        }
    };
    let server_side = match server.local_addr() {
        Ok(a) => LocalAddr(canonical(a)),
        Err(e) => return refuse(client, 421, &format!("Gateway error: {e}")).await,
    };
    metrics().upstream_connect_duration.observe(connect_started.elapsed().as_secs_f64());
    info!(connect_ms = connect_started.elapsed().as_millis() as u64, %server_side, "session start");
    // Telnet Synch: urgent data must stay in band or the byte it marks would vanish from lines.
    let _ = SockRef::from(&client).set_out_of_band_inline(true);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    let ep = Endpoints { client: client_addr, client_side: local, original, upstream, server_side };
    let session = Session::new(client_addr, upstream, cfg.session.clone());
    let (crd, cwr) = client.into_split();
    let (srd, swr) = server.into_split();
    let mut c = Conn {
        shared,
        ep,
        session,
        cwr,
        swr,
        data: None,
        held: Vec::new(),
        up: 0,
        down: 0,
        server_clock: Instant::now(),
        client_clock: Instant::now(),
        greeted: false,
    };
    let outcome = c.run(crd, srd).await;
    (outcome, c.up, c.down)
}

struct Conn<'a> {
    shared: &'a Shared,
    ep: Endpoints,
    session: Session,
    cwr: OwnedWriteHalf,
    swr: OwnedWriteHalf,
    data: Option<DataTask>,
    /// Client-bound bytes waiting for the running data channel to drain.
    held: Vec<u8>,
    up: u64,
    down: u64,
    /// When the server last made progress (or was last asked something).
    server_clock: Instant,
    client_clock: Instant,
    greeted: bool,
}

enum Step {
    Continue,
    Stop(Outcome),
}

async fn data_done(data: &mut Option<DataTask>) -> Result<DataOutcome, tokio::task::JoinError> {
    match data {
        Some(t) => (&mut t.handle).await,
        None => std::future::pending().await,
    }
}

impl Conn<'_> {
    async fn run(&mut self, mut crd: OwnedReadHalf, mut srd: OwnedReadHalf) -> Outcome {
        let cfg = &self.shared.cfg.live;
        let mut cbuf = Vec::with_capacity(cfg.max_line);
        let mut sbuf = Vec::with_capacity(1024);
        let mut cframer = LineFramer::new(cfg.max_line);
        let mut sframer = LineFramer::new(MAX_REPLY_LINE);
        let mut telnet = TelnetFilter::new();
        let mut events = Vec::new();
        let mut interrupted = false;
        let mut cchunk = [0u8; 2048];
        let mut schunk = [0u8; 4096];
        loop {
            let (deadline, on_expiry) = self.deadline();
            let step = tokio::select! {
                r = crd.read(&mut cchunk) => match r {
                    Ok(0) | Err(_) => Step::Stop(Outcome::ClientClosed),
                    Ok(n) => {
                        self.client_clock = Instant::now();
                        telnet.feed(&cchunk[..n], &mut cbuf, &mut events);
                        let past_mark = read_past_urgent_mark(&crd, &mut cchunk);
                        if let Some(m) = past_mark {
                            telnet.feed(&cchunk[..m], &mut cbuf, &mut events);
                        }
                        let mut step = Step::Continue;
                        for ev in events.drain(..) {
                            match ev {
                                TelnetEvent::InterruptProcess | TelnetEvent::DataMark => interrupted = true,
                                TelnetEvent::Refused { reply } => { let _ = self.cwr.write_all(&reply).await; }
                                TelnetEvent::Ignored => {}
                            }
                        }
                        while let Some(frame) = cframer.next_frame(&mut cbuf) {
                            let actions = self.session.on_client_frame(frame, interrupted);
                            interrupted = false;
                            step = self.exec(actions).await;
                            if matches!(step, Step::Stop(_)) { break; }
                        }
                        step
                    }
                },
                r = srd.read(&mut schunk) => match r {
                    Ok(0) | Err(_) => Step::Stop(Outcome::ServerClosed),
                    Ok(n) => {
                        sbuf.extend_from_slice(&schunk[..n]);
                        let mut step = Step::Continue;
                        while let Some(frame) = sframer.next_frame(&mut sbuf) {
                            let actions = match frame {
                                Frame::Line(line) => {
                                    tracing::trace!(reply = %String::from_utf8_lossy(&line).trim_end(), "server");
                                    let actions = self.session.on_server_line(&line);
                                    if !self.session.mid_reply() {
                                        count_reply_class(&line);
                                    }
                                    actions
                                }
                                Frame::Overlong => vec![
                                    Action::Refused(crate::session::Refusal::MalformedReply),
                                    Action::ToClient(reply_line(421, "Server sent an overlong reply line, closing")),
                                    Action::Close,
                                ],
                            };
                            if !self.greeted && !actions.is_empty() {
                                self.greeted = !self.session.awaiting_reply();
                            }
                            // The reply clock restarts only when a reply is complete, so an
                            // endless multi-line reply is cut off by the reply timeout.
                            if !self.session.mid_reply() {
                                self.server_clock = Instant::now();
                            }
                            step = self.exec(actions).await;
                            if matches!(step, Step::Stop(_)) { break; }
                        }
                        step
                    }
                },
                r = data_done(&mut self.data) => {
                    self.finish_data(r);
                    self.flush_held().await
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let (code, text, outcome) = on_expiry;
                    warn!(reason = "timeout", "{text}");
                    metrics().reject("timeout");
                    let _ = self.write_client(&reply_line(code, text)).await;
                    Step::Stop(outcome)
                }
            };
            if let Step::Stop(outcome) = step {
                self.drain_on_exit().await;
                return outcome;
            }
        }
    }

    /// The next phase deadline and what to say when it passes.
    fn deadline(&self) -> (Instant, (u16, &'static str, Outcome)) {
        let t = &self.shared.cfg.live.timeouts;
        if self.session.awaiting_reply() && !self.session.transfer_running() && self.data.is_none() {
            let (wait, text) = if self.greeted {
                (t.reply, "Server did not reply in time, closing")
            } else {
                (t.banner, "Server did not greet in time, closing")
            };
            return (self.server_clock + wait, (421, text, Outcome::ReplyTimeout));
        }
        if self.data.is_some() || self.session.transfer_running() {
            // Data channels carry their own accept and idle timeouts; the control connection
            // stays quiet for as long as the transfer lasts.
            let far = self.client_clock.max(self.server_clock) + t.idle.max(t.data_idle) * 4;
            return (far, (421, "Transfer stalled, closing", Outcome::IdleTimeout));
        }
        (self.client_clock + t.idle, (421, "Idle timeout, closing control connection", Outcome::IdleTimeout))
    }

    async fn exec(&mut self, actions: Vec<Action>) -> Step {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let r = match action {
                Action::ToClient(b) => {
                    if self.held.is_empty() {
                        self.write_client(&b).await
                    } else {
                        self.hold(&b);
                        Ok(())
                    }
                }
                Action::ToClientAfterData(b) => {
                    if self.data.is_some() || !self.held.is_empty() {
                        self.hold(&b);
                        Ok(())
                    } else {
                        self.write_client(&b).await
                    }
                }
                Action::ToServer(b) => self.write_server(&b).await,
                Action::ToServerUrgent(b) => self.write_server_urgent(&b).await,
                Action::OpenPassive { server_data } => {
                    let opened = open_passive(self.shared, &self.ep, server_data);
                    let follow = self.data_opened(opened, "passive", server_data, Session::on_passive_ready);
                    prepend(&mut queue, follow);
                    Ok(())
                }
                Action::OpenActive { client_data } => {
                    let opened = open_active(self.shared, &self.ep, client_data);
                    let follow = self.data_opened(opened, "active", client_data, Session::on_active_ready);
                    prepend(&mut queue, follow);
                    Ok(())
                }
                Action::OpenListeners => {
                    let follow = match open_listeners(self.shared, &self.ep) {
                        Ok((advertise, at, task)) => {
                            debug!(mode = "passive_to_active", %advertise, listen = %at, "data channel open");
                            self.data = Some(task);
                            self.session.on_listeners_ready(advertise, at)
                        }
                        Err(e) => self.data_failed("passive_to_active", &e),
                    };
                    prepend(&mut queue, follow);
                    Ok(())
                }
                Action::ConnectBoth { server_data, client_data } => {
                    let follow = match start_connect(self.shared, &self.ep, server_data, client_data) {
                        Ok(task) => {
                            debug!(mode = "active_to_passive", %server_data, %client_data, "data channel connecting");
                            self.data = Some(task);
                            self.session.on_connect_started()
                        }
                        Err(e) => self.data_failed("active_to_passive", &e),
                    };
                    prepend(&mut queue, follow);
                    Ok(())
                }
                Action::DropData => {
                    if let Some(task) = self.data.take() {
                        debug!(after_ms = task.started.elapsed().as_millis() as u64, "data channel closed");
                    }
                    if let Step::Stop(o) = self.flush_held().await {
                        return Step::Stop(o);
                    }
                    Ok(())
                }
                Action::Refused(why) => {
                    warn!(reason = why.label(), fault = why.fault().label(), "refused: {why}");
                    metrics().reject(why.label());
                    Ok(())
                }
                Action::Quirk(what) => {
                    info!(quirk = what, "server quirk handled");
                    Ok(())
                }
                Action::Close => {
                    return Step::Stop(if self.session.awaiting_reply() { Outcome::Error } else { Outcome::ClientQuit })
                }
            };
            if let Err(e) = r {
                debug!(error = %e, "control connection write failed");
                return Step::Stop(Outcome::Error);
            }
        }
        Step::Continue
    }

    /// Hands the result of opening a data listener to the session: the address to announce,
    /// or the failure that becomes a 425.
    fn data_opened(
        &mut self,
        opened: io::Result<(SocketAddr, DataTask)>,
        mode: &'static str,
        towards: SocketAddr,
        ready: fn(&mut Session, SocketAddr) -> Vec<Action>,
    ) -> Vec<Action> {
        match opened {
            Ok((at, task)) => {
                debug!(mode, listen = %at, %towards, "data channel open");
                self.data = Some(task);
                ready(&mut self.session, at)
            }
            Err(e) => self.data_failed(mode, &e),
        }
    }

    /// A data channel could not be set up: counted by cause, and the client gets 425.
    fn data_failed(&mut self, mode: &'static str, e: &io::Error) -> Vec<Action> {
        // Every port of the configured range taken, or every data channel of the gateway.
        let reason = if e.kind() == io::ErrorKind::AddrInUse { "port_exhausted" } else { "limit" };
        warn!(reason, mode, error = %e, "cannot open a data channel");
        metrics().reject(reason);
        self.session.on_data_setup_failed(&e.to_string())
    }

    fn hold(&mut self, b: &[u8]) {
        // Bounded by the server's reply size: one transfer's final reply plus what follows it
        // before the data drains; a server that floods here is cut off.
        if self.held.len() + b.len() <= 64 * 1024 {
            self.held.extend_from_slice(b);
        } else {
            warn!(reason = "malformed", "server flooded replies while a transfer drained; dropping excess");
        }
    }

    fn finish_data(&mut self, r: Result<DataOutcome, tokio::task::JoinError>) {
        self.data = None;
        let verb = self.session.last_transfer().unwrap_or("-");
        let m = metrics();
        match r {
            Ok(o) if o.handed_over => {
                info!(verb, "passive data port handed over to a site-to-site transfer of this client")
            }
            Ok(o) => {
                self.up += o.to_server;
                self.down += o.to_client;
                let ms = o.duration.as_millis() as u64;
                match &o.result {
                    Ok(()) => info!(
                        verb,
                        mode = o.mode,
                        bytes_to_client = o.to_client,
                        bytes_to_server = o.to_server,
                        duration_ms = ms,
                        "transfer done"
                    ),
                    Err(e) => warn!(
                        verb,
                        mode = o.mode,
                        bytes_to_client = o.to_client,
                        bytes_to_server = o.to_server,
                        duration_ms = ms,
                        reason = e.label(),
                        "transfer failed: {e}"
                    ),
                }
                match &o.result {
                    // Nobody came: no transfer took place.
                    Err(DataError::AcceptTimeout { .. }) => m.reject("timeout"),
                    r => {
                        let outcome = if r.is_ok() { "ok" } else { "failed" };
                        m.transfers.with_label_values(&[verb_label(verb), outcome]).inc();
                        m.transfer_duration.observe(o.duration.as_secs_f64());
                    }
                }
                if !o.stolen_attempts.is_empty() {
                    warn!(reason = "port_stealing", peers = ?o.stolen_attempts, "data connections from unexpected peers refused");
                }
                self.log_transfer(&o);
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => warn!(error = %e, "data task failed"),
        }
    }

    /// The xferlog line of a file transfer that got its data connection.
    fn log_transfer(&self, o: &DataOutcome) {
        let (Some(log), Some(t)) = (&self.shared.xferlog, self.session.transfer_info()) else { return };
        let outgoing = match t.verb.as_str() {
            "RETR" => true,
            "STOR" | "STOU" | "APPE" => false,
            _ => return,
        };
        if matches!(o.result, Err(DataError::AcceptTimeout { .. }) | Err(DataError::Accept(_))) {
            return;
        }
        log.write(&crate::xferlog::Entry {
            client: self.ep.client.ip(),
            bytes: if outgoing { o.to_client } else { o.to_server },
            duration: o.duration,
            path: &t.path,
            binary: t.binary,
            outgoing,
            user: self.session.user().unwrap_or("-"),
            complete: o.result.is_ok(),
        });
    }

    async fn flush_held(&mut self) -> Step {
        if self.held.is_empty() || self.data.is_some() {
            return Step::Continue;
        }
        let held = std::mem::take(&mut self.held);
        match self.write_client(&held).await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Stop(Outcome::Error),
        }
    }

    /// On the way out, a final reply still held behind a draining transfer is delivered once
    /// the data has gone through (bounded by the data idle timeout).
    async fn drain_on_exit(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if self.data.is_some() {
            let wait = self.shared.cfg.live.timeouts.data_idle;
            if let Ok(r) = tokio::time::timeout(wait, data_done(&mut self.data)).await {
                self.finish_data(r);
            }
            self.data = None;
        }
        let _ = self.flush_held().await;
    }

    async fn write_client(&mut self, b: &[u8]) -> io::Result<()> {
        timed(self.shared.cfg.live.timeouts.idle, self.cwr.write_all(b)).await
    }

    async fn write_server(&mut self, b: &[u8]) -> io::Result<()> {
        self.server_clock = Instant::now();
        timed(self.shared.cfg.live.timeouts.reply, self.swr.write_all(b)).await
    }

    /// RFC 959 abort: Telnet IP, then the Synch (DM as urgent data), then the command.
    async fn write_server_urgent(&mut self, b: &[u8]) -> io::Result<()> {
        self.write_server(&IAC_IP_IAC).await?;
        let sock: &TcpStream = self.swr.as_ref();
        if let Err(e) = SockRef::from(sock).send_out_of_band(&[DM]) {
            debug!(error = %e, "urgent data not sent; ABOR goes in band");
        }
        self.write_server(b).await
    }
}

/// A read stops at the urgent mark (`ABOR` sent as urgent data, as Python's ftplib does), and
/// tokio takes the short read to mean the socket is drained, so the byte after the mark would
/// never be signalled. One direct non-blocking read fetches it.
fn read_past_urgent_mark(rd: &OwnedReadHalf, buf: &mut [u8]) -> Option<usize> {
    use std::io::Read;
    let stream: &TcpStream = rd.as_ref();
    let sock = SockRef::from(stream);
    match (&*sock).read(buf) {
        Ok(n) if n > 0 => Some(n),
        _ => None,
    }
}

/// `ftpgate_server_replies_total{class}` for a reply's final line.
fn count_reply_class(line: &[u8]) {
    if let Some(code) = crate::protocol::reply::parse_code(line) {
        let class = ["1xx", "2xx", "3xx", "4xx", "5xx"][usize::from(code / 100 - 1).min(4)];
        metrics().server_replies.with_label_values(&[class]).inc();
    }
}

fn prepend(queue: &mut std::collections::VecDeque<Action>, follow: Vec<Action>) {
    for a in follow.into_iter().rev() {
        queue.push_front(a);
    }
}

async fn timed(limit: Duration, f: impl std::future::Future<Output = io::Result<()>>) -> io::Result<()> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "peer does not read")),
    }
}
