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
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use metal6_db::leases::{self, Cursor, EventRow, Generation, Item, Statements};
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

/// What the follower (and the writer) hand the receive loop.
#[derive(Debug)]
pub enum Follow {
    Changes(Vec<Change>),
    /// Nodes to refuse now (replaces the earlier list).
    Refuse(Vec<String>),
    /// The servers alive now, sorted (`share`).
    Live(Vec<String>),
}

/// How often each server writes its heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A server whose heartbeat is older than this is taken for dead: its share of the clients
/// goes to the others.
pub const HEARTBEAT_LAPSE: Duration = Duration::from_secs(3);

/// Whether `me` answers a client's Solicit, Rebind, Confirm or Information-request: clients
/// are shared out among the live servers by a hash of their DUID, the same on every server,
/// so each such message costs one server, not all (relays forward every message to every
/// server). A server not in the list (just started, or refusing nodes of another inventory
/// generation, which then writes no heartbeat) answers everything it may.
pub fn answers(live: &[String], me: &str, duid: &[u8]) -> bool {
    if live.len() < 2 || !live.iter().any(|s| s == me) {
        return true;
    }
    // FNV-1a: stable across servers and releases (std's hasher is not).
    let h = duid.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    let i = usize::try_from(h % live.len() as u64).unwrap_or(0);
    live[i] == me
}

/// The shared store, opened.
pub struct SharedLeases {
    pub state: SharedState,
    /// `None` only while being dropped (see `Drop`).
    client: Option<Client>,
    statements: Statements,
    /// Where the follower starts.
    cursor: Cursor,
    events_cursor: Cursor,
    ours: Generation,
    /// Nodes refused at start.
    pub refused: Vec<String>,
}

/// rust-postgres' client stops its runtime when dropped, which must not happen on a runtime
/// thread (serve's start-up can fail after the store is open): dropped on a thread of its own.
impl Drop for SharedLeases {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = std::thread::Builder::new().name("db-drop".into()).spawn(move || drop(c));
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Takes this server's name for as long as the connection lives: two servers with one name
/// would move each other's bindings and ignore each other's writes.
fn lock_name(client: &mut Client, server: &str) -> Result<bool, DbError> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock(hashtext('metal6-server:' || $1))", &[&server])
        .map_err(|source| DbError::Query { what: "taking the server name", source })?
        .get(0))
}

