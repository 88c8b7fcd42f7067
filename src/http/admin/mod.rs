//! The admin listener: health, metrics, bans, the admin lists, the dry run and reload, tokens
//! and the audit trail, for the CLI, scripts and Prometheus. Every route needs `Authorization:
//! Bearer <token>` (the policy file's `auth.admin_token`, or a stored token) whose scope
//! reaches it (`admin_routes!`, the one table of each route's reach); every error is JSON
//! `{"error": "<stable code>", "message": "...", "field": "<when one input is at fault>"}`.
//! The OpenAPI document is generated from the handlers' annotations (utoipa), so it cannot
//! drift from the routes.

mod activity;
mod audit;
mod bans;
mod decide;
mod events;
mod firewall;
mod lists;
mod logins;
mod reload;
mod tokens;
mod views;
mod why;

use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::OnceLock;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{IntoParams, OpenApi};

use crate::principal::{MailboxRefusal, Principal, ScopeKind};
use crate::store::StoreError;
use crate::warden::{AuthRefusal, FirewallError, ListError, TokenError, Warden};
pub(crate) use lists::checked_comment;
pub use views::ErrorBody;

/// Which scopes reach a route; `admin` reaches every route. Each route's reach is decided
/// once, in `admin_routes!` below, which both registers the route and lists it in `ROUTES`,
/// the table the `Admin` extractor enforces and the README's scope table is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `admin` only.
    Admin,
    /// `admin` and `support`.
    Support,
    /// `admin` and `domain:` tokens, which the handler confines to their domain's mailboxes.
    Mailboxes,
    /// `admin`, `support`, and `domain:` tokens confined to their domain's logins.
    BlockLog,
    /// `admin` and `metrics`.
    Metrics,
    /// Every scope but `metrics`: the service's own description and health.
    Service,
}

impl Reach {
    pub fn admits(self, scope: ScopeKind) -> bool {
        let others: &[ScopeKind] = match self {
            Reach::Admin => &[],
            Reach::Support => &[ScopeKind::Support],
            Reach::Mailboxes => &[ScopeKind::Domain],
            Reach::BlockLog => &[ScopeKind::Support, ScopeKind::Domain],
            Reach::Metrics => &[ScopeKind::Metrics],
            Reach::Service => &[ScopeKind::Support, ScopeKind::Domain],
        };
        scope == ScopeKind::Admin || others.contains(&scope)
    }
}

/// One admin route and the scopes that reach it.
#[derive(Debug, Clone, Copy)]
pub struct RouteAccess {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The actix pattern (`/api/v1/bans/{addr:.+}`); `openapi_path` gives the document's.
    pub path: &'static str,
    pub reach: Reach,
}

impl RouteAccess {
    /// The path as the OpenAPI document writes it (`/api/v1/bans/{addr}`).
    pub fn openapi_path(&self) -> String {
        let (mut path, mut in_braces, mut in_pattern) = (String::new(), false, false);
        for c in self.path.chars() {
            match c {
                '{' => in_braces = true,
                '}' => (in_braces, in_pattern) = (false, false),
                ':' if in_braces => in_pattern = true,
                _ => {}
            }
            if !in_pattern {
                path.push(c);
            }
        }
        path
    }
}

macro_rules! admin_routes {
    ($( $method:ident $path:literal => $handler:path, $reach:ident; )*) => {
        /// Every admin route and the scopes that reach it.
        pub const ROUTES: &[RouteAccess] = &[
            $( RouteAccess { method: const_upper(stringify!($method)), path: $path, reach: Reach::$reach }, )*
        ];

        fn add_routes(config: &mut web::ServiceConfig) {
            $( config.route($path, web::$method().to($handler)); )*
        }
    };
}

