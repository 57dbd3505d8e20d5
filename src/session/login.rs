//! The login phase before a server exists: ftpgate greets the client itself, takes `USER`
//! (forward proxy: `USER name@host[:port]`) or `USER` and `PASS` (routing by user name), asks
//! the driver to connect, then consumes the server's greeting and replays the login, so the
//! client sees the server's own answer to it (a wrong password gets the server's 530).

use super::action::{Note, Outcome};
use super::machine::{Expect, Pending, Phase, Session};
use super::routes::Routes;
use super::Refusal;
use crate::addr::UpstreamAddr;
use crate::protocol::reply::reply_line;
use crate::protocol::{Command, ReplyLine, Verb};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// How a session without a server finds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginMode {
    /// Explicit forward proxy: the client names the server in `USER name@host[:port]`.
    Forward,
    /// Reverse mode, the server chosen by the user name.
    Route(Arc<Routes>),
}

/// Where the driver is asked to connect ([`Action::Connect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// What the client named (forward proxy): a host name or an address literal. The driver
    /// resolves it and checks every address with the destination policy before connecting.
    Named { host: String, port: u16 },
    /// A server of the configuration (a route): connected as is.
    Configured(UpstreamAddr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Named { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Named { host, port } => write!(f, "{host}:{port}"),
            Target::Configured(a) => a.fmt(f),
        }
    }
}

/// Why the driver could not connect to a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The name did not resolve, or no address it has may be reached (destination policy): the
    /// client gets 530 with this text and may log in again.
    Refused(String),
    /// Connecting failed or timed out: the client gets 421 with this text and the session ends.
    Unreachable(String),
}

/// The step of the login phase ([`Phase::Login`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStep {
    /// Waiting for USER.
    User,
    /// USER answered with 331 by the gateway (routes); waiting for PASS.
    Pass,
    /// The driver is connecting; client input waits.
    Connecting,
    /// The replayed USER is with the server (routes); PASS follows its 331.
    Replaying,
}

/// A password on its way to the server: never printed.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What the login phase remembers.
#[derive(Debug, Clone)]
pub(super) struct Login {
    pub mode: LoginMode,
    /// The USER line replayed to the server.
    user_line: Vec<u8>,
    /// The PASS line replayed after the server's 331 (routes).
    pass_line: Option<Secret>,
    /// The command whose reply the server's answer to the replay becomes.
    slot: u64,
    /// What the session connected to, to recognise a later USER for the same server.
    target: Option<Target>,
    /// An [`Action::Connect`] to hand out once the replies before it are out.
    pub connect: Option<Target>,
    /// Logins refused so far (malformed or refused servers): each may cost a name lookup, so
    /// they are bounded like malformed lines, however well-formed the commands are.
    refused: u32,
}

impl Login {
    pub fn new(mode: LoginMode) -> Self {
        Self { mode, user_line: Vec::new(), pass_line: None, slot: 0, target: None, connect: None, refused: 0 }
    }
}

/// The longest host name (RFC 1035) a forward target may name.
const MAX_HOST: usize = 253;

/// Splits a forward proxy's `name@host[:port]`: the LAST `@` ends the name (names may hold
/// `@`), IPv6 literals are in brackets, the port defaults to 21.
pub fn parse_forward_user(arg: &[u8]) -> Result<(Vec<u8>, Target), String> {
    let at = arg.iter().rposition(|&b| b == b'@').ok_or("USER needs name@host[:port]")?;
    let (name, host) = (&arg[..at], &arg[at + 1..]);
    if name.is_empty() {
        return Err("empty user name before @".into());
    }
    let host = std::str::from_utf8(host).map_err(|_| "server name is not ASCII")?;
    let (host, port) = if let Some(rest) = host.strip_prefix('[') {
        let (lit, after) = rest.split_once(']').ok_or("IPv6 literal without closing ]")?;
        let ip: std::net::Ipv6Addr = lit.parse().map_err(|_| format!("`{lit}` is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("text after ] is not :port")?),
        };
        (ip.to_string(), port)
    } else {
        match host.split_once(':') {
            Some((_, p)) if p.contains(':') => return Err("IPv6 literals go in brackets: name@[2001:db8::2]:21".into()),
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (host.to_owned(), None),
        }
    };
    let port = match port {
        None => 21,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("`{p}` is not a port")),
        },
    };
    if host.parse::<IpAddr>().is_err() && !is_host_name(&host) {
        return Err(format!("`{host}` is not a host name"));
    }
    Ok((name.to_vec(), Target::Named { host: host.to_ascii_lowercase(), port }))
}

