//! The process's netlink socket to the kernel's netfilter and what the writer thread does with
//! it: nf_tables transactions for the pinhole sets, reads of set elements and counters. Every
//! answer is read through one reader ([`Conn::read`]) over one datagram walk.

use super::netlink::{messages, Msg};
use super::nft::{self, Element};
use netlink_sys::Socket;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Connections cut and remembered at most (their kill elements expire in the kernel anyway).
const MAX_CUTS: usize = 4096;
/// Gate keys whose latest installation is remembered at most (one per pinhole alive).
const MAX_LATEST: usize = 65_536;
/// The largest datagram the kernel sends on this socket (a dump's part is at most 32 KiB).
const DATAGRAM: usize = 64 * 1024;

/// Source ports recorded by gates, by gate key: written by the writer (which reads them from the
/// kernel when it sees a pinhole used), taken by the counter (which looks the connection up).
pub(super) type Ports = std::sync::Arc<std::sync::Mutex<HashMap<Vec<u8>, (u16, Instant)>>>;

/// One installation waiting for the writer.
pub(super) struct Install {
    pub elements: [Element; 3],
    pub guard: Element,
    pub timeout: Duration,
    pub done: oneshot::Sender<io::Result<()>>,
    /// Stale elements of a used pinhole were taken away for it already.
    pub replaced: bool,
    /// The translation elements of a used pinhole with the same key (the server handed the
    /// port out again) are there: they are written again in place (same data, a new
    /// timeout) rather than deleted first, since a deletion is a slow commit.
    pub renew: bool,
    /// Which installation this is ([`super::Ticket`]).
    pub ticket: u64,
}

pub(super) struct Conn {
    pub sock: Socket,
    pub seq: u32,
    /// Kill elements written and when they expire: a new pinhole with the same key (a port
    /// handed out again) must not be reset.
    pub cuts: HashMap<Element, Instant>,
    /// Conntrack entries already attributed to a pinhole, by id, and when: a later pinhole
    /// with the same key must not take an earlier connection's entry for its own.
    pub claimed: HashMap<u32, Instant>,
    /// Source ports of connections that passed a gate, by the gate's key, until their
    /// conntrack entry is looked up.
    pub ports: Ports,
    /// Elements to delete, written together as one transaction ([`Conn::flush_deletes`]):
    /// every nf_tables transaction waits for the kernel's commit (milliseconds under load),
    /// so one per element would hold up the installations queued behind it.
    pub deletes: Vec<Element>,
    /// The latest installation of each gate key, until it expires: a check of an earlier
    /// one with that key (re-armed after it was used) answers "used" without asking.
    pub latest: HashMap<Vec<u8>, (u64, Instant)>,
}

impl Conn {
    pub fn new(sock: Socket, ports: Ports) -> Self {
        let (cuts, claimed, latest) = (HashMap::new(), HashMap::new(), HashMap::new());
        Self { sock, seq: 1, cuts, claimed, ports, deletes: Vec::new(), latest }
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        self.sock.send(buf, 0).map(|_| ())
    }

