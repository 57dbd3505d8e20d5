//! Server replies: `NNN text` or a multi-line `NNN-` … `NNN text` block (RFC 959 §4.2).
//!
//! Replies are tracked line by line rather than buffered whole, so that a long multi-line reply
//! (a `STAT` listing, a `HELP` page) streams through in bounded memory; only the final line
//! decides what the reply means.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("reply line does not start with a three-digit code")]
    BadCode,
    #[error("NUL byte in reply line")]
    Nul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyLineKind {
    /// `NNN text`: a complete reply on its own.
    Single,
    /// `NNN-text`: opens a multi-line reply.
    First,
    /// Any line inside a multi-line reply.
    Middle,
    /// `NNN text` with the opening code: closes a multi-line reply.
    Last,
}

impl ReplyLineKind {
    pub fn is_final(self) -> bool {
        matches!(self, ReplyLineKind::Single | ReplyLineKind::Last)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    pub code: u16,
    pub kind: ReplyLineKind,
    /// The line as received, normalised to end in CRLF.
    pub raw: Vec<u8>,
}

impl ReplyLine {
    /// Text after the code and separator, without the line ending.
    pub fn text(&self) -> &[u8] {
        let body = self.raw.strip_suffix(b"\r\n").unwrap_or(&self.raw);
        match self.kind {
            ReplyLineKind::Middle => body,
            _ => body.get(4..).unwrap_or_default(),
        }
    }

    pub fn is_preliminary(&self) -> bool {
        (100..200).contains(&self.code)
    }

    pub fn is_positive(&self) -> bool {
        (100..400).contains(&self.code)
    }
}

/// Parses `NNN` at the start of a line when it is a valid reply code (first digit 1 to 5).
pub fn parse_code(line: &[u8]) -> Option<u16> {
    let d = line.get(..3)?;
    if !d.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&d[0]) {
        return None;
    }
    Some(d.iter().fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0')))
}

/// Follows the reply structure across lines.
#[derive(Debug, Clone, Default)]
pub struct ReplyTracker {
    open: Option<u16>,
}

impl ReplyTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// True while inside a multi-line reply.
    pub fn in_multiline(&self) -> bool {
        self.open.is_some()
    }

    /// Classifies one framed line (LF removed, CR optional).
    pub fn feed(&mut self, line: &[u8]) -> Result<ReplyLine, ReplyError> {
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        if body.contains(&0) {
            return Err(ReplyError::Nul);
        }
        let mut raw = Vec::with_capacity(body.len() + 2);
        raw.extend_from_slice(body);
        raw.extend_from_slice(b"\r\n");
        let code = parse_code(body);
        let sep = body.get(3).copied();
        if let Some(open) = self.open {
            if code == Some(open) && sep != Some(b'-') && (sep.is_none() || sep == Some(b' ')) {
                self.open = None;
                return Ok(ReplyLine { code: open, kind: ReplyLineKind::Last, raw });
            }
            return Ok(ReplyLine { code: open, kind: ReplyLineKind::Middle, raw });
        }
        let code = code.ok_or(ReplyError::BadCode)?;
        match sep {
            Some(b'-') => {
                self.open = Some(code);
                Ok(ReplyLine { code, kind: ReplyLineKind::First, raw })
            }
            None | Some(b' ') => Ok(ReplyLine { code, kind: ReplyLineKind::Single, raw }),
            Some(_) => Err(ReplyError::BadCode),
        }
    }
}

/// Builds a single-line reply the gateway sends itself.
pub fn reply_line(code: u16, text: &str) -> Vec<u8> {
    let mut s = format!("{code} ");
    // Own replies never carry line breaks, whatever text a caller passes.
    s.extend(text.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }));
    s.push_str("\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multiline() {
        let mut t = ReplyTracker::new();
        let l = t.feed(b"220 ready\r").unwrap();
        assert_eq!((l.code, l.kind), (220, ReplyLineKind::Single));
        assert_eq!(l.text(), b"ready");
        assert_eq!(t.feed(b"211-Features:\r").unwrap().kind, ReplyLineKind::First);
        assert_eq!(t.feed(b" EPSV\r").unwrap().kind, ReplyLineKind::Middle);
        // A different code inside the block does not close it.
        assert_eq!(t.feed(b"200 not the end\r").unwrap().kind, ReplyLineKind::Middle);
        assert_eq!(t.feed(b"211-still open\r").unwrap().kind, ReplyLineKind::Middle);
        let last = t.feed(b"211 End\r").unwrap();
        assert_eq!((last.code, last.kind), (211, ReplyLineKind::Last));
        assert!(!t.in_multiline());
    }

    #[test]
    fn bare_code_and_lf_only() {
        let mut t = ReplyTracker::new();
        let l = t.feed(b"200").unwrap();
        assert_eq!(l.raw, b"200\r\n");
        assert_eq!(l.text(), b"");
    }

    #[test]
    fn garbage_is_an_error() {
        let mut t = ReplyTracker::new();
        assert_eq!(t.feed(b"hello"), Err(ReplyError::BadCode));
        assert_eq!(t.feed(b"600 no"), Err(ReplyError::BadCode));
        assert_eq!(t.feed(b"200x"), Err(ReplyError::BadCode));
        assert_eq!(t.feed(b"200 a\0b"), Err(ReplyError::Nul));
    }

    #[test]
    fn own_replies_are_one_line() {
        assert_eq!(reply_line(500, "bad\r\nPORT"), b"500 bad  PORT\r\n");
    }
}
