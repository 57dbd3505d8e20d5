//! What ftpgate does beyond relaying what each peer asked for, proven with real servers and
//! clients through the lab's firewall: data-mode conversion toward servers that allow only one
//! mode, IPv6 clients to IPv4 servers (NAT64 and reverse mixes, EPSV ALL), narrow port ranges
//! and their exhaustion, an advertised outer-NAT address, source port 20, firewall marks and
//! DSCP, and site-to-site transfers between two servers.

mod lab;

use lab::servers::{ServerKind, LAB_PASS, LAB_USER};
use lab::{gate, sha256_file, Lab, LabPath, Tree, FW_C4, FW_C6, SERVER4, SERVER6};
use std::process::Command;

const FTPCLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/ftpclient.py");
const BEYOND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/beyond.py");
const METRICS: &str = "127.0.0.1:9121";
/// A NAT64 network-specific prefix inside the documentation range (RFC 6052 allows any /96).
const NAT64_PREFIX: &str = "2001:db8:64::/96";
/// SERVER4 (198.51.100.2) under NAT64_PREFIX.
const SERVER4_VIA_NAT64: &str = "2001:db8:64::c633:6402";
/// A second server for site-to-site transfers.
const SERVER4_B: &str = "198.51.100.4";

/// A REDIRECT lab with vsftpd (its configuration passed through `edit`) and ftpgate started
/// with `yaml` as its configuration file plus `extra` flags. Returns the ftpgate PID too.
fn lab_with(test: &str, edit: &dyn Fn(String) -> String, yaml: &str, extra: &[&str]) -> Option<(Lab, Tree, u32)> {
    if !gate(test, Some(ServerKind::Vsftpd)) {
        return None;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    // Relay path only: what is proven here needs ftpgate's own data sockets (data-mode
    // conversion, NAT64's change of family, port ranges held by listeners, an advertised
    // address dialled on them, marks and DSCP on them, the port-20 source of the REDIRECT
    // default, a data connection between two servers).
    lab.data_path = lab::DataPath::Relay;
    let tree = Tree::create(lab.dir.path());
    lab.start_server_at(ServerKind::Vsftpd, &tree, &[SERVER4, SERVER6], "vsftpd", edit);
    let config = lab.write("ftpgate.yaml", yaml);
    let mut args = vec!["--metrics-listen", METRICS, "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let pid = lab.start_ftpgate(&args)[0];
    Some((lab, tree, pid))
}

fn unchanged(conf: String) -> String {
    conf
}

/// ftplib RETR of small.bin from `host` in `mode` (plus `extra` flags): success and checksum
/// asserted; returns the client's output.
fn ftplib_retr(lab: &Lab, tree: &Tree, host: &str, mode: &str, extra: &[&str]) -> String {
    let (ok, out, local) = ftplib(lab, host, mode, "retr", extra);
    assert!(ok, "ftplib {mode} RETR via {host} failed: {out}{}", lab.logs());
    assert_eq!(sha256_file(&local), tree.small_sha, "ftplib {mode} RETR via {host}: checksum");
    std::fs::remove_file(&local).unwrap();
    out
}

/// ftplib STOR of the upload source to `host` in `mode` as the lab user; checksum asserted.
fn ftplib_stor(lab: &Lab, tree: &Tree, host: &str, mode: &str) -> String {
    let name = format!("up-{mode}-{}.bin", host.replace([':', '.'], "_"));
    let argv = [
        "python3",
        FTPCLIENT,
        "--host",
        host,
        "--mode",
        mode,
        "--op",
        "stor",
        "--remote",
        &name,
        "--local",
        tree.upload_file.to_str().unwrap(),
        "--user",
        LAB_USER,
        "--password",
        LAB_PASS,
    ];
    let (ok, out) = lab.client_run(&argv);
    assert!(ok, "ftplib {mode} STOR via {host} failed: {out}{}", lab.logs());
    assert_eq!(sha256_file(&tree.upload.join(&name)), tree.upload_sha, "ftplib {mode} STOR via {host}: checksum");
    out
}

fn ftplib(lab: &Lab, host: &str, mode: &str, op: &str, extra: &[&str]) -> (bool, String, std::path::PathBuf) {
    let local = lab.dir.path().join(format!("got-{mode}-{}.bin", host.replace([':', '.'], "_")));
    let mut argv =
        vec!["python3", FTPCLIENT, "--host", host, "--mode", mode, "--op", op, "--remote", "small.bin", "--local"];
    argv.push(local.to_str().unwrap());
    argv.extend_from_slice(extra);
    let (ok, out) = lab.client_run(&argv);
    (ok, out, local)
}

/// curl RETR of small.bin at `url` with `flags`; checksum asserted.
fn curl_retr(lab: &Lab, tree: &Tree, url: &str, flags: &[&str]) {
    let local = lab.dir.path().join("curl-got.bin");
    let mut argv = vec!["curl", "-sS", "--fail", "-g", "--max-time", "60", "-o", local.to_str().unwrap()];
    argv.extend_from_slice(flags);
    argv.push(url);
    let (ok, out) = lab.client_run(&argv);
    assert!(ok, "curl {flags:?} {url} failed: {out}{}", lab.logs());
    assert_eq!(sha256_file(&local), tree.small_sha, "curl {flags:?} {url}: checksum");
    std::fs::remove_file(&local).unwrap();
}

/// What the lab's vsftpd logged of the commands it received (instance `i`).
fn server_log(lab: &Lab, run: &str, i: usize) -> String {
    std::fs::read_to_string(lab.dir.path().join(format!("run-{run}/vsftpd-{i}/vsftpd.log"))).unwrap_or_default()
}

#[test]
fn active_clients_reach_a_server_that_allows_only_passive_mode() {
    let no_port = |c: String| c.replace("port_enable=YES", "port_enable=NO");
    let Some((lab, tree, pid)) = lab_with("data mode passive", &no_port, "server_data_mode: client\n", &[]) else {
        return;
    };
    // As the client asked: the server refuses PORT, so the transfer fails.
    let (ok, out, _) = ftplib(&lab, SERVER4, "port", "retr", &[]);
    assert!(!ok, "the server was meant to refuse active mode: {out}");
    lab.reload_config(pid, "server_data_mode: passive\n");
    let port = ftplib_retr(&lab, &tree, SERVER4, "port", &[]);
    assert!(port.contains("MODE PORT"), "{port}");
    ftplib_retr(&lab, &tree, SERVER6, "eprt", &[]);
    ftplib_stor(&lab, &tree, SERVER4, "port");
    curl_retr(&lab, &tree, &format!("ftp://{SERVER4}/small.bin"), &["-P", "-"]);
    curl_retr(&lab, &tree, &format!("ftp://{SERVER4}/small.bin"), &["-P", "-", "--disable-eprt"]);
    let converted = lab.log_of("ftpgate").matches("client active mode carried out in passive mode").count();
    assert_eq!(converted, 5, "{}", lab.logs());
    lab.finish();
}

#[test]
fn passive_clients_reach_a_server_that_allows_only_active_mode() {
    let no_pasv = |c: String| c.replace("pasv_enable=YES", "pasv_enable=NO");
    let Some((lab, tree, pid)) = lab_with("data mode active", &no_pasv, "server_data_mode: client\n", &[]) else {
        return;
    };
    let (ok, out, _) = ftplib(&lab, SERVER4, "pasv", "retr", &[]);
    assert!(!ok, "the server was meant to refuse passive mode: {out}");
    lab.reload_config(pid, "server_data_mode: active\nactive:\n  ports: 45000-45999\n");
    ftplib_retr(&lab, &tree, SERVER4, "pasv", &[]);
    ftplib_retr(&lab, &tree, SERVER6, "epsv", &[]);
    ftplib_stor(&lab, &tree, SERVER4, "epsv");
    curl_retr(&lab, &tree, &format!("ftp://{SERVER4}/small.bin"), &[]);
    curl_retr(&lab, &tree, &format!("ftp://{SERVER4}/small.bin"), &["--disable-epsv"]);
    let converted = lab.log_of("ftpgate").matches("client passive mode carried out in active mode").count();
    assert_eq!(converted, 5, "{}", lab.logs());
    // The server was sent ftpgate's own address in the configured active range.
    let log = server_log(&lab, "vsftpd", 0);
    assert!(log.contains("PORT 198,51,100,1,17"), "{log}");
    lab.finish();
}

#[test]
fn ipv6_clients_reach_an_ipv4_server_through_nat64() {
    let yaml = format!("nat64_prefix: {NAT64_PREFIX}\n");
    let Some((lab, tree, _)) = lab_with("nat64", &unchanged, &yaml, &[]) else { return };
    let out = ftplib_retr(&lab, &tree, SERVER4_VIA_NAT64, "epsv", &["--epsv-all"]);
    assert!(out.contains("EPSV-ALL 200"), "{out}");
    assert!(out.contains("EPSV-ALL-REFUSED PASV 5") && out.contains("EPSV-ALL-REFUSED PORT 5"), "{out}");
    ftplib_retr(&lab, &tree, SERVER4_VIA_NAT64, "eprt", &[]);
    ftplib_stor(&lab, &tree, SERVER4_VIA_NAT64, "epsv");
    curl_retr(&lab, &tree, &format!("ftp://[{SERVER4_VIA_NAT64}]/small.bin"), &[]);
    curl_retr(&lab, &tree, &format!("ftp://[{SERVER4_VIA_NAT64}]/small.bin"), &["-P", "-"]);
    // The IPv4 server only ever heard IPv4 commands from the firewall.
    let log = server_log(&lab, "vsftpd", 0);
    assert!(log.contains("\"PASV\"") && log.contains("\"PORT 198,51,100,1,"), "{log}");
    assert!(!log.contains("EPSV") && !log.contains("EPRT"), "{log}");
    assert!(server_log(&lab, "vsftpd", 1).lines().all(|l| !l.contains("CONNECT")), "nothing reached the IPv6 server");
    lab.finish();
}

#[test]
fn reverse_mode_joins_either_family_to_the_other() {
    let Some((mut lab, tree)) = lab::with_server("reverse mixes", LabPath::Reverse, ServerKind::Vsftpd) else { return };
    let fw = lab.fw_ns.clone();
    let bin = lab.bin.to_str().unwrap().to_owned();
    let six_to_four = [bin.as_str(), "--listen", "[2001:db8:1::1]:21", "--upstream", "198.51.100.2:21"];
    let four_to_six = [
        bin.as_str(),
        "--listen",
        "203.0.113.1:21",
        "--upstream",
        "[2001:db8:2::2]:21",
        "--passive-ports",
        "51000-51999",
    ];
    for (name, argv) in [("six-to-four", &six_to_four[..]), ("four-to-six", &four_to_six[..])] {
        lab.spawn(name, &fw, &argv.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    lab.wait_listening(&fw, FW_C6, 21);
    lab.wait_listening(&fw, FW_C4, 21);
    for mode in ["epsv", "eprt"] {
        ftplib_retr(&lab, &tree, FW_C6, mode, &[]);
    }
    ftplib_stor(&lab, &tree, FW_C6, "eprt");
    curl_retr(&lab, &tree, &format!("ftp://[{FW_C6}]/small.bin"), &[]);
    for mode in ["pasv", "port"] {
        ftplib_retr(&lab, &tree, FW_C4, mode, &[]);
    }
    ftplib_stor(&lab, &tree, FW_C4, "pasv");
    curl_retr(&lab, &tree, &format!("ftp://{FW_C4}/small.bin"), &["--disable-epsv"]);
    let (v4, v6) = (server_log(&lab, "vsftpd", 0), server_log(&lab, "vsftpd", 1));
    assert!(v4.contains("\"PASV\"") && v4.contains("\"PORT "), "the IPv4 server: {v4}");
    assert!(v6.contains("\"EPSV\"") && v6.contains("\"EPRT |2|"), "the IPv6 server: {v6}");
    lab.finish();
}

#[test]
fn narrow_port_ranges_run_out_with_425_and_a_metric() {
    let extra = ["--passive-ports", "50000-50000", "--active-ports", "45000-45000"];
    let Some((lab, _tree, _)) = lab_with("port ranges", &unchanged, "", &extra) else { return };
    let (ok, out) = lab.client_run(&["python3", BEYOND, "exhaust", SERVER4]);
    assert!(ok, "{out}{}", lab.logs());
    for want in ["ONE-PASV 227", "TWO-PASV 425", "TWO-PORT 200", "ONE-PORT 425", "ONE-NOOP 200"] {
        assert!(out.contains(want), "expected {want}: {out}");
    }
    assert_eq!(lab.rejections(METRICS, "port_exhausted"), 2);
    // The server was told ftpgate's one active port (45000 = 175 * 256 + 200).
    let log = server_log(&lab, "vsftpd", 0);
    assert!(log.contains("PORT 198,51,100,1,175,200"), "{log}");
    assert!(lab.log_of("ftpgate").contains("no free port in 50000-50000"), "{}", lab.logs());
    lab.finish();
}

#[test]
fn clients_behind_an_outer_nat_are_told_its_address() {
    let outer = "203.0.113.50";
    let Some((lab, tree, _)) = lab_with("advertise", &unchanged, "", &["--passive-advertise", outer]) else {
        return;
    };
    // The client's own namespace plays the outer NAT: the advertised address leads to the firewall.
    let rules = lab.write(
        "outer-nat.nft",
        &format!(
            "table ip outernat {{\n chain out {{\n  type nat hook output priority -100; policy accept;\n  \
             ip daddr {outer} tcp dport 50000-50999 dnat to {FW_C4}\n }}\n}}\n"
        ),
    );
    lab.exec_ok(&lab.client_ns, &["nft", "-f", rules.to_str().unwrap()]);
    let out = ftplib_retr(&lab, &tree, SERVER4, "pasv", &["--use-227-host"]);
    assert!(out.contains(&format!("PASV-HOST {outer}")), "{out}");
    lab.finish();
}

#[test]
fn active_data_leaves_from_port_20_when_asked_and_start_up_checks_the_privilege() {
    let yaml = "active:\n  source_port_20: true\n";
    let Some((lab, tree, _)) = lab_with("source port 20", &unchanged, yaml, &[]) else { return };
    let out = ftplib_retr(&lab, &tree, SERVER4, "port", &[]);
    assert!(out.contains(&format!("DATA-PEER {FW_C4} 20\n")), "{out}");
    let out = ftplib_retr(&lab, &tree, SERVER6, "eprt", &[]);
    assert!(out.contains(&format!("DATA-PEER {FW_C6} 20\n")), "{out}");
    // Without CAP_NET_BIND_SERVICE the same configuration is refused at start-up.
    let config = lab.dir.path().join("ftpgate.yaml");
    let refused = Command::new("ip")
        .args(["netns", "exec", &lab.fw_ns, "setpriv", "--bounding-set", "-net_bind_service", "--"])
        .args([lab.bin.to_str().unwrap(), "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("`active.source_port_20` needs CAP_NET_BIND_SERVICE"), "{stderr}");
    lab.finish();
}

#[test]
fn marks_and_dscp_tag_control_and_data_connections() {
    let yaml = "shaping:\n  control: {mark: 0x10, dscp: 10}\n  data: {mark: 0x20, dscp: 8}\n";
    let Some((lab, tree, _)) = lab_with("marks and dscp", &unchanged, yaml, &[]) else { return };
    let server_data = format!("tcp dport {}-{}", lab::SERVER_PASV.0, lab::SERVER_PASV.1);
    let watch = lab.write(
        "shapewatch.nft",
        &format!(
            "table inet shapewatch {{\n\
             counter control {{}}\n counter control_untagged {{}}\n\
             counter data {{}}\n counter data_untagged {{}}\n counter data6 {{}}\n counter to_client {{}}\n\
             chain out {{\n  type filter hook output priority 0; policy accept;\n\
               ip daddr {SERVER4} tcp dport 21 meta mark 0x10 ip dscp 10 counter name control\n\
               ip daddr {SERVER4} tcp dport 21 meta mark != 0x10 counter name control_untagged\n\
               ip daddr {SERVER4} {server_data} meta mark 0x20 ip dscp 8 counter name data\n\
               ip daddr {SERVER4} {server_data} meta mark != 0x20 counter name data_untagged\n\
               ip6 daddr {SERVER6} {server_data} meta mark 0x20 ip6 dscp 8 counter name data6\n\
               ip daddr 203.0.113.2 tcp sport 50000-50999 meta mark 0x20 ip dscp 8 counter name to_client\n\
             }}\n}}\n"
        ),
    );
    lab.exec_ok(&lab.fw_ns, &["nft", "-f", watch.to_str().unwrap()]);
    ftplib_retr(&lab, &tree, SERVER4, "pasv", &[]);
    ftplib_retr(&lab, &tree, SERVER6, "epsv", &[]);
    let count = |name: &str| lab.counter(&lab.fw_ns, "shapewatch", name);
    assert!(count("control") > 0 && count("data") > 0 && count("data6") > 0 && count("to_client") > 0);
    assert_eq!((count("control_untagged"), count("data_untagged")), (0, 0), "every packet ftpgate sent is tagged");
    lab.finish();
}

#[test]
fn a_client_drives_a_site_to_site_transfer_between_two_servers() {
    let yaml = "policy:\n  fxp:\n    - {client: 203.0.113.0/24, data: 198.51.100.0/24}\n";
    let Some((mut lab, tree, _)) = lab_with("fxp", &unchanged, yaml, &[]) else { return };
    let server_ns = lab.server_ns.clone();
    lab.exec_ok(&server_ns, &["ip", "addr", "add", &format!("{SERVER4_B}/24"), "dev", "eth0"]);
    lab.start_server_at(ServerKind::Vsftpd, &tree, &[SERVER4_B], "vsftpd-b", &unchanged);
    // Server A stores what server B sends; the client only steers.
    let (ok, out) =
        lab.client_run(&["python3", BEYOND, "fxp", SERVER4, SERVER4_B, LAB_USER, LAB_PASS, "small.bin", "fxp.bin"]);
    assert!(ok, "{out}{}", lab.logs());
    assert!(out.contains("B-DONE 226") && out.contains("A-DONE 226"), "{out}");
    assert_eq!(sha256_file(&tree.upload.join("fxp.bin")), tree.small_sha, "the copy on server A");
    let log = lab.log_of("ftpgate");
    assert!(log.contains("FXP: data address is a passive endpoint of this gateway"), "{log}");
    assert!(log.contains("handed over to a site-to-site transfer"), "{log}");
    lab.finish();
}
