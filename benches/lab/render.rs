//! The report on stdout: the run, the tables of figures 1-5 and the targets, each met or not.

use super::bulk::{runs, size_label};
use super::idle::{Idle, IDLE_SESSIONS};
use super::lab;
use super::pipeline::{Pipeline, PIPE_BYTES, PIPE_PROBE_MS, PIPE_REPLY_TIMEOUT_S, PIPE_WINDOW_S};
use super::procs::machine;
use super::rate::{RATE_ROUNDS, RATE_WARMUP_S, RATE_WINDOW_S, RATE_WORKERS};
use super::report::{fmt, median, table, verdict, Cmp};
use super::rtt::{NOOP_BLOCK, NOOP_COUNT};
use super::setup::{BenchPath, PathFigures, ALL_PATHS, FTPGATE_START_NOFILE, KERNEL_PATH, RELAY, ROUTED};
use super::{want, PROBLEMS};
use std::time::Duration;

/// ftpgate relaying both legs, against routing.
const TARGET_RELAY_RATIO: f64 = 0.75;
/// The kernel data path (pinholes; the kernel forwards), against routing, and ftpgate's CPU.
const TARGET_KERNEL_RATIO: f64 = 0.97;
const TARGET_KERNEL_CPU_S_PER_GIB: f64 = 0.02;
const TARGET_RATE_RATIO: f64 = 0.90;
/// A path faster than routing by more than this measures something else than the network
/// path (a disk, a cache): its figure is flagged as a suspect baseline, not a result.
const SUSPECT_RATIO: f64 = 1.10;
const TARGET_ADDED_P99_US: f64 = 100.0;
const TARGET_KIB_PER_SESSION: f64 = 20.0;
const TARGET_PIPE_CPU_S: f64 = 0.5;
const TARGET_PIPE_GREETING_P99_MS: f64 = 100.0;

