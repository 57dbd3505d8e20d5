//! `ftpgate sessions`: asks the running instance's admin API for its sessions (or to end one)
//! and prints them as a table or as JSON. HTTP through hyper's client.

use crate::cli::SessionsArgs;
use crate::config::{self, ConfigError};
use crate::proxy::{SessionView, Tokens, TransferView};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// The packaged unit's configuration.
const DEFAULT_CONFIG: &str = "/etc/ftpgate/ftpgate.yaml";
/// The whole exchange, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer that is read (a full registry of sessions as JSON fits easily).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum AdminClientError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{} does not set admin.listen: the admin API is off (or pass --admin URL)", path.display())]
    Off { path: PathBuf },
    #[error("cannot read the token file {}: {source}", path.display())]
    Token { path: PathBuf, source: std::io::Error },
    #[error("`{0}` is not an http:// URL")]
    Url(String),
    #[error("no ftpgate answers at {url}: {error}")]
    Unreachable { url: String, error: String },
    #[error("no answer from {url} within {TIMEOUT:?}")]
    Timeout { url: String },
    #[error("the admin API at {url} refused the request ({status}): {body}")]
    Refused { url: String, status: StatusCode, body: String },
    #[error("no session {0}")]
    NoSuchSession(u64),
    #[error("the admin API's answer is not what ftpgate sends: {0}")]
    Answer(String),
}

impl AdminClientError {
    /// The fault is on this side (the file, the flags, the token file), before anything was
    /// asked; otherwise the instance did not answer, refused, or has no such session.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Config(_) | Self::Off { .. } | Self::Token { .. } | Self::Url(_))
    }
}

/// Where to ask: the listener's address, a wildcard one reached on loopback.
fn base_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// The API's address and the token to present, from the flags or the configuration file.
fn target(args: &SessionsArgs) -> Result<(String, Option<String>), AdminClientError> {
    // With --admin the file is read only when named (for its token).
    let path = match (&args.config, &args.admin) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some(PathBuf::from(DEFAULT_CONFIG)),
        (None, Some(_)) => None,
    };
    let cfg = match &path {
        Some(p) => Some(config::validate(&config::Config::load_raw(p)?)?),
        None => None,
    };
    let base = match (&args.admin, &cfg) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(c)) => match c.startup.admin_listen {
            Some(listen) => base_url(listen),
            None => return Err(AdminClientError::Off { path: path.unwrap_or_default() }),
        },
        (None, None) => unreachable!("the file is read when --admin is absent"),
    };
    let token_file = args.token_file.clone().or_else(|| cfg.and_then(|c| c.startup.admin_token_file));
    let token = match token_file {
        Some(path) => Some(
            Tokens::read(&path).map_err(|source| AdminClientError::Token { path, source })?.first_secret().to_owned(),
        ),
        None => None,
    };
    Ok((base, token))
}

/// One request: the answer's status and body.
async fn ask(method: Method, url: &str, token: Option<&str>) -> Result<(StatusCode, Bytes), AdminClientError> {
    let uri: Uri = url.parse().map_err(|_| AdminClientError::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("http") {
        return Err(AdminClientError::Url(url.to_owned()));
    }
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| AdminClientError::Url(format!("{url}: {e}")))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| AdminClientError::Unreachable { url: url.to_owned(), error: error_chain(&e) })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| AdminClientError::Unreachable { url: url.to_owned(), error: e.to_string() })?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| AdminClientError::Timeout { url: url.to_owned() })?
}

/// hyper's errors say "client error (Connect)"; the cause ("Connection refused") is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminClientError> {
    serde_json::from_slice(body).map_err(|e| AdminClientError::Answer(e.to_string()))
}

/// Runs `ftpgate sessions`: the text to print.
pub fn run(args: &SessionsArgs) -> Result<String, AdminClientError> {
    let (base, token) = target(args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminClientError::Unreachable { url: base.clone(), error: e.to_string() })?;
    rt.block_on(async {
        let (method, url) = match args.kill {
            Some(id) => (Method::DELETE, format!("{base}/sessions/{id}")),
            None => (Method::GET, format!("{base}/sessions")),
        };
        let (status, body) = ask(method, &url, token.as_deref()).await?;
        match (status, args.kill) {
            (StatusCode::NOT_FOUND, Some(id)) => Err(AdminClientError::NoSuchSession(id)),
            (s, _) if !s.is_success() => Err(AdminClientError::Refused {
                url,
                status: s,
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            }),
            (_, Some(_)) if args.json => Ok(String::from_utf8_lossy(&body).into_owned()),
            (_, Some(id)) => {
                let s: SessionView = parse(&body)?;
                Ok(format!(
                    "session {id} ({}, {}) is being ended\n",
                    s.client,
                    s.user.as_deref().unwrap_or("no user yet")
                ))
            }
            (_, None) => {
                let sessions: Vec<SessionView> = parse(&body)?;
                Ok(if args.json { String::from_utf8_lossy(&body).into_owned() } else { table(&sessions) })
            }
        }
    })
}

