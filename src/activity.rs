//! Recent activity for the console's overview: counts per minute over the last 24 hours of
//! logins answered, refusals by reason and bans placed, in memory and of fixed size.
//!
//! Recording runs on every `allow`, so it is one atomic load and one atomic add (or a
//! compare-and-swap at the first count of a minute): no lock, no allocation. Each counter
//! carries the minute it counts in its upper 32 bits, so a slot last written a day (or a
//! week) ago reads as zero without anything sweeping it, and a new minute takes over a slot
//! with one swap rather than a reset that could race with the counts of that minute.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Timestamp;
use crate::engine::Decision;

/// Minutes kept: the last 24 hours.
pub const MINUTES: usize = 24 * 60;

/// The refusal reasons counted, as the `reason` label of `mailwarden_decisions_total` spells
/// them (`Decision::reason`); a delay is counted apart.
pub use crate::metrics::REFUSAL_REASONS as REFUSALS;

/// The kinds of ban counted: a source's, an IP+login refusal, a subnet's.
pub const BANS: [&str; 3] = ["source", "login", "subnet"];
/// Indices in `BANS`.
pub const SOURCE_BAN: usize = 0;
pub const LOGIN_BAN: usize = 1;
pub const SUBNET_BAN: usize = 2;

/// What one count is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A login answered `allow`.
    Login,
    /// A login delayed (an account under attack, an address new to it).
    Delayed,
    /// A login refused, by its index in `REFUSALS`.
    Refused(usize),
    /// A ban placed, by its index in `BANS`.
    Ban(usize),
}

const SERIES: usize = 2 + REFUSALS.len() + BANS.len();

impl Kind {
    fn series(self) -> usize {
        match self {
            Kind::Login => 0,
            Kind::Delayed => 1,
            Kind::Refused(i) => 2 + i.min(REFUSALS.len() - 1),
            Kind::Ban(i) => 2 + REFUSALS.len() + i.min(BANS.len() - 1),
        }
    }

    /// What `decision` counts as.
    pub fn of(decision: &Decision) -> Kind {
        match decision {
            Decision::Allow(_) => Kind::Login,
            Decision::Delay { .. } => Kind::Delayed,
            Decision::Reject(_) => {
                let reason = decision.reason();
                Kind::Refused(REFUSALS.iter().position(|r| *r == reason).unwrap_or(REFUSALS.len() - 1))
            }
        }
    }
}

/// The minute `at` falls in, counted from the epoch (fits 32 bits until the year 10136).
fn minute_of(at: Timestamp) -> u64 {
    u64::try_from(at.unix_millis().div_euclid(60_000)).unwrap_or(0) & 0xFFFF_FFFF
}

/// The counters: `MINUTES` slots of `SERIES` counters, each `minute << 32 | count`.
pub struct Activity {
    slots: Box<[[AtomicU64; SERIES]]>,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity { slots: (0..MINUTES).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect() }
    }
}

/// The counts of one stretch of time (a minute, or an hour of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Its first minute.
    pub start: Timestamp,
    counts: [u64; SERIES],
}

impl Tally {
    fn empty(start: Timestamp) -> Tally {
        Tally { start, counts: [0; SERIES] }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind.series()]
    }

    pub fn logins(&self) -> u64 {
        self.count(Kind::Login)
    }

    pub fn delayed(&self) -> u64 {
        self.count(Kind::Delayed)
    }

    /// Refusals of every reason.
    pub fn refusals(&self) -> u64 {
        (0..REFUSALS.len()).map(|i| self.count(Kind::Refused(i))).sum()
    }

    /// Bans of every kind.
    pub fn bans(&self) -> u64 {
        (0..BANS.len()).map(|i| self.count(Kind::Ban(i))).sum()
    }

    fn add(&mut self, other: &Tally) {
        for (sum, n) in self.counts.iter_mut().zip(other.counts) {
            *sum = sum.saturating_add(n);
        }
    }
}

impl Activity {
    /// Counts one `kind` at `now`.
    pub fn record(&self, kind: Kind, now: Timestamp) {
        let minute = minute_of(now);
        let slot = &self.slots[(minute % MINUTES as u64) as usize][kind.series()];
        let mut seen = slot.load(Ordering::Relaxed);
        loop {
            let stamped = seen >> 32;
            if stamped == minute {
                slot.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if stamped > minute {
                // The clock stepped back over a minute already counted: nothing to add to.
                return;
            }
            match slot.compare_exchange_weak(seen, minute << 32 | 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now_seen) => seen = now_seen,
            }
        }
    }

    /// The tally of `minute` (zero when its slot holds another minute's counts).
    fn minute(&self, minute: u64) -> Tally {
        let mut tally = Tally::empty(Timestamp::from_unix_millis((minute * 60_000) as i64));
        for (count, slot) in tally.counts.iter_mut().zip(&self.slots[(minute % MINUTES as u64) as usize]) {
            let value = slot.load(Ordering::Relaxed);
            if value >> 32 == minute {
                *count = value & 0xFFFF_FFFF;
            }
        }
        tally
    }

