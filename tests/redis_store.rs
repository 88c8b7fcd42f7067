//! The Redis backend of the store against real Redis servers (tests/support/redis.rs): the
//! behaviours the SQLite backend's tests check, on one server and on a three-master Redis
//! Cluster; the announcements every write publishes; prefixes; unreadable values; and outages
//! (Redis unreachable at start, killed mid-use, frozen).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mailwarden::access::{AccessEntry, ListKind, Origin};
use mailwarden::bans::{Ban, BanCause, BanGuess, BanReason};
use mailwarden::clock::Timestamp;
use mailwarden::events::{Event, EventFilter, EventKind};
use mailwarden::firewall::{Action, KeyedRuleSet, Protocols, RuleSet, RuleSetOrigin, RuleSpec};
use mailwarden::journal::KnownSource;
use mailwarden::network::{Source, SourceGrouping, parse_ip};
use mailwarden::store::{Announcement, Change, DailyCount, RedisSettings, RedisStore, Store, StoreError};
use support::redis::{Persistence, RedisCluster, RedisServer};

const NOW: Timestamp = Timestamp(1_795_334_400_000);
const BUDGET: Duration = Duration::from_millis(50);

/// Where the stores of a check connect: one server or a cluster's nodes.
struct Target {
    urls: Vec<String>,
    cluster: bool,
}

impl Target {
    fn server(server: &RedisServer) -> Target {
        Target { urls: vec![server.url()], cluster: false }
    }

    fn cluster(cluster: &RedisCluster) -> Target {
        Target { urls: cluster.urls(), cluster: true }
    }

    fn settings(&self, prefix: &str) -> RedisSettings {
        RedisSettings {
            urls: self.urls.clone(),
            cluster: self.cluster,
            prefix: prefix.into(),
            budget: BUDGET,
            ca_file: None,
        }
    }

    /// A store under `prefix`, which must have reached Redis.
    fn store(&self, prefix: &str) -> RedisStore {
        let store = RedisStore::open(&self.settings(prefix)).expect("valid settings");
        assert!(store.is_up(), "the store did not reach Redis at {:?}", self.urls);
        store
    }
}

/// A prefix no other check uses, so checks can share a server.
fn fresh_prefix(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("t{}-{name}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn source(text: &str) -> Source {
    Source::parse(text).unwrap()
}

fn ban(address: &str, expires_in_ms: i64) -> Ban {
    Ban {
        source: SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 }.source_of(parse_ip(address).unwrap()),
        refused_login: None,
        created_at: NOW,
        expires_at: Timestamp(NOW.0 + expires_in_ms),
        reason: BanReason::Autoban,
        failures: 5,
        cause: BanCause {
            login: "alice@example.com".into(),
            protocol: "imap".into(),
            device_id: "\"name\" \"Mail\"".into(),
            guesses: vec![BanGuess {
                login: "alice@example.com".into(),
                protocol: "imap".into(),
                device_id: String::new(),
                failures: 3,
                first_seen: NOW.0 - 5000,
                last_seen: NOW.0 - 1000,
            }],
        },
    }
}

fn entry(list: ListKind, network: &str, expires_at: Option<Timestamp>) -> AccessEntry {
    AccessEntry {
        observe: false,
        list,
        network: network.parse().unwrap(),
        comment: "office".into(),
        created_at: NOW,
        expires_at,
        origin: Origin::Api,
        added_by: "desk".into(),
    }
}

fn event(at: i64, kind: EventKind, ip: &str, login: &str) -> Event {
    Event {
        observed: false,
        at: Timestamp(at),
        kind,
        login: login.into(),
        ip: ip.parse().ok(),
        protocol: "imap".into(),
        device_id: String::new(),
        rule: None,
        detail: String::new(),
    }
}

