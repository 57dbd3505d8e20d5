//! The nf_tables messages of a pinhole: which set elements it consists of, and their wire
//! form. The message types come from `netlink-packet-netfilter`; what is ftpgate's own is the
//! layout of the sets in `nftables/ftpgate-kernel-path.nft` and the encoding of concatenated
//! keys (each field padded to 32 bits, as nf_tables registers are).

use super::netlink::attributes;
use super::{Pinhole, TABLE};
use netlink_packet_core::{DefaultNla, NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetAttribute, SetElementAttribute, SetElementList,
    SetElementMessage, SetMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// Every set the table must have, by family: the one-shot gate, the destination translation,
/// the source translation without and with a fixed port, the guard, the connections cut; and
/// the source ports of IPv4 connections that passed a gate.
pub const SETS: [&str; 13] = [
    "once4",
    "dnat4",
    "snat4",
    "snat4_port",
    "guard4",
    "kill4",
    "once6",
    "dnat6",
    "snat6",
    "snat6_port",
    "guard6",
    "kill6",
    "port4",
];

/// One element of one set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    pub set: &'static str,
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// A port in a concatenation: network order, padded to a 32-bit register.
fn push_port(out: &mut Vec<u8>, port: u16) {
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

/// `peer . address . port`, the key type of every set of the table.
fn key(peer: IpAddr, to: SocketAddr) -> Vec<u8> {
    let mut k = Vec::with_capacity(36);
    push_ip(&mut k, peer);
    push_ip(&mut k, to.ip());
    push_port(&mut k, to.port());
    k
}

/// The elements of a pinhole, all keyed by the connection as the peer opens it (the source
/// maps through conntrack's original tuple, since a destination translated to itself leaves no
/// trace in the connection's NAT status).
pub fn elements(p: &Pinhole) -> [Element; 3] {
    let v = if p.peer.is_ipv6() { 6 } else { 4 };
    let pick = |four: &'static str, six: &'static str| if v == 4 { four } else { six };
    let first = key(p.peer, p.dialled);
    let mut dnat = Vec::with_capacity(20);
    push_ip(&mut dnat, p.target.ip());
    push_port(&mut dnat, p.target.port());
    let mut snat = Vec::with_capacity(20);
    push_ip(&mut snat, p.source);
    let snat_set = match p.source_port {
        Some(port) => {
            push_port(&mut snat, port);
            pick("snat4_port", "snat6_port")
        }
        None => pick("snat4", "snat6"),
    };
    [
        Element { set: pick("once4", "once6"), key: first.clone(), data: None },
        Element { set: pick("dnat4", "dnat6"), key: first.clone(), data: Some(dnat) },
        Element { set: snat_set, key: first, data: Some(snat) },
    ]
}

/// The address and port a pinhole is dialled at: while it is in the guard set, a connection
/// there that did not pass the gate (a stranger's, or the peer's second) is dropped. Shared by
/// pinholes that happen to be dialled at the same place, so never removed, only expired.
pub fn guard(p: &Pinhole) -> Element {
    let mut k = Vec::with_capacity(20);
    push_ip(&mut k, p.dialled.ip());
    push_port(&mut k, p.dialled.port());
    Element { set: if p.peer.is_ipv6() { "guard6" } else { "guard4" }, key: k, data: None }
}

/// The gate alone: present while the pinhole is armed, deleted by the rule that translates
/// the first packet.
pub fn gate(p: &Pinhole) -> Element {
    let [gate, ..] = elements(p);
    gate
}

/// The connection that used a pinhole, to be cut: keyed like the gate, matched against the
/// connection's original tuple, so packets of both directions are reset.
pub fn kill(p: &Pinhole) -> Element {
    Element { set: if p.peer.is_ipv6() { "kill6" } else { "kill4" }, key: key(p.peer, p.dialled), data: None }
}

/// Where the rule that lets a connection through leaves the port it came from (IPv4 only: see
/// the table's file), keyed like the gate.
pub fn port(p: &Pinhole) -> Option<Element> {
    (!p.peer.is_ipv6()).then(|| Element { set: "port4", key: key(p.peer, p.dialled), data: None })
}

const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

/// The port a set element's data holds, from the element's message (the payload after the
/// netlink header): network order in the first two bytes of a 32-bit register.
/// The attributes of the (first) element in a GETSETELEM answer's payload.
fn element(payload: &[u8]) -> Option<&[u8]> {
    let (_, list) = attributes(payload.get(4..)?).find(|(k, _)| *k == NFTA_SET_ELEM_LIST_ELEMENTS)?;
    attributes(list).find(|(k, _)| *k == NFTA_LIST_ELEM).map(|(_, elem)| elem)
}

/// How long the element in a GETSETELEM answer has left, when it has a timeout.
pub fn element_expiration(payload: &[u8]) -> Option<Duration> {
    let (_, ms) = attributes(element(payload)?).find(|(k, _)| *k == NFTA_SET_ELEM_EXPIRATION)?;
    Some(Duration::from_millis(u64::from_be_bytes(ms.get(..8)?.try_into().ok()?)))
}

pub fn element_port(payload: &[u8]) -> Option<u16> {
    let (_, data) = attributes(element(payload)?).find(|(k, _)| *k == NFTA_SET_ELEM_DATA)?;
    let (_, value) = attributes(data).find(|(k, _)| *k == NFTA_DATA_VALUE)?;
    Some(u16::from_be_bytes(value.get(..2)?.try_into().ok()?))
}

fn header() -> NetfilterHeader {
    NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0)
}

fn element_message(e: &Element, timeout: Option<Duration>) -> SetElementMessage {
    let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(e.key.clone()))];
    if let Some(d) = &e.data {
        attrs.push(SetElementAttribute::Data(DataAttribute::Value(d.clone())));
    }
    if let Some(t) = timeout {
        // Milliseconds; at least one, since zero would mean "the set's default". The
        // expiration too: an element written again over an identical one gets its full time
        // again only when told (the kernel keeps the old expiry for an unchanged timeout).
        let ms = (t.as_millis() as u64).max(1);
        attrs.push(SetElementAttribute::Timeout(ms));
        attrs.push(SetElementAttribute::Expiration(ms));
    }
    SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.into()),
            SetElementList::Set(e.set.into()),
            SetElementList::Elements(vec![ListAttribute::Element(attrs)]),
        ],
    }
}

