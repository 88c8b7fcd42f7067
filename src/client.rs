//! The CLI's side of the admin API: a small blocking HTTP client that finds the running
//! server through the same policy.toml (its `admin_listen` and `admin_token`), over https when
//! the admin listener speaks TLS (`tls.admin_cert`), trusting `tls.cli_ca` and presenting
//! `tls.cli_cert` to a listener that requires client certificates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use crate::config::Policy;
use crate::secrets::Secret;
use crate::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach mailwarden's admin API at {address} (is the server running? server.admin_listen): {message}")]
    Unreachable { address: SocketAddr, message: String },
    #[error("the server answered {status}: {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the server's answer is not the JSON expected: {0}")]
    BadAnswer(String),
    #[error("no admin token configured (auth.admin_token)")]
    NoToken,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "tls.cli_ca: the admin listener speaks TLS (tls.admin_cert), so name the PEM CA that signed its certificate"
    )]
    NoCa,
}

pub struct AdminClient {
    agent: ureq::Agent,
    address: SocketAddr,
    token: Secret,
    /// Whether the admin listener speaks TLS (`tls.admin_cert` is set).
    https: bool,
}

/// A response's decoded JSON body.
pub type Json = serde_json::Value;

impl AdminClient {
    /// Fails when the policy has no admin token (resolve secrets first), or names TLS files
    /// that cannot be read.
    pub fn new(policy: &Policy) -> Result<AdminClient, ClientError> {
        let token = policy.auth.admin_token.clone().ok_or(ClientError::NoToken)?;
        let mut address = policy.server.admin_listen;
        // A server listening on all interfaces is reached on loopback.
        if address.ip().is_unspecified() {
            let loopback = match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            address.set_ip(loopback);
        }
        let https = policy.tls.admin.is_some();
        let mut config =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(15)));
        if https {
            config = config.tls_config(client_tls(policy)?);
        }
        Ok(AdminClient { agent: config.build().into(), address, token, https })
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.address, path)
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

/// The CLI's TLS: the admin listener's CA, and its own certificate when it has one. The
/// listener's certificate must name the address the CLI reaches (an IP address SAN for
/// `127.0.0.1`), which rustls checks like any host name.
fn client_tls(policy: &Policy) -> Result<TlsConfig, ClientError> {
    tls::install_default_provider();
    let files = &policy.tls.client;
    let ca = files.ca.as_ref().ok_or(ClientError::NoCa)?;
    let roots = certificates("tls.cli_ca", ca)?;
    let mut config =
        TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(RootCerts::Specific(Arc::new(roots)));
    if let Some((cert, key)) = &files.cert_and_key {
        let chain = certificates("tls.cli_cert", cert)?;
        // Read by `tls` first, for an error naming the key and the path.
        tls::read_private_key("tls.cli_key", key)?;
        let pem =
            std::fs::read(key).map_err(|source| TlsError::Read { key: "tls.cli_key", path: key.clone(), source })?;
        let key = PrivateKey::from_pem(&pem).map_err(|e| TlsError::Invalid {
            key: "tls.cli_key",
            path: key.clone(),
            message: e.to_string(),
        })?;
        config = config.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(config.build())
}

fn certificates(key: &'static str, path: &std::path::Path) -> Result<Vec<Certificate<'static>>, TlsError> {
    Ok(tls::read_certificates(key, path)?
        .into_iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect())
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
