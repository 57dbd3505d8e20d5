//! `--loadgen pipeline`: the traffic of figure 6. First greeting probes alone (the baseline),
//! then one session that writes a stream of `NOOP` without reading a reply while the probes go
//! on. A probe is a new session timed from connect to its 220 greeting, one at a time.

use super::loadgen::Opts;
use super::report::noop_stream;
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Any one probe, from connect to its greeting; any connect of the attacking session.
const STEP: Duration = Duration::from_secs(2);

/// Greeting latencies (µs) of probes run one after another, one every `every`, until `until`;
/// and how many failed.
async fn probes(target: SocketAddr, every: Duration, until: Instant) -> (Vec<u64>, u64) {
    let (mut got, mut errors) = (Vec::new(), 0);
    while Instant::now() < until {
        let start = Instant::now();
        let greeted = timeout(STEP, async {
            let mut s = BufReader::new(TcpStream::connect(target).await.ok()?);
            let mut line = String::new();
            s.read_line(&mut line).await.ok()?;
            line.starts_with("220").then_some(())
        });
        match greeted.await {
            Ok(Some(())) => got.push(start.elapsed().as_micros() as u64),
            _ => errors += 1,
        }
        tokio::time::sleep_until((start + every).into()).await;
    }
    (got, errors)
}

/// What the pipelining session saw, in seconds from its first command.
#[derive(Default)]
struct Attack {
    sent: usize,
    reply: Option<(f64, String)>,
    closed: Option<f64>,
    error: Option<String>,
}

/// Connects, reads the greeting, then writes `bytes` of NOOP without reading until `until`,
/// while noting the first reply line and the close.
async fn attack(target: SocketAddr, bytes: usize, until: Instant) -> Attack {
    let mut a = Attack::default();
    let s = match timeout(STEP, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        _ => return Attack { error: Some(format!("cannot connect to {target}")), ..a },
    };
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    if !matches!(timeout(STEP, rd.read_line(&mut line)).await, Ok(Ok(_))) || !line.starts_with("220") {
        return Attack { error: Some(format!("no greeting: {:?}", line.trim_end())), ..a };
    }
    let stream = noop_stream(bytes);
    let sent = Cell::new(0usize);
    let t0 = Instant::now();
    let writer = async {
        for chunk in stream.chunks(64 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
            sent.set(sent.get() + chunk.len());
        }
    };
    // Both record as they go: what they saw survives the window's end cutting them off.
    let reply = RefCell::new(None);
    let closed = Cell::new(None);
    let reader = async {
        line.clear();
        match rd.read_line(&mut line).await {
            Ok(n) if n > 0 => *reply.borrow_mut() = Some((t0.elapsed().as_secs_f64(), line.trim_end().to_owned())),
            _ => return closed.set(Some(t0.elapsed().as_secs_f64())),
        }
        // Then until the close, draining whatever else comes.
        let mut sink = [0u8; 4096];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        closed.set(Some(t0.elapsed().as_secs_f64()));
    };
    let _ = tokio::join!(tokio::time::timeout_at(until.into(), writer), tokio::time::timeout_at(until.into(), reader));
    a.sent = sent.get();
    a.reply = reply.take();
    a.closed = closed.get();
    a
}

/// `--loadgen pipeline --target ADDR:PORT --bytes N --baseline-secs S --window-secs W
/// --probe-ms MS`: prints `ATTACK` when the pipelining session starts, then one `RESULT` line.
pub fn main_pipeline(o: &Opts) -> ExitCode {
    let target: SocketAddr = o.req("--target");
    let bytes: usize = o.req("--bytes");
    let baseline = Duration::from_secs_f64(o.req("--baseline-secs"));
    let window = Duration::from_secs_f64(o.req("--window-secs"));
    let every = Duration::from_millis(o.req("--probe-ms"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let (base, base_errors) = probes(target, every, Instant::now() + baseline).await;
        println!("ATTACK");
        let _ = std::io::stdout().flush();
        let until = Instant::now() + window;
        let (a, (during, errors)) = tokio::join!(attack(target, bytes, until), probes(target, every, until));
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        if let Some(e) = &a.error {
            println!("ERROR {e}");
        }
        let (reply_s, reply) = a.reply.map_or((f64::NAN, "none".to_owned()), |(t, r)| (t, r));
        println!(
            "RESULT sent={} reply_s={reply_s:.3} closed_s={:.3} reply={} base_errors={base_errors} errors={errors} \
             base_us={} during_us={}",
            a.sent,
            a.closed.unwrap_or(f64::NAN),
            reply.split(' ').next().unwrap_or("none"),
            list(&base),
            list(&during)
        );
    });
    ExitCode::SUCCESS
}
