//! Opening data channels for a session: where listeners bind, what clients are told.

use super::passive_index::Registration;
use super::Shared;
use crate::addr::{canonical_ip, ClientAddr, LocalAddr, OriginalDst, UpstreamAddr};
use crate::config::{Advertise, InterceptMode};
use crate::data::channel::{self, CarriesTx, ChannelBytes, ChannelContext, DataOutcome, DataPlan, DataTimeouts};
use crate::data::sockets::{from_ip, listen_in_range, Source};
use crate::labels::{DataMode, Family};
use crate::metrics::Active;
use crate::tls::DataTls;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
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
    /// Which way the transfer goes, told once its command goes to the server.
    pub carries: CarriesTx,
    pub started: Instant,
    pub mode: DataMode,
    /// Its bytes so far (the admin API's view of a running transfer).
    pub bytes: Arc<ChannelBytes>,
    /// On the kernel path: the pinhole, whose connection ftpgate cuts when the transfer is
    /// aborted.
    pub flow: Option<crate::pinhole::Pinhole>,
    /// On the kernel path: poked when the server replies, so the check whether the pinhole was
    /// used happens at once instead of at the next poll.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    _permit: OwnedSemaphorePermit,
    /// `ftpgate_data_channels_active{mode,family}` for as long as the channel exists.
    _active: Active,
    /// A passive channel's entry in the gateway's index, removed with the channel.
    _registration: Option<Registration>,
}

impl Drop for DataTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn context(shared: &Shared, bytes: Arc<ChannelBytes>, tls: DataTls) -> ChannelContext {
    let t = &shared.cfg.live.timeouts;
    ChannelContext {
        timeouts: DataTimeouts { accept: t.data_accept, connect: t.connect, idle: t.data_idle },
        tags: shared.cfg.live.data_tags,
        metrics: shared.metrics.clone(),
        bytes,
        tls,
    }
}

/// The client-facing listener (bound as the interception mode needs) and the address the client
/// is told.
fn client_listener(shared: &Shared, ep: &Endpoints) -> io::Result<(TcpListener, SocketAddr)> {
    let cfg = &shared.cfg.live;
    let bind = shared.interceptor.client_data_listener(ep.client_side, ep.original);
    let listener = listen_in_range(bind.ip, Some(cfg.passive_ports), bind.transparent)?;
    let port = listener.local_addr()?.port();
    let ip: IpAddr = match cfg.advertise {
        Advertise::Original => ep.original.map_or(ep.client_side.ip(), |o| o.ip()),
        Advertise::Local => ep.client_side.ip(),
        Advertise::Fixed(ip) => ip,
    };
    Ok((listener, SocketAddr::new(ip, port)))
}

/// The server-facing listener, in `active.ports` when set.
fn server_listener(shared: &Shared, ep: &Endpoints) -> io::Result<TcpListener> {
    listen_in_range(ep.server_side.ip(), shared.cfg.live.active_ports, false)
}

