//! [`PgStore`]: apply's records on the PostgreSQL database several provisioning hosts share
//! (`apply --state postgres://…`), so several apply workers can drive one fleet.
//!
//! - **Claims.** A worker drives a node only while it holds the node's claim, which lapses
//!   [`PgStore::lease`] after the worker's last renewal (the database's clock decides, so the
//!   workers' clocks do not matter). A thread renews the claims every third of the lease; a
//!   worker that dies stops renewing, and another takes its nodes once their claims lapse and
//!   resumes them from their records, as a restarted apply would.
//! - **Fencing.** Every commit is compare-and-set on the record's generation (as in SQLite)
//!   and is refused while another worker holds a live claim: a worker that stalled past its
//!   lease cannot overwrite the new owner's progress, and since apply commits before it acts
//!   on a BMC (`commit_then_reset`), a refused commit means no action.
//!
//! rust-postgres' client is blocking and runs a runtime of its own, which must not start on a
//! runtime thread: one thread owns the connection and runs every statement; the trait's
//! methods hand it the work and wait, as SQLite's calls block.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metal6_db::{Client, DbConfig};

use crate::machine::NodeRecord;
use crate::store::{Claim, History, MAX_HISTORY_PER_NODE, Store, StoreError};

/// Work for the connection's thread: given the connection, or why there is none.
type Job = Box<dyn FnOnce(Result<&mut Client, &str>) + Send>;

#[derive(Debug)]
pub struct PgStore {
    jobs: Mutex<Sender<Job>>,
    /// The nodes this worker claimed and has not given up: only these claims are renewed, so
    /// a claim whose release failed (the database unreachable just then) still lapses.
    held: Arc<Mutex<HashSet<String>>>,
    pub owner: String,
    pub lease: Duration,
}

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Shared(e.to_string())
}

use metal6_db::error_chain as chain;

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Shared(chain(&e))
}

impl PgStore {
    /// Connects, migrates, and starts the connection's thread (which also renews this
    /// worker's claims). `owner` names this worker in the claims; keep it across restarts.
    pub fn open(cfg: DbConfig, owner: &str, lease: Duration) -> Result<PgStore, StoreError> {
        let mut client = cfg.connect().map_err(|e| StoreError::Shared(chain(&e)))?;
        // Two workers with one name would both think they hold every claim.
        let named: bool = client
            .query_one("SELECT pg_try_advisory_lock(hashtext('metal6-worker:' || $1))", &[&owner])
            .map_err(pg)?
            .get(0);
        if !named {
            return Err(StoreError::Shared(format!(
                "another apply connected to the state database uses the worker name {owner}: give each worker its own \
                 --worker-name"
            )));
        }
        metal6_db::migrate::migrate(&mut client).map_err(|e| StoreError::Shared(chain(&e)))?;
        let (tx, rx) = channel::<Job>();
        let who = owner.to_owned();
        let held = Arc::new(Mutex::new(HashSet::new()));
        let renewed = Arc::clone(&held);
        std::thread::Builder::new()
            .name("apply-db".into())
            .spawn(move || run(cfg, client, rx, &who, lease, &renewed))
            .map_err(|e| StoreError::Io(format!("no thread for the state database: {e}")))?;
        Ok(PgStore { jobs: Mutex::new(tx), held, owner: owner.to_owned(), lease })
    }

