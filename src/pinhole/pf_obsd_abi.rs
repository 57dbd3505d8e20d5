//! OpenBSD's pf structures the pinholes pass through `/dev/pf`, laid out as OpenBSD's
//! sys/net/pfvar.h rev. 1.543 (2025-04-14) lays them out for LP64 (amd64, arm64). Every size and every offset this crate writes or reads was measured on
//! that header with a C compiler and is asserted below; the ioctl request codes, which encode
//! the sizes, are asserted where they are used (`pf_obsd_ffi`; the transaction structures,
//! which FreeBSD shares, in `pf_anchors`). Plain data, no `unsafe`:
//! the rule builder fills these on any host, and its tests run on Linux.
//!
//! Pointer members the kernel fills or ignores are `u64` here; ftpgate leaves them zero. A pf
//! whose structures have another size has other request codes: it refuses the start-up
//! probe's rules (ENOTTY, exit 3) instead of misreading them.

#[cfg(target_pointer_width = "64")]
use std::mem::{offset_of, size_of};

/// `PATH_MAX`: the size of every anchor path field.
pub const PATH_MAX: usize = 1024;
pub const IFNAMSIZ: usize = 16;
/// `PFTM_MAX` (OpenBSD has no SCTP timeouts: 20, FreeBSD 14 has 25).
pub const PFTM_MAX: usize = 20;

/// `struct pf_addr_wrap`: the address/mask union (32 bytes), a pointer union the kernel
/// fills, `type`, `iflags`, padding to the pointer's alignment.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfAddrWrap {
    pub v: [u8; 32],
    pub p: u64,
    pub kind: u8,
    pub iflags: u8,
    pub _pad: [u8; 6],
}

/// `struct pf_rule_addr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfRuleAddr {
    pub addr: PfAddrWrap,
    /// Network byte order.
    pub port: [u16; 2],
    pub neg: u8,
    pub port_op: u8,
    pub weight: u16,
}

/// `struct pf_pool`: embedded in the rule (`nat`, `rdr`, `route`) on OpenBSD.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfPool {
    pub addr: PfAddrWrap,
    pub key: [u8; 16],
    pub counter: [u8; 16],
    pub ifname: [u8; IFNAMSIZ],
    pub kif: u64,
    pub tblidx: i32,
    pub states: u64,
    pub curweight: i32,
    pub weight: u16,
    /// Host byte order.
    pub proxy_port: [u16; 2],
    pub port_op: u8,
    pub opts: u8,
}

/// `struct pf_rule_uid` and `struct pf_rule_gid`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfRuleId {
    pub id: [u32; 2],
    pub op: u8,
}

/// The anonymous `divert` member of `struct pf_rule` (`struct pf_addr` aligns it to 4).
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfRuleDivert {
    pub addr: [u8; 16],
    pub port: u16,
    pub kind: u8,
}

