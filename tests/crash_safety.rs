//! Crash safety: mailwarden is killed with SIGKILL at random moments while a steady stream of
//! failed logins places bans and an admin adds block-list entries and firewall rules. After
//! every kill the database must pass SQLite's integrity check, and after every restart every
//! change that was acknowledged (a ban whose fifth failure was answered, a 201 from the admin
//! API) must be there. Rounds: `MAILWARDEN_CRASH_ROUNDS` (default 12; `scripts/crash-test.sh`
//! runs 100).

mod support;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::mailwarden::{Mailwarden, fresh_pwhash, report_body};

/// What the server acknowledged, across all rounds.
#[derive(Default)]
struct Acknowledged {
    bans: Vec<String>,
    blocks: Vec<String>,
    rules: Vec<(String, String)>,
}

fn random_below(n: u64) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(n);
    hasher.finish() % n.max(1)
}

/// Sends changes until the server stops answering; records each one it acknowledged.
fn write_until_killed(mw: &Mailwarden, round: usize, acknowledged: &Mutex<Acknowledged>, stop: &AtomicBool) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into();
    let admin = |path: &str, body: String| {
        agent
            .post(format!("http://{}{path}", mw.admin_addr))
            .header("Authorization", format!("Bearer {}", mw.admin_token))
            .header("Content-Type", "application/json")
            .send(body)
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let policy = |body: String| {
        agent
            .post(format!("http://{}/?command=report", mw.policy_addr))
            .header("X-API-Key", mw.api_key.as_str())
            .send(body)
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let ip = format!("10.{}.{}.{}", 70 + round % 50, i / 250, i % 250 + 1);
        let all_answered = (0..5).all(|_| policy(report_body(&ip, "alice@example.com", &fresh_pwhash(), false)) == 200);
        if all_answered {
            acknowledged.lock().unwrap().bans.push(ip.clone());
        } else {
            return;
        }
        let block = format!("172.{}.{}.{}", 16 + round % 16, i / 250, i % 250 + 1);
        match admin("/api/v1/blocks", format!(r#"{{"network":"{block}","comment":"round {round}"}}"#)) {
            201 => acknowledged.lock().unwrap().blocks.push(format!("{block}/32")),
            _ => return,
        }
        let mailbox = format!("user{}@example.com", i % 7);
        let rule = format!("192.168.{}.{}", round % 250, i % 250 + 1);
        let path = format!("/api/v1/mailboxes/{mailbox}/firewall/rules");
        match admin(&path, format!(r#"{{"action":"block","address":"{rule}"}}"#)) {
            201 => acknowledged.lock().unwrap().rules.push((mailbox, rule)),
            _ => return,
        }
    }
}

fn integrity_check(mw: &Mailwarden) {
    let path = mw.dir.path().join("state").join("mailwarden.db");
    let db = rusqlite::Connection::open(&path).expect("the database opens after SIGKILL");
    let verdict: String = db.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity check");
    assert_eq!(verdict, "ok");
}

fn verify(mw: &Mailwarden, acknowledged: &Acknowledged, round: usize) {
    for ip in &acknowledged.bans {
        let (status, body) = mw.admin("GET", &format!("/api/v1/bans/{ip}"));
        assert_eq!(status, 200, "round {round}: the acknowledged ban on {ip} is gone: {body}\n{}", mw.log());
    }
    let blocks: Value = serde_json::from_str(&mw.admin("GET", "/api/v1/blocks?limit=1000").1).unwrap();
    let listed: Vec<&str> =
        blocks["entries"].as_array().unwrap().iter().map(|e| e["network"].as_str().unwrap()).collect();
    for block in &acknowledged.blocks {
        assert!(listed.contains(&block.as_str()), "round {round}: the acknowledged block {block} is gone");
    }
    for (mailbox, rule) in &acknowledged.rules {
        let firewall = mw.admin("GET", &format!("/api/v1/mailboxes/{mailbox}/firewall")).1;
        assert!(
            firewall.contains(&format!("\"address\":\"{rule}\"")),
            "round {round}: the rule {rule} of {mailbox} is gone"
        );
    }
}

#[test]
fn every_acknowledged_change_survives_sigkill_at_random_moments() {
    let rounds: usize = std::env::var("MAILWARDEN_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(12);
    let mut mw = Mailwarden::start();
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let mw_ref: &Mailwarden = &mw;
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| write_until_killed(mw_ref, round, &acknowledged, &stop));
            std::thread::sleep(Duration::from_millis(50 + random_below(500)));
            let _ = std::process::Command::new("kill").arg("-KILL").arg(mw_ref.pid().to_string()).status();
            stop.store(true, Ordering::Relaxed);
            writer.join().expect("the writer");
        });
        mw.kill9();
        integrity_check(&mw);
        mw.restart();
        verify(&mw, &acknowledged.lock().unwrap(), round);
    }
    let totals = acknowledged.lock().unwrap();
    eprintln!(
        "{rounds} kills: {} bans, {} blocks and {} firewall rules acknowledged, all present",
        totals.bans.len(),
        totals.blocks.len(),
        totals.rules.len()
    );
    assert!(!totals.bans.is_empty() && !totals.blocks.is_empty() && !totals.rules.is_empty(), "the stream ran");
}
