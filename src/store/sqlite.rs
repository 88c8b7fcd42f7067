//! The embedded store: SQLite (bundled, so no system library is needed) in WAL mode with
//! `synchronous=FULL`, so an acknowledged write survives `kill -9` and power loss. One
//! connection behind a mutex: writes are rare (bans placed and lifted), reads happen at
//! start-up.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use ipnet::IpNet;

use super::{DailyCount, Store, StoreError};
use crate::access::{AccessEntry, ListKind, Origin};
use crate::audit::{AuditAction, AuditFilter, AuditRecord};
use crate::bans::{Ban, BanCause, BanReason};
use crate::clock::Timestamp;
use crate::events::{EVENT_OVERHEAD_BYTES, Event, EventFilter, EventKind, EventPage};
use crate::firewall::{KeyedRuleSet, RuleSet, StoredRuleSet};
use crate::journal::KnownSource;
use crate::network::Source;
use crate::principal::Scope;
use crate::tokens::TokenRecord;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE bans (
        source      TEXT PRIMARY KEY NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        failures    INTEGER NOT NULL,
        login       TEXT NOT NULL DEFAULT '',
        protocol    TEXT NOT NULL DEFAULT '',
        device_id   TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX bans_by_expiry ON bans (expires_at);",
    "CREATE TABLE access_entries (
        list        TEXT NOT NULL,
        network     TEXT NOT NULL,
        comment     TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        PRIMARY KEY (list, network)
    );",
    "CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        login       TEXT NOT NULL,
        ip          TEXT NOT NULL,
        protocol    TEXT NOT NULL,
        device_id   TEXT NOT NULL,
        rule        INTEGER,
        detail      TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events (at);
    CREATE INDEX events_by_ip ON events (ip, at);
    CREATE INDEX events_by_login ON events (login, at);
    CREATE TABLE firewall_rule_sets (
        key         TEXT PRIMARY KEY NOT NULL,
        rule_set    TEXT NOT NULL,
        updated_at  INTEGER NOT NULL
    );",
    "CREATE TABLE known_sources (
        login       TEXT NOT NULL,
        source      TEXT NOT NULL,
        last_success INTEGER NOT NULL,
        PRIMARY KEY (login, source)
    );
    CREATE INDEX known_sources_by_time ON known_sources (last_success);",
    "ALTER TABLE bans ADD COLUMN guesses TEXT NOT NULL DEFAULT '[]';",
    "CREATE TABLE self_service_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        key         TEXT NOT NULL
    );
    CREATE TABLE spent_challenges (
        id          TEXT PRIMARY KEY NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE INDEX spent_challenges_by_expiry ON spent_challenges (expires_at);
    CREATE TABLE self_unblocks (
        source      TEXT PRIMARY KEY NOT NULL,
        day_ends    INTEGER NOT NULL,
        count       INTEGER NOT NULL
    );
    CREATE INDEX self_unblocks_by_end ON self_unblocks (day_ends);",
    // The login filter compares `login::key`s; SQLite's lower() is right for ASCII only, so
    // `key_event_logins` redoes the others after this migration.
    "ALTER TABLE events ADD COLUMN login_key TEXT NOT NULL DEFAULT '';
    UPDATE events SET login_key = lower(login);
    DROP INDEX events_by_login;
    CREATE INDEX events_by_login_key ON events (login_key, at);",
    // IP+login refusals are bans scoped to one login: `refused_login` is its login key, '' for
    // a ban of the whole source, and a source holds one ban of each scope.
    "CREATE TABLE scoped_bans (
        source      TEXT NOT NULL,
        refused_login TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        failures    INTEGER NOT NULL,
        login       TEXT NOT NULL DEFAULT '',
        protocol    TEXT NOT NULL DEFAULT '',
        device_id   TEXT NOT NULL DEFAULT '',
        guesses     TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (source, refused_login)
    );
    INSERT INTO scoped_bans (source, created_at, expires_at, reason, failures, login, protocol, device_id, guesses)
        SELECT source, created_at, expires_at, reason, failures, login, protocol, device_id, guesses FROM bans;
    DROP TABLE bans;
    ALTER TABLE scoped_bans RENAME TO bans;
    CREATE INDEX bans_by_expiry ON bans (expires_at);",
    // 8: observe mode: a blocked entry that only records, and the block log's "would refuse".
    "ALTER TABLE access_entries ADD COLUMN observe INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN observed INTEGER NOT NULL DEFAULT 0;",
    // Admin tokens by name, as the SHA-256 of the token in hex (never the token), and the
    // audit trail of changes made through the API.
    "CREATE TABLE tokens (
        name        TEXT PRIMARY KEY NOT NULL,
        scope       TEXT NOT NULL,
        digest      TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        last_used   INTEGER
    );
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          INTEGER NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT NOT NULL,
        detail      TEXT NOT NULL
    );
    CREATE INDEX audit_by_actor ON audit (actor, id);
    CREATE INDEX audit_by_target ON audit (target, id);
    ALTER TABLE access_entries ADD COLUMN added_by TEXT NOT NULL DEFAULT '';",
    // Known sources keyed by the login's key and the source, in the primary key alone (a
    // table without rowid: two b-trees a row, with the time index, where a rowid table with a
    // key index and a login-key index wrote four; docs/BENCHMARKS.md), with the protocol and
    // mail app of the last success from each place, for a mailbox's login history. Rows
    // stored before read as an unknown app; two spellings of a login from one source become
    // one place, the newest.
    "CREATE TABLE known_sources_by_key (
        login_key    TEXT NOT NULL,
        source       TEXT NOT NULL,
        login        TEXT NOT NULL,
        last_success INTEGER NOT NULL,
        protocol     TEXT NOT NULL DEFAULT '',
        app          TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (login_key, source)
    ) WITHOUT ROWID;
    INSERT INTO known_sources_by_key (login_key, source, login, last_success)
        SELECT lower(login), source, login, MAX(last_success) FROM known_sources GROUP BY lower(login), source;
    DROP TABLE known_sources;
    ALTER TABLE known_sources_by_key RENAME TO known_sources;
    CREATE INDEX known_sources_by_time ON known_sources (last_success);",
    // Known sources lose their time index: the journal rewrote its entry (a deletion and an
    // insertion in a second b-tree) for every success it stored, thousands a second on a busy
    // server, to spare the minutely pruning a scan it makes anyway (its per-account limit
    // ranks every row) and the start-up read of the recent ones a sort (docs/BENCHMARKS.md,
    // issue 21).
    "DROP INDEX IF EXISTS known_sources_by_time;",
];

/// Work a migration needs done in Rust, in its transaction, after its SQL.
type MigrationStep = fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>;

/// (The migration's index in `MIGRATIONS`, its step.)
const MIGRATION_STEPS: &[(usize, MigrationStep)] = &[(6, key_event_logins), (10, key_known_logins)];

