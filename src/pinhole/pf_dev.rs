//! FreeBSD: pinholes as pf anchors, loaded through `/dev/pf`, the way OpenBSD's ftp-proxy
//! does it: each pinhole's rules ([`pf_rules`]) go into an anchor of its own under
//! `ftpgate/`, replaced in one transaction (`DIOCXBEGIN`, per rule `DIOCBEGINADDRS` /
//! `DIOCADDADDR` / `DIOCADDRULENV`, `DIOCXCOMMIT`; `DIOCXROLLBACK` when any step fails).
//! Removing a pinhole commits its anchor empty.
//!
//! pf rules have no timeout of their own: a thread of this module removes each anchor at its
//! deadline (the states pf made go on without the rules). A pinhole is used once its
//! `pass in` rule has created a state (`states_tot`, read with `DIOCGETRULENV`). Its rules
//! stay until the deadline, as a used Linux pinhole's elements do: taking them away at once
//! could catch the first packet between its inbound and outbound passes (the nat and the
//! `pass out` are met on the way out), and while they stay, `max 1` turns a second
//! connection away (the first's state lives on after it closes, for pf's TCP timeouts).

use super::pf_ffi as ffi;
use super::pf_rules::{self, Ruleset, PARENT};
use super::{Pinhole, PinholeError};
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Anchors under `ftpgate` looked at when checking that it exists, at most.
const MAX_ANCHORS_LISTED: u32 = 100_000;
/// Room for `DIOCGETRULENV`'s answer (a rule packs to about 3 KiB).
const ANSWER_ROOM: usize = 16 * 1024;

/// The process's handle on pf's pinhole anchors.
pub struct Pinholes {
    inner: Arc<Inner>,
    expiries: Mutex<mpsc::Sender<Expiry>>,
}

struct Inner {
    dev: File,
    pid: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    installed: HashMap<Pinhole, Installed>,
}

#[derive(Clone, Copy)]
struct Installed {
    n: u64,
    /// The filter ruleset's ticket the transaction committed (its rule queries need it);
    /// `None` once nothing is to be asked: the pinhole was used, cut, or is a translation.
    filter_ticket: Option<u32>,
}

/// An anchor to take away at `at`, unless a later installation took its place.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Expiry {
    at: std::cmp::Reverse<Instant>,
    n: u64,
    pinhole: PinholeKey,
}

/// `Pinhole` ordered for the heap (only `n` and `at` matter for the order).
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

