//! The login phase with real servers and clients: ftpgate as an explicit forward proxy (lftp's
//! `ftp:proxy`, ftplib with `USER name@host`), passive and active, IPv4 and IPv6, names
//! resolved from a hosts file of the firewall namespace; and one ftpgate address in front of
//! two servers, routed by user name. Transfers are checked by SHA-256.

mod lab;

use lab::servers::{ServerKind, LAB_PASS, LAB_USER};
use lab::{gate, sha256_file, Lab, LabPath, Tree, FW_C4, FW_C6, FW_S4};
use std::path::{Path, PathBuf};

/// A second server address in the server namespace (routes).
const SERVER4_B: &str = "198.51.100.4";

/// `/etc/netns/NS/{hosts,resolv.conf}`, which `ip netns exec` bind-mounts over /etc for the
/// namespace's processes: lab names resolve from the file, and any other query goes to
/// 127.0.0.1 inside the namespace, where nothing answers (nor would the egress guard let it
/// out). Removed when dropped, also on panic.
struct NetnsEtc(PathBuf);

impl NetnsEtc {
    fn new(ns: &str, hosts: &str) -> Self {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        let me = NetnsEtc(dir);
        std::fs::write(me.0.join("hosts"), format!("127.0.0.1 localhost\n{hosts}")).unwrap();
        std::fs::write(me.0.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n").unwrap();
        me
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// ftpgate in the firewall namespace with `yaml`, listening on `addr:port`.
fn start_ftpgate(lab: &mut Lab, yaml: &str, wait: &[(&str, u16)]) {
    let config = lab.write("ftpgate.yaml", yaml);
    let fw = lab.fw_ns.clone();
    let argv: Vec<String> = vec![
        lab.bin.to_str().unwrap().into(),
        "--log-level".into(),
        "debug".into(),
        "--config".into(),
        config.to_str().unwrap().into(),
    ];
    lab.spawn("ftpgate", &fw, &argv);
    for (addr, port) in wait {
        lab.wait_listening(&fw, addr, *port);
    }
}

/// ftplib (tests/lab/ftpclient.py) through `host:port` as `user`: RETR `remote` into a local
/// file, whose path comes back, or STOR `source` as `remote`.
#[allow(clippy::too_many_arguments)]
fn ftplib(
    lab: &Lab,
    host: &str,
    port: u16,
    user: &str,
    pass: &str,
    mode: &str,
    remote: &str,
    source: Option<&Path>,
) -> PathBuf {
    let op = if source.is_some() { "stor" } else { "retr" };
    let got = lab.dir.path().join(format!("got-{}-{mode}-{op}-{}", user.replace(['@', '[', ']', ':'], "_"), remote));
    let local = source.map_or(got, Path::to_path_buf);
    let py = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/ftpclient.py");
    let port = port.to_string();
    let (ok, out) = lab.client_run(&[
        "python3",
        py,
        "--host",
        host,
        "--port",
        &port,
        "--user",
        user,
        "--password",
        pass,
        "--mode",
        mode,
        "--op",
        op,
        "--remote",
        remote,
        "--local",
        local.to_str().unwrap(),
    ]);
    assert!(ok, "ftplib {user} {mode} {op} {remote} via {host}:{port}: {out}\n{}", lab.logs());
    local
}

fn lftp(lab: &Lab, proxy: &str, url: &str, passive: bool, local: &Path) {
    let script = format!(
        "set cmd:fail-exit yes; set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 20; set xfer:clobber yes; \
         set ftp:passive-mode {}; set ftp:proxy {proxy}; open -u anonymous,lab@ {url}; get small.bin -o {}",
        if passive { "on" } else { "off" },
        local.display()
    );
    let (ok, out) = lab.client_run(&["lftp", "-d", "-c", &script]);
    assert!(ok, "lftp via {proxy} to {url}: {out}\n{}", lab.logs());
    assert!(out.contains("USER anonymous@"), "lftp did not log in through the proxy: {out}");
}

#[test]
fn forward_proxy_with_lftp_and_ftplib_both_modes_both_families() {
    if !gate("forward_proxy_with_lftp_and_ftplib_both_modes_both_families", Some(ServerKind::Vsftpd)) {
        return;
    }
    let mut lab = Lab::new(LabPath::Reverse);
    let tree = lab.start_server(ServerKind::Vsftpd);
    let _etc = NetnsEtc::new(
        &lab.fw_ns,
        &format!("198.51.100.2 ftp.example\n2001:db8:2::2 ftp6.example\n{FW_S4} gateway.example\n198.51.100.99 denied.example\n"),
    );
    let yaml = format!(
        "listen: []\nforward:\n  listen: ['{FW_C4}:2121', '[{FW_C6}]:2121']\n\
         passive: {{ports: '50000-50999', advertise: local}}\nservers: {{deny: ['198.51.100.99/32']}}\n"
    );
    start_ftpgate(&mut lab, &yaml, &[(FW_C4, 2121), (FW_C6, 2121)]);

    for (host, user, mode) in [
        (FW_C4, "anonymous@ftp.example", "pasv"),
        (FW_C4, "anonymous@ftp.example:21", "port"),
        (FW_C4, "anonymous@198.51.100.2", "epsv"),
        (FW_C6, "anonymous@ftp6.example", "epsv"),
        (FW_C6, "anonymous@[2001:db8:2::2]:21", "eprt"),
    ] {
        let got = ftplib(&lab, host, 2121, user, "lab@", mode, "small.bin", None);
        assert_eq!(sha256_file(&got), tree.small_sha, "{user} {mode}");
    }
    let stored = format!("{LAB_USER}@ftp.example");
    ftplib(&lab, FW_C4, 2121, &stored, LAB_PASS, "pasv", "fwd-up.bin", Some(&tree.upload_file));
    assert_eq!(sha256_file(&tree.upload.join("fwd-up.bin")), tree.upload_sha);

    let local = lab.dir.path().join("lftp-small.bin");
    lftp(&lab, &format!("ftp://{FW_C4}:2121"), "ftp://ftp.example", true, &local);
    assert_eq!(sha256_file(&local), tree.small_sha);
    lftp(&lab, &format!("ftp://[{FW_C6}]:2121"), "ftp://ftp6.example", false, &local);
    assert_eq!(sha256_file(&local), tree.small_sha);

    // The firewall's own address by name, a name nobody knows, a name under .invalid.
    for (user, want) in [
        ("anonymous@gateway.example", "530 Destination 198.51.100.1:21 refused by gateway policy (local)"),
        ("anonymous@denied.example", "530 Destination 198.51.100.99:21 refused by gateway policy (denied)"),
        ("anonymous@nohost.example", "530 Cannot resolve nohost.example"),
        ("anonymous@ftp.invalid", "530 Cannot resolve ftp.invalid"),
        ("anonymous", "530 cannot tell the server from USER"),
    ] {
        let step = format!("send:USER {user}\\r\\n");
        let expect = format!("expect:{want}");
        let (ok, out) = lab.attack(FW_C4, 2121, &["expect:220", &step, &expect, "send:QUIT\\r\\n", "expect:221"]);
        assert!(ok, "{user}: {out}\n{}", lab.logs());
    }
    let log = lab.log_of("ftpgate");
    for c in ["local", "denied"] {
        assert!(log.contains(&format!("category=\"{c}\"")), "the refusal is not logged with category {c}:\n{log}");
    }
    lab.finish();
}

#[test]
fn two_servers_behind_one_address_routed_by_user_name() {
    if !gate("two_servers_behind_one_address_routed_by_user_name", Some(ServerKind::Vsftpd)) {
        return;
    }
    let mut lab = Lab::new(LabPath::Reverse);
    let tree_a = lab.start_server(ServerKind::Vsftpd);
    let sns = lab.server_ns.clone();
    lab.exec_ok(&sns, &["ip", "addr", "add", &format!("{SERVER4_B}/24"), "dev", "eth0"]);
    let base_b = lab.dir.path().join("site-b");
    std::fs::create_dir_all(&base_b).unwrap();
    let tree_b = Tree::create(&base_b);
    std::fs::write(tree_b.anon.join("only-on-b.txt"), "site b\n").unwrap();
    lab.start_server_at(ServerKind::Vsftpd, &tree_b, &[SERVER4_B], "vsftpd-b", &|c| c);
    let yaml = format!(
        "listen: ['{FW_C4}:21']\nupstream: '198.51.100.2:21'\n\
         routes:\n  - suffix: '@site-b'\n    upstream: '{SERVER4_B}:21'\n\
         passive: {{ports: '50000-50999', advertise: local}}\n"
    );
    start_ftpgate(&mut lab, &yaml, &[(FW_C4, 21)]);

    // Site B's own file only under a site-b name, passive and active.
    for mode in ["pasv", "port"] {
        let got = ftplib(&lab, FW_C4, 21, "anonymous@site-b", "lab@", mode, "only-on-b.txt", None);
        assert_eq!(std::fs::read_to_string(got).unwrap(), "site b\n");
        let got = ftplib(&lab, FW_C4, 21, "anonymous", "lab@", mode, "small.bin", None);
        assert_eq!(sha256_file(&got), tree_a.small_sha);
    }
    let (ok, out) = lab.attack(
        FW_C4,
        21,
        &["expect:220", "login:anonymous:lab@", "send:SIZE only-on-b.txt\\r\\n", "expect:550", "send:QUIT\\r\\n"],
    );
    assert!(ok, "site A has site B's file: {out}\n{}", lab.logs());
    // An upload lands on the server the name chose.
    let b_user = format!("{LAB_USER}@site-b");
    ftplib(&lab, FW_C4, 21, &b_user, LAB_PASS, "epsv", "routed-up.bin", Some(&tree_b.upload_file));
    assert_eq!(sha256_file(&tree_b.upload.join("routed-up.bin")), tree_b.upload_sha);
    assert!(!tree_a.upload.join("routed-up.bin").exists());
    // The server judges the password: its own 530.
    let user = format!("send:USER {LAB_USER}@site-b\\r\\n");
    let (ok, out) = lab.attack(
        FW_C4,
        21,
        &["expect:220", &user, "expect:331", "send:PASS wrong\\r\\n", "expect:530 Login incorrect"],
    );
    assert!(ok, "wrong password: {out}\n{}", lab.logs());
    lab.finish();
}
