//! The self-service unblock page against the real binary: what it shows, the proof-of-work
//! check, and the abuse limits. The browser test (tests/browser_unblock.rs) drives the same
//! page in a real Chromium.

mod support;

use serde_json::Value;
use support::mailwarden::{Mailwarden, free_port, fresh_pwhash, login_body, report_body};

/// A server whose public page listens on a free port, as configured by `extra`.
fn start(server_extra: &str, extra: &str) -> (Mailwarden, String) {
    let mut mw = Mailwarden::configure("");
    let port = free_port();
    mw.write_config(&format!("public_listen = \"127.0.0.1:{port}\"\n{server_extra}"), extra);
    mw.restart();
    (mw, format!("http://127.0.0.1:{port}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, Option<String>) {
    let request = headers.iter().fold(agent().get(url), |r, (k, v)| r.header(*k, *v));
    let mut response = request.call().expect("the page answers");
    let csp = response.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).map(str::to_string);
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default(), csp)
}

fn ban(mw: &Mailwarden, remote: &str) {
    for _ in 0..5 {
        let body = report_body(remote, "alice@example.com", &fresh_pwhash(), false);
        assert_eq!(mw.policy("report", &body).0, 200);
    }
}

/// Fetches a challenge, solves it like the page's script, and posts the solution.
fn solve_and_unblock(base: &str) -> (u16, Value) {
    let (status, text, _) = get(&format!("{base}/challenge"), &[]);
    assert_eq!(status, 200, "{text}");
    let challenge: altcha_lib_rs::Challenge = serde_json::from_str(&text).expect("an ALTCHA challenge");
    let number = altcha_lib_rs::solve_challenge(
        &challenge.challenge,
        &challenge.salt,
        Some(challenge.algorithm),
        Some(challenge.maxnumber),
        0,
    )
    .expect("solvable");
    let payload = serde_json::json!({
        "algorithm": "SHA-256", "challenge": challenge.challenge, "number": number,
        "salt": challenge.salt, "signature": challenge.signature,
    });
    post_unblock(base, &payload)
}

fn post_unblock(base: &str, payload: &Value) -> (u16, Value) {
    let mut response = agent()
        .post(format!("{base}/unblock"))
        .header("Content-Type", "application/json")
        .send(payload.to_string())
        .unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap())
}

fn allow_status(mw: &Mailwarden, remote: &str) -> i64 {
    let (_, body) = mw.policy("allow", &login_body(remote, "alice@example.com", "0f96"));
    serde_json::from_str::<Value>(&body).unwrap()["status"].as_i64().unwrap()
}

#[test]
fn the_page_shows_the_ban_its_cause_and_the_steps_then_unblocks_after_the_check() {
    let (mw, base) =
        start("", "[self_service]\nprovider_name = \"Example Mail\"\nsupport_contact = \"help@example.com\"\n");
    let (status, page, csp) = get(&format!("{base}/"), &[]);
    assert_eq!(status, 200);
    assert!(page.contains("Your address is 127.0.0.1.") && page.contains("It is not blocked."), "{page}");
    assert!(csp.is_some_and(|c| c.contains("script-src 'self'")), "a content security policy");

    ban(&mw, "127.0.0.1");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("It is blocked until"), "{page}");
    assert!(page.contains("5 failed logins to a***e@example.com over IMAP"), "a masked login and the count: {page}");
    assert!(!page.contains("alice@example.com"), "never the full login");
    assert!(
        page.contains("Find the device") && page.contains("<button type=\"submit\">Unblock my address</button>"),
        "{page}"
    );
    assert!(page.contains("This page is run by Example Mail."));

    let (status, answer) = solve_and_unblock(&base);
    assert_eq!((status, answer["unblocked"].as_bool()), (200, Some(true)), "{answer}");
    assert_eq!(allow_status(&mw, "127.0.0.1"), 0, "the next login passes the policy endpoint");
    let events = mw.admin("GET", "/api/v1/events?reason=self_unblock").1;
    assert!(events.contains("127.0.0.1"), "{events}");
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_bans_lifted_total{cause=\"self_service\"} 1"), "{metrics}");
    assert!(metrics.contains("mailwarden_self_unblocks_total{result=\"unblocked\"} 1"));
}

