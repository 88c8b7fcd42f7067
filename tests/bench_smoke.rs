//! A smoke run of the benchmark (`examples/bench`, `scripts/bench.sh`) with tiny numbers, so
//! the machinery keeps working: the login mix against mailwarden, the baseline and the floor, the
//! fixed-rate run, the memory runs with their ban check, the mix against an embedded and a
//! redis-mode mailwarden (where redis-server is installed), the mix over a plain and a TLS policy
//! listener, and Dovecot logins with mailwarden, with the baseline in its place and with no
//! policy server (where Dovecot can run). It asserts that every part completes and prints its
//! figures, never how fast anything was.

#[allow(dead_code)]
#[path = "../examples/bench/suite/mod.rs"]
mod suite;

#[test]
fn the_benchmark_runs_every_part_with_tiny_numbers_and_prints_its_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = suite::Settings::smoke(dir.path().join("bench"), env!("CARGO_BIN_EXE_mailwarden").into());
    let report = suite::run(&settings).unwrap_or_else(|e| panic!("the benchmark failed: {e}"));
    let text = report.to_string();
    println!("{text}");
    for figure in [
        "mailwarden peak:",
        "baseline peak:",
        "floor peak:",
        "throughput ratio:",
        "against the floor (the framework alone",
        "tail at saturation: p99",
        "latency at 400 req/s: p50",
        "baseline latency at 400 req/s: p50",
        "mailwarden journal:",
        "RSS after 1500 distinct sources failed once",
        "RSS during the flood",
        "bans after the flood",
        "of the machine's CPU time (each run's share is on its line)",
    ] {
        assert!(text.contains(figure), "the report lacks {figure:?}:\n{text}");
    }

    let mix = report.figures.mix.as_ref().expect("mix figures");
    assert_eq!(mix.bans_before, settings.mix.banned as u64, "the mix's sources are banned first");
    assert!(mix.known_stored > 0, "the journal's figures come from mailwarden's metrics");
    for run in [&mix.mailwarden, &mix.baseline, &mix.floor, &mix.rate_mailwarden, &mix.rate_baseline] {
        let run = run.as_ref().expect("every run of the mix has figures");
        assert!(run.requests > 0 && run.answers.http_errors == 0, "{}", run.summary());
    }
    // The fixed-rate runs send on every slot of their schedule, late or not: the rate times
    // the length, give or take one slot a connection a round.
    let slots = settings.rate * settings.rate_seconds;
    let slack = (settings.rate_connections * settings.rounds) as f64;
    for run in [&mix.rate_mailwarden, &mix.rate_baseline].into_iter().flatten() {
        assert!((run.requests as f64 - slots).abs() <= slack, "{slots} slots: {}", run.summary());
        assert!((0.0..=1.0).contains(&run.steal), "{}", run.summary());
    }
    let peak = mix.mailwarden.as_ref().expect("mailwarden's peak run");
    assert_eq!(peak.units, settings.mix.logins as u64, "every login of the plan is replayed");
    assert!(peak.answers.refused > 0, "banned sources and firewall rules refuse some logins: {}", peak.summary());

    let memory = report.figures.memory.as_ref().expect("memory figures");
    assert_eq!(memory.bans_placed, settings.memory_bans as u64);
    assert_eq!(memory.bans_listed_after, memory.bans_placed, "no ban is lost to the flood");
    assert_eq!(memory.bans_refused_after, memory.bans_placed, "every ban still refuses");
    assert!(memory.samples.len() >= 2 && memory.rss_end_kib > 0);

    match &report.figures.redis {
        None => {
            // suite::run already fails under CI=true when redis-server is missing.
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: the redis part must run:\n{text}");
            assert!(report.notes.iter().any(|n| n.contains("Redis part skipped")), "{text}");
        }
        Some(redis) => {
            assert!(text.contains("redis-mode throughput:"), "{text}");
            for run in [&redis.embedded, &redis.redis_mode] {
                assert_eq!(run.answers.http_errors, 0, "{}", run.summary());
                assert_eq!(run.units, settings.redis_logins as u64, "every login is replayed: {}", run.summary());
            }
            assert_eq!(redis.bans_embedded, settings.mix.banned as u64, "{text}");
            assert_eq!(redis.bans_redis_mode, settings.mix.banned as u64, "{text}");
        }
    }

    let tls = report.figures.tls.as_ref().expect("tls figures");
    assert!(text.contains("TLS throughput:"), "{text}");
    for run in [&tls.plain, &tls.tls] {
        assert_eq!(run.units, settings.tls_logins as u64, "every login is replayed over both: {}", run.summary());
        assert_eq!(run.answers.http_errors, 0, "{}", run.summary());
    }
    assert_eq!((tls.bans_plain, tls.bans_tls), (settings.mix.banned as u64, settings.mix.banned as u64), "{text}");

    match &report.figures.dovecot {
        None => assert!(report.notes.iter().any(|n| n.contains("Dovecot part skipped")), "{text}"),
        Some(dovecot) => {
            assert!(text.contains("added cost of a login, sequential:"), "{text}");
            assert!(text.contains("added cost with the baseline in mailwarden's place:"), "{text}");
            // Every login went through, with mailwarden and with the baseline answering Dovecot.
            assert_eq!(dovecot.failed, 0, "{text}");
            assert!(dovecot.baseline.mean > std::time::Duration::ZERO && dovecot.baseline.rate > 0.0, "{text}");
        }
    }
}
