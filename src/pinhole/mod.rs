//! The kernel data path: instead of relaying a data connection, ftpgate asks the kernel to
//! forward exactly one connection, from the expected peer to the expected address and port,
//! translated so that each side sees what it saw on the control connection. On Linux only the
//! contents of sets change; the rules that use them are static (`nftables/ftpgate-kernel-path.nft`).
//!
//! Linux: nf_tables set and map elements, written over one netlink socket ([`nft`]).
//! FreeBSD and OpenBSD: one pf anchor per pinhole under `ftpgate/`, its rules loaded in one
//! transaction through /dev/pf (`pf_dev` keeps the books for both; FreeBSD's rules are
//! nvlists: `pf_nv`, `pf_rules`, `nvlist`; OpenBSD's `struct pfioc_rule`: `pf_obsd`,
//! `pf_obsd_abi`). Other platforms have no kernel data path: asking for one fails at start-up.

#[cfg(target_os = "linux")]
mod accounting;
#[cfg(target_os = "linux")]
mod conn;
#[cfg(target_os = "linux")]
mod conntrack;
#[cfg(target_os = "linux")]
mod flows;
#[cfg(target_os = "linux")]
mod netlink;
#[cfg(target_os = "linux")]
mod nft;
#[cfg(target_os = "linux")]
mod writer;
// The pf pieces are pure (and tested) everywhere; only the ioctls are the BSDs'.
#[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
mod nvlist;
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
mod pf_anchors;
#[cfg_attr(not(any(target_os = "freebsd", target_os = "openbsd")), allow(dead_code))]
mod pf_dev;
#[cfg(target_os = "freebsd")]
mod pf_ffi;
#[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
mod pf_nv;
#[cfg_attr(not(target_os = "openbsd"), allow(dead_code))]
mod pf_obsd;
#[cfg_attr(not(target_os = "openbsd"), allow(dead_code))]
mod pf_obsd_abi;
#[cfg(target_os = "openbsd")]
mod pf_obsd_ffi;
#[cfg_attr(not(any(target_os = "freebsd", target_os = "openbsd")), allow(dead_code))]
mod pf_rules;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use thiserror::Error;

/// The table `nftables/ftpgate-kernel-path.nft` defines.
pub const TABLE: &str = "ftpgate_kernel_path";

/// One expected data connection. The peer connects to `dialled`; the kernel sends it on to
/// `target`, where it arrives from `source` (and `source_port`, when set; otherwise the
/// peer's port is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pinhole {
    pub peer: IpAddr,
    pub dialled: SocketAddr,
    pub target: SocketAddr,
    pub source: IpAddr,
    pub source_port: Option<u16>,
}

impl Pinhole {
    /// All four addresses are of one family (a pinhole never translates between them).
    pub fn is_consistent(&self) -> bool {
        let v6 = self.peer.is_ipv6();
        self.dialled.is_ipv6() == v6 && self.target.is_ipv6() == v6 && self.source.is_ipv6() == v6
    }
}

/// One installation of a pinhole. A server may hand the same data port out again while the
/// connection of the first pinhole with that key still runs; the second installation then
/// re-arms the same key, and the first one's check must still say "used".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(pub u64);

#[derive(Debug, Error)]
pub enum PinholeError {
    /// At start-up: the kernel refused the probe (no CAP_NET_ADMIN, the table is not loaded).
    #[error("kernel data path: {what}: {source}{hint}")]
    Setup { what: &'static str, source: io::Error, hint: &'static str },
    /// The kernel refused one pinhole (an identical one is armed, the set is full, ...).
    #[error("kernel data path: installing the pinhole failed: {0}")]
    Install(io::Error),
    #[error("kernel data path: {0}")]
    Gone(&'static str),
    /// Reading the kernel's connection tracking failed.
    #[error("kernel data path: conntrack: {0}")]
    Conntrack(io::Error),
    #[error("kernel data path: a pinhole mixes IPv4 and IPv6 addresses")]
    MixedFamilies,
    #[error("the kernel data path is not available on this platform")]
    Unsupported,
}

/// TCP states in conntrack after which no data byte moves any more.
const TCP_TIME_WAIT: u8 = 7;
const TCP_CLOSE: u8 = 8;

/// What the kernel counted in one direction: IP-layer bytes (headers included) and packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes: u64,
    pub packets: u64,
}

