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
    /// Numbers the attacker's guesses so each is new.
    guesses: std::sync::atomic::AtomicU32,
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
        pwhash: None,
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
    let policy = Policy::load_from(ConfigSource { path: &path, environment: Some(Default::default()) }).unwrap();
    let clock = Arc::new(ManualClock::starting_at(START));
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let warden = open(policy, store.clone(), clock.clone());
    Harness { warden, clock, store, guesses: Default::default() }
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

    /// A failed login with a password never used before (an attacker's guess).
    fn fail(&self, remote: &str, login: &str) {
        let n = self.guesses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.fail_with(remote, login, &format!("{n:04x}"));
    }

    /// A failed login with this password hash (a stale device repeats one).
    fn fail_with(&self, remote: &str, login: &str, pwhash: &str) {
        let text = body(remote, login, pwhash, r#","success":false,"policy_reject":false"#);
        let (attempt, outcome) = parse_attempt(text.as_bytes(), Command::Report).unwrap();
        let effects = self.warden.report(&attempt, outcome.unwrap());
        for ban in effects.ban.iter().chain(&effects.subnet_ban) {
            self.warden.persist_ban(ban).unwrap();
        }
        if let Some(login) = effects.attacked_login {
            self.warden.load_known_sources(&login).unwrap();
        }
    }

    /// `allow` carrying this password hash.
    fn allow_with(&self, remote: &str, login: &str, pwhash: &str) -> Reply {
        let text = body(remote, login, pwhash, "");
        let (attempt, _) = parse_attempt(text.as_bytes(), Command::Allow).unwrap();
        self.warden.allow(&attempt)
    }

    /// A successful login.
    fn succeed(&self, remote: &str, login: &str, pwhash: &str) {
        let text = body(remote, login, pwhash, r#","success":true,"policy_reject":false"#);
        let (attempt, outcome) = parse_attempt(text.as_bytes(), Command::Report).unwrap();
        let effects = self.warden.report(&attempt, outcome.unwrap());
        assert!(effects.ban.is_none());
    }

    fn report(&self, remote: &str, success: bool, policy_reject: bool) {
        let extra = format!(r#","success":{success},"policy_reject":{policy_reject}"#);
        let text = body(remote, "alice@example.com", "0350", &extra);
        let (attempt, outcome) = parse_attempt(text.as_bytes(), Command::Report).unwrap();
        assert!(self.warden.report(&attempt, outcome.unwrap()).ban.is_none());
    }
}

#[test]
fn five_failures_ban_the_source_for_every_account_and_the_message_says_until_when() {
    let h = harness("");
    for _ in 0..4 {
        h.fail("203.0.113.7", "alice@example.com");
    }
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0, "four failures do not ban");
    h.fail("203.0.113.7", "alice@example.com");
    let refused = h.allow("203.0.113.7", "bob@example.com");
    assert_eq!(refused.status, -1);
    assert_eq!(refused.msg, "Too many failed logins from 203.0.113.7; try again after 08:30 UTC");
    assert_eq!(h.allow("203.0.113.8", "alice@example.com").status, 0, "another address is not affected");
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
    assert_eq!(refused.msg, "Logins from 198.51.100.9 are blocked by the administrator");
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
    assert!(h.warden.unban(source, &crate::principal::Principal::built_in_admin()).unwrap().is_some());
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0);
    assert!(h.store.active_bans(START).unwrap().is_empty());
    h.fail("203.0.113.7", "alice@example.com");
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0, "one new failure after an unban does not re-ban");
    assert!(h.warden.unban(source, &crate::principal::Principal::built_in_admin()).unwrap().is_none());
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
            false,
            &crate::principal::Principal::built_in_admin(),
        )
        .unwrap();
    h.warden
        .add_to_list(
            ListKind::Trusted,
            network("198.51.100.10"),
            None,
            "monitoring",
            false,
            &crate::principal::Principal::built_in_admin(),
        )
        .unwrap();
    assert_eq!(h.allow("198.51.100.9", "alice@example.com").status, -1);
    assert_eq!(h.allow("198.51.100.10", "alice@example.com").status, 0);

    let reopened = h.restarted();
    assert!(matches!(reopened.decide(&view("198.51.100.9").0), Decision::Reject(_)));

    h.clock.advance(hour);
    assert_eq!(h.allow("198.51.100.9", "alice@example.com").status, 0, "expired at once, before any sweep");
    assert_eq!(h.warden.sweep_expired().unwrap(), 1);
    assert_eq!(h.store.access_entries().unwrap().len(), 1);
    assert_eq!(h.warden.list_entries(ListKind::Blocked).len(), 0);
}

