//! Relays one data connection in both directions with half-close, counting bytes.
//!
//! Each direction runs until its own source's end of file and then half-closes its
//! destination, passing the end of file on: a client that shuts its sending side of a
//! download's data connection at once (legal TCP) still gets the whole download.
//!
//! FTP data connections carry bytes one way, and the relay ends when that way is done: every
//! byte written and its end of file passed on. The other way is then dropped, so a client that
//! keeps its socket open until the final reply arrives cannot stall the transfer. Which way
//! carries the transfer the control channel says once the command has gone to the server
//! ([`Carrier`]: RETR toward the client, STOR toward the server). Until it has said, a way that
//! reaches its end of file having carried bytes while the other carried none is taken for the
//! transfer; an end of file with no bytes behind it (an empty file, or a peer's half-close)
//! decides nothing, and the relay waits for the other way.
//!
//! A reset, a failed write or the idle watchdog ends the relay with an error, and both
//! connections are then reset rather than closed: neither peer may take a cut transfer for a
//! complete one.
//!
//! On Linux the bytes move socket → pipe → socket with splice(2) and never enter user space
//! (`super::splice`); elsewhere, or where the kernel refuses splice before a byte has moved,
//! through a 64 KiB buffer per direction. Either way a direction allocates nothing (no buffer,
//! no pipe) until its source has something to say, so the way back of a transfer costs only
//! its sockets.
//!
//! One watchdog covers both directions: the relay fails with `TimedOut` when `idle` passes
//! without a byte moving either way, so a transfer that keeps flowing is never cut because the
//! other direction is silent.

pub(crate) mod pump;
pub(crate) mod tls;

use pump::{pump, Dir, Phase, Progress};
use socket2::SockRef;
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Bytes from the first stream to the second.
    pub a_to_b: u64,
    /// Bytes from the second stream to the first.
    pub b_to_a: u64,
    /// `Ok` when the transfer's way reached its end of file with every byte written to the
    /// other side and the end of file passed on.
    pub result: Result<(), String>,
}

/// Called with every chunk's size as it is delivered (live byte metrics, exact even when a
/// transfer is aborted).
pub type OnBytes<'a> = &'a (dyn Fn(u64) + Sync);

/// A way through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// From the first stream to the second.
    AToB,
    /// From the second stream to the first.
    BToA,
}

/// Which way carries the transfer, once known; it may become known while the relay runs.
pub type Carrier = watch::Receiver<Option<Way>>;

/// A carrier that is never told.
#[cfg(test)]
pub(crate) fn untold() -> Carrier {
    watch::channel(None).1
}

/// How a relay moves its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Through a user-space buffer per direction (on Linux only chosen by tests; the splice
    /// fallback calls the buffered pump itself).
    #[cfg_attr(all(target_os = "linux", not(test)), allow(dead_code))]
    Buffered,
    /// splice(2) through a pipe per direction, made by `open` once the direction's source turns
    /// readable. With `fallback`, a direction whose pipe cannot be made or whose first splice
    /// is refused (nothing moved yet) goes on with the buffer; without, that is an error.
    #[cfg(target_os = "linux")]
    Splice { open: super::splice::OpenPipe, fallback: bool },
}

impl Mode {
    /// What [`relay`] uses: splice where the platform has it, with the buffered fallback.
    pub(crate) fn auto() -> Self {
        #[cfg(target_os = "linux")]
        return Mode::Splice { open: super::splice::Pipe::open, fallback: true };
        #[cfg(not(target_os = "linux"))]
        return Mode::Buffered;
    }
}

/// Relays between `a` and `b` until the transfer's way is done (see the module's description),
/// an error, or `idle` passes without progress.
pub async fn relay(
    a: TcpStream,
    b: TcpStream,
    idle: Duration,
    on_ab: OnBytes<'_>,
    on_ba: OnBytes<'_>,
    carrier: Carrier,
) -> RelayOutcome {
    relay_carrying(a, b, idle, [on_ab, on_ba], Mode::auto(), carrier).await
}

/// [`relay`] with the way bytes move chosen by the caller, never told which way carries.
#[cfg(test)]
pub(crate) async fn relay_with(
    a: TcpStream,
    b: TcpStream,
    idle: Duration,
    on_ab: OnBytes<'_>,
    on_ba: OnBytes<'_>,
    mode: Mode,
) -> RelayOutcome {
    relay_carrying(a, b, idle, [on_ab, on_ba], mode, untold()).await
}

/// Whether the relay is done: both ways are, or the way that carries the transfer is.
pub(super) fn finished(done: [bool; 2], moved: [u64; 2], carrier: Option<Way>) -> bool {
    match carrier {
        Some(Way::AToB) => done[0],
        Some(Way::BToA) => done[1],
        None => {
            let carried = |i: usize| done[i] && moved[i] > 0 && moved[1 - i] == 0;
            (done[0] && done[1]) || carried(0) || carried(1)
        }
    }
}

/// Runs both ways of a relay until it is finished (see [`finished`]), a way fails or `idle`
/// passes without progress; also says which ways reached their end. Shared by the plain and
/// the TLS relay, which differ only in how a way moves its bytes.
async fn run_ways(
    ab: impl Future<Output = io::Result<()>>,
    ba: impl Future<Output = io::Result<()>>,
    dirs: &[Dir<'_>; 2],
    progress: &Progress,
    idle: Duration,
    carrier: &mut Carrier,
) -> (io::Result<()>, [bool; 2]) {
    tokio::pin!(ab, ba);
    let mut done = [false; 2];
    let mut told = true;
    let result = loop {
        let way = *carrier.borrow_and_update();
        if finished(done, [dirs[0].total(), dirs[1].total()], way) {
            break Ok(());
        }
        tokio::select! {
            r = &mut ab, if !done[0] => match r {
                Ok(()) => {
                    done[0] = true;
                    dirs[0].phase(Phase::Done);
                }
                Err(e) => break Err(e),
            },
            r = &mut ba, if !done[1] => match r {
                Ok(()) => {
                    done[1] = true;
                    dirs[1].phase(Phase::Done);
                }
                Err(e) => break Err(e),
            },
            // A dropped sender tells nothing more; what it told stays.
            r = carrier.changed(), if told => told = r.is_ok(),
            e = progress.watch(idle) => break Err(e),
        }
    };
    (result, done)
}

pub(crate) async fn relay_carrying(
    mut a: TcpStream,
    mut b: TcpStream,
    idle: Duration,
    on: [OnBytes<'_>; 2],
    mode: Mode,
    mut carrier: Carrier,
) -> RelayOutcome {
    let progress = Progress::new();
    let dirs = [Dir::new(&progress, 0, on[0]), Dir::new(&progress, 1, on[1])];
    let result = {
        // Borrowed halves: nothing is shut down when they go, so a failure can still reset.
        let (mut ar, mut aw) = a.split();
        let (mut br, mut bw) = b.split();
        let ab = pump(&mut ar, &mut bw, &dirs[0], mode);
        let ba = pump(&mut br, &mut aw, &dirs[1], mode);
        run_ways(ab, ba, &dirs, &progress, idle, &mut carrier).await.0
    };
    if result.is_err() {
        for s in [&a, &b] {
            // Linger 0: closing sends a reset. Failing that (the socket is gone already), the
            // close that follows is all there is.
            let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
    RelayOutcome { a_to_b: dirs[0].total(), b_to_a: dirs[1].total(), result: result.map_err(|e| e.to_string()) }
}

#[cfg(test)]
mod halfclose_tests;
#[cfg(test)]
pub(crate) mod tests;
