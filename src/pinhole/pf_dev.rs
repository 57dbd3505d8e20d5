//! The BSDs: pinholes as pf anchors, loaded through `/dev/pf`, the way OpenBSD's ftp-proxy
//! does it: each pinhole's rules go into an anchor of its own under `ftpgate/`, replaced in
//! one transaction (`DIOCXBEGIN`, the rules, `DIOCXCOMMIT`; `DIOCXROLLBACK` when any step
//! fails). Removing a pinhole commits its anchor empty. This module keeps the books; how the
//! rules look and are added is the [`Device`]'s: FreeBSD's nvlists (`pf_nv`, `pf_rules`)
//! or OpenBSD's `struct pfioc_rule` (`pf_obsd`).
//!
//! pf rules have no timeout of their own: a thread of this module removes each anchor at its
//! deadline (the states pf made go on without the rules). A pinhole is used once its
//! `pass in` rule has created a state (its `states_tot`). Its rules
//! stay until the deadline, as a used Linux pinhole's elements do: taking them away at once
//! could catch the first packet between its inbound and outbound passes (the nat and the
//! `pass out` are met on the way out), and while they stay, `max 1` turns a second
//! connection away (the first's state lives on after it closes, for pf's TCP timeouts).

use super::pf_rules;
use super::{Pinhole, PinholeError, Ticket};
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A pinhole's rules in the form one pf takes them, from its pure rule builder.
pub trait Rules: Default {
    /// The rules that let exactly one connection through `p`, translated both ways.
    fn pinhole(p: &Pinhole) -> Self;
    /// What replaces a used pinhole that is cut: each further packet of it is reset.
    fn cut(p: &Pinhole) -> Self;
    /// ftpgate's own connection from `local_port` to `to` leaves from `appear_as` (and
    /// `as_port`, else `local_port` kept).
    fn source_nat(local_port: u16, to: SocketAddr, appear_as: IpAddr, as_port: Option<u16>) -> Self;
}

/// What this module asks of pf: one anchor's transaction and what it reads back (FreeBSD:
/// nvlist rules, `pf_nv`; OpenBSD: `struct pfioc_rule`, `pf_obsd`). Tests put a recording
/// fake in its place.
pub trait Device: Send + Sync + 'static {
    /// The tickets of one anchor's transaction, one per ruleset it replaces.
    type Tickets: Copy + Send + 'static;
    type Rules: Rules;

    /// `DIOCXBEGIN` for the rulesets of `anchor`: their tickets.
    fn begin(&self, anchor: &str) -> io::Result<Self::Tickets>;
    fn commit(&self, anchor: &str, tickets: Self::Tickets) -> io::Result<()>;
    fn rollback(&self, anchor: &str, tickets: Self::Tickets) -> io::Result<()>;
    /// Adds `rules` to the open transaction `tickets` of `anchor`.
    fn add_rules(&self, anchor: &str, rules: &Self::Rules, tickets: Self::Tickets) -> io::Result<()>;
    /// How many states the first filter rule of `anchor` (the peer's `pass in`) has created;
    /// `tickets` are those of the transaction that committed it. `None`: pf did not say.
    fn states_created(&self, anchor: &str, tickets: Self::Tickets) -> io::Result<Option<u64>>;
    /// Removes the states of a used pinhole's connection, both legs; every leg is tried.
    fn kill_states(&self, p: &Pinhole) -> io::Result<()>;
}

/// The process's handle on pf's pinhole anchors.
pub struct PfPinholes<D: Device> {
    inner: Arc<Inner<D>>,
    expiries: Mutex<mpsc::Sender<Expiry>>,
}

struct Inner<D: Device> {
    dev: D,
    pid: u32,
    state: Mutex<State<D::Tickets>>,
}

struct State<T> {
    next: u64,
    installed: HashMap<Pinhole, Installed<T>>,
}

#[derive(Clone, Copy)]
struct Installed<T> {
    n: u64,
    /// The tickets the transaction committed (pf's rule queries may need them); `None` once
    /// nothing is to be asked: the pinhole was used, cut, or is a translation.
    tickets: Option<T>,
}

/// An anchor to take away at `at`, unless a later installation took its place.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Expiry {
    at: std::cmp::Reverse<Instant>,
    n: u64,
    pinhole: PinholeKey,
}

/// `Pinhole` in the heap: only `at` and `n` order it.
#[derive(PartialEq, Eq)]
struct PinholeKey(Pinhole);

