use super::*;
use crate::protocol::LineFramer;

fn session_with(client: &str, server: &str, policy: SessionPolicy) -> Session {
    let mut s = Session::new(ClientAddr(client.parse().unwrap()), UpstreamAddr(server.parse().unwrap()), policy);
    assert_eq!(s.on_server_line(b"220 hello\r"), vec![Action::ToClient(b"220 hello\r\n".to_vec())]);
    s
}

fn v4() -> Session {
    session_with("203.0.113.2:40000", "198.51.100.2:21", SessionPolicy::default())
}

fn v6() -> Session {
    session_with("[2001:db8:1::2]:40000", "[2001:db8:2::2]:21", SessionPolicy::default())
}

fn client(s: &mut Session, line: &str) -> Vec<Action> {
    s.on_client_frame(Frame::Line(line.as_bytes().to_vec()), false)
}

fn to_client_code(actions: &[Action]) -> Option<u16> {
    actions.iter().find_map(|a| match a {
        Action::ToClient(b) => crate::protocol::reply::parse_code(b),
        _ => None,
    })
}

#[test]
fn plain_commands_are_relayed_as_spelled() {
    let mut s = v4();
    assert_eq!(client(&mut s, "user anonymous\r"), vec![Action::ToServer(b"user anonymous\r\n".to_vec())]);
    assert_eq!(s.on_server_line(b"331 pass?\r"), vec![Action::ToClient(b"331 pass?\r\n".to_vec())]);
    assert!(!s.awaiting_reply());
}

#[test]
fn pasv_round_trip_rewrites_227() {
    let mut s = v4();
    assert_eq!(client(&mut s, "PASV\r"), vec![Action::DropData, Action::ToServer(b"PASV\r\n".to_vec())]);
    let a = s.on_server_line(b"227 Entering Passive Mode (198,51,100,2,200,1).\r");
    assert_eq!(a, vec![Action::OpenPassive { server_data: "198.51.100.2:51201".parse().unwrap() }]);
    let a = s.on_passive_ready("198.51.100.2:50000".parse().unwrap());
    assert_eq!(a, vec![Action::ToClient(b"227 Entering Passive Mode (198,51,100,2,195,80).\r\n".to_vec())]);
}

#[test]
fn ipv6_client_epsv_to_ipv4_server_becomes_pasv_and_229_back() {
    let mut s = session_with("[2001:db8:1::2]:40000", "198.51.100.2:21", SessionPolicy::default());
    assert_eq!(client(&mut s, "EPSV\r"), vec![Action::DropData, Action::ToServer(b"PASV\r\n".to_vec())]);
    let a = s.on_server_line(b"227 =198,51,100,2,200,1\r");
    assert!(matches!(a[..], [Action::OpenPassive { .. }]));
    let a = s.on_passive_ready("[2001:db8:1::1]:50000".parse().unwrap());
    assert_eq!(a, vec![Action::ToClient(b"229 Entering Extended Passive Mode (|||50000|)\r\n".to_vec())]);
    // EPRT naming the IPv6 client goes to the IPv4 server as PORT.
    let a = client(&mut s, "EPRT |2|2001:db8:1::2|50001|\r");
    assert_eq!(a, vec![Action::DropData, Action::OpenActive { client_data: "[2001:db8:1::2]:50001".parse().unwrap() }]);
    let a = s.on_active_ready("198.51.100.1:40001".parse().unwrap());
    assert_eq!(a, vec![Action::ToServer(b"PORT 198,51,100,1,156,65\r\n".to_vec())]);
}

#[test]
fn ipv4_client_pasv_to_ipv6_server_becomes_epsv_and_227_back() {
    let mut s = session_with("203.0.113.2:40000", "[2001:db8:2::2]:21", SessionPolicy::default());
    assert_eq!(client(&mut s, "PASV\r"), vec![Action::DropData, Action::ToServer(b"EPSV\r\n".to_vec())]);
    let a = s.on_server_line(b"229 ok (|||6000|)\r");
    assert_eq!(a, vec![Action::OpenPassive { server_data: "[2001:db8:2::2]:6000".parse().unwrap() }]);
    let a = s.on_passive_ready("203.0.113.1:50000".parse().unwrap());
    assert_eq!(a, vec![Action::ToClient(b"227 Entering Passive Mode (203,0,113,1,195,80).\r\n".to_vec())]);
    let a = client(&mut s, "PORT 203,0,113,2,195,81\r");
    assert!(matches!(a[..], [Action::DropData, Action::OpenActive { .. }]));
    let a = s.on_active_ready("[2001:db8:2::1]:40001".parse().unwrap());
    assert_eq!(a, vec![Action::ToServer(b"EPRT |2|2001:db8:2::1|40001|\r\n".to_vec())]);
}

