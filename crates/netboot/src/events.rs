//! Node events: the timeline of every node, shared by all services.
//!
//! Events are JSON objects with `ts_ms`, `source` (`dhcpv6`, `http`, `node`), `node` and
//! `kind`, plus what the kind says. They are appended to `events.jsonl` (flushed, not synced:
//! history, not state) and kept in memory per node, bounded, for the timeline API; at start the
//! file is replayed so timelines survive restarts.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

/// Per node; older events stay in the file.
const MAX_PER_NODE: usize = 10_000;

#[derive(Debug)]
pub struct EventStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    by_node: HashMap<String, VecDeque<Value>>,
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
        _ => return None,
    })
}

impl EventStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("events.jsonl");
        let mut by_node: HashMap<String, VecDeque<Value>> = HashMap::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let Ok(v) = serde_json::from_str::<Value>(&line?) else { continue };
                if let Some(node) = v.get("node").and_then(Value::as_str).map(str::to_owned) {
                    push_bounded(by_node.entry(node).or_default(), v);
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(EventStore { inner: Mutex::new(Inner { file, by_node }) })
    }

    /// Records an event (any serializable object with a `node` field) from `source`.
    pub fn record<E: Serialize>(&self, source: &str, event: &E) {
        let Ok(Value::Object(fields)) = serde_json::to_value(event) else { return };
        self.record_fields(source, fields);
    }

    pub fn record_fields(&self, source: &str, fields: Map<String, Value>) {
        let mut obj = Map::new();
        obj.insert("ts_ms".into(), now_ms().into());
        obj.insert("source".into(), source.into());
        obj.extend(fields);
        let v = Value::Object(obj);
        let Some(node) = v.get("node").and_then(Value::as_str).map(str::to_owned) else { return };
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        let Ok(mut inner) = self.inner.lock() else { return };
        if let Err(e) = inner.file.write_all(&line) {
            tracing::warn!(error = %e, "cannot append node event");
        }
        push_bounded(inner.by_node.entry(node).or_default(), v);
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
            let s = EventStore::open(dir.path()).expect("open");
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
        let s = EventStore::open(dir.path()).expect("reopen");
        assert_eq!(s.timeline("n1").len(), 3);
        assert_eq!(s.timeline("n1")[0]["source"], "dhcpv6");
    }
}
