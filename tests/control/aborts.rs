//! ABOR during a running RETR: the client gets the server's replies in order, its data
//! connection ends, and the session stays usable (the gateway's own NOOP re-pairs replies with
//! commands).

use crate::harness::{connect_data, gateway, Client, FakeServer, Sink};

/// Far more than every socket buffer between the server and the client can hold, so the
/// transfer is still running when ABOR arrives.
const BIG: u64 = 64 << 20;

async fn abort_during_retr(abor: &[u8], lone_226: bool) {
    let mut builder = FakeServer::builder();
    if lone_226 {
        builder = builder.lone_226_on_abort();
    }
    let server = builder.start().await;
    let gw = gateway::start(server.addr, "");
    let mut c = Client::greeted(gw.addr).await;
    let at = c.pasv().await;
    let mut sink = Sink::new(connect_data(at).await);
    c.send(format!("RETR {BIG}\r\n")).await;
    c.expect(150).await;
    assert!(sink.until(256 * 1024).await >= 256 * 1024, "the transfer never got going");

    c.send(abor).await;
    if !lone_226 {
        let r = c.expect(426).await;
        assert!(r.text().contains("abort"), "{r}");
    }
    let r = c.expect(226).await;
    assert_eq!(r.text(), "Abort successful");
    let got = sink.read_to_end().await;
    assert!(got < BIG, "the data connection went on after ABOR ({got} bytes)");

    // Usable afterwards, and the next reply is the next command's.
    assert_eq!(c.expect_cmd("NOOP", 200).await, "NOOP ok");
    assert_eq!(c.expect_cmd("SYST", 200).await, "SYST ok");
    let log = server.wait_until("SYST", |l| l.count("SYST") == 1).await;
    let lines = log.texts(0);
    let from = lines.iter().position(|l| *l == "ABOR").expect("the server saw ABOR");
    // The gateway's own NOOP after ABOR, then the client's.
    assert_eq!(lines[from - 1..], [format!("RETR {BIG}").as_str(), "ABOR", "NOOP", "NOOP", "SYST"]);
    if abor.starts_with(b"\xff") {
        assert!(log.interrupts >= 1, "the Telnet interrupt did not reach the server");
    }
    drop(c);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_abor_during_retr_426_then_226() {
    abort_during_retr(b"ABOR\r\n", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_with_telnet_ip_and_synch_during_retr() {
    abort_during_retr(b"\xff\xf4\xff\xf2ABOR\r\n", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_answered_with_a_lone_226() {
    abort_during_retr(b"ABOR\r\n", true).await;
}

/// Commands pipelined right behind ABOR wait for the abort to be answered, then get their own
/// replies in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelined_behind_abor_get_their_own_replies() {
    let server = FakeServer::start().await;
    let gw = gateway::start(server.addr, "");
    let mut c = Client::greeted(gw.addr).await;
    let at = c.pasv().await;
    let mut sink = Sink::new(connect_data(at).await);
    c.send(format!("RETR {BIG}\r\n")).await;
    c.expect(150).await;
    sink.until(64 * 1024).await;
    c.send("ABOR\r\nTYPE I\r\nNOOP\r\n").await;
    c.expect(426).await;
    c.expect(226).await;
    assert_eq!(c.expect(200).await.text(), "TYPE ok");
    assert_eq!(c.expect(200).await.text(), "NOOP ok");
    sink.read_to_end().await;
    drop(c);
    gw.stop().await;
}
