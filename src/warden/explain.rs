//! The dry run on the `Warden`: what `allow` would answer right now for a login, and every
//! fact that led there, in one sentence for support staff. Changes nothing: no counters, no
//! metrics, no events.

use std::net::IpAddr;
use std::sync::Arc;

use super::{LoginView, Warden};
use crate::access::{AccessEntry, ListKind, Origin, Standing};
use crate::bans::{Ban, BanReason};
use crate::engine::{Allowed, Decision, Delayed, Refusal, Ruling};
use crate::firewall::{AddressFacts, Outcome, RuleSetOrigin};
use crate::network::Source;
use crate::warden::FirewallCheck;
use crate::wire::{self, Reply};

/// What `allow` would answer right now and everything that led there.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    /// What observe mode held back: the refusal the parts in observe mode would have made.
    pub observed: Option<Decision>,
    pub reply: Reply,
    pub address: IpAddr,
    pub source: Source,
    /// The list entry that decided, when a list did.
    pub list_entry: Option<AccessEntry>,
    pub ban: Option<Arc<Ban>>,
    pub failures_in_window: u32,
    /// Distinct wrong guesses in the window that ban the source (`max_failures` plus the
    /// tolerance it has earned).
    pub max_failures: u32,
    pub firewall: FirewallCheck,
}

fn entry_note(e: &AccessEntry) -> String {
    let origin = match e.origin {
        Origin::PolicyFile => "policy.toml",
        Origin::Api => "the admin API",
    };
    let comment = if e.comment.is_empty() { String::new() } else { format!(" ({})", e.comment) };
    let expiry = e.expires_at.map(|t| format!(" until {}", t.readable())).unwrap_or_default();
    format!("{} in {origin}{comment}{expiry}", e.network)
}

fn facts_note(facts: &AddressFacts) -> String {
    let mut known = Vec::new();
    if let Some(country) = facts.country {
        known.push(format!("country {country}"));
    }
    if let Some(asn) = facts.asn {
        known.push(format!("AS{asn}"));
    }
    if facts.non_residential {
        known.push("non-residential".to_string());
    }
    if known.is_empty() { String::new() } else { format!(" ({})", known.join(", ")) }
}

impl Explanation {
    /// The firewall's part of the story, when one applied.
    fn firewall_note(&self) -> Option<String> {
        let set_name = |key: &str, via_domain: bool, origin: &str| {
            let whose =
                if via_domain { format!("the domain rules {key}") } else { format!("the email firewall of {key}") };
            format!("{whose} (from {origin})")
        };
        match &self.firewall {
            FirewallCheck::Evaluated { applied, facts, outcome } => {
                let origin = match applied.keyed.origin {
                    RuleSetOrigin::PolicyFile => "policy.toml",
                    RuleSetOrigin::Api => "the admin API",
                };
                let name = set_name(&applied.keyed.key, applied.via_domain, origin);
                let about = format!("{}{}", facts.ip, facts_note(facts));
                Some(match outcome {
                    Outcome::BlockedByRule(n) => format!("rule no. {n} of {name} blocks {about}"),
                    Outcome::BlockedByDefault => {
                        format!("no rule of {name} matches {about} and its default action is block")
                    }
                    Outcome::AllowedByRule(n) => format!("rule no. {n} of {name} allows {about}"),
                    Outcome::AllowedByDefault => {
                        format!("no rule of {name} matches {about}; its default action allows it")
                    }
                })
            }
            FirewallCheck::Webmail(set) => Some(format!("the email firewall of {} does not apply to webmail", set.key)),
            FirewallCheck::ProtocolNotCovered(set) => {
                Some(format!("the email firewall of {} does not cover this protocol", set.key))
            }
            FirewallCheck::NoRules | FirewallCheck::NoAddress(_) => None,
        }
    }

    /// One sentence for support staff; with what observe mode held back after it.
    pub fn summary(&self) -> String {
        let told = self.sentence(&self.decision);
        match &self.observed {
            Some(observed) => format!("{told}; observe mode: it would be {}", self.sentence(observed)),
            None => told,
        }
    }

