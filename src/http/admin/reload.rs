//! `POST /api/v1/reload`: reload policy.toml now, as SIGHUP does, and say how it went.

use actix_web::{HttpResponse, web};

use super::views::{ErrorBody, Reloaded};
use super::{Admin, ApiError};
use crate::reload::Reloader;

#[utoipa::path(post, path = "/api/v1/reload", tag = "service",
    responses((status = 200, description = "The policy file was reloaded.", body = Reloaded),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 422, description = "The file is invalid; the previous policy stays in force.", body = ErrorBody)))]
pub async fn reload(_: Admin, reloader: web::Data<Reloader>) -> Result<HttpResponse, ApiError> {
    let handle = reloader.into_inner();
    let result = crate::http::run_blocking(move || handle.reload("admin API")).await?;
    match result {
        Ok(reloaded) => Ok(HttpResponse::Ok().json(Reloaded {
            status: "reloaded".into(),
            restart_required: reloaded.restart_required.iter().map(|s| s.to_string()).collect(),
        })),
        Err(e) => Err(ApiError::InvalidConfig(e.to_string())),
    }
}
