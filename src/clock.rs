//! Time as the decision logic sees it: wall-clock Unix milliseconds behind a trait, so tests
//! can move time forward without sleeping. Not a scheduler: nothing here waits.
//!
//! Every operation is total: arithmetic saturates, and formatting shows a time outside
//! `EARLIEST..=LATEST` as the nearest end of that range, so no stored or hostile value can
//! panic a formatter. Inputs are bounded where they enter (`checked_length`, and the stores
//! clamp what they read back with `Timestamp::in_range`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time as milliseconds since the Unix epoch (UTC).
///
/// Wall-clock rather than monotonic because bans are stored durably and must mean the same
/// instant after a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// The earliest time mailwarden handles: the Unix epoch.
pub const EARLIEST: Timestamp = Timestamp(0);
/// The latest: the last millisecond of the year 9999, the end of RFC 3339's four-digit years
/// (the formatter refuses anything later).
pub const LATEST: Timestamp = Timestamp(253_402_300_799_999);
/// The longest length the admin API accepts for a list entry, and the furthest back a block-log
/// query reaches: 3660 days (ten years), the bound policy.toml puts on `autoban.max_ban` and
/// `events.max_age`.
pub const MAX_LENGTH: Duration = Duration::from_secs(3660 * 24 * 3600);
/// `MAX_LENGTH` as messages say it.
pub const MAX_LENGTH_TEXT: &str = "3660 days (ten years)";

/// Why a length given to the API or the CLI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LengthError {
    #[error("{text:?} is not a duration such as \"2h\" or \"7days\" ({reason})")]
    NotADuration { text: String, reason: String },
    #[error("{text:?} is shorter than one second")]
    TooShort { text: String },
    #[error("{text:?} is longer than {MAX_LENGTH_TEXT}")]
    TooLong { text: String },
}

/// Reads a point in time as filters take it: an RFC 3339 time, or a duration back from `now`
/// such as `2h` (at most `MAX_LENGTH`). The message names the text, cut to 40 characters.
pub fn time_or_ago(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let quoted: String = text.chars().take(40).collect();
    if let Some(time) = Timestamp::parse_rfc3339(text.trim()) {
        return Ok(time);
    }
    match humantime::parse_duration(text.trim()) {
        Ok(back) if back <= MAX_LENGTH => Ok(now.minus(back)),
        Ok(_) => Err(format!("{quoted:?} reaches back more than {MAX_LENGTH_TEXT}")),
        Err(_) => Err(format!("{quoted:?} is neither an RFC 3339 time nor a duration such as \"2h\"")),
    }
}