impl PartialOrd for PinholeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PinholeKey {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<D: Device> PfPinholes<D> {
    /// Starts the thread that removes anchors at their deadlines; the device was checked.
    pub(super) fn start(dev: D, pid: u32) -> Result<Self, PinholeError> {
        let inner = Arc::new(Inner { dev, pid, state: Mutex::new(State { next: 1, installed: HashMap::new() }) });
        let (tx, rx) = mpsc::channel();
        let reaper = inner.clone();
        std::thread::Builder::new().name("ftpgate-pf-expiry".into()).spawn(move || reaper.expire(rx)).map_err(
            |source| PinholeError::Setup { what: "cannot start the pinhole expiry thread", source, hint: "" },
        )?;
        Ok(Self { inner, expiries: Mutex::new(tx) })
    }

    /// Loads a pinhole's rules; `timeout` after, ftpgate removes them (pf would not).
    pub async fn install(&self, p: Pinhole, timeout: Duration) -> Result<Ticket, PinholeError> {
        if !p.is_consistent() {
            return Err(PinholeError::MixedFamilies);
        }
        let n = self.inner.replace(p, &D::Rules::pinhole(&p), true)?;
        self.expire_at(p, n, timeout);
        Ok(Ticket(n))
    }

    /// Makes ftpgate's own connection from `local_port` to `to` leave the firewall from
    /// `appear_as` (transparent active mode on the relay path), for `timeout`: long enough to
    /// connect; the connection's state keeps the translation after the rule goes.
    pub fn translate_source(
        &self,
        local_port: u16,
        to: SocketAddr,
        appear_as: SocketAddr,
        timeout: Duration,
    ) -> Result<(), PinholeError> {
        if to.is_ipv6() != appear_as.is_ipv6() {
            return Err(PinholeError::MixedFamilies);
        }
        let as_port = (appear_as.port() != 0).then_some(appear_as.port());
        // Keyed like a pinhole for replacement and expiry; no `armed()` asks about it.
        let any = if to.is_ipv6() { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) };
        let key = Pinhole {
            peer: any,
            dialled: SocketAddr::new(any, local_port),
            target: to,
            source: appear_as.ip(),
            source_port: as_port,
        };
        let n = self.inner.replace(key, &D::Rules::source_nat(local_port, to, appear_as.ip(), as_port), false)?;
        self.expire_at(key, n, timeout);
        Ok(())
    }

    /// Whether the pinhole still waits for its connection: false once its `pass in` rule
    /// made a state, or once the pinhole is gone.
    /// An installation replaced by a later one with the same key was used (it is replaced only
    /// then).
    pub async fn armed(&self, p: Pinhole, install: Ticket) -> Result<bool, PinholeError> {
        let mut st = self.inner.lock();
        let Some(Installed { n, tickets: Some(tickets) }) = st.installed.get(&p).copied() else {
            return Ok(false);
        };
        if n != install.0 {
            return Ok(false);
        }
        let anchor = pf_rules::anchor_path(self.inner.pid, n);
        let made = self
            .inner
            .dev
            .states_created(&anchor, tickets)
            .map_err(PinholeError::Install)?
            .ok_or(PinholeError::Gone("pf's rule answer has no state count"))?;
        if made == 0 {
            return Ok(true);
        }
        if let Some(i) = st.installed.get_mut(&p) {
            i.tickets = None;
        }
        Ok(false)
    }