/// Sets `login_key` of events whose login is not plain ASCII (which `lower()` already keyed).
fn key_event_logins(transaction: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let mut select = transaction.prepare("SELECT id, login FROM events WHERE login GLOB '*[^ -~]*'")?;
    let rows: Vec<(i64, String)> =
        select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut update = transaction.prepare("UPDATE events SET login_key = ?1 WHERE id = ?2")?;
    for (id, login) in rows {
        update.execute(params![crate::login::key(&login), id])?;
    }
    Ok(())
}
/// Keys the known sources whose login is not plain ASCII (which `lower()` did not key as
/// `login::key` does); a place that two spellings share keeps its newest success.
fn key_known_logins(transaction: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let mut select = transaction
        .prepare("SELECT login_key, source, login, last_success FROM known_sources WHERE login GLOB '*[^ -~]*'")?;
    let rows: Vec<(String, String, String, i64)> = select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut delete = transaction.prepare("DELETE FROM known_sources WHERE login_key = ?1 AND source = ?2")?;
    let mut insert = transaction.prepare(
        "INSERT INTO known_sources (login_key, source, login, last_success) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (login_key, source) DO UPDATE SET
             login = CASE WHEN excluded.last_success >= last_success THEN excluded.login ELSE login END,
             last_success = MAX(last_success, excluded.last_success)",
    )?;
    for (old_key, source, login, at) in rows {
        let key = crate::login::key(&login);
        if key != old_key {
            delete.execute(params![old_key, source])?;
            insert.execute(params![key, source, login, at])?;
        }
    }
    Ok(())
}

/// An event row's text in bytes, as `Event::size` counts it (plus `EVENT_OVERHEAD_BYTES`).
const EVENT_TEXT_BYTES: &str = "length(CAST(login AS BLOB)) + length(CAST(ip AS BLOB))
     + length(CAST(protocol AS BLOB)) + length(CAST(device_id AS BLOB)) + length(CAST(detail AS BLOB))
     + length(CAST(kind AS BLOB))";

/// The columns `ban_from_row` reads, in its order.
const BAN_COLUMNS: &str =
    "source, created_at, expires_at, reason, failures, login, protocol, device_id, guesses, refused_login";

pub struct SqliteStore {
    connection: Mutex<Connection>,
}

/// The connection's page cache in KiB (`cache_size` takes KiB when negative; SQLite's
/// default is 2,000 KiB).
const CACHE_KIB: i64 = -8_192;
/// WAL pages after which a commit checkpoints them into the database (SQLite's default: 1,000).
const CHECKPOINT_PAGES: i64 = 4_000;

impl SqliteStore {
    /// Opens (creating if needed) `mailwarden.db` in `state_dir` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = state_dir.join("mailwarden.db");
        let open_error = |message: String| StoreError::Open { path: path.display().to_string(), message };
        crate::state_dir::create(state_dir)
            .map_err(|e| open_error(format!("cannot create {}: {e}", state_dir.display())))?;
        let connection = Connection::open(&path).map_err(|e| open_error(e.to_string()))?;
        Self::prepare(connection).map_err(|e| open_error(e.to_string()))
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let connection = Connection::open_in_memory()
            .map_err(|e| StoreError::Open { path: ":memory:".into(), message: e.to_string() })?;
        Self::prepare(connection).map_err(|e| StoreError::Open { path: ":memory:".into(), message: e.to_string() })
    }

    fn prepare(mut connection: Connection) -> rusqlite::Result<SqliteStore> {
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        // The journal's batches of known sources touch pages all over that table (random
        // keys): with SQLite's default 2 MiB cache a busy batch spilled dirty pages to the WAL
        // before its commit and read the same pages back from the file again and again, and a
        // checkpoint every 1,000 WAL pages copied each page back to the database once per
        // batch or two. A larger cache (allocated as it fills) and a checkpoint every 4,000
        // pages (16 MiB of WAL) cut the journal's CPU by about a quarter in the login mix
        // (docs/BENCHMARKS.md, issue 21).
        connection.pragma_update(None, "cache_size", CACHE_KIB)?;
        connection.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let applied = usize::try_from(applied).unwrap_or(0);
        for (number, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            let transaction = connection.transaction()?;
            transaction.execute_batch(migration)?;
            for (_, step) in MIGRATION_STEPS.iter().filter(|(after, _)| *after == number) {
                step(&transaction)?;
            }
            transaction.pragma_update(None, "user_version", i64::try_from(number + 1).unwrap_or(i64::MAX))?;
            transaction.commit()?;
        }
        Ok(SqliteStore { connection: Mutex::new(connection) })
    }

    /// Known sources that `query` (selecting login, source, last_success, protocol, app) finds.
    fn read_known(
        &self,
        operation: &'static str,
        query: &str,
        parameters: impl rusqlite::Params,
    ) -> Result<Vec<KnownSource>, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation(operation, e);
        let connection = self.lock();
        let mut statement = connection.prepare_cached(query).map_err(error)?;
        let rows = statement
            .query_map(parameters, |row| {
                Ok(KnownSource {
                    login: row.get(0)?,
                    source: Source::parse(&row.get::<_, String>(1)?).map_err(|_| rusqlite::Error::InvalidQuery)?,
                    at: Timestamp(row.get(2)?).clamped(),
                    protocol: row.get(3)?,
                    app: row.get(4)?,
                })
            })
            .map_err(error)?;
        // A row this version cannot read is skipped, like any stored record.
        Ok(rows.filter_map(Result::ok).collect())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The connection with `synchronous = NORMAL` while the journal stores its records (block-log
/// events, known sources), `FULL` again when dropped. Those records may be lost in a crash
/// (src/journal.rs), so their commits need no fsync of their own: in WAL mode the database
/// stays consistent either way, and the next `FULL` commit (a ban, an admin change) syncs the
/// whole log, theirs included. An fsync per batch was most of the writer's kernel time and
/// held the connection, and with it the next ban's write, for its duration.
struct Relaxed<'a> {
    connection: &'a mut Connection,
}

impl<'a> Relaxed<'a> {
    fn new(connection: &'a mut Connection) -> rusqlite::Result<Relaxed<'a>> {
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Relaxed { connection })
    }
}

impl std::ops::Deref for Relaxed<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Drop for Relaxed<'_> {
    fn drop(&mut self) {
        // Cannot fail on an open connection; if it ever did, the next durable write would
        // still be consistent, only not synced at once, so it is logged rather than hidden.
        if let Err(e) = self.connection.pragma_update(None, "synchronous", "FULL") {
            tracing::error!(error = %e, "could not set the store back to synchronous writes");
        }
    }
}

fn ban_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Ban>> {
    let source: String = row.get(0)?;
    let reason: String = row.get(3)?;
    let failures: i64 = row.get(4)?;
    // A row this version cannot read (a newer reason, a corrupted source) is skipped rather than
    // stopping start-up; it is logged by the caller's count.
    let (Ok(source), Some(reason)) = (Source::parse(&source), BanReason::from_label(&reason)) else {
        return Ok(None);
    };
    let refused_login: String = row.get(9)?;
    let mut ban = Ban {
        source,
        refused_login: (!refused_login.is_empty()).then_some(refused_login),
        created_at: Timestamp(row.get(1)?),
        expires_at: Timestamp(row.get(2)?),
        reason,
        failures: u32::try_from(failures).unwrap_or(0),
        cause: BanCause {
            login: row.get(5)?,
            protocol: row.get(6)?,
            device_id: row.get(7)?,
            guesses: serde_json::from_str(&row.get::<_, String>(8)?).unwrap_or_default(),
        },
    };
    super::note_clamped(ban.clamp_times(), "ban", &ban.source.to_string());
    Ok(Some(ban))
}

fn access_entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<AccessEntry>> {
    let list: String = row.get(0)?;
    let network: String = row.get(1)?;
    let (Some(list), Ok(network)) = (ListKind::from_label(&list), network.parse::<IpNet>()) else {
        return Ok(None);
    };
    let mut entry = AccessEntry {
        list,
        network,
        comment: row.get(2)?,
        created_at: Timestamp(row.get(3)?),
        expires_at: row.get::<_, Option<i64>>(4)?.map(Timestamp),
        origin: Origin::Api,
        observe: row.get::<_, i64>(5)? != 0,
        added_by: row.get(6)?,
    };
    super::note_clamped(entry.clamp_times(), "list entry", &entry.network.to_string());
    Ok(Some(entry))
}

