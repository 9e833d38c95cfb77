//! The DHCPv6 service: receive, unwrap relays, ask the engine, persist, reply.
//!
//! One thread owns the socket, the engine and the binding table, so decisions are sequential
//! and need no locks; it blocks in `recvfrom` (one system call per datagram, where the
//! reactor path took three and a task wake-up). Replies that commit bindings go through the journal writer (group commit, see
//! `leases`) and leave only after their batch is durable; other replies leave at once.
//!
//! The writer is a thread of its own, not a tokio task: it blocks in `fdatasync` anyway, and
//! handing each batch to tokio's blocking pool and back cost two thread wake-ups per batch.
//! It lingers up to [`LINGER`] after the first change of a batch so that a busy server syncs
//! once per few dozen Replies rather than once per two (`make bench-dhcp`: the profile of the
//! server was mostly context switches and the block layer's flushes; docs/performance.md).
//! A Reply waits at most that much longer — DHCPv6 clients retransmit after a second.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metal6_dhcp6::bindings::{Bindings, Change};
use metal6_dhcp6::policy::{Engine, Event, Incoming, Outcome, Silence};
use metal6_dhcp6::relay;
use metal6_dhcp6::wire::{self, Message, MsgType};
use metal6_inventory::ident::Duid;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::EventStore;
use crate::leases::Journal;
use crate::shared::{Follow, SharedLeases};
use crate::stats::{Stats, bump};

pub const SERVER_PORT: u16 = 547;
/// How long the journal writer waits for more changes after the first one of a batch.
pub const LINGER: Duration = Duration::from_millis(1);
/// Changes in one batch at most; also the capacity of the queue to the writer (a full queue
/// stops the receive loop, and the socket buffer holds what arrives meanwhile).
pub(crate) const MAX_BATCH: usize = 1024;
const QUEUE: usize = 4096;
/// The longest an idle receive loop sleeps before it looks at the cancellation token.
const IDLE_WAKE: Duration = Duration::from_millis(200);
/// Expired bindings leave the in-memory table this often (the journal drops them when it
/// compacts, and replay drops them at start).
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Unknown clients remembered for logging them once at info level (then at debug).
const UNKNOWN_LOGGED: usize = 4096;
const ALL_DHCP_RELAY_AGENTS_AND_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Binds `[::]:port` and joins ff02::1:2 on the provisioning interface. A blocking socket:
/// the service is a thread of its own.
pub fn bind(port: u16, ifindex: u32) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    // Bursts of solicits (a rack powering on, perfdhcp) must not overflow the default buffer.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.join_multicast_v6(&ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ifindex)?;
    // Wakes the receive loop this often when idle, to notice shutdown and prune bindings.
    s.set_read_timeout(Some(IDLE_WAKE))?;
    // A send waits at most this long for room in a full send buffer, then counts as failed.
    s.set_write_timeout(Some(Duration::from_millis(100)))?;
    Ok(s.into())
}

/// Per-client token bucket: a misbehaving client cannot take the server's time from others.
/// Keyed by (source address, client DUID); bounded: idle entries are pruned when it grows.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: HashMap<(Ipv6Addr, Vec<u8>), (f64, Instant)>,
    max_entries: usize,
    last_prune: Option<Instant>,
}

impl RateLimiter {
    pub fn new(burst: u32, per_sec: u32, max_entries: usize) -> Self {
        RateLimiter {
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            buckets: HashMap::new(),
            max_entries,
            last_prune: None,
        }
    }

