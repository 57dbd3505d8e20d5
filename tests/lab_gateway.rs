//! ftpgate's own promises, proven through the lab: bulk transfers intact at speed, many
//! sessions at once, ABOR and several transfers per session, the loop refusal, the source
//! address option, and rule files that really matter.

mod lab;

use lab::servers::ServerKind;
use lab::{eventually, gate, sha256_file, Family, Lab, LabPath, PROXY_PORT};
use std::time::{Duration, Instant};

const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/scenarios.py");
const GIB: usize = 1 << 30;

/// (RETR MB/s, STOR MB/s) of a 1 GiB file with curl through `path`, checksums verified.
fn bulk(path: LabPath) -> (f64, f64) {
    let mut lab = Lab::new(path);
    let tree = lab.start_server(ServerKind::Vsftpd);
    lab.start_ftpgate(&[]);
    let big = tree.anon.join("gig.bin");
    let want = lab::write_big(&big, GIB);
    let host = lab.dial_host(lab::Family::V4);
    // RETR into the page cache, hashed afterwards so the hash does not compete with the relay.
    let out_file = lab.dir.path().join("gig-down.bin");
    let started = Instant::now();
    let (ok, out) = lab.client_run(&[
        "curl",
        "-sS",
        "--fail",
        "--disable-epsv",
        "-o",
        out_file.to_str().unwrap(),
        &format!("ftp://{host}/gig.bin"),
    ]);
    let retr_secs = started.elapsed().as_secs_f64();
    assert!(ok, "{} RETR failed: {out}{}", path.name(), lab.logs());
    assert_eq!(sha256_file(&out_file), want, "{} RETR checksum", path.name());
    std::fs::remove_file(&out_file).unwrap();
    std::fs::remove_file(&big).unwrap();
    // STOR of the same bytes, from a file the client reads.
    let src = lab.dir.path().join("gig-up.bin");
    let want_up = lab::write_big(&src, GIB);
    let url = format!("ftp://{}:{}@{host}/gig-up.bin", lab::servers::LAB_USER, lab::servers::LAB_PASS);
    let started = Instant::now();
    let (ok, out) = lab.client_run(&["curl", "-sS", "--fail", "--disable-epsv", "-T", src.to_str().unwrap(), &url]);
    let stor_secs = started.elapsed().as_secs_f64();
    assert!(ok, "{} STOR failed: {out}{}", path.name(), lab.logs());
    let landed = tree.upload.join("gig-up.bin");
    assert_eq!(sha256_file(&landed), want_up, "{} STOR checksum", path.name());
    std::fs::remove_file(&landed).unwrap();
    std::fs::remove_file(&src).unwrap();
    lab.finish();
    let mb = GIB as f64 / 1e6;
    (mb / retr_secs, mb / stor_secs)
}

#[test]
fn one_gib_retr_and_stor_intact_beside_the_routed_baseline() {
    if !gate("bulk 1 GiB", Some(ServerKind::Vsftpd)) {
        return;
    }
    let (rr, rs) = bulk(LabPath::Routed);
    let (gr, gs) = bulk(LabPath::Redirect);
    println!(
        "bulk 1 GiB (vsftpd, curl, PASV, checksums verified): RETR routed {rr:.0} MB/s, ftpgate {gr:.0} MB/s \
         ({:.2}x); STOR routed {rs:.0} MB/s, ftpgate {gs:.0} MB/s ({:.2}x)",
        gr / rr,
        gs / rs
    );
}

