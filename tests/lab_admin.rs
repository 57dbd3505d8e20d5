//! The admin API in the lab: during a 1 GiB RETR through ftpgate the API shows the session with
//! growing byte counts, `ftpgate sessions` prints it, `ftpgate sessions --kill` ends it, the
//! client sees 421, and the transfer log says the transfer was aborted (status i).

mod lab;

use lab::servers::ServerKind;
use lab::{eventually, LabPath, SERVER4};
use std::time::Duration;

const TOKEN: &str = "lab-admin-token-0123456789abcdef";
const HUGE: u64 = 1 << 30;

fn sessions_json(lab: &lab::Lab) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let text = lab
        .exec(&lab.fw_ns, &["curl", "-sS", "--fail", "--max-time", "5", "-H", &auth, "http://127.0.0.1:2122/sessions"])
        .unwrap_or_else(|e| panic!("GET /sessions failed: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The download's bytes as the API reports them (0 before the transfer shows).
fn transfer_bytes(lab: &lab::Lab) -> u64 {
    let v = sessions_json(lab);
    v.as_array().and_then(|a| a.first()).and_then(|s| s["transfer"]["bytes"].as_u64()).unwrap_or(0)
}

#[test]
fn the_admin_api_shows_a_1_gib_retr_growing_and_ends_it_with_421() {
    let Some((mut lab, tree)) = lab::with_server("admin sessions", LabPath::Redirect, ServerKind::Vsftpd) else {
        return;
    };
    // Relay path only: the API's byte counts grow as ftpgate relays; on the kernel data path the
    // kernel carries the bytes and ftpgate has no running count to show.
    lab.data_path = lab::DataPath::Relay;
    // Sparse: a gibibyte of zeros costs no disk and no time to make.
    let huge = tree.anon.join("huge.bin");
    std::fs::File::create(&huge).unwrap().set_len(HUGE).unwrap();
    let tokens = lab.write("admin.tokens", &format!("lab-ops:{TOKEN}\n"));
    let xferlog = lab.dir.path().join("xferlog");
    let cfg = lab.write(
        "ftpgate.yaml",
        &format!(
            "admin:\n  listen: 127.0.0.1:2122\n  token_file: {}\nlog:\n  xferlog: {}\n",
            tokens.display(),
            xferlog.display()
        ),
    );
    lab.start_ftpgate(&["--config", cfg.to_str().unwrap()]);
    lab.wait_listening(&lab.fw_ns.clone(), "127.0.0.1", 2122);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/admin_client.py");
    let ns = lab.client_ns.clone();
    let argv: Vec<String> = ["timeout", "300", "python3", script, SERVER4, "huge.bin"].map(String::from).to_vec();
    lab.spawn("client", &ns, &argv);

    let mut first = 0;
    eventually(Duration::from_secs(20), "the transfer to show in GET /sessions", || {
        first = transfer_bytes(&lab);
        first > 0
    });
    let v = sessions_json(&lab);
    let s = &v[0];
    assert_eq!(s["user"], "anonymous", "{s}");
    assert_eq!(s["phase"], "transfer", "{s}");
    assert_eq!(s["original_destination"], format!("{SERVER4}:21"), "{s}");
    assert_eq!(s["client"].as_str().map(|c| c.starts_with("203.0.113.2:")), Some(true), "{s}");
    assert_eq!((s["transfer"]["verb"].as_str(), s["transfer"]["path"].as_str()), (Some("RETR"), Some("huge.bin")));
    let id = s["id"].as_u64().expect("an id");
    let mut later = 0;
    eventually(Duration::from_secs(20), "the byte count to grow", || {
        later = transfer_bytes(&lab);
        later > first + (4 << 20)
    });
    println!("GET /sessions: RETR huge.bin at {first} bytes, then {later}");

    // The operator's view, then the operator's kill, both through the CLI.
    let bin = lab.bin.to_str().unwrap().to_owned();
    let cfg = cfg.to_str().unwrap().to_owned();
    let table = lab.exec_ok(&lab.fw_ns, &[&bin, "sessions", "--config", &cfg]);
    assert!(table.contains("RETR huge.bin") && table.contains("anonymous"), "{table}");
    print!("ftpgate sessions:\n{table}");
    let killed = lab.exec_ok(&lab.fw_ns, &[&bin, "sessions", "--config", &cfg, "--kill", &id.to_string()]);
    assert!(killed.contains(&format!("session {id} (")), "{killed}");

    assert!(lab.reap("client"), "the client did not see 421: {}", lab.log_of("client"));
    let out = lab.log_of("client");
    assert!(out.contains("REPLY 421 Session ended by the administrator"), "{out}");
    let got: u64 = out.lines().find_map(|l| l.strip_prefix("GOT ")).and_then(|n| n.parse().ok()).unwrap();
    assert!(got < HUGE, "the whole file came: {out}");

    eventually(Duration::from_secs(10), "the session to leave the registry", || {
        sessions_json(&lab).as_array().is_some_and(|a| a.is_empty())
    });
    let log = std::fs::read_to_string(&xferlog).unwrap();
    let line = log.lines().find(|l| l.contains(" huge.bin b _ o a anonymous ")).unwrap_or_else(|| panic!("{log:?}"));
    assert!(line.ends_with(" i"), "the aborted transfer is not marked incomplete: {line}");
    let logged: u64 = line.split_whitespace().nth(7).and_then(|n| n.parse().ok()).unwrap();
    assert!(logged >= later && logged < HUGE, "{line}");
    let gate_log = lab.log_of("ftpgate");
    assert!(
        gate_log.lines().any(|l| l.contains("session ended by the administrator") && l.contains("lab-ops")),
        "no log line naming who ended the session"
    );
    println!("DELETE: client saw 421 after {got} bytes; xferlog: {line}");
    lab.finish();
}
