//! Transparent active mode with pf (FreeBSD and OpenBSD), ftp-proxy's way: ftpgate connects to the
//! client from a port of its own, and a nat rule loaded for exactly that connection (that
//! port to the client's data address) rewrites its source to the original server's address
//! (port 20 when `active.source_port_20`). pf has no transparent bind; the rule is what makes
//! the client see its control peer.

use super::Shared;
use crate::data::sockets::Source;
use std::io;
use std::net::SocketAddr;

/// The source ftpgate binds for its connection to `to`, after loading the nat rule that makes
/// it appear to come from `appear_as`.
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
pub(super) fn translated(shared: &Shared, appear_as: SocketAddr, to: SocketAddr) -> io::Result<Source> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let nat = shared.source_nat.as_ref().ok_or_else(|| {
        io::Error::other("active.source: original with pf takes effect at a restart (no pf handle was opened)")
    })?;
    let any = if to.is_ipv6() { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    // The rule names ftpgate's port: port 20 itself, or one the kernel hands out now and the
    // connection binds again (with SO_REUSEADDR, as a fixed source port is bound).
    let port = match appear_as.port() {
        0 => std::net::TcpListener::bind(SocketAddr::new(any, 0))?.local_addr()?.port(),
        p => p,
    };
    let t = &shared.cfg.live.timeouts;
    // Until ftpgate has connected: the server's connection first, then ours.
    let keep = t.data_accept + t.connect + std::time::Duration::from_secs(1);
    nat.translate_source(port, to, appear_as, keep).map_err(io::Error::other)?;
    Ok(SocketAddr::new(any, port).into())
}

/// Elsewhere pf is never asked to translate: the configuration accepts `active.source:
/// original` with pf on FreeBSD and OpenBSD only.
#[cfg(not(any(target_os = "freebsd", target_os = "openbsd")))]
pub(super) fn translated(_: &Shared, _: SocketAddr, _: SocketAddr) -> io::Result<Source> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "active.source: original with pf needs FreeBSD or OpenBSD"))
}
