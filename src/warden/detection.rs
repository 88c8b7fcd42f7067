//! Telling stale devices from attackers, on the `Warden`: `report` counts distinct wrong
//! guesses per source (a repeated password counts once), quarantines a login and password that
//! keeps failing from one source, notices an account failing from many sources, records the
//! sources each account logs in from, and lengthens bans of repeat offenders. `why` explains
//! all of it for one address in plain words.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{LoginView, Warden, gauge_value};
use crate::accounts::Protection;
use crate::bans::{Ban, BanCause, BanGuess, BanReason};
use crate::clock::Timestamp;
use crate::config::{AttackResponse, Policy};
use crate::engine::{self, ReportKind};
use crate::events::{Event, EventKind};
use crate::failures::{Counting, FailedGuess, Guess, GuessKey};
use crate::journal::{Keep, KnownSource};
use crate::network::Source;
use crate::store::StoreError;
use crate::tolerance::Standing;
use crate::warden::Explanation;
use crate::wire::{LoginAttempt, Outcome, Protocol};

/// A (login, source) pair recorded as known is not written again for this long.
pub(super) const KNOWN_REWRITE_AFTER: Duration = Duration::from_secs(3600);

/// How long the journal keeps its records, from the policy.
pub(super) fn keep(policy: &Policy) -> Keep {
    Keep {
        events: policy.events,
        known_for: policy.account_protection.known_for,
        known_per_account: policy.account_protection.known_per_account,
    }
}

pub(super) fn counting(policy: &Policy) -> Counting {
    let stale = &policy.stale_passwords;
    Counting {
        window: policy.autoban.window,
        max_failures: policy.autoban.max_failures,
        max_guesses: engine::source_ban_threshold(&policy.autoban, policy.autoban.toleration.max),
        stale_after: stale.enabled.then_some(stale.after),
        quarantine_for: stale.quarantine_for,
        long_window: policy.autoban.long_window,
        long_max_guesses: engine::long_ban_threshold(&policy.autoban, policy.autoban.toleration.max).unwrap_or(0),
    }
}

/// The distinct guesses of `source` still counted in the window (forgiven ones weigh 0), of
/// one login (compared by `login::key`) or of all: their weight, and as a ban records them.
fn counted_guesses(guesses: &[Guess], login: Option<&str>, now: Timestamp, window: Duration) -> (u32, Vec<BanGuess>) {
    let wanted = login.map(crate::login::key);
    let mut counted = 0;
    let recorded = guesses
        .iter()
        .filter(|g| g.last_seen > now.minus(window))
        .filter(|g| wanted.as_ref().is_none_or(|w| crate::login::key(&g.login) == *w && !g.forgiven()))
        .inspect(|g| counted += u32::from(g.weight))
        .map(|g| BanGuess {
            login: g.login.to_string(),
            protocol: g.protocol.label().to_string(),
            device_id: g.device_id.to_string(),
            failures: g.failures,
            first_seen: g.first_seen.0,
            last_seen: g.last_seen.0,
        })
        .collect();
    (counted, recorded)
}

/// A ban of `source` (or of one login from it) placed now for `length`, after `failures`.
fn ban_record(
    trigger: BanTrigger<'_>,
    source: Source,
    refused_login: Option<String>,
    failures: u32,
    guesses: Vec<BanGuess>,
    now: Timestamp,
    length: Duration,
) -> Ban {
    Ban {
        source,
        refused_login,
        created_at: now,
        expires_at: now.plus(length),
        reason: BanReason::Autoban,
        failures,
        cause: BanCause {
            login: trigger.login.to_string(),
            protocol: trigger.protocol.label().to_string(),
            device_id: trigger.device_id.to_string(),
            guesses,
        },
    }
}

/// The block-log record of a ban (or IP+login refusal) just placed.
fn placed(kind: EventKind, ban: &Ban, address: Option<IpAddr>, detail: String) -> Event {
    Event {
        observed: false,
        at: ban.created_at,
        kind,
        login: ban.cause.login.clone(),
        ip: address,
        protocol: ban.cause.protocol.clone(),
        device_id: ban.cause.device_id.clone(),
        rule: None,
        detail,
    }
}

fn protection(policy: &Policy) -> Protection {
    Protection { sources: policy.account_protection.sources, window: policy.account_protection.window }
}

/// The failure that completes a ban, as the ban records it.
#[derive(Debug, Clone, Copy)]
pub(super) struct BanTrigger<'a> {
    pub login: &'a str,
    pub protocol: Protocol,
    pub device_id: &'a str,
    pub address: Option<IpAddr>,
}

