//! Attacks from either side, performed through the lab, each asserting the reply (or the clean
//! close), the log line with its reason, and that the session or the gateway goes on.

mod lab;

use lab::servers::ServerKind;
use lab::{gate, Lab, LabPath, CLIENT4_ALT, SERVER4};

fn redirect_lab(server: Option<ServerKind>, extra: &[&str], config: Option<&str>) -> Option<(Lab, Option<lab::Tree>)> {
    if !gate("security", Some(server.unwrap_or(ServerKind::Vsftpd))) {
        return None;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    let tree = server.map(|s| lab.start_server(s));
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["--metrics-listen".to_owned(), METRICS.to_owned()]);
    if let Some(yaml) = config {
        let f = lab.write("ftpgate.yaml", yaml);
        args.extend(["--config".to_owned(), f.to_str().unwrap().to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_ftpgate(&args);
    Some((lab, tree))
}

const METRICS: &str = "127.0.0.1:9121";

fn rejections(lab: &Lab, reason: &str) -> u64 {
    lab.rejections(METRICS, reason)
}

/// Starts ftpgate (with its metrics endpoint) in front of the hostile server.
fn start_gateway(lab: &mut Lab, extra: &[&str]) {
    let mut args = vec!["--metrics-listen", METRICS];
    args.extend_from_slice(extra);
    lab.start_ftpgate(&args);
}

/// Runs the steps against the server through ftpgate; asserts they held, that ftpgate logged
/// each `reasons` entry and counted it in its rejection metric.
fn attack(lab: &Lab, steps: &[&str], reasons: &[&str]) {
    let (ok, out) = lab.attack(SERVER4, 21, steps);
    assert!(ok, "attack steps failed:\n{out}\n{}", lab.logs());
    let log = lab.log_of("ftpgate");
    for r in reasons {
        assert!(log.contains(&format!("reason=\"{r}\"")), "no log line with reason={r}:\n{log}");
        assert!(rejections(lab, r) > 0, "ftpgate_rejections_total{{reason={r}}} did not count it");
    }
}

const TIMEOUTS: &str = "timeouts: {connect: 2s, banner: 2s, reply: 2s, idle: 2s, data_accept: 2s}\n";

fn hostile_payload_sha() -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(b"hostile-server-data\n".repeat(5000)))
}

#[test]
fn bounce_and_privileged_ports_are_refused_and_the_session_goes_on() {
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], None) else { return };
    attack(
        &lab,
        &[
            "expect:220",
            "login",
            "send:PORT 198,51,100,9,195,80\r\n",
            "expect:501",
            "send:EPRT |1|198.51.100.9|50000|\r\n",
            "expect:501",
            "send:EPRT |2|2001:db8:2::9|50000|\r\n",
            "expect:522",
            "send:PORT 203,0,113,2,0,25\r\n",
            "expect:501",
            "send:LPRT 4,4,203,0,113,2,2,195,80\r\n",
            "expect:502",
            "send:LPSV\r\n",
            "expect:502",
            "send:NOOP\r\n",
            "expect:200",
        ],
        &["bounce", "policy", "malformed"],
    );
    lab.finish();
}

#[test]
fn fxp_is_honoured_only_for_allowlisted_networks() {
    let yaml = "policy:\n  fxp:\n    - {client: 203.0.113.0/24, data: 198.51.100.0/24}\n";
    let Some((mut lab, tree)) = redirect_lab(Some(ServerKind::Vsftpd), &[], Some(yaml)) else { return };
    let tree = tree.unwrap();
    // A data sink on the server side stands for the second server of a site-to-site transfer.
    let sink_out = lab.dir.path().join("sink.sha");
    let sink = format!(
        "import socket,hashlib\ns=socket.create_server(('{SERVER4}',45000))\nc,_=s.accept()\nh=hashlib.sha256()\n\
         while True:\n  b=c.recv(65536)\n  if not b: break\n  h.update(b)\nopen('{}','w').write(h.hexdigest())\n",
        sink_out.display()
    );
    let script = lab.write("sink.py", &sink);
    let ns = lab.server_ns.clone();
    lab.spawn("sink", &ns, &["python3".into(), script.to_str().unwrap().into()]);
    lab.wait_listening(&ns, SERVER4, 45000);
    attack(
        &lab,
        &[
            "expect:220",
            "login",
            "send:TYPE I\r\n",
            "expect:200",
            "send:PORT 198,51,100,2,175,200\r\n",
            "expect:200",
            "send:RETR small.bin\r\n",
            "expect:150",
            "expect:226",
            // Outside the allowlisted data network: refused as a bounce.
            "send:PORT 203,0,113,77,175,200\r\n",
            "expect:501",
        ],
        &["bounce"],
    );
    assert!(lab.reap("sink"), "the data sink did not finish");
    let got = std::fs::read_to_string(&sink_out).unwrap_or_default();
    assert_eq!(got, tree.small_sha, "the third host did not receive the file intact");
    lab.finish();
}