fn message(inner: NfTablesMessage, flags: u16, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let mut m = NetlinkMessage::from(NetfilterMessage::new(header(), inner));
    m.header.flags = flags;
    m.header.sequence_number = seq;
    m.finalize();
    m
}

fn control(inner: ControlMessage, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let h = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
    let mut m = NetlinkMessage::from(NetfilterMessage::new(h, inner));
    m.header.flags = NLM_F_REQUEST;
    m.header.sequence_number = seq;
    m.finalize();
    m
}

/// Adds an element; fails if an identical one is armed (two pinholes never share a key).
pub fn add(e: &Element, timeout: Duration, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    message(NfTablesMessage::NewSetElement(element_message(e, Some(timeout))), flags, seq)
}

/// Adds an element, or leaves an identical one as it is (a guard shared by two pinholes).
pub fn add_shared(e: &Element, timeout: Duration, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    message(NfTablesMessage::NewSetElement(element_message(e, Some(timeout))), flags, seq)
}

pub fn delete(e: &Element, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    message(NfTablesMessage::DeleteSetElement(element_message(e, None)), NLM_F_REQUEST | NLM_F_ACK, seq)
}

/// Asks for one element: answered with the element, or ENOENT once it is gone.
pub fn get(e: &Element, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    message(NfTablesMessage::GetSetElement(element_message(e, None)), NLM_F_REQUEST | NLM_F_ACK, seq)
}

/// The table's named counters: pinholes used, connections the pinhole rules dropped.
pub const COUNTERS: [&str; 2] = ["used", "refused"];

