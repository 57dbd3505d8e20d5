//! FreeBSD's pf ioctls the pinholes use, and the binary structures they take. Layouts from
//! FreeBSD 14's sys/net/pfvar.h and sys/netpfil/pf/pf.h for LP64 (amd64, arm64), checked by
//! the assertions below; the request codes encode those sizes, so a mismatch would be
//! refused by the kernel (ENOTTY), never misread.
//!
//! This module holds the pinholes' `unsafe`: each ioctl call.

use super::nvlist::NvList;
use super::pf_anchors::{self, errno, Dev, Trans};
use super::pf_nv::NvDevice;
use super::pf_rules::Ruleset;
use std::fs::File;
use std::io;
use std::mem::{offset_of, size_of};
use std::net::IpAddr;
use std::os::fd::AsRawFd;

pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_INET6: u8 = libc::AF_INET6 as u8;
/// `MAXPATHLEN`: the size of every anchor path field.
const MAXPATHLEN: usize = 1024;
/// `PF_ADDR_ADDRMASK`.
const PF_ADDR_ADDRMASK: u8 = 0;

/// `struct pfioc_nv { void *data; size_t len; size_t size; }`: the packed nvlist, its
/// length, and the buffer's size (room for the kernel's answer).
#[repr(C)]
pub struct PfiocNv {
    data: *mut libc::c_void,
    len: usize,
    size: usize,
}

/// `struct pf_addr_wrap`: the address/mask union (32 bytes), a pointer union the kernel
/// fills, `type`, `iflags`, padding to the pointer's alignment.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PfAddrWrap {
    v: [u8; 32],
    p: u64,
    kind: u8,
    iflags: u8,
    _pad: [u8; 6],
}

/// `struct pf_pooladdr { struct pf_addr_wrap addr; TAILQ_ENTRY entries; char ifname[16];
/// struct pfi_kkif *kif; }` (the kernel overwrites the pointers).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PfPooladdr {
    addr: PfAddrWrap,
    entries: [u64; 2],
    ifname: [u8; 16],
    kif: u64,
}

/// `struct pfioc_pooladdr`.
#[repr(C)]
pub struct PfiocPooladdr {
    action: u32,
    ticket: u32,
    nr: u32,
    r_num: u32,
    r_action: u8,
    r_last: u8,
    af: u8,
    anchor: [u8; MAXPATHLEN],
    _pad: [u8; 5],
    addr: PfPooladdr,
}

const _: () = assert!(size_of::<PfiocNv>() == 24);
const _: () = assert!(size_of::<PfAddrWrap>() == 48);
const _: () = assert!(offset_of!(PfAddrWrap, kind) == 40);
const _: () = assert!(size_of::<PfPooladdr>() == 88);
const _: () = assert!(offset_of!(PfPooladdr, ifname) == 64);
const _: () = assert!(offset_of!(PfiocPooladdr, af) == 18);
const _: () = assert!(offset_of!(PfiocPooladdr, anchor) == 19);
const _: () = assert!(offset_of!(PfiocPooladdr, addr) == 1048);
const _: () = assert!(size_of::<PfiocPooladdr>() == 1136);
// _IOWR('D', 4, struct pfioc_nv) = DIOCADDRULENV.
const _: () = assert!(nix::request_code_readwrite!(b'D', 4, size_of::<PfiocNv>()) == 0xc018_4404);
// _IOWR('D', 51, struct pfioc_pooladdr) = DIOCBEGINADDRS: 1136 = 0x470.
const _: () = assert!(nix::request_code_readwrite!(b'D', 51, size_of::<PfiocPooladdr>()) == 0xc470_4433);

mod ioctls {
    use super::*;
    nix::ioctl_readwrite!(begin_addrs, b'D', 51, PfiocPooladdr);
    nix::ioctl_readwrite!(add_addr, b'D', 52, PfiocPooladdr);
    nix::ioctl_readwrite!(add_rule_nv, b'D', 4, PfiocNv);
    nix::ioctl_readwrite!(get_rule_nv, b'D', 7, PfiocNv);
    nix::ioctl_readwrite!(kill_states_nv, b'D', 41, PfiocNv);
}

/// The family of an address as FreeBSD numbers it.
pub fn af(ip: IpAddr) -> u8 {
    if ip.is_ipv6() {
        AF_INET6
    } else {
        AF_INET
    }
}

/// One transaction step on the three rulesets of `anchor`, in [`Ruleset::parts`]'s order.
fn trans(dev: &File, step: Trans, anchor: &str, tickets: [u32; 3]) -> io::Result<[u32; 3]> {
    let parts = Ruleset::default().parts().map(|(rs_num, _)| rs_num);
    pf_anchors::transaction(dev, step, [0, 1, 2].map(|i| (parts[i], anchor, tickets[i])))
}

fn pooladdr(ticket: u32, af: u8) -> PfiocPooladdr {
    let wrap = PfAddrWrap { v: [0; 32], p: 0, kind: PF_ADDR_ADDRMASK, iflags: 0, _pad: [0; 6] };
    PfiocPooladdr {
        action: 0,
        ticket,
        nr: 0,
        r_num: 0,
        r_action: 0,
        r_last: 0,
        af,
        anchor: [0; MAXPATHLEN],
        _pad: [0; 5],
        addr: PfPooladdr { addr: wrap, entries: [0; 2], ifname: [0; 16], kif: 0 },
    }
}

