//! Active bans: the record of a ban, and the in-memory index the per-login path reads. The
//! index mirrors the durable store (which `warden` writes through) and is never bounded or
//! evicted, so losing failure history to memory pressure can never lift a ban.
//!
//! A ban refuses every login from its source, or, as an IP+login refusal
//! (`Ban::refused_login`), one login from it: what an established source gets when its wrong
//! guesses concentrate on one account. Both are one record, stored, announced, listed,
//! lifted and swept alike; only the index keeps them apart, so a source ban is still one
//! probe and a source without refusals costs `allow` one empty-map check.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::clock::Timestamp;
use crate::hashing::KeyedMap;
use crate::network::{Source, SourceGrouping};

/// Why a ban exists; the store keeps the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// `max_failures` distinct wrong guesses (plus tolerance) within the window.
    Autoban,
    /// `long_max_failures` distinct wrong guesses (plus tolerance) within the long window: a
    /// slow guesser.
    LongWindow,
    /// `subnet_bans` sources of one subnet banned within `subnet_window`: the ban is on the
    /// subnet.
    Subnet,
}

impl BanReason {
    pub const ALL: [BanReason; 3] = [BanReason::Autoban, BanReason::LongWindow, BanReason::Subnet];

    pub fn label(self) -> &'static str {
        match self {
            BanReason::Autoban => "autoban",
            BanReason::LongWindow => "long_window",
            BanReason::Subnet => "subnet",
        }
    }

    pub fn from_label(label: &str) -> Option<BanReason> {
        BanReason::ALL.into_iter().find(|reason| reason.label() == label)
    }
}

/// What led to the ban, so support staff (and the locked-out user) can tell which accounts,
/// protocols and devices caused it: the last counted failure, and every distinct wrong guess
/// in the window. Never a password hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BanCause {
    pub login: String,
    pub protocol: String,
    pub device_id: String,
    pub guesses: Vec<BanGuess>,
}

/// One distinct wrong guess that counted toward a ban.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BanGuess {
    pub login: String,
    pub protocol: String,
    pub device_id: String,
    /// Failures of this guess (a stale device retries the same one).
    pub failures: u32,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// A ban's source and, for an IP+login refusal, the login refused.
pub type BanKey = (Source, Option<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub source: Source,
    /// The one login this ban refuses from `source` (its `login::key`): an IP+login refusal.
    /// `None`: every login from the source is refused.
    pub refused_login: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub reason: BanReason,
    /// Failures counted in the window when the ban was placed.
    pub failures: u32,
    pub cause: BanCause,
}

impl Ban {
    pub fn is_active(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// Brings every time of the ban into `clock::EARLIEST..=LATEST` and says whether one was
    /// outside: for a ban read back from a store that was damaged or written by hand. A ban
    /// that ends too late stays in force (until the year 9999), never lifted by the repair.
    pub fn clamp_times(&mut self) -> bool {
        let mut clamped = false;
        let mut clamp = |millis: &mut i64| match Timestamp::in_range(*millis) {
            Ok(_) => {}
            Err(nearest) => {
                *millis = nearest.0;
                clamped = true;
            }
        };
        clamp(&mut self.created_at.0);
        clamp(&mut self.expires_at.0);
        for guess in &mut self.cause.guesses {
            clamp(&mut guess.first_seen);
            clamp(&mut guess.last_seen);
        }
        clamped
    }

    /// What the ban refuses: its source, and the login for an IP+login refusal. A source holds
    /// at most one ban of each key.
    pub fn key(&self) -> BanKey {
        (self.source, self.refused_login.clone())
    }

    /// The login refused, for an IP+login refusal.
    pub fn refused_login(&self) -> Option<&str> {
        self.refused_login.as_deref()
    }

    /// "203.0.113.7", or "alice@example.com from 203.0.113.7" for an IP+login refusal.
    pub fn describe(&self) -> String {
        match self.refused_login() {
            Some(login) => format!("{login} from {}", self.source),
            None => self.source.to_string(),
        }
    }
}

/// Active bans by source. A ban covers the network it was placed on whatever the grouping
/// in force later (a reload may change `autoban.ipv4_prefix`), so an address is looked up at
/// each prefix length that some ban has: one hash probe while every ban has the same length,
/// as they do unless the grouping changed. Writes are rare (a ban placed, lifted or expired).
#[derive(Default)]
pub struct BanIndex {
    inner: RwLock<Bans>,
    /// Whether any IP+login refusal is held (`Bans::by_login` is not empty), kept beside the
    /// lock so that `allow` skips the lookup without taking it while there is none.
    any_login_refusal: AtomicBool,
    /// Told after every change (the host firewall's worker); must not block.
    watcher: OnceLock<Arc<dyn Fn() + Send + Sync>>,
}

#[derive(Debug, Default)]
struct Bans {
    by_source: KeyedMap<Source, Arc<Ban>>,
    /// IP+login refusals, by source and then by login key. Placed on the source under the
    /// grouping in force; a reload that changes the grouping leaves them to expire.
    by_login: KeyedMap<Source, KeyedMap<Box<str>, Arc<Ban>>>,
    /// The prefix lengths of the bans held, longest first, each with its count.
    prefixes: Vec<(bool, u8, usize)>,
}

impl Bans {
    fn count_prefix(&mut self, source: Source, added: bool) {
        let net = source.network();
        let key = (net.addr().is_ipv4(), net.prefix_len());
        match self.prefixes.iter().position(|(v4, len, _)| (*v4, *len) == key) {
            Some(i) if added => self.prefixes[i].2 += 1,
            Some(i) => {
                self.prefixes[i].2 -= 1;
                if self.prefixes[i].2 == 0 {
                    self.prefixes.remove(i);
                }
            }
            None if added => {
                self.prefixes.push((key.0, key.1, 1));
                self.prefixes.sort_by(|a, b| b.1.cmp(&a.1));
            }
            None => {}
        }
    }

