//! Inspection's certificates: one per server, issued by the configured CA, short-lived and
//! cached until shortly before it expires.

use super::files::{server_config, TlsError};
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Servers whose certificates are kept at once; beyond, the oldest entry goes.
const CACHE_MAX: usize = 1024;

pub(super) struct Issuer {
    ca: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, KeyPair>,
    lifetime: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
}

impl Issuer {
    pub(super) fn new(ca: CertificateDer<'static>, ca_key_pem: &str, lifetime: Duration) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(ca_key_pem)
            .map_err(|e| TlsError::Invalid { field: "ftps.ca_key", reason: e.to_string() })?;
        let issuer = rcgen::Issuer::from_ca_cert_der(&ca, key)
            .map_err(|e| TlsError::Invalid { field: "ftps.ca_certificate", reason: e.to_string() })?;
        Ok(Self { ca, issuer, lifetime, cache: Mutex::new(HashMap::new()) })
    }

    /// The configuration for clients of the server at `ip` (also named `name`): from the cache
    /// while its certificate has a quarter of its life left, else newly issued.
    pub(super) fn config_for(
        &self,
        ip: IpAddr,
        name: Option<&ServerName<'static>>,
    ) -> Result<Arc<ServerConfig>, String> {
        let mut names = vec![ip.to_string()];
        if let Some(ServerName::DnsName(d)) = name {
            names.push(d.as_ref().to_owned());
        }
        let key = names.join(",");
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((until, cfg)) = cache.get(&key) {
            if *until > now {
                return Ok(cfg.clone());
            }
        }
        let cfg = self.issue(&names).map_err(|e| format!("cannot issue a certificate for {key}: {e}"))?;
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= CACHE_MAX {
                if let Some(oldest) = cache.iter().min_by_key(|(_, (until, _))| *until).map(|(k, _)| k.clone()) {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(key, (now + self.lifetime * 3 / 4, cfg.clone()));
        Ok(cfg)
    }

    fn issue(&self, names: &[String]) -> Result<Arc<ServerConfig>, String> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[names.len() - 1].clone());
        params.distinguished_name = dn;
        // A little slack for clocks behind the gateway's.
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + self.lifetime;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        let chain = vec![cert.der().clone(), self.ca.clone()];
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        server_config(chain, der, "ftps.ca_key").map_err(|e| e.to_string())
    }
}
