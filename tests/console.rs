//! The console's access in a real headless Chromium and over plain HTTP against the real
//! binary: signing in (a wrong token refused and counted, a metrics token refused), the
//! screens a scope reaches, signing out, a change without the session's CSRF value refused,
//! and a session that ends when idle.

mod support;

use std::time::Duration;

use support::browser::{
    browser_available, click_to, fill, screenshot, text_of, wait_for_path, with_browser, with_browser_as,
};
use support::console::{console_url, get, raw, sign_in};
use support::mailwarden::{ADMIN_TOKEN, Mailwarden, fresh_pwhash, report_body};

#[test]
fn a_session_cookie_is_http_only_strict_and_scoped_to_the_console() {
    let mw = Mailwarden::start();
    let response = raw()
        .post(&console_url(&mw, "/sign-in"))
        .send_form([("token", ADMIN_TOKEN), ("next", "/console/bans")])
        .expect("the sign-in answers");
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers().get("location").unwrap(), "/console/bans", "back to the page asked for");
    let cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP without console.secure_cookie: {cookie}");
    let csp = response.headers().get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
}

#[test]
fn a_sign_in_link_cannot_send_anyone_away_from_the_console() {
    let mw = Mailwarden::start();
    for next in ["https://evil.example/", "//evil.example/console/", "/console/\\evil", "/api/v1/bans"] {
        let response = raw()
            .post(&console_url(&mw, "/sign-in"))
            .send_form([("token", ADMIN_TOKEN), ("next", next)])
            .expect("the sign-in answers");
        assert_eq!(response.headers().get("location").unwrap(), "/console/", "{next}");
    }
}

#[test]
fn a_change_without_the_sessions_csrf_value_is_refused_and_changes_nothing() {
    let mw = Mailwarden::start();
    let (status, cookie) = sign_in(&mw, ADMIN_TOKEN);
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");
    for form in [vec![], vec![("csrf", "0000")]] {
        let response = raw()
            .post(&console_url(&mw, "/sign-out"))
            .header("cookie", &cookie)
            .send_form(form.clone())
            .expect("the console answers");
        assert_eq!(response.status().as_u16(), 403, "{form:?}");
    }
    let (status, _, body) = get(&mw, "/", &cookie);
    assert_eq!(status, 200, "still signed in: the forged sign-out did nothing");
    assert!(body.contains("Sign out"), "{body}");
}

/// Signs in through a proxy on 127.0.0.1 that says the visitor is `visitor`.
fn sign_in_via(mw: &Mailwarden, token: &str, visitor: &str) -> u16 {
    raw()
        .post(&console_url(mw, "/sign-in"))
        .header("x-forwarded-for", visitor)
        .send_form([("token", token), ("next", "/console/")])
        .expect("the sign-in answers")
        .status()
        .as_u16()
}

#[test]
fn wrong_tokens_are_refused_counted_and_rate_limited_per_visitor_and_a_metrics_token_cannot_sign_in() {
    let mut mw = Mailwarden::configure("");
    mw.write_config("trusted_proxies = [\"127.0.0.1/32\"]\n", "");
    mw.restart();
    let metrics = mw.create_token("prometheus", "metrics");
    assert_eq!(sign_in_via(&mw, &metrics, "198.51.100.7"), 401);
    for _ in 0..10 {
        assert_eq!(sign_in_via(&mw, "mwt_wrong", "198.51.100.7"), 401);
    }
    assert_eq!(sign_in_via(&mw, ADMIN_TOKEN, "198.51.100.7"), 429, "the visitor used up its tries for the minute");
    assert_eq!(sign_in_via(&mw, ADMIN_TOKEN, "198.51.100.8"), 303, "another visitor behind the same proxy is not");
    let (_, exposition) = mw.admin("GET", "/metrics");
    for line in [
        "mailwarden_console_sign_ins_total{result=\"wrong\"} 10",
        "mailwarden_console_sign_ins_total{result=\"metrics_scope\"} 1",
        "mailwarden_console_sign_ins_total{result=\"rate_limited\"} 1",
        "mailwarden_console_sign_ins_total{result=\"ok\"} 1",
    ] {
        assert!(exposition.contains(line), "{line} in\n{exposition}");
    }
    assert!(!exposition.contains("mwt_wrong") && !mw.log().contains("mwt_wrong"), "no token in metrics or the log");
}

#[test]
fn a_forwarding_header_from_a_peer_that_is_no_trusted_proxy_does_not_escape_the_limit() {
    let mw = Mailwarden::start();
    for n in 0..10 {
        assert_eq!(sign_in_via(&mw, "mwt_wrong", &format!("198.51.100.{n}")), 401);
    }
    assert_eq!(sign_in_via(&mw, ADMIN_TOKEN, "198.51.100.99"), 429, "counted for the peer, whatever it claims");
}

#[test]
fn revoking_a_token_ends_its_console_sessions_at_once() {
    let mw = Mailwarden::start();
    let desk = mw.create_token("desk", "support");
    let cookie = sign_in(&mw, &desk).1.expect("a session");
    assert_eq!(get(&mw, "/", &cookie).0, 200);
    assert_eq!(mw.cli(&["token", "revoke", "desk"]).status.code(), Some(0));
    let (status, location, _) = get(&mw, "/", &cookie);
    assert_eq!((status, location.as_str()), (303, "/console/sign-in?next=%2Fconsole%2F"));
}

