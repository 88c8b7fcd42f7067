//! Failed-login history per source, in memory with a bound (`bounded`). A source's history is the
//! set of distinct wrong guesses it made, a guess being (login, password) as Dovecot's
//! `pwhash` identifies it: a stale device repeating one old password is one guess however
//! often it retries, while an attacker never repeats one. The auto-ban counts distinct guesses
//! in the window; a guess repeated `stale_after` times is quarantined.
//!
//! The password hash is never kept: a guess is remembered by a keyed hash of (login, pwhash)
//! with a key chosen at start-up. Histories idle for the window (or until their quarantine
//! ends) are dropped; at the bound the least useful sources are forgotten first. Forgetting
//! only loses counting history, never a ban (bans live in `bans`).

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::IntCounterVec;

use crate::bounded::{BoundedMap, Eviction, Then};
use crate::clock::Timestamp;
use crate::network::{Source, SourceGrouping};
use crate::wire::Protocol;

/// A guess, identified without its password hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuessKey(pub u64);

/// Longest login or device string kept per guess (for diagnosis only).
const LABEL_MAX: usize = 96;

/// `text` cut to `LABEL_MAX` bytes at a character boundary, as a guess keeps it (the wire
/// has already cut it to its own, longer limit).
pub(crate) fn label_of(text: &str) -> &str {
    crate::wire::cut(text, LABEL_MAX)
}

fn label(text: &str) -> Box<str> {
    label_of(text).into()
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
    /// until then. `NOT_QUARANTINED` rather than an `Option`, which would take 8 bytes more
    /// in each of a million histories.
    quarantine_ends: Timestamp,
    /// How much the guess counts toward a ban: 2 for an unknown login when so configured, 0
    /// once forgiven (its account logged in successfully from the source afterwards).
    pub weight: u8,
}

const NOT_QUARANTINED: Timestamp = Timestamp(i64::MIN);

impl Guess {
    /// A guess first seen at `now`.
    fn first(failed: FailedGuess<'_>, now: Timestamp, failures: u32, quarantine_ends: Timestamp) -> Guess {
        Guess {
            key: failed.key,
            login: label(failed.login),
            protocol: failed.protocol,
            device_id: label(failed.device_id),
            first_seen: now,
            last_seen: now,
            failures,
            quarantine_ends,
            weight: u8::try_from(failed.weight).unwrap_or(u8::MAX).max(1),
        }
    }

    /// When the guess's quarantine ends (or ended), if it was ever quarantined.
    pub fn quarantined_until(&self) -> Option<Timestamp> {
        (self.quarantine_ends != NOT_QUARANTINED).then_some(self.quarantine_ends)
    }

    fn quarantined_at(&self, now: Timestamp) -> bool {
        self.quarantine_ends > now
    }