#[test]
fn policy_file_entries_cannot_be_changed_through_the_api() {
    let h = harness("[networks]\nblocked = [\"10.0.0.0/8\"]\n");
    let net = network("10.0.0.0/8");
    assert!(matches!(
        h.warden.remove_from_list(ListKind::Blocked, net, &crate::principal::Principal::built_in_admin()),
        Err(ListError::DefinedInPolicyFile { .. })
    ));
    assert!(matches!(
        h.warden.add_to_list(ListKind::Blocked, net, None, "", false, &crate::principal::Principal::built_in_admin()),
        Err(ListError::DefinedInPolicyFile { .. })
    ));
    assert!(matches!(
        h.warden.remove_from_list(
            ListKind::Blocked,
            network("10.1.0.0/16"),
            &crate::principal::Principal::built_in_admin()
        ),
        Err(ListError::NotListed { .. })
    ));
    assert!(matches!(
        h.warden.add_to_list(
            ListKind::Blocked,
            network("10.1.0.0/16"),
            Some(START),
            "",
            false,
            &crate::principal::Principal::built_in_admin()
        ),
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
        .add_to_list(
            ListKind::Blocked,
            network("198.51.100.0/24"),
            None,
            "",
            false,
            &crate::principal::Principal::built_in_admin(),
        )
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let state_dir = h.warden.policy().server.state_dir.display().to_string();
    let text = format!(
        "[server]\npolicy_listen = \"127.0.0.1:9999\"\nstate_dir = {state_dir:?}\n\
         [autoban]\nmax_failures = 3\n[networks]\ntrusted = [\"192.0.2.0/24\"]\n"
    );
    std::fs::write(&path, text).unwrap();
    let new = Policy::load_from(ConfigSource { path: &path, environment: Some(Default::default()) }).unwrap();
    let kept = h.warden.apply_policy(new, None).unwrap();
    assert_eq!(kept, vec!["server.policy_listen"]);
    assert_eq!(h.warden.policy().server.policy_listen.to_string(), "127.0.0.1:8180");

    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, -1, "the ban carried over");
    h.fail("203.0.113.8", "alice@example.com");
    assert_eq!(
        h.allow("203.0.113.8", "alice@example.com").status,
        -1,
        "two counted before the reload plus one reach the new threshold of 3"
    );
    assert_eq!(h.allow("198.51.100.1", "alice@example.com").status, -1, "API entries carried over");
    assert_eq!(h.warden.list_entries(ListKind::Trusted)[0].network, network("192.0.2.0/24"));
}

#[test]
fn the_explanation_names_what_decided_without_changing_anything() {
    let h = harness("[networks]\nblocked = [\"198.51.100.0/24\"]\n");
    h.warden
        .add_to_list(
            ListKind::Trusted,
            network("192.0.2.7"),
            None,
            "monitoring",
            false,
            &crate::principal::Principal::built_in_admin(),
        )
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
    assert_eq!(explain("198.51.100.3").summary(), "refused: 198.51.100.3 is blocked by 198.51.100.0/24 in policy.toml");
    assert_eq!(
        explain("192.0.2.7").summary(),
        "allowed: 192.0.2.7 is trusted by 192.0.2.7/32 in the admin API (monitoring); it is never banned"
    );
    assert_eq!(explain("203.0.113.8").summary(), "allowed: 203.0.113.8 has 1 of 5 failed logins in the current window");
    for _ in 0..10 {
        explain("203.0.113.8");
    }
    assert_eq!(
        h.warden.metrics().decisions.with_label_values(&["allow", "none", "imap"]).get(),
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
    assert!(matches!(reopened.decide(&view("203.0.113.7").0), Decision::Reject(_)));
}

const STALE_MESSAGE: &str =
    "Your mail app keeps using an old password for alice@example.com; update it in the app's account settings";

#[test]
fn a_stale_device_retrying_one_password_is_quarantined_but_never_bans_the_office() {
    let h = harness("");
    let office = "203.0.113.7";
    for attempt in 0..50 {
        if attempt >= 3 {
            let reply = h.allow_with(office, "alice@example.com", "old1");
            assert_eq!((reply.status, reply.msg.as_str()), (-1, STALE_MESSAGE), "attempt {attempt}");
            h.report(office, false, true);
        } else {
            assert_eq!(h.allow_with(office, "alice@example.com", "old1").status, 0);
            h.fail_with(office, "alice@example.com", "old1");
        }
        h.clock.advance(Duration::from_secs(60));
        assert_eq!(h.allow_with(office, "bob@example.com", "bob1").status, 0, "a colleague logs in");
    }
    assert_eq!(h.allow_with(office, "alice@example.com", "new1").status, 0, "alice's new password is not affected");
    assert!(h.warden.bans().is_empty(), "the office was never banned");
    h.succeed(office, "alice@example.com", "new1");
    assert_eq!(h.allow_with(office, "alice@example.com", "old1").status, 0, "a successful login lifts the quarantine");
}

#[test]
fn the_quarantine_ends_on_its_own() {
    let h = harness("[stale_passwords]\nquarantine_for = \"10m\"\n");
    for _ in 0..3 {
        h.fail_with("203.0.113.7", "alice@example.com", "old1");
    }
    assert_eq!(h.allow_with("203.0.113.7", "alice@example.com", "old1").status, -1);
    h.clock.advance(Duration::from_secs(10 * 60 + 1));
    assert_eq!(h.allow_with("203.0.113.7", "alice@example.com", "old1").status, 0);
}

#[test]
fn five_different_passwords_ban_on_the_fifth_like_before() {
    let h = harness("");
    for i in 0..4 {
        h.fail_with("198.51.100.7", "alice@example.com", &format!("g{i}"));
        assert_eq!(h.allow("198.51.100.7", "alice@example.com").status, 0);
    }
    h.fail_with("198.51.100.7", "alice@example.com", "g4");
    assert_eq!(h.allow("198.51.100.7", "alice@example.com").status, -1);
    let ban = &h.warden.bans()[0];
    assert_eq!(ban.cause.guesses.len(), 5, "the ban remembers the guesses that led to it");
}

#[test]
fn spraying_one_password_over_many_accounts_is_banned_as_fast() {
    let h = harness("");
    for user in ["a", "b", "c", "d", "e"] {
        h.fail_with("198.51.100.7", &format!("{user}@example.com"), "Summer2026");
    }
    assert_eq!(h.allow("198.51.100.7", "f@example.com").status, -1);
}

#[test]
fn an_account_failing_from_ten_sources_slows_new_sources_while_known_ones_log_in() {
    let h = harness("");
    h.succeed("192.0.2.50", "alice@example.com", "good");
    for i in 1..=10 {
        h.fail(&format!("198.18.0.{i}"), "alice@example.com");
    }
    let new_place = h.allow("198.18.1.1", "alice@example.com");
    assert_eq!((new_place.status, new_place.msg.as_str()), (5, ""), "a new source is delayed 5 s");
    assert_eq!(h.allow("192.0.2.50", "alice@example.com").status, 0, "the known source logs in as usual");
    assert_eq!(h.allow("198.18.1.1", "bob@example.com").status, 0, "other accounts are not affected");
    assert_eq!(h.warden.accounts_under_attack(), ["alice@example.com"]);
    let (view, address) = view("198.18.1.1");
    assert_eq!(
        h.warden.explain(&view, address).summary(),
        "delayed 5 s: alice@example.com is under attack and 198.18.1.1 is new to it",
        "why says a delay is a delay"
    );
    h.clock.advance(Duration::from_secs(3601));
    assert_eq!(h.allow("198.18.1.1", "alice@example.com").status, 0, "the attack ends an hour after the failures stop");
}

#[test]
fn an_account_under_attack_can_refuse_new_sources_instead() {
    let h = harness("[account_protection]\naction = \"reject\"\nsources = 3\n");
    for i in 1..=3 {
        h.fail(&format!("198.18.0.{i}"), "alice@example.com");
    }
    let reply = h.allow("198.18.1.1", "alice@example.com");
    assert_eq!(reply.status, -1);
    assert!(reply.msg.starts_with("alice@example.com is under attack"), "{}", reply.msg);
}

#[test]
fn repeat_offenders_are_banned_longer_when_escalation_is_on() {
    let h = harness("[autoban]\nescalation_factor = 2.0\nmax_ban = \"90m\"\n");
    let ban_length = |h: &Harness| {
        let ban = &h.warden.bans()[0];
        ban.created_at.until(ban.expires_at).as_secs() / 60
    };
    let mut lengths = Vec::new();
    for _ in 0..3 {
        for _ in 0..5 {
            h.fail("198.51.100.7", "alice@example.com");
        }
        lengths.push(ban_length(&h));
        let source = h.warden.source_for("198.51.100.7/32".parse().unwrap());
        h.warden.unban(source, &crate::principal::Principal::built_in_admin()).unwrap();
        h.clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(lengths, [30, 60, 90]);
}

#[test]
fn why_explains_guesses_stale_devices_and_attacks_in_plain_words_without_hashes() {
    let h = harness("[account_protection]\nsources = 2\n");
    let office = "203.0.113.7";
    for _ in 0..4 {
        h.fail_with(office, "alice@example.com", "c0ffee");
    }
    h.fail_with(office, "bob@example.com", "beef01");
    h.fail_with("198.18.0.1", "bob@example.com", "beef02");
    let diagnosis = h.warden.why(office.parse().unwrap(), None);
    let text = diagnosis.lines().join("\n");
    assert!(text.contains("allowed: 203.0.113.7 has 2 of 5 failed logins"), "{text}");
    assert!(
        text.contains("stale device: a mail app keeps using an old password for alice@example.com over imap: 4 tries"),
        "{text}"
    );
    assert!(text.contains("that password is refused from here until"), "{text}");
    assert!(text.contains("a wrong password for bob@example.com over imap: 1 try"), "{text}");
    assert!(text.contains("bob@example.com is under attack from many addresses"), "{text}");
    assert!(!text.contains("c0ffee") && !text.contains("beef"), "no password hashes: {text}");
}

impl Harness {
    /// A failed report as Dovecot 2.4 sends it, with `fail_type`.
    fn fail_typed(&self, remote: &str, login: &str, fail_type: &str) {
        let n = self.guesses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let extra = format!(r#","success":false,"policy_reject":false,"fail_type":"{fail_type}""#);
        let text = body(remote, login, &format!("{n:04x}"), &extra);
        let (attempt, outcome) = parse_attempt(text.as_bytes(), Command::Report).unwrap();
        if let Some(ban) = self.warden.report(&attempt, outcome.unwrap()).ban {
            self.warden.persist_ban(&ban).unwrap();
        }
    }
}

#[test]
fn internal_failures_never_count_and_unusable_accounts_are_logged_not_counted() {
    let h = harness("");
    for _ in 0..10 {
        h.fail_typed("203.0.113.7", "alice@example.com", "internal");
        h.fail_typed("203.0.113.7", "alice@example.com", "expired");
        h.fail_typed("203.0.113.7", "bob@example.com", "disabled");
    }
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0);
    let events = h.warden.events(&crate::events::EventFilter { limit: 100, ..Default::default() }).unwrap().events;
    let expired = events.iter().find(|e| e.kind == EventKind::AccountExpired).expect("an expired event");
    assert!(expired.detail.contains("password has expired"), "{}", expired.detail);
    assert!(events.iter().any(|e| e.kind == EventKind::AccountDisabled));
}

#[test]
fn unknown_logins_count_and_can_count_double() {
    let h = harness("");
    for _ in 0..3 {
        h.fail_typed("203.0.113.7", "nobody@example.com", "account");
    }
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0, "three count as three");
    let double = harness("[autoban]\nunknown_accounts_count_double = true\n");
    for _ in 0..3 {
        double.fail_typed("203.0.113.7", "nobody@example.com", "account");
    }
    assert_eq!(double.allow("203.0.113.7", "alice@example.com").status, -1, "three unknown logins count as six");
    double.fail_typed("198.51.100.7", "alice@example.com", "credentials");
    assert_eq!(double.allow("198.51.100.7", "alice@example.com").status, 0, "a wrong password still counts once");
}

#[test]
fn why_reads_different_wrong_passwords_of_one_login_as_one_line() {
    let h = harness("");
    for _ in 0..4 {
        h.fail("203.0.113.7", "alice@example.com");
    }
    let lines = h.warden.why("203.0.113.7".parse().unwrap(), None).lines();
    let about_alice: Vec<&String> = lines.iter().filter(|l| l.contains("alice@example.com")).collect();
    assert_eq!(about_alice.len(), 1, "{lines:?}");
    assert!(
        about_alice[0].starts_with("4 different wrong passwords for alice@example.com over imap: 4 tries"),
        "{lines:?}"
    );
}

#[test]
fn an_unusable_account_tried_again_and_again_is_logged_once_per_window() {
    let h = harness("");
    for _ in 0..20 {
        h.fail_typed("203.0.113.7", "old@example.com", "disabled");
    }
    h.fail_typed("203.0.113.8", "old@example.com", "disabled");
    let filter =
        crate::events::EventFilter { kind: Some(EventKind::AccountDisabled), limit: 100, ..Default::default() };
    assert_eq!(h.warden.events(&filter).unwrap().events.len(), 2, "one per source");
}

#[test]
fn a_refusal_is_in_the_block_log_as_soon_as_it_is_answered() {
    let h = harness("");
    for _ in 0..5 {
        h.fail("203.0.113.7", "alice@example.com");
    }
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, -1);
    let events = h.warden.events(&crate::events::EventFilter { limit: 100, ..Default::default() }).unwrap().events;
    assert!(events.iter().any(|e| e.kind == EventKind::Ban), "the refusal is listed without waiting: {events:?}");
    assert!(events.iter().any(|e| e.kind == EventKind::BanPlaced));
}

/// Loads `toml` as the new policy file and applies it, as a reload does.
fn reload(h: &Harness, toml: &str) -> Vec<&'static str> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let state_dir = h.warden.policy().server.state_dir.display().to_string();
    std::fs::write(&path, format!("[server]\nstate_dir = {state_dir:?}\n{toml}")).unwrap();
    let new = Policy::load_from(ConfigSource { path: &path, environment: Some(Default::default()) }).unwrap();
    h.warden.apply_policy(new, None).unwrap()
}

