//! Routes for the admin API's tokens (`/api/v1/tokens`, admin only): list, create (the token
//! is in the answer once and nowhere else), revoke.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::ErrorBody;
use super::{Admin, ApiError, blocking};
use crate::clock::{Timestamp, checked_length};
use crate::principal::Scope;
use crate::tokens::{MAX_NAME_LEN, TokenRecord};
use crate::warden::{TokenError, Warden};

/// A token as listed: never the token itself, nor its digest.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    /// `admin`, `support`, `metrics` or `domain:example.com`.
    pub scope: String,
    pub created_at: String,
    /// Absent for a token that does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The hour it was last used in (absent when never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

impl TokenView {
    pub fn new(record: &TokenRecord) -> TokenView {
        TokenView {
            name: record.name.clone(),
            scope: record.scope.to_string(),
            created_at: record.created_at.rfc3339(),
            expires_at: record.expires_at.map(Timestamp::rfc3339),
            last_used: record.last_used.map(Timestamp::rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1 to 64 letters, digits, `.`, `_` and `-`; shown in the audit trail.
    #[schema(max_length = 64)]
    pub name: String,
    /// `admin`, `support`, `metrics` or `domain:example.com`.
    #[schema(max_length = 270)]
    pub scope: String,
    /// How long it lasts, e.g. `90d` (at most 3660 days); without it, until revoked.
    #[serde(default, rename = "expires")]
    #[schema(max_length = 64)]
    pub expires: Option<String>,
}

/// The new token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The bearer token. mailwarden keeps only its SHA-256: it cannot be shown again.
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedToken {
    pub revoked: TokenView,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, description = "The stored tokens by name (not the policy file's auth.admin_token).", body = TokenList),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "Not an admin token.", body = ErrorBody),
              (status = 503, description = "The state store failed.", body = ErrorBody)))]
pub async fn list_tokens(_: Admin, warden: web::Data<Warden>) -> Result<HttpResponse, ApiError> {
    let handle = warden.get_ref().clone();
    let records = blocking(move || handle.token_list()).await?;
    Ok(HttpResponse::Ok().json(TokenList { tokens: records.iter().map(TokenView::new).collect() }))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, description = "Created; `token` is shown this once.", body = CreatedToken),
              (status = 400, description = "A bad name, scope or expiry; `field` names it.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "Not an admin token.", body = ErrorBody),
              (status = 409, description = "A token of that name exists.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn create_token(
    admin: Admin,
    warden: web::Data<Warden>,
    body: web::Json<NewToken>,
) -> Result<HttpResponse, ApiError> {
    let NewToken { name, scope, expires } = body.into_inner();
    crate::tokens::check_name(&name).map_err(|message| ApiError::InvalidField { field: "name", message })?;
    let scope =
        Scope::parse(&scope).map_err(|e| ApiError::InvalidField { field: "scope", message: format!("scope: {e}") })?;
    let expires_at = match expires {
        Some(text) => Some(
            warden.now().plus(
                checked_length(&text)
                    .map_err(|e| ApiError::InvalidField { field: "expires", message: format!("expires: {e}") })?,
            ),
        ),
        None => None,
    };
    let handle = warden.get_ref().clone();
    let created = blocking(move || handle.create_token(&admin.0, &name, scope, expires_at)).await?;
    Ok(HttpResponse::Created().json(CreatedToken { token: created.secret, view: TokenView::new(&created.record) }))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, max_length = 64, description = "The token's name.")),
    responses((status = 200, description = "Revoked on this node at once, on the others as soon as they hear of it.", body = RevokedToken),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "Not an admin token.", body = ErrorBody),
              (status = 404, description = "No token of that name.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn revoke_token(
    admin: Admin,
    warden: web::Data<Warden>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    if name.len() > MAX_NAME_LEN {
        return Err(TokenError::NotFound(crate::wire::cut(&name, MAX_NAME_LEN).to_string()).into());
    }
    let handle = warden.get_ref().clone();
    let revoked = blocking(move || handle.revoke_token(&admin.0, &name)).await?;
    Ok(HttpResponse::Ok().json(RevokedToken { revoked: TokenView::new(&revoked) }))
}
