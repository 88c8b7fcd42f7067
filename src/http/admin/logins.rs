//! Routes for one login across every source: its history (where it logged in from, what
//! was refused), and the reset after a password change.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::events::EventView;
use super::views::{BanView, ErrorBody};
use super::why::GuessView;
use super::{Admin, ApiError, blocking};
use crate::warden::{LoginHistory, Warden, device_name};

/// What `POST /api/v1/logins/{login}/reset` changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResetView {
    pub login: String,
    /// The sources where the login's wrong guesses were held: they no longer count toward
    /// a ban of any of them.
    pub sources: Vec<String>,
    /// Quarantines of its old passwords that ended.
    pub quarantines_ended: usize,
    /// Bans lifted because the login's wrong guesses alone had caused them.
    pub bans_lifted: Vec<BanView>,
}

#[utoipa::path(post, path = "/api/v1/logins/{login}/reset", tag = "bans",
    params(("login" = String, Path, max_length = 256, description = "The login whose password was changed, in any case.")),
    responses((status = 200, description = "The login's wrong guesses are forgiven everywhere, its quarantines ended, and the bans they alone caused lifted.", body = LoginResetView),
              (status = 400, description = "An empty or overlong login.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 503, description = "The state store failed; bans may be left in force.", body = ErrorBody)))]
pub async fn reset_login(
    admin: Admin,
    warden: web::Data<Warden>,
    login: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let login = checked_login(&login)?;
    let handle = warden.get_ref().clone();
    let asked = login.clone();
    let reset = blocking(move || handle.reset_login(&asked, &admin.0)).await?;
    let now = warden.now();
    Ok(HttpResponse::Ok().json(LoginResetView {
        login,
        sources: reset.sources.iter().map(|s| s.to_string()).collect(),
        quarantines_ended: reset.quarantines_ended,
        bans_lifted: reset.bans_lifted.iter().map(|b| BanView::new(b, now)).collect(),
    }))
}

/// The login of a path, trimmed. Checked as sent: a login padded past the bound, or with a
/// control character anywhere, is refused, not trimmed into shape.
fn checked_login(sent: &str) -> Result<String, ApiError> {
    let login = sent.trim().to_string();
    if login.is_empty() || sent.len() > crate::wire::MAX_LOGIN_LEN || sent.chars().any(char::is_control) {
        return Err(ApiError::InvalidField {
            field: "login",
            message: format!(
                "login: give the login as Dovecot sends it, 1 to {} bytes without control characters",
                crate::wire::MAX_LOGIN_LEN
            ),
        });
    }
    Ok(login)
}

/// A place a login logged in from successfully.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlaceView {
    /// The address, or the network of addresses counted as one source.
    pub source: String,
    /// Its country (ISO 3166 code) when the GeoIP database knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The protocol of the last success from there; empty when not recorded (older records).
    pub protocol: String,
    /// The mail app's IMAP ID string of the last success from there; empty when unknown.
    pub device_id: String,
    /// The app's name and version from that string, when it has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The last success from there (recorded at most once an hour per place).
    pub last_seen: String,
}

/// A wrong password held for the login now, and where it came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeldFailureView {
    pub source: String,
    pub guess: GuessView,
}

/// What `GET /api/v1/logins/{login}/history` answers; each list newest first, at most 100.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginHistoryView {
    pub login: String,
    pub places: Vec<PlaceView>,
    /// The block log's refusals of the login.
    pub refusals: Vec<EventView>,
    /// The wrong passwords the failure history holds for it (memory only).
    pub failures: Vec<HeldFailureView>,
}

#[utoipa::path(get, path = "/api/v1/logins/{login}/history", tag = "bans",
    params(("login" = String, Path, max_length = 256, description = "The login, in any case.")),
    responses((status = 200, description = "Where the login logged in from, and its recent refusals and wrong passwords.", body = LoginHistoryView),
              (status = 400, description = "Not a login.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "Another domain's login (a `domain:` token).", body = ErrorBody),
              (status = 503, description = "The state store failed.", body = ErrorBody)))]
pub async fn login_history(
    admin: Admin,
    warden: web::Data<Warden>,
    login: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = admin.mailbox(&checked_login(&login)?)?;
    let handle = warden.get_ref().clone();
    let asked = key.clone();
    let history = blocking(move || handle.login_history(&asked)).await?;
    Ok(HttpResponse::Ok().json(LoginHistoryView::new(key, &history, &warden)))
}

impl LoginHistoryView {
    pub fn new(login: String, history: &LoginHistory, warden: &Warden) -> LoginHistoryView {
        let now = warden.now();
        let policy = warden.policy();
        let stale_after = policy.stale_passwords.enabled.then_some(policy.stale_passwords.after);
        LoginHistoryView {
            login,
            places: history
                .places
                .iter()
                .map(|place| PlaceView {
                    source: place.known.source.to_string(),
                    country: place.country.as_ref().map(|c| c.as_str().to_string()),
                    protocol: place.known.protocol.clone(),
                    device_id: place.known.app.clone(),
                    app: device_name(&place.known.app),
                    last_seen: place.known.at.rfc3339(),
                })
                .collect(),
            refusals: history.refusals.iter().map(EventView::new).collect(),
            failures: history
                .failures
                .iter()
                .map(|(source, guess)| HeldFailureView {
                    source: source.to_string(),
                    guess: GuessView::new(guess, stale_after, now),
                })
                .collect(),
        }
    }
}