const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Asks for one named counter of the table.
pub fn get_counter(name: &str, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let attrs = vec![
        DefaultNla::new(NFTA_OBJ_TABLE, c_string(TABLE)),
        DefaultNla::new(NFTA_OBJ_NAME, c_string(name)),
        DefaultNla::new(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER.to_be_bytes().to_vec()),
    ];
    message(NfTablesMessage::GetObject(attrs), NLM_F_REQUEST | NLM_F_ACK, seq)
}

/// The packet count in a counter object's reply (the payload after the netlink header).
pub fn counter_packets(payload: &[u8]) -> Option<u64> {
    // After the 4-byte nfgenmsg: the object's attributes; its data nests the counter's.
    let (_, data) = attributes(payload.get(4..)?).find(|(k, _)| *k == NFTA_OBJ_DATA)?;
    let (_, packets) = attributes(data).find(|(k, _)| *k == NFTA_COUNTER_PACKETS)?;
    Some(u64::from_be_bytes(packets.try_into().ok()?))
}

/// Asks whether a set of the table exists (the start-up probe).
pub fn get_set(name: &str, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let inner = NfTablesMessage::GetSet(SetMessage {
        attributes: vec![SetAttribute::Table(TABLE.into()), SetAttribute::Name(name.into())],
    });
    message(inner, NLM_F_REQUEST | NLM_F_ACK, seq)
}

/// The write messages framed as one transaction: all take effect, or none.
pub fn batch(messages: Vec<NetlinkMessage<NetfilterMessage>>, first_seq: u32, last_seq: u32) -> Vec<u8> {
    let mut all = Vec::with_capacity(messages.len() + 2);
    all.push(control(ControlMessage::BatchBegin, first_seq));
    all.extend(messages);
    all.push(control(ControlMessage::BatchEnd, last_seq));
    serialize(&all)
}

