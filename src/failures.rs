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
    /// The long window (`autoban.long_window`), and the most distinct guesses worth keeping
    /// in it (`long_max_failures` plus the largest tolerance; 0: the long window is off).
    pub long_window: Duration,
    pub long_max_guesses: u32,
}

impl Counting {
    /// The long window, when it is on and longer than the window (else it adds nothing).
    fn long_window(&self) -> Option<Duration> {
        (self.long_max_guesses > 0 && self.long_window > self.window).then_some(self.long_window)
    }
}

/// A guess that left the window but still counts in the long window: 16 bytes, where the
/// `Guess` it was took 72 and its login string more, so a slow guesser's day costs little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earlier {
    key: GuessKey,
    /// Its last failure, in Unix seconds (enough until 2106).
    last_seen_secs: u32,
    /// A keyed 16-bit hash of its login, so a later successful login of that account can still
    /// forgive it (a collision forgives one guess too many, never bans anyone).
    login_tag: u16,
    weight: u8,
}

impl Earlier {
    fn last_seen(&self) -> Timestamp {
        Timestamp(i64::from(self.last_seen_secs) * 1000)
    }
}

/// The key of the 16-bit login tags of `Earlier` guesses.
#[derive(Debug, Clone, Copy, Default)]
pub struct TagKey(u64, u64);

impl TagKey {
    fn tag(self, login: &str) -> u16 {
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(self.0, self.1);
        hasher.write(label_of(login).as_bytes());
        (hasher.finish() & 0xffff) as u16
    }
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
    /// When this guess first failed in the window (for the owner's notice: "since when").
    pub first_failed: Timestamp,
    /// Distinct guesses in the long window, this one included (0 while it is off).
    pub long_distinct: u32,
}

/// One source's guesses. Bounded: a source is banned (and its history dropped) once it makes
/// `max_failures` distinct guesses, so more are never needed; `EXTRA` leaves room for guesses
/// that are only still held for their quarantine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceHistory {
    pub guesses: Vec<Guess>,
    /// Guesses that left the window but are still in the long window, compacted; boxed so
    /// that a history without any (most of them) costs 8 bytes for it, which the map's slot
    /// had as padding-free room once the last change's time was derived from the guesses.
    earlier: Option<Box<Vec<Earlier>>>,
}

const EXTRA: usize = 8;

impl SourceHistory {
    fn in_window(guess: &Guess, now: Timestamp, window: Duration) -> bool {
        guess.last_seen > now.minus(window)
    }

    /// Drops guesses out of the window and out of quarantine; those still in the long window
    /// (and not forgiven) are kept there as `Earlier` records.
    fn prune(&mut self, now: Timestamp, counting: &Counting, tags: TagKey) {
        let window = counting.window;
        let long = counting.long_window();
        let mut i = 0;
        while i < self.guesses.len() {
            let guess = &self.guesses[i];
            if Self::in_window(guess, now, window) || guess.quarantined_at(now) {
                i += 1;
                continue;
            }
            let guess = self.guesses.swap_remove(i);
            if let Some(long) = long
                && guess.last_seen > now.minus(long)
                && !guess.forgiven()
            {
                let secs = u32::try_from(guess.last_seen.0 / 1000).unwrap_or(u32::MAX);
                let earlier = self.earlier.get_or_insert_with(Default::default);
                earlier.reserve_exact(1);
                earlier.push(Earlier {
                    key: guess.key,
                    last_seen_secs: secs,
                    login_tag: tags.tag(&guess.login),
                    weight: guess.weight,
                });
            }
        }
        if !self.guesses.is_empty() && self.guesses.capacity() > self.guesses.len() {
            self.guesses.shrink_to_fit();
        }
        for guess in &mut self.guesses {
            if !Self::in_window(guess, now, window) {
                guess.failures = 0;
            }
        }
        self.prune_earlier(now, counting);
    }

    /// Drops `Earlier` records out of the long window, and the oldest past the most worth
    /// keeping.
    fn prune_earlier(&mut self, now: Timestamp, counting: &Counting) {
        let Some(earlier) = self.earlier.as_mut() else { return };
        match counting.long_window() {
            Some(long) => {
                let since = now.minus(long);
                earlier.retain(|e| e.last_seen() > since);
                let cap = counting.long_max_guesses as usize + EXTRA;
                if earlier.len() > cap {
                    earlier.sort_unstable_by_key(|e| std::cmp::Reverse(e.last_seen_secs));
                    earlier.truncate(cap);
                }
            }
            None => earlier.clear(),
        }
        if earlier.is_empty() {
            self.earlier = None;
        }
    }

    /// Moves guesses that have left the window out of their full records (the sweep does this
    /// for histories nobody touches, so an idle slow guesser's day is kept compact).
    fn tidy(&mut self, now: Timestamp, counting: &Counting, tags: TagKey) {
        let stale = self.guesses.iter().any(|g| !Self::in_window(g, now, counting.window) && !g.quarantined_at(now));
        if stale || self.earlier.is_some() {
            self.prune(now, counting, tags);
        }
    }

