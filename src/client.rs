//! The CLI's side of the admin API: a small blocking HTTP client that finds the running
//! server through the same policy.toml (its `admin_listen` and `admin_token`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::Policy;
use crate::secrets::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach mailwarden's admin API at {address} (is the server running? server.admin_listen): {message}")]
    Unreachable { address: SocketAddr, message: String },
    #[error("the server answered {status}: {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the server's answer is not the JSON expected: {0}")]
    BadAnswer(String),
}

pub struct AdminClient {
    agent: ureq::Agent,
    address: SocketAddr,
    token: Secret,
}

/// A response's decoded JSON body.
pub type Json = serde_json::Value;

impl AdminClient {
    /// Fails when the policy has no admin token (resolve secrets first).
    pub fn new(policy: &Policy) -> Option<AdminClient> {
        let token = policy.auth.admin_token.clone()?;
        let mut address = policy.server.admin_listen;
        // A server listening on all interfaces is reached on loopback.
        if address.ip().is_unspecified() {
            let loopback = match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            address.set_ip(loopback);
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        Some(AdminClient { agent, address, token })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        request.header("Authorization", format!("Bearer {}", self.token.expose()))
    }

    /// GET `path` with query parameters (encoded here).
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Json, ClientError> {
        let request = query.iter().fold(self.agent.get(self.url(path)), |r, (k, v)| r.query(k, v));
        self.finish(self.authorised(request).call())
    }

    /// DELETE `path` with query parameters (encoded here).
    pub fn delete(&self, path: &str, query: &[(&str, &str)]) -> Result<Json, ClientError> {
        let request = query.iter().fold(self.agent.delete(self.url(path)), |r, (k, v)| r.query(k, v));
        self.finish(self.authorised(request).call())
    }

    /// PUT `path` with a JSON body.
    pub fn put(&self, path: &str, body: &Json) -> Result<Json, ClientError> {
        self.finish(self.authorised(self.agent.put(self.url(path))).send_json(body))
    }

    /// POST `path` with a JSON body, or none.
    pub fn post(&self, path: &str, body: Option<&Json>) -> Result<Json, ClientError> {
        let request = self.authorised(self.agent.post(self.url(path)));
        self.finish(match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        })
    }

    fn finish(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Json, ClientError> {
        let mut response =
            result.map_err(|e| ClientError::Unreachable { address: self.address, message: e.to_string() })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let json: Json =
            serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer(format!("{e}: {text:.200}")))?;
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            let field = |name: &str| json.get(name).and_then(Json::as_str).unwrap_or_default().to_string();
            Err(ClientError::Refused { status, code: field("error"), message: field("message") })
        }
    }
}

/// Percent-encodes what an admin typed for use in a path; `/` (a network's prefix) and `:`
/// (IPv6) stay as they are, which the API's routes accept.
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b':' | b'-' | b'_' | b'/' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
