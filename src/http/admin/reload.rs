//! `POST /api/v1/reload`: reload policy.toml now, as SIGHUP does, and say how it went.

use actix_web::{HttpResponse, web};

use super::views::{ErrorBody, Reloaded};
use super::{Admin, ApiError};
use crate::audit::AuditAction;
use crate::reload::Reloader;
use crate::warden::Warden;

#[utoipa::path(post, path = "/api/v1/reload", tag = "service",
    responses((status = 200, description = "The policy file was reloaded.", body = Reloaded),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 422, description = "The file is invalid; the previous policy stays in force.", body = ErrorBody)))]
pub async fn reload(
    admin: Admin,
    reloader: web::Data<Reloader>,
    warden: web::Data<Warden>,
) -> Result<HttpResponse, ApiError> {
    let (handle, warden) = (reloader.into_inner(), warden.get_ref().clone());
    let result = crate::http::run_blocking(move || {
        let result = handle.reload("admin API");
        if let Ok(reloaded) = &result {
            let detail = match reloaded.restart_required.as_slice() {
                [] => "reloaded".to_string(),
                keys => format!("reloaded; a restart is needed for {}", keys.join(", ")),
            };
            warden.record_change(&admin.0, AuditAction::PolicyReloaded, "", detail);
        }
        result
    })
    .await?;
    match result {
        Ok(reloaded) => Ok(HttpResponse::Ok().json(Reloaded {
            status: "reloaded".into(),
            restart_required: reloaded.restart_required.iter().map(|s| s.to_string()).collect(),
        })),
        Err(e) => Err(ApiError::InvalidConfig(e.to_string())),
    }
}