    fn insert(&mut self, ban: Arc<Ban>) {
        let source = ban.source;
        if let Some(login) = ban.refused_login() {
            let login: Box<str> = login.into();
            self.by_login.entry(source).or_default().insert(login, ban);
        } else if self.by_source.insert(source, ban).is_none() {
            self.count_prefix(source, true);
        }
    }

    fn remove(&mut self, source: Source, refused_login: Option<&str>) -> Option<Arc<Ban>> {
        if let Some(login) = refused_login {
            let logins = self.by_login.get_mut(&source)?;
            let removed = logins.remove(login);
            if logins.is_empty() {
                self.by_login.remove(&source);
            }
            return removed;
        }
        let removed = self.by_source.remove(&source);
        if removed.is_some() {
            self.count_prefix(source, false);
        }
        removed
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Ban>> {
        self.by_source.values().chain(self.by_login.values().flat_map(KeyedMap::values))
    }
}

impl BanIndex {
    fn read(&self) -> RwLockReadGuard<'_, Bans> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Bans> {
        self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the bans under the write lock and keeps `any_login_refusal` in step.
    fn change<T>(&self, change: impl FnOnce(&mut Bans) -> T) -> T {
        let mut bans = self.write();
        let result = change(&mut bans);
        self.any_login_refusal.store(!bans.by_login.is_empty(), Ordering::Release);
        drop(bans);
        if let Some(watcher) = self.watcher.get() {
            watcher();
        }
        result
    }

    /// Has `watcher` told of every later change. Set once; a second call is ignored.
    pub fn watch(&self, watcher: Arc<dyn Fn() + Send + Sync>) {
        let _ = self.watcher.set(watcher);
    }

    /// The ban on `source` if it is still active at `now`.
    pub fn active(&self, source: Source, now: Timestamp) -> Option<Arc<Ban>> {
        let bans = self.read();
        if bans.by_source.is_empty() {
            return None;
        }
        bans.by_source.get(&source).filter(|ban| ban.is_active(now)).cloned()
    }

    /// The active ban covering `address`: the one on its source under `grouping`, or a ban
    /// placed under another grouping whose network holds the address.
    pub fn active_for_address(&self, address: IpAddr, grouping: SourceGrouping, now: Timestamp) -> Option<Arc<Ban>> {
        let bans = self.read();
        if bans.by_source.is_empty() {
            return None;
        }
        Self::covering(&bans, address, grouping).find(|ban| ban.is_active(now)).cloned()
    }

    /// Every active ban covering `address`, its own source's first: a ban on its source and a
    /// subnet ban can both hold it, and lifting one leaves it refused by the other.
    pub fn all_active_for_address(&self, address: IpAddr, grouping: SourceGrouping, now: Timestamp) -> Vec<Arc<Ban>> {
        let bans = self.read();
        Self::covering(&bans, address, grouping).filter(|ban| ban.is_active(now)).cloned().collect()
    }

