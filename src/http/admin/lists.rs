//! Routes for the admin lists (`/api/v1/blocks`, `/api/v1/trusted`): list, add, remove.
//! Entries from policy.toml are listed with `origin: policy_file` and cannot be removed here.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::views::{ErrorBody, ListEntries, ListEntryView, Mode, NewListEntry, Removed};
use super::{Admin, ApiError, Page, blocking};
use crate::access::ListKind;
use crate::clock::{MAX_LENGTH, MAX_LENGTH_TEXT, Timestamp, checked_length};
use crate::network::parse_network;
use crate::warden::Warden;

/// `?network=` naming the entry to remove.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NetworkQuery {
    /// The address or network exactly as listed, e.g. `203.0.113.0/24`.
    network: String,
}

fn invalid(field: &'static str, message: String) -> ApiError {
    ApiError::InvalidField { field, message }
}

fn network_field(text: &str) -> Result<ipnet::IpNet, ApiError> {
    parse_network(text).map_err(|e| invalid("network", format!("network: {e}")))
}

/// Validates a new entry: the network, at most one of `for` and `expires_at` (in the future,
/// at most `MAX_LENGTH` ahead), and a short one-line comment.
fn checked(entry: &NewListEntry, now: Timestamp) -> Result<(ipnet::IpNet, Option<Timestamp>, String), ApiError> {
    let network = network_field(&entry.network)?;
    let expires_at = match (&entry.duration, &entry.expires_at) {
        (Some(_), Some(_)) => {
            return Err(invalid("for", "for: give either for or expires_at, not both".into()));
        }
        (Some(text), None) => match checked_length(text) {
            Ok(length) => Some(now.plus(length)),
            Err(e) => return Err(invalid("for", format!("for: {e}"))),
        },
        (None, Some(text)) => {
            let quoted: String = text.chars().take(40).collect();
            let end = Timestamp::parse_rfc3339(text).ok_or_else(|| {
                invalid(
                    "expires_at",
                    format!("expires_at: {quoted:?} is not an RFC 3339 time such as \"2026-12-01T00:00:00Z\""),
                )
            })?;
            if end <= now {
                return Err(invalid("expires_at", format!("expires_at: {quoted} is not in the future")));
            }
            if end > now.plus(MAX_LENGTH) {
                return Err(invalid(
                    "expires_at",
                    format!("expires_at: {quoted} is more than {MAX_LENGTH_TEXT} ahead"),
                ));
            }
            Some(end)
        }
        (None, None) => None,
    };
    let comment = checked_comment(entry.comment.as_deref().unwrap_or_default())?;
    Ok((network, expires_at, comment))
}

/// A list entry's comment, as `access::checked_comment` allows it.
pub(crate) fn checked_comment(comment: &str) -> Result<String, ApiError> {
    crate::access::checked_comment(comment).map_err(|message| invalid("comment", message))
}

async fn list(list: ListKind, warden: &Warden, page: &Page) -> Result<HttpResponse, ApiError> {
    let (entries, total, limit, offset) = page.slice(warden.list_entries(list))?;
    let entries = entries.iter().map(ListEntryView::new).collect();
    Ok(HttpResponse::Ok().json(ListEntries { entries, total, limit, offset }))
}

async fn add(list: ListKind, warden: &Warden, entry: &NewListEntry, admin: Admin) -> Result<HttpResponse, ApiError> {
    let (network, expires_at, comment) = checked(entry, warden.now())?;
    let observe = entry.mode == Some(Mode::Observe);
    if observe && list == ListKind::Trusted {
        return Err(invalid("mode", "mode: observe is for blocked entries; a trusted entry only ever allows".into()));
    }
    let handle = warden.clone();
    let change = blocking(move || handle.add_to_list(list, network, expires_at, &comment, observe, &admin.0)).await?;
    let view = ListEntryView::new(&change.entry);
    Ok(if change.created { HttpResponse::Created().json(view) } else { HttpResponse::Ok().json(view) })
}

async fn remove(list: ListKind, warden: &Warden, query: &NetworkQuery, admin: Admin) -> Result<HttpResponse, ApiError> {
    let network = network_field(&query.network)?;
    let handle = warden.clone();
    let removed = blocking(move || handle.remove_from_list(list, network, &admin.0)).await?;
    Ok(HttpResponse::Ok().json(Removed { removed: ListEntryView::new(&removed) }))
}

#[utoipa::path(get, path = "/api/v1/blocks", tag = "lists", params(Page),
    responses((status = 200, description = "Blocked networks in force: policy-file entries first.", body = ListEntries),
              (status = 400, description = "A bad `limit` or `offset`.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
pub async fn list_blocks(
    _: Admin,
    warden: web::Data<Warden>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    list(ListKind::Blocked, &warden, &page).await
}

#[utoipa::path(post, path = "/api/v1/blocks", tag = "lists", request_body = NewListEntry,
    responses((status = 201, description = "Blocked.", body = ListEntryView),
              (status = 200, description = "The API's entry for this network was replaced.", body = ListEntryView),
              (status = 400, description = "A field is invalid; `field` names it. Nothing changed.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 409, description = "The network is listed in the policy file.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn add_block(
    admin: Admin,
    warden: web::Data<Warden>,
    entry: web::Json<NewListEntry>,
) -> Result<HttpResponse, ApiError> {
    add(ListKind::Blocked, &warden, &entry, admin).await
}

#[utoipa::path(delete, path = "/api/v1/blocks", tag = "lists", params(NetworkQuery),
    responses((status = 200, description = "Unblocked.", body = Removed),
              (status = 400, description = "Not an address or network.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 404, description = "Not on the list.", body = ErrorBody),
              (status = 409, description = "Listed in the policy file; edit the file and reload.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn remove_block(
    admin: Admin,
    warden: web::Data<Warden>,
    query: web::Query<NetworkQuery>,
) -> Result<HttpResponse, ApiError> {
    remove(ListKind::Blocked, &warden, &query, admin).await
}

#[utoipa::path(get, path = "/api/v1/trusted", tag = "lists", params(Page),
    responses((status = 200, description = "Trusted networks in force: policy-file entries first.", body = ListEntries),
              (status = 400, description = "A bad `limit` or `offset`.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
pub async fn list_trusted(
    _: Admin,
    warden: web::Data<Warden>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    list(ListKind::Trusted, &warden, &page).await
}

#[utoipa::path(post, path = "/api/v1/trusted", tag = "lists", request_body = NewListEntry,
    responses((status = 201, description = "Trusted.", body = ListEntryView),
              (status = 200, description = "The API's entry for this network was replaced.", body = ListEntryView),
              (status = 400, description = "A field is invalid; `field` names it. Nothing changed.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 409, description = "The network is listed in the policy file.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn add_trusted(
    admin: Admin,
    warden: web::Data<Warden>,
    entry: web::Json<NewListEntry>,
) -> Result<HttpResponse, ApiError> {
    add(ListKind::Trusted, &warden, &entry, admin).await
}

#[utoipa::path(delete, path = "/api/v1/trusted", tag = "lists", params(NetworkQuery),
    responses((status = 200, description = "No longer trusted.", body = Removed),
              (status = 400, description = "Not an address or network.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 404, description = "Not on the list.", body = ErrorBody),
              (status = 409, description = "Listed in the policy file; edit the file and reload.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn remove_trusted(
    admin: Admin,
    warden: web::Data<Warden>,
    query: web::Query<NetworkQuery>,
) -> Result<HttpResponse, ApiError> {
    remove(ListKind::Trusted, &warden, &query, admin).await
}
