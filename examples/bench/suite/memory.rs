//! Resident size under many sources: a fresh mailwarden with `max_tracked_sources` set, a few
//! sources banned, then failed-login reports from distinct sources (each a new login and a new
//! password, as credential stuffing from a botnet looks). The resident size is read after the
//! first `memory_sources`, then sampled every second through the flood that follows; at the
//! end every ban placed first must still be listed and still refused.
//!
//! Neither the generator nor the server is pinned here: the flood is to be as fast as the
//! machine allows.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::load::{self, LoadSpec, Pace, Progress, Target, Workload};
use super::process::Server;
use super::report::{MemoryFigures, RunFigures};
use super::{Settings, say, world};

pub fn run(settings: &Settings, dir: &Path) -> io::Result<MemoryFigures> {
    let extra = format!("[autoban]\nmax_tracked_sources = {}\n", settings.max_tracked_sources);
    let server = super::start_mailwarden(settings, dir, &extra, None)?;
    let mut figures = MemoryFigures {
        cap: settings.max_tracked_sources,
        first_sources: settings.memory_sources,
        flood_sources: settings.flood_sources,
        ..Default::default()
    };
    figures.bans_placed = super::ban_sources(&server, settings.memory_bans)?;
    std::thread::sleep(Duration::from_secs(1));
    figures.rss_idle_kib = server.rss_kib();
    say(format!("memory: {} bans placed; RSS {} KiB", figures.bans_placed, figures.rss_idle_kib));

    let target = Target::plain(server.policy_addr, &server.api_key);
    let spec = |first: u64, count: u64| LoadSpec {
        target: target.clone(),
        workload: Workload::Flood { first, count },
        connections: settings.flood_connections,
        threads: 2,
        pace: Pace::Closed,
        pin_cpu: None,
    };
    let first = super::measured(&server, || load::run(&spec(0, settings.memory_sources)))?.figures();
    say(format!("memory: first {} sources: {}", settings.memory_sources, first.summary()));
    figures.first = Some(first);
    // Let the cache finish its pending bookkeeping before reading.
    std::thread::sleep(Duration::from_secs(2));
    figures.tracked_after_first = server.health("tracked_sources").unwrap_or(0);
    figures.rss_after_first_kib = server.rss_kib();
    say(format!(
        "memory: RSS {} KiB with {} sources tracked after {} failed once",
        figures.rss_after_first_kib, figures.tracked_after_first, settings.memory_sources
    ));

    let (flood, samples) = sampled(&server, &spec(settings.memory_sources, settings.flood_sources))?;
    say(format!("memory: flood of {} sources: {}", settings.flood_sources, flood.summary()));
    figures.flood = Some(flood);
    figures.samples = samples;
    std::thread::sleep(Duration::from_secs(2));
    figures.rss_end_kib = server.rss_kib();
    figures.tracked_end = server.health("tracked_sources").unwrap_or(0);
    let (listed, refused) = check_bans(&server, settings.memory_bans)?;
    figures.bans_checked = settings.memory_bans as u64;
    figures.bans_listed_after = listed;
    figures.bans_refused_after = refused;
    Ok(figures)
}

/// Runs the flood while a thread samples the resident size every second (and at the end).
fn sampled(server: &Server, spec: &LoadSpec) -> io::Result<(RunFigures, Vec<(f64, u64, u64)>)> {
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let cpu_before = server.cpu();
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = Vec::new();
            let mut last_print = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                if samples.last().is_none_or(|&(at, _, _)| started.elapsed().as_secs_f64() - at >= 1.0) {
                    samples.push((started.elapsed().as_secs_f64(), progress.units(), server.rss_kib()));
                }
                if last_print.elapsed() >= Duration::from_secs(15) {
                    last_print = Instant::now();
                    if let Some(&(at, sent, rss)) = samples.last() {
                        say(format!("memory: flood at {at:.0} s: {sent} sources sent, RSS {rss} KiB"));
                    }
                }
            }
            samples.push((started.elapsed().as_secs_f64(), progress.units(), server.rss_kib()));
            samples
        });
        let result = load::run_with_progress(spec, &progress);
        done.store(true, Ordering::Relaxed);
        let samples = sampler.join().map_err(|_| io::Error::other("the RSS sampler panicked"))?;
        let result = result?;
        Ok((RunFigures::from_result(&result, server.cpu().saturating_sub(cpu_before)), samples))
    })
}

/// How many of the first `count` banned sources the admin API still lists, and how many an
/// `allow` still refuses.
fn check_bans(server: &Server, count: usize) -> io::Result<(u64, u64)> {
    let (mut listed, mut refused) = (0, 0);
    for i in 0..count {
        let address = world::banned_address(i);
        let (status, _) = server.admin("GET", &format!("/api/v1/bans/{address}"), None)?;
        if status == 200 {
            listed += 1;
        }
        let body = world::allow_body_for(IpAddr::V4(address), "someone@example.com");
        let (_, answer) = server.policy("allow", &body)?;
        if answer.contains("\"status\":-1") {
            refused += 1;
        }
    }
    Ok((listed, refused))
}
