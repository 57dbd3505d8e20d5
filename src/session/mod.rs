//! The control-channel state machine, free of I/O.
//!
//! It is fed what the client said and what the server replied, one line at a time, and answers
//! with [`Action`]s for the I/O edge to carry out. Every policy decision lives here, where a unit
//! test reaches each branch.

mod refusal;
#[cfg(test)]
mod tests;

pub use refusal::{Fault, Refusal};

use crate::addr::{canonical_ip, ClientAddr, UpstreamAddr};
use crate::protocol::address::{self, encode_227, encode_229, encode_eprt_arg, encode_port_arg};
use crate::protocol::reply::reply_line;
use crate::protocol::{Command, Frame, ReplyLine, ReplyTracker, Verb};
use std::collections::VecDeque;
use std::net::{SocketAddr, SocketAddrV4};

/// What to do when a server's 227/229 names an address other than its own control address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerDataPolicy {
    /// Connect to the server's control address instead (the reply's host is ignored).
    Substitute,
    /// Answer the client 425.
    Refuse,
}

/// Which data mode the gateway uses toward the server; the client always gets the mode it asked
/// for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerDataMode {
    /// The mode the client asked for.
    #[default]
    Client,
    /// Always PASV/EPSV toward the server (RFC 1579): a client's PORT becomes a passive
    /// connection to the server.
    Passive,
    /// Always PORT/EPRT toward the server: a client's PASV becomes an active connection from
    /// the server.
    Active,
}

/// Who may log in through the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPolicy {
    /// Only `anonymous` and `ftp`.
    pub anonymous_only: bool,
    /// When not empty, only these user names (compared case-insensitively).
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl UserPolicy {
    pub fn permits(&self, user: &str) -> bool {
        let is = |list: &[String]| list.iter().any(|u| u.eq_ignore_ascii_case(user));
        let anonymous = user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp");
        (!self.anonymous_only || anonymous) && (self.allow.is_empty() || is(&self.allow)) && !is(&self.deny)
    }
}

/// Which commands the gateway relays (verbs in upper case). QUIT is always allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl CommandPolicy {
    pub fn permits(&self, verb: &str) -> bool {
        verb == "QUIT"
            || ((self.allow.is_empty() || self.allow.iter().any(|v| v == verb)) && !self.deny.iter().any(|v| v == verb))
    }
}

/// One FXP allowance: clients in `client` may name data endpoints in `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FxpRule {
    pub client: ipnet::IpNet,
    pub data: ipnet::IpNet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    pub server_data: ServerDataPolicy,
    pub server_mode: ServerDataMode,
    pub users: UserPolicy,
    pub commands: CommandPolicy,
    /// Empty: FXP off, PORT/EPRT must name the client's own address.
    pub fxp: Vec<FxpRule>,
    pub refuse_tls: bool,
    /// Consecutive malformed or overlong lines tolerated before the session is closed.
    pub max_malformed: u32,
    /// Bound on a buffered multi-line reply to PASV/EPSV (the only replies that are buffered).
    pub max_passive_reply: usize,
    /// The control line bound, quoted in the 500 reply to an overlong line.
    pub max_line: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            server_data: ServerDataPolicy::Substitute,
            server_mode: ServerDataMode::Client,
            users: UserPolicy::default(),
            commands: CommandPolicy::default(),
            fxp: Vec::new(),
            refuse_tls: true,
            max_malformed: 8,
            max_passive_reply: 4096,
            max_line: 512,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveForm {
    /// `PASV` / `227`.
    Pasv,
    /// `EPSV` / `229`.
    Epsv,
}

