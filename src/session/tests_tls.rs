//! FTPS in the control core: AUTH, PBSZ, PROT and CCC under each policy, the switch to TLS at
//! the right byte boundary, clear text injected behind AUTH, and the gateway's own TLS toward
//! servers.

use super::tests::{closed, code, refused, replies, to_client, to_server, T};
use super::*;

const CLIENT: &str = "203.0.113.2:40000";
const SERVER: &str = "198.51.100.2:21";

fn terminate(upstream: UpstreamTls) -> SessionPolicy {
    SessionPolicy { tls: TlsPolicy::Terminate { upstream }, ..SessionPolicy::default() }
}

fn inspect() -> SessionPolicy {
    SessionPolicy { tls: TlsPolicy::Inspect, ..SessionPolicy::default() }
}

impl T {
    pub fn tls_ready(&mut self, side: Side) -> Vec<Action> {
        self.core.handle_tls_ready(side, self.now);
        self.actions()
    }

    pub fn tls_failed(&mut self, side: Side, why: &str) -> Vec<Action> {
        self.core.handle_tls_failed(side, why, self.now);
        self.actions()
    }
}

#[test]
fn refused_tls_answers_auth_pbsz_and_prot_and_never_ccc() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy::default());
    assert_eq!(code(&t.client("AUTH TLS")), Some(534));
    assert_eq!(code(&t.client("PBSZ 0")), Some(534));
    assert_eq!(code(&t.client("PROT P")), Some(534));
    assert_eq!(code(&t.client("CCC")), Some(502));
}