#[test]
fn the_fourth_unblock_of_the_day_is_refused_and_sends_people_to_support() {
    let (mw, base) = start("", "[self_service]\nsupport_contact = \"help@example.com\"\n");
    for round in 1..=3 {
        ban(&mw, "127.0.0.1");
        let (status, answer) = solve_and_unblock(&base);
        assert_eq!(status, 200, "round {round}: {answer}");
    }
    ban(&mw, "127.0.0.1");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("unblocked 3 times today already. Please contact help@example.com."), "{page}");
    assert!(!page.contains("<button"), "no button once the limit is reached");
    let (status, answer) = solve_and_unblock(&base);
    assert_eq!((status, answer["unblocked"].as_bool()), (429, Some(false)), "{answer}");
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1, "still banned");
}

#[test]
fn solutions_are_single_use_and_bad_ones_change_nothing() {
    let (mw, base) = start("", "");
    ban(&mw, "127.0.0.1");
    let (_, text, _) = get(&format!("{base}/challenge"), &[]);
    let challenge: altcha_lib_rs::Challenge = serde_json::from_str(&text).unwrap();
    let wrong = serde_json::json!({"algorithm":"SHA-256","challenge":challenge.challenge,"number":challenge.maxnumber + 1,"salt":challenge.salt,"signature":challenge.signature});
    assert_eq!(post_unblock(&base, &wrong).0, 400);
    assert_eq!(post_unblock(&base, &serde_json::json!({"nonsense": true})).0, 400);
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1);
    let number = altcha_lib_rs::solve_challenge(
        &challenge.challenge,
        &challenge.salt,
        Some(challenge.algorithm),
        Some(challenge.maxnumber),
        0,
    )
    .unwrap();
    let right = serde_json::json!({"algorithm":"SHA-256","challenge":challenge.challenge,"number":number,"salt":challenge.salt,"signature":challenge.signature});
    assert_eq!(post_unblock(&base, &right).0, 200);
    ban(&mw, "127.0.0.1");
    let (status, answer) = post_unblock(&base, &right);
    assert_eq!(status, 400, "a used solution does not unblock again");
    assert!(answer["message"].as_str().unwrap().contains("already used"), "{answer}");
}

#[test]
fn administrator_blocks_cannot_be_lifted_here() {
    let (mw, base) = start("", "[networks]\nblocked = [\"127.0.0.1\"]\n");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("blocked by the administrators"), "{page}");
    assert!(!page.contains("<button"));
    let (status, _) = solve_and_unblock(&base);
    assert_eq!(status, 403);
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1);
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_address_is_the_visitor() {
    let (mw, base) = start("trusted_proxies = [\"127.0.0.1\"]\n", "");
    ban(&mw, "203.0.113.7");
    let (_, page, _) = get(&format!("{base}/"), &[("X-Forwarded-For", "203.0.113.7")]);
    assert!(page.contains("Your address is 203.0.113.7.") && page.contains("It is blocked until"), "{page}");
    let (untrusted_mw, untrusted) = start("", "");
    ban(&untrusted_mw, "203.0.113.7");
    let (_, page, _) = get(&format!("{untrusted}/"), &[("X-Forwarded-For", "203.0.113.7")]);
    assert!(page.contains("Your address is 127.0.0.1."), "an untrusted peer cannot claim another address: {page}");
}

#[test]
fn the_page_is_off_unless_configured() {
    let mw = Mailwarden::start();
    assert!(!mw.log().contains("self-service unblock page listening"));
}

#[test]
fn the_page_names_the_mail_app_and_a_saved_password_that_is_no_longer_valid() {
    let (mw, base) = start("", "");
    let report = |pwhash: &str, device: &str| {
        let body = format!(
            r#"{{"login":"alice@example.com","pwhash":"{pwhash}","remote":"127.0.0.1","protocol":"imap","device_id":"{device}","success":false,"policy_reject":false}}"#
        );
        assert_eq!(mw.policy("report", &body).0, 200);
    };
    let phone = r#"\"name\" \"iPhone Mail\" \"version\" \"17\""#;
    for _ in 0..3 {
        report("0000aaaa", phone);
    }
    for _ in 0..4 {
        report(&fresh_pwhash(), "");
    }
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(
        page.contains(
            "3 failed logins to a***e@example.com over IMAP (iPhone Mail 17): a saved password that is no longer valid"
        ),
        "{page}"
    );
    assert!(page.contains("4 failed logins to a***e@example.com over IMAP</li>"), "{page}");
}
