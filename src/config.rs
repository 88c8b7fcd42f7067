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

use crate::events::Retention;
use crate::firewall::{KeyedRuleSet, RuleSetOrigin, StoredRuleSet, parse_key};
use crate::geoip::GeoIpSettings;
use crate::network::{SourceGrouping, parse_network};
use crate::secrets::Secret;
use crate::store::{RedisSettings, mask_url};
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
    self_service: RawSelfService,
    server: RawServer,
    auth: RawAuth,
    autoban: RawAutoban,
    stale_passwords: RawStalePasswords,
    account_protection: RawAccountProtection,
    networks: RawNetworks,
    mailboxes: HashMap<String, StoredRuleSet>,
    geoip: RawGeoIp,
    events: RawEvents,
    messages: RawMessages,
    log: RawLog,
    store: RawStore,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGeoIp {
    country_db: String,
    asn_db: String,
    anonymous_db: String,
    non_residential_asns_file: String,
    non_residential_networks_file: String,
    check_every: String,
}

impl Default for RawGeoIp {
    fn default() -> Self {
        RawGeoIp {
            country_db: String::new(),
            asn_db: String::new(),
            anonymous_db: String::new(),
            non_residential_asns_file: String::new(),
            non_residential_networks_file: String::new(),
            check_every: "60s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEvents {
    max_age: String,
    max_count: i64,
    max_bytes: i64,
}

impl Default for RawEvents {
    fn default() -> Self {
        RawEvents { max_age: "30d".into(), max_count: 1_000_000, max_bytes: 256 * 1024 * 1024 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    policy_listen: String,
    admin_listen: String,
    state_dir: String,
    max_body_bytes: usize,
    reload_on_change: bool,
    public_listen: String,
    trusted_proxies: Vec<String>,
    client_timeout: String,
    max_connections: i64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            policy_listen: "127.0.0.1:8180".into(),
            admin_listen: "127.0.0.1:8181".into(),
            state_dir: "state".into(),
            max_body_bytes: 64 * 1024,
            reload_on_change: false,
            public_listen: String::new(),
            trusted_proxies: Vec::new(),
            client_timeout: "5s".into(),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSelfService {
    max_unblocks_per_day: i64,
    max_requests_per_minute: i64,
    difficulty: i64,
    challenge_expires: String,
    provider_name: String,
    support_contact: String,
    text: HashMap<String, String>,
}

impl Default for RawSelfService {
    fn default() -> Self {
        RawSelfService {
            max_unblocks_per_day: 3,
            max_requests_per_minute: 60,
            difficulty: 50_000,
            challenge_expires: "5m".into(),
            provider_name: "your mail provider".into(),
            support_contact: String::new(),
            text: HashMap::new(),
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
        RawAuth { api_key: String::new(), api_key_header: "X-API-Key".into(), admin_token: String::new() }
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
    escalation_factor: f64,
    escalation_within: String,
    max_ban: String,
    unknown_accounts_count_double: bool,
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
            escalation_factor: 1.0,
            escalation_within: "24h".into(),
            max_ban: "24h".into(),
            unknown_accounts_count_double: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStalePasswords {
    enabled: bool,
    after: i64,
    quarantine_for: String,
}

impl Default for RawStalePasswords {
    fn default() -> Self {
        RawStalePasswords { enabled: true, after: 3, quarantine_for: "1h".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAccountProtection {
    enabled: bool,
    sources: i64,
    window: String,
    action: String,
    delay: String,
    known_for: String,
    known_per_account: i64,
    max_tracked_accounts: i64,
}

impl Default for RawAccountProtection {
    fn default() -> Self {
        RawAccountProtection {
            enabled: true,
            sources: 10,
            window: "1h".into(),
            action: "delay".into(),
            delay: "5s".into(),
            known_for: "30d".into(),
            known_per_account: 20,
            max_tracked_accounts: 100_000,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawNetworks {
    trusted: Vec<String>,
    blocked: Vec<String>,
    webmail: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMessages {
    banned: String,
    blocked: String,
    firewall_rule: String,
    firewall_default: String,
    stale_password: String,
    account_under_attack: String,
    store_unavailable: String,
}

pub const DEFAULT_BANNED_MESSAGE: &str = "Too many failed logins from {source}; try again after {until} UTC";
pub const DEFAULT_BLOCKED_MESSAGE: &str = "Logins from {source} are blocked by the administrator";
pub const DEFAULT_FIREWALL_RULE_MESSAGE: &str = "Access denied by email firewall rule no. {rule}";
pub const DEFAULT_FIREWALL_DEFAULT_MESSAGE: &str = "Access denied by email firewall default action";
pub const DEFAULT_STALE_PASSWORD_MESSAGE: &str =
    "Your mail app keeps using an old password for {login}; update it in the app's account settings";
pub const DEFAULT_STORE_UNAVAILABLE_MESSAGE: &str =
    "Logins are paused for a few minutes while the login service recovers; please try again shortly";
pub const DEFAULT_ACCOUNT_UNDER_ATTACK_MESSAGE: &str =
    "{login} is under attack; logins from new places are paused, so use a device you have used before";

impl Default for RawMessages {
    fn default() -> Self {
        RawMessages {
            banned: DEFAULT_BANNED_MESSAGE.into(),
            blocked: DEFAULT_BLOCKED_MESSAGE.into(),
            firewall_rule: DEFAULT_FIREWALL_RULE_MESSAGE.into(),
            firewall_default: DEFAULT_FIREWALL_DEFAULT_MESSAGE.into(),
            stale_password: DEFAULT_STALE_PASSWORD_MESSAGE.into(),
            account_under_attack: DEFAULT_ACCOUNT_UNDER_ATTACK_MESSAGE.into(),
            store_unavailable: DEFAULT_STORE_UNAVAILABLE_MESSAGE.into(),
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
        RawLog { level: "info".into(), format: "text".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    backend: String,
    url: String,
    cluster_urls: Vec<String>,
    prefix: String,
    timeout: String,
    on_store_error: String,
    refresh_every: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: "embedded".into(),
            url: String::new(),
            cluster_urls: Vec::new(),
            prefix: "mailwarden:".into(),
            timeout: "50ms".into(),
            on_store_error: "local".into(),
            refresh_every: "30s".into(),
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
    pub stale_passwords: StalePasswords,
    pub account_protection: AccountProtection,
    pub networks: FileNetworks,
    pub self_service: SelfService,
    /// The mailbox and domain firewall rule sets written in the file.
    pub mailboxes: Vec<KeyedRuleSet>,
    pub geoip: GeoIpSettings,
    /// How often the GeoIP files are checked for replacement.
    pub geoip_check_every: Duration,
    /// How much of the block log is kept.
    pub events: Retention,
    pub messages: Messages,
    pub log: LogSettings,
    pub store: StoreSettings,
}

/// Where durable and shared state lives (`[store]`). Only a restart changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    /// What a node answers while the shared store is unreachable.
    pub on_store_error: OnStoreError,
    /// How often a node rereads the shared bans, lists and rules, under the announcements.
    pub refresh_every: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// The SQLite database in `server.state_dir`: one node.
    Embedded,
    /// Redis (or Valkey), standalone or a cluster, shared by every node.
    Redis(RedisSettings),
}

/// `store.on_store_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Keep answering from what the node knows: bans, lists and rules already loaded, and
    /// failures counted by this node alone.
    Local,
    /// As `Local`, and refuse every login not from a trusted network (with
    /// `messages.store_unavailable`) until the store is back: for sites that would rather
    /// turn everyone away than count failures on one node alone.
    Reject,
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
    /// The self-service unblock page's listener; `None`: off.
    pub public_listen: Option<SocketAddr>,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` headers name the visitor.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a client may take to send a request's headers, and its body: slow senders are
    /// cut off.
    pub client_timeout: Duration,
    /// Open connections each listener accepts; past it new ones wait.
    pub max_connections: usize,
}

/// The self-service unblock page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfService {
    /// Self-unblocks allowed per address per day; then the page sends people to support.
    pub max_unblocks_per_day: u32,
    /// Requests one address may make to the page per minute; more get 429.
    pub max_requests_per_minute: u32,
    /// The proof-of-work's size: the largest number the browser may have to try.
    pub difficulty: u64,
    /// How long a challenge may be solved in; each is good for one unblock.
    pub challenge_expires: Duration,
    /// Who runs the mail service, as the page names it.
    pub provider_name: String,
    /// Where people go when self-service is not enough (an address, a phone number, a URL).
    pub support_contact: String,
    /// Every text on the page, by key; policy.toml's `[self_service.text]` overrides defaults.
    pub text: std::collections::BTreeMap<String, String>,
}

/// The `[networks]` lists as written in the file; `access` combines them with the API's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileNetworks {
    pub trusted: Vec<IpNet>,
    pub blocked: Vec<IpNet>,
    /// Webmail servers: logins whose TCP peer (`real_remote`) is here skip the mailbox firewall.
    pub webmail: Vec<IpNet>,
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
    /// Repeat offenders: a source banned again within `escalation_within` of its last ban gets
    /// the last ban's length times this (1.0: off), up to `max_ban`.
    pub escalation_factor: f64,
    pub escalation_within: Duration,
    pub max_ban: Duration,
    /// With Dovecot 2.4, a failure for a login that does not exist counts as two guesses:
    /// spraying unknown logins is a strong sign of an attack.
    pub unknown_accounts_count_double: bool,
}

/// The stale-password quarantine: a guess that failed `after` times is refused for
/// `quarantine_for`, with a message telling the person what to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StalePasswords {
    pub enabled: bool,
    pub after: u32,
    pub quarantine_for: Duration,
}

/// What an account under attack answers to sources it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackResponse {
    /// A tarpit of that many seconds (Dovecot's positive status; under 30).
    Delay(u32),
    Reject,
}

/// Protection of one account against a distributed attack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccountProtection {
    pub enabled: bool,
    /// Distinct failing sources within `window` that put an account under attack.
    pub sources: u32,
    pub window: Duration,
    pub response: AttackResponse,
    /// How long a successful login keeps a source known to the account.
    pub known_for: Duration,
    pub known_per_account: usize,
    pub max_tracked_accounts: u64,
}

/// The texts sent to mail apps. Placeholders are checked at load time.
#[derive(Debug, Clone)]
pub struct Messages {
    pub banned: Template,
    pub blocked: Template,
    pub firewall_rule: Template,
    pub firewall_default: Template,
    pub stale_password: Template,
    pub account_under_attack: Template,
    /// While the shared store is unreachable and `store.on_store_error = "reject"`.
    pub store_unavailable: Template,
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
        Policy::load_from(ConfigSource { path, environment: None })
    }

    pub fn load_from(source: ConfigSource<'_>) -> Result<Policy, ConfigError> {
        let origin = source.path.display().to_string();
        let fail = |problem: String| ConfigError { origin: origin.clone(), problems: vec![problem] };
        if !source.path.is_file() {
            return Err(fail(format!("the file {origin} does not exist or is not a file")));
        }
        let environment = config::Environment::with_prefix("MAILWARDEN")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("networks.trusted")
            .with_list_parse_key("networks.blocked")
            .with_list_parse_key("networks.webmail")
            .with_list_parse_key("server.trusted_proxies")
            .with_list_parse_key("store.cluster_urls")
            .source(source.environment);
        let file = config::File::from(source.path).format(config::FileFormat::Toml).required(true);
        let base_dir = source.path.parent().map(Path::to_path_buf).unwrap_or_default();
        Policy::build(file, environment, &origin, &base_dir)
    }

    /// Validates policy text (no environment overrides); relative paths are relative to
    /// `base_dir`. For fuzzing and tools that hold the text already.
    pub fn parse_str(text: &str, base_dir: &Path) -> Result<Policy, ConfigError> {
        let file = config::File::from_str(text, config::FileFormat::Toml);
        let environment = config::Environment::with_prefix("MAILWARDEN").source(Some(Default::default()));
        Policy::build(file, environment, "(text)", base_dir)
    }

    fn build<F: config::Source + Send + Sync + 'static>(
        file: F,
        environment: config::Environment,
        origin: &str,
        base_dir: &Path,
    ) -> Result<Policy, ConfigError> {
        let fail = |problem: String| ConfigError { origin: origin.to_string(), problems: vec![problem] };
        let layered = config::Config::builder()
            .add_source(file)
            .add_source(environment)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(layered).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path.is_empty() || path == "." { fail(inner) } else { fail(format!("{path}: {inner}")) }
        })?;
        validate(raw, base_dir).map_err(|problems| ConfigError { origin: origin.to_string(), problems })
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
        let _ = writeln!(out, "policy_listen = {}", quote(&self.server.policy_listen.to_string()));
        let _ = writeln!(out, "admin_listen = {}", quote(&self.server.admin_listen.to_string()));
        let _ = writeln!(out, "state_dir = {}", quote(&self.server.state_dir.display().to_string()));
        let _ = writeln!(out, "max_body_bytes = {}", self.server.max_body_bytes);
        let _ = writeln!(out, "reload_on_change = {}", self.server.reload_on_change);
        let _ = writeln!(out, "\n[auth]");
        let _ = writeln!(out, "api_key = {}", secret(&self.auth.api_key));
        let _ = writeln!(out, "api_key_header = {}", quote(&self.auth.api_key_header));
        let _ = writeln!(out, "admin_token = {}", secret(&self.auth.admin_token));
        let a = &self.autoban;
        let _ = writeln!(out, "\n[autoban]");
        let _ = writeln!(out, "max_failures = {}", a.max_failures);
        let _ = writeln!(out, "window = {}", quote(&humantime::format_duration(a.window).to_string()));
        let _ = writeln!(out, "ban_for = {}", quote(&humantime::format_duration(a.ban_for).to_string()));
        let _ = writeln!(out, "ipv4_prefix = {}", a.grouping.ipv4_prefix);
        let _ = writeln!(out, "ipv6_prefix = {}", a.grouping.ipv6_prefix);
        let _ = writeln!(out, "max_tracked_sources = {}", a.max_tracked_sources);
        let _ = writeln!(out, "\n[networks]");
        let _ = writeln!(out, "trusted = {}", list(&self.networks.trusted));
        let _ = writeln!(out, "blocked = {}", list(&self.networks.blocked));
        let _ = writeln!(out, "webmail = {}", list(&self.networks.webmail));
        let path = |p: &Option<PathBuf>| quote(&p.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
        let g = &self.geoip;
        let _ = writeln!(out, "\n[geoip]");
        let _ = writeln!(out, "country_db = {}", path(&g.country_db));
        let _ = writeln!(out, "asn_db = {}", path(&g.asn_db));
        let _ = writeln!(out, "anonymous_db = {}", path(&g.anonymous_db));
        let _ = writeln!(out, "non_residential_asns_file = {}", path(&g.non_residential_asns_file));
        let _ = writeln!(out, "non_residential_networks_file = {}", path(&g.non_residential_networks_file));
        let _ =
            writeln!(out, "check_every = {}", quote(&humantime::format_duration(self.geoip_check_every).to_string()));
        let _ = writeln!(out, "\n[events]");
        let _ = writeln!(out, "max_age = {}", quote(&humantime::format_duration(self.events.max_age).to_string()));
        let _ = writeln!(out, "max_count = {}", self.events.max_count);
        let _ = writeln!(out, "max_bytes = {}", self.events.max_bytes);
        for mailbox in &self.mailboxes {
            let stored = StoredRuleSet::from(&mailbox.rule_set);
            let _ = writeln!(out, "\n[mailboxes.{}]", quote(&mailbox.key));
            let _ = writeln!(out, "default = {}", quote(&stored.default));
            let protocols: Vec<String> = stored.protocols.iter().map(|p| quote(p)).collect();
            let _ = writeln!(out, "protocols = [{}]", protocols.join(", "));
            let _ = writeln!(out, "rules = [");
            for rule in &stored.rules {
                let _ = writeln!(
                    out,
                    "  {},",
                    serde_json::to_string(rule).unwrap_or_default().replace("\":", "\" = ").replace(",\"", ", \"")
                );
            }
            let _ = writeln!(out, "]");
        }
        let _ = writeln!(out, "\n[messages]");
        let _ = writeln!(out, "banned = {}", quote(self.messages.banned.source()));
        let _ = writeln!(out, "blocked = {}", quote(self.messages.blocked.source()));
        let _ = writeln!(out, "firewall_rule = {}", quote(self.messages.firewall_rule.source()));
        let _ = writeln!(out, "firewall_default = {}", quote(self.messages.firewall_default.source()));
        let _ = writeln!(out, "\n[store]");
        match &self.store.backend {
            StoreBackend::Embedded => {
                let _ = writeln!(out, "backend = \"embedded\"");
            }
            StoreBackend::Redis(redis) => {
                let _ = writeln!(out, "backend = \"redis\"");
                let urls: Vec<String> = redis.urls.iter().map(|u| quote(&mask_url(u))).collect();
                if redis.cluster {
                    let _ = writeln!(out, "cluster_urls = [{}]", urls.join(", "));
                } else {
                    let _ = writeln!(out, "url = {}", urls.join(", "));
                }
                let _ = writeln!(out, "prefix = {}", quote(&redis.prefix));
                let _ = writeln!(out, "timeout = {}", quote(&humantime::format_duration(redis.budget).to_string()));
            }
        }
        let on_error = match self.store.on_store_error {
            OnStoreError::Local => "local",
            OnStoreError::Reject => "reject",
        };
        let _ = writeln!(out, "on_store_error = {}", quote(on_error));
        let _ = writeln!(
            out,
            "refresh_every = {}",
            quote(&humantime::format_duration(self.store.refresh_every).to_string())
        );
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
    let resolve = |text: &str| {
        let path = PathBuf::from(text.trim());
        if path.is_absolute() { path } else { base_dir.join(path) }
    };

    let mut listen = |key: &str, text: &str| match text.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!("{key}: {text:?} is not an address and port such as \"127.0.0.1:8180\""));
            None
        }
    };
    let policy_listen = listen("server.policy_listen", &raw.server.policy_listen);
    let admin_listen = listen("server.admin_listen", &raw.server.admin_listen);
    if let (Some(p), Some(a)) = (policy_listen, admin_listen) {
        if p == a && p.port() != 0 {
            problems.push(format!("server.admin_listen: {a} is also server.policy_listen; they must differ"));
        }
    }
    if raw.server.state_dir.trim().is_empty() {
        problems.push("server.state_dir: must not be empty".into());
    }
    let state_dir = resolve(&raw.server.state_dir);
    if !(1024..=16 * 1024 * 1024).contains(&raw.server.max_body_bytes) {
        problems.push(format!("server.max_body_bytes: {} is outside 1024..=16777216", raw.server.max_body_bytes));
    }

    let header = raw.auth.api_key_header.trim().to_string();
    let header_ok =
        !header.is_empty() && header.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !header_ok {
        problems.push(format!("auth.api_key_header: {header:?} is not a valid HTTP header name"));
    }
    let mut secret = |key: &str, value: &str| {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        if value.len() < 16 {
            problems.push(format!("{key}: too short ({} characters); use at least 16 random characters", value.len()));
        }
        Some(Secret::new(value))
    };
    let api_key = secret("auth.api_key", &raw.auth.api_key);
    let admin_token = secret("auth.admin_token", &raw.auth.admin_token);

    let a = &raw.autoban;
    let max_failures = ranged(&mut problems, "autoban.max_failures", a.max_failures, 1..=1000);
    let ipv4_prefix = ranged(&mut problems, "autoban.ipv4_prefix", a.ipv4_prefix, 8..=32);
    let ipv6_prefix = ranged(&mut problems, "autoban.ipv6_prefix", a.ipv6_prefix, 16..=128);
    let max_tracked =
        ranged(&mut problems, "autoban.max_tracked_sources", a.max_tracked_sources, 1_000..=1_000_000_000);
    let max_events = ranged(&mut problems, "events.max_count", raw.events.max_count, 1_000..=100_000_000);
    let max_event_bytes = ranged(&mut problems, "events.max_bytes", raw.events.max_bytes, 1 << 20..=1 << 40);
    const DAY: u64 = 24 * 3600;
    let window = duration(&mut problems, "autoban.window", &a.window, Duration::from_secs(30 * DAY));
    let ban_for = duration(&mut problems, "autoban.ban_for", &a.ban_for, Duration::from_secs(366 * DAY));
    let escalation_within =
        duration(&mut problems, "autoban.escalation_within", &a.escalation_within, Duration::from_secs(366 * DAY));
    let max_ban = duration(&mut problems, "autoban.max_ban", &a.max_ban, Duration::from_secs(3660 * DAY));
    if !(1.0..=100.0).contains(&a.escalation_factor) {
        problems.push(format!(
            "autoban.escalation_factor: {} is outside 1.0..=100.0 (1.0 turns escalation off)",
            a.escalation_factor
        ));
    }
    let sp = &raw.stale_passwords;
    let stale_after = ranged(&mut problems, "stale_passwords.after", sp.after, 2..=1000);
    let quarantine_for =
        duration(&mut problems, "stale_passwords.quarantine_for", &sp.quarantine_for, Duration::from_secs(30 * DAY));
    let ap = &raw.account_protection;
    let attack_sources = ranged(&mut problems, "account_protection.sources", ap.sources, 2..=10_000);
    let known_per_account =
        ranged(&mut problems, "account_protection.known_per_account", ap.known_per_account, 1..=1000);
    let max_accounts =
        ranged(&mut problems, "account_protection.max_tracked_accounts", ap.max_tracked_accounts, 100..=100_000_000);
    let attack_window = duration(&mut problems, "account_protection.window", &ap.window, Duration::from_secs(7 * DAY));
    let known_for =
        duration(&mut problems, "account_protection.known_for", &ap.known_for, Duration::from_secs(3660 * DAY));
    let attack_delay = duration(&mut problems, "account_protection.delay", &ap.delay, Duration::from_secs(29));
    let response = match ap.action.trim() {
        "delay" => attack_delay.map(|d| AttackResponse::Delay(u32::try_from(d.as_secs()).unwrap_or(29))),
        "reject" => Some(AttackResponse::Reject),
        other => {
            problems.push(format!("account_protection.action: {other:?} is neither \"delay\" nor \"reject\""));
            None
        }
    };
    let store = store_settings(&mut problems, &raw.store);
    let events_age = duration(&mut problems, "events.max_age", &raw.events.max_age, Duration::from_secs(3660 * DAY));
    let geoip_every = duration(&mut problems, "geoip.check_every", &raw.geoip.check_every, Duration::from_secs(DAY));

    let public_listen = match raw.server.public_listen.trim() {
        "" => None,
        text => match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(format!("server.public_listen: {text:?} is not an address and port such as \"0.0.0.0:8182\" (leave it empty to turn the page off)"));
                None
            }
        },
    };
    let mut trusted_proxies = Vec::new();
    for (i, entry) in raw.server.trusted_proxies.iter().enumerate() {
        match parse_network(entry) {
            Ok(net) => trusted_proxies.push(net),
            Err(e) => problems.push(format!("server.trusted_proxies[{i}]: {e}")),
        }
    }
    let client_timeout =
        duration(&mut problems, "server.client_timeout", &raw.server.client_timeout, Duration::from_secs(300));
    let max_connections = ranged(&mut problems, "server.max_connections", raw.server.max_connections, 16..=1_000_000);
    let ss = &raw.self_service;
    let max_requests =
        ranged(&mut problems, "self_service.max_requests_per_minute", ss.max_requests_per_minute, 1..=100_000);
    let max_unblocks = ranged(&mut problems, "self_service.max_unblocks_per_day", ss.max_unblocks_per_day, 0..=100);
    let difficulty = ranged(&mut problems, "self_service.difficulty", ss.difficulty, 1_000..=10_000_000);
    let challenge_expires =
        duration(&mut problems, "self_service.challenge_expires", &ss.challenge_expires, Duration::from_secs(3600));
    let mut text = crate::selfservice::default_texts();
    for (key, value) in &ss.text {
        if !text.contains_key(key) {
            let known: Vec<&String> = text.keys().collect();
            problems.push(format!("self_service.text.{key}: not a text of the page; the texts are {known:?}"));
        } else if value.chars().any(char::is_control) {
            problems.push(format!("self_service.text.{key}: must be one line"));
        } else {
            text.insert(key.clone(), value.clone());
        }
    }

    let mut networks = FileNetworks::default();
    for (key, entries, list) in [
        ("networks.trusted", &raw.networks.trusted, &mut networks.trusted),
        ("networks.blocked", &raw.networks.blocked, &mut networks.blocked),
        ("networks.webmail", &raw.networks.webmail, &mut networks.webmail),
    ] {
        for (i, entry) in entries.iter().enumerate() {
            match parse_network(entry) {
                Ok(net) if list.contains(&net) => problems.push(format!("{key}[{i}]: {net} is listed twice")),
                Ok(net) => list.push(net),
                Err(e) => problems.push(format!("{key}[{i}]: {e}")),
            }
        }
    }

    let mut mailboxes = Vec::new();
    let mut keys: Vec<&String> = raw.mailboxes.keys().collect();
    keys.sort();
    for written in keys {
        let key = match parse_key(written) {
            Ok(key) => key,
            Err(e) => {
                problems.push(format!("mailboxes.{written:?}: {e}"));
                continue;
            }
        };
        match raw.mailboxes[written].parse() {
            Ok(rule_set) => mailboxes.push(KeyedRuleSet { key, origin: RuleSetOrigin::PolicyFile, rule_set }),
            Err(e) => problems.push(format!("mailboxes.{written:?}: {e}")),
        }
    }

    let optional_path = |text: &str| (!text.trim().is_empty()).then(|| resolve(text));
    let geoip = GeoIpSettings {
        country_db: optional_path(&raw.geoip.country_db),
        asn_db: optional_path(&raw.geoip.asn_db),
        anonymous_db: optional_path(&raw.geoip.anonymous_db),
        non_residential_asns_file: optional_path(&raw.geoip.non_residential_asns_file),
        non_residential_networks_file: optional_path(&raw.geoip.non_residential_networks_file),
    };

    let mut template = |key: &str, text: &str, allowed: &[&'static str]| match Template::parse(text, allowed) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(format!("{key}: {e}"));
            None
        }
    };
    let m = &raw.messages;
    let banned = template("messages.banned", &m.banned, &["source", "until"]);
    let blocked = template("messages.blocked", &m.blocked, &["source"]);
    let firewall_rule = template("messages.firewall_rule", &m.firewall_rule, &["rule", "login"]);
    let firewall_default = template("messages.firewall_default", &m.firewall_default, &["login"]);
    let stale_password = template("messages.stale_password", &m.stale_password, &["login"]);
    let account_under_attack = template("messages.account_under_attack", &m.account_under_attack, &["login"]);
    let store_unavailable = template("messages.store_unavailable", &m.store_unavailable, &[]);

    let format = match raw.log.format.trim() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            problems.push(format!("log.format: {other:?} is neither \"text\" nor \"json\""));
            None
        }
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(raw.log.level.trim()) {
        problems.push(format!(
            "log.level: {:?} is not a level such as \"info\" or \"mailwarden=debug\": {e}",
            raw.log.level
        ));
    }

    // Every value above is Some unless a problem was recorded for it.
    let build = || -> Option<Policy> {
        Some(Policy {
            server: ServerSettings {
                policy_listen: policy_listen?,
                admin_listen: admin_listen?,
                state_dir,
                max_body_bytes: raw.server.max_body_bytes,
                reload_on_change: raw.server.reload_on_change,
                public_listen,
                trusted_proxies,
                client_timeout: client_timeout?,
                max_connections: usize::try_from(max_connections?).ok()?,
            },
            self_service: SelfService {
                max_unblocks_per_day: u32::try_from(max_unblocks?).ok()?,
                max_requests_per_minute: u32::try_from(max_requests?).ok()?,
                difficulty: u64::try_from(difficulty?).ok()?,
                challenge_expires: challenge_expires?,
                provider_name: raw.self_service.provider_name.trim().to_string(),
                support_contact: raw.self_service.support_contact.trim().to_string(),
                text,
            },
            auth: AuthSettings { api_key, api_key_header: header, admin_token },
            autoban: Autoban {
                max_failures: u32::try_from(max_failures?).ok()?,
                window: window?,
                ban_for: ban_for?,
                grouping: SourceGrouping {
                    ipv4_prefix: u8::try_from(ipv4_prefix?).ok()?,
                    ipv6_prefix: u8::try_from(ipv6_prefix?).ok()?,
                },
                max_tracked_sources: u64::try_from(max_tracked?).ok()?,
                escalation_factor: a.escalation_factor,
                escalation_within: escalation_within?,
                max_ban: max_ban?,
                unknown_accounts_count_double: a.unknown_accounts_count_double,
            },
            stale_passwords: StalePasswords {
                enabled: sp.enabled,
                after: u32::try_from(stale_after?).ok()?,
                quarantine_for: quarantine_for?,
            },
            account_protection: AccountProtection {
                enabled: ap.enabled,
                sources: u32::try_from(attack_sources?).ok()?,
                window: attack_window?,
                response: response?,
                known_for: known_for?,
                known_per_account: usize::try_from(known_per_account?).ok()?,
                max_tracked_accounts: u64::try_from(max_accounts?).ok()?,
            },
            networks,
            mailboxes,
            geoip,
            geoip_check_every: geoip_every?,
            events: Retention {
                max_age: events_age?,
                max_count: usize::try_from(max_events?).ok()?,
                max_bytes: u64::try_from(max_event_bytes?).ok()?,
            },
            messages: Messages {
                banned: banned?,
                blocked: blocked?,
                firewall_rule: firewall_rule?,
                firewall_default: firewall_default?,
                stale_password: stale_password?,
                account_under_attack: account_under_attack?,
                store_unavailable: store_unavailable?,
            },
            log: LogSettings { level: raw.log.level.trim().to_string(), format: format? },
            store: store?,
        })
    };
    match build() {
        Some(policy) if problems.is_empty() => Ok(policy),
        _ => Err(problems),
    }
}

/// `[store]`: the backend, and for Redis where it is and how long a call may take.
fn store_settings(problems: &mut Vec<String>, raw: &RawStore) -> Option<StoreSettings> {
    let timeout =
        duration_within(problems, "store.timeout", &raw.timeout, Duration::from_millis(1), Duration::from_secs(1));
    let refresh_every = duration(problems, "store.refresh_every", &raw.refresh_every, Duration::from_secs(3600));
    let on_store_error = match raw.on_store_error.trim() {
        "local" => Some(OnStoreError::Local),
        "reject" => Some(OnStoreError::Reject),
        other => {
            problems.push(format!("store.on_store_error: {other:?} is neither \"local\" nor \"reject\""));
            None
        }
    };
    let url = raw.url.trim();
    let cluster: Vec<&str> = raw.cluster_urls.iter().map(|u| u.trim()).collect();
    let mut check_url = |key: String, url: &str| {
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://") || scheme != "redis" {
            let shown = mask_url(url);
            let hint = if scheme == "rediss" {
                "TLS to Redis is not built in; reach Redis over a private network or a TLS tunnel (stunnel)"
            } else {
                "write it as redis://host:port/db or redis://:password@host:port"
            };
            problems.push(format!("{key}: {shown:?} is not a Redis URL; {hint}"));
        }
    };
    let backend = match raw.backend.trim() {
        "embedded" => {
            if !url.is_empty() || !cluster.is_empty() {
                problems.push(
                    "store.backend: \"embedded\" does not use store.url or store.cluster_urls; set backend = \"redis\" to share state through Redis".into(),
                );
            }
            Some(StoreBackend::Embedded)
        }
        "redis" => {
            match (url.is_empty(), cluster.is_empty()) {
                (true, true) => problems.push(
                    "store.url: backend = \"redis\" needs the server's URL (or store.cluster_urls for a Redis Cluster)"
                        .into(),
                ),
                (false, false) => problems.push(
                    "store.cluster_urls: give either store.url (one server) or store.cluster_urls, not both".into(),
                ),
                (false, true) => check_url("store.url".into(), url),
                (true, false) => {
                    for (i, node) in cluster.iter().enumerate() {
                        check_url(format!("store.cluster_urls[{i}]"), node);
                    }
                }
            }
            let prefix = raw.prefix.trim();
            if prefix.is_empty() || prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(format!(
                    "store.prefix: {prefix:?} must be 1 to 64 characters without spaces, such as \"mailwarden:\""
                ));
            }
            let urls: Vec<String> = if cluster.is_empty() {
                vec![url.to_string()]
            } else {
                cluster.iter().map(|u| u.to_string()).collect()
            };
            timeout.map(|budget| {
                StoreBackend::Redis(RedisSettings {
                    urls,
                    cluster: !cluster.is_empty(),
                    prefix: prefix.to_string(),
                    budget,
                })
            })
        }
        other => {
            problems.push(format!("store.backend: {other:?} is neither \"embedded\" nor \"redis\""));
            None
        }
    };
    Some(StoreSettings { backend: backend?, on_store_error: on_store_error?, refresh_every: refresh_every? })
}

fn ranged(problems: &mut Vec<String>, key: &str, value: i64, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if range.contains(&value) {
        Some(value)
    } else {
        problems.push(format!("{key}: {value} is outside {}..={}", range.start(), range.end()));
        None
    }
}

fn duration(problems: &mut Vec<String>, key: &str, text: &str, max: Duration) -> Option<Duration> {
    duration_within(problems, key, text, Duration::from_secs(1), max)
}

fn duration_within(
    problems: &mut Vec<String>,
    key: &str,
    text: &str,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= min && d <= max => Some(d),
        Ok(_) => {
            let (min, max) = (humantime::format_duration(min), humantime::format_duration(max));
            problems.push(format!("{key}: {text:?} is outside {min}..={max}"));
            None
        }
        Err(e) => {
            problems.push(format!("{key}: {text:?} is not a duration such as \"20m\" or \"1h 30m\" ({e})"));
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
        let environment = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Policy::load_from(ConfigSource { path: file.path(), environment: Some(environment) })
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
        assert_eq!(policy.autoban.grouping, SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 });
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
                ("MAILWARDEN__NETWORKS__TRUSTED", "192.0.2.0/24,2001:db8::/32"),
            ],
        )
        .expect("valid");
        assert_eq!(policy.autoban.max_failures, 3);
        assert!(policy.auth.api_key.as_ref().is_some_and(|k| k.matches(b"env-key-0123456789")));
        assert_eq!(policy.networks.trusted.len(), 2);
    }

    #[test]
    fn errors_name_the_key_and_all_are_reported_together() {
        let text = problems(
            "[autoban]\nwindow = \"20x\"\nmax_failures = 0\n[networks]\nblocked = [\"10.0.0.0/8\", \"nonsense\"]\n",
        );
        assert!(text.contains("autoban.window: \"20x\" is not a duration"), "{text}");
        assert!(text.contains("autoban.max_failures: 0 is outside 1..=1000"), "{text}");
        assert!(text.contains("networks.blocked[1]: \"nonsense\" is not an IP address or network"), "{text}");
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
        assert!(text.contains("messages.banned: unknown placeholder {when}"), "{text}");
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

    #[test]
    fn the_store_is_embedded_unless_redis_is_named_with_a_url() {
        let policy = load("", &[]).expect("defaults are valid");
        assert_eq!(policy.store.backend, StoreBackend::Embedded);
        assert_eq!(policy.store.on_store_error, OnStoreError::Local);

        let policy = load("[store]\nbackend = \"redis\"\nurl = \"redis://:hunter2hunter2@10.0.0.5:6379/2\"\n", &[])
            .expect("valid");
        let StoreBackend::Redis(redis) = &policy.store.backend else { panic!("redis expected") };
        assert_eq!(redis.urls, ["redis://:hunter2hunter2@10.0.0.5:6379/2"]);
        assert!(!redis.cluster);
        assert_eq!(redis.prefix, "mailwarden:");
        assert_eq!(redis.budget, Duration::from_millis(50));
        let shown = policy.describe();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("url = \"redis://:***@10.0.0.5:6379/2\""), "{shown}");

        let env = [
            ("MAILWARDEN__STORE__BACKEND", "redis"),
            ("MAILWARDEN__STORE__CLUSTER_URLS", "redis://a:7000,redis://b:7001"),
        ];
        let policy = load("", &env).expect("valid");
        let StoreBackend::Redis(redis) = &policy.store.backend else { panic!("redis expected") };
        assert_eq!(redis.urls, ["redis://a:7000", "redis://b:7001"]);
        assert!(redis.cluster);
    }

    #[test]
    fn store_mistakes_are_named() {
        assert!(problems("[store]\nbackend = \"redis\"\n").contains("store.url: backend = \"redis\" needs"));
        assert!(problems("[store]\nbackend = \"etcd\"\n").contains("store.backend: \"etcd\" is neither"));
        assert!(problems("[store]\nurl = \"redis://x\"\n").contains("store.backend: \"embedded\" does not use"));
        let tls = problems("[store]\nbackend = \"redis\"\nurl = \"rediss://:pw-secret@x:6380\"\n");
        assert!(tls.contains("store.url: \"rediss://:***@x:6380\" is not a Redis URL; TLS"), "{tls}");
        assert!(!tls.contains("pw-secret"));
        let both = "[store]\nbackend = \"redis\"\nurl = \"redis://x\"\ncluster_urls = [\"redis://y\"]\n";
        assert!(problems(both).contains("store.cluster_urls: give either"));
        assert!(problems("[store]\ntimeout = \"5s\"\n").contains("store.timeout: \"5s\" is outside 1ms..=1s"));
        assert!(problems("[store]\non_store_error = \"panic\"\n").contains("store.on_store_error: \"panic\""));
        assert!(
            problems("[store]\nbackend = \"redis\"\nurl = \"redis://x\"\nprefix = \"a b\"\n").contains("store.prefix")
        );
    }
}
