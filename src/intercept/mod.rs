//! Recovering where a diverted client connection was going, and what that asks of ftpgate's
//! sockets and privileges: one [`Interception`] per mode, in the file of its platform.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
#[allow(dead_code)]
mod pf;
mod reverse;

use crate::addr::{canonical, LocalAddr, OriginalDst};
use crate::config::InterceptMode;
use crate::privileges::Keep;
use socket2::Socket;
use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InterceptError {
    #[error("cannot read the original destination: {0}")]
    Lookup(io::Error),
    #[error("interception mode {0:?} is not available on this platform")]
    Unsupported(InterceptMode),
    #[error("cannot open the pf device: {0}")]
    PfDevice(io::Error),
}

/// How a listening socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    pub ip: IpAddr,
    /// A transparent socket (needs CAP_NET_ADMIN).
    pub transparent: bool,
}

/// One way of finding original destinations, with what it needs from the rest of ftpgate.
pub trait Interception: Send + Sync + Debug {
    /// Where the client of an accepted connection was going; `None` in reverse mode.
    fn original_dst(
        &self,
        sock: &dyn AsFd,
        client: SocketAddr,
        local: LocalAddr,
    ) -> Result<Option<OriginalDst>, InterceptError>;

    /// Control listeners are transparent sockets.
    fn transparent_listeners(&self) -> bool {
        false
    }

    /// Where the listener for a client's data connection is bound: by default where the
    /// client's control connection arrived, which is where the firewall delivers its data too.
    fn client_data_listener(&self, client_side: LocalAddr, _original: Option<OriginalDst>) -> Bind {
        Bind { ip: client_side.ip(), transparent: false }
    }

    /// The connection was addressed to ftpgate itself rather than diverted: relaying it would
    /// have ftpgate connect to its own listener. `listening` are the bound control listeners.
    fn is_loop(&self, dst: OriginalDst, local: LocalAddr, listening: &[SocketAddr]) -> bool {
        addressed_to_listener(dst, local, listening)
    }

    /// The capabilities this mode needs after privileges are dropped.
    fn needs(&self) -> &'static [Keep] {
        &[]
    }
}

/// `dst` is one of ftpgate's own listeners: bound exactly there, or a wildcard listener on that
/// port that the connection reached without a change of destination.
fn addressed_to_listener(dst: OriginalDst, local: LocalAddr, listening: &[SocketAddr]) -> bool {
    listening
        .iter()
        .any(|l| canonical(*l) == dst.0 || (l.ip().is_unspecified() && l.port() == dst.port() && dst.0 == local.0))
}

/// A destination found by a lookup, in the form sessions compare and log.
fn diverted(dst: SocketAddr) -> Option<OriginalDst> {
    Some(OriginalDst(canonical(dst)))
}

/// The configured mode, set up once; opens what it needs (the pf device) before privileges
/// are dropped.
pub fn for_mode(mode: InterceptMode) -> Result<Arc<dyn Interception>, InterceptError> {
    match mode {
        InterceptMode::None => Ok(Arc::new(reverse::Reverse)),
        #[cfg(target_os = "linux")]
        InterceptMode::Redirect => Ok(Arc::new(linux::Redirect)),
        #[cfg(target_os = "linux")]
        InterceptMode::Tproxy => Ok(Arc::new(linux::Tproxy)),
        #[cfg(target_os = "freebsd")]
        InterceptMode::Pf => Ok(Arc::new(pf::PfNatLook::open().map_err(InterceptError::PfDevice)?)),
        #[cfg(target_os = "openbsd")]
        InterceptMode::Pf => Ok(Arc::new(pf::DivertTo)),
        #[allow(unreachable_patterns)]
        other => Err(InterceptError::Unsupported(other)),
    }
}

/// Makes `sock` transparent (TPROXY listeners, non-local binds).
pub fn set_transparent(sock: &Socket, v6: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        linux::set_transparent(sock, v6)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (sock, v6);
        Err(io::Error::new(io::ErrorKind::Unsupported, "transparent sockets need Linux TPROXY"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn dst(s: &str) -> OriginalDst {
        OriginalDst(s.parse().unwrap())
    }

    pub(super) fn local(s: &str) -> LocalAddr {
        LocalAddr(s.parse().unwrap())
    }

    #[test]
    fn a_destination_on_a_listener_is_ftpgate_itself() {
        let exact = ["127.0.0.1:8021".parse().unwrap()];
        assert!(addressed_to_listener(dst("127.0.0.1:8021"), local("127.0.0.1:8021"), &exact));
        assert!(!addressed_to_listener(dst("198.51.100.2:21"), local("127.0.0.1:8021"), &exact));
        let wildcard = ["0.0.0.0:8021".parse().unwrap(), "[::]:8021".parse().unwrap()];
        assert!(addressed_to_listener(dst("203.0.113.1:8021"), local("203.0.113.1:8021"), &wildcard));
        assert!(addressed_to_listener(dst("[2001:db8::1]:8021"), local("[2001:db8::1]:8021"), &wildcard));
        // A server that happens to use ftpgate's port, reached through the firewall.
        assert!(!addressed_to_listener(dst("198.51.100.2:8021"), local("203.0.113.1:8021"), &wildcard));
    }
}
