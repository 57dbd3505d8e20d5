//! The relay for data connections with TLS on either side. splice(2) cannot see inside TLS, so
//! the bytes go through a buffer per direction; everything else is the plain relay's: each way
//! runs to its source's end and passes the end on, the transfer's way decides when the relay
//! is done, one idle watchdog covers both ways, and a failure resets both connections.
//!
//! A TLS `close_notify` is the end of a way only once every byte before it has been read and
//! written on: the way's source returns its end only after the bytes in flight. A peer that
//! closes the TCP connection without `close_notify` ends its way the same (the control
//! connection's final reply says whether the transfer was whole, as servers do by default).

use super::pump::{Dir, Phase, Progress};
use super::{run_ways, Carrier, OnBytes, RelayOutcome};
use crate::tls::{Conn, DataTls, Upgrade};
use socket2::SockRef;
use std::io;
use std::time::Duration;
use tokio::io::{split, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const BUF: usize = 64 * 1024;
/// How long the closing of the way back may take once the transfer is done.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Switches each side that asked for TLS, within `limit`: the client's as the TLS server, the
/// server's as the TLS client (resuming the control connection's session).
pub(crate) async fn handshake(
    client: TcpStream,
    server: TcpStream,
    tls: &DataTls,
    limit: Duration,
) -> Result<(Conn, Conn), String> {
    let (mut c, mut s) = (Conn::Plain(client), Conn::Plain(server));
    let client_side = async {
        match &tls.client {
            Some(cfg) => c.upgrade(Upgrade::Accept(cfg.clone()), limit).await.map(Some),
            None => Ok(None),
        }
    };
    let server_side = async {
        match &tls.server {
            Some((cfg, name)) => s.upgrade(Upgrade::Connect(cfg.clone(), name.clone()), limit).await.map(Some),
            None => Ok(None),
        }
    };
    let (ci, si) = tokio::join!(client_side, server_side);
    let ci = ci.map_err(|e| {
        format!("TLS with the client's data connection failed: {e} ({})", crate::tls::failure_reason(&e))
    })?;
    let si = si.map_err(|e| {
        format!("TLS with the server's data connection failed: {e} ({})", crate::tls::failure_reason(&e))
    })?;
    for (side, i) in [("client", ci), ("server", si)] {
        if let Some(i) = i {
            tracing::debug!(side, tls_version = %i.version, cipher = %i.cipher, resumed = i.resumed, "data connection in TLS");
        }
    }
    Ok((c, s))
}

async fn buffered<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W, dir: &Dir<'_>) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        dir.phase(Phase::Reading);
        let n = match r.read(&mut buf).await {
            Ok(n) => n,
            // TCP closed without close_notify: the end of this way all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            dir.phase(Phase::Closing);
            return w.shutdown().await;
        }
        dir.received();
        dir.phase(Phase::Writing);
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        dir.delivered(n);
    }
}

/// Relays between the client's connection `a` and the server's `b` (either may be TLS).
pub(crate) async fn relay(
    a: Conn,
    b: Conn,
    idle: Duration,
    on: [OnBytes<'_>; 2],
    mut carrier: Carrier,
) -> RelayOutcome {
    let progress = Progress::new();
    let dirs = [Dir::new(&progress, 0, on[0]), Dir::new(&progress, 1, on[1])];
    let (mut ar, mut aw) = split(a);
    let (mut br, mut bw) = split(b);
    let (result, done) = {
        let ab = buffered(&mut ar, &mut bw, &dirs[0]);
        let ba = buffered(&mut br, &mut aw, &dirs[1]);
        run_ways(ab, ba, &dirs, &progress, idle, &mut carrier).await
    };
    if result.is_ok() {
        // The transfer's way is done; the other way ends with a close_notify too, so that a
        // TLS peer waiting for one (Python's unwrap() after an upload) sees a clean end.
        if !done[0] {
            let _ = tokio::time::timeout(CLOSE_WAIT, bw.shutdown()).await;
        }
        if !done[1] {
            let _ = tokio::time::timeout(CLOSE_WAIT, aw.shutdown()).await;
        }
    }
    let (a, b) = (ar.unsplit(aw), br.unsplit(bw));
    if result.is_err() {
        for tcp in [a.tcp(), b.tcp()].into_iter().flatten() {
            // Linger 0: a cut transfer ends in a reset, never in a clean close.
            let _ = SockRef::from(tcp).set_linger(Some(Duration::ZERO));
        }
    }
    RelayOutcome { a_to_b: dirs[0].total(), b_to_a: dirs[1].total(), result: result.map_err(|e| e.to_string()) }
}
