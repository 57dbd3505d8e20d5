//! The process's log: human or JSON lines on stderr, with a level a reload can change.
//!
//! Log lines carry text clients chose (user names, paths, commands). Whatever would make a line
//! read differently from what it holds is escaped on its way out, in every field, message and
//! span: control characters (ESC starts terminal sequences), C1 controls, and the bidirectional
//! overrides and isolates (`evil\u{202e}gpj.exe` displays as `evilexe.jpg`).

use crate::config::{Config, LogFormat};
use std::io::{self, Write};
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Where a reload changes the log's level; the format is fixed at start-up.
pub type LogLevel = reload::Handle<EnvFilter, Registry>;

type Boxed = Box<dyn Subscriber + Send + Sync>;

/// The bidirectional embeddings, overrides and isolates: U+202A-U+202E and U+2066-U+2069.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` is written escaped in a log line. Tab and the line's own newline stay.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c)
}

/// Escapes in the spelling of the format: Rust's (as tracing writes an escaped ESC, `\x1b`) in
/// human lines; JSON's `\uXXXX` in JSON lines, where the character is inside a string and a
/// JSON reader gets it back.
fn escape(c: char, format: LogFormat, out: &mut Vec<u8>) {
    let n = c as u32;
    let text = match format {
        LogFormat::Json => format!("\\u{n:04x}"),
        LogFormat::Human if n < 0x80 => format!("\\x{n:02x}"),
        LogFormat::Human => format!("\\u{{{n:x}}}"),
    };
    out.extend_from_slice(text.as_bytes());
}

/// A [`MakeWriter`] whose writers escape what [`needs_escape`].
struct Escaping<M> {
    inner: M,
    format: LogFormat,
}

impl<'w, M: MakeWriter<'w>> MakeWriter<'w> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'w self) -> Self::Writer {
        EscapingWriter { inner: self.inner.make_writer(), format: self.format, carry: Vec::new() }
    }
}