    pub fn allow(&mut self, src: Ipv6Addr, duid: &[u8], now: Instant) -> bool {
        if self.buckets.len() >= self.max_entries {
            // Pruning scans the whole table: at most once a second, not for every packet of a
            // flood that keeps it full.
            if self.last_prune.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
                self.last_prune = Some(now);
                let horizon = Duration::from_secs_f64(self.burst / self.per_sec);
                self.buckets.retain(|_, (_, t)| now.duration_since(*t) < horizon);
            }
            if self.buckets.len() >= self.max_entries {
                // Still full of active clients: refuse new ones rather than grow without bound.
                return self.buckets.contains_key(&(src, duid.to_vec())) && self.take(src, duid, now);
            }
        }
        self.take(src, duid, now)
    }

    fn take(&mut self, src: Ipv6Addr, duid: &[u8], now: Instant) -> bool {
        let (burst, rate) = (self.burst, self.per_sec);
        let (tokens, last) = self.buckets.entry((src, duid.to_vec())).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A reply waiting for its bindings (and, on a shared state, its events) to be durable.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) changes: Vec<Change>,
    /// Events to store with the changes (shared state only; the journal's server keeps events
    /// in its own log).
    pub(crate) events: Vec<metal6_db::leases::EventRow>,
    /// The reply and where it goes (`None`: only events to store).
    pub(crate) reply: Option<(Vec<u8>, SocketAddr, &'static str)>,
    /// A Renew or Rebind that keeps every binding it touches at the address it already had:
    /// what a degraded shared server may still answer.
    pub(crate) renewal: bool,
    /// What puts the binding table back as it was before this message, if its Reply is
    /// withheld (shared state only).
    pub(crate) undo: Vec<Change>,
}

/// Where acknowledged bindings are made durable. Built once at start: the size difference
/// between the variants costs nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Store {
    /// This host's lease journal (`leases`).
    Journal(Journal),
    /// A PostgreSQL database shared with other servers (`shared`).
    Shared(SharedLeases),
}

#[allow(missing_debug_implementations)] // holds sockets and the engine; nothing useful to print
pub struct DhcpService {
    /// From [`bind`]: blocking, with a read timeout.
    pub socket: UdpSocket,
    pub engine: Engine,
    pub bindings: Bindings,
    /// Taken by the writer when the service starts.
    pub store: Option<Store>,
    pub events: Arc<EventStore>,
    pub stats: Arc<Stats>,
    pub ifindex: u32,
    pub limiter: RateLimiter,
    /// DUIDs of unknown clients already logged at info level.
    pub unknown_seen: std::collections::HashSet<Vec<u8>>,
    /// Events-only items for the shared store's writer, from the message just handled.
    pub(crate) outbox: Vec<Pending>,
    /// Events go to the shared store with the Replies (set by `run` for a shared store).
    pub(crate) shared: bool,
    /// On a shared store: this server's name and the live servers the clients are shared out
    /// among (`shared::answers`).
    pub(crate) me: Option<String>,
    pub(crate) live: Vec<String>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn type_name(t: MsgType) -> &'static str {
    match t {
        MsgType::Solicit => "solicit",
        MsgType::Advertise => "advertise",
        MsgType::Request => "request",
        MsgType::Confirm => "confirm",
        MsgType::Renew => "renew",
        MsgType::Rebind => "rebind",
        MsgType::Reply => "reply",
        MsgType::Release => "release",
        MsgType::Decline => "decline",
        MsgType::Reconfigure => "reconfigure",
        MsgType::InformationRequest => "information-request",
        MsgType::RelayForw => "relay-forw",
        MsgType::RelayRepl => "relay-repl",
        MsgType::Other(_) => "other",
    }
}

