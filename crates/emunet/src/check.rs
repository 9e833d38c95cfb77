//! Whether a running emulation is what its model says, and what it costs: the checks of
//! `metal6 emulate check`, of the soak and of the link agent. The kernel is read through each
//! satellite's own rtnetlink socket (one link dump and one neighbour dump a satellite); FRR
//! through its vty (`vtysh --vty_socket`, `show isis neighbor json`) and its routes through
//! netlink (protocol `isis`); processes and the kernel's memory through `/proc`. What the
//! kernel should hold comes from [`metal6_emulation::expect`], computed from the model alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::path::Path;

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use metal6_emulation::expect::{Expected, ExpectedRouting};
use metal6_emulation::{Addressing, Topology};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, State};
use rtnetlink::packet_route::route::{RouteAttribute, RouteProtocol};
use serde::Serialize;

use crate::{Emulation, IFINDEX_BASE, in_batches};

/// At most this many mismatches are described; all are counted.
const EXAMPLES: usize = 10;

/// A satellite's namespace as a check sees it: its rtnetlink socket and the index of each of
/// its five interfaces (fixed in the netns backend; whatever the CNI gave in a pod, `None`
/// where the interface is not there).
#[derive(Debug, Clone)]
pub struct SatView {
    pub sat: u32,
    pub handle: rtnetlink::Handle,
    pub ifindex: [Option<u32>; 5],
}

impl Emulation {
    /// Every satellite's view, with the fixed interface indexes of this backend.
    pub fn views(&self) -> Vec<SatView> {
        views_of(self.sats.iter().map(|n| n.handle.clone()))
    }
}

/// Views of the netns backend's satellites from their sockets, in satellite order.
pub fn views_of(handles: impl IntoIterator<Item = rtnetlink::Handle>) -> Vec<SatView> {
    handles
        .into_iter()
        .enumerate()
        .map(|(i, handle)| SatView {
            sat: u32::try_from(i).unwrap_or(u32::MAX),
            handle,
            ifindex: std::array::from_fn(|k| Some(IFINDEX_BASE + u32::try_from(k).unwrap_or(0))),
        })
        .collect()
}

/// The kernel against the model at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkCheck {
    /// Model time compared with.
    pub t: f64,
    /// ISL ends looked at, and how many of them the model has up.
    pub ends: usize,
    pub ends_up: usize,
    /// Ground links (`gsl0` up) the model has.
    pub ground: usize,
    /// Ends (ISL and ground) whose kernel state differs from the model's.
    pub mismatches: usize,
    /// The first few, as `sat-P-S/isl2: kernel dormant, model up`.
    pub examples: Vec<String>,
    /// IPv6 neighbour entries in the satellites' namespaces, all and the most in one.
    pub neighbours: usize,
    pub neighbours_max: usize,
    /// Netlink requests of the check that failed (a namespace that went away, a full socket).
    pub netlink_errors: usize,
}

/// One end as the kernel has it.
#[derive(Debug, Clone, Copy)]
struct EndState {
    admin_up: bool,
    oper: Option<State>,
}

fn describe(s: Option<&EndState>) -> String {
    match s {
        None => "missing".into(),
        Some(EndState { admin_up: false, .. }) => "administratively down".into(),
        Some(EndState { oper: Some(State::Up), .. }) => "up".into(),
        Some(EndState { oper: Some(State::Dormant), .. }) => "dormant".into(),
        Some(EndState { oper: Some(s), .. }) => format!("{s:?}").to_lowercase(),
        Some(EndState { oper: None, .. }) => "without an operational state".into(),
    }
}

