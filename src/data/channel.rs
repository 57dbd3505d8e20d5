//! One data channel: wait for the expected peer on a listener, connect the other side, relay.

use super::relay::{relay, Carrier, Way};
use super::sockets::{connect, tag, Source};
use crate::addr::canonical_ip;
use crate::config::SocketTags;
use crate::labels::{DataMode, Direction, Reason};
use crate::metrics::Metrics;
use socket2::SockRef;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

#[derive(Debug, Clone, Copy)]
pub struct DataTimeouts {
    pub accept: Duration,
    pub connect: Duration,
    pub idle: Duration,
}

/// What every channel runs with besides its plan.
#[derive(Clone)]
pub struct ChannelContext {
    pub timeouts: DataTimeouts,
    pub tags: SocketTags,
    pub metrics: Arc<Metrics>,
    /// The channel's bytes so far, for whoever watches the transfer while it runs.
    pub bytes: Arc<ChannelBytes>,
    /// Which sides of the channel speak TLS, and how.
    pub tls: crate::tls::DataTls,
}

/// A channel's bytes each way as they are delivered: one relaxed atomic add per chunk, beside
/// the metrics' own, so that reading a running transfer costs the relay nothing more.
#[derive(Debug, Default)]
pub struct ChannelBytes {
    to_client: AtomicU64,
    to_server: AtomicU64,
}

impl ChannelBytes {
    pub fn to_client(&self) -> u64 {
        self.to_client.load(Ordering::Relaxed)
    }

    pub fn to_server(&self) -> u64 {
        self.to_server.load(Ordering::Relaxed)
    }

    pub fn add(&self, toward: Direction, n: u64) {
        let count = match toward {
            Direction::ToClient => &self.to_client,
            Direction::ToServer => &self.to_server,
        };
        count.fetch_add(n, Ordering::Relaxed);
    }
}

/// A data channel ready to run: its listeners are bound and advertised.
#[derive(Debug)]
pub enum DataPlan {
    /// The listener faces the client; its connection is relayed to the server's data port.
    /// `handed_over` fires when a site-to-site transfer of the same client takes the server's
    /// data port over, and the client will not come.
    Passive {
        listener: TcpListener,
        client_ip: IpAddr,
        server_data: SocketAddr,
        source: Option<Source>,
        handed_over: Option<oneshot::Receiver<()>>,
    },
    /// The listener faces the server; its connection is relayed to the port the client named.
    Active { listener: TcpListener, server_ip: IpAddr, client_data: SocketAddr, source: Option<Source> },
    /// Client in passive mode, server in active mode: both sides connect to ftpgate.
    Listeners { client: TcpListener, client_ip: IpAddr, server: TcpListener, server_ip: IpAddr },
    /// Client in active mode, server in passive mode: ftpgate connects to both.
    Connect {
        server_data: SocketAddr,
        server_source: Option<Source>,
        client_data: SocketAddr,
        client_source: Option<Source>,
    },
}

impl DataPlan {
    pub fn mode(&self) -> DataMode {
        match self {
            DataPlan::Passive { .. } => DataMode::Passive,
            DataPlan::Active { .. } => DataMode::Active,
            DataPlan::Listeners { .. } => DataMode::PassiveToActive,
            DataPlan::Connect { .. } => DataMode::ActiveToPassive,
        }
    }
}

/// The relay's first stream is the client's: the way a transfer toward `side` goes.
fn way(side: Direction) -> Way {
    match side {
        Direction::ToClient => Way::BToA,
        Direction::ToServer => Way::AToB,
    }
}

/// Tells a channel which way its transfer goes, before or while it runs.
#[derive(Debug)]
pub struct CarriesTx(watch::Sender<Option<Way>>);

impl CarriesTx {
    pub fn send(&self, c: Direction) {
        self.0.send_replace(Some(way(c)));
    }
}

