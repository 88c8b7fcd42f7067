//! policy.toml in two stages. `source` checks the file (plus `MAILWARDEN__SECTION__KEY`
//! environment overrides) key by key against the one table of settings (`settings`: type,
//! range, default, description, reload behaviour), strictly typed, and gives `Values`;
//! `validate` turns those into the `Policy` the server runs on, with parsed addresses,
//! networks, templates and rule sets. Every problem is reported at once, each naming its key
//! and, for the file, its line. Loading does no I/O beyond reading the file: secrets left
//! empty are resolved by `secrets`. Each domain module owns its settings type; this module
//! only assembles them and is imported by none of them.

mod settings;
mod source;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::digest::DigestSettings;
use crate::events::Retention;
use crate::firewall::{KeyedRuleSet, RuleSetOrigin, StoredRuleSet, parse_key};
use crate::geoip::GeoIpSettings;
use crate::mailer::SmtpSettings;
use crate::network::{SourceGrouping, parse_network};
use crate::nftables::NftablesSettings;
use crate::notify::webhooks::{self, WebhookSettings};
use crate::owner_mail::OwnerMailSettings;
use crate::secrets::{AuthSettings, Secret};
use crate::selfservice::SelfServiceSettings;
use crate::sessions::ConsoleSettings;
use crate::store::{RedisSettings, mask_url};
use crate::template::Template;
use crate::tls::{ClientFiles, ListenerFiles, TlsSettings};
use crate::tolerance::Toleration;

pub use settings::{Kind, Reload, SETTINGS, Setting, reference};
pub use source::{Origin, Value, Values};

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
    pub self_service: SelfServiceSettings,
    pub console: ConsoleSettings,
    /// The mailbox and domain firewall rule sets written in the file.
    pub mailboxes: Vec<KeyedRuleSet>,
    pub geoip: GeoIpSettings,
    /// How often the GeoIP files are checked for replacement.
    pub geoip_check_every: Duration,
    /// How much of the block log is kept.
    pub events: Retention,
    pub messages: Messages,
    pub log: LogSettings,
    /// `[webhooks.NAME]`: where notices are sent, in the file's order.
    pub webhooks: Vec<WebhookSettings>,
    pub owner_mail: OwnerMailSettings,
    pub digest: DigestSettings,
    pub store: StoreSettings,
    /// Enforcement at the host firewall (`[nftables]`).
    pub nftables: NftablesSettings,
    /// Which listeners speak TLS with which files, and what the CLI trusts and presents.
    pub tls: TlsSettings,
    /// Every setting's value as checked against the table, defaults filled in: what
    /// `describe` prints and what a reload compares.
    pub values: Values,
    /// The folder relative paths in the file are relative to.
    pub base_dir: PathBuf,
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
    /// Reverse proxies whose `proxy_header` names the visitor.
    pub trusted_proxies: Vec<IpNet>,
    /// The one header (lower case) the trusted proxies put the visitor's address in:
    /// `forwarded` (RFC 7239's `for=`), or any other name, read as a comma-separated list of
    /// addresses (`x-forwarded-for`, `x-real-ip`). Every other header is ignored.
    pub proxy_header: String,
    /// How long a client may take to send a request's headers, and its body: slow senders are
    /// cut off.
    pub client_timeout: Duration,
    /// Open connections each listener accepts; past it new ones wait.
    pub max_connections: usize,
    /// `server.mode = "observe"`: every decision is recorded, none enforced.
    pub observe: bool,
}

/// The `[networks]` lists as written in the file; `access` combines them with the API's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileNetworks {
    pub trusted: Vec<IpNet>,
    pub blocked: Vec<IpNet>,
    /// Blocked networks in observe mode.
    pub blocked_observe: Vec<IpNet>,
    /// Webmail servers: logins whose TCP peer (`real_remote`) is here skip the mailbox firewall.
    pub webmail: Vec<IpNet>,
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
    /// The extra guesses a source earns from its good logins (`tolerance`).
    pub toleration: Toleration,
    /// Bound on sources whose good logins are remembered.
    pub max_tolerated_sources: u64,
    /// The slow guesser: `long_max_failures` distinct guesses (0: off) within `long_window`
    /// ban the source for `long_ban_for`.
    pub long_window: Duration,
    pub long_max_failures: u32,
    pub long_ban_for: Duration,
    /// Subnet aggregation: `bans` sources of one subnet (0: off) banned within `window` ban
    /// the subnet for `ban_for`.
    pub subnets: SubnetBans,
}

