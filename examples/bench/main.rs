//! The benchmark of issue 8 as one program: mailwarden and a minimal actix-web baseline under
//! the same login mix, latency at a fixed rate, memory under a flood of sources, the same mix
//! against mailwarden's redis mode (issue 9), the same mix over TLS (issue 20), and the cost of a real Dovecot login with and
//! without mailwarden. `scripts/bench.sh` builds and runs it; docs/BENCHMARKS.md says what
//! each figure means. The machinery lives in `suite`, which `tests/bench_smoke.rs` runs with
//! tiny numbers.
//!
//! This file only reads the command line. `bench serve-baseline --listen ADDR` is the baseline
//! server itself, run as a child process so that it can be pinned to its own core.

mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "mailwarden's benchmark (issue 8); see docs/BENCHMARKS.md")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The mailwarden binary to measure (default: the one beside this example's folder).
    #[arg(long)]
    mailwarden: Option<PathBuf>,
    /// Where the generated policies, GeoIP database, state and logs go (emptied first).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Which parts to run, comma-separated: mix, latency, memory, redis, tls, dovecot (or all).
    #[arg(long, default_value = "mix,latency,memory,redis,tls,dovecot", value_delimiter = ',')]
    parts: Vec<String>,
    /// Logins replayed in the throughput run (each is 2 or 3 requests).
    #[arg(long)]
    logins: Option<usize>,
    /// Distinct client addresses the mix comes from.
    #[arg(long)]
    sources: Option<usize>,
    /// Mailboxes (user0@example.com, ...).
    #[arg(long)]
    accounts: Option<usize>,
    /// Sources banned before the mix (5 distinct wrong passwords each).
    #[arg(long)]
    banned: Option<usize>,
    /// Share of mailboxes with firewall rules in the policy, 0 to 1.
    #[arg(long)]
    firewall_share: Option<f64>,
    /// Keep-alive connections in the throughput run.
    #[arg(long)]
    connections: Option<usize>,
    /// Rounds the throughput and latency runs are cut into, alternating between the servers.
    #[arg(long)]
    rounds: Option<usize>,
    /// Requests per second in the latency run.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds the latency run lasts.
    #[arg(long)]
    rate_seconds: Option<f64>,
    /// Distinct sources that fail once before the first memory reading.
    #[arg(long)]
    memory_sources: Option<u64>,
    /// Distinct sources in the flood that follows.
    #[arg(long)]
    flood_sources: Option<u64>,
    /// autoban.max_tracked_sources during the memory runs.
    #[arg(long)]
    max_tracked_sources: Option<u64>,
    /// Logins replayed against each server of the redis part (embedded and redis mode).
    #[arg(long)]
    redis_logins: Option<usize>,
    /// Logins replayed against each server of the tls part (plain and TLS policy listener).
    #[arg(long)]
    tls_logins: Option<usize>,
    /// Sequential IMAP logins per Dovecot configuration.
    #[arg(long)]
    dovecot_logins: Option<usize>,
    /// Do not pin the load generator and the servers to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Niceness for the servers and load threads of the mix, memory and redis parts, e.g. -10
    /// on a machine shared with other work (needs root).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    nice: i32,
    /// Record mailwarden's throughput run with `perf record` and print its hottest functions.
    #[arg(long)]
    perf: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The baseline: parses every body as a policy request and answers {"status":0,"msg":""}.
    ServeBaseline {
        #[arg(long)]
        listen: SocketAddr,
        /// Worker threads (mailwarden's policy listener has 2).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Read each body without parsing it (the framework's floor).
        #[arg(long)]
        reads_only: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ServeBaseline { listen, workers, reads_only }) = cli.command {
        let kind = if reads_only { suite::baseline::Kind::ReadsOnly } else { suite::baseline::Kind::ParsesJson };
        return match suite::baseline::serve(listen, workers, kind) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let this = std::env::current_exe().expect("the path of this program");
    let mailwarden = cli.mailwarden.clone().unwrap_or_else(|| {
        // target/<profile>/examples/bench -> target/<profile>/mailwarden
        this.parent().and_then(|examples| examples.parent()).map(|p| p.join("mailwarden")).unwrap_or_default()
    });
    let mut settings = suite::Settings::full(cli.out.clone(), mailwarden, suite::BaselineLauncher::Exec(this));
    apply(&cli, &mut settings);
    match suite::run(&settings) {
        Ok(report) => {
            println!("\n{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn apply(cli: &Cli, s: &mut suite::Settings) {
    s.parts = suite::Parts::from_names(&cli.parts);
    s.mix.logins = cli.logins.unwrap_or(s.mix.logins);
    s.mix.sources = cli.sources.unwrap_or(s.mix.sources);
    s.mix.accounts = cli.accounts.unwrap_or(s.mix.accounts);
    s.mix.banned = cli.banned.unwrap_or(s.mix.banned);
    s.mix.firewall_share = cli.firewall_share.unwrap_or(s.mix.firewall_share);
    s.connections = cli.connections.unwrap_or(s.connections);
    s.rounds = cli.rounds.unwrap_or(s.rounds);
    s.rate = cli.rate.unwrap_or(s.rate);
    s.rate_seconds = cli.rate_seconds.unwrap_or(s.rate_seconds);
    s.memory_sources = cli.memory_sources.unwrap_or(s.memory_sources);
    s.flood_sources = cli.flood_sources.unwrap_or(s.flood_sources);
    s.max_tracked_sources = cli.max_tracked_sources.unwrap_or(s.max_tracked_sources);
    s.redis_logins = cli.redis_logins.unwrap_or(s.redis_logins);
    s.tls_logins = cli.tls_logins.unwrap_or(s.tls_logins);
    s.dovecot_logins = cli.dovecot_logins.unwrap_or(s.dovecot_logins);
    s.pin = s.pin && !cli.no_pin;
    s.perf = cli.perf;
    s.nice = cli.nice;
}
