//! The command line: `mailwarden [serve]` runs the server; the other subcommands validate the
//! configuration or talk to a running server through the admin API. Every subcommand takes
//! `--config F` before or after its own arguments. Errors print their whole cause and map to
//! exit codes: 1 for a failed operation, 2 for a configuration or usage problem.

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::{AdminClient, ClientError, Json, path_segment};
use crate::config::{LogFormat, Policy};
use crate::printable;
use crate::secrets::{self, Missing};

#[derive(Debug, Parser)]
#[command(
    name = "mailwarden",
    version,
    about = "Authentication-policy server for Dovecot: auto-ban, admin lists and per-mailbox firewall."
)]
struct Cli {
    /// The policy file.
    #[arg(long, short = 'c', global = true, default_value = "policy.toml", value_name = "FILE")]
    config: PathBuf,

    /// Log format of the server: overrides log.format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// Options shared by `block` and `trust`.
#[derive(Debug, clap::Args)]
struct EntryOptions {
    /// An address (203.0.113.7) or network (203.0.113.0/24, 2001:db8::/48).
    network: String,
    /// How long the entry lasts, e.g. 2h or 7days (default: until removed).
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// Why, for the next admin.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
    /// A blocked entry in observe mode: record what it would refuse, refuse nothing.
    #[arg(long)]
    observe: bool,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

/// The time filter and page of `events` and `audit`.
#[derive(Debug, clap::Args)]
struct LogPage {
    /// Only since then: a duration back from now (2h, 3days) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// At most this many (default 50).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Skip this many of the newest matches first (the next page: --offset 50).
    #[arg(long, default_value_t = 0)]
    offset: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BanAction {
    /// Keep a ban in force longer (at most 30 days from now); to end one early, unban it.
    Lengthen {
        /// The banned address, or a banned network such as 2001:db8:1:2::/64.
        address: String,
        /// How much longer, such as 2h or 7days.
        #[arg(long, value_name = "LENGTH", required_unless_present = "until", conflicts_with = "until")]
        by: Option<String>,
        /// The new end instead, an RFC 3339 time such as 2026-12-24T18:00:00Z.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Lengthen only the refusal of this login from the address (an IP+login refusal).
        #[arg(long)]
        login: Option<String>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the policy file and print the effective policy, secrets masked.
    CheckConfig,
    /// List active bans, and the logins refused from an address (IP+login refusals).
    Bans {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift the ban on an address (or on the source network containing it).
    Unban {
        /// An IP address such as 203.0.113.7, or a banned network such as 2001:db8:1:2::/64.
        address: String,
        /// Lift only the refusal of this login from the address (an IP+login refusal).
        #[arg(long)]
        login: Option<String>,
        /// Also trust the banned network, so it is never banned again ("lift and trust").
        #[arg(long)]
        trust: bool,
        /// The trusted entry's comment (with --trust).
        #[arg(long, value_name = "TEXT", requires = "trust")]
        comment: Option<String>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an active ban.
    Ban {
        #[command(subcommand)]
        action: BanAction,
    },
    /// After a password change: forgive the login's wrong guesses everywhere (its old
    /// password on a forgotten device, its typos), end its quarantines, and lift the bans
    /// its guesses alone caused.
    ResetLogin {
        /// The login, e.g. alice@example.com (any case).
        login: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Block an address or network: every login from it is refused.
    Block(EntryOptions),
    /// Remove a block made with `block`.
    Unblock {
        network: String,
        #[arg(long)]
        json: bool,
    },
    /// Trust an address or network: never banned or blocked.
    Trust(EntryOptions),
    /// Remove an entry made with `trust`.
    Untrust {
        network: String,
        #[arg(long)]
        json: bool,
    },
    /// List blocked networks (from policy.toml and the API).
    Blocks {
        #[arg(long)]
        json: bool,
    },
    /// List trusted networks (from policy.toml and the API).
    Trusted {
        #[arg(long)]
        json: bool,
    },
    /// Show what a login from ADDR would get right now, and why. Changes nothing.
    Check {
        address: String,
        /// The login to check for.
        #[arg(long, value_name = "LOGIN")]
        login: Option<String>,
        /// imap, pop3, smtp, ...
        #[arg(long, default_value = "imap")]
        protocol: String,
        #[arg(long)]
        json: bool,
    },
    /// Reload the running server's policy file (as SIGHUP does).
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Explain everything known about an address: ban and what led to it, wrong passwords
    /// still counted, stale devices, accounts under attack. Changes nothing.
    Why {
        address: String,
        /// Only this login.
        #[arg(long)]
        login: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show and change a mailbox's (or a domain's) email firewall.
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// Create, list and revoke the admin API's named, scoped tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit trail: who changed what through the API, newest first.
    Audit {
        /// Only changes by this token (its name).
        #[arg(long)]
        actor: Option<String>,
        /// Only this kind of change, e.g. ban_lifted, rule_moved, token_revoked.
        #[arg(long)]
        action: Option<String>,
        /// Only changes to this address, network, mailbox, login or token.
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        page: LogPage,
    },
    /// Show the block log: refusals and bans, newest first.
    Events {
        /// Only this client address.
        #[arg(long)]
        ip: Option<String>,
        /// Only this login, in any case.
        #[arg(long)]
        login: Option<String>,
        /// Only this reason: ban, blocked, firewall_rule, firewall_default, ban_placed.
        #[arg(long)]
        reason: Option<String>,
        /// Only events whose message contains this text (ASCII case ignored).
        #[arg(long)]
        text: Option<String>,
        /// Only events until then: an RFC 3339 time or a duration back, e.g. 30m.
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        page: LogPage,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it, this once: the server keeps only its SHA-256.
    Create {
        /// Its name, shown in the audit trail: letters, digits, '.', '_' and '-'.
        #[arg(long)]
        name: String,
        /// admin, support, metrics or domain:example.com.
        #[arg(long)]
        scope: String,
        /// How long it lasts, e.g. 90d (default: until revoked).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the tokens: name, scope, created, expiry, last used (to the hour).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token, on every node of a cluster.
    Revoke {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum FirewallCommand {
    /// Show the rules in force for a login (its own, or its domain's) or a domain (@example.com).
    Show {
        login: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a rule: an action and exactly one of --address, --network, --country, --asn,
    /// --non-residential.
    Add {
        login: String,
        /// allow or block.
        #[arg(long)]
        action: String,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        network: Option<String>,
        /// Country codes, e.g. FR,BE.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        country: Option<Vec<String>>,
        /// AS numbers, e.g. 3215,AS12322.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        asn: Option<Vec<String>>,
        /// Hosting, data-centre, VPN, proxy and Tor addresses.
        #[arg(long)]
        non_residential: bool,
        /// Where the rule goes, from 1 (default: last).
        #[arg(long)]
        position: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Move rule N one place up or down.
    Move {
        login: String,
        number: usize,
        #[arg(value_parser = ["up", "down"])]
        direction: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete rule N.
    Delete {
        login: String,
        number: usize,
        #[arg(long)]
        json: bool,
    },
    /// Set the action when no rule matches.
    Default {
        login: String,
        #[arg(value_parser = ["allow", "block"])]
        action: String,
        #[arg(long)]
        json: bool,
    },
    /// Drop the rules set through the API, so the policy file's (or the domain's) apply again.
    Reset {
        login: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_path();
    let lists = |list| move |client: &AdminClient| list_entries(client, list);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config, cli.log_format),
        Command::CheckConfig => check_config(config),
        Command::Bans { json } => with_client(config, json, list_bans),
        Command::Unban { address, login, trust, comment, json } => {
            with_client(config, json, |c| unban(c, &address, login.as_deref(), trust.then_some(comment.as_deref())))
        }
        Command::Ban { action: BanAction::Lengthen { address, by, until, login, json } } => {
            with_client(config, json, |c| lengthen(c, &address, by.as_deref(), until.as_deref(), login.as_deref()))
        }
        Command::ResetLogin { login, json } => with_client(config, json, |c| reset_login(c, &login)),
        Command::Block(options) => with_client(config, options.json, |c| add_entry(c, BLOCKS, &options)),
        Command::Trust(options) => with_client(config, options.json, |c| add_entry(c, TRUSTED, &options)),
        Command::Unblock { network, json } => with_client(config, json, |c| remove_entry(c, BLOCKS, &network)),
        Command::Untrust { network, json } => with_client(config, json, |c| remove_entry(c, TRUSTED, &network)),
        Command::Blocks { json } => with_client(config, json, lists(BLOCKS)),
        Command::Trusted { json } => with_client(config, json, lists(TRUSTED)),
        Command::Check { address, login, protocol, json } => {
            with_client(config, json, |c| check(c, &address, login.as_deref(), &protocol))
        }
        Command::Reload { json } => with_client(config, json, reload),
        Command::Firewall(command) => firewall(config, command),
        Command::Why { address, login, json } => with_client(config, json, |c| why(c, &address, login.as_deref())),
        Command::Events { ip, login, reason, text, until, page } => {
            let filters = [
                ("ip", &ip),
                ("login", &login),
                ("reason", &reason),
                ("text", &text),
                ("since", &page.since),
                ("until", &until),
            ];
            with_client(config, page.json, |c| events(c, &paged_query(&filters, page.limit, page.offset)))
        }
        Command::Token(command) => token(config, command),
        Command::Audit { actor, action, target, page } => {
            let filters = [("actor", &actor), ("action", &action), ("target", &target), ("since", &page.since)];
            with_client(config, page.json, |c| audit(c, &paged_query(&filters, page.limit, page.offset)))
        }
    }
}

/// A query of the filters given, and the page.
fn paged_query<'a>(filters: &[(&'a str, &'a Option<String>)], limit: usize, offset: usize) -> Vec<(&'a str, String)> {
    let mut query = vec![("limit", limit.to_string()), ("offset", offset.to_string())];
    query.extend(filters.iter().filter_map(|(key, value)| Some((*key, (*value).clone()?))));
    query
}

fn token(config: &std::path::Path, command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Create { name, scope, expires, json } => with_client(config, json, |client| {
            let mut body = serde_json::json!({ "name": name, "scope": scope });
            if let Some(expires) = expires {
                body["expires"] = Json::String(expires);
            }
            let json = client.post("/api/v1/tokens", Some(&body))?;
            let text = format!(
                "{}\n\nThe {} token {} (scope {}). Store it now: it cannot be shown again.\n",
                text(&json, "token"),
                if json.get("expires_at").is_some() { "expiring" } else { "lasting" },
                text(&json, "name"),
                text(&json, "scope"),
            );
            Ok(Answer { json, text })
        }),
        TokenCommand::List { json } => with_client(config, json, |client| {
            let json = client.get("/api/v1/tokens", &[])?;
            let tokens = json.get("tokens").and_then(Json::as_array).cloned().unwrap_or_default();
            let mut out = String::new();
            if tokens.is_empty() {
                out.push_str("No tokens (besides the policy file's auth.admin_token).\n");
            } else {
                out.push_str(&format!(
                    "{:<24} {:<28} {:<24} {:<24} LAST USED\n",
                    "NAME", "SCOPE", "CREATED", "EXPIRES"
                ));
                for token in &tokens {
                    let expires = readable_time(&text(token, "expires_at"));
                    let used = readable_time(&text(token, "last_used"));
                    out.push_str(&format!(
                        "{:<24} {:<28} {:<24} {:<24} {}\n",
                        text(token, "name"),
                        text(token, "scope"),
                        readable_time(&text(token, "created_at")),
                        if expires.is_empty() { "never".to_string() } else { expires },
                        if used.is_empty() { "never".to_string() } else { format!("{used} (to the hour)") },
                    ));
                }
            }
            Ok(Answer { json, text: out })
        }),
        TokenCommand::Revoke { name, json } => with_client(config, json, |client| {
            let json = client.delete(&format!("/api/v1/tokens/{}", path_segment(name.trim())), &[])?;
            let revoked = json.get("revoked").cloned().unwrap_or(Json::Null);
            let text = format!("Revoked the token {} (scope {}).\n", text(&revoked, "name"), text(&revoked, "scope"));
            Ok(Answer { json, text })
        }),
    }
}

fn audit(client: &AdminClient, query: &[(&str, String)]) -> Result<Answer, ClientError> {
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let json = client.get("/api/v1/audit", &query)?;
    let records = json.get("records").and_then(Json::as_array).cloned().unwrap_or_default();
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("No matching changes.\n");
    }
    for record in &records {
        out.push_str(&format!(
            "{}  {:<24} {:<24} {}\n    {}\n",
            readable_time(&text(record, "at")),
            text(record, "actor"),
            text(record, "action"),
            text(record, "target"),
            text(record, "detail")
        ));
    }
    Ok(Answer { json, text: out })
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("mailwarden: {message}");
    ExitCode::from(code)
}

fn serve(path: &std::path::Path, log_format: Option<LogFormatArg>) -> ExitCode {
    crate::state_dir::make_new_files_private();
    let mut policy = match Policy::load(path) {
        Ok(policy) => policy,
        Err(e) => return fail(2, e),
    };
    match log_format {
        Some(LogFormatArg::Text) => policy.log.format = LogFormat::Text,
        Some(LogFormatArg::Json) => policy.log.format = LogFormat::Json,
        None => {}
    }
    crate::logging::init(&policy);
    crate::state_dir::warn_if_exposed(&policy.server.state_dir);
    if let Err(e) = secrets::resolve(&mut policy.auth, &policy.server.state_dir.clone(), Missing::Generate) {
        return fail(2, e);
    }
    match crate::server::run(policy, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "mailwarden could not run");
            fail(1, e)
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let checked = Policy::load(path).map_err(|e| e.to_string()).and_then(|policy| {
        let metrics = crate::metrics::Metrics::new().map_err(|e| e.to_string())?;
        let geoip = crate::geoip::GeoIp::open(&policy.geoip, metrics.geoip).map_err(|e| e.to_string())?;
        // The certificates and keys the listeners would serve, read as a start would.
        crate::tls::ListenersTls::load(&policy.tls).map_err(|e| e.to_string())?;
        let problems = crate::warden::file_rule_problems(&policy, &geoip);
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(format!("invalid configuration {}\n  - {}", path.display(), problems.join("\n  - ")))
        }
    });
    match checked {
        Ok(policy) => {
            println!("# {} is valid; effective policy (environment overrides applied):\n", path.display());
            print!("{}", policy.describe());
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, e),
    }
}

/// What a client command prints: the API's JSON (for `--json`) and the text for people.
struct Answer {
    json: Json,
    text: String,
}

const BLOCKS: (&str, &str) = ("/api/v1/blocks", "Blocked");
const TRUSTED: (&str, &str) = ("/api/v1/trusted", "Trusted");

fn with_client(
    path: &std::path::Path,
    json: bool,
    action: impl FnOnce(&AdminClient) -> Result<Answer, ClientError>,
) -> ExitCode {
    let mut policy = match Policy::load(path) {
        Ok(policy) => policy,
        Err(e) => return fail(2, e),
    };
    if let Err(e) = secrets::resolve(&mut policy.auth, &policy.server.state_dir.clone(), Missing::Fail) {
        return fail(2, e);
    }
    let client = match AdminClient::new(&policy) {
        Ok(client) => client,
        Err(e) => return fail(2, e),
    };
    match action(&client) {
        Ok(answer) if json => {
            println!("{}", serde_json::to_string_pretty(&answer.json).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            print!("{}", answer.text);
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

/// A string of the server's answer as the terminal may show it: logins, device IDs, comments
/// and messages come from outside, so control characters and escape sequences are escaped.
fn text<'a>(value: &'a Json, key: &str) -> Cow<'a, str> {
    printable::escape(value.get(key).and_then(Json::as_str).unwrap_or(""))
}

/// `2026-11-22T14:05:09Z` as `2026-11-22 14:05:09 UTC`.
fn readable_time(rfc3339: &str) -> String {
    if rfc3339.is_empty() {
        return String::new();
    }
    format!("{} UTC", rfc3339.replace('T', " ").trim_end_matches('Z'))
}

fn list_bans(client: &AdminClient) -> Result<Answer, ClientError> {
    let json = client.get("/api/v1/bans", &[("limit", "1000")])?;
    let bans = json.get("bans").and_then(Json::as_array).cloned().unwrap_or_default();
    let mut out = String::new();
    if bans.is_empty() {
        out.push_str("No active bans.\n");
    } else {
        out.push_str(&format!(
            "{:<28} {:<32} {:<24} {:>9} {:>8}  {:<9} LAST LOGIN\n",
            "SOURCE", "LOGIN", "UNTIL", "LEFT", "FAILURES", "PROTOCOL"
        ));
        for ban in &bans {
            let left = ban.get("remaining_seconds").and_then(Json::as_u64).unwrap_or(0);
            let left = humantime::format_duration(std::time::Duration::from_secs(left)).to_string();
            let left: Vec<&str> = left.split(' ').take(2).collect();
            // A ban of the whole source refuses every login from it.
            let login = ban.get("login").and_then(Json::as_str).unwrap_or("(every login)");
            out.push_str(&format!(
                "{:<28} {:<32} {:<24} {:>9} {:>8}  {:<9} {}\n",
                text(ban, "source"),
                login,
                readable_time(&text(ban, "expires_at")),
                left.join(" "),
                ban.get("failures").and_then(Json::as_u64).unwrap_or(0),
                text(ban, "protocol"),
                text(ban, "last_login")
            ));
        }
        if text(&json, "mode") == "observe" {
            out.push_str("server.mode is observe: these bans are recorded, not enforced, until the mode is lifted.\n");
        }
    }
    Ok(Answer { json, text: out })
}

/// A ban as the API shows it, in words: "203.0.113.7", or "alice@example.com from 203.0.113.7".
fn described(ban: &Json) -> String {
    match ban.get("login").and_then(Json::as_str) {
        Some(login) => format!("{login} from {}", self::text(ban, "source")),
        None => self::text(ban, "source").to_string(),
    }
}

/// `trust`: lift and trust, with the entry's comment if any.
fn unban(
    client: &AdminClient,
    address: &str,
    login: Option<&str>,
    trust: Option<Option<&str>>,
) -> Result<Answer, ClientError> {
    let mut query: Vec<(&str, &str)> = login.map(|login| ("login", login)).into_iter().collect();
    if let Some(comment) = trust {
        query.push(("trust", "true"));
        query.extend(comment.map(|comment| ("comment", comment)));
    }
    let json = client.delete(&format!("/api/v1/bans/{}", path_segment(address.trim())), &query)?;
    let ban = json.get("unbanned").cloned().unwrap_or(Json::Null);
    let what = described(&ban);
    let mut text =
        format!("Unbanned {what} (the ban would have ended at {}).\n", readable_time(&self::text(&ban, "expires_at")));
    if trust.is_some() {
        text.push_str(&format!("{} is trusted now.\n", self::text(&ban, "network")));
    }
    Ok(Answer { json, text })
}

fn lengthen(
    client: &AdminClient,
    address: &str,
    by: Option<&str>,
    until: Option<&str>,
    login: Option<&str>,
) -> Result<Answer, ClientError> {
    let mut path = format!("/api/v1/bans/{}/lengthen", path_segment(address.trim()));
    if let Some(login) = login {
        path.push('?');
        path.push_str(&serde_urlencoded::to_string([("login", login)]).unwrap_or_default());
    }
    let body = match (by, until) {
        (Some(by), _) => serde_json::json!({ "by": by }),
        (None, until) => serde_json::json!({ "until": until }),
    };
    let json = client.post(&path, Some(&body))?;
    let ban = json.get("lengthened").cloned().unwrap_or(Json::Null);
    let what = described(&ban);
    let text = format!("The ban on {what} now ends at {}.\n", readable_time(&self::text(&ban, "expires_at")));
    Ok(Answer { json, text })
}

fn reset_login(client: &AdminClient, login: &str) -> Result<Answer, ClientError> {
    let path = format!("/api/v1/logins/{}/reset", path_segment(login.trim()));
    let json = client.post(&path, None)?;
    let count = |key: &str| json.get(key).and_then(Json::as_array).map_or(0, Vec::len);
    let ended = json.get("quarantines_ended").and_then(Json::as_u64).unwrap_or(0);
    let mut text = format!(
        "Reset {}: its wrong guesses from {} {} no longer count, {ended} {} ended, {} {} lifted.\n",
        self::text(&json, "login"),
        count("sources"),
        if count("sources") == 1 { "address" } else { "addresses" },
        if ended == 1 { "quarantine" } else { "quarantines" },
        count("bans_lifted"),
        if count("bans_lifted") == 1 { "ban" } else { "bans" },
    );
    for ban in json.get("bans_lifted").and_then(Json::as_array).into_iter().flatten() {
        text.push_str(&format!("  unbanned {}\n", self::text(ban, "source")));
    }
    Ok(Answer { json, text })
}

fn describe_entry(entry: &Json) -> String {
    let until = match text(entry, "expires_at").as_ref() {
        "" => "until removed".to_string(),
        end => format!("until {}", readable_time(end)),
    };
    let comment = match text(entry, "comment").as_ref() {
        "" => String::new(),
        c => format!(" ({c})"),
    };
    let observe = if text(entry, "mode") == "observe" { ", observe mode: nothing refused" } else { "" };
    format!("{} {until}{comment}{observe}", text(entry, "network"))
}

fn add_entry(client: &AdminClient, (path, verb): (&str, &str), options: &EntryOptions) -> Result<Answer, ClientError> {
    let mut body = serde_json::json!({ "network": options.network.trim() });
    if let Some(duration) = &options.duration {
        body["for"] = Json::from(duration.as_str());
    }
    if let Some(comment) = &options.comment {
        body["comment"] = Json::from(comment.as_str());
    }
    if options.observe {
        body["mode"] = Json::from("observe");
    }
    let json = client.post(path, Some(&body))?;
    let text = format!("{verb} {}.\n", describe_entry(&json));
    Ok(Answer { json, text })
}

fn remove_entry(client: &AdminClient, (path, verb): (&str, &str), network: &str) -> Result<Answer, ClientError> {
    let json = client.delete(path, &[("network", network.trim())])?;
    let removed = json.get("removed").cloned().unwrap_or(Json::Null);
    let text = format!("{} is no longer {}.\n", text(&removed, "network"), verb.to_lowercase());
    Ok(Answer { json, text })
}

fn list_entries(client: &AdminClient, (path, verb): (&str, &str)) -> Result<Answer, ClientError> {
    let json = client.get(path, &[("limit", "1000")])?;
    let entries = json.get("entries").and_then(Json::as_array).cloned().unwrap_or_default();
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str(&format!("No {} networks.\n", verb.to_lowercase()));
    } else {
        out.push_str(&format!("{:<40} {:<12} {:<24} COMMENT\n", "NETWORK", "ORIGIN", "EXPIRES"));
        for entry in &entries {
            let origin = match text(entry, "origin").as_ref() {
                "policy_file" => "policy.toml",
                _ => "api",
            };
            let expires = match text(entry, "expires_at").as_ref() {
                "" => "never".to_string(),
                end => readable_time(end),
            };
            out.push_str(&format!(
                "{:<40} {:<12} {:<24} {}\n",
                text(entry, "network"),
                origin,
                expires,
                text(entry, "comment")
            ));
        }
    }
    Ok(Answer { json, text: out })
}

fn check(client: &AdminClient, address: &str, login: Option<&str>, protocol: &str) -> Result<Answer, ClientError> {
    let mut query = vec![("ip", address.trim()), ("protocol", protocol)];
    if let Some(login) = login {
        query.push(("login", login));
    }
    let json = client.get("/api/v1/decide", &query)?;
    let verdict = text(&json, "verdict");
    let verdict = match verdict.as_ref() {
        "allow" => "ALLOWED",
        "reject" => "REFUSED",
        other => other,
    };
    let who = match login {
        Some(login) => format!("{} over {}", printable::escape(login), printable::escape(protocol)),
        None => printable::escape(protocol).into_owned(),
    };
    let status = json.get("status").and_then(Json::as_i64).unwrap_or(0);
    let mut out = format!("{} ({who}): {verdict}\n  {}\n", text(&json, "ip"), text(&json, "summary"));
    match text(&json, "msg").as_ref() {
        "" => out.push_str(&format!("  Dovecot would get status {status}\n")),
        msg => out.push_str(&format!("  Dovecot would get status {status}; the mail app shows: {msg}\n")),
    }
    Ok(Answer { json, text: out })
}

fn reload(client: &AdminClient) -> Result<Answer, ClientError> {
    let json = client.post("/api/v1/reload", None)?;
    let mut text = String::from("Policy reloaded.\n");
    let pending: Vec<Cow<'_, str>> = json
        .get("restart_required")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).map(printable::escape).collect())
        .unwrap_or_default();
    if !pending.is_empty() {
        text.push_str(&format!("Changed but only applied after a restart: {}\n", pending.join(", ")));
    }
    Ok(Answer { json, text })
}

fn firewall_path(login: &str, rest: &str) -> String {
    format!("/api/v1/mailboxes/{}/firewall{rest}", path_segment(login.trim()))
}

fn firewall(config: &std::path::Path, command: FirewallCommand) -> ExitCode {
    use FirewallCommand::*;
    match command {
        Show { login, json } => with_client(config, json, |c| firewall_answer(c.get(&firewall_path(&login, ""), &[])?)),
        Add { login, action, address, network, country, asn, non_residential, position, json } => {
            let mut body = serde_json::json!({ "action": action });
            if let Some(address) = address {
                body["address"] = Json::from(address);
            }
            if let Some(network) = network {
                body["network"] = Json::from(network);
            }
            if let Some(country) = country {
                body["country"] = Json::from(country);
            }
            if let Some(asn) = asn {
                body["asn"] = Json::from(asn);
            }
            if non_residential {
                body["non_residential"] = Json::from(true);
            }
            if let Some(position) = position {
                body["position"] = Json::from(position);
            }
            with_client(config, json, |c| firewall_answer(c.post(&firewall_path(&login, "/rules"), Some(&body))?))
        }
        Move { login, number, direction, json } => {
            let body = serde_json::json!({ "direction": direction });
            with_client(config, json, |c| {
                firewall_answer(c.post(&firewall_path(&login, &format!("/rules/{number}/move")), Some(&body))?)
            })
        }
        Delete { login, number, json } => with_client(config, json, |c| {
            firewall_answer(c.delete(&firewall_path(&login, &format!("/rules/{number}")), &[])?)
        }),
        Default { login, action, json } => {
            let body = serde_json::json!({ "action": action });
            with_client(config, json, |c| firewall_answer(c.put(&firewall_path(&login, "/default"), &body)?))
        }
        Reset { login, json } => {
            with_client(config, json, |c| firewall_answer(c.delete(&firewall_path(&login, ""), &[])?))
        }
    }
}

/// One rule as people read it: `block country CN`, `allow network 198.51.100.0/24`.
fn describe_rule(rule: &Json) -> String {
    let list = |key: &str| {
        rule.get(key).and_then(Json::as_array).map(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(|s| printable::escape(s).into_owned()).unwrap_or_else(|| i.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    let criterion = if let Some(address) = rule.get("address").and_then(Json::as_str) {
        format!("address {}", printable::escape(address))
    } else if let Some(network) = rule.get("network").and_then(Json::as_str) {
        format!("network {}", printable::escape(network))
    } else if let Some(countries) = list("country") {
        format!("country {countries}")
    } else if let Some(asns) = list("asn") {
        format!("AS {asns}")
    } else {
        "non-residential (hosting, VPN, proxy, Tor)".to_string()
    };
    format!("{} {criterion}", text(rule, "action"))
}

fn firewall_answer(json: Json) -> Result<Answer, ClientError> {
    let login = text(&json, "login");
    let mut out = match text(&json, "applies").as_ref() {
        "none" => format!("{login} has no email firewall: every address may log in.\n"),
        applies => {
            let whose = if applies == "domain" {
                format!("the rules of {}", text(&json, "rules_of"))
            } else {
                "its own rules".to_string()
            };
            let origin = if text(&json, "origin") == "policy_file" { "policy.toml" } else { "the admin API" };
            let protocols: Vec<Cow<'_, str>> = json
                .get("protocols")
                .and_then(Json::as_array)
                .map(|a| a.iter().filter_map(Json::as_str).map(printable::escape).collect())
                .unwrap_or_default();
            format!("Email firewall of {login}: {whose}, from {origin}, for {}.\n", protocols.join(", "))
        }
    };
    for rule in json.get("rules").and_then(Json::as_array).into_iter().flatten() {
        out.push_str(&format!(
            "  {:>2}. {}\n",
            rule.get("number").and_then(Json::as_u64).unwrap_or(0),
            describe_rule(rule)
        ));
    }
    if let Some(default) = json.get("default").and_then(Json::as_str) {
        out.push_str(&format!("  default: {}\n", printable::escape(default)));
    }
    Ok(Answer { json, text: out })
}

fn events(client: &AdminClient, query: &[(&str, String)]) -> Result<Answer, ClientError> {
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let json = client.get("/api/v1/events", &query)?;
    let events = json.get("events").and_then(Json::as_array).cloned().unwrap_or_default();
    let mut out = String::new();
    if events.is_empty() {
        out.push_str("No matching events.\n");
    }
    for event in &events {
        let rule = event.get("rule").and_then(Json::as_u64).map(|r| format!(" rule {r}")).unwrap_or_default();
        out.push_str(&format!(
            "{}  {:<16}{}  {:<39} {:<6} {}\n    {}\n",
            readable_time(&text(event, "at")),
            text(event, "reason"),
            rule,
            text(event, "ip"),
            text(event, "protocol"),
            text(event, "login"),
            text(event, "detail")
        ));
    }
    let number = |key: &str| json.get(key).and_then(Json::as_u64).unwrap_or(0);
    let (total, offset, shown) = (number("total"), number("offset"), events.len() as u64);
    if shown > 0 && (offset + shown < total || offset > 0) {
        let of = if json.get("total_exact").and_then(Json::as_bool) == Some(false) { "at least " } else { "" };
        out.push_str(&format!("Events {}-{} of {of}{total}", offset + 1, offset + shown));
        if offset + shown < total {
            out.push_str(&format!("; the next ones with --offset {}", offset + shown));
        }
        out.push_str(".\n");
    }
    Ok(Answer { json, text: out })
}

fn why(client: &AdminClient, address: &str, login: Option<&str>) -> Result<Answer, ClientError> {
    let mut query = vec![("ip", address.trim())];
    if let Some(login) = login {
        query.push(("login", login));
    }
    let json = client.get("/api/v1/why", &query)?;
    let mut text = String::new();
    for line in json.get("lines").and_then(Json::as_array).into_iter().flatten() {
        text.push_str(&format!("- {}\n", printable::escape(line.as_str().unwrap_or_default())));
    }
    Ok(Answer { json, text })
}
