//! The load generator: Dovecot's auth-policy client imitated over raw HTTP/1.1 keep-alive
//! connections. Each connection sends one request at a time and waits for the answer, as
//! Dovecot does (one connection per request in flight, no pipelining), with Dovecot's headers
//! in Dovecot's order. A few threads, each a single-threaded tokio runtime, share the
//! connections; every request's latency is kept.
//!
//! Two paces: closed (every connection sends its next request as soon as the answer arrives:
//! peak throughput) and a fixed rate (each connection on its own schedule; a request the
//! server made late is timed from when it should have been sent, so a stall shows in the
//! percentiles instead of silently lowering the rate).
//!
//! A target may speak TLS (the tls part): each connection then makes one handshake when it
//! opens and keeps the session for all its requests, as Dovecot's HTTP client does.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::process;
use super::world::{Login, Password, World};

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub api_key: String,
    /// Speak TLS with this configuration (the server's name is its IP address).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// A plain-HTTP target.
    pub fn plain(addr: SocketAddr, api_key: &str) -> Target {
        Target { addr, api_key: api_key.to_string(), tls: None }
    }
}

/// What the connections replay.
#[derive(Clone)]
pub enum Workload {
    /// Logins of the mix: per login an `allow`, a second `allow` after a right password, and
    /// a `report`, each step depending on the answer before it, as in Dovecot.
    Mix { world: Arc<World>, plan: Arc<[Login]> },
    /// Failed-login reports only, from `count` distinct sources (`flood_address`).
    Flood { first: u64, count: u64 },
}

impl Workload {
    fn units(&self) -> u64 {
        match self {
            Workload::Mix { plan, .. } => plan.len() as u64,
            Workload::Flood { count, .. } => *count,
        }
    }
}

/// How fast.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the server answers, until the workload is done.
    Closed,
    /// `per_second` requests a second over all connections, for `duration` (or until the
    /// workload is done).
    Rate { per_second: f64, duration: Duration },
}

#[derive(Clone)]
pub struct LoadSpec {
    pub target: Target,
    pub workload: Workload,
    pub connections: usize,
    pub threads: usize,
    pub pace: Pace,
    /// Pin the generator's threads to this CPU (with taskset).
    pub pin_cpu: Option<usize>,
}

/// Counts of answers, summed over connections.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub allow: u64,
    pub report: u64,
    /// `allow` answered 0.
    pub allowed: u64,
    /// `allow` answered a delay (status > 0).
    pub delayed: u64,
    /// `allow` answered a refusal (status < 0).
    pub refused: u64,
    /// Answers other than HTTP 200.
    pub http_errors: u64,
    /// Connections that failed and were opened again.
    pub connection_errors: u64,
    /// Logins (or flood reports) completed.
    pub units: u64,
}

impl Answers {
    fn add(&mut self, other: &Answers) {
        self.allow += other.allow;
        self.report += other.report;
        self.allowed += other.allowed;
        self.delayed += other.delayed;
        self.refused += other.refused;
        self.http_errors += other.http_errors;
        self.connection_errors += other.connection_errors;
        self.units += other.units;
    }

    pub fn requests(&self) -> u64 {
        self.allow + self.report
    }
}

/// The result of one run.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub answers: Answers,
    pub elapsed: Duration,
    /// Every request's latency in nanoseconds, sorted.
    pub latencies: Vec<u32>,
    /// CPU time the generator's process used during the run.
    pub generator_cpu: Duration,
    /// The whole machine's CPU time during the run, and how much of it the hypervisor stole.
    pub machine: process::MachineTicks,
}

impl LoadResult {
    /// Adds the requests, time and latencies of `other` (the latencies are left unsorted).
    pub fn merge(&mut self, other: LoadResult) {
        self.answers.add(&other.answers);
        self.elapsed += other.elapsed;
        self.generator_cpu += other.generator_cpu;
        self.machine.add(other.machine);
        self.latencies.extend(other.latencies);
    }

    pub fn requests_per_second(&self) -> f64 {
        self.answers.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn units_per_second(&self) -> f64 {
        self.answers.units as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0 to 1).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        Duration::from_nanos(u64::from(self.latencies[rank - 1]))
    }

