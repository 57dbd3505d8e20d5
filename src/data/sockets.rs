//! Socket construction shared by the control and data paths.

use crate::config::{PortRange, SocketTags};
use crate::intercept::set_transparent;
use rand::Rng;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn new_socket(addr: &SocketAddr, transparent: bool) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]` and `0.0.0.0` listeners must coexist, and a v4 client must never reach a v6
        // socket in mapped form unannounced.
        sock.set_only_v6(true)?;
    }
    if transparent {
        set_transparent(&sock, addr.is_ipv6())?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// A listening socket on exactly `addr`, before any runtime exists (non-blocking).
pub fn listen_std(addr: SocketAddr, transparent: bool, backlog: i32) -> io::Result<std::net::TcpListener> {
    let sock = new_socket(&addr, transparent)?;
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(backlog)?;
    Ok(sock.into())
}

/// A listening socket on exactly `addr`, registered with the running tokio runtime.
pub fn listen(addr: SocketAddr, transparent: bool, backlog: i32) -> io::Result<TcpListener> {
    TcpListener::from_std(listen_std(addr, transparent, backlog)?)
}

/// A data listener on `ip`, on a free port of `range` (or a kernel-chosen port without one).
/// Ports are probed from a random start so that consecutive sessions do not collide; the kernel's
/// bind is the arbiter of what is free.
pub fn listen_in_range(ip: IpAddr, range: Option<PortRange>, transparent: bool) -> io::Result<TcpListener> {
    let Some(range) = range else {
        return listen(SocketAddr::new(ip, 0), transparent, 1);
    };
    first_free(ip, range, |at| listen(at, transparent, 1))
}

/// A port of `range` (or a kernel-chosen one) on `ip`, bound and never listening: kept by the
/// kernel data path for a pinhole whose connection the kernel forwards elsewhere, so that no
/// other socket takes the port meanwhile, and a connection the pinhole does not translate is
/// answered with a reset. Without SO_REUSEADDR, which would let another bound socket share it.
pub fn reserve_in_range(ip: IpAddr, range: Option<PortRange>) -> io::Result<Socket> {
    let bind = |at: SocketAddr| {
        let sock = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        if at.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        sock.bind(&SockAddr::from(at))?;
        Ok(sock)
    };
    match range {
        Some(range) => first_free(ip, range, bind),
        None => bind(SocketAddr::new(ip, 0)),
    }
}

fn first_free<T>(ip: IpAddr, range: PortRange, take: impl Fn(SocketAddr) -> io::Result<T>) -> io::Result<T> {
    let len = range.len();
    let start = rand::thread_rng().gen_range(0..len);
    let mut last_err = None;
    for i in 0..len {
        let port = range.first + ((start + i) % len) as u16;
        match take(SocketAddr::new(ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "no free port in {}-{} on {ip} ({})",
            range.first,
            range.last,
            last_err.map_or_else(|| "empty".to_owned(), |e| e.to_string())
        ),
    ))
}

/// Sets `tags` on a socket: before its first packet where ftpgate connects, right after accept
/// where it listens.
pub fn tag(sock: SockRef<'_>, tags: SocketTags, ipv6: bool) -> io::Result<()> {
    if let Some(mark) = tags.mark {
        set_mark(&sock, mark)?;
    }
    if let Some(dscp) = tags.dscp {
        // DSCP is the upper six bits of the former TOS octet; ECN keeps the lower two.
        let tos = u32::from(dscp) << 2;
        if ipv6 {
            sock.set_tclass_v6(tos)?;
        } else {
            sock.set_tos(tos)?;
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_mark(sock: &SockRef<'_>, mark: u32) -> io::Result<()> {
    sock.set_mark(mark)
}

#[cfg(not(target_os = "linux"))]
fn set_mark(_sock: &SockRef<'_>, _mark: u32) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "SO_MARK exists only on Linux"))
}

/// Where a connection ftpgate makes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// An address, a port (0: the kernel's choice), or both.
    pub addr: SocketAddr,
    /// Bound transparently: `addr` is another host's (the original server's), which the
    /// firewall's rules deliver replies for to this socket. Needs CAP_NET_ADMIN.
    pub transparent: bool,
}

impl From<SocketAddr> for Source {
    fn from(addr: SocketAddr) -> Self {
        Self { addr, transparent: false }
    }
}

/// Connects to `dst` from `src` (an address, a port, both or neither), tagged, within `timeout`.
/// A fixed source port (20 for clients that insist on it) may be shared by several connections
/// at once, since each goes to a different peer.
pub async fn connect(
    dst: SocketAddr,
    src: Option<Source>,
    timeout: Duration,
    tags: SocketTags,
) -> io::Result<TcpStream> {
    let sock = match dst {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    tag(SockRef::from(&sock), tags, dst.is_ipv6())?;
    if let Some(src) = src {
        if src.transparent {
            set_transparent(&SockRef::from(&sock), dst.is_ipv6())?;
        }
        if src.addr.port() != 0 {
            sock.set_reuseaddr(true)?;
        }
        sock.bind(src.addr)?;
    }
    match tokio::time::timeout(timeout, sock.connect(dst)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect to {dst} timed out after {timeout:?}"))),
    }
}

/// A source address of `ip`, port chosen by the kernel.
pub fn from_ip(ip: Option<IpAddr>) -> Option<Source> {
    ip.map(|ip| SocketAddr::new(ip, 0).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn range_is_respected_and_exhaustion_is_reported() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // A one-port range on a port the kernel just handed out.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let range = PortRange { first: port, last: port };
        let a = listen_in_range(ip, Some(range), false).unwrap();
        assert_eq!(a.local_addr().unwrap().port(), port);
        let e = listen_in_range(ip, Some(range), false).unwrap_err();
        assert!(e.to_string().contains(&format!("no free port in {port}-{port}")), "{e}");
        drop(a);
        assert!(listen_in_range(ip, Some(range), false).is_ok());
    }

    #[tokio::test]
    async fn tags_are_set_before_connecting() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tags = SocketTags { mark: None, dscp: Some(10) };
        let s = connect(l.local_addr().unwrap(), None, Duration::from_secs(5), tags).await.unwrap();
        assert_eq!(SockRef::from(&s).tos().unwrap(), 40);
        let (accepted, _) = l.accept().unwrap();
        tag(SockRef::from(&accepted), SocketTags { mark: None, dscp: Some(46) }, false).unwrap();
        assert_eq!(SockRef::from(&accepted).tos().unwrap(), 184);
    }
}
