//! The admin API against a live session: `GET /sessions` shows it with its user and a running
//! transfer whose byte count grows; `DELETE /sessions/{id}` ends it with 421, aborts the
//! transfer and leaves an incomplete line in the transfer log; tokens and methods are checked.

use crate::harness::{connect_data, gateway, within, Client, FakeServer, Sink};
use crate::metrics::http;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// Far more than the socket buffers hold: the transfer runs until it is ended.
const BIG: u64 = 1 << 30;
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: ftpgate\r\n{auth}Connection: close\r\n\r\n");
    let (status, text) = http(addr, req.as_bytes()).await.expect("the admin API answers");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

async fn sessions(addr: SocketAddr, token: Option<&str>) -> Vec<Value> {
    let (status, body) = request(addr, "GET", "/sessions", token).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Polls (bounded) until `pred` holds for the session list.
async fn sessions_until(addr: SocketAddr, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    within(what, async {
        loop {
            tick.tick().await;
            let s = sessions(addr, None).await;
            if pred(&s) {
                return s;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_show_a_running_transfer_and_delete_ends_it_with_421() {
    let dir = tempfile::tempdir().unwrap();
    let xferlog = dir.path().join("xferlog");
    let server = FakeServer::start().await;
    let yaml = format!("admin: {{listen: '127.0.0.1:0'}}\nlog: {{xferlog: '{}'}}\n", xferlog.display());
    let gw = gateway::start(server.addr, &yaml);
    let admin = gw.admin.expect("the gateway serves the admin API");
    assert!(sessions(admin, None).await.is_empty());

    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("USER alice", 331).await;
    c.expect_cmd("PASS secret-password", 230).await;
    c.expect_cmd("TYPE I", 200).await;
    let at = c.pasv().await;
    let mut sink = Sink::new(connect_data(at).await);
    c.send(format!("RETR {BIG}\r\n")).await;
    c.expect(150).await;
    let first = sink.until(1 << 20).await;

    let list =
        sessions_until(admin, "the transfer in the registry", |s| s.len() == 1 && !s[0]["transfer"].is_null()).await;
    let s = &list[0];
    assert_eq!(s["user"], "alice");
    assert_eq!(s["phase"], "transfer");
    assert_eq!(s["upstream"], server.addr.to_string());
    assert_eq!(s["tls"], "plain");
    assert_eq!(s["transfer"]["verb"], "RETR");
    assert_eq!(s["transfer"]["path"], BIG.to_string());
    assert_eq!((s["transfer"]["type"].as_str(), s["transfer"]["mode"].as_str()), (Some("binary"), Some("passive")));
    assert!(!s.to_string().contains("secret-password"), "the password shows: {s}");
    let id = s["id"].as_u64().expect("a numeric id");
    let before = s["bytes_to_client"].as_u64().unwrap();
    assert!(before >= first.min(1 << 20) / 2, "{s}");

    // The count grows while the client reads on.
    sink.until(first + (8 << 20)).await;
    let later = sessions_until(admin, "the byte count to grow", |s| {
        s.first().and_then(|s| s["transfer"]["bytes"].as_u64()).is_some_and(|b| b > before)
    })
    .await;
    assert!(later[0]["bytes_to_client"].as_u64().unwrap() > before);
    let (status, one) = request(admin, "GET", &format!("/sessions/{id}"), None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(serde_json::from_str::<Value>(&one).unwrap()["id"], id);

    let (status, body) = request(admin, "DELETE", &format!("/sessions/{id}"), None).await;
    assert_eq!(status, 202, "{body}");
    let r = c.reply_while_reading(&mut sink).await;
    assert_eq!((r.code, r.text()), (421, "Session ended by the administrator"));
    c.expect_closed().await;
    let got = sink.read_to_end().await;
    assert!(got < BIG, "the transfer went on after DELETE ({got} bytes)");
    sessions_until(admin, "the session to leave the registry", |s| s.is_empty()).await;

    let log = std::fs::read_to_string(&xferlog).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(&format!(" {BIG} b _ o r alice ftp 0 * ")))
        .unwrap_or_else(|| panic!("no RETR line: {log:?}"));
    assert!(line.ends_with(" i"), "the aborted transfer is not marked incomplete: {line}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_file_requests_need_the_token_and_metrics_can_share_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin.tokens");
    std::fs::write(&tokens, format!("# who may end sessions\nops:{TOKEN}\n")).unwrap();
    let server = FakeServer::start().await;
    let yaml = format!(
        "metrics: {{listen: '127.0.0.1:0'}}\nadmin: {{listen: '127.0.0.1:0', token_file: '{}'}}\n",
        tokens.display()
    );
    let gw = gateway::start(server.addr, &yaml);
    let admin = gw.admin.expect("the admin API is served");
    assert_eq!(Some(admin), gw.metrics, "the same address: one listener for both");

    let (status, _) = request(admin, "GET", "/sessions", None).await;
    assert_eq!(status, 401);
    let (status, _) = request(admin, "GET", "/sessions", Some("0123456789abcdef0123456789abcdeX")).await;
    assert_eq!(status, 401);
    let (status, _) = request(admin, "DELETE", "/sessions/1", None).await;
    assert_eq!(status, 401, "no session is ended without the token");
    assert!(sessions(admin, Some(TOKEN)).await.is_empty());

    let (status, metrics) = request(admin, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("ftpgate_rejections_total{reason=\"admin_auth\"} 3"), "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sessions_paths_and_methods_are_refused() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "admin: {listen: '127.0.0.1:0'}");
    let admin = gw.admin.expect("the admin API is served");
    assert_eq!(request(admin, "GET", "/sessions/7", None).await.0, 404);
    assert_eq!(request(admin, "DELETE", "/sessions/7", None).await.0, 404);
    assert_eq!(request(admin, "GET", "/sessions/x", None).await.0, 404);
    assert_eq!(request(admin, "POST", "/sessions", None).await.0, 405);
    assert_eq!(request(admin, "PUT", "/sessions/1", None).await.0, 405);
    assert_eq!(request(admin, "GET", "/metrics", None).await.0, 404, "metrics live on their own listener");
    assert_eq!(request(admin, "GET", "/", None).await.0, 404);

    // An idle session is there, then ended: the client is told 421.
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("USER bob", 331).await;
    let list = sessions_until(admin, "bob's session", |s| s.len() == 1 && s[0]["user"] == "bob").await;
    assert_eq!(list[0]["phase"], "ready");
    assert!(list[0]["transfer"].is_null());
    let id = list[0]["id"].as_u64().unwrap();
    assert_eq!(request(admin, "DELETE", &format!("/sessions/{id}"), None).await.0, 202);
    let r = c.reply().await;
    assert_eq!((r.code, r.text()), (421, "Session ended by the administrator"));
    c.expect_closed().await;
    gw.stop().await;
}
