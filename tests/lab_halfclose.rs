//! Half-closed data connections through ftpgate (REDIRECT) against vsftpd: a client that shuts
//! its sending side of a download's data connection at once still gets every byte and 226; a
//! download the client aborts is logged (log line with its verb, xferlog status `i`) and
//! counted as a failed RETR.

mod lab;

use lab::servers::ServerKind;
use lab::{DataPath, Lab, LabPath, LARGE_BYTES, SERVER4};
use std::path::{Path, PathBuf};

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

/// The xferlog(5) fields of each line: [7] bytes, [8] path, [11] direction, [17] completion.
fn xferlog_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
}

/// `ftpgate_transfers_total{outcome,verb}` from the metrics endpoint.
fn transfers(lab: &Lab, outcome: &str, verb: &str) -> u64 {
    let text = lab.exec_ok(&lab.fw_ns, &["curl", "-sS", "--max-time", "10", &format!("http://{METRICS}/metrics")]);
    let series = format!("ftpgate_transfers_total{{outcome=\"{outcome}\",verb=\"{verb}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn a_client_that_half_closes_its_data_connection_gets_the_whole_file_and_226() {
    let Some((lab, tree, xferlog)) = lab("half-close download") else { return };
    // A small file fits in the socket buffers on the way (a server then sees no error); a
    // large one does not.
    halfclose(&lab, &["whole", "small.bin", &tree.small_sha]);
    halfclose(&lab, &["whole", "large.bin", &tree.large_sha]);
    let rows = xferlog_rows(&xferlog);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (r, (bytes, file)) in rows.iter().zip([(1536, "small.bin"), (LARGE_BYTES, "large.bin")]) {
        assert_eq!(r.len(), 18, "{r:?}");
        // On the kernel data path the kernel carries the bytes: where it cannot say how many,
        // the log says "unknown", never a made-up figure.
        let unknown = lab.data_path == DataPath::Kernel && r[7] == "unknown";
        let logged = if unknown { bytes.to_string() } else { r[7].clone() };
        assert_eq!((&*logged, &*r[8], &*r[11], &*r[17]), (&*bytes.to_string(), file, "o", "c"), "{r:?}");
    }
    assert_eq!(transfers(&lab, "ok", "RETR"), 2);
    assert_eq!(transfers(&lab, "failed", "RETR"), 0);
    lab.finish();
}

#[test]
fn an_aborted_download_is_logged_incomplete_with_its_verb_and_counted_failed() {
    let Some((lab, _tree, xferlog)) = lab("aborted download") else { return };
    halfclose(&lab, &["cut", "large.bin", &(1 << 20).to_string()]);
    // The transfer's final reply waits for its data channel to end, so the line is there.
    let rows = xferlog_rows(&xferlog);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r.len(), 18, "{r:?}");
    assert_eq!((&*r[8], &*r[11], &*r[17]), ("large.bin", "o", "i"), "{r:?}");
    let bytes: usize = r[7].parse().unwrap();
    assert!((1 << 20..LARGE_BYTES).contains(&bytes), "{r:?}");
    let log = lab.log_of("ftpgate");
    let line = log.lines().find(|l| l.contains("transfer failed")).unwrap_or_else(|| panic!("no failure line:\n{log}"));
    assert!(line.contains("verb=\"RETR\"") && line.contains("reason=\"relay_error\""), "{line}");
    println!("{line}");
    assert_eq!(transfers(&lab, "failed", "RETR"), 1);
    assert_eq!(transfers(&lab, "ok", "RETR") + transfers(&lab, "failed", "other"), 0);
    lab.finish();
}