impl DhcpService {
    /// Serves until `cancel`, on the calling thread (blocking: run it on a thread of its own);
    /// an error when the lease journal's writer died, since no binding can be acknowledged
    /// after that.
    ///
    /// Not a tokio task: the loop is sequential and CPU-bound, and a blocking `recvfrom` is
    /// one system call per datagram where the reactor path took three (a `recvfrom` that
    /// would block, `epoll_wait`, the `recvfrom` again) plus a task wake-up.
    pub fn run(mut self, cancel: CancellationToken) -> Result<(), crate::ServeError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(QUEUE);
        let Some(store) = self.store.take() else {
            warn!("DHCPv6 service started without a lease store");
            return Ok(());
        };
        let failed = |reason: String| crate::ServeError::ServiceFailed { service: "DHCPv6", reason };
        let reply_socket =
            self.socket.try_clone().map_err(|e| failed(format!("no socket for the lease writer: {e}")))?;
        // What other servers wrote, and what the database refused: applied between messages.
        let (follow_tx, follow_rx) = std::sync::mpsc::sync_channel::<Follow>(64);
        let mut follower = None;
        let writer = match store {
            Store::Journal(journal) => spawn_writer(journal, rx, reply_socket, self.stats.clone()),
            Store::Shared(leases) => {
                self.shared = true;
                self.me = Some(leases.state.server.clone());
                self.engine.refuse(&leases.refused);
                let f = leases.follower(self.events.clone(), self.stats.clone());
                follower = Some(
                    f.spawn(follow_tx.clone(), cancel.clone())
                        .map_err(|e| failed(format!("no thread for the state follower: {e}")))?,
                );
                crate::shared::spawn_writer(leases, rx, reply_socket, self.stats.clone(), follow_tx)
            }
        }
        .map_err(|e| failed(format!("no thread for the lease writer: {e}")))?;
        let mut buf = vec![0u8; 65536];
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        let mut result = Ok(());
        while !cancel.is_cancelled() {
            while let Ok(f) = follow_rx.try_recv() {
                match f {
                    Follow::Changes(changes) => changes.iter().for_each(|c| self.bindings.apply(c)),
                    Follow::Refuse(names) => self.engine.refuse(&names),
                    Follow::Live(names) => {
                        // New pool addresses from this server's stripe only: two servers never
                        // pick the same free address (the database would refuse the second).
                        let me = self.me.as_deref().unwrap_or_default();
                        let share = names.iter().position(|n| n == me).map(|k| (k, names.len()));
                        self.engine.share_pool(share);
                        self.live = names;
                    }
                }
            }
            if Instant::now() >= next_prune {
                next_prune = Instant::now() + PRUNE_EVERY;
                let gone = self.bindings.prune_expired(unix_now());
                self.stats.update(|s| s.leases = self.bindings.len() as u64);
                if gone > 0 {
                    debug!(gone, "expired bindings pruned");
                }
            }
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "dhcpv6 receive failed");
                    // Never a busy loop on a socket that keeps failing.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let SocketAddr::V6(from) = from else { continue };
            let ready = self.handle(&buf[..n], from);
            if self.outbox.drain(..).any(|p| tx.send(p).is_err()) {
                result = Err(failed("the lease writer stopped; no lease can be acknowledged".into()));
                break;
            }
            let Some(p) = ready else { continue };
            match p {
                Ready::Now(bytes, dest, kind) => self.send(&bytes, dest, kind),
                // A full queue blocks here (the pending change is applied in memory already: it
                // must be made durable, never dropped); the socket buffer holds what arrives.
                Ready::AfterCommit(pending) => {
                    if tx.send(pending).is_err() {
                        result = Err(failed("the lease writer stopped; no lease can be acknowledged".into()));
                        break;
                    }
                }
            }
        }
        drop(tx);
        let _ = writer.join();
        if let Some(f) = follower {
            let _ = f.join();
        }
        self.stats.update(|s| s.leases = self.bindings.len() as u64);
        result
    }

    fn send(&self, bytes: &[u8], dest: SocketAddr, kind: &'static str) {
        match self.socket.send_to(bytes, dest) {
            Ok(_) => self.stats.update(|s| bump(&mut s.sent, kind)),
            Err(e) => {
                debug!(%dest, error = %e, "reply not sent");
                self.stats.update(|s| bump(&mut s.dropped, "send-failed"));
            }
        }
    }

    fn handle(&mut self, packet: &[u8], from: SocketAddrV6) -> Option<Ready> {
        let msg = match wire::decode(packet) {
            Ok(m) => m,
            Err(e) => {
                debug!(src = %from.ip(), error = %e, "malformed DHCPv6 message dropped");
                self.stats.update(|s| bump(&mut s.dropped, "malformed"));
                return None;
            }
        };
        let outer_kind = match &msg {
            Message::Client(c) => type_name(c.msg_type),
            Message::Relay(r) => type_name(r.msg_type),
        };
        self.stats.update(|s| bump(&mut s.received, outer_kind));
        let Some((client, hops)) = relay::unwrap(msg) else {
            self.stats.update(|s| bump(&mut s.dropped, "bad-relay"));
            return None;
        };
        let duid = client.client_id().unwrap_or_default();
        if !self.limiter.allow(*from.ip(), duid, Instant::now()) {
            self.stats.update(|s| bump(&mut s.dropped, "rate-limited"));
            return None;
        }
        // Several servers: a client's Solicit (Rebind, Confirm, Information-request) is another
        // live server's to answer unless its DUID hashes here. Request, Renew, Release and
        // Decline name their server.
        if let Some(me) = &self.me
            && matches!(
                client.msg_type,
                MsgType::Solicit | MsgType::Rebind | MsgType::Confirm | MsgType::InformationRequest
            )
            && !crate::shared::answers(&self.live, me, duid)
        {
            self.stats.update(|s| bump(&mut s.dropped, "another-servers-share"));
            return None;
        }
        let inc = Incoming { msg: &client, relays: &hops, source: *from.ip(), now: unix_now() };
        // What the message's IAs held before it (at most the IAs the engine answers): to put
        // the table back when its Reply is withheld (the engine applies its changes at once),
        // and for a degraded shared server, which answers a Renew or Rebind only when nothing
        // moves. Withheld Replies are undone, so what is held here was committed or is queued.
        // Only a shared store withholds: the journal's server copies nothing per message.
        let before: Vec<(metal6_dhcp6::bindings::BindingKey, Option<metal6_dhcp6::bindings::Binding>)> = if self.shared
        {
            client
                .ia_nas()
                .take(metal6_dhcp6::policy::MAX_IAS_PER_MESSAGE)
                .map(|ia| {
                    let key = metal6_dhcp6::bindings::BindingKey { duid: duid.to_vec(), iaid: ia.iaid };
                    let held = self.bindings.get(&key).cloned();
                    (key, held)
                })
                .collect()
        } else {
            Vec::new()
        };
        let renewing = matches!(client.msg_type, MsgType::Renew | MsgType::Rebind);
        let origin = (duid, client.xid, u8::from(client.msg_type));
        let span =
            tracing::debug_span!("dhcpv6", xid = %hex3(client.xid), msg = type_name(client.msg_type), src = %from.ip());
        let _g = span.enter();
        match self.engine.handle(&inc, &mut self.bindings) {
            Outcome::Silent { why, events } => {
                let rows = self.record(&events, &origin);
                self.events_only(rows);
                let reason =
                    serde_json::to_value(why).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                if why == Silence::UnknownClient && self.first_sighting(duid) {
                    // A typo'd MAC in the inventory shows up here: say it where operators look.
                    let mac = Duid::from_bytes(duid.to_vec()).ok().and_then(|d| d.mac()).map(|m| m.to_string());
                    info!(
                        duid = %metal6_dhcp6::policy::hex(duid),
                        mac = mac.as_deref().unwrap_or("-"),
                        src = %from.ip(),
                        "unknown client (not in the inventory) ignored; logged once per client"
                    );
                }
                debug!(reason, "no answer");
                self.stats.update(|s| bump(&mut s.dropped, &reason));
                None
            }
            Outcome::Reply { reply, changes, events } => {
                let rows = self.record(&events, &origin);
                let kind = type_name(reply.msg_type);
                let relayed = !hops.is_empty();
                let bytes = relay::wrap(reply, &hops).encode();
                // Direct clients: back to their link-local address on our interface. Relayed:
                // to the relay that sent it, on the server port.
                let dest = if relayed {
                    SocketAddr::V6(SocketAddrV6::new(*from.ip(), SERVER_PORT, 0, 0))
                } else {
                    let scope = if from.ip().is_unicast_link_local() { self.ifindex } else { from.scope_id() };
                    SocketAddr::V6(SocketAddrV6::new(*from.ip(), from.port(), 0, scope))
                };
                if changes.is_empty() {
                    self.events_only(rows);
                    Some(Ready::Now(bytes, dest, kind))
                } else {
                    let renewal = renewing
                        && changes.iter().all(|c| match c {
                            Change::Upsert(b) => before.iter().any(|(k, held)| {
                                *k == b.key && held.as_ref().is_some_and(|h| h.addr == b.addr && h.expires > inc.now)
                            }),
                            Change::Remove(_) => false,
                        });
                    let undo =
                        before.into_iter().map(|(k, held)| held.map_or(Change::Remove(k), Change::Upsert)).collect();
                    Some(Ready::AfterCommit(Pending {
                        changes,
                        events: rows,
                        reply: Some((bytes, dest, kind)),
                        renewal,
                        undo,
                    }))
                }
            }
        }
    }

    /// True the first time this DUID is seen unknown (bounded memory: the set is cleared
    /// when full, so a flood of fake DUIDs costs log lines at most once per 4,096).
    fn first_sighting(&mut self, duid: &[u8]) -> bool {
        if self.unknown_seen.len() >= UNKNOWN_LOGGED {
            self.unknown_seen.clear();
        }
        self.unknown_seen.insert(duid.to_vec())
    }

    /// Logs and stores the events locally; on a shared store, returns them with ids made
    /// from the message they came from (`origin`: client DUID, xid, message type), the same on
    /// every server that saw it and for every retransmission.
    fn record(&mut self, events: &[Event], origin: &(&[u8], [u8; 3], u8)) -> Vec<metal6_db::leases::EventRow> {
        let mut rows = Vec::new();
        for e in events {
            info!(event = ?e, "node event");
            let Some(stored) = self.events.record("dhcpv6", e) else { continue };
            if !self.shared {
                continue;
            }
            let Ok(plain) = serde_json::to_value(e) else { continue };
            let node = stored.get("node").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
            let ts_ms = stored.get("ts_ms").and_then(serde_json::Value::as_u64).unwrap_or_default();
            let id = metal6_db::leases::dhcp_event_id(origin.0, origin.1, origin.2, &plain);
            rows.push(metal6_db::leases::EventRow { id, node, ts_ms, body: stored });
        }
        rows
    }

    fn events_only(&mut self, rows: Vec<metal6_db::leases::EventRow>) {
        if !rows.is_empty() {
            self.outbox.push(Pending {
                changes: Vec::new(),
                events: rows,
                reply: None,
                renewal: false,
                undo: Vec::new(),
            });
        }
    }
}