    /// The bans (active or not yet swept) on networks holding `address`: its source under
    /// `grouping` first, then one probe per other prefix length some ban has. Allocates nothing.
    fn covering<'a>(bans: &'a Bans, address: IpAddr, grouping: SourceGrouping) -> impl Iterator<Item = &'a Arc<Ban>> {
        let own = grouping.source_of(address);
        let others = bans
            .prefixes
            .iter()
            .filter(move |(v4, len, _)| *v4 == address.is_ipv4() && *len != own.network().prefix_len())
            .filter_map(move |(_, len, _)| {
                bans.by_source.get(&SourceGrouping { ipv4_prefix: *len, ipv6_prefix: *len }.source_of(address))
            });
        bans.by_source.get(&own).into_iter().chain(others)
    }

    /// The active IP+login refusal of `login` from the source of `address` under `grouping`.
    /// Costs one atomic load while no refusal exists, as `allow` asks it of every login.
    pub fn active_login_refusal(
        &self,
        address: IpAddr,
        grouping: SourceGrouping,
        login: &str,
        now: Timestamp,
    ) -> Option<Arc<Ban>> {
        if !self.any_login_refusal.load(Ordering::Acquire) {
            return None;
        }
        Self::refusal_in(&self.read(), grouping.source_of(address), login, now)
    }

    /// The active IP+login refusal of `login` (any spelling) from `source`.
    pub fn login_refusal(&self, source: Source, login: &str, now: Timestamp) -> Option<Arc<Ban>> {
        Self::refusal_in(&self.read(), source, login, now)
    }

    fn refusal_in(bans: &Bans, source: Source, login: &str, now: Timestamp) -> Option<Arc<Ban>> {
        let logins = bans.by_login.get(&source)?;
        logins.get(crate::login::key(login).as_ref()).filter(|ban| ban.is_active(now)).cloned()
    }

    /// The active IP+login refusals on `source`, soonest to end first.
    pub fn login_refusals(&self, source: Source, now: Timestamp) -> Vec<Arc<Ban>> {
        let bans = self.read();
        let mut found: Vec<Arc<Ban>> = bans
            .by_login
            .get(&source)
            .map(|logins| logins.values().filter(|b| b.is_active(now)).cloned().collect())
            .unwrap_or_default();
        found.sort_by(|a, b| (a.expires_at, &a.refused_login).cmp(&(b.expires_at, &b.refused_login)));
        found
    }

    /// Places `ban` (a source ban, or an IP+login refusal), replacing the one it scopes.
    pub fn insert(&self, ban: Arc<Ban>) {
        self.change(|bans| bans.insert(ban));
    }

    /// Lifts the ban on `source` (`refused_login`: only that login's refusal).
    pub fn remove(&self, source: Source, refused_login: Option<&str>) -> Option<Arc<Ban>> {
        self.change(|bans| bans.remove(source, refused_login))
    }

    /// Removes and returns the bans and IP+login refusals that have ended by `now`.
    pub fn take_expired(&self, now: Timestamp) -> Vec<Arc<Ban>> {
        self.change(|bans| {
            let ended: Vec<Arc<Ban>> = bans.all().filter(|b| !b.is_active(now)).cloned().collect();
            ended.into_iter().filter_map(|ban| bans.remove(ban.source, ban.refused_login())).collect()
        })
    }

    /// Active bans and IP+login refusals, soonest to end first.
    pub fn list(&self, now: Timestamp) -> Vec<Arc<Ban>> {
        let mut bans: Vec<Arc<Ban>> = self.read().all().filter(|b| b.is_active(now)).cloned().collect();
        bans.sort_by(|a, b| {
            (a.expires_at, a.source, &a.refused_login).cmp(&(b.expires_at, b.source, &b.refused_login))
        });
        bans
    }

    /// Source bans held (IP+login refusals are counted by `login_refusal_count`).
    pub fn len(&self) -> usize {
        self.read().by_source.len()
    }

