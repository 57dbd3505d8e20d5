//! The control core: one session's control channel from raw bytes to actions, free of I/O.
//!
//! A driver feeds it what each side sent, what became of data channels and the current time,
//! and carries out what [`ControlCore::poll_action`] hands back; [`ControlCore::poll_timeout`]
//! says when to call [`ControlCore::handle_timeout`]. Telnet handling, framing, the overlong
//! policies, greeting detection, every control-channel deadline and the order of replies all
//! live here, so a unit test, a fuzzer or a property test exercises exactly what the gateway
//! runs.

use super::action::{Action, DataId, DataReady, Note, Outcome, TransferInfo};
use super::login::{ConnectFailure, LoginMode, LoginStep};
use super::machine::Session;
use super::tls::{Protection, Side};
use super::{PhaseName, Refusal, SessionPolicy};
use crate::addr::{ClientAddr, UpstreamAddr};
use crate::protocol::{Frame, LineFramer, TelnetEvent, TelnetFilter};
use std::time::{Duration, Instant};

/// Server reply lines may be longer than command lines (paths in 257, long 211 texts).
pub const MAX_REPLY_LINE: usize = 8192;
/// Reply bytes that may wait for the client: a transfer's closing reply and what follows it
/// while the data drains, or replies behind a slow earlier one.
pub const MAX_HELD_REPLIES: usize = 64 * 1024;

/// The client's last line when an administrator ends its session.
pub const ADMIN_CLOSED: &str = "Session ended by the administrator";

/// The control channel's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreTimeouts {
    /// From connecting until the server's greeting.
    pub banner: Duration,
    /// From a command sent to an idle server, or from its last complete reply, to the next.
    pub reply: Duration,
    /// Without a command from the client while nothing is pending.
    pub idle: Duration,
    /// A data channel's idle bound; a transfer's control connection stays quiet for longer.
    pub data_idle: Duration,
    /// From the client's arrival until its login names a server (forward proxy, routes).
    pub login: Duration,
    /// The login phase's wait for the driver to connect to the server (name resolution
    /// included); the driver's own connect timeout is this one too.
    pub connect: Duration,
}

#[derive(Debug)]
pub struct ControlCore {
    session: Session,
    timeouts: CoreTimeouts,
    telnet: TelnetFilter,
    telnet_events: Vec<TelnetEvent>,
    cframer: LineFramer,
    sframer: LineFramer,
    /// Client bytes after Telnet filtering, not yet framed (bounded: read only while commands
    /// are taken, and each read is framed at once).
    cbuf: Vec<u8>,
    sbuf: Vec<u8>,
    /// Where in `cbuf` a Telnet interrupt (IP, DM) arrived: the command from there on is urgent.
    interrupt_at: Option<usize>,
    /// When the server last completed a reply, or was asked while owing nothing.
    server_clock: Instant,
    /// When the client last sent a command.
    client_clock: Instant,
    closing_since: Option<Instant>,
    /// When the session started, for the login deadline.
    started: Instant,
    /// When the login phase asked the driver to connect.
    connecting_since: Option<Instant>,
}

impl ControlCore {
    pub fn new(
        client: ClientAddr,
        upstream: UpstreamAddr,
        policy: SessionPolicy,
        timeouts: CoreTimeouts,
        now: Instant,
    ) -> Self {
        Self::with_session(Session::new(client, upstream, policy, MAX_HELD_REPLIES), timeouts, now)
    }

    /// A session without a server yet: ftpgate greets the client and takes the login, then
    /// hands out [`Action::Connect`].
    pub fn with_login(
        client: ClientAddr,
        mode: LoginMode,
        policy: SessionPolicy,
        timeouts: CoreTimeouts,
        now: Instant,
    ) -> Self {
        let mut core = Self::with_session(Session::with_login(client, mode, policy, MAX_HELD_REPLIES), timeouts, now);
        core.settle(now);
        core
    }

