//! The gateway's open passive endpoints, by client and port, for site-to-site (FXP) transfers.
//!
//! In FXP a client hands the address one server's 227 gave it to another server in PORT. Through
//! ftpgate that address is ftpgate's own passive endpoint, which only the client may connect
//! to. So when an allowlisted PORT names such an endpoint of the same client, the second
//! session dials the first server's real data port instead, and the first session's listener is
//! told to stand down: its client will never come.

use crate::addr::canonical_ip;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

struct Entry {
    id: u64,
    /// The addresses the client may know this endpoint by (advertised, original destination).
    names: [IpAddr; 2],
    server_data: SocketAddr,
    hand_over: oneshot::Sender<()>,
}

#[derive(Default, Clone)]
pub struct PassiveIndex {
    entries: Arc<Mutex<HashMap<(IpAddr, u16), Entry>>>,
    next: Arc<AtomicU64>,
}

/// Removes its endpoint from the index when the channel ends.
pub struct Registration {
    index: PassiveIndex,
    key: (IpAddr, u16),
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.index.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.key).is_some_and(|e| e.id == self.id) {
            map.remove(&self.key);
        }
    }
}

impl PassiveIndex {
    /// Records a passive endpoint; the receiver fires if an FXP transfer takes it over.
    pub fn register(
        &self,
        client: IpAddr,
        port: u16,
        names: [IpAddr; 2],
        server_data: SocketAddr,
    ) -> (Registration, oneshot::Receiver<()>) {
        let (hand_over, rx) = oneshot::channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let key = (canonical_ip(client), port);
        let names = names.map(canonical_ip);
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key, Entry { id, names, server_data, hand_over });
        (Registration { index: self.clone(), key, id }, rx)
    }

    /// The server data port behind `named` if it is an open passive endpoint of `client`; the
    /// endpoint's own channel is told to stand down.
    pub fn claim(&self, client: IpAddr, named: SocketAddr) -> Option<SocketAddr> {
        let key = (canonical_ip(client), named.port());
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !map.get(&key)?.names.contains(&canonical_ip(named.ip())) {
            return None;
        }
        let entry = map.remove(&key)?;
        let _ = entry.hand_over.send(());
        Some(entry.server_data)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_client_claims_by_a_known_name_and_the_owner_is_told() {
        let index = PassiveIndex::default();
        let client: IpAddr = "203.0.113.2".parse().unwrap();
        let names = ["198.51.100.2".parse().unwrap(), "198.51.100.2".parse().unwrap()];
        let server_data: SocketAddr = "198.51.100.2:40000".parse().unwrap();
        let (reg, mut rx) = index.register(client, 50001, names, server_data);
        // Another client, another name, another port: nothing.
        assert_eq!(index.claim("203.0.113.3".parse().unwrap(), "198.51.100.2:50001".parse().unwrap()), None);
        assert_eq!(index.claim(client, "198.51.100.9:50001".parse().unwrap()), None);
        assert_eq!(index.claim(client, "198.51.100.2:50002".parse().unwrap()), None);
        assert!(rx.try_recv().is_err());
        assert_eq!(index.claim(client, "198.51.100.2:50001".parse().unwrap()), Some(server_data));
        assert!(rx.try_recv().is_ok());
        // Claimed once only; the registration's drop finds nothing left to remove.
        assert_eq!(index.claim(client, "198.51.100.2:50001".parse().unwrap()), None);
        drop(reg);
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn a_stale_registration_does_not_remove_its_successor() {
        let index = PassiveIndex::default();
        let client: IpAddr = "203.0.113.2".parse().unwrap();
        let names = ["198.51.100.2".parse().unwrap(); 2];
        let (old, _rx) = index.register(client, 50001, names, "198.51.100.2:40000".parse().unwrap());
        let (_new, _rx2) = index.register(client, 50001, names, "198.51.100.2:40001".parse().unwrap());
        drop(old);
        assert_eq!(index.len(), 1);
    }
}