/// The HTTP method's name from the `web::` function's.
const fn const_upper(method: &'static str) -> &'static str {
    match method.as_bytes() {
        b"get" => "GET",
        b"post" => "POST",
        b"put" => "PUT",
        b"delete" => "DELETE",
        _ => panic!("an admin route of another method"),
    }
}

admin_routes! {
    get "/healthz" => healthz, Service;
    get "/metrics" => metrics, Metrics;
    get "/api/v1/openapi.json" => openapi, Service;
    post "/api/v1/reload" => reload::reload, Admin;
    get "/api/v1/decide" => decide::decide, Support;
    get "/api/v1/bans" => bans::list_bans, Support;
    get "/api/v1/bans.txt" => bans::ban_list_text, Support;
    get "/api/v1/bans/{addr:.+}" => bans::show_ban, Support;
    delete "/api/v1/bans/{addr:.+}" => bans::delete_ban, Support;
    post "/api/v1/bans/{addr:.+}/lengthen" => bans::lengthen_ban, Support;
    post "/api/v1/logins/{login}/reset" => logins::reset_login, Admin;
    get "/api/v1/blocks" => lists::list_blocks, Admin;
    post "/api/v1/blocks" => lists::add_block, Admin;
    delete "/api/v1/blocks" => lists::remove_block, Admin;
    get "/api/v1/trusted" => lists::list_trusted, Admin;
    post "/api/v1/trusted" => lists::add_trusted, Admin;
    delete "/api/v1/trusted" => lists::remove_trusted, Admin;
    get "/api/v1/events" => events::list_events, BlockLog;
    get "/api/v1/why" => why::why, Support;
    get "/api/v1/activity" => activity::recent_activity, Support;
    get "/api/v1/logins/{login}/history" => logins::login_history, BlockLog;
    get "/api/v1/mailboxes" => firewall::list_mailboxes, Mailboxes;
    get "/api/v1/mailboxes/{login}/firewall" => firewall::show, Mailboxes;
    put "/api/v1/mailboxes/{login}/firewall" => firewall::replace, Mailboxes;
    delete "/api/v1/mailboxes/{login}/firewall" => firewall::reset, Mailboxes;
    put "/api/v1/mailboxes/{login}/firewall/default" => firewall::set_default, Mailboxes;
    post "/api/v1/mailboxes/{login}/firewall/rules" => firewall::add_rule, Mailboxes;
    post "/api/v1/mailboxes/{login}/firewall/rules/{number}/move" => firewall::move_rule, Mailboxes;
    delete "/api/v1/mailboxes/{login}/firewall/rules/{number}" => firewall::delete_rule, Mailboxes;
    get "/api/v1/tokens" => tokens::list_tokens, Admin;
    post "/api/v1/tokens" => tokens::create_token, Admin;
    delete "/api/v1/tokens/{name}" => tokens::revoke_token, Admin;
    get "/api/v1/audit" => audit::list_audit, Admin;
}

/// The README's table of which scope reaches which route, generated from `ROUTES`.
pub fn scope_table() -> String {
    let mut table = String::from("| Route | admin | support | domain: | metrics |\n|---|---|---|---|---|\n");
    for route in ROUTES {
        let cells: Vec<&str> = ScopeKind::ALL
            .iter()
            .map(|&scope| match (route.reach.admits(scope), scope, route.reach) {
                (false, ..) => "no",
                (true, ScopeKind::Domain, Reach::Mailboxes) => "its domain's mailboxes",
                (true, ScopeKind::Domain, Reach::BlockLog) => "its domain's logins",
                (true, ..) => "yes",
            })
            .collect();
        table.push_str(&format!("| `{} {}` | {} |\n", route.method, route.openapi_path(), cells.join(" | ")));
    }
    table
}

/// The reach of the route `request` matched; a request no route matched (answered 404) is
/// open to every scope but `metrics`, so a typo is not mistaken for a missing permission.
fn reach_of(request: &HttpRequest) -> Reach {
    let pattern = request.match_pattern();
    let method = request.method().as_str();
    ROUTES
        .iter()
        .find(|route| Some(route.path) == pattern.as_deref() && route.method == method)
        .map_or(Reach::Service, |route| route.reach)
}

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::InvalidQuery(e.to_string()).into()))
        .app_data(web::PathConfig::default().error_handler(|e, _| {
            ApiError::InvalidField { field: "number", message: format!("number: a rule number from 1 ({e})") }.into()
        }))
        .app_data(
            web::JsonConfig::default()
                .limit(64 * 1024)
                .content_type_required(false)
                .error_handler(|e, _| ApiError::InvalidBody(e.to_string()).into()),
        );
    add_routes(config);
    config.default_service(web::to(not_found));
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token (Authorization: Bearer <a token or auth.admin_token>)")]
    Unauthorized,
    #[error("this token's scope does not reach this route or this mailbox")]
    Forbidden,
    #[error("too many failed authentications from this address; try again in a minute")]
    RateLimited,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{message}")]
    InvalidField { field: &'static str, message: String },
    #[error("{0}")]
    InvalidAddress(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("invalid JSON body: {0}")]
    InvalidBody(String),
    #[error("{0} is not banned")]
    NotBanned(String),
    #[error(transparent)]
    List(#[from] ListError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("the policy file was not reloaded; the previous policy stays in force: {0}")]
    InvalidConfig(String),
    #[error("no such route")]
    NoRoute,
    #[error("the state store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A bug: the call panicked (the log has the cause). Never reported as shutting down.
    #[error("internal error: the request failed unexpectedly; the server log has the cause")]
    Internal,
}

impl From<super::BlockingFailure> for ApiError {
    fn from(failure: super::BlockingFailure) -> ApiError {
        match failure {
            super::BlockingFailure::Panicked => ApiError::Internal,
            super::BlockingFailure::ShuttingDown => ApiError::ShuttingDown,
        }
    }
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::RateLimited => "rate_limited",
            ApiError::Token(TokenError::Invalid(_)) => "invalid_field",
            ApiError::Token(TokenError::Exists(_)) => "token_exists",
            ApiError::Token(TokenError::NotFound(_)) => "no_such_token",
            ApiError::Token(TokenError::Store(_)) => "store_unavailable",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::InvalidAddress(_) => "invalid_address",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::NotBanned(_) => "not_banned",
            ApiError::List(ListError::DefinedInPolicyFile { .. }) => "defined_in_policy_file",
            ApiError::List(ListError::NotListed { .. }) => "not_listed",
            ApiError::List(ListError::InsideBlocked { .. }) => "inside_blocked_network",
            ApiError::List(ListError::ExpiryInPast) => "invalid_field",
            ApiError::List(ListError::Store(_)) | ApiError::Store(_) => "store_unavailable",
            ApiError::Firewall(FirewallError::InvalidKey(_) | FirewallError::Invalid { .. }) => "invalid_field",
            ApiError::Firewall(FirewallError::NoRuleSet(_)) => "no_rules",
            ApiError::Firewall(FirewallError::NoSuchRule { .. }) => "no_such_rule",
            ApiError::Firewall(FirewallError::NoApiRuleSet(_)) => "no_api_rules",
            ApiError::Firewall(FirewallError::Store(_)) => "store_unavailable",
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::NoRoute => "not_found",
            ApiError::ShuttingDown => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidField { field, .. } => Some(field),
            ApiError::Token(TokenError::Invalid(message)) => message.split_once(':').map(|(field, _)| match field {
                "scope" => "scope",
                _ => "name",
            }),
            ApiError::List(ListError::ExpiryInPast) => Some("expires_at"),
            ApiError::Firewall(FirewallError::InvalidKey(_)) => Some("login"),
            ApiError::Firewall(FirewallError::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Token(TokenError::Invalid(_)) => StatusCode::BAD_REQUEST,
            ApiError::Token(TokenError::Exists(_)) => StatusCode::CONFLICT,
            ApiError::Token(TokenError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Token(TokenError::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InvalidField { .. }
            | ApiError::InvalidAddress(_)
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidBody(_)
            | ApiError::List(ListError::ExpiryInPast)
            | ApiError::Firewall(FirewallError::InvalidKey(_) | FirewallError::Invalid { .. }) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotBanned(_)
            | ApiError::NoRoute
            | ApiError::List(ListError::NotListed { .. })
            | ApiError::Firewall(
                FirewallError::NoRuleSet(_) | FirewallError::NoSuchRule { .. } | FirewallError::NoApiRuleSet(_),
            ) => StatusCode::NOT_FOUND,
            ApiError::List(ListError::DefinedInPolicyFile { .. } | ListError::InsideBlocked { .. }) => {
                StatusCode::CONFLICT
            }
            ApiError::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Store(_)
            | ApiError::List(ListError::Store(_))
            | ApiError::Firewall(FirewallError::Store(_))
            | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
            field: self.field().map(str::to_string),
        };
        let mut response = HttpResponse::build(self.status_code()).json(body);
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, ApiError::RateLimited) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        response
    }
}

/// Proof that the request carried a token in force whose scope reaches the route (`ROUTES`),
/// and who it is; taking it as a handler argument is what protects a route. Handlers of
/// `Reach::Mailboxes` and `Reach::BlockLog` routes narrow a `domain:` token further.
pub struct Admin(pub Principal);

impl Admin {
    pub fn principal(&self) -> &Principal {
        &self.0
    }

    /// The firewall key of `login`, if this principal may see it (`Principal::mailbox_key`).
    fn mailbox(&self, login: &str) -> Result<String, ApiError> {
        self.0.mailbox_key(login).map_err(|refusal| match refusal {
            MailboxRefusal::NotAMailbox(message) => {
                ApiError::InvalidField { field: "login", message: format!("login: {message}") }
            }
            MailboxRefusal::NotYours => ApiError::Forbidden,
        })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(warden) = request.app_data::<web::Data<Warden>>() else {
            return ready(Err(ApiError::Unauthorized));
        };
        let presented =
            request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
        let client = request.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |peer| peer.ip());
        let principal = match warden.authenticate(presented, client) {
            Ok(principal) => principal,
            Err(AuthRefusal::Unauthorized) => return ready(Err(ApiError::Unauthorized)),
            Err(AuthRefusal::RateLimited) => return ready(Err(ApiError::RateLimited)),
        };
        if !reach_of(request).admits(principal.scope.kind()) {
            return ready(Err(ApiError::Forbidden));
        }
        ready(Ok(Admin(principal)))
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive (RFC
/// 7235, section 2.1) and followed by one or more spaces; surrounding whitespace is ignored.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `?limit=&offset=` for lists that can grow.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// At most this many items (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Skip this many items first (default 0).
    offset: Option<usize>,
}

impl Page {
    /// Returns `(limit, offset)` or the field at fault.
    fn checked(&self) -> Result<(usize, usize), ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::InvalidField {
                field: "limit",
                message: format!("limit: {limit} is outside 1..=1000"),
            });
        }
        Ok((limit, self.offset.unwrap_or(0)))
    }

    /// The requested page of `items`, with the total.
    fn slice<T>(&self, items: Vec<T>) -> Result<(Vec<T>, usize, usize, usize), ApiError> {
        let (limit, offset) = self.checked()?;
        let total = items.len();
        let page = items.into_iter().skip(offset).take(limit).collect();
        Ok((page, total, limit, offset))
    }
}

