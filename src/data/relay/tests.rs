use super::*;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Both ends of a loopback TCP connection.
pub(crate) async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    (c, l.accept().await.unwrap().0)
}

/// Every way bytes can move here: the buffer, splice without a fallback (so a silent
/// fallback cannot hide a broken splice path), and what `relay` uses.
pub(crate) fn modes() -> Vec<Mode> {
    let mut m = vec![Mode::Buffered];
    #[cfg(target_os = "linux")]
    m.push(Mode::Splice { open: super::super::splice::Pipe::open, fallback: false });
    m.push(Mode::auto());
    m
}

pub(crate) fn payload(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// Sends `len` bytes from one end through the relay to the other, that end keeping its
/// socket open: `from_b` sends from `b`'s peer to `a`'s peer. The relay is told that way, as a
/// data channel is once its command has gone to the server (an empty transfer would otherwise
/// wait for the receiver's end of file). Checks the bytes (SHA-256), both counts and that the
/// callbacks saw exactly the counted bytes.
async fn transfer(mode: Mode, len: usize, from_b: bool) {
    let (peer_a, proxy_a) = pair().await;
    let (proxy_b, peer_b) = pair().await;
    let (mut sender, mut receiver) = if from_b { (peer_b, peer_a) } else { (peer_a, peer_b) };
    let data = payload(len);
    let want = Sha256::digest(&data);
    let writer = tokio::spawn(async move {
        sender.write_all(&data).await.unwrap();
        sender.shutdown().await.unwrap();
        sender
    });
    let relay = tokio::spawn(async move {
        let (seen_ab, seen_ba) = (AtomicU64::new(0), AtomicU64::new(0));
        let on_ab = |n| {
            seen_ab.fetch_add(n, Ordering::Relaxed);
        };
        let on_ba = |n| {
            seen_ba.fetch_add(n, Ordering::Relaxed);
        };
        let told = watch::channel(Some(if from_b { Way::BToA } else { Way::AToB })).1;
        let out = relay_carrying(proxy_a, proxy_b, Duration::from_secs(10), [&on_ab, &on_ba], mode, told).await;
        (out, seen_ab.into_inner(), seen_ba.into_inner())
    });
    let mut got = Vec::with_capacity(len);
    receiver.read_to_end(&mut got).await.unwrap();
    let (out, seen_ab, seen_ba) = relay.await.unwrap();
    assert_eq!(out.result, Ok(()), "{mode:?}");
    assert_eq!(got.len(), len, "{mode:?}");
    assert_eq!(Sha256::digest(&got), want, "{mode:?}");
    let (moved, other) = if from_b { (out.b_to_a, out.a_to_b) } else { (out.a_to_b, out.b_to_a) };
    assert_eq!((moved, other), (len as u64, 0), "{mode:?}");
    assert_eq!((seen_ab, seen_ba), (out.a_to_b, out.b_to_a), "{mode:?}");
    // The sender's socket is still open: the relay ended on its end of file alone.
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn multi_mib_transfers_arrive_whole_and_counted_each_way() {
    for mode in modes() {
        transfer(mode, 12 << 20, false).await;
        transfer(mode, 9 << 20, true).await;
    }
}

#[tokio::test]
async fn small_and_empty_transfers() {
    for mode in modes() {
        for len in [0, 1, 1460, 65_537] {
            transfer(mode, len, false).await;
            transfer(mode, len, true).await;
        }
    }
}

#[tokio::test]
async fn download_is_delivered_whole_while_the_reader_keeps_its_socket_open() {
    for mode in modes() {
        let (mut server, proxy_s) = pair().await;
        let (proxy_c, mut client) = pair().await;
        let data = payload(3_000_000);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&sent).await.unwrap();
            server.shutdown().await.unwrap();
            server
        });
        let relay =
            tokio::spawn(
                async move { relay_with(proxy_s, proxy_c, Duration::from_secs(5), &|_| {}, &|_| {}, mode).await },
            );
        // The client reads to the end of file without closing or shutting down anything.
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let out = relay.await.unwrap();
        assert_eq!(out.result, Ok(()), "{mode:?}");
        assert_eq!((out.a_to_b, out.b_to_a), (data.len() as u64, 0), "{mode:?}");
        assert!(got == data, "{mode:?}");
        // The client can still write: only the relay's side toward it was half-closed.
        client.write_all(b"still open").await.unwrap();
        drop(writer.await.unwrap());
    }
}

#[tokio::test]
async fn idle_data_connection_times_out() {
    for mode in modes() {
        let (_server, proxy_s) = pair().await;
        let (proxy_c, _client) = pair().await;
        let out = relay_with(proxy_s, proxy_c, Duration::from_millis(50), &|_| {}, &|_| {}, mode).await;
        assert_eq!(out.result, Err("data connection idle".to_string()), "{mode:?}");
    }
}

#[tokio::test]
async fn idle_after_some_bytes_times_out_with_the_bytes_counted() {
    for mode in modes() {
        let (mut server, proxy_s) = pair().await;
        let (proxy_c, mut client) = pair().await;
        server.write_all(b"partial").await.unwrap();
        let relay = tokio::spawn(async move {
            relay_with(proxy_s, proxy_c, Duration::from_millis(100), &|_| {}, &|_| {}, mode).await
        });
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        let out = relay.await.unwrap();
        assert_eq!(out.result, Err("data connection idle".to_string()), "{mode:?}");
        assert_eq!((out.a_to_b, out.b_to_a), (7, 0), "{mode:?}");
        drop(server);
    }
}