#[test]
fn passive_port_stealing_is_refused_and_the_client_still_gets_its_data() {
    let Some((lab, tree)) = redirect_lab(Some(ServerKind::Vsftpd), &[], None) else { return };
    let tree = tree.unwrap();
    if lab.data_path == lab::DataPath::Kernel {
        // The kernel drops the stranger (and a second connection) before ftpgate could see it:
        // the pinhole's rules count them instead of ftpgate's metrics.
        let once = format!("once:{CLIENT4_ALT}:small.bin:{}", tree.small_sha);
        attack(&lab, &["expect:220", "login", "send:TYPE I\r\n", "expect:200", &once], &[]);
        let refused = lab.counter(&lab.fw_ns, "ftpgate_kernel_path", "refused");
        assert!(refused >= 2, "the pinhole rules must drop the stranger and the second connection");
        return lab.finish();
    }
    let steal = format!("steal:{CLIENT4_ALT}:small.bin:{}", tree.small_sha);
    attack(&lab, &["expect:220", "login", "send:TYPE I\r\n", "expect:200", &steal], &["port_stealing"]);
    assert_eq!(lab.passive_listeners(), 0, "the data listener must close after its one connection");
    lab.finish();
}

#[test]
fn many_pasv_in_a_row_keep_one_listener_and_the_global_cap_holds() {
    let mut steps = vec!["expect:220", "login"];
    for _ in 0..50 {
        steps.extend(["send:PASV\r\n", "expect:227"]);
    }
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], Some("limits: {max_data_channels: 1}\n")) else {
        return;
    };
    // The second session cannot get a data channel while the first holds the only one.
    steps.extend(["newconn", "expect:220", "login", "send:PASV\r\n", "expect:425"]);
    let (ok, out) = lab.attack(SERVER4, 21, &steps);
    assert!(ok, "{out}\n{}", lab.logs());
    lab.finish();
}

#[test]
fn data_listener_closes_after_the_accept_timeout() {
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], Some(TIMEOUTS)) else { return };
    // Nobody connects to the data port: the listener goes after data_accept (2 s); the idle
    // session is then closed after idle (2 s) with 421.
    let (ok, out) = lab.attack(SERVER4, 21, &["expect:220", "login", "send:PASV\r\n", "expect:227", "expectclose:421"]);
    assert!(ok, "{out}\n{}", lab.logs());
    assert_eq!(lab.passive_listeners(), 0);
    let log = lab.log_of("ftpgate");
    assert!(log.contains("reason=\"accept_timeout\"") && log.contains("reason=\"timeout\""), "{}", lab.logs());
    assert!(rejections(&lab, "timeout") >= 2, "data accept and idle timeouts must both count");
    lab.finish();
}

#[test]
fn hostile_server_passive_replies_are_never_followed_blindly() {
    if !gate("hostile server", None) {
        return;
    }
    let sha = hostile_payload_sha();
    // 227 naming another host: ftpgate connects to the server's own address instead.
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_hostile("pasv-elsewhere");
    start_gateway(&mut lab, &[]);
    attack(&lab, &["expect:220", "login", &format!("retr:pasv:x:{sha}")], &["server_data_address"]);
    lab.finish();
    // ... or refuses, when configured so.
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_hostile("pasv-elsewhere");
    let f = lab.write("refuse.yaml", "server_data_address: refuse\n");
    start_gateway(&mut lab, &["--config", f.to_str().unwrap()]);
    attack(
        &lab,
        &["expect:220", "login", "send:PASV\r\n", "expect:425", "send:NOOP\r\n", "expect:200"],
        &["server_data_address"],
    );
    lab.finish();
    // A server that refuses EPSV is asked PASV; the client still gets its 229 and its data.
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_hostile("no-epsv");
    start_gateway(&mut lab, &[]);
    attack(&lab, &["expect:220", "login", &format!("retr:epsv:x:{sha}")], &[]);
    assert!(lab.log_of("ftpgate").contains("server refused EPSV, retrying with PASV"), "{}", lab.logs());
    lab.finish();
    // A privileged data port is refused.
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_hostile("pasv-privileged");
    start_gateway(&mut lab, &[]);
    attack(&lab, &["expect:220", "login", "send:PASV\r\n", "expect:425"], &["server_data_address"]);
    lab.finish();
    // A 227 nobody asked for opens nothing.
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_hostile("unsolicited-227");
    start_gateway(&mut lab, &[]);
    attack(&lab, &["expect:220", "login", "send:NOOP\r\n", "expect:227"], &[]);
    assert_eq!(lab.passive_listeners(), 0, "an unsolicited 227 must not open a data path");
    lab.finish();
}

