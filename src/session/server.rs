//! The server's side of the state machine: each reply line paired with the command it answers,
//! passive replies turned into data channels, and the resynchronisation after ABOR.

use super::action::{DataRequest, Note, Outcome};
use super::machine::{passive_command, Abort, ClientWants, Expect, PassiveForm, Pending, Phase, Session, Setup};
use super::policy::ServerDataPolicy;
use super::Refusal;
use crate::addr::canonical_ip;
use crate::protocol::address;
use crate::protocol::reply::reply_line;
use crate::protocol::{ReplyLine, ReplyLineKind};
use std::net::SocketAddr;

impl Session {
    /// One line from the server (LF removed).
    pub fn on_server_line(&mut self, line: &[u8]) {
        let rl = match self.tracker.feed(line) {
            Ok(rl) => rl,
            Err(_) => {
                self.note(Note::Refused(Refusal::MalformedReply));
                return self.close_now(Outcome::Error, Some("Server sent a malformed reply, closing"));
            }
        };
        if rl.kind.is_final() {
            self.note(Note::ServerReply(rl.code));
        }
        if self.expect.is_empty() {
            // Nobody asked: a reply of its own (a 421 before the server hangs up). It gets a
            // slot of its own, held until its last line like any other reply, and timed.
            let slot = self.replies.open();
            self.expect.push_back(Pending { slot, expect: Expect::Relay });
        }
        let Some(front) = self.expect.front_mut() else { return };
        let slot = front.slot;
        match &mut front.expect {
            Expect::Passive { reply, .. } => {
                if reply.len() + rl.raw.len() > self.policy.max_passive_reply {
                    self.note(Note::Refused(Refusal::MalformedReply));
                    return self.close_now(Outcome::Error, Some("Server sent an oversized passive reply, closing"));
                }
                reply.extend_from_slice(&rl.raw);
                if rl.kind.is_final() && !rl.is_preliminary() {
                    self.on_passive_reply(rl);
                }
                return;
            }
            Expect::Abort => return self.on_abort_reply_line(slot, rl),
            // The server's greeting and its answer to a replayed USER are the gateway's to
            // read; the client had ftpgate's greeting and its 331 already.
            Expect::LoginGreeting | Expect::LoginUser if !rl.kind.is_final() || rl.is_preliminary() => return,
            // The gateway's own TLS commands and a client's AUTH under inspection: only the
            // final reply means anything, and it is not relayed as such.
            Expect::Upstream(step) => {
                let step = *step;
                if rl.kind.is_final() {
                    self.expect.pop_front();
                    self.on_upstream_reply(slot, step, &rl);
                }
                return;
            }
            Expect::Auth => {
                if rl.kind.is_final() {
                    self.expect.pop_front();
                    self.on_auth_reply(slot, &rl);
                }
                return;
            }
            Expect::Feat if rl.kind == ReplyLineKind::Middle => {
                if let Some(name) = super::feat::hidden(&self.policy, rl.text(), rl.code) {
                    return self.note(Note::FeatureHidden(name));
                }
            }
            Expect::Feat if rl.kind == ReplyLineKind::Last && rl.code == 211 => {
                if matches!(self.policy.tls, super::TlsPolicy::Terminate { .. }) {
                    self.reply(slot, super::feat::OWN_TLS_FEATURES, false);
                }
            }
            Expect::ConvertedPortAck { .. } if !rl.kind.is_final() => {
                // The client asked PASV/EPSV: the lines of the server's PORT reply mean nothing to it.
                return;
            }
            Expect::Transfer { preliminary, data_failed } => {
                if rl.kind.is_final() && rl.is_preliminary() {
                    *preliminary = true;
                    return self.reply(slot, &rl.raw, false);
                }
                let lost = *data_failed && rl.code / 100 == 2;
                if lost || *preliminary {
                    let done = rl.kind.is_final();
                    if done {
                        self.expect.pop_front();
                    }
                    let bytes = match (lost, done) {
                        // The lines of a success that is none mean nothing to the client.
                        (true, false) => return,
                        (true, true) => {
                            self.note(Note::Quirk(super::data::LOST_NOTE));
                            reply_line(426, super::data::LOST)
                        }
                        _ => rl.raw,
                    };
                    // Every line of a running transfer's closing reply waits behind the data.
                    let r = match self.data.as_ref() {
                        Some(d) => self.replies.push_after_data(slot, &bytes, done, d.id),
                        None => self.replies.push(slot, &bytes, done),
                    };
                    return self.check_overflow(r);
                }
            }
            _ => {}
        }
        if !rl.kind.is_final() || rl.is_preliminary() {
            return self.reply(slot, &rl.raw, false);
        }
        let Some(Pending { expect, .. }) = self.expect.pop_front() else { return };
        match expect {
            Expect::Greeting => {
                self.reply(slot, &rl.raw, true);
                self.after_greeting(rl.code / 100 == 2);
            }
            Expect::Protection(level) => {
                if rl.code / 100 == 2 {
                    self.protection_granted(level);
                }
                self.reply(slot, &rl.raw, true);
            }
            Expect::LoginGreeting => self.on_login_greeting(slot, &rl),
            Expect::LoginUser => self.on_login_user_reply(slot, &rl),
            Expect::Transfer { .. } => {
                // Refused before any data moved: no channel stays open for it.
                self.drop_data();
                self.reply(slot, &rl.raw, true);
            }
            Expect::PortAck if !rl.is_positive() => {
                self.drop_data();
                self.reply(slot, &rl.raw, true);
            }
            Expect::ConvertedPortAck { client, advertise } if rl.is_positive() => {
                self.tell_client_passive(slot, client, advertise)
            }
            Expect::ConvertedPortAck { .. } => {
                self.drop_data();
                self.note(Note::Quirk("server refused active mode"));
                let text = format!("Cannot open data connection: server refused active mode ({})", rl.code);
                self.reply(slot, &reply_line(425, &text), true);
            }
            Expect::Quit => {
                self.reply(slot, &rl.raw, true);
                return self.close_gracefully(Outcome::ClientQuit, None);
            }
            _ => self.reply(slot, &rl.raw, true),
        }
        if rl.code == 421 {
            self.close_gracefully(Outcome::ServerClosed, None);
        }
    }