/// What a report told this node, for the other nodes (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// A failure counted toward a ban.
    Failure(CountedFailure),
    /// `login` logged in from `source`: its guesses from there are forgotten everywhere.
    Success { source: Source, login: String },
    /// The IP+login refusal of `login` from `source` was lifted: its guesses from there are
    /// forgotten everywhere too, so its next wrong password does not refuse it again at once.
    Forgiven { source: Source, login: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedFailure {
    pub source: Source,
    pub key: GuessKey,
    pub login: String,
    pub protocol: Protocol,
    pub device_id: String,
    /// 1, or 2 for an unknown login when so configured.
    pub weight: u32,
    /// The client's address (the source may be a whole /64).
    pub address: Option<IpAddr>,
    pub at: Timestamp,
}

/// What a `report` changed that the caller must finish off the request path.
#[derive(Debug, Default)]
pub struct ReportEffects {
    /// A ban placed: the caller must `persist_ban` it.
    pub ban: Option<Arc<Ban>>,
    /// A subnet ban that `ban` completed: the caller must `persist_ban` it too.
    pub subnet_ban: Option<Arc<Ban>>,
    /// An account that just came under attack: the caller must `load_known_sources` for it.
    pub attacked_login: Option<String>,
}

/// Everything known about an address, for `mailwarden why` and `/api/v1/why`.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// What `allow` would answer now (for the login asked about, if any).
    pub explanation: Explanation,
    /// The distinct wrong guesses still remembered from the address's source, newest first.
    pub guesses: Vec<Guess>,
    pub window: Duration,
    /// Failures of one guess after which it is quarantined (`None`: quarantine off).
    pub stale_after: Option<u32>,
    /// Accounts seen at this address (or asked about) that are under attack now.
    pub accounts_under_attack: Vec<String>,
    /// What an account under attack answers to new addresses.
    pub attack_response: AttackResponse,
    /// The tolerance the source has earned from its good logins.
    pub tolerance: Standing,
    /// Distinct wrong guesses that ban a source nobody logged in from.
    pub max_failures: u32,
    /// How long a good login earns tolerance.
    pub tolerance_window: Duration,
    /// Distinct wrong guesses of the source in the long window, what bans it there (with its
    /// tolerance; `None`: the long window is off), and the long window.
    pub long_failures: u32,
    pub long_threshold: Option<u32>,
    pub long_window: Duration,
    /// The source has earned tolerance, which spares it the subnet ban `explanation.ban`.
    pub spared_by_tolerance: bool,
    /// The source's IP+login refusals (only the login asked about, when one was).
    pub login_refusals: Vec<Arc<Ban>>,
}

/// The mail app's name from an IMAP ID string such as `"name" "Thunderbird" "version" "115"`.
pub fn device_name(device_id: &str) -> Option<String> {
    let fields: Vec<&str> = device_id.split('"').skip(1).step_by(2).collect();
    let value = |key: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.first().is_some_and(|k| k.eq_ignore_ascii_case(key)))
            .and_then(|pair| pair.get(1))
    };
    match (value("name"), value("version")) {
        (Some(name), Some(version)) => Some(format!("{name} {version}")),
        (Some(name), None) => Some(name.to_string()),
        _ => None,
    }
}

