//! Self-service unblock on the `Warden`: what the public page shows a visitor about its own
//! address, and lifting the visitor's own ban after a solved challenge, within the daily limit
//! and never for an administrator's block.

use std::net::IpAddr;
use std::sync::Arc;

use altcha_lib_rs::Payload;

use super::Warden;
use crate::access::Standing;
use crate::bans::Ban;
use crate::events::{Event, EventKind};
use crate::network::Source;
use crate::selfservice::ChallengeError;
use crate::store::StoreError;

/// What the page knows about its visitor.
#[derive(Debug, Clone)]
pub struct VisitorStatus {
    pub address: IpAddr,
    pub source: Source,
    pub ban: Option<Arc<Ban>>,
    /// On the administrators' blocked list: not for self-service.
    pub admin_block: bool,
    pub unblocks_today: u32,
    pub max_unblocks_per_day: u32,
}

/// Why a self-unblock was refused.
#[derive(Debug, thiserror::Error)]
pub enum SelfUnblockError {
    #[error("this address is not blocked.")]
    NotBanned,
    #[error("this address is blocked by the administrators.")]
    AdminBlock,
    #[error("this address was unblocked {count} times today already.")]
    LimitReached { count: u32 },
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    #[error("the server could not record the change; try again in a minute.")]
    Store(#[from] StoreError),
}

impl SelfUnblockError {
    /// The `result` label of the self-unblock metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SelfUnblockError::NotBanned => "not_banned",
            SelfUnblockError::AdminBlock => "admin_block",
            SelfUnblockError::LimitReached { .. } => "limit_reached",
            SelfUnblockError::Challenge(_) => "challenge_failed",
            SelfUnblockError::Store(_) => "store_error",
        }
    }
}

impl Warden {
    pub fn visitor_status(&self, address: IpAddr) -> VisitorStatus {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let source = policy.autoban.grouping.source_of(address);
        VisitorStatus {
            address,
            source,
            ban: shared.bans.active_for_address(address, policy.autoban.grouping, now),
            admin_block: matches!(self.standing(Some(address), now), Standing::Blocked(_)),
            unblocks_today: shared.self_service.unblocks_today(source),
            max_unblocks_per_day: policy.self_service.max_unblocks_per_day,
        }
    }

    /// Counts a page request from `visitor`: `false` when it is over the per-minute limit.
    pub fn self_service_request_allowed(&self, visitor: IpAddr) -> bool {
        let per_minute = self.shared.policy.load().self_service.max_requests_per_minute;
        let allowed = self.shared.self_service.request_allowed(visitor, per_minute);
        if !allowed {
            self.shared.metrics.self_unblocks.with_label_values(&["rate_limited"]).inc();
        }
        allowed
    }

    /// A proof-of-work challenge for `visitor`.
    pub fn self_service_challenge(&self, visitor: IpAddr) -> Option<altcha_lib_rs::Challenge> {
        self.shared.self_service.challenge(visitor, &self.shared.policy.load().self_service)
    }

    /// Lifts `visitor`'s own ban after a solved challenge. Blocking.
    pub fn self_unblock(&self, visitor: IpAddr, payload: &Payload) -> Result<Arc<Ban>, SelfUnblockError> {
        let result = self.try_self_unblock(visitor, payload);
        let label = match &result {
            Ok(_) => "unblocked",
            Err(e) => e.label(),
        };
        self.shared.metrics.self_unblocks.with_label_values(&[label]).inc();
        result
    }

    fn try_self_unblock(&self, visitor: IpAddr, payload: &Payload) -> Result<Arc<Ban>, SelfUnblockError> {
        let shared = &*self.shared;
        let status = self.visitor_status(visitor);
        if status.admin_block {
            return Err(SelfUnblockError::AdminBlock);
        }
        // The ban's own source: one placed before a reload changed the grouping covers the
        // network it was placed on, which may not be the visitor's source now.
        let Some(banned) = status.ban.as_ref().map(|ban| ban.source) else {
            return Err(SelfUnblockError::NotBanned);
        };
        if status.unblocks_today >= status.max_unblocks_per_day {
            return Err(SelfUnblockError::LimitReached { count: status.unblocks_today });
        }
        shared.self_service.verify(visitor, payload)?;
        let lifted = self.lift_ban(banned, "self_service")?.ok_or(SelfUnblockError::NotBanned)?;
        shared.self_service.count_unblock(status.source);
        shared.journal.event(Event {
            at: shared.clock.now(),
            kind: EventKind::SelfUnblock,
            login: lifted.cause.login.clone(),
            ip: Some(visitor),
            protocol: lifted.cause.protocol.clone(),
            device_id: String::new(),
            rule: None,
            detail: format!(
                "{} unblocked on the self-service page ({} of {} today)",
                status.source,
                status.unblocks_today + 1,
                status.max_unblocks_per_day
            ),
        });
        Ok(lifted)
    }
}
