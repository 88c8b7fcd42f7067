//! End to end: a real Dovecot 2.3 running our shipped `dovecot/2.3/95-mailwarden.conf` asks a
//! real mailwarden, and raw IMAP and POP3 clients log in from different 127.0.0.x addresses.
//! Each test starts its own mailwarden and Dovecot. Without Dovecot the tests skip with a note,
//! except in CI (`CI=true`), where they fail.

mod support;

use std::net::Ipv4Addr;

use support::dovecot::{self, Dovecot, LoginOutcome, imap_login, imap_login_with_id, pop3_login};
use support::mailwarden::Mailwarden;

const ALICE: &str = "alice@example.com";
const ALICE_PASSWORD: &str = "alice-secret";
const BOB: &str = "bob@example.com";
const BOB_PASSWORD: &str = "bob-secret";

/// mailwarden's default `autoban.max_failures`.
const MAX_FAILURES: usize = 5;

/// One mailwarden and the Dovecot that asks it. Dovecot is declared first so it stops first.
struct Stack {
    dovecot: Dovecot,
    mailwarden: Mailwarden,
}

impl Stack {
    /// None when Dovecot is not installed and this is not CI (the test then passes as skipped).
    fn start() -> Option<Stack> {
        if !dovecot::require_dovecot() {
            return None;
        }
        let mailwarden = Mailwarden::start();
        let dovecot = Dovecot::start(&mailwarden.policy_url(), &mailwarden.api_key);
        Some(Stack { dovecot, mailwarden })
    }

    /// The end of both logs, appended to every assertion message so a red CI run can be
    /// diagnosed from its output alone.
    fn logs(&self) -> String {
        format!(
            "\n--- Dovecot log (tail) ---\n{}\n--- mailwarden log (tail) ---\n{}",
            tail(&self.dovecot.log(), 40),
            tail(&self.mailwarden.log(), 40)
        )
    }

    fn assert_logged_in(&self, outcome: &LoginOutcome, attempt: &str) {
        assert!(outcome.ok, "{attempt}: expected a successful login, got {:?}{}", outcome.line, self.logs());
    }

    /// A plain wrong-password failure, not a policy refusal.
    fn assert_wrong_password(&self, outcome: &LoginOutcome, attempt: &str) {
        let plain_failure = outcome.line.starts_with("a NO [AUTHENTICATIONFAILED]")
            || outcome.line == "-ERR [AUTH] Authentication failed.";
        assert!(plain_failure, "{attempt}: expected a wrong-password failure, got {:?}{}", outcome.line, self.logs());
    }

    /// Refused by mailwarden's ban on `source`, with its message shown to the IMAP user.
    fn assert_banned_over_imap(&self, outcome: &LoginOutcome, source: &str, attempt: &str) {
        let banned = !outcome.ok
            && outcome.line.starts_with("a NO [ALERT] ")
            && outcome.line.contains(&format!("Too many failed logins from {source};"));
        assert!(
            banned,
            "{attempt}: expected `a NO [ALERT] Too many failed logins from {source}; ...`, got {:?}{}",
            outcome.line,
            self.logs()
        );
    }

    fn assert_banned_over_pop3(&self, outcome: &LoginOutcome, source: &str, attempt: &str) {
        let banned = !outcome.ok
            && outcome.line.starts_with("-ERR [AUTH] ")
            && outcome.line.contains(&format!("Too many failed logins from {source};"));
        assert!(
            banned,
            "{attempt}: expected `-ERR [AUTH] Too many failed logins from {source}; ...`, got {:?}{}",
            outcome.line,
            self.logs()
        );
    }

    /// `count` IMAP logins as alice from `from`, each with a different wrong password (a
    /// repeated one could count as a single guess).
    fn fail_imap_logins(&self, from: Ipv4Addr, count: usize) {
        let before = self.mailwarden.reports_answered();
        for attempt in 1..=count {
            let outcome = imap_login(&self.dovecot, from, ALICE, &format!("wrong-{attempt}"));
            self.assert_wrong_password(&outcome, &format!("wrong IMAP password {attempt} from {from}"));
        }
        self.mailwarden.wait_for_reports(before + count as u64);
    }

    fn fail_pop3_logins(&self, from: Ipv4Addr, count: usize) {
        let before = self.mailwarden.reports_answered();
        for attempt in 1..=count {
            let outcome = pop3_login(&self.dovecot, from, ALICE, &format!("wrong-{attempt}"));
            self.assert_wrong_password(&outcome, &format!("wrong POP3 password {attempt} from {from}"));
        }
        self.mailwarden.wait_for_reports(before + count as u64);
    }

    /// With `auth_policy_reject_on_fail = no` a policy request that fails (refused, timed out,
    /// 401, unparsable reply) silently lets the login through, so "not banned" alone proves
    /// nothing: every test ends by checking that Dovecot logged no policy error.
    fn assert_no_policy_errors(&self) {
        let log = self.dovecot.log();
        let errors: Vec<&str> =
            log.lines().filter(|line| line.contains(": Error: ") && line.contains("Policy server")).collect();
        assert!(errors.is_empty(), "Dovecot logged policy errors:\n{}{}", errors.join("\n"), self.logs());
    }