    /// Whether the guess was forgiven: its account logged in successfully from the source
    /// after it, so it was the owner's typo or old password, not an attack.
    pub fn forgiven(&self) -> bool {
        self.weight == 0
    }
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
    /// Distinct guesses that ban a source nobody logged in from.
    pub max_failures: u32,
    /// Distinct guesses a source may make before the most tolerated one is banned
    /// (`max_failures` plus the largest tolerance): more are never needed.
    pub max_guesses: u32,
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
        self.guesses.retain(|g| Self::in_window(g, now, window) || g.quarantined_at(now));
        for guess in &mut self.guesses {
            if !Self::in_window(guess, now, window) {
                guess.failures = 0;
            }
        }
    }

    /// Adds `other`'s guesses (two sources became one): a guess both made is kept once,
    /// with both counts.
    fn merge(&mut self, other: SourceHistory, now: Timestamp, window: Duration) {
        for guess in other.guesses {
            match self.guesses.iter_mut().find(|g| g.key == guess.key) {
                Some(same) => {
                    same.failures = same.failures.saturating_add(guess.failures);
                    same.first_seen = same.first_seen.min(guess.first_seen);
                    same.last_seen = same.last_seen.max(guess.last_seen);
                    same.quarantine_ends = same.quarantine_ends.max(guess.quarantine_ends);
                }
                None => self.guesses.push(guess),
            }
        }
        self.updated_at = self.updated_at.max(other.updated_at);
        self.prune(now, window);
    }

    /// Distinct guesses in the window, each counted by its weight.
    pub fn distinct_in_window(&self, now: Timestamp, window: Duration) -> u32 {
        self.guesses.iter().filter(|g| Self::in_window(g, now, window)).map(|g| u32::from(g.weight)).sum()
    }

    /// Records a failure.
    pub fn record(&mut self, failed: FailedGuess<'_>, now: Timestamp, counting: &Counting) -> Recorded {
        self.prune(now, counting.window);
        self.updated_at = now;
        let (new_guess, index) = match self.guesses.iter().position(|g| g.key == failed.key) {
            Some(index) => {
                let guess = &mut self.guesses[index];
                let was_in_window = guess.failures > 0;
                if !was_in_window {
                    // A new window: a guess forgiven in an earlier one counts again.
                    guess.weight = u8::try_from(failed.weight).unwrap_or(u8::MAX).max(1);
                }
                // A forgiven guess tried again in its window (the owner's laptop with the
                // old password) still counts nothing.
                (!was_in_window && !guess.forgiven(), index)
            }
            None => {
                let cap = counting.max_guesses.max(counting.max_failures).max(1) as usize + EXTRA;
                if self.guesses.len() >= cap {
                    let oldest = self.guesses.iter().enumerate().min_by_key(|(_, g)| g.last_seen).map(|(i, _)| i);
                    if let Some(oldest) = oldest {
                        self.guesses.remove(oldest);
                    }
                }
                // Most sources fail once or twice: room for exactly one more guess at a time
                // keeps a million histories in a third of the memory `push`'s doubling took.
                self.guesses.reserve_exact(1);
                self.guesses.push(Guess::first(failed, now, 0, NOT_QUARANTINED));
                (true, self.guesses.len() - 1)
            }
        };
        let guess = &mut self.guesses[index];
        guess.failures = guess.failures.saturating_add(1);
        guess.last_seen = now;
        guess.protocol = failed.protocol;
        if guess.device_id.as_ref() != label_of(failed.device_id) {
            guess.device_id = label(failed.device_id);
        }
        let quarantined = match counting.stale_after {
            Some(after) if guess.failures >= after && !guess.quarantined_at(now) => {
                guess.quarantine_ends = now.plus(counting.quarantine_for);
                true
            }
            _ => false,
        };
        let repeats = guess.failures;
        Recorded { distinct: self.distinct_in_window(now, counting.window), new_guess, repeats, quarantined }
    }

    /// Puts `guess` in quarantine until `until` (another node saw it fail too often), adding
    /// it when this node has not seen it.
    fn quarantine(&mut self, failed: FailedGuess<'_>, failures: u32, now: Timestamp, until: Timestamp) {
        self.updated_at = now;
        match self.guesses.iter_mut().find(|g| g.key == failed.key) {
            Some(guess) => {
                guess.quarantine_ends = guess.quarantine_ends.max(until);
                guess.failures = guess.failures.max(failures);
            }
            None => {
                if self.guesses.len() >= EXTRA * 2 {
                    return;
                }
                self.guesses.push(Guess::first(failed, now, failures, until));
            }
        }
    }

    /// The guess `key` if it is in quarantine at `now`.
    pub fn quarantined(&self, key: GuessKey, now: Timestamp) -> Option<&Guess> {
        self.guesses.iter().find(|g| g.key == key && g.quarantined_at(now))
    }

    /// Forgives the guesses of `login` (it just logged in successfully from this source):
    /// they stop counting toward a ban and their quarantine ends, but they stay, with their
    /// counts, for the diagnosis: a stale laptop's twelve tries are still its story after the
    /// owner's phone logged in with the new password. Returns whether anything changed.
    pub fn forgive_login(&mut self, login: &str, now: Timestamp) -> bool {
        // Compared as kept, without allocating: this runs on successful logins.
        let login = label_of(login);
        let mut changed = false;
        for guess in self.guesses.iter_mut().filter(|g| g.login.as_ref() == login) {
            changed |= !guess.forgiven() || guess.quarantined_at(now);
            guess.weight = 0;
            if guess.quarantined_at(now) {
                guess.quarantine_ends = now;
            }
        }
        changed
    }

    /// Until when the history is needed: the window after its last change, or the end of a
    /// quarantine if later.
    fn needed_until(&self, window: Duration) -> Timestamp {
        let window_ends = self.updated_at.plus(window);
        self.guesses.iter().filter_map(Guess::quarantined_until).fold(window_ends, Timestamp::max)
    }
}

/// Failed-login histories of every source, bounded.
pub struct FailureTracker {
    histories: BoundedMap<Source, SourceHistory>,
    /// The window in force; a reload changes it.
    window_millis: AtomicU64,
    /// Keys guesses (SipHash-1-3) so that remembered fingerprints reveal nothing of the
    /// password hashes: random per process, or the cluster's shared secret so that every node
    /// names a guess alike.
    /// Two atomics rather than a lock: every `allow` reads them.
    fingerprint_key: [AtomicU64; 2],
}

