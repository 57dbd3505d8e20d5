//! Every shipped example configuration parses and validates, and the binary's own
//! --check-config agrees.

use ftpgate::config::{parse_raw, validate};
use std::path::PathBuf;
use std::process::Command;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_validates() {
    let files = examples();
    assert!(files.len() >= 3, "examples missing: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let raw = parse_raw(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        validate(&raw).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let out = Command::new(env!("CARGO_BIN_EXE_ftpgate")).arg("--check-config").arg(&f).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn the_documented_example_spells_out_the_defaults() {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ftpgate.yaml");
    let raw = parse_raw(&std::fs::read_to_string(f).unwrap()).unwrap();
    assert_eq!(raw, ftpgate::config::RawConfig::default());
}

#[test]
fn a_bad_file_fails_before_binding_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "listen: [\"127.0.0.1:0\"]\npassive:\n  ports: \"10-20\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ftpgate")).arg("--config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("passive.ports") && err.contains("privileged"), "{err}");
    std::fs::write(&f, "listen: [\"127.0.0.1:0\"]\nlimits:\n  max_sesions: 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ftpgate")).arg("--check-config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_sesions"));
}

/// `--check-config` prints YAML that `--config` takes again: parsed back, it is the same
/// configuration, for every shipped example.
#[test]
fn check_config_prints_yaml_that_reads_back_into_the_same_config() {
    for f in examples() {
        let raw = parse_raw(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ftpgate")).arg("--check-config").arg(&f).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).unwrap();
        let again = parse_raw(&printed)
            .unwrap_or_else(|e| panic!("{}: printed YAML does not parse: {e}\n{printed}", f.display()));
        assert_eq!(again, raw, "{}", f.display());
        assert_eq!(validate(&again).unwrap(), validate(&raw).unwrap(), "{}", f.display());
        // Defaults are spelled out, not left implicit.
        for key in ["\nlimits:\n", "  max_sessions: ", "\ntimeouts:\n", "  data_idle: ", "\nadmin:\n"] {
            assert!(printed.contains(key), "{}: {key:?} missing\n{printed}", f.display());
        }
    }
}

#[test]
fn check_config_shows_the_flags_applied() {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ftpgate.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_ftpgate"))
        .args(["--passive-ports", "41000-41999", "--check-config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let raw = parse_raw(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(raw.passive.ports, "41000-41999");
}
