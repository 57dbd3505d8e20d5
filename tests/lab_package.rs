//! The installed Debian package through the lab: /usr/sbin/ftpgate with the installed
//! /etc/ftpgate/ftpgate.yaml, run as the package's unprivileged user as its unit runs it, behind
//! the installed REDIRECT rules (/usr/share/ftpgate/nftables/), moves files both ways, each
//! checked by SHA-256 and by the path the server saw.
//!
//! It needs the package installed: `deploy/debian/check.sh` (build, lintian, install, this
//! test, purge) or `deploy/debian/check.sh install` first. CI installs the package before the
//! test suite and purges it after; under FTPGATE_LAB=require a missing package fails the test.

mod lab;

use lab::clients::{run_case, Case, Client, Mode, Op};
use lab::servers::ServerKind;
use lab::{Family, Lab, LabPath, PROXY_PORT};
use std::path::PathBuf;

const BIN: &str = "/usr/sbin/ftpgate";
const CONFIG: &str = "/etc/ftpgate/ftpgate.yaml";
const RULES: &str = "/usr/share/ftpgate/nftables";
const REDIRECT_RULES: &str = "/usr/share/ftpgate/nftables/ftpgate-redirect.nft";

/// The `Uid:` line of /proc/PID/status: real, effective, saved, filesystem.
fn uids(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn installed_package_relays_files_through_installed_redirect_rules() {
    if !lab::gate("package", Some(ServerKind::Vsftpd))
        || !lab::gate_files(
            "package",
            &[BIN, CONFIG, REDIRECT_RULES],
            "the package is not installed: run `sudo deploy/debian/check.sh install`, or build it with \
             deploy/debian/build.sh and `apt install ./target/debian/ftpgate_*.deb`",
        )
    {
        return;
    }
    let uid = lab::sh(&["id", "-u", "ftpgate"]).expect("the package's postinst made the user ftpgate");
    let mut lab = Lab::with_files(LabPath::Redirect, PathBuf::from(BIN), PathBuf::from(RULES));
    let tree = lab.start_server(ServerKind::Vsftpd);
    // As the unit runs it: the installed configuration, the package's user, no capability.
    let argv: Vec<String> =
        ["setpriv", "--reuid", "ftpgate", "--regid", "ftpgate", "--clear-groups", "--inh-caps=-all"]
            .into_iter()
            .chain([BIN, "--config", CONFIG])
            .map(str::to_owned)
            .collect();
    let fw = lab.fw_ns.clone();
    let (pid, _) = lab.spawn("ftpgate", &fw, &argv);
    lab.wait_listening(&fw, "0.0.0.0", PROXY_PORT);
    let want = [uid.trim(); 4].join(" ");
    assert_eq!(uids(pid), want, "ftpgate does not run as the package's user ftpgate");
    let cases = [
        Case { client: Client::Curl, mode: Mode::Pasv, family: Family::V4, op: Op::RetrLarge },
        Case { client: Client::Curl, mode: Mode::Eprt, family: Family::V4, op: Op::Stor },
        Case { client: Client::Python, mode: Mode::Epsv, family: Family::V6, op: Op::RetrSmall },
        Case { client: Client::Lftp, mode: Mode::Port, family: Family::V4, op: Op::RetrSmall },
    ];
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, case)| run_case(&lab, &tree, case, i).err().map(|e| format!("[{}] {e}", case.label())))
        .collect();
    assert!(failures.is_empty(), "through the installed package:\n{}\n{}", failures.join("\n"), lab.logs());
    let log = lab.log_of("ftpgate");
    assert!(!log.contains("running as root"), "{log}");
    println!(
        "installed {BIN} (as user ftpgate, {CONFIG}) behind {REDIRECT_RULES}: {} transfers, SHA-256 checked",
        cases.len()
    );
    lab.finish();
}
