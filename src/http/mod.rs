//! HTTP glue: the only place that knows actix-web. `policy` serves Dovecot's listener,
//! `admin` the admin API and `/metrics`, `public` the self-service unblock page; all translate
//! between HTTP and `Warden` and keep no state of their own.

pub mod admin;
pub mod policy;
pub mod public;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use futures_util::StreamExt;
use serde::Serialize;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// A JSON error response: `{"error": "<stable code>", "message": "<for humans>"}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { error: code, message })
}

/// Reads a request body up to `limit` bytes; `None` when it is larger.
pub async fn read_limited(
    mut payload: actix_web::web::Payload,
    limit: usize,
) -> Result<Option<actix_web::web::Bytes>, actix_web::error::PayloadError> {
    let mut body = actix_web::web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}
