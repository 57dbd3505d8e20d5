//! What a pinhole is in pf: the rules committed into its own anchor under ftpgate's
//! (`ftpgate/<pid>.<n>`), built as the nvlists FreeBSD's `DIOCADDRULENV` takes. Pure, so the
//! rules can be checked on any host; only the ioctls that load them are FreeBSD's
//! (`pf_dev.rs`).
//!
//! A pinhole `peer -> dialled` forwarded to `target`, arriving there from `source`, is (in
//! the order pf meets a packet of it):
//!
//! * `rdr` in: from `peer` to `dialled` -> `target` (the peer's leg);
//! * `pass in quick` from `peer` to `target` (filter rules see translated addresses),
//!   `flags S/SA keep state (max 1)`: one connection, and the rule's state count tells
//!   whether it was used;
//! * `nat` out: from `peer` to `target` -> `source` (port `source_port`, else the peer's
//!   own: `static-port`), so the target sees what it saw on the control connection;
//! * `pass out quick` from `source` to `target`, also `keep state (max 1)`.
//!
//! Field names, values and which fields are required follow FreeBSD 14's
//! `pf_nvrule_to_krule()` (sys/netpfil/pf/pf_nv.c) and the constants of
//! sys/netpfil/pf/pf.h and sys/net/pfvar.h.

use super::nvlist::{NvList, Value};
use super::Pinhole;
use std::net::{IpAddr, SocketAddr};

/// The anchor every pinhole's anchor lives under; pf.conf evaluates its children with
/// `nat-anchor "ftpgate/*"`, `rdr-anchor "ftpgate/*"` and `anchor "ftpgate/*"`.
pub const PARENT: &str = "ftpgate";

/// The anchor of pinhole number `n` of process `pid`: a restarted ftpgate never meets the
/// anchors of an earlier process under the same name.
pub fn anchor_path(pid: u32, n: u64) -> String {
    format!("{PARENT}/{pid}.{n}")
}

/// An anchor path as pf's `char[MAXPATHLEN]` fields hold it, NUL-terminated.
pub fn path_field(s: &str) -> std::io::Result<[u8; 1024]> {
    let mut f = [0u8; 1024];
    if s.len() >= f.len() || s.as_bytes().contains(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "pf anchor path too long or not a C string"));
    }
    f[..s.len()].copy_from_slice(s.as_bytes());
    Ok(f)
}

/// Whether `name`, an anchor under [`PARENT`], is a pinhole of an ftpgate process that is
/// gone (`<pid>.<n>` with `alive(pid)` false): left by a crash, its rules would still let
/// connections through. Other names (an administrator's) are never touched.
pub fn stale(name: &str, alive: impl Fn(u32) -> bool) -> bool {
    let Some((pid, n)) = name.split_once('.') else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(pid) && digits(n) && pid.parse::<u32>().is_ok_and(|pid| !alive(pid))
}

// The values both pf's share (FreeBSD's sys/netpfil/pf/pf.h, OpenBSD's sys/net/pfvar.h).
// enum { PF_INOUT, PF_IN, PF_OUT }
pub(super) const PF_IN: u8 = 1;
pub(super) const PF_OUT: u8 = 2;
// enum { PF_PASS, PF_DROP, PF_SCRUB, PF_NOSCRUB, PF_NAT, PF_NONAT, PF_BINAT, PF_NOBINAT, PF_RDR, ... }
pub(super) const PF_PASS: u8 = 0;
pub(super) const PF_DROP: u8 = 1;
const PF_NAT: u8 = 4;
const PF_RDR: u8 = 8;
// enum { PF_RULESET_SCRUB, PF_RULESET_FILTER, PF_RULESET_NAT, PF_RULESET_BINAT, PF_RULESET_RDR }
pub const PF_RULESET_FILTER: i32 = 1;
pub const PF_RULESET_NAT: i32 = 2;
pub const PF_RULESET_RDR: i32 = 4;
// enum { PF_OP_NONE, PF_OP_IRG, PF_OP_EQ, ... }
pub(super) const PF_OP_NONE: u8 = 0;
pub(super) const PF_OP_EQ: u8 = 2;
// enum { PF_ADDR_ADDRMASK, ... }
pub(super) const PF_ADDR_ADDRMASK: u8 = 0;
pub(super) const PF_STATE_NORMAL: u8 = 1;
pub(super) const PFRULE_RETURNRST: u32 = 0x1;
pub(super) const TH_SYN: u8 = 0x02;
pub(super) const TH_ACK: u8 = 0x10;
pub(super) const IPPROTO_TCP: u8 = 6;
/// `AF_INET6` is 28 on FreeBSD (not Linux's 10): the rules carry FreeBSD's numbers.
const AF_INET: u64 = 2;
const AF_INET6: u64 = 28;
/// `PFTM_MAX` since FreeBSD 14.0 (the SCTP timeouts took it from 20 to 25); the kernel wants
/// exactly this many `timeout` entries (0: pf's default).
pub const PFTM_MAX: usize = 25;
/// `sizeof(struct pf_poolhashkey)`.
const POOL_KEY: usize = 16;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Redirects the matched connection to the pool address and port.
    Rdr,
    /// Rewrites the matched connection's source to the pool address (and port).
    Nat,
    /// `pass quick ... flags S/SA keep state (max 1)`.
    PassOnce,
    /// `block return-rst quick`.
    BlockReset,
}

