//! Several `metal6 serve` on one state: bindings and node events in PostgreSQL
//! (`--state postgres://…`, `metal6-db`), instead of the lease journal.
//!
//! Each server keeps deciding from its in-memory binding table (the engine is the same); the
//! database is the authority:
//!
//! - **Reply after commit.** The writer thread commits a batch of Replies' changes and events
//!   in one transaction, a savepoint per Reply, and sends a Reply only once its part is
//!   committed. A change the database refuses (another server's binding, a pool address held
//!   by another client) withholds that Reply and teaches the receive loop what the database
//!   holds; the client's retransmission is then answered from it.
//! - **Following the others.** A follower thread reads what other servers wrote (bindings,
//!   removals, node events) every [`FOLLOW_EVERY`] and hands it to the receive loop and the
//!   event store, so a Rebind after a server died finds its binding here.
//! - **One inventory.** The newest generation in the database is what the servers serve; a
//!   server whose inventory differs says so and refuses the nodes it disagrees on, until it
//!   runs the same one (or publishes its own with `--publish-inventory`).
//! - **Degraded.** When the database cannot be reached, Renews and Rebinds of bindings this
//!   server knows (same address) are answered at once and written when it is back; every
//!   other Reply waits (is not sent: the client retransmits). The metrics and the log say so.

use std::collections::{HashMap, VecDeque};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use metal6_db::leases::{self, EventRow, Generation, Item, Statements};
use metal6_db::{Client, DbConfig, DbError};
use metal6_dhcp6::bindings::{Binding, BindingKey, Bindings, Change};
use metal6_inventory::Inventory;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::dhcp::{LINGER, MAX_BATCH, Pending};
use crate::events::EventStore;
use crate::stats::{Stats, bump};

/// How often the follower reads what other servers wrote.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How often the follower compares inventory generations.
const GENERATION_EVERY: Duration = Duration::from_secs(2);
/// Sequence numbers are taken before commit: the follower re-reads what was written in this
/// window below its cursor, so a transaction that committed late is not skipped.
const FOLLOW_WINDOW: Duration = Duration::from_secs(2);
/// Rows read per poll.
const FOLLOW_LIMIT: i64 = 20_000;
/// While the database is unreachable: the writer tries again at most this often.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Renewals answered while degraded and waiting to be written (newest per IA); past this,
/// renewals wait like everything else.
pub const MAX_DEFERRED: usize = 65_536;
/// Events waiting to be written while degraded, oldest dropped past this (and counted).
pub const MAX_DEFERRED_EVENTS: usize = 100_000;

/// `--state postgres://…` and who this server is.
#[derive(Debug, Clone)]
pub struct SharedState {
    pub db: DbConfig,
    /// Written with every binding and event (`--server-name`; stable across restarts).
    pub server: String,
    /// Make this server's inventory the generation everyone serves.
    pub publish_inventory: bool,
}

/// What the follower hands the receive loop.
#[derive(Debug)]
pub enum Follow {
    Changes(Vec<Change>),
    /// Nodes to refuse now (replaces the earlier list).
    Refuse(Vec<String>),
}

