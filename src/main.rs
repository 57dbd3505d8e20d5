use clap::Parser;
use ftpgate::cli::Cli;
use ftpgate::config::Config;
use ftpgate::config::Privileges;
use ftpgate::logging;
use ftpgate::privileges::{drop_privileges, path_after_drop, Keep};
use ftpgate::proxy::Gateway;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use tokio::signal::unix::Signal;

/// Exit codes an admin's scripts can tell apart (listed in ftpgate(8), EXIT STATUS).
const EXIT_OUTPUT: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_START: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;

/// Writes to stderr; a closed stderr is no reason to panic on the way out.
fn complain(what: &dyn std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "ftpgate: {what}");
}

/// Writes a command's result to stdout. A reader that stopped early (`ftpgate --check-config
/// FILE | head`) is its own choice: the exit status stays the command's. Any other failure to
/// write is one.
fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            complain(&format_args!("cannot write the output: {e}"));
            ExitCode::from(EXIT_OUTPUT)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.generate {
        return match ftpgate::manual::write_all(dir) {
            Ok(files) => print(&files.iter().map(|f| format!("{}\n", f.display())).collect::<String>()),
            Err(e) => {
                complain(&format_args!("cannot write into {}: {e}", dir.display()));
                ExitCode::from(EXIT_OUTPUT)
            }
        };
    }
    if let Some(ftpgate::cli::Command::Sessions(args)) = &cli.command {
        return sessions(args);
    }
    let (cfg, raw) = match cli.raw().and_then(|raw| Ok((ftpgate::config::validate(&raw)?, raw))) {
        Ok(both) => both,
        Err(e) => {
            complain(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The certificate and key files belong to the configuration: a missing or bad one is a
    // configuration error, also for --check-config.
    if let Err(e) = ftpgate::tls::TlsContext::load(&cfg.live) {
        complain(&e);
        return ExitCode::from(EXIT_CONFIG);
    }
    if cli.check_config.is_some() {
        return check_config(&cli, &raw);
    }
    let log_level = logging::init(&cfg);
    let gateway = match Gateway::bind(cfg) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("{e}");
            complain(&e);
            return ExitCode::from(EXIT_START);
        }
    };
    // While still privileged: raising the hard limit needs CAP_SYS_RESOURCE.
    ftpgate::rlimit::apply(&gateway.config().startup);
    let privileges = &gateway.config().startup.privileges;
    // A SIGHUP reads the file as the process is after the drop: as its user, inside its chroot.
    let mut cli = cli;
    let named = cli.config.clone();
    cli.config = named.as_deref().map(|p| path_after_drop(privileges, p));
    match drop_privileges(privileges, &capabilities(&gateway), cli.config.as_slice()) {
        Ok(Some(d)) => {
            tracing::info!(uid = d.uid, gid = d.gid, kept = ?d.kept, "privileges dropped");
            for (inside, error) in &d.unreadable {
                let file = named.as_deref().unwrap_or(inside).display();
                warn_unreloadable(&file.to_string(), inside, error, privileges);
            }
        }
        Ok(None) if nix::unistd::Uid::effective().is_root() => {
            tracing::warn!("running as root: set privileges.user (or --user) to drop privileges after binding")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!("{e}");
            complain(&e);
            return ExitCode::from(EXIT_START);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            complain(&format_args!("cannot start the runtime: {e}"));
            return ExitCode::from(EXIT_START);
        }
    };
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Handlers are in place before "ftpgate listening" is logged: a signal sent on seeing
        // that line is never met with its default action (which for SIGHUP is to exit).
        let stop = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        let hup = signal(SignalKind::hangup());
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal(stop).await;
            let _ = tx.send(true);
        });
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload_on_sighup(cli, hup, reload_tx));
        gateway.serve(rx, reload_rx, |cfg| logging::set_level(&log_level, cfg)).await;
        tracing::info!("ftpgate stopped");
        ExitCode::SUCCESS
    })
}

