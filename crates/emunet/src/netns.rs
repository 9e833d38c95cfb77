//! Network namespaces made in-process: `unshare(CLONE_NEWNET)` on the calling thread,
//! the namespace pinned by a bind mount at `/run/netns/NAME` (where `ip netns` and FRR find
//! it), its sysctls written through that thread's `/proc/sys`, its rtnetlink socket opened,
//! and the thread moved back to where it was. Must run on a thread of its own (spawn_blocking)
//! inside a tokio runtime context (the socket registers with the reactor).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

pub const NETNS_DIR: &str = "/run/netns";

/// Per-namespace sysctls: no DAD, RAs or autoconf on emulated links; forwarding on.
const SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv6/conf/default/dad_transmits", "0"),
    ("net/ipv6/conf/all/accept_ra", "0"),
    ("net/ipv6/conf/default/accept_ra", "0"),
    ("net/ipv6/conf/default/autoconf", "0"),
    ("net/ipv6/conf/all/forwarding", "1"),
    // A link that goes down keeps its addresses, as a radio link's would: no re-addressing
    // (and no new link-local address for FRR's adjacency) when it comes back.
    ("net/ipv6/conf/all/keep_addr_on_down", "1"),
    ("net/ipv6/conf/default/keep_addr_on_down", "1"),
    // A link switched down is dormant, its routes linkdown: never forward over them.
    ("net/ipv6/conf/all/ignore_routes_with_linkdown", "1"),
    ("net/ipv6/conf/default/ignore_routes_with_linkdown", "1"),
];

#[derive(Debug)]
pub struct Netns {
    pub name: String,
    file: File,
    pub handle: rtnetlink::Handle,
}

impl Netns {
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn create(name: &str) -> Result<Netns> {
        std::fs::create_dir_all(NETNS_DIR)?;
        let path = Path::new(NETNS_DIR).join(name);
        File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET): root needed")?;
        let inside = (|| -> Result<(File, rtnetlink::Handle)> {
            nix::mount::mount(Some("/proc/thread-self/ns/net"), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .with_context(|| format!("bind-mounting {}", path.display()))?;
            for (k, v) in SYSCTLS {
                std::fs::write(format!("/proc/sys/{k}"), v).with_context(|| format!("sysctl {k}"))?;
            }
            let (conn, handle, _) = rtnetlink::new_connection().context("rtnetlink socket")?;
            tokio::spawn(conn);
            Ok((File::open(&path)?, handle))
        })();
        nix::sched::setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context("returning to the host netns")?;
        let (file, handle) = inside.inspect_err(|_| {
            let _ = nix::mount::umount2(&path, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
        })?;
        Ok(Netns { name: name.to_owned(), file, handle })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let p = self.path();
        let _ = nix::mount::umount2(&p, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&p);
    }
}

/// An rtnetlink socket inside an existing namespace (a pod's, made by the container runtime):
/// this thread enters it, opens the socket, and returns. Same threading rule as
/// [`Netns::create`].
pub fn attach(path: &Path) -> Result<rtnetlink::Handle> {
    let target = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
    nix::sched::setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", path.display()))?;
    let inside = rtnetlink::new_connection().context("rtnetlink socket");
    nix::sched::setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context("returning to the host netns")?;
    let (conn, handle, _) = inside?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Removes `m6e<pid>-*` namespaces whose process is gone.
pub fn remove_dead() {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("m6e").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = nix::mount::umount2(&e.path(), MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(e.path());
        }
    }
}
