//! Client command lines: `Command::parse` / `encode` on the raw input, and the raw input as a
//! client control stream through the Telnet filter and the line framer, as the I/O edge runs
//! them.
//!
//! Asserts: a parsed command re-encodes to the client's bytes (0xFF Telnet-escaped) plus CRLF
//! and, read back through the Telnet filter, parses to itself; a command parsed from a framed
//! line encodes to exactly one line; Telnet filtering and framing do not depend on how the
//! stream is split into reads; frames respect the line bound.

#![no_main]

use ftpgate::protocol::{Command, CommandError, Frame, LineFramer, TelnetEvent, TelnetFilter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_command(data);

    // The first byte picks the line bound (the configurable range is 64..=65536; smaller bounds
    // reach the overlong paths more often) and the read sizes.
    let max = 8 + usize::from(data.first().copied().unwrap_or(0)) * 2;
    let (whole, whole_events) = telnet(&[data]);
    let reads = split(data);
    let (chunked, chunked_events) = telnet(&reads);
    assert_eq!(whole, chunked, "Telnet output depends on read boundaries");
    assert_eq!(whole_events, chunked_events, "Telnet events depend on read boundaries");

    let whole_frames = frames(max, &[&whole]);
    let chunked_frames = frames(max, &split(&whole));
    assert_eq!(whole_frames, chunked_frames, "frames depend on read boundaries");
    for f in &whole_frames {
        if let Frame::Line(line) = f {
            check_command(line);
        }
    }
});

fn check_command(line: &[u8]) {
    let body = line.strip_suffix(b"\r").unwrap_or(line);
    match Command::parse(line) {
        Ok(c) => {
            let enc = c.encode();
            assert!(enc.ends_with(b"\r\n"));
            // Relayed byte for byte, apart from the line end and the escaped data byte 0xFF.
            let mut escaped = Vec::new();
            ftpgate::protocol::telnet::escape(body, &mut escaped);
            assert_eq!(&enc[..enc.len() - 2], &escaped[..]);
            // A Telnet-aware server reads the command the gateway parsed, nothing else.
            let (read, events) = telnet(&[&enc]);
            assert!(events.is_empty(), "Telnet commands in {enc:?}: {events:?}");
            assert_eq!(Command::parse(&read[..read.len() - 1]).as_ref(), Ok(&c));
            assert_eq!(Command::parse(&read[..read.len() - 2]).as_ref(), Ok(&c));
            let name = c.name();
            assert!((1..=8).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_uppercase()), "{name:?}");
            // A line from the framer has no LF; its command must then be exactly one line.
            if !line.contains(&b'\n') {
                let inner = &enc[..enc.len() - 2];
                assert!(!inner.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0), "{enc:?}");
            }
        }
        Err(CommandError::Nul) => assert!(body.contains(&0)),
        Err(CommandError::BareCr) => assert!(body.contains(&b'\r')),
        Err(CommandError::Empty) => assert!(body.is_empty()),
        Err(CommandError::BadVerb) => {}
    }
}

/// Read sizes 1 to 8, taken from the data itself.
fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (1 + usize::from(data[i % data.len()] % 8)).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

fn telnet(reads: &[&[u8]]) -> (Vec<u8>, Vec<TelnetEvent>) {
    let mut f = TelnetFilter::new();
    let (mut out, mut events) = (Vec::new(), Vec::new());
    for r in reads {
        f.feed(r, &mut out, &mut events);
    }
    (out, events)
}

fn frames(max: usize, reads: &[&[u8]]) -> Vec<Frame> {
    let mut framer = LineFramer::new(max);
    let bound = framer.max();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for r in reads {
        buf.extend_from_slice(r);
        while let Some(f) = framer.next_frame(&mut buf) {
            if let Frame::Line(l) = &f {
                assert!(l.len() < bound, "line of {} bytes, bound {bound}", l.len());
                assert!(!l.contains(&b'\n'));
            }
            out.push(f);
        }
        assert!(buf.len() <= bound, "buffer holds {} bytes, bound {bound}", buf.len());
    }
    out
}
