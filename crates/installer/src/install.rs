//! The install, phase by phase, each reported to the node's timeline:
//! `installer` (address from DHCPv6) → `writing-image` (progress) → `image-written` →
//! `configured` → `installed` → reboot. A failure is reported with its cause, and the
//! whole install starts again after a pause.
//!
//! The disk becomes bootable last ([`write_disk`]): the image is streamed and verified with
//! everything firmware could boot from held back (see `disk`), the root is mounted through a
//! table that lists it alone and the node's configuration written into it, and only then
//! are the ESP's first sectors and the partition tables written. A disk that boots is one
//! that knows which node it is and where to call home; a node that loses power anywhere
//! before that netboots into the installer again.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use crate::cmdline::{self, Params};
use crate::console::{say, uptime};
use crate::disk::{self, Disk as _};
use crate::http::{self, ImageSource, Reporter, redact};
use crate::plan::{self, Disk, Plan};
use crate::{dhcp, gpt, net};

/// Where the installed system's root is mounted.
const TARGET: &str = "/mnt";

pub fn run(cmdline: Params) -> Result<()> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let started = Instant::now();
        let mut report_failure = None;
        match install_once(&cmdline, attempt, &mut report_failure) {
            Ok(()) => {
                say!("installed in {:.1} s", started.elapsed().as_secs_f64());
                if cmdline.no_reboot {
                    say!("metal6.noreboot: not rebooting");
                    return Ok(());
                }
                say!("rebooting into the installed system");
                reboot();
                return Ok(());
            }
            Err(e) => {
                let cause = format!("{e:#}");
                say!("install attempt {attempt} failed: {cause}");
                if let Some(r) = report_failure {
                    r.post(&json!({"phase": "failed", "error": cause, "attempt": attempt}));
                }
                let pause = Duration::from_secs((15 * u64::from(attempt)).min(300));
                say!("retrying in {} s", pause.as_secs());
                std::thread::sleep(pause);
            }
        }
    }
}

/// An installer with a CA (HTTPS) refuses a plain-HTTP server: a rogue DHCPv6 answer naming
/// one would otherwise downgrade it to whatever plan that server hands out.
fn https_only_server(https_only: bool, server: &str) -> Result<()> {
    if https_only && !server.starts_with("https://") {
        bail!(
            "this installer trusts only HTTPS (it was built with a CA) but DHCPv6 named the server {}: refusing \
             a plain-HTTP server (a rogue DHCPv6 answer, or an HTTP node served by this installer)",
            redact(server)
        );
    }
    Ok(())
}

/// ... and a plan that sends it (the image, its reports) anywhere but that HTTPS server.
fn https_only_plan(https_only: bool, server: &str, image_url: &str, events_url: &str) -> Result<()> {
    if https_only {
        for (what, url) in [("image", image_url), ("events", events_url)] {
            if !url.starts_with(server) {
                bail!("the plan's {what} URL {} is not on the HTTPS server {server}: refusing it", redact(url));
            }
        }
    }
    Ok(())
}