    /// IP+login refusals held.
    pub fn login_refusal_count(&self) -> usize {
        self.read().by_login.values().map(KeyedMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.read().by_source.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::parse_ip;
    use std::time::Duration;

    const GROUPING: SourceGrouping = SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 };
    const NOW: Timestamp = Timestamp(1_795_334_400_000);

    fn ban(address: &str, minutes_left: i64) -> Arc<Ban> {
        Arc::new(Ban {
            source: GROUPING.source_of(parse_ip(address).unwrap()),
            refused_login: None,
            created_at: NOW,
            expires_at: Timestamp(NOW.0 + minutes_left * 60_000),
            reason: BanReason::Autoban,
            failures: 5,
            cause: BanCause::default(),
        })
    }

    #[test]
    fn a_ban_covers_every_address_of_its_source_until_it_ends() {
        let index = BanIndex::default();
        index.insert(ban("2001:db8:1:2::1", 30));
        let sibling = parse_ip("2001:db8:1:2:ffff::9").unwrap();
        let neighbour = parse_ip("2001:db8:1:3::1").unwrap();
        assert!(index.active_for_address(sibling, GROUPING, NOW).is_some());
        assert!(index.active_for_address(neighbour, GROUPING, NOW).is_none());
        let later = NOW.plus(Duration::from_secs(30 * 60));
        assert!(index.active_for_address(sibling, GROUPING, later).is_none());
    }

    #[test]
    fn expired_bans_are_taken_out_and_live_ones_stay() {
        let index = BanIndex::default();
        index.insert(ban("203.0.113.1", 5));
        index.insert(ban("203.0.113.2", 50));
        let ended = index.take_expired(NOW.plus(Duration::from_secs(10 * 60)));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].source.to_string(), "203.0.113.1");
        assert_eq!(index.len(), 1);
        assert_eq!(index.list(NOW)[0].source.to_string(), "203.0.113.2");
    }

    #[test]
    fn a_ban_placed_under_another_grouping_still_covers_its_network_and_only_it() {
        let index = BanIndex::default();
        let wide = SourceGrouping { ipv4_prefix: 24, ipv6_prefix: 48 };
        for address in ["198.51.100.9", "2001:db8:5::1"] {
            let mut placed = (*ban(address, 30)).clone();
            placed.source = wide.source_of(parse_ip(address).unwrap());
            index.insert(Arc::new(placed));
        }
        index.insert(ban("203.0.113.7", 30));
        let found = |address: &str| index.active_for_address(parse_ip(address).unwrap(), GROUPING, NOW);
        assert_eq!(found("198.51.100.200").map(|b| b.source.to_string()).as_deref(), Some("198.51.100.0/24"));
        assert_eq!(found("2001:db8:5:ffff::2").map(|b| b.source.to_string()).as_deref(), Some("2001:db8:5::/48"));
        assert!(found("198.51.101.1").is_none());
        assert!(found("2001:db8:6::1").is_none());
        assert!(found("203.0.113.7").is_some());
        assert!(index.remove(wide.source_of(parse_ip("198.51.100.9").unwrap()), None).is_some());
        assert!(found("198.51.100.200").is_none(), "lifted");
    }

    #[test]
    fn a_login_refusal_refuses_that_login_only_and_leaves_the_source_unbanned() {
        let index = BanIndex::default();
        let office = parse_ip("203.0.113.7").unwrap();
        let source = GROUPING.source_of(office);
        assert!(index.active_login_refusal(office, GROUPING, "alice@example.com", NOW).is_none(), "nothing held");
        let mut refusal = (*ban("203.0.113.7", 30)).clone();
        refusal.refused_login = Some("alice@example.com".into());
        index.insert(Arc::new(refusal));
        assert!(index.active_login_refusal(office, GROUPING, "Alice@Example.COM", NOW).is_some(), "any spelling");
        assert!(index.login_refusal(source, "bob@example.com", NOW).is_none(), "a colleague");
        assert!(index.active_for_address(office, GROUPING, NOW).is_none(), "the source is not banned");
        assert_eq!((index.len(), index.login_refusal_count(), index.list(NOW).len()), (0, 1, 1));
        index.insert(ban("203.0.113.7", 60));
        assert!(index.remove(source, None).is_some(), "lifting the source ban");
        assert!(index.login_refusal(source, "alice@example.com", NOW).is_some(), "keeps the refusal");
        let later = NOW.plus(Duration::from_secs(30 * 60));
        assert_eq!(index.take_expired(later).len(), 1);
        assert_eq!(index.login_refusal_count(), 0);
    }
}
