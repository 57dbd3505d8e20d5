//! Figure 6: a client writes 1 MiB of `NOOP` at a server that never answers and reads no reply:
//! ftpgate's CPU time meanwhile, what becomes of that session, and how long other sessions wait
//! for their greeting before and during it. The server is the bench's responder (it greets and
//! never answers), the traffic the load generator's `pipeline` mode (pipegen.rs).

use super::lab::{Lab, LabPath, SERVER4};
use super::problem;
use super::procs::{cpu_secs, Interactive};
use super::report::{fmt, kv, kv_f64, ms_p50_p99, sample_count};
use super::setup::{gate_warnings, start_gateway};
use std::time::Duration;

pub const PIPE_BYTES: usize = 1 << 20;
pub const PIPE_REPLY_TIMEOUT_S: u64 = 5;
/// The pipelining session's measured time, from its first command; longer than the reply
/// timeout, so that the window shows the session's end.
pub const PIPE_WINDOW_S: u64 = 8;
/// Greeting probes alone before the pipelining starts.
pub const PIPE_BASELINE_S: u64 = 2;
pub const PIPE_PROBE_MS: u64 = 50;

/// For figure 6: the reply timeout the pipelining session meets.
const GATE_YAML_PIPE: &str = "# ftpgate configuration of the lab benchmark (benches/lab.rs), figure 6
timeouts:
  reply: 5s
  shutdown_grace: 0s
log:
  level: info
";

/// Figure 6.
#[derive(Debug, Default, PartialEq)]
pub struct Pipeline {
    /// ftpgate's CPU seconds over the window.
    pub cpu_s: Option<f64>,
    /// Bytes of NOOP the client got into its socket (of PIPE_BYTES).
    pub sent: Option<f64>,
    /// The code of the first reply on the pipelining session, `none` without one, and when.
    pub reply: String,
    pub reply_s: Option<f64>,
    pub closed_s: Option<f64>,
    /// Other sessions' greeting p50 and p99 in ms, before and during; their counts.
    pub base: Option<(f64, f64)>,
    pub base_n: usize,
    pub during: Option<(f64, f64)>,
    pub during_n: usize,
    pub probe_errors: u64,
    pub notes: Vec<String>,
}

impl Pipeline {
    /// What the load generator's `RESULT` line says (all but ftpgate's CPU time).
    pub fn from_result(line: &str) -> Pipeline {
        let finite = |k: &str| kv_f64(line, k).filter(|v| v.is_finite());
        let list = |k: &str| kv(line, k).unwrap_or_default();
        Pipeline {
            sent: finite("sent"),
            reply: kv(line, "reply").unwrap_or_else(|| "none".into()),
            reply_s: finite("reply_s"),
            closed_s: finite("closed_s"),
            base: ms_p50_p99(&list("base_us")),
            base_n: sample_count(&list("base_us")),
            during: ms_p50_p99(&list("during_us")),
            during_n: sample_count(&list("during_us")),
            probe_errors: (finite("base_errors").unwrap_or(0.0) + finite("errors").unwrap_or(0.0)) as u64,
            ..Pipeline::default()
        }
    }

    /// The seconds after which the pipelining session got its 421, if it did.
    pub fn closed_with_421(&self) -> Option<f64> {
        (self.reply == "421").then_some(self.reply_s).flatten()
    }

    /// One line for the report and the progress: what the pipelining session saw.
    pub fn session_outcome(&self) -> String {
        match (self.reply.as_str(), self.reply_s, self.closed_s) {
            ("none", _, None) => format!("no reply, still open after {PIPE_WINDOW_S} s"),
            ("none", _, Some(c)) => format!("closed without a reply after {c:.2} s"),
            (code, t, c) => format!(
                "{code} after {} s, {}",
                fmt(t, 2),
                c.map_or("still open".to_owned(), |c| format!("closed at {c:.2} s"))
            ),
        }
    }
}

