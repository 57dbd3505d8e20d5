//! The lab: three network namespaces (client, firewall, server) joined by veth pairs, our own
//! nftables rule files loaded in the firewall, real FTP servers and clients.
//!
//! Everything runs inside the lab's namespaces; the root namespace only creates and deletes
//! them. Names are unique per lab, and a lab removes what it made when dropped, also when a
//! test panics.
//!
//! [`Lab`] is declared here; its methods are grouped by concern in the submodules: `namespaces`
//! (building a lab, running commands in it, tearing it down), `firewall` (rule files, egress
//! guard, watch counters), `processes` (servers, ftpgate and their logs). `skip` decides whether
//! a lab test can run at all, `files` makes the served tree and the test data.
#![allow(dead_code)]

pub mod clients;
mod files;
mod firewall;
mod helpers;
mod namespaces;
pub mod pki;
mod processes;
pub mod servers;
mod skip;

// Each lab_*.rs crate and the benchmark use a different part of what the lab offers; like the
// dead_code allowance above, this keeps the crates that use less of it quiet.
#[allow(unused_imports)]
pub use files::{random_bytes, sha256_file, write_big, Tree, DIR_ENTRIES, LARGE_BYTES};
#[allow(unused_imports)]
pub use helpers::{cpu_secs, eventually, log_field, sh, xferlog_rows};
pub use skip::gate;
#[allow(unused_imports)]
pub use skip::gate_files;

use servers::ServerKind;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::AtomicU32;

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

/// Who carries ftpgate's data connections in a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// ftpgate relays them (the default).
    Relay,
    /// ftpgate installs pinholes in `ftpgate-kernel-path.nft`'s table and the kernel forwards.
    Kernel,
}

impl DataPath {
    pub fn name(self) -> &'static str {
        match self {
            DataPath::Relay => "relay",
            DataPath::Kernel => "kernel",
        }
    }

    /// Whether a logged byte figure (`None`: "unknown") reports the transfer of `size` bytes in
    /// its data's direction: exactly on the relay path; on the kernel path as conntrack counts,
    /// IP-layer bytes with every packet's headers (at most 8 % more, and a few packets without
    /// data). Never a missing figure where the kernel counts.
    pub fn reports(self, size: u64, logged: Option<u64>) -> bool {
        match (self, logged) {
            (DataPath::Relay, Some(n)) => n == size,
            (DataPath::Kernel, Some(n)) => (size..=size + size * 8 / 100 + 512).contains(&n),
            (_, None) => false,
        }
    }

    /// FTPGATE_LAB_DATA_PATH, relay when unset.
    pub fn from_env() -> DataPath {
        match std::env::var("FTPGATE_LAB_DATA_PATH").as_deref() {
            Ok("kernel") => DataPath::Kernel,
            Ok("relay") | Err(_) => DataPath::Relay,
            Ok(other) => panic!("FTPGATE_LAB_DATA_PATH={other}: not relay or kernel"),
        }
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

/// The ftpgate a lab (and the benchmark) starts: `FTPGATE_BIN` (another build, an older
/// commit's or an installed one), else this build's.
pub fn ftpgate_bin() -> PathBuf {
    std::env::var_os("FTPGATE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ftpgate")))
}

/// Where a lab's firewall loads the nftables rule files from: FTPGATE_RULES (e.g. the
/// installed /usr/share/ftpgate/nftables), else the tree's nftables/.
pub fn rules_dir() -> PathBuf {
    std::env::var_os("FTPGATE_RULES").map(PathBuf::from).unwrap_or_else(|| manifest().join("nftables"))
}

static SEQ: AtomicU32 = AtomicU32::new(0);

struct Proc {
    name: String,
    child: Child,
}

// Declared here rather than in a submodule so that every submodule's `impl Lab` sees the
// private fields.
pub struct Lab {
    pub id: String,
    pub path: LabPath,
    pub client_ns: String,
    pub fw_ns: String,
    pub server_ns: String,
    pub dir: tempfile::TempDir,
    /// The ftpgate binary `start_ftpgate` runs.
    pub bin: PathBuf,
    /// The directory the path's rule files are loaded from.
    pub rules: PathBuf,
    /// Which data path `start_ftpgate` runs ftpgate with: the lab-wide default comes from
    /// FTPGATE_LAB_DATA_PATH (relay or kernel); [`Lab::kernel_path`] picks it for one lab.
    pub data_path: DataPath,
    procs: Vec<Proc>,
    namespaces: Vec<String>,
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
