//! What a pinhole is in OpenBSD's pf: rules in its own anchor under ftpgate's
//! (`ftpgate/<pid>.<n>`, as on FreeBSD), filled into `struct pfioc_rule` the way OpenBSD's
//! ftp-proxy fills them (usr.sbin/ftp-proxy/filter.c). Pure: the rules are built and checked
//! on any host; only the ioctls that load them are OpenBSD's (`pf_obsd_ffi`).
//!
//! OpenBSD has no rdr and nat rulesets: the translation is part of the filter rule that
//! matches, and the rule's pools (`rdr`, `nat`) are embedded in it. A pinhole
//! `peer -> dialled`, forwarded to `target` and arriving there from `source`, is:
//!
//! * `pass in quick proto tcp from peer to dialled flags S/SA keep state (max 1)
//!   rdr-to target`: one connection, and the rule's state count says whether it was used;
//! * `pass out quick proto tcp from peer to target flags S/SA keep state (max 1)
//!   nat-to source` (port `source_port`, else the peer's own: `static-port`). Outbound rules
//!   see the addresses before their own translation, after the inbound one.

use super::pf_obsd_abi::{PfAddrWrap, PfRule, PfRuleAddr, PfiocRule, PfiocStateKill};
use super::pf_rules::{host_mask, path_field, pf_addr, Host, Translation};
use super::pf_rules::{IPPROTO_TCP, PFRULE_RETURNRST, PF_ADDR_ADDRMASK, PF_DROP, PF_IN, PF_OP_EQ, PF_OP_NONE};
use super::pf_rules::{PF_OUT, PF_PASS, PF_STATE_NORMAL, TH_ACK, TH_SYN};
use super::Pinhole;
use std::io;
use std::net::{IpAddr, SocketAddr};

// enum { PF_ADDR_ADDRMASK, ..., PF_ADDR_RANGE, PF_ADDR_NONE }: OpenBSD's "no address" for
// the pools a rule does not use.
const PF_ADDR_NONE: u8 = 7;
/// OpenBSD's address family numbers (`AF_INET6` is 24 there).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 24;

/// What a rule does with the connection it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `pass quick ... flags S/SA keep state (max 1)`.
    PassOnce,
    /// `block return-rst quick`.
    BlockReset,
}

/// One rule of a pinhole's anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub inbound: bool,
    pub from: Host,
    pub to: Host,
    /// `rdr-to`: the destination the matched connection is sent on to.
    pub rdr: Option<Translation>,
    /// `nat-to`: the source it leaves from; ports `(0, 0)` keep its own.
    pub nat: Option<Translation>,
}

fn ports(port: Option<u16>) -> (u16, u16) {
    port.map_or((0, 0), |p| (p, p))
}

/// The rules that let exactly one connection through the pinhole, translated both ways.
/// The first is the peer's `pass in`: its state count says whether it was used.
pub fn pinhole(p: &Pinhole) -> Vec<Rule> {
    let peer = Host::any_port(p.peer);
    vec![
        Rule {
            action: Action::PassOnce,
            inbound: true,
            from: peer,
            to: Host::at(p.dialled),
            rdr: Some(Translation { ip: p.target.ip(), ports: (p.target.port(), 0) }),
            nat: None,
        },
        Rule {
            action: Action::PassOnce,
            inbound: false,
            from: peer,
            to: Host::at(p.target),
            rdr: None,
            nat: Some(Translation { ip: p.source, ports: ports(p.source_port) }),
        },
    ]
}

/// What replaces a used pinhole that is cut (ABOR): each further packet of its connection,
/// from either end, is answered with a reset; the ends' packets arrive untranslated once
/// their states are gone.
pub fn cut(p: &Pinhole) -> Vec<Rule> {
    let block = |from, to| Rule { action: Action::BlockReset, inbound: true, from, to, rdr: None, nat: None };
    vec![
        block(Host::any_port(p.peer), Host::at(p.dialled)),
        block(Host::at(p.target), Host { ip: p.source, port: p.source_port }),
    ]
}

/// Transparent active mode on the relay path, ftp-proxy's way: ftpgate's own connection from
/// port `local_port` to the client's data address `to` leaves the firewall from `appear_as`
/// (port `as_port`, else `local_port` kept).
pub fn source_nat(local_port: u16, to: SocketAddr, appear_as: IpAddr, as_port: Option<u16>) -> Vec<Rule> {
    let any = if to.is_ipv6() { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) };
    vec![Rule {
        action: Action::PassOnce,
        inbound: false,
        from: Host { ip: any, port: Some(local_port) },
        to: Host::at(to),
        rdr: None,
        nat: Some(Translation { ip: appear_as, ports: ports(as_port) }),
    }]
}

fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv6() {
        AF_INET6
    } else {
        AF_INET
    }
}

/// One host as `struct pf_addr_wrap`: `addr/32` or `/128`; the unspecified address is any.
fn addr_wrap(ip: IpAddr) -> PfAddrWrap {
    let mut v = [0u8; 32];
    v[..16].copy_from_slice(&pf_addr(ip));
    v[16..].copy_from_slice(&host_mask(ip));
    PfAddrWrap { v, p: 0, kind: PF_ADDR_ADDRMASK, iflags: 0, _pad: [0; 6] }
}

/// `struct pf_rule_addr`: one host and `port = p` or any port.
pub fn rule_addr(h: Host) -> PfRuleAddr {
    PfRuleAddr {
        addr: addr_wrap(h.ip),
        // Network byte order, as pfctl and ftp-proxy store them (htons).
        port: [h.port.unwrap_or(0).to_be(), 0],
        port_op: if h.port.is_some() { PF_OP_EQ } else { PF_OP_NONE },
        ..PfRuleAddr::ZERO
    }
}

impl Rule {
    /// The rule as ftp-proxy's `prepare_rule()`, `add_rdr()` and `add_nat()` fill it: unused
    /// pools are `PF_ADDR_NONE`, no routing table of its own (`rtableid` -1).
    pub fn to_pf_rule(self) -> PfRule {
        let mut r = PfRule::ZERO;
        r.src = rule_addr(self.from);
        r.dst = rule_addr(self.to);
        r.af = family(self.from.ip);
        r.proto = IPPROTO_TCP;
        r.direction = if self.inbound { PF_IN } else { PF_OUT };
        r.quick = 1;
        r.rtableid = -1;
        for (pool, t) in [(&mut r.rdr, self.rdr), (&mut r.nat, self.nat)] {
            match t {
                Some(t) => {
                    pool.addr = addr_wrap(t.ip);
                    // Host byte order: pf compares them with ntohs() values.
                    pool.proxy_port = [t.ports.0, t.ports.1];
                }
                None => pool.addr.kind = PF_ADDR_NONE,
            }
        }
        r.route.addr.kind = PF_ADDR_NONE;
        match self.action {
            Action::PassOnce => {
                r.action = PF_PASS;
                r.keep_state = PF_STATE_NORMAL;
                r.flags = TH_SYN;
                r.flagset = TH_SYN | TH_ACK;
                r.max_states = 1;
            }
            Action::BlockReset => {
                r.action = PF_DROP;
                r.rule_flag = PFRULE_RETURNRST;
            }
        }
        r
    }
}

/// `DIOCADDRULE`'s request: `rule` for the open transaction `ticket` of `anchor`.
pub fn add_rule(rule: &Rule, anchor: &str, ticket: u32) -> io::Result<Box<PfiocRule>> {
    let mut req = PfiocRule::zeroed();
    req.ticket = ticket;
    req.anchor = path_field(anchor)?;
    req.rule = rule.to_pf_rule();
    Ok(req)
}

/// `DIOCGETRULES`'s request for `anchor`; pf answers a ticket to read its rules with.
pub fn get_rules(anchor: &str) -> io::Result<Box<PfiocRule>> {
    let mut req = PfiocRule::zeroed();
    req.anchor = path_field(anchor)?;
    Ok(req)
}

/// `DIOCKILLSTATES` requests that remove the states of a used pinhole's connection. pf
/// matches an inbound state by its addresses on the wire (`peer -> dialled`), an outbound one
/// by those before its translation (`peer -> target`).
pub fn kill_states(p: &Pinhole) -> [PfiocStateKill; 2] {
    let peer = Host::any_port(p.peer);
    [(peer, Host::at(p.dialled)), (peer, Host::at(p.target))].map(|(src, dst)| PfiocStateKill {
        psk_af: family(p.peer),
        psk_proto: i32::from(IPPROTO_TCP),
        psk_src: rule_addr(src),
        psk_dst: rule_addr(dst),
        ..PfiocStateKill::ZERO
    })
}

impl super::pf_dev::Rules for Vec<Rule> {
    fn pinhole(p: &Pinhole) -> Self {
        pinhole(p)
    }

    fn cut(p: &Pinhole) -> Self {
        cut(p)
    }

    fn source_nat(local_port: u16, to: SocketAddr, appear_as: IpAddr, as_port: Option<u16>) -> Self {
        source_nat(local_port, to, appear_as, as_port)
    }
}

#[cfg(test)]
#[path = "pf_obsd_tests.rs"]
mod tests;
