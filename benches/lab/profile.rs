//! The profile behind figure 2: ftpgate's system calls per GiB, counted by `strace -c -f`
//! attached to it for one extra RETR and one extra STOR per ftpgate path. strace slows the
//! process it watches, so these transfers are not timed; the counts do not depend on the
//! machine's load the way throughput does, and say where ftpgate's CPU time goes.

use super::bulk::{bulk_bytes, curl_quiet, GIB};
use super::lab::servers::{LAB_PASS, LAB_USER};
use super::lab::{self, SERVER4};
use super::report::strace_counts;
use super::setup::PathLab;
use std::fs;
use std::time::Duration;

/// System calls per GiB of one direction: (name, calls) by count, the total first.
pub type Counts = Vec<(String, f64)>;

#[derive(Default)]
pub struct Syscalls {
    pub retr: Counts,
    pub stor: Counts,
}

/// Counts ftpgate's system calls over one RETR and one STOR of the bulk file; `None` (with the
/// reason) when strace is missing or the transfer fails.
pub fn syscalls(l: &mut PathLab, big: &super::bulk::BigFile) -> Result<Syscalls, String> {
    let Some(pid) = l.gate else { return Err("no ftpgate in this path".into()) };
    if lab::sh(&["sh", "-c", "command -v strace"]).is_err() {
        return Err("strace is not installed (apt-get install strace)".into());
    }
    let gib = bulk_bytes() as f64 / GIB as f64;
    let mut one = |download: bool, seq: usize| -> Result<Counts, String> {
        let name = format!("strace-{seq}");
        let out = l.lab.dir.path().join(format!("{name}.txt"));
        let fw = l.lab.fw_ns.clone();
        let argv: Vec<String> =
            ["strace", "-c", "-f", "-o", out.to_str().unwrap(), "-p", &pid.to_string()].map(String::from).to_vec();
        let (tracer, log) = l.lab.spawn(&name, &fw, &argv);
        lab::eventually(Duration::from_secs(10), "strace to attach", || {
            fs::read_to_string(&log).is_ok_and(|t| t.contains("attached"))
        });
        let moved = if download {
            curl_quiet(&l.lab, &["-o", "/dev/null", &format!("ftp://{SERVER4}/gig.bin")])
        } else {
            let url = format!("ftp://{LAB_USER}:{LAB_PASS}@{SERVER4}/strace-{seq}.bin");
            let r = curl_quiet(&l.lab, &["-T", big.path.to_str().unwrap(), &url]);
            let _ = fs::remove_file(l.tree.upload.join(format!("strace-{seq}.bin")));
            r
        };
        // strace writes its summary when interrupted; reap waits (bounded) for that.
        let _ = lab::sh(&["kill", "-INT", &tracer.to_string()]);
        l.lab.reap(&name);
        moved?;
        let text = fs::read_to_string(&out).map_err(|e| format!("strace summary: {e}"))?;
        let counts = strace_counts(&text).ok_or_else(|| format!("no strace summary in: {text}"))?;
        Ok(counts.into_iter().map(|(n, c)| (n, c as f64 / gib)).collect())
    };
    Ok(Syscalls { retr: one(true, 0)?, stor: one(false, 1)? })
}

/// One direction's counts for the report: the total and the five most frequent calls.
pub fn summary(c: &Counts) -> String {
    if c.is_empty() {
        return "n/a".into();
    }
    let top: Vec<String> = c.iter().take(6).map(|(n, v)| format!("{n} {v:.0}")).collect();
    top.join(", ")
}
