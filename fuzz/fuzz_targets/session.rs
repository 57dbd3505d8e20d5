//! The session state machine driven by a conversation read from the input, fed through the
//! same Telnet filter and framers as the I/O edge uses.
//!
//! Input: records separated by LF. An optional first record `#` followed by up to four bytes
//! configures the session: client address (byte 1 mod 3: v4, v6, v4-mapped), upstream address
//! (byte 2 mod 3: same), policy bits (byte 3: bit 0 refuses foreign passive addresses instead of
//! substituting, bit 1 lets AUTH through, bits 2 and up mod 3: data mode toward the server
//! client, passive, active), client line bound (byte 4: 16 + 2 * byte; default
//! 512). Every other record is one event, by its first byte:
//!
//! - `C` client sends the rest + CRLF; `L` the rest + LF; `c` the rest as is (a partial read);
//!   `U` a Telnet Synch (IAC IP IAC DM), then the rest + CRLF
//! - `S` server sends the rest + CRLF; `s` the rest as is
//! - `P` / `A` the passive / active data listener is ready at the address in the rest
//!   (`ip:port` text, or derived from the raw bytes)
//! - `B` both listeners of a passive-to-active conversion are ready (the rest as for `P`)
//! - `K` the connections of an active-to-passive conversion are under way
//! - `F` data setup failed; anything else is ignored
//!
//! Asserted for every action until the session asks to close: what goes to the server is
//! exactly one line ending in CRLF, with no other CR, LF or NUL; an active data connection only
//! ever goes to the client's own address, a passive one only to the server's own address (a
//! converted one: each side to its own), and none to a port below 1024.
//!
//! `FUZZ_TRACE=1 fuzz/target/<triple>/release/session <file>` prints what each event did.

#![no_main]

use ftpgate::addr::{canonical_ip, ClientAddr, UpstreamAddr};
use ftpgate::protocol::{Frame, LineFramer, TelnetEvent, TelnetFilter};
use ftpgate::session::{Action, ServerDataMode, ServerDataPolicy, Session, SessionPolicy};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const CLIENTS: [&str; 3] = ["203.0.113.2:40000", "[2001:db8:1::2]:40000", "[::ffff:203.0.113.2]:40000"];
const UPSTREAMS: [&str; 3] = ["198.51.100.2:21", "[2001:db8:2::2]:21", "[::ffff:198.51.100.2]:21"];
/// The edge's bound on a server line.
const MAX_REPLY_LINE: usize = 8192;
const IAC: u8 = 255;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut records = data.split(|&b| b == b'\n').peekable();
    let mut cfg: &[u8] = &[];
    if let Some(first) = records.peek() {
        if let Some(rest) = first.strip_prefix(b"#") {
            cfg = rest;
            records.next();
        }
    }
    let pick = |i: usize| cfg.get(i).map_or(0, |&b| usize::from(b) % 3);
    let client: SocketAddr = CLIENTS[pick(0)].parse().unwrap();
    let upstream: SocketAddr = UPSTREAMS[pick(1)].parse().unwrap();
    let flags = cfg.get(2).copied().unwrap_or(0);
    let max_line = cfg.get(3).map_or(512, |&b| 16 + 2 * usize::from(b));
    let policy = SessionPolicy {
        server_data: if flags & 1 != 0 { ServerDataPolicy::Refuse } else { ServerDataPolicy::Substitute },
        refuse_tls: flags & 2 == 0,
        server_mode: [ServerDataMode::Client, ServerDataMode::Passive, ServerDataMode::Active][usize::from(flags >> 2) % 3],
        max_line,
        ..SessionPolicy::default()
    };

    let mut s = Session::new(ClientAddr(client), UpstreamAddr(upstream), policy);
    let mut telnet = TelnetFilter::new();
    let mut cframer = LineFramer::new(max_line);
    let mut sframer = LineFramer::new(MAX_REPLY_LINE);
    let (mut cbuf, mut sbuf, mut tevents) = (Vec::new(), Vec::new(), Vec::new());
    let mut interrupted = false;

    for rec in records {
        let Some((&kind, rest)) = rec.split_first() else { continue };
        let mut batches: Vec<Vec<Action>> = Vec::new();
        match kind {
            b'C' | b'L' | b'c' | b'U' => {
                let mut bytes = Vec::with_capacity(rest.len() + 6);
                if kind == b'U' {
                    bytes.extend_from_slice(&[IAC, 244, IAC, 242]);
                }
                bytes.extend_from_slice(rest);
                match kind {
                    b'C' | b'U' => bytes.extend_from_slice(b"\r\n"),
                    b'L' => bytes.push(b'\n'),
                    _ => {}
                }
                telnet.feed(&bytes, &mut cbuf, &mut tevents);
                for e in tevents.drain(..) {
                    if matches!(e, TelnetEvent::InterruptProcess | TelnetEvent::DataMark) {
                        interrupted = true;
                    }
                }
                while let Some(frame) = cframer.next_frame(&mut cbuf) {
                    batches.push(s.on_client_frame(frame, interrupted));
                    interrupted = false;
                }
            }
            b'S' | b's' => {
                sbuf.extend_from_slice(rest);
                if kind == b'S' {
                    sbuf.extend_from_slice(b"\r\n");
                }
                while let Some(frame) = sframer.next_frame(&mut sbuf) {
                    match frame {
                        Frame::Line(line) => batches.push(s.on_server_line(&line)),
                        // The edge closes the session on an overlong reply line.
                        Frame::Overlong => batches.push(vec![Action::Close]),
                    }
                }
            }
            b'P' => batches.push(s.on_passive_ready(addr(rest, client.ip()))),
            b'A' => batches.push(s.on_active_ready(addr(rest, upstream.ip()))),
            b'B' => batches.push(s.on_listeners_ready(addr(rest, client.ip()), addr(rest, upstream.ip()))),
            b'K' => batches.push(s.on_connect_started()),
            b'F' => batches.push(s.on_data_setup_failed(&String::from_utf8_lossy(rest))),
            _ => {}
        }
        for actions in &batches {
            if trace() {
                eprintln!("{:?} -> {actions:?}", String::from_utf8_lossy(rec));
            }
            check(actions, client, upstream);
            if actions.contains(&Action::Close) {
                return;
            }
        }
    }
}

