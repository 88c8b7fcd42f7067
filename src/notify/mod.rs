//! The one internal stream of notices: what an administrator (or, later, a mailbox owner)
//! may want to be told, as it happens: bans placed, lengthened and lifted, accounts under
//! attack, stale-password quarantines, self-unblocks and admin changes. Every notifier
//! (webhooks today; digests and owner mail next) is a `Sink` that reads this stream. Not the
//! block log (`events`, `journal`): that records refusals for diagnosis and is queried; this
//! pushes outward.
//!
//! Two ways in. `publish` never blocks (the request path: `allow` and `report` never wait for
//! a notification): a bounded queue to a dispatcher thread, which drops and counts when full.
//! `publish_durably` hands the notice to every sink on the caller's (blocking) thread, for
//! causes that are stored before they are answered (a ban, an admin change): a sink that
//! keeps notices (the webhook outbox) has them on disk before the cause is acknowledged.

pub mod outbox;
pub mod webhooks;

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use prometheus::IntCounterVec;
use serde_json::{Map, Value, json};

use crate::access::AccessEntry;
use crate::bans::Ban;
use crate::clock::Timestamp;
use crate::firewall::StoredRuleSet;
use crate::network::Source;

/// What a notice is about; its `label` is the `type` of the webhook body and what
/// `[webhooks.NAME] events` filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// A source (or a subnet) banned, or one login refused from a source.
    BanPlaced,
    /// A repeat offender banned again, for longer than `autoban.ban_for`.
    BanLengthened,
    /// A ban ended: by an admin, by its owner on the self-service page, or by expiry.
    BanLifted,
    AttackStarted,
    /// An account no longer under attack: its failing sources fell below the threshold.
    AttackEnded,
    QuarantineStarted,
    /// A visitor unblocked its own address (also a `BanLifted` with cause `self_service`).
    SelfUnblock,
    /// An admin-list entry added, replaced or removed through the API.
    ListChanged,
    /// A mailbox's firewall rule set changed through the API.
    FirewallChanged,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 9] = [
        NoticeKind::BanPlaced,
        NoticeKind::BanLengthened,
        NoticeKind::BanLifted,
        NoticeKind::AttackStarted,
        NoticeKind::AttackEnded,
        NoticeKind::QuarantineStarted,
        NoticeKind::SelfUnblock,
        NoticeKind::ListChanged,
        NoticeKind::FirewallChanged,
    ];

    pub fn label(self) -> &'static str {
        match self {
            NoticeKind::BanPlaced => "ban_placed",
            NoticeKind::BanLengthened => "ban_lengthened",
            NoticeKind::BanLifted => "ban_lifted",
            NoticeKind::AttackStarted => "attack_started",
            NoticeKind::AttackEnded => "attack_ended",
            NoticeKind::QuarantineStarted => "quarantine_started",
            NoticeKind::SelfUnblock => "self_unblock",
            NoticeKind::ListChanged => "list_changed",
            NoticeKind::FirewallChanged => "firewall_changed",
        }
    }

    pub fn from_label(label: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|k| k.label() == label)
    }

    pub fn labels() -> Vec<&'static str> {
        NoticeKind::ALL.iter().map(|k| k.label()).collect()
    }
}

/// Why a ban ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiftCause {
    Admin,
    SelfService,
    Expired,
    /// `reset-login` after a password change lifted the bans its guesses caused.
    ResetLogin,
}

impl LiftCause {
    pub fn label(self) -> &'static str {
        match self {
            LiftCause::Admin => "admin",
            LiftCause::SelfService => "self_service",
            LiftCause::Expired => "expired",
            LiftCause::ResetLogin => "reset_login",
        }
    }
}

/// One notice: a stable id (random, given once, kept through every retry and restart, so a
/// receiver can drop repeats), what happened, when, who did it, and the facts. Never a
/// password hash: no notice is built from one.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub id: String,
    pub kind: NoticeKind,
    pub at: Timestamp,
    /// The acting token's name for admin changes; `None` for what mailwarden did itself.
    pub actor: Option<String>,
    pub facts: Map<String, Value>,
}