/// Reads every satellite's interfaces and neighbours and compares them with the model at `t`:
/// an ISL end must be administratively up and operationally up when the model has its link
/// up, dormant when not; `gsl0` (where there is one) administratively up exactly when the
/// satellite has a ground link.
pub async fn links(views: &[SatView], topo: &Topology, t: f64) -> LinkCheck {
    let want = Expected::at(topo, t);
    let looks: Vec<_> = views
        .iter()
        .map(|v| {
            let v = v.clone();
            async move {
                let mut ends = BTreeMap::new();
                let mut links = v.handle.link().get().execute();
                while let Some(l) = links.try_next().await? {
                    let oper = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::OperState(s) => Some(*s),
                        _ => None,
                    });
                    let admin_up = l.header.flags.contains(LinkFlags::Up);
                    ends.insert(l.header.index, EndState { admin_up, oper });
                }
                let mut neigh = v
                    .handle
                    .neighbours()
                    .get()
                    .set_address_family(rtnetlink::packet_route::AddressFamily::Inet6)
                    .execute();
                let mut n = 0usize;
                while neigh.try_next().await?.is_some() {
                    n += 1;
                }
                Ok::<_, rtnetlink::Error>((v, ends, n))
            }
        })
        .collect();
    let mut out = LinkCheck { t, ground: want.ground.len(), ..LinkCheck::default() };
    let bad = |what: String, out: &mut LinkCheck| {
        out.mismatches += 1;
        if out.examples.len() < EXAMPLES {
            out.examples.push(what);
        }
    };
    for r in in_batches(looks).await {
        let Ok((v, ends, n)) = r else {
            out.netlink_errors += 1;
            continue;
        };
        out.neighbours += n;
        out.neighbours_max = out.neighbours_max.max(n);
        let (p, s) = topo.plane_slot(v.sat);
        for iface in 0..4u8 {
            let Some(&up) = want.isl.get(&(v.sat, iface)) else { continue };
            let Some(idx) = v.ifindex[usize::from(iface)] else { continue };
            out.ends += 1;
            out.ends_up += usize::from(up);
            let have = ends.get(&idx);
            let right = have.is_some_and(|e| e.admin_up && e.oper == Some(if up { State::Up } else { State::Dormant }));
            if !right {
                let name = Addressing::iface_name(iface);
                let model = if up { "up" } else { "dormant" };
                bad(format!("sat-{p}-{s}/{name}: kernel {}, model {model}", describe(have)), &mut out);
            }
        }
        if let Some(idx) = v.ifindex[4] {
            let up = want.ground.contains(&v.sat);
            let have = ends.get(&idx);
            if have.map(|e| e.admin_up) != Some(up) {
                let model = if up { "up (a ground link)" } else { "down (no ground link)" };
                bad(format!("sat-{p}-{s}/gsl0: kernel {}, model {model}", describe(have)), &mut out);
            }
        }
    }
    out
}

/// IS-IS on the routers against the model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoutingCheck {
    pub t: f64,
    pub routers: usize,
    /// Adjacencies up (each counted at both routers), and what the model has.
    pub adjacencies: usize,
    pub adjacencies_expected: usize,
    /// Routes to other routers' loopbacks (protocol isis), and what the model has.
    pub routes: usize,
    pub routes_expected: usize,
    /// Routers whose adjacencies or routes differ, with how.
    pub wrong: usize,
    pub examples: Vec<String>,
}

impl RoutingCheck {
    pub fn converged(&self) -> bool {
        self.wrong == 0
    }
}

/// A router's up adjacencies, from its isisd's vty.
async fn adjacencies(vty_dir: &Path) -> Result<usize> {
    let cmd = tokio::process::Command::new("vtysh")
        .arg("--vty_socket")
        .arg(vty_dir)
        .args(["-d", "isisd", "-c", "show isis neighbor json"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    // A hung daemon must not hang the check: ten seconds, then it counts as not answering.
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), cmd)
        .await
        .context("vtysh did not answer in 10 s")?
        .context("running vtysh (Debian's frr package)")?;
    anyhow::ensure!(out.status.success(), "vtysh: {}", String::from_utf8_lossy(&out.stderr).trim());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("vtysh's JSON")?;
    let circuits =
        v["areas"].as_array().into_iter().flatten().flat_map(|a| a["circuits"].as_array().into_iter().flatten());
    // One circuit per point-to-point interface; a level-1-2 adjacency is listed once.
    let up: BTreeSet<&str> = circuits.filter(|c| c["state"] == "Up").filter_map(|c| c["interface"].as_str()).collect();
    Ok(up.len())
}

