//! The runtime: listeners, the accept loop with its limits, and shutdown.

mod control;
mod data;

use crate::config::Config;
use crate::data::sockets;
use crate::intercept::{InterceptError, Interceptor};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}{hint}")]
    Listen { addr: SocketAddr, source: io::Error, hint: &'static str },
    #[error(transparent)]
    Intercept(#[from] InterceptError),
}

/// What every session of this process shares (read-only).
pub struct Shared {
    pub cfg: Config,
    pub interceptor: Interceptor,
    /// The addresses actually bound (port 0 resolved).
    pub listening: Vec<SocketAddr>,
}

/// Bound listeners, ready to serve.
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
}

impl Gateway {
    /// Binds every listener; fails before anything is served if one cannot be bound.
    pub fn bind(cfg: Config) -> Result<Self, StartError> {
        let interceptor = Interceptor::new(cfg.intercept)?;
        let mut listeners = Vec::new();
        for &addr in &cfg.listen {
            let l = sockets::listen(addr, interceptor.transparent(), 1024).map_err(|source| {
                let hint = match source.kind() {
                    io::ErrorKind::AddrInUse => " (another process holds this port)",
                    io::ErrorKind::PermissionDenied if interceptor.transparent() => {
                        " (TPROXY listeners need CAP_NET_ADMIN)"
                    }
                    io::ErrorKind::PermissionDenied => " (ports below 1024 need CAP_NET_BIND_SERVICE)",
                    io::ErrorKind::AddrNotAvailable => " (no such local address)",
                    _ => "",
                };
                StartError::Listen { addr, source, hint }
            })?;
            listeners.push(l);
        }
        let listening = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        Ok(Self { shared: Arc::new(Shared { cfg, interceptor, listening }), listeners })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.listening
    }

    /// Serves until `shutdown` turns true, then lets sessions finish for up to `grace`.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let cfg = &self.shared.cfg;
        let max = cfg.max_sessions;
        let permits = Arc::new(Semaphore::new(max));
        info!(
            listen = ?self.shared.listening,
            intercept = ?cfg.intercept,
            upstream = ?cfg.upstream,
            passive_ports = %format!("{}-{}", cfg.passive_ports.first, cfg.passive_ports.last),
            max_sessions = max,
            "ftpgate listening"
        );
        let mut accepting = Vec::new();
        for l in self.listeners {
            let shared = self.shared.clone();
            let permits = permits.clone();
            let mut stop = shutdown.clone();
            accepting.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        r = l.accept() => match r {
                            Ok((stream, peer)) => admit(&shared, &permits, stream, peer),
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
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        for a in accepting {
            let _ = a.await;
        }
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

fn admit(shared: &Arc<Shared>, permits: &Arc<Semaphore>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    match permits.clone().try_acquire_owned() {
        Ok(permit) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                control::serve(shared, stream, peer).await;
                drop(permit);
            });
        }
        Err(_) => {
            warn!(%peer, reason = "limit", "session refused: max_sessions reached");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    stream.write_all(b"421 Too many sessions, try again later\r\n"),
                )
                .await;
            });
        }
    }
}
