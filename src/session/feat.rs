//! FEAT replies (RFC 2389) advertise only what the gateway lets through: a client told of
//! `AUTH TLS` while the gateway refuses TLS tries it, gets 534 and falls back to clear text
//! (or gives up, when it insists on TLS); one told of a command the policy denies uses it and
//! fails.

use super::{SessionPolicy, TlsPolicy};

/// What a terminating gateway offers itself, in place of the server's TLS features.
pub(super) const OWN_TLS_FEATURES: &[u8] = b" AUTH TLS\r\n PBSZ\r\n PROT\r\n";

/// The security extensions of RFC 2228 and RFC 4217, all refused with TLS.
const TLS_FEATURES: [&str; 5] = ["AUTH", "PBSZ", "PROT", "CCC", "ADAT"];

/// The feature a line inside a multi-line FEAT reply names, in upper case: ` AUTH TLS` gives
/// `AUTH`. Some servers write feature lines as `211-AUTH TLS`; the code is not the name.
fn feature_name(line: &[u8], code: u16) -> String {
    let prefix = format!("{code}-");
    let body = line.strip_prefix(prefix.as_bytes()).unwrap_or(line);
    let name = body.split(|b| b.is_ascii_whitespace()).find(|w| !w.is_empty()).unwrap_or_default();
    String::from_utf8_lossy(name).to_ascii_uppercase()
}

/// The name of the feature a FEAT reply line (text without CRLF, inside a multi-line reply)
/// advertises, when the policy refuses it: the TLS features while TLS is refused, and any
/// feature named like a command the policy denies by name.
pub(super) fn hidden(policy: &SessionPolicy, line: &[u8], code: u16) -> Option<String> {
    let name = feature_name(line, code);
    // Refused: none of them. Terminated: the gateway's own take their place (the server's
    // speak of the server's TLS). Inspected: the server's, except CCC, which is refused.
    let tls = match policy.tls {
        TlsPolicy::Refuse | TlsPolicy::Terminate { .. } => TLS_FEATURES.contains(&name.as_str()),
        TlsPolicy::Inspect => name == "CCC",
    };
    let denied = policy.commands.deny.contains(&name);
    (tls || denied).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::CommandPolicy;

    #[test]
    fn names_are_read_from_either_form_of_feature_line() {
        assert_eq!(feature_name(b" AUTH TLS", 211), "AUTH");
        assert_eq!(feature_name(b"  prot C;P", 211), "PROT");
        assert_eq!(feature_name(b"\tPBSZ", 211), "PBSZ");
        assert_eq!(feature_name(b"211-AUTH SSL", 211), "AUTH");
        assert_eq!(feature_name(b"", 211), "");
        assert_eq!(feature_name(b"  ", 211), "");
    }

    #[test]
    fn tls_features_are_hidden_only_while_tls_is_refused() {
        let refuse = SessionPolicy::default();
        let allow = SessionPolicy { tls: crate::session::TlsPolicy::Inspect, ..SessionPolicy::default() };
        for line in [&b" AUTH TLS"[..], b" AUTH SSL", b" PBSZ", b" PROT", b" ADAT"] {
            assert!(hidden(&refuse, line, 211).is_some(), "{:?}", String::from_utf8_lossy(line));
            assert_eq!(hidden(&allow, line, 211), None);
        }
        // CCC is refused whatever the policy.
        assert!(hidden(&allow, b" CCC", 211).is_some());
        for line in [&b" EPSV"[..], b" AUTHX", b" REST STREAM", b" MLST type*;size*;", b""] {
            assert_eq!(hidden(&refuse, line, 211), None, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn features_of_denied_commands_are_hidden() {
        let commands = CommandPolicy { deny: vec!["MDTM".into(), "SIZE".into()], ..CommandPolicy::default() };
        let p = SessionPolicy { commands, ..SessionPolicy::default() };
        assert_eq!(hidden(&p, b" MDTM", 211).as_deref(), Some("MDTM"));
        assert_eq!(hidden(&p, b" size", 211).as_deref(), Some("SIZE"));
        assert_eq!(hidden(&p, b" EPSV", 211), None);
    }
}
