//! Telnet on the client's control connection: option negotiation is bounded like malformed
//! input, and bytes that carry no command keep no session alive.

use crate::harness::{gateway, within, Client, FakeServer};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IAC: u8 = 255;
const DO: u8 = 253;
const WONT: u8 = 252;
const NOP: u8 = 241;

/// Writes `IAC DO 1` without end (at most 64 MiB, far more than the socket buffers of both
/// ends hold) and never reads; returns the stream once a write fails, that is once the gateway
/// has closed the connection.
async fn flood_options(mut stream: TcpStream) -> (TcpStream, std::io::Error) {
    let chunk: Vec<u8> = [IAC, DO, 1].repeat(21_845);
    for _ in 0..1024 {
        if let Err(e) = stream.write_all(&chunk).await {
            return (stream, e);
        }
    }
    panic!("64 MiB of option negotiation went through and the session is still open");
}

/// A client that floods `IAC DO 1` and never reads: before, each read was answered with a write
/// of refusals, the write blocked on the full socket and held the session (and its slot, and
/// the upstream connection) until the idle timeout. Now the negotiations count toward the
/// malformed-input limit and the session ends with a 421 at once; a new session from the same
/// client is taken (one session per client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_flood_is_closed_at_once_and_frees_the_session_slot() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "limits: {max_sessions_per_client: 1}\ntimeouts: {idle: 1h}");
    let flooder = Client::greeted(gw.addr).await.into_stream();
    let (mut stream, err) = within("the gateway to close the flooding session", flood_options(flooder)).await;
    assert!(
        matches!(err.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
        "the flood ended with {err}"
    );
    // The slot is given back when the session task has ended, just after the close: a new
    // session may be refused while that happens, never for long.
    let mut refused = 0;
    let mut second = loop {
        let mut c = Client::connect(gw.addr).await;
        match c.next_reply().await {
            Some(r) if r.code == 220 => break c,
            Some(r) if r.code == 421 && r.text().contains("Too many sessions") && refused < 200 => refused += 1,
            other => panic!("a second session from the client after the flood got {other:?}"),
        }
    };
    assert_eq!(second.expect_cmd("NOOP", 200).await, "NOOP ok");
    // What the flooder was sent before the close: the refusals of the tolerated negotiations
    // (the default limit is 8), then the 421. Data that came before the reset stays readable.
    let mut got = Vec::new();
    let _ = within("the flooder's last bytes", stream.read_to_end(&mut got)).await;
    let refusals = [IAC, WONT, 1].repeat(8);
    let text = String::from_utf8_lossy(got.get(refusals.len()..).unwrap_or_default()).into_owned();
    assert!(got.starts_with(&refusals), "the flooder got {:?}", String::from_utf8_lossy(&got));
    assert_eq!(text, "421 Too many Telnet option negotiations, closing\r\n");
    drop(second);
    gw.stop().await;
}

/// Option refusals and what the gateway counts: up to `max_malformed` negotiations in a row
/// are answered (`IAC WONT` for `DO`), one more closes the session with a 421.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn option_negotiation_counts_toward_the_malformed_limit() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "limits: {max_malformed: 2}");
    let mut c = Client::greeted(gw.addr).await;
    // Two refused, then a good command resets the count as after malformed lines.
    c.send([IAC, DO, 1, IAC, DO, 3]).await;
    c.send("NOOP\r\n").await;
    let mut stream = c.into_stream();
    let mut got = vec![0u8; 6];
    within("the refusals", stream.read_exact(&mut got)).await.expect("refusals");
    assert_eq!(got, [IAC, WONT, 1, IAC, WONT, 3]);
    let mut c = Client::from_stream(stream, gw.addr);
    assert_eq!(c.expect(200).await.text(), "NOOP ok");
    // Three in a row: two refusals, then the 421 and the close.
    c.send([IAC, DO, 5, IAC, DO, 6, IAC, DO, 7]).await;
    let mut stream = c.into_stream();
    let mut got = Vec::new();
    within("the close", stream.read_to_end(&mut got)).await.expect("a clean close");
    assert!(got.starts_with(&[IAC, WONT, 5, IAC, WONT, 6, b'4', b'2', b'1']), "{:?}", String::from_utf8_lossy(&got));
    assert!(String::from_utf8_lossy(&got).contains("Telnet option negotiations"));
    assert_eq!(server.log().texts(0), ["NOOP"]);
    gw.stop().await;
}

/// Telnet bytes that carry no command do not reset the idle timer: a client that sends only
/// `IAC NOP` (and the start of a line it never ends) is closed when `idle` has passed since its
/// last command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnet_bytes_without_a_command_keep_no_session_alive() {
    const IDLE: Duration = Duration::from_millis(600);
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "timeouts: {idle: 600ms}");
    let mut c = Client::greeted(gw.addr).await;
    let last_command = Instant::now();
    assert_eq!(c.expect_cmd("NOOP", 200).await, "NOOP ok");
    let mut stream = c.into_stream();
    let mut ticks = tokio::time::interval(IDLE / 6);
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    let mut sent = 0;
    within("the idle close", async {
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let bytes: &[u8] = if sent == 0 { b"NO" } else { &[IAC, NOP] };
                    sent += 1;
                    // Once the gateway has closed, writes fail; the read below sees the end.
                    let _ = stream.write_all(bytes).await;
                }
                n = stream.read(&mut chunk) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                },
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("421 Idle timeout"), "the idle client got {text:?}");
    assert!(last_command.elapsed() >= IDLE, "closed after {:?}, before the idle timeout", last_command.elapsed());
    assert!(sent >= 4, "only {sent} Telnet writes before the close: the test proved nothing");
    gw.stop().await;
}
