//! Runs the real `mailwarden` binary for tests: a temporary folder with a policy.toml on free
//! loopback ports and its own state_dir, started, killed with SIGKILL and restarted at will.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "test-api-key-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct Mailwarden {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub policy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub api_key: String,
    pub admin_token: String,
    log_path: PathBuf,
    child: Option<Child>,
    /// The client of both listeners: plain, or one trusting the test CA (`use_tls`).
    agent: ureq::Agent,
    policy_scheme: &'static str,
    admin_scheme: &'static str,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    // The kernel may hand the same ephemeral port to two binds that each closed at once (a
    // server's policy and admin listeners once got one port between them, and its start
    // failed): a port is never handed out twice in one test process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

impl Mailwarden {
    /// The seed's default policy.
    pub fn start() -> Mailwarden {
        Mailwarden::start_with("")
    }

    /// The default policy with `extra_toml` appended (sections other than [server] and [auth]).
    pub fn start_with(extra_toml: &str) -> Mailwarden {
        let mut mw = Mailwarden::configure(extra_toml);
        mw.restart();
        mw
    }

    /// Writes the configuration without starting the server.
    pub fn configure(extra_toml: &str) -> Mailwarden {
        let dir = tempfile::tempdir().expect("temp dir");
        let policy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let config_path = dir.path().join("policy.toml");
        let log_path = dir.path().join("mailwarden.log");
        let mw = Mailwarden {
            dir,
            config_path,
            policy_addr,
            admin_addr,
            api_key: API_KEY.into(),
            admin_token: ADMIN_TOKEN.into(),
            log_path,
            child: None,
            agent: agent(),
            policy_scheme: "http",
            admin_scheme: "http",
        };
        mw.write_config("", extra_toml);
        mw
    }

    /// Rewrites policy.toml with the same listeners, state and secrets: `server_extra` goes
    /// into `[server]`, `extra_toml` after it (other sections).
    pub fn write_config(&self, server_extra: &str, extra_toml: &str) {
        let (policy_addr, admin_addr) = (self.policy_addr, self.admin_addr);
        let toml = format!(
            "[server]\npolicy_listen = \"{policy_addr}\"\nadmin_listen = \"{admin_addr}\"\nstate_dir = \"state\"\n{server_extra}\n\
             [auth]\napi_key = \"{API_KEY}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\n{extra_toml}\n"
        );
        fs::write(&self.config_path, toml).expect("write policy.toml");
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("server running")
    }

