//! The manual page ftpgate(8) and the bash and zsh completions, written by
//! `ftpgate --generate DIR` (the Debian package's deploy/debian/build.sh runs it).
//!
//! NAME, SYNOPSIS, DESCRIPTION and OPTIONS come from the clap definitions in [`crate::cli`],
//! the same ones `--help` prints, so the two cannot disagree; the METRICS section comes from
//! the exporter itself ([`crate::metrics::Metrics`]). The sections an admin reads first
//! (interception modes and their rules, the configuration file, signals, exit status, files,
//! security) are written below.

use crate::cli::Cli;
use crate::metrics::Metrics;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::io;
use std::path::{Path, PathBuf};

/// One block of a hand-written section.
enum Block {
    /// A paragraph.
    P(&'static str),
    /// A term (in bold) and what it means.
    Item(&'static str, &'static str),
    /// Lines to type as they are.
    Example(&'static str),
}

use Block::{Example, Item, P};

/// Sections placed between OPTIONS and METRICS.
const BEFORE_METRICS: &[(&str, &[Block])] = &[
    (
        "INTERCEPTION MODES",
        &[
            P("The firewall diverts clients' connections to TCP port 21, and to ftpgate's passive \
               port range, into ftpgate; the mode says how ftpgate then finds the server the \
               client dialled. The rule files take the site's values as nft definitions \
               (-D NAME=value); each file's header lists them. The packaged copies are in \
               /usr/share/ftpgate/."),
            Item(
                "redirect (the default)",
                "nftables REDIRECT, nftables/ftpgate-redirect.nft. The original destination is \
                 read from the connection tracking entry (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST). \
                 No capability is needed. REDIRECT delivers to the primary address of the \
                 receiving interface, not to loopback: listen on that address or on 0.0.0.0 and \
                 [::] (the default). The file needs MARK too, for transparent active mode \
                 (see TRANSPARENT ACTIVE MODE).",
            ),
            Item(
                "tproxy",
                "nftables TPROXY, nftables/ftpgate-tproxy.nft plus the policy routing of \
                 nftables/ftpgate-tproxy-routing.sh add, with the same MARK. The original \
                 destination is the transparent socket's local address. Needs CAP_NET_ADMIN.",
            ),
            Item(
                "pf",
                "OpenBSD divert-to (pf-anchors/openbsd-pf.conf, destination from getsockname) or \
                 FreeBSD rdr (pf-anchors/freebsd-pf.conf, destination from DIOCNATLOOK on \
                 /dev/pf).",
            ),
            Item(
                "reverse (--upstream)",
                "No rules: clients dial ftpgate's own address and every session goes to the one \
                 configured server; the interception mode is then ignored. With routes, the user \
                 name picks the server: rules match the whole name (user), its end (suffix, \
                 removed from the name sent on) or a regular expression (regex), each with an \
                 upstream and optionally send_as; upstream serves every other name. ftpgate \
                 answers USER with 331 itself, takes PASS, then connects and replays both, so \
                 the server judges the password. A reload applies to new sessions.",
            ),
            Item(
                "forward proxy (forward.listen)",
                "Listeners beside the others, in either mode, where clients dial ftpgate and \
                 name the server in USER name@host[:port] (lftp's ftp:proxy); IPv6 literals in \
                 brackets, the last @ ending the name. The name is resolved with the system \
                 resolver and every address checked against servers and the built-in refusals \
                 before any connection; a malformed, unresolvable or refused server gets 530. \
                 Before login (forward and routes) only USER, PASS, QUIT and NOOP are taken; \
                 timeouts.login bounds the wait for it.",
            ),
            Item(
                "data_path: kernel (--data-path kernel)",
                "Linux, FreeBSD and OpenBSD. Linux: instead of relaying data connections, ftpgate writes an exact, one-shot \
                 NAT pinhole per data connection into the sets of \
                 nftables/ftpgate-kernel-path.nft over netlink and the kernel forwards it. Load \
                 that file beside the interception rules (nft -f, no values). Needs \
                 CAP_NET_ADMIN (deploy/ftpgate.service.d/kernel-path.conf under systemd). The \
                 server sees the firewall, the client sees the server (ftpgate in reverse mode); \
                 a stranger's or a second connection is dropped; an unused pinhole goes at \
                 timeouts.data_accept; on ABOR the kernel resets the transfer's connection \
                 (set kill4/kill6). The rules' counters used and refused are read every 5 s \
                 into ftpgate_kernel_path_packets_total{counter}. Linux byte counts come from \
                 conntrack accounting (net.netfilter.nf_conntrack_acct, turned on at start-up where \
                 it is off, or a warning): when a connection is over, its log line (byte_layer=\"ip\", \
                 bytes and packets each way), its transfer log line and \
                 ftpgate_kernel_path_bytes_total{direction} carry the kernel's IP-layer figures, \
                 headers included (at least the file size, up to 3-5 % above it); where the \
                 kernel cannot tell they are unknown. Passive/active conversion is refused with 425. \
                 FreeBSD (14 and later): each pinhole is an anchor ftpgate/<pid>.<n> with an \
                 rdr, a nat and pass (max 1) rules, loaded through /dev/pf in one transaction; \
                 pf.conf needs nat-anchor, rdr-anchor and anchor \"ftpgate/*\" \
                 (pf-anchors/freebsd-pf.conf), and ftpgate runs as root. The rules go at \
                 timeouts.data_accept, used or not (states outlive them); pf keeps no counters, so \
                 byte counts there are unknown. OpenBSD (pf as of pfvar.h 1.543, April 2025): the same anchors hold a pass in \
                 (max 1) rule with rdr-to and a pass out (max 1) rule with nat-to; pf.conf needs \
                 anchor \"ftpgate/*\" ahead of the divert-to rules (pf-anchors/openbsd-pf.conf).",
            ),
            P("nftables/ftpgate-filter.nft is for firewalls whose input and forward policies \
               drop: it admits ftpgate's ports (with active.ports set to the same fixed range as \
               ACTIVE_PORTS) and drops FTP that would bypass ftpgate. Load it beside \
               ftpgate-redirect.nft. A REDIRECT set-up with the defaults, clients on eth1:"),
            Example(
                "nft -D 'CLIENT_IF=\"eth1\"' -D PROXY_PORT=8021 \\\n    \
                 -D PASSIVE_PORTS=50000-50999 -D MARK=0x2121 \\\n    \
                 -f /usr/share/ftpgate/nftables/ftpgate-redirect.nft\n\
                 systemctl enable --now ftpgate",
            ),
        ],
    ),
    (
        "TRANSPARENT ACTIVE MODE",
        &[
            P("After a client's PORT or EPRT, ftpgate connects to the client. With \
               active.source: original that connection comes from the address of the server the \
               client dialled (and from port 20 with active.source_port_20), as the server's own \
               would: clients that refuse active data from anyone but their control peer work \
               through ftpgate. ftpgate binds the server's address with a transparent socket \
               (IP_TRANSPARENT, IPV6_TRANSPARENT; needs CAP_NET_ADMIN, checked at start-up, \
               exit 3). The client's replies are addressed to the server: the socket \
               transparent rule of ftpgate-redirect.nft and ftpgate-tproxy.nft marks them with \
               MARK, and the policy routing of ftpgate-tproxy-routing.sh add MARK delivers them \
               to ftpgate instead of forwarding them."),
            P("With intercept pf on FreeBSD and OpenBSD there is no transparent bind: as OpenBSD's \
               ftp-proxy does, ftpgate loads a nat rule into an anchor ftpgate/<pid>.<n> for \
               exactly its own connection (its port to the client's data address) that rewrites \
               the source to the server's address (port 20 with active.source_port_20), with a \
               pass out rule for it (on OpenBSD one pass out rule with nat-to); the connection's \
               state keeps the translation, the rules go after timeouts.data_accept plus \
               timeouts.connect. pf.conf needs nat-anchor and anchor \"ftpgate/*\" \
               (pf-anchors/freebsd-pf.conf), on OpenBSD anchor \"ftpgate/*\" \
               (pf-anchors/openbsd-pf.conf), and ftpgate root at start-up (/dev/pf is opened \
               then; without the anchor it exits 3). Switching to original by a reload takes \
               effect at a restart there; until then such transfers get 425."),
            P("active.source: auto (the default) is original in tproxy mode, which has both \
               already, and gateway (the firewall's own address) in redirect mode, which the \
               start-up log says once with how to change it. Reverse mode always connects from \
               ftpgate's address, which the client dialled; so do site-to-site transfers to \
               another host."),
            Example(
                "ftpgate-tproxy-routing.sh add 0x2121\n\
                 # /etc/ftpgate/ftpgate.yaml\nactive:\n  source: original",
            ),
        ],
    ),
    (
        "CONFIGURATION",
        &[
            P("The configuration is a YAML file given with --config; without one ftpgate runs \
               with its embedded defaults. The packaged /etc/ftpgate/ftpgate.yaml spells out \
               every option with its default and what it does. Each flag above overrides the \
               matching field of the file. An unknown field, a bad value or a contradiction is \
               refused before any socket is bound, with the field's path in the message."),
            Example("ftpgate --check-config /etc/ftpgate/ftpgate.yaml"),
            P("validates a file, prints the effective configuration and exits: YAML with every \
               default filled in and the flags applied, which --config takes as it is. Fields \
               marked (restart) in the file keep their running values on reload; the log names \
               them."),
        ],
    ),
    (
        "SESSIONS AND THE ADMIN API",
        &[
            P("With admin.listen set, ftpgate serves its live control sessions over HTTP as \
               JSON: GET /sessions lists them (id, client address, original destination, \
               upstream, user name, start time, phase, data bytes each way, the transfer in \
               progress with verb, file, type, mode, bytes so far and rate, and the TLS state); \
               GET /sessions/ID shows one; DELETE /sessions/ID ends it: the client gets \
               421 Session ended by the administrator, a transfer in progress is aborted (its \
               transfer log line has status i), the session ends with outcome admin_closed, and \
               the log names who ended it (peer address and token name). The password is never \
               kept."),
            P("admin.token_file holds bearer tokens, one a line as NAME:SECRET (or a bare \
               SECRET of at least 16 visible characters); with it every request needs \
               Authorization: Bearer SECRET, and refusals count as admin_auth. Without a token \
               file admin.listen must be a loopback address. The listener takes at most \
               admin.max_connections connections (beyond, closed at once and counted as \
               admin_limit), one request each, within 10 s. The same address as metrics.listen \
               serves /metrics and the API on one listener."),
            Example(
                "ftpgate sessions\n\
                 ftpgate sessions --json\n\
                 ftpgate sessions --kill 42",
            ),
            P("ftpgate sessions [--json] [--kill ID] asks the running instance and prints a \
               table (id, client, server, user, phase, age, bytes down and up, current \
               transfer), or the API's JSON:"),
            Item(
                "-c, --config FILE",
                "The instance's configuration, for admin.listen and admin.token_file (default \
                 /etc/ftpgate/ftpgate.yaml; not read with --admin unless given).",
            ),
            Item("--admin URL", "The API's address, e.g. http://127.0.0.1:2122."),
            Item("--token-file FILE", "The bearer token to present (the file's first)."),
            Item("--json", "The sessions as the API returns them."),
            Item("--kill ID", "End session ID."),
        ],
    ),
    (
        "FTPS",
        &[
            P("tls: refuse (the default) answers AUTH with 534 and hides AUTH, PBSZ, PROT, CCC \
               and ADAT from FEAT. tls: terminate answers AUTH TLS with ftps.certificate and \
               ftps.key and speaks upstream_tls (none, explicit, implicit) to the server, \
               verifying it against ftps.server_ca or the system roots for ftps.server_name or \
               its address. tls: inspect (transparent mode) secures and verifies the server \
               first, then answers the client's AUTH with a certificate for that server issued \
               by ftps.ca_certificate and ftps.ca_key (valid ftps.leaf_lifetime, cached). A \
               server that fails verification or refuses TLS ends the session with 421 and a \
               log line with reason=tls; never a silent downgrade."),
            P("Clear text sent behind AUTH before the handshake is discarded (reason=injection). \
               CCC is refused with 502. Data connections are TLS on a side exactly when that \
               side asked PROT P; toward servers they resume the control connection's TLS \
               session (vsftpd's require_ssl_reuse). Port 990 diverted by the shipped rules, and \
               ftps.implicit_listen, are implicit FTPS. The certificate files are read again on \
               SIGHUP: new sessions use them, running ones keep theirs."),
        ],
    ),
    (
        "SIGNALS",
        &[
            Item(
                "SIGHUP",
                "Read the --config file again, with the command line's flags on top. New sessions \
                 use the new configuration; running sessions and transfers keep theirs; log.level \
                 applies at once. A file that does not validate, or that needs a capability \
                 ftpgate no longer holds, is refused: the reason is logged and the running \
                 configuration stays.",
            ),
            Item(
                "SIGTERM, SIGINT",
                "Stop accepting, let running sessions finish for timeouts.shutdown_grace (30 s by \
                 default), close what remains and exit 0.",
            ),
        ],
    ),
    (
        "EXIT STATUS",
        &[
            Item(
                "0",
                "Stopped by SIGTERM or SIGINT; a valid --check-config; ftpgate sessions answered; --help, --version.",
            ),
            Item("1", "The output could not be written (a reader closing the pipe early is no error)."),
            Item("2", "A configuration error, in the file or on the command line."),
            Item(
                "3",
                "A start-up failure: a listen address in use, a missing capability, a user to \
                 switch to that does not exist, the kernel data path's table not loaded (Linux) or \
                 its pf anchor not referenced, /dev/pf not writable or the probe \
                 pinhole's rules refused (FreeBSD, OpenBSD).",
            ),
            Item(
                "4",
                "ftpgate sessions: no instance answered at the admin address, it refused the \
                 request (a wrong token), or it has no such session.",
            ),
        ],
    ),
    (
        "FILES",
        &[
            Item("/etc/ftpgate/ftpgate.yaml", "The configuration read by the packaged unit."),
            Item(
                "/usr/lib/systemd/system/ftpgate.service",
                "The systemd unit, installed disabled: load the rules, then systemctl enable --now \
                 ftpgate. It runs ftpgate as the system user ftpgate, sandboxed.",
            ),
            Item("/usr/share/ftpgate/nftables/", "The nftables rule files and the TPROXY routing script."),
            Item("/usr/share/ftpgate/pf-anchors/", "pf anchors for OpenBSD and FreeBSD."),
            Item(
                "/usr/share/doc/ftpgate/examples/",
                "More configurations (IPv6 gateway, reverse proxy, forward proxy, routes by user \
                 name), a Prometheus scrape \
                 configuration with alert rules and a Grafana dashboard.",
            ),
        ],
    ),
];

const AFTER_METRICS: &[(&str, &[Block])] = &[
    (
        "SECURITY",
        &[
            P("Started as root, ftpgate binds its sockets, then becomes privileges.user \
               (optionally chrooted) and keeps only the capabilities its options need: \
               CAP_NET_ADMIN for tproxy, a shaping mark or active.source: original, \
               CAP_NET_BIND_SERVICE for active.source_port_20, none otherwise. The packaged unit starts it unprivileged \
               with that bounded set."),
            P("Only connections the firewall diverted are relayed: one that reaches ftpgate's \
               port directly is answered 421 and logged as loop. A PORT or EPRT naming another \
               host or a privileged port is refused with 501 (bounce) unless policy.fxp allows \
               it; a data listener accepts only the expected peer (port_stealing) and closes \
               after one connection or data_accept. A server's 227 or 229 naming another address \
               is replaced by its control address or refused (server_data_address). AUTH TLS is \
               refused with 534 (tls: refuse) unless ftpgate terminates or inspects the TLS \
               itself (see FTPS): it cannot check what it cannot read."),
            P("The metrics endpoint is not authenticated: keep metrics.listen on loopback or a \
               management address. The admin API ends sessions: without admin.token_file it \
               only binds loopback. The shipped rules divert clients' connections to the passive \
               range on any server: pick a range clients do not otherwise use."),
        ],
    ),
    ("SEE ALSO", &[P("nft(8), pf.conf(5), systemd.exec(5), xferlog(5), /usr/share/doc/ftpgate/README.md")]),
];

fn render_sections(roff: &mut Roff, sections: &[(&str, &[Block])]) {
    for (title, blocks) in sections {
        roff.control("SH", [*title]);
        for block in *blocks {
            match block {
                P(text) => {
                    roff.control("PP", []).text([roman(*text)]);
                }
                Item(term, text) => {
                    roff.control("TP", []).text([bold(*term)]).text([roman(*text)]);
                }
                Example(lines) => {
                    roff.control("PP", []).control("RS", []).control("nf", []);
                    for line in lines.lines() {
                        roff.text([roman(line)]);
                    }
                    roff.control("fi", []).control("RE", []);
                }
            }
        }
    }
}

/// One exported metric: its type, help and the values of each of its labels.
struct Family {
    name: String,
    kind: String,
    help: String,
    labels: Vec<(String, Vec<String>)>,
}

/// The metrics as the exporter renders them at start-up, where every labelled series exists.
fn metric_families() -> Vec<Family> {
    let metrics = Metrics::new().expect("the metric definitions are consistent");
    let text = String::from_utf8_lossy(&metrics.render()).into_owned();
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push(Family { name: name.into(), kind: String::new(), help: help.into(), labels: Vec::new() });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let (Some(f), Some((_, kind))) = (families.last_mut(), rest.split_once(' ')) {
                f.kind = kind.into();
            }
        } else if let (Some(f), Some((_, pairs))) = (families.last_mut(), line.split_once('{')) {
            let pairs = pairs.split_once('}').map_or("", |(p, _)| p);
            for pair in pairs.split(',').filter(|p| !p.is_empty()) {
                let Some((label, value)) = pair.split_once('=') else { continue };
                let value = value.trim_matches('"').to_owned();
                if label == "le" {
                    continue;
                }
                match f.labels.iter_mut().find(|(l, _)| l == label) {
                    Some((_, values)) if !values.contains(&value) => values.push(value),
                    Some(_) => {}
                    None => f.labels.push((label.into(), vec![value])),
                }
            }
        }
    }
    families
}

