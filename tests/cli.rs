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

/// A pipe whose reader is already gone: the first write to it fails with EPIPE whatever the size
/// of the output. This is `ftpgate ... | head` with a `head` that stopped reading before ftpgate
/// wrote, made deterministic (a real `head` may read everything first, the output being small).
fn closed_pipe() -> Stdio {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_the_commands_own_status() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ftpgate.yaml");
    for args in [&["--check-config", example][..], &["--help"], &["--version"]] {
        let out = Command::new(bin()).args(args).stdout(closed_pipe()).stderr(Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} wrote to stderr: {err}");
    }
    // A configuration error reported into a closed stderr still exits 2, not with a panic's 101.
    let out = Command::new(bin())
        .args(["--check-config", "/nonexistent/ftpgate.yaml"])
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(2));
}

/// The port `pid` listens on (IPv4), from the socket inodes among its descriptors and the
/// namespace's TCP table. Polled (bounded: 10 s, 20 ms apart) because a process whose log goes
/// nowhere cannot say when it is ready.
fn listening_port(child: &mut std::process::Child) -> u16 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("ftpgate exited ({st}) before listening");
        }
        let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id())).unwrap();
        let inodes: Vec<String> = fds
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
            .collect();
        let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", child.id())).unwrap_or_default();
        let port = table.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = f.get(3) == Some(&"0A") && f.get(9).is_some_and(|i| inodes.iter().any(|n| n == i));
            listening.then(|| u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()).flatten()
        });
        if let Some(p) = port {
            return p;
        }
        assert!(std::time::Instant::now() < deadline, "ftpgate did not listen within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_closed_log_pipe_does_not_stop_the_gateway() {
    use std::io::{Read, Write};
    // The upstream: greets, then waits for the client's QUIT.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = server.local_addr().unwrap().to_string();
    let greeter = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.write_all(b"220 ready\r\n").unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"221 bye\r\n");
    });
    let mut child = Command::new(bin())
        .args(["--listen", "127.0.0.1:0", "--upstream", &upstream, "--log-level", "debug"])
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .spawn()
        .unwrap();
    let port = listening_port(&mut child);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 11];
    let got = client.read_exact(&mut greeting);
    client.write_all(b"QUIT\r\n").unwrap();
    let alive = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    greeter.join().unwrap();
    assert!(got.is_ok() && &greeting == b"220 ready\r\n", "no greeting through the gateway: {got:?}");
    assert!(alive.is_none(), "ftpgate died while logging into a closed pipe: {alive:?}");
}

/// The long flags `--help` shows, in order.
fn help_flags() -> Vec<String> {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim_start().split([',', ' ']).find(|w| w.starts_with("--")))
        .map(str::to_owned)
        .collect();
    flags.dedup();
    assert!(flags.len() > 10, "too few flags found in --help: {flags:?}");
    flags
}

#[test]
fn generated_manual_and_completions_name_every_flag_of_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin()).arg("--generate").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (man, bash, zsh) = (read("ftpgate.8"), read("ftpgate.bash"), read("_ftpgate"));
    assert!(man.starts_with(".ie") && man.contains(".TH FTPGATE 8 "), "{}", &man[..200.min(man.len())]);
    for flag in help_flags() {
        // roff escapes each hyphen.
        assert!(man.contains(&flag.replace('-', "\\-")), "the manual page lacks {flag}");
        assert!(bash.contains(&format!(" {flag} ")) || bash.contains(&format!(" {flag}\"")), "bash lacks {flag}");
        // zsh: '--flag=[...]' or '--flag[...]', after an exclusion list `(...)` or a `*`
        // (repeatable) if any.
        let zsh_spec = ["'", ")", "*"]
            .iter()
            .any(|pre| ["=[", "["].iter().any(|post| zsh.contains(&format!("{pre}{flag}{post}"))));
        assert!(zsh_spec, "zsh lacks {flag}");
    }
    for section in
        ["INTERCEPTION MODES", "CONFIGURATION", "SIGNALS", "EXIT STATUS", "FILES", "METRICS", "SECURITY", "SEE ALSO"]
    {
        assert!(man.contains(&format!(".SH \"{section}\"")) || man.contains(&format!(".SH {section}\n")), "{section}");
    }
    // The metrics section lists what the exporter exports, label values included.
    let exported = String::from_utf8(ftpgate::metrics::Metrics::new().unwrap().render()).unwrap();
    for name in exported.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split(' ').next()) {
        assert!(man.contains(&format!("\\fB{}\\fR", name.replace('-', "\\-"))), "the manual lacks {name}");
    }
    for reason in ftpgate::labels::Reason::ALL {
        assert!(man.contains(reason.label()), "the manual lacks reason {}", reason.label());
    }
}

#[test]
fn readme_flag_table_names_every_flag_of_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("| flag | meaning |").expect("README has the flag table");
    let table: String = readme[start..].lines().take_while(|l| l.starts_with('|')).collect::<Vec<_>>().join("\n");
    for flag in help_flags().into_iter().filter(|f| f != "--help" && f != "--version") {
        assert!(
            table.contains(&format!("`{flag}")) || table.contains(&format!(" {flag} ")),
            "README's flag table lacks {flag}"
        );
    }
}

/// The certificate files belong to the configuration: --check-config reads them, and a missing
/// or unusable one is a configuration error naming its field.
#[test]
fn check_config_reads_the_tls_files_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ftpgate.yaml");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let yaml = format!("tls: terminate\nftps: {{certificate: {}, key: {}}}\n", cert.display(), key.display());
    std::fs::write(&f, &yaml).unwrap();
    let run = || {
        let out = Command::new(bin()).arg("--check-config").arg(&f).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`ftps.certificate`") && err.contains("cert.pem"), "{err}");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let (code, err) = run();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`ftps.certificate`"), "{err}");
    let k = rcgen::KeyPair::generate().unwrap();
    let c = rcgen::CertificateParams::new(vec!["ftp.example".to_owned()]).unwrap().self_signed(&k).unwrap();
    std::fs::write(&cert, c.pem()).unwrap();
    let (code, err) = run();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`ftps.key`"), "{err}");
    std::fs::write(&key, k.serialize_pem()).unwrap();
    let (code, err) = run();
    assert_eq!(code, Some(0), "{err}");
}
