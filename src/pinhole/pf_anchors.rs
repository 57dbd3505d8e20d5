//! What FreeBSD's and OpenBSD's pf share for the pinholes: `/dev/pf`, the anchor listing
//! (`struct pfioc_ruleset` and its two ioctls have one layout and one number on both), and
//! the start-up steps: the `ftpgate` anchor must exist, a crashed ftpgate's pinhole anchors
//! are emptied, and one whole pinhole is added and rolled back as a probe.
//!
//! This module holds `unsafe`: the two listing ioctls and kill(2).

use super::pf_dev::Device;
use super::pf_rules::{self, path_field, PARENT};
use super::{Pinhole, PinholeError};
use std::fs::File;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

pub const PF_DEV: &str = "/dev/pf";
/// `MAXPATHLEN` / `PATH_MAX`.
const PATH_MAX: usize = 1024;
/// `PF_ANCHOR_NAME_SIZE`.
const ANCHOR_NAME: usize = 64;
/// Anchors of one ruleset looked at, at most.
const MAX_ANCHORS_LISTED: u32 = 100_000;

/// `struct pfioc_ruleset { u_int32_t nr; char path[MAXPATHLEN]; char name[PF_ANCHOR_NAME_SIZE]; }`
#[repr(C)]
pub struct PfiocRuleset {
    nr: u32,
    path: [u8; PATH_MAX],
    name: [u8; ANCHOR_NAME],
}

// FreeBSD 14's and OpenBSD 7.7's sys/net/pfvar.h alike.
const _: () = assert!(size_of::<PfiocRuleset>() == 1092);
// _IOWR('D', 58, struct pfioc_ruleset) = DIOCGETRULESETS: 1092 = 0x444.
const _: () = assert!(nix::request_code_readwrite!(b'D', 58, size_of::<PfiocRuleset>()) == 0xc444_443a);

mod ioctls {
    use super::PfiocRuleset;
    nix::ioctl_readwrite!(get_rulesets, b'D', 58, PfiocRuleset);
    nix::ioctl_readwrite!(get_ruleset, b'D', 59, PfiocRuleset);
}

/// The pinhole the start-up probe adds and rolls back (documentation addresses).
pub const PROBE: Pinhole = Pinhole {
    peer: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)),
    dialled: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 20021),
    target: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 20021),
    source: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
    source_port: Some(20),
};

#[cfg(target_os = "freebsd")]
const ANCHOR_HINT: &str = " (add nat-anchor \"ftpgate/*\", rdr-anchor \"ftpgate/*\" and anchor \"ftpgate/*\" to \
                           /etc/pf.conf and reload it: see pf-anchors/freebsd-pf.conf)";
#[cfg(not(target_os = "freebsd"))]
const ANCHOR_HINT: &str = " (add anchor \"ftpgate/*\" before the filter rules of /etc/pf.conf and reload \
                           it: see pf-anchors/openbsd-pf.conf)";
#[cfg(target_os = "freebsd")]
const NOT_FOUND_HINT: &str = " (is pf loaded? `kldload pf`)";
#[cfg(not(target_os = "freebsd"))]
const NOT_FOUND_HINT: &str = " (no pf device: is this a jail or chroot without /dev/pf?)";

