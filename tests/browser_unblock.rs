//! The self-service page in a real headless Chromium (Debian's chromium and chromedriver,
//! driven over WebDriver): a banned visitor sees the ban and its cause, clicks the button,
//! the page solves the proof-of-work in the browser and unblocks the address, and the next
//! login passes; the fourth unblock of the day is refused.

mod support;

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::Value;
use support::browser::{browser_available, screenshot, with_browser};
use support::mailwarden::{Mailwarden, free_port, fresh_pwhash, login_body, report_body};

fn ban(mw: &Mailwarden) {
    for _ in 0..5 {
        let body = report_body("127.0.0.1", "alice@example.com", &fresh_pwhash(), false);
        assert_eq!(mw.policy("report", &body).0, 200);
    }
}

fn allow_status(mw: &Mailwarden) -> i64 {
    let (_, body) = mw.policy("allow", &login_body("127.0.0.1", "alice@example.com", "0f96"));
    serde_json::from_str::<Value>(&body).unwrap()["status"].as_i64().unwrap()
}

#[test]
fn a_banned_visitor_unblocks_itself_in_a_real_browser_until_the_daily_limit() {
    if !browser_available() {
        return;
    }
    let mut mw = Mailwarden::configure("");
    let port = free_port();
    mw.write_config(
        &format!("public_listen = \"127.0.0.1:{port}\"\n"),
        "[self_service]\nprovider_name = \"Example Mail\"\nsupport_contact = \"help@example.com\"\ndifficulty = 20000\n",
    );
    mw.restart();
    let base = format!("http://127.0.0.1:{port}/");
    let dir = mw.dir.path().to_path_buf();
    let mw = &mw;
    with_browser(&dir, |client| async move {
        for round in 1..=3 {
            ban(&mw);
            assert_eq!(allow_status(&mw), -1);
            client.goto(&base).await.expect("open the page");
            let state = client.find(Locator::Id("state")).await.expect("the state line").text().await.unwrap();
            assert!(state.contains("It is blocked until"), "round {round}: {state}");
            let causes = client.find(Locator::Css("ul")).await.expect("the causes").text().await.unwrap();
            assert!(causes.contains("a***e@example.com over IMAP"), "round {round}: {causes}");
            if round == 1 {
                screenshot(&client, "self-service-banned").await;
            }
            let button = client.find(Locator::Css("#unblock button")).await.expect("the button");
            assert_eq!(button.text().await.unwrap(), "Unblock my address");
            button.click().await.expect("click");
            let status = client.find(Locator::Id("status")).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let text = status.text().await.unwrap();
                if text.contains("unblocked") {
                    assert_eq!(text, "Your address is unblocked. Your mail apps can log in again.");
                    break;
                }
                assert!(Instant::now() < deadline, "round {round}: the page did not finish: {text:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert_eq!(allow_status(&mw), 0, "round {round}: the next login passes");
        }

        ban(&mw);
        client.goto(&base).await.unwrap();
        let body = client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
        assert!(
            body.contains("This address was unblocked 3 times today already. Please contact help@example.com."),
            "{body}"
        );
        assert!(client.find(Locator::Css("#unblock button")).await.is_err(), "no button after the daily limit");
        screenshot(&client, "self-service-limit").await;
    });
    assert_eq!(allow_status(&mw), -1, "the fourth ban stays");
}
