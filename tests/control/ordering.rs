//! Replies go back in command order under pipelining: the gateway's own answers wait behind
//! the replies the server still owes for earlier commands.

use crate::harness::{gateway, Answer, Client, FakeServer, Latch};

/// The client writes `NOOP`, `middle`, `NOOP` in one write; the server's answer to the first
/// NOOP is held until the second NOOP has reached the server, so the gateway has dealt with
/// `middle` (answered by the gateway itself) while a reply was still owed. The client must get
/// `200`, the gateway's answer to `middle`, `200`, in that order.
async fn pipelined(yaml: &str, middle: &str, want: u16, want_text: &str) {
    let release = Latch::new();
    let hold = release.clone();
    let mut first = true;
    let server = FakeServer::builder()
        .script(move |l| {
            if l.verb == "NOOP" && std::mem::take(&mut first) {
                Answer::after(&hold, Answer::Default)
            } else {
                Answer::Default
            }
        })
        .start()
        .await;
    let gw = gateway::start(server.addr, yaml);
    let mut c = Client::greeted(gw.addr).await;
    c.send(format!("NOOP\r\n{middle}\r\nNOOP\r\n")).await;
    server.wait_until("both NOOPs", |l| l.count("NOOP") == 2).await;
    release.release();
    let got = [c.reply().await, c.reply().await, c.reply().await];
    let seen: Vec<String> = got.iter().map(ToString::to_string).collect();
    let right = got[0].code == 200
        && got[0].text() == "NOOP ok"
        && got[1].code == want
        && got[1].text().contains(want_text)
        && got[2].code == 200
        && got[2].text() == "NOOP ok";
    assert!(right, "replies out of command order for NOOP, {middle}, NOOP: {seen:?}");
    let verb = middle.split(' ').next().unwrap_or_default();
    let log = server.log();
    assert_eq!(log.texts(0), ["NOOP", "NOOP"], "the server saw {middle}");
    assert_eq!(log.count(verb), 0);
    drop(c);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refusal_waits_behind_an_owed_reply() {
    pipelined("", "AUTH TLS", 534, "refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusal_waits_behind_an_owed_reply() {
    pipelined("policy: {commands: {deny: [DELE]}}", "DELE secret.txt", 502, "not allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epsv_all_answer_waits_behind_an_owed_reply() {
    pipelined("", "EPSV ALL", 200, "EPSV ALL").await;
}

/// A multi-line reply is relayed whole and in its place among pipelined replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_replies_are_relayed_whole_and_in_order() {
    let server = FakeServer::builder()
        .script(|l| match l.verb.as_str() {
            "FEAT" => Answer::reply("211-Features:\n EPSV\n MDTM\n211 End"),
            "HELP" => Answer::reply("214-The following commands are recognized.\n214-Not the end\n214 Help OK."),
            _ => Answer::Default,
        })
        .start()
        .await;
    let gw = gateway::start(server.addr, "");
    let mut c = Client::greeted(gw.addr).await;
    c.send("FEAT\r\nHELP\r\nNOOP\r\n").await;
    let feat = c.expect(211).await;
    assert_eq!(feat.lines, ["211-Features:", " EPSV", " MDTM", "211 End"]);
    let help = c.expect(214).await;
    assert_eq!(help.lines.len(), 3, "{help}");
    assert_eq!(c.expect(200).await.text(), "NOOP ok");
    drop(c);
    gw.stop().await;
}
