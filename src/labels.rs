//! The values metric labels take, one enum per label. They live apart from the metrics so the
//! session and data layers can name them without depending on the exporter, and so tests and
//! the deployment checks can list every value from the code.

use std::net::IpAddr;

/// Defines a label enum. `ALL` and `label()` come from the same list as the variants, so a
/// variant cannot exist without being in `ALL`, and `ALL` is in declaration order (which
/// `index()` relies on).
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: [Self; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];

            pub const fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }

            /// The position in `ALL`, for tables of pre-created series.
            pub(crate) const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum! {
    /// `ftpgate_rejections_total{reason}`: why something was refused.
    Reason {
        /// PORT/EPRT naming another host or a privileged port.
        Bounce => "bounce",
        /// A data connection from someone other than the expected peer.
        PortStealing => "port_stealing",
        /// A session or data channel over the configured limits.
        Limit => "limit",
        /// A phase timeout, or a data connection nobody opened in time.
        Timeout => "timeout",
        Malformed => "malformed",
        /// Refused by configuration (commands, users, TLS, EPSV ALL).
        Policy => "policy",
        /// A connection addressed to the gateway itself.
        Loop => "loop",
        /// A diverted connection to where no client may go through the gateway: the firewall's
        /// own addresses, loopback, link-local, multicast, or outside `servers`.
        Destination => "destination",
        /// A server's passive reply naming another host or a privileged port.
        ServerDataAddress => "server_data_address",
        UpstreamConnect => "upstream_connect",
        /// The original destination could not be recovered.
        Intercept => "intercept",
        /// Every port of the configured data port range in use.
        PortExhausted => "port_exhausted",
        /// A connection to the metrics endpoint beyond `metrics.max_connections`, closed at once.
        MetricsLimit => "metrics_limit",
        /// A connection to the admin API beyond `admin.max_connections`, closed at once.
        AdminLimit => "admin_limit",
        /// An admin API request without a valid bearer token.
        AdminAuth => "admin_auth",
        /// Clear text sent behind an `AUTH` exchange, before the TLS handshake (discarded).
        Injection => "injection",
        /// A TLS handshake that failed, or a server that refused the TLS the policy requires.
        Tls => "tls",
    }
}

label_enum! {
    /// `ftpgate_sessions_total{outcome}`: why a control session ended.
    SessionOutcome {
        ClientQuit => "client_quit",
        ClientClosed => "client_closed",
        ServerClosed => "server_closed",
        Refused => "refused",
        IdleTimeout => "idle_timeout",
        ReplyTimeout => "reply_timeout",
        /// A TLS handshake failed, or a server refused the TLS the policy requires.
        TlsFailed => "tls_failed",
        Error => "error",
        /// Ended by an administrator through the admin API (`DELETE /sessions/{id}`).
        AdminClosed => "admin_closed",
    }
}

label_enum! {
    /// `ftpgate_data_channels_*{mode}`: the client's data mode, and the server's where the
    /// gateway converts between them.
    DataMode {
        Passive => "passive",
        Active => "active",
        /// Client passive, server active.
        PassiveToActive => "passive_to_active",
        /// Client active, server passive.
        ActiveToPassive => "active_to_passive",
    }
}

label_enum! {
    /// `ftpgate_data_channels_*{family}`: the client's address family.
    Family {
        Ipv4 => "ipv4",
        Ipv6 => "ipv6",
    }
}

label_enum! {
    /// `ftpgate_bytes_total{direction}`.
    Direction {
        ToClient => "to_client",
        ToServer => "to_server",
    }
}

label_enum! {
    /// `ftpgate_transfers_total{verb}`: transfer commands as sent (upper case), anything else
    /// as `other`, which keeps the label's cardinality fixed.
    TransferVerb {
        Retr => "RETR",
        Stor => "STOR",
        Stou => "STOU",
        Appe => "APPE",
        List => "LIST",
        Nlst => "NLST",
        Mlsd => "MLSD",
        Other => "other",
    }
}

