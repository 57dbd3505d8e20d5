//! OpenBSD's pf ioctls the pinholes use. The structures are `pf_obsd_abi`'s (OpenBSD's
//! sys/net/pfvar.h rev. 1.543, 2025-04-14, for LP64); the request codes below, which encode
//! their sizes, were read off the same header (`_IOWR`) and are asserted, so a kernel with
//! another layout refuses the call (ENOTTY) instead of misreading it.
//!
//! pf keeps its transactions per open `/dev/pf` (sys/net/pf_ioctl.c since 2023): the
//! rule-adding and the commit go through the one descriptor that began them, and reading
//! rules opens a transaction of its own (`DIOCGETRULES`) that `DIOCXEND` closes.
//!
//! This module holds the OpenBSD pinholes' `unsafe`: each ioctl call.

use super::pf_anchors::{self, errno, Dev, Trans};
use super::pf_dev::Device;
use super::pf_obsd::{self, Rule};
use super::pf_obsd_abi::{PfiocRule, PfiocStateKill};
use super::Pinhole;
use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;

// The request codes of pfvar.h 1.543, as gcc computed them from its _IOWR definitions
// (the transactions' are asserted in pf_anchors).
const _: () = assert!(nix::request_code_readwrite!(b'D', 4, size_of::<PfiocRule>()) == 0xcd50_4404);
const _: () = assert!(nix::request_code_readwrite!(b'D', 6, size_of::<PfiocRule>()) == 0xcd50_4406);
const _: () = assert!(nix::request_code_readwrite!(b'D', 7, size_of::<PfiocRule>()) == 0xcd50_4407);
const _: () = assert!(nix::request_code_readwrite!(b'D', 41, size_of::<PfiocStateKill>()) == 0xc0e0_4429);
const _: () = assert!(nix::request_code_readwrite!(b'D', 100, size_of::<u32>()) == 0xc004_4464);

/// `PF_TRANS_RULESET`: a transaction element that replaces an anchor's rules.
const PF_TRANS_RULESET: i32 = 0;

mod ioctls {
    use super::*;
    nix::ioctl_readwrite!(add_rule, b'D', 4, PfiocRule);
    nix::ioctl_readwrite!(get_rules, b'D', 6, PfiocRule);
    nix::ioctl_readwrite!(get_rule, b'D', 7, PfiocRule);
    nix::ioctl_readwrite!(kill_states, b'D', 41, PfiocStateKill);
    nix::ioctl_readwrite!(xend, b'D', 100, u32);
}

impl Dev {
    /// One transaction step on the one element that covers `anchor`'s rules.
    fn trans(&self, step: Trans, anchor: &str, ticket: u32) -> io::Result<u32> {
        pf_anchors::transaction(&self.0, step, [(PF_TRANS_RULESET, anchor, ticket)]).map(|[t]| t)
    }

    /// Closes the rule-reading transaction `ticket` (pf keeps it until then).
    fn end(&self, ticket: u32) {
        let mut t = ticket;
        // SAFETY: `self.0` is an open /dev/pf descriptor; `t` is a `u32`, the type DIOCXEND
        // reads (and may write back), exclusively borrowed through the call.
        if let Err(e) = unsafe { ioctls::xend(self.0.as_raw_fd(), &mut t) } {
            tracing::warn!(error = %errno("DIOCXEND", e), "pf rule-reading transaction not closed");
        }
    }
}

impl Device for Dev {
    /// One transaction element: the anchor's (only) ruleset.
    type Tickets = u32;
    type Rules = Vec<Rule>;

    fn begin(&self, anchor: &str) -> io::Result<u32> {
        self.trans(Trans::Begin, anchor, 0)
    }

    fn commit(&self, anchor: &str, ticket: u32) -> io::Result<()> {
        self.trans(Trans::Commit, anchor, ticket).map(drop)
    }

    fn rollback(&self, anchor: &str, ticket: u32) -> io::Result<()> {
        self.trans(Trans::Rollback, anchor, ticket).map(drop)
    }

    fn add_rules(&self, anchor: &str, rules: &Vec<Rule>, ticket: u32) -> io::Result<()> {
        for rule in rules {
            let mut req = pf_obsd::add_rule(rule, anchor, ticket)?;
            // SAFETY: `self.0` is an open /dev/pf descriptor; `req` is a boxed, fully
            // initialised `PfiocRule` whose size is asserted to be `struct pfioc_rule`'s (the
            // request code encodes it), exclusively borrowed through the call; the kernel
            // copies it in and replaces the pointer fields in its own copy only.
            unsafe { ioctls::add_rule(self.0.as_raw_fd(), &mut *req) }.map_err(|e| errno("DIOCADDRULE", e))?;
        }
        Ok(())
    }

    /// `DIOCGETRULES` opens a reading transaction on the anchor's active rules, the first
    /// `DIOCGETRULE` answers its first rule (the peer's `pass in`), `DIOCXEND` closes it.
    fn states_created(&self, anchor: &str, _: u32) -> io::Result<Option<u64>> {
        let mut req = pf_obsd::get_rules(anchor)?;
        // SAFETY: as in `add_rules`: a boxed `PfiocRule` of the asserted size; the kernel
        // writes its `nr` and `ticket`.
        unsafe { ioctls::get_rules(self.0.as_raw_fd(), &mut *req) }.map_err(|e| errno("DIOCGETRULES", e))?;
        let ticket = req.ticket;
        let made = if req.nr == 0 {
            Ok(None)
        } else {
            // SAFETY: as above; the kernel copies one `struct pf_rule` into `req.rule` and the
            // rule's anchor call into `req.anchor_call`, within the structure; any bit pattern
            // is valid for their integer and array fields.
            unsafe { ioctls::get_rule(self.0.as_raw_fd(), &mut *req) }
                .map(|_| Some(u64::from(req.rule.states_tot)))
                .map_err(|e| errno("DIOCGETRULE", e))
        };
        self.end(ticket);
        made
    }

    fn kill_states(&self, p: &Pinhole) -> io::Result<()> {
        pf_obsd::kill_states(p)
            .map(|mut kill| {
                // SAFETY: `self.0` is an open /dev/pf descriptor; `kill` is an initialised
                // `PfiocStateKill` of the asserted size, exclusively borrowed through the
                // call; the kernel writes back only `psk_killed`.
                unsafe { ioctls::kill_states(self.0.as_raw_fd(), &mut kill) }
                    .map(drop)
                    .map_err(|e| errno("DIOCKILLSTATES", e))
            })
            .into_iter()
            .fold(Ok(()), Result::and)
    }
}
