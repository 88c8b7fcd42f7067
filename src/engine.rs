//! The decision engine: pure functions from a login attempt and the facts gathered for it
//! (where the address stands on the admin's lists, its active ban, its failure count) to a
//! typed decision. It knows nothing of HTTP, moka, SQL or Dovecot's integers, cannot fail,
//! and is tested without a server. Gathering the facts and applying the effects is `warden`'s
//! job; turning a decision into Dovecot's reply is `wire`'s.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::access::Standing;
use crate::bans::Ban;
use crate::clock::Timestamp;
use crate::config::{AttackResponse, Autoban};
use crate::firewall::Outcome as FirewallOutcome;
use crate::network::Source;
use crate::wire::FailType;

/// What `allow` answers, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allowed),
    /// Allow after a tarpit of `seconds` (Dovecot applies it only before the password check).
    Delay {
        seconds: u32,
        why: Delayed,
    },
    Reject(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delayed {
    /// The account is under a distributed attack and this source is new to it.
    AccountUnderAttack { login: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Nothing stands against the source.
    Clean,
    /// On the trusted list: never banned or blocked.
    Trusted,
    /// Dovecot sent no usable `remote` (e.g. a login over a local socket): nothing to judge.
    NoSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failed logins: the auto-ban.
    Banned { source: Source, until: Timestamp },
    /// Too many wrong passwords for this one login from an established source: that login is
    /// refused from there (an IP+login refusal); other logins from the source are not.
    LoginRefused { login: String, source: Source, until: Timestamp },
    /// On the admin's blocked list.
    Blocked { address: IpAddr, network: IpNet },
    /// The mailbox's firewall: a block rule (numbered from 1) matched.
    FirewallRule { rule: usize, login: String },
    /// The mailbox's firewall: no rule matched and the default action is block.
    FirewallDefault { login: String },
    /// This exact login and password failed again and again from here: a stale device.
    StalePassword { login: String },
    /// The account is under a distributed attack and this source is new to it.
    AccountUnderAttack { login: String },
    /// The shared store is unreachable and `store.on_store_error = "reject"`.
    StoreUnavailable,
}

impl Decision {
    /// The `verdict` label of the decision metrics.
    pub fn verdict(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allow",
            Decision::Delay { .. } => "delay",
            Decision::Reject(_) => "reject",
        }
    }

    /// The `reason` label of the decision metrics: a small fixed set.
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow(Allowed::Clean) => "none",
            Decision::Allow(Allowed::Trusted) => "trusted",
            Decision::Allow(Allowed::NoSource) => "no_source",
            Decision::Reject(Refusal::Banned { .. }) => "ban",
            Decision::Reject(Refusal::LoginRefused { .. }) => "login_refused",
            Decision::Reject(Refusal::Blocked { .. }) => "blocked",
            Decision::Reject(Refusal::FirewallRule { .. }) => "firewall_rule",
            Decision::Reject(Refusal::FirewallDefault { .. }) => "firewall_default",
            Decision::Reject(Refusal::StalePassword { .. }) => "stale_password",
            Decision::Reject(Refusal::StoreUnavailable) => "store_unavailable",
            Decision::Reject(Refusal::AccountUnderAttack { .. })
            | Decision::Delay { why: Delayed::AccountUnderAttack { .. }, .. } => "account_under_attack",
        }
    }
}

/// What is known about an `allow` request's address when it is decided.
#[derive(Debug, Clone, Copy)]
pub struct AllowFacts<'a> {
    /// The client address Dovecot sent as `remote`, if any.
    pub address: Option<IpAddr>,
    pub standing: Standing,
    /// The ban on the address's source, if one is active now.
    pub ban: Option<&'a Ban>,
    /// The IP+login refusal of this login from the address's source, if one is active now.
    pub login_refusal: Option<&'a Ban>,
    /// The mailbox firewall's verdict, when a rule set applies to this login and protocol.
    pub firewall: Option<FirewallOutcome>,
    /// The login, for the firewall's message.
    pub login: &'a str,
    /// This exact login and password is in stale-password quarantine from here.
    pub stale_guess: bool,
    /// The account is under attack and this source is not one it logged in from lately:
    /// the configured response.
    pub unknown_source_under_attack: Option<AttackResponse>,
    /// The shared store is unreachable and the policy refuses untrusted logins meanwhile.
    pub refuse_while_store_unreachable: bool,
    /// What is only observed: decided and recorded, never enforced.
    pub observing: Observing,
    pub now: Timestamp,
}

