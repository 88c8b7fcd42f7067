//! Signed webhooks: the `[webhooks.NAME]` endpoints, the notice types each takes, the
//! signature (`Mailwarden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`), and
//! delivery: one thread per endpoint reads its rows of the outbox, POSTs them within the
//! endpoint's timeout, retries with exponential backoff and jitter until its deadline, and
//! notes in the block log (once) when the endpoint keeps failing. At least once: a row leaves
//! the outbox only after a 2xx answer, so a crash between the answer and the removal sends
//! that notice again, with the same id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use prometheus::{IntCounterVec, IntGaugeVec};
use serde::Deserialize;
use sha2::Sha256;

use super::outbox::{Outbox, Row};
use super::{Notice, NoticeKind, Sink};
use crate::clock::{Clock, Timestamp};
use crate::events::{Event, EventKind};
use crate::journal::Journal;
use crate::secrets::Secret;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Mailwarden-Signature";
/// The header that carries the notice's id (also in the body), for receivers that drop
/// repeats before parsing.
pub const ID_HEADER: &str = "Mailwarden-Notice-Id";
/// Failed attempts in a row after which the block log notes that the endpoint keeps failing.
pub const FAILING_AFTER: u32 = 5;
/// The longest a delivery thread sleeps before looking at the outbox again.
const IDLE: Duration = Duration::from_secs(1);

/// One endpoint, validated.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The table's name (`[webhooks.siem]`): the metrics' `endpoint` label and the outbox's.
    pub name: String,
    pub url: String,
    pub secret: Secret,
    /// The notice types sent here; empty: every type.
    pub events: Vec<NoticeKind>,
    pub timeout: Duration,
    pub first_retry: Duration,
    pub max_retry_interval: Duration,
    /// How long after it was queued a notice is dropped if it could not be delivered.
    pub deadline: Duration,
    /// Notices waiting at most; a notice beyond them is dropped and counted.
    pub max_queued: usize,
}

impl WebhookSettings {
    pub fn wants(&self, kind: NoticeKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

/// `[webhooks.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    url: String,
    secret: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default = "defaults::timeout")]
    timeout: String,
    #[serde(default = "defaults::first_retry")]
    first_retry: String,
    #[serde(default = "defaults::max_retry_interval")]
    max_retry_interval: String,
    #[serde(default = "defaults::deadline")]
    deadline: String,
    #[serde(default = "defaults::max_queued")]
    max_queued: u64,
}

/// The defaults of an endpoint's optional keys, as the README documents them.
mod defaults {
    pub fn timeout() -> String {
        "5s".into()
    }
    pub fn first_retry() -> String {
        "1s".into()
    }
    pub fn max_retry_interval() -> String {
        "10m".into()
    }
    pub fn deadline() -> String {
        "24h".into()
    }
    pub fn max_queued() -> u64 {
        10_000
    }
}

/// A problem with one key of an endpoint: the key within `[webhooks.NAME]` (empty: the
/// table) and what is wrong.
pub type Problem = (String, String);

fn duration(key: &str, text: &str, min: Duration, max: Duration) -> Result<Duration, Problem> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= min && d <= max => Ok(d),
        Ok(_) => Err((
            key.into(),
            format!("{text:?} is outside {}..={}", humantime::format_duration(min), humantime::format_duration(max)),
        )),
        Err(e) => Err((key.into(), format!("{text:?} is not a duration such as \"5s\" ({e})"))),
    }
}

