//! Where a diverted client may go: never the firewall itself (its own addresses on either side,
//! loopback or its own addresses reached through a NAT64 prefix, its link-local addresses), and
//! only where `servers.allow` / `servers.deny` let it. Each refusal is a 421 naming the
//! destination and why, a log line with reason="destination" and its category, and a count in
//! ftpgate_rejections_total{reason="destination"}; a service on the firewall never hears of it.

mod lab;

use lab::servers::ServerKind;
use lab::{gate, Lab, LabPath, FW_C4, FW_C6, FW_S4, SERVER4, SERVER6};
use std::time::Duration;

const METRICS: &str = "127.0.0.1:9121";
/// A network-specific NAT64 prefix inside the documentation range.
const NAT64_PREFIX: &str = "2001:db8:64::/96";

/// A REDIRECT lab with vsftpd and ftpgate started on `yaml`; returns the ftpgate PID too.
fn redirect_lab(test: &str, yaml: &str) -> Option<(Lab, u32)> {
    if !gate(test, Some(ServerKind::Vsftpd)) {
        return None;
    }
    let mut lab = Lab::new(LabPath::Redirect);
    lab.start_server(ServerKind::Vsftpd);
    let config = lab.write("ftpgate.yaml", yaml);
    let pid = lab.start_ftpgate(&["--metrics-listen", METRICS, "--config", config.to_str().unwrap()])[0];
    Some((lab, pid))
}

/// A service of the firewall's own on port 21 of every local address (IPv4 and IPv6,
/// loopback included), the kind of thing a client must never reach through the gateway. It
/// prints one line per connection it accepts.
fn start_firewall_service(lab: &mut Lab) {
    let script = lab.write(
        "fw_service.py",
        "import socket\n\
         s = socket.create_server(('::', 21), family=socket.AF_INET6, dualstack_ipv6=True)\n\
         s.settimeout(300)\n\
         for _ in range(100):\n\
         \x20   c, a = s.accept()\n\
         \x20   print('accepted', a[0], flush=True)\n\
         \x20   c.sendall(b'220 firewall-internal service\\r\\n')\n\
         \x20   c.close()\n",
    );
    let fw = lab.fw_ns.clone();
    lab.spawn("fw-service", &fw, &["python3".into(), script.to_str().unwrap().into()]);
    lab.wait_listening(&fw, "*", 21);
}

/// The client dials `host:21` and must be closed with exactly `reply` (a prefix of the line).
fn refused(lab: &Lab, host: &str, reply: &str) {
    let step = format!("expectclose:{reply}");
    let (ok, out) = lab.attack(host, 21, &[&step]);
    assert!(ok, "dialling {host}:21: {out}\n{}", lab.logs());
}

/// A whole session to `host` through the gateway still works.
fn served(lab: &Lab, host: &str) {
    let (ok, out) = lab.attack(host, 21, &["expect:220", "login", "send:NOOP\r\n", "expect:200"]);
    assert!(ok, "dialling {host}:21: {out}\n{}", lab.logs());
}

fn assert_logged(lab: &Lab, categories: &[&str]) {
    let log = lab.log_of("ftpgate");
    assert!(log.contains("reason=\"destination\""), "no reason=\"destination\" in the log:\n{log}");
    for c in categories {
        assert!(log.contains(&format!("category=\"{c}\"")), "no category=\"{c}\" in the log:\n{log}");
    }
}

/// The firewall's link-local address on the client side once it is usable (DAD done).
fn firewall_link_local(lab: &Lab) -> String {
    let mut found = String::new();
    lab::eventually(Duration::from_secs(10), "the firewall's link-local address", || {
        let out = lab.exec_ok(&lab.fw_ns, &["ip", "-6", "-o", "addr", "show", "dev", "cside", "scope", "link"]);
        found = out
            .lines()
            .filter(|l| !l.contains("tentative"))
            .find_map(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
            .and_then(|a| a.split('/').next())
            .unwrap_or_default()
            .to_owned();
        !found.is_empty()
    });
    found
}

#[test]
fn the_firewall_itself_is_never_a_destination() {
    let yaml = format!("nat64_prefix: {NAT64_PREFIX}\n");
    let Some((mut lab, _)) = redirect_lab("destinations: the firewall", &yaml) else { return };
    start_firewall_service(&mut lab);
    let policy = "refused by gateway policy";
    // Its address facing the client, and the one facing the server (diverted all the same).
    refused(&lab, FW_C4, &format!("421 Destination {FW_C4}:21 {policy} (local)"));
    refused(&lab, FW_S4, &format!("421 Destination {FW_S4}:21 {policy} (local)"));
    refused(&lab, FW_C6, &format!("421 Destination [{FW_C6}]:21 {policy} (local)"));
    // Loopback and the firewall's own address, through the NAT64 prefix.
    let loopback = "2001:db8:64::7f00:1";
    refused(&lab, loopback, &format!("421 Destination [{loopback}]:21 {policy} (loopback: 127.0.0.1 through NAT64)"));
    let own = "2001:db8:64::c633:6401";
    refused(&lab, own, &format!("421 Destination [{own}]:21 {policy} (local: {FW_S4} through NAT64)"));
    // Its link-local address on the client's link.
    let ll = firewall_link_local(&lab);
    refused(&lab, &format!("{ll}%eth0"), &format!("421 Destination [{ll}]:21 {policy} (link_local)"));
    assert_logged(&lab, &["local", "loopback", "link_local"]);
    assert_eq!(lab.rejections(METRICS, "destination"), 6);
    assert_eq!(lab.log_of("fw-service"), "", "the firewall's own service was reached through the gateway");
    // Servers behind the firewall are reached as before, also through the prefix.
    served(&lab, SERVER4);
    served(&lab, SERVER6);
    served(&lab, "2001:db8:64::c633:6402");
    lab.finish();
}

#[test]
fn servers_allow_and_deny_choose_the_reachable_servers_and_a_reload_changes_them() {
    let deny = "servers: {deny: [198.51.100.0/24]}\n";
    let Some((lab, pid)) = redirect_lab("destinations: servers lists", deny) else { return };
    let policy = "refused by gateway policy";
    refused(&lab, SERVER4, &format!("421 Destination {SERVER4}:21 {policy} (denied)"));
    served(&lab, SERVER6);
    assert_logged(&lab, &["denied"]);
    assert_eq!(lab.rejections(METRICS, "destination"), 1);

    lab.reload_config(pid, "servers: {allow: [198.51.100.2/32]}\n");
    served(&lab, SERVER4);
    refused(&lab, SERVER6, &format!("421 Destination [{SERVER6}]:21 {policy} (not_allowed)"));
    assert_logged(&lab, &["not_allowed"]);

    // Deny wins over allow.
    lab.reload_config(pid, "servers: {allow: [198.51.100.0/24, \"2001:db8:2::/64\"], deny: [\"2001:db8:2::2\"]}\n");
    served(&lab, SERVER4);
    refused(&lab, SERVER6, &format!("421 Destination [{SERVER6}]:21 {policy} (denied)"));
    assert_eq!(lab.rejections(METRICS, "destination"), 3);
    lab.finish();
}
