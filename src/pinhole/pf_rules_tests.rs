use super::*;

fn passive() -> Pinhole {
    crate::pinhole::sample_passive()
}

fn active_v6() -> Pinhole {
    // The server connects to the firewall's reserved port; the client sees the server's
    // address, port 20.
    Pinhole {
        peer: "2001:db8:2::2".parse().unwrap(),
        dialled: "[2001:db8:2::1]:40001".parse().unwrap(),
        target: "[2001:db8:1::2]:50123".parse().unwrap(),
        source: "2001:db8:2::2".parse().unwrap(),
        source_port: Some(20),
    }
}

/// Every field FreeBSD 14's pf_nvrule_to_krule() fails without (PFNV_CHK on a non-_opt
/// getter, or an explicit nvlist_exists_* check).
const REQUIRED: &[&str] = &[
    "nr",
    "src",
    "dst",
    "ifname",
    "qname",
    "pqname",
    "tagname",
    "match_tagname",
    "overload_tblname",
    "rpool",
    "os_fingerprint",
    "rtableid",
    "timeout",
    "max_states",
    "max_src_nodes",
    "max_src_states",
    "max_src_conn",
    "max_src_conn_rate.limit",
    "max_src_conn_rate.seconds",
    "prob",
    "cuid",
    "cpid",
    "return_icmp",
    "return_icmp6",
    "max_mss",
    "scrub_flags",
    "uid",
    "gid",
    "rule_flag",
    "action",
    "direction",
    "log",
    "logif",
    "quick",
    "ifnot",
    "match_tag_not",
    "natpass",
    "keep_state",
    "af",
    "proto",
    "type",
    "code",
    "flags",
    "flagset",
    "min_ttl",
    "allow_opts",
    "rt",
    "return_ttl",
    "tos",
    "set_tos",
    "flush",
    "prio",
    "set_prio",
];

#[test]
fn anchors_are_per_process_and_pinhole() {
    assert_eq!(anchor_path(4242, 7), "ftpgate/4242.7");
}

#[test]
fn a_passive_pinhole_redirects_translates_and_passes_one_connection() {
    let p = passive();
    let r = pinhole(&p);
    let peer = Host { ip: p.peer, port: None };
    assert_eq!(
        r.rdr,
        vec![Rule {
            kind: Kind::Rdr,
            inbound: true,
            from: peer,
            to: Host { ip: p.dialled.ip(), port: Some(30000) },
            translation: Some(Translation { ip: p.target.ip(), ports: (30000, 0) }),
        }]
    );
    // static-port: the server sees the client's port, as on the Linux path.
    assert_eq!(
        r.nat,
        vec![Rule {
            kind: Kind::Nat,
            inbound: false,
            from: peer,
            to: Host { ip: p.target.ip(), port: Some(30000) },
            translation: Some(Translation { ip: p.source, ports: (0, 0) }),
        }]
    );
    // The first filter rule is the one whose state count `armed()` reads.
    assert_eq!(r.filter.len(), 2);
    assert_eq!(r.filter[0].kind, Kind::PassOnce);
    assert!(r.filter[0].inbound);
    assert_eq!(r.filter[0].from, peer);
    assert_eq!(r.filter[0].to, Host { ip: p.target.ip(), port: Some(30000) });
    assert!(!r.filter[1].inbound);
    assert_eq!(r.filter[1].from, Host { ip: p.source, port: None });
    assert_eq!(r.parts().map(|(n, rules)| (n, rules.len())), [(4, 1), (2, 1), (1, 2)]);
}

#[test]
fn port_20_is_the_translation_and_what_the_outbound_pass_expects() {
    let p = active_v6();
    let r = pinhole(&p);
    assert_eq!(r.nat[0].translation, Some(Translation { ip: p.source, ports: (20, 20) }));
    assert_eq!(r.filter[1].from, Host { ip: p.source, port: Some(20) });
    assert_eq!(r.rdr[0].pool_address(), Some(p.target.ip()));
    assert_eq!(r.filter[0].pool_address(), None);
}