impl Pinholes {
    /// Opens `/dev/pf`, checks that the main ruleset has the `ftpgate` anchor the pinholes'
    /// anchors live under and that pf lets this process change it; then starts the thread
    /// that removes anchors at their deadlines.
    pub fn open() -> Result<Self, PinholeError> {
        let dev = std::fs::OpenOptions::new().read(true).write(true).open(ffi::PF_DEV).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => " (is pf loaded? `kldload pf`)",
                io::ErrorKind::PermissionDenied => " (the kernel data path opens /dev/pf for writing: run as root)",
                _ => "",
            };
            PinholeError::Setup { what: "cannot open /dev/pf", source: e, hint }
        })?;
        if !ffi::child_anchors(&dev, "", MAX_ANCHORS_LISTED)
            .map_err(|source| PinholeError::Setup { what: "cannot list pf's anchors", source, hint: "" })?
            .iter()
            .any(|a| a == PARENT)
        {
            return Err(PinholeError::Setup {
                what: "the main pf ruleset does not reference the anchor \"ftpgate\"",
                source: io::Error::from(io::ErrorKind::NotFound),
                hint: " (add nat-anchor \"ftpgate/*\", rdr-anchor \"ftpgate/*\" and anchor \"ftpgate/*\" to \
                       /etc/pf.conf and reload it: see pf-anchors/freebsd-pf.conf)",
            });
        }
        let pid = std::process::id();
        // A transaction opened and rolled back: pf checks the right to change rules here.
        let probe = pf_rules::anchor_path(pid, 0);
        ffi::begin(&dev, &probe, &Ruleset::default()).and_then(|t| ffi::rollback(&dev, &t)).map_err(|e| {
            PinholeError::Setup { what: "pf refuses ftpgate's anchors", source: e, hint: " (run as root)" }
        })?;
        let inner = Arc::new(Inner { dev, pid, state: Mutex::new(State { next: 1, ..State::default() }) });
        let (tx, rx) = mpsc::channel();
        let reaper = inner.clone();
        std::thread::Builder::new().name("ftpgate-pf-expiry".into()).spawn(move || reaper.expire(rx)).map_err(
            |source| PinholeError::Setup { what: "cannot start the pinhole expiry thread", source, hint: "" },
        )?;
        Ok(Self { inner, expiries: Mutex::new(tx) })
    }

    /// Loads a pinhole's rules; `timeout` after, ftpgate removes them (pf would not).
    pub async fn install(&self, p: Pinhole, timeout: Duration) -> Result<(), PinholeError> {
        if !p.is_consistent() {
            return Err(PinholeError::MixedFamilies);
        }
        let n = {
            let mut st = self.inner.lock();
            let n = st.next;
            st.next += 1;
            // A pinhole with the same key replaces the earlier one (its port was handed out
            // again): that anchor goes first.
            if let Some(old) = st.installed.remove(&p) {
                self.inner.clear(old.n);
            }
            let ticket = self.inner.load(n, &pf_rules::pinhole(&p)).map_err(PinholeError::Install)?;
            st.installed.insert(p, Installed { n, filter_ticket: Some(ticket) });
            n
        };
        self.expire_at(p, n, timeout);
        Ok(())
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
        let rules = pf_rules::source_nat(local_port, to, appear_as.ip(), as_port);
        let n = {
            let mut st = self.inner.lock();
            let n = st.next;
            st.next += 1;
            if let Some(old) = st.installed.remove(&key) {
                self.inner.clear(old.n);
            }
            self.inner.load(n, &rules).map_err(PinholeError::Install)?;
            st.installed.insert(key, Installed { n, filter_ticket: None });
            n
        };
        self.expire_at(key, n, timeout);
        Ok(())
    }

    /// Whether the pinhole still waits for its connection: false once its `pass in` rule
    /// made a state, or once the pinhole is gone.
    pub async fn armed(&self, p: Pinhole) -> Result<bool, PinholeError> {
        let mut st = self.inner.lock();
        let Some(Installed { n, filter_ticket: Some(ticket) }) = st.installed.get(&p).copied() else {
            return Ok(false);
        };
        let anchor = pf_rules::anchor_path(self.inner.pid, n);
        let answer = ffi::get_rule(&self.inner.dev, &pf_rules::get_rule(&anchor, ticket, 0), ANSWER_ROOM)
            .map_err(PinholeError::Install)?;
        let made = pf_rules::states_created(&answer)
            .ok_or(PinholeError::Gone("pf's rule answer has no state count (states_tot)"))?;
        if made == 0 {
            return Ok(true);
        }
        if let Some(i) = st.installed.get_mut(&p) {
            i.filter_ticket = None;
        }
        Ok(false)
    }

    /// Cuts the connection that used pinhole `p`: its states go, and for `timeout` each
    /// further packet of it, either way, is answered with a reset.
    pub fn cut(&self, p: Pinhole, timeout: Duration) {
        let n = {
            let mut st = self.inner.lock();
            let n = match st.installed.get(&p) {
                Some(i) => i.n,
                None => {
                    let n = st.next;
                    st.next += 1;
                    n
                }
            };
            if let Err(e) = self.inner.load(n, &pf_rules::cut(&p)) {
                tracing::warn!(error = %e, ?p, "data connection not cut: pf refused the reset rules");
            }
            for kill in pf_rules::kill_states(&p) {
                if let Err(e) = ffi::kill_states(&self.inner.dev, &kill) {
                    tracing::warn!(error = %e, ?p, "pf refused to remove the data connection's states");
                }
            }
            st.installed.insert(p, Installed { n, filter_ticket: None });
            n
        };
        self.expire_at(p, n, timeout);
    }

    /// pf keeps no count of connections its pinholes turned away, so the kernel path's
    /// counters are Linux's only (`crate::pinhole::COUNTERS`).
    pub async fn counters(&self) -> Result<[u64; 2], PinholeError> {
        Err(PinholeError::Gone("pf keeps no pinhole counters"))
    }

    /// Takes a pinhole away (its data channel was dropped); what is already gone is no error.
    pub fn remove(&self, p: Pinhole) {
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
            self.remove(p);
        }
    }
}

impl Drop for Pinholes {
    /// Leaves no anchor behind: the states of connections in progress go on without them.
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        for (_, i) in st.installed.drain() {
            self.inner.clear(i.n);
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces anchor `n`'s rules with `rules` in one transaction; returns the filter
    /// ruleset's ticket, which the committed rules carry.
    fn load(&self, n: u64, rules: &Ruleset) -> io::Result<u32> {
        let anchor = pf_rules::anchor_path(self.pid, n);
        let mut trans = ffi::begin(&self.dev, &anchor, rules)?;
        let added = (|| {
            for (i, (_, part)) in rules.parts().iter().enumerate() {
                let ticket = trans.ticket(i);
                for rule in part.iter() {
                    let pool = ffi::begin_addrs(&self.dev)?;
                    if let Some(ip) = rule.pool_address() {
                        ffi::add_addr(&self.dev, pool, ip)?;
                    }
                    ffi::add_rule(&self.dev, &pf_rules::add_rule(rule, &anchor, ticket, pool))?;
                }
            }
            Ok(())
        })();
        match added.and_then(|()| ffi::commit(&self.dev, &mut trans)) {
            Ok(()) => Ok(trans.ticket(2)),
            Err(e) => {
                if let Err(r) = ffi::rollback(&self.dev, &trans) {
                    tracing::warn!(error = %r, anchor, "pf transaction not rolled back");
                }
                Err(e)
            }
        }
    }

    /// Empties anchor `n` (pf drops an anchor left empty).
    fn clear(&self, n: u64) {
        if let Err(e) = self.load(n, &Ruleset::default()) {
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
