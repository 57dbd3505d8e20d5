//! The client's side of the state machine: one command line at a time, checked against the
//! policy, answered by the gateway or forwarded with what its reply will mean.

use super::action::{Action, Note, Outcome, TransferInfo};
use super::machine::{Abort, Expect, Pending, Phase, Session};
use super::Refusal;
use crate::labels::Direction;
use crate::protocol::{Command, Frame, Verb};

impl Session {
    /// A frame from the client's control stream. `interrupted` is set when a Telnet IP or DM
    /// preceded it.
    pub fn on_client_frame(&mut self, frame: Frame, interrupted: bool) {
        self.slot = self.replies.open();
        match frame {
            Frame::Overlong => self.malformed(Refusal::LineTooLong { max: self.policy.max_line }),
            Frame::Line(line) => match Command::parse(&line) {
                Ok(cmd) => {
                    self.malformed_run = 0;
                    self.on_command(cmd, interrupted)
                }
                Err(e) => self.malformed(Refusal::MalformedCommand(e)),
            },
        }
    }

    /// How many more malformed inputs in a row are tolerated before the session is closed.
    pub fn malformed_room(&self) -> u32 {
        self.policy.max_malformed.saturating_sub(self.malformed_run)
    }

    /// The client negotiated Telnet options `count` times. FTP needs none (RFC 1123:
    /// refuse them all), and each refusal is a write toward the client: so they count toward
    /// the malformed-input limit, and a client negotiating without end is closed.
    pub fn on_telnet_negotiation(&mut self, count: u32) {
        self.note(Note::Refused(Refusal::TelnetNegotiation { count }));
        self.malformed_run = self.malformed_run.saturating_add(count);
        if self.malformed_run > self.policy.max_malformed {
            self.note(Note::Refused(Refusal::MalformedFlood));
            self.close_now(Outcome::Refused, Some("Too many Telnet option negotiations, closing"));
        }
    }

    fn malformed(&mut self, why: Refusal) {
        self.malformed_run += 1;
        self.refuse(why);
        if self.malformed_run > self.policy.max_malformed {
            self.note(Note::Refused(Refusal::MalformedFlood));
            self.close_now(Outcome::Refused, Some("Too many malformed commands, closing"));
        }
    }

    fn on_command(&mut self, cmd: Command, interrupted: bool) {
        if !self.policy.commands.permits(cmd.name()) {
            return self.refuse(Refusal::CommandRefused(cmd.name().to_owned()));
        }
        if matches!(self.phase, Phase::Login(_)) {
            return self.on_login_command(cmd);
        }
        match cmd.verb {
            Verb::User if self.login.is_some() => {
                if let Some(cmd) = self.relogin_user(&cmd) {
                    self.user = Some(cmd.arg_text().trim().to_owned());
                    self.forward(&cmd, Expect::Relay)
                }
            }
            Verb::User => {
                let user = cmd.arg_text();
                if !self.policy.users.permits(user.trim()) {
                    return self.refuse(Refusal::UserRefused(user.trim().to_owned()));
                }
                self.user = Some(user.trim().to_owned());
                self.forward(&cmd, Expect::Relay)
            }
            Verb::Other if cmd.name() == "TYPE" => {
                let t = cmd.arg_text().trim().to_ascii_uppercase();
                self.binary = t.starts_with('I') || t.starts_with('L');
                self.forward(&cmd, Expect::Relay)
            }
            Verb::Other if cmd.name() == "FEAT" => self.forward(&cmd, Expect::Feat),
            Verb::Pasv | Verb::Epsv => self.on_passive_command(&cmd),
            Verb::Port | Verb::Eprt => self.on_active_command(&cmd),
            Verb::Lprt | Verb::Lpsv | Verb::Spsv => self.refuse(Refusal::NotSupported(cmd.name().to_owned())),
            Verb::Auth => self.on_auth(&cmd),
            Verb::Other if cmd.name() == "PBSZ" || cmd.name() == "PROT" => self.on_protection(&cmd),
            // Clear text after TLS would hide the commands from whoever relies on the TLS.
            Verb::Other if cmd.name() == "CCC" => {
                self.answer(502, "CCC not allowed through this gateway: the control connection stays protected")
            }
            Verb::Quit => self.forward(&cmd, Expect::Quit),
            Verb::Abor => self.on_abort(&cmd, interrupted),
            v if v.uses_data_channel() => {
                let toward = match v {
                    Verb::Stor | Verb::Stou | Verb::Appe => Direction::ToServer,
                    _ => Direction::ToClient,
                };
                let info =
                    TransferInfo { verb: cmd.name().to_owned(), path: cmd.arg_text(), binary: self.binary, toward };
                self.link_transfer(info);
                self.forward(&cmd, Expect::Transfer { preliminary: false, data_failed: false })
            }
            _ => self.forward(&cmd, Expect::Relay),
        }
    }

    pub(super) fn send_expecting(&mut self, slot: u64, line: Vec<u8>, expect: Expect) {
        self.expect.push_back(Pending { slot, expect });
        self.out.push_back(Action::ToServer(line));
    }

    fn forward(&mut self, cmd: &Command, expect: Expect) {
        self.send_expecting(self.slot, cmd.encode(), expect)
    }

    fn on_abort(&mut self, cmd: &Command, interrupted: bool) {
        // A transfer the ABOR ends gets no final reply of its own: whatever the server still
        // says about it is relayed as part of the ABOR's answer.
        let mut i = 0;
        while i < self.expect.len() {
            if matches!(self.expect[i].expect, Expect::Transfer { .. }) {
                let p = self.expect.remove(i).expect("index checked");
                self.replies.finish(p.slot);
            } else {
                i += 1;
            }
        }
        self.note(Note::Aborting);
        self.drop_data();
        self.phase = Phase::Aborting(Abort { noop_sent: false, replies: 0 });
        self.expect.push_back(Pending { slot: self.slot, expect: Expect::Abort });
        let line = cmd.encode();
        let urgent = interrupted || self.policy.urgent_abort;
        self.out.push_back(if urgent { Action::ToServerUrgent(line) } else { Action::ToServer(line) });
    }
}
