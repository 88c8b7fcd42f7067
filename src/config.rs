//! policy.toml in two stages: `RawConfig` is the file (plus `MAILWARDEN__SECTION__KEY`
//! environment overrides) exactly as written; `Policy` is the validated form the server runs
//! on, with parsed addresses, networks, durations and message templates. Every error names
//! the key it is about. Loading does no I/O beyond reading the file: secrets that are left
//! empty are resolved by `secrets`, not here.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use ipnet::IpNet;

use crate::network::{SourceGrouping, parse_network};
use crate::secrets::Secret;
use crate::template::Template;

/// Everything that went wrong with a configuration, all at once, each naming its key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub origin: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}", self.origin)?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Stage one: the file as written.

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    auth: RawAuth,
    autoban: RawAutoban,
    networks: RawNetworks,
    messages: RawMessages,
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    policy_listen: String,
    admin_listen: String,
    state_dir: String,
    max_body_bytes: usize,
    reload_on_change: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            policy_listen: "127.0.0.1:8180".into(),
            admin_listen: "127.0.0.1:8181".into(),
            state_dir: "state".into(),
            max_body_bytes: 64 * 1024,
            reload_on_change: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    api_key: String,
    api_key_header: String,
    admin_token: String,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            api_key: String::new(),
            api_key_header: "X-API-Key".into(),
            admin_token: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAutoban {
    max_failures: i64,
    window: String,
    ban_for: String,
    ipv4_prefix: i64,
    ipv6_prefix: i64,
    max_tracked_sources: i64,
}

