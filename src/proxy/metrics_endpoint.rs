//! `GET /metrics` over HTTP/1.1, served by hyper.

use crate::metrics::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, warn};

fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let resp = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        Response::builder()
            .header(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(metrics.render())))
    } else {
        Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from_static(b"try /metrics\n")))
    };
    // The builder only fails on invalid header values, and these are constants.
    resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Serves scrapes until the task is dropped. Each connection is bounded in time.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = |req: Request<Incoming>| std::future::ready(Ok::<_, Infallible>(answer(&req, &metrics)));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service_fn(service));
            match tokio::time::timeout(Duration::from_secs(30), conn).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics scrape failed"),
                Err(_) => debug!(%peer, "metrics connection closed after 30 s"),
                Ok(Ok(())) => {}
            }
        });
    }
}
