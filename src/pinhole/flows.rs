//! The writer's conntrack reads: which entry is the connection a pinhole let through, and what
//! the kernel counted for it.

use super::conn::Conn;
use super::conntrack;
use super::nft::{self, Element};
use super::{Flow, Found, FoundBy, Pinhole};

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Entries remembered as attributed at most, and for how long: longer than conntrack keeps a
/// closed TCP connection (TIME_WAIT, two minutes by default).
const MAX_CLAIMED: usize = 16 * 1024;
const CLAIM_FOR: Duration = Duration::from_secs(600);
/// Datagrams of one filtered dump read at most (its entries share the pinhole's key: a few).
const DUMP_READS: usize = 64;

/// Of the entries with a pinhole's key not attributed before, the pinhole's own: the only one,
/// or else the only one still open (an older connection with the same key, e.g. a data port the
/// server handed out again, is closed by now). Anything less certain is no answer.
pub fn pick(candidates: &[Flow]) -> Option<Flow> {
    match candidates {
        [only] => Some(*only),
        _ => {
            let mut open = candidates.iter().filter(|f| !f.is_over());
            match (open.next(), open.next()) {
                (Some(f), None) => Some(*f),
                _ => None,
            }
        }
    }
}

impl Conn {
    /// Keeps the source port a used gate's connection left in the port set, for its lookup.
    pub fn keep_port(&mut self, port: &Element) {
        match self.take_port(port) {
            Ok(Some(p)) => {
                let now = Instant::now();
                let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
                ports.retain(|_, (_, at)| now.duration_since(*at) < CLAIM_FOR);
                if ports.len() < MAX_CLAIMED {
                    ports.insert(port.key.clone(), (p, now));
                }
            }
            Ok(None) => tracing::debug!("no source port recorded for a used pinhole"),
            Err(e) => tracing::warn!(error = %e, "reading a used pinhole's source port failed"),
        }
    }

    /// Finds the conntrack entry of the connection that used pinhole `p`: exactly, by the
    /// source port its gate's rule recorded; otherwise (IPv6) by a dump the kernel filters,
    /// asked right after the pinhole was seen used: while its translation element lives, no
    /// other connection with its key gets through, so a new entry with that key is the
    /// pinhole's.
    pub fn find_flow(&mut self, p: &Pinhole) -> io::Result<Option<Found>> {
        let recorded = nft::port(p).and_then(|e| self.ports.lock().unwrap_or_else(|e| e.into_inner()).remove(&e.key));
        if let Some((port, _)) = recorded {
            let flow = self.read_flow(SocketAddr::new(p.peer, port), p.dialled)?;
            // An entry already taken is an earlier connection's (the rule replaces a port left
            // by an earlier connection with the key, but a reuse of the key between this
            // connection's passing and this read leaves the later one's): search.
            if !flow.and_then(|f| f.id).is_some_and(|id| self.claimed.contains_key(&id)) {
                if let Some(id) = flow.and_then(|f| f.id).filter(|_| self.claimed.len() < MAX_CLAIMED) {
                    self.claimed.insert(id, Instant::now());
                }
                return Ok(flow.map(|flow| Found { flow, by: FoundBy::SourcePort }));
            }
        }
        Ok(self.dump_flow(p)?.map(|flow| Found { flow, by: FoundBy::Search }))
    }

    fn dump_flow(&mut self, p: &Pinhole) -> io::Result<Option<Flow>> {
        let seq = self.next_seq();
        self.send(&conntrack::dump(p.peer, p.dialled, seq))?;
        let mut found = Vec::new();
        self.read(DUMP_READS, |msg| {
            if msg.seq != seq {
                return Ok(None);
            }
            match msg.status() {
                Some(Err(e)) => return Err(e),
                Some(Ok(())) => return Ok(Some(())),
                None if msg.is_done() => return Ok(Some(())),
                None => found.extend(conntrack::parse(msg.bytes)),
            }
            Ok(None)
        })?;
        let now = Instant::now();
        self.claimed.retain(|_, at| now.duration_since(*at) < CLAIM_FOR);
        // Exactly the pinhole's key: a filter the kernel does not know would let others through.
        let key = |f: &Flow| f.src.ip() == p.peer && f.dst == p.dialled;
        let fresh: Vec<Flow> =
            found.into_iter().filter(|f| key(f) && f.id.is_none_or(|id| !self.claimed.contains_key(&id))).collect();
        let flow = pick(&fresh);
        if let Some(id) = flow.and_then(|f| f.id) {
            if self.claimed.len() < MAX_CLAIMED {
                self.claimed.insert(id, now);
            }
        }
        Ok(flow)
    }

    /// The entry with this exact original tuple, `None` once the kernel forgot it.
    pub fn read_flow(&mut self, src: SocketAddr, dst: SocketAddr) -> io::Result<Option<Flow>> {
        let seq = self.next_seq();
        self.query(&conntrack::get(src, dst, seq), seq, |m| conntrack::parse(m.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pinhole::Counts;

    fn flow(port: u16, state: u8) -> Flow {
        Flow {
            id: Some(port as u32),
            src: SocketAddr::new("203.0.113.2".parse().unwrap(), port),
            dst: "198.51.100.2:30001".parse().unwrap(),
            tcp_state: Some(state),
            counts: Some([Counts::default(); 2]),
        }
    }

    #[test]
    fn the_pinholes_entry_is_the_only_new_one_or_the_only_open_one() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[flow(1, 7)]), Some(flow(1, 7)));
        // An older connection with the key, closed, beside the pinhole's, still open.
        assert_eq!(pick(&[flow(1, 7), flow(2, 3)]), Some(flow(2, 3)));
        // Both closed or both open: which one is the pinhole's is not known.
        assert_eq!(pick(&[flow(1, 7), flow(2, 8)]), None);
        assert_eq!(pick(&[flow(1, 3), flow(2, 3)]), None);
    }
}
