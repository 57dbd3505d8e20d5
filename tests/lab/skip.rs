//! Whether a lab test can run here: it needs root, the lab's tools and (for most tests) a
//! given FTP server. A lab test that cannot run is skipped with one line, not failed, except
//! under FTPGATE_LAB=require (CI), where a silent skip would hide a broken runner.

use super::helpers::sh;
use super::servers::ServerKind;
use super::servers_dir;
use std::path::Path;
use std::process::{Command, Stdio};

fn required() -> bool {
    std::env::var("FTPGATE_LAB").is_ok_and(|v| v == "require")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a lab test can run here. Without root or the tools, it prints one line and the test
/// returns early; with FTPGATE_LAB=require (CI) it fails instead.
pub fn gate(test: &str, server: Option<ServerKind>) -> bool {
    let mut missing = Vec::new();
    if !sh(&["id", "-u"]).is_ok_and(|u| u.trim() == "0") {
        missing.push("root (network namespaces)".to_owned());
    }
    for tool in ["ip", "nft", "curl", "lftp", "python3", "timeout"] {
        if !have(tool) {
            missing.push(format!("`{tool}`"));
        }
    }
    if let Some(s) = server {
        if let Err(e) = s.available(&servers_dir()) {
            missing.push(e);
        }
    }
    if missing.is_empty() {
        return true;
    }
    let line = format!(
        "SKIPPED lab test {test}: missing {} (run `sudo tests/lab/setup.sh` to install what the lab needs)",
        missing.join(", ")
    );
    if required() {
        panic!("FTPGATE_LAB=require but {line}");
    }
    eprintln!("{line}");
    false
}

/// Whether the files a test takes from outside the tree (an installed package's) are there;
/// like [`gate`], a skip with one line, or a failure under FTPGATE_LAB=require. `hint` says how
/// to get them.
pub fn gate_files(test: &str, files: &[&str], hint: &str) -> bool {
    let missing: Vec<&str> = files.iter().copied().filter(|f| !Path::new(f).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    let line = format!("SKIPPED lab test {test}: missing {} ({hint})", missing.join(", "));
    if required() {
        panic!("FTPGATE_LAB=require but {line}");
    }
    eprintln!("{line}");
    false
}
