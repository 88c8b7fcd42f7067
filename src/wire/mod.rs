//! Dovecot's auth-policy wire format (../shared/dovecot-auth-policy.md): the `command` query
//! parameter, the JSON request body, and the `{"status":N,"msg":"..."}` reply. This is the only
//! module that knows Dovecot's integers and that turns decisions into the text a user's mail
//! app shows, which it keeps to one line of printable ASCII because Dovecot passes it on
//! unescaped.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::config::Messages;
use crate::engine::{Decision, Refusal};
use crate::network::parse_ip;

mod scan;

/// Longest `msg` we send; Dovecot puts it on the IMAP `NO [ALERT]` or POP3 `-ERR` line.
pub const MAX_MESSAGE_LEN: usize = 200;

/// Longest `login` kept, in bytes: an email address is at most 254 (RFC 5321), and Dovecot's
/// usernames are shorter. A longer one is cut (on a character boundary), never refused, so
/// the login is still answered and counted; everything after the cut is never stored or logged.
pub const MAX_LOGIN_LEN: usize = 256;
/// Longest `device_id` (the mail app's IMAP ID string as Dovecot quotes it): a real one is
/// under 200 bytes; this leaves room and bounds what every refusal stores.
pub const MAX_DEVICE_ID_LEN: usize = 512;
/// Longest `session_id`: Dovecot's are 16-24 characters, nested sessions a few more.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Longest `pwhash` (Dovecot sends `auth_policy_hash_truncate` bits in hex, at most 64) and
/// longest `protocol` and `fail_type` (short words, read into fixed sets).
pub const MAX_SHORT_FIELD_LEN: usize = 128;

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A field's value cut to `max` bytes: still borrowed when it was, truncated in place when not.
fn cut_field(value: Option<Cow<'_, str>>, max: usize) -> Option<Cow<'_, str>> {
    value.map(|text| match text {
        Cow::Borrowed(text) => Cow::Borrowed(cut(text, max)),
        Cow::Owned(mut text) => {
            let end = cut(&text, max).len();
            text.truncate(end);
            Cow::Owned(text)
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Allow,
    Report,
}

impl Command {
    pub fn label(self) -> &'static str {
        match self {
            Command::Allow => "allow",
            Command::Report => "report",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("missing query parameter command=allow or command=report")]
    MissingCommand,
    #[error("unknown command {0:?}; expected allow or report")]
    UnknownCommand(String),
    #[error("request body is not a JSON object of login attributes: {0}")]
    Malformed(String),
    #[error("{field}: {problem}")]
    BadField { field: &'static str, problem: String },
}

impl WireError {
    /// A stable code for the JSON error body and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::MissingCommand | WireError::UnknownCommand(_) => "bad_command",
            WireError::Malformed(_) => "malformed_body",
            WireError::BadField { .. } => "bad_attribute",
        }
    }
}

/// Finds `command=` in the query string. Dovecot appends it last (after any parameters of the
/// configured URL), so the last occurrence wins.
pub fn command_from_query(query: &str) -> Result<Command, WireError> {
    let value = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("command="))
        .next_back()
        .ok_or(WireError::MissingCommand)?;
    match value {
        "allow" => Ok(Command::Allow),
        "report" => Ok(Command::Report),
        other => Err(WireError::UnknownCommand(other.chars().take(40).collect())),
    }
}

/// The service Dovecot named in `protocol`, reduced to a fixed set so it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Pop3,
    Smtp,
    Submission,
    Sieve,
    Other,
}

impl Protocol {
    pub fn from_name(name: &str) -> Protocol {
        match name {
            "imap" => Protocol::Imap,
            "pop3" => Protocol::Pop3,
            "smtp" => Protocol::Smtp,
            "submission" => Protocol::Submission,
            "sieve" | "managesieve" => Protocol::Sieve,
            _ => Protocol::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Sieve => "sieve",
            Protocol::Other => "other",
        }
    }
}

/// The body as Dovecot sends it. Every configured attribute is a string; `success`,
/// `policy_reject` and `tls` are booleans; unknown keys and one-level nested objects are
/// ignored. Strings borrow from the body unless they contain escapes (serde's own
/// `Option<Cow<str>>` would copy every one: see `borrowed_string`).
#[derive(Debug, Default, PartialEq, Deserialize)]
struct RawAttempt<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_string")]
    login: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_string")]
    pwhash: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_string")]
    remote: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_string")]
    real_remote: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_string")]
    device_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_string")]
    protocol: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_string")]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_string")]
    fail_type: Option<Cow<'a, str>>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    policy_reject: Option<bool>,
    #[serde(default)]
    tls: Option<bool>,
}

