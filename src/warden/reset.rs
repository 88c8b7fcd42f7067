//! After a password change: `mailwarden reset-login` forgives a login everywhere. Its wrong
//! guesses (the owner's old password on a forgotten device, their typos) stop counting toward
//! any source's ban, its quarantines end, and the bans that its guesses alone caused are
//! lifted, its IP+login refusals included. In cluster mode every node does the same (the store announces the reset).

use std::sync::Arc;

use super::Warden;
use crate::audit::AuditAction;
use crate::bans::Ban;
use crate::login;
use crate::network::Source;
use crate::principal::Principal;
use crate::store::StoreError;
use crate::warden::Counted;

/// What a reset changed.
#[derive(Debug, Clone, Default)]
pub struct LoginReset {
    /// The sources where the login's guesses were held (now forgiven).
    pub sources: Vec<Source>,
    /// Quarantines of its passwords that ended.
    pub quarantines_ended: usize,
    /// Bans lifted because the login's guesses alone had caused them.
    pub bans_lifted: Vec<Arc<Ban>>,
}

impl Warden {
    /// Forgives `login` on this node and in the cluster, and lifts the bans its guesses alone
    /// caused. Blocking (lifting a ban writes the store).
    pub fn reset_login(&self, login: &str, actor: &Principal) -> Result<LoginReset, StoreError> {
        let mut reset = self.reset_login_here(login);
        let key = login::key(login);
        // The login's own IP+login refusals, and bans of whole sources whose every guess was
        // that login's.
        let caused_by_login_alone = |ban: &Ban| match ban.refused_login() {
            Some(refused) => refused == key,
            None => !ban.cause.guesses.is_empty() && ban.cause.guesses.iter().all(|g| login::key(&g.login) == key),
        };
        for ban in self.bans().into_iter().filter(|ban| caused_by_login_alone(ban)) {
            if let Some(lifted) =
                self.lift_ban(ban.source, ban.refused_login(), crate::notify::LiftCause::ResetLogin, Some(actor))?
            {
                reset.bans_lifted.push(lifted);
            }
        }
        let announced = self.shared.store.announce_login_reset(login);
        self.shared.metrics.store_result("announce_login_reset", &announced);
        announced?;
        tracing::info!(
            login,
            sources = reset.sources.len(),
            quarantines_ended = reset.quarantines_ended,
            bans_lifted = reset.bans_lifted.len(),
            "login reset after a password change"
        );
        let detail = format!("{} sources forgiven, {} bans lifted", reset.sources.len(), reset.bans_lifted.len());
        self.record_change(actor, AuditAction::LoginReset, &login::key(login), detail);
        Ok(reset)
    }

    /// Forgives `login` at `source` alone, here and in the cluster: its guesses from there
    /// stop counting and its quarantine there ends (a stale device whose owner has been told),
    /// recorded as `actor`'s. Whether anything was held. Blocking (the audit trail).
    pub fn forgive_login_at(&self, source: Source, login: &str, actor: &Principal) -> bool {
        let now = self.shared.clock.now();
        let held: Vec<String> = self
            .shared
            .failures
            .guesses(source, now)
            .into_iter()
            .filter(|g| login::key(&g.login) == login::key(login))
            .map(|g| g.login.to_string())
            .collect();
        for spelling in &held {
            self.forgive_at(source, spelling, now);
        }
        if !held.is_empty() {
            let detail = format!("forgiven at {source} only; its quarantine there ended");
            self.record_change(actor, AuditAction::LoginReset, &login::key(login), detail);
        }
        !held.is_empty()
    }

    /// Forgives `spelling` (as Dovecot spelt the login) at `source`, here and in the cluster.
    pub(super) fn forgive_at(&self, source: Source, spelling: &str, now: crate::clock::Timestamp) {
        self.shared.failures.forgive_login(source, spelling, now);
        if let Some(share) = self.shared.count_sharing.get() {
            share(Counted::Forgiven { source, login: spelling.to_string() });
        }
    }

    /// The part of a reset every node does: forgive the login's guesses held here, end their
    /// quarantines, and clear them from the cluster-wide count.
    pub fn reset_login_here(&self, login: &str) -> LoginReset {
        let shared = &*self.shared;
        let (sources, quarantines_ended) = shared.failures.forgive_login_everywhere(login, shared.clock.now());
        if let Some(share) = shared.count_sharing.get() {
            for source in &sources {
                share(Counted::Success { source: *source, login: login.to_string() });
            }
        }
        LoginReset { sources, quarantines_ended, bans_lifted: Vec::new() }
    }
}
