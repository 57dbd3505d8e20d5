//! Reverse mode: nothing is diverted, every client goes to the configured upstream.

use super::{InterceptError, Interception};
use crate::addr::{LocalAddr, OriginalDst};
use std::net::SocketAddr;
use std::os::fd::AsFd;

#[derive(Debug)]
pub struct Reverse;

impl Interception for Reverse {
    fn original_dst(
        &self,
        _sock: &dyn AsFd,
        _client: SocketAddr,
        _local: LocalAddr,
    ) -> Result<Option<OriginalDst>, InterceptError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{dst, local};
    use super::*;

    #[test]
    fn reverse_mode_needs_nothing_and_binds_where_clients_arrive() {
        assert!(Reverse.needs().is_empty());
        assert!(!Reverse.transparent_listeners());
        let bind = Reverse.client_data_listener(local("203.0.113.1:21"), None);
        assert_eq!((bind.ip, bind.transparent), ("203.0.113.1".parse().unwrap(), false));
    }

    #[test]
    fn reverse_mode_sees_a_loop_only_in_its_own_listeners() {
        let listening = ["203.0.113.1:21".parse().unwrap()];
        assert!(Reverse.is_loop(dst("203.0.113.1:21"), local("203.0.113.1:21"), &listening));
        assert!(!Reverse.is_loop(dst("198.51.100.2:21"), local("203.0.113.1:21"), &listening));
    }

    #[test]
    fn reverse_mode_has_no_original_destination() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let here = LocalAddr(s.local_addr().unwrap());
        assert!(Reverse.original_dst(&s, peer, here).unwrap().is_none());
        drop(c);
    }
}