/// Reads a length such as `2h` or `7days`, from one second to `MAX_LENGTH`. The text in the
/// error is cut to 40 characters.
pub fn checked_length(text: &str) -> Result<Duration, LengthError> {
    let quoted: String = text.chars().take(40).collect();
    match humantime::parse_duration(text.trim()) {
        Ok(length) if length < Duration::from_secs(1) => Err(LengthError::TooShort { text: quoted }),
        Ok(length) if length > MAX_LENGTH => Err(LengthError::TooLong { text: quoted }),
        Ok(length) => Ok(length),
        Err(e) => Err(LengthError::NotADuration { text: quoted, reason: e.to_string() }),
    }
}

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

    /// `millis` as a time, or `Err` with the nearest time in `EARLIEST..=LATEST` when it lies
    /// outside: for records read back from a store, which the caller clamps and logs.
    pub fn in_range(millis: i64) -> Result<Timestamp, Timestamp> {
        let clamped = Timestamp(millis.clamp(EARLIEST.0, LATEST.0));
        if clamped.0 == millis { Ok(clamped) } else { Err(clamped) }
    }

    /// `self` moved into `EARLIEST..=LATEST`.
    pub fn clamped(self) -> Timestamp {
        Timestamp::in_range(self.0).unwrap_or_else(|nearest| nearest)
    }

    fn as_system_time(self) -> SystemTime {
        // In range, so non-negative and below humantime's year-10000 limit.
        UNIX_EPOCH + Duration::from_millis(self.clamped().0.unsigned_abs())
    }

    /// Reads an RFC 3339 time such as `2026-11-22T14:05:09Z` (a `T` or a space between date and
    /// time; UTC only).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let time = humantime::parse_rfc3339_weak(text.trim()).ok()?;
        let millis = time.duration_since(UNIX_EPOCH).ok()?.as_millis();
        i64::try_from(millis).ok().map(Timestamp)
    }

    /// `2026-11-22 14:05:09 UTC`: the form people read in messages, pages and mails.
    pub fn readable(self) -> String {
        self.rfc3339().replace('T', " ").replace('Z', " UTC")
    }

    /// `2026-11-22T14:05:09Z`: the form used in the admin API and the CLI's JSON. A time
    /// outside `EARLIEST..=LATEST` is shown as the nearest end of it.
    pub fn rfc3339(self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(20);
        // Cannot fail for a time in range (humantime refuses only years after 9999).
        let _ = write!(out, "{}", humantime::format_rfc3339_seconds(self.as_system_time()));
        out
    }

    /// `14:05` when `self` is within a day of `now`, `2026-11-23 14:05` otherwise: short enough
    /// for a mail app's alert line, unambiguous for long bans. Rounded up to the minute, so
    /// "try again after 14:05" is never too early.
    pub fn short_utc(self, now: Timestamp) -> String {
        let rounded_up = Timestamp(self.0.saturating_add(59_999).div_euclid(60_000).saturating_mul(60_000));
        let full = rounded_up.rfc3339();
        let (date, time) = (full.get(..10).unwrap_or_default(), full.get(11..16).unwrap_or_default());
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
    fn every_time_formats_without_panicking_and_out_of_range_ones_as_the_nearest_end() {
        for millis in [i64::MIN, -1, 0, LATEST.0, LATEST.0 + 1, i64::MAX] {
            let t = Timestamp(millis);
            assert_eq!(t.rfc3339().len(), 20, "{millis}");
            assert!(!t.short_utc(Timestamp(0)).is_empty());
        }
        assert_eq!(Timestamp(i64::MAX).rfc3339(), "9999-12-31T23:59:59Z");
        assert_eq!(Timestamp(i64::MIN).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(i64::MAX).short_utc(Timestamp(0)), "9999-12-31 23:59");
        assert_eq!(Timestamp(i64::MAX).plus(Duration::MAX), Timestamp(i64::MAX));
        assert_eq!(Timestamp(i64::MIN).minus(Duration::MAX), Timestamp(i64::MIN));
    }

    #[test]
    fn stored_times_outside_the_range_are_reported_with_the_nearest_one() {
        assert_eq!(Timestamp::in_range(1_795_334_400_000), Ok(Timestamp(1_795_334_400_000)));
        assert_eq!(Timestamp::in_range(i64::MAX), Err(LATEST));
        assert_eq!(Timestamp::in_range(-5), Err(EARLIEST));
    }

    #[test]
    fn lengths_are_refused_outside_one_second_to_ten_years_naming_the_problem() {
        assert_eq!(checked_length(" 2h "), Ok(Duration::from_secs(7200)));
        assert_eq!(checked_length("3660days"), Ok(MAX_LENGTH));
        assert_eq!(
            checked_length("9000years").unwrap_err().to_string(),
            "\"9000years\" is longer than 3660 days (ten years)"
        );
        assert!(matches!(checked_length("500ms"), Err(LengthError::TooShort { .. })));
        assert!(matches!(checked_length("99999999999999999999s"), Err(LengthError::NotADuration { .. })));
        assert!(checked_length(&"9".repeat(5000)).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn until_is_zero_for_the_past() {
        let now = Timestamp(10_000);
        assert_eq!(now.until(Timestamp(5_000)), Duration::ZERO);
        assert_eq!(now.until(Timestamp(12_500)), Duration::from_millis(2_500));
    }
}
