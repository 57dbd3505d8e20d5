//! The address forms that name data endpoints: `PORT`, `EPRT` (RFC 2428), `227` and `229`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use thiserror::Error;

pub type HostPort = SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("expected six comma-separated numbers h1,h2,h3,h4,p1,p2")]
    BadHostPort,
    #[error("number out of range 0-255")]
    OutOfRange,
    #[error("port 0")]
    PortZero,
    #[error("EPRT argument is not |af|address|port|")]
    BadEprt,
    #[error("unsupported address family (RFC 2428 knows 1 and 2)")]
    BadFamily,
    #[error("address does not match its family")]
    FamilyMismatch,
    #[error("no (|||port|) in 229 reply")]
    No229Port,
    #[error("no h1,h2,h3,h4,p1,p2 in 227 reply")]
    No227Address,
}

/// Parses exactly `h1,h2,h3,h4,p1,p2` (the `PORT` argument), spaces around numbers allowed.
pub fn parse_port_arg(arg: &str) -> Result<SocketAddrV4, AddressError> {
    let mut n = [0u8; 6];
    let mut parts = arg.split(',');
    for slot in &mut n {
        let p = parts.next().ok_or(AddressError::BadHostPort)?.trim();
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddressError::BadHostPort);
        }
        let v: u16 = p.parse().map_err(|_| AddressError::BadHostPort)?;
        *slot = u8::try_from(v).map_err(|_| AddressError::OutOfRange)?;
    }
    if parts.next().is_some() {
        return Err(AddressError::BadHostPort);
    }
    let port = u16::from_be_bytes([n[4], n[5]]);
    if port == 0 {
        return Err(AddressError::PortZero);
    }
    Ok(SocketAddrV4::new(Ipv4Addr::new(n[0], n[1], n[2], n[3]), port))
}

/// `h1,h2,h3,h4,p1,p2`.
pub fn encode_port_arg(addr: SocketAddrV4) -> String {
    let [a, b, c, d] = addr.ip().octets();
    let [p1, p2] = addr.port().to_be_bytes();
    format!("{a},{b},{c},{d},{p1},{p2}")
}

/// Parses `<d>af<d>addr<d>port<d>` where `d` is any character from 33 to 126.
pub fn parse_eprt_arg(arg: &str) -> Result<SocketAddr, AddressError> {
    let d = arg.chars().next().ok_or(AddressError::BadEprt)?;
    if !(33..=126).contains(&(d as u32)) {
        return Err(AddressError::BadEprt);
    }
    let fields: Vec<&str> = arg.split(d).collect();
    // "|1|a|p|" splits into ["", "1", "a", "p", ""].
    if fields.len() != 5 || !fields[0].is_empty() || !fields[4].is_empty() {
        return Err(AddressError::BadEprt);
    }
    let port = parse_decimal_port(fields[3]).ok_or(AddressError::BadEprt)?;
    let ip: IpAddr = match fields[1] {
        "1" => IpAddr::V4(fields[2].parse::<Ipv4Addr>().map_err(|_| AddressError::FamilyMismatch)?),
        "2" => IpAddr::V6(fields[2].parse::<Ipv6Addr>().map_err(|_| AddressError::FamilyMismatch)?),
        _ => return Err(AddressError::BadFamily),
    };
    Ok(SocketAddr::new(ip, port))
}

/// `|1|a.b.c.d|port|` or `|2|v6|port|`.
pub fn encode_eprt_arg(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("|1|{}|{}|", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("|2|{}|{}|", a.ip(), a.port()),
    }
}

fn parse_decimal_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

/// Finds the address in a `227` text. Servers vary: `(h1,…,p2)`, `=h1,…,p2`, no parentheses,
/// trailing dots and words. The first run of six comma-separated numbers is taken.
pub fn parse_227(text: &[u8]) -> Result<SocketAddrV4, AddressError> {
    let text = String::from_utf8_lossy(text);
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()) {
            if let Some(end) = six_numbers_end(b, i) {
                return parse_port_arg(&text[i..end]);
            }
        }
        i += 1;
    }
    Err(AddressError::No227Address)
}

