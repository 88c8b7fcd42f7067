//! The public listener: the self-service unblock page (`server.public_listen`), on its own
//! port, apart from Dovecot's and the admin's. It shows visitors whether their address is
//! blocked and why, and lets them unblock it after a proof-of-work check. Who the visitor is
//! is `proxy`'s to say: the TCP peer, or, only behind a trusted proxy, the address in the one
//! header the admin names.

use std::collections::BTreeMap;
use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::selfservice::SelfServiceSettings;
use crate::selfservice::mask_login;
use crate::warden::{SelfUnblockError, VisitorStatus, Warden, device_name};

const SCRIPT: &str = include_str!("unblock.js");
const STYLE: &str = include_str!("style.css");
const SECURITY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(web::JsonConfig::default().limit(4096).error_handler(|e, _| {
            let body = Answer { unblocked: false, message: format!("The request was not understood: {e}") };
            actix_web::error::InternalError::from_response(e, HttpResponse::BadRequest().json(body)).into()
        }))
        .route("/", web::get().to(page))
        .route("/challenge", web::get().to(challenge))
        .route("/unblock", web::post().to(unblock))
        .route("/unblock.js", web::get().to(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/style.css", web::get().to(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .default_service(web::to(|| async {
            HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("Not found")
        }));
}

fn secure(response: HttpResponse) -> HttpResponse {
    super::page_headers(response, SECURITY)
}

/// The visitor's address, or the answer to give instead: an address that cannot be made out,
/// or too many requests.
fn admitted(request: &HttpRequest, warden: &Warden) -> Result<IpAddr, HttpResponse> {
    let policy = warden.policy();
    let address = super::proxy::visitor_address(request, &policy.server.trusted_proxies, &policy.server.proxy_header)
        .map_err(|e| {
        tracing::debug!(error = %e, "self-service request without a visitor address");
        secure(HttpResponse::BadRequest().content_type("text/plain; charset=utf-8").body(format!("Bad request: {e}.")))
    })?;
    if warden.self_service_request_allowed(address) {
        Ok(address)
    } else {
        let mut response = HttpResponse::TooManyRequests()
            .content_type("text/plain; charset=utf-8")
            .body("Too many requests from your address; wait a minute.");
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        Err(secure(response))
    }
}

/// Whom the page sends people to: `support_contact`, or the fallback text.
fn support(settings: &SelfServiceSettings) -> String {
    if settings.support_contact.is_empty() {
        settings.text.get("support_fallback").cloned().unwrap_or_default()
    } else {
        settings.support_contact.clone()
    }
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    secure(HttpResponse::Ok().content_type(content_type).body(body))
}

/// HTML-escapes text for element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's texts with their placeholders filled in (plain text; escape before HTML).
struct Texts<'a> {
    texts: &'a BTreeMap<String, String>,
    values: Vec<(&'static str, String)>,
}

impl Texts<'_> {
    /// The text as configured, placeholders left for the caller.
    fn raw(&self, key: &str) -> String {
        self.texts.get(key).cloned().unwrap_or_default()
    }

    fn get(&self, key: &str) -> String {
        let mut text = self.texts.get(key).cloned().unwrap_or_default();
        for (name, value) in &self.values {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }
}

async fn page(request: HttpRequest, warden: web::Data<Warden>) -> HttpResponse {
    let address = match admitted(&request, &warden) {
        Ok(address) => address,
        Err(response) => return response,
    };
    let handle = warden.get_ref().clone();
    let Ok(status) = web::block(move || handle.visitor_status(address)).await else {
        return secure(HttpResponse::ServiceUnavailable().finish());
    };
    let policy = warden.policy();
    let settings = &policy.self_service;
    let t = Texts {
        texts: &settings.text,
        values: vec![
            ("address", address.to_string()),
            ("provider", settings.provider_name.clone()),
            ("support", support(settings)),
            ("count", status.unblocks_today.unwrap_or(0).to_string()),
            (
                "until",
                status.subnet_ban.as_ref().or(status.ban.as_ref()).map(|b| b.expires_at.readable()).unwrap_or_default(),
            ),
            ("network", status.subnet_ban.as_ref().map(|b| b.source.to_string()).unwrap_or_default()),
        ],
    };
    secure(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(render(&t, &status)))
}

