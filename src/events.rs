//! The block log: every refusal (ban, blocked network, firewall rule or default) and every ban
//! placed is an event, written as a structured log line at once and kept durably, bounded by
//! age and count, for the admin who hears "my phone cannot get mail". Recording never blocks
//! the login it describes: events go through a bounded queue to a writer thread that stores
//! them in batches; if the queue is full (a flood), events are dropped and counted rather
//! than slowing logins down.

use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

use crate::clock::{Clock, Timestamp};
use crate::store::Store;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A login refused because its source is banned.
    Ban,
    /// A login refused because its address is on the blocked list.
    Blocked,
    /// A login refused by a firewall rule (`rule` says which).
    FirewallRule,
    /// A login refused by a firewall's default action.
    FirewallDefault,
    /// A source was banned.
    BanPlaced,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Ban,
        EventKind::Blocked,
        EventKind::FirewallRule,
        EventKind::FirewallDefault,
        EventKind::BanPlaced,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EventKind::Ban => "ban",
            EventKind::Blocked => "blocked",
            EventKind::FirewallRule => "firewall_rule",
            EventKind::FirewallDefault => "firewall_default",
            EventKind::BanPlaced => "ban_placed",
        }
    }

    pub fn from_label(label: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.label() == label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Timestamp,
    pub kind: EventKind,
    pub login: String,
    pub ip: Option<IpAddr>,
    pub protocol: String,
    pub device_id: String,
    /// The firewall rule number (from 1), for `FirewallRule`.
    pub rule: Option<u32>,
    /// What the user was told, or what was done.
    pub detail: String,
}

/// A query of the block log; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub ip: Option<IpAddr>,
    pub login: Option<String>,
    pub kind: Option<EventKind>,
    pub since: Option<Timestamp>,
    /// Newest first, at most this many.
    pub limit: usize,
}

/// How much of the log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_count: usize,
}

/// Queue length between the request path and the writer.
const QUEUE: usize = 10_000;
/// Largest batch stored in one transaction.
const BATCH: usize = 1_000;
/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct EventLog {
    sender: Mutex<Option<SyncSender<Event>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    recorded: IntCounterVec,
}

impl EventLog {
    /// Starts the writer thread. `recorded` counts events by reason and result (`stored`,
    /// `dropped`).
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        retention: Arc<Mutex<Retention>>,
        recorded: IntCounterVec,
    ) -> EventLog {
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let counter = recorded.clone();
        let writer = std::thread::Builder::new()
            .name("mailwarden-events".into())
            .spawn(move || write_forever(receiver, store, clock, retention, counter))
            .ok();
        if writer.is_none() {
            tracing::error!("cannot start the event writer; events are logged but not stored");
        }
        EventLog {
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(writer),
            recorded,
        }
    }

    /// Logs the event and queues it for storage. Never blocks.
    pub fn record(&self, event: Event) {
        let ip = event.ip.map(|ip| ip.to_string()).unwrap_or_default();
        macro_rules! log {
            ($message:literal) => {
                tracing::info!(
                    target: "mailwarden::events",
                    reason = event.kind.label(),
                    login = %event.login,
                    ip = %ip,
                    protocol = %event.protocol,
                    rule = event.rule,
                    device_id = %event.device_id,
                    detail = %event.detail,
                    $message
                )
            };
        }
        match event.kind {
            EventKind::BanPlaced => log!("source banned after repeated failed logins"),
            _ => log!("login refused"),
        }
        let kind = event.kind.label();
        let guard = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let queued = match guard.as_ref() {
            Some(sender) => match sender.try_send(event) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !queued {
            self.recorded.with_label_values(&[kind, "dropped"]).inc();
        }
    }

    /// Stores what is queued and stops the writer (at shutdown).
    pub fn close(&self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = writer.join();
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_forever(
    receiver: Receiver<Event>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: Arc<Mutex<Retention>>,
    recorded: IntCounterVec,
) {
    let mut last_prune = Instant::now();
    loop {
        let first = match receiver.recv_timeout(PRUNE_EVERY) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch: Vec<Event> = first.into_iter().collect();
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let result = store.save_events(&batch);
            let outcome = if result.is_ok() { "stored" } else { "dropped" };
            for event in &batch {
                recorded
                    .with_label_values(&[event.kind.label(), outcome])
                    .inc();
            }
            if let Err(e) = result {
                tracing::error!(error = %e, events = batch.len(), "could not store events");
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            let keep = *retention.lock().unwrap_or_else(PoisonError::into_inner);
            let oldest = clock.now().minus(keep.max_age);
            if let Err(e) = store.prune_events(oldest, keep.max_count) {
                tracing::warn!(error = %e, "could not prune old events");
            }
        }
    }
}