#[test]
fn in_a_real_browser_one_signs_in_signs_out_is_kept_to_the_scope_and_is_signed_out_when_idle() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start_with("[console]\nidle_timeout = \"10s\"\n");
    let customer = mw.create_token("customer", "domain:example.com");
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        client.goto(&console_url(mw, "/")).await.expect("open the console");
        wait_for_path(&client, "/console/sign-in").await;
        screenshot(&client, "console-sign-in").await;
        fill(&client, "#token", "mwt_not-a-token").await;
        click_to(&client, "button[type=submit]", "/console/sign-in").await;
        assert_eq!(text_of(&client, "p.flash.failure").await, "that token is not in force (wrong, revoked or expired)");

        fill(&client, "#token", ADMIN_TOKEN).await;
        click_to(&client, "button[type=submit]", "/console/").await;
        assert_eq!(text_of(&client, "h1").await, "Overview");
        let nav = text_of(&client, "nav").await;
        for screen in ["Overview", "Look-up", "Bans", "Blocked and trusted", "Email firewall", "Block log"] {
            assert!(nav.contains(screen), "the admin sees {screen}: {nav}");
        }
        assert!(text_of(&client, ".who").await.contains("admin-token (admin)"));
        click_to(&client, ".sign-out button", "/console/sign-in").await;
        client.goto(&console_url(mw, "/")).await.unwrap();
        wait_for_path(&client, "/console/sign-in").await;

        fill(&client, "#token", &customer).await;
        click_to(&client, "button[type=submit]", "/console/firewall").await;

        tokio::time::sleep(Duration::from_secs(11)).await;
        client.goto(&console_url(mw, "/?from=bookmark")).await.unwrap();
        let url = wait_for_path(&client, "/console/sign-in").await;
        assert_eq!(url.query(), Some("next=%2Fconsole%2F%3Ffrom%3Dbookmark"), "and back to the page after signing in");
    });
}

/// Every screen, with something on it.
const SCREENS: [&str; 8] = [
    "/",
    "/lookup?ip=203.0.113.7",
    "/bans",
    "/lists",
    "/firewall",
    "/firewall/alice@example.com",
    "/events",
    "/logins?login=alice%40example.com",
];

/// A ban, a mailbox's rules and a blocked network, so each screen has rows to lay out.
fn give_every_screen_data(mw: &Mailwarden) {
    for _ in 0..5 {
        let body = report_body("203.0.113.7", "alice@example.com", &fresh_pwhash(), false);
        assert_eq!(mw.policy("report", &body).0, 200);
    }
    let rules = r#"{"default":"block","rules":[{"action":"allow","network":"198.51.100.0/24"},{"action":"block","network":"203.0.113.0/24"}]}"#;
    assert_eq!(mw.admin_put("/api/v1/mailboxes/alice@example.com/firewall", rules).0, 200);
    let block = r#"{"network":"192.0.2.0/24","comment":"a scanner seen in every log","for":"7d"}"#;
    assert_eq!(mw.admin_post("/api/v1/blocks", Some(block)).0, 201);
}

async fn sign_in_as_admin(client: &fantoccini::Client, mw: &Mailwarden) {
    client.goto(&console_url(mw, "/sign-in")).await.expect("open the sign-in");
    fill(client, "#token", ADMIN_TOKEN).await;
    click_to(client, "button[type=submit]", "/console/").await;
}

#[test]
fn on_a_phone_no_screen_is_wider_than_the_phone() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start();
    give_every_screen_data(&mw);
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser_as(&dir, 390, 844, &[], |client| async move {
        sign_in_as_admin(&client, mw).await;
        for path in SCREENS {
            client.goto(&console_url(mw, path)).await.expect("open the screen");
            let widths = client
                .execute("return [document.documentElement.scrollWidth, window.innerWidth]", vec![])
                .await
                .expect("the page's widths");
            let (page, window) = (widths[0].as_u64().unwrap_or(u64::MAX), widths[1].as_u64().unwrap_or(0));
            assert!(page <= window, "{path} is {page} px wide in a {window} px window");
        }
        client.goto(&console_url(mw, "/bans")).await.unwrap();
        screenshot(&client, "console-phone-bans").await;
    });
}

#[test]
fn with_a_dark_system_setting_the_console_is_dark() {
    if !browser_available() {
        return;
    }
    let mw = Mailwarden::start();
    give_every_screen_data(&mw);
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser_as(&dir, 1200, 900, &["--blink-settings=preferredColorScheme=0"], |client| async move {
        sign_in_as_admin(&client, mw).await;
        client.goto(&console_url(mw, "/firewall/alice@example.com")).await.unwrap();
        let background = client
            .execute("return getComputedStyle(document.body).backgroundColor", vec![])
            .await
            .expect("the background");
        assert_eq!(background.as_str(), Some("rgb(13, 17, 23)"), "the dark palette's background");
        screenshot(&client, "console-dark-firewall").await;
    });
}