/// ftpgate's version and the commit the working tree was built from, or the binary
/// FTPGATE_BIN named.
fn ftpgate_version() -> String {
    if let Ok(bin) = std::env::var("FTPGATE_BIN") {
        let v = lab::sh(&[&bin, "--version"]).unwrap_or_default();
        let v = v.trim();
        return format!("{} (FTPGATE_BIN={bin})", v.strip_prefix("ftpgate ").unwrap_or(v));
    }
    let commit =
        lab::sh(&["git", "-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]).unwrap_or_default();
    match commit.trim() {
        "" => env!("CARGO_PKG_VERSION").to_owned(),
        c => format!("{} (working tree on commit {c})", env!("CARGO_PKG_VERSION")),
    }
}

/// What the report says about the run itself.
pub struct RunInfo {
    pub versions: String,
    pub total: Duration,
    pub load_start: Option<f64>,
    pub load_end: Option<f64>,
    pub busy_start: Option<f64>,
    pub files_on: String,
}

/// Figure 6's table.
fn pipeline_table(p: &Pipeline) -> String {
    let pair = |v: Option<(f64, f64)>, n: usize| {
        v.map_or("n/a".into(), |(a, b)| format!("{} / {} ms ({n} probes)", fmt(Some(a), 1), fmt(Some(b), 1)))
    };
    let rows = vec![
        vec![format!(
            "1 MiB of NOOP written at a server that never answers, no reply read; timeouts.reply \
             {PIPE_REPLY_TIMEOUT_S} s; {PIPE_WINDOW_S} s window; a greeting probe every {PIPE_PROBE_MS} ms"
        )],
        vec!["ftpgate CPU time (utime+stime) in the window".into(), format!("{} s", fmt(p.cpu_s, 2))],
        vec![format!("bytes the client got written (of {PIPE_BYTES})"), fmt(p.sent, 0)],
        vec!["the pipelining session".into(), p.session_outcome()],
        vec!["other sessions' greeting p50 / p99, before".into(), pair(p.base, p.base_n)],
        vec!["  during the pipelining".into(), pair(p.during, p.during_n)],
        vec!["  probes without a greeting".into(), p.probe_errors.to_string()],
    ];
    table(&["6. pipelining at a silent server", "value"], &rows)
}

pub fn render(figs: &[PathFigures], idle: &Idle, pipe: &Pipeline, run: &RunInfo) -> String {
    let by = |p: BenchPath| figs.iter().find(|f| f.path == p);
    let routed = by(ROUTED);
    let gate = by(RELAY);
    let kernel = by(KERNEL_PATH);
    let col = |f: &dyn Fn(&PathFigures) -> String| -> Vec<String> {
        ALL_PATHS
            .iter()
            .map(|p| match by(*p) {
                Some(figs) => f(figs),
                None if !p.available() => "not built".into(),
                None => "n/a".into(),
            })
            .collect()
    };
    let row = |label: &str, cells: Vec<String>| -> Vec<String> {
        let mut r = vec![label.to_owned()];
        r.extend(cells);
        r
    };
    let retr_med = |f: &PathFigures| median(&f.retr);
    let stor_med = |f: &PathFigures| median(&f.stor);
    let best = |v: &[f64]| v.iter().copied().max_by(f64::total_cmp);
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    // A ratio to routed, unless it is beyond belief.
    let vs_routed = |m: &dyn Fn(&PathFigures) -> Option<f64>, f: &PathFigures| -> Option<f64> {
        ratio(m(f), routed.and_then(m)).filter(|r| f.path == ROUTED || *r <= SUSPECT_RATIO)
    };
    let ratio_cell = |m: &dyn Fn(&PathFigures) -> Option<f64>, f: &PathFigures| -> String {
        match ratio(m(f), routed.and_then(m)) {
            Some(r) if f.path != ROUTED && r > SUSPECT_RATIO => format!("{r:.2} SUSPECT"),
            r => fmt(r, 2),
        }
    };
    let runs_of = |v: &[f64]| {
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
        if f.path == ROUTED {
            "-".into()
        } else {
            fmt(routed.and_then(|r| Some(q(f)? - q(r)?)), 1)
        }
    };
    let cpu_cell = |f: &PathFigures, m: &dyn Fn(&super::bulk::GateCpu) -> f64| -> String {
        if f.path.lab.uses_ftpgate() {
            fmt(f.cpu.as_ref().map(m), 3)
        } else {
            "-".into()
        }
    };

    let mut rows: Vec<Vec<String>> = Vec::new();
    rows.push(vec![format!(
        "1. bulk transfer of {}, curl PASV, best and median of {} runs, paths in turn (size checked every \
         run; SHA-256 of one extra untimed RETR through a pipe and of one extra untimed STOR; RETR into a sink, STOR onto \
         tmpfs over the file that STOR landed)",
        size_label(),
        runs()
    )]);
    rows.push(row("RETR MB/s median", col(&|f| fmt(retr_med(f), 0))));
    rows.push(row("  best", col(&|f| fmt(best(&f.retr), 0))));
    rows.push(row("  runs", col(&|f| runs_of(&f.retr))));
    rows.push(row("  ratio to routed (median)", col(&|f| ratio_cell(&retr_med, f))));
    rows.push(row("STOR MB/s median", col(&|f| fmt(stor_med(f), 0))));
    rows.push(row("  best", col(&|f| fmt(best(&f.stor), 0))));
    rows.push(row("  runs", col(&|f| runs_of(&f.stor))));
    rows.push(row("  ratio to routed (median)", col(&|f| ratio_cell(&stor_med, f))));
    rows.push(vec!["2. ftpgate CPU time (utime+stime of its process) per GiB transferred".into()]);
    rows.push(row("RETR CPU s/GiB", col(&|f| cpu_cell(f, &|c| c.retr_s_per_gib))));
    rows.push(row("STOR CPU s/GiB", col(&|f| cpu_cell(f, &|c| c.stor_s_per_gib))));
    let calls = |f: &PathFigures, retr: bool| -> String {
        match &f.syscalls {
            Some(s) => fmt((if retr { &s.retr } else { &s.stor }).first().map(|t| t.1), 0),
            None if f.path.lab.uses_ftpgate() => "n/a".into(),
            None => "-".into(),
        }
    };
    rows.push(row("RETR syscalls/GiB (strace -c)", col(&|f| calls(f, true))));
    rows.push(row("STOR syscalls/GiB (strace -c)", col(&|f| calls(f, false))));
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
    let mut header = vec!["figure"];
    header.extend(ALL_PATHS.iter().map(|p| p.name()));
    let main_table = table(&header, &rows);
    let suspects: Vec<String> = figs
        .iter()
        .filter(|f| f.path != ROUTED)
        .flat_map(|f| {
            [
                ("RETR", ratio(retr_med(f), routed.and_then(retr_med))),
                ("STOR", ratio(stor_med(f), routed.and_then(stor_med))),
            ]
            .into_iter()
            .filter(|(_, r)| r.is_some_and(|r| r > SUSPECT_RATIO))
            .map(move |(what, r)| format!("{} {what} {:.2}x routed", f.path.name(), r.unwrap_or_default()))
        })
        .collect();

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

    let bulk_ratio = |p: Option<&PathFigures>, m: &dyn Fn(&PathFigures) -> Option<f64>| p.and_then(|f| vs_routed(m, f));
    let added_p99 = gate.zip(routed).and_then(|(g, r)| Some(p99(g)? - p99(r)?));
    let no_errors = |f: Option<&PathFigures>| f.and_then(|g| g.rate.as_ref()).is_some_and(|r| r.errors == 0);
    let rate_ratio = |p: Option<&PathFigures>| {
        ratio(p.and_then(rate_of), routed.and_then(rate_of)).filter(|_| no_errors(p) && no_errors(routed))
    };
    let kernel_cpu = kernel.and_then(|k| k.cpu.as_ref()).map(|c| c.retr_s_per_gib.max(c.stor_s_per_gib));
    let targets = [
        ("RETR ftpgate relay / routed", bulk_ratio(gate, &retr_med), Cmp::AtLeast, TARGET_RELAY_RATIO, "x", 2),
        ("STOR ftpgate relay / routed", bulk_ratio(gate, &stor_med), Cmp::AtLeast, TARGET_RELAY_RATIO, "x", 2),
        ("RETR ftpgate kernel path / routed", bulk_ratio(kernel, &retr_med), Cmp::AtLeast, TARGET_KERNEL_RATIO, "x", 2),
        ("STOR ftpgate kernel path / routed", bulk_ratio(kernel, &stor_med), Cmp::AtLeast, TARGET_KERNEL_RATIO, "x", 2),
        (
            "ftpgate CPU per GiB, kernel path (worse of RETR, STOR)",
            kernel_cpu,
            Cmp::AtMost,
            TARGET_KERNEL_CPU_S_PER_GIB,
            " s",
            3,
        ),
        ("setup rate ftpgate relay / routed", rate_ratio(gate), Cmp::AtLeast, TARGET_RATE_RATIO, "x", 2),
        ("setup rate ftpgate kernel path / routed", rate_ratio(kernel), Cmp::AtLeast, TARGET_RATE_RATIO, "x", 2),
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
        ("ftpgate CPU, 1 MiB pipelined at a silent server", pipe.cpu_s, Cmp::AtMost, TARGET_PIPE_CPU_S, " s", 2),
        (
            "pipelining session's 421 (reply timeout + 1 s)",
            pipe.closed_with_421(),
            Cmp::AtMost,
            (PIPE_REPLY_TIMEOUT_S + 1) as f64,
            " s",
            2,
        ),
        (
            "greeting p99 during the pipelining",
            pipe.during.map(|d| d.1),
            Cmp::AtMost,
            TARGET_PIPE_GREETING_P99_MS,
            " ms",
            1,
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
         paths: routed = plain forwarding; kernel-helper = nft ct helper ftp + masquerade; ftpgate-relay = ftpgate {} \
         behind the shipped REDIRECT rules, log level info, relaying every data byte; ftpgate-kernel = the same with \
         --data-path kernel (exact one-shot NAT pinholes, the kernel forwards)\n\
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
    for p in ALL_PATHS.iter().filter(|p| !p.available()) {
        s.push_str(&format!(
            "  note: {} not built: this tree has no nftables/{} (ftpgate {})\n",
            p.name(),
            p.rules.unwrap_or("?"),
            p.gate_args.join(" ")
        ));
    }
    for f in figs {
        if let Some(c) = &f.syscalls {
            s.push_str(&format!(
                "  {} syscalls per GiB, RETR: {}\n  {} syscalls per GiB, STOR: {}\n",
                f.path.name(),
                super::profile::summary(&c.retr),
                f.path.name(),
                super::profile::summary(&c.stor)
            ));
        }
    }
    if !suspects.is_empty() {
        s.push_str(&format!(
            "  SUSPECT BASELINE: {} (more than {SUSPECT_RATIO:.2}x routed, which no path through the same firewall \
             can be: something other than the network path decides these figures; not counted as results)\n",
            suspects.join(", ")
        ));
    }
    s.push('\n');
    if want("idle") {
        s.push_str(&idle_table);
    } else {
        s.push_str("5. ftpgate memory with idle sessions: not run (FTPGATE_BENCH_ONLY)\n");
    }
    for n in &idle.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    s.push('\n');
    if want("pipeline") {
        s.push_str(&pipeline_table(pipe));
    } else {
        s.push_str("6. pipelining at a silent server: not run (FTPGATE_BENCH_ONLY)\n");
    }
    for n in &pipe.notes {
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