/// One attempt. `report_failure` is set as soon as the attempt knows where its events go.
fn install_once(cmdline: &Params, attempt: u32, report_failure: &mut Option<Reporter>) -> Result<()> {
    let (nic, lease) = dhcp_on_some_nic(cmdline)?;
    let params = cmdline.clone().or(cmdline::parse(lease.params.iter().map(String::as_str)));
    let node = params.node.ok_or_else(|| anyhow!("the DHCPv6 server did not say which node this is (option 60)"))?;
    let server = params.server.ok_or_else(|| anyhow!("the DHCPv6 server did not say where its HTTP server is"))?;
    let server = if server.ends_with('/') { server } else { format!("{server}/") };
    // An installer built with a CA talks HTTPS only: otherwise a rogue DHCPv6 answer naming an
    // http:// server would downgrade it and hand it any plan (docs/security.md).
    let https_only = http::has_ca();
    https_only_server(https_only, &server)?;
    let server_addr = host_of(&server)?;
    net::configure(&nic, lease.address, 128, Some(server_addr), params.gateway)?;
    say!("{}: {} is node {node}; server {}", nic.name, lease.address, redact(&server));

    let agent = http::agent();
    let events_url = format!("{server}v1/nodes/{node}/events");
    let reporter = Reporter::new(agent.clone(), &events_url, None);
    reporter.post(&json!({
        "phase": "installer", "address": lease.address, "interface": nic.name,
        "mac": net::mac_string(nic.mac), "attempt": attempt, "uptime_s": uptime(),
    }));
    *report_failure = Some(Reporter::new(agent.clone(), &events_url, None));

    let plan: Plan = serde_json::from_str(&http::get_text(&agent, &format!("{server}v1/nodes/{node}/plan.json"))?)
        .context("reading the installer plan")?;
    if plan.version != plan::PLAN_VERSION {
        bail!("plan version {} (this installer reads {}): rebuild the installer", plan.version, plan::PLAN_VERSION);
    }
    if net::parse_mac(&plan.network.mac) != Some(nic.mac) {
        bail!("the plan is for NIC {} but DHCPv6 answered on {}", plan.network.mac, net::mac_string(nic.mac));
    }
    https_only_plan(https_only, &server, &plan.image.url, &plan.report.events_url)?;
    if plan.network.address != lease.address {
        bail!(
            "DHCPv6 leased {} but the plan says {}: refusing to install a wrong address",
            lease.address,
            plan.network.address
        );
    }
    // From here on every report carries this install's token: if another host claims this
    // node's identity and takes a plan meanwhile, the server sees the stale token at once and
    // records the conflict (docs/security.md).
    let reporter = Reporter::new(agent.clone(), &events_url, Some(&plan.report.token));
    *report_failure = Some(Reporter::new(agent.clone(), &events_url, Some(&plan.report.token)));
    net::configure(&nic, plan.network.address, plan.network.prefix_len, None, None)?;
    let network_unit = http::get_text(&agent, &format!("{server}v1/nodes/{node}/network"))?;
    let sha = plan.image.sha256.clone().ok_or_else(|| {
        anyhow!("the server has no SHA-256 for {} (build the image with `metal6 image build`)", redact(&plan.image.url))
    })?;

    let dev = find_disk(&plan.disk, Path::new("/sys/block"))?;
    let mut target = disk::FileDisk::open(&dev).with_context(|| format!("opening {}", dev.display()))?;
    say!("writing {} to {} ({} MiB)", redact(&plan.image.url), dev.display(), target.size() >> 20);
    reporter.post(
        &json!({"phase": "writing-image", "disk": dev, "disk_bytes": target.size(), "url": redact(&plan.image.url)}),
    );
    let mut src = ImageSource { agent: &agent, url: &plan.image.url };
    let mut next_report = 0u64;
    let mut progress = |done: u64, total: u64| {
        let pct = done * 100 / total.max(1);
        if pct >= next_report {
            next_report = pct + 10;
            say!("image {pct:3}% ({} of {} MiB)", done >> 20, total >> 20);
            reporter.post(
                &json!({"kind": "progress", "phase": "writing-image", "percent": pct, "bytes": done, "total": total}),
            );
        }
    };
    let mut configure = |written: &disk::Written, grown: &gpt::Grown| -> Result<()> {
        let mbps = written.bytes as f64 / 1e6 / written.seconds.max(1e-3);
        say!("image verified: sha256 {} ({:.1} MB/s, {} resumes)", written.sha256, mbps, written.resumes);
        reporter.post(&json!({
            "phase": "image-written", "bytes": written.bytes, "sha256": written.sha256, "seconds": written.seconds,
            "mb_per_s": mbps, "resumes": written.resumes, "root_partition_end_lba": grown.new_end,
        }));
        let part = partition_path(&dev, grown.partition + 1);
        reread_partitions(&dev, &part)?;
        mount(&part)?;
        let configured = plan::configure_root(Path::new(TARGET), &plan, &network_unit);
        let unmounted = umount();
        configured?;
        unmounted?;
        // `finalize` writes through the whole disk, whose page cache can hold blocks from
        // before the root was written through its partition: drop them.
        run_tool("blockdev", &["--flushbufs", &dev.to_string_lossy()])?;
        reporter.post(&json!({"phase": "configured", "partition": part, "address": plan.network.address}));
        Ok(())
    };
    write_disk(&mut src, &mut target, &sha, disk::Retry::default(), &mut progress, &mut configure)?;
    drop(target);
    say!("{} is bootable", dev.display());
    reporter.post(&json!({"phase": "installed", "uptime_s": uptime()}));
    Ok(())
}

