//! The benchmark's machinery, shared by the `bench` example (real numbers) and
//! `tests/bench_smoke.rs` (tiny numbers, to keep it working).
//!
//! `run` does, in order and as `Settings::parts` asks:
//! - **mix**: mailwarden, then the baseline (which parses each body), then the floor (which
//!   only reads it), each alone on its core, under the login mix at full speed (peak
//!   throughput, and mailwarden's as a ratio of each);
//! - **latency**: the same mix at a fixed rate (p50, p99, p99.9), on the same two servers;
//! - **memory**: a fresh mailwarden, a few sources banned, then reports from distinct
//!   sources (the resident size after the first `memory_sources`, then sampled through the
//!   flood), and a check that every ban survived;
//! - **redis**: the same login mix against an embedded and a redis-mode mailwarden (issue 9's
//!   cluster mode, with a private redis-server), loaded alternately round by round;
//! - **tls**: the same login mix against a plain and a TLS policy listener (issue 20), loaded
//!   alternately round by round over keep-alive connections;
//! - **dovecot**: IMAP logins through a real Dovecot 2.3 with and without mailwarden.

pub mod baseline;
mod dovecot;
#[allow(dead_code)]
#[path = "../../../tests/support/geoip.rs"]
mod geoip_fixtures;
pub mod load;
mod memory;
mod process;
mod redis;
mod report;
mod tls;
pub mod world;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{LoadResult, LoadSpec, Pace, Target, Workload};
use process::Server;
pub use report::{Figures, Report, RunFigures};
use world::{MixSettings, World};

/// The API key and admin token written into every generated policy.
const API_KEY: &str = "bench-api-key-0123456789abcdef";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// How the baseline server is started.
#[derive(Debug, Clone)]
pub enum BaselineLauncher {
    /// This program with `serve-baseline` (a process of its own, so it can be pinned).
    Exec(PathBuf),
    /// A thread of this process (the smoke test).
    #[allow(dead_code)] // Only tests/bench_smoke.rs starts it this way.
    InProcess,
}

/// Which parts to run.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub mix: bool,
    pub latency: bool,
    pub memory: bool,
    pub redis: bool,
    pub tls: bool,
    pub dovecot: bool,
}

impl Parts {
    pub fn all() -> Parts {
        Parts { mix: true, latency: true, memory: true, redis: true, tls: true, dovecot: true }
    }

    pub fn from_names(names: &[String]) -> Parts {
        let has = |name: &str| names.iter().any(|n| n.trim() == name || n.trim() == "all");
        Parts {
            mix: has("mix"),
            latency: has("latency"),
            memory: has("memory"),
            redis: has("redis"),
            tls: has("tls"),
            dovecot: has("dovecot"),
        }
    }
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Generated files, state and logs; emptied first.
    pub out: PathBuf,
    pub mailwarden: PathBuf,
    pub baseline: BaselineLauncher,
    pub parts: Parts,
    pub mix: MixSettings,
    /// Keep-alive connections of the throughput run.
    pub connections: usize,
    /// Rounds the throughput and latency runs are cut into, alternating between the servers.
    pub rounds: usize,
    /// Requests per second of the latency run, and its length.
    pub rate: f64,
    pub rate_seconds: f64,
    /// Connections of the latency run.
    pub rate_connections: usize,
    /// Distinct sources failing once before the first memory reading.
    pub memory_sources: u64,
    /// Distinct sources of the flood after it.
    pub flood_sources: u64,
    pub flood_connections: usize,
    /// `autoban.max_tracked_sources` of the memory runs.
    pub max_tracked_sources: u64,
    /// Sources banned before the memory runs, checked after the flood.
    pub memory_bans: usize,
    /// Logins of the mix replayed against each server of the redis part (the first of the
    /// throughput run's plan).
    pub redis_logins: usize,
    /// Logins of the mix replayed against each server of the tls part.
    pub tls_logins: usize,
    /// Sequential IMAP logins per Dovecot configuration; the concurrent run does as many.
    pub dovecot_logins: usize,
    pub dovecot_concurrency: usize,
    /// Pin the generator to CPU 0 and the server to CPU 1 (when taskset and 2 CPUs exist).
    pub pin: bool,
    /// Record mailwarden's throughput run with `perf record`.
    pub perf: bool,
    /// Niceness of the servers and load threads of the mix, memory, redis and tls parts (0:
    /// unchanged; -10 keeps other tenants of a shared machine from distorting them).
    pub nice: i32,
}

