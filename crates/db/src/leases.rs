//! The tables `metal6 serve` shares: bindings, their removals, node events and the inventory
//! generation.
//!
//! What keeps concurrent servers right is in the statements, not in the servers:
//!
//! - A binding is written keyed by (DUID, IAID), so a retried or concurrent request for the
//!   same IA updates one row; the upsert is guarded — a server may not move another server's
//!   live binding to another address — and a partial unique index makes a pool address one
//!   client's. A write the database refuses is a [`Conflict`]: its Reply is never sent, and the
//!   row that won is handed back so the server learns it (the client retransmits and is
//!   answered from what the database holds).
//! - One transaction per batch, one savepoint per Reply: a conflict costs that Reply only.
//! - Events carry an id made at their source; `ON CONFLICT DO NOTHING` keeps one of each.
//! - Every write records its transaction and takes a number from one sequence, so a server can
//!   follow what the others wrote ([`changes_since`]) in (transaction, number) order, reading
//!   only transactions that ended before any still running began: a transaction that commits
//!   late is read when it ends, never skipped. The mirror this feeds is a cache, never the
//!   authority.

use std::collections::BTreeMap;
use std::net::IpAddr;

use metal6_dhcp6::bindings::{Binding, BindingKey, Change};
use metal6_inventory::Inventory;
use postgres::error::SqlState;
use postgres::{Client, Statement, Transaction};
use sha2::{Digest, Sha256};

use crate::{DbError, query};

/// An event to store with the batch that makes it true.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Made at the source (see the module doc): equal ids are one event.
    pub id: String,
    pub node: String,
    pub ts_ms: u64,
    pub body: serde_json::Value,
}

/// What one Reply needs durable before it may leave.
#[derive(Debug, Clone, Default)]
pub struct Item {
    pub changes: Vec<Change>,
    pub events: Vec<EventRow>,
}

/// The database refused one of an item's changes: `held` is what it holds instead (the other
/// server's binding of that IA, or the binding holding that pool address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub wanted: Binding,
    pub held: Option<Binding>,
}

/// Prepared statements of one connection.
#[derive(Debug)]
pub struct Statements {
    upsert: Statement,
    take_expired_pool: Statement,
    remove: Statement,
    record_removal: Statement,
    event: Statement,
    by_key: Statement,
    by_pool_addr: Statement,
}

impl Statements {
    pub fn prepare(c: &mut Client) -> Result<Statements, DbError> {
        let p = |c: &mut Client, sql: &str| c.prepare(sql).map_err(query("preparing a statement"));
        Ok(Statements {
            upsert: p(
                c,
                "INSERT INTO bindings (duid, iaid, addr, node, expires, server, seq)
                 VALUES ($1, $2, $3, $4, $5, $6, nextval('metal6_change_seq'))
                 ON CONFLICT (duid, iaid) DO UPDATE
                   SET addr = excluded.addr, node = excluded.node, expires = excluded.expires,
                       server = excluded.server, seq = excluded.seq, tx = excluded.tx
                   WHERE bindings.addr = excluded.addr OR bindings.expires <= $7
                      OR bindings.server = excluded.server
                 RETURNING seq",
            )?,
            take_expired_pool: p(
                c,
                "DELETE FROM bindings WHERE addr = $1 AND node IS NULL AND expires <= $2
                   AND NOT (duid = $3 AND iaid = $4)
                 RETURNING duid, iaid",
            )?,
            remove: p(c, "DELETE FROM bindings WHERE duid = $1 AND iaid = $2 RETURNING iaid")?,
            record_removal: p(
                c,
                "INSERT INTO binding_removals (seq, duid, iaid, server) VALUES (nextval('metal6_change_seq'), $1, $2, $3)",
            )?,
            event: p(
                c,
                "INSERT INTO node_events (id, seq, node, ts_ms, server, body)
                 VALUES ($1, nextval('metal6_change_seq'), $2, $3, $4, $5)
                 ON CONFLICT (id) DO NOTHING",
            )?,
            by_key: p(c, "SELECT duid, iaid, addr, node, expires FROM bindings WHERE duid = $1 AND iaid = $2")?,
            by_pool_addr: p(
                c,
                "SELECT duid, iaid, addr, node, expires FROM bindings WHERE addr = $1 AND node IS NULL",
            )?,
        })
    }
}

