//! Configuration: a YAML file and command-line flags, validated into typed values before any
//! socket is bound. Every error names the field it is about.
//!
//! Each section of the file has its own validating function; [`validate`] sorts their results
//! into the two parts of [`Config`]: start-up (kept by a reload) and live (taken by a reload).

mod admin;
mod data_path;
mod ftps;
mod limits;
mod log;
mod metrics;
mod network;
mod parts;
mod policy;
mod ports;
mod privileges;
mod raw;
mod routes;
mod servers;
mod shaping;
mod timeouts;

pub use data_path::DataPath;
pub use ftps::FtpsConfig;
pub use log::LogFormat;
pub use network::InterceptMode;
pub use parts::{Config, LiveConfig, StartupConfig};
pub use ports::{ActiveSource, Advertise, PortRange};
pub use privileges::Privileges;
pub use raw::RawConfig;
pub use servers::ServerNets;
pub use shaping::SocketTags;
pub use timeouts::{Timeouts, MAX_TIMEOUT};

use crate::session::{SessionPolicy, TlsPolicy};
use std::path::Path;
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

/// The raw form as YAML that [`parse_raw`] reads back into the same value.
pub fn to_yaml(raw: &RawConfig) -> Result<String, String> {
    serde_yaml::to_string(raw).map_err(|e| e.to_string())
}

