//! A private Prometheus for end-to-end tests: Debian's `prometheus` on a free loopback port,
//! with its own configuration and storage in a temporary folder, scraping one target with a
//! bearer token; its HTTP API for queries; and `promtool` to lint an exposition or a config.
//!
//! This is not a Prometheus client library: it asks only what the tests need to know.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::mailwarden::free_port;

/// How long Prometheus may take to start answering, and any one API call to answer. A hang
/// must fail the test with a message and the log, never stall the suite.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Call first in every Prometheus test: `if !require_prometheus() { return; }`.
///
/// Outside CI a machine without Prometheus skips the test with a note on stderr. In CI
/// (`CI=true`) a missing component is a failure, never a silent skip, so this panics.
pub fn require_prometheus() -> bool {
    let missing: Vec<&str> =
        ["prometheus", "promtool"].into_iter().filter(|name| find_program(name).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but {} not on PATH: install Debian's prometheus package", missing.join(" and "));
    }
    eprintln!("SKIP: {} not installed (Debian package prometheus)", missing.join(" and "));
    false
}

/// The program's path in `PATH`, so a Prometheus unpacked from a release tarball works too.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| panic!("{name} is not on PATH (require_prometheus)"))
}

/// What Prometheus scrapes: one target, with the admin token as a bearer token.
pub struct ScrapeTarget<'a> {
    pub job: &'a str,
    pub address: SocketAddr,
    pub metrics_path: &'a str,
    pub bearer_token: &'a str,
    pub interval: Duration,
}

/// A running Prometheus whose configuration, token file, storage and log live in one
/// temporary folder. Killed on drop.
pub struct Prometheus {
    /// Holds prometheus.yml, the token file, the storage and the log; deleted on drop.
    dir: tempfile::TempDir,
    pub address: SocketAddr,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts Prometheus scraping `target`, and waits until its API is ready.
    pub fn start(target: &ScrapeTarget) -> Prometheus {
        let dir =
            tempfile::Builder::new().prefix("mailwarden-prometheus-").tempdir().expect("create Prometheus temp folder");
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let token_path = dir.path().join("admin_token");
        fs::write(&token_path, target.bearer_token).expect("write the token file");
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, scrape_config(target, &token_path)).expect("write prometheus.yml");
        let log_path = dir.path().join("prometheus.log");
        // A file, not a pipe: nobody reads a pipe while the test runs, and a full one would
        // block Prometheus mid-test.
        let log = fs::File::create(&log_path).expect("create prometheus.log");
        let child = Command::new(program("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone prometheus.log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus { dir, address, log_path, child: Some(child) };
        prometheus.wait_until_ready();
        prometheus
    }

    /// Prometheus's own log so far, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no Prometheus log: {e})"))
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("prometheus exited at start-up with {status}:\n{}", self.log());
            }
            if matches!(self.get("/-/ready", &[]), Ok((200, _))) {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus was not ready within {START_TIMEOUT:?}:\n{}", self.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// A GET on Prometheus's HTTP server: (status, body), or why there was no answer.
    fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<(u16, String), String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        let mut request = agent.get(format!("http://{}{path}", self.address));
        for (key, value) in params {
            request = request.query(key, value);
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    /// An API call (`/api/v1/...`): its `data`, or the error Prometheus gave.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let (status, body) = self.get(path, params)?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if answer["status"] == "success" {
            Ok(answer["data"].clone())
        } else {
            Err(format!(
                "HTTP {status}, {}: {}",
                answer["errorType"].as_str().unwrap_or("error"),
                answer["error"].as_str().unwrap_or(&body)
            ))
        }
    }

    /// An instant query at the current time: the `data` object (`resultType`, `result`).
    pub fn query(&self, expression: &str) -> Result<Value, String> {
        self.api("/api/v1/query", &[("query", expression)])
    }

    /// The single number an instant query returns, if it returns exactly one sample.
    pub fn query_number(&self, expression: &str) -> Option<f64> {
        let data = self.query(expression).ok()?;
        match data["result"].as_array()?.as_slice() {
            [sample] => sample["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The values of `label` on the series that `selector` matches (Grafana's
    /// `label_values(selector, label)`).
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let data = self.api(&format!("/api/v1/label/{label}/values"), &[("match[]", selector)])?;
        Ok(data
            .as_array()
            .map(|values| values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// Waits until the scrape target of `job` reports health "up", i.e. Prometheus reached
    /// it, presented the token and parsed what it got.
    pub fn wait_until_target_up(&self, job: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(data) = self.api("/api/v1/targets", &[("state", "active")]) {
                let target = data["activeTargets"]
                    .as_array()
                    .and_then(|targets| targets.iter().find(|t| t["labels"]["job"] == job))
                    .cloned();
                if let Some(target) = target {
                    if target["health"] == "up" {
                        return;
                    }
                    last = target.to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the {job} target was not up within {timeout:?} (last seen: {last})\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// prometheus.yml for one job. The scrape timeout must not exceed the interval, and the
/// global default (10 s) would, so both are set.
fn scrape_config(target: &ScrapeTarget, token_path: &Path) -> String {
    let interval = format!("{}ms", target.interval.as_millis());
    format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n\
         scrape_configs:\n  - job_name: {job}\n    metrics_path: {path}\n    authorization:\n      type: Bearer\n      credentials_file: {token}\n    static_configs:\n      - targets: [\"{address}\"]\n",
        job = target.job,
        path = target.metrics_path,
        token = token_path.display(),
        address = target.address,
    )
}

/// What promtool said: whether it exited 0, and everything it printed.
pub struct PromtoolVerdict {
    pub success: bool,
    pub output: String,
}

/// `promtool check metrics`, which reads the exposition on stdin and lints names, types and
/// help texts.
pub fn promtool_check_metrics(exposition: &str) -> PromtoolVerdict {
    use std::io::Write;
    let mut child = Command::new(program("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    // Written from another thread: promtool may answer before it has read everything.
    let mut stdin = child.stdin.take().expect("promtool stdin");
    let exposition = exposition.to_owned();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(exposition.as_bytes());
    });
    let output = child.wait_with_output().expect("promtool check metrics");
    let _ = writer.join();
    PromtoolVerdict {
        success: output.status.success(),
        output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    }
}

/// `promtool check config <file>`.
pub fn promtool_check_config(path: &Path) -> PromtoolVerdict {
    let output = Command::new(program("promtool"))
        .args(["check", "config"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run promtool check config");
    PromtoolVerdict {
        success: output.status.success(),
        output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    }
}
