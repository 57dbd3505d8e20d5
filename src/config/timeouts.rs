//! The `timeouts` section. Every timeout is bounded above: a deadline far beyond any real
//! session would overflow the clock arithmetic of the sessions that use it.

use super::raw::RawTimeouts;
use super::{invalid, ConfigError};
use std::time::Duration;

/// The longest any timeout may be.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// From a forward or routed client's arrival until its login names the server.
    pub login: Duration,
    pub banner: Duration,
    pub reply: Duration,
    pub idle: Duration,
    pub data_accept: Duration,
    pub data_idle: Duration,
    /// May be zero: running sessions are closed at once on shutdown.
    pub shutdown_grace: Duration,
}

pub(super) fn timeouts(t: &RawTimeouts) -> Result<Timeouts, ConfigError> {
    Ok(Timeouts {
        connect: positive(t.connect, "timeouts.connect")?,
        login: positive(t.login, "timeouts.login")?,
        banner: positive(t.banner, "timeouts.banner")?,
        reply: positive(t.reply, "timeouts.reply")?,
        idle: positive(t.idle, "timeouts.idle")?,
        data_accept: positive(t.data_accept, "timeouts.data_accept")?,
        data_idle: positive(t.data_idle, "timeouts.data_idle")?,
        shutdown_grace: bounded(t.shutdown_grace, "timeouts.shutdown_grace")?,
    })
}

fn positive(d: Duration, field: &'static str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(invalid(field, "must be greater than zero"));
    }
    bounded(d, field)
}

fn bounded(d: Duration, field: &'static str) -> Result<Duration, ConfigError> {
    if d > MAX_TIMEOUT {
        return Err(invalid(field, format!("{d:?} is longer than the most allowed, 7 days")));
    }
    Ok(d)
}
