//! Durable state behind a narrow interface: what must survive `kill -9` and a restart. The
//! embedded SQLite backend is the default; a Redis backend (cluster mode) implements the same
//! trait. The per-login path never calls the store: `warden` keeps what `allow` reads in
//! memory and writes through here only when state changes (a ban placed or lifted).

mod sqlite;

pub use sqlite::SqliteStore;

use ipnet::IpNet;

use crate::access::{AccessEntry, ListKind};
use crate::bans::Ban;
use crate::clock::Timestamp;
use crate::events::{Event, EventFilter};
use crate::firewall::{KeyedRuleSet, RuleSet};
use crate::journal::KnownSource;
use crate::network::Source;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {message}")]
    Open { path: String, message: String },
    #[error("state database error during {operation}: {message}")]
    Operation { operation: &'static str, message: String },
}

impl StoreError {
    pub fn operation(operation: &'static str, error: impl std::fmt::Display) -> StoreError {
        StoreError::Operation { operation, message: error.to_string() }
    }
}

/// Calls are blocking and may take milliseconds (a disk sync, a network round trip): callers
/// on an async runtime run them on a blocking thread.
pub trait Store: Send + Sync {
    /// Bans still active at `now`, for loading at start-up.
    fn active_bans(&self, now: Timestamp) -> Result<Vec<Ban>, StoreError>;
    /// Creates or replaces the ban on `ban.source`; durable when this returns.
    fn save_ban(&self, ban: &Ban) -> Result<(), StoreError>;
    /// Removes the ban on `source`; returns whether one was stored.
    fn delete_ban(&self, source: Source) -> Result<bool, StoreError>;
    /// Removes bans that ended by `now`; returns how many.
    fn delete_expired_bans(&self, now: Timestamp) -> Result<usize, StoreError>;
    /// Entries of the admin lists made through the API (policy-file entries are not stored).
    fn access_entries(&self) -> Result<Vec<AccessEntry>, StoreError>;
    /// Creates or replaces the entry for `entry.network` on `entry.list`; durable when this returns.
    fn save_access_entry(&self, entry: &AccessEntry) -> Result<(), StoreError>;
    /// Removes the entry; returns whether one was stored.
    fn delete_access_entry(&self, list: ListKind, network: IpNet) -> Result<bool, StoreError>;
    /// Removes entries that ended by `now`; returns how many.
    fn delete_expired_access_entries(&self, now: Timestamp) -> Result<usize, StoreError>;
    /// Appends events to the block log in one transaction.
    fn save_events(&self, events: &[Event]) -> Result<(), StoreError>;
    /// Events matching `filter`, newest first.
    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError>;
    /// Removes events older than `older_than`, then all but the newest `keep_at_most`.
    fn prune_events(&self, older_than: Timestamp, keep_at_most: usize) -> Result<usize, StoreError>;
    /// Firewall rule sets made through the API.
    fn firewall_rule_sets(&self) -> Result<Vec<KeyedRuleSet>, StoreError>;
    /// Creates or replaces the API's rule set for `key`; durable when this returns.
    fn save_firewall_rule_set(&self, key: &str, rule_set: &RuleSet) -> Result<(), StoreError>;
    /// Removes the API's rule set for `key`; returns whether there was one.
    fn delete_firewall_rule_set(&self, key: &str) -> Result<bool, StoreError>;
    /// Records successful logins (login, source, time), keeping the latest time per pair.
    fn save_known_sources(&self, known: &[KnownSource]) -> Result<(), StoreError>;
    /// The sources `login` logged in from since `since`, most recent first, at most `limit`.
    fn known_sources(&self, login: &str, since: Timestamp, limit: usize) -> Result<Vec<Source>, StoreError>;
    /// Removes known sources older than `older_than`, then all but the newest `per_account` of
    /// each account.
    fn prune_known_sources(&self, older_than: Timestamp, per_account: usize) -> Result<usize, StoreError>;
    /// Makes the on-disk state compact and self-contained before the process exits.
    fn close(&self) -> Result<(), StoreError>;
    /// A short name for metrics and logs.
    fn backend(&self) -> &'static str;
}
