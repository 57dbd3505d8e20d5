//! Pipelined commands, some answered by the server (echoing their number) and some by the
//! gateway itself: whatever the chunking and interleaving, the client's replies come back in the
//! order of its commands.

use super::{config, Checker, CLIENTS, TIMEOUTS, UPSTREAMS};
use ftpgate::addr::{ClientAddr, UpstreamAddr};
use ftpgate::session::{Action, ControlCore, SessionPolicy};
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::SocketAddr;
use std::time::Instant;

/// What answers a pipelined command.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The server, echoing the command's number.
    Server,
    /// The gateway, refusing it.
    Refused,
    /// The gateway, taking it itself.
    Local,
}

/// Commands (some to be answered by the server, some by the gateway) in random chunks,
/// interleaved at random with the server's answers; `true` in the schedule prefers a client
/// read.
fn order_case() -> impl Strategy<Value = (Vec<Answer>, Vec<usize>, Vec<bool>)> {
    let answer = prop_oneof![4 => Just(Answer::Server), 1 => Just(Answer::Refused), 1 => Just(Answer::Local)];
    (vec(answer, 1..48), vec(any::<usize>(), 0..12), vec(any::<bool>(), 0..200))
}

fn run_order_case(answers: &[Answer], cuts: &[usize], schedule: &[bool]) -> Result<(), TestCaseError> {
    let (c, u): (SocketAddr, SocketAddr) = (CLIENTS[0].parse().unwrap(), UPSTREAMS[0].parse().unwrap());
    let policy = SessionPolicy::default();
    let mut checker = Checker::new(c, u, &policy);
    let now = Instant::now();
    let mut core = ControlCore::new(ClientAddr(c), UpstreamAddr(u), policy, TIMEOUTS, now);
    let mut wire = Vec::new();
    let mut expected = String::from("220 hi\r\n");
    for (i, a) in answers.iter().enumerate() {
        match a {
            Answer::Server => {
                wire.extend_from_slice(format!("STAT {i}\r\n").as_bytes());
                expected.push_str(&format!("211 r{i}\r\n"));
            }
            Answer::Refused => {
                wire.extend_from_slice(b"AUTH TLS\r\n");
                expected.push_str("534 AUTH (FTPS) refused by policy\r\n");
            }
            Answer::Local => {
                wire.extend_from_slice(b"EPSV ALL\r\n");
                expected.push_str("200 EPSV ALL ok\r\n");
            }
        }
    }
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for c in cuts {
        chunks.push(&wire[start..c]);
        start = c;
    }
    let mut chunks = chunks.into_iter();
    let mut received = String::new();
    let mut asked: std::collections::VecDeque<String> = Default::default();
    core.handle_server_bytes(b"220 hi\r\n", now);
    let mut prefer = schedule.iter().copied().cycle();
    let mut client_done = false;
    for _ in 0..10_000 {
        while let Some(a) = core.poll_action() {
            checker.check(&a).map_err(TestCaseError::fail)?;
            match a {
                Action::ToClient { bytes, .. } => received.push_str(&String::from_utf8_lossy(&bytes)),
                Action::ToServer(line) => asked.push_back(String::from_utf8_lossy(&line).into_owned()),
                Action::Note(_) => {}
                other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
            }
        }
        let client_turn = prefer.next().unwrap_or(true) || asked.is_empty();
        if client_turn && core.wants_client_input() && !client_done {
            match chunks.next() {
                Some(chunk) => core.handle_client_bytes(chunk, now),
                None => client_done = true,
            }
            continue;
        }
        if client_done && asked.is_empty() {
            break;
        }
        let Some(line) = asked.pop_front() else {
            return Err(TestCaseError::fail("the gateway stopped reading with nothing asked of the server"));
        };
        let n: usize =
            line.trim_end().trim_start_matches("STAT ").parse().map_err(|_| TestCaseError::fail(line.clone()))?;
        core.handle_server_bytes(format!("211 r{n}\r\n").as_bytes(), now);
    }
    prop_assert_eq!(received, expected);
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn pipelined_replies_come_back_in_command_order((answers, cuts, schedule) in order_case()) {
        run_order_case(&answers, &cuts, &schedule)?;
    }
}