/// `FUZZ_TRACE=1` prints every event and its actions (for reading a reproducer).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// `ip:port` text, else an address made of the raw bytes.
fn addr(rest: &[u8], hint: IpAddr) -> SocketAddr {
    if let Some(a) = std::str::from_utf8(rest).ok().and_then(|t| t.trim().parse().ok()) {
        return a;
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match rest.len() {
        n if n >= 18 => {
            let ip: [u8; 16] = rest[..16].try_into().unwrap();
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port(&rest[16..]))
        }
        n if n >= 6 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3])), port(&rest[4..])),
        n if n >= 2 => SocketAddr::new(hint, port(rest)),
        _ => SocketAddr::new(hint, 50000),
    }
}

fn check(actions: &[Action], client: SocketAddr, upstream: SocketAddr) {
    for a in actions {
        match a {
            Action::ToServer(p) | Action::ToServerUrgent(p) => {
                let body = p.strip_suffix(b"\r\n").unwrap_or_else(|| panic!("no CRLF: {a:?}"));
                assert!(!body.is_empty(), "empty line: {a:?}");
                assert!(!body.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0), "not one line: {a:?}");
            }
            Action::OpenActive { client_data } => {
                assert_eq!(canonical_ip(client_data.ip()), canonical_ip(client.ip()), "{a:?}");
                assert!(client_data.port() >= 1024, "{a:?}");
            }
            Action::OpenPassive { server_data } => {
                assert_eq!(canonical_ip(server_data.ip()), canonical_ip(upstream.ip()), "{a:?}");
                assert!(server_data.port() >= 1024, "{a:?}");
            }
            Action::ConnectBoth { server_data, client_data } => {
                assert_eq!(canonical_ip(client_data.ip()), canonical_ip(client.ip()), "{a:?}");
                assert_eq!(canonical_ip(server_data.ip()), canonical_ip(upstream.ip()), "{a:?}");
                assert!(client_data.port() >= 1024 && server_data.port() >= 1024, "{a:?}");
            }
            _ => {}
        }
    }
}
