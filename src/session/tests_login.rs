//! The login phase: forward proxy (`USER name@host[:port]`) and routing by user name.

use super::invariants::Checker;
use super::tests::{to_client, T, TIMEOUTS};
use super::*;
use crate::addr::{ClientAddr, UpstreamAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT: &str = "203.0.113.2:40000";
const SITE_A: &str = "198.51.100.2:21";
const SITE_B: &str = "198.51.100.4:21";

fn login(mode: LoginMode) -> T {
    let c = CLIENT.parse().unwrap();
    let policy = SessionPolicy::default();
    let check = Checker::with_login(c, &policy);
    let now = Instant::now();
    let core = ControlCore::with_login(ClientAddr(c), mode, policy, TIMEOUTS, now);
    let mut t = T { core, check, now, data: None };
    let greeting = t.actions();
    assert!(
        matches!(&greeting[..], [Action::ToClient { slot: 0, bytes }] if bytes.starts_with(b"220 ")),
        "{greeting:?}"
    );
    t
}

fn routes() -> LoginMode {
    LoginMode::Route(Arc::new(Routes {
        rules: vec![Route {
            user: UserMatch::Suffix("@site-b".into()),
            upstream: SITE_B.parse().unwrap(),
            send_as: None,
        }],
        default: SITE_A.parse().unwrap(),
    }))
}

fn connected(t: &mut T, upstream: &str) -> Vec<Action> {
    let up: std::net::SocketAddr = upstream.parse().unwrap();
    t.check.connected(up).unwrap();
    t.core.handle_upstream_connected(UpstreamAddr(up), t.now);
    t.actions()
}

fn failed(t: &mut T, f: ConnectFailure) -> Vec<Action> {
    t.check.connect_failed().unwrap();
    t.core.handle_upstream_failed(f, t.now);
    t.actions()
}

fn to_server(line: &str) -> Action {
    Action::ToServer(format!("{line}\r\n").into_bytes())
}

fn named(host: &str, port: u16) -> Action {
    Action::Connect(Target::Named { host: host.into(), port })
}

fn code_of(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|a| match a {
            Action::ToClient { bytes, .. } | Action::ToClientOutOfBand(bytes) => {
                Some(String::from_utf8_lossy(&bytes[..3]).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn forward_login_connects_hides_the_greeting_and_replays_the_name() {
    let mut t = login(LoginMode::Forward);
    // PASS pipelined behind USER waits until the server has the USER.
    let a = t.bytes(b"USER alice@ftp.example:2121\r\nPASS pw\r\n");
    assert_eq!(a, vec![named("ftp.example", 2121)]);
    assert!(!t.core.wants_client_input() && !t.core.upstream_known());
    assert!(connected(&mut t, SITE_A).is_empty());
    assert!(t.server("220-multi").is_empty());
    assert_eq!(t.server("220 server hello"), vec![to_server("USER alice"), to_server("PASS pw")]);
    assert_eq!(t.server("331 password please"), vec![to_client(1, "331 password please\r\n")]);
    assert_eq!(t.server("230 in"), vec![to_client(2, "230 in\r\n")]);
    assert_eq!(t.core.user(), Some("alice"));
    // Once in, the usual gateway: the server's own address for passive data.
    t.passive();
}

#[test]
fn forward_targets_are_parsed_from_the_last_at() {
    let ok = |arg: &str| parse_forward_user(arg.as_bytes()).map(|(n, t)| (String::from_utf8(n).unwrap(), t));
    let t = |h: &str, p| Target::Named { host: h.into(), port: p };
    assert_eq!(ok("a@b@[2001:db8::2]:2121"), Ok(("a@b".into(), t("2001:db8::2", 2121))));
    assert_eq!(ok("anonymous@[2001:DB8::2]"), Ok(("anonymous".into(), t("2001:db8::2", 21))));
    assert_eq!(ok("u@198.51.100.2"), Ok(("u".into(), t("198.51.100.2", 21))));
    assert_eq!(ok("u@FTP.Example."), Ok(("u".into(), t("ftp.example.", 21))));
    for bad in [
        "alice",
        "@ftp.example",
        "u@",
        "u@ftp.example:",
        "u@ftp.example:0",
        "u@ftp.example:65536",
        "u@ftp.example:+21",
        "u@2001:db8::2",
        "u@[2001:db8::2",
        "u@[2001:db8::2]21",
        "u@[ftp.example]",
        "u@ftp_example",
        "u@-ftp.example",
        "u@ftp..example",
        "u@ftp example",
    ] {
        assert!(ok(bad).is_err(), "{bad}");
    }
    assert!(parse_forward_user(b"u@\xff").is_err());
    assert!(parse_forward_user(format!("u@{}.example", "a".repeat(64)).as_bytes()).is_err());
}

#[test]
fn a_refused_or_malformed_target_gets_530_and_the_client_may_try_again() {
    let mut t = login(LoginMode::Forward);
    let a = t.client("USER alice");
    assert_eq!(code_of(&a), ["530"]);
    assert!(a.iter().any(|a| matches!(a, Action::Note(Note::Refused(Refusal::BadForwardTarget(_))))), "{a:?}");
    assert_eq!(t.client("USER alice@intranet.example"), vec![named("intranet.example", 21)]);
    let a = failed(&mut t, ConnectFailure::Refused("Destination 10.0.0.1:21 refused by gateway policy".into()));
    assert_eq!(a, vec![to_client(2, "530 Destination 10.0.0.1:21 refused by gateway policy\r\n")]);
    assert_eq!(t.core.user(), None);
    assert_eq!(t.client("USER alice@ftp.example"), vec![named("ftp.example", 21)]);
    assert!(connected(&mut t, SITE_A).is_empty());
    assert_eq!(t.server("220 hi"), vec![to_server("USER alice")]);
}

#[test]
fn an_unreachable_server_ends_the_session_with_421() {
    let mut t = login(LoginMode::Forward);
    t.client("USER alice@ftp.example");
    let a = failed(&mut t, ConnectFailure::Unreachable("Cannot connect to ftp.example:21".into()));
    assert_eq!(a, vec![to_client(1, "421 Cannot connect to ftp.example:21\r\n"), Action::Close(Outcome::Refused)]);
}

#[test]
fn routes_answer_user_themselves_and_replay_both_so_the_server_judges_the_password() {
    let mut t = login(routes());
    let a = t.bytes(b"USER bob@site-b\r\nPASS s3cret\r\nSYST\r\n");
    let target = Action::Connect(Target::Configured(UpstreamAddr(SITE_B.parse().unwrap())));
    assert_eq!(a, vec![to_client(1, "331 Password required for bob\r\n"), target]);
    assert!(!format!("{:?}", t.core).contains("s3cret"), "the password shows in the core's Debug form");
    assert!(connected(&mut t, SITE_B).is_empty());
    assert_eq!(t.server("220 site b"), vec![to_server("USER bob")]);
    // The server's 331 is hidden (the client had the gateway's); SYST waits behind PASS.
    assert_eq!(t.server("331 Please specify the password."), vec![to_server("PASS s3cret"), to_server("SYST")]);
    assert_eq!(t.server("530 Login incorrect."), vec![to_client(2, "530 Login incorrect.\r\n")]);
    assert_eq!(t.server("215 UNIX"), vec![to_client(3, "215 UNIX\r\n")]);
    // Another login in the same session stays with its server.
    assert_eq!(t.client("USER carol@site-b"), vec![to_server("USER carol")]);
    assert_eq!(t.server("331 ok"), vec![to_client(4, "331 ok\r\n")]);
    let a = t.client("USER carol");
    assert_eq!(code_of(&a), ["530"]);
    assert!(a.iter().any(|a| matches!(a, Action::Note(Note::Refused(Refusal::ServerChange(_))))), "{a:?}");
}

#[test]
fn a_user_the_server_refuses_outright_gets_the_server_s_reply() {
    let mut t = login(routes());
    t.client("USER nobody");
    t.client("PASS x");
    connected(&mut t, SITE_A);
    assert_eq!(t.server("220 a"), vec![to_server("USER nobody")]);
    assert!(t.server("530-No such user").is_empty());
    assert_eq!(t.server("530 No such user"), vec![to_client(2, "530 No such user\r\n")]);
}

#[test]
fn a_server_that_refuses_at_its_greeting_is_heard_and_the_session_ends() {
    let mut t = login(LoginMode::Forward);
    t.client("USER a@ftp.example");
    connected(&mut t, SITE_A);
    let a = t.server("421 Too many users");
    assert_eq!(a, vec![to_client(1, "421 Too many users\r\n"), Action::Close(Outcome::ServerClosed)]);
}

#[test]
fn before_login_only_the_login_and_harmless_commands_are_taken() {
    let mut t = login(routes());
    assert_eq!(code_of(&t.client("LIST")), ["530"]);
    assert_eq!(code_of(&t.client("FEAT")), ["530"]);
    assert_eq!(code_of(&t.client("AUTH TLS")), ["534"]);
    assert_eq!(code_of(&t.client("NOOP")), ["200"]);
    assert_eq!(code_of(&t.client("PASS early")), ["503"]);
    assert_eq!(code_of(&t.client("PASV")), ["530"]);
    assert_eq!(code_of(&t.bytes(b"\x01\x02garbage\r\n")), ["500"]);
    let a = t.client("QUIT");
    assert_eq!(a, vec![to_client(8, "221 Goodbye\r\n"), Action::Close(Outcome::ClientQuit)]);
}

#[test]
fn garbage_before_login_closes_after_the_malformed_limit() {
    let mut t = login(LoginMode::Forward);
    let mut closed = false;
    for _ in 0..=SessionPolicy::default().max_malformed {
        closed |= t.bytes(b"\x01\r\n").iter().any(|a| matches!(a, Action::Close(Outcome::Refused)));
    }
    assert!(closed && t.core.is_closed());
}

#[test]
fn the_login_phase_and_the_connect_are_timed() {
    let mut t = login(routes());
    t.client("USER slow");
    let at = t.core.poll_timeout().unwrap();
    assert_eq!(at, t.now + TIMEOUTS.login);
    t.now = at;
    t.core.handle_timeout(t.now);
    let a = t.actions();
    assert_eq!(code_of(&a), ["421"]);
    assert_eq!(a.last(), Some(&Action::Close(Outcome::IdleTimeout)));

    let mut t = login(LoginMode::Forward);
    t.now += Duration::from_secs(5);
    t.client("USER a@ftp.example");
    assert_eq!(t.core.poll_timeout(), Some(t.now + TIMEOUTS.connect));
    t.now += TIMEOUTS.connect;
    t.core.handle_timeout(t.now);
    let a = t.actions();
    assert_eq!(code_of(&a), ["421"]);
    assert_eq!(a.last(), Some(&Action::Close(Outcome::Refused)));

    // Connected: the server's greeting has the banner timeout.
    let mut t = login(LoginMode::Forward);
    t.client("USER a@ftp.example");
    connected(&mut t, SITE_A);
    assert_eq!(t.core.poll_timeout(), Some(t.now + TIMEOUTS.banner));
}

#[test]
fn a_connection_report_outside_the_login_phase_changes_nothing() {
    let mut t = T::with(CLIENT, SITE_A, SessionPolicy::default());
    t.core.handle_upstream_connected(UpstreamAddr(SITE_B.parse().unwrap()), t.now);
    t.core.handle_upstream_failed(ConnectFailure::Unreachable("x".into()), t.now);
    let a = t.actions();
    assert!(a.iter().all(|a| matches!(a, Action::Note(Note::Quirk(_)))), "{a:?}");
    assert!(!t.core.is_closed());
}

#[test]
fn refused_logins_are_bounded_even_when_well_formed() {
    let max = SessionPolicy::default().max_malformed;
    let mut t = login(LoginMode::Forward);
    for i in 0..=max {
        assert_eq!(t.client(&format!("USER a@host{i}.example")), vec![named(&format!("host{i}.example"), 21)]);
        let a = failed(&mut t, ConnectFailure::Refused("Destination refused".into()));
        assert_eq!(code_of(&a)[0], "530", "{a:?}");
    }
    assert!(t.core.is_closed(), "a client may make ftpgate look up names without end");
    let mut t = login(LoginMode::Forward);
    let mut closed = false;
    for _ in 0..=max {
        closed |= t.client("USER nobody").iter().any(|a| matches!(a, Action::Close(Outcome::Refused)));
    }
    assert!(closed);
}
