//! The shared store of cluster mode: Redis, one server or a Redis Cluster, behind `Store`, so
//! that every node reads and writes the same bans, list entries, rule sets and block log. Calls
//! are blocking, each Redis round trip bounded by the configured budget (connect, write and read
//! timeouts). An unreachable Redis never stops the server: the store is marked down (logged
//! once), every call then fails at once with `StoreError::Unavailable` without touching the
//! network, and `probe` (which the cluster code calls every second while down) brings it back.
//!
//! Every successful write publishes an `Announcement` of what changed on `{prefix}changes`, in
//! the same round trip as the write on a single server, right after it on a cluster (where
//! PUBLISH cannot join a pipeline), so the other nodes reread the item within milliseconds.
//!
//! # Keys (all under the configured prefix, e.g. `mailwarden:`)
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `{prefix}bans` | hash | field: the source as displayed (`203.0.113.7`, `2001:db8::/64`); value: the ban as JSON (times, reason, failures, and its cause with the guesses) |
//! | `{prefix}login-refusals` | hash | IP+login refusals: field `<source> <login key>` (a source holds no space); value: the refusal as JSON, a ban's record with `refused_login`. Apart from `{prefix}bans`, so that a node of an older version never reads one as a ban of the whole source. |
//! | `{prefix}fail:{<source>}` | (written by `cluster`) | the source's shared failure history; deleted here when a ban on the source is saved or lifted, so an unbanned source starts afresh. The braces make the source a hash tag. |
//! | `{prefix}lists` | hash | field: `<blocked\|trusted>\|<network>`; value: the API's list entry as JSON |
//! | `{prefix}rules` | hash | field: the rule set's key (`alice@example.com`, `@example.com`); value: the API's rule set as written (`StoredRuleSet` JSON) |
//! | `{prefix}events` | stream | the block log: one field `event`, the event as JSON. Entry ids are `<event time in ms>-<n>`, raised to the newest id when an event arrives late, so an id is never older than its event: reads newest first stop early, and pruning by age never drops a younger event. |
//! | `{prefix}known:{<login>}` | sorted set | the sources `login` logged in from; score: the latest success in ms |
//! | `{prefix}known-logins` | sorted set | every login with known sources; score: its latest success in ms (so pruning needs no SCAN, which a cluster cannot do across nodes) |
//! | `{prefix}secret` | string | 32 hex digits shared by every node (set once with NX) |
//! | `{prefix}epoch` | string | a random id of Redis's data set (set once with NX): a new one means Redis lost its data |
//! | `{prefix}self-service-key` | string | the key that signs the self-service page's challenges (set once with NX) |
//! | `{prefix}spent:<id>` | string | a self-service challenge already used; expires when the challenge would have |
//! | `{prefix}unblocks:<source>` | string | the source's self-unblocks in its day; expires a day after the first |
//! | `{prefix}tokens` | hash | field: an admin token's name; value: its record as JSON (scope, SHA-256 digest in hex, created, expiry), never the token |
//! | `{prefix}tokens-used` | hash | field: a token's name; value: when it was last used, in ms, to the hour (apart from the record, so recording a use never brings back a token revoked meanwhile) |
//! | `{prefix}audit` | stream | the audit trail: one field `audit`, the record as JSON; capped at `audit::MAX_RECORDS` entries |
//! | `{prefix}changes` | pub/sub channel | the announcements |
//!
//! Values a version cannot read (a malformed JSON, an unknown reason) are skipped with a
//! warning, never a panic, like the SQLite backend's unreadable rows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use redis::{Cmd, ConnectionLike, ErrorKind, IntoConnectionInfo, RedisError, RedisResult, ServerErrorKind, Value};
use serde::{Deserialize, Serialize};

use super::{Announcement, Change, DailyCount, Store, StoreError};
use crate::access::{AccessEntry, ListKind, Origin};
use crate::audit::{AuditAction, AuditFilter, AuditRecord};
use crate::bans::{Ban, BanCause, BanGuess, BanReason};
use crate::clock::Timestamp;
use crate::events::{Event, EventFilter, EventKind, EventPage};
use crate::firewall::{KeyedRuleSet, RuleSet, StoredRuleSet};
use crate::journal::KnownSource;
use crate::network::Source;
use crate::principal::Scope;
use crate::tokens::TokenRecord;

/// Hash fields read per HSCAN round trip, and stream entries per XREVRANGE.
const SCAN_BATCH: usize = 500;
/// A block-log query reads at most this many stream entries, whatever it has found.
const EVENT_SCAN_CAP: usize = 50_000;
/// Events appended per script call, and records or logins per pipeline.
const WRITE_BATCH: usize = 1000;
/// How long a ban's or a lift's forgiveness time is held (`forgiven_key`): far longer than a
/// batch of counted logins takes to reach Redis, which is milliseconds (a batch that cannot
/// be sent is dropped, not kept).
const FORGIVEN_HELD_MS: u64 = 5 * 60 * 1000;
/// Idle connections kept for reuse; more are closed when returned.
const IDLE_CONNECTIONS: usize = 8;
/// A connection idle this long is checked with a PING before use: the server (its `timeout`
/// setting) or a firewall on the way may have dropped it meanwhile.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

/// Appends events to the stream with ids from their own times: `ARGV` is (time in ms, JSON)
/// pairs. An event older than the newest entry gets the newest entry's time (Redis ids only
/// grow), and if even that is refused (the stream's last id is ahead of its newest entry) Redis
/// picks the id; so an id is never older than its event.
const APPEND_EVENTS: &str = r"
local newest = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then newest = tonumber(string.match(top[1][1], '^(%d+)')) end
for i = 1, #ARGV, 2 do
  local at = tonumber(ARGV[i]) or 0
  if at < newest then at = newest end
  local id = redis.pcall('XADD', KEYS[1], string.format('%.0f', at) .. '-*', 'event', ARGV[i + 1])
  if type(id) == 'table' and id.err then
    id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[i + 1])
  end
  newest = tonumber(string.match(id, '^(%d+)'))
end
return #ARGV / 2
";

/// Deletes hash fields whose value is still the one read: `ARGV` is (field, value) pairs. So a
/// sweep of ended bans never deletes a ban another node placed on the same source meanwhile.
const DELETE_UNCHANGED: &str = r"
local deleted = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    deleted = deleted + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return deleted
";

/// Counts a self-unblock of `KEYS[1]`'s source unless it has `ARGV[1]` in its day already;
/// the day (`ARGV[2]` ms) starts with the first. Returns {1, count} when counted, {0, count}
/// when not. Atomic, so two nodes cannot both count the last unblock of a day.
const COUNT_SELF_UNBLOCK: &str = r"
local count = tonumber(redis.call('GET', KEYS[1])) or 0
if count >= tonumber(ARGV[1]) then return {0, count} end
count = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, count}
";

/// Trims the login history's hash `KEYS[1]` (place -> `[login, at, protocol, app]`) as the
/// known sources are pruned: drops places last seen before `ARGV[1]` (and unreadable ones),
/// then all but the newest `ARGV[2]`. Returns 0, so it adds nothing to the pruned count.
const TRIM_KNOWN_DETAILS: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local older = tonumber(ARGV[1])
local kept = {}
for i = 1, #all, 2 do
  local ok, detail = pcall(cjson.decode, all[i + 1])
  if not ok or type(detail) ~= 'table' or type(detail[2]) ~= 'number' or detail[2] < older then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(kept, {all[i], detail[2]})
  end
end
table.sort(kept, function(a, b) return a[2] > b[2] end)
for i = tonumber(ARGV[2]) + 1, #kept do
  redis.call('HDEL', KEYS[1], kept[i][1])
end
return 0
";

/// Takes back one self-unblock of `KEYS[1]`'s source, never below zero (DECR keeps the expiry).
const UNCOUNT_SELF_UNBLOCK: &str = r"
local count = tonumber(redis.call('GET', KEYS[1])) or 0
if count > 0 then return redis.call('DECR', KEYS[1]) end
return 0
";

