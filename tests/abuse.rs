//! Connection abuse against the real binary: oversized bodies, slow senders, thousands of idle
//! connections, and a request flood on the public page. While each runs, a normal client (Dovecot's allow
//! requests) must keep its p99 within twice its quiet value (with a floor of 10 ms, so a busy
//! 2-core CI machine does not turn scheduling noise into a failure; while oversized bodies
//! stream in or idle connections are held, the best of up to three measurements; for abuses
//! that end sooner, one of up to three runs on a fresh server). The tests run one at a time so
//! they do not measure each other.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::mailwarden::{Mailwarden, free_port, login_body};

/// p99 of `n` allow requests from a normal client over one keep-alive connection.
fn normal_client_p99(mw: &Mailwarden, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let started = Instant::now();
            let (status, _) = mw.policy(
                "allow",
                &login_body(&format!("198.18.{}.{}", i / 250, i % 250 + 1), "alice@example.com", "0f96"),
            );
            assert_eq!(status, 200);
            started.elapsed()
        })
        .collect();
    times.sort();
    times[(n * 99 / 100).min(n - 1)]
}

fn allowed(quiet: Duration) -> Duration {
    (quiet * 2).max(quiet + Duration::from_millis(10))
}

/// The normal client's p99 while an abuse that lasts goes on: the best of up to three
/// measurements, so a moment of scheduling noise on a busy 2-core machine is not taken for a
/// slowdown. A slowdown the abuse causes shows in all three.
fn normal_client_p99_during(mw: &Mailwarden, quiet: Duration) -> Duration {
    let mut best = normal_client_p99(mw, 300);
    for _ in 1..3 {
        if best <= allowed(quiet) {
            break;
        }
        best = best.min(normal_client_p99(mw, 300));
    }
    best
}

fn assert_within_twice(quiet: Duration, during: Duration, what: &str) {
    let allowed = allowed(quiet);
    assert!(during <= allowed, "{what}: p99 {during:?} against {quiet:?} quiet (allowed {allowed:?})");
    eprintln!("{what}: p99 {during:?} (quiet {quiet:?})");
}

/// Runs `scenario` (which checks everything else itself and returns the quiet and the during
/// p99) up to three times, each on a fresh server, until the during p99 is within bounds: a
/// slowdown the abuse causes shows in every attempt, a moment of noise on a busy 2-core
/// machine does not. For abuses that end within one measurement.
fn within_twice_in_one_of_three_runs(what: &str, mut scenario: impl FnMut() -> (Duration, Duration)) {
    let mut measured = scenario();
    for _ in 1..3 {
        if measured.1 <= allowed(measured.0) {
            break;
        }
        eprintln!("{what}: p99 {:?} against {:?} quiet; once more", measured.1, measured.0);
        measured = scenario();
    }
    assert_within_twice(measured.0, measured.1, what);
}

/// Held by each test so they measure one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::from((from, 0)).into()).expect("bind");
    socket.connect(&to.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

#[test]
fn slow_senders_are_cut_off_and_do_not_slow_dovecot_down() {
    let _serial = serial();
    within_twice_in_one_of_three_runs("with 200 slow senders", slow_senders_once);
}

fn slow_senders_once() -> (Duration, Duration) {
    let mw = Mailwarden::start_with("");
    let mut config = std::fs::read_to_string(&mw.config_path).unwrap();
    config = config.replacen("state_dir = \"state\"", "state_dir = \"state\"\nclient_timeout = \"1s\"", 1);
    std::fs::write(&mw.config_path, config).unwrap();
    let mut mw = mw;
    mw.restart();
    let quiet = normal_client_p99(&mw, 300);

    // Half a request line and headers, then nothing; and a body that never arrives.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut stream = TcpStream::connect(mw.policy_addr).unwrap();
            let partial: &[u8] = if i % 2 == 0 {
                b"POST /?command=allow HTTP/1.1\r\nHost: x\r\n"
            } else {
                b"POST /?command=allow HTTP/1.1\r\nHost: x\r\nX-API-Key: test-api-key-0123456789\r\nContent-Length: 100\r\n\r\n{\"lo"
            };
            stream.write_all(partial).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            stream
        })
        .collect();
    let during = normal_client_p99(&mw, 300);

    let started = Instant::now();
    for stream in &mut slow {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "a slow sender got {text:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(8), "slow senders were cut off after about client_timeout");
    (quiet, during)
}

