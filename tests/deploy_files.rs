//! The deployment files parse, and every metric they query is one ftpgate exports, with labels
//! and label values it really has: the Prometheus scrape configuration and alert rules, the
//! Grafana dashboard, and the Containerfile's essentials. The README's list of metrics names
//! every label value. The systemd unit grants no capability, each drop-in exactly the one its
//! mode needs, and systemd itself accepts them.

#[path = "deploy/promql.rs"]
mod promql;
#[path = "deploy/systemd.rs"]
mod systemd;
#[path = "deploy/unit.rs"]
mod unit;

use promql::{check_expr, families, Refs, Selector, METRICS};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> serde_yaml::Value {
    serde_yaml::from_str::<serde_yaml::Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn scrape_job() -> serde_yaml::Value {
    let cfg = yaml("deploy/prometheus/ftpgate-scrape.yml");
    let jobs = cfg["scrape_configs"].as_sequence().expect("scrape_configs is a list");
    let job = jobs.iter().find(|j| j["job_name"].as_str() == Some("ftpgate")).expect("a job named ftpgate");
    job.clone()
}

#[test]
fn the_scrape_config_targets_the_metrics_port() {
    let job = scrape_job();
    let path = job["metrics_path"].as_str().unwrap_or("/metrics");
    assert_eq!(path, "/metrics");
    assert!(matches!(job["scheme"].as_str(), None | Some("http")), "{:?}", job["scheme"]);
    let targets: Vec<&str> = job["static_configs"]
        .as_sequence()
        .expect("static_configs")
        .iter()
        .flat_map(|sc| sc["targets"].as_sequence().expect("targets").iter())
        .map(|t| t.as_str().expect("a target is a string"))
        .collect();
    assert!(!targets.is_empty());
    for t in targets {
        let (host, port) = t.rsplit_once(':').unwrap_or_else(|| panic!("target {t} has no port"));
        assert!(!host.is_empty(), "{t}");
        assert_eq!(port, "9121", "target {t}");
    }
}

#[test]
fn the_alert_rules_are_complete_and_query_exported_metrics() {
    let job_name = scrape_job()["job_name"].as_str().unwrap().to_string();
    let doc = yaml("deploy/prometheus/ftpgate-alerts.yml");
    let groups = doc["groups"].as_sequence().expect("groups is a list");
    assert!(!groups.is_empty());
    let mut names = BTreeSet::new();
    let mut all: Vec<Refs> = Vec::new();
    for g in groups {
        assert!(g["name"].as_str().is_some_and(|n| !n.is_empty()), "group without a name");
        for r in g["rules"].as_sequence().expect("rules is a list") {
            let name = r["alert"].as_str().expect("every rule is an alert");
            assert!(names.insert(name.to_string()), "alert {name} defined twice");
            assert!(name.chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{name}");
            let expr = r["expr"].as_str().unwrap_or_else(|| panic!("{name}: no expr"));
            let refs = check_expr(expr).unwrap_or_else(|e| panic!("{name}: {e}\n{expr}"));
            for s in &refs.selectors {
                for (label, op, value) in &s.matchers {
                    if label == "job" && op == "=" {
                        assert_eq!(value, &job_name, "{name}: job label differs from the scrape job");
                    }
                }
            }
            if let Some(f) = r.get("for") {
                let f = f.as_str().unwrap_or_else(|| panic!("{name}: `for` is not a duration"));
                let (n, unit) = f.split_at(f.len() - 1);
                assert!(n.parse::<u32>().is_ok() && ["s", "m", "h"].contains(&unit), "{name}: for {f}");
            }
            let severity = r["labels"]["severity"].as_str().unwrap_or_else(|| panic!("{name}: no severity"));
            assert!(["critical", "warning", "info"].contains(&severity), "{name}: severity {severity}");
            for a in ["summary", "description"] {
                assert!(r["annotations"][a].as_str().is_some_and(|s| !s.trim().is_empty()), "{name}: no {a}");
            }
            all.push(refs);
        }
    }
    // The alerts asked for: ftpgate down, bounce/port stealing, upstream connect failures,
    // failing transfers.
    let has = |pred: &dyn Fn(&Selector) -> bool| all.iter().any(|r| r.selectors.iter().any(pred));
    assert!(has(&|s| s.metric.name == "up"), "no alert on up");
    assert!(
        has(&|s| s.metric.name == "ftpgate_rejections_total"
            && s.matchers.iter().any(|(l, _, v)| l == "reason" && v.contains("bounce") && v.contains("port_stealing"))),
        "no alert on bounce and port_stealing rejections"
    );
    assert!(has(&|s| s.metric.name == "ftpgate_upstream_connect_failures_total"), "no alert on upstream failures");
    assert!(
        has(&|s| s.metric.name == "ftpgate_transfers_total"
            && s.matchers.iter().any(|(l, _, v)| l == "outcome" && v == "failed")),
        "no alert on failed transfers"
    );
}

/// Every value under a key named `key`, anywhere in `v`.
fn strings_under<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map {
                if k == key {
                    if let Some(s) = x.as_str() {
                        out.push(s);
                    }
                }
                strings_under(x, key, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|x| strings_under(x, key, out)),
        _ => {}
    }
}

/// Panels, with the panels of collapsed rows.
fn all_panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels is a list") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn the_dashboard_is_valid_and_shows_every_exported_metric() {
    let rel = "deploy/grafana/ftpgate-dashboard.json";
    let d: serde_json::Value = serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds_var = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a Prometheus data source variable");
    let ds_ref = format!("${{{}}}", ds_var["name"].as_str().unwrap());
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], ds_ref.as_str(), "variable {}", v["name"]);
        let q = v["query"]["query"].as_str().or(v["query"].as_str()).expect("variable query");
        let refs = check_expr(q).unwrap_or_else(|e| panic!("variable {}: {e}\n{q}", v["name"]));
        used.extend(families(&refs));
    }

    let mut ids = BTreeSet::new();
    let panels = all_panels(&d);
    assert!(panels.len() >= 10, "only {} panels", panels.len());
    for p in panels {
        let title = p["title"].as_str().expect("panel title");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel id of {title} repeated");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("gridPos.x"), g["w"].as_u64().expect("gridPos.w"));
        assert!(w > 0 && x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some(), "{title}: {g}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{title}: data source");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{title}: target data source");
        }
        let mut exprs = Vec::new();
        strings_under(p, "expr", &mut exprs);
        assert_eq!(exprs.len(), targets.len(), "{title}: a target without expr");
        for e in exprs {
            let refs = check_expr(e).unwrap_or_else(|err| panic!("{title}: {err}\n{e}"));
            used.extend(families(&refs));
        }
    }
    for m in METRICS {
        assert!(used.contains(m.name), "the dashboard does not show {}", m.name);
    }
}