    /// Sends a signal (e.g. "HUP") to the running server.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().map(Child::id).expect("server running");
        let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("kill");
        assert!(status.success());
    }

    pub fn policy_url(&self) -> String {
        format!("{}://{}/", self.policy_scheme, self.policy_addr)
    }

    /// Talks https to the listeners that speak TLS, through `agent` (tests/support/tls.rs).
    pub fn use_tls(&mut self, agent: ureq::Agent, policy: bool, admin: bool) {
        self.agent = agent;
        self.policy_scheme = if policy { "https" } else { "http" };
        self.admin_scheme = if admin { "https" } else { "http" };
    }

    /// Starts the server (again) with the same folder, configuration and ports, and waits
    /// until its admin API answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailwarden"));
        // A shell's usual umask, whatever the test runner's, so the server must make its state
        // private by itself.
        // SAFETY: umask is async-signal-safe and touches only the child's own mask.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::umask(0o022);
                Ok(())
            });
        }
        let child = command
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start mailwarden");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("mailwarden exited at start-up with {status}:\n{}", self.log());
            }
            if self.admin("GET", "/healthz").0 == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "mailwarden did not become ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop(&mut self) {
        self.kill9();
    }

    /// Sends SIGTERM and waits for the process to end; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        false
    }

    /// Runs `mailwarden --config <policy.toml> <args...>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mailwarden"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run the mailwarden CLI")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// POSTs a policy request with the right API key; returns (HTTP status, body).
    pub fn policy(&self, command: &str, body: &str) -> (u16, String) {
        self.policy_with_key(command, body, Some(&self.api_key))
    }

    pub fn policy_with_key(&self, command: &str, body: &str, key: Option<&str>) -> (u16, String) {
        let url = format!("{}://{}/?command={command}", self.policy_scheme, self.policy_addr);
        let mut request = self.agent.post(url).header("Content-Type", "application/json");
        if let Some(key) = key {
            // Dovecot sends the value with a leading space.
            request = request.header("X-API-Key", format!(" {key}"));
        }
        let mut response = request.send(body).expect("policy request");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap_or_default())
    }

    /// An admin API call with the right token; returns (HTTP status, body).
    /// Reports answered so far (`mailwarden_requests_total{command="report"}`, every status).
    pub fn reports_answered(&self) -> u64 {
        let (_, metrics) = self.admin("GET", "/metrics");
        metrics
            .lines()
            .filter(|line| line.starts_with("mailwarden_requests_total{") && line.contains("command=\"report\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Dovecot sends a login's report without waiting for the answer, so with
    /// `auth_failure_delay = 0` the client can try again before mailwarden has counted the
    /// failure. Waits (up to 10 s) until `count` reports in all have been answered.
    pub fn wait_for_reports(&self, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.reports_answered() < count {
            assert!(Instant::now() < deadline, "mailwarden answered {} of {count} reports", self.reports_answered());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        self.admin_with_token(method, path, Some(&self.admin_token))
    }

    /// POSTs a JSON body (or none) to the admin API with the right token.
    pub fn admin_post(&self, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("{}://{}{path}", self.admin_scheme, self.admin_addr);
        let request = self
            .agent
            .post(url)
            .header("Authorization", format!("Bearer {}", self.admin_token))
            .header("Content-Type", "application/json");
        answer(match body {
            Some(body) => request.send(body),
            None => request.send_empty(),
        })
    }

    /// PUTs a JSON body to the admin API with the right token.
    pub fn admin_put(&self, path: &str, body: &str) -> (u16, String) {
        let url = format!("{}://{}{path}", self.admin_scheme, self.admin_addr);
        let request = self
            .agent
            .put(url)
            .header("Authorization", format!("Bearer {}", self.admin_token))
            .header("Content-Type", "application/json");
        answer(request.send(body))
    }

    /// Any admin call as `token`, with a JSON body for POST and PUT (`{}` when none).
    pub fn admin_as(&self, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("http://{}{path}", self.admin_addr);
        let authorization = format!("Bearer {token}");
        answer(match method {
            "GET" => agent().get(url).header("Authorization", authorization).call(),
            "DELETE" => agent().delete(url).header("Authorization", authorization).call(),
            "POST" | "PUT" => {
                let request = if method == "POST" { agent().post(url) } else { agent().put(url) };
                request
                    .header("Authorization", authorization)
                    .header("Content-Type", "application/json")
                    .send(body.unwrap_or("{}"))
            }
            other => panic!("unsupported method {other}"),
        })
    }

    /// Creates a token through the API with the admin token; returns the token.
    pub fn create_token(&self, name: &str, scope: &str) -> String {
        let body = format!(r#"{{"name":"{name}","scope":"{scope}"}}"#);
        let (status, answer) = self.admin_post("/api/v1/tokens", Some(&body));
        assert_eq!(status, 201, "{answer}");
        let created: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        created["token"].as_str().expect("the token").to_string()
    }

    /// A GET or DELETE on the admin API with `token` (or none).
    pub fn admin_with_token(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let url = format!("{}://{}{path}", self.admin_scheme, self.admin_addr);
        let request = match method {
            "GET" => self.agent.get(url),
            "DELETE" => self.agent.delete(url),
            other => panic!("unsupported method {other}"),
        };
        let request = match token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        answer(request.call())
    }
}

/// (HTTP status, body); (0, "") when the server could not be reached.
fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String) {
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            (status, response.body_mut().read_to_string().unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

impl Drop for Mailwarden {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `pwhash` never used before in this test binary: an attacker's new guess (a repeated one
/// counts once, like a stale device's).
pub fn fresh_pwhash() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A Dovecot-shaped request body.
pub fn login_body(remote: &str, login: &str, pwhash: &str) -> String {
    format!(
        r#"{{"device_id":"","login":"{login}","protocol":"imap","pwhash":"{pwhash}","remote":"{remote}","session_id":"t3st","tls":false}}"#
    )
}

/// A Dovecot-shaped report body.
pub fn report_body(remote: &str, login: &str, pwhash: &str, success: bool) -> String {
    format!(
        r#"{{"device_id":"","login":"{login}","protocol":"imap","pwhash":"{pwhash}","remote":"{remote}","session_id":"t3st","success":{success},"policy_reject":false,"tls":false}}"#
    )
}