#[test]
fn epsv_to_ipv4_server_stays_epsv() {
    let mut s = v4();
    assert_eq!(client(&mut s, "EPSV\r"), vec![Action::DropData, Action::ToServer(b"EPSV\r\n".to_vec())]);
    let a = s.on_server_line(b"229 Entering Extended Passive Mode (|||51201|)\r");
    assert_eq!(a, vec![Action::OpenPassive { server_data: "198.51.100.2:51201".parse().unwrap() }]);
    let a = s.on_passive_ready("203.0.113.1:50000".parse().unwrap());
    assert_eq!(a, vec![Action::ToClient(b"229 Entering Extended Passive Mode (|||50000|)\r\n".to_vec())]);
}

fn with_mode(mode: ServerDataMode) -> Session {
    let policy = SessionPolicy { server_mode: mode, ..SessionPolicy::default() };
    session_with("203.0.113.2:40000", "198.51.100.2:21", policy)
}

#[test]
fn client_passive_becomes_active_toward_the_server() {
    let mut s = with_mode(ServerDataMode::Active);
    assert_eq!(client(&mut s, "PASV\r"), vec![Action::DropData, Action::OpenListeners]);
    let a = s.on_listeners_ready("198.51.100.2:50000".parse().unwrap(), "198.51.100.1:45000".parse().unwrap());
    assert_eq!(a[1], Action::ToServer(b"PORT 198,51,100,1,175,200\r\n".to_vec()));
    // Only the server's acceptance gives the client its 227.
    assert_eq!(
        s.on_server_line(b"200 PORT ok\r"),
        vec![Action::ToClient(encode_227("198.51.100.2:50000".parse().unwrap()))]
    );
    client(&mut s, "RETR f\r");
    assert_eq!(s.on_server_line(b"150 go\r"), vec![Action::ToClient(b"150 go\r\n".to_vec())]);
    s.on_server_line(b"226 done\r");
    // EPSV gets 229; a server refusing PORT gives the client 425, and the channel is dropped.
    assert_eq!(client(&mut s, "EPSV\r"), vec![Action::DropData, Action::OpenListeners]);
    s.on_listeners_ready("198.51.100.2:50001".parse().unwrap(), "198.51.100.1:45001".parse().unwrap());
    let a = s.on_server_line(b"500 PORT not allowed\r");
    assert_eq!(a[0], Action::DropData);
    assert_eq!(to_client_code(&a), Some(425));
}

#[test]
fn client_active_becomes_passive_toward_the_server() {
    let mut s = with_mode(ServerDataMode::Passive);
    let a = client(&mut s, "PORT 203,0,113,2,195,80\r");
    assert_eq!(a, vec![Action::DropData, Action::ToServer(b"PASV\r\n".to_vec())]);
    let a = s.on_server_line(b"227 Entering Passive Mode (198,51,100,2,200,1).\r");
    assert_eq!(
        a,
        vec![Action::ConnectBoth {
            server_data: "198.51.100.2:51201".parse().unwrap(),
            client_data: "203.0.113.2:50000".parse().unwrap()
        }]
    );
    assert_eq!(to_client_code(&s.on_connect_started()), Some(200));
    // The bounce check still applies before anything is sent.
    assert_eq!(to_client_code(&client(&mut s, "PORT 203,0,113,9,195,80\r")), Some(501));
    // EPRT asks EPSV; a server refusing EPSV is asked PASV; its refusal reaches the client.
    assert_eq!(client(&mut s, "EPRT |1|203.0.113.2|50002|\r")[1], Action::ToServer(b"EPSV\r\n".to_vec()));
    assert_eq!(s.on_server_line(b"500 no EPSV\r")[1], Action::ToServer(b"PASV\r\n".to_vec()));
    assert_eq!(s.on_server_line(b"425 no PASV\r"), vec![Action::ToClient(b"425 no PASV\r\n".to_vec())]);
}