#[test]
fn hostile_server_replies_are_cut_off() {
    if !gate("hostile server", None) {
        return;
    }
    for (behaviour, steps, reason) in [
        ("endless", vec!["expect:220", "login", "send:HELP\r\n", "expectclose:421"], "timeout"),
        ("no-eol", vec!["expect:220", "login", "send:NOOP\r\n", "expectclose:421"], "malformed"),
        ("mismatch", vec!["expect:220", "login", "send:NOOP\r\n", "expectclose:421"], "timeout"),
        ("no-greeting", vec!["expectclose:421"], "timeout"),
    ] {
        let mut lab = Lab::new(LabPath::Redirect);
        lab.start_hostile(behaviour);
        let f = lab.write("t.yaml", TIMEOUTS);
        start_gateway(&mut lab, &["--config", f.to_str().unwrap()]);
        let (ok, out) = lab.attack(SERVER4, 21, &steps);
        assert!(ok, "{behaviour}: {out}\n{}", lab.logs());
        if !reason.is_empty() {
            assert!(lab.log_of("ftpgate").contains(&format!("reason=\"{reason}\"")), "{behaviour}: {}", lab.logs());
            assert!(rejections(&lab, reason) > 0, "{behaviour}: not counted under {reason}");
        }
        lab.finish();
    }
}

#[test]
fn control_channel_input_is_bounded_and_strict() {
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], None) else { return };
    let long = format!("send:RETR {}\r\n", "A".repeat(700));
    attack(
        &lab,
        &[
            "expect:220",
            "login",
            &long,
            "expect:500",
            "send:NOOP\r\n",
            "expect:200",
            "send:RETR a\\x00b\r\n",
            "expect:500",
            "send:RETR a\rPORT 198,51,100,9,0,21\r\n",
            "expect:500",
            // Telnet: option negotiation refused, IP and DM (urgent) before ABOR relayed.
            "send:\\xff\\xfb\\x01NOOP\r\n",
            "expectraw:\\xff\\xfe\\x01",
            "expect:200",
            "send:\\xff\\xf4\\xff",
            "sendurgent:\\xf2",
            "send:ABOR\r\n",
            "expect:2",
            "send:NOOP\r\n",
            "expect:200",
        ],
        &["malformed"],
    );
    // A flood of malformed lines closes the session.
    let mut steps = vec!["expect:220", "login"];
    steps.extend(std::iter::repeat_n("send:\\x00\r\n", 9));
    steps.push("expectclose:421");
    let (ok, out) = lab.attack(SERVER4, 21, &steps);
    assert!(ok, "{out}");
    lab.finish();
}

#[test]
fn user_command_and_tls_policy() {
    let yaml = "policy:\n  anonymous_only: true\n  commands: {deny: [SITE, DELE]}\n";
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], Some(yaml)) else { return };
    attack(
        &lab,
        &[
            "expect:220",
            "send:AUTH TLS\r\n",
            "expect:534",
            "send:USER ftpgatelab\r\n",
            "expect:530",
            "login",
            "send:SITE CHMOD 777 x\r\n",
            "expect:502",
            "send:dele x\r\n",
            "expect:502",
            "send:NOOP\r\n",
            "expect:200",
        ],
        &["policy"],
    );
    lab.finish();
    let yaml = "policy:\n  users: {allow: [anonymous, ftpgatelab], deny: [ftpgatelab]}\n";
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], Some(yaml)) else { return };
    attack(
        &lab,
        &["expect:220", "send:USER bob\r\n", "expect:530", "send:USER ftpgatelab\r\n", "expect:530", "login"],
        &["policy"],
    );
    lab.finish();
}

#[test]
fn session_limits_global_and_per_client() {
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], Some("limits: {max_sessions_per_client: 1}\n"))
    else {
        return;
    };
    let other = format!("newconn:{CLIENT4_ALT}");
    attack(&lab, &["expect:220", "newconn", "expectclose:421", &other, "expect:220"], &["limit"]);
    lab.finish();
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], Some("limits: {max_sessions: 2}\n")) else {
        return;
    };
    attack(&lab, &["expect:220", "newconn", "expect:220", "newconn", "expectclose:421"], &["limit"]);
    lab.finish();
}

#[test]
fn connect_and_idle_timeouts() {
    let Some((lab, _)) = redirect_lab(Some(ServerKind::Vsftpd), &[], Some(TIMEOUTS)) else { return };
    attack(&lab, &["expect:220", "login", "expectclose:421"], &["timeout"]);
    // Nobody answers at 198.51.100.99: the upstream connect fails within its timeout.
    let (ok, out) = lab.attack("198.51.100.99", 21, &["expectclose:421"]);
    assert!(ok, "{out}");
    assert!(lab.log_of("ftpgate").contains("reason=\"upstream_connect\""));
    assert!(rejections(&lab, "upstream_connect") > 0);
    lab.finish();
}

