//! FTPS through ftpgate with real servers and clients: terminate (reverse) toward an FTPS and
//! a plain server, inspect (transparent) toward an FTPS server, implicit FTPS, and servers the
//! gateway must refuse, implicit FTPS to port 990 diverted by the shipped rules, and ABOR inside
//! TLS. vsftpd runs with TLS forced for logins and data and `require_ssl_reuse=YES`, ProFTPD with
//! mod_tls and `TLSRequired on` (session reuse required by default), so every server-side data
//! connection must resume the control connection's TLS session. The test CA is made at test time.

mod lab;

use lab::pki::{proftpd_tls, vsftpd_tls, Pki};
use lab::servers::{ServerKind, LAB_PASS, LAB_USER};
use lab::{sha256_file, DataPath, Family, Lab, LabPath, Tree, FW_C4, SERVER4, SERVER6};
use std::path::{Path, PathBuf};

const FTPS_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/ftps_client.py");

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The server behind ftpgate in an FTPS lab test, and the TLS it speaks.
#[derive(Clone, Copy)]
enum Upstream {
    /// vsftpd without TLS.
    PlainVsftpd,
    /// vsftpd with TLS forced, the certificate `cert` picks, implicit (from the first byte, on
    /// `port`) or explicit (AUTH TLS).
    Vsftpd { cert: fn(&Pki) -> &(PathBuf, PathBuf), implicit: bool, port: u16 },
    /// ProFTPD with mod_tls, TLS required.
    Proftpd,
}

/// vsftpd with TLS forced and explicit, with the server's own certificate.
const VSFTPD_TLS: Upstream = Upstream::Vsftpd { cert: |k| &k.server, implicit: false, port: 21 };

impl Upstream {
    fn kind(self) -> ServerKind {
        match self {
            Upstream::PlainVsftpd | Upstream::Vsftpd { .. } => ServerKind::Vsftpd,
            Upstream::Proftpd => ServerKind::Proftpd,
        }
    }

    fn start(self, lab: &mut Lab, pki: &Pki) -> Tree {
        let tree = Tree::create(lab.dir.path());
        let (kind, addrs, run) = (self.kind(), &[SERVER4, SERVER6], self.kind().name());
        match self {
            Upstream::PlainVsftpd => lab.start_server_at(kind, &tree, addrs, run, &|c| c),
            Upstream::Vsftpd { cert, implicit, port } => {
                let tls = vsftpd_tls(cert(pki), implicit);
                let edit = |c: String| tls(c).replace("listen_port=21\n", &format!("listen_port={port}\n"));
                lab.start_server_on(kind, &tree, addrs, run, port, &edit);
            }
            Upstream::Proftpd => lab.start_server_at(kind, &tree, addrs, run, &proftpd_tls(&pki.server)),
        }
        tree
    }
}

/// The start of an FTPS lab test: the gate for `test`, a lab on `path` with a fresh test PKI
/// and `upstream` started. `None` when the test is skipped.
fn ftps_server(test: &str, path: LabPath, upstream: Upstream) -> Option<(Lab, Pki, Tree)> {
    if !lab::gate(test, Some(upstream.kind())) {
        return None;
    }
    let mut lab = Lab::new(path);
    // TLS data channels are relayed: ftpgate refuses a TLS policy on the kernel data path, also
    // when FTPGATE_LAB_DATA_PATH=kernel asks for it lab-wide.
    lab.data_path = DataPath::Relay;
    let pki = Pki::new(lab.dir.path());
    let tree = upstream.start(&mut lab, &pki);
    Some((lab, pki, tree))
}

/// As [`ftps_server`], then ftpgate started for the lab's path with the configuration `yaml`
/// writes for the PKI.
fn ftps_lab(test: &str, path: LabPath, upstream: Upstream, yaml: &dyn Fn(&Pki) -> String) -> Option<(Lab, Pki, Tree)> {
    let (mut lab, pki, tree) = ftps_server(test, path, upstream)?;
    let cfg = config(&lab, "ftps.yaml", &yaml(&pki));
    lab.start_ftpgate(&["--config", &cfg]);
    Some((lab, pki, tree))
}