/// If six comma-separated 1-3 digit numbers start at `start`, where they end.
fn six_numbers_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    for n in 0..6 {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        let s = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == s || i - s > 3 {
            return None;
        }
        if n < 5 {
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            if b.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
        }
    }
    Some(i)
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).`
pub fn encode_227(addr: SocketAddrV4) -> Vec<u8> {
    format!("227 Entering Passive Mode ({}).\r\n", encode_port_arg(addr)).into_bytes()
}

/// Finds the port in a `229` text: `(<d><d><d>port<d>)` with any delimiter from 33 to 126.
pub fn parse_229(text: &[u8]) -> Result<u16, AddressError> {
    let mut i = 0;
    while i + 4 < text.len() {
        let d = text[i];
        if (33..=126).contains(&d)
            && !d.is_ascii_digit()
            && text[i + 1] == d
            && text[i + 2] == d
            && (i == 0 || text[i - 1] != d)
        {
            let digits_start = i + 3;
            let mut j = digits_start;
            while j < text.len() && text[j].is_ascii_digit() {
                j += 1;
            }
            if j > digits_start && text.get(j) == Some(&d) {
                let s = std::str::from_utf8(&text[digits_start..j]).ok();
                return s.and_then(parse_decimal_port).ok_or(AddressError::No229Port);
            }
        }
        i += 1;
    }
    Err(AddressError::No229Port)
}

/// `229 Entering Extended Passive Mode (|||port|)`.
pub fn encode_229(port: u16) -> Vec<u8> {
    format!("229 Entering Extended Passive Mode (|||{port}|)\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_round_trip_and_strictness() {
        let a = parse_port_arg("203,0,113,7,195,80").unwrap();
        assert_eq!(a, "203.0.113.7:50000".parse().unwrap());
        assert_eq!(encode_port_arg(a), "203,0,113,7,195,80");
        assert_eq!(parse_port_arg(" 203, 0,113,7,195,80").unwrap(), a);
        assert_eq!(parse_port_arg("203,0,113,7,195"), Err(AddressError::BadHostPort));
        assert_eq!(parse_port_arg("203,0,113,7,195,80,1"), Err(AddressError::BadHostPort));
        assert_eq!(parse_port_arg("256,0,113,7,195,80"), Err(AddressError::OutOfRange));
        assert_eq!(parse_port_arg("203,0,113,7,0,0"), Err(AddressError::PortZero));
        assert_eq!(parse_port_arg("203,0,113,+7,1,1"), Err(AddressError::BadHostPort));
        assert_eq!(parse_port_arg("0203,0,113,7,1,1"), Err(AddressError::BadHostPort));
    }

    #[test]
    fn eprt_forms() {
        assert_eq!(parse_eprt_arg("|1|203.0.113.7|5282|").unwrap(), "203.0.113.7:5282".parse().unwrap());
        assert_eq!(parse_eprt_arg("!2!2001:db8:1::2!5282!").unwrap(), "[2001:db8:1::2]:5282".parse().unwrap());
        assert_eq!(parse_eprt_arg("|3|x|1|"), Err(AddressError::BadFamily));
        assert_eq!(parse_eprt_arg("|1|2001:db8::1|1|"), Err(AddressError::FamilyMismatch));
        assert_eq!(parse_eprt_arg("|1|203.0.113.7|0|"), Err(AddressError::BadEprt));
        assert_eq!(parse_eprt_arg("|1|203.0.113.7|70000|"), Err(AddressError::BadEprt));
        assert_eq!(parse_eprt_arg("|1|203.0.113.7|1|x"), Err(AddressError::BadEprt));
        assert_eq!(parse_eprt_arg(" 1 203.0.113.7 1 "), Err(AddressError::BadEprt));
        let v6: SocketAddr = "[2001:db8::5]:40000".parse().unwrap();
        assert_eq!(parse_eprt_arg(&encode_eprt_arg(v6)).unwrap(), v6);
    }

    #[test]
    fn replies_227_as_servers_send_them() {
        let want: SocketAddrV4 = "198.51.100.2:50001".parse().unwrap();
        for t in [
            &b"Entering Passive Mode (198,51,100,2,195,81)."[..],
            b"Entering Passive Mode (198,51,100,2,195,81)",
            b"Entering Passive Mode 198,51,100,2,195,81",
            b"Entering passive mode =198,51,100,2,195,81",
            b"PASV ok (198, 51, 100, 2, 195, 81) now",
            b"2 servers said 198,51,100,2,195,81",
        ] {
            assert_eq!(parse_227(t).unwrap(), want, "{}", String::from_utf8_lossy(t));
        }
        assert!(parse_227(b"Entering Passive Mode").is_err());
        assert!(parse_227(b"(1,2,3,4,5)").is_err());
        assert!(parse_227(b"(1,2,3,4,5,1234)").is_err());
        assert_eq!(encode_227(want), b"227 Entering Passive Mode (198,51,100,2,195,81).\r\n");
    }

    #[test]
    fn replies_229_with_any_delimiter() {
        assert_eq!(parse_229(b"Entering Extended Passive Mode (|||50000|)").unwrap(), 50000);
        assert_eq!(parse_229(b"Entering Extended Passive Mode (!!!6446!)").unwrap(), 6446);
        assert_eq!(parse_229(b"EPSV ok (|||50000|) yes").unwrap(), 50000);
        assert!(parse_229(b"Entering Extended Passive Mode (|||0|)").is_err());
        assert!(parse_229(b"Entering Extended Passive Mode (|||99999|)").is_err());
        assert!(parse_229(b"Entering Extended Passive Mode").is_err());
        assert!(parse_229(b"(|||5000)").is_err());
        assert_eq!(encode_229(50000), b"229 Entering Extended Passive Mode (|||50000|)\r\n");
    }
}
