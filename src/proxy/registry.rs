//! The live control sessions, for the admin API: who is connected where, as which user, how
//! far each is, and the transfer it runs; and the way to end one.
//!
//! A session registers when it is admitted and leaves when it ends, so the registry holds at
//! most `limits.max_sessions` entries. What changes per control event (phase, user, the
//! transfer under way) is published by the driver under a short lock, only when it changed;
//! the data bytes of a running transfer are the channel's own atomic counters
//! ([`ChannelBytes`]), read when someone asks: the relay pays nothing for being watched.

use crate::addr::{ClientAddr, OriginalDst, UpstreamAddr};
use crate::data::channel::ChannelBytes;
use crate::labels::{DataMode, Direction};
use crate::session::{PhaseName, TransferInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// The control connections' protection: which sides speak TLS now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsState {
    /// Clear text on both sides.
    Plain,
    /// TLS with the client only (terminated toward a plain server).
    Client,
    /// TLS with the server only (the gateway secures its own connection).
    Server,
    /// TLS on both sides.
    Both,
}

impl TlsState {
    pub fn of(client: bool, server: bool) -> Self {
        match (client, server) {
            (false, false) => TlsState::Plain,
            (true, false) => TlsState::Client,
            (false, true) => TlsState::Server,
            (true, true) => TlsState::Both,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            TlsState::Plain => "plain",
            TlsState::Client => "client",
            TlsState::Server => "server",
            TlsState::Both => "both",
        }
    }
}

/// Who ended a session through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedBy {
    pub peer: SocketAddr,
    /// The token's name, or what let the request in without one.
    pub identity: String,
}

/// One session as `GET /sessions` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: u64,
    pub client: String,
    /// Where the client was going (intercepted sessions).
    pub original_destination: Option<String>,
    /// The server ftpgate connects to; `None` until it is chosen.
    pub upstream: Option<String>,
    /// The name sent with USER, as the gateway saw it (never the password).
    pub user: Option<String>,
    /// RFC 3339, UTC.
    pub started: String,
    pub age_seconds: u64,
    pub phase: String,
    /// Data bytes each way, finished channels and the running one together.
    pub bytes_to_client: u64,
    pub bytes_to_server: u64,
    pub transfer: Option<TransferView>,
    pub tls: TlsState,
}

/// The transfer a session runs now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferView {
    pub verb: String,
    pub path: String,
    /// `binary` (TYPE I) or `ascii`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The data mode: passive, active, or a conversion between them.
    pub mode: String,
    /// Which way the file goes: `to_client` or `to_server`.
    pub direction: String,
    pub bytes: u64,
    pub seconds: f64,
    /// Average since the data channel opened.
    pub bytes_per_second: u64,
}

/// A transfer under way: the command and its channel's live counters.
struct Running {
    info: TransferInfo,
    mode: DataMode,
    since: Instant,
    bytes: Arc<ChannelBytes>,
}

impl Running {
    fn view(&self) -> TransferView {
        let bytes = match self.info.toward {
            Direction::ToClient => self.bytes.to_client(),
            Direction::ToServer => self.bytes.to_server(),
        };
        let secs = self.since.elapsed().as_secs_f64();
        TransferView {
            verb: self.info.verb.clone(),
            path: self.info.path.clone(),
            kind: if self.info.binary { "binary" } else { "ascii" }.into(),
            mode: self.mode.label().into(),
            direction: self.info.toward.label().into(),
            bytes,
            seconds: (secs * 1000.0).round() / 1000.0,
            bytes_per_second: if secs > 0.0 { (bytes as f64 / secs) as u64 } else { 0 },
        }
    }
}

struct State {
    original: Option<OriginalDst>,
    upstream: Option<UpstreamAddr>,
    user: Option<String>,
    phase: PhaseName,
    /// Data bytes of the session's finished channels.
    to_client: u64,
    to_server: u64,
    running: Option<Running>,
    tls: TlsState,
}

