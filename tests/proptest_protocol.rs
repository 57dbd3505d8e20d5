//! Property tests for the pure protocol layer and the I/O-free session state machine.
//!
//! Each property states something the code promises and can fail: codec round trips, framing
//! and Telnet filtering independent of how the stream is chunked, and the session's security
//! invariants over random conversations (what reaches the server is always exactly one command
//! line; data endpoints are always the client's own or the server's own address, never a
//! privileged port).

use ftpgate::addr::{canonical_ip, ClientAddr, UpstreamAddr};
use ftpgate::protocol::address::{
    encode_227, encode_229, encode_eprt_arg, encode_port_arg, parse_227, parse_229, parse_eprt_arg, parse_port_arg,
};
use ftpgate::protocol::reply::{parse_code, reply_line};
use ftpgate::protocol::{Command, Frame, LineFramer, ReplyLineKind, ReplyTracker, TelnetEvent, TelnetFilter};
use ftpgate::session::{Action, ServerDataMode, ServerDataPolicy, Session, SessionPolicy};
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

const IAC: u8 = 255;

/// No regression files are written next to the tests: a failure prints its minimal input, which
/// belongs in a named unit test.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Splits `data` at the given cut points (taken modulo its length); empty chunks are kept, they
/// are a legitimate (if useless) read.
fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for c in cuts {
        out.push(&data[start..c]);
        start = c;
    }
    out.push(&data[start..]);
    out
}

/// Frames `chunks` one after the other like the I/O edge does, checking the buffer bound after
/// every read. Returns the frames and what is left in the buffer.
fn frame_chunks(max: usize, chunks: &[&[u8]]) -> Result<(Vec<Frame>, Vec<u8>), TestCaseError> {
    let mut framer = LineFramer::new(max);
    let bound = framer.max();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Some(f) = framer.next_frame(&mut buf) {
            frames.push(f);
        }
        prop_assert!(buf.len() <= bound, "buffer holds {} bytes, bound {}", buf.len(), bound);
    }
    Ok((frames, buf))
}

fn telnet_chunks(chunks: &[&[u8]]) -> (Vec<u8>, Vec<TelnetEvent>) {
    let mut f = TelnetFilter::new();
    let (mut out, mut ev) = (Vec::new(), Vec::new());
    for c in chunks {
        f.feed(c, &mut out, &mut ev);
    }
    (out, ev)
}

/// Exactly one line: a non-empty body without CR, LF or NUL, then CRLF.
fn one_command_line(p: &[u8]) -> bool {
    match p.strip_suffix(b"\r\n") {
        Some(body) => !body.is_empty() && !body.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
        None => false,
    }
}

fn ipv6_strategy() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<Ipv6Addr>(),
        // Zero runs exercise "::" compression in the textual form.
        vec(prop_oneof![Just(0u16), any::<u16>()], 8)
            .prop_map(|s| Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])),
        any::<Ipv4Addr>().prop_map(|v4| v4.to_ipv6_mapped()),
    ]
}

/// Any byte a framed command argument can hold.
fn arg_byte() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("no CR/LF/NUL", |b| !matches!(b, b'\r' | b'\n' | 0))
}

fn ip_strategy() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<Ipv4Addr>().prop_map(IpAddr::V4), ipv6_strategy().prop_map(IpAddr::V6)]
}

