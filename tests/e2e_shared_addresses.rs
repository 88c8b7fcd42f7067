//! End to end through a real Dovecot 2.3 with real IMAP, POP3 and SMTP AUTH logins: a shared
//! address (an office NAT) is never banned for its own users' mistakes, while a sprayer on it
//! is banned after a bounded number of guesses and a fresh attacker at exactly `max_failures`.
//! Each test starts its own mailwarden (defaults) and Dovecot; every client of the office is
//! bound to one 127.0.0.x address, as behind a NAT.
//!
//! What Dovecot 2.3.19's submission service (dovecot-submissiond) does, as observed here:
//! - its policy requests say `"protocol":"submission"`, and `device_id` is always `""`: SMTP has
//!   no IMAP ID, so mailwarden cannot name the mail app (`why` says "a mail app" over
//!   submission). `remote` and `real_remote` are the client's address, as for IMAP.
//! - the requests per AUTH are those of IMAP: allow, allow (correct password only), report.
//! - a correct password gets `235 2.7.0 Logged in.`, a wrong one `535 5.7.8 Authentication
//!   failed.` after about 0.5 s (with `auth_failure_delay = 0`).
//! - a policy refusal reaches the SMTP client as `535 5.7.8 <msg>`, mailwarden's message
//!   verbatim after the enhanced status code (no `[ALERT]` as in IMAP), also after ~0.5 s.
//!
//! Without Dovecot or its submission service the tests skip with a note, except in CI
//! (`CI=true`), where they fail.

mod support;

use std::net::Ipv4Addr;
use std::thread;

use support::dovecot::{self, COLLEAGUES, Dovecot, LAPTOP_OWNER, imap_login, pop3_login, smtp_login};
use support::mailwarden::Mailwarden;

/// mailwarden's defaults: `autoban.max_failures`, `autoban.tolerance_per_account`,
/// `autoban.max_tolerance` and `stale_passwords.after`.
const MAX_FAILURES: usize = 5;
const TOLERANCE_PER_ACCOUNT: usize = 2;
const MAX_TOLERANCE: usize = 20;
const STALE_AFTER: usize = 3;

/// The office's one public address, and an attacker's elsewhere.
const OFFICE: Ipv4Addr = Ipv4Addr::new(127, 0, 17, 1);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 66, 6);

/// The laptop's saved SMTP password, changed since on the server.
const LAPTOP_OLD_PASSWORD: &str = "laptop-owner-OLD-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Imap,
    Pop3,
    Smtp,
}

use Protocol::{Imap, Pop3, Smtp};

/// One login to try: over which protocol, from where, as whom.
#[derive(Debug, Clone)]
struct Login {
    protocol: Protocol,
    from: Ipv4Addr,
    user: String,
    password: String,
}

fn login(protocol: Protocol, from: Ipv4Addr, user: &str, password: &str) -> Login {
    Login { protocol, from, user: user.to_owned(), password: password.to_owned() }
}

/// What the client saw: the final IMAP tagged line, POP3 status line or SMTP reply.
#[derive(Debug, Clone)]
struct Attempt {
    login: Login,
    ok: bool,
    line: String,
}

/// The line a refusal shows the user: `msg` as Dovecot relays a policy server's message, or
/// the plain wrong-password failure for `None`.
fn refusal_line(protocol: Protocol, msg: Option<&str>) -> String {
    match (protocol, msg) {
        (Imap, None) => "a NO [AUTHENTICATIONFAILED] Authentication failed.".into(),
        (Pop3, None) => "-ERR [AUTH] Authentication failed.".into(),
        (Smtp, None) => "535 5.7.8 Authentication failed.".into(),
        (Imap, Some(msg)) => format!("a NO [ALERT] {msg}"),
        (Pop3, Some(msg)) => format!("-ERR [AUTH] {msg}"),
        (Smtp, Some(msg)) => format!("535 5.7.8 {msg}"),
    }
}

/// The start of mailwarden's ban message for `source` (its end is the ban's expiry).
fn ban_message_start(source: Ipv4Addr) -> String {
    format!("Too many failed logins from {source}; try again after ")
}

/// The start of the default `messages.login_refused` for `login` from `source`.
fn login_refused_message_start(login: &str, source: Ipv4Addr) -> String {
    format!("Too many failed logins for {login} from {source}; try again after ")
}

/// The default `messages.stale_password` for `login`.
fn stale_message(login: &str) -> String {
    format!("Your mail app keeps using an old password for {login}; update it in the app's account settings")
}

