//! The web console under `/console/` on the admin listener: server-rendered pages (maud's
//! `html!`, checked when the crate compiles, every value escaped) for the support desk and the
//! hosting customer, calling the same `Warden` methods as the admin API, so the two cannot
//! disagree. One layout (`layout`), one style sheet and one small script compiled in, a strict
//! Content-Security-Policy, nothing fetched from elsewhere.
//!
//! Access: a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` behind TLS, path
//! `/console`) opened by signing in with a token, found again on every request by `Console`
//! (which asks the warden who the session's token is now); every change is a POST whose form
//! carries the session's CSRF value, checked by `Change` before the handler runs. A screen a
//! scope does not reach answers 403 with the same `Reach` the API route behind it has.
//! Architecture invariant: no handler here changes anything without `Change`, and none reads a
//! mailbox without the principal's `sees_key`, exactly as the API's handlers do.

mod bans;
mod events;
mod firewall;
mod layout;
mod lists;
mod logins;
mod lookup;
mod overview;

use std::future::{Ready, ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::LocalBoxFuture;
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::admin::Reach;
use crate::principal::Principal;
use crate::sessions::{Flash, csrf_matches};
use crate::warden::{SignInRefusal, Warden};
pub use layout::{Screen, column_heads};

/// Where the console is mounted; every link and the cookie's path start with it.
pub const PREFIX: &str = "/console";
/// The session cookie's name.
pub const COOKIE: &str = "mailwarden_console";
const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("console.js");
/// Nothing but this origin's own style sheet and script; no inline script or style, no frames.
const SECURITY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Largest form body a console change may send (a list of addresses pasted at once).
const MAX_FORM_BYTES: usize = 256 * 1024;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope(PREFIX)
            .app_data(web::PayloadConfig::new(MAX_FORM_BYTES))
            .route("", web::get().to(|| async { see_other(&format!("{PREFIX}/")) }))
            .route("/", web::get().to(overview::page))
            // Login history
            .route("/logins", web::get().to(logins::page))
            // Look-up
            .route("/lookup", web::get().to(lookup::page))
            .route("/lookup/lift", web::post().to(lookup::lift))
            .route("/lookup/forgive", web::post().to(lookup::forgive))
            // Bans
            .route("/bans", web::get().to(bans::page))
            .route("/bans/lift", web::post().to(bans::lift))
            .route("/bans/lengthen", web::post().to(bans::lengthen))
            .route("/sign-in", web::get().to(sign_in_page))
            .route("/sign-in", web::post().to(sign_in))
            .route("/sign-out", web::post().to(sign_out))
            // Email firewall
            .route("/firewall", web::get().to(firewall::list))
            .route("/firewall/{login}", web::get().to(firewall::mailbox_page))
            .route("/firewall/{login}/rules", web::post().to(firewall::add_rule))
            .route("/firewall/{login}/rules/{number}/move", web::post().to(firewall::move_rule))
            .route("/firewall/{login}/rules/{number}/delete", web::post().to(firewall::delete_rule))
            .route("/firewall/{login}/default", web::post().to(firewall::set_default))
            .route("/firewall/{login}/reset", web::post().to(firewall::reset))
            // Blocked and trusted lists
            .route("/lists", web::get().to(lists::page))
            .route("/lists/add", web::post().to(lists::add))
            .route("/lists/delete", web::post().to(lists::delete))
            .route("/lists/{file}", web::get().to(lists::download))
            // Block log
            .route("/events", web::get().to(events::page))
            .route("/style.css", web::get().to(|| async { asset("text/css; charset=utf-8", STYLE) }))
            .route("/console.js", web::get().to(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
            .default_service(web::to(not_found)),
    );
}

/// The headers every console answer carries.
fn secure(response: HttpResponse) -> HttpResponse {
    super::page_headers(response, SECURITY)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut response = HttpResponse::Ok().content_type(content_type).body(body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    secure(response)
}

/// An HTML answer.
pub fn html_response(status: StatusCode, markup: Markup) -> HttpResponse {
    secure(HttpResponse::build(status).content_type("text/html; charset=utf-8").body(markup.into_string()))
}

/// `303 See Other` to `location` (after a change, so reloading the page repeats nothing).
pub fn see_other(location: &str) -> HttpResponse {
    let mut response = HttpResponse::SeeOther().finish();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    secure(response)
}

fn warden_of(request: &HttpRequest) -> Result<web::Data<Warden>, ConsoleError> {
    let warden = request.app_data::<web::Data<Warden>>().cloned().ok_or(ConsoleError::NotFound)?;
    if warden.policy().console.enabled { Ok(warden) } else { Err(ConsoleError::NotFound) }
}

fn cookie_of(request: &HttpRequest) -> Option<String> {
    request.cookie(COOKIE).map(|cookie| cookie.value().to_string()).filter(|value| !value.is_empty())
}

/// A signed-in request: who it is, the CSRF value its forms must carry, and the message the
/// previous change left. Taking it as an argument is what keeps a screen behind the sign-in.
pub struct Console {
    pub principal: Principal,
    pub csrf: String,
    pub flash: Option<Flash>,
    pub warden: web::Data<Warden>,
    cookie: String,
}

impl Console {
    /// Refuses a principal whose scope the screen's `reach` (the API route's behind it) does
    /// not admit.
    pub fn require(&self, reach: Reach) -> Result<(), ConsoleError> {
        if reach.admits(self.principal.scope.kind()) { Ok(()) } else { Err(ConsoleError::Forbidden) }
    }

    /// Leaves `text` for the next page and sends the browser to `location` (a console path).
    pub fn done(&self, success: bool, text: impl Into<String>, location: &str) -> HttpResponse {
        self.warden.console_flash(&self.cookie, success, text.into());
        see_other(location)
    }

    /// A whole page: the layout around `body`.
    pub fn page(&self, screen: Screen, title: &str, body: Markup) -> HttpResponse {
        html_response(StatusCode::OK, layout::page(self, screen, title, body))
    }
}

impl FromRequest for Console {
    type Error = ConsoleError;
    type Future = Ready<Result<Console, ConsoleError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(console_of(request))
    }
}

fn console_of(request: &HttpRequest) -> Result<Console, ConsoleError> {
    let warden = warden_of(request)?;
    let cookie = cookie_of(request).ok_or_else(|| ConsoleError::SignIn { next: next_of(request) })?;
    let session = warden.console_session(&cookie).ok_or_else(|| ConsoleError::SignIn { next: next_of(request) })?;
    Ok(Console {
        principal: session.principal,
        csrf: session.view.csrf.clone(),
        flash: session.view.flash,
        warden,
        cookie,
    })
}

/// Where to come back to after signing in: this page, when it was a GET of the console.
fn next_of(request: &HttpRequest) -> String {
    let path = request.uri().path_and_query().map_or(PREFIX, |p| p.as_str());
    if request.method() == actix_web::http::Method::GET && path.starts_with(PREFIX) {
        path.to_string()
    } else {
        format!("{PREFIX}/")
    }
}

/// A change: a signed-in POST whose form carried the session's CSRF value, and its fields as
/// `T` (which should ignore the `csrf` field). `pairs` has every field as sent, repeated ones
/// included (the addresses ticked in a list).
pub struct Change<T> {
    pub console: Console,
    pub form: T,
    pub pairs: Vec<(String, String)>,
}

impl<T: DeserializeOwned + 'static> FromRequest for Change<T> {
    type Error = ConsoleError;
    type Future = LocalBoxFuture<'static, Result<Change<T>, ConsoleError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let console = console_of(request);
        let body = web::Bytes::from_request(request, payload);
        Box::pin(async move {
            let console = console?;
            let body = body.await.map_err(|e| ConsoleError::BadForm(e.to_string()))?;
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&body).map_err(|e| ConsoleError::BadForm(e.to_string()))?;
            let presented = pairs.iter().find(|(name, _)| name == "csrf").map_or("", |(_, value)| value.as_str());
            if !csrf_matches(&console.csrf, presented) {
                return Err(ConsoleError::Csrf);
            }
            let form = serde_urlencoded::from_bytes(&body).map_err(|e| ConsoleError::BadForm(e.to_string()))?;
            Ok(Change { console, form, pairs })
        })
    }
}