/// The two ends: the sender stays with whoever learns the command, the carrier goes to [`run`].
pub fn carries() -> (CarriesTx, Carrier) {
    let (tx, rx) = watch::channel(None);
    (CarriesTx(tx), rx)
}

#[derive(Debug, Error)]
pub enum DataError {
    #[error("no data connection from {expected} within {after:?}")]
    AcceptTimeout { expected: IpAddr, after: Duration },
    #[error("accepting the data connection failed: {0}")]
    Accept(io::Error),
    #[error("connecting to {to} failed: {err}")]
    Connect { to: SocketAddr, err: io::Error },
    #[error("relay failed: {0}")]
    Relay(String),
    #[error("setting the socket mark or DSCP failed: {0}")]
    Tags(io::Error),
    #[error("watching the kernel pinhole failed: {0}")]
    Kernel(String),
    #[error("{0}")]
    Tls(String),
}

impl DataError {
    pub fn label(&self) -> &'static str {
        match self {
            DataError::AcceptTimeout { .. } => "accept_timeout",
            DataError::Accept(_) => "accept_error",
            DataError::Connect { .. } => "connect_error",
            DataError::Relay(_) => "relay_error",
            DataError::Tags(_) => "tags_error",
            DataError::Kernel(_) => "kernel_error",
            DataError::Tls(_) => "tls_error",
        }
    }
}

#[derive(Debug)]
pub struct DataOutcome {
    pub mode: DataMode,
    pub to_client: u64,
    pub to_server: u64,
    pub duration: Duration,
    /// Connections from other addresses that were turned away (port stealing attempts).
    pub stolen_attempts: Vec<SocketAddr>,
    /// The server's data port went to a site-to-site transfer instead of the client.
    pub handed_over: bool,
    /// False when the kernel carried the connection (kernel data path): the byte counts are
    /// then zero because ftpgate does not know them, and logs say "unknown".
    pub bytes_known: bool,
    /// Whether the client's and the server's data connection spoke TLS.
    pub tls: (bool, bool),
    pub result: Result<(), DataError>,
}

/// Waits for a connection from `expected`, refusing any other peer, for the accept timeout; the
/// listener is closed once the peer is there.
async fn accept_once(
    listener: TcpListener,
    expected: IpAddr,
    cx: &ChannelContext,
    refused: &mut Vec<SocketAddr>,
) -> Result<TcpStream, DataError> {
    let wait = cx.timeouts.accept;
    let deadline = Instant::now() + wait;
    let expected = canonical_ip(expected);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (stream, peer) = match tokio::time::timeout(left, listener.accept()).await {
            Err(_) => return Err(DataError::AcceptTimeout { expected, after: wait }),
            Ok(Err(e)) => return Err(DataError::Accept(e)),
            Ok(Ok(x)) => x,
        };
        if canonical_ip(peer.ip()) == expected {
            tag(SockRef::from(&stream), cx.tags, peer.is_ipv6()).map_err(DataError::Tags)?;
            return Ok(stream);
        }
        let reason = Reason::PortStealing;
        tracing::warn!(%peer, %expected, reason = reason.label(), "refused data connection from unexpected peer");
        cx.metrics.reject(reason);
        // Bounded: a flood of strangers cannot grow this past what fits in one log line.
        if refused.len() < 16 {
            refused.push(peer);
        }
        drop(stream);
    }
}

async fn connect_to(to: SocketAddr, src: Option<Source>, cx: &ChannelContext) -> Result<TcpStream, DataError> {
    connect(to, src, cx.timeouts.connect, cx.tags).await.map_err(|err| DataError::Connect { to, err })
}

