//! One control session's set-up: where the client was going, which server to connect to, and
//! the connection to it; then the driver runs the session's control core.

use super::data::Endpoints;
use super::driver::{Driver, SessionTls};
use super::login::{connect_target, take_login};
use super::registry::Registered;
use super::Shared;
use crate::addr::{canonical, ClientAddr, LocalAddr, UpstreamAddr};
use crate::data::sockets::{connect, from_ip};
use crate::labels::Reason;
use crate::protocol::reply::reply_line;
use crate::session::{ControlCore, CoreTimeouts, LoginMode, Outcome, TlsPolicy, UpstreamTls};
use crate::tls::{Conn, TlsInfo, Upgrade};
use socket2::SockRef;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, info_span, warn, Instrument};

/// What a listener's sessions do: go where the firewall diverted them (or to reverse mode's
/// server), or let their clients name the server (`forward.listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Gateway,
    Forward,
}

pub async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr, kind: ListenerKind) {
    let _active = shared.metrics.session_opened();
    let client_addr = ClientAddr(canonical(peer));
    let local = match client.local_addr() {
        Ok(a) => LocalAddr(canonical(a)),
        Err(e) => {
            warn!(client = %client_addr, error = %e, "cannot read local address of accepted connection");
            return;
        }
    };
    // In the registry for as long as the session lives (the session permit bounds it).
    let registered = shared.sessions.register(client_addr);
    let span = info_span!(
        "session",
        id = registered.entry.id(),
        client = %client_addr,
        dst = tracing::field::Empty,
        upstream = tracing::field::Empty
    );
    let started = Instant::now();
    async move {
        let (outcome, up, down) = match (kind, shared.cfg.live.routes.clone()) {
            (ListenerKind::Forward, _) => {
                run_login(&shared, client, client_addr, local, LoginMode::Forward, registered).await
            }
            (ListenerKind::Gateway, Some(routes)) => {
                run_login(&shared, client, client_addr, local, LoginMode::Route(routes), registered).await
            }
            (ListenerKind::Gateway, None) => run(&shared, client, client_addr, local, registered).await,
        };
        shared.metrics.session_ended(outcome, started.elapsed());
        let duration_ms = started.elapsed().as_millis() as u64;
        if shared.pinholes.is_some() {
            // The kernel carried the data: its figures are on each transfer's line.
            let unknown = "unknown";
            info!(outcome = ?outcome, duration_ms, bytes_to_client = unknown, bytes_to_server = unknown, data_path = "kernel", "session end");
        } else {
            info!(outcome = ?outcome, duration_ms, bytes_to_client = down, bytes_to_server = up, "session end");
        }
    }
    .instrument(span)
    .await;
}

async fn refuse(mut client: TcpStream, code: u16, text: &str) -> (Outcome, u64, u64) {
    let _ = tokio::time::timeout(Duration::from_secs(5), client.write_all(&reply_line(code, text))).await;
    (Outcome::Refused, 0, 0)
}

