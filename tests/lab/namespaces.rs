//! A lab's life: its three namespaces with addresses, routes, forwarding and guards, built by
//! [`Lab::new`]; commands run inside them; the final checks; and the teardown on drop, which
//! also runs when a test panics.

use super::helpers::{must, set_mode, sh};
use super::{
    ftpgate_bin, rules_dir, Family, Lab, LabPath, CLIENT4, CLIENT4_ALT, CLIENT6, FW_C4, FW_C6, FW_S4, FW_S4_ALT, FW_S6,
    SEQ, SERVER4, SERVER6,
};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Lab {
    /// Builds the three namespaces, addresses, routes and guards, and loads the path's rules
    /// from [`rules_dir`]; `start_ftpgate` runs [`ftpgate_bin`].
    pub fn new(path: LabPath) -> Lab {
        Lab::with_files(path, ftpgate_bin(), rules_dir())
    }

    /// [`Lab::new`] with the ftpgate binary and the rule directory given (an installed package's).
    pub fn with_files(path: LabPath, bin: PathBuf, rules: PathBuf) -> Lab {
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
            bin,
            rules,
            data_path: super::DataPath::from_env(),
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

    /// Writes a file into the lab's directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
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

    /// The host a client dials for the server, by family.
    pub fn dial_host(&self, family: Family) -> &'static str {
        match (self.path, family) {
            (LabPath::Reverse, Family::V4) => FW_C4,
            (LabPath::Reverse, Family::V6) => FW_C6,
            (_, Family::V4) => SERVER4,
            (_, Family::V6) => SERVER6,
        }
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
