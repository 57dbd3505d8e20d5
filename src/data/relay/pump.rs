//! One direction of a relay: source to destination until the source's end of file, which is
//! then passed on by half-closing the destination; and the progress both directions share for
//! the idle watchdog.

use super::{Mode, OnBytes};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

const BUF: usize = 64 * 1024;

/// What a direction is waiting for; a timeout is named after the furthest phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Nothing: its end of file is passed on.
    Done = 0,
    /// For its source (`data connection idle`).
    Reading = 1,
    /// For its destination to take bytes (`data connection stalled`).
    Writing = 2,
    /// For the half-close of its destination (`data connection stalled at close`).
    Closing = 3,
}

/// Progress of both directions, for the idle watchdog.
pub(super) struct Progress {
    origin: Instant,
    /// Nanoseconds from `origin` to the last byte moved either way.
    last: AtomicU64,
    phases: [AtomicU8; 2],
    /// The fallback to the buffer has been logged for this relay.
    #[cfg(target_os = "linux")]
    fell_back: std::sync::atomic::AtomicBool,
}

impl Progress {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            phases: [AtomicU8::new(Phase::Reading as u8), AtomicU8::new(Phase::Reading as u8)],
            #[cfg(target_os = "linux")]
            fell_back: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn mark(&self) {
        let ns = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Ordering::Relaxed);
    }

    /// Returns once `idle` has passed without progress, with the error naming the stall.
    pub(super) async fn watch(&self, idle: Duration) -> io::Error {
        loop {
            let last = self.last.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.origin + Duration::from_nanos(last) + idle).await;
            if self.last.load(Ordering::Relaxed) == last {
                return self.stall();
            }
        }
    }

    fn stall(&self) -> io::Error {
        let furthest = self.phases.iter().map(|p| p.load(Ordering::Relaxed)).max().unwrap_or(0);
        let what = match furthest {
            x if x == Phase::Closing as u8 => "data connection stalled at close",
            x if x == Phase::Writing as u8 => "data connection stalled",
            _ => "data connection idle",
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

/// One direction's bookkeeping: its byte count, callback and phase.
pub(crate) struct Dir<'a> {
    progress: &'a Progress,
    slot: usize,
    count: AtomicU64,
    on: OnBytes<'a>,
}

impl<'a> Dir<'a> {
    pub(super) fn new(progress: &'a Progress, slot: usize, on: OnBytes<'a>) -> Self {
        Self { progress, slot, count: AtomicU64::new(0), on }
    }

    pub(crate) fn phase(&self, p: Phase) {
        self.progress.phases[self.slot].store(p as u8, Ordering::Relaxed);
    }

    /// Bytes were taken from the source (not yet delivered: not counted).
    pub(crate) fn received(&self) {
        self.progress.mark();
    }

    /// `n` bytes were handed to the destination socket.
    pub(crate) fn delivered(&self, n: usize) {
        self.progress.mark();
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        (self.on)(n as u64);
    }

    /// Logs, once per relay, why splice gave way to the buffer.
    #[cfg(target_os = "linux")]
    fn fell_back(&self, reason: &io::Error) {
        if !self.progress.fell_back.swap(true, Ordering::Relaxed) {
            tracing::debug!(%reason, "splice(2) unavailable, relaying this data connection through a buffer");
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

async fn buffered(r: &mut ReadHalf<'_>, w: &mut WriteHalf<'_>, dir: &Dir<'_>) -> io::Result<()> {
    dir.phase(Phase::Reading);
    r.readable().await?;
    let mut buf = vec![0u8; BUF];
    loop {
        dir.phase(Phase::Reading);
        let n = r.read(&mut buf).await?;
        if n == 0 {
            dir.phase(Phase::Closing);
            return w.shutdown().await;
        }
        dir.received();
        dir.phase(Phase::Writing);
        let mut sent = 0;
        while sent < n {
            let k = w.write(&buf[sent..n]).await?;
            if k == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += k;
            dir.delivered(k);
        }
    }
}

/// Moves `r`'s bytes to `w` until `r`'s end of file, then half-closes `w`.
pub(super) async fn pump(r: &mut ReadHalf<'_>, w: &mut WriteHalf<'_>, dir: &Dir<'_>, mode: Mode) -> io::Result<()> {
    match mode {
        Mode::Buffered => buffered(r, w, dir).await,
        #[cfg(target_os = "linux")]
        Mode::Splice { open, fallback } => match crate::data::splice::pump(r, w, dir, open, fallback).await? {
            crate::data::splice::Ended::Done => Ok(()),
            crate::data::splice::Ended::Refused(reason) => {
                dir.fell_back(&reason);
                buffered(r, w, dir).await
            }
        },
    }
}