/// One login attempt as mailwarden understands it, from either command.
#[derive(Debug, Clone)]
pub struct LoginAttempt<'a> {
    /// The login after Dovecot's `auth_username_format` (usually lowercased); may be empty.
    pub login: Cow<'a, str>,
    /// Dovecot's truncated salted hash of the password: equal for equal passwords.
    pub pwhash: Cow<'a, str>,
    /// The client address (`%{rip}`), or `None` when Dovecot sent none.
    pub remote: Option<IpAddr>,
    /// The TCP peer (`%{real_rip}`) when configured; differs from `remote` behind a proxy or
    /// webmail that forwards the user's address.
    pub real_remote: Option<IpAddr>,
    pub device_id: Cow<'a, str>,
    pub protocol: Protocol,
    pub session_id: Cow<'a, str>,
    /// Dovecot 2.4's failure kind; absent with 2.3.
    pub fail_type: Option<FailType>,
    pub tls: bool,
}

/// Why a login failed, as Dovecot 2.4 says in `fail_type` (2.3 does not send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailType {
    /// A wrong password.
    Credentials,
    /// An unknown login.
    Account,
    /// The account's password has expired (the password itself was right).
    Expired,
    /// The account is disabled.
    Disabled,
    /// Dovecot could not check (the passdb was down): not the user's failure.
    Internal,
    /// A policy refused it.
    Policy,
    /// A kind this version does not know: treated as a wrong password.
    Other,
}

impl FailType {
    /// `None` for an empty value (the login did not fail, or 2.3's absent attribute).
    pub fn from_name(name: &str) -> Option<FailType> {
        Some(match name.trim() {
            "" => return None,
            "credentials" => FailType::Credentials,
            "account" => FailType::Account,
            "expired" => FailType::Expired,
            "disabled" => FailType::Disabled,
            "internal" => FailType::Internal,
            "policy" => FailType::Policy,
            _ => FailType::Other,
        })
    }
}

/// What a `report` adds to the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    pub policy_reject: bool,
}

/// An optional string that borrows from the body when it can. Parsing is a third of the
/// policy handler's own work, and most of that was copying strings (docs/BENCHMARKS.md).
fn borrowed_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Borrowing;

    impl<'de> serde::de::Visitor<'de> for Borrowing {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a string")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_str(self)
        }

        fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(text)))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(text.to_owned())))
        }

        fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(text)))
        }
    }

    deserializer.deserialize_option(Borrowing)
}

fn optional_address(field: &'static str, value: &Option<Cow<'_, str>>) -> Result<Option<IpAddr>, WireError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => parse_ip(text).map(Some).map_err(|e| WireError::BadField { field, problem: e.to_string() }),
    }
}

