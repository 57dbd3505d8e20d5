//! The fake server's command loop: answers carried out in command order, PASV/EPSV listeners,
//! and the data side of RETR and STOR. Files are [`pattern`] bytes, so both ends check content
//! as well as length.

use super::server::{Answer, Item, Line, Log, Shared};
use super::{pattern, STEP};
use socket2::SockRef;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// Carries out the answers of one connection, in order.
pub(super) struct Exec {
    wr: OwnedWriteHalf,
    shared: Arc<Shared>,
    aborts: watch::Receiver<u64>,
    /// The listener of the last PASV/EPSV, taken by the next transfer.
    passive: Option<TcpListener>,
}

enum Flow {
    Go,
    Stop,
}

impl Exec {
    pub(super) fn new(wr: OwnedWriteHalf, shared: Arc<Shared>, aborts: watch::Receiver<u64>) -> Self {
        Exec { wr, shared, aborts, passive: None }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>) {
        if let Some(g) = self.shared.greeting.clone() {
            if self.say(&g).await.is_err() {
                return;
            }
        }
        while let Some(item) = rx.recv().await {
            match self.carry_out(item).await {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) | Err(_) => return,
            }
        }
    }

    async fn carry_out(&mut self, item: Item) -> io::Result<Flow> {
        let answers = match item.answer {
            Answer::Seq(answers) => answers,
            answer => vec![answer],
        };
        for answer in answers {
            if let Flow::Stop = self.answer(answer, &item.line, item.aborts).await? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }

    async fn answer(&mut self, mut answer: Answer, line: &Line, aborts: u64) -> io::Result<Flow> {
        while let Answer::After(latch, then) = answer {
            latch.wait().await;
            answer = *then;
        }
        match answer {
            Answer::After(..) => unreachable!("unwrapped above"),
            Answer::Seq(_) => panic!("the fake server's script nested an Answer::Seq"),
            Answer::Reply(text) => self.say(&text).await?,
            Answer::Raw(bytes) => self.wr.write_all(&bytes).await?,
            Answer::Never => std::future::pending::<()>().await,
            Answer::Close => return Ok(Flow::Stop),
            Answer::Retr { size, early_226 } => self.retr(size, early_226, aborts).await?,
            Answer::RetrReset { after } => self.retr_reset(after).await?,
            Answer::Default => match line.verb.as_str() {
                "NOOP" => self.say("200 NOOP ok").await?,
                "USER" => self.say("331 Password required").await?,
                "PASS" => self.say("230 Logged in").await?,
                "QUIT" => {
                    self.say("221 Goodbye").await?;
                    return Ok(Flow::Stop);
                }
                "ABOR" => self.say("226 Abort successful").await?,
                "PASV" | "EPSV" => self.passive(line.verb == "EPSV").await?,
                "RETR" => self.retr(line.arg.trim().parse().unwrap_or(1 << 20), false, aborts).await?,
                "STOR" => self.stor(aborts).await?,
                verb => self.say(&format!("200 {verb} ok")).await?,
            },
        }
        Ok(Flow::Go)
    }

    async fn say(&mut self, text: &str) -> io::Result<()> {
        let mut bytes = Vec::new();
        for l in text.split('\n') {
            bytes.extend_from_slice(l.trim_end_matches('\r').as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        self.wr.write_all(&bytes).await
    }

    async fn passive(&mut self, extended: bool) -> io::Result<()> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        self.passive = Some(l);
        if extended {
            self.say(&format!("229 Entering Extended Passive Mode (|||{port}|)")).await
        } else {
            self.say(&format!("227 Entering Passive Mode (127,0,0,1,{},{})", port >> 8, port & 0xff)).await
        }
    }

    /// The data connection of a transfer, after its 150; `None` once 425 has been answered.
    async fn data_connection(&mut self, what: &str) -> io::Result<Option<TcpStream>> {
        let Some(listener) = self.passive.take() else {
            self.say("425 Use PASV or EPSV first").await?;
            return Ok(None);
        };
        self.say(&format!("150 Opening BINARY mode data connection for {what}")).await?;
        match tokio::time::timeout(STEP, listener.accept()).await {
            Ok(Ok((s, _))) => Ok(Some(s)),
            _ => self.say("425 No data connection").await.map(|()| None),
        }
    }

    async fn retr(&mut self, size: u64, early_226: bool, aborts: u64) -> io::Result<()> {
        let Some(data) = self.data_connection(&format!("{size} bytes")).await? else { return Ok(()) };
        let (first_tx, first_rx) = oneshot::channel();
        let log = self.shared.log.clone();
        let mut writer = tokio::spawn(send_pattern(data, size, first_tx, log));
        if early_226 {
            // The writer goes on alone; the 226 overtakes the rest of the data.
            let _ = first_rx.await;
            return self.say("226 Transfer complete").await;
        }
        let mut abort = self.aborts.clone();
        tokio::select! {
            r = &mut writer => match r {
                Ok(Ok(n)) => self.say(&format!("226 Transfer complete ({n} bytes)")).await,
                _ => self.aborted("426 Connection closed; transfer aborted").await,
            },
            _ = aborted(&mut abort, aborts) => {
                writer.abort();
                self.aborted("426 Transfer aborted").await
            }
        }
    }

    async fn retr_reset(&mut self, after: u64) -> io::Result<()> {
        let Some(mut data) = self.data_connection(&format!("{after} bytes and a reset")).await? else { return Ok(()) };
        let bytes: Vec<u8> = (0..after).map(pattern).collect();
        // Whether the bytes went or not, this server does not look: it says 226 regardless.
        let _ = data.write_all(&bytes).await;
        // Linger 0: the close is a reset, not an end of file.
        SockRef::from(&data).set_linger(Some(Duration::ZERO))?;
        drop(data);
        self.say("226 Transfer complete").await
    }

    async fn stor(&mut self, aborts: u64) -> io::Result<()> {
        let Some(data) = self.data_connection("upload").await? else { return Ok(()) };
        let mut abort = self.aborts.clone();
        tokio::select! {
            r = receive_pattern(data) => match r {
                Ok(n) => {
                    self.shared.log.send_modify(|l| l.stored.push(n));
                    self.say(&format!("226 Transfer complete ({n} bytes)")).await
                }
                Err(e) => self.say(&format!("451 Upload failed: {e}")).await,
            },
            _ = aborted(&mut abort, aborts) => self.aborted("426 Transfer aborted").await,
        }
    }

    async fn aborted(&mut self, reply: &str) -> io::Result<()> {
        if self.shared.lone_226 {
            return Ok(());
        }
        self.say(reply).await
    }
}

/// Returns once an ABOR has come after the one numbered `seen`.
async fn aborted(aborts: &mut watch::Receiver<u64>, seen: u64) {
    let _ = aborts.wait_for(|n| *n != seen).await;
}

/// A whole number of pattern periods (251 bytes), so that chunks can follow each other as is.
fn chunk() -> &'static [u8] {
    static CHUNK: OnceLock<Vec<u8>> = OnceLock::new();
    CHUNK.get_or_init(|| (0..251 * 261).map(pattern).collect())
}

/// Writes `size` pattern bytes and closes. `first` fires once the first chunk is written; the
/// count is recorded in `retr_written` once every byte is written, before the connection is
/// shut down, so anyone who sees the data end also sees the record.
async fn send_pattern(
    mut data: TcpStream,
    size: u64,
    first: oneshot::Sender<()>,
    log: watch::Sender<Log>,
) -> io::Result<u64> {
    let chunk = chunk();
    let mut first = Some(first);
    let mut sent = 0u64;
    while sent < size {
        let n = usize::try_from(size - sent).unwrap_or(usize::MAX).min(chunk.len());
        data.write_all(&chunk[..n]).await?;
        sent += n as u64;
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
    }
    log.send_modify(|l| l.retr_written.push(sent));
    data.shutdown().await?;
    Ok(sent)
}

/// Reads to end of file, checking every byte against the pattern; bounded per read.
async fn receive_pattern(mut data: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = match tokio::time::timeout(STEP, data.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no upload data after {got} bytes"))),
        };
        if n == 0 {
            return Ok(got);
        }
        if let Some(i) = (0..n).find(|&i| buf[i] != pattern(got + i as u64)) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("byte {} is wrong", got + i as u64)));
        }
        got += n as u64;
    }
}