/// How to reach Redis (from policy.toml's [store] section; the config code builds this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// One URL (`redis://127.0.0.1:6379/0`, `redis://:password@host:port`) for a standalone
    /// server, or several node URLs of a Redis Cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are Redis Cluster nodes (then the cluster client is used, even for one URL).
    pub cluster: bool,
    /// Prepended to every key and the channel, e.g. "mailwarden:".
    pub prefix: String,
    /// Time budget of every call: connect, write and read timeouts (default 50 ms in config).
    pub budget: Duration,
    /// For `rediss://` URLs: the PEM CA that signed the server's certificate; `None`: the
    /// system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

enum Target {
    Server(redis::Client),
    /// The cluster client, and a plain client per configured node for SUBSCRIBE.
    Cluster(redis::cluster::ClusterClient, Vec<redis::Client>),
}

enum Connection {
    Server(redis::Connection),
    /// Boxed: a cluster connection is four times the size of a plain one.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Connection {
    fn like(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Connection::Server(connection) => connection,
            Connection::Cluster(connection) => connection,
        }
    }

    /// Sends `commands` in one round trip per node (a cluster pipeline splits them by slot) and
    /// returns their replies in order.
    fn pipeline(&mut self, commands: &[Cmd]) -> RedisResult<Vec<Value>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Connection::Server(connection) => {
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command.clone());
                }
                pipe.query(connection)
            }
            Connection::Cluster(connection) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for command in commands {
                    pipe.add_command(command.clone());
                }
                pipe.query(connection)
            }
        }
    }

    /// `commands`, then PUBLISH `announcement` on `channel`: in the same round trip on a single
    /// server; right after on a cluster, whose pipelines refuse PUBLISH. Returns the replies
    /// of `commands`.
    fn write_and_publish(&mut self, commands: &[Cmd], channel: &str, announcement: &str) -> RedisResult<Vec<Value>> {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(announcement);
        if let Connection::Server(_) = self {
            let mut all = commands.to_vec();
            all.push(publish);
            let mut replies = self.pipeline(&all)?;
            replies.pop();
            Ok(replies)
        } else {
            let replies = self.pipeline(commands)?;
            let _: Value = publish.query(self.like())?;
            Ok(replies)
        }
    }
}

struct Pooled {
    connection: Connection,
    /// The store's generation when the connection was made: a connection from before an outage
    /// that fails afterwards says nothing about Redis now.
    generation: u64,
    last_used: Instant,
}

fn ping(connection: &mut Connection) -> RedisResult<Value> {
    connection.like().req_command(&redis::cmd("PING"))
}

/// The Redis backend of `Store`; see the module documentation for the keys.
pub struct RedisStore {
    target: Target,
    /// The URLs with any password masked, for logs and errors.
    shown: String,
    prefix: String,
    budget: Duration,
    node_id: String,
    up: AtomicBool,
    /// Raised each time the store is marked down.
    generation: AtomicU64,
    /// Why the store was last marked down, for the errors of the calls refused meanwhile.
    last_failure: Mutex<String>,
    idle: Mutex<Vec<Pooled>>,
    append_events: redis::Script,
    delete_unchanged: redis::Script,
    count_self_unblock: redis::Script,
    uncount_self_unblock: redis::Script,
}