impl FailureTracker {
    /// `max_sources` is fixed for the tracker's life; the window can be changed. `evictions`
    /// counts histories dropped, by cause (`capacity`: the bound was reached; `expired`: no
    /// longer needed).
    pub fn new(window: Duration, max_sources: u64, evictions: IntCounterVec) -> FailureTracker {
        let by_capacity = evictions.with_label_values(&["capacity"]);
        let by_expiry = evictions.with_label_values(&["expired"]);
        let histories = BoundedMap::new(max_sources, move |why| match why {
            Eviction::Capacity => by_capacity.inc(),
            Eviction::Expired => by_expiry.inc(),
        });
        let mut key = [0u8; 16];
        if getrandom::fill(&mut key).is_err() {
            // Without the OS's randomness the fingerprints are still one-way, only predictable.
            tracing::warn!("no random key for failure fingerprints; using a fixed one");
        }
        let tracker =
            FailureTracker { histories, window_millis: AtomicU64::new(0), fingerprint_key: Default::default() };
        tracker.share_fingerprint_key(key);
        tracker.set_window(window);
        tracker
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.window_millis.load(Ordering::Relaxed))
    }

    /// Applies a reloaded window; histories already held keep their failures.
    pub fn set_window(&self, window: Duration) {
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.window_millis.store(millis, Ordering::Relaxed);
    }

    /// Uses the cluster's shared secret for fingerprints from now on (set once, at start,
    /// before any failure is counted), so a guess has the same key on every node.
    pub fn share_fingerprint_key(&self, key: [u8; 16]) {
        let (k0, k1) = key.split_at(8);
        for (half, bytes) in self.fingerprint_key.iter().zip([k0, k1]) {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            half.store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
    }

    /// The key of the guess (login, pwhash): stable across builds and machines, as nodes of
    /// a cluster compare them.
    pub fn guess_key(&self, login: &str, pwhash: &str) -> GuessKey {
        let [k0, k1] = &self.fingerprint_key;
        let mut hasher =
            siphasher::sip::SipHasher13::new_with_keys(k0.load(Ordering::Relaxed), k1.load(Ordering::Relaxed));
        hasher.write(login.as_bytes());
        // No login contains 0xff (not UTF-8), so (login, pwhash) pairs cannot run together.
        hasher.write_u8(0xff);
        hasher.write(pwhash.as_bytes());
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
        let window = self.window();
        self.histories.upsert(source, now, |history| {
            let recorded = history.record(failed, now, counting);
            (recorded, history.needed_until(window))
        })
    }

    /// Quarantines a guess of `source` that another node counted `failures` times.
    pub fn adopt_quarantine(
        &self,
        source: Source,
        guess: FailedGuess<'_>,
        failures: u32,
        now: Timestamp,
        until: Timestamp,
    ) {
        let window = self.window();
        self.histories.upsert(source, now, |history| {
            history.quarantine(guess, failures, now, until);
            ((), history.needed_until(window))
        })
    }

    /// The quarantined guess `key` of `source`, if any: a cheap lookup for every `allow`.
    pub fn quarantined(&self, source: Source, key: GuessKey, now: Timestamp) -> Option<Guess> {
        self.histories.get(&source, now, |history| history.quarantined(key, now).cloned()).flatten()
    }

    /// Forgives `login`'s guesses from every source (its password was reset: they were the
    /// owner's old password and typos) and ends their quarantines. Logins compare by
    /// `login::key`. Returns the sources where it had guesses, and how many quarantines ended.
    pub fn forgive_login_everywhere(&self, login: &str, now: Timestamp) -> (Vec<Source>, usize) {
        let key = crate::login::key(login);
        let mut ended = 0;
        let sources = self.histories.change_all(now, |_, history| {
            let mut held = false;
            for guess in history.guesses.iter_mut().filter(|g| crate::login::key(&g.login) == key) {
                held = true;
                if guess.quarantined_at(now) {
                    guess.quarantine_ends = now;
                    ended += 1;
                }
                guess.weight = 0;
            }
            held
        });
        (sources, ended)
    }

    /// Counts a retry of a quarantined guess that `allow` refused (so it never reached the
    /// password check): a stale laptop's every try is part of its story in `why`. Changes
    /// nothing else: the guess is counted once toward a ban whatever its tries.
    pub fn count_refused_retry(&self, source: Source, key: GuessKey, now: Timestamp) {
        self.histories.update(&source, now, |history| {
            if let Some(guess) = history.guesses.iter_mut().find(|g| g.key == key && g.quarantined_at(now)) {
                guess.failures = guess.failures.saturating_add(1);
                guess.last_seen = now;
            }
            ((), Then::Unchanged)
        });
    }

    /// Distinct guesses of `source` in the window ending at `now`.
    pub fn failures_in_window(&self, source: Source, now: Timestamp) -> u32 {
        let window = self.window();
        self.histories.get(&source, now, |history| history.distinct_in_window(now, window)).unwrap_or(0)
    }

    /// The guesses of `source` still held at `now`, for diagnosis.
    pub fn guesses(&self, source: Source, now: Timestamp) -> Vec<Guess> {
        self.histories.get(&source, now, |history| history.guesses.clone()).unwrap_or_default()
    }

    /// Forgives `login`'s guesses from `source` (it just logged in successfully from there).
    pub fn forgive_login(&self, source: Source, login: &str, now: Timestamp) {
        // The history is kept as long as it was going to be: forgiving extends nothing.
        self.histories.update(&source, now, |history| (history.forgive_login(login, now), Then::Unchanged));
    }

    /// Drops the history of `source` (after it is banned, or unbanned by an admin, so it
    /// starts afresh).
    pub fn forget(&self, source: Source) {
        self.histories.remove(&source);
    }

    /// Re-keys every history under `grouping` (a reload changed the prefixes). Sources that
    /// fall into one new, wider source have their guesses merged, so failures counted before
    /// the reload still count; a source wider than its new grouping cannot be split by
    /// address, so its history is dropped and its failures count afresh. Returns the
    /// histories kept.
    pub fn regroup(&self, grouping: SourceGrouping, now: Timestamp) -> usize {
        let window = self.window();
        self.histories.rekey(
            now,
            |source| {
                let regrouped = grouping.source_of(source.network().addr());
                (regrouped.network().prefix_len() <= source.network().prefix_len()).then_some(regrouped)
            },
            |history, other| history.merge(other, now, window),
            |history| history.needed_until(window),
        )
    }

    /// Drops part of the histories no longer needed at `now` (all of them over a minute of
    /// calls every 5 s); returns how many.
    pub fn sweep(&self, now: Timestamp) -> usize {
        self.histories.sweep(now)
    }

    /// Sources currently remembered (histories expired since the last sweep included).
    pub fn tracked_sources(&self) -> u64 {
        self.histories.len() as u64
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
        Counting {
            window: minutes(20),
            max_failures: 5,
            max_guesses: 5,
            stale_after: Some(3),
            quarantine_for: minutes(60),
        }
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
    fn a_successful_login_lifts_the_quarantine_and_forgives_that_logins_guesses_but_keeps_their_story() {
        let t = tracker();
        for i in 0..3 {
            fail(&t, "203.0.113.7", "alice", "old", START.plus(minutes(i)));
        }
        fail(&t, "203.0.113.7", "alice", "typo", START);
        fail(&t, "203.0.113.7", "bob", "typo", START);
        let src = source("203.0.113.7");
        t.forgive_login(src, "alice", START.plus(minutes(3)));
        assert!(t.quarantined(src, t.guess_key("alice", "old"), START.plus(minutes(4))).is_none());
        assert_eq!(t.failures_in_window(src, START.plus(minutes(4))), 1, "only bob's guess counts");
        // The laptop keeps trying its old password: still the owner's, still counted nothing.
        for i in 4..12 {
            fail(&t, "203.0.113.7", "alice", "old", START.plus(minutes(i)));
        }
        assert_eq!(t.failures_in_window(src, START.plus(minutes(12))), 1);
        let kept = t.guesses(src, START.plus(minutes(12)));
        let laptop = kept.iter().find(|g| g.login.as_ref() == "alice" && g.failures > 1).expect("the story stays");
        assert_eq!(laptop.failures, 11);
        assert!(laptop.forgiven());
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
        assert!(t.guesses(src, START).len() <= 1000 + EXTRA);
        let long = "x".repeat(10_000);
        let failed = FailedGuess {
            key: t.guess_key(&long, "x"),
            login: &long,
            protocol: Protocol::Imap,
            device_id: &long,
            weight: 1,
        };
        t.record_failure(source("203.0.113.9"), failed, START, &counting());
        let guess = &t.guesses(source("203.0.113.9"), START)[0];
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