fn i64_of(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn binding_of(row: &postgres::Row) -> Option<Binding> {
    let IpAddr::V6(addr) = row.get::<_, IpAddr>(2) else { return None };
    Some(Binding {
        key: BindingKey { duid: row.get(0), iaid: u32::try_from(row.get::<_, i64>(1)).ok()? },
        addr,
        node: row.get(3),
        expires: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
    })
}

/// Commits `items` in one transaction as `server` at Unix time `now`. Per item: `Ok` when all
/// its changes are durable, the conflicts otherwise (none of its changes are kept). An error
/// means nothing of the batch is durable.
pub fn commit(
    c: &mut Client,
    st: &Statements,
    server: &str,
    now: u64,
    items: &[Item],
) -> Result<Vec<Result<(), Vec<Conflict>>>, DbError> {
    let mut tx = c.transaction().map_err(query("starting a lease batch"))?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut sp = tx.transaction().map_err(query("starting a savepoint"))?;
        let conflicts = apply_item(&mut sp, st, server, now, item)?;
        if conflicts.is_empty() {
            sp.commit().map_err(query("releasing a savepoint"))?;
            out.push(Ok(()));
        } else {
            sp.rollback().map_err(query("rolling back a savepoint"))?;
            // What won, read after the rollback, in the batch's transaction.
            let mut seen = Vec::with_capacity(conflicts.len());
            for mut k in conflicts {
                k.held = holder(&mut tx, st, &k.wanted)?;
                seen.push(k);
            }
            out.push(Err(seen));
        }
    }
    tx.commit().map_err(query("committing a lease batch"))?;
    Ok(out)
}

/// The item's changes and events; the conflicts (without their holders) if any change was
/// refused. A refused statement aborts the savepoint, so the first conflict ends the item.
fn apply_item(
    tx: &mut Transaction<'_>,
    st: &Statements,
    server: &str,
    now: u64,
    item: &Item,
) -> Result<Vec<Conflict>, DbError> {
    for change in &item.changes {
        match change {
            Change::Upsert(b) => {
                let iaid = i64::from(b.key.iaid);
                let addr = IpAddr::V6(b.addr);
                if b.node.is_none() {
                    // An expired pool binding elsewhere gives its address up to this one.
                    let gone = tx
                        .query(&st.take_expired_pool, &[&addr, &i64_of(now), &b.key.duid, &iaid])
                        .map_err(query("freeing an expired pool address"))?;
                    for row in gone {
                        let (d, i): (Vec<u8>, i64) = (row.get(0), row.get(1));
                        tx.execute(&st.record_removal, &[&d, &i, &server]).map_err(query("recording a removal"))?;
                    }
                }
                let r = tx.query_opt(
                    &st.upsert,
                    &[&b.key.duid, &iaid, &addr, &b.node, &i64_of(b.expires), &server, &i64_of(now)],
                );
                match r {
                    Ok(Some(_)) => {}
                    // The guard said no: another server's live binding of this IA, elsewhere.
                    Ok(None) => return Ok(vec![Conflict { wanted: b.clone(), held: None }]),
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        return Ok(vec![Conflict { wanted: b.clone(), held: None }]);
                    }
                    Err(e) => return Err(DbError::Query { what: "writing a binding", source: e }),
                }
            }
            Change::Remove(k) => {
                let iaid = i64::from(k.iaid);
                let gone = tx.query_opt(&st.remove, &[&k.duid, &iaid]).map_err(query("removing a binding"))?;
                if gone.is_some() {
                    tx.execute(&st.record_removal, &[&k.duid, &iaid, &server]).map_err(query("recording a removal"))?;
                }
            }
        }
    }
    for e in &item.events {
        tx.execute(&st.event, &[&e.id, &e.node, &i64_of(e.ts_ms), &server, &e.body])
            .map_err(query("recording a node event"))?;
    }
    Ok(Vec::new())
}