impl From<crate::principal::MailboxRefusal> for ConsoleError {
    fn from(refusal: crate::principal::MailboxRefusal) -> ConsoleError {
        match refusal {
            crate::principal::MailboxRefusal::NotAMailbox(message) => ConsoleError::Invalid(message),
            crate::principal::MailboxRefusal::NotYours => ConsoleError::Forbidden,
        }
    }
}

/// Why a console request got no screen.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Not signed in, or the session ended: off to the sign-in page, then back to `next`.
    #[error("sign in first")]
    SignIn { next: String },
    #[error("your token's scope does not reach this screen or this mailbox")]
    Forbidden,
    #[error(
        "this form was not sent by this console session (its CSRF token is missing or wrong); reload the page and try again"
    )]
    Csrf,
    #[error("the form was not understood: {0}")]
    BadForm(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no such page")]
    NotFound,
    #[error("{0}")]
    Failed(String),
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn { .. } => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden | ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::BadForm(_) | ConsoleError::Invalid(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ConsoleError::SignIn { next } = self {
            let query = serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
            return see_other(&format!("{PREFIX}/sign-in?{query}"));
        }
        html_response(self.status_code(), layout::bare("Not possible", html! { p role="alert" { (self.to_string()) } }))
    }
}

async fn not_found(request: HttpRequest) -> Result<HttpResponse, ConsoleError> {
    warden_of(&request)?;
    Err(ConsoleError::NotFound)
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Only a path of the console itself: a sign-in link cannot send anyone elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with(&format!("{PREFIX}/"))
                && !path.contains("//")
                && !path.contains('\\')
                && path.chars().all(|c| c.is_ascii_graphic()) =>
        {
            path.to_string()
        }
        _ => format!("{PREFIX}/"),
    }
}