/// Where connections toward the client come from: the original server's address when
/// `active.source` says so (the client sees its control peer, as clients that check this
/// require), port 20 when configured; `None` leaves both to the kernel.
fn client_source(shared: &Shared, ep: &Endpoints, named: SocketAddr) -> io::Result<Option<Source>> {
    let live = &shared.cfg.live;
    let port = if live.active_source_port_20 { 20 } else { 0 };
    // Only toward the client itself: another host's replies to the server's address (a
    // site-to-site peer policy.fxp admits) need not pass this firewall at all.
    let own = canonical_ip(named.ip()) == canonical_ip(ep.client.ip());
    Ok(match ep.original {
        // pf: ftpgate connects from its own address; a nat rule rewrites it to the server's.
        Some(original)
            if own && shared.cfg.active_transparent() && shared.cfg.startup.intercept == InterceptMode::Pf =>
        {
            Some(super::pf_source::translated(shared, SocketAddr::new(original.ip(), port), named)?)
        }
        Some(original) if own && shared.cfg.active_transparent() => {
            Some(Source { addr: SocketAddr::new(original.ip(), port), transparent: true })
        }
        _ if port != 0 => {
            let any =
                if ep.client.is_ipv6() { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
            Some(SocketAddr::new(any, port).into())
        }
        _ => None,
    })
}

/// The data address a client named in PORT/EPRT, resolved: one of this gateway's own passive
/// endpoints of the same client (a site-to-site transfer) is the server data port behind it,
/// dialled from the server side; anything else is dialled as the client.
fn resolve_named(shared: &Shared, ep: &Endpoints, named: SocketAddr) -> io::Result<(SocketAddr, Option<Source>)> {
    if canonical_ip(named.ip()) != canonical_ip(ep.client.ip()) {
        if let Some(server_data) = shared.passive_index.claim(ep.client.ip(), named) {
            tracing::info!(%named, %server_data, "FXP: data address is a passive endpoint of this gateway, connecting its server directly");
            return Ok((server_data, from_ip(Some(ep.server_side.ip()))));
        }
    }
    Ok((named, client_source(shared, ep, named)?))
}

/// Binds the client-facing listener; returns the address to advertise and the running channel.
pub fn open_passive(
    shared: &Shared,
    ep: &Endpoints,
    server_data: SocketAddr,
    tls: DataTls,
) -> io::Result<(SocketAddr, DataTask)> {
    let permit = data_permit(shared)?;
    let (listener, advertise) = client_listener(shared, ep)?;
    let names = [advertise.ip(), ep.original.map_or(ep.client_side.ip(), |o| o.ip())];
    let (registration, handed_over) =
        shared.passive_index.register(ep.client.ip(), advertise.port(), names, server_data);
    let plan = DataPlan::Passive {
        listener,
        client_ip: ep.client.ip(),
        server_data,
        // Servers such as vsftpd insist that data comes from the control connection's address.
        source: from_ip(Some(ep.server_side.ip())),
        handed_over: Some(handed_over),
    };
    let mut task = spawn(plan, shared, permit, ep, tls);
    task._registration = Some(registration);
    Ok((advertise, task))
}

/// Binds the server-facing listener; returns its address (for PORT/EPRT) and the channel.
pub fn open_active(
    shared: &Shared,
    ep: &Endpoints,
    client_data: SocketAddr,
    tls: DataTls,
) -> io::Result<(SocketAddr, DataTask)> {
    let permit = data_permit(shared)?;
    let listener = server_listener(shared, ep)?;
    let at = listener.local_addr()?;
    let (client_data, source) = resolve_named(shared, ep, client_data)?;
    let plan = DataPlan::Active { listener, server_ip: ep.upstream.ip(), client_data, source };
    Ok((at, spawn(plan, shared, permit, ep, tls)))
}

/// Client passive, server active: binds both listeners; returns what the client is told, where
/// the server is sent, and the channel.
pub fn open_listeners(shared: &Shared, ep: &Endpoints, tls: DataTls) -> io::Result<(SocketAddr, SocketAddr, DataTask)> {
    let permit = data_permit(shared)?;
    let (client, advertise) = client_listener(shared, ep)?;
    let server = server_listener(shared, ep)?;
    let at = server.local_addr()?;
    let plan = DataPlan::Listeners { client, client_ip: ep.client.ip(), server, server_ip: ep.upstream.ip() };
    Ok((advertise, at, spawn(plan, shared, permit, ep, tls)))
}

/// Client active, server passive: starts connecting to both.
pub fn start_connect(
    shared: &Shared,
    ep: &Endpoints,
    server_data: SocketAddr,
    client_data: SocketAddr,
    tls: DataTls,
) -> io::Result<DataTask> {
    let permit = data_permit(shared)?;
    let (client_data, client_source) = resolve_named(shared, ep, client_data)?;
    let plan = DataPlan::Connect {
        server_data,
        server_source: from_ip(Some(ep.server_side.ip())),
        client_data,
        client_source,
    };
    Ok(spawn(plan, shared, permit, ep, tls))
}

/// One of `limits.max_data_channels`, held for as long as the channel's task lives.
pub(super) fn data_permit(shared: &Shared) -> io::Result<OwnedSemaphorePermit> {
    shared.data_permits.clone().try_acquire_owned().map_err(|_| {
        io::Error::other(format!(
            "all {} data channels of the gateway are in use",
            shared.cfg.startup.max_data_channels
        ))
    })
}

fn spawn(plan: DataPlan, shared: &Shared, permit: OwnedSemaphorePermit, ep: &Endpoints, tls: DataTls) -> DataTask {
    let mode = plan.mode();
    let (carries, carrier) = channel::carries();
    let bytes = Arc::new(ChannelBytes::default());
    spawn_channel(
        mode,
        channel::run(plan, context(shared, bytes.clone(), tls), carrier),
        carries,
        bytes,
        shared,
        permit,
        ep,
    )
}

/// Runs a data channel's task (relayed, or a kernel pinhole's watch) as a [`DataTask`].
pub(super) fn spawn_channel(
    mode: DataMode,
    task: impl std::future::Future<Output = DataOutcome> + Send + 'static,
    carries: CarriesTx,
    bytes: Arc<ChannelBytes>,
    shared: &Shared,
    permit: OwnedSemaphorePermit,
    ep: &Endpoints,
) -> DataTask {
    let active = shared.metrics.data_channel_opened(mode, Family::of(ep.client.ip()));
    // A child of the session's span, so data-channel log lines carry the session's fields.
    let span = tracing::info_span!("data", mode = mode.label());
    let handle = tokio::spawn(task.instrument(span));
    DataTask {
        handle,
        carries,
        started: Instant::now(),
        mode,
        bytes,
        flow: None,
        wake: None,
        _permit: permit,
        _active: active,
        _registration: None,
    }
}