// ---------------------------------------------------------------------------------------------
// Codec round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn port_arg_round_trips(ip in any::<Ipv4Addr>(), port in 1u16..=65535) {
        let a = SocketAddrV4::new(ip, port);
        let text = encode_port_arg(a);
        prop_assert_eq!(parse_port_arg(&text), Ok(a), "{}", text);
    }

    #[test]
    fn eprt_arg_round_trips(ip in ip_strategy(), port in 1u16..=65535) {
        let a = SocketAddr::new(ip, port);
        let text = encode_eprt_arg(a);
        prop_assert_eq!(parse_eprt_arg(&text), Ok(a), "{}", text);
    }

    #[test]
    fn reply_227_round_trips(ip in any::<Ipv4Addr>(), port in 1u16..=65535) {
        let a = SocketAddrV4::new(ip, port);
        let wire = encode_227(a);
        prop_assert!(wire.ends_with(b"\r\n"));
        prop_assert_eq!(parse_227(&wire[4..]), Ok(a));
        // And as the session sees it: framed (LF removed) and tracked.
        let rl = ReplyTracker::new().feed(&wire[..wire.len() - 1]).unwrap();
        prop_assert_eq!((rl.code, rl.kind), (227, ReplyLineKind::Single));
        prop_assert_eq!(parse_227(rl.text()), Ok(a));
    }

    #[test]
    fn reply_229_round_trips(port in 1u16..=65535) {
        let wire = encode_229(port);
        prop_assert!(wire.ends_with(b"\r\n"));
        prop_assert_eq!(parse_229(&wire[4..]), Ok(port));
        let rl = ReplyTracker::new().feed(&wire[..wire.len() - 1]).unwrap();
        prop_assert_eq!((rl.code, rl.kind), (229, ReplyLineKind::Single));
        prop_assert_eq!(parse_229(rl.text()), Ok(port));
    }

    /// A client line `verb [SP arg]` parses, re-encodes to itself plus CRLF, and the encoding
    /// parses back to the same command whether the framer left the CR or not.
    #[test]
    fn command_parse_encode_round_trips(
        verb in "[A-Za-z]{1,8}",
        arg in proptest::option::of(vec(arg_byte(), 0..64)),
    ) {
        let mut line = verb.as_bytes().to_vec();
        if let Some(a) = &arg {
            line.push(b' ');
            line.extend_from_slice(a);
        }
        let c = Command::parse(&line).unwrap();
        prop_assert_eq!(c.name(), verb.to_ascii_uppercase());
        prop_assert_eq!(c.arg(), arg.as_deref());
        let enc = c.encode();
        let mut want = line.clone();
        want.extend_from_slice(b"\r\n");
        prop_assert_eq!(&enc, &want);
        prop_assert!(one_command_line(&enc));
        prop_assert_eq!(Command::parse(&enc[..enc.len() - 1]), Ok(c.clone()));
        prop_assert_eq!(Command::parse(&enc[..enc.len() - 2]), Ok(c));
    }

    /// Commands the gateway builds itself survive the trip through the wire.
    #[test]
    fn built_command_round_trips(verb in "[A-Za-z]{1,8}", arg in proptest::option::of("[^\r\n\x00]{0,40}")) {
        let c = Command::new(&verb, arg.as_deref());
        let enc = c.encode();
        prop_assert!(one_command_line(&enc));
        prop_assert_eq!(Command::parse(&enc[..enc.len() - 1]), Ok(c));
    }

    #[test]
    fn reply_line_is_always_one_line(
        code in 100u16..600,
        text in prop_oneof![any::<String>(), "[a-z \r\n\u{0}\u{85}\u{2028}]{0,40}"],
    ) {
        let out = reply_line(code, &text);
        let prefix = format!("{code} ");
        prop_assert!(out.starts_with(prefix.as_bytes()));
        prop_assert!(out.ends_with(b"\r\n"));
        let body = &out[..out.len() - 2];
        prop_assert!(!body.contains(&b'\r') && !body.contains(&b'\n'), "{:?}", String::from_utf8_lossy(&out));
        if !text.contains('\0') {
            let rl = ReplyTracker::new().feed(&out[..out.len() - 1]).unwrap();
            prop_assert_eq!((rl.code, rl.kind), (code, ReplyLineKind::Single));
            prop_assert_eq!(rl.raw, out);
        }
    }

    #[test]
    fn parse_code_agrees_with_the_digits(line in vec(any::<u8>(), 0..6)) {
        match parse_code(&line) {
            Some(c) => {
                prop_assert!((100..600).contains(&c));
                let digits = format!("{c:03}");
                prop_assert_eq!(digits.as_bytes(), &line[..3]);
            }
            None => prop_assert!(
                line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&line[0])
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Framing and Telnet filtering
// ---------------------------------------------------------------------------------------------

/// Byte streams rich in line ends, CRs and IACs, so that the interesting paths are hit.
fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![4 => any::<u8>(), 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => Just(IAC), 4 => b'a'..=b'z'], 0..600)
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn framer_is_independent_of_chunking(
        max in 0usize..80,
        data in stream_strategy(),
        cuts in vec(any::<usize>(), 0..24),
    ) {
        let (whole, whole_rest) = frame_chunks(max, &[&data])?;
        let (chunked, chunked_rest) = frame_chunks(max, &split(&data, &cuts))?;
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(&chunked_rest, &whole_rest);
        let bound = LineFramer::new(max).max();
        for f in &chunked {
            if let Frame::Line(l) = f {
                prop_assert!(l.len() < bound, "line of {} bytes, max {}", l.len(), bound);
                prop_assert!(!l.contains(&b'\n'));
            }
        }
        // Without an overlong line nothing is lost: the lines and their LFs are the stream up to
        // its last LF.
        let last_lf = data.iter().rposition(|&b| b == b'\n');
        let (head, tail) = data.split_at(last_lf.map_or(0, |i| i + 1));
        if !chunked.contains(&Frame::Overlong) {
            let mut rebuilt = Vec::new();
            for f in &chunked {
                if let Frame::Line(l) = f {
                    rebuilt.extend_from_slice(l);
                    rebuilt.push(b'\n');
                }
            }
            prop_assert_eq!(rebuilt, head);
        }
        // The unterminated tail stays buffered while it may still become a line, and is dropped
        // once it cannot.
        if tail.len() < bound {
            prop_assert_eq!(chunked_rest, tail);
        } else {
            prop_assert!(chunked_rest.is_empty());
        }
    }

    #[test]
    fn telnet_filter_is_independent_of_chunking(data in stream_strategy(), cuts in vec(any::<usize>(), 0..24)) {
        let whole = telnet_chunks(&[&data]);
        let chunked = telnet_chunks(&split(&data, &cuts));
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn telnet_filter_passes_plain_data_unchanged(
        data in vec(any::<u8>().prop_filter("no IAC", |&b| b != IAC), 0..400),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let (out, ev) = telnet_chunks(&split(&data, &cuts));
        prop_assert_eq!(out, data);
        prop_assert!(ev.is_empty());
    }

    /// A stream built from plain data and Telnet sequences filters to exactly the plain data
    /// (an escaped IAC counts as one data byte 0xFF): no byte from inside a sequence leaks
    /// into the command stream, and every sequence is reported as expected.
    #[test]
    fn telnet_sequences_never_leak(segs in vec(telnet_segment(), 0..40), cuts in vec(any::<usize>(), 0..16)) {
        let mut wire = Vec::new();
        let mut want_out = Vec::new();
        let mut want_ev = Vec::new();
        for s in &segs {
            wire.extend_from_slice(&s.wire);
            want_out.extend_from_slice(&s.data);
            want_ev.extend(s.event);
        }
        let (out, ev) = telnet_chunks(&split(&wire, &cuts));
        prop_assert_eq!(out, want_out);
        prop_assert_eq!(ev, want_ev);
    }
}

#[derive(Debug, Clone)]
struct Segment {
    wire: Vec<u8>,
    data: Vec<u8>,
    event: Option<TelnetEvent>,
}

fn telnet_segment() -> impl Strategy<Value = Segment> {
    const SE: u8 = 240;
    const SB: u8 = 250;
    let plain = vec(any::<u8>().prop_filter("no IAC", |&b| b != IAC), 1..20).prop_map(|d| Segment {
        wire: d.clone(),
        data: d,
        event: None,
    });
    let escaped = Just(Segment { wire: vec![IAC, IAC], data: vec![IAC], event: None });
    let option = (251u8..=254, any::<u8>()).prop_map(|(verb, opt)| Segment {
        wire: vec![IAC, verb, opt],
        data: Vec::new(),
        event: Some(match verb {
            251 => TelnetEvent::Refused { reply: [IAC, 254, opt] },
            253 => TelnetEvent::Refused { reply: [IAC, 252, opt] },
            _ => TelnetEvent::Ignored,
        }),
    });
    let command = (0u8..=249).prop_map(|cmd| Segment {
        wire: vec![IAC, cmd],
        data: Vec::new(),
        event: Some(match cmd {
            244 => TelnetEvent::InterruptProcess,
            242 => TelnetEvent::DataMark,
            _ => TelnetEvent::Ignored,
        }),
    });
    // Subnegotiation: any content where an IAC is followed by anything but SE, then IAC SE.
    let sub_token = prop_oneof![
        any::<u8>().prop_filter("no IAC", |&b| b != IAC).prop_map(|b| vec![b]),
        any::<u8>().prop_filter("not SE", |&b| b != SE).prop_map(|b| vec![IAC, b]),
    ];
    let sub = vec(sub_token, 0..12).prop_map(|tokens| {
        let mut wire = vec![IAC, SB];
        wire.extend(tokens.concat());
        wire.extend([IAC, SE]);
        Segment { wire, data: Vec::new(), event: Some(TelnetEvent::Ignored) }
    });
    prop_oneof![4 => plain, 1 => escaped, 2 => option, 2 => command, 1 => sub]
}

// ---------------------------------------------------------------------------------------------
// Session invariants
// ---------------------------------------------------------------------------------------------

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
}

