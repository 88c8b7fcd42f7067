//! The console's Email firewall, Blocked and trusted, and Block log screens, in a real headless
//! Chromium and over plain HTTP against the real binary (with the GeoIP fixtures for
//! countries): each change is checked through what `allow` answers next, and a `domain:`
//! token is kept to its own domain's mailboxes by every spelling of another's.

mod support;

use std::time::Duration;

use support::browser::{browser_available, click, click_to, fill, screenshot, text_of, wait_for_path, with_browser};
use support::console::{console_url, raw};
use support::geoip::write_fixtures;
use support::mailwarden::{ADMIN_TOKEN, Mailwarden, fresh_pwhash, login_body};

/// A server with the GeoIP fixtures (203.0.113.0/24 is France, 198.51.100.0/24 China).
fn with_geoip(extra_toml: &str) -> Mailwarden {
    let mut mw = Mailwarden::configure("");
    let dir = mw.dir.path().join("geoip");
    std::fs::create_dir_all(&dir).unwrap();
    let geoip = write_fixtures(&dir);
    let toml = format!("[geoip]\ncountry_db = {:?}\nasn_db = {:?}\n\n{extra_toml}", geoip.country, geoip.asn);
    mw.write_config("", &toml);
    mw.restart();
    mw
}

/// What `allow` answers for `login` from `remote`: (status, message).
fn allow(mw: &Mailwarden, remote: &str, login: &str) -> (i64, String) {
    let (code, body) = mw.policy("allow", &login_body(remote, login, &fresh_pwhash()));
    assert_eq!(code, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    (reply["status"].as_i64().unwrap_or_default(), reply["msg"].as_str().unwrap_or_default().to_string())
}

/// Signs in over plain HTTP; returns the session cookie.
fn sign_in(mw: &Mailwarden, token: &str) -> String {
    support::console::sign_in(mw, token).1.expect("a session cookie")
}

/// GETs a console path: (status, body).
fn get(mw: &Mailwarden, path: &str, cookie: &str) -> (u16, String) {
    let (status, _, body) = support::console::get(mw, path, cookie);
    (status, body)
}

/// The CSRF value a page's forms carry.
fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a form with the CSRF value") + 19;
    page[start..].split('"').next().unwrap_or_default().to_string()
}

/// Clicks `css` and waits until the page it leads to has loaded, also when it has the same
/// path as this one (a change that comes back to its screen, a filter): until this page's
/// root is gone and the new one is complete. `click_to` cannot tell the two pages apart.
async fn click_and_load(client: &fantoccini::Client, css: &str) {
    let old = client.find(fantoccini::Locator::Css("html")).await.expect("a page");
    click(client, css).await;
    // A Delete asks first (console.js, `data-confirm`): say yes. Other buttons ask nothing.
    let _ = client.accept_alert().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while old.text().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "clicking {css} loaded no page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_path(client, "").await;
}

fn post(mw: &Mailwarden, path: &str, cookie: &str, form: &[(&str, &str)]) -> u16 {
    raw()
        .post(&console_url(mw, path))
        .header("cookie", cookie)
        .send_form(form.iter().copied())
        .expect("the console answers")
        .status()
        .as_u16()
}

