//! The lab benchmark: ftpgate beside the routed baseline and the kernel's FTP helper, through
//! the same namespaces, rules and vsftpd as the lab tests (tests/lab/mod.rs).
//!
//! Run as root: `sudo env "PATH=$PATH" cargo bench --bench lab` (about 90 s on 2 cores, plus the
//! build).
//! It prints, for the routed path, the kernel helper and ftpgate (REDIRECT):
//!   1. RETR and STOR MB/s of a 1 GiB file with curl (PASV), median of 3 runs, sizes checked on
//!      every run and SHA-256 once per path and direction, and each path's ratio to routed;
//!   2. ftpgate's CPU seconds (utime + stime) per GiB relayed;
//!   3. session setup rate: whole FTP sessions (connect ... RETR 1 KiB ... QUIT) per second from
//!      a tokio load generator in the client namespace (this binary, re-executed), its errors
//!      and its own CPU time; 3 rounds of 4 s per path;
//!   4. control-channel round trip: 20,000 sequential NOOPs on one session per path, p50 and
//!      p99, and what ftpgate adds;
//!   5. ftpgate's resident memory holding 10,000 idle control sessions (against a minimal
//!      responder, this binary re-executed in the server namespace);
//!
//! then the targets, each met or NOT met. The three paths' labs exist side by side and take
//! turns (a different one first each round), so that whatever else runs on the machine weighs on
//! all of them alike. Progress goes to stderr as each figure is measured;
//! the tables go to stdout at the end. The exit status is 1 when a measurement itself failed
//! (a transfer, a checksum, load-generator errors), not when a target is missed.
//! `FTPGATE_BENCH_ONLY=bulk,rate,rtt,idle` (any of them) runs only those figures.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) no lab is built: the binary checks
//! its pure helpers (percentiles, parsers, the table) and exits.

// tests/lab/mod.rs allows its own unused code (`#![allow(dead_code)]`).
#[path = "../tests/lab/mod.rs"]
mod lab;
#[path = "lab/loadgen.rs"]
mod loadgen;
#[path = "lab/report.rs"]
mod report;

use lab::servers::{ServerKind, LAB_PASS, LAB_USER};
use lab::{Lab, LabPath, PROXY_PORT, SERVER4};
use report::{fmt, kv, kv_f64, line_with, median, table, verdict, Cmp};
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const FTPGATE: &str = env!("CARGO_BIN_EXE_ftpgate");
const GIB: u64 = 1 << 30;
/// Runs per direction and path; the median is reported.
const RUNS: usize = 3;
/// The small file of the session-setup test.
const SMALL_NAME: &str = "one-kib.bin";
const SMALL_BYTES: u64 = 1024;
/// Session setup: per path, RATE_ROUNDS runs of RATE_WORKERS workers, each run measuring
/// RATE_WINDOW_S seconds after RATE_WARMUP_S; the paths take turns.
const RATE_WORKERS: usize = 24;
const RATE_ROUNDS: usize = 3;
const RATE_WARMUP_S: u64 = 1;
const RATE_WINDOW_S: u64 = 4;
/// NOOP round trips kept per path, in blocks taken in turns by the paths, after a warm-up.
const NOOP_COUNT: usize = 20_000;
const NOOP_BLOCK: usize = 2_500;
const NOOP_WARMUP: usize = 1_000;
const IDLE_SESSIONS: usize = 10_000;
const IDLE_PARALLEL: usize = 256;
/// ftpgate starts with the usual default soft limit (systemd's, most shells'), so that the
/// memory figure also proves ftpgate raises RLIMIT_NOFILE itself.
const FTPGATE_START_NOFILE: u64 = 1024;

/// ftpgate's configuration for figures 1-4: the defaults, with info logging as in production
/// and no shutdown grace (the lab ends it).
const GATE_YAML: &str = "# ftpgate configuration of the lab benchmark (benches/lab.rs), figures 1-4
timeouts:
  shutdown_grace: 0s
log:
  level: info
";

/// For figure 5: room for the idle sessions.
const GATE_YAML_IDLE: &str = "# ftpgate configuration of the lab benchmark (benches/lab.rs), figure 5
limits:
  max_sessions: 10000
  max_sessions_per_client: 10000
timeouts:
  shutdown_grace: 0s
log:
  level: info
";

const TARGET_BULK_RATIO: f64 = 0.90;
const TARGET_RATE_RATIO: f64 = 0.90;
const TARGET_ADDED_P99_US: f64 = 100.0;
const TARGET_KIB_PER_SESSION: f64 = 20.0;

const PATHS: [LabPath; 3] = [LabPath::Routed, LabPath::KernelHelper, LabPath::Redirect];

static STARTED: OnceLock<Instant> = OnceLock::new();

macro_rules! progress {
    ($($t:tt)*) => {{
        let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
        eprintln!("[bench {t:6.1}s] {}", format!($($t)*));
    }};
}

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
        let n = report::self_check();
        println!(
            "lab bench (test mode): {n} self-checks of the pure helpers passed; no lab built. \
             The benchmark itself: sudo env \"PATH=$PATH\" cargo bench --bench lab"
        );
        ExitCode::SUCCESS
    }
}

/// One path's figures (1-4).
struct PathFigures {
    path: LabPath,
    retr: Vec<f64>,
    stor: Vec<f64>,
    cpu: Option<GateCpu>,
    rate: Option<Rate>,
    rtt: Option<Rtt>,
    gate_notes: Vec<String>,
}

