//! The control channel, free of I/O.
//!
//! [`ControlCore`] takes raw bytes from both sides, data-channel events and the time, and hands
//! back [`Action`]s and its next deadline; the driver in `proxy/control.rs` only moves bytes and
//! timers. Inside, [`Session`] is the line-level state machine where every policy decision
//! lives, and one ordered queue keeps replies in command order whoever makes them.

mod action;
mod client;
mod core;
mod data;
mod feat;
pub mod invariants;
mod login;
mod machine;
mod policy;
mod refusal;
mod replies;
mod routes;
mod server;
mod setup;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_admin;
#[cfg(test)]
mod tests_data;
#[cfg(test)]
mod tests_feat;
#[cfg(test)]
mod tests_login;
#[cfg(test)]
mod tests_telnet;
#[cfg(test)]
mod tests_tls;
mod tls;
mod view;

pub use action::{Action, DataId, DataReady, DataRequest, Note, Outcome, TransferInfo};
pub use core::{ControlCore, CoreTimeouts, ADMIN_CLOSED, MAX_HELD_REPLIES, MAX_REPLY_LINE};
pub use login::{parse_forward_user, ConnectFailure, LoginMode, LoginStep, Target};
pub use machine::{PassiveForm, Session, MAX_IN_FLIGHT};
pub use policy::{CommandPolicy, FxpRule, ServerDataMode, ServerDataPolicy, SessionPolicy, UserPolicy};
pub use refusal::{Fault, Refusal};
pub use routes::{Route, Routed, Routes, UserMatch};
pub use tls::{Protection, Side, TlsPolicy, UpstreamTls};
pub use view::PhaseName;
