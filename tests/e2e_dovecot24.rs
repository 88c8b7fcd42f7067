//! End to end with Dovecot 2.4: Debian 13's real Dovecot, in a cached Debian 13 root
//! (`tests/support/dovecot24.rs`), runs our shipped `dovecot/2.4/95-mailwarden.conf` and asks a
//! real mailwarden, while raw IMAP and POP3 clients log in from different 127.0.0.x addresses.
//! The seed scenario of the 2.3 suite, then what 2.4's `fail_type` changes: internal failures,
//! unknown accounts, expired and disabled accounts.
//! Each test starts its own mailwarden and Dovecot. Without the root (and no way to build it)
//! the tests skip with a note, except in CI (`CI=true`), where they fail.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::dovecot::{LoginOutcome, imap_login, imap_login_with_id, pop3_login};
use support::dovecot24::{self, Dovecot24, EXPIRED_ACCOUNT, Setup};
use support::mailwarden::Mailwarden;

const ALICE: &str = "alice@example.com";
const ALICE_PASSWORD: &str = "alice-secret";
const BOB: &str = "bob@example.com";
const BOB_PASSWORD: &str = "bob-secret";
const DAVE: &str = "dave@example.com";
const DAVE_PASSWORD: &str = "dave-secret";

/// mailwarden's default `autoban.max_failures`.
const MAX_FAILURES: usize = 5;

/// One mailwarden and the Dovecot 2.4 that asks it. Dovecot is declared first so it stops first.
struct Stack {
    dovecot: Dovecot24,
    mailwarden: Mailwarden,
}

impl Stack {
    /// None when there is no Dovecot 2.4 root and this is not CI (the test then passes as skipped).
    fn start() -> Option<Stack> {
        Stack::start_with("", &Setup::default())
    }

    /// mailwarden with `extra_toml` added to its policy, Dovecot authenticating as `setup` says.
    fn start_with(extra_toml: &str, setup: &Setup) -> Option<Stack> {
        let root = dovecot24::require_dovecot24()?;
        let mailwarden = Mailwarden::start_with(extra_toml);
        let dovecot = Dovecot24::start_with(&root, &mailwarden.policy_url(), &mailwarden.api_key, setup);
        Some(Stack { dovecot, mailwarden })
    }

    /// The end of both logs, appended to every assertion message so a red CI run can be
    /// diagnosed from its output alone.
    fn logs(&self) -> String {
        format!(
            "\n--- Dovecot 2.4 log (tail) ---\n{}\n--- mailwarden log (tail) ---\n{}",
            tail(&without_debug(&self.dovecot.log()), 40),
            tail(&self.mailwarden.log(), 40)
        )
    }

    fn assert_logged_in(&self, outcome: &LoginOutcome, attempt: &str) {
        assert!(outcome.ok, "{attempt}: expected a successful login, got {:?}{}", outcome.line, self.logs());
    }

    /// A plain authentication failure, not a policy refusal.
    fn assert_wrong_password(&self, outcome: &LoginOutcome, attempt: &str) {
        let plain_failure = outcome.line == "a NO [AUTHENTICATIONFAILED] Authentication failed."
            || outcome.line == "-ERR [AUTH] Authentication failed.";
        assert!(plain_failure, "{attempt}: expected an authentication failure, got {:?}{}", outcome.line, self.logs());
    }

    /// Refused by mailwarden's ban on `source`, with its message shown to the user.
    fn assert_banned(&self, outcome: &LoginOutcome, source: &str, attempt: &str) {
        let shown = ["a NO [ALERT] ", "-ERR [AUTH] "].iter().any(|prefix| outcome.line.starts_with(prefix));
        let banned = !outcome.ok && shown && outcome.line.contains(&format!("Too many failed logins from {source};"));
        assert!(
            banned,
            "{attempt}: expected `a NO [ALERT]` or `-ERR [AUTH]` + `Too many failed logins from {source}; ...`, got {:?}{}",
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

    /// `mailwarden <args> --json`, parsed.
    fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.cli(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("`mailwarden {}` printed no JSON ({e}):\n{stdout}{}", args.join(" "), self.logs())
        })
    }

