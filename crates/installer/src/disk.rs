//! Streaming an image to a block device while hashing it — no temporary copy, resumable —
//! behind two small traits so tests inject short writes, write errors and dropped
//! connections.
//!
//! Architecture Invariant: a disk is bootable only once its whole image is written, its
//! SHA-256 verified and the node's configuration written into its root — the configuration
//! is what makes it call home, so a disk that boots without it is a node lost. [`stream`]
//! first zeroes the disk's first MiB (protective MBR, primary GPT) and last MiB (the backup
//! GPT firmware would restore an old table from), then holds in memory, instead of writing,
//! the image's first MiB and whatever else `hold` names once that is in (`gpt::boot_regions`:
//! the ESP's FAT boot sector, the image's backup GPT). The installer then mounts the root
//! through a table that lists nothing else (`gpt::staging`), writes the configuration, and
//! only then [`finalize`]s: the held regions and backup GPT, synced, then the head, synced.
//! An interrupted, corrupt or unconfigured install leaves a disk that firmware skips, and the
//! node netboots into the installer again.

use std::io::{self, Read};
use std::ops::Range;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The head of the image held back until the end.
pub const HEAD: usize = 1 << 20;
/// The disk's end, zeroed before anything is written: where an earlier GPT keeps its backup
/// header (the last sector) and entries.
pub const TAIL: usize = 1 << 20;
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

/// The image bytes held in memory instead of written: the head, and the regions `hold` named
/// once the head was in (see [`stream`]). [`finalize`] writes them.
pub struct Held {
    /// (offset, bytes), sorted and disjoint; the first is the head, at 0.
    regions: Vec<(u64, Vec<u8>)>,
    planned: bool,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Where the held bytes go is what a reader wants; the bytes are the image's.
        f.debug_list().entries(self.regions.iter().map(|(o, d)| *o..*o + d.len() as u64)).finish()
    }
}

impl Held {
    fn new() -> Self {
        Held { regions: vec![(0, vec![0u8; HEAD])], planned: false }
    }

    /// The image's first MiB: protective MBR and primary GPT (grown in place by the caller).
    pub fn head(&self) -> &[u8] {
        &self.regions[0].1
    }

    pub fn head_mut(&mut self) -> &mut [u8] {
        &mut self.regions[0].1
    }

    /// The held regions past the head: (offset, bytes).
    pub fn rest(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.regions[1..].iter().map(|(o, d)| (*o, d.as_slice()))
    }

    /// Adds `ranges`, clamped to what follows the head in an image of `len` bytes and merged,
    /// and zeroes them on `disk`: like the head, what is held is zero there until [`finalize`]
    /// (whatever an earlier install left in them included).
    fn plan(&mut self, disk: &mut dyn Disk, ranges: Vec<Range<u64>>, len: u64) -> Result<(), WriteError> {
        let mut ranges: Vec<Range<u64>> =
            ranges.into_iter().map(|r| r.start.max(HEAD as u64)..r.end.min(len)).filter(|r| r.start < r.end).collect();
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        for r in merged {
            let zeros = vec![0u8; usize::try_from(r.end - r.start).unwrap_or(0)];
            write_all_at(disk, r.start, &zeros)?;
            self.regions.push((r.start, zeros));
        }
        self.planned = true;
        Ok(())
    }

