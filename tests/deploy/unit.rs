//! The shipped systemd unit and its drop-ins: no capability in the unit, exactly one in each
//! drop-in, a reload through `systemctl reload`, install steps in the README, and
//! `systemd-analyze verify` on all of it.

use super::systemd;
use super::{read, root};
use std::collections::BTreeSet;

const UNIT: &str = "deploy/ftpgate.service";
const DROP_INS: &str = "deploy/ftpgate.service.d";

/// Each shipped drop-in and the one capability it grants: what TPROXY's transparent sockets, a
/// shaping mark and transparent active connections need (CAP_NET_ADMIN), and what binding port
/// 20 needs (CAP_NET_BIND_SERVICE).
const DROP_IN_CAPS: &[(&str, &str)] = &[
    ("tproxy.conf", "CAP_NET_ADMIN"),
    ("transparent-active.conf", "CAP_NET_ADMIN"),
    ("marks.conf", "CAP_NET_ADMIN"),
    ("source-port-20.conf", "CAP_NET_BIND_SERVICE"),
    ("kernel-path.conf", "CAP_NET_ADMIN"),
];

/// Besides its capability, what a drop-in may change: the kernel data path's netlink socket
/// needs its address family allowed.
const DROP_IN_EXTRA: &[(&str, &str, &str)] = &[("kernel-path.conf", "RestrictAddressFamilies", "AF_NETLINK")];

fn unit_file(rel: &str) -> systemd::UnitFile {
    systemd::parse(rel, &read(rel)).unwrap_or_else(|e| panic!("{e}"))
}