/// Both ends of a channel: the client's connection and the server's. `Ok(None)`: handed over.
async fn establish(
    plan: DataPlan,
    cx: &ChannelContext,
    refused: &mut Vec<SocketAddr>,
) -> Result<Option<(TcpStream, TcpStream)>, DataError> {
    Ok(Some(match plan {
        DataPlan::Passive { listener, client_ip, server_data, source, handed_over } => {
            let client = match handed_over {
                Some(rx) => tokio::select! {
                    c = accept_once(listener, client_ip, cx, refused) => c?,
                    Ok(()) = rx => return Ok(None),
                },
                None => accept_once(listener, client_ip, cx, refused).await?,
            };
            (client, connect_to(server_data, source, cx).await?)
        }
        DataPlan::Active { listener, server_ip, client_data, source } => {
            let server = accept_once(listener, server_ip, cx, refused).await?;
            (connect_to(client_data, source, cx).await?, server)
        }
        DataPlan::Listeners { client, client_ip, server, server_ip } => {
            let mut theirs = Vec::new();
            let both = tokio::try_join!(
                accept_once(client, client_ip, cx, refused),
                accept_once(server, server_ip, cx, &mut theirs)
            );
            refused.extend(theirs.into_iter().take(16usize.saturating_sub(refused.len())));
            both?
        }
        DataPlan::Connect { server_data, server_source, client_data, client_source } => {
            tokio::try_join!(connect_to(client_data, client_source, cx), connect_to(server_data, server_source, cx))?
        }
    }))
}

