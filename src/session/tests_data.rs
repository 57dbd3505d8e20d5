//! The control core's data-mode handling: passive and active commands, their rewriting both
//! ways, the conversions between modes, and the checks on every data endpoint.

use super::tests::{code, opened, refused, replies, sa, to_server, v4, v6, with_mode, T};
use super::*;
use crate::protocol::address::encode_227;

#[test]
fn pasv_round_trip_rewrites_227() {
    let mut t = v4();
    assert_eq!(t.client("PASV"), vec![to_server("PASV\r\n")]);
    let a = t.server("227 Entering Passive Mode (198,51,100,2,200,1).");
    assert_eq!(opened(&a), Some(DataRequest::Passive { server_data: sa("198.51.100.2:51201") }));
    assert!(!t.core.wants_server_input(), "nothing is processed while the driver sets up");
    let a = t.ready(DataReady::Listening(sa("198.51.100.2:50000")));
    assert_eq!(replies(&a), vec!["227 Entering Passive Mode (198,51,100,2,195,80).\r\n"]);
}

#[test]
fn ipv6_client_epsv_to_ipv4_server_becomes_pasv_and_229_back() {
    let mut t = T::with("[2001:db8:1::2]:40000", "198.51.100.2:21", SessionPolicy::default());
    assert_eq!(t.client("EPSV"), vec![to_server("PASV\r\n")]);
    assert!(opened(&t.server("227 =198,51,100,2,200,1")).is_some());
    let a = t.ready(DataReady::Listening(sa("[2001:db8:1::1]:50000")));
    assert_eq!(replies(&a), vec!["229 Entering Extended Passive Mode (|||50000|)\r\n"]);
    // EPRT naming the IPv6 client goes to the IPv4 server as PORT.
    let a = t.client("EPRT |2|2001:db8:1::2|50001|");
    assert_eq!(opened(&a), Some(DataRequest::Active { client_data: sa("[2001:db8:1::2]:50001") }));
    assert!(matches!(a[0], Action::DropData(_)));
    let a = t.ready(DataReady::Listening(sa("198.51.100.1:40001")));
    assert_eq!(a, vec![to_server("PORT 198,51,100,1,156,65\r\n")]);
}

#[test]
fn ipv4_client_pasv_to_ipv6_server_becomes_epsv_and_227_back() {
    let mut t = T::with("203.0.113.2:40000", "[2001:db8:2::2]:21", SessionPolicy::default());
    assert_eq!(t.client("PASV"), vec![to_server("EPSV\r\n")]);
    let a = t.server("229 ok (|||6000|)");
    assert_eq!(opened(&a), Some(DataRequest::Passive { server_data: sa("[2001:db8:2::2]:6000") }));
    let a = t.ready(DataReady::Listening(sa("203.0.113.1:50000")));
    assert_eq!(replies(&a), vec!["227 Entering Passive Mode (203,0,113,1,195,80).\r\n"]);
    assert!(opened(&t.client("PORT 203,0,113,2,195,81")).is_some());
    let a = t.ready(DataReady::Listening(sa("[2001:db8:2::1]:40001")));
    assert_eq!(a, vec![to_server("EPRT |2|2001:db8:2::1|40001|\r\n")]);
}

#[test]
fn epsv_to_ipv4_server_stays_epsv() {
    let mut t = v4();
    assert_eq!(t.client("EPSV"), vec![to_server("EPSV\r\n")]);
    let a = t.server("229 Entering Extended Passive Mode (|||51201|)");
    assert_eq!(opened(&a), Some(DataRequest::Passive { server_data: sa("198.51.100.2:51201") }));
    let a = t.ready(DataReady::Listening(sa("203.0.113.1:50000")));
    assert_eq!(replies(&a), vec!["229 Entering Extended Passive Mode (|||50000|)\r\n"]);
}

