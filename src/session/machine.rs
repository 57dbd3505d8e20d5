//! The line-level state machine: one client command or one server reply line at a time, policy
//! applied, replies queued in command order, actions out.

use super::action::{Action, DataId, Note, Outcome, TransferInfo};
use super::login::{Login, LoginMode, LoginStep};
use super::policy::SessionPolicy;
use super::replies::{Overflow, ReplyQueue};
use super::tls::{Side, TlsState, UpstreamStep};
use super::Refusal;
use crate::addr::{ClientAddr, UpstreamAddr};
use crate::protocol::reply::reply_line;
use crate::protocol::ReplyTracker;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Commands sent to the server and not yet answered. At the bound the client's input waits
/// (TCP backpressure), so what a client can pile up is bounded whatever the server does.
pub const MAX_IN_FLIGHT: usize = 32;
/// Replies relayed behind an ABOR before the barrier is given up (a server that never
/// answers NOOP with 200).
pub(super) const MAX_ABORT_REPLIES: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveForm {
    /// `PASV` / `227`.
    Pasv,
    /// `EPSV` / `229`.
    Epsv,
}

/// What the client asked for that a passive exchange with the server is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientWants {
    Passive(PassiveForm),
    /// PORT/EPRT naming this address, carried out in passive mode toward the server.
    Active(SocketAddr),
}

/// What a reply the server owes means, in the order the commands were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
    Greeting,
    /// The greeting of a server the login phase connected to: hidden; the login is replayed.
    LoginGreeting,
    /// The reply to a replayed USER (routes): hidden; PASS follows a 331.
    LoginUser,
    Relay,
    /// The reply is buffered whole (bounded) and answered with a data channel, which carries
    /// `transfer` when the client pipelined one behind the passive command.
    Passive {
        client: ClientWants,
        server: PassiveForm,
        reply: Vec<u8>,
        transfer: Option<TransferInfo>,
    },
    PortAck,
    /// PORT/EPRT sent for a client that asked for passive mode: a positive reply is answered
    /// to the client with 227/229 for `advertise`.
    ConvertedPortAck {
        client: PassiveForm,
        advertise: SocketAddr,
    },
    Transfer {
        preliminary: bool,
        /// The data channel ended without delivering everything: a positive final reply
        /// becomes 426.
        data_failed: bool,
    },
    /// Every reply up to the barrier's end answers ABOR (see [`Abort`]).
    Abort,
    /// FEAT: feature lines of what the policy refuses are left out.
    Feat,
    Quit,
    /// A client's `AUTH` relayed to the server (inspect): its 234 is answered once the
    /// server-side handshake succeeded.
    Auth,
    /// The gateway's own `AUTH TLS`, `PBSZ 0` or `PROT P` toward the server: consumed, never
    /// relayed.
    Upstream(UpstreamStep),
    /// `PBSZ` (`None`) or `PROT P`/`PROT C` relayed (inspect): takes effect when accepted.
    Protection(Option<bool>),
}

#[derive(Debug)]
pub(super) struct Pending {
    pub slot: u64,
    pub expect: Expect,
}

/// After ABOR: servers answer an aborted transfer with one or two replies (426 then 226, or a
/// lone 226, pure-ftpd even with a stray 150), and some discard whatever followed ABOR in
/// their input. So client commands wait; once the server's first reply to ABOR shows it is
/// back in its command loop, the gateway sends its own NOOP; every reply up to NOOP's 200 is
/// relayed, that 200 is dropped, and replies pair with commands exactly again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Abort {
    pub noop_sent: bool,
    pub replies: u8,
}

/// What a data channel being set up will answer once the driver reports it ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Setup {
    /// Tell the client this listener (227/229).
    Passive(PassiveForm),
    /// Tell the server this listener (PORT/EPRT).
    Active,
    /// Tell the server the server-side listener; the client later gets 227/229.
    Listeners(PassiveForm),
    /// Both connections are under way: accept the client's PORT/EPRT.
    Connect,
}

