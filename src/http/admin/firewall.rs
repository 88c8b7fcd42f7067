//! Routes for the per-mailbox email firewall (`/api/v1/mailboxes/...`): show the rules in force
//! for a login or domain, replace them, add, move and delete a rule, set the default action,
//! and drop the API's rules to return to the policy file's baseline. Rule numbers count from 1.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{ErrorBody, Mode};
use super::{Admin, ApiError, Page, blocking};
use crate::firewall::{Action, AsnSpec, KeyedRuleSet, RuleSpec, StoredRuleSet};
use crate::warden::{MailboxFirewall, RuleMove, Warden};

/// A rule with its number.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    /// From 1, as refusal messages name it ("rule no. 2").
    pub number: usize,
    #[serde(flatten)]
    pub rule: RuleSpec,
}

/// The firewall that applies to a login or domain.
#[derive(Debug, Serialize, ToSchema)]
pub struct FirewallView {
    /// The login or `@domain` asked about.
    pub login: String,
    /// `own` (its own rules), `domain` (its domain's rules) or `none`.
    pub applies: String,
    /// The key of the rules in force (the login, or `@domain`); absent when none apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_of: Option<String>,
    /// `policy_file` or `api`; absent when none apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// `allow` or `block`; absent when none apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    pub protocols: Vec<String>,
    pub rules: Vec<RuleView>,
    /// For rules set through the API: the name of the token that last changed them, from
    /// the audit trail (absent in listings, and when the trail does not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    /// `enforce`, or `observe`: the rules refuse nothing and the block log records what they
    /// would refuse; absent when none apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

impl FirewallView {
    fn new(view: &MailboxFirewall) -> FirewallView {
        match &view.applied {
            Some(applied) => {
                let mut shown = FirewallView::of_set(&view.key, &applied.keyed);
                shown.applies = if applied.via_domain { "domain".into() } else { "own".into() };
                shown
            }
            None => FirewallView {
                login: view.key.clone(),
                applies: "none".into(),
                rules_of: None,
                origin: None,
                default: None,
                protocols: Vec::new(),
                rules: Vec::new(),
                changed_by: None,
                mode: None,
            },
        }
    }

    fn of_set(login: &str, keyed: &KeyedRuleSet) -> FirewallView {
        let stored = StoredRuleSet::from(&keyed.rule_set);
        FirewallView {
            login: login.to_string(),
            applies: "own".into(),
            rules_of: Some(keyed.key.clone()),
            origin: Some(keyed.origin.label().to_string()),
            default: Some(stored.default),
            protocols: stored.protocols,
            rules: stored.rules.into_iter().enumerate().map(|(i, rule)| RuleView { number: i + 1, rule }).collect(),
            changed_by: None,
            mode: Some(Mode::of(keyed.rule_set.observe)),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxList {
    pub mailboxes: Vec<FirewallView>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// A new rule: an action, exactly one criterion, and where to put it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// `allow` or `block`.
    pub action: String,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub country: Option<Vec<String>>,
    #[serde(default)]
    pub asn: Option<Vec<AsnSpec>>,
    #[serde(default)]
    pub non_residential: Option<bool>,
    /// Where the rule goes, from 1 (default: last).
    #[serde(default)]
    pub position: Option<usize>,
}

/// Move a rule one place (`direction`) or to a position (`to`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRule {
    /// `up` or `down`.
    #[serde(default)]
    pub direction: Option<String>,
    /// The new position, from 1.
    #[serde(default)]
    pub to: Option<usize>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultAction {
    /// `allow` or `block`.
    pub action: String,
}

fn invalid(field: &'static str, message: String) -> ApiError {
    ApiError::InvalidField { field, message }
}

/// The rules now in force after `changed_by`'s change.
fn answer(
    warden: &Warden,
    login: &str,
    result: Result<std::sync::Arc<KeyedRuleSet>, crate::warden::FirewallError>,
    changed_by: &str,
) -> Result<FirewallView, ApiError> {
    let keyed = result?;
    let mut view = FirewallView::of_set(login, &keyed);
    view.login = warden.mailbox_firewall(login).map(|m| m.key).unwrap_or_else(|_| login.to_string());
    view.changed_by = Some(changed_by.to_string());
    Ok(view)
}

#[utoipa::path(get, path = "/api/v1/mailboxes", tag = "firewall", params(Page),
    responses((status = 200, description = "Every mailbox and domain with firewall rules, by key.", body = MailboxList),
              (status = 400, description = "A bad `limit` or `offset`.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, for a mailbox of another domain.", body = ErrorBody)))]
pub async fn list_mailboxes(
    admin: Admin,
    warden: web::Data<Warden>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let visible = warden.rule_sets().into_iter().filter(|keyed| admin.0.sees_key(&keyed.key)).collect();
    let (sets, total, limit, offset) = page.slice(visible)?;
    let mailboxes = sets.iter().map(|keyed| FirewallView::of_set(&keyed.key, keyed)).collect();
    Ok(HttpResponse::Ok().json(MailboxList { mailboxes, total, limit, offset }))
}

#[utoipa::path(get, path = "/api/v1/mailboxes/{login}/firewall", tag = "firewall",
    params(("login" = String, Path, description = "A login (alice@example.com) or a domain (@example.com).")),
    responses((status = 200, description = "The rules in force for it: its own, its domain's, or none.", body = FirewallView),
              (status = 400, description = "Not a login or domain.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, for a mailbox of another domain.", body = ErrorBody)))]
