//! Data channels on the kernel path: every check and rewrite on the control channel stays
//! ftpgate's, but instead of a listener and a relay the channel is one pinhole that lets the
//! kernel forward exactly the expected connection, once.
//!
//! What each side sees is what it saw on the control connection: the server talks to the
//! firewall's address ftpgate uses toward it (servers such as vsftpd refuse data from
//! another address); the client talks to the address it dialled (the server's, when
//! intercepted; ftpgate's in reverse mode).
//!
//! The channel ends when ftpgate sees the pinhole used (the rule that translated its first
//! packet deleted the gate element): from then on client and server hold one end-to-end TCP
//! connection, whose ordering against the control channel is the same as on a routed path, so
//! the final reply need not wait for its last byte. Unused, it ends when the pinhole expires
//! (the data accept timeout).
//!
//! The final reply does wait for the channel's end, so the check must not lag: every reply of
//! the server while the channel waits (its 150, its 226) wakes the check at once, one netlink
//! round trip; polling with backoff remains only for the accept timeout. (The kernel sends no
//! notification when the packet path deletes a set element; conntrack's NEW events would
//! tell, but they come for every connection of the namespace, are lost under load, and a
//! server's reply is the moment the answer matters anyway.)
//!
//! The bytes are counted by conntrack, read when the connection ends (`kernel_count`).
//!
//! ftpgate cannot close such a connection, but it can have the kernel cut it: when a transfer
//! is aborted (ABOR, its channel dropped) the driver asks for the pinhole's connection to be
//! reset ([`Pinholes::cut`]), so a server blocked on a client that stopped reading learns at
//! once that the transfer is over and answers the ABOR.

use super::data::{data_permit, spawn_channel, DataTask, Endpoints};
use super::Shared;
use crate::addr::canonical_ip;
use crate::config::Advertise;
use crate::data::channel::{carries, DataError, DataOutcome};
use crate::data::sockets::reserve_in_range;
use crate::labels::DataMode;
use crate::pinhole::{poll_interval, Pinhole, Pinholes, Ticket};
use crate::session::{DataReady, DataRequest};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// How long a cut connection's packets are answered with resets: long enough for each end to
/// send one more (a sender facing a closed window probes it with backoff), short enough that
/// the kernel forgets it soon.
pub const CUT_FOR: Duration = Duration::from_secs(60);

/// Takes the pinhole away if its channel is dropped (ABOR, a new PASV, the session's end)
/// while it still waits; a used pinhole is left to its timeout, during which its entries
/// turn away a second connection to the same place.
struct Armed {
    pinholes: Arc<Pinholes>,
    pinhole: Pinhole,
    ticket: Ticket,
    used: bool,
}

impl Drop for Armed {
    fn drop(&mut self) {
        if !self.used {
            self.pinholes.remove(self.pinhole, self.ticket);
        }
    }
}

/// The address the client is told for a passive connection (as the relay path tells it), and
/// the address its connection arrives with at the firewall.
fn advertised(shared: &Shared, ep: &Endpoints) -> (IpAddr, IpAddr) {
    let dialled_original = ep.original.map_or(ep.client_side.ip(), |o| o.ip());
    match shared.cfg.live.advertise {
        Advertise::Original => (dialled_original, dialled_original),
        Advertise::Local => (ep.client_side.ip(), ep.client_side.ip()),
        // ftpgate behind another NAT: that NAT turns the fixed address into the local one.
        Advertise::Fixed(ip) => (ip, ep.client_side.ip()),
    }
}

/// What the client sees as the other end of an active connection: the server it dialled when
/// intercepted, ftpgate's own address in reverse mode.
fn server_as_seen(ep: &Endpoints) -> IpAddr {
    ep.original.map_or(ep.client_side.ip(), |o| o.ip())
}

