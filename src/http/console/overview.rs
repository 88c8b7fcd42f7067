//! The overview: what is happening now, at a glance: logins, refusals and bans over the last
//! hour and the last day (bar charts drawn as inline SVG, each with its numbers for screen
//! readers), active bans, accounts under attack and stale devices in quarantine.

use actix_web::HttpResponse;
use maud::{Markup, html};

use super::{Console, ConsoleError, PREFIX, Screen, column_heads};
use crate::activity::{Activity, BANS, Kind, REFUSALS, Tally};
use crate::warden::device_name;

/// At most this many quarantines listed.
const QUARANTINES_SHOWN: usize = 50;

/// The SVG's drawing area; the style sheet scales it to the page's width.
const CHART_WIDTH: u64 = 600;
const CHART_HEIGHT: u64 = 80;

/// A bar chart of `values` (oldest first), one bar per tally: `what` says what is counted
/// ("logins per minute over the last hour"), and is with the total and the busiest stretch
/// the chart's text alternative; the numbers themselves are in a table behind a summary.
fn chart(id: &str, what: &str, tallies: &[Tally], value: impl Fn(&Tally) -> u64, stretch: &str) -> Markup {
    let values: Vec<u64> = tallies.iter().map(value).collect();
    let total: u64 = values.iter().sum();
    let most = values.iter().copied().max().unwrap_or(0);
    let slot = CHART_WIDTH / (values.len().max(1) as u64);
    let bar = slot.saturating_sub(1).max(1);
    let alternative = format!("{what}: {total} in all, at most {most} in one {stretch}");
    html! {
        figure.chart-figure {
            svg.chart #(id) role="img" aria-label=(alternative) viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT) }
                preserveAspectRatio="none" {
                @for (i, n) in values.iter().enumerate() {
                    @let height = if most == 0 { 0 } else { (n * CHART_HEIGHT).div_ceil(most) };
                    rect x=(i as u64 * slot) y=(CHART_HEIGHT - height) width=(bar) height=(height) {
                        title { (tallies[i].start.readable()) ": " (n) }
                    }
                }
                line.baseline x1="0" y1=(CHART_HEIGHT) x2=(CHART_WIDTH) y2=(CHART_HEIGHT) {}
            }
            figcaption { (what) ": " strong.total { (total) } }
            details {
                summary { "The numbers" }
                div.table-wrap {
                    table {
                        (column_heads(&["From", "Count"]))
                        tbody {
                            @for (tally, n) in tallies.iter().zip(&values).filter(|(_, n)| **n > 0) {
                                tr { td { (tally.start.readable()) } td { (n) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A table of counts by label over the last hour and the last day.
fn by_label(caption: &str, labels: &[&str], kind: fn(usize) -> Kind, hour: &Tally, day: &Tally) -> Markup {
    html! {
        div.table-wrap {
            table {
                caption { (caption) }
                (column_heads(&["Reason", "Last hour", "Last day"]))
                tbody {
                    @for (i, label) in labels.iter().enumerate() {
                        tr {
                            th scope="row" { (label.replace('_', " ")) }
                            td { (hour.count(kind(i))) }
                            td { (day.count(kind(i))) }
                        }
                    }
                }
            }
        }
    }
}

pub async fn page(console: Console) -> Result<HttpResponse, ConsoleError> {
    if console.require(Screen::Overview.reach()).is_err() {
        // The console's home for a scope the overview is not for (a hosting customer's):
        // its first screen.
        let scope = console.principal.scope.kind();
        return match Screen::ALL.into_iter().find(|screen| screen.reach().admits(scope)) {
            Some(screen) => Ok(super::see_other(&format!("{PREFIX}{}", screen.path()))),
            None => Err(ConsoleError::Forbidden),
        };
    }
    let warden = &console.warden;
    let bans = warden.bans();
    let attacked = warden.accounts_under_attack();
    let quarantines = warden.quarantines(QUARANTINES_SHOWN);
    let recent = warden.recent_activity();
    let hour = Activity::total(&recent.last_hour);
    let day = Activity::total(&recent.last_day);
    let body = html! {
        section.cards aria-label="Now" {
            div.card {
                div.figure #active-bans { (bans.len()) }
                div { a href={ (PREFIX) "/bans" } { "active bans" } }
            }
            div.card {
                div.figure #accounts-under-attack { (attacked.len()) }
                div { "accounts under attack" }
            }
            div.card {
                div.figure #quarantines { (quarantines.len()) }
                div { "stale devices in quarantine" }
            }
            div.card {
                div.figure #logins-last-hour { (hour.logins()) }
                div { "logins in the last hour" }
            }
            div.card {
                div.figure #refusals-last-hour { (hour.refusals()) }
                div { "refusals in the last hour" }
            }
            div.card {
                div.figure #bans-last-day { (day.bans()) }
                div { "bans placed in the last day" }
            }
        }
        h2 { "The last hour" }
        div.charts {
            (chart("chart-hour-logins", "Logins allowed per minute over the last hour", &recent.last_hour, Tally::logins, "minute"))
            (chart("chart-hour-refusals", "Logins refused per minute over the last hour", &recent.last_hour, Tally::refusals, "minute"))
            (chart("chart-hour-bans", "Bans placed per minute over the last hour", &recent.last_hour, Tally::bans, "minute"))
        }
        h2 { "The last day" }
        div.charts {
            (chart("chart-day-logins", "Logins allowed per hour over the last day", &recent.last_day, Tally::logins, "hour"))
            (chart("chart-day-refusals", "Logins refused per hour over the last day", &recent.last_day, Tally::refusals, "hour"))
            (chart("chart-day-bans", "Bans placed per hour over the last day", &recent.last_day, Tally::bans, "hour"))
        }
        p.hint { "Counted in memory since the server started; " (hour.delayed()) " logins delayed in the last hour, " (day.delayed()) " in the last day." }
        h2 { "Refusals and bans by reason" }
        div #refusals-by-reason { (by_label("Logins refused", REFUSALS, Kind::Refused, &hour, &day)) }
        div #bans-by-kind { (by_label("Bans placed (source, IP+login, subnet)", &BANS, Kind::Ban, &hour, &day)) }
        @if !attacked.is_empty() {
            h2 { "Accounts under attack" }
            ul #attacked {
                @for login in &attacked {
                    li {
                        a href={ (PREFIX) "/logins?" (serde_urlencoded::to_string([("login", login)]).unwrap_or_default()) } {
                            (login)
                        }
                    }
                }
            }
        }
        h2 { "Stale devices in quarantine" }
        @if quarantines.is_empty() {
            p.muted #no-quarantines { "None: no mail app keeps trying an old password." }
        } @else {
            p.hint { "A mail app keeps using an old password: that password is refused from that place until the time shown, without counting toward a ban." }
            div.table-wrap {
                table #quarantine-list {
                    (column_heads(&["Login", "From", "Mail app", "Tries", "Last try", "Refused until"]))
                    tbody {
                        @for (source, guess) in &quarantines {
                            tr {
                                td { (guess.login) }
                                td { (source.to_string()) }
                                td { (device_name(&guess.device_id).unwrap_or_else(|| "unknown app".into())) " (" (guess.protocol.label()) ")" }
                                td { (guess.failures) }
                                td { (guess.last_seen.readable()) }
                                td { (guess.quarantined_until().map(|t| t.readable()).unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(console.page(Screen::Overview, Screen::Overview.title(), body))
}
