//! Who is acting: the `Principal` an admin-API request (and a console session) resolves
//! to, with its `Scope`, and what that scope may see. A small plain type on purpose: handlers
//! pass it to the warden's change methods, the audit trail records its name, and the
//! notifications read the same name. It knows nothing of HTTP, tokens or the store.

use std::fmt;

/// What a token may do. `Admin` reaches everything; the others reach what `Reach` lists for
/// each route (`http::admin`'s route table), `Domain` only that domain's mailboxes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Admin,
    /// Look-ups, bans (list, show, lift, lift and trust) and the block log.
    Support,
    /// The email firewall and block log of one domain's mailboxes: the domain's `login::key`,
    /// without the `@`.
    Domain(String),
    /// `/metrics` only, for Prometheus.
    Metrics,
}

/// The kinds of scope, without a domain's name: what a route's reach lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Admin,
    Support,
    Domain,
    Metrics,
}

impl ScopeKind {
    pub const ALL: [ScopeKind; 4] = [ScopeKind::Admin, ScopeKind::Support, ScopeKind::Domain, ScopeKind::Metrics];

    pub fn label(self) -> &'static str {
        match self {
            ScopeKind::Admin => "admin",
            ScopeKind::Support => "support",
            ScopeKind::Domain => "domain:",
            ScopeKind::Metrics => "metrics",
        }
    }
}

/// The longest domain a `domain:` scope names (DNS's limit).
const MAX_DOMAIN_LEN: usize = 253;

impl Scope {
    /// Reads `admin`, `support`, `metrics` or `domain:example.com` (any case; the domain is
    /// keyed as logins are, so `domain:Example.COM` is `domain:example.com`).
    pub fn parse(text: &str) -> Result<Scope, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "admin" => return Ok(Scope::Admin),
            "support" => return Ok(Scope::Support),
            "metrics" => return Ok(Scope::Metrics),
            _ => {}
        }
        let quoted: String = text.chars().take(60).collect();
        let Some(domain) = text.get(..7).filter(|p| p.eq_ignore_ascii_case("domain:")).map(|_| &text[7..]) else {
            return Err(format!("{quoted:?} is not a scope: admin, support, metrics or domain:example.com"));
        };
        let domain = crate::login::key(domain.trim_start_matches('@')).into_owned();
        let valid = !domain.is_empty()
            && domain.len() <= MAX_DOMAIN_LEN
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        if valid {
            Ok(Scope::Domain(domain))
        } else {
            Err(format!("{quoted:?}: the domain of a domain: scope is a name such as example.com"))
        }
    }

    pub fn kind(&self) -> ScopeKind {
        match self {
            Scope::Admin => ScopeKind::Admin,
            Scope::Support => ScopeKind::Support,
            Scope::Domain(_) => ScopeKind::Domain,
            Scope::Metrics => ScopeKind::Metrics,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Domain(domain) => write!(f, "domain:{domain}"),
            other => f.write_str(other.kind().label()),
        }
    }
}

/// The acting token (or, later, console session): its name, as the audit trail shows it, and
/// its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scope: Scope,
}

/// The name the policy file's (or state_dir's) `auth.admin_token` acts under.
pub const BUILT_IN_ADMIN: &str = "admin-token";

/// Why `Principal::mailbox_key` gave no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxRefusal {
    /// Not a login or `@domain`; the message says so.
    NotAMailbox(String),
    /// Another domain's mailbox, for a `domain:` principal.
    NotYours,
}

impl Principal {
    /// The policy file's `auth.admin_token`.
    pub fn built_in_admin() -> Principal {
        Principal { name: BUILT_IN_ADMIN.to_string(), scope: Scope::Admin }
    }

    /// Whether this principal may see and change the mailbox or `@domain` whose firewall key
    /// (`firewall::parse_key`, a `login::key`) is `key`. A domain scope sees exactly the keys
    /// whose part after the `@` is its domain: a login without a domain is nobody's.
    pub fn sees_key(&self, key: &str) -> bool {
        match &self.scope {
            Scope::Admin | Scope::Support => true,
            Scope::Domain(domain) => key.rsplit_once('@').is_some_and(|(_, of)| of == domain),
            Scope::Metrics => false,
        }
    }

    /// The firewall key of `login` (a mailbox or `@domain`, `firewall::parse_key`), if this
    /// principal may see it: the very key the warden will act on, so no spelling of another
    /// domain's mailbox (case, spaces, percent-decoded by the router) passes the check and
    /// then names it. The admin API and the console both ask this, never `parse_key` alone.
    pub fn mailbox_key(&self, login: &str) -> Result<String, MailboxRefusal> {
        let key = crate::firewall::parse_key(login).map_err(MailboxRefusal::NotAMailbox)?;
        if self.sees_key(&key) { Ok(key) } else { Err(MailboxRefusal::NotYours) }
    }

    /// The domain this principal is confined to, if any.
    pub fn domain(&self) -> Option<&str> {
        match &self.scope {
            Scope::Domain(domain) => Some(domain),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_in_any_case_and_show_as_written_in_the_docs() {
        for (text, shown) in [
            ("admin", "admin"),
            ("Support", "support"),
            ("METRICS", "metrics"),
            ("domain:Example.COM", "domain:example.com"),
            ("DOMAIN:@example.com", "domain:example.com"),
        ] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), shown, "{text}");
        }
        for text in ["", "root", "domain:", "domain:localhost", "domain:a b.com", "domain:.com", "domain:x@y.com"] {
            assert!(Scope::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_domain_scope_sees_only_its_own_domains_keys() {
        let customer = Principal { name: "customer".into(), scope: Scope::Domain("example.com".into()) };
        assert!(customer.sees_key("bob@example.com"));
        assert!(customer.sees_key("@example.com"));
        for key in ["bob@other.com", "@other.com", "bob", "bob@sub.example.com", "bob@example.com.evil", "example.com"]
        {
            assert!(!customer.sees_key(key), "{key}");
        }
    }
}