/// `struct pf_rule`, every member in order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfRule {
    pub src: PfRuleAddr,
    pub dst: PfRuleAddr,
    pub skip: [u64; 9],
    pub label: [u8; 64],
    pub ifname: [u8; IFNAMSIZ],
    pub rcv_ifname: [u8; IFNAMSIZ],
    pub qname: [u8; 64],
    pub pqname: [u8; 64],
    pub tagname: [u8; 64],
    pub match_tagname: [u8; 64],
    pub overload_tblname: [u8; 32],
    pub entries: [u64; 2],
    pub nat: PfPool,
    pub rdr: PfPool,
    pub route: PfPool,
    pub pktrate: [u32; 4],
    pub evaluations: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub kif: u64,
    pub rcv_kif: u64,
    pub anchor: u64,
    pub overload_tbl: u64,
    pub os_fingerprint: u32,
    pub rtableid: i32,
    pub onrdomain: i32,
    pub timeout: [u32; PFTM_MAX],
    pub states_cur: u32,
    pub states_tot: u32,
    pub max_states: u32,
    pub src_nodes: u32,
    pub max_src_nodes: u32,
    pub max_src_states: u32,
    pub max_src_conn: u32,
    pub max_src_conn_rate: [u32; 2],
    pub qid: u32,
    pub pqid: u32,
    pub rt_listid: u32,
    pub nr: u32,
    pub prob: u32,
    pub cuid: u32,
    pub cpid: i32,
    pub return_icmp: u16,
    pub return_icmp6: u16,
    pub max_mss: u16,
    pub tag: u16,
    pub match_tag: u16,
    pub scrub_flags: u16,
    pub delay: u16,
    pub uid: PfRuleId,
    pub gid: PfRuleId,
    pub rule_flag: u32,
    pub action: u8,
    pub direction: u8,
    pub log: u8,
    pub logif: u8,
    pub quick: u8,
    pub ifnot: u8,
    pub match_tag_not: u8,
    pub keep_state: u8,
    pub af: u8,
    pub proto: u8,
    pub kind: u16,
    pub code: u16,
    pub flags: u8,
    pub flagset: u8,
    pub min_ttl: u8,
    pub allow_opts: u8,
    pub rt: u8,
    pub return_ttl: u8,
    pub tos: u8,
    pub set_tos: u8,
    pub anchor_relative: u8,
    pub anchor_wildcard: u8,
    pub flush: u8,
    pub prio: u8,
    pub set_prio: [u8; 2],
    pub naf: u8,
    pub rcvifnot: u8,
    pub divert: PfRuleDivert,
    pub exptime: i64,
}

/// `struct pfioc_rule` (`DIOCADDRULE`, `DIOCGETRULES`, `DIOCGETRULE`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfiocRule {
    pub action: u32,
    pub ticket: u32,
    pub nr: u32,
    pub anchor: [u8; PATH_MAX],
    pub anchor_call: [u8; PATH_MAX],
    pub rule: PfRule,
}

/// `struct pf_state_cmp`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfStateCmp {
    pub id: u64,
    pub creatorid: u32,
    pub direction: u8,
    pub pad: [u8; 3],
}

/// `struct pfioc_state_kill` (`DIOCKILLSTATES`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfiocStateKill {
    pub psk_pfcmp: PfStateCmp,
    pub psk_af: u8,
    pub psk_proto: i32,
    pub psk_src: PfRuleAddr,
    pub psk_dst: PfRuleAddr,
    pub psk_ifname: [u8; IFNAMSIZ],
    pub psk_label: [u8; 64],
    pub psk_killed: u32,
    pub psk_rdomain: u16,
}

const ZERO_WRAP: PfAddrWrap = PfAddrWrap { v: [0; 32], p: 0, kind: 0, iflags: 0, _pad: [0; 6] };
const ZERO_ADDR: PfRuleAddr = PfRuleAddr { addr: ZERO_WRAP, port: [0; 2], neg: 0, port_op: 0, weight: 0 };
const ZERO_POOL: PfPool = PfPool {
    addr: ZERO_WRAP,
    key: [0; 16],
    counter: [0; 16],
    ifname: [0; IFNAMSIZ],
    kif: 0,
    tblidx: 0,
    states: 0,
    curweight: 0,
    weight: 0,
    proxy_port: [0; 2],
    port_op: 0,
    opts: 0,
};
const ZERO_ID: PfRuleId = PfRuleId { id: [0; 2], op: 0 };

impl PfRuleAddr {
    pub const ZERO: Self = ZERO_ADDR;
}

impl PfPool {
    pub const ZERO: Self = ZERO_POOL;
}

