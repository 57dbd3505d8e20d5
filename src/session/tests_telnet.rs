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