#[test]
fn rule_nvlists_carry_every_field_the_kernel_requires() {
    for rule in pinhole(&passive()).filter.iter().chain(&pinhole(&active_v6()).rdr).chain(&cut(&passive()).filter) {
        let l = rule.to_nvlist();
        let have = crate::pinhole::nvlist::names(&l);
        for name in REQUIRED {
            assert!(have.contains_key(name), "{name} missing from {rule:?}");
        }
        assert_eq!(l.get("timeout"), Some(&Value::NumberArray(vec![0; 25])));
        // The kernel reads the whole request back: it must unpack.
        assert_eq!(NvList::unpack(&l.pack()).unwrap(), l);
    }
}

#[test]
fn the_pass_rule_keeps_state_for_one_syn() {
    let l = pinhole(&passive()).filter[0].to_nvlist();
    assert_eq!(l.get_number("action"), Some(0)); // PF_PASS
    assert_eq!(l.get_number("direction"), Some(1)); // PF_IN
    assert_eq!(l.get_number("quick"), Some(1));
    assert_eq!(l.get_number("keep_state"), Some(1)); // PF_STATE_NORMAL
    assert_eq!(l.get_number("max_states"), Some(1));
    assert_eq!(l.get_number("flags"), Some(0x02)); // S
    assert_eq!(l.get_number("flagset"), Some(0x12)); // SA
    assert_eq!(l.get_number("af"), Some(2));
    assert_eq!(l.get_number("proto"), Some(6));
    assert_eq!(l.get_number("rtableid"), Some(u64::MAX)); // -1
}

#[test]
fn addresses_are_hosts_and_ports_network_order() {
    let l = pinhole(&passive()).rdr[0].to_nvlist();
    let dst = l.get_list("dst").unwrap();
    // htons(30000) = 0x3075 on a little-endian host: pf compares with the header's bytes.
    assert_eq!(dst.get("port"), Some(&Value::NumberArray(vec![u64::from(30000u16.to_be()), 0])));
    assert_eq!(dst.get_number("port_op"), Some(2)); // PF_OP_EQ
    let wrap = dst.get_list("addr").unwrap();
    assert_eq!(wrap.get_number("type"), Some(0)); // PF_ADDR_ADDRMASK
    let bin = |name: &str| wrap.get_list(name).and_then(|a| a.get("addr")).cloned();
    let mut want = vec![198, 51, 100, 2];
    want.resize(16, 0);
    assert_eq!(bin("addr"), Some(Value::Binary(want)));
    let mut mask = vec![0xff; 4];
    mask.resize(16, 0);
    assert_eq!(bin("mask"), Some(Value::Binary(mask)));
    let src = l.get_list("src").unwrap();
    assert_eq!(src.get_number("port_op"), Some(0)); // any port
                                                    // The redirect port is in host order (pf's rpool.proxy_port).
    let pool = l.get_list("rpool").unwrap();
    assert_eq!(pool.get("proxy_port"), Some(&Value::NumberArray(vec![30000, 0])));
    assert_eq!(l.get_number("action"), Some(8)); // PF_RDR

    let v6 = pinhole(&active_v6()).nat[0].to_nvlist();
    assert_eq!(v6.get_number("af"), Some(28)); // FreeBSD's AF_INET6
    assert_eq!(v6.get_number("action"), Some(4)); // PF_NAT
    assert_eq!(v6.get_number("direction"), Some(2)); // PF_OUT
    let mask6 = v6.get_list("dst").and_then(|d| d.get_list("addr")).and_then(|w| w.get_list("mask")).unwrap();
    assert_eq!(mask6.get("addr"), Some(&Value::Binary(vec![0xff; 16])));
}

#[test]
fn a_cut_answers_both_ends_with_resets() {
    let p = active_v6();
    let c = cut(&p);
    assert!(c.rdr.is_empty() && c.nat.is_empty());
    assert_eq!(c.filter[0].from, Host { ip: p.peer, port: None });
    assert_eq!(c.filter[0].to, Host { ip: p.dialled.ip(), port: Some(40001) });
    assert_eq!(c.filter[1].from, Host { ip: p.target.ip(), port: Some(50123) });
    assert_eq!(c.filter[1].to, Host { ip: p.source, port: Some(20) });
    let l = c.filter[1].to_nvlist();
    assert_eq!(l.get_number("action"), Some(1)); // PF_DROP
    assert_eq!(l.get_number("rule_flag"), Some(1)); // PFRULE_RETURNRST
    assert_eq!(l.get_number("quick"), Some(1));
    assert_eq!(l.get_number("keep_state"), Some(0));
}

