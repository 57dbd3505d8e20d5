//! Why the session refused something: each reason names who was at fault and maps to a reply, a
//! log reason and a metric label.

use super::tls::Side;
use crate::labels::Reason;
use crate::protocol::{AddressError, CommandError};
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Server,
    Local,
}

impl Fault {
    pub fn label(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Server => "server",
            Fault::Local => "local",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("command line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("malformed command: {0}")]
    MalformedCommand(CommandError),
    #[error("too many malformed command lines")]
    MalformedFlood,
    #[error("{count} Telnet option negotiation(s) refused")]
    TelnetNegotiation { count: u32 },
    #[error("malformed {verb} argument: {err}")]
    BadAddress { verb: &'static str, err: AddressError },
    #[error("{verb} names {named}, not the client's own address {client}")]
    Bounce { verb: &'static str, named: SocketAddr, client: IpAddr },
    #[error("{verb} names privileged port {port}")]
    PrivilegedPort { verb: &'static str, port: u16 },
    #[error("{verb} names address family other than the control connection's")]
    FamilyMismatch { verb: &'static str },
    #[error("{0} is not allowed through the gateway")]
    NotSupported(String),
    #[error("user {0:?} is not allowed through this gateway")]
    UserRefused(String),
    #[error("command {0} is not allowed by gateway policy")]
    CommandRefused(String),
    #[error("AUTH (FTPS) refused by policy")]
    TlsRefused,
    #[error("data connection commands other than EPSV refused after EPSV ALL")]
    AfterEpsvAll,
    #[error("server's {reply} reply has no usable address: {err}")]
    BadPassiveReply { reply: u16, err: AddressError },
    #[error("server's passive reply names {named}, not its control address {server}")]
    ServerDataElsewhere { named: SocketAddr, server: IpAddr },
    #[error("server's passive reply names privileged port {0}")]
    ServerPrivilegedPort(u16),
    #[error("server reply is malformed")]
    MalformedReply,
    #[error("{0}: log in first")]
    LoginFirst(String),
    #[error("cannot tell the server from USER: {0}")]
    BadForwardTarget(String),
    #[error("this session is connected to another server than {0}; log in again on a new connection")]
    ServerChange(String),
    #[error("{bytes} byte(s) the {} sent in clear text behind its AUTH exchange discarded", side.label())]
    ClearTextAfterAuth { side: Side, bytes: usize },
    #[error("server answered {command} with {code}")]
    ServerRefusedTls { command: &'static str, code: u16 },
    #[error("TLS handshake with the {} failed: {why}", side.label())]
    TlsHandshake { side: Side, why: String },
}

impl Refusal {
    pub fn fault(&self) -> Fault {
        match self {
            Refusal::BadPassiveReply { .. }
            | Refusal::ServerDataElsewhere { .. }
            | Refusal::ServerPrivilegedPort(_)
            | Refusal::MalformedReply
            | Refusal::ServerRefusedTls { .. }
            | Refusal::ClearTextAfterAuth { side: Side::Server, .. }
            | Refusal::TlsHandshake { side: Side::Server, .. } => Fault::Server,
            Refusal::TlsRefused | Refusal::NotSupported(_) | Refusal::UserRefused(_) | Refusal::CommandRefused(_) => {
                Fault::Local
            }
            _ => Fault::Client,
        }
    }

    /// The `ftpgate_rejections_total` reason, also the log line's `reason`.
    pub fn label(&self) -> Reason {
        match self {
            Refusal::LineTooLong { .. }
            | Refusal::MalformedCommand(_)
            | Refusal::MalformedFlood
            | Refusal::TelnetNegotiation { .. }
            | Refusal::BadAddress { .. }
            | Refusal::FamilyMismatch { .. }
            | Refusal::MalformedReply
            | Refusal::BadPassiveReply { .. }
            | Refusal::BadForwardTarget(_) => Reason::Malformed,
            Refusal::Bounce { .. } | Refusal::PrivilegedPort { .. } => Reason::Bounce,
            Refusal::ServerDataElsewhere { .. } | Refusal::ServerPrivilegedPort(_) => Reason::ServerDataAddress,
            Refusal::ClearTextAfterAuth { .. } => Reason::Injection,
            Refusal::ServerRefusedTls { .. } | Refusal::TlsHandshake { .. } => Reason::Tls,
            Refusal::NotSupported(_)
            | Refusal::TlsRefused
            | Refusal::AfterEpsvAll
            | Refusal::UserRefused(_)
            | Refusal::CommandRefused(_)
            | Refusal::LoginFirst(_)
            | Refusal::ServerChange(_) => Reason::Policy,
        }
    }

    /// The reply the client gets, where the refusal answers a command of its own.
    pub fn reply_code(&self) -> u16 {
        match self {
            // Negotiations are answered with Telnet refusals, never with a reply line.
            Refusal::LineTooLong { .. } | Refusal::MalformedCommand(_) | Refusal::TelnetNegotiation { .. } => 500,
            Refusal::MalformedFlood => 421,
            Refusal::BadAddress { .. } | Refusal::Bounce { .. } | Refusal::PrivilegedPort { .. } => 501,
            Refusal::FamilyMismatch { .. } => 522,
            Refusal::NotSupported(_) | Refusal::CommandRefused(_) => 502,
            Refusal::UserRefused(_)
            | Refusal::LoginFirst(_)
            | Refusal::BadForwardTarget(_)
            | Refusal::ServerChange(_) => 530,
            Refusal::TlsRefused => 534,
            Refusal::AfterEpsvAll => 503,
            Refusal::BadPassiveReply { .. }
            | Refusal::ServerDataElsewhere { .. }
            | Refusal::ServerPrivilegedPort(_)
            | Refusal::MalformedReply => 425,
            Refusal::ClearTextAfterAuth { .. } => 500,
            Refusal::ServerRefusedTls { .. } | Refusal::TlsHandshake { .. } => 421,
        }
    }
}
