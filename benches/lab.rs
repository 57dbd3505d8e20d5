//! The lab benchmark: ftpgate beside the routed baseline and the kernel's FTP helper, through
//! the same namespaces, rules and vsftpd as the lab tests (tests/lab/mod.rs).
//!
//! Run as root: `sudo env "PATH=$PATH" cargo bench --bench lab` (about 90 s on 2 cores, plus the
//! build).
//! It prints, for the paths in turn (routed, the kernel helper, ftpgate relaying, ftpgate's
//! kernel data path; `setup::ALL_PATHS`, a path whose rule file this tree lacks is reported as
//! not built):
//!   1. RETR and STOR MB/s of a 1 GiB file with curl (PASV), best and median of 5 runs, sizes
//!      checked on every run and SHA-256 once per path and direction, and each path's ratio to
//!      routed. Downloads go into a sink (`-o /dev/null`, the size from curl's counter, the
//!      checksum run through a pipe into sha256sum), uploads land on tmpfs, the source is served
//!      from tmpfs: the network path is measured, not a disk. A path more than 10 % faster than
//!      routed is flagged as a suspect baseline, not reported as a result;
//!   2. ftpgate's CPU seconds (utime + stime) per GiB transferred, and its system calls per GiB
//!      (strace -c over one extra, untimed RETR and STOR);
//!   3. session setup rate: whole FTP sessions (connect ... RETR 1 KiB ... QUIT) per second from
//!      a tokio load generator in the client namespace (this binary, re-executed), its errors
//!      and its own CPU time; 3 rounds of 4 s per path;
//!   4. control-channel round trip: 20,000 sequential NOOPs on one session per path, p50 and
//!      p99, and what ftpgate adds;
//!   5. ftpgate's resident memory holding 10,000 idle control sessions (against a minimal
//!      responder, this binary re-executed in the server namespace);
//!   6. pipelining at a silent server: ftpgate's CPU time while a client writes 1 MiB of NOOP
//!      at the responder (which never answers) without reading a reply, what becomes of that
//!      session (421 after timeouts.reply, 5 s here), and other sessions' greeting latency
//!      (p50/p99) before and during it;
//!
//! then the targets, each met or NOT met. The three paths' labs exist side by side and take
//! turns (a different one first each round), so that whatever else runs on the machine weighs on
//! all of them alike. Progress goes to stderr as each figure is measured;
//! the tables go to stdout at the end. The exit status is 1 when a measurement itself failed
//! (a transfer, a checksum, load-generator errors), not when a target is missed.
//! `FTPGATE_BENCH_ONLY=bulk,rate,rtt,idle,pipeline,ftps` (any of them) runs only those figures
//! (ftps: benches/lab/ftps.rs, its size from `FTPGATE_BENCH_FTPS_BYTES`);
//! `FTPGATE_BENCH_MIB=64 FTPGATE_BENCH_RUNS=2` shrinks figure 1 to validate the benchmark;
//! `FTPGATE_BIN=/path/to/ftpgate` measures that binary instead of the one cargo built;
//! `FTPGATE_BENCH_PERF=<dir>` records a system-wide CPU profile (`perf record -a -g`) of each
//! session-setup run into that directory (figures of such a run are slowed by perf).
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) no lab is built: the binary checks
//! its pure helpers (percentiles, parsers, the table) and exits.
//!
//! This file runs the figures in order; each figure is measured in its own module under
//! benches/lab/ (bulk, rate, rtt, idle, pipeline), the labs are built in `setup`, the
//! re-executed binary's load generators and responder are `loadgen`, `noop` and `pipegen`, and
//! the report is put together in
//! `render` from the pure helpers of `report`.

// tests/lab/mod.rs allows its own unused code (`#![allow(dead_code)]`).
#[path = "../tests/lab/mod.rs"]
mod lab;

use bulk::BigFile;
use idle::{bench_idle, Idle};
use lab::servers::ServerKind;
use procs::{loadavg, machine_jiffies};
use render::{render, RunInfo};
use report::fmt;
use setup::{finish_path, setup_path, use_tmpfs, PathLab};
use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static STARTED: OnceLock<Instant> = OnceLock::new();

// Defined before the modules below: a macro_rules! macro is visible only after its definition.
macro_rules! progress {
    ($($t:tt)*) => {{
        let t = $crate::STARTED.get_or_init(std::time::Instant::now).elapsed().as_secs_f64();
        eprintln!("[bench {t:6.1}s] {}", format!($($t)*));
    }};
}

