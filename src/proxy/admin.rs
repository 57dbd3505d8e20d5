//! The admin API: `GET /sessions`, `GET /sessions/{id}` and `DELETE /sessions/{id}` as JSON,
//! on the bounded listener of [`super::http`] (its own `admin.listen`, or the metrics listener
//! when both name the same address). With `admin.token_file` every request needs one of its
//! bearer tokens; without, the configuration only lets the listener bind loopback.

use super::http::{text, Bounds, Handler};
use super::metrics_endpoint;
use super::registry::{EndedBy, Registry};
use crate::labels::Reason;
use crate::metrics::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tracing::{debug, warn};

pub fn bounds(max_connections: usize) -> Bounds {
    Bounds { max_connections, refused: Reason::AdminLimit, field: "admin.max_connections", name: "admin" }
}

/// The bearer tokens of `admin.token_file`: one a line, `NAME:SECRET` or a bare `SECRET`
/// (named after its line); empty lines and lines starting with `#` are skipped. The name is
/// what the log says ended a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens(Vec<(String, String)>);

impl Tokens {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, secret) = match line.split_once(':') {
                Some((name, secret)) => (name.trim().to_owned(), secret.trim()),
                None => (format!("token on line {}", n + 1), line),
            };
            // A short secret is guessed quickly through an endpoint that answers every try.
            if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("line {}: a token needs at least 16 visible ASCII characters", n + 1));
            }
            tokens.push((name, secret.to_owned()));
        }
        if tokens.is_empty() {
            return Err("no token in the file".into());
        }
        Ok(Self(tokens))
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// The secret a client presents (the file's first).
    pub fn first_secret(&self) -> &str {
        &self.0[0].1
    }

    /// The name of the token `presented` is, compared in constant time per token.
    pub fn identify(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for (name, secret) in &self.0 {
            if equal(secret.as_bytes(), presented.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Byte strings compared without stopping at the first difference.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the API serves from: the registry, the tokens, and (on a shared listener) `/metrics`.
pub struct Admin {
    pub registry: Arc<Registry>,
    pub tokens: Option<Arc<Tokens>>,
    pub metrics: Arc<Metrics>,
    /// The listener also serves `/metrics`.
    pub with_metrics: bool,
}

pub fn handler(admin: Admin) -> Handler {
    let metrics = metrics_endpoint::handler(admin.metrics.clone());
    let admin = Arc::new(admin);
    Arc::new(move |req, peer| {
        if admin.with_metrics && metrics_endpoint::wants(req) {
            return metrics(req, peer);
        }
        admin.answer(req, peer)
    })
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            text(status, &[("content-type", "application/json")], body)
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &[], format!("cannot render: {e}\n")),
    }
}

const SESSION_METHODS: &str = "GET, DELETE";

impl Admin {
    /// Who is asking: the token's name, or `None` (refused) when a token is needed and absent
    /// or wrong.
    fn identity(&self, req: &Request<Incoming>) -> Option<String> {
        let Some(tokens) = &self.tokens else { return Some("loopback, no token configured".into()) };
        let presented = req.headers().get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
        tokens.identify(presented.trim()).map(str::to_owned)
    }

    fn answer(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let Some(rest) = path.strip_prefix("/sessions") else {
            let hint: &str = if self.with_metrics { "try /sessions or /metrics\n" } else { "try /sessions\n" };
            return text(StatusCode::NOT_FOUND, &[], hint);
        };
        let Some(identity) = self.identity(req) else {
            warn!(%peer, reason = Reason::AdminAuth.label(), "admin request without a valid bearer token refused");
            self.metrics.reject(Reason::AdminAuth);
            return text(
                StatusCode::UNAUTHORIZED,
                &[("www-authenticate", "Bearer realm=\"ftpgate\"")],
                "a bearer token from admin.token_file is needed\n",
            );
        };
        match rest.trim_start_matches('/') {
            "" if req.method() == Method::GET => json(StatusCode::OK, &self.registry.list()),
            "" => text(StatusCode::METHOD_NOT_ALLOWED, &[("allow", "GET")], "only GET\n"),
            id => {
                let Ok(id) = id.parse::<u64>() else {
                    return text(StatusCode::NOT_FOUND, &[], "no such session\n");
                };
                let found = match *req.method() {
                    Method::GET => self.registry.get(id),
                    Method::DELETE => {
                        debug!(%peer, admin = %identity, session = id, "admin asks to end a session");
                        self.registry.end(id, EndedBy { peer, identity })
                    }
                    _ => return text(StatusCode::METHOD_NOT_ALLOWED, &[("allow", SESSION_METHODS)], "GET or DELETE\n"),
                };
                match found {
                    // DELETE: the session ends on its own task, at once but after this answer.
                    Some(view) if req.method() == Method::DELETE => json(StatusCode::ACCEPTED, &view),
                    Some(view) => json(StatusCode::OK, &view),
                    None => text(StatusCode::NOT_FOUND, &[], "no such session\n"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_name_their_tokens() {
        let t = Tokens::parse("# ops\n\nops:0123456789abcdef0123\n0123456789ABCDEFxyz\n").unwrap();
        assert_eq!(t.identify("0123456789abcdef0123"), Some("ops"));
        assert_eq!(t.identify("0123456789ABCDEFxyz"), Some("token on line 4"));
        assert_eq!(t.identify("0123456789abcdef012"), None);
        assert_eq!(t.identify(""), None);
        assert_eq!(t.first_secret(), "0123456789abcdef0123");
    }

    #[test]
    fn weak_or_empty_token_files_are_refused() {
        assert!(Tokens::parse("# nothing\n").unwrap_err().contains("no token"));
        assert!(Tokens::parse("ops:short\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("ops:0123456789abcdef with space\n").is_err());
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd") && !equal(b"abc", b"ab") && !equal(b"", b"a"));
    }
}
