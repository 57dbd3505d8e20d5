//! The `routes` list (routing by user name in reverse mode) and `forward.listen` (listeners
//! of the explicit forward proxy).

use super::network::socket_addr;
use super::raw::{RawForward, RawRoute};
use super::{invalid, ConfigError};
use crate::session::{Route, Routes, UserMatch};
use regex::RegexBuilder;
use std::net::SocketAddr;
use std::sync::Arc;

/// A compiled rule may take this much memory: an expression from the file must not be able
/// to make every login slow or the process big.
const MAX_REGEX_SIZE: usize = 1 << 20;

pub(super) fn forward_listen(raw: &RawForward) -> Result<Vec<SocketAddr>, ConfigError> {
    raw.listen.iter().map(|s| socket_addr(s, "forward.listen")).collect()
}

/// The rules with `default` (the `upstream` of reverse mode) for names none matches.
pub(super) fn routes(raw: &[RawRoute], default: Option<SocketAddr>) -> Result<Option<Arc<Routes>>, ConfigError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let Some(default) = default else {
        return Err(invalid("routes", "needs `upstream`: the server of users no rule matches (reverse mode)"));
    };
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let user = match (&r.user, &r.suffix, &r.regex) {
            (Some(u), None, None) if !u.is_empty() => UserMatch::Exact(u.clone()),
            (None, Some(s), None) if !s.is_empty() => UserMatch::Suffix(s.clone()),
            (None, None, Some(re)) => UserMatch::Regex(
                RegexBuilder::new(re)
                    .size_limit(MAX_REGEX_SIZE)
                    .build()
                    .map_err(|e| invalid("routes.regex", format!("rule {}: {e}", i + 1)))?,
            ),
            _ => {
                return Err(invalid(
                    "routes",
                    format!("rule {}: exactly one of user, suffix, regex (not empty)", i + 1),
                ))
            }
        };
        let upstream = socket_addr(&r.upstream, "routes.upstream")?;
        if upstream.ip().is_unspecified() || upstream.port() == 0 {
            return Err(invalid(
                "routes.upstream",
                format!("rule {}: `{upstream}` is not a usable server address", i + 1),
            ));
        }
        if r.send_as.as_deref().is_some_and(|s| s.is_empty() || s.contains(['\r', '\n', '\0'])) {
            return Err(invalid("routes.send_as", format!("rule {}: not a user name", i + 1)));
        }
        rules.push(Route { user, upstream, send_as: r.send_as.clone() });
    }
    Ok(Some(Arc::new(Routes { rules, default })))
}

#[cfg(test)]
mod tests {
    use super::super::{parse_raw, validate};

    fn err_of(yaml: &str) -> String {
        validate(&parse_raw(yaml).unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn routes_are_validated_with_their_field() {
        let base = "upstream: 198.51.100.2:21\n";
        assert!(err_of("routes: [{user: a, upstream: 198.51.100.4:21}]\n").contains("`routes`"));
        assert!(err_of(&format!("{base}routes: [{{upstream: 198.51.100.4:21}}]\n")).contains("exactly one"));
        assert!(err_of(&format!("{base}routes: [{{user: a, suffix: b, upstream: 198.51.100.4:21}}]\n"))
            .contains("exactly one"));
        assert!(
            err_of(&format!("{base}routes: [{{regex: '(', upstream: 198.51.100.4:21}}]\n")).contains("`routes.regex`")
        );
        assert!(err_of(&format!("{base}routes: [{{user: a, upstream: nowhere}}]\n")).contains("`routes.upstream`"));
        assert!(err_of(&format!("{base}routes: [{{user: a, upstream: 198.51.100.4:21, send_as: ''}}]\n"))
            .contains("`routes.send_as`"));
        assert!(parse_raw(&format!("{base}routes: [{{user: a, upstream: 198.51.100.4:21, to: b}}]\n")).is_err());
        let c =
            validate(&parse_raw(&format!("{base}routes: [{{suffix: '@b', upstream: 198.51.100.4:21}}]\n")).unwrap())
                .unwrap();
        let routes = c.live.routes.unwrap();
        assert_eq!(routes.default, "198.51.100.2:21".parse().unwrap());
        assert_eq!(routes.select("x@b").user, "x");
    }

    #[test]
    fn forward_listeners_are_addresses() {
        assert!(err_of("forward: {listen: [here]}\n").contains("`forward.listen`"));
        let c = validate(&parse_raw("listen: []\nforward: {listen: ['127.0.0.1:2121']}\n").unwrap()).unwrap();
        assert_eq!(c.startup.forward_listen, vec!["127.0.0.1:2121".parse().unwrap()]);
        assert!(err_of("listen: []\n").contains("`listen`"));
    }
}
