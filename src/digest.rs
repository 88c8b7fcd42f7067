//! The admins' digest by mail: at most one per `digest.every`, summarising the period's bans
//! (by reason, with the sources banned most), the accounts that came under attack and the
//! stale devices quarantined, and sent only when one of them reaches its threshold, so a quiet
//! day sends nothing (mailcow's users asked for exactly that after 21 ban mails in a day).
//!
//! A reader (`notify::Sink`) of the notice stream: `accept` only counts, under a short lock;
//! a thread of its own closes each period and sends through `mailer`. The period's counts are
//! kept in memory and bounded; a restart starts a new period.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounterVec;
use serde_json::Value;

use crate::clock::{Clock, Timestamp};
use crate::mailer::{self, Mail, SmtpSettings};
use crate::notify::{Notice, NoticeKind, Sink};

/// `[digest]`.
#[derive(Debug, Clone)]
pub struct DigestSettings {
    pub enabled: bool,
    pub smtp: SmtpSettings,
    /// The admins' addresses.
    pub to: Vec<String>,
    pub every: Duration,
    /// Thresholds: the digest is sent when any count of the period reaches its own (0: that
    /// count never sends it by itself).
    pub min_bans: u32,
    pub min_attacks: u32,
    pub min_stale_devices: u32,
}

/// Most distinct sources, accounts and stale devices one period remembers (the counts go on).
const REMEMBERED: usize = 10_000;
/// Lines per list in the mail.
const SHOWN: usize = 10;

/// What one period saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Period {
    pub since: Timestamp,
    pub bans: u32,
    pub bans_by_reason: BTreeMap<String, u32>,
    /// Bans per source (a subnet counts as its network).
    pub sources: HashMap<String, u32>,
    pub login_refusals: u32,
    pub lifted: u32,
    pub attacks: BTreeSet<String>,
    /// (login, mail app, address) of each quarantine.
    pub stale_devices: Vec<(String, String, String)>,
    pub stale_count: u32,
}

fn fact<'a>(notice: &'a Notice, key: &str) -> &'a str {
    notice.facts.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl Period {
    fn starting(since: Timestamp) -> Period {
        Period { since, ..Period::default() }
    }

    /// Counts `notice` into the period.
    pub fn count(&mut self, notice: &Notice) {
        match notice.kind {
            NoticeKind::BanPlaced | NoticeKind::BanLengthened if !fact(notice, "refused_login").is_empty() => {
                self.login_refusals += 1;
            }
            NoticeKind::BanPlaced | NoticeKind::BanLengthened => {
                self.bans += 1;
                *self.bans_by_reason.entry(fact(notice, "reason").to_string()).or_default() += 1;
                let source = fact(notice, "source");
                if self.sources.len() < REMEMBERED || self.sources.contains_key(source) {
                    *self.sources.entry(source.to_string()).or_default() += 1;
                }
            }
            NoticeKind::BanLifted => self.lifted += 1,
            NoticeKind::AttackStarted if self.attacks.len() < REMEMBERED => {
                self.attacks.insert(fact(notice, "login").to_string());
            }
            NoticeKind::QuarantineStarted => {
                self.stale_count += 1;
                if self.stale_devices.len() < REMEMBERED {
                    let device = match fact(notice, "device") {
                        "" => "an unnamed mail app",
                        name => name,
                    };
                    let address = match fact(notice, "address") {
                        "" => fact(notice, "source"),
                        address => address,
                    };
                    self.stale_devices.push((fact(notice, "login").into(), device.into(), address.into()));
                }
            }
            _ => {}
        }
    }

    /// Whether the period is worth a mail: some count reached its threshold.
    pub fn worth_sending(&self, settings: &DigestSettings) -> bool {
        let reaches = |count: usize, min: u32| min > 0 && count >= min as usize;
        reaches(self.bans as usize, settings.min_bans)
            || reaches(self.attacks.len(), settings.min_attacks)
            || reaches(self.stale_count as usize, settings.min_stale_devices)
    }
}

/// The digest's subject and body for `period`, ending `now`.
pub fn compose(period: &Period, now: Timestamp) -> (String, String) {
    let subject = format!(
        "mailwarden digest: {} bans, {} accounts under attack, {} stale devices",
        period.bans,
        period.attacks.len(),
        period.stale_count
    );
    let mut body = format!("From {} to {}:\n\n", period.since.readable(), now.readable());
    body.push_str(&format!("Bans placed: {}", period.bans));
    if !period.bans_by_reason.is_empty() {
        let reasons: Vec<String> = period.bans_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        body.push_str(&format!(" ({})", reasons.join(", ")));
    }
    body.push_str(&format!(
        "\nLogins refused from one address only (IP+login): {}\nBans lifted: {}\n",
        period.login_refusals, period.lifted
    ));
    let mut top: Vec<(&String, &u32)> = period.sources.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if !top.is_empty() {
        body.push_str("\nSources banned most:\n");
        for (source, count) in top.iter().take(SHOWN) {
            body.push_str(&format!("  {source}: {count}\n"));
        }
    }
    if !period.attacks.is_empty() {
        body.push_str(&format!("\nAccounts under attack ({}):\n", period.attacks.len()));
        for login in period.attacks.iter().take(SHOWN) {
            body.push_str(&format!("  {login}\n"));
        }
    }
    if period.stale_count > 0 {
        body.push_str(&format!(
            "\nStale devices quarantined ({}): a saved old password, not an attack:\n",
            period.stale_count
        ));
        for (login, device, address) in period.stale_devices.iter().take(SHOWN) {
            body.push_str(&format!("  {login}: {device} from {address}\n"));
        }
    }
    body.push_str("\nDetails: mailwarden events, mailwarden why <address>, and the Grafana dashboard.\n");
    (subject, body)
}