/// One side of a rule: one host, and one port or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl Host {
    pub(super) fn at(s: SocketAddr) -> Self {
        Self { ip: s.ip(), port: Some(s.port()) }
    }

    pub(super) fn any_port(ip: IpAddr) -> Self {
        Self { ip, port: None }
    }
}

/// The address (and port range) a translation rule rewrites to; `(0, 0)` keeps the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub ip: IpAddr,
    pub ports: (u16, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub kind: Kind,
    pub inbound: bool,
    pub from: Host,
    pub to: Host,
    pub translation: Option<Translation>,
}

/// A pinhole's anchor contents, one list per ruleset the transaction replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub rdr: Vec<Rule>,
    pub nat: Vec<Rule>,
    pub filter: Vec<Rule>,
}

impl Ruleset {
    /// The rulesets in the order the transaction names them, with their `PF_RULESET_*`.
    pub fn parts(&self) -> [(i32, &[Rule]); 3] {
        [(PF_RULESET_RDR, &self.rdr), (PF_RULESET_NAT, &self.nat), (PF_RULESET_FILTER, &self.filter)]
    }
}

/// The rules that let exactly one connection through the pinhole, translated both ways.
/// The first filter rule is the peer's `pass in`: its state count says whether it was used.
pub fn pinhole(p: &Pinhole) -> Ruleset {
    let peer = Host::any_port(p.peer);
    let target = Host::at(p.target);
    let source = Host { ip: p.source, port: p.source_port };
    Ruleset {
        rdr: vec![Rule {
            kind: Kind::Rdr,
            inbound: true,
            from: peer,
            to: Host::at(p.dialled),
            translation: Some(Translation { ip: p.target.ip(), ports: (p.target.port(), 0) }),
        }],
        nat: vec![Rule {
            kind: Kind::Nat,
            inbound: false,
            from: peer,
            to: target,
            // static-port (0, 0) keeps the peer's port, as the Linux path does.
            translation: Some(Translation { ip: p.source, ports: p.source_port.map_or((0, 0), |s| (s, s)) }),
        }],
        filter: vec![
            Rule { kind: Kind::PassOnce, inbound: true, from: peer, to: target, translation: None },
            Rule { kind: Kind::PassOnce, inbound: false, from: source, to: target, translation: None },
        ],
    }
}

/// What replaces a used pinhole that is cut (ABOR): each further packet of its connection,
/// from either end, is answered with a reset, as the Linux path's kill set does. The ends'
/// packets arrive untranslated once their states are gone.
pub fn cut(p: &Pinhole) -> Ruleset {
    let source = Host { ip: p.source, port: p.source_port };
    Ruleset {
        rdr: Vec::new(),
        nat: Vec::new(),
        filter: vec![
            Rule {
                kind: Kind::BlockReset,
                inbound: true,
                from: Host::any_port(p.peer),
                to: Host::at(p.dialled),
                translation: None,
            },
            Rule { kind: Kind::BlockReset, inbound: true, from: Host::at(p.target), to: source, translation: None },
        ],
    }
}