    /// Cuts the connection that used pinhole `p`: its states go, and for `timeout` each
    /// further packet of it, either way, is answered with a reset.
    pub fn cut(&self, p: Pinhole, timeout: Duration) {
        let n = match self.inner.replace(p, &D::Rules::cut(&p), false) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, ?p, "data connection not cut: pf refused the reset rules");
                None
            }
        };
        if let Err(e) = self.inner.dev.kill_states(&p) {
            tracing::warn!(error = %e, ?p, "pf refused to remove the data connection's states");
        }
        if let Some(n) = n {
            self.expire_at(p, n, timeout);
        }
    }

    /// pf keeps no count of connections its pinholes turned away, so the kernel path's
    /// counters are Linux's only (`crate::pinhole::COUNTERS`).
    pub async fn counters(&self) -> Result<[u64; 2], PinholeError> {
        Err(PinholeError::Gone("pf keeps no pinhole counters"))
    }

    /// pf's states are not read for byte counts: a kernel-path transfer's counts are unknown
    /// there, and said so.
    pub fn counting(&self) -> bool {
        false
    }

    pub async fn find_flow(&self, _: Pinhole) -> Result<Option<super::Found>, PinholeError> {
        Err(PinholeError::Unsupported)
    }

    pub async fn read_flow(
        &self,
        _: std::net::SocketAddr,
        _: std::net::SocketAddr,
    ) -> Result<Option<super::Flow>, PinholeError> {
        Err(PinholeError::Unsupported)
    }

    /// Takes installation `install` of a pinhole away (its data channel was dropped); what is
    /// already gone, or was replaced by a later installation with its key, is left alone.
    pub fn remove(&self, p: Pinhole, install: Ticket) {
        let mut st = self.inner.lock();
        if st.installed.get(&p).is_some_and(|i| i.n == install.0) {
            if let Some(i) = st.installed.remove(&p) {
                self.inner.clear(i.n);
            }
        }
    }

    fn remove_any(&self, p: Pinhole) {
        let mut st = self.inner.lock();
        if let Some(i) = st.installed.remove(&p) {
            self.inner.clear(i.n);
        }
    }

    fn expire_at(&self, p: Pinhole, n: u64, after: Duration) {
        let e = Expiry { at: std::cmp::Reverse(Instant::now() + after), n, pinhole: PinholeKey(p) };
        let tx = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
        if tx.send(e).is_err() {
            tracing::warn!(?p, "the pinhole expiry thread stopped; removing the pinhole now");
            drop(tx);
            self.remove_any(p);
        }
    }
}

impl<D: Device> Drop for PfPinholes<D> {
    /// Leaves no anchor behind: the states of connections in progress go on without them.
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        for (_, i) in st.installed.drain() {
            self.inner.clear(i.n);
        }
    }
}

impl<D: Device> Inner<D> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<D::Tickets>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads `rules` for key `p` into a new anchor, then takes away the anchor `p` had (a
    /// pinhole whose port was handed out again, or one being cut): its deadline, still in the
    /// heap, then finds another number and does nothing. Returns the new anchor's number.
    fn replace(&self, p: Pinhole, rules: &D::Rules, ask: bool) -> Result<u64, PinholeError> {
        let mut st = self.lock();
        let n = st.next;
        st.next += 1;
        let tickets = self.load(n, rules).map_err(PinholeError::Install)?;
        if let Some(old) = st.installed.insert(p, Installed { n, tickets: ask.then_some(tickets) }) {
            self.clear(old.n);
        }
        Ok(n)
    }

    /// Replaces anchor `n`'s rules with `rules` in one transaction; returns its tickets,
    /// which the committed rules carry. Any refusal rolls it all back.
    fn load(&self, n: u64, rules: &D::Rules) -> io::Result<D::Tickets> {
        let anchor = pf_rules::anchor_path(self.pid, n);
        let tickets = self.dev.begin(&anchor)?;
        match self.dev.add_rules(&anchor, rules, tickets).and_then(|()| self.dev.commit(&anchor, tickets)) {
            Ok(()) => Ok(tickets),
            Err(e) => {
                if let Err(r) = self.dev.rollback(&anchor, tickets) {
                    tracing::warn!(error = %r, anchor, "pf transaction not rolled back");
                }
                Err(e)
            }
        }
    }

    /// Empties anchor `n` (pf drops an anchor left empty).
    fn clear(&self, n: u64) {
        if let Err(e) = self.load(n, &D::Rules::default()) {
            tracing::warn!(error = %e, anchor = pf_rules::anchor_path(self.pid, n), "pinhole anchor not removed");
        }
    }

    /// Removes anchors at their deadlines until the handle is dropped.
    fn expire(&self, rx: mpsc::Receiver<Expiry>) {
        let mut due: BinaryHeap<Expiry> = BinaryHeap::new();
        loop {
            let wait = due.peek().map(|e| e.at.0.saturating_duration_since(Instant::now()));
            let got = match wait {
                Some(w) => rx.recv_timeout(w),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(e) => due.push(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            while due.peek().is_some_and(|e| e.at.0 <= now) {
                let Some(e) = due.pop() else { break };
                let mut st = self.lock();
                // Only the installation this deadline was set for: a later one of the same
                // pinhole has its own.
                if st.installed.get(&e.pinhole.0).is_some_and(|i| i.n == e.n) {
                    st.installed.remove(&e.pinhole.0);
                    self.clear(e.n);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "pf_dev_tests.rs"]
mod tests;