/// The shared store, opened.
pub struct SharedLeases {
    pub state: SharedState,
    client: Client,
    statements: Statements,
    /// Follow from here.
    cursor: i64,
    ours: Generation,
    /// Nodes refused at start.
    pub refused: Vec<String>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Connects, migrates, settles the inventory generation and loads the live bindings.
pub fn open(state: SharedState, inv: &Inventory, now: u64) -> Result<(SharedLeases, Bindings), DbError> {
    let mut client = state.db.connect()?;
    let applied = metal6_db::migrate::migrate(&mut client)?;
    if !applied.is_empty() {
        info!(versions = ?applied, "state database schema migrated");
    }
    let ours = Generation::of(inv);
    let refused = settle_generation(&mut client, &state, &ours)?;
    let (live, cursor) = leases::load_live(&mut client, now)?;
    let mut bindings = Bindings::default();
    for b in &live {
        bindings.apply(&Change::Upsert(b.clone()));
    }
    info!(db = %state.db.target(), server = %state.server, bindings = live.len(), cursor, "shared state loaded");
    let statements = Statements::prepare(&mut client)?;
    Ok((SharedLeases { state, client, statements, cursor, ours, refused }, bindings))
}

/// Publishes our generation when asked to or when there is none; otherwise the nodes we
/// disagree with the current one on.
fn settle_generation(client: &mut Client, state: &SharedState, ours: &Generation) -> Result<Vec<String>, DbError> {
    let current = leases::current_generation(client)?;
    if state.publish_inventory || current.is_none() {
        let n = leases::publish(client, ours, &state.server)?;
        info!(generation = n, sha256 = %ours.sha256, "inventory generation published");
        return Ok(Vec::new());
    }
    let Some((n, theirs)) = current else { return Ok(Vec::new()) };
    let refused = ours.disagreements(&theirs);
    if refused.is_empty() {
        info!(generation = n, "serving the state database's inventory generation");
    } else {
        error!(
            generation = n,
            ours = %ours.sha256,
            theirs = %theirs.sha256,
            nodes = refused.len(),
            first = ?refused.iter().take(10).collect::<Vec<_>>(),
            "this server's inventory differs from the generation the other servers serve: it refuses those nodes \
             (start it with the same inventory, or publish this one with --publish-inventory)"
        );
    }
    Ok(refused)
}

/// A renewal the database has not seen yet: what it needs to be written later.
#[derive(Debug, Default)]
struct Deferred {
    bindings: HashMap<BindingKey, Binding>,
    events: VecDeque<EventRow>,
}

/// The writer: like the journal's (group commit within [`LINGER`], at most [`MAX_BATCH`]),
/// with the database as the durable store. Ends when the service drops its queue.
pub(crate) fn spawn_writer(
    mut leases: SharedLeases,
    rx: Receiver<Pending>,
    socket: UdpSocket,
    stats: Arc<Stats>,
    learn: SyncSender<Follow>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("lease-db".into()).spawn(move || {
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        let mut deferred = Deferred::default();
        let mut connected = true;
        let mut last_attempt = Instant::now();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            std::thread::sleep(LINGER);
            while batch.len() < MAX_BATCH
                && let Ok(p) = rx.try_recv()
            {
                batch.push(p);
            }
            if !connected && last_attempt.elapsed() >= RECONNECT_EVERY {
                last_attempt = Instant::now();
                connected = leases.reconnect(&stats);
                if connected {
                    leases.flush_deferred(&mut deferred, &stats);
                }
            }
            if connected {
                match leases.commit_batch(&batch, &socket, &stats, &learn) {
                    Ok(()) => {
                        batch.clear();
                        continue;
                    }
                    Err(e) => {
                        warn!(error = %crate::error_chain(&e), "the state database failed a batch; degraded");
                        connected = false;
                        last_attempt = Instant::now();
                        stats.update(|s| s.db.degraded = true);
                    }
                }
            }
            degraded(&mut batch, &mut deferred, &socket, &stats);
        }
    })
}

/// Answers the renewals of known bindings and keeps them (and every event) for later; the
/// rest waits.
fn degraded(batch: &mut Vec<Pending>, deferred: &mut Deferred, socket: &UdpSocket, stats: &Stats) {
    let (mut answered, mut withheld, mut dropped_events) = (0u64, 0u64, 0u64);
    for p in batch.drain(..) {
        let room = deferred.bindings.len() + p.changes.len() <= MAX_DEFERRED;
        for e in p.events {
            if deferred.events.len() >= MAX_DEFERRED_EVENTS {
                deferred.events.pop_front();
                dropped_events += 1;
            }
            deferred.events.push_back(e);
        }
        let Some((bytes, dest, _)) = &p.reply else { continue };
        if !(p.renewal && room) {
            withheld += 1;
            continue;
        }
        for c in &p.changes {
            if let Change::Upsert(b) = c {
                deferred.bindings.insert(b.key.clone(), b.clone());
            }
        }
        if socket.send_to(bytes, *dest).is_ok() {
            answered += 1;
        }
    }
    let waiting = deferred.bindings.len() as u64;
    stats.update(|s| {
        s.db.degraded_replies += answered;
        s.db.deferred = waiting;
        s.db.events_lost += dropped_events;
        if withheld > 0 {
            *s.dropped.entry("db-unavailable".into()).or_default() += withheld;
        }
    });
}

