//! Property tests for the control core: random conversations fed through the very entry points
//! the gateway's driver uses, every action checked by the same invariant checker as the fuzz
//! target (one command line per write to the server; data endpoints are the client's own or the
//! server's own address, never a privileged port; replies in command order), and a model check
//! that pipelined replies reach the client in the order of the commands they answer.

use ftpgate::addr::{canonical_ip, ClientAddr, UpstreamAddr};
use ftpgate::protocol::address::encode_port_arg;
use ftpgate::session::invariants::Checker;
use ftpgate::session::{
    Action, ConnectFailure, ControlCore, CoreTimeouts, DataId, DataReady, LoginMode, Note, Route, Routes,
    ServerDataMode, ServerDataPolicy, SessionPolicy, Side, TlsPolicy, UpstreamTls, UserMatch,
};
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "proptest_session/order.rs"]
mod order;
#[path = "proptest_session/telnet.rs"]
mod telnet;

const IAC: u8 = 255;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn ipv6_strategy() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![any::<Ipv6Addr>(), any::<Ipv4Addr>().prop_map(|v4| v4.to_ipv6_mapped())]
}

fn ip_strategy() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<Ipv4Addr>().prop_map(IpAddr::V4), ipv6_strategy().prop_map(IpAddr::V6)]
}

const TIMEOUTS: CoreTimeouts = CoreTimeouts {
    banner: Duration::from_secs(30),
    reply: Duration::from_secs(120),
    idle: Duration::from_secs(900),
    data_idle: Duration::from_secs(300),
    login: Duration::from_secs(60),
    connect: Duration::from_secs(10),
};

const CLIENTS: [&str; 3] = ["203.0.113.2:40000", "[2001:db8:1::2]:40000", "[::ffff:203.0.113.2]:40000"];
const UPSTREAMS: [&str; 3] = ["198.51.100.2:21", "[2001:db8:2::2]:21", "[::ffff:198.51.100.2]:21"];

#[derive(Debug, Clone)]
enum Event {
    /// Bytes read from the client (through the Telnet filter and the framer, as at the edge).
    Client(Vec<u8>),
    /// Bytes read from the server (through the framer).
    Server(Vec<u8>),
    PassiveReady(SocketAddr),
    ActiveReady(SocketAddr),
    /// Both listeners of a passive-to-active conversion (client's, server's).
    ListenersReady(SocketAddr, SocketAddr),
    ConnectStarted,
    SetupFailed,
    /// The newest data channel finished (false: with data lost).
    DataFinished(bool),
    /// Time passes by this many seconds.
    Tick(u16),
    ClientEof,
    ServerEof,
    /// The driver's report on the login phase's connection: connected, refused (530), or
    /// unreachable (421).
    Upstream(u8),
    /// The driver's TLS handshake on a side (true: the client's) succeeded.
    TlsReady(bool),
    /// It failed.
    TlsFailed(bool),
}

#[derive(Debug, Clone)]
struct Scenario {
    client: SocketAddr,
    upstream: SocketAddr,
    server_data: ServerDataPolicy,
    server_mode: ServerDataMode,
    max_line: usize,
    /// 0: connected from the start (intercepted, reverse); 1: forward proxy; 2: routes.
    login: u8,
    tls: TlsPolicy,
    events: Vec<Event>,
}

const TLS_POLICIES: [TlsPolicy; 4] = [
    TlsPolicy::Refuse,
    TlsPolicy::Terminate { upstream: UpstreamTls::None },
    TlsPolicy::Terminate { upstream: UpstreamTls::Explicit },
    TlsPolicy::Inspect,
];

fn port_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![any::<u16>(), 0u16..1100, Just(1024u16), Just(1023u16)]
}

fn v4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

/// Usually the peer's own IPv4 address (a stand-in when it has none), sometimes any.
fn named_v4(own: IpAddr, stand_in: Ipv4Addr) -> impl Strategy<Value = Ipv4Addr> {
    let own = v4_of(own).unwrap_or(stand_in);
    prop_oneof![3 => Just(own), 1 => any::<Ipv4Addr>()]
}

