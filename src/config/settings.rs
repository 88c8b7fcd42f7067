//! The one table of policy.toml's settings: every key, its type and range, its default, what
//! it is for, and what a reload does with it. The loader checks the file against it, fills in
//! its defaults, `check-config` prints from it, and the reload decides from it which changes
//! are applied live and which wait for a restart, so none of these can drift from the others.
//! A key that is not in this table is refused, from the file and from the environment.

use std::time::Duration;

/// What a key holds, and the values it may take. Checked strictly: an integer key refuses
/// `5.7` and `"5"`, a boolean refuses `"yes"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Bool,
    Integer {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    /// Written as text such as `"20m"` or `"1h 30m"`.
    Duration {
        min: Duration,
        max: Duration,
    },
    /// Free text (one line).
    Text,
    /// A file or folder; relative to the policy file's folder. Empty: none.
    Path,
    /// Text that must be one of these words.
    Choice(&'static [&'static str]),
    /// A list of texts (addresses, networks, URLs).
    List,
    /// A message sent to mail apps, with the placeholders it may use.
    Template(&'static [&'static str]),
    /// A secret: never printed. Empty means "generated into state_dir on first start".
    Secret,
    /// A password for another service: never printed. Empty means none.
    Password,
    /// A table of texts by name (`[self_service.text]`).
    TextTable,
    /// A table of firewall rule sets by mailbox or domain (`[mailboxes."a@b"]`).
    RuleSets,
    /// A table of webhook endpoints by name (`[webhooks.siem]`).
    Webhooks,
}

/// What a reload does when the key's value changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The new value is in force from the reload on.
    Live,
    /// Fixed when the server starts (a listener, a bound, a background task's interval, the
    /// store): the reload keeps the old value and names the key in `restart_required`.
    Restart,
    /// Changes how addresses are grouped into sources: the reload re-keys the failure counts
    /// under the new grouping, and bans keep covering the networks they were placed on.
    Regroups,
}

#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// `section.key`, as in the file.
    pub key: &'static str,
    pub kind: Kind,
    /// The default as TOML, checked against `kind` by a test.
    pub default: &'static str,
    pub description: &'static str,
    pub reload: Reload,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const DAY: u64 = 24 * 3600;

const fn int(min: i64, max: i64) -> Kind {
    Kind::Integer { min, max }
}
const fn dur(min: Duration, max: Duration) -> Kind {
    Kind::Duration { min, max }
}

const fn setting(
    key: &'static str,
    kind: Kind,
    default: &'static str,
    reload: Reload,
    description: &'static str,
) -> Setting {
    Setting { key, kind, default, description, reload }
}

use Reload::{Live, Regroups, Restart};

