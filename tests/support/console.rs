//! The console over plain HTTP, for the tests that check what a browser cannot show (status
//! codes, headers, forged forms): its URLs, a client that keeps no cookies and follows no
//! redirects, and a signed-in session's cookie.

use std::time::Duration;

use super::mailwarden::Mailwarden;

/// The console's `path` (after `/console`) on `mw`'s admin listener.
pub fn console_url(mw: &Mailwarden, path: &str) -> String {
    format!("http://{}/console{path}", mw.admin_addr)
}

/// A plain HTTP client that keeps no cookies and follows no redirects.
pub fn raw() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Signs in with `token`; returns the sign-in's status and the session cookie (`name=value`)
/// it set, if any.
pub fn sign_in(mw: &Mailwarden, token: &str) -> (u16, Option<String>) {
    let response = raw()
        .post(&console_url(mw, "/sign-in"))
        .send_form([("token", token), ("next", "/console/")])
        .expect("the sign-in answers");
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mailwarden_console="))
        .map(|v| v.split(';').next().unwrap_or_default().to_string());
    (response.status().as_u16(), cookie)
}

/// GETs a console path with a session cookie: (status, `Location`, body).
pub fn get(mw: &Mailwarden, path: &str, cookie: &str) -> (u16, String, String) {
    let mut response = raw().get(&console_url(mw, path)).header("cookie", cookie).call().expect("the console answers");
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), location, body)
}