/// When the bans of several sources of one subnet ban the subnet (`[autoban] subnet_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetBans {
    pub bans: u32,
    pub window: Duration,
    pub ban_for: Duration,
    /// The subnets aggregated (a /24 and a /48 by default).
    pub grouping: SourceGrouping,
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
    /// To one login refused from an established source (an IP+login refusal).
    pub login_refused: Template,
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
        let text = std::fs::read_to_string(source.path).map_err(|e| fail(format!("cannot read {origin}: {e}")))?;
        let environment = source.environment.unwrap_or_else(|| std::env::vars().collect());
        let base_dir = source.path.parent().map(Path::to_path_buf).unwrap_or_default();
        Policy::build(&text, &environment, &origin, &base_dir)
    }

    /// Validates policy text (no environment overrides); relative paths are relative to
    /// `base_dir`. For fuzzing and tools that hold the text already.
    pub fn parse_str(text: &str, base_dir: &Path) -> Result<Policy, ConfigError> {
        Policy::build(text, &HashMap::new(), "(text)", base_dir)
    }

    fn build(
        text: &str,
        environment: &HashMap<String, String>,
        origin: &str,
        base_dir: &Path,
    ) -> Result<Policy, ConfigError> {
        let mut problems = Vec::new();
        let values = source::read(text, environment, base_dir, &mut problems);
        let policy = validate(values, base_dir, &mut problems);
        match policy {
            Some(policy) if problems.is_empty() => Ok(policy),
            _ => Err(ConfigError { origin: origin.to_string(), problems }),
        }
    }

    /// This policy with the restart-only settings of `running` kept (a reload cannot apply
    /// them), and the keys that were kept. Validated again, since a kept value may conflict
    /// with a new one.
    pub fn keeping_restart_settings(self, running: &Policy) -> Result<(Policy, Vec<&'static str>), Vec<String>> {
        let mut values = self.values.clone();
        let mut kept = Vec::new();
        for setting in values.changed(&running.values) {
            if setting.reload == Reload::Restart {
                values.keep_from(&running.values, setting.key);
                kept.push(setting.key);
            }
        }
        if kept.is_empty() {
            return Ok((self, kept));
        }
        let mut problems = Vec::new();
        match validate(values, &self.base_dir, &mut problems) {
            // `[auth]` is applied live, so the secrets resolved for this policy stand.
            Some(policy) if problems.is_empty() => Ok((Policy { auth: self.auth, ..policy }, kept)),
            _ => Err(problems),
        }
    }

    /// The effective policy as TOML, from the settings table: each key with its description,
    /// secrets masked. What `check-config` prints.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for setting in SETTINGS {
            let this = settings::section_of(setting.key);
            let name = setting.key.strip_prefix(this).and_then(|k| k.strip_prefix('.'));
            if this != section {
                section = this;
                if name.is_some() {
                    let _ = writeln!(out, "\n[{this}]");
                }
            }
            let value = self.values.get(setting.key);
            match (name, value) {
                (None, Value::Tree(_)) if setting.kind == Kind::Webhooks => self.describe_webhooks(&mut out),
                (None, Value::Tree(_)) => self.describe_rule_sets(&mut out),
                (Some(name), Value::TextTable(table)) => {
                    let _ = writeln!(out, "# {}", setting.description);
                    let _ = writeln!(out, "[{}]", setting.key);
                    for (text_key, text) in table {
                        let _ = writeln!(out, "{text_key} = {}", quote(text));
                    }
                    let _ = name;
                }
                (Some(name), value) => {
                    let _ = writeln!(out, "# {}", setting.description);
                    let shown = match (setting.kind, value) {
                        (Kind::Secret, Value::Text(text)) if text.trim().is_empty() => {
                            quote("(generated into state_dir on first start)")
                        }
                        (Kind::Secret, _) => quote("********"),
                        (Kind::Password, Value::Text(text)) if text.is_empty() => quote(""),
                        (Kind::Password, _) => quote("********"),
                        (_, value) if setting.key == "store.url" || setting.key == "store.cluster_urls" => {
                            show_value(&masked_urls(value))
                        }
                        (_, value) => show_value(value),
                    };
                    let _ = writeln!(out, "{name} = {shown}");
                }
                (None, _) => {}
            }
        }
        out
    }

    /// Each endpoint with its secret masked.
    fn describe_webhooks(&self, out: &mut String) {
        for endpoint in &self.webhooks {
            let _ = writeln!(out, "\n[webhooks.{}]", endpoint.name);
            let _ = writeln!(out, "url = {}", quote(&mask_url(&endpoint.url)));
            let _ = writeln!(out, "secret = {}", quote("********"));
            let events: Vec<String> = endpoint.events.iter().map(|k| quote(k.label())).collect();
            let _ = writeln!(out, "events = [{}]", events.join(", "));
            for (key, value) in [
                ("timeout", endpoint.timeout),
                ("first_retry", endpoint.first_retry),
                ("max_retry_interval", endpoint.max_retry_interval),
                ("deadline", endpoint.deadline),
            ] {
                let _ = writeln!(out, "{key} = {}", quote(&humantime::format_duration(value).to_string()));
            }
            let _ = writeln!(out, "max_queued = {}", endpoint.max_queued);
        }
    }

    fn describe_rule_sets(&self, out: &mut String) {
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
    }
}

/// RFC 9110's token characters: anything else could never arrive as a header name.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn quote(text: &str) -> String {
    format!("{text:?}")
}

/// A value as TOML.
fn show_value(value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::Integer(n) => n.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Duration(d) => quote(&humantime::format_duration(*d).to_string()),
        Value::Text(text) => quote(text),
        Value::List(items) => format!("[{}]", items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(", ")),
        Value::TextTable(_) | Value::Tree(_) => String::new(),
    }
}

