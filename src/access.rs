//! The admin's lists: trusted networks (never banned) and blocked networks (always refused),
//! from policy.toml and from the admin API, each entry with an optional expiry and a comment.
//! `AccessLists` is the combined, read-only snapshot the per-login path matches against;
//! it is rebuilt whole when an entry is added, removed or expires, or the policy is reloaded.
//! Nothing here does I/O; `warden` keeps the snapshot and writes entries through the store.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::clock::Timestamp;
use crate::network::NetworkMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    Trusted,
    Blocked,
}

impl ListKind {
    pub fn label(self) -> &'static str {
        match self {
            ListKind::Trusted => "trusted",
            ListKind::Blocked => "blocked",
        }
    }

    pub fn from_label(label: &str) -> Option<ListKind> {
        match label {
            "trusted" => Some(ListKind::Trusted),
            "blocked" => Some(ListKind::Blocked),
            _ => None,
        }
    }
}

/// A list entry's comment: at most 200 characters on one line (it goes into notices, the
/// audit trail and CSV files). The message names the field.
pub fn checked_comment(comment: &str) -> Result<String, String> {
    if comment.chars().count() > 200 {
        return Err("comment: longer than 200 characters".into());
    }
    if comment.chars().any(char::is_control) {
        return Err("comment: must be one line without control characters".into());
    }
    Ok(comment.to_string())
}

/// Where an entry was made. Entries from policy.toml are the admin's baseline: shown, but not
/// removable through the API (edit the file and reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    PolicyFile,
    Api,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::PolicyFile => "policy_file",
            Origin::Api => "api",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub list: ListKind,
    pub network: IpNet,
    pub comment: String,
    /// When the entry was made (for file entries: when the policy was loaded).
    pub created_at: Timestamp,
    /// `None`: until removed.
    pub expires_at: Option<Timestamp>,
    pub origin: Origin,
    /// The name of the token that made it through the API; empty for the policy file's, and
    /// for entries stored before tokens had names.
    pub added_by: String,
    /// A blocked entry in observe mode: what it would refuse is recorded, nothing is refused.
    pub observe: bool,
}

impl AccessEntry {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|end| now < end)
    }

    /// Brings the entry's times into `clock::EARLIEST..=LATEST` and says whether one was
    /// outside (a stored entry damaged or written by hand).
    pub fn clamp_times(&mut self) -> bool {
        let before = (self.created_at, self.expires_at);
        self.created_at = self.created_at.clamped();
        self.expires_at = self.expires_at.map(Timestamp::clamped);
        before != (self.created_at, self.expires_at)
    }
}

/// Where an address stands on the lists at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// On the trusted list (and not on a more specific blocked entry): never banned.
    Trusted(IpNet),
    /// On the blocked list (and not on an equally or more specific trusted entry): always refused.
    Blocked(IpNet),
    /// As `Blocked`, by an entry in observe mode: recorded as "would refuse", not refused.
    ObservedBlock(IpNet),
    Unlisted,
}

/// Both lists, combined from every origin, with their precedence: the most specific entry
/// wins, and on equal prefixes trusted wins, so an admin can carve a trusted host out of a
/// blocked range, and listing one network on both never locks anyone out by surprise.
#[derive(Debug, Clone, Default)]
pub struct AccessLists {
    trusted: NetworkMap<AccessEntry>,
    blocked: NetworkMap<AccessEntry>,
}

impl AccessLists {
    /// Builds the snapshot. Where two entries name the same network on the same list, the
    /// policy file's wins (the API refuses to shadow it anyway).
    pub fn build(entries: impl IntoIterator<Item = AccessEntry>) -> AccessLists {
        let mut lists = AccessLists::default();
        for entry in entries {
            let map = lists.map_mut(entry.list);
            let keep_existing = map.get(entry.network).is_some_and(|e| e.origin == Origin::PolicyFile);
            if !keep_existing {
                map.insert(entry.network, entry);
            }
        }
        lists
    }

    fn map(&self, list: ListKind) -> &NetworkMap<AccessEntry> {
        match list {
            ListKind::Trusted => &self.trusted,
            ListKind::Blocked => &self.blocked,
        }
    }

    fn map_mut(&mut self, list: ListKind) -> &mut NetworkMap<AccessEntry> {
        match list {
            ListKind::Trusted => &mut self.trusted,
            ListKind::Blocked => &mut self.blocked,
        }
    }