    pub fn max_latency(&self) -> Duration {
        Duration::from_nanos(self.latencies.last().copied().map_or(0, u64::from))
    }
}

/// Work shared by every connection of a run.
struct Shared {
    spec: LoadSpec,
    /// The next unit (login or flood report) to hand out.
    cursor: AtomicU64,
    started: Instant,
}

/// Progress of a running `run`, readable from another thread (units handed out so far).
#[derive(Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn units(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs the load to completion.
pub fn run(spec: &LoadSpec) -> io::Result<LoadResult> {
    run_with_progress(spec, &Progress::default())
}

/// Runs the load to completion, publishing the units completed to `progress`.
pub fn run_with_progress(spec: &LoadSpec, progress: &Progress) -> io::Result<LoadResult> {
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let cpu_before = process::cpu_time(std::process::id());
    let machine_before = process::MachineTicks::now();
    let shared = Arc::new(Shared { spec: spec.clone(), cursor: AtomicU64::new(0), started: Instant::now() });
    let mut handles = Vec::new();
    for thread in 0..threads {
        let shared = shared.clone();
        let progress = progress.clone();
        // Connections spread over threads as evenly as they go.
        let connections: Vec<usize> = (0..spec.connections).filter(|c| c % threads == thread).collect();
        let handle = std::thread::Builder::new()
            .name(format!("load-{thread}"))
            .spawn(move || generator_thread(shared, connections, progress))?;
        handles.push(handle);
    }
    let mut result = LoadResult::default();
    for handle in handles {
        let (answers, latencies) = handle.join().map_err(|_| io::Error::other("a load thread panicked"))??;
        result.answers.add(&answers);
        result.latencies.extend(latencies);
    }
    result.elapsed = shared.started.elapsed();
    result.generator_cpu = process::cpu_time(std::process::id()).saturating_sub(cpu_before);
    result.machine = process::MachineTicks::now().since(machine_before);
    result.latencies.sort_unstable();
    Ok(result)
}

fn generator_thread(
    shared: Arc<Shared>,
    connections: Vec<usize>,
    progress: Progress,
) -> io::Result<(Answers, Vec<u32>)> {
    process::place_this_thread(shared.spec.pin_cpu);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let tasks: Vec<_> = connections
            .into_iter()
            .map(|index| tokio::spawn(connection_task(shared.clone(), index, progress.clone())))
            .collect();
        let mut answers = Answers::default();
        let mut latencies = Vec::new();
        for task in tasks {
            let (a, l) = task.await.map_err(|e| io::Error::other(format!("connection task: {e}")))??;
            answers.add(&a);
            latencies.extend(l);
        }
        Ok((answers, latencies))
    })
}

/// One keep-alive connection's loop: takes units from the shared cursor until none are left
/// or the run's time is up.
async fn connection_task(shared: Arc<Shared>, index: usize, progress: Progress) -> io::Result<(Answers, Vec<u32>)> {
    let spec = &shared.spec;
    let total = spec.workload.units();
    let expected = (total / spec.connections.max(1) as u64).saturating_mul(3).min(1 << 24) as usize;
    let connection = Connection::open(&spec.target).await?;
    let mut session = Session {
        target: spec.target.clone(),
        connection,
        // The schedule starts once the connection is open: the threads' placement (a taskset
        // process each) and the connects would otherwise leave the first slots in the past,
        // and every round would open with requests timed from before they could be sent.
        pacer: Pacer::new(spec.pace, spec.connections, index, Instant::now(), spec.pin_cpu.is_some()),
        answers: Answers::default(),
        latencies: Vec::with_capacity(expected),
        body: Vec::with_capacity(512),
        request: Vec::with_capacity(1024),
    };
    loop {
        let unit = shared.cursor.fetch_add(1, Ordering::Relaxed);
        if unit >= total {
            break;
        }
        let finished = match &spec.workload {
            Workload::Mix { world, plan } => session.login(world, &plan[unit as usize]).await?,
            Workload::Flood { first, .. } => {
                super::world::flood_report_body(first + unit, &mut session.body);
                session.call("report").await?.is_some()
            }
        };
        if !finished {
            break;
        }
        session.answers.units += 1;
        progress.0.fetch_add(1, Ordering::Relaxed);
    }
    Ok((session.answers, session.latencies))
}

