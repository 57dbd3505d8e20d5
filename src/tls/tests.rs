//! The TLS edge against itself: certificates loaded and reloaded from files, inspection's
//! issued certificates verified by a client that trusts only the CA, and why a handshake failed.

use super::{failure_reason, Conn, TlsContext, Upgrade};
use crate::addr::UpstreamAddr;
use crate::config::{parse_raw, validate, LiveConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

fn live(yaml: &str) -> LiveConfig {
    validate(&parse_raw(yaml).unwrap()).unwrap().live
}

fn ca(dir: &Path, name: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    std::fs::write(dir.join("ca.pem"), p.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
    Issuer::new(p, key)
}

fn leaf(dir: &Path, name: &str, san: &str, issuer: &Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![san.to_owned()]).unwrap().signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn client_trusting(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A handshake over loopback, then one byte from the TLS server to the client (reading it
/// takes in the TLS 1.3 session tickets sent after the handshake, as a control connection's
/// replies do).
async fn handshake(server: Upgrade, client: Upgrade) -> (std::io::Result<()>, std::io::Result<super::TlsInfo>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    let (accepted, connected) = tokio::join!(
        async {
            let (s, _) = l.accept().await.unwrap();
            let mut c = Conn::Plain(s);
            c.upgrade(server, Duration::from_secs(5)).await?;
            c.write_all(b"2").await?;
            c.flush().await
        },
        async {
            let mut c = Conn::Plain(TcpStream::connect(at).await.unwrap());
            let info = c.upgrade(client, Duration::from_secs(5)).await?;
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await?;
            Ok(info)
        }
    );
    (accepted, connected)
}

fn upstream() -> UpstreamAddr {
    UpstreamAddr("127.0.0.1:21".parse().unwrap())
}

#[tokio::test]
async fn inspection_issues_a_certificate_the_ca_vouches_for_and_caches_it() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "test CA");
    let d = dir.path().display();
    let cfg = live(&format!(
        "tls: inspect\nftps: {{ca_certificate: {d}/ca.pem, ca_key: {d}/ca.key, server_ca: {d}/ca.pem}}\n"
    ));
    let ctx = TlsContext::load(&cfg).unwrap();
    let issued = ctx.for_clients(upstream()).unwrap();
    assert!(Arc::ptr_eq(&issued, &ctx.for_clients(upstream()).unwrap()), "cached");
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let client = Upgrade::Connect(client_trusting(&dir.path().join("ca.pem")), name.clone());
    let (s, c) = handshake(Upgrade::Accept(issued.clone()), client).await;
    s.unwrap();
    c.unwrap();
    // For another address the issued certificate does not do.
    let other =
        Upgrade::Connect(client_trusting(&dir.path().join("ca.pem")), ServerName::try_from("127.0.0.2").unwrap());
    let (_, c) = handshake(Upgrade::Accept(issued), other).await;
    assert_eq!(failure_reason(&c.unwrap_err()), "certificate_name");
}

#[tokio::test]
async fn a_reload_reads_the_certificate_files_again() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = ca(dir.path(), "test CA");
    leaf(dir.path(), "gw", "127.0.0.1", &issuer);
    let d = dir.path().display();
    let cfg =
        live(&format!("tls: terminate\nftps: {{certificate: {d}/gw.pem, key: {d}/gw.key, server_ca: {d}/ca.pem}}\n"));
    let before = TlsContext::load(&cfg).unwrap().for_clients(upstream()).unwrap();
    // The certificate is renewed by a CA the old clients do not know.
    let other = tempfile::tempdir().unwrap();
    let issuer2 = ca(other.path(), "renewal CA");
    leaf(dir.path(), "gw", "127.0.0.1", &issuer2);
    let after = TlsContext::load(&cfg).unwrap().for_clients(upstream()).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let old_ca = Upgrade::Connect(client_trusting(&dir.path().join("ca.pem")), name.clone());
    let new_ca = Upgrade::Connect(client_trusting(&other.path().join("ca.pem")), name);
    // What a running session holds still works; new sessions get the renewed certificate.
    handshake(Upgrade::Accept(before), old_ca.clone()).await.1.unwrap();
    handshake(Upgrade::Accept(after.clone()), new_ca).await.1.unwrap();
    let (_, c) = handshake(Upgrade::Accept(after), old_ca).await;
    assert_eq!(failure_reason(&c.unwrap_err()), "certificate_unknown_ca");
}

#[tokio::test]
async fn servers_are_verified_for_their_address_and_sessions_resume() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = ca(dir.path(), "test CA");
    leaf(dir.path(), "srv", "127.0.0.1", &issuer);
    let d = dir.path().display();
    let cfg =
        live(&format!("tls: terminate\nftps: {{certificate: {d}/srv.pem, key: {d}/srv.key, server_ca: {d}/ca.pem}}\n"));
    let ctx = TlsContext::load(&cfg).unwrap();
    // The gateway's own certificate stands in for a server here.
    let server = ctx.for_clients(upstream()).unwrap();
    let (cfg_a, name) = ctx.for_server(upstream()).unwrap();
    assert_eq!(name, ServerName::try_from("127.0.0.1").unwrap());
    let first = handshake(Upgrade::Accept(server.clone()), Upgrade::Connect(cfg_a.clone(), name.clone())).await;
    assert!(!first.1.unwrap().resumed);
    // The session's data connection resumes the control connection's TLS session.
    let data = handshake(Upgrade::Accept(server.clone()), Upgrade::Connect(cfg_a, name.clone())).await;
    assert!(data.1.unwrap().resumed, "data connection did not resume");
    // Another session's store is its own.
    let (cfg_b, _) = ctx.for_server(upstream()).unwrap();
    let other = handshake(Upgrade::Accept(server), Upgrade::Connect(cfg_b, name)).await;
    assert!(!other.1.unwrap().resumed);
}
