//! The netns backend of `metal6 emulate run`: one network namespace per satellite (and per
//! ground station), the constellation's links as veth pairs, all through netlink — no `ip`
//! or `tc` per link.
//!
//! Why it is built this way (shared notes, emulation §2): per-namespace CLI calls cost
//! O(number of namespaces) each (`ip -n` copies every netns mount), so an update round of a
//! 2,000-satellite constellation took tens of seconds that way. Here every namespace is made
//! by `unshare` on a dedicated thread that also opens that namespace's rtnetlink socket and
//! writes its sysctls, then returns to the host namespace; the socket stays bound to the
//! satellite's namespace, so every later change is one message on an open socket. Each veth
//! is created in one end's namespace with its peer placed in the other's (IFLA_NET_NS_FD),
//! with fixed interface indexes, so no lookups are needed afterwards.
//!
//! Namespaces are named `m6e<pid>-<run>-<n>`; a run removes leftovers of dead runs first and its
//! own on drop.

pub mod check;
pub mod frr;
pub mod netem;
pub mod netns;
pub mod soak;
pub mod workers;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::future::join_all;
use metal6_emulation::topology::{End, LinkEvent, LinkKind};
use metal6_emulation::{Addressing, Topology};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, State};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan};
use serde::Serialize;

pub use netns::Netns;

/// Interface indexes inside every satellite namespace: isl0..isl3, gsl0.
pub const IFINDEX_BASE: u32 = 10;
type Req = std::pin::Pin<Box<dyn Future<Output = Result<(), rtnetlink::Error>> + Send>>;

/// How many netlink requests are in flight at once.
const IN_FLIGHT: usize = 1024;

/// A running constellation.
#[derive(Debug)]
pub struct Emulation {
    pub sats: Vec<Netns>,
    pub stations: Vec<Netns>,
    /// Ground segments: a bridge each for up to [`SEGMENT_PORTS`] satellites' `gsl0`.
    pub segments: Vec<Netns>,
    /// Ground links up now: satellite → station.
    ground: BTreeMap<u32, u32>,
    /// With several emulated workers: their namespaces and fabric, and which satellite is on
    /// which (`workers`).
    pub fabric: Option<workers::Fabric>,
    pub partition: Option<metal6_emulation::partition::Partition>,
    pub timings: Timings,
}

pub use metal6_emulation::topology::SATS_PER_GROUND_SEGMENT as SEGMENT_PORTS;
const BRIDGE_INDEX: u32 = 2;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Timings {
    pub namespaces_s: f64,
    pub links_s: f64,
    pub addresses_s: f64,
    pub interfaces: usize,
    /// ISLs between workers (VXLAN), when there are several.
    pub crossing: usize,
}

/// A veth created in `a`'s namespace (name `an`, index `ai`) with its peer in `b`'s, down:
/// the kernel refuses IFF_UP at creation (veth_open needs the peer, ENOTCONN), so ends are
/// brought up afterwards.
fn veth_msg(an: &str, ai: u32, bn: &str, bi: u32, b: &Netns) -> rtnetlink::packet_route::link::LinkMessage {
    let peer = LinkMessageBuilder::<LinkUnspec>::new().name(bn.to_owned()).index(bi).setns_by_fd(b.raw_fd()).build();
    LinkVeth::new(an, bn).index(ai).set_info_data(InfoData::Veth(InfoVeth::Peer(peer))).build()
}

async fn in_batches<F, T>(futs: Vec<F>) -> Vec<T>
where
    F: Future<Output = T>,
{
    let mut out = Vec::with_capacity(futs.len());
    let mut it = futs.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<F> = it.by_ref().take(IN_FLIGHT).collect();
        out.extend(join_all(batch).await);
    }
    out
}

impl Emulation {
    /// Creates the namespaces, every ISL of the grid (up or down as at `t`) and the ground
    /// links up at `t`, and the addresses. Call inside a tokio runtime.
    pub async fn create(topo: &Topology, addr: &Addressing, t: f64) -> Result<Emulation> {
        Self::create_on(topo, addr, t, None).await
    }

