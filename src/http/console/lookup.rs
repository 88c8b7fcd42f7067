//! The look-up screen: "is this address blocked, and why?" for an address and optionally a
//! login, from `Warden::why` (what the API's `why` and `decide` answer), on a GET form so the
//! answer has a URL support staff can paste; with the buttons that fix what it found: lift
//! the ban or a login's refusal, lift and trust, end a stale password's quarantine there.

use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;

use super::bans::{ban_key, cause, parse_key, remaining};
use super::{Change, Console, ConsoleError, PREFIX, Screen, column_heads, csrf_field};
use crate::bans::Ban;
use crate::engine::Decision;
use crate::network::parse_ip;
use crate::warden::{Diagnosis, device_name};

/// The longest login read (a mailbox address is at most 320 characters).
const MAX_LOGIN: usize = 320;
/// The longest address text read.
const MAX_ADDRESS: usize = 100;

#[derive(Deserialize)]
pub struct LookupQuery {
    ip: Option<String>,
    login: Option<String>,
}

fn bounded(text: Option<&str>, most: usize) -> String {
    text.unwrap_or_default().trim().chars().take(most).collect()
}

/// The look-up's own URL for `ip` and `login`: where its buttons come back to.
fn lookup_url(ip: &str, login: &str) -> String {
    let mut fields = vec![("ip", ip)];
    if !login.is_empty() {
        fields.push(("login", login));
    }
    format!("{PREFIX}/lookup?{}", serde_urlencoded::to_string(fields).unwrap_or_default())
}