#[derive(Debug, Clone)]
struct Scenario {
    client: SocketAddr,
    upstream: SocketAddr,
    server_data: ServerDataPolicy,
    server_mode: ServerDataMode,
    max_line: usize,
    events: Vec<Event>,
}

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
    prop_oneof![6 => fixed, 1 => vec(any::<u8>(), 0..40)]
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
        "211-Features:\r\n EPSV\r\n MDTM\r\n211 End",
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
    let transfer = (terminated(transfer_command()), 0u8..4).prop_map(move |(cmd, how)| {
        let mut v = vec![Event::Client(cmd)];
        match how {
            0 => v.push(server("425 no data connection\r\n")),
            1 => v.push(server("150 opening\r\n")),
            _ => v.extend([server("150 opening\r\n"), server("226 done\r\n")]),
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
    ]
    .prop_map(|e| vec![e]);
    prop_oneof![4 => passive, 3 => active, 2 => transfer, 2 => abort, 3 => simple, 4 => single]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (0..CLIENTS.len(), 0..UPSTREAMS.len(), any::<bool>(), prop_oneof![3 => Just(512usize), 1 => 16usize..80], 0u8..3)
        .prop_flat_map(|(ci, ui, refuse, max_line, mode)| {
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
                    events,
                }
            })
        })
}