    /// Reads at most `reads` datagrams, handing each message to `each` until it returns a
    /// result; a socket error, a malformed datagram or running out of reads end it too.
    pub fn read<T>(&self, reads: usize, mut each: impl FnMut(Msg<'_>) -> io::Result<Option<T>>) -> io::Result<T> {
        let mut buf: Vec<u8> = Vec::with_capacity(DATAGRAM);
        for _ in 0..reads {
            buf.clear();
            self.sock.recv(&mut buf, 0)?;
            for msg in messages(&buf) {
                if let Some(done) = each(msg?)? {
                    return Ok(done);
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer every request"))
    }

    /// Reads until every sequence number in `want` is answered by an acknowledgement or an
    /// error; a data message before the acknowledgement marks it `true` (an element found).
    pub fn replies(&self, want: &[u32]) -> io::Result<HashMap<u32, io::Result<bool>>> {
        let mut got: HashMap<u32, io::Result<bool>> = HashMap::new();
        let mut found: Vec<u32> = Vec::new();
        if want.is_empty() {
            return Ok(got);
        }
        // Each datagram answers at least one request; a bounded number of reads then.
        self.read(want.len() * 4 + 4, |msg| {
            match msg.status() {
                // An error for a message not asked about (the batch's frame: the kernel
                // refused the whole transaction, e.g. without CAP_NET_ADMIN) answers all.
                Some(Err(e)) if !want.contains(&msg.seq) => return Err(e),
                Some(r) => {
                    got.insert(msg.seq, r.map(|()| found.contains(&msg.seq)));
                }
                None if msg.is_done() => {}
                None => found.push(msg.seq),
            }
            Ok(want.iter().all(|s| got.contains_key(s)).then(|| std::mem::take(&mut got)))
        })
    }

    /// Writes `elements` of each installation as one transaction. When the kernel refuses one,
    /// the whole transaction was undone: that one is answered with its error and the rest are
    /// written again, so one bad request never fails the others.
    ///
    /// A used pinhole's translation elements outlive its gate (they turn away a second
    /// connection until they expire); a server that hands out the same data port again meets
    /// them. Such an installation replaces them, once; while the old gate is still armed, the
    /// key is taken and the installation fails.
    pub fn install_all(&mut self, mut pending: Vec<Install>) {
        let now = Instant::now();
        self.cuts.retain(|_, until| *until > now);
        for inst in &pending {
            let kill = Element { set: kill_set(inst.elements[0].set), ..inst.elements[0].clone() };
            if self.cuts.remove(&kill).is_some() {
                self.delete_one(&kill);
            }
        }
        for inst in &mut pending {
            // A key installed before whose installation has not expired: its translation
            // elements are most likely still there. Written in place from the start, they spare
            // the kernel a transaction it would refuse (EEXIST) and undo, which costs a slow
            // commit: 6 ms of the writer's time here, per pinhole, whenever a server hands
            // its data ports out again within their lifetime. Where they are gone after all,
            // writing in place makes them anew.
            if !inst.replaced && self.latest.get(&inst.elements[0].key).is_some_and(|(_, until)| *until > now) {
                inst.renew = true;
            }
        }
        while !pending.is_empty() {
            let first = self.next_seq();
            let mut msgs = Vec::new();
            let mut owner = HashMap::new();
            for (i, inst) in pending.iter().enumerate() {
                for (n, e) in inst.elements.iter().enumerate() {
                    let seq = self.next_seq();
                    owner.insert(seq, i);
                    // The gate is always new: an armed one means the key is taken.
                    let renew = inst.renew && n > 0;
                    msgs.push(if renew {
                        nft::add_shared(e, inst.timeout, seq)
                    } else {
                        nft::add(e, inst.timeout, seq)
                    });
                }
                let seq = self.next_seq();
                owner.insert(seq, i);
                msgs.push(nft::add_shared(&inst.guard, inst.timeout, seq));
            }
            let seqs: Vec<u32> = owner.keys().copied().collect();
            let last = self.next_seq();
            let result = self.send(&nft::batch(msgs, first, last)).and_then(|()| self.replies(&seqs));
            let replies = match result {
                Ok(r) => r,
                Err(e) => {
                    for inst in pending.drain(..) {
                        let _ = inst.done.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                    return;
                }
            };
            let mut failed: Vec<(usize, io::Error)> = Vec::new();
            for (seq, r) in replies {
                if let (Err(e), Some(&i)) = (r, owner.get(&seq)) {
                    if !failed.iter().any(|(j, _)| *j == i) {
                        failed.push((i, e));
                    }
                }
            }
            if failed.is_empty() {
                let mut again = Vec::new();
                for mut inst in pending.drain(..) {
                    if inst.renew && !self.renewed(&inst) {
                        // A kernel that keeps an element's old expiry when it is written again
                        // (before Linux 6.10 or so): delete and write them anew after all.
                        self.remove(&inst.elements);
                        self.flush_deletes();
                        (inst.renew, inst.replaced) = (false, true);
                        again.push(inst);
                    } else {
                        self.note_latest(&inst);
                        let _ = inst.done.send(Ok(()));
                    }
                }
                if again.is_empty() {
                    return;
                }
                pending = again;
                continue;
            }
            failed.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
            for (i, e) in failed {
                let mut inst = pending.remove(i);
                let stale = e.raw_os_error() == Some(libc::EEXIST) && !inst.replaced;
                if stale && matches!(self.armed(&inst.elements[0]), Ok(false)) {
                    if inst.renew {
                        // Other data than the pinhole's (an active port handed to another
                        // client): the old elements go first.
                        self.remove(&inst.elements);
                        self.flush_deletes();
                        (inst.renew, inst.replaced) = (false, true);
                    } else {
                        inst.renew = true;
                    }
                    pending.push(inst);
                } else {
                    let _ = inst.done.send(Err(e));
                }
            }
        }
    }

    /// Deletes a pinhole's elements (with the others waiting, see [`Conn::flush_deletes`]).
    pub fn remove(&mut self, elements: &[Element; 3]) {
        self.deletes.extend(elements.iter().cloned());
    }

    /// Writes every deletion waiting as one transaction. An element already gone (used,
    /// expired) fails its deletion and so undoes the transaction: it is dropped from the list
    /// and the rest are written again, so each round takes one element off at least.
    pub fn flush_deletes(&mut self) {
        let mut pending = std::mem::take(&mut self.deletes);
        while !pending.is_empty() {
            let first = self.next_seq();
            let mut msgs = Vec::with_capacity(pending.len());
            let mut seqs = Vec::with_capacity(pending.len());
            for e in &pending {
                let seq = self.next_seq();
                seqs.push(seq);
                msgs.push(nft::delete(e, seq));
            }
            let last = self.next_seq();
            let replies = match self.send(&nft::batch(msgs, first, last)).and_then(|()| self.replies(&seqs)) {
                Ok(r) => r,
                Err(e) => return tracing::warn!(error = %e, "removing pinhole elements failed"),
            };
            let before = pending.len();
            let mut i = 0;
            pending.retain(|_| {
                let r = replies.get(&seqs[i]);
                i += 1;
                match r {
                    Some(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => false,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "removing a pinhole element failed");
                        false
                    }
                    _ => true,
                }
            });
            if pending.len() == before {
                // No deletion failed: the transaction was committed.
                return;
            }
        }
    }

    pub fn delete_one(&mut self, e: &Element) {
        let (first, seq, last) = (self.next_seq(), self.next_seq(), self.next_seq());
        let r = self.send(&nft::batch(vec![nft::delete(e, seq)], first, last)).and_then(|()| self.replies(&[seq]));
        match r.map(|mut m| m.remove(&seq)) {
            Ok(Some(Err(e))) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Ok(Some(Err(e))) | Err(e) => tracing::warn!(error = %e, "removing a pinhole element failed"),
            Ok(_) => {}
        }
    }

    /// The packet count of one of the table's named counters.
    pub fn counter(&mut self, name: &str) -> io::Result<u64> {
        let seq = self.next_seq();
        self.send(&nft::serialize(&[nft::get_counter(name, seq)]))?;
        let mut packets = None;
        // The object, then the acknowledgement: a few datagrams at most.
        self.read(4, |msg| {
            if msg.seq != seq {
                return Ok(None);
            }
            match msg.status() {
                Some(Err(e)) => Err(e),
                Some(Ok(())) => packets
                    .map(Some)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no counter in the reply")),
                None => {
                    if !msg.is_done() {
                        packets = packets.or(nft::counter_packets(msg.payload()));
                    }
                    Ok(None)
                }
            }
        })
    }

    /// Writes a kill element (or renews one already there).
    pub fn cut(&mut self, kill: Element, timeout: Duration) {
        let (first, seq, last) = (self.next_seq(), self.next_seq(), self.next_seq());
        let msg = nft::add_shared(&kill, timeout, seq);
        let r = self.send(&nft::batch(vec![msg], first, last)).and_then(|()| self.replies(&[seq]));
        match r.map(|mut m| m.remove(&seq)) {
            Ok(Some(Err(e))) | Err(e) => tracing::warn!(error = %e, "cutting a kernel data connection failed"),
            Ok(_) => {
                if self.cuts.len() < MAX_CUTS {
                    self.cuts.insert(kill, Instant::now() + timeout);
                }
            }
        }
    }

    /// Sends one request and reads its answer: what `parse` finds in it, `None` when the
    /// kernel answers that the object is not there (ENOENT).
    pub fn query<T>(
        &mut self,
        request: &[u8],
        seq: u32,
        parse: impl Fn(&Msg<'_>) -> Option<T>,
    ) -> io::Result<Option<T>> {
        self.send(request)?;
        let mut found = None;
        self.read(4, |msg| {
            if msg.seq != seq {
                return Ok(None);
            }
            match msg.status() {
                Some(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Some(None)),
                Some(Err(e)) => Err(e),
                Some(Ok(())) => Ok(Some(found.take())),
                None => {
                    if found.is_none() {
                        found = parse(&msg);
                    }
                    Ok(None)
                }
            }
        })
    }

    /// Reads the port element a used gate left: `None` when there is none. Not deleted: it
    /// expires within seconds, and a stale one is recognised by its conntrack entry.
    pub fn take_port(&mut self, port: &Element) -> io::Result<Option<u16>> {
        let seq = self.next_seq();
        self.query(&nft::serialize(&[nft::get(port, seq)]), seq, |m| nft::element_port(m.payload()))
    }

    fn note_latest(&mut self, inst: &Install) {
        let now = Instant::now();
        if self.latest.len() >= MAX_LATEST {
            self.latest.retain(|_, (_, until)| *until > now);
        }
        if self.latest.len() < MAX_LATEST {
            self.latest.insert(inst.elements[0].key.clone(), (inst.ticket, now + inst.timeout));
        }
    }

    /// Whether installation `ticket` of `gate`'s key was followed by another one with its key,
    /// which happens only once its gate was used.
    pub fn superseded(&self, gate: &Element, ticket: u64) -> bool {
        self.latest.get(&gate.key).is_some_and(|(latest, _)| *latest != ticket)
    }

    /// Whether a renewed installation's translation element now lives as long as asked.
    fn renewed(&mut self, inst: &Install) -> bool {
        match self.expires_in(&inst.elements[1]) {
            Ok(Some(left)) => left + Duration::from_secs(1) >= inst.timeout,
            Ok(None) | Err(_) => false,
        }
    }

    /// How long an element has left: `None` when it is gone or has no timeout.
    pub fn expires_in(&mut self, e: &Element) -> io::Result<Option<Duration>> {
        let seq = self.next_seq();
        self.query(&nft::serialize(&[nft::get(e, seq)]), seq, |m| nft::element_expiration(m.payload()))
    }

    pub fn armed(&mut self, gate: &Element) -> io::Result<bool> {
        let seq = self.next_seq();
        self.send(&nft::serialize(&[nft::get(gate, seq)]))?;
        match self.replies(&[seq])?.remove(&seq) {
            Some(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Some(r) => r,
            None => Ok(false),
        }
    }
}

/// The kill set of a gate's family.
fn kill_set(gate_set: &str) -> &'static str {
    if gate_set.ends_with('6') {
        "kill6"
    } else {
        "kill4"
    }
}
