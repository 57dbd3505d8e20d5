//! Half-closed and cut data connections: a client that shuts its sending side of a download
//! still gets the whole file and the 226; a download cut short gets 426, never the server's
//! 226; every attempted file transfer, failed or never connected, gets its xferlog line.

use crate::harness::{connect_data, gateway, read_data, Answer, Client, FakeServer, Sink};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// A gateway in front of `server` writing its transfer log into `dir`, with `yaml` on top.
fn gateway_with_xferlog(server: &FakeServer, dir: &Path, yaml: &str) -> (gateway::Gateway, PathBuf) {
    let xferlog = dir.join("xferlog");
    let gw = gateway::start(server.addr, &format!("log: {{xferlog: '{}'}}\n{yaml}", xferlog.display()));
    (gw, xferlog)
}

/// The xferlog(5) fields of each line: [7] bytes, [8] path, [11] direction, [17] completion.
fn xferlog_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let rows: Vec<Vec<String>> = text.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect();
    for row in &rows {
        assert_eq!(row.len(), 18, "not an xferlog line: {row:?}");
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_its_data_connection_still_gets_the_whole_download() {
    const SIZE: u64 = (3 << 20) + 5;
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, xferlog) = gateway_with_xferlog(&server, dir.path(), "");
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("TYPE I", 200).await;
    let at = c.pasv().await;
    let mut data = connect_data(at).await;
    // Legal TCP: a download's receiver has nothing to send and says so at once.
    data.shutdown().await.unwrap();
    c.send(format!("RETR {SIZE}\r\n")).await;
    c.expect(150).await;
    let got = read_data(data).await;
    assert_eq!(got, SIZE, "the client got {got} of {SIZE} bytes");
    assert_eq!(c.expect(226).await.text(), format!("Transfer complete ({SIZE} bytes)"));
    let rows = xferlog_rows(&xferlog);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (r, size) = (&rows[0], SIZE.to_string());
    assert_eq!((r[7].as_str(), r[8].as_str(), r[11].as_str(), r[17].as_str()), (&*size, &*size, "o", "c"), "{r:?}");
    assert_eq!(c.expect_cmd("NOOP", 200).await, "NOOP ok");
    drop(c);
    gw.stop().await;
}

/// The server sends 1 MiB, resets the data connection and still answers 226; with
/// `half_close` the client shut its sending side right after connecting.
async fn cut_short(half_close: bool) {
    const AFTER: u64 = 1 << 20;
    let server = FakeServer::builder()
        .script(|l| match l.verb.as_str() {
            "RETR" => Answer::RetrReset { after: AFTER },
            _ => Answer::Default,
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, xferlog) = gateway_with_xferlog(&server, dir.path(), "");
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("TYPE I", 200).await;
    let at = c.pasv().await;
    let mut data = connect_data(at).await;
    if half_close {
        data.shutdown().await.unwrap();
    }
    c.send("RETR cut.bin\r\n").await;
    c.expect(150).await;
    let mut sink = Sink::new(data);
    let r = c.reply_while_reading(&mut sink).await;
    let got = sink.read_to_end().await;
    assert_eq!(r.code, 426, "half-close {half_close}: the client got {r} after {got} bytes of a cut download");
    assert_eq!(r.text(), "Data connection closed before all data arrived; transfer aborted");
    assert!(got <= AFTER, "{got}");
    // The transfer was attempted and failed: one line, status incomplete.
    let rows = xferlog_rows(&xferlog);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!((r[8].as_str(), r[11].as_str(), r[17].as_str()), ("cut.bin", "o", "i"), "{r:?}");
    assert!(r[7].parse::<u64>().unwrap() <= AFTER, "{r:?}");
    assert_eq!(c.expect_cmd("NOOP", 200).await, "NOOP ok");
    drop(c);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_short_gets_426_not_226() {
    cut_short(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_download_cut_short_gets_426_not_226() {
    cut_short(true).await;
}

/// RETR answered 150 whose data connection never comes: the transfer was attempted, so it
/// has its xferlog line, 0 bytes and status incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_data_connection_never_came_is_logged_incomplete() {
    let server = FakeServer::builder()
        .script(|l| match l.verb.as_str() {
            "RETR" => Answer::Raw(b"150 Opening data connection\r\n425 No data connection\r\n".to_vec()),
            _ => Answer::Default,
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, xferlog) = gateway_with_xferlog(&server, dir.path(), "timeouts: {data_accept: 300ms}\n");
    let mut c = Client::greeted(gw.addr).await;
    c.pasv().await;
    c.send("RETR never.bin\r\n").await;
    c.expect(150).await;
    c.expect(425).await;
    let rows = xferlog_rows(&xferlog);
    assert_eq!(rows.len(), 1, "no xferlog line for a transfer that never connected: {rows:?}");
    let r = &rows[0];
    assert_eq!((r[7].as_str(), r[8].as_str(), r[11].as_str(), r[17].as_str()), ("0", "never.bin", "o", "i"), "{r:?}");
    assert_eq!(c.expect_cmd("NOOP", 200).await, "NOOP ok");
    drop(c);
    gw.stop().await;
}
