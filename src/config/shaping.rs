//! The `shaping` section: tags for routing and queueing of the connections ftpgate makes.

use super::raw::{RawShaping, RawTags};
use super::{invalid, ConfigError};

/// Routing and shaping tags for a connection, set before its first packet where ftpgate
/// connects and right after accept where it listens: a firewall mark for nftables and policy
/// routing, and a DSCP value for tc and the network's queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketTags {
    /// SO_MARK (Linux; needs CAP_NET_ADMIN).
    pub mark: Option<u32>,
    /// Differentiated Services code point, 0-63 (IP_TOS / IPV6_TCLASS).
    pub dscp: Option<u8>,
}

impl SocketTags {
    pub fn is_empty(&self) -> bool {
        self.mark.is_none() && self.dscp.is_none()
    }
}

pub(super) struct Shaping {
    /// The upstream control connection.
    pub control: SocketTags,
    /// Every data connection, both sides.
    pub data: SocketTags,
}

pub(super) fn shaping(raw: &RawShaping) -> Result<Shaping, ConfigError> {
    Ok(Shaping {
        control: tags(&raw.control, "shaping.control.dscp", "shaping.control.mark")?,
        data: tags(&raw.data, "shaping.data.dscp", "shaping.data.mark")?,
    })
}

fn tags(raw: &RawTags, dscp_field: &'static str, mark_field: &'static str) -> Result<SocketTags, ConfigError> {
    if let Some(d) = raw.dscp {
        if d > 63 {
            return Err(invalid(dscp_field, format!("{d} is not a DSCP value (0-63)")));
        }
    }
    if raw.mark.is_some() && !cfg!(target_os = "linux") {
        return Err(invalid(mark_field, "SO_MARK exists only on Linux (on pf, tag with a rule instead)"));
    }
    Ok(SocketTags { mark: raw.mark, dscp: raw.dscp })
}
