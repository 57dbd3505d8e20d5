//! RFC 854 Telnet handling on the client's control stream.
//!
//! FTP's control connection is a Telnet NVT stream. Clients send `IAC IP IAC DM` before `ABOR`,
//! and a hostile client can use option negotiation to smuggle bytes past a naive line parser.
//! The filter removes every Telnet sequence from the stream, unescapes `IAC IAC`, reports what it
//! saw, and produces the refusals that RFC 1123 asks a server to send for options. [`escape`]
//! is the way back: the data byte 0xFF goes to the server as `IAC IAC` again.

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const IP: u8 = 244;
const DM: u8 = 242;
const SE: u8 = 240;

/// Appends `data` to `out` as Telnet data: every 0xFF doubled (RFC 854). A server that reads
/// Telnet (ProFTPD does) then reads exactly `data`; a lone 0xFF would start a command there,
/// and `IAC IP` inside an argument is stripped, so the server would act on another argument
/// than the one the gateway checked.
pub fn escape(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.split_inclusive(|&b| b == IAC) {
        out.extend_from_slice(chunk);
        if chunk.last() == Some(&IAC) {
            out.push(IAC);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelnetEvent {
    /// `IAC IP`: the client interrupts the running transfer (precedes `ABOR`).
    InterruptProcess,
    /// `IAC DM`: the data mark of a Synch.
    DataMark,
    /// An option negotiation the gateway refused; `reply` goes back to the client as is.
    Refused { reply: [u8; 3] },
    /// Option negotiation that needs no answer: `WONT`, `DONT`, or the start of a
    /// subnegotiation (reported when it starts, so one that never ends still counts).
    Negotiation,
    /// Any other command (NOP, AYT, GA ...): dropped.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Data,
    Iac,
    Option(u8),
    Sub,
    SubIac,
}

/// Streaming filter; sequences split across reads are handled.
#[derive(Debug, Clone, Default)]
pub struct TelnetFilter {
    state: State,
}

impl TelnetFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the data bytes of `input` to `out` and the Telnet commands found to `events`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, events: &mut Vec<TelnetEvent>) {
        for &b in input {
            self.state = match (self.state, b) {
                (State::Data, IAC) => State::Iac,
                (State::Data, _) => {
                    out.push(b);
                    State::Data
                }
                (State::Iac, IAC) => {
                    out.push(IAC);
                    State::Data
                }
                (State::Iac, WILL | WONT | DO | DONT) => State::Option(b),
                (State::Iac, SB) => {
                    events.push(TelnetEvent::Negotiation);
                    State::Sub
                }
                (State::Iac, IP) => {
                    events.push(TelnetEvent::InterruptProcess);
                    State::Data
                }
                (State::Iac, DM) => {
                    events.push(TelnetEvent::DataMark);
                    State::Data
                }
                (State::Iac, _) => {
                    events.push(TelnetEvent::Ignored);
                    State::Data
                }
                (State::Option(verb), opt) => {
                    match verb {
                        WILL => events.push(TelnetEvent::Refused { reply: [IAC, DONT, opt] }),
                        DO => events.push(TelnetEvent::Refused { reply: [IAC, WONT, opt] }),
                        _ => events.push(TelnetEvent::Negotiation),
                    }
                    State::Data
                }
                (State::Sub, IAC) => State::SubIac,
                (State::Sub, _) => State::Sub,
                (State::SubIac, SE) => State::Data,
                (State::SubIac, _) => State::Sub,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Vec<TelnetEvent>) {
        let mut f = TelnetFilter::new();
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        for c in chunks {
            f.feed(c, &mut out, &mut ev);
        }
        (out, ev)
    }

    #[test]
    fn abort_sequence_is_stripped_and_reported() {
        let (out, ev) = run(&[&[IAC, IP, IAC], &[DM], b"ABOR\r\n"]);
        assert_eq!(out, b"ABOR\r\n");
        assert_eq!(ev, vec![TelnetEvent::InterruptProcess, TelnetEvent::DataMark]);
    }

    #[test]
    fn escaped_iac_is_unescaped() {
        let (out, ev) = run(&[b"RETR a", &[IAC], &[IAC], b"b\r\n"]);
        assert_eq!(out, b"RETR a\xffb\r\n");
        assert!(ev.is_empty());
    }

    #[test]
    fn escape_undoes_the_filter() {
        let data = b"a\xff\xf4b\xff\xff\xffc\xff";
        let mut wire = Vec::new();
        escape(data, &mut wire);
        assert_eq!(wire, b"a\xff\xff\xf4b\xff\xff\xff\xff\xff\xffc\xff\xff");
        let (out, ev) = run(&[&wire]);
        assert_eq!(out, data);
        assert!(ev.is_empty());
    }

    #[test]
    fn negotiation_is_refused_and_never_reaches_the_line() {
        let (out, ev) = run(&[&[IAC, WILL, 1, IAC, DO, 3, IAC, WONT, 5], b"NOOP\r\n"]);
        assert_eq!(out, b"NOOP\r\n");
        assert_eq!(
            ev,
            vec![
                TelnetEvent::Refused { reply: [IAC, DONT, 1] },
                TelnetEvent::Refused { reply: [IAC, WONT, 3] },
                TelnetEvent::Negotiation
            ]
        );
    }

    #[test]
    fn subnegotiation_content_is_dropped() {
        let (out, ev) = run(&[&[IAC, SB, 24, b'\r', b'\n', IAC, SE], b"QUIT\r\n"]);
        assert_eq!(out, b"QUIT\r\n");
        assert_eq!(ev, vec![TelnetEvent::Negotiation]);
    }

    #[test]
    fn a_subnegotiation_is_reported_when_it_starts() {
        let (out, ev) = run(&[&[IAC, SB], &[24, 1, 2, 3]]);
        assert!(out.is_empty());
        assert_eq!(ev, vec![TelnetEvent::Negotiation]);
    }
}