/// What the I/O edge must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ToClient(Vec<u8>),
    ToServer(Vec<u8>),
    /// `ABOR` preceded by the client's Telnet interrupt: sent with the Synch (urgent data).
    ToServerUrgent(Vec<u8>),
    /// Reply bytes that must reach the client only after the running data transfer has
    /// delivered its last byte (the "226 after drained" rule).
    ToClientAfterData(Vec<u8>),
    /// Open a client-facing data listener; its connection is relayed to `server_data`. Answer
    /// with [`Session::on_passive_ready`] or [`Session::on_data_setup_failed`].
    OpenPassive {
        server_data: SocketAddr,
    },
    /// Open a server-facing data listener; its connection is relayed to `client_data`. Answer
    /// with [`Session::on_active_ready`] or [`Session::on_data_setup_failed`].
    OpenActive {
        client_data: SocketAddr,
    },
    /// The client asked for passive mode, the server gets active mode: open a client-facing and
    /// a server-facing listener and relay their two connections. Answer with
    /// [`Session::on_listeners_ready`] or [`Session::on_data_setup_failed`].
    OpenListeners,
    /// The client asked for active mode, the server gave passive mode: connect to both and
    /// relay. Answer with [`Session::on_connect_started`] or [`Session::on_data_setup_failed`].
    ConnectBoth {
        server_data: SocketAddr,
        client_data: SocketAddr,
    },
    /// Close the pending or running data channel now.
    DropData,
    /// Something was refused: log it with its reason and count it.
    Refused(Refusal),
    /// A server quirk was worked around: log it.
    Quirk(&'static str),
    /// Close the session once the actions before this one are done.
    Close,
}

/// The command behind a data transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferInfo {
    pub verb: String,
    /// The argument as the client sent it (lossy UTF-8).
    pub path: String,
    pub binary: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Relay,
    Passive {
        client: ClientWants,
        server: PassiveForm,
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
    },
    /// After ABOR: servers answer an aborted transfer with one or two replies (426 then 226,
    /// or a lone 226, pure-ftpd even with a stray 150), and some discard whatever followed ABOR
    /// in their input. So client commands wait; once the server's first reply to ABOR shows it
    /// is back in its command loop, the gateway sends its own NOOP; every reply up to NOOP's
    /// 200 is relayed, that 200 is dropped, and replies pair with commands exactly again.
    AbortBarrier {
        noop_sent: bool,
        replies: u8,
    },
    Quit,
}

/// Replies relayed behind an ABOR before the barrier is given up (a server that never
/// answers NOOP with 200).
const MAX_ABORT_REPLIES: u8 = 8;
/// Client lines held while an ABOR is being answered.
const MAX_DEFERRED: usize = 32;

/// What the client asked for that a passive exchange with the server is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientWants {
    Passive(PassiveForm),
    /// PORT/EPRT naming this address, carried out in passive mode toward the server.
    Active(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Passive(PassiveForm),
    Active,
    Listeners(PassiveForm),
    Connect,
}

#[derive(Debug)]
pub struct Session {
    client: ClientAddr,
    upstream: UpstreamAddr,
    policy: SessionPolicy,
    expect: VecDeque<Expect>,
    tracker: ReplyTracker,
    passive_reply: Vec<u8>,
    malformed_run: u32,
    epsv_all: bool,
    waiting: Option<Waiting>,
    last_transfer: Option<TransferInfo>,
    /// The user name last sent with USER (for the transfer log).
    user: Option<String>,
    /// TYPE I (or L 8) in force.
    binary: bool,
    /// Client lines that arrived while an ABOR was being answered, with their interrupt flag.
    deferred: VecDeque<(Frame, bool)>,
}

impl Session {
    pub fn new(client: ClientAddr, upstream: UpstreamAddr, policy: SessionPolicy) -> Self {
        Self {
            client,
            upstream,
            policy,
            expect: VecDeque::from([Expect::Greeting]),
            tracker: ReplyTracker::new(),
            passive_reply: Vec::new(),
            malformed_run: 0,
            epsv_all: false,
            waiting: None,
            last_transfer: None,
            user: None,
            binary: false,
            deferred: VecDeque::new(),
        }
    }