fn masked_urls(value: &Value) -> Value {
    match value {
        Value::Text(url) => Value::Text(mask_url(url)),
        Value::List(urls) => Value::List(urls.iter().map(|u| mask_url(u)).collect()),
        other => other.clone(),
    }
}

/// A name `nft` takes unquoted: a letter, then letters, digits and underscores.
fn is_nft_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 200
}

/// `[nftables]`: the names `nft` will see and the guarded ports.
fn nftables_settings(v: &Values, problem: &mut impl FnMut(&str, String)) -> NftablesSettings {
    for key in ["nftables.table", "nftables.set"] {
        if !is_nft_name(v.text(key)) {
            problem(key, format!("{:?} is not an nftables name (a letter, then letters, digits or _)", v.text(key)));
        }
    }
    let mut ports = Vec::new();
    for (i, port) in v.list("nftables.ports").iter().enumerate() {
        match port.trim().parse::<u16>() {
            Ok(port) if port > 0 && !ports.contains(&port) => ports.push(port),
            Ok(port) if port > 0 => problem(&format!("nftables.ports[{i}]"), format!("{port} is listed twice")),
            _ => problem(&format!("nftables.ports[{i}]"), format!("{port:?} is not a TCP port (1 to 65535)")),
        }
    }
    NftablesSettings {
        enabled: v.bool("nftables.enabled"),
        table: v.text("nftables.table").to_string(),
        set: v.text("nftables.set").to_string(),
        ports,
        resync_every: v.duration("nftables.resync_every"),
    }
}