fn render_metrics(roff: &mut Roff) {
    roff.control("SH", ["METRICS"]);
    roff.control("PP", []).text([roman(
        "With metrics.listen (or --metrics-listen) set, ftpgate serves these series in the \
         Prometheus text format at http://ADDR:PORT/metrics. Every labelled series exists from \
         start-up, at zero.",
    )]);
    for f in metric_families() {
        let labels: Vec<String> =
            f.labels.iter().map(|(label, values)| format!("{label}: {}", values.join(", "))).collect();
        let what = if labels.is_empty() { f.kind } else { format!("{}; {}", f.kind, labels.join("; ")) };
        roff.control("TP", []).text([bold(f.name), roman(format!(" ({what})"))]).text([roman(f.help)]);
    }
}

/// The page's date: SOURCE_DATE_EPOCH's (reproducible builds) or today's.
fn date() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    now.format(time::macros::format_description!("[year]-[month]-[day]")).unwrap_or_default()
}

/// The manual page ftpgate(8), in roff.
pub fn man_page() -> Vec<u8> {
    let man = Man::new(Cli::command())
        .title("FTPGATE")
        .section("8")
        .date(date())
        .source(format!("ftpgate {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out).expect("writing into a Vec");
    man.render_name_section(&mut out).expect("writing into a Vec");
    man.render_synopsis_section(&mut out).expect("writing into a Vec");
    man.render_description_section(&mut out).expect("writing into a Vec");
    man.render_options_section(&mut out).expect("writing into a Vec");
    let mut roff = Roff::new();
    // Paths and option names read better whole than hyphenated.
    roff.control("nh", []);
    render_sections(&mut roff, BEFORE_METRICS);
    render_metrics(&mut roff);
    render_sections(&mut roff, AFTER_METRICS);
    out.extend_from_slice(roff.render().as_bytes());
    man.render_version_section(&mut out).expect("writing into a Vec");
    out
}

/// Writes ftpgate.8 and the completions (ftpgate.bash, _ftpgate for zsh) into `dir`, creating
/// it if needed; returns the files written.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let page = dir.join("ftpgate.8");
    std::fs::write(&page, man_page())?;
    let mut files = vec![page];
    for shell in [Shell::Bash, Shell::Zsh] {
        files.push(clap_complete::generate_to(shell, &mut Cli::command(), "ftpgate", dir)?);
    }
    Ok(files)
}
