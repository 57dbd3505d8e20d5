//! Two readers, one meaning: a command whose argument holds any bytes, 0xFF and the Telnet
//! command bytes included, sent raw or Telnet-escaped, reaches the server as exactly the line
//! the gateway checked, read the way a Telnet-aware server reads it (modelled on ProFTPD's
//! `pr_netio_telnet_gets2`), and a denied user name never reaches it in any spelling.

use super::{config, CLIENTS, TIMEOUTS, UPSTREAMS};
use ftpgate::addr::{ClientAddr, UpstreamAddr};
use ftpgate::protocol::TelnetFilter;
use ftpgate::session::invariants::Checker;
use ftpgate::session::{Action, ControlCore, SessionPolicy, UserPolicy};
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::SocketAddr;
use std::time::Instant;

const IAC: u8 = 255;
const DENIED: &str = "blocked";

/// How a server that interprets Telnet reads its control stream, after ProFTPD 1.3.8: `IAC IAC`
/// is one 0xFF; `IAC WILL/WONT/DO/DONT x` and `IAC IP`, `IAC DM` are removed; `IAC` before any
/// other byte is kept with that byte.
fn server_reads(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    let mut mode = 0u8;
    for &b in wire {
        match mode {
            IAC => {
                mode = 0;
                match b {
                    251..=254 | 244 | 242 => mode = b,
                    IAC => out.push(IAC),
                    _ => out.extend_from_slice(&[IAC, b]),
                }
            }
            251..=254 => mode = 0,
            _ if b == IAC => mode = IAC,
            _ => {
                mode = 0;
                out.push(b);
            }
        }
    }
    out
}

/// What the gateway checked: the client's bytes through its Telnet filter, up to the first LF,
/// without the CR before it. `None` when no complete line came out.
fn gateway_checked(sent: &[u8]) -> Option<Vec<u8>> {
    let (mut data, mut events) = (Vec::new(), Vec::new());
    TelnetFilter::new().feed(sent, &mut data, &mut events);
    let lf = data.iter().position(|&b| b == b'\n')?;
    let line = &data[..lf];
    Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
}

fn escape(arg: &[u8]) -> Vec<u8> {
    arg.iter().flat_map(|&b| if b == IAC { vec![IAC, IAC] } else { vec![b] }).collect()
}

/// Argument bytes: anything but CR, LF and NUL, with 0xFF and the Telnet command bytes frequent.
fn arg_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>().prop_filter("line breaks and NUL end the line", |b| !matches!(b, b'\r' | b'\n' | 0)),
        2 => Just(IAC),
        2 => 240u8..=254,
        2 => b'a'..=b'z',
    ];
    vec(byte, 0..24)
}

/// The denied name with Telnet sequences spliced in at random places.
fn disguised_denied() -> impl Strategy<Value = Vec<u8>> {
    let splice = proptest::sample::select(vec![
        vec![IAC, IAC, 244],
        vec![IAC, IAC, 242],
        vec![IAC, IAC],
        vec![IAC, 244],
        vec![IAC, 242],
        vec![IAC, 253, 1],
        vec![IAC, 251, 3],
        vec![IAC, 250, 24, IAC, 240],
        vec![IAC, IAC, 251, 1],
    ]);
    vec((0..=DENIED.len(), splice), 1..4).prop_map(|cuts| {
        let mut pieces: Vec<(usize, Vec<u8>)> = cuts;
        pieces.sort_by_key(|(at, _)| *at);
        let mut out = Vec::new();
        let mut from = 0;
        for (at, seq) in pieces {
            out.extend_from_slice(&DENIED.as_bytes()[from..at]);
            out.extend_from_slice(&seq);
            from = at;
        }
        out.extend_from_slice(&DENIED.as_bytes()[from..]);
        out
    })
}

#[derive(Debug, Clone)]
struct Case {
    verb: &'static str,
    /// The argument as it goes on the wire from the client.
    wire: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    let verb = proptest::sample::select(vec!["USER", "user", "RETR", "CWD", "STOR", "SITE", "MKD"]);
    let wire = prop_oneof![
        2 => arg_bytes().prop_map(|a| escape(&a)),
        2 => arg_bytes(),
        3 => disguised_denied(),
    ];
    (verb, wire).prop_map(|(verb, wire)| Case { verb, wire })
}

fn run_case(c: &Case) -> Result<(), TestCaseError> {
    let (client, upstream): (SocketAddr, SocketAddr) = (CLIENTS[0].parse().unwrap(), UPSTREAMS[0].parse().unwrap());
    let policy = SessionPolicy {
        users: UserPolicy { deny: vec![DENIED.to_owned()], ..UserPolicy::default() },
        ..SessionPolicy::default()
    };
    let mut checker = Checker::new(client, upstream, &policy);
    let now = Instant::now();
    let mut core = ControlCore::new(ClientAddr(client), UpstreamAddr(upstream), policy, TIMEOUTS, now);
    core.handle_server_bytes(b"220 hi\r\n", now);
    let mut sent = format!("{} ", c.verb).into_bytes();
    sent.extend_from_slice(&c.wire);
    sent.extend_from_slice(b"\r\n");
    core.handle_client_bytes(&sent, now);
    let mut to_server = Vec::new();
    while let Some(a) = core.poll_action() {
        checker.check(&a).map_err(TestCaseError::fail)?;
        if let Action::ToServer(line) = a {
            to_server.push(line);
        }
    }
    let checked = gateway_checked(&sent);
    for line in &to_server {
        let read = server_reads(line);
        let want = checked.clone().map(|mut l| {
            l.extend_from_slice(b"\r\n");
            l
        });
        prop_assert_eq!(Some(&read), want.as_ref(), "the server reads another line than the gateway checked");
        let (mut decoded, mut events) = (Vec::new(), Vec::new());
        TelnetFilter::new().feed(line, &mut decoded, &mut events);
        prop_assert_eq!(&decoded, &read, "the gateway's own Telnet reading differs");
        if c.verb.eq_ignore_ascii_case("USER") {
            let name = String::from_utf8_lossy(&read[5..read.len() - 2]).trim().to_owned();
            prop_assert!(!name.eq_ignore_ascii_case(DENIED), "the denied user reached the server as {:?}", line);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn what_the_server_reads_is_what_the_gateway_checked(c in case()) {
        run_case(&c)?;
    }
}

#[test]
fn the_model_server_reads_telnet_as_proftpd_does() {
    assert_eq!(server_reads(b"USER blo\xff\xf4cked\r\n"), b"USER blocked\r\n");
    assert_eq!(server_reads(b"USER blo\xff\xff\xf4cked\r\n"), b"USER blo\xff\xf4cked\r\n");
    assert_eq!(server_reads(b"A\xff\xfd\x01B\xffxC\r\n"), b"AB\xffxC\r\n");
}
