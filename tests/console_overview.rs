//! The console's overview and login-history screens in a real headless Chromium against the
//! real binary, after real allow/report traffic; their API routes (`/api/v1/activity`,
//! `/api/v1/logins/{login}/history`) and the scopes over plain HTTP.

mod support;

use support::browser::{browser_available, click_to, fill, screenshot, text_of, wait_for_path, with_browser};
use support::console::{console_url, get, sign_in};
use support::mailwarden::{ADMIN_TOKEN, Mailwarden, fresh_pwhash, login_body, report_body};

/// The `status` of an `allow` answer (0 allowed, -1 refused).
fn allow(mw: &Mailwarden, remote: &str, login: &str, pwhash: &str) -> i64 {
    let (code, body) = mw.policy("allow", &login_body(remote, login, pwhash));
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
    answer["status"].as_i64().expect("a status")
}

fn report(mw: &Mailwarden, body: &str) {
    let (code, answer) = mw.policy("report", body);
    assert_eq!(code, 200, "{answer}");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Three logins allowed, a firewall refusal, a ban (and a refusal by it), and a stale device
/// quarantined (and a refusal by its quarantine).
fn traffic(mw: &Mailwarden) {
    for _ in 0..3 {
        assert_eq!(allow(mw, "203.0.113.7", "alice@example.com", "good"), 0);
    }
    let (status, body) =
        mw.admin_put("/api/v1/mailboxes/carol@example.com/firewall", r#"{"default":"block","rules":[]}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(allow(mw, "203.0.113.8", "carol@example.com", "any"), -1, "the firewall refuses carol");
    let mut reports = mw.reports_answered();
    for n in 0..5 {
        report(mw, &report_body("198.51.100.9", &format!("guess{n}@example.com"), &fresh_pwhash(), false));
        reports += 1;
    }
    for _ in 0..3 {
        report(mw, &report_body("192.0.2.5", "bob@example.com", "old-password", false));
        reports += 1;
    }
    mw.wait_for_reports(reports);
    assert_eq!(allow(mw, "198.51.100.9", "dave@example.com", "x"), -1, "the ban refuses");
    assert_eq!(allow(mw, "192.0.2.5", "bob@example.com", "old-password"), -1, "the quarantine refuses");
}

#[test]
fn after_real_traffic_the_overview_shows_the_logins_refusals_bans_and_the_quarantine() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start();
    traffic(&mw);
    let (status, body) = mw.admin("GET", "/api/v1/activity");
    assert_eq!(status, 200, "{body}");
    let activity = json(&body);
    assert_eq!(activity["hour_total"]["logins"], 3, "{body}");
    assert_eq!(activity["hour_total"]["refusals"]["firewall_default"], 1);
    assert_eq!(activity["hour_total"]["refusals"]["ban"], 1);
    assert_eq!(activity["hour_total"]["refusals"]["stale_password"], 1);
    assert_eq!(activity["day_total"]["bans"]["source"], 1);
    assert_eq!(activity["last_hour"].as_array().map(Vec::len), Some(60));
    assert_eq!(activity["last_day"].as_array().map(Vec::len), Some(24));
    assert_eq!(activity["last_hour"][59]["logins"], 3, "counted in the current minute");

    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        client.goto(&console_url(mw, "/")).await.expect("open the console");
        wait_for_path(&client, "/console/sign-in").await;
        fill(&client, "#token", ADMIN_TOKEN).await;
        click_to(&client, "button[type=submit]", "/console/").await;
        assert_eq!(text_of(&client, "#active-bans").await, "1");
        assert_eq!(text_of(&client, "#logins-last-hour").await, "3");
        assert_eq!(text_of(&client, "#refusals-last-hour").await, "3");
        assert_eq!(text_of(&client, "#bans-last-day").await, "1");
        assert_eq!(text_of(&client, "#quarantines").await, "1");
        let quarantined = text_of(&client, "#quarantine-list").await;
        assert!(quarantined.contains("bob@example.com") && quarantined.contains("192.0.2.5"), "{quarantined}");
        let reasons = text_of(&client, "#refusals-by-reason").await;
        assert!(reasons.contains("firewall default 1 1") && reasons.contains("stale password 1 1"), "{reasons:?}");
        // The charts' text alternative says the numbers.
        let label = client
            .find(fantoccini::Locator::Css("#chart-hour-logins"))
            .await
            .expect("the chart")
            .attr("aria-label")
            .await
            .expect("its label");
        assert_eq!(
            label.as_deref(),
            Some("Logins allowed per minute over the last hour: 3 in all, at most 3 in one minute")
        );
        screenshot(&client, "console-overview").await;
    });
}

fn success_from_thunderbird(remote: &str, login: &str) -> String {
    format!(
        r#"{{"device_id":"\"name\" \"Thunderbird\" \"version\" \"128.0\"","login":"{login}","protocol":"imap","pwhash":"right","remote":"{remote}","session_id":"t3st","success":true,"policy_reject":false,"tls":true}}"#
    )
}

