//! The blocked and trusted lists screen (admin only, as the API's list routes): both lists
//! with comment, expiry, who added each entry and where it comes from; a search; adding many
//! addresses at once; deleting; and each list as a CSV file. The policy file's entries are
//! shown as such and cannot be deleted here (the warden refuses it too).
//!
//! Adding several lines is per line, not all-or-nothing: each good line is added, each bad
//! one is reported by its number, so a paste of 200 addresses with one typo is not lost.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Change, Console, ConsoleError, PREFIX, Screen, blocking, column_heads, csrf_field};
use crate::access::{AccessEntry, ListKind, Origin, checked_comment};
use crate::clock::{Timestamp, checked_length};
use crate::network::parse_network;

/// The most lines one "add" takes.
const MAX_LINES: usize = 1000;
/// The longest search text.
const MAX_SEARCH_LEN: usize = 200;
/// How many bad lines a message names before it says "and N more".
const NAMED_FAILURES: usize = 10;

fn lists_path() -> String {
    format!("{PREFIX}/lists")
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// Whether `entry` matches the search `text` (in its network, comment or adder, any case).
fn matches(entry: &AccessEntry, text: &str) -> bool {
    let text = text.to_lowercase();
    entry.network.to_string().contains(&text)
        || entry.comment.to_lowercase().contains(&text)
        || entry.added_by.to_lowercase().contains(&text)
}

pub async fn page(console: Console, query: web::Query<SearchQuery>) -> Result<HttpResponse, ConsoleError> {
    console.require(Screen::Lists.reach())?;
    let search = query.q.as_deref().map(str::trim).unwrap_or_default();
    if search.len() > MAX_SEARCH_LEN {
        return Err(ConsoleError::Invalid(format!("the search is longer than {MAX_SEARCH_LEN} characters")));
    }
    let body = html! {
        form.row role="search" method="get" action=(lists_path()) {
            label for="q" { "Search address, comment or who added it"
                input #q type="search" name="q" maxlength=(MAX_SEARCH_LEN) value=(search);
            }
            button type="submit" { "Search" }
        }
        @for list in [ListKind::Blocked, ListKind::Trusted] {
            (section(&console, list, search))
        }
        h2 { "Add addresses or networks" }
        form.stack #add-entries method="post" action={ (lists_path()) "/add" } {
            (csrf_field(&console))
            label for="list" { "To the list" }
            select #list name="list" {
                option value="blocked" { "Blocked: refused before anything else" }
                option value="trusted" { "Trusted: never banned" }
            }
            label for="lines" { "One address or network a line" }
            textarea #lines name="lines" required placeholder="203.0.113.7\n198.51.100.0/24" {}
            label for="comment" { "Comment for all of them" }
            input #comment name="comment" maxlength="200";
            label for="for" { "For (empty: until removed)" }
            input #for name="for" maxlength="40" placeholder="7 days";
            p.hint { "Each good line is added; a bad line is reported by its number and changes nothing." }
            button.primary type="submit" { "Add them" }
        }
    };
    Ok(console.page(Screen::Lists, Screen::Lists.title(), body))
}