#[test]
fn a_reload_that_changes_the_source_grouping_keeps_every_ban_in_force() {
    let h = harness("");
    for _ in 0..5 {
        h.fail("203.0.113.7", "alice@example.com");
    }
    for _ in 0..3 {
        h.fail("203.0.113.8", "bob@example.com");
    }
    h.fail("203.0.113.9", "carol@example.com");
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, -1);

    // Wider sources: the /32 ban stays on its address, and the failures of .8 and .9 now
    // count together for 203.0.113.0/24 (3 + 1, so one more bans the /24).
    assert!(reload(&h, "[autoban]\nipv4_prefix = 24\n").is_empty());
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, -1, "the ban still holds");
    assert_eq!(h.allow("203.0.113.8", "bob@example.com").status, 0, "the ban covers its own address only");
    let shown: Vec<String> = h.warden.bans().iter().map(|b| b.source.to_string()).collect();
    assert_eq!(shown, ["203.0.113.7"]);
    assert_eq!(h.warden.source_for("203.0.113.7/32".parse().unwrap()).to_string(), "203.0.113.7");
    h.fail("203.0.113.10", "dave@example.com");
    assert_eq!(h.allow("203.0.113.200", "erin@example.com").status, -1, "counts moved under the /24");

    // Narrower again: the /24 ban covers every address in it.
    assert!(reload(&h, "[autoban]\nipv4_prefix = 32\n").is_empty());
    assert_eq!(h.allow("203.0.113.77", "alice@example.com").status, -1, "the /24 ban still holds");
    let source = h.warden.source_for("203.0.113.77/32".parse().unwrap());
    assert_eq!(source.to_string(), "203.0.113.0/24", "unban finds the ban covering the address");
    assert!(h.warden.unban(source, &crate::principal::Principal::built_in_admin()).unwrap().is_some());
    assert_eq!(h.allow("203.0.113.77", "alice@example.com").status, 0);
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, -1, "the other ban is untouched");
}

