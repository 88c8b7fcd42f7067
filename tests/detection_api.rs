//! Stale-device detection and account protection over HTTP against the real binary: the
//! policy answers, `/api/v1/why`, the block log and the metrics.

mod support;

use serde_json::Value;
use support::mailwarden::{Mailwarden, fresh_pwhash, login_body, report_body};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn allow(mw: &Mailwarden, remote: &str, login: &str, pwhash: &str) -> Value {
    let (status, body) = mw.policy("allow", &login_body(remote, login, pwhash));
    assert_eq!(status, 200, "{body}");
    json(&body)
}

fn fail(mw: &Mailwarden, remote: &str, login: &str, pwhash: &str) {
    assert_eq!(mw.policy("report", &report_body(remote, login, pwhash, false)).0, 200);
}

#[test]
fn a_repeated_password_is_quarantined_and_why_tells_the_story_without_hashes() {
    let mw = Mailwarden::start();
    for _ in 0..6 {
        fail(&mw, "203.0.113.7", "alice@example.com", "00c0ffee");
    }
    let stale = allow(&mw, "203.0.113.7", "alice@example.com", "00c0ffee");
    assert_eq!(stale["status"], -1);
    assert_eq!(
        stale["msg"],
        "Your mail app keeps using an old password for alice@example.com; update it in the app's account settings"
    );
    assert_eq!(allow(&mw, "203.0.113.7", "alice@example.com", "0000beef")["status"], 0, "another password passes");
    assert_eq!(allow(&mw, "203.0.113.7", "bob@example.com", "00c0ffee")["status"], 0, "another account passes");

    let (status, body) = mw.admin("GET", "/api/v1/why?ip=203.0.113.7");
    assert_eq!(status, 200, "{body}");
    let why = json(&body);
    let guess = &why["guesses"][0];
    assert_eq!(
        (guess["login"].as_str(), guess["failures"].as_u64(), guess["stale"].as_bool()),
        (Some("alice@example.com"), Some(6), Some(true))
    );
    assert!(guess["quarantined_until"].is_string());
    assert!(why["lines"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().starts_with("stale device:")), "{why}");
    assert!(!body.contains("c0ffee"), "no password hashes: {body}");

    let (status, body) = mw.admin("GET", "/api/v1/why?ip=nope");
    assert_eq!((status, json(&body)["field"].as_str()), (400, Some("ip")));
    let metrics = mw.admin("GET", "/metrics").1;
    for expected in [
        "mailwarden_failed_guesses_total{kind=\"new\"} 1",
        "mailwarden_failed_guesses_total{kind=\"repeated\"} 5",
        "mailwarden_stale_password_quarantines_total{protocol=\"imap\"} 1",
        "mailwarden_decisions_total{protocol=\"imap\",reason=\"stale_password\",verdict=\"reject\"} 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected}");
    }
}

#[test]
fn a_ban_shows_the_distinct_passwords_that_led_to_it() {
    let mw = Mailwarden::start();
    for _ in 0..5 {
        fail(&mw, "198.51.100.7", "alice@example.com", &fresh_pwhash());
    }
    let ban = json(&mw.admin("GET", "/api/v1/bans/198.51.100.7").1);
    assert_eq!(ban["guesses"].as_array().unwrap().len(), 5, "{ban}");
    let why = json(&mw.admin("GET", "/api/v1/why?ip=198.51.100.7").1);
    let lines: Vec<&str> = why["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(lines[0].starts_with("refused: 198.51.100.7 is banned until"), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("led to the ban:")).count(), 5, "{lines:?}");
}

#[test]
fn an_account_under_attack_delays_new_sources_and_says_so_in_metrics_and_events() {
    let mw = Mailwarden::start();
    assert_eq!(mw.policy("report", &report_body("192.0.2.50", "carol@example.com", "0000aaaa", true)).0, 200);
    for i in 1..=10 {
        fail(&mw, &format!("198.18.0.{i}"), "carol@example.com", &fresh_pwhash());
    }
    assert_eq!(allow(&mw, "198.18.9.9", "carol@example.com", "0000aaaa")["status"], 5, "delayed 5 s");
    assert_eq!(allow(&mw, "192.0.2.50", "carol@example.com", "0000aaaa")["status"], 0, "the known source");
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_accounts_under_attack 1"), "{metrics}");
    assert!(
        metrics.contains(
            "mailwarden_decisions_total{protocol=\"imap\",reason=\"account_under_attack\",verdict=\"delay\"} 1"
        )
    );
    let mut events = Vec::new();
    for _ in 0..50 {
        events =
            json(&mw.admin("GET", "/api/v1/events?login=carol@example.com").1)["events"].as_array().unwrap().clone();
        if events.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let reasons: Vec<&str> = events.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"attack_started") && reasons.contains(&"account_under_attack"), "{reasons:?}");
}

