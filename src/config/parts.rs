//! The typed configuration in its two parts: what only a restart can change, and what a reload
//! hands to the sessions that start after it.

use super::{
    ActiveSource, Advertise, DataPath, InterceptMode, LogFormat, PortRange, Privileges, ServerNets, SocketTags,
    Timeouts,
};
use crate::session::{Routes, SessionPolicy};
use ipnet::Ipv6Net;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Declares a configuration part along with `changed_fields`, which compares every field it
/// declares: a field added here is covered by the reload's report without a list to keep.
macro_rules! config_part {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident: $ty:ty => $path:literal, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $name {
            /// The configuration-file paths of the fields whose values differ in `other`.
            pub fn changed_fields(&self, other: &Self) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $( if self.$field != other.$field { changed.push($path); } )*
                changed
            }
        }
    };
}

config_part! {
    /// What is set up once: sockets bound, the interception opened, privileges dropped, files
    /// opened, process-wide pools sized, the log's format chosen. A reload keeps these.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StartupConfig {
        listen: Vec<SocketAddr> => "listen",
        /// Listeners of the explicit forward proxy (`USER name@host[:port]`).
        forward_listen: Vec<SocketAddr> => "forward.listen",
        /// Listeners whose clients start TLS at connect (implicit FTPS).
        implicit_listen: Vec<SocketAddr> => "ftps.implicit_listen",
        /// `None` is reverse mode, which `upstream` selects.
        intercept: InterceptMode => "intercept",
        /// Who carries data connections; the kernel path opens its netlink socket at start-up.
        data_path: DataPath => "data_path",
        privileges: Privileges => "privileges",
        max_sessions: usize => "limits.max_sessions",
        max_data_channels: usize => "limits.max_data_channels",
        log_format: LogFormat => "log.format",
        /// Transfer log in xferlog format; off when `None`.
        xferlog: Option<PathBuf> => "log.xferlog",
        /// Where `/metrics` is served; off when `None`.
        metrics_listen: Option<SocketAddr> => "metrics.listen",
        /// Connections the metrics endpoint serves at once; beyond, closed at once.
        metrics_max_connections: usize => "metrics.max_connections",
        /// Where the live-sessions API is served; off when `None`. The same address as
        /// `metrics_listen` serves both on one listener.
        admin_listen: Option<SocketAddr> => "admin.listen",
        /// Bearer tokens the API asks for; without, only loopback may reach it.
        admin_token_file: Option<PathBuf> => "admin.token_file",
        /// Connections the admin API serves at once; beyond, closed at once.
        admin_max_connections: usize => "admin.max_connections",
    }
}

/// What a session reads as it goes: a reload replaces it for sessions started afterwards, and
/// running sessions keep the one they started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    /// Reverse mode's server; always `None` when connections are intercepted.
    pub upstream: Option<SocketAddr>,
    /// Reverse mode's routing by user name, `upstream` its default; `None` without rules.
    pub routes: Option<Arc<Routes>>,
    pub upstream_source: Option<IpAddr>,
    pub passive_ports: PortRange,
    pub advertise: Advertise,
    pub active_ports: Option<PortRange>,
    /// Active connections to clients leave from port 20.
    pub active_source_port_20: bool,
    /// Where active connections to clients come from (as configured; see
    /// [`Config::active_transparent`]).
    pub active_source: ActiveSource,
    /// Original destinations inside this RFC 6052 prefix are IPv4 servers (NAT64).
    pub nat64_prefix: Option<Ipv6Net>,
    /// Where diverted clients may go (`servers`); reverse mode's `upstream` is not checked.
    pub servers: ServerNets,
    /// Tags of the upstream control connection.
    pub control_tags: SocketTags,
    /// Tags of every data connection, both sides.
    pub data_tags: SocketTags,
    pub max_sessions_per_client: usize,
    pub client_prefix_v4: u8,
    pub client_prefix_v6: u8,
    pub max_line: usize,
    pub timeouts: Timeouts,
    pub session: SessionPolicy,
    /// The files and names FTPS needs (`session.tls` is the policy).
    pub ftps: super::FtpsConfig,
    /// A level or an `EnvFilter` directive.
    pub log_level: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub startup: StartupConfig,
    pub live: LiveConfig,
}

impl Config {
    /// Whether active connections to clients come from their server's address (a transparent
    /// bind), in the interception mode this configuration runs: a reload that names another
    /// mode, which waits for a restart, does not change the answer for `auto`.
    pub fn active_transparent(&self) -> bool {
        let mode = self.startup.intercept;
        let intercepting = matches!(mode, InterceptMode::Redirect | InterceptMode::Tproxy)
            || (mode == InterceptMode::Pf && cfg!(any(target_os = "freebsd", target_os = "openbsd")));
        match self.live.active_source {
            ActiveSource::Auto => mode == InterceptMode::Tproxy,
            ActiveSource::Original => intercepting,
            ActiveSource::Gateway => false,
        }
    }

