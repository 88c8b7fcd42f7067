//! The figures a run produced, and the report printed at the end, with each target (issue 8's,
//! raised by issue 21) and whether it holds; the TLS part has no target, its ratio is information.

use std::fmt;
use std::time::Duration;

use super::load::{Answers, LoadResult};

/// One load run against one server.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub requests: u64,
    /// Logins (or flood reports) completed.
    pub units: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub units_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub answers: Answers,
    /// CPU time the server used during the run, and the generator.
    pub server_cpu: Duration,
    pub generator_cpu: Duration,
    /// The share of the machine's CPU time the hypervisor stole during the run.
    pub steal: f64,
}

impl RunFigures {
    pub fn from_result(result: &LoadResult, server_cpu: Duration) -> RunFigures {
        RunFigures {
            requests: result.answers.requests(),
            units: result.answers.units,
            seconds: result.elapsed.as_secs_f64(),
            requests_per_second: result.requests_per_second(),
            units_per_second: result.units_per_second(),
            p50: result.quantile(0.50),
            p99: result.quantile(0.99),
            p999: result.quantile(0.999),
            max: result.max_latency(),
            answers: result.answers.clone(),
            server_cpu,
            generator_cpu: result.generator_cpu,
            steal: result.machine.steal_share(),
        }
    }

    /// Server CPU per request, microseconds.
    pub fn server_cpu_per_request_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// One line for progress output.
    pub fn summary(&self) -> String {
        format!(
            "{} requests ({} logins) in {:.1} s: {:.0} req/s, {:.0} logins/s; latency p50 {} p99 {} p99.9 {} max {}; \
             server CPU {:.1} s ({:.1} us/request, {:.0}% of a core), generator CPU {:.1} s; allow: {} allowed, {} delayed, \
             {} refused; {} HTTP errors, {} reconnects; steal {:.1}% of the machine",
            self.requests,
            self.units,
            self.seconds,
            self.requests_per_second,
            self.units_per_second,
            us(self.p50),
            us(self.p99),
            us(self.p999),
            us(self.max),
            self.server_cpu.as_secs_f64(),
            self.server_cpu_per_request_us(),
            100.0 * self.server_cpu.as_secs_f64() / self.seconds.max(1e-9),
            self.generator_cpu.as_secs_f64(),
            self.answers.allowed,
            self.answers.delayed,
            self.answers.refused,
            self.answers.http_errors,
            self.answers.connection_errors,
            100.0 * self.steal,
        )
    }
}

fn us(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} us", d.as_secs_f64() * 1e6)
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The mix: peak throughput and fixed-rate latency, mailwarden and the baseline.
#[derive(Debug, Clone, Default)]
pub struct MixFigures {
    pub firewalled: usize,
    pub bans_before: u64,
    /// Rounds alternating between the servers, and mailwarden's throughput as a share of the
    /// baseline's in each.
    pub rounds: usize,
    pub round_ratios: Vec<f64>,
    pub connections: usize,
    pub mailwarden: Option<RunFigures>,
    pub baseline: Option<RunFigures>,
    /// The baseline that reads each body without parsing it (the framework alone).
    pub floor: Option<RunFigures>,
    pub rate: f64,
    pub rate_seconds: f64,
    pub rate_mailwarden: Option<RunFigures>,
    pub rate_baseline: Option<RunFigures>,
    pub rss_start_kib: u64,
    pub rss_after_kib: u64,
    pub rss_end_kib: u64,
    /// Lines mailwarden logged (one per refusal).
    pub log_lines: usize,
    /// Successful logins the journal stored as known sources, and those it dropped because
    /// its queue was full (the writer yields to the request path, src/journal.rs).
    pub known_stored: u64,
    pub known_dropped: u64,
    /// `perf report` lines: the hottest functions of mailwarden's throughput run.
    pub perf_top: Vec<String>,
}

