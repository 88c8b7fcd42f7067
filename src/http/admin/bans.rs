//! Routes for bans: list, show, lift.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::views::{BanList, BanView, ErrorBody, Lengthened, Mode, Unbanned};
use super::{Admin, ApiError, Page, blocking};
use crate::network::{Source, parse_network};
use crate::warden::{LengthenError, Lengthening, Warden};

fn source_of(warden: &Warden, addr: &str) -> Result<Source, ApiError> {
    let network = parse_network(addr).map_err(|e| ApiError::InvalidAddress(e.to_string()))?;
    Ok(warden.source_for(network))
}

/// Which ban of a source: the ban of the whole source, or one login's IP+login refusal.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BanScope {
    /// The login refused from the address (an IP+login refusal), in any spelling; without it,
    /// the ban of the whole source.
    login: Option<String>,
    /// On lifting: also put the banned network on the trusted list ("lift and trust"), so it
    /// is never banned again; with `comment`. Default false.
    trust: Option<bool>,
    /// The trusted entry's comment (with `trust`), at most 200 characters on one line.
    #[param(max_length = 200)]
    comment: Option<String>,
}

/// The refused login a query names, if it names one (blank is none).
fn named_login(login: &Option<String>) -> Option<&str> {
    login.as_deref().map(str::trim).filter(|l| !l.is_empty())
}

impl BanScope {
    fn login(&self) -> Option<&str> {
        named_login(&self.login)
    }
}

fn not_found(source: Source, scope: &BanScope) -> ApiError {
    match scope.login() {
        Some(login) => ApiError::NotBanned(format!("{login} from {source}")),
        None => ApiError::NotBanned(source.to_string()),
    }
}

