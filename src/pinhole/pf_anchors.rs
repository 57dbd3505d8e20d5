//! What FreeBSD's and OpenBSD's pf share for the pinholes: `/dev/pf`, the transactions and
//! the anchor listing (`struct pfioc_trans`, `struct pfioc_ruleset` and their ioctls have
//! one layout and one number on both: FreeBSD 14's sys/net/pfvar.h and OpenBSD's rev. 1.543), and
//! the start-up steps: the `ftpgate` anchor must exist, a crashed ftpgate's pinhole anchors
//! are emptied, and one whole pinhole is added and rolled back as a probe.
//!
//! This module holds `unsafe`: the transaction and listing ioctls, and kill(2).

use super::pf_dev::{Device, PfPinholes, Rules};
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

/// `struct pfioc_trans_e { int type; char anchor[MAXPATHLEN]; u_int32_t ticket; }`
/// (FreeBSD calls `type` `rs_num`).
#[repr(C)]
#[derive(Clone, Copy)]
struct PfiocTransE {
    kind: libc::c_int,
    anchor: [u8; PATH_MAX],
    ticket: u32,
}

/// `struct pfioc_trans { int size; int esize; struct pfioc_trans_e *array; }`
#[repr(C)]
struct PfiocTrans {
    size: libc::c_int,
    esize: libc::c_int,
    array: *mut PfiocTransE,
}

const _: () = assert!(size_of::<PfiocRuleset>() == 1092);
const _: () = assert!(size_of::<PfiocTransE>() == 1032);
const _: () = assert!(std::mem::offset_of!(PfiocTransE, ticket) == 1028);
const _: () = assert!(size_of::<PfiocTrans>() == 16);
// _IOWR('D', 81, struct pfioc_trans) = DIOCXBEGIN; 82 and 83 (commit, rollback) alike.
const _: () = assert!(nix::request_code_readwrite!(b'D', 81, size_of::<PfiocTrans>()) == 0xc010_4451);
// _IOWR('D', 58, struct pfioc_ruleset) = DIOCGETRULESETS: 1092 = 0x444.
const _: () = assert!(nix::request_code_readwrite!(b'D', 58, size_of::<PfiocRuleset>()) == 0xc444_443a);

mod ioctls {
    use super::{PfiocRuleset, PfiocTrans};
    nix::ioctl_readwrite!(xbegin, b'D', 81, PfiocTrans);
    nix::ioctl_readwrite!(xcommit, b'D', 82, PfiocTrans);
    nix::ioctl_readwrite!(xrollback, b'D', 83, PfiocTrans);
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
const LAYOUT: &str = " (the rule layout is FreeBSD 14's: an older pf answers E2BIG or EINVAL)";
#[cfg(not(target_os = "freebsd"))]
const LAYOUT: &str =
    " (the rule layout is that of OpenBSD's pfvar.h 1.543, April 2025: a pf with another one answers ENOTTY or EINVAL)";
#[cfg(target_os = "freebsd")]
const NOT_FOUND_HINT: &str = " (is pf loaded? `kldload pf`)";
#[cfg(not(target_os = "freebsd"))]
const NOT_FOUND_HINT: &str = " (no pf device: is this a jail or chroot without /dev/pf?)";

/// A step of a ruleset transaction.
#[derive(Debug, Clone, Copy)]
pub enum Trans {
    Begin,
    Commit,
    Rollback,
}

/// `DIOCXBEGIN`, `DIOCXCOMMIT` or `DIOCXROLLBACK` on the rulesets `elems` names (pf's
/// `type`/`rs_num`, anchor, ticket; tickets 0 when beginning); returns their tickets.
pub fn transaction<const N: usize>(dev: &File, step: Trans, elems: [(i32, &str, u32); N]) -> io::Result<[u32; N]> {
    let mut array = [PfiocTransE { kind: 0, anchor: [0; PATH_MAX], ticket: 0 }; N];
    for (e, (kind, anchor, ticket)) in array.iter_mut().zip(elems) {
        *e = PfiocTransE { kind, anchor: path_field(anchor)?, ticket };
    }
    let mut req = PfiocTrans {
        size: N as libc::c_int,
        esize: size_of::<PfiocTransE>() as libc::c_int,
        array: array.as_mut_ptr(),
    };
    let fd = dev.as_raw_fd();
    // SAFETY: `dev` is an open /dev/pf descriptor; `req` is a `PfiocTrans` (size asserted)
    // whose `array` points at `array`, N initialised `PfiocTransE` (size asserted, and
    // `esize` says it) that stay alive and are not otherwise used through the call; the
    // kernel copies `size * esize` bytes in and the tickets back out, within that array.
    let done = unsafe {
        match step {
            Trans::Begin => ioctls::xbegin(fd, &mut req),
            Trans::Commit => ioctls::xcommit(fd, &mut req),
            Trans::Rollback => ioctls::xrollback(fd, &mut req),
        }
    };
    let what = match step {
        Trans::Begin => "DIOCXBEGIN",
        Trans::Commit => "DIOCXCOMMIT",
        Trans::Rollback => "DIOCXROLLBACK",
    };
    done.map_err(|e| errno(what, e))?;
    Ok(array.map(|e| e.ticket))
}

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

/// `/dev/pf`, opened for writing; its pinhole ioctls are the platform's (`pf_ffi` for
/// FreeBSD, `pf_obsd_ffi` for OpenBSD).
pub struct Dev(pub(super) File);

impl PfPinholes<Dev> {
    /// Opens `/dev/pf`, checks that the main ruleset has the `ftpgate` anchor the pinholes'
    /// anchors live under and that pf lets this process change it.
    pub fn open() -> Result<Self, PinholeError> {
        let dev = Dev(open_checked()?);
        let pid = std::process::id();
        clean_and_probe(&dev, pid)?;
        Self::start(dev, pid)
    }
}

/// Empties the pinhole anchors of ftpgate processes that are gone, then adds a whole
/// pinhole's rules ([`PROBE`]) and rolls them back: pf checks the right to change rules and
/// reads every rule as ftpgate lays it out, before any transfer needs one.
fn clean_and_probe(dev: &Dev, pid: u32) -> Result<(), PinholeError> {
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
    for name in child_anchors(&dev.0, PARENT, MAX_ANCHORS_LISTED).unwrap_or_default() {
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
    let added = dev.add_rules(&probe, &Rules::pinhole(&PROBE), tickets);
    if let Err(e) = dev.rollback(&probe, tickets) {
        tracing::warn!(error = %e, anchor = probe, "pf transaction not rolled back");
    }
    added.map_err(|e| PinholeError::Setup { what: "pf refuses ftpgate's pinhole rules", source: e, hint: LAYOUT })
}