/// A random 128-bit id as 32 hex digits; the time's milliseconds if the system has no
/// randomness (never seen on Linux, and still unique enough with the counter beside it).
fn new_id(at: Timestamp) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&at.unix_millis().to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn facts(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Notice {
    pub fn new(kind: NoticeKind, at: Timestamp, actor: Option<&str>, facts: Map<String, Value>) -> Notice {
        Notice { id: new_id(at), kind, at, actor: actor.map(str::to_string), facts }
    }

    /// The ban's facts: what it covers, until when, why, and the last failure's login,
    /// protocol and device (for the admin's diagnosis).
    fn ban_facts(ban: &Ban) -> Map<String, Value> {
        facts(json!({
            "source": ban.source.to_string(),
            "refused_login": ban.refused_login,
            "reason": ban.reason.label(),
            "created_at": ban.created_at.rfc3339(),
            "expires_at": ban.expires_at.rfc3339(),
            "failures": ban.failures,
            "login": ban.cause.login,
            "protocol": ban.cause.protocol,
            "device_id": ban.cause.device_id,
        }))
    }

    /// A ban placed (`lengthened`: a repeat offender's, longer than the usual length).
    pub fn ban_placed(ban: &Ban, lengthened: bool) -> Notice {
        let kind = if lengthened { NoticeKind::BanLengthened } else { NoticeKind::BanPlaced };
        Notice::new(kind, ban.created_at, None, Notice::ban_facts(ban))
    }

    /// A ban given a later end by `actor` (the notice escalations send too, with the actor).
    pub fn ban_lengthened_by(ban: &Ban, at: Timestamp, actor: &str) -> Notice {
        Notice::new(NoticeKind::BanLengthened, at, Some(actor), Notice::ban_facts(ban))
    }

    pub fn ban_lifted(ban: &Ban, cause: LiftCause, at: Timestamp, actor: Option<&str>) -> Notice {
        let mut facts = Notice::ban_facts(ban);
        facts.insert("cause".into(), cause.label().into());
        Notice::new(NoticeKind::BanLifted, at, actor, facts)
    }

    pub fn self_unblock(ban: &Ban, at: Timestamp) -> Notice {
        Notice::new(NoticeKind::SelfUnblock, at, None, Notice::ban_facts(ban))
    }

    /// An account under attack from `sources` addresses within the window.
    pub fn attack(kind: NoticeKind, login: &str, sources: usize, since: Timestamp, at: Timestamp) -> Notice {
        Notice::new(kind, at, None, facts(json!({"login": login, "sources": sources, "since": since.rfc3339()})))
    }

    /// A stale password quarantined: whose, from where (the address, its country when GeoIP
    /// knows it), which mail app (`device`: its name from the IMAP ID), since when and how
    /// many tries.
    pub fn quarantine_started(stale: &StaleDevice<'_>, at: Timestamp) -> Notice {
        Notice::new(
            NoticeKind::QuarantineStarted,
            at,
            None,
            facts(json!({
                "login": stale.login,
                "source": stale.source.to_string(),
                "address": stale.address.map(|ip| ip.to_string()),
                "country": stale.country,
                "protocol": stale.protocol,
                "device_id": stale.device_id,
                "device": stale.device,
                "failures": stale.failures,
                "since": stale.since.rfc3339(),
            })),
        )
    }

    /// `change`: `added` (or replaced) or `removed`.
    pub fn list_changed(entry: &AccessEntry, change: &str, at: Timestamp, actor: Option<&str>) -> Notice {
        let facts = facts(json!({
            "change": change,
            "list": entry.list.label(),
            "network": entry.network.to_string(),
            "comment": entry.comment,
            "expires_at": entry.expires_at.map(Timestamp::rfc3339),
        }));
        Notice::new(NoticeKind::ListChanged, at, actor, facts)
    }

    /// The mailbox's (or domain's) rule set after the change; `None`: the API's set was
    /// deleted and the file's (or the domain's) applies again.
    pub fn firewall_changed(key: &str, rule_set: Option<StoredRuleSet>, at: Timestamp, actor: Option<&str>) -> Notice {
        let facts = facts(json!({"mailbox": key, "rule_set": rule_set}));
        Notice::new(NoticeKind::FirewallChanged, at, actor, facts)
    }

    /// The webhook body: stable across retries, so its signature and id are too.
    pub fn to_json(&self) -> String {
        json!({
            "id": self.id,
            "type": self.kind.label(),
            "time": self.at.rfc3339(),
            "actor": self.actor,
            "facts": self.facts,
        })
        .to_string()
    }
}

/// What a stale-password quarantine's notice tells.
#[derive(Debug, Clone)]
pub struct StaleDevice<'a> {
    pub login: &'a str,
    pub source: Source,
    pub address: Option<std::net::IpAddr>,
    pub country: Option<String>,
    pub protocol: &'a str,
    pub device_id: &'a str,
    pub device: Option<String>,
    pub failures: u32,
    /// When this password first failed from there.
    pub since: Timestamp,
}

