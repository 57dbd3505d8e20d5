//! The client's data-setup commands: PASV/EPSV and PORT/EPRT checked (bounce, privileged
//! ports, address family, EPSV ALL) and carried out in the mode the policy gives the server.

use super::action::{DataRequest, Note};
use super::machine::{passive_command, ClientWants, Expect, PassiveForm, Session, Setup};
use super::policy::ServerDataMode;
use super::Refusal;
use crate::addr::canonical_ip;
use crate::protocol::address::{self, encode_eprt_arg, encode_port_arg};
use crate::protocol::{Command, Verb};
use std::net::SocketAddr;

impl Session {
    pub(super) fn on_passive_command(&mut self, cmd: &Command) {
        let client_form = if cmd.verb == Verb::Pasv { PassiveForm::Pasv } else { PassiveForm::Epsv };
        if client_form == PassiveForm::Epsv {
            let arg = cmd.arg_text();
            let arg = arg.trim();
            if arg.eq_ignore_ascii_case("ALL") {
                // Answered here: the gateway, not the server, decides which setup commands it takes.
                self.epsv_all = true;
                return self.answer(200, "EPSV ALL ok");
            }
            let family_ok = match arg {
                "" => true,
                "1" => !self.client.is_ipv6(),
                "2" => self.client.is_ipv6(),
                _ => false,
            };
            if !family_ok {
                self.answer(522, "Network protocol not supported, use (1,2)");
                return self.note(Note::Refused(Refusal::FamilyMismatch { verb: "EPSV" }));
            }
        } else {
            if self.epsv_all {
                return self.refuse(Refusal::AfterEpsvAll);
            }
            if self.client.is_ipv6() && !is_v4_mapped(self.client.0) {
                return self.refuse(Refusal::FamilyMismatch { verb: "PASV" });
            }
        }
        self.drop_data();
        if self.policy.server_mode == ServerDataMode::Active {
            return self.open_data(self.slot, DataRequest::Listeners, Setup::Listeners(client_form), None);
        }
        let server = self.server_passive_form(client_form);
        let expect =
            Expect::Passive { client: ClientWants::Passive(client_form), server, reply: Vec::new(), transfer: None };
        self.send_expecting(self.slot, passive_command(server), expect);
    }

    /// The passive command for the server: EPSV toward IPv6, PASV from an IPv6 client toward
    /// IPv4 (RFC 6384), otherwise the client's own form (a server that refuses EPSV is asked
    /// again with PASV).
    pub(super) fn server_passive_form(&self, client_form: PassiveForm) -> PassiveForm {
        match (self.upstream.is_ipv6(), canonical_ip(self.client.ip()).is_ipv6()) {
            (true, _) => PassiveForm::Epsv,
            (false, true) => PassiveForm::Pasv,
            (false, false) => client_form,
        }
    }

    pub(super) fn port_command(&self, listen: SocketAddr) -> Vec<u8> {
        match listen {
            SocketAddr::V4(a) if !self.upstream.is_ipv6() => Command::new("PORT", Some(&encode_port_arg(a))),
            a => Command::new("EPRT", Some(&encode_eprt_arg(a))),
        }
        .encode()
    }

    pub(super) fn on_active_command(&mut self, cmd: &Command) {
        let verb: &'static str = if cmd.verb == Verb::Port { "PORT" } else { "EPRT" };
        if self.epsv_all {
            return self.refuse(Refusal::AfterEpsvAll);
        }
        let arg = cmd.arg_text();
        let named = if cmd.verb == Verb::Port {
            address::parse_port_arg(arg.trim()).map(SocketAddr::V4)
        } else {
            address::parse_eprt_arg(arg.trim())
        };
        let named = match named {
            Ok(a) => a,
            Err(err) => return self.refuse(Refusal::BadAddress { verb, err }),
        };
        let client_ip = canonical_ip(self.client.ip());
        if named.is_ipv6() != client_ip.is_ipv6() {
            return self.refuse(Refusal::FamilyMismatch { verb });
        }
        let fxp = canonical_ip(named.ip()) != client_ip;
        if fxp
            && !self
                .policy
                .fxp
                .iter()
                .any(|r| r.client.contains(&client_ip) && r.data.contains(&canonical_ip(named.ip())))
        {
            return self.refuse(Refusal::Bounce { verb, named, client: client_ip });
        }
        if named.port() < 1024 {
            return self.refuse(Refusal::PrivilegedPort { verb, port: named.port() });
        }
        self.drop_data();
        if fxp {
            self.note(Note::Quirk("FXP: data address allowed by fxp rule"));
        }
        if self.policy.server_mode == ServerDataMode::Passive {
            let form = if cmd.verb == Verb::Port { PassiveForm::Pasv } else { PassiveForm::Epsv };
            let server = self.server_passive_form(form);
            let expect =
                Expect::Passive { client: ClientWants::Active(named), server, reply: Vec::new(), transfer: None };
            return self.send_expecting(self.slot, passive_command(server), expect);
        }
        self.open_data(self.slot, DataRequest::Active { client_data: named }, Setup::Active, None);
    }
}

fn is_v4_mapped(sa: SocketAddr) -> bool {
    matches!(sa, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some())
}