#[test]
fn terminate_switches_the_client_after_the_234_and_discards_what_was_injected_behind_auth() {
    let mut t = T::with(CLIENT, SERVER, terminate(UpstreamTls::None));
    // CVE-2011-0411: a man in the middle appends a command to the client's clear-text AUTH.
    let a = t.bytes(b"AUTH TLS\r\nDELE important\r\n");
    assert_eq!(
        a[..2],
        [to_client(1, "234 AUTH TLS successful, proceed with the TLS handshake\r\n"), Action::StartTls(Side::Client)]
    );
    assert!(matches!(refused(&a)[..], [Refusal::ClearTextAfterAuth { side: Side::Client, bytes: 16 }]), "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::ToServer(_))), "nothing goes to the server: {a:?}");
    // Nothing is read while the handshake runs.
    assert!(!t.core.wants_client_input());
    assert!(t.tls_ready(Side::Client).is_empty());
    assert!(t.core.wants_client_input());
    assert_eq!(t.core.tls_sides(), (true, false));
    // PBSZ and PROT are the gateway's: the server side stays clear.
    assert_eq!(replies(&t.client("PROT P")), ["503 PBSZ must come before PROT\r\n"]);
    assert_eq!(replies(&t.client("PBSZ 0")), ["200 PBSZ=0\r\n"]);
    assert_eq!(code(&t.client("PROT S")), Some(536));
    assert_eq!(code(&t.client("PROT P")), Some(200));
    assert_eq!(t.core.protection(), Protection { client: true, server: false });
    assert_eq!(code(&t.client("AUTH TLS")), Some(503));
    assert_eq!(code(&t.client("CCC")), Some(502));
    assert_eq!(t.client("USER u"), vec![to_server("USER u\r\n")]);
    assert_eq!(code(&t.client("PROT C")), None, "a pipelined PROT waits for the reply before it");
}

#[test]
fn protection_needs_tls_and_auth_needs_a_quiet_session() {
    let mut t = T::with(CLIENT, SERVER, terminate(UpstreamTls::None));
    assert_eq!(code(&t.client("PBSZ 0")), Some(503));
    assert_eq!(code(&t.client("AUTH KERBEROS_V4")), Some(504));
    // A command still owed a reply: the 234 could not be the last clear-text line.
    let a = t.bytes(b"NOOP\r\nAUTH TLS\r\n");
    assert_eq!(a, vec![to_server("NOOP\r\n")]);
    let a = t.server("200 ok");
    assert_eq!(replies(&a), ["200 ok\r\n", "503 AUTH must not follow other commands still in progress\r\n"]);
    assert!(!a.contains(&Action::StartTls(Side::Client)));
}

#[test]
fn a_failed_client_handshake_closes_without_a_clear_text_reply() {
    let mut t = T::with(CLIENT, SERVER, terminate(UpstreamTls::None));
    t.client("AUTH TLS");
    let a = t.tls_failed(Side::Client, "bad record");
    assert!(replies(&a).is_empty(), "{a:?}");
    assert!(a.contains(&Action::Close(Outcome::TlsFailed)));
}

#[test]
fn explicit_upstream_is_secured_before_any_client_command_reaches_the_server() {
    let mut t = T::ungreeted(CLIENT, SERVER, terminate(UpstreamTls::Explicit));
    let a = t.server("220 hello");
    assert_eq!(a, vec![to_server("AUTH TLS\r\n"), to_client(0, "220 hello\r\n")]);
    // The client's command waits in its socket (and in the core) until the server is secured.
    assert!(t.client("USER u").is_empty());
    let a = t.server("234 go ahead");
    assert_eq!(a, vec![Action::StartTls(Side::Server)]);
    assert_eq!(t.tls_ready(Side::Server), vec![to_server("PBSZ 0\r\n")]);
    assert_eq!(t.server("200 PBSZ=0"), vec![to_server("PROT P\r\n")]);
    let a = t.server("200 PROT now Private");
    assert_eq!(a, vec![to_server("USER u\r\n")]);
    assert_eq!(t.core.protection(), Protection { client: false, server: true });
    assert_eq!(replies(&t.server("331 pass")), ["331 pass\r\n"]);
}

#[test]
fn implicit_upstream_skips_auth() {
    let mut t = T::ungreeted(CLIENT, SERVER, terminate(UpstreamTls::Implicit));
    t.core.started_in_tls(false, true);
    assert_eq!(t.server("220 hello"), vec![to_server("PBSZ 0\r\n"), to_client(0, "220 hello\r\n")]);
}

#[test]
fn a_server_refusing_the_tls_the_policy_requires_ends_the_session_with_421() {
    let mut t = T::ungreeted(CLIENT, SERVER, terminate(UpstreamTls::Explicit));
    t.server("220 hello");
    let a = t.server("500 AUTH not understood");
    assert!(matches!(refused(&a)[..], [Refusal::ServerRefusedTls { command: "AUTH TLS", code: 500 }]));
    assert!(replies(&a).iter().any(|r| r.starts_with("421 ")), "{a:?}");
    assert!(a.contains(&Action::Close(Outcome::TlsFailed)));
}

#[test]
fn inspect_secures_the_server_first_then_answers_the_client() {
    let mut t = T::with(CLIENT, SERVER, inspect());
    let a = t.bytes(b"AUTH TLS\r\n");
    assert_eq!(a, vec![to_server("AUTH TLS\r\n")]);
    // Injected behind AUTH, arriving before the server's answer: never read as a command.
    assert!(t.bytes(b"DELE x\r\n").is_empty());
    assert!(!t.core.wants_client_input());
    let a = t.server("234 Proceed");
    assert_eq!(a, vec![Action::StartTls(Side::Server)], "no 234 to the client before the server is verified");
    let a = t.tls_ready(Side::Server);
    assert_eq!(a[..2], [to_client(1, "234 AUTH TLS successful\r\n"), Action::StartTls(Side::Client)]);
    assert!(matches!(refused(&a)[..], [Refusal::ClearTextAfterAuth { side: Side::Client, bytes: 8 }]));
    assert!(t.tls_ready(Side::Client).is_empty());
    assert_eq!(t.core.tls_sides(), (true, true));
    // PBSZ and PROT go to the server; PROT takes effect for both sides when it accepts.
    assert_eq!(t.client("PBSZ 0"), vec![to_server("PBSZ 0\r\n")]);
    t.server("200 PBSZ=0");
    assert_eq!(t.client("PROT P"), vec![to_server("PROT P\r\n")]);
    assert_eq!(t.core.protection(), Protection::default());
    t.server("200 Private");
    assert_eq!(t.core.protection(), Protection { client: true, server: true });
    t.client("PROT C");
    t.server("534 Clear not allowed");
    assert_eq!(t.core.protection(), Protection { client: true, server: true });
}

#[test]
fn inspect_ends_with_421_when_the_server_fails_verification() {
    let mut t = T::with(CLIENT, SERVER, inspect());
    t.client("AUTH TLS");
    t.server("234 Proceed");
    let a = t.tls_failed(Side::Server, "invalid peer certificate: UnknownIssuer");
    assert!(matches!(refused(&a)[..], [Refusal::TlsHandshake { side: Side::Server, .. }]));
    assert_eq!(replies(&a), ["421 TLS with the server failed, closing\r\n"]);
    assert!(!a.contains(&Action::StartTls(Side::Client)));
    assert!(closed(&a));
}

#[test]
fn inspect_relays_a_server_that_declines_auth() {
    let mut t = T::with(CLIENT, SERVER, inspect());
    t.client("AUTH TLS");
    assert_eq!(replies(&t.server("502 no TLS here")), ["502 no TLS here\r\n"]);
    assert_eq!(t.client("USER u"), vec![to_server("USER u\r\n")]);
    assert_eq!(t.core.tls_sides(), (false, false));
}
