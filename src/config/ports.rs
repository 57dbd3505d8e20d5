//! The `passive` and `active` sections: port ranges of data listeners and what clients are told.

use super::raw::{RawActive, RawPassive};
use super::{invalid, ConfigError, InterceptMode};
use std::net::IpAddr;

/// An inclusive port range, never touching the privileged ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn parse(s: &str, field: &'static str) -> Result<Self, ConfigError> {
        let s = s.trim();
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| invalid(field, format!("`{s}` is not a port or a range like 50000-50999")))
        };
        let (first, last) = (parse(a)?, parse(b)?);
        if first < 1024 {
            return Err(invalid(field, format!("range {s} includes privileged ports (below 1024)")));
        }
        if first > last {
            return Err(invalid(field, format!("range {s} is empty (first port above last)")));
        }
        Ok(Self { first, last })
    }

    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// The address told to clients in 227/229.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advertise {
    /// The original destination (the server's address): what a client that ignores 227's host
    /// connects to anyway; the firewall diverts the passive range into ftpgate.
    Original,
    /// The local address the client's control connection arrived on.
    Local,
    /// A fixed address (ftpgate behind another NAT).
    Fixed(IpAddr),
}

/// The address active data connections toward the client come from (`active.source`); see
/// [`Config::active_transparent`](super::Config::active_transparent) for what it means in the
/// running interception mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveSource {
    /// `original` where ftpgate is transparent anyway (tproxy), `gateway` elsewhere.
    Auto,
    /// The original destination, the server the client's control connection was for: the
    /// client sees its data come from its control peer, as clients that check this require.
    /// A transparent (non-local) bind: CAP_NET_ADMIN, and the firewall delivering the replies
    /// to ftpgate's socket (the `socket transparent` rule and the local-delivery routing).
    Original,
    /// This gateway's own address on the client's side.
    Gateway,
}

/// `active.source`, checked against the interception mode: `original` needs an original
/// destination and a platform that can bind a foreign address.
fn active_source(value: &str, mode: InterceptMode) -> Result<ActiveSource, ConfigError> {
    const FIELD: &str = "active.source";
    match (value, mode) {
        ("auto", _) => Ok(ActiveSource::Auto),
        ("gateway", _) => Ok(ActiveSource::Gateway),
        ("original", InterceptMode::None) => Err(invalid(
            FIELD,
            "`original` needs an intercepting mode: in reverse mode clients dial ftpgate itself, which is \
             where their data connections come from",
        )),
        // The BSDs: a nat rule in ftpgate's pf anchor makes the connection come from the
        // server.
        ("original", InterceptMode::Pf) if !cfg!(any(target_os = "freebsd", target_os = "openbsd")) => Err(invalid(
            FIELD,
            "`original` is available with intercept redirect or tproxy (Linux) and pf on FreeBSD and OpenBSD, \
             not with pf here",
        )),
        ("original", _) => Ok(ActiveSource::Original),
        (other, _) => Err(invalid(FIELD, format!("`{other}` is not auto, original or gateway"))),
    }
}

pub(super) struct DataPorts {
    pub passive_ports: PortRange,
    pub advertise: Advertise,
    pub active_ports: Option<PortRange>,
    pub active_source_port_20: bool,
    pub active_source: ActiveSource,
}

pub(super) fn data_ports(
    passive: &RawPassive,
    active: &RawActive,
    mode: InterceptMode,
) -> Result<DataPorts, ConfigError> {
    let passive_ports = PortRange::parse(&passive.ports, "passive.ports")?;
    let advertise =
        match passive.advertise.as_str() {
            "original" => Advertise::Original,
            "local" => Advertise::Local,
            other => Advertise::Fixed(other.parse().map_err(|_| {
                invalid("passive.advertise", format!("`{other}` is not original, local or an IP address"))
            })?),
        };
    let active_ports = active.ports.as_deref().map(|s| PortRange::parse(s, "active.ports")).transpose()?;
    Ok(DataPorts {
        passive_ports,
        advertise,
        active_ports,
        active_source_port_20: active.source_port_20,
        active_source: active_source(active.source.trim(), mode)?,
    })
}
