//! Data channels: listeners from configured port ranges, connectors, peer verification and the
//! byte relay.

pub mod channel;
pub mod relay;
pub mod sockets;

pub use channel::{DataError, DataOutcome, DataPlan};
pub use relay::RelayOutcome;