/// Letters, digits and hyphens in dot-separated labels of 1 to 63 (a final dot allowed).
fn is_host_name(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= MAX_HOST
        && h.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Session {
    pub(super) fn login_step(&self) -> Option<LoginStep> {
        match self.phase {
            Phase::Login(step) => Some(step),
            _ => None,
        }
    }

    /// A command while no server is connected.
    pub(super) fn on_login_command(&mut self, cmd: Command) {
        let slot = self.slot;
        match cmd.verb {
            Verb::User => self.login_user(&cmd),
            Verb::Pass if self.phase == Phase::Login(LoginStep::Pass) => {
                // Pass is only reached by a routed USER, which set the target.
                let target = self.login.as_mut().and_then(|login| {
                    login.pass_line = Some(Secret(cmd.encode()));
                    login.slot = slot;
                    login.target.clone()
                });
                match target {
                    Some(t) => self.connect(t),
                    None => self.answer(503, "Log in with USER first"),
                }
            }
            Verb::Pass => self.answer(503, "Log in with USER first"),
            Verb::Quit => {
                self.answer(221, "Goodbye");
                self.close_gracefully(Outcome::ClientQuit, None);
            }
            Verb::Other if cmd.name() == "NOOP" => self.answer(200, "NOOP ok"),
            // The login phase runs before the driver that could switch the connection to TLS:
            // AUTH is refused here under every policy (a client that requires TLS stops).
            Verb::Auth => self.refuse(Refusal::TlsRefused),
            _ => self.refuse(Refusal::LoginFirst(cmd.name().to_owned())),
        }
    }

    /// A login that names no usable server: refused, and counted toward the bound.
    fn refuse_login(&mut self, why: Refusal) {
        self.refuse(why);
        let refused = self.login.as_mut().map_or(u32::MAX, |l| {
            l.refused += 1;
            l.refused
        });
        if refused > self.policy.max_malformed {
            self.note(Note::Refused(Refusal::MalformedFlood));
            self.close_now(Outcome::Refused, Some("Too many refused logins, closing"));
        }
    }

    fn login_user(&mut self, cmd: &Command) {
        let Some(login) = self.login.as_ref() else { return self.answer(503, "Log in with USER first") };
        let arg = cmd.arg().unwrap_or_default().to_vec();
        let (name, target) = match &login.mode {
            LoginMode::Forward => match parse_forward_user(&arg) {
                Ok(parsed) => parsed,
                Err(why) => return self.refuse_login(Refusal::BadForwardTarget(why)),
            },
            LoginMode::Route(routes) => match std::str::from_utf8(&arg) {
                Ok(text) => {
                    let r = routes.select(text.trim());
                    (r.user.into_bytes(), Target::Configured(r.upstream))
                }
                // Rules are text: a name that is none goes to the default server unchanged.
                Err(_) => (arg.clone(), Target::Configured(UpstreamAddr(routes.default))),
            },
        };
        let shown = String::from_utf8_lossy(&name).into_owned();
        if !self.policy.users.permits(shown.trim()) {
            return self.refuse(Refusal::UserRefused(shown.trim().to_owned()));
        }
        let route = matches!(login.mode, LoginMode::Route(_));
        let user_line = Command::with_arg_bytes("USER", name).encode();
        self.user = Some(shown.trim().to_owned());
        let slot = self.slot;
        let Some(login) = self.login.as_mut() else { return };
        login.user_line = user_line;
        login.slot = slot;
        login.target = Some(target.clone());
        if route {
            // The server is chosen but not asked yet: the password comes first.
            self.phase = Phase::Login(LoginStep::Pass);
            self.answer(331, &format!("Password required for {}", shown.trim()));
        } else {
            self.connect(target);
        }
    }

    fn connect(&mut self, target: Target) {
        self.phase = Phase::Login(LoginStep::Connecting);
        // Handed out by `flush`, after the replies owed so far: the client has its 331 before
        // the driver goes off to connect.
        if let Some(login) = self.login.as_mut() {
            login.connect = Some(target);
        }
    }

    /// The driver connected to the target; the server's greeting comes next.
    pub fn on_upstream_connected(&mut self, upstream: UpstreamAddr) {
        if self.phase != Phase::Login(LoginStep::Connecting) {
            return self.note(Note::Quirk("connection report outside the login phase ignored"));
        }
        let Some(login) = self.login.as_ref() else { return };
        self.upstream = upstream;
        self.phase = Phase::Greeting;
        self.expect.push_back(Pending { slot: login.slot, expect: Expect::LoginGreeting });
    }

    /// The driver could not connect to the target.
    pub fn on_upstream_failed(&mut self, failure: ConnectFailure) {
        if self.phase != Phase::Login(LoginStep::Connecting) {
            return self.note(Note::Quirk("connection report outside the login phase ignored"));
        }
        let Some(login) = self.login.as_mut() else { return };
        let slot = login.slot;
        match failure {
            ConnectFailure::Refused(text) => {
                // The client may name another server, a bounded number of times.
                login.pass_line = None;
                login.target = None;
                login.refused += 1;
                let refused = login.refused;
                self.user = None;
                self.phase = Phase::Login(LoginStep::User);
                self.reply(slot, &reply_line(530, &text), true);
                if refused > self.policy.max_malformed {
                    self.note(Note::Refused(Refusal::MalformedFlood));
                    self.close_gracefully(Outcome::Refused, Some("Too many refused logins, closing"));
                }
            }
            ConnectFailure::Unreachable(text) => {
                self.reply(slot, &reply_line(421, &text), true);
                self.close_gracefully(Outcome::Refused, None);
            }
        }
    }

    /// The server's greeting after the login phase connected: hidden from the client, which
    /// had ftpgate's; a refusal (421 and the like) is the client's answer instead.
    pub(super) fn on_login_greeting(&mut self, slot: u64, rl: &ReplyLine) {
        let Some(login) = self.login.as_ref() else { return };
        if rl.code / 100 != 2 {
            self.reply(slot, &rl.raw, true);
            return self.close_gracefully(Outcome::ServerClosed, None);
        }
        let line = login.user_line.clone();
        match login.mode {
            LoginMode::Forward => {
                self.phase = Phase::Ready;
                self.send_expecting(slot, line, Expect::Relay);
            }
            LoginMode::Route(_) => {
                self.phase = Phase::Login(LoginStep::Replaying);
                self.send_expecting(slot, line, Expect::LoginUser);
            }
        }
    }

    /// The server's answer to the replayed USER (routes): 331 sends the password, whose reply
    /// the client gets; anything else (230 without a password, 530) is the client's answer.
    pub(super) fn on_login_user_reply(&mut self, slot: u64, rl: &ReplyLine) {
        self.phase = Phase::Ready;
        let pass = self.login.as_mut().and_then(|l| l.pass_line.take());
        match pass {
            Some(Secret(line)) if rl.code / 100 == 3 => self.send_expecting(slot, line, Expect::Relay),
            _ => self.reply(slot, &rl.raw, true),
        }
    }

    /// USER once logged in: only for the server the session is connected to.
    pub(super) fn relogin_user(&mut self, cmd: &Command) -> Option<Command> {
        let login = self.login.as_ref()?;
        let arg = cmd.arg().unwrap_or_default();
        let (name, target) = match &login.mode {
            LoginMode::Forward => match parse_forward_user(arg) {
                Ok(parsed) => parsed,
                // No server named: a name for the server the session has.
                Err(_) => return Some(cmd.clone()),
            },
            LoginMode::Route(routes) => match std::str::from_utf8(arg) {
                Ok(text) => {
                    let r = routes.select(text.trim());
                    (r.user.into_bytes(), Target::Configured(r.upstream))
                }
                Err(_) => (arg.to_vec(), Target::Configured(UpstreamAddr(routes.default))),
            },
        };
        if login.target.as_ref() != Some(&target) {
            self.refuse(Refusal::ServerChange(target.to_string()));
            return None;
        }
        Some(Command::with_arg_bytes("USER", name))
    }
}
