//! Growing a GPT written for a smaller disk (UEFI 2.10 §5.3) — pure, on the image's first
//! sectors held in memory.
//!
//! A disk image carries its backup header and entries at *its* end. On a larger disk they
//! must move to the disk's last sectors, the header's AlternateLBA and LastUsableLBA must say
//! so, and the last partition (the root filesystem) is extended to the end, 1 MiB-aligned;
//! the filesystem itself is grown online on first boot (`x-systemd.growfs`). 512-byte logical
//! sectors only: the image is laid out for them, and a 4Kn disk is refused before writing.

pub const SECTOR: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const ALIGN_SECTORS: u64 = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("no GPT header at LBA 1 (signature {0:02x?})")]
    NoHeader([u8; 8]),
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

/// Rewrites the primary GPT in `head` (the image's first sectors, at least through the entry
/// array) for a disk of `disk_bytes`, and returns the backup to write at its end.
pub fn grow(head: &mut [u8], disk_bytes: u64) -> Result<Grown, GptError> {
    let s = SECTOR as usize;
    if head.len() < 2 * s {
        return Err(GptError::Malformed("fewer than two sectors"));
    }
    let mut sig = [0u8; 8];
    sig.copy_from_slice(&head[s..s + 8]);
    if &sig != SIGNATURE {
        return Err(GptError::NoHeader(sig));
    }
    let hsize = u32_at(head, s + 12) as usize;
    if !(92..=s).contains(&hsize) {
        return Err(GptError::Malformed("header size"));
    }
    if header_crc(&head[s..], hsize) != u32_at(head, s + 16) {
        return Err(GptError::HeaderCrc);
    }
    let entries_lba = u64_at(head, s + 72);
    let count = u32_at(head, s + 80) as usize;
    let esize = u32_at(head, s + 84) as usize;
    if esize < 128 || count == 0 || count > 1024 || entries_lba < 2 {
        return Err(GptError::Malformed("entry array geometry"));
    }
    let estart = usize::try_from(entries_lba).map_err(|_| GptError::Malformed("entry LBA"))? * s;
    let elen = count * esize;
    if head.len() < estart + elen {
        return Err(GptError::Malformed("entry array beyond the held sectors"));
    }
    if crc32fast::hash(&head[estart..estart + elen]) != u32_at(head, s + 88) {
        return Err(GptError::EntriesCrc);
    }
    let disk = disk_bytes / SECTOR;
    let entry_sectors = (elen as u64).div_ceil(SECTOR);
    let last_usable =
        disk.checked_sub(entry_sectors + 2).ok_or(GptError::DiskTooSmall { disk, end: u64_at(head, s + 48) })?;
    // The partition that ends last is the one to extend.
    let (mut idx, mut old_end) = (None, 0);
    for i in 0..count {
        let e = &head[estart + i * esize..estart + (i + 1) * esize];
        if e[..16].iter().any(|&b| b != 0) && u64_at(e, 40) >= old_end {
            (idx, old_end) = (Some(i), u64_at(e, 40));
        }
    }
    let idx = idx.ok_or(GptError::Malformed("no partitions"))?;
    if old_end > last_usable {
        return Err(GptError::DiskTooSmall { disk, end: old_end });
    }
    let new_end = ((last_usable + 1) / ALIGN_SECTORS * ALIGN_SECTORS).saturating_sub(1).max(old_end);
    put_u64(&mut head[estart + idx * esize..], 40, new_end);
    let entries_crc = crc32fast::hash(&head[estart..estart + elen]);

    // Primary header: backup at the last sector, usable space to just before the backup array.
    let h = &mut head[s..s + hsize];
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
    backup[bh_at..bh_at + hsize].copy_from_slice(&head[s..s + hsize]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    /// A GPT image made by util-linux sfdisk (a real peer), grown by us, and checked by sfdisk.
    #[test]
    fn sfdisk_accepts_the_grown_table() {
        if Command::new("sfdisk").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "sfdisk missing: `make deps` installs fdisk");
            return;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let img = dir.path().join("disk.raw");
        let small: u64 = 64 << 20;
        std::fs::File::create(&img).and_then(|f| f.set_len(small)).expect("image");
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
        let d = Command::new("sfdisk").arg("--json").arg(&img).output().expect("dump");
        let j: serde_json::Value = serde_json::from_slice(&d.stdout).expect("json");
        let parts = &j["partitiontable"]["partitions"];
        assert_eq!(
            parts[1]["start"].as_u64().expect("start") + parts[1]["size"].as_u64().expect("size") - 1,
            g.new_end
        );
        assert_eq!(j["partitiontable"]["lastlba"].as_u64(), Some(big / SECTOR - 34));
    }

    #[test]
    fn corrupt_or_missing_tables_are_errors() {
        let mut zero = vec![0u8; 1 << 20];
        assert!(matches!(grow(&mut zero, 1 << 30), Err(GptError::NoHeader(_))));
        let mut h = vec![0u8; 1 << 20];
        h[512..520].copy_from_slice(SIGNATURE);
        put_u32(&mut h, 512 + 12, 92);
        assert_eq!(grow(&mut h, 1 << 30), Err(GptError::HeaderCrc));
        assert!(grow(&mut [0u8; 100], 1 << 30).is_err());
    }
}
