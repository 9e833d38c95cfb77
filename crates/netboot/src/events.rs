//! Node events as JSON lines in `events.jsonl` (the timeline API of the HTTP server reads
//! them). Events are history, not state: they are flushed but not synced.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug)]
pub struct EventLog {
    file: Option<File>,
}

#[derive(Serialize)]
struct Line<'a, E: Serialize> {
    /// Unix time, milliseconds.
    ts_ms: u128,
    source: &'static str,
    #[serde(flatten)]
    event: &'a E,
}

impl EventLog {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(dir.join("events.jsonl"))?;
        Ok(EventLog { file: Some(file) })
    }

    pub fn append<E: Serialize>(&mut self, event: &E) {
        let Some(f) = self.file.as_mut() else { return };
        let ts_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut line = serde_json::to_vec(&Line { ts_ms, source: "dhcpv6", event }).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = f.write_all(&line) {
            tracing::warn!(error = %e, "cannot append node event");
        }
    }
}
