//! A test PKI made at test time (rcgen): a CA the lab's clients trust, ftpgate's own
//! certificate for the firewall's client-side addresses, the server's certificate, and one for
//! the server's addresses from a CA nobody trusts.

use super::{FW_C4, FW_C6, SERVER4, SERVER6};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

/// PEM files of one test PKI.
pub struct Pki {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    /// ftpgate's own certificate (terminate), for the firewall's client-side addresses.
    pub gateway: (PathBuf, PathBuf),
    /// The server's certificate, for its addresses, by the test CA.
    pub server: (PathBuf, PathBuf),
    /// A certificate for the server's addresses by a CA nobody trusts.
    pub rogue: (PathBuf, PathBuf),
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(p, key))
}

fn leaf(dir: &Path, name: &str, sans: &[&str], issuer: &Issuer<'static, KeyPair>) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, sans[0]);
    let cert = p.signed_by(&key, issuer).unwrap();
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, issuer) = new_ca("ftpgate lab CA");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &ca_pem).unwrap();
        let ca_key = dir.join("ca.key");
        std::fs::write(&ca_key, issuer.key().serialize_pem()).unwrap();
        let (_, rogue_issuer) = new_ca("untrusted CA");
        Pki {
            gateway: leaf(&dir, "gateway", &[FW_C4, FW_C6], &issuer),
            server: leaf(&dir, "server", &[SERVER4, SERVER6], &issuer),
            rogue: leaf(&dir, "rogue", &[SERVER4, SERVER6], &rogue_issuer),
            ca,
            ca_key,
        }
    }
}

/// vsftpd's lab configuration with TLS forced for logins and data, session reuse required.
pub fn vsftpd_tls(cert: &(PathBuf, PathBuf), implicit: bool) -> impl Fn(String) -> String + '_ {
    move |conf: String| {
        let mut c = conf;
        c.push_str(&format!(
            "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\nallow_anon_ssl=YES\n\
             force_anon_logins_ssl=YES\nforce_anon_data_ssl=YES\nforce_local_logins_ssl=YES\n\
             force_local_data_ssl=YES\nrequire_ssl_reuse=YES\nssl_ciphers=HIGH\n",
            cert.0.display(),
            cert.1.display()
        ));
        if implicit {
            c.push_str("implicit_ssl=YES\n");
        }
        c
    }
}

/// ProFTPD's lab configuration with mod_tls (a DSO from proftpd-mod-crypto, loaded from the
/// unpacked tree): TLS required for logins and data. Data connections must resume the control
/// connection's TLS session (mod_tls's default; `NoSessionReuseRequired` is not set).
pub fn proftpd_tls(cert: &(PathBuf, PathBuf)) -> impl Fn(String) -> String + '_ {
    move |conf: String| {
        let modules = super::servers_dir().join("proftpd/usr/lib/proftpd");
        // rcgen's keys are ECDSA P-256: mod_tls takes them as its EC certificate.
        format!(
            "ModulePath {}\nLoadModule mod_tls.c\n{conf}\n<IfModule mod_tls.c>\n  TLSEngine on\n  \
             TLSRequired on\n  TLSProtocol TLSv1.2 TLSv1.3\n  TLSECCertificateFile {}\n  \
             TLSECCertificateKeyFile {}\n  TLSVerifyClient off\n  TLSRenegotiate none\n  \
             TLSLog {}\n</IfModule>\n",
            modules.display(),
            cert.0.display(),
            cert.1.display(),
            cert.0.with_file_name("proftpd-tls.log").display(),
        )
    }
}
