//! Failed-login history per source, in memory with a bound (moka): the sliding window the
//! auto-ban counts in. Entries idle for longer than the window are dropped; when the bound is
//! reached the least useful sources are forgotten first. Forgetting only loses counting
//! history, never a ban (bans live in `bans`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use prometheus::IntCounterVec;

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

/// Drops a source's history once it has been idle for the current window (which a reload
/// may change).
struct IdleForWindow {
    window_millis: Arc<AtomicU64>,
}

impl IdleForWindow {
    fn window(&self) -> Option<Duration> {
        Some(Duration::from_millis(
            self.window_millis.load(Ordering::Relaxed),
        ))
    }
}

impl Expiry<Source, Arc<FailureWindow>> for IdleForWindow {
    fn expire_after_create(
        &self,
        _: &Source,
        _: &Arc<FailureWindow>,
        _: Instant,
    ) -> Option<Duration> {
        self.window()
    }

    fn expire_after_update(
        &self,
        _: &Source,
        _: &Arc<FailureWindow>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.window()
    }
}

/// Counts failed logins per source within a sliding window.
pub struct FailureTracker {
    windows: Cache<Source, Arc<FailureWindow>>,
    /// The window in force, shared with the expiry policy so a reload applies to both.
    window_millis: Arc<AtomicU64>,
}

impl FailureTracker {
    /// `max_sources` is fixed for the tracker's life; the window can be changed. `evictions`
    /// counts histories dropped, by cause (`capacity`: the bound was reached; `expired`: idle
    /// for a whole window).
    pub fn new(window: Duration, max_sources: u64, evictions: IntCounterVec) -> FailureTracker {
        let window_millis = Arc::new(AtomicU64::new(0));
        let windows = Cache::builder()
            .max_capacity(max_sources)
            .eviction_listener(move |_, _, cause| {
                let label = match cause {
                    RemovalCause::Size => "capacity",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                evictions.with_label_values(&[label]).inc();
            })
            .expire_after(IdleForWindow {
                window_millis: window_millis.clone(),
            })
            .build();
        let tracker = FailureTracker {
            windows,
            window_millis,
        };
        tracker.set_window(window);
        tracker
    }

    /// Applies a reloaded window; histories already held keep their failure times.
    pub fn set_window(&self, window: Duration) {
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.window_millis.store(millis, Ordering::Relaxed);
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.window_millis.load(Ordering::Relaxed))
    }

    /// Records a failure of `source` at `now`; returns how many failures fall in the window,
    /// this one included, counting at most `max_failures` (the ban threshold: older failures
    /// can never matter once that many are in the window).
    pub fn record_failure(&self, source: Source, now: Timestamp, max_failures: u32) -> u32 {
        let window = self.window();
        let keep = max_failures.max(1) as usize;
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
        let oldest_counted = now.minus(self.window());
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

    fn evictions() -> IntCounterVec {
        crate::metrics::Metrics::new()
            .unwrap()
            .tracked_source_evictions
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn failures_count_within_the_window_and_age_out() {
        let tracker = FailureTracker::new(minutes(20), 10_000, evictions());
        let a = source("203.0.113.7");
        assert_eq!(tracker.record_failure(a, START, 5), 1);
        assert_eq!(tracker.record_failure(a, START.plus(minutes(5)), 5), 2);
        assert_eq!(tracker.record_failure(a, START.plus(minutes(19)), 5), 3);
        // At minute 21 the first failure has left the 20-minute window.
        assert_eq!(tracker.record_failure(a, START.plus(minutes(21)), 5), 3);
        assert_eq!(tracker.failures_in_window(a, START.plus(minutes(30))), 2);
        assert_eq!(tracker.failures_in_window(a, START.plus(minutes(45))), 0);
    }

    #[test]
    fn sources_are_counted_apart_and_forgetting_resets_one() {
        let tracker = FailureTracker::new(minutes(20), 10_000, evictions());
        let (a, b) = (source("203.0.113.7"), source("203.0.113.8"));
        for i in 0..4 {
            tracker.record_failure(a, START.plus(Duration::from_secs(i)), 5);
        }
        assert_eq!(tracker.record_failure(b, START, 5), 1);
        tracker.forget(a);
        assert_eq!(tracker.record_failure(a, START.plus(minutes(1)), 5), 1);
    }

    #[test]
    fn a_reloaded_window_applies_to_histories_already_held() {
        let tracker = FailureTracker::new(minutes(20), 10_000, evictions());
        let a = source("203.0.113.7");
        tracker.record_failure(a, START, 5);
        tracker.record_failure(a, START.plus(minutes(8)), 5);
        tracker.set_window(minutes(5));
        assert_eq!(
            tracker.record_failure(a, START.plus(minutes(10)), 5),
            2,
            "only minutes 8 and 10 are in a 5-minute window"
        );
    }

    #[test]
    fn reaching_the_bound_evicts_histories_and_counts_them() {
        let evicted = evictions();
        let tracker = FailureTracker::new(minutes(20), 100, evicted.clone());
        for i in 0..1_000u32 {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            tracker.record_failure(GROUPING.source_of(ip), START, 5);
        }
        assert!(
            tracker.tracked_sources() <= 110,
            "{} held",
            tracker.tracked_sources()
        );
        assert!(evicted.with_label_values(&["capacity"]).get() >= 800);
    }

    #[test]
    fn the_count_saturates_at_the_ban_threshold_without_growing() {
        let tracker = FailureTracker::new(minutes(20), 10_000, evictions());
        let a = source("203.0.113.7");
        let mut last = 0;
        for i in 0..50 {
            last = tracker.record_failure(a, START.plus(Duration::from_secs(i)), 5);
        }
        assert_eq!(last, 5);
    }
}
