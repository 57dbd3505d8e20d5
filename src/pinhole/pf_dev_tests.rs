//! The pinholes' bookkeeping against a fake pf that keeps anchors the way pf does: rules
//! added under an open transaction's tickets become the anchor's on commit, and a rollback
//! leaves the anchor as it was.

use super::*;
use crate::pinhole::nvlist::NvList;
use crate::pinhole::nvlist::Value;
use crate::pinhole::pf_nv::NvDevice;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Open transactions: their tickets and the rules added under them, by anchor.
type Pending = HashMap<String, ([u32; 3], Vec<NvList>)>;

#[derive(Default)]
struct FakePf {
    next_ticket: AtomicU64,
    /// Committed anchors and their rules (requests' "rule" lists); empty ones are dropped.
    anchors: Mutex<BTreeMap<String, Vec<NvList>>>,
    pending: Mutex<Pending>,
    pools: Mutex<Vec<(u32, IpAddr)>>,
    kills: Mutex<Vec<NvList>>,
    states: AtomicU64,
    refuse_rules: AtomicBool,
    rollbacks: AtomicU64,
    commits: Mutex<Option<mpsc::Sender<String>>>,
}

impl NvDevice for Arc<FakePf> {
    fn begin(&self, anchor: &str) -> io::Result<[u32; 3]> {
        let t = [0, 1, 2].map(|_| self.next_ticket.fetch_add(1, Ordering::Relaxed) as u32 + 100);
        self.pending.lock().unwrap().insert(anchor.to_owned(), (t, Vec::new()));
        Ok(t)
    }

    fn commit(&self, anchor: &str, tickets: [u32; 3]) -> io::Result<()> {
        let (t, rules) = self.pending.lock().unwrap().remove(anchor).expect("commit without begin");
        assert_eq!(t, tickets, "commit with other tickets than begin gave");
        let mut anchors = self.anchors.lock().unwrap();
        if rules.is_empty() {
            anchors.remove(anchor);
        } else {
            anchors.insert(anchor.to_owned(), rules);
        }
        if let Some(tx) = self.commits.lock().unwrap().as_ref() {
            let _ = tx.send(anchor.to_owned());
        }
        Ok(())
    }

