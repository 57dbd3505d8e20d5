//! Telnet on the control channel: what reaches the server reads the same to a Telnet-aware
//! server as to the gateway's policy.

use super::tests::T;
use super::*;

const CLIENT: &str = "203.0.113.2:40000";
const SERVER: &str = "198.51.100.2:21";

fn denying(user: &str) -> T {
    let users = UserPolicy { deny: vec![user.to_owned()], ..UserPolicy::default() };
    T::with(CLIENT, SERVER, SessionPolicy { users, ..SessionPolicy::default() })
}

fn refused(a: &[Action]) -> Vec<Refusal> {
    a.iter()
        .filter_map(|a| match a {
            Action::Note(Note::Refused(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_escaped_iac_goes_to_the_server_escaped() {
    let mut t = denying("blocked");
    // `IAC IAC` is the data byte 0xFF: the name checked is `blo\xff\xf4cked`, not denied, and
    // the server must read that name too, not `IAC IP` (which ProFTPD strips to `blocked`).
    let a = t.bytes(b"USER blo\xff\xff\xf4cked\r\n");
    assert_eq!(a, vec![Action::ToServer(b"USER blo\xff\xff\xf4cked\r\n".to_vec())]);
    // Every 0xFF of an argument, wherever it is.
    let a = t.bytes(b"RETR \xff\xff\xff\xffa\xff\xff\r\n");
    assert_eq!(a, vec![Action::ToServer(b"RETR \xff\xff\xff\xffa\xff\xff\r\n".to_vec())]);
}

#[test]
fn a_telnet_command_inside_a_name_is_removed_before_the_check() {
    let mut t = denying("blocked");
    let a = t.bytes(b"USER blo\xff\xf4cked\r\n");
    assert!(matches!(refused(&a)[..], [Refusal::UserRefused(ref u)] if u == "blocked"), "{a:?}");
    assert!(!a.iter().any(|a| matches!(a, Action::ToServer(_))), "{a:?}");
}

const IAC: u8 = 255;
const DO: u8 = 253;
const WONT: u8 = 252;

fn out_of_band(a: &[Action]) -> Vec<u8> {
    a.iter()
        .filter_map(|a| match a {
            Action::ToClientOutOfBand(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn closed(a: &[Action]) -> Option<Outcome> {
    a.iter().find_map(|a| match a {
        Action::Close(o) => Some(*o),
        _ => None,
    })
}

#[test]
fn option_negotiation_counts_toward_the_malformed_limit() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy { max_malformed: 3, ..SessionPolicy::default() });
    let a = t.bytes(&[IAC, DO, 1, IAC, DO, 3]);
    assert_eq!(out_of_band(&a), [IAC, WONT, 1, IAC, WONT, 3]);
    assert!(matches!(refused(&a)[..], [Refusal::TelnetNegotiation { count: 2 }]), "{a:?}");
    assert_eq!(closed(&a), None);
    // A good command resets the run, as after malformed lines.
    assert_eq!(t.client("NOOP"), vec![Action::ToServer(b"NOOP\r\n".to_vec())]);
    t.server("200 ok");
    // Subnegotiations and refusals of refusals count too; WONT and DONT get no answer.
    let a = t.bytes(&[IAC, 250, 24, 0, b'x', IAC, 240, IAC, 252, 1, IAC, 254, 1]);
    assert!(out_of_band(&a).is_empty(), "{a:?}");
    assert_eq!(closed(&a), None);
    let a = t.bytes(&[IAC, DO, 9]);
    assert_eq!(closed(&a), Some(Outcome::Refused), "{a:?}");
    assert!(refused(&a).contains(&Refusal::MalformedFlood), "{a:?}");
    let farewell = out_of_band(&a);
    assert!(
        farewell.starts_with(b"421 Too many Telnet option negotiations"),
        "{:?}",
        String::from_utf8_lossy(&farewell)
    );
}

#[test]
fn a_flood_in_one_read_gets_refusals_up_to_the_limit_then_421() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy::default());
    let a = t.bytes(&[IAC, DO, 1].repeat(700));
    let max = SessionPolicy::default().max_malformed as usize;
    let oob = out_of_band(&a);
    assert_eq!(&oob[..3 * max], &[IAC, WONT, 1].repeat(max)[..]);
    assert!(oob[3 * max..].starts_with(b"421 "), "{:?}", String::from_utf8_lossy(&oob));
    assert_eq!(closed(&a), Some(Outcome::Refused));
    assert!(t.core.is_closed());
}

#[test]
fn an_endless_subnegotiation_counts_once_it_starts() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy { max_malformed: 0, ..SessionPolicy::default() });
    let a = t.bytes(&[IAC, 250, 24]);
    assert_eq!(closed(&a), Some(Outcome::Refused), "{a:?}");
}

#[test]
fn telnet_bytes_without_a_command_do_not_reset_the_idle_timer() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy::default());
    let start = t.now;
    let deadline = t.core.poll_timeout().expect("an idle deadline");
    // Interrupts, NOPs, the start of a line: nothing that is a command.
    for bytes in [&[IAC, 241][..], &[IAC, 244, IAC, 242], b"NO"] {
        t.now += std::time::Duration::from_secs(200);
        t.bytes(bytes);
        assert_eq!(t.core.poll_timeout(), Some(deadline), "moved by {bytes:?}");
    }
    let a = t.advance(deadline - t.now);
    assert_eq!(closed(&a), Some(Outcome::IdleTimeout), "{a:?}");
    assert!(deadline > start);
}

#[test]
fn a_whole_command_resets_the_idle_timer() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy::default());
    let deadline = t.core.poll_timeout().expect("an idle deadline");
    t.now += std::time::Duration::from_secs(200);
    t.client("NOOP");
    t.server("200 ok");
    assert_eq!(t.core.poll_timeout(), Some(deadline + std::time::Duration::from_secs(200)));
}
