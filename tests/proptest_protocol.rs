//! Property tests for the pure protocol layer.
//!
//! Each property states something the code promises and can fail: codec round trips, and
//! framing and Telnet filtering independent of how the stream is chunked. The control core's
//! properties are in `proptest_session.rs`.

use ftpgate::protocol::address::{
    encode_227, encode_229, encode_eprt_arg, encode_port_arg, parse_227, parse_229, parse_eprt_arg, parse_port_arg,
};
use ftpgate::protocol::reply::{parse_code, reply_line};
use ftpgate::protocol::{Command, Frame, LineFramer, ReplyLineKind, ReplyTracker, TelnetEvent, TelnetFilter};
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

    /// A client line `verb [SP arg]` parses, re-encodes to itself (Telnet-escaped) plus CRLF,
    /// and the encoding, read back through the Telnet filter, parses to the same command
    /// whether the framer left the CR or not.
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
        let mut want = Vec::new();
        ftpgate::protocol::telnet::escape(&line, &mut want);
        want.extend_from_slice(b"\r\n");
        prop_assert_eq!(&enc, &want);
        prop_assert!(one_command_line(&enc));
        let (dec, events) = telnet_chunks(&[&enc]);
        prop_assert!(events.is_empty());
        prop_assert_eq!(Command::parse(&dec[..dec.len() - 1]), Ok(c.clone()));
        prop_assert_eq!(Command::parse(&dec[..dec.len() - 2]), Ok(c));
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
            _ => TelnetEvent::Negotiation,
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
        Segment { wire, data: Vec::new(), event: Some(TelnetEvent::Negotiation) }
    });
    prop_oneof![4 => plain, 1 => escaped, 2 => option, 2 => command, 1 => sub]
}