/// Usually the peer's own address in one of its spellings, sometimes any.
fn named_ip(own: IpAddr) -> impl Strategy<Value = IpAddr> {
    let mut owns = vec![own, canonical_ip(own)];
    if let IpAddr::V4(v4) = canonical_ip(own) {
        owns.push(IpAddr::V6(v4.to_ipv6_mapped()));
    }
    prop_oneof![3 => proptest::sample::select(owns), 1 => ip_strategy()]
}

fn line_end(mut v: Vec<u8>, bare_lf: bool) -> Vec<u8> {
    v.extend_from_slice(if bare_lf { b"\n" } else { b"\r\n" });
    v
}

fn terminated(line: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (line, prop::bool::weighted(0.2)).prop_map(|(l, bare_lf)| line_end(l, bare_lf))
}

fn text(s: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(s).prop_map(|s| s.as_bytes().to_vec())
}

fn passive_command() -> impl Strategy<Value = Vec<u8>> {
    text(&["PASV", "pasv", "EPSV", "epsv", "EPSV 1", "EPSV 2", "EPSV 3", "EPSV ALL"])
}

/// PORT or EPRT, usually naming the client itself.
fn active_command(own: IpAddr) -> impl Strategy<Value = Vec<u8>> {
    let port = (named_v4(own, Ipv4Addr::new(203, 0, 113, 2)), port_strategy(), "PORT|port|Port")
        .prop_map(|(ip, p, verb)| format!("{verb} {}", encode_port_arg(SocketAddrV4::new(ip, p))).into_bytes());
    let port_spaced = (named_v4(own, Ipv4Addr::new(203, 0, 113, 2)), port_strategy()).prop_map(|(ip, p)| {
        let o = ip.octets();
        format!("PORT  {}, {},{} ,{},{},{} ", o[0], o[1], o[2], o[3], p >> 8, p & 0xff).into_bytes()
    });
    let eprt = (named_ip(own), port_strategy(), proptest::sample::select(vec!['|', '!', '#', '^']), 0u8..6).prop_map(
        |(ip, p, d, fam)| {
            let af = match (fam, ip) {
                (0, _) => "3",
                (1, IpAddr::V4(_)) => "2",
                (1, IpAddr::V6(_)) => "1",
                (_, IpAddr::V4(_)) => "1",
                (_, IpAddr::V6(_)) => "2",
            };
            format!("EPRT {d}{af}{d}{ip}{d}{p}{d}").into_bytes()
        },
    );
    prop_oneof![3 => port, 1 => port_spaced, 3 => eprt]
}

fn transfer_command() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        text(&["RETR file.txt", "STOR up.bin", "STOU", "APPE log", "LIST", "NLST -a", "MLSD", "retr x"]),
        "[ -~]{0,30}".prop_map(|f| format!("RETR {f}").into_bytes()),
    ]
}

fn other_command() -> impl Strategy<Value = Vec<u8>> {
    let fixed = text(&[
        "USER anonymous",
        "user ftp",
        "PASS guest@",
        "NOOP",
        "TYPE I",
        "CWD /pub",
        "FEAT",
        "AUTH TLS",
        "PBSZ 0",
        "PROT P",
        "PROT C",
        "CCC",
        "LPRT 4,4,1,2,3,4,2,0,21",
        "LPSV",
        "SPSV",
        "REIN",
        "QUIT",
        "",
        " ",
        "RETR a\rPORT 1,2,3,4,5,6",
        "R3TR x",
        "ABCDEFGHI",
    ]);
    // Arguments with 0xFF in them, Telnet-escaped as a client sends a data byte 0xFF.
    let escaped =
        (proptest::sample::select(vec!["USER", "RETR", "CWD"]), vec(any::<u8>(), 0..16)).prop_map(|(verb, arg)| {
            let mut v = format!("{verb} ").into_bytes();
            for b in arg.into_iter().filter(|b| !matches!(b, b'\r' | b'\n' | 0)) {
                v.extend_from_slice(if b == IAC { &[IAC, IAC][..] } else { std::slice::from_ref(&b) });
            }
            v
        });
    prop_oneof![6 => fixed, 1 => vec(any::<u8>(), 0..40), 1 => escaped]
}