struct GateCpu {
    retr_s_per_gib: f64,
    stor_s_per_gib: f64,
    nofile: String,
}

struct Rate {
    /// How busy the machine's CPUs were during the run (all processes, kernel included).
    machine_busy: Option<f64>,
    rate: f64,
    counted: u64,
    sessions: u64,
    errors: u64,
    cpu_s: f64,
    wall_s: f64,
}

struct Rtt {
    p50: f64,
    p99: f64,
    max: f64,
}

/// Figure 5.
#[derive(Default)]
struct Idle {
    held: u64,
    errors: u64,
    established: usize,
    open_s: f64,
    loadgen_cpu_s: f64,
    rss_idle_kib: Option<u64>,
    rss_held_kib: Option<u64>,
    nofile: String,
    notes: Vec<String>,
}

impl Idle {
    /// Added VmRSS over the sessions actually held (all IDLE_SESSIONS unless ftpgate refused
    /// some, which the report says beside it).
    fn per_session_kib(&self) -> Option<f64> {
        let (a, b) = (self.rss_idle_kib?, self.rss_held_kib?);
        (self.held > 0).then(|| (b as f64 - a as f64) / self.held as f64)
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
    progress!("writing the 1 GiB test file");
    let big = BigFile::create(want("bulk"));
    progress!("1 GiB test file ready, SHA-256 {}", &big.sha[..16.min(big.sha.len())]);
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
        let mut labs: Vec<PathLab> = PATHS.iter().map(|p| setup_path(*p, &big, &mut versions)).collect();
        if want("bulk") {
            bulk(&mut labs, &big);
        }
        if want("rate") {
            rate(&mut labs, &exe);
        }
        if want("rtt") {
            rtt(&mut labs, &exe);
        }
        figures = labs.into_iter().map(finish_path).collect();
    }
    drop(big);
    let idle = if want("idle") { bench_idle(&exe) } else { Idle::default() };
    let run = RunInfo {
        versions,
        total: STARTED.get().map(|s| s.elapsed()).unwrap_or_default(),
        load_start,
        load_end: loadavg(),
        busy_start,
        files_on,
    };
    let text = render(&figures, &idle, &run);
    print!("{text}");
    let _ = std::io::stdout().flush();
    let problems = PROBLEMS.lock().unwrap_or_else(|e| e.into_inner());
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The 1 GiB file every path transfers, made once and hard-linked into each lab's tree.
struct BigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sha: String,
}

