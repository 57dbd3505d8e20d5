//! `GET /metrics`, served on the bounded listener of [`super::http`] (`metrics.max_connections`
//! connections at once, refusals counted as `metrics_limit`).

use super::http::{text, Bounds, Handler};
use crate::labels::Reason;
use crate::metrics::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;

pub fn bounds(max_connections: usize) -> Bounds {
    Bounds { max_connections, refused: Reason::MetricsLimit, field: "metrics.max_connections", name: "metrics" }
}

/// Whether `req` is for the metrics endpoint (on a listener shared with the admin API).
pub fn wants(req: &Request<Incoming>) -> bool {
    req.uri().path() == "/metrics"
}

fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if !wants(req) {
        text(StatusCode::NOT_FOUND, &[], "try /metrics\n")
    } else if req.method() != Method::GET {
        text(StatusCode::METHOD_NOT_ALLOWED, &[("allow", "GET")], "only GET\n")
    } else {
        text(StatusCode::OK, &[("content-type", "text/plain; version=0.0.4; charset=utf-8")], metrics.render())
    }
}

pub fn handler(metrics: Arc<Metrics>) -> Handler {
    Arc::new(move |req, _peer| answer(req, &metrics))
}