#[test]
fn client_passive_becomes_active_toward_the_server() {
    let mut t = with_mode(ServerDataMode::Active);
    assert_eq!(opened(&t.client("PASV")), Some(DataRequest::Listeners));
    let ready = DataReady::Listeners { advertise: sa("198.51.100.2:50000"), listen: sa("198.51.100.1:45000") };
    let a = t.ready(ready);
    assert_eq!(a.last(), Some(&to_server("PORT 198,51,100,1,175,200\r\n")));
    assert!(replies(&a).is_empty(), "only the server's acceptance gives the client its 227");
    let a = t.server("200 PORT ok");
    assert_eq!(
        replies(&a),
        vec![String::from_utf8(encode_227(sa("198.51.100.2:50000").to_string().parse().unwrap())).unwrap()]
    );
    t.client("RETR f");
    assert_eq!(replies(&t.server("150 go")), vec!["150 go\r\n"]);
    t.server("226 done");
    // EPSV gets 229; a server refusing PORT gives the client 425, and the channel is dropped.
    assert_eq!(opened(&t.client("EPSV")), Some(DataRequest::Listeners));
    let ready = DataReady::Listeners { advertise: sa("198.51.100.2:50001"), listen: sa("198.51.100.1:45001") };
    t.ready(ready);
    let a = t.server("500 PORT not allowed");
    assert!(a.iter().any(|x| matches!(x, Action::DropData(_))));
    assert!(replies(&a).iter().any(|r| r.starts_with("425")), "{a:?}");
}

#[test]
fn client_active_becomes_passive_toward_the_server() {
    let mut t = with_mode(ServerDataMode::Passive);
    assert_eq!(t.client("PORT 203,0,113,2,195,80"), vec![to_server("PASV\r\n")]);
    let a = t.server("227 Entering Passive Mode (198,51,100,2,200,1).");
    let want = DataRequest::Connect { server_data: sa("198.51.100.2:51201"), client_data: sa("203.0.113.2:50000") };
    assert_eq!(opened(&a), Some(want));
    assert_eq!(code(&t.ready(DataReady::Connecting)), Some(200));
    // The bounce check still applies before anything is sent.
    assert_eq!(code(&t.client("PORT 203,0,113,9,195,80")), Some(501));
    // EPRT asks EPSV; a server refusing EPSV is asked PASV; its refusal reaches the client.
    assert_eq!(t.client("EPRT |1|203.0.113.2|50002|").last(), Some(&to_server("EPSV\r\n")));
    assert_eq!(t.server("500 no EPSV").last(), Some(&to_server("PASV\r\n")));
    assert_eq!(replies(&t.server("425 no PASV")), vec!["425 no PASV\r\n"]);
}

#[test]
fn ipv6_epsv_uses_server_control_address() {
    let mut t = v6();
    assert_eq!(t.client("EPSV"), vec![to_server("EPSV\r\n")]);
    let a = t.server("229 Entering Extended Passive Mode (|||6000|)");
    assert_eq!(opened(&a), Some(DataRequest::Passive { server_data: sa("[2001:db8:2::2]:6000") }));
    t.ready(DataReady::Listening(sa("[2001:db8:2::1]:50000")));
    assert_eq!(code(&t.client("PASV")), Some(522));
}

#[test]
fn pasv_reply_naming_another_host_is_substituted_or_refused() {
    let mut t = v4();
    t.client("PASV");
    let a = t.server("227 Entering Passive Mode (10,9,8,7,200,1)");
    assert!(matches!(refused(&a)[..], [Refusal::ServerDataElsewhere { .. }]));
    assert_eq!(opened(&a), Some(DataRequest::Passive { server_data: sa("198.51.100.2:51201") }));

    let policy = SessionPolicy { server_data: ServerDataPolicy::Refuse, ..Default::default() };
    let mut t = T::with("203.0.113.2:40000", "198.51.100.2:21", policy);
    t.client("PASV");
    let a = t.server("227 Entering Passive Mode (10,9,8,7,200,1)");
    assert_eq!(code(&a), Some(425));
    assert_eq!(opened(&a), None);
}

#[test]
fn server_privileged_or_garbage_passive_port_is_refused() {
    let mut t = v4();
    t.client("PASV");
    assert_eq!(code(&t.server("227 Entering Passive Mode (198,51,100,2,0,22)")), Some(425));
    t.client("PASV");
    assert_eq!(code(&t.server("227 Entering Passive Mode (no numbers)")), Some(425));
}

#[test]
fn multiline_227_is_buffered_and_parsed_without_the_code() {
    let mut t = v4();
    t.client("PASV");
    assert!(t.server("227-Entering Passive Mode").is_empty());
    let a = t.server("227 (198,51,100,2,200,1)");
    assert_eq!(opened(&a), Some(DataRequest::Passive { server_data: sa("198.51.100.2:51201") }));
}