    /// Takes `chunk`, the image's bytes from `pos`: what falls in a held region is copied
    /// there, the rest written to `disk`.
    fn put(&mut self, disk: &mut dyn Disk, pos: u64, chunk: &[u8]) -> Result<(), WriteError> {
        let end = pos + chunk.len() as u64;
        let mut at = pos;
        while at < end {
            let from = (at - pos) as usize;
            if let Some((o, d)) = self.regions.iter_mut().find(|(o, d)| *o <= at && at < *o + d.len() as u64) {
                let n = ((*o + d.len() as u64).min(end) - at) as usize;
                let into = (at - *o) as usize;
                d[into..into + n].copy_from_slice(&chunk[from..from + n]);
                at += n as u64;
            } else {
                let next = self.regions.iter().map(|(o, _)| *o).filter(|&o| o > at).min().unwrap_or(end).min(end);
                write_all_at(disk, at, &chunk[from..from + (next - at) as usize])?;
                at = next;
            }
        }
        Ok(())
    }
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

/// Given the image's head and its length, the byte ranges to hold back besides the head
/// (`gpt::boot_regions`).
pub type HoldFn = dyn Fn(&[u8], u64) -> Vec<Range<u64>>;

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

/// Streams the image from `src` onto `disk`, verifying `sha256` (lower-case hex). Before the
/// first byte of the image, zeroes the disk's first [`HEAD`] and last [`TAIL`] bytes, so that
/// neither the old primary nor the old backup GPT survives. Holds back the image's first
/// [`HEAD`] bytes and, once they are in, the ranges `hold(head, image_len)` names (all past
/// the head): they are returned, not written, for [`finalize`] to write once the disk may
/// boot. `progress(done, total)` is called after each buffer.
///
/// SHA-256 runs on its own thread: on a node (and even more under QEMU TCG) hashing costs as
/// much CPU as receiving, and a second core does it while the first keeps the stream moving.
/// Buffers circulate between the two (a small pool), so no byte is copied for the hasher.
pub fn stream(
    src: &mut dyn Source,
    disk: &mut dyn Disk,
    sha256: &str,
    retry: Retry,
    hold: &HoldFn,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Held, Written), WriteError> {
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
        let streamed = stream_inner(src, disk, retry, hold, progress, &pool);
        drop(pool);
        let actual = hasher.join().unwrap_or_default();
        let (held, mut written) = streamed?;
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(WriteError::Checksum { expected: sha256.to_owned(), actual });
        }
        disk.sync().map_err(|source| WriteError::Disk { offset: written.bytes, source })?;
        written.sha256 = actual;
        Ok((held, written))
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
    hold: &HoldFn,
    progress: &mut dyn FnMut(u64, u64),
    pool: &Pool,
) -> Result<(Held, Written), WriteError> {
    let started = Instant::now();
    let mut held = Held::new();
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
                // Invalidate whatever was bootable before, first: the primary GPT at the
                // start, and the backup at the end that firmware would restore it from.
                let zeros = vec![0u8; HEAD.max(TAIL)];
                write_all_at(disk, 0, &zeros[..HEAD])?;
                let size = disk.size();
                let tail = size.saturating_sub(TAIL as u64);
                write_all_at(disk, tail, &zeros[..usize::try_from(size - tail).unwrap_or(0)])?;
                disk.sync().map_err(|source| WriteError::Disk { offset: 0, source })?;
                total = Some(len);
            }
            Some(was) if was != len => return Err(WriteError::LengthChanged { was, now: len }),
            Some(_) => resumes += 1,
        }
        let total = len;
        let opened_at = pos;
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
            // The head is held. Once it is all in, `hold` reads its table and names what else
            // to hold, before any byte past the head is written.
            let in_head = usize::try_from((HEAD as u64).saturating_sub(pos)).unwrap_or(0).min(n);
            held.put(disk, pos, &chunk[..in_head])?;
            if !held.planned && pos + in_head as u64 == HEAD as u64 {
                let more = hold(held.head(), total);
                held.plan(disk, more, total)?;
            }
            held.put(disk, pos + in_head as u64, &chunk[in_head..])?;
            pos += n as u64;
            let _ = pool.full.send((buf, n));
            progress(pos, total);
        };
        let Some(source) = err else { break };
        // `attempts` bounds failures in a row: a connection that delivered bytes before it
        // broke was progress, so a long install over a flaky link is not failed by breaks
        // spread over hours.
        if pos > opened_at {
            failures = 0;
        }
        failures += 1;
        if failures >= retry.attempts {
            return Err(WriteError::Fetch { offset: pos, attempts: failures, source });
        }
        drop(reader);
        std::thread::sleep(retry.backoff);
    }
    Ok((held, Written { bytes: pos, sha256: String::new(), resumes, seconds: started.elapsed().as_secs_f64() }))
}

