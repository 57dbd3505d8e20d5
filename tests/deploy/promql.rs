//! A lexical PromQL checker for the deployment files: every selector must name a metric ftpgate
//! exports, with labels and label values it really has, and grouping must use labels the
//! referenced series carry.

use ftpgate::labels::{DataMode, Direction, Family, Reason, ReplyClass, SessionOutcome, TransferOutcome, TransferVerb};
use std::collections::BTreeSet;

/// A metric ftpgate exports: its name, whether it is a histogram (then `_bucket`, `_sum` and
/// `_count` series exist) and its labels with their possible values (empty: any value).
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub histogram: bool,
    pub labels: &'static [(&'static str, &'static [&'static str])],
}

/// A label's values as the code defines them, so the dashboard and alerts are checked against
/// the source rather than against a copy that can fall behind.
macro_rules! values {
    ($t:ty) => {
        &{
            let mut v = [""; <$t>::ALL.len()];
            let mut i = 0;
            while i < v.len() {
                v[i] = <$t>::ALL[i].label();
                i += 1;
            }
            v
        }
    };
}

pub const METRICS: &[Metric] = &[
    Metric { name: "ftpgate_build_info", histogram: false, labels: &[("version", &[])] },
    Metric { name: "ftpgate_sessions_active", histogram: false, labels: &[] },
    Metric { name: "ftpgate_sessions_total", histogram: false, labels: &[("outcome", values!(SessionOutcome))] },
    Metric { name: "ftpgate_upstream_connect_failures_total", histogram: false, labels: &[] },
    Metric { name: "ftpgate_upstream_connect_duration_seconds", histogram: true, labels: &[] },
    Metric { name: "ftpgate_session_duration_seconds", histogram: true, labels: &[] },
    Metric {
        name: "ftpgate_data_channels_active",
        histogram: false,
        labels: &[("mode", values!(DataMode)), ("family", values!(Family))],
    },
    Metric {
        name: "ftpgate_data_channels_total",
        histogram: false,
        labels: &[("mode", values!(DataMode)), ("family", values!(Family))],
    },
    Metric { name: "ftpgate_bytes_total", histogram: false, labels: &[("direction", values!(Direction))] },
    Metric {
        name: "ftpgate_transfers_total",
        histogram: false,
        labels: &[("verb", values!(TransferVerb)), ("outcome", values!(TransferOutcome))],
    },
    Metric { name: "ftpgate_transfer_duration_seconds", histogram: true, labels: &[] },
    Metric { name: "ftpgate_rejections_total", histogram: false, labels: &[("reason", values!(Reason))] },
    Metric { name: "ftpgate_server_replies_total", histogram: false, labels: &[("class", values!(ReplyClass))] },
    // Prometheus' own per-target series.
    Metric { name: "up", histogram: false, labels: &[] },
];

/// Labels every scraped series carries.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// One `name{label op "value", ...}` in an expression.
#[derive(Debug)]
pub struct Selector {
    /// The series name as written (`..._bucket` included).
    pub series: String,
    /// The exported metric it belongs to.
    pub metric: &'static Metric,
    pub matchers: Vec<(String, String, String)>,
}

/// What an expression references.
#[derive(Debug, Default)]
pub struct Refs {
    pub selectors: Vec<Selector>,
    /// Labels named in by/without/on/ignoring/group_left/group_right.
    pub grouping: Vec<String>,
}

fn lookup(series: &str) -> Option<&'static Metric> {
    if let Some(m) = METRICS.iter().find(|m| m.name == series) {
        return Some(m);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| series.strip_suffix(suffix))
        .find_map(|base| METRICS.iter().find(|m| m.histogram && m.name == base))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A quoted string starting at `chars[*i]`, which is the quote; leaves `*i` after the closing one.
fn quoted(chars: &[char], i: &mut usize) -> Result<String, String> {
    let q = chars[*i];
    let mut s = String::new();
    *i += 1;
    while *i < chars.len() {
        let c = chars[*i];
        *i += 1;
        if c == q {
            return Ok(s);
        }
        if c == '\\' && q != '`' && *i < chars.len() {
            s.push(chars[*i]);
            *i += 1;
        } else {
            s.push(c);
        }
    }
    Err("unterminated string".into())
}

fn skip_ws(chars: &[char], i: &mut usize) {
    while *i < chars.len() && chars[*i].is_whitespace() {
        *i += 1;
    }
}

fn ident(chars: &[char], i: &mut usize) -> String {
    let start = *i;
    while *i < chars.len() && is_ident(chars[*i]) {
        *i += 1;
    }
    chars[start..*i].iter().collect()
}