/// [`ftps_lab`], then [`transfers`] through it; the lab, for checks of its logs and `finish`.
fn transfers_through(test: &str, path: LabPath, upstream: Upstream, yaml: &dyn Fn(&Pki) -> String) -> Option<Lab> {
    let (lab, pki, tree) = ftps_lab(test, path, upstream, yaml)?;
    transfers(&lab, &tree, &pki);
    Some(lab)
}

/// curl with the test CA, TLS required for control and data.
fn curl(lab: &Lab, pki: &Pki, url: &str, extra: &[&str]) -> (bool, String) {
    let mut argv = vec!["curl", "-sS", "-v", "--fail", "--max-time", "120", "--ssl-reqd", "--cacert", p(&pki.ca)];
    argv.extend_from_slice(extra);
    argv.push(url);
    lab.client_run(&argv)
}

/// The Python FTP_TLS client (PROT P) with the test CA.
fn python(lab: &Lab, pki: &Pki, host: &str, port: u16, args: &[&str]) -> (bool, String) {
    let port = port.to_string();
    let mut argv = vec!["python3", FTPS_CLIENT, host, &port, "--cafile", p(&pki.ca)];
    argv.extend_from_slice(args);
    let (ok, out) = lab.client_run(&argv);
    (ok && out.lines().any(|l| l == "OK"), out)
}

fn url_host(family: Family, host: &str) -> String {
    match family {
        Family::V4 => host.to_owned(),
        Family::V6 => format!("[{host}]"),
    }
}

/// RETR (large file), STOR and LIST through `lab` with curl, Python and lftp, in the four data
/// modes and both families, every file checked.
fn transfers(lab: &Lab, tree: &Tree, pki: &Pki) {
    let out = lab.dir.path().join("got.bin");
    // curl: RETR in PASV over IPv4, STOR with EPSV over IPv6 (curl 7.88 does not start TLS on
    // an active-mode data connection; Python covers PORT and EPRT).
    let h4 = url_host(Family::V4, lab.dial_host(Family::V4));
    let (ok, t) = curl(lab, pki, &format!("ftp://{h4}/large.bin"), &["--disable-epsv", "-o", p(&out)]);
    assert!(ok, "curl RETR PASV v4: {t}{}", lab.logs());
    assert!(t.contains("> PASV"), "{t}");
    assert_eq!(sha256_file(&out), tree.large_sha);
    let h6 = url_host(Family::V6, lab.dial_host(Family::V6));
    let url = format!("ftp://{LAB_USER}:{LAB_PASS}@{h6}/up-curl.bin");
    let (ok, t) = curl(lab, pki, &url, &["-T", p(&tree.upload_file)]);
    assert!(ok, "curl STOR EPSV v6: {t}{}", lab.logs());
    assert!(t.contains("> EPSV"), "{t}");
    assert_eq!(sha256_file(&tree.upload.join("up-curl.bin")), tree.upload_sha);
    // Python FTP_TLS: RETR with PORT over IPv4, LIST with EPRT over IPv6.
    let (ok, t) = python(
        lab,
        pki,
        lab.dial_host(Family::V4),
        21,
        &["--mode", "port", "--op", "retr", "--remote", "small.bin", "--local", p(&out)],
    );
    assert!(ok && t.contains("MODE PORT"), "python RETR PORT v4: {t}{}", lab.logs());
    assert_eq!(sha256_file(&out), tree.small_sha);
    let (ok, t) = python(lab, pki, lab.dial_host(Family::V6), 21, &["--mode", "eprt", "--op", "list"]);
    assert!(ok && t.contains("MODE EPRT"), "python LIST EPRT v6: {t}{}", lab.logs());
    assert!(t.lines().any(|l| l.starts_with("LIST ") && l.contains("large.bin")), "{t}");
    // Python FTP_TLS: STOR with EPRT over IPv4 (its TLS end waits for the gateway's close_notify).
    let (ok, t) = python(
        lab,
        pki,
        lab.dial_host(Family::V4),
        21,
        &[
            "--user",
            LAB_USER,
            "--password",
            LAB_PASS,
            "--mode",
            "eprt",
            "--op",
            "stor",
            "--remote",
            "up-py.bin",
            "--local",
            p(&tree.upload_file),
        ],
    );
    assert!(ok && t.contains("MODE EPRT"), "python STOR EPRT v4: {t}{}", lab.logs());
    assert_eq!(sha256_file(&tree.upload.join("up-py.bin")), tree.upload_sha);
    // lftp with TLS forced: RETR over IPv4 (its own choice of EPSV/PASV).
    let script = format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {}; \
         set ssl:verify-certificate true; set net:max-retries 1; set net:timeout 30; \
         open ftp://{h4}; user anonymous lab@; get small.bin -o {}; bye",
        p(&pki.ca),
        p(&out)
    );
    let _ = std::fs::remove_file(&out);
    let (ok, t) = lab.client_run(&["lftp", "-c", &script]);
    assert!(ok, "lftp RETR v4: {t}{}", lab.logs());
    assert_eq!(sha256_file(&out), tree.small_sha);
}

