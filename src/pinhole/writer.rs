//! One netlink socket for the whole process, owned by one thread: sessions hand it requests,
//! it writes every installation waiting at that moment as one nf_tables transaction and
//! answers each request. A netlink round trip takes microseconds; a thread of its own keeps it
//! off the async workers and keeps the socket's replies in order without a dispatcher.

use super::conn::{Conn, Install};
use super::nft::{self, Element};
use super::{Flow, Pinhole, PinholeError};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NlAddr};
use std::io;
use std::net::SocketAddr;
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
    Armed { gate: Element, port: Option<Element>, done: oneshot::Sender<io::Result<bool>> },
    Remove { elements: [Element; 3], port: Option<Element> },
    Cut { kill: Element, timeout: Duration },
    Counters { done: oneshot::Sender<io::Result<[u64; 2]>> },
    FindFlow { pinhole: Pinhole, done: oneshot::Sender<io::Result<Option<Flow>>> },
    ReadFlow { src: SocketAddr, dst: SocketAddr, done: oneshot::Sender<io::Result<Option<Flow>>> },
}

/// The handle sessions share; dropping the last one ends the writer thread.
pub struct Pinholes {
    /// The opened socket until the writer starts with it.
    idle: Mutex<Option<Conn>>,
    tx: OnceLock<mpsc::SyncSender<Request>>,
    /// Whether the kernel counts the bytes of connections (conntrack accounting) as found at
    /// start-up: without it, there is no conntrack entry worth reading.
    counting: bool,
}

impl Pinholes {
    /// Opens the socket and checks that every set of the table is there and that the kernel
    /// lets this process use it; then starts the writer.
    pub fn open() -> Result<Self, PinholeError> {
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
        let mut conn = Conn::new(sock);
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
        Ok(Self { idle: Mutex::new(Some(conn)), tx: OnceLock::new(), counting })
    }

    /// The writer thread, started on first use. Capabilities belong to threads: one started
    /// before the privilege drop would lose CAP_NET_ADMIN with the change of user (which
    /// reaches every thread) without getting it back (which only the dropping thread does),
    /// and the kernel checks it on every request. First use is in a session, on a runtime
    /// thread made after the drop, whose capabilities the writer inherits.
    fn writer(&self) -> Result<&mpsc::SyncSender<Request>, PinholeError> {
        if let Some(tx) = self.tx.get() {
            return Ok(tx);
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = self.tx.get() {
            return Ok(tx);
        }
        let conn = idle.take().ok_or(PinholeError::Gone("the pinhole writer could not be started"))?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("ftpgate-pinholes".into())
            .spawn(move || conn.serve(rx))
            .map_err(|_| PinholeError::Gone("the pinhole writer could not be started"))?;
        Ok(self.tx.get_or_init(|| tx))
    }

    fn submit(&self, r: Request) -> Result<(), PinholeError> {
        self.writer()?.try_send(r).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => PinholeError::Gone("too many pinhole requests waiting"),
            mpsc::TrySendError::Disconnected(_) => PinholeError::Gone("the pinhole writer stopped"),
        })
    }

    /// Arms a pinhole for `timeout`; after it the kernel forgets the pinhole by itself.
    pub async fn install(&self, p: Pinhole, timeout: Duration) -> Result<(), PinholeError> {
        if !p.is_consistent() {
            return Err(PinholeError::MixedFamilies);
        }
        let (done, rx) = oneshot::channel();
        let install = Install { elements: nft::elements(&p), guard: nft::guard(&p), timeout, done, replaced: false };
        self.submit(Request::Install(install))?;
        rx.await.map_err(|_| PinholeError::Gone("the pinhole writer stopped"))?.map_err(PinholeError::Install)
    }

    /// Whether the pinhole still waits for its connection (false once used or expired).
    pub async fn armed(&self, p: Pinhole) -> Result<bool, PinholeError> {
        let (done, rx) = oneshot::channel();
        self.submit(Request::Armed { gate: nft::gate(&p), port: nft::port(&p), done })?;
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
    pub async fn find_flow(&self, p: Pinhole) -> Result<Option<Flow>, PinholeError> {
        let (done, rx) = oneshot::channel();
        self.submit(Request::FindFlow { pinhole: p, done })?;
        rx.await.map_err(|_| PinholeError::Gone("the pinhole writer stopped"))?.map_err(PinholeError::Conntrack)
    }

    /// The conntrack entry with this original tuple as it is now; `None` once it is gone.
    pub async fn read_flow(&self, src: SocketAddr, dst: SocketAddr) -> Result<Option<Flow>, PinholeError> {
        let (done, rx) = oneshot::channel();
        self.submit(Request::ReadFlow { src, dst, done })?;
        rx.await.map_err(|_| PinholeError::Gone("the pinhole writer stopped"))?.map_err(PinholeError::Conntrack)
    }

    /// Takes a pinhole away (its data channel was dropped); what is already gone is no error.
    pub fn remove(&self, p: Pinhole) {
        if let Err(e) = self.submit(Request::Remove { elements: nft::elements(&p), port: nft::port(&p) }) {
            tracing::warn!(error = %e, "pinhole not removed; it expires by itself");
        }
    }
}

impl Conn {
    fn serve(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut installs = Vec::new();
            let mut next = Some(first);
            while let Some(r) = next.take() {
                match r {
                    Request::Install(inst) => installs.push(inst),
                    // In the order asked: a removal or a check after an installation sees it.
                    Request::Armed { gate, port, done } => {
                        self.install_all(std::mem::take(&mut installs));
                        let armed = self.armed(&gate);
                        // Used: the port it came from is taken now, before the kernel expires it.
                        if let (Ok(false), Some(port)) = (&armed, port) {
                            self.keep_port(&port);
                        }
                        let _ = done.send(armed);
                    }
                    Request::Remove { elements, port } => {
                        self.install_all(std::mem::take(&mut installs));
                        self.remove(&elements);
                        // Perhaps used a moment ago: its port must not be taken for a later one.
                        if let Some(port) = port {
                            self.delete_one(&port);
                        }
                    }
                    Request::Cut { kill, timeout } => {
                        self.install_all(std::mem::take(&mut installs));
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
        }
    }
}