/// Stage two: the checked values into a `Policy`. Records a problem for every value that is
/// well typed but still wrong (an address that does not parse, a template with an unknown
/// placeholder, two settings that contradict each other); `None` when any was found.
fn validate(values: Values, base_dir: &Path, problems: &mut Vec<String>) -> Option<Policy> {
    let v = &values;
    let mut problem = |key: &str, message: String| problems.push(format!("{key}: {message}{}", v.at(key)));
    // Paths are made absolute by `source`.
    let resolve = |text: &str| PathBuf::from(text.trim());

    let mut listen = |key: &str, example: &str| match v.text(key).parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problem(key, format!("{:?} is not an address and port such as {example:?}", v.text(key)));
            None
        }
    };
    let policy_listen = listen("server.policy_listen", "127.0.0.1:8180");
    let admin_listen = listen("server.admin_listen", "127.0.0.1:8181");
    let public_listen = if v.text("server.public_listen").is_empty() {
        Some(None)
    } else {
        listen("server.public_listen", "0.0.0.0:8182").map(Some)
    };
    if let (Some(p), Some(a)) = (policy_listen, admin_listen) {
        if p == a && p.port() != 0 {
            problem("server.admin_listen", format!("{a} is also server.policy_listen; they must differ"));
        }
    }
    if v.text("server.state_dir").is_empty() {
        problem("server.state_dir", "must not be empty".into());
    }
    let state_dir = resolve(v.text("server.state_dir"));

    let header = v.text("auth.api_key_header").to_string();
    if !is_header_name(&header) {
        problem("auth.api_key_header", format!("{header:?} is not a valid HTTP header name"));
    }
    let proxy_header = v.text("server.proxy_header").to_ascii_lowercase();
    if !is_header_name(&proxy_header) {
        problem(
            "server.proxy_header",
            format!(
                "{:?} is not a header name (e.g. \"x-forwarded-for\", \"forwarded\" or \"x-real-ip\")",
                v.text("server.proxy_header")
            ),
        );
    }
    let mut secret = |key: &str| {
        let value = v.text(key);
        if value.is_empty() {
            return None;
        }
        if value.len() < 16 {
            problem(key, format!("too short ({} characters); use at least 16 random characters", value.len()));
        }
        Some(Secret::new(value))
    };
    let api_key = secret("auth.api_key");
    let admin_token = secret("auth.admin_token");

    let mut networks = |key: &str, refuse_repeats: bool| {
        let mut list: Vec<IpNet> = Vec::new();
        for (i, entry) in v.list(key).iter().enumerate() {
            match parse_network(entry) {
                Ok(net) if refuse_repeats && list.contains(&net) => {
                    problem(&format!("{key}[{i}]"), format!("{net} is listed twice"))
                }
                Ok(net) => list.push(net),
                Err(e) => problem(&format!("{key}[{i}]"), e.to_string()),
            }
        }
        list
    };
    let trusted_proxies = networks("server.trusted_proxies", false);
    let file_networks = FileNetworks {
        trusted: networks("networks.trusted", true),
        blocked: networks("networks.blocked", true),
        blocked_observe: networks("networks.blocked_observe", true),
        webmail: networks("networks.webmail", true),
    };

    for net in file_networks.blocked_observe.iter().filter(|net| file_networks.blocked.contains(net)) {
        problem("networks.blocked_observe", format!("{net} is also in networks.blocked; keep it in one of the two"));
    }

    let response = match v.text("account_protection.action") {
        "reject" => AttackResponse::Reject,
        _ => AttackResponse::Delay(u32::try_from(v.duration("account_protection.delay").as_secs()).unwrap_or(29)),
    };

    let mut text = crate::selfservice::default_texts();
    for (key, value) in v.text_table("self_service.text").into_iter().flatten() {
        if !text.contains_key(key) {
            let known: Vec<&String> = text.keys().collect();
            problem(&format!("self_service.text.{key}"), format!("not a text of the page; the texts are {known:?}"));
        } else if value.chars().any(char::is_control) {
            problem(&format!("self_service.text.{key}"), "must be one line".into());
        } else {
            text.insert(key.clone(), value.clone());
        }
    }

    let smtp = smtp_settings(&v, &mut problem);
    let owner_mail = owner_mail_settings(&v, &mut problem, &text, &smtp);
    let digest = digest_settings(&v, &mut problem, &smtp);

    let mut mailboxes = Vec::new();
    // Keys are compared as logins are (`login::key`): two spellings of one mailbox would leave
    // one of the two rule sets silently unused.
    let mut spellings: HashMap<String, &str> = HashMap::new();
    for (written, given) in v.tree("mailboxes").into_iter().flatten() {
        let key = match parse_key(written) {
            Ok(key) => key,
            Err(e) => {
                problem(&format!("mailboxes.{written:?}"), e.to_string());
                continue;
            }
        };
        if let Some(first) = spellings.insert(key.clone(), written) {
            problem(
                &format!("mailboxes.{written:?}"),
                format!("the same mailbox as mailboxes.{first:?} (mailboxes are compared without case); keep one"),
            );
            continue;
        }
        let stored: StoredRuleSet = match serde_path_to_error::deserialize(given.clone()) {
            Ok(stored) => stored,
            Err(e) => {
                let path = e.path().to_string();
                let at = if path.is_empty() || path == "." { String::new() } else { format!(".{path}") };
                problem(&format!("mailboxes.{written:?}{at}"), e.into_inner().to_string());
                continue;
            }
        };
        match stored.parse() {
            Ok(rule_set) => mailboxes.push(KeyedRuleSet { key, origin: RuleSetOrigin::PolicyFile, rule_set }),
            Err(e) => problem(&format!("mailboxes.{written:?}"), e.to_string()),
        }
    }

    let mut endpoints = Vec::new();
    for (name, given) in v.tree("webhooks").into_iter().flatten() {
        match webhooks::parse(name, given) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(found) => {
                for (key, message) in found {
                    let at = if key.is_empty() { String::new() } else { format!(".{key}") };
                    problem(&format!("webhooks.{name:?}{at}"), message);
                }
            }
        }
    }

    let optional_path = |key: &str| (!v.text(key).is_empty()).then(|| resolve(v.text(key)));
    let geoip = GeoIpSettings {
        country_db: optional_path("geoip.country_db"),
        asn_db: optional_path("geoip.asn_db"),
        anonymous_db: optional_path("geoip.anonymous_db"),
        non_residential_asns_file: optional_path("geoip.non_residential_asns_file"),
        non_residential_networks_file: optional_path("geoip.non_residential_networks_file"),
    };

    let mut template = |key: &str| {
        let allowed = match settings::find(key).map(|s| s.kind) {
            Some(Kind::Template(allowed)) => allowed,
            _ => &[],
        };
        match Template::parse(v.get(key).as_text(), allowed) {
            Ok(t) => Some(t),
            Err(e) => {
                problem(key, e.to_string());
                None
            }
        }
    };
    let messages = (|| {
        Some(Messages {
            banned: template("messages.banned")?,
            login_refused: template("messages.login_refused")?,
            blocked: template("messages.blocked")?,
            firewall_rule: template("messages.firewall_rule")?,
            firewall_default: template("messages.firewall_default")?,
            stale_password: template("messages.stale_password")?,
            account_under_attack: template("messages.account_under_attack")?,
            store_unavailable: template("messages.store_unavailable")?,
        })
    })();

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(v.text("log.level")) {
        problem(
            "log.level",
            format!("{:?} is not a level such as \"info\" or \"mailwarden=debug\": {e}", v.text("log.level")),
        );
    }
    let format = if v.text("log.format") == "json" { LogFormat::Json } else { LogFormat::Text };
    let store = store_settings(v, &mut problem);
    let nftables = nftables_settings(v, &mut problem);
    let tls = tls_settings(v, &mut problem);

    let count = |key: &str| usize::try_from(v.integer(key)).unwrap_or(usize::MAX);
    let small = |key: &str| u32::try_from(v.integer(key)).unwrap_or(u32::MAX);
    let wide = |key: &str| u64::try_from(v.integer(key)).unwrap_or(u64::MAX);
    let prefix = |key: &str| u8::try_from(v.integer(key)).unwrap_or(u8::MAX);
    let policy = Policy {
        server: ServerSettings {
            policy_listen: policy_listen?,
            admin_listen: admin_listen?,
            state_dir,
            max_body_bytes: count("server.max_body_bytes"),
            reload_on_change: v.bool("server.reload_on_change"),
            public_listen: public_listen?,
            trusted_proxies,
            proxy_header,
            client_timeout: v.duration("server.client_timeout"),
            max_connections: count("server.max_connections"),
            observe: v.text("server.mode") == "observe",
        },
        owner_mail,
        digest,
        self_service: SelfServiceSettings {
            max_unblocks_per_day: small("self_service.max_unblocks_per_day"),
            max_requests_per_minute: small("self_service.max_requests_per_minute"),
            difficulty: wide("self_service.difficulty"),
            challenge_expires: v.duration("self_service.challenge_expires"),
            provider_name: v.text("self_service.provider_name").to_string(),
            support_contact: v.text("self_service.support_contact").to_string(),
            text,
        },
        console: ConsoleSettings {
            enabled: v.bool("console.enabled"),
            idle_timeout: v.duration("console.idle_timeout"),
            secure_cookie: v.bool("console.secure_cookie"),
        },
        auth: AuthSettings { api_key, api_key_header: header, admin_token },
        tls,
        autoban: Autoban {
            max_failures: small("autoban.max_failures"),
            window: v.duration("autoban.window"),
            ban_for: v.duration("autoban.ban_for"),
            grouping: SourceGrouping {
                ipv4_prefix: prefix("autoban.ipv4_prefix"),
                ipv6_prefix: prefix("autoban.ipv6_prefix"),
            },
            max_tracked_sources: wide("autoban.max_tracked_sources"),
            escalation_factor: v.float("autoban.escalation_factor"),
            escalation_within: v.duration("autoban.escalation_within"),
            max_ban: v.duration("autoban.max_ban"),
            unknown_accounts_count_double: v.bool("autoban.unknown_accounts_count_double"),
            toleration: Toleration {
                per_account: small("autoban.tolerance_per_account"),
                max: small("autoban.max_tolerance"),
                window: v.duration("autoban.tolerance_window"),
            },
            max_tolerated_sources: wide("autoban.max_tolerated_sources"),
            long_window: v.duration("autoban.long_window"),
            long_max_failures: small("autoban.long_max_failures"),
            long_ban_for: v.duration("autoban.long_ban_for"),
            subnets: SubnetBans {
                bans: small("autoban.subnet_bans"),
                window: v.duration("autoban.subnet_window"),
                ban_for: v.duration("autoban.subnet_ban_for"),
                grouping: SourceGrouping {
                    ipv4_prefix: prefix("autoban.subnet_ipv4_prefix"),
                    ipv6_prefix: prefix("autoban.subnet_ipv6_prefix"),
                },
            },
        },
        stale_passwords: StalePasswords {
            enabled: v.bool("stale_passwords.enabled"),
            after: small("stale_passwords.after"),
            quarantine_for: v.duration("stale_passwords.quarantine_for"),
        },
        account_protection: AccountProtection {
            enabled: v.bool("account_protection.enabled"),
            sources: small("account_protection.sources"),
            window: v.duration("account_protection.window"),
            response,
            known_for: v.duration("account_protection.known_for"),
            known_per_account: count("account_protection.known_per_account"),
            max_tracked_accounts: wide("account_protection.max_tracked_accounts"),
        },
        networks: file_networks,
        mailboxes,
        geoip,
        geoip_check_every: v.duration("geoip.check_every"),
        events: Retention {
            max_age: v.duration("events.max_age"),
            max_count: count("events.max_count"),
            max_bytes: wide("events.max_bytes"),
        },
        messages: messages?,
        log: LogSettings { level: v.text("log.level").to_string(), format },
        store: store?,
        webhooks: endpoints,
        nftables,
        base_dir: base_dir.to_path_buf(),
        values,
    };
    Some(policy)
}

