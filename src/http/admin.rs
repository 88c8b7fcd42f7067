//! The admin listener: health, metrics and the ban API, for the CLI, scripts and Prometheus.
//! Every route needs `Authorization: Bearer <auth.admin_token>`; every error is JSON with a
//! stable `error` code.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;

use super::json_error;
use crate::bans::Ban;
use crate::network::parse_network;
use crate::store::StoreError;
use crate::warden::Warden;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/api/v1/bans", web::get().to(list_bans))
        .route("/api/v1/bans/{target:.+}", web::get().to(show_ban))
        .route("/api/v1/bans/{target:.+}", web::delete().to(delete_ban))
        .default_service(web::to(not_found));
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token (Authorization: Bearer <auth.admin_token>)")]
    Unauthorized,
    #[error("{0}")]
    InvalidAddress(String),
    #[error("{0} is not banned")]
    NotBanned(String),
    #[error("no such route")]
    NoRoute,
    #[error("the state store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidAddress(_) => "invalid_address",
            ApiError::NotBanned(_) => "not_banned",
            ApiError::NoRoute => "not_found",
            ApiError::Store(_) => "store_unavailable",
            ApiError::ShuttingDown => "unavailable",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InvalidAddress(_) => StatusCode::BAD_REQUEST,
            ApiError::NotBanned(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Store(_) | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = json_error(self.status_code(), self.code(), &self.to_string());
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Proof that the request carried the admin token; taking it as a handler argument is what
/// protects a route.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(warden) = request.app_data::<web::Data<Warden>>() else {
            return ready(Err(ApiError::Unauthorized));
        };
        let policy = warden.policy();
        let presented = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .map(str::trim);
        let ok = match (&policy.auth.admin_token, presented) {
            (Some(token), Some(presented)) => token.matches(presented.as_bytes()),
            _ => false,
        };
        ready(if ok {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        })
    }
}

/// A ban as the API shows it.
#[derive(Debug, Serialize)]
pub struct BanView {
    /// The banned source as users read it: an address, or a network for grouped sources.
    pub source: String,
    pub network: String,
    pub reason: &'static str,
    pub created_at: String,
    pub expires_at: String,
    pub remaining_seconds: u64,
    pub failures: u32,
    pub last_login: String,
    pub protocol: String,
    pub device_id: String,
}

impl BanView {
    fn new(ban: &Ban, now: crate::clock::Timestamp) -> BanView {
        BanView {
            source: ban.source.to_string(),
            network: ban.source.network().to_string(),
            reason: ban.reason.label(),
            created_at: ban.created_at.rfc3339(),
            expires_at: ban.expires_at.rfc3339(),
            remaining_seconds: now.until(ban.expires_at).as_secs(),
            failures: ban.failures,
            last_login: ban.cause.login.clone(),
            protocol: ban.cause.protocol.clone(),
            device_id: ban.cause.device_id.clone(),
        }
    }
}

async fn healthz(_: Admin, warden: web::Data<Warden>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "store": warden.store_backend(),
        "active_bans": warden.bans().len(),
        "tracked_sources": warden.tracked_sources(),
    }))
}

async fn metrics(_: Admin, warden: web::Data<Warden>) -> HttpResponse {
    warden.refresh_gauges();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(warden.metrics().render())
}

async fn list_bans(_: Admin, warden: web::Data<Warden>) -> HttpResponse {
    let now = warden.now();
    let bans: Vec<BanView> = warden.bans().iter().map(|b| BanView::new(b, now)).collect();
    HttpResponse::Ok().json(serde_json::json!({ "bans": bans }))
}

fn target_source(warden: &Warden, target: &str) -> Result<crate::network::Source, ApiError> {
    let network = parse_network(target).map_err(|e| ApiError::InvalidAddress(e.to_string()))?;
    Ok(warden.source_for(network))
}

async fn show_ban(
    _: Admin,
    warden: web::Data<Warden>,
    target: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let source = target_source(&warden, &target)?;
    let ban = warden
        .ban(source)
        .ok_or_else(|| ApiError::NotBanned(source.to_string()))?;
    Ok(HttpResponse::Ok().json(BanView::new(&ban, warden.now())))
}

async fn delete_ban(
    _: Admin,
    warden: web::Data<Warden>,
    target: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let source = target_source(&warden, &target)?;
    let handle = warden.get_ref().clone();
    let lifted = web::block(move || handle.unban(source))
        .await
        .map_err(|_| ApiError::ShuttingDown)??;
    match lifted {
        Some(ban) => Ok(HttpResponse::Ok()
            .json(serde_json::json!({ "unbanned": BanView::new(&ban, warden.now()) }))),
        None => Err(ApiError::NotBanned(source.to_string())),
    }
}

async fn not_found(_: Admin) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute)
}
