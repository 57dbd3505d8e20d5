//! Command-line flags; each overrides the matching field of the config file. `--help`, the
//! manual page ftpgate(8) and the shell completions are all generated from these definitions
//! (see [`crate::manual`]).

use crate::config::{self, Config, ConfigError, RawConfig};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ftpgate",
    version,
    about = "Transparent FTP application-level gateway",
    long_about = "Transparent FTP application-level gateway for NAT firewalls. The firewall (nftables \
        on Linux, pf on the BSDs) diverts clients' FTP control connections to ftpgate, which \
        recovers the original destination, connects to that server and relays the control \
        channel, checking every command and reply. It rewrites PORT/EPRT commands and 227/229 \
        replies so that every data connection runs through ftpgate, which opens the matching \
        data connections on both sides and relays them.\n\n\
        Each flag overrides the matching field of the configuration file.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// YAML configuration file (embedded defaults without it).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate FILE, print the effective configuration (YAML, defaults filled in, flags
    /// applied; --config takes it as it is) and exit.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
    /// Listen on ADDR:PORT (repeatable; IPv6 as [::1]:8021).
    #[arg(short, long, value_name = "ADDR:PORT")]
    pub listen: Vec<String>,
    /// How diverted connections reveal their destination.
    #[arg(long, value_name = "MODE", value_parser = ["redirect", "tproxy", "pf"])]
    pub intercept: Option<String>,
    /// Who carries data connections: relay (ftpgate) or kernel (one-shot NAT pinholes).
    #[arg(long, value_name = "PATH", value_parser = ["relay", "kernel"])]
    pub data_path: Option<String>,
    /// Reverse mode: always connect to this server.
    #[arg(short = 'R', long, value_name = "ADDR:PORT")]
    pub upstream: Option<String>,
    /// Source address for connections to servers.
    #[arg(short = 'a', long, value_name = "ADDR")]
    pub upstream_source: Option<String>,
    /// Port range for passive data listeners, e.g. 50000-50999.
    #[arg(long, value_name = "FIRST-LAST")]
    pub passive_ports: Option<String>,
    /// Address advertised in 227/229: original, local or an IP address.
    #[arg(long, value_name = "WHAT")]
    pub passive_advertise: Option<String>,
    /// Port range for active data listeners toward servers, e.g. 45000-45999.
    #[arg(long, value_name = "FIRST-LAST")]
    pub active_ports: Option<String>,
    /// Data mode toward the server: client (as the client asked), passive or active.
    #[arg(long, value_name = "MODE", value_parser = ["client", "passive", "active"])]
    pub server_data_mode: Option<String>,
    /// NAT64 prefix (e.g. 64:ff9b::/96): IPv6 destinations inside it reach IPv4 servers.
    #[arg(long, value_name = "PREFIX")]
    pub nat64_prefix: Option<String>,
    /// Unprivileged user to become once the sockets are bound.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Group to become (default: the user's primary group).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Directory to chroot into after binding.
    #[arg(long, value_name = "DIR")]
    pub chroot: Option<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", value_parser = ["human", "json"])]
    pub log_format: Option<String>,
    /// Transfer log file in xferlog format.
    #[arg(long, value_name = "FILE")]
    pub xferlog: Option<String>,
    /// Log level or filter (e.g. debug, ftpgate=debug).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Write the manual page (ftpgate.8) and the bash and zsh completions (ftpgate.bash,
    /// _ftpgate) into DIR, then exit.
    #[arg(long, value_name = "DIR", exclusive = true)]
    pub generate: Option<PathBuf>,
}

/// What ftpgate does other than serve.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the sessions of the running ftpgate (its admin API), or end one.
    #[command(long_about = "List the control sessions of the running ftpgate, asked through its admin API \
            (admin.listen), as a table (client, server, user, phase, age, bytes, current \
            transfer) or as JSON; or end one with --kill: its client gets 421 and a transfer in \
            progress is aborted. The address and the token come from the configuration file \
            (admin.listen, admin.token_file) unless given.")]
    Sessions(SessionsArgs),
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// The running instance's configuration file, for admin.listen and admin.token_file
    /// [default: /etc/ftpgate/ftpgate.yaml, not read when --admin is given].
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The admin API's address instead of the file's admin.listen, e.g. http://127.0.0.1:2122.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// A file with the bearer token (the first of admin.token_file's format) instead of the
    /// file's admin.token_file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the sessions as JSON, as the API returns them.
    #[arg(long)]
    pub json: bool,
    /// End session ID: its client gets 421 and a transfer in progress is aborted.
    #[arg(long, value_name = "ID")]
    pub kill: Option<u64>,
}

impl Cli {
    /// The file's settings (or the defaults) with the flags applied on top, validated.
    pub fn config(&self) -> Result<Config, ConfigError> {
        config::validate(&self.raw()?)
    }

    /// The file's settings (or the defaults) with the flags applied on top, as written.
    pub fn raw(&self) -> Result<RawConfig, ConfigError> {
        let mut raw = match self.check_config.as_ref().or(self.config.as_ref()) {
            Some(path) => Config::load_raw(path)?,
            None => RawConfig::default(),
        };
        if !self.listen.is_empty() {
            raw.listen = self.listen.clone();
        }
        if let Some(i) = &self.intercept {
            raw.intercept = i.clone();
        }
        if let Some(p) = &self.data_path {
            raw.data_path = p.clone();
        }
        if let Some(u) = &self.upstream {
            raw.upstream = Some(u.clone());
        }
        if let Some(a) = &self.upstream_source {
            raw.upstream_source = Some(a.clone());
        }
        if let Some(p) = &self.passive_ports {
            raw.passive.ports = p.clone();
        }
        if let Some(a) = &self.passive_advertise {
            raw.passive.advertise = a.clone();
        }
        if let Some(p) = &self.active_ports {
            raw.active.ports = Some(p.clone());
        }
        if let Some(m) = &self.server_data_mode {
            raw.server_data_mode = m.clone();
        }
        if let Some(p) = &self.nat64_prefix {
            raw.nat64_prefix = Some(p.clone());
        }
        if let Some(u) = &self.user {
            raw.privileges.user = Some(u.clone());
        }
        if let Some(g) = &self.group {
            raw.privileges.group = Some(g.clone());
        }
        if let Some(c) = &self.chroot {
            raw.privileges.chroot = Some(c.clone());
        }
        if let Some(m) = &self.metrics_listen {
            raw.metrics.listen = Some(m.clone());
        }
        if let Some(f) = &self.log_format {
            raw.log.format = f.clone();
        }
        if let Some(x) = &self.xferlog {
            raw.log.xferlog = Some(x.clone());
        }
        if let Some(l) = &self.log_level {
            raw.log.level = l.clone();
        }
        Ok(raw)
    }
}
