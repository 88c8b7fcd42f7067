//! Failed-login history per source, in memory with a bound (moka). A source's history is the
//! set of distinct wrong guesses it made, a guess being (login, password) as Dovecot's
//! `pwhash` identifies it: a stale device repeating one old password is one guess however
//! often it retries, while an attacker never repeats one. The auto-ban counts distinct guesses
//! in the window; a guess repeated `stale_after` times is quarantined.
//!
//! The password hash is never kept: a guess is remembered by a keyed hash of (login, pwhash)
//! with a key chosen at start-up. Histories idle for the window (or until their quarantine
//! ends) are dropped; at the bound the least useful sources are forgotten first. Forgetting
//! only loses counting history, never a ban (bans live in `bans`).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use prometheus::IntCounterVec;

use crate::clock::Timestamp;
use crate::network::Source;
use crate::wire::Protocol;

/// A guess, identified without its password hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuessKey(u64);

/// Longest login or device string kept per guess (for diagnosis only).
const LABEL_MAX: usize = 96;

fn label(text: &str) -> Box<str> {
    let mut end = text.len().min(LABEL_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].into()
}

/// One distinct wrong guess of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guess {
    pub key: GuessKey,
    pub login: Box<str>,
    pub protocol: Protocol,
    /// The IMAP ID string of the last failure (which mail app it was).
    pub device_id: Box<str>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Failures of this guess while it stayed in the window.
    pub failures: u32,
    /// Set once the guess failed `stale_after` times: later attempts with it are refused
    /// until then.
    pub quarantined_until: Option<Timestamp>,
    /// How much the guess counts toward a ban: 2 for an unknown login when so configured.
    pub weight: u32,
}

/// A failed login as the history records it.
#[derive(Debug, Clone, Copy)]
pub struct FailedGuess<'a> {
    pub key: GuessKey,
    pub login: &'a str,
    pub protocol: Protocol,
    pub device_id: &'a str,
    /// How much it counts toward a ban (1, or 2 for an unknown login when so configured).
    pub weight: u32,
}

/// The counting rules in force (from the policy; a reload replaces them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counting {
    pub window: Duration,
    /// Distinct guesses that ban a source.
    pub max_failures: u32,
    /// Failures of one guess that quarantine it; `None`: off.
    pub stale_after: Option<u32>,
    pub quarantine_for: Duration,
}

/// What recording one failure found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Distinct guesses in the window, this one included.
    pub distinct: u32,
    /// Whether this guess was new in the window (a repeat does not count again).
    pub new_guess: bool,
    /// Failures of this guess in the window.
    pub repeats: u32,
    /// Whether this failure put the guess in quarantine.
    pub quarantined: bool,
}

/// One source's guesses. Bounded: a source is banned (and its history dropped) once it makes
/// `max_failures` distinct guesses, so more are never needed; `EXTRA` leaves room for guesses
/// that are only still held for their quarantine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceHistory {
    pub guesses: Vec<Guess>,
    /// When the history last changed: expiry counts from here.
    updated_at: Timestamp,
}

const EXTRA: usize = 8;

impl SourceHistory {
    fn in_window(guess: &Guess, now: Timestamp, window: Duration) -> bool {
        guess.last_seen > now.minus(window)
    }

    /// Drops guesses out of the window and out of quarantine.
    fn prune(&mut self, now: Timestamp, window: Duration) {
        self.guesses.retain(|g| Self::in_window(g, now, window) || g.quarantined_until.is_some_and(|end| end > now));
        for guess in &mut self.guesses {
            if !Self::in_window(guess, now, window) {
                guess.failures = 0;
            }
        }
    }

    /// Distinct guesses in the window, each counted by its weight.
    pub fn distinct_in_window(&self, now: Timestamp, window: Duration) -> u32 {
        self.guesses.iter().filter(|g| Self::in_window(g, now, window)).map(|g| g.weight.max(1)).sum()
    }