#[test]
fn hundred_concurrent_sessions_all_intact() {
    for server in lab::servers::ALL_SERVERS {
        if !gate(&format!("100 sessions/{}", server.name()), Some(server)) {
            return;
        }
        let mut lab = Lab::new(LabPath::Redirect);
        let tree = lab.start_server(server);
        lab.start_ftpgate(&[]);
        let file = tree.anon.join("medium.bin");
        std::fs::write(&file, lab::random_bytes(4 << 20, 5)).unwrap();
        let want = sha256_file(&file);
        let (ok, out) = lab.client_run(&["python3", SCENARIOS, "concurrent", lab::SERVER4, "100", "medium.bin", &want]);
        println!("100 concurrent sessions through ftpgate to {}: {}", server.name(), out.lines().last().unwrap_or(""));
        assert!(ok && out.contains("CONCURRENT 100/100 intact"), "{}: {out}{}", server.name(), lab.logs());
        lab.finish();
    }
}

#[test]
fn abort_mid_transfer_then_more_transfers_in_the_same_session() {
    // On the kernel data path the kernel carries the data connection end to end; the client
    // here stops reading before ABOR, and none of the lab's servers (vsftpd without
    // async_abor_enable, proftpd, pure-ftpd) ends a transfer blocked on it by itself: ftpgate
    // has the kernel reset that connection (kill4 or kill6 in ftpgate-kernel-path.nft), so the
    // server answers the ABOR at once. Both families, passive and active: each has its own set.
    for server in lab::servers::ALL_SERVERS {
        if !gate(&format!("abort/{}", server.name()), Some(server)) {
            return;
        }
        let mut lab = Lab::new(LabPath::Redirect);
        let tree = lab.start_server(server);
        lab.start_ftpgate(&[]);
        for (family, mode) in [(Family::V4, "pasv"), (Family::V4, "port"), (Family::V6, "epsv"), (Family::V6, "eprt")] {
            let host = lab.dial_host(family);
            let (ok, out) = lab.client_run(&["python3", SCENARIOS, "abort", host, mode, &tree.small_sha]);
            assert!(
                ok && out.contains("AFTER-ABORT 3 transfers intact"),
                "{}/{mode}/{}: {out}{}",
                server.name(),
                family.name(),
                lab.logs()
            );
        }
        // Each aborted download is logged as one, with its verb (on the kernel path once its
        // connection is over).
        let aborted =
            |log: &str| log.lines().filter(|l| l.contains("transfer aborted") && l.contains("verb=\"RETR\"")).count();
        eventually(Duration::from_secs(20), "the aborted transfers' lines", || aborted(&lab.log_of("ftpgate")) >= 4);
        let log = lab.log_of("ftpgate");
        assert_eq!(aborted(&log), 4, "{log}");
        assert!(log.contains("session end"), "no session log line: {log}");
        assert!(log.contains("transfer done") && log.contains("verb=\"RETR\""), "{log}");
        lab.finish();
    }
}