impl Default for RawAutoban {
    fn default() -> Self {
        RawAutoban {
            max_failures: 5,
            window: "20m".into(),
            ban_for: "30m".into(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_tracked_sources: 1_000_000,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawNetworks {
    trusted: Vec<String>,
    blocked: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMessages {
    banned: String,
    blocked: String,
}

pub const DEFAULT_BANNED_MESSAGE: &str =
    "Too many failed logins from {source}; try again after {until} UTC";
pub const DEFAULT_BLOCKED_MESSAGE: &str = "Logins from {source} are blocked by the administrator";

impl Default for RawMessages {
    fn default() -> Self {
        RawMessages {
            banned: DEFAULT_BANNED_MESSAGE.into(),
            blocked: DEFAULT_BLOCKED_MESSAGE.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stage two: the validated policy.

/// The validated configuration. Built once, shared as `Arc<Policy>`, replaced whole.
#[derive(Debug, Clone)]
pub struct Policy {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub autoban: Autoban,
    pub networks: FileNetworks,
    pub messages: Messages,
    pub log: LogSettings,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub policy_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Absolute, or relative to the configuration file's folder.
    pub state_dir: PathBuf,
    /// Largest request body either listener reads; larger ones get 413.
    pub max_body_bytes: usize,
    /// Reload the policy when the file changes on disk (as well as on SIGHUP and the API).
    pub reload_on_change: bool,
}

/// The `[networks]` lists as written in the file; `access` combines them with the API's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileNetworks {
    pub trusted: Vec<IpNet>,
    pub blocked: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Empty in the file means "generate one into state_dir on first start".
    pub api_key: Option<Secret>,
    pub api_key_header: String,
    pub admin_token: Option<Secret>,
}

/// The classic auto-ban: `max_failures` within `window` bans the source for `ban_for`.
#[derive(Debug, Clone, Copy)]
pub struct Autoban {
    pub max_failures: u32,
    pub window: Duration,
    pub ban_for: Duration,
    pub grouping: SourceGrouping,
    /// Bound on sources whose failures are remembered; the least useful are forgotten first.
    /// Bans are held apart from this and never evicted.
    pub max_tracked_sources: u64,
}

/// The texts sent to mail apps. Placeholders are checked at load time.
#[derive(Debug, Clone)]
pub struct Messages {
    pub banned: Template,
    pub blocked: Template,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// Where a configuration comes from: the file, then the environment on top of it.
pub struct ConfigSource<'a> {
    pub path: &'a Path,
    /// `None` reads the process environment; tests pass their own.
    pub environment: Option<HashMap<String, String>>,
}

impl Policy {
    /// Reads and validates `path` with environment overrides from the process.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        Policy::load_from(ConfigSource {
            path,
            environment: None,
        })
    }

    pub fn load_from(source: ConfigSource<'_>) -> Result<Policy, ConfigError> {
        let origin = source.path.display().to_string();
        let fail = |problem: String| ConfigError {
            origin: origin.clone(),
            problems: vec![problem],
        };
        if !source.path.is_file() {
            return Err(fail(format!(
                "the file {origin} does not exist or is not a file"
            )));
        }
        let environment = config::Environment::with_prefix("MAILWARDEN")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("networks.trusted")
            .with_list_parse_key("networks.blocked")
            .source(source.environment);
        let layered = config::Config::builder()
            .add_source(
                config::File::from(source.path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            )
            .add_source(environment)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(layered).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path.is_empty() || path == "." {
                fail(inner)
            } else {
                fail(format!("{path}: {inner}"))
            }
        })?;
        let base_dir = source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        validate(raw, &base_dir).map_err(|problems| ConfigError { origin, problems })
    }

    /// The effective policy as TOML, secrets masked: what `check-config` prints.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let quote = |s: &str| format!("{s:?}");
        let list = |nets: &[IpNet]| {
            let items: Vec<String> = nets.iter().map(|n| quote(&n.to_string())).collect();
            format!("[{}]", items.join(", "))
        };
        let secret = |s: &Option<Secret>| match s {
            Some(_) => quote("********"),
            None => quote("(generated into state_dir on first start)"),
        };
        let _ = writeln!(out, "[server]");
        let _ = writeln!(
            out,
            "policy_listen = {}",
            quote(&self.server.policy_listen.to_string())
        );
        let _ = writeln!(
            out,
            "admin_listen = {}",
            quote(&self.server.admin_listen.to_string())
        );
        let _ = writeln!(
            out,
            "state_dir = {}",
            quote(&self.server.state_dir.display().to_string())
        );
        let _ = writeln!(out, "max_body_bytes = {}", self.server.max_body_bytes);
        let _ = writeln!(out, "reload_on_change = {}", self.server.reload_on_change);
        let _ = writeln!(out, "\n[auth]");
        let _ = writeln!(out, "api_key = {}", secret(&self.auth.api_key));
        let _ = writeln!(out, "api_key_header = {}", quote(&self.auth.api_key_header));
        let _ = writeln!(out, "admin_token = {}", secret(&self.auth.admin_token));
        let a = &self.autoban;
        let _ = writeln!(out, "\n[autoban]");
        let _ = writeln!(out, "max_failures = {}", a.max_failures);
        let _ = writeln!(
            out,
            "window = {}",
            quote(&humantime::format_duration(a.window).to_string())
        );
        let _ = writeln!(
            out,
            "ban_for = {}",
            quote(&humantime::format_duration(a.ban_for).to_string())
        );
        let _ = writeln!(out, "ipv4_prefix = {}", a.grouping.ipv4_prefix);
        let _ = writeln!(out, "ipv6_prefix = {}", a.grouping.ipv6_prefix);
        let _ = writeln!(out, "max_tracked_sources = {}", a.max_tracked_sources);
        let _ = writeln!(out, "\n[networks]");
        let _ = writeln!(out, "trusted = {}", list(&self.networks.trusted));
        let _ = writeln!(out, "blocked = {}", list(&self.networks.blocked));
        let _ = writeln!(out, "\n[messages]");
        let _ = writeln!(out, "banned = {}", quote(self.messages.banned.source()));
        let _ = writeln!(out, "blocked = {}", quote(self.messages.blocked.source()));
        let _ = writeln!(out, "\n[log]");
        let _ = writeln!(out, "level = {}", quote(&self.log.level));
        let format = match self.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        let _ = writeln!(out, "format = {}", quote(format));
        out
    }
}

fn validate(raw: RawConfig, base_dir: &Path) -> Result<Policy, Vec<String>> {
    let mut problems = Vec::new();

    let mut listen = |key: &str, text: &str| match text.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!(
                "{key}: {text:?} is not an address and port such as \"127.0.0.1:8180\""
            ));
            None
        }
    };
    let policy_listen = listen("server.policy_listen", &raw.server.policy_listen);
    let admin_listen = listen("server.admin_listen", &raw.server.admin_listen);
    if let (Some(p), Some(a)) = (policy_listen, admin_listen) {
        if p == a && p.port() != 0 {
            problems.push(format!(
                "server.admin_listen: {a} is also server.policy_listen; they must differ"
            ));
        }
    }
    if raw.server.state_dir.trim().is_empty() {
        problems.push("server.state_dir: must not be empty".into());
    }
    let state_dir = {
        let dir = PathBuf::from(raw.server.state_dir.trim());
        if dir.is_absolute() {
            dir
        } else {
            base_dir.join(dir)
        }
    };
    if !(1024..=16 * 1024 * 1024).contains(&raw.server.max_body_bytes) {
        problems.push(format!(
            "server.max_body_bytes: {} is outside 1024..=16777216",
            raw.server.max_body_bytes
        ));
    }

    let header = raw.auth.api_key_header.trim().to_string();
    let header_ok = !header.is_empty()
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !header_ok {
        problems.push(format!(
            "auth.api_key_header: {header:?} is not a valid HTTP header name"
        ));
    }
    let mut secret = |key: &str, value: &str| {
        let value = value.trim();
        if value.is_empty() {
            None
        } else {
            if value.len() < 16 {
                problems.push(format!(
                    "{key}: too short ({} characters); use at least 16 random characters",
                    value.len()
                ));
            }
            Some(Secret::new(value))
        }
    };
    let api_key = secret("auth.api_key", &raw.auth.api_key);
    let admin_token = secret("auth.admin_token", &raw.auth.admin_token);

    let a = &raw.autoban;
    let mut ranged = |key: &str, value: i64, range: std::ops::RangeInclusive<i64>| {
        if range.contains(&value) {
            Some(value)
        } else {
            problems.push(format!(
                "{key}: {value} is outside {}..={}",
                range.start(),
                range.end()
            ));
            None
        }
    };
    let max_failures = ranged("autoban.max_failures", a.max_failures, 1..=1000);
    let ipv4_prefix = ranged("autoban.ipv4_prefix", a.ipv4_prefix, 8..=32);
    let ipv6_prefix = ranged("autoban.ipv6_prefix", a.ipv6_prefix, 16..=128);
    let max_tracked = ranged(
        "autoban.max_tracked_sources",
        a.max_tracked_sources,
        1_000..=1_000_000_000,
    );
    let window = duration(
        &mut problems,
        "autoban.window",
        &a.window,
        Duration::from_secs(30 * 24 * 3600),
    );
    let ban_for = duration(
        &mut problems,
        "autoban.ban_for",
        &a.ban_for,
        Duration::from_secs(366 * 24 * 3600),
    );

    let mut networks = FileNetworks::default();
    for (key, entries, list) in [
        (
            "networks.trusted",
            &raw.networks.trusted,
            &mut networks.trusted,
        ),
        (
            "networks.blocked",
            &raw.networks.blocked,
            &mut networks.blocked,
        ),
    ] {
        for (i, entry) in entries.iter().enumerate() {
            match parse_network(entry) {
                Ok(net) if list.contains(&net) => {
                    problems.push(format!("{key}[{i}]: {net} is listed twice"))
                }
                Ok(net) => list.push(net),
                Err(e) => problems.push(format!("{key}[{i}]: {e}")),
            }
        }
    }

    let mut template =
        |key: &str, text: &str, allowed: &[&'static str]| match Template::parse(text, allowed) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                None
            }
        };
    let banned = template(
        "messages.banned",
        &raw.messages.banned,
        &["source", "until"],
    );
    let blocked = template("messages.blocked", &raw.messages.blocked, &["source"]);

    let format = match raw.log.format.trim() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            problems.push(format!(
                "log.format: {other:?} is neither \"text\" nor \"json\""
            ));
            None
        }
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(raw.log.level.trim()) {
        problems.push(format!(
            "log.level: {:?} is not a level such as \"info\" or \"mailwarden=debug\": {e}",
            raw.log.level
        ));
    }

    match (
        policy_listen,
        admin_listen,
        max_failures,
        ipv4_prefix,
        ipv6_prefix,
        max_tracked,
        window,
        ban_for,
        banned,
        blocked,
        format,
    ) {
        (
            Some(policy_listen),
            Some(admin_listen),
            Some(max_failures),
            Some(v4),
            Some(v6),
            Some(max_tracked),
            Some(window),
            Some(ban_for),
            Some(banned),
            Some(blocked),
            Some(format),
        ) if problems.is_empty() => Ok(Policy {
            server: ServerSettings {
                policy_listen,
                admin_listen,
                state_dir,
                max_body_bytes: raw.server.max_body_bytes,
                reload_on_change: raw.server.reload_on_change,
            },
            auth: AuthSettings {
                api_key,
                api_key_header: header,
                admin_token,
            },
            autoban: Autoban {
                max_failures: max_failures as u32,
                window,
                ban_for,
                grouping: SourceGrouping {
                    ipv4_prefix: v4 as u8,
                    ipv6_prefix: v6 as u8,
                },
                max_tracked_sources: max_tracked as u64,
            },
            networks,
            messages: Messages { banned, blocked },
            log: LogSettings {
                level: raw.log.level.trim().to_string(),
                format,
            },
        }),
        _ => Err(problems),
    }
}

