//! The firewall's own addresses, read from its interfaces and kept for a moment: addresses come
//! and go (DHCP, VPN tunnels, failover addresses), so they are read again after a second rather
//! than once at start-up, and a burst of connections still costs one read.

use super::destination::LocalAddrs;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a reading of the interfaces stands for them.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// Process-wide: every configuration generation shares it.
#[derive(Debug, Default)]
pub struct LocalAddresses {
    last: Mutex<Option<(Instant, Arc<LocalAddrs>)>>,
}

impl LocalAddresses {
    /// The addresses as of at most [`FRESH_FOR`] ago.
    pub fn current(&self) -> io::Result<Arc<LocalAddrs>> {
        self.current_at(Instant::now(), read)
    }

    fn current_at(&self, now: Instant, read: impl FnOnce() -> io::Result<LocalAddrs>) -> io::Result<Arc<LocalAddrs>> {
        // Held while reading, so that a burst of connections waits for one reading (a netlink
        // dump, well under a millisecond) instead of making one each.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addrs)) = last.as_ref() {
            if now.saturating_duration_since(*at) < FRESH_FOR {
                return Ok(addrs.clone());
            }
        }
        let fresh = Arc::new(read()?);
        *last = Some((now, fresh.clone()));
        Ok(fresh)
    }
}

/// Every address of every interface, and the broadcast addresses of their networks.
fn read() -> io::Result<LocalAddrs> {
    let mut addrs = Vec::new();
    let mut broadcasts = Vec::new();
    for i in getifaddrs()? {
        addrs.extend(i.address.as_ref().and_then(ip_of));
        if i.flags.contains(InterfaceFlags::IFF_BROADCAST) {
            broadcasts.extend(i.broadcast.as_ref().and_then(ip_of));
        }
    }
    Ok(LocalAddrs::new(addrs, broadcasts))
}

fn ip_of(sa: &SockaddrStorage) -> Option<IpAddr> {
    match sa.family()? {
        nix::sys::socket::AddressFamily::Inet => sa.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())),
        nix::sys::socket::AddressFamily::Inet6 => sa.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_interfaces_include_loopback() {
        let addrs = LocalAddresses::default().current().unwrap();
        assert!(addrs.contains("127.0.0.1".parse().unwrap()), "{addrs:?}");
    }

    #[test]
    fn a_reading_stands_for_a_second_and_failures_are_not_kept() {
        let cache = LocalAddresses::default();
        let t0 = Instant::now();
        let one = |ip: &'static str| move || Ok(LocalAddrs::new([ip.parse().unwrap()], []));
        let first = cache.current_at(t0, one("198.51.100.1")).unwrap();
        let unread = || -> io::Result<LocalAddrs> { panic!("read again within a second") };
        assert_eq!(cache.current_at(t0 + Duration::from_millis(999), unread).unwrap(), first);
        let gone = || Err(io::Error::from(io::ErrorKind::Other));
        assert!(cache.current_at(t0 + FRESH_FOR, gone).is_err());
        let second = cache.current_at(t0 + FRESH_FOR, one("198.51.100.3")).unwrap();
        assert!(second.contains("198.51.100.3".parse().unwrap()) && !second.contains("198.51.100.1".parse().unwrap()));
    }
}
