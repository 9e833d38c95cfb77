//! Node events: the timeline of every node, shared by all services.
//!
//! Events are JSON objects with `ts_ms`, `source` (`dhcpv6`, `http`, `node`), `node` and
//! `kind`, plus what the kind says. They are appended to `events.jsonl` (flushed, not synced:
//! history, not state) and kept in memory per node, bounded, for the timeline API; at start the
//! file is replayed so timelines survive restarts.
//!
//! Bounded: memory holds each node's newest events up to [`MAX_PER_NODE`] events and
//! [`MAX_BYTES_PER_NODE`] bytes of JSON (kept as text, so the bound is in bytes, not in parsed
//! values: a 16 KiB report of nested arrays would be megabytes as `serde_json::Value`), and
//! only inventory nodes have timelines. The file is rewritten from memory when it passes
//! [`COMPACT_AT_BYTES`] (complete temporary file, synced, renamed over the old one), so a
//! chatty or hostile node can fill neither memory nor the disk. A node's phase is kept as
//! events arrive, so reading it costs nothing. Unreadable lines (bad UTF-8, broken JSON) never
//! stop the server: they are skipped, counted, and the file is copied aside first (if even
//! that fails, the file is kept as it is).

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

/// Per node, in memory and after a compaction in the file.
pub const MAX_PER_NODE: usize = 10_000;

/// Bytes of event JSON kept per node (the newest events).
pub const MAX_BYTES_PER_NODE: usize = 1 << 20;

/// The event log is compacted when it grows past this.
pub const COMPACT_AT_BYTES: u64 = 64 << 20;

/// Fields the server sets on every event; a node's report cannot choose them.
const SERVER_FIELDS: [&str; 2] = ["ts_ms", "source"];

/// Events a live subscriber (the dashboard's event stream) may fall behind by before it is
/// told to resync: the feed holds at most this many, whatever the number of subscribers.
pub const FEED_CAPACITY: usize = 1024;

#[derive(Debug)]
pub struct EventStore {
    inner: Mutex<Inner>,
    /// Every recorded event as its JSON line, for live subscribers.
    feed: tokio::sync::broadcast::Sender<std::sync::Arc<str>>,
    /// Where events go to be shared with other servers (`shared::spawn_event_sink`), when
    /// the state is shared. DHCPv6 events do not go here: they are committed with their Reply.
    sink: std::sync::OnceLock<std::sync::mpsc::SyncSender<SinkItem>>,
}

/// An event for the shared store, and who waits for its commit (`true`: committed).
pub type SinkItem = (Value, Option<tokio::sync::oneshot::Sender<bool>>);

/// Event ids remembered per node, to take a retried report once.
const IDS_PER_NODE: usize = 256;

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    /// Bytes in the file now.
    size: u64,
    compact_at: u64,
    by_node: HashMap<String, Timeline>,
}

/// One node's newest events as JSON text, and its phase.
#[derive(Debug, Default)]
struct Timeline {
    events: VecDeque<(u64, Box<str>)>,
    bytes: usize,
    /// The current phase and when it was entered.
    phase: Option<(String, u64)>,
    last_ms: u64,
    /// Ids of the newest events that carried one (a node's retried report has the same id).
    ids: VecDeque<Box<str>>,
}

impl Timeline {
    fn push(&mut self, ts: u64, phase: Option<String>, line: Box<str>) {
        if let Some(p) = phase
            && self.phase.as_ref().is_none_or(|(c, _)| *c != p)
        {
            self.phase = Some((p, ts));
        }
        self.last_ms = ts;
        self.bytes += line.len();
        self.events.push_back((ts, line));
        while self.events.len() > MAX_PER_NODE || (self.bytes > MAX_BYTES_PER_NODE && self.events.len() > 1) {
            if let Some((_, old)) = self.events.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
}

/// What opening found.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub events: usize,
    /// 1-based numbers of lines that were not a JSON event (at most the first 100).
    pub corrupt: Vec<usize>,
    /// Where the file was copied before those lines were dropped.
    pub quarantined: Option<PathBuf>,
    /// Why it could not be copied (the file was then kept as it was).
    pub quarantine_failed: Option<String>,
}

/// A node's current phase, derived from its events.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub phase: String,
    /// When the node entered this phase.
    pub since_ms: u64,
    pub last_event_ms: u64,
    pub events: usize,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The phase an event puts a node in (one definition for serve, lab and status).
fn phase_of(e: &Value) -> Option<String> {
    metal6_render::timeline::phase_of(e).map(str::to_owned)
}

impl EventStore {
    pub fn open(dir: &Path) -> std::io::Result<(Self, OpenReport)> {
        Self::open_with(dir, COMPACT_AT_BYTES)
    }

