//! Recovering where a diverted client connection was going, one file per platform.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
#[allow(dead_code)]
mod pf;

use crate::addr::{canonical, LocalAddr, OriginalDst};
use crate::config::InterceptMode;
use socket2::Socket;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
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

/// The configured way of finding original destinations.
#[derive(Debug)]
pub enum Interceptor {
    #[cfg(target_os = "linux")]
    Redirect,
    #[cfg(target_os = "linux")]
    Tproxy,
    #[cfg(target_os = "freebsd")]
    PfRdr(pf::PfNatLook),
    #[cfg(target_os = "openbsd")]
    PfDivert,
    /// Reverse mode: every client goes to the configured upstream.
    Reverse,
}

impl Interceptor {
    /// Sets up the mode; opens what it needs (the pf device) before privileges are dropped.
    pub fn new(mode: InterceptMode) -> Result<Self, InterceptError> {
        match mode {
            InterceptMode::None => Ok(Self::Reverse),
            #[cfg(target_os = "linux")]
            InterceptMode::Redirect => Ok(Self::Redirect),
            #[cfg(target_os = "linux")]
            InterceptMode::Tproxy => Ok(Self::Tproxy),
            #[cfg(target_os = "freebsd")]
            InterceptMode::Pf => pf::PfNatLook::open().map(Self::PfRdr).map_err(InterceptError::PfDevice),
            #[cfg(target_os = "openbsd")]
            InterceptMode::Pf => Ok(Self::PfDivert),
            #[allow(unreachable_patterns)]
            other => Err(InterceptError::Unsupported(other)),
        }
    }

    /// Listeners must be transparent sockets (TPROXY).
    pub fn transparent(&self) -> bool {
        #[cfg(target_os = "linux")]
        if matches!(self, Self::Tproxy) {
            return true;
        }
        false
    }

    /// The original destination of an accepted connection; `None` in reverse mode.
    pub fn original_dst(
        &self,
        sock: &impl AsFd,
        client: SocketAddr,
        local: LocalAddr,
    ) -> Result<Option<OriginalDst>, InterceptError> {
        let _ = (sock, client);
        let dst = match self {
            Self::Reverse => return Ok(None),
            #[cfg(target_os = "linux")]
            Self::Redirect => linux::original_dst(sock, local.0).map_err(InterceptError::Lookup)?,
            // TPROXY and divert-to deliver the packet unchanged: the local address is where the
            // client was going.
            #[cfg(target_os = "linux")]
            Self::Tproxy => local.0,
            #[cfg(target_os = "freebsd")]
            Self::PfRdr(nl) => nl.original_dst(client, local.0).map_err(InterceptError::Lookup)?,
            #[cfg(target_os = "openbsd")]
            Self::PfDivert => pf::divert_to_original_dst(local.0),
        };
        Ok(Some(OriginalDst(canonical(dst))))
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