#[path = "lab/bulk.rs"]
mod bulk;
#[path = "lab/ftps.rs"]
mod ftps;
#[path = "lab/idle.rs"]
mod idle;
#[path = "lab/loadgen.rs"]
mod loadgen;
#[path = "lab/noop.rs"]
mod noop;
#[path = "lab/pipegen.rs"]
mod pipegen;
#[path = "lab/pipeline.rs"]
mod pipeline;
#[path = "lab/procs.rs"]
mod procs;
#[path = "lab/profile.rs"]
mod profile;
#[path = "lab/rate.rs"]
mod rate;
#[path = "lab/render.rs"]
mod render;
#[path = "lab/report.rs"]
mod report;
#[path = "lab/rtt.rs"]
mod rtt;
#[path = "lab/setup.rs"]
mod setup;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--loadgen") => return loadgen::main_loadgen(&args[1..]),
        Some("--responder") => return loadgen::main_responder(&args[1..]),
        _ => {}
    }
    if args.iter().any(|a| a == "--bench") {
        run_bench()
    } else {
        let n = report::self_check() + pipeline::self_check();
        println!(
            "lab bench (test mode): {n} self-checks of the pure helpers passed; no lab built. \
             The benchmark itself: sudo env \"PATH=$PATH\" cargo bench --bench lab"
        );
        ExitCode::SUCCESS
    }
}

/// Everything that went wrong; any entry makes the exit status 1 (after the report).
static PROBLEMS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn problem(what: String) {
    progress!("PROBLEM: {what}");
    PROBLEMS.lock().unwrap_or_else(|e| e.into_inner()).push(what);
}

fn run_bench() -> ExitCode {
    STARTED.get_or_init(Instant::now);
    if !lab::gate("benchmark", Some(ServerKind::Vsftpd)) {
        eprintln!("the lab benchmark needs root and the lab's tools: sudo env \"PATH=$PATH\" cargo bench --bench lab");
        return ExitCode::FAILURE;
    }
    if lab::sh(&["sh", "-c", "command -v prlimit"]).is_err() {
        eprintln!("the lab benchmark needs `prlimit` (util-linux)");
        return ExitCode::FAILURE;
    }
    let exe = std::env::current_exe().expect("own executable").to_str().expect("UTF-8 path").to_owned();
    let files_on = use_tmpfs();
    progress!("writing the {} test file", bulk::size_label());
    let big = BigFile::create(want("bulk"));
    progress!("{} test file ready, SHA-256 {}", bulk::size_label(), &big.sha[..16.min(big.sha.len())]);
    let mut figures = Vec::new();
    let mut versions = String::new();
    let load_start = loadavg();
    let busy_start = {
        let a = machine_jiffies();
        std::thread::sleep(Duration::from_secs(2));
        a.zip(machine_jiffies()).and_then(|(a, b)| report::busy_percent(a, b))
    };
    progress!("machine CPU busy before the start: {} % (load average {})", fmt(busy_start, 0), fmt(load_start, 2));
    if want("bulk") || want("rate") || want("rtt") {
        for p in setup::ALL_PATHS.iter().filter(|p| !p.available()) {
            progress!("{}: not built: this tree has no nftables/{}", p.name(), p.rules.unwrap_or("?"));
        }
        let mut labs: Vec<PathLab> = setup::paths().into_iter().map(|p| setup_path(p, &big, &mut versions)).collect();
        if want("bulk") {
            bulk::bulk(&mut labs, &big);
            for l in labs.iter_mut().filter(|l| l.gate.is_some()) {
                progress!(
                    "{}: counting ftpgate's system calls (strace -c, one extra RETR and STOR)",
                    l.figs.path.name()
                );
                match profile::syscalls(l, &big) {
                    Ok(s) => {
                        progress!("{}: RETR syscalls/GiB: {}", l.figs.path.name(), profile::summary(&s.retr));
                        progress!("{}: STOR syscalls/GiB: {}", l.figs.path.name(), profile::summary(&s.stor));
                        l.figs.syscalls = Some(s);
                    }
                    Err(e) => l.figs.gate_notes.push(format!("no syscall profile: {e}")),
                }
            }
        }
        if want("rate") {
            rate::rate(&mut labs, &exe);
        }
        if want("rtt") {
            rtt::rtt(&mut labs, &exe);
        }
        figures = labs.into_iter().map(finish_path).collect();
    }
    drop(big);
    let idle = if want("idle") { bench_idle(&exe) } else { Idle::default() };
    if want("ftps") {
        ftps::bench_ftps();
    }
    // Last: an ftpgate that burns CPU on it must not weigh on the other figures.
    let pipe = if want("pipeline") { pipeline::bench_pipeline(&exe) } else { pipeline::Pipeline::default() };
    let run = RunInfo {
        versions,
        total: STARTED.get().map(|s| s.elapsed()).unwrap_or_default(),
        load_start,
        load_end: loadavg(),
        busy_start,
        files_on,
    };
    let text = render(&figures, &idle, &pipe, &run);
    print!("{text}");
    let _ = std::io::stdout().flush();
    let problems = PROBLEMS.lock().unwrap_or_else(|e| e.into_inner());
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn want(part: &str) -> bool {
    std::env::var("FTPGATE_BENCH_ONLY").map_or(true, |v| v.split(',').any(|p| p.trim() == part))
}
