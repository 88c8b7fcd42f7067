//! Cluster mode against the embedded store (issue 9): the login mix of the throughput run
//! against two mailwarden processes, one with the default embedded store and one with
//! `[store] backend = "redis"` pointed at a private `redis-server`, loaded alternately round
//! by round as in `run_mix` (generator on CPU 0; both servers and redis-server on CPU 1 when
//! pinned, as redis-server is part of the server side).
//!
//! Redis mode sends every counted failure and success of a `report` to Redis from a
//! background worker, off the request path; its CPU per request is therefore mailwarden's
//! plus redis-server's, and each run is followed by a wait until both are idle again, so the
//! work a round queued is charged to that round and does not slow the next one. There is no
//! target: the ratio is information.
//!
//! Needs Debian's `redis-server` (skipped with a note when it is missing, an error under
//! `CI=true`). Redis is asked for PING, INFO and DBSIZE over a raw connection, so
//! `redis-cli` is not needed.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{self, LoadResult, LoadSpec, Pace, Target, Workload};
use super::process::{self, Server};
use super::report::RedisFigures;
use super::world::{self, World};
use super::{Measured, Settings, ban_sources, chunks, say, start_mailwarden};

/// Keys of the redis-mode node live under this prefix.
const PREFIX: &str = "bench:";
/// How long redis-server may take to answer PING, and a question to be answered.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the servers to go idle after a run (the worker draining its queue).
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// Largest reply read from Redis (INFO memory is about 1.5 KB).
const MOST_REPLY: usize = 1 << 20;

/// The figures, or (inner `Err`) why the part was skipped: no redis-server.
pub fn run(settings: &Settings, pinned: bool, dir: &Path) -> io::Result<Result<RedisFigures, String>> {
    let Some(program) = find_redis_server() else {
        let reason = "redis-server is not installed (Debian's redis-server)";
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err(io::Error::other(format!("CI=true but {reason}: install redis-server")));
        }
        return Ok(Err(format!("Redis part skipped: {reason}")));
    };
    let (generator_cpu, server_cpu) = if pinned { (Some(0), Some(1)) } else { (None, None) };
    fs::create_dir_all(dir)?;
    let prepared = Instant::now();
    let world = Arc::new(World::new(settings.mix.clone()));
    let country_db = world.write_geoip(dir);
    let sections = world.policy_sections(&country_db);
    let rounds = settings.rounds.max(1);
    let plans = chunks(world.plan(settings.redis_logins, 1), rounds);
    say(format!(
        "redis: {} logins in {rounds} rounds against an embedded and a redis-mode mailwarden; world prepared in \
         {:.1} s",
        settings.redis_logins,
        prepared.elapsed().as_secs_f64()
    ));

    let redis = RedisServer::start(&program, dir, server_cpu)?;
    let store = format!(
        "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\nprefix = \"{PREFIX}\"\n\n",
        redis.port
    );
    let embedded = start_mailwarden(settings, &dir.join("embedded"), &sections, server_cpu)?;
    let clustered = start_mailwarden(settings, &dir.join("redis-mode"), &(store + &sections), server_cpu)?;
    let mut figures =
        RedisFigures { logins: settings.redis_logins, rounds, connections: settings.connections, ..Default::default() };
    figures.bans_embedded = ban_sources(&embedded, settings.mix.banned)?;
    figures.bans_redis_mode = ban_sources(&clustered, settings.mix.banned)?;
    settle(&[embedded.pid(), clustered.pid(), redis.pid()]);

    let spec = |server: &Server, plan: &Arc<[world::Login]>| LoadSpec {
        target: Target::plain(server.policy_addr, &server.api_key),
        workload: Workload::Mix { world: world.clone(), plan: plan.clone() },
        connections: settings.connections,
        threads: if pinned { 1 } else { 2 },
        pace: Pace::Closed,
        pin_cpu: generator_cpu,
    };
    let (mut embedded_total, mut redis_total): (Option<Measured>, Option<Measured>) = (None, None);
    for (round, plan) in plans.iter().enumerate() {
        let run = charged(&embedded, None, || load::run(&spec(&embedded, plan)))?;
        let embedded_rate = run.result.requests_per_second();
        figures.busy_after_embedded += run.busy_after;
        Measured::add(&mut embedded_total, Measured { result: run.result, server_cpu: run.server_cpu });

        let run = charged(&clustered, Some(redis.pid()), || load::run(&spec(&clustered, plan)))?;
        let redis_rate = run.result.requests_per_second();
        figures.redis_mode_mailwarden_cpu += run.server_cpu;
        figures.redis_mode_redis_cpu += run.redis_cpu;
        figures.busy_after_redis_mode += run.busy_after;
        Measured::add(&mut redis_total, Measured { result: run.result, server_cpu: run.server_cpu + run.redis_cpu });

        figures.round_ratios.push(redis_rate / embedded_rate.max(1e-9));
        say(format!(
            "redis round {}/{rounds}: embedded {embedded_rate:.0} req/s, redis mode {redis_rate:.0} req/s ({:.1}%)",
            round + 1,
            100.0 * redis_rate / embedded_rate.max(1e-9)
        ));
    }
    figures.embedded = embedded_total.map(Measured::figures).unwrap_or_default();
    figures.redis_mode = redis_total.map(Measured::figures).unwrap_or_default();
    say(format!("embedded: peak {}", figures.embedded.summary()));
    say(format!("redis mode: peak {}", figures.redis_mode.summary()));

    figures.rss_embedded_kib = embedded.rss_kib();
    figures.rss_redis_mode_kib = clustered.rss_kib();
    let metrics = clustered.admin("GET", "/metrics", None).map(|(_, body)| body).unwrap_or_default();
    figures.shared_sent = super::metric(&metrics, "mailwarden_cluster_shared_counts_total{result=\"sent\"}");
    figures.shared_dropped = super::metric(&metrics, "mailwarden_cluster_shared_counts_total{result=\"dropped\"}");
    drop(clustered);
    drop(embedded);
    figures.redis_cpu_total = process::cpu_time(redis.pid());
    figures.used_memory = redis.used_memory().unwrap_or(0);
    figures.keys = redis.dbsize().unwrap_or(0);
    say(format!(
        "redis-server: CPU {:.1} s, used_memory {} bytes, {} keys; counted logins sent {}, dropped {}",
        figures.redis_cpu_total.as_secs_f64(),
        figures.used_memory,
        figures.keys,
        figures.shared_sent,
        figures.shared_dropped
    ));
    drop(redis);
    Ok(Ok(figures))
}