/// Reads `[webhooks.NAME]`; every problem found, each with its key.
pub fn parse(name: &str, given: &toml::Value) -> Result<WebhookSettings, Vec<Problem>> {
    let mut problems = Vec::new();
    if name.is_empty() || name.len() > 32 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        problems.push((String::new(), "the name must be 1 to 32 letters, digits, '_' or '-'".into()));
    }
    let written: Written = match serde_path_to_error::deserialize(given.clone()) {
        Ok(written) => written,
        Err(e) => {
            problems.push((e.path().to_string().trim_start_matches('.').to_string(), e.into_inner().to_string()));
            return Err(problems);
        }
    };
    let url = written.url.trim().to_string();
    let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    if host.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
        problems.push(("url".into(), format!("{url:?} is not an http:// or https:// URL")));
    }
    if written.secret.chars().count() < 16 {
        problems.push(("secret".into(), "must be 16 characters or more".into()));
    }
    let mut events = Vec::new();
    for label in &written.events {
        match NoticeKind::from_label(label) {
            Some(kind) => events.push(kind),
            None => problems.push(("events".into(), format!("{label:?} is not one of {:?}", NoticeKind::labels()))),
        }
    }
    let millisecond = Duration::from_millis(1);
    let durations = (
        duration("timeout", &written.timeout, Duration::from_millis(100), Duration::from_secs(60)),
        duration("first_retry", &written.first_retry, millisecond, Duration::from_secs(3600)),
        duration("max_retry_interval", &written.max_retry_interval, millisecond, Duration::from_secs(24 * 3600)),
        duration("deadline", &written.deadline, Duration::from_secs(1), Duration::from_secs(30 * 24 * 3600)),
    );
    if !(1..=1_000_000).contains(&written.max_queued) {
        problems.push(("max_queued".into(), format!("{} is outside 1..=1000000", written.max_queued)));
    }
    match durations {
        (Ok(timeout), Ok(first_retry), Ok(max_retry_interval), Ok(deadline)) if problems.is_empty() => {
            Ok(WebhookSettings {
                name: name.to_string(),
                url,
                secret: Secret::new(&written.secret),
                events,
                timeout,
                first_retry,
                max_retry_interval,
                deadline,
                max_queued: usize::try_from(written.max_queued).unwrap_or(usize::MAX),
            })
        }
        (timeout, first_retry, max_retry_interval, deadline) => {
            for result in [timeout, first_retry, max_retry_interval, deadline] {
                if let Err(problem) = result {
                    problems.push(problem);
                }
            }
            Err(problems)
        }
    }
}

/// The signature header's value for `body` sent at `unix_seconds`.
pub fn signature(secret: &Secret, unix_seconds: i64, body: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

/// The wait before attempt `attempts + 1`: `first_retry` doubled for each failure, at most
/// `max_retry_interval`, then scaled by `jitter` (0.5 to 1), so endpoints that failed together
/// are not retried together.
pub fn backoff(settings: &WebhookSettings, attempts: u32, jitter: f64) -> Duration {
    let doubled = settings.first_retry.saturating_mul(1u32 << attempts.saturating_sub(1).min(30));
    doubled.min(settings.max_retry_interval).mul_f64(jitter.clamp(0.5, 1.0))
}

fn jitter() -> f64 {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    0.5 + f64::from(byte[0]) / 510.0
}

/// The delivery metrics, by endpoint name (names come from the policy file: a bounded set).
#[derive(Clone)]
pub struct WebhookMetrics {
    /// Attempts by endpoint and result: `delivered`, `failed` (to be retried), `expired`
    /// (dropped at the deadline), `queue_full` (dropped, never queued).
    pub deliveries: IntCounterVec,
    pub queued: IntGaugeVec,
}

struct Endpoint {
    settings: WebhookSettings,
    agent: ureq::Agent,
}

/// The webhook sink: queues each notice for the endpoints that take it, and delivers.
pub struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
    outbox: Arc<Outbox>,
    metrics: WebhookMetrics,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Webhooks {
    /// Starts a delivery thread per endpoint, which first sends what the outbox kept from
    /// before a restart.
    pub fn start(
        settings: &[WebhookSettings],
        outbox: Outbox,
        clock: Arc<dyn Clock>,
        metrics: WebhookMetrics,
        block_log: Arc<Journal>,
    ) -> Webhooks {
        let names: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
        match outbox.drop_other_endpoints(&names) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(notices = n, "dropped webhook notices queued for endpoints no longer configured"),
            Err(e) => tracing::error!(error = %e, "cannot read the webhook outbox"),
        }
        let outbox = Arc::new(outbox);
        let stop = Arc::new(AtomicBool::new(false));
        let mut endpoints = Vec::new();
        let mut threads = Vec::new();
        for settings in settings {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(settings.timeout))
                .user_agent(concat!("mailwarden/", env!("CARGO_PKG_VERSION")))
                .build()
                .into();
            let endpoint = Arc::new(Endpoint { settings: settings.clone(), agent });
            for result in ["delivered", "failed", "expired", "queue_full"] {
                metrics.deliveries.with_label_values(&[&settings.name, result]);
            }
            let delivery = Delivery {
                endpoint: endpoint.clone(),
                outbox: outbox.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
                stop: stop.clone(),
                block_log: block_log.clone(),
            };
            match crate::background::spawn(format!("mailwarden-webhook-{}", settings.name), move || delivery.run()) {
                Ok(thread) => threads.push(thread),
                Err(e) => tracing::error!(endpoint = settings.name, error = %e, "cannot start webhook delivery"),
            }
            endpoints.push(endpoint);
        }
        Webhooks { endpoints, outbox, metrics, clock, stop, threads: Mutex::new(threads) }
    }

    fn wake(&self) {
        lock(&self.threads).iter().for_each(|thread| thread.thread().unpark());
    }
}