/// `ftpgate sessions`: exit 2 when the file or the flags cannot say where to ask, 4 when no
/// instance answers, it refuses, or it has no such session.
fn sessions(args: &ftpgate::cli::SessionsArgs) -> ExitCode {
    match ftpgate::admin_client::run(args) {
        Ok(text) => print(&text),
        Err(e) => {
            complain(&e);
            ExitCode::from(if e.is_local() { EXIT_CONFIG } else { EXIT_UNREACHABLE })
        }
    }
}

/// `--check-config FILE`: the file is valid; its effective configuration goes to stdout as YAML
/// that `--config` accepts again, every default filled in.
fn check_config(cli: &Cli, raw: &ftpgate::config::RawConfig) -> ExitCode {
    let path = cli.check_config.as_deref().unwrap_or(Path::new("-")).display();
    match ftpgate::config::to_yaml(raw) {
        Ok(yaml) => print(&format!("# {path}: configuration is valid. The effective configuration:\n{yaml}")),
        Err(e) => {
            complain(&format_args!("cannot render the configuration as YAML: {e}"));
            ExitCode::from(EXIT_OUTPUT)
        }
    }
}

/// The capabilities kept after the privilege drop: the interception's, CAP_NET_ADMIN for a
/// shaping mark, transparent active connections and the kernel data path (the kernel checks it
/// on every netlink request), CAP_NET_BIND_SERVICE for source port 20. A reload cannot ask for
/// more.
fn capabilities(gateway: &Gateway) -> Vec<Keep> {
    let live = &gateway.config().live;
    let marks = live.control_tags.mark.is_some() || live.data_tags.mark.is_some();
    let transparent = gateway.config().active_transparent();
    let mut keep = gateway.interception().needs().to_vec();
    let kernel_path = gateway.config().startup.data_path == ftpgate::config::DataPath::Kernel;
    for (wanted, cap) in
        [(marks || transparent || kernel_path, Keep::NetAdmin), (live.active_source_port_20, Keep::NetBindService)]
    {
        if wanted && !keep.contains(&cap) {
            keep.push(cap);
        }
    }
    keep
}

/// Says at start-up that a SIGHUP will not be able to read `file` (reached as `inside` after
/// the drop), why, and what to do about it.
fn warn_unreloadable(file: &str, inside: &Path, error: &std::io::Error, p: &Privileges) {
    let user = p.user.as_deref().unwrap_or("-");
    let (why, fix) = match &p.chroot {
        Some(root) => (
            format!(
                "after the chroot to {} ftpgate reads it as {} inside that root, which privileges.user `{user}` \
                 cannot: {error}",
                root.display(),
                inside.display()
            ),
            "keep the file inside privileges.chroot, readable by that user (or bind-mount its directory there)",
        ),
        None => (
            format!("privileges.user `{user}` cannot read it: {error}"),
            "make it readable by that user (e.g. group-readable with privileges.group)",
        ),
    };
    tracing::warn!(
        reason = "config",
        file,
        "SIGHUP will not be able to reload the configuration {file}: {why}; {fix}, or restart ftpgate to change the configuration"
    );
}

/// SIGHUP: read the file again (with the command line's overrides); a file that does not
/// validate is refused with its reason and the running configuration stays.
async fn reload_on_sighup(cli: Cli, hup: std::io::Result<Signal>, to: tokio::sync::mpsc::Sender<Config>) {
    let Ok(mut hup) = hup else {
        tracing::warn!("cannot install the SIGHUP handler: reload disabled");
        return;
    };
    while hup.recv().await.is_some() {
        if cli.config.is_none() {
            tracing::warn!("SIGHUP: no --config file to reload");
            continue;
        }
        match cli.config() {
            Ok(cfg) => {
                if to.send(cfg).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(reason = "config", "reload refused, keeping the running configuration: {e}"),
        }
    }
}

async fn wait_for_signal(stop: (std::io::Result<Signal>, std::io::Result<Signal>)) {
    match stop {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM received"),
                _ = i.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