    fn with_session(session: Session, timeouts: CoreTimeouts, now: Instant) -> Self {
        let max_line = session.policy.max_line;
        Self {
            session,
            timeouts,
            telnet: TelnetFilter::new(),
            telnet_events: Vec::new(),
            cframer: LineFramer::new(max_line),
            sframer: LineFramer::new(MAX_REPLY_LINE),
            cbuf: Vec::with_capacity(max_line),
            sbuf: Vec::new(),
            interrupt_at: None,
            server_clock: now,
            client_clock: now,
            closing_since: None,
            started: now,
            connecting_since: None,
        }
    }

    /// The driver connected to the server [`Action::Connect`] asked for.
    pub fn handle_upstream_connected(&mut self, upstream: UpstreamAddr, now: Instant) {
        self.session.on_upstream_connected(upstream);
        // The banner timeout runs from here.
        self.server_clock = now;
        self.pump(now);
    }

    /// The driver could not connect where [`Action::Connect`] asked.
    pub fn handle_upstream_failed(&mut self, failure: ConnectFailure, now: Instant) {
        self.session.on_upstream_failed(failure);
        self.pump(now);
    }

    /// The upstream once connected (the login phase sets it late).
    pub fn upstream_known(&self) -> bool {
        !matches!(self.session.login_step(), Some(LoginStep::User | LoginStep::Pass | LoginStep::Connecting))
    }

    /// True when the driver should read from the client: commands are taken now. Otherwise the
    /// client's bytes wait in its socket (TCP backpressure).
    pub fn wants_client_input(&self) -> bool {
        self.session.accepts_commands()
    }