fn holder(tx: &mut Transaction<'_>, st: &Statements, wanted: &Binding) -> Result<Option<Binding>, DbError> {
    let iaid = i64::from(wanted.key.iaid);
    if let Some(row) = tx.query_opt(&st.by_key, &[&wanted.key.duid, &iaid]).map_err(query("reading a binding"))?
        && let Some(b) = binding_of(&row)
        && b.addr != wanted.addr
    {
        return Ok(Some(b));
    }
    let row = tx.query_opt(&st.by_pool_addr, &[&IpAddr::V6(wanted.addr)]).map_err(query("reading a pool address"))?;
    Ok(row.as_ref().and_then(binding_of))
}

/// Where a follower stands: (transaction, sequence number) of the last change it read.
pub type Cursor = (i64, i64);

/// The horizon of the current snapshot: every transaction below it has ended.
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// Every binding live at `now`, and the cursor they are current to.
pub fn load_live(c: &mut Client, now: u64) -> Result<(Vec<Binding>, Cursor), DbError> {
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(query("starting a read"))?;
    let rows = tx
        .query("SELECT duid, iaid, addr, node, expires FROM bindings WHERE expires > $1", &[&i64_of(now)])
        .map_err(query("loading bindings"))?;
    // Everything of a transaction below the horizon is in this snapshot; the rest is read by
    // the follower (again, if it was in the snapshot too: applying a row twice is harmless).
    let horizon: i64 =
        tx.query_one(&format!("SELECT {HORIZON}"), &[]).map_err(query("reading the change cursor"))?.get(0);
    tx.commit().map_err(query("ending a read"))?;
    Ok((rows.iter().filter_map(binding_of).collect(), (horizon - 1, i64::MAX)))
}

/// Changes after `after` written by servers other than `server`, in (transaction, number)
/// order, from transactions that have all ended, at most `limit`. A removal is left out when
/// the IA was written again after it (its write, or a later removal, comes instead).
pub fn changes_since(
    c: &mut Client,
    server: &str,
    after: Cursor,
    limit: i64,
) -> Result<Vec<(Cursor, Change)>, DbError> {
    let rows = c
        .query(
            &format!(
                "WITH h AS (SELECT {HORIZON} AS xmin)
                 (SELECT b.tx, b.seq, b.duid, b.iaid, b.addr, b.node, b.expires, false AS removed
                    FROM bindings b, h
                    WHERE (b.tx, b.seq) > ($1, $2) AND b.tx < h.xmin AND b.server <> $3)
                 UNION ALL
                 (SELECT r.tx, r.seq, r.duid, r.iaid, NULL::inet, NULL::text, 0::bigint, true
                    FROM binding_removals r, h
                    WHERE (r.tx, r.seq) > ($1, $2) AND r.tx < h.xmin AND r.server <> $3
                      AND NOT EXISTS (SELECT 1 FROM bindings b WHERE b.duid = r.duid AND b.iaid = r.iaid
                                        AND (b.tx, b.seq) > (r.tx, r.seq)))
                 ORDER BY 1, 2 LIMIT $4"
            ),
            &[&after.0, &after.1, &server, &limit],
        )
        .map_err(query("reading changes"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let at: Cursor = (row.get(0), row.get(1));
        let Ok(iaid) = u32::try_from(row.get::<_, i64>(3)) else { continue };
        let key = BindingKey { duid: row.get(2), iaid };
        if row.get::<_, bool>(7) {
            out.push((at, Change::Remove(key)));
            continue;
        }
        let Some(IpAddr::V6(addr)) = row.get::<_, Option<IpAddr>>(4) else { continue };
        let expires = u64::try_from(row.get::<_, i64>(6)).unwrap_or(0);
        out.push((at, Change::Upsert(Binding { key, addr, node: row.get(5), expires })));
    }
    Ok(out)
}

/// Bounds the shared tables: removal records older than a day (followers need only recent
/// ones), bindings expired a day ago, node events older than `event_days`, and all but the
/// newest 16 inventory generations. Returns how many rows went.
pub fn prune(c: &mut Client, now: u64, event_days: i64) -> Result<u64, DbError> {
    let day = 86_400i64;
    let a = c
        .execute("DELETE FROM binding_removals WHERE at < now() - interval '1 day'", &[])
        .map_err(query("pruning removals"))?;
    let b = c
        .execute("DELETE FROM bindings WHERE expires <= $1", &[&(i64_of(now) - day)])
        .map_err(query("pruning bindings"))?;
    let e = c
        .execute("DELETE FROM node_events WHERE ts_ms < $1", &[&((i64_of(now) - event_days * day) * 1000)])
        .map_err(query("pruning node events"))?;
    let g = c
        .execute(
            "DELETE FROM inventory_generations WHERE generation <
               (SELECT coalesce(min(generation), 0) FROM
                  (SELECT generation FROM inventory_generations ORDER BY generation DESC LIMIT 16) newest)",
            &[],
        )
        .map_err(query("pruning inventory generations"))?;
    Ok(a + b + e + g)
}

/// Node events other servers than `server` wrote after `after`, from transactions that have
/// all ended, as (cursor, id, event), at most `limit`.
pub fn events_since(
    c: &mut Client,
    server: &str,
    after: Cursor,
    limit: i64,
) -> Result<Vec<(Cursor, String, serde_json::Value)>, DbError> {
    let rows = c
        .query(
            &format!(
                "SELECT tx, seq, id, body FROM node_events
                 WHERE (tx, seq) > ($1, $2) AND tx < {HORIZON} AND server <> $3
                 ORDER BY tx, seq LIMIT $4"
            ),
            &[&after.0, &after.1, &server, &limit],
        )
        .map_err(query("reading node events"))?;
    Ok(rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2), r.get(3))).collect())
}

