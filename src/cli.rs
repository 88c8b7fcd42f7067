//! The command line: `mailwarden [serve]` runs the server; the other subcommands validate the
//! configuration or talk to a running server through the admin API. Every subcommand takes
//! `--config F` before or after its own arguments. Errors print their whole cause and map to
//! exit codes: 1 for a failed operation, 2 for a configuration or usage problem.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{AdminClient, ClientError, Json, path_segment};
use crate::config::{LogFormat, Policy};
use crate::secrets::{self, Missing};

#[derive(Debug, Parser)]
#[command(
    name = "mailwarden",
    version,
    about = "Authentication-policy server for Dovecot: auto-ban, admin lists and per-mailbox firewall."
)]
struct Cli {
    /// The policy file.
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "policy.toml",
        value_name = "FILE"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the policy file and print the effective policy, secrets masked.
    CheckConfig,
    /// List active bans.
    Bans {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift the ban on an address (or on the source network containing it).
    Unban {
        /// An IP address such as 203.0.113.7, or a banned network such as 2001:db8:1:2::/64.
        address: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::Bans { json } => with_client(&cli.config, |client| list_bans(client, json)),
        Command::Unban { address } => with_client(&cli.config, |client| unban(client, &address)),
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("mailwarden: {message}");
    ExitCode::from(code)
}

fn serve(path: &std::path::Path) -> ExitCode {
    let mut policy = match Policy::load(path) {
        Ok(policy) => policy,
        Err(e) => return fail(2, e),
    };
    init_logging(&policy);
    if let Err(e) = secrets::resolve(&mut policy, Missing::Generate) {
        return fail(2, e);
    }
    match crate::server::run(policy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "mailwarden could not run");
            fail(1, e)
        }
    }
}

fn init_logging(policy: &Policy) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| tracing_subscriber::EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&policy.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match policy.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Policy::load(path) {
        Ok(policy) => {
            println!(
                "# {} is valid; effective policy (environment overrides applied):\n",
                path.display()
            );
            print!("{}", policy.describe());
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, e),
    }
}

fn with_client(
    path: &std::path::Path,
    action: impl FnOnce(&AdminClient) -> Result<(), ClientError>,
) -> ExitCode {
    let mut policy = match Policy::load(path) {
        Ok(policy) => policy,
        Err(e) => return fail(2, e),
    };
    if let Err(e) = secrets::resolve(&mut policy, Missing::Fail) {
        return fail(2, e);
    }
    let Some(client) = AdminClient::new(&policy) else {
        return fail(2, "no admin token configured (auth.admin_token)");
    };
    match action(&client) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

fn text<'a>(value: &'a Json, key: &str) -> &'a str {
    value.get(key).and_then(Json::as_str).unwrap_or("")
}

fn list_bans(client: &AdminClient, json: bool) -> Result<(), ClientError> {
    let answer = client.get("/api/v1/bans")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
        return Ok(());
    }
    let bans = answer
        .get("bans")
        .and_then(Json::as_array)
        .ok_or_else(|| ClientError::BadAnswer("no bans list".into()))?;
    if bans.is_empty() {
        println!("No active bans.");
        return Ok(());
    }
    println!(
        "{:<28} {:<21} {:>8} {:>8}  {:<9} LAST LOGIN",
        "SOURCE", "UNTIL (UTC)", "LEFT", "FAILURES", "PROTOCOL"
    );
    for ban in bans {
        let until = text(ban, "expires_at")
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_string();
        let left = ban
            .get("remaining_seconds")
            .and_then(Json::as_u64)
            .unwrap_or(0);
        let left = humantime::format_duration(std::time::Duration::from_secs(left)).to_string();
        let failures = ban.get("failures").and_then(Json::as_u64).unwrap_or(0);
        println!(
            "{:<28} {:<21} {:>8} {:>8}  {:<9} {}",
            text(ban, "source"),
            until,
            left.split(' ').take(2).collect::<Vec<_>>().join(" "),
            failures,
            text(ban, "protocol"),
            text(ban, "last_login")
        );
    }
    Ok(())
}

fn unban(client: &AdminClient, address: &str) -> Result<(), ClientError> {
    let answer = client.delete(&format!("/api/v1/bans/{}", path_segment(address.trim())))?;
    let ban = answer.get("unbanned").unwrap_or(&Json::Null);
    println!(
        "Unbanned {} (the ban would have ended at {}).",
        text(ban, "source"),
        text(ban, "expires_at")
    );
    Ok(())
}
