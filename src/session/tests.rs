//! The control core driven through its public entry points, every action checked by the shared
//! invariant checker.

use super::invariants::Checker;
use super::*;
use crate::addr::{ClientAddr, UpstreamAddr};
use std::time::{Duration, Instant};

pub(super) const TIMEOUTS: CoreTimeouts = CoreTimeouts {
    banner: Duration::from_secs(30),
    reply: Duration::from_secs(120),
    idle: Duration::from_secs(900),
    data_idle: Duration::from_secs(300),
    login: Duration::from_secs(60),
    connect: Duration::from_secs(10),
};

pub(super) struct T {
    pub core: ControlCore,
    pub check: Checker,
    pub now: Instant,
    pub data: Option<DataId>,
}

impl T {
    pub fn ungreeted(client: &str, server: &str, policy: SessionPolicy) -> T {
        let (c, u) = (client.parse().unwrap(), server.parse().unwrap());
        let check = Checker::new(c, u, &policy);
        let now = Instant::now();
        let core = ControlCore::new(ClientAddr(c), UpstreamAddr(u), policy, TIMEOUTS, now);
        T { core, check, now, data: None }
    }

    pub fn with(client: &str, server: &str, policy: SessionPolicy) -> T {
        let mut t = T::ungreeted(client, server, policy);
        assert_eq!(t.server("220 hello"), vec![to_client(0, "220 hello\r\n")]);
        t
    }

    /// Every action handed out since the last call, each checked.
    pub fn actions(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(a) = self.core.poll_action() {
            self.check.check(&a).unwrap_or_else(|e| panic!("invariant: {e}"));
            if let Action::OpenData { id, .. } = a {
                self.data = Some(id);
            }
            // Counted by the driver; the tests look at what the session does.
            if !matches!(a, Action::Note(Note::ServerReply(_))) {
                out.push(a);
            }
        }
        out
    }

    pub fn bytes(&mut self, b: &[u8]) -> Vec<Action> {
        self.core.handle_client_bytes(b, self.now);
        self.actions()
    }

    pub fn client(&mut self, line: &str) -> Vec<Action> {
        self.bytes(format!("{line}\r\n").as_bytes())
    }

    pub fn server(&mut self, line: &str) -> Vec<Action> {
        self.core.handle_server_bytes(format!("{line}\r\n").as_bytes(), self.now);
        self.actions()
    }

    pub fn ready(&mut self, ready: DataReady) -> Vec<Action> {
        self.core.handle_data_ready(self.data.expect("a data channel was asked for"), ready, self.now);
        self.actions()
    }

    /// PASV answered by the server and the driver: the data channel's id.
    pub fn passive(&mut self) -> DataId {
        self.client("PASV");
        self.server("227 (198,51,100,2,200,1)");
        self.ready(DataReady::Listening("198.51.100.2:50000".parse().unwrap()));
        self.data.expect("a data channel")
    }

    pub fn finished(&mut self, id: DataId) -> Vec<Action> {
        self.core.handle_data_finished(id, true, self.now);
        self.actions()
    }

    pub fn lost(&mut self, id: DataId) -> Vec<Action> {
        self.core.handle_data_finished(id, false, self.now);
        self.actions()
    }

    pub fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        self.core.handle_timeout(self.now);
        self.actions()
    }
}

pub(super) fn to_client(slot: u64, s: &str) -> Action {
    Action::ToClient { slot, bytes: s.as_bytes().to_vec() }
}

pub(super) fn to_server(s: &str) -> Action {
    Action::ToServer(s.as_bytes().to_vec())
}

pub(super) fn replies(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|x| match x {
            Action::ToClient { bytes, .. } | Action::ToClientOutOfBand(bytes) => {
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            _ => None,
        })
        .collect()
}

pub(super) fn code(a: &[Action]) -> Option<u16> {
    replies(a).first().and_then(|r| crate::protocol::reply::parse_code(r.trim_end().as_bytes()))
}

pub(super) fn opened(a: &[Action]) -> Option<DataRequest> {
    a.iter().find_map(|x| match x {
        Action::OpenData { request, .. } => Some(*request),
        _ => None,
    })
}

pub(super) fn refused(a: &[Action]) -> Vec<&Refusal> {
    a.iter()
        .filter_map(|x| match x {
            Action::Note(Note::Refused(r)) => Some(r),
            _ => None,
        })
        .collect()
}

pub(super) fn closed(a: &[Action]) -> bool {
    a.iter().any(|x| matches!(x, Action::Close(_)))
}