/// One client line with its line end, sometimes behind a Telnet Synch or a stray negotiation.
fn client_line(own: IpAddr) -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        3 => passive_command(),
        3 => active_command(own),
        2 => transfer_command(),
        1 => text(&["ABOR", "abor"]),
        5 => other_command(),
    ];
    (terminated(line), 0u8..10).prop_map(|(line, pre)| {
        let mut v = match pre {
            0 => vec![IAC, 244, IAC, 242],
            1 => vec![IAC, 251, 1],
            _ => Vec::new(),
        };
        v.extend(line);
        v
    })
}

/// 227 or 229 in the forms servers send, usually naming the server itself.
fn passive_reply(upstream: IpAddr) -> impl Strategy<Value = Vec<u8>> {
    let r227 =
        (named_v4(upstream, Ipv4Addr::new(198, 51, 100, 2)), port_strategy(), 0u8..5).prop_map(|(ip, p, form)| {
            let a = encode_port_arg(SocketAddrV4::new(ip, p));
            match form {
                0 => format!("227 Entering Passive Mode ({a}).").into_bytes(),
                1 => format!("227 ={a}").into_bytes(),
                2 => format!("227-Entering Passive Mode\r\n227 ({a})").into_bytes(),
                3 => format!("227-Here it comes\r\n ({a})\r\n227 ok").into_bytes(),
                _ => format!("227 Entering Passive Mode {a}").into_bytes(),
            }
        });
    let r229 = (port_strategy(), proptest::sample::select(vec!['|', '!']))
        .prop_map(|(p, d)| format!("229 Entering Extended Passive Mode ({d}{d}{d}{p}{d})").into_bytes());
    let refused = text(&["500 EPSV not understood", "502 no", "425 cannot", "227 no address here", "229 no port"]);
    terminated(prop_oneof![4 => r227, 3 => r229, 1 => refused])
}

fn server_line(upstream: IpAddr) -> impl Strategy<Value = Vec<u8>> {
    let fixed = text(&[
        "220 ready",
        "331 password please",
        "230 logged in",
        "200 ok",
        "200 NOOP ok",
        "150 opening data connection",
        "125 transfer starting",
        "226 transfer complete",
        "426 aborted",
        "425 cannot open",
        "500 what",
        "502 not implemented",
        "550 no such file",
        "221 goodbye",
        "234 proceed with TLS",
        "211-Features:\r\n AUTH TLS\r\n EPSV\r\n PBSZ\r\n MDTM\r\n211 End",
        "226-aborted\r\n226 done",
        "150-multi\r\n150 preliminary",
        "200-NOOP\r\n200 ok",
    ]);
    // Lines that end the session: rare, or nothing after them would be explored.
    let closing = text(&["421 bye", "hello", "600 no", "200x"]);
    let garbage = vec(any::<u8>(), 0..30);
    prop_oneof![12 => terminated(fixed), 4 => passive_reply(upstream), 1 => terminated(closing), 1 => garbage]
}

fn ready_addr(hint: IpAddr) -> impl Strategy<Value = SocketAddr> {
    (prop_oneof![3 => Just(hint), 1 => ip_strategy()], port_strategy()).prop_map(|(ip, p)| SocketAddr::new(ip, p))
}