/// The parts of the policy in observe mode (Nauthilus's `mode: observe`, CSF's TESTING): what
/// they decide is recorded as "would refuse", and the login goes on to the next check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observing {
    /// `server.mode = "observe"`: every decision.
    pub everything: bool,
    /// The mailbox's rule set is in observe mode. (A blocked-list entry in observe mode is
    /// `Standing::ObservedBlock`.)
    pub firewall: bool,
}

/// What `allow` answers, and the refusal or delay it would have answered where something in
/// observe mode decided otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    pub decision: Decision,
    /// The decision with everything observed enforced, when it differs from `decision`
    /// (always a refusal or a delay).
    pub observed: Option<Decision>,
}

/// `decide_allow`, and what observe mode held back: the decision with every observed part
/// enforced. With `server.mode = "observe"` the answer is always allowed.
pub fn rule_allow(facts: &AllowFacts<'_>) -> Ruling {
    let observed_block = matches!(facts.standing, Standing::ObservedBlock(_));
    if !facts.observing.everything && !facts.observing.firewall && !observed_block {
        // Nothing observed (nearly every login): one decision.
        return Ruling { decision: decide(facts, false), observed: None };
    }
    let full = decide(facts, true);
    let enforced = if facts.observing.everything { Decision::Allow(Allowed::Clean) } else { decide(facts, false) };
    let observed = (full != enforced && !matches!(full, Decision::Allow(_))).then_some(full);
    Ruling { decision: enforced, observed }
}

/// Precedence: the admin's blocked list, then the mailbox firewall (the owner's restriction
/// holds even on the admin's trusted networks), then the trusted list, then an active ban,
/// then the login's IP+login refusal, then an unreachable store when the policy says so, then the stale-password quarantine,
/// then the protection of an account under attack.
/// Parts in observe mode are skipped, as if they were not there; `rule_allow` also tells what
/// they would have decided.
pub fn decide_allow(facts: &AllowFacts<'_>) -> Decision {
    decide(facts, false)
}

/// The refusal a firewall outcome makes of a login to `login`, if it refuses: the one place
/// that maps an outcome to what the mail app is told (the console's rule test asks it too).
pub fn firewall_refusal(outcome: FirewallOutcome, login: &str) -> Option<Refusal> {
    match outcome {
        FirewallOutcome::BlockedByRule(rule) => Some(Refusal::FirewallRule { rule, login: login.to_string() }),
        FirewallOutcome::BlockedByDefault => Some(Refusal::FirewallDefault { login: login.to_string() }),
        FirewallOutcome::AllowedByRule(_) | FirewallOutcome::AllowedByDefault => None,
    }
}

