//! The lab's nftables: the shipped rule files loaded in the firewall for the path under test,
//! the guard in every namespace that drops and counts what would leave the lab's address
//! ranges, and the server-side counters of connection attempts by origin.

use super::{Lab, LabPath, ACTIVE_PORTS, FW_S4, FW_S4_ALT, FW_S6, PASSIVE_PORTS, PROXY_PORT, SEQ};
use std::fs;
use std::sync::atomic::Ordering;

const TPROXY_MARK: &str = "0x2121";

impl Lab {
    fn nft_text(&self, ns: &str, text: &str) {
        let f = self.dir.path().join(format!("{ns}-{}.nft", SEQ.fetch_add(1, Ordering::Relaxed)));
        fs::write(&f, text).unwrap();
        self.exec_ok(ns, &["nft", "-f", f.to_str().unwrap()]);
    }

    /// Drops and counts anything not addressed to loopback or the lab's documentation ranges.
    pub(super) fn load_guard(&self, ns: &str) {
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
    pub(super) fn load_watch(&self) {
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

    fn rule_file(&self, name: &str) -> String {
        self.rules.join(name).to_str().unwrap().to_owned()
    }

    /// Loads one of the shipped rule files (from the lab's rule directory) into the firewall
    /// with the lab's values.
    pub fn load_rules(&self, file: &str) -> Result<String, String> {
        let path = self.rule_file(file);
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

    /// Runs this lab's ftpgate on the kernel data path (one call: the benchmark's entry too).
    pub fn kernel_path(&mut self) -> &mut Self {
        self.data_path = super::DataPath::Kernel;
        self
    }

    /// The kernel data path's table, loaded once per lab (reloading would drop pinholes).
    pub(super) fn load_kernel_path_rules(&self) {
        if self.exec(&self.fw_ns, &["nft", "list", "table", "inet", "ftpgate_kernel_path"]).is_ok() {
            return;
        }
        self.load_rules("ftpgate-kernel-path.nft")
            .unwrap_or_else(|e| panic!("lab {}: loading ftpgate-kernel-path.nft failed: {e}", self.id));
    }

    /// The elements of one set (or map) of the kernel data path's table, as `nft` lists them.
    pub fn pinhole_elements(&self, set: &str) -> Vec<String> {
        let kind = if set.starts_with("dnat") || set.starts_with("snat") { "map" } else { "set" };
        let out = self.exec_ok(&self.fw_ns, &["nft", "list", kind, "inet", "ftpgate_kernel_path", set]);
        let Some(start) = out.find("elements = {") else { return Vec::new() };
        let body = &out[start + "elements = {".len()..];
        let body = &body[..body.find('}').unwrap_or(body.len())];
        body.split(',').map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect()
    }

    /// The shipped policy routing that delivers packets carrying the lab's mark locally.
    fn load_local_routing(&self) -> Result<String, String> {
        let script = self.rule_file("ftpgate-tproxy-routing.sh");
        self.exec(&self.fw_ns, &["sh", &script, "add", TPROXY_MARK, "121"])
    }

    pub(super) fn load_path_rules(&mut self) {
        let r = match self.path {
            LabPath::Routed | LabPath::Reverse => Ok(String::new()),
            LabPath::KernelHelper => self.load_rules("ftpgate-kernel-helper.nft"),
            // The routing serves transparent active mode (`active.source: original`).
            LabPath::Redirect => self.load_rules("ftpgate-redirect.nft").and_then(|_| self.load_local_routing()),
            LabPath::Tproxy => self.load_rules("ftpgate-tproxy.nft").and_then(|_| self.load_local_routing()),
        };
        r.unwrap_or_else(|e| panic!("lab {}: loading the {} rules failed: {e}", self.id, self.path.name()));
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
}