/// The disk's part of the install, in the order that keeps it unbootable until the node's
/// configuration is on it:
///
/// 1. stream and verify the image (`disk::stream`), after zeroing the old tables, holding
///    back its first MiB and what `gpt::boot_regions` names (the ESP's FAT boot sector, the
///    image's backup GPT), zeroed on the disk;
/// 2. grow the table to the disk (in memory), and write `gpt::staging` at LBA 0: the root
///    partition alone, for the kernel to mount it — firmware finds nothing to boot;
/// 3. `configure`: the caller mounts the root and writes the node's identity into it (all
///    unmounted and synced when it returns `Ok`);
/// 4. `disk::finalize`: the held regions and the backup GPT, then the head, each synced.
///
/// A failure or power loss before step 4 leaves a disk firmware skips.
fn write_disk(
    src: &mut dyn disk::Source,
    target: &mut dyn disk::Disk,
    sha256: &str,
    retry: disk::Retry,
    progress: &mut dyn FnMut(u64, u64),
    configure: &mut dyn FnMut(&disk::Written, &gpt::Grown) -> Result<()>,
) -> Result<()> {
    let (mut held, written) = disk::stream(src, target, sha256, retry, &gpt::boot_regions, progress)?;
    let grown = gpt::grow(held.head_mut(), target.size()).context("growing the partition table to the disk")?;
    let staging = gpt::staging(held.head(), grown.partition, target.size()).context("the staging partition table")?;
    disk::write_all_at(target, 0, &staging)?;
    target.sync().context("syncing the staging partition table")?;
    configure(&written, &grown)?;
    disk::finalize(target, &held, grown.backup_offset, &grown.backup).context("making the disk bootable")
}

/// DHCPv6 on the pinned NIC, or on each Ethernet NIC in turn until one is answered.
fn dhcp_on_some_nic(cmdline: &Params) -> Result<(net::Nic, dhcp::Lease)> {
    let mut nics = net::nics(Path::new("/sys/class/net"));
    if let Some(pin) = &cmdline.interface {
        nics.retain(|n| &n.name == pin);
    }
    if nics.is_empty() {
        bail!("no Ethernet interface (is its driver in the installer's initramfs?)");
    }
    let mut errors = vec![];
    for nic in nics {
        if let Err(e) = net::bring_up(&nic, Duration::from_secs(15)) {
            errors.push(format!("{e:#}"));
            continue;
        }
        say!("{}: DHCPv6 as {}", nic.name, net::mac_string(nic.mac));
        match dhcp::acquire(nic.ifindex, nic.mac, Duration::from_secs(30)) {
            Ok(l) => return Ok((nic, l)),
            Err(e) => errors.push(format!("{}: {e}", nic.name)),
        }
    }
    bail!("no interface got a DHCPv6 lease: {}", errors.join("; "))
}

/// The IPv6 literal in `http://[addr]:port/`.
fn host_of(url: &str) -> Result<Ipv6Addr> {
    let shown = redact(url);
    let rest = url.split_once("://[").map(|x| x.1).ok_or_else(|| anyhow!("server URL {shown} has no [IPv6] host"))?;
    let host = rest.split_once(']').map(|x| x.0).ok_or_else(|| anyhow!("server URL {shown}: unclosed ["))?;
    host.parse().with_context(|| format!("server URL {shown}"))
}