impl Diagnosis {
    /// The diagnosis in plain words, one sentence a line. Never shows a password hash.
    pub fn lines(&self) -> Vec<String> {
        let e = &self.explanation;
        let mut lines = vec![e.summary()];
        if let Some(ban) = &e.ban {
            for guess in &ban.cause.guesses {
                let device = device_name(&guess.device_id).map(|d| format!(" from {d}")).unwrap_or_default();
                let times = if guess.failures == 1 {
                    "once".to_string()
                } else {
                    format!("{} times (the same password)", guess.failures)
                };
                lines.push(format!(
                    "led to the ban: a wrong password for {} over {}{device}, {times}, {} to {}",
                    guess.login,
                    guess.protocol,
                    Timestamp(guess.first_seen).readable(),
                    Timestamp(guess.last_seen).readable()
                ));
            }
        }
        for refusal in &self.login_refusals {
            let login = refusal.refused_login().unwrap_or_default();
            lines.push(format!(
                "per-login refusal: logins to {login} from {} are refused until {} after {} distinct wrong passwords for it; other accounts at this address are not affected",
                refusal.source,
                refusal.expires_at.readable(),
                refusal.failures
            ));
        }
        let minutes = self.window.as_secs() / 60;
        if self.tolerance.good_accounts > 0 {
            let days = self.tolerance_window.as_secs() / 86_400;
            let accounts = if self.tolerance.good_accounts == 1 {
                "1 account has".to_string()
            } else {
                format!("{} accounts have", self.tolerance.good_accounts)
            };
            lines.push(format!(
                "tolerance: {accounts} logged in successfully from {} in the last {days} days, so it is banned at {} distinct wrong passwords in {minutes} minutes instead of {}; {} count now",
                e.source, e.max_failures, self.max_failures, e.failures_in_window
            ));
        }
        if let Some(threshold) = self.long_threshold
            && self.long_failures > 0
        {
            lines.push(format!(
                "long window: {} distinct wrong passwords from {} in the last {}; {threshold} ban it for a day (a slow guesser)",
                self.long_failures,
                e.source,
                humantime::format_duration(self.long_window)
            ));
        }
        if let Some(ban) = e.ban.as_ref().filter(|_| self.spared_by_tolerance) {
            lines.push(format!(
                "{} is banned as a subnet until {} ({} of its addresses were banned), but people log in successfully from {}, so it is not refused",
                ban.source,
                ban.expires_at.readable(),
                ban.failures,
                e.source
            ));
        }
        // Different wrong passwords for one login, protocol and app read as one line.
        let mut attempts: Vec<(&str, &str, String, u32, u32, Timestamp, Timestamp)> = Vec::new();
        for guess in &self.guesses {
            let forgiven = if guess.forgiven() {
                format!("; not counted: {} logged in successfully from here afterwards", guess.login)
            } else {
                String::new()
            };
            let device = device_name(&guess.device_id).map(|d| format!(" ({d})")).unwrap_or_default();
            let stale =
                self.stale_after.is_some_and(|after| guess.failures >= after) || guess.quarantined_until().is_some();
            if !stale {
                let device = format!("{device}{forgiven}");
                let key = (guess.login.as_ref(), guess.protocol.label(), device);
                match attempts.iter_mut().find(|a| (a.0, a.1, &a.2) == (key.0, key.1, &key.2)) {
                    Some(a) => {
                        a.3 += 1;
                        a.4 += guess.failures;
                        a.5 = a.5.min(guess.first_seen);
                        a.6 = a.6.max(guess.last_seen);
                    }
                    None => attempts.push((key.0, key.1, key.2, 1, guess.failures, guess.first_seen, guess.last_seen)),
                }
                continue;
            }
            let line = {
                let quarantine = guess
                    .quarantined_until()
                    .map(|end| format!("; that password is refused from here until {}", end.readable()))
                    .unwrap_or_default();
                format!(
                    "stale device: a mail app{device} keeps using an old password for {} over {}: {} tries since {}, last at {}{quarantine}{forgiven}",
                    guess.login,
                    guess.protocol.label(),
                    guess.failures,
                    guess.first_seen.readable(),
                    guess.last_seen.readable()
                )
            };
            lines.push(line);
        }
        for (login, protocol, device, passwords, tries, first, last) in attempts {
            let what = if passwords == 1 {
                "a wrong password".to_string()
            } else {
                format!("{passwords} different wrong passwords")
            };
            lines.push(format!(
                "{what} for {login} over {protocol}{device}: {tries} {} in the last {minutes} minutes, first at {}, last at {}",
                if tries == 1 { "try" } else { "tries" },
                first.readable(),
                last.readable()
            ));
        }
        for login in &self.accounts_under_attack {
            let response = match self.attack_response {
                AttackResponse::Delay(seconds) => format!("delayed {seconds} s"),
                AttackResponse::Reject => "refused".to_string(),
            };
            lines.push(format!(
                "{login} is under attack from many addresses: logins from addresses it has not logged in from lately are {response}"
            ));
        }
        lines
    }
}

/// The mail app's IMAP ID as stored with a known source: without control characters (the
/// wire already cut it to `MAX_DEVICE_ID_LEN`). Most IDs have none and are copied whole.
fn printable_app(device_id: &str) -> String {
    if device_id.bytes().any(|b| b.is_ascii_control()) || !device_id.is_ascii() {
        device_id.chars().filter(|c| !c.is_control()).collect()
    } else {
        device_id.to_string()
    }
}

