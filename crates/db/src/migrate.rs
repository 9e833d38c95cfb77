//! The schema, as numbered migrations applied in order, each in its own transaction.
//!
//! `metal6_schema` records which are applied. Migrating takes a transaction-scoped advisory
//! lock, so several servers starting at once apply each migration exactly once. A database
//! newer than this binary is refused rather than written with an older idea of the tables.

use postgres::Client;

use crate::{DbError, query};

/// Arbitrary, fixed: the advisory lock key every metal6 takes to migrate.
const MIGRATION_LOCK: i64 = 0x6d65_7461_6c36_0001;

/// (version, what it adds, SQL). Append only: a released migration never changes.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "bindings, removals, node events, inventory generations",
        r"
    CREATE SEQUENCE metal6_change_seq;
    -- One row per (DUID, IAID), as the servers' binding tables. Every write records its
    -- transaction (tx) and takes a number from metal6_change_seq: a server follows what the
    -- others wrote in (tx, seq) order, reading only transactions older than every one still
    -- running (the snapshot's xmin), so a late commit is never skipped.
    CREATE TABLE bindings (
        duid     bytea  NOT NULL,
        iaid     bigint NOT NULL,
        addr     inet   NOT NULL,
        -- Inventory node, NULL for a pool binding.
        node     text,
        -- Unix seconds: the end of the valid lifetime.
        expires  bigint NOT NULL,
        -- Which server wrote it last (its --server-name).
        server   text   NOT NULL,
        seq      bigint NOT NULL,
        tx       bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        PRIMARY KEY (duid, iaid)
    );
    -- A pool address belongs to one client: the database, not a read-then-write, says so.
    CREATE UNIQUE INDEX bindings_pool_addr ON bindings (addr) WHERE node IS NULL;
    CREATE INDEX bindings_follow ON bindings (tx, seq);
    -- Releases, declines and evictions, for the servers that follow the table.
    CREATE TABLE binding_removals (
        seq   bigint PRIMARY KEY,
        duid  bytea  NOT NULL,
        iaid  bigint NOT NULL,
        server text  NOT NULL,
        tx    bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX binding_removals_follow ON binding_removals (tx, seq);
    -- Node events. The id is made where the event happened (a hash of the client's message
    -- for DHCPv6), so a retransmission, a retried write or a second server seeing the same
    -- message stores it once.
    CREATE TABLE node_events (
        id      text   PRIMARY KEY,
        seq     bigint NOT NULL,
        node    text   NOT NULL,
        ts_ms   bigint NOT NULL,
        server  text   NOT NULL,
        body    jsonb  NOT NULL,
        tx      bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)
    );
    CREATE INDEX node_events_follow ON node_events (tx, seq);
    CREATE INDEX node_events_node ON node_events (node, seq);
    -- The servers alive: each writes its heartbeat every second; clients are shared out among
    -- the live ones (a Solicit is answered by one server), and a server whose heartbeat
    -- lapsed has its share taken by the others.
    CREATE TABLE servers (
        name      text PRIMARY KEY,
        last_seen timestamptz NOT NULL
    );
    -- Which inventory the servers serve: the newest generation wins; a server with another
    -- one refuses the nodes it disagrees on.
    CREATE TABLE inventory_generations (
        generation   bigserial PRIMARY KEY,
        sha256       text   NOT NULL,
        -- Node name -> SHA-256 of what the servers derive from that node.
        nodes        jsonb  NOT NULL,
        site_sha256  text   NOT NULL,
        published_by text   NOT NULL,
        published_at timestamptz NOT NULL DEFAULT now()
    );
    ",
    ),
    (
        2,
        "apply's node records and history, with claims",
        r"
    -- One record per node, as in apply's SQLite store, plus who drives it: a worker claims a
    -- node until claim_until (the database's clock, so workers' clocks do not matter) and
    -- renews the claim while it lives; a lapsed claim may be taken by another worker.
    CREATE TABLE apply_nodes (
        node        text PRIMARY KEY,
        generation  bigint NOT NULL,
        record      jsonb  NOT NULL,
        updated_ms  bigint NOT NULL,
        owner       text,
        claim_until timestamptz NOT NULL DEFAULT now(),
        -- How many times the node changed hands.
        claims      bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE apply_history (
        id     bigserial PRIMARY KEY,
        node   text   NOT NULL,
        ts_ms  bigint NOT NULL,
        entry  jsonb  NOT NULL
    );
    CREATE INDEX apply_history_node ON apply_history (node, id);
    ",
    ),
];

/// The schema version this binary reads and writes.
pub fn known() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// What `metal6 db status` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub version: i32,
    pub known: i32,
    /// Migrations this binary would apply.
    pub pending: Vec<i32>,
}

/// `CREATE TABLE IF NOT EXISTS` is not safe against itself (two servers starting at once hit
/// a unique violation in the catalog): under the migration lock.
fn ensure_table(c: &mut Client) -> Result<(), DbError> {
    let mut tx = c.transaction().map_err(query("starting to create the schema table"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(query("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS metal6_schema (
             version    integer PRIMARY KEY,
             what       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .map_err(query("creating the schema table"))?;
    tx.commit().map_err(query("creating the schema table"))
}

fn version(c: &mut impl postgres::GenericClient) -> Result<i32, DbError> {
    let row = c
        .query_one("SELECT coalesce(max(version), 0) FROM metal6_schema", &[])
        .map_err(query("reading the schema version"))?;
    Ok(row.get(0))
}

pub fn status(c: &mut Client) -> Result<Status, DbError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('metal6_schema') IS NOT NULL", &[])
        .map_err(query("looking for the schema table"))?
        .get(0);
    let v = if exists { version(c)? } else { 0 };
    let pending = MIGRATIONS.iter().map(|m| m.0).filter(|n| *n > v).collect();
    Ok(Status { version: v, known: known(), pending })
}

/// Applies what is missing; returns the versions applied (empty when up to date).
pub fn migrate(c: &mut Client) -> Result<Vec<i32>, DbError> {
    ensure_table(c)?;
    let mut applied = Vec::new();
    for (n, what, sql) in MIGRATIONS {
        let mut tx = c.transaction().map_err(query("starting a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(query("taking the migration lock"))?;
        let v = version(&mut tx)?;
        if v > known() {
            return Err(DbError::SchemaTooNew { found: v, known: known() });
        }
        if *n <= v {
            continue;
        }
        tx.batch_execute(sql).map_err(query("applying a migration"))?;
        tx.execute("INSERT INTO metal6_schema (version, what) VALUES ($1, $2)", &[n, what])
            .map_err(query("recording a migration"))?;
        tx.commit().map_err(query("committing a migration"))?;
        tracing::info!(version = n, what, "state database migrated");
        applied.push(*n);
    }
    Ok(applied)
}

/// Refuses a database whose schema is not this binary's.
pub fn check(c: &mut Client) -> Result<(), DbError> {
    let s = status(c)?;
    if s.version > s.known {
        return Err(DbError::SchemaTooNew { found: s.version, known: s.known });
    }
    if s.version < s.known {
        return Err(DbError::SchemaTooOld { found: s.version, known: s.known });
    }
    Ok(())
}