    /// Where `ip` stands at `now`; expired entries are ignored.
    pub fn standing(&self, ip: IpAddr, now: Timestamp) -> Standing {
        if self.trusted.is_empty() && self.blocked.is_empty() {
            return Standing::Unlisted;
        }
        let active = |entry: &AccessEntry| entry.is_active(now);
        let trusted = self.trusted.longest_match_where(ip, active).map(|(net, _)| net);
        let blocked = self.blocked.longest_match_where(ip, active);
        let block = |(net, entry): (IpNet, &AccessEntry)| {
            if entry.observe { Standing::ObservedBlock(net) } else { Standing::Blocked(net) }
        };
        match (trusted, blocked) {
            (Some(t), Some(b)) if b.0.prefix_len() > t.prefix_len() => block(b),
            (Some(t), _) => Standing::Trusted(t),
            (None, Some(b)) => block(b),
            (None, None) => Standing::Unlisted,
        }
    }

    /// The entry for exactly `network` on `list`, expired or not.
    pub fn entry(&self, list: ListKind, network: IpNet) -> Option<&AccessEntry> {
        self.map(list).get(network)
    }

    /// The entries of `list` in force at `now`, file entries first, then by network.
    pub fn entries(&self, list: ListKind, now: Timestamp) -> Vec<&AccessEntry> {
        let mut entries: Vec<&AccessEntry> =
            self.map(list).iter().map(|(_, e)| e).filter(|e| e.is_active(now)).collect();
        entries.sort_by_key(|e| (e.origin != Origin::PolicyFile, e.network));
        entries
    }

    /// The earliest expiry among all entries still in force: when the snapshot next changes.
    pub fn next_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.trusted.iter().chain(self.blocked.iter()).filter_map(|(_, e)| e.expires_at).filter(|end| *end > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{parse_ip, parse_network};
    use std::time::Duration;

    const NOW: Timestamp = Timestamp(1_795_334_400_000);

    fn entry(list: ListKind, network: &str, origin: Origin, expires_in: Option<u64>) -> AccessEntry {
        AccessEntry {
            observe: false,
            list,
            network: parse_network(network).unwrap(),
            comment: String::new(),
            created_at: NOW,
            expires_at: expires_in.map(|s| NOW.plus(Duration::from_secs(s))),
            origin,
            added_by: String::new(),
        }
    }

    fn standing(lists: &AccessLists, ip: &str, at: Timestamp) -> Standing {
        lists.standing(parse_ip(ip).unwrap(), at)
    }

    #[test]
    fn the_more_specific_entry_wins_and_ties_go_to_trusted() {
        use ListKind::*;
        let lists = AccessLists::build([
            entry(Blocked, "198.51.100.0/24", Origin::PolicyFile, None),
            entry(Trusted, "198.51.100.10", Origin::Api, None),
            entry(Trusted, "192.0.2.0/24", Origin::Api, None),
            entry(Blocked, "192.0.2.0/24", Origin::Api, None),
            entry(Trusted, "203.0.113.0/24", Origin::PolicyFile, None),
            entry(Blocked, "203.0.113.66", Origin::Api, None),
        ]);
        let net = |n: &str| parse_network(n).unwrap();
        assert_eq!(standing(&lists, "198.51.100.10", NOW), Standing::Trusted(net("198.51.100.10")));
        assert_eq!(standing(&lists, "198.51.100.11", NOW), Standing::Blocked(net("198.51.100.0/24")));
        assert_eq!(standing(&lists, "192.0.2.1", NOW), Standing::Trusted(net("192.0.2.0/24")));
        assert_eq!(standing(&lists, "203.0.113.66", NOW), Standing::Blocked(net("203.0.113.66")));
        assert_eq!(standing(&lists, "8.8.8.8", NOW), Standing::Unlisted);
    }

    #[test]
    fn expired_entries_stop_matching_and_the_wider_entry_shows_through() {
        use ListKind::*;
        let lists = AccessLists::build([
            entry(Blocked, "198.51.100.0/24", Origin::Api, Some(3600)),
            entry(Trusted, "198.51.100.7", Origin::Api, Some(60)),
        ]);
        let later = NOW.plus(Duration::from_secs(61));
        assert!(matches!(standing(&lists, "198.51.100.7", NOW), Standing::Trusted(_)));
        assert!(matches!(standing(&lists, "198.51.100.7", later), Standing::Blocked(_)));
        assert_eq!(standing(&lists, "198.51.100.7", NOW.plus(Duration::from_secs(3600))), Standing::Unlisted);
        assert_eq!(lists.next_expiry(NOW), Some(NOW.plus(Duration::from_secs(60))));
        assert_eq!(lists.entries(Trusted, later).len(), 0);
    }

    #[test]
    fn a_policy_file_entry_is_not_shadowed_by_an_api_entry_for_the_same_network() {
        use ListKind::*;
        let lists = AccessLists::build([
            entry(Blocked, "10.0.0.0/8", Origin::PolicyFile, None),
            entry(Blocked, "10.0.0.0/8", Origin::Api, Some(10)),
        ]);
        let kept = lists.entry(Blocked, parse_network("10.0.0.0/8").unwrap()).unwrap();
        assert_eq!(kept.origin, Origin::PolicyFile);
        assert_eq!(kept.expires_at, None);
    }
}
