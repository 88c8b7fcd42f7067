//! `GET /api/v1/activity`: logins, refusals by reason and bans placed per minute over the last
//! hour and per hour over the last day, as the console's overview charts them.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::views::ErrorBody;
use super::{Admin, ApiError};
use crate::activity::{Activity, BANS, Kind, REFUSALS, Tally};
use crate::warden::Warden;

/// The counts of one minute or one hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct TallyView {
    /// Its first minute.
    pub start: String,
    /// Logins answered `allow`.
    pub logins: u64,
    /// Logins delayed (an account under attack, an address new to it).
    pub delayed: u64,
    /// Logins refused, by reason (the `reason` label of `mailwarden_decisions_total`).
    pub refusals: BTreeMap<String, u64>,
    /// Bans placed: `source`, `login` (IP+login refusals), `subnet`.
    pub bans: BTreeMap<String, u64>,
}

impl TallyView {
    pub fn new(tally: &Tally) -> TallyView {
        let named = |labels: &[&str], kind: fn(usize) -> Kind| -> BTreeMap<String, u64> {
            labels.iter().enumerate().map(|(i, label)| (label.to_string(), tally.count(kind(i)))).collect()
        };
        TallyView {
            start: tally.start.rfc3339(),
            logins: tally.logins(),
            delayed: tally.delayed(),
            refusals: named(REFUSALS, Kind::Refused),
            bans: named(&BANS, Kind::Ban),
        }
    }
}

/// What `GET /api/v1/activity` answers (memory only: it starts from zero at a restart).
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityView {
    pub now: String,
    /// 60 minutes, oldest first; the last is the current minute.
    pub last_hour: Vec<TallyView>,
    /// 24 hours of 60 minutes, oldest first; the last ends with the current minute.
    pub last_day: Vec<TallyView>,
    /// The sums of the last hour and of the last day.
    pub hour_total: TallyView,
    pub day_total: TallyView,
}

#[utoipa::path(get, path = "/api/v1/activity", tag = "decisions",
    responses((status = 200, description = "Logins, refusals and bans per minute over the last hour and per hour over the last day.", body = ActivityView),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody),
              (status = 403, description = "The token's scope does not reach this route.", body = ErrorBody)))]
pub async fn recent_activity(_: Admin, warden: web::Data<Warden>) -> Result<HttpResponse, ApiError> {
    let recent = warden.recent_activity();
    Ok(HttpResponse::Ok().json(ActivityView {
        now: recent.now.rfc3339(),
        last_hour: recent.last_hour.iter().map(TallyView::new).collect(),
        last_day: recent.last_day.iter().map(TallyView::new).collect(),
        hour_total: TallyView::new(&Activity::total(&recent.last_hour)),
        day_total: TallyView::new(&Activity::total(&recent.last_day)),
    }))
}
