//! Routes for one login across every source: the reset after a password change.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::views::{BanView, ErrorBody};
use super::{Admin, ApiError, blocking};
use crate::warden::Warden;

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
    // Checked as sent: a login padded past the bound, or with a control character anywhere,
    // is refused, not trimmed into shape.
    let sent = login.into_inner();
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
