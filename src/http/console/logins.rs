//! A mailbox's login history: the places it logged in from successfully (with country, mail
//! app and protocol), the block log's refusals of it, and the wrong passwords held for it now.
//! The same data as `GET /api/v1/logins/{login}/history`, from the same warden method; a
//! `domain:` token sees only its own domain's mailboxes.

use actix_web::{HttpResponse, web};
use maud::html;
use serde::Deserialize;

use super::{Console, ConsoleError, PREFIX, Screen, column_heads};
use crate::warden::device_name;

#[derive(Deserialize)]
pub struct LoginQuery {
    login: Option<String>,
}

/// The mail app as a person reads it: its name and version, or the raw IMAP ID, or unknown.
fn app_of(device_id: &str) -> String {
    match device_name(device_id) {
        Some(name) => name,
        None if device_id.trim().is_empty() => "unknown app".to_string(),
        None => device_id.chars().take(80).collect(),
    }
}

fn or_unknown(protocol: &str) -> &str {
    if protocol.is_empty() { "unknown" } else { protocol }
}

pub async fn page(console: Console, query: web::Query<LoginQuery>) -> Result<HttpResponse, ConsoleError> {
    console.require(Screen::Logins.reach())?;
    let asked = query.login.as_deref().map(str::trim).filter(|login| !login.is_empty());
    let key = match asked {
        Some(login) if login.len() > crate::wire::MAX_LOGIN_LEN => {
            return Err(ConsoleError::Invalid(format!("a login is at most {} bytes", crate::wire::MAX_LOGIN_LEN)));
        }
        Some(login) => Some(console.principal.mailbox_key(login)?),
        None => None,
    };
    let history = match &key {
        Some(key) => {
            let warden = console.warden.clone();
            let key = key.clone();
            let found = super::blocking(move || warden.login_history(&key))
                .await?
                .map_err(|e| ConsoleError::Failed(format!("the state store failed: {e}")))?;
            Some(found)
        }
        None => None,
    };
    let hint = match console.principal.domain() {
        Some(domain) => format!("a mailbox of {domain}"),
        None => "alice@example.com".to_string(),
    };
    let body = html! {
        form.row method="get" action={ (PREFIX) "/logins" } {
            label for="login" {
                "Mailbox"
                input #login type="text" name="login" value=(key.as_deref().unwrap_or_default())
                    placeholder=(hint) maxlength=(crate::wire::MAX_LOGIN_LEN) required;
            }
            button.primary type="submit" { "Show the login history" }
        }
        @if let (Some(key), Some(history)) = (&key, &history) {
            h2 { "Where " (key) " logged in from" }
            @if history.places.is_empty() {
                p.muted #no-places { "No successful login is on record for this mailbox." }
            } @else {
                div.table-wrap {
                    table #places {
                        (column_heads(&["Address or network", "Country", "Mail app", "Protocol", "Last seen"]))
                        tbody {
                            @for place in &history.places {
                                tr {
                                    td { (place.known.source.to_string()) }
                                    td { (place.country.as_ref().map_or("unknown", |c| c.as_str())) }
                                    td { (app_of(&place.known.app)) }
                                    td { (or_unknown(&place.known.protocol)) }
                                    td { (place.known.at.readable()) }
                                }
                            }
                        }
                    }
                }
                p.hint { "Last seen is recorded at most once an hour for each place." }
            }
            h2 { "Wrong passwords held now" }
            @if history.failures.is_empty() {
                p.muted #no-failures { "None: no wrong password for this mailbox is counted anywhere now." }
            } @else {
                div.table-wrap {
                    table #failures {
                        (column_heads(&["From", "Mail app", "Protocol", "Tries", "First", "Last", "Note"]))
                        tbody {
                            @for (source, guess) in &history.failures {
                                tr {
                                    td { (source.to_string()) }
                                    td { (app_of(&guess.device_id)) }
                                    td { (guess.protocol.label()) }
                                    td { (guess.failures) }
                                    td { (guess.first_seen.readable()) }
                                    td { (guess.last_seen.readable()) }
                                    td {
                                        @if let Some(until) = guess.quarantined_until().filter(|end| *end > console.warden.now()) {
                                            "stale device: this password is refused from there until " (until.readable())
                                        } @else if guess.forgiven() {
                                            "not counted: the mailbox logged in from there afterwards"
                                        } @else {
                                            "counts toward a ban of that place"
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Refusals in the block log" }
            @if history.refusals.is_empty() {
                p.muted #no-refusals { "None on record." }
            } @else {
                div.table-wrap {
                    table #refusals {
                        (column_heads(&["When", "Reason", "Address", "Protocol", "What happened"]))
                        tbody {
                            @for event in &history.refusals {
                                tr {
                                    td { (event.at.readable()) }
                                    td { (event.kind.label().replace('_', " ")) @if event.observed { " (observe mode)" } }
                                    td { (event.ip.map(|ip| ip.to_string()).unwrap_or_default()) }
                                    td { (event.protocol) }
                                    td { (event.detail) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(console.page(Screen::Logins, Screen::Logins.title(), body))
}
