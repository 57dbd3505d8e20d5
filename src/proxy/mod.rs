//! The runtime: listeners, the accept loop with its limits, and shutdown.

mod admin;
mod control;
mod data;
mod destination;
mod driver;
mod http;
mod kernel_count;
mod kernel_data;
mod kernel_transfer;
mod local_addrs;
mod login;
mod metrics_endpoint;
mod passive_index;
mod pf_source;
mod registry;
mod stream;
mod transfer_log;

pub use admin::Tokens;
pub use registry::{SessionView, TlsState, TransferView};

use crate::config::{Config, DataPath, InterceptMode, SocketTags};
use crate::data::sockets;
use crate::intercept::{self, InterceptError, Interception};
use crate::labels::Reason;
use crate::metrics::Metrics;
use crate::xferlog::XferLog;
use control::ListenerKind;
use ipnet::IpNet;
use local_addrs::LocalAddresses;
use passive_index::PassiveIndex;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{error, info, warn};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}{hint}")]
    Listen { addr: SocketAddr, source: io::Error, hint: &'static str },
    #[error(transparent)]
    Intercept(#[from] InterceptError),
    #[error("cannot open {what} file {}: {source}", path.display())]
    File { what: &'static str, path: std::path::PathBuf, source: io::Error },
    #[error("`{field}` needs {needs}, which ftpgate does not have: {source}")]
    Privilege { field: &'static str, needs: &'static str, source: io::Error },
    #[error(transparent)]
    KernelPath(#[from] crate::pinhole::PinholeError),
    #[error("metric definitions are inconsistent: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("FTPS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Tries what the live options need privilege for, before serving and again before a reload
/// takes them: failing then beats failing each transfer later.
fn probe_privileges(whole: &Config) -> Result<(), StartError> {
    let cfg = &whole.live;
    use socket2::{Domain, Socket, Type};
    let denied = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EPERM);
    if cfg.active_source_port_20 {
        let probe = Socket::new(Domain::IPV4, Type::STREAM, None).and_then(|s| {
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], 20)).into())
        });
        if let Err(e) = probe.as_ref() {
            if denied(e) {
                return Err(StartError::Privilege {
                    field: "active.source_port_20",
                    needs: "CAP_NET_BIND_SERVICE",
                    source: probe.unwrap_err(),
                });
            }
        }
    }
    // pf translates with a rule instead of a transparent bind (its handle is checked at start).
    if whole.active_transparent() && whole.startup.intercept != InterceptMode::Pf {
        let probe = Socket::new(Domain::IPV4, Type::STREAM, None).and_then(|s| intercept::set_transparent(&s, false));
        if let Err(source) = probe {
            return Err(StartError::Privilege { field: "active.source", needs: "CAP_NET_ADMIN", source });
        }
    }
    for (field, tags) in [("shaping.control.mark", cfg.control_tags), ("shaping.data.mark", cfg.data_tags)] {
        if tags.mark.is_none() {
            continue;
        }
        let probe = Socket::new(Domain::IPV4, Type::STREAM, None)
            .and_then(|s| sockets::tag(socket2::SockRef::from(&s), SocketTags { mark: tags.mark, dscp: None }, false));
        if let Err(source) = probe {
            return Err(StartError::Privilege { field, needs: "CAP_NET_ADMIN", source });
        }
    }
    Ok(())
}

/// Says once, at start-up, when active data connections reach intercepted clients from this
/// gateway's address rather than their server's, and how to change that: clients that check
/// the data connection's origin refuse them.
fn note_active_source(cfg: &Config) {
    let mode = cfg.startup.intercept;
    if !cfg.active_transparent() && matches!(mode, InterceptMode::Redirect | InterceptMode::Tproxy) {
        info!(
            "active data connections reach clients from this gateway's address, not their server's; clients that \
             check the origin of active data (\"did not originate from the same IP address\") refuse them. Set \
             active.source: original for transparent active mode (needs CAP_NET_ADMIN and the local-delivery \
             routing of ftpgate-tproxy-routing.sh; see ftpgate(8), TRANSPARENT ACTIVE MODE)"
        );
    }
}

