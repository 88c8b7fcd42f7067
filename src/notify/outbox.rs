//! The webhook outbox: notices waiting for delivery, one row per endpoint and notice, in
//! `state_dir/outbox.db` (SQLite, WAL, `synchronous=FULL`), so a notice written before its
//! cause was answered survives `kill -9` and is sent after the restart with the same id. Its
//! own file in both store backends: in cluster mode each node delivers what it noticed.
//! Not the durable state (`store`): nothing here is read by a decision.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::Timestamp;

/// The file in `state_dir`.
pub const FILE: &str = "outbox.db";

/// One notice waiting for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The row, in the order notices were queued.
    pub seq: i64,
    pub id: String,
    /// The body as it is sent (and signed) every time.
    pub body: String,
    pub queued_at: Timestamp,
    /// Failed attempts so far.
    pub attempts: u32,
    pub next_attempt: Timestamp,
}

/// A notice to queue for one endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub endpoint: &'a str,
    /// The endpoint's `max_queued`.
    pub max_queued: usize,
    pub id: &'a str,
    pub body: &'a str,
}

pub struct Outbox {
    connection: Mutex<Connection>,
}

impl Outbox {
    pub fn open(state_dir: &Path) -> rusqlite::Result<Outbox> {
        let connection = Connection::open(state_dir.join(FILE))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                endpoint TEXT NOT NULL,
                id TEXT NOT NULL,
                body TEXT NOT NULL,
                queued_at INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS outbox_due ON outbox (endpoint, next_attempt, seq);",
        )?;
        Ok(Outbox { connection: Mutex::new(connection) })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues every row in one transaction (one fsync for a burst, such as many bans ending
    /// in one sweep), except where its endpoint already has its `max_queued` waiting; says
    /// for each row whether it was queued.
    pub fn add(&self, rows: &[Row<'_>], now: Timestamp) -> rusqlite::Result<Vec<bool>> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        let mut waiting: HashMap<&str, usize> = HashMap::new();
        let mut queued = Vec::with_capacity(rows.len());
        for row in rows {
            let count = match waiting.get_mut(row.endpoint) {
                Some(count) => count,
                None => {
                    let stored: i64 = transaction.query_row(
                        "SELECT count(*) FROM outbox WHERE endpoint = ?1",
                        [row.endpoint],
                        |r| r.get(0),
                    )?;
                    waiting.entry(row.endpoint).or_insert(usize::try_from(stored).unwrap_or(usize::MAX))
                }
            };
            if *count >= row.max_queued {
                queued.push(false);
                continue;
            }
            transaction.execute(
                "INSERT INTO outbox (endpoint, id, body, queued_at, next_attempt) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![row.endpoint, row.id, row.body, now.unix_millis()],
            )?;
            *count += 1;
            queued.push(true);
        }
        transaction.commit()?;
        Ok(queued)
    }

    /// The notice `endpoint` should be sent next: the one whose attempt is due first, oldest
    /// first among equals.
    pub fn next(&self, endpoint: &str) -> rusqlite::Result<Option<Queued>> {
        self.connection()
            .query_row(
                "SELECT seq, id, body, queued_at, attempts, next_attempt FROM outbox
                 WHERE endpoint = ?1 ORDER BY next_attempt, seq LIMIT 1",
                [endpoint],
                |row| {
                    Ok(Queued {
                        seq: row.get(0)?,
                        id: row.get(1)?,
                        body: row.get(2)?,
                        queued_at: Timestamp::from_unix_millis(row.get(3)?),
                        attempts: row.get(4)?,
                        next_attempt: Timestamp::from_unix_millis(row.get(5)?),
                    })
                },
            )
            .optional()
    }

    /// Removes a row: delivered, or given up.
    pub fn remove(&self, seq: i64) -> rusqlite::Result<()> {
        self.connection().execute("DELETE FROM outbox WHERE seq = ?1", [seq]).map(|_| ())
    }

    /// Records a failed attempt and when to try again.
    pub fn retry_at(&self, seq: i64, attempts: u32, next: Timestamp) -> rusqlite::Result<()> {
        self.connection()
            .execute(
                "UPDATE outbox SET attempts = ?2, next_attempt = ?3 WHERE seq = ?1",
                params![seq, attempts, next.unix_millis()],
            )
            .map(|_| ())
    }

    /// Notices waiting for `endpoint`.
    pub fn depth(&self, endpoint: &str) -> rusqlite::Result<u64> {
        self.connection()
            .query_row("SELECT count(*) FROM outbox WHERE endpoint = ?1", [endpoint], |row| row.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
    }

    /// Drops what waits for endpoints no longer configured; returns how many.
    pub fn drop_other_endpoints(&self, configured: &[&str]) -> rusqlite::Result<usize> {
        let connection = self.connection();
        let mut statement = connection.prepare("SELECT DISTINCT endpoint FROM outbox")?;
        let stored: Vec<String> = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
        let mut dropped = 0;
        for endpoint in stored.iter().filter(|e| !configured.contains(&e.as_str())) {
            dropped += connection.execute("DELETE FROM outbox WHERE endpoint = ?1", [endpoint])?;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_764_633_600_000);

    fn row<'a>(endpoint: &'a str, max_queued: usize, id: &'a str) -> Row<'a> {
        Row { endpoint, max_queued, id, body: "{}" }
    }

    #[test]
    fn a_queued_notice_is_still_there_when_the_outbox_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.add(&[row("siem", 10, "abc"), row("chat", 10, "abc")], NOW).unwrap(), [true, true]);
        drop(outbox);
        let outbox = Outbox::open(dir.path()).unwrap();
        let next = outbox.next("siem").unwrap().unwrap();
        assert_eq!((next.id.as_str(), next.attempts, next.next_attempt), ("abc", 0, NOW));
        assert_eq!(outbox.depth("chat").unwrap(), 1);
    }

    #[test]
    fn a_full_endpoint_takes_no_more_while_the_others_still_do() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.add(&[row("siem", 2, "one")], NOW).unwrap();
        let burst = [row("siem", 2, "two"), row("siem", 2, "three"), row("chat", 2, "two")];
        assert_eq!(outbox.add(&burst, NOW).unwrap(), [true, false, true]);
        assert_eq!(outbox.depth("siem").unwrap(), 2);
    }

    #[test]
    fn a_notice_waiting_for_its_retry_lets_the_one_due_first_go_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.add(&[row("siem", 10, "first"), row("siem", 10, "second")], NOW).unwrap();
        let first = outbox.next("siem").unwrap().unwrap();
        outbox.retry_at(first.seq, 1, NOW.plus(std::time::Duration::from_secs(5))).unwrap();
        assert_eq!(outbox.next("siem").unwrap().unwrap().id, "second");
        outbox.remove(outbox.next("siem").unwrap().unwrap().seq).unwrap();
        assert_eq!(outbox.next("siem").unwrap().unwrap().attempts, 1);
    }
}
