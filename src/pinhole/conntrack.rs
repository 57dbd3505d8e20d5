//! The ctnetlink messages that find a kernel data connection's conntrack entry and read its
//! accounting: pure building and parsing. The message types come from
//! `netlink-packet-netfilter`; the counters, the entry's id and the dump filter are attributes
//! that crate leaves raw, decoded here.
//!
//! A connection's source port is chosen by its peer and never seen by ftpgate. For IPv4 the rule
//! that lets it through records it (set `port4`), and every read is an exact lookup by the whole
//! original tuple. For IPv6 (see the table's file) the entry is first found with a dump that
//! the kernel filters (CTA_FILTER, Linux 5.8) on the original tuple's addresses, protocol and
//! destination port; only matching entries reach ftpgate, but the kernel walks its whole
//! connection table for it (some milliseconds), so it is the fallback, not the rule.

use super::netlink::attributes;
use super::{Counts, Flow};
use netlink_packet_core::{DefaultNla, NetlinkMessage, Nla, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use std::net::{IpAddr, SocketAddr};

const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_FILTER: u16 = 25;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_REPLY_FLAGS: u16 = 2;
const NLA_F_NESTED: u16 = 1 << 15;
/// Which fields of the original tuple must match: source and destination address, protocol,
/// destination port (the kernel's CTA_FILTER_FLAG bits).
const FILTER_BY: u32 = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 5);
/// For IPv6 the protocol and destination port only: the kernel (seen on 6.18) matches no IPv6
/// entry at all once addresses are in the filter; the caller checks the addresses.
const FILTER_BY_V6: u32 = (1 << 3) | (1 << 5);
fn family(ip: IpAddr) -> NetfilterProtoFamily {
    if ip.is_ipv6() {
        NetfilterProtoFamily::IPv6
    } else {
        NetfilterProtoFamily::IPv4
    }
}

fn orig_tuple(src: IpAddr, sport: Option<u16>, dst: SocketAddr) -> ConntrackAttribute {
    let mut ports = vec![ProtoTuple::Protocol(Protocol::Tcp)];
    ports.extend(sport.map(ProtoTuple::SourcePort));
    ports.push(ProtoTuple::DestinationPort(dst.port()));
    ConntrackAttribute::CtaTupleOrig(vec![
        Tuple::Ip(vec![IPTuple::SourceAddress(src), IPTuple::DestinationAddress(dst.ip())]),
        Tuple::Proto(ports),
    ])
}

/// A request with `attrs`, then `raw` attributes already in wire form (appended after the
/// message is serialized, with the message's length set again).
fn message(src: IpAddr, attrs: Vec<ConntrackAttribute>, raw: &[u8], flags: u16, seq: u32) -> Vec<u8> {
    let h = NetfilterHeader::new(family(src), 0, 0);
    let mut m = NetlinkMessage::from(NetfilterMessage::new(h, ConntrackMessage::Get(attrs)));
    m.header.flags = flags;
    m.header.sequence_number = seq;
    m.finalize();
    let mut buf = vec![0u8; m.buffer_len()];
    m.serialize(&mut buf);
    buf.extend_from_slice(raw);
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// One attribute in wire form: length, type, value, padding to 4 bytes.
fn push_attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize((out.len() + 3) & !3, 0);
}

/// The entries whose original tuple is TCP from `peer` to `dialled`, any source port: a dump
/// the kernel filters (IPv6: by port only), answered by the matching entries and a DONE.
pub fn dump(peer: IpAddr, dialled: SocketAddr, seq: u32) -> Vec<u8> {
    let mut filter = Vec::with_capacity(16);
    let by = if peer.is_ipv6() { FILTER_BY_V6 } else { FILTER_BY };
    push_attribute(&mut filter, CTA_FILTER_ORIG_FLAGS, &by.to_ne_bytes());
    push_attribute(&mut filter, CTA_FILTER_REPLY_FLAGS, &0u32.to_ne_bytes());
    // The kernel parses the filter strictly: it must carry the nested flag, which the
    // crate's raw attributes cannot, so it is written here.
    let mut raw = Vec::with_capacity(20);
    push_attribute(&mut raw, CTA_FILTER | NLA_F_NESTED, &filter);
    message(peer, vec![orig_tuple(peer, None, dialled)], &raw, NLM_F_REQUEST | NLM_F_DUMP, seq)
}