/// Turns the raw form into the typed configuration, naming the first bad field.
pub fn validate(raw: &RawConfig) -> Result<Config, ConfigError> {
    let net = network::network(raw)?;
    let ports = ports::data_ports(&raw.passive, &raw.active, net.intercept)?;
    let shaping = shaping::shaping(&raw.shaping)?;
    let limits = limits::limits(&raw.limits)?;
    let data_path = data_path::data_path(&raw.data_path)?;
    let (tls, ftps) = ftps::ftps(raw, net.upstream.is_some())?;
    let implicit_listen = ftps::implicit_listen(raw)?;
    if data_path == DataPath::Kernel && tls != TlsPolicy::Refuse {
        return Err(invalid(
            "data_path",
            "kernel cannot carry TLS data channels: `tls: terminate` and `tls: inspect` need `data_path: relay`",
        ));
    }
    let session = SessionPolicy {
        max_malformed: limits.max_malformed,
        max_line: limits.max_line,
        tls,
        ..policy::session_policy(raw)?
    };
    let forward_listen = routes::forward_listen(&raw.forward)?;
    let routes = routes::routes(&raw.routes, net.upstream)?;
    // Forward-proxy sessions go where their clients say: the server lists apply to them.
    let servers = servers::servers(&raw.servers, net.upstream.is_some() && forward_listen.is_empty())?;
    let privileges = privileges::privileges(&raw.privileges)?;
    let timeouts = timeouts::timeouts(&raw.timeouts)?;
    let log = log::log(&raw.log)?;
    let metrics = metrics::metrics(&raw.metrics)?;
    let admin = admin::admin(&raw.admin)?;
    let startup = StartupConfig {
        listen: net.listen,
        forward_listen,
        implicit_listen,
        intercept: net.intercept,
        data_path,
        privileges,
        max_sessions: limits.max_sessions,
        max_data_channels: limits.max_data_channels,
        log_format: log.format,
        xferlog: log.xferlog,
        metrics_listen: metrics.listen,
        metrics_max_connections: metrics.max_connections,
        admin_listen: admin.listen,
        admin_token_file: admin.token_file,
        admin_max_connections: admin.max_connections,
    };
    let live = LiveConfig {
        upstream: net.upstream,
        routes,
        upstream_source: net.upstream_source,
        passive_ports: ports.passive_ports,
        advertise: ports.advertise,
        active_ports: ports.active_ports,
        active_source_port_20: ports.active_source_port_20,
        active_source: ports.active_source,
        nat64_prefix: net.nat64_prefix,
        servers,
        control_tags: shaping.control,
        data_tags: shaping.data,
        max_sessions_per_client: limits.max_sessions_per_client,
        client_prefix_v4: limits.client_prefix_v4,
        client_prefix_v6: limits.client_prefix_v6,
        max_line: limits.max_line,
        timeouts,
        session,
        ftps,
        log_level: log.level,
    };
    Ok(Config { startup, live })
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
        assert_eq!(c.startup.listen, vec!["0.0.0.0:8021".parse().unwrap(), "[::]:8021".parse().unwrap()]);
        assert_eq!(c.startup.intercept, InterceptMode::Redirect);
        assert_eq!(c.live.passive_ports, PortRange { first: 50000, last: 50999 });
        assert_eq!(parse_raw("").unwrap(), RawConfig::default());
    }

    #[test]
    fn upstream_means_reverse_mode() {
        let c = validate(&parse_raw("upstream: 198.51.100.2:21\n").unwrap()).unwrap();
        assert_eq!(c.startup.intercept, InterceptMode::None);
        assert_eq!(c.live.upstream, Some("198.51.100.2:21".parse().unwrap()));
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
        assert!(err_of("data_path: fast\n").contains("`data_path`"));
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

    #[test]
    fn every_section_names_its_fields() {
        assert!(err_of("upstream_source: here\n").contains("`upstream_source`"));
        assert!(err_of("nat64_prefix: 64:ff9b::/33\n").contains("`nat64_prefix`"));
        assert!(err_of("upstream: 198.51.100.2:21\nnat64_prefix: 64:ff9b::/96\n").contains("`nat64_prefix`"));
        assert!(err_of("active: {ports: 100-200}\n").contains("`active.ports`"));
        assert!(err_of("shaping: {data: {dscp: 64}}\n").contains("`shaping.data.dscp`"));
        assert!(err_of("server_data_mode: sideways\n").contains("`server_data_mode`"));
        assert!(err_of("server_data_address: ignore\n").contains("`server_data_address`"));
        assert!(err_of("limits: {max_sessions: 0}\n").contains("`limits.max_sessions`"));
        assert!(err_of("limits: {max_data_channels: 0}\n").contains("`limits.max_data_channels`"));
        assert!(err_of("log: {format: xml}\n").contains("`log.format`"));
        assert!(err_of("log: {level: \"[\"}\n").contains("`log.level`"));
        assert!(err_of("log: {xferlog: xferlog}\n").contains("`log.xferlog`"));
        assert!(err_of("metrics: {listen: nowhere}\n").contains("`metrics.listen`"));
        assert!(err_of("metrics: {max_connections: 0}\n").contains("`metrics.max_connections`"));
        assert!(err_of("metrics: {max_connections: 100000}\n").contains("`metrics.max_connections`"));
    }

    #[test]
    fn active_source_follows_the_interception_mode() {
        let transparent = |yaml: &str| validate(&parse_raw(yaml).unwrap()).unwrap().active_transparent();
        // auto: transparent where ftpgate already is (tproxy), its own address elsewhere.
        assert!(!transparent(""));
        assert!(transparent("intercept: tproxy\n"));
        assert!(!transparent("upstream: 198.51.100.2:21\n"));
        assert!(transparent("active: {source: original}\n"));
        assert!(!transparent("intercept: tproxy\nactive: {source: gateway}\n"));
        let reverse = err_of("upstream: 198.51.100.2:21\nactive: {source: original}\n");
        assert!(reverse.contains("`active.source`") && reverse.contains("reverse mode"), "{reverse}");
        if cfg!(any(target_os = "freebsd", target_os = "openbsd")) {
            assert!(transparent("intercept: pf\nactive: {source: original}\n"));
        } else {
            assert!(err_of("intercept: pf\nactive: {source: original}\n").contains("`active.source`"));
        }
        assert!(!transparent("intercept: pf\n"));
        assert!(err_of("active: {source: server}\n").contains("`active.source`"));
        // A reload naming another mode keeps the running one, and auto's meaning with it.
        let running = validate(&parse_raw("").unwrap()).unwrap();
        let (next, restart) = running.reloaded(validate(&parse_raw("intercept: tproxy\n").unwrap()).unwrap());
        assert_eq!(restart, ["intercept"]);
        assert!(!next.active_transparent());
    }

    #[test]
    fn absurd_timeouts_are_refused_with_their_field() {
        assert!(err_of("timeouts: {idle: 500000000000y}\n").contains("`timeouts.idle`"));
        assert!(err_of("timeouts: {data_idle: 8d}\n").contains("`timeouts.data_idle`"));
        assert!(err_of("timeouts: {shutdown_grace: 30d}\n").contains("`timeouts.shutdown_grace`"));
        let c = validate(&parse_raw("timeouts: {idle: 7d, shutdown_grace: 0s}\n").unwrap()).unwrap();
        assert_eq!(c.live.timeouts.idle, MAX_TIMEOUT);
    }
}
