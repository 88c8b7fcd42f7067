//! The admin API's tokens: who a request is (`authenticate`, memory only, with the
//! per-address guard against guessing), and creating, listing and revoking tokens (stored
//! as digests, announced to the other nodes so a revocation holds everywhere at once).

use std::net::IpAddr;

use super::Warden;
use crate::audit::AuditAction;
use crate::clock::Timestamp;
use crate::principal::{Principal, Scope};
use crate::store::StoreError;
use crate::tokens::{self, TokenRecord};

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// No token, or one that is not (or no longer) in force.
    Unauthorized,
    /// Too many failures from this address within the minute.
    RateLimited,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("a token named {0} exists already; revoke it first or choose another name")]
    Exists(String),
    #[error("no token is named {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token just made: the secret is in no store and is shown once.
pub struct NewToken {
    pub record: TokenRecord,
    pub secret: String,
}

impl Warden {
    /// The principal `presented` (an `Authorization: Bearer` token, if any) acts as, asked by
    /// `client`. The policy file's `auth.admin_token` is compared in constant time; the stored
    /// tokens are found by digest (see `tokens` for why that leaks nothing). Never blocks.
    pub fn authenticate(&self, presented: Option<&str>, client: IpAddr) -> Result<Principal, AuthRefusal> {
        let shared = &*self.shared;
        let now = shared.clock.now();
        let failures = &shared.metrics.admin_auth_failures;
        if shared.sign_in.is_limited(client, now) {
            failures.with_label_values(&["rate_limited"]).inc();
            return Err(AuthRefusal::RateLimited);
        }
        // A request without a token guesses nothing, so only wrong tokens count toward the
        // address's limit.
        let Some(presented) = presented else {
            failures.with_label_values(&["missing"]).inc();
            return Err(AuthRefusal::Unauthorized);
        };
        if shared.policy.load().auth.admin_token.as_ref().is_some_and(|t| t.matches(presented.as_bytes())) {
            return Ok(Principal::built_in_admin());
        }
        match shared.tokens.authenticate(presented, now) {
            Some(found) => {
                if let Some(hour) = found.touched {
                    self.note_token_use(&found.principal.name, hour);
                }
                Ok(found.principal)
            }
            None => {
                failures.with_label_values(&["wrong"]).inc();
                shared.sign_in.failed(client, now);
                Err(AuthRefusal::Unauthorized)
            }
        }
    }

    /// Stores a token's new last-used hour on a thread of its own, so authentication never
    /// waits for the store; losing it (a crash, a store outage) loses an hour of precision.
    fn note_token_use(&self, name: &str, hour: Timestamp) {
        let (store, metrics, name) = (self.shared.store.clone(), self.shared.metrics.clone(), name.to_string());
        let spawned = std::thread::Builder::new().name("token-use".into()).spawn(move || {
            let touched = store.touch_token(&name, hour);
            metrics.store_result("touch_token", &touched);
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot record a token's use");
        }
    }

    /// Makes a token named `name` with `scope`, ending at `expires_at` if given. Blocking.
    pub fn create_token(
        &self,
        actor: &Principal,
        name: &str,
        scope: Scope,
        expires_at: Option<Timestamp>,
    ) -> Result<NewToken, TokenError> {
        tokens::check_name(name).map_err(TokenError::Invalid)?;
        let now = self.shared.clock.now();
        let secret = tokens::generate().map_err(TokenError::Invalid)?;
        let record = TokenRecord {
            name: name.to_string(),
            scope,
            digest: tokens::digest(&secret),
            created_at: now,
            expires_at,
            last_used: None,
        };
        let created = self.shared.store.create_token(&record);
        self.shared.metrics.store_result("save_token", &created);
        if !created? {
            return Err(TokenError::Exists(name.to_string()));
        }
        self.reload_tokens()?;
        let expiry = expires_at.map_or_else(|| "no expiry".to_string(), |t| format!("expires {}", t.rfc3339()));
        self.record_change(actor, AuditAction::TokenCreated, name, format!("scope {}, {expiry}", record.scope));
        Ok(NewToken { record, secret })
    }

    /// Revokes the token named `name`, here at once and on the other nodes as soon as they
    /// hear of it. Blocking.
    pub fn revoke_token(&self, actor: &Principal, name: &str) -> Result<TokenRecord, TokenError> {
        let existing = self.token_list()?.into_iter().find(|t| t.name == name);
        let deleted = self.shared.store.delete_token(name);
        self.shared.metrics.store_result("delete_token", &deleted);
        let deleted = deleted?;
        self.reload_tokens()?;
        match existing {
            Some(record) if deleted => {
                self.record_change(actor, AuditAction::TokenRevoked, name, format!("scope {}", record.scope));
                Ok(record)
            }
            _ => Err(TokenError::NotFound(name.to_string())),
        }
    }

    /// The stored tokens, with their last use on any node. Blocking.
    pub fn token_list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let loaded = self.shared.store.tokens();
        self.shared.metrics.store_result("load_tokens", &loaded);
        loaded
    }

    /// Rereads the tokens from the store (after a change here, or announced by another node).
    /// Blocking.
    pub fn reload_tokens(&self) -> Result<(), StoreError> {
        let records = self.token_list()?;
        self.shared.tokens.replace(records);
        Ok(())
    }
}
