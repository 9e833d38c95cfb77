//! The few PE/COFF facts a UKI build needs (PE Format spec, "COFF File Header" and
//! "Optional Header Windows-Specific Fields"): where the systemd stub's image ends, so the
//! added sections follow it page-aligned, and the two fields objcopy fills from the clock.
//! We patch TimeDateStamp to the build epoch and CheckSum to 0 (UEFI does not check it),
//! which makes the UKI reproducible (shared notes, image-building §5).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    #[error("not a PE image: {0}")]
    NotPe(&'static str),
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(o)?, *b.get(o + 1)?]))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub image_base: u64,
    pub section_alignment: u64,
    /// End of the last section (relative virtual address).
    pub end_rva: u64,
    /// File offsets of the two clock-dependent fields.
    pub timestamp_at: usize,
    pub checksum_at: usize,
}

pub fn layout(b: &[u8]) -> Result<Layout, PeError> {
    if b.get(..2) != Some(b"MZ") {
        return Err(PeError::NotPe("no MZ header"));
    }
    let pe = u32_at(b, 0x3c).ok_or(PeError::NotPe("truncated"))? as usize;
    if b.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(PeError::NotPe("no PE signature"));
    }
    let sections = u16_at(b, pe + 6).ok_or(PeError::NotPe("truncated"))? as usize;
    let opt_size = u16_at(b, pe + 20).ok_or(PeError::NotPe("truncated"))? as usize;
    let opt = pe + 24;
    if u16_at(b, opt) != Some(0x20b) {
        return Err(PeError::NotPe("not PE32+"));
    }
    let image_base = u64_at(b, opt + 24).ok_or(PeError::NotPe("truncated"))?;
    let section_alignment = u64::from(u32_at(b, opt + 32).ok_or(PeError::NotPe("truncated"))?);
    let table = opt + opt_size;
    let mut end_rva = 0u64;
    for i in 0..sections {
        let s = table + i * 40;
        let vsize = u64::from(u32_at(b, s + 8).ok_or(PeError::NotPe("section table truncated"))?);
        let va = u64::from(u32_at(b, s + 12).ok_or(PeError::NotPe("section table truncated"))?);
        end_rva = end_rva.max(va + vsize);
    }
    if section_alignment == 0 || end_rva == 0 {
        return Err(PeError::NotPe("no sections"));
    }
    Ok(Layout { image_base, section_alignment, end_rva, timestamp_at: pe + 8, checksum_at: opt + 64 })
}

/// Sets TimeDateStamp to `epoch` and CheckSum to 0.
pub fn normalize(b: &mut [u8], epoch: u32) -> Result<(), PeError> {
    let l = layout(b)?;
    b[l.timestamp_at..l.timestamp_at + 4].copy_from_slice(&epoch.to_le_bytes());
    b[l.checksum_at..l.checksum_at + 4].copy_from_slice(&0u32.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    #[test]
    fn the_systemd_stub_parses() {
        let Ok(b) = std::fs::read(STUB) else {
            assert!(std::env::var_os("CI").is_none(), "{STUB} missing: `make deps` installs systemd-boot-efi");
            return;
        };
        let l = layout(&b).expect("stub layout");
        assert!(l.end_rva > 0 && l.section_alignment >= 512, "{l:?}");
        let mut c = b.clone();
        normalize(&mut c, 1_764_547_200).expect("normalize");
        assert_eq!(u32_at(&c, l.timestamp_at), Some(1_764_547_200));
        assert_eq!(u32_at(&c, l.checksum_at), Some(0));
        assert_eq!(layout(&c), Ok(l));
    }

    #[test]
    fn other_files_are_refused() {
        assert!(layout(b"not a pe").is_err());
        let mut fake = vec![0u8; 256];
        fake[..2].copy_from_slice(b"MZ");
        fake[0x3c] = 0x80;
        assert_eq!(layout(&fake), Err(PeError::NotPe("no PE signature")));
    }
}