#[tokio::test]
async fn a_destination_that_stops_reading_is_a_stall() {
    for mode in modes() {
        let (mut server, proxy_s) = pair().await;
        let (proxy_c, _client) = pair().await;
        // The server sends until every buffer on the way is full; the client never reads.
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 1 << 20];
            while server.write_all(&chunk).await.is_ok() {}
        });
        let out = relay_with(proxy_s, proxy_c, Duration::from_millis(200), &|_| {}, &|_| {}, mode).await;
        assert_eq!(out.result, Err("data connection stalled".to_string()), "{mode:?}");
        assert!(out.a_to_b > 0, "{mode:?}");
        writer.abort();
    }
}

#[tokio::test]
async fn a_transfer_longer_than_idle_is_not_cut_while_it_progresses() {
    for mode in modes() {
        let (mut server, proxy_s) = pair().await;
        let (proxy_c, mut client) = pair().await;
        // Paced writes for more than two idle periods; the way back carries nothing all along.
        let writer = tokio::spawn(async move {
            for _ in 0..12 {
                server.write_all(&[1u8; 1000]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            server.shutdown().await.unwrap();
            server
        });
        let relay = tokio::spawn(async move {
            relay_with(proxy_s, proxy_c, Duration::from_millis(250), &|_| {}, &|_| {}, mode).await
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let out = relay.await.unwrap();
        assert_eq!(out.result, Ok(()), "{mode:?}");
        assert_eq!((out.a_to_b, got.len()), (12_000, 12_000), "{mode:?}");
        drop(writer.await.unwrap());
    }
}

#[tokio::test]
async fn a_reset_source_is_an_error() {
    for mode in modes() {
        let (server, proxy_s) = pair().await;
        let (proxy_c, _client) = pair().await;
        // Linger 0: close sends a reset instead of an end of file.
        socket2::SockRef::from(&server).set_linger(Some(Duration::ZERO)).unwrap();
        drop(server);
        let out = relay_with(proxy_s, proxy_c, Duration::from_secs(5), &|_| {}, &|_| {}, mode).await;
        let err = out.result.unwrap_err();
        assert!(err.contains("reset"), "{mode:?}: {err}");
    }
}

/// Loopback throughput, buffered against splice with several pipe sizes:
/// `cargo test --release --lib loopback_throughput -- --ignored --nocapture`.
/// `FTPGATE_BENCH_MIB` sets the volume (default 2048).
#[cfg(target_os = "linux")]
#[test]
#[ignore]
fn loopback_throughput() {
    use super::super::splice::Pipe;
    use std::io::{Read, Write};
    let mib: usize = std::env::var("FTPGATE_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let modes: [(&str, Mode); 6] = [
        ("buffered 64 KiB", Mode::Buffered),
        ("splice, pipe 8 KiB", Mode::Splice { open: || Pipe::with_size(8 << 10), fallback: false }),
        ("splice, pipe 64 KiB", Mode::Splice { open: || Pipe::with_size(64 << 10), fallback: false }),
        ("splice, pipe 256 KiB", Mode::Splice { open: || Pipe::with_size(256 << 10), fallback: false }),
        ("splice, pipe 512 KiB", Mode::Splice { open: || Pipe::with_size(512 << 10), fallback: false }),
        ("splice, pipe 1 MiB", Mode::Splice { open: || Pipe::with_size(1 << 20), fallback: false }),
    ];
    for round in 0..4 {
        for (name, mode) in modes {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (src_l, dst_l) = (
                std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
                std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            );
            let (src_at, dst_at) = (src_l.local_addr().unwrap(), dst_l.local_addr().unwrap());
            // Source and sink are plain blocking threads; the relay has one runtime thread.
            let source = std::thread::spawn(move || {
                let (mut s, _) = src_l.accept().unwrap();
                let chunk = vec![0x5au8; 1 << 20];
                for _ in 0..mib {
                    s.write_all(&chunk).unwrap();
                }
            });
            let sink = std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(dst_at).unwrap();
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0u64;
                loop {
                    match s.read(&mut buf).unwrap() {
                        0 => return n,
                        k => n += k as u64,
                    }
                }
            });
            let cpu = || {
                let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
                let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
                t(u.user_time()) + t(u.system_time())
            };
            let (started, cpu0) = (std::time::Instant::now(), cpu());
            let out = rt.block_on(async move {
                let a = TcpStream::connect(src_at).await.unwrap();
                let (b, _) = TcpListener::from_std({
                    dst_l.set_nonblocking(true).unwrap();
                    dst_l
                })
                .unwrap()
                .accept()
                .await
                .unwrap();
                relay_with(a, b, Duration::from_secs(30), &|_| {}, &|_| {}, mode).await
            });
            let (secs, relay_cpu) = (started.elapsed().as_secs_f64(), cpu() - cpu0);
            source.join().unwrap();
            assert_eq!(sink.join().unwrap(), (mib as u64) << 20);
            assert_eq!(out.result, Ok(()));
            if round > 0 {
                println!(
                    "{name:>22}: {mib} MiB in {secs:.2} s = {:.0} MB/s, relay thread CPU {relay_cpu:.2} s",
                    (mib << 20) as f64 / secs / 1e6
                );
            }
        }
    }
}