#[utoipa::path(get, path = "/api/v1/bans", tag = "bans", params(Page),
    responses((status = 200, description = "Active bans and IP+login refusals (with their `login`), soonest to end first.", body = BanList),
              (status = 400, description = "A bad `limit` or `offset`.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
pub async fn list_bans(_: Admin, warden: web::Data<Warden>, page: web::Query<Page>) -> Result<HttpResponse, ApiError> {
    let now = warden.now();
    let (bans, total, limit, offset) = page.slice(warden.bans())?;
    let bans = bans.iter().map(|b| BanView::new(b, now)).collect();
    let mode = Mode::of(warden.policy().server.observe);
    Ok(HttpResponse::Ok().json(BanList { bans, total, limit, offset, mode }))
}

#[utoipa::path(get, path = "/api/v1/bans/{addr}", tag = "bans",
    params(("addr" = String, Path, description = "An address, or a banned network such as 2001:db8:1:2::/64."), BanScope),
    responses((status = 200, description = "The ban covering the address (with `login`: that login's IP+login refusal).", body = BanView),
              (status = 400, description = "Not an address.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 404, description = "Not banned.", body = ErrorBody)))]
pub async fn show_ban(
    _: Admin,
    warden: web::Data<Warden>,
    addr: web::Path<String>,
    scope: web::Query<BanScope>,
) -> Result<HttpResponse, ApiError> {
    let source = source_of(&warden, &addr)?;
    let ban = match scope.login() {
        Some(login) => warden.login_refusal(source, login),
        None => warden.ban(source),
    };
    let ban = ban.ok_or_else(|| not_found(source, &scope))?;
    Ok(HttpResponse::Ok().json(BanView::new(&ban, warden.now())))
}

#[utoipa::path(delete, path = "/api/v1/bans/{addr}", tag = "bans",
    params(("addr" = String, Path, description = "An address, or a banned network such as 2001:db8:1:2::/64."), BanScope),
    responses((status = 200, description = "The ban was lifted and the source's failure history cleared (with `login`: that login's IP+login refusal lifted and its wrong passwords from there forgiven; with `trust`: the network trusted too).", body = Unbanned),
              (status = 400, description = "Not an address, or a bad `comment`.", body = ErrorBody),
              (status = 409, description = "With `trust`: the network is on a list in the policy file, or inside a blocked network; nothing changed.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 404, description = "Not banned.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn delete_ban(
    admin: Admin,
    warden: web::Data<Warden>,
    addr: web::Path<String>,
    scope: web::Query<BanScope>,
) -> Result<HttpResponse, ApiError> {
    let source = source_of(&warden, &addr)?;
    let handle = warden.get_ref().clone();
    let login = scope.login().map(str::to_string);
    let trust = match (scope.trust.unwrap_or(false), &scope.comment) {
        (true, comment) => Some(super::lists::checked_comment(comment.as_deref().unwrap_or_default())?),
        (false, Some(_)) => {
            return Err(ApiError::InvalidField { field: "comment", message: "comment: only with trust=true".into() });
        }
        (false, None) => None,
    };
    let actor = admin.0;
    let lifted = blocking(move || match trust {
        Some(comment) => handle.lift_and_trust(source, login.as_deref(), &comment, &actor).map_err(ApiError::from),
        None => match login {
            Some(login) => handle.unban_login(source, &login, &actor),
            None => handle.unban(source, &actor),
        }
        .map_err(ApiError::from),
    })
    .await?;
    let ban = lifted.ok_or_else(|| not_found(source, &scope))?;
    Ok(HttpResponse::Ok().json(Unbanned { unbanned: BanView::new(&ban, warden.now()) }))
}

/// Which ban to lengthen: the source's, or with `login` that login's IP+login refusal.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RefusalOf {
    /// The login refused from the address (an IP+login refusal), in any spelling.
    login: Option<String>,
}

/// How much longer the ban lasts: exactly one of `by` and `until`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LengthenBody {
    /// Added to the ban's end: a length such as `2h` or `7days`.
    #[schema(max_length = 40)]
    by: Option<String>,
    /// The ban's new end, an RFC 3339 time after its present end.
    #[schema(max_length = 40)]
    until: Option<String>,
}

impl From<LengthenError> for ApiError {
    fn from(e: LengthenError) -> ApiError {
        match e {
            LengthenError::NotBanned(what) => ApiError::NotBanned(what),
            LengthenError::Invalid { field, message } => ApiError::InvalidField { field, message },
            LengthenError::Store(e) => ApiError::Store(e),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/bans/{addr}/lengthen", tag = "bans",
    params(("addr" = String, Path, description = "An address, or a banned network such as 2001:db8:1:2::/64."), RefusalOf),
    request_body = LengthenBody,
    responses((status = 200, description = "The ban with its new end, stored, enforced by the host firewall and announced to the other nodes.", body = Lengthened),
              (status = 400, description = "Not an address; `by` not a length, `until` not a time; both or neither; a new end not after the present one (lift the ban instead) or more than 30 days from now. The error names the field.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 404, description = "Not banned.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn lengthen_ban(
    admin: Admin,
    warden: web::Data<Warden>,
    addr: web::Path<String>,
    scope: web::Query<RefusalOf>,
    body: web::Json<LengthenBody>,
) -> Result<HttpResponse, ApiError> {
    let source = source_of(&warden, &addr)?;
    let lengthening = Lengthening::from_fields(body.by.as_deref(), body.until.as_deref())?;
    let login = named_login(&scope.login).map(str::to_string);
    let handle = warden.get_ref().clone();
    let actor = admin.0;
    let ban =
        blocking(move || handle.lengthen_ban(source, login.as_deref(), lengthening, &actor).map_err(ApiError::from))
            .await?;
    Ok(HttpResponse::Ok().json(Lengthened { lengthened: BanView::new(&ban, warden.now()) }))
}

#[utoipa::path(get, path = "/api/v1/bans.txt", tag = "bans",
    responses((status = 200, description = "What the host firewall drops, for other firewalls to fetch: one address or network (CIDR) per line, the active bans of whole sources (never an IP+login refusal) and the blocked networks in force, without those inside a wider one or a trusted network; sorted, IPv4 first.", body = String, content_type = "text/plain"),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
pub async fn ban_list_text(_: Admin, warden: web::Data<Warden>) -> HttpResponse {
    let sets = crate::nftables::sets::Sets::wanted(&warden.firewall_drops());
    let mut body = String::new();
    for network in sets.banned_networks() {
        body.push_str(&Source::from_network(network).to_string());
        body.push('\n');
    }
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(body)
}
