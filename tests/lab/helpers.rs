//! Small helpers of the lab: commands run from the root namespace, bounded polling, file modes.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command, failing with its output when it fails.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out =
        Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn must(args: &[&str]) -> String {
    sh(args).unwrap_or_else(|e| panic!("lab setup: {e}"))
}

pub(super) fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Bounded poll (within `limit`, 50 ms apart) for something another process does, which
/// cannot be awaited from the test.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat; `None` once it
/// is gone.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    Some(ticks as f64 / per_sec as f64)
}

/// The xferlog(5) fields of each line of a transfer log: [7] bytes, [8] path, [11] direction,
/// [17] completion.
pub fn xferlog_rows(path: &Path) -> Vec<Vec<String>> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
}

/// The value of `name=` in one of ftpgate's log lines (quotes taken off).
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[at..];
    let end =
        if let Some(q) = rest.strip_prefix('"') { q.find('"')? + 2 } else { rest.find(' ').unwrap_or(rest.len()) };
    Some(rest[..end].trim_matches('"'))
}
