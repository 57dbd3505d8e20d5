//! One control session's set-up: where the client was going, which server to connect to, and
//! the connection to it; then the driver runs the session's control core.

use super::data::Endpoints;
use super::driver::{Driver, SessionTls};
use super::Shared;
use crate::addr::{canonical, ClientAddr, LocalAddr, UpstreamAddr};
use crate::data::sockets::{connect, from_ip};
use crate::labels::Reason;
use crate::protocol::reply::reply_line;
use crate::session::{ControlCore, CoreTimeouts, Outcome, TlsPolicy, UpstreamTls};
use crate::tls::{Conn, TlsInfo, Upgrade};
use socket2::SockRef;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, info_span, warn, Instrument};

pub async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    let _active = shared.metrics.session_opened();
    let client_addr = ClientAddr(canonical(peer));
    let local = match client.local_addr() {
        Ok(a) => LocalAddr(canonical(a)),
        Err(e) => {
            warn!(client = %client_addr, error = %e, "cannot read local address of accepted connection");
            return;
        }
    };
    let span =
        info_span!("session", client = %client_addr, dst = tracing::field::Empty, upstream = tracing::field::Empty);
    let started = Instant::now();
    async move {
        let (outcome, up, down) = run(&shared, client, client_addr, local).await;
        shared.metrics.session_ended(outcome, started.elapsed());
        info!(outcome = ?outcome, duration_ms = started.elapsed().as_millis() as u64, bytes_to_client = down, bytes_to_server = up, "session end");
    }
    .instrument(span)
    .await;
}

async fn refuse(mut client: TcpStream, code: u16, text: &str) -> (Outcome, u64, u64) {
    let _ = tokio::time::timeout(Duration::from_secs(5), client.write_all(&reply_line(code, text))).await;
    (Outcome::Refused, 0, 0)
}

async fn run(shared: &Shared, client: TcpStream, client_addr: ClientAddr, local: LocalAddr) -> (Outcome, u64, u64) {
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

    let connect_started = Instant::now();
    let server = match connect(upstream.0, from_ip(cfg.upstream_source), cfg.timeouts.connect, cfg.control_tags).await {
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
    // Telnet Synch: urgent data must stay in band or the byte it marks would vanish from lines.
    let _ = SockRef::from(&client).set_out_of_band_inline(true);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    // Implicit FTPS: TLS from the first byte, toward the server first, so that a client never
    // talks TLS to the gateway for a server that failed verification.
    let policy = cfg.session.tls;
    let implicit_client = implicit(shared, local, original.map(|o| o.0));
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
    let mut tls = SessionTls { for_client: None, for_server: shared.tls.for_server(upstream) };
    let mut server = Conn::Plain(server);
    let mut server_info: Option<TlsInfo> = None;
    if let (true, Some((c, name))) = (implicit_server, tls.for_server.clone()) {
        match server.upgrade(Upgrade::Connect(c, name), cfg.timeouts.connect).await {
            Ok(i) => server_info = Some(i),
            Err(e) => {
                let reason = crate::tls::failure_reason(&e);
                warn!(reason = "tls", side = "server", tls_failure = reason, error = %e, "TLS with the server failed");
                shared.metrics.tls_handshake_failed("server", reason);
                shared.metrics.reject(Reason::Tls);
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
        let cfg_for_client = match shared.tls.for_clients(upstream) {
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
                let reason = crate::tls::failure_reason(&e);
                warn!(reason = "tls", side = "client", tls_failure = reason, error = %e, "TLS with the client failed");
                shared.metrics.tls_handshake_failed("client", reason);
                shared.metrics.reject(Reason::Tls);
                return (Outcome::TlsFailed, 0, 0);
            }
        }
    }
    let shown = |i: &Option<TlsInfo>| i.as_ref().map_or("plain".to_owned(), |i| format!("{} {}", i.version, i.cipher));
    info!(
        connect_ms = connect_started.elapsed().as_millis() as u64,
        %server_side,
        tls_policy = ?policy,
        client_tls = %shown(&client_info),
        server_tls = %shown(&server_info),
        "session start"
    );

    let ep = Endpoints { client: client_addr, client_side: local, original, upstream, server_side };
    let t = &cfg.timeouts;
    let timeouts = CoreTimeouts { banner: t.banner, reply: t.reply, idle: t.idle, data_idle: t.data_idle };
    let mut core = ControlCore::new(client_addr, upstream, cfg.session.clone(), timeouts, Instant::now());
    core.started_in_tls(client.is_tls(), server.is_tls());
    let mut driver = Driver::new(shared, ep);
    driver.tls = tls;
    let outcome = driver.run(&mut core, &mut client, &mut server).await;
    let (client_tls, server_tls) = core.tls_sides();
    shared.metrics.tls_session(client_tls, server_tls);
    (outcome, driver.up, driver.down)
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