#[test]
fn the_readme_names_every_label_value() {
    let readme = read("README.md");
    let start = readme.find("- **Metrics**").expect("README has a Metrics bullet");
    let len = readme[start..].find("`deploy/prometheus/`").expect("the Metrics bullet ends with the deploy files");
    let words: BTreeSet<&str> = readme[start..start + len]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    for m in METRICS {
        for (label, values) in m.labels {
            for v in *values {
                assert!(words.contains(v), "the README's metrics list does not name {v} ({}{{{label}}})", m.name);
            }
        }
    }
}

/// The Containerfile's instructions, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (op, args) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        out.push((op.to_ascii_uppercase(), args.trim().to_string()));
        cur.clear();
    }
    out
}

#[test]
fn the_containerfile_builds_a_release_and_runs_unprivileged() {
    let text = read("deploy/Containerfile");
    let ins = instructions(&text);
    let froms: Vec<usize> = ins.iter().enumerate().filter(|(_, (op, _))| op == "FROM").map(|(i, _)| i).collect();
    assert!(froms.len() >= 2, "not a multi-stage build");
    let runtime = *froms.last().unwrap();
    assert!(ins[runtime].1.contains("debian:bookworm-slim"), "runtime stage: {}", ins[runtime].1);
    assert!(
        ins[..runtime].iter().any(|(op, a)| op == "RUN" && a.contains("cargo build --release --locked")),
        "the build stage does not run `cargo build --release --locked`"
    );
    let user = ins[runtime..].iter().rev().find(|(op, _)| op == "USER").map(|(_, a)| a.as_str());
    let user = user.expect("the runtime stage sets no USER");
    let uid = user.split(':').next().unwrap();
    assert!(!["root", "0"].contains(&uid), "USER {user} is root");
    let exposed: Vec<&str> = ins
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp"))
        .collect();
    for port in ["8021", "9121"] {
        assert!(exposed.contains(&port), "port {port} not exposed: {exposed:?}");
    }
    assert!(
        ins.iter().any(|(op, a)| op == "COPY"
            && a.contains("examples/ftpgate.yaml")
            && a.ends_with("/etc/ftpgate/ftpgate.yaml")),
        "the example configuration is not installed as /etc/ftpgate/ftpgate.yaml"
    );
    // Sources copied from the build context exist in the repository.
    for (op, args) in ins.iter().filter(|(op, _)| op == "COPY" || op == "ADD") {
        let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        if args.split_whitespace().any(|w| w.starts_with("--from")) {
            continue;
        }
        for src in &words[..words.len() - 1] {
            assert!(root().join(src).exists(), "{op} {src}: no such file in the repository");
        }
    }
    for needed in ["--network host", "NET_ADMIN"] {
        assert!(text.contains(needed), "the Containerfile does not explain `{needed}`");
    }
}

#[test]
fn the_freebsd_pf_file_references_the_pinhole_anchors() {
    // The kernel data path loads each pinhole into ftpgate/<pid>.<n>: pf evaluates those
    // anchors only where the main ruleset names them with a wildcard.
    let text = read("pf-anchors/freebsd-pf.conf");
    for line in [r#"nat-anchor "ftpgate/*""#, r#"rdr-anchor "ftpgate/*""#, r#"anchor "ftpgate/*""#] {
        assert!(text.lines().any(|l| l.trim_start_matches('#').trim() == line), "{line} missing");
    }
}

#[test]
fn the_openbsd_pf_file_evaluates_the_pinhole_anchors_before_the_divert_rules() {
    // OpenBSD has no nat-anchor or rdr-anchor: the pinholes' anchors are filter rules with
    // rdr-to and nat-to, and must be met before the quick divert-to rules of "ftpgate".
    let text = read("pf-anchors/openbsd-pf.conf");
    let lines: Vec<&str> = text.lines().map(|l| l.trim_start_matches('#').trim()).collect();
    let at = |line: &str| lines.iter().position(|l| *l == line);
    let pinholes = at(r#"anchor "ftpgate/*""#).expect(r#"anchor "ftpgate/*" missing"#);
    let diverts = at(r#"anchor "ftpgate""#).expect(r#"anchor "ftpgate" missing"#);
    assert!(pinholes < diverts, "the pinhole anchors come after the divert-to anchor");
    assert!(!lines.iter().any(|l| l.starts_with("nat-anchor") || l.starts_with("rdr-anchor")), "not OpenBSD syntax");
}
