//! `GET /metrics` over HTTP/1.1, served by hyper, bounded so that it cannot take what FTP
//! clients need: at most `metrics.max_connections` connections at once (further ones are
//! closed as soon as they are accepted, and counted), one request per connection, a bounded
//! header, and a bounded time per connection.

use crate::labels::Reason;
use crate::metrics::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
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

fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let resp = if req.uri().path() != "/metrics" {
        Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from_static(b"try /metrics\n")))
    } else if req.method() != Method::GET {
        Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(ALLOW, "GET")
            .body(Full::new(Bytes::from_static(b"only GET\n")))
    } else {
        Response::builder()
            .header(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(metrics.render())))
    };
    // The builder only fails on invalid header values, and these are constants.
    resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Serves scrapes until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut refused = 0u64;
    let mut logged: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: its descriptor is back before the next accept.
            drop(stream);
            metrics.reject(Reason::MetricsLimit);
            refused += 1;
            if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                warn!(
                    %peer,
                    reason = Reason::MetricsLimit.label(),
                    refused_since_last_line = refused,
                    "metrics connection closed: {max_connections} open already (metrics.max_connections)"
                );
                logged = Some(Instant::now());
                refused = 0;
            }
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = |req: Request<Incoming>| std::future::ready(Ok::<_, Infallible>(answer(&req, &metrics)));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service_fn(service));
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics scrape failed"),
                Err(_) => debug!(%peer, "metrics connection closed after {CONNECTION_TIMEOUT:?}"),
                Ok(Ok(())) => {}
            }
            drop(slot);
        });
    }
}