impl Warden {
    /// Whether this exact login and password is quarantined from the login's source.
    pub(super) fn stale_guess(&self, view: &LoginView<'_>, now: Timestamp) -> bool {
        let shared = &*self.shared;
        let (Some(address), Some(pwhash)) = (view.address, view.pwhash) else {
            return false;
        };
        let policy = shared.policy.load();
        if !policy.stale_passwords.enabled {
            return false;
        }
        let source = policy.autoban.grouping.source_of(address);
        let key = shared.failures.guess_key(view.login, pwhash);
        shared.failures.quarantined(source, key, now).is_some()
    }

    /// The response owed to this login when its account is under attack and its source is
    /// not one the account logged in from lately.
    pub(super) fn unknown_source_under_attack(&self, view: &LoginView<'_>, now: Timestamp) -> Option<AttackResponse> {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let settings = &policy.account_protection;
        if !settings.enabled || view.login.is_empty() {
            return None;
        }
        let history = shared.accounts.under_attack(view.login, now, &protection(&policy))?;
        let source = view.address.map(|ip| policy.autoban.grouping.source_of(ip));
        let known = source.is_some_and(|s| history.known.as_ref().is_some_and(|k| k.contains(&s)));
        (!known).then_some(settings.response)
    }

    /// Takes Dovecot's `report`.
    pub fn report(&self, attempt: &LoginAttempt<'_>, outcome: Outcome) -> ReportEffects {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let standing = self.standing(attempt.remote, now);
        let kind = engine::classify_report(
            outcome.success,
            outcome.policy_reject,
            attempt.fail_type,
            attempt.remote.is_some(),
            standing,
        );
        shared.metrics.reports.of(&[kind.label()]).inc();
        let Some(address) = attempt.remote else {
            return ReportEffects::default();
        };
        let source = policy.autoban.grouping.source_of(address);
        match kind {
            ReportKind::Success => {
                self.record_success(attempt, source, now, &policy);
                ReportEffects::default()
            }
            ReportKind::RefusedByPolicy if !attempt.pwhash.is_empty() => {
                // Refused before the password check: if it was a quarantined password, it is
                // one more try of that stale device.
                let key = shared.failures.guess_key(&attempt.login, &attempt.pwhash);
                shared.failures.count_refused_retry(source, key, now);
                ReportEffects::default()
            }
            ReportKind::Failure { unknown_account } => {
                let weight = if unknown_account && policy.autoban.unknown_accounts_count_double { 2 } else { 1 };
                self.record_failure(attempt, source, weight, now, &policy)
            }
            ReportKind::AccountExpired | ReportKind::AccountDisabled => {
                let login = &attempt.login;
                let (event, detail) = if kind == ReportKind::AccountExpired {
                    (
                        EventKind::AccountExpired,
                        format!("{login}'s password has expired: the user needs a new password, not an unban"),
                    )
                } else {
                    (
                        EventKind::AccountDisabled,
                        format!("{login} is disabled: logins fail whatever the password; not counted toward a ban"),
                    )
                };
                // Once per login, source and kind within the window: a disabled account tried
                // forever must not push everything else out of the block log.
                let seen = (Box::<str>::from(login.as_ref()), source, event.label());
                if shared.unusable_noted.contains_key(&seen) {
                    return ReportEffects::default();
                }
                shared.unusable_noted.insert(seen, ());
                shared.journal.event(Event {
                    observed: false,
                    at: now,
                    kind: event,
                    login: login.to_string(),
                    ip: attempt.remote,
                    protocol: attempt.protocol.label().to_string(),
                    device_id: attempt.device_id.to_string(),
                    rule: None,
                    detail,
                });
                ReportEffects::default()
            }
            _ => ReportEffects::default(),
        }
    }