/// A reader of the stream.
pub trait Sink: Send + Sync {
    /// Takes one notice. Called on the dispatcher thread, or on the caller's blocking thread
    /// for a durable notice: it may write to disk, never wait on the network.
    fn accept(&self, notice: &Notice);
    /// Takes several at once (a sink that writes to disk does so in one step).
    fn accept_all(&self, notices: &[Notice]) {
        notices.iter().for_each(|notice| self.accept(notice));
    }
    /// Stops whatever the sink runs in the background (at shutdown).
    fn close(&self);
}

/// Notices queued between the request path and the dispatcher.
const QUEUE: usize = 10_000;

/// The stream: its sinks and the queue in front of them.
pub struct Notifier {
    sinks: Arc<Vec<Arc<dyn Sink>>>,
    sender: Mutex<Option<SyncSender<Notice>>>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    /// Notices by type and result (`published`, `dropped`: the queue was full).
    counter: IntCounterVec,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Notifier {
    /// Starts the dispatcher when there is a sink; without one every notice is counted and
    /// forgotten.
    pub fn start(sinks: Vec<Arc<dyn Sink>>, counter: IntCounterVec) -> Notifier {
        let sinks = Arc::new(sinks);
        let (sender, dispatcher) = if sinks.is_empty() {
            (None, None)
        } else {
            let (sender, receiver) = mpsc::sync_channel::<Notice>(QUEUE);
            let readers = sinks.clone();
            let dispatcher = crate::background::spawn("mailwarden-notify", move || {
                for notice in receiver {
                    readers.iter().for_each(|sink| sink.accept(&notice));
                }
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the notification dispatcher"))
            .ok();
            (dispatcher.is_some().then_some(sender), dispatcher)
        };
        Notifier { sinks, sender: Mutex::new(sender), dispatcher: Mutex::new(dispatcher), counter }
    }

    /// Queues `notice` for every sink. Never blocks: a full queue drops it and counts it.
    pub fn publish(&self, notice: Notice) {
        let kind = notice.kind.label();
        let sent = match lock(&self.sender).as_ref() {
            Some(sender) => {
                !matches!(sender.try_send(notice), Err(TrySendError::Full(_) | TrySendError::Disconnected(_)))
            }
            None => self.sinks.is_empty(),
        };
        self.counter.with_label_values(&[kind, if sent { "published" } else { "dropped" }]).inc();
    }

    /// Hands `notice` to every sink now, on this thread. Blocking: for causes stored before
    /// they are answered, so the notice is kept (on disk) before the cause is acknowledged.
    pub fn publish_durably(&self, notice: Notice) {
        self.sinks.iter().for_each(|sink| sink.accept(&notice));
        self.counter.with_label_values(&[notice.kind.label(), "published"]).inc();
    }

    /// `publish_durably` for several notices, handed over together.
    pub fn publish_all_durably(&self, notices: Vec<Notice>) {
        if notices.is_empty() {
            return;
        }
        self.sinks.iter().for_each(|sink| sink.accept_all(&notices));
        for notice in &notices {
            self.counter.with_label_values(&[notice.kind.label(), "published"]).inc();
        }
    }

    /// Hands the queued notices to the sinks and stops them (at shutdown).
    pub fn close(&self) {
        lock(&self.sender).take();
        if let Some(dispatcher) = lock(&self.dispatcher).take() {
            let _ = dispatcher.join();
        }
        self.sinks.iter().for_each(|sink| sink.close());
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Mutex<Vec<Notice>>);
    impl Sink for Collect {
        fn accept(&self, notice: &Notice) {
            lock(&self.0).push(notice.clone());
        }
        fn close(&self) {}
    }

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("n", "n"), &["type", "result"]).unwrap()
    }

    #[test]
    fn every_sink_reads_every_notice_published_once_the_stream_closes() {
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let notifier = Notifier::start(vec![sink.clone()], counter());
        let at = Timestamp::from_unix_millis(1_000);
        notifier.publish(Notice::attack(NoticeKind::AttackStarted, "alice", 5, at, at));
        notifier.publish_durably(Notice::attack(NoticeKind::AttackEnded, "alice", 0, at, at));
        notifier.close();
        let kinds: Vec<_> = lock(&sink.0).iter().map(|n| n.kind).collect();
        assert_eq!(kinds.len(), 2);
        assert!(kinds.contains(&NoticeKind::AttackStarted) && kinds.contains(&NoticeKind::AttackEnded));
    }

    /// A sink that takes nothing until it is let go.
    struct Stuck(Mutex<()>);
    impl Sink for Stuck {
        fn accept(&self, _: &Notice) {
            drop(lock(&self.0));
        }
        fn close(&self) {}
    }

    #[test]
    fn publishing_never_waits_for_a_stuck_notifier_and_counts_what_it_drops() {
        let sink = Arc::new(Stuck(Mutex::new(())));
        let held = lock(&sink.0);
        let counter = counter();
        let notifier = Notifier::start(vec![sink.clone()], counter.clone());
        let at = Timestamp::from_unix_millis(1_000);
        let started = std::time::Instant::now();
        for _ in 0..QUEUE + 10 {
            notifier.publish(Notice::attack(NoticeKind::AttackStarted, "alice", 5, at, at));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let dropped = counter.with_label_values(&["attack_started", "dropped"]).get();
        // The dispatcher holds one notice in its hands, the queue the next QUEUE.
        assert!((9..=10).contains(&dropped), "{dropped} dropped");
        drop(held);
        notifier.close();
    }

    #[test]
    fn each_notice_has_its_own_id_and_a_body_with_id_type_time_actor_and_facts() {
        let at = Timestamp::from_unix_millis(1_764_633_600_000);
        let one = Notice::attack(NoticeKind::AttackStarted, "alice@example.com", 5, at, at);
        let two = Notice::attack(NoticeKind::AttackStarted, "alice@example.com", 5, at, at);
        assert_ne!(one.id, two.id);
        assert_eq!(one.id.len(), 32);
        let body: Value = serde_json::from_str(&one.to_json()).unwrap();
        assert_eq!(body["id"], one.id.as_str());
        assert_eq!(body["type"], "attack_started");
        assert_eq!(body["time"], "2025-12-02T00:00:00Z");
        assert_eq!(body["actor"], Value::Null);
        assert_eq!(body["facts"]["login"], "alice@example.com");
    }

    #[test]
    fn every_notice_type_is_found_by_its_label() {
        for kind in NoticeKind::ALL {
            assert_eq!(NoticeKind::from_label(kind.label()), Some(kind));
        }
    }
}
