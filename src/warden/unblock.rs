//! Self-service unblock on the `Warden`: what the public page shows a visitor about its own
//! source, and lifting the visitor's own ban after a solved challenge, within the daily limit
//! and never for an administrator's block. Everything is per source (the address grouped as
//! bans group it), so moving within one's IPv6 /64 changes nothing. The used challenges and
//! the daily count are in the store, which every node of a cluster shares and a restart keeps;
//! when the store cannot answer, nothing is unblocked.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use altcha_lib_rs::Payload;

use super::Warden;
use crate::access::Standing;
use crate::bans::{Ban, BanReason};
use crate::events::{Event, EventKind};
use crate::network::Source;
use crate::selfservice::{self, ChallengeError};
use crate::store::{DailyCount, StoreError};

/// How long a source's count of self-unblocks runs from its first one: "per day".
const UNBLOCK_DAY: Duration = Duration::from_secs(24 * 3600);

/// What the page knows about its visitor.
#[derive(Debug, Clone)]
pub struct VisitorStatus {
    pub address: IpAddr,
    pub source: Source,
    pub ban: Option<Arc<Ban>>,
    /// A subnet ban holding the address (several sources of its network were banned): not for
    /// self-service, since lifting it would let every source of the network back in, and it
    /// keeps refusing the visitor whatever happens to `ban`.
    pub subnet_ban: Option<Arc<Ban>>,
    /// The source's IP+login refusals: logins refused from here while the others are not.
    pub login_refusals: Vec<Arc<Ban>>,
    /// On the administrators' blocked list: not for self-service.
    pub admin_block: bool,
    /// The source's self-unblocks in its day (read only for a visitor under a ban it could
    /// lift, 0 otherwise); `None` when the store could not say (then the page offers no
    /// unblocking).
    pub unblocks_today: Option<u32>,
    pub max_unblocks_per_day: u32,
}

/// Why a self-unblock was refused.
#[derive(Debug, thiserror::Error)]
pub enum SelfUnblockError {
    #[error("this address is not blocked.")]
    NotBanned,
    #[error("this address is blocked by the administrators.")]
    AdminBlock,
    #[error("this address's whole network ({network}) is blocked.")]
    SubnetBan { network: Source, until: crate::clock::Timestamp },
    #[error("this address was unblocked {count} times today already.")]
    LimitReached { count: u32 },
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    #[error("the server could not check or record the unblock; try again in a few minutes.")]
    Store(#[from] StoreError),
}

impl SelfUnblockError {
    /// The `result` label of the self-unblock metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SelfUnblockError::NotBanned => "not_banned",
            SelfUnblockError::AdminBlock => "admin_block",
            SelfUnblockError::SubnetBan { .. } => "subnet_ban",
            SelfUnblockError::LimitReached { .. } => "limit_reached",
            SelfUnblockError::Challenge(_) => "challenge_failed",
            SelfUnblockError::Store(_) => "store_error",
        }
    }
}

impl Warden {
    /// What the page shows `address`. Blocking (reads the day's count from the store when
    /// `address` is banned).
    pub fn visitor_status(&self, address: IpAddr) -> VisitorStatus {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        let now = shared.clock.now();
        let source = policy.autoban.grouping.source_of(address);
        let covering = shared.bans.all_active_for_address(address, policy.autoban.grouping, now);
        let subnet_ban = covering.iter().find(|ban| ban.reason == BanReason::Subnet).cloned();
        let ban = covering.into_iter().next();
        let login_refusals = shared.bans.login_refusals(source, now);
        let admin_block = matches!(self.standing(Some(address), now), Standing::Blocked(_));
        // Only a visitor who could unblock needs the count: other views cost the store nothing.
        let could_unblock = (ban.is_some() || !login_refusals.is_empty()) && !admin_block && subnet_ban.is_none();
        let unblocks_today = if could_unblock {
            let unblocks = shared.store.self_unblocks(source, now);
            shared.metrics.store_result("read_self_unblocks", &unblocks);
            unblocks.ok()
        } else {
            Some(0)
        };
        VisitorStatus {
            address,
            source,
            ban,
            subnet_ban,
            login_refusals,
            admin_block,
            unblocks_today,
            max_unblocks_per_day: policy.self_service.max_unblocks_per_day,
        }
    }

