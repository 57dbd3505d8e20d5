//! The `limits` section: sizes of the process-wide pools, sessions per client network, and the
//! bounds on what one control connection may send.

use super::raw::RawLimits;
use super::{invalid, ConfigError};

pub(super) struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    pub client_prefix_v4: u8,
    pub client_prefix_v6: u8,
    pub max_data_channels: usize,
    pub max_line: usize,
    pub max_malformed: u32,
}

pub(super) fn limits(l: &RawLimits) -> Result<Limits, ConfigError> {
    if l.max_sessions == 0 {
        return Err(invalid("limits.max_sessions", "must be at least 1"));
    }
    if l.max_sessions_per_client == 0 {
        return Err(invalid("limits.max_sessions_per_client", "must be at least 1"));
    }
    if l.max_data_channels == 0 {
        return Err(invalid("limits.max_data_channels", "must be at least 1"));
    }
    if l.client_prefix_v4 > 32 {
        return Err(invalid("limits.client_prefix_v4", "must be 0 to 32"));
    }
    if l.client_prefix_v6 > 128 {
        return Err(invalid("limits.client_prefix_v6", "must be 0 to 128"));
    }
    if !(64..=65536).contains(&l.max_line) {
        return Err(invalid("limits.max_line", "must be between 64 and 65536 bytes"));
    }
    Ok(Limits {
        max_sessions: l.max_sessions,
        max_sessions_per_client: l.max_sessions_per_client,
        client_prefix_v4: l.client_prefix_v4,
        client_prefix_v6: l.client_prefix_v6,
        max_data_channels: l.max_data_channels,
        max_line: l.max_line,
        max_malformed: l.max_malformed,
    })
}
