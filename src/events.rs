//! The block log's records: every refusal (ban, blocked network, firewall rule or default,
//! stale password, account under attack), every delay, and every ban, quarantine and attack
//! that starts is an event, kept durably and bounded by age, count and size, for the admin
//! who hears "my phone cannot get mail". `journal` writes them without holding up a login.

use std::net::IpAddr;
use std::time::Duration;

use crate::clock::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A login refused because its source is banned.
    Ban,
    /// A login refused because its address is on the blocked list.
    Blocked,
    /// A login refused by a firewall rule (`rule` says which).
    FirewallRule,
    /// A login refused by a firewall's default action.
    FirewallDefault,
    /// A source was banned.
    BanPlaced,
    /// A login refused because it is refused from its source (an IP+login refusal).
    LoginRefused,
    /// One login was refused from an established source after too many wrong passwords.
    LoginRefusalPlaced,
    /// A login refused because its password is in stale-password quarantine.
    StalePassword,
    /// A login from a new source delayed or refused while its account is under attack.
    AccountUnderAttack,
    /// A login and password failed often enough from one source to be quarantined.
    QuarantineStarted,
    /// An account came under a distributed attack.
    AttackStarted,
    /// A right password on an account whose password has expired (Dovecot 2.4).
    AccountExpired,
    /// A login to a disabled account (Dovecot 2.4).
    AccountDisabled,
    /// A visitor unblocked its own address on the self-service page.
    SelfUnblock,
    /// A login refused while the shared store was unreachable (`store.on_store_error = "reject"`).
    StoreUnavailable,
    /// A webhook endpoint failed `notify::webhooks::FAILING_AFTER` times in a row (noted once
    /// per run of failures, not per attempt).
    WebhookFailing,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::Ban,
        EventKind::Blocked,
        EventKind::FirewallRule,
        EventKind::FirewallDefault,
        EventKind::BanPlaced,
        EventKind::StalePassword,
        EventKind::AccountUnderAttack,
        EventKind::QuarantineStarted,
        EventKind::AttackStarted,
        EventKind::AccountExpired,
        EventKind::AccountDisabled,
        EventKind::SelfUnblock,
        EventKind::StoreUnavailable,
        EventKind::LoginRefused,
        EventKind::LoginRefusalPlaced,
        EventKind::WebhookFailing,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EventKind::Ban => "ban",
            EventKind::Blocked => "blocked",
            EventKind::FirewallRule => "firewall_rule",
            EventKind::FirewallDefault => "firewall_default",
            EventKind::BanPlaced => "ban_placed",
            EventKind::StalePassword => "stale_password",
            EventKind::AccountUnderAttack => "account_under_attack",
            EventKind::QuarantineStarted => "quarantine_started",
            EventKind::AttackStarted => "attack_started",
            EventKind::AccountExpired => "account_expired",
            EventKind::AccountDisabled => "account_disabled",
            EventKind::SelfUnblock => "self_unblock",
            EventKind::StoreUnavailable => "store_unavailable",
            EventKind::LoginRefused => "login_refused",
            EventKind::LoginRefusalPlaced => "login_refusal_placed",
            EventKind::WebhookFailing => "webhook_failing",
        }
    }

    pub fn from_label(label: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.label() == label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Timestamp,
    pub kind: EventKind,
    pub login: String,
    pub ip: Option<IpAddr>,
    pub protocol: String,
    pub device_id: String,
    /// The firewall rule number (from 1), for `FirewallRule`.
    pub rule: Option<u32>,
    /// What the user was told, or what was done.
    pub detail: String,
    /// Decided by a part of the policy in observe mode: the login was not refused ("would
    /// refuse").
    pub observed: bool,
}

/// What one stored event counts for beyond its text: its time, kind, rule and the store's
/// own bookkeeping (row id, index entries), roughly.
pub const EVENT_OVERHEAD_BYTES: u64 = 64;

impl Event {
    /// The event's size as `events.max_bytes` counts it: the bytes of its strings plus
    /// `EVENT_OVERHEAD_BYTES`. (The SQLite store computes the same from its columns.)
    pub fn size(&self) -> u64 {
        let text = self.login.len() + self.protocol.len() + self.device_id.len() + self.detail.len();
        let ip = self.ip.map_or(0, |ip| ip.to_string().len());
        let kind = self.kind.label().len();
        u64::try_from(text + ip + kind).unwrap_or(u64::MAX).saturating_add(EVENT_OVERHEAD_BYTES)
    }

    /// Brings the event's time into `clock::EARLIEST..=LATEST` and says whether it was outside
    /// (a stored event damaged or written by hand).
    pub fn clamp_time(&mut self) -> bool {
        let before = self.at;
        self.at = self.at.clamped();
        before != self.at
    }
}

/// A query of the block log; every field but the page narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub ip: Option<IpAddr>,
    /// Events whose login has this `login::key` (so `Alice@Example.com` finds `alice@example.com`).
    pub login: Option<String>,
    /// Only events whose login's key is in this domain (`login::key` of the domain, no `@`):
    /// what a `domain:` token's block log is confined to.
    pub domain: Option<String>,
    pub kind: Option<EventKind>,
    pub since: Option<Timestamp>,
    /// Only events at or before this time.
    pub until: Option<Timestamp>,
    /// Only events whose `detail` (what the user was told) contains this text, ignoring the
    /// case of ASCII letters (as SQLite's `LIKE` does, so both stores find the same); at most
    /// `MAX_TEXT_FILTER` bytes, which the API and console check where it enters.
    pub text: Option<String>,
    /// Only "would refuse" records of observe mode (`true`), or only real refusals (`false`).
    pub observed: Option<bool>,
    /// Newest first, at most this many.
    pub limit: usize,
    /// After skipping this many matches.
    pub offset: usize,
}

/// The longest message-text filter a query takes.
pub const MAX_TEXT_FILTER: usize = 200;

/// A message-text filter as the API and the console take it: at most `MAX_TEXT_FILTER` bytes,
/// one line. The message names the field.
pub fn checked_text(text: &str) -> Result<String, String> {
    if text.len() > MAX_TEXT_FILTER {
        return Err(format!("text: longer than {MAX_TEXT_FILTER} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err("text: must be one line without control characters".into());
    }
    Ok(text.to_string())
}

/// Whether `detail` contains `text`, ignoring the case of ASCII letters: the store's
/// `EventFilter::text` match, written once for the stores that filter in code.
pub fn detail_contains(detail: &str, text: &str) -> bool {
    text.is_empty() || detail.to_ascii_lowercase().contains(&text.to_ascii_lowercase())
}

/// One page of the events matching a filter, and how many match in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<Event>,
    /// Matches in all pages.
    pub total: usize,
    /// False when the store counted only part of the log (Redis reads at most the newest
    /// 50,000 events a query): `total` is then the matches among those.
    pub total_exact: bool,
}

/// How much of the log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_count: usize,
    /// The most the stored events may take, as `Event::size` counts them.
    pub max_bytes: u64,
}
