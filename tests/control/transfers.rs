//! Data transfers through the gateway in passive mode, and the final reply of a transfer held
//! until its data has drained.

use crate::harness::{connect_data, gateway, read_data, write_data, Answer, Client, FakeServer, Sink};
use std::net::SocketAddr;

/// The server sends 226 right after the first 64 KiB while it is still writing the rest. The
/// gateway must hold that 226 until the data connection has delivered everything.
///
/// The client reads control and data together. What it checks when the 226 arrives is that the
/// server had already written every byte (the server records that before closing the data
/// connection, and the gateway can only see the end of the data after that close): a gateway
/// that passes the 226 through early lets it arrive while the server is still blocked on tens
/// of MiB that no socket buffer can hold. (That the client's own data connection is at EOF by
/// then cannot be required: a correct gateway's last bytes may still sit in its socket send
/// buffer when it sends the 226.) Then the client must read all the bytes, content-checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_complete_is_held_until_the_data_has_drained() {
    const SIZE: u64 = 32 << 20;
    let server = FakeServer::builder()
        .script(|l| match l.verb.as_str() {
            "RETR" => Answer::Retr { size: SIZE, early_226: true },
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
    let r = c.reply_while_reading(&mut sink).await;
    let written = server.log().retr_written;
    let (read, eof) = (sink.got, sink.eof);
    assert_eq!(r.code, 226, "{r}");
    assert_eq!(
        written,
        [SIZE],
        "226 reached the client before the server had written all data (client had read {read} bytes, at EOF: {eof})"
    );
    assert_eq!(sink.read_to_end().await, SIZE, "the client got a short file");
    assert_eq!(c.expect_cmd("NOOP", 200).await, "NOOP ok");
    drop(c);
    gw.stop().await;
}

/// Which passive command the client uses.
#[derive(Clone, Copy)]
enum Passive {
    Pasv,
    Epsv,
}

async fn open(c: &mut Client, how: Passive, range: (u16, u16)) -> SocketAddr {
    let at = match how {
        Passive::Pasv => c.pasv().await,
        Passive::Epsv => c.epsv().await,
    };
    assert!(at.ip().is_loopback(), "the gateway advertised {at}");
    assert!((range.0..=range.1).contains(&at.port()), "advertised port {} is outside passive.ports", at.port());
    at
}

/// RETR then STOR through the gateway, byte counts and content checked on both ends.
async fn round_trip(how: Passive, range: (u16, u16)) {
    const DOWN: u64 = (3 << 20) + 7;
    const UP: u64 = (5 << 20) + 13;
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, &format!("passive: {{ports: {}-{}}}", range.0, range.1));
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("TYPE I", 200).await;

    let at = open(&mut c, how, range).await;
    let data = connect_data(at).await;
    c.send(format!("RETR {DOWN}\r\n")).await;
    c.expect(150).await;
    assert_eq!(read_data(data).await, DOWN);
    assert_eq!(c.expect(226).await.text(), format!("Transfer complete ({DOWN} bytes)"));

    let at = open(&mut c, how, range).await;
    let data = connect_data(at).await;
    c.send("STOR up.bin\r\n").await;
    c.expect(150).await;
    write_data(data, UP).await;
    // The server answers only once it has read the upload to its end.
    let r = c.expect(226).await;
    assert_eq!(r.text(), format!("Transfer complete ({UP} bytes)"));
    assert_eq!(server.log().stored, [UP]);
    assert_eq!(server.log().retr_written, [DOWN]);
    let verbs: Vec<String> = server.log().lines.iter().map(|l| l.verb.clone()).collect();
    let pasv = match how {
        Passive::Pasv => "PASV",
        Passive::Epsv => "EPSV",
    };
    assert_eq!(verbs, ["TYPE", pasv, "RETR", pasv, "STOR"]);
    drop(c);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasv_retr_and_stor() {
    round_trip(Passive::Pasv, (23000, 23019)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epsv_retr_and_stor() {
    round_trip(Passive::Epsv, (23020, 23039)).await;
}