/// A success from Thunderbird at 203.0.113.7, a wrong password from 198.51.100.20, and a
/// firewall refusal from 192.0.2.9.
fn alices_history(mw: &Mailwarden) {
    let before = mw.reports_answered();
    report(mw, &success_from_thunderbird("203.0.113.7", "Alice@Example.com"));
    report(mw, &report_body("198.51.100.20", "alice@example.com", "typo", false));
    mw.wait_for_reports(before + 2);
    let rules = r#"{"default":"block","rules":[{"action":"allow","network":"203.0.113.0/24"}]}"#;
    let (status, body) = mw.admin_put("/api/v1/mailboxes/alice@example.com/firewall", rules);
    assert_eq!(status, 200, "{body}");
    assert_eq!(allow(mw, "192.0.2.9", "alice@example.com", "right"), -1);
}

#[test]
fn the_login_history_shows_where_a_mailbox_logged_in_from_with_its_mail_app_and_its_failures() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start();
    alices_history(&mw);
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        client.goto(&console_url(mw, "/logins")).await.expect("open the console");
        wait_for_path(&client, "/console/sign-in").await;
        fill(&client, "#token", ADMIN_TOKEN).await;
        click_to(&client, "button[type=submit]", "/console/logins").await;
        fill(&client, "#login", "ALICE@example.com").await;
        click_to(&client, "form.row button[type=submit]", "/console/logins").await;
        let places = text_of(&client, "#places").await;
        for shown in ["203.0.113.7", "Thunderbird 128.0", "imap"] {
            assert!(places.contains(shown), "{shown} in {places:?}");
        }
        let failures = text_of(&client, "#failures").await;
        assert!(failures.contains("198.51.100.20") && failures.contains("counts toward a ban"), "{failures:?}");
        let refusals = text_of(&client, "#refusals").await;
        assert!(refusals.contains("firewall default") && refusals.contains("192.0.2.9"), "{refusals:?}");
        screenshot(&client, "console-logins").await;
    });
}

fn console_status(mw: &Mailwarden, token: &str, path: &str) -> u16 {
    let cookie = sign_in(mw, token).1.expect("a session");
    get(mw, path, &cookie).0
}

#[test]
fn a_domain_token_sees_only_its_own_domains_login_history_in_the_api_and_the_console() {
    let mw = Mailwarden::start();
    alices_history(&mw);
    let own = mw.create_token("example-com", "domain:example.com");
    let other = mw.create_token("example-org", "domain:example.org");
    let desk = mw.create_token("desk", "support");

    let (status, body) = mw.admin_as(&own, "GET", "/api/v1/logins/Alice@Example.com/history", None);
    assert_eq!(status, 200, "{body}");
    let history = json(&body);
    assert_eq!(history["login"], "alice@example.com");
    assert_eq!(history["places"][0]["source"], "203.0.113.7");
    assert_eq!(history["places"][0]["app"], "Thunderbird 128.0");
    assert_eq!(history["places"][0]["protocol"], "imap");
    assert_eq!(history["failures"][0]["source"], "198.51.100.20");
    assert_eq!(history["refusals"][0]["reason"], "firewall_default");
    assert_eq!(mw.admin_as(&other, "GET", "/api/v1/logins/alice@example.com/history", None).0, 403);
    assert_eq!(mw.admin_as(&desk, "GET", "/api/v1/logins/alice@example.com/history", None).0, 200);
    assert_eq!(mw.admin_as(&other, "GET", "/api/v1/activity", None).0, 403, "the activity is the support desk's");
    assert_eq!(mw.admin_as(&desk, "GET", "/api/v1/activity", None).0, 200);

    assert_eq!(console_status(&mw, &own, "/logins?login=alice%40example.com"), 200);
    assert_eq!(console_status(&mw, &other, "/logins?login=alice%40example.com"), 403);
    assert_eq!(console_status(&mw, &other, "/logins?login=ALICE%40EXAMPLE.COM"), 403, "in any spelling");
    assert_eq!(console_status(&mw, &other, "/logins"), 200, "its own form");
}

#[test]
fn a_success_without_an_imap_id_is_a_place_without_an_app() {
    let mw = Mailwarden::start();
    let before = mw.reports_answered();
    report(&mw, &report_body("203.0.113.7", "erin@example.com", "right", true));
    mw.wait_for_reports(before + 1);
    let (status, body) = mw.admin("GET", "/api/v1/logins/erin@example.com/history");
    assert_eq!(status, 200, "{body}");
    let history = json(&body);
    assert_eq!(history["places"][0]["device_id"], "", "{body}");
    assert!(history["places"][0].get("app").is_none(), "{body}");
}
