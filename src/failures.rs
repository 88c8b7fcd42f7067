//! Failed-login history per source, in memory with a bound (moka): the sliding window the
//! auto-ban counts in. Entries idle for longer than the window are dropped; when the bound is
//! reached the least useful sources are forgotten first. Forgetting only loses counting
//! history, never a ban (bans live in `bans`).

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::clock::Timestamp;
use crate::network::Source;

/// The failure times of one source inside the window, oldest first. Holds at most
/// `max_failures` entries: once that many fall in the window the source is banned, so older
/// ones can never matter.
#[derive(Debug, Clone, Default)]
struct FailureWindow {
    times: Vec<Timestamp>,
}

impl FailureWindow {
    fn record(mut self, now: Timestamp, window: Duration, keep: usize) -> FailureWindow {
        let oldest_counted = now.minus(window);
        self.times.retain(|t| *t > oldest_counted);
        self.times.push(now);
        if self.times.len() > keep {
            let excess = self.times.len() - keep;
            self.times.drain(..excess);
        }
        self
    }
}

/// Counts failed logins per source within a sliding window.
pub struct FailureTracker {
    windows: Cache<Source, Arc<FailureWindow>>,
    window: Duration,
    keep: usize,
}

impl FailureTracker {
    pub fn new(window: Duration, max_failures: u32, max_sources: u64) -> FailureTracker {
        let windows = Cache::builder()
            .max_capacity(max_sources)
            .time_to_idle(window)
            .build();
        FailureTracker {
            windows,
            window,
            keep: max_failures.max(1) as usize,
        }
    }

    /// Records a failure of `source` at `now`; returns how many failures fall in the window,
    /// this one included.
    pub fn record_failure(&self, source: Source, now: Timestamp) -> u32 {
        let (window, keep) = (self.window, self.keep);
        let entry = self.windows.entry(source).and_upsert_with(|existing| {
            let current = existing
                .map(|e| FailureWindow::clone(&e.into_value()))
                .unwrap_or_default();
            Arc::new(current.record(now, window, keep))
        });
        u32::try_from(entry.value().times.len()).unwrap_or(u32::MAX)
    }

    /// Failures of `source` in the window ending at `now`.
    pub fn failures_in_window(&self, source: Source, now: Timestamp) -> u32 {
        let oldest_counted = now.minus(self.window);
        self.windows
            .get(&source)
            .map(|w| w.times.iter().filter(|t| **t > oldest_counted).count())
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Drops the history of `source` (after it is banned, or unbanned by an admin, so it
    /// starts afresh).
    pub fn forget(&self, source: Source) {
        self.windows.invalidate(&source);
    }

    /// Sources currently remembered (approximate, as moka counts lazily).
    pub fn tracked_sources(&self) -> u64 {
        self.windows.run_pending_tasks();
        self.windows.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{SourceGrouping, parse_ip};

    const GROUPING: SourceGrouping = SourceGrouping {
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    };
    const START: Timestamp = Timestamp(1_795_334_400_000);

    fn source(address: &str) -> Source {
        GROUPING.source_of(parse_ip(address).unwrap())
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn failures_count_within_the_window_and_age_out() {
        let tracker = FailureTracker::new(minutes(20), 5, 10_000);
        let a = source("203.0.113.7");
        assert_eq!(tracker.record_failure(a, START), 1);
        assert_eq!(tracker.record_failure(a, START.plus(minutes(5))), 2);
        assert_eq!(tracker.record_failure(a, START.plus(minutes(19))), 3);
        // At minute 21 the first failure has left the 20-minute window.
        assert_eq!(tracker.record_failure(a, START.plus(minutes(21))), 3);
        assert_eq!(tracker.failures_in_window(a, START.plus(minutes(30))), 2);
        assert_eq!(tracker.failures_in_window(a, START.plus(minutes(45))), 0);
    }

    #[test]
    fn sources_are_counted_apart_and_forgetting_resets_one() {
        let tracker = FailureTracker::new(minutes(20), 5, 10_000);
        let (a, b) = (source("203.0.113.7"), source("203.0.113.8"));
        for i in 0..4 {
            tracker.record_failure(a, START.plus(Duration::from_secs(i)));
        }
        assert_eq!(tracker.record_failure(b, START), 1);
        tracker.forget(a);
        assert_eq!(tracker.record_failure(a, START.plus(minutes(1))), 1);
    }

    #[test]
    fn the_count_saturates_at_the_ban_threshold_without_growing() {
        let tracker = FailureTracker::new(minutes(20), 5, 10_000);
        let a = source("203.0.113.7");
        let mut last = 0;
        for i in 0..50 {
            last = tracker.record_failure(a, START.plus(Duration::from_secs(i)));
        }
        assert_eq!(last, 5);
    }
}
