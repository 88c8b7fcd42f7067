//! Hostile and careless input against the real binary: absurd durations, stored records with
//! times no formatter can show, logins and device IDs with control characters, oversized
//! device IDs and a banned client's flood of retries. None may crash a route, forge a log
//! line, reach the admin's terminal raw or fill the disk.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::mailwarden::{Mailwarden, fresh_pwhash, login_body, report_body};
use support::redis::RedisServer;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "the CLI failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `status` Dovecot gets for a login from `remote`.
fn allow(mw: &Mailwarden, body: &str) -> Value {
    let (code, answer) = mw.policy("allow", body);
    assert_eq!(code, 200, "{answer}\n{}", mw.log());
    json(&answer)
}

fn ban(mw: &Mailwarden, remote: &str, login: &str) {
    for _ in 0..5 {
        let (code, answer) = mw.policy("report", &report_body(remote, login, &fresh_pwhash(), false));
        assert_eq!(code, 200, "{answer}");
    }
    assert_eq!(mw.admin("GET", &format!("/api/v1/bans/{remote}")).0, 200, "{remote} is banned");
}

/// A JSON string literal's content for `text` (escapes a control character as `\u00XX`).
fn escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

#[test]
fn an_absurd_duration_is_refused_and_the_block_list_stays_readable() {
    let mw = Mailwarden::start();
    for (body, field) in [
        (r#"{"network": "203.0.113.0/24", "for": "9000years"}"#, "for"),
        (r#"{"network": "203.0.113.0/24", "for": "100000000000000000s"}"#, "for"),
        (r#"{"network": "203.0.113.0/24", "for": "3661days"}"#, "for"),
        (r#"{"network": "203.0.113.0/24", "expires_at": "9999-12-31T23:59:59Z"}"#, "expires_at"),
    ] {
        let (code, answer) = mw.admin_post("/api/v1/blocks", Some(body));
        assert_eq!(code, 400, "{body}: {answer}");
        let answer = json(&answer);
        assert_eq!(answer["error"], "invalid_field", "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let refused = mw.cli(&["block", "203.0.113.0/24", "--for", "9000years"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("for: \"9000years\" is longer than 3660 days"), "{said}");
    let (code, listed) = mw.admin("GET", "/api/v1/blocks");
    assert_eq!(code, 200, "{listed}");
    assert_eq!(json(&listed)["total"], 0, "nothing was stored: {listed}");
    assert!(stdout(&mw.cli(&["blocks"])).contains("No blocked networks"));
    let (code, answer) = mw.admin("GET", "/api/v1/events?since=9000years");
    assert_eq!((code, json(&answer)["field"].clone()), (400, Value::from("since")), "{answer}");
    // Ten years is the longest length, and it works.
    let (code, answer) = mw.admin_post("/api/v1/blocks", Some(r#"{"network": "203.0.113.0/24", "for": "3660days"}"#));
    assert_eq!(code, 201, "{answer}");
    assert!(stdout(&mw.cli(&["blocks"])).contains("203.0.113.0/24"));
}

/// A ban, a list entry and an event with times no formatter can show, as a damaged or
/// hand-edited database might hold them.
fn write_hostile_records(database: &Path) {
    let db = rusqlite::Connection::open(database).expect("open the state database");
    let guesses = format!(
        r#"[{{"login":"a","protocol":"imap","device_id":"","failures":1,"first_seen":{},"last_seen":{}}}]"#,
        i64::MIN,
        i64::MAX
    );
    db.execute(
        "INSERT INTO bans (source, created_at, expires_at, reason, failures, login, protocol, device_id, guesses)
         VALUES ('198.51.100.4', ?1, ?2, 'autoban', 5, 'a', 'imap', '', ?3)",
        rusqlite::params![i64::MIN, i64::MAX, guesses],
    )
    .expect("insert a ban");
    db.execute(
        "INSERT INTO access_entries (list, network, comment, created_at, expires_at) VALUES ('blocked', '192.0.2.0/24', '', ?1, ?1)",
        [i64::MAX],
    )
    .expect("insert a list entry");
    db.execute(
        "INSERT INTO events (at, kind, login, ip, protocol, device_id, rule, detail) VALUES (?1, 'ban', 'a', '198.51.100.4', 'imap', '', NULL, '')",
        [i64::MAX],
    )
    .expect("insert an event");
}

/// What must hold with the hostile records loaded: both still refuse, and every list and the
/// CLI answer, showing the times as the year 9999.
fn check_hostile_records_are_served(mw: &Mailwarden) {
    let banned = allow(mw, &login_body("198.51.100.4", "bob@example.com", "0f96"));
    assert_eq!(banned["status"], -1, "the ban stays in force: {banned}");
    assert!(banned["msg"].as_str().unwrap_or_default().contains("9999-12-31"), "{banned}");
    assert_eq!(allow(mw, &login_body("192.0.2.5", "bob@example.com", "0f96"))["status"], -1, "still blocked");
    for path in
        ["/api/v1/bans", "/api/v1/bans/198.51.100.4", "/api/v1/blocks", "/api/v1/events", "/api/v1/why?ip=198.51.100.4"]
    {
        let (code, answer) = mw.admin("GET", path);
        assert_eq!(code, 200, "{path}: {answer}");
        assert!(answer.contains("9999-12-31T23:59:59Z"), "{path}: {answer}");
    }
    for args in [&["bans"][..], &["blocks"], &["events"]] {
        assert!(stdout(&mw.cli(args)).contains("9999-12-31"), "{args:?}");
    }
    assert!(mw.log().contains("outside 1970..=9999"), "the repair is logged:\n{}", mw.log());
}

#[test]
fn a_stored_record_with_a_huge_timestamp_does_not_break_allow_or_the_lists() {
    let mut mw = Mailwarden::start();
    mw.kill9();
    write_hostile_records(&mw.dir.path().join("state").join("mailwarden.db"));
    mw.restart();
    check_hostile_records_are_served(&mw);
}

#[test]
fn a_record_with_a_huge_timestamp_in_redis_does_not_break_allow_or_the_lists() {
    let Some(redis) = RedisServer::start() else { return };
    let ban = serde_json::json!({
        "source": "198.51.100.4", "created_at": i64::MIN, "expires_at": i64::MAX, "reason": "autoban", "failures": 5,
        "guesses": [{"login": "a", "protocol": "imap", "device_id": "", "failures": 1, "first_seen": i64::MIN, "last_seen": i64::MAX}]
    });
    let entry = serde_json::json!({"list": "blocked", "network": "192.0.2.0/24", "created_at": i64::MAX, "expires_at": i64::MAX});
    let event = serde_json::json!({"at": i64::MAX, "kind": "ban", "login": "a", "ip": "198.51.100.4"});
    redis.cli(&["HSET", "mwtest:bans", "198.51.100.4", &ban.to_string()]);
    redis.cli(&["HSET", "mwtest:lists", "blocked|192.0.2.0/24", &entry.to_string()]);
    redis.cli(&["XADD", "mwtest:events", "*", "event", &event.to_string()]);
    let store = format!("[store]\nbackend = \"redis\"\nurl = {:?}\nprefix = \"mwtest:\"\n", redis.url());
    let mw = Mailwarden::start_with(&store);
    check_hostile_records_are_served(&mw);
}

#[test]
fn a_login_with_a_newline_cannot_forge_a_log_line() {
    let mw = Mailwarden::start();
    let (code, answer) = mw.admin_post("/api/v1/blocks", Some(r#"{"network": "192.0.2.0/24"}"#));
    assert_eq!(code, 201, "{answer}");
    let forged = "eve\nINFO mailwarden: admin logged in from 10.0.0.1\u{1b}[2J";
    let body = format!(
        r#"{{"login":"{}","device_id":"{}","remote":"192.0.2.7","protocol":"imap","pwhash":"0f96"}}"#,
        escaped(forged),
        escaped("K-9\r\n\u{1b}]0;owned\u{7}")
    );
    assert_eq!(allow(&mw, &body)["status"], -1);
    let log = mw.log();
    let refused =
        log.lines().find(|line| line.contains("login refused")).unwrap_or_else(|| panic!("no refusal:\n{log}"));
    assert!(refused.contains(r"login=eve\nINFO mailwarden: admin logged in from 10.0.0.1\u{1b}[2J"), "{refused}");
    assert!(refused.contains(r"device_id=K-9\r\n\u{1b}]0;owned\u{7}"), "{refused}");
    assert!(!log.lines().any(|line| line.starts_with("INFO mailwarden: admin")), "a forged line:\n{log}");
    assert!(!log.contains('\u{1b}') && !log.contains('\r'), "raw control characters in the log:\n{log:?}");
}

#[test]
fn the_cli_shows_logins_and_device_ids_from_outside_escaped() {
    let mw = Mailwarden::start();
    let login = "mallory\u{1b}[2J\nroot";
    ban(&mw, "203.0.113.7", &escaped(login));
    let body =
        format!(r#"{{"login":"{}","device_id":"{}","remote":"203.0.113.7"}}"#, escaped(login), escaped("ID\u{1b}[31m"));
    assert_eq!(allow(&mw, &body)["status"], -1);
    for args in [&["bans"][..], &["events"], &["why", "203.0.113.7"]] {
        let shown = stdout(&mw.cli(args));
        assert!(shown.contains(r"mallory\u{1b}[2J\nroot"), "{args:?}: {shown}");
        assert!(!shown.contains('\u{1b}') && !shown.contains("\nroot"), "{args:?} printed it raw: {shown:?}");
    }
    // The API's JSON keeps the text as it came, escaped by JSON.
    let (_, events) = mw.admin("GET", "/api/v1/events?ip=203.0.113.7");
    assert!(json(&events)["events"].as_array().into_iter().flatten().any(|e| e["device_id"] == "ID\u{1b}[31m"));
}

/// The state database's size on disk, with its write-ahead log.
fn database_bytes(mw: &Mailwarden) -> u64 {
    let state = mw.dir.path().join("state");
    ["mailwarden.db", "mailwarden.db-wal"]
        .iter()
        .map(|name| std::fs::metadata(state.join(name)).map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[test]
fn fifty_refusals_with_a_60_kb_device_id_grow_the_database_by_a_bounded_amount() {
    let mw = Mailwarden::start();
    let (code, answer) = mw.admin_post("/api/v1/blocks", Some(r#"{"network": "192.0.2.0/24"}"#));
    assert_eq!(code, 201, "{answer}");
    let (_, events) = mw.admin("GET", "/api/v1/events");
    assert!(events.contains("[]"), "the block log starts empty: {events}");
    let before = database_bytes(&mw);
    let device = "x".repeat(60_000);
    for host in 1..=50 {
        let body = format!(r#"{{"login":"bob","device_id":"{device}","remote":"192.0.2.{host}"}}"#);
        assert_eq!(allow(&mw, &body)["status"], -1);
    }
    let (_, events) = mw.admin("GET", "/api/v1/events?limit=1000");
    let events = json(&events)["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 50, "every refusal is recorded");
    assert!(events.iter().all(|e| e["device_id"].as_str().map(str::len) == Some(512)), "cut at the wire");
    let grown = database_bytes(&mw).saturating_sub(before);
    println!("50 refusals with a 60 KB device ID grew the database by {grown} bytes");
    assert!(grown <= 256 * 1024, "grew by {grown} bytes");
}

#[test]
fn a_banned_clients_flood_of_refusals_does_not_push_other_sources_history_out_of_the_block_log() {
    let mw = Mailwarden::start_with("[events]\nmax_count = 1000\nmax_bytes = 1048576\n");
    let (code, answer) = mw.admin_post("/api/v1/blocks", Some(r#"{"network": "198.51.100.9"}"#));
    assert_eq!(code, 201, "{answer}");
    assert_eq!(allow(&mw, &login_body("198.51.100.9", "carol@example.com", "0f96"))["status"], -1);
    ban(&mw, "203.0.113.7", "alice@example.com");
    let device = "d".repeat(500);
    for _ in 0..1500 {
        let body = format!(r#"{{"login":"alice@example.com","device_id":"{device}","remote":"203.0.113.7"}}"#);
        assert_eq!(allow(&mw, &body)["status"], -1);
    }
    let (_, carol) = mw.admin("GET", "/api/v1/events?ip=198.51.100.9");
    assert_eq!(json(&carol)["events"].as_array().map(Vec::len), Some(1), "carol's refusal stays: {carol}");
    let (_, flood) = mw.admin("GET", "/api/v1/events?ip=203.0.113.7&reason=ban&limit=1000");
    assert_eq!(json(&flood)["events"].as_array().map(Vec::len), Some(1), "one refusal a minute is recorded");
}
