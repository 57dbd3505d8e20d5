//! The `tls`, `upstream_tls` and `ftps` fields: whether and how FTPS goes through the gateway,
//! and the files it needs. The files themselves are read by the TLS layer at start-up and on
//! every reload (`tls::TlsFiles::load`), so a renewed certificate needs no restart.

use super::{invalid, ConfigError, RawConfig};
use crate::session::{TlsPolicy, UpstreamTls};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What the FTPS policy needs besides itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FtpsConfig {
    /// terminate: the gateway's certificate chain and key (PEM).
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// inspect: the CA that issues the per-server certificates, and its key (PEM).
    pub ca_certificate: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    /// How long an issued certificate is valid (and cached).
    pub leaf_lifetime: Duration,
    /// PEM bundle that servers' certificates are verified against; `None`: the system's roots.
    pub server_ca: Option<PathBuf>,
    /// The name servers' certificates must carry; `None`: the server's address.
    pub server_name: Option<String>,
}

/// The longest an issued certificate may live: clients see it, and a short life limits what a
/// stolen one is worth.
const MAX_LEAF_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

fn path(p: &Option<String>, field: &'static str) -> Result<Option<PathBuf>, ConfigError> {
    match p.as_deref().map(str::trim) {
        None => Ok(None),
        Some("") => Err(invalid(field, "an empty path")),
        Some(s) if !s.starts_with('/') => Err(invalid(field, format!("`{s}` is not an absolute path"))),
        Some(s) => Ok(Some(PathBuf::from(s))),
    }
}

/// The session's TLS policy and the files and names it needs, each checked against the others.
pub(super) fn ftps(raw: &RawConfig, reverse: bool) -> Result<(TlsPolicy, FtpsConfig), ConfigError> {
    let upstream = match raw.upstream_tls.as_str() {
        "none" => UpstreamTls::None,
        "explicit" => UpstreamTls::Explicit,
        "implicit" => UpstreamTls::Implicit,
        other => return Err(invalid("upstream_tls", format!("`{other}` is not none, explicit or implicit"))),
    };
    let policy = match raw.tls.as_str() {
        "refuse" => TlsPolicy::Refuse,
        "terminate" => TlsPolicy::Terminate { upstream },
        "inspect" => TlsPolicy::Inspect,
        "passthrough" => {
            return Err(invalid("tls", "passthrough would hide PORT/PASV from the gateway; use terminate or inspect"))
        }
        other => return Err(invalid("tls", format!("`{other}` is not refuse, terminate or inspect"))),
    };
    let f = &raw.ftps;
    let cfg = FtpsConfig {
        certificate: path(&f.certificate, "ftps.certificate")?,
        key: path(&f.key, "ftps.key")?,
        ca_certificate: path(&f.ca_certificate, "ftps.ca_certificate")?,
        ca_key: path(&f.ca_key, "ftps.ca_key")?,
        leaf_lifetime: f.leaf_lifetime,
        server_ca: path(&f.server_ca, "ftps.server_ca")?,
        server_name: f.server_name.as_deref().map(str::trim).map(str::to_owned),
    };
    if let Some(n) = &cfg.server_name {
        if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
            return Err(invalid("ftps.server_name", format!("`{n}` is not a DNS name or IP address")));
        }
    }
    if cfg.leaf_lifetime < Duration::from_secs(300) || cfg.leaf_lifetime > MAX_LEAF_LIFETIME {
        return Err(invalid("ftps.leaf_lifetime", "must lie between 5m and 30d"));
    }
    match policy {
        TlsPolicy::Refuse if upstream != UpstreamTls::None => {
            return Err(invalid("upstream_tls", "needs `tls: terminate`"));
        }
        TlsPolicy::Terminate { .. } => {
            if cfg.certificate.is_none() {
                return Err(invalid("ftps.certificate", "`tls: terminate` needs the gateway's certificate chain"));
            }
            if cfg.key.is_none() {
                return Err(invalid("ftps.key", "`tls: terminate` needs the certificate's private key"));
            }
        }
        TlsPolicy::Inspect => {
            if upstream != UpstreamTls::None {
                return Err(invalid(
                    "upstream_tls",
                    "with `tls: inspect` each server is spoken to as its client chose",
                ));
            }
            if reverse {
                return Err(invalid("tls", "inspect is for intercepted connections; reverse mode uses terminate"));
            }
            if cfg.ca_certificate.is_none() {
                return Err(invalid("ftps.ca_certificate", "`tls: inspect` needs the CA that issues certificates"));
            }
            if cfg.ca_key.is_none() {
                return Err(invalid("ftps.ca_key", "`tls: inspect` needs the CA's private key"));
            }
        }
        TlsPolicy::Refuse => {}
    }
    if !matches!(policy, TlsPolicy::Terminate { .. } | TlsPolicy::Inspect) && !raw.ftps.implicit_listen.is_empty() {
        return Err(invalid("ftps.implicit_listen", "implicit FTPS needs `tls: terminate` or `tls: inspect`"));
    }
    Ok((policy, cfg))
}