#[test]
fn moving_a_block_rule_above_an_allow_rule_in_the_console_refuses_the_next_login_by_rule_one() {
    if !browser_available() {
        return;
    }
    let mw = with_geoip("");
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        client.goto(&console_url(mw, "/firewall")).await.expect("open the console");
        wait_for_path(&client, "/console/sign-in").await;
        fill(&client, "#token", ADMIN_TOKEN).await;
        click_to(&client, "button[type=submit]", "/console/firewall").await;
        fill(&client, "#mailbox", "Alice@Example.com").await;
        click_to(&client, "form[action='/console/firewall'] button", "/console/firewall/alice@example.com").await;
        assert!(text_of(&client, "#applies").await.contains("No rules apply"));

        // Rule 1 allows the office network, rule 2 blocks France (where that network is).
        client.find(fantoccini::Locator::Css("#action option[value=allow]")).await.unwrap().click().await.unwrap();
        fill(&client, "#value", "203.0.113.0/24").await;
        click_and_load(&client, "#add-rule button").await;
        assert_eq!(text_of(&client, "p.flash.success").await, "The rule was added.");
        client.find(fantoccini::Locator::Css("#criterion option[value=country]")).await.unwrap().click().await.unwrap();
        fill(&client, "#value", "FR").await;
        click_and_load(&client, "#add-rule button").await;
        let rules = text_of(&client, "#rules tbody").await;
        assert!(rules.contains("1 allow network 203.0.113.0/24") && rules.contains("2 block country FR"), "{rules}");
        assert_eq!(allow(mw, "203.0.113.7", "alice@example.com").0, 0, "rule 1 allows the office first");

        click_and_load(&client, "button[aria-label='Move rule 2 up']").await;
        let rules = text_of(&client, "#rules tbody").await;
        assert!(rules.contains("1 block country FR"), "{rules}");
        assert_eq!(
            allow(mw, "203.0.113.7", "alice@example.com"),
            (-1, "Access denied by email firewall rule no. 1".to_string()),
            "the rule numbers moved with the rule"
        );

        fill(&client, "#ip", "203.0.113.7").await;
        click_and_load(&client, "#trial-form button").await;
        assert_eq!(text_of(&client, "#trial-verdict").await, "203.0.113.7: Blocked by rule no. 1.");
        assert_eq!(text_of(&client, "#trial-message").await, "Access denied by email firewall rule no. 1");
        let trial = text_of(&client, "#trial").await;
        assert!(trial.contains("country FR (France)") && trial.contains("Example Residential Broadband"), "{trial}");
        screenshot(&client, "console-firewall").await;

        click_and_load(&client, "button[aria-label='Delete rule 1']").await;
        assert_eq!(text_of(&client, "p.flash.success").await, "Rule no. 1 was deleted.");
        assert_eq!(allow(mw, "203.0.113.7", "alice@example.com").0, 0, "only the allow rule is left");
        assert_eq!(allow(mw, "198.51.100.7", "alice@example.com").0, 0, "no rule matches China; the default allows");

        client.find(fantoccini::Locator::Css("#default option[value=block]")).await.unwrap().click().await.unwrap();
        click_and_load(&client, "#default-action button").await;
        assert_eq!(text_of(&client, "p.flash.success").await, "The default is now block.");
        let (status, message) = allow(mw, "198.51.100.7", "alice@example.com");
        assert!(status == -1 && message.contains("email firewall"), "{status} {message}");

        click_to(&client, "a[href='/console/firewall']", "/console/firewall").await;
        let list = text_of(&client, "#mailboxes").await;
        assert!(list.contains("alice@example.com") && list.contains("block"), "{list}");
        click(&client, "a[aria-label='Configure the rules of alice@example.com']").await;
        wait_for_path(&client, "/console/firewall/alice@example.com").await;
    });
}