fn config(lab: &Lab, name: &str, yaml: &str) -> String {
    p(&lab.write(name, yaml)).to_owned()
}

/// `tls: terminate` with the gateway's certificate, toward an explicit FTPS server verified
/// against the test CA.
fn terminate_explicit(pki: &Pki) -> String {
    format!(
        "tls: terminate\nupstream_tls: explicit\nftps:\n  certificate: {}\n  key: {}\n  server_ca: {}\n",
        p(&pki.gateway.0),
        p(&pki.gateway.1),
        p(&pki.ca)
    )
}

/// `tls: inspect`: certificates issued by the test CA, the server verified against it.
fn inspect(pki: &Pki) -> String {
    format!(
        "tls: inspect\nftps:\n  ca_certificate: {}\n  ca_key: {}\n  server_ca: {}\n",
        p(&pki.ca),
        p(&pki.ca_key),
        p(&pki.ca)
    )
}

#[test]
fn terminate_toward_an_ftps_server_that_requires_session_reuse() {
    let Some(lab) = transfers_through("ftps terminate explicit", LabPath::Reverse, VSFTPD_TLS, &terminate_explicit)
    else {
        return;
    };
    let log = lab.log_of("ftpgate-v4");
    assert!(log.contains("TLS established") && log.contains("side=\"server\""), "{log}");
    assert!(log.contains("resumed=true"), "data connections resumed the control connection's session:\n{log}");
    lab.finish();
}

#[test]
fn terminate_toward_proftpd_with_mod_tls() {
    let Some(lab) =
        transfers_through("ftps terminate proftpd", LabPath::Reverse, Upstream::Proftpd, &terminate_explicit)
    else {
        return;
    };
    // mod_tls refuses a data connection that does not resume the control connection's session.
    let log = lab.log_of("ftpgate-v4");
    let server_data: Vec<&str> =
        log.lines().filter(|l| l.contains("data connection in TLS") && l.contains("side=\"server\"")).collect();
    assert!(
        !server_data.is_empty() && server_data.iter().all(|l| l.contains("resumed=true")),
        "data connections toward ProFTPD resumed the control connection's session:\n{log}"
    );
    lab.finish();
}

#[test]
fn inspect_toward_proftpd_with_mod_tls() {
    let Some(lab) = transfers_through("ftps inspect proftpd", LabPath::Redirect, Upstream::Proftpd, &inspect) else {
        return;
    };
    lab.finish();
}

