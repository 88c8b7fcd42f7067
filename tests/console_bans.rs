//! The console's Bans and Look-up screens in a real headless Chromium against the real
//! binary, bans placed by real `report`s and each change checked through the policy protocol
//! and the API; and lengthening a ban through the API and the CLI (scopes, bad bodies, a
//! restart), which the Bans screen's Lengthen button calls too.

mod support;

use serde_json::Value;
use support::browser::{browser_available, click, click_to, fill, screenshot, text_of, wait_for_path, with_browser};
use support::console::{console_url, get, raw, sign_in};
use support::mailwarden::{ADMIN_TOKEN, Mailwarden, fresh_pwhash, login_body, report_body};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Five distinct wrong passwords from `remote`: a ban of the source.
fn ban(mw: &Mailwarden, remote: &str, login: &str) {
    for _ in 0..5 {
        assert_eq!(mw.policy("report", &report_body(remote, login, &fresh_pwhash(), false)).0, 200);
    }
}

/// What `allow` answers `login` from `remote` with this password hash.
fn allow_status(mw: &Mailwarden, remote: &str, login: &str, pwhash: &str) -> i64 {
    let (status, body) = mw.policy("allow", &login_body(remote, login, pwhash));
    assert_eq!(status, 200, "{body}");
    json(&body)["status"].as_i64().unwrap()
}

fn expires_at(mw: &Mailwarden, addr: &str) -> String {
    let (status, body) = mw.admin("GET", &format!("/api/v1/bans/{addr}"));
    assert_eq!(status, 200, "{body}");
    json(&body)["expires_at"].as_str().unwrap().to_string()
}

