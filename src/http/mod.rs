//! HTTP glue: the only place that knows actix-web. `policy` serves Dovecot's listener,
//! `admin` the admin API and `/metrics`, `public` the self-service unblock page; all translate
//! between HTTP and `Warden` and keep no state of their own.

pub mod admin;
pub mod console;
pub mod policy;
pub mod proxy;
pub mod public;

use std::future::Future;
use std::panic::AssertUnwindSafe;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// A JSON error response: `{"error": "<stable code>", "message": "<for humans>"}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { error: code, message })
}

/// The headers every web page (the self-service page's, the console's) carries: its
/// Content-Security-Policy `csp`, no sniffing, no referrer, no framing, and no caching unless
/// the response says otherwise (the style sheets and scripts).
pub fn page_headers(mut response: HttpResponse, csp: &'static str) -> HttpResponse {
    use actix_web::http::header::{self, HeaderValue};
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Reads a request body up to `limit` bytes; `None` when it is larger.
pub async fn read_limited(
    mut payload: impl futures_util::Stream<Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>> + Unpin,
    limit: usize,
) -> Result<Option<actix_web::web::Bytes>, actix_web::error::PayloadError> {
    // A policy request's body nearly always arrives as one chunk, which is kept as it is
    // rather than copied.
    let first = match payload.next().await {
        None => return Ok(Some(actix_web::web::Bytes::new())),
        Some(chunk) => chunk?,
    };
    if first.len() > limit {
        return Ok(None);
    }
    let Some(second) = payload.next().await else {
        return Ok(Some(first));
    };
    let mut body = actix_web::web::BytesMut::from(&first[..]);
    let mut rest = futures_util::stream::iter([second]).chain(payload);
    while let Some(chunk) = rest.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// Why a call handed to the blocking pool gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingFailure {
    /// The call panicked (logged by the panic hook with its cause and location).
    Panicked,
    /// The pool is gone: the server is stopping.
    ShuttingDown,
}

/// Runs a blocking call on actix's blocking pool. A panic inside it is caught here, so it is
/// told apart from the pool's own shutdown (`web::block` reports both the same way).
pub async fn run_blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Result<T, BlockingFailure> {
    match web::block(move || std::panic::catch_unwind(AssertUnwindSafe(call))).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(BlockingFailure::Panicked),
        Err(_) => Err(BlockingFailure::ShuttingDown),
    }
}

/// A handler panicked: the client gets a 500 in the admin API's error shape, never a dropped
/// connection.
#[derive(Debug, thiserror::Error)]
#[error("internal error: the request failed unexpectedly; the server log has the cause")]
pub struct HandlerPanicked;

impl ResponseError for HandlerPanicked {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &self.to_string())
    }
}

/// Middleware for every listener (`App::wrap_fn(http::catch_panics)`): a panic while a handler
/// runs becomes a logged 500, which actix sends as `HandlerPanicked`'s response. (Otherwise it
/// drops the connection, and the worker's other connections with it.)
pub fn catch_panics<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    // Kept as they are (a reference count each) and written out only if the handler panics:
    // formatting them for every request cost an allocation a request (docs/BENCHMARKS.md).
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let answer = service.call(request);
    async move {
        match AssertUnwindSafe(answer).catch_unwind().await {
            Ok(answered) => answered,
            Err(_) => Err(handler_panicked(&method, uri.path()).into()),
        }
    }
}

/// What a listener does when a handler panicked on `method path`: the panic hook has logged
/// the cause and where; this logs which request, and the client gets a 500 in the error shape.
pub fn handler_panicked(method: &actix_web::http::Method, path: &str) -> HandlerPanicked {
    tracing::error!(route = %format!("{method} {path}"), "a request handler panicked; answered 500");
    HandlerPanicked
}

/// Logs every panic (its message and location) through `tracing`, so it lands in the server
/// log in the configured format rather than as raw text on stderr.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(panic = %message, location = %location, "panicked");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, test};

    async fn panics() -> HttpResponse {
        let text = "";
        // Indexing past the end, as the old time formatter did with a year after 9999.
        HttpResponse::Ok().body(text[..3].to_string())
    }

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_in_the_error_shape_and_the_listener_keeps_serving() {
        let app = test::init_service(
            App::new()
                .wrap_fn(catch_panics)
                .route("/panics", web::get().to(panics))
                .route("/fine", web::get().to(|| async { HttpResponse::Ok().body("ok") })),
        )
        .await;
        // The server sends a service's error as the error's response.
        let failed = test::try_call_service(&app, test::TestRequest::get().uri("/panics").to_request()).await;
        let response = failed.err().expect("the panic becomes an error").error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = actix_web::body::to_bytes(response.into_body()).await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(body["error"], "internal");
        let response = test::call_service(&app, test::TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn a_panic_on_the_blocking_pool_is_told_apart_from_shutting_down() {
        let panicked = run_blocking(|| -> u32 { panic!("a bug") }).await;
        assert_eq!(panicked, Err(BlockingFailure::Panicked));
        assert_eq!(run_blocking(|| 7).await, Ok(7));
    }

    #[actix_web::test]
    async fn a_body_is_read_whole_from_any_number_of_chunks_and_refused_past_its_limit() {
        fn chunks(
            parts: &[&'static str],
        ) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>> + Unpin {
            let parts: Vec<_> = parts.iter().map(|part| Ok(web::Bytes::from_static(part.as_bytes()))).collect();
            futures_util::stream::iter(parts)
        }
        assert_eq!(read_limited(chunks(&[]), 10).await.unwrap(), Some(web::Bytes::new()));
        assert_eq!(read_limited(chunks(&["{\"a\":1}"]), 10).await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(read_limited(chunks(&["{\"a\"", ":", "1}"]), 10).await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(read_limited(chunks(&["0123456789"]), 10).await.unwrap().as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(read_limited(chunks(&["0123456789a"]), 10).await.unwrap(), None, "one chunk too large");
        assert_eq!(read_limited(chunks(&["01234", "56789", "a"]), 10).await.unwrap(), None, "too large in its third");
        let broken = futures_util::stream::iter([
            Ok(web::Bytes::from_static(b"{")),
            Err(actix_web::error::PayloadError::Incomplete(None)),
        ]);
        assert!(read_limited(broken, 10).await.is_err(), "a broken body is an error, not a short one");
    }
}
