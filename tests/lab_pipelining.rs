//! Pipelining against a server that never answers, through the REDIRECT path: what a client
//! may have in flight is bounded (at the bound the gateway stops reading it: TCP backpressure,
//! no buffer), a line costs the same however many wait, the reply timeout runs from the oldest
//! unanswered command, and other sessions get their greeting meanwhile.
//!
//! The client is tests/lab/pipeline.py; the server is tests/lab/hostile_server.py in its
//! `silent` mode, which counts the commands it receives.

mod lab;

use ftpgate::session::MAX_IN_FLIGHT;
use lab::{cpu_secs, gate, Lab, LabPath, SERVER4};
use serde_json::Value;
use std::time::{Duration, Instant};

const METRICS: &str = "127.0.0.1:9121";
/// timeouts.reply of these tests.
const REPLY_TIMEOUT_S: f64 = 2.0;
/// Most CPU ftpgate may spend on one pipelining session's whole life.
const CPU_BOUND_S: f64 = 1.0;
/// Slowest greeting another session may get meanwhile.
const GREETING_BOUND_MS: f64 = 500.0;

/// A REDIRECT lab with the silent server and ftpgate (reply timeout 2 s); ftpgate's PID.
fn silent_lab(test: &str) -> Option<(Lab, u32)> {
    if !gate(test, None) {
        return None;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_hostile("silent");
    let cfg = lab.write("ftpgate.yaml", &format!("timeouts: {{reply: {REPLY_TIMEOUT_S}s}}\n"));
    let pid = lab.start_ftpgate(&["--metrics-listen", METRICS, "--config", cfg.to_str().unwrap()])[0];
    Some((lab, pid))
}

/// Runs tests/lab/pipeline.py in the client namespace against the server's address; its report.
fn pipeline(lab: &Lab, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/pipeline.py");
    let mut argv = vec!["python3", script, SERVER4, "21"];
    argv.extend_from_slice(args);
    let (ok, out) = lab.client_run(&argv);
    assert!(ok, "pipeline.py failed:\n{out}\n{}", lab.logs());
    let json = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("pipeline.py printed no report ({e}):\n{out}"))
}