/// Resolves the plan's disk selector against /sys/block.
pub fn find_disk(sel: &Disk, sys_block: &Path) -> Result<PathBuf> {
    let mut disks = vec![];
    for e in std::fs::read_dir(sys_block).with_context(|| format!("listing {}", sys_block.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "sr", "zram", "dm-"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).map(|s| s.trim().to_owned()).unwrap_or_default();
        let bytes = read("size").parse::<u64>().unwrap_or(0) * 512;
        let serial = Some(read("serial")).filter(|s| !s.is_empty()).unwrap_or_else(|| read("device/serial"));
        let lbs = read("queue/logical_block_size");
        disks.push((format!("/dev/{name}"), bytes, serial, lbs));
    }
    disks.sort();
    let found = match sel {
        Disk::Path(p) => disks.iter().find(|d| &d.0 == p),
        Disk::Serial(s) => disks.iter().find(|d| &d.2 == s),
        Disk::MinSize(min) => disks.iter().filter(|d| d.1 >= *min).min_by_key(|d| d.1),
    };
    let Some((path, bytes, _, lbs)) = found else {
        let seen: Vec<String> = disks.iter().map(|d| format!("{} ({} bytes, serial {:?})", d.0, d.1, d.2)).collect();
        bail!("no disk matches {sel:?}; disks: {}", seen.join(", "));
    };
    if !lbs.is_empty() && lbs != "512" {
        bail!("{path} has {lbs}-byte logical sectors; the image is laid out for 512");
    }
    if *bytes == 0 {
        bail!("{path} has no medium");
    }
    Ok(PathBuf::from(path))
}

