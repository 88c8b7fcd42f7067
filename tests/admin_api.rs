//! The operations surface against the real binary: the admin lists with expiry, the dry run,
//! reloads (API, SIGHUP, file change, broken file, under load), pagination, error bodies, the
//! CLI for each, and the served OpenAPI document checked against every route.

mod support;

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::mailwarden::{Mailwarden, fresh_pwhash, login_body, report_body};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn allow(mw: &Mailwarden, remote: &str) -> (i64, String) {
    let (status, body) = mw.policy("allow", &login_body(remote, "alice@example.com", "0f96"));
    assert_eq!(status, 200, "{body}");
    let reply = json(&body);
    (reply["status"].as_i64().unwrap(), reply["msg"].as_str().unwrap().to_string())
}

fn fail_n(mw: &Mailwarden, remote: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(mw.policy("report", &report_body(remote, "alice@example.com", &fresh_pwhash(), false)).0, 200);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `check` every 100 ms for up to `seconds`.
fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn blocked_and_trusted_entries_apply_at_once_survive_a_restart_and_expire_on_time() {
    let mut mw = Mailwarden::start();
    let (status, body) =
        mw.admin_post("/api/v1/blocks", Some(r#"{"network":"198.51.100.0/24","for":"3s","comment":"spam run"}"#));
    assert_eq!(status, 201, "{body}");
    let entry = json(&body);
    assert_eq!(entry["network"], "198.51.100.0/24");
    assert_eq!(entry["origin"], "api");
    assert_eq!(entry["comment"], "spam run");
    assert!(entry["expires_at"].as_str().is_some());

    let (status, msg) = allow(&mw, "198.51.100.7");
    assert_eq!((status, msg.as_str()), (-1, "Logins from 198.51.100.7 are blocked by the administrator"));
    assert_eq!(mw.admin_post("/api/v1/trusted", Some(r#"{"network":"198.51.100.7"}"#)).0, 201);
    assert_eq!(allow(&mw, "198.51.100.7").0, 0, "a trusted /32 inside a blocked /24 wins");
    assert_eq!(allow(&mw, "198.51.100.8").0, -1);

    mw.kill9();
    mw.restart();
    assert_eq!(allow(&mw, "198.51.100.8").0, -1, "the block survived kill -9");
    let listed = json(&mw.admin("GET", "/api/v1/blocks").1);
    assert_eq!(listed["total"], 1);

    eventually(5, "the block expires", || allow(&mw, "198.51.100.8").0 == 0);
    assert_eq!(json(&mw.admin("GET", "/api/v1/blocks").1)["total"], 0);

    let (status, body) = mw.admin("DELETE", "/api/v1/trusted?network=198.51.100.7");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["removed"]["network"], "198.51.100.7/32");
    let (status, body) = mw.admin("DELETE", "/api/v1/trusted?network=198.51.100.7");
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"], "not_listed");
}

#[test]
fn a_trusted_source_is_never_banned() {
    let mw = Mailwarden::start();
    assert_eq!(mw.admin_post("/api/v1/trusted", Some(r#"{"network":"203.0.113.0/24","comment":"office"}"#)).0, 201);
    fail_n(&mw, "203.0.113.7", 10);
    assert_eq!(allow(&mw, "203.0.113.7").0, 0);
    assert!(json(&mw.admin("GET", "/api/v1/bans").1)["bans"].as_array().unwrap().is_empty());
}

#[test]
fn policy_file_entries_are_shown_and_cannot_be_changed_through_the_api() {
    let mw = Mailwarden::start_with("[networks]\nblocked = [\"10.0.0.0/8\"]\ntrusted = [\"192.0.2.1\"]\n");
    let listed = json(&mw.admin("GET", "/api/v1/blocks").1);
    assert_eq!(listed["entries"][0]["network"], "10.0.0.0/8");
    assert_eq!(listed["entries"][0]["origin"], "policy_file");
    let (status, body) = mw.admin("DELETE", "/api/v1/blocks?network=10.0.0.0/8");
    assert_eq!(status, 409, "{body}");
    assert_eq!(json(&body)["error"], "defined_in_policy_file");
    let (status, body) = mw.admin_post("/api/v1/blocks", Some(r#"{"network":"10.0.0.0/8","for":"1h"}"#));
    assert_eq!(status, 409, "{body}");
    assert_eq!(json(&mw.admin("GET", "/api/v1/trusted").1)["entries"][0]["origin"], "policy_file");
    assert_eq!(allow(&mw, "10.1.2.3").0, -1);
}

#[test]
fn bad_list_input_gets_400_naming_the_field_and_changes_nothing() {
    let mw = Mailwarden::start();
    let cases: &[(&str, &str, Option<&str>)] = &[
        (r#"{"network":"banana"}"#, "invalid_field", Some("network")),
        (r#"{"network":"10.0.0.0/33"}"#, "invalid_field", Some("network")),
        (r#"{"network":"10.0.0.0/8","for":"2 fortnights"}"#, "invalid_field", Some("for")),
        (r#"{"network":"10.0.0.0/8","expires_at":"2001-01-01T00:00:00Z"}"#, "invalid_field", Some("expires_at")),
        (r#"{"network":"10.0.0.0/8","expires_at":"next tuesday"}"#, "invalid_field", Some("expires_at")),
        (r#"{"network":"10.0.0.0/8","for":"1h","expires_at":"2099-01-01T00:00:00Z"}"#, "invalid_field", Some("for")),
        (r#"{"network":"10.0.0.0/8","comment":"two\nlines"}"#, "invalid_field", Some("comment")),
        (r#"{"netwrk":"10.0.0.0/8"}"#, "invalid_body", None),
        (r#"{"network":"10.0.0.0/8""#, "invalid_body", None),
        (r#"{"network":7}"#, "invalid_body", None),
    ];
    for (body, code, field) in cases {
        for path in ["/api/v1/blocks", "/api/v1/trusted"] {
            let (status, answer) = mw.admin_post(path, Some(body));
            assert_eq!(status, 400, "{path} {body}: {answer}");
            let error = json(&answer);
            assert_eq!(error["error"], *code, "{body}: {answer}");
            assert_eq!(error["field"].as_str(), *field, "{body}: {answer}");
        }
    }
    let (_, answer) = mw.admin_post("/api/v1/blocks", Some(r#"{"netwrk":"10.0.0.0/8"}"#));
    assert!(json(&answer)["message"].as_str().unwrap().contains("netwrk"), "{answer}");
    let (status, answer) = mw.admin("DELETE", "/api/v1/blocks");
    assert_eq!((status, json(&answer)["error"].as_str()), (400, Some("invalid_query")));
    let (status, answer) = mw.admin("DELETE", "/api/v1/blocks?network=nope");
    assert_eq!((status, json(&answer)["field"].as_str()), (400, Some("network")));
    assert_eq!(json(&mw.admin("GET", "/api/v1/blocks").1)["total"], 0);
    assert_eq!(json(&mw.admin("GET", "/api/v1/trusted").1)["total"], 0);
}

#[test]
fn lists_are_paginated() {
    let mw = Mailwarden::start();
    for i in 1..=5 {
        assert_eq!(mw.admin_post("/api/v1/blocks", Some(&format!(r#"{{"network":"198.51.100.{i}"}}"#))).0, 201);
    }
    let page = json(&mw.admin("GET", "/api/v1/blocks?limit=2&offset=1").1);
    assert_eq!(page["total"], 5);
    let networks: Vec<&str> =
        page["entries"].as_array().unwrap().iter().map(|e| e["network"].as_str().unwrap()).collect();
    assert_eq!(networks, ["198.51.100.2/32", "198.51.100.3/32"]);
    let (status, body) = mw.admin("GET", "/api/v1/blocks?limit=0");
    assert_eq!((status, json(&body)["field"].as_str()), (400, Some("limit")));
    let (status, body) = mw.admin("GET", "/api/v1/bans?limit=lots");
    assert_eq!((status, json(&body)["error"].as_str()), (400, Some("invalid_query")));
    assert_eq!(json(&mw.admin("GET", "/api/v1/bans?limit=10&offset=3").1)["total"], 0);
}

#[test]
fn the_dry_run_says_what_allow_would_answer_and_why_without_changing_anything() {
    let mw = Mailwarden::start_with("[networks]\nblocked = [\"198.51.100.0/24\"]\n");
    fail_n(&mw, "203.0.113.7", 5);
    fail_n(&mw, "203.0.113.8", 2);
    let before = mw.admin("GET", "/metrics").1;

    let banned = json(&mw.admin("GET", "/api/v1/decide?ip=203.0.113.7&login=alice@example.com&protocol=pop3").1);
    assert_eq!(banned["status"], -1);
    assert_eq!(banned["verdict"], "reject");
    assert_eq!(banned["reason"], "ban");
    assert_eq!(banned["protocol"], "pop3");
    assert!(banned["msg"].as_str().unwrap().starts_with("Too many failed logins from 203.0.113.7"));
    assert!(banned["summary"].as_str().unwrap().contains("after 5 failed logins"), "{banned}");
    assert_eq!(banned["ban"]["failures"], 5);

    let blocked = json(&mw.admin("GET", "/api/v1/decide?ip=198.51.100.9").1);
    assert_eq!(blocked["reason"], "blocked");
    assert_eq!(blocked["list_entry"]["origin"], "policy_file");

    for _ in 0..5 {
        let counting = json(&mw.admin("GET", "/api/v1/decide?ip=203.0.113.8").1);
        assert_eq!((counting["verdict"].as_str(), counting["failures_in_window"].as_u64()), (Some("allow"), Some(2)));
    }
    let after = mw.admin("GET", "/metrics").1;
    let decisions = |text: &str| {
        text.lines().filter(|l| l.starts_with("mailwarden_decisions_total")).map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(decisions(&before), decisions(&after), "the dry run counted no decisions");
    assert_eq!(allow(&mw, "203.0.113.8").0, 0, "and counted no failures");

    let (status, body) = mw.admin("GET", "/api/v1/decide?ip=not-an-ip");
    assert_eq!((status, json(&body)["field"].as_str()), (400, Some("ip")));
    assert_eq!(mw.admin("GET", "/api/v1/decide").0, 400);
}

#[test]
fn the_cli_manages_lists_checks_addresses_and_reloads() {
    let mw = Mailwarden::start();
    let run = |args: &[&str]| {
        let output = mw.cli(args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stdout(&output)
    };
    assert!(
        run(&["block", "198.51.100.0/24", "--for", "2h", "--comment", "spam run"])
            .starts_with("Blocked 198.51.100.0/24 until ")
    );
    assert!(
        run(&["trust", "198.51.100.7", "--comment", "monitoring"])
            .contains("Trusted 198.51.100.7/32 until removed (monitoring)")
    );
    let blocks = run(&["blocks"]);
    assert!(blocks.contains("198.51.100.0/24") && blocks.contains("spam run") && blocks.contains("api"), "{blocks}");
    let trusted: Value = json(&run(&["trusted", "--json"]));
    assert_eq!(trusted["entries"][0]["comment"], "monitoring");

    let check = run(&["check", "198.51.100.9", "--login", "alice@example.com"]);
    assert!(check.contains("198.51.100.9 (alice@example.com over imap): REFUSED"), "{check}");
    assert!(check.contains("blocked by 198.51.100.0/24 in the admin API (spam run)"), "{check}");
    assert!(run(&["check", "198.51.100.7"]).contains("ALLOWED"));
    let checked: Value = json(&run(&["check", "203.0.113.1", "--json"]));
    assert_eq!(checked["verdict"], "allow");

    assert!(run(&["untrust", "198.51.100.7"]).contains("198.51.100.7/32 is no longer trusted"));
    assert!(run(&["unblock", "198.51.100.0/24"]).contains("198.51.100.0/24 is no longer blocked"));
    assert!(run(&["blocks"]).contains("No blocked networks."));

    let again = mw.cli(&["unblock", "198.51.100.0/24"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("198.51.100.0/24 is not on the blocked list"), "{}", stderr(&again));
    let bad = mw.cli(&["block", "198.51.100.0/24", "--for", "forever"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("for: \"forever\" is not a duration"), "{}", stderr(&bad));

    mw.write_config("", "[autoban]\nmax_failures = 2\n");
    assert!(run(&["reload"]).contains("Policy reloaded."));
    fail_n(&mw, "203.0.113.5", 2);
    assert_eq!(allow(&mw, "203.0.113.5").0, -1, "the reloaded threshold of 2 applies");
}

#[test]
fn a_broken_policy_file_is_refused_on_reload_and_the_old_policy_keeps_serving() {
    let mw = Mailwarden::start_with("[autoban]\nmax_failures = 3\n");
    mw.write_config("", "[autoban]\nmax_failures = 2\nwindow = \"soon\"\n");
    let (status, body) = mw.admin_post("/api/v1/reload", None);
    assert_eq!(status, 422, "{body}");
    let error = json(&body);
    assert_eq!(error["error"], "invalid_config");
    assert!(error["message"].as_str().unwrap().contains("autoban.window: \"soon\" is not a duration"), "{body}");
    // The CLI reads the same file to find the server, so it names the problem itself.
    let cli = mw.cli(&["reload"]);
    assert_eq!(cli.status.code(), Some(2));
    assert!(stderr(&cli).contains("autoban.window: \"soon\" is not a duration"), "{}", stderr(&cli));

    fail_n(&mw, "203.0.113.5", 2);
    assert_eq!(allow(&mw, "203.0.113.5").0, 0, "still the old threshold of 3");
    fail_n(&mw, "203.0.113.5", 1);
    assert_eq!(allow(&mw, "203.0.113.5").0, -1);
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    assert!(mw.log().contains("policy reload refused"));
}

#[test]
fn sighup_reloads_the_policy_and_names_settings_that_need_a_restart() {
    let mw = Mailwarden::start();
    mw.write_config("", "[messages]\nbanned = \"Blocked for now, {source}\"\n");
    // Move the policy listener too: a running server cannot, and must say so.
    let text = std::fs::read_to_string(&mw.config_path).unwrap();
    let text = text.replacen(&format!("policy_listen = \"{}\"", mw.policy_addr), "policy_listen = \"127.0.0.1:1\"", 1);
    std::fs::write(&mw.config_path, text).unwrap();
    mw.signal("HUP");
    fail_n(&mw, "203.0.113.9", 5);
    eventually(5, "SIGHUP applied the new message", || allow(&mw, "203.0.113.9").1 == "Blocked for now, 203.0.113.9");
    assert!(mw.log().contains("server.policy_listen"), "the log names the setting that needs a restart");
    assert_eq!(mw.policy("allow", &login_body("203.0.113.1", "a", "1")).0, 200, "still serving on the old port");
}

#[test]
fn a_reload_that_changes_the_source_grouping_keeps_every_ban_in_force() {
    let mw = Mailwarden::start();
    fail_n(&mw, "203.0.113.7", 5);
    assert_eq!(allow(&mw, "203.0.113.7").0, -1);
    mw.write_config("", "[autoban]\nipv4_prefix = 24\n");
    let (status, body) = mw.admin_post("/api/v1/reload", None);
    assert_eq!((status, json(&body)["restart_required"].clone()), (200, serde_json::json!([])), "{body}");
    assert_eq!(allow(&mw, "203.0.113.7").0, -1, "the ban placed on 203.0.113.7 still refuses it");
    assert_eq!(allow(&mw, "203.0.113.8").0, 0, "and covers that address only");
    let listed = stdout(&mw.cli(&["bans"]));
    assert!(listed.contains("203.0.113.7"), "{listed}");
    let lifted = mw.cli(&["unban", "203.0.113.7"]);
    assert!(lifted.status.success(), "{}", stderr(&lifted));
    assert_eq!(allow(&mw, "203.0.113.7").0, 0, "unban finds the ban under the new grouping");

    // Now /24 sources: five failures from two addresses of one /24 ban all of it, and going
    // back to /32 keeps that ban on the whole network.
    fail_n(&mw, "198.51.100.1", 3);
    fail_n(&mw, "198.51.100.2", 2);
    assert_eq!(allow(&mw, "198.51.100.250").0, -1);
    mw.write_config("", "");
    assert_eq!(mw.admin_post("/api/v1/reload", None).0, 200);
    assert_eq!(allow(&mw, "198.51.100.250").0, -1, "the /24 ban holds under /32 sources");
    let (status, body) = mw.admin("GET", "/api/v1/bans/198.51.100.0/24");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_reload_names_every_setting_it_cannot_apply_and_keeps_their_old_values() {
    let mw = Mailwarden::start();
    mw.write_config(
        "public_listen = \"127.0.0.1:1\"\nmax_connections = 64\nclient_timeout = \"9s\"\nreload_on_change = true\n",
        "[geoip]\ncheck_every = \"5m\"\n[account_protection]\nmax_tracked_accounts = 500\n[autoban]\nmax_failures = 2\n",
    );
    let (status, body) = mw.admin_post("/api/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    let named: BTreeSet<String> =
        json(&body)["restart_required"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    let expected: BTreeSet<String> = [
        "server.public_listen",
        "server.max_connections",
        "server.client_timeout",
        "server.reload_on_change",
        "geoip.check_every",
        "account_protection.max_tracked_accounts",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(named, expected);
    fail_n(&mw, "203.0.113.5", 2);
    assert_eq!(allow(&mw, "203.0.113.5").0, -1, "the live setting max_failures = 2 applies");
    let check = stdout(&mw.cli(&["check-config"]));
    assert!(check.contains("max_connections = 64"), "check-config shows the file, not the running server: {check}");
}

#[test]
fn check_config_reports_every_problem_at_once_each_with_its_key_and_line() {
    let mw = Mailwarden::configure(
        "[autoban]\nmax_failures = 5.7\nunknown_accounts_count_double = \"yes\"\nipv4_prefix = \"24\"\n\
         [events]\nmax_count = 10\n[mailboxes.\"a@example.com\"]\ndefault = \"block\"\n\
         rules = [{ action = \"allow\", country = [\"FR\"], address = \"192.0.2.1\" }]\n",
    );
    let text = std::fs::read_to_string(&mw.config_path).unwrap();
    let text = text.replace("state_dir = \"state\"", "state_dir = 17");
    std::fs::write(&mw.config_path, &text).unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let check = mw.cli(&["check-config"]);
    assert_eq!(check.status.code(), Some(2));
    let errors = stderr(&check);
    for expected in [
        format!("server.state_dir: expected text in quotes, found the integer 17 (line {})", line_of("state_dir")),
        format!("autoban.max_failures: expected an integer, found the number 5.7 (line {})", line_of("max_failures")),
        format!(
            "autoban.unknown_accounts_count_double: expected true or false, found the text \"yes\" (line {})",
            line_of("unknown_accounts")
        ),
        format!("autoban.ipv4_prefix: expected an integer, found the text \"24\" (line {})", line_of("ipv4_prefix")),
        format!("events.max_count: 10 is outside 1000..=100000000 (line {})", line_of("max_count")),
        format!(
            "mailboxes.\"a@example.com\": rule no. 1: a rule has exactly one criterion, this one has address and country; write one rule for each (line {})",
            line_of("[mailboxes")
        ),
    ] {
        assert!(errors.contains(&expected), "missing {expected:?} in:\n{errors}");
    }
    let serve = mw.cli(&["serve"]);
    assert_eq!(serve.status.code(), Some(2), "the server refuses the same file");
}

#[test]
fn with_reload_on_change_an_edited_file_applies_by_itself() {
    let mw = Mailwarden::configure("");
    mw.write_config("reload_on_change = true\n", "");
    let mut mw = mw;
    mw.restart();
    std::thread::sleep(Duration::from_millis(1100)); // a new modification time
    mw.write_config("reload_on_change = true\n", "[networks]\nblocked = [\"192.0.2.0/24\"]\n");
    eventually(10, "the edited file is in force", || allow(&mw, "192.0.2.5").0 == -1);
    assert!(mw.log().contains("trigger=\"file change\"") || mw.log().contains("file change"), "{}", mw.log());
}

#[test]
fn reloading_under_load_drops_no_request_and_loses_no_ban() {
    let mw = Arc::new(Mailwarden::start());
    fail_n(&mw, "203.0.113.200", 5);
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (mw, stop, answered, failed) = (mw.clone(), stop.clone(), answered.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let remote = format!("198.18.{w}.{}", i % 250);
                    let (status, body) = mw.policy("allow", &login_body(&remote, "bob@example.com", "0f96"));
                    let ok = status == 200 && body.starts_with("{\"status\":");
                    let reported = mw.policy("report", &report_body(&remote, "bob@example.com", "0f96", true)).0 == 200;
                    let counter = if ok && reported { &answered } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for round in 0..20 {
        let failures = if round % 2 == 0 { 4 } else { 6 };
        mw.write_config("", &format!("[autoban]\nmax_failures = {failures}\n"));
        let (status, body) = mw.admin_post("/api/v1/reload", None);
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 100, "the load ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed during 20 reloads");
    assert_eq!(allow(&mw, "203.0.113.200").0, -1, "the ban survived the reloads");
    assert!(mw.admin("GET", "/metrics").1.contains("mailwarden_config_reloads_total{result=\"success\"} 20"));
}

/// Whether `url` (with a query, perhaps) is an instance of the OpenAPI path `template`.
fn matches_template(template: &str, url: &str) -> bool {
    let path = url.split('?').next().unwrap_or(url);
    let (a, b): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
}

/// Every operation the API serves, as (method, OpenAPI path): the server's own route table.
fn routes() -> Vec<(String, String)> {
    mailwarden::http::admin::ROUTES.iter().map(|route| (route.method.to_lowercase(), route.openapi_path())).collect()
}

#[test]
fn the_served_openapi_document_is_valid_and_every_route_answers_as_it_describes() {
    let mw = Mailwarden::start();
    let (status, text) = mw.admin("GET", "/api/v1/openapi.json");
    assert_eq!(status, 200);
    let document = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    let version = document.validate_version().expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1));
    let raw = json(&text);
    assert!(raw["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer", "bearer auth is declared");

    let mut described = BTreeSet::new();
    for (path, item) in raw["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            described.insert((method.clone(), path.clone()));
            for status in ["401", "403", "429"] {
                assert!(operation["responses"][status].is_object(), "{method} {path} documents {status}");
            }
        }
    }
    let routes = routes();
    let served: BTreeSet<(String, String)> = routes.iter().cloned().collect();
    assert_eq!(described, served, "the document lists exactly the routes served");

    // Every operation refuses a missing token, as it documents.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for (method, path) in &routes {
        let filled = path
            .replace("{addr}", "203.0.113.7")
            .replace("{login}", "alice@example.com")
            .replace("{number}", "1")
            .replace("{name}", "desk");
        let url = format!("http://{}{}", mw.admin_addr, filled);
        let response = match method.as_str() {
            "get" => agent.get(&url).call(),
            "delete" => agent.delete(&url).call(),
            "put" => agent.put(&url).send_empty(),
            _ => agent.post(&url).send_empty(),
        };
        assert_eq!(response.expect("answered").status().as_u16(), 401, "{method} {path} without a token");
    }

    // Call each operation as documented and check the status is one it documents and the body
    // is what it says (JSON, except /metrics).
    fail_n(&mw, "203.0.113.7", 5);
    let calls: &[(&str, &str, Option<&str>)] = &[
        ("get", "/healthz", None),
        ("get", "/metrics", None),
        ("get", "/api/v1/openapi.json", None),
        ("post", "/api/v1/reload", None),
        ("get", "/api/v1/decide?ip=203.0.113.7", None),
        ("get", "/api/v1/bans?limit=10", None),
        ("get", "/api/v1/bans.txt", None),
        ("get", "/api/v1/bans/203.0.113.7", None),
        ("post", "/api/v1/bans/203.0.113.7/lengthen", Some(r#"{"by":"1h"}"#)),
        ("delete", "/api/v1/bans/203.0.113.7", None),
        ("post", "/api/v1/logins/alice@example.com/reset", None),
        ("get", "/api/v1/logins/alice@example.com/history", None),
        ("get", "/api/v1/activity", None),
        ("get", "/api/v1/blocks", None),
        ("post", "/api/v1/blocks", Some(r#"{"network":"198.51.100.0/24","for":"1h"}"#)),
        ("delete", "/api/v1/blocks?network=198.51.100.0/24", None),
        ("get", "/api/v1/trusted", None),
        ("post", "/api/v1/trusted", Some(r#"{"network":"192.0.2.0/24"}"#)),
        ("delete", "/api/v1/trusted?network=192.0.2.0/24", None),
        ("get", "/api/v1/events?limit=5", None),
        ("get", "/api/v1/why?ip=203.0.113.7", None),
        ("get", "/api/v1/mailboxes", None),
        ("get", "/api/v1/mailboxes/alice@example.com/firewall", None),
        (
            "put",
            "/api/v1/mailboxes/alice@example.com/firewall",
            Some(r#"{"default":"allow","rules":[{"action":"block","network":"198.51.100.0/24"}]}"#),
        ),
        ("put", "/api/v1/mailboxes/alice@example.com/firewall/default", Some(r#"{"action":"block"}"#)),
        (
            "post",
            "/api/v1/mailboxes/alice@example.com/firewall/rules",
            Some(r#"{"action":"allow","address":"198.51.100.7","position":1}"#),
        ),
        ("post", "/api/v1/mailboxes/alice@example.com/firewall/rules/2/move", Some(r#"{"direction":"up"}"#)),
        ("delete", "/api/v1/mailboxes/alice@example.com/firewall/rules/2", None),
        ("delete", "/api/v1/mailboxes/alice@example.com/firewall", None),
        ("post", "/api/v1/tokens", Some(r#"{"name":"desk","scope":"support","expires":"90d"}"#)),
        ("get", "/api/v1/tokens", None),
        ("delete", "/api/v1/tokens/desk", None),
        ("get", "/api/v1/audit?limit=5", None),
    ];
    assert_eq!(calls.len(), routes.len());
    for (method, url, body) in calls {
        let (status, answer) = match *method {
            "post" => mw.admin_post(url, *body),
            "put" => mw.admin_put(url, body.unwrap_or("{}")),
            other => mw.admin(&other.to_uppercase(), url),
        };
        let path = routes.iter().find(|(m, p)| m == method && matches_template(p, url)).map(|(_, p)| p).unwrap();
        let documented = &raw["paths"][path.as_str()][*method]["responses"][status.to_string()];
        assert!(documented.is_object(), "{method} {url} answered {status}, which it does not document: {answer}");
        if documented["content"]["application/json"].is_object() {
            json(&answer);
        } else if path == "/api/v1/bans.txt" {
            assert_eq!(answer, "203.0.113.7\n", "{method} {url}");
        } else {
            assert!(answer.contains("mailwarden_build_info"), "{method} {url}");
        }
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_never_carry_secrets_or_password_hashes() {
    let mw = Mailwarden::start_with("[log]\nformat = \"json\"\n");
    for i in 0..5 {
        let body = report_body("203.0.113.7", "alice@example.com", &format!("c0ffee{i:02}"), false);
        assert_eq!(mw.policy("report", &body).0, 200);
    }
    assert_eq!(mw.policy_with_key("allow", &login_body("203.0.113.7", "a", "1"), Some("wrong-key-0123456789")).0, 401);
    assert_eq!(mw.admin_post("/api/v1/blocks", Some(r#"{"network":"198.51.100.0/24"}"#)).0, 201);
    assert_eq!(mw.admin_post("/api/v1/reload", None).0, 200);
    let log = mw.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 4, "{log}");
    for line in &lines {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(entry["level"].is_string() && entry["timestamp"].is_string(), "{line}");
    }
    assert!(log.contains("source banned after repeated failed logins"), "{log}");
    for secret in [mw.api_key.as_str(), mw.admin_token.as_str(), "c0ffee", "wrong-key-0123456789"] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}

#[test]
fn the_version_is_printed_and_exported() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mailwarden")).arg("--version").output().unwrap();
    assert_eq!(stdout(&output).trim(), format!("mailwarden {}", env!("CARGO_PKG_VERSION")));
    let mw = Mailwarden::start();
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(metrics.contains(&format!("mailwarden_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
}