    /// The last `n` minutes (at most a day's), oldest first, the current one last.
    pub fn minutes(&self, now: Timestamp, n: usize) -> Vec<Tally> {
        let current = minute_of(now);
        let n = n.min(MINUTES) as u64;
        (0..n).rev().filter_map(|back| current.checked_sub(back)).map(|minute| self.minute(minute)).collect()
    }

    /// The last 60 minutes, oldest first.
    pub fn last_hour(&self, now: Timestamp) -> Vec<Tally> {
        self.minutes(now, 60)
    }

    /// The last 24 hours as 24 sums of 60 minutes, oldest first; the last ends with the
    /// current minute.
    pub fn last_day(&self, now: Timestamp) -> Vec<Tally> {
        self.minutes(now, MINUTES)
            .chunks(60)
            .map(|hour| {
                let mut sum = Tally::empty(hour[0].start);
                hour.iter().for_each(|minute| sum.add(minute));
                sum
            })
            .collect()
    }

    /// The sum of `tallies`.
    pub fn total(tallies: &[Tally]) -> Tally {
        let mut sum = Tally::empty(tallies.first().map_or(Timestamp::default(), |t| t.start));
        tallies.iter().for_each(|t| sum.add(t));
        sum
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const START: Timestamp = Timestamp(1_800_000_000_000);

    fn at(minutes: u64) -> Timestamp {
        START.plus(Duration::from_secs(minutes * 60))
    }

    #[test]
    fn counts_land_in_the_minute_they_happened() {
        let activity = Activity::default();
        activity.record(Kind::Login, at(0));
        activity.record(Kind::Login, at(0).plus(Duration::from_secs(30)));
        activity.record(Kind::Refused(0), at(1));
        let hour = activity.last_hour(at(1));
        assert_eq!(hour.len(), 60);
        assert_eq!(hour[58].logins(), 2);
        assert_eq!(hour[59].logins(), 0);
        assert_eq!(hour[59].count(Kind::Refused(0)), 1);
        assert_eq!(hour[59].start.unix_millis() % 60_000, 0);
    }

    #[test]
    fn a_slot_reused_a_day_later_starts_from_zero() {
        let activity = Activity::default();
        for _ in 0..5 {
            activity.record(Kind::Ban(0), at(10));
        }
        activity.record(Kind::Ban(0), at(10 + MINUTES as u64));
        let day = activity.last_hour(at(10 + MINUTES as u64));
        assert_eq!(day[59].count(Kind::Ban(0)), 1);
    }

    #[test]
    fn a_gap_of_hours_reads_as_zeros() {
        let activity = Activity::default();
        activity.record(Kind::Login, at(0));
        activity.record(Kind::Delayed, at(0));
        let later = at(5 * 60);
        assert!(activity.last_hour(later).iter().all(|minute| minute.logins() == 0 && minute.delayed() == 0));
        let day = activity.last_day(later);
        assert_eq!(Activity::total(&day).logins(), 1);
        // A whole day and more later, nothing is left.
        assert_eq!(Activity::total(&activity.last_day(at(MINUTES as u64 + 1))).logins(), 0);
    }

    #[test]
    fn the_last_hour_and_the_last_day_sum_their_minutes() {
        let activity = Activity::default();
        // One login a minute for 30 hours, and a refusal every ten minutes.
        for minute in 0..30 * 60 {
            activity.record(Kind::Login, at(minute));
            if minute % 10 == 0 {
                activity.record(Kind::Refused(3), at(minute));
            }
        }
        let now = at(30 * 60 - 1);
        let hour = activity.last_hour(now);
        assert_eq!(Activity::total(&hour).logins(), 60);
        assert_eq!(Activity::total(&hour).refusals(), 6);
        let day = activity.last_day(now);
        assert_eq!(day.len(), 24);
        assert!(day.iter().all(|hour| hour.logins() == 60));
        assert_eq!(Activity::total(&day).logins(), 1440);
        assert_eq!(Activity::total(&day).count(Kind::Refused(3)), 144);
        assert_eq!(day[23].start, hour[0].start, "the last hour of the day is the last hour");
    }

    #[test]
    fn a_clock_stepping_back_does_not_corrupt_a_newer_minute() {
        let activity = Activity::default();
        activity.record(Kind::Login, at(MINUTES as u64 + 3));
        activity.record(Kind::Login, at(3));
        assert_eq!(activity.last_hour(at(MINUTES as u64 + 3))[59].logins(), 1);
    }

    #[test]
    fn every_refusal_reason_the_metric_uses_is_counted_apart() {
        use crate::engine::{Allowed, Refusal};
        assert_eq!(Kind::of(&Decision::Allow(Allowed::Clean)), Kind::Login);
        assert_eq!(Kind::of(&Decision::Reject(Refusal::StoreUnavailable)), Kind::Refused(7));
        assert_eq!(REFUSALS.len(), 8);
        assert_eq!(REFUSALS[7], "store_unavailable");
        const { assert!(SERIES * 8 * MINUTES < 200_000, "fixed size stays small") };
    }
}