pub async fn show(admin: Admin, warden: web::Data<Warden>, login: web::Path<String>) -> Result<HttpResponse, ApiError> {
    admin.mailbox(&login)?;
    let mut view = FirewallView::new(&warden.mailbox_firewall(&login)?);
    if let (Some("api"), Some(key)) = (view.origin.as_deref(), view.rules_of.clone()) {
        let handle = warden.get_ref().clone();
        view.changed_by = blocking(move || handle.rules_changed_by(&key)).await?;
    }
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(put, path = "/api/v1/mailboxes/{login}/firewall", tag = "firewall", request_body = StoredRuleSet,
    params(("login" = String, Path, description = "A login or a domain (@example.com).")),
    responses((status = 200, description = "The rules were replaced and are in force.", body = FirewallView),
              (status = 400, description = "A field is invalid; `field` names it. Nothing changed.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, for a mailbox of another domain.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn replace(
    admin: Admin,
    warden: web::Data<Warden>,
    login: web::Path<String>,
    body: web::Json<StoredRuleSet>,
) -> Result<HttpResponse, ApiError> {
    let key = admin.mailbox(&login)?;
    let set = body.parse().map_err(|e| invalid(e.field, e.to_string()))?;
    let handle = warden.get_ref().clone();
    let actor = admin.0.name.clone();
    let result = blocking(move || Ok::<_, ApiError>(handle.replace_rule_set(&key, set, &admin.0))).await?;
    Ok(HttpResponse::Ok().json(answer(&warden, &login, result, &actor)?))
}

#[utoipa::path(delete, path = "/api/v1/mailboxes/{login}/firewall", tag = "firewall",
    params(("login" = String, Path, description = "A login or a domain (@example.com).")),
    responses((status = 200, description = "The API's rules were removed; what applies now (the policy file's, the domain's, or none).", body = FirewallView),
              (status = 400, description = "Not a login or domain.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, for a mailbox of another domain.", body = ErrorBody),
              (status = 404, description = "It has no rules set through the API.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn reset(
    admin: Admin,
    warden: web::Data<Warden>,
    login: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = admin.mailbox(&login)?;
    let handle = warden.get_ref().clone();
    blocking(move || handle.reset_rule_set(&key, &admin.0)).await?;
    Ok(HttpResponse::Ok().json(FirewallView::new(&warden.mailbox_firewall(&login)?)))
}

#[utoipa::path(post, path = "/api/v1/mailboxes/{login}/firewall/rules", tag = "firewall", request_body = NewRule,
    params(("login" = String, Path, description = "A login or a domain (@example.com).")),
    responses((status = 201, description = "The rule was added; the rules now in force.", body = FirewallView),
              (status = 400, description = "A field is invalid; `field` names it. Nothing changed.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, for a mailbox of another domain.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn add_rule(
    admin: Admin,
    warden: web::Data<Warden>,
    login: web::Path<String>,
    body: web::Json<NewRule>,
) -> Result<HttpResponse, ApiError> {
    let NewRule { action, address, network, country, asn, non_residential, position } = body.into_inner();
    let spec = RuleSpec { action, address, network, country, asn, non_residential };
    let key = admin.mailbox(&login)?;
    let rule = spec.parse().map_err(|e| invalid(e.field, e.to_string()))?;
    let handle = warden.get_ref().clone();
    let actor = admin.0.name.clone();
    let result = blocking(move || Ok::<_, ApiError>(handle.add_rule(&key, rule, position, &admin.0))).await?;
    Ok(HttpResponse::Created().json(answer(&warden, &login, result, &actor)?))
}

#[utoipa::path(post, path = "/api/v1/mailboxes/{login}/firewall/rules/{number}/move", tag = "firewall", request_body = MoveRule,
    params(("login" = String, Path, description = "A login or a domain (@example.com)."),
           ("number" = usize, Path, description = "The rule's number, from 1.")),
    responses((status = 200, description = "The rule was moved; the rules now in force.", body = FirewallView),
              (status = 400, description = "A bad direction or position, or the rule cannot move that way.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, for a mailbox of another domain.", body = ErrorBody),
              (status = 404, description = "No such rule.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn move_rule(
    admin: Admin,
    warden: web::Data<Warden>,
    path: web::Path<(String, usize)>,
    body: web::Json<MoveRule>,
) -> Result<HttpResponse, ApiError> {
    let (login, number) = path.into_inner();
    let key = admin.mailbox(&login)?;
    let movement = match (body.direction.as_deref(), body.to) {
        (Some("up"), None) => RuleMove::Up,
        (Some("down"), None) => RuleMove::Down,
        (None, Some(to)) => RuleMove::To(to),
        (Some(other), None) => {
            return Err(invalid("direction", format!("direction: {other:?} is neither \"up\" nor \"down\"")));
        }
        _ => {
            return Err(invalid("direction", "give either direction (up or down) or to (a position)".into()));
        }
    };
    let handle = warden.get_ref().clone();
    let actor = admin.0.name.clone();
    let result = blocking(move || Ok::<_, ApiError>(handle.move_rule(&key, number, movement, &admin.0))).await?;
    Ok(HttpResponse::Ok().json(answer(&warden, &login, result, &actor)?))
}

#[utoipa::path(delete, path = "/api/v1/mailboxes/{login}/firewall/rules/{number}", tag = "firewall",
    params(("login" = String, Path, description = "A login or a domain (@example.com)."),
           ("number" = usize, Path, description = "The rule's number, from 1.")),
    responses((status = 200, description = "The rule was deleted; the rules now in force.", body = FirewallView),
              (status = 400, description = "Not a login or domain.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, for a mailbox of another domain.", body = ErrorBody),
              (status = 404, description = "No such rule.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn delete_rule(
    admin: Admin,
    warden: web::Data<Warden>,
    path: web::Path<(String, usize)>,
) -> Result<HttpResponse, ApiError> {
    let (login, number) = path.into_inner();
    let key = admin.mailbox(&login)?;
    let handle = warden.get_ref().clone();
    let actor = admin.0.name.clone();
    let result = blocking(move || Ok::<_, ApiError>(handle.delete_rule(&key, number, &admin.0))).await?;
    Ok(HttpResponse::Ok().json(answer(&warden, &login, result, &actor)?))
}

#[utoipa::path(put, path = "/api/v1/mailboxes/{login}/firewall/default", tag = "firewall", request_body = DefaultAction,
    params(("login" = String, Path, description = "A login or a domain (@example.com).")),
    responses((status = 200, description = "The default action was set; the rules now in force.", body = FirewallView),
              (status = 400, description = "Not `allow` or `block`.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "A `domain:` token, for a mailbox of another domain.", body = ErrorBody),
              (status = 503, description = "The state store failed; nothing changed.", body = ErrorBody)))]
pub async fn set_default(
    admin: Admin,
    warden: web::Data<Warden>,
    login: web::Path<String>,
    body: web::Json<DefaultAction>,
) -> Result<HttpResponse, ApiError> {
    let key = admin.mailbox(&login)?;
    let action = Action::parse(&body.action)
        .ok_or_else(|| invalid("action", format!("action: {:?} is neither \"allow\" nor \"block\"", body.action)))?;
    let handle = warden.get_ref().clone();
    let actor = admin.0.name.clone();
    let result = blocking(move || Ok::<_, ApiError>(handle.set_default(&key, action, &admin.0))).await?;
    Ok(HttpResponse::Ok().json(answer(&warden, &login, result, &actor)?))
}
