//! Growing a GPT written for a smaller disk (UEFI 2.10 §5.3), and the tables and regions the
//! installer needs to keep the disk unbootable until the end — pure, on the image's first
//! sectors held in memory.
//!
//! A disk image carries its backup header and entries at *its* end. On a larger disk they
//! must move to the disk's last sectors, the header's AlternateLBA and LastUsableLBA must say
//! so, and the last partition (the root filesystem) is extended to the end, 1 MiB-aligned;
//! the filesystem itself is grown online on first boot (`x-systemd.growfs`). 512-byte logical
//! sectors only: the image is laid out for them, and a 4Kn disk is refused before writing.
//!
//! [`boot_regions`] names the image's bytes past its first MiB that let firmware boot it
//! (held back while the image streams), and [`staging`] is the table the disk carries while
//! the node's configuration is written: the root partition only, so the kernel can mount it
//! and firmware finds nothing to boot.

use std::ops::Range;

pub const SECTOR: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const ALIGN_SECTORS: u64 = 2048;
/// Held back from the start of every partition but the root: a FAT boot sector, FSInfo and
/// backup boot sector (sector 6) — all of mkfs.fat's 32 reserved sectors, with room.
pub const PARTITION_HELD: u64 = 64 << 10;
/// Held back from the image's end, past its partitions: its backup GPT (header in the last
/// sector, entries before it).
pub const TAIL_HELD: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("no GPT header at LBA {lba} (signature {signature:02x?})")]
    NoHeader { lba: u64, signature: [u8; 8] },
    #[error("GPT header CRC mismatch")]
    HeaderCrc,
    #[error("GPT entry array CRC mismatch")]
    EntriesCrc,
    #[error("GPT header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the disk ({disk} sectors) is smaller than the image's partitions (end at {end})")]
    DiskTooSmall { disk: u64, end: u64 },
}

/// What [`grow`] did, and the backup copy to write at the disk's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grown {
    /// Index of the partition that was extended.
    pub partition: usize,
    pub old_end: u64,
    pub new_end: u64,
    /// Backup entries followed by the backup header: write at `backup_offset`.
    pub backup: Vec<u8>,
    pub backup_offset: u64,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}
fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

fn header_crc(h: &[u8], size: usize) -> u32 {
    let mut c = h[..size].to_vec();
    c[16..20].fill(0);
    crc32fast::hash(&c)
}

/// Where a checked GPT's parts are, as byte offsets into a view of the disk from LBA 0.
#[derive(Debug, Clone, Copy)]
struct Table {
    header: usize,
    hsize: usize,
    entries: usize,
    count: usize,
    esize: usize,
}

impl Table {
    fn entries_len(self) -> usize {
        self.count * self.esize
    }

    /// The used entries: (index, first LBA, last LBA).
    fn partitions(self, view: &[u8]) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        (0..self.count).filter_map(move |i| {
            let e = &view[self.entries + i * self.esize..][..self.esize];
            e[..16].iter().any(|&b| b != 0).then(|| (i, u64_at(e, 32), u64_at(e, 40)))
        })
    }

    /// The partition that ends last (the later entry on a tie), and its last LBA: the root
    /// filesystem, which [`grow`] extends and the installer mounts.
    fn root(self, view: &[u8]) -> Option<(usize, u64)> {
        self.partitions(view).max_by_key(|&(_, _, end)| end).map(|(i, _, end)| (i, end))
    }
}

/// Reads and checks the GPT whose header is at `lba` of `view` (the disk, or its first
/// sectors, from LBA 0): signature, sizes, both CRCs, MyLBA.
fn read_table(view: &[u8], lba: u64) -> Result<Table, GptError> {
    let s = SECTOR as usize;
    let at_lba = |l: u64| usize::try_from(l).ok().and_then(|l| l.checked_mul(s));
    let header = at_lba(lba).ok_or(GptError::Malformed("header LBA"))?;
    let Some(h) = view.get(header..header.saturating_add(s)) else {
        return Err(GptError::Malformed("the header is beyond the held sectors"));
    };
    let mut signature = [0u8; 8];
    signature.copy_from_slice(&h[..8]);
    if &signature != SIGNATURE {
        return Err(GptError::NoHeader { lba, signature });
    }
    let hsize = u32_at(h, 12) as usize;
    if !(92..=s).contains(&hsize) {
        return Err(GptError::Malformed("header size"));
    }
    if header_crc(h, hsize) != u32_at(h, 16) {
        return Err(GptError::HeaderCrc);
    }
    // Firmware and Linux both refuse a header that is not where it says it is.
    if u64_at(h, 24) != lba {
        return Err(GptError::Malformed("MyLBA is not the header's own LBA"));
    }
    let entries_lba = u64_at(h, 72);
    let count = u32_at(h, 80) as usize;
    let esize = u32_at(h, 84) as usize;
    if esize < 128 || count == 0 || count > 1024 || entries_lba < 2 {
        return Err(GptError::Malformed("entry array geometry"));
    }
    let entries = at_lba(entries_lba).ok_or(GptError::Malformed("entry LBA"))?;
    let t = Table { header, hsize, entries, count, esize };
    let Some(array) = view.get(entries..entries.saturating_add(t.entries_len())) else {
        return Err(GptError::Malformed("entry array beyond the held sectors"));
    };
    if crc32fast::hash(array) != u32_at(h, 88) {
        return Err(GptError::EntriesCrc);
    }
    Ok(t)
}

