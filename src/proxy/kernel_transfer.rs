//! A transfer the kernel carries (kernel data path), reported as the relay reports its own: one
//! log line, one transfer-log line, the transfer metric. ftpgate sees no byte of it, so two
//! things decide what is written, and the report waits for both without holding up the control
//! channel: the server's final reply to the transfer (226, or 426 after the client reset the
//! connection, or the ABOR that ended it) and, where the kernel counts, the connection's end
//! with conntrack's figures (`kernel_count`).

use super::kernel_count::{follow, Carried};
use crate::labels::{DataMode, Direction, TransferOutcome, TransferVerb};
use crate::metrics::Metrics;
use crate::pinhole::{FoundBy, Pinhole, Pinholes};
use crate::session::TransferInfo;
use crate::xferlog::XferLog;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn, Instrument};

/// How the transfer ended, as the control channel told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The server's final reply to the transfer command.
    Reply(u16),
    /// The client aborted it (ABOR).
    Aborted,
}

/// The driver's side of the kernel path's transfers: a final reply that came while the channel
/// still waited, and the connection last handed to the kernel, which an ABOR cuts.
#[derive(Debug, Default)]
pub(super) struct KernelTransfers {
    early: Option<u16>,
    handed: Option<Pinhole>,
    verdict: Option<oneshot::Sender<Verdict>>,
}

impl KernelTransfers {
    /// A final reply (2xx-5xx) from the server. `waiting`: a kernel channel still waits for its
    /// connection while a transfer is under way, so the reply is that transfer's.
    pub fn final_reply(&mut self, code: u16, waiting: bool) {
        if waiting {
            self.early.get_or_insert(code);
        } else if let Some(tx) = self.verdict.take() {
            let _ = tx.send(Verdict::Reply(code));
        }
    }

    /// The kernel carries the channel's connection now; the receiver gets how it ended.
    pub fn handed_over(&mut self, flow: Pinhole) -> oneshot::Receiver<Verdict> {
        let (tx, rx) = oneshot::channel();
        match self.early.take() {
            Some(code) => {
                let _ = tx.send(Verdict::Reply(code));
            }
            None => self.verdict = Some(tx),
        }
        self.handed = Some(flow);
        rx
    }

    /// ABOR: the transfer the kernel carries is over, unless its final reply came already; the
    /// connection that used `Some` pinhole is to be cut.
    pub fn abort(&mut self) -> Option<Pinhole> {
        if let Some(tx) = self.verdict.take() {
            let _ = tx.send(Verdict::Aborted);
        }
        self.handed.take()
    }

    /// A new channel, or the waiting one gone without a connection: what came before is over.
    /// A transfer still without its final reply is reported as having none.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// One transfer the kernel carries, reported once decided.
pub(super) struct Report {
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
    pub verdict: oneshot::Receiver<Verdict>,
}

/// What the report says of the transfer's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Done,
    ServerFailed(u16),
    Aborted,
    NoReply,
}

impl Ending {
    fn of(verdict: Result<Verdict, oneshot::error::RecvError>) -> Self {
        match verdict {
            Ok(Verdict::Reply(code)) if code < 400 => Ending::Done,
            Ok(Verdict::Reply(code)) => Ending::ServerFailed(code),
            Ok(Verdict::Aborted) => Ending::Aborted,
            Err(_) => Ending::NoReply,
        }
    }

    /// The metric's outcome; `None` for an aborted transfer, which the relay path does not
    /// count either.
    fn outcome(self) -> Option<TransferOutcome> {
        match self {
            Ending::Done => Some(TransferOutcome::Ok),
            Ending::ServerFailed(_) | Ending::NoReply => Some(TransferOutcome::Failed),
            Ending::Aborted => None,
        }
    }
}

/// A figure of the kernel's, or "unknown".
fn figure(counted: &Result<(Carried, FoundBy), String>, pick: impl Fn(&Carried) -> u64) -> String {
    counted.as_ref().map_or_else(|_| "unknown".to_owned(), |(c, _)| pick(c).to_string())
}

impl Report {
    pub fn spawn(self) {
        tokio::spawn(self.run().instrument(tracing::info_span!("kernel_transfer")));
    }

    async fn run(self) {
        let Report { pinholes, pinhole, mode, transfer, user, client, xferlog, metrics, idle, started, verdict } = self;
        let count = async {
            if pinholes.counting() {
                follow(&pinholes, pinhole, mode, idle).await
            } else {
                Err("the kernel keeps no counts for it (conntrack accounting off, or pf)".to_owned())
            }
        };
        let (counted, verdict) = tokio::join!(count, verdict);
        let ending = Ending::of(verdict);
        let duration = started.elapsed();
        let verb = transfer.as_ref().map_or("-", |t| t.verb.as_str());
        write_line(verb, mode, ending, &counted, duration);
        if let Ok((c, _)) = &counted {
            metrics.kernel_path_bytes(Direction::ToClient, c.to_client.bytes);
            metrics.kernel_path_bytes(Direction::ToServer, c.to_server.bytes);
        }
        if let Some(outcome) = ending.outcome() {
            metrics.transfer(TransferVerb::from_verb(verb), outcome, duration);
        }
        if let (Some(log), Some(t)) = (&xferlog, &transfer) {
            let counts = counted.as_ref().ok().map(|(c, _)| (c.to_client.bytes, c.to_server.bytes));
            super::transfer_log::write(log, client, t, user.as_deref(), counts, duration, ending == Ending::Done);
        }
    }
}