/// Every setting, in the order `check-config` prints them.
pub const SETTINGS: &[Setting] = &[
    // [server]
    setting(
        "server.policy_listen",
        Kind::Text,
        "\"127.0.0.1:8180\"",
        Restart,
        "Address and port Dovecot's auth_policy_server_url points at.",
    ),
    setting(
        "server.admin_listen",
        Kind::Text,
        "\"127.0.0.1:8181\"",
        Restart,
        "Address and port of the admin API (CLI, scripts, Prometheus).",
    ),
    setting(
        "server.public_listen",
        Kind::Text,
        "\"\"",
        Restart,
        "Address and port of the self-service unblock page; empty: off.",
    ),
    setting(
        "server.state_dir",
        Kind::Path,
        "\"state\"",
        Restart,
        "Folder of the database and generated secrets; relative to this file.",
    ),
    setting(
        "server.max_body_bytes",
        int(1024, 16 * 1024 * 1024),
        "65536",
        Live,
        "Largest request body either listener reads; larger ones get 413.",
    ),
    setting(
        "server.reload_on_change",
        Kind::Bool,
        "false",
        Restart,
        "Reload when this file changes on disk, as well as on SIGHUP and the API.",
    ),
    setting(
        "server.trusted_proxies",
        Kind::List,
        "[]",
        Live,
        "Reverse proxies in front of the public page whose proxy header names the visitor.",
    ),
    setting(
        "server.proxy_header",
        Kind::Text,
        "\"x-forwarded-for\"",
        Live,
        "The one header trusted proxies name the visitor in: forwarded (RFC 7239), or a list of addresses.",
    ),
    setting(
        "server.client_timeout",
        dur(secs(1), secs(300)),
        "\"5s\"",
        Restart,
        "How long a client may take to send a request's headers and its body.",
    ),
    setting(
        "server.max_connections",
        int(16, 1_000_000),
        "10000",
        Restart,
        "Open connections each listener accepts; past it new ones wait.",
    ),
    setting(
        "server.mode",
        Kind::Choice(&["enforce", "observe"]),
        "\"enforce\"",
        Live,
        "enforce: refuse as decided; observe: allow every login and record what would have been refused.",
    ),
    // [tls]
    setting(
        "tls.policy_cert",
        Kind::Path,
        "\"\"",
        Live,
        "PEM certificate chain of the policy listener (Dovecot then uses https); empty: plain HTTP. Re-read on reload; turning TLS on or off needs a restart.",
    ),
    setting("tls.policy_key", Kind::Path, "\"\"", Live, "PEM private key of tls.policy_cert."),
    setting(
        "tls.admin_cert",
        Kind::Path,
        "\"\"",
        Live,
        "PEM certificate chain of the admin listener; empty: plain HTTP. Re-read on reload; turning TLS on or off needs a restart.",
    ),
    setting("tls.admin_key", Kind::Path, "\"\"", Live, "PEM private key of tls.admin_cert."),
    setting(
        "tls.admin_client_ca",
        Kind::Path,
        "\"\"",
        Live,
        "PEM CA certificates: the admin listener then refuses clients without a certificate they signed (mTLS); empty: no client certificates.",
    ),
    setting(
        "tls.public_cert",
        Kind::Path,
        "\"\"",
        Live,
        "PEM certificate chain of the self-service page; empty: plain HTTP. Re-read on reload; turning TLS on or off needs a restart.",
    ),
    setting("tls.public_key", Kind::Path, "\"\"", Live, "PEM private key of tls.public_cert."),
    setting(
        "tls.cli_ca",
        Kind::Path,
        "\"\"",
        Live,
        "CLI: the PEM CA that signed the admin listener's certificate (which must name the address the CLI reaches).",
    ),
    setting("tls.cli_cert", Kind::Path, "\"\"", Live, "CLI: its PEM client certificate, for tls.admin_client_ca."),
    setting("tls.cli_key", Kind::Path, "\"\"", Live, "CLI: the PEM private key of tls.cli_cert."),
    // [auth]
    setting(
        "auth.api_key",
        Kind::Secret,
        "\"\"",
        Live,
        "The key Dovecot sends (auth_policy_server_api_header); empty: generated.",
    ),
    setting("auth.api_key_header", Kind::Text, "\"X-API-Key\"", Live, "The header that carries auth.api_key."),
    setting("auth.admin_token", Kind::Secret, "\"\"", Live, "Bearer token of the admin API; empty: generated."),
    // [autoban]
    setting(
        "autoban.max_failures",
        int(1, 1000),
        "5",
        Live,
        "Distinct wrong guesses within the window that ban a source.",
    ),
    setting("autoban.window", dur(secs(1), secs(30 * DAY)), "\"20m\"", Live, "How far back failures count."),
    setting("autoban.ban_for", dur(secs(1), secs(366 * DAY)), "\"30m\"", Live, "How long a first ban lasts."),
    setting(
        "autoban.ipv4_prefix",
        int(8, 32),
        "32",
        Regroups,
        "IPv4 addresses are grouped into sources of this prefix length.",
    ),
    setting(
        "autoban.ipv6_prefix",
        int(16, 128),
        "64",
        Regroups,
        "IPv6 addresses are grouped into sources of this prefix length.",
    ),
    setting(
        "autoban.max_tracked_sources",
        int(1_000, 1_000_000_000),
        "1000000",
        Restart,
        "Sources whose failures are remembered; the least useful are forgotten first.",
    ),
    setting(
        "autoban.escalation_factor",
        Kind::Float { min: 1.0, max: 100.0 },
        "1.0",
        Live,
        "A repeat offender's ban is the last one times this (1.0: off).",
    ),
    setting(
        "autoban.escalation_within",
        dur(secs(1), secs(366 * DAY)),
        "\"24h\"",
        Live,
        "A ban this soon after the last one is a repeat.",
    ),
    setting("autoban.max_ban", dur(secs(1), secs(3660 * DAY)), "\"24h\"", Live, "The longest an escalated ban lasts."),
    setting(
        "autoban.unknown_accounts_count_double",
        Kind::Bool,
        "false",
        Live,
        "Dovecot 2.4: a failure for a login that does not exist counts twice.",
    ),
    setting(
        "autoban.tolerance_per_account",
        int(0, 100),
        "2",
        Live,
        "Extra distinct wrong guesses a source may make for each account that logged in from it lately (0: off).",
    ),
    setting(
        "autoban.max_tolerance",
        int(0, 1000),
        "20",
        Live,
        "The most extra guesses any source earns: a source is banned at max_failures + this at most.",
    ),
    setting(
        "autoban.tolerance_window",
        dur(secs(60), secs(90 * DAY)),
        "\"7d\"",
        Live,
        "How long a successful login keeps earning its source tolerance.",
    ),
    setting(
        "autoban.max_tolerated_sources",
        int(1_000, 1_000_000_000),
        "1000000",
        Restart,
        "Sources whose good logins are remembered; those with the oldest are forgotten first.",
    ),
    setting(
        "autoban.long_window",
        dur(secs(60), secs(30 * DAY)),
        "\"24h\"",
        Live,
        "The long window: how far back distinct wrong guesses count toward a slow guesser's ban.",
    ),
    setting(
        "autoban.long_max_failures",
        int(0, 10_000),
        "30",
        Live,
        "Distinct wrong guesses within the long window that ban a source (plus its tolerance; 0: off).",
    ),
    setting(
        "autoban.long_ban_for",
        dur(secs(1), secs(366 * DAY)),
        "\"24h\"",
        Live,
        "How long a ban from the long window lasts.",
    ),
    setting(
        "autoban.subnet_bans",
        int(0, 1000),
        "3",
        Live,
        "Sources of one subnet banned within subnet_window that ban the whole subnet (0: off).",
    ),
    setting(
        "autoban.subnet_window",
        dur(secs(60), secs(30 * DAY)),
        "\"1h\"",
        Live,
        "How far back the bans of a subnet's sources count.",
    ),
    setting("autoban.subnet_ban_for", dur(secs(1), secs(366 * DAY)), "\"1h\"", Live, "How long a subnet ban lasts."),
    setting(
        "autoban.subnet_ipv4_prefix",
        int(8, 31),
        "24",
        Live,
        "IPv4 subnets that subnet bans aggregate, by prefix length.",
    ),
    setting(
        "autoban.subnet_ipv6_prefix",
        int(16, 127),
        "48",
        Live,
        "IPv6 subnets that subnet bans aggregate, by prefix length.",
    ),
    // [stale_passwords]
    setting(
        "stale_passwords.enabled",
        Kind::Bool,
        "true",
        Live,
        "Quarantine a device that repeats one wrong password instead of banning its address.",
    ),
    setting("stale_passwords.after", int(2, 1000), "3", Live, "Repeats of one wrong password that quarantine it."),
    setting(
        "stale_passwords.quarantine_for",
        dur(secs(1), secs(30 * DAY)),
        "\"1h\"",
        Live,
        "How long that password is refused without counting.",
    ),
    // [account_protection]
    setting(
        "account_protection.enabled",
        Kind::Bool,
        "true",
        Live,
        "Protect an account that fails from many sources at once.",
    ),
    setting(
        "account_protection.sources",
        int(2, 10_000),
        "10",
        Live,
        "Distinct failing sources within the window that put an account under attack.",
    ),
    setting(
        "account_protection.window",
        dur(secs(1), secs(7 * DAY)),
        "\"1h\"",
        Live,
        "How far back those sources count.",
    ),
    setting(
        "account_protection.action",
        Kind::Choice(&["delay", "reject"]),
        "\"delay\"",
        Live,
        "What unknown sources get while the account is under attack.",
    ),
    setting(
        "account_protection.delay",
        dur(secs(1), secs(29)),
        "\"5s\"",
        Live,
        "The tarpit for action = \"delay\" (Dovecot's positive status).",
    ),
    setting(
        "account_protection.known_for",
        dur(secs(1), secs(3660 * DAY)),
        "\"30d\"",
        Live,
        "How long a successful login keeps a source known to the account.",
    ),
    setting("account_protection.known_per_account", int(1, 1000), "20", Live, "Known sources kept per account."),
    setting(
        "account_protection.max_tracked_accounts",
        int(100, 100_000_000),
        "100000",
        Restart,
        "Accounts whose failing sources are remembered.",
    ),
    // [networks]
    setting("networks.trusted", Kind::List, "[]", Live, "Networks that are never refused (office, monitoring)."),
    setting("networks.blocked", Kind::List, "[]", Live, "Networks that are always refused."),
    setting(
        "networks.blocked_observe",
        Kind::List,
        "[]",
        Live,
        "Blocked networks in observe mode: what they would refuse is recorded, nothing is refused.",
    ),
    setting("networks.webmail", Kind::List, "[]", Live, "Webmail servers: their logins skip the mailbox firewall."),
    // [mailboxes]
    setting("mailboxes", Kind::RuleSets, "{}", Live, "Email firewall rule sets by mailbox or @domain."),
    // [geoip]
    setting("geoip.country_db", Kind::Path, "\"\"", Live, "Country database (mmdb)."),
    setting("geoip.asn_db", Kind::Path, "\"\"", Live, "AS number database (mmdb)."),
    setting("geoip.anonymous_db", Kind::Path, "\"\"", Live, "GeoIP2-Anonymous-IP database (mmdb)."),
    setting(
        "geoip.non_residential_asns_file",
        Kind::Path,
        "\"\"",
        Live,
        "AS numbers counted as non-residential, one a line.",
    ),
    setting(
        "geoip.non_residential_networks_file",
        Kind::Path,
        "\"\"",
        Live,
        "Networks counted as non-residential, one a line.",
    ),
    setting(
        "geoip.check_every",
        dur(secs(1), secs(DAY)),
        "\"60s\"",
        Restart,
        "How often the GeoIP files are checked for replacement.",
    ),
    // [events]
    setting("events.max_age", dur(secs(1), secs(3660 * DAY)), "\"30d\"", Live, "How long block-log records are kept."),
    setting("events.max_count", int(1_000, 100_000_000), "1000000", Live, "How many block-log records are kept."),
    setting(
        "events.max_bytes",
        int(1 << 20, 1 << 40),
        "268435456",
        Live,
        "The most the stored block-log events may take, in bytes (one client cannot fill the disk).",
    ),
    // [messages]
    setting(
        "messages.banned",
        Kind::Template(&["source", "until"]),
        "\"Too many failed logins from {source}; try again after {until} UTC\"",
        Live,
        "Sent to a banned source.",
    ),
    setting(
        "messages.login_refused",
        Kind::Template(&["login", "source", "until"]),
        "\"Too many failed logins for {login} from {source}; try again after {until} UTC or update the password in your mail app\"",
        Live,
        "Sent to a login refused from an established source.",
    ),
    setting(
        "messages.blocked",
        Kind::Template(&["source"]),
        "\"Logins from {source} are blocked by the administrator\"",
        Live,
        "Sent to a blocked network.",
    ),
    setting(
        "messages.firewall_rule",
        Kind::Template(&["rule", "login"]),
        "\"Access denied by email firewall rule no. {rule}\"",
        Live,
        "Sent when a mailbox's firewall rule blocks.",
    ),
    setting(
        "messages.firewall_default",
        Kind::Template(&["login"]),
        "\"Access denied by email firewall default action\"",
        Live,
        "Sent when a mailbox's firewall default blocks.",
    ),
    setting(
        "messages.stale_password",
        Kind::Template(&["login"]),
        "\"Your mail app keeps using an old password for {login}; update it in the app's account settings\"",
        Live,
        "Sent to a device whose old password is quarantined.",
    ),
    setting(
        "messages.account_under_attack",
        Kind::Template(&["login"]),
        "\"{login} is under attack; logins from new places are paused, so use a device you have used before\"",
        Live,
        "Sent to unknown sources of an account under attack.",
    ),
    setting(
        "messages.store_unavailable",
        Kind::Template(&[]),
        "\"Logins are paused for a few minutes while the login service recovers; please try again shortly\"",
        Live,
        "Sent while the shared store is down and store.on_store_error = \"reject\".",
    ),
    // [self_service]
    setting("self_service.max_unblocks_per_day", int(0, 100), "3", Live, "Self-unblocks allowed per source per day."),
    setting(
        "self_service.max_requests_per_minute",
        int(1, 100_000),
        "60",
        Live,
        "Requests one source may make to the page per minute.",
    ),
    setting("self_service.difficulty", int(1_000, 10_000_000), "50000", Live, "The proof-of-work's size."),
    setting(
        "self_service.challenge_expires",
        dur(secs(1), secs(3600)),
        "\"5m\"",
        Live,
        "How long a challenge may be solved in.",
    ),
    setting(
        "self_service.provider_name",
        Kind::Text,
        "\"your mail provider\"",
        Live,
        "Who runs the mail service, as the page names it.",
    ),
    setting(
        "self_service.support_contact",
        Kind::Text,
        "\"\"",
        Live,
        "Where people go when self-service is not enough.",
    ),
    setting("self_service.text", Kind::TextTable, "{}", Live, "The page's texts by name, overriding the defaults."),
    // [nftables]
    setting(
        "nftables.enabled",
        Kind::Bool,
        "false",
        Restart,
        "Drop banned sources and blocked networks at the host firewall (nftables), before TLS.",
    ),
    setting("nftables.table", Kind::Text, "\"mailwarden\"", Restart, "The inet table mailwarden owns and recreates."),
    setting(
        "nftables.set",
        Kind::Text,
        "\"banned\"",
        Restart,
        "Base name of the sets: <set>_ipv4, <set>_ipv6, <set>_trusted_ipv4, <set>_trusted_ipv6.",
    ),
    setting(
        "nftables.ports",
        Kind::List,
        "[\"110\", \"143\", \"465\", \"587\", \"993\", \"995\", \"4190\"]",
        Restart,
        "TCP ports a banned source is dropped on; empty: every packet from it.",
    ),
    setting(
        "nftables.resync_every",
        dur(secs(1), secs(3600)),
        "\"5m\"",
        Restart,
        "How often the table is recreated from the bans in force.",
    ),
    // [mail]
    setting(
        "mail.smtp_url",
        Kind::Text,
        "\"smtp://127.0.0.1:25\"",
        Live,
        "The mail server notices and digests go through: smtp://host:port (?tls=required for STARTTLS), or smtps://host:port.",
    ),
    setting("mail.smtp_user", Kind::Text, "\"\"", Live, "User for SMTP AUTH with the mail server; empty: none."),
    setting("mail.smtp_password", Kind::Password, "\"\"", Live, "Password for SMTP AUTH."),
    setting("mail.from", Kind::Text, "\"\"", Live, "The From address of mailwarden's mail (required when any is on)."),
    // [console]
    setting(
        "console.enabled",
        Kind::Bool,
        "true",
        Live,
        "Serve the web console under /console/ on the admin listener.",
    ),
    setting(
        "console.idle_timeout",
        dur(secs(10), secs(DAY)),
        "\"30m\"",
        Live,
        "A console session unused this long is signed out.",
    ),
    setting(
        "console.secure_cookie",
        Kind::Bool,
        "false",
        Live,
        "Mark the session cookie Secure although the admin listener speaks plain HTTP (TLS ends at a proxy in front); it always is when the listener has TLS.",
    ),
    // [digest]
    setting(
        "digest.enabled",
        Kind::Bool,
        "false",
        Live,
        "Mail the admins a summary of bans, attacks and stale devices.",
    ),
    setting("digest.to", Kind::List, "[]", Live, "The admins' addresses (required when enabled)."),
    setting("digest.every", dur(secs(1), secs(30 * DAY)), "\"1d\"", Restart, "At most one digest in this long."),
    setting(
        "digest.min_bans",
        int(0, 1_000_000),
        "1",
        Live,
        "Bans placed in the period that make a digest worth sending (0: never by themselves).",
    ),
    setting(
        "digest.min_attacks",
        int(0, 1_000_000),
        "1",
        Live,
        "Accounts that came under attack in the period that make it worth sending.",
    ),
    setting(
        "digest.min_stale_devices",
        int(0, 1_000_000),
        "5",
        Live,
        "Stale-password quarantines in the period that make it worth sending.",
    ),
    // [owner_mail]
    setting(
        "owner_mail.enabled",
        Kind::Bool,
        "false",
        Live,
        "Mail the mailbox owner when a device of theirs is quarantined for an old password or the account comes under attack.",
    ),
    setting(
        "owner_mail.recipient",
        Kind::Text,
        "\"\"",
        Live,
        "For logins that are not addresses: where their notices go, e.g. {login}@example.com; empty: none.",
    ),
    setting("owner_mail.skip", Kind::List, "[]", Live, "Mailboxes and @domains that never get a notice."),
    setting(
        "owner_mail.per_device_every",
        dur(secs(60), secs(30 * DAY)),
        "\"1d\"",
        Live,
        "At most one notice per account and mail app (or per attack) in this long.",
    ),
    setting("owner_mail.text", Kind::TextTable, "{}", Live, "The notices' texts by name, overriding the defaults."),
    // [log]
    setting("log.level", Kind::Text, "\"info\"", Restart, "Log filter, such as \"info\" or \"mailwarden=debug\"."),
    setting("log.format", Kind::Choice(&["text", "json"]), "\"text\"", Restart, "Log lines as text or as JSON."),
    // [store]
    setting(
        "store.backend",
        Kind::Choice(&["embedded", "redis"]),
        "\"embedded\"",
        Restart,
        "Where durable state lives: SQLite in state_dir, or Redis shared by every node.",
    ),
    setting(
        "store.url",
        Kind::Text,
        "\"\"",
        Restart,
        "Redis: redis://host:port/db or redis://:password@host:port; rediss:// for TLS.",
    ),
    setting("store.cluster_urls", Kind::List, "[]", Restart, "Redis Cluster: the nodes' URLs (instead of store.url)."),
    setting("store.prefix", Kind::Text, "\"mailwarden:\"", Restart, "Redis: the prefix of every key."),
    setting(
        "store.timeout",
        dur(Duration::from_millis(1), secs(1)),
        "\"50ms\"",
        Restart,
        "Redis: the budget of one call.",
    ),
    setting(
        "store.on_store_error",
        Kind::Choice(&["local", "reject"]),
        "\"local\"",
        Restart,
        "While Redis is down: answer from memory, or refuse untrusted logins.",
    ),
    setting(
        "store.refresh_every",
        dur(secs(1), secs(3600)),
        "\"30s\"",
        Restart,
        "How often a node rereads the shared state under the announcements.",
    ),
    setting(
        "store.ca_file",
        Kind::Path,
        "\"\"",
        Restart,
        "Redis over TLS (rediss://): the PEM CA that signed the server's certificate; empty: the system's roots.",
    ),
    // [webhooks]
    setting(
        "webhooks",
        Kind::Webhooks,
        "{}",
        Restart,
        "Signed webhook endpoints by name: url, secret, events and delivery limits (see Notifications).",
    ),
];