    /// When the history last changed: its newest guess.
    fn last_change(&self) -> Timestamp {
        let full = self.guesses.iter().map(|g| g.last_seen);
        let earlier = self.earlier.iter().flat_map(|e| e.iter()).map(Earlier::last_seen);
        full.chain(earlier).max().unwrap_or(Timestamp(0))
    }

    /// Distinct guesses in the long window, each counted by its weight (forgiven ones: 0).
    pub fn distinct_in_long_window(&self, now: Timestamp, counting: &Counting) -> u32 {
        let Some(long) = counting.long_window() else { return 0 };
        let since = now.minus(long);
        let full: u32 = self.guesses.iter().filter(|g| g.last_seen > since).map(|g| u32::from(g.weight)).sum();
        let earlier: u32 = self
            .earlier
            .iter()
            .flat_map(|e| e.iter())
            .filter(|e| e.last_seen() > since)
            .map(|e| u32::from(e.weight))
            .sum();
        full + earlier
    }

    /// Adds `other`'s guesses (two sources became one): a guess both made is kept once,
    /// with both counts.
    fn merge(&mut self, other: SourceHistory, now: Timestamp, counting: &Counting, tags: TagKey) {
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
        if let Some(theirs) = other.earlier {
            let mine = self.earlier.get_or_insert_with(Default::default);
            for e in theirs.into_iter() {
                if !mine.iter().any(|m| m.key == e.key) {
                    mine.push(e);
                }
            }
        }
        self.prune(now, counting, tags);
    }

    /// Distinct guesses in the window, each counted by its weight.
    pub fn distinct_in_window(&self, now: Timestamp, window: Duration) -> u32 {
        self.guesses.iter().filter(|g| Self::in_window(g, now, window)).map(|g| u32::from(g.weight)).sum()
    }

    /// Records a failure.
    pub fn record(&mut self, failed: FailedGuess<'_>, now: Timestamp, counting: &Counting, tags: TagKey) -> Recorded {
        self.prune(now, counting, tags);
        // Tried again: the guess is a full record again, not also an earlier one.
        if let Some(earlier) = self.earlier.as_mut() {
            earlier.retain(|e| e.key != failed.key);
            if earlier.is_empty() {
                self.earlier = None;
            }
        }
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
        let (repeats, first_failed) = (guess.failures, guess.first_seen);
        Recorded {
            distinct: self.distinct_in_window(now, counting.window),
            new_guess,
            repeats,
            quarantined,
            first_failed,
            long_distinct: self.distinct_in_long_window(now, counting),
        }
    }

    /// Puts `guess` in quarantine until `until` (another node saw it fail too often), adding
    /// it when this node has not seen it.
    fn quarantine(&mut self, failed: FailedGuess<'_>, failures: u32, now: Timestamp, until: Timestamp) {
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
    pub fn forgive_login(&mut self, login: &str, now: Timestamp, tags: TagKey) -> bool {
        let mut changed = false;
        if let Some(earlier) = self.earlier.as_mut() {
            let tag = tags.tag(login);
            let before = earlier.len();
            earlier.retain(|e| e.login_tag != tag);
            changed |= earlier.len() != before;
            if earlier.is_empty() {
                self.earlier = None;
            }
        }
        // Compared as kept, without allocating: this runs on successful logins.
        let login = label_of(login);
        for guess in self.guesses.iter_mut().filter(|g| g.login.as_ref() == login) {
            changed |= !guess.forgiven() || guess.quarantined_at(now);
            guess.weight = 0;
            if guess.quarantined_at(now) {
                guess.quarantine_ends = now;
            }
        }
        changed
    }

    /// Until when the history is needed: the window (the long one when it is on) after its
    /// last change, or the end of a quarantine if later.
    fn needed_until(&self, counting: &Counting) -> Timestamp {
        let window_ends = self.last_change().plus(counting.long_window().unwrap_or(counting.window));
        self.guesses.iter().filter_map(Guess::quarantined_until).fold(window_ends, Timestamp::max)
    }
}

/// Failed-login histories of every source, bounded.
pub struct FailureTracker {
    histories: BoundedMap<Source, SourceHistory>,
    /// The counting rules in force; a reload changes them.
    counting: arc_swap::ArcSwap<Counting>,
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
        let counting = Counting {
            window,
            max_failures: 1,
            max_guesses: 1,
            stale_after: None,
            quarantine_for: Duration::ZERO,
            long_window: window,
            long_max_guesses: 0,
        };
        let tracker = FailureTracker {
            histories,
            counting: arc_swap::ArcSwap::from_pointee(counting),
            fingerprint_key: Default::default(),
        };
        tracker.share_fingerprint_key(key);
        tracker
    }

    fn window(&self) -> Duration {
        self.counting.load().window
    }

    /// Applies reloaded counting rules (the windows); histories already held keep their
    /// failures.
    pub fn set_counting(&self, counting: Counting) {
        self.counting.store(std::sync::Arc::new(counting));
    }

