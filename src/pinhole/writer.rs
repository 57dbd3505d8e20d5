//! One netlink socket for the whole process, owned by one thread: sessions hand it requests,
//! it writes every installation waiting at that moment as one nf_tables transaction and
//! answers each request. A netlink round trip takes microseconds; a thread of its own keeps it
//! off the async workers and keeps the socket's replies in order without a dispatcher.

use super::conn::{Conn, Install, Ports};
use super::nft::{self, Element};
use super::{Flow, Found, Pinhole, PinholeError, Ticket};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NlAddr};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// A reply the kernel owes and does not send within this is an error, not a hang.
const REPLY_WAIT: Duration = Duration::from_secs(2);
/// Installations written in one transaction at most.
const MAX_BATCH: usize = 64;
/// Requests waiting for the writer at most; beyond, a session is told the kernel is busy.
const QUEUE: usize = 4096;

enum Request {
    Install(Install),
    Armed { gate: Element, port: Option<Element>, ticket: u64, done: oneshot::Sender<io::Result<bool>> },
    Remove { elements: [Element; 3], port: Option<Element>, ticket: u64 },
    Cut { kill: Element, timeout: Duration },
    Counters { done: oneshot::Sender<io::Result<[u64; 2]>> },
    FindFlow { pinhole: Pinhole, done: oneshot::Sender<io::Result<Option<Found>>> },
    ReadFlow { src: SocketAddr, dst: SocketAddr, done: oneshot::Sender<io::Result<Option<Flow>>> },
}

/// The handle sessions share; dropping the last one ends the writer thread.
pub struct Pinholes {
    /// The opened socket until the writer starts with it.
    idle: Mutex<Option<Conn>>,
    tx: OnceLock<mpsc::SyncSender<Request>>,
    /// A second socket and thread for the conntrack reads of byte counting: they never wait
    /// behind, or hold up, the pinholes' transactions (a filtered dump takes milliseconds).
    idle_counter: Mutex<Option<Conn>>,
    counter_tx: OnceLock<mpsc::SyncSender<Request>>,
    /// The next installation's [`Ticket`].
    tickets: AtomicU64,
    /// Whether the kernel counts the bytes of connections (conntrack accounting) as found at
    /// start-up: without it, there is no conntrack entry worth reading.
    counting: bool,
}

impl Pinholes {
    /// Opens the socket and checks that every set of the table is there and that the kernel
    /// lets this process use it; then starts the writer.
    pub fn open() -> Result<Self, PinholeError> {
        let setup = |what, hint| move |source| PinholeError::Setup { what, source, hint };
        let ports = Ports::default();
        let mut conn = Conn::new(socket()?, ports.clone());
        let counter = Conn::new(socket()?, ports);
        for set in nft::SETS {
            let seq = conn.next_seq();
            conn.send(&nft::serialize(&[nft::get_set(set, seq)]))
                .map_err(setup("cannot ask the kernel for the table", ""))?;
            conn.replies(&[seq]).and_then(|mut r| r.remove(&seq).unwrap_or(Ok(false))).map_err(|e| {
                let hint = match e.raw_os_error() {
                    Some(libc::ENOENT) => {
                        " (load nftables/ftpgate-kernel-path.nft first: table inet ftpgate_kernel_path and its sets)"
                    }
                    Some(libc::EPERM) => " (the kernel data path needs CAP_NET_ADMIN)",
                    _ => "",
                };
                PinholeError::Setup { what: "the pinhole table is not usable", source: e, hint }
            })?;
        }
        let counting = super::accounting::ensure_on();
        Ok(Self {
            idle: Mutex::new(Some(conn)),
            tx: OnceLock::new(),
            idle_counter: Mutex::new(Some(counter)),
            counter_tx: OnceLock::new(),
            tickets: AtomicU64::new(1),
            counting,
        })
    }

    /// The writer thread (see [`started`]).
    fn writer(&self) -> Result<&mpsc::SyncSender<Request>, PinholeError> {
        started(&self.tx, &self.idle, "ftpgate-pinholes")
    }

