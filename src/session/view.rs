//! What an observer (the admin API) may read of a session: where it stands and the transfer it
//! carries. Read-only; never the password, which the session does not keep.

use super::action::TransferInfo;
use super::machine::{Phase, Session};

/// Where a session stands, in the words the admin API shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseName {
    /// No server yet: ftpgate takes the login that names or selects it (forward proxy, routes).
    Login,
    /// The server has not greeted yet.
    Greeting,
    /// Commands and replies flow; no transfer runs.
    Ready,
    /// A data channel carries a transfer.
    Transfer,
    /// A data channel is being set up.
    DataSetup,
    /// A TLS handshake is under way (AUTH, or the gateway securing its server connection).
    Securing,
    /// ABOR sent; waiting for the server to be in step again.
    Aborting,
    /// Ending: replies still owed go out, then the connections close.
    Closing,
    Closed,
}

impl PhaseName {
    pub const fn label(self) -> &'static str {
        match self {
            PhaseName::Login => "login",
            PhaseName::Greeting => "greeting",
            PhaseName::Ready => "ready",
            PhaseName::Transfer => "transfer",
            PhaseName::DataSetup => "data_setup",
            PhaseName::Securing => "securing",
            PhaseName::Aborting => "aborting",
            PhaseName::Closing => "closing",
            PhaseName::Closed => "closed",
        }
    }
}

impl Session {
    pub fn phase_name(&self) -> PhaseName {
        match self.phase {
            Phase::Login(_) => PhaseName::Login,
            Phase::Greeting => PhaseName::Greeting,
            Phase::Securing { .. } | Phase::SecuringUpstream => PhaseName::Securing,
            Phase::Ready if self.transfer().is_some() || self.transfer_running() => PhaseName::Transfer,
            Phase::Ready => PhaseName::Ready,
            Phase::SettingUp { .. } => PhaseName::DataSetup,
            Phase::Aborting(_) => PhaseName::Aborting,
            Phase::Closing { .. } => PhaseName::Closing,
            Phase::Closed => PhaseName::Closed,
        }
    }

    /// The transfer command the open data channel carries, once it was sent.
    pub fn transfer(&self) -> Option<&TransferInfo> {
        self.data.as_ref().and_then(|d| d.transfer.as_ref())
    }
}