#[test]
fn a_reload_keeps_restart_only_settings_and_names_each_of_them() {
    let h = harness("");
    let kept = reload(
        &h,
        "public_listen = \"127.0.0.1:9\"\nmax_connections = 64\nclient_timeout = \"9s\"\nreload_on_change = true\n\
         [geoip]\ncheck_every = \"5m\"\n[account_protection]\nmax_tracked_accounts = 500\n\
         [autoban]\nmax_failures = 7\n",
    );
    assert_eq!(
        kept,
        [
            "server.public_listen",
            "server.reload_on_change",
            "server.client_timeout",
            "server.max_connections",
            "account_protection.max_tracked_accounts",
            "geoip.check_every",
        ]
    );
    let policy = h.warden.policy();
    assert_eq!(policy.server.public_listen, None, "kept until a restart");
    assert_eq!(policy.server.max_connections, 10_000);
    assert_eq!(policy.autoban.max_failures, 7, "live settings are applied");
}

#[test]
fn an_office_where_people_log_in_is_not_banned_for_its_colleagues_typos_but_a_sprayer_there_is() {
    let h = harness("");
    let office = "198.51.100.20";
    for n in 0..10 {
        for _ in 0..2 {
            h.succeed(office, &format!("colleague{n}@example.com"), "0f96");
        }
    }
    for n in 0..6 {
        h.fail(office, &format!("colleague{n}@example.com"));
    }
    assert_eq!(h.allow(office, "colleague9@example.com").status, 0, "six typos of six colleagues ban nobody");

    // Ten good accounts earn min(20, 2 x 10) = 20 more guesses: the 25th distinct wrong
    // password bans the address, whoever makes it.
    for n in 0..18 {
        h.fail(office, &format!("sprayed{n}@example.com"));
        assert_eq!(h.allow(office, "colleague0@example.com").status, 0, "{} guesses", 7 + n);
    }
    h.fail(office, "sprayed18@example.com");
    assert_eq!(h.allow(office, "colleague0@example.com").status, -1, "banned at 25 distinct guesses");
    assert_eq!(h.warden.ban(h.warden.source_for(format!("{office}/32").parse().unwrap())).unwrap().failures, 25);

    // An address nobody logged in from is banned at exactly max_failures, as ever.
    for _ in 0..5 {
        h.fail("203.0.113.50", "alice@example.com");
    }
    assert_eq!(h.allow("203.0.113.50", "alice@example.com").status, -1);
}

#[test]
fn one_account_logging_in_again_and_again_earns_its_address_only_its_share() {
    let h = harness("");
    for _ in 0..40 {
        h.succeed("198.51.100.30", "alice@example.com", "0f96");
    }
    // Guesses spread over logins, so that none is refused alone before the source is banned.
    for n in 0..6 {
        h.fail("198.51.100.30", &format!("bob{n}@example.com"));
    }
    assert_eq!(h.allow("198.51.100.30", "bob@example.com").status, 0, "one good account earns 2 guesses");
    h.fail("198.51.100.30", "bob6@example.com");
    assert_eq!(h.allow("198.51.100.30", "bob@example.com").status, -1, "banned at 5 + 2");
}

/// An office from which ten colleagues logged in lately.
fn office(h: &Harness, ip: &str) {
    for n in 0..10 {
        h.succeed(ip, &format!("colleague{n}@example.com"), "0f96");
    }
}

#[test]
fn one_colleagues_account_guessed_five_times_on_an_office_is_refused_alone() {
    let h = harness("");
    office(&h, "198.51.100.40");
    for _ in 0..4 {
        h.fail("198.51.100.40", "Alice@example.com");
    }
    assert_eq!(h.allow("198.51.100.40", "alice@example.com").status, 0, "four guesses: not yet");
    h.fail("198.51.100.40", "alice@example.com");
    let refused = h.allow("198.51.100.40", "ALICE@example.com");
    assert_eq!(refused.status, -1, "any spelling of the login");
    assert_eq!(
        refused.msg,
        "Too many failed logins for ALICE@example.com from 198.51.100.40; try again after 08:30 UTC or update the password in your mail app"
    );
    assert_eq!(h.allow("198.51.100.40", "colleague3@example.com").status, 0, "a colleague still logs in");
    assert_eq!(h.allow("198.51.100.41", "alice@example.com").status, 0, "alice from elsewhere too");
    let source = h.warden.source_for("198.51.100.40/32".parse().unwrap());
    assert!(h.warden.ban(source).is_none(), "the office is not banned");
    let refusal = h.warden.login_refusal(source, "alice@example.com").expect("alice is refused from there");
    assert_eq!((refusal.failures, refusal.cause.guesses.len()), (5, 5));
    assert_eq!(h.store.scoped_ban(source, Some("alice@example.com")).unwrap().as_ref(), Some(&*refusal), "stored");
    let restarted = h.restarted();
    assert!(restarted.login_refusal(source, "alice@example.com").is_some(), "a restart keeps it");
    let lines = h.warden.why("198.51.100.40".parse().unwrap(), None).lines().join("\n");
    assert!(
        lines.contains("per-login refusal: logins to alice@example.com from 198.51.100.40 are refused until"),
        "{lines}"
    );
    assert!(lines.contains("other accounts at this address are not affected"), "{lines}");
    assert_eq!(h.warden.metrics().login_refusals.with_label_values(&["imap"]).get(), 1);

    // Lifted: alice logs in again, and her next wrong password does not refuse her at once.
    assert!(
        h.warden
            .unban_login(source, "Alice@Example.com", &crate::principal::Principal::built_in_admin())
            .unwrap()
            .is_some()
    );
    assert!(h.store.active_bans(START).unwrap().is_empty());
    assert_eq!(h.allow("198.51.100.40", "alice@example.com").status, 0);
    h.fail("198.51.100.40", "alice@example.com");
    assert_eq!(h.allow("198.51.100.40", "alice@example.com").status, 0, "her guesses were forgiven");
}