fn rule_set() -> RuleSet {
    let spec: RuleSpec = serde_json::from_str(r#"{"action":"block","country":["CN"]}"#).unwrap();
    RuleSet {
        observe: false,
        rules: vec![spec.parse().unwrap()],
        default: Action::Allow,
        protocols: Protocols::MAIL_APPS,
    }
}

/// Runs a raw command through the store's connection (to plant or inspect keys).
fn raw<T: redis::FromRedisValue>(store: &RedisStore, command: &redis::Cmd) -> T {
    store.with_connection("test", |connection| command.query(connection)).expect("raw Redis command")
}

// ----- the checks, run on one server and on a cluster -----

fn check_bans_round_trip_and_survive_a_new_store(target: &Target) {
    let prefix = fresh_prefix("bans");
    let stored = ban("2001:db8:1:2::7", 60_000);
    {
        let store = target.store(&prefix);
        store.save_ban(&stored).unwrap();
        store.save_ban(&ban("203.0.113.9", -1)).unwrap();
    }
    let store = target.store(&prefix);
    assert_eq!(store.active_bans(NOW).unwrap(), vec![stored.clone()]);
    assert_eq!(store.ban(stored.source).unwrap(), Some(stored.clone()));
    assert_eq!(store.ban(source("192.0.2.1")).unwrap(), None);
    assert_eq!(store.delete_expired_bans(NOW).unwrap(), 1);
    assert_eq!(store.delete_expired_bans(NOW).unwrap(), 0);
    assert!(store.delete_ban(stored.source, None, NOW).unwrap());
    assert!(!store.delete_ban(stored.source, None, NOW).unwrap());
    assert!(store.active_bans(NOW).unwrap().is_empty());
    assert_eq!(store.backend(), "redis");
    // Every reason, on a subnet too, comes back as it was placed.
    for (address, reason) in [("192.0.2.7", BanReason::LongWindow), ("198.51.100.7", BanReason::Subnet)] {
        let mut placed = ban(address, 60_000);
        placed.reason = reason;
        placed.source = SourceGrouping { ipv4_prefix: 24, ipv6_prefix: 48 }.source_of(parse_ip(address).unwrap());
        store.save_ban(&placed).unwrap();
        assert_eq!(target.store(&prefix).ban(placed.source).unwrap(), Some(placed));
    }
    store.close().unwrap();
}

fn check_list_entries_round_trip_with_and_without_expiry(target: &Target) {
    let prefix = fresh_prefix("lists");
    let forever = entry(ListKind::Trusted, "192.0.2.0/24", None);
    let brief = AccessEntry {
        comment: String::new(),
        ..entry(ListKind::Blocked, "2001:db8::/48", Some(Timestamp(NOW.0 + 1000)))
    };
    {
        let store = target.store(&prefix);
        store.save_access_entry(&forever).unwrap();
        store.save_access_entry(&brief).unwrap();
    }
    let store = target.store(&prefix);
    let mut entries = store.access_entries().unwrap();
    entries.sort_by_key(|e| e.list);
    assert_eq!(entries, vec![forever.clone(), brief.clone()]);
    assert_eq!(store.delete_expired_access_entries(Timestamp(NOW.0 + 999)).unwrap(), 0);
    assert_eq!(store.delete_expired_access_entries(Timestamp(NOW.0 + 1000)).unwrap(), 1);
    assert!(store.delete_access_entry(ListKind::Trusted, forever.network).unwrap());
    assert!(!store.delete_access_entry(ListKind::Blocked, forever.network).unwrap());
    assert!(store.access_entries().unwrap().is_empty());
}

fn check_events_are_stored_filtered_newest_first_and_pruned(target: &Target) {
    let store = target.store(&fresh_prefix("events"));
    store
        .save_events(&[
            event(1, EventKind::Ban, "203.0.113.7", "alice@example.com"),
            event(2, EventKind::FirewallRule, "198.51.100.7", "alice@example.com"),
            event(3, EventKind::Ban, "203.0.113.7", "bob@example.com"),
        ])
        .unwrap();
    let query = |filter: EventFilter| store.events(&EventFilter { limit: 10, ..filter }).unwrap().events;
    let all = query(EventFilter::default());
    assert_eq!(all.iter().map(|e| e.at.0).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(all[2], event(1, EventKind::Ban, "203.0.113.7", "alice@example.com"));
    assert_eq!(query(EventFilter { ip: "203.0.113.7".parse().ok(), ..Default::default() }).len(), 2);
    assert_eq!(query(EventFilter { login: Some("alice@example.com".into()), ..Default::default() }).len(), 2);
    assert_eq!(query(EventFilter { kind: Some(EventKind::FirewallRule), ..Default::default() }).len(), 1);
    assert_eq!(query(EventFilter { since: Some(Timestamp(2)), ..Default::default() }).len(), 2);
    assert_eq!(store.events(&EventFilter { limit: 1, ..Default::default() }).unwrap().events[0].at.0, 3);
    assert!(store.events(&EventFilter { limit: 0, ..Default::default() }).unwrap().events.is_empty());
    assert_eq!(store.prune_events(Timestamp(2), 10, u64::MAX).unwrap(), 1);
    assert_eq!(store.prune_events(Timestamp(0), 1, u64::MAX).unwrap(), 1);
    assert_eq!(query(EventFilter::default()).len(), 1);
}

fn check_events_are_found_by_login_in_any_case_and_paged_with_their_total(target: &Target) {
    let store = target.store(&fresh_prefix("event-pages"));
    store
        .save_events(&[
            event(1, EventKind::Ban, "203.0.113.7", "Alice@Example.com"),
            event(2, EventKind::FirewallRule, "198.51.100.7", "alice@example.com"),
            event(3, EventKind::Ban, "203.0.113.7", "bob@example.com"),
            event(4, EventKind::Ban, "192.0.2.4", "Ärzte@example.de"),
        ])
        .unwrap();
    let page = |filter: EventFilter| {
        let page = store.events(&filter).unwrap();
        (page.events.iter().map(|e| e.at.0).collect::<Vec<_>>(), page.total, page.total_exact)
    };
    let login = |login: &str| page(EventFilter { login: Some(login.into()), limit: 10, ..Default::default() });
    assert_eq!(login("ÄRZTE@Example.de"), (vec![4], 1, true), "the login filter ignores case, also outside ASCII");
    assert_eq!(login("ALICE@example.com"), (vec![2, 1], 2, true));
    assert_eq!(page(EventFilter { limit: 2, offset: 1, ..Default::default() }), (vec![3, 2], 4, true));
    assert_eq!(page(EventFilter { limit: 1, offset: 4, ..Default::default() }), (vec![], 4, true));
    let bans = EventFilter { kind: Some(EventKind::Ban), limit: 1, offset: 1, ..Default::default() };
    assert_eq!(page(bans), (vec![3], 3, true), "a filter counts every match, not only the page");
}

fn check_events_are_found_by_message_text_and_until_a_time(target: &Target) {
    let store = target.store(&fresh_prefix("event-text"));
    let with = |at: i64, detail: &str| Event {
        detail: detail.into(),
        ..event(at, EventKind::FirewallRule, "203.0.113.7", "alice@example.com")
    };
    store
        .save_events(&[
            with(1, "Access denied by email firewall rule no. 1"),
            with(2, "100% blocked"),
            with(3, "rule_1 applies"),
            Event { observed: true, ..with(4, "ACCESS DENIED by default") },
        ])
        .unwrap();
    let page = |filter: EventFilter| {
        let page = store.events(&EventFilter { limit: 10, ..filter }).unwrap();
        (page.events.iter().map(|e| e.at.0).collect::<Vec<_>>(), page.total)
    };
    let text = |text: &str| page(EventFilter { text: Some(text.into()), ..Default::default() });
    assert_eq!(text("access denied"), (vec![4, 1], 2), "as SQLite's LIKE: ASCII case ignored");
    assert_eq!(text("0%"), (vec![2], 1));
    assert_eq!(text("e_1"), (vec![3], 1));
    assert_eq!(page(EventFilter { until: Some(Timestamp(2)), ..Default::default() }), (vec![2, 1], 2));
    let both = EventFilter { text: Some("RULE".into()), until: Some(Timestamp(2)), ..Default::default() };
    assert_eq!(page(both), (vec![1], 1), "the total counts the matches, not the stream");
    let observed = EventFilter { observed: Some(true), ..Default::default() };
    assert_eq!(page(observed), (vec![4], 1), "so does the observe-mode filter's");
}

fn check_late_events_come_out_in_time_order(target: &Target) {
    let store = target.store(&fresh_prefix("late-events"));
    let at = |t: i64| event(NOW.0 + t, EventKind::Blocked, "192.0.2.9", "carol@example.com");
    store.save_events(&[at(10), at(30)]).unwrap();
    // Another node's batch arrives after, with older events among newer ones.
    store.save_events(&[at(20), at(40), at(5)]).unwrap();
    let times = |filter: EventFilter| -> Vec<i64> {
        store.events(&filter).unwrap().events.iter().map(|e| e.at.0 - NOW.0).collect()
    };
    assert_eq!(times(EventFilter { limit: 10, ..Default::default() }), [40, 30, 20, 10, 5]);
    assert_eq!(times(EventFilter { limit: 2, ..Default::default() }), [40, 30]);
    assert_eq!(
        times(EventFilter { limit: 10, since: Some(Timestamp(NOW.0 + 20)), ..Default::default() }),
        [40, 30, 20]
    );
    // Pruning by age never drops an event younger than the limit, however late it came.
    store.prune_events(Timestamp(NOW.0 + 15), 100, u64::MAX).unwrap();
    let kept = times(EventFilter { limit: 10, ..Default::default() });
    assert!(kept.starts_with(&[40, 30, 20]), "{kept:?}");
}

fn check_firewall_rule_sets_round_trip(target: &Target) {
    let prefix = fresh_prefix("rules");
    let store = target.store(&prefix);
    store.save_firewall_rule_set("alice@example.com", &rule_set()).unwrap();
    let reopened = target.store(&prefix);
    assert_eq!(
        reopened.firewall_rule_sets().unwrap(),
        vec![KeyedRuleSet { key: "alice@example.com".into(), origin: RuleSetOrigin::Api, rule_set: rule_set() }]
    );
    assert!(store.delete_firewall_rule_set("alice@example.com").unwrap());
    assert!(!store.delete_firewall_rule_set("alice@example.com").unwrap());
    assert!(reopened.firewall_rule_sets().unwrap().is_empty());
}

fn check_known_sources_keep_the_latest_success_and_are_bounded_per_account(target: &Target) {
    let store = target.store(&fresh_prefix("known"));
    let known = |login: &str, src: &str, at: i64| KnownSource::bare(login, source(src), Timestamp(at));
    store
        .save_known_sources(&[
            known("alice", "203.0.113.7", 10),
            known("alice", "198.51.100.7", 20),
            known("alice", "203.0.113.7", 30),
            known("alice", "203.0.113.7", 5),
            known("bob", "192.0.2.1", 15),
        ])
        .unwrap();
    assert_eq!(
        store.known_sources("alice", Timestamp(0), 10).unwrap(),
        vec![source("203.0.113.7"), source("198.51.100.7")]
    );
    assert_eq!(store.known_sources("alice", Timestamp(25), 10).unwrap(), vec![source("203.0.113.7")]);
    assert_eq!(store.known_sources("alice", Timestamp(0), 1).unwrap(), vec![source("203.0.113.7")]);
    let pair = |k: &KnownSource| (k.login.clone(), k.source.to_string(), k.at.0);
    assert_eq!(
        store.recent_known_sources(Timestamp(12), 10).unwrap().iter().map(pair).collect::<Vec<_>>(),
        vec![
            ("bob".into(), "192.0.2.1".into(), 15),
            ("alice".into(), "198.51.100.7".into(), 20),
            ("alice".into(), "203.0.113.7".into(), 30)
        ],
        "every account's sources since then, oldest first"
    );
    assert_eq!(
        store.recent_known_sources(Timestamp(0), 2).unwrap().iter().map(pair).collect::<Vec<_>>(),
        vec![("alice".into(), "198.51.100.7".into(), 20), ("alice".into(), "203.0.113.7".into(), 30)],
        "the newest within the limit"
    );
    assert_eq!(store.prune_known_sources(Timestamp(0), 1).unwrap(), 1);
    assert_eq!(store.known_sources("alice", Timestamp(0), 10).unwrap(), vec![source("203.0.113.7")]);
    assert_eq!(store.prune_known_sources(Timestamp(16), 10).unwrap(), 1, "bob's is too old");
    assert!(store.known_sources("bob", Timestamp(0), 10).unwrap().is_empty());
    assert_eq!(store.known_sources("alice", Timestamp(0), 10).unwrap(), vec![source("203.0.113.7")]);
}

fn check_a_logins_places_carry_the_protocol_and_app_of_their_last_success(target: &Target) {
    let store = target.store(&fresh_prefix("places"));
    let known = |src: &str, at: i64, protocol: &str, app: &str| KnownSource {
        login: "alice".into(),
        source: source(src),
        at: Timestamp(at),
        protocol: protocol.into(),
        app: app.into(),
    };
    store
        .save_known_sources(&[
            known("203.0.113.7", 10, "imap", "\"name\" \"Thunderbird\""),
            known("198.51.100.7", 20, "pop3", ""),
            known("203.0.113.7", 30, "submission", "\"name\" \"K-9\""),
        ])
        .unwrap();
    assert_eq!(
        store.login_places("alice", 10).unwrap(),
        vec![known("203.0.113.7", 30, "submission", "\"name\" \"K-9\""), known("198.51.100.7", 20, "pop3", "")]
    );
    assert_eq!(store.login_places("alice", 1).unwrap().len(), 1, "at most the limit");
    assert_eq!(store.login_places("ALICE", 10).unwrap().len(), 2, "in any spelling");
    assert!(store.login_places("bob", 10).unwrap().is_empty());
    store.prune_known_sources(Timestamp(0), 1).unwrap();
    assert_eq!(
        store.login_places("alice", 10).unwrap(),
        vec![known("203.0.113.7", 30, "submission", "\"name\" \"K-9\"")],
        "pruned with the known sources: all but the newest place"
    );
    store.prune_known_sources(Timestamp(31), 10).unwrap();
    assert!(store.login_places("alice", 10).unwrap().is_empty(), "and the places too old");
}

fn check_every_write_announces_its_change(target: &Target) {
    let store = target.store(&fresh_prefix("announce"));
    let mut connection = store.pubsub_connection(Duration::from_secs(5)).unwrap();
    let mut pubsub = connection.as_pubsub();
    pubsub.subscribe(store.channel()).unwrap();

    let banned = ban("2001:db8:1:2::7", 60_000);
    let trusted = entry(ListKind::Trusted, "192.0.2.0/24", None);
    store.save_ban(&banned).unwrap();
    // Neither the block log, nor known sources, nor sweeps of ended items announce anything.
    store.save_events(&[event(NOW.0, EventKind::Ban, "192.0.2.1", "alice@example.com")]).unwrap();
    store.save_known_sources(&[KnownSource::bare("alice", source("192.0.2.1"), NOW)]).unwrap();
    store.delete_expired_bans(Timestamp(NOW.0 + 120_000)).unwrap();
    store.delete_expired_access_entries(NOW).unwrap();
    store.delete_ban(banned.source, None, NOW).unwrap();
    store.save_access_entry(&trusted).unwrap();
    store.delete_access_entry(ListKind::Trusted, trusted.network).unwrap();
    store.save_firewall_rule_set("@example.com", &rule_set()).unwrap();
    store.delete_firewall_rule_set("@example.com").unwrap();
    // A token's creation and revocation are announced; its use and the audit trail are not.
    let token = mailwarden::tokens::TokenRecord {
        name: "desk".into(),
        scope: mailwarden::principal::Scope::Support,
        digest: mailwarden::tokens::digest("mwt_x"),
        created_at: NOW,
        expires_at: None,
        last_used: None,
    };
    store.create_token(&token).unwrap();
    store.touch_token("desk", NOW).unwrap();
    let record = mailwarden::audit::AuditRecord::new(
        NOW,
        "ops",
        mailwarden::audit::AuditAction::TokenCreated,
        "desk",
        String::new(),
    );
    store.save_audit(&record).unwrap();
    store.delete_token("desk").unwrap();

    let expected = [
        Change::BanSaved { source: "2001:db8:1:2::/64".into() },
        Change::BanDeleted { source: "2001:db8:1:2::/64".into() },
        Change::AccessEntries,
        Change::AccessEntries,
        Change::RuleSet { key: "@example.com".into() },
        Change::RuleSet { key: "@example.com".into() },
        Change::Tokens,
        Change::Tokens,
    ];
    for change in expected {
        let message = pubsub.get_message().expect("an announcement within 5 s");
        assert_eq!(message.get_channel_name(), store.channel());
        let payload: String = message.get_payload().unwrap();
        let announcement: Announcement = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{payload}: {e}"));
        assert_eq!(announcement, Announcement { node: store.node_id().to_string(), change }, "{payload}");
    }
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(pubsub.get_message().is_err(), "nothing else was announced");
}

fn check_a_login_refusal_is_stored_announced_and_lifted_apart_from_its_sources_ban(target: &Target) {
    let store = target.store(&fresh_prefix("refusals"));
    let mut connection = store.pubsub_connection(Duration::from_secs(5)).unwrap();
    let mut pubsub = connection.as_pubsub();
    pubsub.subscribe(store.channel()).unwrap();
    let whole = ban("203.0.113.7", 60_000);
    let mut refusal = ban("203.0.113.7", 30_000);
    refusal.refused_login = Some("alice@example.com".into());
    let history = store.failures_key(refusal.source);
    raw::<i64>(&store, redis::cmd("HSET").arg(&history).arg("guess").arg("{}"));

    store.save_ban(&refusal).unwrap();
    assert_eq!(raw::<i64>(&store, redis::cmd("EXISTS").arg(&history)), 1, "the source's other guesses still count");
    assert_eq!(store.ban(refusal.source).unwrap(), None, "not a ban of the whole source");
    assert_eq!(store.scoped_ban(refusal.source, Some("alice@example.com")).unwrap(), Some(refusal.clone()));
    let in_old_hash: i64 = raw(&store, redis::cmd("HLEN").arg(store.key("bans")));
    assert_eq!(in_old_hash, 0, "an older node reading {{prefix}}bans never sees it");
    store.save_ban(&whole).unwrap();
    let mut loaded = store.active_bans(NOW).unwrap();
    loaded.sort_by_key(|b| b.expires_at);
    assert_eq!(loaded, vec![refusal.clone(), whole.clone()]);
    assert!(store.delete_ban(refusal.source, Some("alice@example.com"), NOW).unwrap());
    assert_eq!(store.ban(whole.source).unwrap(), Some(whole.clone()), "lifting the refusal keeps the ban");
    store.save_ban(&refusal).unwrap();
    assert_eq!(store.delete_expired_bans(Timestamp(NOW.0 + 45_000)).unwrap(), 1, "the refusal ended first");
    assert_eq!(store.active_bans(NOW).unwrap(), vec![whole.clone()]);

    let source = "203.0.113.7".to_string();
    let login = "alice@example.com".to_string();
    for change in [
        Change::LoginRefusalSaved { source: source.clone(), login: login.clone() },
        Change::BanSaved { source: source.clone() },
        Change::LoginRefusalDeleted { source: source.clone(), login: login.clone() },
        Change::LoginRefusalSaved { source, login },
    ] {
        let payload: String = pubsub.get_message().expect("an announcement within 5 s").get_payload().unwrap();
        let announcement: Announcement = serde_json::from_str(&payload).unwrap();
        assert_eq!(announcement.change, change, "{payload}");
    }
}

fn check_saving_or_lifting_a_ban_forgets_the_sources_failure_history(target: &Target) {
    let store = target.store(&fresh_prefix("forget"));
    let banned = ban("203.0.113.7", 60_000);
    let history = store.failures_key(banned.source);
    assert_eq!(history, store.key("fail:{203.0.113.7}"));
    let plant = || raw::<i64>(&store, redis::cmd("HSET").arg(&history).arg("guess").arg("{}"));
    let exists = || raw::<i64>(&store, redis::cmd("EXISTS").arg(&history)) == 1;
    plant();
    store.save_ban(&banned).unwrap();
    assert!(!exists(), "saving the ban deletes the failure history");
    plant();
    let lifted_at = Timestamp(NOW.0 + 10_000);
    store.delete_ban(banned.source, None, lifted_at).unwrap();
    assert!(!exists(), "lifting the ban deletes the failure history");
}

/// A node sends its counted failures in batches, so the save of a ban (or a lift) can reach
/// Redis before failures that happened earlier: those must not be counted again, or the
/// source would be banned a second time for the failures its first ban (or lift) consumed.
fn check_a_failure_from_before_a_ban_or_a_lift_that_arrives_after_it_is_not_counted(target: &Target) {
    let store = target.store(&fresh_prefix("late"));
    let banned = ban("203.0.113.8", 60_000);
    let counted = |at: i64| -> i64 {
        let mut command = redis::cmd("EVAL");
        command
            .arg(mailwarden::cluster::counting::RECORD_FAILURE)
            .arg(2)
            .arg(store.failures_key(banned.source))
            .arg(store.forgiven_key(banned.source))
            .arg(format!("{:016x}", at))
            .arg(at)
            .arg(1_200_000)
            .arg(1)
            .arg(0)
            .arg(600_000)
            .arg("alice@example.com")
            .arg("imap")
            .arg("")
            .arg(13);
        raw::<(i64, i64, i64, Vec<String>)>(&store, &command).2
    };
    assert_eq!(counted(NOW.0 - 2), 1, "before any ban, a failure counts");
    store.save_ban(&banned).unwrap();
    assert_eq!(counted(NOW.0 - 1), 0, "a failure from before the ban, arriving after its save");
    assert_eq!(counted(NOW.0), 0, "the failure that placed the ban");
    assert_eq!(counted(NOW.0 + 1), 1, "a failure after the ban counts");
    let lifted_at = Timestamp(NOW.0 + 10_000);
    store.delete_ban(banned.source, None, lifted_at).unwrap();
    assert_eq!(counted(NOW.0 + 5_000), 0, "a failure from before the lift, arriving after it");
    assert_eq!(counted(NOW.0 + 10_001), 1, "a failure after the lift counts, from scratch");
    // A ban placed before the lift on a node that could not store it yet is out of date.
    assert!(store.forgiven_since(banned.source, Timestamp(NOW.0 + 9_999)).unwrap());
    assert!(store.forgiven_since(banned.source, lifted_at).unwrap());
    assert!(!store.forgiven_since(banned.source, Timestamp(NOW.0 + 10_001)).unwrap(), "a ban placed after it is not");
    assert!(
        !store.forgiven_since(ban("203.0.113.9", 60_000).source, NOW).unwrap(),
        "nor one on a source never forgiven"
    );
}

fn check_two_prefixes_do_not_see_each_other(target: &Target) {
    let one = target.store(&fresh_prefix("one"));
    let other = target.store(&fresh_prefix("other"));
    let banned = ban("203.0.113.7", 60_000);
    one.save_ban(&banned).unwrap();
    one.save_access_entry(&entry(ListKind::Blocked, "198.51.100.0/24", None)).unwrap();
    one.save_firewall_rule_set("alice@example.com", &rule_set()).unwrap();
    one.save_events(&[event(NOW.0, EventKind::Ban, "203.0.113.7", "alice@example.com")]).unwrap();
    one.save_known_sources(&[KnownSource::bare("alice", source("192.0.2.1"), NOW)]).unwrap();

    assert!(other.active_bans(NOW).unwrap().is_empty());
    assert!(other.access_entries().unwrap().is_empty());
    assert!(other.firewall_rule_sets().unwrap().is_empty());
    assert!(other.events(&EventFilter { limit: 10, ..Default::default() }).unwrap().events.is_empty());
    assert!(other.known_sources("alice", Timestamp(0), 10).unwrap().is_empty());
    assert!(!other.delete_ban(banned.source, None, NOW).unwrap());
    assert_eq!(other.delete_expired_bans(Timestamp(i64::MAX)).unwrap(), 0);
    assert_ne!(other.channel(), one.channel());
    assert_eq!(one.active_bans(NOW).unwrap(), vec![banned]);
}

fn check_a_malformed_stored_ban_is_skipped_and_the_others_load(target: &Target) {
    let store = target.store(&fresh_prefix("malformed"));
    let good = ban("203.0.113.7", 60_000);
    store.save_ban(&good).unwrap();
    let bans = store.key("bans");
    raw::<i64>(&store, redis::cmd("HSET").arg(&bans).arg("198.51.100.1").arg("{not json"));
    let unknown_reason = serde_json::json!({
        "source": "198.51.100.2", "created_at": NOW.0, "expires_at": NOW.0 + 60_000, "reason": "from-the-future", "failures": 1
    })
    .to_string();
    raw::<i64>(&store, redis::cmd("HSET").arg(&bans).arg("198.51.100.2").arg(&unknown_reason));
    raw::<i64>(&store, redis::cmd("HSET").arg(&bans).arg("198.51.100.3").arg(&[0xff_u8, 0xfe, 0x00][..]));
    assert_eq!(store.active_bans(NOW).unwrap(), vec![good.clone()]);
    assert_eq!(store.ban(source("198.51.100.1")).unwrap(), None);
    assert_eq!(store.delete_expired_bans(Timestamp(i64::MAX)).unwrap(), 1, "only the readable ban ends");

    let lists = store.key("lists");
    raw::<i64>(&store, redis::cmd("HSET").arg(&lists).arg("blocked|nonsense").arg("[]"));
    store.save_access_entry(&entry(ListKind::Blocked, "192.0.2.0/24", None)).unwrap();
    assert_eq!(store.access_entries().unwrap().len(), 1);
    let rules = store.key("rules");
    raw::<i64>(&store, redis::cmd("HSET").arg(&rules).arg("bob@example.com").arg(r#"{"default":"maybe"}"#));
    store.save_firewall_rule_set("alice@example.com", &rule_set()).unwrap();
    assert_eq!(store.firewall_rule_sets().unwrap().len(), 1);
}

fn check_the_block_log_is_pruned_to_its_byte_budget_oldest_first(target: &Target) {
    let store = target.store(&fresh_prefix("event-bytes"));
    let big = |at: i64| Event { device_id: "d".repeat(2000), ..event(NOW.0 + at, EventKind::Ban, "203.0.113.7", "a") };
    store.save_events(&(0..200).map(big).collect::<Vec<_>>()).unwrap();
    // Redis measures the stream itself (sampled): about 2 KB an entry, so 100 KB keeps about 50.
    assert!(store.prune_events(NOW, 1000, 100_000).unwrap() >= 100);
    let kept = store.events(&EventFilter { limit: 1000, ..Default::default() }).unwrap().events;
    assert!((20..=100).contains(&kept.len()), "kept {}", kept.len());
    assert_eq!(kept[0].at, Timestamp(NOW.0 + 199), "the newest stay");
}

fn check_stored_records_with_huge_times_are_read_within_range(target: &Target) {
    let store = target.store(&fresh_prefix("huge-times"));
    let hostile = serde_json::json!({
        "source": "198.51.100.4", "created_at": i64::MIN, "expires_at": i64::MAX, "reason": "autoban", "failures": 1,
        "guesses": [{"login": "a", "protocol": "imap", "device_id": "", "failures": 1, "first_seen": i64::MIN, "last_seen": i64::MAX}]
    });
    raw::<i64>(&store, redis::cmd("HSET").arg(store.key("bans")).arg("198.51.100.4").arg(hostile.to_string()));
    let bans = store.active_bans(NOW).unwrap();
    assert_eq!(bans.len(), 1, "the ban stays in force");
    assert_eq!(bans[0].expires_at, mailwarden::clock::LATEST);
    assert_eq!(bans[0].created_at, Timestamp(0));
    assert_eq!(bans[0].cause.guesses[0].last_seen, mailwarden::clock::LATEST.0);
}

fn check_the_shared_secret_and_epoch_are_the_same_for_every_node(target: &Target) {
    let prefix = fresh_prefix("secret");
    let first = target.store(&prefix);
    let second = target.store(&prefix);
    assert_ne!(first.node_id(), second.node_id());
    assert_eq!(first.node_id().len(), 16);
    let secret = first.shared_secret().unwrap();
    assert_ne!(secret, [0; 16]);
    assert_eq!(second.shared_secret().unwrap(), secret);
    assert_eq!(first.shared_secret().unwrap(), secret);
    let epoch = first.epoch().unwrap();
    assert_eq!(second.epoch().unwrap(), epoch);
    assert_ne!(target.store(&fresh_prefix("secret")).shared_secret().unwrap(), secret);
}

fn check_the_self_service_records_are_shared_by_every_node_and_expire(target: &Target) {
    let prefix = fresh_prefix("selfservice");
    let (first, second) = (target.store(&prefix), target.store(&prefix));
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(first.self_service_key("one").unwrap(), "one");
    assert_eq!(second.self_service_key("two").unwrap(), "one", "every node signs with the first key");

    assert!(first.spend_challenge("c1", Timestamp(NOW.0 + 60_000), NOW).unwrap());
    assert!(!second.spend_challenge("c1", Timestamp(NOW.0 + 60_000), NOW).unwrap(), "used on the other node");
    let ttl: i64 = raw(&first, redis::cmd("PTTL").arg(first.key("spent:c1")));
    assert!((1..=60_000).contains(&ttl), "kept until the challenge would expire: {ttl} ms");

    let me = source("2001:db8:1:2::/64");
    assert_eq!(first.self_unblocks(me, NOW).unwrap(), 0);
    assert_eq!(first.count_self_unblock(me, 2, NOW, day).unwrap(), DailyCount::Counted(1));
    assert_eq!(second.count_self_unblock(me, 2, NOW, day).unwrap(), DailyCount::Counted(2));
    assert_eq!(first.count_self_unblock(me, 2, NOW, day).unwrap(), DailyCount::AtLimit(2));
    assert_eq!(second.self_unblocks(me, NOW).unwrap(), 2);
    second.uncount_self_unblock(me).unwrap();
    assert_eq!(first.self_unblocks(me, NOW).unwrap(), 1);
    let ttl: i64 = raw(&first, redis::cmd("PTTL").arg(first.key("unblocks:2001:db8:1:2::/64")));
    assert!(ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000, "the day runs from the first unblock: {ttl} ms");
}

/// Every check, on `target`, each under its own prefix.
fn check_tokens_are_stored_as_digests_announced_and_the_audit_trail_reads_newest_first(target: &Target) {
    use mailwarden::audit::{AuditAction, AuditFilter, AuditRecord};
    use mailwarden::principal::Scope;
    use mailwarden::tokens::TokenRecord;
    let store = target.store(&fresh_prefix("tokens"));
    let token = TokenRecord {
        name: "desk".into(),
        scope: Scope::Domain("example.com".into()),
        digest: mailwarden::tokens::digest("mwt_secret"),
        created_at: NOW,
        expires_at: Some(Timestamp(NOW.0 + 1000)),
        last_used: None,
    };
    assert!(store.create_token(&token).unwrap());
    assert!(!store.create_token(&token).unwrap(), "a second token of that name");
    store.touch_token("desk", Timestamp(NOW.0 + 5)).unwrap();
    assert_eq!(store.tokens().unwrap(), vec![TokenRecord { last_used: Some(Timestamp(NOW.0 + 5)), ..token.clone() }]);
    assert!(store.delete_token("desk").unwrap());
    store.touch_token("desk", Timestamp(NOW.0 + 6)).unwrap();
    assert!(store.tokens().unwrap().is_empty(), "recording a use never brings a revoked token back");

    for (at, actor, action) in
        [(1, "desk", AuditAction::BanLifted), (2, "ops", AuditAction::RuleMoved), (3, "desk", AuditAction::RuleAdded)]
    {
        store
            .save_audit(&AuditRecord::new(Timestamp(NOW.0 + at), actor, action, "203.0.113.7", String::new()))
            .unwrap();
    }
    let (records, total) =
        store.audit(&AuditFilter { actor: Some("desk".into()), limit: 10, ..Default::default() }).unwrap();
    assert_eq!(total, 2);
    assert_eq!(records.iter().map(|r| r.action).collect::<Vec<_>>(), [AuditAction::RuleAdded, AuditAction::BanLifted]);
    let (page, total) = store.audit(&AuditFilter { limit: 1, offset: 1, ..Default::default() }).unwrap();
    assert_eq!((page[0].actor.as_str(), total), ("ops", 3));

    store
        .save_events(&[
            event(NOW.0, EventKind::Blocked, "192.0.2.1", "Bob@Example.COM"),
            event(NOW.0 + 1, EventKind::Blocked, "192.0.2.2", "carol@other.com"),
            event(NOW.0 + 2, EventKind::Blocked, "192.0.2.3", "dave"),
        ])
        .unwrap();
    let page =
        store.events(&EventFilter { domain: Some("example.com".into()), limit: 10, ..Default::default() }).unwrap();
    assert_eq!(page.events.iter().map(|e| e.login.as_str()).collect::<Vec<_>>(), ["Bob@Example.COM"]);
    assert_eq!(page.total, 1);
}

fn check_a_login_in_several_chunks_of_one_batch_is_indexed_by_its_latest_success(target: &Target) {
    // One batch of 2,500 successes is written in chunks of 1,000; alice's first success is in
    // the first chunk, her latest in the third. Pruning goes by the index of logins.
    let store = target.store(&fresh_prefix("chunks"));
    let mut batch = vec![KnownSource::bare("alice", source("203.0.113.7"), Timestamp(10))];
    for n in 0..2_498u32 {
        let address = format!("10.{}.{}.{}", n / 65_536, (n / 256) % 256, n % 256);
        batch.push(KnownSource::bare(format!("user{n}"), source(&address), Timestamp(40)));
    }
    batch.push(KnownSource::bare("alice", source("198.51.100.7"), Timestamp(50)));
    store.save_known_sources(&batch).unwrap();
    store.prune_known_sources(Timestamp(20), 10).unwrap();
    assert_eq!(
        store.known_sources("alice", Timestamp(0), 10).unwrap(),
        vec![source("198.51.100.7")],
        "alice logged in since: only her old place goes"
    );
    let places: Vec<(String, i64)> =
        store.login_places("alice", 10).unwrap().iter().map(|k| (k.source.to_string(), k.at.0)).collect();
    assert_eq!(places, vec![("198.51.100.7".into(), 50)], "and her login history keeps the new one");
    assert_eq!(store.known_sources("user2497", Timestamp(0), 10).unwrap(), vec![source("10.0.9.193")]);
}

fn check_everything(target: &Target) {
    check_tokens_are_stored_as_digests_announced_and_the_audit_trail_reads_newest_first(target);
    check_bans_round_trip_and_survive_a_new_store(target);
    check_list_entries_round_trip_with_and_without_expiry(target);
    check_events_are_stored_filtered_newest_first_and_pruned(target);
    check_late_events_come_out_in_time_order(target);
    check_events_are_found_by_login_in_any_case_and_paged_with_their_total(target);
    check_firewall_rule_sets_round_trip(target);
    check_known_sources_keep_the_latest_success_and_are_bounded_per_account(target);
    check_a_logins_places_carry_the_protocol_and_app_of_their_last_success(target);
    check_a_login_in_several_chunks_of_one_batch_is_indexed_by_its_latest_success(target);
    check_every_write_announces_its_change(target);
    check_saving_or_lifting_a_ban_forgets_the_sources_failure_history(target);
    check_a_failure_from_before_a_ban_or_a_lift_that_arrives_after_it_is_not_counted(target);
    check_a_login_refusal_is_stored_announced_and_lifted_apart_from_its_sources_ban(target);
    check_two_prefixes_do_not_see_each_other(target);
    check_a_malformed_stored_ban_is_skipped_and_the_others_load(target);
    check_the_shared_secret_and_epoch_are_the_same_for_every_node(target);
    check_the_self_service_records_are_shared_by_every_node_and_expire(target);
    check_the_block_log_is_pruned_to_its_byte_budget_oldest_first(target);
    check_stored_records_with_huge_times_are_read_within_range(target);
}

// ----- one server -----

#[test]
fn tokens_and_the_audit_trail_round_trip_and_the_block_log_is_confined_to_a_domain() {
    let Some(redis) = RedisServer::start() else { return };
    check_tokens_are_stored_as_digests_announced_and_the_audit_trail_reads_newest_first(&Target::server(&redis));
}

#[test]
fn bans_round_trip_and_survive_a_new_store_on_the_same_redis() {
    let Some(redis) = RedisServer::start() else { return };
    check_bans_round_trip_and_survive_a_new_store(&Target::server(&redis));
}

#[test]
fn list_entries_round_trip_with_and_without_expiry() {
    let Some(redis) = RedisServer::start() else { return };
    check_list_entries_round_trip_with_and_without_expiry(&Target::server(&redis));
}

#[test]
fn events_are_stored_filtered_newest_first_and_pruned() {
    let Some(redis) = RedisServer::start() else { return };
    check_events_are_stored_filtered_newest_first_and_pruned(&Target::server(&redis));
}

#[test]
fn events_are_found_by_login_in_any_case_and_paged_with_their_total() {
    let Some(redis) = RedisServer::start() else { return };
    check_events_are_found_by_login_in_any_case_and_paged_with_their_total(&Target::server(&redis));
}

#[test]
fn events_are_found_by_message_text_and_until_a_time() {
    let Some(redis) = RedisServer::start() else { return };
    check_events_are_found_by_message_text_and_until_a_time(&Target::server(&redis));
}

#[test]
fn a_filtered_count_reads_the_newest_50000_events_and_says_when_there_were_more() {
    let Some(redis) = RedisServer::start() else { return };
    let store = Target::server(&redis).store(&fresh_prefix("event-cap"));
    let detail = "Access denied by email firewall rule no. 2".to_string();
    let events: Vec<Event> = (0..50_500)
        .map(|i| {
            let ip = if i < 500 { "192.0.2.1" } else { "203.0.113.7" };
            Event { detail: detail.clone(), ..event(NOW.0 + i, EventKind::Ban, ip, "alice@example.com") }
        })
        .collect();
    store.save_events(&events).unwrap();
    let count = |ip: &str| {
        let started = std::time::Instant::now();
        let filter = EventFilter { ip: ip.parse().ok(), limit: 10, ..Default::default() };
        let page = store.events(&filter).unwrap();
        eprintln!("a filtered query over {} events took {:?}", events.len(), started.elapsed());
        (page.events.len(), page.total, page.total_exact)
    };
    assert_eq!(count("203.0.113.7"), (10, 50_000, false), "the newest 50,000, and a lower bound");
    assert_eq!(count("192.0.2.1"), (0, 0, false), "older than the newest 50,000: not read");
    let all = store.events(&EventFilter { limit: 10, ..Default::default() }).unwrap();
    assert_eq!((all.total, all.total_exact), (50_500, true), "without a filter the stream's length is exact");
}

#[test]
fn events_that_arrive_late_still_come_out_newest_first_and_survive_pruning_by_age() {
    let Some(redis) = RedisServer::start() else { return };
    check_late_events_come_out_in_time_order(&Target::server(&redis));
}

#[test]
fn firewall_rule_sets_round_trip() {
    let Some(redis) = RedisServer::start() else { return };
    check_firewall_rule_sets_round_trip(&Target::server(&redis));
}

#[test]
fn a_login_in_several_chunks_of_one_batch_is_indexed_by_its_latest_success() {
    let Some(redis) = RedisServer::start() else { return };
    check_a_login_in_several_chunks_of_one_batch_is_indexed_by_its_latest_success(&Target::server(&redis));
}

#[test]
fn known_sources_keep_the_latest_success_and_are_bounded_per_account() {
    let Some(redis) = RedisServer::start() else { return };
    check_known_sources_keep_the_latest_success_and_are_bounded_per_account(&Target::server(&redis));
}

#[test]
fn a_logins_places_carry_the_protocol_and_app_of_their_last_success() {
    let Some(redis) = RedisServer::start() else { return };
    check_a_logins_places_carry_the_protocol_and_app_of_their_last_success(&Target::server(&redis));
}

#[test]
fn every_write_announces_its_change_on_the_channel() {
    let Some(redis) = RedisServer::start() else { return };
    check_every_write_announces_its_change(&Target::server(&redis));
}

#[test]
fn saving_or_lifting_a_ban_forgets_the_sources_shared_failure_history() {
    let Some(redis) = RedisServer::start() else { return };
    check_saving_or_lifting_a_ban_forgets_the_sources_failure_history(&Target::server(&redis));
}

#[test]
fn a_failure_from_before_a_ban_or_a_lift_that_reaches_redis_after_it_is_not_counted_again() {
    let Some(redis) = RedisServer::start() else { return };
    check_a_failure_from_before_a_ban_or_a_lift_that_arrives_after_it_is_not_counted(&Target::server(&redis));
}

#[test]
fn two_prefixes_on_one_redis_do_not_see_each_other() {
    let Some(redis) = RedisServer::start() else { return };
    check_two_prefixes_do_not_see_each_other(&Target::server(&redis));
}

#[test]
fn a_malformed_stored_value_is_skipped_and_the_others_load() {
    let Some(redis) = RedisServer::start() else { return };
    check_a_malformed_stored_ban_is_skipped_and_the_others_load(&Target::server(&redis));
}

#[test]
fn the_block_log_is_pruned_to_its_byte_budget_oldest_first() {
    let Some(redis) = RedisServer::start() else { return };
    check_the_block_log_is_pruned_to_its_byte_budget_oldest_first(&Target::server(&redis));
}

#[test]
fn stored_records_with_huge_times_are_read_within_range() {
    let Some(redis) = RedisServer::start() else { return };
    check_stored_records_with_huge_times_are_read_within_range(&Target::server(&redis));
}

#[test]
fn every_node_reads_the_same_shared_secret_and_epoch() {
    let Some(redis) = RedisServer::start() else { return };
    check_the_shared_secret_and_epoch_are_the_same_for_every_node(&Target::server(&redis));
}

#[test]
fn used_challenges_and_daily_unblock_counts_are_shared_by_every_node_and_expire() {
    let Some(redis) = RedisServer::start() else { return };
    check_the_self_service_records_are_shared_by_every_node_and_expire(&Target::server(&redis));
}

#[test]
fn the_epoch_changes_when_redis_restarts_empty_and_not_when_it_keeps_its_data() {
    let Some(mut memory_only) = RedisServer::start() else { return };
    let store = Target::server(&memory_only).store(&fresh_prefix("epoch"));
    let epoch = store.epoch().unwrap();
    memory_only.restart();
    assert!(store.probe(), "a stale connection is replaced by a new one");
    assert_ne!(store.epoch().unwrap(), epoch);

    let Some(mut persistent) = RedisServer::start_with(Persistence::AppendOnly) else { return };
    let store = Target::server(&persistent).store(&fresh_prefix("epoch"));
    let epoch = store.epoch().unwrap();
    let banned = ban("203.0.113.7", 60_000);
    store.save_ban(&banned).unwrap();
    persistent.restart();
    assert!(store.probe());
    assert_eq!(store.epoch().unwrap(), epoch);
    assert_eq!(store.active_bans(NOW).unwrap(), vec![banned]);
}

#[test]
fn an_unreachable_redis_at_open_gives_a_down_store_that_fails_fast_until_a_probe_finds_it() {
    let Some(mut redis) = RedisServer::start() else { return };
    redis.stop();
    let started = Instant::now();
    let store = RedisStore::open(&Target::server(&redis).settings(&fresh_prefix("down")))
        .expect("open succeeds while Redis is down");
    assert!(started.elapsed() < BUDGET * 4, "open took {:?}", started.elapsed());
    assert!(!store.is_up());

    // Calls fail at once, without waiting for the network at all.
    let started = Instant::now();
    for _ in 0..100 {
        assert!(matches!(store.active_bans(NOW), Err(StoreError::Unavailable(_))));
        assert!(matches!(store.save_ban(&ban("203.0.113.7", 60_000)), Err(StoreError::Unavailable(_))));
        assert!(matches!(
            store.with_connection("test", |c| redis::cmd("PING").query::<String>(c)),
            Err(StoreError::Unavailable(_))
        ));
    }
    let elapsed = started.elapsed();
    assert!(elapsed < BUDGET * 2, "300 refused calls took {elapsed:?}");
    let message = store.active_bans(NOW).unwrap_err().to_string();
    assert!(message.contains("the shared store (Redis) is unreachable"), "{message}");

    assert!(!store.probe(), "nothing answers yet");
    redis.restart();
    assert!(store.probe(), "the probe finds Redis once it answers");
    assert!(store.is_up());
    store.save_ban(&ban("203.0.113.7", 60_000)).unwrap();
    assert_eq!(store.active_bans(NOW).unwrap().len(), 1);
}

#[test]
fn a_redis_killed_mid_use_fails_the_next_call_at_once_and_marks_the_store_down() {
    let Some(mut redis) = RedisServer::start_with(Persistence::AppendOnly) else { return };
    let store = Target::server(&redis).store(&fresh_prefix("killed"));
    let banned = ban("203.0.113.7", 60_000);
    store.save_ban(&banned).unwrap();
    redis.stop();

    let started = Instant::now();
    let failed = store.active_bans(NOW);
    let elapsed = started.elapsed();
    assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
    assert!(elapsed < BUDGET * 2, "a refused connection must not wait: {elapsed:?}");
    assert!(!store.is_up());
    assert!(!store.probe());

    redis.restart();
    assert!(store.probe());
    assert_eq!(store.active_bans(NOW).unwrap(), vec![banned], "the ban stored before the outage is still there");
}

#[test]
fn a_redis_that_stops_answering_fails_calls_within_the_budget() {
    let Some(redis) = RedisServer::start() else { return };
    let store = Target::server(&redis).store(&fresh_prefix("frozen"));
    store.save_ban(&ban("203.0.113.7", 60_000)).unwrap();
    redis.pause();

    let started = Instant::now();
    let failed = store.active_bans(NOW);
    let elapsed = started.elapsed();
    redis.resume();
    assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
    assert!(elapsed >= BUDGET, "gave up before the budget: {elapsed:?}");
    assert!(elapsed < BUDGET * 4, "waited well past the budget: {elapsed:?}");
    assert!(!store.is_up());
    let started = Instant::now();
    assert!(matches!(store.active_bans(NOW), Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < BUDGET, "once down, calls do not wait");

    assert!(store.probe());
    assert_eq!(store.active_bans(NOW).unwrap().len(), 1);
}

#[test]
fn concurrent_callers_each_get_a_connection_and_every_write_lands() {
    let Some(redis) = RedisServer::start() else { return };
    let store = std::sync::Arc::new(Target::server(&redis).store(&fresh_prefix("concurrent")));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    store.save_ban(&ban(&format!("10.{t}.{i}.1"), 60_000)).unwrap();
                    assert!(store.ban(source(&format!("10.{t}.{i}.1"))).unwrap().is_some());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a writer thread panicked");
    }
    assert_eq!(store.active_bans(NOW).unwrap().len(), 400);
}

#[test]
fn an_unreachable_cluster_at_open_gives_a_down_store() {
    let urls = (0..3).map(|_| format!("redis://127.0.0.1:{}", support::mailwarden::free_port())).collect();
    let settings = RedisSettings { urls, cluster: true, prefix: "mw:".into(), budget: BUDGET, ca_file: None };
    let store = RedisStore::open(&settings).expect("open succeeds while the cluster is down");
    assert!(!store.is_up());
    let started = Instant::now();
    assert!(matches!(store.firewall_rule_sets(), Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < BUDGET, "once down, calls do not wait");
    assert!(!store.probe());
    assert!(store.pubsub_connection(Duration::from_secs(1)).is_err_and(|e| e.is_unavailable()));
}

#[test]
fn malformed_settings_are_refused_with_the_password_masked() {
    let settings = RedisSettings {
        urls: vec!["redis://:hunter2@127.0.0.1:notaport".into()],
        cluster: false,
        prefix: "mw:".into(),
        budget: BUDGET,
        ca_file: None,
    };
    let Err(error) = RedisStore::open(&settings) else { panic!("a malformed URL must be refused") };
    let message = error.to_string();
    assert!(matches!(error, StoreError::Open { .. }), "{message}");
    assert!(message.contains("redis://:***@127.0.0.1:notaport") && !message.contains("hunter2"), "{message}");
}

// ----- a Redis Cluster -----

#[test]
fn the_store_behaves_the_same_on_a_three_master_redis_cluster() {
    let Some(cluster) = RedisCluster::start(3) else { return };
    let target = Target::cluster(&cluster);
    check_everything(&target);

    // A classic PUBLISH reaches subscribers on every node, whichever node the store sent it to.
    let store = target.store(&fresh_prefix("every-node"));
    let mut subscribers: Vec<redis::Connection> = cluster
        .urls()
        .iter()
        .map(|url| {
            let connection = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
            connection.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            connection
        })
        .collect();
    let mut pubsubs: Vec<redis::PubSub> = subscribers.iter_mut().map(|connection| connection.as_pubsub()).collect();
    for pubsub in &mut pubsubs {
        pubsub.subscribe(store.channel()).unwrap();
    }
    store.save_access_entry(&entry(ListKind::Blocked, "198.51.100.0/24", None)).unwrap();
    for pubsub in &mut pubsubs {
        let payload: String =
            pubsub.get_message().expect("every node delivers the announcement").get_payload().unwrap();
        assert_eq!(serde_json::from_str::<Announcement>(&payload).unwrap().change, Change::AccessEntries);
    }
    drop(pubsubs);

    // The keys really are spread over the masters.
    let store = target.store(&fresh_prefix("spread"));
    for i in 0..30 {
        store.save_ban(&ban(&format!("203.0.113.{i}"), 60_000)).unwrap();
        store.save_known_sources(&[KnownSource::bare(format!("user{i}"), source("192.0.2.1"), NOW)]).unwrap();
    }
    let holding: Vec<i64> = cluster.nodes.iter().map(|node| node.cli(&["DBSIZE"]).parse().unwrap()).collect();
    assert!(holding.iter().filter(|&&keys| keys > 0).count() >= 2, "keys per master: {holding:?}");
    assert_eq!(store.active_bans(NOW).unwrap().len(), 30);
    assert_eq!(store.prune_known_sources(Timestamp(NOW.0 + 1), 10).unwrap(), 30);
}