/// Rewrites the primary GPT in `head` (the image's first sectors, at least through the entry
/// array) for a disk of `disk_bytes`, and returns the backup to write at its end.
pub fn grow(head: &mut [u8], disk_bytes: u64) -> Result<Grown, GptError> {
    let t = read_table(head, 1)?;
    let (hs, hsize, estart, esize, elen) = (t.header, t.hsize, t.entries, t.esize, t.entries_len());
    let disk = disk_bytes / SECTOR;
    let entry_sectors = (elen as u64).div_ceil(SECTOR);
    let last_usable =
        disk.checked_sub(entry_sectors + 2).ok_or(GptError::DiskTooSmall { disk, end: u64_at(head, hs + 48) })?;
    let (idx, old_end) = t.root(head).ok_or(GptError::Malformed("no partitions"))?;
    if old_end > last_usable {
        return Err(GptError::DiskTooSmall { disk, end: old_end });
    }
    let new_end = ((last_usable + 1) / ALIGN_SECTORS * ALIGN_SECTORS).saturating_sub(1).max(old_end);
    put_u64(&mut head[estart + idx * esize..], 40, new_end);
    let entries_crc = crc32fast::hash(&head[estart..estart + elen]);

    // Primary header: backup at the last sector, usable space to just before the backup array.
    let h = &mut head[hs..hs + hsize];
    put_u64(h, 32, disk - 1);
    put_u64(h, 48, last_usable);
    put_u32(h, 88, entries_crc);
    let crc = header_crc(h, hsize);
    put_u32(h, 16, crc);

    // Backup: entries, then the header with MyLBA/AlternateLBA swapped.
    let backup_entries_lba = disk - 1 - entry_sectors;
    let mut backup = vec![0u8; usize::try_from((entry_sectors + 1) * SECTOR).unwrap_or(0)];
    backup[..elen].copy_from_slice(&head[estart..estart + elen]);
    let bh_at = usize::try_from(entry_sectors * SECTOR).unwrap_or(0);
    backup[bh_at..bh_at + hsize].copy_from_slice(&head[hs..hs + hsize]);
    let bh = &mut backup[bh_at..bh_at + hsize];
    put_u64(bh, 24, disk - 1);
    put_u64(bh, 32, 1);
    put_u64(bh, 72, backup_entries_lba);
    let crc = header_crc(bh, hsize);
    put_u32(bh, 16, crc);

    // Protective MBR: the 0xEE partition covers the disk (capped at 2 TiB of sectors).
    if head[510] == 0x55 && head[511] == 0xaa && head[446 + 4] == 0xee {
        put_u32(head, 446 + 12, u32::try_from(disk - 1).unwrap_or(u32::MAX));
    }
    Ok(Grown { partition: idx, old_end, new_end, backup, backup_offset: backup_entries_lba * SECTOR })
}

/// The image's byte ranges past its first MiB (`head`) that firmware needs to boot it, for
/// the installer to hold back until the node's configuration is written:
///
/// - the first [`PARTITION_HELD`] bytes of every partition but the root: an ESP's FAT boot
///   sector is what makes it bootable, and firmware mounts FAT wherever it finds one, whatever
///   the type GUID says. (The root is left out: the installer mounts it to configure it.)
/// - the image's last [`TAIL_HELD`] bytes past its partitions: its backup GPT, through which
///   firmware would find the ESP on a disk of exactly the image's size.
///
/// A head without a valid GPT needs none: nothing can find its partitions, and [`grow`]
/// refuses it before anything bootable is written.
pub fn boot_regions(head: &[u8], image_len: u64) -> Vec<Range<u64>> {
    let Ok(t) = read_table(head, 1) else { return Vec::new() };
    let Some((root, root_end)) = t.root(head) else { return Vec::new() };
    let mut held: Vec<Range<u64>> = t
        .partitions(head)
        .filter(|&(i, ..)| i != root)
        .map(|(_, first, last)| {
            let start = first.saturating_mul(SECTOR);
            start..start.saturating_add(PARTITION_HELD).min(last.saturating_add(1).saturating_mul(SECTOR))
        })
        .collect();
    let past_partitions = root_end.saturating_add(1).saturating_mul(SECTOR);
    held.push(past_partitions.max(image_len.saturating_sub(TAIL_HELD))..image_len);
    held
}

