//! Half-close: each direction runs to its own end of file and passes it on; a cut (reset,
//! write error) is a failure, passed on as a reset.

use super::tests::{modes, pair, payload};
use super::*;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The bound on every wait of these tests; a pass never comes near it.
const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The peers of a relay set up as a data channel runs it (the client's connection first),
/// and the sender that tells it which way carries the transfer.
struct Ends {
    client: TcpStream,
    server: TcpStream,
    relay: JoinHandle<RelayOutcome>,
    tell: watch::Sender<Option<Way>>,
}

async fn through(mode: Mode, idle: Duration) -> Ends {
    let (client, proxy_c) = pair().await;
    let (proxy_s, server) = pair().await;
    let (tell, carrier) = watch::channel(None);
    let relay =
        tokio::spawn(async move { relay_carrying(proxy_c, proxy_s, idle, [&|_| {}, &|_| {}], mode, carrier).await });
    Ends { client, server, relay, tell }
}

/// A download as the control channel announces it: toward the client, the relay's first stream.
const DOWNLOAD: Option<Way> = Some(Way::BToA);
const UPLOAD: Option<Way> = Some(Way::AToB);

/// Closes with a reset instead of an end of file.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Everything up to the end of file, or the error that came instead.
async fn read_all(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    within("the end of the data", s.read_to_end(&mut got)).await.map(|_| got)
}

/// Waits for the relay to pass a half-close on: the next read is an end of file.
async fn sees_end_of_file(s: &mut TcpStream, who: &str) {
    let mut b = [0u8; 1];
    let n = within(who, s.read(&mut b)).await.unwrap_or_else(|e| panic!("{who}: {e}"));
    assert_eq!(n, 0, "{who}: data where the half-close was due");
}

fn same(got: &[u8], want: &[u8]) -> bool {
    Sha256::digest(got) == Sha256::digest(want)
}

#[tokio::test]
async fn a_client_that_shuts_its_write_side_at_once_still_gets_the_whole_download() {
    for mode in modes() {
        let Ends { mut client, mut server, relay, .. } = through(mode, STEP).await;
        client.shutdown().await.unwrap();
        // The half-close reaches the server; only then does it send the file, as a server
        // answering the RETR that follows would.
        sees_end_of_file(&mut server, "the client's half-close at the server").await;
        let data = payload(3_000_017);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            let r = server.write_all(&sent).await;
            (r.and(server.shutdown().await), server)
        });
        let got = read_all(&mut client).await.unwrap();
        assert_eq!(got.len(), data.len(), "{mode:?}: the client got {} of {} bytes", got.len(), data.len());
        assert!(same(&got, &data), "{mode:?}");
        let out = within("the relay", relay).await.unwrap();
        assert_eq!(out.result, Ok(()), "{mode:?}");
        assert_eq!((out.a_to_b, out.b_to_a), (0, data.len() as u64), "{mode:?}");
        let (written, _server) = writer.await.unwrap();
        written.unwrap();
    }
}