#[test]
fn ipv6_epsv_uses_server_control_address() {
    let mut s = v6();
    assert_eq!(client(&mut s, "EPSV\r")[1], Action::ToServer(b"EPSV\r\n".to_vec()));
    let a = s.on_server_line(b"229 Entering Extended Passive Mode (|||6000|)\r");
    assert_eq!(a, vec![Action::OpenPassive { server_data: "[2001:db8:2::2]:6000".parse().unwrap() }]);
    assert_eq!(to_client_code(&client(&mut s, "PASV\r")), Some(522));
}

#[test]
fn pasv_reply_naming_another_host_is_substituted_or_refused() {
    let mut s = v4();
    client(&mut s, "PASV\r");
    let a = s.on_server_line(b"227 Entering Passive Mode (10,9,8,7,200,1)\r");
    assert!(matches!(a[0], Action::Refused(Refusal::ServerDataElsewhere { .. })));
    assert_eq!(a[1], Action::OpenPassive { server_data: "198.51.100.2:51201".parse().unwrap() });

    let policy = SessionPolicy { server_data: ServerDataPolicy::Refuse, ..Default::default() };
    let mut s = session_with("203.0.113.2:40000", "198.51.100.2:21", policy);
    client(&mut s, "PASV\r");
    let a = s.on_server_line(b"227 Entering Passive Mode (10,9,8,7,200,1)\r");
    assert_eq!(to_client_code(&a), Some(425));
    assert!(!a.iter().any(|x| matches!(x, Action::OpenPassive { .. })));
}

#[test]
fn server_privileged_or_garbage_passive_port_is_refused() {
    let mut s = v4();
    client(&mut s, "PASV\r");
    let a = s.on_server_line(b"227 Entering Passive Mode (198,51,100,2,0,22)\r");
    assert_eq!(to_client_code(&a), Some(425));
    client(&mut s, "PASV\r");
    let a = s.on_server_line(b"227 Entering Passive Mode (no numbers)\r");
    assert_eq!(to_client_code(&a), Some(425));
}

#[test]
fn multiline_227_is_buffered_and_parsed_without_the_code() {
    let mut s = v4();
    client(&mut s, "PASV\r");
    assert!(s.on_server_line(b"227-Entering Passive Mode\r").is_empty());
    let a = s.on_server_line(b"227 (198,51,100,2,200,1)\r");
    assert_eq!(a, vec![Action::OpenPassive { server_data: "198.51.100.2:51201".parse().unwrap() }]);
}

#[test]
fn a_227_nobody_asked_for_opens_nothing() {
    let mut s = v4();
    client(&mut s, "NOOP\r");
    let a = s.on_server_line(b"227 Entering Passive Mode (198,51,100,2,200,1)\r");
    assert_eq!(a, vec![Action::ToClient(b"227 Entering Passive Mode (198,51,100,2,200,1)\r\n".to_vec())]);
    let a = s.on_server_line(b"227 Entering Passive Mode (198,51,100,2,200,1)\r");
    assert!(!a.iter().any(|x| matches!(x, Action::OpenPassive { .. })));
}

#[test]
fn epsv_refused_by_server_falls_back_to_pasv() {
    let mut s = v4();
    assert_eq!(client(&mut s, "EPSV\r")[1], Action::ToServer(b"EPSV\r\n".to_vec()));
    let a = s.on_server_line(b"500 EPSV not understood\r");
    assert_eq!(
        a,
        vec![Action::Quirk("server refused EPSV, retrying with PASV"), Action::ToServer(b"PASV\r\n".to_vec())]
    );
    let a = s.on_server_line(b"227 ok (198,51,100,2,200,1)\r");
    assert!(matches!(a[..], [Action::OpenPassive { .. }]));
    // The client still gets the 229 it asked for.
    let a = s.on_passive_ready("203.0.113.1:50000".parse().unwrap());
    assert_eq!(to_client_code(&a), Some(229));
}

