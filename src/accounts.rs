//! Accounts under a distributed attack: one login failing from many sources within a window.
//! Kept in memory with a bound (`bounded`), per login: the distinct sources that failed recently
//! (at most the threshold: more are never needed), and, once the account is under attack, the
//! sources it logged in from successfully lately (its "known sources", loaded from the store
//! then), which keep logging in as usual while new sources are slowed down or refused.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::bounded::{BoundedMap, Then};
use crate::clock::Timestamp;
use crate::network::Source;

/// The protection rules in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// Distinct failing sources within `window` that put an account under attack.
    pub sources: u32,
    pub window: Duration,
}

/// One login's recent failures and, under attack, its known sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountHistory {
    /// Distinct sources that failed, with their last failure; at most `sources` entries.
    pub failing: Vec<(Source, Timestamp)>,
    /// Sources the account logged in from successfully, loaded when the attack began;
    /// `None` until then.
    pub known: Option<Vec<Source>>,
    /// When the current attack was first noticed.
    pub under_attack_since: Option<Timestamp>,
}

impl AccountHistory {
    fn failing_in_window(&self, now: Timestamp, window: Duration) -> usize {
        self.failing.iter().filter(|(_, at)| *at > now.minus(window)).count()
    }

    /// Whether the account is under attack at `now`.
    pub fn under_attack(&self, now: Timestamp, protection: &Protection) -> bool {
        self.under_attack_since.is_some()
            && self.failing_in_window(now, protection.window) >= protection.sources as usize
    }

    /// Records a failure from `source`; returns whether this one put the account under attack.
    fn record(&mut self, source: Source, now: Timestamp, protection: &Protection) -> bool {
        let window = protection.window;
        self.failing.retain(|(_, at)| *at > now.minus(window));
        match self.failing.iter_mut().find(|(s, _)| *s == source) {
            Some(entry) => entry.1 = now,
            None => {
                let cap = protection.sources.max(1) as usize;
                if self.failing.len() >= cap {
                    if let Some(oldest) = self.failing.iter().enumerate().min_by_key(|(_, (_, at))| *at).map(|(i, _)| i)
                    {
                        self.failing.remove(oldest);
                    }
                }
                // Most logins fail from one source: room for one more at a time.
                self.failing.reserve_exact(1);
                self.failing.push((source, now));
            }
        }
        let attacked = self.failing.len() >= protection.sources as usize;
        match (attacked, self.under_attack_since) {
            (true, None) => {
                self.under_attack_since = Some(now);
                true
            }
            (false, Some(_)) => {
                self.under_attack_since = None;
                self.known = None;
                false
            }
            _ => false,
        }
    }
}

/// Failing sources per login, bounded in accounts and in sources per account.
pub struct AccountTracker {
    accounts: BoundedMap<Box<str>, AccountHistory>,
    /// The latest failure (`Timestamp`'s milliseconds) after which an account was under
    /// attack. An account is under attack only while one of its failures is within the window,
    /// and its last failure left it so, so no account is under attack at `now` unless
    /// `now` is within a window of this: `under_attack` then answers without probing the map,
    /// which every `allow` asks and which holds every login that failed lately. Written under
    /// the account's lock, before any reader can see the account attacked.
    last_attacked_failure: AtomicI64,
}

/// The window counts from the last failure; an account under attack stays so while failures
/// keep coming from enough sources, and ends a window after they stop.
impl AccountTracker {
    pub fn new(max_accounts: u64) -> AccountTracker {
        AccountTracker {
            accounts: BoundedMap::new(max_accounts, |_| {}),
            last_attacked_failure: AtomicI64::new(i64::MIN),
        }
    }

    /// Records a failure of `login` from `source`; returns whether it put the account under
    /// attack (the caller then loads its known sources).
    pub fn record_failure(&self, login: &str, source: Source, now: Timestamp, protection: &Protection) -> bool {
        if login.is_empty() {
            return false;
        }
        let deadline = now.plus(protection.window);
        self.accounts.upsert(login.into(), now, |history| {
            let began = history.record(source, now, protection);
            if history.under_attack_since.is_some() {
                self.last_attacked_failure.fetch_max(now.0, Ordering::SeqCst);
            }
            (began, deadline)
        })
    }

    /// The account's history if it is under attack at `now`.
    pub fn under_attack(&self, login: &str, now: Timestamp, protection: &Protection) -> Option<AccountHistory> {
        if login.is_empty() || !self.attack_possible(now, protection) {
            return None;
        }
        self.accounts
            .get(login, now, |history| history.under_attack(now, protection).then(|| history.clone()))
            .flatten()
    }

    /// Sets the known sources of an account under attack (loaded from the store).
    pub fn set_known(&self, login: &str, known: Vec<Source>, now: Timestamp) {
        self.accounts.update(login, now, |history| {
            history.known = Some(known);
            ((), Then::Unchanged)
        });
    }

    /// Whether any account may be under attack at `now` (see `last_attacked_failure`).
    fn attack_possible(&self, now: Timestamp, protection: &Protection) -> bool {
        // `sources` is at least 2, so an attack needs a failure within the window.
        Timestamp(self.last_attacked_failure.load(Ordering::SeqCst)).plus(protection.window) > now
    }

