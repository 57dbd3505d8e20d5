//! One netlink socket for the whole process, owned by one thread: sessions hand it requests,
//! it writes every installation waiting at that moment as one nf_tables transaction and
//! answers each request. A netlink round trip takes microseconds; a thread of its own keeps it
//! off the async workers and keeps the socket's replies in order without a dispatcher.

use super::nft::{self, Element};
use super::{Pinhole, PinholeError};
use netlink_packet_core::NetlinkBuffer;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NlAddr};
use std::collections::HashMap;
use std::io;
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// A reply the kernel owes and does not send within this is an error, not a hang.
const REPLY_WAIT: Duration = Duration::from_secs(2);
/// Installations written in one transaction at most.
const MAX_BATCH: usize = 64;
/// Requests waiting for the writer at most; beyond, a session is told the kernel is busy.
const QUEUE: usize = 4096;

enum Request {
    Install(Install),
    Armed { gate: Element, done: oneshot::Sender<io::Result<bool>> },
    Remove { elements: [Element; 3] },
    Cut { kill: Element, timeout: Duration },
    Counters { done: oneshot::Sender<io::Result<[u64; 2]>> },
}

/// Connections cut and remembered at most (their kill elements expire in the kernel anyway).
const MAX_CUTS: usize = 4096;

/// The handle sessions share; dropping the last one ends the writer thread.
pub struct Pinholes {
    /// The opened socket until the writer starts with it.
    idle: Mutex<Option<Conn>>,
    tx: OnceLock<mpsc::SyncSender<Request>>,
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
        let mut conn = Conn { sock, seq: 1, cuts: HashMap::new() };
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
        Ok(Self { idle: Mutex::new(Some(conn)), tx: OnceLock::new() })
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
        self.submit(Request::Armed { gate: nft::gate(&p), done })?;
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

    /// Takes a pinhole away (its data channel was dropped); what is already gone is no error.
    pub fn remove(&self, p: Pinhole) {
        if let Err(e) = self.submit(Request::Remove { elements: nft::elements(&p) }) {
            tracing::warn!(error = %e, "pinhole not removed; it expires by itself");
        }
    }
}

/// One installation waiting for the writer.
struct Install {
    elements: [Element; 3],
    guard: Element,
    timeout: Duration,
    done: oneshot::Sender<io::Result<()>>,
    /// Stale elements of a used pinhole were taken away for it already.
    replaced: bool,
}

struct Conn {
    sock: Socket,
    seq: u32,
    /// Kill elements written and when they expire: a new pinhole with the same key (a port
    /// handed out again) must not be reset.
    cuts: HashMap<Element, Instant>,
}

