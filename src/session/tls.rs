//! FTPS on the control channel (RFC 2228, RFC 4217): which side speaks TLS, when a side is
//! switched to TLS, and what each side's data connections are protected with.
//!
//! The switch happens at a byte boundary the core chooses: after the `234` has been handed out
//! and with nothing read past the `AUTH` line taken as a command. Whatever a side sent behind
//! its `AUTH` in clear text is discarded (a command injected there would otherwise run inside
//! the TLS session as if the client had sent it, cf. CVE-2011-0411).

use super::action::{Action, Note, Outcome};
use super::machine::{Expect, Phase, Session};
use super::Refusal;
use crate::protocol::{Command, ReplyLine};

/// How the gateway speaks to servers when it terminates the clients' TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamTls {
    /// Plain FTP.
    #[default]
    None,
    /// `AUTH TLS` right after the greeting, then `PBSZ 0` and `PROT P`.
    Explicit,
    /// TLS from the first byte (port 990), then `PBSZ 0` and `PROT P`.
    Implicit,
}

/// The FTPS policy of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// `AUTH` answered 534 and never advertised: the gateway must read every command.
    #[default]
    Refuse,
    /// The gateway is the clients' FTPS server (its own certificate) and the servers' client.
    Terminate { upstream: UpstreamTls },
    /// The gateway mirrors each client's choice toward its server: TLS toward the server first,
    /// verified, then toward the client with a certificate the gateway's CA issues for it.
    Inspect,
}

impl TlsPolicy {
    pub fn refuses(&self) -> bool {
        *self == TlsPolicy::Refuse
    }
}

/// One side of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// Whether each side's data connections are TLS: exactly when that side asked `PROT P` (the
/// gateway asks it of a server itself when it speaks TLS to it on its own account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protection {
    pub client: bool,
    pub server: bool,
}

/// The gateway's own commands toward a server it secures on its own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpstreamStep {
    Auth,
    Pbsz,
    Prot,
}

/// The TLS state of a session's control connections.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TlsState {
    pub client: bool,
    pub server: bool,
    /// The client sent `PBSZ` on its TLS connection (RFC 4217: required before `PROT`).
    pub client_pbsz: bool,
    pub prot: Protection,
}

/// The mechanisms of RFC 4217 and the older drafts that clients still send; all mean TLS.
fn mechanism_ok(arg: &str) -> bool {
    matches!(arg.trim().to_ascii_uppercase().as_str(), "TLS" | "TLS-C" | "SSL" | "TLS-P")
}

impl Session {
    /// The side being switched to TLS, while the driver does the handshake.
    pub fn securing(&self) -> Option<Side> {
        match self.phase {
            Phase::Securing { side, .. } => Some(side),
            _ => None,
        }
    }

    /// What the next data channel is protected with on each side.
    pub fn protection(&self) -> Protection {
        self.tls.prot
    }

    /// Which control connections speak TLS now (client, server).
    pub fn tls_sides(&self) -> (bool, bool) {
        (self.tls.client, self.tls.server)
    }

    /// The driver set up a side in TLS before the first byte (implicit FTPS).
    pub fn started_in_tls(&mut self, client: bool, server: bool) {
        self.tls.client = client;
        self.tls.server = server;
    }

    fn start_tls(&mut self, side: Side, client_slot: Option<u64>) {
        self.phase = Phase::Securing { side, client_slot };
        self.out.push_back(Action::StartTls(side));
    }

    /// `AUTH`: refused, switched here, or (inspect) asked of the server first.
    pub(super) fn on_auth(&mut self, cmd: &Command) {
        if self.policy.tls.refuses() {
            return self.refuse(Refusal::TlsRefused);
        }
        if self.tls.client {
            return self.answer(503, "TLS is already in use on this connection");
        }
        if !mechanism_ok(&cmd.arg_text()) {
            return self.answer(504, "AUTH mechanism not supported; use AUTH TLS");
        }
        // The 234 must be the last thing the client reads in clear text: nothing owed before it.
        if !self.expect.is_empty() || self.data.is_some() {
            return self.answer(503, "AUTH must not follow other commands still in progress");
        }
        match self.policy.tls {
            TlsPolicy::Inspect if !self.tls.server => {
                self.send_expecting(self.slot, b"AUTH TLS\r\n".to_vec(), Expect::Auth);
            }
            _ => {
                self.answer(234, "AUTH TLS successful, proceed with the TLS handshake");
                self.flush();
                self.start_tls(Side::Client, None);
            }
        }
    }

    /// True while an `AUTH` the client sent is with the server: what the client sends after it
    /// is not read until the outcome is known (and discarded if TLS follows).
    pub(super) fn auth_pending(&self) -> bool {
        self.expect.iter().any(|p| p.expect == Expect::Auth)
    }

