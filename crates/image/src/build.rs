//! The build, in content-addressed stages:
//!
//! 1. **base** — mmdebstrap's root filesystem as a tar (reproducible with
//!    SOURCE_DATE_EPOCH, shared notes image-building §5), keyed by suite, mirror, variant,
//!    packages, path excludes, extra repositories, epoch and the mmdebstrap version. The slow
//!    stage (~100 s here), so a recipe change that only touches the layers below reuses it.
//! 2. **tree** — keyed by the base key and everything else of the recipe but the sysctl
//!    profile, plus the installer binary: the tree (base + our layer: units, agent, fstab),
//!    the root ext4 (`mkfs.ext4 -d`), the node UKI (systemd stub + the image's kernel and
//!    initramfs), the ESP (`mkfs.vfat --invariant` + `mcopy`) and the installer UKI (the same
//!    kernel + our own initramfs: busybox, the installer, the module closure).
//! 3. **disk** — keyed by the tree key and the sysctl profile: the profile written into a
//!    copy of the root ext4 with debugfs, the GPT disk (`sfdisk`), the qcow2, the digests. A
//!    sysctl-only change rebuilds only this (~5 s).
//!
//! Every UUID and volume id is derived from the stage key, every timestamp is the epoch.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cpio::{self, Entry};
use crate::recipe::Recipe;
use crate::{modules, pe, sysctl, tools};

/// Bumped when the base stage's code (how mmdebstrap is run) changes what it produces.
const BASE_FORMAT: u32 = 2;
/// Bumped when the derived stage's code changes what it produces.
const DERIVED_FORMAT: u32 = 2;
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Discoverable Partitions Specification: root, x86-64.
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    pub recipe_path: PathBuf,
    /// The artifact root `metal6 serve --artifacts` serves.
    pub out: PathBuf,
    pub cache: PathBuf,
    /// The metal6-installer binary to put into the installer and the image.
    pub installer_bin: PathBuf,
    /// The CA (PEM) the installer trusts for HTTPS (`https: true` profiles): put into the
    /// installer's initramfs as `/etc/metal6/ca.pem`, and from there into each installed
    /// system. The firmware fetched the installer over HTTPS verified by the same CA, so the
    /// CA inside it is as trustworthy as the installer.
    pub installer_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    pub key: String,
    pub cached: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Output {
    /// Relative to the artifact root.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub stages: Vec<StageReport>,
    pub outputs: Vec<Output>,
    pub manifest: String,
}