    fn rollback(&self, anchor: &str, _: [u32; 3]) -> io::Result<()> {
        self.pending.lock().unwrap().remove(anchor);
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn begin_addrs(&self) -> io::Result<u32> {
        Ok(7)
    }

    fn add_addr(&self, pool: u32, ip: IpAddr) -> io::Result<()> {
        self.pools.lock().unwrap().push((pool, ip));
        Ok(())
    }

    fn add_rule(&self, request: &NvList) -> io::Result<()> {
        if self.refuse_rules.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let anchor = match request.get("anchor") {
            Some(Value::String(a)) => a.clone(),
            _ => panic!("no anchor in {request:?}"),
        };
        let mut pending = self.pending.lock().unwrap();
        let (tickets, rules) = pending.get_mut(&anchor).expect("rule outside a transaction");
        let ticket = request.get_number("ticket").unwrap() as u32;
        assert!(tickets.contains(&ticket), "ticket {ticket} not of this transaction");
        assert_eq!(request.get_number("pool_ticket"), Some(7));
        rules.push(request.get_list("rule").unwrap().clone());
        Ok(())
    }

    fn get_rule(&self, request: &NvList) -> io::Result<NvList> {
        let anchor = match request.get("anchor") {
            Some(Value::String(a)) => a.clone(),
            _ => panic!("no anchor"),
        };
        assert!(self.anchors.lock().unwrap().contains_key(&anchor), "asked about {anchor}, not loaded");
        let states = self.states.load(Ordering::Relaxed);
        Ok(NvList::new().num("nr", 0).list("rule", NvList::new().num("states_tot", states)))
    }

    fn kill_states(&self, request: &NvList) -> io::Result<()> {
        self.kills.lock().unwrap().push(request.clone());
        Ok(())
    }
}

fn pinhole() -> Pinhole {
    crate::pinhole::sample_passive()
}

fn start() -> (Arc<FakePf>, PfPinholes<Arc<FakePf>>) {
    let pf = Arc::new(FakePf::default());
    let pinholes = PfPinholes::start(pf.clone(), 4242).unwrap();
    (pf, pinholes)
}

fn anchors(pf: &FakePf) -> Vec<String> {
    pf.anchors.lock().unwrap().keys().cloned().collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn a_pinhole_is_one_anchor_whose_pass_rule_tells_when_it_was_used() {
    let (pf, pinholes) = start();
    let ticket = block_on(pinholes.install(pinhole(), Duration::from_secs(60))).unwrap();
    assert_eq!(anchors(&pf), ["ftpgate/4242.1"]);
    // rdr, nat, pass in, pass out; the translations' addresses went into their pools.
    assert_eq!(pf.anchors.lock().unwrap()["ftpgate/4242.1"].len(), 4);
    let pools: Vec<IpAddr> = pf.pools.lock().unwrap().iter().map(|(_, ip)| *ip).collect();
    assert_eq!(pools, [pinhole().target.ip(), pinhole().source]);
    assert!(block_on(pinholes.armed(pinhole(), ticket)).unwrap());
    pf.states.store(1, Ordering::Relaxed);
    assert!(!block_on(pinholes.armed(pinhole(), ticket)).unwrap());
    // Used: the rules stay (max 1 turns a second connection away) and pf is not asked again.
    pf.states.store(0, Ordering::Relaxed);
    assert!(!block_on(pinholes.armed(pinhole(), ticket)).unwrap());
    assert_eq!(anchors(&pf), ["ftpgate/4242.1"]);
    pinholes.remove(pinhole(), ticket);
    assert!(anchors(&pf).is_empty());
    assert!(!block_on(pinholes.armed(pinhole(), ticket)).unwrap());
}

#[test]
fn a_refused_rule_rolls_the_whole_anchor_back() {
    let (pf, pinholes) = start();
    pf.refuse_rules.store(true, Ordering::Relaxed);
    let err = block_on(pinholes.install(pinhole(), Duration::from_secs(60))).unwrap_err();
    assert!(matches!(err, PinholeError::Install(_)), "{err}");
    assert_eq!(pf.rollbacks.load(Ordering::Relaxed), 1);
    assert!(anchors(&pf).is_empty());
    assert!(!block_on(pinholes.armed(pinhole(), Ticket(1))).unwrap(), "nothing installed, nothing armed");
}

#[test]
fn the_same_pinhole_again_replaces_the_earlier_anchor() {
    let (pf, pinholes) = start();
    let first = block_on(pinholes.install(pinhole(), Duration::from_secs(60))).unwrap();
    let second = block_on(pinholes.install(pinhole(), Duration::from_secs(60))).unwrap();
    assert_eq!(anchors(&pf), ["ftpgate/4242.2"]);
    // The first installation was replaced: its check says used, the second's armed.
    assert!(!block_on(pinholes.armed(pinhole(), first)).unwrap());
    assert!(block_on(pinholes.armed(pinhole(), second)).unwrap());
}

#[test]
fn a_cut_resets_both_ends_and_removes_the_states() {
    let (pf, pinholes) = start();
    block_on(pinholes.install(pinhole(), Duration::from_secs(60))).unwrap();
    pinholes.cut(pinhole(), Duration::from_secs(60));
    assert_eq!(anchors(&pf), ["ftpgate/4242.2"]);
    let rules = &pf.anchors.lock().unwrap()["ftpgate/4242.2"];
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().all(|r| r.get_number("action") == Some(1) && r.get_number("rule_flag") == Some(1)));
    assert_eq!(pf.kills.lock().unwrap().len(), 2);
}

#[test]
fn anchors_go_at_their_deadline_unless_replaced() {
    let (pf, pinholes) = start();
    let (tx, rx) = mpsc::channel();
    *pf.commits.lock().unwrap() = Some(tx);
    let other = Pinhole { dialled: "198.51.100.2:30001".parse().unwrap(), ..pinhole() };
    let ticket = block_on(pinholes.install(pinhole(), Duration::from_millis(50))).unwrap();
    block_on(pinholes.install(other, Duration::from_secs(600))).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "ftpgate/4242.1");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "ftpgate/4242.2");
    // The expiry thread's commit: the short-lived anchor emptied, the other kept.
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "ftpgate/4242.1");
    assert_eq!(anchors(&pf), ["ftpgate/4242.2"]);
    assert!(!block_on(pinholes.armed(pinhole(), ticket)).unwrap());
    // Dropping the handle leaves no anchor behind.
    drop(pinholes);
    assert!(anchors(&pf).is_empty());
}

#[test]
fn ftpgates_own_connection_gets_a_nat_anchor_until_its_deadline() {
    let (pf, pinholes) = start();
    let to: SocketAddr = "203.0.113.2:50123".parse().unwrap();
    let server: SocketAddr = "198.51.100.2:20".parse().unwrap();
    pinholes.translate_source(20, to, server, Duration::from_secs(60)).unwrap();
    let rules = pf.anchors.lock().unwrap()["ftpgate/4242.1"].clone();
    assert_eq!(rules.iter().map(|r| r.get_number("action")).collect::<Vec<_>>(), [Some(4), Some(0)]);
    assert_eq!(pf.pools.lock().unwrap().as_slice(), [(7, server.ip())]);
    let v6: SocketAddr = "[2001:db8:2::2]:20".parse().unwrap();
    let err = pinholes.translate_source(20, to, v6, Duration::from_secs(60)).unwrap_err();
    assert!(matches!(err, PinholeError::MixedFamilies), "{err}");
}

#[test]
fn an_earlier_deadline_leaves_a_later_installation_alone() {
    let (pf, pinholes) = start();
    let (tx, rx) = mpsc::channel();
    *pf.commits.lock().unwrap() = Some(tx);
    let other = Pinhole { dialled: "198.51.100.2:30001".parse().unwrap(), ..pinhole() };
    block_on(pinholes.install(pinhole(), Duration::from_millis(20))).unwrap(); // 1
    block_on(pinholes.install(pinhole(), Duration::from_secs(600))).unwrap(); // 2, clears 1
    block_on(pinholes.install(other, Duration::from_millis(80))).unwrap(); // 3
    for want in ["ftpgate/4242.1", "ftpgate/4242.2", "ftpgate/4242.1", "ftpgate/4242.3"] {
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), want);
    }
    // 3's deadline came after 1's: by the time it was handled, 1's had been, and left 2.
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "ftpgate/4242.3");
    assert_eq!(anchors(&pf), ["ftpgate/4242.2"]);
}
