//! FEAT through the gateway: with `tls: refuse` (the default) the client is not told of
//! AUTH, PBSZ or PROT, so it does not try TLS only to fall back to clear text.

use crate::harness::{gateway, Answer, Client, FakeServer};

const FEAT: &str = "211-Features:\n AUTH TLS\n AUTH SSL\n PBSZ\n PROT\n EPSV\n MDTM\n211 End";

async fn server() -> FakeServer {
    FakeServer::builder().script(|l| if l.verb == "FEAT" { Answer::reply(FEAT) } else { Answer::Default }).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feat_does_not_advertise_tls_the_gateway_refuses() {
    let server = server().await;
    let gw = gateway::start(server.addr, "");
    let mut c = Client::greeted(gw.addr).await;
    let r = c.cmd("FEAT").await;
    assert_eq!(r.code, 211, "{r}");
    assert_eq!(r.lines, ["211-Features:", " EPSV", " MDTM", "211 End"], "FEAT as the client saw it");
    // What it no longer advertises is refused, and the session goes on.
    assert_eq!(c.cmd("AUTH TLS").await.code, 534);
    assert_eq!(c.expect_cmd("NOOP", 200).await, "NOOP ok");
    assert_eq!(server.log().texts(0), ["FEAT", "NOOP"]);
    drop(c);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feat_does_not_advertise_denied_commands() {
    let server = server().await;
    let gw = gateway::start(server.addr, "policy: {commands: {deny: [MDTM]}}");
    let mut c = Client::greeted(gw.addr).await;
    let r = c.cmd("FEAT").await;
    assert_eq!(r.lines, ["211-Features:", " EPSV", "211 End"], "FEAT as the client saw it");
    drop(c);
    gw.stop().await;
}