/// One registered session.
pub struct Entry {
    id: u64,
    client: ClientAddr,
    started: SystemTime,
    clock: Instant,
    state: Mutex<State>,
    end: Mutex<Option<oneshot::Sender<EndedBy>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Entry {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the session goes, once that is known.
    pub fn route(&self, original: Option<OriginalDst>, upstream: UpstreamAddr) {
        let mut s = lock(&self.state);
        s.original = original;
        s.upstream = Some(upstream);
    }

    pub fn set_phase(&self, phase: PhaseName) {
        lock(&self.state).phase = phase;
    }

    pub fn set_tls(&self, tls: TlsState) {
        lock(&self.state).tls = tls;
    }

    pub fn set_user(&self, user: Option<&str>) {
        lock(&self.state).user = user.map(str::to_owned);
    }

    /// A transfer starts on a channel whose bytes `bytes` counts.
    pub fn transfer_started(&self, info: TransferInfo, mode: DataMode, since: Instant, bytes: Arc<ChannelBytes>) {
        lock(&self.state).running = Some(Running { info, mode, since, bytes });
    }

    /// The data channel ended having moved these bytes: they join the session's totals, and the
    /// transfer it carried is no longer under way (both at once, so no reader counts twice).
    pub fn channel_done(&self, to_client: u64, to_server: u64) {
        let mut s = lock(&self.state);
        s.running = None;
        s.to_client += to_client;
        s.to_server += to_server;
    }

    /// No transfer runs (dropped, or the command never came).
    pub fn transfer_gone(&self) {
        lock(&self.state).running = None;
    }

    fn view(&self) -> SessionView {
        let s = lock(&self.state);
        let running = s.running.as_ref();
        let (live_to_client, live_to_server) = running.map_or((0, 0), |r| (r.bytes.to_client(), r.bytes.to_server()));
        SessionView {
            id: self.id,
            client: self.client.to_string(),
            original_destination: s.original.map(|o| o.to_string()),
            upstream: s.upstream.map(|u| u.to_string()),
            user: s.user.clone(),
            started: OffsetDateTime::from(self.started).format(&Rfc3339).unwrap_or_default(),
            age_seconds: self.clock.elapsed().as_secs(),
            phase: s.phase.label().into(),
            bytes_to_client: s.to_client + live_to_client,
            bytes_to_server: s.to_server + live_to_server,
            transfer: running.map(Running::view),
            tls: s.tls,
        }
    }
}

/// Every live session of the process (shared across reloads).
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<BTreeMap<u64, Arc<Entry>>>,
    next: AtomicU64,
}

/// A session's place in the registry; leaving it (drop) removes the session.
pub struct Registered {
    registry: Arc<Registry>,
    pub entry: Arc<Entry>,
    /// Fires when an administrator ends the session.
    pub ended: Option<oneshot::Receiver<EndedBy>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry.sessions).remove(&self.entry.id);
    }
}

impl Registry {
    pub fn register(self: &Arc<Self>, client: ClientAddr) -> Registered {
        // Ids start at 1 and are never reused while the process runs.
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let state = State {
            original: None,
            upstream: None,
            user: None,
            phase: PhaseName::Greeting,
            to_client: 0,
            to_server: 0,
            running: None,
            tls: TlsState::Plain,
        };
        let entry = Arc::new(Entry {
            id,
            client,
            started: SystemTime::now(),
            clock: Instant::now(),
            state: Mutex::new(state),
            end: Mutex::new(Some(tx)),
        });
        lock(&self.sessions).insert(id, entry.clone());
        Registered { registry: self.clone(), entry, ended: Some(rx) }
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// Every session, oldest first. The registry's lock is held only to copy the list.
    pub fn list(&self) -> Vec<SessionView> {
        self.entries().iter().map(|e| e.view()).collect()
    }

    pub fn get(&self, id: u64) -> Option<SessionView> {
        let entry = lock(&self.sessions).get(&id).cloned();
        entry.map(|e| e.view())
    }

    /// Asks session `id` to end; `None` when there is no such session. Asking twice is
    /// harmless: the first request is the one the session acts on.
    pub fn end(&self, id: u64, by: EndedBy) -> Option<SessionView> {
        let entry = lock(&self.sessions).get(&id).cloned()?;
        if let Some(tx) = lock(&entry.end).take() {
            let _ = tx.send(by);
        }
        Some(entry.view())
    }

    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Direction;

    fn client() -> ClientAddr {
        ClientAddr("203.0.113.2:40000".parse().unwrap())
    }

    fn by() -> EndedBy {
        EndedBy { peer: "127.0.0.1:5000".parse().unwrap(), identity: "ops".into() }
    }

    #[test]
    fn sessions_register_and_leave() {
        let r = Arc::new(Registry::default());
        let a = r.register(client());
        let b = r.register(client());
        assert_eq!(r.list().iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2]);
        drop(a);
        assert_eq!(r.list().iter().map(|s| s.id).collect::<Vec<_>>(), [2]);
        assert!(r.get(1).is_none() && r.get(2).is_some());
        drop(b);
        assert!(r.is_empty());
        assert_eq!(r.register(client()).entry.id(), 3, "ids are not reused");
    }

