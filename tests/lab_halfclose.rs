//! Half-closed data connections through ftpgate (REDIRECT) against vsftpd: a client that shuts
//! its sending side of a download's data connection at once still gets every byte and 226; a
//! download the client aborts is logged (log line with its verb and why, xferlog status `i`)
//! and counted as a failed RETR. On either data path: on the kernel path ftpgate sees no byte
//! of the transfer and the server's 426 says it was not whole.

mod lab;

use lab::servers::ServerKind;
use lab::{eventually, log_field, xferlog_rows, DataPath, Lab, LabPath, LARGE_BYTES, SERVER4};
use std::path::PathBuf;
use std::time::Duration;

const METRICS: &str = "127.0.0.1:9121";

/// A REDIRECT lab with vsftpd and ftpgate writing its transfer log; `None` when skipped.
fn lab(test: &str) -> Option<(Lab, lab::Tree, PathBuf)> {
    let (mut lab, tree) = lab::with_server(test, LabPath::Redirect, ServerKind::Vsftpd)?;
    let xferlog = lab.dir.path().join("xferlog");
    lab.start_ftpgate(&["--metrics-listen", METRICS, "--xferlog", xferlog.to_str().unwrap()]);
    Some((lab, tree, xferlog))
}

/// Runs tests/lab/halfclose.py in the client namespace against the server (through ftpgate).
fn halfclose(lab: &Lab, args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/halfclose.py");
    let mut argv = vec!["python3", script, SERVER4, "21"];
    argv.extend_from_slice(args);
    let (ok, out) = lab.client_run(&argv);
    assert!(ok && out.lines().any(|l| l == "OK"), "halfclose.py {args:?}:\n{out}\n{}", lab.logs());
    println!("halfclose.py {args:?}:\n{out}");
}

/// `ftpgate_transfers_total{outcome,verb}` from the metrics endpoint.
fn transfers(lab: &Lab, outcome: &str, verb: &str) -> u64 {
    let text = lab.exec_ok(&lab.fw_ns, &["curl", "-sS", "--max-time", "10", &format!("http://{METRICS}/metrics")]);
    let series = format!("ftpgate_transfers_total{{outcome=\"{outcome}\",verb=\"{verb}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The transfer log once it has `n` lines: on the kernel path a transfer is written once its
/// connection is over, after its final reply.
fn rows(xferlog: &std::path::Path, n: usize) -> Vec<Vec<String>> {
    eventually(Duration::from_secs(30), "the transfer log's lines", || xferlog_rows(xferlog).len() >= n);
    let rows = xferlog_rows(xferlog);
    assert_eq!(rows.len(), n, "{rows:?}");
    rows
}

#[test]
fn a_client_that_half_closes_its_data_connection_gets_the_whole_file_and_226() {
    let Some((lab, tree, xferlog)) = lab("half-close download") else { return };
    // A small file fits in the socket buffers on the way (a server then sees no error); a
    // large one does not.
    halfclose(&lab, &["whole", "small.bin", &tree.small_sha]);
    halfclose(&lab, &["whole", "large.bin", &tree.large_sha]);
    for (r, (bytes, file)) in rows(&xferlog, 2).iter().zip([(1536, "small.bin"), (LARGE_BYTES as u64, "large.bin")]) {
        assert_eq!(r.len(), 18, "{r:?}");
        assert!(lab.data_path.reports(bytes, r[7].parse().ok()), "{} path, {file}: {r:?}", lab.data_path.name());
        assert_eq!((&*r[8], &*r[11], &*r[17]), (file, "o", "c"), "{r:?}");
    }
    assert_eq!(transfers(&lab, "ok", "RETR"), 2);
    assert_eq!(transfers(&lab, "failed", "RETR"), 0);
    lab.finish();
}

#[test]
fn an_aborted_download_is_logged_incomplete_with_its_verb_and_counted_failed() {
    let Some((lab, _tree, xferlog)) = lab("aborted download") else { return };
    halfclose(&lab, &["cut", "large.bin", &(1 << 20).to_string()]);
    let rows = rows(&xferlog, 1);
    let r = &rows[0];
    assert_eq!(r.len(), 18, "{r:?}");
    assert_eq!((&*r[8], &*r[11], &*r[17]), ("large.bin", "o", "i"), "{r:?}");
    // What had gone through when the client cut it: at least what it read, not the whole file.
    let bytes: u64 = r[7].parse().unwrap_or_else(|_| panic!("no byte count: {r:?}"));
    assert!((1 << 20..LARGE_BYTES as u64).contains(&bytes), "{r:?}");
    let log = lab.log_of("ftpgate");
    let line = log.lines().find(|l| l.contains("transfer failed")).unwrap_or_else(|| panic!("no failure line:\n{log}"));
    assert_eq!(log_field(line, "verb"), Some("RETR"), "{line}");
    // The relay sees the reset; on the kernel path the server's reply tells (vsftpd: 426).
    let (reason, reply) = match lab.data_path {
        DataPath::Relay => ("relay_error", None),
        DataPath::Kernel => ("server_reply", Some("426")),
    };
    assert_eq!((log_field(line, "reason"), log_field(line, "reply")), (Some(reason), reply), "{line}");
    println!("{line}");
    assert_eq!(transfers(&lab, "failed", "RETR"), 1);
    assert_eq!(transfers(&lab, "ok", "RETR") + transfers(&lab, "failed", "other"), 0);
    lab.finish();
}
