//! End to end: the mailbox firewall through a real Dovecot 2.3 running our shipped snippet.
//! Addresses reach mailwarden the two ways a mail host sees them: a client bound to a
//! loopback address the fixture GeoIP data places in a country (127.0.0.5 is "CN"), and a
//! trusted proxy passing `x-originating-ip` in IMAP ID, where `real_remote` is the proxy itself
//! and tells webmail (127.0.0.1, listed in networks.webmail) from other proxies (127.0.0.2).

mod support;

use std::net::Ipv4Addr;

use support::dovecot::{self, Dovecot, LoginOutcome, imap_login, imap_login_with_id, pop3_login};
use support::geoip::write_fixtures;
use support::mailwarden::Mailwarden;

const ALICE: &str = "alice@example.com";
const ALICE_PASSWORD: &str = "alice-secret";
const WEBMAIL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER_PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// In the fixture country database: 127.0.0.5 is CN, 127.0.0.6 is FR.
const CHINA: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const FRANCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

struct Stack {
    dovecot: Dovecot,
    mailwarden: Mailwarden,
}

impl Stack {
    fn start() -> Option<Stack> {
        if !dovecot::require_dovecot() {
            return None;
        }
        let mut mailwarden = Mailwarden::configure("");
        let dir = mailwarden.dir.path().join("geoip");
        std::fs::create_dir_all(&dir).unwrap();
        let geoip = write_fixtures(&dir);
        let rules = format!(
            "[geoip]\ncountry_db = {:?}\n\n[networks]\nwebmail = [\"127.0.0.1/32\"]\n\n\
             [mailboxes.\"alice@example.com\"]\ndefault = \"allow\"\nrules = [\n\
               {{ action = \"allow\", network = \"203.0.113.0/24\" }},\n\
               {{ action = \"block\", country = [\"CN\"] }},\n]\n",
            geoip.country
        );
        mailwarden.write_config("", &rules);
        mailwarden.restart();
        let dovecot = Dovecot::start(&mailwarden.policy_url(), &mailwarden.api_key);
        Some(Stack { dovecot, mailwarden })
    }

    fn logs(&self) -> String {
        let tail = |text: String| {
            text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!(
            "\n--- Dovecot log ---\n{}\n--- mailwarden log ---\n{}",
            tail(self.dovecot.log()),
            tail(self.mailwarden.log())
        )
    }

    fn forwarded(&self, proxy: Ipv4Addr, client: &str) -> LoginOutcome {
        imap_login_with_id(
            &self.dovecot,
            proxy,
            &[("name", "e2e"), ("x-originating-ip", client)],
            ALICE,
            ALICE_PASSWORD,
        )
    }

    fn assert_ok(&self, outcome: &LoginOutcome, what: &str) {
        assert!(outcome.ok, "{what}: expected a login, got {:?}{}", outcome.line, self.logs());
    }

    fn assert_refused(&self, outcome: &LoginOutcome, line: &str, what: &str) {
        assert!(
            !outcome.ok && outcome.line == line,
            "{what}: expected {line:?}, got {:?}{}",
            outcome.line,
            self.logs()
        );
    }
}

#[test]
fn the_mailbox_firewall_refuses_mail_apps_from_a_blocked_country_and_names_the_rule() {
    let Some(stack) = Stack::start() else { return };
    let rule_2 = "a NO [ALERT] Access denied by email firewall rule no. 2";

    let from_china = imap_login(&stack.dovecot, CHINA, ALICE, ALICE_PASSWORD);
    stack.assert_refused(&from_china, rule_2, "a mail app connecting from CN");
    let pop3 = pop3_login(&stack.dovecot, CHINA, ALICE, ALICE_PASSWORD);
    assert_eq!(pop3.line, "-ERR [AUTH] Access denied by email firewall rule no. 2", "{}", stack.logs());
    stack.assert_ok(&imap_login(&stack.dovecot, FRANCE, ALICE, ALICE_PASSWORD), "a mail app from FR");

    let proxied_china = stack.forwarded(OTHER_PROXY, "198.51.100.7");
    stack.assert_refused(&proxied_china, rule_2, "CN through a proxy that is not webmail");
    stack.assert_ok(&stack.forwarded(OTHER_PROXY, "203.0.113.7"), "the allowed network through the proxy");
    stack.assert_ok(&stack.forwarded(WEBMAIL, "198.51.100.7"), "CN through webmail");

    // Wrong passwords from CN are refused before the password is checked: never counted.
    let before = stack.mailwarden.reports_answered();
    for attempt in 1..=6 {
        let outcome = imap_login(&stack.dovecot, CHINA, ALICE, &format!("wrong-{attempt}"));
        stack.assert_refused(&outcome, rule_2, "a wrong password from CN");
    }
    stack.mailwarden.wait_for_reports(before + 6);
    stack.assert_ok(&stack.forwarded(WEBMAIL, "127.0.0.5"), "CN's address is not banned");
}

#[test]
fn a_mailbox_with_a_non_ascii_capital_is_held_to_its_rules_whichever_way_the_user_types_it() {
    let Some(stack) = Stack::start() else { return };
    let rule = r#"{"action":"block","country":["CN"]}"#;
    let (status, body) =
        stack.mailwarden.admin_post("/api/v1/mailboxes/J%C3%B6rg@example.com/firewall/rules", Some(rule));
    assert_eq!(status, 201, "{body}");
    // Dovecot lowercases the ASCII letters only: JÖRG@Example.com reaches mailwarden as
    // jÖrg@example.com.
    for typed in ["jörg@example.com", "Jörg@Example.com", "JÖRG@EXAMPLE.COM"] {
        let outcome = pop3_login(&stack.dovecot, CHINA, typed, "whatever");
        assert_eq!(outcome.line, "-ERR [AUTH] Access denied by email firewall rule no. 1", "{typed}{}", stack.logs());
    }
    let events = stack.mailwarden.cli(&["events", "--login", "JÖRG@example.com", "--json"]);
    let events: serde_json::Value = serde_json::from_slice(&events.stdout).expect("events as JSON");
    let logins: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["login"].as_str().unwrap()).collect();
    assert_eq!(logins, ["jÖrg@example.com", "jörg@example.com", "jörg@example.com"], "as Dovecot sent them");
}

#[test]
fn moving_a_rule_through_the_api_changes_the_outcome_without_a_restart() {
    let Some(stack) = Stack::start() else { return };
    let (status, body) = stack
        .mailwarden
        .admin_post("/api/v1/mailboxes/alice@example.com/firewall/rules/2/move", Some(r#"{"direction":"up"}"#));
    assert_eq!(status, 200, "{body}");
    let proxied = stack.forwarded(OTHER_PROXY, "198.51.100.7");
    stack.assert_refused(&proxied, "a NO [ALERT] Access denied by email firewall rule no. 1", "after the move");

    let output = stack.mailwarden.cli(&["events", "--login", ALICE, "--reason", "firewall_rule"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        text.contains("198.51.100.7") && text.contains("rule 1") && text.contains("imap"),
        "`mailwarden events` shows the refusal:\n{text}"
    );
}