/// Connects, takes the server's name, migrates, settles the inventory generation and loads the
/// live bindings.
pub fn open(state: SharedState, inv: &Inventory, now: u64) -> Result<(SharedLeases, Bindings), DbError> {
    let mut client = state.db.connect()?;
    if !lock_name(&mut client, &state.server)? {
        return Err(DbError::NameTaken { name: state.server.clone() });
    }
    let applied = metal6_db::migrate::migrate(&mut client)?;
    if !applied.is_empty() {
        info!(versions = ?applied, "state database schema migrated");
    }
    let ours = Generation::of(inv);
    let refused = settle_generation(&mut client, &state, &ours)?;
    let (live, cursor) = leases::load_live(&mut client, now)?;
    let events_cursor = leases::events_cursor(&mut client)?;
    let mut bindings = Bindings::default();
    for b in &live {
        bindings.apply(&Change::Upsert(b.clone()));
    }
    info!(db = %state.db.target(), server = %state.server, bindings = live.len(), "shared state loaded");
    let statements = Statements::prepare(&mut client)?;
    Ok((SharedLeases { state, client: Some(client), statements, cursor, events_cursor, ours, refused }, bindings))
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

/// Renewals answered while the database was unreachable, and events, waiting to be written.
#[derive(Debug, Default)]
struct Deferred {
    bindings: HashMap<BindingKey, Binding>,
    events: VecDeque<EventRow>,
}

impl Deferred {
    fn is_empty(&self) -> bool {
        self.bindings.is_empty() && self.events.is_empty()
    }
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
        // Degraded, or with renewals to write: wake up to try the database again.
        while let Ok(first) = next(&rx, !(connected && deferred.is_empty())) {
            if let Some(p) = first {
                batch.push(p);
                std::thread::sleep(LINGER);
                while batch.len() < MAX_BATCH
                    && let Ok(p) = rx.try_recv()
                {
                    batch.push(p);
                }
            }
            if !connected && last_attempt.elapsed() >= RECONNECT_EVERY {
                last_attempt = Instant::now();
                connected = leases.reconnect(&stats);
            }
            if connected && !deferred.is_empty() {
                leases.flush_deferred(&mut deferred, &stats);
            }
            if batch.is_empty() {
                continue;
            }
            if connected {
                // A deadlock or serialization failure between two servers' batches: once more.
                let mut tries = 0;
                let outcome = loop {
                    tries += 1;
                    match leases.commit_batch(&batch, &socket, &stats, &learn) {
                        Err(e) if tries < 2 && e.is_retryable() => continue,
                        other => break other,
                    }
                };
                match outcome {
                    Ok(()) => {
                        batch.clear();
                        continue;
                    }
                    Err(e) if !leases.is_closed() => {
                        // The database answered with an error, not silence: these Replies are
                        // withheld (their clients retransmit) and the server stays connected.
                        warn!(error = %crate::error_chain(&e), replies = batch.len(), "the state database refused a batch");
                        withhold(&mut batch, &learn, &stats, "db-error");
                        continue;
                    }
                    Err(e) => {
                        warn!(error = %crate::error_chain(&e), "the state database is unreachable; degraded");
                        connected = false;
                        last_attempt = Instant::now();
                        stats.update(|s| s.db.degraded = true);
                    }
                }
            }
            degraded(&mut batch, &mut deferred, &socket, &stats, &learn);
        }
        // Shutdown: what was answered while degraded is written if the database is back.
        if !deferred.is_empty() && (connected || leases.reconnect(&stats)) {
            leases.flush_deferred(&mut deferred, &stats);
        }
    })
}