/// `[tls]`: a listener speaks TLS when its certificate is named, and then needs its key (and
/// the other way round); the files themselves are read by `tls` when the server starts or
/// reloads, and by the CLI.
fn tls_settings(v: &Values, problem: &mut impl FnMut(&str, String)) -> TlsSettings {
    let path = |key: &str| Some(v.text(key).trim()).filter(|t| !t.is_empty()).map(PathBuf::from);
    let mut pair = |first: &str, second: &str| match (path(first), path(second)) {
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        (Some(_), None) => {
            problem(second, format!("{first} is set, so this must name its PEM private key"));
            None
        }
        (None, Some(_)) => {
            problem(first, format!("{second} is set, so this must name the PEM certificate it goes with"));
            None
        }
    };
    let listener = |(cert, key): (PathBuf, PathBuf)| ListenerFiles { cert, key, client_ca: None };
    let policy = pair("tls.policy_cert", "tls.policy_key").map(listener);
    let mut admin = pair("tls.admin_cert", "tls.admin_key").map(listener);
    let public = pair("tls.public_cert", "tls.public_key").map(listener);
    let cert_and_key = pair("tls.cli_cert", "tls.cli_key");
    if let Some(ca) = path("tls.admin_client_ca") {
        match admin.as_mut() {
            Some(admin) => admin.client_ca = Some(ca),
            None => problem(
                "tls.admin_client_ca",
                "client certificates need TLS on the admin listener: set tls.admin_cert and tls.admin_key".into(),
            ),
        }
    }
    TlsSettings { policy, admin, public, client: ClientFiles { ca: path("tls.cli_ca"), cert_and_key } }
}