    /// Runs `f` on the connection's thread and waits for its result.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = channel();
        let job: Job = Box::new(move |c| {
            let r = match c {
                Ok(c) => f(c),
                Err(why) => Err(StoreError::Shared(format!("the state database is unreachable: {why}"))),
            };
            let _ = tx.send(r);
        });
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job)
            .map_err(|_| StoreError::Shared("the state database's thread stopped".into()))?;
        rx.recv().map_err(|_| StoreError::Shared("the state database's thread stopped".into()))?
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The connection's thread: runs jobs; renews the claims this worker holds (`held`) every
/// third of the lease; reconnects when the connection broke.
fn run(cfg: DbConfig, client: Client, rx: Receiver<Job>, owner: &str, lease: Duration, held: &Mutex<HashSet<String>>) {
    let mut client = Some(client);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let renew_every = lease / 3;
    let mut next_renew = std::time::Instant::now() + renew_every;
    loop {
        let wait = next_renew.saturating_duration_since(std::time::Instant::now());
        let job = match rx.recv_timeout(wait) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut why = String::new();
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match cfg.connect() {
                Ok(c) => Some(c),
                Err(e) => {
                    why = chain(&e);
                    tracing::warn!(error = %why, "state database unreachable");
                    None
                }
            };
        }
        let Some(c) = client.as_mut() else {
            if let Some(job) = job {
                job(Err(&why));
            }
            continue;
        };
        if let Some(job) = job {
            job(Ok(c));
        }
        if std::time::Instant::now() >= next_renew {
            next_renew = std::time::Instant::now() + renew_every;
            let nodes: Vec<String> =
                held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect();
            if !nodes.is_empty() {
                let renewed = c.execute(
                    "UPDATE apply_nodes SET claim_until = now() + make_interval(secs => $2::bigint / 1000.0)
                     WHERE owner = $1 AND node = ANY($3)",
                    &[&owner, &lease_ms, &nodes],
                );
                if let Err(e) = renewed {
                    tracing::warn!(error = %chain(&e), "cannot renew this worker's claims");
                }
            }
        }
    }
}

fn ms(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn parse(node: &str, v: serde_json::Value) -> Result<NodeRecord, StoreError> {
    serde_json::from_value(v).map_err(|source| StoreError::Corrupt { node: node.to_owned(), source })
}

fn insert_history(tx: &mut postgres::Transaction<'_>, node: &str, entries: &[History]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    for h in entries {
        let v = serde_json::to_value(h).map_err(db)?;
        tx.execute("INSERT INTO apply_history (node, ts_ms, entry) VALUES ($1, $2, $3)", &[&node, &ms(h.ts_ms), &v])
            .map_err(pg)?;
    }
    tx.execute(
        "DELETE FROM apply_history WHERE node = $1 AND id <= (
             SELECT id FROM apply_history WHERE node = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[&node, &MAX_HISTORY_PER_NODE],
    )
    .map_err(pg)?;
    Ok(())
}

impl Store for PgStore {
    fn load(&self, node: &str) -> Result<Option<NodeRecord>, StoreError> {
        let node = node.to_owned();
        self.call(move |c| {
            let row = c.query_opt("SELECT record FROM apply_nodes WHERE node = $1", &[&node]).map_err(pg)?;
            row.map(|r| parse(&node, r.get(0))).transpose()
        })
    }

    fn all(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.call(move |c| {
            let rows = c.query("SELECT node, record FROM apply_nodes ORDER BY node", &[]).map_err(pg)?;
            rows.into_iter().map(|r| parse(&r.get::<_, String>(0), r.get(1))).collect()
        })
    }

