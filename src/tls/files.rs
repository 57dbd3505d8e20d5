//! What the FTPS policy needs, read from the configured PEM files: built at start-up and
//! again on every reload, so a renewed certificate is used by sessions that start after the
//! reload while running sessions keep the one they started with.

use super::issuer::Issuer;
use crate::addr::UpstreamAddr;
use crate::config::LiveConfig;
use crate::session::TlsPolicy;
use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("`{field}`: cannot read {path}: {reason}")]
    File { field: &'static str, path: String, reason: String },
    #[error("`{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no trusted root certificates for verifying servers (set `ftps.server_ca`): {0}")]
    NoRoots(String),
}

/// Certificates and keys in force for sessions that start now.
pub struct TlsContext {
    policy: TlsPolicy,
    /// terminate: the gateway's own certificate toward clients.
    terminate: Option<Arc<ServerConfig>>,
    /// inspect: issues a certificate per server.
    issuer: Option<Issuer>,
    /// How servers are verified; per session it gets a resumption store of its own.
    upstream: Option<Arc<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
}

fn certs(path: &Path, field: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File { field, path: path.display().to_string(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE in it".into()));
    }
    Ok(certs)
}

fn key(path: &Path, field: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        field,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration for clients with this chain and key.
pub(super) fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    field: &'static str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid { field, reason: e.to_string() })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid { field, reason: e.to_string() })?;
    // The default session cache makes data connections' resumption of the control
    // connection's session possible for clients that want it.
    Ok(Arc::new(cfg))
}

fn roots(cfg: &LiveConfig) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match &cfg.ftps.server_ca {
        Some(p) => {
            for c in certs(p, "ftps.server_ca")? {
                store.add(c).map_err(|e| TlsError::Invalid { field: "ftps.server_ca", reason: e.to_string() })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map_or("none found".to_owned(), |e| e.to_string());
                return Err(TlsError::NoRoots(why));
            }
        }
    }
    Ok(store)
}

impl TlsContext {
    /// Reads every file the policy needs; any problem names its field.
    pub fn load(cfg: &LiveConfig) -> Result<Self, TlsError> {
        let policy = cfg.session.tls;
        let f = &cfg.ftps;
        let mut ctx = Self { policy, terminate: None, issuer: None, upstream: None, server_name: None };
        match policy {
            TlsPolicy::Refuse => return Ok(ctx),
            TlsPolicy::Terminate { .. } => {
                let (Some(c), Some(k)) = (&f.certificate, &f.key) else {
                    return Err(TlsError::Invalid { field: "ftps.certificate", reason: "not set".into() });
                };
                ctx.terminate = Some(server_config(certs(c, "ftps.certificate")?, key(k, "ftps.key")?, "ftps.key")?);
            }
            TlsPolicy::Inspect => {
                let (Some(c), Some(k)) = (&f.ca_certificate, &f.ca_key) else {
                    return Err(TlsError::Invalid { field: "ftps.ca_certificate", reason: "not set".into() });
                };
                let ca = certs(c, "ftps.ca_certificate")?.remove(0);
                let ca_key = std::fs::read_to_string(k).map_err(|e| TlsError::File {
                    field: "ftps.ca_key",
                    path: k.display().to_string(),
                    reason: e.to_string(),
                })?;
                ctx.issuer = Some(Issuer::new(ca, &ca_key, f.leaf_lifetime)?);
            }
        }
        let roots = roots(cfg)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid { field: "tls", reason: e.to_string() })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        ctx.upstream = Some(Arc::new(client));
        ctx.server_name = match &f.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| TlsError::Invalid { field: "ftps.server_name", reason: e.to_string() })?,
            ),
            None => None,
        };
        Ok(ctx)
    }

    pub fn policy(&self) -> TlsPolicy {
        self.policy
    }

    /// The configuration a client of `upstream` is served with: the gateway's own certificate,
    /// or (inspect) one issued for that server.
    pub fn for_clients(&self, upstream: UpstreamAddr) -> Result<Arc<ServerConfig>, String> {
        if let Some(t) = &self.terminate {
            return Ok(t.clone());
        }
        match &self.issuer {
            Some(i) => i.config_for(upstream.ip(), self.server_name.as_ref()),
            None => Err("TLS toward clients is not configured".into()),
        }
    }

    /// How one session connects to `upstream` over TLS: the verifying configuration with a
    /// resumption store of the session's own (its data connections resume the control
    /// connection's TLS session, as servers such as vsftpd require), and the name verified.
    pub fn for_server(&self, upstream: UpstreamAddr) -> Option<(Arc<ClientConfig>, ServerName<'static>)> {
        let base = self.upstream.as_ref()?;
        let mut cfg = (**base).clone();
        cfg.resumption = Resumption::in_memory_sessions(4);
        let name = self.server_name.clone().unwrap_or_else(|| ServerName::IpAddress(upstream.ip().into()));
        Some((Arc::new(cfg), name))
    }
}