/// One exchange as it happens on the wire, or a single event out of turn.
fn step(client: IpAddr, upstream: IpAddr) -> impl Strategy<Value = Vec<Event>> {
    let server = |s: &'static str| Event::Server(s.as_bytes().to_vec());
    let passive = (terminated(passive_command()), passive_reply(upstream), ready_addr(client), 0u8..5).prop_map(
        move |(cmd, reply, ready, how)| {
            let mut v = vec![Event::Client(cmd), Event::Server(reply)];
            match how {
                0 => v.push(Event::SetupFailed),
                1 => {}
                2 => v.extend([Event::ListenersReady(ready, ready), Event::ConnectStarted]),
                _ => v.push(Event::PassiveReady(ready)),
            }
            v
        },
    );
    let active = (terminated(active_command(client)), ready_addr(upstream), text(&["200 ok", "500 no"]), 0u8..4)
        .prop_map(move |(cmd, ready, ack, how)| match how {
            0 => vec![Event::Client(cmd), Event::SetupFailed],
            _ => vec![Event::Client(cmd), Event::ActiveReady(ready), Event::Server(line_end(ack, false))],
        });
    let transfer = (terminated(transfer_command()), 0u8..5).prop_map(move |(cmd, how)| {
        let mut v = vec![Event::Client(cmd)];
        match how {
            0 => v.push(server("425 no data connection\r\n")),
            1 => v.push(server("150 opening\r\n")),
            2 => v.extend([server("150 opening\r\n"), server("226 done\r\n")]),
            _ => v.extend([server("150 opening\r\n"), server("226 done\r\n"), Event::DataFinished(true)]),
        }
        v
    });
    let abort = (any::<bool>(), 0u8..4, prop::option::of(client_line(client))).prop_map(move |(urgent, how, extra)| {
        let mut cmd = if urgent { vec![IAC, 244, IAC, 242] } else { Vec::new() };
        cmd.extend_from_slice(b"ABOR\r\n");
        let mut v = vec![Event::Client(cmd)];
        // A command typed while the ABOR is answered is held back.
        v.extend(extra.map(Event::Client));
        match how {
            0 => v.extend([server("426 aborted\r\n"), server("226 done\r\n"), server("200 NOOP ok\r\n")]),
            1 => v.extend([server("226 nothing to abort\r\n"), server("200 NOOP ok\r\n")]),
            2 => v.extend([server("150 stray\r\n"), server("226 aborted\r\n"), server("200 NOOP ok\r\n")]),
            _ => v.push(server("426 aborted\r\n")),
        }
        v
    });
    let simple = (terminated(other_command()), server_line(upstream))
        .prop_map(|(cmd, reply)| vec![Event::Client(cmd), Event::Server(reply)]);
    let single = prop_oneof![
        4 => client_line(client).prop_map(Event::Client),
        1 => vec(any::<u8>(), 0..12).prop_map(Event::Client),
        4 => server_line(upstream).prop_map(Event::Server),
        2 => ready_addr(client).prop_map(Event::PassiveReady),
        2 => ready_addr(upstream).prop_map(Event::ActiveReady),
        1 => Just(Event::SetupFailed),
        2 => any::<bool>().prop_map(Event::DataFinished),
        1 => prop_oneof![0u16..200, Just(120), Just(300), Just(3600)].prop_map(Event::Tick),
        1 => prop_oneof![Just(Event::ClientEof), Just(Event::ServerEof)],
        1 => (0u8..3).prop_map(Event::Upstream),
        2 => any::<bool>().prop_map(Event::TlsReady),
        1 => any::<bool>().prop_map(Event::TlsFailed),
    ]
    .prop_map(|e| vec![e]);
    // AUTH answered and both handshakes reported, in the order inspection needs; terminate
    // ignores the server's half.
    let tls = any::<bool>().prop_map(move |inject| {
        let mut auth = b"AUTH TLS\r\n".to_vec();
        if inject {
            auth.extend_from_slice(b"DELE injected\r\n");
        }
        vec![
            Event::Client(auth),
            Event::Server(b"234 proceed\r\n".to_vec()),
            Event::TlsReady(false),
            Event::TlsReady(true),
            Event::Client(b"PBSZ 0\r\n".to_vec()),
            Event::Client(b"PROT P\r\n".to_vec()),
        ]
    });
    // FEAT answered with features a policy may leave out (AUTH, PBSZ under `tls: refuse`).
    let feat = Just(vec![
        Event::Client(b"FEAT\r\n".to_vec()),
        Event::Server(b"211-Features:\r\n AUTH TLS\r\n EPSV\r\n PBSZ\r\n MDTM\r\n211 End\r\n".to_vec()),
    ]);
    prop_oneof![4 => passive, 3 => active, 2 => transfer, 2 => abort, 3 => simple, 4 => single, 1 => tls, 1 => feat]
}

