//! The configuration file exactly as written: strings and numbers, unknown fields rejected.
//! [`super::validate`] turns it into the typed [`super::Config`].

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: Vec<String>,
    pub intercept: String,
    pub data_path: String,
    pub upstream: Option<String>,
    pub forward: RawForward,
    pub routes: Vec<RawRoute>,
    pub upstream_source: Option<String>,
    pub passive: RawPassive,
    pub active: RawActive,
    pub server_data_address: String,
    pub server_data_mode: String,
    pub nat64_prefix: Option<String>,
    pub shaping: RawShaping,
    pub tls: String,
    pub upstream_tls: String,
    pub ftps: RawFtps,
    pub policy: RawPolicy,
    pub servers: RawList,
    pub privileges: RawPrivileges,
    pub limits: RawLimits,
    pub timeouts: RawTimeouts,
    pub log: RawLog,
    pub metrics: RawMetrics,
    pub admin: RawAdmin,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    pub listen: Option<String>,
    pub max_connections: usize,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { listen: None, max_connections: 16 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub max_connections: usize,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self { listen: None, token_file: None, max_connections: 8 }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            // Linux REDIRECT delivers to the primary address of the receiving interface, so the
            // default listener takes every local address; a direct connection is caught as a loop.
            listen: vec!["0.0.0.0:8021".into(), "[::]:8021".into()],
            intercept: "redirect".into(),
            data_path: "relay".into(),
            upstream: None,
            forward: RawForward::default(),
            routes: Vec::new(),
            upstream_source: None,
            passive: RawPassive::default(),
            active: RawActive::default(),
            server_data_address: "substitute".into(),
            server_data_mode: "client".into(),
            nat64_prefix: None,
            shaping: RawShaping::default(),
            tls: "refuse".into(),
            upstream_tls: "none".into(),
            ftps: RawFtps::default(),
            policy: RawPolicy::default(),
            servers: RawList::default(),
            privileges: RawPrivileges::default(),
            limits: RawLimits::default(),
            timeouts: RawTimeouts::default(),
            log: RawLog::default(),
            metrics: RawMetrics::default(),
            admin: RawAdmin::default(),
        }
    }
}

/// Listeners where clients name the server themselves (`USER name@host[:port]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawForward {
    pub listen: Vec<String>,
}

/// One rule of `routes`: exactly one of `user`, `suffix`, `regex`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    pub upstream: String,
    #[serde(default)]
    pub send_as: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawFtps {
    pub certificate: Option<String>,
    pub key: Option<String>,
    pub ca_certificate: Option<String>,
    pub ca_key: Option<String>,
    #[serde(with = "humantime_serde")]
    pub leaf_lifetime: Duration,
    pub server_ca: Option<String>,
    pub server_name: Option<String>,
    pub implicit_listen: Vec<String>,
}

impl Default for RawFtps {
    fn default() -> Self {
        Self {
            certificate: None,
            key: None,
            ca_certificate: None,
            ca_key: None,
            leaf_lifetime: Duration::from_secs(24 * 3600),
            server_ca: None,
            server_name: None,
            implicit_listen: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawPassive {
    pub ports: String,
    pub advertise: String,
}

impl Default for RawPassive {
    fn default() -> Self {
        Self { ports: "50000-50999".into(), advertise: "original".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawActive {
    pub ports: Option<String>,
    pub source_port_20: bool,
    pub source: String,
}

impl Default for RawActive {
    fn default() -> Self {
        Self { ports: None, source_port_20: false, source: "auto".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawShaping {
    pub control: RawTags,
    pub data: RawTags,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawTags {
    pub mark: Option<u32>,
    pub dscp: Option<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub anonymous_only: bool,
    pub users: RawList,
    pub commands: RawList,
    pub fxp: Vec<RawFxp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawList {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFxp {
    pub client: String,
    pub data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawPrivileges {
    pub user: Option<String>,
    pub group: Option<String>,
    pub chroot: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    pub client_prefix_v4: u8,
    pub client_prefix_v6: u8,
    pub max_data_channels: usize,
    pub max_line: usize,
    pub max_malformed: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_sessions: 1000,
            max_sessions_per_client: 100,
            client_prefix_v4: 32,
            client_prefix_v6: 64,
            max_data_channels: 2000,
            max_line: 512,
            max_malformed: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    #[serde(with = "humantime_serde")]
    pub login: Duration,
    #[serde(with = "humantime_serde")]
    pub banner: Duration,
    #[serde(with = "humantime_serde")]
    pub reply: Duration,
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    #[serde(with = "humantime_serde")]
    pub data_accept: Duration,
    #[serde(with = "humantime_serde")]
    pub data_idle: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            login: Duration::from_secs(60),
            banner: Duration::from_secs(30),
            reply: Duration::from_secs(120),
            idle: Duration::from_secs(900),
            data_accept: Duration::from_secs(60),
            data_idle: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
    pub xferlog: Option<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        Self { format: "human".into(), level: "info".into(), xferlog: None }
    }
}
