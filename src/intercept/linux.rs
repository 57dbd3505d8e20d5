//! Linux netfilter: REDIRECT/DNAT (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`) and TPROXY
//! (transparent sockets).

use crate::addr::canonical;
use nix::sys::socket::{getsockopt, sockopt};
use socket2::Socket;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

/// The destination conntrack recorded before REDIRECT/DNAT rewrote it.
pub fn original_dst(sock: &impl AsFd, local: SocketAddr) -> io::Result<SocketAddr> {
    let local = canonical(local);
    match local {
        SocketAddr::V4(_) => {
            let sin = getsockopt(sock, sockopt::OriginalDst).map_err(io::Error::from)?;
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        SocketAddr::V6(_) => {
            let sin6 = getsockopt(sock, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, 0)))
        }
    }
}

/// Lets a socket bind non-local addresses and receive TPROXY-diverted connections
/// (needs CAP_NET_ADMIN).
pub fn set_transparent(sock: &Socket, v6: bool) -> io::Result<()> {
    if !v6 {
        return sock.set_ip_transparent(true);
    }
    let one: libc::c_int = 1;
    // SAFETY: `sock` owns a valid open descriptor for the duration of the call; the option value
    // points to a live `c_int` and its exact size is passed, as setsockopt(2) requires.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_IPV6,
            libc::IPV6_TRANSPARENT,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn original_dst_without_nat_is_an_error_or_the_local_address() {
        // Without a conntrack NAT entry the kernel answers ENOENT, or the unchanged tuple when
        // conntrack tracks loopback; both let the caller detect "not diverted".
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        match original_dst(&s, s.local_addr().unwrap()) {
            Ok(a) => assert_eq!(a, s.local_addr().unwrap()),
            Err(e) => assert!(e.raw_os_error().is_some(), "{e}"),
        }
        drop(c);
    }
}
