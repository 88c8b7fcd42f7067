//! `GET /api/v1/why`: everything known about an address, for the admin a user calls: the
//! decision, the ban and the wrong passwords that led to it, the wrong passwords still counted,
//! stale devices and accounts under attack, in plain words and as data. No password hashes.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::{BanView, DecisionView, ErrorBody};
use super::{Admin, ApiError};
use crate::clock::Timestamp;
use crate::failures::Guess;
use crate::network::parse_ip;
use crate::warden::Warden;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WhyQuery {
    /// The client address.
    ip: String,
    /// Only this login's wrong passwords (and the decision for it).
    login: Option<String>,
}

/// A distinct wrong password still counted from the address.
#[derive(Debug, Serialize, ToSchema)]
pub struct GuessView {
    pub login: String,
    pub protocol: String,
    /// The IMAP ID string of the mail app that sent it.
    pub device_id: String,
    /// Tries of this same password.
    pub failures: u32,
    pub first_seen: String,
    pub last_seen: String,
    /// A stale device: the same wrong password again and again.
    pub stale: bool,
    /// Whether it counts toward a ban of the source: false once forgiven, when its account
    /// logged in successfully from there afterwards (the owner's typo or old password).
    pub counted: bool,
    /// Until when this login and password is refused from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined_until: Option<String>,
}

impl GuessView {
    /// `guess` as of `now`; `stale_after`: the tries that make a stale device, when on.
    pub fn new(guess: &Guess, stale_after: Option<u32>, now: Timestamp) -> GuessView {
        GuessView {
            login: guess.login.to_string(),
            protocol: guess.protocol.label().to_string(),
            device_id: guess.device_id.to_string(),
            failures: guess.failures,
            first_seen: guess.first_seen.rfc3339(),
            last_seen: guess.last_seen.rfc3339(),
            stale: stale_after.is_some_and(|after| guess.failures >= after) || guess.quarantined_until().is_some(),
            counted: !guess.forgiven(),
            quarantined_until: guess.quarantined_until().filter(|end| *end > now).map(|end| end.rfc3339()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhyView {
    /// The explanation in plain words, one sentence each.
    pub lines: Vec<String>,
    pub decision: DecisionView,
    pub guesses: Vec<GuessView>,
    pub accounts_under_attack: Vec<String>,
    /// Logins refused from the address's source (IP+login refusals) while its other logins
    /// are not.
    pub login_refusals: Vec<BanView>,
}

#[utoipa::path(get, path = "/api/v1/why", tag = "decisions", params(WhyQuery),
    responses((status = 200, description = "What is known about the address, in plain words and as data.", body = WhyView),
              (status = 400, description = "`ip` is missing or not an address.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
pub async fn why(_: Admin, warden: web::Data<Warden>, query: web::Query<WhyQuery>) -> Result<HttpResponse, ApiError> {
    let address =
        parse_ip(&query.ip).map_err(|e| ApiError::InvalidField { field: "ip", message: format!("ip: {e}") })?;
    let login = query.login.as_deref().map(|l| crate::login::key(l.trim()).into_owned());
    let diagnosis = warden.why(address, login.as_deref());
    let now = warden.now();
    let stale_after = diagnosis.stale_after;
    let guess = |g: &Guess| GuessView::new(g, stale_after, now);
    let view = WhyView {
        lines: diagnosis.lines(),
        decision: DecisionView::new(&diagnosis.explanation, login.unwrap_or_default(), "imap".into(), now),
        guesses: diagnosis.guesses.iter().map(guess).collect(),
        accounts_under_attack: diagnosis.accounts_under_attack.clone(),
        login_refusals: diagnosis.login_refusals.iter().map(|r| BanView::new(r, now)).collect(),
    };
    Ok(HttpResponse::Ok().json(view))
}
