//! What the console's overview and a mailbox's login history read: the recent activity, the
//! quarantines in force, and for one login the places it logged in from and its recent
//! failures. Reads only; the admin API serves the same (`/api/v1/activity`,
//! `/api/v1/logins/{login}/history`), so console and API agree.

use super::Warden;
use crate::activity::Tally;
use crate::clock::Timestamp;
use crate::events::{Event, EventFilter};
use crate::failures::Guess;
use crate::geoip::CountryCode;
use crate::journal::KnownSource;
use crate::network::Source;
use crate::store::StoreError;

/// The last hour by minute and the last day by hour, oldest first.
#[derive(Debug, Clone)]
pub struct RecentActivity {
    pub now: Timestamp,
    pub last_hour: Vec<Tally>,
    pub last_day: Vec<Tally>,
}

/// A place a login logged in from: the known source, and its country when GeoIP knows it.
#[derive(Debug, Clone)]
pub struct Place {
    pub known: KnownSource,
    pub country: Option<CountryCode>,
}

/// A login's history: where it logged in from, what the block log refused it lately, and the
/// wrong passwords the failure tracker holds for it now.
#[derive(Debug, Clone)]
pub struct LoginHistory {
    pub places: Vec<Place>,
    pub refusals: Vec<Event>,
    pub failures: Vec<(Source, Guess)>,
}

/// At most this many of each part of a login's history.
pub const HISTORY_LIMIT: usize = 100;

impl Warden {
    pub fn recent_activity(&self) -> RecentActivity {
        let now = self.now();
        let activity = &self.shared.activity;
        RecentActivity { now, last_hour: activity.last_hour(now), last_day: activity.last_day(now) }
    }

    /// Passwords in quarantine now (a device keeps using an old one), with their sources,
    /// most recent first, at most `limit`.
    pub fn quarantines(&self, limit: usize) -> Vec<(Source, Guess)> {
        self.shared.failures.quarantines(self.now(), limit)
    }

    /// `login`'s history, in any case, each part newest first and at most `HISTORY_LIMIT`.
    /// Blocking.
    pub fn login_history(&self, login: &str) -> Result<LoginHistory, StoreError> {
        let shared = &*self.shared;
        let key = crate::login::key(login);
        // Successes still being gathered by the journal count too.
        shared.journal.flush();
        let known = shared.store.login_places(&key, HISTORY_LIMIT);
        shared.metrics.store_result("read_known_sources", &known);
        let geoip = shared.geoip.load();
        let places = known?
            .into_iter()
            .map(|known| {
                let country = geoip.country(known.source.network().addr());
                Place { known, country }
            })
            .collect();
        let filter = EventFilter { login: Some(key.to_string()), limit: HISTORY_LIMIT, ..EventFilter::default() };
        let refusals = self.events(&filter)?.events;
        let failures =
            shared.failures.guesses_where(self.now(), HISTORY_LIMIT, |guess| crate::login::key(&guess.login) == key);
        Ok(LoginHistory { places, refusals, failures })
    }
}
