//! Addresses that mean different things get different types, so a client's address can never be
//! passed where the server's is expected.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

macro_rules! addr_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl $name {
            pub fn ip(&self) -> IpAddr {
                self.0.ip()
            }
            pub fn port(&self) -> u16 {
                self.0.port()
            }
            pub fn is_ipv6(&self) -> bool {
                self.0.is_ipv6()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

addr_newtype!(
    /// The client's end of the control connection, as ftpgate sees it.
    ClientAddr
);
addr_newtype!(
    /// Where the client meant to go before the firewall diverted it.
    OriginalDst
);
addr_newtype!(
    /// The FTP server ftpgate connects to: the original destination, or the fixed upstream in
    /// reverse mode.
    UpstreamAddr
);
addr_newtype!(
    /// ftpgate's own end of a connection (the accepting side toward clients, or the connecting
    /// side toward the server).
    LocalAddr
);

/// Unmaps `::ffff:a.b.c.d` so that a dual-stack socket's view compares equal to IPv4 literals.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn canonical(sa: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(sa.ip()), sa.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_unmapped() {
        let m: SocketAddr = "[::ffff:203.0.113.2]:21".parse().unwrap();
        assert_eq!(canonical(m), "203.0.113.2:21".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:21".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