/// `DIOCBEGINADDRS`: empties pf's pool buffer; the ticket names it for the next rule.
pub fn begin_addrs(dev: &File) -> io::Result<u32> {
    let mut pp = pooladdr(0, 0);
    // SAFETY: `dev` is an open /dev/pf descriptor; `pp` is a fully initialised, exclusively
    // borrowed `PfiocPooladdr` whose size is asserted to be `struct pfioc_pooladdr`'s (the
    // request code encodes it); the kernel writes only its ticket.
    unsafe { ioctls::begin_addrs(dev.as_raw_fd(), &mut pp) }.map_err(|e| errno("DIOCBEGINADDRS", e))?;
    Ok(pp.ticket)
}

/// `DIOCADDADDR`: one host address (`/32` or `/128`) into the pool buffer `ticket`.
pub fn add_addr(dev: &File, ticket: u32, ip: IpAddr) -> io::Result<()> {
    let mut pp = pooladdr(ticket, af(ip));
    match ip {
        IpAddr::V4(v4) => {
            pp.addr.addr.v[..4].copy_from_slice(&v4.octets());
            pp.addr.addr.v[16..20].fill(0xff);
        }
        IpAddr::V6(v6) => {
            pp.addr.addr.v[..16].copy_from_slice(&v6.octets());
            pp.addr.addr.v[16..].fill(0xff);
        }
    }
    // SAFETY: as in `begin_addrs`; the kernel copies `pp.addr` and replaces the pointer
    // fields in its own copy, never dereferencing ours.
    unsafe { ioctls::add_addr(dev.as_raw_fd(), &mut pp) }.map(drop).map_err(|e| errno("DIOCADDADDR", e))
}

/// Runs an nvlist ioctl with `request` in a buffer of at least `room` bytes; returns the
/// buffer and the length the kernel reported.
fn nv_call(
    what: &str,
    request: &NvList,
    room: usize,
    call: impl FnOnce(&mut PfiocNv) -> nix::Result<libc::c_int>,
) -> io::Result<(Vec<u8>, usize)> {
    let mut buf = request.pack();
    let len = buf.len();
    buf.resize(len.max(room), 0);
    let mut nv = PfiocNv { data: buf.as_mut_ptr().cast(), len, size: buf.len() };
    call(&mut nv).map_err(|e| errno(what, e))?;
    let answered = nv.len.min(buf.len());
    Ok((buf, answered))
}

/// `DIOCADDRULENV`: one rule into the open transaction the request names.
pub fn add_rule(dev: &File, request: &NvList) -> io::Result<()> {
    // SAFETY: `dev` is an open /dev/pf descriptor; `nv` (size asserted to be
    // `struct pfioc_nv`'s) points at `buf`, alive and exclusively borrowed through the call,
    // `len` bytes of packed request in a buffer of `size` bytes; the kernel reads `len`.
    nv_call("DIOCADDRULENV", request, 0, |nv| unsafe { ioctls::add_rule_nv(dev.as_raw_fd(), nv) }).map(drop)
}

/// `DIOCGETRULENV`: a rule and its counters.
pub fn get_rule(dev: &File, request: &NvList, room: usize) -> io::Result<NvList> {
    // SAFETY: as in `add_rule`; the kernel writes at most `size` bytes (it answers ENOSPC
    // when the rule does not fit) and sets `len`.
    let (buf, len) = nv_call("DIOCGETRULENV", request, room, |nv| unsafe { ioctls::get_rule_nv(dev.as_raw_fd(), nv) })?;
    NvList::unpack(&buf[..len])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("pf DIOCGETRULENV: {e}")))
}

/// `DIOCKILLSTATESNV`: removes the states the request matches.
pub fn kill_states(dev: &File, request: &NvList) -> io::Result<()> {
    // SAFETY: as in `add_rule`; the answer (the number killed) fits in the request's buffer
    // of 4 KiB.
    nv_call("DIOCKILLSTATESNV", request, 4096, |nv| unsafe { ioctls::kill_states_nv(dev.as_raw_fd(), nv) }).map(drop)
}

/// Room for `DIOCGETRULENV`'s answer (a rule packs to about 3 KiB).
const ANSWER_ROOM: usize = 16 * 1024;

impl NvDevice for Dev {
    fn begin(&self, anchor: &str) -> io::Result<[u32; 3]> {
        trans(&self.0, Trans::Begin, anchor, [0; 3])
    }

    fn commit(&self, anchor: &str, tickets: [u32; 3]) -> io::Result<()> {
        trans(&self.0, Trans::Commit, anchor, tickets).map(drop)
    }

    fn rollback(&self, anchor: &str, tickets: [u32; 3]) -> io::Result<()> {
        trans(&self.0, Trans::Rollback, anchor, tickets).map(drop)
    }

    fn begin_addrs(&self) -> io::Result<u32> {
        begin_addrs(&self.0)
    }

    fn add_addr(&self, pool: u32, ip: IpAddr) -> io::Result<()> {
        add_addr(&self.0, pool, ip)
    }

    fn add_rule(&self, request: &NvList) -> io::Result<()> {
        add_rule(&self.0, request)
    }

    fn get_rule(&self, request: &NvList) -> io::Result<NvList> {
        get_rule(&self.0, request, ANSWER_ROOM)
    }

    fn kill_states(&self, request: &NvList) -> io::Result<()> {
        kill_states(&self.0, request)
    }
}