fn render(t: &Texts<'_>, status: &VisitorStatus) -> String {
    let e = |key: &str| escape(&t.get(key));
    let mut body = String::new();
    body.push_str(&format!("<h1>{}</h1>\n<p>{}</p>\n", e("title"), e("your_address")));
    match (&status.ban, status.admin_block) {
        (_, true) => body.push_str(&format!("<p id=\"state\" class=\"blocked\">{}</p>\n", e("admin_block"))),
        // Lifting a subnet ban would let the whole network back in: support's decision.
        (Some(_), false) if status.subnet_ban.is_some() => {
            body.push_str(&format!("<p id=\"state\" class=\"blocked\">{}</p>\n", e("subnet_banned")))
        }
        (None, false) if !status.login_refusals.is_empty() => {
            // One account (or a few) refused from here, the others not: say so, per account.
            body.push_str("<div id=\"state\" class=\"blocked\">\n");
            for refusal in &status.login_refusals {
                let login = mask_login(refusal.refused_login().unwrap_or_default());
                let line = t
                    .raw("login_refused")
                    .replace("{login}", &login)
                    .replace("{until}", &refusal.expires_at.readable());
                body.push_str(&format!("<p>{}</p>\n", escape(&line)));
            }
            body.push_str("</div>\n");
            body.push_str(&unblock_controls(t, status));
        }
        (None, false) => body.push_str(&format!("<p id=\"state\" class=\"ok\">{}</p>\n", e("not_banned"))),
        (Some(ban), false) => {
            body.push_str(&format!("<p id=\"state\" class=\"blocked\">{}</p>\n", e("banned")));
            body.push_str(&format!("<h2>{}</h2>\n<ul>\n", e("cause_heading")));
            // One line per (login, protocol, mail app), however many passwords it tried.
            let mut groups: Vec<(String, String, String, u32, bool)> = Vec::new();
            for g in &ban.cause.guesses {
                let key =
                    (mask_login(&g.login), g.protocol.to_uppercase(), device_name(&g.device_id).unwrap_or_default());
                match groups.iter_mut().find(|(l, p, d, _, _)| (l, p, d) == (&key.0, &key.1, &key.2)) {
                    Some(group) => {
                        group.3 += g.failures;
                        group.4 |= g.failures > 1;
                    }
                    None => groups.push((key.0, key.1, key.2, g.failures, g.failures > 1)),
                }
            }
            if groups.is_empty() {
                groups.push((
                    mask_login(&ban.cause.login),
                    ban.cause.protocol.to_uppercase(),
                    String::new(),
                    ban.failures,
                    false,
                ));
            }
            let causes: Vec<String> = groups
                .into_iter()
                .map(|(login, protocol, device, count, stale)| {
                    let key = if count == 1 { "cause_guess_one" } else { "cause_guess" };
                    let device = if device.is_empty() { String::new() } else { format!(" ({device})") };
                    let line = t
                        .raw(key)
                        .replace("{count}", &count.to_string())
                        .replace("{login}", &login)
                        .replace("{protocol}", &protocol)
                        .replace("{device}", &device);
                    if stale { format!("{line}: {}", t.get("cause_stale")) } else { line }
                })
                .collect();
            for cause in causes {
                body.push_str(&format!("  <li>{}</li>\n", escape(&cause)));
            }
            body.push_str("</ul>\n");
            body.push_str(&unblock_controls(t, status));
        }
    }
    body.push_str("<p id=\"status\" role=\"status\" aria-live=\"polite\"></p>\n");
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n<script src=\"/unblock.js\" defer></script>\n</head>\n<body>\n<main>\n{body}<footer>{footer}</footer>\n</main>\n</body>\n</html>\n",
        title = e("title"),
        footer = e("footer"),
    )
}

