//! Keeping a node in step with the others (cluster mode): what `cluster` calls when another
//! node changed the shared store, the full reread under the announcements (and after an
//! outage), putting back what a store that lost its data no longer holds, and the bans and
//! quarantines that the cluster-wide failure counts call for. Never on the per-login path;
//! the methods that read or write the store block.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::detection::{self, BanTrigger, Counted, CountedFailure};
use super::{Warden, gauge_value, lock};
use crate::access::AccessEntry;
use crate::bans::{Ban, BanKey, BanReason};
use crate::clock::Timestamp;
use crate::cluster::counting::SharedCount;
use crate::failures::{Counting, FailedGuess};
use crate::firewall::RuleSet;
use crate::network::Source;
use crate::store::StoreError;

/// A ban in memory that the store does not hold is kept by a reread when it is younger than
/// this: it may still be on its way to the store.
const IN_FLIGHT: Duration = Duration::from_secs(10);

/// What a full reread changed in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resynced {
    pub bans_added: usize,
    pub bans_removed: usize,
    pub list_entries: usize,
    pub rule_sets: usize,
}

/// What putting back the node's state into an emptied store wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub bans: usize,
    pub list_entries: usize,
    pub rule_sets: usize,
}

impl Warden {
    /// Hands every counted failure and success to `share` from now on (set once, at start).
    pub fn share_counts(&self, share: Box<dyn Fn(Counted) + Send + Sync>) {
        if self.shared.count_sharing.set(share).is_err() {
            tracing::warn!("failure counts are already shared");
        }
    }

    /// Names guesses with the cluster's secret, so every node gives a guess the same key.
    pub fn share_fingerprint_key(&self, key: [u8; 16]) {
        self.shared.failures.share_fingerprint_key(key);
    }

    /// The counting rules in force.
    pub fn counting(&self) -> Counting {
        detection::counting(&self.shared.policy.load())
    }

    /// A ban another node placed (or that a reread found): in force here from now on.
    pub fn adopt_ban(&self, ban: Ban) {
        let shared = &*self.shared;
        if !ban.is_active(shared.clock.now()) {
            return;
        }
        let (source, whole_source) = (ban.source, ban.refused_login.is_none());
        shared.bans.insert(Arc::new(ban));
        if whole_source {
            shared.failures.forget(source);
        }
        shared.metrics.active_bans.set(gauge_value(shared.bans.len()));
    }

    /// The ban on `source` (`refused_login`: that login's IP+login refusal) was lifted on
    /// another node.
    pub fn drop_ban(&self, source: Source, refused_login: Option<&str>) {
        let shared = &*self.shared;
        // The lift is newer than a ban placed here that waits for the store: it is not saved.
        lock(&shared.unsaved_bans).remove(&(source, refused_login.map(str::to_string)));
        let removed = shared.bans.remove(source, refused_login);
        let now = shared.clock.now();
        match refused_login {
            Some(login) => shared.failures.forgive_login(source, login, now),
            None => shared.failures.forget(source),
        }
        shared.metrics.active_bans.set(gauge_value(shared.bans.len()));
        if removed.is_some_and(|ban| ban.is_active(now)) {
            shared.metrics.bans_lifted.with_label_values(&["other_node"]).inc();
            tracing::info!(source = %source, login = refused_login, "ban lifted on another node");
        }
    }

    /// The API's list entries as the store holds them now.
    pub fn adopt_access_entries(&self, entries: Vec<AccessEntry>) {
        let mut api_entries = self.api_entries();
        *api_entries = entries.into_iter().map(|e| ((e.list, e.network), e)).collect();
        self.rebuild_access(&api_entries);
    }

    /// The API's rule set for `key` as the store holds it now (`None`: there is none).
    pub fn adopt_rule_set(&self, key: &str, rule_set: Option<RuleSet>) {
        let mut sets = self.api_rule_sets();
        let unchanged = sets.get(key) == rule_set.as_ref();
        if unchanged {
            return;
        }
        match rule_set {
            Some(set) => sets.insert(key.to_string(), set),
            None => sets.remove(key),
        };
        self.rebuild_firewall(&sets);
        tracing::info!(key, "firewall rules changed on another node");
    }

    /// Rereads the bans, list entries, rule sets and tokens from the store and makes memory
    /// match it, keeping bans placed here a moment ago that may still be on their way. Blocking.
    pub fn resync(&self) -> Result<Resynced, StoreError> {
        self.reload_tokens()?;
        let shared = &*self.shared;
        let now = shared.clock.now();
        let stored = shared.store.active_bans(now);
        shared.metrics.store_result("load_bans", &stored);
        let stored: HashMap<BanKey, Ban> = stored?.into_iter().map(|b| (b.key(), b)).collect();
        let entries = shared.store.access_entries();
        shared.metrics.store_result("load_list_entries", &entries);
        let entries = entries?;
        let sets = shared.store.firewall_rule_sets();
        shared.metrics.store_result("load_firewall_rules", &sets);
        let sets: HashMap<String, RuleSet> = sets?.into_iter().map(|s| (s.key, s.rule_set)).collect();

        let mut resynced = Resynced { list_entries: entries.len(), rule_sets: sets.len(), ..Resynced::default() };
        let unsaved = lock(&shared.unsaved_bans);
        for held in shared.bans.list(now) {
            let key = held.key();
            let in_flight = held.created_at > now.minus(IN_FLIGHT) || unsaved.contains_key(&key);
            if !stored.contains_key(&key) && !in_flight {
                shared.bans.remove(held.source, held.refused_login());
                resynced.bans_removed += 1;
            }
        }
        drop(unsaved);
        for ((source, refused_login), ban) in stored {
            let known = match &refused_login {
                Some(login) => shared.bans.login_refusal(source, login, now),
                None => shared.bans.active(source, now),
            };
            if known.as_deref() != Some(&ban) {
                resynced.bans_added += usize::from(known.is_none());
                shared.bans.insert(Arc::new(ban));
                if refused_login.is_none() {
                    shared.failures.forget(source);
                }
            }
        }
        shared.metrics.active_bans.set(gauge_value(shared.bans.len()));
        self.adopt_access_entries(entries);
        let mut api_sets = self.api_rule_sets();
        if *api_sets != sets {
            *api_sets = sets;
            self.rebuild_firewall(&api_sets);
        }
        Ok(resynced)
    }

