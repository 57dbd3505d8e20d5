//! How a data channel's end is told: its log line, the transfer metric and its xferlog line.
//! Channels whose connection the kernel carries are told by `kernel_transfer` once decided.

use super::data::DataTask;
use super::Shared;
use crate::data::{DataError, DataOutcome};
use crate::labels::{Reason, TransferOutcome, TransferVerb};
use crate::session::TransferInfo;
use crate::xferlog::XferLog;
use std::net::IpAddr;
use std::time::Duration;
use tracing::{info, warn};

/// Logs and counts a data channel's end; returns the bytes it moved toward the server and
/// toward the client.
pub(super) fn channel_ended(
    shared: &Shared,
    client: IpAddr,
    r: Result<DataOutcome, tokio::task::JoinError>,
    transfer: Option<&TransferInfo>,
    user: Option<&str>,
) -> (u64, u64) {
    let verb = transfer.map_or("-", |t| t.verb.as_str());
    let m = &shared.metrics;
    let o = match r {
        Ok(o) if o.handed_over => {
            info!(verb, "passive data port handed over to a site-to-site transfer of this client");
            return (0, 0);
        }
        Ok(o) => o,
        Err(e) if e.is_cancelled() => return (0, 0),
        Err(e) => {
            warn!(verb, error = %e, "data task failed");
            return (0, 0);
        }
    };
    let nobody_came = matches!(o.result, Err(DataError::AcceptTimeout { .. }));
    if !nobody_came {
        m.tls_transfer(o.tls.0, o.tls.1);
    }
    let ms = o.duration.as_millis() as u64;
    // A kernel channel that carried nothing counted nothing: no figure rather than a made-up one.
    let bytes = |n: u64| if o.bytes_known { n.to_string() } else { "unknown".to_owned() };
    let (to_client, to_server) = (bytes(o.to_client), bytes(o.to_server));
    match &o.result {
        Ok(()) => info!(
            verb,
            mode = o.mode.label(),
            bytes_to_client = %to_client,
            bytes_to_server = %to_server,
            duration_ms = ms,
            "transfer done"
        ),
        Err(e) => warn!(
            verb,
            mode = o.mode.label(),
            bytes_to_client = %to_client,
            bytes_to_server = %to_server,
            duration_ms = ms,
            reason = e.label(),
            "transfer failed: {e}"
        ),
    }
    if nobody_came {
        m.reject(Reason::Timeout);
    }
    // Nobody came and nothing was asked for: no transfer took place. Asked for, it failed.
    if transfer.is_some() || !nobody_came {
        m.transfer(TransferVerb::from_verb(verb), TransferOutcome::of(&o.result), o.duration);
    }
    if !o.stolen_attempts.is_empty() {
        warn!(reason = "port_stealing", peers = ?o.stolen_attempts, "data connections from unexpected peers refused");
    }
    if let (Some(log), Some(t)) = (&shared.xferlog, transfer) {
        let counts = o.bytes_known.then_some((o.to_client, o.to_server));
        write(log, client, t, user, counts, o.duration, o.result.is_ok());
    }
    (o.to_server, o.to_client)
}

/// The transfer on `task` is cut short (ABOR, the session's end) while ftpgate still holds
/// its channel: logged, and in the transfer log as incomplete with the bytes it had moved.
pub(super) fn aborted(shared: &Shared, client: IpAddr, task: &DataTask, t: &TransferInfo, user: Option<&str>) {
    let (to_client, to_server) = (task.bytes.to_client(), task.bytes.to_server());
    let duration = task.started.elapsed();
    info!(
        verb = t.verb.as_str(),
        mode = task.mode.label(),
        bytes_to_client = to_client,
        bytes_to_server = to_server,
        duration_ms = duration.as_millis() as u64,
        "transfer aborted"
    );
    // A kernel channel that still waited carried nothing: its transfer log says "unknown".
    let counts = task.flow.is_none().then_some((to_client, to_server));
    if let Some(log) = &shared.xferlog {
        write(log, client, t, user, counts, duration, false);
    }
}

/// Writes a file transfer's xferlog line (also of one that failed or never got its data
/// connection: status incomplete); `counts` toward the client and toward the server.
pub(super) fn write(
    log: &XferLog,
    client: IpAddr,
    t: &TransferInfo,
    user: Option<&str>,
    counts: Option<(u64, u64)>,
    duration: Duration,
    complete: bool,
) {
    let outgoing = match t.verb.as_str() {
        "RETR" => true,
        "STOR" | "STOU" | "APPE" => false,
        _ => return,
    };
    log.write(&crate::xferlog::Entry {
        client,
        bytes: counts.map(|(to_client, to_server)| if outgoing { to_client } else { to_server }),
        duration,
        path: &t.path,
        binary: t.binary,
        outgoing,
        user: user.unwrap_or("-"),
        complete,
    });
}
