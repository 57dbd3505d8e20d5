//! What a session allows: user and command lists, FXP rules, data-mode conversion, line bounds.

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
    /// FTPS: refused, terminated or inspected.
    pub tls: super::TlsPolicy,
    /// Consecutive malformed or overlong lines tolerated before the session is closed.
    pub max_malformed: u32,
    /// Bound on a buffered multi-line reply to PASV/EPSV (the only replies that are buffered).
    pub max_passive_reply: usize,
    /// The control line bound, quoted in the 500 reply to an overlong line.
    pub max_line: usize,
    /// ABOR always goes to the server as urgent data (Telnet IP, then the Synch), also when
    /// the client sent it in band. Off by default: the gateway ends the data connection
    /// itself (the relay closes it; on the kernel path the kernel resets it on `Aborting`),
    /// which is what unblocks a server stuck writing to a client that stopped reading, and
    /// some servers (pure-ftpd) mistake the urgent sequence for a command.
    pub urgent_abort: bool,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            server_data: ServerDataPolicy::Substitute,
            server_mode: ServerDataMode::Client,
            users: UserPolicy::default(),
            commands: CommandPolicy::default(),
            fxp: Vec::new(),
            tls: super::TlsPolicy::Refuse,
            max_malformed: 8,
            max_passive_reply: 4096,
            max_line: 512,
            urgent_abort: false,
        }
    }
}