/// Runs a blocking `Warden` call on the blocking pool; a panic in it is a 500.
async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    call: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    super::run_blocking(call).await?.map_err(Into::into)
}

#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The server is up.", body = views::Health),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
async fn healthz(_: Admin, warden: web::Data<Warden>) -> HttpResponse {
    let store_reachable = warden.store_reachable();
    HttpResponse::Ok().json(views::Health {
        status: if store_reachable { "ok" } else { "degraded" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        store: warden.store_backend().into(),
        store_reachable,
        active_bans: warden.bans().len(),
        tracked_sources: warden.tracked_sources(),
    })
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text exposition format.", body = String, content_type = "text/plain"),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
async fn metrics(_: Admin, warden: web::Data<Warden>) -> HttpResponse {
    warden.refresh_gauges();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(warden.metrics().render())
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "service",
    responses((status = 200, description = "This document.", body = Object),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
async fn openapi(_: Admin) -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()));
    HttpResponse::Ok().content_type("application/json").body(document.as_str())
}

async fn not_found(_: Admin) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute)
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Every route can refuse a scope it does not reach and an address that sent too many
        // wrong tokens; said once here rather than on each handler.
        let error = |description: &str| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            ResponseBuilder::new().description(description).content("application/json", content).build()
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete].into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.entry("403".into()).or_insert_with(|| {
                    error("The token's scope does not reach this route (see the README's scope table).").into()
                });
                responses.entry("429".into()).or_insert_with(|| {
                    error("This address sent 10 wrong tokens within the minute; try again when it has passed.").into()
                });
            }
        }
    }
}