/// ABOR inside TLS in the middle of a PROT P RETR through a terminating ftpgate, toward an
/// FTPS server: NOOP behind it gets its reply and the session goes on with a checked RETR.
#[test]
fn abor_mid_transfer_inside_tls() {
    let Some((lab, pki, tree)) = ftps_lab("ftps abor", LabPath::Reverse, VSFTPD_TLS, &terminate_explicit) else {
        return;
    };
    let out = lab.dir.path().join("got.bin");
    for (family, mode) in [(Family::V4, "pasv"), (Family::V6, "eprt")] {
        let args = ["--mode", mode, "--op", "abor", "--remote", "small.bin", "--local", p(&out)];
        let (ok, t) = python(&lab, &pki, lab.dial_host(family), 21, &args);
        assert!(ok, "ABOR {family:?} {mode}: {t}{}", lab.logs());
        let read = t.lines().find_map(|l| l.strip_prefix("READ ")).and_then(|n| n.parse::<usize>().ok());
        assert!(read.is_some_and(|n| n >= 1 << 20), "the transfer was under way: {t}");
        assert!(t.lines().any(|l| l.starts_with("ABORTED ")), "{t}");
        assert_eq!(sha256_file(&out), tree.small_sha, "RETR after ABOR {family:?} {mode}");
        std::fs::remove_file(&out).unwrap();
    }
    lab.finish();
}

#[test]
fn terminate_toward_a_plain_server() {
    let terminate = |pki: &Pki| {
        format!("tls: terminate\nftps:\n  certificate: {}\n  key: {}\n", p(&pki.gateway.0), p(&pki.gateway.1))
    };
    let Some(lab) = transfers_through("ftps terminate plain", LabPath::Reverse, Upstream::PlainVsftpd, &terminate)
    else {
        return;
    };
    lab.finish();
}

#[test]
fn inspect_toward_an_ftps_server() {
    let Some(lab) = transfers_through("ftps inspect", LabPath::Redirect, VSFTPD_TLS, &inspect) else { return };
    lab.finish();
}

#[test]
fn implicit_ftps_on_both_sides() {
    let implicit = Upstream::Vsftpd { cert: |k| &k.server, implicit: true, port: 21 };
    let Some((mut lab, pki, tree)) = ftps_server("ftps implicit", LabPath::Reverse, implicit) else { return };
    let cfg = config(
        &lab,
        "ftps.yaml",
        &format!(
            "listen: [\"{FW_C4}:21\"]\nupstream: \"{SERVER4}:21\"\ntls: terminate\nupstream_tls: implicit\n\
             ftps:\n  certificate: {}\n  key: {}\n  server_ca: {}\n  implicit_listen: [\"{FW_C4}:990\"]\n",
            p(&pki.gateway.0),
            p(&pki.gateway.1),
            p(&pki.ca)
        ),
    );
    let bin = lab.bin.to_str().unwrap().to_owned();
    let fw = lab.fw_ns.clone();
    lab.spawn("ftpgate", &fw, &[bin, "--log-level".into(), "debug".into(), "--config".into(), cfg]);
    lab.wait_listening(&fw, FW_C4, 990);
    let out = lab.dir.path().join("got.bin");
    let (ok, t) = curl(&lab, &pki, &format!("ftps://{FW_C4}:990/large.bin"), &["-o", p(&out)]);
    assert!(ok, "curl implicit RETR: {t}{}", lab.logs());
    assert_eq!(sha256_file(&out), tree.large_sha);
    let (ok, t) = python(
        &lab,
        &pki,
        FW_C4,
        990,
        &["--implicit", "--user", LAB_USER, "--password", LAB_PASS, "--mode", "pasv", "--op", "stor"]
            .into_iter()
            .chain(["--remote", "up-implicit.bin", "--local", p(&tree.upload_file)])
            .collect::<Vec<_>>(),
    );
    assert!(ok, "python implicit STOR: {t}{}", lab.logs());
    assert_eq!(sha256_file(&tree.upload.join("up-implicit.bin")), tree.upload_sha);
    // The explicit listener of the same instance still answers AUTH TLS.
    let (ok, t) = curl(&lab, &pki, &format!("ftp://{FW_C4}/small.bin"), &["-o", p(&out)]);
    assert!(ok, "curl explicit RETR: {t}{}", lab.logs());
    assert_eq!(sha256_file(&out), tree.small_sha);
    lab.finish();
}