impl PfRule {
    /// Every member zero, as `memset(&pr, 0, sizeof pr)` leaves it.
    pub const ZERO: Self = Self {
        src: ZERO_ADDR,
        dst: ZERO_ADDR,
        skip: [0; 9],
        label: [0; 64],
        ifname: [0; IFNAMSIZ],
        rcv_ifname: [0; IFNAMSIZ],
        qname: [0; 64],
        pqname: [0; 64],
        tagname: [0; 64],
        match_tagname: [0; 64],
        overload_tblname: [0; 32],
        entries: [0; 2],
        nat: ZERO_POOL,
        rdr: ZERO_POOL,
        route: ZERO_POOL,
        pktrate: [0; 4],
        evaluations: 0,
        packets: [0; 2],
        bytes: [0; 2],
        kif: 0,
        rcv_kif: 0,
        anchor: 0,
        overload_tbl: 0,
        os_fingerprint: 0,
        rtableid: 0,
        onrdomain: 0,
        timeout: [0; PFTM_MAX],
        states_cur: 0,
        states_tot: 0,
        max_states: 0,
        src_nodes: 0,
        max_src_nodes: 0,
        max_src_states: 0,
        max_src_conn: 0,
        max_src_conn_rate: [0; 2],
        qid: 0,
        pqid: 0,
        rt_listid: 0,
        nr: 0,
        prob: 0,
        cuid: 0,
        cpid: 0,
        return_icmp: 0,
        return_icmp6: 0,
        max_mss: 0,
        tag: 0,
        match_tag: 0,
        scrub_flags: 0,
        delay: 0,
        uid: ZERO_ID,
        gid: ZERO_ID,
        rule_flag: 0,
        action: 0,
        direction: 0,
        log: 0,
        logif: 0,
        quick: 0,
        ifnot: 0,
        match_tag_not: 0,
        keep_state: 0,
        af: 0,
        proto: 0,
        kind: 0,
        code: 0,
        flags: 0,
        flagset: 0,
        min_ttl: 0,
        allow_opts: 0,
        rt: 0,
        return_ttl: 0,
        tos: 0,
        set_tos: 0,
        anchor_relative: 0,
        anchor_wildcard: 0,
        flush: 0,
        prio: 0,
        set_prio: [0; 2],
        naf: 0,
        rcvifnot: 0,
        divert: PfRuleDivert { addr: [0; 16], port: 0, kind: 0 },
        exptime: 0,
    };
}

impl PfiocRule {
    pub fn zeroed() -> Box<Self> {
        Box::new(Self {
            action: 0,
            ticket: 0,
            nr: 0,
            anchor: [0; PATH_MAX],
            anchor_call: [0; PATH_MAX],
            rule: PfRule::ZERO,
        })
    }
}

impl PfiocStateKill {
    pub const ZERO: Self = Self {
        psk_pfcmp: PfStateCmp { id: 0, creatorid: 0, direction: 0, pad: [0; 3] },
        psk_af: 0,
        psk_proto: 0,
        psk_src: ZERO_ADDR,
        psk_dst: ZERO_ADDR,
        psk_ifname: [0; IFNAMSIZ],
        psk_label: [0; 64],
        psk_killed: 0,
        psk_rdomain: 0,
    };
}

