//! pf(4) integration for the BSDs: recovering the destination a client
//! originally dialled before the packet filter redirected the connection to
//! the proxy.
//!
//! * OpenBSD (`divert-to`): the packet is delivered unmodified to a socket
//!   bound elsewhere, so the accepted socket's own local address *is* the
//!   original destination ([`DivertTo`]).
//! * FreeBSD (`rdr`): the destination is rewritten, so the proxy asks pf for
//!   the state entry of the connection with the `DIOCNATLOOK` ioctl on
//!   `/dev/pf` (`PfNatLook`).
//!
//! This module (together with one other) is where the crate's `unsafe` lives:
//! the single `ioctl(2)` call below.

use super::{diverted, InterceptError, Interception};
use crate::addr::{LocalAddr, OriginalDst};
use std::net::SocketAddr;
use std::os::fd::AsFd;

/// OpenBSD `divert-to`.
#[derive(Debug)]
pub struct DivertTo;

impl Interception for DivertTo {
    fn original_dst(
        &self,
        _sock: &dyn AsFd,
        _client: SocketAddr,
        local: LocalAddr,
    ) -> Result<Option<OriginalDst>, InterceptError> {
        Ok(diverted(divert_to_original_dst(local.0)))
    }
}

/// FreeBSD `rdr`.
#[cfg(target_os = "freebsd")]
impl Interception for PfNatLook {
    fn original_dst(
        &self,
        _sock: &dyn AsFd,
        client: SocketAddr,
        local: LocalAddr,
    ) -> Result<Option<OriginalDst>, InterceptError> {
        self.lookup(client, local.0).map(diverted).map_err(InterceptError::Lookup)
    }

    fn is_loop(&self, dst: OriginalDst, local: LocalAddr, listening: &[SocketAddr]) -> bool {
        // pf also finds the state of a connection no rule redirected, and answers its local
        // address.
        dst.0 == local.0 || super::addressed_to_listener(dst, local, listening)
    }
}

/// OpenBSD `divert-to` rules: the socket's own local address is the original
/// destination.
///
/// `divert-to` does not rewrite the packet; it hands it to a local socket
/// listening on another address, so `getsockname(2)` on the accepted
/// connection already reports the address the client dialled. No pf query
/// (and no access to `/dev/pf`) is needed.
pub fn divert_to_original_dst(local: SocketAddr) -> SocketAddr {
    local
}

#[cfg(target_os = "freebsd")]
pub use self::natlook::PfNatLook;

#[cfg(target_os = "freebsd")]
mod natlook {
    use std::fs::File;
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use super::ffi::{self, PfAddr, PfiocNatlook};

    /// Path of the pf control device.
    const PF_DEV: &str = "/dev/pf";

    /// FreeBSD `rdr` rules: the original destination is found with
    /// `DIOCNATLOOK` on `/dev/pf`.
    #[derive(Debug)]
    pub struct PfNatLook {
        /// `/dev/pf`, opened read-only. pf allows `DIOCNATLOOK` on a
        /// descriptor opened without `FWRITE` (it is in the read-only
        /// whitelist at the top of `pfioctl()`).
        dev: File,
    }

    impl PfNatLook {
        /// Opens /dev/pf read-only (done once at start-up, before privileges
        /// are dropped).
        pub fn open() -> io::Result<Self> {
            // std opens with O_CLOEXEC, so the descriptor does not leak into
            // any child process.
            match File::open(PF_DEV) {
                Ok(dev) => Ok(Self { dev }),
                Err(e) => {
                    let hint = match e.kind() {
                        io::ErrorKind::NotFound => " (is the pf kernel module loaded? `kldload pf`)",
                        io::ErrorKind::PermissionDenied => " (must be opened as root, before privileges are dropped)",
                        _ => "",
                    };
                    Err(io::Error::new(e.kind(), format!("cannot open {PF_DEV}: {e}{hint}")))
                }
            }
        }