    fn counter(&self) -> Result<&mpsc::SyncSender<Request>, PinholeError> {
        started(&self.counter_tx, &self.idle_counter, "ftpgate-counts")
    }

    fn submit_count(&self, r: Request) -> Result<(), PinholeError> {
        offer(self.counter()?, r, ["too many conntrack reads waiting", "the conntrack reader stopped"])
    }

    fn submit(&self, r: Request) -> Result<(), PinholeError> {
        offer(self.writer()?, r, ["too many pinhole requests waiting", "the pinhole writer stopped"])
    }

    /// Arms a pinhole for `timeout`; after it the kernel forgets the pinhole by itself.
    pub async fn install(&self, p: Pinhole, timeout: Duration) -> Result<Ticket, PinholeError> {
        if !p.is_consistent() {
            return Err(PinholeError::MixedFamilies);
        }
        let (done, rx) = oneshot::channel();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (elements, guard) = (nft::elements(&p), nft::guard(&p));
        let install = Install { elements, guard, timeout, ticket, done, replaced: false, renew: false };
        self.submit(Request::Install(install))?;
        rx.await.map_err(|_| PinholeError::Gone("the pinhole writer stopped"))?.map_err(PinholeError::Install)?;
        Ok(Ticket(ticket))
    }

    /// Whether the pinhole still waits for its connection (false once used or expired).
    /// An installation whose key a later one armed again was used (only then is it re-armed).
    pub async fn armed(&self, p: Pinhole, install: Ticket) -> Result<bool, PinholeError> {
        let (done, rx) = oneshot::channel();
        self.submit(Request::Armed { gate: nft::gate(&p), port: nft::port(&p), ticket: install.0, done })?;
        rx.await.map_err(|_| PinholeError::Gone("the pinhole writer stopped"))?.map_err(PinholeError::Install)
    }

    /// Cuts the connection that used pinhole `p`: for `timeout`, each packet of it, either way,
    /// is answered with a TCP reset. A later pinhole with the same key takes the cut away.
    pub fn cut(&self, p: Pinhole, timeout: Duration) {
        if let Err(e) = self.submit(Request::Cut { kill: nft::kill(&p), timeout }) {
            tracing::warn!(error = %e, "data connection not cut");
        }
    }

    /// The packet counts of the table's counters `used` and `refused`.
    pub async fn counters(&self) -> Result<[u64; 2], PinholeError> {
        let (done, rx) = oneshot::channel();
        self.submit(Request::Counters { done })?;
        rx.await.map_err(|_| PinholeError::Gone("the pinhole writer stopped"))?.map_err(PinholeError::Install)
    }

    /// Whether kernel data connections' bytes can be counted (conntrack accounting is on).
    pub fn counting(&self) -> bool {
        self.counting
    }

    /// The conntrack entry of the connection that used pinhole `p`, when it can be told apart.
    pub async fn find_flow(&self, p: Pinhole) -> Result<Option<Found>, PinholeError> {
        let (done, rx) = oneshot::channel();
        self.submit_count(Request::FindFlow { pinhole: p, done })?;
        rx.await.map_err(|_| PinholeError::Gone("the pinhole writer stopped"))?.map_err(PinholeError::Conntrack)
    }

    /// The conntrack entry with this original tuple as it is now; `None` once it is gone.
    pub async fn read_flow(&self, src: SocketAddr, dst: SocketAddr) -> Result<Option<Flow>, PinholeError> {
        let (done, rx) = oneshot::channel();
        self.submit_count(Request::ReadFlow { src, dst, done })?;
        rx.await.map_err(|_| PinholeError::Gone("the pinhole writer stopped"))?.map_err(PinholeError::Conntrack)
    }

    /// Takes installation `install` of a pinhole away (its data channel was dropped); what is
    /// already gone, or was armed again by a later installation with its key, is left alone.
    pub fn remove(&self, p: Pinhole, install: Ticket) {
        let r = Request::Remove { elements: nft::elements(&p), port: nft::port(&p), ticket: install.0 };
        if let Err(e) = self.submit(r) {
            tracing::warn!(error = %e, "pinhole not removed; it expires by itself");
        }
    }
}

