//! The mailbox firewall on the `Warden`: the per-login check (which rule set applies, the
//! webmail and protocol exemptions, the GeoIP facts the set needs), and the API's changes to
//! rule sets. An API change to a mailbox starts from the set in force for it (its own from
//! the file, else its domain's), so adding one rule never silently drops the company's rules;
//! deleting the API's set brings the file's baseline back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, MutexGuard};

use super::{LoginView, Warden, lock};
use crate::audit::AuditAction;
use crate::config::Policy;
use crate::engine::{Decision, firewall_refusal};
use crate::firewall::{
    Action, AddressFacts, Applicable, Firewall, KeyedRuleSet, Outcome, Protocols, Rule, RuleSet, RuleSetOrigin,
    StoredRuleSet, parse_key,
};
use crate::geoip::GeoIp;
use crate::principal::Principal;
use crate::store::StoreError;
use crate::wire::{self, Protocol, Reply};

type ApiRuleSets = HashMap<String, RuleSet>;

/// Why a firewall change was refused.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("{0}")]
    InvalidKey(String),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0} has no firewall rules")]
    NoRuleSet(String),
    #[error("{key} has no rule no. {number} (it has {count})")]
    NoSuchRule { key: String, number: usize, count: usize },
    #[error("{0} has no firewall rules set through the API (rules from policy.toml are changed in the file)")]
    NoApiRuleSet(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a rule moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMove {
    Up,
    Down,
    /// To this position (from 1).
    To(usize),
}

/// What applies to a login or domain key: the rule set in force and whether it is the key's
/// own or its domain's.
#[derive(Debug, Clone)]
pub struct MailboxFirewall {
    pub key: String,
    pub applied: Option<Applicable>,
}

/// How the firewall treated one login.
#[derive(Debug, Clone)]
pub enum FirewallCheck {
    /// No rule set applies to this login.
    NoRules,
    /// A rule set applies, but not to this protocol.
    ProtocolNotCovered(Arc<KeyedRuleSet>),
    /// The TCP peer is a webmail server: mail-app rules do not apply.
    Webmail(Arc<KeyedRuleSet>),
    /// No client address to judge.
    NoAddress(Arc<KeyedRuleSet>),
    Evaluated {
        applied: Applicable,
        facts: AddressFacts,
        outcome: Outcome,
    },
}

impl FirewallCheck {
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            FirewallCheck::Evaluated { outcome, .. } => Some(*outcome),
            _ => None,
        }
    }

    /// Whether the rule set that judged the login is in observe mode.
    pub fn observed(&self) -> bool {
        match self {
            FirewallCheck::Evaluated { applied, .. } => applied.keyed.rule_set.observe,
            _ => false,
        }
    }
}

/// The rule sets in force: the file's, then the API's over them.
pub(super) fn build_firewall(policy: &Policy, api: &ApiRuleSets) -> Firewall {
    let file = policy.mailboxes.iter().cloned();
    let from_api = api.iter().map(|(key, rule_set)| KeyedRuleSet {
        key: key.clone(),
        origin: RuleSetOrigin::Api,
        rule_set: rule_set.clone(),
    });
    Firewall::build(file.chain(from_api), &policy.networks.webmail)
}

/// The first rule of `set` whose criterion needs GeoIP data `geoip` does not have.
fn missing_source(set: &RuleSet, geoip: &GeoIp) -> Option<(usize, &'static str)> {
    set.rules.iter().enumerate().find_map(|(i, rule)| {
        let available = match rule.needs_database()? {
            "geoip.country_db" => geoip.has_country(),
            "geoip.asn_db" => geoip.has_asn(),
            _ => geoip.has_non_residential(),
        };
        (!available).then(|| (i + 1, rule.needs_database().unwrap_or_default()))
    })
}

