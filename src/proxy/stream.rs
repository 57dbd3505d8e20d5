//! What the control driver needs of a connection beyond reading and writing: TCP's urgent data
//! for the Telnet Synch. A stream that has none (TLS) keeps the defaults, and ABOR then goes in
//! band, which servers accept too.

use socket2::SockRef;
use std::io;
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
