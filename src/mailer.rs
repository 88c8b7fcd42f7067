//! Sending one plain-text mail over SMTP (lettre): to the mail server `owner_mail.smtp_url`
//! names, with STARTTLS or TLS as the URL asks and SMTP AUTH when a user is set. Blocking, with
//! a deadline; called only from background threads, never from the request path.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use crate::secrets::Secret;

/// How long one delivery to the mail server may take, connecting included.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Where and as whom mail is sent.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// `smtp://host:port` (plain, or `?tls=required` for STARTTLS), `smtps://host:port` (TLS).
    pub url: String,
    /// SMTP AUTH; empty: none.
    pub user: String,
    pub password: Option<Secret>,
    /// The From address.
    pub from: String,
}

/// One mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the address {0:?} is not usable: {1}")]
    Address(String, String),
    #[error("the mail could not be built: {0}")]
    Build(String),
    #[error("owner_mail.smtp_url: {0}")]
    Url(String),
    #[error("the mail server refused or could not be reached: {0}")]
    Send(String),
}

/// Checks `address` as a From or To address.
pub fn check_address(address: &str) -> Result<(), String> {
    address.parse::<lettre::Address>().map(|_| ()).map_err(|e| e.to_string())
}

/// Checks `url` as the transport would read it (for the configuration's validation).
pub fn check_url(url: &str) -> Result<(), String> {
    SmtpTransport::from_url(url).map(|_| ()).map_err(|e| e.to_string())
}

/// Sends `mail`. Blocking, at most `SEND_TIMEOUT` per attempt.
pub fn send(settings: &SmtpSettings, mail: &Mail) -> Result<(), MailError> {
    let from = settings
        .from
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Address(settings.from.clone(), e.to_string()))?;
    let to = mail
        .to
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Address(mail.to.clone(), e.to_string()))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| MailError::Build(e.to_string()))?;
    let mut transport =
        SmtpTransport::from_url(&settings.url).map_err(|e| MailError::Url(e.to_string()))?.timeout(Some(SEND_TIMEOUT));
    if !settings.user.is_empty() {
        let password = settings.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
        transport = transport.credentials(Credentials::new(settings.user.clone(), password));
    }
    transport.build().send(&message).map(|_| ()).map_err(|e| MailError::Send(e.to_string()))
}