/// One mailwarden and the Dovecot (with submission) that asks it. Dovecot is declared first
/// so it stops first.
struct Stack {
    dovecot: Dovecot,
    mailwarden: Mailwarden,
}

impl Stack {
    /// None when Dovecot or its submission service is not installed and this is not CI.
    fn start() -> Option<Stack> {
        if !dovecot::require_dovecot_submission() {
            return None;
        }
        let mailwarden = Mailwarden::start();
        let dovecot = Dovecot::start_with_submission(&mailwarden.policy_url(), &mailwarden.api_key);
        Some(Stack { dovecot, mailwarden })
    }

    fn logs(&self) -> String {
        let tail = |text: String| {
            text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!(
            "\n--- Dovecot log (tail) ---\n{}\n--- mailwarden log (tail) ---\n{}",
            tail(self.dovecot.log()),
            tail(self.mailwarden.log())
        )
    }

    fn try_login(&self, login: &Login) -> Attempt {
        let (ok, line) = match login.protocol {
            Imap => {
                let outcome = imap_login(&self.dovecot, login.from, &login.user, &login.password);
                (outcome.ok, outcome.line)
            }
            Pop3 => {
                let outcome = pop3_login(&self.dovecot, login.from, &login.user, &login.password);
                (outcome.ok, outcome.line)
            }
            Smtp => {
                let reply = smtp_login(&self.dovecot, login.from, &login.user, &login.password);
                (reply.ok(), format!("{} {}", reply.code, reply.text))
            }
        };
        Attempt { login: login.clone(), ok, line }
    }

    /// Tries `logins` all at once, one thread each, and returns once mailwarden has answered
    /// the report of every one of them (Dovecot sends one per login and does not wait for it),
    /// so the next decision sees them all counted.
    fn logins(&self, logins: &[Login]) -> Vec<Attempt> {
        let before = self.mailwarden.reports_answered();
        let attempts = thread::scope(|scope| {
            let handles: Vec<_> = logins.iter().map(|login| scope.spawn(move || self.try_login(login))).collect();
            handles.into_iter().map(|h| h.join().expect("a login thread panicked")).collect()
        });
        self.mailwarden.wait_for_reports(before + logins.len() as u64);
        attempts
    }

    fn one_login(&self, login: Login) -> Attempt {
        self.logins(&[login]).remove(0)
    }

    fn assert_logged_in(&self, attempts: &[Attempt], what: &str) {
        for attempt in attempts {
            assert!(attempt.ok, "{what}: {:?} was refused: {:?}{}", attempt.login, attempt.line, self.logs());
        }
    }

    /// Refused with exactly `msg` as the policy's message (or a plain wrong password for None).
    fn assert_refused(&self, attempts: &[Attempt], msg: Option<&str>, what: &str) {
        for attempt in attempts {
            let expected = refusal_line(attempt.login.protocol, msg);
            assert!(
                !attempt.ok && attempt.line == expected,
                "{what}: {:?} expected {expected:?}, got {:?}{}",
                attempt.login,
                attempt.line,
                self.logs()
            );
        }
    }

    fn assert_banned_message(&self, attempts: &[Attempt], source: Ipv4Addr, what: &str) {
        for attempt in attempts {
            let expected = refusal_line(attempt.login.protocol, Some(&ban_message_start(source)));
            assert!(
                !attempt.ok && attempt.line.starts_with(&expected) && attempt.line.ends_with(" UTC"),
                "{what}: {:?} expected the ban message {expected:?}..., got {:?}{}",
                attempt.login,
                attempt.line,
                self.logs()
            );
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let output = self.mailwarden.cli(args);
        assert!(output.status.success(), "{args:?}: {}{}", String::from_utf8_lossy(&output.stderr), self.logs());
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The ban covering `source`, from the admin API and `mailwarden bans`, which must agree.
    fn ban(&self, source: Ipv4Addr) -> Option<serde_json::Value> {
        let (status, body) = self.mailwarden.admin("GET", &format!("/api/v1/bans/{source}"));
        let listed = self.cli(&["bans"]).lines().any(|line| {
            let mut columns = line.split_whitespace();
            // A ban of the whole source is listed for "(every login)", a login refusal by login.
            columns.next() == Some(&source.to_string()) && columns.next() == Some("(every")
        });
        match status {
            200 => {
                assert!(listed, "the admin API shows a ban on {source} that `mailwarden bans` does not list");
                Some(serde_json::from_str(&body).expect("a ban as JSON"))
            }
            404 => {
                assert!(!listed, "`mailwarden bans` lists {source}, the admin API says it is not banned");
                None
            }
            other => panic!("GET /api/v1/bans/{source}: {other} {body}"),
        }
    }

    fn assert_not_banned(&self, source: Ipv4Addr, what: &str) {
        if let Some(ban) = self.ban(source) {
            panic!("{what}: {source} is banned: {ban}{}", self.logs());
        }
    }

    /// The distinct wrong guesses mailwarden counts from `source` (`/api/v1/why`).
    fn why_json(&self, source: Ipv4Addr) -> serde_json::Value {
        let (status, body) = self.mailwarden.admin("GET", &format!("/api/v1/why?ip={source}"));
        assert_eq!(status, 200, "why {source}: {body}");
        serde_json::from_str(&body).expect("why as JSON")
    }

    fn counted_guesses(&self, source: Ipv4Addr) -> usize {
        self.why_json(source)["guesses"].as_array().map_or(0, Vec::len)
    }

    /// Every colleague logs in twice over IMAP from the office: ten good accounts.
    fn colleagues_log_in_twice(&self) {
        let good: Vec<Login> = COLLEAGUES
            .iter()
            .flat_map(|(user, password)| [(); 2].map(|()| login(Imap, OFFICE, user, password)))
            .collect();
        self.assert_logged_in(&self.logins(&good), "a colleague's morning login");
    }

    /// Each colleague over IMAP, POP3 and SMTP AUTH with the right password, from the office.
    fn every_colleague_everywhere(&self) -> Vec<Attempt> {
        let logins: Vec<Login> = COLLEAGUES
            .iter()
            .flat_map(|(user, password)| [Imap, Pop3, Smtp].map(|protocol| login(protocol, OFFICE, user, password)))
            .collect();
        self.logins(&logins)
    }
}

/// The number of distinct wrong guesses that bans a source with `good_accounts` accounts that
/// logged in from it lately (the README's formula).
fn ban_threshold(good_accounts: usize) -> usize {
    MAX_FAILURES + (TOLERANCE_PER_ACCOUNT * good_accounts).min(MAX_TOLERANCE)
}

#[test]
fn an_office_nat_is_never_banned_for_colleagues_typos_and_a_stale_laptop_and_only_the_laptops_old_password_is_refused()
{
    let Some(stack) = Stack::start() else {
        return;
    };
    stack.colleagues_log_in_twice();

    // Six colleagues each mistype their password once: six distinct wrong guesses, more than
    // max_failures, from one address.
    let typos: Vec<Login> = COLLEAGUES[..6]
        .iter()
        .enumerate()
        .map(|(i, (user, _))| login(if i % 2 == 0 { Imap } else { Pop3 }, OFFICE, user, &format!("typo-{i}")))
        .collect();
    stack.assert_refused(&stack.logins(&typos), None, "a colleague's typo");
    stack.assert_not_banned(OFFICE, "after six typos");

    // The laptop retries its saved old password over SMTP AUTH, one try after the other.
    let (owner, owner_password) = LAPTOP_OWNER;
    for attempt in 1..=12 {
        let tried = stack.one_login(login(Smtp, OFFICE, owner, LAPTOP_OLD_PASSWORD));
        let expected = (attempt > STALE_AFTER).then(|| stale_message(owner));
        stack.assert_refused(&[tried], expected.as_deref(), &format!("the laptop's try {attempt}"));
    }
    stack.assert_not_banned(OFFICE, "after the laptop's twelve tries");

    let why = stack.cli(&["why", &OFFICE.to_string()]);
    assert!(
        why.contains(&format!("stale device: a mail app keeps using an old password for {owner} over submission")),
        "why names the stale laptop over submission:\n{why}"
    );
    let laptop_guess = stack.why_json(OFFICE)["guesses"]
        .as_array()
        .and_then(|guesses| guesses.iter().find(|g| g["login"] == owner).cloned())
        .unwrap_or_else(|| panic!("why lists no guess for {owner}:\n{why}"));
    assert_eq!(laptop_guess["protocol"], "submission", "{laptop_guess}");
    assert_eq!(laptop_guess["device_id"], "", "SMTP has no IMAP ID: {laptop_guess}");
    assert_eq!(laptop_guess["stale"], true, "{laptop_guess}");
    assert!(laptop_guess["quarantined_until"].is_string(), "{laptop_guess}");

    stack.assert_logged_in(&stack.every_colleague_everywhere(), "a colleague after the typos and the laptop");
    stack.assert_not_banned(OFFICE, "after everybody's logins");

    // Only that one password is refused: the laptop is still quarantined, and its owner logs
    // in with the new password over SMTP AUTH.
    let again = stack.one_login(login(Smtp, OFFICE, owner, LAPTOP_OLD_PASSWORD));
    stack.assert_refused(&[again], Some(&stale_message(owner)), "the laptop once more");
    stack.assert_logged_in(&[stack.one_login(login(Smtp, OFFICE, owner, owner_password))], "the laptop's owner");

    // The owner's login forgives the laptop's guess (it no longer counts toward a ban of the
    // office) but why still tells its whole story: thirteen tries, refused ones included.
    let laptop_guess = stack.why_json(OFFICE)["guesses"]
        .as_array()
        .and_then(|guesses| guesses.iter().find(|g| g["login"] == owner).cloned())
        .expect("why keeps the stale laptop after its owner logged in");
    assert_eq!(laptop_guess["failures"], 13, "{laptop_guess}");
    assert_eq!(laptop_guess["counted"], false, "{laptop_guess}");
    let why = stack.cli(&["why", &OFFICE.to_string()]);
    assert!(why.contains("13 tries"), "{why}");
    assert!(why.contains(&format!("not counted: {owner} logged in successfully from here afterwards")), "{why}");
}

#[test]
fn a_sprayer_on_an_office_nat_is_banned_after_exactly_max_failures_plus_the_tolerance_its_good_accounts_earned() {
    let Some(stack) = Stack::start() else {
        return;
    };
    stack.colleagues_log_in_twice();
    let threshold = ban_threshold(COLLEAGUES.len());
    assert_eq!(threshold, 25);

    // One password across many logins, the colleagues' and made-up ones, over every protocol.
    let spray: Vec<Login> = (0..threshold)
        .map(|i| {
            let user = COLLEAGUES.get(i).map_or_else(|| format!("staff{i}@example.com"), |(user, _)| user.to_string());
            login([Imap, Pop3, Smtp][i % 3], OFFICE, &user, "Winter2026!")
        })
        .collect();
    let (last, before_last) = spray.split_last().expect("guesses");
    stack.assert_refused(&stack.logins(before_last), None, "a sprayed guess before the ban");
    assert_eq!(stack.counted_guesses(OFFICE), threshold - 1, "every sprayed guess is counted{}", stack.logs());
    stack.assert_not_banned(OFFICE, &format!("after {} distinct guesses", threshold - 1));

    // The last one is still an ordinary failure; its report bans the address.
    stack.assert_refused(&[stack.one_login(last.clone())], None, "the sprayed guess that bans");
    let ban = stack.ban(OFFICE).unwrap_or_else(|| panic!("not banned after {threshold} guesses{}", stack.logs()));
    assert_eq!(ban["failures"], threshold, "{ban}");

    stack.assert_banned_message(&stack.every_colleague_everywhere(), OFFICE, "a colleague after the spray");
}

#[test]
fn a_fresh_attacker_elsewhere_is_banned_at_exactly_max_failures_distinct_guesses() {
    let Some(stack) = Stack::start() else {
        return;
    };
    // The office's good logins earn the office tolerance, not the attacker.
    stack.colleagues_log_in_twice();

    let guesses: Vec<Login> = (1..=MAX_FAILURES)
        .map(|i| login([Imap, Pop3, Smtp][i % 3], ATTACKER, "alice@example.com", &format!("guess-{i}")))
        .collect();
    let (last, before_last) = guesses.split_last().expect("guesses");
    stack.assert_refused(&stack.logins(before_last), None, "an attacker's guess before the ban");
    stack.assert_not_banned(ATTACKER, &format!("after {} guesses", MAX_FAILURES - 1));
    stack.assert_refused(&[stack.one_login(last.clone())], None, "the guess that bans");
    let ban = stack.ban(ATTACKER).unwrap_or_else(|| panic!("not banned after {MAX_FAILURES} guesses{}", stack.logs()));
    assert_eq!(ban["failures"], MAX_FAILURES, "{ban}");

    let right_password =
        [Imap, Pop3, Smtp].map(|protocol| login(protocol, ATTACKER, "alice@example.com", "alice-secret"));
    stack.assert_banned_message(&stack.logins(&right_password), ATTACKER, "even the right password from the attacker");
    stack.assert_not_banned(OFFICE, "the office, after the attacker's ban");
    stack.assert_logged_in(&stack.every_colleague_everywhere(), "a colleague while the attacker is banned");
}

#[test]
fn on_an_office_nat_one_account_guessed_max_failures_times_is_refused_alone_with_its_own_message() {
    let Some(stack) = Stack::start() else {
        return;
    };
    stack.colleagues_log_in_twice();
    let (victim, victim_password) = COLLEAGUES[0];

    // Someone behind the office NAT guesses one colleague's password, over every protocol.
    let guesses: Vec<Login> =
        (1..=MAX_FAILURES).map(|i| login([Imap, Pop3, Smtp][i % 3], OFFICE, victim, &format!("guess-{i}"))).collect();
    stack.assert_refused(&stack.logins(&guesses), None, "a guess of one colleague's password");

    // That account is refused from the office, even with its right password, with a message
    // that names it; the office is not banned and every other colleague logs in.
    for protocol in [Imap, Pop3, Smtp] {
        let tried = stack.one_login(login(protocol, OFFICE, victim, victim_password));
        let expected = refusal_line(protocol, Some(&login_refused_message_start(victim, OFFICE)));
        assert!(
            !tried.ok
                && tried.line.starts_with(&expected)
                && tried.line.ends_with(" UTC or update the password in your mail app"),
            "{protocol:?}: expected {expected:?}..., got {:?}{}",
            tried.line,
            stack.logs()
        );
    }
    stack.assert_not_banned(OFFICE, "after one account's guesses");
    let others: Vec<Login> = COLLEAGUES[1..]
        .iter()
        .flat_map(|(user, password)| [Imap, Pop3, Smtp].map(|protocol| login(protocol, OFFICE, user, password)))
        .collect();
    stack.assert_logged_in(&stack.logins(&others), "another colleague while one account is refused");
    let elsewhere = Ipv4Addr::new(127, 0, 17, 2);
    stack
        .assert_logged_in(&[stack.one_login(login(Imap, elsewhere, victim, victim_password))], "the account elsewhere");

    // The admin sees it, with its login, and lifts it; the colleague logs in again.
    let listed = stack.cli(&["bans"]);
    assert!(
        listed.lines().any(|l| l.starts_with(&OFFICE.to_string()) && l.contains(victim)),
        "`mailwarden bans` lists the refusal with its login:\n{listed}"
    );
    let why = stack.cli(&["why", &OFFICE.to_string()]);
    assert!(why.contains(&format!("per-login refusal: logins to {victim} from {OFFICE} are refused until")), "{why}");
    stack.cli(&["unban", &OFFICE.to_string(), "--login", victim]);
    stack.assert_logged_in(
        &[stack.one_login(login(Imap, OFFICE, victim, victim_password))],
        "the colleague after unban",
    );
}

/// The owner's home and the café their phone tried old passwords from.
const HOME: Ipv4Addr = Ipv4Addr::new(127, 0, 18, 1);
const CAFE: Ipv4Addr = Ipv4Addr::new(127, 0, 19, 1);

#[test]
fn after_a_password_change_reset_login_ends_the_laptops_quarantine_and_lifts_the_ban_its_old_passwords_caused() {
    let Some(stack) = Stack::start() else {
        return;
    };
    let (owner, owner_password) = LAPTOP_OWNER;
    // At home the laptop retries its saved old password over SMTP AUTH: quarantined.
    for attempt in 1..=STALE_AFTER + 1 {
        let tried = stack.one_login(login(Smtp, HOME, owner, LAPTOP_OLD_PASSWORD));
        let expected = (attempt > STALE_AFTER).then(|| stale_message(owner));
        stack.assert_refused(&[tried], expected.as_deref(), &format!("the laptop's try {attempt}"));
    }
    // At the café the phone tries five passwords the owner once had: the café's address,
    // which nobody logged in from, is banned.
    let old: Vec<Login> =
        (0..MAX_FAILURES).map(|n| login(Imap, CAFE, owner, &format!("an-older-password-{n}"))).collect();
    stack.logins(&old);
    stack.assert_banned_message(&[stack.one_login(login(Imap, CAFE, owner, owner_password))], CAFE, "the café");

    let said = stack.cli(&["reset-login", owner]);
    assert!(said.contains("1 quarantine ended, 1 ban lifted"), "{said}");
    assert!(said.contains(&format!("unbanned {CAFE}")), "{said}");

    // The owner logs in at the café at once, and the laptop's old password now reaches
    // Dovecot's password check again (a plain failure, no longer the quarantine's message).
    stack.assert_logged_in(&[stack.one_login(login(Imap, CAFE, owner, owner_password))], "the owner at the café");
    stack.assert_not_banned(CAFE, "after reset-login");
    let tried = stack.one_login(login(Smtp, HOME, owner, LAPTOP_OLD_PASSWORD));
    stack.assert_refused(&[tried], None, "the laptop after reset-login");
}
