//! OpenBSD's pinhole rules as `struct pfioc_rule` holds them, and the shared bookkeeping
//! driving them through a fake pf with OpenBSD's one-ruleset transactions.

use super::*;
use crate::pinhole::pf_dev::{Device, PfPinholes};
use crate::pinhole::{PinholeError, Ticket};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn pinhole() -> Pinhole {
    crate::pinhole::sample_passive()
}

/// An IPv4 rule address: the host, the port operator and the port.
fn host_of(a: &PfRuleAddr) -> (IpAddr, u8, u16) {
    assert_eq!((a.addr.kind, &a.addr.v[4..16]), (PF_ADDR_ADDRMASK, &[0u8; 12][..]));
    (IpAddr::from(<[u8; 4]>::try_from(&a.addr.v[..4]).unwrap()), a.port_op, u16::from_be(a.port[0]))
}

#[test]
fn a_pinhole_is_a_pass_in_with_rdr_to_and_a_pass_out_with_nat_to() {
    let p = pinhole();
    let rules: Vec<PfRule> = pinhole_rules(&p);
    assert_eq!(rules.len(), 2);
    let (inbound, outbound) = (&rules[0], &rules[1]);
    for r in &rules {
        assert_eq!((r.action, r.quick, r.keep_state, r.max_states), (PF_PASS, 1, PF_STATE_NORMAL, 1));
        assert_eq!((r.flags, r.flagset, r.proto, r.af, r.rtableid), (TH_SYN, TH_SYN | TH_ACK, 6, AF_INET, -1));
        assert_eq!(r.route.addr.kind, PF_ADDR_NONE);
    }
    assert_eq!(inbound.direction, PF_IN);
    assert_eq!(host_of(&inbound.src), (p.peer, PF_OP_NONE, 0));
    assert_eq!(host_of(&inbound.dst), (p.dialled.ip(), PF_OP_EQ, p.dialled.port()));
    assert_eq!(inbound.rdr.addr.kind, PF_ADDR_ADDRMASK);
    assert_eq!(&inbound.rdr.addr.v[..4], &[198, 51, 100, 2][..]);
    assert_eq!(inbound.rdr.proxy_port, [p.target.port(), 0], "host byte order");
    assert_eq!(inbound.nat.addr.kind, PF_ADDR_NONE);
    assert_eq!(outbound.direction, PF_OUT);
    assert_eq!(host_of(&outbound.src), (p.peer, PF_OP_NONE, 0));
    assert_eq!(host_of(&outbound.dst), (p.target.ip(), PF_OP_EQ, p.target.port()));
    assert_eq!(outbound.rdr.addr.kind, PF_ADDR_NONE);
    assert_eq!(outbound.nat.addr.kind, PF_ADDR_ADDRMASK);
    assert_eq!(&outbound.nat.addr.v[..4], &[198, 51, 100, 1][..]);
    assert_eq!(outbound.nat.proxy_port, [0, 0], "static-port: the peer's port kept");
}

fn pinhole_rules(p: &Pinhole) -> Vec<PfRule> {
    super::pinhole(p).into_iter().map(Rule::to_pf_rule).collect()
}

#[test]
fn a_source_port_is_a_one_port_range_and_v6_has_openbsds_family() {
    let p = Pinhole {
        peer: "2001:db8:1::2".parse().unwrap(),
        dialled: "[2001:db8:1::1]:30000".parse().unwrap(),
        target: "[2001:db8:2::2]:40000".parse().unwrap(),
        source: "2001:db8:2::1".parse().unwrap(),
        source_port: Some(20),
    };
    let rules = pinhole_rules(&p);
    assert!(rules.iter().all(|r| r.af == 24));
    assert_eq!(rules[1].nat.proxy_port, [20, 20]);
    assert_eq!(rules[0].src.addr.v[16..], [0xff; 16]);
}

#[test]
fn a_cut_answers_both_ends_with_resets_and_kills_both_legs() {
    let p = pinhole();
    let rules: Vec<PfRule> = super::cut(&p).into_iter().map(Rule::to_pf_rule).collect();
    assert!(rules.iter().all(|r| r.action == PF_DROP && r.rule_flag == PFRULE_RETURNRST && r.max_states == 0));
    assert_eq!(host_of(&rules[1].src), (p.target.ip(), PF_OP_EQ, p.target.port()));
    let kills = kill_states(&p);
    assert_eq!(host_of(&kills[0].psk_dst), (p.dialled.ip(), PF_OP_EQ, p.dialled.port()));
    // The outbound state is matched before its nat: peer to target.
    assert_eq!(host_of(&kills[1].psk_src), (p.peer, PF_OP_NONE, 0));
    assert_eq!(host_of(&kills[1].psk_dst), (p.target.ip(), PF_OP_EQ, p.target.port()));
    assert!(kills.iter().all(|k| k.psk_proto == 6 && k.psk_af == AF_INET && k.psk_rdomain == 0));
}