    fn sentence(&self, decision: &Decision) -> String {
        let firewall = self.firewall_note();
        match (decision, &self.list_entry, &self.ban) {
            (Decision::Reject(Refusal::Blocked { .. }), Some(entry), _) => {
                format!("refused: {} is blocked by {}", self.address, entry_note(entry))
            }
            (Decision::Reject(Refusal::FirewallRule { .. } | Refusal::FirewallDefault { .. }), _, _) => {
                format!("refused: {}", firewall.unwrap_or_default())
            }
            (Decision::Reject(Refusal::Banned { .. }), _, Some(ban)) => {
                let last = if ban.cause.login.is_empty() {
                    String::new()
                } else {
                    format!("; last failed login {} over {}", ban.cause.login, ban.cause.protocol)
                };
                let until = ban.expires_at.readable();
                match ban.reason {
                    BanReason::Autoban => {
                        format!(
                            "refused: {} is banned until {until} after {} failed logins{last}",
                            ban.source, ban.failures
                        )
                    }
                    BanReason::LongWindow => format!(
                        "refused: {} is banned until {until} after {} distinct wrong passwords within the long window (a slow guesser){last}",
                        ban.source, ban.failures
                    ),
                    BanReason::Subnet => format!(
                        "refused: {} is in {}, banned as a subnet until {until} after {} of its addresses were banned for failed logins (distributed guessing){last}",
                        self.address, ban.source, ban.failures
                    ),
                }
            }
            (Decision::Reject(Refusal::LoginRefused { login, source, until }), _, _) => {
                format!(
                    "refused: {login} is refused from {source} until {} after too many wrong passwords for it; other accounts from {source} are not affected",
                    until.readable()
                )
            }
            (Decision::Reject(Refusal::StalePassword { login }), _, _) => {
                format!(
                    "refused: {login}'s password is quarantined from {}: a device keeps using an old one",
                    self.source
                )
            }
            (Decision::Reject(Refusal::AccountUnderAttack { login }), _, _) => {
                format!("refused: {login} is under attack and {} is new to it", self.source)
            }
            (Decision::Delay { seconds, why: Delayed::AccountUnderAttack { login } }, _, _) => {
                format!("delayed {seconds} s: {login} is under attack and {} is new to it", self.source)
            }
            (Decision::Reject(Refusal::StoreUnavailable), _, _) => {
                "refused: the shared store (Redis) is unreachable and \
                 store.on_store_error = \"reject\" refuses logins from untrusted networks until it is back"
                    .to_string()
            }
            (Decision::Allow(Allowed::Trusted), Some(entry), _) => {
                let also = firewall.map(|f| format!("; {f}")).unwrap_or_default();
                format!("allowed: {} is trusted by {}; it is never banned{also}", self.address, entry_note(entry))
            }
            _ => {
                let also = firewall.map(|f| format!("; {f}")).unwrap_or_default();
                format!(
                    "allowed: {} has {} of {} failed logins in the current window{also}",
                    self.source, self.failures_in_window, self.max_failures
                )
            }
        }
    }
}

impl Warden {
    /// What `allow` would answer for `view` right now, and why.
    pub fn explain(&self, view: &LoginView<'_>, address: IpAddr) -> Explanation {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let firewall = self.firewall_check(view);
        let Ruling { decision, observed } = self.rule_with(view, &firewall);
        let list_entry = match self.standing(Some(address), now) {
            Standing::Trusted(net) => shared.access.load().entry(ListKind::Trusted, net).cloned(),
            Standing::Blocked(net) | Standing::ObservedBlock(net) => {
                shared.access.load().entry(ListKind::Blocked, net).cloned()
            }
            Standing::Unlisted => None,
        };
        let source = policy.autoban.grouping.source_of(address);
        Explanation {
            reply: wire::allow_reply(&decision, &policy.messages, now),
            decision,
            observed,
            address,
            source,
            list_entry,
            ban: shared.bans.active_for_address(address, policy.autoban.grouping, now),
            failures_in_window: shared.failures.failures_in_window(source, now),
            // What bans this source, its tolerance included.
            max_failures: crate::engine::source_ban_threshold(
                &policy.autoban,
                self.tolerance_earned(source, now, &policy),
            ),
            firewall,
        }
    }
}
