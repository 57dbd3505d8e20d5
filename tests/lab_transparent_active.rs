//! Transparent active mode: a client that sent PORT/EPRT to a server gets the data connection
//! from that server's address, as clients that check it require ("data connection did not
//! originate from the same IP address as control"), in REDIRECT and TPROXY mode, IPv4 and IPv6;
//! in reverse mode from ftpgate, which the client dialled. The client here is ftplib with that
//! check turned on (`--same-peer`); every transfer is compared by checksum.

mod lab;

use lab::servers::{ServerKind, LAB_PASS, LAB_USER};
use lab::{gate, sha256_file, DataPath, Lab, LabPath, Tree, FW_C4, FW_C6, SERVER4, SERVER6};
use std::process::Command;

const FTPCLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/ftpclient.py");
const REFUSED: &str = "did not originate from the same IP address as control";

/// A lab on `path` with vsftpd, and ftpgate started with `yaml` as its configuration on
/// `data_path`.
fn lab_with(test: &str, path: LabPath, yaml: &str, data_path: DataPath) -> Option<(Lab, Tree)> {
    if !gate(test, Some(ServerKind::Vsftpd)) {
        return None;
    }
    let mut lab = Lab::new(path);
    lab.data_path = data_path;
    let tree = lab.start_server(ServerKind::Vsftpd);
    let config = lab.write("ftpgate.yaml", yaml);
    lab.start_ftpgate(&["--config", config.to_str().unwrap()]);
    Some((lab, tree))
}

/// One ftplib transfer in active `mode` with the same-peer check; `op` is retr (small.bin) or
/// stor (the upload source). Returns whether it succeeded, its output and where the data went.
fn strict(lab: &Lab, tree: &Tree, host: &str, mode: &str, op: &str) -> (bool, String, std::path::PathBuf) {
    let tag = format!("{mode}-{op}-{}", host.replace([':', '.'], "_"));
    let (remote, local) = match op {
        "retr" => ("small.bin".to_owned(), lab.dir.path().join(format!("got-{tag}.bin"))),
        _ => (format!("up-{tag}.bin"), tree.upload_file.clone()),
    };
    let local_s = local.to_str().unwrap().to_owned();
    let mut argv = vec!["python3", FTPCLIENT, "--host", host, "--mode", mode, "--op", op, "--same-peer"];
    argv.extend(["--remote", &remote, "--local", &local_s]);
    if op == "stor" {
        argv.extend(["--user", LAB_USER, "--password", LAB_PASS]);
    }
    let (ok, out) = lab.client_run(&argv);
    let landed = if op == "retr" { local } else { tree.upload.join(&remote) };
    (ok, out, landed)
}

/// Every active case, each asserted to succeed with the data connection from `peer4`/`peer6`
/// (and `port`, when given) and the file intact. `host4`/`host6` are what the client dials.
fn all_active_cases(lab: &Lab, tree: &Tree, hosts: (&str, &str), peers: (&str, &str), port: Option<u16>) {
    let cases = [
        (hosts.0, peers.0, "port", "retr"),
        (hosts.0, peers.0, "eprt", "retr"),
        (hosts.1, peers.1, "eprt", "retr"),
        (hosts.0, peers.0, "port", "stor"),
        (hosts.1, peers.1, "eprt", "stor"),
    ];
    for (host, peer, mode, op) in cases {
        let (ok, out, landed) = strict(lab, tree, host, mode, op);
        let what = format!("{mode} {op} via {host}");
        assert!(ok, "{what} failed: {out}{}", lab.logs());
        let want = match port {
            Some(p) => format!("DATA-PEER {peer} {p}\n"),
            None => format!("DATA-PEER {peer} "),
        };
        assert!(out.contains(&want), "{what}: the data connection must come from {peer}: {out}");
        let sha = if op == "retr" { &tree.small_sha } else { &tree.upload_sha };
        assert_eq!(&sha256_file(&landed), sha, "{what}: checksum");
        std::fs::remove_file(&landed).unwrap();
    }
}

#[test]
fn redirect_mode_with_source_original_connects_from_the_server() {
    let yaml = "active:\n  source: original\n";
    let Some((lab, tree)) = lab_with("transparent active, redirect", LabPath::Redirect, yaml, DataPath::from_env())
    else {
        return;
    };
    all_active_cases(&lab, &tree, (SERVER4, SERVER6), (SERVER4, SERVER6), None);
    assert!(!lab.log_of("ftpgate").contains("active.source: original for transparent"), "{}", lab.logs());
    lab.finish();
}

#[test]
fn tproxy_mode_connects_from_the_server_by_default_and_from_its_port_20_when_asked() {
    let yaml = "active:\n  source_port_20: true\n";
    let Some((lab, tree)) = lab_with("transparent active, tproxy", LabPath::Tproxy, yaml, DataPath::from_env()) else {
        return;
    };
    all_active_cases(&lab, &tree, (SERVER4, SERVER6), (SERVER4, SERVER6), Some(20));
    lab.finish();
}

#[test]
fn redirect_mode_by_default_connects_from_the_gateway_and_says_how_to_change_it() {
    // The relay's default: on the kernel data path the kernel forwards an active connection
    // from the server's address in every mode (tests/lab_kernel_path.rs).
    let test = "transparent active, redirect default";
    let Some((lab, tree)) = lab_with(test, LabPath::Redirect, "", DataPath::Relay) else { return };
    // The check is real: a strict client refuses the gateway's address, in both families.
    for (host, fw, mode) in [(SERVER4, FW_C4, "port"), (SERVER6, FW_C6, "eprt")] {
        let (ok, out, _) = strict(&lab, &tree, host, mode, "retr");
        assert!(!ok && out.contains(REFUSED), "{mode} via {host}: a strict client must refuse: {out}");
        assert!(out.contains(&format!("DATA-PEER {fw} ")), "{out}");
    }
    let log = lab.log_of("ftpgate");
    assert_eq!(log.matches("Set active.source: original for transparent active mode").count(), 1, "{log}");
    lab.finish();
}

#[test]
fn reverse_mode_connects_from_ftpgate_which_the_client_dialled() {
    let Some((lab, tree)) = lab_with("transparent active, reverse", LabPath::Reverse, "", DataPath::from_env()) else {
        return;
    };
    all_active_cases(&lab, &tree, (FW_C4, FW_C6), (FW_C4, FW_C6), None);
    lab.finish();
}

#[test]
fn source_original_without_cap_net_admin_is_refused_at_start_up() {
    if !gate("transparent active, privilege", None) {
        return;
    }
    let lab = Lab::new(LabPath::Redirect);
    let config = lab.write("ftpgate.yaml", "active:\n  source: original\n");
    let refused = Command::new("ip")
        .args(["netns", "exec", &lab.fw_ns, "setpriv", "--bounding-set", "-net_admin,-net_raw", "--"])
        .args([lab.bin.to_str().unwrap(), "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("`active.source` needs CAP_NET_ADMIN"), "{stderr}");
    lab.finish();
}