/// Parses an `allow` or `report` body. Reports must carry `success`.
pub fn parse_attempt(body: &[u8], command: Command) -> Result<(LoginAttempt<'_>, Option<Outcome>), WireError> {
    // Dovecot's plain bodies take the one-pass scan; anything else goes through serde_json, and
    // only a body that refuses is parsed a third time, tracking the path, to name the field.
    let raw: RawAttempt<'_> = match scan::scan(body) {
        Some(raw) => {
            #[cfg(fuzzing)]
            assert_eq!(
                Some(&raw),
                serde_json::from_slice::<RawAttempt<'_>>(body).ok().as_ref(),
                "scan and serde differ"
            );
            raw
        }
        None => match serde_json::from_slice(body) {
            Ok(raw) => raw,
            Err(_) => return Err(explain_refused_body(body)),
        },
    };
    // Cut once, after both parsers, so the scan and serde_json cannot differ in it.
    let raw = RawAttempt {
        login: cut_field(raw.login, MAX_LOGIN_LEN),
        pwhash: cut_field(raw.pwhash, MAX_SHORT_FIELD_LEN),
        device_id: cut_field(raw.device_id, MAX_DEVICE_ID_LEN),
        protocol: cut_field(raw.protocol, MAX_SHORT_FIELD_LEN),
        session_id: cut_field(raw.session_id, MAX_SESSION_ID_LEN),
        fail_type: cut_field(raw.fail_type, MAX_SHORT_FIELD_LEN),
        ..raw
    };
    let remote = optional_address("remote", &raw.remote)?;
    // Without a proxy in between both name the same address, the same text: parsed once.
    let real_remote = if raw.real_remote.is_some() && raw.real_remote == raw.remote {
        remote
    } else {
        optional_address("real_remote", &raw.real_remote)?
    };
    let outcome = match (command, raw.success) {
        (Command::Report, Some(success)) => {
            Some(Outcome { success, policy_reject: raw.policy_reject.unwrap_or(false) })
        }
        (Command::Report, None) => {
            return Err(WireError::BadField {
                field: "success",
                problem: "a report must say whether the login succeeded".into(),
            });
        }
        (Command::Allow, _) => None,
    };
    let empty = || Cow::Borrowed("");
    let attempt = LoginAttempt {
        login: raw.login.unwrap_or_else(empty),
        pwhash: raw.pwhash.unwrap_or_else(empty),
        remote,
        real_remote,
        device_id: raw.device_id.unwrap_or_else(empty),
        protocol: Protocol::from_name(raw.protocol.as_deref().unwrap_or("")),
        session_id: raw.session_id.unwrap_or_else(empty),
        fail_type: raw.fail_type.as_deref().and_then(FailType::from_name),
        tls: raw.tls.unwrap_or(false),
    };
    Ok((attempt, outcome))
}

/// Why `body` is not an attempt, naming the field when one is at fault.
fn explain_refused_body(body: &[u8]) -> WireError {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: Result<RawAttempt<'_>, _> = serde_path_to_error::deserialize(&mut deserializer);
    match parsed {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match KNOWN_FIELDS.iter().find(|f| **f == path) {
                Some(field) => WireError::BadField { field, problem: inner.to_string() },
                None => WireError::Malformed(inner.to_string()),
            }
        }
        Ok(_) => match deserializer.end() {
            Err(e) => WireError::Malformed(e.to_string()),
            Ok(()) => WireError::Malformed("the body is not a JSON object of Dovecot's attributes".into()),
        },
    }
}

const KNOWN_FIELDS: [&str; 11] = [
    "login",
    "pwhash",
    "remote",
    "real_remote",
    "device_id",
    "protocol",
    "session_id",
    "fail_type",
    "success",
    "policy_reject",
    "tls",
];

/// Dovecot's reply: `status` < 0 rejects, 0 allows, > 0 delays that many seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub status: i32,
    pub msg: String,
}

impl Reply {
    /// The body. The answer to nearly every request, `{"status":0,"msg":""}`, is a constant:
    /// serialising it cost a request about 500 instructions and an allocation.
    pub fn to_json(&self) -> Cow<'static, [u8]> {
        const ALLOWED: &[u8] = br#"{"status":0,"msg":""}"#;
        if self.status == 0 && self.msg.is_empty() {
            return Cow::Borrowed(ALLOWED);
        }
        // Serialising a struct of an integer and a string cannot fail.
        Cow::Owned(serde_json::to_vec(self).unwrap_or_else(|_| ALLOWED.to_vec()))
    }
}

/// The reply to `allow` for a decision, with the message rendered from the templates.
pub fn allow_reply(decision: &Decision, messages: &Messages, now: Timestamp) -> Reply {
    match decision {
        Decision::Allow(_) => Reply { status: 0, msg: String::new() },
        // Dovecot tarpits for `status` seconds; 150 s or more would drop the login, and over
        // 30 s the client sees a "waiting" line, so delays are kept well below (config checks).
        Decision::Delay { seconds, .. } => {
            Reply { status: i32::try_from((*seconds).min(29)).unwrap_or(29), msg: String::new() }
        }
        Decision::Reject(refusal) => {
            Reply { status: -1, msg: sanitize_message(&refusal_message(refusal, messages, now)) }
        }
    }
}

