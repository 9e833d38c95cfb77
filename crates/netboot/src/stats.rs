//! Counters of what the server saw and did, written to `stats.json` in the state directory
//! (and, with the HTTP server, exported as Prometheus metrics).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// Panics anywhere in the process (set by the binary's panic hook), for `/metrics`.
pub static PANICS: AtomicU64 = AtomicU64::new(0);

use serde::Serialize;

#[derive(Debug, Default, Serialize, Clone)]
pub struct Snapshot {
    /// Messages received, by type (`solicit`, `relay-forw`, ...).
    pub received: BTreeMap<String, u64>,
    /// Replies sent, by type.
    pub sent: BTreeMap<String, u64>,
    /// Messages dropped, by reason (`malformed`, `rate-limited`, `unknown-client`, ...).
    pub dropped: BTreeMap<String, u64>,
    pub leases: u64,
    pub journal_batches: u64,
    pub journal_changes: u64,
    pub ra_sent: u64,
    pub rs_received: u64,
    /// Panics caught in tasks since start (each logged with its location).
    pub panics: u64,
    /// Stale tokens presented: two hosts claim one node (`identity-conflict` events).
    pub identity_conflicts: u64,
    /// Requests refused by a limit, by limit (`tftp-busy`, `tftp-per-source`,
    /// `http-per-source`).
    pub refused: BTreeMap<String, u64>,
    /// HTTPS handshakes by outcome: `ok`, `rejected-by-client` (the client sent an alert: it
    /// does not trust our certificate), `failed` (anything else: timeout, garbage, no shared
    /// cipher).
    pub tls: BTreeMap<String, u64>,
    /// The shared state database (`--state postgres://…`); all zero with the lease journal.
    pub db: DbStats,
}

#[derive(Debug, Default, Serialize, Clone)]
pub struct DbStats {
    /// The database cannot be reached: only renewals of known bindings are answered.
    pub degraded: bool,
    /// Renewals answered while degraded.
    pub degraded_replies: u64,
    /// Of those, waiting to be written.
    pub deferred: u64,
    /// Events dropped while degraded because too many waited.
    pub events_lost: u64,
    /// Replies withheld because the database holds another binding.
    pub conflicts: u64,
    /// Changes other servers wrote, taken in.
    pub followed: u64,
    /// Nodes refused because another inventory generation describes them differently.
    pub refused_nodes: u64,
}

/// Shared counters. A std Mutex: every critical section is a map increment, never held across
/// an await, and contention is one DHCP task plus the writer.
#[derive(Debug, Default)]
pub struct Stats(Mutex<Snapshot>);

impl Stats {
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }
    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        s.panics = PANICS.load(std::sync::atomic::Ordering::Relaxed);
        s
    }
}

pub fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_owned()).or_default() += 1;
}
