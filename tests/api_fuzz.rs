//! Schema-driven fuzzing of the admin API (schemathesis, from PyPI) from the OpenAPI document
//! the server itself serves: generated valid and invalid requests to every operation, checking
//! that none answers 5xx and every response matches the document. `MAILWARDEN_API_FUZZ_EXAMPLES`
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

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    if !schemathesis_available() {
        return;
    }
    let mw = Mailwarden::start();
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
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--max-examples", &examples])
        .args(["--seed", "1"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let tail: String = report.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(output.status.success(), "schemathesis found problems:\n{tail}\n--- server log ---\n{}", mw.log());
    eprintln!("{tail}");
    assert!(mw.admin("GET", "/healthz").0 == 200, "the server still answers");
}
