//! Schema-driven fuzzing of the admin API (schemathesis, from PyPI) from the OpenAPI document
//! the server itself serves: generated valid and invalid requests to every operation, checking
//! that none answers 5xx and every response matches the document; and invalid requests alone,
//! checking each is refused with 4xx and the stored state is the same afterwards. `MAILWARDEN_API_FUZZ_EXAMPLES`
//! sets the examples per operation (default 25; docs/RELIABILITY.md has a longer run).

mod support;

use std::process::Command;

use support::mailwarden::Mailwarden;

fn schemathesis_available() -> bool {
    let found = Command::new("schemathesis").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var("CI").as_deref() == Ok("true") {
        panic!("schemathesis is missing; scripts/test.sh installs it with pip");
    }
    if !found {
        eprintln!("SKIP: schemathesis not installed (pip install schemathesis)");
    }
    found
}

/// Runs schemathesis against the server's own OpenAPI document; returns the report's tail.
fn schemathesis(mw: &Mailwarden, mode: &str, checks: &str) -> String {
    let (status, document) = mw.admin("GET", "/api/v1/openapi.json");
    assert_eq!(status, 200);
    let schema = mw.dir.path().join("openapi.json");
    std::fs::write(&schema, document).unwrap();
    let examples = std::env::var("MAILWARDEN_API_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    let output = Command::new("schemathesis")
        .arg("run")
        .arg(&schema)
        .args(["--url", &format!("http://{}", mw.admin_addr)])
        .args(["--header", &format!("Authorization: Bearer {}", mw.admin_token)])
        .args(["--mode", mode, "--checks", checks])
        .args(["--max-examples", &examples])
        .args(["--seed", "1"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let tail: String =
        report.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(output.status.success(), "schemathesis ({mode}) found problems:\n{tail}\n--- server log ---\n{}", mw.log());
    eprintln!("{tail}");
    assert!(mw.admin("GET", "/healthz").0 == 200, "the server still answers");
    tail
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    if !schemathesis_available() {
        return;
    }
    let mw = Mailwarden::start();
    schemathesis(
        &mw,
        "all",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
    );
}

/// Everything an admin can see of the stored state.
fn state(mw: &Mailwarden) -> Vec<String> {
    let mut seen = Vec::new();
    for path in ["/api/v1/bans", "/api/v1/blocks", "/api/v1/trusted", "/api/v1/mailboxes", "/api/v1/events?limit=1000"]
    {
        let (status, body) = mw.admin("GET", path);
        assert_eq!(status, 200, "{path}: {body}");
        // Only the countdown may move.
        let mut value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if let Some(bans) = value["bans"].as_array_mut() {
            bans.iter_mut().for_each(|ban| ban["remaining_seconds"] = serde_json::Value::Null);
        }
        seen.push(format!("{path}: {value}"));
    }
    let (_, firewall) = mw.admin("GET", "/api/v1/mailboxes/alice@example.com/firewall");
    seen.push(firewall);
    seen
}

#[test]
fn rejected_input_is_refused_with_4xx_and_changes_nothing() {
    if !schemathesis_available() {
        return;
    }
    let mw = Mailwarden::start();
    // Some state for malformed requests to damage: a ban, a block, a trusted network, a rule set.
    for _ in 0..5 {
        mw.policy(
            "report",
            &support::mailwarden::report_body(
                "203.0.113.9",
                "bob@example.com",
                &support::mailwarden::fresh_pwhash(),
                false,
            ),
        );
    }
    assert_eq!(mw.admin_post("/api/v1/blocks", Some(r#"{"network":"198.51.100.0/24","comment":"spam run"}"#)).0, 201);
    assert_eq!(mw.admin_post("/api/v1/trusted", Some(r#"{"network":"192.0.2.0/28","comment":"office"}"#)).0, 201);
    assert_eq!(
        mw.admin_post(
            "/api/v1/mailboxes/alice@example.com/firewall/rules",
            Some(r#"{"action":"block","network":"198.18.0.0/15"}"#)
        )
        .0,
        201
    );
    let before = state(&mw);
    assert!(before[0].contains("203.0.113.9"), "{}", before[0]);

    let report = schemathesis(&mw, "negative", "not_a_server_error,negative_data_rejection");
    assert_eq!(state(&mw), before, "rejected requests changed the stored state; schemathesis said:\n{report}");
}
