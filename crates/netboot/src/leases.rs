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
//! Any other line that does not parse means the file was damaged by something else: the
//! whole file is first copied aside (`leases.jsonl.corrupt-UNIXTIME`) and the damage logged
//! as an error naming the lines, so compaction never deletes the only copy of a binding.
//!
//! While running, the journal keeps a mirror of what is durable and compacts itself when
//! the file has grown to [`COMPACT_MIN_BYTES`] and to four times the live table's size, so a
//! flood of changes cannot fill the disk. Compaction is crash-safe: the new file is complete
//! and synced before it replaces the old one, and either holds every acknowledged binding.

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

/// Below this the journal is never compacted while running (a few thousand records).
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// What the file holds, replayed: the source of a compaction.
    durable: Bindings,
    /// Bytes in the file now, and right after the last compaction.
    size: u64,
    compacted_size: u64,
    compactions: u64,
    /// The file may not end where `size` says (a failed write or reopen): rewrite it from
    /// `durable` before the next append.
    damaged: bool,
}

/// What loading found, for the start-up log line.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub records: usize,
    pub live: usize,
    pub expired: usize,
    /// A last line cut short by a crash (its reply was never sent).
    pub torn: usize,
    /// Unparsable lines before the last: damage from outside. Their 1-based line numbers.
    pub corrupt: Vec<usize>,
    /// Where the damaged file was copied before compaction.
    pub quarantined: Option<PathBuf>,
    /// Why it could not be copied (the file was then left as it was, uncompacted).
    pub quarantine_failed: Option<String>,
}

impl Journal {
    /// Opens (creating) `dir/leases.jsonl`, replays it into a binding table and compacts it.
    pub fn open(dir: &Path, now: u64) -> Result<(Journal, Bindings, LoadReport), JournalError> {
        let path = dir.join("leases.jsonl");
        let open_err = |source| JournalError::Open { path: path.clone(), source };
        fs::create_dir_all(dir).map_err(open_err)?;
        let mut bindings = Bindings::default();
        let mut report = LoadReport::default();
        match File::open(&path) {
            Ok(f) => {
                let mut bad = Vec::new();
                let mut lines = 0;
                for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
                    let line = line.map_err(open_err)?;
                    lines = i + 1;
                    if line.is_empty() {
                        continue;
                    }
                    match serde_json::from_slice::<Change>(&line) {
                        Ok(c) => {
                            report.records += 1;
                            bindings.apply(&c);
                        }
                        Err(_) => bad.push(i + 1),
                    }
                }
                // Only the very last line can be torn by our own crash.
                if bad.last() == Some(&lines) && !ends_with_newline(&path).map_err(open_err)? {
                    bad.pop();
                    report.torn = 1;
                }
                if !bad.is_empty() {
                    let copy = dir.join(format!("leases.jsonl.corrupt-{now}"));
                    // On a full disk the copy fails: then the damaged file stays as it is (not
                    // compacted, so nothing in it is lost) and the server still starts.
                    match fs::copy(&path, &copy) {
                        Ok(_) => report.quarantined = Some(copy),
                        Err(e) => report.quarantine_failed = Some(e.to_string()),
                    }
                    report.corrupt = bad;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_err(e)),
        }
        report.expired = bindings.prune_expired(now);
        report.live = bindings.len();
        if report.quarantine_failed.is_none() {
            compact(dir, &path, &bindings).map_err(|source| JournalError::Write { path: path.clone(), source })?;
        }
        let file = OpenOptions::new().append(true).open(&path).map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        let journal = Journal {
            dir: dir.to_owned(),
            path,
            file,
            buf: Vec::with_capacity(64 * 1024),
            durable: bindings.clone(),
            size,
            compacted_size: size,
            compactions: 0,
            damaged: false,
        };
        Ok((journal, bindings, report))
    }

    /// Appends a batch and syncs it. Returns once the batch is durable. `now` drops expired
    /// bindings when the batch makes the file due for compaction.
    pub fn commit(&mut self, changes: &[Change], now: u64) -> Result<(), JournalError> {
        self.buf.clear();
        for c in changes {
            // Serializing our own plain structs cannot fail.
            if serde_json::to_writer(&mut self.buf, c).is_ok() {
                self.buf.push(b'\n');
            }
        }
        // After a failed write the file may end in part of a line: rewrite it from what is
        // known durable before appending, or the next batch's first record would be glued to
        // that fragment and lost at the next start.
        if self.damaged {
            self.compact_now(now)?;
        }
        let path = &self.path;
        let err = |source| JournalError::Write { path: path.clone(), source };
        if let Err(e) = self.file.write_all(&self.buf).and_then(|()| self.file.sync_data()) {
            // Cut the fragment off now if we can; otherwise the next commit rewrites the file.
            self.damaged = self.file.set_len(self.size).and_then(|()| self.file.sync_data()).is_err();
            return Err(err(e));
        }
        self.size += self.buf.len() as u64;
        for c in changes {
            self.durable.apply(c);
        }
        if self.size >= COMPACT_MIN_BYTES && self.size >= 4 * self.compacted_size.max(1) {
            // The batch is durable already: a failed compaction must not withhold its replies.
            // Try again once the file has grown by as much again.
            if let Err(e) = self.compact_now(now) {
                tracing::warn!(error = %crate::error_chain(&e), "lease journal compaction failed; will retry later");
                self.compacted_size = self.size;
            }
        }
        Ok(())
    }

