//! The application core without HTTP: gathers the facts for a login attempt from in-memory
//! state, asks the engine, applies the effects (count a failure, place a ban) and writes them
//! through to the durable store; keeps the admin lists and applies reloaded policies. A cheap
//! `Clone` handle around shared state, used by the policy and admin listeners, the reloader
//! and the background sweeper alike.
//!
//! Methods that touch the store block (they are run on blocking threads by `http` and
//! `server`); `allow`, `report`, `decide` and `explain` never touch it and never block.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::access::{AccessEntry, AccessLists, ListKind, Origin, Standing};
use crate::bans::{Ban, BanCause, BanIndex, BanReason};
use crate::clock::{Clock, Timestamp};
use crate::config::Policy;
use crate::engine::{self, AllowFacts, Decision, ReportKind};
use crate::failures::FailureTracker;
use crate::metrics::Metrics;
use crate::network::Source;
use crate::store::{Store, StoreError};
use crate::wire::{self, LoginAttempt, Outcome, Reply};

#[derive(Clone)]
pub struct Warden {
    shared: Arc<Shared>,
}

struct Shared {
    /// The policy in force; replaced whole on reload, read without locking.
    policy: ArcSwap<Policy>,
    /// The admin lists from the policy file and the API combined; rebuilt on every change.
    access: ArcSwap<AccessLists>,
    /// The API's list entries (the store holds the same); the source of each rebuild.
    api_entries: Mutex<HashMap<(ListKind, IpNet), AccessEntry>>,
    clock: Arc<dyn Clock>,
    /// Failed-login history per source (memory only, bounded).
    failures: FailureTracker,
    /// Active bans (memory mirror of the store, unbounded).
    bans: BanIndex,
    store: Arc<dyn Store>,
    metrics: Metrics,
}

/// Why a change to the admin lists was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{network} is on the {} list in the policy file; edit the file and reload to change it", list.label())]
    DefinedInPolicyFile { list: ListKind, network: IpNet },
    #[error("{network} is not on the {} list", list.label())]
    NotListed { list: ListKind, network: IpNet },
    #[error("the expiry is not in the future")]
    ExpiryInPast,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A list entry made or replaced through the API.
#[derive(Debug, Clone)]
pub struct ListChange {
    pub entry: AccessEntry,
    /// `false` when an entry for the same network was replaced.
    pub created: bool,
}

/// Settings a running server cannot change; a reload that changes them keeps the old value
/// and says so.
const RESTART_ONLY: &[&str] = &[
    "server.policy_listen",
    "server.admin_listen",
    "server.state_dir",
    "autoban.max_tracked_sources",
    "log.level",
    "log.format",
];

/// What `allow` would answer right now and everything that led there, for the dry run.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    pub reply: Reply,
    pub address: IpAddr,
    pub source: Source,
    /// The list entry that decided, when a list did.
    pub list_entry: Option<AccessEntry>,
    pub ban: Option<Arc<Ban>>,
    pub failures_in_window: u32,
    pub max_failures: u32,
}

impl Explanation {
    /// One sentence for support staff.
    pub fn summary(&self) -> String {
        let until = |t: Timestamp| t.rfc3339().replace('T', " ").replace('Z', " UTC");
        let entry_note = |e: &AccessEntry| {
            let origin = match e.origin {
                Origin::PolicyFile => "policy.toml".to_string(),
                Origin::Api => "the admin API".to_string(),
            };
            let comment = if e.comment.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.comment)
            };
            let expiry = e
                .expires_at
                .map(|t| format!(" until {}", until(t)))
                .unwrap_or_default();
            format!("{} in {origin}{comment}{expiry}", e.network)
        };
        match (&self.decision, &self.list_entry, &self.ban) {
            (Decision::Reject(engine::Refusal::Blocked { .. }), Some(entry), _) => {
                format!(
                    "refused: {} is blocked by {}",
                    self.address,
                    entry_note(entry)
                )
            }
            (Decision::Allow(engine::Allowed::Trusted), Some(entry), _) => {
                format!(
                    "allowed: {} is trusted by {}; it is never banned",
                    self.address,
                    entry_note(entry)
                )
            }
            (Decision::Reject(engine::Refusal::Banned { .. }), _, Some(ban)) => {
                let last = if ban.cause.login.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; last failed login {} over {}",
                        ban.cause.login, ban.cause.protocol
                    )
                };
                format!(
                    "refused: {} is banned until {} after {} failed logins{last}",
                    ban.source,
                    until(ban.expires_at),
                    ban.failures
                )
            }
            _ => format!(
                "allowed: {} has {} of {} failed logins in the current window",
                self.source, self.failures_in_window, self.max_failures
            ),
        }
    }
}

