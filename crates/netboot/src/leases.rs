//! The lease journal: every acknowledged binding survives a crash.
//!
//! Durability choice: an append-only file of JSON lines, one [`Change`] per line. A batch of
//! changes is written and `fdatasync`ed *before* any reply announcing them is sent, so a reply
//! a client has seen is always on disk — `kill -9` (and a power cut, on a disk that honours
//! flushes) loses no acknowledged lease. Batching (group commit) keeps this fast: while one
//! sync runs, further replies queue and share the next sync, so the sync cost is paid per
//! batch, not per client. At start-up the journal is replayed, expired bindings dropped, and
//! the file rewritten compactly (write to a temporary file, fsync, rename, fsync the directory).
//!
//! A torn last line (crash mid-write) is ignored with a warning: its reply was never sent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use metal6_dhcp6::bindings::{Bindings, Change};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open lease journal {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write lease journal {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

/// What loading found, for the start-up log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    pub records: usize,
    pub live: usize,
    pub expired: usize,
    pub torn: usize,
}

impl Journal {
    /// Opens (creating) `dir/leases.jsonl`, replays it into a binding table and compacts it.
    pub fn open(dir: &Path, now: u64) -> Result<(Journal, Bindings, LoadReport), JournalError> {
        let path = dir.join("leases.jsonl");
        let open_err = |source| JournalError::Open { path: path.clone(), source };
        fs::create_dir_all(dir).map_err(open_err)?;
        let mut bindings = Bindings::default();
        let mut report = LoadReport::default();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).split(b'\n') {
                let line = line.map_err(open_err)?;
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Change>(&line) {
                    Ok(c) => {
                        report.records += 1;
                        bindings.apply(&c);
                    }
                    Err(_) => report.torn += 1,
                }
            }
        }
        let expired: Vec<Change> =
            bindings.iter().filter(|b| b.expires <= now).map(|b| Change::Remove(b.key.clone())).collect();
        report.expired = expired.len();
        for c in &expired {
            bindings.apply(c);
        }
        report.live = bindings.len();
        compact(dir, &path, &bindings).map_err(|source| JournalError::Write { path: path.clone(), source })?;
        let file = OpenOptions::new().append(true).open(&path).map_err(open_err)?;
        Ok((Journal { path, file, buf: Vec::with_capacity(64 * 1024) }, bindings, report))
    }

    /// Appends a batch and syncs it. Returns once the batch is durable.
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), JournalError> {
        self.buf.clear();
        for c in changes {
            // Serializing our own plain structs cannot fail.
            if serde_json::to_writer(&mut self.buf, c).is_ok() {
                self.buf.push(b'\n');
            }
        }
        let path = &self.path;
        let err = |source| JournalError::Write { path: path.clone(), source };
        self.file.write_all(&self.buf).map_err(err)?;
        self.file.sync_data().map_err(err)
    }
}

fn compact(dir: &Path, path: &Path, bindings: &Bindings) -> io::Result<()> {
    let tmp = dir.join("leases.jsonl.tmp");
    {
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        let mut live: Vec<_> = bindings.iter().collect();
        live.sort_by(|a, b| a.key.cmp(&b.key));
        for b in live {
            serde_json::to_writer(&mut f, &Change::Upsert(b.clone()))?;
            f.write_all(b"\n")?;
        }
        f.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use metal6_dhcp6::bindings::{Binding, BindingKey};

    fn b(iaid: u32, expires: u64) -> Binding {
        Binding {
            key: BindingKey { duid: vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6], iaid },
            addr: "fd00::100".parse().expect("a"),
            node: Some("n1".into()),
            expires,
        }
    }

    #[test]
    fn replay_compact_and_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (mut j, bindings, _) = Journal::open(dir.path(), 100).expect("open");
            assert!(bindings.is_empty());
            j.commit(&[Change::Upsert(b(1, 1000)), Change::Upsert(b(2, 150)), Change::Upsert(b(3, 1000))])
                .expect("commit");
            j.commit(&[Change::Remove(b(3, 0).key)]).expect("commit");
        }
        // A crash in the middle of a write leaves a partial line.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("leases.jsonl")).expect("append");
        f.write_all(b"{\"Upsert\":{\"key\":").expect("write");
        let (_, bindings, report) = Journal::open(dir.path(), 200).expect("reopen");
        assert_eq!((report.records, report.torn, report.expired, report.live), (4, 1, 1, 1));
        assert!(bindings.get(&b(1, 0).key).is_some());
        let text = fs::read_to_string(dir.path().join("leases.jsonl")).expect("read");
        assert_eq!(text.lines().count(), 1, "compacted to the live binding");
    }
}