    /// [`Emulation::create`] over the workers of `partition` (with two or more, each an
    /// emulated worker on a shared fabric; ISLs between them VXLAN: [`workers`]).
    pub async fn create_on(
        topo: &Topology,
        addr: &Addressing,
        t: f64,
        partition: Option<&metal6_emulation::partition::Partition>,
    ) -> Result<Emulation> {
        netns::remove_dead();
        let partition = partition.filter(|p| p.workers.len() > 1).cloned();
        let nworkers = partition.as_ref().map_or(0, |p| p.workers.len());
        let started = Instant::now();
        let n = topo.shell.count();
        let rt = tokio::runtime::Handle::current();
        // Unique per run, so two emulations of one process never collide.
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pid = format!("{}-{}", std::process::id(), RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let pid2 = pid.clone();
        let nseg = n.div_ceil(SEGMENT_PORTS);
        type Made = (Vec<Netns>, Vec<Netns>, Option<workers::Fabric>);
        let (sats, segments, fabric) = tokio::task::spawn_blocking(move || -> Result<Made> {
            let _g = rt.enter();
            let sats = (0..n).map(|i| Netns::create(&format!("m6e{pid}-{i}"))).collect::<Result<Vec<_>>>()?;
            let segs = (0..nseg).map(|k| Netns::create(&format!("m6e{pid}-seg{k}"))).collect::<Result<Vec<_>>>()?;
            let fabric = (nworkers > 1).then(|| workers::Fabric::create(&format!("m6e{pid}"), nworkers)).transpose()?;
            Ok((sats, segs, fabric))
        })
        .await??;
        if let Some(f) = &fabric {
            f.wire().await?;
        }
        let mut emu = Emulation {
            sats,
            stations: vec![],
            segments,
            ground: BTreeMap::new(),
            fabric,
            partition,
            timings: Timings::default(),
        };
        emu.timings.namespaces_s = started.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let up: std::collections::BTreeSet<(u32, u32)> = topo
            .links_at(t)
            .iter()
            .filter(|l| l.kind != LinkKind::Ground)
            .filter_map(|l| match (l.a, l.b) {
                (End::Sat { sat: a, .. }, End::Sat { sat: b, .. }) => Some((a, b)),
                _ => None,
            })
            .collect();
        let mut reqs: Vec<std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>> = vec![];
        let crossing: BTreeMap<u32, metal6_emulation::partition::Crossing> = match (&emu.partition, &emu.fabric) {
            (Some(p), Some(_)) => p.crossing(topo).into_iter().map(|c| (c.link, c)).collect(),
            _ => BTreeMap::new(),
        };
        emu.timings.crossing = crossing.len();
        for (i, (kind, a, b)) in topo.grid().into_iter().enumerate() {
            let (ia, ib) = kind.ifaces();
            let (an, ai) = (Addressing::iface_name(ia), IFINDEX_BASE + u32::from(ia));
            let (bn, bi) = (Addressing::iface_name(ib), IFINDEX_BASE + u32::from(ib));
            let link = u32::try_from(i).unwrap_or(u32::MAX);
            if let (Some(&c), Some(f)) = (crossing.get(&link), &emu.fabric) {
                // Each end made by its own worker, into its satellite.
                for (w, peer, name, idx, sat) in
                    [(c.worker_a, c.worker_b, an, ai, a), (c.worker_b, c.worker_a, bn, bi, b)]
                {
                    let msg = workers::vxlan_end(&c, w, peer, name, idx, &emu.sats[sat as usize]);
                    let h = f.workers[w].handle.clone();
                    reqs.push(Box::pin(async move {
                        h.link()
                            .add(msg)
                            .execute()
                            .await
                            .with_context(|| format!("crossing ISL {a}-{b} (VNI {})", c.vni))
                    }));
                }
                continue;
            }
            let msg = veth_msg(an, ai, bn, bi, &emu.sats[b as usize]);
            let h = emu.sats[a as usize].handle.clone();
            reqs.push(Box::pin(
                async move { h.link().add(msg).execute().await.with_context(|| format!("ISL {a}-{b}")) },
            ));
        }
        for r in in_batches(reqs).await {
            r?;
        }
        // Every ISL end comes up once and stays up (its carrier with it); a link's state is
        // switched by its operational state from then on (see `set_link`).
        let mut ups: Vec<Req> = vec![];
        for (kind, a, b) in topo.grid() {
            let (ia, ib) = kind.ifaces();
            ups.push(Box::pin(emu.set_admin(a, ia, true)));
            ups.push(Box::pin(emu.set_admin(b, ib, true)));
        }
        for r in in_batches(ups).await {
            r.context("bringing ISLs up")?;
        }
        // A VXLAN device has no carrier events: it stays in operational state "unknown" until
        // told otherwise. Through dormant to up, as a switched link goes, it is "up" like a veth.
        for want in [State::Dormant, State::Up] {
            let mut reqs: Vec<Req> = vec![];
            for c in crossing.values() {
                let (ia, ib) = c.kind.ifaces();
                for (sat, iface) in [(c.a, ia), (c.b, ib)] {
                    reqs.push(oper_state(emu.sats[sat as usize].handle.clone(), IFINDEX_BASE + u32::from(iface), want));
                }
            }
            for r in in_batches(reqs).await {
                r.context("bringing crossing ISLs up")?;
            }
        }
        emu.settle(topo).await?;
        let mut downs: Vec<Req> = vec![];
        for (kind, a, b) in topo.grid().into_iter().filter(|(_, a, b)| !up.contains(&(*a, *b))) {
            let (ia, ib) = kind.ifaces();
            downs.extend(emu.set_link((a, ia), (b, ib), false));
        }
        for r in in_batches(downs).await {
            r.context("switching ISLs down")?;
        }
        emu.wire_ground().await?;
        emu.add_stations(topo.stations.len(), &format!("m6e{pid2}")).await?;
        emu.timings.interfaces = topo.grid().len() * 2 + emu.sats.len();
        for l in topo.links_at(t).iter().filter(|l| l.kind == LinkKind::Ground) {
            if let (End::Sat { sat, .. }, End::Station { station }) = (l.a, l.b) {
                emu.ground_up(sat, station).await?;
            }
        }
        emu.timings.links_s = t1.elapsed().as_secs_f64();

        // Loopback and interface addresses (/128 each; ISLs also keep their link-local).
        let t2 = Instant::now();
        // Only interfaces the grid has: a star shell's seam planes lack isl2 or isl3.
        let mut exists = std::collections::BTreeSet::new();
        for (kind, a, b) in topo.grid() {
            let (ia, ib) = kind.ifaces();
            exists.insert((a, ia));
            exists.insert((b, ib));
        }
        let mut reqs: Vec<Req> = vec![];
        for (i, ns) in emu.sats.iter().enumerate() {
            let sat = u32::try_from(i).unwrap_or(u32::MAX);
            let h = ns.handle.clone();
            let lo = IpAddr::V6(addr.loopback(sat));
            reqs.push(Box::pin(async move {
                h.link().set(LinkUnspec::new_with_index(1).up().build()).execute().await?;
                h.address().add(1, lo, 128).execute().await
            }));
            for k in (0..5u8).filter(|k| *k == 4 || exists.contains(&(sat, *k))) {
                let h = ns.handle.clone();
                let a = IpAddr::V6(addr.interface(sat, k));
                reqs.push(Box::pin(
                    async move { h.address().add(IFINDEX_BASE + u32::from(k), a, 128).execute().await },
                ));
            }
        }
        for r in in_batches(reqs).await {
            r.context("adding addresses")?;
        }
        emu.timings.addresses_s = t2.elapsed().as_secs_f64();
        Ok(emu)
    }

    /// Every satellite's `gsl0` is a port of its ground segment's bridge, down until the
    /// satellite has a ground link; every station has a port on every segment. Stations
    /// thus reach the satellites they are linked to over layer 2 (and, a simplification, any
    /// other station's satellite on the same segment).
    async fn wire_ground(&mut self) -> Result<()> {
        for seg in &self.segments {
            let br = rtnetlink::LinkBridge::new("br0").index(BRIDGE_INDEX).build();
            seg.handle.link().add(br).execute().await.context("ground segment bridge")?;
            seg.handle.link().set(LinkUnspec::new_with_index(BRIDGE_INDEX).up().build()).execute().await?;
        }
        let mut reqs: Vec<Req> = vec![];
        for (i, ns) in self.sats.iter().enumerate() {
            let sat = u32::try_from(i).unwrap_or(u32::MAX);
            let seg = &self.segments[(sat / SEGMENT_PORTS) as usize];
            let port = 100 + sat % SEGMENT_PORTS;
            let msg = veth_msg("gsl0", IFINDEX_BASE + 4, &format!("s{sat}"), port, seg);
            let (h, sh) = (ns.handle.clone(), seg.handle.clone());
            reqs.push(Box::pin(async move {
                h.link().add(msg).execute().await?;
                sh.link().set(LinkUnspec::new_with_index(port).controller(BRIDGE_INDEX).up().build()).execute().await
            }));
        }
        for r in in_batches(reqs).await {
            r.context("ground ports")?;
        }
        Ok(())
    }

    /// Adds the ground stations' namespaces, each with a port on every segment.
    async fn add_stations(&mut self, count: usize, prefix: &str) -> Result<()> {
        let rt = tokio::runtime::Handle::current();
        let names: Vec<String> = (0..count).map(|g| format!("{prefix}-gs{g}")).collect();
        let stations = tokio::task::spawn_blocking(move || -> Result<Vec<Netns>> {
            let _g = rt.enter();
            names.iter().map(|n| Netns::create(n)).collect()
        })
        .await??;
        for (g, st) in stations.iter().enumerate() {
            for (k, seg) in self.segments.iter().enumerate() {
                let (gi, si) = (IFINDEX_BASE + u32::try_from(k).unwrap_or(0), 2000 + u32::try_from(g).unwrap_or(0));
                let msg = veth_msg(&format!("seg{k}"), gi, &format!("g{g}"), si, seg);
                st.handle.link().add(msg).execute().await.context("station port")?;
                st.handle.link().set(LinkUnspec::new_with_index(gi).up().build()).execute().await?;
                seg.handle
                    .link()
                    .set(LinkUnspec::new_with_index(si).controller(BRIDGE_INDEX).up().build())
                    .execute()
                    .await?;
            }
        }
        self.stations = stations;
        Ok(())
    }

    async fn ground_up(&mut self, sat: u32, station: u32) -> Result<()> {
        self.set_admin(sat, 4, true).await.with_context(|| format!("ground link {sat}"))?;
        self.ground.insert(sat, station);
        Ok(())
    }

    async fn ground_down(&mut self, sat: u32) -> Result<()> {
        if self.ground.contains_key(&sat) {
            self.set_admin(sat, 4, false).await?;
            self.ground.remove(&sat);
        }
        Ok(())
    }

    /// Sets one interface administratively up or down (ISL ends once, at creation; ground
    /// links, which are bridge ports, whenever they change).
    fn set_admin(&self, sat: u32, iface: u8, up: bool) -> impl Future<Output = Result<(), rtnetlink::Error>> + use<> {
        let h = self.sats[sat as usize].handle.clone();
        let b = LinkUnspec::new_with_index(IFINDEX_BASE + u32::from(iface));
        let msg = if up { b.up().build() } else { b.down().build() };
        async move { h.link().set(msg).execute().await }
    }

    /// Switches one ISL: both ends' operational state, dormant when down. The kernel then
    /// marks every route over it linkdown (and, with `ignore_routes_with_linkdown`, forwards
    /// nothing over it), FRR sees the interface go down and drops the adjacency at once, on
    /// both sides — what a radio link losing lock does. Two messages, neither of which closes
    /// a device: bringing a veth end administratively down costs the kernel a device close,
    /// the IPv6 teardown of the interface (link-local address, routes, multicast) and
    /// link-watch work on the peer — 190–325 µs a link here (full updates of 4,000 ISLs took
    /// 0.76–1.30 s that way), against 80–110 µs for these two.
    fn set_link(&self, a: (u32, u8), b: (u32, u8), up: bool) -> [Req; 2] {
        let want = if up { State::Up } else { State::Dormant };
        let end = |(sat, iface): (u32, u8)| {
            oper_state(self.sats[sat as usize].handle.clone(), IFINDEX_BASE + u32::from(iface), want)
        };
        [end(a), end(b)]
    }

    /// Waits until the kernel's link watch has seen every ISL end come up (operational state
    /// up): before that it would overwrite an operational state set now.
    async fn settle(&self, topo: &Topology) -> Result<()> {
        use futures_util::TryStreamExt;
        let mut want: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, a, b) in topo.grid() {
            *want.entry(a).or_default() += 1;
            *want.entry(b).or_default() += 1;
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let checks: Vec<_> = want
                .iter()
                .map(|(&sat, &n)| {
                    let h = self.sats[sat as usize].handle.clone();
                    async move {
                        let mut links = h.link().get().execute();
                        let mut up = 0;
                        while let Some(l) = links.try_next().await? {
                            let isl = (IFINDEX_BASE..IFINDEX_BASE + 4).contains(&l.header.index);
                            if isl && l.attributes.iter().any(|a| matches!(a, LinkAttribute::OperState(State::Up))) {
                                up += 1;
                            }
                        }
                        Ok::<bool, rtnetlink::Error>(up >= n)
                    }
                })
                .collect();
            let mut all = true;
            for r in in_batches(checks).await {
                all &= r.context("reading ISL states")?;
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "ISL ends not operationally up 30 s after they were brought up (when dmesg shows `percpu: \
                     allocation failed`, the kernel was still freeing an earlier emulation's namespaces: start \
                     again in a minute)"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Applies link events: ISLs switch state (both ends, see `set_link`), ground links are
    /// re-made. Returns the number of ISLs switched.
    pub async fn apply(&mut self, events: &[LinkEvent]) -> Result<usize> {
        let mut reqs: Vec<Req> = vec![];
        let mut n = 0;
        for e in events.iter().filter(|e| e.kind != LinkKind::Ground) {
            if let (End::Sat { sat: a, iface: ia }, End::Sat { sat: b, iface: ib }) = (e.a, e.b) {
                reqs.extend(self.set_link((a, ia), (b, ib), e.up));
                n += 1;
            }
        }
        // Every change is attempted, the ground links too, even after one fails: the first
        // error is returned once all were tried.
        let mut first: Option<anyhow::Error> = None;
        for r in in_batches(reqs).await {
            if let Err(e) = r {
                first.get_or_insert(e.into());
            }
        }
        for e in events.iter().filter(|e| e.kind == LinkKind::Ground) {
            if let (End::Sat { sat, .. }, End::Station { station }) = (e.a, e.b) {
                let r = if e.up {
                    match self.ground_down(sat).await {
                        Ok(()) => self.ground_up(sat, station).await,
                        Err(e) => Err(e),
                    }
                } else if self.ground.get(&sat) == Some(&station) {
                    self.ground_down(sat).await
                } else {
                    Ok(())
                };
                if let Err(e) = r {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(n), Err)
    }

    /// Puts every link as the model has it at `t`, whatever was done before: every ISL end
    /// administratively up and operationally up or dormant, every `gsl0` up exactly for the
    /// satellites with a ground link (set on each, not only on those thought changed). After a
    /// benchmark round or a failed step. Tries everything; returns the first error.
    pub async fn set_to(&mut self, topo: &Topology, t: f64) -> Result<()> {
        let want = metal6_emulation::expect::Expected::at(topo, t);
        let mut first: Option<anyhow::Error> = None;
        let mut admin: Vec<Req> = vec![];
        let mut oper: Vec<Req> = vec![];
        for (kind, a, b) in topo.grid() {
            let (ia, ib) = kind.ifaces();
            admin.push(Box::pin(self.set_admin(a, ia, true)));
            admin.push(Box::pin(self.set_admin(b, ib, true)));
            let up = want.isl.get(&(a, ia)).copied().unwrap_or(false);
            oper.extend(self.set_link((a, ia), (b, ib), up));
        }
        for batch in [admin, oper] {
            for r in in_batches(batch).await {
                if let Err(e) = r {
                    first.get_or_insert(anyhow::Error::from(e).context("setting the links as the model has them"));
                }
            }
        }
        let stations: BTreeMap<u32, u32> = topo
            .links_at(t)
            .into_iter()
            .filter_map(|l| match (l.a, l.b) {
                (End::Sat { sat, .. }, End::Station { station }) => Some((sat, station)),
                _ => None,
            })
            .collect();
        let mut ground: Vec<Req> = vec![];
        for sat in 0..u32::try_from(self.sats.len()).unwrap_or(u32::MAX) {
            ground.push(Box::pin(self.set_admin(sat, 4, stations.contains_key(&sat))));
        }
        for r in in_batches(ground).await {
            if let Err(e) = r {
                first.get_or_insert(anyhow::Error::from(e).context("setting the ground links"));
            }
        }
        self.ground = stations;
        first.map_or(Ok(()), Err)
    }

    /// Sets every ISL's delay (both ends' netem qdisc) to its propagation delay at `t`; links
    /// down at `t` keep their last delay. Needs a kernel with netem ([`netem_available`]).
    /// Returns the number of links set.
    pub async fn set_delays(&self, topo: &Topology, t: f64) -> Result<usize> {
        let mut reqs: Vec<Req> = vec![];
        for l in topo.links_at(t).iter().filter(|l| l.kind != LinkKind::Ground) {
            if let (End::Sat { sat: a, iface: ia }, End::Sat { sat: b, iface: ib }) = (l.a, l.b) {
                let ns = (l.delay_ms * 1e6).round() as u64;
                for (s, i) in [(a, ia), (b, ib)] {
                    let h = self.sats[s as usize].handle.clone();
                    reqs.push(Box::pin(netem::set_delay(h, IFINDEX_BASE + u32::from(i), ns)));
                }
            }
        }
        let n = reqs.len() / 2;
        for r in in_batches(reqs).await {
            r.context("setting a link's delay (netem)")?;
        }
        Ok(n)
    }

    /// Sets every ISL up or down at once: the "full link-state update" of the benchmark.
    /// Returns the number of links.
    pub async fn set_all(&self, topo: &Topology, up: bool) -> Result<usize> {
        let mut reqs: Vec<Req> = vec![];
        for (kind, a, b) in topo.grid() {
            let (ia, ib) = kind.ifaces();
            reqs.extend(self.set_link((a, ia), (b, ib), up));
        }
        let n = reqs.len() / 2;
        for r in in_batches(reqs).await {
            r?;
        }
        Ok(n)
    }

    /// [`Emulation::set_all`] for one emulated worker's share: the ISL ends of its
    /// satellites (of a crossing link, its own end; the other worker sets the other) — what
    /// each worker's link agent does, in parallel with the others', on real workers. Returns
    /// the number of ends.
    pub async fn set_all_worker(&self, topo: &Topology, up: bool, worker: usize) -> Result<usize> {
        let Some(p) = &self.partition else { return self.set_all(topo, up).await.map(|n| 2 * n) };
        let want = if up { State::Up } else { State::Dormant };
        let mut reqs: Vec<Req> = vec![];
        for (kind, a, b) in topo.grid() {
            let (ia, ib) = kind.ifaces();
            for (sat, iface) in [(a, ia), (b, ib)] {
                if p.worker_of(sat) == worker {
                    let h = self.sats[sat as usize].handle.clone();
                    reqs.push(oper_state(h, IFINDEX_BASE + u32::from(iface), want));
                }
            }
        }
        let n = reqs.len();
        for r in in_batches(reqs).await {
            r?;
        }
        Ok(n)
    }
}

/// The Kubernetes backend's node agent: every ISL of the grid as a veth pair in the *current*
/// network namespace (the node's), named [`Addressing::host_device_name`] at both ends, MTU
/// set, left down — down interfaces do no IPv6 DAD, RS or MLD on the host, and the
/// host-device CNI plugin brings each end up inside its satellite pod. Pairs that exist are
/// kept (the agent restarts without disturbing running pods), and so are pairs with an end in a
/// pod already (`in_pods`: host names of ends found there — with both ends in pods the host
/// shows neither, and a new pair would take the name DEL hands back). Returns (created, kept).
///
/// With `split` (a constellation over several workers) only this worker's share: the pairs
/// with both ends here, and for each crossing ISL with an end here, that end alone as a VXLAN
/// device to the other worker's underlay address (VNI from the partition), named the same.
pub async fn host_veths(
    topo: &Topology,
    mtu: u32,
    in_pods: &std::collections::HashSet<String>,
    split: Option<&workers::Split<'_>>,
) -> Result<HostLinks> {
    let (conn, handle, _) = rtnetlink::new_connection().context("rtnetlink socket")?;
    let conn_task = tokio::spawn(conn);
    let mut existing = std::collections::HashSet::new();
    {
        use futures_util::TryStreamExt;
        use rtnetlink::packet_route::link::LinkAttribute;
        let mut links = handle.link().get().execute();
        while let Some(l) = links.try_next().await.context("listing links")? {
            for a in l.attributes {
                if let LinkAttribute::IfName(n) = a {
                    existing.insert(n);
                }
            }
        }
    }
    let mut reqs: Vec<Req> = Vec::new();
    let mut kept = 0;
    let mut vxlan = 0;
    let crossing: BTreeMap<(u32, u32), metal6_emulation::partition::Crossing> =
        split.map(|x| x.partition.crossing(topo).into_iter().map(|c| ((c.a, c.b), c)).collect()).unwrap_or_default();
    for (kind, a, b) in topo.grid() {
        let (ia, ib) = kind.ifaces();
        let (an, bn) = (Addressing::host_device_name(a, ia), Addressing::host_device_name(b, ib));
        if let Some(x) = split {
            let (wa, wb) = (x.partition.worker_of(a), x.partition.worker_of(b));
            if wa != x.me && wb != x.me {
                continue;
            }
            if let Some(c) = crossing.get(&(a, b)) {
                let (name, peer) = if wa == x.me { (&an, wb) } else { (&bn, wa) };
                if existing.contains(name) || in_pods.contains(name) {
                    kept += 1;
                    continue;
                }
                let msg = LinkVxlan::new(name, c.vni)
                    .local6(x.underlay[x.me])
                    .remote6(x.underlay[peer])
                    .port(workers::VXLAN_PORT)
                    .learning(false)
                    .mtu(mtu)
                    .build();
                let h = handle.clone();
                reqs.push(Box::pin(async move { h.link().add(msg).execute().await }));
                vxlan += 1;
                continue;
            }
        }
        // An end may sit in its pod already (host-device moved it): the pair exists then.
        if [&an, &bn].iter().any(|n| existing.contains(*n) || in_pods.contains(*n)) {
            kept += 1;
            continue;
        }
        // The MTU goes on both ends: the peer message carries its own.
        let peer = LinkMessageBuilder::<LinkUnspec>::new().name(bn.clone()).mtu(mtu).build();
        let msg = LinkVeth::new(&an, &bn).mtu(mtu).set_info_data(InfoData::Veth(InfoVeth::Peer(peer))).build();
        let h = handle.clone();
        reqs.push(Box::pin(async move { h.link().add(msg).execute().await }));
    }
    let created = reqs.len();
    for r in in_batches(reqs).await {
        r.context("creating an ISL end (veth pair or VXLAN)")?;
    }
    conn_task.abort();
    Ok(HostLinks { pairs: created - vxlan, vxlan, kept })
}

/// What [`host_veths`] did on the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostLinks {
    /// veth pairs created (both ends of a local ISL).
    pub pairs: usize,
    /// VXLAN ends created (this worker's end of a crossing ISL).
    pub vxlan: usize,
    /// ISLs that were there already (an end on the node or in a pod).
    pub kept: usize,
}

/// Satellite pods on a Kubernetes node, found by their network namespaces and identified by
/// their interface addresses (local IPAM: an address names its satellite and interface), each
/// with an rtnetlink socket inside: what the link agent switches links through.
#[derive(Debug, Default)]
pub struct PodLinks {
    /// satellite → (socket in its pod, interface index by isl/gsl number).
    pods: BTreeMap<u32, (rtnetlink::Handle, BTreeMap<u8, u32>)>,
    /// Namespaces already identified, so a refresh attaches only to new ones.
    by_path: BTreeMap<std::path::PathBuf, u32>,
}

impl PodLinks {
    /// Looks at every namespace in `dir` whose name starts with `prefix`.
    pub async fn discover(dir: &std::path::Path, prefix: &str, addr: &Addressing, sats: u32) -> Result<PodLinks> {
        let mut out = PodLinks::default();
        out.refresh(dir, prefix, addr, sats).await;
        Ok(out)
    }

    /// Forgets pods whose namespace is gone and identifies the new ones (a namespace without
    /// satellite addresses yet — its CNI ADD still running — is looked at again next time).
    /// Pods already known keep their sockets: a round costs one directory read.
    pub async fn refresh(&mut self, dir: &std::path::Path, prefix: &str, addr: &Addressing, sats: u32) {
        use futures_util::TryStreamExt;
        use rtnetlink::packet_route::address::AddressAttribute;
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let present: std::collections::BTreeSet<std::path::PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path())
            .collect();
        let gone: Vec<std::path::PathBuf> = self.by_path.keys().filter(|p| !present.contains(*p)).cloned().collect();
        for p in gone {
            if let Some(sat) = self.by_path.remove(&p) {
                self.pods.remove(&sat);
            }
        }
        let new: Vec<std::path::PathBuf> = present.into_iter().filter(|p| !self.by_path.contains_key(p)).collect();
        for path in new {
            let p = path.clone();
            let Ok(Ok(handle)) = tokio::task::spawn_blocking(move || netns::attach(&p)).await else { continue };
            let mut found: Option<u32> = None;
            let mut ifaces = BTreeMap::new();
            let mut addrs = handle.address().get().execute();
            while let Ok(Some(m)) = addrs.try_next().await {
                for a in &m.attributes {
                    let AddressAttribute::Address(IpAddr::V6(ip)) = a else { continue };
                    let Some((sat, iface)) = addr.owner(*ip, sats) else { continue };
                    if found.is_some_and(|f| f != sat) {
                        continue;
                    }
                    found = Some(sat);
                    ifaces.insert(iface, m.header.index);
                }
            }
            if let Some(sat) = found {
                // A recreated pod (new namespace) replaces the old one of its satellite.
                self.by_path.retain(|_, s| *s != sat);
                self.by_path.insert(path, sat);
                self.pods.insert(sat, (handle, ifaces));
            }
        }
    }

    pub fn count(&self) -> usize {
        self.pods.len()
    }

    /// The pods as a check sees them: each one's socket and the indexes of the ISL ends found
    /// in it (ground links are the CNI's, not the agent's: not looked at).
    pub fn views(&self) -> Vec<check::SatView> {
        self.pods
            .iter()
            .map(|(sat, (handle, m))| check::SatView {
                sat: *sat,
                handle: handle.clone(),
                ifindex: std::array::from_fn(|k| {
                    let k = u8::try_from(k).unwrap_or(u8::MAX);
                    if k < 4 { m.get(&k).copied() } else { None }
                }),
            })
            .collect()
    }

    /// The host-side names of every interface end found in a pod.
    pub fn host_names(&self) -> std::collections::HashSet<String> {
        self.pods.iter().flat_map(|(sat, (_, m))| m.keys().map(|i| Addressing::host_device_name(*sat, *i))).collect()
    }

    /// Sets every ISL with an end in a known pod up or down as the constellation is at `t`:
    /// the operational state of each of its ends found here, dormant when down (as the netns
    /// backend does; host-device keeps the ends administratively up in their pods). Ends
    /// already as wanted are left alone, so a round sends only the changes. An end whose
    /// carrier came up but that the kernel's link watch has not processed yet (operational
    /// state not yet up or dormant) is left for the next round: link watch would overwrite a
    /// state set now.
    pub async fn apply_at(&self, topo: &Topology, t: f64) -> Result<Switched> {
        use futures_util::TryStreamExt;
        let up: std::collections::HashSet<(u32, u8)> = topo
            .links_at(t)
            .into_iter()
            .filter_map(|l| match (l.a, l.b) {
                (End::Sat { sat, iface }, End::Sat { .. }) => Some((sat, iface)),
                _ => None,
            })
            .collect();
        // Each pod's ISL ends as they are: ifindex -> (carrier, operational state).
        let looks: Vec<_> = self
            .pods
            .iter()
            .map(|(sat, (h, _))| {
                let (sat, h) = (*sat, h.clone());
                async move {
                    let mut now = BTreeMap::new();
                    let mut links = h.link().get().execute();
                    while let Some(l) = links.try_next().await? {
                        let carrier = l.header.flags.contains(rtnetlink::packet_route::link::LinkFlags::LowerUp);
                        let state = l.attributes.iter().find_map(|a| match a {
                            LinkAttribute::OperState(s) => Some(*s),
                            _ => None,
                        });
                        now.insert(l.header.index, (carrier, state));
                    }
                    Ok::<_, rtnetlink::Error>((sat, now))
                }
            })
            .collect();
        let mut seen: BTreeMap<u32, BTreeMap<u32, (bool, Option<State>)>> = BTreeMap::new();
        for r in in_batches(looks).await {
            let (sat, now) = r.context("reading a pod's links")?;
            seen.insert(sat, now);
        }
        let mut reqs: Vec<Req> = Vec::new();
        let mut out = Switched::default();
        for (kind, a, b) in topo.grid() {
            let (ia, ib) = kind.ifaces();
            let want_up = up.contains(&(a, ia));
            let want = if want_up { State::Up } else { State::Dormant };
            let mut here = false;
            for (sat, iface) in [(a, ia), (b, ib)] {
                let Some((h, idx)) = self.pods.get(&sat).and_then(|(h, m)| m.get(&iface).map(|x| (h.clone(), *x)))
                else {
                    continue;
                };
                here = true;
                match seen.get(&sat).and_then(|m| m.get(&idx)) {
                    Some((_, Some(s))) if *s == want => {}
                    // A VXLAN end (a crossing ISL) has no carrier events: "unknown" until set.
                    Some((true, Some(State::Up | State::Dormant | State::Unknown))) => {
                        reqs.push(oper_state(h, idx, want));
                        out.changed += 1;
                    }
                    _ => out.unsettled += 1,
                }
            }
            if here {
                if want_up {
                    out.up += 1;
                } else {
                    out.down += 1;
                }
            }
        }
        for r in in_batches(reqs).await {
            r.context("switching a link")?;
        }
        Ok(out)
    }
}

/// Sets one interface's operational state (RTM_NEWLINK with `IFLA_OPERSTATE`): how both
/// backends switch an ISL end.
fn oper_state(h: rtnetlink::Handle, ifindex: u32, state: State) -> Req {
    let mut m = LinkUnspec::new_with_index(ifindex).build();
    m.attributes.push(LinkAttribute::OperState(state));
    Box::pin(async move { h.link().set(m).execute().await })
}

/// One switching round of the node agent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Switched {
    /// ISLs with an end here that are up at `t`, and down.
    pub up: usize,
    pub down: usize,
    /// Ends whose state was set this round (the others were already right).
    pub changed: usize,
    /// Ends left for the next round: not yet settled after their carrier came up, or without
    /// carrier (their peer's pod has not started).
    pub unsettled: usize,
}

/// Whether this kernel can delay packets (sch_netem): tried once on a scratch namespace's
/// loopback with `tc`, the one tool call of the backend (not per link).
pub fn netem_available() -> bool {
    let ns = format!("m6e{}-netem", std::process::id());
    let run = |args: &[&str]| std::process::Command::new("ip").args(args).output().is_ok_and(|o| o.status.success());
    if !run(&["netns", "add", &ns]) {
        return false;
    }
    let ok = run(&["netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]);
    run(&["netns", "del", &ns]);
    ok
}
