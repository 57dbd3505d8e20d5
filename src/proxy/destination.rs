//! Where a diverted client may be taken. The firewall's REDIRECT or TPROXY happens before its
//! forward chain, so whatever that chain would refuse never applies to a diverted connection:
//! this decision stands in for it. It is free of I/O; the firewall's own addresses are handed in.

use super::Shared;
use crate::addr::{canonical_ip, nat64_embedded, OriginalDst, UpstreamAddr};
use crate::config::ServerNets;
use crate::labels::Reason;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tracing::warn;

/// Why a destination was refused: the log's `category` and the end of the client's 421.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// 0.0.0.0/8 or `::`; Linux takes a connection to 0.0.0.0 to the local host.
    Unspecified,
    Loopback,
    /// 169.254.0.0/16 (cloud metadata services among them) or fe80::/10.
    LinkLocal,
    Multicast,
    /// 255.255.255.255 or the broadcast address of one of the firewall's networks.
    Broadcast,
    /// An address of one of the firewall's interfaces.
    Local,
    /// Inside the well-known NAT64 prefix 64:ff9b::/96, which RFC 6052 section 3.1 forbids for
    /// IPv4 addresses that are not global.
    Nat64NonGlobal,
    /// Inside `servers.deny`.
    Denied,
    /// Outside a non-empty `servers.allow`.
    NotAllowed,
}

impl Category {
    pub const fn label(self) -> &'static str {
        match self {
            Category::Unspecified => "unspecified",
            Category::Loopback => "loopback",
            Category::LinkLocal => "link_local",
            Category::Multicast => "multicast",
            Category::Broadcast => "broadcast",
            Category::Local => "local",
            Category::Nat64NonGlobal => "nat64_non_global",
            Category::Denied => "denied",
            Category::NotAllowed => "not_allowed",
        }
    }
}

/// A destination the gateway will not connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationRefusal {
    pub dst: OriginalDst,
    pub category: Category,
    /// The IPv4 address a NAT64 prefix embeds in `dst`, when the refusal is about it.
    pub embedded: Option<Ipv4Addr>,
}

impl fmt::Display for DestinationRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Destination {} refused by gateway policy ({}", self.dst, self.category.label())?;
        if let Some(v4) = self.embedded {
            write!(f, ": {v4} through NAT64")?;
        }
        f.write_str(")")
    }
}

/// The firewall's own addresses as its interfaces have them, and their networks' broadcast
/// addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    addrs: Vec<IpAddr>,
    broadcasts: Vec<IpAddr>,
}

impl LocalAddrs {
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>, broadcasts: impl IntoIterator<Item = IpAddr>) -> Self {
        let sorted = |it: &mut dyn Iterator<Item = IpAddr>| {
            let mut v: Vec<IpAddr> = it.map(canonical_ip).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let addrs = sorted(&mut addrs.into_iter());
        // An address configured without a broadcast address comes back from getifaddrs with
        // itself (or nothing) in that place: it is the host's, not a broadcast.
        let mut broadcasts = sorted(&mut broadcasts.into_iter());
        broadcasts.retain(|b| !b.is_unspecified() && addrs.binary_search(b).is_err());
        Self { addrs, broadcasts }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addrs.binary_search(&ip).is_ok()
    }

    fn is_broadcast(&self, ip: IpAddr) -> bool {
        self.broadcasts.binary_search(&ip).is_ok()
    }
}

const WELL_KNOWN_PREFIX: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);

/// The IPv4 networks the IANA special-purpose address registry marks not globally reachable,
/// as std's (unstable) `Ipv4Addr::is_global` lists them.
const NON_GLOBAL_V4: [Ipv4Net; 13] = [
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24),
    // Reserved, and the limited broadcast address with it.
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
];

fn is_global_v4(ip: Ipv4Addr) -> bool {
    // The registry's two globally reachable anycast services inside 192.0.0.0/24 (PCP, TURN).
    if matches!(ip.octets(), [192, 0, 0, 9] | [192, 0, 0, 10]) {
        return true;
    }
    !NON_GLOBAL_V4.iter().any(|n| n.contains(&ip))
}

/// What a diverted connection may reach: the built-in refusals, then `servers.deny`, then a
/// non-empty `servers.allow`.
#[derive(Debug, Clone, Copy)]
pub struct DestinationPolicy<'a> {
    pub servers: &'a ServerNets,
    /// Destinations inside it are the IPv4 servers it embeds.
    pub nat64_prefix: Option<Ipv6Net>,
    pub local: &'a LocalAddrs,
}

