//! Long-running processes of a lab (FTP servers, ftpgate, the hostile server, scripts): each in
//! its own process group so that it and its forks end together, each logging to a file in the
//! lab's directory; and what can be seen of them from outside (listeners, metrics).

use super::servers::ServerKind;
use super::{
    manifest, servers_dir, DataPath, Lab, LabPath, Proc, Tree, FW_C4, FW_C6, PROXY_PORT, SERVER4, SERVER6, SERVER_PASV,
};
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Lab {
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

    pub(super) fn dead_process(&mut self) -> Option<String> {
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

    /// The whole log of one process this lab started.
    pub fn log_of(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
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
        self.start_server_on(server, tree, addrs, run, 21, edit);
    }

    /// As `start_server_at`, for a server that `edit` moves to listen on `port` (implicit FTPS
    /// on 990, say): waits for that port instead of 21.
    pub fn start_server_on(
        &mut self,
        server: ServerKind,
        tree: &Tree,
        addrs: &[&str],
        run: &str,
        port: u16,
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
            self.wait_listening(&ns, a, port);
        }
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

    /// Starts ftpgate in the firewall namespace for this lab's path (plus `extra` flags).
    pub fn start_ftpgate(&mut self, extra: &[&str]) -> Vec<u32> {
        let bin = self.bin.to_str().unwrap().to_owned();
        let fw = self.fw_ns.clone();
        let mut base: Vec<String> = vec![bin, "--log-level".into(), "debug,ftpgate::proxy::control=trace".into()];
        if self.data_path == DataPath::Kernel && self.path.uses_ftpgate() {
            self.load_kernel_path_rules();
            base.extend(["--data-path".into(), "kernel".into()]);
        }
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

    /// Rewrites the configuration file `ftpgate.yaml` of the lab's ftpgate (PID `pid`) with
    /// `yaml` and has it reloaded (SIGHUP); waits (bounded: 10 s) for its log to say so.
    pub fn reload_config(&self, pid: u32, yaml: &str) {
        let reloads = || self.log_of("ftpgate").matches("configuration reloaded").count();
        let before = reloads();
        self.write("ftpgate.yaml", yaml);
        super::sh(&["kill", "-HUP", &pid.to_string()]).unwrap();
        super::eventually(Duration::from_secs(10), "the reload", || reloads() > before);
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

    /// `ftpgate_rejections_total{reason}` as scraped from the metrics endpoint of the lab's
    /// ftpgate at `metrics` (in the firewall namespace).
    pub fn rejections(&self, metrics: &str, reason: &str) -> u64 {
        let url = format!("http://{metrics}/metrics");
        let text = self.exec(&self.fw_ns, &["curl", "-sS", "--max-time", "10", &url]).unwrap();
        let series = format!("ftpgate_rejections_total{{reason=\"{reason}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}
