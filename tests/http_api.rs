//! The real server over HTTP: Dovecot's policy protocol, the admin API, the CLI and start-up,
//! driven from outside the process exactly as Dovecot, scripts and admins drive it.

mod support;

use std::process::Output;

use support::mailwarden::{ADMIN_TOKEN, Mailwarden, fresh_pwhash, login_body, report_body};

fn fail_n(mw: &Mailwarden, remote: &str, n: usize) {
    for _ in 0..n {
        let (status, _) = mw.policy("report", &report_body(remote, "alice@example.com", &fresh_pwhash(), false));
        assert_eq!(status, 200, "{}", mw.log());
    }
}

fn allow_status(mw: &Mailwarden, remote: &str) -> (i64, String) {
    let (status, body) = mw.policy("allow", &login_body(remote, "bob@example.com", "0f96"));
    assert_eq!(status, 200, "allow must answer 200: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("allow answers JSON");
    let code = json["status"].as_i64().expect("status is an integer");
    (code, json["msg"].as_str().expect("msg is a string").to_string())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn five_reported_failures_ban_the_source_for_every_account_with_a_one_line_message() {
    let mw = Mailwarden::start();
    fail_n(&mw, "203.0.113.7", 4);
    assert_eq!(allow_status(&mw, "203.0.113.7").0, 0, "four failures do not ban");
    fail_n(&mw, "203.0.113.7", 1);
    let (status, msg) = allow_status(&mw, "203.0.113.7");
    assert_eq!(status, -1);
    assert!(msg.starts_with("Too many failed logins from 203.0.113.7; try again after "), "{msg}");
    assert!(msg.ends_with(" UTC") && msg.is_ascii() && !msg.contains('\n'), "{msg}");
    assert_eq!(allow_status(&mw, "203.0.113.8").0, 0, "another address passes");
}

#[test]
fn a_wrong_or_missing_api_key_gets_401_and_changes_nothing() {
    let mw = Mailwarden::start();
    for key in [Some("wrong-key-0123456789"), None] {
        for _ in 0..5 {
            let (status, body) = mw.policy_with_key("report", &report_body("203.0.113.7", "a", "1", false), key);
            assert_eq!(status, 401);
            assert!(body.contains("\"error\":\"unauthorized\""), "{body}");
        }
    }
    assert_eq!(allow_status(&mw, "203.0.113.7").0, 0);
}

#[test]
fn malformed_requests_get_400_with_a_json_error_and_count_nothing() {
    let mw = Mailwarden::start();
    let cases = [
        ("report", "not json", "malformed_body"),
        ("report", r#"{"login":"a","remote":"203.0.113.7","success":"no"}"#, "bad_attribute"),
        ("report", r#"{"login":"a","remote":"203.0.113.7"}"#, "bad_attribute"),
        ("report", r#"{"login":"a","remote":"203.0.113.300","success":false}"#, "bad_attribute"),
        ("allow", r#"{"login":5,"remote":"203.0.113.7"}"#, "bad_attribute"),
        ("reset", r#"{"login":"a","remote":"203.0.113.7"}"#, "bad_command"),
    ];
    for _ in 0..5 {
        for (command, body, code) in cases {
            let (status, answer) = mw.policy(command, body);
            assert_eq!(status, 400, "{command} {body} -> {answer}");
            let json: serde_json::Value = serde_json::from_str(&answer).expect("JSON error");
            assert_eq!(json["error"], code, "{answer}");
            assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    assert_eq!(allow_status(&mw, "203.0.113.7").0, 0, "nothing was counted");
}

#[test]
fn unknown_attributes_nested_objects_any_path_and_extra_parameters_are_tolerated() {
    let mw = Mailwarden::start();
    let body = r#"{"attrs":{"foo":"bar","sub/lport":"10143"},"device_id":"\"name\" \"Mail\"","login":"testuser","protocol":"imap","pwhash":"0f96","real_remote":"127.0.0.1","remote":"203.0.113.7","session_id":"abc","zz_mech":"PLAIN","tls":true}"#;
    let url = format!("http://{}/some/policy/path?a=1&command=allow", mw.policy_addr);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.post(url).header("X-API-Key", format!("  {}", mw.api_key)).send(body).expect("request");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.body_mut().read_to_string().unwrap(), r#"{"status":0,"msg":""}"#);
}

#[test]
fn an_oversized_body_gets_413_and_a_get_gets_405() {
    let mw = Mailwarden::start_with("");
    let huge = format!(r#"{{"login":"{}","remote":"203.0.113.7"}}"#, "a".repeat(100 * 1024));
    let (status, body) = mw.policy("allow", &huge);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let response =
        agent.get(format!("http://{}/?command=allow", mw.policy_addr)).header("X-API-Key", &mw.api_key).call().unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[test]
fn every_admin_route_needs_the_bearer_token() {
    let mw = Mailwarden::start();
    for path in ["/healthz", "/metrics", "/api/v1/bans", "/api/v1/bans/203.0.113.7", "/nope"] {
        for token in [None, Some("wrong-token-0123456789")] {
            let (status, body) = mw.admin_with_token("GET", path, token);
            assert_eq!(status, 401, "{path} without the right token: {body}");
            assert!(body.contains("unauthorized"));
        }
    }
    assert_eq!(mw.admin_with_token("DELETE", "/api/v1/bans/203.0.113.7", None).0, 401);
    assert_eq!(mw.admin("GET", "/healthz").0, 200);
}

#[test]
fn the_bearer_scheme_is_accepted_in_any_case_and_nothing_else_is() {
    let mw = Mailwarden::start();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let status = |authorization: String| {
        let url = format!("http://{}/healthz", mw.admin_addr);
        agent.get(url).header("Authorization", authorization).call().expect("the admin API answers").status().as_u16()
    };
    let token = &mw.admin_token;
    for accepted in [format!("bearer {token}"), format!("BEARER {token}"), format!("  Bearer   {token} ")] {
        assert_eq!(status(accepted.clone()), 200, "{accepted:?} is refused");
    }
    for refused in [format!("Bearer{token}"), format!("Basic {token}"), format!("Token {token}"), "Bearer".into()] {
        assert_eq!(status(refused.clone()), 401, "{refused:?} is accepted");
    }
}

#[test]
fn the_state_dir_and_every_file_in_it_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    // The harness starts the server with umask 022; policy.toml leaves the secrets to be
    // generated, and a refusal puts a row in the database so its WAL holds data.
    let mut mw = Mailwarden::configure("");
    let policy = std::fs::read_to_string(&mw.config_path).unwrap();
    let policy = policy.replace(&format!("api_key = \"{}\"", mw.api_key), "api_key = \"\"");
    std::fs::write(&mw.config_path, policy).unwrap();
    mw.restart();
    mw.api_key = std::fs::read_to_string(mw.dir.path().join("state/api_key")).unwrap().trim().to_string();
    fail_n(&mw, "203.0.113.7", 5);
    assert_eq!(allow_status(&mw, "203.0.113.7").0, -1);
    assert!(mw.cli(&["events"]).status.success());

    let state = mw.dir.path().join("state");
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "state_dir");
    let mut names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for expected in ["api_key", "mailwarden.db", "mailwarden.db-shm", "mailwarden.db-wal"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    for name in &names {
        assert_eq!(mode(&state.join(name)), 0o600, "{name} is {:o}", mode(&state.join(name)));
    }
    assert!(!mw.log().contains("other users can read"), "{}", mw.log());
}

#[test]
fn an_existing_state_dir_others_can_read_is_reported_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut mw = Mailwarden::configure("");
    let state = mw.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    mw.restart();
    let log = mw.log();
    let line = log.lines().find(|l| l.contains("other users can read")).unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(line.contains(&state.display().to_string()) && line.contains("0755"), "{line}");
    assert!(line.contains(&format!("chmod go-rwx {}", state.display())), "{line}");
    // Warned, not changed, and the server runs.
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(mw.admin("GET", "/healthz").0, 200);
}

#[test]
fn the_ban_api_lists_shows_and_lifts_bans_and_says_what_is_wrong() {
    let mw = Mailwarden::start();
    fail_n(&mw, "203.0.113.7", 5);
    fail_n(&mw, "2001:db8:1:2::5", 5);

    let (status, body) = mw.admin("GET", "/api/v1/bans");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sources: Vec<&str> = json["bans"].as_array().unwrap().iter().map(|b| b["source"].as_str().unwrap()).collect();
    assert!(sources.contains(&"203.0.113.7") && sources.contains(&"2001:db8:1:2::/64"), "{body}");
    assert!(!body.contains("pwhash") && !body.contains("0003"), "no password hashes in the API: {body}");

    let (status, body) = mw.admin("GET", "/api/v1/bans/203.0.113.7");
    assert_eq!(status, 200, "{body}");
    let ban: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ban["failures"], 5);
    assert_eq!(ban["last_login"], "alice@example.com");
    assert_eq!(ban["protocol"], "imap");
    assert!(ban["remaining_seconds"].as_u64().unwrap() > 29 * 60);

    // Any address of a banned IPv6 /64 finds its ban.
    assert_eq!(mw.admin("GET", "/api/v1/bans/2001:db8:1:2:abcd::1").0, 200);

    let (status, body) = mw.admin("GET", "/api/v1/bans/not-an-address");
    assert_eq!(status, 400);
    assert!(body.contains("\"error\":\"invalid_address\"") && body.contains("not-an-address"), "{body}");
    let (status, body) = mw.admin("GET", "/api/v1/bans/198.51.100.1");
    assert_eq!(status, 404);
    assert!(body.contains("\"error\":\"not_banned\""), "{body}");
    let (status, body) = mw.admin("GET", "/api/v1/nothing-here");
    assert_eq!(status, 404);
    assert!(body.contains("\"error\":\"not_found\""), "{body}");

    let (status, body) = mw.admin("DELETE", "/api/v1/bans/203.0.113.7");
    assert_eq!(status, 200, "{body}");
    assert_eq!(allow_status(&mw, "203.0.113.7").0, 0, "unbanned at once");
    assert_eq!(mw.admin("DELETE", "/api/v1/bans/203.0.113.7").0, 404);
    assert_eq!(mw.admin("DELETE", "/api/v1/bans/2001:db8:1:2::/64").0, 200);
    assert_eq!(allow_status(&mw, "2001:db8:1:2::99").0, 0);
}

#[test]
fn metrics_count_requests_decisions_and_bans_without_addresses_or_logins() {
    let mw = Mailwarden::start();
    fail_n(&mw, "203.0.113.7", 5);
    allow_status(&mw, "203.0.113.7");
    allow_status(&mw, "203.0.113.8");
    let (status, text) = mw.admin("GET", "/metrics");
    assert_eq!(status, 200);
    for expected in [
        "mailwarden_requests_total{code=\"200\",command=\"report\"} 5",
        "mailwarden_decisions_total{protocol=\"imap\",reason=\"ban\",verdict=\"reject\"} 1",
        "mailwarden_decisions_total{protocol=\"imap\",reason=\"none\",verdict=\"allow\"} 1",
        "mailwarden_reports_total{result=\"failure\"} 5",
        "mailwarden_bans_created_total{reason=\"autoban\"} 1",
        "mailwarden_active_bans 1",
        "mailwarden_build_info{version=",
        "mailwarden_request_duration_seconds_bucket{command=\"allow\",le=\"0.00005\"}",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains("203.0.113") && !text.contains("alice"), "no addresses or logins in metrics");
}

#[test]
fn the_cli_lists_and_lifts_bans_with_config_before_or_after_its_arguments() {
    let mw = Mailwarden::start();
    fail_n(&mw, "203.0.113.7", 5);
    let table = mw.cli(&["bans"]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(
        stdout(&table).contains("203.0.113.7") && stdout(&table).contains("alice@example.com"),
        "{}",
        stdout(&table)
    );

    let json = mw.cli(&["bans", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("bans --json prints JSON");
    assert_eq!(parsed["bans"][0]["source"], "203.0.113.7");

    let config = mw.config_path.to_str().unwrap();
    let unban = std::process::Command::new(env!("CARGO_BIN_EXE_mailwarden"))
        .args(["unban", "203.0.113.7", "--config", config])
        .output()
        .unwrap();
    assert!(unban.status.success(), "{}", stderr(&unban));
    assert!(stdout(&unban).contains("Unbanned 203.0.113.7"), "{}", stdout(&unban));
    assert_eq!(allow_status(&mw, "203.0.113.7").0, 0);

    let again = mw.cli(&["unban", "203.0.113.7"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("203.0.113.7 is not banned"), "{}", stderr(&again));
    let bad = mw.cli(&["unban", "banana"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("\"banana\" is not an IP address"), "{}", stderr(&bad));
    assert!(stdout(&mw.cli(&["bans"])).contains("No active bans."));
}

#[test]
fn the_cli_says_plainly_when_the_server_is_not_running() {
    let mw = Mailwarden::configure("");
    let output = mw.cli(&["bans"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot reach mailwarden's admin API"), "{}", stderr(&output));
}

#[test]
fn a_ban_survives_kill_9_and_restart() {
    let mut mw = Mailwarden::start();
    fail_n(&mw, "203.0.113.7", 5);
    mw.kill9();
    mw.restart();
    let (status, msg) = allow_status(&mw, "203.0.113.7");
    assert_eq!(status, -1, "{}", mw.log());
    assert!(msg.contains("203.0.113.7"));
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut mw = Mailwarden::start();
    fail_n(&mw, "203.0.113.7", 2);
    assert!(mw.terminate(), "{}", mw.log());
    assert!(mw.log().contains("mailwarden stopped"));
}

#[test]
fn check_config_prints_the_effective_policy_with_secrets_masked() {
    let mw = Mailwarden::configure("[autoban]\nmax_failures = 7\n");
    let output = mw.cli(&["check-config"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("max_failures = 7"), "{text}");
    assert!(!text.contains(ADMIN_TOKEN) && !text.contains(&mw.api_key), "secrets are masked: {text}");

    let overridden = std::process::Command::new(env!("CARGO_BIN_EXE_mailwarden"))
        .args(["check-config", "--config", mw.config_path.to_str().unwrap()])
        .env("MAILWARDEN__AUTOBAN__BAN_FOR", "2h")
        .output()
        .unwrap();
    assert!(stdout(&overridden).contains("ban_for = \"2h\""), "{}", stdout(&overridden));
}

#[test]
fn a_broken_policy_stops_start_up_and_check_config_with_the_key_named() {
    let mw = Mailwarden::configure("[autoban]\nwindow = \"twenty minutes\"\nmax_failurez = 5\n");
    let check = mw.cli(&["check-config"]);
    assert_eq!(check.status.code(), Some(2));
    assert!(stderr(&check).contains("max_failurez"), "{}", stderr(&check));

    std::fs::write(
        &mw.config_path,
        std::fs::read_to_string(&mw.config_path).unwrap().replace("max_failurez = 5\n", ""),
    )
    .unwrap();
    let check = mw.cli(&["check-config"]);
    assert!(stderr(&check).contains("autoban.window: \"twenty minutes\" is not a duration"), "{}", stderr(&check));
    let serve = mw.cli(&["serve"]);
    assert_eq!(serve.status.code(), Some(2));
    assert!(stderr(&serve).contains("autoban.window"), "{}", stderr(&serve));
}

#[test]
fn a_taken_port_is_reported_with_its_key() {
    let first = Mailwarden::start();
    let second = Mailwarden::configure("");
    let text = std::fs::read_to_string(&second.config_path)
        .unwrap()
        .replace(&second.policy_addr.to_string(), &first.policy_addr.to_string());
    std::fs::write(&second.config_path, text).unwrap();
    let output = second.cli(&["serve"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("server.policy_listen: cannot listen on"), "{}", stderr(&output));
}

#[test]
fn empty_secrets_are_generated_privately_and_the_cli_finds_them() {
    use std::os::unix::fs::PermissionsExt;
    let mut mw = Mailwarden::configure("");
    let text = std::fs::read_to_string(&mw.config_path).unwrap();
    let text = text
        .replace(&format!("api_key = \"{}\"", mw.api_key), "api_key = \"\"")
        .replace(&format!("admin_token = \"{ADMIN_TOKEN}\""), "admin_token = \"\"");
    std::fs::write(&mw.config_path, text).unwrap();
    let state = mw.dir.path().join("state");
    // The harness waits on the admin API with its own token, so start by hand and wait for the files.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailwarden"))
        .args(["--config", mw.config_path.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(state.join("admin_token").exists() && mw.cli(&["bans"]).status.success()) {
        assert!(std::time::Instant::now() < deadline, "generated secrets did not work");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mode = std::fs::metadata(state.join("api_key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    mw.api_key = std::fs::read_to_string(state.join("api_key")).unwrap().trim().to_string();
    assert_eq!(allow_status(&mw, "203.0.113.7").0, 0, "Dovecot authenticates with the generated key");
    let _ = child.kill();
    let _ = child.wait();
}