    /// Rewrites the file with the live bindings only.
    fn compact_now(&mut self, now: u64) -> Result<(), JournalError> {
        let err = |source| JournalError::Write { path: self.path.clone(), source };
        self.durable.prune_expired(now);
        // From here until the new file is open for appending, the handle may point at a file
        // that is no longer the journal (the rename may have happened before a later step
        // failed): nothing may be appended until a rewrite succeeds.
        self.damaged = true;
        compact(&self.dir, &self.path, &self.durable).map_err(err)?;
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(err)?;
        self.size = self.file.metadata().map_err(err)?.len();
        self.damaged = false;
        self.compacted_size = self.size;
        self.compactions += 1;
        Ok(())
    }

    /// Bytes in the file and compactions done since start, for the metrics.
    pub fn usage(&self) -> (u64, u64) {
        (self.size, self.compactions)
    }
}

fn ends_with_newline(path: &Path) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
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
            j.commit(&[Change::Upsert(b(1, 1000)), Change::Upsert(b(2, 150)), Change::Upsert(b(3, 1000))], 100)
                .expect("commit");
            j.commit(&[Change::Remove(b(3, 0).key)], 100).expect("commit");
        }
        // A crash in the middle of a write leaves a partial line.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("leases.jsonl")).expect("append");
        f.write_all(b"{\"Upsert\":{\"key\":").expect("write");
        let (_, bindings, report) = Journal::open(dir.path(), 200).expect("reopen");
        assert_eq!((report.records, report.torn, report.expired, report.live), (4, 1, 1, 1));
        assert!(bindings.get(&b(1, 0).key).is_some());
        let text = fs::read_to_string(dir.path().join("leases.jsonl")).expect("read");
        assert_eq!(text.lines().count(), 1, "compacted to the live binding");
        assert!(report.corrupt.is_empty() && report.quarantined.is_none());
    }

    /// A write that failed half-way leaves part of a line at the end. The next batch must not
    /// be glued to it (its first record would be unreadable, and quarantined at the next start).
    #[test]
    fn a_fragment_left_by_a_failed_write_does_not_swallow_the_next_batch() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut j, _, _) = Journal::open(dir.path(), 100).expect("open");
        j.commit(&[Change::Upsert(b(1, 1000))], 100).expect("commit");
        // What a short write followed by ENOSPC leaves, as the journal sees it afterwards.
        OpenOptions::new()
            .append(true)
            .open(dir.path().join("leases.jsonl"))
            .and_then(|mut f| f.write_all(b"{\"Upsert\":{\"key\""))
            .expect("fragment");
        j.damaged = true;
        j.commit(&[Change::Upsert(b(2, 1000)), Change::Upsert(b(3, 1000))], 100).expect("commit");
        drop(j);
        let (_, bindings, report) = Journal::open(dir.path(), 100).expect("reopen");
        assert_eq!((bindings.len(), report.torn, report.corrupt.len()), (3, 0, 0), "{report:?}");
    }

    /// A damaged line in the middle (not our torn tail) once was skipped and then deleted for
    /// good by compaction. Now the file is copied aside first and the lines are named.
    #[test]
    fn damage_in_the_middle_is_quarantined_not_deleted() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("leases.jsonl");
        let good = serde_json::to_string(&Change::Upsert(b(1, 1000))).expect("json");
        let original = [good.as_bytes(), b"\n{\"Upsert\":\xff garbage\n", good.as_bytes(), b"\n"].concat();
        fs::write(&path, &original).expect("write");
        let (_, bindings, report) = Journal::open(dir.path(), 200).expect("open");
        assert_eq!(bindings.len(), 1);
        assert_eq!(report.corrupt, vec![2]);
        let copy = report.quarantined.expect("quarantined");
        assert_eq!(fs::read(copy).expect("copy"), original);
    }

    #[test]
    fn a_journal_that_cannot_be_read_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().expect("tmp");
        // A directory where the file should be: open succeeds, reading fails (EISDIR).
        fs::create_dir(dir.path().join("leases.jsonl")).expect("mkdir");
        assert!(matches!(Journal::open(dir.path(), 0), Err(JournalError::Open { .. })));
    }

    /// A flood of changes for few bindings: the file stays within a few times the compaction
    /// threshold instead of growing with every change.
    #[test]
    fn the_journal_compacts_itself_while_running() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut j, _, _) = Journal::open(dir.path(), 100).expect("open");
        let batch: Vec<Change> = (0..64).map(|i| Change::Upsert(b(i, 1000 + u64::from(i)))).collect();
        for _ in 0..2000 {
            j.commit(&batch, 100).expect("commit");
        }
        let (size, compactions) = j.usage();
        assert!(compactions > 0);
        assert!(size < 4 * COMPACT_MIN_BYTES, "journal at {size} bytes");
        let on_disk = fs::metadata(dir.path().join("leases.jsonl")).expect("meta").len();
        assert_eq!(on_disk, size);
        drop(j);
        let (_, bindings, report) = Journal::open(dir.path(), 100).expect("reopen");
        assert_eq!((bindings.len(), report.torn, report.corrupt.len()), (64, 0, 0));
    }
}
