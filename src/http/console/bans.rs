//! The bans screen: every active ban (of whole sources, of subnets, and IP+login refusals),
//! searchable by address or login, a page of them at a time, with its remaining time and its
//! cause; lifted one by one or a ticked selection at once, or lengthened (`Warden::unban`,
//! `unban_login` and `lengthen_ban`, as the API's routes call them).

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::web;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Change, Console, ConsoleError, PREFIX, Screen, csrf_field};
use crate::bans::Ban;
use crate::clock::Timestamp;
use crate::network::{Source, parse_network};
use crate::warden::{LengthenError, Lengthening, Warden};

/// Bans shown on one page.
const PER_PAGE: usize = 100;
/// The most bans one change lifts or lengthens (a page's worth, ten times over).
pub const MAX_SELECTED: usize = 1_000;
/// The longest search text read.
const MAX_QUERY: usize = 200;
/// The lengths offered for lengthening, as `checked_length` reads them.
const LENGTHS: [(&str, &str); 5] =
    [("1h", "1 hour"), ("6h", "6 hours"), ("1day", "1 day"), ("7days", "7 days"), ("30days", "30 days")];

#[derive(Deserialize)]
pub struct BansQuery {
    q: Option<String>,
    /// Read leniently: a page number that is none shows the first page.
    page: Option<String>,
}

/// A ban's key in a form: its source, and after a space the login of an IP+login refusal.
pub fn ban_key(ban: &Ban) -> String {
    match ban.refused_login() {
        Some(login) => format!("{} {login}", ban.source),
        None => ban.source.to_string(),
    }
}

/// `1h 20m`: how long until `end`, to the minute.
pub fn remaining(now: Timestamp, end: Timestamp) -> String {
    let minutes = now.until(end).as_secs().div_ceil(60);
    humantime::format_duration(Duration::from_secs(minutes * 60)).to_string()
}

fn matches(ban: &Ban, wanted: &str) -> bool {
    let has = |text: &str| text.to_lowercase().contains(wanted);
    has(&ban.source.to_string())
        || has(&ban.source.network().to_string())
        || ban.refused_login().is_some_and(has)
        || has(&ban.cause.login)
        || ban.cause.guesses.iter().any(|g| has(&g.login))
}

/// The ban's cause in a few words: the reason, the last login and protocol, the guesses.
pub fn cause(ban: &Ban) -> Markup {
    let reason = match ban.reason {
        crate::bans::BanReason::Autoban => "wrong passwords",
        crate::bans::BanReason::LongWindow => "slow guessing (long window)",
        crate::bans::BanReason::Subnet => "subnet: several of its addresses banned",
    };
    let logins: Vec<&str> = {
        let mut logins: Vec<&str> = ban.cause.guesses.iter().map(|g| g.login.as_str()).collect();
        logins.sort_unstable();
        logins.dedup();
        logins
    };
    html! {
        span.reason { (reason) } ", " (ban.failures) " counted"
        @if !ban.cause.login.is_empty() {
            br;
            span.muted { "last: " (ban.cause.login) " over " (ban.cause.protocol) }
        }
        @if !logins.is_empty() {
            br;
            span.muted { "guessed: " (logins.join(", ")) }
        }
    }
}