/// A load run with the CPU time charged to it: mailwarden's, and redis-server's when given,
/// from the start until both are idle again after it.
struct Charged {
    result: LoadResult,
    server_cpu: Duration,
    redis_cpu: Duration,
    /// How long the processes stayed busy after the last answer (to the nearest `WINDOW`).
    busy_after: Duration,
}

fn charged(server: &Server, redis: Option<u32>, load: impl FnOnce() -> io::Result<LoadResult>) -> io::Result<Charged> {
    let redis_cpu = || redis.map_or(Duration::ZERO, process::cpu_time);
    let (server_before, redis_before) = (server.cpu(), redis_cpu());
    let result = load()?;
    let pids: Vec<u32> = std::iter::once(server.pid()).chain(redis).collect();
    let busy_after = settle(&pids);
    if busy_after >= SETTLE_LIMIT {
        say(format!("redis: {} still busy {} s after a run", server.name, SETTLE_LIMIT.as_secs()));
    }
    Ok(Charged {
        result,
        server_cpu: server.cpu().saturating_sub(server_before),
        redis_cpu: redis_cpu().saturating_sub(redis_before),
        busy_after,
    })
}

/// The span over which `settle` looks for idleness.
const WINDOW: Duration = Duration::from_millis(250);

/// Waits until `pids` together use less than a tenth of a core over `WINDOW` (at most
/// `SETTLE_LIMIT`), and returns how long they were busy before that idle window.
fn settle(pids: &[u32]) -> Duration {
    let started = Instant::now();
    let total = || pids.iter().map(|&pid| process::cpu_time(pid)).sum::<Duration>();
    let mut before = total();
    while started.elapsed() < SETTLE_LIMIT {
        std::thread::sleep(WINDOW);
        let now = total();
        if now.saturating_sub(before) < WINDOW / 10 {
            break;
        }
        before = now;
    }
    started.elapsed().saturating_sub(WINDOW)
}

/// `redis-server` on PATH, or where Debian puts it.
fn find_redis_server() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("redis-server")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/bin/redis-server")]).find(|candidate| candidate.is_file())
}

/// A private memory-only redis-server on a free loopback port, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl RedisServer {
    /// Starts `program` with its files in `dir`, pinned to `cpu` when given (and at the
    /// niceness of the servers), and waits until it answers PING.
    fn start(program: &Path, dir: &Path, cpu: Option<usize>) -> io::Result<RedisServer> {
        fs::create_dir_all(dir)?;
        let port = process::free_address().port();
        let log = dir.join("redis-server.log");
        let output = fs::File::create(&log)?;
        let mut command = process::pinned_command(program, cpu);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display())))?;
        let mut server = RedisServer { child: Some(child), port, log };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if server.ask("PING").is_ok_and(|answer| answer == "PONG") {
                say(format!("redis: redis-server {} answers on port {port}", server.pid()));
                return Ok(server);
            }
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(io::Error::other(format!(
                    "redis-server exited at start-up with {status}{}",
                    server.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("redis-server did not answer PING in time{}", server.log_tail())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Bytes Redis's allocator holds for data (`used_memory:` of INFO memory).
    fn used_memory(&self) -> io::Result<u64> {
        let info = self.ask("INFO memory")?;
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| io::Error::other("INFO memory has no used_memory line"))
    }

    /// Keys in database 0.
    fn dbsize(&self) -> io::Result<u64> {
        self.ask("DBSIZE")?.trim().parse().map_err(|_| io::Error::other("DBSIZE did not answer a number"))
    }

    /// One inline command; the answer of a simple string, integer or bulk string reply.
    fn ask(&self, command: &str) -> io::Result<String> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut reader = BufReader::new(stream.take(MOST_REPLY as u64 + 64));
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at_checked(1).unwrap_or(("", ""));
        match kind {
            "+" | ":" => Ok(rest.to_string()),
            "$" => {
                let length: usize = rest
                    .parse()
                    .ok()
                    .filter(|&n| n <= MOST_REPLY)
                    .ok_or_else(|| io::Error::other(format!("unexpected bulk length {rest:?}")))?;
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
            _ => Err(io::Error::other(format!("Redis answered {command:?} with {line:?}"))),
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("\n--- {} ---\n{}", self.log.display(), lines[lines.len().saturating_sub(20)..].join("\n"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