/// Every rule set (the file's and the API's) whose rules need GeoIP data not configured, as
/// messages naming the mailbox and the rule.
pub(super) fn check_sources(policy: &Policy, api: &ApiRuleSets, geoip: &GeoIp) -> Vec<String> {
    let file = policy.mailboxes.iter().map(|s| (&s.key, &s.rule_set, "policy.toml"));
    let from_api = api.iter().map(|(key, set)| (key, set, "the admin API"));
    let mut problems: Vec<String> = file
        .chain(from_api)
        .filter_map(|(key, set, origin)| {
            let (number, needs) = missing_source(set, geoip)?;
            Some(format!("mailboxes.{key:?} (from {origin}) rule no. {number}: needs {needs}, which is not configured"))
        })
        .collect();
    problems.sort();
    problems
}

/// How many rules `set` has, when rule `number` is one of them.
fn existing_rule(key: &str, number: usize, set: &RuleSet) -> Result<usize, FirewallError> {
    let count = set.rules.len();
    if (1..=count).contains(&number) {
        Ok(count)
    } else {
        Err(FirewallError::NoSuchRule { key: key.to_string(), number, count })
    }
}

impl Warden {
    pub(super) fn api_rule_sets(&self) -> MutexGuard<'_, ApiRuleSets> {
        lock(&self.shared.api_rule_sets)
    }

    /// Puts the file's sets and `api`'s in force; called with the API's sets locked, so
    /// concurrent changes rebuild in order.
    pub(super) fn rebuild_firewall(&self, api: &ApiRuleSets) {
        self.shared.firewall.store(Arc::new(build_firewall(&self.shared.policy.load(), api)));
    }

    /// How the firewall treats `view`: which set applies and, when it is evaluated, the facts
    /// looked up for it (only those its rules need) and the outcome.
    pub fn firewall_check(&self, view: &LoginView<'_>) -> FirewallCheck {
        let firewall = self.shared.firewall.load();
        if firewall.is_empty() {
            return FirewallCheck::NoRules;
        }
        let Some(applied) = firewall.applicable(view.login) else {
            return FirewallCheck::NoRules;
        };
        let set = &applied.keyed.rule_set;
        if !set.protocols.covers(view.protocol) {
            return FirewallCheck::ProtocolNotCovered(applied.keyed.clone());
        }
        if view.real_remote.or(view.address).is_some_and(|peer| firewall.is_webmail(peer)) {
            return FirewallCheck::Webmail(applied.keyed.clone());
        }
        let Some(ip) = view.address else {
            return FirewallCheck::NoAddress(applied.keyed.clone());
        };
        let needs = set.needs();
        let geoip = self.shared.geoip.load();
        let facts = AddressFacts {
            ip,
            country: if needs.country { geoip.country(ip) } else { None },
            asn: if needs.asn { geoip.asn(ip) } else { None },
            non_residential: needs.non_residential && geoip.non_residential(ip).is_some(),
        };
        let outcome = set.evaluate(&facts);
        FirewallCheck::Evaluated { applied, facts, outcome }
    }

    /// The console's "test an address": how the firewall would treat a login to `key` (a
    /// login or `@domain`) from `ip` over `protocol`, by the very check `allow` makes, and the
    /// message the mail app would be told when it refuses (observe mode aside). Changes
    /// nothing.
    pub fn firewall_trial(&self, key: &str, ip: IpAddr, protocol: Protocol) -> (FirewallCheck, Option<Reply>) {
        let view = LoginView { address: Some(ip), real_remote: None, login: key, pwhash: None, protocol };
        let check = self.firewall_check(&view);
        let reply = check.outcome().and_then(|outcome| firewall_refusal(outcome, key)).map(|refusal| {
            wire::allow_reply(&Decision::Reject(refusal), &self.shared.policy.load().messages, self.shared.clock.now())
        });
        (check, reply)
    }

    /// The names the GeoIP data has for `ip`'s country and AS, for people to read.
    pub fn geoip_names(&self, ip: IpAddr) -> (Option<String>, Option<String>) {
        let geoip = self.shared.geoip.load();
        (geoip.country_name(ip), geoip.as_organisation(ip))
    }

    /// The rule set that applies to `key` (a login or `@domain`). `Err` only for a bad key.
    pub fn mailbox_firewall(&self, key: &str) -> Result<MailboxFirewall, FirewallError> {
        let key = parse_key(key).map_err(FirewallError::InvalidKey)?;
        let firewall = self.shared.firewall.load();
        let applied = match firewall.get(&key) {
            Some(own) => Some(Applicable { keyed: own.clone(), via_domain: false }),
            None if !key.starts_with('@') => firewall.applicable(&key),
            None => None,
        };
        Ok(MailboxFirewall { key, applied })
    }

    /// Every rule set in force, by key.
    pub fn rule_sets(&self) -> Vec<Arc<KeyedRuleSet>> {
        self.shared.firewall.load().keys().into_iter().cloned().collect()
    }

    /// Applies `change` to the API's set for `key` (starting from the set in force for it),
    /// checks it, stores it, and puts it in force. Blocking.
    fn edit(
        &self,
        key: &str,
        (actor, action, detail): (&Principal, AuditAction, String),
        change: impl FnOnce(&mut RuleSet) -> Result<(), FirewallError>,
    ) -> Result<Arc<KeyedRuleSet>, FirewallError> {
        let key = parse_key(key).map_err(FirewallError::InvalidKey)?;
        let mut sets = self.api_rule_sets();
        let mut set = match sets.get(&key) {
            Some(own) => own.clone(),
            None => match self.mailbox_firewall(&key)?.applied {
                Some(applied) => applied.keyed.rule_set.clone(),
                None => RuleSet {
                    rules: Vec::new(),
                    default: Action::Allow,
                    protocols: Protocols::MAIL_APPS,
                    observe: false,
                },
            },
        };
        change(&mut set)?;
        if let Some((number, needs)) = missing_source(&set, &self.shared.geoip.load()) {
            return Err(FirewallError::Invalid {
                field: "rules",
                message: format!("rule no. {number} needs {needs}, which is not configured"),
            });
        }
        let saved = self.shared.store.save_firewall_rule_set(&key, &set);
        self.shared.metrics.store_result("save_firewall_rules", &saved);
        saved?;
        let (now, by) = (self.shared.clock.now(), Some(actor.name.as_str()));
        let written = Some(StoredRuleSet::from(&set));
        self.notify_durably(crate::notify::Notice::firewall_changed(&key, written, now, by));
        sets.insert(key.clone(), set);
        self.rebuild_firewall(&sets);
        let in_force = self.shared.firewall.load().get(&key).cloned();
        tracing::info!(key, "firewall rules changed");
        self.record_change(actor, action, &key, detail);
        in_force.ok_or(FirewallError::NoRuleSet(key))
    }

    /// Replaces the API's set for `key` whole. Blocking.
    pub fn replace_rule_set(
        &self,
        key: &str,
        new: RuleSet,
        actor: &Principal,
    ) -> Result<Arc<KeyedRuleSet>, FirewallError> {
        let detail = format!("{} rules, default {}", new.rules.len(), new.default.label());
        self.edit(key, (actor, AuditAction::FirewallReplaced, detail), |set| {
            *set = new;
            Ok(())
        })
    }

    /// Inserts `rule` at `position` (from 1; default: last). Blocking.
    pub fn add_rule(
        &self,
        key: &str,
        rule: Rule,
        position: Option<usize>,
        actor: &Principal,
    ) -> Result<Arc<KeyedRuleSet>, FirewallError> {
        let detail =
            format!("{} at {}", rule_text(&rule), position.map_or("the end".to_string(), |p| format!("no. {p}")));
        self.edit(key, (actor, AuditAction::RuleAdded, detail), |set| {
            let last = set.rules.len() + 1;
            let position = position.unwrap_or(last);
            if !(1..=last).contains(&position) {
                return Err(FirewallError::Invalid {
                    field: "position",
                    message: format!("{position} is outside 1..={last}"),
                });
            }
            set.rules.insert(position - 1, rule);
            Ok(())
        })
    }

    /// Moves rule `number` up, down, or to a position. Blocking.
    pub fn move_rule(
        &self,
        key: &str,
        number: usize,
        movement: RuleMove,
        actor: &Principal,
    ) -> Result<Arc<KeyedRuleSet>, FirewallError> {
        let owner = key.to_string();
        let detail = match movement {
            RuleMove::Up => format!("rule no. {number} up"),
            RuleMove::Down => format!("rule no. {number} down"),
            RuleMove::To(to) => format!("rule no. {number} to no. {to}"),
        };
        self.edit(key, (actor, AuditAction::RuleMoved, detail), |set| {
            let count = existing_rule(&owner, number, set)?;
            let target = match movement {
                RuleMove::Up if number == 1 => {
                    return Err(FirewallError::Invalid {
                        field: "direction",
                        message: "rule no. 1 is already first".into(),
                    });
                }
                RuleMove::Down if number == count => {
                    return Err(FirewallError::Invalid {
                        field: "direction",
                        message: format!("rule no. {number} is already last"),
                    });
                }
                RuleMove::Up => number - 1,
                RuleMove::Down => number + 1,
                RuleMove::To(to) if (1..=count).contains(&to) => to,
                RuleMove::To(to) => {
                    return Err(FirewallError::Invalid {
                        field: "to",
                        message: format!("{to} is outside 1..={count}"),
                    });
                }
            };
            let rule = set.rules.remove(number - 1);
            set.rules.insert(target - 1, rule);
            Ok(())
        })
    }

    /// Deletes rule `number`. Blocking.
    pub fn delete_rule(&self, key: &str, number: usize, actor: &Principal) -> Result<Arc<KeyedRuleSet>, FirewallError> {
        let owner = key.to_string();
        self.edit(key, (actor, AuditAction::RuleDeleted, format!("rule no. {number}")), |set| {
            existing_rule(&owner, number, set)?;
            set.rules.remove(number - 1);
            Ok(())
        })
    }

    /// Sets the default action. Blocking.
    pub fn set_default(
        &self,
        key: &str,
        default: Action,
        actor: &Principal,
    ) -> Result<Arc<KeyedRuleSet>, FirewallError> {
        self.edit(key, (actor, AuditAction::DefaultActionSet, format!("default {}", default.label())), |set| {
            set.default = default;
            Ok(())
        })
    }

    /// Deletes the API's set for `key`, so the file's baseline (or the domain's set) applies
    /// again. Blocking.
    pub fn reset_rule_set(&self, key: &str, actor: &Principal) -> Result<(), FirewallError> {
        let key = parse_key(key).map_err(FirewallError::InvalidKey)?;
        let mut sets = self.api_rule_sets();
        if !sets.contains_key(&key) {
            return Err(FirewallError::NoApiRuleSet(key));
        }
        let deleted = self.shared.store.delete_firewall_rule_set(&key);
        self.shared.metrics.store_result("delete_firewall_rules", &deleted);
        deleted?;
        sets.remove(&key);
        self.shared.firewall.store(Arc::new(build_firewall(&self.shared.policy.load(), &sets)));
        let (now, by) = (self.shared.clock.now(), Some(actor.name.as_str()));
        self.notify_durably(crate::notify::Notice::firewall_changed(&key, None, now, by));
        tracing::info!(key, "firewall rules from the API removed");
        self.record_change(actor, AuditAction::FirewallReset, &key, "back to the policy file's rules".into());
        Ok(())
    }
}

/// A rule as the audit trail shows it: its written form (`{"action":"block","country":["RU"]}`).
fn rule_text(rule: &Rule) -> String {
    serde_json::to_string(&rule.spec()).unwrap_or_else(|_| rule.action.label().to_string())
}