/// Counts the rows of `table` matching `conditions` (a `WHERE` clause with `values`), then
/// adds the page's `LIMIT ? OFFSET ?` values for the query that follows.
fn count_then_page(
    connection: &Connection,
    table: &str,
    conditions: &str,
    values: &mut Vec<rusqlite::types::Value>,
    limit: usize,
    offset: usize,
) -> rusqlite::Result<i64> {
    let total = connection.query_row(
        &format!("SELECT COUNT(*) FROM {table} {conditions}"),
        rusqlite::params_from_iter(values.iter()),
        |row| row.get(0),
    )?;
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    values.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
    Ok(total)
}

impl Store for SqliteStore {
    fn active_bans(&self, now: Timestamp) -> Result<Vec<Ban>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!("SELECT {BAN_COLUMNS} FROM bans WHERE expires_at > ?1"))
            .map_err(|e| StoreError::operation("reading bans", e))?;
        let rows =
            statement.query_map(params![now.0], ban_from_row).map_err(|e| StoreError::operation("reading bans", e))?;
        let mut bans = Vec::new();
        for row in rows {
            match row.map_err(|e| StoreError::operation("reading bans", e))? {
                Some(ban) => bans.push(ban),
                None => tracing::warn!("skipped a stored ban this version cannot read"),
            }
        }
        Ok(bans)
    }

    fn save_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        self.lock()
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO bans ({BAN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    ban.source.network().to_string(),
                    ban.created_at.0,
                    ban.expires_at.0,
                    ban.reason.label(),
                    i64::from(ban.failures),
                    ban.cause.login,
                    ban.cause.protocol,
                    ban.cause.device_id,
                    serde_json::to_string(&ban.cause.guesses).unwrap_or_else(|_| "[]".into()),
                    ban.refused_login().unwrap_or(""),
                ],
            )
            .map(|_| ())
            .map_err(|e| StoreError::operation("saving a ban", e))
    }

    fn delete_ban(&self, source: Source, refused_login: Option<&str>, _now: Timestamp) -> Result<bool, StoreError> {
        self.lock()
            .execute(
                "DELETE FROM bans WHERE source = ?1 AND refused_login = ?2",
                params![source.network().to_string(), refused_login.unwrap_or("")],
            )
            .map(|n| n > 0)
            .map_err(|e| StoreError::operation("deleting a ban", e))
    }

    fn delete_expired_bans(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.lock()
            .execute("DELETE FROM bans WHERE expires_at <= ?1", params![now.0])
            .map_err(|e| StoreError::operation("deleting expired bans", e))
    }

    fn access_entries(&self) -> Result<Vec<AccessEntry>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT list, network, comment, created_at, expires_at, observe, added_by FROM access_entries")
            .map_err(|e| StoreError::operation("reading list entries", e))?;
        let rows = statement
            .query_map([], access_entry_from_row)
            .map_err(|e| StoreError::operation("reading list entries", e))?;
        let mut entries = Vec::new();
        for row in rows {
            match row.map_err(|e| StoreError::operation("reading list entries", e))? {
                Some(entry) => entries.push(entry),
                None => tracing::warn!("skipped a stored list entry this version cannot read"),
            }
        }
        Ok(entries)
    }

    fn save_access_entry(&self, entry: &AccessEntry) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO access_entries (list, network, comment, created_at, expires_at, observe, added_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    entry.list.label(),
                    entry.network.to_string(),
                    entry.comment,
                    entry.created_at.0,
                    entry.expires_at.map(|t| t.0),
                    i64::from(entry.observe),
                    entry.added_by,
                ],
            )
            .map(|_| ())
            .map_err(|e| StoreError::operation("saving a list entry", e))
    }

    fn delete_access_entry(&self, list: ListKind, network: IpNet) -> Result<bool, StoreError> {
        self.lock()
            .execute(
                "DELETE FROM access_entries WHERE list = ?1 AND network = ?2",
                params![list.label(), network.to_string()],
            )
            .map(|n| n > 0)
            .map_err(|e| StoreError::operation("deleting a list entry", e))
    }

    fn delete_expired_access_entries(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.lock()
            .execute("DELETE FROM access_entries WHERE expires_at IS NOT NULL AND expires_at <= ?1", params![now.0])
            .map_err(|e| StoreError::operation("deleting expired list entries", e))
    }

    fn save_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let error = |e: rusqlite::Error| StoreError::operation("saving events", e);
        let connection = Relaxed::new(&mut connection).map_err(error)?;
        let transaction = connection.unchecked_transaction().map_err(error)?;
        {
            let mut insert = transaction
                .prepare_cached("INSERT INTO events (at, kind, login, ip, protocol, device_id, rule, detail, login_key, observed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
                .map_err(error)?;
            for event in events {
                insert
                    .execute(params![
                        event.at.0,
                        event.kind.label(),
                        event.login,
                        event.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                        event.protocol,
                        event.device_id,
                        event.rule,
                        event.detail,
                        crate::login::key(&event.login),
                        i64::from(event.observed),
                    ])
                    .map_err(error)?;
            }
        }
        transaction.commit().map_err(error)
    }

    fn events(&self, filter: &EventFilter) -> Result<EventPage, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("reading events", e);
        let mut conditions = String::from("WHERE 1=1");
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(ip) = filter.ip {
            conditions.push_str(" AND ip = ?");
            values.push(ip.to_string().into());
        }
        if let Some(login) = &filter.login {
            conditions.push_str(" AND login_key = ?");
            values.push(crate::login::key(login).into_owned().into());
        }
        if let Some(domain) = &filter.domain {
            // By the key's end rather than LIKE, whose wildcards a domain may contain (`_`).
            conditions.push_str(" AND substr(login_key, -length(?)) = ?");
            let suffix = format!("@{domain}");
            values.push(suffix.clone().into());
            values.push(suffix.into());
        }
        if let Some(kind) = filter.kind {
            conditions.push_str(" AND kind = ?");
            values.push(kind.label().to_string().into());
        }
        if let Some(since) = filter.since {
            conditions.push_str(" AND at >= ?");
            values.push(since.0.into());
        }
        if let Some(until) = filter.until {
            conditions.push_str(" AND at <= ?");
            values.push(until.0.into());
        }
        if let Some(text) = filter.text.as_deref().filter(|text| !text.is_empty()) {
            // LIKE ignores the case of ASCII letters; its wildcards in the text are escaped,
            // so `100%` and `a_b` are found as written.
            conditions.push_str(" AND detail LIKE ? ESCAPE '\\'");
            let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            values.push(format!("%{escaped}%").into());
        }
        if let Some(observed) = filter.observed {
            conditions.push_str(" AND observed = ?");
            values.push(i64::from(observed).into());
        }
        let connection = self.lock();
        let total = count_then_page(&connection, "events", &conditions, &mut values, filter.limit, filter.offset)
            .map_err(error)?;
        let sql = format!(
            "SELECT at, kind, login, ip, protocol, device_id, rule, detail, observed FROM events {conditions} ORDER BY at DESC, id DESC LIMIT ? OFFSET ?"
        );
        let mut statement = connection.prepare(&sql).map_err(error)?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), |row| {
                let kind: String = row.get(1)?;
                let ip: String = row.get(3)?;
                Ok(EventKind::from_label(&kind).map(|kind| {
                    let mut event = Event {
                        at: Timestamp(row.get(0).unwrap_or(0)),
                        kind,
                        login: row.get(2).unwrap_or_default(),
                        ip: ip.parse().ok(),
                        protocol: row.get(4).unwrap_or_default(),
                        device_id: row.get(5).unwrap_or_default(),
                        rule: row.get(6).unwrap_or(None),
                        detail: row.get(7).unwrap_or_default(),
                        observed: row.get::<_, i64>(8).unwrap_or(0) != 0,
                    };
                    super::note_clamped(event.clamp_time(), "event", &ip);
                    event
                }))
            })
            .map_err(error)?;
        let mut events = Vec::new();
        for row in rows {
            if let Some(event) = row.map_err(error)? {
                events.push(event);
            }
        }
        Ok(EventPage { events, total: usize::try_from(total).unwrap_or(0), total_exact: true })
    }

    fn prune_events(&self, older_than: Timestamp, keep_at_most: usize, max_bytes: u64) -> Result<usize, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("pruning events", e);
        let connection = self.lock();
        let aged = connection.execute("DELETE FROM events WHERE at < ?1", params![older_than.0]).map_err(error)?;
        let surplus = connection
            .execute(
                "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                params![i64::try_from(keep_at_most).unwrap_or(i64::MAX)],
            )
            .map_err(error)?;
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        // The pages in use bound the events' size from above (their text is stored once more
        // in the indexes), so the full count below runs only when it might find too much.
        let in_use: i64 = connection
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())",
                [],
                |row| row.get(0),
            )
            .map_err(error)?;
        let page_size: i64 = connection.query_row("PRAGMA page_size", [], |row| row.get(0)).map_err(error)?;
        if in_use.saturating_mul(page_size) <= max_bytes {
            return Ok(aged + surplus);
        }
        let oversize = connection
            .execute(
                &format!(
                    "DELETE FROM events WHERE id <= (
                         SELECT id FROM (SELECT id, SUM({EVENT_TEXT_BYTES} + {EVENT_OVERHEAD_BYTES}) OVER (ORDER BY id DESC) AS newer FROM events)
                         WHERE newer > ?1 ORDER BY id DESC LIMIT 1)"
                ),
                params![max_bytes],
            )
            .map_err(error)?;
        Ok(aged + surplus + oversize)
    }

    fn firewall_rule_sets(&self) -> Result<Vec<KeyedRuleSet>, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("reading firewall rules", e);
        let connection = self.lock();
        let mut statement = connection.prepare("SELECT key, rule_set FROM firewall_rule_sets").map_err(error)?;
        let rows =
            statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))).map_err(error)?;
        let mut sets = Vec::new();
        for row in rows {
            let (key, json) = row.map_err(error)?;
            sets.extend(super::stored_rule_set(key, &json));
        }
        Ok(sets)
    }

    fn save_firewall_rule_set(&self, key: &str, rule_set: &RuleSet) -> Result<(), StoreError> {
        let json = serde_json::to_string(&StoredRuleSet::from(rule_set))
            .map_err(|e| StoreError::operation("saving firewall rules", e))?;
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO firewall_rule_sets (key, rule_set, updated_at) VALUES (?1, ?2, strftime('%s','now'))",
                params![key, json],
            )
            .map(|_| ())
            .map_err(|e| StoreError::operation("saving firewall rules", e))
    }

    fn delete_firewall_rule_set(&self, key: &str) -> Result<bool, StoreError> {
        self.lock()
            .execute("DELETE FROM firewall_rule_sets WHERE key = ?1", params![key])
            .map(|n| n > 0)
            .map_err(|e| StoreError::operation("deleting firewall rules", e))
    }

    fn save_known_sources(&self, known: &[KnownSource]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let error = |e: rusqlite::Error| StoreError::operation("saving known sources", e);
        let connection = Relaxed::new(&mut connection).map_err(error)?;
        let transaction = connection.unchecked_transaction().map_err(error)?;
        {
            let mut upsert = transaction
                .prepare_cached(
                    "INSERT INTO known_sources (login, source, last_success, protocol, app, login_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (login_key, source) DO UPDATE SET
                         login = CASE WHEN excluded.last_success >= last_success THEN excluded.login ELSE login END,
                         protocol = CASE WHEN excluded.last_success >= last_success THEN excluded.protocol ELSE protocol END,
                         app = CASE WHEN excluded.last_success >= last_success THEN excluded.app ELSE app END,
                         last_success = MAX(last_success, excluded.last_success)",
                )
                .map_err(error)?;
            for record in known {
                upsert
                    .execute(params![
                        record.login,
                        record.source.network().to_string(),
                        record.at.0,
                        record.protocol,
                        record.app,
                        crate::login::key(&record.login)
                    ])
                    .map_err(error)?;
            }
        }
        transaction.commit().map_err(error)
    }

    fn known_sources(&self, login: &str, since: Timestamp, limit: usize) -> Result<Vec<Source>, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("reading known sources", e);
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT source FROM known_sources WHERE login_key = ?1 AND last_success >= ?2 ORDER BY last_success DESC LIMIT ?3",
            )
            .map_err(error)?;
        let rows = statement
            .query_map(params![crate::login::key(login), since.0, i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                row.get::<_, String>(0)
            })
            .map_err(error)?;
        let mut sources = Vec::new();
        for row in rows {
            if let Ok(source) = Source::parse(&row.map_err(error)?) {
                sources.push(source);
            }
        }
        Ok(sources)
    }

    fn recent_known_sources(&self, since: Timestamp, limit: usize) -> Result<Vec<KnownSource>, StoreError> {
        let mut known = self.read_known(
            "reading recent known sources",
            "SELECT login, source, last_success, protocol, app FROM known_sources WHERE last_success >= ?1 ORDER BY last_success DESC LIMIT ?2",
            params![since.0, i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        known.reverse();
        Ok(known)
    }

    fn login_places(&self, login: &str, limit: usize) -> Result<Vec<KnownSource>, StoreError> {
        self.read_known(
            "reading a login's places",
            "SELECT login, source, last_success, protocol, app FROM known_sources WHERE login_key = ?1 ORDER BY last_success DESC LIMIT ?2",
            params![crate::login::key(login), i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn prune_known_sources(&self, older_than: Timestamp, per_account: usize) -> Result<usize, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("pruning known sources", e);
        let connection = self.lock();
        let aged = connection
            .execute("DELETE FROM known_sources WHERE last_success < ?1", params![older_than.0])
            .map_err(error)?;
        let surplus = connection
            .execute(
                "DELETE FROM known_sources WHERE (login_key, source) IN (
                     SELECT login_key, source FROM (
                         SELECT login_key, source, ROW_NUMBER() OVER (PARTITION BY login_key ORDER BY last_success DESC) AS n
                         FROM known_sources
                     ) WHERE n > ?1)",
                params![i64::try_from(per_account).unwrap_or(i64::MAX)],
            )
            .map_err(error)?;
        Ok(aged + surplus)
    }

    fn self_service_key(&self, candidate: &str) -> Result<String, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("reading the self-service key", e);
        let connection = self.lock();
        let read =
            || connection.query_row("SELECT key FROM self_service_key WHERE id = 1", [], |row| row.get(0)).optional();
        // Read first: the key is read for every challenge, and is written only once.
        if let Some(key) = read().map_err(error)? {
            return Ok(key);
        }
        connection
            .execute("INSERT OR IGNORE INTO self_service_key (id, key) VALUES (1, ?1)", params![candidate])
            .map_err(error)?;
        read().map_err(error)?.ok_or_else(|| StoreError::operation("reading the self-service key", "no key stored"))
    }

    fn spend_challenge(&self, id: &str, until: Timestamp, now: Timestamp) -> Result<bool, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("recording a used challenge", e);
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(error)?;
        transaction.execute("DELETE FROM spent_challenges WHERE expires_at <= ?1", params![now.0]).map_err(error)?;
        let inserted = transaction
            .execute("INSERT OR IGNORE INTO spent_challenges (id, expires_at) VALUES (?1, ?2)", params![id, until.0])
            .map_err(error)?;
        transaction.commit().map_err(error)?;
        Ok(inserted == 1)
    }

    fn self_unblocks(&self, source: Source, now: Timestamp) -> Result<u32, StoreError> {
        self.lock()
            .query_row(
                "SELECT count FROM self_unblocks WHERE source = ?1 AND day_ends > ?2",
                params![source.network().to_string(), now.0],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|count| count.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
            .map_err(|e| StoreError::operation("reading self-unblocks", e))
    }

    fn count_self_unblock(
        &self,
        source: Source,
        limit: u32,
        now: Timestamp,
        day: Duration,
    ) -> Result<DailyCount, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("counting a self-unblock", e);
        let source = source.network().to_string();
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(error)?;
        transaction.execute("DELETE FROM self_unblocks WHERE day_ends <= ?1", params![now.0]).map_err(error)?;
        let count: i64 = transaction
            .query_row("SELECT count FROM self_unblocks WHERE source = ?1", params![source], |row| row.get(0))
            .optional()
            .map_err(error)?
            .unwrap_or(0);
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        if count >= limit {
            return Ok(DailyCount::AtLimit(count));
        }
        transaction
            .execute(
                "INSERT INTO self_unblocks (source, day_ends, count) VALUES (?1, ?2, 1)
                 ON CONFLICT (source) DO UPDATE SET count = count + 1",
                params![source, now.plus(day).0],
            )
            .map_err(error)?;
        transaction.commit().map_err(error)?;
        Ok(DailyCount::Counted(count + 1))
    }

    fn uncount_self_unblock(&self, source: Source) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE self_unblocks SET count = count - 1 WHERE source = ?1 AND count > 0",
                params![source.network().to_string()],
            )
            .map(|_| ())
            .map_err(|e| StoreError::operation("taking back a self-unblock", e))
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("reading tokens", e);
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT name, scope, digest, created_at, expires_at, last_used FROM tokens ORDER BY name")
            .map_err(error)?;
        let rows = statement
            .query_map([], |row| {
                let name: String = row.get(0)?;
                let scope: String = row.get(1)?;
                let digest: String = row.get(2)?;
                Ok((
                    name,
                    scope,
                    digest,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                    row.get::<_, Option<i64>>(5)?,
                ))
            })
            .map_err(error)?;
        let mut tokens = Vec::new();
        for row in rows {
            let (name, scope, digest, created_at, expires_at, last_used) = row.map_err(error)?;
            match (Scope::parse(&scope), crate::tokens::parse_digest(&digest)) {
                (Ok(scope), Some(digest)) => tokens.push(TokenRecord {
                    name,
                    scope,
                    digest,
                    created_at: Timestamp(created_at).clamped(),
                    expires_at: expires_at.map(|t| Timestamp(t).clamped()),
                    last_used: last_used.map(|t| Timestamp(t).clamped()),
                }),
                _ => tracing::warn!(token = name, "skipped a stored token this version cannot read"),
            }
        }
        Ok(tokens)
    }

    fn create_token(&self, token: &TokenRecord) -> Result<bool, StoreError> {
        self.lock()
            .execute(
                "INSERT OR IGNORE INTO tokens (name, scope, digest, created_at, expires_at, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    token.name,
                    token.scope.to_string(),
                    token.digest_hex(),
                    token.created_at.0,
                    token.expires_at.map(|t| t.0),
                    token.last_used.map(|t| t.0)
                ],
            )
            .map(|inserted| inserted > 0)
            .map_err(|e| StoreError::operation("saving a token", e))
    }

    fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        self.lock()
            .execute("DELETE FROM tokens WHERE name = ?1", params![name])
            .map(|deleted| deleted > 0)
            .map_err(|e| StoreError::operation("deleting a token", e))
    }

    fn touch_token(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE tokens SET last_used = max(coalesce(last_used, ?2), ?2) WHERE name = ?1",
                params![name, at.0],
            )
            .map(|_| ())
            .map_err(|e| StoreError::operation("recording a token's use", e))
    }

    fn save_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("saving an audit record", e);
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(error)?;
        transaction
            .execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![record.at.0, record.actor, record.action.label(), record.target, record.detail],
            )
            .map_err(error)?;
        let newest = transaction.last_insert_rowid();
        let keep = i64::try_from(crate::audit::MAX_RECORDS).unwrap_or(i64::MAX);
        transaction.execute("DELETE FROM audit WHERE id <= ?1", params![newest - keep]).map_err(error)?;
        transaction.commit().map_err(error)
    }

    fn audit(&self, filter: &AuditFilter) -> Result<(Vec<AuditRecord>, usize), StoreError> {
        let error = |e: rusqlite::Error| StoreError::operation("reading the audit trail", e);
        let mut conditions = String::from("WHERE 1=1");
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        for (column, value) in [
            ("actor", filter.actor.clone()),
            ("action", filter.action.map(|a| a.label().to_string())),
            ("target", filter.target.clone()),
        ] {
            if let Some(value) = value {
                conditions.push_str(&format!(" AND {column} = ?"));
                values.push(value.into());
            }
        }
        if let Some(since) = filter.since {
            conditions.push_str(" AND at >= ?");
            values.push(since.0.into());
        }
        let connection = self.lock();
        let total = count_then_page(&connection, "audit", &conditions, &mut values, filter.limit, filter.offset)
            .map_err(error)?;
        let sql = format!(
            "SELECT at, actor, action, target, detail FROM audit {conditions} ORDER BY id DESC LIMIT ? OFFSET ?"
        );
        let mut statement = connection.prepare(&sql).map_err(error)?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), |row| {
                let action: String = row.get(2)?;
                Ok(AuditAction::from_label(&action).map(|action| AuditRecord {
                    at: Timestamp(row.get(0).unwrap_or(0)).clamped(),
                    actor: row.get(1).unwrap_or_default(),
                    action,
                    target: row.get(3).unwrap_or_default(),
                    detail: row.get(4).unwrap_or_default(),
                }))
            })
            .map_err(error)?;
        let mut records = Vec::new();
        for row in rows {
            records.extend(row.map_err(error)?);
        }
        Ok((records, usize::try_from(total).unwrap_or(0)))
    }

    fn close(&self) -> Result<(), StoreError> {
        self.lock()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| StoreError::operation("checkpointing", e))
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

