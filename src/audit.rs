//! The audit trail's records: who (a `Principal`'s name) changed what through the admin API,
//! and when. Written by the warden's change methods after the change succeeded, stored by both
//! backends, bounded by `MAX_RECORDS` (the oldest go first, as the block log's do).

use crate::clock::Timestamp;

/// What was changed. Its label is the `action` the API, the CLI and the store use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    BanLifted,
    BanLiftedAndTrusted,
    ListEntryAdded,
    ListEntryRemoved,
    FirewallReplaced,
    FirewallReset,
    RuleAdded,
    RuleMoved,
    RuleDeleted,
    DefaultActionSet,
    PolicyReloaded,
    LoginReset,
    TokenCreated,
    TokenRevoked,
    BanLengthened,
}

impl AuditAction {
    pub const ALL: [AuditAction; 15] = [
        AuditAction::BanLifted,
        AuditAction::BanLiftedAndTrusted,
        AuditAction::ListEntryAdded,
        AuditAction::ListEntryRemoved,
        AuditAction::FirewallReplaced,
        AuditAction::FirewallReset,
        AuditAction::RuleAdded,
        AuditAction::RuleMoved,
        AuditAction::RuleDeleted,
        AuditAction::DefaultActionSet,
        AuditAction::PolicyReloaded,
        AuditAction::LoginReset,
        AuditAction::TokenCreated,
        AuditAction::TokenRevoked,
        AuditAction::BanLengthened,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AuditAction::BanLifted => "ban_lifted",
            AuditAction::BanLiftedAndTrusted => "ban_lifted_and_trusted",
            AuditAction::ListEntryAdded => "list_entry_added",
            AuditAction::ListEntryRemoved => "list_entry_removed",
            AuditAction::FirewallReplaced => "firewall_replaced",
            AuditAction::FirewallReset => "firewall_reset",
            AuditAction::RuleAdded => "rule_added",
            AuditAction::RuleMoved => "rule_moved",
            AuditAction::RuleDeleted => "rule_deleted",
            AuditAction::DefaultActionSet => "default_action_set",
            AuditAction::PolicyReloaded => "policy_reloaded",
            AuditAction::LoginReset => "login_reset",
            AuditAction::TokenCreated => "token_created",
            AuditAction::TokenRevoked => "token_revoked",
            AuditAction::BanLengthened => "ban_lengthened",
        }
    }

    /// Whether it changed a mailbox's or domain's firewall rules (its target is their key).
    pub fn is_firewall_change(self) -> bool {
        matches!(
            self,
            AuditAction::FirewallReplaced
                | AuditAction::FirewallReset
                | AuditAction::RuleAdded
                | AuditAction::RuleMoved
                | AuditAction::RuleDeleted
                | AuditAction::DefaultActionSet
        )
    }

    pub fn from_label(text: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|action| action.label() == text)
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: Timestamp,
    /// The acting principal's name (a token's name, or `admin-token`).
    pub actor: String,
    pub action: AuditAction,
    /// What it was done to: an address or network, a mailbox or `@domain` key, a login, a
    /// token's name; empty for a reload.
    pub target: String,
    /// What changed, in a few words ("trusted: 203.0.113.0/24", "rule 2 up").
    pub detail: String,
}

/// The longest `detail` stored; longer ones are cut on a character boundary.
pub const MAX_DETAIL_LEN: usize = 400;

impl AuditRecord {
    pub fn new(at: Timestamp, actor: &str, action: AuditAction, target: &str, detail: String) -> AuditRecord {
        AuditRecord {
            at,
            actor: actor.to_string(),
            action,
            target: target.to_string(),
            detail: crate::wire::cut(&detail, MAX_DETAIL_LEN).to_string(),
        }
    }
}

/// The audit trail keeps at most this many records, newest first.
pub const MAX_RECORDS: usize = 100_000;

/// A query of the audit trail: every field set narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<AuditAction>,
    pub target: Option<String>,
    pub since: Option<Timestamp>,
    pub limit: usize,
    pub offset: usize,
}

impl AuditFilter {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.actor.as_ref().is_none_or(|actor| *actor == record.actor)
            && self.action.is_none_or(|action| action == record.action)
            && self.target.as_ref().is_none_or(|target| *target == record.target)
            && self.since.is_none_or(|since| record.at >= since)
    }
}
