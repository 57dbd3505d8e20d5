//! The `policy` section and the top-level fields that shape what a session lets through:
//! `server_data_address` and `server_data_mode` (`tls` is in `ftps.rs`).

use super::{invalid, ConfigError, RawConfig};
use crate::session::{CommandPolicy, FxpRule, ServerDataMode, ServerDataPolicy, SessionPolicy, UserPolicy};
use ipnet::IpNet;
use std::net::IpAddr;

/// The session policy of these fields; the limits' share of it (line length, malformed lines)
/// is left at its default for the caller to fill in.
pub(super) fn session_policy(raw: &RawConfig) -> Result<SessionPolicy, ConfigError> {
    let server_mode = match raw.server_data_mode.as_str() {
        "client" => ServerDataMode::Client,
        "passive" => ServerDataMode::Passive,
        "active" => ServerDataMode::Active,
        other => return Err(invalid("server_data_mode", format!("`{other}` is not client, passive or active"))),
    };
    let server_data = match raw.server_data_address.as_str() {
        "substitute" => ServerDataPolicy::Substitute,
        "refuse" => ServerDataPolicy::Refuse,
        other => return Err(invalid("server_data_address", format!("`{other}` is not substitute or refuse"))),
    };
    let p = &raw.policy;
    let commands = CommandPolicy {
        allow: verbs(&p.commands.allow, "policy.commands.allow")?,
        deny: verbs(&p.commands.deny, "policy.commands.deny")?,
    };
    let users =
        UserPolicy { anonymous_only: p.anonymous_only, allow: p.users.allow.clone(), deny: p.users.deny.clone() };
    let fxp = p
        .fxp
        .iter()
        .map(|r| Ok(FxpRule { client: net(&r.client, "policy.fxp.client")?, data: net(&r.data, "policy.fxp.data")? }))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(SessionPolicy { server_data, server_mode, users, commands, fxp, ..SessionPolicy::default() })
}

fn verbs(list: &[String], field: &'static str) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .map(|v| {
            let up = v.trim().to_ascii_uppercase();
            if up.is_empty() || up.len() > 8 || !up.bytes().all(|b| b.is_ascii_alphabetic()) {
                Err(invalid(field, format!("`{v}` is not an FTP command verb")))
            } else {
                Ok(up)
            }
        })
        .collect()
}

pub(super) fn net(s: &str, field: &'static str) -> Result<IpNet, ConfigError> {
    s.trim()
        .parse::<IpNet>()
        .or_else(|_| s.trim().parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| invalid(field, format!("`{s}` is not a network like 198.51.100.0/24")))
}
