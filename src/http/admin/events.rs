//! `GET /api/v1/events`: the block log, newest first, filtered by address, login, reason and
//! time. What an admin opens when a user says "my phone cannot get mail".

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::ErrorBody;
use super::{Admin, ApiError, Page, blocking};
use crate::clock::Timestamp;
use crate::events::{Event, EventFilter, EventKind};
use crate::network::parse_ip;
use crate::warden::Warden;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events of this client address.
    #[param(max_length = 64)]
    ip: Option<String>,
    /// Only events of this login, in any case (`Alice@Example.com` finds `alice@example.com`).
    #[param(max_length = 256)]
    login: Option<String>,
    /// Only this reason: ban, blocked, firewall_rule, firewall_default, ban_placed.
    #[param(max_length = 64)]
    reason: Option<String>,
    /// Only events since then: an RFC 3339 time, or a duration back from now such as `2h` (at
    /// most 3660 days).
    #[param(max_length = 64)]
    since: Option<String>,
    /// Only events until then (inclusive): an RFC 3339 time, or a duration back from now
    /// such as `30m`.
    #[param(max_length = 64)]
    until: Option<String>,
    /// Only events whose message (`detail`) contains this text, ignoring the case of ASCII
    /// letters; `%` and `_` are plain characters.
    #[param(max_length = 200)]
    text: Option<String>,
    /// `true`: only what observe mode would have refused; `false`: only real refusals.
    observed: Option<bool>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Skip this many matches first (default 0).
    offset: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub at: String,
    /// ban, blocked, firewall_rule, firewall_default or ban_placed.
    pub reason: String,
    pub login: String,
    pub ip: String,
    pub protocol: String,
    pub device_id: String,
    /// The firewall rule that refused, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// What the user was told, or what was done.
    pub detail: String,
    /// Decided by a part of the policy in observe mode: the login was allowed; the record
    /// says what would have been refused.
    pub observed: bool,
}

impl EventView {
    pub fn new(event: &Event) -> EventView {
        EventView {
            at: event.at.rfc3339(),
            reason: event.kind.label().to_string(),
            login: event.login.clone(),
            ip: event.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            protocol: event.protocol.clone(),
            device_id: event.device_id.clone(),
            rule: event.rule,
            detail: event.detail.clone(),
            observed: event.observed,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Matching events in all pages.
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    /// False only in cluster mode when the filter's matches were counted among the newest
    /// 50,000 events rather than the whole log: then `total` is a lower bound.
    pub total_exact: bool,
}

fn invalid(field: &'static str, message: String) -> ApiError {
    ApiError::InvalidField { field, message }
}

/// A `since` filter: an RFC 3339 time, or a duration back from `now` (at most `MAX_LENGTH`).
pub(super) fn since(text: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    point_in_time("since", text, now)
}

/// A `since` or `until` filter (`field`): an RFC 3339 time, or a duration back from `now`.
fn point_in_time(field: &'static str, text: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    crate::clock::time_or_ago(text, now).map_err(|message| invalid(field, format!("{field}: {message}")))
}

fn filter(query: &EventQuery, now: Timestamp) -> Result<EventFilter, ApiError> {
    let ip = match &query.ip {
        Some(text) => Some(parse_ip(text).map_err(|e| invalid("ip", format!("ip: {e}")))?),
        None => None,
    };
    let kind = match &query.reason {
        Some(text) => Some(EventKind::from_label(text.trim()).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.label()).collect();
            invalid("reason", format!("reason: {text:?} is not one of {}", known.join(", ")))
        })?),
        None => None,
    };
    let since = query.since.as_deref().map(|text| since(text, now)).transpose()?;
    let until = query.until.as_deref().map(|text| point_in_time("until", text, now)).transpose()?;
    let text = query
        .text
        .as_deref()
        .map(|text| crate::events::checked_text(text).map_err(|m| invalid("text", m)))
        .transpose()?;
    let (limit, offset) = Page { limit: query.limit, offset: query.offset }.checked()?;
    if query.login.as_ref().is_some_and(|l| l.len() > crate::wire::MAX_LOGIN_LEN) {
        return Err(ApiError::InvalidField {
            field: "login",
            message: format!("login: longer than {} bytes, which no login is", crate::wire::MAX_LOGIN_LEN),
        });
    }
    let login = query.login.as_ref().map(|l| crate::login::key(l.trim()).into_owned());
    Ok(EventFilter { ip, login, domain: None, kind, since, until, text, observed: query.observed, limit, offset })
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, description = "Matching events, newest first.", body = EventList),
              (status = 400, description = "A filter, `limit` or `offset` is invalid; `field` names it.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, filtering by a login of another domain.", body = ErrorBody),
              (status = 503, description = "The state store failed.", body = ErrorBody)))]
pub async fn list_events(
    admin: Admin,
    warden: web::Data<Warden>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut filter = filter(&query, warden.now())?;
    // A `domain:` token reads its domain's logins only: a login filter naming another
    // domain's is refused, and without one the query is confined to the domain.
    if let Some(domain) = admin.0.domain() {
        if filter.login.as_deref().is_some_and(|login| !admin.0.sees_key(login)) {
            return Err(ApiError::Forbidden);
        }
        filter.domain = Some(domain.to_string());
    }
    let handle = warden.get_ref().clone();
    let (limit, offset) = (filter.limit, filter.offset);
    let page = blocking(move || handle.events(&filter)).await?;
    Ok(HttpResponse::Ok().json(EventList {
        events: page.events.iter().map(EventView::new).collect(),
        total: page.total,
        limit,
        offset,
        total_exact: page.total_exact,
    }))
}
