//! `--loadgen noop`: the control round trips of figure 4, measured on blocking sockets rather
//! than in the tokio runtime of the other modes, so that nothing but the system calls sits
//! between the clock and the socket.

use super::loadgen::{Opts, MAX_LINE};
use super::report::{reply_code, reply_ends};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One logged-in session for NOOP round trips, on blocking sockets: nothing between the clock
/// and the socket but the system calls.
struct NoopSession {
    s: std::net::TcpStream,
    r: std::io::BufReader<std::net::TcpStream>,
    line: String,
}

impl NoopSession {
    fn login(target: SocketAddr) -> Result<NoopSession, String> {
        let s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(10))
            .map_err(|e| format!("connect {target}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let r = std::io::BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut n = NoopSession { s, r, line: String::new() };
        if n.reply()? != 220 {
            return Err("no 220 banner".into());
        }
        match n.cmd("USER anonymous")? {
            230 => {}
            331 if n.cmd("PASS bench@example.com")? == 230 => {}
            c => return Err(format!("login refused ({c})")),
        }
        Ok(n)
    }

    fn read_line(&mut self) -> Result<(), String> {
        self.line.clear();
        match self.r.read_line(&mut self.line) {
            Ok(0) => Err("connection closed".into()),
            Ok(n) if n > MAX_LINE => Err("overlong reply line".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    fn reply(&mut self) -> Result<u16, String> {
        self.read_line()?;
        let (code, multi) = reply_code(&self.line).ok_or_else(|| format!("not a reply: {:?}", self.line))?;
        if multi {
            for _ in 0..1000 {
                self.read_line()?;
                if reply_ends(code, true, &self.line) {
                    return Ok(code);
                }
            }
            return Err("endless reply".into());
        }
        Ok(code)
    }

    fn cmd(&mut self, cmd: &str) -> Result<u16, String> {
        self.s.write_all(format!("{cmd}\r\n").as_bytes()).map_err(|e| format!("send {cmd}: {e}"))?;
        self.reply()
    }

    /// `n` NOOPs in a row; each round trip in nanoseconds.
    fn block(&mut self, n: usize) -> Result<Vec<u64>, String> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let code = self.cmd("NOOP")?;
            v.push(t.elapsed().as_nanos() as u64);
            if code != 200 {
                return Err(format!("NOOP: reply {code}"));
            }
        }
        Ok(v)
    }
}

/// `--loadgen noop --target ADDR:PORT`: logs in, prints `READY`, then for every number N read
/// from stdin runs N NOOPs and prints `SAMPLES` with each round trip in ns. Ends at stdin's end
/// (or after two idle minutes).
pub fn noop(o: &Opts) -> ExitCode {
    let target: SocketAddr = o.req("--target");
    let mut session = match NoopSession::login(target) {
        Ok(s) => s,
        Err(e) => {
            println!("ERROR {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("READY");
    let _ = std::io::stdout().flush();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        let n: usize = line.trim().parse().unwrap_or(0);
        match session.block(n) {
            Ok(v) => {
                let mut out = String::with_capacity(8 + 8 * v.len());
                out.push_str("SAMPLES");
                for x in v {
                    out.push(' ');
                    out.push_str(&x.to_string());
                }
                println!("{out}");
                let _ = std::io::stdout().flush();
            }
            Err(e) => {
                println!("ERROR {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let _ = session.cmd("QUIT");
    ExitCode::SUCCESS
}
