//! Figure 3: session setup rate, whole FTP sessions per second from the bench's load
//! generator in the client namespace, in rounds that take turns between the paths.

use super::lab::SERVER4;
use super::problem;
use super::procs::{loadgen_result, machine_jiffies};
use super::report::{self, fmt, kv, kv_f64};
use super::setup::{rotated, PathLab};

/// The small file of the session-setup test.
pub const SMALL_NAME: &str = "one-kib.bin";
pub const SMALL_BYTES: u64 = 1024;

/// Session setup: per path, RATE_ROUNDS runs of RATE_WORKERS workers, each run measuring
/// RATE_WINDOW_S seconds after RATE_WARMUP_S; the paths take turns.
pub const RATE_WORKERS: usize = 24;
pub const RATE_ROUNDS: usize = 3;
pub const RATE_WARMUP_S: u64 = 1;
pub const RATE_WINDOW_S: u64 = 4;

pub struct Rate {
    /// How busy the machine's CPUs were during the run (all processes, kernel included).
    pub machine_busy: Option<f64>,
    pub rate: f64,
    pub counted: u64,
    pub sessions: u64,
    pub errors: u64,
    pub cpu_s: f64,
    pub wall_s: f64,
}

/// The session-setup rounds of one path, added up.
#[derive(Default)]
pub struct RateSum {
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

/// Figure 3: RATE_ROUNDS rounds, each a run of the load generator per path.
pub fn rate(labs: &mut [PathLab], exe: &str) {
    let target = format!("{SERVER4}:21");
    let (workers, warmup, window) = (RATE_WORKERS.to_string(), RATE_WARMUP_S.to_string(), RATE_WINDOW_S.to_string());
    let size = SMALL_BYTES.to_string();
    for round in 0..RATE_ROUNDS {
        for l in rotated(labs, round) {
            let name = l.figs.path.name();
            let before = machine_jiffies();
            // `FTPGATE_BENCH_PERF=<dir>`: a system-wide CPU profile of each run (perf record -a -g),
            // to say where a path's sessions spend their time. perf slows what it watches: the
            // figures of such a run are for the profile, not for the table.
            let perf = std::env::var("FTPGATE_BENCH_PERF").ok().map(|dir| format!("{dir}/rate-{name}-{round}.data"));
            let profiled = perf.as_deref().map(|out| ["perf", "record", "-a", "-g", "-q", "-o", out, "--"]);
            let (_, out) = l.lab.client_run(
                &[
                    profiled.as_ref().map_or(&[][..], |p| &p[..]),
                    &[
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
                    ],
                ]
                .concat(),
            );
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
