//! The `servers` section: the networks diverted clients may reach, on top of the destinations
//! ftpgate always refuses (the firewall's own addresses, loopback, link-local, multicast...).

use super::policy::net;
use super::raw::RawList;
use super::{invalid, ConfigError};
use ipnet::IpNet;

/// `servers.allow` and `servers.deny`: when `allow` is not empty only destinations inside it
/// are reached; `deny` always wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerNets {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

pub(super) fn servers(raw: &RawList, reverse: bool) -> Result<ServerNets, ConfigError> {
    if reverse && (!raw.allow.is_empty() || !raw.deny.is_empty()) {
        // The one server of reverse mode is the administrator's choice: a list that could only
        // refuse it, or say nothing, is a mistake to point out rather than to ignore.
        let field = if raw.allow.is_empty() { "servers.deny" } else { "servers.allow" };
        return Err(invalid(field, "applies to intercepted connections only; reverse mode always goes to `upstream`"));
    }
    let nets = |list: &[String], field| list.iter().map(|s| net(s, field)).collect::<Result<Vec<_>, _>>();
    Ok(ServerNets { allow: nets(&raw.allow, "servers.allow")?, deny: nets(&raw.deny, "servers.deny")? })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_raw, validate};

    #[test]
    fn lists_of_networks_and_addresses() {
        let c = validate(
            &parse_raw("servers: {allow: [198.51.100.0/24, \"2001:db8:2::2\"], deny: [198.51.100.9]}\n").unwrap(),
        )
        .unwrap();
        let s = &c.live.servers;
        assert_eq!(s.allow, ["198.51.100.0/24".parse().unwrap(), "2001:db8:2::2/128".parse().unwrap()]);
        assert_eq!(s.deny, ["198.51.100.9/32".parse().unwrap()]);
        assert_eq!(validate(&parse_raw("").unwrap()).unwrap().live.servers, Default::default());
    }

    #[test]
    fn errors_name_the_field() {
        let err = |yaml: &str| validate(&parse_raw(yaml).unwrap()).unwrap_err().to_string();
        assert!(err("servers: {allow: [nowhere]}\n").contains("`servers.allow`"));
        assert!(err("servers: {deny: [198.51.100.0/33]}\n").contains("`servers.deny`"));
        let reverse = err("upstream: 198.51.100.2:21\nservers: {deny: [198.51.100.0/24]}\n");
        assert!(reverse.contains("`servers.deny`") && reverse.contains("intercepted"), "{reverse}");
        assert!(parse_raw("servers: {alow: []}\n").unwrap_err().contains("alow"));
    }
}
