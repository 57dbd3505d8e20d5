//! The binary as an admin meets it: start-up failures with clear messages and exit codes, the
//! JSON log format.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The binary under test: `FTPGATE_BIN` when set (another build, an older commit's say), else
/// the one cargo built with the tests.
fn bin() -> String {
    std::env::var("FTPGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ftpgate").to_owned())
}

#[test]
fn port_in_use_exits_3_and_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin()).args(["--listen", &addr, "--upstream", "127.0.0.1:21"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("another process holds this port"), "{err}");
}

#[test]
fn missing_capability_for_tproxy_exits_3_and_names_it() {
    if !Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0")) {
        eprintln!("SKIPPED missing-capability test: needs root to run ftpgate as another user");
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--inh-caps=-all", &bin()])
        .args(["--intercept", "tproxy", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_NET_ADMIN"));
}

#[test]
fn json_log_lines_are_json_objects_with_level_and_message() {
    let mut child = Command::new(bin())
        .args(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:21", "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    // The first line is either the root warning or the listening line; both are objects with a message.
    assert!(v.get("message").is_some() && v.get("level").is_some(), "{v}");
}

/// A timeout far beyond any real session once passed validation, and then every session's
/// deadline arithmetic overflowed (a panic per session). Validation bounds timeouts at 7 days
/// and names the field.
#[test]
fn check_config_refuses_a_timeout_beyond_seven_days_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ftpgate.yaml");
    std::fs::write(&f, "timeouts: {idle: 500000000000y}\n").unwrap();
    let out = Command::new(bin()).arg("--check-config").arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "--check-config accepted idle: 500000000000y; stderr: {err}");
    assert!(err.contains("timeouts.idle") && err.contains("7 days"), "{err}");
    // Just inside the bound is accepted.
    std::fs::write(&f, "timeouts: {idle: 7days, reply: 168h}\n").unwrap();
    let out = Command::new(bin()).arg("--check-config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A running ftpgate whose log lines arrive on a channel; killed when dropped.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// `program` with `args`: ftpgate itself, or a wrapper such as setpriv in front of it.
    fn start(program: &str, args: &[&str]) -> Running {
        let mut child = Command::new(program).args(args).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// The first log line (from now on) containing `text`; panics with the log after 10 s or
    /// when the process ends first.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!("no log line with {text:?} ({e:?}); the log:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The first log line containing `text`, seen already or waited for.
    fn logged(&mut self, text: &str) -> String {
        match self.seen.iter().find(|l| l.contains(text)) {
            Some(line) => line.clone(),
            None => self.wait_for(text),
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A directory every user may enter, with a configuration file of `mode` in it (owned by the
/// user running the tests).
fn config_dir(mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("ftpgate.yaml");
    std::fs::write(&file, "listen: ['127.0.0.1:0']\nupstream: '127.0.0.1:21'\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, file)
}

/// Once privileges are dropped, a SIGHUP reads the file as `privileges.user`: a file that user
/// cannot read is named at start-up, with the fix, rather than at the first reload.
#[test]
fn a_config_the_dropped_user_cannot_read_is_named_at_start_up() {
    if !is_root() {
        eprintln!("SKIPPED unreadable-config test: needs root to drop privileges");
        return;
    }
    let (_dir, file) = config_dir(0o600);
    let path = file.to_str().unwrap();
    let mut gw = Running::start(&bin(), &["--config", path, "--user", "nobody"]);
    let warning = gw.wait_for("reload");
    assert!(warning.contains("WARN") && warning.contains(path) && warning.contains("nobody"), "{warning}");
    assert!(warning.contains("Permission denied"), "{warning}");
    gw.wait_for("ftpgate listening");
}

/// With `privileges.chroot`, a SIGHUP can only read what is inside the new root: a file inside
/// it is read there (by its path inside), and the reload applies.
#[test]
fn a_config_inside_the_chroot_is_reloaded_after_the_drop() {
    if !is_root() {
        eprintln!("SKIPPED chroot reload test: needs root to chroot");
        return;
    }
    let (dir, file) = config_dir(0o644);
    let (path, root) = (file.to_str().unwrap(), dir.path().to_str().unwrap());
    let mut gw = Running::start(&bin(), &["--config", path, "--user", "nobody", "--chroot", root]);
    gw.wait_for("ftpgate listening");
    assert!(!gw.seen.iter().any(|l| l.contains("WARN") && l.contains("reload")), "{:#?}", gw.seen);
    std::fs::write(&file, "listen: ['127.0.0.1:0']\nupstream: '127.0.0.1:21'\nlog: {level: debug}\n").unwrap();
    gw.signal("-HUP");
    let line = gw.wait_for("reload");
    assert!(line.contains("configuration reloaded"), "{line}");
}

/// The shipped unit's way of running ftpgate: its ExecStart arguments, as a dynamic user (not
/// root, no `privileges.user`) with no capability and no new privileges, the configuration
/// installed readable (mode 644). `systemctl reload` (ExecReload: SIGHUP) applies a new file.
#[test]
fn the_shipped_unit_reloads_its_configuration() {
    if !is_root() {
        eprintln!("SKIPPED unit reload test: needs root to run ftpgate as a dynamic user");
        return;
    }
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ftpgate.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart= in the unit");
    let (dir, file) = config_dir(0o644);
    let path = file.to_str().unwrap();
    let args: Vec<&str> =
        exec.split_whitespace().skip(1).map(|a| if a == "/etc/ftpgate/ftpgate.yaml" { path } else { a }).collect();
    assert!(args.contains(&path), "ExecStart does not read /etc/ftpgate/ftpgate.yaml: {exec}");
    // A uid from systemd's DynamicUser= range, with no account behind it.
    let bin = bin();
    let mut setpriv = vec!["--reuid", "61999", "--regid", "61999", "--clear-groups", "--inh-caps=-all"];
    setpriv.extend(["--bounding-set=-all", "--no-new-privs", &bin]);
    setpriv.extend(args);
    let mut gw = Running::start("setpriv", &setpriv);
    gw.wait_for("ftpgate listening");
    std::fs::write(&file, "listen: ['127.0.0.1:0']\nupstream: '127.0.0.1:21'\nlog: {level: debug}\n").unwrap();
    gw.signal("-HUP");
    let line = gw.wait_for("reload");
    assert!(line.contains("configuration reloaded"), "{line}");
    drop(dir);
}

/// An address ftpgate logged in JSON field `field` of the line containing `text`, written as
/// `127.0.0.1:port`, `[127.0.0.1:port]` or `Some(127.0.0.1:port)`.
fn logged_addr(gw: &mut Running, text: &str, field: &str) -> std::net::SocketAddr {
    let line = gw.logged(text);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let raw = v[field].as_str().unwrap_or_else(|| panic!("no {field} in {line}"));
    let addr = raw.trim_start_matches("Some(").trim_start_matches('[').trim_end_matches([')', ']']);
    addr.parse().unwrap_or_else(|e| panic!("{raw}: {e}"))
}

/// The descriptor exhaustion seen in production, in a child process with few descriptors:
/// idle connections to /metrics must not take the ones FTP clients need.
#[test]
fn a_metrics_flood_does_not_take_the_descriptors_ftp_needs() {
    use std::io::{Read, Write};
    use std::time::Duration;
    const FLOOD: usize = 300;
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = upstream.local_addr().unwrap().to_string();
    // The fake server greets the one session the test opens and holds it until the test ends.
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = upstream.accept() {
            let _ = s.write_all(b"220 fake server\r\n");
            let _ = s.read(&mut [0; 64]);
        }
    });
    // 256 descriptors, soft and hard: ftpgate cannot raise them, and says so.
    let bin = bin();
    let mut gw = Running::start(
        "prlimit",
        &["--nofile=256:256", &bin, "--listen", "127.0.0.1:0", "--upstream", &server]
            .into_iter()
            .chain(["--metrics-listen", "127.0.0.1:0", "--log-format", "json"])
            .collect::<Vec<_>>(),
    );
    let metrics = logged_addr(&mut gw, "serving /metrics", "listen");
    let ftp = logged_addr(&mut gw, "ftpgate listening", "listen");
    let idle: Vec<std::net::TcpStream> =
        (0..FLOOD).map(|_| std::net::TcpStream::connect(metrics).expect("connect to /metrics")).collect();

    let mut client = std::net::TcpStream::connect(ftp).unwrap();
    // Well inside the metrics endpoint's header timeout, which would free the descriptors.
    client.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut greeting = [0; 64];
    let n = client.read(&mut greeting).unwrap_or_else(|e| {
        panic!(
            "no FTP greeting during a flood of {FLOOD} idle /metrics connections: {e}; the log:\n{}",
            gw.seen.join("\n")
        )
    });
    assert!(greeting[..n].starts_with(b"220 fake server"), "{:?}", String::from_utf8_lossy(&greeting[..n]));
    drop(idle);
}