pub fn serialize(messages: &[NetlinkMessage<NetfilterMessage>]) -> Vec<u8> {
    let len = messages.iter().map(|m| m.buffer_len()).sum();
    let mut buf = vec![0u8; len];
    let mut at = 0;
    for m in messages {
        m.serialize(&mut buf[at..at + m.buffer_len()]);
        at += m.buffer_len();
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive4() -> Pinhole {
        Pinhole {
            peer: "203.0.113.2".parse().unwrap(),
            dialled: "198.51.100.2:30001".parse().unwrap(),
            target: "198.51.100.2:30001".parse().unwrap(),
            source: "198.51.100.1".parse().unwrap(),
            source_port: None,
        }
    }

    #[test]
    fn keys_are_concatenations_padded_to_registers() {
        let [gate, dnat, snat] = elements(&passive4());
        assert_eq!(gate.set, "once4");
        assert_eq!(gate.key, [203, 0, 113, 2, 198, 51, 100, 2, 0x75, 0x31, 0, 0]);
        assert_eq!(dnat.set, "dnat4");
        assert_eq!(dnat.key, gate.key);
        assert_eq!(dnat.data.as_deref(), Some(&[198, 51, 100, 2, 0x75, 0x31, 0, 0][..]));
        assert_eq!(snat.set, "snat4");
        assert_eq!(snat.data.as_deref(), Some(&[198, 51, 100, 1][..]));
    }

    #[test]
    fn a_fixed_source_port_uses_the_port_map() {
        let active6 = Pinhole {
            peer: "2001:db8:2::2".parse().unwrap(),
            dialled: "[2001:db8:2::1]:45000".parse().unwrap(),
            target: "[2001:db8:1::2]:40000".parse().unwrap(),
            source: "2001:db8:2::2".parse().unwrap(),
            source_port: Some(20),
        };
        let [gate, dnat, snat] = elements(&active6);
        assert_eq!((gate.set, dnat.set, snat.set), ("once6", "dnat6", "snat6_port"));
        assert_eq!(gate.key.len(), 36);
        assert_eq!(dnat.data.as_ref().unwrap().len(), 20);
        assert_eq!(&snat.data.as_ref().unwrap()[16..], &[0, 20, 0, 0]);
        // Every element is keyed by what the peer dials: the server, to the firewall's port.
        assert_eq!(snat.key, gate.key);
        assert_eq!(&snat.key[16..32], &"2001:db8:2::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    }

    #[test]
    fn the_guard_is_keyed_by_the_place_dialled_alone() {
        let g = guard(&passive4());
        assert_eq!(g.set, "guard4");
        assert_eq!(g.key, [198, 51, 100, 2, 0x75, 0x31, 0, 0]);
        assert!(SETS.contains(&g.set) && SETS.contains(&"guard6"));
    }

    #[test]
    fn a_counter_reply_gives_its_packets() {
        // nfgenmsg, then NFTA_OBJ_NAME "used", NFTA_OBJ_DATA { BYTES 640, PACKETS 7 }.
        let mut p = vec![1, 0, 0, 0];
        p.extend_from_slice(&[9, 0, 2, 0, b'u', b's', b'e', b'd', 0, 0, 0, 0]);
        p.extend_from_slice(&[28, 0, 4, 0x80]);
        p.extend_from_slice(&[12, 0, 1, 0]);
        p.extend_from_slice(&640u64.to_be_bytes());
        p.extend_from_slice(&[12, 0, 2, 0]);
        p.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(counter_packets(&p), Some(7));
        assert_eq!(counter_packets(&p[..20]), None);
        let m = get_counter("refused", 9);
        assert!(serialize(&[m]).windows(8).any(|w| w == b"refused\0"));
    }

    #[test]
    fn the_port_element_is_keyed_like_the_gate_and_its_data_read() {
        let p = passive4();
        assert_eq!(port(&p).map(|e| (e.set, e.key)), Some(("port4", gate(&p).key)));
        assert!(SETS.contains(&"port4"));
        let v6 = Pinhole {
            peer: "2001:db8:1::2".parse().unwrap(),
            dialled: "[2001:db8:2::2]:30001".parse().unwrap(),
            target: "[2001:db8:2::2]:30001".parse().unwrap(),
            source: "2001:db8:2::1".parse().unwrap(),
            source_port: None,
        };
        assert_eq!(port(&v6), None);
        // nfgenmsg; LIST_TABLE; LIST_ELEMENTS { LIST_ELEM { KEY {VALUE ..}, DATA { VALUE 40000 } } }
        let mut p = vec![1, 0, 0, 0];
        p.extend_from_slice(&[5, 0, 1, 0, b't', 0, 0, 0]);
        p.extend_from_slice(&[36, 0, 3, 0x80, 32, 0, 1, 0x80]);
        p.extend_from_slice(&[16, 0, 1, 0x80, 12, 0, 1, 0, 203, 0, 113, 2, 198, 51, 100, 2]);
        p.extend_from_slice(&[12, 0, 2, 0x80, 8, 0, 1, 0, 0x9c, 0x40, 0, 0]);
        assert_eq!(element_port(&p), Some(40000));
        assert_eq!(element_port(&p[..30]), None);
    }

    #[test]
    fn a_cut_is_keyed_like_the_gate() {
        let p = passive4();
        let k = kill(&p);
        assert_eq!((k.set, &k.key, k.data), ("kill4", &gate(&p).key, None));
        assert!(SETS.contains(&"kill4") && SETS.contains(&"kill6"));
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end() {
        let msgs = elements(&passive4())
            .iter()
            .enumerate()
            .map(|(i, e)| add(e, Duration::from_secs(5), i as u32 + 1))
            .collect();
        let buf = batch(msgs, 0, 4);
        // nlmsg_type of the first message: NFNL_MSG_BATCH_BEGIN (16), subsystem 0.
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 16);
        // Its res_id names the nf_tables subsystem (big-endian, after family and version).
        assert_eq!(u16::from_be_bytes([buf[18], buf[19]]), NFNL_SUBSYS_NFTABLES);
        let first_len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        // The next: NFT_MSG_NEWSETELEM (12) of the nf_tables subsystem (10).
        assert_eq!(u16::from_ne_bytes([buf[first_len + 4], buf[first_len + 5]]), (10 << 8) | 12);
        assert!(buf.windows(TABLE.len()).any(|w| w == TABLE.as_bytes()));
    }
}
