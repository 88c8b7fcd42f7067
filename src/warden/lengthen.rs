//! Lengthening a ban by hand: support staff keep a guesser out longer than the automatic
//! length. The ban is stored with its new end through the same store call that placed it, so
//! the index, the host firewall (whose set timeout is the ban's end), a restart and the other
//! cluster nodes (which adopt a saved ban as they adopt a new one) all follow. A ban is never
//! shortened this way (lifting it is the way to end it early), nor lengthened past
//! `LONGEST_LENGTHENING` from now.

use std::sync::Arc;
use std::time::Duration;

use super::{Warden, lock};
use crate::audit::AuditAction;
use crate::bans::Ban;
use crate::clock::Timestamp;
use crate::network::Source;
use crate::notify::Notice;
use crate::principal::Principal;
use crate::store::StoreError;

/// The latest end a lengthened ban may get, from now.
pub const LONGEST_LENGTHENING: Duration = Duration::from_secs(30 * 24 * 3600);
/// `LONGEST_LENGTHENING` as messages say it.
pub const LONGEST_LENGTHENING_TEXT: &str = "30 days";

/// How much longer: by a length, or until a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lengthening {
    By(Duration),
    Until(Timestamp),
}

impl Lengthening {
    /// From a request's two fields, exactly one of them given: `by` a length such as `2h`,
    /// `until` an RFC 3339 time.
    pub fn from_fields(by: Option<&str>, until: Option<&str>) -> Result<Lengthening, LengthenError> {
        let invalid = |field, message: String| LengthenError::Invalid { field, message };
        match (by.map(str::trim).filter(|t| !t.is_empty()), until.map(str::trim).filter(|t| !t.is_empty())) {
            (Some(by), None) => {
                crate::clock::checked_length(by).map(Lengthening::By).map_err(|e| invalid("by", format!("by: {e}")))
            }
            (None, Some(until)) => Timestamp::parse_rfc3339(until).map(Lengthening::Until).ok_or_else(|| {
                let quoted: String = until.chars().take(40).collect();
                invalid("until", format!("until: {quoted:?} is not an RFC 3339 time such as 2026-12-24T18:00:00Z"))
            }),
            (Some(_), Some(_)) => Err(invalid("by", "by: give either by or until, not both".into())),
            (None, None) => {
                Err(invalid("by", "by: how much longer, such as \"2h\" (or until: an RFC 3339 time)".into()))
            }
        }
    }

    /// The request's field, for errors.
    pub fn field(self) -> &'static str {
        match self {
            Lengthening::By(_) => "by",
            Lengthening::Until(_) => "until",
        }
    }
}

/// Why a ban was not lengthened; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum LengthenError {
    #[error("{0} is not banned")]
    NotBanned(String),
    /// A value the caller can correct; the message starts with the field's name.
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Warden {
    /// Gives the active ban on `source` (`login`: that login's IP+login refusal) a later end,
    /// stores and announces it, and records it as `actor`'s. Blocking.
    pub fn lengthen_ban(
        &self,
        source: Source,
        login: Option<&str>,
        lengthening: Lengthening,
        actor: &Principal,
    ) -> Result<Arc<Ban>, LengthenError> {
        let shared = &*self.shared;
        let key = login.map(crate::login::key);
        let banned = match &key {
            Some(key) => self.login_refusal(source, key),
            None => self.ban(source),
        };
        let banned = banned.ok_or_else(|| {
            LengthenError::NotBanned(key.as_ref().map_or(source.to_string(), |k| format!("{k} from {source}")))
        })?;
        let now = shared.clock.now();
        let field = lengthening.field();
        let ends = match lengthening {
            Lengthening::By(by) if by.is_zero() => {
                return Err(LengthenError::Invalid { field, message: "by: must be longer than nothing".into() });
            }
            Lengthening::By(by) => banned.expires_at.plus(by),
            Lengthening::Until(until) if until <= banned.expires_at => {
                return Err(LengthenError::Invalid {
                    field,
                    message: format!(
                        "until: {} is not after the ban's end ({}); a ban is not shortened this way, lift it instead",
                        until.rfc3339(),
                        banned.expires_at.rfc3339()
                    ),
                });
            }
            Lengthening::Until(until) => until,
        };
        let latest = now.plus(LONGEST_LENGTHENING);
        if ends > latest {
            return Err(LengthenError::Invalid {
                field,
                message: format!(
                    "{field}: the ban would end {}, past the latest a ban is lengthened to ({LONGEST_LENGTHENING_TEXT} from now, {})",
                    ends.rfc3339(),
                    latest.rfc3339()
                ),
            });
        }
        let lengthened = Arc::new(Ban { expires_at: ends, ..(*banned).clone() });
        let saved = shared.store.save_ban(&lengthened);
        shared.metrics.store_result("save_ban", &saved);
        saved?;
        lock(&shared.unsaved_bans).remove(&lengthened.key());
        // The index's watcher tells the host firewall, whose element now ends later.
        shared.bans.insert(lengthened.clone());
        shared.notifier.publish_durably(Notice::ban_lengthened_by(&lengthened, now, &actor.name));
        tracing::info!(ban = lengthened.describe(), until = %ends.rfc3339(), actor = actor.name, "ban lengthened");
        let whose =
            key.map(|k| format!("IP+login refusal of {k}")).unwrap_or_else(|| format!("{} ban", banned.reason.label()));
        let detail = format!("{whose} lengthened from {} to {}", banned.expires_at.rfc3339(), ends.rfc3339());
        self.record_change(actor, AuditAction::BanLengthened, &source.to_string(), detail);
        Ok(lengthened)
    }
}