impl SqliteStore {
    /// The stored ban on `source`, whatever its expiry: for tests and diagnostics.
    pub fn ban(&self, source: Source) -> Result<Option<Ban>, StoreError> {
        self.scoped_ban(source, None)
    }

    /// The stored ban on `source` of that scope (`refused_login`: the login's IP+login
    /// refusal), whatever its expiry.
    pub fn scoped_ban(&self, source: Source, refused_login: Option<&str>) -> Result<Option<Ban>, StoreError> {
        self.lock()
            .query_row(
                &format!("SELECT {BAN_COLUMNS} FROM bans WHERE source = ?1 AND refused_login = ?2"),
                params![source.network().to_string(), refused_login.unwrap_or("")],
                ban_from_row,
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| StoreError::operation("reading a ban", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::RuleSetOrigin;
    use crate::network::{SourceGrouping, parse_ip};

    const NOW: Timestamp = Timestamp(1_795_334_400_000);

    fn ban(address: &str, expires_in_ms: i64) -> Ban {
        Ban {
            source: SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 }.source_of(parse_ip(address).unwrap()),
            refused_login: None,
            created_at: NOW,
            expires_at: Timestamp(NOW.0 + expires_in_ms),
            reason: BanReason::Autoban,
            failures: 5,
            cause: BanCause {
                login: "alice@example.com".into(),
                protocol: "imap".into(),
                device_id: "\"name\" \"Mail\"".into(),
                guesses: vec![crate::bans::BanGuess {
                    login: "alice@example.com".into(),
                    failures: 3,
                    ..Default::default()
                }],
            },
        }
    }

    #[test]
    fn bans_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let stored = ban("2001:db8:1:2::7", 60_000);
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store.save_ban(&stored).unwrap();
            store.save_ban(&ban("203.0.113.9", -1)).unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.active_bans(NOW).unwrap(), vec![stored.clone()]);
        assert_eq!(store.ban(stored.source).unwrap(), Some(stored.clone()));
        assert_eq!(store.delete_expired_bans(NOW).unwrap(), 1);
        assert!(store.delete_ban(stored.source, None, Timestamp(0)).unwrap());
        assert!(!store.delete_ban(stored.source, None, Timestamp(0)).unwrap());
        assert!(store.active_bans(NOW).unwrap().is_empty());
        for reason in BanReason::ALL {
            let mut placed = ban("198.51.100.7", 60_000);
            placed.reason = reason;
            placed.source =
                SourceGrouping { ipv4_prefix: 24, ipv6_prefix: 48 }.source_of(parse_ip("198.51.100.7").unwrap());
            store.save_ban(&placed).unwrap();
            assert_eq!(store.ban(placed.source).unwrap(), Some(placed), "{reason:?} round-trips");
        }
    }

