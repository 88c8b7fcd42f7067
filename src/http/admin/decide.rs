//! The dry run: what `allow` would answer right now for an address, and why. Support staff use
//! it when a customer calls; it changes nothing (no counters, no metrics, no events).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::views::{DecisionView, ErrorBody};
use super::{Admin, ApiError};
use crate::network::parse_ip;
use crate::warden::{LoginView, Warden};
use crate::wire::Protocol;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DecideQuery {
    /// The client address, as Dovecot would send it in `remote`.
    ip: String,
    /// The login, as Dovecot would send it.
    login: Option<String>,
    /// `imap`, `pop3`, `smtp`, ... (default `imap`).
    protocol: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/decide", tag = "decisions", params(DecideQuery),
    responses((status = 200, description = "The answer and its reason.", body = DecisionView),
              (status = 400, description = "`ip` is missing or not an address.", body = ErrorBody),
              (status = 401, description = "No or wrong bearer token.", body = ErrorBody)))]
pub async fn decide(
    _: Admin,
    warden: web::Data<Warden>,
    query: web::Query<DecideQuery>,
) -> Result<HttpResponse, ApiError> {
    let address =
        parse_ip(&query.ip).map_err(|e| ApiError::InvalidField { field: "ip", message: format!("ip: {e}") })?;
    let login = query.login.clone().unwrap_or_default();
    let protocol = query.protocol.clone().unwrap_or_else(|| "imap".into());
    let view = LoginView {
        address: Some(address),
        real_remote: None,
        login: &login,
        pwhash: None,
        protocol: Protocol::from_name(&protocol),
    };
    let explanation = warden.explain(&view, address);
    Ok(HttpResponse::Ok().json(DecisionView::new(&explanation, login, protocol, warden.now())))
}
