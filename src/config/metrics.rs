//! The `metrics` section: where `/metrics` is served, and how many connections it takes at once.

use super::network::socket_addr;
use super::raw::RawMetrics;
use super::{invalid, ConfigError};
use std::net::SocketAddr;

/// Enough for several scrapers and a person with curl; each connection is one descriptor.
const MAX_CONNECTIONS: usize = 1024;

pub(super) struct Metrics {
    /// `None` keeps the endpoint off.
    pub listen: Option<SocketAddr>,
    pub max_connections: usize,
}

pub(super) fn metrics(raw: &RawMetrics) -> Result<Metrics, ConfigError> {
    let listen = raw.listen.as_deref().map(|s| socket_addr(s, "metrics.listen")).transpose()?;
    if !(1..=MAX_CONNECTIONS).contains(&raw.max_connections) {
        return Err(invalid("metrics.max_connections", format!("must be 1 to {MAX_CONNECTIONS}")));
    }
    Ok(Metrics { listen, max_connections: raw.max_connections })
}