    fn commit(&self, rec: &NodeRecord, history: &[History]) -> Result<NodeRecord, StoreError> {
        let (rec, history, me) = (rec.clone(), history.to_vec(), self.owner.clone());
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            let row = tx
                .query_opt(
                    "SELECT generation, owner, claim_until > now() FROM apply_nodes WHERE node = $1 FOR UPDATE",
                    &[&rec.node],
                )
                .map_err(pg)?;
            let stored = row.as_ref().map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0));
            if stored != rec.generation {
                return Err(StoreError::Conflict { node: rec.node.clone(), stored, based_on: rec.generation });
            }
            if let Some(r) = &row
                && let Some(owner) = r.get::<_, Option<String>>(1)
                && owner != me
                && r.get::<_, bool>(2)
            {
                return Err(StoreError::NotOwner { node: rec.node.clone(), owner });
            }
            let mut next = rec.clone();
            next.generation = rec.generation + 1;
            let v = serde_json::to_value(&next).map_err(db)?;
            // A new record: `FOR UPDATE` locked nothing, so the insert itself must not overwrite
            // one another worker made meanwhile.
            let written = if row.is_none() {
                tx.execute(
                    "INSERT INTO apply_nodes (node, generation, record, updated_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (node) DO NOTHING",
                    &[&next.node, &ms(next.generation), &v, &ms(next.updated_ms)],
                )
            } else {
                tx.execute(
                    "UPDATE apply_nodes SET generation = $2, record = $3, updated_ms = $4
                     WHERE node = $1 AND generation = $5",
                    &[&next.node, &ms(next.generation), &v, &ms(next.updated_ms), &ms(rec.generation)],
                )
            }
            .map_err(pg)?;
            if written != 1 {
                return Err(StoreError::Conflict {
                    node: rec.node.clone(),
                    stored: rec.generation + 1,
                    based_on: rec.generation,
                });
            }
            insert_history(&mut tx, &rec.node, &history)?;
            tx.commit().map_err(pg)?;
            Ok(next)
        })
    }

    fn record(&self, node: &str, entry: &History) -> Result<(), StoreError> {
        let (node, entry) = (node.to_owned(), entry.clone());
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            insert_history(&mut tx, &node, std::slice::from_ref(&entry))?;
            tx.commit().map_err(pg)
        })
    }

    fn history(&self, node: &str) -> Result<Vec<History>, StoreError> {
        let node = node.to_owned();
        self.call(move |c| {
            let rows = c.query("SELECT entry FROM apply_history WHERE node = $1 ORDER BY id", &[&node]).map_err(pg)?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let v: serde_json::Value = r.get(0);
                    serde_json::from_value(v.clone())
                        .unwrap_or_else(|_| History::new(0, "store", "unreadable", v.to_string()))
                })
                .collect())
        })
    }

    fn claim(&self, node: &str) -> Result<Claim, StoreError> {
        let name = node.to_owned();
        let (node, me, lease) = (node.to_owned(), self.owner.clone(), self.lease_ms());
        let claim = self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            let Some(row) = tx
                .query_opt(
                    "SELECT owner, claim_until > now(),
                            greatest(0, extract(epoch FROM claim_until - now()) * 1000)::bigint
                     FROM apply_nodes WHERE node = $1 FOR UPDATE",
                    &[&node],
                )
                .map_err(pg)?
            else {
                return Err(StoreError::Shared(format!("{node} has no record to claim")));
            };
            let (owner, live, left): (Option<String>, bool, i64) = (row.get(0), row.get(1), row.get(2));
            if let Some(o) = owner.as_ref().filter(|o| **o != me && live) {
                return Ok(Claim::Other { owner: o.clone(), for_ms: u64::try_from(left).unwrap_or(0) });
            }
            let changed = owner.as_deref() != Some(me.as_str());
            tx.execute(
                "UPDATE apply_nodes SET owner = $2, claim_until = now() + make_interval(secs => $3::bigint / 1000.0),
                        claims = claims + $4
                 WHERE node = $1",
                &[&node, &me, &lease, &i64::from(changed)],
            )
            .map_err(pg)?;
            if let Some(prev) = owner.filter(|o| *o != me) {
                // A lapsed claim taken over: the timeline says from whom.
                let h = History::new(
                    crate::apply::now_ms(),
                    "apply",
                    "takeover",
                    format!("{me} took {node} over from {prev}, whose claim lapsed"),
                );
                insert_history(&mut tx, &node, &[h])?;
            }
            tx.commit().map_err(pg)?;
            Ok(Claim::Held)
        })?;
        if claim == Claim::Held {
            self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name);
        }
        Ok(claim)
    }

    fn release(&self, node: &str) -> Result<(), StoreError> {
        // No longer renewed from here on, whether or not the database hears of the release.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(node);
        let (node, me) = (node.to_owned(), self.owner.clone());
        self.call(move |c| {
            c.execute(
                "UPDATE apply_nodes SET owner = NULL, claim_until = now() WHERE node = $1 AND owner = $2",
                &[&node, &me],
            )
            .map_err(pg)?;
            Ok(())
        })
    }
}