fn check_actions(actions: &[Action], client: SocketAddr, upstream: SocketAddr) -> Result<(), TestCaseError> {
    for a in actions {
        match a {
            Action::ToServer(p) | Action::ToServerUrgent(p) => {
                prop_assert!(one_command_line(p), "not one command line: {:?}", String::from_utf8_lossy(p));
            }
            Action::OpenActive { client_data } => {
                prop_assert_eq!(canonical_ip(client_data.ip()), canonical_ip(client.ip()), "{:?}", a);
                prop_assert!(client_data.port() >= 1024, "{:?}", a);
            }
            Action::OpenPassive { server_data } => {
                prop_assert_eq!(canonical_ip(server_data.ip()), canonical_ip(upstream.ip()), "{:?}", a);
                prop_assert!(server_data.port() >= 1024, "{:?}", a);
            }
            Action::ConnectBoth { server_data, client_data } => {
                prop_assert_eq!(canonical_ip(client_data.ip()), canonical_ip(client.ip()), "{:?}", a);
                prop_assert_eq!(canonical_ip(server_data.ip()), canonical_ip(upstream.ip()), "{:?}", a);
                prop_assert!(client_data.port() >= 1024 && server_data.port() >= 1024, "{:?}", a);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs a scenario the way the control loop does; stops at the first `Close`. Every action is
/// checked and appended to `seen`.
fn run_scenario(sc: &Scenario, seen: &mut Vec<Action>) -> Result<(), TestCaseError> {
    let policy = SessionPolicy {
        server_data: sc.server_data,
        server_mode: sc.server_mode,
        max_line: sc.max_line,
        ..SessionPolicy::default()
    };
    let mut s = Session::new(ClientAddr(sc.client), UpstreamAddr(sc.upstream), policy);
    let mut telnet = TelnetFilter::new();
    let mut cframer = LineFramer::new(sc.max_line);
    let mut sframer = LineFramer::new(8192);
    let (mut cbuf, mut sbuf, mut events) = (Vec::new(), Vec::new(), Vec::new());
    let mut interrupted = false;
    for ev in &sc.events {
        let mut batches = Vec::new();
        match ev {
            Event::Client(bytes) => {
                telnet.feed(bytes, &mut cbuf, &mut events);
                for e in events.drain(..) {
                    if matches!(e, TelnetEvent::InterruptProcess | TelnetEvent::DataMark) {
                        interrupted = true;
                    }
                }
                while let Some(frame) = cframer.next_frame(&mut cbuf) {
                    batches.push(s.on_client_frame(frame, interrupted));
                    interrupted = false;
                }
            }
            Event::Server(bytes) => {
                sbuf.extend_from_slice(bytes);
                while let Some(frame) = sframer.next_frame(&mut sbuf) {
                    match frame {
                        Frame::Line(line) => batches.push(s.on_server_line(&line)),
                        Frame::Overlong => batches.push(vec![Action::Close]),
                    }
                }
            }
            Event::PassiveReady(a) => batches.push(s.on_passive_ready(*a)),
            Event::ActiveReady(a) => batches.push(s.on_active_ready(*a)),
            Event::ListenersReady(c, a) => batches.push(s.on_listeners_ready(*c, *a)),
            Event::ConnectStarted => batches.push(s.on_connect_started()),
            Event::SetupFailed => batches.push(s.on_data_setup_failed("no free port")),
        }
        for actions in batches {
            check_actions(&actions, sc.client, sc.upstream)?;
            let close = actions.contains(&Action::Close);
            seen.extend(actions);
            if close {
                return Ok(());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn session_invariants_hold(sc in scenario()) {
        run_scenario(&sc, &mut Vec::new())?;
    }
}

/// The scenario generator is not vacuous: over a fixed set of runs it reaches the paths the
/// invariants are about (data setups in both directions, urgent ABOR, substituted and refused
/// endpoints, refused bounces).
#[test]
fn session_scenarios_reach_the_interesting_paths() {
    use ftpgate::session::Refusal;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let strategy = scenario();
    let mut seen = Vec::new();
    for _ in 0..600 {
        let sc = strategy.new_tree(&mut runner).unwrap().current();
        run_scenario(&sc, &mut seen).unwrap();
    }
    let count = |f: &dyn Fn(&Action) -> bool| seen.iter().filter(|a| f(a)).count();
    let reached = [
        ("OpenPassive", count(&|a| matches!(a, Action::OpenPassive { .. }))),
        ("OpenActive", count(&|a| matches!(a, Action::OpenActive { .. }))),
        ("OpenListeners", count(&|a| matches!(a, Action::OpenListeners))),
        ("ConnectBoth", count(&|a| matches!(a, Action::ConnectBoth { .. }))),
        ("ToServerUrgent", count(&|a| matches!(a, Action::ToServerUrgent(_)))),
        ("gateway NOOP", count(&|a| *a == Action::ToServer(b"NOOP\r\n".to_vec()))),
        ("PORT from gateway", count(&|a| matches!(a, Action::ToServer(p) if p.starts_with(b"PORT ")))),
        ("EPRT from gateway", count(&|a| matches!(a, Action::ToServer(p) if p.starts_with(b"EPRT ")))),
        ("ToClientAfterData", count(&|a| matches!(a, Action::ToClientAfterData(_)))),
        ("Bounce", count(&|a| matches!(a, Action::Refused(Refusal::Bounce { .. })))),
        ("PrivilegedPort", count(&|a| matches!(a, Action::Refused(Refusal::PrivilegedPort { .. })))),
        ("ServerDataElsewhere", count(&|a| matches!(a, Action::Refused(Refusal::ServerDataElsewhere { .. })))),
        ("ServerPrivilegedPort", count(&|a| matches!(a, Action::Refused(Refusal::ServerPrivilegedPort(_))))),
        ("MalformedCommand", count(&|a| matches!(a, Action::Refused(Refusal::MalformedCommand(_))))),
        ("LineTooLong", count(&|a| matches!(a, Action::Refused(Refusal::LineTooLong { .. })))),
    ];
    eprintln!("{reached:?}");
    for (what, n) in reached {
        assert!(n > 0, "no scenario reached {what}: {reached:?}");
    }
}

/// The checker itself must be able to fail: a hand-made bad action is caught.
#[test]
fn invariant_checker_catches_violations() {
    let c: SocketAddr = CLIENTS[0].parse().unwrap();
    let u: SocketAddr = UPSTREAMS[0].parse().unwrap();
    let bad = [
        Action::ToServer(b"RETR a\r\nDELE b\r\n".to_vec()),
        Action::ToServer(b"RETR a".to_vec()),
        Action::ToServerUrgent(b"ABOR\0\r\n".to_vec()),
        Action::OpenActive { client_data: "203.0.113.99:5000".parse().unwrap() },
        Action::OpenActive { client_data: "203.0.113.2:25".parse().unwrap() },
        Action::OpenPassive { server_data: "203.0.113.99:5000".parse().unwrap() },
        Action::OpenPassive { server_data: "198.51.100.2:1023".parse().unwrap() },
    ];
    for a in bad {
        assert!(check_actions(std::slice::from_ref(&a), c, u).is_err(), "{a:?} passed");
    }
    let good = [
        Action::ToServer(b"RETR a\r\n".to_vec()),
        Action::OpenActive { client_data: "[::ffff:203.0.113.2]:5000".parse().unwrap() },
        Action::OpenPassive { server_data: "198.51.100.2:1024".parse().unwrap() },
    ];
    assert!(check_actions(&good, c, u).is_ok());
}
