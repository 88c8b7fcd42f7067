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
    unit_with_drop_ins(&[])
}

/// The unit with these drop-ins of `dist/mailwarden.service.d` beside it, as systemd reads them.
fn unit_with_drop_ins(drop_ins: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/mailwarden.service")).expect("the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/mailwarden --config /etc/mailwarden/policy.toml serve"));
    let unit = unit.replace("/usr/local/bin/mailwarden", env!("CARGO_BIN_EXE_mailwarden"));
    std::fs::write(dir.path().join("mailwarden.service"), unit).expect("write unit");
    let drop_in_dir = dir.path().join("mailwarden.service.d");
    for name in drop_ins {
        std::fs::create_dir_all(&drop_in_dir).expect("drop-in folder");
        let source = format!("{}/dist/mailwarden.service.d/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(&source, drop_in_dir.join(name)).expect("copy the drop-in");
    }
    dir
}

fn verifies_cleanly(dir: &tempfile::TempDir) {
    let output =
        Command::new("systemd-analyze").arg("verify").arg(dir.path().join("mailwarden.service")).output().unwrap();
    let messages = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{messages}");
    for unit in ["mailwarden.service:", "mailwarden.service.d/"] {
        assert!(!messages.contains(unit), "systemd complains about the unit: {messages}");
    }
}

fn exposure(dir: &tempfile::TempDir) -> (f64, String) {
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
    (score, text.into_owned())
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    if systemd_analyze_available() {
        verifies_cleanly(&unit_under_test());
    }
}

#[test]
fn the_systemd_unit_scores_as_well_hardened() {
    if !systemd_analyze_available() {
        return;
    }
    let (score, text) = exposure(&unit_under_test());
    assert!(score <= 2.0, "exposure {score} is above 2.0 (systemd calls up to 2.0 OK):\n{text}");
}

#[test]
fn the_nftables_drop_in_verifies_grants_only_network_administration_and_still_scores_ok() {
    if !systemd_analyze_available() {
        return;
    }
    let dir = unit_with_drop_ins(&["nftables.conf"]);
    verifies_cleanly(&dir);
    let (score, text) = exposure(&dir);
    assert!(text.contains("✗ CapabilityBoundingSet=~CAP_NET_ADMIN"), "the drop-in was not read:\n{text}");
    assert!(text.contains("✓ CapabilityBoundingSet=~CAP_SYS_ADMIN"), "{text}");
    assert!(score <= 2.0, "exposure {score} with the drop-in is above 2.0:\n{text}");
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