/// The admin API's OpenAPI 3 document.
#[derive(OpenApi)]
#[openapi(
    info(title = "mailwarden admin API", description = "Bans, admin lists, dry-run decisions and reloads of a running mailwarden."),
    paths(
        healthz, metrics, openapi, reload::reload, decide::decide,
        bans::list_bans, bans::ban_list_text, bans::show_ban, bans::delete_ban, bans::lengthen_ban, logins::reset_login,
        lists::list_blocks, lists::add_block, lists::remove_block,
        lists::list_trusted, lists::add_trusted, lists::remove_trusted,
        events::list_events, why::why, activity::recent_activity, logins::login_history,
        firewall::list_mailboxes, firewall::show, firewall::replace, firewall::reset,
        firewall::add_rule, firewall::move_rule, firewall::delete_rule, firewall::set_default,
        tokens::list_tokens, tokens::create_token, tokens::revoke_token, audit::list_audit,
    ),
    components(schemas(
        ErrorBody, views::Health, views::BanView, views::BanList, views::Unbanned, views::Lengthened,
        bans::LengthenBody, views::ListEntryView,
        views::ListEntries, views::NewListEntry, views::Removed, views::DecisionView, views::Reloaded,
        events::EventView, events::EventList, why::WhyView, why::GuessView, views::BanGuessView,
        firewall::RuleView, firewall::FirewallView, firewall::MailboxList, firewall::NewRule,
        firewall::MoveRule, firewall::DefaultAction, crate::firewall::StoredRuleSet, crate::firewall::RuleSpec,
        crate::firewall::AsnSpec, logins::LoginResetView, logins::LoginHistoryView, logins::PlaceView,
        logins::HeldFailureView, activity::ActivityView, activity::TallyView,
        tokens::TokenView, tokens::TokenList, tokens::NewToken, tokens::CreatedToken, tokens::RevokedToken,
        audit::AuditView, audit::AuditList,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::{ROUTES, bearer_token, scope_table};

    /// `MAILWARDEN_BLESS=1 cargo test --lib the_readme` writes the table anew after a change.
    #[test]
    fn the_readme_scope_table_is_the_route_table() {
        crate::readme::check_generated_section(
            "<!-- scope table: generated from src/http/admin/mod.rs -->\n",
            "<!-- end of scope table -->",
            &scope_table(),
            "scope table",
        );
    }

    #[test]
    fn the_route_table_shows_its_paths_as_the_openapi_document_does() {
        let paths: Vec<String> = ROUTES.iter().map(|route| route.openapi_path()).collect();
        assert!(paths.contains(&"/api/v1/bans/{addr}".to_string()), "{paths:?}");
        assert!(paths.contains(&"/api/v1/mailboxes/{login}/firewall/rules/{number}/move".to_string()));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_space() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "  Bearer   abc  "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Bearerabc", "Basic abc", "Bearer", "Bearer   ", "Bearer\tabc", "abc", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
