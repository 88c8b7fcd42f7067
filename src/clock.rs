//! Time as the decision logic sees it: wall-clock Unix milliseconds behind a trait, so tests
//! can move time forward without sleeping. Not a scheduler: nothing here waits.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time as milliseconds since the Unix epoch (UTC).
///
/// Wall-clock rather than monotonic because bans are stored durably and must mean the same
/// instant after a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_unix_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, duration: Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    pub fn minus(self, duration: Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }

    /// How long from `self` until `later`; zero when `later` is not after `self`.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }

    fn as_system_time(self) -> SystemTime {
        match u64::try_from(self.0) {
            Ok(millis) => UNIX_EPOCH + Duration::from_millis(millis),
            Err(_) => UNIX_EPOCH,
        }
    }

    /// Reads an RFC 3339 time such as `2026-11-22T14:05:09Z` (a `T` or a space between date and
    /// time; UTC only).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let time = humantime::parse_rfc3339_weak(text.trim()).ok()?;
        let millis = time.duration_since(UNIX_EPOCH).ok()?.as_millis();
        i64::try_from(millis).ok().map(Timestamp)
    }

    /// `2026-11-22T14:05:09Z`: the form used in the admin API and the CLI's JSON.
    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_seconds(self.as_system_time()).to_string()
    }

    /// `14:05` when `self` is within a day of `now`, `2026-11-23 14:05` otherwise: short enough
    /// for a mail app's alert line, unambiguous for long bans. Rounded up to the minute, so
    /// "try again after 14:05" is never too early.
    pub fn short_utc(self, now: Timestamp) -> String {
        let rounded_up = Timestamp(self.0.saturating_add(59_999).div_euclid(60_000).saturating_mul(60_000));
        let full = rounded_up.rfc3339();
        let (date, time) = (&full[..10], &full[11..16]);
        if now.until(self) < Duration::from_secs(24 * 3600) { time.to_string() } else { format!("{date} {time}") }
    }
}

/// The source of "now" for everything that decides or expires.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(millis)
    }
}

/// A clock that only moves when told to, for tests of windows and expiry.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    pub fn starting_at(start: Timestamp) -> ManualClock {
        ManualClock { millis: AtomicI64::new(start.0) }
    }

    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_is_time_of_day_within_a_day_and_dated_beyond() {
        let now = Timestamp(1_795_334_400_000); // 2026-11-22T08:00:00Z
        assert_eq!(now.rfc3339(), "2026-11-22T08:00:00Z");
        assert_eq!(now.plus(Duration::from_secs(30 * 60)).short_utc(now), "08:30");
        assert_eq!(now.plus(Duration::from_secs(26 * 3600)).short_utc(now), "2026-11-23 10:00");
    }

    #[test]
    fn rfc3339_round_trips_and_rejects_nonsense() {
        let t = Timestamp(1_795_334_400_000);
        assert_eq!(Timestamp::parse_rfc3339(&t.rfc3339()), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("2026-11-22 08:00:00"), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("tomorrow"), None);
    }

    #[test]
    fn until_is_zero_for_the_past() {
        let now = Timestamp(10_000);
        assert_eq!(now.until(Timestamp(5_000)), Duration::ZERO);
        assert_eq!(now.until(Timestamp(12_500)), Duration::from_millis(2_500));
    }
}
