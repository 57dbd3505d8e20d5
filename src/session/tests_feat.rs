//! FEAT replies advertise only what the policy lets through.

use super::tests::{replies, T};
use super::*;

const CLIENT: &str = "203.0.113.2:40000";
const SERVER: &str = "198.51.100.2:21";

/// vsftpd's FEAT with `ssl_enable=YES`, plus ProFTPD's `CCC` and an `ADAT`.
const VSFTPD_TLS_FEAT: [&str; 14] = [
    "211-Features:",
    " AUTH SSL",
    " AUTH TLS",
    " EPRT",
    " EPSV",
    " MDTM",
    " PASV",
    " PBSZ",
    " PROT",
    " CCC",
    " ADAT",
    " REST STREAM",
    " UTF8",
    "211 End",
];

/// Sends FEAT, has the server answer `lines`, returns the whole reply the client got.
fn feat(t: &mut T, lines: &[&str]) -> String {
    assert_eq!(t.client("FEAT"), vec![Action::ToServer(b"FEAT\r\n".to_vec())]);
    let mut got = String::new();
    for l in lines {
        got.extend(replies(&t.server(l)));
    }
    got
}

#[test]
fn feat_does_not_advertise_tls_while_tls_is_refused() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy::default());
    let got = feat(&mut t, &VSFTPD_TLS_FEAT);
    assert_eq!(got, "211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n REST STREAM\r\n UTF8\r\n211 End\r\n");
    // The session is in step: the next reply answers the next command.
    t.client("NOOP");
    assert_eq!(replies(&t.server("200 ok")), ["200 ok\r\n"]);
}

#[test]
fn feature_lines_are_matched_by_name_whatever_their_spelling() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy::default());
    let got = feat(&mut t, &["211-Extensions supported:", "  auth tls", "211-PBSZ", "\tProt C;P", " AUTHX", "211 END"]);
    assert_eq!(got, "211-Extensions supported:\r\n AUTHX\r\n211 END\r\n");
}

#[test]
fn feat_is_the_servers_under_inspection_without_ccc() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy { tls: TlsPolicy::Inspect, ..SessionPolicy::default() });
    let got = feat(&mut t, &VSFTPD_TLS_FEAT);
    let kept: String = VSFTPD_TLS_FEAT.iter().filter(|l| **l != " CCC").map(|l| format!("{l}\r\n")).collect();
    assert_eq!(got, kept);
}

#[test]
fn a_terminating_gateway_offers_its_own_tls_in_place_of_the_servers() {
    let terminate =
        SessionPolicy { tls: TlsPolicy::Terminate { upstream: UpstreamTls::None }, ..SessionPolicy::default() };
    let mut t = T::with(CLIENT, SERVER, terminate);
    // A plain server offers no TLS; the gateway does, toward its clients.
    let got = feat(&mut t, &["211-Features:", " EPSV", " PBSZ", "211 End"]);
    assert_eq!(got, "211-Features:\r\n EPSV\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n");
    assert_eq!(feat(&mut t, &["500 FEAT not understood"]), "500 FEAT not understood\r\n");
}

#[test]
fn feat_does_not_advertise_commands_the_policy_denies() {
    let commands = CommandPolicy { deny: vec!["MDTM".into(), "EPRT".into()], ..CommandPolicy::default() };
    let mut t =
        T::with(CLIENT, SERVER, SessionPolicy { commands, tls: TlsPolicy::Inspect, ..SessionPolicy::default() });
    let got = feat(&mut t, &["211-Features:", " MDTM", " EPRT", " SIZE", "211 End"]);
    assert_eq!(got, "211-Features:\r\n SIZE\r\n211 End\r\n");
}

#[test]
fn only_the_reply_to_feat_is_filtered() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy::default());
    t.client("HELP");
    let mut got = String::new();
    for l in ["214-Commands:", " AUTH PBSZ PROT", " PROT", "214 Help OK"] {
        got.extend(replies(&t.server(l)));
    }
    assert_eq!(got, "214-Commands:\r\n AUTH PBSZ PROT\r\n PROT\r\n214 Help OK\r\n");
    // A single-line FEAT reply (no features) and a refusal pass as they are.
    assert_eq!(feat(&mut t, &["211 No features"]), "211 No features\r\n");
    assert_eq!(feat(&mut t, &["500 FEAT not understood"]), "500 FEAT not understood\r\n");
}

#[test]
fn pipelined_feat_keeps_replies_in_command_order() {
    let mut t = T::with(CLIENT, SERVER, SessionPolicy::default());
    t.bytes(b"FEAT\r\nAUTH TLS\r\nNOOP\r\n");
    let mut got = String::new();
    for l in ["211-Features:", " AUTH TLS", " EPSV", "211 End", "200 ok"] {
        got.extend(replies(&t.server(l)));
    }
    assert_eq!(got, "211-Features:\r\n EPSV\r\n211 End\r\n534 AUTH (FTPS) refused by policy\r\n200 ok\r\n");
}