    /// True when the server owes replies to commands already sent (used for reply timeouts).
    pub fn awaiting_reply(&self) -> bool {
        !self.expect.is_empty()
    }

    /// True while a transfer command got its preliminary reply and the final one is pending:
    /// its duration is the transfer's, so no reply timeout applies.
    pub fn transfer_running(&self) -> bool {
        matches!(self.expect.front(), Some(Expect::Transfer { preliminary: true }))
    }

    /// True while a multi-line reply from the server is open.
    pub fn mid_reply(&self) -> bool {
        self.tracker.in_multiline()
    }

    /// The verb of the last transfer command (for the transfer log).
    pub fn last_transfer(&self) -> Option<&str> {
        self.last_transfer.as_ref().map(|t| t.verb.as_str())
    }

    /// What the last transfer command was, for the transfer log.
    pub fn transfer_info(&self) -> Option<&TransferInfo> {
        self.last_transfer.as_ref()
    }

    /// The user name the client logged in with, as far as the gateway saw.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// A frame from the client's control stream. `interrupted` is set when a Telnet IP or DM
    /// preceded it.
    pub fn on_client_frame(&mut self, frame: Frame, interrupted: bool) -> Vec<Action> {
        if self.abort_pending() {
            if self.deferred.len() >= MAX_DEFERRED {
                return vec![
                    Action::Refused(Refusal::MalformedFlood),
                    Action::ToClient(reply_line(421, "Too many commands while ABOR is answered, closing")),
                    Action::Close,
                ];
            }
            self.deferred.push_back((frame, interrupted));
            return Vec::new();
        }
        match frame {
            Frame::Overlong => self.malformed(Refusal::LineTooLong { max: self.policy.max_line }),
            Frame::Line(line) => match Command::parse(&line) {
                Ok(cmd) => {
                    self.malformed_run = 0;
                    self.on_command(cmd, interrupted)
                }
                Err(e) => self.malformed(Refusal::MalformedCommand(e)),
            },
        }
    }

    fn abort_pending(&self) -> bool {
        self.expect.iter().any(|e| matches!(e, Expect::AbortBarrier { .. }))
    }

    /// Processes client lines held behind an ABOR, until another ABOR holds the rest.
    fn release_deferred(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        while !self.abort_pending() {
            let Some((frame, interrupted)) = self.deferred.pop_front() else { break };
            out.extend(self.on_client_frame(frame, interrupted));
        }
        out
    }

    fn malformed(&mut self, why: Refusal) -> Vec<Action> {
        self.malformed_run += 1;
        let mut out = refuse(why);
        if self.malformed_run > self.policy.max_malformed {
            let flood = Refusal::MalformedFlood;
            out.push(Action::ToClient(reply_line(flood.reply_code(), "Too many malformed commands, closing")));
            out.push(Action::Refused(flood));
            out.push(Action::Close);
        }
        out
    }

    fn on_command(&mut self, cmd: Command, interrupted: bool) -> Vec<Action> {
        if !self.policy.commands.permits(cmd.name()) {
            return refuse(Refusal::CommandRefused(cmd.name().to_owned()));
        }
        match cmd.verb {
            Verb::User => {
                let user = cmd.arg_text();
                if !self.policy.users.permits(user.trim()) {
                    return refuse(Refusal::UserRefused(user.trim().to_owned()));
                }
                self.user = Some(user.trim().to_owned());
                self.forward(&cmd, Expect::Relay)
            }
            Verb::Other if cmd.name() == "TYPE" => {
                let t = cmd.arg_text().trim().to_ascii_uppercase();
                self.binary = t.starts_with('I') || t.starts_with('L');
                self.forward(&cmd, Expect::Relay)
            }
            Verb::Pasv | Verb::Epsv => self.on_passive_command(&cmd),
            Verb::Port | Verb::Eprt => self.on_active_command(&cmd),
            Verb::Lprt | Verb::Lpsv | Verb::Spsv => refuse(Refusal::NotSupported(cmd.name().to_owned())),
            Verb::Auth if self.policy.refuse_tls => refuse(Refusal::TlsRefused),
            Verb::Quit => self.forward(&cmd, Expect::Quit),
            Verb::Abor => {
                self.expect.retain(|e| !matches!(e, Expect::Transfer { .. }));
                self.expect.push_back(Expect::AbortBarrier { noop_sent: false, replies: 0 });
                let line = cmd.encode();
                let send = if interrupted { Action::ToServerUrgent(line) } else { Action::ToServer(line) };
                vec![Action::DropData, send]
            }
            v if v.uses_data_channel() => {
                self.last_transfer =
                    Some(TransferInfo { verb: cmd.name().to_owned(), path: cmd.arg_text(), binary: self.binary });
                self.forward(&cmd, Expect::Transfer { preliminary: false })
            }
            _ => self.forward(&cmd, Expect::Relay),
        }
    }

