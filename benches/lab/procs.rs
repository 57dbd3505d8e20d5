//! What the bench learns from processes: from /proc (ftpgate's CPU time, memory and open-file
//! limit, the machine's CPU load), and from its own load generators, the bench binary
//! re-executed in a lab namespace and talked to over pipes.

use super::report::{self, line_with};
use std::fs;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n    ")
}

pub fn machine_jiffies() -> Option<(u64, u64)> {
    report::cpu_jiffies(&fs::read_to_string("/proc/stat").ok()?)
}

pub fn loadavg() -> Option<f64> {
    report::loadavg1(&fs::read_to_string("/proc/loadavg").ok()?)
}

fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |v| v as f64)
}

pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(report::stat_cpu_ticks(&stat)? as f64 / clk_tck())
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    report::status_kib(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmRSS")
}

pub fn nofile_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| report::limits_nofile(&l))
        .unwrap_or_else(|| "unknown".into())
}

pub fn loadgen_result(out: &str, what: &str) -> Result<String, String> {
    for e in out.lines().filter(|l| l.starts_with("ERROR ")) {
        progress!("{what}: load generator saw: {}", &e[6..]);
    }
    line_with(out, "RESULT ")
        .map(str::to_owned)
        .ok_or_else(|| format!("{what}: no result from the load generator:\n    {}", tail(out, 15)))
}

/// A process of ours in a lab namespace that talks over pipes: killed by its PID if still
/// running when dropped (also on panic).
pub struct Interactive {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Interactive {
    pub fn spawn(ns: &str, argv: &[&str]) -> Interactive {
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
    pub fn until(&self, prefix: &str, limit: Duration) -> Result<Vec<String>, String> {
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
    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.child.stdin.as_mut().ok_or("the load generator's stdin is closed")?;
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).map_err(|e| format!("write to the load generator: {e}"))
    }

    /// Closes its stdin and waits (bounded) for it to exit.
    pub fn finish(&mut self, limit: Duration) -> bool {
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

pub fn machine() -> String {
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