pub(super) fn sa(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

pub(super) fn v4() -> T {
    T::with("203.0.113.2:40000", "198.51.100.2:21", SessionPolicy::default())
}

pub(super) fn v6() -> T {
    T::with("[2001:db8:1::2]:40000", "[2001:db8:2::2]:21", SessionPolicy::default())
}

pub(super) fn with_mode(mode: ServerDataMode) -> T {
    let policy = SessionPolicy { server_mode: mode, ..SessionPolicy::default() };
    T::with("203.0.113.2:40000", "198.51.100.2:21", policy)
}

#[test]
fn plain_commands_are_relayed_as_spelled() {
    let mut t = v4();
    assert_eq!(t.client("user anonymous"), vec![to_server("user anonymous\r\n")]);
    assert_eq!(t.server("331 pass?"), vec![to_client(1, "331 pass?\r\n")]);
}

#[test]
fn pipelined_replies_keep_command_order_whoever_answers() {
    let mut t = v4();
    let a = t.bytes(b"NOOP\r\nAUTH TLS\r\nNOOP\r\nEPSV ALL\r\n");
    assert_eq!(a.iter().filter(|x| matches!(x, Action::ToServer(_))).count(), 2);
    assert!(replies(&a).is_empty(), "the gateway's own replies overtook the server's: {a:?}");
    let a = t.server("200 first");
    assert_eq!(replies(&a), vec!["200 first\r\n", "534 AUTH (FTPS) refused by policy\r\n"]);
    let a = t.server("200 second");
    assert_eq!(replies(&a), vec!["200 second\r\n", "200 EPSV ALL ok\r\n"]);
}

#[test]
fn commands_wait_for_the_greeting() {
    let mut t = T::ungreeted("203.0.113.2:40000", "198.51.100.2:21", SessionPolicy::default());
    assert!(t.bytes(b"USER a\r\n").is_empty());
    assert!(!t.core.wants_client_input());
    let a = t.server("220 hi");
    assert_eq!(a, [to_server("USER a\r\n"), to_client(0, "220 hi\r\n")]);
}

#[test]
fn commands_in_flight_are_bounded_and_the_rest_waits_in_the_socket() {
    let mut t = v4();
    let many = "NOOP\r\n".repeat(MAX_IN_FLIGHT + 3);
    let a = t.bytes(many.as_bytes());
    assert_eq!(a.len(), MAX_IN_FLIGHT);
    assert!(!t.core.wants_client_input());
    let a = t.server("200 ok");
    assert_eq!(a, [to_server("NOOP\r\n"), to_client(1, "200 ok\r\n")]);
    assert!(!t.core.wants_client_input());
}

#[test]
fn abor_in_band_goes_urgent_when_the_policy_asks() {
    let policy = SessionPolicy { urgent_abort: true, ..SessionPolicy::default() };
    let mut t = T::with("203.0.113.2:40000", "198.51.100.2:21", policy);
    t.client("PORT 203,0,113,2,195,80");
    t.ready(DataReady::Listening(sa("198.51.100.1:40001")));
    t.server("200 ok");
    t.client("RETR big");
    t.server("150 here");
    let a = t.bytes(b"ABOR\r\n");
    assert!(
        matches!(a[..], [Action::Note(Note::Aborting), Action::Note(Note::TransferAborted { .. }), Action::DropData(_), Action::ToServerUrgent(ref b)] if b == b"ABOR\r\n"),
        "{a:?}"
    );
}

#[test]
fn abor_drops_data_and_carries_the_urgent_flag() {
    let mut t = v4();
    t.client("PORT 203,0,113,2,195,80");
    t.ready(DataReady::Listening(sa("198.51.100.1:40001")));
    t.server("200 ok");
    t.client("RETR big");
    t.server("150 here");
    let a = t.bytes(b"\xff\xf4\xff\xf2ABOR\r\nNOOP\r\n");
    assert!(
        matches!(a[..], [Action::Note(Note::Aborting), Action::Note(Note::TransferAborted { .. }), Action::DropData(_), Action::ToServerUrgent(ref b)] if b == b"ABOR\r\n"),
        "{a:?}"
    );
    // The client's next command waits until ABOR is answered.
    assert!(!t.core.wants_client_input());
    let a = t.server("426 aborted");
    assert_eq!(replies(&a), vec!["426 aborted\r\n"]);
    assert!(a.contains(&to_server("NOOP\r\n")));
    assert_eq!(replies(&t.server("226 abor ok")), vec!["226 abor ok\r\n"]);
    // The gateway's own NOOP reply is not relayed; the held client NOOP goes out now.
    let a = t.server("200 NOOP ok");
    assert_eq!(a, [to_server("NOOP\r\n")]);
    assert_eq!(replies(&t.server("200 NOOP ok")), vec!["200 NOOP ok\r\n"]);
    assert!(t.core.wants_client_input());
}

#[test]
fn abor_answered_with_a_single_reply_keeps_replies_paired() {
    // pure-ftpd: a stray 150, then one 226 for RETR and ABOR together.
    let mut t = v4();
    t.client("RETR big");
    t.server("150-Accepted data connection");
    t.server("150 65536.0 kbytes to download");
    t.client("ABOR");
    assert_eq!(replies(&t.server("150 0.002 seconds")), vec!["150 0.002 seconds\r\n"]);
    let a = t.server("226 ABOR ok");
    assert_eq!(replies(&a), vec!["226 ABOR ok\r\n"]);
    assert!(a.contains(&to_server("NOOP\r\n")));
    assert!(replies(&t.server("200 Zzz")).is_empty());
    // The next PASV's 227 is paired with PASV, not with a stale expectation.
    t.client("PASV");
    assert!(opened(&t.server("227 Entering Passive Mode (198,51,100,2,200,1)")).is_some());
}

#[test]
fn rest_offsets_beyond_4_gib_are_relayed_untouched() {
    let mut t = v4();
    assert_eq!(t.client("REST 5000000000123"), vec![to_server("REST 5000000000123\r\n")]);
}

#[test]
fn auth_is_refused_by_default_and_epsv_all_is_local() {
    let mut t = v4();
    assert_eq!(code(&t.client("AUTH TLS")), Some(534));
    assert_eq!(code(&t.client("EPSV ALL")), Some(200));
    assert_eq!(code(&t.client("PASV")), Some(503));
    assert_eq!(code(&t.client("PORT 203,0,113,2,195,80")), Some(503));
    assert_eq!(t.client("EPSV"), vec![to_server("EPSV\r\n")]);
}

#[test]
fn malformed_flood_closes_and_overlong_gets_500() {
    let policy = SessionPolicy { max_line: 16, ..SessionPolicy::default() };
    let mut t = T::with("203.0.113.2:40000", "198.51.100.2:21", policy);
    assert_eq!(code(&t.client("NOOP NOOP NOOP NOOP NOOP")), Some(500));
    for _ in 0..SessionPolicy::default().max_malformed - 1 {
        assert!(!closed(&t.client("R3TR")));
    }
    let a = t.bytes(b"\0\r\n");
    assert!(a.contains(&Action::Close(Outcome::Refused)));
    assert!(replies(&a).iter().any(|r| r.starts_with("421")));
}

#[test]
fn malformed_or_overlong_server_replies_close_with_421() {
    let mut t = v4();
    let a = t.server("garbage");
    assert!(a.contains(&Action::Close(Outcome::Error)));
    assert_eq!(replies(&a), vec!["421 Server sent a malformed reply, closing\r\n"]);
    let mut t = v4();
    t.client("NOOP");
    let a = t.server(&format!("200 {}", "x".repeat(MAX_REPLY_LINE)));
    assert!(replies(&a)[0].starts_with("421 Server sent an overlong reply line"));
    assert!(closed(&a));
}

#[test]
fn a_421_from_the_server_is_relayed_then_closes() {
    let mut t = v4();
    let a = t.server("421 timeout");
    assert_eq!(replies(&a), vec!["421 timeout\r\n"]);
    assert_eq!(a.last(), Some(&Action::Close(Outcome::ServerClosed)));
}

#[test]
fn quit_closes_after_reply() {
    let mut t = v4();
    t.client("QUIT");
    let a = t.server("221 bye");
    assert_eq!(a, [to_client(1, "221 bye\r\n"), Action::Close(Outcome::ClientQuit)]);
}

#[test]
fn server_floods_behind_a_draining_transfer_and_is_cut_off() {
    let mut t = v4();
    t.passive();
    t.client("RETR big");
    t.server("150 here");
    t.server("226 done");
    let mut closed_at = None;
    for i in 0..(MAX_HELD_REPLIES / 8) {
        let a = t.server("200 junk");
        if closed(&a) {
            assert!(replies(&a).iter().any(|r| r.starts_with("421")));
            closed_at = Some(i);
            break;
        }
    }
    assert!(closed_at.is_some(), "held replies grew without bound");
}

#[test]
fn every_phase_has_its_deadline() {
    let mut t = T::ungreeted("203.0.113.2:40000", "198.51.100.2:21", SessionPolicy::default());
    assert!(t.advance(TIMEOUTS.banner - Duration::from_millis(1)).is_empty());
    let a = t.advance(Duration::from_millis(1));
    assert!(replies(&a)[0].contains("did not greet"));
    assert!(a.contains(&Action::Close(Outcome::ReplyTimeout)));

    let mut t = v4();
    t.client("NOOP");
    let a = t.advance(TIMEOUTS.reply);
    assert!(replies(&a)[0].contains("did not reply"), "{a:?}");

    let mut t = v4();
    assert!(t.advance(TIMEOUTS.idle - Duration::from_secs(1)).is_empty());
    let a = t.advance(Duration::from_secs(1));
    assert!(a.contains(&Action::Close(Outcome::IdleTimeout)));

    // A closing session waits for a held reply's data only so long.
    let mut t = v4();
    t.passive();
    t.client("RETR big");
    t.server("150 here");
    t.server("226 done");
    t.core.handle_server_eof(t.now);
    assert!(t.actions().is_empty());
    let a = t.advance(TIMEOUTS.data_idle);
    assert!(replies(&a).is_empty(), "a 226 went out before its data: {a:?}");
    assert_eq!(a.last(), Some(&Action::Close(Outcome::ServerClosed)));
}

#[test]
fn a_server_hanging_up_gets_the_client_a_421_after_what_it_is_owed() {
    let mut t = v4();
    let id = t.passive();
    t.client("RETR f");
    t.server("150 here");
    t.server("226 done");
    t.core.handle_server_eof(t.now);
    assert!(t.actions().is_empty(), "nothing before the data has drained");
    let a = t.finished(id);
    assert_eq!(replies(&a), vec!["226 done\r\n", "421 Server closed the control connection\r\n"]);
    assert_eq!(a.last(), Some(&Action::Close(Outcome::ServerClosed)));
}

#[test]
fn a_late_ready_for_a_replaced_channel_is_recognised() {
    let mut t = v4();
    t.client("PASV");
    t.server("227 (198,51,100,2,200,1)");
    let first = t.data.unwrap();
    t.ready(DataReady::Listening(sa("198.51.100.2:50000")));
    let a = t.client("PASV");
    assert_eq!(a[0], Action::DropData(first));
    t.core.handle_data_ready(first, DataReady::Listening(sa("198.51.100.2:50001")), t.now);
    let a = t.actions();
    assert_eq!(a, vec![Action::Note(Note::StaleData { id: first, event: "ready" })]);
}

#[test]
fn a_success_after_lost_data_reaches_the_client_as_426() {
    // The 226 arrives before the channel reports its end, and after it.
    for early_226 in [true, false] {
        let mut t = v4();
        let id = t.passive();
        t.client("RETR f");
        t.server("150 here");
        let mut a = Vec::new();
        if early_226 {
            a.extend(t.server("226-all"));
            a.extend(t.server("226 sent"));
        }
        a.extend(t.lost(id));
        if !early_226 {
            a.extend(t.server("226-all"));
            a.extend(t.server("226 sent"));
        }
        let r = replies(&a);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].starts_with("426 Data connection closed before all data arrived"), "{r:?}");
        // A failure the server reports itself is relayed as it is.
        let id = t.passive();
        t.client("STOR g");
        t.server("150 send");
        t.lost(id);
        assert_eq!(replies(&t.server("451 disk full")), vec!["451 disk full\r\n"]);
    }
}

