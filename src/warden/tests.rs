//! The core's behaviour with an injected clock and an in-memory store.

use super::*;
use crate::access::Origin;
use crate::geoip::GeoIp;

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

/// A core with no GeoIP databases.
fn open(policy: Policy, store: Arc<SqliteStore>, clock: Arc<ManualClock>) -> Warden {
    let metrics = Metrics::new().unwrap();
    let geoip = GeoIp::disabled(metrics.geoip.clone());
    Warden::open(policy, store, clock, metrics, geoip).unwrap()
}

/// A login from `ip` as the dry run describes it.
fn view(ip: &str) -> (LoginView<'static>, IpAddr) {
    let address: IpAddr = ip.parse().unwrap();
    let view = LoginView {
        address: Some(address),
        real_remote: None,
        login: "alice@example.com",
        protocol: Protocol::Imap,
    };
    (view, address)
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
    let warden = open(policy, store.clone(), clock.clone());
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
        open(policy, self.store.clone(), self.clock.clone())
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
    let h = harness("[networks]\nblocked = [\"198.51.100.0/24\"]\ntrusted = [\"198.51.100.10\"]\n");
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
        reopened.decide(&view("198.51.100.9").0),
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
    let kept = h.warden.apply_policy(new, None).unwrap();
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
    let explain = |ip: &str| {
        let (view, address) = view(ip);
        h.warden.explain(&view, address)
    };
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
        reopened.decide(&view("203.0.113.7").0),
        Decision::Reject(_)
    ));
}
