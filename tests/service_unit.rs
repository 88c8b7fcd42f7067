//! The shipped systemd unit is valid for systemd and as locked down as it claims.

use std::process::Command;

fn systemd_analyze_available() -> bool {
    let found = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var("CI").as_deref() == Ok("true") {
        panic!("systemd-analyze is missing; scripts/test.sh installs systemd");
    }
    if !found {
        eprintln!("SKIP: systemd-analyze not installed");
    }
    found
}

/// The shipped unit with ExecStart pointing at the binary under test (verify checks it exists).
fn unit_under_test() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/mailwarden.service")).expect("the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/mailwarden --config /etc/mailwarden/policy.toml serve"));
    let unit = unit.replace("/usr/local/bin/mailwarden", env!("CARGO_BIN_EXE_mailwarden"));
    std::fs::write(dir.path().join("mailwarden.service"), unit).expect("write unit");
    dir
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    if !systemd_analyze_available() {
        return;
    }
    let dir = unit_under_test();
    let output =
        Command::new("systemd-analyze").arg("verify").arg(dir.path().join("mailwarden.service")).output().unwrap();
    let messages = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{messages}");
    assert!(!messages.contains("mailwarden.service:"), "systemd complains about the unit: {messages}");
}

#[test]
fn the_systemd_unit_scores_as_well_hardened() {
    if !systemd_analyze_available() {
        return;
    }
    let dir = unit_under_test();
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.path().join("mailwarden.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for mailwarden.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {text}"));
    assert!(score <= 2.0, "exposure {score} is above 2.0 (systemd calls up to 2.0 OK):\n{text}");
}

#[test]
fn the_systemd_unit_keeps_the_state_directory_private_as_the_server_does() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/mailwarden.service")).expect("the unit");
    let settings: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in ["StateDirectory=mailwarden", "StateDirectoryMode=0700", "UMask=0077"] {
        assert!(settings.contains(&wanted), "the unit lacks {wanted}");
    }
}
