//! Two builds of the lab recipe from the same base give the same installer UKI, node UKI, ESP,
//! root ext4 and so the same disk.raw and qcow2, byte for byte (docs/images.md,
//! "Reproducibility"). Runs the real pipeline (mmdebstrap for the base when it is not cached,
//! then the derived stage twice), so it needs root and the tools `make deps` installs.

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
    let shared_cache =
        std::env::var_os("METAL6_IMAGE_CACHE").map_or_else(|| PathBuf::from("/var/cache/metal6/images"), PathBuf::from);
    let tmp = tempfile::tempdir().expect("tmp");
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
    // The base from the shared cache (built once if absent), then two independent derived builds.
    let first = build(&shared_cache, &tmp.path().join("out0"));
    let base = std::fs::read_dir(&shared_cache)
        .expect("cache")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("base-{}", &first.stages[0].key[..16])))
        })
        .expect("base tar in the shared cache");
    let mut reports = vec![];
    for i in 1..=2 {
        let cache = tmp.path().join(format!("cache{i}"));
        std::fs::create_dir_all(&cache).expect("cache");
        std::fs::hard_link(&base, cache.join(base.file_name().expect("name"))).expect("link base");
        let r = build(&cache, &tmp.path().join(format!("out{i}")));
        assert!(!r.stages[1].cached, "the derived stage really ran");
        reports.push(r);
    }
    let digest = |r: &metal6_image::Report, path: &str| {
        r.outputs.iter().find(|o| o.path == path).map(|o| o.sha256.clone()).expect(path)
    };
    for path in ["boot/installer.efi", "images/lab/node.efi"] {
        assert_eq!(digest(&reports[0], path), digest(&reports[1], path), "{path} differs between builds");
        assert_eq!(digest(&first, path), digest(&reports[0], path), "{path} differs from the shared cache's");
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
        assert_eq!(digest(&first, path), digest(&reports[0], path), "{path} differs from the shared cache's");
    }
}
