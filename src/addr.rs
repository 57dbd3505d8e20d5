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

/// The IPv4 address embedded in `ip` under the NAT64 `prefix` (RFC 6052 section 2.2: the
/// four octets follow the prefix, skipping bits 64-71), or `None` outside the prefix.
pub fn nat64_embedded(prefix: ipnet::Ipv6Net, ip: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    if !prefix.contains(&ip) {
        return None;
    }
    let o = ip.octets();
    let mut v4 = (usize::from(prefix.prefix_len()) / 8..16).filter(|&i| i != 8).map(|i| o[i]);
    Some(std::net::Ipv4Addr::new(v4.next()?, v4.next()?, v4.next()?, v4.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat64_addresses_of_every_rfc6052_length() {
        // The prefixes of RFC 6052 section 2.4's table, embedding 198.51.100.33 (c6.33.64.21).
        let want = std::net::Ipv4Addr::new(198, 51, 100, 33);
        for (prefix, ip) in [
            ("2001:db8::/32", "2001:db8:c633:6421::"),
            ("2001:db8:100::/40", "2001:db8:1c6:3364:21::"),
            ("2001:db8:122::/48", "2001:db8:122:c633:64:2100::"),
            ("2001:db8:122:300::/56", "2001:db8:122:3c6:33:6421::"),
            ("2001:db8:122:344::/64", "2001:db8:122:344:c6:3364:2100:0"),
            ("64:ff9b::/96", "64:ff9b::198.51.100.33"),
        ] {
            assert_eq!(nat64_embedded(prefix.parse().unwrap(), ip.parse().unwrap()), Some(want), "{prefix}");
        }
        assert_eq!(nat64_embedded("64:ff9b::/96".parse().unwrap(), "2001:db8:2::2".parse().unwrap()), None);
    }

    #[test]
    fn mapped_addresses_are_unmapped() {
        let m: SocketAddr = "[::ffff:203.0.113.2]:21".parse().unwrap();
        assert_eq!(canonical(m), "203.0.113.2:21".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:21".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