impl Settings {
    /// The figures of issue 8.
    pub fn full(out: PathBuf, mailwarden: PathBuf, baseline: BaselineLauncher) -> Settings {
        Settings {
            out,
            mailwarden,
            baseline,
            parts: Parts::all(),
            mix: MixSettings {
                logins: 1_000_000,
                sources: 100_000,
                accounts: 100_000,
                banned: 300,
                firewall_share: 0.1,
                detailed_geoip: true,
            },
            connections: 32,
            rounds: 5,
            rate: 5_000.0,
            rate_seconds: 30.0,
            rate_connections: 16,
            memory_sources: 1_000_000,
            flood_sources: 10_000_000,
            flood_connections: 64,
            max_tracked_sources: 1_000_000,
            memory_bans: 300,
            redis_logins: 300_000,
            tls_logins: 300_000,
            dovecot_logins: 2_000,
            dovecot_concurrency: 8,
            pin: true,
            perf: false,
            nice: 0,
        }
    }

    /// Tiny numbers: every part runs in seconds, against a debug build.
    #[allow(dead_code)] // Used by tests/bench_smoke.rs.
    pub fn smoke(out: PathBuf, mailwarden: PathBuf) -> Settings {
        Settings {
            out,
            mailwarden,
            baseline: BaselineLauncher::InProcess,
            parts: Parts::all(),
            mix: MixSettings {
                logins: 1_000,
                sources: 500,
                accounts: 400,
                banned: 10,
                firewall_share: 0.2,
                detailed_geoip: false,
            },
            connections: 4,
            rounds: 2,
            rate: 400.0,
            rate_seconds: 1.0,
            rate_connections: 4,
            memory_sources: 1_500,
            flood_sources: 4_000,
            flood_connections: 4,
            max_tracked_sources: 1_000,
            memory_bans: 5,
            redis_logins: 1_000,
            tls_logins: 1_000,
            dovecot_logins: 6,
            dovecot_concurrency: 2,
            pin: false,
            perf: false,
            nice: 0,
        }
    }
}

