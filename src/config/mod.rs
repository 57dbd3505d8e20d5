//! Configuration: a YAML file and command-line flags, validated into typed values before any
//! socket is bound. Every error names the field it is about.

mod raw;

pub use raw::RawConfig;

use crate::data::sockets::SocketTags;
use crate::session::{CommandPolicy, FxpRule, ServerDataMode, ServerDataPolicy, SessionPolicy, UserPolicy};
use ipnet::{IpNet, Ipv6Net};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config field `{field}`: {message}")]
    Invalid { field: &'static str, message: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, message: message.into() }
}

/// How the original destination of a client connection is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptMode {
    /// nftables/iptables REDIRECT or DNAT: `SO_ORIGINAL_DST`.
    Redirect,
    /// TPROXY: the transparent listener's local address is the original destination.
    Tproxy,
    /// pf `rdr` (FreeBSD, `DIOCNATLOOK`) or `divert-to` (OpenBSD, local address).
    Pf,
    /// No interception: reverse mode toward the fixed upstream.
    None,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub banner: Duration,
    pub reply: Duration,
    pub idle: Duration,
    pub data_accept: Duration,
    pub data_idle: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Who ftpgate becomes after binding its sockets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Privileges {
    pub user: Option<String>,
    pub group: Option<String>,
    pub chroot: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub intercept: InterceptMode,
    pub upstream: Option<SocketAddr>,
    pub upstream_source: Option<IpAddr>,
    pub passive_ports: PortRange,
    pub advertise: Advertise,
    pub active_ports: Option<PortRange>,
    /// Active connections to clients leave from port 20.
    pub active_source_port_20: bool,
    /// Original destinations inside this RFC 6052 prefix are IPv4 servers (NAT64).
    pub nat64_prefix: Option<Ipv6Net>,
    /// Tags of the upstream control connection.
    pub control_tags: SocketTags,
    /// Tags of every data connection, both sides.
    pub data_tags: SocketTags,
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    pub client_prefix_v4: u8,
    pub client_prefix_v6: u8,
    pub max_data_channels: usize,
    pub max_line: usize,
    pub timeouts: Timeouts,
    pub privileges: Privileges,
    pub session: SessionPolicy,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Where `/metrics` is served; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Transfer log in xferlog format; off when `None`.
    pub xferlog: Option<std::path::PathBuf>,
}

impl Config {
    /// Reads and parses a YAML file into the raw form (not yet validated).
    pub fn load_raw(path: &Path) -> Result<RawConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
        parse_raw(&text).map_err(|message| ConfigError::Parse { path: p, message })
    }
}

/// Parses YAML text; an empty file means all defaults.
pub fn parse_raw(text: &str) -> Result<RawConfig, String> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

fn socket_addr(s: &str, field: &'static str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|_| invalid(field, format!("`{s}` is not ADDRESS:PORT (IPv6 as [::1]:8021)")))
}

fn duration(d: Duration, field: &'static str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(invalid(field, "must be greater than zero"));
    }
    Ok(d)
}