/// One connection and what it has counted.
struct Session {
    target: Target,
    connection: Connection,
    pacer: Pacer,
    answers: Answers,
    latencies: Vec<u32>,
    /// The JSON body of the next request.
    body: Vec<u8>,
    /// The whole next request, reused.
    request: Vec<u8>,
}

impl Session {
    /// One login as Dovecot asks about it; false when the run's time ran out midway.
    async fn login(&mut self, world: &World, login: &Login) -> io::Result<bool> {
        world.allow_body(login, &mut self.body);
        let Some(first) = self.call("allow").await? else {
            return Ok(false);
        };
        let (success, policy_reject) = if first < 0 {
            (false, true)
        } else if login.password == Password::Right {
            let Some(second) = self.call("allow").await? else {
                return Ok(false);
            };
            // A delay in the after-auth check is treated as success (reference §4).
            if second < 0 { (false, true) } else { (true, false) }
        } else {
            (false, false)
        };
        world.report_body(login, success, policy_reject, &mut self.body);
        Ok(self.call("report").await?.is_some())
    }

    /// Sends `self.body` as `command` when the pace allows; returns the answer's `status`, or
    /// `None` when the run's time is up. A broken connection is opened again once.
    async fn call(&mut self, command: &'static str) -> io::Result<Option<i64>> {
        let Some(start) = self.pacer.slot().await else {
            return Ok(None);
        };
        render_request(&mut self.request, &self.target, command, &self.body);
        let (http, status) = match self.connection.exchange(&self.request).await {
            Ok(answer) => answer,
            Err(_) => {
                self.answers.connection_errors += 1;
                self.connection = Connection::open(&self.target).await?;
                self.connection.exchange(&self.request).await?
            }
        };
        let nanos = start.elapsed().as_nanos();
        self.latencies.push(u32::try_from(nanos).unwrap_or(u32::MAX));
        if http != 200 || status.is_none() {
            self.answers.http_errors += 1;
        }
        let status = status.unwrap_or(0);
        if command == "allow" {
            self.answers.allow += 1;
            match status {
                0 => self.answers.allowed += 1,
                s if s > 0 => self.answers.delayed += 1,
                _ => self.answers.refused += 1,
            }
        } else {
            self.answers.report += 1;
        }
        Ok(Some(status))
    }
}

/// How late tokio's timer may wake a sleep (it rounds its deadline up to the next
/// millisecond), with a margin.
const TIMER_GRANULARITY: Duration = Duration::from_micros(1_500);

/// When each request may be sent.
enum Pacer {
    Closed,
    /// `spin`: wait for a slot's last stretch by yielding, not by the timer (see `slot`).
    Rate {
        next: Instant,
        interval: Duration,
        end: Instant,
        spin: bool,
    },
}

impl Pacer {
    /// Connection `index` of `connections` sends every `connections / rate` seconds, its
    /// schedule shifted by its share of that interval so the connections interleave.
    fn new(pace: Pace, connections: usize, index: usize, started: Instant, spin: bool) -> Pacer {
        match pace {
            Pace::Closed => Pacer::Closed,
            Pace::Rate { per_second, duration } => {
                let connections = connections.max(1) as f64;
                let interval = Duration::from_secs_f64(connections / per_second.max(1e-3));
                let offset = interval.mul_f64(index as f64 / connections);
                Pacer::Rate { next: started + offset, interval, end: started + duration, spin }
            }
        }
    }