    /// Adds `source` to the known sources of `login` if it is under attack with its known
    /// sources loaded (a login that just succeeded from there).
    pub fn add_known(&self, login: &str, source: Source, now: Timestamp, protection: &Protection) {
        // Known sources are loaded when an attack begins, and the history holding them expires
        // a window after its last failure: with no attack possible there is none to add to.
        if !self.attack_possible(now, protection) {
            return;
        }
        self.accounts.update(login, now, |history| {
            if let Some(known) = &mut history.known
                && !known.contains(&source)
            {
                known.push(source);
            }
            ((), Then::Unchanged)
        });
    }

    /// Drops part of the histories no longer needed at `now`.
    pub fn sweep(&self, now: Timestamp) -> usize {
        self.accounts.sweep(now)
    }

    /// Logins under attack at `now`.
    pub fn attacked(&self, now: Timestamp, protection: &Protection) -> Vec<String> {
        let mut logins = self
            .accounts
            .collect(now, |login, history| history.under_attack(now, protection).then(|| login.to_string()));
        logins.sort();
        logins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{SourceGrouping, parse_ip};

    const GROUPING: SourceGrouping = SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 };
    const START: Timestamp = Timestamp(1_795_334_400_000);
    const PROTECTION: Protection = Protection { sources: 10, window: Duration::from_secs(3600) };

    fn source(i: u32) -> Source {
        GROUPING.source_of(parse_ip(&format!("198.18.0.{i}")).unwrap())
    }

    #[test]
    fn an_attack_is_seen_to_its_windows_last_millisecond() {
        let tracker = AccountTracker::new(1000);
        for i in 1..=10 {
            tracker.record_failure("alice", source(i), START, &PROTECTION);
        }
        let later = START.plus(Duration::from_secs(600));
        for i in 1..=10 {
            tracker.record_failure("bob", source(i), later, &PROTECTION);
        }
        let window = PROTECTION.window;
        let just_before = |at: Timestamp| at.plus(window).minus(Duration::from_millis(1));
        assert!(tracker.under_attack("alice", just_before(START), &PROTECTION).is_some());
        assert!(tracker.under_attack("alice", START.plus(window), &PROTECTION).is_none());
        assert!(tracker.under_attack("bob", just_before(later), &PROTECTION).is_some());
        assert!(tracker.under_attack("bob", later.plus(window), &PROTECTION).is_none());
        let fresh = AccountTracker::new(1000);
        assert!(fresh.under_attack("alice", START, &PROTECTION).is_none(), "no attack ever: the map is not asked");
    }

    #[test]
    fn ten_distinct_failing_sources_within_the_hour_put_an_account_under_attack() {
        let tracker = AccountTracker::new(1000);
        for i in 1..=9 {
            assert!(!tracker.record_failure("alice", source(i), START, &PROTECTION));
            assert!(
                !tracker.record_failure("alice", source(i), START, &PROTECTION),
                "the same source again does not count"
            );
        }
        assert!(tracker.under_attack("alice", START, &PROTECTION).is_none());
        assert!(tracker.record_failure("alice", source(10), START, &PROTECTION), "the tenth source starts the attack");
        assert!(!tracker.record_failure("alice", source(11), START, &PROTECTION), "it is already under attack");
        assert!(tracker.under_attack("alice", START, &PROTECTION).is_some());
        assert!(tracker.under_attack("bob", START, &PROTECTION).is_none());
        assert_eq!(tracker.attacked(START, &PROTECTION), ["alice"]);
    }

    #[test]
    fn the_attack_ends_a_window_after_the_failures_stop() {
        let tracker = AccountTracker::new(1000);
        for i in 1..=10 {
            tracker.record_failure("alice", source(i), START, &PROTECTION);
        }
        let later = START.plus(Duration::from_secs(3601));
        assert!(tracker.under_attack("alice", later, &PROTECTION).is_none());
        // Failures spread thinner than ten an hour never start one.
        let slow = AccountTracker::new(1000);
        for i in 1..=30u32 {
            assert!(!slow.record_failure(
                "bob",
                source(i),
                START.plus(Duration::from_secs(u64::from(i) * 400)),
                &PROTECTION
            ));
        }
    }

    #[test]
    fn known_sources_are_kept_only_while_under_attack() {
        let tracker = AccountTracker::new(1000);
        for i in 1..=10 {
            tracker.record_failure("alice", source(i), START, &PROTECTION);
        }
        tracker.set_known("alice", vec![source(200)], START);
        tracker.add_known("alice", source(201), START, &PROTECTION);
        tracker.add_known("alice", source(201), START, &PROTECTION);
        let history = tracker.under_attack("alice", START, &PROTECTION).unwrap();
        assert_eq!(history.known, Some(vec![source(200), source(201)]));
        tracker.add_known("bob", source(1), START, &PROTECTION);
        assert!(tracker.under_attack("bob", START, &PROTECTION).is_none());
    }
}