    /// `PBSZ` and `PROT`: answered by the gateway on a terminated session, relayed (and
    /// tracked) on an inspected one whose server speaks TLS.
    pub(super) fn on_protection(&mut self, cmd: &Command) {
        if self.policy.tls.refuses() {
            return self.refuse(Refusal::TlsRefused);
        }
        if !self.tls.client {
            return self.answer(503, "Secure the control connection with AUTH TLS first");
        }
        let arg = cmd.arg_text().trim().to_ascii_uppercase();
        let is_pbsz = cmd.name() == "PBSZ";
        let level = match (is_pbsz, arg.as_str()) {
            (true, _) if arg.parse::<u64>().is_err() => return self.answer(501, "PBSZ needs a number"),
            (true, _) => None,
            (false, _) if !self.tls.client_pbsz => return self.answer(503, "PBSZ must come before PROT"),
            (false, "P") => Some(true),
            (false, "C") => Some(false),
            (false, "S" | "E") => return self.answer(536, "Only PROT P and PROT C are supported"),
            (false, _) => return self.answer(504, "Unknown protection level"),
        };
        let inspected = self.policy.tls == TlsPolicy::Inspect && self.tls.server;
        if inspected {
            let line = match level {
                None => b"PBSZ 0\r\n".to_vec(),
                Some(true) => b"PROT P\r\n".to_vec(),
                Some(false) => b"PROT C\r\n".to_vec(),
            };
            return self.send_expecting(self.slot, line, Expect::Protection(level));
        }
        self.protection_granted(level);
        match level {
            None => self.answer(200, "PBSZ=0"),
            Some(true) => self.answer(200, "Protection level set to Private"),
            Some(false) => self.answer(200, "Protection level set to Clear"),
        }
    }

    /// `PBSZ` (`None`) or `PROT` took effect; on an inspected session for both sides.
    pub(super) fn protection_granted(&mut self, level: Option<bool>) {
        match level {
            None => self.tls.client_pbsz = true,
            Some(p) => {
                self.tls.prot.client = p;
                if self.policy.tls == TlsPolicy::Inspect {
                    self.tls.prot.server = p;
                }
            }
        }
    }

    /// The greeting is in. A server the gateway secures on its own account is secured now,
    /// before any client command goes to it; otherwise commands flow.
    pub(super) fn after_greeting(&mut self, positive: bool) {
        self.phase = Phase::Ready;
        let TlsPolicy::Terminate { upstream } = self.policy.tls else { return };
        if !positive || upstream == UpstreamTls::None {
            return;
        }
        let slot = self.slot;
        if self.tls.server {
            self.upstream_step(slot, UpstreamStep::Pbsz);
        } else {
            self.upstream_step(slot, UpstreamStep::Auth);
        }
    }

    fn upstream_step(&mut self, slot: u64, step: UpstreamStep) {
        self.phase = Phase::SecuringUpstream;
        let line: &[u8] = match step {
            UpstreamStep::Auth => b"AUTH TLS\r\n",
            UpstreamStep::Pbsz => b"PBSZ 0\r\n",
            UpstreamStep::Prot => b"PROT P\r\n",
        };
        self.send_expecting(slot, line.to_vec(), Expect::Upstream(step));
    }

    /// The final reply to one of the gateway's own commands toward the server. Any refusal
    /// ends the session: the admin asked for TLS toward this server, never a silent downgrade.
    pub(super) fn on_upstream_reply(&mut self, slot: u64, step: UpstreamStep, rl: &ReplyLine) {
        let ok = match step {
            UpstreamStep::Auth => rl.code == 234,
            UpstreamStep::Pbsz | UpstreamStep::Prot => rl.code / 100 == 2,
        };
        if !ok {
            let why = Refusal::ServerRefusedTls { command: step.command(), code: rl.code };
            self.note(Note::Refused(why));
            return self
                .close_now(Outcome::TlsFailed, Some("Server refused FTPS, closing (no downgrade to clear text)"));
        }
        match step {
            UpstreamStep::Auth => self.start_tls(Side::Server, None),
            UpstreamStep::Pbsz => self.upstream_step(slot, UpstreamStep::Prot),
            UpstreamStep::Prot => {
                self.tls.prot.server = true;
                self.phase = Phase::Ready;
            }
        }
    }

    /// The server's final reply to a client's `AUTH` on an inspected session.
    pub(super) fn on_auth_reply(&mut self, slot: u64, rl: &ReplyLine) {
        if rl.code == 234 {
            self.start_tls(Side::Server, Some(slot));
        } else {
            // The server declined; the client hears so and stays in clear text, as it would
            // without the gateway.
            self.reply(slot, &rl.raw, true);
        }
    }

    /// The driver finished the handshake on `side`.
    pub fn on_tls_ready(&mut self, side: Side) {
        let Phase::Securing { side: securing, client_slot } = self.phase else { return };
        if securing != side {
            return;
        }
        match side {
            Side::Client => {
                self.tls.client = true;
                self.phase = Phase::Ready;
            }
            Side::Server => {
                self.tls.server = true;
                match client_slot {
                    // Inspect: the server is verified; now the client may start its handshake.
                    Some(slot) => {
                        self.phase = Phase::Ready;
                        self.reply(slot, &crate::protocol::reply::reply_line(234, "AUTH TLS successful"), true);
                        self.flush();
                        self.start_tls(Side::Client, None);
                    }
                    None => self.upstream_step(self.slot, UpstreamStep::Pbsz),
                }
            }
        }
    }

    /// The handshake on `side` failed (`why` for the log). A client whose handshake failed
    /// cannot read a reply any more; a client of a server that failed verification gets 421.
    pub fn on_tls_failed(&mut self, side: Side, why: &str) {
        if self.securing() != Some(side) {
            return;
        }
        self.note(Note::Refused(Refusal::TlsHandshake { side, why: why.to_owned() }));
        match side {
            Side::Client => self.close_now(Outcome::TlsFailed, None),
            Side::Server => self.close_now(Outcome::TlsFailed, Some("TLS with the server failed, closing")),
        }
    }
}

impl UpstreamStep {
    fn command(self) -> &'static str {
        match self {
            UpstreamStep::Auth => "AUTH TLS",
            UpstreamStep::Pbsz => "PBSZ 0",
            UpstreamStep::Prot => "PROT P",
        }
    }
}
