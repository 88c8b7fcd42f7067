//! Dovecot's side of the policy port: any bytes as an `allow` or `report` body (the first byte
//! picks the command), parsed and, when they parse, decided by a real `Warden` with firewall
//! rules, lists and bans, whose state accumulates across inputs. Nothing may panic, and every
//! `msg` must be one line of printable ASCII of at most 200 characters.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mailwarden::clock::SystemClock;
use mailwarden::config::Policy;
use mailwarden::geoip::GeoIp;
use mailwarden::metrics::Metrics;
use mailwarden::store::SqliteStore;
use mailwarden::warden::Warden;
use mailwarden::wire::{self, Command};

const POLICY: &str = r#"
[networks]
trusted = ["192.0.2.0/24"]
blocked = ["198.51.100.0/24"]
webmail = ["10.9.0.0/24"]
[mailboxes."alice@example.com"]
default = "block"
rules = [ { action = "allow", network = "203.0.113.0/24" }, { action = "block", address = "2001:db8::1" } ]
[mailboxes."@example.com"]
default = "allow"
protocols = ["imap", "pop3", "submission"]
rules = [ { action = "block", network = "10.0.0.0/8" } ]
"#;

fn warden() -> &'static Warden {
    static WARDEN: OnceLock<Warden> = OnceLock::new();
    WARDEN.get_or_init(|| {
        let policy = Policy::parse_str(POLICY, Path::new("/nonexistent")).expect("the fuzzing policy is valid");
        let metrics = Metrics::new().expect("metrics");
        let geoip = GeoIp::disabled(metrics.geoip.clone());
        let store = Arc::new(SqliteStore::in_memory().expect("an in-memory store"));
        Warden::open(policy, store, Arc::new(SystemClock), metrics, geoip).expect("a warden")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wire::command_from_query(text);
    }
    let Some((first, body)) = data.split_first() else { return };
    let command = if first & 1 == 0 { Command::Allow } else { Command::Report };
    let Ok((attempt, outcome)) = wire::parse_attempt(body, command) else { return };
    let warden = warden();
    match (command, outcome) {
        (Command::Allow, _) => {
            let reply = warden.allow(&attempt);
            assert!(reply.msg.len() <= wire::MAX_MESSAGE_LEN, "msg too long: {:?}", reply.msg);
            assert!(reply.msg.bytes().all(|b| (0x20..0x7f).contains(&b)), "msg not one line of ASCII: {:?}", reply.msg);
            let _ = reply.to_json();
        }
        (Command::Report, Some(outcome)) => {
            let effects = warden.report(&attempt, outcome);
            if let Some(ban) = effects.ban {
                let _ = warden.persist_ban(&ban);
            }
        }
        (Command::Report, None) => unreachable!("a parsed report always has an outcome"),
    }
});