fn duration(problems: &mut Vec<String>, key: &str, text: &str, max: Duration) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= Duration::from_secs(1) && d <= max => Some(d),
        Ok(_) => {
            problems.push(format!(
                "{key}: {text:?} is outside 1s..={}",
                humantime::format_duration(max)
            ));
            None
        }
        Err(e) => {
            problems.push(format!(
                "{key}: {text:?} is not a duration such as \"20m\" or \"1h 30m\" ({e})"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Policy, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(toml.as_bytes()).expect("write");
        let environment = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Policy::load_from(ConfigSource {
            path: file.path(),
            environment: Some(environment),
        })
    }

    fn problems(toml: &str) -> String {
        match load(toml, &[]) {
            Ok(_) => panic!("expected an error for {toml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_empty_file_gives_the_seed_defaults() {
        let policy = load("", &[]).expect("defaults are valid");
        assert_eq!(policy.autoban.max_failures, 5);
        assert_eq!(policy.autoban.window, Duration::from_secs(20 * 60));
        assert_eq!(policy.autoban.ban_for, Duration::from_secs(30 * 60));
        assert_eq!(
            policy.autoban.grouping,
            SourceGrouping {
                ipv4_prefix: 32,
                ipv6_prefix: 64
            }
        );
        assert_eq!(policy.server.policy_listen.to_string(), "127.0.0.1:8180");
        assert_eq!(policy.auth.api_key_header, "X-API-Key");
        assert!(policy.auth.api_key.is_none());
    }

    #[test]
    fn environment_overrides_the_file_per_key() {
        let policy = load(
            "[autoban]\nmax_failures = 5\n[auth]\napi_key = \"file-key-0123456789\"\n",
            &[
                ("MAILWARDEN__AUTOBAN__MAX_FAILURES", "3"),
                ("MAILWARDEN__AUTH__API_KEY", "env-key-0123456789"),
                (
                    "MAILWARDEN__NETWORKS__TRUSTED",
                    "192.0.2.0/24,2001:db8::/32",
                ),
            ],
        )
        .expect("valid");
        assert_eq!(policy.autoban.max_failures, 3);
        assert!(
            policy
                .auth
                .api_key
                .as_ref()
                .is_some_and(|k| k.matches(b"env-key-0123456789"))
        );
        assert_eq!(policy.networks.trusted.len(), 2);
    }

    #[test]
    fn errors_name_the_key_and_all_are_reported_together() {
        let text = problems(
            "[autoban]\nwindow = \"20x\"\nmax_failures = 0\n[networks]\nblocked = [\"10.0.0.0/8\", \"nonsense\"]\n",
        );
        assert!(
            text.contains("autoban.window: \"20x\" is not a duration"),
            "{text}"
        );
        assert!(
            text.contains("autoban.max_failures: 0 is outside 1..=1000"),
            "{text}"
        );
        assert!(
            text.contains("networks.blocked[1]: \"nonsense\" is not an IP address or network"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let text = problems("[autoban]\nmax_failure = 5\n");
        assert!(text.contains("max_failure"), "{text}");
        let text = problems("[autoban]\nmax_failures = \"five\"\n");
        assert!(text.contains("autoban.max_failures"), "{text}");
        let text = problems("[autoban\n");
        assert!(text.contains("TOML") || text.contains("parse"), "{text}");
    }

    #[test]
    fn short_secrets_bad_headers_and_unknown_placeholders_are_refused() {
        let text = problems(
            "[auth]\napi_key = \"short\"\napi_key_header = \"X API Key\"\n[messages]\nbanned = \"Banned until {when}\"\n",
        );
        assert!(text.contains("auth.api_key: too short"), "{text}");
        assert!(text.contains("auth.api_key_header"), "{text}");
        assert!(
            text.contains("messages.banned: unknown placeholder {when}"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Policy::load(Path::new("/nonexistent/policy.toml")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/policy.toml"));
    }

    #[test]
    fn describe_masks_secrets() {
        let policy = load("[auth]\napi_key = \"very-secret-api-key-123\"\n", &[]).expect("valid");
        let text = policy.describe();
        assert!(!text.contains("very-secret-api-key-123"));
        assert!(text.contains("api_key = \"********\""));
        assert!(text.contains("max_failures = 5"));
    }
}