    /// A successful login: its guesses from this source are forgiven (they stop counting
    /// toward a ban and their quarantine is lifted, but `why` still tells them), the source
    /// earns tolerance, and it becomes known to the account.
    fn record_success(&self, attempt: &LoginAttempt<'_>, source: Source, now: Timestamp, policy: &Policy) {
        let shared = &*self.shared;
        let login: &str = &attempt.login;
        if login.is_empty() {
            return;
        }
        shared.failures.forgive_login(source, login, now);
        if let Some(share) = shared.count_sharing.get() {
            share(Counted::Success { source, login: login.to_string() });
        }
        shared.accounts.add_known(login, source, now, &protection(policy));
        // Keyed by a hash of the pair, so the check allocates nothing on every successful
        // login; a collision only skips one rewrite of a record.
        let pair = std::hash::BuildHasher::hash_one(&shared.known_recorded_keys, (login, source));
        let rewrite_after = now.plus(KNOWN_REWRITE_AFTER);
        let already_recorded = shared.known_recorded.upsert(pair, now, |recorded_until| match *recorded_until {
            Some(until) => (true, until),
            None => {
                *recorded_until = Some(rewrite_after);
                (false, rewrite_after)
            }
        });
        if already_recorded {
            // The pair earned its tolerance within the hour, and that is refreshed once an
            // hour like the stored record: a mail app polling every few minutes would
            // otherwise probe a second large map on each of its logins for nothing
            // (docs/BENCHMARKS.md). The tolerance it earns then ends at most an hour early.
            return;
        }
        shared.tolerance.record_success(source, login, now, &policy.autoban.toleration);
        let queued = shared.journal.known_source(KnownSource {
            login: login.to_string(),
            source,
            at: now,
            protocol: attempt.protocol.label().to_string(),
            // Already cut to `MAX_DEVICE_ID_LEN` by the wire; shown on the console.
            app: printable_app(&attempt.device_id),
        });
        if !queued {
            // Dropped by a full queue: the pair's next success tries again, rather than the
            // account missing this place for an hour.
            shared.known_recorded.remove(&pair);
        }
    }

    fn record_failure(
        &self,
        attempt: &LoginAttempt<'_>,
        source: Source,
        weight: u32,
        now: Timestamp,
        policy: &Policy,
    ) -> ReportEffects {
        let shared = &*self.shared;
        let mut effects = ReportEffects::default();
        let failed = FailedGuess {
            key: shared.failures.guess_key(&attempt.login, &attempt.pwhash),
            login: &attempt.login,
            protocol: attempt.protocol,
            device_id: &attempt.device_id,
            weight,
        };
        let recorded = shared.failures.record_failure(source, failed, now, &counting(policy));
        let guess_kind = if recorded.new_guess { "new" } else { "repeated" };
        shared.metrics.failed_guesses.of(&[guess_kind]).inc();
        let event = |kind, detail: String| super::attempt_event(attempt, kind, now, detail);
        if recorded.quarantined {
            shared.metrics.quarantines.with_label_values(&[attempt.protocol.label()]).inc();
            let detail = format!(
                "the same wrong password failed {} times from {source}; refused from there for a while",
                recorded.repeats
            );
            shared.journal.event(event(EventKind::QuarantineStarted, detail));
            // One GeoIP lookup per quarantine (rare), for the owner's notice.
            let country = attempt.remote.and_then(|ip| shared.geoip.load().country(ip)).map(|c| c.to_string());
            let stale = crate::notify::StaleDevice {
                login: &attempt.login,
                source,
                address: attempt.remote,
                country,
                protocol: attempt.protocol.label(),
                device_id: &attempt.device_id,
                device: device_name(&attempt.device_id),
                failures: recorded.repeats,
                since: recorded.first_failed,
            };
            shared.notifier.publish(crate::notify::Notice::quarantine_started(&stale, now));
        }
        if policy.account_protection.enabled
            && shared.accounts.record_failure(&attempt.login, source, now, &protection(policy))
        {
            shared.metrics.account_attacks.with_label_values(&[attempt.protocol.label()]).inc();
            let detail = format!(
                "{} addresses failed to log in within {}",
                policy.account_protection.sources,
                humantime::format_duration(policy.account_protection.window)
            );
            shared.journal.event(event(EventKind::AttackStarted, detail));
            self.announce_attack(&attempt.login, policy.account_protection.sources as usize, now);
            effects.attacked_login = Some(attempt.login.to_string());
        }
        if let Some(share) = shared.count_sharing.get() {
            share(Counted::Failure(CountedFailure {
                source,
                key: failed.key,
                login: attempt.login.to_string(),
                protocol: attempt.protocol,
                device_id: attempt.device_id.to_string(),
                weight,
                address: attempt.remote,
                at: now,
            }));
        }
        let already_banned = shared.bans.active(source, now).is_some();
        // Toleration is looked up only once a source has made enough guesses to need it (a
        // login's guesses are some of its source's, so its refusal needs as many).
        let earned = if recorded.distinct >= policy.autoban.max_failures {
            self.tolerance_earned(source, now, policy)
        } else {
            0
        };
        let threshold = engine::source_ban_threshold(&policy.autoban, earned);
        let trigger = BanTrigger {
            login: &attempt.login,
            protocol: attempt.protocol,
            device_id: &attempt.device_id,
            address: attempt.remote,
        };
        let long_threshold = if recorded.long_distinct >= policy.autoban.long_max_failures {
            engine::long_ban_threshold(&policy.autoban, earned)
        } else {
            None
        };
        let reason = if engine::bans_source(recorded.distinct, already_banned, threshold) {
            Some(BanReason::Autoban)
        } else if long_threshold.is_some_and(|t| engine::bans_source(recorded.long_distinct, already_banned, t)) {
            Some(BanReason::LongWindow)
        } else {
            None
        };
        if let Some(reason) = reason {
            let (window, failures) = match reason {
                BanReason::LongWindow => (policy.autoban.long_window, recorded.long_distinct),
                _ => (policy.autoban.window, recorded.distinct),
            };
            let guesses = counted_guesses(&shared.failures.guesses(source, now), None, now, window).1;
            if let Some(ban) = self.place_ban(trigger, source, reason, failures, guesses, now, policy) {
                effects.subnet_ban = self.ban_subnet_after(&ban, trigger, now, policy);
                effects.ban = Some(ban);
            }
        } else if earned > 0 && !already_banned {
            // A failure that would have banned an address nobody logged in from.
            if recorded.new_guess {
                shared.metrics.tolerated_failures.inc();
            }
            let (counted, guesses) = counted_guesses(
                &shared.failures.guesses(source, now),
                Some(&attempt.login),
                now,
                policy.autoban.window,
            );
            effects.ban = self.refuse_login_when_due(trigger, source, counted, guesses, earned, now, policy);
        }
        effects
    }

