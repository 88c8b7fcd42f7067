//! Signed webhooks against the real binary and a receiver on loopback
//! (`tests/support/webhook_receiver.rs`) that checks every signature: refused deliveries are
//! sent again with the same id, each endpoint gets only the types it asked for, notices queued
//! while the receiver is down survive `kill -9` and each arrives after the restart, and a
//! receiver with another secret refuses them all (so a broken signature would be noticed),
//! which the block log notes once.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;
use support::mailwarden::{Mailwarden, free_port, fresh_pwhash, report_body};
use support::webhook_receiver::Receiver;

const SECRET: &str = "webhook-secret-0123456789";

/// A `[webhooks.NAME]` table delivering to `url`, retrying quickly.
fn endpoint(name: &str, url: &str, events: &[&str]) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[webhooks.{name}]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = [{}]\ntimeout = \"2s\"\n\
         first_retry = \"100ms\"\nmax_retry_interval = \"300ms\"\n",
        events.join(", ")
    )
}

/// Five distinct wrong passwords from `address`: a ban (the default `max_failures`).
fn ban(mw: &Mailwarden, address: &str) {
    for _ in 0..5 {
        let (status, _) = mw.policy("report", &report_body(address, "alice@example.com", &fresh_pwhash(), false));
        assert_eq!(status, 200);
    }
}