/// Transparent active mode on the relay path, ftp-proxy's way: ftpgate's own connection from
/// port `local_port` to the client's data address `to` leaves the firewall from `appear_as`
/// (the original server; port 20 when set, else `local_port` kept), and passes out (filter
/// rules see the translated source, which is not the firewall's own).
pub fn source_nat(local_port: u16, to: SocketAddr, appear_as: IpAddr, as_port: Option<u16>) -> Ruleset {
    let any = if to.is_ipv6() { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) };
    Ruleset {
        rdr: Vec::new(),
        nat: vec![Rule {
            kind: Kind::Nat,
            inbound: false,
            from: Host { ip: any, port: Some(local_port) },
            to: Host::at(to),
            translation: Some(Translation { ip: appear_as, ports: as_port.map_or((0, 0), |p| (p, p)) }),
        }],
        filter: vec![Rule {
            kind: Kind::PassOnce,
            inbound: false,
            from: Host { ip: appear_as, port: Some(as_port.unwrap_or(local_port)) },
            to: Host::at(to),
            translation: None,
        }],
    }
}

fn family(ip: IpAddr) -> u64 {
    if ip.is_ipv6() {
        AF_INET6
    } else {
        AF_INET
    }
}

/// `struct pf_addr` as pf's nvlists carry it: 16 bytes, IPv4 in the first four.
pub(super) fn pf_addr(ip: IpAddr) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    match ip {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b.copy_from_slice(&v6.octets()),
    }
    b
}

/// A host's mask; the unspecified address stands for any address (mask 0).
pub(super) fn host_mask(ip: IpAddr) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    let n = match ip {
        _ if ip.is_unspecified() => 0,
        IpAddr::V6(_) => 16,
        IpAddr::V4(_) => 4,
    };
    b[..n].fill(0xff);
    b
}

fn addr_list(bytes: Vec<u8>) -> NvList {
    NvList::new().with("addr", Value::Binary(bytes))
}

/// `struct pf_rule_addr`: one host (`addr/32` or `/128`) and `port = p` or any port.
pub fn rule_addr(h: Host) -> NvList {
    let wrap = NvList::new()
        .num("type", u64::from(PF_ADDR_ADDRMASK))
        .num("iflags", 0)
        .list("addr", addr_list(pf_addr(h.ip)))
        .list("mask", addr_list(host_mask(h.ip)));
    NvList::new()
        .list("addr", wrap)
        // Ports in network byte order, as pfctl stores them (htons).
        .with("port", Value::NumberArray(vec![u64::from(h.port.unwrap_or(0).to_be()), 0]))
        .num("neg", 0)
        .num("port_op", u64::from(if h.port.is_some() { PF_OP_EQ } else { PF_OP_NONE }))
}

fn uid_list() -> NvList {
    NvList::new().with("uid", Value::NumberArray(vec![0, 0])).num("op", u64::from(PF_OP_NONE))
}

impl Rule {
    fn action(self) -> u8 {
        match self.kind {
            Kind::Rdr => PF_RDR,
            Kind::Nat => PF_NAT,
            Kind::PassOnce => PF_PASS,
            Kind::BlockReset => PF_DROP,
        }
    }

