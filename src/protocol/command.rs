//! Client command lines: `VERB [SP argument] CRLF`.

use thiserror::Error;

/// The verbs the gateway treats specially; everything else is [`Verb::Other`] and relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    User,
    Pass,
    Acct,
    Pasv,
    Epsv,
    Port,
    Eprt,
    Lprt,
    Lpsv,
    Spsv,
    Retr,
    Stor,
    Stou,
    Appe,
    List,
    Nlst,
    Mlsd,
    Abor,
    Auth,
    Quit,
    Rein,
    Other,
}

impl Verb {
    fn from_upper(v: &str) -> Self {
        match v {
            "USER" => Verb::User,
            "PASS" => Verb::Pass,
            "ACCT" => Verb::Acct,
            "PASV" => Verb::Pasv,
            "EPSV" => Verb::Epsv,
            "PORT" => Verb::Port,
            "EPRT" => Verb::Eprt,
            "LPRT" => Verb::Lprt,
            "LPSV" => Verb::Lpsv,
            "SPSV" => Verb::Spsv,
            "RETR" => Verb::Retr,
            "STOR" => Verb::Stor,
            "STOU" => Verb::Stou,
            "APPE" => Verb::Appe,
            "LIST" => Verb::List,
            "NLST" => Verb::Nlst,
            "MLSD" => Verb::Mlsd,
            "ABOR" => Verb::Abor,
            "AUTH" => Verb::Auth,
            "QUIT" => Verb::Quit,
            "REIN" => Verb::Rein,
            _ => Verb::Other,
        }
    }

    /// Commands whose success opens a data connection.
    pub fn uses_data_channel(self) -> bool {
        matches!(self, Verb::Retr | Verb::Stor | Verb::Stou | Verb::Appe | Verb::List | Verb::Nlst | Verb::Mlsd)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("empty command line")]
    Empty,
    #[error("command verb is not 1 to 8 ASCII letters")]
    BadVerb,
    #[error("NUL byte in command line")]
    Nul,
    #[error("CR inside command line")]
    BareCr,
}

/// A parsed command. The verb is kept as the client spelled it so that relayed lines are
/// byte-for-byte what the client sent (apart from the line ending, always CRLF upstream, and
/// Telnet sequences, which the gateway removed before the command was parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub verb: Verb,
    spelled: String,
    upper: String,
    arg: Option<Vec<u8>>,
}

/// Longest verb accepted; RFC 959 verbs have 3 or 4 letters, extensions stay short too.
const MAX_VERB: usize = 8;

impl Command {
    /// Parses one line as produced by the framer (LF removed, CR possibly still there).
    pub fn parse(line: &[u8]) -> Result<Self, CommandError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&0) {
            return Err(CommandError::Nul);
        }
        if line.contains(&b'\r') {
            return Err(CommandError::BareCr);
        }
        if line.is_empty() {
            return Err(CommandError::Empty);
        }
        let (verb, arg) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], Some(line[i + 1..].to_vec())),
            None => (line, None),
        };
        if verb.is_empty() || verb.len() > MAX_VERB || !verb.iter().all(u8::is_ascii_alphabetic) {
            return Err(CommandError::BadVerb);
        }
        // Checked ASCII above, so this cannot fail; stay panic-free anyway.
        let spelled = String::from_utf8_lossy(verb).into_owned();
        let upper = spelled.to_ascii_uppercase();
        Ok(Self { verb: Verb::from_upper(&upper), spelled, upper, arg })
    }

    /// Builds a command the gateway itself sends.
    pub fn new(verb_upper: &str, arg: Option<&str>) -> Self {
        let upper = verb_upper.to_ascii_uppercase();
        Self { verb: Verb::from_upper(&upper), spelled: upper.clone(), upper, arg: arg.map(|a| a.as_bytes().to_vec()) }
    }

    /// Builds a command the gateway itself sends with an argument of raw bytes (a user name
    /// replayed as the client sent it, which need not be UTF-8).
    pub fn with_arg_bytes(verb_upper: &str, arg: Vec<u8>) -> Self {
        Self { arg: Some(arg), ..Self::new(verb_upper, None) }
    }

    /// The verb in upper case, e.g. for logs and policy lists.
    pub fn name(&self) -> &str {
        &self.upper
    }

    pub fn arg(&self) -> Option<&[u8]> {
        self.arg.as_deref()
    }

    /// The argument as text, lossy; only for address parsing and logs.
    pub fn arg_text(&self) -> String {
        self.arg.as_deref().map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default()
    }

    /// The wire form: exactly one line ending in CRLF, the argument Telnet-escaped. The
    /// argument holds data bytes (the client's `IAC IAC` is one 0xFF here); escaped again, a
    /// server that interprets Telnet reads the very argument the gateway checked.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.spelled.len() + 3 + self.arg.as_ref().map_or(0, Vec::len));
        out.extend_from_slice(self.spelled.as_bytes());
        if let Some(a) = &self.arg {
            out.push(b' ');
            super::telnet::escape(a, &mut out);
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive_but_relayed_as_spelled() {
        let c = Command::parse(b"retr My File.txt\r").unwrap();
        assert_eq!(c.verb, Verb::Retr);
        assert_eq!(c.name(), "RETR");
        assert_eq!(c.arg(), Some(&b"My File.txt"[..]));
        assert_eq!(c.encode(), b"retr My File.txt\r\n");
    }

    #[test]
    fn bare_lf_is_accepted_and_crlf_sent() {
        assert_eq!(Command::parse(b"NOOP").unwrap().encode(), b"NOOP\r\n");
    }

    #[test]
    fn smuggling_attempts_are_refused() {
        assert_eq!(Command::parse(b"RETR a\rPORT 1,2,3,4,0,21\r"), Err(CommandError::BareCr));
        assert_eq!(Command::parse(b"RETR a\0b\r"), Err(CommandError::Nul));
        assert_eq!(Command::parse(b"\r"), Err(CommandError::Empty));
        assert_eq!(Command::parse(b" RETR\r"), Err(CommandError::BadVerb));
        assert_eq!(Command::parse(b"R3TR x\r"), Err(CommandError::BadVerb));
        assert_eq!(Command::parse(b"ABCDEFGHI\r"), Err(CommandError::BadVerb));
    }

    #[test]
    fn a_data_byte_0xff_goes_out_telnet_escaped() {
        // What the client meant by `IAC IAC` (the Telnet filter made it one 0xFF byte) must
        // not reach a Telnet-aware server as a lone IAC starting a command.
        let c = Command::parse(b"USER blo\xff\xf4cked\r").unwrap();
        assert_eq!(c.arg(), Some(&b"blo\xff\xf4cked"[..]));
        assert_eq!(c.encode(), b"USER blo\xff\xff\xf4cked\r\n");
        assert_eq!(Command::parse(b"CWD \xff\xff\xff").unwrap().encode(), b"CWD \xff\xff\xff\xff\xff\xff\r\n");
    }

    #[test]
    fn arguments_keep_spaces_and_non_utf8() {
        let c = Command::parse(b"STOR  two  spaces \xe9\r").unwrap();
        assert_eq!(c.arg(), Some(&b" two  spaces \xe9"[..]));
        assert_eq!(c.encode(), b"STOR  two  spaces \xe9\r\n");
    }
}
