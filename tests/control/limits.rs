//! Timeouts, limits and reload: each ends in a clear reply, and a close where it should.

use crate::harness::{gateway, Answer, Client, FakeServer};
use std::time::{Duration, Instant};

const SHORT: Duration = Duration::from_millis(300);

/// Reads the 421 that must come once `SHORT` has passed since `since`, then the close.
async fn closed_with_421(c: &mut Client, since: Instant, text: &str) {
    let r = c.expect(421).await;
    assert!(r.text().contains(text), "expected a 421 saying {text:?}, got {r}");
    assert!(since.elapsed() >= SHORT, "the 421 came after {:?}, before the timeout", since.elapsed());
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_timeout_closes_with_421() {
    let server =
        FakeServer::builder().script(|l| if l.verb == "NOOP" { Answer::Never } else { Answer::Default }).start().await;
    let gw = gateway::start(server.addr, "timeouts: {reply: 300ms}");
    let mut c = Client::greeted(gw.addr).await;
    let asked = Instant::now();
    c.send("NOOP\r\n").await;
    closed_with_421(&mut c, asked, "did not reply in time").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_with_421() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "timeouts: {idle: 300ms}");
    let connected = Instant::now();
    let mut c = Client::greeted(gw.addr).await;
    closed_with_421(&mut c, connected, "Idle timeout").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_timeout_closes_with_421() {
    let server = FakeServer::builder().silent().start().await;
    let gw = gateway::start(server.addr, "timeouts: {banner: 300ms}");
    let connected = Instant::now();
    let mut c = Client::connect(gw.addr).await;
    closed_with_421(&mut c, connected, "did not greet in time").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_session_from_one_client_gets_421() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "limits: {max_sessions_per_client: 1}");
    let mut first = Client::greeted(gw.addr).await;
    let mut second = Client::connect(gw.addr).await;
    let r = second.expect(421).await;
    assert!(r.text().contains("Too many sessions"), "{r}");
    second.expect_closed().await;
    assert_eq!(first.expect_cmd("NOOP", 200).await, "NOOP ok");
    assert_eq!(server.log().connections, 1, "the refused session reached the server");
    drop(first);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_line_gets_500_and_goes_nowhere() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "");
    let mut c = Client::greeted(gw.addr).await;
    let long = format!("STOR {}\r\n", "x".repeat(600));
    c.send(&long).await;
    let r = c.expect(500).await;
    assert!(r.text().contains("longer than 512"), "{r}");
    // In step again with the next line.
    assert_eq!(c.expect_cmd("NOOP", 200).await, "NOOP ok");
    assert_eq!(server.log().texts(0), ["NOOP"]);
    drop(c);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_malformed_lines_end_with_421_and_close() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "limits: {max_malformed: 2}");
    let mut c = Client::greeted(gw.addr).await;
    // A good line in between resets the count: only a run of bad ones closes.
    c.send("12345\r\nNO\0OP\r\nNOOP\r\n").await;
    c.expect(500).await;
    c.expect(500).await;
    assert_eq!(c.expect(200).await.text(), "NOOP ok");
    c.send("12345\r\n\r\nBAD-VERB x\r\n").await;
    for _ in 0..3 {
        c.expect(500).await;
    }
    let r = c.expect(421).await;
    assert!(r.text().contains("malformed"), "{r}");
    c.expect_closed().await;
    assert_eq!(server.log().texts(0), ["NOOP"]);
    gw.stop().await;
}

/// The server hanging up ends the client's session too: at most a 421, then the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_closes_the_session() {
    let server =
        FakeServer::builder().script(|l| if l.verb == "SYST" { Answer::Close } else { Answer::Default }).start().await;
    let gw = gateway::start(server.addr, "");
    let mut c = Client::greeted(gw.addr).await;
    c.send("SYST\r\n").await;
    let r = c.next_reply().await.expect("a 421 before the close");
    assert_eq!(r.code, 421, "after the server closed: {r}");
    c.expect_closed().await;
    gw.stop().await;
}

/// A reload applies to sessions that start after it; a running session keeps its policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_to_new_sessions_only() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "");
    let mut before = Client::greeted(gw.addr).await;
    gw.reload("policy: {commands: {deny: [DELE]}}").await;
    let mut after = Client::greeted(gw.addr).await;
    let r = after.cmd("DELE f.txt").await;
    assert_eq!(r.code, 502, "a session started after the reload: {r}");
    assert_eq!(before.expect_cmd("DELE f.txt", 200).await, "DELE ok", "a session started before the reload");
    assert_eq!(after.expect_cmd("NOOP", 200).await, "NOOP ok");
    let log = server.log();
    assert_eq!(log.texts(0), ["DELE f.txt"]);
    assert_eq!(log.texts(1), ["NOOP"]);
    drop((before, after));
    gw.stop().await;
}