/// The table the disk carries while the installer writes the node's configuration, to write
/// at LBA 0: a fresh protective MBR (no boot code) and the primary GPT of the grown `head`
/// listing only partition `keep` (the root, under its own number: the kernel names it as
/// the full table will). The kernel can mount the root from it; firmware finds no partition
/// to boot from, and no backup table (the installer zeroed the disk's end).
pub fn staging(head: &[u8], keep: usize, disk_bytes: u64) -> Result<Vec<u8>, GptError> {
    let t = read_table(head, 1)?;
    if keep >= t.count {
        return Err(GptError::Malformed("no such partition"));
    }
    let s = SECTOR as usize;
    let (entries, elen) = (t.entries, t.entries_len());
    let mut out = vec![0u8; (entries + elen).div_ceil(s) * s];
    protective_mbr(&mut out[..s], disk_bytes / SECTOR);
    out[t.header..t.header + t.hsize].copy_from_slice(&head[t.header..t.header + t.hsize]);
    let kept = entries + keep * t.esize;
    out[kept..kept + t.esize].copy_from_slice(&head[kept..kept + t.esize]);
    let entries_crc = crc32fast::hash(&out[entries..entries + elen]);
    let h = &mut out[t.header..t.header + t.hsize];
    put_u32(h, 88, entries_crc);
    let crc = header_crc(h, t.hsize);
    put_u32(h, 16, crc);
    Ok(out)
}

