//! Streaming an image to a block device while hashing it — no temporary copy, resumable —
//! behind two small traits so tests inject short writes, write errors and dropped
//! connections.
//!
//! Architecture Invariant: a disk is bootable only once its whole image is written and its
//! SHA-256 verified. The image's first MiB (protective MBR, primary GPT, the start of the
//! ESP) is zeroed before anything else is written, held in memory while the rest streams,
//! and written last, after the digest matched — so an interrupted or corrupt install leaves
//! a disk that firmware skips, and the node netboots into the installer again.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The head of the image held back until the digest is verified.
pub const HEAD: usize = 1 << 20;
const BUF: usize = 1 << 20;
/// Buffers in flight between the stream and the hasher.
const POOL: usize = 8;

/// Where the image goes: a block device in production, a file or a fault-injecting wrapper
/// in tests.
pub trait Disk {
    fn size(&self) -> u64;
    /// Writes some of `buf` at `offset`; may write fewer bytes than asked (a short write).
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<usize>;
    fn sync(&mut self) -> io::Result<()>;
}

/// Where the image comes from: a fresh stream starting at `offset`, and the image's total
/// length. Called again after a dropped connection.
pub trait Source {
    fn open(&mut self, offset: u64) -> io::Result<(Box<dyn Read + '_>, u64)>;
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the image ({image} bytes) does not fit on the disk ({disk} bytes)")]
    TooLarge { image: u64, disk: u64 },
    #[error("writing the disk at offset {offset}")]
    Disk {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("fetching the image failed at byte {offset} after {attempts} attempts")]
    Fetch {
        offset: u64,
        attempts: u32,
        #[source]
        source: io::Error,
    },
    #[error("the server's image changed length during the download ({was} → {now} bytes)")]
    LengthChanged { was: u64, now: u64 },
    #[error("SHA-256 mismatch: expected {expected}, the stream hashed to {actual}")]
    Checksum { expected: String, actual: String },
    #[error("the image is shorter than its head ({0} bytes)")]
    TooShort(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub bytes: u64,
    pub sha256: String,
    /// Reconnections after a dropped or failed stream.
    pub resumes: u32,
    pub seconds: f64,
}

/// Writes all of `buf` at `offset`, looping over short writes; a zero-length write is an error.
pub fn write_all_at(disk: &mut dyn Disk, mut offset: u64, mut buf: &[u8]) -> Result<(), WriteError> {
    while !buf.is_empty() {
        match disk.write_at(offset, buf) {
            Ok(0) => {
                return Err(WriteError::Disk {
                    offset,
                    source: io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes"),
                });
            }
            Ok(n) => {
                offset += n as u64;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(WriteError::Disk { offset, source }),
        }
    }
    Ok(())
}

/// Retry policy for the image stream.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 8, backoff: Duration::from_secs(2) }
    }
}

/// Streams the image from `src` onto `disk`, verifying `sha256` (lower-case hex). Returns the
/// held head (the caller patches its GPT, writes it with [`write_all_at`] and syncs), and
/// what was written. `progress(done, total)` is called after each buffer.
///
/// SHA-256 runs on its own thread: on a node (and even more under QEMU TCG) hashing costs as
/// much CPU as receiving, and a second core does it while the first keeps the stream moving.
/// Buffers circulate between the two (a small pool), so no byte is copied for the hasher.
pub fn stream(
    src: &mut dyn Source,
    disk: &mut dyn Disk,
    sha256: &str,
    retry: Retry,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<u8>, Written), WriteError> {
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(POOL);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..POOL {
        let _ = free_tx.send(vec![0u8; BUF]);
    }
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in full_rx {
                h.update(&buf[..n]);
                let _ = free_tx.send(buf);
            }
            h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
        });
        let pool = Pool { full: full_tx, free: free_rx };
        let streamed = stream_inner(src, disk, retry, progress, &pool);
        drop(pool);
        let actual = hasher.join().unwrap_or_default();
        let (head, mut written) = streamed?;
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(WriteError::Checksum { expected: sha256.to_owned(), actual });
        }
        disk.sync().map_err(|source| WriteError::Disk { offset: written.bytes, source })?;
        written.sha256 = actual;
        Ok((head, written))
    })
}

/// Buffers to the hasher (`full`), and back from it (`free`).
struct Pool {
    full: std::sync::mpsc::SyncSender<(Vec<u8>, usize)>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
}