    fn forward(&mut self, cmd: &Command, expect: Expect) -> Vec<Action> {
        self.expect.push_back(expect);
        vec![Action::ToServer(cmd.encode())]
    }

    fn on_passive_command(&mut self, cmd: &Command) -> Vec<Action> {
        let client_form = if cmd.verb == Verb::Pasv { PassiveForm::Pasv } else { PassiveForm::Epsv };
        if client_form == PassiveForm::Epsv {
            let arg = cmd.arg_text();
            let arg = arg.trim();
            if arg.eq_ignore_ascii_case("ALL") {
                // Answered here: the gateway, not the server, decides which setup commands it takes.
                self.epsv_all = true;
                return vec![Action::ToClient(reply_line(200, "EPSV ALL ok"))];
            }
            let family_ok = match arg {
                "" => true,
                "1" => !self.client.is_ipv6(),
                "2" => self.client.is_ipv6(),
                _ => false,
            };
            if !family_ok {
                return vec![
                    Action::ToClient(reply_line(522, "Network protocol not supported, use (1,2)")),
                    Action::Refused(Refusal::FamilyMismatch { verb: "EPSV" }),
                ];
            }
        } else {
            if self.epsv_all {
                return refuse(Refusal::AfterEpsvAll);
            }
            if self.client.is_ipv6() && !is_v4_mapped(self.client.0) {
                return refuse(Refusal::FamilyMismatch { verb: "PASV" });
            }
        }
        if self.policy.server_mode == ServerDataMode::Active {
            self.waiting = Some(Waiting::Listeners(client_form));
            return vec![Action::DropData, Action::OpenListeners];
        }
        let server_form = self.server_passive_form(client_form);
        self.expect.push_back(Expect::Passive { client: ClientWants::Passive(client_form), server: server_form });
        vec![Action::DropData, Action::ToServer(passive_command(server_form))]
    }

    /// The passive command for the server: EPSV toward IPv6, PASV from an IPv6 client toward
    /// IPv4 (RFC 6384), otherwise the client's own form (a server that refuses EPSV is asked
    /// again with PASV).
    fn server_passive_form(&self, client_form: PassiveForm) -> PassiveForm {
        match (self.upstream.is_ipv6(), canonical_ip(self.client.ip()).is_ipv6()) {
            (true, _) => PassiveForm::Epsv,
            (false, true) => PassiveForm::Pasv,
            (false, false) => client_form,
        }
    }

    fn port_command(&self, listen: SocketAddr) -> Vec<u8> {
        match listen {
            SocketAddr::V4(a) if !self.upstream.is_ipv6() => Command::new("PORT", Some(&encode_port_arg(a))),
            a => Command::new("EPRT", Some(&encode_eprt_arg(a))),
        }
        .encode()
    }

