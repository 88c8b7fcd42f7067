//! The overview: what is happening now, at a glance (active bans, accounts under attack).

use actix_web::HttpResponse;
use maud::html;

use super::{Console, ConsoleError, PREFIX, Screen};

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
    let bans = console.warden.bans();
    let attacked = console.warden.accounts_under_attack();
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
        }
        @if !attacked.is_empty() {
            h2 { "Accounts under attack" }
            ul {
                @for login in &attacked {
                    li { (login) }
                }
            }
        }
    };
    Ok(console.page(Screen::Overview, Screen::Overview.title(), body))
}
