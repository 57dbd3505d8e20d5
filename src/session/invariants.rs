//! What every run of the control core must respect, whatever the input: one checker for the
//! fuzz target, the property tests and the unit tests, fed every action the core hands out.

use super::{Action, DataRequest, FxpRule, Note, SessionPolicy};
use crate::addr::canonical_ip;
use crate::protocol::TelnetFilter;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug)]
pub struct Checker {
    client: IpAddr,
    /// `None` until the login phase has connected (forward proxy, routes).
    upstream: Option<IpAddr>,
    /// A [`Action::Connect`] the driver has not answered.
    connect_pending: bool,
    fxp: Vec<FxpRule>,
    last_slot: Option<u64>,
    /// Slots whose last bytes ended inside a line.
    open_lines: BTreeSet<u64>,
    opened: BTreeSet<u64>,
    dropped: BTreeSet<u64>,
    /// After the client's control connection switched to TLS, replies start at this slot:
    /// nothing more of a slot answered in clear text goes out inside TLS.
    tls_floor: Option<u64>,
    closed: bool,
}

impl Checker {
    pub fn new(client: SocketAddr, upstream: SocketAddr, policy: &SessionPolicy) -> Self {
        Self {
            client: canonical_ip(client.ip()),
            upstream: Some(canonical_ip(upstream.ip())),
            connect_pending: false,
            fxp: policy.fxp.clone(),
            last_slot: None,
            open_lines: BTreeSet::new(),
            opened: BTreeSet::new(),
            dropped: BTreeSet::new(),
            tls_floor: None,
            closed: false,
        }
    }

    /// For a session that starts in the login phase, without a server.
    pub fn with_login(client: SocketAddr, policy: &SessionPolicy) -> Self {
        Self { upstream: None, ..Self::new(client, client, policy) }
    }

    /// The driver reports the connection [`Action::Connect`] asked for.
    pub fn connected(&mut self, upstream: SocketAddr) -> Result<(), String> {
        if !std::mem::take(&mut self.connect_pending) {
            return Err(format!("connected to {upstream} without being asked"));
        }
        self.upstream = Some(canonical_ip(upstream.ip()));
        Ok(())
    }

    /// The driver reports that the connection asked for failed.
    pub fn connect_failed(&mut self) -> Result<(), String> {
        if !std::mem::take(&mut self.connect_pending) {
            return Err("a connection failed that was never asked for".into());
        }
        Ok(())
    }

    /// True while an [`Action::Connect`] waits for the driver's answer.
    pub fn connect_pending(&self) -> bool {
        self.connect_pending
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Checks one action, in the order the core handed them out.
    pub fn check(&mut self, a: &Action) -> Result<(), String> {
        if self.closed {
            return Err(format!("action after Close: {a:?}"));
        }
        match a {
            Action::ToServer(p) | Action::ToServerUrgent(p) => {
                if self.upstream.is_none() {
                    return Err(format!("sent toward a server before one is connected: {a:?}"));
                }
                let body = p.strip_suffix(b"\r\n").ok_or_else(|| format!("no CRLF: {a:?}"))?;
                if body.is_empty() || body.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(format!("not exactly one command line: {a:?}"));
                }
                telnet_plain(p).map_err(|e| format!("{e}: {a:?}"))?;
            }
            Action::ToClient { slot, bytes } => self.client_reply(*slot, bytes)?,
            Action::ToClientOutOfBand(_) => {}
            Action::OpenData { id, request } => {
                if !self.opened.insert(id.0) || self.opened.iter().any(|&o| o > id.0) {
                    return Err(format!("data channel id reused or going backwards: {a:?}"));
                }
                self.data_endpoints(request)?;
            }
            Action::DataCarries { id, .. } => {
                if !self.opened.contains(&id.0) || self.dropped.contains(&id.0) {
                    return Err(format!("a transfer announced on a channel that is not open: {a:?}"));
                }
            }
            Action::DropData(id) => {
                if !self.opened.contains(&id.0) || !self.dropped.insert(id.0) {
                    return Err(format!("drop of a channel never opened or already dropped: {a:?}"));
                }
            }
            Action::Note(Note::TransferAborted { id, .. }) => {
                if !self.opened.contains(&id.0) || self.dropped.contains(&id.0) {
                    return Err(format!("an aborted transfer on a channel that is not open: {a:?}"));
                }
            }
            Action::StartTls(super::Side::Client) => {
                // The switch comes at the end of a line: the 234 went out whole.
                if !self.open_lines.is_empty() {
                    return Err(format!("TLS starts inside a reply line: {a:?}"));
                }
                self.tls_floor = Some(self.last_slot.map_or(0, |s| s + 1));
            }
            Action::StartTls(super::Side::Server) => {}
            Action::Note(_) => {}
            Action::Connect(_) => {
                if self.upstream.is_some() || self.connect_pending {
                    return Err(format!("a second server asked for: {a:?}"));
                }
                self.connect_pending = true;
            }
            Action::Close(_) => self.closed = true,
        }
        Ok(())
    }

