//! The server's log: `tracing` to stderr in the configured format. In the text format every
//! field's value passes `printable::escape`, so a login with a newline cannot forge a line and
//! an escape sequence in a device ID cannot reach the terminal of whoever reads the log; the
//! JSON format is escaped by JSON itself.

use std::fmt::Write;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

use crate::config::{LogFormat, Policy};
use crate::printable::Escaping;

/// Writes one field as the default text format does (`name=value`, the message bare), with
/// the value escaped.
fn escaped_field(
    writer: &mut Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    if field.name() != "message" {
        write!(writer, "{}=", field.name())?;
    }
    write!(Escaping(writer), "{value:?}")
}

/// Dovecot 2.3 sends the IP address of an `https://127.0.0.1/` policy URL as SNI, which RFC 6066
/// forbids; rustls ignores it, rightly, but warns on every new connection. The warning tells the
/// admin nothing they can change, so it is only shown when asked for through `RUST_LOG`.
fn quiet_sni_warning(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    match "rustls::msgs::handshake=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Installs the subscriber for `policy.log` (`RUST_LOG` overrides the level).
pub fn init(policy: &Policy) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| tracing_subscriber::EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| quiet_sni_warning(tracing_subscriber::EnvFilter::new(&policy.log.level)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match policy.log.format {
        LogFormat::Text => {
            builder.fmt_fields(tracing_subscriber::fmt::format::debug_fn(escaped_field).delimited(" ")).try_init()
        }
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
