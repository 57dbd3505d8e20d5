//! Reply order under pipelining with real servers, through the REDIRECT path: a reply the
//! gateway makes itself (a refused `AUTH TLS`, a command the policy denies) waits behind the
//! replies the server still owes for earlier commands, so that a client pairing replies with
//! its commands by order pairs them rightly.

mod lab;

use lab::servers::ServerKind;
use lab::{LabPath, SERVER4};

const METRICS: &str = "127.0.0.1:9121";

/// Each of these is written in one piece after login; the replies must come in command order.
const PIPELINES: [(&str, [&str; 3]); 2] = [
    ("NOOP\\r\\nAUTH TLS\\r\\nSTAT\\r\\n", ["200", "534", "211"]),
    ("NOOP\\r\\nDELE x\\r\\nSTAT\\r\\n", ["200", "502", "211"]),
];

fn replies_in_command_order(server: ServerKind) {
    let Some((mut lab, _)) = lab::with_server("reply order", LabPath::Redirect, server) else { return };
    let cfg = lab.write("ftpgate.yaml", "policy: {commands: {deny: [DELE]}}\n");
    lab.start_ftpgate(&["--metrics-listen", METRICS, "--config", cfg.to_str().unwrap()]);
    // One session per pipeline, so that each is tried even when another fails.
    let mut failures = Vec::new();
    for (send, want) in PIPELINES {
        let mut steps = vec!["expect:220".to_owned(), "login".to_owned(), format!("send:{send}")];
        steps.extend(want.iter().map(|code| format!("expect:{code}")));
        steps.extend(["send:NOOP\\r\\n".to_owned(), "expect:200".to_owned()]);
        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
        let (ok, out) = lab.attack(SERVER4, 21, &steps);
        if !ok {
            failures.push(format!("{send} (want {}):\n{out}", want.join(", ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: replies out of command order:\n{}\n{}",
        server.name(),
        failures.join("\n"),
        lab.logs()
    );
    let log = lab.log_of("ftpgate");
    for refused in ["AUTH (FTPS) refused by policy", "command DELE is not allowed by gateway policy"] {
        assert!(log.contains(refused) && log.contains("reason=\"policy\""), "no log line for {refused:?}:\n{log}");
    }
    assert!(lab.rejections(METRICS, "policy") >= 2, "ftpgate_rejections_total{{reason=\"policy\"}} did not count both");
    lab.finish();
}

#[test]
fn vsftpd_replies_stay_in_command_order_around_the_gateways_own() {
    replies_in_command_order(ServerKind::Vsftpd);
}

#[test]
fn proftpd_replies_stay_in_command_order_around_the_gateways_own() {
    replies_in_command_order(ServerKind::Proftpd);
}
