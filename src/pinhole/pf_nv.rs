//! FreeBSD's pf as a pinhole [`Device`]: its rules are nvlists (`DIOCADDRULENV`), each
//! translation rule's address goes into a pool buffer first (`DIOCBEGINADDRS`,
//! `DIOCADDADDR`), and one transaction covers an anchor's rdr, nat and filter rulesets.

use super::nvlist::NvList;
use super::pf_dev::{Device, Rules};
use super::pf_rules::{self, Ruleset};
use super::Pinhole;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// FreeBSD's pf ioctls the pinholes use (`pf_ffi` on FreeBSD; a recording fake in tests).
pub trait NvDevice: Send + Sync + 'static {
    /// `DIOCXBEGIN` for the rdr, nat and filter rulesets of `anchor`: their tickets.
    fn begin(&self, anchor: &str) -> io::Result<[u32; 3]>;
    fn commit(&self, anchor: &str, tickets: [u32; 3]) -> io::Result<()>;
    fn rollback(&self, anchor: &str, tickets: [u32; 3]) -> io::Result<()>;
    /// `DIOCBEGINADDRS`: the pool ticket for the next rule.
    fn begin_addrs(&self) -> io::Result<u32>;
    fn add_addr(&self, pool: u32, ip: IpAddr) -> io::Result<()>;
    fn add_rule(&self, request: &NvList) -> io::Result<()>;
    fn get_rule(&self, request: &NvList) -> io::Result<NvList>;
    fn kill_states(&self, request: &NvList) -> io::Result<()>;
}

impl<T: NvDevice> Device for T {
    type Tickets = [u32; 3];
    type Rules = Ruleset;

    fn begin(&self, anchor: &str) -> io::Result<[u32; 3]> {
        NvDevice::begin(self, anchor)
    }

    fn commit(&self, anchor: &str, tickets: [u32; 3]) -> io::Result<()> {
        NvDevice::commit(self, anchor, tickets)
    }

    fn rollback(&self, anchor: &str, tickets: [u32; 3]) -> io::Result<()> {
        NvDevice::rollback(self, anchor, tickets)
    }

    /// Per rule its pool (the translation's address), then the rule.
    fn add_rules(&self, anchor: &str, rules: &Ruleset, tickets: [u32; 3]) -> io::Result<()> {
        for (i, (_, part)) in rules.parts().iter().enumerate() {
            for rule in part.iter() {
                let pool = self.begin_addrs()?;
                if let Some(ip) = rule.pool_address() {
                    self.add_addr(pool, ip)?;
                }
                self.add_rule(&pf_rules::add_rule(rule, anchor, tickets[i], pool))?;
            }
        }
        Ok(())
    }

    /// `DIOCGETRULENV` for filter rule 0 under the filter ruleset's committed ticket.
    fn states_created(&self, anchor: &str, tickets: [u32; 3]) -> io::Result<Option<u64>> {
        let answer = self.get_rule(&pf_rules::get_rule(anchor, tickets[2], 0))?;
        Ok(pf_rules::states_created(&answer))
    }

    fn kill_states(&self, p: &Pinhole) -> io::Result<()> {
        pf_rules::kill_states(p).iter().map(|kill| NvDevice::kill_states(self, kill)).fold(Ok(()), Result::and)
    }
}

impl Rules for Ruleset {
    fn pinhole(p: &Pinhole) -> Self {
        pf_rules::pinhole(p)
    }

    fn cut(p: &Pinhole) -> Self {
        pf_rules::cut(p)
    }

    fn source_nat(local_port: u16, to: SocketAddr, appear_as: IpAddr, as_port: Option<u16>) -> Self {
        pf_rules::source_nat(local_port, to, appear_as, as_port)
    }
}