    /// Records a failure.
    pub fn record(&mut self, failed: FailedGuess<'_>, now: Timestamp, counting: &Counting) -> Recorded {
        self.prune(now, counting.window);
        self.updated_at = now;
        let (new_guess, index) = match self.guesses.iter().position(|g| g.key == failed.key) {
            Some(index) => {
                let was_in_window = self.guesses[index].failures > 0;
                (!was_in_window, index)
            }
            None => {
                let cap = counting.max_failures.max(1) as usize + EXTRA;
                if self.guesses.len() >= cap {
                    let oldest = self.guesses.iter().enumerate().min_by_key(|(_, g)| g.last_seen).map(|(i, _)| i);
                    if let Some(oldest) = oldest {
                        self.guesses.remove(oldest);
                    }
                }
                self.guesses.push(Guess {
                    key: failed.key,
                    login: label(failed.login),
                    protocol: failed.protocol,
                    device_id: label(failed.device_id),
                    first_seen: now,
                    last_seen: now,
                    failures: 0,
                    quarantined_until: None,
                    weight: failed.weight.max(1),
                });
                (true, self.guesses.len() - 1)
            }
        };
        let guess = &mut self.guesses[index];
        guess.failures = guess.failures.saturating_add(1);
        guess.last_seen = now;
        guess.protocol = failed.protocol;
        if guess.device_id.as_ref() != failed.device_id {
            guess.device_id = label(failed.device_id);
        }
        let quarantined = match counting.stale_after {
            Some(after) if guess.failures >= after && guess.quarantined_until.is_none_or(|end| end <= now) => {
                guess.quarantined_until = Some(now.plus(counting.quarantine_for));
                true
            }
            _ => false,
        };
        let repeats = guess.failures;
        Recorded { distinct: self.distinct_in_window(now, counting.window), new_guess, repeats, quarantined }
    }

    /// The guess `key` if it is in quarantine at `now`.
    pub fn quarantined(&self, key: GuessKey, now: Timestamp) -> Option<&Guess> {
        self.guesses.iter().find(|g| g.key == key && g.quarantined_until.is_some_and(|end| end > now))
    }

    /// Forgets the guesses of `login` (after it logged in successfully from this source).
    /// Returns whether any were held.
    pub fn forget_login(&mut self, login: &str) -> bool {
        let before = self.guesses.len();
        let login = label(login);
        self.guesses.retain(|g| g.login != login);
        self.guesses.len() != before
    }

    /// How long after its last change the history is still needed.
    fn keep_for(&self, window: Duration) -> Duration {
        let quarantine =
            self.guesses.iter().filter_map(|g| g.quarantined_until).max().map(|end| self.updated_at.until(end));
        quarantine.map_or(window, |q| q.max(window))
    }
}

/// Keeps a history for the window or its quarantine, whichever is longer.
struct KeepWhileNeeded {
    window_millis: Arc<AtomicU64>,
}

impl KeepWhileNeeded {
    fn keep(&self, history: &SourceHistory) -> Option<Duration> {
        Some(history.keep_for(Duration::from_millis(self.window_millis.load(Ordering::Relaxed))))
    }
}

impl Expiry<Source, Arc<SourceHistory>> for KeepWhileNeeded {
    fn expire_after_create(&self, _: &Source, history: &Arc<SourceHistory>, _: Instant) -> Option<Duration> {
        self.keep(history)
    }

    fn expire_after_update(
        &self,
        _: &Source,
        history: &Arc<SourceHistory>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.keep(history)
    }
}

/// Failed-login histories of every source, bounded.
pub struct FailureTracker {
    histories: Cache<Source, Arc<SourceHistory>>,
    /// The window in force, shared with the expiry policy so a reload applies to both.
    window_millis: Arc<AtomicU64>,
    /// Keys guesses so that remembered fingerprints reveal nothing of the password hashes.
    fingerprints: std::collections::hash_map::RandomState,
}

