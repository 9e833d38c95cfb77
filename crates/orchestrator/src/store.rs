//! Durable orchestrator state behind a small trait: one record per node (its state, generation,
//! attempts) and an append-only, bounded history. [`SqliteStore`] is the one-host default (a
//! file in the state dir); a shared engine for several provisioning hosts implements the same
//! trait (issue #19).
//!
//! Architecture Invariant: a commit is accepted only when it is based on the generation the
//! store holds (compare-and-set), and the record and its history entries are written in one
//! transaction: a crash leaves either both or neither, and a second writer that read an older
//! generation is refused instead of overwriting.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::machine::NodeRecord;

/// History entries kept per node; older ones are dropped as new ones arrive.
pub const MAX_HISTORY_PER_NODE: i64 = 2_000;

/// Schema version in `PRAGMA user_version`; a newer file is refused, an older one migrated.
const SCHEMA_VERSION: i64 = 1;

/// One line of a node's timeline written by the orchestrator (BMC actions, transitions,
/// warnings). The server's events are merged in when a timeline is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ts_ms: u64,
    /// `apply` (decisions), `bmc` (calls to the BMC).
    pub source: String,
    /// `transition`, `power`, `power-failed`, `boot-override`, `bios-staged`, `bios-verified`,
    /// `sla-missed`, `retry`, `needs-attention`, `installer-failed`, ...
    pub kind: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl History {
    pub fn new(ts_ms: u64, source: &str, kind: &str, text: impl Into<String>) -> History {
        History { ts_ms, source: source.into(), kind: kind.into(), text: text.into(), detail: Value::Null }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("state database: a record of {node} does not parse: {source}")]
    Corrupt { node: String, source: serde_json::Error },
    /// Someone else committed this node since we read it.
    #[error("{node}: stored generation is {stored}, this commit was based on {based_on} (another apply wrote it)")]
    Conflict { node: String, stored: u64, based_on: u64 },
    #[error("state database schema {found} is newer than this metal6 understands ({SCHEMA_VERSION})")]
    TooNew { found: i64 },
    /// Another worker holds the node's claim: this one must not write it.
    #[error("{node} is driven by {owner} (its claim is live): this worker may not write it")]
    NotOwner { node: String, owner: String },
    #[error("shared state: {0}")]
    Shared(String),
    #[error("{0}")]
    Io(String),
}

pub trait Store: Send + Sync + std::fmt::Debug {
    fn load(&self, node: &str) -> Result<Option<NodeRecord>, StoreError>;
    fn all(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// Writes `rec` as generation `rec.generation + 1` if the store still holds
    /// `rec.generation` (0: no record yet), with `history`, atomically. Returns what was stored.
    fn commit(&self, rec: &NodeRecord, history: &[History]) -> Result<NodeRecord, StoreError>;
    /// Appends to a node's history without a state change (SLA warnings, observations).
    fn record(&self, node: &str, entry: &History) -> Result<(), StoreError>;
    /// A node's history, oldest first.
    fn history(&self, node: &str) -> Result<Vec<History>, StoreError>;
    /// Takes (or keeps) this worker's claim on a recorded node, so that of several apply
    /// workers on one shared store only one drives it. One host's store has one apply (the
    /// state-dir lock): always held.
    fn claim(&self, _node: &str) -> Result<Claim, StoreError> {
        Ok(Claim::Held)
    }
    /// Gives the claim up (the node is finished, parked, or this worker stops).
    fn release(&self, _node: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Who drives a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker, until its claim lapses (kept alive while it runs).
    Held,
    /// Another worker, whose claim is live for `for_ms` more.
    Other { owner: String, for_ms: u64 },
}

/// SQLite in WAL mode with `synchronous = FULL`: a commit returns only once it is on disk, so
/// what `apply` did before a `kill -9` or a power loss is what it reads back.
#[derive(Debug)]
pub struct SqliteStore {
    // One connection behind a mutex: commits are small and serialised anyway by SQLite's
    // single writer; a pool would add nothing but contention.
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found: version });
        }
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS nodes (
                     node TEXT PRIMARY KEY,
                     generation INTEGER NOT NULL,
                     record TEXT NOT NULL,
                     updated_ms INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS history (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     node TEXT NOT NULL,
                     ts_ms INTEGER NOT NULL,
                     entry TEXT NOT NULL);
                 CREATE INDEX IF NOT EXISTS history_by_node ON history (node, id);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn parse(node: &str, text: &str) -> Result<NodeRecord, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { node: node.to_owned(), source })
}

