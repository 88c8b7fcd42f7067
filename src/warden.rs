//! The application core without HTTP: gathers the facts for a login attempt from in-memory
//! state, asks the engine, applies the effects (count a failure, place a ban) and writes them
//! through to the durable store. A cheap `Clone` handle around shared state, used by the
//! policy and admin listeners and the background sweeper alike.
//!
//! Methods that touch the store block (they are run on blocking threads by `http`); `allow`
//! and `report` never touch it and never block.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

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
    clock: Arc<dyn Clock>,
    /// Failed-login history per source (memory only, bounded).
    failures: FailureTracker,
    /// Active bans (memory mirror of the store, unbounded).
    bans: BanIndex,
    store: Arc<dyn Store>,
    metrics: Metrics,
}

impl Warden {
    /// Builds the core and loads the active bans from `store`.
    pub fn open(
        policy: Policy,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Result<Warden, StoreError> {
        let autoban = policy.autoban;
        let failures = FailureTracker::new(
            autoban.window,
            autoban.max_failures,
            autoban.max_tracked_sources,
        );
        let bans = BanIndex::default();
        let loaded = store.active_bans(clock.now());
        metrics.store_result("load_bans", &loaded);
        for ban in loaded? {
            bans.insert(Arc::new(ban));
        }
        metrics
            .active_bans
            .set(i64::try_from(bans.len()).unwrap_or(i64::MAX));
        let shared = Shared {
            policy: ArcSwap::from_pointee(policy),
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

    /// Decides an `allow` request without changing any state.
    pub fn decide(&self, address: Option<IpAddr>) -> Decision {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let standing = match address {
            Some(ip) => policy.access.standing(ip),
            None => crate::network::Standing::Unlisted,
        };
        let ban = address.and_then(|ip| {
            shared
                .bans
                .active_for_address(ip, policy.autoban.grouping, now)
        });
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

    /// Takes Dovecot's `report`. Returns a ban it placed, which the caller must `persist_ban`.
    pub fn report(&self, attempt: &LoginAttempt<'_>, outcome: Outcome) -> Option<Arc<Ban>> {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let standing = match attempt.remote {
            Some(ip) => policy.access.standing(ip),
            None => crate::network::Standing::Unlisted,
        };
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
        let now = shared.clock.now();
        let source = policy.autoban.grouping.source_of(address);
        let failures = shared.failures.record_failure(source, now);
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
            .set(i64::try_from(shared.bans.len()).unwrap_or(i64::MAX));
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
            .set(i64::try_from(shared.bans.len()).unwrap_or(i64::MAX));
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

    /// Ends bans whose time is up, in memory and in the store. Blocking.
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
                .set(i64::try_from(shared.bans.len()).unwrap_or(i64::MAX));
            for ban in &ended {
                tracing::info!(source = %ban.source, "ban expired");
            }
        }
        let deleted = shared.store.delete_expired_bans(now);
        shared.metrics.store_result("delete_expired_bans", &deleted);
        deleted.map(|_| ended.len())
    }

    /// Brings gauges that are cheaper to read than to maintain up to date (before a scrape).
    pub fn refresh_gauges(&self) {
        let shared = &*self.shared;
        let tracked = shared.failures.tracked_sources();
        shared
            .metrics
            .tracked_sources
            .set(i64::try_from(tracked).unwrap_or(i64::MAX));
        shared
            .metrics
            .active_bans
            .set(i64::try_from(shared.bans.len()).unwrap_or(i64::MAX));
    }

    pub fn tracked_sources(&self) -> u64 {
        self.shared.failures.tracked_sources()
    }

    pub fn store_backend(&self) -> &'static str {
        self.shared.store.backend()
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

    #[test]
    fn bans_in_the_store_are_in_force_after_a_restart() {
        let h = harness("");
        for _ in 0..5 {
            h.fail("203.0.113.7", "alice@example.com");
        }
        let policy = (*h.warden.policy()).clone();
        let reopened = Warden::open(
            policy,
            h.store.clone(),
            h.clock.clone(),
            Metrics::new().unwrap(),
        )
        .unwrap();
        assert_eq!(reopened.bans().len(), 1);
        assert!(matches!(
            reopened.decide(Some("203.0.113.7".parse().unwrap())),
            Decision::Reject(_)
        ));
    }
}
