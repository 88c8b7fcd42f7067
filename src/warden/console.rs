//! The console's sessions as the warden keeps them: signing in with a token (through the
//! same guard against guessing as the API's bearer tokens), finding who a session is on each
//! request (asking again what its token may do, so a revoked token's sessions end at once),
//! and signing out.

use std::net::IpAddr;

use subtle::ConstantTimeEq;

use super::Warden;
use super::tokens::AuthRefusal;
use crate::principal::{Principal, Scope};
use crate::sessions::{Flash, SessionView};
use crate::tokens::{self, TokenDigest};

/// Why a sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInRefusal {
    #[error("that token is not in force (wrong, revoked or expired)")]
    Wrong,
    #[error("too many wrong tokens from your address; try again in a minute")]
    RateLimited,
    #[error("a metrics token reaches only /metrics and cannot open the console")]
    MetricsScope,
    #[error("{0}")]
    Unavailable(String),
}

/// A session found for a request: who it is, and its CSRF value and message.
pub struct ConsoleSession {
    pub principal: Principal,
    pub view: SessionView,
}

impl Warden {
    /// Opens a console session for `token`, presented from `client`; returns the cookie's
    /// value and who signed in.
    pub fn console_sign_in(&self, token: &str, client: IpAddr) -> Result<(String, Principal), SignInRefusal> {
        let counted = &self.shared.metrics.console_sign_ins;
        let principal = match self.authenticate(Some(token), client) {
            Ok(principal) => principal,
            Err(AuthRefusal::Unauthorized) => {
                counted.with_label_values(&["wrong"]).inc();
                return Err(SignInRefusal::Wrong);
            }
            Err(AuthRefusal::RateLimited) => {
                counted.with_label_values(&["rate_limited"]).inc();
                return Err(SignInRefusal::RateLimited);
            }
        };
        if principal.scope == Scope::Metrics {
            counted.with_label_values(&["metrics_scope"]).inc();
            return Err(SignInRefusal::MetricsScope);
        }
        let idle = self.policy().console.idle_timeout;
        let cookie =
            self.shared.sessions.open(tokens::digest(token), self.now(), idle).map_err(SignInRefusal::Unavailable)?;
        counted.with_label_values(&["ok"]).inc();
        Ok((cookie, principal))
    }

    /// The session of `cookie`, if it is open, not idle, and its token still in force.
    pub fn console_session(&self, cookie: &str) -> Option<ConsoleSession> {
        let idle = self.policy().console.idle_timeout;
        let view = self.shared.sessions.touch(cookie, self.now(), idle)?;
        match self.principal_of_credential(&view.credential) {
            Some(principal) if principal.scope != Scope::Metrics => Some(ConsoleSession { principal, view }),
            _ => {
                self.shared.sessions.close(cookie);
                None
            }
        }
    }

    /// Leaves a message for the next page of the session of `cookie`.
    pub fn console_flash(&self, cookie: &str, success: bool, text: String) {
        self.shared.sessions.flash(cookie, Flash { success, text });
    }

    pub fn console_sign_out(&self, cookie: &str) {
        self.shared.sessions.close(cookie);
    }

    /// Who the token with digest `credential` is now: the policy file's `auth.admin_token`
    /// (compared in constant time) or a stored token in force.
    fn principal_of_credential(&self, credential: &TokenDigest) -> Option<Principal> {
        let policy = self.policy();
        if let Some(admin) = &policy.auth.admin_token
            && bool::from(tokens::digest(admin.expose()).ct_eq(credential))
        {
            return Some(Principal::built_in_admin());
        }
        self.shared.tokens.principal_of(credential, self.now())
    }
}