/// What a client of the login phase says first (forward proxy and routes alike).
fn login_lines() -> impl Strategy<Value = Vec<Event>> {
    let line = terminated(text(&[
        "USER alice@ftp.example",
        "USER a@b@[2001:db8::2]:2121",
        "USER bob@b",
        "USER bob",
        "PASS pw",
        "USER x@",
        "USER x@[::1",
        "LIST",
        "FEAT",
        "NOOP",
        "QUIT",
    ]));
    (vec(line, 1..4), prop::bool::weighted(0.8), 0u8..3).prop_map(|(lines, report, how)| {
        let mut v: Vec<Event> = lines.into_iter().map(Event::Client).collect();
        if report {
            v.push(Event::Upstream(if how == 0 { 1 } else { 0 }));
        }
        v
    })
}

/// A session that starts in the login phase (forward proxy or routes): the usual scenario
/// behind what its client says first.
fn login_scenario() -> impl Strategy<Value = Scenario> {
    (scenario(), 1u8..3, login_lines()).prop_map(|(mut sc, login, first)| {
        sc.login = login;
        sc.events.splice(0..0, first);
        sc
    })
}

fn any_scenario() -> impl Strategy<Value = Scenario> {
    prop_oneof![3 => scenario(), 1 => login_scenario()]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        0..CLIENTS.len(),
        0..UPSTREAMS.len(),
        any::<bool>(),
        prop_oneof![3 => Just(512usize), 1 => 16usize..80],
        0u8..3,
        // Mostly refused, as most runs explore the rest of the protocol.
        prop_oneof![6 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)],
    )
        .prop_flat_map(|(ci, ui, refuse, max_line, mode, tls)| {
            let client: SocketAddr = CLIENTS[ci].parse().unwrap();
            let upstream: SocketAddr = UPSTREAMS[ui].parse().unwrap();
            // The greeting usually comes first, as it does on the wire.
            (vec(step(client.ip(), upstream.ip()), 0..24), prop::bool::weighted(0.9)).prop_map(move |(steps, greet)| {
                let mut events = Vec::new();
                if greet {
                    events.push(Event::Server(b"220 ready\r\n".to_vec()));
                }
                events.extend(steps.into_iter().flatten());
                Scenario {
                    client,
                    upstream,
                    server_data: if refuse { ServerDataPolicy::Refuse } else { ServerDataPolicy::Substitute },
                    server_mode: [ServerDataMode::Client, ServerDataMode::Passive, ServerDataMode::Active]
                        [usize::from(mode)],
                    max_line,
                    login: 0,
                    tls: TLS_POLICIES[tls],
                    events,
                }
            })
        })
}

/// Hands every action to the checker and `seen`; the newest data channel's id goes to `last`.
fn drain(
    core: &mut ControlCore,
    checker: &mut Checker,
    last: &mut DataId,
    seen: &mut Vec<Action>,
) -> Result<(), TestCaseError> {
    while let Some(a) = core.poll_action() {
        checker.check(&a).map_err(TestCaseError::fail)?;
        if let Action::OpenData { id, .. } = a {
            *last = id;
        }
        seen.push(a);
    }
    Ok(())
}