#[test]
fn an_unasked_multi_line_reply_keeps_one_slot_and_the_queue_moving() {
    let mut t = v4();
    let mut a = t.server("211-unasked");
    a.extend(t.server(" more"));
    a.extend(t.server("211 end"));
    assert_eq!(replies(&a).concat(), "211-unasked\r\n more\r\n211 end\r\n");
    t.client("NOOP");
    assert_eq!(replies(&t.server("200 ok")), vec!["200 ok\r\n"]);
    let a = t.server("421 going down");
    assert_eq!(replies(&a), vec!["421 going down\r\n"]);
    assert_eq!(a.last(), Some(&Action::Close(Outcome::ServerClosed)));
}

#[test]
fn a_data_channel_learns_which_way_its_transfer_goes_before_the_command_leaves() {
    use crate::labels::Direction;
    let mut t = v4();
    let id = t.passive();
    let a = t.client("STOR up.bin");
    assert_eq!(a, [Action::DataCarries { id, toward: Direction::ToServer }, to_server("STOR up.bin\r\n")]);
    // PASV and RETR pipelined: the channel is told as soon as it exists.
    t.server("150 go");
    t.server("226 ok");
    t.finished(id);
    t.bytes(b"PASV\r\nRETR f\r\n");
    let a = t.server("227 (198,51,100,2,200,2)");
    let id = t.data.unwrap();
    let at = |x: &Action| a.iter().position(|y| y == x).unwrap_or_else(|| panic!("{x:?} missing from {a:?}"));
    assert!(
        at(&Action::DataCarries { id, toward: Direction::ToClient })
            > at(&Action::OpenData { id, request: DataRequest::Passive { server_data: sa("198.51.100.2:51202") } })
    );
}
