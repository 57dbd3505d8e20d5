use clap::Parser;
use ftpgate::cli::Cli;
use ftpgate::config::{Config, LogFormat};
use ftpgate::privileges::{drop_privileges, Keep};
use ftpgate::proxy::Gateway;
use std::io::Write;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Exit codes an admin's scripts can tell apart (listed in ftpgate(8), EXIT STATUS).
const EXIT_OUTPUT: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_START: u8 = 3;

/// Where a reload changes the log's level; the format is fixed at start-up.
type LogLevel = reload::Handle<EnvFilter, Registry>;

fn init_logging(cfg: &Config) -> LogLevel {
    let filter = EnvFilter::try_new(&cfg.live.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, level) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log reader that went away (`ftpgate 2>&1 | head`) loses the lines that follow; the
    // gateway goes on. Reporting the failed write would itself write to the closed stderr.
    let output = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).log_internal_errors(false);
    let logging = tracing_subscriber::registry().with(filter);
    match cfg.startup.log_format {
        LogFormat::Human => logging.with(output).init(),
        LogFormat::Json => logging.with(output.json().flatten_event(true).with_current_span(true)).init(),
    }
    level
}

/// Applies a reloaded `log.level` (validated with the rest of the file).
fn set_log_level(level: &LogLevel, cfg: &Config) {
    let applied = EnvFilter::try_new(&cfg.live.log_level)
        .map_err(|e| e.to_string())
        .and_then(|filter| level.reload(filter).map_err(|e| e.to_string()));
    if let Err(e) = applied {
        tracing::warn!(error = %e, "cannot change the log level; it stays as it was");
    }
}

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
    let cfg = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            complain(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(path) = &cli.check_config {
        return print(&format!("{}: configuration is valid\n{cfg:#?}\n", path.display()));
    }
    let log_level = init_logging(&cfg);
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
    match drop_privileges(&gateway.config().startup.privileges, &capabilities(&gateway)) {
        Ok(Some(d)) => tracing::info!(uid = d.uid, gid = d.gid, kept = ?d.kept, "privileges dropped"),
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
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = tx.send(true);
        });
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload_on_sighup(cli, reload_tx));
        gateway.serve(rx, reload_rx, |cfg| set_log_level(&log_level, cfg)).await;
        tracing::info!("ftpgate stopped");
        ExitCode::SUCCESS
    })
}

/// The capabilities kept after the privilege drop: the interception's, CAP_NET_ADMIN for a
/// shaping mark, CAP_NET_BIND_SERVICE for source port 20. A reload cannot ask for more.
fn capabilities(gateway: &Gateway) -> Vec<Keep> {
    let live = &gateway.config().live;
    let marks = live.control_tags.mark.is_some() || live.data_tags.mark.is_some();
    let mut keep = gateway.interception().needs().to_vec();
    for (wanted, cap) in [(marks, Keep::NetAdmin), (live.active_source_port_20, Keep::NetBindService)] {
        if wanted && !keep.contains(&cap) {
            keep.push(cap);
        }
    }
    keep
}

/// SIGHUP: read the file again (with the command line's overrides); a file that does not
/// validate is refused with its reason and the running configuration stays.
async fn reload_on_sighup(cli: Cli, to: tokio::sync::mpsc::Sender<Config>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
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