/// `[store]`: the backend, and for Redis where it is and how long a call may take.
fn store_settings(v: &Values, problem: &mut impl FnMut(&str, String)) -> Option<StoreSettings> {
    let on_store_error =
        if v.text("store.on_store_error") == "reject" { OnStoreError::Reject } else { OnStoreError::Local };
    let url = v.text("store.url");
    let cluster: Vec<&str> = v.list("store.cluster_urls").iter().map(|u| u.trim()).collect();
    let mut schemes = Vec::new();
    let mut check_url = |key: String, url: &str| {
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://") || !matches!(scheme, "redis" | "rediss") {
            let shown = mask_url(url);
            problem(
                &key,
                format!(
                    "{shown:?} is not a Redis URL; write it as redis://host:port/db or redis://:password@host:port (rediss:// for TLS)"
                ),
            );
        } else {
            schemes.push(scheme.to_string());
        }
    };
    let backend = match v.text("store.backend") {
        "redis" => {
            match (url.is_empty(), cluster.is_empty()) {
                (true, true) => problem(
                    "store.url",
                    "backend = \"redis\" needs the server's URL (or store.cluster_urls for a Redis Cluster)".into(),
                ),
                (false, false) => problem(
                    "store.cluster_urls",
                    "give either store.url (one server) or store.cluster_urls, not both".into(),
                ),
                (false, true) => check_url("store.url".into(), url),
                (true, false) => {
                    for (i, node) in cluster.iter().enumerate() {
                        check_url(format!("store.cluster_urls[{i}]"), node);
                    }
                }
            }
            let tls = schemes.iter().any(|s| s == "rediss");
            if tls && schemes.iter().any(|s| s == "redis") {
                problem(
                    "store.cluster_urls",
                    "mixes redis:// and rediss://; every node is reached the same way".into(),
                );
            }
            let ca_file = Some(v.text("store.ca_file").trim()).filter(|t| !t.is_empty()).map(PathBuf::from);
            if ca_file.is_some() && !tls {
                problem("store.ca_file", "is only used over TLS: write the URLs as rediss://".into());
            }
            let prefix = v.text("store.prefix");
            if prefix.is_empty() || prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problem(
                    "store.prefix",
                    format!("{prefix:?} must be 1 to 64 characters without spaces, such as \"mailwarden:\""),
                );
            }
            let urls: Vec<String> = if cluster.is_empty() {
                vec![url.to_string()]
            } else {
                cluster.iter().map(|u| u.to_string()).collect()
            };
            StoreBackend::Redis(RedisSettings {
                urls,
                cluster: !cluster.is_empty(),
                prefix: prefix.to_string(),
                budget: v.duration("store.timeout"),
                ca_file,
            })
        }
        _ => {
            if !url.is_empty() || !cluster.is_empty() {
                problem(
                    "store.backend",
                    "\"embedded\" does not use store.url or store.cluster_urls; set backend = \"redis\" to share state through Redis".into(),
                );
            }
            StoreBackend::Embedded
        }
    };
    Some(StoreSettings { backend, on_store_error, refresh_every: v.duration("store.refresh_every") })
}

/// `[mail]`: the mail server and From address of every mail mailwarden sends; the From address
/// is required once any of them is on.
fn smtp_settings(v: &Values, problem: &mut impl FnMut(&str, String)) -> SmtpSettings {
    let from = v.text("mail.from").trim().to_string();
    let mailing = ["owner_mail.enabled", "digest.enabled"].into_iter().find(|key| v.bool(key));
    if let Some(key) = mailing
        && from.is_empty()
    {
        problem("mail.from", format!("required when {key} = true: the From address of mailwarden's mail"));
    }
    if !from.is_empty()
        && let Err(e) = crate::mailer::check_address(&from)
    {
        problem("mail.from", format!("{from:?} is not a mail address: {e}"));
    }
    let url = v.text("mail.smtp_url").trim().to_string();
    if let Err(e) = crate::mailer::check_url(&url) {
        problem("mail.smtp_url", format!("{url:?} is not an smtp:// or smtps:// URL: {e}"));
    }
    let password = v.text("mail.smtp_password");
    SmtpSettings {
        url,
        user: v.text("mail.smtp_user").trim().to_string(),
        password: (!password.is_empty()).then(|| Secret::new(password)),
        from,
    }
}

/// `[digest]`.
fn digest_settings(v: &Values, problem: &mut impl FnMut(&str, String), smtp: &SmtpSettings) -> DigestSettings {
    let enabled = v.bool("digest.enabled");
    let to: Vec<String> = v.list("digest.to").iter().map(|a| a.trim().to_string()).collect();
    if enabled && to.is_empty() {
        problem("digest.to", "required when digest.enabled = true: the admins' addresses".into());
    }
    for (i, address) in to.iter().enumerate() {
        if let Err(e) = crate::mailer::check_address(address) {
            problem(&format!("digest.to[{i}]"), format!("{address:?} is not a mail address: {e}"));
        }
    }
    let count = |key: &str| u32::try_from(v.integer(key)).unwrap_or(u32::MAX);
    DigestSettings {
        enabled,
        smtp: smtp.clone(),
        to,
        every: v.duration("digest.every"),
        min_bans: count("digest.min_bans"),
        min_attacks: count("digest.min_attacks"),
        min_stale_devices: count("digest.min_stale_devices"),
    }
}