    /// Whether bans placed here wait for the store.
    pub fn has_unsaved_bans(&self) -> bool {
        !lock(&self.shared.unsaved_bans).is_empty()
    }

    /// Stores the bans placed while the store could not take them. Blocking.
    pub fn save_unsaved_bans(&self) -> Result<usize, StoreError> {
        let shared = &*self.shared;
        let pending: Vec<Arc<Ban>> = lock(&shared.unsaved_bans).values().cloned().collect();
        let now = shared.clock.now();
        let mut saved = 0;
        for ban in pending {
            if ban.refused_login.is_none() {
                // Another node lifted the source's ban, or banned it anew, once the store was
                // back and before this node could store its own: the newer word stands. Its
                // announcement (or the reread after a missed one) brings it here.
                let superseded = shared.store.forgiven_since(ban.source, ban.created_at);
                shared.metrics.store_result("read_forgiven", &superseded);
                if superseded? {
                    lock(&shared.unsaved_bans).remove(&ban.key());
                    continue;
                }
            }
            if ban.is_active(now) {
                let result = shared.store.save_ban(&ban);
                shared.metrics.store_result("save_ban", &result);
                result?;
                saved += 1;
            }
            lock(&shared.unsaved_bans).remove(&ban.key());
        }
        Ok(saved)
    }

    /// Writes every ban, list entry and rule set this node holds to the store, for a store that
    /// came back without its data. Blocking.
    pub fn restore_store(&self) -> Result<Restored, StoreError> {
        let shared = &*self.shared;
        let mut restored = Restored::default();
        for ban in shared.bans.list(shared.clock.now()) {
            let result = shared.store.save_ban(&ban);
            shared.metrics.store_result("save_ban", &result);
            result?;
            restored.bans += 1;
        }
        let entries: Vec<AccessEntry> = self.api_entries().values().cloned().collect();
        for entry in entries {
            let result = shared.store.save_access_entry(&entry);
            shared.metrics.store_result("save_list_entry", &result);
            result?;
            restored.list_entries += 1;
        }
        let sets: Vec<(String, RuleSet)> = self.api_rule_sets().iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        for (key, set) in sets {
            let result = shared.store.save_firewall_rule_set(&key, &set);
            shared.metrics.store_result("save_firewall_rules", &result);
            result?;
            restored.rule_sets += 1;
        }
        Ok(restored)
    }

    /// Bans `failure.source` when the cluster-wide count of its distinct guesses (`distinct`,
    /// of `count`) calls for it and no node has yet, or else refuses the failure's login from
    /// there when its own guesses call for that (an established source). The caller stores
    /// the ban (`persist_ban`).
    pub fn ban_from_shared_count(
        &self,
        failure: &CountedFailure,
        distinct: u32,
        count: &SharedCount,
        window: Duration,
    ) -> Option<Arc<Ban>> {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let already_banned = shared.bans.active(failure.source, now).is_some();
        let earned = self.tolerance_earned(failure.source, now, &policy);
        let threshold = crate::engine::source_ban_threshold(&policy.autoban, earned);
        let trigger = BanTrigger {
            login: &failure.login,
            protocol: failure.protocol,
            device_id: &failure.device_id,
            address: failure.address,
        };
        if crate::engine::bans_source(distinct, already_banned, threshold) {
            let guesses = count.ban_guesses(failure.at, window, None);
            let ban = self.place_ban(trigger, failure.source, BanReason::Autoban, distinct, guesses, now, &policy)?;
            if let Some(subnet_ban) = self.ban_subnet_after(&ban, trigger, now, &policy) {
                // Stored here; the source's ban by the caller's `persist_ban`. On failure it
                // stays in force here and waits like any unsaved ban.
                let _ = self.persist_ban(&subnet_ban);
            }
            return Some(ban);
        }
        if already_banned || earned == 0 {
            return None;
        }
        let login_failures = count.login_distinct_in_window(&failure.login, failure.at, window);
        let guesses = count.ban_guesses(failure.at, window, Some(&failure.login));
        self.refuse_login_when_due(trigger, failure.source, login_failures, guesses, earned, now, &policy)
    }

    /// A guess that failed `failures` times across the cluster is refused from `source` until
    /// `until`, on this node too.
    pub fn adopt_quarantine(&self, source: Source, guess: FailedGuess<'_>, failures: u32, until: Timestamp) {
        let shared = &*self.shared;
        let now = shared.clock.now();
        if until > now {
            shared.failures.adopt_quarantine(source, guess, failures, now, until);
        }
    }
}