fn section(console: &Console, list: ListKind, search: &str) -> Markup {
    let entries: Vec<AccessEntry> =
        console.warden.list_entries(list).into_iter().filter(|e| search.is_empty() || matches(e, search)).collect();
    let now = console.warden.now();
    let title = match list {
        ListKind::Blocked => "Blocked",
        ListKind::Trusted => "Trusted",
    };
    html! {
        h2 { (title) " (" (entries.len()) ")" }
        p { a href={ (lists_path()) "/" (list.label()) ".csv" } download { "Download the " (list.label()) " list as CSV" } }
        @if entries.is_empty() {
            p.muted { @if search.is_empty() { "Empty." } @else { "Nothing matches." } }
        } @else {
            div.table-wrap {
                table id={ (list.label()) "-entries" } {
                    (column_heads(&["Address or network", "Comment", "Until", "Added by", "From", ""]))
                    tbody {
                        @for entry in &entries {
                            tr {
                                td.network { (entry.network) @if entry.observe { " (observe)" } }
                                td { (entry.comment) }
                                td { (entry.expires_at.map_or_else(|| "until removed".to_string(), |t| t.short_utc(now))) }
                                td { (entry.added_by) }
                                td { @if entry.origin == Origin::PolicyFile { "policy.toml" } @else { "console or API" } }
                                td {
                                    @if entry.origin == Origin::Api {
                                        form.inline method="post" action={ (lists_path()) "/delete" } data-confirm={ "Delete " (entry.network) " from the " (list.label()) " list?" } {
                                            (csrf_field(console))
                                            input type="hidden" name="list" value=(list.label());
                                            input type="hidden" name="network" value=(entry.network);
                                            button.danger type="submit" aria-label={ "Delete " (entry.network) " from the " (list.label()) " list" } { "Delete" }
                                        }
                                    } @else {
                                        span.muted { "edit policy.toml" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn list_of(label: &str) -> Result<ListKind, ConsoleError> {
    ListKind::from_label(label)
        .ok_or_else(|| ConsoleError::Invalid(format!("{label:?} is neither blocked nor trusted")))
}

#[derive(Deserialize)]
pub struct AddForm {
    list: String,
    lines: String,
    #[serde(default)]
    comment: String,
    #[serde(default, rename = "for")]
    duration: String,
}

pub async fn add(change: Change<AddForm>) -> Result<HttpResponse, ConsoleError> {
    let console = change.console;
    console.require(Screen::Lists.reach())?;
    let form = change.form;
    let list = list_of(&form.list)?;
    let back = lists_path();
    let comment = match checked_comment(form.comment.trim()) {
        Ok(comment) => comment,
        Err(message) => return Ok(console.done(false, message, &back)),
    };
    let expires_at = match form.duration.trim() {
        "" => None,
        text => match checked_length(text) {
            Ok(length) => Some(console.warden.now().plus(length)),
            Err(e) => return Ok(console.done(false, format!("for: {e}"), &back)),
        },
    };
    let lines: Vec<(usize, &str)> =
        form.lines.lines().enumerate().map(|(i, line)| (i + 1, line.trim())).filter(|(_, l)| !l.is_empty()).collect();
    if lines.len() > MAX_LINES {
        return Ok(console.done(false, format!("{} lines: at most {MAX_LINES} at once", lines.len()), &back));
    }
    let mut failures: Vec<String> = Vec::new();
    let mut networks = Vec::new();
    for (number, line) in lines {
        match parse_network(line) {
            Ok(network) => networks.push((number, network)),
            Err(e) => failures.push(format!("line {number}: {e}")),
        }
    }
    let (warden, principal) = (console.warden.clone(), console.principal.clone());
    let (added, refused) = blocking(move || {
        let mut added = 0;
        let mut refused = Vec::new();
        for (number, network) in networks {
            match warden.add_to_list(list, network, expires_at, &comment, false, &principal) {
                Ok(_) => added += 1,
                Err(e) => refused.push(format!("line {number}: {e}")),
            }
        }
        (added, refused)
    })
    .await?;
    failures.extend(refused);
    failures.sort_by_key(|f| f.split(':').next().and_then(|n| n.trim_start_matches("line ").parse::<usize>().ok()));
    let mut message = format!("{added} added to the {} list.", list.label());
    if !failures.is_empty() {
        let more = failures.len().saturating_sub(NAMED_FAILURES);
        message.push_str(&format!(" Not added: {}", failures[..failures.len().min(NAMED_FAILURES)].join("; ")));
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        message.push('.');
    }
    Ok(console.done(failures.is_empty(), message, &back))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    list: String,
    network: String,
}

pub async fn delete(change: Change<DeleteForm>) -> Result<HttpResponse, ConsoleError> {
    let console = change.console;
    console.require(Screen::Lists.reach())?;
    let list = list_of(&change.form.list)?;
    let network = parse_network(change.form.network.trim()).map_err(|e| ConsoleError::Invalid(e.to_string()))?;
    let (warden, principal) = (console.warden.clone(), console.principal.clone());
    let result = blocking(move || warden.remove_from_list(list, network, &principal)).await?;
    Ok(match result {
        Ok(removed) => {
            console.done(true, format!("{} removed from the {} list.", removed.network, list.label()), &lists_path())
        }
        Err(e) => console.done(false, e.to_string(), &lists_path()),
    })
}

/// A CSV field: quoted when it holds a comma, quote or line break (RFC 4180), and led by `'`
/// when it starts like a spreadsheet formula, so opening the file runs nothing.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_string() };
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

/// The header row of a list's CSV file.
const CSV_HEADER: &str = "network,comment,expires_at,added_by,origin,mode,created_at";

fn csv(entries: &[AccessEntry]) -> String {
    let mut out = format!("{CSV_HEADER}\r\n");
    for entry in entries {
        let fields = [
            entry.network.to_string(),
            entry.comment.clone(),
            entry.expires_at.map(Timestamp::rfc3339).unwrap_or_default(),
            entry.added_by.clone(),
            entry.origin.label().to_string(),
            if entry.observe { "observe" } else { "enforce" }.to_string(),
            entry.created_at.rfc3339(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

pub async fn download(console: Console, file: web::Path<String>) -> Result<HttpResponse, ConsoleError> {
    console.require(Screen::Lists.reach())?;
    let list = file.strip_suffix(".csv").and_then(ListKind::from_label).ok_or(ConsoleError::NotFound)?;
    let body = csv(&console.warden.list_entries(list));
    let mut response = HttpResponse::Ok().content_type("text/csv; charset=utf-8").body(body);
    let disposition = format!("attachment; filename=\"mailwarden-{}.csv\"", list.label());
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(super::secure(response))
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn a_csv_field_is_quoted_when_it_must_be_and_never_starts_a_formula() {
        assert_eq!(csv_field("office"), "office");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }
}