impl RedisStore {
    /// Connects and checks with PING within the budget. An unreachable Redis at start is not an
    /// error: the store is returned marked down (the server starts and serves from local
    /// state). Only malformed settings are an error, naming the URL with its password masked.
    pub fn open(settings: &RedisSettings) -> Result<RedisStore, StoreError> {
        let shown = settings.urls.iter().map(|url| mask_url(url)).collect::<Vec<_>>().join(", ");
        let invalid = |path: String, message: String| StoreError::Open {
            path: if path.is_empty() { "(no Redis URL)".into() } else { path },
            message,
        };
        if settings.urls.is_empty() {
            return Err(invalid(shown, "no Redis URL given".into()));
        }
        if !settings.cluster && settings.urls.len() > 1 {
            return Err(invalid(
                shown,
                "several URLs for one Redis server: list Redis Cluster nodes in cluster mode".into(),
            ));
        }
        if settings.budget.is_zero() {
            return Err(invalid(shown, "the time budget of a Redis call must be more than zero".into()));
        }
        let root_cert =
            match &settings.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    invalid(shown.clone(), format!("store.ca_file: cannot read {}: {e}", path.display()))
                })?),
                None => None,
            };
        if settings.urls.iter().any(|url| url.starts_with("rediss://")) {
            // The redis crate builds its rustls configuration from the process default.
            crate::tls::install_default_provider();
        }
        // Without a CA file a rediss:// client verifies against the system's roots.
        let certificates = || redis::TlsCertificates { client_tls: None, root_cert: root_cert.clone() };
        let mut node_clients = Vec::with_capacity(settings.urls.len());
        for url in &settings.urls {
            let info = url.as_str().into_connection_info().map_err(|e| invalid(mask_url(url), e.to_string()))?;
            let client = if root_cert.is_some() && url.starts_with("rediss://") {
                redis::Client::build_with_tls(info, certificates())
            } else {
                redis::Client::open(info)
            };
            node_clients.push(client.map_err(|e| invalid(mask_url(url), e.to_string()))?);
        }
        let target = if settings.cluster {
            let budget_ms = u64::try_from(settings.budget.as_millis()).unwrap_or(u64::MAX);
            // One retry, without the default waits of seconds: enough to follow a MOVED after a
            // failover, while a dead node still fails the call within about twice the budget.
            let mut builder = redis::cluster::ClusterClient::builder(settings.urls.iter().map(String::as_str));
            if root_cert.is_some() {
                builder = builder.certs(certificates());
            }
            let client = builder
                .connection_timeout(settings.budget)
                .response_timeout(settings.budget)
                .retries(1)
                .min_retry_wait(0)
                .max_retry_wait(budget_ms.div_ceil(2).max(1))
                .build()
                .map_err(|e| invalid(shown.clone(), e.to_string()))?;
            Target::Cluster(client, node_clients)
        } else {
            Target::Server(node_clients.remove(0))
        };
        let store = RedisStore {
            target,
            shown,
            prefix: settings.prefix.clone(),
            budget: settings.budget,
            node_id: random_hex(8),
            up: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            last_failure: Mutex::new(String::new()),
            idle: Mutex::new(Vec::new()),
            append_events: redis::Script::new(APPEND_EVENTS),
            delete_unchanged: redis::Script::new(DELETE_UNCHANGED),
            count_self_unblock: redis::Script::new(COUNT_SELF_UNBLOCK),
            uncount_self_unblock: redis::Script::new(UNCOUNT_SELF_UNBLOCK),
        };
        if store.probe() {
            tracing::info!(
                redis = %store.shown,
                cluster = settings.cluster,
                node = %store.node_id,
                "connected to the shared store (Redis)"
            );
        }
        Ok(store)
    }

    /// A random id of this process (16 hex digits), put in every announcement so a node can
    /// ignore its own.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether the last call (or probe) reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// PINGs within the budget (every master of a cluster) on an idle connection, or on a new
    /// one if there is none or the idle one has gone stale (Redis restarted); marks the store
    /// up or down accordingly and returns whether it is up.
    pub fn probe(&self) -> bool {
        let idle = self.idle().pop();
        if let Some(mut pooled) = idle
            && ping(&mut pooled.connection).is_ok()
        {
            self.check_in(pooled);
            self.mark_up();
            return true;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let result = self.connect().and_then(|mut connection| ping(&mut connection).map(|_| connection));
        match result {
            Ok(connection) => {
                self.check_in(Pooled { connection, generation, last_used: Instant::now() });
                self.mark_up();
                true
            }
            Err(e) => {
                // Reached but refused even a PING (an ACL, a protocol error) is down all the same.
                self.mark_down(&format!("probing: {e}"));
                false
            }
        }
    }

    /// Runs `f` on a pooled connection (a single server's or the cluster's) whose every round
    /// trip is bounded by the budget. While the store is down this fails at once with
    /// `StoreError::Unavailable`, without touching the network. A connection, timeout or
    /// cluster-state error marks the store down and is returned as `Unavailable`; any other
    /// error (a script's, a wrong type) as `StoreError::Operation`; either way the connection
    /// is closed rather than reused.
    ///
    /// On a cluster connection single commands and scripts are routed by their first key;
    /// `redis::Pipeline` is refused (commands of several slots cannot share one).
    pub fn with_connection<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.call(operation, |connection| f(connection.like()))
    }

    /// Sends `commands` in one round trip per node (on a cluster, a pipeline split by slot) and
    /// returns their replies in order; fails as `with_connection` does, and with the first
    /// error of any command.
    pub fn pipeline(&self, operation: &'static str, commands: &[Cmd]) -> Result<Vec<Value>, StoreError> {
        self.call(operation, |connection| connection.pipeline(commands))
    }

    /// A plain connection for SUBSCRIBE: to the server, or to the first configured cluster
    /// node that answers (a classic PUBLISH reaches the subscribers of every node). Connecting
    /// and writing are bounded by the budget; reads by `read_timeout` (zero: reads block until
    /// a message comes). Tried even while the store is down; failing marks it down.
    pub fn pubsub_connection(&self, read_timeout: Duration) -> Result<redis::Connection, StoreError> {
        let clients: &[redis::Client] = match &self.target {
            Target::Server(client) => std::slice::from_ref(client),
            Target::Cluster(_, nodes) => nodes,
        };
        let read_timeout = (!read_timeout.is_zero()).then_some(read_timeout);
        let mut last_error = None;
        for client in clients {
            let connected = client.get_connection_with_timeout(self.budget).and_then(|connection| {
                connection.set_write_timeout(Some(self.budget))?;
                connection.set_read_timeout(read_timeout)?;
                Ok(connection)
            });
            match connected {
                Ok(connection) => return Ok(connection),
                Err(e) => last_error = Some(e),
            }
        }
        let error = last_error.unwrap_or_else(|| RedisError::from((ErrorKind::Io, "no Redis node configured")));
        Err(self.failed("subscribing to announcements", error, None))
    }

    /// The pub/sub channel of announcements: `{prefix}changes`.
    pub fn channel(&self) -> String {
        self.key("changes")
    }

    /// Publishes `change` on the channel for the other nodes (a change the store did not make,
    /// such as a quarantine).
    pub fn announce(&self, operation: &'static str, change: Change) -> Result<(), StoreError> {
        self.write(operation, &[], change).map(|_| ())
    }

    /// The full key for `suffix`: `{prefix}{suffix}`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The key of `source`'s shared failure history, which `save_ban` and `delete_ban` delete:
    /// `{prefix}fail:{<source>}` (a hash tag, so a cluster keeps it in one slot).
    pub fn failures_key(&self, source: Source) -> String {
        self.key(&format!("fail:{{{source}}}"))
    }

    /// The key holding when `source`'s failures were last forgiven by a ban or a lift (Unix
    /// ms), in the same slot as its history: `{prefix}fail-forgiven:{<source>}`. A failure
    /// that happened by then and reaches Redis later (a node sends its counts in batches) is
    /// not counted again (`counting::RECORD_FAILURE`).
    pub fn forgiven_key(&self, source: Source) -> String {
        self.key(&format!("fail-forgiven:{{{source}}}"))
    }

    /// The commands that forgive `source`'s failures up to `at`: drop its history, and hold
    /// `at` long enough for every batch counted before it to have arrived.
    fn forget_failures(&self, source: Source, at: Timestamp) -> [Cmd; 2] {
        let mut forget = redis::cmd("DEL");
        forget.arg(self.failures_key(source));
        let mut forgiven = redis::cmd("SET");
        forgiven.arg(self.forgiven_key(source)).arg(at.0).arg("PX").arg(FORGIVEN_HELD_MS);
        [forget, forgiven]
    }

    /// A 16-byte secret shared by every node: the first node stores a random one
    /// (`SET {prefix}secret <32 hex digits> NX`), every node reads the stored one.
    pub fn shared_secret(&self) -> Result<[u8; 16], StoreError> {
        let key = self.key("secret");
        let stored = self.set_once("reading the shared secret", &key, &random_hex(16))?;
        parse_secret(&stored).ok_or_else(|| {
            StoreError::operation("reading the shared secret", format!("{key} does not hold 32 hex digits"))
        })
    }

    /// A random id of Redis's data set (`SET {prefix}epoch <random> NX`, then GET). If Redis
    /// restarts empty the epoch changes, which tells the nodes to restore what they hold.
    pub fn epoch(&self) -> Result<String, StoreError> {
        self.set_once("reading the epoch", &self.key("epoch"), &random_hex(8))
    }

    /// The stored ban on `source`, whatever its expiry; `None` also for a value this version
    /// cannot read (logged).
    pub fn ban(&self, source: Source) -> Result<Option<Ban>, StoreError> {
        self.scoped_ban(source, None)
    }

    /// The hash and field holding the ban on `source` of that scope.
    fn ban_field(&self, source: Source, refused_login: Option<&str>) -> (String, String) {
        match refused_login {
            None => (self.key("bans"), source.to_string()),
            Some(login) => (self.key("login-refusals"), format!("{source} {login}")),
        }
    }

    /// The stored ban on `source` of that scope (`refused_login`: that login's IP+login
    /// refusal), whatever its expiry; `None` also for a value this version cannot read.
    pub fn scoped_ban(&self, source: Source, refused_login: Option<&str>) -> Result<Option<Ban>, StoreError> {
        let (key, field) = self.ban_field(source, refused_login);
        let value: Option<Vec<u8>> =
            self.call("reading a ban", |connection| redis::cmd("HGET").arg(&key).arg(&field).query(connection.like()))?;
        Ok(value.and_then(|value| match parse_ban(&value) {
            Ok(ban) => Some(ban),
            Err(e) => {
                tracing::warn!(source = %field, error = %e, "skipped a stored ban this version cannot read");
                None
            }
        }))
    }

    // ----- connections and health -----

    fn idle(&self) -> MutexGuard<'_, Vec<Pooled>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connect(&self) -> RedisResult<Connection> {
        match &self.target {
            Target::Server(client) => {
                let connection = client.get_connection_with_timeout(self.budget)?;
                connection.set_read_timeout(Some(self.budget))?;
                connection.set_write_timeout(Some(self.budget))?;
                Ok(Connection::Server(connection))
            }
            Target::Cluster(client, _) => {
                let connection = client.get_connection()?;
                connection.set_read_timeout(Some(self.budget))?;
                connection.set_write_timeout(Some(self.budget))?;
                Ok(Connection::Cluster(Box::new(connection)))
            }
        }
    }

    /// `f` on a connection, unless the store is down.
    fn call<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        if !self.is_up() {
            return Err(StoreError::Unavailable(self.last_failure()));
        }
        self.attempt(operation, f)
    }

    /// `f` on an idle connection or a new one; the connection goes back to the pool only if
    /// `f` succeeded.
    fn attempt<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut pooled = match self.check_out() {
            Ok(pooled) => pooled,
            Err(e) => return Err(self.failed(operation, e, None)),
        };
        match f(&mut pooled.connection) {
            Ok(value) => {
                self.check_in(pooled);
                Ok(value)
            }
            Err(e) => Err(self.failed(operation, e, Some(pooled.generation))),
        }
    }

    /// An idle connection (checked first if it has been idle long), or a new one.
    fn check_out(&self) -> RedisResult<Pooled> {
        let idle = self.idle().pop();
        if let Some(mut pooled) = idle
            && (pooled.last_used.elapsed() < CHECK_AFTER_IDLE || ping(&mut pooled.connection).is_ok())
        {
            return Ok(pooled);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        Ok(Pooled { connection: self.connect()?, generation, last_used: Instant::now() })
    }

    /// Keeps `pooled` for reuse, unless it dates from before the last outage or enough are idle.
    fn check_in(&self, mut pooled: Pooled) {
        if pooled.generation != self.generation.load(Ordering::SeqCst) {
            return;
        }
        pooled.last_used = Instant::now();
        let mut idle = self.idle();
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(pooled);
        }
    }

    /// The error to return for `error`; marks the store down if Redis could not be reached,
    /// unless the connection dates from before the last outage.
    fn failed(&self, operation: &'static str, error: RedisError, generation: Option<u64>) -> StoreError {
        if !is_outage(&error) {
            return StoreError::operation(operation, error);
        }
        let cause = format!("{operation}: {error}");
        if generation.is_none_or(|g| g == self.generation.load(Ordering::SeqCst)) {
            self.mark_down(&cause);
        }
        StoreError::Unavailable(cause)
    }

    fn mark_down(&self, cause: &str) {
        *self.last_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = cause.to_string();
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.idle().clear();
        if self.up.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                redis = %self.shown,
                cause,
                "the shared store (Redis) is unreachable; serving from local state until it answers"
            );
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::SeqCst) {
            tracing::info!(redis = %self.shown, "the shared store (Redis) answers again");
        }
    }

    fn last_failure(&self) -> String {
        let cause = self.last_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        if cause.is_empty() { "marked down".into() } else { cause }
    }

    // ----- helpers for the Store methods -----

    /// `commands` and the announcement of `change` (see `Connection::write_and_publish`).
    fn write(&self, operation: &'static str, commands: &[Cmd], change: Change) -> Result<Vec<Value>, StoreError> {
        let announcement = serde_json::to_string(&Announcement { node: self.node_id.clone(), change })
            .map_err(|e| StoreError::operation(operation, e))?;
        let channel = self.channel();
        self.call(operation, |connection| connection.write_and_publish(commands, &channel, &announcement))
    }

    /// `SET key value NX`, then GET: the value the first caller stored.
    fn set_once(&self, operation: &'static str, key: &str, value: &str) -> Result<String, StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value).arg("NX");
        let mut get = redis::cmd("GET");
        get.arg(key);
        let replies = self.call(operation, |connection| connection.pipeline(&[set, get]))?;
        match replies.get(1) {
            Some(Value::BulkString(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Some(Value::SimpleString(text)) => Ok(text.clone()),
            other => Err(StoreError::operation(operation, format!("{key} holds no string ({other:?})"))),
        }
    }

    /// Every (field, value) of the hash at `key`, read with HSCAN so that no round trip carries
    /// more than a few hundred fields. Fields or values that are not UTF-8 are skipped.
    fn hash_entries(&self, operation: &'static str, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let raw = self.call(operation, |connection| {
            let mut entries: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            let mut cursor = String::from("0");
            loop {
                let (next, items): (String, Vec<Vec<u8>>) =
                    redis::cmd("HSCAN").arg(key).arg(&cursor).arg("COUNT").arg(SCAN_BATCH).query(connection.like())?;
                for pair in items.chunks_exact(2) {
                    entries.insert(pair[0].clone(), pair[1].clone());
                }
                if next == "0" {
                    return Ok(entries);
                }
                cursor = next;
            }
        })?;
        let mut entries = Vec::with_capacity(raw.len());
        for (field, value) in raw {
            match (String::from_utf8(field), String::from_utf8(value)) {
                (Ok(field), Ok(value)) => entries.push((field, value)),
                (field, _) => tracing::warn!(
                    key,
                    field = field.as_deref().unwrap_or("(not UTF-8)"),
                    "skipped a stored value that is not UTF-8"
                ),
            }
        }
        Ok(entries)
    }

    /// Deletes the (field, value) pairs of the hash at `key` whose value is unchanged.
    fn delete_unchanged(
        &self,
        operation: &'static str,
        key: &str,
        pairs: &[(String, String)],
    ) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for chunk in pairs.chunks(WRITE_BATCH) {
            let count: i64 = self.call(operation, |connection| {
                let mut invocation = self.delete_unchanged.key(key);
                for (field, value) in chunk {
                    invocation.arg(field).arg(value);
                }
                invocation.invoke(connection.like())
            })?;
            deleted += usize::try_from(count).unwrap_or(0);
        }
        Ok(deleted)
    }

    /// The members of the sorted set `key` scored `since` or later, highest score first, at
    /// most `limit`.
    fn newest_members(
        &self,
        operation: &'static str,
        key: &str,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.call(operation, |connection| {
            redis::cmd("ZREVRANGEBYSCORE")
                .arg(key)
                .arg("+inf")
                .arg(since.0)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query(connection.like())
        })
    }

    fn known_key(&self, login: &str) -> String {
        self.key(&format!("known:{{{login}}}"))
    }

    /// The last success from each known source of `login` in any spelling, by its key.
    fn known_detail_key(&self, login: &str) -> String {
        self.key(&format!("known-app:{{{}}}", crate::login::key(login)))
    }

    fn self_unblocks_key(&self, source: Source) -> String {
        self.key(&format!("unblocks:{source}"))
    }
}