#[test]
fn a_stream_of_oversized_bodies_gets_413_and_does_not_slow_dovecot_down() {
    let _serial = serial();
    let mw = Mailwarden::start_with("");
    let quiet = normal_client_p99(&mw, 300);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, address) = (stop.clone(), mw.policy_addr);
            std::thread::spawn(move || {
                let chunk = vec![b'a'; 256 * 1024];
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut stream = TcpStream::connect(address).expect("connect");
                    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let head = "POST /?command=allow HTTP/1.1\r\nHost: x\r\nX-API-Key: test-api-key-0123456789\r\n\
                                Content-Type: application/json\r\nContent-Length: 8000000\r\n\r\n{\"login\":\"";
                    let _ = stream.write_all(head.as_bytes());
                    // Keep sending until the server has answered and closed.
                    for _ in 0..8 {
                        if stream.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    let mut answer = Vec::new();
                    let _ = stream.read_to_end(&mut answer);
                    statuses.push(String::from_utf8_lossy(&answer).split(' ').nth(1).unwrap_or("").to_string());
                }
                statuses
            })
        })
        .collect();
    let during = normal_client_p99_during(&mw, quiet);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<String> = senders.into_iter().flat_map(|s| s.join().unwrap()).collect();
    assert!(!statuses.is_empty());
    // A sender whose socket the server already closed may not read the answer; none got through.
    assert!(statuses.iter().all(|s| s == "413" || s.is_empty()), "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "413"), "{statuses:?}");
    assert_within_twice(quiet, during, &format!("with {} oversized bodies of 8 MB", statuses.len()));
}

#[test]
fn thousands_of_idle_connections_do_not_lock_dovecot_out() {
    let _serial = serial();
    let mw = Mailwarden::start();
    let quiet = normal_client_p99(&mw, 300);
    let idle: Vec<TcpStream> =
        (0..3000).map(|_| TcpStream::connect(mw.policy_addr).expect("an idle connection")).collect();
    let during = normal_client_p99_during(&mw, quiet);
    assert_within_twice(quiet, during, "with 3000 idle connections");
    drop(idle);
    assert!(mw.admin("GET", "/healthz").0 == 200);
}

#[test]
fn a_flood_on_the_public_page_is_limited_per_address_while_others_are_served() {
    let _serial = serial();
    within_twice_in_one_of_three_runs("while one address floods the public page", page_flood_once);
}

fn page_flood_once() -> (Duration, Duration) {
    let mut mw = Mailwarden::configure("");
    let port = free_port();
    mw.write_config(
        &format!("public_listen = \"127.0.0.1:{port}\"\n"),
        "[self_service]\nmax_requests_per_minute = 30\n",
    );
    mw.restart();
    let page: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = move |from: Ipv4Addr| {
        let mut stream = connect_from(from, page);
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.split(' ').nth(1).unwrap_or("").to_string()
    };
    let quiet = normal_client_p99(&mw, 300);
    let flooder = Ipv4Addr::new(127, 0, 0, 2);
    let handle = std::thread::spawn(move || (0..400).map(|_| get(flooder)).collect::<Vec<String>>());
    let during = normal_client_p99(&mw, 300);
    let statuses = handle.join().unwrap();
    assert_eq!(statuses.iter().filter(|s| *s == "200").count(), 30, "{statuses:?}");
    assert!(statuses.iter().skip(30).all(|s| s == "429"));
    assert_eq!(get(Ipv4Addr::new(127, 0, 0, 3)), "200", "another visitor is served");
    assert!(mw.admin("GET", "/metrics").1.contains("mailwarden_self_unblocks_total{result=\"rate_limited\"} 370"));
    (quiet, during)
}
