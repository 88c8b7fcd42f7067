//! Cluster mode (`[store] backend = "redis"`): several nodes share one Redis. The per-login
//! path stays in memory on every node; this module keeps that memory in step with the others
//! and shares the failure counts:
//!
//! - a listener thread subscribes to the store's announcements and applies what other nodes
//!   changed (a ban placed or lifted, a list entry, a rule set, a quarantine) within
//!   milliseconds, rereading the item from Redis;
//! - a worker thread takes every counted failure and success from `report` (through a bounded
//!   queue, so a report never waits for Redis), counts it in Redis with a Lua script
//!   (`counting`), and bans a source when the cluster-wide count calls for it;
//! - the same worker watches the store's health: while Redis is unreachable the node answers
//!   from what it knows (bans, lists and rules already loaded, its own failure counts), and
//!   when Redis is back it stores the bans it placed meanwhile, puts back everything it holds
//!   if Redis lost its data, and rereads the rest. It also rereads everything every
//!   `store.refresh_every`, a safety net under the announcements.
//!
//! Not here: the Redis keys of bans, lists, rules and events (`store::redis_store`), and any
//! decision (`engine`, `warden`).

pub mod counting;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::Timestamp;
use crate::failures::{Counting, FailedGuess, label_of};
use crate::metrics::Metrics;
use crate::network::Source;
use crate::store::{Announcement, Change, RedisStore, Store, StoreError};
use crate::warden::{Counted, CountedFailure, Warden};
use crate::wire::Protocol;

use counting::{FORGET_LOGIN, RECORD_FAILURE, SharedCount};

/// Counted failures and successes waiting for Redis; past this they are dropped (and
/// counted): the node's own count still holds.
const QUEUE: usize = 65_536;

/// How often the worker checks the store's health while it is down, and wakes when idle.
const TICK: Duration = Duration::from_secs(1);

/// Most counted logins sent to Redis in one pipeline (one round trip a batch).
const BATCH: usize = 256;

/// How long the worker lets counted logins gather after the first of a batch arrives. It
/// sleeps meanwhile, so the request path's sends do not wake it one by one: woken for every
/// counted login, it sent pipelines of one or two commands, and the context switches (to the
/// worker, to redis-server and back) cost more than the commands (docs/BENCHMARKS.md). Other
/// nodes see a count this much later, far below the time between two logins of a person.
const GATHER: Duration = Duration::from_millis(5);

/// What the worker is asked to do.
enum Work {
    Counted(Counted),
    /// Catch up (the listener has just subscribed: announcements may have been missed, and
    /// Redis may have restarted).
    Resync,
}

/// The running cluster threads; dropping it does not stop them, `stop` does.
pub struct Cluster {
    stopping: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    /// Shares `warden`'s counts through `store` and starts the listener and the worker. Call
    /// before the listeners open, after the warden has loaded what the store holds.
    pub fn start(warden: &Warden, store: Arc<RedisStore>, refresh_every: Duration) -> Cluster {
        let stopping = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Work>(QUEUE);
        let metrics = warden.metrics().clone();
        match store.shared_secret() {
            Ok(secret) => warden.share_fingerprint_key(secret),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's shared secret yet; counting locally until Redis answers")
            }
        }
        let queued = sender.clone();
        let shared_counts = metrics.cluster_shared_counts.clone();
        warden.share_counts(Box::new(move |counted| match queued.try_send(Work::Counted(counted)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                shared_counts.with_label_values(&["dropped"]).inc();
            }
        }));
        let worker = Worker {
            warden: warden.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            refresh_every,
            epoch: store.epoch().ok(),
            secret_known: store.is_up(),
            stopping: stopping.clone(),
        };
        let listener = Listener { warden: warden.clone(), store, metrics, resync: sender, stopping: stopping.clone() };
        let mut threads = Vec::new();
        for (name, run) in [
            ("mailwarden-cluster-worker", Box::new(move || worker.run(receiver)) as Box<dyn FnOnce() + Send>),
            ("mailwarden-cluster-listener", Box::new(move || listener.run())),
        ] {
            match std::thread::Builder::new().name(name.into()).spawn(run) {
                Ok(handle) => threads.push(handle),
                Err(e) => tracing::error!(thread = name, error = %e, "cannot start a cluster thread"),
            }
        }
        Cluster { stopping, threads: Mutex::new(threads) }
    }

    /// Stops the threads (within about a second) and waits for them.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The Lua scripts of `counting`, and how a counted login calls them.