        /// `client` is the accepted connection's peer address, `local` its
        /// local address (where rdr delivered it).
        /// Returns the address the client originally dialled. Both addresses
        /// must be the same family (else io::ErrorKind::InvalidInput).
        ///
        /// IPv4-mapped IPv6 addresses (from a dual-stack listener) are looked
        /// up as the IPv4 connection pf actually tracked.
        ///
        /// If the connection was not redirected at all (the client dialled the
        /// proxy directly), pf still finds the state and the answer is
        /// `local` itself; callers should treat that as "no original
        /// destination" to avoid connecting to themselves.
        pub fn lookup(&self, client: SocketAddr, local: SocketAddr) -> io::Result<SocketAddr> {
            let mut pnl = natlook_request(client, local)?;

            // SAFETY: `self.dev` is an open descriptor owned by `self`, so the
            // fd stays valid for the whole call. `pnl` is a fully initialised
            // (padding included), exclusively borrowed `PfiocNatlook` whose
            // size and field offsets are asserted below to equal FreeBSD's
            // `struct pfioc_natlook`; the request code generated by
            // `ioctl_readwrite!` encodes that same size (also asserted), so the
            // kernel copies exactly `size_of::<PfiocNatlook>()` bytes in and
            // back out of this buffer. Every bit pattern the kernel can write
            // is a valid value for its plain integer/byte-array fields, and
            // the raw pointer does not outlive the call.
            let res = unsafe { ffi::diocnatlook(self.dev.as_raw_fd(), &mut pnl) };

            match res {
                Ok(_) => natlook_answer(&pnl),
                Err(errno) => Err(natlook_error(errno, client, local)),
            }
        }
    }

    /// Maps an IPv4-mapped IPv6 socket address to plain IPv4; pf tracks such
    /// connections as AF_INET.
    fn unmap(addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
                None => addr,
            },
            SocketAddr::V4(_) => addr,
        }
    }

    fn invalid_input(msg: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, msg)
    }

    /// Converts an IP address to pf's 16-byte `struct pf_addr` (network byte
    /// order; IPv4 occupies the first four bytes, the rest stays zero).
    pub(super) fn pf_addr_from_ip(ip: IpAddr) -> PfAddr {
        let mut addr = PfAddr::ZERO;
        match ip {
            IpAddr::V4(v4) => addr.bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => addr.bytes = v6.octets(),
        }
        addr
    }

    /// Converts a `struct pf_addr` back to an IP address of family `af`
    /// (`AF_INET` or `AF_INET6`).
    pub(super) fn ip_from_pf_addr(addr: &PfAddr, af: u8) -> Option<IpAddr> {
        if af == ffi::AF_INET {
            let [a, b, c, d, ..] = addr.bytes;
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        } else if af == ffi::AF_INET6 {
            Some(IpAddr::V6(Ipv6Addr::from(addr.bytes)))
        } else {
            None
        }
    }

    /// Builds the `DIOCNATLOOK` query the same way FreeBSD's ftp-proxy does:
    /// direction `PF_OUT`, proto TCP, `saddr:sport` = the client,
    /// `daddr:dport` = where rdr delivered the connection (our local
    /// address). Ports are in network byte order.
    pub(super) fn natlook_request(client: SocketAddr, local: SocketAddr) -> io::Result<PfiocNatlook> {
        let (client, local) = (unmap(client), unmap(local));
        let af = match (client, local) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) => ffi::AF_INET,
            (SocketAddr::V6(_), SocketAddr::V6(_)) => ffi::AF_INET6,
            _ => {
                return Err(invalid_input(format!(
                    "pf DIOCNATLOOK: client {client} and local {local} are of different address families"
                )))
            }
        };
        // pf rejects these with EINVAL; catch them here with a clearer message.
        for (what, sa) in [("client", client), ("local", local)] {
            if sa.ip().is_unspecified() || sa.port() == 0 {
                return Err(invalid_input(format!(
                    "pf DIOCNATLOOK: {what} address {sa} has an unspecified address or port"
                )));
            }
        }
        Ok(PfiocNatlook {
            saddr: pf_addr_from_ip(client.ip()),
            daddr: pf_addr_from_ip(local.ip()),
            rsaddr: PfAddr::ZERO,
            rdaddr: PfAddr::ZERO,
            sport: client.port().to_be(),
            dport: local.port().to_be(),
            rsport: 0,
            rdport: 0,
            af,
            proto: ffi::IPPROTO_TCP,
            direction: ffi::PF_OUT,
            _pad: [0],
        })
    }

    /// Extracts the original destination (`rdaddr:rdport`) from a completed
    /// query. The family is the one we asked with (`af` is input only).
    pub(super) fn natlook_answer(pnl: &PfiocNatlook) -> io::Result<SocketAddr> {
        let port = u16::from_be(pnl.rdport);
        let ip = ip_from_pf_addr(&pnl.rdaddr, pnl.af).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("pf DIOCNATLOOK: unexpected address family {}", pnl.af))
        })?;
        if ip.is_unspecified() || port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("pf DIOCNATLOOK returned an empty original destination ({ip} port {port})"),
            ));
        }
        Ok(match ip {
            IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
            IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
        })
    }

    /// Turns the ioctl's errno into an `io::Error` of the same kind, with the
    /// connection and a likely cause in the message.
    fn natlook_error(errno: nix::errno::Errno, client: SocketAddr, local: SocketAddr) -> io::Error {
        let base = io::Error::from(errno);
        let hint = match errno {
            nix::errno::Errno::ENOENT => "no pf state matches; is the connection redirected by an rdr rule?",
            nix::errno::Errno::E2BIG => "more than one pf state matches",
            nix::errno::Errno::EINVAL => "pf rejected the query",
            _ => "ioctl failed",
        };
        io::Error::new(base.kind(), format!("pf DIOCNATLOOK for {client} -> {local}: {hint} ({base})"))
    }
}