    /// What a reload to `new` runs with: this start-up part and `new`'s live part. The paths of
    /// the start-up fields `new` would change come back: they wait for a restart.
    pub fn reloaded(&self, new: Config) -> (Config, Vec<&'static str>) {
        let needs_restart = self.startup.changed_fields(&new.startup);
        let mut live = new.live;
        // The server and the NAT64 prefix belong to the mode, which stays: a reverse gateway
        // keeps a server to go to, an intercepting one never gets one that would override the
        // destinations it finds.
        if self.startup.intercept == InterceptMode::None {
            live.upstream = live.upstream.or(self.live.upstream);
            live.nat64_prefix = None;
            if self.startup.forward_listen.is_empty() {
                live.servers = ServerNets::default();
            }
        } else {
            live.upstream = None;
            live.routes = None;
        }
        (Config { startup: self.startup.clone(), live }, needs_restart)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_raw, validate};
    use super::*;
    use std::time::Duration;

    fn config(yaml: &str) -> Config {
        validate(&parse_raw(yaml).unwrap()).unwrap()
    }

    #[test]
    fn a_reload_names_the_start_up_fields_it_cannot_change_and_keeps_them() {
        let old = config("listen: [\"127.0.0.1:8021\"]\n");
        let new = config(
            "listen: [\"127.0.0.1:9021\"]\nintercept: tproxy\nlimits: {max_sessions: 5}\nlog: {format: json}\n\
             metrics: {listen: \"127.0.0.1:9121\"}\n",
        );
        let (next, needs_restart) = old.reloaded(new);
        assert_eq!(needs_restart, ["listen", "intercept", "limits.max_sessions", "log.format", "metrics.listen"]);
        assert_eq!(next.startup, old.startup);
    }

    #[test]
    fn a_reload_takes_the_live_fields() {
        let old = config("");
        let new = config(
            "timeouts: {idle: 1m, shutdown_grace: 5s}\nlog: {level: debug}\npassive: {ports: 40000-40099}\n\
             shaping: {data: {dscp: 8}}\nlimits: {max_sessions_per_client: 3}\n\
             policy: {commands: {deny: [DELE]}}\nserver_data_mode: passive\n",
        );
        let (next, needs_restart) = old.reloaded(new.clone());
        assert!(needs_restart.is_empty(), "{needs_restart:?}");
        assert_eq!(next.live, new.live);
        assert_eq!(next.live.timeouts.idle, Duration::from_secs(60));
        assert_eq!(next.live.timeouts.shutdown_grace, Duration::from_secs(5));
        assert_eq!(next.live.log_level, "debug");
        assert_ne!(next.live, old.live);
    }

    #[test]
    fn routes_are_live_and_forward_listeners_need_a_restart() {
        let old = config("upstream: 198.51.100.2:21\n");
        let new = config(
            "upstream: 198.51.100.2:21\nroutes: [{suffix: '@b', upstream: 198.51.100.4:21}]\n\
             forward: {listen: ['127.0.0.1:2121']}\nservers: {deny: [10.0.0.0/8]}\n",
        );
        let (next, needs_restart) = old.reloaded(new.clone());
        assert_eq!(needs_restart, ["forward.listen"]);
        assert_eq!(next.live.routes, new.live.routes);
        // Without forward listeners a reverse gateway has no use for server lists.
        assert_eq!(next.live.servers, ServerNets::default());
        let (next, _) = new.reloaded(new.clone());
        assert_eq!(next.live.servers, new.live.servers);
    }

    #[test]
    fn the_mode_stays_and_the_upstream_follows_it() {
        let reverse = config("upstream: 198.51.100.2:21\n");
        let (next, needs_restart) = reverse.reloaded(config("upstream: 198.51.100.3:21\n"));
        assert!(needs_restart.is_empty());
        assert_eq!(next.live.upstream, Some("198.51.100.3:21".parse().unwrap()));

        let (next, needs_restart) = reverse.reloaded(config("nat64_prefix: 64:ff9b::/96\n"));
        assert_eq!(needs_restart, ["intercept"]);
        assert_eq!(next.startup.intercept, InterceptMode::None);
        assert_eq!(next.live.upstream, reverse.live.upstream);
        assert_eq!(next.live.nat64_prefix, None);

        let transparent = config("");
        let (next, needs_restart) = transparent.reloaded(reverse.clone());
        assert_eq!(needs_restart, ["intercept"]);
        assert_eq!(next.startup.intercept, InterceptMode::Redirect);
        assert_eq!(next.live.upstream, None);
    }
}