/// Makes the disk bootable — the install's last step, after the node's configuration is
/// written: the held regions but the head, and `backup` (the grown table's backup GPT) at
/// `backup_offset`, synced; then the head (protective MBR, primary GPT), synced. Power lost
/// in between leaves a backup table firmware may restore the primary from: by then the
/// configuration is on the disk, so that boot is a whole one.
pub fn finalize(disk: &mut dyn Disk, held: &Held, backup_offset: u64, backup: &[u8]) -> Result<(), WriteError> {
    for (offset, bytes) in held.rest() {
        write_all_at(disk, offset, bytes)?;
    }
    write_all_at(disk, backup_offset, backup)?;
    disk.sync().map_err(|source| WriteError::Disk { offset: backup_offset, source })?;
    write_all_at(disk, 0, held.head())?;
    disk.sync().map_err(|source| WriteError::Disk { offset: 0, source })
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

/// Fault-injecting disks and image sources, for this module's tests and the install's.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn sha(b: &[u8]) -> String {
        Sha256::digest(b).iter().map(|b| format!("{b:02x}")).collect()
    }

    pub const FAST: Retry = Retry { attempts: 20, backoff: Duration::from_millis(1) };

    /// Holds nothing past the head (images without a partition table).
    pub fn hold_nothing(_: &[u8], _: u64) -> Vec<Range<u64>> {
        Vec::new()
    }

    /// In-memory disk that writes at most `max_write` bytes a call and fails the `fail_at`-th write.
    #[derive(Debug)]
    pub struct MemDisk {
        pub data: Vec<u8>,
        pub max_write: usize,
        pub writes: usize,
        pub fail_at: Option<usize>,
    }

    impl MemDisk {
        pub fn new(data: Vec<u8>) -> Self {
            MemDisk { data, max_write: usize::MAX, writes: 0, fail_at: None }
        }
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

    /// A disk the test reads while the code under test writes it (in a callback).
    impl Disk for std::rc::Rc<std::cell::RefCell<MemDisk>> {
        fn size(&self) -> u64 {
            self.borrow().size()
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<usize> {
            self.borrow_mut().write_at(offset, buf)
        }
        fn sync(&mut self) -> io::Result<()> {
            self.borrow_mut().sync()
        }
    }

    /// Serves `data`, cutting each connection after `cut` bytes, refusing the first `refuse` opens.
    #[derive(Debug)]
    pub struct Flaky<'a> {
        pub data: &'a [u8],
        pub cut: usize,
        pub refuse: u32,
        pub opens: Vec<u64>,
    }

    impl<'a> Flaky<'a> {
        pub fn new(data: &'a [u8]) -> Self {
            Flaky { data, cut: usize::MAX, refuse: 0, opens: vec![] }
        }
    }

    impl Source for Flaky<'_> {
        fn open(&mut self, offset: u64) -> io::Result<(Box<dyn Read + '_>, u64)> {
            self.opens.push(offset);
            if self.refuse > 0 {
                self.refuse -= 1;
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
            }
            let o = usize::try_from(offset).expect("offset");
            let end = o.saturating_add(self.cut).min(self.data.len());
            Ok((Box::new(&self.data[o..end]), self.data.len() as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{FAST, Flaky, MemDisk, hold_nothing, sha};
    use super::*;
    use crate::gpt::{self, testing as gpt_image};

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn zero(b: &[u8]) -> bool {
        b.iter().all(|&b| b == 0)
    }

    /// Image and disk sizes of the GPT tests: a 4 MiB image onto a disk of its size (its
    /// backup GPT lands on the disk's last sectors) and onto one twice as large.
    const IMAGE_SECTORS: u64 = 8192;
    const DISK_SECTORS: [u64; 2] = [IMAGE_SECTORS, 2 * IMAGE_SECTORS];

    #[test]
    fn short_writes_and_dropped_connections_still_give_the_exact_image() {
        let img = image(3 * HEAD + 12345);
        let mut disk = MemDisk { data: vec![0xee; 4 * HEAD], max_write: 4000, writes: 0, fail_at: None };
        let mut src = Flaky { data: &img, cut: 700_001, refuse: 1, opens: vec![] };
        let mut last = 0;
        let (held, w) =
            stream(&mut src, &mut disk, &sha(&img), FAST, &hold_nothing, &mut |d, _| last = d).expect("stream");
        assert_eq!(last, img.len() as u64);
        assert_eq!(w.bytes, img.len() as u64);
        assert!(w.resumes >= 4, "resumed from where it stopped: {:?}", src.opens);
        assert!(src.opens.windows(2).all(|p| p[0] <= p[1]), "never restarted from 0: {:?}", src.opens);
        // The head is held back (still zero on disk), everything after it is written.
        assert_eq!(held.head(), &img[..HEAD]);
        assert_eq!(held.rest().count(), 0);
        assert!(zero(&disk.data[..HEAD]));
        assert_eq!(disk.data[HEAD..img.len()], img[HEAD..]);
        write_all_at(&mut disk, 0, held.head()).expect("head");
        assert_eq!(disk.data[..img.len()], img[..]);
    }

    /// The old install's tables (primary and backup) are gone before the new image streams,
    /// and nothing of the new one that firmware could boot from reaches the disk until
    /// `finalize`: no primary GPT, no backup GPT, no ESP boot sector — on a disk of the
    /// image's size too, where the image's own backup GPT falls on the disk's last sectors.
    #[test]
    fn nothing_bootable_reaches_the_disk_before_finalize() {
        let img = gpt_image::image(IMAGE_SECTORS);
        let esp = usize::try_from(gpt_image::ESP_FIRST * gpt::SECTOR).expect("esp");
        for sectors in DISK_SECTORS {
            // The old install: its tables and ESP boot sector, other bytes than the new image's.
            let mut old = gpt_image::image(sectors);
            let old_len = old.len();
            old[esp + 512..old_len - 33 * 512].iter_mut().for_each(|b| *b = !*b);
            let mut disk = MemDisk::new(old);
            assert!(gpt_image::bootable(&disk.data), "the old install boots");
            let last = sectors - 1;
            // Cuts that split buffers across the head's end and the held ESP start.
            let mut src = Flaky { data: &img, cut: 300_001, refuse: 0, opens: vec![] };
            let (mut held, _) =
                stream(&mut src, &mut disk, &sha(&img), FAST, &gpt::boot_regions, &mut |_, _| {}).expect("stream");
            let len = disk.data.len();
            assert!(zero(&disk.data[..HEAD]), "no protective MBR or primary GPT");
            assert_eq!(gpt_image::partitions(&disk.data, 1), None);
            assert_eq!(gpt_image::partitions(&disk.data, last), None, "no backup GPT, the old one or the image's");
            assert!(zero(&disk.data[len - 33 * 512..]));
            assert!(zero(&disk.data[esp..esp + 512]), "no ESP boot sector");
            assert!(!gpt_image::bootable(&disk.data));
            // The rest of the image is on the disk; the held bytes are the image's.
            let esp_held = esp + gpt::PARTITION_HELD as usize;
            assert_eq!(disk.data[esp_held..img.len() - 33 * 512], img[esp_held..img.len() - 33 * 512]);
            assert_eq!(held.head(), &img[..HEAD]);
            let rest: Vec<(u64, &[u8])> = held.rest().collect();
            assert_eq!(
                rest,
                [(esp as u64, &img[esp..esp_held]), ((img.len() - 33 * 512) as u64, &img[img.len() - 33 * 512..])]
            );

            let grown = gpt::grow(held.head_mut(), disk.size()).expect("grow");
            finalize(&mut disk, &held, grown.backup_offset, &grown.backup).expect("finalize");
            assert!(gpt_image::bootable(&disk.data));
            assert_eq!(gpt_image::partitions(&disk.data, 1), gpt_image::partitions(&disk.data, last));
            assert_eq!(disk.data[HEAD..img.len() - 33 * 512], img[HEAD..img.len() - 33 * 512]);
        }
    }

    #[test]
    fn more_dropped_connections_than_pooled_buffers_do_not_stall_the_stream() {
        let img = image(3 * HEAD);
        let mut disk = MemDisk { data: vec![0; 3 * HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let mut src = Flaky { data: &img, cut: 100_000, refuse: 0, opens: vec![] };
        let retry = Retry { attempts: 64, backoff: Duration::from_millis(0) };
        let (_, w) = stream(&mut src, &mut disk, &sha(&img), retry, &hold_nothing, &mut |_, _| {}).expect("stream");
        assert!(w.resumes as usize > POOL, "{} resumes", w.resumes);
    }

    /// Many more breaks than `attempts`, each after some progress: the stream completes.
    /// Before, every break counted towards `attempts` for the whole install, so a long
    /// install over a flaky link failed however much it had written.
    #[test]
    fn breaks_after_progress_do_not_use_up_the_attempts() {
        let img = image(3 * HEAD);
        let mut disk = MemDisk { data: vec![0; 3 * HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let mut src = Flaky { data: &img, cut: 50_000, refuse: 0, opens: vec![] };
        let retry = Retry { attempts: 3, backoff: Duration::from_millis(0) };
        let (_, w) = stream(&mut src, &mut disk, &sha(&img), retry, &hold_nothing, &mut |_, _| {}).expect("stream");
        assert!(w.resumes > 3 * 10, "{} resumes with 3 attempts", w.resumes);
    }

    #[test]
    fn a_wrong_digest_leaves_the_disk_unbootable() {
        let img = image(2 * HEAD);
        let mut disk = MemDisk { data: vec![0xee; 2 * HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let mut src = Flaky { data: &img, cut: usize::MAX, refuse: 0, opens: vec![] };
        let e = stream(&mut src, &mut disk, &sha(b"other"), FAST, &hold_nothing, &mut |_, _| {}).expect_err("mismatch");
        assert!(matches!(e, WriteError::Checksum { .. }), "{e}");
        assert!(disk.data[..HEAD].iter().all(|&b| b == 0), "the old head is gone, the new one never written");
        // Over an installed disk: neither its tables nor the new image's ESP make it bootable.
        let img = gpt_image::image(IMAGE_SECTORS);
        for sectors in DISK_SECTORS {
            let mut disk = MemDisk::new(gpt_image::image(sectors));
            let mut src = Flaky::new(&img);
            let e = stream(&mut src, &mut disk, &sha(b"other"), FAST, &gpt::boot_regions, &mut |_, _| {})
                .expect_err("mismatch");
            assert!(matches!(e, WriteError::Checksum { .. }), "{e}");
            assert!(!gpt_image::bootable(&disk.data), "{sectors}-sector disk");
        }
    }

    #[test]
    fn held_regions_are_clamped_past_the_head_and_merged() {
        let mut held = Held::new();
        let mut disk = MemDisk::new(vec![0xee; 3 * HEAD]);
        let h = HEAD as u64;
        let ranges = vec![0..10, h + 100..h + 200, h + 150..h + 300, h + 500..h + 500, 8 * h..9 * h, h + 900..2 * h];
        held.plan(&mut disk, ranges, 3 * h).expect("plan");
        let got: Vec<(u64, usize)> = held.rest().map(|(o, b)| (o, b.len())).collect();
        assert_eq!(got, [(h + 100, 200), (h + 900, HEAD - 900)]);
        assert!(zero(&disk.data[HEAD + 100..HEAD + 300]) && zero(&disk.data[HEAD + 900..2 * HEAD]), "zeroed on disk");
        assert!(disk.data[HEAD + 300..HEAD + 900].iter().all(|&b| b == 0xee), "and nothing else");
        assert_eq!(format!("{held:?}"), format!("[0..{h}, {}..{}, {}..{}]", h + 100, h + 300, h + 900, 2 * h));
    }

    #[test]
    fn disk_errors_too_small_disks_and_dead_servers_are_reported() {
        let img = image(2 * HEAD);
        let mut disk = MemDisk { data: vec![0; 2 * HEAD], max_write: usize::MAX, writes: 0, fail_at: Some(2) };
        let mut src = Flaky { data: &img, cut: usize::MAX, refuse: 0, opens: vec![] };
        let e = stream(&mut src, &mut disk, &sha(&img), FAST, &hold_nothing, &mut |_, _| {}).expect_err("I/O error");
        assert!(matches!(e, WriteError::Disk { .. }), "{e}");
        let mut small = MemDisk { data: vec![0; HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let e = stream(&mut src, &mut small, &sha(&img), FAST, &hold_nothing, &mut |_, _| {}).expect_err("too small");
        assert!(matches!(e, WriteError::TooLarge { .. }), "{e}");
        let mut dead = Flaky { data: &img, cut: usize::MAX, refuse: u32::MAX, opens: vec![] };
        let mut disk = MemDisk { data: vec![0; 2 * HEAD], max_write: usize::MAX, writes: 0, fail_at: None };
        let e = stream(&mut dead, &mut disk, &sha(&img), Retry { attempts: 3, ..FAST }, &hold_nothing, &mut |_, _| {})
            .expect_err("dead");
        assert!(matches!(e, WriteError::Fetch { attempts: 3, .. }), "{e}");
    }
}
