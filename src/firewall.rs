//! The per-mailbox email firewall: each mailbox (or a whole domain, `@example.com`) has an
//! ordered list of allow/block rules and a default action; the first rule that matches the
//! login's address decides, and no match falls to the default. A rule looks at one thing: an
//! address or network, a list of countries, a list of AS numbers, or whether the address is
//! non-residential (hosting, VPN, proxy, Tor).
//!
//! Pure: evaluation takes the facts about the address (country, ASN, ...) already looked up by
//! the caller, which looks up only what the rule set `needs`. `RuleSpec` is the one written
//! form of a rule, shared by policy.toml, the admin API and the store.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::geoip::CountryCode;
use crate::hashing::KeyedMap;
use crate::network::{NetworkMap, parse_ip, parse_network};
use crate::wire::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Block,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block => "block",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        match text.trim() {
            "allow" => Some(Action::Allow),
            "block" => Some(Action::Block),
            _ => None,
        }
    }
}

/// What one rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    /// An address (a /32 or /128) or a network.
    Network(IpNet),
    Countries(Vec<CountryCode>),
    Asns(Vec<u32>),
    /// Hosting, data-centre, VPN, proxy and Tor addresses.
    NonResidential,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub criterion: Criterion,
}

/// An AS number as written: `64500` or `"AS64500"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AsnSpec {
    Number(u32),
    Text(String),
}