/// Where a new follower of node events starts: after every transaction ended so far.
pub fn events_cursor(c: &mut Client) -> Result<Cursor, DbError> {
    let h: i64 = c.query_one(&format!("SELECT {HORIZON}"), &[]).map_err(query("reading the event cursor"))?.get(0);
    Ok((h - 1, i64::MAX))
}

/// Writes `server`'s heartbeat and returns the servers whose heartbeat is younger than
/// `lapse_ms` (on the database's clock), sorted: every server computes the same list.
pub fn heartbeat(c: &mut Client, server: &str, lapse_ms: i64) -> Result<Vec<String>, DbError> {
    c.execute(
        "INSERT INTO servers (name, last_seen) VALUES ($1, now())
         ON CONFLICT (name) DO UPDATE SET last_seen = now()",
        &[&server],
    )
    .map_err(query("writing the heartbeat"))?;
    let rows = c
        .query(
            "SELECT name FROM servers WHERE last_seen > now() - make_interval(secs => $1::bigint / 1000.0) ORDER BY name",
            &[&lapse_ms],
        )
        .map_err(query("reading the live servers"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Node events of `node` in the order the database stored them.
pub fn events_of(c: &mut Client, node: &str) -> Result<Vec<serde_json::Value>, DbError> {
    let rows = c
        .query("SELECT body FROM node_events WHERE node = $1 ORDER BY seq", &[&node])
        .map_err(query("reading events"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Which inventory a server serves, as the database compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub sha256: String,
    pub site_sha256: String,
    pub nodes: BTreeMap<String, String>,
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Generation {
    /// Hashes what DHCPv6 answers depend on: the site for everyone, and per node the node with
    /// its profile.
    pub fn of(inv: &Inventory) -> Generation {
        let site = sha_hex(serde_json::to_string(&inv.site).unwrap_or_default().as_bytes());
        let nodes: BTreeMap<String, String> = inv
            .nodes
            .iter()
            .map(|n| {
                let v = serde_json::json!({"node": n, "profile": inv.profiles.get(&n.profile)});
                (n.name.clone(), sha_hex(v.to_string().as_bytes()))
            })
            .collect();
        let all = serde_json::json!({"site": site, "nodes": nodes});
        Generation { sha256: sha_hex(all.to_string().as_bytes()), site_sha256: site, nodes }
    }

    /// Nodes this inventory and `other` disagree on (every node of both when the sites
    /// differ), sorted.
    pub fn disagreements(&self, other: &Generation) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.keys().chain(other.nodes.keys()).cloned().collect();
        names.sort();
        names.dedup();
        if self.site_sha256 != other.site_sha256 {
            return names;
        }
        names.retain(|n| self.nodes.get(n) != other.nodes.get(n));
        names
    }
}

/// The newest published generation, with its number.
pub fn current_generation(c: &mut Client) -> Result<Option<(i64, Generation)>, DbError> {
    let row = c
        .query_opt(
            "SELECT generation, sha256, site_sha256, nodes FROM inventory_generations ORDER BY generation DESC LIMIT 1",
            &[],
        )
        .map_err(query("reading the inventory generation"))?;
    Ok(row.map(|r| {
        let nodes: serde_json::Value = r.get(3);
        let nodes = serde_json::from_value(nodes).unwrap_or_default();
        (r.get(0), Generation { sha256: r.get(1), site_sha256: r.get(2), nodes })
    }))
}

/// Publishes `g` as the newest generation unless it already is; returns its number.
pub fn publish(c: &mut Client, g: &Generation, by: &str) -> Result<i64, DbError> {
    let mut tx = c.transaction().map_err(query("starting a publication"))?;
    tx.execute("LOCK TABLE inventory_generations IN EXCLUSIVE MODE", &[]).map_err(query("locking generations"))?;
    let cur = tx
        .query_opt("SELECT generation, sha256 FROM inventory_generations ORDER BY generation DESC LIMIT 1", &[])
        .map_err(query("reading the inventory generation"))?;
    if let Some(row) = cur
        && row.get::<_, String>(1) == g.sha256
    {
        tx.commit().map_err(query("ending a publication"))?;
        return Ok(row.get(0));
    }
    let nodes = serde_json::to_value(&g.nodes).unwrap_or_default();
    let n: i64 = tx
        .query_one(
            "INSERT INTO inventory_generations (sha256, site_sha256, nodes, published_by)
             VALUES ($1, $2, $3, $4) RETURNING generation",
            &[&g.sha256, &g.site_sha256, &nodes, &by],
        )
        .map_err(query("publishing the inventory"))?
        .get(0);
    tx.commit().map_err(query("committing a publication"))?;
    Ok(n)
}

/// The id of an event seen in a DHCPv6 message: the same for every server and every
/// retransmission of that message (client DUID, transaction id, message type), and for the
/// same event in it.
pub fn dhcp_event_id(duid: &[u8], xid: [u8; 3], msg_type: u8, event: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(duid);
    h.update(xid);
    h.update([msg_type]);
    h.update(event.to_string().as_bytes());
    let d = h.finalize();
    format!("dhcp6-{}", d[..16].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../inventory/lab.yaml");
        let text = std::fs::read_to_string(&root).expect("lab inventory");
        metal6_inventory::check_str(&text, "lab.yaml").0.expect("valid")
    }

    #[test]
    fn generations_name_the_nodes_they_disagree_on() {
        let a = inv();
        let ga = Generation::of(&a);
        assert_eq!(ga, Generation::of(&a), "stable");
        let mut b = a.clone();
        b.nodes[0].address = "fd00:6d:1::999".parse().expect("addr");
        let gb = Generation::of(&b);
        assert_ne!(ga.sha256, gb.sha256);
        assert_eq!(ga.disagreements(&gb), vec![a.nodes[0].name.clone()]);
        let mut c = a.clone();
        c.site.dhcp.valid_lifetime += 1;
        assert_eq!(ga.disagreements(&Generation::of(&c)).len(), a.nodes.len(), "a site change is every node's");
    }

    #[test]
    fn event_ids_are_the_messages_not_the_servers() {
        let e = serde_json::json!({"kind": "leased", "node": "n1"});
        let a = dhcp_event_id(b"\x00\x03\x00\x01abcdef", [1, 2, 3], 3, &e);
        assert_eq!(a, dhcp_event_id(b"\x00\x03\x00\x01abcdef", [1, 2, 3], 3, &e));
        assert_ne!(a, dhcp_event_id(b"\x00\x03\x00\x01abcdef", [1, 2, 4], 3, &e), "another exchange");
    }
}