#[test]
fn forgiven_guesses_do_not_count_toward_a_login_refusal() {
    let h = harness("");
    office(&h, "198.51.100.42");
    for _ in 0..4 {
        h.fail("198.51.100.42", "alice@example.com");
    }
    h.succeed("198.51.100.42", "alice@example.com", "0f96");
    h.fail("198.51.100.42", "alice@example.com");
    assert_eq!(h.allow("198.51.100.42", "alice@example.com").status, 0, "one guess counts after her login");
}

#[test]
fn a_fresh_address_is_banned_whole_at_five_guesses_of_one_login_and_a_sprayer_on_an_office_still_is() {
    let h = harness("");
    for _ in 0..5 {
        h.fail("203.0.113.60", "alice@example.com");
    }
    assert_eq!(h.allow("203.0.113.60", "bob@example.com").status, -1, "nobody logged in from it: source ban");
    let source = h.warden.source_for("203.0.113.60/32".parse().unwrap());
    assert!(h.warden.login_refusal(source, "alice@example.com").is_none());

    // On the office (ten colleagues: 20 more guesses), one login refused, then the source at 25.
    office(&h, "198.51.100.50");
    for n in 0..24 {
        let login = if n < 5 { "alice@example.com".to_string() } else { format!("sprayed{n}@example.com") };
        h.fail("198.51.100.50", &login);
        assert_eq!(h.allow("198.51.100.50", "colleague0@example.com").status, 0, "{} guesses", n + 1);
    }
    h.fail("198.51.100.50", "sprayed24@example.com");
    assert_eq!(h.allow("198.51.100.50", "colleague0@example.com").status, -1, "banned at 5 + 20");
}

#[test]
fn the_self_service_page_lifts_its_own_login_refusals() {
    let h = harness("[self_service]\ndifficulty = 1000\n");
    office(&h, "198.51.100.44");
    (0..5).for_each(|_| h.fail("198.51.100.44", "alice@example.com"));
    let status = h.warden.visitor_status("198.51.100.44".parse().unwrap());
    assert!(status.ban.is_none());
    assert_eq!(status.login_refusals.len(), 1);
    let lifted = self_unblock_with_a_solved_challenge(&h.warden, "198.51.100.44").unwrap();
    assert_eq!(lifted.refused_login(), Some("alice@example.com"));
    assert_eq!(h.allow("198.51.100.44", "alice@example.com").status, 0);
    assert_eq!(h.store.self_unblocks(status.source, START).unwrap(), 1, "one unblock of the day");
}

/// Fetches a challenge for `ip` from `warden`, solves it and unblocks with it.
fn self_unblock_with_a_solved_challenge(warden: &Warden, ip: &str) -> Result<Arc<Ban>, SelfUnblockError> {
    let address: IpAddr = ip.parse().unwrap();
    let challenge = warden.self_service_challenge(address).expect("a challenge");
    warden.self_unblock(address, &crate::selfservice::solve(&challenge))
}

#[test]
fn the_daily_unblock_limit_ends_a_day_after_the_first_self_unblock() {
    let h = harness("[self_service]\nmax_unblocks_per_day = 1\ndifficulty = 1000\n");
    let ban = || (0..5).for_each(|_| h.fail("2001:db8::7", "alice@example.com"));
    ban();
    assert!(self_unblock_with_a_solved_challenge(&h.warden, "2001:db8::7").is_ok());
    h.clock.advance(Duration::from_secs(24 * 3600 - 60));
    ban();
    assert!(matches!(
        self_unblock_with_a_solved_challenge(&h.warden, "2001:db8::8"),
        Err(SelfUnblockError::LimitReached { count: 1 })
    ));
    assert_eq!(h.warden.visitor_status("2001:db8::9".parse().unwrap()).unblocks_today, Some(1), "the same /64");
    h.clock.advance(Duration::from_secs(60));
    assert!(self_unblock_with_a_solved_challenge(&h.warden, "2001:db8::7").is_ok(), "a new day");
}

#[test]
fn a_challenge_expires_by_the_wardens_clock_and_the_refusal_uses_up_no_unblock() {
    let h = harness("[self_service]\nchallenge_expires = \"1m\"\ndifficulty = 1000\n");
    (0..5).for_each(|_| h.fail("203.0.113.7", "alice@example.com"));
    let address: IpAddr = "203.0.113.7".parse().unwrap();
    let payload = crate::selfservice::solve(&h.warden.self_service_challenge(address).unwrap());
    h.clock.advance(Duration::from_secs(61));
    assert!(matches!(
        h.warden.self_unblock(address, &payload),
        Err(SelfUnblockError::Challenge(crate::selfservice::ChallengeError::Expired))
    ));
    assert_eq!(h.warden.visitor_status(address).unblocks_today, Some(0));
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, -1);
}

#[test]
fn why_keeps_a_stale_laptops_story_after_its_owner_logs_in_with_the_new_password() {
    let h = harness("");
    let home = "198.51.100.40";
    for _ in 0..3 {
        h.fail_with(home, "alice@example.com", "0ld0");
    }
    // From the fourth try the old password is refused before Dovecot checks it; the report
    // says so (policy_reject), and the try still counts in the laptop's story.
    for _ in 0..9 {
        assert_eq!(h.allow_with(home, "alice@example.com", "0ld0").status, -1);
        let text = body(home, "alice@example.com", "0ld0", r#","success":false,"policy_reject":true"#);
        let (attempt, outcome) = parse_attempt(text.as_bytes(), Command::Report).unwrap();
        assert!(h.warden.report(&attempt, outcome.unwrap()).ban.is_none());
    }
    h.succeed(home, "alice@example.com", "0f96");
    let lines = h.warden.why(home.parse().unwrap(), None).lines();
    let laptop = lines.iter().find(|l| l.starts_with("stale device:")).unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(laptop.contains("12 tries"), "{laptop}");
    assert!(laptop.contains("not counted: alice@example.com logged in successfully from here afterwards"), "{laptop}");
    let tolerance = lines.iter().find(|l| l.starts_with("tolerance:")).unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        tolerance.contains("banned at 7 distinct wrong passwords in 20 minutes instead of 5; 0 count now"),
        "{tolerance}"
    );
    assert!(lines[0].contains("0 of 7 failed logins"), "{}", lines[0]);
}