label_enum! {
    /// `ftpgate_transfers_total{outcome}`.
    TransferOutcome {
        Ok => "ok",
        Failed => "failed",
    }
}

label_enum! {
    /// `ftpgate_server_replies_total{class}`: the first digit of a final reply (RFC 959 4.2).
    ReplyClass {
        Preliminary => "1xx",
        Completion => "2xx",
        Intermediate => "3xx",
        TransientNegative => "4xx",
        PermanentNegative => "5xx",
    }
}

impl Family {
    /// Callers pass canonical addresses: an IPv4-mapped IPv6 address counts as IPv6 here.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl TransferVerb {
    /// Verbs are matched as the session canonicalised them (upper case).
    pub fn from_verb(verb: &str) -> Self {
        Self::ALL.into_iter().find(|v| *v != TransferVerb::Other && v.label() == verb).unwrap_or(TransferVerb::Other)
    }
}

impl TransferOutcome {
    pub fn of<T, E>(result: &Result<T, E>) -> Self {
        if result.is_ok() {
            TransferOutcome::Ok
        } else {
            TransferOutcome::Failed
        }
    }
}

impl ReplyClass {
    /// `None` outside 100-599, which no valid reply has.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.get(usize::from(code / 100).checked_sub(1)?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn check(name: &str, labels: &[&str], indexes: impl Iterator<Item = usize>, lowercase: bool) {
        let unique: HashSet<_> = labels.iter().collect();
        assert_eq!(unique.len(), labels.len(), "{name}: a label value repeats: {labels:?}");
        for l in labels {
            assert!(!l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{name}: {l:?}");
            if lowercase {
                assert!(!l.bytes().any(|b| b.is_ascii_uppercase()), "{name}: {l:?} is not lower case");
            }
        }
        assert!(indexes.eq(0..labels.len()), "{name}: ALL is not in declaration order");
    }

    macro_rules! check_all {
        ($($t:ident: $lowercase:expr),+) => {$(
            check(
                stringify!($t),
                &$t::ALL.map($t::label),
                $t::ALL.into_iter().map($t::index),
                $lowercase,
            );
        )+};
    }

    #[test]
    fn labels_are_unique_ascii_and_all_is_in_order() {
        check_all!(
            Reason: true,
            SessionOutcome: true,
            DataMode: true,
            Family: true,
            Direction: true,
            TransferOutcome: true,
            ReplyClass: true,
            // FTP verbs keep their wire spelling, which dashboards already group by.
            TransferVerb: false
        );
    }

    #[test]
    fn transfer_verbs_map_to_themselves_and_the_rest_to_other() {
        for v in TransferVerb::ALL {
            assert_eq!(TransferVerb::from_verb(v.label()), v);
        }
        for other in ["CWD", "retr", "", "RETRX", "other"] {
            assert_eq!(TransferVerb::from_verb(other), TransferVerb::Other, "{other:?}");
        }
    }

    #[test]
    fn reply_classes_follow_the_first_digit() {
        assert_eq!(ReplyClass::from_code(150), Some(ReplyClass::Preliminary));
        assert_eq!(ReplyClass::from_code(200), Some(ReplyClass::Completion));
        assert_eq!(ReplyClass::from_code(399), Some(ReplyClass::Intermediate));
        assert_eq!(ReplyClass::from_code(421), Some(ReplyClass::TransientNegative));
        assert_eq!(ReplyClass::from_code(599), Some(ReplyClass::PermanentNegative));
        for bad in [0, 99, 600, 999, u16::MAX] {
            assert_eq!(ReplyClass::from_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn families_and_outcomes() {
        assert_eq!(Family::of("203.0.113.1".parse().unwrap()), Family::Ipv4);
        assert_eq!(Family::of("2001:db8::1".parse().unwrap()), Family::Ipv6);
        assert_eq!(TransferOutcome::of(&Ok::<(), ()>(())), TransferOutcome::Ok);
        assert_eq!(TransferOutcome::of(&Err::<(), ()>(())), TransferOutcome::Failed);
    }
}