impl Sink for Webhooks {
    fn accept(&self, notice: &Notice) {
        self.accept_all(std::slice::from_ref(notice));
    }

    fn accept_all(&self, notices: &[Notice]) {
        let bodies: Vec<String> = notices.iter().map(Notice::to_json).collect();
        let rows: Vec<Row<'_>> = notices
            .iter()
            .zip(&bodies)
            .flat_map(|(notice, body)| {
                self.endpoints.iter().filter(|e| e.settings.wants(notice.kind)).map(move |e| Row {
                    endpoint: &e.settings.name,
                    max_queued: e.settings.max_queued,
                    id: &notice.id,
                    body,
                })
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let queued = self.outbox.add(&rows, self.clock.now()).unwrap_or_else(|e| {
            tracing::error!(error = %e, notices = notices.len(), "cannot queue webhook notices");
            vec![false; rows.len()]
        });
        for (row, _) in rows.iter().zip(queued).filter(|(_, queued)| !queued) {
            self.metrics.deliveries.with_label_values(&[row.endpoint, "queue_full"]).inc();
        }
        self.wake();
    }

    fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// One endpoint's delivery thread.
struct Delivery {
    endpoint: Arc<Endpoint>,
    outbox: Arc<Outbox>,
    metrics: WebhookMetrics,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    block_log: Arc<Journal>,
}

impl Delivery {
    fn run(self) {
        let settings = &self.endpoint.settings;
        let name = settings.name.as_str();
        // Failed attempts in a row, and whether the block log was told.
        let (mut failing, mut noted) = (0u32, false);
        // After a failure the endpoint as a whole waits out the backoff, so an endpoint that
        // is down gets one attempt per interval, not one per queued notice.
        let mut resume_at = Timestamp(0);
        // The queue depth is counted at most once a second (a count of the endpoint's rows).
        let mut depth_counted: Option<std::time::Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if depth_counted.is_none_or(|at| at.elapsed() >= IDLE)
                && let Ok(depth) = self.outbox.depth(name)
            {
                self.metrics.queued.with_label_values(&[name]).set(i64::try_from(depth).unwrap_or(i64::MAX));
                depth_counted = Some(std::time::Instant::now());
            }
            let now = self.clock.now();
            let queued = match self.outbox.next(name) {
                Ok(Some(queued)) => queued,
                Ok(None) => {
                    std::thread::park_timeout(IDLE);
                    continue;
                }
                Err(e) => {
                    tracing::error!(endpoint = name, error = %e, "cannot read the webhook outbox");
                    std::thread::park_timeout(IDLE);
                    continue;
                }
            };
            if now >= queued.queued_at.plus(settings.deadline) {
                self.metrics.deliveries.with_label_values(&[name, "expired"]).inc();
                tracing::warn!(
                    endpoint = name,
                    id = queued.id,
                    attempts = queued.attempts,
                    "webhook notice dropped at its deadline"
                );
                self.forget(queued.seq);
                continue;
            }
            let due = queued.next_attempt.max(resume_at);
            if due > now {
                std::thread::park_timeout(now.until(due).min(IDLE));
                continue;
            }
            match self.send(&queued.id, &queued.body, now) {
                Ok(()) => {
                    self.metrics.deliveries.with_label_values(&[name, "delivered"]).inc();
                    self.forget(queued.seq);
                    if noted {
                        tracing::info!(endpoint = name, "webhook endpoint answers again");
                    }
                    (failing, noted, resume_at) = (0, false, Timestamp(0));
                }
                Err(error) => {
                    self.metrics.deliveries.with_label_values(&[name, "failed"]).inc();
                    failing = failing.saturating_add(1);
                    let attempts = queued.attempts.saturating_add(1);
                    let deadline = queued.queued_at.plus(settings.deadline);
                    resume_at = now.plus(backoff(settings, failing.max(attempts), jitter()));
                    let next = resume_at.min(deadline);
                    tracing::debug!(endpoint = name, id = queued.id, attempts, error, "webhook delivery failed");
                    if let Err(e) = self.outbox.retry_at(queued.seq, attempts, next) {
                        tracing::error!(endpoint = name, error = %e, "cannot record a webhook retry");
                    }
                    if failing >= FAILING_AFTER && !noted {
                        noted = true;
                        self.note_failing(failing, &error, now);
                    }
                }
            }
        }
    }

    fn forget(&self, seq: i64) {
        if let Err(e) = self.outbox.remove(seq) {
            tracing::error!(endpoint = self.endpoint.settings.name, error = %e, "cannot remove a webhook notice from the outbox");
        }
    }

    /// POSTs one notice; a 2xx answer is a delivery, anything else an error to retry.
    fn send(&self, id: &str, body: &str, now: Timestamp) -> Result<(), String> {
        let settings = &self.endpoint.settings;
        let unix_seconds = now.unix_millis().div_euclid(1000);
        let result = self
            .endpoint
            .agent
            .post(&settings.url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, signature(&settings.secret, unix_seconds, body))
            .header(ID_HEADER, id)
            .send(body);
        match result {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One block-log record per run of failures, so the admin reading "why did the SIEM miss
    /// that ban" finds it, and a dead endpoint does not fill the log.
    fn note_failing(&self, failures: u32, error: &str, now: Timestamp) {
        let settings = &self.endpoint.settings;
        let detail = format!(
            "webhook {} failed {failures} times in a row (last: {error}); notices are kept and retried for {} each",
            settings.name,
            humantime::format_duration(settings.deadline)
        );
        tracing::warn!(endpoint = settings.name, failures, error, "webhook endpoint keeps failing");
        self.block_log.event(Event {
            observed: false,
            at: now,
            kind: EventKind::WebhookFailing,
            login: String::new(),
            ip: None,
            protocol: String::new(),
            device_id: String::new(),
            rule: None,
            detail,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> Result<WebhookSettings, Vec<Problem>> {
        let table: toml::Table = toml::from_str(text).unwrap();
        parse("siem", &toml::Value::Table(table))
    }

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_timestamp_a_dot_and_the_body() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"0123456789abcdef", b"1700000000.{}", hashlib.sha256).hexdigest())'
        let secret = Secret::new("0123456789abcdef");
        assert_eq!(
            signature(&secret, 1_700_000_000, "{}"),
            "t=1700000000,v1=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
    }

    #[test]
    fn an_endpoint_needs_a_url_and_a_long_secret_and_names_a_wrong_type() {
        let problems =
            endpoint("url = \"ftp://x\"\nsecret = \"short\"\nevents = [\"ban_placed\", \"bogus\"]").unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["url", "secret", "events"]);
    }

    #[test]
    fn an_endpoint_without_events_takes_every_type_and_with_them_only_those() {
        let all = endpoint("url = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"").unwrap();
        assert!(NoticeKind::ALL.iter().all(|k| all.wants(*k)));
        assert_eq!(
            (all.timeout, all.deadline, all.max_queued),
            (Duration::from_secs(5), Duration::from_secs(86_400), 10_000)
        );
        let some = endpoint("url = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"\nevents = [\"ban_lifted\"]")
            .unwrap();
        assert!(some.wants(NoticeKind::BanLifted) && !some.wants(NoticeKind::BanPlaced));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_longest_interval() {
        let settings = endpoint(
            "url = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"\nfirst_retry = \"1s\"\nmax_retry_interval = \"10s\"",
        )
        .unwrap();
        let waits: Vec<u64> = (1..=6).map(|n| backoff(&settings, n, 1.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&settings, 3, 0.5), Duration::from_secs(2));
    }
}