/// Progress lines for a terminal (the library never prints).
pub type Progress<'a> = &'a mut dyn FnMut(&str);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 * MIB as usize];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// A UUID (RFC 9562 version 8, custom) derived from a stage key and a purpose.
fn uuid(key: &str, what: &str) -> String {
    let d = Sha256::digest(format!("{key}\0{what}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

pub fn base_key(r: &Recipe, recipe_dir: &Path) -> Result<String> {
    let mut packages = r.packages.clone();
    packages.sort();
    packages.dedup();
    let mut exclude = r.exclude.clone();
    exclude.sort();
    let mut repos = vec![];
    for repo in &r.apt_repositories {
        let key = std::fs::read(recipe_dir.join(&repo.key)).with_context(|| format!("apt key {}", repo.key))?;
        repos.push(serde_json::json!({"name": repo.name, "line": repo.line, "key": hex(&Sha256::digest(&key))}));
    }
    let v = serde_json::json!({
        "suite": r.debian.suite, "mirror": r.debian.mirror, "variant": r.debian.variant,
        "packages": packages, "exclude": exclude, "repos": repos, "epoch": r.epoch,
        "mmdebstrap": tools::version("mmdebstrap"), "format": BASE_FORMAT,
    });
    Ok(hex(&Sha256::digest(v.to_string().as_bytes())))
}

pub fn build(opts: &Options, progress: Progress<'_>) -> Result<Report> {
    tools::require(&[
        "mmdebstrap",
        "tar",
        "mkfs.ext4",
        "debugfs",
        "mkfs.vfat",
        "mcopy",
        "sfdisk",
        "objcopy",
        "ldd",
        "strip",
    ])?;
    let recipe = crate::recipe::load(&opts.recipe_path)?;
    let recipe_dir = opts.recipe_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let checked = sysctl::check(&recipe.sysctl).map_err(|errs| {
        anyhow!(
            "{}: the sysctl profile is refused:\n{}",
            opts.recipe_path.display(),
            errs.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
        )
    })?;
    if !Path::new(STUB).exists() {
        bail!("{STUB} is missing (run `make deps`: systemd-boot-efi)");
    }
    std::fs::create_dir_all(&opts.cache).with_context(|| format!("creating {}", opts.cache.display()))?;
    // One build per cache at a time: stages are renamed into place and pruned.
    let lock = std::fs::File::create(opts.cache.join(".lock"))?;
    if lock.try_lock().is_err() {
        progress(&format!("cache {} is in use by another build; waiting", opts.cache.display()));
        lock.lock()?;
    }
    let mut stages = vec![];

    // Stage 1: base.
    let bkey = base_key(&recipe, &recipe_dir)?;
    let base_tar = opts.cache.join(format!("base-{}.tar", &bkey[..16]));
    let t = Instant::now();
    let cached = base_tar.exists();
    if cached {
        progress(&format!("base: cached ({})", base_tar.display()));
    } else {
        progress(&format!(
            "base: mmdebstrap {} {} ({} packages)…",
            recipe.debian.suite,
            recipe.debian.mirror,
            recipe.packages.len()
        ));
        mmdebstrap(&recipe, &recipe_dir, &base_tar, progress)?;
    }
    stages.push(StageReport { stage: "base", key: bkey.clone(), cached, seconds: t.elapsed().as_secs_f64() });

    // Stage 2: derived.
    let installer_sha = sha256_file(&opts.installer_bin).with_context(|| {
        format!("the installer binary {} (build it: cargo build -p metal6-installer)", opts.installer_bin.display())
    })?;
    let installer_ca = match &opts.installer_ca {
        Some(p) => {
            let pem = std::fs::read(p).with_context(|| format!("the installer CA {}", p.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!("the installer CA {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", p.display());
            }
            Some(pem)
        }
        None => None,
    };
    // Stages built with an installer CA are another lineage of the recipe: building with and
    // without one (or with a rotated CA) prunes only its own lineage's older stages.
    let lineage = if installer_ca.is_some() { format!("{}+installer-ca", recipe.name) } else { recipe.name.clone() };
    let tkey = {
        let mut r = recipe.clone();
        r.name.clear(); // the name only places outputs
        r.sysctl.clear(); // the sysctl profile is patched in by the last stage
        r.outputs.ipxe = None; // copied at publish time, into no stage
        let v = serde_json::json!({"format": DERIVED_FORMAT, "base": bkey, "recipe": r, "installer": installer_sha,
            "stub": sha256_file(Path::new(STUB))?, "busybox": sha256_file(Path::new("/bin/busybox"))?,
            "e2fsprogs": tools::version("mkfs.ext4"),
            "installer_ca": installer_ca.as_ref().map(|pem| hex(&Sha256::digest(pem)))});
        hex(&Sha256::digest(v.to_string().as_bytes()))
    };
    let (tree_dir, report) = stage(&opts.cache, "tree", &tkey, &lineage, progress, |tmp, progress| {
        derive(&recipe, &base_tar, &tkey, &opts.installer_bin, installer_ca.as_deref(), tmp, progress)
    })?;
    stages.push(report);

    // Stage 3: the disk, with the sysctl profile patched into the tree's root filesystem.
    let dkey = {
        let v = serde_json::json!({"tree": tkey, "sysctl": checked, "qcow2": recipe.outputs.qcow2});
        hex(&Sha256::digest(v.to_string().as_bytes()))
    };
    let (derived, report) = stage(&opts.cache, "disk", &dkey, &lineage, progress, |tmp, progress| {
        assemble(&recipe, &checked, &tree_dir, tmp, progress)
    })?;
    if !report.cached {
        prune(&opts.cache, &lineage, &[&derived, &tree_dir], &base_tar, progress);
    }
    stages.push(report);

    // Publish into the artifact root.
    let img_dir = format!("images/{}", recipe.name);
    let mut outputs = vec![];
    let mut publish = |from: &str, to: &str| -> Result<()> {
        let src = derived.join(from);
        let dst = opts.out.join(to);
        std::fs::create_dir_all(dst.parent().unwrap_or(&opts.out))?;
        let _ = std::fs::remove_file(&dst);
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
        let bytes = std::fs::metadata(&dst)?.len();
        outputs.push(Output { path: to.to_owned(), bytes, sha256: read_digest(&derived, from)? });
        Ok(())
    };
    publish("disk.raw", &format!("{img_dir}/disk.raw"))?;
    if recipe.outputs.qcow2 {
        publish("disk.qcow2", &format!("{img_dir}/disk.qcow2"))?;
    }
    publish("node.efi", &format!("{img_dir}/node.efi"))?;
    publish("installer.efi", "boot/installer.efi")?;
    publish("installer.efi", "installer.efi")?;
    if let Some(ipxe) = &recipe.outputs.ipxe {
        // Where the inventory's boot URLs point `boot: ipxe` nodes (metal6_inventory::plan::IPXE_HTTP_PATH).
        let dst = opts.out.join("boot/ipxe.efi");
        std::fs::copy(ipxe, &dst)
            .with_context(|| format!("outputs.ipxe: copying {} (Debian: apt install ipxe)", ipxe.display()))?;
        outputs.push(Output {
            path: "boot/ipxe.efi".to_owned(),
            bytes: std::fs::metadata(&dst)?.len(),
            sha256: sha256_file(&dst)?,
        });
    }
    let disk_sha = &outputs[0].sha256;
    std::fs::write(opts.out.join(&img_dir).join("disk.raw.sha256"), format!("{disk_sha}  disk.raw\n"))?;
    let mut sums = String::new();
    for o in &outputs {
        sums.push_str(&format!("{}  {}\n", o.sha256, o.path));
    }
    std::fs::write(opts.out.join(&img_dir).join("SHA256SUMS"), &sums)?;
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(derived.join("manifest.json"))?).context("manifest")?;
    manifest["image"] = recipe.name.clone().into();
    manifest["recipe_sha256"] = sha256_file(&opts.recipe_path)?.into();
    manifest["outputs"] = serde_json::to_value(&outputs)?;
    let manifest_path = format!("{img_dir}/manifest.json");
    std::fs::write(opts.out.join(&manifest_path), serde_json::to_string_pretty(&manifest)? + "\n")?;
    Ok(Report { image: recipe.name, stages, outputs, manifest: manifest_path })
}

/// A cached stage: `CACHE/PREFIX-KEY/` when its `complete` marker exists, else built by
/// `build` into a `.tmp` directory that is renamed into place and marked with the recipe's
/// name (which `prune` reads).
fn stage(
    cache: &Path,
    prefix: &'static str,
    key: &str,
    recipe: &str,
    progress: Progress<'_>,
    build: impl FnOnce(&Path, Progress<'_>) -> Result<()>,
) -> Result<(PathBuf, StageReport)> {
    let dir = cache.join(format!("{prefix}-{}", &key[..16]));
    let t = Instant::now();
    let cached = dir.join("complete").exists();
    if cached {
        progress(&format!("{prefix}: cached ({})", dir.display()));
    } else {
        let tmp = cache.join(format!("{prefix}-{}.tmp", &key[..16]));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        build(&tmp, progress)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)?;
        std::fs::write(dir.join("complete"), recipe.as_bytes())?;
    }
    let report = StageReport { stage: prefix, key: key.to_owned(), cached, seconds: t.elapsed().as_secs_f64() };
    Ok((dir, report))
}

/// Keeps the cache from growing without bound: other derived stages of the same recipe,
/// unfinished stages, and base tars no derived stage came from are removed.
fn prune(cache: &Path, name: &str, keep: &[&Path], base: &Path, progress: Progress<'_>) {
    let Ok(dir) = std::fs::read_dir(cache) else { return };
    let mut bases_in_use = vec![base.to_path_buf()];
    let mut drop_list = vec![];
    for e in dir.flatten() {
        let p = e.path();
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".tmp") {
            drop_list.push(p);
        // `derived-`: what the disk stage was called before the tree stage split off.
        } else if ["disk-", "tree-", "derived-"].iter().any(|s| n.starts_with(s)) && !keep.contains(&p.as_path()) {
            match std::fs::read_to_string(p.join("complete")) {
                Ok(owner) if owner == name => drop_list.push(p),
                Ok(_) => {
                    if let Ok(m) = std::fs::read_to_string(p.join("manifest.json"))
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&m)
                        && let Some(b) = v["base_key"].as_str()
                    {
                        bases_in_use.push(cache.join(b));
                    }
                }
                Err(_) => drop_list.push(p),
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(cache) {
        for e in dir.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with("base-") && !bases_in_use.contains(&p) {
                drop_list.push(p);
            }
        }
    }
    for p in drop_list {
        progress(&format!("cache: removing {}", p.display()));
        let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
    }
}

/// Digests are computed once, when a derived stage is built, and kept beside the output.
fn read_digest(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(format!("{file}.sha256"));
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(_) => {
            let d = sha256_file(&dir.join(file))?;
            std::fs::write(&p, &d)?;
            Ok(d)
        }
    }
}

fn mmdebstrap(r: &Recipe, recipe_dir: &Path, out: &Path, progress: Progress<'_>) -> Result<()> {
    let tmp = out.with_extension("tar.tmp");
    let root = is_root();
    let mut cmd = Command::new("mmdebstrap");
    // The initramfs once, after every package is configured: dpkg would build it twice, in the
    // kernel's postinst and again when the initramfs-tools trigger runs at the end (17-20 s
    // each for the lab recipe, a third of the cold build). INITRD=No makes the kernel's hook
    // skip (the trigger then finds no initramfs to update); the customize hook makes it.
    cmd.env("SOURCE_DATE_EPOCH", r.epoch.to_string())
        .env("INITRD", "No")
        .arg(if root { "--mode=root" } else { "--mode=unshare" })
        .arg(format!("--variant={}", r.debian.variant))
        .arg(format!("--include={}", r.packages.join(",")))
        .arg("--format=tar");
    for x in &r.exclude {
        cmd.arg(format!("--dpkgopt=path-exclude={x}"));
    }
    for repo in &r.apt_repositories {
        let key = recipe_dir.join(&repo.key);
        cmd.arg("--setup-hook=mkdir -p \"$1\"/etc/apt/keyrings");
        cmd.arg(format!("--setup-hook=copy-in {} /etc/apt/keyrings/", key.display()));
        let name = key.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let line = repo.line.replacen("deb ", &format!("deb [signed-by=/etc/apt/keyrings/{name}] "), 1);
        cmd.arg(format!("--setup-hook=echo '{line}' > \"$1\"/etc/apt/sources.list.d/{}.list", repo.name));
    }
    // Per-build files that would make two builds differ, and that a node must not share.
    cmd.arg("--customize-hook=rm -f \"$1\"/etc/resolv.conf \"$1\"/etc/hostname \"$1\"/etc/ssh/ssh_host_*");
    cmd.arg("--customize-hook=: > \"$1\"/etc/machine-id");
    cmd.arg(
        "--customize-hook=if [ -x \"$1\"/usr/sbin/update-initramfs ]; then chroot \"$1\" update-initramfs -c -k all; fi",
    );
    cmd.arg(&r.debian.suite).arg(&tmp).arg(&r.debian.mirror);
    tools::run_streaming(&mut cmd, &mut |l| progress(&format!("base: {l}")))?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn set_epoch(p: &Path, epoch: u64) -> Result<()> {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
    let f = std::fs::File::options().write(true).open(p).or_else(|_| std::fs::File::open(p))?;
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))?;
    Ok(())
}

fn write_file(root: &Path, rel: &str, body: &[u8], mode: u32, epoch: u64) -> Result<()> {
    let p = root.join(rel.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    set_epoch(&p, epoch)
}

/// Units metal6 adds to every image.
const UNITS: &[(&str, &str)] = &[
    (
        "metal6-sysctl.service",
        "[Unit]\nDescription=metal6: apply the image's sysctl profile, raise-only\nDefaultDependencies=no\n\
         After=systemd-modules-load.service systemd-sysctl.service local-fs.target\nBefore=sysinit.target network-pre.target\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/sbin/metal6-installer sysctl /etc/metal6/image-sysctl.conf\n\
         StandardOutput=journal+console\n[Install]\nWantedBy=sysinit.target\n",
    ),
    (
        "metal6-ready.service",
        "[Unit]\nDescription=metal6: report ready to the provisioning server\nWants=network-online.target\n\
         After=network-online.target metal6-sysctl.service\nConditionPathExists=/etc/metal6/node.json\n\
         [Service]\nType=oneshot\nExecStart=/usr/local/sbin/metal6-installer ready\nStandardOutput=journal+console\n\
         Restart=on-failure\nRestartSec=10\n[Install]\nWantedBy=multi-user.target\n",
    ),
    (
        "metal6-ssh-hostkeys.service",
        "[Unit]\nDescription=metal6: this node's own SSH host keys (the image ships none)\nBefore=ssh.service\n\
         ConditionPathExists=/usr/bin/ssh-keygen\n\
         [Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n[Install]\nWantedBy=multi-user.target\n",
    ),
];

/// `systemctl enable` without systemd: the `[Install]` section's WantedBy/RequiredBy links
/// and `Also=` units, from the unit files in the tree.
fn enable(tree: &Path, unit: &str, done: &mut Vec<String>) -> Result<()> {
    if done.iter().any(|u| u == unit) {
        return Ok(());
    }
    done.push(unit.to_owned());
    let candidates = ["etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"];
    let (dir, text) = candidates
        .iter()
        .find_map(|d| std::fs::read_to_string(tree.join(d).join(unit)).ok().map(|t| (*d, t)))
        .ok_or_else(|| anyhow!("services: unit {unit} is not in the image (is its package in the recipe?)"))?;
    let mut in_install = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        let Some((k, v)) = l.split_once('=').filter(|_| in_install) else { continue };
        for target in v.split_whitespace() {
            match k.trim() {
                "WantedBy" | "RequiredBy" => {
                    let suffix = if k.trim() == "WantedBy" { "wants" } else { "requires" };
                    let link_dir = tree.join(format!("etc/systemd/system/{target}.{suffix}"));
                    std::fs::create_dir_all(&link_dir)?;
                    let link = link_dir.join(unit);
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(format!("/{dir}/{unit}"), &link)?;
                }
                "Also" => enable(tree, target, done)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Installed package versions, from the tree's dpkg status: the lock of the build.
fn packages(tree: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap_or_default();
    let mut out = BTreeMap::new();
    for para in text.split("\n\n") {
        let field = |f: &str| para.lines().find_map(|l| l.strip_prefix(f)).map(|v| v.trim().to_owned());
        if let (Some(p), Some(v), Some(s)) = (field("Package:"), field("Version:"), field("Status:"))
            && s.ends_with("installed")
            && !s.contains("not-installed")
        {
            out.insert(p, v);
        }
    }
    out
}

fn one_file(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no {prefix}* in {}", dir.display()),
        _ => bail!("several {prefix}* in {}: {found:?}", dir.display()),
    }
}

#[allow(clippy::too_many_arguments)]
fn derive(
    r: &Recipe,
    base_tar: &Path,
    key: &str,
    installer_bin: &Path,
    installer_ca: Option<&[u8]>,
    work: &Path,
    progress: Progress<'_>,
) -> Result<()> {
    let epoch = r.epoch;
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree)?;
    progress("tree: unpacking the base");
    tools::run(Command::new("tar").arg("-xpf").arg(base_tar).arg("-C").arg(&tree).arg("--numeric-owner"))?;

    let root_part = uuid(key, "root-partition");
    let esp_part = uuid(key, "esp-partition");
    let disk_guid = uuid(key, "disk");
    let fs_uuid = uuid(key, "root-fs");

    // Our layer.
    let agent = work.join("metal6-installer");
    tools::run(Command::new("strip").arg("-o").arg(&agent).arg(installer_bin))?;
    let agent_bytes = std::fs::read(&agent)?;
    write_file(&tree, "usr/local/sbin/metal6-installer", &agent_bytes, 0o755, epoch)?;
    // The sysctl profile is written by the last stage (`assemble`); its directory is here.
    std::fs::create_dir_all(tree.join("etc/metal6"))?;
    set_epoch(&tree.join("etc/metal6"), epoch)?;
    for (name, body) in UNITS {
        write_file(&tree, &format!("etc/systemd/system/{name}"), body.as_bytes(), 0o644, epoch)?;
    }
    write_file(
        &tree,
        "etc/fstab",
        format!(
            "# metal6: the root grows to the disk on first boot\nPARTUUID={root_part} / ext4 rw,x-systemd.growfs 0 1\n"
        )
        .as_bytes(),
        0o644,
        epoch,
    )?;
    if !r.modules_load.is_empty() {
        write_file(
            &tree,
            "etc/modules-load.d/metal6.conf",
            (r.modules_load.join("\n") + "\n").as_bytes(),
            0o644,
            epoch,
        )?;
    }
    for (path, f) in &r.files {
        write_file(&tree, path, f.content.as_bytes(), f.mode, epoch)?;
    }
    let mut enabled = vec![];
    for u in UNITS.iter().map(|(n, _)| (*n).to_owned()).chain(r.services.iter().cloned()) {
        enable(&tree, &u, &mut enabled)?;
    }

    let boot = tree.join("boot");
    let vmlinuz = one_file(&boot, "vmlinuz-")?;
    let initrd = one_file(&boot, "initrd.img-")?;
    let kver =
        vmlinuz.file_name().map(|n| n.to_string_lossy().trim_start_matches("vmlinuz-").to_owned()).unwrap_or_default();
    let os_release = std::fs::read(tree.join("usr/lib/os-release")).context("os-release in the image")?;

    // Root filesystem.
    let t = Instant::now();
    let du = tools::run(Command::new("du").arg("-s").arg("-B1").arg(&tree))?;
    let used: u64 = du.split_whitespace().next().and_then(|n| n.parse().ok()).context("du")?;
    let root_bytes = (used + used / 10 + r.root_headroom_mib * MIB).div_ceil(MIB) * MIB;
    let root_img = work.join("root.ext4");
    tools::run(
        Command::new("mkfs.ext4")
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .args(["-q", "-F", "-L", "metal6-root", "-U", &fs_uuid])
            .arg("-E")
            .arg(format!("hash_seed={fs_uuid},root_owner=0:0"))
            .arg("-d")
            .arg(&tree)
            .arg(&root_img)
            .arg(format!("{}k", root_bytes / 1024)),
    )?;
    let normalized = normalize_times(&tree, &root_img, work, epoch)?;
    progress(&format!(
        "tree: root.ext4 {} MiB, {normalized} inodes' times set to the epoch, in {:.1} s",
        root_bytes / MIB,
        t.elapsed().as_secs_f64()
    ));

    // Node UKI: the image's own kernel and initramfs.
    let cmdline = format!("root=PARTUUID={root_part} rw {}", r.kernel_cmdline).trim().to_owned();
    let node_uki = work.join("node.efi");
    uki(&vmlinuz, &std::fs::read(&initrd)?, &cmdline, &os_release, &node_uki, work, epoch)?;

    // ESP with the UKI as the removable-media path: firmware boots it with no boot entry.
    let uki_len = std::fs::metadata(&node_uki)?.len();
    let esp_bytes = ((uki_len + 8 * MIB) * 5 / 4).div_ceil(MIB).max(64) * MIB;
    let esp_img = work.join("esp.img");
    let stage = work.join("esp");
    std::fs::create_dir_all(stage.join("EFI/BOOT"))?;
    std::fs::copy(&node_uki, stage.join("EFI/BOOT/BOOTX64.EFI"))?;
    for p in [stage.join("EFI/BOOT/BOOTX64.EFI"), stage.join("EFI/BOOT"), stage.join("EFI")] {
        set_epoch(&p, epoch)?;
    }
    let vol_id = &uuid(key, "esp-volume").replace('-', "")[..8];
    tools::run(
        Command::new("mkfs.vfat")
            .args(["--invariant", "-F", "32", "-n", "METAL6-ESP", "-i", vol_id, "-C"])
            .arg(&esp_img)
            .arg((esp_bytes / 1024).to_string()),
    )?;
    tools::run(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args(["-s", "-m", "-i"])
            .arg(&esp_img)
            .arg(stage.join("EFI"))
            .arg("::/"),
    )?;

    // Installer UKI: the same kernel, our initramfs.
    let t = Instant::now();
    let initramfs = installer_initramfs(r, &tree, &kver, &agent, installer_ca, epoch)?;
    let inst_cmdline =
        format!("console=tty0 console=ttyS0,115200 panic=30 {}", r.installer.kernel_cmdline).trim().to_owned();
    let inst_osrel =
        format!("ID=metal6-installer\nNAME=\"metal6 installer\"\nVERSION_ID={}\n", env!("CARGO_PKG_VERSION"));
    uki(&vmlinuz, &initramfs, &inst_cmdline, inst_osrel.as_bytes(), &work.join("installer.efi"), work, epoch)?;
    progress(&format!(
        "tree: installer UKI ({} KiB initramfs) in {:.1} s",
        initramfs.len() / 1024,
        t.elapsed().as_secs_f64()
    ));

    for f in ["node.efi", "installer.efi"] {
        std::fs::write(work.join(format!("{f}.sha256")), sha256_file(&work.join(f))?)?;
    }
    let manifest = serde_json::json!({
        "epoch": epoch,
        "base_key": base_tar.file_name().map(|n| n.to_string_lossy().into_owned()),
        "tree_key": key,
        "layout": {"esp_bytes": esp_bytes, "root_bytes": root_bytes},
        "kernel": kver,
        "kernel_cmdline": cmdline,
        "installer_cmdline": inst_cmdline,
        "partitions": {"disk_guid": disk_guid, "esp": esp_part, "root": root_part, "root_fs_uuid": fs_uuid},
        "enabled_units": enabled,
        "packages": packages(&tree),
        "tools": {"mmdebstrap": tools::version("mmdebstrap"), "e2fsprogs": tools::version("mkfs.ext4"),
                  "objcopy": tools::version("objcopy"), "mtools": tools::version("mcopy"), "sfdisk": tools::version("sfdisk")},
    });
    std::fs::write(work.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    std::fs::remove_dir_all(&tree)?;
    std::fs::remove_dir_all(&stage)?;
    Ok(())
}

/// `mkfs.ext4 -d` (e2fsprogs 1.47.0) copies each file's times from the unpacked tree: change
/// and access times are when this build unpacked and read it, and the modification times of
/// what this stage wrote or made (directories it wrote into, unit symlinks) are now. Sets
/// change and access times to the epoch in every inode and clamps modification times to it,
/// with debugfs (no mount); the packages' own modification times stay. Returns the inodes set.
fn normalize_times(tree: &Path, img: &Path, work: &Path, epoch: u64) -> Result<usize> {
    let mut cmds = String::new();
    let mut n = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = tree.join(&rel);
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            let mut names: Vec<_> =
                std::fs::read_dir(&path)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
            // Sorted: the command file is the same for the same tree.
            names.sort();
            stack.extend(names.into_iter().rev().map(|name| rel.join(name)));
        }
        let name = format!("/{}", rel.display());
        // debugfs splits its commands on white space and takes "…" as one word; a line ends
        // at a newline or a carriage return.
        if name.contains(['"', '\n', '\r']) || rel.to_str().is_none() {
            bail!("{name:?} in the image tree: debugfs cannot name it, so its times cannot be made reproducible");
        }
        // Modification times later than the epoch are this build's own (a directory it wrote
        // into, a symlink it made): clamped, as `tar --clamp-mtime` and mmdebstrap do.
        let clamp_mtime = u64::try_from(std::os::unix::fs::MetadataExt::mtime(&meta)).map_or(true, |m| m > epoch);
        for field in ["ctime", "atime"].into_iter().chain(clamp_mtime.then_some("mtime")) {
            cmds.push_str(&format!("set_inode_field \"{name}\" {field} @{epoch}\n"));
        }
        n += 1;
    }
    let cmd_file = work.join("times.debugfs");
    std::fs::write(&cmd_file, cmds)?;
    let out = Command::new("debugfs")
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .arg("-w")
        .arg("-f")
        .arg(&cmd_file)
        .arg(img)
        .stdin(std::process::Stdio::null())
        .output()
        .context("starting debugfs")?;
    std::fs::remove_file(&cmd_file)?;
    // debugfs exits 0 whatever its commands did: its errors are the stderr lines after the
    // version banner.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stderr.lines().find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty()) {
        bail!("debugfs could not set the times in {}: {line}", img.display());
    }
    if !out.status.success() {
        bail!("debugfs failed on {} ({})", img.display(), out.status);
    }
    Ok(n)
}

/// The last stage: the tree's root filesystem with the sysctl profile written into it by
/// debugfs (no mount; times pinned to the epoch, so the result is as reproducible as the
/// tree), then the GPT disk, the qcow2, digests and the manifest. A sysctl-only change
/// rebuilds just this.
fn assemble(r: &Recipe, checked: &[sysctl::Checked], tree: &Path, work: &Path, progress: Progress<'_>) -> Result<()> {
    let t = Instant::now();
    let epoch = r.epoch;
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tree.join("manifest.json"))?).context("tree manifest")?;
    let esp_bytes = manifest["layout"]["esp_bytes"].as_u64().context("layout")?;
    let root_bytes = manifest["layout"]["root_bytes"].as_u64().context("layout")?;
    let part = |k: &str| manifest["partitions"][k].as_str().map(str::to_owned).context("partitions");
    let (disk_guid, esp_part, root_part) = (part("disk_guid")?, part("esp")?, part("root")?);

    let root_img = work.join("root.ext4");
    std::fs::copy(tree.join("root.ext4"), &root_img)?;
    let conf = work.join("image-sysctl.conf");
    std::fs::write(&conf, sysctl::conf(checked))?;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))?;
    let target = "/etc/metal6/image-sysctl.conf";
    let mut cmds = format!("write {} {target}\n", conf.display());
    for path in [target, "/etc/metal6"] {
        for field in ["mtime", "ctime", "atime", "crtime"] {
            cmds.push_str(&format!("set_inode_field {path} {field} @{epoch}\n"));
        }
    }
    let cmd_file = work.join("debugfs.cmds");
    std::fs::write(&cmd_file, cmds)?;
    let out = tools::run(
        Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .arg("-w")
            .arg("-f")
            .arg(&cmd_file)
            .arg(&root_img),
    )?;
    if out.contains("File exists") || out.contains("not found") {
        bail!("debugfs could not write {target}: {out}");
    }
    std::fs::remove_file(&cmd_file)?;
    std::fs::remove_file(&conf)?;

    // GPT disk: 1 MiB, ESP, root, 1 MiB for the backup table.
    let disk = work.join("disk.raw");
    let total = MIB + esp_bytes + root_bytes + MIB;
    std::fs::File::create(&disk)?.set_len(total)?;
    let s = |b: u64| b / 512;
    let script = format!(
        "label: gpt\nlabel-id: {disk_guid}\nunit: sectors\nfirst-lba: 2048\n\
         start=2048, size={}, type={ESP_TYPE}, uuid={esp_part}, name=\"esp\"\n\
         start={}, size={}, type={ROOT_TYPE}, uuid={root_part}, name=\"root\"\n",
        s(esp_bytes),
        s(MIB + esp_bytes),
        s(root_bytes)
    );
    tools::run_stdin(Command::new("sfdisk").args(["--quiet", "--no-reread", "--no-tell-kernel"]).arg(&disk), &script)?;
    copy_sparse(&tree.join("esp.img"), &disk, MIB)?;
    copy_sparse(&root_img, &disk, MIB + esp_bytes)?;
    std::fs::remove_file(&root_img)?;
    if r.outputs.qcow2 {
        tools::run(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&disk).arg(work.join("disk.qcow2")))?;
    }
    for f in ["node.efi", "installer.efi"] {
        let (src, dst) = (tree.join(f), work.join(f));
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
        std::fs::copy(tree.join(format!("{f}.sha256")), work.join(format!("{f}.sha256")))?;
    }
    for f in ["disk.raw", "disk.qcow2"] {
        if work.join(f).exists() {
            std::fs::write(work.join(format!("{f}.sha256")), sha256_file(&work.join(f))?)?;
        }
    }
    manifest["sysctl"] = serde_json::to_value(checked)?;
    std::fs::write(work.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    progress(&format!("disk: sysctl profile patched in, disk assembled in {:.1} s", t.elapsed().as_secs_f64()));
    Ok(())
}