struct EscapingWriter<W: Write> {
    inner: W,
    format: LogFormat,
    /// The start of a character the last write ended inside of. tracing writes each event with
    /// one `write_all`, so this stays empty; it keeps a split character from slipping through.
    carry: Vec<u8>,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(buf);
        let mut out = Vec::with_capacity(data.len());
        let mut rest = data.as_slice();
        while !rest.is_empty() {
            let (valid, after) = match std::str::from_utf8(rest) {
                Ok(s) => (s, &rest[rest.len()..]),
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    (std::str::from_utf8(good).unwrap_or_default(), bad)
                }
            };
            for c in valid.chars() {
                if needs_escape(c) {
                    escape(c, self.format, &mut out);
                } else {
                    let mut b = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
            rest = match std::str::from_utf8(after).map_err(|e| e.error_len()) {
                Ok(_) => after,
                // Cut off at the end: wait for the rest of the character.
                Err(None) => {
                    self.carry = after.to_vec();
                    &[]
                }
                // Not UTF-8 at all: nothing a terminal reads as text; passed on as it is.
                Err(Some(n)) => {
                    out.extend_from_slice(&after[..n]);
                    &after[n..]
                }
            };
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let carry = std::mem::take(&mut self.carry);
        self.inner.write_all(&carry)?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for EscapingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The subscriber ftpgate logs through, writing each line to `writer`.
fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> (Boxed, LogLevel)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, level) = reload::Layer::new(filter);
    // No colours, even on a terminal: they are ESC sequences, which the writer escapes. A log
    // reader that went away (`ftpgate 2>&1 | head`) loses the lines that follow and the gateway
    // goes on: reporting the failed write would itself write to the closed stderr.
    let output =
        fmt::layer().with_writer(Escaping { inner: writer, format }).with_ansi(false).log_internal_errors(false);
    let logging = tracing_subscriber::registry().with(filter);
    let s: Boxed = match format {
        LogFormat::Human => Box::new(logging.with(output)),
        LogFormat::Json => Box::new(logging.with(output.json().flatten_event(true).with_current_span(true))),
    };
    (s, level)
}

/// Logs to stderr from now on, in `cfg`'s format and at its level.
pub fn init(cfg: &Config) -> LogLevel {
    let filter = EnvFilter::try_new(&cfg.live.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (s, level) = subscriber(cfg.startup.log_format, filter, std::io::stderr);
    s.init();
    level
}

/// Applies a reloaded `log.level` (validated with the rest of the file).
pub fn set_level(level: &LogLevel, cfg: &Config) {
    let applied = EnvFilter::try_new(&cfg.live.log_level)
        .map_err(|e| e.to_string())
        .and_then(|filter| level.reload(filter).map_err(|e| e.to_string()));
    if let Err(e) = applied {
        tracing::warn!(error = %e, "cannot change the log level; it stays as it was");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Capture {
        type Writer = Capture;
        fn make_writer(&'w self) -> Capture {
            self.clone()
        }
    }

    /// What one event with client-chosen text `name` in its message, a Display field and a
    /// Debug field looks like in `format`.
    fn logged(format: LogFormat, name: &str) -> String {
        let out = Capture::default();
        let (s, _) = subscriber(format, EnvFilter::new("info"), out.clone());
        tracing::subscriber::with_default(s, || {
            let span = tracing::info_span!("session", user = %name);
            let _in = span.enter();
            tracing::warn!(path = %name, arg = ?name, "refused: {name}");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const BIDI: [char; 9] =
        ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'];

    /// Client text with a bidirectional override or isolate would make a log line read
    /// differently from what it holds; they are escaped as ESC is.
    #[test]
    fn bidirectional_controls_from_clients_are_escaped_in_human_logs() {
        for c in BIDI {
            let line = logged(LogFormat::Human, &format!("evil{c}gpj.exe"));
            assert!(!line.contains(c), "U+{:04X} logged as is: {line:?}", c as u32);
            let escaped = format!("evil\\u{{{:x}}}gpj.exe", c as u32);
            assert_eq!(line.matches(&escaped).count(), 4, "U+{:04X}: {line:?}", c as u32);
        }
        let esc = logged(LogFormat::Human, "a\u{1b}[31mb");
        assert!(!esc.contains('\u{1b}') && esc.contains("a\\x1b[31mb"), "{esc:?}");
    }

    #[test]
    fn bidirectional_controls_from_clients_are_escaped_in_json_logs() {
        for c in BIDI {
            let name = format!("evil{c}gpj.exe");
            let line = logged(LogFormat::Json, &name);
            assert!(!line.contains(c), "U+{:04X} logged as is: {line:?}", c as u32);
            assert!(line.contains(&format!("evil\\u{:04x}gpj.exe", c as u32)), "U+{:04X}: {line:?}", c as u32);
            // Still JSON, and a JSON reader gets the text back as it was.
            let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["path"], name.as_str(), "{line}");
            assert_eq!(v["span"]["user"], name.as_str(), "{line}");
        }
        let esc = logged(LogFormat::Json, "a\u{1b}[31mb");
        assert!(!esc.contains('\u{1b}') && esc.contains("a\\u001b[31mb"), "{esc:?}");
    }

    #[test]
    fn a_character_split_across_writes_is_still_escaped() {
        let out = Capture::default();
        let mut w = Escaping { inner: out.clone(), format: LogFormat::Human }.make_writer();
        let text = "a\u{202e}b\u{1b}c\u{e9}\n".as_bytes();
        for chunk in text.chunks(1) {
            w.write_all(chunk).unwrap();
        }
        // Bytes that are not UTF-8 pass as they are; an unfinished character at the end too.
        w.write_all(&[b'x', 0xff, b'y', 0xe2, 0x80]).unwrap();
        drop(w);
        let bytes = out.0.lock().unwrap().clone();
        assert_eq!(bytes, b"a\\u{202e}b\\x1bc\xc3\xa9\nx\xffy\xe2\x80");
    }
}
