//! The optional transfer log in the xferlog(5) format that FTP servers write, so existing log
//! tools read ftpgate's transfers too: one line per file transfer.

use crate::logging::is_bidi_control;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};

/// `Mon Nov 22 05:00:00 2026`, as ctime(3) writes it.
const CTIME: &[FormatItem<'static>] =
    format_description!("[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]");

pub struct XferLog {
    file: Mutex<File>,
}

/// One completed (or cut short) file transfer.
pub struct Entry<'a> {
    pub client: IpAddr,
    /// `None` when ftpgate does not know (the kernel carried the data): written "unknown".
    pub bytes: Option<u64>,
    pub duration: Duration,
    pub path: &'a str,
    pub binary: bool,
    /// RETR: the file went out of the server.
    pub outgoing: bool,
    pub user: &'a str,
    /// Every byte delivered (`c`); otherwise cut, timed out or never connected (`i`).
    pub complete: bool,
}

impl XferLog {
    /// Opens (creates) the file for appending; done before privileges are dropped.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self { file: Mutex::new(OpenOptions::new().create(true).append(true).open(path)?) })
    }

    pub fn line(e: &Entry<'_>, now: OffsetDateTime) -> String {
        let when = now.format(CTIME).unwrap_or_default();
        // Fields are separated by spaces: names keep to one field and to characters that show
        // as what they are (a bidirectional override would make the line read otherwise).
        let shown = |c: char| if c.is_whitespace() || c.is_control() || is_bidi_control(c) { '_' } else { c };
        let path: String = e.path.chars().map(shown).collect();
        let user: String = e.user.chars().map(shown).collect();
        let anonymous = user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp");
        format!(
            "{when} {} {} {} {} {} _ {} {} {} ftp 0 * {}\n",
            e.duration.as_secs().max(1),
            e.client,
            e.bytes.map_or_else(|| "unknown".to_owned(), |b| b.to_string()),
            if path.is_empty() { "-" } else { &path },
            if e.binary { 'b' } else { 'a' },
            if e.outgoing { 'o' } else { 'i' },
            if anonymous { 'a' } else { 'r' },
            if user.is_empty() { "-" } else { &user },
            if e.complete { 'c' } else { 'i' },
        )
    }

    pub fn write(&self, e: &Entry<'_>) {
        let line = Self::line(e, OffsetDateTime::now_utc());
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = f.write_all(line.as_bytes()) {
            tracing::warn!(error = %err, "cannot write the transfer log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_matches_the_xferlog_layout() {
        let e = Entry {
            client: "203.0.113.2".parse().unwrap(),
            bytes: Some(1536),
            duration: Duration::from_millis(20),
            path: "dir/my file.bin",
            binary: true,
            outgoing: true,
            user: "anonymous",
            complete: true,
        };
        let now = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        let l = XferLog::line(&e, now);
        assert!(l.ends_with(" 1 203.0.113.2 1536 dir/my_file.bin b _ o a anonymous ftp 0 * c\n"), "{l}");
        assert_eq!(l.split(' ').filter(|f| !f.is_empty()).count(), 18, "{l}");
    }

    /// Names come from clients: a bidirectional override or isolate would make the line read
    /// differently from what it holds (`evil\u{202e}gpj.exe` shows as `evilexe.jpg`).
    #[test]
    fn bidirectional_controls_in_names_are_escaped_like_esc() {
        let bidi = [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ];
        for c in bidi.into_iter().chain(['\u{1b}']) {
            let path = format!("evil{c}gpj.exe");
            let user = format!("ad{c}min");
            let e = Entry {
                client: "203.0.113.2".parse().unwrap(),
                bytes: Some(1),
                duration: Duration::from_secs(1),
                path: &path,
                binary: true,
                outgoing: true,
                user: &user,
                complete: true,
            };
            let l = XferLog::line(&e, OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap());
            assert!(!l.contains(c), "U+{:04X} written as is: {l:?}", c as u32);
            assert!(l.contains(" evil_gpj.exe b _ o r ad_min ftp 0 * c\n"), "U+{:04X}: {l:?}", c as u32);
        }
        // Other non-ASCII text stays as written.
        let e = Entry {
            client: "203.0.113.2".parse().unwrap(),
            bytes: Some(1),
            duration: Duration::from_secs(1),
            path: "caf\u{e9}/\u{5e9}\u{5dc}\u{5d5}\u{5dd}.txt",
            binary: true,
            outgoing: false,
            user: "j\u{fc}rgen",
            complete: true,
        };
        let l = XferLog::line(&e, OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap());
        assert!(l.contains(" caf\u{e9}/\u{5e9}\u{5dc}\u{5d5}\u{5dd}.txt b _ i r j\u{fc}rgen "), "{l:?}");
    }

    #[test]
    fn an_incomplete_upload_has_status_i() {
        let e = Entry {
            client: "2001:db8:1::2".parse().unwrap(),
            bytes: Some(0),
            duration: Duration::ZERO,
            path: "up.bin",
            binary: false,
            outgoing: false,
            user: "ftpgatelab",
            complete: false,
        };
        let l = XferLog::line(&e, OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap());
        assert!(l.ends_with(" 1 2001:db8:1::2 0 up.bin a _ i r ftpgatelab ftp 0 * i\n"), "{l}");
    }
}
