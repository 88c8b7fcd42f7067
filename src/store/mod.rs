//! Durable state behind a narrow interface: what must survive `kill -9` and a restart. The
//! embedded SQLite backend is the default; the Redis backend (cluster mode, `redis_store`)
//! implements the same trait and announces each change to the other nodes (`Announcement`).
//! The per-login path never calls the store: `warden` keeps what `allow` reads in memory and
//! writes through here only when state changes (a ban placed or lifted).

mod redis_store;
mod sqlite;

pub use redis_store::{RedisSettings, RedisStore, mask_url};
pub use sqlite::SqliteStore;

use ipnet::IpNet;

use crate::access::{AccessEntry, ListKind};
use crate::audit::{AuditFilter, AuditRecord};
use crate::bans::Ban;
use crate::clock::Timestamp;
use crate::events::{Event, EventFilter, EventPage};
use crate::firewall::{KeyedRuleSet, RuleSet};
use crate::journal::KnownSource;
use crate::network::Source;
use crate::tokens::TokenRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {message}")]
    Open { path: String, message: String },
    #[error("state database error during {operation}: {message}")]
    Operation { operation: &'static str, message: String },
    /// The Redis backend could not reach Redis, or is marked down since it last could not (its
    /// calls then fail at once until a probe reaches Redis again).
    #[error("the shared store (Redis) is unreachable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn operation(operation: &'static str, error: impl std::fmt::Display) -> StoreError {
        StoreError::Operation { operation, message: error.to_string() }
    }

    /// Whether the store could not be reached (an outage, logged once by the store) rather
    /// than refused the call.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// What a node tells the others through Redis after changing the shared state: published by
/// `RedisStore` on its `channel()` with every successful write (except the block log, known
/// sources and sweeps of ended items, which every node does for itself), and by the cluster
/// code for quarantines. As JSON: `{"node":"<id>","change":"ban_saved","source":"203.0.113.7"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Announcement {
    /// `RedisStore::node_id` of the sender, so a node can ignore its own announcements.
    pub node: String,
    #[serde(flatten)]
    pub change: Change,
}

/// What changed; the receivers reread the item from Redis.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A ban was saved for this source (display form of `Source`, e.g. "203.0.113.7" or "2001:db8::/64").
    BanSaved { source: String },
    /// The ban on this source was lifted (deleted). (Ended bans are swept by every node itself.)
    BanDeleted { source: String },
    /// An IP+login refusal was saved: `login` (its key) is refused from `source`. A change of
    /// its own, which a node of an older version skips rather than reading as a ban.
    LoginRefusalSaved { source: String, login: String },
    /// The IP+login refusal of `login` from `source` was lifted.
    LoginRefusalDeleted { source: String, login: String },
    /// A list entry was saved or deleted (nodes reload all list entries; they are few).
    AccessEntries,
    /// The API's rule set for this key was saved or deleted.
    RuleSet { key: String },
    /// An admin token was created or revoked (nodes reload all tokens; they are few), so a
    /// revocation holds on every node at once.
    Tokens,
    /// Sent by the warden through the store: `login`'s password was reset on one node.
    LoginReset { login: String },
    /// Sent by the cluster code, not the store: a guess was quarantined cluster-wide.
    Quarantine { source: String, guess: u64, login: String, protocol: String, device_id: String, until: i64 },
}

/// An API rule set as both backends store it (`StoredRuleSet` JSON); one this version cannot
/// read is skipped with a warning rather than failing the load.
fn stored_rule_set(key: String, json: &str) -> Option<KeyedRuleSet> {
    // Keyed again as policy.toml and the API key them, so a set stored by an older version
    // (or written into Redis by hand) still matches its mailbox.
    let parsed = crate::firewall::parse_key(&key).and_then(|key| {
        let stored = serde_json::from_str::<crate::firewall::StoredRuleSet>(json).map_err(|e| e.to_string())?;
        Ok((key, stored.parse().map_err(|e| e.to_string())?))
    });
    match parsed {
        Ok((key, rule_set)) => Some(KeyedRuleSet { key, origin: crate::firewall::RuleSetOrigin::Api, rule_set }),
        Err(e) => {
            tracing::warn!(key, error = %e, "skipped a stored firewall rule set this version cannot read");
            None
        }
    }
}

/// What `Store::count_self_unblock` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DailyCount {
    /// Counted: the source's self-unblocks in its day, this one included.
    Counted(u32),
    /// Not counted: the source had this many (at least the limit) in its day already.
    AtLimit(u32),
}

/// Says, once per record read, that a stored record had a time outside the range every
/// formatter handles (`clock::EARLIEST..=LATEST`) and was read as the nearest time in it.
fn note_clamped(clamped: bool, record: &'static str, key: &str) {
    if clamped {
        tracing::warn!(
            record,
            key,
            "a stored record has a time outside 1970..=9999; read as the nearest time in range"
        );
    }
}

