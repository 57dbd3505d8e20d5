//! The login phase before a server exists: routing by user name (reverse mode) and the
//! explicit forward proxy's refusals (its successes need non-loopback servers: the lab's).

use crate::harness::{gateway, Answer, Client, FakeServer};
use std::net::SocketAddr;

fn routes_yaml(b: SocketAddr) -> String {
    format!("routes: [{{suffix: '@site-b', upstream: '{b}'}}]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_user_and_pass_reach_the_routed_server_under_the_stripped_name() {
    let (a, b) = (FakeServer::start().await, FakeServer::start().await);
    let gw = gateway::start(a.addr, &routes_yaml(b.addr));
    let mut c = Client::connect(gw.addr).await;
    let hello = c.expect(220).await;
    assert!(hello.text().contains("ftpgate"), "the gateway greets, not a server: {hello}");
    c.send("USER alice@site-b\r\nPASS pw\r\nSYST\r\n").await;
    assert_eq!(c.expect(331).await.text(), "Password required for alice");
    assert_eq!(c.expect(230).await.text(), "Logged in");
    c.expect(200).await;
    let log = b.wait_until("the replayed login", |l| l.count("SYST") == 1).await;
    assert_eq!(log.texts(0), ["USER alice", "PASS pw", "SYST"]);
    assert_eq!(a.log().connections, 0, "the default server was not to be asked");
    // A user no rule names goes to the default server, name unchanged.
    let mut c2 = Client::greeted(gw.addr).await;
    c2.expect_cmd("USER bob", 331).await;
    c2.expect_cmd("PASS pw", 230).await;
    let log = a.wait_until("bob's login", |l| l.count("PASS") == 1).await;
    assert_eq!(log.texts(0), ["USER bob", "PASS pw"]);
    drop((c, c2));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_gets_the_server_s_own_530() {
    let server = FakeServer::builder()
        .script(|l| match l.verb.as_str() {
            "PASS" => Answer::reply("530 Login incorrect."),
            _ => Answer::Default,
        })
        .start()
        .await;
    let b = FakeServer::start().await;
    let gw = gateway::start(server.addr, &routes_yaml(b.addr));
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("USER carol", 331).await;
    assert_eq!(c.expect_cmd("PASS wrong", 530).await, "Login incorrect.");
    drop(c);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_login_quit_ends_at_once_and_other_commands_are_refused() {
    let (a, b) = (FakeServer::start().await, FakeServer::start().await);
    let gw = gateway::start(a.addr, &format!("{}limits: {{max_malformed: 2}}\n", routes_yaml(b.addr)));
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("LIST", 530).await;
    c.expect_cmd("PASS early", 503).await;
    c.expect_cmd("NOOP", 200).await;
    c.expect_cmd("QUIT", 221).await;
    c.expect_closed().await;

    let mut c = Client::greeted(gw.addr).await;
    c.send("\x01\r\n\x02\r\n\x03\r\n").await;
    for _ in 0..3 {
        c.expect(500).await;
    }
    c.expect(421).await;
    c.expect_closed().await;
    assert_eq!(a.log().connections + b.log().connections, 0, "no server for a client that never logged in");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_never_comes_is_timed_out() {
    let (a, b) = (FakeServer::start().await, FakeServer::start().await);
    let gw = gateway::start(a.addr, &format!("{}timeouts: {{login: 1s}}\n", routes_yaml(b.addr)));
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("USER slow", 331).await;
    let r = c.expect(421).await;
    assert!(r.text().contains("Login timed out"), "{r}");
    c.expect_closed().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_server_that_refuses_the_connection_ends_the_session_with_421() {
    let a = FakeServer::start().await;
    // A port nobody listens on any more.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let gw = gateway::start(a.addr, &routes_yaml(gone));
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("USER dave@site-b", 331).await;
    let r = c.cmd("PASS pw").await;
    assert_eq!(r.code, 421, "{r}");
    assert!(r.text().contains("Cannot connect"), "{r}");
    c.expect_closed().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_at_its_greeting_is_heard() {
    let a = FakeServer::builder().silent().start().await;
    let b = FakeServer::start().await;
    let gw = gateway::start(a.addr, &format!("{}timeouts: {{banner: 1s}}\n", routes_yaml(b.addr)));
    let mut c = Client::greeted(gw.addr).await;
    c.expect_cmd("USER erin", 331).await;
    let r = c.cmd("PASS pw").await;
    assert_eq!(r.code, 421, "{r}");
    assert!(r.text().contains("did not greet"), "{r}");
    c.expect_closed().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_routes_apply_to_new_sessions_and_running_ones_keep_theirs() {
    let (a, b) = (FakeServer::start().await, FakeServer::start().await);
    let gw = gateway::start(a.addr, &routes_yaml(b.addr));
    let mut before = Client::greeted(gw.addr).await;
    gw.reload(&format!("routes: [{{suffix: '@site-b', upstream: '{}'}}]\n", a.addr)).await;
    let mut after = Client::greeted(gw.addr).await;
    for c in [&mut before, &mut after] {
        c.expect_cmd("USER frank@site-b", 331).await;
        c.expect_cmd("PASS pw", 230).await;
    }
    let on_b = b.wait_until("the earlier session's login", |l| l.count("PASS") == 1).await;
    let on_a = a.wait_until("the later session's login", |l| l.count("PASS") == 1).await;
    assert_eq!((on_b.connections, on_a.connections), (1, 1));
    drop((before, after));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forward_proxy_refuses_malformed_unresolvable_and_forbidden_servers() {
    let a = FakeServer::start().await;
    let gw = gateway::start(a.addr, "forward: {listen: ['127.0.0.1:0']}\n");
    let forward = gw.listening[1];
    let mut c = Client::connect(forward).await;
    assert!(c.expect(220).await.text().contains("name@host"));
    c.expect_cmd("FEAT", 530).await;
    assert!(c.expect_cmd("USER alice", 530).await.contains("name@host"));
    assert!(c.expect_cmd("USER alice@[2001:db8::2", 530).await.contains("]"));
    assert!(c.expect_cmd("USER alice@nowhere.invalid", 530).await.contains("Cannot resolve"));
    let refused = c.expect_cmd(&format!("USER alice@{}", a.addr), 530).await;
    assert!(refused.contains("refused by gateway policy (loopback)"), "{refused}");
    c.expect_cmd("QUIT", 221).await;
    c.expect_closed().await;
    assert_eq!(a.log().connections, 0, "the forward proxy connected somewhere it refused");
    gw.stop().await;
}