/// A netlink socket to netfilter, connected to the kernel, whose replies time out.
fn socket() -> Result<Socket, PinholeError> {
    let setup = |what, hint| move |source| PinholeError::Setup { what, source, hint };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(setup("cannot open a netfilter netlink socket", ""))?;
    sock.bind_auto().map_err(setup("cannot bind the netlink socket", ""))?;
    sock.connect(&NlAddr::new(0, 0)).map_err(setup("cannot address the kernel", ""))?;
    nix::sys::socket::setsockopt(
        &sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(REPLY_WAIT.as_secs() as _, 0),
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
    .map_err(setup("cannot set the netlink reply timeout", ""))?;
    Ok(sock)
}

/// Hands a request to a thread without waiting: `[busy, stopped]` say why it was not taken.
fn offer(tx: &mpsc::SyncSender<Request>, r: Request, [busy, stopped]: [&'static str; 2]) -> Result<(), PinholeError> {
    tx.try_send(r).map_err(|e| match e {
        mpsc::TrySendError::Full(_) => PinholeError::Gone(busy),
        mpsc::TrySendError::Disconnected(_) => PinholeError::Gone(stopped),
    })
}

/// The thread that owns `idle`'s connection, started on first use. Capabilities belong to
/// threads: one started before the privilege drop would lose CAP_NET_ADMIN with the change of
/// user (which reaches every thread) without getting it back (which only the dropping thread
/// does), and the kernel checks it on every request. First use is in a session, on a runtime
/// thread made after the drop, whose capabilities the new thread inherits.
fn started<'a>(
    tx: &'a OnceLock<mpsc::SyncSender<Request>>,
    idle: &Mutex<Option<Conn>>,
    name: &str,
) -> Result<&'a mpsc::SyncSender<Request>, PinholeError> {
    if let Some(tx) = tx.get() {
        return Ok(tx);
    }
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = tx.get() {
        return Ok(tx);
    }
    let conn = idle.take().ok_or(PinholeError::Gone("a pinhole thread could not be started"))?;
    let (sender, rx) = mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || conn.serve(rx))
        .map_err(|_| PinholeError::Gone("a pinhole thread could not be started"))?;
    Ok(tx.get_or_init(|| sender))
}

impl Conn {
    fn serve(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut installs = Vec::new();
            let mut next = Some(first);
            while let Some(r) = next.take() {
                match r {
                    Request::Install(inst) => {
                        // A removal asked before this installation goes first (same key).
                        self.flush_deletes();
                        installs.push(inst)
                    }
                    // In the order asked: a removal or a check after an installation sees it.
                    Request::Armed { gate, port, ticket, done } => {
                        self.install_all(std::mem::take(&mut installs));
                        let armed = if self.superseded(&gate, ticket) { Ok(false) } else { self.armed(&gate) };
                        // Used: the port it came from is taken now, before the kernel expires it.
                        if let (Ok(false), Some(port)) = (&armed, port) {
                            self.keep_port(&port);
                        }
                        let _ = done.send(armed);
                    }
                    Request::Remove { elements, port, ticket } => {
                        self.install_all(std::mem::take(&mut installs));
                        // Armed again by a later installation: those elements are its own now.
                        if !self.superseded(&elements[0], ticket) {
                            self.remove(&elements);
                            // Perhaps used a moment ago: its port must not be taken for a later one.
                            if let Some(port) = port {
                                self.deletes.push(port);
                            }
                        }
                    }
                    Request::Cut { kill, timeout } => {
                        self.install_all(std::mem::take(&mut installs));
                        self.flush_deletes();
                        self.cut(kill, timeout)
                    }
                    Request::Counters { done } => {
                        let [used, refused] = nft::COUNTERS;
                        let _ = done.send(self.counter(used).and_then(|u| Ok([u, self.counter(refused)?])));
                    }
                    Request::FindFlow { pinhole, done } => {
                        let _ = done.send(self.find_flow(&pinhole));
                    }
                    Request::ReadFlow { src, dst, done } => {
                        let _ = done.send(self.read_flow(src, dst));
                    }
                }
                if installs.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.install_all(installs);
            self.flush_deletes();
        }
    }
}