/// The metric selectors and grouping labels of a PromQL expression (a lexical scan, enough for
/// the expressions of dashboards and rules). Names that are neither ftpgate's (`ftpgate_`) nor
/// `up` are taken for functions and keywords.
fn scan(expr: &str) -> Result<Refs, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            quoted(&chars, &mut i)?;
        } else if c == '[' {
            // A range or subquery duration, possibly a Grafana variable.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable or a number (durations like 5m included).
            i += 1;
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            return Err(format!("selector without a metric name at {i}"));
        } else if is_ident_start(c) {
            let name = ident(&chars, &mut i);
            let mut j = i;
            skip_ws(&chars, &mut j);
            let next = chars.get(j).copied();
            if matches!(name.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right")
                && next == Some('(')
            {
                i = j + 1;
                loop {
                    skip_ws(&chars, &mut i);
                    match chars.get(i) {
                        Some(')') => {
                            i += 1;
                            break;
                        }
                        Some(',') => i += 1,
                        Some(&c) if is_ident_start(c) => refs.grouping.push(ident(&chars, &mut i)),
                        other => return Err(format!("unexpected {other:?} in the label list of `{name}`")),
                    }
                }
            } else if name.starts_with("ftpgate_") || name == "up" {
                let metric = lookup(&name).ok_or_else(|| format!("`{name}` is not a metric ftpgate exports"))?;
                let mut matchers = Vec::new();
                if next == Some('{') {
                    i = j + 1;
                    loop {
                        skip_ws(&chars, &mut i);
                        match chars.get(i) {
                            Some('}') => {
                                i += 1;
                                break;
                            }
                            Some(',') => i += 1,
                            Some(&c) if is_ident_start(c) => {
                                let label = ident(&chars, &mut i);
                                skip_ws(&chars, &mut i);
                                let op: String = chars[i..].iter().take_while(|c| "=!~".contains(**c)).collect();
                                if !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
                                    return Err(format!("bad matcher operator `{op}` after `{label}` in `{name}`"));
                                }
                                i += op.len();
                                skip_ws(&chars, &mut i);
                                if !matches!(chars.get(i), Some('"' | '\'' | '`')) {
                                    return Err(format!("matcher `{label}` of `{name}` has no quoted value"));
                                }
                                let value = quoted(&chars, &mut i)?;
                                matchers.push((label, op, value));
                            }
                            other => return Err(format!("unexpected {other:?} in the selector of `{name}`")),
                        }
                    }
                }
                refs.selectors.push(Selector { series: name, metric, matchers });
            }
        } else {
            i += 1;
        }
    }
    Ok(refs)
}

/// Scans `expr` and checks that every selector names an exported metric with its own labels and
/// possible values, that grouping uses labels the referenced series have, and that it
/// references at least one metric.
pub fn check_expr(expr: &str) -> Result<Refs, String> {
    let refs = scan(expr)?;
    if refs.selectors.is_empty() {
        return Err("references no ftpgate metric".into());
    }
    let mut known: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
    for s in &refs.selectors {
        let is_bucket = s.series.ends_with("_bucket") && s.metric.histogram;
        if is_bucket {
            known.insert("le");
        }
        known.extend(s.metric.labels.iter().map(|(l, _)| *l));
        for (label, op, value) in &s.matchers {
            if TARGET_LABELS.contains(&label.as_str()) || (is_bucket && label == "le") {
                continue;
            }
            let Some((_, values)) = s.metric.labels.iter().find(|(l, _)| l == label) else {
                return Err(format!("`{}` has no label `{label}`", s.series));
            };
            if values.is_empty() {
                continue;
            }
            let alternatives: Vec<&str> = if op.ends_with('~') {
                if !value.chars().all(|c| is_ident(c) || c == '|') {
                    continue; // a real regular expression: nothing to compare with
                }
                value.split('|').collect()
            } else {
                vec![value.as_str()]
            };
            for v in alternatives {
                if !values.contains(&v) {
                    return Err(format!("`{}{{{label}}}` never has the value `{v}` (it has {values:?})", s.series));
                }
            }
        }
    }
    for g in &refs.grouping {
        if !known.contains(g.as_str()) {
            return Err(format!("grouping by `{g}`, which none of the referenced series has"));
        }
    }
    Ok(refs)
}

pub fn families(refs: &Refs) -> impl Iterator<Item = &'static str> + '_ {
    refs.selectors.iter().map(|s| s.metric.name)
}

#[test]
fn the_expression_checker_catches_wrong_names_labels_and_values() {
    let ok = check_expr(
        r#"histogram_quantile(0.99, sum by (le) (rate(ftpgate_transfer_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))"#,
    )
    .unwrap();
    assert_eq!(ok.selectors[0].metric.name, "ftpgate_transfer_duration_seconds");
    check_expr(r#"sum by (reason) (increase(ftpgate_rejections_total{reason=~"bounce|port_stealing"}[10m])) > 5"#)
        .unwrap();
    check_expr(r#"up{job="ftpgate"} == 0"#).unwrap();
    // Values a hand-kept list once missed.
    check_expr(r#"ftpgate_data_channels_total{mode=~"passive_to_active|active_to_passive"}"#).unwrap();
    check_expr(r#"ftpgate_transfers_total{verb="other"}"#).unwrap();
    for bad in [
        "ftpgate_session_active",                               // not exported
        "rate(ftpgate_sessions_total_count[5m])",               // not a histogram
        r#"ftpgate_sessions_total{outcome="fail"}"#,            // no such value
        r#"ftpgate_bytes_total{direction=~"in|out"}"#,          // no such values
        r#"ftpgate_data_channels_active{mode="epsv"}"#,         // no such mode
        r#"ftpgate_transfers_total{reason="bounce"}"#,          // label of another metric
        "sum by (reson) (ftpgate_rejections_total)",            // misspelt grouping label
        "sum by (le) (ftpgate_session_duration_seconds_count)", // le only on buckets
        "vector(1)",                                            // no metric at all
        r#"ftpgate_rejections_total{reason="bounce""#,          // unterminated selector
    ] {
        assert!(check_expr(bad).is_err(), "accepted: {bad}");
    }
}
