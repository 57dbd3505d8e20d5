//! A session's data channels: asking the driver for one, its answers by channel id, the end of
//! a channel, and what the client is told once a channel is ready.

use super::action::{Action, DataId, DataReady, DataRequest, Note, TransferInfo};
use super::machine::{Abort, Expect, OpenData, PassiveForm, Pending, Phase, Session, Setup};
use crate::protocol::address::{encode_227, encode_229};
use crate::protocol::reply::reply_line;
use std::net::{SocketAddr, SocketAddrV4};

/// What the client is told instead of a success whose data did not all arrive.
pub(super) const LOST: &str = "Data connection closed before all data arrived; transfer aborted";
pub(super) const LOST_NOTE: &str =
    "server reported success for a transfer whose data did not all arrive; client told 426";

impl Session {
    fn new_data_id(&mut self) -> DataId {
        self.next_data += 1;
        DataId(self.next_data)
    }

    /// Asks the driver for a data channel; the session waits for its answer.
    /// `transfer`: a command the client already sent that this channel will carry.
    pub(super) fn open_data(&mut self, slot: u64, request: DataRequest, setup: Setup, transfer: Option<TransferInfo>) {
        let id = self.new_data_id();
        let abort = match self.phase {
            Phase::Aborting(a) => Some(a),
            _ => None,
        };
        self.phase = Phase::SettingUp { id, slot, setup, abort };
        self.out.push_back(Action::OpenData { id, request });
        if let Some(t) = &transfer {
            self.out.push_back(Action::DataCarries { id, toward: t.toward });
        }
        self.data = Some(OpenData { id, transfer });
    }

    /// A transfer command goes to the server: the data channel it will use learns what it
    /// carries. That is the channel of the newest passive command still unanswered (a client
    /// that pipelines PASV and RETR), else the open one.
    pub(super) fn link_transfer(&mut self, info: TransferInfo) {
        let pending = self.expect.iter_mut().rev().find_map(|p| match &mut p.expect {
            Expect::Passive { transfer, .. } => Some(transfer),
            _ => None,
        });
        if let Some(transfer) = pending {
            *transfer = Some(info);
        } else if let Some(d) = self.data.as_mut() {
            self.out.push_back(Action::DataCarries { id: d.id, toward: info.toward });
            d.transfer = Some(info);
        }
    }

    /// Drops the open data channel, if any; replies waiting for it may go.
    pub(super) fn drop_data(&mut self) {
        if let Some(d) = self.data.take() {
            self.replies.data_gone(d.id);
            self.drop_channel(d);
        }
    }

    /// Tells the driver to drop channel `d`; one carrying a transfer is noted as aborted first.
    pub(super) fn drop_channel(&mut self, d: OpenData) {
        if let Some(transfer) = d.transfer {
            self.note(Note::TransferAborted { id: d.id, transfer });
        }
        self.out.push_back(Action::DropData(d.id));
    }

    pub(super) fn drop_data_channel(&mut self, id: DataId) {
        if self.data.as_ref().is_some_and(|d| d.id == id) {
            self.drop_data();
        }
    }

    /// Leaves the set-up phase for the one it interrupted.
    fn setup_done(&mut self, abort: Option<Abort>) {
        self.phase = abort.map_or(Phase::Ready, Phase::Aborting);
    }

    fn setup_matches(&mut self, id: DataId, event: &'static str) -> Option<(u64, Setup, Option<Abort>)> {
        match self.phase {
            Phase::SettingUp { id: want, slot, setup, abort } if want == id => Some((slot, setup, abort)),
            _ => {
                self.note(Note::StaleData { id, event });
                None
            }
        }
    }