#[test]
fn three_banned_sources_of_one_slash_24_ban_it_whole_and_the_cli_lists_lifts_and_a_restart_keeps_it() {
    let mut mw = Mailwarden::start();
    // An office in the /24 where people log in successfully.
    assert_eq!(mw.policy("report", &report_body("192.0.2.200", "carol@example.com", "0000aaaa", true)).0, 200);
    for attacker in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        for _ in 0..5 {
            fail(&mw, attacker, "alice@example.com", &fresh_pwhash());
        }
    }
    let neighbour = allow(&mw, "192.0.2.77", "bob@example.com", "0000beef");
    assert_eq!(neighbour["status"], -1, "a fourth address of the /24 is refused at once: {neighbour}");
    assert!(neighbour["msg"].as_str().unwrap().starts_with("Too many failed logins from 192.0.2.0/24"), "{neighbour}");
    assert_eq!(allow(&mw, "192.0.2.200", "carol@example.com", "0000aaaa")["status"], 0, "the office is not refused");

    let ban = json(&mw.admin("GET", "/api/v1/bans/192.0.2.0/24").1);
    assert_eq!((ban["reason"].as_str(), ban["failures"].as_u64()), (Some("subnet"), Some(3)), "{ban}");
    let why = json(&mw.admin("GET", "/api/v1/why?ip=192.0.2.77").1);
    assert!(why["lines"][0].as_str().unwrap().contains("banned as a subnet"), "{why}");
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_bans_created_total{reason=\"subnet\"} 1"), "{metrics}");

    mw.restart();
    assert_eq!(
        allow(&mw, "192.0.2.78", "bob@example.com", "0000beef")["status"],
        -1,
        "stored: in force after a restart"
    );
    let listed = String::from_utf8(mw.cli(&["bans"]).stdout).unwrap();
    assert!(listed.contains("192.0.2.0/24"), "{listed}");
    let lifted = mw.cli(&["unban", "192.0.2.0/24"]);
    assert!(lifted.status.success(), "{}", String::from_utf8_lossy(&lifted.stderr));
    assert_eq!(allow(&mw, "192.0.2.78", "bob@example.com", "0000beef")["status"], 0, "lifted");
    assert_eq!(allow(&mw, "192.0.2.1", "bob@example.com", "0000beef")["status"], -1, "its sources' own bans stay");
}