#[test]
fn a_227_nobody_asked_for_opens_nothing() {
    let mut t = v4();
    t.client("NOOP");
    let a = t.server("227 Entering Passive Mode (198,51,100,2,200,1)");
    assert_eq!(replies(&a), vec!["227 Entering Passive Mode (198,51,100,2,200,1)\r\n"]);
    assert_eq!(opened(&t.server("227 Entering Passive Mode (198,51,100,2,200,1)")), None);
}

#[test]
fn epsv_refused_by_server_falls_back_to_pasv() {
    let mut t = v4();
    assert_eq!(t.client("EPSV"), vec![to_server("EPSV\r\n")]);
    let a = t.server("500 EPSV not understood");
    assert!(a.contains(&Action::Note(Note::Quirk("server refused EPSV, retrying with PASV"))));
    assert_eq!(a.last(), Some(&to_server("PASV\r\n")));
    assert!(opened(&t.server("227 ok (198,51,100,2,200,1)")).is_some());
    // The client still gets the 229 it asked for.
    assert_eq!(code(&t.ready(DataReady::Listening(sa("203.0.113.1:50000")))), Some(229));
}

#[test]
fn port_is_checked_then_rewritten() {
    let mut t = v4();
    let a = t.client("PORT 203,0,113,2,195,80");
    assert_eq!(opened(&a), Some(DataRequest::Active { client_data: sa("203.0.113.2:50000") }));
    assert_eq!(
        t.ready(DataReady::Listening(sa("198.51.100.1:40001"))),
        vec![to_server("PORT 198,51,100,1,156,65\r\n")]
    );
    assert_eq!(replies(&t.server("200 ok")), vec!["200 ok\r\n"]);
}

#[test]
fn bounce_and_privileged_ports_are_refused() {
    let mut t = v4();
    let a = t.client("PORT 198,51,100,9,195,80");
    assert_eq!(code(&a), Some(501));
    assert!(matches!(refused(&a)[..], [Refusal::Bounce { .. }]));
    let a = t.client("EPRT |1|203.0.113.2|21|");
    assert!(matches!(refused(&a)[..], [Refusal::PrivilegedPort { port: 21, .. }]));
    assert_eq!(code(&t.client("EPRT |2|2001:db8:1::2|5000|")), Some(522));
    for bad in ["LPRT 4,4,1,2,3,4,2,1,1", "LPSV", "SPSV"] {
        let a = t.client(bad);
        assert_eq!(code(&a), Some(502), "{bad}");
        assert!(!a.iter().any(|x| matches!(x, Action::ToServer(_))), "nothing refused may reach the server");
    }
}

#[test]
fn eprt_ipv6_goes_upstream_as_eprt() {
    let mut t = v6();
    assert!(opened(&t.client("EPRT |2|2001:db8:1::2|50000|")).is_some());
    let a = t.ready(DataReady::Listening(sa("[2001:db8:2::1]:40001")));
    assert_eq!(a, vec![to_server("EPRT |2|2001:db8:2::1|40001|\r\n")]);
    let a = t.server("500 no");
    assert!(matches!(a[0], Action::DropData(_)));
    assert_eq!(replies(&a), vec!["500 no\r\n"]);
}

#[test]
fn transfer_final_reply_and_what_follows_wait_for_the_data() {
    let mut t = v4();
    t.client("PASV");
    t.server("227 (198,51,100,2,200,1)");
    t.ready(DataReady::Listening(sa("198.51.100.2:50000")));
    let id = t.data.unwrap();
    t.bytes(b"RETR big\r\nNOOP\r\n");
    assert_eq!(replies(&t.server("150 here")), vec!["150 here\r\n"]);
    assert!(replies(&t.server("226-done")).is_empty());
    assert!(replies(&t.server("226 bye")).is_empty());
    assert!(replies(&t.server("200 noop")).is_empty(), "a later reply overtook the held 226");
    let a = t.finished(DataId(id.0 + 7));
    assert!(a.contains(&Action::Note(Note::StaleData { id: DataId(id.0 + 7), event: "finished" })));
    assert_eq!(replies(&t.finished(id)).concat(), "226-done\r\n226 bye\r\n200 noop\r\n");
    t.client("RETR missing");
    assert_eq!(replies(&t.server("550 no")), vec!["550 no\r\n"]);
}
