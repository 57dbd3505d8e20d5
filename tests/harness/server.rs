//! A scriptable fake FTP server on 127.0.0.1:0.
//!
//! Per connection it sends its greeting, then reads command lines and, for each, asks the
//! script for an [`Answer`]. Lines are read and recorded as they arrive, whether or not earlier
//! answers are out; answers go out strictly in command order, each when it is ready (an answer
//! held behind a [`Latch`] holds those after it, as a real server's single command loop would).

use super::server_exec::Exec;
use super::{Latch, STEP};
use socket2::SockRef;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// One command line as the server received it, Telnet commands removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Which control connection, counted from 0 in accept order.
    pub conn: usize,
    /// The line without its CR LF.
    pub text: String,
    /// The verb in upper case.
    pub verb: String,
    pub arg: String,
}

/// What the server does about one command.
#[derive(Debug)]
pub enum Answer {
    /// The built-in behaviour: NOOP 200, USER 331, PASS 230, QUIT 221 and close, PASV/EPSV open
    /// a listener and answer 227/229, `RETR n` sends n bytes (1 MiB when n is not a number),
    /// STOR reads to EOF and answers 226 with the count, ABOR 226; anything else `200 VERB ok`.
    Default,
    /// These reply lines (`\n` between lines of a multi-line reply; CR LF is added).
    Reply(String),
    /// These bytes exactly.
    Raw(Vec<u8>),
    /// The inner answer once the latch is released.
    After(Latch, Box<Answer>),
    /// Nothing, ever (nor to any later command of this connection).
    Never,
    /// Close the control connection without a word.
    Close,
    /// RETR of `size` bytes; with `early_226` the 226 goes out right after the first chunk of
    /// data, while the rest is still being written.
    Retr { size: u64, early_226: bool },
    /// These answers one after the other (a reply, then lines nobody asked for, say); not
    /// inside another `Seq` or an `After`.
    Seq(Vec<Answer>),
    /// RETR that sends `after` bytes, then resets the data connection and answers 226 all the
    /// same, as a server that does not notice a cut on the way would.
    RetrReset { after: u64 },
}

impl Answer {
    pub fn reply(text: impl Into<String>) -> Self {
        Answer::Reply(text.into())
    }

    pub fn after(latch: &Latch, then: Answer) -> Self {
        Answer::After(latch.clone(), Box::new(then))
    }
}

/// Everything the server saw and did, for assertions.
#[derive(Debug, Clone, Default)]
pub struct Log {
    pub lines: Vec<Line>,
    /// Telnet IP (interrupt process) sequences received.
    pub interrupts: usize,
    pub connections: usize,
    /// RETR: byte counts of transfers whose every byte was written (recorded before the data
    /// connection is closed, so before the gateway can see its end).
    pub retr_written: Vec<u64>,
    /// STOR: byte counts received up to EOF.
    pub stored: Vec<u64>,
}

impl Log {
    /// The lines of connection `conn`.
    pub fn texts(&self, conn: usize) -> Vec<&str> {
        self.lines.iter().filter(|l| l.conn == conn).map(|l| l.text.as_str()).collect()
    }

    pub fn count(&self, verb: &str) -> usize {
        self.lines.iter().filter(|l| l.verb == verb).count()
    }
}

type Script = Box<dyn FnMut(&Line) -> Answer + Send>;

pub(super) struct Shared {
    pub(super) greeting: Option<String>,
    pub(super) lone_226: bool,
    script: Mutex<Script>,
    pub(super) log: watch::Sender<Log>,
}

pub struct Builder {
    greeting: Option<String>,
    lone_226: bool,
    script: Script,
}

impl Builder {
    /// A server that never sends its greeting.
    pub fn silent(mut self) -> Self {
        self.greeting = None;
        self
    }

    /// An aborted transfer gets no 426: ABOR is answered with a lone 226.
    pub fn lone_226_on_abort(mut self) -> Self {
        self.lone_226 = true;
        self
    }

    pub fn script(mut self, script: impl FnMut(&Line) -> Answer + Send + 'static) -> Self {
        self.script = Box::new(script);
        self
    }

    pub async fn start(self) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("fake server binds");
        let addr = listener.local_addr().expect("fake server address");
        let shared = Arc::new(Shared {
            greeting: self.greeting,
            lone_226: self.lone_226,
            script: Mutex::new(self.script),
            log: watch::channel(Log::default()).0,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        FakeServer { addr, shared, task }
    }
}

pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        // Its connections live in the accept task's JoinSet and go with it.
        self.task.abort();
    }
}

