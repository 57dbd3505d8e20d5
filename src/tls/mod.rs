//! The TLS edge: certificates read from the configured files, per-server certificates issued
//! for inspection, verification of servers, and control connections switched to TLS in place.
//! What is switched when is the control core's decision (`session::tls`); this layer does the
//! handshakes.

mod files;
mod issuer;
mod stream;

pub use files::{TlsContext, TlsError};
pub use stream::{Conn, TlsInfo, Upgrade};

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use std::sync::Arc;

/// How one side of a data channel is switched to TLS; `None` sides stay plain.
#[derive(Clone, Default)]
pub struct DataTls {
    /// The client's data connection: the gateway is its TLS server (RFC 4217: the FTP client
    /// is the TLS client whichever side connects), with the control connection's
    /// configuration, whose session cache offers resumption.
    pub client: Option<Arc<ServerConfig>>,
    /// The server's data connection, with the control connection's configuration and name: the
    /// session's own resumption store resumes the control connection's TLS session.
    pub server: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl DataTls {
    pub fn is_plain(&self) -> bool {
        self.client.is_none() && self.server.is_none()
    }
}

impl std::fmt::Debug for DataTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataTls")
            .field("client", &self.client.is_some())
            .field("server", &self.server.is_some())
            .finish()
    }
}

/// A fixed, low-cardinality name for why a handshake failed (metric label and log reason).
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    if e.kind() == std::io::ErrorKind::TimedOut {
        return "timeout";
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => "certificate_name",
            CertificateError::UnknownIssuer => "certificate_unknown_ca",
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => "certificate_expired",
            _ => "certificate_invalid",
        },
        Some(Error::AlertReceived(_)) => "alert_received",
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "protocol",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "closed",
        None => "io",
    }
}

#[cfg(test)]
mod tests;