    fn on_active_command(&mut self, cmd: &Command) -> Vec<Action> {
        let verb: &'static str = if cmd.verb == Verb::Port { "PORT" } else { "EPRT" };
        if self.epsv_all {
            return refuse(Refusal::AfterEpsvAll);
        }
        let arg = cmd.arg_text();
        let named = if cmd.verb == Verb::Port {
            address::parse_port_arg(arg.trim()).map(SocketAddr::V4)
        } else {
            address::parse_eprt_arg(arg.trim())
        };
        let named = match named {
            Ok(a) => a,
            Err(err) => return refuse(Refusal::BadAddress { verb, err }),
        };
        let client_ip = canonical_ip(self.client.ip());
        if named.is_ipv6() != client_ip.is_ipv6() {
            return refuse(Refusal::FamilyMismatch { verb });
        }
        let mut out = vec![Action::DropData];
        if canonical_ip(named.ip()) != client_ip {
            let fxp = self
                .policy
                .fxp
                .iter()
                .any(|r| r.client.contains(&client_ip) && r.data.contains(&canonical_ip(named.ip())));
            if !fxp {
                return refuse(Refusal::Bounce { verb, named, client: client_ip });
            }
            out.push(Action::Quirk("FXP: data address allowed by fxp rule"));
        }
        if named.port() < 1024 {
            return refuse(Refusal::PrivilegedPort { verb, port: named.port() });
        }
        if self.policy.server_mode == ServerDataMode::Passive {
            let form = if cmd.verb == Verb::Port { PassiveForm::Pasv } else { PassiveForm::Epsv };
            let server = self.server_passive_form(form);
            self.expect.push_back(Expect::Passive { client: ClientWants::Active(named), server });
            out.push(Action::ToServer(passive_command(server)));
            return out;
        }
        self.waiting = Some(Waiting::Active);
        out.push(Action::OpenActive { client_data: named });
        out
    }

    /// The client-facing listener for the last `OpenPassive` is ready at `advertise` (the
    /// address the client is told to connect to).
    pub fn on_passive_ready(&mut self, advertise: SocketAddr) -> Vec<Action> {
        match (self.waiting.take(), advertise) {
            (Some(Waiting::Passive(PassiveForm::Pasv)), SocketAddr::V4(a)) => vec![Action::ToClient(encode_227(a))],
            (Some(Waiting::Passive(PassiveForm::Pasv)), SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                Some(v4) => vec![Action::ToClient(encode_227(SocketAddrV4::new(v4, a.port())))],
                None => vec![Action::DropData, Action::ToClient(reply_line(425, "Cannot express data address in 227"))],
            },
            (Some(Waiting::Passive(PassiveForm::Epsv)), a) => vec![Action::ToClient(encode_229(a.port()))],
            _ => Vec::new(),
        }
    }

    /// The server-facing listener for the last `OpenActive` is ready at `listen`.
    pub fn on_active_ready(&mut self, listen: SocketAddr) -> Vec<Action> {
        if self.waiting.take() != Some(Waiting::Active) {
            return Vec::new();
        }
        self.expect.push_back(Expect::PortAck);
        vec![Action::ToServer(self.port_command(listen))]
    }

    /// Both listeners of the last `OpenListeners` are ready: the client will be told
    /// `advertise` once the server has accepted PORT/EPRT for `listen`.
    pub fn on_listeners_ready(&mut self, advertise: SocketAddr, listen: SocketAddr) -> Vec<Action> {
        let Some(Waiting::Listeners(client)) = self.waiting.take() else { return Vec::new() };
        self.expect.push_back(Expect::ConvertedPortAck { client, advertise });
        vec![
            Action::Quirk("client passive mode carried out in active mode toward the server"),
            Action::ToServer(self.port_command(listen)),
        ]
    }

    /// The connections of the last `ConnectBoth` are under way: the client's PORT/EPRT is
    /// accepted.
    pub fn on_connect_started(&mut self) -> Vec<Action> {
        if self.waiting.take() != Some(Waiting::Connect) {
            return Vec::new();
        }
        vec![
            Action::Quirk("client active mode carried out in passive mode toward the server"),
            Action::ToClient(reply_line(200, "Active mode accepted (passive toward the server)")),
        ]
    }