pub fn errno(what: &str, e: nix::errno::Errno) -> io::Error {
    let base = io::Error::from(e);
    io::Error::new(base.kind(), format!("pf {what}: {base}"))
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The names of the anchors directly under `path` ("" = the main ruleset), at most `max`.
pub fn child_anchors(dev: &File, path: &str, max: u32) -> io::Result<Vec<String>> {
    let mut rs = PfiocRuleset { nr: 0, path: path_field(path)?, name: [0; ANCHOR_NAME] };
    // SAFETY: `dev` is an open /dev/pf descriptor for the whole call; `rs` is a fully
    // initialised, exclusively borrowed `PfiocRuleset` whose size is asserted above to be
    // pf's `struct pfioc_ruleset` (the request code encodes it), so the kernel reads and
    // writes exactly that many bytes of it; any bit pattern is valid for its fields.
    unsafe { ioctls::get_rulesets(dev.as_raw_fd(), &mut rs) }.map_err(|e| errno("DIOCGETRULESETS", e))?;
    let count = rs.nr.min(max);
    let mut names = Vec::with_capacity(count as usize);
    for nr in 0..count {
        let mut one = PfiocRuleset { nr, path: path_field(path)?, name: [0; ANCHOR_NAME] };
        // SAFETY: as for DIOCGETRULESETS above; same structure, same size.
        unsafe { ioctls::get_ruleset(dev.as_raw_fd(), &mut one) }.map_err(|e| errno("DIOCGETRULESET", e))?;
        names.push(c_string(&one.name));
    }
    Ok(names)
}

/// Opens `/dev/pf` for writing and checks that the main ruleset has the `ftpgate` anchor the
/// pinholes' anchors live under.
pub fn open_checked() -> Result<File, PinholeError> {
    let dev = std::fs::OpenOptions::new().read(true).write(true).open(PF_DEV).map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::NotFound => NOT_FOUND_HINT,
            io::ErrorKind::PermissionDenied => {
                " (pf's anchors are changed through /dev/pf opened for writing: run as root)"
            }
            _ => "",
        };
        PinholeError::Setup { what: "cannot open /dev/pf", source: e, hint }
    })?;
    let anchors = child_anchors(&dev, "", MAX_ANCHORS_LISTED).map_err(|source| PinholeError::Setup {
        what: "cannot list pf's anchors",
        source,
        hint: "",
    })?;
    if !anchors.iter().any(|a| a == PARENT) {
        return Err(PinholeError::Setup {
            what: "the main pf ruleset does not reference the anchor \"ftpgate\"",
            source: io::Error::from(io::ErrorKind::NotFound),
            hint: ANCHOR_HINT,
        });
    }
    Ok(dev)
}

/// Empties the pinhole anchors of ftpgate processes that are gone, then adds a whole
/// pinhole's rules (`probe`) and rolls them back: pf checks the right to change rules and
/// reads every rule as ftpgate lays it out, before any transfer needs one. `layout` says
/// which pf's layout was refused.
pub fn clean_and_probe<D: Device>(list: &File, dev: &D, pid: u32, layout: &'static str) -> Result<(), PinholeError> {
    // Pinholes a crashed ftpgate left behind would go on letting connections through.
    // This process has loaded nothing yet: anchors under its pid are an earlier process's.
    let alive = |p: u32| {
        if p == pid {
            return false;
        }
        // SAFETY: kill(2) with signal 0 sends nothing and touches no memory of ours; it
        // only says whether the process exists (ESRCH when it does not).
        let r = unsafe { libc::kill(p as libc::pid_t, 0) };
        r == 0 || nix::errno::Errno::last() != nix::errno::Errno::ESRCH
    };
    for name in child_anchors(list, PARENT, MAX_ANCHORS_LISTED).unwrap_or_default() {
        if pf_rules::stale(&name, alive) {
            let anchor = format!("{PARENT}/{name}");
            match dev.begin(&anchor).and_then(|t| dev.commit(&anchor, t)) {
                Ok(()) => tracing::info!(anchor, "removed a pinhole anchor a stopped ftpgate left behind"),
                Err(e) => tracing::warn!(error = %e, anchor, "a stopped ftpgate's pinhole anchor not removed"),
            }
        }
    }
    let probe = pf_rules::anchor_path(pid, 0);
    let tickets = dev.begin(&probe).map_err(|e| PinholeError::Setup {
        what: "pf refuses ftpgate's anchors",
        source: e,
        hint: " (run as root)",
    })?;
    let added = dev.add_rules(&probe, &D::pinhole(&PROBE), tickets);
    if let Err(e) = dev.rollback(&probe, tickets) {
        tracing::warn!(error = %e, anchor = probe, "pf transaction not rolled back");
    }
    added.map_err(|e| PinholeError::Setup { what: "pf refuses ftpgate's pinhole rules", source: e, hint: layout })
}
