//! The listener Dovecot's `auth_policy_server_url` points at. Any path is accepted (the
//! command is in the query); the API key is checked before the body is read; `allow` always
//! answers 200 with Dovecot's JSON; bad requests get a JSON 4xx and change nothing.
//!
//! It is served by actix-http's `HttpService` directly, without actix-web's `App` (router,
//! extractors, middleware): one route needs none of them, and they were about a tenth of the
//! framework's cost of a request (docs/BENCHMARKS.md, issue 21). Its handler still answers
//! with actix-web's `HttpResponse`, as every other listener does.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix_http::{Payload, Request, Response};
use actix_web::body::BoxBody;
use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use futures_util::FutureExt;

use super::{handler_panicked, json_error, read_limited};
use crate::warden::Warden;
use crate::wire::{self, Command, WireError};

/// Answers one policy request. Never fails: every problem is a JSON answer, and a panic in
/// the handler (a bug) is logged and answered 500 in the admin API's error shape.
pub async fn serve(mut request: Request, warden: Warden) -> Result<Response<BoxBody>, Infallible> {
    let payload = request.take_payload();
    let answered = AssertUnwindSafe(handle(&request, payload, &warden)).catch_unwind().await;
    Ok(match answered {
        Ok(response) => response.into(),
        Err(_) => handler_panicked(request.method(), request.path()).error_response().into(),
    })
}

async fn handle(request: &Request, payload: Payload, warden: &Warden) -> HttpResponse {
    let started = Instant::now();
    let command = wire::command_from_query(request.uri().query().unwrap_or(""));
    let label = command.as_ref().map_or("unknown", |c| c.label());
    let response = answer(request.method(), request.headers(), payload, warden, command).await;
    let metrics = warden.metrics();
    metrics.requests.of(&[label, response.status().as_str()]).inc();
    metrics.request_duration.of(&[label]).observe(started.elapsed().as_secs_f64());
    response
}

/// Reads the body within `timeout`, arming the timer only when the body is not there by the
/// second poll. actix-http calls the handler before it hands over the body that came in the
/// same read as the head, so the first poll of every request waits; the second, once that
/// read is handed over, finds it whole. Armed at once, tokio's timer cost a clock read and a
/// timer wheel's insertion and removal on every request (docs/BENCHMARKS.md, issue 21). A
/// body still missing at the second poll gets the whole timeout from then.
async fn read_within<T>(timeout: Duration, read: impl Future<Output = T>) -> Result<T, tokio::time::error::Elapsed> {
    let mut read = std::pin::pin!(read);
    let mut waited = false;
    let early = std::future::poll_fn(|context| match read.as_mut().poll(context) {
        Poll::Ready(done) => Poll::Ready(Some(done)),
        Poll::Pending if !waited => {
            waited = true;
            // The second poll must come even if the body never does.
            context.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    match early {
        Some(done) => Ok(done),
        None => tokio::time::timeout(timeout, read).await,
    }
}

async fn answer(
    method: &Method,
    headers: &HeaderMap,
    payload: Payload,
    warden: &Warden,
    command: Result<Command, WireError>,
) -> HttpResponse {
    if method != Method::POST {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Dovecot's policy requests are POST");
    }
    let policy = warden.policy();
    let presented = headers.get(policy.auth.api_key_header.as_str()).map(|v| v.as_bytes().trim_ascii());
    let authorised = match (&policy.auth.api_key, presented) {
        (Some(key), Some(presented)) => key.matches(presented),
        _ => false,
    };
    if !authorised {
        let message = format!("missing or wrong {} header", policy.auth.api_key_header);
        return json_error(StatusCode::UNAUTHORIZED, "unauthorized", &message);
    }
    let command = match command {
        Ok(command) => command,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    let limit = policy.server.max_body_bytes;
    let body = match read_within(policy.server.client_timeout, read_limited(payload, limit)).await {
        Err(_) => {
            let message = format!(
                "the request body did not arrive within server.client_timeout ({})",
                humantime::format_duration(policy.server.client_timeout)
            );
            return json_error(StatusCode::REQUEST_TIMEOUT, "body_timeout", &message);
        }
        Ok(read) => read,
    };
    let body = match body {
        Ok(Some(body)) => body,
        Ok(None) => {
            let message = format!("request body larger than server.max_body_bytes ({limit} bytes)");
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message);
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "unreadable_body", &e.to_string()),
    };
    let (attempt, outcome) = match wire::parse_attempt(&body, command) {
        Ok(parsed) => parsed,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    let reply = match (command, outcome) {
        (Command::Allow, _) => warden.allow(&attempt),
        (Command::Report, Some(outcome)) => {
            let effects = warden.report(&attempt, outcome);
            if effects.ban.is_some() {
                let warden = warden.clone();
                let bans: Vec<_> = effects.ban.into_iter().chain(effects.subnet_ban).collect();
                // The ban (and a subnet ban it completed) is already in force in memory; the
                // answer waits for it to be on disk so an acknowledged ban survives a crash.
                // Failures are logged and counted.
                let _ = super::run_blocking(move || bans.iter().try_for_each(|ban| warden.persist_ban(ban))).await;
            }
            if let Some(login) = effects.attacked_login {
                let warden = warden.clone();
                // Loaded before answering, so the account's known sources are recognised from
                // the next login on. Failures are logged by the store layer's caller.
                if let Ok(Err(e)) = super::run_blocking(move || warden.load_known_sources(&login)).await {
                    tracing::error!(error = %e, "could not load an attacked account's known sources");
                }
            }
            wire::report_reply()
        }
        // parse_attempt always yields an outcome for reports.
        (Command::Report, None) => wire::report_reply(),
    };
    HttpResponse::Ok().content_type("application/json").body(reply.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending at its first `polls` polls, then done.
    fn ready_after(polls: usize) -> impl Future<Output = &'static str> {
        let mut left = polls;
        std::future::poll_fn(move |context| {
            if left == 0 {
                return Poll::Ready("body");
            }
            left -= 1;
            context.waker().wake_by_ref();
            Poll::Pending
        })
    }

    #[actix_web::test]
    async fn a_body_is_read_whether_it_is_there_at_once_at_the_second_poll_or_later_within_the_timeout() {
        let timeout = Duration::from_secs(5);
        assert_eq!(read_within(timeout, ready_after(0)).await, Ok("body"));
        assert_eq!(read_within(timeout, ready_after(1)).await, Ok("body"));
        assert_eq!(read_within(timeout, ready_after(50)).await, Ok("body"));
        let late = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            "body"
        };
        assert_eq!(read_within(timeout, late).await, Ok("body"));
    }

    #[actix_web::test]
    async fn a_body_that_never_comes_times_out_after_the_timeout() {
        let started = Instant::now();
        let never = std::future::pending::<()>();
        assert!(read_within(Duration::from_millis(100), never).await.is_err());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(5), "{waited:?}");
    }
}