/// The next item of a writer's queue; with `retrying`, `None` after [`RECONNECT_EVERY`] of
/// silence, so what waits for the database is tried again. `Err`: the queue is closed.
fn next<T>(rx: &Receiver<T>, retrying: bool) -> Result<Option<T>, ()> {
    if !retrying {
        return rx.recv().map(Some).map_err(|_| ());
    }
    match rx.recv_timeout(RECONNECT_EVERY) {
        Ok(x) => Ok(Some(x)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(RecvTimeoutError::Disconnected) => Err(()),
    }
}

/// Drops the Replies of `batch` and puts the binding table back as it was before them.
fn withhold(batch: &mut Vec<Pending>, learn: &SyncSender<Follow>, stats: &Stats, why: &str) {
    let n = batch.len() as u64;
    let undo: Vec<Change> = batch.drain(..).flat_map(|p| p.undo).collect();
    if !undo.is_empty() {
        let _ = learn.send(Follow::Changes(undo));
    }
    stats.update(|s| *s.dropped.entry(why.into()).or_default() += n);
}

/// Answers the renewals of known bindings and keeps them (and the events of what is answered)
/// for later; every other Reply waits, and the binding table forgets what it promised.
fn degraded(
    batch: &mut Vec<Pending>,
    deferred: &mut Deferred,
    socket: &UdpSocket,
    stats: &Stats,
    learn: &SyncSender<Follow>,
) {
    let (mut answered, mut lost_events) = (0u64, 0u64);
    let mut refused = Vec::new();
    for p in batch.drain(..) {
        let room = deferred.bindings.len() + p.changes.len() <= MAX_DEFERRED;
        let answer = match &p.reply {
            None => true,
            Some(_) => p.renewal && room,
        };
        if !answer {
            refused.push(p);
            continue;
        }
        for e in p.events {
            if deferred.events.len() >= MAX_DEFERRED_EVENTS {
                deferred.events.pop_front();
                lost_events += 1;
            }
            deferred.events.push_back(e);
        }
        let Some((bytes, dest, _)) = &p.reply else { continue };
        for c in &p.changes {
            if let Change::Upsert(b) = c {
                deferred.bindings.insert(b.key.clone(), b.clone());
            }
        }
        if socket.send_to(bytes, *dest).is_ok() {
            answered += 1;
        }
    }
    withhold(&mut refused, learn, stats, "db-unavailable");
    let waiting = deferred.bindings.len() as u64;
    stats.update(|s| {
        s.db.degraded_replies += answered;
        s.db.deferred = waiting;
        s.db.events_lost += lost_events;
    });
}

impl SharedLeases {
    fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }

    fn reconnect(&mut self, stats: &Stats) -> bool {
        let opened = self.state.db.connect().and_then(|mut c| {
            let named = lock_name(&mut c, &self.state.server)?;
            Statements::prepare(&mut c).map(|s| (c, s, named))
        });
        match opened {
            Ok((c, s, named)) => {
                if !named {
                    error!(
                        server = %self.state.server,
                        "another server took this server's name while the database was unreachable: two servers \
                         with one --server-name overwrite each other's bindings; give each its own"
                    );
                }
                if let Some(old) = self.client.replace(c) {
                    drop(old);
                }
                self.statements = s;
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

    /// Writes what was answered while degraded; kept for another try if that fails. A renewal
    /// the database now refuses (another server moved the IA meanwhile) is logged: its client
    /// learns at its next Renew.
    fn flush_deferred(&mut self, d: &mut Deferred, stats: &Stats) {
        let mut items: Vec<Item> = d
            .bindings
            .values()
            .map(|b| Item { changes: vec![Change::Upsert(b.clone())], events: Vec::new() })
            .collect();
        items.push(Item { changes: Vec::new(), events: d.events.iter().cloned().collect() });
        let (server, now) = (self.state.server.clone(), unix_now());
        let st = &self.statements;
        let Some(c) = self.client.as_mut() else { return };
        match leases::commit(c, st, &server, now, &items) {
            Ok(r) => {
                let refused = r.iter().filter(|x| x.is_err()).count();
                info!(written = items.len() - 1, refused, "what was answered while degraded is written");
                d.bindings.clear();
                d.events.clear();
                stats.update(|s| s.db.deferred = 0);
            }
            Err(e) => warn!(error = %crate::error_chain(&e), "what was answered while degraded is not written yet"),
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
        let (server, now) = (self.state.server.clone(), unix_now());
        let st = &self.statements;
        let Some(c) = self.client.as_mut() else { return Ok(()) };
        let results = leases::commit(c, st, &server, now, &items)?;
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
                    // Forget what was promised; learn what won.
                    held.extend(p.undo.iter().cloned());
                    for c in cs {
                        held.push(Change::Remove(c.wanted.key.clone()));
                        if let Some(b) = c.held {
                            held.push(Change::Upsert(b));
                        }
                    }
                }
            }
        }
        if !held.is_empty() {
            let _ = learn.send(Follow::Changes(held));
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

    /// The follower, starting where the load left off.
    pub fn follower(&self, events: Arc<EventStore>, stats: Arc<Stats>) -> Follower {
        stats.update(|s| s.db.refused_nodes = self.refused.len() as u64);
        Follower {
            state: self.state.clone(),
            client: None,
            cursor: self.cursor,
            event_cursor: self.events_cursor,
            ours: self.ours.clone(),
            refused: self.refused.clone(),
            events,
            stats,
            seen_events: SeenIds::default(),
        }
    }
}

/// Event ids recently taken in (a row read twice is taken in once).
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
    cursor: Cursor,
    event_cursor: Cursor,
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

/// How often one of the servers bounds the shared tables (`leases::prune`).
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Node events kept in the shared state.
const EVENT_DAYS: i64 = 30;

impl Follower {
    /// Runs until `cancel` (a thread of its own).
    pub fn spawn(
        mut self,
        tx: SyncSender<Follow>,
        cancel: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("state-follower".into()).spawn(move || {
            let mut next_generation = Instant::now() + GENERATION_EVERY;
            let mut next_prune = Instant::now() + PRUNE_EVERY;
            let mut next_heartbeat = Instant::now();
            let mut live: Vec<String> = Vec::new();
            while !cancel.is_cancelled() {
                // A server that refuses nodes (another inventory) takes no share: it answers
                // what it may, and the others answer its clients once its heartbeat lapses.
                if !self.refused.is_empty() && !live.is_empty() && tx.send(Follow::Live(Vec::new())).is_ok() {
                    live.clear();
                }
                if Instant::now() >= next_heartbeat && self.refused.is_empty() {
                    next_heartbeat = Instant::now() + HEARTBEAT_EVERY;
                    let lapse = i64::try_from(HEARTBEAT_LAPSE.as_millis()).unwrap_or(i64::MAX);
                    let beat = match self.client.as_mut() {
                        Some(c) => leases::heartbeat(c, &self.state.server, lapse),
                        None => self.state.db.connect().and_then(|mut c| {
                            let r = leases::heartbeat(&mut c, &self.state.server, lapse);
                            self.client = Some(c);
                            r
                        }),
                    };
                    // Unreachable: keep the last list (the others cannot see this one either,
                    // and they take its share when its heartbeat lapses).
                    if let Ok(now_live) = beat
                        && now_live != live
                    {
                        info!(servers = ?now_live, "servers sharing the clients");
                        if tx.send(Follow::Live(now_live.clone())).is_ok() {
                            live = now_live;
                        }
                    }
                }
                std::thread::sleep(FOLLOW_EVERY);
                if let Err(e) = self.poll(&tx, &mut next_generation, &mut next_prune) {
                    tracing::debug!(error = %crate::error_chain(&e), "cannot follow the state database");
                    self.client = None;
                }
            }
        })
    }

    fn poll(
        &mut self,
        tx: &SyncSender<Follow>,
        next_generation: &mut Instant,
        next_prune: &mut Instant,
    ) -> Result<(), DbError> {
        if self.client.is_none() {
            self.client = Some(self.state.db.connect()?);
        }
        let Some(client) = self.client.as_mut() else { return Ok(()) };
        let changes = leases::changes_since(client, &self.state.server, self.cursor, FOLLOW_LIMIT)?;
        if let Some((at, _)) = changes.last() {
            let at = *at;
            let n = changes.len() as u64;
            match tx.try_send(Follow::Changes(changes.into_iter().map(|(_, c)| c).collect())) {
                Ok(()) => {
                    self.cursor = at;
                    self.stats.update(|s| s.db.followed += n);
                }
                Err(TrySendError::Disconnected(_)) => {}
                // The receive loop is behind: read these again next time.
                Err(TrySendError::Full(_)) => {}
            }
        }
        for (at, id, body) in leases::events_since(client, &self.state.server, self.event_cursor, FOLLOW_LIMIT)? {
            self.event_cursor = at;
            if self.seen_events.insert(id) {
                self.events.ingest(&body);
            }
        }
        if Instant::now() >= *next_prune {
            *next_prune = Instant::now() + PRUNE_EVERY;
            match leases::prune(client, unix_now(), EVENT_DAYS) {
                Ok(n) if n > 0 => info!(rows = n, "shared state pruned"),
                Ok(_) => {}
                Err(e) => warn!(error = %crate::error_chain(&e), "cannot prune the shared state"),
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
                    let count = refused.len() as u64;
                    // Blocking: a refusal must reach the engine (the receive loop drains this
                    // queue between messages).
                    if tx.send(Follow::Refuse(refused.clone())).is_ok() {
                        self.refused = refused;
                        self.stats.update(|s| s.db.refused_nodes = count);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Events waiting in the sink's queue at most (a full queue: the local copy stays, the shared
/// one is lost and counted; a node's report is told to retry).
pub const SINK_QUEUE: usize = 4096;

/// Shares the events HTTP and TFTP record (a node's reports, its fetches) with the other
/// servers: a thread with its own connection writes them in batches, confirms the ones a node
/// waits for, and keeps the others (bounded) while the database is unreachable.
pub fn spawn_event_sink(
    state: SharedState,
    rx: Receiver<crate::events::SinkItem>,
    stats: Arc<Stats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("event-sink".into()).spawn(move || {
        // Ids for events that carry none: unique per server run.
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut n: u64 = 0;
        let mut conn: Option<(Client, Statements)> = None;
        let mut waiting: VecDeque<EventRow> = VecDeque::new();
        loop {
            // Events kept while the database was unreachable are tried again every second.
            let Ok(first) = next(&rx, !waiting.is_empty()) else { return };
            let mut batch: Vec<crate::events::SinkItem> = first.into_iter().collect();
            while batch.len() < 256
                && let Ok(x) = rx.try_recv()
            {
                batch.push(x);
            }
            let mut confirm = Vec::new();
            for (v, tx) in batch {
                let node = v.get("node").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
                let id = match v.get("id").and_then(serde_json::Value::as_str) {
                    Some(own) => format!("node-{node}-{own}"),
                    None => {
                        n += 1;
                        format!("{}-{run:x}-{n}", state.server)
                    }
                };
                let ts_ms = v.get("ts_ms").and_then(serde_json::Value::as_u64).unwrap_or_default();
                if waiting.len() >= MAX_DEFERRED_EVENTS {
                    waiting.pop_front();
                    stats.update(|s| s.db.events_lost += 1);
                }
                waiting.push_back(EventRow { id, node, ts_ms, body: v });
                confirm.extend(tx);
            }
            if conn.is_none() {
                conn = state.db.connect().and_then(|mut c| Statements::prepare(&mut c).map(|s| (c, s))).ok();
            }
            let ok = match conn.as_mut() {
                Some((c, st)) => {
                    let item = Item { changes: Vec::new(), events: waiting.iter().cloned().collect() };
                    match leases::commit(c, st, &state.server, unix_now(), &[item]) {
                        Ok(_) => {
                            waiting.clear();
                            true
                        }
                        Err(e) if c.is_closed() => {
                            tracing::debug!(error = %crate::error_chain(&e), "events not shared yet");
                            conn = None;
                            false
                        }
                        Err(e) => {
                            // The database refused the events themselves: dropped (the local
                            // copies stay), never retried for ever ahead of every later one.
                            warn!(error = %crate::error_chain(&e), events = waiting.len(), "events the state database refused are not shared");
                            let n = waiting.len() as u64;
                            stats.update(|s| s.db.events_lost += n);
                            waiting.clear();
                            false
                        }
                    }
                }
                None => false,
            };
            for tx in confirm {
                let _ = tx.send(ok);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::answers;

    #[test]
    fn each_client_is_one_live_servers_and_all_of_a_lone_one() {
        let live = ["a".to_owned(), "b".to_owned()];
        let mut counts = [0usize; 2];
        for i in 0u32..2000 {
            let duid = [&[0u8, 3, 0, 1][..], &i.to_be_bytes()].concat();
            let (x, y) = (answers(&live, "a", &duid), answers(&live, "b", &duid));
            assert!(x != y, "exactly one answers");
            counts[usize::from(y)] += 1;
        }
        assert!(counts.iter().all(|c| (800..=1200).contains(c)), "{counts:?}");
        assert!(answers(&live[..1], "a", b"x"), "alone: everything");
        assert!(answers(&live, "c", b"x"), "not listed yet: everything");
    }
}
