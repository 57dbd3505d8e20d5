//! What the control core asks of its driver, and what the driver reports back about data
//! channels.

use super::tls::Side;
use super::Refusal;
use crate::labels::{DataMode, Direction};
use std::net::SocketAddr;

/// Names one data channel of a session. A driver's report about a channel the core no longer
/// knows (it was dropped, or replaced by a newer one) is recognised by its id and ignored with a
/// note, never applied to the wrong channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataId(pub u64);

impl std::fmt::Display for DataId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// The data channel the core wants the driver to set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRequest {
    /// A client-facing listener whose connection is relayed to `server_data`. Answered with
    /// [`DataReady::Listening`] (the address the client is told).
    Passive { server_data: SocketAddr },
    /// A server-facing listener whose connection is relayed to `client_data`. Answered with
    /// [`DataReady::Listening`] (the address the server is told in PORT/EPRT).
    Active { client_data: SocketAddr },
    /// Client passive, server active: a listener on each side. Answered with
    /// [`DataReady::Listeners`].
    Listeners,
    /// Client active, server passive: connect to both. Answered with [`DataReady::Connecting`].
    Connect { server_data: SocketAddr, client_data: SocketAddr },
}

impl DataRequest {
    /// The metric and log name of the channel's mode: the client's mode, and the server's where
    /// they differ.
    pub fn mode(&self) -> DataMode {
        match self {
            DataRequest::Passive { .. } => DataMode::Passive,
            DataRequest::Active { .. } => DataMode::Active,
            DataRequest::Listeners => DataMode::PassiveToActive,
            DataRequest::Connect { .. } => DataMode::ActiveToPassive,
        }
    }
}

/// The driver's answer to [`Action::OpenData`] when the channel could be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataReady {
    Listening(SocketAddr),
    Listeners { advertise: SocketAddr, listen: SocketAddr },
    Connecting,
}

/// Why a session ended (also the label of `ftpgate_sessions_total{outcome}`).
pub use crate::labels::SessionOutcome as Outcome;

/// The command behind a data transfer, for the transfer log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferInfo {
    pub verb: String,
    /// The argument as the client sent it (lossy UTF-8).
    pub path: String,
    pub binary: bool,
    /// The way its data goes: toward the client for RETR, LIST, NLST, MLSD, toward the server
    /// for STOR, STOU, APPE.
    pub toward: Direction,
}

/// Something worth a log line or a metric; the core never logs or counts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Something was refused: log it with its reason and count it.
    Refused(Refusal),
    /// A server quirk was worked around.
    Quirk(&'static str),
    /// A FEAT reply line was left out: it advertised this feature, which the policy refuses.
    FeatureHidden(String),
    /// The server completed a reply with this code.
    ServerReply(u16),
    /// A phase deadline passed; the session closes with a 421 saying this.
    Timeout(&'static str),
    /// The driver reported on a data channel the core no longer has.
    StaleData { id: DataId, event: &'static str },
    /// Data channel `id` is dropped while it carries `transfer` (ABOR, the session's end): the
    /// transfer ends incomplete, and the driver logs it before the `DropData` that follows.
    TransferAborted { id: DataId, transfer: TransferInfo },
    /// ABOR goes to the server: a data connection the gateway no longer holds (one the kernel
    /// carries end to end) must end now, or a server blocked on a client that stopped reading
    /// would never get to the ABOR.
    Aborting,
}

/// What the driver must do, in the order the core hands them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Reply bytes owed to the client. `slot` numbers what they answer: 0 is the greeting,
    /// then one per client command in the order the commands arrived (and one per reply the
    /// server sends unasked). Slots never go backwards.
    ToClient {
        slot: u64,
        bytes: Vec<u8>,
    },
    /// Bytes for the client outside the reply order: Telnet option refusals, and the closing
    /// 421 of a session that ends with replies still owed.
    ToClientOutOfBand(Vec<u8>),
    ToServer(Vec<u8>),
    /// `ABOR` preceded by the client's Telnet interrupt: sent after IP with the Synch (urgent
    /// data).
    ToServerUrgent(Vec<u8>),
    /// Set up a data channel; answer with `handle_data_ready` or `handle_data_failed` for `id`.
    OpenData {
        id: DataId,
        request: DataRequest,
    },
    /// Data channel `id` carries a transfer whose data goes `toward` one side: its transfer
    /// ends when that way has delivered its last byte. Comes before the command goes out.
    DataCarries {
        id: DataId,
        toward: Direction,
    },
    /// Close this data channel now (pending or running).
    DropData(DataId),
    /// Switch `side`'s control connection to TLS now: everything before this action has been
    /// handed out, and nothing the side sent after its `AUTH` exchange is kept. Answer with
    /// `handle_tls_ready` or `handle_tls_failed`; input waits meanwhile.
    StartTls(Side),
    Note(Note),
    /// Connect to the server of the login phase; answer with `handle_upstream_connected` or
    /// `handle_upstream_failed`. Client input waits meanwhile.
    Connect(super::Target),
    /// Close both control connections; nothing follows.
    Close(Outcome),
}