    /// The `fail_type` of every report Dovecot sent for `login` (needs
    /// `Setup::log_policy_requests`), waiting for at least `count`.
    fn reported_fail_types(&self, login: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let fail_types: Vec<String> = self
                .dovecot
                .policy_requests(0)
                .iter()
                .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
                .filter(|json| json.get("success").is_some() && json["login"] == login)
                .map(|json| json["fail_type"].as_str().unwrap_or("(none)").to_owned())
                .collect();
            if fail_types.len() >= count || Instant::now() > deadline {
                return fail_types;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Dovecot reported `login`'s failures with these `fail_type`s, in order: the test is
    /// about what mailwarden does with them, so first make sure Dovecot 2.4 really sent them.
    fn assert_reported(&self, login: &str, fail_types: &[&str]) {
        let reported = self.reported_fail_types(login, fail_types.len());
        assert_eq!(reported, fail_types, "the fail_type of each report Dovecot sent for {login}{}", self.logs());
    }

    /// Whether `mailwarden bans --json` lists a ban on `source`.
    fn bans_list(&self, source: &str) -> bool {
        let answer = self.cli_json(&["bans"]);
        let bans = answer["bans"]
            .as_array()
            .unwrap_or_else(|| panic!("`mailwarden bans --json` has no \"bans\" list:\n{answer}{}", self.logs()));
        bans.iter().any(|ban| ban["source"] == source)
    }

    /// The block-log event `mailwarden events --reason <reason>` shows for `login`. The block
    /// log is written in the background, so this waits for it a little.
    fn event(&self, reason: &str, login: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = self.cli_json(&["events", "--reason", reason]);
            let found = answer["events"]
                .as_array()
                .and_then(|events| events.iter().find(|event| event["login"] == login))
                .cloned();
            if let Some(event) = found {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "`mailwarden events --reason {reason}` shows nothing for {login}:\n{answer:#}{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Dovecot's log without its debug lines (`Setup::log_policy_requests` turns on `auth_debug`,
/// whose HTTP-client lines would fill any tail).
fn without_debug(log: &str) -> String {
    log.lines().filter(|line| !line.contains(": Debug: ")).collect::<Vec<_>>().join("\n")
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
    stack.assert_banned(&right_password, "127.0.0.2", "alice's right password from the banned source");
    let other_user = imap_login(&stack.dovecot, attacker, BOB, BOB_PASSWORD);
    stack.assert_banned(&other_user, "127.0.0.2", "bob over IMAP from the banned source");
    let other_user_pop3 = pop3_login(&stack.dovecot, attacker, BOB, BOB_PASSWORD);
    stack.assert_banned(&other_user_pop3, "127.0.0.2", "bob over POP3 from the banned source");

    let elsewhere = imap_login(&stack.dovecot, bystander, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&elsewhere, "alice from another address");

    stack.cli(&["unban", "127.0.0.2"]);
    let after_unban = imap_login(&stack.dovecot, attacker, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&after_unban, "alice from 127.0.0.2 after `mailwarden unban 127.0.0.2`");
    stack.assert_no_policy_errors();
}

#[test]
fn pop3_failures_count_towards_a_ban_that_also_blocks_imap() {
    let Some(stack) = Stack::start() else { return };
    let attacker = Ipv4Addr::new(127, 0, 0, 5);

    stack.fail_pop3_logins(attacker, MAX_FAILURES);

    let over_imap = imap_login(&stack.dovecot, attacker, ALICE, ALICE_PASSWORD);
    stack.assert_banned(&over_imap, "127.0.0.5", "alice over IMAP after five POP3 failures");
    let over_pop3 = pop3_login(&stack.dovecot, attacker, BOB, BOB_PASSWORD);
    stack.assert_banned(&over_pop3, "127.0.0.5", "bob over POP3 after five POP3 failures");
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
    stack.assert_banned(&forwarded_again, "203.0.113.9", "alice's right password forwarded for 203.0.113.9");
    let proxy_itself = imap_login(&stack.dovecot, proxy, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&proxy_itself, "alice from the proxy's own address without ID");
    assert!(!stack.bans_list("127.0.0.1"), "`mailwarden bans --json` lists the proxy 127.0.0.1{}", stack.logs());
    stack.assert_no_policy_errors();
}

/// The exact bodies Dovecot 2.4.1 sends with the shipped snippet: the default attributes plus
/// `real_remote`, every value a string, `fail_type` empty until the login is decided, then
/// `success`/`policy_reject` in reports and `tls` last. `pwhash` is
/// sha256(nonce ‖ login ‖ NUL ‖ password) cut to its first 32 bits, as in 2.3.
#[test]
fn dovecot_2_4_sends_the_snippets_attributes_and_fail_type() {
    let setup = Setup { log_policy_requests: true, ..Setup::default() };
    let Some(stack) = Stack::start_with("[networks]\nblocked = [\"127.0.0.13/32\"]\n", &setup) else {
        return;
    };
    let client = Ipv4Addr::new(127, 0, 0, 6);
    let blocked = Ipv4Addr::new(127, 0, 0, 13);

    let right = imap_login(&stack.dovecot, client, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&right, "alice's right password");
    let wrong = imap_login(&stack.dovecot, client, ALICE, "wrong-1");
    stack.assert_wrong_password(&wrong, "alice's wrong password");
    let mail_app = [("name", "MyClient"), ("version", "1.2")];
    let refused = imap_login_with_id(&stack.dovecot, blocked, &mail_app, ALICE, ALICE_PASSWORD);
    assert_eq!(
        refused.line,
        "a NO [ALERT] Logins from 127.0.0.13 are blocked by the administrator",
        "alice from a blocked address{}",
        stack.logs()
    );

    let bodies = stack.dovecot.policy_requests(7);
    eprintln!("Dovecot 2.4 policy request bodies:\n{}", bodies.join("\n"));
    for body in &bodies {
        let json: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("Dovecot sent invalid JSON ({e}): {body}{}", stack.logs()));
        assert!(json["session_id"].as_str().is_some_and(|id| !id.is_empty()), "no session_id in {body}");
    }
    // The text, not the parsed JSON, so that the key order is checked too; session_id is
    // random per connection.
    let normalised: Vec<String> = bodies.iter().map(|body| replace_session_id(body)).collect();
    let allow_right = r#"{"device_id":"","fail_type":"","login":"alice@example.com","protocol":"imap","pwhash":"f4b65160","real_remote":"127.0.0.6","remote":"127.0.0.6","session_id":"S","tls":false}"#;
    let report_right = r#"{"device_id":"","fail_type":"","login":"alice@example.com","protocol":"imap","pwhash":"f4b65160","real_remote":"127.0.0.6","remote":"127.0.0.6","session_id":"S","success":true,"policy_reject":false,"tls":false}"#;
    let allow_wrong = r#"{"device_id":"","fail_type":"","login":"alice@example.com","protocol":"imap","pwhash":"0ae57b39","real_remote":"127.0.0.6","remote":"127.0.0.6","session_id":"S","tls":false}"#;
    let report_wrong = r#"{"device_id":"","fail_type":"credentials","login":"alice@example.com","protocol":"imap","pwhash":"0ae57b39","real_remote":"127.0.0.6","remote":"127.0.0.6","session_id":"S","success":false,"policy_reject":false,"tls":false}"#;
    let allow_blocked = r#"{"device_id":"\"name\" \"MyClient\" \"version\" \"1.2\"","fail_type":"","login":"alice@example.com","protocol":"imap","pwhash":"f4b65160","real_remote":"127.0.0.13","remote":"127.0.0.13","session_id":"S","tls":false}"#;
    let report_blocked = r#"{"device_id":"\"name\" \"MyClient\" \"version\" \"1.2\"","fail_type":"policy","login":"alice@example.com","protocol":"imap","pwhash":"f4b65160","real_remote":"127.0.0.13","remote":"127.0.0.13","session_id":"S","success":false,"policy_reject":true,"tls":false}"#;
    assert_eq!(
        normalised,
        [allow_right, allow_right, report_right, allow_wrong, report_wrong, allow_blocked, report_blocked],
        "the policy requests of a right password, a wrong one and a login from a blocked address{}",
        stack.logs()
    );
    stack.assert_no_policy_errors();
}

/// `"session_id":"..."` → `"session_id":"S"`.
fn replace_session_id(body: &str) -> String {
    const KEY: &str = r#""session_id":""#;
    let Some(start) = body.find(KEY).map(|at| at + KEY.len()) else {
        return body.to_owned();
    };
    let end = body[start..].find('"').map_or(body.len(), |len| start + len);
    format!("{}S{}", &body[..start], &body[end..])
}

/// A passdb that cannot be read fails every login as `internal`: the user did nothing wrong,
/// so however many such failures a source has, it is not banned once the passdb works again.
#[test]
fn internal_failures_never_count_toward_a_ban() {
    let setup = Setup { broken_passdb: true, log_policy_requests: true, ..Setup::default() };
    let Some(stack) = Stack::start_with("", &setup) else {
        return;
    };
    let client = Ipv4Addr::new(127, 0, 0, 7);

    for attempt in 1..=2 * MAX_FAILURES {
        let password = format!("guess-{attempt}");
        let (outcome, expected) = if attempt % 2 == 0 {
            (pop3_login(&stack.dovecot, client, ALICE, &password), "-ERR [SYS/TEMP] Temporary authentication failure.")
        } else {
            (
                imap_login(&stack.dovecot, client, ALICE, &password),
                "a NO [UNAVAILABLE] Temporary authentication failure.",
            )
        };
        assert!(
            outcome.line.starts_with(expected),
            "login {attempt} with the passdb unreadable: expected {expected:?}, got {:?}{}",
            outcome.line,
            stack.logs()
        );
    }

    stack.assert_reported(ALICE, &["internal"; 2 * MAX_FAILURES]);

    stack.dovecot.repair_passdb();
    let imap = imap_login(&stack.dovecot, client, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&imap, "alice over IMAP once the passdb is readable");
    let pop3 = pop3_login(&stack.dovecot, client, BOB, BOB_PASSWORD);
    stack.assert_logged_in(&pop3, "bob over POP3 once the passdb is readable");
    assert!(
        !stack.bans_list("127.0.0.7"),
        "`mailwarden bans --json` lists 127.0.0.7 after internal failures only{}",
        stack.logs()
    );
    stack.assert_no_policy_errors();
}

/// Unknown logins (`fail_type = "account"`) count like wrong passwords: three do not ban.
#[test]
fn unknown_accounts_count_once_by_default() {
    let setup = Setup { log_policy_requests: true, ..Setup::default() };
    let Some(stack) = Stack::start_with("", &setup) else {
        return;
    };
    let sprayer = Ipv4Addr::new(127, 0, 0, 8);
    let attacker = Ipv4Addr::new(127, 0, 0, 9);

    let before = stack.mailwarden.reports_answered();
    for number in 1..=3 {
        let outcome = imap_login(&stack.dovecot, sprayer, &format!("nobody{number}@example.com"), "guess");
        stack.assert_wrong_password(&outcome, &format!("unknown login {number} from {sprayer}"));
    }
    stack.mailwarden.wait_for_reports(before + 3);
    let right_password = imap_login(&stack.dovecot, sprayer, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&right_password, "alice after three unknown logins from her address");

    let before = stack.mailwarden.reports_answered();
    for number in 1..=MAX_FAILURES {
        let outcome = pop3_login(&stack.dovecot, attacker, &format!("nobody{number}@example.com"), "guess");
        stack.assert_wrong_password(&outcome, &format!("unknown login {number} from {attacker}"));
    }
    stack.assert_reported("nobody1@example.com", &["account", "account"]);
    stack.mailwarden.wait_for_reports(before + MAX_FAILURES as u64);
    let after_five = imap_login(&stack.dovecot, attacker, ALICE, ALICE_PASSWORD);
    stack.assert_banned(&after_five, "127.0.0.9", "alice after five unknown logins from her address");
    stack.assert_no_policy_errors();
}

/// With `unknown_accounts_count_double`, spraying unknown logins is banned twice as fast:
/// three count as six.
#[test]
fn unknown_accounts_count_double_when_the_policy_says_so() {
    let setup = Setup { log_policy_requests: true, ..Setup::default() };
    let Some(stack) = Stack::start_with("[autoban]\nunknown_accounts_count_double = true\n", &setup) else {
        return;
    };
    let sprayer = Ipv4Addr::new(127, 0, 0, 10);

    let before = stack.mailwarden.reports_answered();
    for number in 1..=3 {
        let outcome = if number == 2 {
            pop3_login(&stack.dovecot, sprayer, &format!("nobody{number}@example.com"), "guess")
        } else {
            imap_login(&stack.dovecot, sprayer, &format!("nobody{number}@example.com"), "guess")
        };
        stack.assert_wrong_password(&outcome, &format!("unknown login {number} from {sprayer}"));
    }
    stack.assert_reported("nobody3@example.com", &["account"]);
    stack.mailwarden.wait_for_reports(before + 3);

    let right_password = imap_login(&stack.dovecot, sprayer, ALICE, ALICE_PASSWORD);
    stack.assert_banned(&right_password, "127.0.0.10", "alice after three unknown logins counted double");
    assert!(stack.bans_list("127.0.0.10"), "`mailwarden bans --json` does not list 127.0.0.10{}", stack.logs());
    stack.assert_no_policy_errors();
}

/// An expired password (`fail_type = "expired"`, here from PAM for a system account whose
/// password must be changed) was the right password: it is not a guess, it is logged in the
/// block log with what to do about it. Four wrong passwords come first, so counting it would
/// make the fifth guess and ban the source.
#[test]
fn an_expired_password_is_logged_for_support_and_not_counted() {
    let setup = Setup { pam: true, log_policy_requests: true, ..Setup::default() };
    let Some(stack) = Stack::start_with("", &setup) else {
        return;
    };
    let client = Ipv4Addr::new(127, 0, 0, 11);
    let (expired_login, expired_password) = EXPIRED_ACCOUNT;

    stack.fail_imap_logins(client, MAX_FAILURES - 1);
    let imap = imap_login(&stack.dovecot, client, expired_login, expired_password);
    assert_eq!(
        imap.line,
        "a NO [EXPIRED] Password expired",
        "{expired_login}'s right password over IMAP{}",
        stack.logs()
    );
    let pop3 = pop3_login(&stack.dovecot, client, expired_login, expired_password);
    assert!(
        !pop3.ok && pop3.line.starts_with("-ERR "),
        "{expired_login}'s right password over POP3: expected -ERR, got {:?}{}",
        pop3.line,
        stack.logs()
    );
    stack.assert_reported(expired_login, &["expired", "expired"]);

    let right_password = imap_login(&stack.dovecot, client, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&right_password, "alice after four wrong passwords and an expired one");

    let event = stack.event("account_expired", expired_login);
    assert_eq!(event["ip"], "127.0.0.11", "the event's address: {event:#}");
    let detail = event["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(expired_login) && detail.contains("expired"),
        "the account_expired event should say whose password expired: {event:#}"
    );
    stack.assert_no_policy_errors();
}

/// A disabled account (`fail_type = "disabled"`, here from a `deny = yes` passdb) fails
/// whatever the password: it is logged in the block log, not counted toward a ban.
#[test]
fn a_disabled_account_is_logged_for_support_and_not_counted() {
    let setup = Setup { disabled: vec![DAVE], log_policy_requests: true, ..Setup::default() };
    let Some(stack) = Stack::start_with("", &setup) else {
        return;
    };
    let client = Ipv4Addr::new(127, 0, 0, 12);

    stack.fail_imap_logins(client, MAX_FAILURES - 1);
    let imap = imap_login(&stack.dovecot, client, DAVE, DAVE_PASSWORD);
    stack.assert_wrong_password(&imap, "disabled dave's right password over IMAP");
    let pop3 = pop3_login(&stack.dovecot, client, DAVE, "another-password");
    stack.assert_wrong_password(&pop3, "disabled dave with another password over POP3");
    stack.assert_reported(DAVE, &["disabled", "disabled"]);

    let right_password = imap_login(&stack.dovecot, client, ALICE, ALICE_PASSWORD);
    stack.assert_logged_in(&right_password, "alice after four wrong passwords and a disabled account");

    let event = stack.event("account_disabled", DAVE);
    assert_eq!(event["ip"], "127.0.0.12", "the event's address: {event:#}");
    let detail = event["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(DAVE) && detail.contains("disabled"),
        "the account_disabled event should say which account is disabled: {event:#}"
    );
    stack.assert_no_policy_errors();
}