/// The most commands the silent server saw on its first session (the pipelining client's),
/// once that session has closed (waited for, bounded) or as far as it got.
fn commands_at_server(lab: &Lab) -> (u64, bool) {
    let closed = |log: &str| log.lines().any(|l| l.starts_with("silent session 0:") && l.ends_with(", closed"));
    // Polled, bounded: the server is another process that says so only in its log.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut log = lab.log_of("hostile");
    while !closed(&log) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        log = lab.log_of("hostile");
    }
    let most = log
        .lines()
        .filter_map(|l| l.strip_prefix("silent session 0: "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    (most, closed(&log))
}

/// What the pipelining connection got: the time of the first reply line and its text, and when
/// the connection closed.
fn first_reply(report: &Value) -> (Option<f64>, String, Option<f64>) {
    let first = report["replies"].as_array().and_then(|r| r.first());
    let at = first.and_then(|r| r[0].as_f64());
    let text = first.and_then(|r| r[1].as_str()).unwrap_or("(none)").to_owned();
    (at, text, report["closed_at"].as_f64())
}

/// Checks of the gateway's 421 after the reply timeout, counted from the first command.
fn check_reply_timeout(report: &Value, failures: &mut Vec<String>) {
    let (at, text, closed) = first_reply(report);
    let timely = at.is_some_and(|t| (REPLY_TIMEOUT_S - 0.1..=REPLY_TIMEOUT_S + 1.0).contains(&t));
    if !text.starts_with("421") || !timely {
        failures.push(format!(
            "the first reply on the pipelining connection was {text:?} at {at:?} s; want 421 at \
             {REPLY_TIMEOUT_S} s (timeouts.reply) after the first unanswered command"
        ));
    }
    if closed.is_none() || closed < at {
        failures.push(format!("the pipelining connection closed at {closed:?} s, want right after the 421"));
    }
}

fn check_timeout_counted(lab: &Lab, failures: &mut Vec<String>) {
    if !lab.log_of("ftpgate").contains("reason=\"timeout\"") {
        failures.push("no log line with reason=\"timeout\"".into());
    }
    if lab.rejections(METRICS, "timeout") < 1 {
        failures.push("ftpgate_rejections_total{reason=\"timeout\"} did not count it".into());
    }
}

/// A client streams 1.2 MB of NOOP at a server that never answers, without reading a reply.
/// ftpgate passes at most MAX_IN_FLIGHT of them to the server and then leaves the rest in the
/// client's socket, so it spends next to no CPU; the session ends with 421 once the first NOOP
/// has waited timeouts.reply; other clients get their greeting at once all the while.
#[test]
fn a_pipelining_client_is_held_to_the_in_flight_bound_and_costs_no_cpu() {
    let Some((lab, pid)) = silent_lab("pipelining at a silent server") else { return };
    let cpu_before = cpu_secs(pid).expect("ftpgate's /proc/PID/stat");
    let report = pipeline(&lab, &["--bytes", "1200000", "--window", "8"]);
    let cpu = cpu_secs(pid).map(|c| c - cpu_before);
    let (commands, server_closed) = commands_at_server(&lab);
    let greetings: Vec<f64> =
        report["greetings_ms"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
    let slowest = greetings.iter().copied().fold(0.0, f64::max);
    let probe_errors = report["probe_errors"].as_array().map_or(0, Vec::len);

    eprintln!(
        "ftpgate CPU {cpu:?} s; server saw {commands} commands; client sent {} bytes; first reply {:?}; \
         greetings {} (slowest {slowest} ms, {probe_errors} failed)",
        report["sent"],
        first_reply(&report),
        greetings.len()
    );
    let mut failures = Vec::new();
    if !cpu.is_some_and(|c| c < CPU_BOUND_S) {
        failures.push(format!("ftpgate used {cpu:?} s of CPU on the session, want < {CPU_BOUND_S} s"));
    }
    if commands > MAX_IN_FLIGHT as u64 {
        failures.push(format!(
            "the server received {commands} commands (its session closed: {server_closed}), want at most \
             {MAX_IN_FLIGHT} unanswered"
        ));
    }
    check_reply_timeout(&report, &mut failures);
    if greetings.len() < 5 || probe_errors > 0 || slowest >= GREETING_BOUND_MS {
        failures.push(format!(
            "other sessions meanwhile: {} greeted, {probe_errors} failed, slowest {slowest} ms; want at least 5, \
             none failed, each under {GREETING_BOUND_MS} ms",
            greetings.len()
        ));
    }
    check_timeout_counted(&lab, &mut failures);
    assert!(
        failures.is_empty(),
        "{}\nclient report: {report}\n{}",
        failures.iter().map(|f| format!("- {f}")).collect::<Vec<_>>().join("\n"),
        lab.logs()
    );
    lab.finish();
}

/// One NOOP every 100 ms, none answered: the reply timeout counts from the first of them, so a
/// client that keeps writing cannot keep a session to a silent server open for ever.
#[test]
fn the_reply_timeout_runs_from_the_oldest_unanswered_command() {
    let Some((lab, _)) = silent_lab("reply timeout under pipelining") else { return };
    // 60 commands over 6 s: a timer restarted by every command would not fire before 8 s.
    let report = pipeline(&lab, &["--bytes", "360", "--pace-ms", "100", "--window", "8", "--probe-ms", "1000"]);
    let (commands, _) = commands_at_server(&lab);
    let mut failures = Vec::new();
    check_reply_timeout(&report, &mut failures);
    // About 20 went out before the timeout; the bound was never reached.
    if !(10..MAX_IN_FLIGHT as u64).contains(&commands) {
        failures.push(format!("the server received {commands} commands, want those of the first 2 s"));
    }
    check_timeout_counted(&lab, &mut failures);
    assert!(
        failures.is_empty(),
        "{}\nclient report: {report}\n{}",
        failures.iter().map(|f| format!("- {f}")).collect::<Vec<_>>().join("\n"),
        lab.logs()
    );
    lab.finish();
}
