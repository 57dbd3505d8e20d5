//! What the control driver needs of a connection beyond reading and writing: TCP's urgent data
//! for the Telnet Synch. A stream that has none (TLS) keeps the defaults, and ABOR then goes in
//! band, which servers accept too.

use crate::tls::{Conn, TlsInfo, Upgrade};
use socket2::SockRef;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub trait ControlStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Sends one byte as urgent data.
    fn send_urgent(&self, byte: u8) -> io::Result<()> {
        let _ = byte;
        Err(io::Error::new(io::ErrorKind::Unsupported, "no urgent data on this stream"))
    }

    /// After a read that may have stopped at the urgent mark, the bytes just past it.
    fn read_past_urgent_mark(&self, buf: &mut [u8]) -> Option<usize> {
        let _ = buf;
        None
    }

    /// Switches the connection to TLS in place, within `limit`.
    fn start_tls(
        &mut self,
        how: Upgrade,
        limit: Duration,
    ) -> Pin<Box<dyn Future<Output = io::Result<TlsInfo>> + Send + '_>> {
        let _ = (how, limit);
        Box::pin(async { Err(io::Error::new(io::ErrorKind::Unsupported, "this stream cannot switch to TLS")) })
    }
}

/// Urgent data exists only in clear text: inside TLS, ABOR goes in band.
impl ControlStream for Conn {
    fn send_urgent(&self, byte: u8) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.send_urgent(byte),
            _ => Err(io::Error::new(io::ErrorKind::Unsupported, "no urgent data inside TLS")),
        }
    }

    fn read_past_urgent_mark(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            Conn::Plain(s) => s.read_past_urgent_mark(buf),
            _ => None,
        }
    }

    fn start_tls(
        &mut self,
        how: Upgrade,
        limit: Duration,
    ) -> Pin<Box<dyn Future<Output = io::Result<TlsInfo>> + Send + '_>> {
        Box::pin(self.upgrade(how, limit))
    }
}

impl ControlStream for TcpStream {
    fn send_urgent(&self, byte: u8) -> io::Result<()> {
        SockRef::from(self).send_out_of_band(&[byte]).map(drop)
    }

    /// A read stops at the urgent mark (`ABOR` sent as urgent data, as Python's ftplib does),
    /// and tokio takes the short read to mean the socket is drained, so the byte after the mark
    /// would never be signalled. One direct non-blocking read fetches it.
    fn read_past_urgent_mark(&self, buf: &mut [u8]) -> Option<usize> {
        use std::io::Read;
        let sock = SockRef::from(self);
        match (&*sock).read(buf) {
            Ok(n) if n > 0 => Some(n),
            _ => None,
        }
    }
}