#[test]
fn a_domain_token_sees_and_changes_only_its_domains_mailboxes_by_any_spelling_of_another() {
    let mw = Mailwarden::start_with(
        "[mailboxes.\"carol@example.com\"]\ndefault = \"allow\"\nrules = [{ action = \"block\", network = \"198.51.100.0/24\" }]\n",
    );
    let rules = r#"{"default":"allow","rules":[{"action":"allow","network":"203.0.113.0/24"},{"action":"block","network":"203.0.113.7/32"}]}"#;
    for key in ["alice@example.com", "alice+news@example.com", "bob@other.com", "@other.com"] {
        let (status, body) = mw.admin_put(&format!("/api/v1/mailboxes/{key}/firewall"), rules);
        assert_eq!(status, 200, "{body}");
    }
    let customer = mw.create_token("customer", "domain:example.com");
    let cookie = sign_in(&mw, &customer);
    let (status, list) = get(&mw, "/firewall", &cookie);
    assert_eq!(status, 200);
    assert!(list.contains("alice@example.com") && !list.contains("other.com"), "{list}");
    for path in [
        "/firewall/bob@other.com",
        "/firewall/bob@OTHER.com",
        "/firewall/%40other.com",
        "/firewall/bob%40other.com",
        "/firewall/%20bob@other.com",
        "/firewall?mailbox=bob%40Other.com",
    ] {
        assert_eq!(get(&mw, path, &cookie).0, 403, "{path}");
    }
    assert!(list.contains("href=\"/console/firewall/alice+news@example.com\""), "{list}");
    let (status, tagged) = get(&mw, "/firewall/alice+news@example.com", &cookie);
    assert!(status == 200 && tagged.contains("Email firewall of alice+news@example.com"), "{tagged}");
    let (status, file) = get(&mw, "/firewall/Carol@Example.com", &cookie);
    assert_eq!(status, 200, "{file}");
    assert!(file.contains("These rules are set in policy.toml"), "{file}");
    assert!(file.contains("network 198.51.100.0/24") && !file.contains("Delete rule 1"), "shown, not editable: {file}");
    let (status, own) = get(&mw, "/firewall/alice@example.com", &cookie);
    assert_eq!(status, 200, "{own}");
    let csrf = csrf_of(&own);
    let moving = [("csrf", csrf.as_str()), ("direction", "up")];
    assert_eq!(post(&mw, "/firewall/bob@other.com/rules/2/move", &cookie, &moving), 403);
    assert_eq!(post(&mw, "/firewall/%40other.com/rules/2/delete", &cookie, &[("csrf", &csrf)]), 403);
    assert_eq!(allow(&mw, "203.0.113.7", "bob@other.com").0, 0, "bob's rule 1 still allows first");
    assert_eq!(post(&mw, "/firewall/alice@example.com/rules/2/move", &cookie, &[("direction", "up")]), 403, "no CSRF");
    assert_eq!(allow(&mw, "203.0.113.7", "alice@example.com").0, 0, "the forged move changed nothing");
    assert_eq!(post(&mw, "/firewall/alice@example.com/rules/2/move", &cookie, &moving), 303);
    assert_eq!(allow(&mw, "203.0.113.7", "alice@example.com").0, -1, "its own mailbox it can change");
    assert_eq!(get(&mw, "/lists", &cookie).0, 403, "the lists are the admin's");
}

#[test]
fn the_lists_screen_adds_many_lines_at_once_downloads_csv_and_keeps_the_policy_files_entries() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start_with("[networks]\nblocked = [\"192.0.2.0/24\"]\n");
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        client.goto(&console_url(mw, "/lists")).await.expect("open the console");
        wait_for_path(&client, "/console/sign-in").await;
        fill(&client, "#token", ADMIN_TOKEN).await;
        click_to(&client, "button[type=submit]", "/console/lists").await;
        fill(&client, "#lines", "203.0.113.8\n198.51.100.0/24\nnot-an-address\n2001:db8::1\n").await;
        fill(&client, "#comment", "office, \"attack\" of Monday").await;
        fill(&client, "#for", "7 days").await;
        click_and_load(&client, "#add-entries button").await;
        let message = text_of(&client, "p.flash").await;
        assert!(message.starts_with("3 added to the blocked list. Not added: line 3:"), "{message}");
        assert_eq!(allow(mw, "203.0.113.8", "alice@example.com").0, -1, "a pasted address is blocked at once");
        assert_eq!(allow(mw, "198.51.100.9", "alice@example.com").0, -1, "and a pasted network");
        let blocked = text_of(&client, "#blocked-entries").await;
        assert!(blocked.contains("office, \"attack\" of Monday") && blocked.contains("admin-token"), "{blocked}");
        assert!(blocked.contains("192.0.2.0/24") && blocked.contains("policy.toml"), "{blocked}");
        let delete_file_entry = "button[aria-label='Delete 192.0.2.0/24 from the blocked list']";
        assert!(client.find(fantoccini::Locator::Css(delete_file_entry)).await.is_err(), "no delete for the file's");
        screenshot(&client, "console-lists").await;

        fill(&client, "#q", "198.51").await;
        click_and_load(&client, "form[role=search] button").await;
        let found = text_of(&client, "#blocked-entries tbody").await;
        assert!(found.contains("198.51.100.0/24") && !found.contains("203.0.113.8"), "{found}");
        click_and_load(&client, "button[aria-label='Delete 198.51.100.0/24 from the blocked list']").await;
        assert_eq!(text_of(&client, "p.flash.success").await, "198.51.100.0/24 removed from the blocked list.");
        assert_eq!(allow(mw, "198.51.100.9", "alice@example.com").0, 0, "deleted: allowed again");
    });
    let cookie = sign_in(mw, ADMIN_TOKEN);
    let (status, csv) = get(mw, "/lists/blocked.csv", &cookie);
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "network,comment,expires_at,added_by,origin,mode,created_at");
    assert!(lines.iter().any(|l| l.starts_with("192.0.2.0/24,,,,policy_file,enforce,")), "{csv}");
    let pasted = lines.iter().find(|l| l.starts_with("203.0.113.8/32,")).expect("the pasted address");
    assert!(pasted.contains(",\"office, \"\"attack\"\" of Monday\",") && pasted.contains(",admin-token,api,"), "{csv}");
    assert!(csv.contains("2001:db8::1/128,"), "{csv}");
    let customer = mw.create_token("support-desk", "support");
    assert_eq!(get(mw, "/lists/blocked.csv", &sign_in(mw, &customer)).0, 403, "the same scope check as the screen");
}