/// Implicit FTPS to a server's port 990, diverted by the shipped rules (`path`) into an
/// inspecting ftpgate: TLS from the first byte on both sides, and the client sees the
/// certificate ftpgate issued for the server's address (short-lived), not the server's own
/// (rcgen's default validity, until 4096).
fn implicit_diverted(test: &str, path: LabPath) {
    let on_990 = Upstream::Vsftpd { cert: |k| &k.server, implicit: true, port: 990 };
    let Some((lab, pki, tree)) = ftps_lab(test, path, on_990, &inspect) else { return };
    let out = lab.dir.path().join("got.bin");
    for family in [Family::V4, Family::V6] {
        let host = url_host(family, lab.dial_host(family));
        let (ok, t) = curl(&lab, &pki, &format!("ftps://{host}:990/large.bin"), &["-o", p(&out)]);
        assert!(ok, "{test}: curl implicit RETR {family:?}: {t}{}", lab.logs());
        assert_eq!(sha256_file(&out), tree.large_sha, "{test} {family:?}");
        let server_ip = lab.dial_host(family);
        assert!(t.contains(&format!("subject: CN={server_ip}")), "{test}: the certificate names the server: {t}");
        let expiry = t.lines().find(|l| l.contains("expire date:")).unwrap_or_default();
        assert!(!expiry.is_empty() && !expiry.contains("4096"), "{test}: not the issued certificate: {t}");
        let url = format!("ftps://{LAB_USER}:{LAB_PASS}@{host}:990/up-{}.bin", family.name());
        let (ok, t) = curl(&lab, &pki, &url, &["-T", p(&tree.upload_file)]);
        assert!(ok, "{test}: curl implicit STOR {family:?}: {t}{}", lab.logs());
        assert_eq!(sha256_file(&tree.upload.join(format!("up-{}.bin", family.name()))), tree.upload_sha);
    }
    // Both sides in TLS from the first byte, toward the original destination's port 990.
    let log = lab.log_of("ftpgate");
    let starts: Vec<&str> = log.lines().filter(|l| l.contains("session start")).collect();
    assert_eq!(starts.len(), 4, "{test}: {log}");
    assert!(
        starts
            .iter()
            .all(|l| l.contains(":990 upstream=") && l.contains("client_tls=TLS") && l.contains("server_tls=TLS")),
        "{test}: {log}"
    );
    lab.finish();
}

#[test]
fn implicit_ftps_to_port_990_diverted_by_redirect() {
    implicit_diverted("ftps implicit redirect", LabPath::Redirect);
}

#[test]
fn implicit_ftps_to_port_990_diverted_by_tproxy() {
    implicit_diverted("ftps implicit tproxy", LabPath::Tproxy);
}

/// A client of a server whose certificate fails verification gets 421, and the log says why.
fn refused_server(test: &str, path: LabPath, cert: fn(&Pki) -> &(PathBuf, PathBuf), extra: &str, why: &[&str]) {
    let yaml = |pki: &Pki| match path {
        LabPath::Reverse => format!("{}{extra}", terminate_explicit(pki)),
        _ => format!("{}{extra}", inspect(pki)),
    };
    let upstream = Upstream::Vsftpd { cert, implicit: false, port: 21 };
    let Some((lab, pki, _)) = ftps_lab(test, path, upstream, &yaml) else { return };
    let (ok, t) = python(&lab, &pki, lab.dial_host(Family::V4), 21, &["--op", "login"]);
    assert!(!ok, "{test}: the client got through: {t}");
    assert!(t.lines().any(|l| l.starts_with("ERROR 421")), "{test}: no 421 for the client: {t}");
    let log = lab.logs();
    assert!(why.iter().all(|w| log.contains(w)), "{test}: the log does not say {why:?}:\n{log}");
    lab.finish();
}

#[test]
fn a_server_certificate_from_an_unknown_ca_is_refused_under_inspection() {
    refused_server("ftps unknown CA", LabPath::Redirect, |k| &k.rogue, "", &["certificate_unknown_ca"]);
}

#[test]
fn a_server_certificate_for_another_name_is_refused() {
    refused_server(
        "ftps wrong name",
        LabPath::Reverse,
        |k| &k.server,
        "  server_name: ftp.elsewhere.example\n",
        &["certificate_name"],
    );
}
