//! A real headless Chromium for the web pages' tests (Debian's chromium and chromedriver,
//! driven over WebDriver by fantoccini): started on a free loopback port with its own
//! profile, stopped on drop, and screenshots written where the README's images come from.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::mailwarden::free_port;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser is installed; with `CI=true` its absence fails the test.
pub fn browser_available() -> bool {
    let found = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !found && std::env::var("CI").as_deref() == Ok("true") {
        panic!("chromium and chromium-driver are missing; scripts/test.sh installs them");
    }
    if !found {
        eprintln!("SKIP: chromium or chromedriver not installed");
    }
    found
}

/// chromedriver on a free loopback port, stopped on drop.
pub struct Driver {
    child: Child,
    pub port: u16,
}

impl Driver {
    pub fn start(log: &Path) -> Driver {
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

    /// A browser session with a fresh profile in `dir`, `width` by `height` pixels.
    pub async fn session(&self, dir: &Path, width: u32, height: u32) -> Client {
        self.session_with(dir, width, height, &[]).await
    }

    /// The same, with more Chromium switches (`--blink-settings=preferredColorScheme=0` for a
    /// dark system setting).
    pub async fn session_with(&self, dir: &Path, width: u32, height: u32, switches: &[&str]) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", dir.join("chromium-profile").display())],
            }),
        );
        if let Some(args) = capabilities["goog:chromeOptions"]["args"].as_array_mut() {
            args.extend(switches.iter().map(|s| serde_json::Value::from(*s)));
        }
        // This test process links rustls with both ring and aws-lc-rs (fantoccini brings the
        // latter), so rustls cannot pick one itself: take the one mailwarden uses.
        mailwarden::tls::install_default_provider();
        ClientBuilder::rustls()
            .expect("tls")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `target/screenshots/` (the README's images are copied from there by
/// `scripts/screenshots.sh`).
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot folder");
    dir
}

/// Saves what the browser shows as `target/screenshots/<name>.png`.
pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write the screenshot");
}

/// The text of the element `css` selects.
pub async fn text_of(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.expect("its text"),
        Err(e) => {
            let url = client.current_url().await.map(|u| u.to_string());
            let page = client.source().await.unwrap_or_default();
            panic!("no {css} on {url:?}: {e}\n{page}")
        }
    }
}

/// Fills the field `css` selects with `value`.
pub async fn fill(client: &Client, css: &str, value: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no field {css}: {e}"));
    field.clear().await.expect("clear the field");
    field.send_keys(value).await.expect("type into the field");
}

/// Clicks the element `css` selects.
pub async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
        .click()
        .await
        .expect("click");
}

/// Waits until the browser shows a page whose path ends with `suffix`; returns the URL.
pub async fn wait_for_path(client: &Client, suffix: &str) -> url::Url {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = client.current_url().await.expect("the current URL");
        let ready = client.execute("return document.readyState", vec![]).await.ok();
        if url.path().ends_with(suffix) && ready.as_ref().and_then(|v| v.as_str()) == Some("complete") {
            return url;
        }
        assert!(Instant::now() < deadline, "the browser stayed at {url}, not at ...{suffix}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element `css` selects and waits for the page it leads to (path ending with
/// `suffix`).
pub async fn click_to(client: &Client, css: &str, suffix: &str) -> url::Url {
    click(client, css).await;
    wait_for_path(client, suffix).await
}

/// Runs `test` in a browser session against a server; the runtime is a current-thread one.
pub fn with_browser<F, Fut>(dir: &Path, test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    with_browser_as(dir, 1200, 900, &[], test);
}

/// The same in a window of `width` by `height` pixels, with more Chromium `switches`.
pub fn with_browser_as<F, Fut>(dir: &Path, width: u32, height: u32, switches: &[&str], test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let driver = Driver::start(&dir.join("chromedriver.log"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        use futures_util::FutureExt as _;
        let client = driver.session_with(dir, width, height, switches).await;
        let outcome = std::panic::AssertUnwindSafe(test(client.clone())).catch_unwind().await;
        // Closed even when the test failed: chromedriver's end does not end the browser it
        // started, which would outlive the test run.
        let _ = client.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
}
