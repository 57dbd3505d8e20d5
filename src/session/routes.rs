//! Routing by user name (reverse mode): which server a login goes to and under which name.
//! Pure: the rules are matched here, the runtime only connects where the result says.

use crate::addr::UpstreamAddr;
use regex::Regex;
use std::net::SocketAddr;

/// How a rule recognises a user name.
#[derive(Debug, Clone)]
pub enum UserMatch {
    /// The whole name, compared exactly.
    Exact(String),
    /// Names ending in this text (and longer than it), such as `@site-b`.
    Suffix(String),
    /// A regular expression; an unanchored one may match anywhere in the name.
    Regex(Regex),
}

impl PartialEq for UserMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (UserMatch::Exact(a), UserMatch::Exact(b)) | (UserMatch::Suffix(a), UserMatch::Suffix(b)) => a == b,
            (UserMatch::Regex(a), UserMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for UserMatch {}

/// One rule: users it matches go to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub user: UserMatch,
    pub upstream: SocketAddr,
    /// The name sent upstream. For a regular expression `$1`, `${name}` and so on expand to
    /// its groups; `None` sends the client's name, a suffix rule's without the suffix.
    pub send_as: Option<String>,
}

/// The rules in order, then the default server for names no rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub rules: Vec<Route>,
    pub default: SocketAddr,
}

/// Where a login goes and the name it is replayed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub upstream: UpstreamAddr,
    pub user: String,
    /// The rule that matched (its position in the list), `None` for the default.
    pub rule: Option<usize>,
}

impl Routes {
    /// The first rule matching `user`, else the default server with the name unchanged.
    pub fn select(&self, user: &str) -> Routed {
        for (i, r) in self.rules.iter().enumerate() {
            let name = match &r.user {
                UserMatch::Exact(name) if name == user => r.send_as.clone().unwrap_or_else(|| user.to_owned()),
                UserMatch::Suffix(suffix) if user.len() > suffix.len() && user.ends_with(suffix.as_str()) => {
                    r.send_as.clone().unwrap_or_else(|| user[..user.len() - suffix.len()].to_owned())
                }
                UserMatch::Regex(re) => match re.captures(user) {
                    Some(caps) => match &r.send_as {
                        Some(template) => {
                            let mut out = String::new();
                            caps.expand(template, &mut out);
                            out
                        }
                        None => user.to_owned(),
                    },
                    None => continue,
                },
                _ => continue,
            };
            return Routed { upstream: UpstreamAddr(r.upstream), user: name, rule: Some(i) };
        }
        Routed { upstream: UpstreamAddr(self.default), user: user.to_owned(), rule: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "198.51.100.2:21";
    const B: &str = "198.51.100.4:21";

    fn routes() -> Routes {
        Routes {
            rules: vec![
                Route { user: UserMatch::Exact("carol".into()), upstream: B.parse().unwrap(), send_as: None },
                Route { user: UserMatch::Suffix("@site-b".into()), upstream: B.parse().unwrap(), send_as: None },
                Route {
                    user: UserMatch::Regex(Regex::new(r"^(?<who>[a-z]+)\+b$").unwrap()),
                    upstream: B.parse().unwrap(),
                    send_as: Some("${who}".into()),
                },
                Route {
                    user: UserMatch::Exact("dave".into()),
                    upstream: A.parse().unwrap(),
                    send_as: Some("d".into()),
                },
            ],
            default: A.parse().unwrap(),
        }
    }

    fn sel(user: &str) -> (String, String, Option<usize>) {
        let r = routes().select(user);
        (r.upstream.to_string(), r.user, r.rule)
    }

    #[test]
    fn rules_match_in_order_and_rename() {
        assert_eq!(sel("carol"), (B.into(), "carol".into(), Some(0)));
        assert_eq!(sel("alice@site-b"), (B.into(), "alice".into(), Some(1)));
        // The last `@site-b` is the suffix; names may contain `@` themselves.
        assert_eq!(sel("a@b@site-b"), (B.into(), "a@b".into(), Some(1)));
        assert_eq!(sel("bob+b"), (B.into(), "bob".into(), Some(2)));
        assert_eq!(sel("dave"), (A.into(), "d".into(), Some(3)));
    }

    #[test]
    fn what_no_rule_matches_goes_to_the_default_unchanged() {
        // Exact means exact; a bare suffix is no name; the regex is anchored by its author.
        for user in ["Carol", "carol2", "@site-b", "bob+bb", "alice"] {
            assert_eq!(sel(user), (A.into(), user.into(), None), "{user}");
        }
    }

    #[test]
    fn equality_compares_the_rules_as_written() {
        assert_eq!(routes(), routes());
        let mut other = routes();
        other.rules[2].user = UserMatch::Regex(Regex::new(r"^x$").unwrap());
        assert_ne!(routes(), other);
    }
}