async fn sign_in_page(request: HttpRequest, query: web::Query<NextQuery>) -> Result<HttpResponse, ConsoleError> {
    warden_of(&request)?;
    Ok(html_response(StatusCode::OK, sign_in_form(&safe_next(query.next.as_deref()), None)))
}

fn sign_in_form(next: &str, refusal: Option<&str>) -> Markup {
    layout::bare(
        "Sign in",
        html! {
            form.sign-in method="post" action={ (PREFIX) "/sign-in" } {
                @if let Some(refusal) = refusal {
                    p.flash.failure role="alert" { (refusal) }
                }
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p.hint { "A token made with " code { "mailwarden token create" } " or the policy file's admin token." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
    next: Option<String>,
}

/// The longest token a sign-in reads (the generated ones are 68 characters).
const MAX_TOKEN_LEN: usize = 512;

async fn sign_in(request: HttpRequest, form: web::Form<SignInForm>) -> Result<HttpResponse, ConsoleError> {
    let warden = warden_of(&request)?;
    let next = safe_next(form.next.as_deref());
    let policy = warden.policy();
    // Behind a reverse proxy every sign-in comes from the proxy: the guard against guessing
    // counts the visitor the proxy names, and believes it only from a proxy the admin trusts.
    let client = super::proxy::visitor_address(&request, &policy.server.trusted_proxies, &policy.server.proxy_header)
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let token = form.token.trim();
    if token.len() > MAX_TOKEN_LEN {
        return Ok(html_response(StatusCode::BAD_REQUEST, sign_in_form(&next, Some("That is not a token."))));
    }
    let (cookie, principal) = match web::block({
        let warden = warden.clone();
        let token = token.to_string();
        move || warden.console_sign_in(&token, client)
    })
    .await
    {
        Ok(Ok(signed_in)) => signed_in,
        Ok(Err(refusal)) => {
            let status = match refusal {
                SignInRefusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                SignInRefusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                SignInRefusal::Wrong | SignInRefusal::MetricsScope => StatusCode::UNAUTHORIZED,
            };
            return Ok(html_response(status, sign_in_form(&next, Some(&refusal.to_string()))));
        }
        Err(_) => return Err(ConsoleError::Failed("the server is stopping".into())),
    };
    tracing::info!(name = %principal.name, scope = %principal.scope, "console sign-in");
    let secure = policy.console.secure_cookie || policy.tls.admin.is_some();
    let session = actix_web::cookie::Cookie::build(COOKIE, cookie)
        .path(PREFIX)
        .http_only(true)
        .secure(secure)
        .same_site(actix_web::cookie::SameSite::Strict)
        .finish();
    let mut response = see_other(&next);
    if let Ok(value) = HeaderValue::from_str(&session.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn sign_out(change: Change<IgnoredFields>) -> HttpResponse {
    let console = change.console;
    console.warden.console_sign_out(&console.cookie);
    let ended = actix_web::cookie::Cookie::build(COOKIE, "")
        .path(PREFIX)
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::ZERO)
        .finish();
    let mut response = see_other(&format!("{PREFIX}/sign-in"));
    if let Ok(value) = HeaderValue::from_str(&ended.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// A form with nothing but its CSRF value.
#[derive(Deserialize)]
pub struct IgnoredFields {}

/// The hidden field every change's form carries.
pub fn csrf_field(console: &Console) -> Markup {
    html! { input type="hidden" name="csrf" value=(console.csrf); }
}

/// Runs a blocking `Warden` call (a store write) on the blocking pool, as the API does.
pub async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Result<T, ConsoleError> {
    super::run_blocking(call).await.map_err(|failure| {
        ConsoleError::Failed(match failure {
            super::BlockingFailure::Panicked => "the change failed unexpectedly; the server log has the cause".into(),
            super::BlockingFailure::ShuttingDown => "the server is stopping".into(),
        })
    })
}

/// `text` as one path segment of a console link: what the router gives back as `text`. Letters,
/// digits and `@.-_~+` stay as they are (a `+` in a login is common and the router keeps it),
/// every other byte is percent-encoded.
pub fn path_segment(text: &str) -> String {
    let mut segment = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"@.-_~+".contains(&byte) {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    segment
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn a_mailbox_key_in_a_link_keeps_its_plus_and_at_and_encodes_the_rest() {
        assert_eq!(path_segment("alice+tag@example.com"), "alice+tag@example.com");
        assert_eq!(path_segment("@example.com"), "@example.com");
        assert_eq!(path_segment("a?b#c%d"), "a%3Fb%23c%25d");
        assert_eq!(path_segment("jörg@example.de"), "j%C3%B6rg@example.de");
    }
}
