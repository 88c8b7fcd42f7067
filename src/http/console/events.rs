//! The block log screen: every refusal and ban, newest first, 50 a page with previous and
//! next, filtered as `GET /api/v1/events` is (address, mailbox, reason, message text, since
//! and until; the same `EventFilter`, so console and API agree). A `domain:` token's log is
//! confined to its domain as the API's is.

use actix_web::{HttpResponse, web};
use maud::html;
use serde::{Deserialize, Serialize};

use super::{Console, ConsoleError, PREFIX, Screen, blocking, column_heads};
use crate::clock::time_or_ago;
use crate::events::{EventFilter, EventKind, MAX_TEXT_FILTER};
use crate::network::parse_ip;

/// Events a page.
const PAGE_SIZE: usize = 50;
/// The last page a query reaches (50,000 events back).
const MAX_PAGE: usize = 1000;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LogQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    login: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    text: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    since: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    until: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<usize>,
}

/// The filter the form asks for, checked as the API checks its query.
fn filter(console: &Console, query: &LogQuery) -> Result<EventFilter, String> {
    let now = console.warden.now();
    let mut filter = EventFilter { limit: PAGE_SIZE, ..EventFilter::default() };
    if !query.ip.trim().is_empty() {
        filter.ip = Some(parse_ip(query.ip.trim()).map_err(|e| format!("address: {e}"))?);
    }
    let login = query.login.trim();
    if !login.is_empty() {
        if login.len() > crate::wire::MAX_LOGIN_LEN {
            return Err("mailbox: longer than any login".into());
        }
        filter.login = Some(crate::login::key(login).into_owned());
    }
    if !query.reason.is_empty() {
        filter.kind = Some(EventKind::from_label(&query.reason).ok_or("reason: not one of the list")?);
    }
    if !query.text.is_empty() {
        filter.text = Some(crate::events::checked_text(&query.text)?);
    }
    if !query.since.trim().is_empty() {
        filter.since = Some(time_or_ago(&query.since, now).map_err(|e| format!("since: {e}"))?);
    }
    if !query.until.trim().is_empty() {
        filter.until = Some(time_or_ago(&query.until, now).map_err(|e| format!("until: {e}"))?);
    }
    let page = query.page.unwrap_or(1).clamp(1, MAX_PAGE);
    filter.offset = (page - 1) * PAGE_SIZE;
    Ok(filter)
}

fn link(query: &LogQuery, page: usize) -> String {
    let query = LogQuery { page: Some(page), ..query.clone() };
    format!("{PREFIX}/events?{}", serde_urlencoded::to_string(&query).unwrap_or_default())
}

pub async fn page(console: Console, query: web::Query<LogQuery>) -> Result<HttpResponse, ConsoleError> {
    console.require(Screen::BlockLog.reach())?;
    let mut problem = None;
    let mut found = None;
    match filter(&console, &query) {
        Err(message) => problem = Some(message),
        Ok(mut filter) => {
            // A `domain:` token reads its domain's logins only, as in the API.
            if let Some(domain) = console.principal.domain() {
                if filter.login.as_deref().is_some_and(|login| !console.principal.sees_key(login)) {
                    return Err(ConsoleError::Forbidden);
                }
                filter.domain = Some(domain.to_string());
            }
            let warden = console.warden.clone();
            let offset = filter.offset;
            match blocking(move || warden.events(&filter)).await? {
                Ok(page) => found = Some((page, offset)),
                Err(e) => return Err(ConsoleError::Failed(e.to_string())),
            }
        }
    }
    let current = query.page.unwrap_or(1).clamp(1, MAX_PAGE);
    let body = html! {
        form.row #filters method="get" action={ (PREFIX) "/events" } {
            label for="ip" { "Address" input #ip name="ip" maxlength="64" value=(query.ip); }
            label for="login" { "Mailbox" input #login name="login" maxlength="320" value=(query.login); }
            label for="reason" { "Reason"
                select #reason name="reason" {
                    option value="" { "any" }
                    @for kind in EventKind::ALL {
                        @if query.reason == kind.label() {
                            option value=(kind.label()) selected { (kind.label()) }
                        } @else {
                            option value=(kind.label()) { (kind.label()) }
                        }
                    }
                }
            }
            label for="text" { "Message contains" input #text name="text" maxlength=(MAX_TEXT_FILTER) value=(query.text); }
            label for="since" { "Since" input #since name="since" maxlength="64" placeholder="2h or 2026-12-01T00:00:00Z" value=(query.since); }
            label for="until" { "Until" input #until name="until" maxlength="64" placeholder="30m or a time" value=(query.until); }
            button type="submit" { "Show" }
        }
        @if let Some(problem) = &problem {
            p.flash.failure role="alert" { (problem) }
        }
        @if let Some((page, offset)) = &found {
            p #event-count {
                @if page.events.is_empty() { "No events match." } @else {
                    "Events " (offset + 1) " to " (offset + page.events.len()) " of " (page.total)
                    @if !page.total_exact { " or more" }
                    ", newest first."
                }
            }
            @if !page.events.is_empty() {
                div.table-wrap {
                    table #events {
                        (column_heads(&["When", "Reason", "Mailbox", "Address", "Protocol", "What the user was told, or what was done"]))
                        tbody {
                            @for event in &page.events {
                                tr {
                                    td { (event.at.readable()) }
                                    td { (event.kind.label()) @if event.observed { " (observed)" } }
                                    td { (event.login) }
                                    td { (event.ip.map(|ip| ip.to_string()).unwrap_or_default()) }
                                    td { (event.protocol) }
                                    td.detail { (event.detail) }
                                }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if current > 1 { a rel="prev" href=(link(&query, current - 1)) { "Newer" } }
                @if offset + page.events.len() < page.total && current < MAX_PAGE {
                    a rel="next" href=(link(&query, current + 1)) { "Older" }
                }
            }
        }
    };
    Ok(console.page(Screen::BlockLog, Screen::BlockLog.title(), body))
}