// Measured on pfvar.h 1.543 for amd64 (gcc, sizeof/offsetof); x86_64 and aarch64 lay
// repr(C) out alike on every LP64 system, so Linux builds check them too.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<PfAddrWrap>() == 48);
    assert!(offset_of!(PfAddrWrap, p) == 32 && offset_of!(PfAddrWrap, kind) == 40);
    assert!(offset_of!(PfAddrWrap, iflags) == 41);
    assert!(size_of::<PfRuleAddr>() == 56);
    assert!(offset_of!(PfRuleAddr, port) == 48 && offset_of!(PfRuleAddr, neg) == 52);
    assert!(offset_of!(PfRuleAddr, port_op) == 53 && offset_of!(PfRuleAddr, weight) == 54);
    assert!(size_of::<PfPool>() == 136);
    assert!(offset_of!(PfPool, key) == 48 && offset_of!(PfPool, counter) == 64);
    assert!(offset_of!(PfPool, ifname) == 80 && offset_of!(PfPool, kif) == 96);
    assert!(offset_of!(PfPool, tblidx) == 104 && offset_of!(PfPool, states) == 112);
    assert!(offset_of!(PfPool, curweight) == 120 && offset_of!(PfPool, weight) == 124);
    assert!(offset_of!(PfPool, proxy_port) == 126 && offset_of!(PfPool, port_op) == 130);
    assert!(offset_of!(PfPool, opts) == 131);
    assert!(size_of::<PfRuleId>() == 12);
    assert!(size_of::<PfRule>() == 1344);
    assert!(offset_of!(PfRule, dst) == 56 && offset_of!(PfRule, skip) == 112);
    assert!(offset_of!(PfRule, label) == 184 && offset_of!(PfRule, ifname) == 248);
    assert!(offset_of!(PfRule, qname) == 280 && offset_of!(PfRule, tagname) == 408);
    assert!(offset_of!(PfRule, overload_tblname) == 536 && offset_of!(PfRule, entries) == 568);
    assert!(offset_of!(PfRule, nat) == 584 && offset_of!(PfRule, rdr) == 720);
    assert!(offset_of!(PfRule, route) == 856 && offset_of!(PfRule, pktrate) == 992);
    assert!(offset_of!(PfRule, evaluations) == 1008 && offset_of!(PfRule, kif) == 1048);
    assert!(offset_of!(PfRule, overload_tbl) == 1072 && offset_of!(PfRule, os_fingerprint) == 1080);
    assert!(offset_of!(PfRule, rtableid) == 1084 && offset_of!(PfRule, timeout) == 1092);
    assert!(offset_of!(PfRule, states_cur) == 1172 && offset_of!(PfRule, states_tot) == 1176);
    assert!(offset_of!(PfRule, max_states) == 1180 && offset_of!(PfRule, max_src_conn_rate) == 1200);
    assert!(offset_of!(PfRule, nr) == 1220 && offset_of!(PfRule, cpid) == 1232);
    assert!(offset_of!(PfRule, return_icmp) == 1236 && offset_of!(PfRule, delay) == 1248);
    assert!(offset_of!(PfRule, uid) == 1252 && offset_of!(PfRule, gid) == 1264);
    assert!(offset_of!(PfRule, rule_flag) == 1276 && offset_of!(PfRule, action) == 1280);
    assert!(offset_of!(PfRule, direction) == 1281 && offset_of!(PfRule, log) == 1282);
    assert!(offset_of!(PfRule, quick) == 1284 && offset_of!(PfRule, keep_state) == 1287);
    assert!(offset_of!(PfRule, af) == 1288 && offset_of!(PfRule, proto) == 1289);
    assert!(offset_of!(PfRule, kind) == 1290 && offset_of!(PfRule, code) == 1292);
    assert!(offset_of!(PfRule, flags) == 1294 && offset_of!(PfRule, flagset) == 1295);
    assert!(offset_of!(PfRule, set_prio) == 1306 && offset_of!(PfRule, naf) == 1308);
    assert!(offset_of!(PfRule, rcvifnot) == 1309 && offset_of!(PfRule, divert) == 1312);
    assert!(offset_of!(PfRule, exptime) == 1336);
    assert!(size_of::<PfiocRule>() == 3408);
    assert!(offset_of!(PfiocRule, ticket) == 4 && offset_of!(PfiocRule, nr) == 8);
    assert!(offset_of!(PfiocRule, anchor) == 12 && offset_of!(PfiocRule, anchor_call) == 1036);
    assert!(offset_of!(PfiocRule, rule) == 2064);
    assert!(size_of::<PfStateCmp>() == 16);
    assert!(size_of::<PfiocStateKill>() == 224);
    assert!(offset_of!(PfiocStateKill, psk_af) == 16 && offset_of!(PfiocStateKill, psk_proto) == 20);
    assert!(offset_of!(PfiocStateKill, psk_src) == 24 && offset_of!(PfiocStateKill, psk_dst) == 80);
    assert!(offset_of!(PfiocStateKill, psk_ifname) == 136 && offset_of!(PfiocStateKill, psk_label) == 152);
    assert!(offset_of!(PfiocStateKill, psk_killed) == 216 && offset_of!(PfiocStateKill, psk_rdomain) == 220);
};