#[test]
fn after_a_password_change_reset_login_ends_its_quarantines_and_lifts_the_bans_its_old_passwords_caused() {
    let mut mw = Mailwarden::start();
    for _ in 0..3 {
        fail(&mw, "198.51.100.40", "alice@example.com", "0ld0");
    }
    for pwhash in ["0001", "0002", "0003", "0004", "0005"] {
        fail(&mw, "203.0.113.60", "alice@example.com", pwhash);
    }
    for n in 0..5 {
        fail(&mw, "203.0.113.70", &format!("user{n}@example.com"), &fresh_pwhash());
    }
    assert_eq!(allow(&mw, "198.51.100.40", "alice@example.com", "0ld0")["status"], -1, "quarantined");
    assert_eq!(allow(&mw, "203.0.113.60", "alice@example.com", "0f96")["status"], -1, "banned");

    let output = mw.cli(&["reset-login", "ALICE@example.com"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The café's history went with its ban; home still held the laptop's guess.
    assert!(text.contains("from 1 address no longer count, 1 quarantine ended, 1 ban lifted"), "{text}");
    assert!(text.contains("unbanned 203.0.113.60"), "{text}");
    assert_eq!(allow(&mw, "198.51.100.40", "alice@example.com", "0ld0")["status"], 0, "quarantine ended");
    assert_eq!(allow(&mw, "203.0.113.60", "alice@example.com", "0f96")["status"], 0, "ban lifted");
    assert_eq!(allow(&mw, "203.0.113.70", "alice@example.com", "0f96")["status"], -1, "others' bans stay");

    let (_, metrics) = mw.admin("GET", "/metrics");
    assert!(metrics.contains("mailwarden_bans_lifted_total{cause=\"reset_login\"} 1"), "{metrics}");
    let (status, body) = mw.admin_post("/api/v1/logins/%20/reset", None);
    assert_eq!(status, 400, "{body}");

    // The lift is stored: a restart keeps it lifted.
    mw.restart();
    assert_eq!(allow(&mw, "203.0.113.60", "alice@example.com", "0f96")["status"], 0);
}

fn succeed(mw: &Mailwarden, remote: &str, login: &str) {
    assert_eq!(mw.policy("report", &report_body(remote, login, "00900d", true)).0, 200);
}

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn an_office_keeps_the_tolerance_it_earned_across_a_restart() {
    let mut mw = Mailwarden::start();
    let office = "198.51.100.30";
    for n in 0..4 {
        succeed(&mw, office, &format!("colleague{n}@example.com"));
    }
    // The known sources reach the store in the block log's next batch.
    std::thread::sleep(std::time::Duration::from_millis(300));
    mw.restart();
    // Six colleagues mistype their password once each: six distinct wrong guesses, one more
    // than a stranger may make, and the office is not banned.
    for n in 0..6 {
        fail(&mw, office, &format!("typo{n}@example.com"), &fresh_pwhash());
    }
    assert_eq!(allow(&mw, office, "colleague0@example.com", "00900d")["status"], 0, "the office still logs in");
    let why = json(&mw.admin("GET", &format!("/api/v1/why?ip={office}")).1);
    let tolerance =
        why["lines"].as_array().unwrap().iter().filter_map(Value::as_str).find(|l| l.starts_with("tolerance:"));
    assert!(tolerance.is_some_and(|l| l.contains("instead of 5")), "{why}");
    // A stranger is banned at five, restart or not.
    for _ in 0..5 {
        fail(&mw, "198.51.100.31", "alice@example.com", &fresh_pwhash());
    }
    assert_eq!(allow(&mw, "198.51.100.31", "alice@example.com", "00900d")["status"], -1);
}

#[test]
fn an_office_where_one_colleague_is_guessed_five_times_refuses_that_login_only_until_the_cli_lifts_it() {
    let mut mw = Mailwarden::start();
    let office = "198.51.100.20";
    for n in 0..4 {
        succeed(&mw, office, &format!("colleague{n}@example.com"));
    }
    for _ in 0..5 {
        fail(&mw, office, "alice@example.com", &fresh_pwhash());
    }
    let refused = allow(&mw, office, "alice@example.com", "00900d");
    assert_eq!(refused["status"], -1, "{refused}");
    let msg = refused["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("Too many failed logins for alice@example.com from 198.51.100.20; try again after ")
            && msg.ends_with(" UTC or update the password in your mail app"),
        "{msg}"
    );
    for n in 0..4 {
        assert_eq!(allow(&mw, office, &format!("colleague{n}@example.com"), "00900d")["status"], 0, "colleagues");
    }
    assert_eq!(allow(&mw, "198.51.100.21", "alice@example.com", "00900d")["status"], 0, "alice elsewhere");

    let (status, body) = mw.admin("GET", "/api/v1/bans");
    assert_eq!(status, 200, "{body}");
    let bans = json(&body);
    assert_eq!(bans["total"], 1, "no ban of the office, one refusal: {bans}");
    assert_eq!(
        (bans["bans"][0]["source"].as_str(), bans["bans"][0]["login"].as_str()),
        (Some(office), Some("alice@example.com"))
    );
    assert_eq!(mw.admin("GET", "/api/v1/bans/198.51.100.20").0, 404, "the office itself is not banned");
    assert_eq!(mw.admin("GET", "/api/v1/bans/198.51.100.20?login=Alice@Example.com").0, 200);
    let why = json(&mw.admin("GET", "/api/v1/why?ip=198.51.100.20").1);
    assert_eq!(why["login_refusals"][0]["login"], "alice@example.com", "{why}");
    let lines: Vec<&str> = why["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("per-login refusal: logins to alice@example.com from 198.51.100.20")),
        "{lines:?}"
    );
    let metrics = mw.admin("GET", "/metrics").1;
    for expected in [
        "mailwarden_login_refusals_total{protocol=\"imap\"} 1",
        "mailwarden_decisions_total{protocol=\"imap\",reason=\"login_refused\",verdict=\"reject\"} 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected}");
    }

    mw.restart();
    assert_eq!(allow(&mw, office, "alice@example.com", "00900d")["status"], -1, "a restart keeps the refusal");
    let listed = stdout(&mw.cli(&["bans"]));
    assert!(listed.contains("LOGIN") && listed.contains("alice@example.com"), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with(office) && l.contains("alice@example.com")), "{listed}");
    let lifted = stdout(&mw.cli(&["unban", office, "--login", "alice@example.com"]));
    assert!(lifted.starts_with("Unbanned alice@example.com from 198.51.100.20"), "{lifted}");
    assert_eq!(allow(&mw, office, "alice@example.com", "00900d")["status"], 0, "lifted");
    assert!(!mw.cli(&["unban", office, "--login", "alice@example.com"]).status.success(), "nothing left to lift");
}

#[test]
fn a_fresh_address_guessing_one_login_five_times_is_banned_whole_as_before() {
    let mw = Mailwarden::start();
    for _ in 0..5 {
        fail(&mw, "203.0.113.30", "alice@example.com", &fresh_pwhash());
    }
    assert_eq!(allow(&mw, "203.0.113.30", "bob@example.com", "00900d")["status"], -1, "every login");
    let bans = json(&mw.admin("GET", "/api/v1/bans").1);
    assert_eq!((bans["total"].as_u64(), bans["bans"][0]["login"].is_null()), (Some(1), true), "{bans}");
}