async fn run(
    shared: &Shared,
    client: TcpStream,
    client_addr: ClientAddr,
    local: LocalAddr,
    registered: Registered,
) -> (Outcome, u64, u64) {
    let cfg = &shared.cfg.live;
    let original = match shared.interceptor.original_dst(&client, client_addr.0, local) {
        Ok(o) => o,
        Err(e) => {
            warn!(reason = "intercept", error = %e, "cannot tell where the client was going");
            shared.metrics.reject(Reason::Intercept);
            return refuse(client, 421, "Gateway cannot determine the destination").await;
        }
    };
    let upstream = match (original, cfg.upstream) {
        (_, Some(u)) => UpstreamAddr(canonical(u)),
        (Some(dst), None) => {
            if shared.interceptor.is_loop(dst, local, &shared.listening) {
                warn!(reason = "loop", %dst, "connection addressed to ftpgate itself, refused");
                shared.metrics.reject(Reason::Loop);
                return refuse(client, 421, "Connection to the gateway itself refused (not diverted)").await;
            }
            match super::destination::screen(shared, dst) {
                Ok(upstream) => upstream,
                Err(text) => return refuse(client, 421, &text).await,
            }
        }
        (None, None) => return refuse(client, 421, "No upstream configured").await,
    };
    let span = tracing::Span::current();
    if let Some(dst) = original {
        span.record("dst", tracing::field::display(dst));
    }
    span.record("upstream", tracing::field::display(upstream));
    registered.entry.route(original, upstream);

    let connect_started = Instant::now();
    let source = from_ip(cfg.upstream_source);
    let server = match connect(upstream.0, source, cfg.timeouts.connect, cfg.control_tags).await {
        Ok(s) => s,
        Err(e) => {
            warn!(reason = "upstream_connect", error = %e, "cannot connect to server");
            shared.metrics.upstream_connect_failed();
            shared.metrics.reject(Reason::UpstreamConnect);
            return refuse(client, 421, &format!("Cannot connect to {upstream}: {e}")).await;
        }
    };
    let server_side = match server.local_addr() {
        Ok(a) => LocalAddr(canonical(a)),
        Err(e) => return refuse(client, 421, &format!("Gateway error: {e}")).await,
    };
    shared.metrics.upstream_connected(connect_started.elapsed());
    let ep = Endpoints { client: client_addr, client_side: local, original, upstream, server_side };
    let core = ControlCore::new(client_addr, upstream, cfg.session.clone(), core_timeouts(shared), Instant::now());
    drive(shared, ep, core, (client, server), registered, connect_started.elapsed()).await
}

fn core_timeouts(shared: &Shared) -> CoreTimeouts {
    let t = &shared.cfg.live.timeouts;
    CoreTimeouts {
        banner: t.banner,
        reply: t.reply,
        idle: t.idle,
        data_idle: t.data_idle,
        login: t.login,
        connect: t.connect,
    }
}

/// Runs a session whose server is connected: implicit FTPS first (TLS from the first byte,
/// toward the server first), then the driver.
async fn drive(
    shared: &Shared,
    ep: Endpoints,
    mut core: ControlCore,
    (client, server): (TcpStream, TcpStream),
    registered: Registered,
    connect_time: Duration,
) -> (Outcome, u64, u64) {
    let cfg = &shared.cfg.live;
    // Telnet Synch: urgent data must stay in band or the byte it marks would vanish from lines.
    let _ = SockRef::from(&client).set_out_of_band_inline(true);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    // Implicit FTPS: TLS from the first byte, toward the server first, so that a client never
    // talks TLS to the gateway for a server that failed verification.
    let policy = cfg.session.tls;
    let implicit_client = implicit(shared, ep.client_side, ep.original.map(|o| o.0));
    if implicit_client && policy.refuses() {
        // TLS from the first byte: nothing the gateway could read, and no reply the client
        // could read either.
        warn!(reason = "policy", "implicit FTPS (port 990) refused: tls is refuse");
        shared.metrics.reject(Reason::Policy);
        return (Outcome::Refused, 0, 0);
    }
    let implicit_server = match policy {
        TlsPolicy::Terminate { upstream } => upstream == UpstreamTls::Implicit,
        TlsPolicy::Inspect => implicit_client,
        TlsPolicy::Refuse => false,
    };
    let mut tls = SessionTls { for_client: None, for_server: shared.tls.for_server(ep.upstream) };
    let mut server = Conn::Plain(server);
    let mut server_info: Option<TlsInfo> = None;
    if let (true, Some((c, name))) = (implicit_server, tls.for_server.clone()) {
        match server.upgrade(Upgrade::Connect(c, name), cfg.timeouts.connect).await {
            Ok(i) => server_info = Some(i),
            Err(e) => {
                let reason = handshake_failed(shared, "server", &e);
                if !implicit_client {
                    refuse(client, 421, &format!("TLS with the server failed ({reason}), closing")).await;
                }
                return (Outcome::TlsFailed, 0, 0);
            }
        }
    }
    let mut client = Conn::Plain(client);
    let mut client_info: Option<TlsInfo> = None;
    if implicit_client {
        let cfg_for_client = match shared.tls.for_clients(ep.upstream) {
            Ok(c) => c,
            Err(e) => {
                warn!(reason = "tls", side = "client", error = %e, "no certificate for this client");
                return (Outcome::TlsFailed, 0, 0);
            }
        };
        tls.for_client = Some(cfg_for_client.clone());
        match client.upgrade(Upgrade::Accept(cfg_for_client), cfg.timeouts.connect).await {
            Ok(i) => client_info = Some(i),
            Err(e) => {
                handshake_failed(shared, "client", &e);
                return (Outcome::TlsFailed, 0, 0);
            }
        }
    }
    let shown = |i: &Option<TlsInfo>| i.as_ref().map_or("plain".to_owned(), |i| format!("{} {}", i.version, i.cipher));
    info!(
        connect_ms = connect_time.as_millis() as u64,
        server_side = %ep.server_side,
        tls_policy = ?policy,
        client_tls = %shown(&client_info),
        server_tls = %shown(&server_info),
        "session start"
    );

    core.started_in_tls(client.is_tls(), server.is_tls());
    let mut driver = Driver::new(shared, ep, registered);
    driver.tls = tls;
    let outcome = driver.run(&mut core, &mut client, &mut server).await;
    (outcome, driver.up, driver.down)
}

