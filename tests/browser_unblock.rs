//! The self-service page in a real headless Chromium (Debian's chromium and chromedriver,
//! driven over WebDriver): a banned visitor sees the ban and its cause, clicks the button,
//! the page solves the proof-of-work in the browser and unblocks the address, and the next
//! login passes; the fourth unblock of the day is refused.

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};
use support::mailwarden::{Mailwarden, free_port, fresh_pwhash, login_body, report_body};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn browser_available() -> bool {
    let found = std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !found && std::env::var("CI").as_deref() == Ok("true") {
        panic!("chromium and chromium-driver are missing; scripts/test.sh installs them");
    }
    if !found {
        eprintln!("SKIP: chromium or chromedriver not installed");
    }
    found
}

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(log: &std::path::Path) -> Driver {
        let port = free_port();
        let log = std::fs::File::create(log).expect("driver log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let profile = mw.dir.path().join("chromium-profile");
    let driver = Driver::start(&mw.dir.path().join("chromedriver.log"));
    let screenshots = mw.dir.path().to_path_buf();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        // This test process links rustls with both ring and aws-lc-rs (fantoccini brings the
        // latter), so rustls cannot pick one itself: take the one mailwarden uses.
        mailwarden::tls::install_default_provider();
        let client = ClientBuilder::rustls()
            .expect("tls")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a browser session");

        for round in 1..=3 {
            ban(&mw);
            assert_eq!(allow_status(&mw), -1);
            client.goto(&base).await.expect("open the page");
            let state = client.find(Locator::Id("state")).await.expect("the state line").text().await.unwrap();
            assert!(state.contains("It is blocked until"), "round {round}: {state}");
            let causes = client.find(Locator::Css("ul")).await.expect("the causes").text().await.unwrap();
            assert!(causes.contains("a***e@example.com over IMAP"), "round {round}: {causes}");
            if round == 1 {
                let png = client.screenshot().await.expect("a screenshot");
                std::fs::write(screenshots.join("banned.png"), png).unwrap();
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
        let png = client.screenshot().await.expect("a screenshot");
        std::fs::write(screenshots.join("limit.png"), png).unwrap();
        client.close().await.unwrap();
    });
    assert_eq!(allow_status(&mw), -1, "the fourth ban stays");
    if let Ok(dir) = std::env::var("MAILWARDEN_KEEP_SCREENSHOTS") {
        for name in ["banned.png", "limit.png"] {
            let _ = std::fs::copy(screenshots.join(name), std::path::Path::new(&dir).join(name));
        }
    }
}