    pub fn open_with(dir: &Path, compact_at: u64) -> std::io::Result<(Self, OpenReport)> {
        let path = dir.join("events.jsonl");
        let mut by_node: HashMap<String, Timeline> = HashMap::new();
        let mut report = OpenReport::default();
        let mut bad = 0usize;
        match File::open(&path) {
            Ok(f) => {
                for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
                    let line = line?;
                    if line.is_empty() {
                        continue;
                    }
                    let event = serde_json::from_slice::<Value>(&line)
                        .ok()
                        .and_then(|v| Some((v.get("node")?.as_str()?.to_owned(), v)));
                    match event {
                        Some((node, v)) => {
                            report.events += 1;
                            push(&mut by_node, node, &v);
                        }
                        None => {
                            bad += 1;
                            if report.corrupt.len() < 100 {
                                report.corrupt.push(i + 1);
                            }
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if bad > 0 {
            let copy = dir.join(format!("events.jsonl.corrupt-{}", now_ms() / 1000));
            match std::fs::copy(&path, &copy) {
                Ok(_) => report.quarantined = Some(copy),
                Err(e) => report.quarantine_failed = Some(e.to_string()),
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let mut inner = Inner { dir: dir.to_owned(), file, size, compact_at, by_node };
        // Drop the damaged lines (once a copy is kept) and anything past the per-node bounds.
        if (bad > 0 && report.quarantined.is_some()) || size >= compact_at {
            inner.compact_or_back_off();
        }
        let (feed, _) = tokio::sync::broadcast::channel(FEED_CAPACITY);
        Ok((EventStore { inner: Mutex::new(inner), feed, sink: std::sync::OnceLock::new() }, report))
    }

    /// Shares every event recorded from now on (but DHCPv6's) through `tx`.
    pub fn share_with(&self, tx: std::sync::mpsc::SyncSender<SinkItem>) {
        let _ = self.sink.set(tx);
    }

    /// Records an event (any serializable object with a `node` field) from `source`; returns
    /// the event as stored.
    pub fn record<E: Serialize>(&self, source: &str, event: &E) -> Option<Value> {
        let Ok(Value::Object(fields)) = serde_json::to_value(event) else { return None };
        self.record_fields(source, fields)
    }

    /// Records `fields` as an event from `source`. The time and source are the server's:
    /// fields of those names in `fields` are dropped. Returns the event as stored (`None`
    /// when it names no node).
    pub fn record_fields(&self, source: &str, fields: Map<String, Value>) -> Option<Value> {
        let v = stamp(source, fields);
        self.store(&v);
        if source != "dhcpv6"
            && let Some(tx) = self.sink.get()
        {
            // Never waits: a full queue loses this copy for the other servers only (counted
            // by the sink's owner), never the local one.
            let _ = tx.try_send((v.clone(), None));
        }
        v.get("node").is_some_and(Value::is_string).then_some(v)
    }

    /// Records `fields` like [`EventStore::record_fields`]; on a shared state, also returns
    /// what tells when the shared store committed it (`None`: not shared). A retried report
    /// (same `id`) is stored once here and once there, and still confirmed.
    pub fn record_durable(
        &self,
        source: &str,
        fields: Map<String, Value>,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let v = stamp(source, fields);
        self.store(&v);
        let sink = self.sink.get()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A full queue: the receiver sees the sender dropped, and the node is told to retry.
        let _ = sink.try_send((v, Some(tx)));
        Some(rx)
    }

    /// Takes in an event another server recorded (from the shared state database), with its
    /// own time and source.
    pub fn ingest(&self, v: &Value) {
        self.store(v);
    }

    fn store(&self, v: &Value) {
        let Some(node) = v.get("node").and_then(Value::as_str).map(str::to_owned) else { return };
        let mut line = serde_json::to_vec(v).unwrap_or_default();
        line.push(b'\n');
        // A panic elsewhere while holding the lock must not silence every timeline after it.
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = v.get("id").and_then(Value::as_str) {
            let t = inner.by_node.entry(node.clone()).or_default();
            if t.ids.iter().any(|x| **x == *id) {
                return;
            }
            if t.ids.len() >= IDS_PER_NODE {
                t.ids.pop_front();
            }
            t.ids.push_back(id.into());
        }
        match inner.file.write_all(&line) {
            Ok(()) => inner.size += line.len() as u64,
            Err(e) => tracing::warn!(error = %e, "cannot append node event"),
        }
        push(&mut inner.by_node, node, v);
        if inner.size >= inner.compact_at {
            inner.compact_or_back_off();
        }
        drop(inner);
        // Most of the time no page listens: then no copy. A slow subscriber loses the oldest
        // and is told so.
        if self.feed.receiver_count() > 0 {
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            let _ = self.feed.send(std::sync::Arc::from(text.as_ref()));
        }
    }

    /// Every event recorded from now on, as its JSON line.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<str>> {
        self.feed.subscribe()
    }

    /// Bytes in the event log now.
    pub fn file_size(&self) -> u64 {
        self.lock().size
    }

    /// The node's events, oldest first.
    pub fn timeline(&self, node: &str) -> Vec<Value> {
        self.timeline_since(node, 0)
    }

    /// The node's events at or after `since_ms` (what a waiting orchestrator polls: only what
    /// is new, not the whole history every time).
    pub fn timeline_since(&self, node: &str, since_ms: u64) -> Vec<Value> {
        let inner = self.lock();
        let Some(t) = inner.by_node.get(node) else { return Vec::new() };
        // A filter, not a binary search: concurrent services stamp events before they take the
        // lock, and the wall clock can step back, so the list is only nearly in time order.
        t.events.iter().filter(|(ts, _)| *ts >= since_ms).filter_map(|(_, l)| serde_json::from_str(l).ok()).collect()
    }

    pub fn phase(&self, node: &str) -> Option<Phase> {
        let inner = self.lock();
        let t = inner.by_node.get(node)?;
        let (phase, since_ms) = t.phase.clone().unwrap_or_else(|| ("seen".into(), t.last_ms));
        Some(Phase { phase, since_ms, last_event_ms: t.last_ms, events: t.events.len() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The event as stored: the server's time and source first (fields of those names dropped).
fn stamp(source: &str, mut fields: Map<String, Value>) -> Value {
    for f in SERVER_FIELDS {
        fields.remove(f);
    }
    let mut obj = Map::new();
    obj.insert("ts_ms".into(), now_ms().into());
    obj.insert("source".into(), source.into());
    obj.extend(fields);
    Value::Object(obj)
}

fn push(by_node: &mut HashMap<String, Timeline>, node: String, v: &Value) {
    let ts = v.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
    let line = serde_json::to_string(v).unwrap_or_default().into_boxed_str();
    by_node.entry(node).or_default().push(ts, phase_of(v), line);
}

impl Inner {
    /// Compacts; after a failure (a full disk), waits until the file has grown by half again
    /// instead of retrying on every event.
    fn compact_or_back_off(&mut self) {
        if let Err(e) = self.compact() {
            tracing::warn!(error = %e, "cannot compact the event log; will retry later");
            self.compact_at = self.size.saturating_add(self.size / 2).max(self.compact_at);
        }
    }

    /// Rewrites the file from memory: every node's newest events, oldest first.
    fn compact(&mut self) -> std::io::Result<()> {
        let path = self.dir.join("events.jsonl");
        let tmp = self.dir.join("events.jsonl.tmp");
        let mut all: Vec<&(u64, Box<str>)> = self.by_node.values().flat_map(|t| t.events.iter()).collect();
        all.sort_by_key(|(ts, _)| *ts);
        {
            let mut w = std::io::BufWriter::new(File::create(&tmp)?);
            for (_, line) in all {
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")?;
            }
            w.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        // The rename is the commit point: follow the new file whatever happens next.
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.size = self.file.metadata()?.len();
        File::open(&self.dir)?.sync_all()?;
        // A log whose live part alone passes the limit would compact on every event.
        self.compact_at = self.compact_at.max(self.size.saturating_mul(2));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_phase_and_replay() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (s, _) = EventStore::open(dir.path()).expect("open");
            s.record("dhcpv6", &serde_json::json!({"node": "n1", "kind": "leased", "stage": "firmware-http"}));
            s.record(
                "node",
                &serde_json::json!({"node": "n1", "kind": "progress", "phase": "writing-image", "progress": 0.5}),
            );
            s.record(
                "node",
                &serde_json::json!({"node": "n1", "kind": "progress", "phase": "writing-image", "progress": 0.9}),
            );
            s.record("x", &serde_json::json!({"kind": "no node: ignored"}));
            let p = s.phase("n1").expect("phase");
            assert_eq!((p.phase.as_str(), p.events), ("writing-image", 3));
        }
        let (s, report) = EventStore::open(dir.path()).expect("reopen");
        assert_eq!(s.timeline("n1").len(), 3);
        assert_eq!(s.timeline("n1")[0]["source"], "dhcpv6");
        assert!(report.quarantined.is_none());
    }

    /// Reports of a few KiB each, or a flood of them: what the node keeps is bounded in bytes.
    #[test]
    fn a_nodes_timeline_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().expect("tmp");
        let (s, _) = EventStore::open(dir.path()).expect("open");
        let blob = "0,".repeat(8 * 1024);
        for i in 0..400 {
            s.record(
                "node",
                &serde_json::json!({"node": "n1", "kind": "progress", "phase": "writing-image", "i": i, "blob": blob}),
            );
        }
        let t = s.timeline("n1");
        let bytes: usize = t.iter().map(|e| e.to_string().len()).sum();
        assert!(bytes <= MAX_BYTES_PER_NODE, "{bytes} bytes kept");
        assert!(t.len() < 400 && t.last().expect("last")["i"] == 399, "the newest are kept");
        let p = s.phase("n1").expect("phase");
        assert_eq!((p.phase.as_str(), p.events), ("writing-image", t.len()));
    }

    /// One invalid UTF-8 byte once made `serve` refuse to start.
    #[test]
    fn unreadable_lines_are_skipped_and_the_file_kept_aside() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        let original =
            b"{\"node\":\"n1\",\"kind\":\"a\",\"ts_ms\":1}\n\xff\xfe{\n{\"node\":\"n1\",\"kind\":\"b\",\"ts_ms\":2}\n";
        std::fs::write(&path, original).expect("write");
        let (s, report) = EventStore::open(dir.path()).expect("open despite damage");
        assert_eq!(s.timeline("n1").len(), 2);
        assert_eq!(report.corrupt, vec![2]);
        assert_eq!(std::fs::read(report.quarantined.expect("copy")).expect("read"), original);
        let (_, again) = EventStore::open(dir.path()).expect("reopen");
        assert!(again.corrupt.is_empty(), "the damaged line is gone from the live file");
    }

    /// The installer retries a report whose answer it did not get: the same id is one event.
    #[test]
    fn a_retried_report_is_stored_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let (s, _) = EventStore::open(dir.path()).expect("open");
        for _ in 0..3 {
            s.record("node", &serde_json::json!({"node": "n1", "kind": "progress", "id": "a1"}));
        }
        s.record("node", &serde_json::json!({"node": "n1", "kind": "progress", "id": "a2"}));
        s.record("node", &serde_json::json!({"node": "n1", "kind": "progress"}));
        s.record("node", &serde_json::json!({"node": "n1", "kind": "progress"}));
        assert_eq!(s.timeline("n1").len(), 4);
    }

    #[test]
    fn a_report_cannot_choose_its_time_or_source() {
        let dir = tempfile::tempdir().expect("tmp");
        let (s, _) = EventStore::open(dir.path()).expect("open");
        s.record("node", &serde_json::json!({"node": "n1", "kind": "x", "source": "dhcpv6", "ts_ms": 1}));
        let e = &s.timeline("n1")[0];
        assert_eq!(e["source"], "node");
        assert!(e["ts_ms"].as_u64().expect("ts") > 1);
    }

    /// A flood of events: the file is compacted to what memory keeps, and stays bounded.
    #[test]
    fn the_event_log_compacts_itself() {
        let dir = tempfile::tempdir().expect("tmp");
        let limit = 256 * 1024;
        let (s, _) = EventStore::open_with(dir.path(), limit).expect("open");
        let n = 5 * MAX_PER_NODE;
        for i in 0..n {
            s.record("node", &serde_json::json!({"node": "n1", "kind": "progress", "i": i}));
        }
        let text = std::fs::read(dir.path().join("events.jsonl")).expect("read");
        assert_eq!(text.len() as u64, s.file_size());
        let lines = text.iter().filter(|&&b| b == b'\n').count();
        assert!(lines <= 2 * MAX_PER_NODE + 1, "{lines} lines for {n} events: not compacted");
        let (s2, _) = EventStore::open(dir.path()).expect("reopen");
        let t = s2.timeline("n1");
        assert_eq!(t.len(), MAX_PER_NODE);
        assert_eq!(t.last().expect("last")["i"], n - 1);
    }
}
