//! The tolerance a source earns from its good traffic: the distinct accounts that logged in
//! successfully from it lately. An office, a home or a carrier NAT where many people log in
//! every day may make more wrong guesses before the whole address is banned than an address
//! nobody has logged in from; an address nobody has logged in from is banned at exactly
//! `autoban.max_failures`, as ever. Each account counts once however often it logs in, so one
//! stolen password buys an attacker at most `per_account` guesses, and the whole tolerance is
//! capped. Kept in memory with a bound (`bounded`), per source: the accounts (by a keyed hash
//! of the login, never the login itself) and when each last logged in. The decision that uses
//! it is `engine::source_ban_threshold`.

use std::hash::Hasher;
use std::time::Duration;

use smallvec::SmallVec;

use crate::bounded::BoundedMap;
use crate::clock::Timestamp;
use crate::network::Source;

/// The toleration rules in force (`[autoban]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toleration {
    /// Extra distinct wrong guesses a source may make for each account that logged in
    /// successfully from it within `window`; 0 turns toleration off.
    pub per_account: u32,
    /// The most extra guesses any source earns.
    pub max: u32,
    /// How long a successful login keeps earning its source tolerance.
    pub window: Duration,
}

impl Toleration {
    /// Accounts worth remembering per source: more would earn nothing past the cap.
    fn accounts_needed(&self) -> usize {
        if self.per_account == 0 { 0 } else { self.max.div_ceil(self.per_account) as usize }
    }

    /// The extra guesses `accounts` good accounts earn.
    pub fn earned(&self, accounts: u32) -> u32 {
        self.per_account.saturating_mul(accounts).min(self.max)
    }
}

/// One source's good accounts: (the login's keyed hash, its last successful login), at most
/// `Toleration::accounts_needed` of them. Most sources are one home or one phone, with one
/// or two accounts: those are held in the entry itself, so earning tolerance allocates
/// nothing and reading it follows no pointer (docs/BENCHMARKS.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoodLogins {
    accounts: SmallVec<[(u64, Timestamp); 2]>,
}

impl GoodLogins {
    fn in_window(&self, now: Timestamp, window: Duration) -> impl Iterator<Item = &(u64, Timestamp)> {
        let since = now.minus(window);
        self.accounts.iter().filter(move |(_, at)| *at > since)
    }

    fn last_change(&self) -> Timestamp {
        self.accounts.iter().map(|(_, at)| *at).max().unwrap_or(Timestamp(0))
    }
}

/// What toleration knows of one source, for the decision and for `why`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Distinct accounts that logged in successfully from the source within the window (up
    /// to the number that can earn anything).
    pub good_accounts: u32,
    /// The extra distinct wrong guesses they earn it.
    pub earned: u32,
}

pub struct ToleranceTracker {
    sources: BoundedMap<Source, GoodLogins>,
    /// Keys the login hashes (SipHash-1-3), random per process: what is held reveals no login.
    key: (u64, u64),
}