/// Runs the parts `settings` asks for and returns their figures. Progress goes to stderr.
pub fn run(settings: &Settings) -> io::Result<Report> {
    let started = Instant::now();
    let machine_before = process::MachineTicks::now();
    if settings.out.exists() {
        fs::remove_dir_all(&settings.out)?;
    }
    fs::create_dir_all(&settings.out)?;
    // The generated policies name files by absolute path (a relative one would be read from
    // the policy file's folder).
    let settings = &Settings { out: fs::canonicalize(&settings.out)?, ..settings.clone() };
    if !settings.mailwarden.is_file() {
        return Err(io::Error::other(format!("no mailwarden binary at {}", settings.mailwarden.display())));
    }
    let pinned = settings.pin && process::can_pin();
    let mut report = Report {
        cpus: process::cpus(),
        pinned,
        figures: Figures::default(),
        notes: Vec::new(),
        seconds: 0.0,
        steal: 0.0,
    };
    if settings.pin && !pinned {
        report.notes.push("not pinned: taskset is missing or there is only one CPU".into());
    }
    process::set_nice(settings.nice);
    if settings.nice != 0 {
        report.notes.push(format!(
            "servers and load threads of the mix, memory, redis and tls parts ran at niceness {}",
            settings.nice
        ));
    }
    if settings.parts.mix || settings.parts.latency {
        run_mix(settings, pinned, &mut report)?;
    }
    if settings.parts.memory {
        report.figures.memory = Some(memory::run(settings, &settings.out.join("memory"))?);
    }
    if settings.parts.redis {
        match redis::run(settings, pinned, &settings.out.join("redis"))? {
            Ok(figures) => report.figures.redis = Some(figures),
            Err(skipped) => report.notes.push(skipped),
        }
    }
    if settings.parts.tls {
        report.figures.tls = Some(tls::run(settings, pinned, &settings.out.join("tls"))?);
    }
    // Dovecot runs at its usual priority, and so does the mailwarden it asks.
    process::set_nice(0);
    if settings.parts.dovecot {
        match dovecot::run(settings, &settings.out.join("dovecot"))? {
            Ok(figures) => report.figures.dovecot = Some(figures),
            Err(skipped) => report.notes.push(skipped),
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.steal = process::MachineTicks::now().since(machine_before).steal_share();
    Ok(report)
}

/// A baseline server of `kind`, as this program's `serve-baseline` (pinned to `cpu` when
/// given) or on a thread of this process.
fn start_baseline(settings: &Settings, kind: baseline::Kind, cpu: Option<usize>) -> io::Result<Server> {
    match &settings.baseline {
        BaselineLauncher::Exec(program) => Server::baseline_process(program, cpu, kind),
        BaselineLauncher::InProcess => Server::baseline_in_process(kind),
    }
}

/// Prints a progress line to stderr.
fn say(text: impl AsRef<str>) {
    eprintln!("[bench] {}", text.as_ref());
}

/// The server's half of a generated policy.toml: listeners, state and secrets.
fn server_sections(dir: &Path, policy: SocketAddr, admin: SocketAddr) -> String {
    format!(
        "[server]\npolicy_listen = \"{policy}\"\nadmin_listen = \"{admin}\"\nstate_dir = {:?}\n\n\
         [auth]\napi_key = \"{API_KEY}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\n",
        dir.join("state").display().to_string()
    )
}

/// Writes `dir/policy.toml` (the server sections plus `extra`) and starts mailwarden on it.
fn start_mailwarden(settings: &Settings, dir: &Path, extra: &str, cpu: Option<usize>) -> io::Result<Server> {
    fs::create_dir_all(dir)?;
    let (policy, admin) = (process::free_address(), process::free_address());
    let config = dir.join("policy.toml");
    world::write(&config, &(server_sections(dir, policy, admin) + extra))?;
    Server::mailwarden(
        &settings.mailwarden,
        &config,
        &dir.join("mailwarden.log"),
        (policy, admin),
        (API_KEY, ADMIN_TOKEN),
        cpu,
    )
}

/// Bans `count` sources (`world::banned_address`) with 5 distinct wrong passwords each, as an
/// attacker gets banned, and returns how many bans mailwarden then holds.
fn ban_sources(server: &Server, count: usize) -> io::Result<u64> {
    for i in 0..count {
        let address = world::banned_address(i).into();
        for body in world::ban_reports(address, &World::account_name(i as u32), 5) {
            let (status, answer) = server.policy("report", &body)?;
            if status != 200 {
                return Err(io::Error::other(format!("banning report answered {status}: {answer}")));
            }
        }
    }
    Ok(server.health("active_bans").unwrap_or(0))
}

/// The throughput and latency runs. Both servers run side by side (on the same CPU when
/// pinned) but only one is loaded at a time: the plan is cut into rounds, and each round goes
/// to mailwarden, then to the baseline, so a noisy neighbour slows both alike.
fn run_mix(settings: &Settings, pinned: bool, report: &mut Report) -> io::Result<()> {
    let (generator_cpu, server_cpu) = if pinned { (Some(0), Some(1)) } else { (None, None) };
    let dir = settings.out.join("mix");
    fs::create_dir_all(&dir)?;
    let prepared = Instant::now();
    let world = Arc::new(World::new(settings.mix.clone()));
    let country_db = world.write_geoip(&dir);
    let sections = world.policy_sections(&country_db);
    let firewalled = world.firewalled_accounts();
    let rounds = settings.rounds.max(1);
    let peak_plans = chunks(world.plan(settings.mix.logins, 1), rounds);
    // About 2.9 requests a login; a margin so the rate run never runs out.
    let rate_round = settings.rate_seconds / rounds as f64;
    let rate_plans: Vec<Arc<[world::Login]>> = (0..rounds)
        .map(|round| world.plan((settings.rate * rate_round / 2.5) as usize + 1_000, 2 + round as u64).into())
        .collect();
    say(format!(
        "world: {} sources, {} mailboxes ({firewalled} with firewall rules), {} banned sources, {} logins in {rounds} \
         rounds; prepared in {:.1} s",
        settings.mix.sources,
        settings.mix.accounts,
        settings.mix.banned,
        settings.mix.logins,
        prepared.elapsed().as_secs_f64()
    ));
    let mut figures = report::MixFigures { firewalled, rounds, ..Default::default() };

    let mailwarden = start_mailwarden(settings, &dir, &sections, server_cpu)?;
    let baseline = start_baseline(settings, baseline::Kind::ParsesJson, server_cpu)?;
    let floor = start_baseline(settings, baseline::Kind::ReadsOnly, server_cpu)?;
    figures.bans_before = ban_sources(&mailwarden, settings.mix.banned)?;
    if figures.bans_before != settings.mix.banned as u64 {
        report.notes.push(format!(
            "{} sources were to be banned before the mix, {} are",
            settings.mix.banned, figures.bans_before
        ));
    }
    figures.rss_start_kib = mailwarden.rss_kib();
    // The peak run loads all three; the fixed-rate run only mailwarden and the baseline.
    let servers = [&mailwarden, &baseline, &floor];
    let spec = |server: &Server, plan: &Arc<[world::Login]>, pace: Pace, connections: usize, threads: usize| LoadSpec {
        target: Target::plain(server.policy_addr, &server.api_key),
        workload: Workload::Mix { world: world.clone(), plan: plan.clone() },
        connections,
        threads,
        pace,
        pin_cpu: generator_cpu,
    };

    if settings.parts.mix {
        // Only mailwarden's process is recorded: it is idle while the baseline is loaded.
        let perf = if settings.perf { Some(perf::Recording::start(&mailwarden, &dir)) } else { None };
        let mut totals: [Option<Measured>; 3] = [None, None, None];
        for (round, plan) in peak_plans.iter().enumerate() {
            let mut rates = [0.0; 3];
            for (i, server) in servers.iter().enumerate() {
                let threads = if pinned { 1 } else { 2 };
                let run =
                    measured(server, || load::run(&spec(server, plan, Pace::Closed, settings.connections, threads)))?;
                rates[i] = run.result.requests_per_second();
                Measured::add(&mut totals[i], run);
            }
            figures.round_ratios.push(rates[0] / rates[1].max(1e-9));
            say(format!(
                "round {}/{rounds}: mailwarden {:.0} req/s, baseline {:.0} req/s ({:.1}%), floor {:.0} req/s ({:.1}%)",
                round + 1,
                rates[0],
                rates[1],
                100.0 * rates[0] / rates[1].max(1e-9),
                rates[2],
                100.0 * rates[0] / rates[2].max(1e-9)
            ));
        }
        if let Some(recording) = perf {
            figures.perf_top = recording.finish();
        }
        let [m, b, floor] = totals.map(|t| t.map(Measured::figures));
        if let (Some(m), Some(b), Some(floor)) = (&m, &b, &floor) {
            say(format!("mailwarden: peak {}", m.summary()));
            say(format!("baseline: peak {}", b.summary()));
            say(format!("floor: peak {}", floor.summary()));
        }
        figures.mailwarden = m;
        figures.baseline = b;
        figures.floor = floor;
        figures.rss_after_kib = mailwarden.rss_kib();
        std::thread::sleep(Duration::from_secs(2));
    }
    if settings.parts.latency {
        let pace = Pace::Rate { per_second: settings.rate, duration: Duration::from_secs_f64(rate_round) };
        let mut totals: [Option<Measured>; 2] = [None, None];
        for plan in &rate_plans {
            for (i, server) in servers[..2].iter().enumerate() {
                let run = measured(server, || load::run(&spec(server, plan, pace, settings.rate_connections, 1)))?;
                Measured::add(&mut totals[i], run);
            }
        }
        let [m, b] = totals.map(|t| t.map(Measured::figures));
        if let (Some(m), Some(b)) = (&m, &b) {
            say(format!("mailwarden: at {} req/s {}", settings.rate, m.summary()));
            say(format!("baseline: at {} req/s {}", settings.rate, b.summary()));
        }
        figures.rate_mailwarden = m;
        figures.rate_baseline = b;
    }
    figures.rss_end_kib = mailwarden.rss_kib();
    let metrics = mailwarden.admin("GET", "/metrics", None).map(|(_, body)| body).unwrap_or_default();
    figures.known_stored = metric(&metrics, "mailwarden_known_sources_total{result=\"stored\"}");
    figures.known_dropped = metric(&metrics, "mailwarden_known_sources_total{result=\"dropped\"}");
    figures.log_lines =
        mailwarden.log_path.as_ref().and_then(|p| fs::read_to_string(p).ok()).map_or(0, |t| t.lines().count());
    figures.rate = settings.rate;
    figures.rate_seconds = settings.rate_seconds;
    figures.connections = settings.connections;
    report.figures.mix = Some(figures);
    Ok(())
}

/// The value of one series in Prometheus's text format (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok()).map_or(0, |value| value as u64)
}

/// `plan` cut into `rounds` nearly equal parts.
fn chunks(plan: Vec<world::Login>, rounds: usize) -> Vec<Arc<[world::Login]>> {
    let size = plan.len().div_ceil(rounds.max(1)).max(1);
    plan.chunks(size).map(Arc::from).collect()
}

/// A load run with the server's CPU time over it.
struct Measured {
    result: LoadResult,
    server_cpu: Duration,
}

impl Measured {
    /// Adds `run` to the running total in `total`.
    fn add(total: &mut Option<Measured>, run: Measured) {
        match total {
            Some(total) => {
                total.result.merge(run.result);
                total.server_cpu += run.server_cpu;
            }
            None => *total = Some(run),
        }
    }

    fn figures(mut self) -> RunFigures {
        self.result.latencies.sort_unstable();
        RunFigures::from_result(&self.result, self.server_cpu)
    }
}

/// Runs `load` and notes the server's CPU time over it.
fn measured(server: &Server, load: impl FnOnce() -> io::Result<LoadResult>) -> io::Result<Measured> {
    let cpu_before = server.cpu();
    let result = load()?;
    Ok(Measured { result, server_cpu: server.cpu().saturating_sub(cpu_before) })
}

/// `perf record` attached to mailwarden during its throughput run.
mod perf {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    use super::process::Server;

    pub struct Recording {
        child: Option<Child>,
        data: std::path::PathBuf,
    }

    impl Recording {
        pub fn start(server: &Server, dir: &Path) -> Recording {
            let data = dir.join("perf.data");
            let child = Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-o"])
                .arg(&data)
                .arg("-p")
                .arg(server.pid().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok();
            if child.is_none() {
                super::say("perf is not available; no profile");
            }
            Recording { child, data }
        }

        /// Stops the recording; the hottest functions by samples in them (self time).
        pub fn finish(mut self) -> Vec<String> {
            let Some(child) = self.child.take() else {
                return Vec::new();
            };
            let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
            let _ = child.wait_with_output();
            let output = Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "-g",
                    "none",
                    "--sort",
                    "symbol",
                    "--percent-limit",
                    "0.7",
                    "-i",
                ])
                .arg(&self.data)
                .stderr(Stdio::null())
                .output();
            let text = output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            // "  11.44%  [k] _raw_spin_unlock_irqrestore     -      -": share, kernel or user, symbol.
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(25)
                .map(|l| l.split_whitespace().filter(|w| *w != "-").collect::<Vec<_>>().join(" "))
                .collect()
        }
    }
}
