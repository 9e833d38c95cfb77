//! IS-IS routing in the satellite namespaces with Debian's FRR: per satellite a zebra and an
//! isisd in its namespace, with their own config, pid files, zserv and vty sockets under a
//! work directory (no shared `/var/run/frr` state between satellites), in the foreground so
//! they end with this process. ISLs are point-to-point IS-IS circuits over link-local
//! addresses; each satellite's loopback /128 is advertised passively — what the emulation
//! needs to route between any two satellites.
//!
//! FRR 8.4 (bookworm) was seen here not to regenerate its LSPs after adjacencies came up
//! when the instance is `is-type level-2-only` (they stayed at 42 bytes — no IS or prefix
//! reachability — until a config change forced a rebuild), and a zebra that is not listening
//! yet when isisd starts makes the same symptom likelier; so the routers keep the default
//! level-1-2 in one area, and isisd starts once its zebra's socket exists.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use metal6_emulation::{Addressing, Topology};

use crate::Emulation;

pub const ZEBRA: &str = "/usr/lib/frr/zebra";
pub const ISISD: &str = "/usr/lib/frr/isisd";

#[derive(Debug)]
pub struct Frr {
    children: Vec<Child>,
    pub dir: PathBuf,
}

impl Drop for Frr {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
            // Each daemon keeps a directory of its own under /var/tmp/frr (`DAEMON.PID`) that a
            // killed one leaves behind: without this every run left a hundred of them.
            for d in ["zebra", "isisd"] {
                let _ = std::fs::remove_dir_all(format!("/var/tmp/frr/{d}.{}", c.id()));
            }
        }
    }
}

pub use metal6_emulation::routing::{isisd_conf, system_id};

fn spawn(ns: &str, daemon: &str, args: &[String], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new("ip")
        .args(["netns", "exec", ns, daemon])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {daemon} in {ns}"))
}

/// Starts zebra + isisd in every satellite namespace; configs and logs under `dir`.
pub fn start(emu: &Emulation, topo: &Topology, _addr: &Addressing, dir: &Path) -> Result<Frr> {
    start_on(emu, topo, dir, &(0..topo.shell.count()).collect())
}

/// Starts zebra + isisd in the namespaces of `routers` only (a sample: a machine carries
/// routers on far fewer satellites than it carries namespaces); `dir/satN` for each.
pub fn start_on(
    emu: &Emulation,
    topo: &Topology,
    dir: &Path,
    routers: &std::collections::BTreeSet<u32>,
) -> Result<Frr> {
    for d in [ZEBRA, ISISD] {
        if !Path::new(d).exists() {
            bail!("{d} is missing (Debian's frr package; `make deps` installs it)");
        }
    }
    // The daemons drop to Debian's `frr` user (and need it in `frrvty` for their vty): their
    // directories are theirs.
    let user = nix::unistd::User::from_name("frr")?.context("no `frr` user (is Debian's frr installed?)")?;
    let mut frr = Frr { children: vec![], dir: dir.to_path_buf() };
    let mut pending = vec![];
    for (i, ns) in emu.sats.iter().enumerate() {
        let sat = u32::try_from(i).unwrap_or(u32::MAX);
        if !routers.contains(&sat) {
            continue;
        }
        let d = dir.join(format!("sat{i}"));
        std::fs::create_dir_all(&d)?;
        let (p, s) = topo.plane_slot(sat);
        std::fs::write(d.join("zebra.conf"), format!("hostname sat-{p}-{s}\n"))?;
        std::fs::write(d.join("isisd.conf"), isisd_conf(topo, sat))?;
        for p in [d.clone(), d.join("zebra.conf"), d.join("isisd.conf")] {
            nix::unistd::chown(&p, Some(user.uid), Some(user.gid))?;
        }
        let common = |name: &str| -> Vec<String> {
            vec![
                "-f".into(),
                d.join(format!("{name}.conf")).display().to_string(),
                "-i".into(),
                d.join(format!("{name}.pid")).display().to_string(),
                "-z".into(),
                d.join("zserv.api").display().to_string(),
                "--vty_socket".into(),
                d.display().to_string(),
                "-P".into(),
                "0".into(),
            ]
        };
        frr.children.push(spawn(&ns.name, ZEBRA, &common("zebra"), &d.join("zebra.log"))?);
        let isisd_args = common("isisd");
        pending.push((ns.name.clone(), d.clone(), isisd_args));
    }
    // isisd after its zebra listens: started together, isisd 8.4 was seen to come up with
    // circuits it never advertised (empty LSPs, no routes).
    for (ns, d, args) in pending {
        let sock = d.join("zserv.api");
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !sock.exists() {
            if std::time::Instant::now() > end {
                bail!("zebra in {ns} did not open {} (see zebra.log)", sock.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        frr.children.push(spawn(&ns, ISISD, &args, &d.join("isisd.log"))?);
    }
    Ok(frr)
}

impl Frr {
    /// The daemons' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// A daemon that died, with the tail of its log.
    pub fn dead(&mut self) -> Option<String> {
        for c in &mut self.children {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(format!("an FRR daemon exited ({st}); logs in {}", self.dir.display()));
            }
        }
        None
    }
}
