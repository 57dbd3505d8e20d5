//! The `listen`, `upstream`, `intercept`, `upstream_source` and `nat64_prefix` fields: where
//! clients arrive and how the server they meant is found.

use super::{invalid, ConfigError, RawConfig};
use ipnet::Ipv6Net;
use std::net::{IpAddr, SocketAddr};

/// How the original destination of a client connection is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptMode {
    /// nftables/iptables REDIRECT or DNAT: `SO_ORIGINAL_DST`.
    Redirect,
    /// TPROXY: the transparent listener's local address is the original destination.
    Tproxy,
    /// pf `rdr` (FreeBSD, `DIOCNATLOOK`) or `divert-to` (OpenBSD, local address).
    Pf,
    /// No interception: reverse mode toward the fixed upstream (set by `upstream`).
    None,
}

pub(super) struct Network {
    pub listen: Vec<SocketAddr>,
    pub intercept: InterceptMode,
    pub upstream: Option<SocketAddr>,
    pub upstream_source: Option<IpAddr>,
    pub nat64_prefix: Option<Ipv6Net>,
}

pub(super) fn socket_addr(s: &str, field: &'static str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|_| invalid(field, format!("`{s}` is not ADDRESS:PORT (IPv6 as [::1]:8021)")))
}

pub(super) fn network(raw: &RawConfig) -> Result<Network, ConfigError> {
    if raw.listen.is_empty() && raw.forward.listen.is_empty() {
        return Err(invalid("listen", "at least one ADDRESS:PORT is needed (here or in `forward.listen`)"));
    }
    let listen = raw.listen.iter().map(|s| socket_addr(s, "listen")).collect::<Result<Vec<_>, _>>()?;
    let upstream = raw.upstream.as_deref().map(|s| socket_addr(s, "upstream")).transpose()?;
    if let Some(u) = upstream {
        if u.ip().is_unspecified() || u.port() == 0 {
            return Err(invalid("upstream", format!("`{u}` is not a usable server address")));
        }
    }
    let intercept = match (raw.intercept.as_str(), upstream) {
        (_, Some(_)) => InterceptMode::None,
        ("redirect", None) => InterceptMode::Redirect,
        ("tproxy", None) => InterceptMode::Tproxy,
        ("pf", None) => InterceptMode::Pf,
        ("none", None) => return Err(invalid("intercept", "`none` needs `upstream` (reverse mode)")),
        (other, None) => {
            return Err(invalid("intercept", format!("`{other}` is not one of redirect, tproxy, pf, none")))
        }
    };
    let upstream_source = raw
        .upstream_source
        .as_deref()
        .map(|s| {
            s.trim().parse::<IpAddr>().map_err(|_| invalid("upstream_source", format!("`{s}` is not an IP address")))
        })
        .transpose()?;
    Ok(Network { listen, intercept, upstream, upstream_source, nat64_prefix: nat64_prefix(raw, upstream.is_some())? })
}

fn nat64_prefix(raw: &RawConfig, reverse: bool) -> Result<Option<Ipv6Net>, ConfigError> {
    let Some(s) = raw.nat64_prefix.as_deref() else { return Ok(None) };
    if reverse {
        return Err(invalid(
            "nat64_prefix",
            "applies to intercepted connections only; in reverse mode set `upstream` to the IPv4 server",
        ));
    }
    let net: Ipv6Net = s
        .trim()
        .parse()
        .map_err(|_| invalid("nat64_prefix", format!("`{s}` is not an IPv6 prefix like 64:ff9b::/96")))?;
    if ![32, 40, 48, 56, 64, 96].contains(&net.prefix_len()) {
        return Err(invalid("nat64_prefix", format!("`{s}`: RFC 6052 allows /32, /40, /48, /56, /64 or /96")));
    }
    Ok(Some(net.trunc()))
}
