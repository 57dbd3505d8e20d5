//! The `admin` section: where the live-sessions API is served, the bearer tokens it asks for,
//! and how many connections it takes at once.

use super::network::socket_addr;
use super::raw::RawAdmin;
use super::{invalid, ConfigError};
use std::net::SocketAddr;
use std::path::PathBuf;

/// An admin connection is one person or script; a handful at once is plenty.
const MAX_CONNECTIONS: usize = 256;

pub(super) struct Admin {
    /// `None` keeps the API off.
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub max_connections: usize,
}

pub(super) fn admin(raw: &RawAdmin) -> Result<Admin, ConfigError> {
    let listen = raw.listen.as_deref().map(|s| socket_addr(s, "admin.listen")).transpose()?;
    let token_file = match raw.token_file.as_deref() {
        Some(p) if !p.starts_with('/') => {
            return Err(invalid("admin.token_file", format!("`{p}` is not an absolute path")))
        }
        p => p.map(PathBuf::from),
    };
    // Without a token anyone who reaches the listener may end sessions: only this host may.
    if let Some(addr) = listen {
        if token_file.is_none() && !crate::addr::canonical_ip(addr.ip()).is_loopback() {
            return Err(invalid(
                "admin.listen",
                format!("`{addr}` is not a loopback address; listening beyond this host needs admin.token_file"),
            ));
        }
    }
    if !(1..=MAX_CONNECTIONS).contains(&raw.max_connections) {
        return Err(invalid("admin.max_connections", format!("must be 1 to {MAX_CONNECTIONS}")));
    }
    Ok(Admin { listen, token_file, max_connections: raw.max_connections })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: Option<&str>, token: Option<&str>) -> RawAdmin {
        RawAdmin { listen: listen.map(Into::into), token_file: token.map(Into::into), ..RawAdmin::default() }
    }

    fn err(r: RawAdmin) -> String {
        admin(&r).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn without_a_token_only_loopback_may_listen() {
        assert!(admin(&raw(Some("127.0.0.1:2122"), None)).is_ok());
        assert!(admin(&raw(Some("[::1]:2122"), None)).is_ok());
        assert!(err(raw(Some("0.0.0.0:2122"), None)).contains("`admin.listen`"));
        assert!(err(raw(Some("[::]:2122"), None)).contains("admin.token_file"));
        assert!(err(raw(Some("203.0.113.1:2122"), None)).contains("`admin.listen`"));
        assert!(admin(&raw(Some("0.0.0.0:2122"), Some("/etc/ftpgate/admin.token"))).is_ok());
    }

    #[test]
    fn bad_values_name_their_field() {
        assert!(err(raw(Some("nowhere"), None)).contains("`admin.listen`"));
        assert!(err(raw(None, Some("admin.token"))).contains("`admin.token_file`"));
        let r = RawAdmin { max_connections: 0, ..RawAdmin::default() };
        assert!(err(r).contains("`admin.max_connections`"));
    }

    #[test]
    fn off_by_default() {
        let a = admin(&RawAdmin::default()).unwrap();
        assert_eq!((a.listen, a.token_file, a.max_connections), (None, None, 8));
    }
}