    /// Opening the data listener failed (no free port, bind error): the client gets 425.
    pub fn on_data_setup_failed(&mut self, why: &str) -> Vec<Action> {
        self.waiting = None;
        vec![Action::ToClient(reply_line(425, &format!("Cannot open data connection: {why}")))]
    }

    /// One line from the server (LF removed).
    pub fn on_server_line(&mut self, line: &[u8]) -> Vec<Action> {
        let rl = match self.tracker.feed(line) {
            Ok(rl) => rl,
            Err(_) => {
                return vec![
                    Action::Refused(Refusal::MalformedReply),
                    Action::ToClient(reply_line(421, "Server sent a malformed reply, closing")),
                    Action::Close,
                ];
            }
        };
        match self.expect.front().copied() {
            Some(Expect::Passive { client, server }) => return self.on_passive_reply_line(rl, client, server),
            Some(Expect::AbortBarrier { noop_sent, replies }) => {
                return self.on_abort_reply_line(rl, noop_sent, replies)
            }
            _ => {}
        }
        if !rl.kind.is_final() {
            if matches!(self.expect.front(), Some(Expect::ConvertedPortAck { .. })) {
                // The client asked PASV/EPSV: the lines of the server's PORT reply mean nothing to it.
                return Vec::new();
            }
            // Every line of a running transfer's closing reply waits behind the data.
            if self.transfer_running() && !rl.is_preliminary() {
                return vec![Action::ToClientAfterData(rl.raw)];
            }
            return vec![Action::ToClient(rl.raw)];
        }
        if rl.is_preliminary() {
            if let Some(Expect::Transfer { preliminary }) = self.expect.front_mut() {
                *preliminary = true;
            }
            return vec![Action::ToClient(rl.raw)];
        }
        let closes = rl.code == 421;
        let mut out = match self.expect.pop_front() {
            Some(Expect::Transfer { preliminary: true }) => vec![Action::ToClientAfterData(rl.raw)],
            Some(Expect::Transfer { preliminary: false }) => vec![Action::DropData, Action::ToClient(rl.raw)],
            Some(Expect::PortAck) if !rl.is_positive() => vec![Action::DropData, Action::ToClient(rl.raw)],
            Some(Expect::ConvertedPortAck { client, advertise }) if rl.is_positive() => {
                self.waiting = Some(Waiting::Passive(client));
                self.on_passive_ready(advertise)
            }
            Some(Expect::ConvertedPortAck { .. }) => vec![
                Action::DropData,
                Action::Quirk("server refused active mode"),
                Action::ToClient(reply_line(
                    425,
                    &format!("Cannot open data connection: server refused active mode ({})", rl.code),
                )),
            ],
            Some(Expect::Quit) => vec![Action::ToClient(rl.raw), Action::Close],
            _ => vec![Action::ToClient(rl.raw)],
        };
        if closes && !out.contains(&Action::Close) {
            out.push(Action::Close);
        }
        out
    }

    fn on_abort_reply_line(&mut self, rl: ReplyLine, noop_sent: bool, replies: u8) -> Vec<Action> {
        if noop_sent && rl.code == 200 {
            if !rl.kind.is_final() {
                return Vec::new();
            }
            self.expect.pop_front();
            return self.release_deferred();
        }
        let settles = rl.kind.is_final() && !rl.is_preliminary();
        let mut out = vec![Action::ToClient(rl.raw)];
        if !settles {
            return out;
        }
        if replies + 1 >= MAX_ABORT_REPLIES {
            self.expect.pop_front();
            out.insert(0, Action::Quirk("server never answered the NOOP after ABOR"));
            out.extend(self.release_deferred());
            return out;
        }
        self.expect[0] = Expect::AbortBarrier { noop_sent: true, replies: replies + 1 };
        if !noop_sent {
            out.push(Action::ToServer(b"NOOP\r\n".to_vec()));
        }
        out
    }