/// `/dev/vda` + 2 → `/dev/vda2`; `/dev/nvme0n1` + 2 → `/dev/nvme0n1p2`.
pub fn partition_path(dev: &Path, n: usize) -> PathBuf {
    let s = dev.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

fn run_tool(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn reread_partitions(dev: &Path, part: &Path) -> Result<()> {
    run_tool("blockdev", &["--rereadpt", &dev.to_string_lossy()])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !part.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear after re-reading the partition table", part.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn mount(part: &Path) -> Result<()> {
    std::fs::create_dir_all(TARGET).context("creating the mount point")?;
    run_tool("mount", &["-t", "ext4", &part.to_string_lossy(), TARGET])
}

fn umount() -> Result<()> {
    run_tool("umount", &[TARGET])?;
    run_tool("sync", &[])
}

fn reboot() {
    let _ = run_tool("sync", &[]);
    if let Err(e) = run_tool("reboot", &["-f"]) {
        say!("reboot failed: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installer_with_a_ca_refuses_plain_http() {
        let https = "https://[fd00:6d:1::1]:8443/";
        assert!(https_only_server(true, https).is_ok());
        let err = https_only_server(true, "http://[fd00:6d:1::66]/").expect_err("downgrade").to_string();
        assert!(err.contains("trusts only HTTPS"), "{err}");
        assert!(https_only_server(false, "http://[fd00:6d:1::1]/").is_ok(), "no CA: HTTP as before");
        let image = format!("{https}images/lab/disk.raw");
        let events = format!("{https}v1/nodes/n/events");
        assert!(https_only_plan(true, https, &image, &events).is_ok());
        assert!(https_only_plan(true, https, "http://[fd00:6d:1::1]/images/lab/disk.raw", &events).is_err());
        assert!(https_only_plan(true, https, &image, "https://[fd00:6d:1::66]/v1/nodes/n/events").is_err());
    }
    use crate::disk::testing::{FAST, Flaky, MemDisk, sha};
    use crate::gpt::testing as gpt_image;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// The finding this order fixes: a disk that boots before the node's configuration is on
    /// it boots a generic image that never calls home. Over an earlier install (bootable) on
    /// a disk larger than the image: unbootable while `configure` runs — the kernel's table
    /// holds the grown root alone, under its own number — and bootable once it returned.
    #[test]
    fn the_disk_becomes_bootable_only_after_the_configuration_is_written() {
        let img = gpt_image::image(8192);
        let shared = Rc::new(RefCell::new(MemDisk::new(gpt_image::image(16384))));
        assert!(gpt_image::bootable(&shared.borrow().data));
        let mut target = Rc::clone(&shared);
        let mut during = None;
        let mut configure = |_: &disk::Written, grown: &gpt::Grown| -> Result<()> {
            let d = shared.borrow();
            let root = gpt_image::partitions(&d.data, 1).expect("the staging table");
            during = Some((gpt_image::bootable(&d.data), root, grown.partition, grown.new_end));
            Ok(())
        };
        write_disk(&mut Flaky::new(&img), &mut target, &sha(&img), FAST, &mut |_, _| {}, &mut configure)
            .expect("install");
        let (bootable, root, index, end) = during.expect("configure ran");
        assert!(!bootable, "bootable while the configuration was written");
        assert_eq!(root, [(index, gpt_image::ESP_FIRST + gpt_image::ESP_SECTORS, end)]);
        assert_eq!(index, 1, "the root keeps its number: /dev/vda2");
        assert!(gpt_image::bootable(&shared.borrow().data), "bootable once it is written");
    }

    /// A failed configuration (mount, a full disk) leaves the disk unbootable: the node
    /// netboots into the installer and tries again.
    #[test]
    fn a_failed_configuration_leaves_the_disk_unbootable() {
        let img = gpt_image::image(8192);
        let mut target = MemDisk::new(gpt_image::image(8192));
        let e = write_disk(&mut Flaky::new(&img), &mut target, &sha(&img), FAST, &mut |_, _| {}, &mut |_, _| {
            Err(anyhow!("mount: wrong fs type"))
        })
        .expect_err("configure failed");
        assert!(format!("{e:#}").contains("wrong fs type"), "{e:#}");
        assert!(!gpt_image::bootable(&target.data));
    }

    fn fake_block(dir: &Path, name: &str, sectors: u64, serial: &str, lbs: u32) {
        let d = dir.join(name);
        std::fs::create_dir_all(d.join("queue")).expect("dir");
        std::fs::write(d.join("size"), format!("{sectors}\n")).expect("size");
        std::fs::write(d.join("serial"), format!("{serial}\n")).expect("serial");
        std::fs::write(d.join("queue/logical_block_size"), format!("{lbs}\n")).expect("lbs");
    }

    #[test]
    fn disks_are_found_by_path_serial_or_smallest_fit() {
        let dir = tempfile::tempdir().expect("tmp");
        fake_block(dir.path(), "vda", 8 << 21, "S1", 512); // 8 GiB
        fake_block(dir.path(), "vdb", 4 << 21, "S2", 512); // 4 GiB
        fake_block(dir.path(), "nvme0n1", 16 << 21, "N1", 4096);
        fake_block(dir.path(), "loop0", 1 << 30, "", 512);
        let f = |s: Disk| find_disk(&s, dir.path()).map(|p| p.display().to_string());
        assert_eq!(f(Disk::Path("/dev/vda".into())).expect("path"), "/dev/vda");
        assert_eq!(f(Disk::Serial("S2".into())).expect("serial"), "/dev/vdb");
        assert_eq!(f(Disk::MinSize(3 << 30)).expect("size"), "/dev/vdb");
        assert_eq!(f(Disk::MinSize(5 << 30)).expect("size"), "/dev/vda");
        let e = f(Disk::Serial("N1".into())).expect_err("4Kn");
        assert!(e.to_string().contains("4096-byte"), "{e}");
        let e = f(Disk::Path("/dev/sdz".into())).expect_err("absent");
        assert!(e.to_string().contains("/dev/vda"), "lists what it saw: {e}");
    }

    #[test]
    fn partition_names_and_server_hosts() {
        assert_eq!(partition_path(Path::new("/dev/vda"), 2), PathBuf::from("/dev/vda2"));
        assert_eq!(partition_path(Path::new("/dev/nvme0n1"), 2), PathBuf::from("/dev/nvme0n1p2"));
        assert_eq!(
            host_of("http://[fd00:6d:1::1]:8080/").expect("host"),
            "fd00:6d:1::1".parse::<Ipv6Addr>().expect("a")
        );
        assert!(host_of("http://boot.example:8080/").is_err());
    }
}
