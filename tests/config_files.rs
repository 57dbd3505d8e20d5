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
