//! Two readers, one meaning: what ftpgate forwards must mean to a Telnet-aware server exactly
//! what ftpgate's policy checked. ProFTPD interprets Telnet commands on its control channel
//! (`IAC IP` is dropped, `IAC IAC` is one 0xFF byte), so it is the server these attacks aim at.

mod lab;

use lab::servers::{ServerKind, LAB_PASS, LAB_USER};
use lab::{gate, Lab, LabPath, SERVER4};

const METRICS: &str = "127.0.0.1:9121";

/// A REDIRECT lab with `server` and ftpgate configured by `yaml`.
fn redirect_lab(test: &str, server: ServerKind, yaml: &str) -> Option<Lab> {
    if !gate(test, Some(server)) {
        return None;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_server(server);
    let config = lab.write("ftpgate.yaml", yaml);
    lab.start_ftpgate(&["--metrics-listen", METRICS, "--config", config.to_str().unwrap()]);
    Some(lab)
}

/// Runs the attack steps against the server through ftpgate; they must all hold.
fn attack(lab: &Lab, steps: &[String]) -> String {
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let (ok, out) = lab.attack(SERVER4, 21, &steps);
    assert!(ok, "attack steps failed:\n{out}\n{}", lab.logs());
    out
}

/// `USER ftpgate<IAC IAC><IP>lab`: ftpgate reads the Telnet escape as one 0xFF data byte and
/// checks the name `ftpgate\xff\xf4lab`, which is not denied. Forwarded with a lone 0xFF,
/// ProFTPD would read `IAC IP`, strip it and log the denied user in. Re-escaped, ProFTPD
/// sees the very name ftpgate checked, and the password of the denied user gets it nowhere.
#[test]
fn a_telnet_escape_cannot_smuggle_a_denied_user_past_the_policy() {
    let yaml = format!("policy:\n  users: {{deny: [{LAB_USER}]}}\n");
    let Some(lab) = redirect_lab("telnet_user_deny", ServerKind::Proftpd, &yaml) else { return };
    let pass = format!("send:PASS {LAB_PASS}\r\n");
    let mut steps: Vec<String> = vec!["expect:220".into()];
    // The plain name: ftpgate's own refusal.
    steps.extend([format!("send:USER {LAB_USER}\r\n"), "expect:530".into()]);
    // A raw IAC IP inside the name is a Telnet command to ftpgate as well: stripped before the
    // check, so the name checked is the denied one.
    steps.extend(["send:USER ftpgate\\xff\\xf4lab\r\n".into(), "expect:530".into()]);
    // The escaped IAC: the server must see `ftpgate\xff\xf4lab` (no such user), not the lab user.
    steps.extend(["send:USER ftpgate\\xff\\xff\\xf4lab\r\n".into(), "expect:331".into(), pass, "expect:530".into()]);
    // The session goes on, and an allowed user still gets in.
    steps.push("login".into());
    let out = attack(&lab, &steps);
    eprintln!("{out}");
    let log = lab.log_of("ftpgate");
    assert!(log.contains("reason=\"policy\""), "no log line with reason=policy:\n{log}");
    assert!(lab.rejections(METRICS, "policy") >= 2, "ftpgate_rejections_total{{reason=policy}} did not count both");
    let commands = proftpd_commands(&lab);
    assert!(
        !commands.lines().any(|l| l.contains(&format!("USER {LAB_USER}"))),
        "ProFTPD received the denied user name:\n{commands}"
    );
    lab.finish();
}

/// ProFTPD's ExtendedLog of every command it received (its IPv4 instance).
fn proftpd_commands(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.path().join("run-proftpd/proftpd-0/commands.log")).unwrap_or_default()
}