/// The decision, counting the parts in observe mode (`with_observed`) or skipping them.
fn decide(facts: &AllowFacts<'_>, with_observed: bool) -> Decision {
    let Some(address) = facts.address else {
        return Decision::Allow(Allowed::NoSource);
    };
    match facts.standing {
        Standing::Blocked(network) => return Decision::Reject(Refusal::Blocked { address, network }),
        Standing::ObservedBlock(network) if with_observed => {
            return Decision::Reject(Refusal::Blocked { address, network });
        }
        _ => {}
    }
    let login = || facts.login.to_string();
    let firewall = if facts.observing.firewall && !with_observed { None } else { facts.firewall };
    if let Some(refusal) = firewall.and_then(|outcome| firewall_refusal(outcome, facts.login)) {
        return Decision::Reject(refusal);
    }
    if let Standing::Trusted(_) = facts.standing {
        return Decision::Allow(Allowed::Trusted);
    }
    if let Some(ban) = facts.ban.filter(|ban| ban.is_active(facts.now)) {
        return Decision::Reject(Refusal::Banned { source: ban.source, until: ban.expires_at });
    }
    if let Some(refusal) = facts.login_refusal.filter(|ban| ban.is_active(facts.now)) {
        return Decision::Reject(Refusal::LoginRefused {
            login: login(),
            source: refusal.source,
            until: refusal.expires_at,
        });
    }
    if facts.refuse_while_store_unreachable {
        return Decision::Reject(Refusal::StoreUnavailable);
    }
    if facts.stale_guess {
        return Decision::Reject(Refusal::StalePassword { login: login() });
    }
    match facts.unknown_source_under_attack {
        Some(AttackResponse::Delay(seconds)) => {
            Decision::Delay { seconds, why: Delayed::AccountUnderAttack { login: login() } }
        }
        Some(AttackResponse::Reject) => Decision::Reject(Refusal::AccountUnderAttack { login: login() }),
        None => Decision::Allow(Allowed::Clean),
    }
}

/// How a `report` is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// The login succeeded.
    Success,
    /// The login failed because a policy (ours) refused it: not the user's failure, never counted.
    RefusedByPolicy,
    /// A failed login from a trusted network: never counted.
    TrustedFailure,
    /// A failed login with no usable source address: nothing to count it on.
    UnattributableFailure,
    /// Dovecot could not check the password (2.4 `fail_type=internal`): never counted.
    InternalFailure,
    /// The password was right but the account's password has expired (2.4): never counted,
    /// recorded so the admin sees why the user cannot log in.
    AccountExpired,
    /// The account is disabled (2.4): never counted, recorded likewise.
    AccountDisabled,
    /// A failed login that counts toward a ban; `unknown_account` when 2.4 said the login does
    /// not exist.
    Failure { unknown_account: bool },
}

impl ReportKind {
    /// The `result` label of the report metrics.
    pub fn label(self) -> &'static str {
        match self {
            ReportKind::Success => "success",
            ReportKind::RefusedByPolicy => "policy_reject",
            ReportKind::TrustedFailure => "failure_trusted",
            ReportKind::UnattributableFailure => "failure_no_source",
            ReportKind::InternalFailure => "failure_internal",
            ReportKind::AccountExpired => "failure_expired",
            ReportKind::AccountDisabled => "failure_disabled",
            ReportKind::Failure { unknown_account: false } => "failure",
            ReportKind::Failure { unknown_account: true } => "failure_unknown_account",
        }
    }
}

/// How a report counts. Dovecot 2.4's `fail_type` refines it: a failure Dovecot caused
/// (`internal`) or a right password on an unusable account (`expired`, `disabled`) never
/// counts; an unknown login (`account`) does. With 2.3 (`None`) every plain failure counts.
pub fn classify_report(
    success: bool,
    policy_reject: bool,
    fail_type: Option<FailType>,
    has_address: bool,
    standing: Standing,
) -> ReportKind {
    if success {
        return ReportKind::Success;
    }
    match fail_type {
        _ if policy_reject => ReportKind::RefusedByPolicy,
        Some(FailType::Policy) => ReportKind::RefusedByPolicy,
        Some(FailType::Internal) => ReportKind::InternalFailure,
        Some(FailType::Expired) => ReportKind::AccountExpired,
        Some(FailType::Disabled) => ReportKind::AccountDisabled,
        _ if !has_address => ReportKind::UnattributableFailure,
        _ if matches!(standing, Standing::Trusted(_)) => ReportKind::TrustedFailure,
        Some(FailType::Account) => ReportKind::Failure { unknown_account: true },
        Some(FailType::Credentials | FailType::Other) | None => ReportKind::Failure { unknown_account: false },
    }
}