impl BigFile {
    /// The file, or (`make` false, when no bulk figure is wanted) an empty one.
    fn create(make: bool) -> BigFile {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("ftpgate-bench-").tempdir().expect("bench temp dir");
        let path = dir.path().join("gig.bin");
        if !make {
            fs::write(&path, b"").expect("bench temp file");
            return BigFile { _dir: dir, path, sha: String::new() };
        }
        let sha = lab::write_big(&path, GIB as usize);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        BigFile { _dir: dir, path, sha }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n    ")
}

/// Runs curl in the client namespace; (bytes down, bytes up, seconds) as curl measured them.
fn curl(lab: &Lab, args: &[&str]) -> Result<(u64, u64, f64), String> {
    let mut argv = vec![
        "curl",
        "-sS",
        "--fail",
        "--disable-epsv",
        "--max-time",
        "300",
        "-w",
        "BENCH %{size_download} %{size_upload} %{time_total}\n",
    ];
    argv.extend_from_slice(args);
    let (ok, out) = lab.client_run(&argv);
    if !ok {
        return Err(format!("curl failed:\n    {}", tail(&out, 10)));
    }
    let line = line_with(&out, "BENCH ").ok_or_else(|| format!("no curl statistics in: {out}"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| w.get(i).and_then(|x| x.parse::<f64>().ok()).ok_or_else(|| format!("bad line {line:?}"));
    Ok((num(1)? as u64, num(2)? as u64, num(3)?))
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// One RETR (download = true) or STOR of the 1 GiB file; MB/s.
fn transfer(lab: &Lab, tree: &lab::Tree, big: &BigFile, download: bool, run: usize) -> Result<f64, String> {
    let what = if download { "RETR" } else { "STOR" };
    let checksum = run == 0;
    let (landed, (down, up, secs)) = if download {
        let out = lab.dir.path().join(format!("retr-{run}.bin"));
        let r = curl(lab, &["-o", out.to_str().unwrap(), &format!("ftp://{SERVER4}/gig.bin")])?;
        (out, r)
    } else {
        let name = format!("stor-{run}.bin");
        let url = format!("ftp://{LAB_USER}:{LAB_PASS}@{SERVER4}/{name}");
        let r = curl(lab, &["-T", big.path.to_str().unwrap(), &url])?;
        (tree.upload.join(name), r)
    };
    let moved = if download { down } else { up };
    let arrived = file_len(&landed);
    let check = if moved != GIB || arrived != GIB {
        Err(format!("{what}: curl moved {moved} bytes and {arrived} arrived, want {GIB}"))
    } else if checksum {
        let got = lab::sha256_file(&landed);
        if got == big.sha {
            Ok(())
        } else {
            Err(format!("{what}: SHA-256 {got}, want {}", big.sha))
        }
    } else {
        Ok(())
    };
    let _ = fs::remove_file(&landed);
    check?;
    let mbps = GIB as f64 / secs / 1e6;
    progress!(
        "{}: {what} run {}/{RUNS}: {GIB} bytes in {secs:.3} s = {mbps:.0} MB/s (size ok{})",
        lab.path.name(),
        run + 1,
        if checksum { ", SHA-256 ok" } else { "" }
    );
    Ok(mbps)
}

/// Puts the labs' directories (served trees, uploads, downloads) and the 1 GiB file on tmpfs
/// when /dev/shm has room, so that no disk write-back runs during the transfers. The lab makes
/// its directories with tempfile, which follows TMPDIR. Returns what the report says.
fn use_tmpfs() -> String {
    const NEED: u64 = 6 * GIB;
    let shm = Path::new("/dev/shm");
    let ok = std::env::var_os("TMPDIR").is_none()
        && nix::sys::statfs::statfs(shm).is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        && nix::sys::statvfs::statvfs(shm)
            .is_ok_and(|v| v.blocks_available().saturating_mul(v.fragment_size()) >= NEED);
    if ok {
        // Still single-threaded here: nothing else reads the environment yet.
        std::env::set_var("TMPDIR", shm);
        "labs' trees, uploads and downloads on tmpfs (/dev/shm): no disk in the transfer figures".into()
    } else {
        format!("labs' trees, uploads and downloads in {} (page cache)", std::env::temp_dir().display())
    }
}

fn machine_jiffies() -> Option<(u64, u64)> {
    report::cpu_jiffies(&fs::read_to_string("/proc/stat").ok()?)
}

fn loadavg() -> Option<f64> {
    report::loadavg1(&fs::read_to_string("/proc/loadavg").ok()?)
}

fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |v| v as f64)
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(report::stat_cpu_ticks(&stat)? as f64 / clk_tck())
}

fn rss_kib(pid: u32) -> Option<u64> {
    report::status_kib(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmRSS")
}

fn nofile_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| report::limits_nofile(&l))
        .unwrap_or_else(|| "unknown".into())
}

/// Starts ftpgate in the firewall namespace with the bench configuration, its soft
/// RLIMIT_NOFILE first set to FTPGATE_START_NOFILE. `ip netns exec` and `prlimit` both exec,
/// so the PID is ftpgate's.
fn start_gateway(lab: &mut Lab, yaml: &str) -> u32 {
    let cfg = lab.write("bench-ftpgate.yaml", yaml);
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(4096, |(_, h)| h);
    let argv: Vec<String> = vec![
        "prlimit".into(),
        format!("--nofile={FTPGATE_START_NOFILE}:{}", hard.max(FTPGATE_START_NOFILE)),
        "--".into(),
        FTPGATE.into(),
        "--config".into(),
        cfg.to_str().unwrap().into(),
    ];
    let fw = lab.fw_ns.clone();
    let (pid, _) = lab.spawn("ftpgate", &fw, &argv);
    lab.wait_listening(&fw, "0.0.0.0", PROXY_PORT);
    lab::eventually(Duration::from_secs(5), "ftpgate's PID to run ftpgate", || {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ftpgate")
    });
    pid
}

/// Warnings and errors ftpgate logged, grouped by message (`N x message`), except the expected
/// one about running as root.
fn gate_warnings(lab: &Lab) -> Vec<String> {
    report::group_warnings(&lab.log_of("ftpgate"))
        .into_iter()
        .filter(|(_, m)| !m.contains("running as root"))
        .map(|(n, m)| format!("{n} x {}", m.chars().take(400).collect::<String>()))
        .collect()
}

fn loadgen_result(out: &str, what: &str) -> Result<String, String> {
    for e in out.lines().filter(|l| l.starts_with("ERROR ")) {
        progress!("{what}: load generator saw: {}", &e[6..]);
    }
    line_with(out, "RESULT ")
        .map(str::to_owned)
        .ok_or_else(|| format!("{what}: no result from the load generator:\n    {}", tail(out, 15)))
}

fn want(part: &str) -> bool {
    std::env::var("FTPGATE_BENCH_ONLY").map_or(true, |v| v.split(',').any(|p| p.trim() == part))
}

/// One path's lab, alive for figures 1-4 together with the other paths' labs, so that their
/// measurements can take turns: whatever else the machine does then weighs on every path alike.
struct PathLab {
    lab: Lab,
    tree: lab::Tree,
    gate: Option<u32>,
    figs: PathFigures,
    /// ftpgate's CPU seconds over its RETR and STOR runs.
    cpu_retr: f64,
    cpu_stor: f64,
    rate: RateSum,
    noop_ns: Vec<u64>,
}

/// The session-setup rounds of one path, added up.
#[derive(Default)]
struct RateSum {
    rounds: usize,
    counted: u64,
    sessions: u64,
    errors: u64,
    window_s: f64,
    cpu_s: f64,
    wall_s: f64,
    busy: (u64, u64),
    total: (u64, u64),
}

fn setup_path(path: LabPath, big: &BigFile, versions: &mut String) -> PathLab {
    let name = path.name();
    progress!("{name}: building the lab, starting vsftpd{}", if path.uses_ftpgate() { " and ftpgate" } else { "" });
    let mut lab = Lab::new(path);
    let tree = lab.start_server(ServerKind::Vsftpd);
    let gate = path.uses_ftpgate().then(|| start_gateway(&mut lab, GATE_YAML));
    if versions.is_empty() {
        let curl = lab.exec(&lab.client_ns, &["curl", "--version"]).unwrap_or_default();
        versions.push_str(curl.lines().next().unwrap_or("curl").split(" (").next().unwrap_or("curl"));
    }
    fs::hard_link(&big.path, tree.anon.join("gig.bin"))
        .or_else(|_| fs::copy(&big.path, tree.anon.join("gig.bin")).map(|_| ()))
        .expect("put the 1 GiB file into the served tree");
    {
        use std::os::unix::fs::PermissionsExt;
        let small = tree.anon.join(SMALL_NAME);
        fs::write(&small, lab::random_bytes(SMALL_BYTES as usize, 17)).unwrap();
        fs::set_permissions(&small, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let figs = PathFigures {
        path,
        retr: Vec::new(),
        stor: Vec::new(),
        cpu: None,
        rate: None,
        rtt: None,
        gate_notes: Vec::new(),
    };
    PathLab { lab, tree, gate, figs, cpu_retr: 0.0, cpu_stor: 0.0, rate: RateSum::default(), noop_ns: Vec::new() }
}

/// The labs in turn, starting with a different one each round.
fn rotated(labs: &mut [PathLab], round: usize) -> Vec<&mut PathLab> {
    let n = labs.len();
    let mut v: Vec<&mut PathLab> = labs.iter_mut().collect();
    v.rotate_left(round % n.max(1));
    v
}

/// Figures 1 and 2: RETR rounds, then STOR rounds, each round one transfer per path.
fn bulk(labs: &mut [PathLab], big: &BigFile) {
    for download in [true, false] {
        for run in 0..RUNS {
            for l in rotated(labs, run) {
                let before = l.gate.and_then(cpu_secs);
                match transfer(&l.lab, &l.tree, big, download, run) {
                    Ok(v) => {
                        let used = before.zip(l.gate.and_then(cpu_secs)).map_or(0.0, |(a, b)| b - a);
                        if download {
                            l.figs.retr.push(v);
                            l.cpu_retr += used;
                        } else {
                            l.figs.stor.push(v);
                            l.cpu_stor += used;
                        }
                    }
                    Err(e) => problem(format!("{}: {e}", l.figs.path.name())),
                }
            }
        }
    }
    for l in labs.iter_mut() {
        let name = l.figs.path.name();
        progress!(
            "{name}: RETR median {} MB/s, STOR median {} MB/s",
            fmt(median(&l.figs.retr), 0),
            fmt(median(&l.figs.stor), 0)
        );
        let Some(pid) = l.gate else { continue };
        if l.figs.retr.is_empty() || l.figs.stor.is_empty() {
            continue;
        }
        // 1 GiB per successful transfer.
        let (gib_retr, gib_stor) = (l.figs.retr.len() as f64, l.figs.stor.len() as f64);
        let cpu = GateCpu {
            retr_s_per_gib: l.cpu_retr / gib_retr,
            stor_s_per_gib: l.cpu_stor / gib_stor,
            nofile: nofile_of(pid),
        };
        progress!(
            "{name}: ftpgate CPU (utime+stime): {:.2} s over {gib_retr} GiB RETR = {:.3} s/GiB, \
             {:.2} s over {gib_stor} GiB STOR = {:.3} s/GiB",
            l.cpu_retr,
            cpu.retr_s_per_gib,
            l.cpu_stor,
            cpu.stor_s_per_gib
        );
        l.figs.cpu = Some(cpu);
    }
}

/// Figure 3: RATE_ROUNDS rounds, each a run of the load generator per path.
fn rate(labs: &mut [PathLab], exe: &str) {
    let target = format!("{SERVER4}:21");
    let (workers, warmup, window) = (RATE_WORKERS.to_string(), RATE_WARMUP_S.to_string(), RATE_WINDOW_S.to_string());
    let size = SMALL_BYTES.to_string();
    for round in 0..RATE_ROUNDS {
        for l in rotated(labs, round) {
            let name = l.figs.path.name();
            let before = machine_jiffies();
            let (_, out) = l.lab.client_run(&[
                exe,
                "--loadgen",
                "rate",
                "--target",
                &target,
                "--workers",
                &workers,
                "--warmup",
                &warmup,
                "--seconds",
                &window,
                "--file",
                SMALL_NAME,
                "--size",
                &size,
            ]);
            let after = machine_jiffies();
            let line = match loadgen_result(&out, name) {
                Ok(line) => line,
                Err(e) => {
                    problem(e);
                    continue;
                }
            };
            let r = &mut l.rate;
            let counted = kv_f64(&line, "counted").unwrap_or(0.0) as u64;
            let errors = kv(&line, "errors").and_then(|v| v.parse::<u64>().ok());
            r.rounds += 1;
            r.counted += counted;
            r.sessions += kv_f64(&line, "sessions").unwrap_or(0.0) as u64;
            r.errors += errors.unwrap_or(1);
            r.window_s += kv_f64(&line, "window_s").unwrap_or(f64::NAN);
            r.cpu_s += kv_f64(&line, "cpu_s").unwrap_or(f64::NAN);
            r.wall_s += kv_f64(&line, "wall_s").unwrap_or(f64::NAN);
            if let (Some(a), Some(b)) = (before, after) {
                r.busy.0 += a.0;
                r.busy.1 += b.0;
                r.total.0 += a.1;
                r.total.1 += b.1;
            }
            progress!(
                "{name}: round {}/{RATE_ROUNDS}: {:.1} sessions/s, {} errors, load generator CPU {} s in {} s",
                round + 1,
                counted as f64 / RATE_WINDOW_S as f64,
                errors.map_or("?".into(), |e| e.to_string()),
                kv(&line, "cpu_s").unwrap_or_default(),
                kv(&line, "wall_s").unwrap_or_default()
            );
        }
    }
    for l in labs.iter_mut() {
        let name = l.figs.path.name();
        let r = &l.rate;
        if r.rounds == 0 {
            continue;
        }
        let rate = Rate {
            machine_busy: report::busy_percent((r.busy.0, r.total.0), (r.busy.1, r.total.1)),
            rate: r.counted as f64 / r.window_s,
            counted: r.counted,
            sessions: r.sessions,
            errors: r.errors,
            cpu_s: r.cpu_s,
            wall_s: r.wall_s,
        };
        progress!(
            "{name}: {:.1} sessions/s ({} in {:.0} s of windows, {} in all), {} errors, load generator CPU {:.2} s in \
             {:.1} s ({:.0} % of one core); all CPUs of the machine {} % busy",
            rate.rate,
            rate.counted,
            r.window_s,
            rate.sessions,
            rate.errors,
            rate.cpu_s,
            rate.wall_s,
            100.0 * rate.cpu_s / rate.wall_s,
            fmt(rate.machine_busy, 0)
        );
        if rate.errors != 0 || r.rounds != RATE_ROUNDS {
            problem(format!(
                "{name}: the session-setup load generator saw {} errors in {} of {RATE_ROUNDS} rounds",
                rate.errors, r.rounds
            ));
        }
        l.figs.rate = Some(rate);
    }
}

/// Figure 4: one logged-in session per path, kept for the whole test; the paths take turns
/// in blocks of NOOP_BLOCK round trips.
fn rtt(labs: &mut [PathLab], exe: &str) {
    let target = format!("{SERVER4}:21");
    let mut gens: Vec<Option<Interactive>> = Vec::new();
    for l in labs.iter() {
        let g = Interactive::spawn(&l.lab.client_ns, &[exe, "--loadgen", "noop", "--target", &target]);
        match g.until("READY", Duration::from_secs(30)) {
            Ok(_) => gens.push(Some(g)),
            Err(e) => {
                problem(format!("{}: NOOP session: {e}", l.figs.path.name()));
                gens.push(None);
            }
        }
    }
    let blocks = NOOP_COUNT / NOOP_BLOCK;
    // Block 0 warms up and is not kept.
    for block in 0..=blocks {
        let n = if block == 0 { NOOP_WARMUP } else { NOOP_BLOCK };
        let order: Vec<usize> = (0..labs.len()).map(|i| (i + block) % labs.len()).collect();
        for i in order {
            let Some(g) = gens[i].as_mut() else { continue };
            let got = g.send(&n.to_string()).and_then(|()| g.until("SAMPLES", Duration::from_secs(60)));
            match got.map(|lines| lines.last().cloned().unwrap_or_default()) {
                Ok(line) => {
                    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                    if v.len() != n {
                        problem(format!(
                            "{}: NOOP block of {} round trips, want {n}",
                            labs[i].figs.path.name(),
                            v.len()
                        ));
                        gens[i] = None;
                    } else if block > 0 {
                        labs[i].noop_ns.extend(v);
                    }
                }
                Err(e) => {
                    problem(format!("{}: NOOP session: {e}", labs[i].figs.path.name()));
                    gens[i] = None;
                }
            }
        }
    }
    for (l, g) in labs.iter_mut().zip(gens.iter_mut()) {
        if let Some(g) = g.as_mut() {
            g.finish(Duration::from_secs(10));
        }
        let name = l.figs.path.name();
        if l.noop_ns.len() != NOOP_COUNT {
            continue;
        }
        l.noop_ns.sort_unstable();
        let p = |q: f64| report::percentile(&l.noop_ns, q).map_or(f64::NAN, |v| v as f64 / 1000.0);
        let r = Rtt { p50: p(50.0), p99: p(99.0), max: p(100.0) };
        progress!(
            "{name}: NOOP round trip over {NOOP_COUNT}: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
            r.p50,
            r.p99,
            r.max
        );
        l.figs.rtt = Some(r);
    }
}

fn finish_path(mut l: PathLab) -> PathFigures {
    if l.gate.is_some() {
        l.figs.gate_notes = gate_warnings(&l.lab);
        for w in &l.figs.gate_notes {
            progress!("{}: ftpgate logged {w}", l.figs.path.name());
        }
    }
    l.lab.finish();
    l.figs
}

/// A process of ours in a lab namespace that talks over pipes: killed by its PID if still
/// running when dropped (also on panic).
struct Interactive {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Interactive {
    fn spawn(ns: &str, argv: &[&str]) -> Interactive {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the load generator");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Interactive { child, lines }
    }

    /// Lines up to the first that starts with `prefix`, within `limit`.
    fn until(&self, prefix: &str, limit: Duration) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = l.starts_with(prefix);
                    seen.push(l);
                    if done {
                        return Ok(seen);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no `{prefix}` line within {limit:?}; got: {seen:?}"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("the load generator ended before a `{prefix}` line; got: {seen:?}"))
                }
            }
        }
    }

    /// Writes one line to its stdin.
    fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.child.stdin.as_mut().ok_or("the load generator's stdin is closed")?;
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).map_err(|e| format!("write to the load generator: {e}"))
    }

    /// Closes its stdin and waits (bounded) for it to exit.
    fn finish(&mut self, limit: Duration) -> bool {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Figure 5: ftpgate's VmRSS idle, then holding IDLE_SESSIONS control sessions.
fn bench_idle(exe: &str) -> Idle {
    progress!("idle sessions: building a REDIRECT lab with the minimal responder as server");
    let mut idle = Idle::default();
    let mut lab = Lab::new(LabPath::Redirect);
    let server = lab.server_ns.clone();
    let listen = format!("{SERVER4}:21");
    let argv: Vec<String> = [exe, "--responder", "--listen", &listen, "--nofile", "40000", "--max-secs", "600"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    lab.spawn("responder", &server, &argv);
    lab.wait_listening(&server, SERVER4, 21);
    let pid = start_gateway(&mut lab, GATE_YAML_IDLE);
    std::thread::sleep(Duration::from_secs(1));
    idle.rss_idle_kib = rss_kib(pid);
    idle.nofile = nofile_of(pid);
    progress!(
        "idle sessions: ftpgate VmRSS after start {} KiB, RLIMIT_NOFILE {}",
        idle.rss_idle_kib.map_or("?".into(), |v| v.to_string()),
        idle.nofile
    );
    let client = lab.client_ns.clone();
    let mut gen = Interactive::spawn(
        &client,
        &[
            exe,
            "--loadgen",
            "hold",
            "--target",
            &listen,
            "--count",
            &IDLE_SESSIONS.to_string(),
            "--parallel",
            &IDLE_PARALLEL.to_string(),
            "--max-hold-secs",
            "120",
        ],
    );
    match gen.until("RESULT ", Duration::from_secs(240)) {
        Ok(lines) => {
            for e in lines.iter().filter(|l| l.starts_with("ERROR ")) {
                idle.notes.push(format!("load generator: {}", &e[6..]));
            }
            let line = lines.last().cloned().unwrap_or_default();
            idle.held = kv_f64(&line, "held").unwrap_or(0.0) as u64;
            idle.errors = kv_f64(&line, "errors").unwrap_or(f64::NAN) as u64;
            idle.open_s = kv_f64(&line, "open_s").unwrap_or(f64::NAN);
            idle.loadgen_cpu_s = kv_f64(&line, "cpu_s").unwrap_or(f64::NAN);
            // Let ftpgate settle, then sample while every session is held.
            std::thread::sleep(Duration::from_secs(1));
            let mut samples = Vec::new();
            for _ in 0..3 {
                samples.extend(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(300));
            }
            idle.rss_held_kib = samples.iter().copied().max();
            idle.established = lab
                .exec(&lab.fw_ns, &["ss", "-Htn", "state", "established", &format!("( sport = :{PROXY_PORT} )")])
                .map(|o| o.lines().count())
                .unwrap_or(0);
            progress!(
                "idle sessions: {} banners in {:.2} s ({} errors), ftpgate holds {} client connections, VmRSS {} KiB \
                 (samples {samples:?}), {} KiB per session",
                idle.held,
                idle.open_s,
                idle.errors,
                idle.established,
                idle.rss_held_kib.map_or("?".into(), |v| v.to_string()),
                fmt(idle.per_session_kib(), 2)
            );
            if idle.held == 0 || idle.rss_held_kib.is_none() {
                problem("idle sessions: nothing measured".into());
            } else if idle.held != IDLE_SESSIONS as u64 {
                // A result, not a broken measurement: the notes carry what ftpgate logged.
                progress!("idle sessions: only {} of {IDLE_SESSIONS} sessions were held", idle.held);
            }
        }
        Err(e) => problem(format!("idle sessions: {e}")),
    }
    if !gen.finish(Duration::from_secs(60)) {
        problem("idle sessions: the load generator did not end cleanly".into());
    }
    drop(gen);
    let warnings = gate_warnings(&lab);
    for w in &warnings {
        progress!("idle sessions: ftpgate logged {w}");
    }
    idle.notes.extend(warnings.into_iter().take(6).map(|w| format!("ftpgate logged {w}")));
    lab.finish();
    idle
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo").ok().and_then(|m| report::status_kib(&m, "MemTotal")).unwrap_or(0);
    format!("{cpus} CPUs ({model}), {:.0} GiB RAM, Linux {}", mem as f64 / (1 << 20) as f64, kernel.trim())
}

/// ftpgate's version and the commit the working tree was built from.
fn ftpgate_version() -> String {
    let commit =
        lab::sh(&["git", "-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]).unwrap_or_default();
    match commit.trim() {
        "" => env!("CARGO_PKG_VERSION").to_owned(),
        c => format!("{} (working tree on commit {c})", env!("CARGO_PKG_VERSION")),
    }
}

/// What the report says about the run itself.
struct RunInfo {
    versions: String,
    total: Duration,
    load_start: Option<f64>,
    load_end: Option<f64>,
    busy_start: Option<f64>,
    files_on: String,
}

fn render(figs: &[PathFigures], idle: &Idle, run: &RunInfo) -> String {
    let by = |p: LabPath| figs.iter().find(|f| f.path == p);
    let routed = by(LabPath::Routed);
    let gate = by(LabPath::Redirect);
    let col = |f: &dyn Fn(&PathFigures) -> String| -> Vec<String> {
        PATHS.iter().map(|p| by(*p).map_or("n/a".into(), f)).collect()
    };
    let row = |label: &str, cells: Vec<String>| -> Vec<String> {
        let mut r = vec![label.to_owned()];
        r.extend(cells);
        r
    };
    let retr_med = |f: &PathFigures| median(&f.retr);
    let stor_med = |f: &PathFigures| median(&f.stor);
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let runs = |v: &[f64]| {
        if v.is_empty() {
            "n/a".to_owned()
        } else {
            v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" / ")
        }
    };
    let rate_of = |f: &PathFigures| f.rate.as_ref().map(|r| r.rate);
    let p50 = |f: &PathFigures| f.rtt.as_ref().map(|r| r.p50);
    let p99 = |f: &PathFigures| f.rtt.as_ref().map(|r| r.p99);
    let added = |f: &PathFigures, q: &dyn Fn(&PathFigures) -> Option<f64>| -> String {
        if f.path == LabPath::Routed {
            "-".into()
        } else {
            fmt(routed.and_then(|r| Some(q(f)? - q(r)?)), 1)
        }
    };
    let gate_only = |s: String| -> Vec<String> { vec!["-".into(), "-".into(), s] };

    let mut rows: Vec<Vec<String>> = Vec::new();
    rows.push(vec![format!(
        "1. bulk transfer of 1 GiB, curl PASV, median of {RUNS} runs, paths in turn \
         (size checked every run, SHA-256 on the first)"
    )]);
    rows.push(row("RETR MB/s", col(&|f| fmt(retr_med(f), 0))));
    rows.push(row("  runs", col(&|f| runs(&f.retr))));
    rows.push(row("  ratio to routed", col(&|f| fmt(ratio(retr_med(f), routed.and_then(retr_med)), 2))));
    rows.push(row("STOR MB/s", col(&|f| fmt(stor_med(f), 0))));
    rows.push(row("  runs", col(&|f| runs(&f.stor))));
    rows.push(row("  ratio to routed", col(&|f| fmt(ratio(stor_med(f), routed.and_then(stor_med)), 2))));
    rows.push(vec!["2. ftpgate CPU time (utime+stime of its process) per GiB relayed".into()]);
    rows.push(row("RETR CPU s/GiB", gate_only(fmt(gate.and_then(|g| g.cpu.as_ref()).map(|c| c.retr_s_per_gib), 3))));
    rows.push(row("STOR CPU s/GiB", gate_only(fmt(gate.and_then(|g| g.cpu.as_ref()).map(|c| c.stor_s_per_gib), 3))));
    rows.push(vec![format!(
        "3. session setup: connect, 220, USER/PASS, TYPE I, PASV, RETR 1 KiB, 226, QUIT \
         ({RATE_WORKERS} workers; {RATE_ROUNDS} rounds, paths in turn, of {RATE_WINDOW_S} s after {RATE_WARMUP_S} s)"
    )]);
    rows.push(row("sessions/s", col(&|f| fmt(rate_of(f), 1))));
    rows.push(row("  ratio to routed", col(&|f| fmt(ratio(rate_of(f), routed.and_then(rate_of)), 2))));
    rows.push(row(
        "  sessions in the windows",
        col(&|f| f.rate.as_ref().map_or("n/a".into(), |r| r.counted.to_string())),
    ));
    rows.push(row("  errors", col(&|f| f.rate.as_ref().map_or("n/a".into(), |r| r.errors.to_string()))));
    rows.push(row(
        "  load generator CPU (share of one core)",
        col(&|f| {
            f.rate.as_ref().map_or("n/a".into(), |r| format!("{:.2} s ({:.0} %)", r.cpu_s, 100.0 * r.cpu_s / r.wall_s))
        }),
    ));
    rows.push(row(
        "  machine CPU busy (all processes)",
        col(&|f| f.rate.as_ref().map_or("n/a".into(), |r| format!("{} %", fmt(r.machine_busy, 0)))),
    ));
    rows.push(vec![format!(
        "4. control round trip: {NOOP_COUNT} sequential NOOPs on one logged-in session per path \
         (blocks of {NOOP_BLOCK}, paths in turn)"
    )]);
    rows.push(row("p50 us", col(&|f| fmt(p50(f), 1))));
    rows.push(row("p99 us", col(&|f| fmt(p99(f), 1))));
    rows.push(row("max us", col(&|f| fmt(f.rtt.as_ref().map(|r| r.max), 1))));
    rows.push(row("added p50 us (path - routed)", col(&|f| added(f, &p50))));
    rows.push(row("added p99 us (path - routed)", col(&|f| added(f, &p99))));
    let main_table = table(&["figure", "routed", "kernel-helper", "ftpgate"], &rows);

    let kib = |v: Option<u64>| v.map_or("n/a".into(), |v| format!("{v} KiB"));
    let idle_rows = vec![
        vec!["sessions held (banner received)".into(), format!("{} of {IDLE_SESSIONS}", idle.held)],
        vec!["errors".into(), idle.errors.to_string()],
        vec!["client connections established at ftpgate".into(), idle.established.to_string()],
        vec!["time to open all".into(), format!("{} s", fmt(Some(idle.open_s), 2))],
        vec!["load generator CPU".into(), format!("{} s", fmt(Some(idle.loadgen_cpu_s), 2))],
        vec![format!("ftpgate RLIMIT_NOFILE (started at {FTPGATE_START_NOFILE} soft)"), idle.nofile.clone()],
        vec!["ftpgate VmRSS idle after start".into(), kib(idle.rss_idle_kib)],
        vec![format!("ftpgate VmRSS holding {IDLE_SESSIONS}"), kib(idle.rss_held_kib)],
        vec!["  added".into(), kib(idle.rss_idle_kib.zip(idle.rss_held_kib).map(|(a, b)| b.saturating_sub(a)))],
        vec![format!("  per session (over the {} held)", idle.held), format!("{} KiB", fmt(idle.per_session_kib(), 2))],
    ];
    let idle_table =
        table(&[&format!("5. ftpgate memory, {IDLE_SESSIONS} idle control sessions"), "value"], &idle_rows);

    let bulk_ratio = |m: &dyn Fn(&PathFigures) -> Option<f64>| ratio(gate.and_then(m), routed.and_then(m));
    let added_p99 = gate.zip(routed).and_then(|(g, r)| Some(p99(g)? - p99(r)?));
    let rate_ratio = ratio(gate.and_then(rate_of), routed.and_then(rate_of));
    let rate_ok = gate.and_then(|g| g.rate.as_ref()).is_some_and(|r| r.errors == 0)
        && routed.and_then(|g| g.rate.as_ref()).is_some_and(|r| r.errors == 0);
    let targets = [
        ("RETR through ftpgate / routed", bulk_ratio(&retr_med), Cmp::AtLeast, TARGET_BULK_RATIO, "x", 2),
        ("STOR through ftpgate / routed", bulk_ratio(&stor_med), Cmp::AtLeast, TARGET_BULK_RATIO, "x", 2),
        (
            "setup rate through ftpgate / routed",
            rate_ratio.filter(|_| rate_ok),
            Cmp::AtLeast,
            TARGET_RATE_RATIO,
            "x",
            2,
        ),
        ("added control RTT p99", added_p99, Cmp::AtMost, TARGET_ADDED_P99_US, " us", 1),
        ("RSS per idle session", idle.per_session_kib(), Cmp::AtMost, TARGET_KIB_PER_SESSION, " KiB", 2),
        (
            "idle sessions held by ftpgate",
            want("idle").then_some(idle.held as f64),
            Cmp::AtLeast,
            IDLE_SESSIONS as f64,
            "",
            0,
        ),
    ];
    let target_rows: Vec<Vec<String>> = targets
        .iter()
        .map(|(name, v, cmp, limit, unit, d)| {
            let op = if *cmp == Cmp::AtLeast { ">=" } else { "<=" };
            vec![
                name.to_string(),
                v.map_or("n/a".into(), |v| format!("{}{unit}", fmt(Some(v), *d))),
                format!("{op} {}{unit}", fmt(Some(*limit), *d)),
                verdict(*v, *cmp, *limit).to_owned(),
            ]
        })
        .collect();
    let target_table = table(&["target", "measured", "limit", "result"], &target_rows);

    let mut s = String::new();
    s.push_str("\n== ftpgate lab benchmark ==\n");
    s.push_str(&format!("machine: {}\n", machine()));
    s.push_str(&format!(
        "lab: client 203.0.113.2 -> firewall namespace -> vsftpd on 198.51.100.2:21 (network namespaces joined by \
         veth pairs), IPv4\n\
         paths: routed = plain forwarding; kernel-helper = nft ct helper ftp + masquerade; ftpgate = ftpgate {} \
         behind the shipped REDIRECT rules, log level info\n\
         clients: {}; the bench's own tokio load generator (one thread) in the client namespace\n\
         files: {}\n",
        ftpgate_version(),
        run.versions,
        run.files_on
    ));
    s.push_str(&format!(
        "total run time: {:.0} s; CPUs {} % busy just before the start; load average (1 min) {} at the start, \
         {} at the end\n",
        run.total.as_secs_f64(),
        fmt(run.busy_start, 0),
        fmt(run.load_start, 2),
        fmt(run.load_end, 2)
    ));
    if run.busy_start.is_some_and(|b| b > 20.0) {
        s.push_str(
            "WARNING: the machine was already busy when the benchmark started: other processes share its CPUs\n",
        );
    }
    s.push('\n');
    s.push_str(&main_table);
    s.push('\n');
    if want("idle") {
        s.push_str(&idle_table);
    } else {
        s.push_str("5. ftpgate memory with idle sessions: not run (FTPGATE_BENCH_ONLY)\n");
    }
    for n in &idle.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    if let Some(c) = gate.and_then(|g| g.cpu.as_ref()) {
        s.push_str(&format!("  (ftpgate RLIMIT_NOFILE in the transfer lab: {})\n", c.nofile));
    }
    for f in figs.iter().filter(|f| !f.gate_notes.is_empty()) {
        s.push_str(&format!("  ftpgate's warnings in the {} lab of figures 1-4:\n", f.path.name()));
        for w in f.gate_notes.iter().take(6) {
            s.push_str(&format!("    {w}\n"));
        }
    }
    s.push('\n');
    s.push_str(&target_table);
    let problems = PROBLEMS.lock().unwrap_or_else(|e| e.into_inner());
    if problems.is_empty() {
        s.push_str("\nall measurements completed without errors\n");
    } else {
        s.push_str(&format!("\n{} PROBLEMS (exit status 1):\n", problems.len()));
        for p in problems.iter() {
            s.push_str(&format!("  - {p}\n"));
        }
    }
    s
}