/// Figure 6: one REDIRECT lab with the silent responder; the load generator's baseline
/// probes, then the pipelining session and the probes beside it.
pub fn bench_pipeline(exe: &str) -> Pipeline {
    progress!("pipelining: building a REDIRECT lab with the silent responder as server");
    let mut lab = Lab::new(LabPath::Redirect);
    let server = lab.server_ns.clone();
    let target = format!("{SERVER4}:21");
    let argv: Vec<String> =
        [exe, "--responder", "--listen", &target, "--max-secs", "300"].iter().map(|s| s.to_string()).collect();
    lab.spawn("responder", &server, &argv);
    lab.wait_listening(&server, SERVER4, 21);
    let pid = start_gateway(&mut lab, GATE_YAML_PIPE);
    let client = lab.client_ns.clone();
    let (bytes, base, window, every) =
        (PIPE_BYTES.to_string(), PIPE_BASELINE_S.to_string(), PIPE_WINDOW_S.to_string(), PIPE_PROBE_MS.to_string());
    let mut gen = Interactive::spawn(
        &client,
        &[
            exe,
            "--loadgen",
            "pipeline",
            "--target",
            &target,
            "--bytes",
            &bytes,
            "--baseline-secs",
            &base,
            "--window-secs",
            &window,
            "--probe-ms",
            &every,
        ],
    );
    let mut p = Pipeline::default();
    let run = gen.until("ATTACK", Duration::from_secs(PIPE_BASELINE_S + 30)).and_then(|_| {
        let before = cpu_secs(pid);
        let lines = gen.until("RESULT ", Duration::from_secs(PIPE_WINDOW_S + 30))?;
        Ok((lines, before.zip(cpu_secs(pid)).map(|(a, b)| b - a)))
    });
    match run {
        Ok((lines, cpu_s)) => {
            let errors: Vec<String> =
                lines.iter().filter_map(|l| l.strip_prefix("ERROR ")).map(str::to_owned).collect();
            p = Pipeline { cpu_s, ..Pipeline::from_result(lines.last().map_or("", String::as_str)) };
            progress!(
                "pipelining: ftpgate CPU {} s over {PIPE_WINDOW_S} s; client wrote {} of {PIPE_BYTES} bytes; session: {}; \
                 greetings p50/p99 {:?} ms before, {:?} ms during ({} probe errors)",
                fmt(p.cpu_s, 2),
                fmt(p.sent, 0),
                p.session_outcome(),
                p.base,
                p.during,
                p.probe_errors
            );
            if !errors.is_empty() {
                problem(format!("pipelining: the load generator saw: {}", errors.join("; ")));
            }
            if p.during_n == 0 || p.cpu_s.is_none() {
                problem("pipelining: nothing measured".into());
            }
        }
        Err(e) => problem(format!("pipelining: {e}")),
    }
    if !gen.finish(Duration::from_secs(30)) {
        problem("pipelining: the load generator did not end cleanly".into());
    }
    drop(gen);
    p.notes.extend(gate_warnings(&lab).into_iter().take(6).map(|w| format!("ftpgate logged {w}")));
    lab.finish();
    p
}

/// Checks of the pure parts above; returns how many ran.
pub fn self_check() -> usize {
    let mut n = 0;
    let mut check = |ok: bool, what: &str| {
        assert!(ok, "bench self-check failed: {what}");
        n += 1;
    };
    let line = "RESULT sent=589824 reply_s=5.003 closed_s=5.004 reply=421 base_errors=0 errors=1 \
                base_us=400,600 during_us=500,700,900";
    let p = Pipeline::from_result(line);
    check(p.sent == Some(589824.0), "bytes written");
    check(p.closed_with_421() == Some(5.003), "421 and when");
    check(p.base == Some((0.4, 0.6)) && p.base_n == 2, "baseline greetings");
    check(p.during == Some((0.7, 0.9)) && p.during_n == 3, "greetings during");
    check(p.probe_errors == 1, "probe errors added up");
    check(p.session_outcome() == "421 after 5.00 s, closed at 5.00 s", "outcome with a 421");
    let q = Pipeline::from_result("RESULT sent=1048576 reply_s=NaN closed_s=NaN reply=none base_us= during_us=");
    check(q.closed_with_421().is_none() && q.reply_s.is_none(), "no reply");
    check(q.base.is_none() && q.during_n == 0, "no probes");
    check(q.session_outcome() == format!("no reply, still open after {PIPE_WINDOW_S} s"), "outcome without a reply");
    n
}