fn refusal_message(refusal: &Refusal, messages: &Messages, now: Timestamp) -> String {
    match refusal {
        Refusal::Banned { source, until } => messages.banned.render(|name| match name {
            "source" => source.to_string(),
            _ => until.short_utc(now),
        }),
        Refusal::LoginRefused { login, source, until } => messages.login_refused.render(|name| match name {
            "login" => login.clone(),
            "source" => source.to_string(),
            _ => until.short_utc(now),
        }),
        Refusal::Blocked { address, .. } => messages.blocked.render(|_| address.to_string()),
        Refusal::FirewallRule { rule, login } => messages.firewall_rule.render(|name| match name {
            "rule" => rule.to_string(),
            _ => login.clone(),
        }),
        Refusal::FirewallDefault { login } => messages.firewall_default.render(|_| login.clone()),
        Refusal::StalePassword { login } => messages.stale_password.render(|_| login.clone()),
        Refusal::AccountUnderAttack { login } => messages.account_under_attack.render(|_| login.clone()),
        Refusal::StoreUnavailable => messages.store_unavailable.render(|_| String::new()),
    }
}

/// The reply to `report`: Dovecot ignores the body but logs non-2xx answers.
pub fn report_reply() -> Reply {
    Reply { status: 0, msg: String::new() }
}

