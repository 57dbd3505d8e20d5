//! The benchmark's own traffic: the bench binary re-executed inside a lab namespace.
//!
//! * `--loadgen rate`: N concurrent tokio workers, each running whole FTP sessions (connect,
//!   220, USER/PASS, TYPE I, PASV or EPSV, RETR of a small file read to EOF, 226, QUIT) back to
//!   back for a fixed time; sessions per second in the measuring window, errors, own CPU time.
//! * `--loadgen hold`: opens N control connections, waits for every banner, reports, then holds
//!   them until its stdin closes (or a time limit passes).
//! * `--loadgen noop` (in noop.rs): one logged-in session; blocks of sequential NOOPs on
//!   request (stdin), each round trip reported.
//! * `--loadgen pipeline` (in pipegen.rs): greeting probes, then one session writing NOOPs
//!   without reading while the probes go on.
//! * `--responder`: a minimal server that greets every connection with `220 ready` and holds it.
//!
//! Results go to stdout as `RESULT key=value ...` (or `SAMPLES ...`) lines and `ERROR text`
//! lines; progress goes to stderr. Every network wait is bounded by a timeout.

use super::report::{parse_227, parse_229, reply_code, reply_ends};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest reply line accepted from a server.
pub const MAX_LINE: usize = 8192;
/// Any one session of the rate test, from connect to the server's close after QUIT.
const SESSION_LIMIT: Duration = Duration::from_secs(20);

/// Options given as `--name value`.
pub struct Opts(Vec<String>);

impl Opts {
    fn get(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }

    pub fn req<T: std::str::FromStr>(&self, name: &str) -> T {
        let v = self.get(name).unwrap_or_else(|| panic!("missing {name}"));
        v.parse().unwrap_or_else(|_| panic!("bad value for {name}: {v}"))
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

/// Raises this process's RLIMIT_NOFILE to at least `want` (the hard limit too, when allowed);
/// returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 0 };
    if soft >= want {
        return soft;
    }
    if hard >= want {
        return if setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() { want } else { soft };
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// This process's user + system CPU time so far, in seconds.
pub fn own_cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6)
        .unwrap_or(f64::NAN)
}

fn runtime() -> tokio::runtime::Runtime {
    // One thread: the load generator must cost little next to what it measures, and its CPU
    // time then reads directly as a fraction of one core.
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// `--loadgen MODE ...` entry point.
pub fn main_loadgen(args: &[String]) -> ExitCode {
    let mode = args.first().cloned().unwrap_or_default();
    let o = Opts(args.get(1..).unwrap_or_default().to_vec());
    match mode.as_str() {
        "rate" => rate(&o),
        "hold" => hold(&o),
        "noop" => super::noop::noop(&o),
        "pipeline" => super::pipegen::main_pipeline(&o),
        _ => {
            eprintln!("usage: --loadgen rate|hold|noop|pipeline --target ADDR:PORT ...");
            ExitCode::from(2)
        }
    }
}

/// A control connection: replies are read whole (multi-line aware).
struct Ctrl {
    s: BufReader<TcpStream>,
    line: String,
}

struct Reply {
    code: u16,
    text: String,
}

impl Ctrl {
    async fn connect(target: SocketAddr) -> Result<Ctrl, String> {
        let s = TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
        let _ = s.set_nodelay(true);
        Ok(Ctrl { s: BufReader::new(s), line: String::new() })
    }

    async fn read_line(&mut self) -> Result<(), String> {
        self.line.clear();
        let n = self.s.read_line(&mut self.line).await.map_err(|e| format!("read reply: {e}"))?;
        if n == 0 {
            return Err("connection closed while waiting for a reply".into());
        }
        if n > MAX_LINE {
            return Err("overlong reply line".into());
        }
        Ok(())
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        self.read_line().await?;
        let (code, multi) = reply_code(&self.line).ok_or_else(|| format!("not a reply: {:?}", self.line.trim_end()))?;
        let mut text = self.line.trim_end().to_owned();
        if multi {
            for _ in 0..1000 {
                self.read_line().await?;
                text.push('\n');
                text.push_str(self.line.trim_end());
                if reply_ends(code, true, &self.line) {
                    return Ok(Reply { code, text });
                }
            }
            return Err(format!("endless multi-line {code} reply"));
        }
        Ok(Reply { code, text })
    }

    async fn expect(&mut self, ok: &[u16], what: &str) -> Result<Reply, String> {
        let r = self.reply().await?;
        if ok.contains(&r.code) {
            Ok(r)
        } else {
            Err(format!("{what}: unexpected reply {:?}", r.text))
        }
    }

    async fn send(&mut self, cmd: &str) -> Result<(), String> {
        self.s.get_mut().write_all(format!("{cmd}\r\n").as_bytes()).await.map_err(|e| format!("send {cmd}: {e}"))
    }

    async fn cmd(&mut self, cmd: &str, ok: &[u16]) -> Result<Reply, String> {
        self.send(cmd).await?;
        self.expect(ok, cmd.split(' ').next().unwrap_or(cmd)).await
    }
}

/// What one rate-test session does; `Ok` only when the file arrived whole and the server said
/// goodbye and closed.
async fn session(target: SocketAddr, file: &str, size: u64, epsv: bool) -> Result<(), String> {
    let mut c = Ctrl::connect(target).await?;
    c.expect(&[220], "banner").await?;
    // Like curl: PASS only when the server asks for it (vsftpd's anonymous login may not).
    if c.cmd("USER anonymous", &[230, 331]).await?.code == 331 {
        c.cmd("PASS bench@example.com", &[230]).await?;
    }
    c.cmd("TYPE I", &[200]).await?;
    let data_at = if epsv {
        let r = c.cmd("EPSV", &[229]).await?;
        parse_229(&r.text, target.ip()).ok_or_else(|| format!("bad 229: {}", r.text))?
    } else {
        let r = c.cmd("PASV", &[227]).await?;
        SocketAddr::V4(parse_227(&r.text).ok_or_else(|| format!("bad 227: {}", r.text))?)
    };
    let mut d = TcpStream::connect(data_at).await.map_err(|e| format!("data connect {data_at}: {e}"))?;
    c.cmd(&format!("RETR {file}"), &[125, 150]).await?;
    let mut got = 0u64;
    let mut buf = [0u8; 16384];
    loop {
        match d.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => return Err(format!("data read: {e}")),
        }
    }
    drop(d);
    if got != size {
        return Err(format!("RETR {file}: {got} bytes arrived, want {size}"));
    }
    c.expect(&[226, 250], "end of transfer").await?;
    c.cmd("QUIT", &[221]).await?;
    // The server closes first (so TIME_WAIT stays on its side, not in the load generator).
    let mut rest = [0u8; 256];
    for _ in 0..100 {
        match c.s.read(&mut rest).await {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) => return Err(format!("after QUIT: {e}")),
        }
    }
    Err("no close after QUIT".into())
}