#[test]
fn port_is_checked_then_rewritten() {
    let mut s = v4();
    let a = client(&mut s, "PORT 203,0,113,2,195,80\r");
    assert_eq!(a, vec![Action::DropData, Action::OpenActive { client_data: "203.0.113.2:50000".parse().unwrap() }]);
    let a = s.on_active_ready("198.51.100.1:40001".parse().unwrap());
    assert_eq!(a, vec![Action::ToServer(b"PORT 198,51,100,1,156,65\r\n".to_vec())]);
    assert_eq!(s.on_server_line(b"200 ok\r"), vec![Action::ToClient(b"200 ok\r\n".to_vec())]);
}

#[test]
fn bounce_and_privileged_ports_are_refused() {
    let mut s = v4();
    let a = client(&mut s, "PORT 198,51,100,9,195,80\r");
    assert_eq!(to_client_code(&a), Some(501));
    assert!(matches!(a[1], Action::Refused(Refusal::Bounce { .. })));
    let a = client(&mut s, "EPRT |1|203.0.113.2|21|\r");
    assert!(matches!(a[1], Action::Refused(Refusal::PrivilegedPort { port: 21, .. })));
    let a = client(&mut s, "EPRT |2|2001:db8:1::2|5000|\r");
    assert_eq!(to_client_code(&a), Some(522));
    for bad in ["LPRT 4,4,1,2,3,4,2,1,1", "LPSV", "SPSV"] {
        assert_eq!(to_client_code(&client(&mut s, bad)), Some(502), "{bad}");
    }
    assert!(!s.awaiting_reply(), "nothing refused may reach the server");
}

#[test]
fn eprt_ipv6_goes_upstream_as_eprt() {
    let mut s = v6();
    let a = client(&mut s, "EPRT |2|2001:db8:1::2|50000|\r");
    assert!(matches!(a[1], Action::OpenActive { .. }));
    let a = s.on_active_ready("[2001:db8:2::1]:40001".parse().unwrap());
    assert_eq!(a, vec![Action::ToServer(b"EPRT |2|2001:db8:2::1|40001|\r\n".to_vec())]);
    let a = s.on_server_line(b"500 no\r");
    assert_eq!(a, vec![Action::DropData, Action::ToClient(b"500 no\r\n".to_vec())]);
}

#[test]
fn transfer_final_reply_waits_for_data_only_after_150() {
    let mut s = v4();
    client(&mut s, "RETR big\r");
    assert_eq!(s.on_server_line(b"150 here\r"), vec![Action::ToClient(b"150 here\r\n".to_vec())]);
    assert!(s.transfer_running());
    assert_eq!(s.on_server_line(b"226-done\r"), vec![Action::ToClientAfterData(b"226-done\r\n".to_vec())]);
    assert_eq!(s.on_server_line(b"226 bye\r"), vec![Action::ToClientAfterData(b"226 bye\r\n".to_vec())]);
    assert!(!s.transfer_running());
    client(&mut s, "RETR missing\r");
    assert_eq!(s.on_server_line(b"550 no\r"), vec![Action::DropData, Action::ToClient(b"550 no\r\n".to_vec())]);
}

#[test]
fn abor_drops_data_and_carries_the_urgent_flag() {
    let mut s = v4();
    client(&mut s, "RETR big\r");
    s.on_server_line(b"150 here\r");
    let a = s.on_client_frame(Frame::Line(b"ABOR\r".to_vec()), true);
    assert_eq!(a, vec![Action::DropData, Action::ToServerUrgent(b"ABOR\r\n".to_vec())]);
    // The client's next command waits until ABOR is answered.
    assert!(client(&mut s, "NOOP\r").is_empty());
    assert_eq!(
        s.on_server_line(b"426 aborted\r"),
        vec![Action::ToClient(b"426 aborted\r\n".to_vec()), Action::ToServer(b"NOOP\r\n".to_vec())]
    );
    assert_eq!(s.on_server_line(b"226 abor ok\r"), vec![Action::ToClient(b"226 abor ok\r\n".to_vec())]);
    // The gateway's own NOOP reply is not relayed; the held client NOOP goes out now.
    assert_eq!(s.on_server_line(b"200 NOOP ok\r"), vec![Action::ToServer(b"NOOP\r\n".to_vec())]);
    assert_eq!(s.on_server_line(b"200 NOOP ok\r"), vec![Action::ToClient(b"200 NOOP ok\r\n".to_vec())]);
    assert!(!s.awaiting_reply());
}