/// LBA 0 of a GPT disk (UEFI 2.10 §5.2.3): one 0xEE partition from LBA 1 over the disk
/// (capped at 2 TiB of sectors), the 0x55AA signature, and no boot code.
fn protective_mbr(sector: &mut [u8], disk_sectors: u64) {
    let p = &mut sector[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    p[4] = 0xee;
    p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    put_u32(p, 8, 1);
    put_u32(p, 12, u32::try_from(disk_sectors.saturating_sub(1)).unwrap_or(u32::MAX));
    sector[510] = 0x55;
    sector[511] = 0xaa;
}

/// Disk images and a firmware's-eye view of a disk, for the installer's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// C12A7328-F81F-11D2-BA4B-00A0C93EC93B as GPT stores it (the first three fields
    /// little-endian).
    const ESP_TYPE: [u8; 16] =
        [0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b];
    /// 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, the x86-64 root.
    const ROOT_TYPE: [u8; 16] =
        [0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09];
    /// Where [`image`] puts the ESP (as `metal6 image build` does), and its length.
    pub const ESP_FIRST: u64 = 2048;
    pub const ESP_SECTORS: u64 = 2048;

    /// A disk image of `sectors` laid out like `metal6 image build`'s: protective MBR and GPT
    /// in the first MiB, the ESP at LBA 2048 starting with a FAT32 boot sector, the root from
    /// the ESP's end to the last usable LBA (a byte pattern, nothing FAT-like), the backup GPT
    /// in the last 33 sectors.
    pub fn image(sectors: u64) -> Vec<u8> {
        let s = SECTOR as usize;
        let at = |lba: u64| usize::try_from(lba).expect("lba") * s;
        let mut img: Vec<u8> = (0..at(sectors)).map(|i| (i * 7 + i / 4096) as u8).collect();
        let (last, last_usable) = (sectors - 1, sectors - 34);
        let root_first = ESP_FIRST + ESP_SECTORS;
        assert!(last_usable > root_first, "{sectors} sectors leave no room for the root");
        img[..at(ESP_FIRST)].fill(0);
        img[at(last_usable + 1)..].fill(0);
        protective_mbr(&mut img[..s], sectors);

        let mut entries = vec![0u8; 128 * 128];
        let parts = [(ESP_TYPE, ESP_FIRST, root_first - 1), (ROOT_TYPE, root_first, last_usable)];
        for (i, (ty, first, end)) in parts.into_iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&ty);
            e[16..32].fill(0x60 + i as u8);
            put_u64(e, 32, first);
            put_u64(e, 40, end);
        }
        let mut header = [0u8; 92];
        header[..8].copy_from_slice(SIGNATURE);
        put_u32(&mut header, 8, 0x0001_0000);
        put_u32(&mut header, 12, 92);
        put_u64(&mut header, 24, 1);
        put_u64(&mut header, 32, last);
        put_u64(&mut header, 40, ESP_FIRST);
        put_u64(&mut header, 48, last_usable);
        header[56..72].fill(0x6d);
        put_u64(&mut header, 72, 2);
        put_u32(&mut header, 80, 128);
        put_u32(&mut header, 84, 128);
        put_u32(&mut header, 88, crc32fast::hash(&entries));
        let mut backup = header;
        for (h, my, alternate, entries_lba) in [(&mut header, 1, last, 2), (&mut backup, last, 1, last - 32)] {
            put_u64(h, 24, my);
            put_u64(h, 32, alternate);
            put_u64(h, 72, entries_lba);
            let crc = header_crc(h, 92);
            put_u32(h, 16, crc);
        }
        img[at(1)..at(1) + 92].copy_from_slice(&header);
        img[at(2)..at(2) + entries.len()].copy_from_slice(&entries);
        img[at(last - 32)..at(last - 32) + entries.len()].copy_from_slice(&entries);
        img[at(last)..at(last) + 92].copy_from_slice(&backup);

        let esp = &mut img[at(ESP_FIRST)..at(ESP_FIRST + 1)];
        esp.fill(0);
        esp[..3].copy_from_slice(&[0xeb, 0x58, 0x90]);
        esp[3..11].copy_from_slice(b"mkfs.fat");
        esp[82..90].copy_from_slice(b"FAT32   ");
        esp[510] = 0x55;
        esp[511] = 0xaa;
        img
    }

    /// The used partitions of the valid GPT whose header is at `lba` of `disk`:
    /// (index, first LBA, last LBA); `None` when there is no valid GPT there.
    pub fn partitions(disk: &[u8], lba: u64) -> Option<Vec<(usize, u64, u64)>> {
        read_table(disk, lba).ok().map(|t| t.partitions(disk).collect())
    }

    /// Whether UEFI firmware could boot `disk`, counted generously: a FAT boot sector on the
    /// whole disk, or at the start of a partition of a valid GPT — the primary, or the backup
    /// at the last LBA (firmware restores a lost primary from it).
    pub fn bootable(disk: &[u8]) -> bool {
        let last = disk.len() as u64 / SECTOR - 1;
        is_fat(disk, 0)
            || [1, last]
                .into_iter()
                .any(|lba| partitions(disk, lba).is_some_and(|ps| ps.iter().any(|&(_, first, _)| is_fat(disk, first))))
    }

    fn is_fat(disk: &[u8], lba: u64) -> bool {
        let s = SECTOR as usize;
        let at = usize::try_from(lba).ok().and_then(|l| l.checked_mul(s));
        let Some(b) = at.and_then(|o| disk.get(o..o.saturating_add(s))) else { return false };
        b[510..512] == [0x55u8, 0xaa] && (b[82..87] == *b"FAT32" || b[54..57] == *b"FAT")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    /// A 64 MiB GPT image made by util-linux sfdisk (a real peer): a 16 MiB ESP at LBA 2048
    /// and the root after it. `None` (the test passes) where sfdisk is missing outside CI.
    fn sfdisk_image(dir: &std::path::Path) -> Option<std::path::PathBuf> {
        if Command::new("sfdisk").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "sfdisk missing: `make deps` installs fdisk");
            return None;
        }
        let img = dir.join("disk.raw");
        std::fs::File::create(&img).and_then(|f| f.set_len(64 << 20)).expect("image");
        let mut c = Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sfdisk");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(
                b"label: gpt\nstart=2048, size=16MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
                  type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n",
            )
            .expect("script");
        assert!(c.wait().expect("sfdisk").success());
        Some(img)
    }

    fn sfdisk_json(img: &std::path::Path) -> serde_json::Value {
        let d = Command::new("sfdisk").arg("--json").arg(img).output().expect("dump");
        serde_json::from_slice(&d.stdout)
            .unwrap_or_else(|e| panic!("sfdisk --json: {e}: {}", String::from_utf8_lossy(&d.stderr)))
    }

    /// The sfdisk image, grown by us onto a larger sparse file, and checked by sfdisk.
    #[test]
    fn sfdisk_accepts_the_grown_table() {
        let dir = tempfile::tempdir().expect("tmp");
        let Some(img) = sfdisk_image(dir.path()) else { return };
        let bytes = std::fs::read(&img).expect("read");
        let mut head = bytes[..1 << 20].to_vec();
        let big: u64 = 1 << 30;
        let g = grow(&mut head, big).expect("grow");
        assert_eq!(g.partition, 1);
        assert_eq!(g.new_end, big / SECTOR - 2048 - 1, "1 MiB-aligned end before the backup");
        // Onto a sparse file of the larger size, as the installer writes a disk: head, backup.
        drop(bytes);
        let f = std::fs::OpenOptions::new().write(true).open(&img).expect("open");
        f.set_len(big).expect("grow file");
        std::os::unix::fs::FileExt::write_all_at(&f, &head, 0).expect("head");
        std::os::unix::fs::FileExt::write_all_at(&f, &g.backup, g.backup_offset).expect("backup");
        drop(f);
        let v = Command::new("sfdisk").arg("--verify").arg(&img).output().expect("verify");
        let out = String::from_utf8_lossy(&v.stdout).into_owned() + &String::from_utf8_lossy(&v.stderr);
        assert!(v.status.success() && !out.to_lowercase().contains("corrupt"), "{out}");
        assert!(!out.contains("backup"), "sfdisk complains about the backup GPT: {out}");
        let j = sfdisk_json(&img);
        let parts = &j["partitiontable"]["partitions"];
        assert_eq!(
            parts[1]["start"].as_u64().expect("start") + parts[1]["size"].as_u64().expect("size") - 1,
            g.new_end
        );
        assert_eq!(j["partitiontable"]["lastlba"].as_u64(), Some(big / SECTOR - 34));
    }

    /// What the kernel is asked to read while the node's configuration is written: sfdisk
    /// (libfdisk parses GPT as the kernel does) sees the grown root, under its own number, and
    /// nothing else — with the disk's end zeroed, as the installer leaves it.
    #[test]
    fn sfdisk_reads_the_staging_table_as_the_root_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let Some(img) = sfdisk_image(dir.path()) else { return };
        let mut head = std::fs::read(&img).expect("read")[..1 << 20].to_vec();
        let big: u64 = 1 << 30;
        let g = grow(&mut head, big).expect("grow");
        let table = staging(&head, g.partition, big).expect("staging");
        assert_eq!(table.len(), 34 * 512, "protective MBR, header, 128 entries");
        assert_eq!(table[446 + 4], 0xee);
        assert!(table[..446].iter().all(|&b| b == 0), "no boot code");
        let f = std::fs::OpenOptions::new().write(true).open(&img).expect("open");
        f.set_len(big).expect("grow file");
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; 1 << 20], 0).expect("zero head");
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; 1 << 20], big - (1 << 20)).expect("zero tail");
        std::os::unix::fs::FileExt::write_all_at(&f, &table, 0).expect("staging");
        drop(f);
        let j = sfdisk_json(&img);
        let parts = j["partitiontable"]["partitions"].as_array().expect("partitions");
        assert_eq!(parts.len(), 1, "{j}");
        assert!(parts[0]["node"].as_str().expect("node").ends_with("disk.raw2"), "{j}");
        assert_eq!(
            parts[0]["start"].as_u64().expect("start") + parts[0]["size"].as_u64().expect("size") - 1,
            g.new_end
        );
    }

    #[test]
    fn boot_regions_are_the_esp_start_and_the_backup_table() {
        let sectors = 8192;
        let img = testing::image(sectors);
        let esp = testing::ESP_FIRST * SECTOR;
        let len = sectors * SECTOR;
        assert_eq!(boot_regions(&img[..1 << 20], len), vec![esp..esp + PARTITION_HELD, len - 33 * SECTOR..len]);
        assert_eq!(boot_regions(&vec![0u8; 1 << 20], len), Vec::<Range<u64>>::new(), "no table, nothing to find");
        // The image's own tables are valid, and firmware would boot it.
        assert_eq!(testing::partitions(&img, 1).map(|p| p.len()), Some(2));
        assert_eq!(testing::partitions(&img, sectors - 1), testing::partitions(&img, 1));
        assert!(testing::bootable(&img));
    }

    #[test]
    fn corrupt_or_missing_tables_are_errors() {
        let mut zero = vec![0u8; 1 << 20];
        assert!(matches!(grow(&mut zero, 1 << 30), Err(GptError::NoHeader { lba: 1, .. })));
        let mut h = vec![0u8; 1 << 20];
        h[512..520].copy_from_slice(SIGNATURE);
        put_u32(&mut h, 512 + 12, 92);
        assert_eq!(grow(&mut h, 1 << 30), Err(GptError::HeaderCrc));
        assert!(grow(&mut [0u8; 100], 1 << 30).is_err());
    }
}