#[derive(Default)]
struct Tally {
    counted: u64,
    total_ok: u64,
    errors: u64,
    samples: Vec<String>,
}

fn rate(o: &Opts) -> ExitCode {
    let target: SocketAddr = o.req("--target");
    let workers: usize = o.req("--workers");
    let warmup = Duration::from_secs_f64(o.req("--warmup"));
    let window = Duration::from_secs_f64(o.req("--seconds"));
    let file: String = o.req("--file");
    let size: u64 = o.req("--size");
    let epsv = o.has("--epsv");
    raise_nofile(4 * workers as u64 + 256);
    let cpu0 = own_cpu_secs();
    let rt = runtime();
    let started = Instant::now();
    let (from, until) = (started + warmup, started + warmup + window);
    let tally = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let file = file.clone();
            set.spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < until {
                    match tokio::time::timeout(SESSION_LIMIT, session(target, &file, size, epsv)).await {
                        Ok(Ok(())) => {
                            t.total_ok += 1;
                            let now = Instant::now();
                            if now >= from && now <= until {
                                t.counted += 1;
                            }
                        }
                        Ok(Err(e)) => {
                            t.errors += 1;
                            if t.samples.len() < 3 {
                                t.samples.push(e);
                            }
                        }
                        Err(_) => {
                            t.errors += 1;
                            if t.samples.len() < 3 {
                                t.samples.push(format!("session took over {SESSION_LIMIT:?}"));
                            }
                        }
                    }
                }
                t
            });
        }
        let mut all = Tally::default();
        while let Some(r) = set.join_next().await {
            let t = r.expect("worker panicked");
            all.counted += t.counted;
            all.total_ok += t.total_ok;
            all.errors += t.errors;
            all.samples.extend(t.samples);
        }
        all
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_secs() - cpu0;
    let rate = tally.counted as f64 / window.as_secs_f64();
    let mut out = std::io::stdout().lock();
    for e in tally.samples.iter().take(5) {
        let _ = writeln!(out, "ERROR {e}");
    }
    let _ = writeln!(
        out,
        "RESULT rate={rate:.1} counted={} sessions={} errors={} workers={workers} window_s={:.1} wall_s={wall:.2} \
         cpu_s={cpu:.2}",
        tally.counted,
        tally.total_ok,
        tally.errors,
        window.as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn hold(o: &Opts) -> ExitCode {
    let target: SocketAddr = o.req("--target");
    let count: usize = o.req("--count");
    let parallel: usize = o.req("--parallel");
    let max_hold = Duration::from_secs(o.req("--max-hold-secs"));
    let nofile = raise_nofile(count as u64 + 1024);
    eprintln!("[loadgen] hold: RLIMIT_NOFILE {nofile}, opening {count} connections to {target}, {parallel} at a time");
    let cpu0 = own_cpu_secs();
    let rt = runtime();
    let started = Instant::now();
    rt.block_on(async {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..count {
            let gate = gate.clone();
            set.spawn(async move {
                let _p = gate.acquire_owned().await.expect("semaphore");
                let greet = async {
                    let mut c = Ctrl::connect(target).await?;
                    c.expect(&[220], "banner").await?;
                    Ok::<_, String>(c)
                };
                match tokio::time::timeout(Duration::from_secs(30), greet).await {
                    Ok(r) => r,
                    Err(_) => Err("no banner within 30 s".to_owned()),
                }
            });
        }
        let mut held = Vec::with_capacity(count);
        let mut errors = 0u64;
        let mut samples: Vec<String> = Vec::new();
        while let Some(r) = set.join_next().await {
            match r.expect("connection task panicked") {
                Ok(c) => held.push(c),
                Err(e) => {
                    errors += 1;
                    if !samples.contains(&e) && samples.len() < 5 {
                        samples.push(e);
                    }
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        {
            let mut out = std::io::stdout().lock();
            for e in &samples {
                let _ = writeln!(out, "ERROR {e}");
            }
            let _ = writeln!(
                out,
                "RESULT held={} errors={errors} open_s={secs:.2} cpu_s={:.2} nofile={nofile}",
                held.len(),
                own_cpu_secs() - cpu0
            );
            let _ = out.flush();
        }
        // Hold until the bench closes our stdin (or the limit passes), then close everything.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(());
        });
        let _ = tokio::time::timeout(max_hold, rx).await;
        drop(held);
        println!("RESULT released");
    });
    ExitCode::SUCCESS
}

/// `--responder --listen ADDR:PORT`: greets every connection with `220 ready` and holds it until
/// the peer closes. Runs until it is killed (or `--max-secs`, 900 by default, pass).
pub fn main_responder(args: &[String]) -> ExitCode {
    let o = Opts(args.to_vec());
    let listen: SocketAddr = o.req("--listen");
    let nofile = raise_nofile(o.get("--nofile").and_then(|v| v.parse().ok()).unwrap_or(40_000));
    let max_life = Duration::from_secs(o.get("--max-secs").and_then(|v| v.parse().ok()).unwrap_or(900));
    let started = Instant::now();
    let rt = runtime();
    rt.block_on(async move {
        let sock = if listen.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .expect("socket");
        sock.set_reuseaddr(true).expect("SO_REUSEADDR");
        sock.bind(listen).unwrap_or_else(|e| panic!("bind {listen}: {e}"));
        let l = sock.listen(4096).expect("listen");
        eprintln!("[responder] listening on {listen}, RLIMIT_NOFILE {nofile}");
        let mut last_report = Instant::now();
        let mut accepted = 0u64;
        while started.elapsed() < max_life {
            match tokio::time::timeout(Duration::from_secs(1), l.accept()).await {
                Err(_) => {}
                Ok(Ok((mut s, _))) => {
                    accepted += 1;
                    tokio::spawn(async move {
                        if s.write_all(b"220 ready\r\n").await.is_err() {
                            return;
                        }
                        let mut buf = [0u8; 64];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    });
                }
                Ok(Err(e)) => {
                    eprintln!("[responder] accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!("[responder] {accepted} connections accepted so far");
                last_report = Instant::now();
            }
        }
        eprintln!("[responder] lifetime of {max_life:?} over, exiting");
    });
    ExitCode::SUCCESS
}