#[test]
fn ftpgates_own_connection_is_one_pass_out_with_nat_to() {
    let to: SocketAddr = "203.0.113.2:50123".parse().unwrap();
    let rules = super::source_nat(40000, to, "198.51.100.2".parse().unwrap(), Some(20));
    let r = rules[0].to_pf_rule();
    assert_eq!((rules.len(), r.direction, r.max_states), (1, PF_OUT, 1));
    assert_eq!(host_of(&r.src), ("0.0.0.0".parse().unwrap(), PF_OP_EQ, 40000));
    assert_eq!(r.src.addr.v[16..20], [0; 4], "any source address");
    assert_eq!(r.nat.proxy_port, [20, 20]);
}

#[test]
fn requests_carry_the_anchor_and_ticket_and_refuse_what_pf_could_not_read() {
    let req = add_rule(&super::pinhole(&pinhole())[0], "ftpgate/1.2", 77).unwrap();
    assert_eq!((req.ticket, &req.anchor[..12]), (77, &b"ftpgate/1.2\0"[..]));
    assert!(get_rules(&"a".repeat(1024)).is_err());
    assert!(get_rules("ftp\0gate").is_err());
}

/// OpenBSD's pf as far as the bookkeeping sees it: one ticket per transaction.
#[derive(Default)]
struct FakePf {
    next_ticket: AtomicU32,
    anchors: Mutex<BTreeMap<String, Vec<PfRule>>>,
    pending: Mutex<BTreeMap<String, (u32, Vec<PfRule>)>>,
    states: AtomicU64,
    kills: AtomicU64,
}

impl Device for Arc<FakePf> {
    type Tickets = u32;
    type Rules = Vec<Rule>;

    fn begin(&self, anchor: &str) -> io::Result<u32> {
        let t = self.next_ticket.fetch_add(1, Ordering::Relaxed) + 1;
        self.pending.lock().unwrap().insert(anchor.to_owned(), (t, Vec::new()));
        Ok(t)
    }

    fn commit(&self, anchor: &str, ticket: u32) -> io::Result<()> {
        let (t, rules) = self.pending.lock().unwrap().remove(anchor).expect("commit without begin");
        assert_eq!(t, ticket);
        let mut anchors = self.anchors.lock().unwrap();
        if rules.is_empty() {
            anchors.remove(anchor);
        } else {
            anchors.insert(anchor.to_owned(), rules);
        }
        Ok(())
    }

    fn rollback(&self, anchor: &str, _: u32) -> io::Result<()> {
        self.pending.lock().unwrap().remove(anchor);
        Ok(())
    }

    fn add_rules(&self, anchor: &str, rules: &Vec<Rule>, ticket: u32) -> io::Result<()> {
        for r in rules {
            let req = add_rule(r, anchor, ticket)?;
            let mut pending = self.pending.lock().unwrap();
            let (t, added) = pending.get_mut(anchor).expect("rule outside a transaction");
            assert_eq!(req.ticket, *t);
            added.push(req.rule);
        }
        Ok(())
    }

    fn states_created(&self, anchor: &str, _: u32) -> io::Result<Option<u64>> {
        assert!(self.anchors.lock().unwrap().contains_key(anchor), "asked about {anchor}, not loaded");
        Ok(Some(self.states.load(Ordering::Relaxed)))
    }

    fn kill_states(&self, p: &Pinhole) -> io::Result<()> {
        self.kills.fetch_add(super::kill_states(p).len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn the_shared_bookkeeping_drives_openbsds_one_ruleset_anchors() {
    let pf = Arc::new(FakePf::default());
    let pinholes = PfPinholes::start(pf.clone(), 4242).unwrap();
    let ticket = block_on(pinholes.install(pinhole(), Duration::from_secs(60))).unwrap();
    assert_eq!(pf.anchors.lock().unwrap()["ftpgate/4242.1"].len(), 2);
    assert!(block_on(pinholes.armed(pinhole(), ticket)).unwrap());
    pf.states.store(1, Ordering::Relaxed);
    assert!(!block_on(pinholes.armed(pinhole(), ticket)).unwrap());
    pinholes.cut(pinhole(), Duration::from_secs(60));
    let anchors = pf.anchors.lock().unwrap().clone();
    assert_eq!(anchors.keys().collect::<Vec<_>>(), ["ftpgate/4242.2"]);
    assert!(anchors["ftpgate/4242.2"].iter().all(|r| r.action == PF_DROP));
    assert_eq!(pf.kills.load(Ordering::Relaxed), 2);
    let err = block_on(pinholes.install(Pinhole { peer: "2001:db8::2".parse().unwrap(), ..pinhole() }, Duration::ZERO));
    assert!(matches!(err, Err(PinholeError::MixedFamilies)));
    assert!(!block_on(pinholes.armed(pinhole(), Ticket(99))).unwrap());
    drop(pinholes);
    assert!(pf.anchors.lock().unwrap().is_empty(), "no anchor left behind");
}