/// Runs the sweep over every shard, as a minute of the server's sweeper does.
fn sweep_all(h: &Harness) {
    for _ in 0..12 {
        h.warden.sweep_expired().unwrap();
    }
}

#[test]
fn a_slow_guesser_under_the_window_is_banned_for_a_day_by_the_long_window() {
    let h = harness("");
    let slow = "203.0.113.60";
    // One new password every ten minutes: never more than two in any 20 minutes.
    for n in 0..29 {
        h.fail(slow, &format!("user{n}@example.com"));
        assert_eq!(h.allow(slow, "alice@example.com").status, 0, "{} guesses over {} minutes", n + 1, n * 10);
        h.clock.advance(Duration::from_secs(10 * 60));
        // The sweeper compacts the guesses that left the window; they still count.
        sweep_all(&h);
    }
    let why = h.warden.why(slow.parse().unwrap(), None).lines().join("\n");
    assert!(
        why.contains("long window: 29 distinct wrong passwords from 203.0.113.60 in the last 1day; 30 ban it"),
        "{why}"
    );
    h.fail(slow, "user29@example.com");
    let refused = h.allow(slow, "alice@example.com");
    assert_eq!(refused.status, -1, "the 30th distinct guess within 24 hours bans");
    let ban = h.warden.ban(h.warden.source_for(format!("{slow}/32").parse().unwrap())).unwrap();
    assert_eq!(ban.reason, crate::bans::BanReason::LongWindow);
    assert_eq!(ban.failures, 30);
    assert_eq!(ban.expires_at, h.warden.now().plus(Duration::from_secs(24 * 3600)), "a one-day block");
    let why = h.warden.why(slow.parse().unwrap(), None).lines().join("\n");
    assert!(why.contains("after 30 distinct wrong passwords within the long window (a slow guesser)"), "{why}");
    let stored = h.store.active_bans(h.warden.now()).unwrap();
    assert_eq!(stored[0].reason, crate::bans::BanReason::LongWindow, "the reason is stored");
    let events = h.warden.events(&crate::events::EventFilter { limit: 100, ..Default::default() }).unwrap();
    assert!(events.events.iter().any(|e| e.detail.contains("(a slow guesser)")), "the block log says why");
}

#[test]
fn a_slow_guesser_spread_over_more_than_a_day_is_never_banned_and_forgiven_guesses_do_not_count() {
    let h = harness("");
    let home = "203.0.113.61";
    // 29 guesses an hour apart, then alice logs in: her own typos stop counting.
    for _ in 0..29 {
        h.fail(home, "alice@example.com");
        h.clock.advance(Duration::from_secs(20 * 60));
        sweep_all(&h);
    }
    h.succeed(home, "alice@example.com", "0f96");
    for _ in 0..5 {
        h.fail(home, "alice@example.com");
        h.clock.advance(Duration::from_secs(20 * 60));
    }
    assert_eq!(h.allow(home, "alice@example.com").status, 0, "29 forgiven, 5 counted of the 32 her login earns");
    // One guess every 50 minutes: 29 a day at most, never 30.
    let patient = "203.0.113.62";
    for n in 0..60 {
        h.fail(patient, &format!("user{n}@example.com"));
        h.clock.advance(Duration::from_secs(50 * 60));
        sweep_all(&h);
    }
    assert_eq!(h.allow(patient, "alice@example.com").status, 0);
}

#[test]
fn three_sources_of_one_slash_24_banned_within_the_hour_ban_the_subnet_but_not_an_office_in_it() {
    let h = harness("");
    let office = "192.0.2.200";
    for n in 0..3 {
        h.succeed(office, &format!("colleague{n}@example.com"), "0f96");
    }
    for attacker in ["192.0.2.1", "192.0.2.2"] {
        for _ in 0..5 {
            h.fail(attacker, "alice@example.com");
        }
        h.clock.advance(Duration::from_secs(20 * 60));
    }
    assert_eq!(h.allow("192.0.2.77", "alice@example.com").status, 0, "two banned sources are not a subnet ban");
    for _ in 0..5 {
        h.fail("192.0.2.3", "alice@example.com");
    }
    let refused = h.allow("192.0.2.77", "alice@example.com");
    assert_eq!(refused.status, -1, "a fourth address of the /24 is refused at once");
    assert_eq!(refused.msg, "Too many failed logins from 192.0.2.0/24; try again after 09:40 UTC");
    assert_eq!(h.allow("192.0.3.1", "alice@example.com").status, 0, "the next /24 is not");
    assert_eq!(h.allow(office, "colleague0@example.com").status, 0, "the office with good logins is not refused");
    let why = h.warden.why(office.parse().unwrap(), None).lines().join("\n");
    assert!(why.contains("192.0.2.0/24 is banned as a subnet until"), "{why}");
    assert!(why.contains("so it is not refused"), "{why}");
    let why = h.warden.why("192.0.2.77".parse().unwrap(), None).lines().join("\n");
    assert!(why.contains("refused: 192.0.2.77 is in 192.0.2.0/24, banned as a subnet until"), "{why}");
    assert!(why.contains("after 3 of its addresses were banned"), "{why}");

    let subnet = h.warden.source_for("192.0.2.0/24".parse().unwrap());
    assert_eq!(subnet.to_string(), "192.0.2.0/24");
    let listed = h.warden.bans().iter().find(|b| b.source == subnet).cloned().expect("listed");
    assert_eq!(listed.reason, crate::bans::BanReason::Subnet);
    assert_eq!(listed.expires_at, h.warden.now().plus(Duration::from_secs(3600)));
    let restarted = h.restarted();
    assert_eq!(restarted.ban(subnet).map(|b| b.reason), Some(crate::bans::BanReason::Subnet), "stored");
    assert!(h.warden.unban(subnet, &crate::principal::Principal::built_in_admin()).unwrap().is_some());
    assert_eq!(h.allow("192.0.2.77", "alice@example.com").status, 0, "lifted");
}

