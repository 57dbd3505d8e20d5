//! A scripted FTP client: raw bytes out, whole replies in, every read bounded by
//! [`super::STEP`].

use super::{pattern, within};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One complete reply, single or multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Every line without its CR LF.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line, after the code.
    pub fn text(&self) -> &str {
        self.lines.last().map_or("", |l| l.get(4..).unwrap_or(""))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines.join(" / "))
    }
}

/// Takes the first complete reply out of `buf`.
fn parse_reply(buf: &mut Vec<u8>) -> Option<Reply> {
    let mut lines: Vec<String> = Vec::new();
    let mut pos = 0;
    loop {
        let end = pos + buf[pos..].iter().position(|&b| b == b'\n')?;
        lines.push(String::from_utf8_lossy(&buf[pos..end]).trim_end_matches('\r').to_owned());
        pos = end + 1;
        let first = &lines[0];
        let code = match first.get(..3).map(str::parse::<u16>) {
            Some(Ok(c)) if (100..600).contains(&c) => c,
            _ => panic!("the gateway sent a line that does not start a reply: {first:?}"),
        };
        let last = &lines[lines.len() - 1];
        let done = first.as_bytes().get(3) != Some(&b'-')
            || (lines.len() > 1 && last.starts_with(&code.to_string()) && last.as_bytes().get(3) != Some(&b'-'));
        if done {
            buf.drain(..pos);
            return Some(Reply { code, lines });
        }
    }
}

pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    gateway: SocketAddr,
}

impl Client {
    /// Connects to the gateway; reads nothing yet.
    pub async fn connect(gateway: SocketAddr) -> Client {
        let stream = within("the connection to the gateway", TcpStream::connect(gateway))
            .await
            .expect("the gateway accepts connections");
        let _ = stream.set_nodelay(true);
        Client { stream, buf: Vec::new(), gateway }
    }

    /// Connects and reads the 220 greeting.
    pub async fn greeted(gateway: SocketAddr) -> Client {
        let mut c = Self::connect(gateway).await;
        c.expect(220).await;
        c
    }

    /// A client on a connection taken back from [`Client::into_stream`].
    pub fn from_stream(stream: TcpStream, gateway: SocketAddr) -> Client {
        Client { stream, buf: Vec::new(), gateway }
    }