    /// Counts a page request from `visitor`'s source: `false` when it is over the per-minute
    /// limit.
    pub fn self_service_request_allowed(&self, visitor: IpAddr) -> bool {
        let policy = self.shared.policy.load();
        let source = policy.autoban.grouping.source_of(visitor);
        let allowed = self.shared.page_requests.allowed(source, policy.self_service.max_requests_per_minute);
        if !allowed {
            self.shared.metrics.self_unblocks.with_label_values(&["rate_limited"]).inc();
        }
        allowed
    }

    /// A proof-of-work challenge for `visitor`'s source; `None` when the store cannot give the
    /// key to sign it with. Blocking.
    pub fn self_service_challenge(&self, visitor: IpAddr) -> Option<altcha_lib_rs::Challenge> {
        let policy = self.shared.policy.load();
        let key = self.challenge_key().ok()?;
        let source = policy.autoban.grouping.source_of(visitor);
        selfservice::challenge(&key, source, &policy.self_service, self.shared.clock.now())
    }

    /// The store's key for challenges, read each time rather than kept: should a cluster's
    /// Redis lose its data, every node moves to the one new key together.
    fn challenge_key(&self) -> Result<String, StoreError> {
        let key = match selfservice::new_challenge_key() {
            Some(candidate) => self.shared.store.self_service_key(&candidate),
            None => Err(StoreError::operation("making a self-service key", "the system gave no randomness")),
        };
        self.shared.metrics.store_result("read_self_service_key", &key);
        key
    }

    /// Lifts `visitor`'s own ban after a solved challenge, or, with no ban, the logins its
    /// source is refused (IP+login refusals), all as one unblock of the day. Blocking.
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
        if let Some(subnet) = &status.subnet_ban {
            return Err(SelfUnblockError::SubnetBan { network: subnet.source, until: subnet.expires_at });
        }
        // The ban's own source: one placed before a reload changed the grouping covers the
        // network it was placed on, which may not be the visitor's source now.
        let lifting: Vec<(Source, Option<String>)> = match &status.ban {
            Some(ban) => vec![(ban.source, None)],
            None => status.login_refusals.iter().map(|refusal| refusal.key()).collect(),
        };
        if lifting.is_empty() {
            return Err(SelfUnblockError::NotBanned);
        }
        if let Some(count) = status.unblocks_today.filter(|count| *count >= status.max_unblocks_per_day) {
            return Err(SelfUnblockError::LimitReached { count });
        }
        let now = shared.clock.now();
        let solved = selfservice::verify(&self.challenge_key()?, status.source, payload, now)?;
        let spent = shared.store.spend_challenge(&solved.id, solved.expires_at, now);
        shared.metrics.store_result("spend_challenge", &spent);
        if !spent? {
            return Err(ChallengeError::Replayed.into());
        }
        // Counted before the lift, in one step with the check, so two requests (on two nodes)
        // cannot both take the day's last unblock; taken back if the lift does not happen.
        let counted = shared.store.count_self_unblock(status.source, status.max_unblocks_per_day, now, UNBLOCK_DAY);
        shared.metrics.store_result("count_self_unblock", &counted);
        let count = match counted? {
            DailyCount::Counted(count) => count,
            DailyCount::AtLimit(count) => return Err(SelfUnblockError::LimitReached { count }),
        };
        let (mut lifted, mut failed) = (None, None);
        for (source, refused_login) in &lifting {
            match self.lift_ban(*source, refused_login.as_deref(), crate::notify::LiftCause::SelfService, None) {
                Ok(this) => lifted = lifted.or(this),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let lifted = match (lifted, failed) {
            (Some(lifted), None) => lifted,
            (_, failed) => {
                let taken_back = shared.store.uncount_self_unblock(status.source);
                shared.metrics.store_result("uncount_self_unblock", &taken_back);
                return Err(failed.map_or(SelfUnblockError::NotBanned, SelfUnblockError::Store));
            }
        };
        shared.journal.event(Event {
            observed: false,
            at: now,
            kind: EventKind::SelfUnblock,
            login: lifted.cause.login.clone(),
            ip: Some(visitor),
            protocol: lifted.cause.protocol.clone(),
            device_id: String::new(),
            rule: None,
            detail: format!(
                "{} unblocked on the self-service page ({} of {} today)",
                status.source, count, status.max_unblocks_per_day
            ),
        });
        self.notify_durably(crate::notify::Notice::self_unblock(&lifted, now));
        Ok(lifted)
    }
}