/// The sink: the open period and the thread that closes it.
pub struct Digest {
    settings: Arc<ArcSwap<DigestSettings>>,
    period: Arc<Mutex<Period>>,
    stop: Mutex<Option<Sender<()>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Digest {
    pub fn start(settings: DigestSettings, clock: Arc<dyn Clock>, counter: IntCounterVec) -> Arc<Digest> {
        let every = settings.every;
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        let period = Arc::new(Mutex::new(Period::starting(clock.now())));
        let (stop, stopped) = mpsc::channel::<()>();
        let worker = {
            let (settings, period) = (settings.clone(), period.clone());
            crate::background::spawn("digest", move || {
                // Checked every second (or sooner for a shorter period), so a stop is quick.
                let tick = every.min(Duration::from_secs(1));
                loop {
                    match stopped.recv_timeout(tick) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let now = clock.now();
                    let closed = {
                        let mut open = lock(&period);
                        if now < open.since.plus(every) {
                            continue;
                        }
                        std::mem::replace(&mut *open, Period::starting(now))
                    };
                    send(&closed, &settings.load(), now, &counter);
                }
            })
            .ok()
        };
        if worker.is_none() {
            tracing::error!("could not start the digest thread; no digest will be mailed");
        }
        Arc::new(Digest { settings, period, stop: Mutex::new(Some(stop)), worker: Mutex::new(worker) })
    }

    /// A reload's settings (all but `every`), in force from the next period's end.
    pub fn set_settings(&self, settings: DigestSettings) {
        self.settings.store(Arc::new(settings));
    }
}

/// Mails the closed `period` to the admins if it is worth it.
fn send(period: &Period, settings: &DigestSettings, now: Timestamp, counter: &IntCounterVec) {
    if !settings.enabled {
        return;
    }
    if !period.worth_sending(settings) {
        counter.with_label_values(&["quiet"]).inc();
        return;
    }
    let (subject, body) = compose(period, now);
    for to in &settings.to {
        let mail = Mail { to: to.clone(), subject: subject.clone(), body: body.clone() };
        match mailer::send(&settings.smtp, &mail) {
            Ok(()) => counter.with_label_values(&["sent"]).inc(),
            Err(e) => {
                counter.with_label_values(&["failed"]).inc();
                tracing::warn!(error = %e, "could not mail the digest");
            }
        }
    }
}

impl Sink for Digest {
    fn accept(&self, notice: &Notice) {
        if self.settings.load().enabled {
            lock(&self.period).count(notice);
        }
    }

    fn close(&self) {
        lock(&self.stop).take();
        if let Some(worker) = lock(&self.worker).take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: NoticeKind, facts: serde_json::Value) -> Notice {
        let Value::Object(facts) = facts else { unreachable!() };
        Notice::new(kind, Timestamp(0), None, facts)
    }

    fn settings() -> DigestSettings {
        DigestSettings {
            enabled: true,
            smtp: SmtpSettings {
                url: "smtp://127.0.0.1:25".into(),
                user: String::new(),
                password: None,
                from: "m@example.com".into(),
            },
            to: vec!["admin@example.com".into()],
            every: Duration::from_secs(86_400),
            min_bans: 1,
            min_attacks: 1,
            min_stale_devices: 5,
        }
    }

    #[test]
    fn a_quiet_day_sends_nothing_and_one_ban_sends_a_digest_naming_it() {
        let mut period = Period::starting(Timestamp(0));
        for _ in 0..4 {
            period.count(&notice(
                NoticeKind::QuarantineStarted,
                serde_json::json!({"login": "alice@example.com", "device": "Thunderbird", "address": "192.0.2.7"}),
            ));
        }
        assert!(!period.worth_sending(&settings()), "four stale devices are under the threshold of five");
        period.count(&notice(
            NoticeKind::BanPlaced,
            serde_json::json!({"source": "203.0.113.7", "reason": "autoban", "refused_login": null}),
        ));
        period.count(&notice(
            NoticeKind::BanLengthened,
            serde_json::json!({"source": "203.0.113.7", "reason": "autoban", "refused_login": null}),
        ));
        period.count(&notice(
            NoticeKind::BanPlaced,
            serde_json::json!({"source": "198.51.100.0/24", "reason": "subnet", "refused_login": null}),
        ));
        period.count(&notice(
            NoticeKind::BanPlaced,
            serde_json::json!({"source": "192.0.2.9", "reason": "autoban", "refused_login": "bob@example.com"}),
        ));
        period.count(&notice(NoticeKind::AttackStarted, serde_json::json!({"login": "carol@example.com"})));
        assert!(period.worth_sending(&settings()));
        let (subject, body) = compose(&period, Timestamp(3_600_000));
        assert_eq!(subject, "mailwarden digest: 3 bans, 1 accounts under attack, 4 stale devices");
        for expected in [
            "Bans placed: 3 (autoban 2, subnet 1)",
            "Logins refused from one address only (IP+login): 1",
            "  203.0.113.7: 2\n  198.51.100.0/24: 1",
            "  carol@example.com",
            "alice@example.com: Thunderbird from 192.0.2.7",
        ] {
            assert!(body.contains(expected), "{expected:?} in:\n{body}");
        }
        let off = DigestSettings { min_bans: 0, min_attacks: 0, min_stale_devices: 0, ..settings() };
        assert!(!period.worth_sending(&off), "every threshold 0: never");
    }
}
