//! The lab: three network namespaces (client, firewall, server) joined by veth pairs, our own
//! nftables rule files loaded in the firewall, real FTP servers and clients.
//!
//! Everything runs inside the lab's namespaces; the root namespace only creates and deletes
//! them. Names are unique per lab, and a lab removes what it made when dropped, also when a
//! test panics.
#![allow(dead_code)]

pub mod clients;
pub mod servers;

use servers::ServerKind;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const CLIENT4: &str = "203.0.113.2";
pub const FW_C4: &str = "203.0.113.1";
pub const FW_S4: &str = "198.51.100.1";
/// A second firewall address on the server side, for the source-address option.
pub const FW_S4_ALT: &str = "198.51.100.3";
pub const SERVER4: &str = "198.51.100.2";
pub const CLIENT6: &str = "2001:db8:1::2";
/// A second client-side address: the stranger in port-stealing tests, a second client in limits.
pub const CLIENT4_ALT: &str = "203.0.113.3";
pub const FW_C6: &str = "2001:db8:1::1";
pub const FW_S6: &str = "2001:db8:2::1";
pub const SERVER6: &str = "2001:db8:2::2";
pub const PROXY_PORT: u16 = 8021;
pub const PASSIVE_PORTS: &str = "50000-50999";
pub const SERVER_PASV: (u16, u16) = (40000, 40999);
/// ftpgate's fixed active-mode range when the filtering ruleset is loaded.
pub const ACTIVE_PORTS: &str = "45000-45999";
const TPROXY_MARK: &str = "0x2121";

/// What sits between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabPath {
    /// Plain forwarding: proves the lab itself.
    Routed,
    /// nft `ct helper` ftp + masquerade: the kernel's ALG.
    KernelHelper,
    /// ftpgate behind our REDIRECT rules.
    Redirect,
    /// ftpgate behind our TPROXY rules.
    Tproxy,
    /// ftpgate in reverse mode: clients dial the firewall's address.
    Reverse,
}