/// Raw FreeBSD pf ABI: `struct pfioc_natlook` and `DIOCNATLOOK`.
#[cfg(target_os = "freebsd")]
mod ffi {
    use std::mem::{align_of, offset_of, size_of};

    /// `AF_INET` as stored in the one-byte `sa_family_t` field.
    pub const AF_INET: u8 = libc::AF_INET as u8;
    /// `AF_INET6` (28 on FreeBSD) as stored in the one-byte `sa_family_t` field.
    pub const AF_INET6: u8 = libc::AF_INET6 as u8;
    /// `IPPROTO_TCP`.
    pub const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
    /// `PF_OUT` from `enum { PF_INOUT, PF_IN, PF_OUT }` in
    /// sys/netpfil/pf/pf.h (FreeBSD 12 and later; sys/net/pfvar.h before).
    pub const PF_OUT: u8 = 2;

    /// `struct pf_addr`: a 16-byte union of `struct in_addr`,
    /// `struct in6_addr`, `u_int8_t[16]`, `u_int16_t[8]` and `u_int32_t[4]`.
    /// Its `u_int32_t` members give it 4-byte alignment. Stored here as raw
    /// bytes in network order; IPv4 uses the first four.
    #[repr(C, align(4))]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PfAddr {
        pub bytes: [u8; 16],
    }

    impl PfAddr {
        pub const ZERO: Self = Self { bytes: [0; 16] };
    }

    /// `struct pfioc_natlook` from FreeBSD's sys/net/pfvar.h. Identical in
    /// the 11-, 13- and 15-era (COMPAT_FREEBSD14) headers checked, so it
    /// covers FreeBSD 13 and 14:
    ///
    /// ```c
    /// struct pfioc_natlook {
    ///     struct pf_addr saddr;    /*  0 */
    ///     struct pf_addr daddr;    /* 16 */
    ///     struct pf_addr rsaddr;   /* 32 */
    ///     struct pf_addr rdaddr;   /* 48 */
    ///     u_int16_t      sport;    /* 64 */
    ///     u_int16_t      dport;    /* 66 */
    ///     u_int16_t      rsport;   /* 68 */
    ///     u_int16_t      rdport;   /* 70 */
    ///     sa_family_t    af;       /* 72, u_int8_t on FreeBSD */
    ///     u_int8_t       proto;    /* 73 */
    ///     u_int8_t       direction;/* 74 */
    /// };                           /* + 1 byte tail padding = 76 */
    /// ```
    ///
    /// Ports are in network byte order. OpenBSD's layout differs (it has an
    /// `rdomain`/`rrdomain` pair), and macOS's differs again; this is
    /// FreeBSD only.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct PfiocNatlook {
        pub saddr: PfAddr,
        pub daddr: PfAddr,
        pub rsaddr: PfAddr,
        pub rdaddr: PfAddr,
        pub sport: u16,
        pub dport: u16,
        pub rsport: u16,
        pub rdport: u16,
        pub af: u8,
        pub proto: u8,
        pub direction: u8,
        /// The C struct's implicit tail padding, made explicit so that every
        /// byte handed to the kernel is initialised.
        pub _pad: [u8; 1],
    }

    // N = 76: 4 x 16-byte pf_addr + 4 x u_int16_t + 3 x u_int8_t = 75 bytes,
    // rounded up to pf_addr's 4-byte alignment. Layout from FreeBSD
    // sys/net/pfvar.h (struct pfioc_natlook) and sys/netpfil/pf/pf.h
    // (struct pf_addr), FreeBSD 13/14/15 (identical in all three).
    const _: () = assert!(size_of::<PfAddr>() == 16);
    const _: () = assert!(align_of::<PfAddr>() == 4);
    const _: () = assert!(size_of::<libc::sa_family_t>() == 1);
    const _: () = assert!(size_of::<PfiocNatlook>() == 76);
    const _: () = assert!(align_of::<PfiocNatlook>() == 4);
    const _: () = assert!(offset_of!(PfiocNatlook, saddr) == 0);
    const _: () = assert!(offset_of!(PfiocNatlook, daddr) == 16);
    const _: () = assert!(offset_of!(PfiocNatlook, rsaddr) == 32);
    const _: () = assert!(offset_of!(PfiocNatlook, rdaddr) == 48);
    const _: () = assert!(offset_of!(PfiocNatlook, sport) == 64);
    const _: () = assert!(offset_of!(PfiocNatlook, dport) == 66);
    const _: () = assert!(offset_of!(PfiocNatlook, rsport) == 68);
    const _: () = assert!(offset_of!(PfiocNatlook, rdport) == 70);
    const _: () = assert!(offset_of!(PfiocNatlook, af) == 72);
    const _: () = assert!(offset_of!(PfiocNatlook, proto) == 73);
    const _: () = assert!(offset_of!(PfiocNatlook, direction) == 74);

    // `#define DIOCNATLOOK _IOWR('D', 23, struct pfioc_natlook)` in
    // sys/net/pfvar.h: IOC_INOUT (0xc0000000) | (76 << 16) | ('D' << 8) | 23.
    const _: () = assert!(nix::request_code_readwrite!(b'D', 23, size_of::<PfiocNatlook>()) == 0xc04c_4417);

    nix::ioctl_readwrite!(
        /// `DIOCNATLOOK`: look up the pf state of a connection.
        ///
        /// # Safety
        ///
        /// `fd` must be an open `/dev/pf` descriptor and `data` must point to
        /// a valid, writable `PfiocNatlook` for the duration of the call.
        diocnatlook,
        b'D',
        23,
        PfiocNatlook
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divert_to_returns_local_address() {
        let v4: SocketAddr = "203.0.113.7:21".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:21".parse().unwrap();
        assert_eq!(divert_to_original_dst(v4), v4);
        assert_eq!(divert_to_original_dst(v6), v6);
    }

    #[test]
    fn divert_to_needs_nothing_and_sees_a_loop_only_in_its_listeners() {
        assert!(DivertTo.needs().is_empty());
        assert!(!DivertTo.transparent_listeners());
        let here = LocalAddr("198.51.100.2:21".parse().unwrap());
        let listening = ["0.0.0.0:8021".parse().unwrap()];
        assert!(!DivertTo.is_loop(OriginalDst(here.0), here, &listening));
        let ours = LocalAddr("203.0.113.1:8021".parse().unwrap());
        assert!(DivertTo.is_loop(OriginalDst(ours.0), ours, &listening));
    }

    #[cfg(target_os = "freebsd")]
    mod freebsd {
        use super::super::ffi::{self, PfAddr};
        use super::super::natlook::*;
        use super::*;
        use std::io;
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

        #[test]
        fn pf_addr_v4_roundtrip() {
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
            let a = pf_addr_from_ip(ip);
            assert_eq!(&a.bytes[..4], &[192, 0, 2, 10]);
            assert_eq!(&a.bytes[4..], &[0; 12]);
            assert_eq!(ip_from_pf_addr(&a, ffi::AF_INET), Some(ip));
        }

        #[test]
        fn pf_addr_v6_roundtrip() {
            let v6: Ipv6Addr = "2001:db8::1:2".parse().unwrap();
            let a = pf_addr_from_ip(IpAddr::V6(v6));
            assert_eq!(a.bytes, v6.octets());
            assert_eq!(ip_from_pf_addr(&a, ffi::AF_INET6), Some(IpAddr::V6(v6)));
        }

        #[test]
        fn pf_addr_unknown_family() {
            assert_eq!(ip_from_pf_addr(&PfAddr::ZERO, 0), None);
        }

        #[test]
        fn request_v4_matches_ftp_proxy_convention() {
            let client: SocketAddr = "203.0.113.10:50000".parse().unwrap();
            let local: SocketAddr = "127.0.0.1:8021".parse().unwrap();
            let pnl = natlook_request(client, local).unwrap();
            assert_eq!(&pnl.saddr.bytes[..4], &[192, 0, 2, 10]);
            assert_eq!(&pnl.daddr.bytes[..4], &[127, 0, 0, 1]);
            assert_eq!(pnl.rsaddr, PfAddr::ZERO);
            assert_eq!(pnl.rdaddr, PfAddr::ZERO);
            // Network byte order in memory.
            assert_eq!(pnl.sport.to_ne_bytes(), 50000u16.to_be_bytes());
            assert_eq!(pnl.dport.to_ne_bytes(), 8021u16.to_be_bytes());
            assert_eq!(pnl.af, libc::AF_INET as u8);
            assert_eq!(pnl.proto, 6);
            assert_eq!(pnl.direction, 2); // PF_OUT
        }

        #[test]
        fn request_v6() {
            let client: SocketAddr = "[2001:db8::10]:40000".parse().unwrap();
            let local: SocketAddr = "[::1]:8021".parse().unwrap();
            let pnl = natlook_request(client, local).unwrap();
            assert_eq!(pnl.saddr.bytes, "2001:db8::10".parse::<Ipv6Addr>().unwrap().octets());
            assert_eq!(pnl.daddr.bytes, Ipv6Addr::LOCALHOST.octets());
            assert_eq!(pnl.af, libc::AF_INET6 as u8);
            assert_eq!(u16::from_be(pnl.sport), 40000);
            assert_eq!(u16::from_be(pnl.dport), 8021);
        }

        #[test]
        fn request_mixed_families_is_invalid_input() {
            let client: SocketAddr = "203.0.113.10:50000".parse().unwrap();
            let local: SocketAddr = "[::1]:8021".parse().unwrap();
            let err = natlook_request(client, local).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }

        #[test]
        fn request_v4_mapped_is_looked_up_as_v4() {
            let client = SocketAddr::V6(SocketAddrV6::new(Ipv4Addr::new(192, 0, 2, 10).to_ipv6_mapped(), 50000, 0, 0));
            let local: SocketAddr = "127.0.0.1:8021".parse().unwrap();
            let pnl = natlook_request(client, local).unwrap();
            assert_eq!(pnl.af, libc::AF_INET as u8);
            assert_eq!(&pnl.saddr.bytes[..4], &[192, 0, 2, 10]);
            assert_eq!(&pnl.saddr.bytes[4..], &[0; 12]);
        }

        #[test]
        fn request_rejects_unspecified_or_zero_port() {
            let ok: SocketAddr = "203.0.113.10:50000".parse().unwrap();
            for bad in ["0.0.0.0:8021", "127.0.0.1:0"] {
                let bad: SocketAddr = bad.parse().unwrap();
                assert_eq!(natlook_request(ok, bad).unwrap_err().kind(), io::ErrorKind::InvalidInput);
                assert_eq!(natlook_request(bad, ok).unwrap_err().kind(), io::ErrorKind::InvalidInput);
            }
        }

        #[test]
        fn answer_v4() {
            let client: SocketAddr = "203.0.113.10:50000".parse().unwrap();
            let local: SocketAddr = "127.0.0.1:8021".parse().unwrap();
            let mut pnl = natlook_request(client, local).unwrap();
            pnl.rdaddr = pf_addr_from_ip(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20)));
            pnl.rdport = 21u16.to_be();
            assert_eq!(
                natlook_answer(&pnl).unwrap(),
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 21))
            );
        }

        #[test]
        fn answer_v6() {
            let client: SocketAddr = "[2001:db8::10]:40000".parse().unwrap();
            let local: SocketAddr = "[2001:db8::1]:8021".parse().unwrap();
            let mut pnl = natlook_request(client, local).unwrap();
            let dst: Ipv6Addr = "2001:db8:ffff::21".parse().unwrap();
            pnl.rdaddr = pf_addr_from_ip(IpAddr::V6(dst));
            pnl.rdport = 21u16.to_be();
            assert_eq!(natlook_answer(&pnl).unwrap(), SocketAddr::V6(SocketAddrV6::new(dst, 21, 0, 0)));
        }

        #[test]
        fn answer_empty_is_error() {
            let client: SocketAddr = "203.0.113.10:50000".parse().unwrap();
            let local: SocketAddr = "127.0.0.1:8021".parse().unwrap();
            let pnl = natlook_request(client, local).unwrap();
            assert_eq!(natlook_answer(&pnl).unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
    }
}