pub async fn page(console: Console, query: web::Query<BansQuery>) -> Result<HttpResponse, ConsoleError> {
    console.require(Screen::Bans.reach())?;
    let wanted: String = query.q.as_deref().unwrap_or_default().trim().chars().take(MAX_QUERY).collect();
    let lowered = wanted.to_lowercase();
    let all = console.warden.bans();
    let found: Vec<Arc<Ban>> = all.iter().filter(|b| lowered.is_empty() || matches(b, &lowered)).cloned().collect();
    let pages = found.len().div_ceil(PER_PAGE).max(1);
    let page = query.page.as_deref().and_then(|p| p.trim().parse::<usize>().ok()).unwrap_or(1).clamp(1, pages);
    let shown = found.iter().skip((page - 1) * PER_PAGE).take(PER_PAGE);
    let now = console.warden.now();
    let link = |page: usize| {
        let query =
            serde_urlencoded::to_string([("q", wanted.as_str()), ("page", &page.to_string())]).unwrap_or_default();
        format!("{PREFIX}/bans?{query}")
    };
    let body = html! {
        form.row method="get" action={ (PREFIX) "/bans" } role="search" {
            label for="q" { "Address or login" input #q type="search" name="q" value=(wanted) maxlength=(MAX_QUERY); }
            button type="submit" { "Search" }
        }
        p #ban-count {
            @if lowered.is_empty() { (all.len()) " active bans" }
            @else { (found.len()) " of " (all.len()) " active bans match " strong { (wanted) } }
        }
        @if !found.is_empty() {
            form #bans method="post" action={ (PREFIX) "/bans/lift" } {
                (csrf_field(&console))
                div.table-wrap {
                    table {
                        thead { tr {
                            th scope="col" {
                                input #select-all type="checkbox" data-select-all="bans" aria-label="Select every ban on this page";
                            }
                            th scope="col" { "Source" }
                            th scope="col" { "Refuses" }
                            th scope="col" { "Ends" }
                            th scope="col" { "Cause" }
                            th scope="col" { span.visually-hidden { "Action" } }
                        } }
                        tbody {
                            @for ban in shown {
                                @let key = ban_key(ban);
                                @let what = ban.describe();
                                tr {
                                    td { input type="checkbox" name="addr" value=(key) aria-label={ "Select the ban on " (what) }; }
                                    td.source { (ban.source) }
                                    td { @match ban.refused_login() {
                                        Some(login) => { "only " (login) },
                                        None => { "every login" },
                                    } }
                                    td.ends {
                                        "in " (remaining(now, ban.expires_at)) br;
                                        span.muted { (ban.expires_at.readable()) }
                                    }
                                    td { (cause(ban)) }
                                    td {
                                        button.danger type="submit" form="lift-one" name="only" value=(key) aria-label={ "Lift the ban on " (what) } { "Lift" }
                                    }
                                }
                            }
                        }
                    }
                }
                // The first button is the one Enter in the length field presses.
                div.row {
                    label for="by" { "Lengthen the selected by" }
                    select #by name="by" {
                        @for (value, label) in LENGTHS { option value=(value) { (label) } }
                    }
                    label for="by-text" { "or" }
                    input #by-text type="text" name="by_text" placeholder="e.g. 2h" maxlength="40" size="8";
                    button #lengthen-selected type="submit" formaction={ (PREFIX) "/bans/lengthen" } { "Lengthen the selected" }
                    button.danger #lift-selected type="submit" { "Lift the selected" }
                }
            }
            // The rows' own Lift buttons send this form, so no ticked box rides along.
            form #lift-one method="post" action={ (PREFIX) "/bans/lift" } { (csrf_field(&console)) }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page > 1 { a href=(link(page - 1)) rel="prev" { "Previous" } }
                    span { "Page " (page) " of " (pages) }
                    @if page < pages { a href=(link(page + 1)) rel="next" { "Next" } }
                }
            }
        }
    };
    Ok(console.page(Screen::Bans, Screen::Bans.title(), body))
}

/// The bans a form names: the one of its row button (`only`), else every ticked `addr`.
/// Bounded by `MAX_SELECTED`; a value that is no address is reported, not an error page.
fn selected(pairs: &[(String, String)]) -> Result<Vec<String>, String> {
    let field = |name: &'static str| pairs.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.trim().to_string());
    let keys: Vec<String> = match field("only").next() {
        Some(one) => vec![one],
        None => field("addr").collect(),
    };
    if keys.is_empty() {
        return Err("Tick at least one ban first.".into());
    }
    if keys.len() > MAX_SELECTED {
        return Err(format!("At most {MAX_SELECTED} bans at once; {} were ticked.", keys.len()));
    }
    Ok(keys)
}

/// A ban key's parts, as `Warden` takes them.
pub(super) fn parse_key(warden: &Warden, key: &str) -> Result<(Source, Option<String>), String> {
    let (address, login) = match key.split_once(' ') {
        Some((address, login)) => (address, Some(login.trim().to_string()).filter(|l| !l.is_empty())),
        None => (key, None),
    };
    let network = parse_network(address).map_err(|e| e.to_string())?;
    Ok((warden.source_for(network), login))
}