/// `[owner_mail]`, with the page's provider name and support contact (`texts`: the page's).
fn owner_mail_settings(
    v: &Values,
    problem: &mut impl FnMut(&str, String),
    page_texts: &std::collections::BTreeMap<String, String>,
    smtp: &SmtpSettings,
) -> OwnerMailSettings {
    let enabled = v.bool("owner_mail.enabled");
    let recipient = v.text("owner_mail.recipient").trim().to_string();
    if !recipient.is_empty() && !recipient.contains("{login}") {
        problem(
            "owner_mail.recipient",
            format!("{recipient:?} does not contain {{login}}: every such login would get one address's mail"),
        );
    }
    let skip = v.list("owner_mail.skip").iter().map(|entry| crate::login::key(entry.trim()).into_owned()).collect();
    let mut text = crate::owner_mail::default_texts();
    for (key, value) in v.text_table("owner_mail.text").into_iter().flatten() {
        if !text.contains_key(key) {
            let known: Vec<&String> = text.keys().collect();
            problem(&format!("owner_mail.text.{key}"), format!("not a text of the notices; the texts are {known:?}"));
        } else if key.ends_with("_subject") && value.chars().any(char::is_control) {
            problem(&format!("owner_mail.text.{key}"), "a subject must be one line".into());
        } else {
            text.insert(key.clone(), value.clone());
        }
    }
    let support = v.text("self_service.support_contact");
    OwnerMailSettings {
        enabled,
        smtp: smtp.clone(),
        recipient,
        skip,
        per_device_every: v.duration("owner_mail.per_device_every"),
        text,
        provider: v.text("self_service.provider_name").to_string(),
        support: if support.is_empty() {
            page_texts.get("support_fallback").cloned().unwrap_or_default()
        } else {
            support.to_string()
        },
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
    fn two_spellings_of_one_mailbox_are_refused_naming_both() {
        let text = problems(
            "[mailboxes.\"Alice@Example.com\"]\ndefault = \"block\"\n[mailboxes.\"alice@example.com\"]\ndefault = \"allow\"\n",
        );
        assert!(
            text.contains("mailboxes.\"alice@example.com\": the same mailbox as mailboxes.\"Alice@Example.com\"")
                || text
                    .contains("mailboxes.\"Alice@Example.com\": the same mailbox as mailboxes.\"alice@example.com\""),
            "{text}"
        );
    }

    #[test]
    fn a_webhook_endpoint_is_read_with_its_filter_and_check_config_masks_its_secret() {
        let policy = load(
            "[webhooks.siem]\nurl = \"https://siem.example.com/hook\"\nsecret = \"shared-secret-0123456789\"\nevents = [\"ban_placed\"]\n",
            &[],
        )
        .expect("valid");
        assert_eq!(policy.webhooks.len(), 1);
        assert_eq!(policy.webhooks[0].name, "siem");
        assert!(policy.webhooks[0].wants(crate::notify::NoticeKind::BanPlaced));
        assert!(!policy.webhooks[0].wants(crate::notify::NoticeKind::BanLifted));
        let shown = policy.describe();
        assert!(
            shown.contains("[webhooks.siem]") && shown.contains("url = \"https://siem.example.com/hook\""),
            "{shown}"
        );
        assert!(!shown.contains("shared-secret-0123456789"), "{shown}");
    }

    #[test]
    fn a_webhook_endpoints_problems_name_its_key() {
        let text = problems("[webhooks.siem]\nurl = \"siem.example.com\"\nsecret = \"short\"\ndeadline = \"soon\"\n");
        assert!(
            text.contains("webhooks.\"siem\".url: \"siem.example.com\" is not an http:// or https:// URL"),
            "{text}"
        );
        assert!(text.contains("webhooks.\"siem\".secret: must be 16 characters or more"), "{text}");
        assert!(text.contains("webhooks.\"siem\".deadline: \"soon\" is not a duration"), "{text}");
        let text = problems(
            "[webhooks.siem]\nurl = \"http://127.0.0.1:9/\"\nsecret = \"shared-secret-0123456789\"\nretries = 3\n",
        );
        assert!(text.contains("webhooks.\"siem\"") && text.contains("retries"), "{text}");
    }

    #[test]
    fn nftables_names_and_ports_that_nft_would_refuse_are_named_by_key() {
        let text = problems(
            "[nftables]\ntable = \"mail warden\"\nset = \"1st\"\nports = [\"993\", \"imaps\", \"0\", \"993\"]\n",
        );
        assert!(text.contains("nftables.table: \"mail warden\" is not an nftables name"), "{text}");
        assert!(text.contains("nftables.set: \"1st\" is not an nftables name"), "{text}");
        assert!(text.contains("nftables.ports[1]: \"imaps\" is not a TCP port"), "{text}");
        assert!(text.contains("nftables.ports[2]: \"0\" is not a TCP port"), "{text}");
        assert!(text.contains("nftables.ports[3]: 993 is listed twice"), "{text}");
        let every_port = load("[nftables]\nenabled = true\nports = []\n", &[]).expect("valid");
        assert!(every_port.nftables.enabled && every_port.nftables.ports.is_empty());
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
    fn redis_over_tls_is_accepted_for_one_server_and_for_a_cluster_with_its_ca_file() {
        let policy = load("[store]\nbackend = \"redis\"\nurl = \"rediss://x:6380\"\nca_file = \"/etc/ca.pem\"\n", &[])
            .expect("valid");
        let StoreBackend::Redis(redis) = &policy.store.backend else { panic!("redis expected") };
        assert_eq!(redis.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        let cluster = "[store]\nbackend = \"redis\"\ncluster_urls = [\"rediss://a:7000\", \"rediss://b:7001\"]\n";
        let policy = load(cluster, &[]).expect("valid");
        let StoreBackend::Redis(redis) = &policy.store.backend else { panic!("redis expected") };
        assert!(redis.cluster && redis.ca_file.is_none());
    }

    #[test]
    fn a_listener_speaks_tls_only_with_both_its_certificate_and_its_key() {
        assert_eq!(load("", &[]).expect("defaults").tls, TlsSettings::default());
        let policy = load(
            "[tls]\npolicy_cert = \"/etc/mw/policy.pem\"\npolicy_key = \"/etc/mw/policy.key\"\n\
             admin_cert = \"a.pem\"\nadmin_key = \"a.key\"\nadmin_client_ca = \"ca.pem\"\n",
            &[],
        )
        .expect("valid");
        let files = policy.tls.policy.expect("policy listener TLS");
        assert_eq!(files.cert, Path::new("/etc/mw/policy.pem"));
        let admin = policy.tls.admin.expect("admin listener TLS");
        assert!(admin.client_ca.is_some_and(|ca| ca.is_absolute() && ca.ends_with("ca.pem")), "relative to the file");
        assert!(policy.tls.public.is_none());

        assert!(problems("[tls]\npolicy_cert = \"c.pem\"\n").contains("tls.policy_key: tls.policy_cert is set"));
        assert!(problems("[tls]\npublic_key = \"k.pem\"\n").contains("tls.public_cert: tls.public_key is set"));
        assert!(problems("[tls]\ncli_cert = \"c.pem\"\n").contains("tls.cli_key: tls.cli_cert is set"));
        let no_admin_tls = problems("[tls]\nadmin_client_ca = \"ca.pem\"\n");
        assert!(no_admin_tls.contains("tls.admin_client_ca: client certificates need TLS on the admin listener"));
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
        assert!(
            problems("[store]\nbackend = \"etcd\"\n")
                .contains("store.backend: \"etcd\" is not one of \"embedded\", \"redis\"")
        );
        assert!(problems("[store]\nurl = \"redis://x\"\n").contains("store.backend: \"embedded\" does not use"));
        let bad = problems("[store]\nbackend = \"redis\"\nurl = \"http://:pw-secret@x:6380\"\n");
        assert!(bad.contains("store.url: \"http://:***@x:6380\" is not a Redis URL"), "{bad}");
        assert!(!bad.contains("pw-secret"));
        let mixed = "[store]\nbackend = \"redis\"\ncluster_urls = [\"rediss://a:1\", \"redis://b:2\"]\n";
        assert!(problems(mixed).contains("store.cluster_urls: mixes redis:// and rediss://"));
        let plain_with_ca = "[store]\nbackend = \"redis\"\nurl = \"redis://x\"\nca_file = \"ca.pem\"\n";
        assert!(problems(plain_with_ca).contains("store.ca_file: is only used over TLS"));
        let both = "[store]\nbackend = \"redis\"\nurl = \"redis://x\"\ncluster_urls = [\"redis://y\"]\n";
        assert!(problems(both).contains("store.cluster_urls: give either"));
        assert!(problems("[store]\ntimeout = \"5s\"\n").contains("store.timeout: \"5s\" is outside 1ms..=1s"));
        assert!(problems("[store]\non_store_error = \"panic\"\n").contains("store.on_store_error: \"panic\""));
        assert!(
            problems("[store]\nbackend = \"redis\"\nurl = \"redis://x\"\nprefix = \"a b\"\n").contains("store.prefix")
        );
    }

    /// The shipped policy.toml is "the documented, working default": it names every setting
    /// with the table's default, so the file and the table cannot drift apart.
    #[test]
    fn the_shipped_policy_sets_every_key_to_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.toml");
        let text = std::fs::read_to_string(&path).expect("the shipped policy.toml");
        let mut problems = Vec::new();
        let values = source::read(&text, &HashMap::new(), Path::new("/"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let defaults = source::read("", &HashMap::new(), Path::new("/"), &mut problems);
        for setting in SETTINGS.iter().filter(|s| !matches!(s.kind, Kind::RuleSets | Kind::TextTable | Kind::Webhooks))
        {
            assert!(matches!(values.origin(setting.key), Origin::File(_)), "policy.toml does not set {}", setting.key);
            assert_eq!(
                values.get(setting.key),
                defaults.get(setting.key),
                "policy.toml's {} is not the default",
                setting.key
            );
        }
    }

    /// The README's settings table is generated from the table; `MAILWARDEN_BLESS=1 cargo test
    /// the_readme` writes it anew after a change.
    #[test]
    fn the_readme_lists_every_setting_as_the_table_describes_it() {
        crate::readme::check_generated_section(
            "<!-- settings table: generated from src/config/settings.rs -->\n",
            "<!-- end of settings table -->",
            &reference(),
            "settings table",
        );
    }
}