/// A session whose server the login names (forward proxy, routes): ftpgate greets the client
/// and takes the login, then connects and hands the core the server.
async fn run_login(
    shared: &Shared,
    mut client: TcpStream,
    client_addr: ClientAddr,
    local: LocalAddr,
    mode: LoginMode,
    registered: Registered,
) -> (Outcome, u64, u64) {
    let cfg = &shared.cfg.live;
    let mut core =
        ControlCore::with_login(client_addr, mode, cfg.session.clone(), core_timeouts(shared), Instant::now());
    // Bounded: a refused target costs the client a login line, which the malformed-input and
    // login deadlines bound, and an unreachable one ends the session.
    let (server, upstream, target, connect_time) = loop {
        let target = match take_login(shared, &mut core, &mut client).await {
            Ok(t) => t,
            Err(outcome) => return (outcome, 0, 0),
        };
        let connect_started = Instant::now();
        match connect_target(shared, &target).await {
            Ok((server, upstream)) => {
                shared.metrics.upstream_connected(connect_started.elapsed());
                core.handle_upstream_connected(upstream, Instant::now());
                break (server, upstream, target, connect_started.elapsed());
            }
            Err(failure) => core.handle_upstream_failed(failure, Instant::now()),
        }
    };
    let server_side = match server.local_addr() {
        Ok(a) => LocalAddr(canonical(a)),
        Err(e) => {
            warn!(error = %e, "cannot read the local address of the server connection");
            return (Outcome::Error, 0, 0);
        }
    };
    tracing::Span::current().record("upstream", tracing::field::display(upstream));
    registered.entry.route(None, upstream);
    info!(%target, user = core.user().unwrap_or("-"), "login: server selected");
    let ep = Endpoints { client: client_addr, client_side: local, original: None, upstream, server_side };
    drive(shared, ep, core, (client, server), registered, connect_time).await
}

/// An implicit FTPS handshake failed: logged and counted by side and reason, which it returns.
fn handshake_failed(shared: &Shared, side: &'static str, e: &std::io::Error) -> &'static str {
    let reason = crate::tls::failure_reason(e);
    warn!(reason = "tls", side, tls_failure = reason, error = %e, "TLS with the {side} failed");
    shared.metrics.tls_handshake_failed(side, reason);
    shared.metrics.reject(Reason::Tls);
    reason
}

/// Implicit FTPS: the client came to port 990 (as diverted), or to a listener configured for it.
fn implicit(shared: &Shared, local: LocalAddr, original: Option<SocketAddr>) -> bool {
    if original.is_some_and(|o| o.port() == 990) {
        return true;
    }
    shared
        .implicit
        .iter()
        .any(|l| l.port() == local.0.port() && (l.ip().is_unspecified() || canonical(*l).ip() == local.ip()))
}
