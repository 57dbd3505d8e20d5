//! systemd unit files as systemd reads them (systemd.syntax(7)): sections, `Key=Value`
//! assignments in order, continuation lines, and the capability settings they add up to.

use std::collections::BTreeSet;

/// One assignment: its section, key, value and line number (1-based).
#[derive(Debug, Clone)]
pub struct Assignment {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A parsed unit file or drop-in.
#[derive(Debug, Clone)]
pub struct UnitFile {
    pub name: String,
    pub assignments: Vec<Assignment>,
}

/// The sections a service unit and its drop-ins may have.
const SECTIONS: &[&str] = &["Unit", "Service", "Install"];

pub fn parse(name: &str, text: &str) -> Result<UnitFile, String> {
    let mut section: Option<String> = None;
    let mut assignments = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim();
        let (first, mut joined) = match pending.take() {
            Some((first, mut so_far)) => {
                // Comment lines inside a continuation are skipped, as systemd does.
                if t.starts_with('#') || t.starts_with(';') {
                    pending = Some((first, so_far));
                    continue;
                }
                so_far.push(' ');
                (first, so_far)
            }
            None => {
                if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
                    continue;
                }
                if let Some(s) = t.strip_prefix('[') {
                    let s = s.strip_suffix(']').ok_or_else(|| format!("{name}:{n}: unterminated section header"))?;
                    if !SECTIONS.contains(&s) {
                        return Err(format!("{name}:{n}: unknown section [{s}]"));
                    }
                    section = Some(s.to_string());
                    continue;
                }
                (n, String::new())
            }
        };
        if let Some(part) = t.strip_suffix('\\') {
            joined.push_str(part.trim_end());
            pending = Some((first, joined));
            continue;
        }
        joined.push_str(t);
        let sec = section.clone().ok_or_else(|| format!("{name}:{first}: assignment outside a section"))?;
        let (key, value) = joined.split_once('=').ok_or_else(|| format!("{name}:{first}: not a Key=Value line"))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("{name}:{first}: bad key `{key}`"));
        }
        assignments.push(Assignment { section: sec, key: key.into(), value: value.trim().into(), line: first });
    }
    if pending.is_some() {
        return Err(format!("{name}: the file ends inside a continuation line"));
    }
    Ok(UnitFile { name: name.into(), assignments })
}

impl UnitFile {
    pub fn values<'a>(&'a self, section: &'a str, key: &'a str) -> impl Iterator<Item = &'a Assignment> + 'a {
        self.assignments.iter().filter(move |a| a.section == section && a.key == key)
    }

    /// The last value of `section.key`, which is what a single-valued setting ends up with.
    pub fn last(&self, section: &str, key: &str) -> Option<&str> {
        self.assignments.iter().rev().find(|a| a.section == section && a.key == key).map(|a| a.value.as_str())
    }
}

/// The capability set `key` (`AmbientCapabilities` or `CapabilityBoundingSet`) adds up to over
/// `files` read in order (the unit, then its drop-ins): assignments are merged, and an empty
/// one resets the set to empty. `None` when no file assigns it at all, which for the bounding
/// set means every capability.
pub fn capability_set(files: &[&UnitFile], key: &str) -> Result<Option<BTreeSet<String>>, String> {
    let mut set: Option<BTreeSet<String>> = None;
    for f in files {
        for a in f.values("Service", key) {
            let now = set.get_or_insert_with(BTreeSet::new);
            if a.value.is_empty() {
                now.clear();
                continue;
            }
            if a.value.starts_with('~') {
                return Err(format!("{}:{}: `{key}=~...` grants everything not listed", f.name, a.line));
            }
            for cap in a.value.split_whitespace() {
                let name_ok = cap.strip_prefix("CAP_").is_some_and(|rest| {
                    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                });
                if !name_ok {
                    return Err(format!("{}:{}: `{cap}` is not a capability name", f.name, a.line));
                }
                now.insert(cap.to_string());
            }
        }
    }
    Ok(set)
}

#[test]
fn the_parser_follows_systemd_syntax_and_refuses_broken_files() {
    let unit = parse(
        "t.service",
        "# comment\n[Service]\nExecStart=/bin/a \\\n  --flag\nCapabilityBoundingSet=\nAmbientCapabilities=CAP_NET_ADMIN\n\
         AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
    )
    .unwrap();
    assert_eq!(unit.last("Service", "ExecStart"), Some("/bin/a --flag"));
    let ambient = capability_set(&[&unit], "AmbientCapabilities").unwrap().unwrap();
    assert_eq!(ambient, BTreeSet::from(["CAP_NET_ADMIN".to_string(), "CAP_NET_BIND_SERVICE".to_string()]));
    assert_eq!(capability_set(&[&unit], "CapabilityBoundingSet").unwrap(), Some(BTreeSet::new()));
    let reset = parse("r.conf", "[Service]\nAmbientCapabilities=\n").unwrap();
    assert_eq!(capability_set(&[&unit, &reset], "AmbientCapabilities").unwrap(), Some(BTreeSet::new()));
    assert_eq!(capability_set(&[&reset], "CapabilityBoundingSet").unwrap(), None);
    for bad in [
        "Key=value\n",                    // outside a section
        "[Service\nA=b\n",                // unterminated header
        "[Servce]\nA=b\n",                // no such section
        "[Service]\njust words\n",        // not an assignment
        "[Service]\nExecStart=/bin/a \\", // ends inside a continuation
    ] {
        assert!(parse("bad", bad).is_err(), "accepted: {bad:?}");
    }
    let inverted = parse("i.conf", "[Service]\nCapabilityBoundingSet=~CAP_SYS_ADMIN\n").unwrap();
    assert!(capability_set(&[&inverted], "CapabilityBoundingSet").is_err());
    let typo = parse("t.conf", "[Service]\nAmbientCapabilities=NET_ADMIN\n").unwrap();
    assert!(capability_set(&[&typo], "AmbientCapabilities").is_err());
}