    #[test]
    fn a_view_shows_route_user_phase_and_the_running_transfer() {
        let r = Arc::new(Registry::default());
        let reg = r.register(client());
        let e = &reg.entry;
        e.route(
            Some(OriginalDst("198.51.100.2:21".parse().unwrap())),
            UpstreamAddr("198.51.100.2:21".parse().unwrap()),
        );
        e.set_user(Some("alice"));
        e.set_phase(PhaseName::Transfer);
        let bytes = Arc::new(ChannelBytes::default());
        let info = TransferInfo { verb: "RETR".into(), path: "big".into(), binary: true, toward: Direction::ToClient };
        e.transfer_started(info, DataMode::Passive, Instant::now(), bytes.clone());
        let v = r.get(1).unwrap();
        assert_eq!(v.client, "203.0.113.2:40000");
        assert_eq!(v.original_destination.as_deref(), Some("198.51.100.2:21"));
        assert_eq!((v.user.as_deref(), v.phase.as_str(), v.tls), (Some("alice"), "transfer", TlsState::Plain));
        let t = v.transfer.unwrap();
        assert_eq!(
            (t.verb.as_str(), t.path.as_str(), t.kind.as_str(), t.mode.as_str()),
            ("RETR", "big", "binary", "passive")
        );
        assert_eq!(t.direction, "to_client");
        assert!(v.started.ends_with('Z'), "{}", v.started);
        let json = serde_json::to_value(r.list()).unwrap();
        assert_eq!(json[0]["transfer"]["type"], "binary");
        assert_eq!(json[0]["tls"], "plain");
        assert!(json[0].get("password").is_none());
    }

    #[test]
    fn bytes_count_once_while_running_and_after() {
        let r = Arc::new(Registry::default());
        let reg = r.register(client());
        let bytes = Arc::new(ChannelBytes::default());
        let info = TransferInfo { verb: "STOR".into(), path: "up".into(), binary: false, toward: Direction::ToServer };
        reg.entry.transfer_started(info, DataMode::Active, Instant::now(), bytes.clone());
        bytes.add(Direction::ToServer, 1000);
        let v = r.get(1).unwrap();
        assert_eq!((v.bytes_to_server, v.transfer.unwrap().bytes), (1000, 1000));
        bytes.add(Direction::ToServer, 500);
        reg.entry.channel_done(0, 1500);
        let v = r.get(1).unwrap();
        assert_eq!((v.bytes_to_server, v.bytes_to_client), (1500, 0));
        assert!(v.transfer.is_none());
    }

    #[test]
    fn ending_a_session_reaches_it_once() {
        let r = Arc::new(Registry::default());
        let mut reg = r.register(client());
        assert!(r.end(9, by()).is_none());
        assert_eq!(r.end(1, by()).map(|v| v.id), Some(1));
        assert!(r.end(1, by()).is_some(), "a second request is answered, not acted on");
        let got = reg.ended.take().unwrap().try_recv().unwrap();
        assert_eq!(got, by());
    }
}