fn caps(files: &[&systemd::UnitFile], key: &str) -> Option<BTreeSet<String>> {
    systemd::capability_set(files, key).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_unit_grants_no_capability_and_each_drop_in_exactly_its_own() {
    let unit = unit_file(UNIT);
    assert_eq!(caps(&[&unit], "AmbientCapabilities").unwrap_or_default(), BTreeSet::new(), "{UNIT}: ambient set");
    // Unset, the bounding set is every capability: the unit must empty it.
    assert_eq!(caps(&[&unit], "CapabilityBoundingSet"), Some(BTreeSet::new()), "{UNIT}: bounding set");
    assert_eq!(unit.last("Service", "DynamicUser"), Some("yes"), "{UNIT} runs as a dynamic user");
    assert_eq!(unit.last("Service", "NoNewPrivileges"), Some("yes"));
    assert_eq!(unit.last("Service", "User"), None, "{UNIT} names a user");

    let mut shipped: Vec<String> = std::fs::read_dir(root().join(DROP_INS))
        .unwrap_or_else(|e| panic!("{DROP_INS}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    let mut expected: Vec<&str> = DROP_IN_CAPS.iter().map(|(f, _)| *f).collect();
    expected.sort();
    assert_eq!(shipped, expected, "the drop-ins in {DROP_INS}");

    let mut all = vec![unit.clone()];
    for (file, cap) in DROP_IN_CAPS {
        let drop_in = unit_file(&format!("{DROP_INS}/{file}"));
        for a in &drop_in.assignments {
            let extra = DROP_IN_EXTRA.iter().any(|(f, k, v)| f == file && *k == a.key && *v == a.value);
            assert!(
                a.section == "Service"
                    && (extra || ["AmbientCapabilities", "CapabilityBoundingSet"].contains(&a.key.as_str())),
                "{file}:{}: a drop-in grants its capability and changes nothing else ({}={})",
                a.line,
                a.key,
                a.value
            );
        }
        let want = BTreeSet::from([cap.to_string()]);
        for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
            assert_eq!(caps(&[&unit, &drop_in], key), Some(want.clone()), "{UNIT} with {file}: {key}");
        }
        all.push(drop_in);
    }
    // Installed together, they add up.
    let refs: Vec<&systemd::UnitFile> = all.iter().collect();
    let union: BTreeSet<String> = DROP_IN_CAPS.iter().map(|(_, c)| c.to_string()).collect();
    assert_eq!(caps(&refs, "AmbientCapabilities"), Some(union));
}

/// `systemctl reload` checks the file the service runs with, then sends SIGHUP (which
/// tests/cli.rs sends to ftpgate run as this unit runs it).
#[test]
fn the_unit_reloads_with_systemctl_reload() {
    let unit = unit_file(UNIT);
    let start = unit.last("Service", "ExecStart").expect("ExecStart");
    let config = start.split_whitespace().skip_while(|a| *a != "--config").nth(1).expect("ExecStart --config FILE");
    let reload: Vec<&str> = unit.values("Service", "ExecReload").map(|a| a.value.as_str()).collect();
    assert_eq!(
        reload,
        [format!("/usr/sbin/ftpgate --check-config {config}").as_str(), "/bin/kill -HUP $MAINPID"],
        "{UNIT}: ExecReload"
    );
}

#[test]
fn the_readme_says_how_to_install_each_drop_in() {
    let readme = read("README.md");
    let start = readme.find("## Installing").expect("README has an Installing section");
    let len = readme[start + 1..].find("\n## ").map_or(readme.len() - start, |n| n + 1);
    let section = &readme[start..start + len];
    for (file, cap) in DROP_IN_CAPS {
        let line = section
            .lines()
            .find(|l| l.contains(&format!("{DROP_INS}/{file}")))
            .unwrap_or_else(|| panic!("the Installing section does not name {DROP_INS}/{file}"));
        assert!(line.contains(&cap.replace("CAP_", "")) || section.contains(cap), "{file}: {cap} not explained");
    }
    for needed in ["/etc/systemd/system/ftpgate.service.d/", "systemctl daemon-reload"] {
        assert!(section.contains(needed), "the Installing section does not say `{needed}`");
    }
}

/// `systemd-analyze verify` on a copy of the unit (its executable paths pointing at the built
/// binary, which verify requires to exist, and without the manual page, which only the package
/// installs: deploy/debian/check.sh verifies the installed unit with it) with the given
/// drop-ins: its diagnostics, empty when systemd finds nothing wrong.
fn systemd_verify(unit: &str, drop_ins: &[(&str, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit.replace("/usr/sbin/ftpgate", env!("CARGO_BIN_EXE_ftpgate")).replace("man:ftpgate(8) ", "");
    std::fs::write(dir.path().join("ftpgate.service"), unit).unwrap();
    let d = dir.path().join("ftpgate.service.d");
    std::fs::create_dir(&d).unwrap();
    for (name, text) in drop_ins {
        std::fs::write(d.join(name), text).unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("ftpgate.service"))
        // Drop-ins are looked up along the unit path; the trailing colon keeps the defaults.
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .expect("systemd-analyze runs");
    let mut diagnostics: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    if !out.status.success() {
        diagnostics.push(format!("systemd-analyze verify: {}", out.status));
    }
    diagnostics.join("\n")
}

#[test]
fn systemd_accepts_the_unit_and_its_drop_ins() {
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_err() {
        let why = "systemd-analyze is not installed (apt-get install systemd; tests/lab/setup.sh does)";
        assert!(std::env::var("FTPGATE_LAB").as_deref() != Ok("require"), "{why}");
        eprintln!("SKIPPED systemd-analyze verify: {why}");
        return;
    }
    let unit = read(UNIT);
    let drop_ins: Vec<(&str, String)> =
        DROP_IN_CAPS.iter().map(|(f, _)| (*f, read(&format!("{DROP_INS}/{f}")))).collect();
    assert_eq!(systemd_verify(&unit, &[]), "", "{UNIT} alone");
    assert_eq!(systemd_verify(&unit, &drop_ins), "", "{UNIT} with every drop-in");
    // The check sees what systemd refuses or ignores.
    let broken = unit.replace("NoNewPrivileges=yes", "NoNewPrivileges=perhaps");
    assert_ne!(broken, unit);
    assert!(systemd_verify(&broken, &[]).contains("perhaps"), "a bad boolean went unnoticed");
    let typo = [("tproxy.conf", "[Service]\nAmbientCapabilites=CAP_NET_ADMIN\n".to_string())];
    assert!(systemd_verify(&unit, &typo).contains("AmbientCapabilites"), "a misspelt key went unnoticed");
}