/// Where the session stands. Exactly one of these holds at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No server yet: ftpgate greeted the client and takes the login (forward proxy, routes).
    Login(LoginStep),
    /// The server has not greeted yet; client commands wait.
    Greeting,
    /// Commands and replies flow.
    Ready,
    /// ABOR was sent; client commands wait until the server is in step again.
    Aborting(Abort),
    /// The driver is setting up data channel `id`; nothing is processed until it answers.
    SettingUp {
        id: DataId,
        slot: u64,
        setup: Setup,
        abort: Option<Abort>,
    },
    /// Ending: replies already owed still go out (a transfer's closing reply after its data),
    /// then `farewell` (a 421 text) if any, and the session closes with this outcome.
    Closing {
        outcome: Outcome,
        farewell: Option<&'static str>,
    },
    /// The driver is switching `side` to TLS; nothing is read until it reports back. On an
    /// inspected session the server's side comes first, and `client_slot` is the client's
    /// `AUTH`, answered 234 once the server is verified.
    Securing {
        side: Side,
        client_slot: Option<u64>,
    },
    /// The gateway secures the server on its own account (`AUTH TLS`, `PBSZ 0`, `PROT P`)
    /// before any client command goes to it.
    SecuringUpstream,
    Closed,
}

/// The data channel a session has open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenData {
    pub id: DataId,
    /// The transfer command it carries, once one was sent.
    pub transfer: Option<TransferInfo>,
}

#[derive(Debug)]
pub struct Session {
    pub(super) client: ClientAddr,
    pub(super) upstream: UpstreamAddr,
    pub(super) policy: SessionPolicy,
    pub(super) phase: Phase,
    pub(super) expect: VecDeque<Pending>,
    pub(super) replies: ReplyQueue,
    pub(super) out: VecDeque<Action>,
    pub(super) tracker: ReplyTracker,
    pub(super) data: Option<OpenData>,
    pub(super) next_data: u64,
    pub(super) malformed_run: u32,
    /// The client sent `EPSV ALL`: only EPSV may set up data from now on.
    pub(super) epsv_all: bool,
    /// The user name last sent with USER (for the transfer log).
    pub(super) user: Option<String>,
    /// Set when the session started without a server (forward proxy, routes).
    pub(super) login: Option<Login>,
    /// TYPE I (or L 8) in force.
    pub(super) binary: bool,
    /// The slot of the client command being handled.
    pub(super) slot: u64,
    pub(super) tls: TlsState,
}

impl Session {
    /// `max_held` bounds the reply bytes waiting to go to the client.
    pub fn new(client: ClientAddr, upstream: UpstreamAddr, policy: SessionPolicy, max_held: usize) -> Self {
        let mut replies = ReplyQueue::new(max_held);
        let greeting = replies.open();
        Self {
            client,
            upstream,
            policy,
            phase: Phase::Greeting,
            expect: VecDeque::from([Pending { slot: greeting, expect: Expect::Greeting }]),
            replies,
            out: VecDeque::new(),
            tracker: ReplyTracker::new(),
            data: None,
            next_data: 0,
            malformed_run: 0,
            epsv_all: false,
            user: None,
            login: None,
            binary: false,
            slot: greeting,
            tls: TlsState::default(),
        }
    }

