//! Observe mode against the real binary: globally (`server.mode`), per blocked-list entry and
//! per firewall rule set, every decision is made and recorded as "would refuse", and the login
//! is allowed; lifting the mode enforces what it recorded.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::mailwarden::{Mailwarden, fresh_pwhash, login_body, report_body};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn allow(mw: &Mailwarden, remote: &str, login: &str) -> Value {
    let (status, body) = mw.policy("allow", &login_body(remote, login, "0f96"));
    assert_eq!(status, 200, "{body}");
    json(&body)
}

fn ban(mw: &Mailwarden, remote: &str) {
    for _ in 0..5 {
        assert_eq!(mw.policy("report", &report_body(remote, "alice@example.com", &fresh_pwhash(), false)).0, 200);
    }
}

/// The block log's "would refuse" records, waiting for the writer's next batch.
fn observed_events(mw: &Mailwarden, filter: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let page = json(&mw.admin("GET", &format!("/api/v1/events?observed=true{filter}")).1);
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if !events.is_empty() || std::time::Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn in_observe_mode_a_banned_address_logs_in_and_the_block_log_says_what_would_have_been_refused() {
    let mw = Mailwarden::configure("");
    mw.write_config("mode = \"observe\"\n", "");
    let mut mw = mw;
    mw.restart();
    ban(&mw, "203.0.113.7");
    let answer = allow(&mw, "203.0.113.7", "alice@example.com");
    assert_eq!(answer["status"], 0, "observe mode refuses nothing: {answer}");

    let events = observed_events(&mw, "&ip=203.0.113.7");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0]["reason"].as_str(), events[0]["observed"].as_bool()), (Some("ban"), Some(true)));
    let detail = events[0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("would refuse (observe mode): Too many failed logins from 203.0.113.7"), "{detail}");
    let real = json(&mw.admin("GET", "/api/v1/events?observed=false&reason=ban").1);
    assert_eq!(real["total"], 0, "nothing was refused: {real}");

    let bans = json(&mw.admin("GET", "/api/v1/bans").1);
    assert_eq!((bans["total"].as_u64(), bans["mode"].as_str()), (Some(1), Some("observe")), "{bans}");
    let listed = mw.cli(&["bans"]);
    let printed = String::from_utf8_lossy(&listed.stdout);
    assert!(printed.contains("203.0.113.7") && printed.contains("recorded, not enforced"), "{printed}");
    let decided = json(&mw.admin("GET", "/api/v1/decide?ip=203.0.113.7").1);
    assert_eq!((decided["status"].as_i64(), decided["would_refuse"].as_str()), (Some(0), Some("ban")), "{decided}");
    assert!(decided["summary"].as_str().unwrap().contains("observe mode: it would be refused: 203.0.113.7 is banned"));
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(
        metrics.contains("mailwarden_observed_decisions_total{protocol=\"imap\",reason=\"ban\",verdict=\"reject\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mailwarden_decisions_total{protocol=\"imap\",reason=\"none\",verdict=\"allow\"} 1"));

    // Lifting the mode (a reload) enforces the ban it recorded.
    mw.write_config("", "");
    assert_eq!(mw.admin_post("/api/v1/reload", None).0, 200);
    assert_eq!(allow(&mw, "203.0.113.7", "alice@example.com")["status"], -1);
}

#[test]
fn a_blocked_entry_in_observe_mode_refuses_nothing_and_records_each_address_it_would_refuse() {
    let mw = Mailwarden::start_with("[networks]\nblocked_observe = [\"198.51.100.0/24\"]\n");
    let (status, body) =
        mw.admin_post("/api/v1/blocks", Some(r#"{"network":"192.0.2.0/24","comment":"trial","mode":"observe"}"#));
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)["mode"], "observe");
    let (status, body) = mw.admin_post("/api/v1/trusted", Some(r#"{"network":"192.0.2.9","mode":"observe"}"#));
    assert_eq!((status, json(&body)["field"].as_str()), (400, Some("mode")), "{body}");
    let (status, body) = mw.admin_post("/api/v1/blocks", Some(r#"{"network":"192.0.2.0/24","mode":"watch"}"#));
    assert_eq!(status, 400, "an unknown mode is named: {body}");

    let cli = mw.cli(&["block", "203.0.113.0/24", "--observe", "--comment", "trial"]);
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && printed.contains("observe mode: nothing refused"), "{printed}");
    assert_eq!(allow(&mw, "203.0.113.5", "alice@example.com")["status"], 0, "the CLI's observed entry");
    assert_eq!(allow(&mw, "192.0.2.7", "alice@example.com")["status"], 0, "the API's observed entry");
    assert_eq!(allow(&mw, "198.51.100.7", "bob@example.com")["status"], 0, "the file's observed entry");
    let events = observed_events(&mw, "&reason=blocked");
    let addresses: Vec<&str> = events.iter().filter_map(|e| e["ip"].as_str()).collect();
    assert!(addresses.contains(&"192.0.2.7") && addresses.contains(&"198.51.100.7"), "{events:?}");

    // An enforced ban still refuses behind an observed block.
    ban(&mw, "192.0.2.8");
    assert_eq!(allow(&mw, "192.0.2.8", "alice@example.com")["status"], -1);
    let listed = json(&mw.admin("GET", "/api/v1/blocks").1);
    let modes: Vec<(&str, &str)> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["network"].as_str().unwrap(), e["mode"].as_str().unwrap()))
        .collect();
    assert!(
        modes.contains(&("192.0.2.0/24", "observe")) && modes.contains(&("198.51.100.0/24", "observe")),
        "{modes:?}"
    );
}

#[test]
fn a_mailbox_trying_only_france_in_observe_mode_logs_in_from_elsewhere_and_sees_the_rule_it_would_have_hit() {
    let mw = Mailwarden::start();
    let path = "/api/v1/mailboxes/alice@example.com/firewall";
    let (status, body) = mw.admin_put(
        path,
        r#"{"default":"allow","mode":"observe","rules":[{"action":"allow","network":"192.0.2.0/24"},{"action":"block","network":"0.0.0.0/0"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&mw.admin("GET", path).1)["mode"], "observe");
    assert_eq!(allow(&mw, "203.0.113.9", "alice@example.com")["status"], 0);
    let events = observed_events(&mw, "&login=alice@example.com");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0]["reason"].as_str(), events[0]["rule"].as_u64()), (Some("firewall_rule"), Some(2)));
    assert!(events[0]["detail"].as_str().unwrap().contains("email firewall rule no. 2"), "{events:?}");

    // Switched to enforce, the same rule refuses.
    let (status, body) = mw.admin_put(
        path,
        r#"{"default":"allow","rules":[{"action":"allow","network":"192.0.2.0/24"},{"action":"block","network":"0.0.0.0/0"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(allow(&mw, "203.0.113.9", "alice@example.com")["status"], -1);
    let (status, body) = mw.admin_put(path, r#"{"default":"allow","mode":"sometimes"}"#);
    assert_eq!((status, json(&body)["field"].as_str()), (400, Some("mode")), "{body}");
}
