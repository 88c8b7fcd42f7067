//! Soak: a steady high load for `MAILWARDEN_SOAK_SECONDS` (default 120; `scripts/soak.sh` runs
//! an hour) with more distinct sources than `autoban.max_tracked_sources` and a steady trickle
//! of bans, sampling resident memory, open files, tracked sources and a normal client's p99 at
//! intervals. Nothing may grow beyond its cap: tracked sources stay under the bound, memory
//! levels off after the warm-up, open files stay flat, and the server answers throughout.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::mailwarden::Mailwarden;

const CAP: u64 = 5_000;

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// One keep-alive connection sending pre-built policy requests as fast as answers come.
fn hammer(address: std::net::SocketAddr, key: String, worker: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut i: u64 = worker << 40;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let n = i % 200_000;
        // Every 60th request is a wrong password from one of 50 attackers per worker, so bans
        // keep being placed and expiring; every 6th is a wrong password from one of 200,000
        // sources, far more than the cap; the rest are logins that pass.
        let attacker = i % 60 == 0;
        let failing = i % 6 == 0;
        let ip = if attacker {
            format!("10.250.{worker}.{}", (i / 60) % 50 + 1)
        } else {
            format!("10.{}.{}.{}", 100 + worker, (n / 250) % 250, n % 250 + 1)
        };
        let (command, body) = if i % 3 == 0 {
            let pwhash = if failing { format!("{i:08x}") } else { "0f96".into() };
            (
                "report",
                format!(
                    r#"{{"login":"user{}@example.com","pwhash":"{pwhash}","remote":"{ip}","protocol":"imap","success":{},"policy_reject":false,"tls":true}}"#,
                    i % 5000,
                    !failing
                ),
            )
        } else {
            (
                "allow",
                format!(
                    r#"{{"login":"user{}@example.com","pwhash":"0f96","remote":"{ip}","protocol":"imap","tls":true}}"#,
                    i % 5000
                ),
            )
        };
        let request = format!(
            "POST /?command={command} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

fn p99_of_a_normal_client(mw: &Mailwarden) -> Duration {
    let mut times: Vec<Duration> = (0..100)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(
                mw.policy("allow", &support::mailwarden::login_body("192.0.2.9", "bob@example.com", "0f96")).0,
                200
            );
            started.elapsed()
        })
        .collect();
    times.sort();
    times[98]
}

#[test]
fn a_steady_load_grows_nothing_beyond_its_caps() {
    let seconds: u64 = std::env::var("MAILWARDEN_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let every = Duration::from_secs((seconds / 12).clamp(5, 60));
    let mw =
        Mailwarden::start_with(&format!("[autoban]\nmax_tracked_sources = {CAP}\nwindow = \"2m\"\nban_for = \"1m\"\n"));
    let pid = mw.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (stop, sent, key, address) = (stop.clone(), sent.clone(), mw.api_key.clone(), mw.policy_addr);
            std::thread::spawn(move || hammer(address, key, w, stop, sent))
        })
        .collect();

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(every);
        let health: serde_json::Value =
            serde_json::from_str(&mw.admin("GET", "/healthz").1).expect("the server answers");
        let sample = (
            started.elapsed().as_secs(),
            resident_kib(pid),
            open_files(pid),
            health["tracked_sources"].as_u64().unwrap_or(0),
            health["active_bans"].as_u64().unwrap_or(0),
            p99_of_a_normal_client(&mw),
            sent.load(Ordering::Relaxed),
        );
        eprintln!(
            "t={:>5}s rss={:>7} KiB fds={:>4} tracked={:>6} bans={:>5} p99={:>8.2?} requests={}",
            sample.0, sample.1, sample.2, sample.3, sample.4, sample.5, sample.6
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }

    let total = sent.load(Ordering::Relaxed);
    assert!(total > seconds * 500, "the load ran: {total} requests");
    for s in &samples {
        assert!(s.3 <= CAP + CAP / 10, "tracked sources {} beyond the cap {CAP}", s.3);
    }
    let warm = &samples[samples.len() / 3..];
    let (first_rss, last_rss) = (warm[0].1, warm[warm.len() - 1].1);
    assert!(
        last_rss <= first_rss + first_rss / 4 + 16 * 1024,
        "memory kept growing: {first_rss} KiB -> {last_rss} KiB"
    );
    let (first_fds, last_fds) = (warm[0].2, warm[warm.len() - 1].2);
    assert!(last_fds <= first_fds + 16, "open files kept growing: {first_fds} -> {last_fds}");
    assert!(samples.iter().any(|s| s.4 > 0), "bans were placed during the soak");
}