fn insert_history(tx: &Connection, node: &str, entries: &[History]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    for h in entries {
        let text = serde_json::to_string(h).unwrap_or_default();
        tx.execute(
            "INSERT INTO history (node, ts_ms, entry) VALUES (?1, ?2, ?3)",
            params![node, i64::try_from(h.ts_ms).unwrap_or(i64::MAX), text],
        )?;
    }
    // Bounded: keep the newest entries of this node.
    tx.execute(
        "DELETE FROM history WHERE node = ?1 AND id <= (
             SELECT id FROM history WHERE node = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        params![node, MAX_HISTORY_PER_NODE],
    )?;
    Ok(())
}

impl Store for SqliteStore {
    fn load(&self, node: &str) -> Result<Option<NodeRecord>, StoreError> {
        let conn = self.conn();
        let text: Option<String> =
            conn.query_row("SELECT record FROM nodes WHERE node = ?1", [node], |r| r.get(0)).optional()?;
        text.map(|t| parse(node, &t)).transpose()
    }

    fn all(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT node, record FROM nodes ORDER BY node")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = vec![];
        for row in rows {
            let (node, text) = row?;
            out.push(parse(&node, &text)?);
        }
        Ok(out)
    }

    fn commit(&self, rec: &NodeRecord, history: &[History]) -> Result<NodeRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let stored: Option<i64> =
            tx.query_row("SELECT generation FROM nodes WHERE node = ?1", [&rec.node], |r| r.get(0)).optional()?;
        let stored = stored.map_or(0, |g| u64::try_from(g).unwrap_or(0));
        if stored != rec.generation {
            return Err(StoreError::Conflict { node: rec.node.clone(), stored, based_on: rec.generation });
        }
        let mut next = rec.clone();
        next.generation = rec.generation + 1;
        let text = serde_json::to_string(&next).unwrap_or_default();
        tx.execute(
            "INSERT INTO nodes (node, generation, record, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node) DO UPDATE SET generation = ?2, record = ?3, updated_ms = ?4",
            params![
                next.node,
                i64::try_from(next.generation).unwrap_or(i64::MAX),
                text,
                i64::try_from(next.updated_ms).unwrap_or(i64::MAX)
            ],
        )?;
        insert_history(&tx, &rec.node, history)?;
        tx.commit()?;
        Ok(next)
    }

    fn record(&self, node: &str, entry: &History) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_history(&tx, node, std::slice::from_ref(entry))?;
        tx.commit()?;
        Ok(())
    }

    fn history(&self, node: &str) -> Result<Vec<History>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT entry FROM history WHERE node = ?1 ORDER BY id")?;
        let rows = stmt.query_map([node], |r| r.get::<_, String>(0))?;
        let mut out = vec![];
        for row in rows {
            // A history line that does not parse is shown as what it is, not dropped silently.
            let text = row?;
            out.push(serde_json::from_str(&text).unwrap_or_else(|_| History::new(0, "store", "unreadable", text)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::State;

    #[test]
    fn commits_are_compare_and_set_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("orchestrator.db");
        let store = SqliteStore::open(&path).expect("open");
        let rec = NodeRecord::new("n1", 10);
        let v1 = store.commit(&rec, &[History::new(10, "apply", "transition", "pending")]).expect("first");
        assert_eq!(v1.generation, 1);
        // A writer still holding generation 0 is refused.
        let err = store.commit(&rec, &[]).expect_err("stale");
        assert!(matches!(err, StoreError::Conflict { stored: 1, based_on: 0, .. }), "{err}");
        let v2 = store
            .commit(
                &v1.enter(State::Netboot { cycled_ms: Some(20) }, 20),
                &[History::new(20, "bmc", "power-cycle", "x")],
            )
            .expect("second");
        assert_eq!(v2.generation, 2);
        drop(store);
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.load("n1").expect("load"), Some(v2.clone()));
        assert_eq!(store.all().expect("all"), vec![v2]);
        let h = store.history("n1").expect("history");
        assert_eq!(h.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["transition", "power-cycle"]);
        assert_eq!(store.load("nope").expect("load"), None);
    }

    #[test]
    fn history_is_bounded_per_node() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(&dir.path().join("o.db")).expect("open");
        let n = usize::try_from(MAX_HISTORY_PER_NODE).expect("fits") + 50;
        for i in 0..n {
            store.record("a", &History::new(i as u64, "apply", "sla-missed", format!("{i}"))).expect("record");
        }
        store.record("b", &History::new(0, "apply", "x", "other node")).expect("record");
        let h = store.history("a").expect("history");
        assert_eq!(h.len(), usize::try_from(MAX_HISTORY_PER_NODE).expect("fits"));
        assert_eq!(h[0].text, "50", "the oldest entries go first");
        assert_eq!(store.history("b").expect("b").len(), 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o.db");
        Connection::open(&path).expect("db").pragma_update(None, "user_version", 99).expect("pragma");
        assert!(matches!(SqliteStore::open(&path), Err(StoreError::TooNew { found: 99 })));
    }
}
