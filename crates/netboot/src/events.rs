//! Node events: the timeline of every node, shared by all services.
//!
//! Events are JSON objects with `ts_ms`, `source` (`dhcpv6`, `http`, `node`), `node` and
//! `kind`, plus what the kind says. They are appended to `events.jsonl` (flushed, not synced:
//! history, not state) and kept in memory per node, bounded, for the timeline API; at start the
//! file is replayed so timelines survive restarts.
//!
//! Bounded: memory holds at most [`MAX_PER_NODE`] events per node (and only inventory nodes
//! have timelines), and the file is rewritten from memory when it passes
//! [`COMPACT_AT_BYTES`] (complete temporary file, synced, renamed over the old one), so a
//! chatty or hostile node cannot fill the disk. Unreadable lines (bad UTF-8, broken JSON)
//! never stop the server: they are skipped, counted, and the file is copied aside first.

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

/// The event log is compacted when it grows past this.
pub const COMPACT_AT_BYTES: u64 = 64 << 20;

/// Fields the server sets on every event; a node's report cannot choose them.
const SERVER_FIELDS: [&str; 2] = ["ts_ms", "source"];

#[derive(Debug)]
pub struct EventStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    /// Bytes in the file now.
    size: u64,
    compact_at: u64,
    by_node: HashMap<String, VecDeque<Value>>,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub events: usize,
    /// 1-based numbers of lines that were not a JSON event (at most the first 100).
    pub corrupt: Vec<usize>,
    /// Where the file was copied before those lines were dropped.
    pub quarantined: Option<PathBuf>,
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

/// The phase an event puts a node in: an explicit `phase` (installer reports) wins; otherwise
/// derived from the kind.
fn phase_of(e: &Value) -> Option<String> {
    if let Some(p) = e.get("phase").and_then(Value::as_str) {
        return Some(p.to_owned());
    }
    let kind = e.get("kind").and_then(Value::as_str)?;
    Some(match kind {
        "leased" => match e.get("stage").and_then(Value::as_str) {
            Some("firmware-http" | "firmware-pxe") => "firmware-dhcp".into(),
            Some("ipxe") => "ipxe".into(),
            _ => "dhcp".into(),
        },
        "boot-fetch" => "netboot".into(),
        "declined" => "address-conflict".into(),
        "identity-conflict" => "identity-conflict".into(),
        _ => return None,
    })
}

impl EventStore {
    pub fn open(dir: &Path) -> std::io::Result<(Self, OpenReport)> {
        Self::open_with(dir, COMPACT_AT_BYTES)
    }

    pub fn open_with(dir: &Path, compact_at: u64) -> std::io::Result<(Self, OpenReport)> {
        let path = dir.join("events.jsonl");
        let mut by_node: HashMap<String, VecDeque<Value>> = HashMap::new();
        let mut report = OpenReport::default();
        let mut bad = 0usize;
        match File::open(&path) {
            Ok(f) => {
                for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
                    let line = line?;
                    if line.is_empty() {
                        continue;
                    }
                    let node = serde_json::from_slice::<Value>(&line)
                        .ok()
                        .and_then(|v| Some((v.get("node")?.as_str()?.to_owned(), v)));
                    match node {
                        Some((node, v)) => {
                            report.events += 1;
                            push_bounded(by_node.entry(node).or_default(), v);
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
            std::fs::copy(&path, &copy)?;
            report.quarantined = Some(copy);
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let mut inner = Inner { dir: dir.to_owned(), file, size, compact_at, by_node };
        if bad > 0 || size >= compact_at {
            // Drop the damaged lines (a copy is kept) and anything past the per-node bound.
            inner.compact()?;
        }
        Ok((EventStore { inner: Mutex::new(inner) }, report))
    }

    /// Records an event (any serializable object with a `node` field) from `source`.
    pub fn record<E: Serialize>(&self, source: &str, event: &E) {
        let Ok(Value::Object(fields)) = serde_json::to_value(event) else { return };
        self.record_fields(source, fields);
    }

    /// Records `fields` as an event from `source`. The time and source are the server's:
    /// fields of those names in `fields` are dropped.
    pub fn record_fields(&self, source: &str, mut fields: Map<String, Value>) {
        for f in SERVER_FIELDS {
            fields.remove(f);
        }
        let mut obj = Map::new();
        obj.insert("ts_ms".into(), now_ms().into());
        obj.insert("source".into(), source.into());
        obj.extend(fields);
        let v = Value::Object(obj);
        let Some(node) = v.get("node").and_then(Value::as_str).map(str::to_owned) else { return };
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        // A panic elsewhere while holding the lock must not silence every timeline after it.
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match inner.file.write_all(&line) {
            Ok(()) => inner.size += line.len() as u64,
            Err(e) => tracing::warn!(error = %e, "cannot append node event"),
        }
        push_bounded(inner.by_node.entry(node).or_default(), v);
        if inner.size >= inner.compact_at
            && let Err(e) = inner.compact()
        {
            tracing::warn!(error = %e, "cannot compact the event log");
        }
    }

    /// Bytes in the event log now.
    pub fn file_size(&self) -> u64 {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).size
    }

    pub fn timeline(&self, node: &str) -> Vec<Value> {
        self.inner
            .lock()
            .map(|i| i.by_node.get(node).map(|q| q.iter().cloned().collect()).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn phase(&self, node: &str) -> Option<Phase> {
        let inner = self.inner.lock().ok()?;
        let q = inner.by_node.get(node)?;
        let last_event_ms = q.back()?.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
        let mut current: Option<(String, u64)> = None;
        for e in q {
            let Some(p) = phase_of(e) else { continue };
            let ts = e.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
            if current.as_ref().is_none_or(|(c, _)| *c != p) {
                current = Some((p, ts));
            }
        }
        let (phase, since_ms) = current.unwrap_or_else(|| ("seen".into(), last_event_ms));
        Some(Phase { phase, since_ms, last_event_ms, events: q.len() })
    }
}

impl Inner {
    /// Rewrites the file from memory: every node's newest events, oldest first.
    fn compact(&mut self) -> std::io::Result<()> {
        let path = self.dir.join("events.jsonl");
        let tmp = self.dir.join("events.jsonl.tmp");
        let mut all: Vec<&Value> = self.by_node.values().flatten().collect();
        all.sort_by_key(|v| v.get("ts_ms").and_then(Value::as_u64).unwrap_or(0));
        {
            let mut w = std::io::BufWriter::new(File::create(&tmp)?);
            for v in all {
                serde_json::to_writer(&mut w, v)?;
                w.write_all(b"\n")?;
            }
            w.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.size = self.file.metadata()?.len();
        // A log whose live part alone passes the limit would compact on every event.
        self.compact_at = self.compact_at.max(self.size.saturating_mul(2));
        Ok(())
    }
}

fn push_bounded(q: &mut VecDeque<Value>, v: Value) {
    if q.len() >= MAX_PER_NODE {
        q.pop_front();
    }
    q.push_back(v);
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
