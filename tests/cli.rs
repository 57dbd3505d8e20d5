//! The binary as an admin meets it: start-up failures with clear messages and exit codes, the
//! JSON log format.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ftpgate");

#[test]
fn port_in_use_exits_3_and_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["--listen", &addr, "--upstream", "127.0.0.1:21"]).output().unwrap();
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
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--inh-caps=-all", BIN])
        .args(["--intercept", "tproxy", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_NET_ADMIN"));
}

#[test]
fn json_log_lines_are_json_objects_with_level_and_message() {
    let mut child = Command::new(BIN)
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
        let out = Command::new(BIN).args(args).stdout(closed_pipe()).stderr(Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} wrote to stderr: {err}");
    }
    // A configuration error reported into a closed stderr still exits 2, not with a panic's 101.
    let out = Command::new(BIN)
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
    let mut child = Command::new(BIN)
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
    let out = Command::new(BIN).arg("--help").output().unwrap();
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
    let out = Command::new(BIN).arg("--generate").arg(dir.path()).output().unwrap();
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
