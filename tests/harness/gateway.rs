//! ftpgate itself, started in-process in reverse mode.
//!
//! Everything that touches ftpgate's configuration types and start-up API is in [`start`]: when
//! those change, that function is the one to adapt. The rest of the harness deals in YAML text
//! and socket addresses.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

type Reload = Box<dyn Fn(&str) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A running gateway. Stop it with [`Gateway::stop`] at the end of a test.
pub struct Gateway {
    /// Where clients connect (the listener bound as 127.0.0.1:0).
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when the test's YAML sets `metrics.listen`.
    pub metrics: Option<SocketAddr>,
    /// Every listener bound, `addr` first, then those of `forward.listen`.
    pub listening: Vec<SocketAddr>,
    /// Where the admin API is served, when the test's YAML sets `admin.listen`.
    pub admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    reload: Reload,
}

/// How long the gateway lets running sessions finish once told to stop.
const SHUTDOWN_GRACE: &str = "2s";

/// Starts ftpgate in front of `upstream` with the settings of `yaml` (top-level keys of the
/// configuration file, deep-merged over the harness's own: listen on 127.0.0.1:0, reverse mode
/// toward `upstream`, a passive range of its own, a short shutdown grace).
///
/// The one function that knows ftpgate's start-up API: config → bind → serve, plus the
/// shutdown handle and the reload sender.
pub fn start(upstream: SocketAddr, yaml: &str) -> Gateway {
    super::init_logging();
    let (first, last) = passive_range();
    let base = format!(
        "listen: ['127.0.0.1:0']\nupstream: '{upstream}'\npassive: {{ports: '{first}-{last}'}}\n\
         timeouts: {{shutdown_grace: {SHUTDOWN_GRACE}}}\n"
    );
    let config = move |yaml: &str| {
        let text = merge_yaml(&base, yaml);
        let raw = ftpgate::config::parse_raw(&text).unwrap_or_else(|e| panic!("config does not parse: {e}\n{text}"));
        ftpgate::config::validate(&raw).unwrap_or_else(|e| panic!("config is not valid: {e}\n{text}"))
    };
    let gateway = ftpgate::proxy::Gateway::bind(config(yaml)).expect("the gateway binds its listener");
    let addr = gateway.local_addrs()[0];
    let listening = gateway.local_addrs().to_vec();
    let metrics = gateway.metrics_addr();
    let admin = gateway.admin_addr();
    let (shutdown, shutdown_rx) = watch::channel(false);
    // Capacity 1 is what makes `reload` know when a configuration has been taken in.
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let task = tokio::spawn(gateway.serve(shutdown_rx, reload_rx, |_: &ftpgate::config::Config| {}));
    let reload: Reload = Box::new(move |yaml: &str| {
        let cfg = config(yaml);
        let tx = reload_tx.clone();
        Box::pin(async move {
            // With one slot, the third send completes only once the gateway has received the
            // second, that is after it finished applying the first. No reply channel is needed.
            for _ in 0..3 {
                tx.send(cfg.clone()).await.expect("the gateway takes reloads");
            }
        })
    });
    Gateway { addr, metrics, listening, admin, shutdown, task: Some(task), reload }
}

impl Gateway {
    /// Applies the configuration `yaml` (merged over the same base as at start) to sessions
    /// started from now on; returns once the gateway has applied it.
    pub async fn reload(&self, yaml: &str) {
        super::within("the gateway to apply a reload", (self.reload)(yaml)).await;
    }

    /// Tells the gateway to stop and waits (bounded) until it has.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        let task = self.task.take().expect("stopped once");
        match tokio::time::timeout(super::STEP, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the gateway task failed: {e}"),
            Err(_) => panic!("the gateway did not stop within {:?}", super::STEP),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A test that panicked before `stop`: stop serving, leave the rest to the runtime's end.
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A sub-range of 40 passive ports per gateway, below the kernel's ephemeral range (32768 and
/// up) so that no outgoing connection of the test machine sits on it.
fn passive_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = NEXT.fetch_add(1, Ordering::Relaxed) % 200;
    let first = 24000 + block * 40;
    (first, first + 39)
}

/// `over`'s top-level keys over `base`'s; mappings are merged key by key, anything else replaced.
fn merge_yaml(base: &str, over: &str) -> String {
    use serde_yaml::Value;
    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Mapping(a), Value::Mapping(b)) => {
                for (k, v) in b {
                    match a.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            a.insert(k, v);
                        }
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let mut merged: Value = serde_yaml::from_str(base).expect("the harness's base YAML parses");
    if !over.trim().is_empty() {
        let over: Value =
            serde_yaml::from_str(over).unwrap_or_else(|e| panic!("test YAML does not parse: {e}\n{over}"));
        merge(&mut merged, over);
    }
    serde_yaml::to_string(&merged).expect("YAML serialises")
}
