//! The binary as an admin meets it: start-up failures with clear messages and exit codes, the
//! JSON log format.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ftpgate");

#[test]
fn port_in_use_exits_3_and_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["--listen", &addr, "--upstream", "127.0.0.1:21"]).output().unwrap();
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
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--inh-caps=-all", BIN])
        .args(["--intercept", "tproxy", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_NET_ADMIN"));
}

#[test]
fn json_log_lines_are_json_objects_with_level_and_message() {
    let mut child = Command::new(BIN)
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