fn tags(raw: &raw::RawTags, dscp_field: &'static str, mark_field: &'static str) -> Result<SocketTags, ConfigError> {
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

/// Turns the raw form into the typed configuration, naming the first bad field.
pub fn validate(raw: &RawConfig) -> Result<Config, ConfigError> {
    if raw.listen.is_empty() {
        return Err(invalid("listen", "at least one ADDRESS:PORT is needed"));
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
    let passive_ports = PortRange::parse(&raw.passive.ports, "passive.ports")?;
    let advertise =
        match raw.passive.advertise.as_str() {
            "original" => Advertise::Original,
            "local" => Advertise::Local,
            other => Advertise::Fixed(other.parse().map_err(|_| {
                invalid("passive.advertise", format!("`{other}` is not original, local or an IP address"))
            })?),
        };
    let active_ports = raw.active.ports.as_deref().map(|s| PortRange::parse(s, "active.ports")).transpose()?;
    let server_mode = match raw.server_data_mode.as_str() {
        "client" => ServerDataMode::Client,
        "passive" => ServerDataMode::Passive,
        "active" => ServerDataMode::Active,
        other => return Err(invalid("server_data_mode", format!("`{other}` is not client, passive or active"))),
    };
    let nat64_prefix = match raw.nat64_prefix.as_deref() {
        None => None,
        Some(_) if upstream.is_some() => {
            return Err(invalid(
                "nat64_prefix",
                "applies to intercepted connections only; in reverse mode set `upstream` to the IPv4 server",
            ))
        }
        Some(s) => {
            let net: Ipv6Net = s
                .trim()
                .parse()
                .map_err(|_| invalid("nat64_prefix", format!("`{s}` is not an IPv6 prefix like 64:ff9b::/96")))?;
            if ![32, 40, 48, 56, 64, 96].contains(&net.prefix_len()) {
                return Err(invalid("nat64_prefix", format!("`{s}`: RFC 6052 allows /32, /40, /48, /56, /64 or /96")));
            }
            Some(net.trunc())
        }
    };
    let control_tags = tags(&raw.shaping.control, "shaping.control.dscp", "shaping.control.mark")?;
    let data_tags = tags(&raw.shaping.data, "shaping.data.dscp", "shaping.data.mark")?;
    let server_data = match raw.server_data_address.as_str() {
        "substitute" => ServerDataPolicy::Substitute,
        "refuse" => ServerDataPolicy::Refuse,
        other => return Err(invalid("server_data_address", format!("`{other}` is not substitute or refuse"))),
    };
    let refuse_tls = match raw.tls.as_str() {
        "refuse" => true,
        "passthrough" => {
            return Err(invalid("tls", "passthrough would hide PORT/PASV from the gateway; only `refuse` is supported"))
        }
        other => return Err(invalid("tls", format!("`{other}` is not a TLS policy (refuse)"))),
    };
    let l = &raw.limits;
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
    let p = &raw.policy;
    let verbs = |list: &[String], field: &'static str| -> Result<Vec<String>, ConfigError> {
        list.iter()
            .map(|v| {
                let up = v.trim().to_ascii_uppercase();
                if up.is_empty() || up.len() > 8 || !up.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Err(invalid(field, format!("`{v}` is not an FTP command verb")))
                } else {
                    Ok(up)
                }
            })
            .collect()
    };
    let commands = CommandPolicy {
        allow: verbs(&p.commands.allow, "policy.commands.allow")?,
        deny: verbs(&p.commands.deny, "policy.commands.deny")?,
    };
    let users =
        UserPolicy { anonymous_only: p.anonymous_only, allow: p.users.allow.clone(), deny: p.users.deny.clone() };
    let net = |s: &str, field: &'static str| -> Result<IpNet, ConfigError> {
        s.trim()
            .parse::<IpNet>()
            .or_else(|_| s.trim().parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| invalid(field, format!("`{s}` is not a network like 198.51.100.0/24")))
    };
    let fxp = p
        .fxp
        .iter()
        .map(|r| Ok(FxpRule { client: net(&r.client, "policy.fxp.client")?, data: net(&r.data, "policy.fxp.data")? }))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let pr = &raw.privileges;
    if pr.group.is_some() && pr.user.is_none() {
        return Err(invalid("privileges.group", "needs privileges.user"));
    }
    if let Some(c) = &pr.chroot {
        if !c.starts_with('/') {
            return Err(invalid("privileges.chroot", format!("`{c}` is not an absolute path")));
        }
    }
    let privileges =
        Privileges { user: pr.user.clone(), group: pr.group.clone(), chroot: pr.chroot.as_ref().map(Into::into) };
    if !(64..=65536).contains(&l.max_line) {
        return Err(invalid("limits.max_line", "must be between 64 and 65536 bytes"));
    }
    let t = &raw.timeouts;
    let timeouts = Timeouts {
        connect: duration(t.connect, "timeouts.connect")?,
        banner: duration(t.banner, "timeouts.banner")?,
        reply: duration(t.reply, "timeouts.reply")?,
        idle: duration(t.idle, "timeouts.idle")?,
        data_accept: duration(t.data_accept, "timeouts.data_accept")?,
        data_idle: duration(t.data_idle, "timeouts.data_idle")?,
        shutdown_grace: t.shutdown_grace,
    };
    let log_format = match raw.log.format.as_str() {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        other => return Err(invalid("log.format", format!("`{other}` is not human or json"))),
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
        return Err(invalid("log.level", format!("`{}` is not a log level or filter", raw.log.level)));
    }
    Ok(Config {
        listen,
        intercept,
        upstream,
        upstream_source,
        passive_ports,
        advertise,
        active_ports,
        active_source_port_20: raw.active.source_port_20,
        nat64_prefix,
        control_tags,
        data_tags,
        max_sessions: l.max_sessions,
        max_sessions_per_client: l.max_sessions_per_client,
        client_prefix_v4: l.client_prefix_v4,
        client_prefix_v6: l.client_prefix_v6,
        max_data_channels: l.max_data_channels,
        max_line: l.max_line,
        timeouts,
        privileges,
        session: SessionPolicy {
            server_data,
            server_mode,
            users,
            commands,
            fxp,
            refuse_tls,
            max_malformed: l.max_malformed,
            max_line: l.max_line,
            ..SessionPolicy::default()
        },
        log_format,
        log_level: raw.log.level.clone(),
        metrics_listen: raw.metrics.listen.as_deref().map(|s| socket_addr(s, "metrics.listen")).transpose()?,
        xferlog: match raw.log.xferlog.as_deref() {
            Some(p) if !p.starts_with('/') => {
                return Err(invalid("log.xferlog", format!("`{p}` is not an absolute path")))
            }
            p => p.map(Into::into),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(yaml: &str) -> String {
        let raw = parse_raw(yaml).map_err(|e| e.to_string());
        match raw {
            Err(e) => e,
            Ok(r) => validate(&r).unwrap_err().to_string(),
        }
    }

    #[test]
    fn defaults_are_valid_and_match_the_rules() {
        let c = validate(&RawConfig::default()).unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:8021".parse().unwrap(), "[::]:8021".parse().unwrap()]);
        assert_eq!(c.intercept, InterceptMode::Redirect);
        assert_eq!(c.passive_ports, PortRange { first: 50000, last: 50999 });
        assert_eq!(parse_raw("").unwrap(), RawConfig::default());
    }

    #[test]
    fn upstream_means_reverse_mode() {
        let c = validate(&parse_raw("upstream: 198.51.100.2:21\n").unwrap()).unwrap();
        assert_eq!(c.intercept, InterceptMode::None);
        assert_eq!(c.upstream, Some("198.51.100.2:21".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err_of("listen: [nope]\n").contains("`listen`"));
        assert!(err_of("passive: {ports: 80-90}\n").contains("`passive.ports`"));
        assert!(err_of("passive: {ports: 6000-5000}\n").contains("empty"));
        assert!(err_of("passive: {advertise: somewhere}\n").contains("`passive.advertise`"));
        assert!(err_of("intercept: magic\n").contains("`intercept`"));
        assert!(err_of("timeouts: {connect: 0s}\n").contains("`timeouts.connect`"));
        assert!(err_of("limits: {max_line: 5}\n").contains("`limits.max_line`"));
        assert!(err_of("tls: allow\n").contains("`tls`"));
        assert!(err_of("upstream: 0.0.0.0:21\n").contains("`upstream`"));
        let unknown = err_of("passive: {portz: 1}\n");
        assert!(unknown.contains("portz"), "{unknown}");
        assert!(err_of("listne: []\n").contains("listne"));
        assert!(err_of("policy: {commands: {deny: [\"RE TR\"]}}\n").contains("`policy.commands.deny`"));
        assert!(err_of("policy: {fxp: [{client: 203.0.113.0/24, data: nowhere}]}\n").contains("`policy.fxp.data`"));
        assert!(err_of("privileges: {group: nogroup}\n").contains("`privileges.group`"));
        assert!(err_of("privileges: {user: nobody, chroot: var/empty}\n").contains("`privileges.chroot`"));
        assert!(err_of("limits: {client_prefix_v4: 33}\n").contains("`limits.client_prefix_v4`"));
    }
}
