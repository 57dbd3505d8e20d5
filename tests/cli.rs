//! The binary as an admin meets it: start-up failures with clear messages and exit codes, the
//! JSON log format.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The binary under test: `FTPGATE_BIN` when set (another build, an older commit's say), else
/// the one cargo built with the tests.
fn bin() -> String {
    std::env::var("FTPGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ftpgate").to_owned())
}

#[test]
fn port_in_use_exits_3_and_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin()).args(["--listen", &addr, "--upstream", "127.0.0.1:21"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("another process holds this port"), "{err}");
}

#[test]
fn missing_capability_for_tproxy_exits_3_and_names_it() {
    if !Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0")) {
        eprintln!("SKIPPED missing-capability test: needs root to run ftpgate as another user");
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--inh-caps=-all", &bin()])
        .args(["--intercept", "tproxy", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_NET_ADMIN"));
}

#[test]
fn json_log_lines_are_json_objects_with_level_and_message() {
    let mut child = Command::new(bin())
        .args(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:21", "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    // The first line is either the root warning or the listening line; both are objects with a message.
    assert!(v.get("message").is_some() && v.get("level").is_some(), "{v}");
}

/// A timeout far beyond any real session once passed validation, and then every session's
/// deadline arithmetic overflowed (a panic per session). Validation bounds timeouts at 7 days
/// and names the field.
#[test]
fn check_config_refuses_a_timeout_beyond_seven_days_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ftpgate.yaml");
    std::fs::write(&f, "timeouts: {idle: 500000000000y}\n").unwrap();
    let out = Command::new(bin()).arg("--check-config").arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "--check-config accepted idle: 500000000000y; stderr: {err}");
    assert!(err.contains("timeouts.idle") && err.contains("7 days"), "{err}");
    // Just inside the bound is accepted.
    std::fs::write(&f, "timeouts: {idle: 7days, reply: 168h}\n").unwrap();
    let out = Command::new(bin()).arg("--check-config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
