//! Opening data channels for a session: where listeners bind, what clients are told.

use super::Shared;
use crate::addr::{ClientAddr, LocalAddr, OriginalDst, UpstreamAddr};
use crate::config::{Advertise, InterceptMode};
use crate::data::channel::{self, DataOutcome, DataPlan, DataTimeouts};
use crate::data::sockets::listen_in_range;
use crate::metrics::metrics;
use prometheus::IntGauge;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// The addresses a session's data channels are derived from.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    pub client: ClientAddr,
    /// Where the client's control connection arrived.
    pub client_side: LocalAddr,
    pub original: Option<OriginalDst>,
    pub upstream: UpstreamAddr,
    /// ftpgate's end of the control connection to the server.
    pub server_side: LocalAddr,
}

/// A running data channel; dropping it aborts the transfer and frees its place under
/// `limits.max_data_channels` at once (the aborted task itself ends at its next poll).
pub struct DataTask {
    pub handle: JoinHandle<DataOutcome>,
    pub started: Instant,
    _permit: OwnedSemaphorePermit,
    _active: ActiveChannel,
}

/// `ftpgate_data_channels_active{mode,family}` for as long as the channel exists.
struct ActiveChannel(IntGauge);

impl ActiveChannel {
    fn new(mode: &str, family: &str) -> Self {
        let m = metrics();
        m.data_channels.with_label_values(&[mode, family]).inc();
        let g = m.data_channels_active.with_label_values(&[mode, family]);
        g.inc();
        Self(g)
    }
}

impl Drop for ActiveChannel {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Drop for DataTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn timeouts(shared: &Shared) -> DataTimeouts {
    let t = &shared.cfg.timeouts;
    DataTimeouts { accept: t.data_accept, connect: t.connect, idle: t.data_idle }
}

/// Binds the client-facing listener; returns the address to advertise and the running channel.
pub fn open_passive(shared: &Shared, ep: &Endpoints, server_data: SocketAddr) -> io::Result<(SocketAddr, DataTask)> {
    let cfg = &shared.cfg;
    let tproxy = cfg.intercept == InterceptMode::Tproxy;
    // With TPROXY the client's data connection keeps the server's address as destination: the
    // listener is a transparent wildcard socket that the rule's socket lookup finds by port.
    // Otherwise it is where the control connection arrived (REDIRECT delivers there too).
    let bind_ip = if tproxy && ep.original.is_some() {
        if ep.client.is_ipv6() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    } else {
        ep.client_side.ip()
    };
    let permit = data_permit(shared)?;
    let listener = listen_in_range(bind_ip, Some(cfg.passive_ports), tproxy)?;
    let port = listener.local_addr()?.port();
    let ip: IpAddr = match cfg.advertise {
        Advertise::Original => ep.original.map_or(ep.client_side.ip(), |o| o.ip()),
        Advertise::Local => ep.client_side.ip(),
        Advertise::Fixed(ip) => ip,
    };
    let plan = DataPlan::Passive {
        listener,
        client_ip: ep.client.ip(),
        server_data,
        // Servers such as vsftpd insist that data comes from the control connection's address.
        source: Some(ep.server_side.ip()),
    };
    Ok((SocketAddr::new(ip, port), spawn(plan, timeouts(shared), permit, ep)))
}

/// Binds the server-facing listener; returns its address (for PORT/EPRT) and the channel.
pub fn open_active(shared: &Shared, ep: &Endpoints, client_data: SocketAddr) -> io::Result<(SocketAddr, DataTask)> {
    let permit = data_permit(shared)?;
    let listener = listen_in_range(ep.server_side.ip(), shared.cfg.active_ports, false)?;
    let at = listener.local_addr()?;
    let plan = DataPlan::Active { listener, server_ip: ep.upstream.ip(), client_data, source: None };
    Ok((at, spawn(plan, timeouts(shared), permit, ep)))
}

/// One of `limits.max_data_channels`, held for as long as the channel's task lives.
fn data_permit(shared: &Shared) -> io::Result<OwnedSemaphorePermit> {
    shared.data_permits.clone().try_acquire_owned().map_err(|_| {
        io::Error::other(format!("all {} data channels of the gateway are in use", shared.cfg.max_data_channels))
    })
}

fn spawn(plan: DataPlan, t: DataTimeouts, permit: OwnedSemaphorePermit, ep: &Endpoints) -> DataTask {
    let family = if ep.client.is_ipv6() { "ipv6" } else { "ipv4" };
    let active = ActiveChannel::new(plan.mode(), family);
    // A child of the session's span, so data-channel log lines carry the session's fields.
    let span = tracing::info_span!("data", mode = plan.mode());
    let handle = tokio::spawn(channel::run(plan, t).instrument(span));
    DataTask { handle, started: Instant::now(), _permit: permit, _active: active }
}