/// Runs a scenario through the control core as the driver does; stops at `Close`. Every action
/// is checked and appended to `seen`.
fn run_scenario(sc: &Scenario, seen: &mut Vec<Action>) -> Result<(), TestCaseError> {
    let policy = SessionPolicy {
        server_data: sc.server_data,
        server_mode: sc.server_mode,
        max_line: sc.max_line,
        tls: sc.tls,
        ..SessionPolicy::default()
    };
    let mut now = Instant::now();
    let (mut checker, mut core) = match sc.login {
        0 => (
            Checker::new(sc.client, sc.upstream, &policy),
            ControlCore::new(ClientAddr(sc.client), UpstreamAddr(sc.upstream), policy, TIMEOUTS, now),
        ),
        n => {
            let mode = if n == 1 {
                LoginMode::Forward
            } else {
                let rule = Route { user: UserMatch::Suffix("@b".into()), upstream: sc.upstream, send_as: None };
                LoginMode::Route(Arc::new(Routes { rules: vec![rule], default: sc.upstream }))
            };
            (
                Checker::with_login(sc.client, &policy),
                ControlCore::with_login(ClientAddr(sc.client), mode, policy, TIMEOUTS, now),
            )
        }
    };
    let mut last = DataId(0);
    for ev in &sc.events {
        match ev {
            Event::Client(bytes) => core.handle_client_bytes(bytes, now),
            Event::Server(bytes) => core.handle_server_bytes(bytes, now),
            Event::PassiveReady(a) | Event::ActiveReady(a) => {
                core.handle_data_ready(last, DataReady::Listening(*a), now)
            }
            Event::ListenersReady(c, a) => {
                core.handle_data_ready(last, DataReady::Listeners { advertise: *c, listen: *a }, now)
            }
            Event::ConnectStarted => core.handle_data_ready(last, DataReady::Connecting, now),
            Event::SetupFailed => core.handle_data_failed(last, "no free port", now),
            Event::DataFinished(delivered) => {
                core.handle_data_finished(last, *delivered, now);
            }
            Event::Tick(s) => {
                now += Duration::from_secs(u64::from(*s));
                core.handle_timeout(now);
            }
            Event::ClientEof => core.handle_client_eof(now),
            Event::ServerEof => core.handle_server_eof(now),
            Event::Upstream(how) => {
                // Reported out of turn as well: the core must ignore what it did not ask for.
                let asked = checker.connect_pending();
                match how {
                    0 => {
                        if asked {
                            checker.connected(sc.upstream).map_err(TestCaseError::fail)?;
                        }
                        core.handle_upstream_connected(UpstreamAddr(sc.upstream), now)
                    }
                    _ => {
                        if asked {
                            checker.connect_failed().map_err(TestCaseError::fail)?;
                        }
                        let f = if *how == 1 {
                            ConnectFailure::Refused("Destination refused by gateway policy".into())
                        } else {
                            ConnectFailure::Unreachable("Cannot connect".into())
                        };
                        core.handle_upstream_failed(f, now)
                    }
                }
            }
            Event::TlsReady(c) => core.handle_tls_ready(if *c { Side::Client } else { Side::Server }, now),
            Event::TlsFailed(c) => {
                core.handle_tls_failed(if *c { Side::Client } else { Side::Server }, "handshake failed", now)
            }
        }
        drain(&mut core, &mut checker, &mut last, seen)?;
        // A deadline that has passed is acted on at once (the driver's timer fires at once).
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
            drain(&mut core, &mut checker, &mut last, seen)?;
        }
        if checker.is_closed() {
            prop_assert!(core.is_closed());
            return Ok(());
        }
        // An open session always has a deadline ahead: no busy loop, no session without end.
        prop_assert!(core.poll_timeout().is_some_and(|t| t > now), "deadline {:?}", core.poll_timeout());
    }
    Ok(())
}