pub async fn page(console: Console, query: web::Query<LookupQuery>) -> Result<HttpResponse, ConsoleError> {
    console.require(Screen::Lookup.reach())?;
    let ip = bounded(query.ip.as_deref(), MAX_ADDRESS);
    let login = bounded(query.login.as_deref(), MAX_LOGIN);
    let answer = if ip.is_empty() {
        html! { p.hint { "What a customer's mail app is told, and why: give the address it connects from." } }
    } else {
        match parse_ip(&ip) {
            Err(e) => html! { p.flash.failure #lookup-error role="alert" { "That is not an address: " (e) } },
            Ok(address) => {
                let key = (!login.is_empty()).then(|| crate::login::key(&login).into_owned());
                let diagnosis = console.warden.why(address, key.as_deref());
                explained(&console, &diagnosis, &ip, &login)
            }
        }
    };
    let body = html! {
        form.row method="get" action={ (PREFIX) "/lookup" } role="search" {
            label for="ip" { "Address" input #ip type="text" name="ip" value=(ip) maxlength=(MAX_ADDRESS) required placeholder="203.0.113.7"; }
            label for="login" { "Login (optional)" input #login type="text" name="login" value=(login) maxlength=(MAX_LOGIN) placeholder="alice@example.com"; }
            button type="submit" { "Look up" }
        }
        (answer)
    };
    Ok(console.page(Screen::Lookup, Screen::Lookup.title(), body))
}

/// The hidden fields that bring a button back to this look-up.
fn return_fields(ip: &str, login: &str) -> Markup {
    html! {
        input type="hidden" name="ip" value=(ip);
        input type="hidden" name="login" value=(login);
    }
}

/// The buttons that lift `ban`: lift, and lift and trust with a comment.
fn lift_buttons(console: &Console, ban: &Ban, ip: &str, login: &str) -> Markup {
    let what = ban.describe();
    let network = ban.source.network();
    html! {
        div.actions {
            form.inline method="post" action={ (PREFIX) "/lookup/lift" } {
                (csrf_field(console)) (return_fields(ip, login))
                input type="hidden" name="addr" value=(ban_key(ban));
                button.danger.lift type="submit" { "Lift the ban on " (what) }
            }
            form.row method="post" action={ (PREFIX) "/lookup/lift" } {
                (csrf_field(console)) (return_fields(ip, login))
                input type="hidden" name="addr" value=(ban_key(ban));
                input type="hidden" name="trust" value="true";
                @let id = format!("comment-{}", ban_key(ban).replace([' ', '.', ':', '/', '@'], "-"));
                label for=(id) { "Comment" input id=(id) type="text" name="comment" maxlength="200" placeholder="customer's office"; }
                button.lift-and-trust type="submit" { "Lift and trust " (network) }
            }
        }
    }
}

fn explained(console: &Console, diagnosis: &Diagnosis, ip: &str, login: &str) -> Markup {
    let e = &diagnosis.explanation;
    let now = console.warden.now();
    let lines = diagnosis.lines();
    let allowed = matches!(e.decision, Decision::Allow(_) | Decision::Delay { .. });
    let stale_after = diagnosis.stale_after;
    html! {
        @if allowed {
            p.flash.success #decision { (lines.first().cloned().unwrap_or_default()) }
        } @else {
            p.flash.failure #decision { (lines.first().cloned().unwrap_or_default()) }
        }
        @if lines.len() > 1 {
            ul.explained #explanation {
                @for line in lines.iter().skip(1) { li { (line) } }
            }
        }
        p #next-ban {
            (e.source) " is banned at " (e.max_failures) " distinct wrong passwords within "
            (humantime::format_duration(diagnosis.window)) "; " (e.failures_in_window) " count now"
            @if diagnosis.tolerance.good_accounts > 0 {
                " (" (diagnosis.max_failures) " plus " (diagnosis.tolerance.earned) " it earned from "
                (diagnosis.tolerance.good_accounts) " accounts that log in from there)"
            }
            "."
        }
        @if let Some(ban) = &e.ban {
            h2 { "The ban" }
            p #ban {
                (ban.source) " until " (ban.expires_at.readable()) " (in " (remaining(now, ban.expires_at)) "): " (cause(ban))
            }
            (lift_buttons(console, ban, ip, login))
        }
        @if !diagnosis.login_refusals.is_empty() {
            h2 { "Logins refused from here" }
            @for refusal in &diagnosis.login_refusals {
                p.refusal {
                    (refusal.refused_login().unwrap_or_default()) " from " (refusal.source) " until "
                    (refusal.expires_at.readable()) ": " (cause(refusal))
                }
                (lift_buttons(console, refusal, ip, login))
            }
        }
        @if !diagnosis.guesses.is_empty() {
            h2 { "Wrong passwords remembered from " (e.source) }
            div.table-wrap {
                table #guesses {
                    (column_heads(&["Login", "Protocol", "Mail app", "Tries", "Last", "State"]))
                    tbody {
                        @for guess in &diagnosis.guesses {
                            @let quarantined = guess.quarantined_until().filter(|end| *end > now);
                            @let stale = stale_after.is_some_and(|after| guess.failures >= after) || quarantined.is_some();
                            tr {
                                td { (guess.login) }
                                td { (guess.protocol.label()) }
                                td { (device_name(&guess.device_id).unwrap_or_default()) }
                                td { (guess.failures) }
                                td { (guess.last_seen.readable()) }
                                td {
                                    @if let Some(end) = quarantined {
                                        "stale device: this password is refused from here until " (end.readable())
                                        form.inline method="post" action={ (PREFIX) "/lookup/forgive" } {
                                            (csrf_field(console)) (return_fields(ip, login))
                                            input type="hidden" name="forgive" value=(guess.login);
                                            button.end-quarantine type="submit" { "End the quarantine of " (guess.login) " at " (e.source) }
                                        }
                                    } @else if guess.forgiven() {
                                        "not counted: the account logged in from here since"
                                    } @else if stale {
                                        "stale device (the same password again and again)"
                                    } @else {
                                        "counted"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !diagnosis.accounts_under_attack.is_empty() {
            h2 { "Accounts under attack" }
            ul { @for account in &diagnosis.accounts_under_attack { li { (account) } } }
        }
    }
}

#[derive(Deserialize)]
pub struct LiftForm {
    addr: String,
    ip: Option<String>,
    login: Option<String>,
    trust: Option<bool>,
    comment: Option<String>,
}

pub async fn lift(change: Change<LiftForm>) -> Result<HttpResponse, ConsoleError> {
    let console = &change.console;
    console.require(Screen::Lookup.reach())?;
    let form = &change.form;
    let back = lookup_url(&bounded(form.ip.as_deref(), MAX_ADDRESS), &bounded(form.login.as_deref(), MAX_LOGIN));
    let key = bounded(Some(&form.addr), MAX_ADDRESS + MAX_LOGIN);
    let (source, login) = match parse_key(&console.warden, &key) {
        Ok(parts) => parts,
        Err(e) => return Ok(console.done(false, e, &back)),
    };
    let trust = match (form.trust.unwrap_or(false), form.comment.as_deref()) {
        (true, comment) => match crate::http::admin::checked_comment(comment.unwrap_or_default().trim()) {
            Ok(comment) => Some(comment),
            Err(e) => return Ok(console.done(false, e.to_string(), &back)),
        },
        (false, _) => None,
    };
    let warden = console.warden.get_ref().clone();
    let actor = console.principal.clone();
    let trusted = trust.is_some();
    let lifted = super::blocking(move || match trust {
        Some(comment) => warden.lift_and_trust(source, login.as_deref(), &comment, &actor).map_err(|e| e.to_string()),
        None => match &login {
            Some(login) => warden.unban_login(source, login, &actor),
            None => warden.unban(source, &actor),
        }
        .map_err(|e| e.to_string()),
    })
    .await?;
    Ok(match lifted {
        Ok(Some(ban)) if trusted => console.done(
            true,
            format!("Lifted the ban on {}; {} is trusted now.", ban.describe(), ban.source.network()),
            &back,
        ),
        Ok(Some(ban)) => console.done(true, format!("Lifted the ban on {}.", ban.describe()), &back),
        Ok(None) => console.done(false, format!("{key} is not banned (any more)."), &back),
        Err(e) => console.done(false, e, &back),
    })
}

#[derive(Deserialize)]
pub struct ForgiveForm {
    ip: String,
    login: Option<String>,
    forgive: String,
}

pub async fn forgive(change: Change<ForgiveForm>) -> Result<HttpResponse, ConsoleError> {
    let console = &change.console;
    console.require(Screen::Lookup.reach())?;
    let form = &change.form;
    let ip = bounded(Some(&form.ip), MAX_ADDRESS);
    let back = lookup_url(&ip, &bounded(form.login.as_deref(), MAX_LOGIN));
    let address = match parse_ip(&ip) {
        Ok(address) => address,
        Err(e) => return Ok(console.done(false, format!("That is not an address: {e}"), &back)),
    };
    let login = bounded(Some(&form.forgive), MAX_LOGIN);
    let source = console.warden.policy().autoban.grouping.source_of(address);
    let warden = console.warden.get_ref().clone();
    let actor = console.principal.clone();
    let held = {
        let login = login.clone();
        super::blocking(move || warden.forgive_login_at(source, &login, &actor)).await?
    };
    Ok(if held {
        console.done(
            true,
            format!("{login}'s wrong passwords from {source} are forgiven and its quarantine there ended."),
            &back,
        )
    } else {
        console.done(false, format!("Nothing of {login} is held at {source} (any more)."), &back)
    })
}
