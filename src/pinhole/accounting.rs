//! Conntrack accounting (`net.netfilter.nf_conntrack_acct`), the kernel's byte and packet
//! counts per connection that the kernel path's transfer figures come from. It is set per
//! network namespace and is off by default; ftpgate turns it on at start-up, while it is still
//! privileged, and otherwise says once how to.

use std::path::Path;

const SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";

/// What start-up found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Accounting {
    On,
    /// It was off; ftpgate turned it on.
    TurnedOn,
    /// Off, and it could not be turned on: why.
    Off(String),
}

/// Reads the setting at `path` and turns it on when it is off.
pub fn ensure_at(path: &Path) -> Accounting {
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() != "0" => Accounting::On,
        Ok(_) => match std::fs::write(path, "1\n") {
            Ok(()) => Accounting::TurnedOn,
            Err(e) => Accounting::Off(format!("cannot turn it on: {e}")),
        },
        Err(e) => Accounting::Off(format!("cannot read it: {e}")),
    }
}

/// At start-up on the kernel path: accounting on, or one warning saying what that costs.
pub fn ensure_on() -> bool {
    match ensure_at(Path::new(SYSCTL)) {
        Accounting::On => true,
        Accounting::TurnedOn => {
            tracing::info!("kernel data path: conntrack accounting (net.netfilter.nf_conntrack_acct) turned on");
            true
        }
        Accounting::Off(why) => {
            tracing::warn!(
                "kernel data path: conntrack accounting is off ({why}): byte counts of kernel data connections \
                 are logged as unknown; enable it with `sysctl -w net.netfilter.nf_conntrack_acct=1` in \
                 ftpgate's network namespace"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_is_turned_on_when_off_and_reported_when_it_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("acct");
        std::fs::write(&f, "1\n").unwrap();
        assert_eq!(ensure_at(&f), Accounting::On);
        std::fs::write(&f, "0\n").unwrap();
        assert_eq!(ensure_at(&f), Accounting::TurnedOn);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1\n");
        assert!(matches!(ensure_at(&dir.path().join("missing")), Accounting::Off(why) if why.contains("read")));
    }
}
