//! Two cold builds of the lab recipe, each from an empty cache, give the same base tar,
//! installer UKI, node UKI, ESP, root ext4 and so the same disk.raw and qcow2, byte for byte
//! (docs/images.md, "Reproducibility"). Runs the real pipeline twice from empty caches (mmdebstrap, tree,
//! disk), so it needs root, the mirror, and the tools `make deps` installs.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIP: {why}");
}

#[test]
fn derived_outputs_are_bit_identical_across_builds() {
    if !is_root() {
        return skip("image builds need root (mmdebstrap --mode=root, owners in the tree)");
    }
    let installer = workspace().join("target/debug/metal6-installer");
    if !installer.exists() {
        return skip(
            "target/debug/metal6-installer is missing: `cargo build --workspace --bins` first (make test does)",
        );
    }
    if std::process::Command::new("mmdebstrap").arg("--version").output().is_err() {
        return skip("mmdebstrap is not installed (run `make deps`)");
    }
    let recipe = workspace().join("images/lab.yaml");
    let tmp = tempfile::tempdir_in("/var/tmp").expect("tmp");
    let build = |cache: &Path, out: &Path| {
        let opts = metal6_image::Options {
            recipe_path: recipe.clone(),
            out: out.to_path_buf(),
            cache: cache.to_path_buf(),
            installer_bin: installer.clone(),
            installer_ca: None,
        };
        metal6_image::build(&opts, &mut |l| eprintln!("{l}")).unwrap_or_else(|e| panic!("build: {e:#}"))
    };
    // Two cold builds, back to back (one mirror state), each from an empty cache of its own:
    // mmdebstrap, tree and disk all run twice.
    let mut reports = vec![];
    for i in 1..=2 {
        let cache = tmp.path().join(format!("cache{i}"));
        let r = build(&cache, &tmp.path().join(format!("out{i}")));
        assert!(r.stages.iter().all(|s| !s.cached), "build {i} was cold: {:?}", r.stages);
        reports.push(r);
    }
    let base = |i: usize| {
        let key = &reports[i - 1].stages[0].key;
        tmp.path().join(format!("cache{i}/base-{}.tar", &key[..16]))
    };
    assert_eq!(reports[0].stages[0].key, reports[1].stages[0].key, "the same recipe has one base key");
    if !same_bytes(&base(1), &base(2)) {
        // The two builds fetched from the mirror (a CDN) a minute apart: if it moved between
        // them they installed different packages, which says nothing about the builder.
        let status = |i: usize| {
            let out = std::process::Command::new("tar")
                .arg("-xOf")
                .arg(base(i))
                .arg("./var/lib/dpkg/status")
                .output()
                .expect("tar");
            assert!(out.status.success(), "no dpkg status in {}", base(i).display());
            out.stdout
        };
        if status(1) != status(2) {
            eprintln!("SKIP: the mirror served other packages to the second build; nothing to compare");
            return;
        }
        panic!("the base tars (mmdebstrap) differ with the same packages installed");
    }
    let digest = |r: &metal6_image::Report, path: &str| {
        r.outputs.iter().find(|o| o.path == path).map(|o| o.sha256.clone()).expect(path)
    };
    for path in ["boot/installer.efi", "images/lab/node.efi"] {
        assert_eq!(digest(&reports[0], path), digest(&reports[1], path), "{path} differs between builds");
    }
    // The ESP inside the two disks: the first partition, byte for byte.
    let manifest = |i: usize| -> serde_json::Value {
        let p = tmp.path().join(format!("out{i}/images/lab/manifest.json"));
        serde_json::from_str(&std::fs::read_to_string(p).expect("manifest")).expect("json")
    };
    assert_eq!(manifest(1)["partitions"], manifest(2)["partitions"], "UUIDs come from the stage key");
    let esp = |i: usize| {
        let out = std::process::Command::new("sfdisk")
            .arg("--json")
            .arg(tmp.path().join(format!("out{i}/images/lab/disk.raw")))
            .output()
            .expect("sfdisk");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk json");
        let p = &j["partitiontable"]["partitions"][0];
        let (start, size) = (p["start"].as_u64().expect("start") * 512, p["size"].as_u64().expect("size") * 512);
        let disk = std::fs::read(tmp.path().join(format!("out{i}/images/lab/disk.raw"))).expect("disk");
        disk[usize::try_from(start).expect("s")..usize::try_from(start + size).expect("e")].to_vec()
    };
    assert!(esp(1) == esp(2), "the ESPs differ");
    // The root ext4 too (inode change and access times pinned to the epoch after mkfs.ext4 -d),
    // so the whole disk and its qcow2.
    for path in ["images/lab/disk.raw", "images/lab/disk.qcow2"] {
        assert_eq!(digest(&reports[0], path), digest(&reports[1], path), "{path} differs between builds");
    }
}

/// Compares two files in 1 MiB pieces (the base tars are ~450 MiB each).
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let open = |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).expect("read");
        if n == 0 {
            return fb.read(&mut bb[..1]).expect("read") == 0;
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}