/// How to get back in and the unblock button, or why unblocking is not offered now.
fn unblock_controls(t: &Texts<'_>, status: &VisitorStatus) -> String {
    let e = |key: &str| escape(&t.get(key));
    let steps = || {
        format!(
            "<h2>{}</h2>\n<ol>\n  <li>{}</li>\n  <li>{}</li>\n  <li>{}</li>\n</ol>\n",
            e("steps_heading"),
            e("step_find"),
            e("step_update"),
            e("step_unblock")
        )
    };
    match status.unblocks_today {
        Some(count) if count >= status.max_unblocks_per_day => format!("<p class=\"blocked\">{}</p>\n", e("limit")),
        // The store cannot say how many were used today: no unblocking (fail closed).
        None => format!("{}<p id=\"unavailable\" class=\"blocked\">{}</p>\n", steps(), e("unavailable")),
        Some(_) => format!(
            "{}<form id=\"unblock\" method=\"post\" action=\"/unblock\" data-working=\"{}\" data-failed=\"{}\">\n  <button type=\"submit\">{}</button>\n</form>\n<noscript><p>This page needs JavaScript to check that you are a person.</p></noscript>\n",
            steps(),
            e("working"),
            e("failed"),
            e("unblock_button")
        ),
    }
}

async fn challenge(request: HttpRequest, warden: web::Data<Warden>) -> HttpResponse {
    let address = match admitted(&request, &warden) {
        Ok(address) => address,
        Err(response) => return response,
    };
    let handle = warden.get_ref().clone();
    match web::block(move || handle.self_service_challenge(address)).await {
        Ok(Some(challenge)) => secure(HttpResponse::Ok().json(challenge)),
        _ => {
            let message = answer_text(&warden.policy().self_service, "unavailable");
            secure(HttpResponse::ServiceUnavailable().json(Answer { unblocked: false, message }))
        }
    }
}

/// The text `key` for an answer to the page's script, with `{support}` and `{provider}` filled in.
fn answer_text(settings: &SelfServiceSettings, key: &str) -> String {
    settings
        .text
        .get(key)
        .cloned()
        .unwrap_or_default()
        .replace("{support}", &support(settings))
        .replace("{provider}", &settings.provider_name)
}

#[derive(Serialize)]
struct Answer {
    unblocked: bool,
    message: String,
}

async fn unblock(
    request: HttpRequest,
    warden: web::Data<Warden>,
    payload: web::Json<altcha_lib_rs::Payload>,
) -> HttpResponse {
    let address = match admitted(&request, &warden) {
        Ok(address) => address,
        Err(response) => return response,
    };
    let policy = warden.policy();
    let text = |key: &str| answer_text(&policy.self_service, key);
    let handle = warden.get_ref().clone();
    let payload = payload.into_inner();
    let result = match super::run_blocking(move || handle.self_unblock(address, &payload)).await {
        Ok(result) => result,
        Err(super::BlockingFailure::Panicked) => {
            let answer = Answer { unblocked: false, message: text("unavailable") };
            return secure(HttpResponse::InternalServerError().json(answer));
        }
        Err(super::BlockingFailure::ShuttingDown) => {
            let answer = Answer { unblocked: false, message: text("unavailable") };
            return secure(HttpResponse::ServiceUnavailable().json(answer));
        }
    };
    let (status, answer) = match result {
        Ok(_) => (StatusCode::OK, Answer { unblocked: true, message: text("unblocked") }),
        Err(SelfUnblockError::LimitReached { count }) => (
            StatusCode::TOO_MANY_REQUESTS,
            Answer { unblocked: false, message: text("limit").replace("{count}", &count.to_string()) },
        ),
        Err(SelfUnblockError::AdminBlock) => {
            (StatusCode::FORBIDDEN, Answer { unblocked: false, message: text("admin_block") })
        }
        Err(SelfUnblockError::SubnetBan { network, until }) => {
            let message =
                text("subnet_banned").replace("{network}", &network.to_string()).replace("{until}", &until.readable());
            (StatusCode::FORBIDDEN, Answer { unblocked: false, message })
        }
        // The store could not check or record it: refused, never let through unlimited.
        Err(SelfUnblockError::Store(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Answer { unblocked: false, message: text("unavailable") })
        }
        Err(e @ (SelfUnblockError::Challenge(_) | SelfUnblockError::NotBanned)) => (
            StatusCode::BAD_REQUEST,
            Answer { unblocked: false, message: text("failed").replace("{reason}", &e.to_string()) },
        ),
    };
    secure(HttpResponse::build(status).json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_in_html() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