    /// Waits for the next request's slot. Returns the instant its latency counts from: the
    /// slot itself when the connection was still busy with the last answer then (the server
    /// made this request late), else the moment it was actually sent (so the timer's own
    /// lateness is not counted against the server). `None` when the run is over.
    ///
    /// tokio's timer fires on whole milliseconds, after the deadline: sleeping until the slot
    /// would release every connection whose slot falls in one millisecond together, at
    /// 5,000 requests/s a burst of five each millisecond that queue behind each other in the
    /// server. So the wait sleeps to within the timer's granularity and then yields to the
    /// other connections until the slot comes, and the requests go out on their own slots.
    /// That keeps the generator's core busy, so it is done only when the generator has a core
    /// of its own (`spin`); unpinned, it would take CPU time from the server under test.
    async fn slot(&mut self) -> Option<Instant> {
        match self {
            Pacer::Closed => Some(Instant::now()),
            Pacer::Rate { next, interval, end, spin } => {
                let slot = *next;
                if slot >= *end {
                    return None;
                }
                *next += *interval;
                if Instant::now() >= slot {
                    return Some(slot);
                }
                let margin = if *spin { TIMER_GRANULARITY } else { Duration::ZERO };
                if let Some(wake) = slot.checked_sub(margin).filter(|wake| *wake > Instant::now()) {
                    tokio::time::sleep_until(wake.into()).await;
                }
                while *spin && Instant::now() < slot {
                    tokio::task::yield_now().await;
                }
                Some(Instant::now())
            }
        }
    }
}

/// Dovecot's request, byte for byte in its header order (reference §2.1), with a fixed Date.
fn render_request(out: &mut Vec<u8>, target: &Target, command: &str, body: &[u8]) {
    use std::io::Write as _;
    out.clear();
    let _ = write!(
        out,
        "POST /?command={command} HTTP/1.1\r\nHost: {}\r\nDate: Sun, 22 Nov 2026 08:19:20 GMT\r\n\
         User-Agent: dovecot/auth-policy-client\r\nContent-Length: {}\r\nConnection: Keep-Alive\r\n\
         Content-Type: application/json\r\nX-API-Key:  {}\r\n\r\n",
        target.addr,
        body.len(),
        target.api_key
    );
    out.extend_from_slice(body);
}

/// A byte stream to the server: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A keep-alive connection: one request, one answer.
struct Connection {
    /// Boxed for both kinds, so plain and TLS runs pay the same indirection.
    stream: Box<dyn Stream>,
    input: Vec<u8>,
}

impl Connection {
    async fn open(target: &Target) -> io::Result<Connection> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &target.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(target.addr.ip().into());
                Box::new(tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await?)
            }
        };
        Ok(Connection { stream, input: Vec::with_capacity(4096) })
    }

    /// Sends `request` and reads the answer: (HTTP status, the JSON `status` if there is one).
    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, Option<i64>)> {
        self.stream.write_all(request).await?;
        self.input.clear();
        loop {
            if self.input.capacity() - self.input.len() < 1024 {
                self.input.reserve(4096);
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
            }
            if let Some(answer) = parse_response(&self.input)? {
                return Ok(answer);
            }
        }
    }
}

/// A complete HTTP/1.1 answer with a Content-Length body in `input`, or `None` if more is to
/// come.
fn parse_response(input: &[u8]) -> io::Result<Option<(u16, Option<i64>)>> {
    let Some(head_end) = find(input, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&input[..head_end]).map_err(|_| bad("answer head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let http: u16 =
        status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .ok_or_else(|| bad("answer without Content-Length"))?;
    let body_start = head_end + 4;
    if input.len() < body_start + length {
        return Ok(None);
    }
    Ok(Some((http, json_status(&input[body_start..body_start + length]))))
}

/// The integer after `"status":` in a JSON answer.
fn json_status(body: &[u8]) -> Option<i64> {
    let at = find(body, b"\"status\":")? + b"\"status\":".len();
    let text = std::str::from_utf8(&body[at..]).ok()?.trim_start();
    let end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(text.len(), |(i, _)| i);
    text[..end].parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_once_complete() {
        let body = r#"{"status":-1,"msg":"banned"}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(parse_response(&answer.as_bytes()[..40]).unwrap(), None);
        assert_eq!(parse_response(&answer.as_bytes()[..answer.len() - 1]).unwrap(), None);
        assert_eq!(parse_response(answer.as_bytes()).unwrap(), Some((200, Some(-1))));
        assert_eq!(json_status(b"{\"status\":5,\"msg\":\"\"}"), Some(5));
    }
}