#[test]
fn sources_banned_further_apart_than_the_subnet_window_are_not_a_subnet_ban_and_trusted_addresses_stay_allowed() {
    let h = harness("[networks]\ntrusted = [\"192.0.2.0/25\"]\n");
    for attacker in ["192.0.2.130", "192.0.2.131", "192.0.2.132"] {
        for _ in 0..5 {
            h.fail(attacker, "alice@example.com");
        }
        h.clock.advance(Duration::from_secs(31 * 60));
    }
    assert_eq!(h.allow("192.0.2.177", "alice@example.com").status, 0, "three bans over 62 minutes");
    for attacker in ["192.0.2.133", "192.0.2.134"] {
        for _ in 0..5 {
            h.fail(attacker, "alice@example.com");
        }
    }
    assert_eq!(h.allow("192.0.2.177", "alice@example.com").status, -1, "three within the hour");
    assert_eq!(h.allow("192.0.2.77", "alice@example.com").status, 0, "a trusted network is never refused");
    let off = harness("[autoban]\nsubnet_bans = 0\n");
    for attacker in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"] {
        for _ in 0..5 {
            off.fail(attacker, "alice@example.com");
        }
    }
    assert_eq!(off.allow("192.0.2.77", "alice@example.com").status, 0, "0 turns subnet bans off");
    assert_eq!(off.warden.bans().len(), 4);
}

#[test]
fn a_reset_after_a_password_change_forgives_the_login_everywhere_and_lifts_only_the_bans_it_alone_caused() {
    let h = harness("");
    // The laptop's old password, quarantined at home.
    for _ in 0..3 {
        h.fail_with("198.51.100.40", "alice@example.com", "0ld0");
    }
    assert_eq!(h.allow_with("198.51.100.40", "alice@example.com", "0ld0").status, -1);
    // A phone that tried five old passwords banned the café's address.
    for pwhash in ["0001", "0002", "0003", "0004", "0005"] {
        h.fail_with("203.0.113.60", "alice@example.com", pwhash);
    }
    // An attacker banned elsewhere, guessing alice and bob.
    for (login, pwhash) in [("alice@example.com", "00a1"), ("bob@example.com", "00b1")] {
        h.fail_with("203.0.113.70", login, pwhash);
    }
    for n in 0..3 {
        h.fail("203.0.113.70", &format!("carol{n}@example.com"));
    }
    assert_eq!(h.warden.bans().len(), 2);

    let reset = h.warden.reset_login("Alice@Example.com", &crate::principal::Principal::built_in_admin()).unwrap();
    assert_eq!(reset.quarantines_ended, 1);
    let lifted: Vec<String> = reset.bans_lifted.iter().map(|b| b.source.to_string()).collect();
    assert_eq!(lifted, ["203.0.113.60"], "only the ban alice's guesses alone caused");
    assert_eq!(h.allow_with("198.51.100.40", "alice@example.com", "0ld0").status, 0, "quarantine ended");
    assert_eq!(h.allow("203.0.113.60", "alice@example.com").status, 0);
    assert_eq!(h.allow("203.0.113.70", "bob@example.com").status, -1, "the attacker stays banned");
    // Alice's old guesses no longer count at home: four new typos do not ban it.
    for _ in 0..4 {
        h.fail("198.51.100.40", "dave@example.com");
    }
    assert_eq!(h.allow("198.51.100.40", "dave@example.com").status, 0);
}

#[test]
fn a_reset_lifts_the_logins_own_refusals_on_offices() {
    let h = harness("");
    let office = "198.51.100.20";
    h.succeed(office, "bob@example.com", "0f96");
    for _ in 0..5 {
        h.fail(office, "alice@example.com");
    }
    assert_eq!(h.allow(office, "alice@example.com").status, -1, "alice alone is refused");
    assert_eq!(h.allow(office, "bob@example.com").status, 0);
    let reset = h.warden.reset_login("alice@example.com", &crate::principal::Principal::built_in_admin()).unwrap();
    assert_eq!(reset.bans_lifted.len(), 1);
    assert_eq!(h.allow(office, "alice@example.com").status, 0);
}

