//! Figure 5: ftpgate's resident memory holding many idle control sessions, against a minimal
//! responder (the bench binary re-executed) in place of vsftpd.

use super::lab::{Lab, LabPath, PROXY_PORT, SERVER4};
use super::problem;
use super::procs::{nofile_of, rss_kib, Interactive};
use super::report::{fmt, kv_f64};
use super::setup::{gate_warnings, start_gateway};
use std::time::Duration;

pub const IDLE_SESSIONS: usize = 10_000;
const IDLE_PARALLEL: usize = 256;

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

/// Figure 5.
#[derive(Default)]
pub struct Idle {
    pub held: u64,
    pub errors: u64,
    pub established: usize,
    pub open_s: f64,
    pub loadgen_cpu_s: f64,
    pub rss_idle_kib: Option<u64>,
    pub rss_held_kib: Option<u64>,
    pub nofile: String,
    pub notes: Vec<String>,
}

impl Idle {
    /// Added VmRSS over the sessions actually held (all IDLE_SESSIONS unless ftpgate refused
    /// some, which the report says beside it).
    pub fn per_session_kib(&self) -> Option<f64> {
        let (a, b) = (self.rss_idle_kib?, self.rss_held_kib?);
        (self.held > 0).then(|| (b as f64 - a as f64) / self.held as f64)
    }
}

/// Figure 5: ftpgate's VmRSS idle, then holding IDLE_SESSIONS control sessions.
pub fn bench_idle(exe: &str) -> Idle {
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
