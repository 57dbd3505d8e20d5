//! Splits a byte stream into lines without ever growing past a bound.
//!
//! The framer owns no buffer: the I/O edge appends what it read to a `Vec<u8>` and asks the
//! framer for complete lines, so the same code serves the client and the server side.

/// One result of [`LineFramer::next_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its terminating LF (a CR before the LF is kept: the parsers decide
    /// what a bare LF means).
    Line(Vec<u8>),
    /// A line exceeded the bound. Its bytes were discarded up to and including its LF; the stream
    /// is in step again with the next line.
    Overlong,
}

/// Bounded line splitter with resynchronisation after an overlong line.
#[derive(Debug, Clone)]
pub struct LineFramer {
    max: usize,
    /// Set while skipping the rest of an overlong line whose LF has not been seen yet.
    skipping: bool,
}

impl LineFramer {
    /// `max` counts the line's bytes including CR LF.
    pub fn new(max: usize) -> Self {
        Self { max: max.max(3), skipping: false }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes the next frame out of `buf`. Returns `None` when `buf` holds no complete line; the
    /// buffer then never holds more than `max` bytes, so the caller's buffer stays bounded. An
    /// overlong line is reported as soon as it crosses the bound (an unterminated line must not
    /// wait for an LF that never comes); its rest is skipped up to the next LF.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Option<Frame> {
        loop {
            let lf = buf.iter().position(|&b| b == b'\n');
            if self.skipping {
                match lf {
                    Some(i) => {
                        buf.drain(..=i);
                        self.skipping = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                }
            }
            return match lf {
                Some(i) if i < self.max => {
                    let mut line: Vec<u8> = buf.drain(..=i).collect();
                    line.pop();
                    Some(Frame::Line(line))
                }
                Some(_) => {
                    self.skipping = true;
                    Some(Frame::Overlong)
                }
                None if buf.len() >= self.max => {
                    self.skipping = true;
                    buf.clear();
                    Some(Frame::Overlong)
                }
                None => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = LineFramer::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(fr) = f.next_frame(&mut buf) {
                out.push(fr);
            }
            assert!(buf.len() < max, "buffer exceeded bound: {}", buf.len());
        }
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let out = frames(64, &[b"USER an", b"onymous\r\nPA", b"SS x\r\n"]);
        assert_eq!(out, vec![Frame::Line(b"USER anonymous\r".to_vec()), Frame::Line(b"PASS x\r".to_vec())]);
    }

    #[test]
    fn overlong_line_is_reported_once_and_stream_resyncs() {
        let long = vec![b'A'; 100];
        let out = frames(16, &[&long, &long, b"\r\nNOOP\r\n"]);
        assert_eq!(out, vec![Frame::Overlong, Frame::Line(b"NOOP\r".to_vec())]);
    }

    #[test]
    fn an_unterminated_line_is_reported_when_it_crosses_the_bound() {
        let mut f = LineFramer::new(16);
        let mut buf = vec![b'A'; 40];
        assert_eq!(f.next_frame(&mut buf), Some(Frame::Overlong));
        assert_eq!(f.next_frame(&mut buf), None);
        buf.extend_from_slice(b"more\r\nNOOP\r\n");
        assert_eq!(f.next_frame(&mut buf), Some(Frame::Line(b"NOOP\r".to_vec())));
    }

    #[test]
    fn line_of_exactly_max_is_accepted_one_more_is_not() {
        let out = frames(8, &[b"ABCDEF\r\n", b"ABCDEFG\r\n", b"X\n"]);
        assert_eq!(out, vec![Frame::Line(b"ABCDEF\r".to_vec()), Frame::Overlong, Frame::Line(b"X".to_vec())]);
    }
}