/// Runs the channel to its end; `carrier` says which way the transfer goes once that is known.
pub async fn run(plan: DataPlan, cx: ChannelContext, carrier: Carrier) -> DataOutcome {
    let started = Instant::now();
    let mode = plan.mode();
    let mut refused = Vec::new();
    let outcome = |to_client, to_server, result, refused, handed_over| DataOutcome {
        mode,
        to_client,
        to_server,
        duration: started.elapsed(),
        stolen_attempts: refused,
        handed_over,
        bytes_known: true,
        tls: (cx.tls.client.is_some(), cx.tls.server.is_some()),
        result,
    };
    let (client, server) = match establish(plan, &cx, &mut refused).await {
        Ok(Some(pair)) => pair,
        Ok(None) => return outcome(0, 0, Ok(()), refused, true),
        Err(e) => return outcome(0, 0, Err(e), refused, false),
    };
    let (to_client_bytes, to_server_bytes) =
        (cx.metrics.bytes(Direction::ToClient), cx.metrics.bytes(Direction::ToServer));
    let live = cx.bytes.clone();
    let to_client = move |n: u64| {
        to_client_bytes.inc_by(n);
        live.add(Direction::ToClient, n);
    };
    let live = cx.bytes.clone();
    let to_server = move |n: u64| {
        to_server_bytes.inc_by(n);
        live.add(Direction::ToServer, n);
    };
    let r = if cx.tls.is_plain() {
        relay(client, server, cx.timeouts.idle, &to_server, &to_client, carrier).await
    } else {
        let (c, s) = match super::relay::tls::handshake(client, server, &cx.tls, cx.timeouts.connect).await {
            Ok(pair) => pair,
            Err(e) => return outcome(0, 0, Err(DataError::Tls(e)), refused, false),
        };
        super::relay::tls::relay(c, s, cx.timeouts.idle, [&to_server, &to_client], carrier).await
    };
    outcome(r.b_to_a, r.a_to_b, r.result.map_err(DataError::Relay), refused, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn cx() -> ChannelContext {
        let five = Duration::from_secs(5);
        ChannelContext {
            timeouts: DataTimeouts { accept: five, connect: five, idle: five },
            tags: SocketTags::default(),
            metrics: Arc::new(Metrics::new().unwrap()),
            bytes: Arc::default(),
            tls: crate::tls::DataTls::default(),
        }
    }

    #[tokio::test]
    async fn passive_refuses_strangers_and_serves_the_client() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_data = server.local_addr().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let plan = DataPlan::Passive {
            listener,
            client_ip: "127.0.0.1".parse().unwrap(),
            server_data,
            source: None,
            handed_over: None,
        };
        let cx = cx();
        let (metrics, live) = (cx.metrics.clone(), cx.bytes.clone());
        let task = tokio::spawn(run(plan, cx, carries().1));
        // A stranger from another loopback address comes first.
        let stranger = tokio::net::TcpSocket::new_v4().unwrap();
        stranger.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stranger = stranger.connect(at).await.unwrap();
        let mut b = [0u8; 1];
        assert_eq!(stranger.read(&mut b).await.unwrap_or(0), 0, "stranger must be closed");
        let mut client = TcpStream::connect(at).await.unwrap();
        let (mut srv, _) = server.accept().await.unwrap();
        srv.write_all(b"payload").await.unwrap();
        srv.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let out = task.await.unwrap();
        assert_eq!(got, b"payload");
        assert_eq!((out.to_client, out.to_server), (7, 0));
        assert_eq!((live.to_client(), live.to_server()), (7, 0), "the live count agrees with the outcome");
        assert_eq!(out.stolen_attempts.len(), 1);
        assert_eq!(out.stolen_attempts[0].ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert!(out.result.is_ok());
        // Its own registry: other tests running alongside cannot move these figures.
        let text = String::from_utf8(metrics.render()).unwrap();
        for series in
            ["ftpgate_rejections_total{reason=\"port_stealing\"} 1", "ftpgate_bytes_total{direction=\"to_client\"} 7"]
        {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }

    #[tokio::test]
    async fn nobody_connecting_ends_with_accept_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plan = DataPlan::Active {
            listener,
            server_ip: "127.0.0.1".parse().unwrap(),
            client_data: "127.0.0.1:9".parse().unwrap(),
            source: None,
        };
        let mut cx = cx();
        cx.timeouts.accept = Duration::from_millis(30);
        let out = run(plan, cx, carries().1).await;
        assert_eq!(out.result.unwrap_err().label(), "accept_timeout");
    }

    async fn upload_through(
        plan: DataPlan,
        client_side: impl std::future::Future<Output = TcpStream>,
        server: impl std::future::Future<Output = TcpStream>,
    ) -> DataOutcome {
        let task = tokio::spawn(run(plan, cx(), carries().1));
        let (mut c, mut s) = tokio::join!(client_side, server);
        c.write_all(b"upload").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"upload");
        task.await.unwrap()
    }

    #[tokio::test]
    async fn converted_modes_relay_both_ways_of_connecting() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        // Client passive, server active: both dial ftpgate.
        let (cl, sl) =
            (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
        let (ca, sa) = (cl.local_addr().unwrap(), sl.local_addr().unwrap());
        let plan = DataPlan::Listeners { client: cl, client_ip: lo, server: sl, server_ip: lo };
        let out = upload_through(plan, async { TcpStream::connect(ca).await.unwrap() }, async {
            TcpStream::connect(sa).await.unwrap()
        })
        .await;
        assert_eq!((out.mode, out.to_server, out.to_client), (DataMode::PassiveToActive, 6, 0));
        assert!(out.result.is_ok());
        // Client active, server passive: ftpgate dials both.
        let (cl, sl) =
            (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
        let plan = DataPlan::Connect {
            server_data: sl.local_addr().unwrap(),
            server_source: None,
            client_data: cl.local_addr().unwrap(),
            client_source: None,
        };
        let out =
            upload_through(plan, async { cl.accept().await.unwrap().0 }, async { sl.accept().await.unwrap().0 }).await;
        assert_eq!((out.mode, out.to_server, out.to_client), (DataMode::ActiveToPassive, 6, 0));
    }

    #[tokio::test]
    async fn a_passive_channel_handed_over_ends_without_its_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = oneshot::channel();
        let plan = DataPlan::Passive {
            listener,
            client_ip: "127.0.0.1".parse().unwrap(),
            server_data: "127.0.0.1:9".parse().unwrap(),
            source: None,
            handed_over: Some(rx),
        };
        let task = tokio::spawn(run(plan, cx(), carries().1));
        tx.send(()).unwrap();
        let out = task.await.unwrap();
        assert!(out.handed_over && out.result.is_ok());
    }
}
