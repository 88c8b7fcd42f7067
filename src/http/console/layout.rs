//! The console's one layout: the skip link, the header with the screens this principal's
//! scope reaches, who is signed in and the sign-out button, the message the last change left,
//! and the screen's own content. Also the bare layout of the sign-in and error pages.

use maud::{DOCTYPE, Markup, html};

use super::{Console, PREFIX, csrf_field};
use crate::http::admin::Reach;

/// The console's screens, in the order of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Overview,
    Lookup,
    Bans,
    Lists,
    Firewall,
    BlockLog,
    Logins,
}

impl Screen {
    pub const ALL: [Screen; 7] = [
        Screen::Overview,
        Screen::Lookup,
        Screen::Bans,
        Screen::Lists,
        Screen::Firewall,
        Screen::BlockLog,
        Screen::Logins,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Lookup => "Look-up",
            Screen::Bans => "Bans",
            Screen::Lists => "Blocked and trusted",
            Screen::Firewall => "Email firewall",
            Screen::BlockLog => "Block log",
            Screen::Logins => "Login history",
        }
    }

    /// The screen's path under `PREFIX`.
    pub fn path(self) -> &'static str {
        match self {
            Screen::Overview => "/",
            Screen::Lookup => "/lookup",
            Screen::Bans => "/bans",
            Screen::Lists => "/lists",
            Screen::Firewall => "/firewall",
            Screen::BlockLog => "/events",
            Screen::Logins => "/logins",
        }
    }

    /// Who may open it: the reach of the API routes it is built on.
    pub fn reach(self) -> Reach {
        match self {
            Screen::Overview | Screen::Lookup | Screen::Bans => Reach::Support,
            Screen::Lists => Reach::Admin,
            Screen::Firewall => Reach::Mailboxes,
            Screen::BlockLog | Screen::Logins => Reach::BlockLog,
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="color-scheme" content="light dark";
        title { (title) " - mailwarden" }
        link rel="stylesheet" href={ (PREFIX) "/style.css" };
        script src={ (PREFIX) "/console.js" } defer {}
    }
}

/// A signed-in page.
pub fn page(console: &Console, current: Screen, title: &str, body: Markup) -> Markup {
    let scope = console.principal.scope.kind();
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                a.skip href="#main" { "Skip to the content" }
                header {
                    a.brand href={ (PREFIX) "/" } { "mailwarden" }
                    nav aria-label="Screens" {
                        ul {
                            @for screen in Screen::ALL.into_iter().filter(|s| s.reach().admits(scope)) {
                                li {
                                    @if screen == current {
                                        a href={ (PREFIX) (screen.path()) } aria-current="page" { (screen.title()) }
                                    } @else {
                                        a href={ (PREFIX) (screen.path()) } { (screen.title()) }
                                    }
                                }
                            }
                        }
                    }
                    form.sign-out method="post" action={ (PREFIX) "/sign-out" } {
                        span.who { (console.principal.name) " (" (console.principal.scope) ")" }
                        (csrf_field(console))
                        button type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    @if let Some(flash) = &console.flash {
                        @if flash.success {
                            p.flash.success role="status" { (flash.text) }
                        } @else {
                            p.flash.failure role="alert" { (flash.text) }
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// A page without the navigation: sign-in and errors.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                header { a.brand href={ (PREFIX) "/" } { "mailwarden" } }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A table's header row: one column heading per name; an empty name is the column of a row's
/// buttons, named "Action" for screen readers only.
pub fn column_heads(names: &[&str]) -> Markup {
    html! {
        thead {
            tr {
                @for name in names {
                    @if name.is_empty() {
                        th scope="col" { span.visually-hidden { "Action" } }
                    } @else {
                        th scope="col" { (name) }
                    }
                }
            }
        }
    }
}