/// Looks once at the routers on `routers` (FRR under `dir/satN`, as [`crate::frr::start`]
/// lays it out) and compares their adjacencies and routes with the model at `t`.
pub async fn routing(
    views: &[SatView],
    frr_dir: &Path,
    topo: &Topology,
    addr: &Addressing,
    routers: &BTreeSet<u32>,
    t: f64,
) -> Result<RoutingCheck> {
    let want = ExpectedRouting::of(topo, &Expected::at(topo, t), routers);
    let loopbacks: BTreeMap<Ipv6Addr, u32> = routers.iter().map(|r| (addr.loopback(*r), *r)).collect();
    let loopbacks = &loopbacks;
    let looks: Vec<_> = views
        .iter()
        .filter(|v| routers.contains(&v.sat))
        .map(|v| {
            let (sat, h) = (v.sat, v.handle.clone());
            let vty = frr_dir.join(format!("sat{sat}"));
            async move {
                let adj = adjacencies(&vty).await.map_err(|e| (sat, e.context("its isisd")))?;
                let msg = rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build();
                let mut routes = h.route().get(msg).execute();
                let mut reach = BTreeSet::new();
                while let Some(r) =
                    routes.try_next().await.map_err(|e| (sat, anyhow::Error::from(e).context("dumping routes")))?
                {
                    if r.header.protocol != RouteProtocol::Isis || r.header.destination_prefix_length != 128 {
                        continue;
                    }
                    for a in &r.attributes {
                        if let RouteAttribute::Destination(rtnetlink::packet_route::route::RouteAddress::Inet6(d)) = a
                            && let Some(o) = loopbacks.get(d)
                        {
                            reach.insert(*o);
                        }
                    }
                }
                Ok::<_, (u32, anyhow::Error)>((sat, adj, reach))
            }
        })
        .collect();
    let mut out = RoutingCheck {
        t,
        routers: routers.len(),
        adjacencies_expected: want.adjacencies.values().sum(),
        routes_expected: want.reach.values().map(BTreeSet::len).sum(),
        ..RoutingCheck::default()
    };
    // vtysh is a process per router: a few at a time.
    let mut results = vec![];
    let mut it = looks.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<_> = it.by_ref().take(8).collect();
        results.extend(futures_util::future::join_all(batch).await);
    }
    for r in results {
        // A router that does not answer (not started yet, dead, hung) is not as the model.
        let (sat, adj, reach) = match r {
            Ok(x) => x,
            Err((sat, e)) => {
                out.wrong += 1;
                if out.examples.len() < EXAMPLES {
                    let (p, s) = topo.plane_slot(sat);
                    out.examples.push(format!("sat-{p}-{s}: {e:#}"));
                }
                continue;
            }
        };
        out.adjacencies += adj;
        out.routes += reach.len();
        let (wa, wr) =
            (want.adjacencies.get(&sat).copied().unwrap_or(0), want.reach.get(&sat).cloned().unwrap_or_default());
        if adj != wa || reach != wr {
            out.wrong += 1;
            if out.examples.len() < EXAMPLES {
                let (p, s) = topo.plane_slot(sat);
                let missing = wr.difference(&reach).count();
                let extra = reach.difference(&wr).count();
                out.examples.push(format!(
                    "sat-{p}-{s}: {adj} adjacencies (model {wa}), routes to {} loopbacks ({missing} missing, {extra} not in the model)",
                    reach.len()
                ));
            }
        }
    }
    Ok(out)
}