/// Written by hand rather than derived (`untagged`), so that a wrong value is named ("-5 is
/// not an AS number ...") instead of "data did not match any variant".
impl<'de> Deserialize<'de> for AsnSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<AsnSpec, D::Error> {
        struct Visitor;
        const EXPECTED: &str = "an AS number such as 64500 or \"AS64500\"";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AsnSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<AsnSpec, E> {
                u32::try_from(n)
                    .map(AsnSpec::Number)
                    .map_err(|_| E::custom(format!("{n} is not {EXPECTED} (AS numbers end at 4294967295)")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<AsnSpec, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("{n} is not {EXPECTED}"))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<AsnSpec, E> {
                Ok(AsnSpec::Text(text.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A rule as written in policy.toml, the admin API and the store: an action and exactly one
/// criterion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// `allow` or `block`.
    pub action: String,
    /// One address, e.g. `203.0.113.7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A network, e.g. `198.51.100.0/24` or `2001:db8::/32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// ISO 3166 country codes, e.g. `["FR", "BE"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Vec<String>>,
    /// AS numbers, e.g. `[3215, "AS12322"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<Vec<AsnSpec>>,
    /// `true`: hosting, data-centre, VPN, proxy and Tor addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_residential: Option<bool>,
}

/// What is wrong with a written rule: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn rule_error(field: &'static str, message: impl Into<String>) -> RuleError {
    RuleError { field, message: message.into() }
}

fn parse_asn(spec: &AsnSpec) -> Option<u32> {
    match spec {
        AsnSpec::Number(n) => Some(*n),
        AsnSpec::Text(text) => {
            let digits = text.trim();
            let digits = digits.strip_prefix("AS").or_else(|| digits.strip_prefix("as")).unwrap_or(digits);
            digits.parse().ok()
        }
    }
}

impl RuleSpec {
    /// Validates the written rule.
    pub fn parse(&self) -> Result<Rule, RuleError> {
        let action = Action::parse(&self.action)
            .ok_or_else(|| rule_error("action", format!("{:?} is neither \"allow\" nor \"block\"", self.action)))?;
        let given = [
            self.address.is_some(),
            self.network.is_some(),
            self.country.is_some(),
            self.asn.is_some(),
            self.non_residential.is_some(),
        ];
        let names = ["address", "network", "country", "asn", "non_residential"];
        let named: Vec<&str> = names.iter().zip(given).filter(|(_, g)| *g).map(|(n, _)| *n).collect();
        match named.as_slice() {
            [_] => {}
            [] => {
                return Err(rule_error("rule", "a rule needs one of address, network, country, asn, non_residential"));
            }
            many => {
                return Err(rule_error(
                    "rule",
                    format!(
                        "a rule has exactly one criterion, this one has {}; write one rule for each",
                        many.join(" and ")
                    ),
                ));
            }
        }
        let criterion = if let Some(address) = &self.address {
            let ip = parse_ip(address).map_err(|e| rule_error("address", e.to_string()))?;
            Criterion::Network(IpNet::from(ip))
        } else if let Some(network) = &self.network {
            Criterion::Network(parse_network(network).map_err(|e| rule_error("network", e.to_string()))?)
        } else if let Some(countries) = &self.country {
            if countries.is_empty() {
                return Err(rule_error("country", "the list is empty"));
            }
            let codes = countries
                .iter()
                .map(|c| {
                    CountryCode::parse(c).ok_or_else(|| {
                        rule_error("country", format!("{c:?} is not a two-letter ISO 3166 country code"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Criterion::Countries(codes)
        } else if let Some(asns) = &self.asn {
            if asns.is_empty() {
                return Err(rule_error("asn", "the list is empty"));
            }
            let numbers = asns
                .iter()
                .map(|a| {
                    parse_asn(a).ok_or_else(|| {
                        rule_error("asn", format!("{a:?} is not an AS number such as 64500 or \"AS64500\""))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Criterion::Asns(numbers)
        } else if self.non_residential == Some(true) {
            Criterion::NonResidential
        } else {
            return Err(rule_error("non_residential", "only `non_residential = true` is a criterion"));
        };
        Ok(Rule { action, criterion })
    }
}

impl Rule {
    /// The written form, normalised (what the API shows and the store keeps).
    pub fn spec(&self) -> RuleSpec {
        let mut spec = RuleSpec { action: self.action.label().to_string(), ..RuleSpec::default() };
        match &self.criterion {
            Criterion::Network(net) if net.prefix_len() == net.max_prefix_len() => {
                spec.address = Some(net.addr().to_string())
            }
            Criterion::Network(net) => spec.network = Some(net.to_string()),
            Criterion::Countries(codes) => spec.country = Some(codes.iter().map(|c| c.to_string()).collect()),
            Criterion::Asns(asns) => spec.asn = Some(asns.iter().map(|a| AsnSpec::Number(*a)).collect()),
            Criterion::NonResidential => spec.non_residential = Some(true),
        }
        spec
    }

    /// Which GeoIP source the rule needs, as the configuration key that provides it.
    pub fn needs_database(&self) -> Option<&'static str> {
        match self.criterion {
            Criterion::Network(_) => None,
            Criterion::Countries(_) => Some("geoip.country_db"),
            Criterion::Asns(_) => Some("geoip.asn_db"),
            Criterion::NonResidential => Some("geoip.anonymous_db or a geoip.non_residential_* list"),
        }
    }
}

/// The protocols a rule set covers: IMAP and POP3 by default (mail apps), optionally SMTP
/// submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols(u8);

impl Protocols {
    pub const MAIL_APPS: Protocols = Protocols(0b11);

    fn bit(protocol: Protocol) -> u8 {
        match protocol {
            Protocol::Imap => 1,
            Protocol::Pop3 => 2,
            Protocol::Smtp => 4,
            Protocol::Submission => 8,
            Protocol::Sieve => 16,
            Protocol::Other => 0,
        }
    }

    pub fn parse(names: &[String]) -> Result<Protocols, RuleError> {
        let mut bits = 0;
        for name in names {
            let protocol = Protocol::from_name(name.trim());
            if protocol == Protocol::Other {
                return Err(rule_error(
                    "protocols",
                    format!("{name:?} is not one of imap, pop3, smtp, submission, sieve"),
                ));
            }
            bits |= Protocols::bit(protocol);
        }
        if bits == 0 {
            return Err(rule_error("protocols", "the list is empty"));
        }
        Ok(Protocols(bits))
    }

    pub fn covers(self, protocol: Protocol) -> bool {
        self.0 & Protocols::bit(protocol) != 0
    }

    pub fn names(self) -> Vec<String> {
        [Protocol::Imap, Protocol::Pop3, Protocol::Smtp, Protocol::Submission, Protocol::Sieve]
            .into_iter()
            .filter(|p| self.covers(*p))
            .map(|p| p.label().to_string())
            .collect()
    }
}

/// One mailbox's (or domain's) rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub default: Action,
    pub protocols: Protocols,
    /// Observe mode: what the rules would refuse is recorded ("would refuse"), nothing is
    /// refused. A customer trials "only France" for a week this way.
    pub observe: bool,
}

/// What evaluation needs to know about the address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub country: bool,
    pub asn: bool,
    pub non_residential: bool,
}

/// The facts about an address, looked up for what the rule set needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFacts {
    pub ip: IpAddr,
    pub country: Option<CountryCode>,
    pub asn: Option<u32>,
    pub non_residential: bool,
}

/// How the firewall decided. Rule numbers count from 1, as users read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AllowedByRule(usize),
    AllowedByDefault,
    BlockedByRule(usize),
    BlockedByDefault,
}

impl Outcome {
    pub fn is_blocked(self) -> bool {
        matches!(self, Outcome::BlockedByRule(_) | Outcome::BlockedByDefault)
    }
}

impl RuleSet {
    pub fn needs(&self) -> Needs {
        let mut needs = Needs::default();
        for rule in &self.rules {
            match rule.criterion {
                Criterion::Countries(_) => needs.country = true,
                Criterion::Asns(_) => needs.asn = true,
                Criterion::NonResidential => needs.non_residential = true,
                Criterion::Network(_) => {}
            }
        }
        needs
    }

    /// First match decides; no match falls to the default.
    pub fn evaluate(&self, facts: &AddressFacts) -> Outcome {
        for (index, rule) in self.rules.iter().enumerate() {
            let matches = match &rule.criterion {
                Criterion::Network(net) => net.contains(&facts.ip),
                Criterion::Countries(codes) => facts.country.is_some_and(|c| codes.contains(&c)),
                Criterion::Asns(asns) => facts.asn.is_some_and(|a| asns.contains(&a)),
                Criterion::NonResidential => facts.non_residential,
            };
            if matches {
                return match rule.action {
                    Action::Allow => Outcome::AllowedByRule(index + 1),
                    Action::Block => Outcome::BlockedByRule(index + 1),
                };
            }
        }
        match self.default {
            Action::Allow => Outcome::AllowedByDefault,
            Action::Block => Outcome::BlockedByDefault,
        }
    }
}

/// A rule set as written in the admin API and the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredRuleSet {
    /// `allow` or `block`: what happens when no rule matches.
    pub default: String,
    /// The protocols the rules apply to (default `["imap", "pop3"]`).
    #[serde(default = "mail_app_protocols")]
    pub protocols: Vec<String>,
    /// Evaluated top to bottom; the first match decides.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// `enforce` (the default) or `observe`: only record what the rules would refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

fn mail_app_protocols() -> Vec<String> {
    Protocols::MAIL_APPS.names()
}

/// A problem with a written rule set, located: `rules[2].country`-style field paths count
/// rules from 1, as users read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSetError {
    /// `default`, `protocols`, or `rule no. N (field)`.
    pub location: String,
    /// The API field: `default`, `protocols`, `rules`.
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RuleSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl StoredRuleSet {
    pub fn parse(&self) -> Result<RuleSet, RuleSetError> {
        let default = Action::parse(&self.default).ok_or_else(|| RuleSetError {
            location: "default".into(),
            field: "default",
            message: format!("{:?} is neither \"allow\" nor \"block\"", self.default),
        })?;
        let protocols = Protocols::parse(&self.protocols).map_err(|e| RuleSetError {
            location: "protocols".into(),
            field: "protocols",
            message: e.message,
        })?;
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                spec.parse().map_err(|e| RuleSetError {
                    location: match e.field {
                        "rule" => format!("rule no. {}", i + 1),
                        field => format!("rule no. {} ({field})", i + 1),
                    },
                    field: "rules",
                    message: e.message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let observe = match self.mode.as_deref() {
            None | Some("enforce") => false,
            Some("observe") => true,
            Some(other) => {
                return Err(RuleSetError {
                    location: "mode".into(),
                    field: "mode",
                    message: format!("{other:?} is neither \"enforce\" nor \"observe\""),
                });
            }
        };
        Ok(RuleSet { rules, default, protocols, observe })
    }
}

impl From<&RuleSet> for StoredRuleSet {
    fn from(set: &RuleSet) -> StoredRuleSet {
        StoredRuleSet {
            default: set.default.label().to_string(),
            protocols: set.protocols.names(),
            rules: set.rules.iter().map(Rule::spec).collect(),
            mode: set.observe.then(|| "observe".to_string()),
        }
    }
}

/// Where a rule set came from. The API's set for a mailbox replaces the file's; the file stays
/// the admin's baseline (deleting the API's set brings it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSetOrigin {
    PolicyFile,
    Api,
}

impl RuleSetOrigin {
    pub fn label(self) -> &'static str {
        match self {
            RuleSetOrigin::PolicyFile => "policy_file",
            RuleSetOrigin::Api => "api",
        }
    }
}

/// A rule set with its key (`alice@example.com` or `@example.com`) and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRuleSet {
    pub key: String,
    pub origin: RuleSetOrigin,
    pub rule_set: RuleSet,
}

/// The key a rule set is stored under: a login, or `@domain` for a whole domain, trimmed and
/// keyed by `login::key` as every login it is matched against is; anything else is refused.
pub fn parse_key(text: &str) -> Result<String, String> {
    let key = crate::login::key(text.trim()).into_owned();
    let valid = !key.is_empty()
        && key.len() <= 320
        && key
            .chars()
            .all(|c| c.is_ascii_graphic() && !"\"\\/,;()<>[]".contains(c) || !c.is_ascii() && !c.is_control())
        && key.matches('@').count() <= 1
        && !key.ends_with('@')
        && (key != "@");
    if valid { Ok(key) } else { Err(format!("{text:?} is not a login (alice@example.com) or a domain (@example.com)")) }
}

/// Every rule set in force (the policy file's, overridden by the API's) and the webmail
/// networks the firewall does not apply to. Read-only; rebuilt whole on any change.
#[derive(Debug, Clone, Default)]
pub struct Firewall {
    by_key: KeyedMap<String, Arc<KeyedRuleSet>>,
    webmail: NetworkMap<()>,
}

/// The rule set that applies to a login, and whether it is the mailbox's own or its domain's.
#[derive(Debug, Clone)]
pub struct Applicable {
    pub keyed: Arc<KeyedRuleSet>,
    pub via_domain: bool,
}

impl Firewall {
    /// Builds the snapshot; a later set for the same key replaces an earlier one (pass the
    /// file's sets first, then the API's).
    pub fn build(sets: impl IntoIterator<Item = KeyedRuleSet>, webmail: &[IpNet]) -> Firewall {
        let mut by_key = KeyedMap::default();
        for set in sets {
            by_key.insert(set.key.clone(), Arc::new(set));
        }
        let mut networks = NetworkMap::default();
        for net in webmail {
            networks.insert(*net, ());
        }
        Firewall { by_key, webmail: networks }
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The mailbox's own set, else its domain's.
    pub fn applicable(&self, login: &str) -> Option<Applicable> {
        if self.by_key.is_empty() || login.is_empty() {
            return None;
        }
        let login = crate::login::key(login);
        if let Some(own) = self.by_key.get(login.as_ref()) {
            return Some(Applicable { keyed: own.clone(), via_domain: false });
        }
        let domain = &login[login.rfind('@')?..];
        self.by_key.get(domain).map(|set| Applicable { keyed: set.clone(), via_domain: true })
    }

    /// The set stored under exactly `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<KeyedRuleSet>> {
        self.by_key.get(key)
    }

    /// Whether the TCP peer is a webmail server (the firewall is for mail apps).
    pub fn is_webmail(&self, peer: IpAddr) -> bool {
        !self.webmail.is_empty() && self.webmail.longest_match(peer).is_some()
    }

    /// All keys with a set, sorted.
    pub fn keys(&self) -> Vec<&Arc<KeyedRuleSet>> {
        let mut sets: Vec<_> = self.by_key.values().collect();
        sets.sort_by(|a, b| a.key.cmp(&b.key));
        sets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> RuleSpec {
        serde_json::from_str(json).unwrap()
    }

    fn rule(json: &str) -> Rule {
        spec(json).parse().unwrap()
    }

    fn facts(ip: &str, country: Option<&str>, asn: Option<u32>, non_residential: bool) -> AddressFacts {
        AddressFacts { ip: ip.parse().unwrap(), country: country.and_then(CountryCode::parse), asn, non_residential }
    }

    fn alice_rules() -> RuleSet {
        // The example from the issue: the office network, then no hosting/VPN, then FR and BE.
        RuleSet {
            observe: false,
            rules: vec![
                rule(r#"{"action":"allow","network":"198.51.100.0/24"}"#),
                rule(r#"{"action":"block","non_residential":true}"#),
                rule(r#"{"action":"allow","country":["FR","be"]}"#),
            ],
            default: Action::Block,
            protocols: Protocols::MAIL_APPS,
        }
    }

    #[test]
    fn rules_apply_top_to_bottom_and_the_first_match_decides() {
        let set = alice_rules();
        // The office network is allowed even from a hosting provider: rule 1 comes first.
        assert_eq!(set.evaluate(&facts("198.51.100.7", Some("CN"), None, true)), Outcome::AllowedByRule(1));
        assert_eq!(set.evaluate(&facts("203.0.113.7", Some("FR"), None, true)), Outcome::BlockedByRule(2));
        assert_eq!(set.evaluate(&facts("203.0.113.7", Some("FR"), None, false)), Outcome::AllowedByRule(3));
        assert_eq!(set.evaluate(&facts("203.0.113.7", Some("BE"), None, false)), Outcome::AllowedByRule(3));
        assert_eq!(set.evaluate(&facts("203.0.113.7", Some("CN"), None, false)), Outcome::BlockedByDefault);
        assert_eq!(
            set.evaluate(&facts("203.0.113.7", None, None, false)),
            Outcome::BlockedByDefault,
            "an unknown country matches no country rule"
        );
    }

    #[test]
    fn every_criterion_matches_v4_and_v6() {
        let set = RuleSet {
            observe: false,
            rules: vec![
                rule(r#"{"action":"block","address":"2001:db8::7"}"#),
                rule(r#"{"action":"allow","network":"2001:db8::/32"}"#),
                rule(r#"{"action":"allow","asn":[64500,"AS64501"]}"#),
                rule(r#"{"action":"block","address":"192.0.2.1"}"#),
            ],
            default: Action::Allow,
            protocols: Protocols::MAIL_APPS,
        };
        assert_eq!(set.evaluate(&facts("2001:db8::7", None, None, false)), Outcome::BlockedByRule(1));
        assert_eq!(set.evaluate(&facts("2001:db8::8", None, None, false)), Outcome::AllowedByRule(2));
        assert_eq!(set.evaluate(&facts("192.0.2.9", None, Some(64501), false)), Outcome::AllowedByRule(3));
        assert_eq!(set.evaluate(&facts("192.0.2.1", None, Some(1), false)), Outcome::BlockedByRule(4));
        assert_eq!(set.evaluate(&facts("192.0.2.2", None, None, false)), Outcome::AllowedByDefault);
        assert_eq!(set.needs(), Needs { country: false, asn: true, non_residential: false });
    }

    #[test]
    fn written_rules_are_checked_and_normalised() {
        let err = |json: &str| spec(json).parse().unwrap_err().to_string();
        assert_eq!(
            err(r#"{"action":"deny","network":"10.0.0.0/8"}"#),
            "action: \"deny\" is neither \"allow\" nor \"block\""
        );
        assert_eq!(
            err(r#"{"action":"allow"}"#),
            "rule: a rule needs one of address, network, country, asn, non_residential"
        );
        assert_eq!(
            err(r#"{"action":"allow","country":["FR"],"asn":[1]}"#),
            "rule: a rule has exactly one criterion, this one has country and asn; write one rule for each"
        );
        let asn = serde_json::from_str::<RuleSpec>(r#"{"action":"allow","asn":[-5]}"#).unwrap_err().to_string();
        assert!(asn.starts_with("-5 is not an AS number such as 64500"), "{asn}");
        assert!(
            err(r#"{"action":"allow","country":["France"]}"#).starts_with("country: \"France\" is not a two-letter")
        );
        assert!(err(r#"{"action":"allow","asn":["ASX"]}"#).starts_with("asn:"));
        assert!(err(r#"{"action":"allow","network":"10.0.0.0/40"}"#).starts_with("network:"));
        assert!(err(r#"{"action":"allow","non_residential":false}"#).starts_with("non_residential:"));
        assert!(serde_json::from_str::<RuleSpec>(r#"{"action":"allow","contry":["FR"]}"#).is_err());
        let normalised = rule(r#"{"action":"allow","asn":["as64500"]}"#).spec();
        assert_eq!(serde_json::to_string(&normalised).unwrap(), r#"{"action":"allow","asn":[64500]}"#);
        assert_eq!(
            serde_json::to_string(&rule(r#"{"action":"block","network":"192.0.2.7/32"}"#).spec()).unwrap(),
            r#"{"action":"block","address":"192.0.2.7"}"#
        );
        assert_eq!(
            serde_json::to_string(&rule(r#"{"action":"block","country":["cn"]}"#).spec()).unwrap(),
            r#"{"action":"block","country":["CN"]}"#
        );
    }

    #[test]
    fn a_mailbox_set_wins_over_its_domain_and_other_mailboxes_fall_back_to_the_domain() {
        let set = |key: &str, default| KeyedRuleSet {
            key: key.into(),
            origin: RuleSetOrigin::PolicyFile,
            rule_set: RuleSet { observe: false, rules: vec![], default, protocols: Protocols::MAIL_APPS },
        };
        let firewall =
            Firewall::build([set("@example.com", Action::Block), set("alice@example.com", Action::Allow)], &[]);
        let alice = firewall.applicable("Alice@Example.com").unwrap();
        assert_eq!((alice.keyed.key.as_str(), alice.via_domain), ("alice@example.com", false));
        let bob = firewall.applicable("bob@example.com").unwrap();
        assert_eq!((bob.keyed.key.as_str(), bob.via_domain), ("@example.com", true));
        assert!(firewall.applicable("carol@example.org").is_none());
        assert!(firewall.applicable("nodomain").is_none());
        assert!(firewall.applicable("").is_none());
    }

    #[test]
    fn the_api_set_replaces_the_file_set_for_the_same_mailbox() {
        let file = KeyedRuleSet {
            key: "alice@example.com".into(),
            origin: RuleSetOrigin::PolicyFile,
            rule_set: RuleSet {
                observe: false,
                rules: vec![],
                default: Action::Block,
                protocols: Protocols::MAIL_APPS,
            },
        };
        let api = KeyedRuleSet {
            origin: RuleSetOrigin::Api,
            rule_set: RuleSet { default: Action::Allow, ..file.rule_set.clone() },
            ..file.clone()
        };
        let firewall = Firewall::build([file, api], &[]);
        assert_eq!(firewall.applicable("alice@example.com").unwrap().keyed.origin, RuleSetOrigin::Api);
    }

    #[test]
    fn webmail_peers_are_recognised_and_protocols_are_covered_as_configured() {
        let firewall = Firewall::build([], &[parse_network("10.9.0.0/24").unwrap()]);
        assert!(firewall.is_webmail("10.9.0.5".parse().unwrap()));
        assert!(!firewall.is_webmail("10.9.1.5".parse().unwrap()));
        assert!(Protocols::MAIL_APPS.covers(Protocol::Imap) && Protocols::MAIL_APPS.covers(Protocol::Pop3));
        assert!(!Protocols::MAIL_APPS.covers(Protocol::Submission));
        let all = Protocols::parse(&["imap".into(), "pop3".into(), "submission".into(), "smtp".into()]).unwrap();
        assert!(all.covers(Protocol::Submission) && all.covers(Protocol::Smtp));
        assert_eq!(all.names(), ["imap", "pop3", "smtp", "submission"]);
        assert!(Protocols::parse(&["webmail".into()]).is_err());
    }

    #[test]
    fn a_mailbox_with_a_non_ascii_capital_matches_its_rules_however_it_is_spelled() {
        let set = |written: &str| KeyedRuleSet {
            key: parse_key(written).unwrap(),
            origin: RuleSetOrigin::PolicyFile,
            rule_set: RuleSet {
                observe: false,
                rules: vec![],
                default: Action::Block,
                protocols: Protocols::MAIL_APPS,
            },
        };
        let firewall = Firewall::build([set("ÄRZTE@example.de"), set("Jörg@Example.com"), set("@ÉCOLE.fr")], &[]);
        // Dovecot's lowercasing leaves non-ASCII letters as they were typed.
        for login in ["Ärzte@example.de", "ärzte@example.de", "ÄRZTE@EXAMPLE.DE"] {
            assert_eq!(firewall.applicable(login).map(|a| a.keyed.key.clone()).as_deref(), Some("ärzte@example.de"));
        }
        for login in ["jörg@example.com", "JÖRG@example.com"] {
            assert_eq!(firewall.applicable(login).map(|a| a.keyed.key.clone()).as_deref(), Some("jörg@example.com"));
        }
        let pupil = firewall.applicable("anne@École.fr").unwrap();
        assert_eq!((pupil.keyed.key.as_str(), pupil.via_domain), ("@école.fr", true));
    }

    #[test]
    fn keys_are_logins_or_domains() {
        assert_eq!(parse_key(" Alice@Example.COM ").unwrap(), "alice@example.com");
        assert_eq!(parse_key("@example.com").unwrap(), "@example.com");
        assert_eq!(parse_key("alice").unwrap(), "alice");
        for bad in ["", "@", "a@b@c", "alice@", "with space@x", "a\nb"] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
    }
}