/// Resident size under many sources.
#[derive(Debug, Clone, Default)]
pub struct MemoryFigures {
    pub cap: u64,
    pub rss_idle_kib: u64,
    pub bans_placed: u64,
    pub first_sources: u64,
    pub first: Option<RunFigures>,
    pub rss_after_first_kib: u64,
    pub tracked_after_first: u64,
    pub flood_sources: u64,
    pub flood: Option<RunFigures>,
    /// (seconds into the flood, sources sent so far, RSS KiB).
    pub samples: Vec<(f64, u64, u64)>,
    pub rss_end_kib: u64,
    pub tracked_end: u64,
    /// The sources banned first and checked after the flood (the bans in force may be more:
    /// a few of them share a /24, which gets a subnet ban of its own).
    pub bans_checked: u64,
    /// Bans checked after the flood: still listed by the admin API, and still refused.
    pub bans_listed_after: u64,
    pub bans_refused_after: u64,
}

impl MemoryFigures {
    /// RSS at the sample nearest to `share` of the flood.
    fn rss_at(&self, share: f64) -> u64 {
        let target = (self.flood_sources as f64 * share) as u64;
        self.samples.iter().min_by_key(|s| s.1.abs_diff(target)).map_or(0, |s| s.2)
    }

    /// Growth of RSS over the second half of the flood, as a share of RSS at its middle.
    pub fn second_half_growth(&self) -> f64 {
        let middle = self.rss_at(0.5).max(1);
        let peak = self.samples.iter().filter(|s| s.1 >= self.flood_sources / 2).map(|s| s.2).max().unwrap_or(middle);
        (peak.max(self.rss_end_kib) as f64 - middle as f64) / middle as f64
    }
}

/// Logins through a real Dovecot.
#[derive(Debug, Clone, Default)]
pub struct DovecotFigures {
    pub logins: usize,
    pub concurrency: usize,
    /// The Dovecot asking mailwarden.
    pub with: DovecotLogins,
    /// The Dovecot asking the baseline instead: what any policy server's round trips cost.
    pub baseline: DovecotLogins,
    /// The Dovecot without a policy server.
    pub without: DovecotLogins,
    pub failed: usize,
    /// The share of the machine's CPU time the hypervisor stole during the sequential logins.
    pub steal: f64,
}

/// One Dovecot instance's logins.
#[derive(Debug, Clone, Copy, Default)]
pub struct DovecotLogins {
    /// Sequential logins, connect to the tagged OK: mean and percentiles.
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// Whole sessions (connect, LOGIN, LOGOUT) per second with `concurrency` clients.
    pub rate: f64,
}

impl DovecotLogins {
    /// What a sequential login costs here more than at `without` (0.03: 3%).
    pub fn sequential_cost_over(&self, without: &DovecotLogins) -> f64 {
        self.mean.as_secs_f64() / without.mean.as_secs_f64().max(1e-12) - 1.0
    }

    /// The same from the concurrent clients' session rates.
    pub fn concurrent_cost_over(&self, without: &DovecotLogins) -> f64 {
        without.rate / self.rate.max(1e-12) - 1.0
    }
}

/// The login mix against an embedded and a redis-mode mailwarden (issue 9; issue 21 asks for 75% of the embedded throughput).
#[derive(Debug, Clone, Default)]
pub struct RedisFigures {
    pub logins: usize,
    pub rounds: usize,
    pub connections: usize,
    /// Bans each server holds after the banning reports.
    pub bans_embedded: u64,
    pub bans_redis_mode: u64,
    pub embedded: RunFigures,
    /// Its `server_cpu` is mailwarden's plus redis-server's.
    pub redis_mode: RunFigures,
    /// The two parts of that CPU time.
    pub redis_mode_mailwarden_cpu: Duration,
    pub redis_mode_redis_cpu: Duration,
    /// How long each server (with redis-server) kept working after its runs' last answers, in
    /// all: the redis-mode node's worker sending what it had queued. Its CPU time is counted.
    pub busy_after_embedded: Duration,
    pub busy_after_redis_mode: Duration,
    /// Redis mode's throughput as a share of embedded's, per round.
    pub round_ratios: Vec<f64>,
    /// redis-server's CPU time from its start to the end of the part.
    pub redis_cpu_total: Duration,
    /// `used_memory` (bytes) and keys of redis-server at the end.
    pub used_memory: u64,
    pub keys: u64,
    /// Counted logins the redis-mode node sent to Redis, and dropped (queue full or an error).
    pub shared_sent: u64,
    pub shared_dropped: u64,
    pub rss_embedded_kib: u64,
    pub rss_redis_mode_kib: u64,
}