impl DestinationPolicy<'_> {
    /// The server to connect to for a client that dialled `dst`, or why not.
    pub fn check(&self, dst: OriginalDst) -> Result<UpstreamAddr, DestinationRefusal> {
        let ip = canonical_ip(dst.ip());
        let refuse = |category, embedded| Err(DestinationRefusal { dst, category, embedded });
        if let Some(c) = self.built_in(ip) {
            return refuse(c, None);
        }
        let (configured, well_known) = match ip {
            IpAddr::V6(v6) => {
                (self.nat64_prefix.and_then(|p| nat64_embedded(p, v6)), nat64_embedded(WELL_KNOWN_PREFIX, v6))
            }
            IpAddr::V4(_) => (None, None),
        };
        // What a translator would make of it, whether ftpgate translates (the configured prefix)
        // or a NAT64 further on would (the well-known one).
        for v4 in configured.into_iter().chain(well_known) {
            if let Some(c) = self.built_in(IpAddr::V4(v4)) {
                return refuse(c, Some(v4));
            }
        }
        if let Some(v4) = well_known.filter(|v4| !is_global_v4(*v4)) {
            return refuse(Category::Nat64NonGlobal, Some(v4));
        }
        let upstream = configured.map_or(ip, IpAddr::V4);
        let named = |nets: &[IpNet]| nets.iter().any(|n| n.contains(&ip) || n.contains(&upstream));
        if named(&self.servers.deny) {
            return refuse(Category::Denied, configured);
        }
        if !self.servers.allow.is_empty() && !named(&self.servers.allow) {
            return refuse(Category::NotAllowed, configured);
        }
        Ok(UpstreamAddr(SocketAddr::new(upstream, dst.port())))
    }

    fn built_in(&self, ip: IpAddr) -> Option<Category> {
        let category = match ip {
            IpAddr::V4(v4) if v4.octets()[0] == 0 => Category::Unspecified,
            IpAddr::V6(v6) if v6.is_unspecified() => Category::Unspecified,
            ip if ip.is_loopback() => Category::Loopback,
            IpAddr::V4(v4) if v4.is_link_local() => Category::LinkLocal,
            IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Category::LinkLocal,
            ip if ip.is_multicast() => Category::Multicast,
            IpAddr::V4(v4) if v4.is_broadcast() => Category::Broadcast,
            ip if self.local.is_broadcast(ip) => Category::Broadcast,
            ip if self.local.contains(ip) => Category::Local,
            _ => return None,
        };
        Some(category)
    }
}