impl SharedLeases {
    fn reconnect(&mut self, stats: &Stats) -> bool {
        let client = self.state.db.connect();
        match client.and_then(|mut c| Statements::prepare(&mut c).map(|s| (c, s))) {
            Ok((c, s)) => {
                (self.client, self.statements) = (c, s);
                info!(db = %self.state.db.target(), "state database reachable again; leaving degraded mode");
                stats.update(|s| s.db.degraded = false);
                true
            }
            Err(e) => {
                tracing::debug!(error = %crate::error_chain(&e), "state database still unreachable");
                false
            }
        }
    }

    /// Writes what was answered while degraded. A renewal the database now refuses (another
    /// server moved the IA meanwhile) is logged: its client learns at its next Renew.
    fn flush_deferred(&mut self, d: &mut Deferred, stats: &Stats) {
        if d.bindings.is_empty() && d.events.is_empty() {
            return;
        }
        let mut items: Vec<Item> =
            d.bindings.drain().map(|(_, b)| Item { changes: vec![Change::Upsert(b)], events: Vec::new() }).collect();
        items.push(Item { changes: Vec::new(), events: d.events.drain(..).collect() });
        match leases::commit(&mut self.client, &self.statements, &self.state.server, unix_now(), &items) {
            Ok(r) => {
                let refused = r.iter().filter(|x| x.is_err()).count();
                info!(written = items.len() - 1, refused, "renewals answered while degraded are written");
                stats.update(|s| s.db.deferred = 0);
            }
            Err(e) => warn!(error = %crate::error_chain(&e), "renewals answered while degraded could not be written"),
        }
    }

    fn commit_batch(
        &mut self,
        batch: &[Pending],
        socket: &UdpSocket,
        stats: &Stats,
        learn: &SyncSender<Follow>,
    ) -> Result<(), DbError> {
        let items: Vec<Item> =
            batch.iter().map(|p| Item { changes: p.changes.clone(), events: p.events.clone() }).collect();
        let results = leases::commit(&mut self.client, &self.statements, &self.state.server, unix_now(), &items)?;
        let (mut sent, mut failed, mut conflicts) = (Vec::<&'static str>::new(), 0u64, 0u64);
        let mut held = Vec::new();
        for (p, r) in batch.iter().zip(results) {
            match r {
                Ok(()) => {
                    if let Some((bytes, dest, kind)) = &p.reply {
                        match socket.send_to(bytes, *dest) {
                            Ok(_) => sent.push(kind),
                            Err(_) => failed += 1,
                        }
                    }
                }
                Err(cs) => {
                    conflicts += 1;
                    for c in cs {
                        // Forget what we wanted; learn what won.
                        held.push(Change::Remove(c.wanted.key.clone()));
                        if let Some(b) = c.held {
                            held.push(Change::Upsert(b));
                        }
                    }
                }
            }
        }
        if !held.is_empty() {
            let _ = learn.try_send(Follow::Changes(held));
        }
        let changes: usize = batch.iter().map(|p| p.changes.len()).sum();
        stats.update(|s| {
            s.journal_batches += 1;
            s.journal_changes += changes as u64;
            s.db.conflicts += conflicts;
            for kind in sent {
                bump(&mut s.sent, kind);
            }
            if failed > 0 {
                *s.dropped.entry("send-failed".into()).or_default() += failed;
            }
            if conflicts > 0 {
                *s.dropped.entry("db-conflict".into()).or_default() += conflicts;
            }
        });
        Ok(())
    }

    /// The follower's starting point and what it compares generations with.
    pub fn follower(&self, events: Arc<EventStore>, stats: Arc<Stats>) -> Follower {
        Follower {
            state: self.state.clone(),
            client: None,
            cursor: self.cursor,
            event_cursor: self.cursor,
            marks: VecDeque::new(),
            event_marks: VecDeque::new(),
            ours: self.ours.clone(),
            refused: self.refused.clone(),
            events,
            stats,
            seen_events: SeenIds::default(),
        }
    }
}

/// Event ids recently taken in, so the re-read window does not take one in twice.
#[derive(Debug, Default)]
struct SeenIds {
    set: std::collections::HashSet<String>,
    order: VecDeque<String>,
}

impl SeenIds {
    const MAX: usize = 65_536;
    fn insert(&mut self, id: String) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if self.order.len() >= Self::MAX
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

/// Reads what other servers wrote. Its own connection: a slow poll never holds up a commit.
pub struct Follower {
    state: SharedState,
    client: Option<Client>,
    cursor: i64,
    event_cursor: i64,
    /// (when, cursor then): the re-read window's lower end is the cursor of [`FOLLOW_WINDOW`] ago.
    marks: VecDeque<(Instant, i64)>,
    event_marks: VecDeque<(Instant, i64)>,
    ours: Generation,
    refused: Vec<String>,
    events: Arc<EventStore>,
    stats: Arc<Stats>,
    seen_events: SeenIds,
}

// By hand: rust-postgres' client has no Debug.
impl std::fmt::Debug for SharedLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLeases").field("state", &self.state).field("cursor", &self.cursor).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("cursor", &self.cursor).field("refused", &self.refused).finish_non_exhaustive()
    }
}