#[test]
fn requests_name_anchor_tickets_and_rule() {
    let rule = pinhole(&passive()).filter[0];
    let req = add_rule(&rule, "ftpgate/1.2", 77, 78);
    assert_eq!(req.get_number("ticket"), Some(77));
    assert_eq!(req.get_number("pool_ticket"), Some(78));
    assert_eq!(req.get("anchor"), Some(&Value::String("ftpgate/1.2".into())));
    assert_eq!(req.get_list("rule"), Some(&rule.to_nvlist()));
    let get = get_rule("ftpgate/1.2", 77, 0);
    assert_eq!(get.get_number("ruleset"), Some(0)); // PF_PASS: the filter ruleset
    assert_eq!(get.get_number("nr"), Some(0));
}

#[test]
fn the_state_count_is_read_from_the_answer() {
    // The shape of DIOCGETRULENV's answer: {"nr", "rule": {.. "states_tot" ..}, ...}.
    let answer = NvList::new().num("nr", 0).list("rule", NvList::new().num("states_cur", 1).num("states_tot", 1));
    assert_eq!(states_created(&NvList::unpack(&answer.pack()).unwrap()), Some(1));
    assert_eq!(states_created(&NvList::new().num("nr", 0)), None);
}

#[test]
fn kills_name_both_legs() {
    let p = passive();
    let [peer_leg, target_leg] = kill_states(&p);
    let host = |l: &NvList, side: &str| {
        let a = l.get_list(side).unwrap();
        (
            a.get_list("addr").and_then(|w| w.get_list("addr")).and_then(|x| x.get("addr")).cloned(),
            a.get_number("port_op"),
        )
    };
    let bytes = |ip: &str| {
        let mut v = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        v.resize(16, 0);
        Some(Value::Binary(v))
    };
    assert_eq!(host(&peer_leg, "src"), (bytes("203.0.113.2"), Some(0)));
    assert_eq!(host(&peer_leg, "dst"), (bytes("198.51.100.2"), Some(2)));
    assert_eq!(host(&target_leg, "src"), (bytes("198.51.100.1"), Some(0)));
    assert_eq!(peer_leg.get("kill_match"), Some(&Value::Bool(false)));
    assert!(peer_leg.get_list("cmp").is_some());
}

#[test]
fn ftpgates_own_active_connection_is_translated_to_the_server() {
    let to: SocketAddr = "203.0.113.2:50123".parse().unwrap();
    let server: IpAddr = "198.51.100.2".parse().unwrap();
    let r = source_nat(41000, to, server, Some(20));
    assert!(r.rdr.is_empty());
    // From any address of the firewall, but only from the port ftpgate bound, to exactly the
    // client's data address.
    let nat = r.nat[0];
    assert_eq!(nat.from, Host { ip: "0.0.0.0".parse().unwrap(), port: Some(41000) });
    assert_eq!(nat.to, Host { ip: to.ip(), port: Some(50123) });
    assert_eq!(nat.translation, Some(Translation { ip: server, ports: (20, 20) }));
    let l = nat.to_nvlist();
    assert_eq!(l.get_number("direction"), Some(2)); // PF_OUT
    let src = l.get_list("src").unwrap();
    let mask = src.get_list("addr").and_then(|w| w.get_list("mask")).and_then(|m| m.get("addr")).cloned();
    assert_eq!(mask, Some(Value::Binary(vec![0; 16])), "any address: mask 0");
    assert_eq!(src.get("port"), Some(&Value::NumberArray(vec![u64::from(41000u16.to_be()), 0])));
    // The filter sees the translated source: the server's address and port 20.
    assert_eq!(r.filter[0].from, Host { ip: server, port: Some(20) });
    assert!(!r.filter[0].inbound);
    // Without port 20 the bound port is kept (static-port).
    let kept = source_nat(41000, to, server, None);
    assert_eq!(kept.nat[0].translation, Some(Translation { ip: server, ports: (0, 0) }));
    assert_eq!(kept.filter[0].from.port, Some(41000));
}

#[test]
fn only_anchors_of_dead_ftpgate_processes_are_stale() {
    let alive = |pid: u32| pid == 4242;
    assert!(stale("17.3", alive));
    assert!(!stale("4242.3", alive), "a live process's pinhole");
    for other in ["custom", "17", "17.", ".3", "17.3x", "x17.3", "17.3.1", ""] {
        assert!(!stale(other, alive), "{other:?} is not a pinhole's name");
    }
}