    /// A session that starts without a server: ftpgate greets the client itself and takes the
    /// login; the server is connected once the login names it.
    pub fn with_login(client: ClientAddr, mode: LoginMode, policy: SessionPolicy, max_held: usize) -> Self {
        // Read only once the login phase has connected (data setup needs the Ready phase).
        let unknown = UpstreamAddr(SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut s = Self::new(client, unknown, policy, max_held);
        s.expect.clear();
        let text = match mode {
            LoginMode::Forward => "ftpgate ready: log in as USER name@host[:port]",
            LoginMode::Route(_) => "ftpgate ready",
        };
        s.reply(s.slot, &reply_line(220, text), true);
        s.login = Some(Login::new(mode));
        s.phase = Phase::Login(LoginStep::User);
        s
    }

    /// True when client commands may be taken now.
    pub fn accepts_commands(&self) -> bool {
        matches!(self.phase, Phase::Ready | Phase::Login(LoginStep::User | LoginStep::Pass))
            && self.expect.len() < MAX_IN_FLIGHT
            && !self.auth_pending()
    }

    /// True unless the session waits for the driver (or has ended): input waits meanwhile.
    pub fn processes_input(&self) -> bool {
        !matches!(self.phase, Phase::SettingUp { .. } | Phase::Securing { .. } | Phase::Closed)
    }

    pub fn greeted(&self) -> bool {
        self.phase != Phase::Greeting
    }

    /// True when the server owes replies to commands already sent.
    pub fn awaiting_reply(&self) -> bool {
        !self.expect.is_empty()
    }

    /// True while a transfer command got its preliminary reply and the final one is pending:
    /// its duration is the transfer's, so no reply timeout applies.
    pub fn transfer_running(&self) -> bool {
        matches!(self.expect.front(), Some(Pending { expect: Expect::Transfer { preliminary: true, .. }, .. }))
    }

    /// True while a data channel is open or being set up.
    pub fn data_open(&self) -> bool {
        self.data.is_some()
    }

    /// True while a multi-line reply from the server is open.
    pub fn mid_reply(&self) -> bool {
        self.tracker.in_multiline()
    }

    pub fn closing(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Closing { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The user name the client logged in with, as far as the gateway saw.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    pub(super) fn note(&mut self, n: Note) {
        self.out.push_back(Action::Note(n));
    }

    /// Queues reply bytes for a slot; a server that outgrows the bound ends the session.
    pub(super) fn reply(&mut self, slot: u64, bytes: &[u8], done: bool) {
        let r = self.replies.push(slot, bytes, done);
        self.check_overflow(r);
    }

    pub(super) fn check_overflow(&mut self, r: Result<(), Overflow>) {
        if r.is_err() {
            self.note(Note::Refused(Refusal::MalformedReply));
            self.close_now(Outcome::Error, Some("Server sent more replies than the client asked for, closing"));
        }
    }

    /// The gateway's own reply to the command being handled.
    pub(super) fn answer(&mut self, code: u16, text: &str) {
        self.reply(self.slot, &reply_line(code, text), true);
    }

    /// A refusal answered to the client with its reply code.
    pub(super) fn refuse(&mut self, why: Refusal) {
        self.answer(why.reply_code(), &why.to_string());
        self.note(Note::Refused(why));
    }

    /// Moves every reply that may go now to the actions, and closes once a closing session
    /// owes nothing more that can still come.
    pub fn flush(&mut self) {
        let out = &mut self.out;
        self.replies.drain(|slot, bytes| out.push_back(Action::ToClient { slot, bytes }));
        if let Some(target) = self.login.as_mut().and_then(|l| l.connect.take()) {
            self.out.push_back(Action::Connect(target));
        }
        if let Phase::Closing { outcome, farewell } = self.phase {
            if !self.replies.waits_for_data() {
                if let Some(text) = farewell {
                    self.out.push_back(Action::ToClientOutOfBand(reply_line(421, text)));
                }
                self.finish(outcome);
            }
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(d) = self.data.take() {
            self.drop_channel(d);
        }
        self.replies.clear();
        self.expect.clear();
        self.phase = Phase::Closed;
        self.out.push_back(Action::Close(outcome));
    }

    /// Ends the session now: what may go goes, the rest owed is dropped, and `reply` (a 421)
    /// is the client's last line.
    pub fn close_now(&mut self, outcome: Outcome, reply: Option<&str>) {
        if self.phase == Phase::Closed {
            return;
        }
        let out = &mut self.out;
        self.replies.drain(|slot, bytes| out.push_back(Action::ToClient { slot, bytes }));
        if let Some(text) = reply {
            self.out.push_back(Action::ToClientOutOfBand(reply_line(421, text)));
        }
        self.finish(outcome);
    }

    /// Ends the session once the replies that wait only for a data channel have gone; the
    /// client's last line is then `farewell`, as a 421, when given.
    pub fn close_gracefully(&mut self, outcome: Outcome, farewell: Option<&'static str>) {
        if matches!(self.phase, Phase::Closing { .. } | Phase::Closed) {
            return;
        }
        if let Phase::SettingUp { id, .. } = self.phase {
            self.drop_data_channel(id);
        }
        self.phase = Phase::Closing { outcome, farewell };
    }
}

pub(super) fn passive_command(form: PassiveForm) -> Vec<u8> {
    match form {
        PassiveForm::Pasv => b"PASV\r\n".to_vec(),
        PassiveForm::Epsv => b"EPSV\r\n".to_vec(),
    }
}