/// What every session of this process shares.
/// A session keeps the generation it started with; a reload makes a new one for new sessions,
/// sharing the process-wide state (interceptor, limits' counters, metrics).
pub struct Shared {
    pub cfg: Config,
    pub interceptor: Arc<dyn Interception>,
    /// The addresses actually bound (port 0 resolved).
    pub listening: Vec<SocketAddr>,
    /// Open data channels, all sessions together.
    pub data_permits: Arc<Semaphore>,
    /// Sessions per client network (`limits.client_prefix_v4/v6`).
    per_client: Arc<Mutex<HashMap<IpNet, usize>>>,
    pub xferlog: Option<Arc<XferLog>>,
    /// Open passive endpoints, for site-to-site transfers between sessions.
    pub passive_index: PassiveIndex,
    pub metrics: Arc<Metrics>,
    /// The firewall's own addresses, which diverted clients may not reach.
    pub local_addrs: Arc<LocalAddresses>,
    /// The live sessions, for the admin API.
    pub sessions: Arc<registry::Registry>,
    /// The kernel data path's connection to the pinhole sets (`data_path: kernel`).
    pub pinholes: Option<Arc<crate::pinhole::Pinholes>>,
    /// pf's anchors for the nat rules that make active connections come from the server
    /// (`intercept: pf` with `active.source: original`, FreeBSD and OpenBSD), opened at start-up.
    pub source_nat: Option<Arc<crate::pinhole::Pinholes>>,
    /// Certificates and keys of this generation: a reload reads the files again.
    pub tls: Arc<crate::tls::TlsContext>,
    /// Listeners whose clients speak TLS from their first byte.
    pub implicit: Vec<SocketAddr>,
}

/// A session's place in the per-client count; released when the session ends.
struct ClientSlot {
    shared: Arc<Shared>,
    key: IpNet,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.shared.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Shared {
    /// The next generation for `new`: its live part with the running start-up part, and the
    /// paths of the start-up fields that wait for a restart. Refused when the live part needs a
    /// privilege the process no longer holds.
    fn reloaded(&self, new: Config) -> Result<(Shared, Vec<&'static str>), StartError> {
        let (cfg, needs_restart) = self.cfg.reloaded(new);
        probe_privileges(&cfg)?;
        let tls = Arc::new(crate::tls::TlsContext::load(&cfg.live)?);
        let next = Shared {
            tls,
            implicit: self.implicit.clone(),
            cfg,
            interceptor: self.interceptor.clone(),
            listening: self.listening.clone(),
            data_permits: self.data_permits.clone(),
            per_client: self.per_client.clone(),
            xferlog: self.xferlog.clone(),
            passive_index: self.passive_index.clone(),
            metrics: self.metrics.clone(),
            local_addrs: self.local_addrs.clone(),
            sessions: self.sessions.clone(),
            pinholes: self.pinholes.clone(),
            source_nat: self.source_nat.clone(),
        };
        Ok((next, needs_restart))
    }

    fn client_key(&self, ip: IpAddr) -> IpNet {
        let ip = crate::addr::canonical_ip(ip);
        let live = &self.cfg.live;
        let prefix = if ip.is_ipv4() { live.client_prefix_v4 } else { live.client_prefix_v6 };
        IpNet::new(ip, prefix).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(ip))
    }

    fn take_client_slot(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let key = self.client_key(ip);
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= self.cfg.live.max_sessions_per_client {
            return None;
        }
        *n += 1;
        Some(ClientSlot { shared: self.clone(), key })
    }
}

/// Bound listeners, ready to serve. Binding needs no runtime, so that privileges can be
/// dropped between binding and starting the runtime's threads (capabilities are per thread).
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<(std::net::TcpListener, ListenerKind)>,
    metrics_listener: Option<std::net::TcpListener>,
    /// The admin API's own listener; `None` when it is off or shares the metrics listener.
    admin_listener: Option<std::net::TcpListener>,
    tokens: Option<Arc<Tokens>>,
}