impl FakeServer {
    pub fn builder() -> Builder {
        Builder {
            greeting: Some("220 fake FTP server ready".into()),
            lone_226: false,
            script: Box::new(|_| Answer::Default),
        }
    }

    /// A server with the built-in behaviour for every command.
    pub async fn start() -> FakeServer {
        Self::builder().start().await
    }

    pub fn log(&self) -> Log {
        self.shared.log.borrow().clone()
    }

    /// Waits (bounded) until the log satisfies `pred`; panics with what was seen otherwise.
    pub async fn wait_until(&self, what: &str, mut pred: impl FnMut(&Log) -> bool) -> Log {
        let mut rx = self.shared.log.subscribe();
        let seen = async { rx.wait_for(|l| pred(l)).await.map(|l| l.clone()) };
        match tokio::time::timeout(STEP, seen).await {
            Ok(Ok(log)) => log,
            _ => panic!("the fake server never saw {what} within {STEP:?}; it saw {:#?}", self.log()),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        // An accept error (out of descriptors) ends the server rather than spinning.
        let Ok((stream, _)) = listener.accept().await else { return };
        let mut id = 0;
        shared.log.send_modify(|l| {
            id = l.connections;
            l.connections += 1;
        });
        while conns.try_join_next().is_some() {}
        conns.spawn(serve(stream, id, shared.clone()));
    }
}

pub(super) struct Item {
    pub(super) line: Line,
    pub(super) answer: Answer,
    /// The ABOR count when the line was read: a transfer is aborted by any ABOR after it.
    pub(super) aborts: u64,
}

async fn serve(stream: TcpStream, conn: usize, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    // The Synch's data mark arrives as urgent data: keep it in the stream, as servers do.
    let _ = SockRef::from(&stream).set_out_of_band_inline(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let (aborts_tx, aborts) = watch::channel(0u64);
    let reader = read_commands(rd, conn, &shared, tx, aborts_tx);
    let exec = Exec::new(wr, shared.clone(), aborts).run(rx);
    tokio::pin!(reader, exec);
    let mut reading = true;
    loop {
        tokio::select! {
            _ = &mut reader, if reading => reading = false,
            _ = &mut exec => return,
        }
    }
}

async fn read_commands(
    mut rd: OwnedReadHalf,
    conn: usize,
    shared: &Shared,
    tx: mpsc::UnboundedSender<Item>,
    aborts: watch::Sender<u64>,
) {
    let mut telnet = Telnet::default();
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        telnet.feed(&chunk[..n], &mut pending);
        // A read stops at the urgent mark and tokio then waits for a new edge: fetch the rest.
        while let Some(n) = read_now(&rd, &mut chunk) {
            telnet.feed(&chunk[..n], &mut pending);
        }
        let interrupts = std::mem::take(&mut telnet.interrupts);
        shared.log.send_modify(|l| l.interrupts += interrupts);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_owned();
            let (verb, arg) = text.split_once(' ').unwrap_or((&text, ""));
            let line = Line { conn, verb: verb.to_ascii_uppercase(), arg: arg.to_owned(), text: text.clone() };
            if line.verb == "ABOR" {
                aborts.send_modify(|n| *n += 1);
            }
            shared.log.send_modify(|l| l.lines.push(line.clone()));
            let answer = (shared.script.lock().unwrap_or_else(|e| e.into_inner()))(&line);
            let aborts = *aborts.borrow();
            if tx.send(Item { line, answer, aborts }).is_err() {
                return;
            }
        }
    }
}

fn read_now(rd: &OwnedReadHalf, buf: &mut [u8]) -> Option<usize> {
    use std::io::Read;
    let stream: &TcpStream = rd.as_ref();
    let sock = SockRef::from(stream);
    match (&*sock).read(buf) {
        Ok(n) if n > 0 => Some(n),
        _ => None,
    }
}

/// Removes Telnet commands (RFC 854) from the stream; `IAC IAC` is a data byte.
#[derive(Default)]
struct Telnet {
    state: u8,
    interrupts: usize,
}

impl Telnet {
    const IAC: u8 = 255;
    const IP: u8 = 244;

    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.state = match (self.state, b) {
                (0, Self::IAC) => 1,
                (0, _) => {
                    out.push(b);
                    0
                }
                (1, Self::IAC) => {
                    out.push(b);
                    0
                }
                (1, 251..=254) => 2, // WILL, WONT, DO, DONT: one option byte follows
                (1, cmd) => {
                    self.interrupts += usize::from(cmd == Self::IP);
                    0
                }
                _ => 0,
            };
        }
    }
}