    fn on_passive_reply_line(&mut self, rl: ReplyLine, client: ClientWants, server: PassiveForm) -> Vec<Action> {
        if self.passive_reply.len() + rl.raw.len() > self.policy.max_passive_reply {
            return vec![
                Action::Refused(Refusal::MalformedReply),
                Action::ToClient(reply_line(421, "Server sent an oversized passive reply, closing")),
                Action::Close,
            ];
        }
        self.passive_reply.extend_from_slice(&rl.raw);
        if !rl.kind.is_final() || rl.is_preliminary() {
            return Vec::new();
        }
        self.expect.pop_front();
        let whole = std::mem::take(&mut self.passive_reply);
        let expected = if server == PassiveForm::Pasv { 227 } else { 229 };
        if rl.code != expected {
            if !rl.is_positive() && server == PassiveForm::Epsv && !self.upstream.is_ipv6() {
                self.expect.push_back(Expect::Passive { client, server: PassiveForm::Pasv });
                return vec![
                    Action::Quirk("server refused EPSV, retrying with PASV"),
                    Action::ToServer(passive_command(PassiveForm::Pasv)),
                ];
            }
            if !rl.is_positive() {
                return vec![Action::ToClient(whole)];
            }
            return refuse(Refusal::BadPassiveReply { reply: rl.code, err: address::AddressError::No227Address });
        }
        let text = strip_codes(&whole);
        let named = match server {
            PassiveForm::Pasv => address::parse_227(&text).map(SocketAddr::V4),
            PassiveForm::Epsv => address::parse_229(&text).map(|p| SocketAddr::new(self.upstream.ip(), p)),
        };
        let named = match named {
            Ok(a) => a,
            Err(err) => return refuse(Refusal::BadPassiveReply { reply: rl.code, err }),
        };
        let server_ip = canonical_ip(self.upstream.ip());
        let mut out = Vec::new();
        let mut target = named;
        if canonical_ip(named.ip()) != server_ip {
            let why = Refusal::ServerDataElsewhere { named, server: server_ip };
            match self.policy.server_data {
                ServerDataPolicy::Refuse => return refuse(why),
                ServerDataPolicy::Substitute => {
                    out.push(Action::Refused(why));
                    target = SocketAddr::new(self.upstream.ip(), named.port());
                }
            }
        }
        if target.port() < 1024 {
            return refuse(Refusal::ServerPrivilegedPort(target.port()));
        }
        match client {
            ClientWants::Passive(form) => {
                self.waiting = Some(Waiting::Passive(form));
                out.push(Action::OpenPassive { server_data: target });
            }
            ClientWants::Active(client_data) => {
                self.waiting = Some(Waiting::Connect);
                out.push(Action::ConnectBoth { server_data: target, client_data });
            }
        }
        out
    }
}

fn passive_command(form: PassiveForm) -> Vec<u8> {
    match form {
        PassiveForm::Pasv => b"PASV\r\n".to_vec(),
        PassiveForm::Epsv => b"EPSV\r\n".to_vec(),
    }
}

fn is_v4_mapped(sa: SocketAddr) -> bool {
    matches!(sa, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some())
}

/// The text of a (possibly multi-line) reply without the leading codes, for address searches:
/// a code like `227` must not be mistaken for the first number of an address.
fn strip_codes(whole: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(whole.len());
    for line in whole.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let body = match crate::protocol::reply::parse_code(line) {
            Some(_) if matches!(line.get(3), None | Some(b' ') | Some(b'-')) => line.get(4..).unwrap_or_default(),
            _ => line,
        };
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    out
}

/// A refusal answered to the client with its reply code.
fn refuse(why: Refusal) -> Vec<Action> {
    vec![Action::ToClient(reply_line(why.reply_code(), &why.to_string())), Action::Refused(why)]
}
