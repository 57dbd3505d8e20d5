//! The kernel's netlink answers as messages: one walk over a datagram that every reader of the
//! pinhole socket shares (acknowledgements, set elements, counters, conntrack entries).

use std::io;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const HEADER: usize = 16;

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub kind: u16,
    pub seq: u32,
    /// The whole message, header included (what a message parser takes).
    pub bytes: &'a [u8],
}

impl<'a> Msg<'a> {
    /// What follows the netlink header.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER..]
    }

    /// For an error message: `Ok` for an acknowledgement, the kernel's error otherwise.
    pub fn status(&self) -> Option<io::Result<()>> {
        if self.kind != NLMSG_ERROR {
            return None;
        }
        let code = self.payload().get(..4).and_then(|b| b.try_into().ok()).map_or(0, i32::from_ne_bytes);
        Some(if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) })
    }

    pub fn is_done(&self) -> bool {
        self.kind == NLMSG_DONE
    }
}

/// Walks netlink attributes: (type without flags, value) pairs; a malformed tail ends it.
pub fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16::from_ne_bytes(b.get(..2)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(b.get(2..4)?.try_into().ok()?) & 0x3fff;
        let value = b.get(4..len)?;
        b = b.get((len + 3) & !3..).unwrap_or(&[]);
        Some((kind, value))
    })
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed netlink reply: {what}"))
}

/// The messages of one datagram, in order; a malformed one ends the walk with an error.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = io::Result<Msg<'_>>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let header = |at: usize| buf.get(at..at + 4).and_then(|b| b.try_into().ok());
        let (Some(len), Some(kind_seq)) = (header(0).map(u32::from_ne_bytes), header(4)) else {
            buf = &[];
            return Some(Err(malformed("a truncated header")));
        };
        let len = len as usize;
        let Some(bytes) = buf.get(..len).filter(|_| len >= HEADER) else {
            buf = &[];
            return Some(Err(malformed("a length beyond the datagram")));
        };
        let kind = u16::from_ne_bytes([kind_seq[0], kind_seq[1]]);
        let seq = header(8).map_or(0, u32::from_ne_bytes);
        // Messages are aligned to 4 bytes; the last one may end the datagram unpadded.
        buf = buf.get((len + 3) & !3..).unwrap_or(&[]);
        Some(Ok(Msg { kind, seq, bytes }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((HEADER + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn a_datagram_is_walked_message_by_message() {
        let mut d = msg(0x0100, 7, &[1, 2, 3]);
        d.extend(msg(NLMSG_ERROR, 8, &(-libc::ENOENT).to_ne_bytes()));
        d.extend(msg(NLMSG_ERROR, 9, &0i32.to_ne_bytes()));
        d.extend(msg(NLMSG_DONE, 10, &[]));
        let all: Vec<Msg<'_>> = messages(&d).collect::<io::Result<_>>().unwrap();
        assert_eq!(all.iter().map(|m| (m.kind, m.seq)).collect::<Vec<_>>(), [(0x0100, 7), (2, 8), (2, 9), (3, 10)]);
        assert_eq!(all[0].payload(), [1, 2, 3]);
        assert!(all[0].status().is_none());
        assert_eq!(all[1].status().unwrap().unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert!(all[2].status().unwrap().is_ok());
        assert!(all[3].is_done());
    }

    #[test]
    fn a_malformed_datagram_ends_in_an_error() {
        let d = msg(0x0100, 7, &[1, 2, 3, 4]);
        // Cut inside the message, inside the header, and a length below the header's.
        assert!(messages(&d[..18]).next().unwrap().is_err());
        assert!(messages(&d[..6]).next().unwrap().is_err());
        let mut short = d.clone();
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        let mut it = messages(&short);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none(), "the walk ends at the first error");
    }
}