    /// Replies go out in slot order, never back to an earlier slot, and a slot only gives way
    /// to the next at the end of a line.
    fn client_reply(&mut self, slot: u64, bytes: &[u8]) -> Result<(), String> {
        if let Some(last) = self.last_slot {
            if slot < last {
                return Err(format!("reply for slot {slot} after slot {last}: {:?}", String::from_utf8_lossy(bytes)));
            }
            if slot > last && self.open_lines.contains(&last) {
                return Err(format!("slot {slot} starts while slot {last} is inside a line"));
            }
        }
        if bytes.is_empty() {
            return Err(format!("empty reply for slot {slot}"));
        }
        if self.tls_floor.is_some_and(|floor| slot < floor) {
            return Err(format!("reply for slot {slot}, answered in clear text, after the switch to TLS"));
        }
        self.last_slot = Some(slot);
        if bytes.ends_with(b"\n") {
            self.open_lines.remove(&slot);
        } else {
            self.open_lines.insert(slot);
        }
        Ok(())
    }

    fn own_client(&self, named: SocketAddr) -> Result<(), String> {
        let ip = canonical_ip(named.ip());
        let allowed =
            ip == self.client || self.fxp.iter().any(|r| r.client.contains(&self.client) && r.data.contains(&ip));
        if !allowed || named.port() < 1024 {
            return Err(format!("data connection toward {named}: not the client's own unprivileged port"));
        }
        Ok(())
    }

    fn own_server(&self, named: SocketAddr) -> Result<(), String> {
        if Some(canonical_ip(named.ip())) != self.upstream || named.port() < 1024 {
            return Err(format!("data connection toward {named}: not the server's own unprivileged port"));
        }
        Ok(())
    }

    fn data_endpoints(&self, r: &DataRequest) -> Result<(), String> {
        match *r {
            DataRequest::Passive { server_data } => self.own_server(server_data),
            DataRequest::Active { client_data } => self.own_client(client_data),
            DataRequest::Listeners => Ok(()),
            DataRequest::Connect { server_data, client_data } => {
                self.own_server(server_data)?;
                self.own_client(client_data)
            }
        }
    }
}

/// What goes to the server reads the same to a server that interprets Telnet (RFC 854) and to
/// the gateway, which checked it as data: decoded by the gateway's own Telnet filter, the line
/// holds no Telnet command (every 0xFF is escaped as `IAC IAC`) and still ends in CRLF (no
/// subnegotiation swallowed it). A lone IAC would let the server strip or act on bytes the
/// policy saw as part of the argument.
fn telnet_plain(line: &[u8]) -> Result<(), String> {
    let (mut data, mut events) = (Vec::with_capacity(line.len()), Vec::new());
    TelnetFilter::new().feed(line, &mut data, &mut events);
    if !events.is_empty() || !data.ends_with(b"\r\n") {
        return Err(format!("a Telnet-aware server reads Telnet commands in it ({events:?})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::DataId;

    fn checker() -> Checker {
        Checker::new(
            "203.0.113.2:40000".parse().unwrap(),
            "198.51.100.2:21".parse().unwrap(),
            &SessionPolicy::default(),
        )
    }

    fn to_client(slot: u64, s: &str) -> Action {
        Action::ToClient { slot, bytes: s.as_bytes().to_vec() }
    }

    #[test]
    fn it_catches_each_violation() {
        let mut c = checker();
        assert!(c.check(&Action::ToServer(b"NOOP\r\nDELE x\r\n".to_vec())).is_err());
        assert!(c.check(&Action::ToServer(b"NOOP".to_vec())).is_err());
        c.check(&to_client(1, "200 a\r\n")).unwrap();
        assert!(c.check(&to_client(0, "220 late\r\n")).is_err());
        c.check(&to_client(2, "211-part")).unwrap();
        assert!(c.check(&to_client(3, "200 b\r\n")).is_err());
        let bounce = DataRequest::Active { client_data: "198.51.100.9:5000".parse().unwrap() };
        assert!(c.check(&Action::OpenData { id: DataId(1), request: bounce }).is_err());
        let low = DataRequest::Passive { server_data: "198.51.100.2:25".parse().unwrap() };
        assert!(c.check(&Action::OpenData { id: DataId(2), request: low }).is_err());
        assert!(c.check(&Action::DropData(DataId(9))).is_err());
        // A lone IAC: a Telnet-aware server reads `IAC IP` and strips it from the name.
        assert!(c.check(&Action::ToServer(b"USER blo\xff\xf4cked\r\n".to_vec())).is_err());
        assert!(c.check(&Action::ToServer(b"RETR \xff\xfa\r\n".to_vec())).is_err());
        assert!(c.check(&Action::ToServerUrgent(b"ABOR \xff\r\n".to_vec())).is_err());
        c.check(&Action::Close(crate::session::Outcome::ClientQuit)).unwrap();
        assert!(c.check(&Action::ToServer(b"NOOP\r\n".to_vec())).is_err());
    }

    #[test]
    fn it_accepts_a_well_behaved_run() {
        let mut c = checker();
        let ok = DataRequest::Passive { server_data: "198.51.100.2:50000".parse().unwrap() };
        for a in [
            to_client(0, "220 hi\r\n"),
            Action::ToServer(b"PASV\r\n".to_vec()),
            Action::ToServer(b"USER blo\xff\xff\xf4cked\r\n".to_vec()),
            Action::OpenData { id: DataId(1), request: ok },
            to_client(1, "227 ok\r\n"),
            Action::DropData(DataId(1)),
            to_client(2, "211-a\r\n"),
            to_client(2, "211 b\r\n"),
        ] {
            c.check(&a).unwrap();
        }
    }
}
