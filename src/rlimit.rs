//! The open-file limit: how many descriptors the configuration can hold at once, and raising
//! `RLIMIT_NOFILE` to that at start-up, before privileges are dropped.
//!
//! A soft limit that already covers the need is left alone (no system call at all, which
//! matters under systemd's `SystemCallFilter=~@resources`, which filters setrlimit: the shipped
//! unit sets `LimitNOFILE=` high enough). Otherwise the soft limit is raised to the need, within
//! the hard limit; with `CAP_SYS_RESOURCE` (root) the hard limit is raised too. What cannot be
//! had is said in one warning naming the figures and the fix.

use crate::config::StartupConfig;
use nix::sys::resource::{getrlimit, rlim_t, setrlimit, Resource, RLIM_INFINITY};

/// Per control session: the client's connection and the server's.
pub const PER_SESSION: u64 = 2;
/// Per data channel at most: its listener, the two connections it relays and, on Linux, the
/// two splice pipes of two descriptors each.
pub const PER_DATA_CHANNEL: u64 = 1 + 2 + 2 * 2;
/// Everything else: standard streams, the runtime's epoll and wake-up descriptors, the signal
/// pipe, the transfer log, `/dev/pf`, connections accepted only to be refused.
pub const MARGIN: u64 = 64;

/// Descriptors needed with `max_sessions` control sessions, `max_data_channels` data channels
/// and `listeners` listening sockets all open at once.
pub fn needed(max_sessions: usize, max_data_channels: usize, listeners: usize) -> u64 {
    (max_sessions as u64)
        .saturating_mul(PER_SESSION)
        .saturating_add((max_data_channels as u64).saturating_mul(PER_DATA_CHANNEL))
        .saturating_add(listeners as u64)
        .saturating_add(MARGIN)
}

/// [`needed`] for a validated configuration: its client listeners, and the metrics listener
/// with the connections it may hold (`metrics.max_connections`), and the admin listener with
/// its (`admin.max_connections`).
pub fn needed_by(cfg: &StartupConfig) -> u64 {
    let metrics = match cfg.metrics_listen {
        Some(_) => 1 + cfg.metrics_max_connections,
        None => 0,
    };
    // The admin API on a listener of its own (on the metrics listener it shares those slots).
    let admin = match cfg.admin_listen {
        Some(a) if cfg.metrics_listen != Some(a) => 1 + cfg.admin_max_connections,
        _ => 0,
    };
    needed(cfg.max_sessions, cfg.max_data_channels, cfg.listen.len() + cfg.forward_listen.len())
        .saturating_add((metrics + admin) as u64)
}

/// A soft and a hard limit; `u64::MAX` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// What to ask of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: either the soft limit covers the need or nothing more can be had.
    Keep,
    /// Set these limits.
    Set(Limit),
}

/// The limits to ask for, given the current ones, the need and whether the hard limit may be
/// raised (`CAP_SYS_RESOURCE`). Never lowers a limit.
pub fn plan(current: Limit, need: u64, may_raise_hard: bool) -> Plan {
    if current.soft >= need {
        Plan::Keep
    } else if need <= current.hard {
        Plan::Set(Limit { soft: need, hard: current.hard })
    } else if may_raise_hard {
        Plan::Set(Limit { soft: need, hard: need })
    } else if current.soft < current.hard {
        // As far as the hard limit allows; still short, and said so.
        Plan::Set(Limit { soft: current.hard, hard: current.hard })
    } else {
        Plan::Keep
    }
}

/// What happened to the limit at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The soft limit already covers the need.
    Enough { limit: Limit, need: u64 },
    /// Raised from `from` to `to`, which covers the need.
    Raised { from: Limit, to: Limit, need: u64 },
    /// The limit is `now` (raised from `from` as far as allowed, or unchanged) and below the
    /// need; `error` is why the last attempt failed, if one did.
    Short { from: Limit, now: Limit, need: u64, error: Option<String> },
    /// The limit could not be read.
    Unknown { error: String },
}

/// Follows [`plan`] with `set` doing the system call; when raising the hard limit is refused
/// (say above `/proc/sys/fs/nr_open`), tries again within the hard limit.
pub fn decide(
    current: Limit,
    need: u64,
    may_raise_hard: bool,
    mut set: impl FnMut(Limit) -> Result<(), String>,
) -> Outcome {
    let mut error = None;
    let mut may_raise_hard = may_raise_hard;
    loop {
        match plan(current, need, may_raise_hard) {
            Plan::Keep if current.soft >= need => return Outcome::Enough { limit: current, need },
            Plan::Keep => return Outcome::Short { from: current, now: current, need, error },
            Plan::Set(to) => match set(to) {
                Ok(()) if to.soft >= need => return Outcome::Raised { from: current, to, need },
                Ok(()) => return Outcome::Short { from: current, now: to, need, error },
                Err(e) if to.hard > current.hard => {
                    error = Some(e);
                    may_raise_hard = false;
                }
                Err(e) => return Outcome::Short { from: current, now: current, need, error: Some(e) },
            },
        }
    }
}

