//! One data channel: wait for the expected peer on a listener, connect the other side, relay.

use super::relay::relay;
use super::sockets::connect;
use crate::addr::canonical_ip;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
pub struct DataTimeouts {
    pub accept: Duration,
    pub connect: Duration,
    pub idle: Duration,
}

/// A data channel ready to run: the listener is bound and advertised.
#[derive(Debug)]
pub enum DataPlan {
    /// The listener faces the client; its connection is relayed to the server's data port.
    Passive { listener: TcpListener, client_ip: IpAddr, server_data: SocketAddr, source: Option<IpAddr> },
    /// The listener faces the server; its connection is relayed to the port the client named.
    Active { listener: TcpListener, server_ip: IpAddr, client_data: SocketAddr, source: Option<IpAddr> },
}

impl DataPlan {
    pub fn mode(&self) -> &'static str {
        match self {
            DataPlan::Passive { .. } => "passive",
            DataPlan::Active { .. } => "active",
        }
    }
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
}

impl DataError {
    pub fn label(&self) -> &'static str {
        match self {
            DataError::AcceptTimeout { .. } => "accept_timeout",
            DataError::Accept(_) => "accept_error",
            DataError::Connect { .. } => "connect_error",
            DataError::Relay(_) => "relay_error",
        }
    }
}

#[derive(Debug)]
pub struct DataOutcome {
    pub mode: &'static str,
    pub to_client: u64,
    pub to_server: u64,
    pub duration: Duration,
    /// Connections from other addresses that were turned away (port stealing attempts).
    pub stolen_attempts: Vec<SocketAddr>,
    pub result: Result<(), DataError>,
}

/// Waits for a connection from `expected`, refusing any other peer, until `deadline`.
async fn accept_from(
    listener: &TcpListener,
    expected: IpAddr,
    wait: Duration,
    refused: &mut Vec<SocketAddr>,
) -> Result<TcpStream, DataError> {
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
            return Ok(stream);
        }
        tracing::warn!(%peer, %expected, reason = "port_stealing", "refused data connection from unexpected peer");
        crate::metrics::metrics().reject("port_stealing");
        // Bounded: a flood of strangers cannot grow this past what fits in one log line.
        if refused.len() < 16 {
            refused.push(peer);
        }
        drop(stream);
    }
}

/// Runs the channel to its end.
pub async fn run(plan: DataPlan, t: DataTimeouts) -> DataOutcome {
    let started = Instant::now();
    let mode = plan.mode();
    let mut refused = Vec::new();
    let m = crate::metrics::metrics();
    let (to_client_bytes, to_server_bytes) =
        (m.bytes.with_label_values(&["to_client"]), m.bytes.with_label_values(&["to_server"]));
    let to_client = move |n: u64| to_client_bytes.inc_by(n);
    let to_server = move |n: u64| to_server_bytes.inc_by(n);
    let outcome = |to_client, to_server, result, refused| DataOutcome {
        mode,
        to_client,
        to_server,
        duration: started.elapsed(),
        stolen_attempts: refused,
        result,
    };
    match plan {
        DataPlan::Passive { listener, client_ip, server_data, source } => {
            let client = match accept_from(&listener, client_ip, t.accept, &mut refused).await {
                Ok(s) => s,
                Err(e) => return outcome(0, 0, Err(e), refused),
            };
            drop(listener);
            let server = match connect(server_data, source, t.connect).await {
                Ok(s) => s,
                Err(err) => return outcome(0, 0, Err(DataError::Connect { to: server_data, err }), refused),
            };
            let r = relay(client, server, t.idle, &to_server, &to_client).await;
            outcome(r.b_to_a, r.a_to_b, r.result.map_err(DataError::Relay), refused)
        }
        DataPlan::Active { listener, server_ip, client_data, source } => {
            let server = match accept_from(&listener, server_ip, t.accept, &mut refused).await {
                Ok(s) => s,
                Err(e) => return outcome(0, 0, Err(e), refused),
            };
            drop(listener);
            let client = match connect(client_data, source, t.connect).await {
                Ok(s) => s,
                Err(err) => return outcome(0, 0, Err(DataError::Connect { to: client_data, err }), refused),
            };
            let r = relay(server, client, t.idle, &to_client, &to_server).await;
            outcome(r.a_to_b, r.b_to_a, r.result.map_err(DataError::Relay), refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn t() -> DataTimeouts {
        DataTimeouts { accept: Duration::from_secs(5), connect: Duration::from_secs(5), idle: Duration::from_secs(5) }
    }

    #[tokio::test]
    async fn passive_refuses_strangers_and_serves_the_client() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_data = server.local_addr().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let plan = DataPlan::Passive { listener, client_ip: "127.0.0.1".parse().unwrap(), server_data, source: None };
        let task = tokio::spawn(run(plan, t()));
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
        assert_eq!(out.stolen_attempts.len(), 1);
        assert_eq!(out.stolen_attempts[0].ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert!(out.result.is_ok());
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
        let out = run(plan, DataTimeouts { accept: Duration::from_millis(30), ..t() }).await;
        assert_eq!(out.result.unwrap_err().label(), "accept_timeout");
    }
}