/// The setting of `key`, if there is one.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The sections, in table order.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for setting in SETTINGS {
        let section = section_of(setting.key);
        if !out.contains(&section) {
            out.push(section);
        }
    }
    out
}

/// `server` for `server.policy_listen`; a whole-section setting (`mailboxes`) is its own.
pub fn section_of(key: &str) -> &str {
    key.split_once('.').map_or(key, |(section, _)| section)
}

/// The settings as a Markdown table, for the README (a test holds the README's copy equal).
pub fn reference() -> String {
    let mut out = String::from("| Key | Default | Values | Reload | Meaning |\n|---|---|---|---|---|\n");
    for setting in SETTINGS {
        let default = match (setting.kind, setting.default) {
            (Kind::Secret, _) => "empty: generated into `state_dir`".to_string(),
            (Kind::Password, _) => "empty: none".to_string(),
            (_, "\"\"") => "empty".to_string(),
            (_, "[]") | (_, "{}") => "none".to_string(),
            (_, text) => format!("`{}`", text.trim_matches('"')),
        };
        let values = match setting.kind {
            Kind::Bool => "`true`, `false`".to_string(),
            Kind::Integer { min, max } => format!("{min} to {max}"),
            Kind::Float { min, max } => format!("{min:.1} to {max:.1}"),
            Kind::Duration { min, max } => format!("{} to {}", span(min), span(max)),
            Kind::Text => "text".to_string(),
            Kind::Path => "a path".to_string(),
            Kind::Choice(words) => words.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", "),
            Kind::List => "a list of texts".to_string(),
            Kind::Template(allowed) if allowed.is_empty() => "a message".to_string(),
            Kind::Template(allowed) => {
                let names: Vec<String> = allowed.iter().map(|a| format!("`{{{a}}}`")).collect();
                format!("a message with {}", names.join(", "))
            }
            Kind::Secret => "16 characters or more".to_string(),
            Kind::Password => "a password (never printed)".to_string(),
            Kind::TextTable => "a table of texts".to_string(),
            Kind::RuleSets => "tables of rule sets".to_string(),
            Kind::Webhooks => "tables of endpoints".to_string(),
        };
        let reload = match setting.reload {
            Reload::Live => "live",
            Reload::Restart => "restart",
            Reload::Regroups => "live, re-keys counts",
        };
        out.push_str(&format!("| `{}` | {default} | {values} | {reload} | {} |\n", setting.key, setting.description));
    }
    out
}

/// A range's end as people write it: `366 days`, `5 min`, `50 ms`.
fn span(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{} ms", d.as_millis()),
        s if s % 86_400 == 0 && s > 86_400 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}
