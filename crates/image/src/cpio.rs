//! The initramfs archive: cpio "newc" (the format the kernel unpacks, see the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`), written by us so that it is
//! reproducible — entries sorted, every mtime the build epoch, owners root, inode numbers
//! by position — without the `cpio` tool's dependence on the build tree's metadata.

use std::io::{self, Write};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Writes `entries` (path without leading `/` → entry), sorted by path, then the trailer.
pub fn write(out: &mut impl Write, entries: &std::collections::BTreeMap<String, Entry>, mtime: u32) -> io::Result<()> {
    let mut pos = 0usize;
    for (ino, (path, e)) in (1u32..).zip(entries) {
        let (mode, data): (u32, &[u8]) = match e {
            Entry::Dir { mode } => (S_IFDIR | mode, &[]),
            Entry::File { mode, data } => (S_IFREG | mode, data),
            Entry::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes()),
        };
        let nlink = if matches!(e, Entry::Dir { .. }) { 2 } else { 1 };
        pos += header(out, ino, mode, nlink, mtime, data.len(), path, pos)?;
        out.write_all(data)?;
        pos += data.len();
        pos += pad(out, pos)?;
    }
    pos += header(out, 0, 0, 1, 0, 0, "TRAILER!!!", pos)?;
    let _ = pos;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the newc header's fields, in order
fn header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    name: &str,
    pos: usize,
) -> io::Result<usize> {
    let size = u32::try_from(size).map_err(|_| io::Error::other("initramfs member over 4 GiB"))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| io::Error::other("name too long"))?;
    let h = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{mtime:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0, 0, 0
    );
    out.write_all(h.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let n = h.len() + name.len() + 1;
    Ok(n + pad(out, pos + n)?)
}

fn pad(out: &mut impl Write, pos: usize) -> io::Result<usize> {
    let n = (4 - pos % 4) % 4;
    out.write_all(&[0u8; 3][..n])?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sample() -> BTreeMap<String, Entry> {
        let mut m = BTreeMap::new();
        m.insert("bin".into(), Entry::Dir { mode: 0o755 });
        m.insert("bin/sh".into(), Entry::Symlink { target: "busybox".into() });
        m.insert("init".into(), Entry::File { mode: 0o755, data: b"#!/bin/sh\necho hi\n".to_vec() });
        m.insert("etc/x".into(), Entry::File { mode: 0o600, data: vec![1, 2, 3, 4, 5] });
        m.insert("etc".into(), Entry::Dir { mode: 0o755 });
        m
    }

    /// GNU cpio (a real peer) lists and extracts what we wrote, with modes and link targets.
    #[test]
    fn gnu_cpio_reads_it_back() {
        let mut buf = vec![];
        write(&mut buf, &sample(), 1_700_000_000).expect("write");
        let mut again = vec![];
        write(&mut again, &sample(), 1_700_000_000).expect("write");
        assert_eq!(buf, again, "same input, same bytes");
        if std::process::Command::new("cpio").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "cpio missing: `make deps` installs it");
            return;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &buf).expect("archive");
        let x = dir.path().join("x");
        std::fs::create_dir(&x).expect("dir");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && cpio -idm --quiet < {}", x.display(), archive.display()))
            .output()
            .expect("cpio");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(x.join("init")).expect("init"), b"#!/bin/sh\necho hi\n");
        assert_eq!(std::fs::read_link(x.join("bin/sh")).expect("link").to_str(), Some("busybox"));
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(x.join("etc/x")).expect("meta");
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(m.mtime(), 1_700_000_000);
    }
}