#[test]
fn the_host_firewall_drops_banned_sources_and_blocked_networks_but_never_a_login_refusal() {
    let h = harness("[networks]\nblocked = [\"192.0.2.0/24\"]\ntrusted = [\"100.64.0.0/10\"]\n");
    let woken = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = woken.clone();
    h.warden.watch_drops(Box::new(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    office(&h, "198.51.100.40");
    for _ in 0..5 {
        h.fail("198.51.100.40", "alice@example.com");
        h.fail("203.0.113.7", "alice@example.com");
    }
    let source = h.warden.source_for("198.51.100.40/32".parse().unwrap());
    assert!(h.warden.login_refusal(source, "alice@example.com").is_some(), "alice is refused from the office");
    let drops = h.warden.firewall_drops();
    let banned: Vec<String> = drops.banned.iter().map(|e| e.network.to_string()).collect();
    assert_eq!(banned, ["203.0.113.7/32", "192.0.2.0/24"], "the office's refusal of one login drops nothing");
    let ban = h.warden.ban(h.warden.source_for("203.0.113.7/32".parse().unwrap())).unwrap();
    assert_eq!(drops.banned[0].ends, Some(ban.expires_at));
    assert_eq!(drops.banned[1].ends, None);
    assert_eq!(drops.trusted.iter().map(|e| e.network.to_string()).collect::<Vec<_>>(), ["100.64.0.0/10"]);
    let before = woken.load(std::sync::atomic::Ordering::Relaxed);
    assert!(before >= 1, "placing the ban woke the firewall's worker");
    h.warden
        .add_to_list(
            ListKind::Blocked,
            "10.9.0.0/16".parse().unwrap(),
            None,
            "",
            false,
            &crate::principal::Principal::built_in_admin(),
        )
        .unwrap();
    assert!(woken.load(std::sync::atomic::Ordering::Relaxed) > before, "a list change wakes it too");
}

#[test]
fn observe_mode_drops_nothing_at_the_host_firewall_until_it_is_lifted() {
    let h = harness(
        "[server]\nmode = \"observe\"\n[networks]\nblocked = [\"192.0.2.0/24\"]\nblocked_observe = [\"198.51.100.0/24\"]\n",
    );
    for _ in 0..5 {
        h.fail("203.0.113.7", "alice@example.com");
    }
    h.warden
        .add_to_list(
            ListKind::Blocked,
            "10.9.0.0/16".parse().unwrap(),
            None,
            "trial",
            true,
            &crate::principal::Principal::built_in_admin(),
        )
        .unwrap();
    let banned = |h: &Harness| -> Vec<String> {
        h.warden.firewall_drops().banned.iter().map(|e| e.network.to_string()).collect()
    };
    assert_eq!(banned(&h), ["192.0.2.0/24"], "no ban while the server observes, no observed entry ever");
    reload(&h, "[networks]\nblocked = [\"192.0.2.0/24\"]\nblocked_observe = [\"198.51.100.0/24\"]\n");
    assert_eq!(banned(&h), ["203.0.113.7/32", "192.0.2.0/24"], "the ban recorded in observe mode is enforced");
}

fn banned(h: &Harness, ip: &str) -> Source {
    for _ in 0..5 {
        h.fail(ip, "alice@example.com");
    }
    h.warden.source_for(format!("{ip}/32").parse().unwrap())
}

#[test]
fn a_lengthened_ban_refuses_past_its_old_end_survives_a_restart_and_tells_the_host_firewall() {
    let h = harness("");
    let source = banned(&h, "203.0.113.7");
    let woken = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = woken.clone();
    h.warden.watch_drops(Box::new(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    let old_end = h.warden.ban(source).unwrap().expires_at;
    let two_hours = Duration::from_secs(2 * 3600);
    let support = Principal::built_in_admin();
    let ban = h.warden.lengthen_ban(source, None, Lengthening::By(two_hours), &support).unwrap();
    assert_eq!(ban.expires_at, old_end.plus(two_hours));
    assert!(woken.load(std::sync::atomic::Ordering::Relaxed) > 0, "the firewall's worker was woken");
    assert_eq!(h.warden.firewall_drops().banned[0].ends, Some(old_end.plus(two_hours)));
    h.clock.advance(Duration::from_secs(3600));
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, -1, "refused after the ban's old end");
    let restarted = h.restarted();
    assert_eq!(restarted.ban(source).unwrap().expires_at, old_end.plus(two_hours), "the store has the new end");
    let filter =
        crate::audit::AuditFilter { action: Some(AuditAction::BanLengthened), limit: 10, ..Default::default() };
    let (records, _) = h.warden.audit(&filter).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].target, "203.0.113.7");
    h.clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(h.allow("203.0.113.7", "alice@example.com").status, 0, "it ends at the new end");
}

#[test]
fn a_ban_is_not_shortened_nor_lengthened_past_thirty_days_nor_is_an_address_without_one() {
    let h = harness("");
    let source = banned(&h, "203.0.113.7");
    let end = h.warden.ban(source).unwrap().expires_at;
    let actor = Principal::built_in_admin();
    let field = |result: Result<Arc<Ban>, LengthenError>| match result {
        Err(LengthenError::Invalid { field, message }) => (field, message),
        other => panic!("{other:?}"),
    };
    let (name, message) =
        field(h.warden.lengthen_ban(source, None, Lengthening::Until(end.minus(Duration::from_secs(60))), &actor));
    assert_eq!(name, "until");
    assert!(message.contains("lift it instead"), "{message}");
    let (name, message) =
        field(h.warden.lengthen_ban(source, None, Lengthening::By(Duration::from_secs(31 * 24 * 3600)), &actor));
    assert_eq!(name, "by");
    assert!(message.contains("30 days"), "{message}");
    assert_eq!(h.warden.ban(source).unwrap().expires_at, end, "nothing changed");
    let free = h.warden.source_for("198.51.100.1/32".parse().unwrap());
    assert!(matches!(
        h.warden.lengthen_ban(free, None, Lengthening::By(Duration::from_secs(60)), &actor),
        Err(LengthenError::NotBanned(_))
    ));
}

#[test]
fn lengthening_reads_a_length_or_a_time_and_names_the_field_it_could_not_read() {
    assert_eq!(Lengthening::from_fields(Some("2h"), None).unwrap(), Lengthening::By(Duration::from_secs(7200)));
    assert!(matches!(Lengthening::from_fields(None, Some("2026-12-24T18:00:00Z")).unwrap(), Lengthening::Until(_)));
    let field = |by, until| match Lengthening::from_fields(by, until) {
        Err(LengthenError::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(Some("soon"), None), "by");
    assert_eq!(field(None, Some("tomorrow")), "until");
    assert_eq!(field(Some("2h"), Some("2026-12-24T18:00:00Z")), "by");
    assert_eq!(field(None, None), "by");
}

#[test]
fn the_overview_counts_logins_refusals_and_bans_by_the_minute_and_forgets_them_after_a_day() {
    use crate::activity::{Activity, Kind, SOURCE_BAN};
    let h = harness("");
    assert_eq!(h.allow("192.0.2.1", "alice@example.com").status, 0);
    for _ in 0..20 {
        if !h.warden.bans().is_empty() {
            break;
        }
        h.fail("198.51.100.9", "bob@example.com");
    }
    assert_eq!(h.allow("198.51.100.9", "bob@example.com").status, -1, "banned");
    let hour = Activity::total(&h.warden.recent_activity().last_hour);
    assert_eq!((hour.logins(), hour.refusals(), hour.bans()), (1, 1, 1));
    assert_eq!(hour.count(Kind::Refused(0)), 1, "refused by the ban");
    assert_eq!(hour.count(Kind::Ban(SOURCE_BAN)), 1);
    h.clock.advance(Duration::from_secs(2 * 3600));
    let recent = h.warden.recent_activity();
    assert_eq!(Activity::total(&recent.last_hour).logins(), 0, "two hours later the last hour is quiet");
    assert_eq!(Activity::total(&recent.last_day).logins(), 1, "the day still has it");
    h.clock.advance(Duration::from_secs(23 * 3600));
    assert_eq!(Activity::total(&h.warden.recent_activity().last_day).bans(), 0, "a day later it is gone");
}

#[test]
fn a_stale_devices_quarantine_is_listed_until_it_ends_and_shows_in_the_logins_history() {
    let h = harness("[stale_passwords]\nquarantine_for = \"10m\"\n");
    for _ in 0..3 {
        h.fail_with("203.0.113.7", "alice@example.com", "old1");
    }
    let quarantined = h.warden.quarantines(10);
    assert_eq!(quarantined.len(), 1);
    assert_eq!((quarantined[0].0.to_string(), &*quarantined[0].1.login), ("203.0.113.7".into(), "alice@example.com"));
    h.succeed("192.0.2.1", "Alice@Example.com", "right");
    let history = h.warden.login_history("ALICE@example.com").unwrap();
    assert_eq!(history.places.len(), 1, "the success, found in another spelling");
    assert_eq!(
        (history.places[0].known.source.to_string(), history.places[0].known.protocol.as_str()),
        ("192.0.2.1".into(), "imap")
    );
    assert_eq!(history.failures.len(), 1, "the stale device's password");
    h.clock.advance(Duration::from_secs(11 * 60));
    assert!(h.warden.quarantines(10).is_empty(), "the quarantine ended");
}
