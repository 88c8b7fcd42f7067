//! The public listener: the self-service unblock page (`server.public_listen`), on its own
//! port, apart from Dovecot's and the admin's. It shows visitors whether their address is
//! blocked and why, and lets them unblock it after a proof-of-work check. The visitor's address
//! is the TCP peer, or, only when the peer is in `server.trusted_proxies`, the address the
//! proxy names in `Forwarded` or `X-Forwarded-For`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::clock::Timestamp;
use crate::network::parse_ip;
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

fn secure(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SECURITY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The visitor's address, or the answer to give instead: no address, or too many requests.
fn admitted(request: &HttpRequest, warden: &Warden) -> Result<IpAddr, HttpResponse> {
    let policy = warden.policy();
    let address =
        visitor_address(request, &policy.server.trusted_proxies).ok_or_else(|| HttpResponse::BadRequest().finish())?;
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

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    secure(HttpResponse::Ok().content_type(content_type).body(body))
}

/// The visitor's address: the TCP peer, unless the peer is a trusted proxy, in which case the
/// nearest address in `Forwarded` / `X-Forwarded-For` that is not itself a trusted proxy.
pub fn visitor_address(request: &HttpRequest, trusted_proxies: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = parse_ip(&request.peer_addr()?.ip().to_string()).ok()?;
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let header_text =
        |name| request.headers().get_all(name).filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let forwarded: Vec<IpAddr> = header_text(header::FORWARDED)
        .split(',')
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("for=").or_else(|| pair.trim().strip_prefix("For=")))
        .filter_map(|value| {
            let value = value.trim_matches('"');
            let host = match value.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or(rest),
                None => value.rsplit_once(':').filter(|(h, _)| !h.contains(':')).map_or(value, |(h, _)| h),
            };
            parse_ip(host).ok()
        })
        .collect();
    let chain = if forwarded.is_empty() {
        header_text(header::HeaderName::from_static("x-forwarded-for"))
            .split(',')
            .filter_map(|a| parse_ip(a.trim()).ok())
            .collect()
    } else {
        forwarded
    };
    Some(chain.into_iter().rev().find(|ip| !trusted(ip)).unwrap_or(peer))
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

fn readable(t: Timestamp) -> String {
    t.rfc3339().replace('T', " ").replace('Z', " UTC")
}

async fn page(request: HttpRequest, warden: web::Data<Warden>) -> HttpResponse {
    let address = match admitted(&request, &warden) {
        Ok(address) => address,
        Err(response) => return response,
    };
    let policy = warden.policy();
    let status = warden.visitor_status(address);
    let settings = &policy.self_service;
    let support = if settings.support_contact.is_empty() {
        settings.text.get("support_fallback").cloned().unwrap_or_default()
    } else {
        settings.support_contact.clone()
    };
    let t = Texts {
        texts: &settings.text,
        values: vec![
            ("address", address.to_string()),
            ("provider", settings.provider_name.clone()),
            ("support", support),
            ("count", status.unblocks_today.to_string()),
            ("until", status.ban.as_ref().map(|b| readable(b.expires_at)).unwrap_or_default()),
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
            if status.unblocks_today >= status.max_unblocks_per_day {
                body.push_str(&format!("<p class=\"blocked\">{}</p>\n", e("limit")));
            } else {
                body.push_str(&format!(
                    "<h2>{}</h2>\n<ol>\n  <li>{}</li>\n  <li>{}</li>\n  <li>{}</li>\n</ol>\n",
                    e("steps_heading"),
                    e("step_find"),
                    e("step_update"),
                    e("step_unblock")
                ));
                body.push_str(&format!(
                    "<form id=\"unblock\" method=\"post\" action=\"/unblock\" data-working=\"{}\" data-failed=\"{}\">\n  <button type=\"submit\">{}</button>\n</form>\n<noscript><p>This page needs JavaScript to check that you are a person.</p></noscript>\n",
                    e("working"),
                    e("failed"),
                    e("unblock_button")
                ));
            }
        }
    }
    body.push_str("<p id=\"status\" role=\"status\" aria-live=\"polite\"></p>\n");
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n<script src=\"/unblock.js\" defer></script>\n</head>\n<body>\n<main>\n{body}<footer>{footer}</footer>\n</main>\n</body>\n</html>\n",
        title = e("title"),
        footer = e("footer"),
    )
}

async fn challenge(request: HttpRequest, warden: web::Data<Warden>) -> HttpResponse {
    let address = match admitted(&request, &warden) {
        Ok(address) => address,
        Err(response) => return response,
    };
    match warden.self_service_challenge(address) {
        Some(challenge) => secure(HttpResponse::Ok().json(challenge)),
        None => secure(HttpResponse::ServiceUnavailable().finish()),
    }
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
    let settings = &policy.self_service;
    let support = if settings.support_contact.is_empty() {
        settings.text.get("support_fallback").cloned().unwrap_or_default()
    } else {
        settings.support_contact.clone()
    };
    let text = |key: &str| {
        settings
            .text
            .get(key)
            .cloned()
            .unwrap_or_default()
            .replace("{support}", &support)
            .replace("{provider}", &settings.provider_name)
    };
    let handle = warden.get_ref().clone();
    let payload = payload.into_inner();
    let result = match super::run_blocking(move || handle.self_unblock(address, &payload)).await {
        Ok(result) => result,
        Err(super::BlockingFailure::Panicked) => return secure(HttpResponse::InternalServerError().finish()),
        Err(super::BlockingFailure::ShuttingDown) => return secure(HttpResponse::ServiceUnavailable().finish()),
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
        Err(e @ (SelfUnblockError::Challenge(_) | SelfUnblockError::NotBanned | SelfUnblockError::Store(_))) => {
            let status = if matches!(e, SelfUnblockError::Store(_)) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, Answer { unblocked: false, message: text("failed").replace("{reason}", &e.to_string()) })
        }
    };
    secure(HttpResponse::build(status).json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn net(text: &str) -> ipnet::IpNet {
        crate::network::parse_network(text).unwrap()
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let peer = "10.0.0.2:40000".parse().unwrap();
        let request = TestRequest::default()
            .peer_addr(peer)
            .insert_header(("X-Forwarded-For", "203.0.113.7, 10.0.0.9"))
            .to_http_request();
        assert_eq!(
            visitor_address(&request, &[]),
            Some("10.0.0.2".parse().unwrap()),
            "untrusted peer: headers ignored"
        );
        assert_eq!(
            visitor_address(&request, &[net("10.0.0.0/8")]),
            Some("203.0.113.7".parse().unwrap()),
            "skips trusted hops"
        );
        let forwarded = TestRequest::default()
            .peer_addr(peer)
            .insert_header(("Forwarded", "for=198.51.100.9;proto=https, for=\"[2001:db8::5]:4711\""))
            .to_http_request();
        assert_eq!(visitor_address(&forwarded, &[net("10.0.0.0/8")]), Some("2001:db8::5".parse().unwrap()));
        let spoofed =
            TestRequest::default().peer_addr(peer).insert_header(("X-Forwarded-For", "not-an-ip")).to_http_request();
        assert_eq!(visitor_address(&spoofed, &[net("10.0.0.0/8")]), Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn text_is_escaped_in_html() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
