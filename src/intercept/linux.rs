//! Linux netfilter: REDIRECT/DNAT (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`) and TPROXY
//! (transparent sockets).

use super::{addressed_to_listener, diverted, Bind, InterceptError, Interception};
use crate::addr::{canonical, LocalAddr, OriginalDst};
use crate::privileges::Keep;
use nix::sys::socket::{getsockopt, sockopt};
use socket2::Socket;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

/// nftables/iptables REDIRECT or DNAT: the destination was rewritten, conntrack keeps the
/// original.
#[derive(Debug)]
pub struct Redirect;

impl Interception for Redirect {
    fn original_dst(
        &self,
        sock: &dyn AsFd,
        _client: SocketAddr,
        local: LocalAddr,
    ) -> Result<Option<OriginalDst>, InterceptError> {
        original_dst(&sock.as_fd(), local.0).map(diverted).map_err(InterceptError::Lookup)
    }

    fn is_loop(&self, dst: OriginalDst, local: LocalAddr, listening: &[SocketAddr]) -> bool {
        // A connection no rule rewrote reports its own local address as the original.
        dst.0 == local.0 || addressed_to_listener(dst, local, listening)
    }
}

/// TPROXY: packets reach a transparent socket unchanged, so the local address is where the
/// client was going.
#[derive(Debug)]
pub struct Tproxy;

impl Interception for Tproxy {
    fn original_dst(
        &self,
        _sock: &dyn AsFd,
        _client: SocketAddr,
        local: LocalAddr,
    ) -> Result<Option<OriginalDst>, InterceptError> {
        Ok(diverted(local.0))
    }

    fn transparent_listeners(&self) -> bool {
        true
    }

    /// The client's data connection keeps the server's address as its destination: the
    /// listener is a transparent wildcard socket that the rule's socket lookup finds by port.
    fn client_data_listener(&self, client_side: LocalAddr, original: Option<OriginalDst>) -> Bind {
        let ip = match original {
            Some(_) if client_side.is_ipv6() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            Some(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            None => client_side.ip(),
        };
        Bind { ip, transparent: true }
    }

    fn needs(&self) -> &'static [Keep] {
        &[Keep::NetAdmin]
    }
}

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
    use super::super::tests::{dst, local};
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn redirect_sees_a_loop_in_an_unrewritten_destination_and_in_its_listeners() {
        let listening = ["0.0.0.0:8021".parse().unwrap()];
        let here = local("203.0.113.1:8021");
        assert!(Redirect.is_loop(dst("203.0.113.1:8021"), here, &listening));
        assert!(Redirect.is_loop(dst("203.0.113.1:8021"), here, &[]));
        assert!(!Redirect.is_loop(dst("198.51.100.2:21"), here, &listening));
        let exact = ["127.0.0.1:8021".parse().unwrap()];
        assert!(Redirect.is_loop(dst("127.0.0.1:8021"), local("203.0.113.1:8021"), &exact));
    }

    #[test]
    fn tproxy_sees_a_loop_only_in_its_listeners() {
        // TPROXY always reports the local address: a server on another port is no loop.
        let listening = ["0.0.0.0:8021".parse().unwrap()];
        assert!(!Tproxy.is_loop(dst("198.51.100.2:21"), local("198.51.100.2:21"), &listening));
        assert!(Tproxy.is_loop(dst("203.0.113.1:8021"), local("203.0.113.1:8021"), &listening));
        assert!(Tproxy.is_loop(dst("127.0.0.1:8021"), local("127.0.0.1:8021"), &["127.0.0.1:8021".parse().unwrap()]));
    }

    #[test]
    fn only_tproxy_needs_net_admin_and_transparent_sockets() {
        assert!(Redirect.needs().is_empty());
        assert!(!Redirect.transparent_listeners());
        assert_eq!(Tproxy.needs(), [Keep::NetAdmin]);
        assert!(Tproxy.transparent_listeners());
    }

    #[test]
    fn data_listeners_bind_where_each_mode_delivers() {
        let server = Some(dst("198.51.100.2:21"));
        let redirect = Redirect.client_data_listener(local("203.0.113.1:8021"), server);
        assert_eq!(redirect, Bind { ip: "203.0.113.1".parse().unwrap(), transparent: false });
        let v4 = Tproxy.client_data_listener(local("198.51.100.2:21"), server);
        assert_eq!(v4, Bind { ip: Ipv4Addr::UNSPECIFIED.into(), transparent: true });
        let v6 = Tproxy.client_data_listener(local("[2001:db8:2::2]:21"), Some(dst("[2001:db8:2::2]:21")));
        assert_eq!(v6, Bind { ip: Ipv6Addr::UNSPECIFIED.into(), transparent: true });
    }

    #[test]
    fn tproxy_reports_the_local_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let here = LocalAddr(s.local_addr().unwrap());
        assert_eq!(Tproxy.original_dst(&s, peer, here).unwrap(), Some(OriginalDst(here.0)));
        drop(c);
    }

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
