//! A connection that starts in clear text and may be switched to TLS in place, on either
//! role: the gateway is the TLS server toward clients and the TLS client toward servers.

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// How a connection is switched to TLS.
#[derive(Clone)]
pub enum Upgrade {
    /// The gateway is the TLS server (toward a client).
    Accept(Arc<ServerConfig>),
    /// The gateway is the TLS client (toward a server), verifying this name.
    Connect(Arc<ClientConfig>, ServerName<'static>),
}

/// What a handshake agreed, for the log.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub resumed: bool,
}

pub enum Conn {
    Plain(TcpStream),
    /// Toward a client.
    Accepted(Box<server::TlsStream<TcpStream>>),
    /// Toward a server.
    Connected(Box<client::TlsStream<TcpStream>>),
    /// A handshake failed: nothing more goes over this connection.
    Broken,
}

fn info(conn: &rustls::CommonState, resumed: bool) -> TlsInfo {
    let version = conn.protocol_version().and_then(|v| v.as_str()).unwrap_or("-").to_owned();
    let cipher = conn.negotiated_cipher_suite().and_then(|c| c.suite().as_str()).unwrap_or("-").to_owned();
    TlsInfo { version, cipher, resumed }
}

impl Conn {
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Accepted(s) => Some(s.get_ref().0),
            Conn::Connected(s) => Some(s.get_ref().0),
            Conn::Broken => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Accepted(_) | Conn::Connected(_))
    }

    /// Switches a clear-text connection to TLS within `limit`. Nothing read from the socket
    /// before is kept (the caller discarded it); a failure leaves the connection unusable.
    pub async fn upgrade(&mut self, how: Upgrade, limit: Duration) -> io::Result<TlsInfo> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Broken) else {
            return Err(io::Error::other("connection is not in clear text"));
        };
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
        match how {
            Upgrade::Accept(cfg) => {
                let s = tokio::time::timeout(limit, TlsAcceptor::from(cfg).accept(tcp))
                    .await
                    .map_err(|_| timed_out())??;
                let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let i = info(s.get_ref().1, resumed);
                *self = Conn::Accepted(Box::new(s));
                Ok(i)
            }
            Upgrade::Connect(cfg, name) => {
                let s = tokio::time::timeout(limit, TlsConnector::from(cfg).connect(name, tcp))
                    .await
                    .map_err(|_| timed_out())??;
                let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let i = info(s.get_ref().1, resumed);
                *self = Conn::Connected(Box::new(s));
                Ok(i)
            }
        }
    }
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection unusable after a failed TLS handshake")
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Accepted(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Connected(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Broken => Poll::Ready(Err(broken())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Accepted(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Connected(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Broken => Poll::Ready(Err(broken())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Accepted(s) => Pin::new(s).poll_flush(cx),
            Conn::Connected(s) => Pin::new(s).poll_flush(cx),
            Conn::Broken => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Accepted(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Connected(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Broken => Poll::Ready(Ok(())),
        }
    }
}