/// Calls are blocking and may take milliseconds (a disk sync, a network round trip): callers
/// on an async runtime run them on a blocking thread.
pub trait Store: Send + Sync {
    /// Bans still active at `now`, for loading at start-up.
    fn active_bans(&self, now: Timestamp) -> Result<Vec<Ban>, StoreError>;
    /// Creates or replaces the ban on `ban.source` of its scope (the whole source, or
    /// `ban.refused_login` from it); durable when this returns.
    fn save_ban(&self, ban: &Ban) -> Result<(), StoreError>;
    /// Removes the ban on `source` (`refused_login`: only that login's IP+login refusal, its
    /// `login::key`), lifted at `now`; returns whether one was stored.
    fn delete_ban(&self, source: Source, refused_login: Option<&str>, now: Timestamp) -> Result<bool, StoreError>;
    /// Whether `source`'s failures were forgiven, by a lift or by another ban, at or after
    /// `at`: a whole-source ban placed at `at` that this node could not store yet is then
    /// out of date. Only a store shared by several nodes can say yes.
    fn forgiven_since(&self, _source: Source, _at: Timestamp) -> Result<bool, StoreError> {
        Ok(false)
    }
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
    /// The page of events matching `filter` (newest first) and their total.
    fn events(&self, filter: &EventFilter) -> Result<EventPage, StoreError>;
    /// Removes events older than `older_than`, then all but the newest `keep_at_most`, then the
    /// oldest until the rest take at most `max_bytes` (exactly as `Event::size` counts in
    /// SQLite, approximately by Redis's own measure of the stream).
    fn prune_events(&self, older_than: Timestamp, keep_at_most: usize, max_bytes: u64) -> Result<usize, StoreError>;
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
    /// Every account's known sources since `since`, oldest first, at most `limit` (the newest):
    /// what toleration learns again at start, so a restart does not make an office a stranger.
    fn recent_known_sources(&self, since: Timestamp, limit: usize) -> Result<Vec<KnownSource>, StoreError>;
    /// The places `login` (in any spelling: by `login::key`) logged in from, most recent first, at most
    /// `limit`, with the protocol and mail app of the last success from each.
    fn login_places(&self, login: &str, limit: usize) -> Result<Vec<KnownSource>, StoreError>;
    /// Removes known sources older than `older_than`, then all but the newest `per_account` of
    /// each account.
    fn prune_known_sources(&self, older_than: Timestamp, per_account: usize) -> Result<usize, StoreError>;
    /// The key that signs the self-service page's challenges: stores `candidate` unless a key
    /// is stored already, and returns the stored one, so that challenges outlive a restart and
    /// every node of a cluster signs with the same key.
    fn self_service_key(&self, candidate: &str) -> Result<String, StoreError>;
    /// Records the self-service challenge `id` as used until `until` (when it would have
    /// expired anyway); `false` when it was recorded already. Forgets ids ended by `now`.
    fn spend_challenge(&self, id: &str, until: Timestamp, now: Timestamp) -> Result<bool, StoreError>;
    /// The self-unblocks of `source` counted in its day at `now` (0 when it has none running).
    fn self_unblocks(&self, source: Source, now: Timestamp) -> Result<u32, StoreError>;
    /// Counts one more self-unblock of `source`, unless it had `limit` in its day already, in
    /// one atomic step (two nodes cannot both count the last one). A source's day starts with
    /// its first self-unblock counted and lasts `day`.
    fn count_self_unblock(
        &self,
        source: Source,
        limit: u32,
        now: Timestamp,
        day: std::time::Duration,
    ) -> Result<DailyCount, StoreError>;
    /// Takes back one self-unblock counted for `source` (the unblock did not happen after all).
    fn uncount_self_unblock(&self, source: Source) -> Result<(), StoreError>;
    /// The admin API's tokens (their digests, never the tokens), with when each was last used.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Stores a new token unless one of that name exists; returns whether it was stored.
    fn create_token(&self, token: &TokenRecord) -> Result<bool, StoreError>;
    /// Removes the token named `name`; returns whether there was one.
    fn delete_token(&self, name: &str) -> Result<bool, StoreError>;
    /// Records that the token named `name` was used at `at` (coarse; never announced, and
    /// never brings back a token revoked meanwhile).
    fn touch_token(&self, name: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Appends a record to the audit trail and drops the oldest beyond `audit::MAX_RECORDS`.
    fn save_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// The page of audit records matching `filter`, newest first, and how many match.
    fn audit(&self, filter: &AuditFilter) -> Result<(Vec<AuditRecord>, usize), StoreError>;
    /// Makes the on-disk state compact and self-contained before the process exits.
    fn close(&self) -> Result<(), StoreError>;
    /// A short name for metrics and logs.
    fn backend(&self) -> &'static str;
    /// Whether the store answered its last call: always for the embedded store; the Redis
    /// store is down from a failed call until a probe reaches Redis again.
    fn is_up(&self) -> bool {
        true
    }
    /// Tells the other nodes that `login`'s password was reset (`mailwarden reset-login`), so
    /// they forgive its guesses and end its quarantines too. Nothing to tell for one node.
    fn announce_login_reset(&self, login: &str) -> Result<(), StoreError> {
        let _ = login;
        Ok(())
    }
}