fn window_low(marks: &mut VecDeque<(Instant, i64)>, cursor: i64) -> i64 {
    let now = Instant::now();
    marks.push_back((now, cursor));
    while marks.len() > 1 && marks.front().is_some_and(|(t, _)| now.duration_since(*t) > FOLLOW_WINDOW) {
        marks.pop_front();
    }
    marks.front().map_or(cursor, |(_, c)| *c)
}

impl Follower {
    /// Runs until `cancel` (a thread of its own).
    pub fn spawn(
        mut self,
        tx: SyncSender<Follow>,
        cancel: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("state-follower".into()).spawn(move || {
            let mut next_generation = Instant::now() + GENERATION_EVERY;
            while !cancel.is_cancelled() {
                std::thread::sleep(FOLLOW_EVERY);
                if let Err(e) = self.poll(&tx, &mut next_generation) {
                    tracing::debug!(error = %crate::error_chain(&e), "cannot follow the state database");
                    self.client = None;
                }
            }
        })
    }

    fn poll(&mut self, tx: &SyncSender<Follow>, next_generation: &mut Instant) -> Result<(), DbError> {
        if self.client.is_none() {
            self.client = Some(self.state.db.connect()?);
        }
        let Some(client) = self.client.as_mut() else { return Ok(()) };
        let low = window_low(&mut self.marks, self.cursor);
        let changes = leases::changes_since(client, &self.state.server, low, FOLLOW_LIMIT)?;
        if let Some((seq, _)) = changes.last() {
            self.cursor = self.cursor.max(*seq);
        }
        if !changes.is_empty() {
            let n = changes.len() as u64;
            self.stats.update(|s| s.db.followed += n);
            match tx.try_send(Follow::Changes(changes.into_iter().map(|(_, c)| c).collect())) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                // The receive loop is behind: read these again next time.
                Err(TrySendError::Full(_)) => self.cursor = low,
            }
        }
        let elow = window_low(&mut self.event_marks, self.event_cursor);
        for (seq, id, body) in leases::events_since(client, &self.state.server, elow, FOLLOW_LIMIT)? {
            self.event_cursor = self.event_cursor.max(seq);
            if self.seen_events.insert(id) {
                self.events.ingest(&body);
            }
        }
        if Instant::now() >= *next_generation {
            *next_generation = Instant::now() + GENERATION_EVERY;
            if let Some((n, theirs)) = leases::current_generation(client)? {
                let refused = self.ours.disagreements(&theirs);
                if refused != self.refused {
                    if refused.is_empty() {
                        info!(generation = n, "this server's inventory is the current generation again");
                    } else {
                        error!(
                            generation = n,
                            nodes = refused.len(),
                            first = ?refused.iter().take(10).collect::<Vec<_>>(),
                            "another inventory generation was published: this server refuses the nodes it \
                             describes differently until it runs that inventory"
                        );
                    }
                    self.refused = refused.clone();
                    let count = refused.len() as u64;
                    self.stats.update(|s| s.db.refused_nodes = count);
                    let _ = tx.try_send(Follow::Refuse(refused));
                }
            }
        }
        Ok(())
    }
}