    /// The driver set up data channel `id`.
    pub fn on_data_ready(&mut self, id: DataId, ready: DataReady) {
        let Some((slot, setup, abort)) = self.setup_matches(id, "ready") else { return };
        self.setup_done(abort);
        match (setup, ready) {
            (Setup::Passive(form), DataReady::Listening(advertise)) => self.tell_client_passive(slot, form, advertise),
            (Setup::Active, DataReady::Listening(listen)) => {
                self.expect.push_back(Pending { slot, expect: Expect::PortAck });
                let port = self.port_command(listen);
                self.out.push_back(Action::ToServer(port));
            }
            (Setup::Listeners(client), DataReady::Listeners { advertise, listen }) => {
                self.expect.push_back(Pending { slot, expect: Expect::ConvertedPortAck { client, advertise } });
                self.note(Note::Quirk("client passive mode carried out in active mode toward the server"));
                let port = self.port_command(listen);
                self.out.push_back(Action::ToServer(port));
            }
            (Setup::Connect, DataReady::Connecting) => {
                self.note(Note::Quirk("client active mode carried out in passive mode toward the server"));
                self.reply(slot, &reply_line(200, "Active mode accepted (passive toward the server)"), true);
            }
            _ => {
                // A driver answering with the wrong kind is a local fault: no half-set-up channel.
                self.drop_data();
                self.reply(slot, &reply_line(425, "Cannot open data connection: internal mismatch"), true);
            }
        }
    }

    /// The driver could not set up data channel `id` (no free port, bind error): 425.
    pub fn on_data_failed(&mut self, id: DataId, why: &str) {
        let Some((slot, _, abort)) = self.setup_matches(id, "failed") else { return };
        self.setup_done(abort);
        self.data = None;
        self.reply(slot, &reply_line(425, &format!("Cannot open data connection: {why}")), true);
    }

    /// Data channel `id` has finished (its last byte is through, or it failed). Returns the
    /// transfer it carried, if the session still knew the channel.
    /// `delivered` is false when the channel ended before every byte crossed: the transfer's
    /// final reply, if the server calls it a success, reaches the client as 426 instead.
    pub fn on_data_finished(&mut self, id: DataId, delivered: bool) -> Option<Option<TransferInfo>> {
        match self.data.take() {
            Some(d) if d.id == id => {
                if !delivered && d.transfer.is_some() {
                    self.transfer_data_failed(id);
                }
                self.replies.data_gone(id);
                if let Phase::SettingUp { id: pending, .. } = self.phase {
                    // Finished before it was reported ready: it never will be.
                    if pending == id {
                        self.on_data_failed(id, "data channel ended during set-up");
                    }
                }
                Some(d.transfer)
            }
            other => {
                self.data = other;
                self.note(Note::StaleData { id, event: "finished" });
                None
            }
        }
    }

    /// The data of the transfer on channel `id` did not all arrive: a positive final reply the
    /// queue holds for it, or the one still to come, becomes 426.
    fn transfer_data_failed(&mut self, id: DataId) {
        let lost = reply_line(426, LOST);
        if self.replies.rewrite_positive_held(id, &lost) {
            return self.note(Note::Quirk(LOST_NOTE));
        }
        let first = self.expect.iter_mut().find(|p| matches!(p.expect, Expect::Transfer { .. }));
        if let Some(Pending { expect: Expect::Transfer { data_failed, .. }, .. }) = first {
            *data_failed = true;
        }
    }

    /// Answers a client's PASV/EPSV with the address it is to connect to.
    pub(super) fn tell_client_passive(&mut self, slot: u64, form: PassiveForm, advertise: SocketAddr) {
        let line = match (form, advertise) {
            (PassiveForm::Pasv, SocketAddr::V4(a)) => encode_227(a),
            (PassiveForm::Pasv, SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                Some(v4) => encode_227(SocketAddrV4::new(v4, a.port())),
                None => {
                    self.drop_data();
                    reply_line(425, "Cannot express data address in 227")
                }
            },
            (PassiveForm::Epsv, a) => encode_229(a.port()),
        };
        self.reply(slot, &line, true);
    }
}
