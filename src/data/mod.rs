//! Data channels: listeners from configured port ranges, connectors, peer verification and the
//! byte relay (zero-copy splice(2) on Linux).

pub mod channel;
pub mod relay;
pub mod sockets;
#[cfg(target_os = "linux")]
mod splice;

pub use channel::{DataError, DataOutcome, DataPlan};
pub use relay::RelayOutcome;
