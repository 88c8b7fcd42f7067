//! End to end through a real Dovecot: telling a stale device from an attacker. An office
//! address where a phone keeps retrying an old password is never banned and its colleagues
//! keep logging in; an attacker trying different passwords is banned on the fifth; an account
//! failing from twelve addresses is under attack, so a new address is refused (or delayed)
//! while the account's usual address logs in as always.

mod support;

use std::net::Ipv4Addr;
use std::time::Instant;

use support::dovecot::{self, Dovecot, LoginOutcome, imap_login, imap_login_with_id, pop3_login};
use support::mailwarden::Mailwarden;

const STALE_LINE: &str = "a NO [ALERT] Your mail app keeps using an old password for alice@example.com; update it in the app's account settings";

struct Stack {
    dovecot: Dovecot,
    mailwarden: Mailwarden,
}

impl Stack {
    fn start(extra: &str) -> Option<Stack> {
        if !dovecot::require_dovecot() {
            return None;
        }
        let mailwarden = Mailwarden::start_with(extra);
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

    fn assert_ok(&self, outcome: &LoginOutcome, what: &str) {
        assert!(outcome.ok, "{what}: expected a login, got {:?}{}", outcome.line, self.logs());
    }

    fn cli(&self, args: &[&str]) -> String {
        let output = self.mailwarden.cli(args);
        assert!(output.status.success(), "{args:?}: {}{}", String::from_utf8_lossy(&output.stderr), self.logs());
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

#[test]
fn a_stale_device_is_quarantined_without_banning_its_office_while_an_attacker_is_banned_on_the_fifth_password() {
    let Some(stack) = Stack::start("") else {
        return;
    };
    let office = Ipv4Addr::new(127, 0, 0, 2);
    let phone = [("name", "Old Phone Mail"), ("version", "9")];
    let colleagues =
        [("bob@example.com", "bob-secret"), ("carol@example.com", "carol-secret"), ("dave@example.com", "dave-secret")];

    for attempt in 1..=50 {
        let outcome = imap_login_with_id(&stack.dovecot, office, &phone, "alice@example.com", "alice-OLD-password");
        assert!(!outcome.ok, "attempt {attempt} with the old password logged in?{}", stack.logs());
        if attempt > 3 {
            assert_eq!(outcome.line, STALE_LINE, "attempt {attempt}{}", stack.logs());
        }
        if attempt % 10 == 0 {
            for (login, password) in colleagues {
                stack.assert_ok(
                    &imap_login(&stack.dovecot, office, login, password),
                    &format!("{login} after {attempt} stale attempts"),
                );
            }
            stack.assert_ok(&pop3_login(&stack.dovecot, office, "bob@example.com", "bob-secret"), "bob over POP3");
        }
    }
    assert!(!stack.cli(&["bans"]).contains("127.0.0.2"), "the office was never banned");
    stack.assert_ok(
        &imap_login(&stack.dovecot, office, "alice@example.com", "alice-secret"),
        "alice's right password from the office",
    );
    let after = imap_login_with_id(&stack.dovecot, office, &phone, "alice@example.com", "alice-OLD-password");
    assert_eq!(
        after.line,
        "a NO [AUTHENTICATIONFAILED] Authentication failed.",
        "the successful login lifted the quarantine{}",
        stack.logs()
    );

    let attacker = Ipv4Addr::new(127, 0, 0, 3);
    let before = stack.mailwarden.reports_answered();
    for attempt in 1..=5 {
        let outcome = imap_login(&stack.dovecot, attacker, "alice@example.com", &format!("guess-{attempt}"));
        assert_eq!(
            outcome.line,
            "a NO [AUTHENTICATIONFAILED] Authentication failed.",
            "guess {attempt}{}",
            stack.logs()
        );
    }
    stack.mailwarden.wait_for_reports(before + 5);
    let banned = imap_login(&stack.dovecot, attacker, "alice@example.com", "alice-secret");
    assert!(
        banned.line.starts_with("a NO [ALERT] Too many failed logins from 127.0.0.3;"),
        "{:?}{}",
        banned.line,
        stack.logs()
    );

    let why = stack.cli(&["why", "127.0.0.2"]);
    // Four accounts logged in from the office: it is banned at 5 + 4 x 2 distinct guesses.
    assert!(why.contains("127.0.0.2 has 1 of 13") || why.contains("127.0.0.2 has 0 of 13"), "{why}");
    let why_attacker = stack.cli(&["why", "127.0.0.3"]);
    assert!(
        why_attacker.contains("banned until")
            && why_attacker.contains("led to the ban: a wrong password for alice@example.com over imap"),
        "{why_attacker}"
    );
    let events = stack.cli(&["events", "--reason", "stale_password"]);
    assert!(events.contains("127.0.0.2") && events.contains("alice@example.com"), "{events}");
}

#[test]
fn an_account_failing_from_twelve_addresses_refuses_new_addresses_while_its_usual_one_logs_in() {
    let Some(stack) = Stack::start("[account_protection]\naction = \"reject\"\n") else {
        return;
    };
    let usual = Ipv4Addr::new(127, 0, 0, 30);
    stack.assert_ok(
        &imap_login(&stack.dovecot, usual, "carol@example.com", "carol-secret"),
        "carol from her usual address",
    );
    for i in 10..22u8 {
        let outcome = imap_login(&stack.dovecot, Ipv4Addr::new(127, 0, 0, i), "carol@example.com", "nope");
        assert!(!outcome.ok);
    }
    let new_place = imap_login(&stack.dovecot, Ipv4Addr::new(127, 0, 0, 40), "carol@example.com", "carol-secret");
    assert!(
        new_place.line.starts_with("a NO [ALERT] carol@example.com is under attack"),
        "{:?}{}",
        new_place.line,
        stack.logs()
    );
    stack.assert_ok(
        &imap_login(&stack.dovecot, usual, "carol@example.com", "carol-secret"),
        "carol from her usual address during the attack",
    );
    stack.assert_ok(
        &imap_login(&stack.dovecot, Ipv4Addr::new(127, 0, 0, 40), "bob@example.com", "bob-secret"),
        "another account from the new address",
    );
    let why = stack.cli(&["why", "127.0.0.40", "--login", "carol@example.com"]);
    assert!(why.contains("carol@example.com is under attack from many addresses"), "{why}");
}

#[test]
fn under_attack_a_new_address_is_delayed_then_let_in() {
    let Some(stack) = Stack::start("[account_protection]\nsources = 3\ndelay = \"3s\"\n") else {
        return;
    };
    stack.assert_ok(
        &imap_login(&stack.dovecot, Ipv4Addr::new(127, 0, 0, 30), "dave@example.com", "dave-secret"),
        "dave's usual address",
    );
    for i in 10..13u8 {
        assert!(!imap_login(&stack.dovecot, Ipv4Addr::new(127, 0, 0, i), "dave@example.com", "nope").ok);
    }
    let started = Instant::now();
    stack.assert_ok(
        &imap_login(&stack.dovecot, Ipv4Addr::new(127, 0, 0, 41), "dave@example.com", "dave-secret"),
        "a new address, after the tarpit",
    );
    assert!(
        started.elapsed().as_secs_f64() >= 2.5,
        "the login from a new address was delayed (took {:?})",
        started.elapsed()
    );
}