    /// The rule as `pf_nvrule_to_krule()` reads it: every field it requires, at pf's
    /// defaults where ftpgate wants nothing special (what pfctl sends for such a rule).
    pub fn to_nvlist(self) -> NvList {
        let pool_ports = self.translation.map_or([0, 0], |t| [u64::from(t.ports.0), u64::from(t.ports.1)]);
        let rpool = NvList::new()
            .with("key", Value::Binary(vec![0; POOL_KEY]))
            .num("tblidx", 0)
            // Host byte order here: pf's rpool.proxy_port is compared with ntohs() values.
            .with("proxy_port", Value::NumberArray(pool_ports.to_vec()))
            .num("opts", 0);
        let pass = self.kind == Kind::PassOnce;
        let quick = matches!(self.kind, Kind::PassOnce | Kind::BlockReset);
        NvList::new()
            .num("nr", 0)
            .list("src", rule_addr(self.from))
            .list("dst", rule_addr(self.to))
            .string("label", "")
            .string("ifname", "")
            .string("qname", "")
            .string("pqname", "")
            .string("tagname", "")
            .string("match_tagname", "")
            .string("overload_tblname", "")
            .list("rpool", rpool)
            .num("os_fingerprint", 0)
            // -1: no routing table of its own (pfctl's default), as a u64 the kernel reads
            // back as int.
            .num("rtableid", u64::MAX)
            .with("timeout", Value::NumberArray(vec![0; PFTM_MAX]))
            .num("max_states", if pass { 1 } else { 0 })
            .num("max_src_nodes", 0)
            .num("max_src_states", 0)
            .num("max_src_conn", 0)
            .num("max_src_conn_rate.limit", 0)
            .num("max_src_conn_rate.seconds", 0)
            .num("prob", 0)
            .num("cuid", 0)
            .num("cpid", 0)
            .num("return_icmp", 0)
            .num("return_icmp6", 0)
            .num("max_mss", 0)
            .num("scrub_flags", 0)
            .list("uid", uid_list())
            .list("gid", uid_list())
            .num("rule_flag", if self.kind == Kind::BlockReset { u64::from(PFRULE_RETURNRST) } else { 0 })
            .num("action", u64::from(self.action()))
            .num("direction", u64::from(if self.inbound { PF_IN } else { PF_OUT }))
            .num("log", 0)
            .num("logif", 0)
            .num("quick", u64::from(quick))
            .num("ifnot", 0)
            .num("match_tag_not", 0)
            .num("natpass", 0)
            .num("keep_state", if pass { u64::from(PF_STATE_NORMAL) } else { 0 })
            .num("af", family(self.from.ip))
            .num("proto", u64::from(IPPROTO_TCP))
            .num("type", 0)
            .num("code", 0)
            .num("flags", if pass { u64::from(TH_SYN) } else { 0 })
            .num("flagset", if pass { u64::from(TH_SYN | TH_ACK) } else { 0 })
            .num("min_ttl", 0)
            .num("allow_opts", 0)
            .num("rt", 0)
            .num("return_ttl", 0)
            .num("tos", 0)
            .num("set_tos", 0)
            .num("anchor_relative", 0)
            .num("anchor_wildcard", 0)
            .num("flush", 0)
            .num("prio", 0)
            .with("set_prio", Value::NumberArray(vec![0, 0]))
    }

    /// The pool address `DIOCADDADDR` gives a translation rule before the rule itself.
    pub fn pool_address(self) -> Option<IpAddr> {
        self.translation.map(|t| t.ip)
    }
}

/// `DIOCADDRULENV`'s request: the rule for the open transaction `ticket` of `anchor`, with
/// the pool `pool_ticket` holds.
pub fn add_rule(rule: &Rule, anchor: &str, ticket: u32, pool_ticket: u32) -> NvList {
    NvList::new()
        .num("ticket", u64::from(ticket))
        .num("pool_ticket", u64::from(pool_ticket))
        .string("anchor", anchor)
        .string("anchor_call", "")
        .list("rule", rule.to_nvlist())
}

/// `DIOCGETRULENV`'s request for filter rule `nr` of `anchor`, whose active ruleset carries
/// `ticket` (the one its transaction committed).
pub fn get_rule(anchor: &str, ticket: u32, nr: u32) -> NvList {
    NvList::new()
        .string("anchor", anchor)
        .num("ruleset", u64::from(PF_PASS))
        .num("ticket", u64::from(ticket))
        .num("nr", u64::from(nr))
}

/// From `DIOCGETRULENV`'s answer: how many states the rule has created (`states_tot`).
pub fn states_created(answer: &NvList) -> Option<u64> {
    answer.get_list("rule")?.get_number("states_tot")
}

/// `DIOCKILLSTATESNV` requests that remove the states of a used pinhole's connection: the
/// peer's leg (as it arrived, `peer -> dialled`) and the target's (`source -> target`).
pub fn kill_states(p: &Pinhole) -> [NvList; 2] {
    let legs = [
        (Host::any_port(p.peer), Host::at(p.dialled)),
        (Host { ip: p.source, port: p.source_port }, Host::at(p.target)),
    ];
    legs.map(|(src, dst)| {
        NvList::new()
            .list("cmp", NvList::new().num("id", 0).num("creatorid", 0).num("direction", 0))
            .num("af", family(p.peer))
            .num("proto", u64::from(IPPROTO_TCP))
            .list("src", rule_addr(src))
            .list("dst", rule_addr(dst))
            .string("ifname", "")
            .string("label", "")
            .with("kill_match", Value::Bool(false))
    })
}

#[cfg(test)]
#[path = "pf_rules_tests.rs"]
mod tests;