fn stream_inner(
    src: &mut dyn Source,
    disk: &mut dyn Disk,
    retry: Retry,
    progress: &mut dyn FnMut(u64, u64),
    pool: &Pool,
) -> Result<(Vec<u8>, Written), WriteError> {
    let started = Instant::now();
    let mut head = Vec::with_capacity(HEAD);
    let mut pos = 0u64;
    let mut resumes = 0u32;
    let mut failures = 0u32;
    let mut total: Option<u64> = None;
    // A buffer taken from the pool but not filled (error, interruption) is kept for the next
    // read: lost buffers would leave the pool empty and the next take waiting forever.
    let mut spare: Option<Vec<u8>> = None;
    loop {
        let (mut reader, len) = match src.open(pos) {
            Ok(x) => x,
            Err(source) => {
                failures += 1;
                if failures >= retry.attempts {
                    return Err(WriteError::Fetch { offset: pos, attempts: failures, source });
                }
                std::thread::sleep(retry.backoff * failures);
                continue;
            }
        };
        match total {
            None => {
                if len > disk.size() {
                    return Err(WriteError::TooLarge { image: len, disk: disk.size() });
                }
                if len < HEAD as u64 {
                    return Err(WriteError::TooShort(len));
                }
                // Invalidate whatever was bootable before: zero the head first.
                write_all_at(disk, 0, &vec![0u8; HEAD])?;
                disk.sync().map_err(|source| WriteError::Disk { offset: 0, source })?;
                total = Some(len);
            }
            Some(was) if was != len => return Err(WriteError::LengthChanged { was, now: len }),
            Some(_) => resumes += 1,
        }
        let total = len;
        let err = loop {
            if pos == total {
                break None;
            }
            let want = usize::try_from((total - pos).min(BUF as u64)).unwrap_or(BUF);
            // The hasher hands every buffer back; it only stops once we drop the pool.
            let mut buf = spare.take().unwrap_or_else(|| pool.free.recv().unwrap_or_else(|_| vec![0u8; BUF]));
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => {
                    spare = Some(buf);
                    break Some(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended early"));
                }
                Ok(n) => n,
                Err(e) => {
                    spare = Some(buf);
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    break Some(e);
                }
            };
            let chunk = &buf[..n];
            // The part inside the head is held; the rest goes to disk now.
            let in_head = usize::try_from((HEAD as u64).saturating_sub(pos)).unwrap_or(0).min(n);
            head.extend_from_slice(&chunk[..in_head]);
            if in_head < n {
                write_all_at(disk, pos + in_head as u64, &chunk[in_head..])?;
            }
            pos += n as u64;
            let _ = pool.full.send((buf, n));
            progress(pos, total);
        };
        let Some(source) = err else { break };
        failures += 1;
        if failures >= retry.attempts {
            return Err(WriteError::Fetch { offset: pos, attempts: failures, source });
        }
        drop(reader);
        std::thread::sleep(retry.backoff);
    }
    Ok((head, Written { bytes: pos, sha256: String::new(), resumes, seconds: started.elapsed().as_secs_f64() }))
}

/// A block device or image file.
#[derive(Debug)]
pub struct FileDisk {
    file: std::fs::File,
    size: u64,
}

impl FileDisk {
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        // Block devices report their size by seeking to the end, not in metadata.
        let size = file.seek(SeekFrom::End(0))?;
        Ok(FileDisk { file, size })
    }
}