impl ToleranceTracker {
    /// Remembers good accounts of at most `max_sources` sources; the sources whose last good
    /// login is oldest are forgotten first.
    pub fn new(max_sources: u64) -> ToleranceTracker {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            tracing::warn!("no random key for login hashes; using a fixed one");
        }
        let (k0, k1) = bytes.split_at(8);
        let word = |b: &[u8]| b.iter().fold(0u64, |acc, byte| acc << 8 | u64::from(*byte));
        ToleranceTracker { sources: BoundedMap::new(max_sources, |_| {}), key: (word(k0), word(k1)) }
    }

    fn login_key(&self, login: &str) -> u64 {
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(self.key.0, self.key.1);
        hasher.write(login.as_bytes());
        hasher.finish()
    }

    /// `login` logged in successfully from `source` at `now`.
    pub fn record_success(&self, source: Source, login: &str, now: Timestamp, toleration: &Toleration) {
        let needed = toleration.accounts_needed();
        if needed == 0 || login.is_empty() {
            return;
        }
        let key = self.login_key(login);
        let window = toleration.window;
        self.sources.upsert(source, now, |good| {
            let since = now.minus(window);
            good.accounts.retain(|(_, at)| *at > since);
            let full = good.accounts.len() >= needed;
            match good.accounts.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = now,
                None if !full => {
                    good.accounts.reserve_exact(1);
                    good.accounts.push((key, now));
                }
                // Full: the account seen longest ago makes room, so the newest good logins count.
                None => {
                    if let Some(oldest) = good.accounts.iter_mut().min_by_key(|(_, at)| *at) {
                        *oldest = (key, now);
                    }
                }
            }
            ((), good.last_change().plus(window))
        });
    }

    /// What `source` has earned at `now`.
    pub fn standing(&self, source: Source, now: Timestamp, toleration: &Toleration) -> Standing {
        if toleration.accounts_needed() == 0 {
            return Standing::default();
        }
        let good_accounts = self
            .sources
            .get(&source, now, |good| good.in_window(now, toleration.window).count())
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        Standing { good_accounts, earned: toleration.earned(good_accounts) }
    }

    /// Whether `login` logged in successfully from `source` within the window: its failed
    /// guesses there are its owner's typos, not an attack.
    pub fn logged_in_from(&self, source: Source, login: &str, now: Timestamp, toleration: &Toleration) -> bool {
        let key = self.login_key(login);
        self.sources
            .get(&source, now, |good| good.in_window(now, toleration.window).any(|(k, _)| *k == key))
            .unwrap_or(false)
    }

    /// Forgets every source (a reload changed the grouping: the good logins of a source of
    /// another size say nothing about the new ones; they are earned again at the next logins).
    pub fn forget_all(&self, now: Timestamp) {
        self.sources.rekey(now, |_| None, |_, _| {}, |_| now);
    }

    pub fn sweep(&self, now: Timestamp) -> usize {
        self.sources.sweep(now)
    }

    pub fn tracked_sources(&self) -> u64 {
        self.sources.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{SourceGrouping, parse_ip};

    const START: Timestamp = Timestamp(1_795_334_400_000);
    const TOLERATION: Toleration = Toleration { per_account: 2, max: 20, window: Duration::from_secs(7 * 24 * 3600) };

    fn office() -> Source {
        SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 }.source_of(parse_ip("198.51.100.7").unwrap())
    }

    #[test]
    fn a_source_nobody_logged_in_from_earns_nothing() {
        let tracker = ToleranceTracker::new(1000);
        assert_eq!(tracker.standing(office(), START, &TOLERATION), Standing { good_accounts: 0, earned: 0 });
    }

    #[test]
    fn each_account_counts_once_and_the_tolerance_is_capped() {
        let tracker = ToleranceTracker::new(1000);
        for _ in 0..50 {
            tracker.record_success(office(), "alice@example.com", START, &TOLERATION);
        }
        assert_eq!(tracker.standing(office(), START, &TOLERATION), Standing { good_accounts: 1, earned: 2 });
        for n in 0..30 {
            tracker.record_success(office(), &format!("user{n}@example.com"), START, &TOLERATION);
        }
        let standing = tracker.standing(office(), START, &TOLERATION);
        assert_eq!(standing, Standing { good_accounts: 10, earned: 20 }, "at most max / per_account accounts count");
        assert!(tracker.logged_in_from(office(), "user29@example.com", START, &TOLERATION));
    }

    #[test]
    fn good_logins_stop_counting_after_the_window() {
        let tracker = ToleranceTracker::new(1000);
        tracker.record_success(office(), "alice@example.com", START, &TOLERATION);
        let later = START.plus(TOLERATION.window);
        tracker.record_success(office(), "bob@example.com", later.minus(Duration::from_secs(1)), &TOLERATION);
        assert_eq!(tracker.standing(office(), later, &TOLERATION).good_accounts, 1);
        assert!(!tracker.logged_in_from(office(), "alice@example.com", later, &TOLERATION));
        assert!(tracker.logged_in_from(office(), "bob@example.com", later, &TOLERATION));
        let gone = later.plus(TOLERATION.window);
        assert_eq!(tracker.standing(office(), gone, &TOLERATION).good_accounts, 0);
    }

    #[test]
    fn toleration_off_remembers_nothing() {
        let off = Toleration { per_account: 0, ..TOLERATION };
        let tracker = ToleranceTracker::new(1000);
        tracker.record_success(office(), "alice@example.com", START, &off);
        assert_eq!(tracker.tracked_sources(), 0);
        assert_eq!(tracker.standing(office(), START, &off).earned, 0);
    }
}