/// The one entry with this exact original tuple: answered by it and an acknowledgement, or
/// ENOENT once the kernel forgot it.
pub fn get(src: SocketAddr, dst: SocketAddr, seq: u32) -> Vec<u8> {
    message(src.ip(), vec![orig_tuple(src.ip(), Some(src.port()), dst)], &[], NLM_F_REQUEST | NLM_F_ACK, seq)
}

fn raw(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

fn counts(nested: &[u8]) -> Option<Counts> {
    let field = |want: u16| {
        attributes(nested).find(|(k, _)| *k == want).and_then(|(_, v)| v.try_into().ok()).map(u64::from_be_bytes)
    };
    Some(Counts { bytes: field(CTA_COUNTERS_BYTES)?, packets: field(CTA_COUNTERS_PACKETS)? })
}

/// A conntrack entry from one whole netlink message (header included); `None` for anything
/// else, or an entry that is not TCP with both addresses and ports.
pub fn parse(message: &[u8]) -> Option<Flow> {
    let m = NetlinkMessage::<NetfilterMessage>::deserialize(message).ok()?;
    let netlink_packet_core::NetlinkPayload::InnerMessage(inner) = m.payload else { return None };
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = inner.inner else { return None };
    let (mut src, mut dst, mut sport, mut dport, mut tcp) = (None, None, None, None, false);
    let (mut id, mut tcp_state, mut orig, mut reply) = (None, None, None, None);
    for a in &attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(tuple) => {
                for t in tuple {
                    match t {
                        Tuple::Ip(ips) => ips.iter().for_each(|ip| match ip {
                            IPTuple::SourceAddress(a) => src = Some(*a),
                            IPTuple::DestinationAddress(a) => dst = Some(*a),
                            _ => {}
                        }),
                        Tuple::Proto(ps) => ps.iter().for_each(|p| match p {
                            ProtoTuple::Protocol(p) => tcp = *p == Protocol::Tcp,
                            ProtoTuple::SourcePort(p) => sport = Some(*p),
                            ProtoTuple::DestinationPort(p) => dport = Some(*p),
                            _ => {}
                        }),
                        _ => {}
                    }
                }
            }
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for i in infos {
                    if let ProtoInfo::TCP(fields) = i {
                        for f in fields {
                            if let ProtoInfoTCP::State(s) = f {
                                tcp_state = Some(*s);
                            }
                        }
                    }
                }
            }
            ConntrackAttribute::Other(nla) => match nla.kind() & 0x3fff {
                CTA_ID => id = raw(nla).try_into().ok().map(u32::from_be_bytes),
                CTA_COUNTERS_ORIG => orig = counts(&raw(nla)),
                CTA_COUNTERS_REPLY => reply = counts(&raw(nla)),
                _ => {}
            },
            _ => {}
        }
    }
    if !tcp {
        return None;
    }
    Some(Flow {
        id,
        src: SocketAddr::new(src?, sport?),
        dst: SocketAddr::new(dst?, dport?),
        tcp_state,
        counts: orig.zip(reply).map(|(o, r)| [o, r]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT_GET: u16 = (1 << 8) | 1;

    fn nested(kind: u16, fields: &[(u16, u64)]) -> DefaultNla {
        let mut v = Vec::new();
        for (k, n) in fields {
            v.extend_from_slice(&12u16.to_ne_bytes());
            v.extend_from_slice(&k.to_ne_bytes());
            v.extend_from_slice(&n.to_be_bytes());
        }
        DefaultNla::new(kind | NLA_F_NESTED, v)
    }

    /// An entry as the kernel sends it in a dump (IPCTNL_MSG_CT_NEW).
    fn entry(state: u8, accounting: bool) -> Vec<u8> {
        let mut attrs = vec![
            orig_tuple("203.0.113.2".parse().unwrap(), Some(40000), "198.51.100.2:30001".parse().unwrap()),
            ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(vec![ProtoInfoTCP::State(state)])]),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ID, 0xdead_beefu32.to_be_bytes().to_vec())),
        ];
        if accounting {
            attrs.push(ConntrackAttribute::Other(nested(CTA_COUNTERS_ORIG, &[(1, 9), (2, 700)])));
            attrs.push(ConntrackAttribute::Other(nested(CTA_COUNTERS_REPLY, &[(1, 12), (2, 1_049_000)])));
        }
        let h = NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0);
        let mut m = NetlinkMessage::from(NetfilterMessage::new(h, ConntrackMessage::New(attrs)));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    #[test]
    fn an_entry_gives_its_tuple_state_id_and_counters() {
        let f = parse(&entry(7, true)).unwrap();
        assert_eq!(f.src, "203.0.113.2:40000".parse().unwrap());
        assert_eq!(f.dst, "198.51.100.2:30001".parse().unwrap());
        assert_eq!(f.id, Some(0xdead_beef));
        assert!(f.is_over());
        let [orig, reply] = f.counts.unwrap();
        assert_eq!((orig.packets, orig.bytes, reply.packets, reply.bytes), (9, 700, 12, 1_049_000));
        // Established: not over; made without accounting: no counts, never zeros.
        assert!(!parse(&entry(3, true)).unwrap().is_over());
        assert!(parse(&entry(8, true)).unwrap().is_over());
        assert_eq!(parse(&entry(7, false)).unwrap().counts, None);
    }

    #[test]
    fn anything_else_is_no_entry() {
        let e = entry(7, true);
        assert_eq!(parse(&e[..e.len() - 8]), None, "truncated");
        assert_eq!(parse(&get("203.0.113.2:1".parse().unwrap(), "198.51.100.2:2".parse().unwrap(), 1)), None);
    }

    #[test]
    fn the_dump_is_filtered_by_the_kernel_on_addresses_protocol_and_port() {
        let d = dump("203.0.113.2".parse().unwrap(), "198.51.100.2:30001".parse().unwrap(), 5);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), CT_GET);
        let flags = u16::from_ne_bytes([d[6], d[7]]);
        assert_eq!(flags & NLM_F_DUMP, NLM_F_DUMP);
        assert_eq!(u32::from_ne_bytes(d[8..12].try_into().unwrap()), 5);
        // nfgenmsg: the family the kernel filters on (AF_INET).
        assert_eq!(d[16], libc::AF_INET as u8);
        assert_eq!(u32::from_ne_bytes(d[..4].try_into().unwrap()) as usize, d.len());
        let attrs: Vec<(u16, &[u8])> = attributes(&d[20..]).collect();
        // The filter's type carries the nested flag (the kernel refuses it otherwise).
        let at = 20
            + attributes(&d[20..])
                .take_while(|(k, _)| *k != CTA_FILTER)
                .map(|(_, v)| (v.len() + 7) & !3)
                .sum::<usize>();
        assert_eq!(u16::from_ne_bytes([d[at + 2], d[at + 3]]), CTA_FILTER | NLA_F_NESTED);
        let filter = attrs.iter().find(|(k, _)| *k == CTA_FILTER).expect("a CTA_FILTER").1;
        let inner: Vec<(u16, &[u8])> = attributes(filter).collect();
        assert_eq!(inner[0], (CTA_FILTER_ORIG_FLAGS, &0x2bu32.to_ne_bytes()[..]));
        assert_eq!(inner[1], (CTA_FILTER_REPLY_FLAGS, &0u32.to_ne_bytes()[..]));
        // The tuple names no source port: any port of the client matches.
        let tuple = attrs.iter().find(|(k, _)| *k == 1).unwrap().1;
        let proto = attributes(tuple).find(|(k, _)| *k == 2).unwrap().1;
        assert_eq!(attributes(proto).map(|(k, _)| k).collect::<Vec<_>>(), [1, 3]);
        // IPv6: protocol and port only, the addresses are checked by the caller.
        let d6 = dump("2001:db8:1::2".parse().unwrap(), "[2001:db8:2::2]:30001".parse().unwrap(), 5);
        let filter = attributes(&d6[20..]).find(|(k, _)| *k == CTA_FILTER).unwrap().1;
        assert_eq!(attributes(filter).next(), Some((CTA_FILTER_ORIG_FLAGS, &0x28u32.to_ne_bytes()[..])));
    }

    #[test]
    fn the_exact_lookup_names_the_whole_tuple() {
        let g = get("[2001:db8:1::2]:40000".parse().unwrap(), "[2001:db8:2::2]:30001".parse().unwrap(), 6);
        assert_eq!(u16::from_ne_bytes([g[4], g[5]]), CT_GET);
        assert_eq!(u16::from_ne_bytes([g[6], g[7]]) & NLM_F_DUMP, 0);
        assert_eq!(g[16], libc::AF_INET6 as u8);
        let tuple = attributes(&g[20..]).find(|(k, _)| *k == 1).unwrap().1;
        let proto = attributes(tuple).find(|(k, _)| *k == 2).unwrap().1;
        let ports: Vec<(u16, &[u8])> = attributes(proto).collect();
        assert_eq!(ports[1], (2, &40000u16.to_be_bytes()[..]));
        assert_eq!(ports[2], (3, &30001u16.to_be_bytes()[..]));
    }
}
