//! The kernel data path's pinholes themselves, through the lab: one connection and only from
//! the expected peer, gone after the accept timeout when unused, the addresses each side sees,
//! and a start-up that refuses to run without its table or its capability.

mod lab;

use lab::servers::ServerKind;
use lab::{eventually, gate, log_field, with_server, xferlog_rows, Lab, LabPath, CLIENT4_ALT, SERVER4, SERVER6};
use std::process::Command;
use std::time::Duration;

const METRICS: &str = "127.0.0.1:9121";

fn kernel_lab(test: &str, path: LabPath, extra: &[&str], yaml: &str) -> Option<(Lab, lab::Tree)> {
    let (mut lab, tree) = with_server(test, path, ServerKind::Vsftpd)?;
    lab.kernel_path();
    // Reverse mode runs one ftpgate per family: only one of them could have the endpoint.
    let mut args: Vec<String> = Vec::new();
    if path != LabPath::Reverse {
        args.extend(["--metrics-listen".into(), METRICS.into()]);
    }
    if !yaml.is_empty() {
        let f = lab.write("ftpgate.yaml", yaml);
        args.extend(["--config".into(), f.to_str().unwrap().to_owned()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_ftpgate(&args);
    Some((lab, tree))
}

/// Packets the pinhole rules dropped (a stranger's connection, a second connection).
fn refused(lab: &Lab) -> u64 {
    lab.counter(&lab.fw_ns, "ftpgate_kernel_path", "refused")
}

/// `ftpgate_kernel_path_packets_total{counter}` as ftpgate's metrics endpoint shows it.
fn counter_metric(lab: &Lab, counter: &str) -> u64 {
    let url = format!("http://{METRICS}/metrics");
    let text = lab.exec(&lab.fw_ns, &["curl", "-sS", "--max-time", "10", &url]).unwrap_or_default();
    let series = format!("ftpgate_kernel_path_packets_total{{counter=\"{counter}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn a_pinhole_admits_its_peer_once_and_no_stranger() {
    let Some((lab, tree)) = kernel_lab("kernel path one-shot", LabPath::Redirect, &[], "") else { return };
    let once = format!("once:{CLIENT4_ALT}:small.bin:{}", tree.small_sha);
    let (ok, out) = lab.attack(SERVER4, 21, &["expect:220", "login", "send:TYPE I\r\n", "expect:200", &once]);
    assert!(ok, "{out}\n{}", lab.logs());
    // Both were turned away by the pinhole's rules, and the server never saw the stranger.
    assert!(refused(&lab) >= 2, "the stranger's and the second connection's SYNs must be dropped: {out}");
    let [from_client, ..] = lab.watch();
    assert_eq!(from_client, 0, "a connection reached the server untranslated");
    assert!(lab.log_of("ftpgate").contains("data connection handed to the kernel"), "{}", lab.logs());
    // The refusals are visible in ftpgate's metrics (read from the kernel every few seconds).
    let dropped = refused(&lab);
    eventually(Duration::from_secs(20), "the refused metric", || counter_metric(&lab, "refused") >= dropped);
    assert!(counter_metric(&lab, "used") >= 1, "the used pinhole must be counted");
    lab.finish();
}

#[test]
fn an_unused_pinhole_is_gone_after_the_accept_timeout() {
    let yaml = "timeouts: {data_accept: 2s, idle: 8s}\n";
    let Some((mut lab, _)) = kernel_lab("kernel path expiry", LabPath::Redirect, &[], yaml) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/attack.py");
    // A session that asks for a passive connection and never makes it; it stays open until
    // its idle timeout, well after the pinhole's.
    let steps = ["expect:220", "login", "send:PASV\r\n", "expect:227", "expectclose:421"];
    let argv: Vec<String> =
        ["python3", script, SERVER4, "21"].iter().chain(steps.iter()).map(|s| s.to_string()).collect();
    let client_ns = lab.client_ns.clone();
    lab.spawn("idle-client", &client_ns, &argv);
    eventually(Duration::from_secs(10), "the pinhole to be armed", || !lab.pinhole_elements("once4").is_empty());
    assert_eq!(lab.pinhole_elements("dnat4").len(), 1);
    // ftpgate takes the gate away at the accept timeout, the kernel expires the rest a second
    // later; no element of the pinhole is left.
    eventually(Duration::from_secs(10), "the pinhole to be gone", || {
        ["once4", "dnat4", "snat4", "guard4"].iter().all(|s| lab.pinhole_elements(s).is_empty())
    });
    let log = lab.log_of("ftpgate");
    assert!(log.contains("reason=\"accept_timeout\""), "{}", lab.logs());
    assert!(lab.reap("idle-client"), "the idle session did not end with 421: {}", lab.log_of("idle-client"));
    lab.finish();
}

/// ftplib's RETR in `mode`; its transcript (with `DATA-PEER ip port` for active connections).
fn ftplib_retr(lab: &Lab, host: &str, mode: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/ftpclient.py");
    let local = lab.dir.path().join(format!("retr-{mode}.bin"));
    let (ok, out) = lab.client_run(&[
        "python3",
        script,
        "--host",
        host,
        "--mode",
        mode,
        "--op",
        "retr",
        "--remote",
        "small.bin",
        "--local",
        local.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{}", lab.logs());
    out
}

#[test]
fn active_connections_reach_the_client_from_the_server_and_port_20_when_asked() {
    // Behind the filtering ruleset (forward policy drop), which admits the pinholes' connections.
    let yaml = format!("active:\n  source_port_20: true\n  ports: \"{}\"\n", lab::ACTIVE_PORTS);
    let Some((lab, _)) = kernel_lab("kernel path active", LabPath::Redirect, &[], &yaml) else { return };
    lab.load_rules("ftpgate-filter.nft").unwrap_or_else(|e| panic!("filter rules: {e}"));
    let out = ftplib_retr(&lab, SERVER4, "port");
    assert!(out.contains(&format!("DATA-PEER {SERVER4} 20\n")), "{out}");
    let out = ftplib_retr(&lab, SERVER6, "eprt");
    assert!(out.contains(&format!("DATA-PEER {SERVER6} 20\n")), "{out}");
    // The server saw only the firewall, as on the control connection.
    let [from_client, _, to_client, _] = lab.watch();
    assert_eq!((from_client, to_client), (0, 0));
    lab.finish();
}

#[test]
fn in_reverse_mode_the_client_sees_the_gateway() {
    let Some((lab, _)) = kernel_lab("kernel path reverse", LabPath::Reverse, &[], "") else { return };
    let out = ftplib_retr(&lab, lab::FW_C4, "port");
    assert!(out.contains(&format!("DATA-PEER {} ", lab::FW_C4)), "{out}");
    lab.finish();
}

/// Runs ftpgate on the kernel path in the lab's firewall (through `wrap`, e.g. setpriv);
/// its exit status and what it printed.
fn start_up(lab: &Lab, wrap: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.fw_ns, "timeout", "20"])
        .args(wrap)
        .args([lab.bin.to_str().unwrap(), "--listen", "127.0.0.1:0", "--data-path", "kernel"])
        .output()
        .unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn start_up_exits_3_without_the_table_or_without_cap_net_admin() {
    if !gate("kernel path start-up", None) {
        return;
    }
    let lab = Lab::new(LabPath::Redirect);
    let (code, out) = start_up(&lab, &[]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("ftpgate-kernel-path.nft"), "the message must say which table to load: {out}");
    lab.load_rules("ftpgate-kernel-path.nft").unwrap();
    let (code, out) = start_up(&lab, &["setpriv", "--bounding-set", "-net_admin", "--"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("CAP_NET_ADMIN"), "{out}");
    lab.finish();
}

/// ftplib in the client namespace: `op` (retr, stor) of `remote` in `mode`, as `user` when set.
fn ftplib(lab: &Lab, mode: &str, op: &str, remote: &str, local: &std::path::Path, user: Option<(&str, &str)>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/ftpclient.py");
    let local = local.to_str().unwrap();
    let host = if mode.starts_with('e') { SERVER6 } else { SERVER4 };
    let mut argv = vec!["python3", script, "--host", host, "--mode", mode, "--op", op, "--remote", remote];
    argv.extend(["--local", local]);
    if let Some((u, p)) = user {
        argv.extend(["--user", u, "--password", p]);
    }
    let (ok, out) = lab.client_run(&argv);
    assert!(ok, "{out}\n{}", lab.logs());
}

/// A kernel-path lab writing its transfer log; the log's path.
fn counting_lab(test: &str) -> Option<(Lab, lab::Tree, std::path::PathBuf)> {
    let (mut lab, tree) = with_server(test, LabPath::Redirect, ServerKind::Vsftpd)?;
    lab.kernel_path();
    let xferlog = lab.dir.path().join("xferlog");
    lab.start_ftpgate(&["--xferlog", xferlog.to_str().unwrap()]);
    Some((lab, tree, xferlog))
}

#[test]
fn kernel_transfers_are_logged_with_conntracks_ip_layer_counts() {
    let Some((lab, tree, xferlog)) = counting_lab("kernel path byte counts") else { return };
    assert!(lab.log_of("ftpgate").contains("nf_conntrack_acct) turned on"), "{}", lab.logs());
    // A passive download and an active upload: conntrack's original direction is the
    // client's in one, the server's in the other.
    let local = lab.dir.path().join("large.out");
    ftplib(&lab, "pasv", "retr", "large.bin", &local, None);
    assert_eq!(lab::sha256_file(&local), tree.large_sha);
    let upload_bytes = std::fs::metadata(&tree.upload_file).unwrap().len();
    let creds = Some((lab::servers::LAB_USER, lab::servers::LAB_PASS));
    ftplib(&lab, "port", "stor", "up-counted.bin", &tree.upload_file, creds);
    // IPv6, whose source port the rules do not record: found by a filtered conntrack dump.
    ftplib(&lab, "eprt", "stor", "up-counted6.bin", &tree.upload_file, creds);
    // curl connects its data connection before it sends RETR (TYPE I and SIZE come between):
    // the server's replies to those must not end the channel before the transfer is known.
    let url = format!("ftp://{SERVER4}/large.bin");
    let (ok, out) = lab.client_run(&["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", &url]);
    assert!(ok && out.trim() == lab::LARGE_BYTES.to_string(), "{out}");
    // Written when each connection is over, after its 226.
    eventually(Duration::from_secs(20), "the transfers in the transfer log", || xferlog_rows(&xferlog).len() == 4);
    let rows = xferlog_rows(&xferlog);
    let log = lab.log_of("ftpgate");
    let log = log.as_str();
    for (nth, file, size, direction, verb, found_by) in [
        (0, "large.bin", lab::LARGE_BYTES as u64, "o", "RETR", "source_port"),
        (1, "large.bin", lab::LARGE_BYTES as u64, "o", "RETR", "source_port"),
        (0, "up-counted.bin", upload_bytes, "i", "STOR", "source_port"),
        (0, "up-counted6.bin", upload_bytes, "i", "STOR", "search"),
    ] {
        let mut same = rows.iter().filter(|r| r.get(8).map(String::as_str) == Some(file));
        let r = same.nth(nth).unwrap_or_else(|| panic!("{rows:?}"));
        assert_eq!((&*r[11], &*r[17]), (direction, "c"), "{r:?}");
        let done: Vec<&str> = log.lines().filter(|l| l.contains("transfer done")).collect();
        let bytes: u64 = r[7].parse().unwrap_or_else(|_| panic!("no byte count: {r:?}\n{}", done.join("\n")));
        // IP-layer bytes: the file and every packet's headers, never less than the file.
        assert!(bytes >= size && bytes <= size + size * 8 / 100, "{file}: {bytes} for {size} bytes: {r:?}");
        let (toward, back) = if verb == "RETR" { ("to_client", "to_server") } else { ("to_server", "to_client") };
        // The log line with the same figure: the log line and the transfer log agree.
        let figure = bytes.to_string();
        let line = done
            .iter()
            .find(|l| {
                l.contains(&format!("verb=\"{verb}\"")) && log_field(l, &format!("bytes_{toward}")) == Some(&*figure)
            })
            .unwrap_or_else(|| panic!("no {verb} line with {bytes} bytes:\n{}", done.join("\n")));
        assert_eq!(log_field(line, "byte_layer"), Some("ip"), "{line}");
        assert_eq!(log_field(line, "found_by"), Some(found_by), "{line}");
        for dir in [toward, back] {
            let packets: u64 = log_field(line, &format!("packets_{dir}")).unwrap().parse().unwrap();
            assert!(packets > 0, "{line}");
        }
        println!("{line}\n{}", r.join(" "));
    }
    lab.finish();
}

#[test]
fn a_data_port_handed_out_again_at_once_is_still_looked_up_exactly() {
    if !gate("kernel path port reuse", Some(ServerKind::Vsftpd)) {
        return;
    }
    // One passive port: every transfer's pinhole has the key of the one before, whose recorded
    // source port has not expired. The rule must replace it, or the lookup finds the earlier
    // connection's entry and has to search the whole conntrack table.
    let mut lab = Lab::new(LabPath::Redirect);
    let tree = lab::Tree::create(lab.dir.path());
    let port = lab::SERVER_PASV.0;
    let one_port = move |conf: String| {
        conf.lines()
            .map(|l| match l.split_once('=') {
                Some(("pasv_min_port" | "pasv_max_port", _)) => format!("{}={port}", l.split('=').next().unwrap()),
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    lab.start_server_at(ServerKind::Vsftpd, &tree, &[SERVER4], "vsftpd", &one_port);
    lab.kernel_path();
    let xferlog = lab.dir.path().join("xferlog");
    lab.start_ftpgate(&["--xferlog", xferlog.to_str().unwrap()]);
    for n in 0..3 {
        ftplib(&lab, "pasv", "retr", "small.bin", &lab.dir.path().join(format!("small-{n}.out")), None);
    }
    eventually(Duration::from_secs(30), "the transfers in the transfer log", || xferlog_rows(&xferlog).len() == 3);
    let log = lab.log_of("ftpgate");
    let done: Vec<&str> = log.lines().filter(|l| l.contains("transfer done")).collect();
    assert_eq!(done.len(), 3, "{log}");
    for line in &done {
        assert_eq!(log_field(line, "found_by"), Some("source_port"), "{line}");
        // IP-layer bytes: the file and each packet's headers (IPv4 and TCP, options included).
        let number = |name: &str| -> u64 { log_field(line, name).unwrap_or_default().parse().unwrap_or_default() };
        let (bytes, packets) = (number("bytes_to_client"), number("packets_to_client"));
        assert!(bytes >= 1536 && bytes <= 1536 + 80 * packets, "{line}");
        println!("{line}");
    }
    lab.finish();
}

#[test]
fn without_conntrack_accounting_kernel_counts_are_unknown() {
    let Some((lab, _tree, xferlog)) = counting_lab("kernel path uncounted") else { return };
    // Off again after ftpgate turned it on: connections made now carry no counters.
    lab.exec_ok(&lab.fw_ns, &["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=0"]);
    ftplib(&lab, "pasv", "retr", "small.bin", &lab.dir.path().join("small.out"), None);
    eventually(Duration::from_secs(20), "the transfer in the transfer log", || xferlog_rows(&xferlog).len() == 1);
    let r = &xferlog_rows(&xferlog)[0];
    assert_eq!((&*r[7], &*r[8], &*r[17]), ("unknown", "small.bin", "c"), "{r:?}");
    let log = lab.log_of("ftpgate");
    let line = log
        .lines()
        .find(|l| l.contains("transfer done") && l.contains("verb=\"RETR\""))
        .unwrap_or_else(|| panic!("no RETR line:\n{log}"));
    assert_eq!(log_field(line, "bytes_to_client"), Some("unknown"), "{line}");
    assert!(!line.contains("byte_layer"), "{line}");
    println!("{line}");
    lab.finish();
}