/// Distinct wrong guesses in the window that ban a source which has earned `earned` extra
/// guesses from its good logins (`tolerance::Standing`): `max_failures + earned`, where
/// `earned = min(max_tolerance, tolerance_per_account x accounts that logged in from it
/// lately)`. A source nobody logged in from is banned at exactly `max_failures`; none ever
/// later than `max_failures + max_tolerance`.
pub fn source_ban_threshold(autoban: &Autoban, earned: u32) -> u32 {
    autoban.max_failures.saturating_add(earned.min(autoban.toleration.max))
}

/// Distinct wrong guesses in the long window that ban a source which has earned `earned`
/// extra guesses (the same tolerance as the window's: an office's good logins vouch for it
/// over the day too): `long_max_failures + min(max_tolerance, earned)`; `None` while the
/// long window is off (`long_max_failures = 0`).
pub fn long_ban_threshold(autoban: &Autoban, earned: u32) -> Option<u32> {
    (autoban.long_max_failures > 0)
        .then(|| autoban.long_max_failures.saturating_add(earned.min(autoban.toleration.max)))
}

/// Whether a counted failure bans its source: the window holds `failures_in_window` failures
/// (this one included) and that reaches `threshold` (`source_ban_threshold`), and a source
/// already banned is not banned again (that would extend the ban on failures that raced with
/// it).
pub fn bans_source(failures_in_window: u32, already_banned: bool, threshold: u32) -> bool {
    !already_banned && failures_in_window >= threshold
}

/// Whether a counted failure refuses its login from its source (an IP+login refusal): the
/// source has earned tolerance (`earned > 0`; a fresh source is banned whole at
/// `max_failures` instead), the login's own distinct guesses still counted in the window
/// reach `max_failures`, and the login is not refused from there already. The source ban
/// still comes at `source_ban_threshold` guesses over all logins.
pub fn refuses_login(login_failures_in_window: u32, already_refused: bool, autoban: &Autoban, earned: u32) -> bool {
    earned > 0 && !already_refused && login_failures_in_window >= autoban.max_failures
}