/// Listeners whose clients speak TLS from their first byte (implicit FTPS, port 990).
pub(super) fn implicit_listen(raw: &RawConfig) -> Result<Vec<SocketAddr>, ConfigError> {
    raw.ftps.implicit_listen.iter().map(|s| super::network::socket_addr(s, "ftps.implicit_listen")).collect()
}

#[cfg(test)]
mod tests {
    use crate::config::{parse_raw, validate};
    use crate::session::{TlsPolicy, UpstreamTls};

    fn err_of(yaml: &str) -> String {
        validate(&parse_raw(yaml).unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn each_policy_names_the_file_it_misses() {
        assert!(err_of("tls: allow\n").contains("`tls`"));
        assert!(err_of("tls: terminate\n").contains("`ftps.certificate`"));
        assert!(err_of("tls: terminate\nftps: {certificate: /c.pem}\n").contains("`ftps.key`"));
        assert!(err_of("tls: inspect\n").contains("`ftps.ca_certificate`"));
        assert!(err_of("tls: inspect\nftps: {ca_certificate: /ca.pem}\n").contains("`ftps.ca_key`"));
        assert!(err_of("upstream_tls: explicit\n").contains("`upstream_tls`"));
        assert!(err_of("tls: terminate\nupstream_tls: sometimes\n").contains("`upstream_tls`"));
        let inspect = "tls: inspect\nftps: {ca_certificate: /ca.pem, ca_key: /ca.key}\n";
        assert!(err_of(&format!("{inspect}upstream_tls: explicit\n")).contains("`upstream_tls`"));
        assert!(err_of(&format!("{inspect}upstream: 198.51.100.2:21\n")).contains("`tls`"));
        assert!(err_of("tls: terminate\nftps: {certificate: c.pem, key: /k}\n").contains("`ftps.certificate`"));
        assert!(err_of("ftps: {implicit_listen: [\"0.0.0.0:990\"]}\n").contains("`ftps.implicit_listen`"));
        assert!(err_of("ftps: {leaf_lifetime: 1s}\n").contains("`ftps.leaf_lifetime`"));
        assert!(err_of("ftps: {server_name: \"not a name!\"}\n").contains("`ftps.server_name`"));
    }

    #[test]
    fn a_complete_policy_validates() {
        let c = validate(
            &parse_raw(
                "upstream: 198.51.100.2:21\ntls: terminate\nupstream_tls: implicit\n\
                 ftps: {certificate: /c.pem, key: /k.pem, server_name: ftp.example, implicit_listen: [\"[::]:990\"]}\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.live.session.tls, TlsPolicy::Terminate { upstream: UpstreamTls::Implicit });
        assert_eq!(c.live.ftps.server_name.as_deref(), Some("ftp.example"));
        assert_eq!(c.startup.implicit_listen, vec!["[::]:990".parse().unwrap()]);
    }
}
