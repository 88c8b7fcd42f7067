//! Durable records written without holding up a login: block-log events and the sources each
//! account logs in from successfully (its "known sources"). Both go through one bounded queue
//! to a writer thread that stores them in batches, one transaction each, and prunes old ones.
//! If a flood fills the queue, records are dropped and counted rather than slowing logins
//! down; losing the last few of them in a crash is harmless (bans and admin changes are not
//! written here).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

use crate::clock::{Clock, Timestamp};
use crate::events::{Event, EventKind, Retention};
use crate::network::Source;
use crate::store::Store;

/// A successful login of `login` from `source` at `at`, over `protocol` (its label) with the
/// mail app `app` (the IMAP ID Dovecot sent as `device_id`, printable); both empty for
/// records stored before they were kept ("unknown app").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSource {
    pub login: String,
    pub source: Source,
    pub at: Timestamp,
    pub protocol: String,
    pub app: String,
}

impl KnownSource {
    /// A record without protocol or app.
    pub fn bare(login: impl Into<String>, source: Source, at: Timestamp) -> KnownSource {
        KnownSource { login: login.into(), source, at, protocol: String::new(), app: String::new() }
    }
}

/// How long the records are kept (set on reload).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keep {
    pub events: Retention,
    pub known_for: Duration,
    pub known_per_account: usize,
}

enum Record {
    Event(Event),
    Known(KnownSource),
    /// Answered once everything queued before it is stored.
    Flush(SyncSender<()>),
}

/// Queue length between the request path and the writer.
const QUEUE: usize = 10_000;
/// Largest batch stored in one transaction.
const BATCH: usize = 5_000;
/// How often the writer takes what has been queued while it gathers a batch: it sleeps
/// meanwhile, so a sleeping writer is not woken (a futex call and a context switch on the
/// request path) by every record queued (docs/BENCHMARKS.md). A flush wakes it.
const GATHER: Duration = Duration::from_millis(50);
/// A batch keeps gathering while each 50 ms brings at least this many records (about 2,000 a
/// second: a busy server), for up to `COMMIT_AFTER`. Under such load one transaction then
/// covers a busy second instead of a few hundred records: each transaction rewrites every
/// database page its records touch, and a page holds many known sources, so fewer, larger
/// transactions write far less (docs/BENCHMARKS.md). Otherwise a batch is stored after its
/// first 50 ms, so a crash of a quiet server loses only the last moment's records.
const BUSY_GATHER: usize = 100;
/// How long a busy batch gathers at most before it is stored (unless it fills, or a reader
/// asks for a flush): the records a crash of a busy server can lose.
const COMMIT_AFTER: Duration = Duration::from_secs(1);
/// How often old records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Pruning also runs as soon as the events stored since the last one reach this share of
/// `events.max_bytes`, so a flood cannot overshoot the budget by a minute's worth.
const PRUNE_AFTER_SHARE: u64 = 16;

pub struct Journal {
    sender: Mutex<Option<SyncSender<Record>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Events by reason and result (`stored`, `dropped`).
    events: IntCounterVec,
    /// Known-source records by result.
    known: IntCounterVec,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journal {
    /// Starts the writer thread.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keep: Arc<Mutex<Keep>>,
        events: IntCounterVec,
        known: IntCounterVec,
    ) -> Journal {
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let counters = (events.clone(), known.clone());
        let writer = crate::background::spawn("mailwarden-journal", move || {
            write_forever(receiver, store, clock, keep, counters)
        })
        .ok();
        if writer.is_none() {
            tracing::error!("cannot start the journal writer; events are logged but not stored");
        }
        Journal { sender: Mutex::new(Some(sender)), writer: Mutex::new(writer), events, known }
    }

    fn queue(&self, record: Record) -> bool {
        let guard = lock(&self.sender);
        match guard.as_ref() {
            Some(sender) => {
                !matches!(sender.try_send(record), Err(TrySendError::Full(_) | TrySendError::Disconnected(_)))
            }
            None => false,
        }
    }