/// How long a ban placed now lasts: `ban_for`, or for a repeat offender (banned before, that
/// ban placed within `escalation_within`) the previous length times `escalation_factor`, up
/// to `max_ban`. `previous` is (when the last ban was placed, how long it was).
pub fn ban_length(autoban: &Autoban, previous: Option<(Timestamp, Duration)>, now: Timestamp) -> Duration {
    match previous {
        Some((placed, length)) if autoban.escalation_factor > 1.0 && placed > now.minus(autoban.escalation_within) => {
            // Total: `mul_f64` would panic on an overflow (config bounds the factor to 100).
            let escalated =
                Duration::try_from_secs_f64(length.as_secs_f64() * autoban.escalation_factor).unwrap_or(Duration::MAX);
            escalated.min(autoban.max_ban.max(autoban.ban_for))
        }
        _ => autoban.ban_for,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::{BanCause, BanReason};
    use crate::network::{SourceGrouping, parse_ip, parse_network};
    use std::time::Duration;

    const NOW: Timestamp = Timestamp(1_795_334_400_000);

    fn autoban() -> Autoban {
        Autoban {
            max_failures: 5,
            window: Duration::from_secs(1200),
            ban_for: Duration::from_secs(1800),
            grouping: SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 },
            max_tracked_sources: 1000,
            escalation_factor: 1.0,
            escalation_within: Duration::from_secs(86400),
            max_ban: Duration::from_secs(86400),
            unknown_accounts_count_double: false,
            toleration: crate::tolerance::Toleration {
                per_account: 2,
                max: 20,
                window: Duration::from_secs(7 * 86400),
            },
            max_tolerated_sources: 1000,
            long_window: Duration::from_secs(86400),
            long_max_failures: 30,
            long_ban_for: Duration::from_secs(86400),
            subnets: crate::config::SubnetBans {
                bans: 3,
                window: Duration::from_secs(3600),
                ban_for: Duration::from_secs(3600),
                grouping: SourceGrouping { ipv4_prefix: 24, ipv6_prefix: 48 },
            },
        }
    }

    fn ban(address: &str, expires_at: Timestamp) -> Ban {
        let source = autoban().grouping.source_of(parse_ip(address).unwrap());
        Ban {
            source,
            refused_login: None,
            created_at: NOW.minus(Duration::from_secs(60)),
            expires_at,
            reason: BanReason::Autoban,
            failures: 5,
            cause: BanCause::default(),
        }
    }

    fn check(address: Option<&str>, standing: Standing, active_ban: Option<&Ban>, expect: &str) {
        check_with_firewall(address, standing, active_ban, None, expect);
    }

    fn check_with_firewall(
        address: Option<&str>,
        standing: Standing,
        active_ban: Option<&Ban>,
        firewall: Option<FirewallOutcome>,
        expect: &str,
    ) {
        let facts = AllowFacts {
            address: address.map(|a| parse_ip(a).unwrap()),
            standing,
            ban: active_ban,
            firewall,
            login: "alice@example.com",
            login_refusal: None,
            stale_guess: false,
            refuse_while_store_unreachable: false,
            unknown_source_under_attack: None,
            observing: Observing::default(),
            now: NOW,
        };
        let decision = decide_allow(&facts);
        assert_eq!(format!("{}/{}", decision.verdict(), decision.reason()), expect, "{decision:?}");
    }

    #[test]
    fn allow_decisions_follow_the_documented_precedence() {
        let net = parse_network("203.0.113.0/24").unwrap();
        let live = ban("203.0.113.7", NOW.plus(Duration::from_secs(600)));
        let expired = ban("203.0.113.7", NOW.minus(Duration::from_secs(1)));
        check(Some("203.0.113.7"), Standing::Unlisted, None, "allow/none");
        check(Some("203.0.113.7"), Standing::Unlisted, Some(&live), "reject/ban");
        check(Some("203.0.113.7"), Standing::Unlisted, Some(&expired), "allow/none");
        check(Some("203.0.113.7"), Standing::Blocked(net), None, "reject/blocked");
        check(Some("203.0.113.7"), Standing::Blocked(net), Some(&live), "reject/blocked");
        check(Some("203.0.113.7"), Standing::Trusted(net), Some(&live), "allow/trusted");
        check(None, Standing::Unlisted, None, "allow/no_source");
    }

    #[test]
    fn the_mailbox_firewall_comes_after_the_blocked_list_and_before_trust_and_bans() {
        use FirewallOutcome::*;
        let net = parse_network("203.0.113.0/24").unwrap();
        let live = ban("203.0.113.7", NOW.plus(Duration::from_secs(600)));
        let ip = Some("203.0.113.7");
        check_with_firewall(ip, Standing::Unlisted, None, Some(BlockedByRule(2)), "reject/firewall_rule");
        check_with_firewall(ip, Standing::Unlisted, None, Some(BlockedByDefault), "reject/firewall_default");
        check_with_firewall(ip, Standing::Trusted(net), None, Some(BlockedByRule(1)), "reject/firewall_rule");
        check_with_firewall(ip, Standing::Blocked(net), None, Some(AllowedByRule(1)), "reject/blocked");
        check_with_firewall(ip, Standing::Unlisted, Some(&live), Some(AllowedByRule(1)), "reject/ban");
        check_with_firewall(ip, Standing::Unlisted, None, Some(AllowedByDefault), "allow/none");
        check_with_firewall(None, Standing::Unlisted, None, None, "allow/no_source");
    }

    #[test]
    fn quarantine_and_account_protection_come_after_bans_and_trust() {
        let net = parse_network("203.0.113.0/24").unwrap();
        let decide = |standing, stale_guess, unknown_source_under_attack| {
            let facts = AllowFacts {
                observing: Observing::default(),
                address: Some(parse_ip("203.0.113.7").unwrap()),
                standing,
                ban: None,
                firewall: None,
                login: "alice@example.com",
                login_refusal: None,
                stale_guess,
                refuse_while_store_unreachable: false,
                unknown_source_under_attack,
                now: NOW,
            };
            let decision = decide_allow(&facts);
            format!("{}/{}", decision.verdict(), decision.reason())
        };
        assert_eq!(decide(Standing::Unlisted, true, None), "reject/stale_password");
        assert_eq!(decide(Standing::Unlisted, false, Some(AttackResponse::Delay(5))), "delay/account_under_attack");
        assert_eq!(decide(Standing::Unlisted, false, Some(AttackResponse::Reject)), "reject/account_under_attack");
        assert_eq!(decide(Standing::Unlisted, true, Some(AttackResponse::Delay(5))), "reject/stale_password");
        assert_eq!(decide(Standing::Trusted(net), true, Some(AttackResponse::Reject)), "allow/trusted");
    }

    #[test]
    fn an_unreachable_store_refuses_only_when_told_to_and_never_the_trusted() {
        let net = parse_network("203.0.113.0/24").unwrap();
        let live = ban("203.0.113.7", NOW.plus(Duration::from_secs(600)));
        let decide = |standing, ban, refuse_while_store_unreachable| {
            let facts = AllowFacts {
                observing: Observing::default(),
                address: Some(parse_ip("203.0.113.7").unwrap()),
                standing,
                ban,
                firewall: None,
                login: "alice@example.com",
                login_refusal: None,
                stale_guess: true,
                refuse_while_store_unreachable,
                unknown_source_under_attack: None,
                now: NOW,
            };
            let decision = decide_allow(&facts);
            format!("{}/{}", decision.verdict(), decision.reason())
        };
        assert_eq!(decide(Standing::Unlisted, None, true), "reject/store_unavailable");
        assert_eq!(decide(Standing::Unlisted, None, false), "reject/stale_password");
        assert_eq!(decide(Standing::Trusted(net), None, true), "allow/trusted");
        assert_eq!(decide(Standing::Unlisted, Some(&live), true), "reject/ban", "a known ban still says why");
        assert_eq!(decide(Standing::Blocked(net), None, true), "reject/blocked");
    }

    #[test]
    fn repeat_offenders_get_longer_bans_only_when_escalation_is_on() {
        let mut policy = autoban();
        let hour_ago = NOW.minus(Duration::from_secs(3600));
        let previous = Some((hour_ago, Duration::from_secs(1800)));
        assert_eq!(ban_length(&policy, previous, NOW), Duration::from_secs(1800), "off by default");
        policy.escalation_factor = 4.0;
        assert_eq!(ban_length(&policy, previous, NOW), Duration::from_secs(7200));
        let long = Some((hour_ago, Duration::from_secs(7200 * 4)));
        assert_eq!(ban_length(&policy, long, NOW), Duration::from_secs(86400), "capped");
        let long_ago = NOW.minus(Duration::from_secs(2 * 86400));
        let stale = Some((long_ago, Duration::from_secs(7200)));
        assert_eq!(ban_length(&policy, stale, NOW), Duration::from_secs(1800), "a day later it starts over");
    }

    #[test]
    fn a_ban_refusal_names_the_source_and_the_end() {
        let live = ban("203.0.113.7", NOW.plus(Duration::from_secs(600)));
        let facts = AllowFacts {
            address: Some(parse_ip("203.0.113.7").unwrap()),
            standing: Standing::Unlisted,
            ban: Some(&live),
            firewall: None,
            login: "alice@example.com",
            login_refusal: None,
            stale_guess: false,
            refuse_while_store_unreachable: false,
            unknown_source_under_attack: None,
            observing: Observing::default(),
            now: NOW,
        };
        match decide_allow(&facts) {
            Decision::Reject(Refusal::Banned { source, until }) => {
                assert_eq!(source.to_string(), "203.0.113.7");
                assert_eq!(until, NOW.plus(Duration::from_secs(600)));
            }
            other => panic!("expected a ban refusal, got {other:?}"),
        }
    }

    #[test]
    fn only_plain_failures_count() {
        let trusted = Standing::Trusted(parse_network("192.0.2.0/24").unwrap());
        assert_eq!(classify_report(true, false, None, true, Standing::Unlisted), ReportKind::Success);
        assert_eq!(classify_report(false, true, None, true, Standing::Unlisted), ReportKind::RefusedByPolicy);
        assert_eq!(classify_report(false, false, None, true, trusted), ReportKind::TrustedFailure);
        assert_eq!(classify_report(false, false, None, false, Standing::Unlisted), ReportKind::UnattributableFailure);
        assert_eq!(
            classify_report(false, false, None, true, Standing::Unlisted),
            ReportKind::Failure { unknown_account: false }
        );
    }

    #[test]
    fn dovecot_2_4_fail_types_decide_what_counts() {
        let report = |fail_type| classify_report(false, false, Some(fail_type), true, Standing::Unlisted);
        assert_eq!(report(FailType::Internal), ReportKind::InternalFailure);
        assert_eq!(report(FailType::Expired), ReportKind::AccountExpired);
        assert_eq!(report(FailType::Disabled), ReportKind::AccountDisabled);
        assert_eq!(report(FailType::Policy), ReportKind::RefusedByPolicy);
        assert_eq!(report(FailType::Account), ReportKind::Failure { unknown_account: true });
        assert_eq!(report(FailType::Credentials), ReportKind::Failure { unknown_account: false });
        assert_eq!(report(FailType::Other), ReportKind::Failure { unknown_account: false });
    }

    #[test]
    fn the_fifth_failure_bans_for_thirty_minutes_and_a_banned_source_is_not_rebanned() {
        let policy = autoban();
        let fresh = source_ban_threshold(&policy, 0);
        assert!(!bans_source(4, false, fresh));
        assert!(bans_source(5, false, fresh));
        assert!(!bans_source(6, true, fresh));
        assert_eq!(ban_length(&policy, None, NOW), Duration::from_secs(1800));
    }

    #[test]
    fn a_tolerated_source_is_banned_later_but_never_past_the_cap() {
        let policy = autoban();
        assert_eq!(source_ban_threshold(&policy, 0), 5, "a fresh address: exactly max_failures");
        assert_eq!(source_ban_threshold(&policy, 12), 17);
        assert_eq!(source_ban_threshold(&policy, 500), 25, "max_failures + max_tolerance at most");
    }

    #[test]
    fn the_long_window_bans_at_its_own_threshold_plus_the_same_tolerance_and_zero_turns_it_off() {
        let mut policy = autoban();
        assert_eq!(long_ban_threshold(&policy, 0), Some(30));
        assert_eq!(long_ban_threshold(&policy, 6), Some(36));
        assert_eq!(long_ban_threshold(&policy, 500), Some(50), "capped like the window's");
        policy.long_max_failures = 0;
        assert_eq!(long_ban_threshold(&policy, 6), None);
    }

    #[test]
    fn one_login_guessed_on_an_established_source_is_refused_and_a_fresh_source_is_banned_instead() {
        let policy = autoban();
        assert!(!refuses_login(4, false, &policy, 20), "four guesses of one login: not yet");
        assert!(refuses_login(5, false, &policy, 20), "max_failures of one login on an office");
        assert!(!refuses_login(6, true, &policy, 20), "refused already");
        assert!(!refuses_login(5, false, &policy, 0), "a fresh source: the source ban comes at 5 instead");
    }

    #[test]
    fn a_login_refusal_refuses_its_login_after_the_ban_and_trust() {
        let net = parse_network("203.0.113.0/24").unwrap();
        let mut refusal = ban("203.0.113.7", NOW.plus(Duration::from_secs(600)));
        refusal.refused_login = Some("alice@example.com".into());
        let live = ban("203.0.113.7", NOW.plus(Duration::from_secs(900)));
        let decide = |standing, ban: Option<&Ban>, login_refusal: Option<&Ban>| {
            decide_allow(&AllowFacts {
                address: Some(parse_ip("203.0.113.7").unwrap()),
                standing,
                ban,
                login_refusal,
                firewall: None,
                login: "Alice@example.com",
                stale_guess: true,
                refuse_while_store_unreachable: false,
                unknown_source_under_attack: None,
                observing: Observing::default(),
                now: NOW,
            })
        };
        match decide(Standing::Unlisted, None, Some(&refusal)) {
            Decision::Reject(Refusal::LoginRefused { login, source, until }) => {
                assert_eq!((login.as_str(), source.to_string()), ("Alice@example.com", "203.0.113.7".into()));
                assert_eq!(until, refusal.expires_at);
            }
            other => panic!("expected a login refusal, got {other:?}"),
        }
        assert_eq!(decide(Standing::Unlisted, Some(&live), Some(&refusal)).reason(), "ban");
        assert_eq!(decide(Standing::Trusted(net), None, Some(&refusal)).reason(), "trusted");
        let mut ended = refusal.clone();
        ended.expires_at = NOW;
        assert_eq!(decide(Standing::Unlisted, None, Some(&ended)).reason(), "stale_password");
    }

    #[test]
    fn observe_mode_allows_and_tells_what_it_would_have_refused() {
        let live = ban("203.0.113.7", NOW.plus(Duration::from_secs(600)));
        let net = parse_network("203.0.113.0/24").unwrap();
        let facts = |standing, ban: Option<&'static Ban>, firewall, observing| AllowFacts {
            address: Some(parse_ip("203.0.113.7").unwrap()),
            standing,
            ban,
            login_refusal: None,
            firewall,
            login: "alice@example.com",
            stale_guess: false,
            refuse_while_store_unreachable: false,
            unknown_source_under_attack: None,
            observing,
            now: NOW,
        };
        let live: &'static Ban = Box::leak(Box::new(live));
        let label = |d: &Decision| format!("{}/{}", d.verdict(), d.reason());
        let everything = Observing { everything: true, firewall: false };

        // server.mode = "observe": a ban is recorded, the login goes on.
        let ruling = rule_allow(&facts(Standing::Unlisted, Some(live), None, everything));
        assert_eq!(label(&ruling.decision), "allow/none");
        assert_eq!(ruling.observed.as_ref().map(label).as_deref(), Some("reject/ban"));
        // Nothing to hold back: nothing observed.
        assert_eq!(rule_allow(&facts(Standing::Unlisted, None, None, everything)).observed, None);

        // A blocked entry in observe mode: recorded, and the ban after it still refuses.
        let ruling = rule_allow(&facts(Standing::ObservedBlock(net), Some(live), None, Observing::default()));
        assert_eq!(label(&ruling.decision), "reject/ban");
        assert_eq!(ruling.observed.as_ref().map(label).as_deref(), Some("reject/blocked"));
        let ruling = rule_allow(&facts(Standing::ObservedBlock(net), None, None, Observing::default()));
        assert_eq!(
            (label(&ruling.decision), ruling.observed.as_ref().map(label)),
            ("allow/none".into(), Some("reject/blocked".into()))
        );

        // A rule set in observe mode: its rule is recorded, not enforced.
        let observed_rules = Observing { everything: false, firewall: true };
        let rule = Some(FirewallOutcome::BlockedByRule(2));
        let ruling = rule_allow(&facts(Standing::Unlisted, None, rule, observed_rules));
        assert_eq!(label(&ruling.decision), "allow/none");
        assert_eq!(
            ruling.observed,
            Some(Decision::Reject(Refusal::FirewallRule { rule: 2, login: "alice@example.com".into() }))
        );
        // The same rule set enforcing refuses and holds nothing back.
        let ruling = rule_allow(&facts(Standing::Unlisted, None, rule, Observing::default()));
        assert_eq!((label(&ruling.decision), ruling.observed), ("reject/firewall_rule".into(), None));
    }
}