fn seconds(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Signs in over plain HTTP; the session cookie.
fn session(mw: &Mailwarden, token: &str) -> String {
    let (status, cookie) = sign_in(mw, token);
    assert_eq!(status, 303);
    cookie.expect("a session cookie")
}

#[test]
fn lengthening_a_ban_through_the_api_keeps_it_past_its_old_end_across_a_restart_and_is_audited() {
    let mut mw = Mailwarden::start();
    ban(&mw, "203.0.113.7", "alice@example.com");
    let before = seconds(&expires_at(&mw, "203.0.113.7"));
    let desk = mw.create_token("desk", "support");
    let (status, body) = mw.admin_as(&desk, "POST", "/api/v1/bans/203.0.113.7/lengthen", Some(r#"{"by":"2h"}"#));
    assert_eq!(status, 200, "{body}");
    let lengthened = seconds(json(&body)["lengthened"]["expires_at"].as_str().unwrap());
    assert_eq!(lengthened - before, 7200, "two hours later than before");

    let customer = mw.create_token("customer", "domain:example.com");
    let (status, _) = mw.admin_as(&customer, "POST", "/api/v1/bans/203.0.113.7/lengthen", Some(r#"{"by":"2h"}"#));
    assert_eq!(status, 403, "a domain: token does not reach bans");

    let past = "2000-01-01T00:00:00Z";
    for (body, field) in [
        (r#"{"by":"soon"}"#.to_string(), "by"),
        (r#"{"by":"40days"}"#.to_string(), "by"),
        (format!(r#"{{"until":"{past}"}}"#), "until"),
        (r#"{"until":"tomorrow"}"#.to_string(), "until"),
        ("{}".to_string(), "by"),
    ] {
        let (status, answer) = mw.admin_post("/api/v1/bans/203.0.113.7/lengthen", Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(json(&answer)["field"], field, "{body}: {answer}");
    }
    assert_eq!(mw.admin_post("/api/v1/bans/198.51.100.1/lengthen", Some(r#"{"by":"1h"}"#)).0, 404);
    assert_eq!(seconds(&expires_at(&mw, "203.0.113.7")), lengthened, "no refused body changed it");

    let cli = mw.cli(&["ban", "lengthen", "203.0.113.7", "--by", "1h"]);
    assert_eq!(cli.status.code(), Some(0), "{}", String::from_utf8_lossy(&cli.stderr));
    assert!(String::from_utf8_lossy(&cli.stdout).contains("The ban on 203.0.113.7 now ends at"));
    mw.restart();
    assert_eq!(seconds(&expires_at(&mw, "203.0.113.7")), lengthened + 3600, "the store kept the new end");
    let trail = json(&mw.admin("GET", "/api/v1/audit?action=ban_lengthened").1);
    let actors: Vec<&str> = trail["records"].as_array().unwrap().iter().map(|r| r["actor"].as_str().unwrap()).collect();
    assert_eq!(actors, ["admin-token", "desk"], "newest first, each with its token");
}

#[test]
fn a_support_token_opens_bans_and_look_up_a_domain_token_is_refused_and_a_forged_lift_changes_nothing() {
    let mw = Mailwarden::start();
    ban(&mw, "203.0.113.9", "alice@example.com");
    let desk = session(&mw, &mw.create_token("desk", "support"));
    let (status, _, body) = get(&mw, "/bans", &desk);
    assert_eq!(status, 200);
    assert!(body.contains("203.0.113.9"), "{body}");
    assert_eq!(get(&mw, "/lookup?ip=203.0.113.9", &desk).0, 200);
    let customer = session(&mw, &mw.create_token("customer", "domain:example.com"));
    for path in ["/bans", "/lookup?ip=203.0.113.9"] {
        assert_eq!(get(&mw, path, &customer).0, 403, "{path}");
    }
    let forged = raw()
        .post(&console_url(&mw, "/bans/lift"))
        .header("cookie", &desk)
        .send_form([("addr", "203.0.113.9")])
        .expect("the console answers");
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(allow_status(&mw, "203.0.113.9", "alice@example.com", "0f96"), -1, "still banned");
    let (status, _, body) = get(&mw, "/lookup?ip=not-an-address", &desk);
    assert_eq!(status, 200, "a bad address is a message on the page");
    assert!(body.contains("That is not an address"), "{body}");
}

#[test]
fn on_the_bans_screen_one_sees_each_bans_cause_lengthens_it_and_lifts_one_or_several() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start();
    ban(&mw, "203.0.113.7", "alice@example.com");
    // Each in another /24: three of one /24 would ban it whole.
    ban(&mw, "198.51.100.8", "bob@example.com");
    ban(&mw, "192.0.2.9", "carol@example.com");
    let old_end = seconds(&expires_at(&mw, "203.0.113.7"));
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        client.goto(&console_url(mw, "/bans")).await.expect("open the console");
        wait_for_path(&client, "/console/sign-in").await;
        fill(&client, "#token", ADMIN_TOKEN).await;
        click_to(&client, "button[type=submit]", "/console/bans").await;
        assert_eq!(text_of(&client, "#ban-count").await, "3 active bans");
        let table = text_of(&client, "#bans table").await;
        for shown in ["203.0.113.7", "198.51.100.8", "alice@example.com over imap", "wrong passwords, 5 counted"] {
            assert!(table.contains(shown), "{shown} in {table}");
        }
        screenshot(&client, "console-bans").await;

        fill(&client, "#q", "bob@").await;
        click_to(&client, "form[role=search] button", "/console/bans").await;
        assert_eq!(text_of(&client, "#ban-count").await, "1 of 3 active bans match bob@");
        client.goto(&console_url(mw, "/bans")).await.unwrap();
        wait_for_path(&client, "/console/bans").await;

        click(&client, "input[aria-label='Select the ban on 203.0.113.7']").await;
        fill(&client, "#by-text", "2h").await;
        click_to(&client, "#lengthen-selected", "/console/bans").await;
        let message = text_of(&client, "p.flash.success").await;
        assert!(message.starts_with("Lengthened 1 ban: 203.0.113.7 (now until"), "{message}");
        assert_eq!(seconds(&expires_at(mw, "203.0.113.7")) - old_end, 7200, "the API shows the new end");
        let row = text_of(&client, "#bans tbody tr:last-child").await;
        assert!(row.contains("203.0.113.7") && row.contains("in 2h 30m"), "the latest ending last: {row}");

        click_to(&client, "button[aria-label='Lift the ban on 203.0.113.7']", "/console/bans").await;
        assert_eq!(text_of(&client, "p.flash.success").await, "Lifted 1 ban: 203.0.113.7.");
        assert_eq!(allow_status(mw, "203.0.113.7", "alice@example.com", "0f96"), 0, "the next allow passes");
        assert_eq!(allow_status(mw, "198.51.100.8", "bob@example.com", "0f96"), -1, "the others stay");

        click(&client, "#select-all").await;
        click_to(&client, "#lift-selected", "/console/bans").await;
        assert_eq!(text_of(&client, "p.flash.success").await, "Lifted 2 bans: 198.51.100.8, 192.0.2.9.");
        assert_eq!(allow_status(mw, "198.51.100.8", "bob@example.com", "0f96"), 0);
        assert_eq!(allow_status(mw, "192.0.2.9", "carol@example.com", "0f96"), 0);
        assert_eq!(text_of(&client, "#ban-count").await, "0 active bans");
    });
}

#[test]
fn look_up_explains_a_ban_lifts_and_trusts_it_and_ends_a_stale_passwords_quarantine() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start();
    ban(&mw, "198.51.100.7", "alice@example.com");
    // A forgotten laptop repeating bob's old password from the office: quarantined there.
    for _ in 0..3 {
        assert_eq!(mw.policy("report", &report_body("192.0.2.50", "bob@example.com", "0badc0de", false)).0, 200);
    }
    assert_eq!(allow_status(&mw, "192.0.2.50", "bob@example.com", "0badc0de"), -1, "the old password is refused");
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        client.goto(&console_url(mw, "/lookup?ip=198.51.100.7")).await.expect("open the console");
        wait_for_path(&client, "/console/sign-in").await;
        fill(&client, "#token", ADMIN_TOKEN).await;
        let url = click_to(&client, "button[type=submit]", "/console/lookup").await;
        assert_eq!(url.query(), Some("ip=198.51.100.7"), "a URL to paste");
        let decision = text_of(&client, "#decision").await;
        assert!(decision.starts_with("refused: 198.51.100.7 is banned until"), "{decision}");
        let explanation = text_of(&client, "#explanation").await;
        assert!(
            explanation.contains("led to the ban: a wrong password for alice@example.com over imap"),
            "{explanation}"
        );
        assert!(text_of(&client, "#next-ban").await.contains("is banned at 5 distinct wrong passwords"));
        screenshot(&client, "console-lookup").await;

        fill(&client, "input[name=comment]", "the customer's office").await;
        click_to(&client, "button.lift-and-trust", "/console/lookup").await;
        assert_eq!(
            text_of(&client, "p.flash.success").await,
            "Lifted the ban on 198.51.100.7; 198.51.100.7/32 is trusted now."
        );
        assert!(text_of(&client, "#decision").await.starts_with("allowed: 198.51.100.7 is trusted"));
        assert_eq!(allow_status(mw, "198.51.100.7", "alice@example.com", "0f96"), 0, "the next allow passes");
        let trusted = mw.admin("GET", "/api/v1/trusted").1;
        assert!(trusted.contains("198.51.100.7/32") && trusted.contains("the customer's office"), "{trusted}");

        fill(&client, "#ip", "192.0.2.50").await;
        fill(&client, "#login", "bob@example.com").await;
        click_to(&client, "form[role=search] button", "/console/lookup").await;
        click_to(&client, "button.end-quarantine", "/console/lookup").await;
        let message = text_of(&client, "p.flash.success").await;
        assert!(message.contains("quarantine there ended"), "{message}");
        assert_eq!(allow_status(mw, "192.0.2.50", "bob@example.com", "0badc0de"), 0, "the laptop may try again");
    });
}

/// The session's CSRF value, from a page's forms.
fn csrf_of(page: &str) -> String {
    let start =
        page.find(r#"name="csrf" value=""#).expect("a form with the CSRF value") + r#"name="csrf" value=""#.len();
    page[start..].split('"').next().unwrap_or_default().to_string()
}

#[test]
fn the_bans_screen_shows_a_hundred_a_page_and_refuses_to_lift_more_than_a_thousand_at_once() {
    let mw = Mailwarden::start();
    // Each in its own /24, so that no subnet is banned whole.
    for n in 0..101 {
        ban(&mw, &format!("198.18.{n}.1"), "alice@example.com");
    }
    let cookie = session(&mw, ADMIN_TOKEN);
    let (_, _, first) = get(&mw, "/bans", &cookie);
    assert_eq!(first.matches(r#"name="addr""#).count(), 100);
    assert!(first.contains("Page 1 of 2"), "{first}");
    let (_, _, second) = get(&mw, "/bans?q=&page=2", &cookie);
    assert_eq!(second.matches(r#"name="addr""#).count(), 1);
    let (status, _, odd) = get(&mw, "/bans?page=-1x", &cookie);
    assert_eq!((status, odd.contains("Page 1 of 2")), (200, true), "a page number that is none shows the first");

    let csrf = csrf_of(&first);
    let mut form: Vec<(&str, String)> = vec![("csrf", csrf)];
    form.extend((0..1001).map(|n| ("addr", format!("198.18.{}.1", n % 101))));
    let response = raw()
        .post(&console_url(&mw, "/bans/lift"))
        .header("cookie", &cookie)
        .send_form(form.iter().map(|(k, v)| (*k, v.as_str())))
        .expect("the console answers");
    assert_eq!(response.status().as_u16(), 303);
    let (_, _, after) = get(&mw, "/bans", &cookie);
    assert!(after.contains("At most 1000 bans at once; 1001 were ticked."), "{after}");
    assert!(after.contains("101 active bans"), "nothing was lifted");
}

#[test]
fn look_up_lifts_one_logins_refusal_from_an_office_and_its_colleagues_were_never_refused() {
    let mw = Mailwarden::start();
    let office = "198.51.100.60";
    for n in 0..3 {
        let colleague = format!("colleague{n}@example.com");
        assert_eq!(mw.policy("report", &report_body(office, &colleague, "00900d", true)).0, 200);
    }
    ban(&mw, office, "alice@example.com");
    assert_eq!(allow_status(&mw, office, "alice@example.com", "0f96"), -1, "alice alone is refused");
    assert_eq!(allow_status(&mw, office, "colleague1@example.com", "00900d"), 0);
    let cookie = session(&mw, ADMIN_TOKEN);
    let (status, _, page) = get(&mw, &format!("/lookup?ip={office}&login=alice@example.com"), &cookie);
    assert_eq!(status, 200);
    assert!(page.contains("Logins refused from here"), "{page}");
    assert!(page.contains("Lift the ban on alice@example.com from 198.51.100.60"), "{page}");
    let response = raw()
        .post(&console_url(&mw, "/lookup/lift"))
        .header("cookie", &cookie)
        .send_form([
            ("csrf", csrf_of(&page).as_str()),
            ("addr", "198.51.100.60 alice@example.com"),
            ("ip", office),
            ("login", "alice@example.com"),
        ])
        .expect("the console answers");
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(
        response.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/console/lookup?ip=198.51.100.60&login=alice%40example.com"),
        "back to the same look-up"
    );
    assert_eq!(allow_status(&mw, office, "alice@example.com", "0f96"), 0, "alice may log in again");
    let (_, _, after) = get(&mw, "/lookup?ip=198.51.100.60&login=alice@example.com", &cookie);
    assert!(after.contains("Lifted the ban on alice@example.com from 198.51.100.60."), "{after}");
}
