//! The runtime of the login phase (forward proxy, routes): only the client is connected while
//! the core takes the login; then the server the login names is resolved, checked against
//! the destination policy and connected, and the outcome reported back to the core.

use super::driver::note;
use super::stream::ControlStream;
use super::Shared;
use crate::addr::{canonical, OriginalDst, UpstreamAddr};
use crate::data::sockets::{connect, from_ip};
use crate::labels::Reason;
use crate::session::{Action, ConnectFailure, ControlCore, Outcome, Target};
use std::io;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// Addresses of one name tried at most: a name with hundreds must not hold a session long.
const MAX_ADDRESSES: usize = 8;

/// Runs the core until its login names a server (`Ok`) or the session ends (`Err`).
pub(super) async fn take_login<C: ControlStream>(
    shared: &Shared,
    core: &mut ControlCore,
    client: &mut C,
) -> Result<Target, Outcome> {
    let mut chunk = [0u8; 2048];
    let write_limit = shared.cfg.live.timeouts.idle;
    loop {
        while let Some(action) = core.poll_action() {
            match action {
                Action::ToClient { bytes, .. } | Action::ToClientOutOfBand(bytes) => {
                    let written = tokio::time::timeout(write_limit, client.write_all(&bytes)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        debug!("client does not take the login phase's replies");
                        return Err(Outcome::Error);
                    }
                }
                Action::Note(n) => note(&shared.metrics, n),
                Action::Connect(target) => return Ok(target),
                Action::Close(outcome) => return Err(outcome),
                // Nothing else exists before a server does.
                other => debug!(action = ?other, "action without a server ignored"),
            }
        }
        let Some(deadline) = core.poll_timeout() else { return Err(Outcome::Error) };
        tokio::select! {
            r = client.read(&mut chunk), if core.wants_client_input() => match r {
                Ok(0) | Err(_) => core.handle_client_eof(Instant::now()),
                Ok(n) => core.handle_client_bytes(&chunk[..n], Instant::now()),
            },
            _ = tokio::time::sleep_until(deadline.into()) => core.handle_timeout(Instant::now()),
        }
    }
}

/// Connects to `target`: a configured server as is; a name the client gave after resolving
/// it and screening every address with the destination policy (never connect, then check).
/// Bounded as a whole by `timeouts.connect`.
pub(super) async fn connect_target(
    shared: &Shared,
    target: &Target,
) -> Result<(TcpStream, UpstreamAddr), ConnectFailure> {
    let limit = shared.cfg.live.timeouts.connect;
    match tokio::time::timeout(limit, connect_within(shared, target)).await {
        Ok(r) => r,
        Err(_) => {
            fail_connect(shared, target, &format!("no connection within {limit:?}"));
            Err(ConnectFailure::Unreachable(format!("Cannot connect to {target}: timed out")))
        }
    }
}

async fn connect_within(shared: &Shared, target: &Target) -> Result<(TcpStream, UpstreamAddr), ConnectFailure> {
    let candidates = match target {
        Target::Configured(up) => vec![*up],
        Target::Named { host, port } => screened(shared, host, *port).await?,
    };
    let cfg = &shared.cfg.live;
    let mut last: Option<io::Error> = None;
    for up in candidates {
        let source = from_ip(cfg.upstream_source.filter(|s| s.is_ipv6() == up.is_ipv6()));
        // Each try gets what is left of the whole bound, which the caller enforces.
        match connect(up.0, source, cfg.timeouts.connect, cfg.control_tags).await {
            Ok(s) => return Ok((s, up)),
            Err(e) => {
                debug!(upstream = %up, error = %e, "connect failed, trying the next address");
                last = Some(e);
            }
        }
    }
    let e = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
    fail_connect(shared, target, &e);
    Err(ConnectFailure::Unreachable(format!("Cannot connect to {target}: {e}")))
}

fn fail_connect(shared: &Shared, target: &Target, error: &str) {
    warn!(reason = Reason::UpstreamConnect.label(), %target, error, "cannot connect to server");
    shared.metrics.upstream_connect_failed();
    shared.metrics.reject(Reason::UpstreamConnect);
}

/// The addresses of `host` the destination policy lets a client reach, in the resolver's
/// order; a refusal (logged and counted by the policy) when there is none.
async fn screened(shared: &Shared, host: &str, port: u16) -> Result<Vec<UpstreamAddr>, ConnectFailure> {
    // RFC 6761 section 6.4: `invalid` names never resolve, and no query is sent for them.
    let bare = host.strip_suffix('.').unwrap_or(host);
    if bare == "invalid" || bare.ends_with(".invalid") {
        warn!(reason = Reason::UpstreamConnect.label(), host, "server name under .invalid refused");
        shared.metrics.reject(Reason::UpstreamConnect);
        return Err(ConnectFailure::Refused(format!("Cannot resolve {host}")));
    }
    let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(it) => it.map(canonical).take(MAX_ADDRESSES).collect(),
        Err(e) => {
            warn!(reason = Reason::UpstreamConnect.label(), host, error = %e, "cannot resolve the server name");
            shared.metrics.reject(Reason::UpstreamConnect);
            return Err(ConnectFailure::Refused(format!("Cannot resolve {host}")));
        }
    };
    let mut allowed = Vec::new();
    let mut refusal = None;
    for addr in resolved {
        match super::destination::screen(shared, OriginalDst(addr)) {
            Ok(up) => allowed.push(up),
            Err(text) => {
                refusal.get_or_insert(text);
            }
        }
    }
    if allowed.is_empty() {
        return Err(ConnectFailure::Refused(refusal.unwrap_or_else(|| format!("{host} has no address"))));
    }
    Ok(allowed)
}