#[test]
fn the_block_log_filters_by_address_and_message_text_and_pages_newest_first() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start_with("[networks]\nblocked = [\"203.0.113.0/24\"]\n");
    let (status, body) = mw.admin_put(
        "/api/v1/mailboxes/carol@example.com/firewall",
        r#"{"default":"allow","rules":[{"action":"block","network":"198.51.100.0/24"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    for n in 1..=55 {
        assert_eq!(allow(&mw, &format!("203.0.113.{n}"), "dave@example.com").0, -1);
    }
    for n in 1..=3 {
        assert_eq!(allow(&mw, &format!("198.51.100.{n}"), "carol@example.com").0, -1);
    }
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        client.goto(&console_url(mw, "/events")).await.expect("open the console");
        wait_for_path(&client, "/console/sign-in").await;
        fill(&client, "#token", ADMIN_TOKEN).await;
        click_to(&client, "button[type=submit]", "/console/events").await;
        assert_eq!(text_of(&client, "#event-count").await, "Events 1 to 50 of 58, newest first.");
        let first = text_of(&client, "#events tbody tr").await;
        assert!(first.contains("carol@example.com") && first.contains("198.51.100.3"), "newest first: {first}");
        screenshot(&client, "console-events").await;
        click_and_load(&client, "a[rel=next]").await;
        assert_eq!(text_of(&client, "#event-count").await, "Events 51 to 58 of 58, newest first.");
        assert!(text_of(&client, "#events").await.contains("203.0.113.1"), "the oldest on the last page");
        click_and_load(&client, "a[rel=prev]").await;
        assert_eq!(text_of(&client, "#event-count").await, "Events 1 to 50 of 58, newest first.");

        fill(&client, "#ip", "203.0.113.7").await;
        click_and_load(&client, "#filters button").await;
        assert_eq!(text_of(&client, "#event-count").await, "Events 1 to 1 of 1, newest first.");
        fill(&client, "#ip", "").await;
        fill(&client, "#text", "EMAIL FIREWALL rule").await;
        click_and_load(&client, "#filters button").await;
        assert_eq!(text_of(&client, "#event-count").await, "Events 1 to 3 of 3, newest first.");
        assert!(!text_of(&client, "#events").await.contains("dave@example.com"));
        fill(&client, "#until", "2026-01-01T00:00:00Z").await;
        click_and_load(&client, "#filters button").await;
        assert_eq!(text_of(&client, "#event-count").await, "No events match.", "all of them are later");
    });
    let (status, body) = mw.admin("GET", "/api/v1/events?text=email%20firewall&limit=2");
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((page["total"].as_u64(), page["events"].as_array().map(Vec::len)), (Some(3), Some(2)), "the API agrees");
    let (status, body) = mw.admin("GET", "/api/v1/events?until=1h");
    assert!(status == 200 && body.contains("\"total\":0"), "every event is newer than an hour ago: {body}");
    let customer = mw.create_token("customer", "domain:other.com");
    let (status, log) = get(mw, "/events", &sign_in(mw, &customer));
    assert!(status == 200 && log.contains("No events match."), "another domain's log is empty for it: {log}");
    assert_eq!(get(mw, "/events?login=carol%40example.com", &sign_in(mw, &customer)).0, 403);
}
