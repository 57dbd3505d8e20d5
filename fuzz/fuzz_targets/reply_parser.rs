//! Server replies: the input split at LF into lines, fed to a `ReplyTracker`; `parse_code` and
//! `reply_line` on every line.
//!
//! Asserts: the tracker's classification is consistent with the multi-line structure (a block
//! opens only outside a block, closes only with its own code, errors leave the state alone);
//! `raw` is the line normalised to CRLF and `text` a suffix of it; `parse_code` agrees with the
//! line's digits; the gateway's own reply built from the line's text is exactly one line.

#![no_main]

use ftpgate::protocol::reply::{parse_code, reply_line};
use ftpgate::protocol::{ReplyError, ReplyLineKind, ReplyTracker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut t = ReplyTracker::new();
    let mut open: Option<u16> = None;
    for line in data.split(|&b| b == b'\n') {
        check_code(line);
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        let was_open = t.in_multiline();
        assert_eq!(was_open, open.is_some());
        match t.feed(line) {
            Ok(rl) => {
                let mut want = body.to_vec();
                want.extend_from_slice(b"\r\n");
                assert_eq!(rl.raw, want);
                assert!((100..600).contains(&rl.code));
                assert!(body.ends_with(rl.text()));
                assert_eq!(rl.is_preliminary(), (100..200).contains(&rl.code));
                match rl.kind {
                    ReplyLineKind::Single => {
                        assert!(!was_open && !t.in_multiline());
                        assert_eq!(parse_code(body), Some(rl.code));
                        assert!(matches!(body.get(3), None | Some(b' ')));
                    }
                    ReplyLineKind::First => {
                        assert!(!was_open && t.in_multiline());
                        assert_eq!(parse_code(body), Some(rl.code));
                        assert_eq!(body.get(3), Some(&b'-'));
                        open = Some(rl.code);
                    }
                    ReplyLineKind::Middle => {
                        assert!(was_open && t.in_multiline());
                        assert_eq!(Some(rl.code), open);
                        assert_eq!(rl.text(), body);
                    }
                    ReplyLineKind::Last => {
                        assert!(was_open && !t.in_multiline());
                        assert_eq!(Some(rl.code), open);
                        assert_eq!(parse_code(body), open);
                        open = None;
                    }
                }
                assert_eq!(rl.kind.is_final(), !t.in_multiline());
            }
            Err(e) => {
                assert_eq!(t.in_multiline(), was_open, "an error changed the reply state");
                match e {
                    ReplyError::Nul => assert!(body.contains(&0)),
                    ReplyError::BadCode => assert!(!was_open, "inside a block every line is accepted"),
                }
            }
        }
        let own = reply_line(421, &String::from_utf8_lossy(body));
        assert!(own.starts_with(b"421 ") && own.ends_with(b"\r\n"));
        assert!(!own[..own.len() - 2].iter().any(|&b| b == b'\r' || b == b'\n'), "{own:?}");
    }
});

fn check_code(line: &[u8]) {
    match parse_code(line) {
        Some(c) => {
            assert!((100..600).contains(&c));
            assert_eq!(format!("{c:03}").as_bytes(), &line[..3]);
        }
        None => {
            assert!(line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&line[0]))
        }
    }
}