/// Whether `error` means Redis cannot be used now (as opposed to a refused command).
fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::AuthenticationFailed
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown | ServerErrorKind::ReadOnly
                )
        )
}

/// `url` with any password replaced by `***` (`redis://user:***@host:6379/0`, and the `pass=`
/// parameter of a Unix-socket URL): for logs and errors.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let user = match authority[..at].split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".into(),
            };
            format!("{user}@{}", &authority[at + 1..])
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name == "pass" || name == "password" => format!("{name}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

/// `bytes` random bytes as lowercase hex. Should the system's generator fail, the time and
/// process id stand in (ids must differ between nodes; they are not secrets then).
fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    if getrandom::fill(&mut buffer).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let seed = nanos ^ (u128::from(std::process::id()) << 64);
        for (i, byte) in buffer.iter_mut().enumerate() {
            *byte = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_secret(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut secret = [0u8; 16];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(secret)
}

fn integer(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        _ => 0,
    }
}

fn count(value: &Value) -> usize {
    usize::try_from(integer(value)).unwrap_or(0)
}

// ----- stored records -----

/// A ban as stored in `{prefix}bans`.
#[derive(Serialize, Deserialize)]
struct BanRecord {
    source: String,
    created_at: i64,
    expires_at: i64,
    reason: String,
    failures: u32,
    #[serde(default)]
    login: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    guesses: Vec<BanGuess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused_login: Option<String>,
}

impl From<&Ban> for BanRecord {
    fn from(ban: &Ban) -> BanRecord {
        BanRecord {
            source: ban.source.to_string(),
            created_at: ban.created_at.0,
            expires_at: ban.expires_at.0,
            reason: ban.reason.label().to_string(),
            failures: ban.failures,
            login: ban.cause.login.clone(),
            protocol: ban.cause.protocol.clone(),
            device_id: ban.cause.device_id.clone(),
            guesses: ban.cause.guesses.clone(),
            refused_login: ban.refused_login.clone(),
        }
    }
}

fn parse_ban(json: &[u8]) -> Result<Ban, String> {
    let record: BanRecord = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let source = Source::parse(&record.source).map_err(|e| e.to_string())?;
    let reason = BanReason::from_label(&record.reason).ok_or_else(|| format!("unknown reason {:?}", record.reason))?;
    let mut ban = Ban {
        source,
        refused_login: record.refused_login,
        created_at: Timestamp(record.created_at),
        expires_at: Timestamp(record.expires_at),
        reason,
        failures: record.failures,
        cause: BanCause {
            login: record.login,
            protocol: record.protocol,
            device_id: record.device_id,
            guesses: record.guesses,
        },
    };
    super::note_clamped(ban.clamp_times(), "ban", &record.source);
    Ok(ban)
}

/// An admin token as stored in `{prefix}tokens`.
#[derive(Serialize, Deserialize)]
struct TokenStoredRecord {
    scope: String,
    /// The SHA-256 of the token, in hex.
    digest: String,
    created_at: i64,
    #[serde(default)]
    expires_at: Option<i64>,
}

fn parse_token(name: String, json: &str, last_used: Option<i64>) -> Result<TokenRecord, String> {
    let record: TokenStoredRecord = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(TokenRecord {
        scope: Scope::parse(&record.scope)?,
        digest: crate::tokens::parse_digest(&record.digest).ok_or("the digest is not 64 hex digits")?,
        created_at: Timestamp(record.created_at).clamped(),
        expires_at: record.expires_at.map(|t| Timestamp(t).clamped()),
        last_used: last_used.map(|t| Timestamp(t).clamped()),
        name,
    })
}

/// An audit record as stored in `{prefix}audit`.
#[derive(Serialize, Deserialize)]
struct AuditStoredRecord {
    at: i64,
    actor: String,
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    detail: String,
}

fn parse_audit(json: &[u8]) -> Option<AuditRecord> {
    let record: AuditStoredRecord = serde_json::from_slice(json).ok()?;
    Some(AuditRecord {
        at: Timestamp(record.at).clamped(),
        actor: record.actor,
        action: AuditAction::from_label(&record.action)?,
        target: record.target,
        detail: record.detail,
    })
}

/// An API list entry as stored in `{prefix}lists`.
#[derive(Serialize, Deserialize)]
struct AccessEntryRecord {
    list: String,
    network: String,
    #[serde(default)]
    comment: String,
    created_at: i64,
    #[serde(default)]
    expires_at: Option<i64>,
    /// The token that made it (absent in records of earlier versions).
    #[serde(default)]
    added_by: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    observe: bool,
}

fn access_field(list: ListKind, network: IpNet) -> String {
    format!("{}|{network}", list.label())
}

fn parse_access_entry(json: &str) -> Result<AccessEntry, String> {
    let record: AccessEntryRecord = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let list = ListKind::from_label(&record.list).ok_or_else(|| format!("unknown list {:?}", record.list))?;
    let network = record.network.parse::<IpNet>().map_err(|e| format!("{:?}: {e}", record.network))?;
    let mut entry = AccessEntry {
        list,
        network,
        comment: record.comment,
        created_at: Timestamp(record.created_at),
        expires_at: record.expires_at.map(Timestamp),
        origin: Origin::Api,
        added_by: record.added_by,
        observe: record.observe,
    };
    super::note_clamped(entry.clamp_times(), "list entry", &record.network);
    Ok(entry)
}

/// A block-log event as stored in the stream's `event` field.
#[derive(Serialize, Deserialize)]
struct EventRecord {
    at: i64,
    kind: String,
    #[serde(default)]
    login: String,
    /// The address, or empty.
    #[serde(default)]
    ip: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    rule: Option<u32>,
    #[serde(default)]
    detail: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    observed: bool,
}

impl From<&Event> for EventRecord {
    fn from(event: &Event) -> EventRecord {
        EventRecord {
            at: event.at.0,
            kind: event.kind.label().to_string(),
            login: event.login.clone(),
            ip: event.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            protocol: event.protocol.clone(),
            device_id: event.device_id.clone(),
            rule: event.rule,
            detail: event.detail.clone(),
            observed: event.observed,
        }
    }
}

fn parse_event(json: &[u8]) -> Option<Event> {
    let record: EventRecord = serde_json::from_slice(json).ok()?;
    let mut event = Event {
        at: Timestamp(record.at),
        kind: EventKind::from_label(&record.kind)?,
        login: record.login,
        ip: record.ip.parse::<IpAddr>().ok(),
        protocol: record.protocol,
        device_id: record.device_id,
        rule: record.rule,
        detail: record.detail,
        observed: record.observed,
    };
    super::note_clamped(event.clamp_time(), "event", &record.ip);
    Some(event)
}

/// Whether `event` passes `filter`, whose login is already keyed as `login`.
fn event_matches(event: &Event, filter: &EventFilter, login: Option<&str>) -> bool {
    filter.ip.is_none_or(|ip| event.ip == Some(ip))
        && login.is_none_or(|login| crate::login::key(&event.login) == login)
        && filter.domain.as_deref().is_none_or(|domain| in_domain(&crate::login::key(&event.login), domain))
        && filter.kind.is_none_or(|kind| event.kind == kind)
        && filter.since.is_none_or(|since| event.at >= since)
        && filter.until.is_none_or(|until| event.at <= until)
        && filter.text.as_deref().is_none_or(|text| crate::events::detail_contains(&event.detail, text))
        && filter.observed.is_none_or(|observed| event.observed == observed)
}

/// Whether the login key `key` is a mailbox of `domain`.
fn in_domain(key: &str, domain: &str) -> bool {
    key.rsplit_once('@').is_some_and(|(_, of)| of == domain)
}

/// The time part of a stream id (`1700000000000-3`).
fn id_millis(id: &str) -> i64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0)
}