    /// The connection itself, for a test that reads or writes bytes that are not replies;
    /// whatever the client had read past the last whole reply is lost.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Sends these bytes in one write, as they are.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        within("a write to the gateway", self.stream.write_all(bytes.as_ref()))
            .await
            .expect("the gateway takes commands");
    }

    /// Reads the next reply; `None` when the gateway closed the connection (after any whole
    /// replies). A connection reset counts as closed.
    pub async fn next_reply(&mut self) -> Option<Reply> {
        let mut chunk = [0u8; 4096];
        within("a reply from the gateway", async {
            loop {
                if let Some(r) = parse_reply(&mut self.buf) {
                    return Some(r);
                }
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) if self.buf.is_empty() => return None,
                    Ok(0) | Err(_) => {
                        panic!("the gateway closed in the middle of a reply: {:?}", String::from_utf8_lossy(&self.buf))
                    }
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    /// Reads the next reply; the connection must still be open.
    pub async fn reply(&mut self) -> Reply {
        match self.next_reply().await {
            Some(r) => r,
            None => panic!("the gateway closed the connection where a reply was due"),
        }
    }

    /// Reads the next reply and checks its code.
    pub async fn expect(&mut self, code: u16) -> Reply {
        let r = self.reply().await;
        assert_eq!(r.code, code, "expected a {code} reply, got {r}");
        r
    }

    /// Sends one command line (CR LF added) and reads one reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Sends one command line, checks the reply's code, returns the reply's text.
    pub async fn expect_cmd(&mut self, line: &str, code: u16) -> String {
        let r = self.cmd(line).await;
        assert_eq!(r.code, code, "{line}: expected {code}, got {r}");
        r.text().to_owned()
    }

    /// The gateway must close the connection now, with no further reply.
    pub async fn expect_closed(&mut self) {
        if let Some(r) = self.next_reply().await {
            panic!("expected the connection to close, got {r}");
        }
    }

    /// Reads the next reply while reading the data connection `sink` as it delivers: a reply
    /// that waits for the data to drain must not wait for this client.
    pub async fn reply_while_reading(&mut self, sink: &mut Sink) -> Reply {
        let mut chunk = [0u8; 4096];
        within("a reply from the gateway during a transfer", async {
            loop {
                if let Some(r) = parse_reply(&mut self.buf) {
                    return r;
                }
                // Control first: a reply is seen as soon as it is there, however much data is.
                tokio::select! {
                    biased;
                    r = self.stream.read(&mut chunk) => match r {
                        Ok(0) | Err(_) => panic!("the gateway closed the connection where a reply was due"),
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    },
                    () = sink.read_some(), if !sink.eof => {}
                }
            }
        })
        .await
    }

    /// PASV: the address the 227 names.
    pub async fn pasv(&mut self) -> SocketAddr {
        let r = self.cmd("PASV").await;
        assert_eq!(r.code, 227, "PASV: {r}");
        let inner = r.text().split(['(', ')']).nth(1).unwrap_or_else(|| panic!("227 without (h,p): {r}"));
        let n: Vec<u8> = inner.split(',').map(|x| x.trim().parse().expect("227 numbers")).collect();
        assert_eq!(n.len(), 6, "227 names six numbers: {r}");
        let ip = Ipv4Addr::new(n[0], n[1], n[2], n[3]);
        SocketAddr::new(IpAddr::V4(ip), u16::from(n[4]) << 8 | u16::from(n[5]))
    }

    /// EPSV: the gateway's address with the port the 229 names.
    pub async fn epsv(&mut self) -> SocketAddr {
        let r = self.cmd("EPSV").await;
        assert_eq!(r.code, 229, "EPSV: {r}");
        let inner = r.text().split(['(', ')']).nth(1).unwrap_or_else(|| panic!("229 without (|||port|): {r}"));
        let port = inner.trim_matches('|').parse().unwrap_or_else(|_| panic!("229 port: {r}"));
        SocketAddr::new(self.gateway.ip(), port)
    }
}

/// Opens a data connection to the address a 227/229 named.
pub async fn connect_data(to: SocketAddr) -> TcpStream {
    within("the data connection", TcpStream::connect(to)).await.expect("the gateway accepts the data connection")
}

/// The reading end of a download, checking every byte against the pattern.
pub struct Sink {
    stream: TcpStream,
    buf: Vec<u8>,
    pub got: u64,
    pub eof: bool,
}

impl Sink {
    pub fn new(stream: TcpStream) -> Self {
        Sink { stream, buf: vec![0; 64 * 1024], got: 0, eof: false }
    }

    /// One read (not bounded: callers bound it). A reset is end of file with what came.
    async fn read_some(&mut self) {
        let n = self.stream.read(&mut self.buf).await.unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return;
        }
        if let Some(i) = (0..n).find(|&i| self.buf[i] != pattern(self.got + i as u64)) {
            panic!("download byte {} is wrong", self.got + i as u64);
        }
        self.got += n as u64;
    }

    /// Reads until at least `n` bytes have come (or end of file), each read bounded.
    pub async fn until(&mut self, n: u64) -> u64 {
        while !self.eof && self.got < n {
            within("download data", self.read_some()).await;
        }
        self.got
    }

    /// Reads to end of file, each read bounded; returns the byte count.
    pub async fn read_to_end(&mut self) -> u64 {
        while !self.eof {
            within("download data", self.read_some()).await;
        }
        self.got
    }
}

/// Downloads to end of file, checking content; returns the byte count.
pub async fn read_data(stream: TcpStream) -> u64 {
    Sink::new(stream).read_to_end().await
}

/// Uploads `size` pattern bytes and closes the sending half.
pub async fn write_data(mut stream: TcpStream, size: u64) {
    let chunk: Vec<u8> = (0..251 * 261).map(pattern).collect();
    let mut sent = 0u64;
    while sent < size {
        let n = usize::try_from(size - sent).unwrap_or(usize::MAX).min(chunk.len());
        within("upload data to be taken", stream.write_all(&chunk[..n])).await.expect("upload write");
        sent += n as u64;
    }
    within("the upload to close", stream.shutdown()).await.expect("upload shutdown");
}