#[test]
fn after_dropping_privileges_transfers_work_and_only_net_admin_is_held() {
    if !gate("privilege drop", Some(ServerKind::Vsftpd)) {
        return;
    }
    for path in [LabPath::Tproxy, LabPath::Redirect] {
        let mut lab = Lab::new(path);
        let tree = lab.start_server(ServerKind::Vsftpd);
        let jail = lab.dir.path().join("jail");
        std::fs::create_dir_all(&jail).unwrap();
        let pids = lab.start_ftpgate(&["--user", "nobody", "--group", "nogroup", "--chroot", jail.to_str().unwrap()]);
        // The listener is bound before the drop: wait for the drop itself.
        lab::eventually(std::time::Duration::from_secs(10), "the privilege drop", || {
            lab.log_of("ftpgate").contains("privileges dropped")
        });
        let root = std::fs::read_link(format!("/proc/{}/root", pids[0])).unwrap();
        assert_eq!(root, jail.canonicalize().unwrap(), "ftpgate must run chrooted");
        let status = std::fs::read_to_string(format!("/proc/{}/status", pids[0])).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        };
        let nobody = lab::sh(&["id", "-u", "nobody"]).unwrap().trim().to_owned();
        assert!(field("Uid:").unwrap().split(' ').all(|u| u == nobody), "{status}");
        // CAP_NET_ADMIN is bit 12: kept for TPROXY's transparent data sockets and for the kernel
        // data path's netlink requests, nothing else.
        let net_admin = path == LabPath::Tproxy || lab.data_path == lab::DataPath::Kernel;
        let want = if net_admin { "0000000000001000" } else { "0000000000000000" };
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            assert_eq!(field(set).as_deref(), Some(want), "{set} in {} mode:\n{status}", path.name());
        }
        for set in ["CapInh:", "CapAmb:"] {
            assert_eq!(field(set).as_deref(), Some("0000000000000000"), "{set}");
        }
        for (mode, family) in [
            (lab::clients::Mode::Pasv, lab::Family::V4),
            (lab::clients::Mode::Eprt, lab::Family::V4),
            (lab::clients::Mode::Epsv, lab::Family::V6),
        ] {
            for op in [lab::clients::Op::RetrLarge, lab::clients::Op::Stor] {
                let case = lab::clients::Case { client: lab::clients::Client::Curl, mode, family, op };
                lab::clients::run_case(&lab, &tree, &case, 0)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{}", case.label(), lab.logs()));
            }
        }
        assert!(lab.log_of("ftpgate").contains("privileges dropped"));
        lab.finish();
    }
}

/// The gateway reads every command inside TLS too: the attacks above, inside a TLS session it
/// terminates, get the same refusals; clear text appended to AUTH TLS (CVE-2011-0411) is
/// discarded, never run as a command of the TLS session; data channels in TLS keep their guard
/// against port stealing.
#[test]
fn attacks_inside_tls_sessions_are_refused_as_in_clear_text() {
    if !gate("security in TLS", Some(ServerKind::Vsftpd)) {
        return;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    // TLS data channels are relayed: ftpgate refuses `tls: terminate` on the kernel data path.
    lab.data_path = lab::DataPath::Relay;
    let tree = lab.start_server(ServerKind::Vsftpd);
    let pki = lab::pki::Pki::new(lab.dir.path());
    // A transparent gateway in front of servers the admin owns holds their certificate.
    let yaml =
        format!("tls: terminate\nftps: {{certificate: {}, key: {}}}\n", pki.server.0.display(), pki.server.1.display());
    let cfg = lab.write("ftpgate.yaml", &yaml);
    lab.start_ftpgate(&["--metrics-listen", METRICS, "--config", cfg.to_str().unwrap()]);
    let ca = format!("starttls:{}:USER injected\\r\\n", pki.ca.display());
    let steal = format!("steal:{CLIENT4_ALT}:small.bin:{}", tree.small_sha);
    let retr = format!("retr:epsv:large.bin:{}", tree.large_sha);
    attack(
        &lab,
        &[
            "expect:220",
            &ca,
            "login",
            "protp",
            "send:PORT 198,51,100,9,195,80\r\n",
            "expect:501",
            "send:EPRT |1|198.51.100.9|50000|\r\n",
            "expect:501",
            "send:LPRT 4,4,203,0,113,2,2,195,80\r\n",
            "expect:502",
            "send:CCC\r\n",
            "expect:502",
            "send:TYPE I\r\n",
            "expect:200",
            &steal,
            &retr,
            "send:NOOP\r\n",
            "expect:200",
        ],
        &["bounce", "policy", "injection", "port_stealing"],
    );
    lab.finish();
}