impl Gateway {
    /// Binds every listener; fails before anything is served if one cannot be bound.
    pub fn bind(cfg: Config) -> Result<Self, StartError> {
        probe_privileges(&cfg)?;
        // Before any socket is bound: a missing or bad certificate fails the start.
        let tls = Arc::new(crate::tls::TlsContext::load(&cfg.live)?);
        let startup = &cfg.startup;
        // Read before any socket is bound: a missing or weak token file stops the start.
        let tokens = match &startup.admin_token_file {
            Some(p) => Some(Arc::new(Tokens::read(p).map_err(|source| StartError::File {
                what: "admin.token_file",
                path: p.clone(),
                source,
            })?)),
            None => None,
        };
        let interceptor = intercept::for_mode(startup.intercept)?;
        let transparent = interceptor.transparent_listeners();
        let mut listeners = Vec::new();
        for &addr in startup.listen.iter().chain(&startup.implicit_listen) {
            let l = sockets::listen_std(addr, transparent, 1024).map_err(|source| {
                let hint = match source.kind() {
                    io::ErrorKind::AddrInUse => " (another process holds this port)",
                    io::ErrorKind::PermissionDenied if transparent => " (transparent listeners need CAP_NET_ADMIN)",
                    io::ErrorKind::PermissionDenied => " (ports below 1024 need CAP_NET_BIND_SERVICE)",
                    io::ErrorKind::AddrNotAvailable => " (no such local address)",
                    _ => "",
                };
                StartError::Listen { addr, source, hint }
            })?;
            listeners.push((l, ListenerKind::Gateway));
        }
        // The forward proxy's clients dial ftpgate itself: never transparent.
        for &addr in &startup.forward_listen {
            let l = sockets::listen_std(addr, false, 1024).map_err(|source| StartError::Listen {
                addr,
                source,
                hint: " (forward.listen)",
            })?;
            listeners.push((l, ListenerKind::Forward));
        }
        let metrics_listener = match startup.metrics_listen {
            Some(addr) => Some(sockets::listen_std(addr, false, 64).map_err(|source| StartError::Listen {
                addr,
                source,
                hint: " (metrics.listen)",
            })?),
            None => None,
        };
        let admin_listener = match startup.admin_listen {
            Some(addr) if startup.metrics_listen != Some(addr) => {
                Some(sockets::listen_std(addr, false, 64).map_err(|source| StartError::Listen {
                    addr,
                    source,
                    hint: " (admin.listen)",
                })?)
            }
            _ => None,
        };
        let xferlog = match &startup.xferlog {
            Some(p) => Some(Arc::new(XferLog::open(p).map_err(|source| StartError::File {
                what: "log.xferlog",
                path: p.clone(),
                source,
            })?)),
            None => None,
        };
        // Refused here, ftpgate exits 3: never a silent fallback to relaying.
        let pinholes = match startup.data_path {
            DataPath::Kernel => Some(Arc::new(crate::pinhole::Pinholes::open()?)),
            DataPath::Relay => None,
        };
        let source_nat = match &pinholes {
            _ if startup.intercept != InterceptMode::Pf || !cfg.active_transparent() => None,
            Some(p) => Some(p.clone()),
            None => Some(Arc::new(crate::pinhole::Pinholes::open()?)),
        };
        let listening: Vec<SocketAddr> = listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect();
        // `listen`, then `ftps.implicit_listen`, then `forward.listen`.
        let first_implicit = startup.listen.len();
        let implicit = listening[first_implicit..first_implicit + startup.implicit_listen.len()].to_vec();
        let data_permits = Arc::new(Semaphore::new(startup.max_data_channels));
        let shared = Shared {
            cfg,
            interceptor,
            listening,
            data_permits,
            per_client: Arc::new(Mutex::new(HashMap::new())),
            xferlog,
            passive_index: PassiveIndex::default(),
            metrics: Arc::new(Metrics::new()?),
            local_addrs: Arc::default(),
            sessions: Arc::default(),
            pinholes,
            source_nat,
            tls,
            implicit,
        };
        Ok(Self { shared: Arc::new(shared), listeners, metrics_listener, admin_listener, tokens })
    }

    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// The interception set up from the configuration, for what it needs once privileges drop.
    pub fn interception(&self) -> &dyn Interception {
        self.shared.interceptor.as_ref()
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.listening
    }

