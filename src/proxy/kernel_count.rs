//! What a kernel data connection carried, from conntrack accounting. Once the pinhole is seen
//! used, the connection's conntrack entry is found and read, with backoff, until TCP is over
//! (TIME_WAIT, or CLOSE after a reset).
//!
//! The figures are conntrack's: IP-layer bytes and packets, headers included, so a file's
//! transfer counts some 3-5 % more than its size; the log line says so (`byte_layer="ip"`).
//! Where the kernel cannot tell (accounting off, the entry not told apart from another, the
//! connection not over within the data idle timeout), the figures are "unknown".

use crate::labels::DataMode;
use crate::pinhole::{Counts, Found, FoundBy, Pinhole, Pinholes};
use std::time::{Duration, Instant};

/// Reads of a running connection's entry at most (with the interval's bound, days).
const MAX_READS: u32 = 1_000_000;

/// Between reads of the entry: short at first (most transfers are small), then up to a second.
fn read_interval(reads: u32) -> Duration {
    Duration::from_millis((10u64 << reads.min(7)).min(1000))
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

/// The final counts of the connection that used `pinhole`, or why they are not known; `idle`:
/// a connection whose counts stand still this long (the data idle timeout) is not waited for.
pub async fn follow(
    pinholes: &Pinholes,
    pinhole: Pinhole,
    mode: DataMode,
    idle: Duration,
) -> Result<(Carried, FoundBy), String> {
    let Found { flow: mut last, by } = pinholes
        .find_flow(pinhole)
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
        if moved_at.elapsed() >= idle {
            return Err("the connection was idle for the data idle timeout and not over".into());
        }
        tokio::time::sleep(read_interval(reads)).await;
        let now = pinholes.read_flow(last.src, last.dst).await.map_err(|e| e.to_string())?;
        let now = now.ok_or("its conntrack entry was gone before the connection was over")?;
        if now.counts != last.counts {
            moved_at = Instant::now();
        }
        last = now;
    }
    match (last.is_over(), last.counts) {
        (true, Some(c)) => Ok((carried(mode, c), by)),
        _ => Err("the connection outlasted the reads".into()),
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