/// The server for a diverted client that dialled `dst` under the session's configuration, or
/// the text of the 421 it gets; a refusal is logged with its category and counted.
pub(super) fn screen(shared: &Shared, dst: OriginalDst) -> Result<UpstreamAddr, String> {
    let reason = Reason::Destination.label();
    let local = shared.local_addrs.current().map_err(|e| {
        warn!(reason, %dst, error = %e, "cannot read the firewall's own addresses, destination refused");
        shared.metrics.reject(Reason::Destination);
        format!("Gateway cannot check the destination {dst}")
    })?;
    let cfg = &shared.cfg.live;
    let policy = DestinationPolicy { servers: &cfg.servers, nat64_prefix: cfg.nat64_prefix, local: &local };
    policy.check(dst).map_err(|refusal| {
        warn!(reason, category = refusal.category.label(), %dst, "{refusal}");
        shared.metrics.reject(Reason::Destination);
        refusal.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The lab's firewall: 203.0.113.1/24 toward clients, 198.51.100.1/24 toward servers.
    fn firewall() -> LocalAddrs {
        let addrs = ["127.0.0.1", "::1", "203.0.113.1", "198.51.100.1", "2001:db8:1::1", "fe80::1"];
        LocalAddrs::new(addrs.map(ip), ["203.0.113.255", "198.51.100.255"].map(ip))
    }

    fn check(servers: &ServerNets, nat64: Option<&str>, dst: &str) -> Result<SocketAddr, (Category, Option<Ipv4Addr>)> {
        let local = firewall();
        let policy = DestinationPolicy { servers, nat64_prefix: nat64.map(|p| p.parse().unwrap()), local: &local };
        policy.check(OriginalDst(dst.parse().unwrap())).map(|u| u.0).map_err(|r| (r.category, r.embedded))
    }

    fn category(dst: &str) -> Option<Category> {
        check(&ServerNets::default(), None, dst).err().map(|(c, _)| c)
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn every_built_in_category_in_both_families() {
        use Category::*;
        for (dst, want) in [
            ("0.0.0.0:21", Unspecified),
            ("0.1.2.3:21", Unspecified),
            ("[::]:21", Unspecified),
            ("127.0.0.1:21", Loopback),
            ("127.8.9.10:21", Loopback),
            ("[::1]:21", Loopback),
            ("[::ffff:127.0.0.1]:21", Loopback),
            ("169.254.169.254:21", LinkLocal),
            ("169.254.0.1:21", LinkLocal),
            ("[fe80::1234]:21", LinkLocal),
            ("[febf::1]:21", LinkLocal),
            ("224.0.0.1:21", Multicast),
            ("239.255.255.250:21", Multicast),
            ("[ff02::1]:21", Multicast),
            ("255.255.255.255:21", Broadcast),
            ("203.0.113.255:21", Broadcast),
            ("203.0.113.1:21", Local),
            ("198.51.100.1:21", Local),
            ("[::ffff:198.51.100.1]:21", Local),
            ("[2001:db8:1::1]:21", Local),
        ] {
            assert_eq!(category(dst), Some(want), "{dst}");
        }
        // What getifaddrs reports for an address added without a broadcast address.
        let no_brd = LocalAddrs::new([ip("203.0.113.1")], [ip("203.0.113.1"), ip("0.0.0.0")]);
        assert!(no_brd.broadcasts.is_empty() && no_brd.contains(ip("203.0.113.1")));
        for dst in ["198.51.100.2:21", "203.0.113.7:21", "10.1.2.3:21", "[2001:db8:2::2]:21", "[fec0::1]:21"] {
            assert_eq!(category(dst), None, "{dst}");
        }
        let refusal = DestinationRefusal {
            dst: OriginalDst("127.0.0.1:21".parse().unwrap()),
            category: Loopback,
            embedded: None,
        };
        assert_eq!(refusal.to_string(), "Destination 127.0.0.1:21 refused by gateway policy (loopback)");
    }

    #[test]
    fn an_address_that_was_local_is_not_once_it_is_gone() {
        let servers = ServerNets::default();
        let before = firewall();
        let after = LocalAddrs::new([ip("127.0.0.1"), ip("203.0.113.1")], []);
        let dst = OriginalDst("198.51.100.1:21".parse().unwrap());
        let policy = |local| DestinationPolicy { servers: &servers, nat64_prefix: None, local };
        assert_eq!(policy(&before).check(dst).unwrap_err().category, Category::Local);
        assert_eq!(policy(&after).check(dst).unwrap().0, dst.0);
    }

    #[test]
    fn nat64_destinations_are_checked_as_the_ipv4_address_they_embed() {
        let none = ServerNets::default();
        let nsp = Some("2001:db8:64::/96");
        // Under the configured prefix: the IPv4 server, unless it is one of the built-ins.
        assert_eq!(check(&none, nsp, "[2001:db8:64::c633:6402]:21"), Ok("198.51.100.2:21".parse().unwrap()));
        assert_eq!(check(&none, nsp, "[2001:db8:64::7f00:1]:21"), Err((Category::Loopback, Some(Ipv4Addr::LOCALHOST))));
        let own = Ipv4Addr::new(198, 51, 100, 1);
        assert_eq!(check(&none, nsp, "[2001:db8:64::c633:6401]:21"), Err((Category::Local, Some(own))));
        let metadata = Ipv4Addr::new(169, 254, 169, 254);
        assert_eq!(check(&none, nsp, "[2001:db8:64::a9fe:a9fe]:21"), Err((Category::LinkLocal, Some(metadata))));
        // A network-specific prefix may stand for the site's own private servers.
        assert_eq!(check(&none, nsp, "[2001:db8:64::a00:5]:21"), Ok("10.0.0.5:21".parse().unwrap()));

        // The well-known prefix, configured or not: never a non-global IPv4 address.
        for wkp in [None, Some("64:ff9b::/96")] {
            assert_eq!(
                check(&none, wkp, "[64:ff9b::7f00:1]:21"),
                Err((Category::Loopback, Some(Ipv4Addr::LOCALHOST))),
                "{wkp:?}"
            );
            let private = Ipv4Addr::new(10, 0, 0, 5);
            assert_eq!(check(&none, wkp, "[64:ff9b::a00:5]:21"), Err((Category::Nat64NonGlobal, Some(private))));
            let doc = Ipv4Addr::new(198, 51, 100, 2);
            assert_eq!(check(&none, wkp, "[64:ff9b::c633:6402]:21"), Err((Category::Nat64NonGlobal, Some(doc))));
            assert_eq!(check(&none, wkp, "[64:ff9b::c000:9]:21").map(|_| ()), Ok(()), "192.0.0.9 is global");
        }
        assert_eq!(check(&none, None, "[64:ff9b::808:808]:21"), Ok("[64:ff9b::808:808]:21".parse().unwrap()));
        assert_eq!(check(&none, Some("64:ff9b::/96"), "[64:ff9b::808:808]:21"), Ok("8.8.8.8:21".parse().unwrap()));

        let refusal = DestinationRefusal {
            dst: OriginalDst("[2001:db8:64::7f00:1]:21".parse().unwrap()),
            category: Category::Loopback,
            embedded: Some(Ipv4Addr::LOCALHOST),
        };
        assert_eq!(
            refusal.to_string(),
            "Destination [2001:db8:64::7f00:1]:21 refused by gateway policy (loopback: 127.0.0.1 through NAT64)"
        );
    }

    #[test]
    fn deny_wins_and_a_non_empty_allow_limits() {
        let deny = ServerNets { allow: vec![], deny: nets(&["198.51.100.0/24"]) };
        assert_eq!(check(&deny, None, "198.51.100.2:21"), Err((Category::Denied, None)));
        assert!(check(&deny, None, "[2001:db8:2::2]:21").is_ok());

        let allow = ServerNets { allow: nets(&["198.51.100.2/32"]), deny: vec![] };
        assert_eq!(check(&allow, None, "198.51.100.2:21"), Ok("198.51.100.2:21".parse().unwrap()));
        assert_eq!(check(&allow, None, "198.51.100.3:21"), Err((Category::NotAllowed, None)));
        assert_eq!(check(&allow, None, "[2001:db8:2::2]:21"), Err((Category::NotAllowed, None)));

        let both = ServerNets { allow: nets(&["198.51.100.0/24"]), deny: nets(&["198.51.100.2/32"]) };
        assert_eq!(check(&both, None, "198.51.100.2:21"), Err((Category::Denied, None)));
        assert!(check(&both, None, "198.51.100.3:21").is_ok());

        // An allow list does not reopen what is always refused.
        let everything = ServerNets { allow: nets(&["0.0.0.0/0", "::/0"]), deny: vec![] };
        assert_eq!(check(&everything, None, "127.0.0.1:21"), Err((Category::Loopback, None)));
        assert_eq!(check(&everything, None, "203.0.113.1:21"), Err((Category::Local, None)));

        // Through NAT64, the lists see the IPv4 server as well as the address dialled.
        let nsp = Some("2001:db8:64::/96");
        let via = "[2001:db8:64::c633:6402]:21";
        let server = Some(Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(check(&deny, nsp, via), Err((Category::Denied, server)));
        assert!(check(&allow, nsp, via).is_ok());
        let deny_prefix = ServerNets { allow: vec![], deny: nets(&["2001:db8:64::/96"]) };
        assert_eq!(check(&deny_prefix, nsp, via), Err((Category::Denied, server)));
        let allow_v6 = ServerNets { allow: nets(&["2001:db8:2::/64"]), deny: vec![] };
        assert_eq!(check(&allow_v6, nsp, via), Err((Category::NotAllowed, server)));
    }

    #[test]
    fn global_ipv4_follows_the_special_purpose_registry() {
        for g in ["8.8.8.8", "1.1.1.1", "192.0.0.9", "192.0.0.10", "100.128.0.1", "172.32.0.1", "198.20.0.1"] {
            assert!(is_global_v4(g.parse().unwrap()), "{g}");
        }
        for n in [
            "0.0.0.0",
            "10.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.2",
            "203.0.113.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_global_v4(n.parse().unwrap()), "{n}");
        }
    }
}