    #[test]
    fn a_login_refusal_and_a_ban_of_its_source_are_stored_and_lifted_apart() {
        let dir = tempfile::tempdir().unwrap();
        let whole = ban("203.0.113.7", 60_000);
        let mut refusal = ban("203.0.113.7", 30_000);
        refusal.refused_login = Some("alice@example.com".into());
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store.save_ban(&refusal).unwrap();
            store.save_ban(&whole).unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut loaded = store.active_bans(NOW).unwrap();
        loaded.sort_by_key(|b| b.expires_at);
        assert_eq!(loaded, vec![refusal.clone(), whole.clone()]);
        assert!(store.delete_ban(whole.source, None, Timestamp(0)).unwrap());
        assert_eq!(store.scoped_ban(whole.source, Some("alice@example.com")).unwrap(), Some(refusal.clone()));
        assert!(store.delete_ban(whole.source, Some("alice@example.com"), Timestamp(0)).unwrap());
        assert!(store.active_bans(NOW).unwrap().is_empty());
    }

    #[test]
    fn bans_stored_before_login_refusals_existed_are_kept_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        {
            let connection = Connection::open(dir.path().join("mailwarden.db")).unwrap();
            for migration in &MIGRATIONS[..6] {
                connection.execute_batch(migration).unwrap();
            }
            connection.pragma_update(None, "user_version", 6).unwrap();
            connection
                .execute(
                    "INSERT INTO bans (source, created_at, expires_at, reason, failures, login) VALUES ('203.0.113.9', ?1, ?2, 'autoban', 5, 'bob@example.com')",
                    params![NOW.0, NOW.0 + 60_000],
                )
                .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let bans = store.active_bans(NOW).unwrap();
        assert_eq!(bans.len(), 1);
        assert_eq!((bans[0].source.to_string(), bans[0].refused_login.as_deref()), ("203.0.113.9".into(), None));
        assert_eq!(bans[0].cause.login, "bob@example.com");
    }

