//! FEAT through ftpgate: vsftpd with TLS enabled advertises AUTH TLS, PBSZ and PROT; ftpgate
//! refuses TLS (`tls: refuse`, the default), so real clients must not be told of it, or they
//! try TLS and fall back to clear text.

mod lab;

use lab::servers::ServerKind;
use lab::{gate, sh, Lab, LabPath, Tree, SERVER4};

/// The feature lines of FEAT replies in a client's transcript (curl `<  AUTH TLS`, lftp
/// `<---  AUTH TLS`) that name a TLS feature.
fn tls_features(transcript: &str) -> Vec<&str> {
    transcript
        .lines()
        .filter(|l| {
            let Some(line) = l.strip_prefix("<--- ").or_else(|| l.strip_prefix("< ")) else { return false };
            let name = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            line.starts_with(' ') && ["AUTH", "PBSZ", "PROT", "CCC", "ADAT"].contains(&name.as_str())
        })
        .collect()
}

/// vsftpd with `ssl_enable=YES` (a certificate made for the test) behind ftpgate.
fn tls_vsftpd_lab() -> Option<Lab> {
    if !gate("feat", Some(ServerKind::Vsftpd)) {
        return None;
    }
    if let Err(e) = sh(&["openssl", "version"]) {
        assert!(std::env::var("FTPGATE_LAB").as_deref() != Ok("require"), "FTPGATE_LAB=require but no openssl: {e}");
        eprintln!("SKIPPED lab test feat: no openssl to make vsftpd's certificate ({e})");
        return None;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    let (cert, key) = (lab.dir.path().join("vsftpd.pem"), lab.dir.path().join("vsftpd.key"));
    let (cert, key) = (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned());
    let ns = lab.server_ns.clone();
    let openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lab"];
    let mut argv = openssl.to_vec();
    argv.extend(["-keyout", &key, "-out", &cert]);
    lab.exec_ok(&ns, &argv);
    let tree = Tree::create(lab.dir.path());
    let tls = format!(
        "ssl_enable=YES\nrsa_cert_file={cert}\nrsa_private_key_file={key}\nallow_anon_ssl=NO\n\
         force_local_logins_ssl=NO\nforce_local_data_ssl=NO\n"
    );
    lab.start_server_at(ServerKind::Vsftpd, &tree, &[SERVER4], "vsftpd", &|conf| conf + &tls);
    lab.start_ftpgate(&[]);
    Some(lab)
}

#[test]
fn clients_are_not_told_of_tls_the_gateway_refuses() {
    let Some(lab) = tls_vsftpd_lab() else { return };
    // The server does advertise it: asked directly from the firewall, where nothing diverts.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/attack.py");
    let direct =
        lab.exec_ok(&lab.fw_ns, &["python3", script, SERVER4, "21", "expect:220", "send:FEAT\r\n", "expect:211"]);
    assert!(direct.contains("AUTH TLS") && direct.contains("PBSZ"), "vsftpd does not advertise TLS:\n{direct}");

    let url = format!("ftp://{SERVER4}/");
    let (ok, curl) = lab.client_run(&["curl", "-sS", "-v", "--max-time", "30", "-Q", "FEAT", "-l", &url]);
    assert!(ok, "curl failed:\n{curl}\n{}", lab.logs());
    assert!(curl.contains("< 211-") && curl.contains("EPSV"), "curl saw no FEAT reply:\n{curl}");
    assert_eq!(tls_features(&curl), Vec::<&str>::new(), "curl was told of TLS:\n{curl}");

    let script =
        format!("set ftp:ssl-allow yes; set net:max-retries 1; set net:timeout 20; open -u anonymous,lab@ {url}; ls");
    let (ok, lftp) = lab.client_run(&["lftp", "-d", "-c", &script]);
    assert!(ok, "lftp failed:\n{lftp}\n{}", lab.logs());
    assert!(lftp.contains("<--- 211-") && lftp.contains("EPSV"), "lftp saw no FEAT reply:\n{lftp}");
    assert_eq!(tls_features(&lftp), Vec::<&str>::new(), "lftp was told of TLS:\n{lftp}");
    // lftp tries AUTH TLS whatever FEAT says (ftp:ssl-allow); it gets 534 and goes on in clear.
    assert!(!lftp.contains("---> AUTH") || lftp.contains("<--- 534"), "AUTH was not refused:\n{lftp}");
    let log = lab.log_of("ftpgate");
    assert!(
        log.lines().any(|l| l.contains("feature the policy refuses left out") && l.contains("feature=AUTH")),
        "ftpgate did not log the hidden feature:\n{log}"
    );
    lab.finish();
}