impl Disk for FileDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(&self.file, buf, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }
    fn sha(b: &[u8]) -> String {
        Sha256::digest(b).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// In-memory disk that writes at most `max_write` bytes a call and fails the `fail_at`-th write.
    struct MemDisk {
        data: Vec<u8>,
        max_write: usize,
        writes: usize,
        fail_at: Option<usize>,
    }
    impl Disk for MemDisk {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            if self.fail_at == Some(self.writes) {
                return Err(io::Error::other("injected I/O error"));
            }
            let n = buf.len().min(self.max_write);
            let o = usize::try_from(offset).expect("offset");
            self.data[o..o + n].copy_from_slice(&buf[..n]);
            Ok(n)
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Serves `data`, cutting each connection after `cut` bytes, refusing the first `refuse` opens.
    struct Flaky<'a> {
        data: &'a [u8],
        cut: usize,
        refuse: u32,
        opens: Vec<u64>,
    }
    impl Source for Flaky<'_> {
        fn open(&mut self, offset: u64) -> io::Result<(Box<dyn Read + '_>, u64)> {
            self.opens.push(offset);
            if self.refuse > 0 {
                self.refuse -= 1;
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
            }
            let o = usize::try_from(offset).expect("offset");
            let end = (o + self.cut).min(self.data.len());
            Ok((Box::new(&self.data[o..end]), self.data.len() as u64))
        }
    }

    const FAST: Retry = Retry { attempts: 20, backoff: Duration::from_millis(1) };

    #[test]
    fn short_writes_and_dropped_connections_still_give_the_exact_image() {
        let img = image(3 * HEAD + 12345);
        let mut disk = MemDisk { data: vec![0xee; 4 * HEAD], max_write: 4000, writes: 0, fail_at: None };
        let mut src = Flaky { data: &img, cut: 700_001, refuse: 1, opens: vec![] };
        let mut last = 0;
        let (head, w) = stream(&mut src, &mut disk, &sha(&img), FAST, &mut |d, _| last = d).expect("stream");
        assert_eq!(last, img.len() as u64);
        assert_eq!(w.bytes, img.len() as u64);
        assert!(w.resumes >= 4, "resumed from where it stopped: {:?}", src.opens);
        assert!(src.opens.windows(2).all(|p| p[0] <= p[1]), "never restarted from 0: {:?}", src.opens);
        // The head is held back (still zero on disk), everything after it is written.
        assert_eq!(head, img[..HEAD]);
        assert!(disk.data[..HEAD].iter().all(|&b| b == 0));
        assert_eq!(disk.data[HEAD..img.len()], img[HEAD..]);
        write_all_at(&mut disk, 0, &head).expect("head");
        assert_eq!(disk.data[..img.len()], img[..]);
    }

    #[test]
    fn more_dropped_connections_than_pooled_buffers_do_not_stall_the_stream() {
        let img = image(3 * HEAD);
        let mut disk = MemDisk { data: vec![0; 3 * HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let mut src = Flaky { data: &img, cut: 100_000, refuse: 0, opens: vec![] };
        let retry = Retry { attempts: 64, backoff: Duration::from_millis(0) };
        let (_, w) = stream(&mut src, &mut disk, &sha(&img), retry, &mut |_, _| {}).expect("stream");
        assert!(w.resumes as usize > POOL, "{} resumes", w.resumes);
    }

    #[test]
    fn a_wrong_digest_leaves_the_disk_unbootable() {
        let img = image(2 * HEAD);
        let mut disk = MemDisk { data: vec![0xee; 2 * HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let mut src = Flaky { data: &img, cut: usize::MAX, refuse: 0, opens: vec![] };
        let e = stream(&mut src, &mut disk, &sha(b"other"), FAST, &mut |_, _| {}).expect_err("mismatch");
        assert!(matches!(e, WriteError::Checksum { .. }), "{e}");
        assert!(disk.data[..HEAD].iter().all(|&b| b == 0), "the old head is gone, the new one never written");
    }

    #[test]
    fn disk_errors_too_small_disks_and_dead_servers_are_reported() {
        let img = image(2 * HEAD);
        let mut disk = MemDisk { data: vec![0; 2 * HEAD], max_write: usize::MAX, writes: 0, fail_at: Some(2) };
        let mut src = Flaky { data: &img, cut: usize::MAX, refuse: 0, opens: vec![] };
        let e = stream(&mut src, &mut disk, &sha(&img), FAST, &mut |_, _| {}).expect_err("I/O error");
        assert!(matches!(e, WriteError::Disk { .. }), "{e}");
        let mut small = MemDisk { data: vec![0; HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let e = stream(&mut src, &mut small, &sha(&img), FAST, &mut |_, _| {}).expect_err("too small");
        assert!(matches!(e, WriteError::TooLarge { .. }), "{e}");
        let mut dead = Flaky { data: &img, cut: usize::MAX, refuse: u32::MAX, opens: vec![] };
        let mut disk = MemDisk { data: vec![0; 2 * HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let e =
            stream(&mut dead, &mut disk, &sha(&img), Retry { attempts: 3, ..FAST }, &mut |_, _| {}).expect_err("dead");
        assert!(matches!(e, WriteError::Fetch { attempts: 3, .. }), "{e}");
    }
}