/// Runs `f` on a thread with room for proptest's nested strategies in unoptimised builds.
fn with_stack(f: impl FnOnce() + Send + 'static) {
    let t = std::thread::Builder::new().stack_size(64 << 20).spawn(f).expect("test thread");
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn session_invariants_hold() {
    with_stack(|| {
        let mut runner = proptest::test_runner::TestRunner::new(config(2048));
        if let Err(e) = runner.run(&any_scenario(), |sc| run_scenario(&sc, &mut Vec::new())) {
            panic!("{e}");
        }
    });
}

/// The scenario generator is not vacuous: over a fixed set of runs it reaches the paths the
/// invariants are about (data setups in both directions, urgent ABOR, substituted and refused
/// endpoints, refused bounces).
#[test]
fn session_scenarios_reach_the_interesting_paths() {
    use ftpgate::session::{DataRequest, Refusal};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let strategy = scenario();
    let mut seen = Vec::new();
    for _ in 0..1500 {
        let sc = strategy.new_tree(&mut runner).unwrap().current();
        run_scenario(&sc, &mut seen).unwrap();
    }
    let logins = login_scenario();
    for _ in 0..300 {
        let sc = logins.new_tree(&mut runner).unwrap().current();
        run_scenario(&sc, &mut seen).unwrap();
    }
    let count = |f: &dyn Fn(&Action) -> bool| seen.iter().filter(|a| f(a)).count();
    let reached = [
        ("Passive", count(&|a| matches!(a, Action::OpenData { request: DataRequest::Passive { .. }, .. }))),
        ("Active", count(&|a| matches!(a, Action::OpenData { request: DataRequest::Active { .. }, .. }))),
        ("Listeners", count(&|a| matches!(a, Action::OpenData { request: DataRequest::Listeners, .. }))),
        ("Connect", count(&|a| matches!(a, Action::OpenData { request: DataRequest::Connect { .. }, .. }))),
        ("ToServerUrgent", count(&|a| matches!(a, Action::ToServerUrgent(_)))),
        ("gateway NOOP", count(&|a| *a == Action::ToServer(b"NOOP\r\n".to_vec()))),
        ("PORT from gateway", count(&|a| matches!(a, Action::ToServer(p) if p.starts_with(b"PORT ")))),
        ("EPRT from gateway", count(&|a| matches!(a, Action::ToServer(p) if p.starts_with(b"EPRT ")))),
        ("0xFF to the server", count(&|a| matches!(a, Action::ToServer(p) if p.contains(&IAC)))),
        (
            "reply held for data",
            count(&|a| matches!(a, Action::ToClient { bytes, .. } if bytes.starts_with(b"226 done"))),
        ),
        ("transfer way", count(&|a| matches!(a, Action::DataCarries { .. }))),
        ("stale data report", count(&|a| matches!(a, Action::Note(Note::StaleData { .. })))),
        ("FEAT line left out", count(&|a| matches!(a, Action::Note(Note::FeatureHidden(_))))),
        ("timeout", count(&|a| matches!(a, Action::Note(Note::Timeout(_))))),
        ("Bounce", count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::Bounce { .. }))))),
        ("PrivilegedPort", count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::PrivilegedPort { .. }))))),
        (
            "ServerDataElsewhere",
            count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::ServerDataElsewhere { .. })))),
        ),
        (
            "ServerPrivilegedPort",
            count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::ServerPrivilegedPort(_))))),
        ),
        ("MalformedCommand", count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::MalformedCommand(_)))))),
        ("LineTooLong", count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::LineTooLong { .. }))))),
        ("upstream asked for", count(&|a| matches!(a, Action::Connect(_)))),
        ("login replayed", count(&|a| matches!(a, Action::ToServer(p) if p.starts_with(b"USER bob\r")))),
        ("password replayed", count(&|a| *a == Action::ToServer(b"PASS pw\r\n".to_vec()))),
        ("LoginFirst", count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::LoginFirst(_)))))),
        ("BadForwardTarget", count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::BadForwardTarget(_)))))),
        ("client to TLS", count(&|a| *a == Action::StartTls(Side::Client))),
        ("server to TLS", count(&|a| *a == Action::StartTls(Side::Server))),
        (
            "clear text behind AUTH",
            count(&|a| matches!(a, Action::Note(Note::Refused(Refusal::ClearTextAfterAuth { .. })))),
        ),
    ];
    eprintln!("{reached:?}");
    for (what, n) in reached {
        assert!(n > 0, "no scenario reached {what}: {reached:?}");
    }
}