fn file_entries(policy: &Policy, loaded_at: Timestamp) -> impl Iterator<Item = AccessEntry> + '_ {
    let entry = move |list, network: &IpNet| AccessEntry {
        list,
        network: *network,
        comment: String::new(),
        created_at: loaded_at,
        expires_at: None,
        origin: Origin::PolicyFile,
    };
    let trusted = policy
        .networks
        .trusted
        .iter()
        .map(move |n| entry(ListKind::Trusted, n));
    let blocked = policy
        .networks
        .blocked
        .iter()
        .map(move |n| entry(ListKind::Blocked, n));
    trusted.chain(blocked)
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Warden {
    /// Builds the core and loads the active bans and list entries from `store`.
    pub fn open(
        policy: Policy,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Result<Warden, StoreError> {
        let now = clock.now();
        let failures =
            FailureTracker::new(policy.autoban.window, policy.autoban.max_tracked_sources);
        let bans = BanIndex::default();
        let loaded = store.active_bans(now);
        metrics.store_result("load_bans", &loaded);
        for ban in loaded? {
            bans.insert(Arc::new(ban));
        }
        let entries = store.access_entries();
        metrics.store_result("load_list_entries", &entries);
        let api_entries: HashMap<_, _> = entries?
            .into_iter()
            .map(|e| ((e.list, e.network), e))
            .collect();
        let access =
            AccessLists::build(file_entries(&policy, now).chain(api_entries.values().cloned()));
        metrics.active_bans.set(gauge_value(bans.len()));
        let shared = Shared {
            policy: ArcSwap::from_pointee(policy),
            access: ArcSwap::from_pointee(access),
            api_entries: Mutex::new(api_entries),
            clock,
            failures,
            bans,
            store,
            metrics,
        };
        Ok(Warden {
            shared: Arc::new(shared),
        })
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.shared.policy.load_full()
    }

    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    fn standing(&self, address: Option<IpAddr>, now: Timestamp) -> Standing {
        match address {
            Some(ip) => self.shared.access.load().standing(ip, now),
            None => Standing::Unlisted,
        }
    }

    /// Decides an `allow` request without changing any state.
    pub fn decide(&self, address: Option<IpAddr>) -> Decision {
        let shared = &*self.shared;
        let now = shared.clock.now();
        let standing = self.standing(address, now);
        let grouping = shared.policy.load().autoban.grouping;
        let ban = address.and_then(|ip| shared.bans.active_for_address(ip, grouping, now));
        engine::decide_allow(&AllowFacts {
            address,
            standing,
            ban: ban.as_deref(),
            now,
        })
    }

    /// Answers Dovecot's `allow`.
    pub fn allow(&self, attempt: &LoginAttempt<'_>) -> Reply {
        let decision = self.decide(attempt.remote);
        self.shared
            .metrics
            .decisions
            .with_label_values(&[
                decision.verdict(),
                decision.reason(),
                attempt.protocol.label(),
            ])
            .inc();
        let policy = self.shared.policy.load();
        wire::allow_reply(&decision, &policy.messages, self.shared.clock.now())
    }

    /// What `allow` would answer for `address` right now, and why. Changes nothing: no
    /// counters, no metrics.
    pub fn explain(&self, address: IpAddr) -> Explanation {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let decision = self.decide(Some(address));
        let list_entry = match self.standing(Some(address), now) {
            Standing::Trusted(net) => shared.access.load().entry(ListKind::Trusted, net).cloned(),
            Standing::Blocked(net) => shared.access.load().entry(ListKind::Blocked, net).cloned(),
            Standing::Unlisted => None,
        };
        let source = policy.autoban.grouping.source_of(address);
        Explanation {
            reply: wire::allow_reply(&decision, &policy.messages, now),
            decision,
            address,
            source,
            list_entry,
            ban: shared.bans.active(source, now),
            failures_in_window: shared.failures.failures_in_window(source, now),
            max_failures: policy.autoban.max_failures,
        }
    }

    /// Takes Dovecot's `report`. Returns a ban it placed, which the caller must `persist_ban`.
    pub fn report(&self, attempt: &LoginAttempt<'_>, outcome: Outcome) -> Option<Arc<Ban>> {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let standing = self.standing(attempt.remote, now);
        let kind = engine::classify_report(
            outcome.success,
            outcome.policy_reject,
            attempt.remote.is_some(),
            standing,
        );
        shared
            .metrics
            .reports
            .with_label_values(&[kind.label()])
            .inc();
        let (ReportKind::Failure, Some(address)) = (kind, attempt.remote) else {
            return None;
        };
        let source = policy.autoban.grouping.source_of(address);
        let failures = shared
            .failures
            .record_failure(source, now, policy.autoban.max_failures);
        let already_banned = shared.bans.active(source, now).is_some();
        if !engine::bans_source(failures, already_banned, &policy.autoban) {
            return None;
        }
        let ban = Arc::new(Ban {
            source,
            created_at: now,
            expires_at: engine::ban_expiry(now, &policy.autoban),
            reason: BanReason::Autoban,
            failures,
            cause: BanCause {
                login: attempt.login.to_string(),
                protocol: attempt.protocol.label().to_string(),
                device_id: attempt.device_id.to_string(),
            },
        });
        shared.bans.insert(ban.clone());
        shared.failures.forget(source);
        shared
            .metrics
            .bans_created
            .with_label_values(&[ban.reason.label()])
            .inc();
        shared
            .metrics
            .active_bans
            .set(gauge_value(shared.bans.len()));
        tracing::info!(
            source = %source,
            until = %ban.expires_at.rfc3339(),
            failures,
            login = %ban.cause.login,
            protocol = %ban.cause.protocol,
            "source banned after repeated failed logins"
        );
        Some(ban)
    }

    /// Writes a ban placed by `report` to the store. Blocking.
    pub fn persist_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        let result = self.shared.store.save_ban(ban);
        self.shared.metrics.store_result("save_ban", &result);
        if let Err(e) = &result {
            tracing::error!(source = %ban.source, error = %e, "ban is in force but could not be stored durably");
        }
        result
    }

    /// The source a network names: an address means the source containing it, a network with
    /// the source prefix means itself.
    pub fn source_for(&self, target: IpNet) -> Source {
        let grouping = self.shared.policy.load().autoban.grouping;
        let host = target.prefix_len() == target.max_prefix_len();
        if host {
            grouping.source_of(target.addr())
        } else {
            grouping.source_of(target.network())
        }
    }

    /// The active ban on `source`.
    pub fn ban(&self, source: Source) -> Option<Arc<Ban>> {
        self.shared.bans.active(source, self.shared.clock.now())
    }

    /// Active bans, soonest to end first.
    pub fn bans(&self) -> Vec<Arc<Ban>> {
        self.shared.bans.list(self.shared.clock.now())
    }

    /// Lifts the ban on `source` and forgets its failure history. Blocking.
    pub fn unban(&self, source: Source) -> Result<Option<Arc<Ban>>, StoreError> {
        let shared = &*self.shared;
        let deleted = shared.store.delete_ban(source);
        shared.metrics.store_result("delete_ban", &deleted);
        let deleted = deleted?;
        let removed = shared.bans.remove(source);
        shared.failures.forget(source);
        shared
            .metrics
            .active_bans
            .set(gauge_value(shared.bans.len()));
        let now = shared.clock.now();
        let lifted = removed.filter(|b| b.is_active(now));
        if lifted.is_some() || deleted {
            shared
                .metrics
                .bans_lifted
                .with_label_values(&["admin"])
                .inc();
            tracing::info!(source = %source, "ban lifted by an administrator");
        }
        Ok(lifted)
    }

    fn api_entries(&self) -> MutexGuard<'_, HashMap<(ListKind, IpNet), AccessEntry>> {
        self.shared
            .api_entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rebuilds the combined lists from the policy file and the API's entries. Called with the
    /// API entries locked, so concurrent changes rebuild in order.
    fn rebuild_access(
        &self,
        api_entries: &HashMap<(ListKind, IpNet), AccessEntry>,
        policy: &Policy,
    ) {
        let now = self.shared.clock.now();
        let lists =
            AccessLists::build(file_entries(policy, now).chain(api_entries.values().cloned()));
        self.shared.access.store(Arc::new(lists));
    }

    fn in_policy_file(&self, list: ListKind, network: IpNet) -> bool {
        let policy = self.shared.policy.load();
        let file = match list {
            ListKind::Trusted => &policy.networks.trusted,
            ListKind::Blocked => &policy.networks.blocked,
        };
        file.contains(&network)
    }

    /// Adds `network` to `list` (or replaces the API's entry for it), durably. Blocking.
    pub fn add_to_list(
        &self,
        list: ListKind,
        network: IpNet,
        expires_at: Option<Timestamp>,
        comment: &str,
    ) -> Result<ListChange, ListError> {
        let network = network.trunc();
        let now = self.shared.clock.now();
        if expires_at.is_some_and(|end| end <= now) {
            return Err(ListError::ExpiryInPast);
        }
        if self.in_policy_file(list, network) {
            return Err(ListError::DefinedInPolicyFile { list, network });
        }
        let entry = AccessEntry {
            list,
            network,
            comment: comment.to_string(),
            created_at: now,
            expires_at,
            origin: Origin::Api,
        };
        let mut entries = self.api_entries();
        let saved = self.shared.store.save_access_entry(&entry);
        self.shared.metrics.store_result("save_list_entry", &saved);
        saved?;
        let previous = entries.insert((list, network), entry.clone());
        self.rebuild_access(&entries, &self.shared.policy.load());
        let created = previous.is_none_or(|p| !p.is_active(now));
        tracing::info!(list = list.label(), network = %network, expires_at = ?expires_at.map(Timestamp::rfc3339), comment, "list entry added");
        Ok(ListChange { entry, created })
    }

    /// Removes the API's entry for `network` from `list`, durably. Blocking.
    pub fn remove_from_list(
        &self,
        list: ListKind,
        network: IpNet,
    ) -> Result<AccessEntry, ListError> {
        let network = network.trunc();
        if self.in_policy_file(list, network) {
            return Err(ListError::DefinedInPolicyFile { list, network });
        }
        let now = self.shared.clock.now();
        let mut entries = self.api_entries();
        let Some(existing) = entries
            .get(&(list, network))
            .filter(|e| e.is_active(now))
            .cloned()
        else {
            return Err(ListError::NotListed { list, network });
        };
        let deleted = self.shared.store.delete_access_entry(list, network);
        self.shared
            .metrics
            .store_result("delete_list_entry", &deleted);
        deleted?;
        entries.remove(&(list, network));
        self.rebuild_access(&entries, &self.shared.policy.load());
        tracing::info!(list = list.label(), network = %network, "list entry removed");
        Ok(existing)
    }

    /// The entries of `list` in force, from the policy file and the API.
    pub fn list_entries(&self, list: ListKind) -> Vec<AccessEntry> {
        let now = self.shared.clock.now();
        self.shared
            .access
            .load()
            .entries(list, now)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Ends bans and list entries whose time is up, in memory and in the store. Blocking.
    pub fn sweep_expired(&self) -> Result<usize, StoreError> {
        let shared = &*self.shared;
        let now = shared.clock.now();
        let ended = shared.bans.take_expired(now);
        if !ended.is_empty() {
            shared
                .metrics
                .bans_lifted
                .with_label_values(&["expired"])
                .inc_by(ended.len() as u64);
            shared
                .metrics
                .active_bans
                .set(gauge_value(shared.bans.len()));
            for ban in &ended {
                tracing::info!(source = %ban.source, "ban expired");
            }
        }
        let deleted = shared.store.delete_expired_bans(now);
        shared.metrics.store_result("delete_expired_bans", &deleted);
        deleted?;

        let mut entries = self.api_entries();
        let before = entries.len();
        entries.retain(|_, e| e.is_active(now));
        if entries.len() != before {
            let deleted = shared.store.delete_expired_access_entries(now);
            shared
                .metrics
                .store_result("delete_expired_list_entries", &deleted);
            deleted?;
            self.rebuild_access(&entries, &shared.policy.load());
        }
        Ok(ended.len() + (before - entries.len()))
    }

    /// Puts a newly loaded policy in force. Counters, bans and list entries carry over;
    /// settings only a restart can change keep their old values and are named in the result.
    pub fn apply_policy(&self, mut new: Policy) -> Vec<&'static str> {
        let old = self.shared.policy.load_full();
        let mut kept = Vec::new();
        let mut keep = |name: &'static str, changed: bool| {
            if changed {
                kept.push(name);
            }
        };
        keep(
            RESTART_ONLY[0],
            new.server.policy_listen != old.server.policy_listen,
        );
        keep(
            RESTART_ONLY[1],
            new.server.admin_listen != old.server.admin_listen,
        );
        keep(
            RESTART_ONLY[2],
            new.server.state_dir != old.server.state_dir,
        );
        keep(
            RESTART_ONLY[3],
            new.autoban.max_tracked_sources != old.autoban.max_tracked_sources,
        );
        keep(RESTART_ONLY[4], new.log.level != old.log.level);
        keep(RESTART_ONLY[5], new.log.format != old.log.format);
        new.server.policy_listen = old.server.policy_listen;
        new.server.admin_listen = old.server.admin_listen;
        new.server.state_dir = old.server.state_dir.clone();
        new.autoban.max_tracked_sources = old.autoban.max_tracked_sources;
        new.log = old.log.clone();

        let entries = self.api_entries();
        self.shared.failures.set_window(new.autoban.window);
        self.rebuild_access(&entries, &new);
        self.shared.policy.store(Arc::new(new));
        kept
    }

    /// Brings gauges that are cheaper to read than to maintain up to date (before a scrape).
    pub fn refresh_gauges(&self) {
        let shared = &*self.shared;
        shared
            .metrics
            .tracked_sources
            .set(i64::try_from(shared.failures.tracked_sources()).unwrap_or(i64::MAX));
        shared
            .metrics
            .active_bans
            .set(gauge_value(shared.bans.len()));
        let access = shared.access.load();
        let now = shared.clock.now();
        for list in [ListKind::Trusted, ListKind::Blocked] {
            shared
                .metrics
                .list_entries
                .with_label_values(&[list.label()])
                .set(gauge_value(access.entries(list, now).len()));
        }
    }

    pub fn tracked_sources(&self) -> u64 {
        self.shared.failures.tracked_sources()
    }

    pub fn store_backend(&self) -> &'static str {
        self.shared.store.backend()
    }

    /// Leaves the store compact and consistent before the process exits. Blocking.
    pub fn close(&self) -> Result<(), StoreError> {
        self.shared.store.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{ConfigSource, Policy};
    use crate::store::SqliteStore;
    use crate::wire::{Command, parse_attempt};
    use std::time::Duration;

    const START: Timestamp = Timestamp(1_795_334_400_000);

    struct Harness {
        warden: Warden,
        clock: Arc<ManualClock>,
        store: Arc<SqliteStore>,
    }

    fn harness(toml: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, toml).unwrap();
        let policy = Policy::load_from(ConfigSource {
            path: &path,
            environment: Some(Default::default()),
        })
        .unwrap();
        let clock = Arc::new(ManualClock::starting_at(START));
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let warden = Warden::open(
            policy,
            store.clone(),
            clock.clone(),
            Metrics::new().unwrap(),
        )
        .unwrap();
        Harness {
            warden,
            clock,
            store,
        }
    }

    fn body(remote: &str, login: &str, pwhash: &str, extra: &str) -> String {
        format!(
            r#"{{"login":"{login}","pwhash":"{pwhash}","remote":"{remote}","protocol":"imap","device_id":"","session_id":"s"{extra}}}"#
        )
    }

    impl Harness {
        /// A new core on the same store and clock, as after a restart.
        fn restarted(&self) -> Warden {
            let policy = (*self.warden.policy()).clone();
            Warden::open(
                policy,
                self.store.clone(),
                self.clock.clone(),
                Metrics::new().unwrap(),
            )
            .unwrap()
        }

        fn allow(&self, remote: &str, login: &str) -> Reply {
            let text = body(remote, login, "0f96", "");
            let (attempt, _) = parse_attempt(text.as_bytes(), Command::Allow).unwrap();
            self.warden.allow(&attempt)
        }

        fn fail(&self, remote: &str, login: &str) {
            let text = body(
                remote,
                login,
                "0350",
                r#","success":false,"policy_reject":false"#,
            );
            let (attempt, outcome) = parse_attempt(text.as_bytes(), Command::Report).unwrap();
            if let Some(ban) = self.warden.report(&attempt, outcome.unwrap()) {
                self.warden.persist_ban(&ban).unwrap();
            }
        }

        fn report(&self, remote: &str, success: bool, policy_reject: bool) {
            let extra = format!(r#","success":{success},"policy_reject":{policy_reject}"#);
            let text = body(remote, "alice@example.com", "0350", &extra);
            let (attempt, outcome) = parse_attempt(text.as_bytes(), Command::Report).unwrap();
            assert!(self.warden.report(&attempt, outcome.unwrap()).is_none());
        }
    }

    #[test]
    fn five_failures_ban_the_source_for_every_account_and_the_message_says_until_when() {
        let h = harness("");
        for _ in 0..4 {
            h.fail("203.0.113.7", "alice@example.com");
        }
        assert_eq!(
            h.allow("203.0.113.7", "alice@example.com").status,
            0,
            "four failures do not ban"
        );
        h.fail("203.0.113.7", "alice@example.com");
        let refused = h.allow("203.0.113.7", "bob@example.com");
        assert_eq!(refused.status, -1);
        assert_eq!(
            refused.msg,
            "Too many failed logins from 203.0.113.7; try again after 08:30 UTC"
        );
        assert_eq!(
            h.allow("203.0.113.8", "alice@example.com").status,
            0,
            "another address is not affected"
        );
        let stored = h.store.active_bans(START).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].cause.login, "alice@example.com");
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_ban() {
        let h = harness("");
        for _ in 0..10 {
            h.fail("203.0.113.7", "alice@example.com");
            h.clock.advance(Duration::from_secs(5 * 60 + 1));
        }
        assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0);
    }

    #[test]
    fn a_ban_ends_after_thirty_minutes_and_the_sweep_removes_it_from_the_store() {
        let h = harness("");
        for _ in 0..5 {
            h.fail("203.0.113.7", "alice@example.com");
        }
        h.clock.advance(Duration::from_secs(29 * 60));
        assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, -1);
        h.clock.advance(Duration::from_secs(60));
        assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0);
        assert_eq!(h.warden.sweep_expired().unwrap(), 1);
        assert!(h.store.active_bans(Timestamp(0)).unwrap().is_empty());
    }

    #[test]
    fn policy_rejects_successes_and_trusted_failures_never_count() {
        let h = harness("[networks]\ntrusted = [\"192.0.2.0/24\"]\n");
        for _ in 0..10 {
            h.report("203.0.113.7", false, true);
            h.report("203.0.113.7", true, false);
            h.fail("192.0.2.5", "alice@example.com");
        }
        assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0);
        assert_eq!(h.allow("192.0.2.5", "alice@example.com").status, 0);
        assert!(h.warden.bans().is_empty());
    }

    #[test]
    fn blocked_networks_are_refused_with_their_own_message_and_trusted_hosts_inside_pass() {
        let h =
            harness("[networks]\nblocked = [\"198.51.100.0/24\"]\ntrusted = [\"198.51.100.10\"]\n");
        let refused = h.allow("198.51.100.9", "alice@example.com");
        assert_eq!(refused.status, -1);
        assert_eq!(
            refused.msg,
            "Logins from 198.51.100.9 are blocked by the administrator"
        );
        assert_eq!(h.allow("198.51.100.10", "alice@example.com").status, 0);
    }

    #[test]
    fn ipv6_clients_of_one_64_share_a_ban() {
        let h = harness("");
        for i in 1..=5 {
            h.fail(&format!("2001:db8:1:2::{i}"), "alice@example.com");
        }
        let refused = h.allow("2001:db8:1:2:ffff::1", "alice@example.com");
        assert_eq!(refused.status, -1);
        assert!(refused.msg.contains("2001:db8:1:2::/64"), "{}", refused.msg);
        assert_eq!(h.allow("2001:db8:1:3::1", "alice@example.com").status, 0);
    }

    #[test]
    fn unban_lifts_the_ban_and_clears_the_history() {
        let h = harness("");
        for _ in 0..5 {
            h.fail("203.0.113.7", "alice@example.com");
        }
        let source = h.warden.source_for("203.0.113.7/32".parse().unwrap());
        assert!(h.warden.unban(source).unwrap().is_some());
        assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0);
        assert!(h.store.active_bans(START).unwrap().is_empty());
        h.fail("203.0.113.7", "alice@example.com");
        assert_eq!(
            h.allow("203.0.113.7", "alice@example.com").status,
            0,
            "one new failure after an unban does not re-ban"
        );
        assert!(h.warden.unban(source).unwrap().is_none());
    }

    fn network(text: &str) -> IpNet {
        crate::network::parse_network(text).unwrap()
    }

    #[test]
    fn runtime_list_entries_decide_until_they_expire_and_survive_a_restart() {
        let h = harness("");
        let hour = Duration::from_secs(3600);
        h.warden
            .add_to_list(
                ListKind::Blocked,
                network("198.51.100.0/24"),
                Some(START.plus(hour)),
                "spam run",
            )
            .unwrap();
        h.warden
            .add_to_list(
                ListKind::Trusted,
                network("198.51.100.10"),
                None,
                "monitoring",
            )
            .unwrap();
        assert_eq!(h.allow("198.51.100.9", "alice@example.com").status, -1);
        assert_eq!(h.allow("198.51.100.10", "alice@example.com").status, 0);

        let reopened = h.restarted();
        assert!(matches!(
            reopened.decide(Some("198.51.100.9".parse().unwrap())),
            Decision::Reject(_)
        ));

        h.clock.advance(hour);
        assert_eq!(
            h.allow("198.51.100.9", "alice@example.com").status,
            0,
            "expired at once, before any sweep"
        );
        assert_eq!(h.warden.sweep_expired().unwrap(), 1);
        assert_eq!(h.store.access_entries().unwrap().len(), 1);
        assert_eq!(h.warden.list_entries(ListKind::Blocked).len(), 0);
    }

    #[test]
    fn policy_file_entries_cannot_be_changed_through_the_api() {
        let h = harness("[networks]\nblocked = [\"10.0.0.0/8\"]\n");
        let net = network("10.0.0.0/8");
        assert!(matches!(
            h.warden.remove_from_list(ListKind::Blocked, net),
            Err(ListError::DefinedInPolicyFile { .. })
        ));
        assert!(matches!(
            h.warden.add_to_list(ListKind::Blocked, net, None, ""),
            Err(ListError::DefinedInPolicyFile { .. })
        ));
        assert!(matches!(
            h.warden
                .remove_from_list(ListKind::Blocked, network("10.1.0.0/16")),
            Err(ListError::NotListed { .. })
        ));
        assert!(matches!(
            h.warden
                .add_to_list(ListKind::Blocked, network("10.1.0.0/16"), Some(START), ""),
            Err(ListError::ExpiryInPast)
        ));
        let entries = h.warden.list_entries(ListKind::Blocked);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].origin, Origin::PolicyFile);
    }

    #[test]
    fn a_reloaded_policy_changes_thresholds_and_file_lists_but_keeps_counts_bans_and_api_entries() {
        let h = harness("");
        for _ in 0..5 {
            h.fail("203.0.113.7", "alice@example.com");
        }
        h.fail("203.0.113.8", "alice@example.com");
        h.fail("203.0.113.8", "alice@example.com");
        h.warden
            .add_to_list(ListKind::Blocked, network("198.51.100.0/24"), None, "")
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let state_dir = h.warden.policy().server.state_dir.display().to_string();
        let text = format!(
            "[server]\npolicy_listen = \"127.0.0.1:9999\"\nstate_dir = {state_dir:?}\n\
             [autoban]\nmax_failures = 3\n[networks]\ntrusted = [\"192.0.2.0/24\"]\n"
        );
        std::fs::write(&path, text).unwrap();
        let new = Policy::load_from(ConfigSource {
            path: &path,
            environment: Some(Default::default()),
        })
        .unwrap();
        let kept = h.warden.apply_policy(new);
        assert_eq!(kept, vec!["server.policy_listen"]);
        assert_eq!(
            h.warden.policy().server.policy_listen.to_string(),
            "127.0.0.1:8180"
        );

        assert_eq!(
            h.allow("203.0.113.7", "alice@example.com").status,
            -1,
            "the ban carried over"
        );
        h.fail("203.0.113.8", "alice@example.com");
        assert_eq!(
            h.allow("203.0.113.8", "alice@example.com").status,
            -1,
            "two counted before the reload plus one reach the new threshold of 3"
        );
        assert_eq!(
            h.allow("198.51.100.1", "alice@example.com").status,
            -1,
            "API entries carried over"
        );
        assert_eq!(
            h.warden.list_entries(ListKind::Trusted)[0].network,
            network("192.0.2.0/24")
        );
    }

    #[test]
    fn the_explanation_names_what_decided_without_changing_anything() {
        let h = harness("[networks]\nblocked = [\"198.51.100.0/24\"]\n");
        h.warden
            .add_to_list(ListKind::Trusted, network("192.0.2.7"), None, "monitoring")
            .unwrap();
        for _ in 0..5 {
            h.fail("203.0.113.7", "alice@example.com");
        }
        h.fail("203.0.113.8", "bob@example.com");
        let explain = |ip: &str| h.warden.explain(ip.parse().unwrap());
        let banned = explain("203.0.113.7");
        assert_eq!(banned.reply.status, -1);
        assert!(banned.summary().starts_with("refused: 203.0.113.7 is banned until 2026-11-22 08:30:00 UTC after 5 failed logins; last failed login alice@example.com over imap"), "{}", banned.summary());
        assert_eq!(
            explain("198.51.100.3").summary(),
            "refused: 198.51.100.3 is blocked by 198.51.100.0/24 in policy.toml"
        );
        assert_eq!(
            explain("192.0.2.7").summary(),
            "allowed: 192.0.2.7 is trusted by 192.0.2.7/32 in the admin API (monitoring); it is never banned"
        );
        assert_eq!(
            explain("203.0.113.8").summary(),
            "allowed: 203.0.113.8 has 1 of 5 failed logins in the current window"
        );
        for _ in 0..10 {
            explain("203.0.113.8");
        }
        assert_eq!(
            h.warden
                .metrics()
                .decisions
                .with_label_values(&["allow", "none", "imap"])
                .get(),
            0,
            "no metrics from a dry run"
        );
        assert_eq!(explain("203.0.113.8").failures_in_window, 1);
    }

    #[test]
    fn bans_in_the_store_are_in_force_after_a_restart() {
        let h = harness("");
        for _ in 0..5 {
            h.fail("203.0.113.7", "alice@example.com");
        }
        let reopened = h.restarted();
        assert_eq!(reopened.bans().len(), 1);
        assert!(matches!(
            reopened.decide(Some("203.0.113.7".parse().unwrap())),
            Decision::Reject(_)
        ));
    }
}
