//! An in-process, unprivileged harness for control-channel behaviour: ftpgate in reverse mode
//! on 127.0.0.1, a scriptable fake FTP server behind it and a raw client in front of it.
//! Every port is bound as port 0 (the gateway's passive listeners use a per-gateway sub-range
//! of `passive.ports`), so tests run in parallel inside one `cargo test`.
//!
//! Every wait is bounded by [`STEP`]; nothing sleeps to wait for an event.

pub mod client;
pub mod gateway;
pub mod server;
mod server_exec;

pub use client::{connect_data, read_data, write_data, Client, Sink};
pub use server::{Answer, FakeServer};

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// The bound on any single wait of a test (a reply, an accept, a transfer step, shutdown).
/// Generous: the tests run in parallel on small machines; a pass never comes near it.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `f` for at most [`STEP`]; panics naming `what` when it takes longer.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?} waiting for {what}"),
    }
}

/// A gate a test opens once: everything waiting on it proceeds, now and later.
#[derive(Clone, Debug)]
pub struct Latch(watch::Sender<bool>);

impl Default for Latch {
    fn default() -> Self {
        Self::new()
    }
}

impl Latch {
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }

    pub fn release(&self) {
        self.0.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so this only ends when the latch is released.
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// The byte at `offset` of every file the fake server sends and every upload the client
/// writes: transfers are checked for content, not only for length.
pub fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Logs of the gateway on stderr when `FTPGATE_TEST_LOG` is set (an `EnvFilter` such as
/// `ftpgate=debug`); `cargo test -- --nocapture` shows them.
pub fn init_logging() {
    if let Ok(filter) = std::env::var("FTPGATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    }
}