/// The server shuts its write side `after` bytes of the upload (0: before the first byte).
async fn upload_past_a_server_half_close(mode: Mode, after: usize) {
    let Ends { mut client, mut server, relay, .. } = through(mode, STEP).await;
    let data = payload(4_000_037);
    let sent = data.clone();
    let uploader = tokio::spawn(async move {
        client.write_all(&sent[..after]).await?;
        sees_end_of_file(&mut client, "the server's half-close at the client").await;
        client.write_all(&sent[after..]).await?;
        client.shutdown().await?;
        Ok::<_, io::Error>(client)
    });
    let mut first = vec![0u8; after];
    within("the start of the upload", server.read_exact(&mut first)).await.unwrap();
    server.shutdown().await.unwrap();
    let rest = read_all(&mut server).await.unwrap();
    let got = [first, rest].concat();
    assert_eq!(got.len(), data.len(), "{mode:?}, half-close after {after}: the server got {} bytes", got.len());
    assert!(same(&got, &data), "{mode:?}");
    let out = within("the relay", relay).await.unwrap();
    assert_eq!(out.result, Ok(()), "{mode:?}");
    assert_eq!((out.a_to_b, out.b_to_a), (data.len() as u64, 0), "{mode:?}");
    drop(uploader.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_server_that_half_closes_during_an_upload_gets_the_whole_upload() {
    for mode in modes() {
        upload_past_a_server_half_close(mode, 0).await;
        upload_past_a_server_half_close(mode, 1_000_000).await;
    }
}

#[tokio::test]
async fn a_reset_mid_download_is_an_error_and_reaches_the_client_as_a_reset() {
    for mode in modes() {
        let Ends { mut client, mut server, relay, .. } = through(mode, STEP).await;
        client.shutdown().await.unwrap();
        sees_end_of_file(&mut server, "the client's half-close at the server").await;
        let wrote = within("the first part", server.write_all(&payload(1 << 20))).await;
        reset(server);
        let got = read_all(&mut client).await;
        assert!(
            got.is_err(),
            "{mode:?}: the cut reached the client as an end of file after {:?} bytes",
            got.map(|g| g.len())
        );
        let out = within("the relay", relay).await.unwrap();
        assert!(out.result.is_err(), "{mode:?}: {:?}", out.result);
        wrote.unwrap();
    }
}

#[tokio::test]
async fn a_reset_mid_upload_is_an_error_and_reaches_the_server_as_a_reset() {
    for mode in modes() {
        let Ends { mut client, mut server, relay, .. } = through(mode, STEP).await;
        server.shutdown().await.unwrap();
        sees_end_of_file(&mut client, "the server's half-close at the client").await;
        let wrote = within("the first part", client.write_all(&payload(1 << 20))).await;
        reset(client);
        // A server that saw an end of file here would store a short file as complete.
        let got = read_all(&mut server).await;
        assert!(
            got.is_err(),
            "{mode:?}: the cut reached the server as an end of file after {:?} bytes",
            got.map(|g| g.len())
        );
        let out = within("the relay", relay).await.unwrap();
        assert!(out.result.is_err(), "{mode:?}: {:?}", out.result);
        wrote.unwrap();
    }
}

/// Once both ways have carried bytes, neither is the way back: each runs to its own end of
/// file, however the other ended.
#[tokio::test]
async fn once_both_ways_carried_bytes_each_runs_to_its_own_end_of_file() {
    for mode in modes() {
        let Ends { mut client, mut server, relay, .. } = through(mode, STEP).await;
        let (up, down) = (payload(2_000_003), payload(3_000_029));
        let (first, rest) = down.split_at(1 << 20);
        within("the first part down", server.write_all(first)).await.unwrap();
        let mut got_down = vec![0u8; first.len()];
        within("the first part down", client.read_exact(&mut got_down)).await.unwrap();
        let sent = up.clone();
        let uploader = tokio::spawn(async move {
            client.write_all(&sent).await?;
            client.shutdown().await?;
            Ok::<_, io::Error>(client)
        });
        // The server sends the rest only once it has read the client's whole message.
        let got_up = read_all(&mut server).await.unwrap();
        assert!(got_up.len() == up.len() && same(&got_up, &up), "{mode:?}: {} bytes up", got_up.len());
        let mut client = uploader.await.unwrap().unwrap();
        let sent = rest.to_vec();
        let writer = tokio::spawn(async move {
            server.write_all(&sent).await?;
            server.shutdown().await?;
            Ok::<_, io::Error>(server)
        });
        got_down.extend(read_all(&mut client).await.unwrap());
        assert_eq!(got_down.len(), down.len(), "{mode:?}: bytes down");
        assert!(same(&got_down, &down), "{mode:?}");
        let out = within("the relay", relay).await.unwrap();
        assert_eq!(out.result, Ok(()), "{mode:?}");
        assert_eq!((out.a_to_b, out.b_to_a), (up.len() as u64, down.len() as u64), "{mode:?}");
        drop(writer.await.unwrap().unwrap());
    }
}

#[tokio::test]
async fn a_half_closed_relay_still_times_out_when_nothing_moves() {
    for mode in modes() {
        let Ends { mut client, server, relay, .. } = through(mode, Duration::from_millis(200)).await;
        client.shutdown().await.unwrap();
        let out = within("the relay", relay).await.unwrap();
        assert_eq!(out.result, Err("data connection idle".to_string()), "{mode:?}");
        drop(server);
    }
}

/// Told it is a download, an empty file's end of file ends the relay while the client keeps its
/// socket open for the final reply; untold, that end of file cannot be told from a server's
/// half-close before an upload, and the relay waits for the client (here until idle).
#[tokio::test]
async fn an_empty_download_ends_at_the_servers_end_of_file_once_told() {
    for mode in modes() {
        for told in [DOWNLOAD, None] {
            let Ends { mut client, mut server, relay, tell } = through(mode, Duration::from_millis(300)).await;
            tell.send_replace(told);
            server.shutdown().await.unwrap();
            sees_end_of_file(&mut client, "the empty file's end at the client").await;
            let out = within("the relay", relay).await.unwrap();
            let want = if told.is_some() { Ok(()) } else { Err("data connection idle".to_string()) };
            assert_eq!(out.result, want, "{mode:?}, told {told:?}");
            assert_eq!((out.a_to_b, out.b_to_a), (0, 0), "{mode:?}");
        }
    }
}

/// Told it is a download, bytes the client sends and its end of file do not end the relay: the
/// file still comes whole.
#[tokio::test]
async fn a_download_is_not_ended_by_what_the_client_sends() {
    for mode in modes() {
        let Ends { mut client, mut server, relay, tell } = through(mode, STEP).await;
        tell.send_replace(DOWNLOAD);
        client.write_all(b"stray bytes").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(read_all(&mut server).await.unwrap(), b"stray bytes", "{mode:?}");
        let data = payload(2_000_081);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&sent).await?;
            server.shutdown().await?;
            Ok::<_, io::Error>(server)
        });
        let got = read_all(&mut client).await.unwrap();
        assert!(got.len() == data.len() && same(&got, &data), "{mode:?}: {} bytes", got.len());
        let out = within("the relay", relay).await.unwrap();
        assert_eq!(out.result, Ok(()), "{mode:?}");
        assert_eq!((out.a_to_b, out.b_to_a), (11, data.len() as u64), "{mode:?}");
        drop(writer.await.unwrap().unwrap());
    }
}

/// Told while it runs: an empty upload whose client half-closed at once ends when the relay
/// learns it is an upload, the server's side still open.
#[tokio::test]
async fn told_late_an_empty_upload_ends_at_once() {
    for mode in modes() {
        let Ends { mut client, mut server, relay, tell } = through(mode, STEP).await;
        client.shutdown().await.unwrap();
        sees_end_of_file(&mut server, "the client's half-close at the server").await;
        assert!(!relay.is_finished(), "{mode:?}: ended before it was told");
        tell.send_replace(UPLOAD);
        let out = within("the relay", relay).await.unwrap();
        assert_eq!(out.result, Ok(()), "{mode:?}");
        assert_eq!((out.a_to_b, out.b_to_a), (0, 0), "{mode:?}");
    }
}