    /// The ban that refuses `address` now: the one covering it, except a subnet ban for an
    /// address that has earned tolerance (an office whose people log in successfully is not
    /// refused for its neighbours' guessing; its own guesses still ban it as ever).
    pub(super) fn ban_refusing(&self, address: IpAddr, now: Timestamp, policy: &Policy) -> Option<Arc<Ban>> {
        let ban = self.shared.bans.active_for_address(address, policy.autoban.grouping, now)?;
        if ban.reason == BanReason::Subnet && self.subnet_exempt(address, now, &policy) {
            return None;
        }
        Some(ban)
    }

    /// Whether `address` is spared a subnet ban: its own source has earned tolerance.
    pub(super) fn subnet_exempt(&self, address: IpAddr, now: Timestamp, policy: &Policy) -> bool {
        let source = policy.autoban.grouping.source_of(address);
        self.tolerance_earned(source, now, policy) > 0
    }

    /// Bans the subnet of `ban`'s source when enough of its sources were banned within
    /// `subnet_window`. Never a trusted network's subnet; toleration plays no part in this
    /// decision (it spares tolerated addresses at `allow`, see `ban_refusing`).
    pub(super) fn ban_subnet_after(
        &self,
        ban: &Ban,
        trigger: BanTrigger<'_>,
        now: Timestamp,
        policy: &Policy,
    ) -> Option<Arc<Ban>> {
        let shared = &*self.shared;
        let settings = &policy.autoban.subnets;
        if ban.reason == BanReason::Subnet {
            return None;
        }
        let subnet = crate::subnets::SubnetWatch::subnet_of(ban.source, settings)?;
        let banned = shared.subnets.source_banned(subnet, ban.source, now, settings);
        if banned < settings.bans || shared.bans.active(subnet, now).is_some() {
            return None;
        }
        let net = subnet.network();
        if let crate::access::Standing::Trusted(trusted) = self.standing(Some(net.addr()), now)
            && trusted.prefix_len() <= net.prefix_len()
        {
            return None;
        }
        shared.subnets.forget(subnet);
        let subnet_ban = Arc::new(Ban {
            source: subnet,
            refused_login: None,
            created_at: now,
            expires_at: now.plus(settings.ban_for),
            reason: BanReason::Subnet,
            failures: banned,
            cause: BanCause {
                login: trigger.login.to_string(),
                protocol: trigger.protocol.label().to_string(),
                device_id: trigger.device_id.to_string(),
                guesses: Vec::new(),
            },
        });
        shared.bans.insert(subnet_ban.clone());
        shared.metrics.bans_created.with_label_values(&[BanReason::Subnet.label()]).inc();
        shared.activity.record(crate::activity::Kind::Ban(crate::activity::SUBNET_BAN), now);
        shared.metrics.active_bans.set(gauge_value(shared.bans.len()));
        shared.journal.event(Event {
            observed: false,
            at: now,
            kind: EventKind::BanPlaced,
            login: subnet_ban.cause.login.clone(),
            ip: trigger.address,
            protocol: subnet_ban.cause.protocol.clone(),
            device_id: subnet_ban.cause.device_id.clone(),
            rule: None,
            detail: format!(
                "subnet ban: {subnet} banned until {} after {banned} of its sources were banned within {} (the last {})",
                subnet_ban.expires_at.rfc3339(),
                humantime::format_duration(settings.window),
                ban.source
            ),
        });
        Some(subnet_ban)
    }