/// `n` with thousands separators: 16,066.
fn grouped(n: u64) -> String {
    if n == u64::MAX {
        return "unlimited".into();
    }
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The start-up line for `outcome`: `true` for a warning, else information.
pub fn message(outcome: &Outcome, max_sessions: usize, max_data_channels: usize) -> (bool, String) {
    let who = format!("limits.max_sessions={max_sessions} and limits.max_data_channels={max_data_channels}");
    match outcome {
        Outcome::Enough { limit, need } => {
            (false, format!("open-file limit {} covers the {} that {who} need", grouped(limit.soft), grouped(*need)))
        }
        Outcome::Raised { from, to, need } => {
            let hard = if to.hard != from.hard {
                format!(" (hard limit raised from {} to {})", grouped(from.hard), grouped(to.hard))
            } else {
                String::new()
            };
            (
                false,
                format!(
                    "open-file limit raised from {} to {}{hard}: {who} need {}",
                    grouped(from.soft),
                    grouped(to.soft),
                    grouped(*need)
                ),
            )
        }
        Outcome::Short { from, now, need, error } => {
            let raised = if now.soft != from.soft {
                format!(" (raised from {} up to the hard limit)", grouped(from.soft))
            } else {
                String::new()
            };
            let why = error.as_ref().map(|e| format!(" (setrlimit: {e})")).unwrap_or_default();
            (
                true,
                format!(
                    "open-file limit {}{raised} is below the {} that {who} need{why}; raise it with LimitNOFILE= or ulimit -n, \
                     or lower the limits",
                    grouped(now.soft),
                    grouped(*need)
                ),
            )
        }
        Outcome::Unknown { error } => (true, format!("cannot read the open-file limit: {error}")),
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn from_rlim(v: rlim_t) -> u64 {
    if v == RLIM_INFINITY {
        u64::MAX
    } else {
        u64::try_from(v).unwrap_or(0)
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn to_rlim(v: u64) -> rlim_t {
    if v == u64::MAX {
        RLIM_INFINITY
    } else {
        rlim_t::try_from(v).unwrap_or(RLIM_INFINITY)
    }
}

/// Whether the hard limit may be raised.
fn may_raise_hard() -> bool {
    #[cfg(target_os = "linux")]
    return caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE).unwrap_or(false);
    #[cfg(not(target_os = "linux"))]
    return nix::unistd::Uid::effective().is_root();
}

/// Raises the open-file limit to what `cfg` needs, as far as the system allows, and logs one
/// line: information when raised, a warning when short.
pub fn apply(cfg: &StartupConfig) -> Outcome {
    let need = needed_by(cfg);
    let outcome = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let current = Limit { soft: from_rlim(soft), hard: from_rlim(hard) };
            decide(current, need, may_raise_hard(), |to| {
                setrlimit(Resource::RLIMIT_NOFILE, to_rlim(to.soft), to_rlim(to.hard)).map_err(|e| e.to_string())
            })
        }
        Err(e) => Outcome::Unknown { error: e.to_string() },
    };
    let (warn, line) = message(&outcome, cfg.max_sessions, cfg.max_data_channels);
    match outcome {
        Outcome::Enough { .. } => tracing::debug!(need, "{line}"),
        _ if warn => tracing::warn!(need, "{line}"),
        _ => tracing::info!(need, "{line}"),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: fn(u64, u64) -> Limit = |soft, hard| Limit { soft, hard };

    #[test]
    fn the_need_counts_sessions_data_channels_listeners_and_a_margin() {
        assert_eq!(needed(0, 0, 0), MARGIN);
        assert_eq!(needed(1, 0, 0), MARGIN + 2);
        assert_eq!(needed(0, 1, 0), MARGIN + 7);
        assert_eq!(needed(1000, 2000, 2), 2000 + 14_000 + 2 + 64);
        assert_eq!(needed(usize::MAX, usize::MAX, usize::MAX), u64::MAX);
    }

    #[test]
    fn the_defaults_need_16066_and_fit_the_shipped_unit() {
        let cfg = crate::config::validate(&crate::config::RawConfig::default()).unwrap().startup;
        assert_eq!(needed_by(&cfg), 16_066);
        let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ftpgate.service")).unwrap();
        let limit: u64 = unit
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .expect("LimitNOFILE= in deploy/ftpgate.service")
            .trim()
            .parse()
            .unwrap();
        assert!(limit >= 2 * needed_by(&cfg), "LimitNOFILE={limit} leaves no room");
    }

    #[test]
    fn the_metrics_endpoint_counts_with_its_connections() {
        let yaml = "metrics: {listen: 127.0.0.1:9121, max_connections: 20}\n";
        let cfg = crate::config::validate(&crate::config::parse_raw(yaml).unwrap()).unwrap().startup;
        assert_eq!(needed_by(&cfg), 16_066 + 1 + 20);
    }

    #[test]
    fn the_plan_never_lowers_and_raises_only_what_it_may() {
        // Enough already, even when unlimited.
        assert_eq!(plan(L(65536, 65536), 16_066, false), Plan::Keep);
        assert_eq!(plan(L(u64::MAX, u64::MAX), 16_066, true), Plan::Keep);
        // Soft raised to the need, the hard limit untouched.
        assert_eq!(plan(L(1024, 524_288), 16_066, false), Plan::Set(L(16_066, 524_288)));
        assert_eq!(plan(L(1024, u64::MAX), 16_066, true), Plan::Set(L(16_066, u64::MAX)));
        // Hard limit too low: raised with the capability, else soft up to hard.
        assert_eq!(plan(L(1024, 4096), 16_066, true), Plan::Set(L(16_066, 16_066)));
        assert_eq!(plan(L(1024, 4096), 16_066, false), Plan::Set(L(4096, 4096)));
        assert_eq!(plan(L(4096, 4096), 16_066, false), Plan::Keep);
    }

    #[test]
    fn decisions_follow_what_the_kernel_allows() {
        let never = |_: Limit| -> Result<(), String> { panic!("no system call when the limit is enough") };
        assert_eq!(decide(L(65536, 65536), 100, false, never), Outcome::Enough { limit: L(65536, 65536), need: 100 });

        let mut calls = Vec::new();
        let out = decide(L(1024, 4096), 2000, false, |to| {
            calls.push(to);
            Ok(())
        });
        assert_eq!(out, Outcome::Raised { from: L(1024, 4096), to: L(2000, 4096), need: 2000 });
        assert_eq!(calls, [L(2000, 4096)]);

        // The hard limit may be raised, but the kernel refuses (nr_open): within the hard limit.
        let mut calls = Vec::new();
        let out = decide(L(1024, 4096), 20_000, true, |to| {
            calls.push(to);
            if to.hard > 4096 {
                Err("EPERM: Operation not permitted".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(calls, [L(20_000, 20_000), L(4096, 4096)]);
        assert_eq!(
            out,
            Outcome::Short {
                from: L(1024, 4096),
                now: L(4096, 4096),
                need: 20_000,
                error: Some("EPERM: Operation not permitted".into())
            }
        );

        // Nothing to gain: no call, short.
        let out = decide(L(1024, 1024), 5000, false, never);
        assert_eq!(out, Outcome::Short { from: L(1024, 1024), now: L(1024, 1024), need: 5000, error: None });

        // A failed raise within the hard limit leaves the limit as it was.
        let out = decide(L(1024, 8192), 5000, false, |_| Err("EPERM".into()));
        assert_eq!(
            out,
            Outcome::Short { from: L(1024, 8192), now: L(1024, 8192), need: 5000, error: Some("EPERM".into()) }
        );
    }

    #[test]
    fn messages_name_the_figures_and_the_fix() {
        let short = Outcome::Short { from: L(1024, 1024), now: L(1024, 1024), need: 18_130, error: None };
        let (warn, line) = message(&short, 2000, 2000);
        assert!(warn);
        assert_eq!(
            line,
            "open-file limit 1,024 is below the 18,130 that limits.max_sessions=2000 and limits.max_data_channels=2000 \
             need; raise it with LimitNOFILE= or ulimit -n, or lower the limits"
        );
        let partial = Outcome::Short { from: L(1024, 4096), now: L(4096, 4096), need: 18_130, error: None };
        assert!(message(&partial, 2000, 2000)
            .1
            .starts_with("open-file limit 4,096 (raised from 1,024 up to the hard limit) is below"));
        let raised = Outcome::Raised { from: L(1024, 4096), to: L(16_066, 16_066), need: 16_066 };
        let (warn, line) = message(&raised, 1000, 2000);
        assert!(!warn);
        assert_eq!(
            line,
            "open-file limit raised from 1,024 to 16,066 (hard limit raised from 4,096 to 16,066): \
             limits.max_sessions=1000 and limits.max_data_channels=2000 need 16,066"
        );
        assert!(message(&Outcome::Unknown { error: "ENOSYS".into() }, 1, 1).0);
    }

    #[test]
    fn figures_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_048_576), "1,048,576");
        assert_eq!(grouped(u64::MAX), "unlimited");
    }

    #[test]
    fn rlim_conversions_keep_unlimited() {
        assert_eq!(from_rlim(RLIM_INFINITY), u64::MAX);
        assert_eq!(to_rlim(u64::MAX), RLIM_INFINITY);
        assert_eq!(from_rlim(to_rlim(16_066)), 16_066);
    }
}
