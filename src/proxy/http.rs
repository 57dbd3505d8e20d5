//! The gateway's small HTTP/1.1 listeners (`/metrics`, the admin API), served by hyper and
//! bounded so that they cannot take what FTP clients need: at most `max_connections`
//! connections at once (further ones are closed as soon as they are accepted, and counted), one
//! request per connection, a bounded header, and a bounded time per connection.

use crate::labels::Reason;
use crate::metrics::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Time for a request's header to arrive, counted from the connection's start.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the whole connection: header, rendering and sending the response.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request's header may take (hyper's smallest allowed read buffer is 8 KiB).
const MAX_HEADER: usize = 16 * 1024;
/// At most one log line per this long about refused connections, however many there are.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Answers one request from `peer`. Requests carry no body the gateway reads.
pub type Handler = Arc<dyn Fn(&Request<Incoming>, SocketAddr) -> Response<Full<Bytes>> + Send + Sync>;

/// What a listener is, for its log lines and its refusals.
pub struct Bounds {
    pub max_connections: usize,
    /// The rejection reason counted for a connection beyond the bound.
    pub refused: Reason,
    /// The configuration field that sets the bound, named in the log.
    pub field: &'static str,
    /// The listener's name in log lines.
    pub name: &'static str,
}

/// A response with a plain-text body; `headers` are constants.
pub fn text(
    status: StatusCode,
    headers: &[(&'static str, &'static str)],
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    // The builder only fails on invalid header values, and these are constants.
    b.body(Full::new(body.into())).unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Aborts the serving task when dropped (when the gateway stops serving).
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `listener`, when there is one, on a task of its own; `what` is logged with its
/// address.
pub fn spawn(
    listener: Option<std::net::TcpListener>,
    metrics: &Arc<Metrics>,
    bounds: Bounds,
    handler: Handler,
    what: &'static str,
) -> Option<AbortOnDrop> {
    match TcpListener::from_std(listener?) {
        Ok(l) => {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(listen = %addr, max_connections = bounds.max_connections, "{what}");
            }
            Some(AbortOnDrop(tokio::spawn(serve(l, metrics.clone(), bounds, handler))))
        }
        Err(e) => {
            warn!(error = %e, "cannot register the {} listener", bounds.name);
            None
        }
    }
}

/// Serves requests until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, bounds: Bounds, handler: Handler) {
    let max_connections = bounds.max_connections;
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut refused = 0u64;
    let mut logged: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "{} endpoint: accept failed", bounds.name);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: its descriptor is back before the next accept.
            drop(stream);
            metrics.reject(bounds.refused);
            refused += 1;
            if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                warn!(
                    %peer,
                    reason = bounds.refused.label(),
                    refused_since_last_line = refused,
                    "{} connection closed: {max_connections} open already ({})",
                    bounds.name,
                    bounds.field,
                );
                logged = Some(Instant::now());
                refused = 0;
            }
            continue;
        };
        let handler = handler.clone();
        let name = bounds.name;
        tokio::spawn(async move {
            let service = |req: Request<Incoming>| std::future::ready(Ok::<_, Infallible>(handler(&req, peer)));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service_fn(service));
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "{name} request failed"),
                Err(_) => debug!(%peer, "{name} connection closed after {CONNECTION_TIMEOUT:?}"),
                Ok(Ok(())) => {}
            }
            drop(slot);
        });
    }
}