enum Ready {
    Now(Vec<u8>, SocketAddr, &'static str),
    AfterCommit(Pending),
}

fn hex3(x: [u8; 3]) -> String {
    format!("{:02x}{:02x}{:02x}", x[0], x[1], x[2])
}

/// The group-commit writer: takes the pending replies that arrive within [`LINGER`] of the
/// first (up to [`MAX_BATCH`]), makes their changes durable in one write + fdatasync, then
/// sends the replies. Ends when the service drops its end of the queue.
fn spawn_writer(
    mut journal: Journal,
    rx: std::sync::mpsc::Receiver<Pending>,
    socket: UdpSocket,
    stats: Arc<Stats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("lease-journal".into()).spawn(move || {
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        let mut changes: Vec<Change> = Vec::with_capacity(MAX_BATCH);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            // Asleep rather than waiting on the queue: a waiting receiver is woken (a futex
            // call and a context switch) by every message, a sleeping one by none.
            std::thread::sleep(LINGER);
            // A closed queue ends the batch too; the outer `recv` sees it once it is written.
            while batch.len() < MAX_BATCH
                && let Ok(p) = rx.try_recv()
            {
                batch.push(p);
            }
            changes.clear();
            changes.extend(batch.iter().flat_map(|p| p.changes.iter().cloned()));
            match journal.commit(&changes, unix_now()) {
                Ok(()) => {
                    let (mut sent, mut failed) = (Vec::<&'static str>::new(), 0u64);
                    for p in batch.drain(..) {
                        let Some((bytes, dest, kind)) = &p.reply else { continue };
                        match socket.send_to(bytes, *dest) {
                            Ok(_) => sent.push(kind),
                            Err(_) => failed += 1,
                        }
                    }
                    // One lock per batch: the receive loop updates the same counters.
                    stats.update(|s| {
                        s.journal_batches += 1;
                        s.journal_changes += changes.len() as u64;
                        for kind in sent {
                            bump(&mut s.sent, kind);
                        }
                        if failed > 0 {
                            *s.dropped.entry("send-failed".into()).or_default() += failed;
                        }
                    });
                }
                Err(e) => {
                    // Not durable, so not acknowledged: the clients retransmit and get the
                    // same (sticky) answer once the disk works again.
                    warn!(error = %crate::error_chain(&e), "lease journal write failed; replies withheld");
                    stats.update(|s| *s.dropped.entry("journal-failed".into()).or_default() += batch.len() as u64);
                    batch.clear();
                }
            }
        }
    })
}