struct Scripts {
    record: redis::Script,
    forget: redis::Script,
}

impl Scripts {
    fn command(&self, counted: &Counted, store: &RedisStore, rules: &Counting) -> redis::Cmd {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut command = redis::cmd("EVALSHA");
        match counted {
            Counted::Success { source, login } | Counted::Forgiven { source, login } => {
                command.arg(self.forget.get_hash()).arg(1).arg(store.failures_key(*source)).arg(label_of(login));
            }
            Counted::Failure(failure) => {
                command
                    .arg(self.record.get_hash())
                    .arg(2)
                    .arg(store.failures_key(failure.source))
                    .arg(store.forgiven_key(failure.source))
                    .arg(counting::field(failure.key))
                    .arg(failure.at.0)
                    .arg(millis(rules.window))
                    .arg(failure.weight.max(1))
                    .arg(rules.stale_after.unwrap_or(0))
                    .arg(millis(rules.quarantine_for))
                    .arg(label_of(&failure.login))
                    .arg(failure.protocol.label())
                    .arg(label_of(&failure.device_id))
                    .arg(counting::most_guesses(rules));
            }
        }
        command
    }
}

struct Worker {
    warden: Warden,
    store: Arc<RedisStore>,
    metrics: Metrics,
    refresh_every: Duration,
    /// The id of Redis's data set when last seen: a different one means Redis lost its data.
    epoch: Option<String>,
    /// Whether this node has the cluster's fingerprint secret (not when Redis was down at start).
    secret_known: bool,
    stopping: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self, work: Receiver<Work>) {
        let scripts = Scripts { record: redis::Script::new(RECORD_FAILURE), forget: redis::Script::new(FORGET_LOGIN) };
        let mut was_up = self.store.is_up();
        let mut last_resync = Instant::now();
        self.metrics.store_up.set(i64::from(was_up));
        while !self.stopping.load(Ordering::Relaxed) {
            let mut batch = Vec::new();
            let mut resync = false;
            match work.recv_timeout(TICK) {
                Ok(first) => {
                    if matches!(first, Work::Counted(_)) {
                        std::thread::sleep(GATHER);
                    }
                    let mut next = Some(first);
                    while let Some(item) = next {
                        match item {
                            Work::Counted(counted) => batch.push(counted),
                            Work::Resync => resync = true,
                        }
                        next = if batch.len() < BATCH { work.try_recv().ok() } else { None };
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if !self.store.is_up() && !self.store.probe() {
                if was_up {
                    was_up = false;
                    self.metrics.store_up.set(0);
                }
                self.metrics.cluster_shared_counts.with_label_values(&["dropped"]).inc_by(batch.len() as u64);
                continue;
            }
            if !was_up || resync {
                // Back from an outage, or the listener has just (re)subscribed, which it also
                // does after a Redis restart too short for this loop to have seen.
                was_up = true;
                self.metrics.store_up.set(1);
                self.recover();
                last_resync = Instant::now();
            } else if last_resync.elapsed() >= self.refresh_every {
                self.resync();
                last_resync = Instant::now();
            } else if self.warden.has_unsaved_bans() {
                // A write that ran into the budget while Redis stayed up (a moment of load).
                self.save_unsaved_bans();
            }
            if !batch.is_empty() {
                self.share(&batch, &scripts);
            }
        }
    }

    /// Sends a batch of counted logins to Redis and acts on the cluster-wide counts it
    /// returns.
    fn share(&self, batch: &[Counted], scripts: &Scripts) {
        match self.try_share(batch, scripts) {
            Ok(()) => self.metrics.cluster_shared_counts.with_label_values(&["sent"]).inc_by(batch.len() as u64),
            Err(e) => {
                if !e.is_unavailable() {
                    tracing::warn!(error = %e, counted = batch.len(), "the cluster-wide count refused a batch");
                }
                self.metrics.cluster_shared_counts.with_label_values(&["dropped"]).inc_by(batch.len() as u64);
            }
        }
    }

    /// Two round trips: which sources of the batch's successes have shared guesses, then one
    /// pipeline of the scripts that can change something.
    fn try_share(&self, batch: &[Counted], scripts: &Scripts) -> Result<(), StoreError> {
        let rules = self.warden.counting();
        let had_guesses = self.sources_with_guesses(batch)?;
        let scripted = needing_scripts(batch, &had_guesses);
        if scripted.is_empty() {
            return Ok(());
        }
        let commands: Vec<redis::Cmd> = scripted.iter().map(|c| scripts.command(c, &self.store, &rules)).collect();
        let mut replies = self.store.pipeline("count_logins", &commands);
        if matches!(replies, Err(StoreError::Operation { .. })) {
            // Most likely NOSCRIPT: a Redis that restarted, or a cluster node that never saw
            // the scripts. Load them (on every primary) and try once more.
            let loaded = self.store.with_connection("load_scripts", |con| {
                scripts.record.load(con)?;
                scripts.forget.load(con)
            });
            if loaded.is_ok() {
                replies = self.store.pipeline("count_logins", &commands);
            }
        }
        for (counted, reply) in scripted.iter().zip(replies?) {
            if let Counted::Failure(failure) = counted {
                match redis::from_redis_value::<(i64, i64, i64, Vec<String>)>(reply) {
                    Ok(reply) => self.act_on_count(failure, SharedCount::from_reply(reply), &rules),
                    Err(e) => tracing::warn!(error = %e, "unreadable answer from the cluster-wide count"),
                }
            }
        }
        Ok(())
    }

    /// For each success and lifted refusal of the batch, in order: whether its source has
    /// guesses in Redis (one EXISTS each, pipelined; a reply that does not read as a number
    /// counts as yes).
    fn sources_with_guesses(&self, batch: &[Counted]) -> Result<Vec<bool>, StoreError> {
        let probes: Vec<redis::Cmd> = batch
            .iter()
            .filter_map(|counted| match counted {
                Counted::Success { source, .. } | Counted::Forgiven { source, .. } => {
                    let mut probe = redis::cmd("EXISTS");
                    probe.arg(self.store.failures_key(*source));
                    Some(probe)
                }
                Counted::Failure(_) => None,
            })
            .collect();
        if probes.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.store.pipeline("probe_failures", &probes)?;
        Ok(replies.into_iter().map(|reply| redis::from_redis_value::<i64>(reply).map_or(true, |n| n != 0)).collect())
    }

    /// Quarantines and bans as the cluster-wide count of one failure calls for.
    fn act_on_count(&self, failure: &CountedFailure, count: SharedCount, rules: &Counting) {
        if count.quarantined {
            let until = failure.at.plus(rules.quarantine_for);
            self.warden.adopt_quarantine(failure.source, self.guess_of(failure), count.failures, until);
            // Best effort: a node that misses it still counts the guess toward its quarantine.
            let _ = self.store.announce(
                "announcing a quarantine",
                Change::Quarantine {
                    source: failure.source.to_string(),
                    guess: failure.key.0,
                    login: failure.login.clone(),
                    protocol: failure.protocol.label().to_string(),
                    device_id: failure.device_id.clone(),
                    until: until.0,
                },
            );
        }
        let distinct = count.distinct_in_window(failure.at, rules.window);
        if let Some(ban) = self.warden.ban_from_shared_count(failure, distinct, &count, rules.window) {
            tracing::info!(source = %ban.source, login = ban.refused_login(), distinct, "banned on the cluster-wide count");
            // On failure the ban stays in force here and is stored when Redis is back.
            let _ = self.warden.persist_ban(&ban);
        }
    }

    fn guess_of<'a>(&self, failure: &'a CountedFailure) -> FailedGuess<'a> {
        FailedGuess {
            key: failure.key,
            login: &failure.login,
            protocol: failure.protocol,
            device_id: &failure.device_id,
            weight: failure.weight,
        }
    }

    /// Redis answers again: store the bans placed meanwhile, put everything back if Redis
    /// lost its data, then reread.
    fn recover(&mut self) {
        if !self.secret_known
            && let Ok(secret) = self.store.shared_secret()
        {
            self.warden.share_fingerprint_key(secret);
            self.secret_known = true;
        }
        self.save_unsaved_bans();
        match self.store.epoch() {
            Ok(epoch) => {
                let lost = self.epoch.as_ref().is_some_and(|known| *known != epoch);
                self.epoch = Some(epoch);
                if lost {
                    match self.warden.restore_store() {
                        Ok(restored) => tracing::warn!(
                            bans = restored.bans,
                            list_entries = restored.list_entries,
                            rule_sets = restored.rule_sets,
                            "the shared store came back without its data; restored what this node holds"
                        ),
                        Err(e) => tracing::error!(error = %e, "could not restore the shared store's data"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the shared store's epoch"),
        }
        self.resync();
    }

    fn save_unsaved_bans(&self) {
        match self.warden.save_unsaved_bans() {
            Ok(0) => {}
            Ok(saved) => tracing::info!(saved, "stored the bans placed while the shared store was unreachable"),
            Err(e) if e.is_unavailable() => {}
            Err(e) => tracing::warn!(error = %e, "could not store the bans placed during the outage yet"),
        }
    }

    fn resync(&self) {
        match self.warden.resync() {
            Ok(resynced) if resynced.bans_added + resynced.bans_removed > 0 => {
                tracing::info!(added = resynced.bans_added, removed = resynced.bans_removed, "bans resynchronised");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not reread the shared store"),
        }
    }
}

/// The counted logins of a batch that need their script, in order. A success or a lifted
/// refusal only forgets guesses, so it needs none when its source had no shared guesses as
/// the batch began (`had_guesses`: one answer for each of them, in order; a missing answer
/// counts as yes) and no failure earlier in the batch added some. Most successes come from
/// sources without a wrong password: an EXISTS costs Redis a fraction of a script's call
/// (docs/BENCHMARKS.md). A failure another node sends meanwhile is no different from one
/// that reaches Redis just after the script: logins on two nodes have no order.
fn needing_scripts<'a>(batch: &'a [Counted], had_guesses: &[bool]) -> Vec<&'a Counted> {
    let mut had_guesses = had_guesses.iter().copied();
    let mut failed_in_batch: Vec<Source> = Vec::new();
    batch
        .iter()
        .filter(|counted| match counted {
            Counted::Failure(failure) => {
                failed_in_batch.push(failure.source);
                true
            }
            Counted::Success { source, .. } | Counted::Forgiven { source, .. } => {
                had_guesses.next().unwrap_or(true) || failed_in_batch.contains(source)
            }
        })
        .collect()
}

struct Listener {
    warden: Warden,
    store: Arc<RedisStore>,
    metrics: Metrics,
    /// Asks the worker for a full reread after (re)subscribing.
    resync: SyncSender<Work>,
    stopping: Arc<AtomicBool>,
}

impl Listener {
    fn run(self) {
        while !self.stopping.load(Ordering::Relaxed) {
            let mut connection = match self.store.pubsub_connection(TICK) {
                Ok(connection) => connection,
                Err(_) => {
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            let mut pubsub = connection.as_pubsub();
            if pubsub.subscribe(self.store.channel()).is_err() {
                std::thread::sleep(TICK);
                continue;
            }
            // Whatever changed while this node was not listening is read now.
            let _ = self.resync.try_send(Work::Resync);
            while !self.stopping.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(message) => {
                        let payload: String = message.get_payload().unwrap_or_default();
                        self.apply(&payload);
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(_) => break,
                }
            }
        }
    }

    fn apply(&self, payload: &str) {
        let announcement: Announcement = match serde_json::from_str(payload) {
            Ok(announcement) => announcement,
            Err(e) => {
                tracing::debug!(error = %e, "ignored an announcement this version does not read");
                return;
            }
        };
        if announcement.node == self.store.node_id() {
            return;
        }
        let kind = match &announcement.change {
            Change::BanSaved { .. } => "ban_saved",
            Change::BanDeleted { .. } => "ban_deleted",
            Change::LoginRefusalSaved { .. } => "login_refusal_saved",
            Change::LoginRefusalDeleted { .. } => "login_refusal_deleted",
            Change::AccessEntries => "access_entries",
            Change::RuleSet { .. } => "rule_set",
            Change::Quarantine { .. } => "quarantine",
            Change::LoginReset { .. } => "login_reset",
            Change::Tokens => "tokens",
        };
        if let Err(e) = self.apply_change(announcement.change) {
            tracing::warn!(change = kind, error = %e, "could not apply another node's change; the next reread will");
            return;
        }
        self.metrics.cluster_announcements.with_label_values(&[kind]).inc();
    }

    fn apply_change(&self, change: Change) -> Result<(), StoreError> {
        let source = |text: &str| {
            Source::parse(text).map_err(|e| StoreError::operation("read_announcement", format!("{text:?}: {e}")))
        };
        match change {
            Change::BanSaved { source: text } => {
                let source = source(&text)?;
                match self.store.ban(source)? {
                    Some(ban) => self.warden.adopt_ban(ban),
                    None => self.warden.drop_ban(source, None),
                }
            }
            Change::BanDeleted { source: text } => self.warden.drop_ban(source(&text)?, None),
            Change::LoginRefusalSaved { source: text, login } => {
                let source = source(&text)?;
                match self.store.scoped_ban(source, Some(&login))? {
                    Some(ban) => self.warden.adopt_ban(ban),
                    None => self.warden.drop_ban(source, Some(&login)),
                }
            }
            Change::LoginRefusalDeleted { source: text, login } => self.warden.drop_ban(source(&text)?, Some(&login)),
            Change::AccessEntries => self.warden.adopt_access_entries(self.store.access_entries()?),
            Change::RuleSet { key } => {
                let set = self.store.firewall_rule_sets()?.into_iter().find(|s| s.key == key).map(|s| s.rule_set);
                self.warden.adopt_rule_set(&key, set);
            }
            Change::LoginReset { login } => {
                self.warden.reset_login_here(&login);
            }
            Change::Tokens => self.warden.reload_tokens()?,
            Change::Quarantine { source: text, guess, login, protocol, device_id, until } => {
                let guess = FailedGuess {
                    key: crate::failures::GuessKey(guess),
                    login: &login,
                    protocol: Protocol::from_name(&protocol),
                    device_id: &device_id,
                    weight: 1,
                };
                let failures = self.warden.counting().stale_after.unwrap_or(1);
                // Another node's word (or a damaged message): a quarantine ends by the year 9999.
                self.warden.adopt_quarantine(source(&text)?, guess, failures, Timestamp(until).clamped());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failures::GuessKey;

    fn source(text: &str) -> Source {
        Source::parse(text).expect("a test address")
    }

    fn failure(from: &str) -> Counted {
        Counted::Failure(CountedFailure {
            source: source(from),
            key: GuessKey(7),
            login: "alice@example.com".into(),
            protocol: Protocol::Imap,
            device_id: String::new(),
            weight: 1,
            address: None,
            at: Timestamp(1_000),
        })
    }

    fn success(from: &str) -> Counted {
        Counted::Success { source: source(from), login: "alice@example.com".into() }
    }

    fn forgiven(from: &str) -> Counted {
        Counted::Forgiven { source: source(from), login: "alice@example.com".into() }
    }

    #[test]
    fn only_forgetting_that_can_find_guesses_costs_a_script() {
        let batch = [
            success("192.0.2.1"),
            failure("192.0.2.2"),
            success("192.0.2.3"),
            forgiven("192.0.2.4"),
            forgiven("192.0.2.5"),
        ];
        // Redis holds guesses of 192.0.2.3 and 192.0.2.5 only.
        let kept = needing_scripts(&batch, &[false, true, false, true]);
        assert_eq!(kept, [&batch[1], &batch[2], &batch[4]]);
    }

    #[test]
    fn a_success_after_a_failure_of_the_same_batch_forgets_it_even_though_redis_had_none_before() {
        let batch = [failure("192.0.2.9"), success("192.0.2.9"), success("192.0.2.10")];
        assert_eq!(needing_scripts(&batch, &[false, false]), [&batch[0], &batch[1]]);
        // Before the failure, the success has nothing to forget.
        let batch = [success("192.0.2.9"), failure("192.0.2.9")];
        assert_eq!(needing_scripts(&batch, &[false]), [&batch[1]]);
    }

    #[test]
    fn without_an_answer_for_it_a_success_is_sent() {
        let batch = [success("192.0.2.1"), success("192.0.2.2")];
        assert_eq!(needing_scripts(&batch, &[false]), [&batch[1]]);
        assert_eq!(needing_scripts(&batch, &[]), [&batch[0], &batch[1]]);
    }
}