    fn on_abort_reply_line(&mut self, slot: u64, rl: ReplyLine) {
        let Phase::Aborting(Abort { noop_sent, replies }) = self.phase else {
            // Only reachable while the driver sets up a channel for a reply before the ABOR;
            // input waits then, so this line cannot arrive. Relay it rather than lose it.
            return self.reply(slot, &rl.raw, false);
        };
        if noop_sent && rl.code == 200 {
            if rl.kind.is_final() {
                self.expect.pop_front();
                self.replies.finish(slot);
                self.phase = Phase::Ready;
            }
            return;
        }
        let settles = rl.kind.is_final() && !rl.is_preliminary();
        self.reply(slot, &rl.raw, false);
        if !settles {
            return;
        }
        if replies + 1 >= super::machine::MAX_ABORT_REPLIES {
            self.expect.pop_front();
            self.replies.finish(slot);
            self.phase = Phase::Ready;
            return self.note(Note::Quirk("server never answered the NOOP after ABOR"));
        }
        self.phase = Phase::Aborting(Abort { noop_sent: true, replies: replies + 1 });
        if !noop_sent {
            self.out.push_back(super::Action::ToServer(b"NOOP\r\n".to_vec()));
        }
    }

    /// The final line of a passive reply is in: parse the whole reply and open the channel.
    fn on_passive_reply(&mut self, rl: ReplyLine) {
        let Some(Pending { slot, expect: Expect::Passive { client, server, reply, transfer } }) =
            self.expect.pop_front()
        else {
            return;
        };
        let expected = if server == PassiveForm::Pasv { 227 } else { 229 };
        if rl.code != expected {
            if !rl.is_positive() && server == PassiveForm::Epsv && !self.upstream.is_ipv6() {
                self.note(Note::Quirk("server refused EPSV, retrying with PASV"));
                let expect = Expect::Passive { client, server: PassiveForm::Pasv, reply: Vec::new(), transfer };
                return self.send_expecting(slot, passive_command(PassiveForm::Pasv), expect);
            }
            if !rl.is_positive() {
                return self.reply(slot, &reply, true);
            }
            return self.refuse_in(
                slot,
                Refusal::BadPassiveReply { reply: rl.code, err: address::AddressError::No227Address },
            );
        }
        let text = strip_codes(&reply);
        let named = match server {
            PassiveForm::Pasv => address::parse_227(&text).map(SocketAddr::V4),
            PassiveForm::Epsv => address::parse_229(&text).map(|p| SocketAddr::new(self.upstream.ip(), p)),
        };
        let named = match named {
            Ok(a) => a,
            Err(err) => return self.refuse_in(slot, Refusal::BadPassiveReply { reply: rl.code, err }),
        };
        let server_ip = canonical_ip(self.upstream.ip());
        let mut target = named;
        if canonical_ip(named.ip()) != server_ip {
            let why = Refusal::ServerDataElsewhere { named, server: server_ip };
            match self.policy.server_data {
                ServerDataPolicy::Refuse => return self.refuse_in(slot, why),
                ServerDataPolicy::Substitute => {
                    self.note(Note::Refused(why));
                    target = SocketAddr::new(self.upstream.ip(), named.port());
                }
            }
        }
        if target.port() < 1024 {
            return self.refuse_in(slot, Refusal::ServerPrivilegedPort(target.port()));
        }
        match client {
            ClientWants::Passive(form) => {
                self.open_data(slot, DataRequest::Passive { server_data: target }, Setup::Passive(form), transfer)
            }
            ClientWants::Active(client_data) => self.open_data(
                slot,
                DataRequest::Connect { server_data: target, client_data },
                Setup::Connect,
                transfer,
            ),
        }
    }

    /// A refusal answering the command in `slot` (not the one being handled now).
    fn refuse_in(&mut self, slot: u64, why: Refusal) {
        self.reply(slot, &reply_line(why.reply_code(), &why.to_string()), true);
        self.note(Note::Refused(why));
    }
}

/// The text of a (possibly multi-line) reply without the leading codes, for address searches:
/// a code like `227` must not be mistaken for the first number of an address.
fn strip_codes(whole: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(whole.len());
    for line in whole.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let body = match crate::protocol::reply::parse_code(line) {
            Some(_) if matches!(line.get(3), None | Some(b' ') | Some(b'-')) => line.get(4..).unwrap_or_default(),
            _ => line,
        };
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    out
}