    /// True when the driver should read from the server.
    pub fn wants_server_input(&self) -> bool {
        self.session.processes_input()
    }

    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// The next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.session.poll_action()
    }

    /// The user name the client logged in with, as far as the gateway saw.
    pub fn user(&self) -> Option<&str> {
        self.session.user()
    }

    /// Where the session stands, for the admin API.
    pub fn phase(&self) -> PhaseName {
        self.session.phase_name()
    }

    /// The transfer the open data channel carries, for the admin API.
    pub fn transfer(&self) -> Option<&TransferInfo> {
        self.session.transfer()
    }

    /// An administrator ends the session: what may go to the client goes, then a 421 saying
    /// so, and both connections close; a transfer in progress is aborted (and noted as such).
    pub fn handle_admin_close(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.session.close_now(Outcome::AdminClosed, Some(ADMIN_CLOSED));
        self.settle(now);
    }

    /// Which side of the next data channel speaks TLS: the side that asked `PROT P`.
    pub fn protection(&self) -> Protection {
        self.session.protection()
    }

    /// Which control connections speak TLS now (client, server).
    pub fn tls_sides(&self) -> (bool, bool) {
        self.session.tls_sides()
    }

    /// Before any bytes: the driver began these sides in TLS (implicit FTPS).
    pub fn started_in_tls(&mut self, client: bool, server: bool) {
        self.session.started_in_tls(client, server);
    }

    /// The handshake [`Action::StartTls`] asked for succeeded.
    pub fn handle_tls_ready(&mut self, side: Side, now: Instant) {
        self.session.on_tls_ready(side);
        self.pump(now);
    }

    /// The handshake [`Action::StartTls`] asked for failed; the session closes.
    pub fn handle_tls_failed(&mut self, side: Side, why: &str, now: Instant) {
        self.session.on_tls_failed(side, why);
        self.settle(now);
    }

    pub fn handle_client_bytes(&mut self, bytes: &[u8], now: Instant) {
        if self.is_closed() {
            return;
        }
        let before = self.cbuf.len();
        self.telnet.feed(bytes, &mut self.cbuf, &mut self.telnet_events);
        // Option refusals of one read go out in one write; only those within the malformed
        // limit are answered (the one past it closes the session). Negotiations count before
        // the commands of the same read: a run can only end sooner than line by line.
        let room = self.session.malformed_room();
        let mut refusals = Vec::new();
        let mut negotiations = 0u32;
        for ev in self.telnet_events.drain(..) {
            match ev {
                // Offsets are approximate within one read (the filter reports events after the
                // whole chunk); the first interrupt marks the first command framed after it.
                TelnetEvent::InterruptProcess | TelnetEvent::DataMark => {
                    self.interrupt_at.get_or_insert(before);
                }
                TelnetEvent::Refused { reply } => {
                    if negotiations < room {
                        refusals.extend_from_slice(&reply);
                    }
                    negotiations = negotiations.saturating_add(1);
                }
                TelnetEvent::Negotiation => negotiations = negotiations.saturating_add(1),
                TelnetEvent::Ignored => {}
            }
        }
        if !refusals.is_empty() {
            self.session.out.push_back(Action::ToClientOutOfBand(refusals));
        }
        if negotiations > 0 {
            self.session.on_telnet_negotiation(negotiations);
            if self.is_closed() {
                return self.settle(now);
            }
        }
        self.pump(now);
    }

    pub fn handle_server_bytes(&mut self, bytes: &[u8], now: Instant) {
        if self.is_closed() {
            return;
        }
        self.sbuf.extend_from_slice(bytes);
        self.pump(now);
    }

    pub fn handle_client_eof(&mut self, now: Instant) {
        self.session.close_gracefully(Outcome::ClientClosed, None);
        self.settle(now);
    }

    pub fn handle_server_eof(&mut self, now: Instant) {
        // Clients take a bare close for a network fault; a 421 says the server ended it.
        self.session.close_gracefully(Outcome::ServerClosed, Some("Server closed the control connection"));
        self.settle(now);
    }

    pub fn handle_data_ready(&mut self, id: DataId, ready: DataReady, now: Instant) {
        self.session.on_data_ready(id, ready);
        self.pump(now);
    }

    pub fn handle_data_failed(&mut self, id: DataId, why: &str, now: Instant) {
        self.session.on_data_failed(id, why);
        self.pump(now);
    }

    /// Data channel `id` is finished; `delivered` is false when it ended before every byte of
    /// its transfer crossed. Returns the transfer it carried when the core still knew the
    /// channel (`Some(None)`: a channel that carried no transfer command); a stale id gives
    /// `None` and a note.
    pub fn handle_data_finished(&mut self, id: DataId, delivered: bool, now: Instant) -> Option<Option<TransferInfo>> {
        let t = self.session.on_data_finished(id, delivered);
        // The control connection was quiet while data moved; neither side is idle.
        self.server_clock = self.server_clock.max(now);
        self.client_clock = self.client_clock.max(now);
        self.pump(now);
        t
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline().map(|(at, _)| at)
    }

    fn deadline(&self) -> Option<(Instant, Option<(&'static str, Outcome)>)> {
        if self.is_closed() {
            return None;
        }
        let t = &self.timeouts;
        if let Some(since) = self.closing_since {
            return Some((since + t.data_idle, None));
        }
        let s = &self.session;
        match s.login_step() {
            Some(LoginStep::User | LoginStep::Pass) => {
                let login = (self.started + t.login, Some(("Login timed out, closing", Outcome::IdleTimeout)));
                let idle = (
                    self.client_clock + t.idle,
                    Some(("Idle timeout, closing control connection", Outcome::IdleTimeout)),
                );
                return Some(if login.0 <= idle.0 { login } else { idle });
            }
            Some(LoginStep::Connecting) => {
                let since = self.connecting_since.unwrap_or(self.server_clock);
                return Some((since + t.connect, Some(("Server connection timed out, closing", Outcome::Refused))));
            }
            _ => {}
        }
        if s.awaiting_reply() && !s.transfer_running() && !s.data_open() {
            return Some(if s.greeted() {
                (self.server_clock + t.reply, Some(("Server did not reply in time, closing", Outcome::ReplyTimeout)))
            } else {
                (self.server_clock + t.banner, Some(("Server did not greet in time, closing", Outcome::ReplyTimeout)))
            });
        }
        if s.data_open() || s.transfer_running() {
            // Data channels carry their own accept and idle timeouts; the control connection
            // stays quiet for as long as the transfer lasts.
            let far = self.client_clock.max(self.server_clock) + t.idle.max(t.data_idle) * 4;
            return Some((far, Some(("Transfer stalled, closing", Outcome::IdleTimeout))));
        }
        Some((self.client_clock + t.idle, Some(("Idle timeout, closing control connection", Outcome::IdleTimeout))))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let Some((at, what)) = self.deadline() else { return };
        if now < at {
            return;
        }
        match what {
            Some((text, outcome)) => {
                self.session.note(Note::Timeout(text));
                self.session.close_now(outcome, Some(text));
            }
            // Replies held for a transfer that never drained: they go nowhere.
            None => {
                let outcome = self.session.closing().unwrap_or(Outcome::Error);
                self.session.close_now(outcome, None);
            }
        }
        self.settle(now);
    }

    /// Processes what is buffered for as long as the session takes it.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            if self.session.processes_input() {
                progressed |= self.server_line(now);
            }
            if self.session.accepts_commands() && self.session.processes_input() {
                progressed |= self.client_frame(now);
            }
            if !progressed || self.is_closed() {
                break;
            }
        }
        if let Some(side) = self.session.securing() {
            self.discard_clear_text(side);
        }
        self.settle(now);
    }

    /// A side is being switched to TLS: what it sent in clear text behind the exchange that
    /// switches it is no command of the TLS session (CVE-2011-0411), so it goes, counted.
    fn discard_clear_text(&mut self, side: Side) {
        let bytes = match side {
            Side::Client => {
                let n = self.cbuf.len();
                self.cbuf.clear();
                self.cframer = LineFramer::new(self.cframer.max());
                self.telnet = TelnetFilter::new();
                self.interrupt_at = None;
                n
            }
            Side::Server => {
                let n = self.sbuf.len();
                self.sbuf.clear();
                self.sframer = LineFramer::new(MAX_REPLY_LINE);
                n
            }
        };
        if bytes > 0 {
            self.session.note(Note::Refused(Refusal::ClearTextAfterAuth { side, bytes }));
        }
    }

    fn settle(&mut self, now: Instant) {
        self.session.flush();
        if self.session.login_step() == Some(LoginStep::Connecting) {
            self.connecting_since.get_or_insert(now);
        } else {
            self.connecting_since = None;
        }
        if self.session.closing().is_some() && self.closing_since.is_none() {
            self.closing_since = Some(now);
        }
    }

    fn server_line(&mut self, now: Instant) -> bool {
        let Some(frame) = self.sframer.next_frame(&mut self.sbuf) else { return false };
        match frame {
            Frame::Line(line) => {
                let was_waiting = self.session.awaiting_reply();
                self.session.on_server_line(&line);
                // The reply clock restarts only when a reply is complete, so an endless
                // multi-line reply is cut off by the reply timeout.
                if was_waiting && !self.session.mid_reply() {
                    self.server_clock = now;
                }
            }
            Frame::Overlong => {
                self.session.note(Note::Refused(Refusal::MalformedReply));
                self.session.close_now(Outcome::Error, Some("Server sent an overlong reply line, closing"));
            }
        }
        true
    }

    fn client_frame(&mut self, now: Instant) -> bool {
        let before = self.cbuf.len();
        let frame = self.cframer.next_frame(&mut self.cbuf);
        let consumed = before - self.cbuf.len();
        let interrupted = match (self.interrupt_at, &frame) {
            (Some(at), Some(_)) if at < consumed => {
                self.interrupt_at = None;
                true
            }
            (Some(at), _) => {
                self.interrupt_at = Some(at.saturating_sub(consumed));
                false
            }
            (None, _) => false,
        };
        let Some(frame) = frame else { return false };
        let idle = !self.session.awaiting_reply();
        self.client_clock = now;
        self.session.on_client_frame(frame, interrupted);
        // A reply is timed from the oldest command the server has not answered.
        if idle && self.session.awaiting_reply() {
            self.server_clock = now;
        }
        true
    }
}
