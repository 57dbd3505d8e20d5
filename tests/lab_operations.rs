//! Operations through the lab: metrics that count exactly, graceful shutdown during a transfer,
//! configuration reload that leaves running sessions alone.

mod lab;

use lab::clients::{run_case, Case, Client, Mode, Op};
use lab::servers::ServerKind;
use lab::{eventually, log_field, sha256_file, xferlog_rows, DataPath, Family, Lab, LabPath, LARGE_BYTES, SERVER4};
use std::time::Duration;

fn scrape(lab: &Lab) -> String {
    lab.exec(&lab.fw_ns, &["curl", "-sS", "--max-time", "10", "http://127.0.0.1:9121/metrics"])
        .unwrap_or_else(|e| panic!("scrape failed: {e}"))
}

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

/// The sum of one figure over ftpgate's "transfer done" lines.
fn logged_sum(lab: &Lab, name: &str) -> f64 {
    let log = lab.log_of("ftpgate");
    let done = log.lines().filter(|l| l.contains("transfer done"));
    done.map(|l| log_field(l, name).and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("{name}: {l}"))).sum()
}

#[test]
fn metrics_count_known_transfers_exactly() {
    let Some((mut lab, tree)) = lab::with_server("metrics", LabPath::Redirect, ServerKind::Vsftpd) else { return };
    let xferlog = lab.dir.path().join("xferlog");
    lab.start_ftpgate(&["--metrics-listen", "127.0.0.1:9121", "--xferlog", xferlog.to_str().unwrap()]);
    let cases = [
        Case { client: Client::Curl, mode: Mode::Pasv, family: Family::V4, op: Op::RetrSmall },
        Case { client: Client::Curl, mode: Mode::Epsv, family: Family::V4, op: Op::RetrLarge },
        Case { client: Client::Curl, mode: Mode::Eprt, family: Family::V4, op: Op::Stor },
        Case { client: Client::Python, mode: Mode::Epsv, family: Family::V6, op: Op::RetrSmall },
    ];
    for (i, case) in cases.iter().enumerate() {
        run_case(&lab, &tree, case, i).unwrap_or_else(|e| panic!("{}: {e}", case.label()));
    }
    // A bounce attempt and a refused direct connection show up under their reasons.
    let (ok, out) =
        lab.attack(SERVER4, 21, &["expect:220", "login", "send:PORT 198,51,100,9,195,80\r\n", "expect:501"]);
    assert!(ok, "{out}");
    let (ok, out) = lab.attack(lab::FW_C4, lab::PROXY_PORT, &["expectclose:421"]);
    assert!(ok, "{out}");
    eventually(Duration::from_secs(10), "all sessions to end", || {
        value(&scrape(&lab), "ftpgate_sessions_active") == 0.0
    });
    // On the kernel path each transfer is counted once its connection is over.
    eventually(Duration::from_secs(30), "the transfers in the transfer log", || xferlog_rows(&xferlog).len() == 4);
    let m = scrape(&lab);
    let small = 1536.0;
    let to_client = value(&m, "ftpgate_bytes_total{direction=\"to_client\"}");
    let to_server = value(&m, "ftpgate_bytes_total{direction=\"to_server\"}");
    let kernel_to_client = value(&m, "ftpgate_kernel_path_bytes_total{direction=\"to_client\"}");
    let kernel_to_server = value(&m, "ftpgate_kernel_path_bytes_total{direction=\"to_server\"}");
    match lab.data_path {
        DataPath::Relay => {
            assert_eq!((to_client, to_server), (2.0 * small + LARGE_BYTES as f64, (3 << 20) as f64));
            assert_eq!((kernel_to_client, kernel_to_server), (0.0, 0.0));
        }
        // ftpgate relays nothing; the kernel's figures are the transfers' lines' figures.
        DataPath::Kernel => {
            assert_eq!((to_client, to_server), (0.0, 0.0));
            let logged = (logged_sum(&lab, "bytes_to_client"), logged_sum(&lab, "bytes_to_server"));
            assert_eq!((kernel_to_client, kernel_to_server), logged);
            assert!(kernel_to_client >= 2.0 * small + LARGE_BYTES as f64, "{kernel_to_client}");
            assert!(kernel_to_server >= (3 << 20) as f64, "{kernel_to_server}");
        }
    }
    assert_eq!(value(&m, "ftpgate_transfers_total{outcome=\"ok\",verb=\"RETR\"}"), 3.0);
    assert_eq!(value(&m, "ftpgate_transfers_total{outcome=\"ok\",verb=\"STOR\"}"), 1.0);
    assert_eq!(value(&m, "ftpgate_data_channels_total{family=\"ipv4\",mode=\"passive\"}"), 2.0);
    assert_eq!(value(&m, "ftpgate_data_channels_total{family=\"ipv4\",mode=\"active\"}"), 1.0);
    assert_eq!(value(&m, "ftpgate_data_channels_total{family=\"ipv6\",mode=\"passive\"}"), 1.0);
    assert_eq!(value(&m, "ftpgate_sessions_total{outcome=\"client_quit\"}"), 4.0);
    assert_eq!(value(&m, "ftpgate_rejections_total{reason=\"bounce\"}"), 1.0);
    assert_eq!(value(&m, "ftpgate_rejections_total{reason=\"loop\"}"), 1.0);
    assert_eq!(value(&m, "ftpgate_transfer_duration_seconds_count"), 4.0);
    assert!(value(&m, "ftpgate_server_replies_total{class=\"2xx\"}") >= 8.0);
    assert_eq!(value(&m, "ftpgate_build_info{version=\"0.1.0\"}"), 1.0);
    println!("metrics after 4 known transfers: bytes, transfers, channels, sessions and rejections exact");
    // The transfer log has one xferlog line per file transfer, fields in their places.
    let log = std::fs::read_to_string(&xferlog).unwrap();
    let rows: Vec<Vec<&str>> = log.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 4, "{log}");
    let want = [
        ("203.0.113.2", "1536", "small.bin", "o", "a", "anonymous"),
        ("203.0.113.2", "67108864", "large.bin", "o", "a", "anonymous"),
        ("203.0.113.2", "3145728", "up-2-curl.bin", "i", "r", "ftpgatelab"),
        ("2001:db8:1::2", "1536", "small.bin", "o", "a", "anonymous"),
    ];
    for (row, (host, bytes, file, dir, mode, user)) in rows.iter().zip(want) {
        assert_eq!(row.len(), 18, "{row:?}");
        let size: u64 = bytes.parse().unwrap();
        assert!(lab.data_path.reports(size, row[7].parse().ok()), "{} path: {row:?}", lab.data_path.name());
        assert_eq!((row[6], row[8], row[9], row[11], row[12], row[13]), (host, file, "b", dir, mode, user), "{row:?}");
        assert_eq!(row[17], "c");
    }
    lab.finish();
}