    /// Runs the mailwarden CLI and insists it succeeds; returns its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let output = self.mailwarden.cli(args);
        assert!(
            output.status.success(),
            "mailwarden {} failed ({}):\nstdout: {}\nstderr: {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether `mailwarden bans --json` lists a ban on `source`.
    fn bans_list(&self, source: &str) -> bool {
        let stdout = self.cli(&["bans", "--json"]);
        let answer: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("`mailwarden bans --json` printed no JSON ({e}):\n{stdout}{}", self.logs()));
        let bans = answer["bans"]
            .as_array()
            .unwrap_or_else(|| panic!("`mailwarden bans --json` has no \"bans\" list:\n{stdout}{}", self.logs()));
        bans.iter().any(|ban| ban["source"] == source)
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn five_wrong_passwords_ban_the_source_on_imap_and_pop3_until_it_is_unbanned() {
    let Some(stack) = Stack::start() else { return };
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let bystander = Ipv4Addr::new(127, 0, 0, 3);

    stack.fail_imap_logins(attacker, MAX_FAILURES);

    let right_password = imap_login(&stack.dovecot, attacker, ALICE, ALICE_PASSWORD);
    stack.assert_banned_over_imap(&right_password, "127.0.0.2", "alice's right password from the banned source");
    let other_user = imap_login(&stack.dovecot, attacker, BOB, BOB_PASSWORD);
    stack.assert_banned_over_imap(&other_user, "127.0.0.2", "bob over IMAP from the banned source");
    let other_user_pop3 = pop3_login(&stack.dovecot, attacker, BOB, BOB_PASSWORD);
    stack.assert_banned_over_pop3(&other_user_pop3, "127.0.0.2", "bob over POP3 from the banned source");

    let elsewhere = imap_login(&stack.dovecot, bystander, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&elsewhere, "alice from another address");

    stack.cli(&["unban", "127.0.0.2"]);
    let after_unban = imap_login(&stack.dovecot, attacker, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&after_unban, "alice from 127.0.0.2 after `mailwarden unban 127.0.0.2`");
    stack.assert_no_policy_errors();
}

#[test]
fn four_wrong_passwords_do_not_ban_the_source() {
    let Some(stack) = Stack::start() else { return };
    let client = Ipv4Addr::new(127, 0, 0, 2);

    stack.fail_imap_logins(client, MAX_FAILURES - 1);

    let right_password = imap_login(&stack.dovecot, client, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&right_password, "alice's right password after four failures");
    stack.assert_no_policy_errors();
}

#[test]
fn a_ban_survives_kill_9_and_restart() {
    let Some(mut stack) = Stack::start() else {
        return;
    };
    let attacker = Ipv4Addr::new(127, 0, 0, 4);

    stack.fail_imap_logins(attacker, MAX_FAILURES);
    stack.mailwarden.kill9();
    stack.mailwarden.restart();

    let right_password = imap_login(&stack.dovecot, attacker, ALICE, ALICE_PASSWORD);
    stack.assert_banned_over_imap(&right_password, "127.0.0.4", "alice's right password after mailwarden's restart");
    assert!(stack.bans_list("127.0.0.4"), "`mailwarden bans --json` does not list 127.0.0.4{}", stack.logs());
    stack.assert_no_policy_errors();
}

#[test]
fn pop3_failures_count_towards_a_ban_that_also_blocks_imap() {
    let Some(stack) = Stack::start() else { return };
    let attacker = Ipv4Addr::new(127, 0, 0, 5);

    stack.fail_pop3_logins(attacker, MAX_FAILURES);

    let over_imap = imap_login(&stack.dovecot, attacker, ALICE, ALICE_PASSWORD);
    stack.assert_banned_over_imap(&over_imap, "127.0.0.5", "alice over IMAP after five POP3 failures");
    stack.assert_no_policy_errors();
}

#[test]
fn the_address_a_trusted_proxy_forwards_is_banned_instead_of_the_proxy() {
    let Some(stack) = Stack::start() else { return };
    // The test Dovecot trusts 127.0.0.0/8 (login_trusted_networks), like a webmail's IMAP proxy.
    let proxy = Ipv4Addr::LOCALHOST;
    let forwarded = [("name", "mailwarden-e2e-webmail"), ("x-originating-ip", "203.0.113.9")];

    let before = stack.mailwarden.reports_answered();
    for attempt in 1..=MAX_FAILURES {
        let outcome = imap_login_with_id(&stack.dovecot, proxy, &forwarded, ALICE, &format!("wrong-{attempt}"));
        stack.assert_wrong_password(&outcome, &format!("wrong password {attempt} forwarded for 203.0.113.9"));
    }

    stack.mailwarden.wait_for_reports(before + MAX_FAILURES as u64);
    let forwarded_again = imap_login_with_id(&stack.dovecot, proxy, &forwarded, ALICE, ALICE_PASSWORD);
    stack.assert_banned_over_imap(&forwarded_again, "203.0.113.9", "alice's right password forwarded for 203.0.113.9");
    let proxy_itself = imap_login(&stack.dovecot, proxy, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&proxy_itself, "alice from the proxy's own address without ID");
    assert!(stack.bans_list("203.0.113.9"), "`mailwarden bans --json` does not list 203.0.113.9{}", stack.logs());
    assert!(!stack.bans_list("127.0.0.1"), "`mailwarden bans --json` lists the proxy 127.0.0.1{}", stack.logs());
    stack.assert_no_policy_errors();
}