    /// Logs the event and queues it for storage. Never blocks.
    pub fn event(&self, event: Event) {
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
            EventKind::LoginRefusalPlaced => log!("one login refused from its source after repeated failed logins"),
            EventKind::QuarantineStarted => {
                log!("a device keeps trying an old password; quarantined")
            }
            EventKind::AttackStarted => log!("account under a distributed attack"),
            EventKind::AccountExpired | EventKind::AccountDisabled => log!("login to an unusable account"),
            EventKind::SelfUnblock => log!("address unblocked by its user"),
            EventKind::WebhookFailing => log!("a webhook endpoint keeps failing"),
            EventKind::AccountUnderAttack if event.detail.starts_with("delayed") => {
                log!("login delayed")
            }
            _ => log!("login refused"),
        }
        let kind = event.kind.label();
        if !self.queue(Record::Event(event)) {
            self.events.with_label_values(&[kind, "dropped"]).inc();
        }
    }

    /// Queues a successful login for the known sources; false (and counted) when the queue is
    /// full. Never blocks.
    pub fn known_source(&self, known: KnownSource) -> bool {
        let queued = self.queue(Record::Known(known));
        if !queued {
            self.known.with_label_values(&["dropped"]).inc();
        }
        queued
    }

    /// Waits until everything queued so far is stored (at most a few seconds).
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        let queued = lock(&self.sender).as_ref().is_some_and(|sender| sender.send(Record::Flush(done)).is_ok());
        if queued {
            // Cut the writer's gathering sleep short.
            if let Some(writer) = lock(&self.writer).as_ref() {
                writer.thread().unpark();
            }
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Stores what is queued and stops the writer (at shutdown).
    pub fn close(&self) {
        lock(&self.sender).take();
        if let Some(writer) = lock(&self.writer).take() {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_forever(
    receiver: Receiver<Record>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keep: Arc<Mutex<Keep>>,
    (event_counter, known_counter): (IntCounterVec, IntCounterVec),
) {
    let mut last_prune = Instant::now();
    // Bytes of events stored since the last pruning, as `Event::size` counts them.
    let mut written: u64 = 0;
    loop {
        let first = match receiver.recv_timeout(PRUNE_EVERY) {
            Ok(record) => Some(record),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let (mut events, mut known, mut flushes) = (Vec::new(), Vec::new(), Vec::new());
        let mut take = |record| match record {
            Record::Event(event) => events.push(event),
            Record::Known(source) => known.push(source),
            Record::Flush(done) => flushes.push(done),
        };
        if let Some(record) = first {
            let gathering_since = Instant::now();
            let mut taken = 1;
            let mut flushing = matches!(record, Record::Flush(_));
            take(record);
            let mut busy = true;
            while busy && !flushing && taken < BATCH && gathering_since.elapsed() < COMMIT_AFTER {
                // Woken early by a flush (or spuriously): the batch is only smaller.
                std::thread::park_timeout(GATHER);
                let before = taken;
                while taken < BATCH {
                    match receiver.try_recv() {
                        Ok(record) => {
                            flushing |= matches!(record, Record::Flush(_));
                            taken += 1;
                            take(record);
                        }
                        Err(TryRecvError::Empty) => break,
                        // Closing: what was taken is stored, then the next wait ends the writer.
                        Err(TryRecvError::Disconnected) => {
                            flushing = true;
                            break;
                        }
                    }
                }
                busy = taken - before >= BUSY_GATHER;
            }
        }
        if !events.is_empty() {
            let result = store.save_events(&events);
            if result.is_ok() {
                written = events.iter().map(Event::size).fold(written, u64::saturating_add);
            }
            let outcome = if result.is_ok() { "stored" } else { "dropped" };
            for event in &events {
                event_counter.with_label_values(&[event.kind.label(), outcome]).inc();
            }
            // An unreachable store (cluster mode) is logged once, by the store.
            if let Err(e) = result
                && !e.is_unavailable()
            {
                tracing::error!(error = %e, events = events.len(), "could not store events");
            }
        }
        if !known.is_empty() {
            let result = store.save_known_sources(&known);
            let outcome = if result.is_ok() { "stored" } else { "dropped" };
            known_counter.with_label_values(&[outcome]).inc_by(known.len() as u64);
            if let Err(e) = result
                && !e.is_unavailable()
            {
                tracing::error!(error = %e, records = known.len(), "could not store known sources");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        let keep = *lock(&keep);
        if last_prune.elapsed() >= PRUNE_EVERY || written >= keep.events.max_bytes / PRUNE_AFTER_SHARE {
            last_prune = Instant::now();
            written = 0;
            let now = clock.now();
            let events = keep.events;
            match store.prune_events(now.minus(events.max_age), events.max_count, events.max_bytes) {
                Err(e) if !e.is_unavailable() => tracing::warn!(error = %e, "could not prune old events"),
                _ => {}
            }
            match store.prune_known_sources(now.minus(keep.known_for), keep.known_per_account) {
                Err(e) if !e.is_unavailable() => tracing::warn!(error = %e, "could not prune old known sources"),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::SqliteStore;

    fn journal(store: Arc<dyn Store>) -> (Journal, IntCounterVec) {
        let keep = Keep {
            events: Retention { max_age: Duration::from_secs(86_400), max_count: 1_000, max_bytes: 1 << 20 },
            known_for: Duration::from_secs(86_400),
            known_per_account: 10,
        };
        let events = IntCounterVec::new(prometheus::Opts::new("events", "events"), &["reason", "result"]).unwrap();
        let known = IntCounterVec::new(prometheus::Opts::new("known", "known"), &["result"]).unwrap();
        let journal = Journal::start(store, Arc::new(SystemClock), Arc::new(Mutex::new(keep)), events, known.clone());
        (journal, known)
    }

    fn place(n: u32) -> KnownSource {
        let source = Source::parse(&format!("198.51.100.{}", n % 250)).unwrap();
        KnownSource::bare(format!("user{n}@example.com"), source, Timestamp(1_000 + i64::from(n)))
    }

    #[test]
    fn a_flush_stores_what_was_queued_without_waiting_for_the_batch_to_gather() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let (journal, known) = journal(store.clone());
        journal.known_source(place(1));
        let asked = Instant::now();
        journal.flush();
        assert!(asked.elapsed() < COMMIT_AFTER, "the flush cut the gathering short");
        assert_eq!(store.known_sources("user1@example.com", Timestamp(0), 10).unwrap().len(), 1);
        assert_eq!(known.with_label_values(&["stored"]).get(), 1);
    }

    #[test]
    fn closing_stores_every_record_queued_even_more_than_one_batch() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let (journal, known) = journal(store.clone());
        let records = u32::try_from(BATCH).unwrap() + 1_500;
        for n in 0..records {
            journal.known_source(place(n));
        }
        journal.close();
        assert_eq!(known.with_label_values(&["stored"]).get(), u64::from(records));
        assert_eq!(known.with_label_values(&["dropped"]).get(), 0);
        for n in [0, records / 2, records - 1] {
            let login = format!("user{n}@example.com");
            assert_eq!(store.known_sources(&login, Timestamp(0), 10).unwrap().len(), 1, "{login}");
        }
    }
}
