//! The embedded store: SQLite (bundled, so no system library is needed) in WAL mode with
//! `synchronous=FULL`, so an acknowledged write survives `kill -9` and power loss. One
//! connection behind a mutex: writes are rare (bans placed and lifted), reads happen at
//! start-up.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use ipnet::IpNet;

use super::{Store, StoreError};
use crate::access::{AccessEntry, ListKind, Origin};
use crate::bans::{Ban, BanCause, BanReason};
use crate::clock::Timestamp;
use crate::network::Source;

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
];

pub struct SqliteStore {
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) `mailwarden.db` in `state_dir` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = state_dir.join("mailwarden.db");
        let open_error = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(state_dir)
            .map_err(|e| open_error(format!("cannot create {}: {e}", state_dir.display())))?;
        let connection = Connection::open(&path).map_err(|e| open_error(e.to_string()))?;
        Self::prepare(connection).map_err(|e| open_error(e.to_string()))
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let connection = Connection::open_in_memory().map_err(|e| StoreError::Open {
            path: ":memory:".into(),
            message: e.to_string(),
        })?;
        Self::prepare(connection).map_err(|e| StoreError::Open {
            path: ":memory:".into(),
            message: e.to_string(),
        })
    }

    fn prepare(mut connection: Connection) -> rusqlite::Result<SqliteStore> {
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let applied = usize::try_from(applied).unwrap_or(0);
        for (number, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            let transaction = connection.transaction()?;
            transaction.execute_batch(migration)?;
            transaction.pragma_update(
                None,
                "user_version",
                i64::try_from(number + 1).unwrap_or(i64::MAX),
            )?;
            transaction.commit()?;
        }
        Ok(SqliteStore {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn ban_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Ban>> {
    let source: String = row.get(0)?;
    let reason: String = row.get(3)?;
    let failures: i64 = row.get(4)?;
    // A row this version cannot read (a newer reason, a corrupted source) is skipped rather than
    // stopping start-up; it is logged by the caller's count.
    let (Ok(source), Some(reason)) = (Source::parse(&source), BanReason::from_label(&reason))
    else {
        return Ok(None);
    };
    Ok(Some(Ban {
        source,
        created_at: Timestamp(row.get(1)?),
        expires_at: Timestamp(row.get(2)?),
        reason,
        failures: u32::try_from(failures).unwrap_or(0),
        cause: BanCause {
            login: row.get(5)?,
            protocol: row.get(6)?,
            device_id: row.get(7)?,
        },
    }))
}

fn access_entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<AccessEntry>> {
    let list: String = row.get(0)?;
    let network: String = row.get(1)?;
    let (Some(list), Ok(network)) = (ListKind::from_label(&list), network.parse::<IpNet>()) else {
        return Ok(None);
    };
    Ok(Some(AccessEntry {
        list,
        network,
        comment: row.get(2)?,
        created_at: Timestamp(row.get(3)?),
        expires_at: row.get::<_, Option<i64>>(4)?.map(Timestamp),
        origin: Origin::Api,
    }))
}

impl Store for SqliteStore {
    fn active_bans(&self, now: Timestamp) -> Result<Vec<Ban>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT source, created_at, expires_at, reason, failures, login, protocol, device_id FROM bans WHERE expires_at > ?1")
            .map_err(|e| StoreError::operation("reading bans", e))?;
        let rows = statement
            .query_map(params![now.0], ban_from_row)
            .map_err(|e| StoreError::operation("reading bans", e))?;
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
                "INSERT OR REPLACE INTO bans (source, created_at, expires_at, reason, failures, login, protocol, device_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    ban.source.network().to_string(),
                    ban.created_at.0,
                    ban.expires_at.0,
                    ban.reason.label(),
                    i64::from(ban.failures),
                    ban.cause.login,
                    ban.cause.protocol,
                    ban.cause.device_id,
                ],
            )
            .map(|_| ())
            .map_err(|e| StoreError::operation("saving a ban", e))
    }

    fn delete_ban(&self, source: Source) -> Result<bool, StoreError> {
        self.lock()
            .execute(
                "DELETE FROM bans WHERE source = ?1",
                params![source.network().to_string()],
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
            .prepare("SELECT list, network, comment, created_at, expires_at FROM access_entries")
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
                "INSERT OR REPLACE INTO access_entries (list, network, comment, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    entry.list.label(),
                    entry.network.to_string(),
                    entry.comment,
                    entry.created_at.0,
                    entry.expires_at.map(|t| t.0),
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
            .execute(
                "DELETE FROM access_entries WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                params![now.0],
            )
            .map_err(|e| StoreError::operation("deleting expired list entries", e))
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
        self.lock()
            .query_row(
                "SELECT source, created_at, expires_at, reason, failures, login, protocol, device_id FROM bans WHERE source = ?1",
                params![source.network().to_string()],
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
    use crate::network::{SourceGrouping, parse_ip};

    const NOW: Timestamp = Timestamp(1_795_334_400_000);

    fn ban(address: &str, expires_in_ms: i64) -> Ban {
        Ban {
            source: SourceGrouping {
                ipv4_prefix: 32,
                ipv6_prefix: 64,
            }
            .source_of(parse_ip(address).unwrap()),
            created_at: NOW,
            expires_at: Timestamp(NOW.0 + expires_in_ms),
            reason: BanReason::Autoban,
            failures: 5,
            cause: BanCause {
                login: "alice@example.com".into(),
                protocol: "imap".into(),
                device_id: "\"name\" \"Mail\"".into(),
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
        assert!(store.delete_ban(stored.source).unwrap());
        assert!(!store.delete_ban(stored.source).unwrap());
        assert!(store.active_bans(NOW).unwrap().is_empty());
    }

    #[test]
    fn list_entries_round_trip_with_and_without_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let forever = AccessEntry {
            list: ListKind::Trusted,
            network: "192.0.2.0/24".parse().unwrap(),
            comment: "office".into(),
            created_at: NOW,
            expires_at: None,
            origin: Origin::Api,
        };
        let brief = AccessEntry {
            list: ListKind::Blocked,
            network: "2001:db8::/48".parse().unwrap(),
            comment: String::new(),
            created_at: NOW,
            expires_at: Some(Timestamp(NOW.0 + 1000)),
            origin: Origin::Api,
        };
        store.save_access_entry(&forever).unwrap();
        store.save_access_entry(&brief).unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut entries = store.access_entries().unwrap();
        entries.sort_by_key(|e| e.list);
        assert_eq!(entries, vec![forever.clone(), brief.clone()]);
        assert_eq!(
            store
                .delete_expired_access_entries(Timestamp(NOW.0 + 1000))
                .unwrap(),
            1
        );
        assert!(
            store
                .delete_access_entry(ListKind::Trusted, forever.network)
                .unwrap()
        );
        assert!(
            !store
                .delete_access_entry(ListKind::Blocked, forever.network)
                .unwrap()
        );
        store.close().unwrap();
    }

    #[test]
    fn migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let store = SqliteStore::open(dir.path()).unwrap();
        let version: i64 = store
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }
}