impl Store for RedisStore {
    fn active_bans(&self, now: Timestamp) -> Result<Vec<Ban>, StoreError> {
        let mut bans = Vec::new();
        for hash in ["bans", "login-refusals"] {
            for (field, value) in self.hash_entries("reading bans", &self.key(hash))? {
                match parse_ban(value.as_bytes()) {
                    Ok(ban) if ban.is_active(now) => bans.push(ban),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(source = %field, error = %e, "skipped a stored ban this version cannot read")
                    }
                }
            }
        }
        Ok(bans)
    }

    fn save_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(&BanRecord::from(ban)).map_err(|e| StoreError::operation("saving a ban", e))?;
        let (key, field) = self.ban_field(ban.source, ban.refused_login());
        let mut set = redis::cmd("HSET");
        set.arg(key).arg(&field).arg(json);
        let source = ban.source.to_string();
        match &ban.refused_login {
            // The source's other guesses still count toward its ban: its history stays.
            Some(login) => self
                .write("saving a ban", &[set], Change::LoginRefusalSaved { source, login: login.clone() })
                .map(|_| ()),
            None => {
                let [forget, forgiven] = self.forget_failures(ban.source, ban.created_at);
                self.write("saving a ban", &[set, forget, forgiven], Change::BanSaved { source }).map(|_| ())
            }
        }
    }

    fn delete_ban(&self, source: Source, refused_login: Option<&str>, now: Timestamp) -> Result<bool, StoreError> {
        let (key, field) = self.ban_field(source, refused_login);
        let mut delete = redis::cmd("HDEL");
        delete.arg(key).arg(&field);
        let replies = match refused_login {
            Some(login) => {
                let change = Change::LoginRefusalDeleted { source: source.to_string(), login: login.to_string() };
                self.write("deleting a ban", &[delete], change)?
            }
            None => {
                let [forget, forgiven] = self.forget_failures(source, now);
                self.write("deleting a ban", &[delete, forget, forgiven], Change::BanDeleted { source: field })?
            }
        };
        Ok(replies.first().is_some_and(|reply| integer(reply) > 0))
    }

    fn forgiven_since(&self, source: Source, at: Timestamp) -> Result<bool, StoreError> {
        let key = self.forgiven_key(source);
        let forgiven: Option<String> = self.call("reading when a source was forgiven", |connection| {
            redis::cmd("GET").arg(&key).query(connection.like())
        })?;
        // A value this version did not write (damaged, or set by hand) forgives nothing.
        Ok(forgiven.and_then(|millis| millis.parse::<i64>().ok()).is_some_and(|millis| millis >= at.0))
    }

    fn delete_expired_bans(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for hash in ["bans", "login-refusals"] {
            let key = self.key(hash);
            let ended: Vec<(String, String)> = self
                .hash_entries("deleting expired bans", &key)?
                .into_iter()
                .filter(|(_, value)| parse_ban(value.as_bytes()).is_ok_and(|ban| !ban.is_active(now)))
                .collect();
            deleted += self.delete_unchanged("deleting expired bans", &key, &ended)?;
        }
        Ok(deleted)
    }

    fn access_entries(&self) -> Result<Vec<AccessEntry>, StoreError> {
        let mut entries = Vec::new();
        for (field, value) in self.hash_entries("reading list entries", &self.key("lists"))? {
            match parse_access_entry(&value) {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    tracing::warn!(entry = %field, error = %e, "skipped a stored list entry this version cannot read")
                }
            }
        }
        Ok(entries)
    }

    fn save_access_entry(&self, entry: &AccessEntry) -> Result<(), StoreError> {
        let record = AccessEntryRecord {
            list: entry.list.label().to_string(),
            network: entry.network.to_string(),
            comment: entry.comment.clone(),
            created_at: entry.created_at.0,
            expires_at: entry.expires_at.map(|t| t.0),
            added_by: entry.added_by.clone(),
            observe: entry.observe,
        };
        let json = serde_json::to_string(&record).map_err(|e| StoreError::operation("saving a list entry", e))?;
        let mut set = redis::cmd("HSET");
        set.arg(self.key("lists")).arg(access_field(entry.list, entry.network)).arg(json);
        self.write("saving a list entry", &[set], Change::AccessEntries).map(|_| ())
    }

    fn delete_access_entry(&self, list: ListKind, network: IpNet) -> Result<bool, StoreError> {
        let mut delete = redis::cmd("HDEL");
        delete.arg(self.key("lists")).arg(access_field(list, network));
        let replies = self.write("deleting a list entry", &[delete], Change::AccessEntries)?;
        Ok(replies.first().is_some_and(|reply| integer(reply) > 0))
    }

    fn delete_expired_access_entries(&self, now: Timestamp) -> Result<usize, StoreError> {
        let key = self.key("lists");
        let ended: Vec<(String, String)> = self
            .hash_entries("deleting expired list entries", &key)?
            .into_iter()
            .filter(|(_, value)| {
                parse_access_entry(value).is_ok_and(|entry| entry.expires_at.is_some_and(|end| end <= now))
            })
            .collect();
        self.delete_unchanged("deleting expired list entries", &key, &ended)
    }

    fn save_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let key = self.key("events");
        for chunk in events.chunks(WRITE_BATCH) {
            let mut args = Vec::with_capacity(chunk.len() * 2);
            for event in chunk {
                let json = serde_json::to_string(&EventRecord::from(event))
                    .map_err(|e| StoreError::operation("saving events", e))?;
                args.push(event.at.0.to_string());
                args.push(json);
            }
            self.call("saving events", |connection| {
                self.append_events.key(&key).arg(&args).invoke::<i64>(connection.like())
            })?;
        }
        Ok(())
    }

    fn events(&self, filter: &EventFilter) -> Result<EventPage, StoreError> {
        let key = self.key("events");
        let login = filter.login.as_deref().map(crate::login::key);
        let wanted = filter.offset.saturating_add(filter.limit);
        // With no filter the stream's length is the total, and the scan may stop once it has
        // the page; a filter must read on (up to the cap) to count its matches.
        let narrowed = filter.ip.is_some()
            || login.is_some()
            || filter.domain.is_some()
            || filter.kind.is_some()
            || filter.since.is_some()
            || filter.until.is_some()
            || filter.text.is_some()
            || filter.observed.is_some();
        self.call("reading events", |connection| {
            // The newest `offset + limit` matches so far, newest first (by time, then by id).
            let mut found: Vec<Event> = Vec::new();
            let mut total = 0;
            let mut read_all = false;
            let mut end = String::from("+");
            let mut scanned = 0;
            'scan: while scanned < EVENT_SCAN_CAP {
                let count = SCAN_BATCH.min(EVENT_SCAN_CAP - scanned);
                let batch: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg(&end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(count)
                    .query(connection.like())?;
                let Some((last_id, _)) = batch.last() else {
                    read_all = true;
                    break;
                };
                end = format!("({last_id}");
                // An entry's id is never older than its event, so once the ids reach back past
                // `since`, or (unfiltered) below the oldest of the page's events, nothing older
                // can match or enter the page.
                let floor = (!narrowed && wanted > 0 && found.len() >= wanted).then(|| found[wanted - 1].at.0);
                for (id, fields) in &batch {
                    scanned += 1;
                    let position = id_millis(id);
                    if filter.since.is_some_and(|since| position < since.0) || floor.is_some_and(|m| position <= m) {
                        read_all = true;
                        break 'scan;
                    }
                    let json = fields.chunks_exact(2).find(|pair| pair[0] == b"event").map(|pair| pair[1].as_slice());
                    if let Some(event) = json.and_then(parse_event)
                        && event_matches(&event, filter, login.as_deref())
                    {
                        total += 1;
                        found.push(event);
                    }
                }
                // Stable: among equal times the later entry (found earlier) stays first.
                found.sort_by_key(|event| std::cmp::Reverse(event.at));
                found.truncate(wanted);
                if batch.len() < count {
                    read_all = true;
                    break;
                }
            }
            found.sort_by_key(|event| std::cmp::Reverse(event.at));
            found.truncate(wanted);
            if !narrowed {
                let length: usize = redis::cmd("XLEN").arg(&key).query(connection.like())?;
                return Ok(EventPage {
                    events: found.into_iter().skip(filter.offset).collect(),
                    total: length,
                    total_exact: true,
                });
            }
            Ok(EventPage { events: found.into_iter().skip(filter.offset).collect(), total, total_exact: read_all })
        })
    }

    fn prune_events(&self, older_than: Timestamp, keep_at_most: usize, max_bytes: u64) -> Result<usize, StoreError> {
        let key = self.key("events");
        let mut by_age = redis::cmd("XTRIM");
        by_age.arg(&key).arg("MINID").arg(older_than.0.max(0));
        let mut by_count = redis::cmd("XTRIM");
        by_count.arg(&key).arg("MAXLEN").arg(keep_at_most);
        // Redis's own estimate of the stream's memory (it samples entries), and its length.
        let mut usage = redis::cmd("MEMORY");
        usage.arg("USAGE").arg(&key);
        let mut length = redis::cmd("XLEN");
        length.arg(&key);
        let replies =
            self.call("pruning events", |connection| connection.pipeline(&[by_age, by_count, usage, length]))?;
        let mut pruned: usize = replies.iter().take(2).map(count).sum();
        let (used, entries) = match replies.get(2..4) {
            Some([used, entries]) => (integer(used).max(0).unsigned_abs(), integer(entries).max(0).unsigned_abs()),
            _ => (0, 0),
        };
        if used > max_bytes && entries > 0 {
            // Keep the share of entries that fits, assuming the newest are of average size.
            let keep = u128::from(entries) * u128::from(max_bytes) / u128::from(used);
            let mut by_size = redis::cmd("XTRIM");
            by_size.arg(&key).arg("MAXLEN").arg(u64::try_from(keep).unwrap_or(u64::MAX));
            let replies = self.call("pruning events", |connection| connection.pipeline(&[by_size]))?;
            pruned += replies.iter().map(count).sum::<usize>();
        }
        Ok(pruned)
    }

    fn firewall_rule_sets(&self) -> Result<Vec<KeyedRuleSet>, StoreError> {
        let mut sets = Vec::new();
        for (key, json) in self.hash_entries("reading firewall rules", &self.key("rules"))? {
            sets.extend(super::stored_rule_set(key, &json));
        }
        Ok(sets)
    }

    fn save_firewall_rule_set(&self, key: &str, rule_set: &RuleSet) -> Result<(), StoreError> {
        let json = serde_json::to_string(&StoredRuleSet::from(rule_set))
            .map_err(|e| StoreError::operation("saving firewall rules", e))?;
        let mut set = redis::cmd("HSET");
        set.arg(self.key("rules")).arg(key).arg(json);
        self.write("saving firewall rules", &[set], Change::RuleSet { key: key.to_string() }).map(|_| ())
    }

    fn delete_firewall_rule_set(&self, key: &str) -> Result<bool, StoreError> {
        let mut delete = redis::cmd("HDEL");
        delete.arg(self.key("rules")).arg(key);
        let replies = self.write("deleting firewall rules", &[delete], Change::RuleSet { key: key.to_string() })?;
        Ok(replies.first().is_some_and(|reply| integer(reply) > 0))
    }

    fn save_known_sources(&self, known: &[KnownSource]) -> Result<(), StoreError> {
        let logins_key = self.key("known-logins");
        // The index of logins gets one entry a login for the whole batch, with its latest
        // success, sent with the login's first chunk: whatever a chunk stores is indexed (for
        // pruning) even when a later chunk fails, at worst with a later time than it has.
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for record in known {
            let at = latest.entry(record.login.as_str()).or_insert(record.at.0);
            *at = (*at).max(record.at.0);
        }
        for chunk in known.chunks(WRITE_BATCH) {
            let mut commands = Vec::with_capacity(chunk.len() * 2 + 1);
            // One command for the chunk's logins: Redis's cost is mostly per command.
            let mut index = redis::cmd("ZADD");
            index.arg(&logins_key).arg("GT");
            let mut indexed = false;
            for record in chunk {
                let mut add = redis::cmd("ZADD");
                add.arg(self.known_key(&record.login)).arg("GT").arg(record.at.0).arg(record.source.to_string());
                commands.push(add);
                // For the login history, which finds a login in any spelling: the last success
                // from each place with its protocol and app, under the login's key.
                let mut detail = redis::cmd("HSET");
                detail
                    .arg(self.known_detail_key(&record.login))
                    .arg(record.source.to_string())
                    .arg(serde_json::json!([record.login, record.at.0, record.protocol, record.app]).to_string());
                commands.push(detail);
                if let Some(at) = latest.remove(record.login.as_str()) {
                    index.arg(at).arg(&record.login);
                    indexed = true;
                }
            }
            if indexed {
                commands.push(index);
            }
            self.call("saving known sources", |connection| connection.pipeline(&commands))?;
        }
        Ok(())
    }

    fn known_sources(&self, login: &str, since: Timestamp, limit: usize) -> Result<Vec<Source>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let members = self.newest_members("reading known sources", &self.known_key(login), since, limit)?;
        Ok(members.iter().filter_map(|member| Source::parse(member).ok()).collect())
    }

    fn recent_known_sources(&self, since: Timestamp, limit: usize) -> Result<Vec<KnownSource>, StoreError> {
        let operation = "reading recent known sources";
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The logins with a success since `since` (newest first), then each one's sources
        // since then with their times, a batch of logins per round trip.
        let logins = self.newest_members(operation, &self.key("known-logins"), since, limit)?;
        let mut known = Vec::new();
        for chunk in logins.chunks(WRITE_BATCH) {
            let commands: Vec<Cmd> = chunk
                .iter()
                .map(|login| {
                    let mut range = redis::cmd("ZRANGEBYSCORE");
                    range.arg(self.known_key(login)).arg(since.0).arg("+inf").arg("WITHSCORES");
                    range
                })
                .collect();
            let replies = self.call(operation, |connection| connection.pipeline(&commands))?;
            for (login, reply) in chunk.iter().zip(replies) {
                // A reply this version cannot read is skipped, like any stored record.
                let Ok(members) = redis::from_redis_value::<Vec<(String, f64)>>(reply) else { continue };
                for (member, score) in members {
                    if let Ok(source) = Source::parse(&member) {
                        known.push(KnownSource::bare(login.clone(), source, Timestamp(score as i64)));
                    }
                }
            }
        }
        known.sort_by_key(|record| record.at);
        let surplus = known.len().saturating_sub(limit);
        known.drain(..surplus);
        Ok(known)
    }

    fn prune_known_sources(&self, older_than: Timestamp, per_account: usize) -> Result<usize, StoreError> {
        let operation = "pruning known sources";
        let logins_key = self.key("known-logins");
        let older = format!("({}", older_than.0);
        let mut removed = 0;
        // Logins without a success since `older_than`: all their sources go.
        loop {
            let stale: Vec<String> = self.call(operation, |connection| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&logins_key)
                    .arg("-inf")
                    .arg(&older)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(SCAN_BATCH)
                    .query(connection.like())
            })?;
            if stale.is_empty() {
                break;
            }
            let mut commands = Vec::with_capacity(stale.len() + 1);
            for login in &stale {
                let mut clear = redis::cmd("ZREMRANGEBYSCORE");
                clear.arg(self.known_key(login)).arg("-inf").arg(&older);
                commands.push(clear);
            }
            let mut forget = redis::cmd("ZREM");
            forget.arg(&logins_key).arg(&stale);
            commands.push(forget);
            for login in &stale {
                let mut details = redis::cmd("DEL");
                details.arg(self.known_detail_key(login));
                commands.push(details);
            }
            let replies = self.call(operation, |connection| connection.pipeline(&commands))?;
            removed += replies[..stale.len().min(replies.len())].iter().map(count).sum::<usize>();
        }
        // The others: their old sources, then all but the newest `per_account`.
        let mut offset = 0;
        loop {
            let recent: Vec<String> = self.call(operation, |connection| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&logins_key)
                    .arg(older_than.0)
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(SCAN_BATCH)
                    .query(connection.like())
            })?;
            if recent.is_empty() {
                break;
            }
            offset += recent.len();
            let keep_rank = -1 - i64::try_from(per_account).unwrap_or(i64::MAX - 1);
            let mut commands = Vec::with_capacity(recent.len() * 3);
            for login in &recent {
                let key = self.known_key(login);
                let mut aged = redis::cmd("ZREMRANGEBYSCORE");
                aged.arg(&key).arg("-inf").arg(&older);
                commands.push(aged);
                let mut surplus = redis::cmd("ZREMRANGEBYRANK");
                surplus.arg(&key).arg(0).arg(keep_rank);
                commands.push(surplus);
                // In the same pipeline: the script's text with each call, as a pipeline
                // cannot rely on a script cached on the server.
                let mut details = redis::cmd("EVAL");
                details
                    .arg(TRIM_KNOWN_DETAILS)
                    .arg(1)
                    .arg(self.known_detail_key(login))
                    .arg(older_than.0)
                    .arg(per_account);
                commands.push(details);
            }
            let replies = self.call(operation, |connection| connection.pipeline(&commands))?;
            removed += replies.iter().map(count).sum::<usize>();
            if recent.len() < SCAN_BATCH {
                break;
            }
        }
        Ok(removed)
    }

    fn login_places(&self, login: &str, limit: usize) -> Result<Vec<KnownSource>, StoreError> {
        let stored: Vec<(String, String)> = self.call("reading a login's places", |connection| {
            redis::cmd("HGETALL").arg(self.known_detail_key(login)).query(connection.like())
        })?;
        let mut places: Vec<KnownSource> = stored
            .into_iter()
            .filter_map(|(member, detail)| {
                // A record this version cannot read is skipped, like any stored record.
                let source = Source::parse(&member).ok()?;
                let (login, at, protocol, app) = serde_json::from_str::<(String, i64, String, String)>(&detail).ok()?;
                Some(KnownSource { login, source, at: Timestamp(at).clamped(), protocol, app })
            })
            .collect();
        places.sort_by_key(|place| std::cmp::Reverse(place.at));
        places.truncate(limit);
        Ok(places)
    }

    fn self_service_key(&self, candidate: &str) -> Result<String, StoreError> {
        self.set_once("reading the self-service key", &self.key("self-service-key"), candidate)
    }

    fn spend_challenge(&self, id: &str, until: Timestamp, now: Timestamp) -> Result<bool, StoreError> {
        let ttl = u64::try_from(now.until(until).as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self.call("recording a used challenge", |connection| {
            redis::cmd("SET")
                .arg(self.key(&format!("spent:{id}")))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query(connection.like())
        })?;
        Ok(set.is_some())
    }

    fn self_unblocks(&self, source: Source, _now: Timestamp) -> Result<u32, StoreError> {
        let key = self.self_unblocks_key(source);
        let stored: Option<String> =
            self.call("reading self-unblocks", |connection| redis::cmd("GET").arg(&key).query(connection.like()))?;
        match stored {
            None => Ok(0),
            Some(text) => text.parse::<u32>().map_err(|_| {
                StoreError::operation("reading self-unblocks", format!("{key} holds {text:?}, not a count"))
            }),
        }
    }

    fn count_self_unblock(
        &self,
        source: Source,
        limit: u32,
        _now: Timestamp,
        day: Duration,
    ) -> Result<DailyCount, StoreError> {
        let day_ms = u64::try_from(day.as_millis()).unwrap_or(u64::MAX).max(1);
        let (counted, count): (i64, i64) = self.call("counting a self-unblock", |connection| {
            self.count_self_unblock.key(self.self_unblocks_key(source)).arg(limit).arg(day_ms).invoke(connection.like())
        })?;
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        Ok(if counted == 1 { DailyCount::Counted(count) } else { DailyCount::AtLimit(count) })
    }

    fn uncount_self_unblock(&self, source: Source) -> Result<(), StoreError> {
        let _: i64 = self.call("taking back a self-unblock", |connection| {
            self.uncount_self_unblock.key(self.self_unblocks_key(source)).invoke(connection.like())
        })?;
        Ok(())
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let used: HashMap<String, i64> = self
            .hash_entries("reading tokens", &self.key("tokens-used"))?
            .into_iter()
            .filter_map(|(name, at)| Some((name, at.parse().ok()?)))
            .collect();
        let mut tokens = Vec::new();
        for (name, json) in self.hash_entries("reading tokens", &self.key("tokens"))? {
            let last_used = used.get(&name).copied();
            match parse_token(name.clone(), &json, last_used) {
                Ok(token) => tokens.push(token),
                Err(e) => tracing::warn!(token = name, error = %e, "skipped a stored token this version cannot read"),
            }
        }
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tokens)
    }

    fn create_token(&self, token: &TokenRecord) -> Result<bool, StoreError> {
        let record = TokenStoredRecord {
            scope: token.scope.to_string(),
            digest: token.digest_hex(),
            created_at: token.created_at.0,
            expires_at: token.expires_at.map(|t| t.0),
        };
        let json = serde_json::to_string(&record).map_err(|e| StoreError::operation("saving a token", e))?;
        let mut set = redis::cmd("HSETNX");
        set.arg(self.key("tokens")).arg(&token.name).arg(json);
        let replies = self.write("saving a token", &[set], Change::Tokens)?;
        Ok(replies.first().is_some_and(|reply| integer(reply) > 0))
    }

    fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        let mut delete = redis::cmd("HDEL");
        delete.arg(self.key("tokens")).arg(name);
        let mut forget = redis::cmd("HDEL");
        forget.arg(self.key("tokens-used")).arg(name);
        let replies = self.write("deleting a token", &[delete, forget], Change::Tokens)?;
        Ok(replies.first().is_some_and(|reply| integer(reply) > 0))
    }

    fn touch_token(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        let mut set = redis::cmd("HSET");
        set.arg(self.key("tokens-used")).arg(name).arg(at.0);
        self.call("recording a token's use", |connection| connection.pipeline(&[set])).map(|_| ())
    }

    fn save_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let stored = AuditStoredRecord {
            at: record.at.0,
            actor: record.actor.clone(),
            action: record.action.label().to_string(),
            target: record.target.clone(),
            detail: record.detail.clone(),
        };
        let json = serde_json::to_string(&stored).map_err(|e| StoreError::operation("saving an audit record", e))?;
        let mut add = redis::cmd("XADD");
        add.arg(self.key("audit"))
            .arg("MAXLEN")
            .arg("~")
            .arg(crate::audit::MAX_RECORDS)
            .arg("*")
            .arg("audit")
            .arg(json);
        self.call("saving an audit record", |connection| connection.pipeline(&[add])).map(|_| ())
    }

    fn audit(&self, filter: &AuditFilter) -> Result<(Vec<AuditRecord>, usize), StoreError> {
        let key = self.key("audit");
        self.call("reading the audit trail", |connection| {
            let mut found = Vec::new();
            let mut total = 0;
            let mut end = String::from("+");
            let mut scanned = 0;
            while scanned < crate::audit::MAX_RECORDS + SCAN_BATCH {
                let batch: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg(&end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query(connection.like())?;
                let Some((last_id, _)) = batch.last() else { break };
                end = format!("({last_id}");
                scanned += batch.len();
                for (_, fields) in &batch {
                    let json = fields.chunks_exact(2).find(|pair| pair[0] == b"audit").map(|pair| pair[1].as_slice());
                    if let Some(record) = json.and_then(parse_audit)
                        && filter.matches(&record)
                    {
                        if total >= filter.offset && found.len() < filter.limit {
                            found.push(record);
                        }
                        total += 1;
                    }
                }
                if batch.len() < SCAN_BATCH {
                    break;
                }
            }
            Ok((found, total))
        })
    }

    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn announce_login_reset(&self, login: &str) -> Result<(), StoreError> {
        self.announce("announcing a login reset", Change::LoginReset { login: login.to_string() })
    }

    fn is_up(&self) -> bool {
        RedisStore::is_up(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(mask_url("redis://:hunter2@10.0.0.5:6379/2"), "redis://:***@10.0.0.5:6379/2");
        assert_eq!(mask_url("redis://app:s3cret@host:7000"), "redis://app:***@host:7000");
        assert_eq!(mask_url("redis://tokenonly@host"), "redis://***@host");
        assert_eq!(mask_url("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(
            mask_url("redis+unix:///run/redis.sock?db=1&pass=hunter2"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(mask_url("not a url"), "not a url");
    }

    #[test]
    fn malformed_settings_are_an_error_naming_the_url_without_its_password() {
        let settings = |urls: &[&str], cluster: bool| RedisSettings {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            cluster,
            prefix: "mw:".into(),
            budget: Duration::from_millis(50),
            ca_file: None,
        };
        let message = |s: RedisSettings| match RedisStore::open(&s) {
            Err(e @ StoreError::Open { .. }) => e.to_string(),
            Err(e) => panic!("expected an Open error, got {e}"),
            Ok(_) => panic!("expected an error"),
        };
        let text = message(settings(&["http://:hunter2@host:6379"], false));
        assert!(text.contains("http://:***@host:6379") && !text.contains("hunter2"), "{text}");
        assert!(message(settings(&[], false)).contains("no Redis URL"));
        assert!(message(settings(&["redis://a:1", "redis://b:2"], false)).contains("cluster mode"));
        let zero = RedisSettings { budget: Duration::ZERO, ..settings(&["redis://127.0.0.1:1"], false) };
        assert!(message(zero).contains("budget"));
    }

    #[test]
    fn announcements_are_flat_json_tagged_by_change() {
        let announcement = Announcement {
            node: "0123456789abcdef".into(),
            change: Change::BanSaved { source: "2001:db8::/64".into() },
        };
        let json = serde_json::to_string(&announcement).unwrap();
        assert_eq!(json, r#"{"node":"0123456789abcdef","change":"ban_saved","source":"2001:db8::/64"}"#);
        assert_eq!(serde_json::from_str::<Announcement>(&json).unwrap(), announcement);
        let lists = serde_json::to_string(&Announcement { node: "n".into(), change: Change::AccessEntries }).unwrap();
        assert_eq!(lists, r#"{"node":"n","change":"access_entries"}"#);
        let quarantine = Announcement {
            node: "n".into(),
            change: Change::Quarantine {
                source: "203.0.113.7".into(),
                guess: u64::MAX,
                login: "alice@example.com".into(),
                protocol: "imap".into(),
                device_id: String::new(),
                until: 1_795_334_400_000,
            },
        };
        let json = serde_json::to_string(&quarantine).unwrap();
        assert!(json.contains(r#""change":"quarantine""#) && json.contains("18446744073709551615"), "{json}");
        assert_eq!(serde_json::from_str::<Announcement>(&json).unwrap(), quarantine);
    }

    #[test]
    fn ids_secrets_and_stream_times_parse() {
        let id = random_hex(8);
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(random_hex(8), id);
        assert_eq!(
            parse_secret("000102030405060708090a0b0c0d0e0f"),
            Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        );
        assert_eq!(parse_secret("short"), None);
        assert_eq!(parse_secret("zz0102030405060708090a0b0c0d0e0f"), None);
        assert_eq!(id_millis("1795334400000-7"), 1_795_334_400_000);
    }
}
