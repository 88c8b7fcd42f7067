//! The admin API's JSON shapes. Times are RFC 3339 UTC strings; no view ever carries a
//! password hash or a secret.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::AccessEntry;
use crate::bans::Ban;
use crate::clock::Timestamp;
use crate::warden::Explanation;

/// Every error: a stable code for scripts, a sentence for people, and the input at fault.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `invalid_field`, `not_banned`, `unauthorized`.
    pub error: String,
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` while the store is unreachable (the node answers from memory).
    pub status: String,
    pub version: String,
    /// The durable-store backend (`sqlite`, or `redis` in cluster mode).
    pub store: String,
    /// Whether the store answers now.
    pub store_reachable: bool,
    pub active_bans: usize,
    pub tracked_sources: u64,
}

/// A ban as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BanView {
    /// The banned source as users read it: an address, or a network for grouped sources.
    pub source: String,
    /// The same in CIDR form.
    pub network: String,
    /// For an IP+login refusal, the one login refused from the source (other logins from it
    /// are not); null for a ban of the whole source.
    pub login: Option<String>,
    pub reason: String,
    pub created_at: String,
    pub expires_at: String,
    pub remaining_seconds: u64,
    /// Failed logins counted in the window when the ban was placed.
    pub failures: u32,
    /// The last failed login's account, protocol and IMAP ID string.
    pub last_login: String,
    pub protocol: String,
    pub device_id: String,
    /// The distinct wrong passwords that led to the ban (never the passwords or their hashes).
    pub guesses: Vec<BanGuessView>,
}

/// One distinct wrong password that counted toward a ban.
#[derive(Debug, Serialize, ToSchema)]
pub struct BanGuessView {
    pub login: String,
    pub protocol: String,
    pub device_id: String,
    /// Tries of this same password.
    pub failures: u32,
    pub first_seen: String,
    pub last_seen: String,
}

impl BanView {
    pub fn new(ban: &Ban, now: Timestamp) -> BanView {
        BanView {
            source: ban.source.to_string(),
            network: ban.source.network().to_string(),
            login: ban.refused_login.clone(),
            reason: ban.reason.label().to_string(),
            created_at: ban.created_at.rfc3339(),
            expires_at: ban.expires_at.rfc3339(),
            remaining_seconds: now.until(ban.expires_at).as_secs(),
            failures: ban.failures,
            last_login: ban.cause.login.clone(),
            protocol: ban.cause.protocol.clone(),
            device_id: ban.cause.device_id.clone(),
            guesses: ban
                .cause
                .guesses
                .iter()
                .map(|g| BanGuessView {
                    login: g.login.clone(),
                    protocol: g.protocol.clone(),
                    device_id: g.device_id.clone(),
                    failures: g.failures,
                    first_seen: Timestamp(g.first_seen).rfc3339(),
                    last_seen: Timestamp(g.last_seen).rfc3339(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BanList {
    pub bans: Vec<BanView>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    /// `observe` while `server.mode = "observe"`: these bans are recorded, not enforced
    /// (logins from them are allowed and logged as "would refuse") until the mode is lifted.
    pub mode: Mode,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Unbanned {
    pub unbanned: BanView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Lengthened {
    pub lengthened: BanView,
}

/// An entry of the blocked or trusted list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListEntryView {
    /// `blocked` or `trusted`.
    pub list: String,
    pub network: String,
    pub comment: String,
    /// `policy_file` (edit the file to change it) or `api`.
    pub origin: String,
    pub created_at: String,
    /// Absent: until removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The name of the token that added it through the API; absent for the policy file's
    /// entries (and for entries made before tokens had names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
    pub mode: Mode,
}

impl ListEntryView {
    pub fn new(entry: &AccessEntry) -> ListEntryView {
        ListEntryView {
            list: entry.list.label().to_string(),
            network: entry.network.to_string(),
            comment: entry.comment.clone(),
            origin: entry.origin.label().to_string(),
            created_at: entry.created_at.rfc3339(),
            expires_at: entry.expires_at.map(Timestamp::rfc3339),
            added_by: Some(entry.added_by.clone()).filter(|name| !name.is_empty()),
            mode: Mode::of(entry.observe),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListEntries {
    pub entries: Vec<ListEntryView>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// A new entry for the blocked or trusted list. Posting a network already listed through
/// the API replaces its entry.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewListEntry {
    /// An address (`203.0.113.7`) or network (`203.0.113.0/24`, `2001:db8::/48`).
    #[schema(max_length = 64, example = "203.0.113.0/24")]
    pub network: String,
    /// How long the entry lasts, e.g. `2h` or `7days`: 1 s to 3660 days. Not with `expires_at`.
    #[serde(rename = "for", default)]
    #[schema(rename = "for", max_length = 64, pattern = r"^\\s*([0-9]+ ?[a-zA-Zµ]+ *)+$", example = "2h")]
    pub duration: Option<String>,
    /// When the entry ends (RFC 3339), at most 3660 days ahead. Not with `for`. Neither: until
    /// removed.
    #[serde(default)]
    #[schema(max_length = 64, format = DateTime)]
    pub expires_at: Option<String>,
    /// Why, for the next admin (at most 200 characters, one line).
    #[serde(default)]
    #[schema(max_length = 200)]
    pub comment: Option<String>,
    /// `observe`: a blocked entry that refuses nothing and records what it would refuse (the
    /// block log's "would refuse"); `enforce` (the default) refuses. Not for trusted entries.
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// Whether a part of the policy refuses (`enforce`) or only records what it would refuse
/// (`observe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Observe,
}

impl Mode {
    pub fn of(observe: bool) -> Mode {
        if observe { Mode::Observe } else { Mode::Enforce }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Removed {
    pub removed: ListEntryView,
}

/// What `allow` would answer right now, and why. Nothing is changed by asking.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    pub ip: String,
    pub login: String,
    pub protocol: String,
    /// Dovecot's status: 0 allow, -1 reject.
    pub status: i32,
    /// The text the user's mail app would show.
    pub msg: String,
    /// `allow` or `reject`.
    pub verdict: String,
    /// `none`, `trusted`, `blocked`, `ban`, `no_source`.
    pub reason: String,
    /// One sentence for support staff.
    pub summary: String,
    /// The source the address is counted and banned as.
    pub source: String,
    pub failures_in_window: u32,
    pub max_failures: u32,
    /// The list entry that decided, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_entry: Option<ListEntryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ban: Option<BanView>,
    /// The reason (as `reason`) a part of the policy in observe mode would have refused or
    /// delayed the login for; absent when observe mode held nothing back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_refuse: Option<String>,
}

impl DecisionView {
    pub fn new(explanation: &Explanation, login: String, protocol: String, now: Timestamp) -> DecisionView {
        DecisionView {
            ip: explanation.address.to_string(),
            login,
            protocol,
            status: explanation.reply.status,
            msg: explanation.reply.msg.clone(),
            verdict: explanation.decision.verdict().to_string(),
            reason: explanation.decision.reason().to_string(),
            summary: explanation.summary(),
            source: explanation.source.to_string(),
            failures_in_window: explanation.failures_in_window,
            max_failures: explanation.max_failures,
            list_entry: explanation.list_entry.as_ref().map(ListEntryView::new),
            ban: explanation.ban.as_deref().map(|b| BanView::new(b, now)),
            would_refuse: explanation.observed.as_ref().map(|d| d.reason().to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    /// Always `reloaded`.
    pub status: String,
    /// Settings that changed in the file but need a restart; their old values stay in force.
    pub restart_required: Vec<String>,
}