    /// Refuses `trigger.login` from `source` (an IP+login refusal) when its own guesses still
    /// counted there, `login_failures`, call for it (`engine::refuses_login`) and it is not
    /// refused already. The caller stores the refusal (`persist_ban`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refuse_login_when_due(
        &self,
        trigger: BanTrigger<'_>,
        source: Source,
        login_failures: u32,
        guesses: Vec<BanGuess>,
        earned: u32,
        now: Timestamp,
        policy: &Policy,
    ) -> Option<Arc<Ban>> {
        let shared = &*self.shared;
        let refused = shared.bans.login_refusal(source, trigger.login, now).is_some();
        if !engine::refuses_login(login_failures, refused, &policy.autoban, earned) {
            return None;
        }
        let login = crate::login::key(trigger.login).into_owned();
        let ban =
            Arc::new(ban_record(trigger, source, Some(login), login_failures, guesses, now, policy.autoban.ban_for));
        shared.bans.insert(ban.clone());
        shared.metrics.login_refusals.with_label_values(&[trigger.protocol.label()]).inc();
        shared.activity.record(crate::activity::Kind::Ban(crate::activity::LOGIN_BAN), now);
        let detail = format!(
            "{} refused from {source} until {} after {login_failures} distinct wrong passwords for it; other logins from there are not refused",
            trigger.login,
            ban.expires_at.rfc3339()
        );
        shared.journal.event(placed(EventKind::LoginRefusalPlaced, &ban, trigger.address, detail));
        Some(ban)
    }

    /// The extra guesses `source` has earned from its good logins.
    pub(super) fn tolerance_earned(&self, source: Source, now: Timestamp, policy: &Policy) -> u32 {
        self.shared.tolerance.standing(source, now, &policy.autoban.toleration).earned
    }

    /// Bans `source` after `failures` distinct guesses (counted here or across the cluster)
    /// in the window, or the long window for `BanReason::LongWindow`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place_ban(
        &self,
        trigger: BanTrigger<'_>,
        source: Source,
        reason: BanReason,
        failures: u32,
        guesses: Vec<BanGuess>,
        now: Timestamp,
        policy: &Policy,
    ) -> Option<Arc<Ban>> {
        let shared = &*self.shared;
        // A request worker counting a failure here and the cluster's counting thread hearing
        // the shared count may both find the source unbanned at once: the check and the
        // insert are one step, so only one of them places (and announces) the ban.
        let _placing = shared.placing_bans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if shared.bans.active(source, now).is_some() {
            return None;
        }
        let previous = shared.ban_history.get(&source);
        let mut length = engine::ban_length(&policy.autoban, previous, now);
        if reason == BanReason::LongWindow {
            // cPHulk's one-day block: a slow guesser comes back after a short ban.
            length = length.max(policy.autoban.long_ban_for);
        }
        if length > policy.autoban.ban_for {
            shared.metrics.ban_escalations.with_label_values(&["repeat_offender"]).inc();
        }
        shared.ban_history.insert(source, (now, length));
        let mut record = ban_record(trigger, source, None, failures, guesses, now, length);
        record.reason = reason;
        let ban = Arc::new(record);
        shared.bans.insert(ban.clone());
        shared.failures.forget(source);
        shared.metrics.bans_created.with_label_values(&[ban.reason.label()]).inc();
        shared.activity.record(crate::activity::Kind::Ban(crate::activity::SOURCE_BAN), now);
        shared.metrics.active_bans.set(gauge_value(shared.bans.len()));
        let escalated = if reason == BanReason::LongWindow {
            format!(
                " within the long window of {} (a slow guesser)",
                humantime::format_duration(policy.autoban.long_window)
            )
        } else if length > policy.autoban.ban_for {
            " (a repeat offender)".to_string()
        } else {
            String::new()
        };
        let detail = format!(
            "{source} banned until {} after {failures} distinct wrong passwords{escalated}",
            ban.expires_at.rfc3339()
        );
        shared.journal.event(placed(EventKind::BanPlaced, &ban, trigger.address, detail));
        Some(ban)
    }

    /// Loads the known sources of an account that just came under attack. Blocking.
    pub fn load_known_sources(&self, login: &str) -> Result<usize, StoreError> {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        // Successful logins still being gathered by the journal count too.
        shared.journal.flush();
        let now = shared.clock.now();
        let since = now.minus(policy.account_protection.known_for);
        let known = shared.store.known_sources(login, since, policy.account_protection.known_per_account);
        shared.metrics.store_result("read_known_sources", &known);
        let known = known?;
        let count = known.len();
        shared.accounts.set_known(login, known, now);
        tracing::info!(login, known = count, "account under attack; its known sources keep logging in as usual");
        Ok(count)
    }

    /// Accounts under a distributed attack now.
    pub fn accounts_under_attack(&self) -> Vec<String> {
        let policy = self.shared.policy.load();
        self.shared.accounts.attacked(self.shared.clock.now(), &protection(&policy))
    }

    /// Everything known about `address` (and `login`, when given): the decision, the ban and
    /// what led to it, the wrong passwords still counted, stale devices, accounts under attack.
    pub fn why(&self, address: IpAddr, login: Option<&str>) -> Diagnosis {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let view = LoginView {
            address: Some(address),
            real_remote: None,
            login: login.unwrap_or(""),
            pwhash: None,
            protocol: crate::wire::Protocol::Imap,
        };
        let explanation = self.explain(&view, address);
        let source = policy.autoban.grouping.source_of(address);
        let mut guesses: Vec<Guess> = shared.failures.guesses(source, now);
        if let Some(login) = login {
            let wanted = crate::login::key(login);
            guesses.retain(|g| crate::login::key(&g.login) == wanted);
        }
        guesses.sort_by_key(|g| std::cmp::Reverse(g.last_seen));
        let protection = protection(&policy);
        let mut logins: Vec<String> =
            guesses.iter().map(|g| g.login.to_string()).chain(login.map(str::to_string)).collect();
        logins.sort();
        logins.dedup();
        let accounts_under_attack =
            logins.into_iter().filter(|l| shared.accounts.under_attack(l, now, &protection).is_some()).collect();
        let spared_by_tolerance = explanation.ban.as_ref().is_some_and(|b| b.reason == BanReason::Subnet)
            && !matches!(explanation.decision, engine::Decision::Reject(engine::Refusal::Banned { .. }))
            && self.subnet_exempt(address, now, &policy);
        Diagnosis {
            explanation,
            guesses,
            window: policy.autoban.window,
            stale_after: policy.stale_passwords.enabled.then_some(policy.stale_passwords.after),
            accounts_under_attack,
            attack_response: policy.account_protection.response,
            tolerance: shared.tolerance.standing(source, now, &policy.autoban.toleration),
            max_failures: policy.autoban.max_failures,
            tolerance_window: policy.autoban.toleration.window,
            long_failures: shared.failures.failures_in_long_window(source, now),
            long_threshold: engine::long_ban_threshold(&policy.autoban, self.tolerance_earned(source, now, &policy)),
            long_window: policy.autoban.long_window,
            spared_by_tolerance,
            login_refusals: shared
                .bans
                .login_refusals(source, now)
                .into_iter()
                .filter(|r| login.is_none_or(|l| crate::login::key(l) == r.refused_login().unwrap_or_default()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{device_name, printable_app};

    #[test]
    fn device_names_come_from_the_imap_id_string() {
        assert_eq!(device_name(r#""name" "Thunderbird" "version" "115.3""#).as_deref(), Some("Thunderbird 115.3"));
        assert_eq!(device_name(r#""NAME" "iPhone Mail""#).as_deref(), Some("iPhone Mail"));
        assert_eq!(device_name(""), None);
        assert_eq!(device_name(r#""vendor" "Acme""#), None);
    }

    #[test]
    fn a_mail_apps_id_is_stored_without_control_characters() {
        assert_eq!(printable_app(r#""name" "Thunderbird""#), r#""name" "Thunderbird""#);
        assert_eq!(printable_app("\"name\"\t\"K-9\"\u{7f}"), "\"name\"\"K-9\"");
        assert_eq!(printable_app("\"name\" \"Outlook\u{85}é\""), "\"name\" \"Outlooké\"");
        assert_eq!(printable_app(""), "");
    }
}