    #[test]
    fn known_sources_stored_before_apps_were_kept_read_as_an_unknown_app() {
        let dir = tempfile::tempdir().unwrap();
        {
            let connection = Connection::open(dir.path().join("mailwarden.db")).unwrap();
            for migration in &MIGRATIONS[..10] {
                connection.execute_batch(migration).unwrap();
            }
            connection.pragma_update(None, "user_version", 10).unwrap();
            connection
                .execute(
                    "INSERT INTO known_sources (login, source, last_success) VALUES ('Alice', '203.0.113.7', 20)",
                    [],
                )
                .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let places = store.login_places("alice", 10).unwrap();
        assert_eq!(places, vec![KnownSource::bare("Alice", Source::parse("203.0.113.7").unwrap(), Timestamp(20))]);
    }

    #[test]
    fn the_journals_records_skip_the_fsync_but_every_other_write_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let synchronous = |store: &SqliteStore| -> i64 {
            store.lock().pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap()
        };
        const FULL: i64 = 2;
        assert_eq!(synchronous(&store), FULL);
        let source = Source::parse("203.0.113.7").unwrap();
        store.save_known_sources(&[KnownSource::bare("alice", source, Timestamp(10))]).unwrap();
        assert_eq!(synchronous(&store), FULL, "a ban saved after the journal's batch is synced");
        store.save_ban(&ban("203.0.113.8", 60_000)).unwrap();
        drop(store);
        let reopened = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(reopened.known_sources("alice", Timestamp(0), 10).unwrap(), vec![source]);
        assert_eq!(reopened.active_bans(NOW).unwrap().len(), 1);
    }

    #[test]
    fn a_logins_places_carry_the_protocol_and_app_of_their_last_success() {
        let store = SqliteStore::in_memory().unwrap();
        let source = |text: &str| Source::parse(text).unwrap();
        let known = |src: &str, at: i64, protocol: &str, app: &str| KnownSource {
            login: "alice".into(),
            source: source(src),
            at: Timestamp(at),
            protocol: protocol.into(),
            app: app.into(),
        };
        store
            .save_known_sources(&[
                known("203.0.113.7", 10, "imap", "\"name\" \"Thunderbird\""),
                known("198.51.100.7", 20, "pop3", ""),
                known("203.0.113.7", 30, "submission", "\"name\" \"K-9\""),
                // Late and older: changes nothing.
                known("203.0.113.7", 5, "imap", "old"),
            ])
            .unwrap();
        let places = store.login_places("alice", 10).unwrap();
        assert_eq!(
            places,
            vec![known("203.0.113.7", 30, "submission", "\"name\" \"K-9\""), known("198.51.100.7", 20, "pop3", "")]
        );
        assert_eq!(store.login_places("alice", 1).unwrap().len(), 1, "at most the limit");
        assert_eq!(store.login_places("ALICE", 10).unwrap().len(), 2, "in any spelling");
        assert!(store.login_places("bob", 10).unwrap().is_empty());
    }