/// `1.5 GiB`, `300 B`.
fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `45s`, `12m05s`, `3h02m`, `2d04h`.
fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn transfer(t: &TransferView) -> String {
    format!("{} {} {} at {}/s", t.verb, t.path, size(t.bytes), size(t.bytes_per_second))
}

/// The sessions as an aligned table, one line each; names are shown with control characters
/// replaced, so that a user name cannot rewrite the operator's terminal.
pub fn table(sessions: &[SessionView]) -> String {
    if sessions.is_empty() {
        return "no sessions\n".into();
    }
    let shown = |s: &str| s.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>();
    let header = ["ID", "CLIENT", "SERVER", "USER", "PHASE", "AGE", "DOWN", "UP", "TRANSFER"].map(String::from);
    let mut rows = vec![header];
    for s in sessions {
        rows.push([
            s.id.to_string(),
            s.client.clone(),
            s.upstream.clone().unwrap_or_else(|| "-".into()),
            shown(s.user.as_deref().unwrap_or("-")),
            s.phase.clone(),
            age(s.age_seconds),
            size(s.bytes_to_client),
            size(s.bytes_to_server),
            s.transfer.as_ref().map_or_else(|| "-".into(), |t| shown(&transfer(t))),
        ]);
    }
    let widths: Vec<usize> = (0..9).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::TlsState;

    fn view(id: u64, user: &str, transfer: Option<TransferView>) -> SessionView {
        SessionView {
            id,
            client: "203.0.113.2:40000".into(),
            original_destination: Some("198.51.100.2:21".into()),
            upstream: Some("198.51.100.2:21".into()),
            user: Some(user.into()),
            started: "2026-12-01T03:00:00Z".into(),
            age_seconds: 3725,
            phase: "transfer".into(),
            bytes_to_client: 3 * 1024 * 1024 * 1024 / 2,
            bytes_to_server: 12,
            transfer,
            tls: TlsState::Plain,
        }
    }

    #[test]
    fn the_table_has_a_line_per_session_with_its_transfer() {
        let t = TransferView {
            verb: "RETR".into(),
            path: "big.iso".into(),
            kind: "binary".into(),
            mode: "passive".into(),
            direction: "to_client".into(),
            bytes: 512 * 1024 * 1024,
            seconds: 4.0,
            bytes_per_second: 128 * 1024 * 1024,
        };
        let out = table(&[view(1, "alice", Some(t)), view(2, "bob\x1b[2J", None)]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("ID  CLIENT"), "{out}");
        assert!(lines[1].contains("alice") && lines[1].contains("1h02m") && lines[1].contains("1.5 GiB"), "{out}");
        assert!(lines[1].ends_with("RETR big.iso 512.0 MiB at 128.0 MiB/s"), "{out}");
        assert!(lines[2].contains("bob?[2J") && !out.contains('\x1b'), "{out}");
        assert_eq!(table(&[]), "no sessions\n");
    }

    #[test]
    fn sizes_and_ages_read_at_a_glance() {
        assert_eq!(
            (size(0), size(1023), size(1024), size(1536 * 1024)),
            ("0 B".into(), "1023 B".into(), "1.0 KiB".into(), "1.5 MiB".into())
        );
        assert_eq!(
            (age(5), age(65), age(3600), age(90000)),
            ("5s".into(), "1m05s".into(), "1h00m".into(), "1d01h".into())
        );
    }

    #[test]
    fn a_wildcard_listener_is_asked_on_loopback() {
        assert_eq!(base_url("0.0.0.0:2122".parse().unwrap()), "http://127.0.0.1:2122");
        assert_eq!(base_url("[::]:2122".parse().unwrap()), "http://[::1]:2122");
        assert_eq!(base_url("[::1]:2122".parse().unwrap()), "http://[::1]:2122");
    }
}