    /// Where `/metrics` is served (port 0 resolved), when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the admin API is served (port 0 resolved), when it is.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        match &self.admin_listener {
            Some(l) => l.local_addr().ok(),
            None if self.shared.cfg.startup.admin_listen.is_some() => self.metrics_addr(),
            None => None,
        }
    }

    /// The admin API's handler; `with_metrics` when it shares the metrics listener.
    fn admin_handler(&self, with_metrics: bool) -> http::Handler {
        admin::handler(admin::Admin {
            registry: self.shared.sessions.clone(),
            tokens: self.tokens.clone(),
            metrics: self.shared.metrics.clone(),
            with_metrics,
        })
    }

    /// Serves until `shutdown` turns true, then lets sessions finish for up to the grace period
    /// of the configuration then current. Each configuration received on `reloads` applies to
    /// sessions started after; `applied` sees each one taken, for what lives outside the
    /// gateway (the log's level).
    pub async fn serve(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut reloads: mpsc::Receiver<Config>,
        applied: impl Fn(&Config),
    ) {
        let cfg = &self.shared.cfg;
        let (current_tx, current) = watch::channel(self.shared.clone());
        let max = cfg.startup.max_sessions;
        let permits = Arc::new(Semaphore::new(max));
        info!(
            listen = ?self.shared.listening,
            intercept = ?cfg.startup.intercept,
            upstream = ?cfg.live.upstream,
            passive_ports = %format!("{}-{}", cfg.live.passive_ports.first, cfg.live.passive_ports.last),
            max_sessions = max,
            active_transparent = cfg.active_transparent(),
            "ftpgate listening"
        );
        note_active_source(cfg);
        let (metrics_listener, admin_listener) = (self.metrics_listener.take(), self.admin_listener.take());
        let shares_metrics = cfg.startup.admin_listen.is_some() && admin_listener.is_none();
        let metrics_handler = if shares_metrics {
            self.admin_handler(true)
        } else {
            metrics_endpoint::handler(self.shared.metrics.clone())
        };
        let admin_handler = self.admin_handler(false);
        let metrics_bounds = metrics_endpoint::bounds(cfg.startup.metrics_max_connections);
        let what = if shares_metrics { "serving /metrics and the admin API (/sessions)" } else { "serving /metrics" };
        let metrics = &self.shared.metrics;
        let _metrics_task = http::spawn(metrics_listener, metrics, metrics_bounds, metrics_handler, what);
        let admin_bounds = admin::bounds(cfg.startup.admin_max_connections);
        let what = "serving the admin API (/sessions)";
        let _admin_task = http::spawn(admin_listener, metrics, admin_bounds, admin_handler, what);
        let _counters_task = self.shared.pinholes.clone().filter(|_| crate::pinhole::COUNTERS).map(|p| {
            let metrics = self.shared.metrics.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(KERNEL_COUNTERS_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = every.tick() => match p.counters().await {
                            Ok(now) => metrics.kernel_path_counters(now),
                            Err(e) => warn!(error = %e, "cannot read the kernel path's counters"),
                        },
                    }
                }
            })
        });
        let mut accepting = Vec::new();
        for (l, kind) in std::mem::take(&mut self.listeners) {
            let l = match TcpListener::from_std(l) {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot register a listener with the runtime");
                    continue;
                }
            };
            let current = current.clone();
            let permits = permits.clone();
            let mut stop = shutdown.clone();
            accepting.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        r = l.accept() => match r {
                            Ok((stream, peer)) => {
                                let shared = current.borrow().clone();
                                admit(&shared, &permits, stream, peer, kind)
                            }
                            Err(e) => {
                                // EMFILE and friends: back off instead of spinning.
                                warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            }));
        }
        while !*shutdown.borrow() {
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { break },
                Some(new) = reloads.recv() => {
                    let reloaded = current.borrow().reloaded(new);
                    match reloaded {
                        Ok((next, needs_restart)) => {
                            if needs_restart.is_empty() {
                                info!("configuration reloaded; new sessions use it, running ones keep theirs");
                            } else {
                                warn!(fields = ?needs_restart, "configuration reloaded; these fields need a restart and keep their running values");
                            }
                            applied(&next.cfg);
                            let _ = current_tx.send(Arc::new(next));
                        }
                        Err(e) => error!(reason = "config", "reload refused, keeping the running configuration: {e}"),
                    }
                }
            }
        }
        for a in accepting {
            let _ = a.await;
        }
        let grace = current.borrow().cfg.live.timeouts.shutdown_grace;
        let running = max - permits.available_permits();
        info!(running, grace = ?grace, "shutting down: no new sessions, waiting for running ones");
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let finished = tokio::time::timeout(grace, permits.acquire_many(all)).await.is_ok();
        if finished {
            info!("all sessions finished");
        } else {
            warn!(left = max - permits.available_permits(), "grace period over, closing remaining sessions");
        }
    }
}

fn admit(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
) {
    let refusal = match permits.clone().try_acquire_owned() {
        Err(_) => "421 Too many sessions, try again later\r\n",
        Ok(permit) => match shared.take_client_slot(peer.ip()) {
            None => "421 Too many sessions from your address, try again later\r\n",
            Some(slot) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    control::serve(shared, stream, peer, kind).await;
                    drop(slot);
                    drop(permit);
                });
                return;
            }
        },
    };
    let reason = Reason::Limit;
    warn!(%peer, reason = reason.label(), "session refused: {}", refusal.trim_end());
    shared.metrics.reject(reason);
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(refusal.as_bytes())).await;
    });
}

/// How often the kernel path's rule counters are read into the metrics.
const KERNEL_COUNTERS_EVERY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_raw, validate};

    #[test]
    fn a_reload_keeps_counting_into_the_same_metrics() {
        let raw = parse_raw("listen: [\"127.0.0.1:0\"]\nupstream: 127.0.0.1:21\n").unwrap();
        let cfg = validate(&raw).unwrap();
        let gateway = Gateway::bind(cfg.clone()).unwrap();
        let (next, _) = gateway.shared.reloaded(cfg).unwrap();
        assert!(Arc::ptr_eq(&gateway.shared.metrics, &next.metrics));
    }
}