/// Looks at the routers until they agree with the model at `t` or `within` has passed (IS-IS
/// needs a hello or two and an SPF run after a link comes up). Returns the last look and the
/// seconds it took.
pub async fn routing_settled(
    views: &[SatView],
    frr_dir: &Path,
    topo: &Topology,
    addr: &Addressing,
    routers: &BTreeSet<u32>,
    t: f64,
    within: std::time::Duration,
) -> Result<(RoutingCheck, f64)> {
    let start = std::time::Instant::now();
    loop {
        let r = routing(views, frr_dir, topo, addr, routers, t).await?;
        if r.converged() || start.elapsed() >= within {
            return Ok((r, start.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// What a process holds: resident memory, proportional share (shared pages split among their
/// users: the honest sum over many FRR daemons), open descriptors.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ProcUse {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub fds: u64,
}

impl std::ops::AddAssign for ProcUse {
    fn add_assign(&mut self, o: ProcUse) {
        self.rss_kib += o.rss_kib;
        self.pss_kib += o.pss_kib;
        self.fds += o.fds;
    }
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l[key.len()..].split_whitespace().next()?.parse().ok())
}

/// `/proc/PID`: `None` when the process is gone.
pub fn process(pid: u32) -> Option<ProcUse> {
    let base = Path::new("/proc").join(pid.to_string());
    let rollup = std::fs::read_to_string(base.join("smaps_rollup")).ok()?;
    let fds = std::fs::read_dir(base.join("fd")).ok()?.count() as u64;
    Some(ProcUse { rss_kib: kib_field(&rollup, "Rss:")?, pss_kib: kib_field(&rollup, "Pss:")?, fds })
}

/// The kernel's side: slab (where net devices, namespaces and sockets live) and what is left.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct KernelUse {
    pub slab_kib: u64,
    pub mem_available_kib: u64,
    /// The IPv6 neighbour table (`/proc/net/stat/ndisc_cache`): one for the whole kernel,
    /// shared by every namespace. Its entries now (multicast NOARP entries included: every
    /// interface that comes up sends MLD reports, and each leaves an entry), the forced
    /// garbage collections so far (entries above `gc_thresh2`) and the allocations refused
    /// because it was full (`gc_thresh3`: "neighbour table overflow").
    pub neigh_entries: u64,
    pub neigh_forced_gc: u64,
    pub neigh_table_fulls: u64,
    pub neigh_gc_thresh2: u64,
    pub neigh_gc_thresh3: u64,
}

/// `/proc/net/stat/ndisc_cache`: hexadecimal columns, a row per CPU; `entries` is the
/// table's (the same on every row), the counters are per CPU and add up.
fn ndisc_stats(text: &str) -> Option<(u64, u64, u64)> {
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = |name: &str| head.iter().position(|h| *h == name);
    let (e, f, t) = (col("entries")?, col("forced_gc_runs")?, col("table_fulls")?);
    let mut out = (0, 0, 0);
    for l in lines {
        let v: Vec<u64> = l.split_whitespace().filter_map(|x| u64::from_str_radix(x, 16).ok()).collect();
        out.0 = *v.get(e)?;
        out.1 += v.get(f)?;
        out.2 += v.get(t)?;
    }
    Some(out)
}

pub fn kernel() -> KernelUse {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let sysctl = |k: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/neigh/default/{k}"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (entries, forced, fulls) =
        std::fs::read_to_string("/proc/net/stat/ndisc_cache").ok().as_deref().and_then(ndisc_stats).unwrap_or_default();
    KernelUse {
        slab_kib: kib_field(&m, "Slab:").unwrap_or(0),
        mem_available_kib: kib_field(&m, "MemAvailable:").unwrap_or(0),
        neigh_entries: entries,
        neigh_forced_gc: forced,
        neigh_table_fulls: fulls,
        neigh_gc_thresh2: sysctl("gc_thresh2"),
        neigh_gc_thresh3: sysctl("gc_thresh3"),
    }
}

/// The pids of the FRR daemons under `dir` (their pid files), for a check from outside the
/// process that started them.
pub fn frr_pids(dir: &Path, routers: &BTreeSet<u32>) -> Vec<u32> {
    routers
        .iter()
        .flat_map(|r| ["zebra", "isisd"].map(|d| dir.join(format!("sat{r}/{d}.pid"))))
        .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
        .collect()
}

/// The link agent's numbers in Prometheus' text exposition format: what `emulate check`
/// reports, for node-exporter's textfile collector.
pub fn prometheus(c: &LinkCheck, not_ready: usize, agent: &ProcUse, k: &KernelUse) -> String {
    let mut o = String::new();
    let mut g = |name: &str, help: &str, v: f64| {
        o.push_str(&format!("# HELP metal6_emulation_{name} {help}\n# TYPE metal6_emulation_{name} gauge\n"));
        o.push_str(&format!("metal6_emulation_{name} {v}\n"));
    };
    g("model_time_seconds", "Constellation time the links were compared at.", c.t);
    g("isl_ends", "ISL ends in this node's satellite pods.", c.ends as f64);
    g("isl_ends_up", "Of them, up in the model.", c.ends_up as f64);
    g(
        "ends_not_ready",
        "Ends left for the next round (carrier just came up, or the peer pod not started): counted in the mismatches too.",
        not_ready as f64,
    );
    g("link_mismatches", "ISL ends whose kernel state differs from the model.", c.mismatches as f64);
    g("neighbours", "IPv6 neighbour entries in the satellite pods.", c.neighbours as f64);
    g("neighbours_max", "Most IPv6 neighbour entries in one pod.", c.neighbours_max as f64);
    g("netlink_errors", "Failed netlink requests of the last check.", c.netlink_errors as f64);
    g("agent_resident_bytes", "The agent's resident memory.", agent.rss_kib as f64 * 1024.0);
    g("agent_open_fds", "The agent's open descriptors.", agent.fds as f64);
    g("kernel_slab_bytes", "The node kernel's slab.", k.slab_kib as f64 * 1024.0);
    g("neighbour_table_entries", "The kernel's IPv6 neighbour table (all namespaces).", k.neigh_entries as f64);
    g("neighbour_table_fulls", "Neighbour allocations refused: table at gc_thresh3.", k.neigh_table_fulls as f64);
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_fields_are_read_in_kib() {
        let text = "Rss:               10868 kB\nPss:                4300 kB\n";
        assert_eq!(super::kib_field(text, "Rss:"), Some(10868));
        assert_eq!(super::kib_field(text, "Pss:"), Some(4300));
        assert_eq!(super::kib_field(text, "Swap:"), None);
        let stat = "entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls\n\
                    0000028a 0002962d 00028d87 00000003   000005cd 0000035e 00000023   000001b1         00000145         00000000         00000171       00000000            00000001\n\
                    0000028a 0002e240 0002e85c 00000005   00000461 000002bd 00000015   00000103         00000121         000005f2         00000190       00000000            00000000\n";
        assert_eq!(super::ndisc_stats(stat), Some((0x28a, 0x171 + 0x190, 1)));
        let me = super::process(std::process::id()).expect("this process");
        assert!(me.rss_kib > 0 && me.pss_kib > 0 && me.fds > 2, "{me:?}");
    }
}
