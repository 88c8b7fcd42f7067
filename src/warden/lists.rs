//! The admin lists on the `Warden`: adding and removing the API's blocked and trusted entries
//! (stored before they take effect), listing them with the policy file's, and expiring them.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use ipnet::IpNet;

use super::{Warden, lock};
use crate::access::{AccessEntry, AccessLists, ListKind, Origin};
use crate::audit::AuditAction;
use crate::clock::Timestamp;
use crate::config::Policy;
use crate::principal::Principal;
use crate::store::StoreError;

/// Why a change to the admin lists was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{network} is on the {} list in the policy file; edit the file and reload to change it", list.label())]
    DefinedInPolicyFile { list: ListKind, network: IpNet },
    /// Lift and trust would carve a trusted network out of a blocked one, which is a decision
    /// for whoever manages the lists, not for the support desk's ban button.
    #[error(
        "{network} is inside the blocked network {blocked}: trusting it would unblock it; an admin can trust it with the trusted list"
    )]
    InsideBlocked { network: IpNet, blocked: IpNet },
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

type ApiEntries = HashMap<(ListKind, IpNet), AccessEntry>;

/// The combined snapshot of the policy file's entries and the API's.
pub(super) fn build_access(policy: &Policy, api_entries: &ApiEntries, now: Timestamp) -> AccessLists {
    let entry = move |list, network: &IpNet, observe| AccessEntry {
        list,
        network: *network,
        comment: String::new(),
        created_at: now,
        expires_at: None,
        origin: Origin::PolicyFile,
        added_by: String::new(),
        observe,
    };
    let networks = &policy.networks;
    let trusted = networks.trusted.iter().map(move |n| entry(ListKind::Trusted, n, false));
    let blocked = networks.blocked.iter().map(move |n| entry(ListKind::Blocked, n, false));
    let observed = networks.blocked_observe.iter().map(move |n| entry(ListKind::Blocked, n, true));
    AccessLists::build(trusted.chain(blocked).chain(observed).chain(api_entries.values().cloned()))
}

impl Warden {
    pub(super) fn api_entries(&self) -> MutexGuard<'_, ApiEntries> {
        lock(&self.shared.api_entries)
    }

    /// Rebuilds the combined lists; called with the API entries locked, so concurrent changes
    /// rebuild in order.
    pub(super) fn rebuild_access(&self, api_entries: &ApiEntries) {
        let lists = build_access(&self.shared.policy.load(), api_entries, self.shared.clock.now());
        self.shared.access.store(Arc::new(lists));
        self.lists_changed();
    }

    fn in_policy_file(&self, list: ListKind, network: IpNet) -> bool {
        let policy = self.shared.policy.load();
        let file = match list {
            ListKind::Trusted => &policy.networks.trusted,
            ListKind::Blocked => &policy.networks.blocked,
        };
        file.contains(&network) || (list == ListKind::Blocked && policy.networks.blocked_observe.contains(&network))
    }

    /// Adds `network` to `list` (or replaces the API's entry for it), durably, recorded as
    /// `actor`'s. Blocking.
    pub fn add_to_list(
        &self,
        list: ListKind,
        network: IpNet,
        expires_at: Option<Timestamp>,
        comment: &str,
        observe: bool,
        actor: &Principal,
    ) -> Result<ListChange, ListError> {
        let change = self.put_list_entry(list, network, expires_at, comment, observe, &actor.name)?;
        let expiry = expires_at.map_or_else(|| "no expiry".to_string(), |t| format!("until {}", t.rfc3339()));
        let mode = if change.entry.observe { ", observe" } else { "" };
        let detail = format!("{}{mode}, {expiry}, comment {comment:?}", list.label());
        self.record_change(actor, AuditAction::ListEntryAdded, &change.entry.network.to_string(), detail);
        Ok(change)
    }

    /// `add_to_list` without its audit record, for changes that record themselves.
    pub(super) fn put_list_entry(
        &self,
        list: ListKind,
        network: IpNet,
        expires_at: Option<Timestamp>,
        comment: &str,
        observe: bool,
        added_by: &str,
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
            added_by: added_by.to_string(),
            observe: observe && list == ListKind::Blocked,
        };
        let mut entries = self.api_entries();
        let saved = self.shared.store.save_access_entry(&entry);
        self.shared.metrics.store_result("save_list_entry", &saved);
        saved?;
        let previous = entries.insert((list, network), entry.clone());
        self.rebuild_access(&entries);
        let created = previous.is_none_or(|p| !p.is_active(now));
        self.notify_durably(crate::notify::Notice::list_changed(&entry, "added", now, Some(added_by)));
        tracing::info!(list = list.label(), network = %network, expires_at = ?expires_at.map(Timestamp::rfc3339), comment, "list entry added");
        Ok(ListChange { entry, created })
    }

    /// Removes the API's entry for `network` from `list`, durably. Blocking.
    pub fn remove_from_list(
        &self,
        list: ListKind,
        network: IpNet,
        actor: &Principal,
    ) -> Result<AccessEntry, ListError> {
        let network = network.trunc();
        if self.in_policy_file(list, network) {
            return Err(ListError::DefinedInPolicyFile { list, network });
        }
        let now = self.shared.clock.now();
        let mut entries = self.api_entries();
        let Some(existing) = entries.get(&(list, network)).filter(|e| e.is_active(now)).cloned() else {
            return Err(ListError::NotListed { list, network });
        };
        let deleted = self.shared.store.delete_access_entry(list, network);
        self.shared.metrics.store_result("delete_list_entry", &deleted);
        deleted?;
        entries.remove(&(list, network));
        self.rebuild_access(&entries);
        let by = Some(actor.name.as_str());
        self.notify_durably(crate::notify::Notice::list_changed(&existing, "removed", now, by));
        tracing::info!(list = list.label(), network = %network, "list entry removed");
        self.record_change(actor, AuditAction::ListEntryRemoved, &network.to_string(), list.label().to_string());
        Ok(existing)
    }

    /// The entries of `list` in force, from the policy file and the API.
    pub fn list_entries(&self, list: ListKind) -> Vec<AccessEntry> {
        let now = self.shared.clock.now();
        self.shared.access.load().entries(list, now).into_iter().cloned().collect()
    }

    /// Drops the API's entries that have ended, from memory and the store. Blocking.
    pub(super) fn sweep_expired_entries(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut entries = self.api_entries();
        let before = entries.len();
        entries.retain(|_, e| e.is_active(now));
        if entries.len() == before {
            return Ok(0);
        }
        let deleted = self.shared.store.delete_expired_access_entries(now);
        self.shared.metrics.store_result("delete_expired_list_entries", &deleted);
        deleted?;
        self.rebuild_access(&entries);
        Ok(before - entries.len())
    }
}
