//! The metrics endpoint under attack: bounded in connections and header size, serving only
//! `GET /metrics`, and never in the way of FTP clients.

use crate::harness::{gateway, within, Client, FakeServer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The default `metrics.max_connections`.
const MAX: usize = 16;

/// Sends `request` on a new connection and returns the status code and the whole response;
/// `None` when the endpoint closes the connection without a response.
pub(crate) async fn http(addr: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut s = within("a connection to /metrics", TcpStream::connect(addr)).await.expect("connect to /metrics");
    // The endpoint may close before reading all of an oversized request; the response counts.
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = within("the /metrics response", s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((status, text))
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http(addr, format!("GET {path} HTTP/1.1\r\nHost: ftpgate\r\nConnection: close\r\n\r\n").as_bytes()).await
}

/// Scrapes until a scrape is answered: connections closed by the flood are released by the
/// endpoint as it sees each end, which the test cannot await.
async fn scrape(addr: SocketAddr) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    within("a scrape to be answered again", async {
        loop {
            tick.tick().await;
            if let Some((200, text)) = get(addr, "/metrics").await {
                return text;
            }
        }
    })
    .await
}

fn sample(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len()..].trim().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// 200 connections to /metrics that never send a byte (in production, 420 of them took every
/// descriptor and FTP clients got no greeting): the endpoint keeps at most `max_connections`
/// and closes the rest at once, counting them; FTP clients are greeted meanwhile; once the
/// flood ends, scrapes are answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metrics_connections_beyond_the_cap_are_closed_and_ftp_still_greets() {
    const FLOOD: usize = 200;
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "metrics: {listen: '127.0.0.1:0'}");
    let addr = gw.metrics.expect("the gateway serves /metrics");
    let mut idle = Vec::new();
    for _ in 0..FLOOD {
        idle.push(within("a connection to /metrics", TcpStream::connect(addr)).await.expect("connect"));
    }

    let greeted = tokio::time::timeout(Duration::from_secs(2), Client::greeted(gw.addr)).await;
    let mut client = greeted.expect("an FTP client is greeted within 2 s during the flood");
    assert_eq!(client.expect_cmd("NOOP", 200).await, "NOOP ok");

    // Well inside the header read timeout: what is closed by then was closed for the cap.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut closed = 0;
    for s in &mut idle {
        let mut byte = [0; 1];
        if let Ok(r) = tokio::time::timeout_at(deadline, s.read(&mut byte)).await {
            assert!(!matches!(r, Ok(n) if n > 0), "the endpoint wrote to a connection that sent nothing");
            closed += 1;
        }
    }
    assert!(closed >= FLOOD - MAX, "only {closed} of {FLOOD} idle /metrics connections were closed");

    drop(idle);
    let text = scrape(addr).await;
    let refused = sample(&text, "ftpgate_rejections_total{reason=\"metrics_limit\"}");
    assert!(refused >= (FLOOD - MAX) as f64, "{refused} connections counted as refused");
    drop(client);
    gw.stop().await;
}

/// Only `GET /metrics` is served; an oversized header gets no answer but an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_get_metrics_only_with_bounded_headers() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "metrics: {listen: '127.0.0.1:0'}");
    let addr = gw.metrics.expect("the gateway serves /metrics");

    let (status, text) = get(addr, "/metrics").await.expect("a response");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("ftpgate_sessions_active"), "{text}");
    assert_eq!(get(addr, "/").await.map(|r| r.0), Some(404));
    assert_eq!(get(addr, "/metrics/../etc").await.map(|r| r.0), Some(404));
    for method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"] {
        let request =
            format!("{method} /metrics HTTP/1.1\r\nHost: ftpgate\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let (status, text) = http(addr, request.as_bytes()).await.unwrap_or_else(|| panic!("{method}: no response"));
        assert_eq!(status, 405, "{method}: {text}");
        assert!(text.to_ascii_lowercase().contains("\r\nallow: get\r\n"), "{method}: {text}");
    }

    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: ftpgate\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = http(addr, big.as_bytes()).await;
    assert!(!matches!(answer, Some((200, _))), "a 64 KiB header was served");
    gw.stop().await;
}