/// Starts a rate-limited curl download of large.bin in the background; returns its output path.
fn slow_download(lab: &mut Lab, name: &str) -> std::path::PathBuf {
    let out = lab.dir.path().join(format!("{name}.bin"));
    let ns = lab.client_ns.clone();
    let argv: Vec<String> = ["timeout", "120", "curl", "-sS", "--fail", "--limit-rate", "12M", "-o"]
        .iter()
        .map(|s| s.to_string())
        .chain([out.to_str().unwrap().to_owned(), format!("ftp://{SERVER4}/large.bin")])
        .collect();
    lab.spawn(name, &ns, &argv);
    let o = out.clone();
    eventually(Duration::from_secs(10), "the download to start", || {
        std::fs::metadata(&o).is_ok_and(|m| m.len() > (1 << 20))
    });
    out
}

#[test]
fn sigterm_during_a_large_transfer_lets_it_finish_intact_and_exits_0() {
    let Some((mut lab, tree)) = lab::with_server("graceful shutdown", LabPath::Redirect, ServerKind::Vsftpd) else {
        return;
    };
    let pid = lab.start_ftpgate(&[])[0];
    let out = slow_download(&mut lab, "download");
    lab::sh(&["kill", "-TERM", &pid.to_string()]).unwrap();
    eventually(Duration::from_secs(10), "ftpgate to stop accepting", || {
        lab.log_of("ftpgate").contains("shutting down")
    });
    // New sessions are no longer accepted: nothing listens behind the redirect.
    let (ok, text) = lab.client_run(&["curl", "-sS", "--max-time", "10", &format!("ftp://{SERVER4}/small.bin")]);
    assert!(!ok && text.contains("onnect"), "a new session was served after SIGTERM: {text}");
    assert!(lab.reap("download"), "the running download failed: {}", lab.logs());
    assert_eq!(sha256_file(&out), tree.large_sha, "the file did not arrive intact");
    assert!(lab.reap("ftpgate"), "ftpgate did not exit 0 after its sessions ended: {}", lab.logs());
    assert!(lab.log_of("ftpgate").contains("all sessions finished"));
    lab.finish();
}

#[test]
fn sighup_reload_applies_to_new_sessions_and_refuses_a_bad_file() {
    let Some((mut lab, tree)) = lab::with_server("reload", LabPath::Redirect, ServerKind::Vsftpd) else { return };
    let cfg = lab.write("ftpgate.yaml", "log: {level: info}\n");
    let pid = lab.start_ftpgate(&["--config", cfg.to_str().unwrap()])[0].to_string();
    let out = slow_download(&mut lab, "download");
    // New policy: NLST refused.
    std::fs::write(&cfg, "policy:\n  commands: {deny: [NLST]}\n").unwrap();
    lab::sh(&["kill", "-HUP", &pid]).unwrap();
    eventually(Duration::from_secs(10), "the reload", || lab.log_of("ftpgate").contains("configuration reloaded"));
    let nlst = ["expect:220", "login", "send:NLST\r\n", "expect:502"];
    let (ok, text) = lab.attack(SERVER4, 21, &nlst);
    assert!(ok, "new session does not use the reloaded policy: {text}");
    // A broken file is refused with its reason, and the running configuration stays.
    std::fs::write(&cfg, "passive:\n  ports: 10-20\n").unwrap();
    lab::sh(&["kill", "-HUP", &pid]).unwrap();
    eventually(Duration::from_secs(10), "the refusal", || lab.log_of("ftpgate").contains("reload refused"));
    assert!(lab.log_of("ftpgate").contains("passive.ports"));
    let (ok, text) = lab.attack(SERVER4, 21, &nlst);
    assert!(ok, "the refused file replaced the running configuration: {text}");
    assert!(lab.reap("download"), "the running download failed across reloads: {}", lab.logs());
    assert_eq!(sha256_file(&out), tree.large_sha);
    lab.finish();
}