#[test]
fn abor_answered_with_a_single_reply_keeps_replies_paired() {
    // pure-ftpd: a stray 150, then one 226 for RETR and ABOR together.
    let mut s = v4();
    client(&mut s, "RETR big\r");
    s.on_server_line(b"150-Accepted data connection\r");
    s.on_server_line(b"150 65536.0 kbytes to download\r");
    s.on_client_frame(Frame::Line(b"ABOR\r".to_vec()), true);
    assert_eq!(s.on_server_line(b"150 0.002 seconds\r"), vec![Action::ToClient(b"150 0.002 seconds\r\n".to_vec())]);
    let a = s.on_server_line(b"226 ABOR ok\r");
    assert_eq!(a, vec![Action::ToClient(b"226 ABOR ok\r\n".to_vec()), Action::ToServer(b"NOOP\r\n".to_vec())]);
    assert!(s.on_server_line(b"200 Zzz\r").is_empty());
    // The next PASV's 227 is paired with PASV, not with a stale expectation.
    client(&mut s, "PASV\r");
    let a = s.on_server_line(b"227 Entering Passive Mode (198,51,100,2,200,1)\r");
    assert!(matches!(a[..], [Action::OpenPassive { .. }]), "{a:?}");
}

#[test]
fn commands_flooding_behind_an_abor_close_the_session() {
    let mut s = v4();
    client(&mut s, "ABOR\r");
    for _ in 0..MAX_DEFERRED {
        assert!(client(&mut s, "NOOP\r").is_empty());
    }
    assert!(client(&mut s, "NOOP\r").contains(&Action::Close));
}

#[test]
fn rest_offsets_beyond_4_gib_are_relayed_untouched() {
    let mut s = v4();
    assert_eq!(client(&mut s, "REST 5000000000123\r"), vec![Action::ToServer(b"REST 5000000000123\r\n".to_vec())]);
}

#[test]
fn auth_is_refused_by_default_and_epsv_all_is_local() {
    let mut s = v4();
    assert_eq!(to_client_code(&client(&mut s, "AUTH TLS\r")), Some(534));
    assert_eq!(to_client_code(&client(&mut s, "EPSV ALL\r")), Some(200));
    assert_eq!(to_client_code(&client(&mut s, "PASV\r")), Some(503));
    assert_eq!(to_client_code(&client(&mut s, "PORT 203,0,113,2,195,80\r")), Some(503));
    assert_eq!(client(&mut s, "EPSV\r")[1], Action::ToServer(b"EPSV\r\n".to_vec()));
}

#[test]
fn malformed_flood_closes_and_overlong_gets_500() {
    let mut s = v4();
    let mut framer = LineFramer::new(16);
    let mut buf = b"NOOP NOOP NOOP NOOP NOOP\r\n".to_vec();
    let f = framer.next_frame(&mut buf).unwrap();
    let a = s.on_client_frame(f, false);
    assert_eq!(to_client_code(&a), Some(500));
    for _ in 0..SessionPolicy::default().max_malformed - 1 {
        assert!(!client(&mut s, "R3TR\r").contains(&Action::Close));
    }
    let a = client(&mut s, "\0\r");
    assert!(a.contains(&Action::Close));
    assert!(a.iter().any(|x| matches!(x, Action::ToClient(b) if b.starts_with(b"421"))));
}

#[test]
fn malformed_server_reply_closes_and_421_from_server_closes() {
    let mut s = v4();
    let a = s.on_server_line(b"garbage\r");
    assert!(a.contains(&Action::Close));
    let mut s = v4();
    let a = s.on_server_line(b"421 timeout\r");
    assert_eq!(a, vec![Action::ToClient(b"421 timeout\r\n".to_vec()), Action::Close]);
}

#[test]
fn quit_closes_after_reply() {
    let mut s = v4();
    client(&mut s, "QUIT\r");
    assert_eq!(s.on_server_line(b"221 bye\r"), vec![Action::ToClient(b"221 bye\r\n".to_vec()), Action::Close]);
}
