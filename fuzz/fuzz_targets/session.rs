//! The control core driven by a conversation read from the input, through the same entry
//! points the gateway's driver uses, every action checked by the shared invariant checker.
//!
//! Input: records separated by LF. An optional first record `#` followed by up to four bytes
//! configures the session: client address (byte 1 mod 3: v4, v6, v4-mapped), upstream address
//! (byte 2 mod 3: same), policy bits (byte 3: bit 0 refuses foreign passive addresses instead of
//! substituting, bit 1 lets AUTH through (bits 4-5 then choose terminate toward a plain, an
//! explicit or an implicit FTPS server, or inspect), bits 2 and up mod 3: data mode toward the
//! server client, passive, active), client line bound (byte 4: 16 + 2 * byte; default 512), how
//! the session starts (byte 5 mod 3: connected, forward proxy login, routes login).
//! Every other record is one event, by its first byte:
//!
//! - `C` client sends the rest + CRLF; `L` the rest + LF; `c` the rest as is (a partial read);
//!   `U` a Telnet Synch (IAC IP IAC DM), then the rest + CRLF
//! - `S` server sends the rest + CRLF; `s` the rest as is
//! - `P` / `A` the newest data channel is listening at the address in the rest (`ip:port`
//!   text, or derived from the raw bytes)
//! - `B` both listeners of a passive-to-active conversion are ready (the rest as for `P`)
//! - `K` the connections of an active-to-passive conversion are under way
//! - `F` data setup failed; `D` the newest data channel finished, `d` it ended with data lost;
//!   `X` a report about an older channel (stale)
//! - `T` time passes (the rest's first byte, squared, in seconds), then the timers run
//! - `N` the login phase's server is connected; `R` it was refused (530), `Q` unreachable (421);
//!   also out of turn, when the core must ignore the report
//! - `H` the TLS handshake the core asked for succeeded, `h` it failed (the rest's first byte
//!   odd: on the client's side, else the server's)
//! - `E` the client hangs up; `e` the server does; `Z` an administrator ends the session;
//!   anything else is ignored
//!
//! Asserted for every action (the invariants of `ftpgate::session::invariants`): what goes to
//! the server is exactly one line ending in CRLF, with no other CR, LF or NUL, and no Telnet
//! command in it (every 0xFF escaped: a Telnet-aware server reads what the gateway checked);
//! data connections go only to the client's own address or the server's own, never to a port
//! below 1024; replies reach the client in command order; nothing follows Close. Also: an open
//! session always has a deadline ahead once its timers have run.
//!
//! `FUZZ_TRACE=1 fuzz/target/<triple>/release/session <file>` prints what each event did.

#![no_main]

use ftpgate::addr::{ClientAddr, UpstreamAddr};
use ftpgate::session::invariants::Checker;
use ftpgate::session::{
    Action, ConnectFailure, ControlCore, CoreTimeouts, DataId, DataReady, LoginMode, Route, Routes, ServerDataMode,
    ServerDataPolicy, SessionPolicy, Side, TlsPolicy, UpstreamTls, UserMatch,
};
use std::sync::Arc;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