fn block(mw: &Mailwarden, network: &str) {
    let (status, body) = mw.admin_post("/api/v1/blocks", Some(&format!(r#"{{"network":"{network}"}}"#)));
    assert_eq!(status, 201, "{body}");
}

fn metric(mw: &Mailwarden, prefix: &str) -> f64 {
    let (_, metrics) = mw.admin("GET", "/metrics");
    metrics.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn a_refused_delivery_is_sent_again_with_the_same_id_and_every_one_is_signed() {
    let receiver = Receiver::start(0, SECRET, 2);
    let mw = Mailwarden::start_with(&endpoint("siem", &receiver.url(), &[]));
    ban(&mw, "127.0.0.2");
    let (status, body) = mw.admin("DELETE", "/api/v1/bans/127.0.0.2");
    assert_eq!(status, 200, "{body}");
    let received = receiver.wait_until(Duration::from_secs(20), |got| {
        let accepted: BTreeSet<&str> = got.iter().filter(|r| r.status == 200).map(|r| r.kind()).collect();
        accepted.contains("ban_placed") && accepted.contains("ban_lifted")
    });
    assert!(received.iter().all(|r| r.verified), "a delivery failed verification: {received:#?}");
    // The two refused deliveries came back, with the same ids, and were then taken.
    let refused: Vec<&str> = received.iter().filter(|r| r.status == 500).map(|r| r.id()).collect();
    assert_eq!(refused.len(), 2);
    for id in refused {
        assert!(received.iter().any(|r| r.id() == id && r.status == 200), "{id} was not retried");
    }
    let accepted = receiver.accepted();
    let placed = accepted.iter().find(|r| r.kind() == "ban_placed").unwrap();
    assert_eq!(placed.body["facts"]["source"], "127.0.0.2");
    assert_eq!(placed.body["facts"]["login"], "alice@example.com");
    assert_eq!(placed.body["actor"], Value::Null);
    assert!(placed.body["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let lifted = accepted.iter().find(|r| r.kind() == "ban_lifted").unwrap();
    assert_eq!(lifted.body["actor"], "admin-token");
    assert_eq!(lifted.body["facts"]["cause"], "admin");
    assert!(accepted.iter().all(|r| !r.raw_body.contains("pwhash")), "a body names a password hash");
    assert!(metric(&mw, "mailwarden_webhook_deliveries_total{endpoint=\"siem\",result=\"failed\"}") >= 2.0);
    assert!(metric(&mw, "mailwarden_webhook_deliveries_total{endpoint=\"siem\",result=\"delivered\"}") >= 2.0);
}

#[test]
fn each_endpoint_receives_only_the_types_it_asked_for() {
    let bans = Receiver::start(0, SECRET, 0);
    let lists = Receiver::start(0, SECRET, 0);
    let config = format!(
        "{}\n{}",
        endpoint("bans", &bans.url(), &["ban_placed"]),
        endpoint("lists", &lists.url(), &["list_changed"])
    );
    let mw = Mailwarden::start_with(&config);
    ban(&mw, "127.0.0.3");
    block(&mw, "192.0.2.0/24");
    let (status, _) = mw.admin("DELETE", "/api/v1/bans/127.0.0.3");
    assert_eq!(status, 200);
    bans.wait_until(Duration::from_secs(10), |got| !got.is_empty());
    lists.wait_until(Duration::from_secs(10), |got| !got.is_empty());
    // Time for a wrongly routed notice (the ban lifted, the other endpoint's type) to arrive.
    std::thread::sleep(Duration::from_secs(1));
    let kinds = |r: &Receiver| r.received().iter().map(|r| r.kind().to_string()).collect::<Vec<_>>();
    assert_eq!(kinds(&bans), ["ban_placed"]);
    assert_eq!(kinds(&lists), ["list_changed"]);
    assert_eq!(lists.received()[0].body["facts"]["network"], "192.0.2.0/24");
}

#[test]
fn notices_queued_while_the_receiver_is_down_survive_kill_9_and_each_arrives_once_by_id() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut mw = Mailwarden::start_with(&endpoint("siem", &url, &["list_changed", "ban_placed"]));
    let networks: Vec<String> = (1..=12).map(|n| format!("198.51.100.{n}/32")).collect();
    for network in &networks {
        block(&mw, network);
    }
    ban(&mw, "127.0.0.4");
    // Every change above was acknowledged; nobody has received anything yet. The endpoint
    // that is down is tried once per backoff interval, not once per waiting notice.
    let failed = || metric(&mw, "mailwarden_webhook_deliveries_total{endpoint=\"siem\",result=\"failed\"}");
    let before = failed();
    std::thread::sleep(Duration::from_secs(1));
    // At least 150 ms apart (300 ms scaled by the jitter); one attempt per notice would be
    // 13 every 300 ms.
    let in_a_second = failed() - before;
    assert!((1.0..=8.0).contains(&in_a_second), "{in_a_second} failed attempts in a second");
    mw.kill9();
    mw.restart();
    let receiver = Receiver::start(port, SECRET, 0);
    let expected = networks.len() + 1;
    receiver.wait_until(Duration::from_secs(30), |got| {
        got.iter().filter(|r| r.status == 200).map(|r| r.id()).collect::<BTreeSet<_>>().len() >= expected
    });
    // Let repeats, if any, arrive before counting.
    std::thread::sleep(Duration::from_millis(500));
    let received = receiver.accepted();
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for notice in &received {
        assert!(notice.verified);
        by_id.insert(notice.id().to_string(), notice.body.clone());
    }
    assert_eq!(by_id.len(), expected, "distinct notices: {by_id:#?}");
    let listed: BTreeSet<String> = by_id
        .values()
        .filter(|b| b["type"] == "list_changed")
        .map(|b| b["facts"]["network"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, networks.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(by_id.values().filter(|b| b["type"] == "ban_placed").count(), 1);
}

#[test]
fn a_receiver_with_another_secret_refuses_every_notice_and_the_block_log_notes_the_failing_endpoint_once() {
    let receiver = Receiver::start(0, "not-the-secret-0123456789", 0);
    let mw = Mailwarden::start_with(&endpoint("siem", &receiver.url(), &[]));
    block(&mw, "203.0.113.0/24");
    let received = receiver.wait_until(Duration::from_secs(20), |got| got.len() >= 8);
    assert!(received.iter().all(|r| !r.verified && r.status == 401));
    // The same notice each time, never given up before its deadline.
    assert_eq!(received.iter().map(|r| r.id()).collect::<BTreeSet<_>>().len(), 1);
    let (status, body) = mw.admin("GET", "/api/v1/events?reason=webhook_failing");
    assert_eq!(status, 200, "{body}");
    let events: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(events["total"], 1, "{body}");
    assert!(events["events"][0]["detail"].as_str().unwrap().contains("webhook siem failed 5 times in a row"));
}

#[test]
fn expiries_attacks_quarantines_and_admin_changes_are_each_announced() {
    let receiver = Receiver::start(0, SECRET, 0);
    let config = format!(
        "[autoban]\nban_for = \"1s\"\nescalation_factor = 2.0\n[stale_passwords]\nafter = 2\n\
         [account_protection]\nsources = 2\nwindow = \"2s\"\n\n{}",
        endpoint("siem", &receiver.url(), &[])
    );
    let mw = Mailwarden::start_with(&config);
    ban(&mw, "127.0.0.5");
    // Banned, unbanned and banned again at once: a repeat offender, banned for longer.
    ban(&mw, "127.0.0.9");
    assert_eq!(mw.admin("DELETE", "/api/v1/bans/127.0.0.9").0, 200);
    ban(&mw, "127.0.0.9");
    // A password change: the bans grace's guesses caused are lifted.
    for _ in 0..5 {
        mw.policy("report", &report_body("127.0.0.10", "grace@example.com", &fresh_pwhash(), false));
    }
    assert_eq!(mw.admin_post("/api/v1/logins/grace@example.com/reset", None).0, 200);
    for address in ["127.0.0.6", "127.0.0.7"] {
        mw.policy("report", &report_body(address, "dave@example.com", &fresh_pwhash(), false));
    }
    for _ in 0..2 {
        mw.policy("report", &report_body("127.0.0.8", "frank@example.com", "57a1e", false));
    }
    block(&mw, "192.0.2.0/24");
    assert_eq!(mw.admin("DELETE", "/api/v1/blocks?network=192.0.2.0/24").0, 200);
    let path = "/api/v1/mailboxes/alice@example.com/firewall";
    assert_eq!(mw.admin_put(&format!("{path}/default"), r#"{"action":"block"}"#).0, 200);
    assert_eq!(mw.admin("DELETE", path).0, 200);
    type Check = fn(&Value) -> bool;
    let expected: [(&str, &str, Check); 12] = [
        ("ban_placed", "the first ban", |b| b["facts"]["source"] == "127.0.0.5"),
        ("ban_lifted", "its expiry", |b| {
            b["facts"]["source"] == "127.0.0.5" && b["facts"]["cause"] == "expired" && b["actor"].is_null()
        }),
        ("ban_lengthened", "the repeat offender", |b| b["facts"]["source"] == "127.0.0.9"),
        ("ban_lifted", "the password reset", |b| {
            b["facts"]["cause"] == "reset_login" && b["facts"]["source"] == "127.0.0.10" && b["actor"] == "admin-token"
        }),
        ("attack_started", "dave's attack", |b| b["facts"]["login"] == "dave@example.com"),
        ("attack_ended", "its end", |b| b["facts"]["login"] == "dave@example.com"),
        ("quarantine_started", "frank's stale password", |b| {
            b["facts"]["login"] == "frank@example.com" && b["facts"]["source"] == "127.0.0.8"
        }),
        ("list_changed", "the block", |b| b["facts"]["change"] == "added" && b["actor"] == "admin-token"),
        ("list_changed", "its removal", |b| b["facts"]["change"] == "removed"),
        ("firewall_changed", "alice's rules", |b| b["facts"]["rule_set"]["default"] == "block"),
        ("firewall_changed", "their reset", |b| b["facts"]["rule_set"].is_null() && b["actor"] == "admin-token"),
        ("ban_placed", "grace's ban", |b| b["facts"]["source"] == "127.0.0.10"),
    ];
    let missing = |got: &[support::webhook_receiver::Received]| -> Vec<&str> {
        expected
            .iter()
            .filter(|(kind, _, check)| !got.iter().any(|r| r.kind() == *kind && check(&r.body)))
            .map(|(_, what, _)| *what)
            .collect()
    };
    // The ban ends after a second and the attack after its two-second window; the sweep that
    // notices both runs every five seconds.
    let received = receiver.wait_until(Duration::from_secs(20), |got| missing(got).is_empty());
    assert_eq!(missing(&received), Vec::<&str>::new());
    assert!(received.iter().all(|r| r.verified && !r.raw_body.contains("57a1e")), "a body names a password hash");
}

#[test]
fn an_endpoint_that_never_answers_slows_neither_logins_nor_bans() {
    // Accepts connections and never answers: each delivery waits for its whole timeout.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", hung.local_addr().unwrap());
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hung.incoming().take(4) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let mw = Mailwarden::start_with(&endpoint("siem", &url, &[]));
    block(&mw, "192.0.2.0/24");
    let started = std::time::Instant::now();
    ban(&mw, "127.0.0.11");
    let (status, _) = mw.policy("allow", &support::mailwarden::login_body("127.0.0.11", "alice@example.com", "0f96"));
    assert_eq!(status, 200);
    // The endpoint's timeout is 2 s; the five reports, one placing a ban, and a login do not
    // wait for it.
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
    let (_, body) = mw.admin("GET", "/api/v1/bans/127.0.0.11");
    assert!(body.contains("127.0.0.11"), "{body}");
    drop(holder);
}

#[test]
fn a_notice_of_a_change_names_the_token_that_made_it() {
    let receiver = Receiver::start(0, SECRET, 0);
    let mw = Mailwarden::start_with(&endpoint("siem", &receiver.url(), &[]));
    let desk = mw.create_token("desk", "support");
    ban(&mw, "127.0.0.3");
    let (status, body) = mw.admin_as(&desk, "POST", "/api/v1/bans/127.0.0.3/lengthen", Some(r#"{"by":"1h"}"#));
    assert_eq!(status, 200, "{body}");
    let (status, body) = mw.admin_as(&desk, "DELETE", "/api/v1/bans/127.0.0.3?trust=true", None);
    assert_eq!(status, 200, "{body}");
    let kinds = ["ban_lengthened", "ban_lifted", "list_changed"];
    let received = receiver
        .wait_until(Duration::from_secs(20), |got| kinds.iter().all(|kind| got.iter().any(|r| r.kind() == *kind)));
    for kind in kinds {
        let notice = received.iter().find(|r| r.kind() == kind).unwrap();
        assert_eq!(notice.body["actor"], "desk", "{kind}: {}", notice.raw_body);
    }
}