impl LabPath {
    pub fn name(self) -> &'static str {
        match self {
            LabPath::Routed => "routed",
            LabPath::KernelHelper => "kernel-helper",
            LabPath::Redirect => "redirect",
            LabPath::Tproxy => "tproxy",
            LabPath::Reverse => "reverse",
        }
    }

    /// Whether the server sees the firewall (true) or the client (false) as its peer.
    pub fn server_sees_firewall(self) -> bool {
        self != LabPath::Routed
    }

    pub fn uses_ftpgate(self) -> bool {
        matches!(self, LabPath::Redirect | LabPath::Tproxy | LabPath::Reverse)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn servers_dir() -> PathBuf {
    std::env::var_os("FTPGATE_LAB_SERVERS").map(PathBuf::from).unwrap_or_else(|| manifest().join("target/lab-servers"))
}

fn required() -> bool {
    std::env::var("FTPGATE_LAB").is_ok_and(|v| v == "require")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a lab test can run here. Without root or the tools, it prints one line and the test
/// returns early; with FTPGATE_LAB=require (CI) it fails instead.
pub fn gate(test: &str, server: Option<ServerKind>) -> bool {
    let mut missing = Vec::new();
    if !sh(&["id", "-u"]).is_ok_and(|u| u.trim() == "0") {
        missing.push("root (network namespaces)".to_owned());
    }
    for tool in ["ip", "nft", "curl", "lftp", "python3", "timeout"] {
        if !have(tool) {
            missing.push(format!("`{tool}`"));
        }
    }
    if let Some(s) = server {
        if let Err(e) = s.available(&servers_dir()) {
            missing.push(e);
        }
    }
    if missing.is_empty() {
        return true;
    }
    let line = format!(
        "SKIPPED lab test {test}: missing {} (run `sudo tests/lab/setup.sh` to install what the lab needs)",
        missing.join(", ")
    );
    if required() {
        panic!("FTPGATE_LAB=require but {line}");
    }
    eprintln!("{line}");
    false
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its output when it fails.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out =
        Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) -> String {
    sh(args).unwrap_or_else(|e| panic!("lab setup: {e}"))
}

struct Proc {
    name: String,
    child: Child,
}

pub struct Lab {
    pub id: String,
    pub path: LabPath,
    pub client_ns: String,
    pub fw_ns: String,
    pub server_ns: String,
    pub dir: tempfile::TempDir,
    procs: Vec<Proc>,
    namespaces: Vec<String>,
}

impl Lab {
    /// Builds the three namespaces, addresses, routes and guards, and loads the path's rules.
    pub fn new(path: LabPath) -> Lab {
        // FTPGATE_LAB_TAG lets a CI run find exactly the namespaces its own tests made.
        let tag = std::env::var("FTPGATE_LAB_TAG").unwrap_or_else(|_| "fg".to_owned());
        let id = format!("{tag}{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new().prefix(&format!("{id}-")).tempdir().expect("lab temp dir");
        // Servers drop privileges and must traverse into the tree.
        set_mode(dir.path(), 0o755);
        let mut lab = Lab {
            client_ns: format!("{id}-c"),
            fw_ns: format!("{id}-f"),
            server_ns: format!("{id}-s"),
            id,
            path,
            dir,
            procs: Vec::new(),
            namespaces: Vec::new(),
        };
        for ns in [lab.client_ns.clone(), lab.fw_ns.clone(), lab.server_ns.clone()] {
            must(&["ip", "netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        // The veth pairs are created inside the firewall namespace; nothing touches the root's.
        let (c, f, s) = (lab.client_ns.clone(), lab.fw_ns.clone(), lab.server_ns.clone());
        must(&["ip", "-n", &f, "link", "add", "cside", "type", "veth", "peer", "name", "eth0", "netns", &c]);
        must(&["ip", "-n", &f, "link", "add", "sside", "type", "veth", "peer", "name", "eth0", "netns", &s]);
        for (ns, dev, addrs) in [
            (&c, "eth0", vec![format!("{CLIENT4}/24"), format!("{CLIENT6}/64"), format!("{CLIENT4_ALT}/32")]),
            (&f, "cside", vec![format!("{FW_C4}/24"), format!("{FW_C6}/64")]),
            // The /32 never wins source selection toward the /24, so FW_S4 stays the default.
            (&f, "sside", vec![format!("{FW_S4}/24"), format!("{FW_S6}/64"), format!("{FW_S4_ALT}/32")]),
            (&s, "eth0", vec![format!("{SERVER4}/24"), format!("{SERVER6}/64")]),
        ] {
            for a in &addrs {
                let mut args = vec!["ip", "-n", ns.as_str(), "addr", "add", a.as_str(), "dev", dev];
                if a.contains(':') {
                    args.push("nodad");
                }
                must(&args);
            }
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        must(&["ip", "-n", &c, "route", "add", "default", "via", FW_C4]);
        must(&["ip", "-n", &c, "-6", "route", "add", "default", "via", FW_C6]);
        must(&["ip", "-n", &s, "route", "add", "default", "via", FW_S4]);
        must(&["ip", "-n", &s, "-6", "route", "add", "default", "via", FW_S6]);
        lab.exec_ok(&f, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        // vsftpd listens with a backlog of 32: under a burst of connections, SYN cookies would
        // drop handshakes and leave clients waiting a minute for a banner.
        lab.exec_ok(&s, &["sysctl", "-q", "-w", "net.ipv4.tcp_syncookies=0"]);
        for ns in [&c, &f, &s] {
            lab.load_guard(ns);
        }
        lab.load_watch();
        lab.load_path_rules();
        lab
    }

    /// `ip netns exec NS args...`, output on success.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> String {
        self.exec(ns, args).unwrap_or_else(|e| panic!("lab {}: {e}", self.id))
    }

    fn nft_text(&self, ns: &str, text: &str) {
        let f = self.dir.path().join(format!("{ns}-{}.nft", SEQ.fetch_add(1, Ordering::Relaxed)));
        fs::write(&f, text).unwrap();
        self.exec_ok(ns, &["nft", "-f", f.to_str().unwrap()]);
    }

    /// Drops and counts anything not addressed to loopback or the lab's documentation ranges.
    fn load_guard(&self, ns: &str) {
        let allowed = "ip daddr { 127.0.0.0/8, 203.0.113.0/24, 198.51.100.0/24 } accept
            ip6 daddr { ::1, 2001:db8::/32, fe80::/10, ff02::/16 } accept
            counter name escaped drop
            ";
        self.nft_text(
            ns,
            &format!(
                "table inet labguard {{
                    counter escaped {{ }}
                    chain guard_out {{ type filter hook output priority 0; policy accept; {allowed}
                    }}
                    chain guard_fwd {{ type filter hook forward priority 0; policy accept; {allowed}
                    }}
                }}"
            ),
        );
    }

    /// Counts connection attempts seen by the server, by where they come from or go to.
    fn load_watch(&self) {
        let syn = "tcp flags & (syn | ack) == syn";
        self.nft_text(
            &self.server_ns,
            &format!(
                "table inet labwatch {{
                    counter from_client {{ }}
                    counter from_fw {{ }}
                    counter to_client {{ }}
                    counter to_fw {{ }}
                    counter from_alt {{ }}
                    chain watch_in {{ type filter hook input priority 0; policy accept;
                        {syn} ip saddr 203.0.113.0/24 counter name from_client
                        {syn} ip6 saddr 2001:db8:1::/64 counter name from_client
                        {syn} ip saddr {FW_S4} counter name from_fw
                        {syn} ip6 saddr {FW_S6} counter name from_fw
                        {syn} ip saddr {FW_S4_ALT} counter name from_alt
                    }}
                    chain watch_out {{ type filter hook output priority 0; policy accept;
                        {syn} ip daddr 203.0.113.0/24 counter name to_client
                        {syn} ip6 daddr 2001:db8:1::/64 counter name to_client
                        {syn} ip daddr {FW_S4} counter name to_fw
                        {syn} ip6 daddr {FW_S6} counter name to_fw
                    }}
                }}"
            ),
        );
    }

    fn rule_file(name: &str) -> String {
        manifest().join("nftables").join(name).to_str().unwrap().to_owned()
    }

    /// Loads one of the shipped rule files into the firewall with the lab's values.
    pub fn load_rules(&self, file: &str) -> Result<String, String> {
        let path = Self::rule_file(file);
        self.exec(
            &self.fw_ns,
            &[
                "nft",
                "-D",
                "CLIENT_IF=\"cside\"",
                "-D",
                "SERVER_IF=\"sside\"",
                "-D",
                &format!("PROXY_PORT={PROXY_PORT}"),
                "-D",
                &format!("PASSIVE_PORTS={PASSIVE_PORTS}"),
                "-D",
                &format!("ACTIVE_PORTS={ACTIVE_PORTS}"),
                "-D",
                &format!("MARK={TPROXY_MARK}"),
                "-f",
                &path,
            ],
        )
    }

    fn load_path_rules(&mut self) {
        let r = match self.path {
            LabPath::Routed | LabPath::Reverse => Ok(String::new()),
            LabPath::KernelHelper => self.load_rules("ftpgate-kernel-helper.nft"),
            LabPath::Redirect => self.load_rules("ftpgate-redirect.nft"),
            LabPath::Tproxy => self.load_rules("ftpgate-tproxy.nft").and_then(|_| {
                let script = Self::rule_file("ftpgate-tproxy-routing.sh");
                self.exec(&self.fw_ns, &["sh", &script, "add", TPROXY_MARK, "121"])
            }),
        };
        r.unwrap_or_else(|e| panic!("lab {}: loading the {} rules failed: {e}", self.id, self.path.name()));
    }

    /// Starts a long-running process in a namespace, in its own process group so that it and
    /// whatever it forks are ended together, by its PID.
    pub fn spawn(&mut self, name: &str, ns: &str, argv: &[String]) -> (u32, PathBuf) {
        use std::os::unix::process::CommandExt;
        let log = self.dir.path().join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("lab {}: cannot start {name}: {e}", self.id));
        let pid = child.id();
        self.procs.push(Proc { name: name.to_owned(), child });
        (pid, log)
    }

    /// Waits (bounded: 30 s) for a process this lab started that is expected to finish on its
    /// own, and forgets it; true when it exited successfully.
    pub fn reap(&mut self, name: &str) -> bool {
        let Some(i) = self.procs.iter().position(|p| p.name == name) else { return false };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.procs[i].child.try_wait() {
                self.procs.remove(i);
                return st.success();
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls (bounded: 10 s, 20 ms apart) until something listens on `port` at `addr` in `ns`:
    /// there is nothing to await for a foreign process's readiness.
    pub fn wait_listening(&mut self, ns: &str, addr: &str, port: u16) {
        let want = if addr.contains(':') { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.exec(ns, &["ss", "-Hltn"]).unwrap_or_default();
            if out.split_whitespace().any(|w| w == want || (addr == "*" && w.ends_with(&format!(":{port}")))) {
                return;
            }
            if let Some(dead) = self.dead_process() {
                panic!("lab {}: {dead} exited before listening on {want}: {}", self.id, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "lab {}: nothing listens on {want} in {ns} after 10 s: {}",
                self.id,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn dead_process(&mut self) -> Option<String> {
        self.procs.iter_mut().find_map(|p| match p.child.try_wait() {
            Ok(Some(st)) => Some(format!("{} ({st})", p.name)),
            _ => None,
        })
    }

    /// The tails of every process log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            let log = self.dir.path().join(format!("{}.log", p.name));
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            s.push_str(&format!("\n--- {} log ---\n{tail}", p.name));
        }
        s
    }

    /// Starts `server` on the lab's server addresses with a served tree; returns the tree.
    pub fn start_server(&mut self, server: ServerKind) -> Tree {
        let tree = Tree::create(self.dir.path());
        self.start_server_at(server, &tree, &[SERVER4, SERVER6], server.name(), &|conf| conf);
        tree
    }

    /// Starts `server` on `addrs` serving `tree`, its rendered configuration files passed
    /// through `edit` (a server that refuses a data mode, say). `run` names its run directory.
    pub fn start_server_at(
        &mut self,
        server: ServerKind,
        tree: &Tree,
        addrs: &[&str],
        run: &str,
        edit: &dyn Fn(String) -> String,
    ) {
        let run_dir = self.dir.path().join(format!("run-{run}"));
        fs::create_dir_all(&run_dir).unwrap();
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let argvs = server
            .prepare(&servers_dir(), &ips, &tree.anon, &tree.upload, &run_dir, SERVER_PASV)
            .unwrap_or_else(|e| panic!("preparing {}: {e}", server.name()));
        for entry in fs::read_dir(&run_dir).unwrap().flatten() {
            for file in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                let p = file.path();
                if p.extension().is_some_and(|e| e == "conf" || e == "args") {
                    fs::write(&p, edit(fs::read_to_string(&p).unwrap())).unwrap();
                }
            }
        }
        let ns = self.server_ns.clone();
        for (i, argv) in argvs.iter().enumerate() {
            self.spawn(&format!("{run}-{i}"), &ns, argv);
        }
        for a in addrs {
            self.wait_listening(&ns, a, 21);
        }
    }

    /// Writes a file into the lab's directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
    }

    /// Starts the misbehaving server (tests/lab/hostile_server.py) on the server's IPv4 address.
    pub fn start_hostile(&mut self, behaviour: &str) {
        let script = manifest().join("tests/lab/hostile_server.py").to_str().unwrap().to_owned();
        let ns = self.server_ns.clone();
        let argv: Vec<String> =
            ["python3", &script, "--addr", SERVER4, "--behaviour", behaviour].iter().map(|s| s.to_string()).collect();
        self.spawn("hostile", &ns, &argv);
        self.wait_listening(&ns, SERVER4, 21);
    }

    /// Runs tests/lab/attack.py in the client namespace against `host:port` with `steps`.
    pub fn attack(&self, host: &str, port: u16, steps: &[&str]) -> (bool, String) {
        let script = manifest().join("tests/lab/attack.py").to_str().unwrap().to_owned();
        let port = port.to_string();
        let mut argv = vec!["python3", script.as_str(), host, port.as_str()];
        argv.extend_from_slice(steps);
        let (ok, out) = self.client_run(&argv);
        (ok && out.lines().any(|l| l == "OK"), out)
    }

    /// Listening TCP sockets in the firewall namespace with a port in ftpgate's passive range.
    pub fn passive_listeners(&self) -> usize {
        let out = self.exec_ok(&self.fw_ns, &["ss", "-Hltn"]);
        out.lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .filter_map(|a| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()))
            .filter(|p| (50000..=50999).contains(p))
            .count()
    }

    /// Starts ftpgate in the firewall namespace for this lab's path (plus `extra` flags).
    pub fn start_ftpgate(&mut self, extra: &[&str]) -> Vec<u32> {
        let bin = env!("CARGO_BIN_EXE_ftpgate").to_owned();
        let fw = self.fw_ns.clone();
        let mut base: Vec<String> = vec![bin, "--log-level".into(), "debug,ftpgate::proxy::control=trace".into()];
        base.extend(extra.iter().map(|s| s.to_string()));
        match self.path {
            LabPath::Redirect => {
                let (pid, _) = self.spawn("ftpgate", &fw, &base);
                self.wait_listening(&fw, "0.0.0.0", PROXY_PORT);
                vec![pid]
            }
            LabPath::Tproxy => {
                base.extend(["--intercept".into(), "tproxy".into()]);
                let (pid, _) = self.spawn("ftpgate", &fw, &base);
                self.wait_listening(&fw, "0.0.0.0", PROXY_PORT);
                vec![pid]
            }
            LabPath::Reverse => {
                // One instance per family, each in front of the server's address of that family.
                let mut v4 = base.clone();
                v4.extend(["--listen".into(), format!("{FW_C4}:21"), "--upstream".into(), format!("{SERVER4}:21")]);
                let (p4, _) = self.spawn("ftpgate-v4", &fw, &v4);
                let mut v6 = base;
                v6.extend(["--listen".into(), format!("[{FW_C6}]:21"), "--upstream".into(), format!("[{SERVER6}]:21")]);
                v6.extend(["--passive-ports".into(), "51000-51999".into()]);
                let (p6, _) = self.spawn("ftpgate-v6", &fw, &v6);
                self.wait_listening(&fw, FW_C4, 21);
                self.wait_listening(&fw, FW_C6, 21);
                vec![p4, p6]
            }
            LabPath::Routed | LabPath::KernelHelper => Vec::new(),
        }
    }

    /// The host a client dials for the server, by family.
    pub fn dial_host(&self, family: Family) -> &'static str {
        match (self.path, family) {
            (LabPath::Reverse, Family::V4) => FW_C4,
            (LabPath::Reverse, Family::V6) => FW_C6,
            (_, Family::V4) => SERVER4,
            (_, Family::V6) => SERVER6,
        }
    }

    /// `ftpgate_rejections_total{reason}` as scraped from the metrics endpoint of the lab's
    /// ftpgate at `metrics` (in the firewall namespace).
    pub fn rejections(&self, metrics: &str, reason: &str) -> u64 {
        let url = format!("http://{metrics}/metrics");
        let text = self.exec(&self.fw_ns, &["curl", "-sS", "--max-time", "10", &url]).unwrap();
        let series = format!("ftpgate_rejections_total{{reason=\"{reason}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Packets counted by the named nft counter of an `inet` table.
    pub fn counter(&self, ns: &str, table: &str, name: &str) -> u64 {
        let out = self.exec_ok(ns, &["nft", "list", "counter", "inet", table, name]);
        let words: Vec<&str> = out.split_whitespace().collect();
        words.windows(2).find(|w| w[0] == "packets").and_then(|w| w[1].parse().ok()).unwrap_or(0)
    }

    pub fn reset_watch(&self) {
        self.exec_ok(&self.server_ns, &["nft", "reset", "counters", "table", "inet", "labwatch"]);
    }

    /// Connection attempts (SYNs) the server saw: (from client, from firewall, to client, to firewall).
    pub fn watch(&self) -> [u64; 4] {
        ["from_client", "from_fw", "to_client", "to_fw"].map(|n| self.counter(&self.server_ns, "labwatch", n))
    }

    /// Packets any lab namespace tried to send outside the lab ranges.
    pub fn escaped(&self) -> u64 {
        [&self.client_ns, &self.fw_ns, &self.server_ns].iter().map(|ns| self.counter(ns, "labguard", "escaped")).sum()
    }

    pub fn seen_from_alt(&self) -> u64 {
        self.counter(&self.server_ns, "labwatch", "from_alt")
    }

    /// Runs a client-side command in the client namespace (bounded by `timeout`), returning
    /// its combined output and whether it succeeded.
    pub fn client_run(&self, argv: &[&str]) -> (bool, String) {
        let mut full = vec!["ip", "netns", "exec", self.client_ns.as_str(), "timeout", "600"];
        full.extend_from_slice(argv);
        let out = Command::new(full[0]).args(&full[1..]).stdin(Stdio::null()).output().expect("run client");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// The whole log of one process this lab started.
    pub fn log_of(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Final checks of a lab that ran: nothing escaped the guard, the processes still live.
    pub fn finish(mut self) {
        assert_eq!(self.escaped(), 0, "lab {}: packets to addresses outside the lab were dropped", self.id);
        if let Some(dead) = self.dead_process() {
            panic!("lab {}: {dead} died during the test: {}", self.id, self.logs());
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            // End the process group we created for it (the server and its forks), by its PID.
            let group = format!("-{}", p.child.id());
            let _ = sh(&["kill", "-TERM", "--", &group]);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(p.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = sh(&["kill", "-KILL", "--", &group]);
            let _ = p.child.wait();
        }
        for ns in self.namespaces.drain(..) {
            // Session processes a server forked into its own group stay in the lab's namespace:
            // everything still there was started by this lab.
            for pid in sh(&["ip", "netns", "pids", &ns]).unwrap_or_default().split_whitespace() {
                let _ = sh(&["kill", "-KILL", pid]);
            }
            let _ = sh(&["ip", "netns", "del", &ns]);
        }
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// The usual start of a lab test: the gate for `test`, then a lab on `path` with `server`
/// started and its tree ready. `None` when the test is skipped.
pub fn with_server(test: &str, path: LabPath, server: ServerKind) -> Option<(Lab, Tree)> {
    if !gate(test, Some(server)) {
        return None;
    }
    let mut lab = Lab::new(path);
    let tree = lab.start_server(server);
    Some((lab, tree))
}

/// Bounded poll (within `limit`, 50 ms apart) for something another process does, which
/// cannot be awaited from the test.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The served test tree and its expected checksums.
pub struct Tree {
    pub anon: PathBuf,
    pub upload: PathBuf,
    pub small_sha: String,
    pub large_sha: String,
    pub upload_file: PathBuf,
    pub upload_sha: String,
}

pub const LARGE_BYTES: usize = 64 << 20;
pub const DIR_ENTRIES: usize = 1000;

/// Deterministic fast pseudo-random bytes (xorshift): incompressible enough for a transfer test.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes `len` bytes of varied random data to `path` (every 8 MiB chunk differs, so no two
/// regions of the file are equal); returns its SHA-256.
pub fn write_big(path: &Path, len: usize) -> String {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let chunk = random_bytes(8 << 20, 99);
    let mut left = len;
    let mut i = 0u8;
    while left > 0 {
        let n = left.min(chunk.len());
        // Vary each chunk so that no two regions of the file are equal.
        let mut c = chunk[..n].to_vec();
        c[0] = i;
        c[n / 2] ^= i;
        f.write_all(&c).unwrap();
        left -= n;
        i = i.wrapping_add(1);
    }
    f.flush().unwrap();
    drop(f);
    sha256_file(path)
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

impl Tree {
    pub fn create(base: &Path) -> Tree {
        let anon = base.join("anon");
        let upload = base.join("upload");
        fs::create_dir_all(anon.join("dir")).unwrap();
        fs::create_dir_all(&upload).unwrap();
        fs::write(anon.join("small.bin"), random_bytes(1536, 7)).unwrap();
        fs::write(anon.join("large.bin"), random_bytes(LARGE_BYTES, 11)).unwrap();
        for i in 0..DIR_ENTRIES {
            fs::write(anon.join("dir").join(format!("entry{i:04}.txt")), format!("{i}\n")).unwrap();
        }
        let upload_file = base.join("upload-source.bin");
        fs::write(&upload_file, random_bytes(3 << 20, 13)).unwrap();
        for d in [&anon, &anon.join("dir")] {
            set_mode(d, 0o755);
        }
        let _ = sh(&["chown", &format!("{0}:{0}", servers::LAB_USER), upload.to_str().unwrap()]);
        set_mode(&upload, 0o755);
        Tree {
            small_sha: sha256_file(&anon.join("small.bin")),
            large_sha: sha256_file(&anon.join("large.bin")),
            upload_sha: sha256_file(&upload_file),
            anon,
            upload,
            upload_file,
        }
    }
}
