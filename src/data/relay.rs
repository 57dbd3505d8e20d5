//! Relays one data connection in both directions with half-close, counting bytes.
//!
//! FTP data connections carry bytes one way; the relay is done when that way has delivered its
//! end of file: the other way is then dropped, so a client that keeps its socket open until the
//! final reply arrives cannot stall the transfer.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const BUF: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Bytes from the first stream to the second.
    pub a_to_b: u64,
    /// Bytes from the second stream to the first.
    pub b_to_a: u64,
    /// `Ok` when one direction reached end of file and delivered it.
    pub result: Result<(), String>,
}

/// Called with every chunk's size as it is delivered (live byte metrics, exact even when a
/// transfer is aborted).
pub type OnBytes<'a> = &'a (dyn Fn(u64) + Sync);

async fn pump<R, W>(mut r: R, mut w: W, idle: Duration, count: &AtomicU64, on: OnBytes<'_>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match tokio::time::timeout(idle, r.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "data connection idle")),
        };
        if n == 0 {
            return match tokio::time::timeout(idle, w.shutdown()).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "data connection stalled at close")),
            };
        }
        match tokio::time::timeout(idle, w.write_all(&buf[..n])).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "data connection stalled")),
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        on(n as u64);
    }
}

/// Relays between `a` and `b` until one direction has delivered its end of file, an error, or
/// `idle` passes without progress.
pub async fn relay(a: TcpStream, b: TcpStream, idle: Duration, on_ab: OnBytes<'_>, on_ba: OnBytes<'_>) -> RelayOutcome {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let (ab, ba) = (AtomicU64::new(0), AtomicU64::new(0));
    let result = tokio::select! {
        r = pump(ar, bw, idle, &ab, on_ab) => r,
        r = pump(br, aw, idle, &ba, on_ba) => r,
    };
    RelayOutcome { a_to_b: ab.into_inner(), b_to_a: ba.into_inner(), result: result.map_err(|e| e.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (c, l.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn download_is_delivered_whole_while_the_reader_keeps_its_socket_open() {
        let (mut server, proxy_s) = pair().await;
        let (proxy_c, mut client) = pair().await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&sent).await.unwrap();
            server.shutdown().await.unwrap();
            server
        });
        let relay =
            tokio::spawn(async move { relay(proxy_s, proxy_c, Duration::from_secs(5), &|_| {}, &|_| {}).await });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let out = relay.await.unwrap();
        assert_eq!(out.result, Ok(()));
        assert_eq!(out.a_to_b, data.len() as u64);
        assert_eq!(out.b_to_a, 0);
        assert_eq!(got, data);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn idle_data_connection_times_out() {
        let (_server, proxy_s) = pair().await;
        let (proxy_c, _client) = pair().await;
        let out = relay(proxy_s, proxy_c, Duration::from_millis(50), &|_| {}, &|_| {}).await;
        assert!(out.result.unwrap_err().contains("idle"));
    }
}
