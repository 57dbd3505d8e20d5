//! The Debian package's metadata (Cargo.toml `[package.metadata.deb]`) against the tree: every
//! shipped file exists, every rule file, deployment file and unit drop-in is shipped, the unit
//! starts the binary where the package puts it and is installed disabled, the changelog's
//! version is the crate's, and the maintainer scripts have what cargo-deb needs. The package
//! itself is built, checked with lintian, installed and purged by deploy/debian/check.sh.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn deb() -> toml::Table {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let deb = manifest.get("package").and_then(|p| p.get("metadata")).and_then(|m| m.get("deb"));
    deb.and_then(|d| d.as_table()).expect("Cargo.toml has [package.metadata.deb]").clone()
}

/// The assets as (source, destination, mode).
fn assets() -> Vec<(String, String, String)> {
    deb()["assets"]
        .as_array()
        .expect("assets is a list")
        .iter()
        .map(|a| {
            let f: Vec<&str> = a.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

/// Whether `rel` (a file of the tree) is the source, or matches the `dir/*suffix` glob, of an asset.
fn shipped(rel: &str) -> bool {
    assets().iter().any(|(src, _, _)| match src.split_once('*') {
        Some((prefix, suffix)) => {
            rel.starts_with(prefix) && rel.ends_with(suffix) && !rel[prefix.len()..].contains('/')
        }
        None => src == rel,
    })
}

/// The files of a folder of the tree, as paths relative to the root.
fn files_in(dir: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else { return Vec::new() };
    let mut v: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
        .collect();
    v.sort();
    v
}

#[test]
fn every_asset_source_exists_and_generated_ones_are_what_generate_writes() {
    for (src, dest, mode) in assets() {
        assert!(mode == "644" || mode == "755", "{src}: mode {mode}");
        assert!(!dest.starts_with('/'), "{src}: destinations are relative to the package root: {dest}");
        if let Some(name) = src.strip_prefix("target/assets/") {
            assert!(["ftpgate.8", "ftpgate.bash", "_ftpgate"].contains(&name), "ftpgate --generate writes no {name}");
        } else if src == "target/release/ftpgate" {
            assert_eq!(dest, "usr/sbin/");
        } else if let Some((dir, suffix)) = src.split_once("/*") {
            assert!(files_in(dir).iter().any(|f| f.ends_with(suffix)), "{src} matches no file");
        } else {
            assert!(root().join(&src).is_file(), "{src} does not exist");
        }
    }
}

#[test]
fn every_rule_file_deployment_file_and_unit_drop_in_is_shipped() {
    let drop_ins = files_in("deploy/ftpgate.service.d");
    for f in ["nftables", "pf-anchors", "deploy/grafana", "deploy/prometheus"]
        .iter()
        .flat_map(|d| files_in(d))
        .chain(drop_ins.clone())
    {
        assert!(shipped(&f), "{f} is not in Cargo.toml's [package.metadata.deb] assets");
    }
    // Each drop-in grants a capability: shipped for the admin to copy, never active by default.
    for f in drop_ins.iter().filter(|f| f.ends_with(".conf")) {
        let name = Path::new(f).file_name().unwrap().to_str().unwrap();
        let dest = format!("usr/share/ftpgate/systemd/{name}");
        assert!(
            assets().iter().any(|(src, d, _)| src == f && (d == &dest || d == "usr/share/ftpgate/systemd/")),
            "{f} must go to /{dest}"
        );
    }
    assert!(
        !assets().iter().any(|(_, d, _)| d.contains("ftpgate.service.d")),
        "no capability drop-in may be installed active"
    );
    let conf = assets().into_iter().find(|(src, _, _)| src == "examples/ftpgate.yaml").expect("the configuration");
    assert_eq!(conf.1, "etc/ftpgate/", "the configuration is /etc/ftpgate/ftpgate.yaml (a conffile, being in /etc)");
}

#[test]
fn the_unit_starts_the_packaged_binary_and_is_installed_disabled() {
    let unit = read("deploy/ftpgate.service");
    for key in ["ExecStartPre=", "ExecStart="] {
        let line = unit.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
        assert!(line[key.len()..].starts_with("/usr/sbin/ftpgate "), "{line}");
    }
    assert!(unit.contains("Documentation=man:ftpgate(8)"), "systemd-analyze verify checks the page it names");
    let units = deb()["systemd-units"].as_table().expect("systemd-units").clone();
    assert_eq!(units["unit-scripts"].as_str(), Some("deploy/"), "the unit is installed from deploy/ftpgate.service");
    assert_eq!(units["enable"].as_bool(), Some(false), "the site's rules come first: not enabled on install");
    assert_eq!(units["start"].as_bool(), Some(false), "not started on install");
}

#[test]
fn changelog_version_is_the_crates_and_scripts_take_the_generated_parts() {
    let changelog = read("deploy/debian/changelog");
    let first = changelog.lines().next().unwrap();
    let want = format!("ftpgate ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(first.starts_with(&want), "deploy/debian/changelog starts `{first}`, want `{want}...`");
    assert_eq!(deb()["changelog"].as_str(), Some("deploy/debian/changelog"));
    assert_eq!(deb()["maintainer-scripts"].as_str(), Some("deploy/debian/"));
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let Ok(text) = std::fs::read_to_string(root().join("deploy/debian").join(script)) else { continue };
        assert!(text.starts_with("#!/bin/sh\nset -e\n"), "{script}: #!/bin/sh and set -e first");
        assert!(text.contains("\n#DEBHELPER#\n"), "{script}: cargo-deb inserts the unit's parts at #DEBHELPER#");
    }
    let postinst = read("deploy/debian/postinst");
    assert!(postinst.contains("adduser --system --group"), "postinst makes the system user");
    assert!(deb()["depends"].as_str().unwrap().split(", ").any(|d| d == "adduser"), "postinst needs adduser");
}