#[test]
fn a_connection_not_diverted_is_refused_as_a_loop() {
    if !gate("loop refusal", Some(ServerKind::Vsftpd)) {
        return;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_server(ServerKind::Vsftpd);
    lab.start_ftpgate(&[]);
    let (ok, out) = lab.client_run(&["python3", SCENARIOS, "raw", lab::FW_C4, &PROXY_PORT.to_string()]);
    assert!(ok && out.contains("FIRST 421"), "{out}");
    assert!(lab.log_of("ftpgate").contains("reason=\"loop\"") || lab.log_of("ftpgate").contains("reason=loop"));
    let [from_client, from_fw, _, _] = lab.watch();
    assert_eq!((from_client, from_fw), (0, 0), "nothing may reach the server");
    lab.finish();
}

#[test]
fn upstream_source_address_is_used_for_control_and_data() {
    let Some((mut lab, tree)) = lab::with_server("upstream source", LabPath::Redirect, ServerKind::Vsftpd) else {
        return;
    };
    lab.start_ftpgate(&["--upstream-source", lab::FW_S4_ALT]);
    lab.reset_watch();
    let (ok, out) =
        lab.client_run(&["sh", "-c", &format!("curl -sS --fail -o - ftp://{}/small.bin | sha256sum", lab::SERVER4)]);
    assert!(ok && out.starts_with(&tree.small_sha), "{out}{}", lab.logs());
    let [from_client, from_fw, _, _] = lab.watch();
    assert_eq!((from_client, from_fw), (0, 0));
    assert!(lab.seen_from_alt() >= 2, "control and data must come from {}", lab::FW_S4_ALT);
    lab.finish();
}

#[test]
fn broken_or_missing_redirect_rules_break_interception() {
    if !gate("rules matter", Some(ServerKind::Vsftpd)) {
        return;
    }
    // A rule file with an error must fail to load (and so fail any lab that loads it).
    let lab = Lab::new(LabPath::Routed);
    let broken = lab.dir.path().join("broken.nft");
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nftables/ftpgate-redirect.nft")).unwrap();
    std::fs::write(&broken, good.replace("redirect to :$PROXY_PORT", "redirect too :$PROXY_PORT")).unwrap();
    let e = lab.exec(
        &lab.fw_ns,
        &[
            "nft",
            "-D",
            "CLIENT_IF=\"cside\"",
            "-D",
            "PROXY_PORT=8021",
            "-D",
            "PASSIVE_PORTS=50000-50999",
            "-D",
            "MARK=0x2121",
            "-f",
            broken.to_str().unwrap(),
        ],
    );
    assert!(e.is_err(), "a broken rule file loaded");
    drop(lab);
    // With the redirect rule removed, the client reaches the server directly: the server sees
    // the client's address, which every transparent case rejects.
    let mut lab = Lab::new(LabPath::Redirect);
    let tree = lab.start_server(ServerKind::Vsftpd);
    lab.start_ftpgate(&[]);
    lab.exec_ok(&lab.fw_ns.clone(), &["nft", "flush", "chain", "inet", "ftpgate_redirect", "prerouting"]);
    lab.reset_watch();
    let case = lab::clients::Case {
        client: lab::clients::Client::Curl,
        mode: lab::clients::Mode::Pasv,
        family: lab::Family::V4,
        op: lab::clients::Op::RetrSmall,
    };
    let r = lab::clients::run_case(&lab, &tree, &case, 0);
    let e = r.expect_err("a transparent case passed without the redirect rule");
    assert!(e.contains("not from/to the firewall"), "{e}");
    lab.finish();
}

#[test]
fn filtering_ruleset_admits_the_gateway_and_drops_the_bypass() {
    if !gate("filter rules", Some(ServerKind::Vsftpd)) {
        return;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    lab.load_rules("ftpgate-filter.nft").unwrap_or_else(|e| panic!("filter rules: {e}"));
    let tree = lab.start_server(ServerKind::Vsftpd);
    let cfg = lab.write("active.yaml", &format!("active: {{ports: \"{}\"}}\n", lab::ACTIVE_PORTS));
    lab.start_ftpgate(&["--config", cfg.to_str().unwrap()]);
    use lab::clients::{run_case, Case, Client, Mode, Op};
    for (mode, family) in [
        (Mode::Pasv, lab::Family::V4),
        (Mode::Epsv, lab::Family::V4),
        (Mode::Port, lab::Family::V4),
        (Mode::Eprt, lab::Family::V4),
        (Mode::Epsv, lab::Family::V6),
        (Mode::Eprt, lab::Family::V6),
    ] {
        let case = Case { client: Client::Curl, mode, family, op: Op::RetrSmall };
        run_case(&lab, &tree, &case, 0)
            .unwrap_or_else(|e| panic!("{} behind the filter: {e}\n{}", case.label(), lab.logs()));
    }
    // Without the redirect, FTP from the client side may not bypass the gateway.
    lab.exec_ok(&lab.fw_ns.clone(), &["nft", "delete", "table", "inet", "ftpgate_redirect"]);
    let (ok, out) = lab.client_run(&["curl", "-sS", "--max-time", "5", &format!("ftp://{}/small.bin", lab::SERVER4)]);
    assert!(!ok, "FTP bypassed the gateway: {out}");
    lab.finish();
}
