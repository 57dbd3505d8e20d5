//! Replies held behind a transfer whose data has not drained are bounded: a server that floods
//! past the bound gets the session closed with 421, never a reply stream cut short in silence
//! (a client that lost replies pairs the rest with the wrong commands).

use crate::harness::{connect_data, gateway, Answer, Client, FakeServer, Sink};
use std::time::Duration;

/// More than the gateway's bound on held reply bytes (64 KiB).
const FLOOD: usize = 100 * 1024;
/// Far more than the socket buffers between server and client can hold, so the data cannot
/// drain while the client does not read it.
const SIZE: u64 = 64 << 20;

fn flood() -> Vec<u8> {
    let mut v = Vec::with_capacity(FLOOD + 32);
    let mut i = 0;
    while v.len() < FLOOD {
        v.extend_from_slice(format!("200 extra reply line {i:06}\r\n").as_bytes());
        i += 1;
    }
    v
}

/// RETR: 150, the first data, 226 at once, then 100 KiB of reply lines nobody asked for, while
/// the client reads none of the data. The gateway holds the 226 until the data has drained, and
/// what arrives behind it outgrows the bound: the client gets 421 and the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_behind_an_undrained_transfer_closes_the_session_with_421() {
    let server = FakeServer::builder()
        .script(|l| match l.verb.as_str() {
            "RETR" => Answer::Seq(vec![Answer::Retr { size: SIZE, early_226: true }, Answer::Raw(flood())]),
            _ => Answer::Default,
        })
        .start()
        .await;
    let gw = gateway::start(server.addr, "");
    let mut c = Client::greeted(gw.addr).await;
    let at = c.pasv().await;
    let mut sink = Sink::new(connect_data(at).await);
    c.send("RETR big.bin\r\n").await;
    c.expect(150).await;
    // The data stays unread: whatever the gateway says now, it says with the transfer undrained.
    match tokio::time::timeout(Duration::from_secs(5), c.next_reply()).await {
        Ok(Some(r)) => {
            assert_eq!(r.code, 421, "after 150, with the data undrained, the client got {r}");
            assert!(r.text().contains("more replies than the client asked for"), "{r}");
            c.expect_closed().await;
        }
        Ok(None) => panic!("the gateway closed the session without a 421"),
        Err(_) => {
            // What a gateway that drops the excess delivers once the data has gone through.
            let got = sink.read_to_end().await;
            let mut replies = Vec::new();
            while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), c.next_reply()).await {
                replies.push(r);
            }
            let extra = replies.iter().filter(|r| r.text().starts_with("extra reply line")).count();
            panic!(
                "no 421 within 5 s while the data was undrained; after the client read its {got} bytes it got {} \
                 replies: first {:?}, last {:?}, {extra} of the server's {} extra lines",
                replies.len(),
                replies.first().map(ToString::to_string),
                replies.last().map(ToString::to_string),
                flood().iter().filter(|&&b| b == b'\n').count(),
            );
        }
    }
    drop(sink);
    gw.stop().await;
}