/// The transfer's log line, with the kernel's figures or why there are none.
fn write_line(
    verb: &str,
    mode: DataMode,
    ending: Ending,
    counted: &Result<(Carried, FoundBy), String>,
    took: Duration,
) {
    let (to_client, to_server) = (figure(counted, |c| c.to_client.bytes), figure(counted, |c| c.to_server.bytes));
    let (packets_to_client, packets_to_server) =
        (figure(counted, |c| c.to_client.packets), figure(counted, |c| c.to_server.packets));
    let (found_by, uncounted) = match counted {
        Ok((_, by)) => (Some(by.label()), None),
        Err(why) => (None, Some(why.as_str())),
    };
    // Only known figures are IP-layer ones; an unknown count has no layer.
    let byte_layer = found_by.map(|_| "ip");
    let mode = mode.label();
    let duration_ms = took.as_millis() as u64;
    macro_rules! line {
        ($level:ident, $($rest:tt)*) => {
            $level!(
                verb,
                mode,
                bytes_to_client = %to_client,
                bytes_to_server = %to_server,
                packets_to_client = %packets_to_client,
                packets_to_server = %packets_to_server,
                byte_layer,
                counted_by = "conntrack",
                found_by,
                uncounted,
                duration_ms,
                $($rest)*
            )
        };
    }
    match ending {
        Ending::Done => line!(info, "transfer done"),
        Ending::Aborted => line!(info, "transfer aborted"),
        Ending::ServerFailed(reply) => {
            line!(warn, reason = "server_reply", reply, "transfer failed: the server answered {reply}")
        }
        Ending::NoReply => {
            line!(warn, reason = "no_reply", "transfer failed: the session moved on without the server's final reply")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn pinhole() -> Pinhole {
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
        Pinhole {
            peer: ip,
            dialled: SocketAddr::new(ip, 50000),
            target: SocketAddr::new(ip, 50001),
            source: ip,
            source_port: None,
        }
    }

    #[test]
    fn a_reply_before_the_hand_over_decides_the_transfer() {
        let mut k = KernelTransfers::default();
        k.final_reply(426, true);
        k.final_reply(226, true);
        let mut rx = k.handed_over(pinhole());
        assert_eq!(rx.try_recv(), Ok(Verdict::Reply(426)));
        assert_eq!(k.abort(), Some(pinhole()), "the connection is still cut on ABOR");
    }

    #[test]
    fn a_reply_after_the_hand_over_decides_it_and_a_later_abor_does_not() {
        let mut k = KernelTransfers::default();
        let mut rx = k.handed_over(pinhole());
        assert!(rx.try_recv().is_err());
        k.final_reply(226, false);
        k.final_reply(500, false);
        assert_eq!(k.abort(), Some(pinhole()));
        assert_eq!(rx.try_recv(), Ok(Verdict::Reply(226)));
    }

    #[test]
    fn abor_before_the_final_reply_aborts_and_a_new_channel_leaves_none() {
        let mut k = KernelTransfers::default();
        let mut rx = k.handed_over(pinhole());
        assert_eq!(k.abort(), Some(pinhole()));
        assert_eq!(rx.try_recv(), Ok(Verdict::Aborted));
        assert_eq!(k.abort(), None);
        let mut rx = k.handed_over(pinhole());
        k.reset();
        assert_eq!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed));
        assert_eq!(Ending::of(Err(rx_closed())), Ending::NoReply);
    }

    #[test]
    fn a_reply_that_came_while_a_channel_waited_is_forgotten_with_it() {
        let mut k = KernelTransfers::default();
        k.final_reply(425, true);
        k.reset();
        let mut rx = k.handed_over(pinhole());
        assert!(rx.try_recv().is_err(), "no verdict before a reply of its own");
    }

    #[test]
    fn endings_count_as_the_relay_counts_them() {
        assert_eq!(Ending::of(Ok(Verdict::Reply(226))).outcome(), Some(TransferOutcome::Ok));
        assert_eq!(Ending::of(Ok(Verdict::Reply(250))).outcome(), Some(TransferOutcome::Ok));
        assert_eq!(Ending::of(Ok(Verdict::Reply(426))).outcome(), Some(TransferOutcome::Failed));
        assert_eq!(Ending::of(Ok(Verdict::Reply(551))).outcome(), Some(TransferOutcome::Failed));
        assert_eq!(Ending::of(Ok(Verdict::Aborted)).outcome(), None);
        assert_eq!(Ending::NoReply.outcome(), Some(TransferOutcome::Failed));
    }

    fn rx_closed() -> oneshot::error::RecvError {
        let (tx, rx) = oneshot::channel::<()>();
        drop(tx);
        block_on(rx).unwrap_err()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }
}