fn plural(n: usize) -> String {
    if n == 1 { "1 ban".into() } else { format!("{n} bans") }
}

fn back_to_bans() -> String {
    format!("{PREFIX}/bans")
}

/// What one ban's change came to.
enum Outcome {
    /// Done: the ban as the message names it.
    Done(String),
    /// Not banned (any more).
    Missing,
    /// Refused, with why.
    Refused(String),
}

/// Applies `change` to each ban `keys` names (on a blocking thread: each writes the store) and
/// sends the browser back to the screen with one message saying what came of them all.
async fn each_ban(
    console: &Console,
    verb: &'static str,
    keys: Vec<String>,
    change: impl Fn(&Warden, Source, Option<&str>) -> Outcome + Send + 'static,
) -> Result<HttpResponse, ConsoleError> {
    let warden = console.warden.get_ref().clone();
    let (done, missing, refused) = super::blocking(move || {
        let (mut done, mut missing, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        for key in keys {
            match parse_key(&warden, &key).map(|(source, login)| change(&warden, source, login.as_deref())) {
                Ok(Outcome::Done(ban)) => done.push(ban),
                Ok(Outcome::Missing) => missing.push(key),
                Ok(Outcome::Refused(why)) => refused.push(format!("{key}: {why}.")),
                Err(e) => refused.push(e),
            }
        }
        (done, missing, refused)
    })
    .await?;
    let mut parts = Vec::new();
    if !done.is_empty() {
        parts.push(format!("{verb} {}: {}.", plural(done.len()), done.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("Not banned (any more): {}.", missing.join(", ")));
    }
    parts.extend(refused.iter().cloned());
    let success = refused.is_empty() && !done.is_empty();
    Ok(console.done(success, parts.join(" "), &back_to_bans()))
}

pub async fn lift(change: Change<super::IgnoredFields>) -> Result<HttpResponse, ConsoleError> {
    let console = &change.console;
    console.require(Screen::Bans.reach())?;
    let keys = match selected(&change.pairs) {
        Ok(keys) => keys,
        Err(message) => return Ok(console.done(false, message, &back_to_bans())),
    };
    let actor = console.principal.clone();
    each_ban(console, "Lifted", keys, move |warden, source, login| {
        let lifted = match login {
            Some(login) => warden.unban_login(source, login, &actor),
            None => warden.unban(source, &actor),
        };
        match lifted {
            Ok(Some(ban)) => Outcome::Done(ban.describe()),
            Ok(None) => Outcome::Missing,
            Err(e) => Outcome::Refused(format!("the state store failed ({e}); it stays banned")),
        }
    })
    .await
}

#[derive(Deserialize)]
pub struct LengthenForm {
    by: Option<String>,
    by_text: Option<String>,
}

pub async fn lengthen(change: Change<LengthenForm>) -> Result<HttpResponse, ConsoleError> {
    let console = &change.console;
    console.require(Screen::Bans.reach())?;
    let keys = match selected(&change.pairs) {
        Ok(keys) => keys,
        Err(message) => return Ok(console.done(false, message, &back_to_bans())),
    };
    // A typed length wins over the chosen one.
    let typed = change.form.by_text.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let by = typed.or(change.form.by.as_deref());
    let lengthening = match Lengthening::from_fields(by, None) {
        Ok(lengthening) => lengthening,
        Err(e) => return Ok(console.done(false, e.to_string(), &back_to_bans())),
    };
    let actor = console.principal.clone();
    each_ban(console, "Lengthened", keys, move |warden, source, login| {
        match warden.lengthen_ban(source, login, lengthening, &actor) {
            Ok(ban) => Outcome::Done(format!("{} (now until {})", ban.describe(), ban.expires_at.readable())),
            Err(LengthenError::NotBanned(_)) => Outcome::Missing,
            Err(e) => Outcome::Refused(e.to_string()),
        }
    })
    .await
}