impl Conn {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        self.sock.send(buf, 0).map(|_| ())
    }

    /// Reads until every sequence number in `want` is answered by an acknowledgement or an
    /// error; a data message before the acknowledgement marks it `true` (an element found).
    fn replies(&self, want: &[u32]) -> io::Result<HashMap<u32, io::Result<bool>>> {
        let mut got: HashMap<u32, io::Result<bool>> = HashMap::new();
        let mut found: Vec<u32> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        // Each datagram answers at least one request; a bounded number of reads then.
        for _ in 0..want.len() * 4 + 4 {
            if want.iter().all(|s| got.contains_key(s)) {
                return Ok(got);
            }
            buf.clear();
            self.sock.recv(&mut buf, 0)?;
            let mut at = 0;
            while at < buf.len() {
                let msg = NetlinkBuffer::new_checked(&buf[at..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = (msg.length() as usize).max(16);
                let seq = msg.sequence_number();
                match msg.message_type() {
                    NLMSG_ERROR => {
                        let p = msg.payload();
                        let code = i32::from_ne_bytes(p.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4]));
                        // An error for a message not asked about (the batch's frame: the kernel
                        // refused the whole transaction, e.g. without CAP_NET_ADMIN) answers all.
                        if code != 0 && !want.contains(&seq) {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        let r =
                            if code == 0 { Ok(found.contains(&seq)) } else { Err(io::Error::from_raw_os_error(-code)) };
                        got.insert(seq, r);
                    }
                    NLMSG_DONE => {}
                    _ => found.push(seq),
                }
                at += (len + 3) & !3;
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer every request"))
    }

    /// Writes `elements` of each installation as one transaction. When the kernel refuses one,
    /// the whole transaction was undone: that one is answered with its error and the rest are
    /// written again, so one bad request never fails the others.
    ///
    /// A used pinhole's translation elements outlive its gate (they turn away a second
    /// connection until they expire); a server that hands out the same data port again meets
    /// them. Such an installation replaces them, once; while the old gate is still armed, the
    /// key is taken and the installation fails.
    fn install_all(&mut self, mut pending: Vec<Install>) {
        let now = Instant::now();
        self.cuts.retain(|_, until| *until > now);
        for inst in &pending {
            let kill = Element { set: kill_set(inst.elements[0].set), ..inst.elements[0].clone() };
            if self.cuts.remove(&kill).is_some() {
                self.delete_one(&kill);
            }
        }
        while !pending.is_empty() {
            let first = self.next_seq();
            let mut msgs = Vec::new();
            let mut owner = HashMap::new();
            for (i, inst) in pending.iter().enumerate() {
                for e in &inst.elements {
                    let seq = self.next_seq();
                    owner.insert(seq, i);
                    msgs.push(nft::add(e, inst.timeout, seq));
                }
                let seq = self.next_seq();
                owner.insert(seq, i);
                msgs.push(nft::add_shared(&inst.guard, inst.timeout, seq));
            }
            let seqs: Vec<u32> = owner.keys().copied().collect();
            let last = self.next_seq();
            let result = self.send(&nft::batch(msgs, first, last)).and_then(|()| self.replies(&seqs));
            let replies = match result {
                Ok(r) => r,
                Err(e) => {
                    for inst in pending.drain(..) {
                        let _ = inst.done.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                    return;
                }
            };
            let mut failed: Vec<(usize, io::Error)> = Vec::new();
            for (seq, r) in replies {
                if let (Err(e), Some(&i)) = (r, owner.get(&seq)) {
                    if !failed.iter().any(|(j, _)| *j == i) {
                        failed.push((i, e));
                    }
                }
            }
            if failed.is_empty() {
                for inst in pending.drain(..) {
                    let _ = inst.done.send(Ok(()));
                }
                return;
            }
            failed.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
            for (i, e) in failed {
                let mut inst = pending.remove(i);
                let stale = e.raw_os_error() == Some(libc::EEXIST) && !inst.replaced;
                if stale && matches!(self.armed(&inst.elements[0]), Ok(false)) {
                    self.remove(&inst.elements);
                    inst.replaced = true;
                    pending.push(inst);
                } else {
                    let _ = inst.done.send(Err(e));
                }
            }
        }
    }

    /// Deletes each element on its own: one already gone (used, expired) must not undo the
    /// deletion of the others.
    fn remove(&mut self, elements: &[Element; 3]) {
        for e in elements {
            self.delete_one(e);
        }
    }

    fn delete_one(&mut self, e: &Element) {
        let (first, seq, last) = (self.next_seq(), self.next_seq(), self.next_seq());
        let r = self.send(&nft::batch(vec![nft::delete(e, seq)], first, last)).and_then(|()| self.replies(&[seq]));
        match r.map(|mut m| m.remove(&seq)) {
            Ok(Some(Err(e))) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Ok(Some(Err(e))) | Err(e) => tracing::warn!(error = %e, "removing a pinhole element failed"),
            Ok(_) => {}
        }
    }

    fn counter(&mut self, name: &str) -> io::Result<u64> {
        let seq = self.next_seq();
        self.send(&nft::serialize(&[nft::get_counter(name, seq)]))?;
        let mut packets = None;
        let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
        // The object, then the acknowledgement: a few datagrams at most.
        for _ in 0..4 {
            buf.clear();
            self.sock.recv(&mut buf, 0)?;
            let mut at = 0;
            while at < buf.len() {
                let msg = NetlinkBuffer::new_checked(&buf[at..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = (msg.length() as usize).max(16);
                if msg.sequence_number() == seq {
                    if msg.message_type() == NLMSG_ERROR {
                        let p = msg.payload();
                        let code = i32::from_ne_bytes(p.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4]));
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return packets
                            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no counter in the reply"));
                    }
                    if msg.message_type() != NLMSG_DONE {
                        packets = packets.or(nft::counter_packets(msg.payload()));
                    }
                }
                at += (len + 3) & !3;
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer the counter request"))
    }

    /// Writes a kill element (or renews one already there).
    fn cut(&mut self, kill: Element, timeout: Duration) {
        let (first, seq, last) = (self.next_seq(), self.next_seq(), self.next_seq());
        let msg = nft::add_shared(&kill, timeout, seq);
        let r = self.send(&nft::batch(vec![msg], first, last)).and_then(|()| self.replies(&[seq]));
        match r.map(|mut m| m.remove(&seq)) {
            Ok(Some(Err(e))) | Err(e) => tracing::warn!(error = %e, "cutting a kernel data connection failed"),
            Ok(_) => {
                if self.cuts.len() < MAX_CUTS {
                    self.cuts.insert(kill, Instant::now() + timeout);
                }
            }
        }
    }

    fn armed(&mut self, gate: &Element) -> io::Result<bool> {
        let seq = self.next_seq();
        self.send(&nft::serialize(&[nft::get(gate, seq)]))?;
        match self.replies(&[seq])?.remove(&seq) {
            Some(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Some(r) => r,
            None => Ok(false),
        }
    }

    fn serve(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut installs = Vec::new();
            let mut next = Some(first);
            while let Some(r) = next.take() {
                match r {
                    Request::Install(inst) => installs.push(inst),
                    // In the order asked: a removal or a check after an installation sees it.
                    Request::Armed { gate, done } => {
                        self.install_all(std::mem::take(&mut installs));
                        let _ = done.send(self.armed(&gate));
                    }
                    Request::Remove { elements } => {
                        self.install_all(std::mem::take(&mut installs));
                        self.remove(&elements)
                    }
                    Request::Cut { kill, timeout } => {
                        self.install_all(std::mem::take(&mut installs));
                        self.cut(kill, timeout)
                    }
                    Request::Counters { done } => {
                        let [used, refused] = nft::COUNTERS;
                        let _ = done.send(self.counter(used).and_then(|u| Ok([u, self.counter(refused)?])));
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

/// The kill set of a gate's family.
fn kill_set(gate_set: &str) -> &'static str {
    if gate_set.ends_with('6') {
        "kill6"
    } else {
        "kill4"
    }
}
