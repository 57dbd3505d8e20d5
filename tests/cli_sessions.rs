//! `ftpgate sessions` against a running ftpgate: the table and the JSON, ending a session with
//! --kill (its client gets 421), and clear errors with distinct exit codes when no instance
//! answers or the configuration has no admin API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> String {
    std::env::var("FTPGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ftpgate").to_owned())
}

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// ftpgate in reverse mode toward `upstream`, its admin API on loopback; killed (by its PID)
/// when dropped, also when a test fails.
struct Running {
    child: Child,
    listen: SocketAddr,
    admin: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(upstream: SocketAddr, config: &std::path::Path) -> Running {
    std::fs::write(config, "listen: ['127.0.0.1:0']\nadmin: {listen: '127.0.0.1:0'}\n").unwrap();
    let child = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "--upstream", &upstream.to_string(), "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log is read on a thread of its own (which also keeps the pipe drained), so that
    // every wait for a line is bounded.
    // Killed by the guard's drop from here on, also when this function panics.
    let mut running = Running { child, listen: SocketAddr::from(([0, 0, 0, 0], 0)), admin: String::new() };
    let stderr = BufReader::new(running.child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut listen, mut admin) = (None, None);
    let deadline = Instant::now() + STEP;
    while listen.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let message = v["message"].as_str().unwrap_or_default();
        if message == "ftpgate listening" {
            listen = v["listen"].as_str().map(|s| s.trim_matches(['[', ']']).parse().unwrap());
        } else if message.contains("admin API") {
            admin = v["listen"].as_str().map(|s| format!("http://{s}"));
        }
    }
    let (Some(listen), Some(admin)) = (listen, admin) else { panic!("ftpgate did not say where it listens") };
    (running.listen, running.admin) = (listen, admin);
    running
}

fn sessions(args: &[&str]) -> Output {
    Command::new(bin()).arg("sessions").args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(STEP)).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => line.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn sessions_lists_and_kills_through_the_running_instance() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = start(upstream.local_addr().unwrap(), &dir.path().join("ftpgate.yaml"));
    let admin = gw.admin.as_str();

    let out = sessions(&["--admin", admin]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "no sessions\n"), "{}", stderr(&out));
    let out = sessions(&["--admin", admin, "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), serde_json::json!([]));

    // A client logs in as carol through ftpgate; the test plays the server.
    let mut client = TcpStream::connect(gw.listen).unwrap();
    let (mut server, _) = upstream.accept().unwrap();
    server.write_all(b"220 test server\r\n").unwrap();
    assert!(read_line(&mut client).starts_with("220"));
    client.write_all(b"USER carol\r\n").unwrap();
    assert_eq!(read_line(&mut server), "USER carol\r\n");
    server.write_all(b"331 password please\r\n").unwrap();
    assert!(read_line(&mut client).starts_with("331"));

    let deadline = Instant::now() + STEP;
    let table = loop {
        let out = sessions(&["--admin", admin]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        if text.contains("carol") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    for column in ["ID", "CLIENT", "SERVER", "USER", "PHASE", "AGE", "DOWN", "UP", "TRANSFER"] {
        assert!(lines[0].contains(column), "{column} missing: {table}");
    }
    let upstream_addr = upstream.local_addr().unwrap().to_string();
    assert!(lines[1].starts_with("1 ") && lines[1].contains(&upstream_addr) && lines[1].contains(" ready "), "{table}");
    let out = sessions(&["--admin", admin, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["user"], "carol");

    let out = sessions(&["--admin", admin, "--kill", "99"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("no session 99"), "{}", stderr(&out));
    let out = sessions(&["--admin", admin, "--kill", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("session 1 (") && stdout(&out).contains("carol"), "{}", stdout(&out));
    assert_eq!(read_line(&mut client), "421 Session ended by the administrator\r\n");
}

#[test]
fn sessions_without_an_instance_or_an_admin_api_says_so() {
    // A port nobody listens on any more.
    let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = sessions(&["--admin", &format!("http://{gone}")]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no ftpgate answers at"), "{}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ftpgate.yaml");
    std::fs::write(&f, "listen: ['127.0.0.1:0']\n").unwrap();
    let out = sessions(&["--config", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not set admin.listen"), "{}", stderr(&out));

    let out = sessions(&["--config", "/nonexistent/ftpgate.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/ftpgate.yaml"), "{}", stderr(&out));

    // The token file of the configuration is read, and must hold a usable token.
    std::fs::write(dir.path().join("weak"), "short\n").unwrap();
    let weak = dir.path().join("weak");
    let out = sessions(&["--admin", &format!("http://{gone}"), "--token-file", weak.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("token"), "{}", stderr(&out));
}
