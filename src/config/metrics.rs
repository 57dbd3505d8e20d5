//! The `metrics` section: where `/metrics` is served.

use super::network::socket_addr;
use super::raw::RawMetrics;
use super::ConfigError;
use std::net::SocketAddr;

/// The metrics listener; `None` keeps the endpoint off.
pub(super) fn metrics_listen(raw: &RawMetrics) -> Result<Option<SocketAddr>, ConfigError> {
    raw.listen.as_deref().map(|s| socket_addr(s, "metrics.listen")).transpose()
}