const CLIENTS: [&str; 3] = ["203.0.113.2:40000", "[2001:db8:1::2]:40000", "[::ffff:203.0.113.2]:40000"];
const UPSTREAMS: [&str; 3] = ["198.51.100.2:21", "[2001:db8:2::2]:21", "[::ffff:198.51.100.2]:21"];
const IAC: u8 = 255;
const TIMEOUTS: CoreTimeouts = CoreTimeouts {
    banner: Duration::from_secs(30),
    reply: Duration::from_secs(120),
    idle: Duration::from_secs(900),
    data_idle: Duration::from_secs(300),
    login: Duration::from_secs(60),
    connect: Duration::from_secs(10),
};

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
        tls: match (flags >> 4) & 3 {
            _ if flags & 2 == 0 => TlsPolicy::Refuse,
            0 => TlsPolicy::Terminate { upstream: UpstreamTls::None },
            1 => TlsPolicy::Terminate { upstream: UpstreamTls::Explicit },
            2 => TlsPolicy::Terminate { upstream: UpstreamTls::Implicit },
            _ => TlsPolicy::Inspect,
        },
        server_mode: [ServerDataMode::Client, ServerDataMode::Passive, ServerDataMode::Active][usize::from(flags >> 2) % 3],
        max_line,
        ..SessionPolicy::default()
    };

    let mut now = Instant::now();
    let (mut checker, mut core) = match pick(4) {
        0 => (
            Checker::new(client, upstream, &policy),
            ControlCore::new(ClientAddr(client), UpstreamAddr(upstream), policy, TIMEOUTS, now),
        ),
        n => {
            let mode = if n == 1 {
                LoginMode::Forward
            } else {
                let rule = Route { user: UserMatch::Suffix("@b".into()), upstream, send_as: None };
                LoginMode::Route(Arc::new(Routes { rules: vec![rule], default: upstream }))
            };
            (Checker::with_login(client, &policy), ControlCore::with_login(ClientAddr(client), mode, policy, TIMEOUTS, now))
        }
    };
    let mut last = DataId(0);

    for rec in records {
        let Some((&kind, rest)) = rec.split_first() else { continue };
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
                core.handle_client_bytes(&bytes, now);
            }
            b'S' | b's' => {
                let mut bytes = rest.to_vec();
                if kind == b'S' {
                    bytes.extend_from_slice(b"\r\n");
                }
                core.handle_server_bytes(&bytes, now);
            }
            b'P' => core.handle_data_ready(last, DataReady::Listening(addr(rest, client.ip())), now),
            b'A' => core.handle_data_ready(last, DataReady::Listening(addr(rest, upstream.ip())), now),
            b'B' => {
                let ready = DataReady::Listeners { advertise: addr(rest, client.ip()), listen: addr(rest, upstream.ip()) };
                core.handle_data_ready(last, ready, now)
            }
            b'K' => core.handle_data_ready(last, DataReady::Connecting, now),
            b'F' => core.handle_data_failed(last, &String::from_utf8_lossy(rest), now),
            b'D' | b'd' => {
                core.handle_data_finished(last, kind == b'D', now);
            }
            b'X' => {
                core.handle_data_finished(DataId(last.0.saturating_sub(1)), rest.first().is_some_and(|b| b & 1 == 0), now);
            }
            b'T' => {
                let s = u64::from(rest.first().copied().unwrap_or(1));
                now += Duration::from_secs(s * s);
                core.handle_timeout(now);
            }
            b'N' | b'R' | b'Q' => {
                let asked = checker.connect_pending();
                let reported = match kind {
                    b'N' => {
                        core.handle_upstream_connected(UpstreamAddr(upstream), now);
                        if asked { checker.connected(upstream) } else { Ok(()) }
                    }
                    _ => {
                        let text = String::from_utf8_lossy(rest).into_owned();
                        let f = if kind == b'R' { ConnectFailure::Refused(text) } else { ConnectFailure::Unreachable(text) };
                        core.handle_upstream_failed(f, now);
                        if asked { checker.connect_failed() } else { Ok(()) }
                    }
                };
                if let Err(e) = reported {
                    panic!("invariant broken: {e}");
                }
            }
            b'H' | b'h' => {
                let side = if rest.first().is_some_and(|b| b & 1 == 1) { Side::Client } else { Side::Server };
                if kind == b'H' {
                    core.handle_tls_ready(side, now)
                } else {
                    core.handle_tls_failed(side, &String::from_utf8_lossy(rest), now)
                }
            }
            b'E' => core.handle_client_eof(now),
            b'Z' => core.handle_admin_close(now),
            b'e' => core.handle_server_eof(now),
            _ => {}
        }
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        while let Some(a) = core.poll_action() {
            if trace() {
                eprintln!("{:?} -> {a:?}", String::from_utf8_lossy(rec));
            }
            if let Err(e) = checker.check(&a) {
                panic!("invariant broken: {e}");
            }
            if let Action::OpenData { id, .. } = a {
                last = id;
            }
        }
        if checker.is_closed() {
            assert!(core.is_closed(), "Close handed out but the core is open");
            return;
        }
        assert!(core.poll_timeout().is_some_and(|t| t > now), "an open session without a deadline ahead");
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
