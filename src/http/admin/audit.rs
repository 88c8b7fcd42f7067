//! `GET /api/v1/audit`: the audit trail, newest first: who changed what through the API.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::ErrorBody;
use super::{Admin, ApiError, Page, blocking};
use crate::audit::{AuditAction, AuditFilter, AuditRecord};
use crate::clock::Timestamp;
use crate::warden::Warden;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only changes by this token (its name; `admin-token` for the policy file's).
    #[param(max_length = 64)]
    actor: Option<String>,
    /// Only this kind of change: ban_lifted, ban_lifted_and_trusted, list_entry_added,
    /// list_entry_removed, firewall_replaced, firewall_reset, rule_added, rule_moved,
    /// rule_deleted, default_action_set, policy_reloaded, login_reset, token_created,
    /// token_revoked, ban_lengthened.
    #[param(max_length = 64)]
    action: Option<String>,
    /// Only changes to this: an address or network as shown, a mailbox or `@domain` key, a
    /// login key, a token's name.
    #[param(max_length = 320)]
    target: Option<String>,
    /// Only changes since then: an RFC 3339 time, or a duration back from now such as `2h`.
    #[param(max_length = 64)]
    since: Option<String>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Skip this many matches first (default 0).
    offset: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub at: String,
    /// The acting token's name.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl AuditView {
    fn new(record: &AuditRecord) -> AuditView {
        AuditView {
            at: record.at.rfc3339(),
            actor: record.actor.clone(),
            action: record.action.label().to_string(),
            target: record.target.clone(),
            detail: record.detail.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub records: Vec<AuditView>,
    /// Matching records in all pages.
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

fn invalid(field: &'static str, message: String) -> ApiError {
    ApiError::InvalidField { field, message }
}

fn filter(query: &AuditQuery, now: Timestamp) -> Result<AuditFilter, ApiError> {
    for (field, value, max) in [
        ("actor", &query.actor, 64),
        ("action", &query.action, 64),
        ("target", &query.target, 320),
        ("since", &query.since, 64),
    ] {
        if value.as_ref().is_some_and(|text| text.chars().count() > max) {
            return Err(invalid(field, format!("{field}: longer than {max} characters")));
        }
    }
    let action = match &query.action {
        Some(text) => Some(AuditAction::from_label(text.trim()).ok_or_else(|| {
            let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.label()).collect();
            let quoted: String = text.chars().take(40).collect();
            invalid("action", format!("action: {quoted:?} is not one of {}", known.join(", ")))
        })?),
        None => None,
    };
    let since = query.since.as_deref().map(|text| super::events::since(text, now)).transpose()?;
    let (limit, offset) = Page { limit: query.limit, offset: query.offset }.checked()?;
    Ok(AuditFilter { actor: query.actor.clone(), action, target: query.target.clone(), since, limit, offset })
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Matching changes, newest first.", body = AuditList),
              (status = 400, description = "A filter, `limit` or `offset` is invalid; `field` names it.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "Not an admin token.", body = ErrorBody),
              (status = 503, description = "The state store failed.", body = ErrorBody)))]
pub async fn list_audit(
    _: Admin,
    warden: web::Data<Warden>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = filter(&query, warden.now())?;
    let (limit, offset) = (filter.limit, filter.offset);
    let handle = warden.get_ref().clone();
    let (records, total) = blocking(move || handle.audit(&filter)).await?;
    Ok(HttpResponse::Ok().json(AuditList {
        records: records.iter().map(AuditView::new).collect(),
        total,
        limit,
        offset,
    }))
}