/// Makes `text` safe for Dovecot to pass to a mail client: whitespace and control characters
/// become single spaces, anything outside printable ASCII becomes `?`, and the result is cut
/// to `MAX_MESSAGE_LEN` characters.
pub fn sanitize_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_LEN));
    for c in text.chars() {
        if out.len() >= MAX_MESSAGE_LEN {
            break;
        }
        let safe = match c {
            ' '..='~' => c,
            c if c.is_whitespace() || c.is_control() => ' ',
            _ => '?',
        };
        if safe == ' ' && out.ends_with(' ') {
            continue;
        }
        out.push(safe);
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Allowed;
    use crate::network::{SourceGrouping, parse_network};
    use std::time::Duration;

    const NOW: Timestamp = Timestamp(1_795_334_400_000); // 08:00 UTC

    /// The default messages, from the settings table.
    fn messages() -> Messages {
        crate::config::Policy::parse_str("", std::path::Path::new("/")).expect("the defaults are valid").messages
    }

    #[test]
    fn the_command_comes_from_the_last_command_parameter() {
        assert_eq!(command_from_query("command=allow"), Ok(Command::Allow));
        assert_eq!(command_from_query("a=1&command=report"), Ok(Command::Report));
        assert_eq!(command_from_query("command=report&command=allow"), Ok(Command::Allow));
        assert_eq!(command_from_query(""), Err(WireError::MissingCommand));
        assert_eq!(command_from_query("command=reset"), Err(WireError::UnknownCommand("reset".into())));
    }

    #[test]
    fn captured_dovecot_bodies_parse() {
        // Verbatim from ../shared/dovecot-auth-policy.md §2.4.
        let allow = br#"{"device_id":"","login":"testuser","protocol":"imap","pwhash":"0f96","remote":"127.0.0.1","session_id":"VmEkE9lgRrh/AAAB","tls":false}"#;
        let (attempt, outcome) = parse_attempt(allow, Command::Allow).unwrap();
        assert_eq!(attempt.login, "testuser");
        assert_eq!(attempt.pwhash, "0f96");
        assert_eq!(attempt.remote, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(attempt.protocol, Protocol::Imap);
        assert_eq!(outcome, None);

        let report = br#"{"device_id":"","login":"testuser","protocol":"pop3","pwhash":"0350","remote":"127.0.0.1","session_id":"AXp/FNlg/KJ/AAAB","success":false,"policy_reject":false,"tls":false}"#;
        let (attempt, outcome) = parse_attempt(report, Command::Report).unwrap();
        assert_eq!(attempt.protocol, Protocol::Pop3);
        assert_eq!(outcome, Some(Outcome { success: false, policy_reject: false }));

        let nested = br#"{"attrs":{"foo":"bar","orig":"TestUser","sub/lport":"10143"},"device_id":"\"name\" \"MyClient\" \"version\" \"1.2\"","login":"testuser","protocol":"imap","pwhash":"f963","real_remote":"127.0.0.1","remote":"203.0.113.7","session_id":"abc123","zz_domain":"","zz_mech":"PLAIN","tls":false}"#;
        let (attempt, _) = parse_attempt(nested, Command::Allow).unwrap();
        assert_eq!(attempt.device_id, "\"name\" \"MyClient\" \"version\" \"1.2\"");
        assert_eq!(attempt.remote, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(attempt.real_remote, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn plain_strings_are_borrowed_from_the_body_escaped_ones_unescaped_and_null_is_absent() {
        let body = br#"{"login":"alice","device_id":"\"name\" \"K-9\"","session_id":null,"pwhash":"0f96"}"#;
        let (attempt, _) = parse_attempt(body, Command::Allow).unwrap();
        assert!(matches!(attempt.login, Cow::Borrowed("alice")));
        assert!(matches!(attempt.pwhash, Cow::Borrowed("0f96")));
        assert_eq!(attempt.device_id, "\"name\" \"K-9\"");
        assert_eq!(attempt.session_id, "");
    }

    #[test]
    fn bad_bodies_are_refused_with_the_problem_named() {
        let err = |body: &[u8], command| parse_attempt(body, command).unwrap_err().to_string();
        assert!(err(b"not json", Command::Allow).starts_with("request body is not a JSON object"));
        assert!(err(b"[1,2]", Command::Allow).starts_with("request body is not a JSON object"));
        assert!(err(br#"{"login":"a"} trailing"#, Command::Allow).starts_with("request body is not"));
        assert_eq!(err(br#"{"remote":"300.1.1.1"}"#, Command::Allow), "remote: \"300.1.1.1\" is not an IP address");
        assert!(err(br#"{"login":5}"#, Command::Allow).starts_with("login: invalid type"));
        assert!(err(br#"{"success":"false"}"#, Command::Report).starts_with("success: invalid type"));
        assert!(err(br#"{"login":"a"}"#, Command::Report).starts_with("success: a report must say"));
    }

    #[test]
    fn long_strings_are_cut_at_the_wire_on_a_character_boundary_whichever_parser_read_them() {
        let login = format!("{}\u{e9}tail", "a".repeat(MAX_LOGIN_LEN - 1));
        let device = "d".repeat(60_000);
        let session = "s".repeat(1000);
        let plain = format!(r#"{{"login":"{login}","device_id":"{device}","session_id":"{session}"}}"#);
        // An escape sends the body to serde_json instead of the scan.
        let escaped = format!(r#"{{"login":"{login}","device_id":"\u0064{device}","session_id":"{session}"}}"#);
        for body in [plain, escaped] {
            let (attempt, _) = parse_attempt(body.as_bytes(), Command::Allow).unwrap();
            assert_eq!(attempt.login, "a".repeat(MAX_LOGIN_LEN - 1), "the two-byte \u{e9} does not fit");
            assert_eq!(attempt.device_id.len(), MAX_DEVICE_ID_LEN);
            assert_eq!(attempt.session_id.len(), MAX_SESSION_ID_LEN);
        }
        let (short, _) = parse_attempt(br#"{"login":"alice"}"#, Command::Allow).unwrap();
        assert!(matches!(short.login, Cow::Borrowed("alice")));
    }

    #[test]
    fn dovecot_2_4_fail_types_are_read_and_2_3_has_none() {
        let body = |ft: &str| {
            format!(
                r#"{{"login":"a","remote":"203.0.113.7","fail_type":"{ft}","success":false,"policy_reject":false}}"#
            )
        };
        let kind = |ft: &str| parse_attempt(body(ft).as_bytes(), Command::Report).map(|(a, _)| a.fail_type).unwrap();
        assert_eq!(kind("credentials"), Some(FailType::Credentials));
        assert_eq!(kind("account"), Some(FailType::Account));
        assert_eq!(kind("internal"), Some(FailType::Internal));
        assert_eq!(kind("expired"), Some(FailType::Expired));
        assert_eq!(kind("something-new"), Some(FailType::Other));
        assert_eq!(kind(""), None);
    }

    #[test]
    fn an_empty_remote_means_no_source_rather_than_an_error() {
        let (attempt, _) = parse_attempt(br#"{"login":"a","remote":""}"#, Command::Allow).unwrap();
        assert_eq!(attempt.remote, None);
    }

    #[test]
    fn replies_carry_dovecot_integers_and_the_rendered_message() {
        let allow = allow_reply(&Decision::Allow(Allowed::Clean), &messages(), NOW);
        assert_eq!(String::from_utf8(allow.to_json().into_owned()).unwrap(), r#"{"status":0,"msg":""}"#);
        assert_eq!(allow.to_json().into_owned(), serde_json::to_vec(&allow).unwrap(), "the constant is serde's answer");
        let source = SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 }.source_of("203.0.113.7".parse().unwrap());
        let banned = Decision::Reject(Refusal::Banned { source, until: NOW.plus(Duration::from_secs(65 * 60)) });
        assert_eq!(
            allow_reply(&banned, &messages(), NOW),
            Reply { status: -1, msg: "Too many failed logins from 203.0.113.7; try again after 09:05 UTC".into() }
        );
        let refused = Decision::Reject(Refusal::LoginRefused {
            login: "alice@example.com".into(),
            source,
            until: NOW.plus(Duration::from_secs(30 * 60)),
        });
        assert_eq!(
            allow_reply(&refused, &messages(), NOW).msg,
            "Too many failed logins for alice@example.com from 203.0.113.7; try again after 08:30 UTC or update the password in your mail app"
        );
        let blocked = Decision::Reject(Refusal::Blocked {
            address: "198.51.100.9".parse().unwrap(),
            network: parse_network("198.51.100.0/24").unwrap(),
        });
        assert_eq!(
            allow_reply(&blocked, &messages(), NOW).msg,
            "Logins from 198.51.100.9 are blocked by the administrator"
        );
        let login = "alice@example.com".to_string();
        let by_rule = Decision::Reject(Refusal::FirewallRule { rule: 2, login: login.clone() });
        let expected = Reply { status: -1, msg: "Access denied by email firewall rule no. 2".into() };
        assert_eq!(allow_reply(&by_rule, &messages(), NOW), expected);
        let by_default = Decision::Reject(Refusal::FirewallDefault { login });
        assert_eq!(allow_reply(&by_default, &messages(), NOW).msg, "Access denied by email firewall default action");
    }

    #[test]
    fn delays_are_positive_seconds_and_stale_passwords_tell_the_user_what_to_do() {
        use crate::engine::Delayed;
        let login = "alice@example.com".to_string();
        let delay = Decision::Delay { seconds: 5, why: Delayed::AccountUnderAttack { login: login.clone() } };
        assert_eq!(
            String::from_utf8(allow_reply(&delay, &messages(), NOW).to_json().into_owned()).unwrap(),
            r#"{"status":5,"msg":""}"#
        );
        let stale = Decision::Reject(Refusal::StalePassword { login });
        assert_eq!(
            allow_reply(&stale, &messages(), NOW).msg,
            "Your mail app keeps using an old password for alice@example.com; update it in the app's account settings"
        );
    }

    #[test]
    fn the_same_address_in_both_fields_is_read_once_and_a_bad_one_is_named() {
        let (attempt, _) =
            parse_attempt(br#"{"remote":"192.0.2.1","real_remote":"192.0.2.1"}"#, Command::Allow).expect("parses");
        assert_eq!(attempt.remote, Some("192.0.2.1".parse().expect("an address")));
        assert_eq!(attempt.real_remote, attempt.remote);
        let field_of = |body: &[u8]| match parse_attempt(body, Command::Allow) {
            Err(WireError::BadField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field_of(br#"{"remote":"192.0.2.x","real_remote":"192.0.2.x"}"#), "remote");
        assert_eq!(field_of(br#"{"remote":"192.0.2.1","real_remote":"192.0.2.x"}"#), "real_remote");
        assert_eq!(field_of(br#"{"real_remote":"192.0.2.x"}"#), "real_remote");
    }

    #[test]
    fn messages_never_carry_line_breaks_or_non_ascii_and_stay_short() {
        assert_eq!(sanitize_message("line1\r\n* BYE injected\r\nx OK fake"), "line1 * BYE injected x OK fake");
        assert_eq!(sanitize_message("j\u{f6}rg\u{0}@example.com"), "j?rg @example.com");
        assert_eq!(sanitize_message(&"a".repeat(500)).len(), MAX_MESSAGE_LEN);
        assert_eq!(sanitize_message("\t tabs\tand  spaces "), "tabs and spaces");
    }
}