impl FailureTracker {
    /// `max_sources` is fixed for the tracker's life; the window can be changed. `evictions`
    /// counts histories dropped, by cause (`capacity`: the bound was reached; `expired`: no
    /// longer needed).
    pub fn new(window: Duration, max_sources: u64, evictions: IntCounterVec) -> FailureTracker {
        let window_millis = Arc::new(AtomicU64::new(0));
        let histories = Cache::builder()
            .max_capacity(max_sources)
            .expire_after(KeepWhileNeeded { window_millis: window_millis.clone() })
            .eviction_listener(move |_, _, cause| {
                let label = match cause {
                    RemovalCause::Size => "capacity",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                evictions.with_label_values(&[label]).inc();
            })
            .build();
        let tracker = FailureTracker { histories, window_millis, fingerprints: Default::default() };
        tracker.set_window(window);
        tracker
    }

    /// Applies a reloaded window; histories already held keep their failures.
    pub fn set_window(&self, window: Duration) {
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.window_millis.store(millis, Ordering::Relaxed);
    }

    /// The key of the guess (login, pwhash).
    pub fn guess_key(&self, login: &str, pwhash: &str) -> GuessKey {
        let mut hasher = self.fingerprints.build_hasher();
        login.hash(&mut hasher);
        pwhash.hash(&mut hasher);
        GuessKey(hasher.finish())
    }

    /// Records a failed guess of `source` at `now`.
    pub fn record_failure(
        &self,
        source: Source,
        failed: FailedGuess<'_>,
        now: Timestamp,
        counting: &Counting,
    ) -> Recorded {
        let mut outcome = None;
        self.histories.entry(source).and_upsert_with(|existing| {
            let mut history = existing.map(|e| SourceHistory::clone(&e.into_value())).unwrap_or_default();
            outcome = Some(history.record(failed, now, counting));
            Arc::new(history)
        });
        outcome.unwrap_or(Recorded { distinct: 1, new_guess: true, repeats: 1, quarantined: false })
    }

    /// The quarantined guess `key` of `source`, if any: a cheap lookup for every `allow`.
    pub fn quarantined(&self, source: Source, key: GuessKey, now: Timestamp) -> Option<Guess> {
        self.histories.get(&source)?.quarantined(key, now).cloned()
    }

    /// Distinct guesses of `source` in the window ending at `now`.
    pub fn failures_in_window(&self, source: Source, now: Timestamp) -> u32 {
        let window = Duration::from_millis(self.window_millis.load(Ordering::Relaxed));
        self.histories.get(&source).map(|h| h.distinct_in_window(now, window)).unwrap_or(0)
    }

    /// The history of `source`, for diagnosis.
    pub fn history(&self, source: Source) -> Option<Arc<SourceHistory>> {
        self.histories.get(&source)
    }

    /// Forgets `login`'s guesses from `source` (it just logged in successfully from there).
    pub fn forget_login(&self, source: Source, login: &str) {
        let Some(current) = self.histories.get(&source) else {
            return;
        };
        if !current.guesses.iter().any(|g| g.login.as_ref() == login) {
            return;
        }
        self.histories.entry(source).and_compute_with(|existing| {
            use moka::ops::compute::Op;
            let Some(entry) = existing else {
                return Op::Nop;
            };
            let mut history = SourceHistory::clone(&entry.into_value());
            history.forget_login(login);
            if history.guesses.is_empty() { Op::Remove } else { Op::Put(Arc::new(history)) }
        });
    }

    /// Drops the history of `source` (after it is banned, or unbanned by an admin, so it
    /// starts afresh).
    pub fn forget(&self, source: Source) {
        self.histories.invalidate(&source);
    }

    /// Sources currently remembered (approximate, as moka counts lazily).
    pub fn tracked_sources(&self) -> u64 {
        self.histories.run_pending_tasks();
        self.histories.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{SourceGrouping, parse_ip};

    const GROUPING: SourceGrouping = SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 };
    const START: Timestamp = Timestamp(1_795_334_400_000);

    fn source(address: &str) -> Source {
        GROUPING.source_of(parse_ip(address).unwrap())
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    fn counting() -> Counting {
        Counting { window: minutes(20), max_failures: 5, stale_after: Some(3), quarantine_for: minutes(60) }
    }

    fn evictions() -> IntCounterVec {
        crate::metrics::Metrics::new().unwrap().tracked_source_evictions
    }

    fn tracker() -> FailureTracker {
        FailureTracker::new(minutes(20), 10_000, evictions())
    }

    fn fail(t: &FailureTracker, from: &str, login: &str, password: &str, at: Timestamp) -> Recorded {
        let failed = FailedGuess {
            key: t.guess_key(login, password),
            login,
            protocol: Protocol::Imap,
            device_id: "",
            weight: 1,
        };
        t.record_failure(source(from), failed, at, &counting())
    }

    #[test]
    fn repeating_one_wrong_password_is_one_guess_and_new_passwords_each_count() {
        let t = tracker();
        for i in 0..50 {
            let r =
                fail(&t, "203.0.113.7", "alice@example.com", "old-password", START.plus(Duration::from_secs(i * 10)));
            assert_eq!(r.distinct, 1, "attempt {i}");
        }
        for (i, password) in ["a", "b", "c", "d"].iter().enumerate() {
            let r = fail(&t, "198.51.100.7", "alice@example.com", password, START);
            assert_eq!((r.distinct, r.new_guess), (i as u32 + 1, true));
        }
    }

    #[test]
    fn spraying_one_password_over_many_logins_counts_each_login() {
        let t = tracker();
        let distinct: Vec<u32> = ["a@x", "b@x", "c@x", "d@x", "e@x"]
            .iter()
            .map(|login| fail(&t, "198.51.100.7", login, "Summer2026!", START).distinct)
            .collect();
        assert_eq!(distinct, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn guesses_age_out_of_the_window() {
        let t = tracker();
        fail(&t, "203.0.113.7", "alice", "p1", START);
        fail(&t, "203.0.113.7", "alice", "p2", START.plus(minutes(5)));
        assert_eq!(fail(&t, "203.0.113.7", "alice", "p3", START.plus(minutes(21))).distinct, 2, "p1 left the window");
        assert_eq!(t.failures_in_window(source("203.0.113.7"), START.plus(minutes(30))), 1);
        assert_eq!(t.failures_in_window(source("203.0.113.7"), START.plus(minutes(45))), 0);
    }

    #[test]
    fn the_third_failure_of_one_guess_quarantines_it_and_only_it_until_the_time_is_up() {
        let t = tracker();
        let key = t.guess_key("alice", "old");
        let r: Vec<Recorded> =
            (0..3).map(|i| fail(&t, "203.0.113.7", "alice", "old", START.plus(minutes(i)))).collect();
        assert_eq!(r.iter().map(|r| r.quarantined).collect::<Vec<_>>(), [false, false, true]);
        let src = source("203.0.113.7");
        assert!(t.quarantined(src, key, START.plus(minutes(3))).is_some());
        assert!(
            t.quarantined(src, t.guess_key("alice", "new"), START.plus(minutes(3))).is_none(),
            "another password is not affected"
        );
        assert!(t.quarantined(source("203.0.113.8"), key, START.plus(minutes(3))).is_none(), "nor another address");
        // Quarantine outlives the 20-minute window: it lasts its own hour.
        assert!(t.quarantined(src, key, START.plus(minutes(50))).is_some());
        assert!(t.quarantined(src, key, START.plus(minutes(63))).is_none());
    }

    #[test]
    fn a_successful_login_lifts_the_quarantine_and_forgets_that_logins_guesses() {
        let t = tracker();
        for i in 0..3 {
            fail(&t, "203.0.113.7", "alice", "old", START.plus(minutes(i)));
        }
        fail(&t, "203.0.113.7", "bob", "typo", START);
        let src = source("203.0.113.7");
        t.forget_login(src, "alice");
        assert!(t.quarantined(src, t.guess_key("alice", "old"), START.plus(minutes(4))).is_none());
        assert_eq!(t.failures_in_window(src, START.plus(minutes(4))), 1, "bob's guess stays");
    }

    #[test]
    fn the_history_stays_bounded_whatever_a_source_sends() {
        let t = tracker();
        let mut c = counting();
        c.max_failures = 1000;
        let src = source("203.0.113.7");
        for i in 0..5000 {
            let login = format!("user{i}");
            let failed = FailedGuess {
                key: t.guess_key(&login, "x"),
                login: &login,
                protocol: Protocol::Imap,
                device_id: "",
                weight: 1,
            };
            t.record_failure(src, failed, START, &c);
        }
        assert!(t.history(src).unwrap().guesses.len() <= 1000 + EXTRA);
        let long = "x".repeat(10_000);
        let failed = FailedGuess {
            key: t.guess_key(&long, "x"),
            login: &long,
            protocol: Protocol::Imap,
            device_id: &long,
            weight: 1,
        };
        t.record_failure(source("203.0.113.9"), failed, START, &counting());
        let guess = &t.history(source("203.0.113.9")).unwrap().guesses[0];
        assert_eq!((guess.login.len(), guess.device_id.len()), (LABEL_MAX, LABEL_MAX));
    }

    #[test]
    fn reaching_the_bound_evicts_histories_and_counts_them() {
        let evicted = evictions();
        let tracker = FailureTracker::new(minutes(20), 100, evicted.clone());
        for i in 0..1_000u32 {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let failed = FailedGuess {
                key: tracker.guess_key("a", "b"),
                login: "a",
                protocol: Protocol::Imap,
                device_id: "",
                weight: 1,
            };
            tracker.record_failure(GROUPING.source_of(ip), failed, START, &counting());
        }
        assert!(tracker.tracked_sources() <= 110, "{} held", tracker.tracked_sources());
        assert!(evicted.with_label_values(&["capacity"]).get() >= 800);
    }

    #[test]
    fn guess_keys_do_not_reveal_the_password_hash_and_differ_by_login() {
        let t = tracker();
        assert_ne!(t.guess_key("alice", "0f96"), t.guess_key("bob", "0f96"));
        assert_eq!(t.guess_key("alice", "0f96"), t.guess_key("alice", "0f96"));
        let other = tracker();
        assert_ne!(t.guess_key("alice", "0f96"), other.guess_key("alice", "0f96"), "keyed per process");
    }
}