    #[test]
    fn known_sources_stored_before_the_table_lost_its_rowid_are_kept_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        {
            let connection = Connection::open(dir.path().join("mailwarden.db")).unwrap();
            for migration in &MIGRATIONS[..10] {
                connection.execute_batch(migration).unwrap();
            }
            connection.pragma_update(None, "user_version", 10).unwrap();
            for (login, source, at) in [
                ("alice", "203.0.113.7", 20),
                ("alice", "198.51.100.0/24", 10),
                ("bob", "203.0.113.7", 5),
                // Two spellings of one login at one place, and a login lower() cannot key.
                ("Bob", "203.0.113.7", 7),
                ("ÉLODIE@example.com", "192.0.2.1", 3),
            ] {
                connection
                    .execute(
                        "INSERT INTO known_sources (login, source, last_success) VALUES (?1, ?2, ?3)",
                        params![login, source, at],
                    )
                    .unwrap();
            }
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            store.known_sources("alice", Timestamp(0), 10).unwrap(),
            vec![Source::parse("203.0.113.7").unwrap(), Source::parse("198.51.100.0/24").unwrap()]
        );
        assert_eq!(store.prune_known_sources(Timestamp(0), 1).unwrap(), 1, "alice's older source is the surplus");
        assert_eq!(store.known_sources("bob", Timestamp(0), 10).unwrap(), vec![Source::parse("203.0.113.7").unwrap()]);
        let bob = store.login_places("BOB", 10).unwrap();
        assert_eq!(
            bob.iter().map(|k| (k.login.as_str(), k.at.0)).collect::<Vec<_>>(),
            [("Bob", 7)],
            "one place, the newest"
        );
        assert_eq!(store.known_sources("élodie@example.com", Timestamp(0), 10).unwrap().len(), 1);
    }

    #[test]
    fn list_entries_round_trip_with_and_without_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let forever = AccessEntry {
            observe: false,
            list: ListKind::Trusted,
            network: "192.0.2.0/24".parse().unwrap(),
            comment: "office".into(),
            created_at: NOW,
            expires_at: None,
            origin: Origin::Api,
            added_by: "desk".into(),
        };
        let brief = AccessEntry {
            observe: false,
            list: ListKind::Blocked,
            network: "2001:db8::/48".parse().unwrap(),
            comment: String::new(),
            created_at: NOW,
            expires_at: Some(Timestamp(NOW.0 + 1000)),
            origin: Origin::Api,
            added_by: String::new(),
        };
        store.save_access_entry(&forever).unwrap();
        store.save_access_entry(&brief).unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut entries = store.access_entries().unwrap();
        entries.sort_by_key(|e| e.list);
        assert_eq!(entries, vec![forever.clone(), brief.clone()]);
        assert_eq!(store.delete_expired_access_entries(Timestamp(NOW.0 + 1000)).unwrap(), 1);
        assert!(store.delete_access_entry(ListKind::Trusted, forever.network).unwrap());
        assert!(!store.delete_access_entry(ListKind::Blocked, forever.network).unwrap());
        store.close().unwrap();
    }

    #[test]
    fn events_are_stored_filtered_newest_first_and_pruned() {
        let store = SqliteStore::in_memory().unwrap();
        let event = |at: i64, kind, ip: &str, login: &str| Event {
            observed: false,
            at: Timestamp(at),
            kind,
            login: login.into(),
            ip: ip.parse().ok(),
            protocol: "imap".into(),
            device_id: String::new(),
            rule: None,
            detail: String::new(),
        };
        store
            .save_events(&[
                event(1, EventKind::Ban, "203.0.113.7", "alice@example.com"),
                event(2, EventKind::FirewallRule, "198.51.100.7", "alice@example.com"),
                event(3, EventKind::Ban, "203.0.113.7", "bob@example.com"),
            ])
            .unwrap();
        let query = |filter: EventFilter| store.events(&EventFilter { limit: 10, ..filter }).unwrap().events;
        let all = query(EventFilter::default());
        assert_eq!(all.iter().map(|e| e.at.0).collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(query(EventFilter { ip: "203.0.113.7".parse().ok(), ..Default::default() }).len(), 2);
        assert_eq!(query(EventFilter { login: Some("alice@example.com".into()), ..Default::default() }).len(), 2);
        assert_eq!(query(EventFilter { kind: Some(EventKind::FirewallRule), ..Default::default() }).len(), 1);
        assert_eq!(query(EventFilter { since: Some(Timestamp(2)), ..Default::default() }).len(), 2);
        let page = |limit, offset| {
            let page = store.events(&EventFilter { limit, offset, ..Default::default() }).unwrap();
            (page.events.iter().map(|e| e.at.0).collect::<Vec<_>>(), page.total, page.total_exact)
        };
        assert_eq!(page(1, 0), (vec![3], 3, true));
        assert_eq!(page(2, 1), (vec![2, 1], 3, true));
        assert_eq!(page(2, 3), (vec![], 3, true));
        assert_eq!(store.prune_events(Timestamp(2), 10, u64::MAX).unwrap(), 1);
        assert_eq!(store.prune_events(Timestamp(0), 1, u64::MAX).unwrap(), 1);
        assert_eq!(query(EventFilter::default()).len(), 1);
    }

    #[test]
    fn events_are_found_by_message_text_in_any_ascii_case_with_wildcards_as_written_and_until_a_time() {
        let store = SqliteStore::in_memory().unwrap();
        let event = |at: i64, detail: &str| Event {
            observed: false,
            at: Timestamp(at),
            kind: EventKind::FirewallRule,
            login: "alice@example.com".into(),
            ip: "203.0.113.7".parse().ok(),
            protocol: "imap".into(),
            device_id: String::new(),
            rule: None,
            detail: detail.into(),
        };
        store
            .save_events(&[
                event(1, "Access denied by email firewall rule no. 1"),
                event(2, "100% blocked"),
                event(3, "rule_1 applies"),
                event(4, "ACCESS DENIED by default"),
            ])
            .unwrap();
        let times = |filter: EventFilter| -> Vec<i64> {
            store.events(&EventFilter { limit: 10, ..filter }).unwrap().events.iter().map(|e| e.at.0).collect()
        };
        let text = |text: &str| times(EventFilter { text: Some(text.into()), ..Default::default() });
        assert_eq!(text("access denied"), [4, 1]);
        assert_eq!(text("0%"), [2], "% is a plain character");
        assert_eq!(text("e_1"), [3], "_ is a plain character");
        assert_eq!(text("rule"), [3, 1]);
        assert_eq!(times(EventFilter { until: Some(Timestamp(2)), ..Default::default() }), [2, 1]);
        let both = EventFilter { text: Some("RULE".into()), until: Some(Timestamp(2)), ..Default::default() };
        assert_eq!(times(both), [1]);
    }

    #[test]
    fn the_login_filter_matches_every_spelling_of_a_login_also_in_events_stored_before_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let event = |login: &str| Event {
            observed: false,
            at: Timestamp(1),
            kind: EventKind::Ban,
            login: login.into(),
            ip: None,
            protocol: "imap".into(),
            device_id: String::new(),
            rule: None,
            detail: String::new(),
        };
        {
            // A database of the version before logins were keyed, with its events.
            let connection = Connection::open(dir.path().join("mailwarden.db")).unwrap();
            for migration in &MIGRATIONS[..5] {
                connection.execute_batch(migration).unwrap();
            }
            connection.pragma_update(None, "user_version", 5).unwrap();
            for login in ["Alice@Example.com", "Ärzte@example.de"] {
                connection
                    .execute(
                        "INSERT INTO events (at, kind, login, ip, protocol, device_id, detail) VALUES (1, 'ban', ?1, '', 'imap', '', '')",
                        [login],
                    )
                    .unwrap();
            }
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        store.save_events(&[event("JÖRG@example.com"), event("ärzte@example.de")]).unwrap();
        let found = |login: &str| {
            let filter = EventFilter { login: Some(login.into()), limit: 10, ..Default::default() };
            let mut logins: Vec<String> = store.events(&filter).unwrap().events.into_iter().map(|e| e.login).collect();
            logins.sort();
            logins
        };
        assert_eq!(found("alice@example.com"), ["Alice@Example.com"]);
        assert_eq!(found("ALICE@EXAMPLE.COM"), ["Alice@Example.com"]);
        assert_eq!(found("ÄRZTE@Example.de"), ["Ärzte@example.de", "ärzte@example.de"]);
        assert_eq!(found("jörg@example.com"), ["JÖRG@example.com"]);
    }

    #[test]
    fn the_block_log_is_pruned_to_its_byte_budget_oldest_first() {
        let store = SqliteStore::in_memory().unwrap();
        let events: Vec<Event> = (0..100)
            .map(|at| Event {
                observed: false,
                at: Timestamp(at),
                kind: EventKind::Ban,
                login: "alice@example.com".into(),
                ip: "203.0.113.7".parse().ok(),
                protocol: "imap".into(),
                device_id: "d".repeat(1000),
                rule: None,
                detail: "Too many failed logins".into(),
            })
            .collect();
        store.save_events(&events).unwrap();
        let size = events[0].size();
        assert_eq!(store.prune_events(Timestamp(0), 1000, 20 * size).unwrap(), 80);
        let kept = store.events(&EventFilter { limit: 1000, ..Default::default() }).unwrap().events;
        assert_eq!(kept.len(), 20);
        assert_eq!(kept.first().map(|e| e.at), Some(Timestamp(99)), "the newest stay");
        assert_eq!(store.prune_events(Timestamp(0), 1000, 20 * size).unwrap(), 0, "within budget");
    }

    #[test]
    fn firewall_rule_sets_round_trip() {
        let store = SqliteStore::in_memory().unwrap();
        let spec: crate::firewall::RuleSpec = serde_json::from_str(r#"{"action":"block","country":["CN"]}"#).unwrap();
        let rule_set = RuleSet {
            observe: false,
            rules: vec![spec.parse().unwrap()],
            default: crate::firewall::Action::Allow,
            protocols: crate::firewall::Protocols::MAIL_APPS,
        };
        store.save_firewall_rule_set("alice@example.com", &rule_set).unwrap();
        let sets = store.firewall_rule_sets().unwrap();
        assert_eq!(sets, vec![KeyedRuleSet { key: "alice@example.com".into(), origin: RuleSetOrigin::Api, rule_set }]);
        assert!(store.delete_firewall_rule_set("alice@example.com").unwrap());
        assert!(store.firewall_rule_sets().unwrap().is_empty());
    }

    #[test]
    fn known_sources_keep_the_latest_success_and_are_bounded_per_account() {
        let store = SqliteStore::in_memory().unwrap();
        let source = |text: &str| Source::parse(text).unwrap();
        let known = |login: &str, src: &str, at: i64| KnownSource::bare(login, source(src), Timestamp(at));
        store
            .save_known_sources(&[
                known("alice", "203.0.113.7", 10),
                known("alice", "198.51.100.7", 20),
                known("alice", "203.0.113.7", 30),
                known("alice", "203.0.113.7", 5),
                known("bob", "192.0.2.1", 15),
            ])
            .unwrap();
        assert_eq!(
            store.known_sources("alice", Timestamp(0), 10).unwrap(),
            vec![source("203.0.113.7"), source("198.51.100.7")]
        );
        assert_eq!(store.known_sources("alice", Timestamp(25), 10).unwrap(), vec![source("203.0.113.7")]);
        let recent: Vec<(String, i64)> =
            store.recent_known_sources(Timestamp(12), 10).unwrap().into_iter().map(|k| (k.login, k.at.0)).collect();
        assert_eq!(recent, [("bob".into(), 15), ("alice".into(), 20), ("alice".into(), 30)], "oldest first");
        assert_eq!(store.recent_known_sources(Timestamp(0), 2).unwrap().len(), 2, "at most the limit");
        assert_eq!(store.prune_known_sources(Timestamp(0), 1).unwrap(), 1);
        assert_eq!(store.known_sources("alice", Timestamp(0), 10).unwrap(), vec![source("203.0.113.7")]);
        assert_eq!(store.prune_known_sources(Timestamp(16), 10).unwrap(), 1, "bob's is too old");
    }

    #[test]
    fn used_challenges_and_daily_unblock_counts_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(24 * 3600);
        let me = Source::parse("2001:db8:1:2::/64").unwrap();
        let key = {
            let store = SqliteStore::open(dir.path()).unwrap();
            assert!(store.spend_challenge("c1", Timestamp(NOW.0 + 60_000), NOW).unwrap());
            assert!(!store.spend_challenge("c1", Timestamp(NOW.0 + 60_000), NOW).unwrap());
            assert_eq!(store.count_self_unblock(me, 2, NOW, day).unwrap(), DailyCount::Counted(1));
            store.self_service_key("first").unwrap()
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(key, "first");
        assert_eq!(store.self_service_key("second").unwrap(), "first", "the first key is kept");
        assert!(!store.spend_challenge("c1", Timestamp(NOW.0 + 60_000), NOW).unwrap(), "still used");
        assert_eq!(store.self_unblocks(me, NOW).unwrap(), 1);
        assert_eq!(store.count_self_unblock(me, 2, NOW, day).unwrap(), DailyCount::Counted(2));
        assert_eq!(store.count_self_unblock(me, 2, NOW, day).unwrap(), DailyCount::AtLimit(2));
        store.uncount_self_unblock(me).unwrap();
        assert_eq!(store.self_unblocks(me, NOW).unwrap(), 1);
        let tomorrow = NOW.plus(day);
        assert_eq!(store.self_unblocks(me, tomorrow).unwrap(), 0, "the day started with the first unblock");
        assert_eq!(store.count_self_unblock(me, 2, tomorrow, day).unwrap(), DailyCount::Counted(1));
        assert!(store.spend_challenge("c1", Timestamp(tomorrow.0 + 60_000), tomorrow).unwrap(), "forgotten once ended");
    }

    #[test]
    fn tokens_are_stored_as_digests_and_the_audit_trail_reads_back_newest_first() {
        use crate::audit::{AuditAction, AuditFilter, AuditRecord};
        let store = SqliteStore::in_memory().unwrap();
        let token = TokenRecord {
            name: "desk".into(),
            scope: Scope::Domain("example.com".into()),
            digest: crate::tokens::digest("mwt_secret"),
            created_at: Timestamp(1_000),
            expires_at: Some(Timestamp(9_000)),
            last_used: None,
        };
        assert!(store.create_token(&token).unwrap());
        assert!(!store.create_token(&token).unwrap(), "a second token of the same name");
        store.touch_token("desk", Timestamp(3_600_000)).unwrap();
        let stored = store.tokens().unwrap();
        assert_eq!(stored, vec![TokenRecord { last_used: Some(Timestamp(3_600_000)), ..token.clone() }]);
        let digests: Vec<String> = store
            .lock()
            .prepare("SELECT digest FROM tokens")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(digests, vec![token.digest_hex()]);
        assert!(store.delete_token("desk").unwrap());
        assert!(store.tokens().unwrap().is_empty());

        for (at, actor, action) in [
            (1, "desk", AuditAction::BanLifted),
            (2, "ops", AuditAction::RuleMoved),
            (3, "desk", AuditAction::RuleAdded),
        ] {
            store.save_audit(&AuditRecord::new(Timestamp(at), actor, action, "203.0.113.7", String::new())).unwrap();
        }
        let (records, total) =
            store.audit(&AuditFilter { actor: Some("desk".into()), limit: 10, ..Default::default() }).unwrap();
        assert_eq!(total, 2);
        assert_eq!(
            records.iter().map(|r| r.action).collect::<Vec<_>>(),
            [AuditAction::RuleAdded, AuditAction::BanLifted]
        );
        let (page, total) = store.audit(&AuditFilter { limit: 1, offset: 1, ..Default::default() }).unwrap();
        assert_eq!((page[0].actor.as_str(), total), ("ops", 3));
    }

    #[test]
    fn migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let store = SqliteStore::open(dir.path()).unwrap();
        let version: i64 = store.lock().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }
}