/// One conntrack entry as far as ftpgate reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub id: Option<u32>,
    /// The original direction: from the peer that opened the connection.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub tcp_state: Option<u8>,
    /// Original and reply direction; `None` when accounting was off as the entry was made.
    pub counts: Option<[Counts; 2]>,
}

impl Flow {
    /// Both ends have closed (TIME_WAIT) or it was reset (CLOSE): the counters are final.
    pub fn is_over(&self) -> bool {
        matches!(self.tcp_state, Some(TCP_TIME_WAIT | TCP_CLOSE))
    }
}

/// How the conntrack entry of a pinhole's connection was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// Looked up exactly, by the source port the gate's rule recorded.
    SourcePort,
    /// Searched for with a dump the kernel filters (it walks the whole conntrack table).
    Search,
}

impl FoundBy {
    pub fn label(self) -> &'static str {
        match self {
            FoundBy::SourcePort => "source_port",
            FoundBy::Search => "search",
        }
    }
}

/// A pinhole's connection's conntrack entry, and how it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub flow: Flow,
    pub by: FoundBy,
}

/// The process's one connection to the kernel's pinhole sets.
#[cfg(target_os = "linux")]
pub use writer::Pinholes;

/// FreeBSD and OpenBSD: pf anchors through /dev/pf.
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
pub type Pinholes = pf_dev::PfPinholes<pf_anchors::Dev>;

/// Whether the kernel counts what its pinholes let through and turned away (the
/// `ftpgate_kernel_path_packets_total` metrics): nf_tables counters do; pf has no such count.
pub const COUNTERS: bool = cfg!(target_os = "linux");

/// Elsewhere: nothing can be opened, so `data_path: kernel` fails at start-up.
#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
pub struct Pinholes;

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
impl Pinholes {
    pub fn open() -> Result<Self, PinholeError> {
        Err(PinholeError::Unsupported)
    }

    pub async fn install(&self, _: Pinhole, _: Duration) -> Result<Ticket, PinholeError> {
        Err(PinholeError::Unsupported)
    }

    pub async fn armed(&self, _: Pinhole, _: Ticket) -> Result<bool, PinholeError> {
        Err(PinholeError::Unsupported)
    }

    pub fn remove(&self, _: Pinhole, _: Ticket) {}

    pub fn cut(&self, _: Pinhole, _: Duration) {}

    pub async fn counters(&self) -> Result<[u64; 2], PinholeError> {
        Err(PinholeError::Unsupported)
    }

    pub fn counting(&self) -> bool {
        false
    }

    pub async fn find_flow(&self, _: Pinhole) -> Result<Option<Found>, PinholeError> {
        Err(PinholeError::Unsupported)
    }

    pub async fn read_flow(&self, _: SocketAddr, _: SocketAddr) -> Result<Option<Flow>, PinholeError> {
        Err(PinholeError::Unsupported)
    }
}

/// How long an armed pinhole is polled between checks: short at first (most data connections
/// come within milliseconds of the reply that announced them), then longer.
pub fn poll_interval(checks: u32) -> Duration {
    Duration::from_millis((10u64 << checks.min(5)).min(250))
}

/// The tests' passive pinhole: a client dials the server's address (intercepted), port 30000;
/// the firewall sends it on to the server's data port from its own server-side address.
#[cfg(test)]
pub(crate) fn sample_passive() -> Pinhole {
    Pinhole {
        peer: "203.0.113.2".parse().unwrap(),
        dialled: "198.51.100.2:30000".parse().unwrap(),
        target: "198.51.100.2:30000".parse().unwrap(),
        source: "198.51.100.1".parse().unwrap(),
        source_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_backs_off_to_a_bound() {
        assert_eq!(poll_interval(0), Duration::from_millis(10));
        assert_eq!(poll_interval(2), Duration::from_millis(40));
        assert_eq!(poll_interval(5), Duration::from_millis(250));
        assert_eq!(poll_interval(1000), Duration::from_millis(250));
    }

    #[test]
    fn families_must_agree() {
        let p = sample_passive();
        assert!(p.is_consistent());
        assert!(!Pinhole { source: "2001:db8:2::1".parse().unwrap(), ..p }.is_consistent());
    }
}