/// Copies `src` into `dst` at `offset`, leaving all-zero blocks as holes.
fn copy_sparse(src: &Path, dst: &Path, offset: u64) -> Result<()> {
    let mut i = std::fs::File::open(src)?;
    let mut o = std::fs::OpenOptions::new().write(true).open(dst)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = offset;
    loop {
        let n = read_full(&mut i, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            o.seek(SeekFrom::Start(pos))?;
            o.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
    o.sync_all()?;
    Ok(())
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A UKI: the systemd stub with .osrel, .cmdline, .initrd and .linux sections placed after
/// the stub's image, page-aligned (objcopy; bookworm has no ukify), then normalized.
fn uki(kernel: &Path, initrd: &[u8], cmdline: &str, osrel: &[u8], out: &Path, work: &Path, epoch: u64) -> Result<()> {
    let stub = std::fs::read(STUB)?;
    let l = pe::layout(&stub)?;
    let align = l.section_alignment.max(4096);
    let up = |x: u64| x.div_ceil(align) * align;
    let parts = work.join("uki-parts");
    std::fs::create_dir_all(&parts)?;
    let osrel_p = parts.join("osrel");
    let cmd_p = parts.join("cmdline");
    let initrd_p = parts.join("initrd");
    std::fs::write(&osrel_p, osrel)?;
    std::fs::write(&cmd_p, cmdline)?;
    std::fs::write(&initrd_p, initrd)?;
    let o = up(l.end_rva);
    let c = up(o + osrel.len() as u64);
    let i = up(c + cmdline.len() as u64);
    let k = up(i + initrd.len() as u64);
    let vma = |rva: u64| format!("0x{:x}", l.image_base + rva);
    let tmp = out.with_extension("tmp");
    tools::run(
        Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".osrel={}", osrel_p.display()))
            .arg("--change-section-vma")
            .arg(format!(".osrel={}", vma(o)))
            .arg("--add-section")
            .arg(format!(".cmdline={}", cmd_p.display()))
            .arg("--change-section-vma")
            .arg(format!(".cmdline={}", vma(c)))
            .arg("--add-section")
            .arg(format!(".initrd={}", initrd_p.display()))
            .arg("--change-section-vma")
            .arg(format!(".initrd={}", vma(i)))
            .arg("--add-section")
            .arg(format!(".linux={}", kernel.display()))
            .arg("--change-section-vma")
            .arg(format!(".linux={}", vma(k)))
            .arg(STUB)
            .arg(&tmp),
    )?;
    let mut b = std::fs::read(&tmp)?;
    pe::normalize(&mut b, u32::try_from(epoch).unwrap_or(u32::MAX))?;
    std::fs::write(out, &b)?;
    std::fs::remove_file(&tmp)?;
    std::fs::remove_dir_all(&parts)?;
    Ok(())
}

const INIT: &str = r#"#!/bin/busybox sh
# metal6 installer initramfs: mount the kernel filesystems, load the drivers, run the installer.
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin
echo "metal6: installer initramfs at $(cut -d' ' -f1 /proc/uptime) s"
/bin/metal6-installer coldplug
/bin/metal6-installer install
echo "metal6: the installer exited ($?); rebooting in 30 s"
sleep 30
reboot -f
"#;

fn installer_initramfs(
    r: &Recipe,
    tree: &Path,
    kver: &str,
    agent: &Path,
    ca: Option<&[u8]>,
    epoch: u64,
) -> Result<Vec<u8>> {
    let mut e: BTreeMap<String, Entry> = BTreeMap::new();
    for d in ["bin", "dev", "etc", "etc/metal6", "lib", "lib/modules", "mnt", "proc", "sys", "tmp"] {
        e.insert(d.into(), Entry::Dir { mode: 0o755 });
    }
    e.insert("init".into(), Entry::File { mode: 0o755, data: INIT.as_bytes().to_vec() });
    e.insert("bin/busybox".into(), Entry::File { mode: 0o755, data: std::fs::read("/bin/busybox")? });
    e.insert("bin/metal6-installer".into(), Entry::File { mode: 0o755, data: std::fs::read(agent)? });
    // The installer is linked against the build host's glibc (Debian, like the image).
    for lib in tools::shared_libs(agent)? {
        let rel = lib.trim_start_matches('/').to_owned();
        let mut dir = String::new();
        for part in rel.split('/').take(rel.split('/').count() - 1) {
            dir = if dir.is_empty() { part.to_owned() } else { format!("{dir}/{part}") };
            e.entry(dir.clone()).or_insert(Entry::Dir { mode: 0o755 });
        }
        let data = std::fs::read(&lib).with_context(|| format!("reading {lib}"))?;
        e.insert(rel, Entry::File { mode: 0o755, data });
    }
    let mdir = tree.join("usr/lib/modules").join(kver);
    let mdir = if mdir.exists() { mdir } else { tree.join("lib/modules").join(kver) };
    let dep = modules::parse_dep(&std::fs::read_to_string(mdir.join("modules.dep")).context("modules.dep")?);
    let builtin = std::fs::read_to_string(mdir.join("modules.builtin")).unwrap_or_default();
    let (order, missing) = modules::closure(&dep, &r.installer.modules);
    let absent: Vec<&String> =
        missing.iter().filter(|m| !builtin.lines().any(|l| modules::name_of(l) == m.replace('-', "_"))).collect();
    if !absent.is_empty() {
        bail!("installer.modules: {absent:?} neither built into {kver} nor in its modules (excluded by the recipe?)");
    }
    let aliases = std::fs::read_to_string(mdir.join("modules.alias")).unwrap_or_default();
    let mut index = vec![];
    for p in &order {
        let name = modules::name_of(p);
        let raw = std::fs::read(mdir.join(p)).with_context(|| format!("module {p}"))?;
        let data = if p.ends_with(".ko") {
            raw
        } else if p.ends_with(".ko.xz") {
            decompress("xz", &mdir.join(p))?
        } else if p.ends_with(".ko.zst") {
            decompress("zstd", &mdir.join(p))?
        } else {
            bail!("module {p}: unknown compression");
        };
        e.insert(format!("lib/modules/{name}.ko"), Entry::File { mode: 0o644, data });
        let deps: Vec<String> =
            dep.get(&name).map(|(_, d)| d.iter().map(|x| modules::name_of(x)).collect()).unwrap_or_default();
        let named = r.installer.modules.iter().any(|w| w.replace('-', "_") == name);
        index.push(serde_json::json!({"name": name, "deps": deps, "aliases": modules::aliases_of(&aliases, &name), "named": named}));
    }
    // The installer's coldplug loads what the machine's devices need, in this order.
    e.insert("etc/metal6/modules.json".into(), Entry::File { mode: 0o644, data: serde_json::to_vec_pretty(&index)? });
    if let Some(pem) = ca {
        e.insert("etc/metal6/ca.pem".into(), Entry::File { mode: 0o644, data: pem.to_vec() });
    }
    let mut raw = vec![];
    cpio::write(&mut raw, &e, u32::try_from(epoch).unwrap_or(u32::MAX))?;
    let mut gz = flate2::GzBuilder::new().mtime(0).write(vec![], flate2::Compression::new(6));
    gz.write_all(&raw)?;
    Ok(gz.finish()?)
}

fn decompress(tool: &str, p: &Path) -> Result<Vec<u8>> {
    let out = Command::new(tool).arg("-dc").arg(p).output().with_context(|| format!("{tool} -dc"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", p.display());
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_distinct() {
        let a = uuid("k", "root");
        assert_eq!(a, uuid("k", "root"));
        assert_ne!(a, uuid("k", "esp"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8");
    }

    #[test]
    fn enable_follows_install_sections() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = dir.path();
        std::fs::create_dir_all(t.join("usr/lib/systemd/system")).expect("dir");
        std::fs::write(
            t.join("usr/lib/systemd/system/a.service"),
            "[Unit]\nDescription=a\n[Install]\nWantedBy=multi-user.target\nAlso=b.socket\n",
        )
        .expect("a");
        std::fs::write(t.join("usr/lib/systemd/system/b.socket"), "[Install]\nWantedBy=sockets.target\n").expect("b");
        let mut done = vec![];
        enable(t, "a.service", &mut done).expect("enable");
        let l = std::fs::read_link(t.join("etc/systemd/system/multi-user.target.wants/a.service")).expect("link");
        assert_eq!(l, PathBuf::from("/usr/lib/systemd/system/a.service"));
        assert!(t.join("etc/systemd/system/sockets.target.wants/b.socket").is_symlink());
        assert!(enable(t, "missing.service", &mut done).is_err());
    }
}