    /// The key of the login tags of guesses kept compact for the long window.
    fn tags(&self) -> TagKey {
        let [k0, k1] = &self.fingerprint_key;
        TagKey(k0.load(Ordering::Relaxed) ^ 0x6c6f_6e67, k1.load(Ordering::Relaxed))
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
        let tags = self.tags();
        self.histories.upsert(source, now, |history| {
            let recorded = history.record(failed, now, counting, tags);
            (recorded, history.needed_until(counting))
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
        let counting = self.counting.load();
        self.histories.upsert(source, now, |history| {
            history.quarantine(guess, failures, now, until);
            ((), history.needed_until(&counting))
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

    /// Distinct guesses of `source` in the long window ending at `now` (0 while it is off).
    pub fn failures_in_long_window(&self, source: Source, now: Timestamp) -> u32 {
        let counting = self.counting.load();
        self.histories.get(&source, now, |history| history.distinct_in_long_window(now, &counting)).unwrap_or(0)
    }

    /// Guesses that `keep` selects, held at `now`, with their sources: at most `limit`.
    pub fn guesses_where(&self, now: Timestamp, limit: usize, keep: impl Fn(&Guess) -> bool) -> Vec<(Source, Guess)> {
        let mut found = 0usize;
        let mut chosen: Vec<(Source, Guess)> = self
            .histories
            .collect(now, |source, history| {
                let picked: Vec<(Source, Guess)> =
                    history.guesses.iter().filter(|g| found < limit && keep(g)).map(|g| (*source, g.clone())).collect();
                found += picked.len();
                (!picked.is_empty()).then_some(picked)
            })
            .into_iter()
            .flatten()
            .collect();
        chosen.truncate(limit);
        chosen.sort_by_key(|(_, guess)| std::cmp::Reverse(guess.last_seen));
        chosen
    }

    /// Guesses in quarantine at `now` (a stale device's old password), at most `limit`.
    pub fn quarantines(&self, now: Timestamp, limit: usize) -> Vec<(Source, Guess)> {
        self.guesses_where(now, limit, |guess| guess.quarantined_at(now))
    }

    /// The guesses of `source` still held at `now`, for diagnosis.
    pub fn guesses(&self, source: Source, now: Timestamp) -> Vec<Guess> {
        self.histories.get(&source, now, |history| history.guesses.clone()).unwrap_or_default()
    }

    /// Forgives `login`'s guesses from `source` (it just logged in successfully from there).
    pub fn forgive_login(&self, source: Source, login: &str, now: Timestamp) {
        // The history is kept as long as it was going to be: forgiving extends nothing.
        let tags = self.tags();
        self.histories.update(&source, now, |history| (history.forgive_login(login, now, tags), Then::Unchanged));
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
        let counting = self.counting.load();
        let tags = self.tags();
        self.histories.rekey(
            now,
            |source| grouping.regroup(*source),
            |history, other| history.merge(other, now, &counting, tags),
            |history| history.needed_until(&counting),
        )
    }

    /// Drops part of the histories no longer needed at `now` (all of them over a minute of
    /// calls every 5 s); returns how many.
    /// Guesses that left the window are compacted on the way (see `SourceHistory::tidy`).
    pub fn sweep(&self, now: Timestamp) -> usize {
        let counting = self.counting.load();
        let tags = self.tags();
        self.histories.sweep_tidying(now, |history, _| {
            history.tidy(now, &counting, tags);
            history.needed_until(&counting)
        })
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
            long_window: minutes(24 * 60),
            long_max_guesses: 0,
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
    fn the_long_window_costs_a_history_no_room_and_an_earlier_guess_sixteen_bytes() {
        // The map's slot holds the history: as big as before the long window (a Vec header
        // and a last change's time), so 1,000,000 sources that failed once cost what they did.
        assert_eq!(std::mem::size_of::<SourceHistory>(), 32);
        assert_eq!(std::mem::size_of::<Earlier>(), 16);
    }

    #[test]
    fn guesses_that_leave_the_window_still_count_in_the_long_window_until_forgiven() {
        let t = tracker();
        let mut c = counting();
        c.long_max_guesses = 30;
        t.set_counting(c);
        let src = source("203.0.113.7");
        let fail_at = |login: &str, password: &str, at| {
            let failed = FailedGuess {
                key: t.guess_key(login, password),
                login,
                protocol: Protocol::Imap,
                device_id: "",
                weight: 1,
            };
            t.record_failure(src, failed, at, &c)
        };
        fail_at("alice", "p1", START);
        fail_at("bob", "p2", START.plus(minutes(30)));
        let r = fail_at("carol", "p3", START.plus(minutes(60)));
        assert_eq!((r.distinct, r.long_distinct), (1, 3));
        assert_eq!(t.guesses(src, START.plus(minutes(60))).len(), 1, "only the window's guess is a full record");
        let r = fail_at("alice", "p1", START.plus(minutes(90)));
        assert_eq!((r.distinct, r.long_distinct), (1, 3), "a guess tried again counts once");
        t.forgive_login(src, "bob", START.plus(minutes(91)));
        assert_eq!(t.failures_in_long_window(src, START.plus(minutes(91))), 2, "bob logged in: his guess is forgiven");
        assert_eq!(t.failures_in_long_window(src, START.plus(minutes(60 + 24 * 60))), 1, "carol's left the day");
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