impl RedisFigures {
    /// Redis mode's throughput over embedded's.
    pub fn throughput_ratio(&self) -> f64 {
        self.redis_mode.requests_per_second / self.embedded.requests_per_second.max(1e-9)
    }

    /// Embedded's server CPU per request over redis mode's (mailwarden plus redis-server).
    pub fn cpu_ratio(&self) -> f64 {
        self.embedded.server_cpu_per_request_us() / self.redis_mode.server_cpu_per_request_us().max(1e-9)
    }

    fn per_request_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.redis_mode.requests.max(1) as f64
    }
}

/// The login mix against a plain and a TLS policy listener (issue 20; no target).
#[derive(Debug, Clone, Default)]
pub struct TlsFigures {
    pub logins: usize,
    pub rounds: usize,
    pub connections: usize,
    /// Bans each server holds before the mix.
    pub bans_plain: u64,
    pub bans_tls: u64,
    pub plain: RunFigures,
    pub tls: RunFigures,
    /// TLS throughput as a share of plain's, per round.
    pub round_ratios: Vec<f64>,
    pub rss_plain_kib: u64,
    pub rss_tls_kib: u64,
}

impl TlsFigures {
    /// TLS's throughput over plain's.
    pub fn throughput_ratio(&self) -> f64 {
        self.tls.requests_per_second / self.plain.requests_per_second.max(1e-9)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub mix: Option<MixFigures>,
    pub memory: Option<MemoryFigures>,
    pub redis: Option<RedisFigures>,
    pub tls: Option<TlsFigures>,
    pub dovecot: Option<DovecotFigures>,
}

/// Everything a run found.
#[derive(Debug, Clone)]
pub struct Report {
    pub cpus: usize,
    pub pinned: bool,
    pub figures: Figures,
    pub notes: Vec<String>,
    pub seconds: f64,
    /// The share of the machine's CPU time the hypervisor stole over the whole benchmark.
    pub steal: f64,
}

/// What a run's steal means for an absolute target, after its verdict: nothing below 1%.
fn stolen(steal: f64) -> String {
    if steal < 0.01 {
        String::new()
    } else {
        format!(
            " (the hypervisor stole {:.1}% of the CPU time meanwhile: compare the baseline's figure of the same run)",
            100.0 * steal
        )
    }
}

fn verdict(holds: bool) -> &'static str {
    if holds { "HOLDS" } else { "MISSED" }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== mailwarden benchmark ==")?;
        writeln!(
            f,
            "machine: {} CPUs; {}",
            self.cpus,
            if self.pinned { "load generator pinned to CPU 0, server to CPU 1" } else { "not pinned" }
        )?;
        if let Some(mix) = &self.figures.mix {
            writeln!(
                f,
                "\n-- login mix ({} connections; {} mailboxes with firewall rules; {} sources banned first) --",
                mix.connections, mix.firewalled, mix.bans_before
            )?;
            if let Some(run) = &mix.mailwarden {
                writeln!(f, "mailwarden peak: {}", run.summary())?;
            }
            if let Some(run) = &mix.baseline {
                writeln!(f, "baseline peak:   {}", run.summary())?;
            }
            if let Some(run) = &mix.floor {
                writeln!(f, "floor peak:      {}", run.summary())?;
            }
            if let (Some(m), Some(b)) = (&mix.mailwarden, &mix.baseline) {
                let ratio = m.requests_per_second / b.requests_per_second.max(1e-9);
                let cpu_ratio = b.server_cpu_per_request_us() / m.server_cpu_per_request_us().max(1e-9);
                let (low, high) =
                    mix.round_ratios.iter().fold((f64::MAX, f64::MIN), |(low, high), r| (low.min(*r), high.max(*r)));
                if !mix.round_ratios.is_empty() {
                    writeln!(
                        f,
                        "per round ({} rounds alternating between the servers): {:.1}% to {:.1}% of the baseline",
                        mix.rounds,
                        100.0 * low,
                        100.0 * high
                    )?;
                }
                writeln!(
                    f,
                    "throughput ratio: {:.1}% of the baseline ({:.0} vs {:.0} req/s); by server CPU per request {:.1}% \
                     ({:.1} vs {:.1} us) -- target >= 80%: {}",
                    100.0 * ratio,
                    m.requests_per_second,
                    b.requests_per_second,
                    100.0 * cpu_ratio,
                    m.server_cpu_per_request_us(),
                    b.server_cpu_per_request_us(),
                    verdict(ratio >= 0.8)
                )?;
                if let Some(floor) = &mix.floor {
                    writeln!(
                        f,
                        "against the floor (the framework alone, reading each body without parsing it): {:.1}% \
                         ({:.0} vs {:.0} req/s); by server CPU per request {:.1}% ({:.1} vs {:.1} us)",
                        100.0 * m.requests_per_second / floor.requests_per_second.max(1e-9),
                        m.requests_per_second,
                        floor.requests_per_second,
                        100.0 * floor.server_cpu_per_request_us() / m.server_cpu_per_request_us().max(1e-9),
                        m.server_cpu_per_request_us(),
                        floor.server_cpu_per_request_us()
                    )?;
                }
                // The tail at saturation (issue 21): every request of the peak run is timed, so
                // both servers' p99 under full load come from the same rounds.
                let tail = m.p99.as_secs_f64() / b.p99.as_secs_f64().max(1e-9);
                writeln!(
                    f,
                    "tail at saturation: p99 {} vs the baseline's {} ({:.2}x), p99.9 {} vs {} -- target p99 within 2x: {}",
                    us(m.p99),
                    us(b.p99),
                    tail,
                    us(m.p999),
                    us(b.p999),
                    verdict(tail <= 2.0)
                )?;
            }
            if let Some(run) = &mix.rate_mailwarden {
                writeln!(f, "mailwarden at {} req/s for {} s: {}", mix.rate, mix.rate_seconds, run.summary())?;
                writeln!(
                    f,
                    "latency at {} req/s: p50 {}, p99 {}, p99.9 {} -- target p99 < 0.4 ms: {}{}",
                    mix.rate,
                    us(run.p50),
                    us(run.p99),
                    us(run.p999),
                    verdict(run.p99 < Duration::from_micros(400)),
                    stolen(run.steal)
                )?;
            }
            if let Some(run) = &mix.rate_baseline {
                writeln!(f, "baseline at {} req/s for {} s: {}", mix.rate, mix.rate_seconds, run.summary())?;
                writeln!(
                    f,
                    "baseline latency at {} req/s: p50 {}, p99 {}, p99.9 {} (the machine's own floor for the target above)",
                    mix.rate,
                    us(run.p50),
                    us(run.p99),
                    us(run.p999)
                )?;
            }
            // Without the peak run (`--parts latency`) there is no figure after it.
            let after_peak = match mix.mailwarden {
                Some(_) => format!("{:.1} MiB after the peak run, ", mib(mix.rss_after_kib)),
                None => String::new(),
            };
            writeln!(
                f,
                "mailwarden RSS: {:.1} MiB after start and bans, {after_peak}{:.1} MiB at the end; {} log lines",
                mib(mix.rss_start_kib),
                mib(mix.rss_end_kib),
                mix.log_lines
            )?;
            writeln!(
                f,
                "mailwarden journal: {} known sources stored, {} dropped (queue full)",
                mix.known_stored, mix.known_dropped
            )?;
            if !mix.perf_top.is_empty() {
                writeln!(f, "hottest functions (perf, self time, mailwarden's peak run):")?;
                for line in &mix.perf_top {
                    writeln!(f, "  {line}")?;
                }
            }
        }
        if let Some(memory) = &self.figures.memory {
            writeln!(f, "\n-- memory (autoban.max_tracked_sources = {}) --", memory.cap)?;
            writeln!(f, "idle with {} bans: {:.1} MiB", memory.bans_placed, mib(memory.rss_idle_kib))?;
            if let Some(run) = &memory.first {
                writeln!(f, "{} distinct sources failing once: {}", memory.first_sources, run.summary())?;
            }
            writeln!(
                f,
                "RSS after {} distinct sources failed once: {:.1} MiB ({} tracked) -- target <= 256 MiB for 1,000,000: {}",
                memory.first_sources,
                mib(memory.rss_after_first_kib),
                memory.tracked_after_first,
                if memory.first_sources >= 1_000_000 {
                    verdict(memory.rss_after_first_kib <= 256 * 1024)
                } else {
                    "not measured at 1,000,000"
                }
            )?;
            if let Some(run) = &memory.flood {
                writeln!(f, "flood of {} more distinct sources: {}", memory.flood_sources, run.summary())?;
            }
            let shown: Vec<String> = thin(&memory.samples, 12)
                .iter()
                .map(|(seconds, sent, rss)| format!("{:.0}s/{:.1}M/{:.0}MiB", seconds, *sent as f64 / 1e6, mib(*rss)))
                .collect();
            writeln!(f, "RSS during the flood (time/sources sent/RSS): {}", shown.join(" "))?;
            let growth = memory.second_half_growth();
            writeln!(
                f,
                "RSS at the end {:.1} MiB ({} tracked); growth over the flood's second half {:+.1}% -- target flat plateau (< 5%): {}",
                mib(memory.rss_end_kib),
                memory.tracked_end,
                100.0 * growth,
                verdict(growth < 0.05)
            )?;
            writeln!(
                f,
                "bans after the flood: {} of {} still listed, {} of {} still refused -- target none lost: {}",
                memory.bans_listed_after,
                memory.bans_checked,
                memory.bans_refused_after,
                memory.bans_checked,
                verdict(
                    memory.bans_listed_after == memory.bans_checked && memory.bans_refused_after == memory.bans_checked
                )
            )?;
        }
        if let Some(redis) = &self.figures.redis {
            writeln!(
                f,
                "\n-- redis mode against embedded ({} logins, {} connections; {} and {} sources banned first) --",
                redis.logins, redis.connections, redis.bans_embedded, redis.bans_redis_mode
            )?;
            writeln!(f, "embedded peak:   {}", redis.embedded.summary())?;
            writeln!(f, "redis-mode peak: {}", redis.redis_mode.summary())?;
            let rounds: Vec<String> = redis.round_ratios.iter().map(|r| format!("{:.1}%", 100.0 * r)).collect();
            writeln!(
                f,
                "per round ({} rounds alternating between the two): {} of embedded",
                redis.rounds,
                rounds.join(", ")
            )?;
            writeln!(
                f,
                "redis-mode throughput: {:.1}% of embedded ({:.0} vs {:.0} req/s); by server CPU per request {:.1}% \
                 ({:.1} us embedded vs {:.1} us redis mode: mailwarden {:.1} + redis-server {:.1}) -- \
                 target >= 75% (issue 21): {}",
                100.0 * redis.throughput_ratio(),
                redis.redis_mode.requests_per_second,
                redis.embedded.requests_per_second,
                100.0 * redis.cpu_ratio(),
                redis.embedded.server_cpu_per_request_us(),
                redis.redis_mode.server_cpu_per_request_us(),
                redis.per_request_us(redis.redis_mode_mailwarden_cpu),
                redis.per_request_us(redis.redis_mode_redis_cpu),
                verdict(redis.throughput_ratio() >= 0.75)
            )?;
            writeln!(
                f,
                "redis-server: CPU {:.1} s since its start ({:.1} s during the redis-mode runs); used_memory {:.1} MiB; \
                 {} keys; counted logins sent to Redis {}, dropped {}",
                redis.redis_cpu_total.as_secs_f64(),
                redis.redis_mode_redis_cpu.as_secs_f64(),
                redis.used_memory as f64 / (1024.0 * 1024.0),
                redis.keys,
                redis.shared_sent,
                redis.shared_dropped
            )?;
            writeln!(
                f,
                "busy after the runs' last answers (counted in the CPU per request): redis mode {:.1} s, embedded \
                 {:.1} s in all",
                redis.busy_after_redis_mode.as_secs_f64(),
                redis.busy_after_embedded.as_secs_f64()
            )?;
            writeln!(
                f,
                "mailwarden RSS at the end: embedded {:.1} MiB, redis mode {:.1} MiB",
                mib(redis.rss_embedded_kib),
                mib(redis.rss_redis_mode_kib)
            )?;
        }
        if let Some(tls) = &self.figures.tls {
            writeln!(
                f,
                "\n-- TLS against plain HTTP on the policy listener ({} logins, {} keep-alive connections; {} and {} sources banned first) --",
                tls.logins, tls.connections, tls.bans_plain, tls.bans_tls
            )?;
            writeln!(f, "plain peak: {}", tls.plain.summary())?;
            writeln!(f, "TLS peak:   {}", tls.tls.summary())?;
            let rounds: Vec<String> = tls.round_ratios.iter().map(|r| format!("{:.1}%", 100.0 * r)).collect();
            writeln!(
                f,
                "per round ({} rounds alternating between the two): {} of plain",
                tls.rounds,
                rounds.join(", ")
            )?;
            writeln!(
                f,
                "TLS throughput: {:.1}% of plain ({:.0} vs {:.0} req/s); server CPU per request {:.1} us with TLS, {:.1} us \
                 without -- information, no target",
                100.0 * tls.throughput_ratio(),
                tls.tls.requests_per_second,
                tls.plain.requests_per_second,
                tls.tls.server_cpu_per_request_us(),
                tls.plain.server_cpu_per_request_us()
            )?;
            writeln!(
                f,
                "mailwarden RSS at the end: plain {:.1} MiB, TLS {:.1} MiB",
                mib(tls.rss_plain_kib),
                mib(tls.rss_tls_kib)
            )?;
        }
        if let Some(dovecot) = &self.figures.dovecot {
            let (with, baseline, without) = (&dovecot.with, &dovecot.baseline, &dovecot.without);
            writeln!(f, "\n-- Dovecot 2.3 IMAP logins ({} per configuration) --", dovecot.logins)?;
            writeln!(
                f,
                "sequential, connect to LOGIN OK: with mailwarden mean {} (p50 {}, p99 {}), without mean {} (p50 {}, p99 {})",
                us(with.mean),
                us(with.p50),
                us(with.p99),
                us(without.mean),
                us(without.p50),
                us(without.p99)
            )?;
            writeln!(
                f,
                "with the baseline as the policy server: mean {} (p50 {}, p99 {})",
                us(baseline.mean),
                us(baseline.p50),
                us(baseline.p99)
            )?;
            let sequential = with.sequential_cost_over(without);
            writeln!(
                f,
                "added cost of a login, sequential: {:+.1}% -- target < 3%: {}{}",
                100.0 * sequential,
                verdict(sequential < 0.03),
                stolen(dovecot.steal)
            )?;
            writeln!(
                f,
                "added cost with the baseline in mailwarden's place: {:+.1}% (what any policy server's two round trips cost here)",
                100.0 * baseline.sequential_cost_over(without)
            )?;
            writeln!(
                f,
                "{} concurrent clients, whole sessions: {:.0}/s with, {:.0}/s without mailwarden: {:+.1}% per login ({:.0}/s with the baseline: {:+.1}%)",
                dovecot.concurrency,
                with.rate,
                without.rate,
                100.0 * with.concurrent_cost_over(without),
                baseline.rate,
                100.0 * baseline.concurrent_cost_over(without)
            )?;
            if dovecot.failed > 0 {
                writeln!(f, "failed logins: {}", dovecot.failed)?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        writeln!(
            f,
            "\nthe run took {:.0} s; the hypervisor stole {:.1}% of the machine's CPU time (each run's share is on its line)",
            self.seconds,
            100.0 * self.steal
        )
    }
}

/// At most `n` of `samples`, evenly spread, always with the last.
fn thin<T: Clone>(samples: &[T], n: usize) -> Vec<T> {
    if samples.len() <= n {
        return samples.to_vec();
    }
    let step = samples.len() as f64 / n as f64;
    let mut out: Vec<T> = (0..n).map(|i| samples[(i as f64 * step) as usize].clone()).collect();
    if let Some(last) = samples.last() {
        out.push(last.clone());
    }
    out
}
