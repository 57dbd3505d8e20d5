//! What a kernel data connection carried, from conntrack accounting: a follow-up of the
//! channel, so the control channel never waits for it. Once the pinhole is seen used, the
//! connection's conntrack entry is found and read, with backoff, until TCP is over (TIME_WAIT,
//! or CLOSE after a reset); then the transfer's log line, its xferlog line and the byte metric
//! are written with the kernel's figures.
//!
//! The figures are conntrack's: IP-layer bytes and packets, headers included, so a file's
//! transfer counts some 3-5 % more than its size; the log line says so (`byte_layer="ip"`).
//! Where the kernel cannot tell (accounting off, the entry not told apart from another, the
//! connection not over within the data idle timeout), the figures are "unknown".

use crate::labels::{DataMode, Direction};
use crate::metrics::Metrics;
use crate::pinhole::{Counts, Found, FoundBy, Pinhole, Pinholes};
use crate::session::TransferInfo;
use crate::xferlog::XferLog;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, Instrument};

/// Reads of a running connection's entry at most (with the interval's bound, days).
const MAX_READS: u32 = 1_000_000;

/// Between reads of the entry: short at first (most transfers are small), then up to a second.
fn read_interval(reads: u32) -> Duration {
    Duration::from_millis((10u64 << reads.min(7)).min(1000))
}

/// One transfer the kernel carries, to be counted when its connection ends.
pub(super) struct Count {
    pub pinholes: Arc<Pinholes>,
    pub pinhole: Pinhole,
    pub mode: DataMode,
    pub transfer: Option<TransferInfo>,
    pub user: Option<String>,
    pub client: IpAddr,
    pub xferlog: Option<Arc<XferLog>>,
    pub metrics: Arc<Metrics>,
    /// The data idle timeout: a connection whose counts stand still this long is not waited for.
    pub idle: Duration,
    /// When the data channel was opened.
    pub started: Instant,
    /// Set when the session aborted the transfer (ABOR cut the connection).
    pub aborted: Arc<AtomicBool>,
}

/// The kernel's figures of one transfer, toward the client and toward the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub to_client: Counts,
    pub to_server: Counts,
}

/// Which of conntrack's directions is which: the original one is the connecting peer's, the
/// client for a passive connection, the server for an active one.
pub fn carried(mode: DataMode, [orig, reply]: [Counts; 2]) -> Carried {
    match mode {
        DataMode::Active => Carried { to_client: orig, to_server: reply },
        _ => Carried { to_client: reply, to_server: orig },
    }
}

impl Count {
    pub fn spawn(self) {
        tokio::spawn(self.run().instrument(tracing::info_span!("kernel_count")));
    }

    async fn run(self) {
        let counted = self.follow().await;
        let aborted = self.aborted.load(Ordering::Relaxed);
        let duration = self.started.elapsed();
        let verb = self.transfer.as_ref().map_or("-", |t| t.verb.as_str());
        let what = if aborted { "transfer aborted" } else { "transfer done" };
        let ms = duration.as_millis() as u64;
        let mode = self.mode.label();
        match &counted {
            Ok((c, by)) => {
                info!(
                    verb,
                    mode,
                    bytes_to_client = c.to_client.bytes,
                    bytes_to_server = c.to_server.bytes,
                    packets_to_client = c.to_client.packets,
                    packets_to_server = c.to_server.packets,
                    byte_layer = "ip",
                    counted_by = "conntrack",
                    found_by = by.label(),
                    duration_ms = ms,
                    "{what}"
                );
                self.metrics.kernel_path_bytes(Direction::ToClient, c.to_client.bytes);
                self.metrics.kernel_path_bytes(Direction::ToServer, c.to_server.bytes);
            }
            Err(why) => info!(
                verb,
                mode,
                bytes_to_client = "unknown",
                bytes_to_server = "unknown",
                counted_by = "conntrack",
                uncounted = %why,
                duration_ms = ms,
                "{what}"
            ),
        }
        if let (Some(log), Some(t)) = (&self.xferlog, &self.transfer) {
            let counts = counted.ok().map(|(c, _)| (c.to_client.bytes, c.to_server.bytes));
            super::driver::log_transfer(log, self.client, t, self.user.as_deref(), counts, duration, !aborted);
        }
    }

    /// The connection's final counts, or why they are not known.
    async fn follow(&self) -> Result<(Carried, FoundBy), String> {
        let p = &self.pinholes;
        let Found { flow: mut last, by } = p
            .find_flow(self.pinhole)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("its conntrack entry could not be told apart")?;
        let mut moved_at = Instant::now();
        for reads in 0..MAX_READS {
            if last.counts.is_none() {
                return Err("conntrack accounting was off when the connection began".into());
            }
            if last.is_over() {
                break;
            }
            if moved_at.elapsed() >= self.idle {
                return Err("the connection was idle for the data idle timeout and not over".into());
            }
            tokio::time::sleep(read_interval(reads)).await;
            let now = p.read_flow(last.src, last.dst).await.map_err(|e| e.to_string())?;
            let now = now.ok_or("its conntrack entry was gone before the connection was over")?;
            if now.counts != last.counts {
                moved_at = Instant::now();
            }
            last = now;
        }
        match (last.is_over(), last.counts) {
            (true, Some(c)) => Ok((carried(self.mode, c), by)),
            _ => Err("the connection outlasted the reads".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_direction_is_the_connecting_peers() {
        let (a, b) = (Counts { bytes: 100, packets: 2 }, Counts { bytes: 5000, packets: 4 });
        assert_eq!(carried(DataMode::Passive, [a, b]), Carried { to_client: b, to_server: a });
        assert_eq!(carried(DataMode::Active, [a, b]), Carried { to_client: a, to_server: b });
    }

    #[test]
    fn reads_back_off_to_a_second() {
        assert_eq!(read_interval(0), Duration::from_millis(10));
        assert_eq!(read_interval(3), Duration::from_millis(80));
        assert_eq!(read_interval(50), Duration::from_secs(1));
    }
}