/// Installs the pinhole the request needs and starts watching it.
pub async fn open(
    shared: &Shared,
    pinholes: &Arc<Pinholes>,
    ep: &Endpoints,
    request: DataRequest,
) -> io::Result<(DataReady, DataTask)> {
    let permit = data_permit(shared)?;
    let live = &shared.cfg.live;
    let (pinhole, ready, reserved) = match request {
        DataRequest::Passive { server_data } => {
            let (advertise, dialled) = advertised(shared, ep);
            // The client connects to the server's own data port, at the address it is told.
            let port = server_data.port();
            let p = Pinhole {
                peer: ep.client.ip(),
                dialled: SocketAddr::new(dialled, port),
                target: server_data,
                source: ep.server_side.ip(),
                source_port: None,
            };
            (p, DataReady::Listening(SocketAddr::new(advertise, port)), None)
        }
        DataRequest::Active { client_data } => {
            // The port the server is told stays ftpgate's while the pinhole lives.
            let sock = reserve_in_range(ep.server_side.ip(), live.active_ports)?;
            let at = sock.local_addr()?.as_socket().ok_or_else(|| io::Error::other("reserved port has no address"))?;
            // A data address other than the client's is a site-to-site transfer the policy
            // allowed: that host sees the firewall, not the server spoofed.
            let to_client = canonical_ip(client_data.ip()) == canonical_ip(ep.client.ip());
            let source = if to_client {
                server_as_seen(ep)
            } else if canonical_ip(client_data.ip()) == canonical_ip(ep.upstream.ip()) {
                ep.server_side.ip()
            } else {
                ep.client_side.ip()
            };
            let p = Pinhole {
                peer: ep.upstream.ip(),
                dialled: at,
                target: client_data,
                source,
                source_port: (to_client && live.active_source_port_20).then_some(20),
            };
            (p, DataReady::Listening(at), Some(sock))
        }
        DataRequest::Listeners | DataRequest::Connect { .. } => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel data path forwards one connection as it is; converting between \
                 passive and active (server_data_mode) needs data_path: relay",
            ))
        }
    };
    let wait = live.timeouts.data_accept;
    // The kernel's own expiry comes a little after ftpgate's deadline, so a gate that is gone
    // before the deadline was used, never expired; at the deadline ftpgate removes it.
    let ticket = pinholes.install(pinhole, wait + EXPIRY_MARGIN).await.map_err(io::Error::other)?;
    tracing::debug!(?pinhole, "pinhole installed");
    let armed = Armed { pinholes: pinholes.clone(), pinhole, ticket, used: false };
    let (carries_tx, _carrier) = carries();
    let mode = request.mode();
    let wake = Arc::new(Notify::new());
    let task = watch(armed, mode, wait, reserved, wake.clone());
    let mut channel = spawn_channel(mode, task, carries_tx, Arc::default(), shared, permit, ep);
    channel.flow = Some(pinhole);
    channel.wake = Some(wake);
    Ok((ready, channel))
}

/// Checks the gate element, whenever woken and at polls that back off, until the kernel used
/// it or the accept timeout passed.
async fn watch(
    mut armed: Armed,
    mode: DataMode,
    wait: Duration,
    reserved: Option<socket2::Socket>,
    wake: Arc<Notify>,
) -> DataOutcome {
    let started = Instant::now();
    let deadline = started + wait;
    let expected = armed.pinhole.peer;
    let mut checks = 0u32;
    let result = loop {
        // Nobody can have used it before the client was told where to connect: wait first.
        let left = deadline.saturating_duration_since(Instant::now());
        let woken = tokio::select! {
            _ = wake.notified() => true,
            _ = tokio::time::sleep(poll_interval(checks).min(left)) => {
                checks += 1;
                false
            }
        };
        match armed.pinholes.armed(armed.pinhole, armed.ticket).await {
            Ok(false) => {
                armed.used = true;
                tracing::info!(peer = %expected, "data connection handed to the kernel");
                // The driver wakes the watch only once the transfer's command went to the
                // server: a client that connects before it sends RETR must not have its
                // channel end before the transfer it carries is known (its log, its counts).
                if !woken {
                    wake.notified().await;
                }
                break Ok(());
            }
            Ok(true) if Instant::now() >= deadline => break Err(DataError::AcceptTimeout { expected, after: wait }),
            Ok(true) => {}
            Err(e) => break Err(DataError::Kernel(e.to_string())),
        }
    };
    drop(reserved);
    DataOutcome {
        mode,
        to_client: 0,
        to_server: 0,
        duration: started.elapsed(),
        stolen_attempts: Vec::new(),
        handed_over: false,
        bytes_known: false,
        tls: (false, false),
        result,
    }
}
