//! `metal6 emulate`: the satellite-constellation workload. `plan` prints the topology at an
//! instant (links, delays, addresses) and the link events over a window; `draw` writes the
//! picture. The shell is given as `PLANESxPER_PLANE` with altitude, inclination and phasing.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use metal6_emulation::partition::{Partition, PartitionPlan};
use metal6_emulation::tle::TleError;
use metal6_emulation::topology::End;
use metal6_emulation::{Addressing, GroundStation, Shell, ShellKind, TleConstellation, Topology};
use serde::Serialize;
use sgp4::chrono::NaiveDateTime;

use crate::output::{self, Format};

#[derive(Debug, clap::Subcommand)]
pub enum EmulateCmd {
    /// The topology at --at (links, delays, addresses) and link events until --until.
    Plan(PlanArgs),
    /// An SVG of the constellation, its links and ground stations at --at.
    Draw(DrawArgs),
    /// Run the constellation: one network namespace per satellite (netns backend), links
    /// switched as the satellites move, optionally IS-IS routing with FRR; or, with
    /// `--backend k8s`, write its pods, NADs and link agent for a cluster (`--out`).
    Run(RunArgs),
    /// Write a Walker shell as TLEs (3LE), its satellites where `plan` puts them at t = 0:
    /// for running a designed shell with SGP4 (`--tle`), or feeding other tools the same one.
    Tle(TleArgs),
    /// On a Kubernetes node: create the constellation's ISL veth pairs (down, named for the
    /// host-device NADs) in this network namespace, then wait (the link-agent daemonset).
    Agent(AgentArgs),
    /// Run the constellation in namespaces for a long time with its model time sped up, so
    /// links switch continuously, checking every step that the kernel is as the model and
    /// that nothing grows (`make soak-emulation`). Exits 1 on any mismatch or growth past
    /// a bound, with a one-page summary.
    Soak(SoakArgs),
    /// Compare a running emulation (`emulate run --duration …` or `emulate soak`, found by
    /// its work directory) with its model now: every link end, ground links, routers, and
    /// what it holds. Exits 1 when a link differs from the model.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    #[command(flatten)]
    shell: ShellArgs,
    /// Wall-clock seconds to run.
    #[arg(long, default_value_t = 3600.0)]
    duration: f64,
    /// Constellation seconds per wall-clock second.
    #[arg(long, default_value_t = 20.0)]
    speed: f64,
    /// Constellation seconds between link-state updates (each followed by a full check).
    #[arg(long, default_value_t = 10.0)]
    step: f64,
    /// Constellation time at start, seconds.
    #[arg(long, default_value_t = 0.0)]
    at: f64,
    /// FRR IS-IS on a block of satellites: the first PLANES planes' first SLOTS slots
    /// (`PLANESxSLOTS`; `0x0`: no routers).
    #[arg(long, default_value = "8x8", value_name = "PLANESxSLOTS")]
    routers: String,
    /// Wall-clock seconds between resource samples and routing checks.
    #[arg(long, default_value_t = 60.0)]
    check_every: f64,
    /// Seconds IS-IS may take to agree with the model at a routing check.
    #[arg(long, default_value_t = 30.0)]
    settle: f64,
    /// Wall-clock seconds before the baseline of the growth bounds (default: a tenth of the
    /// duration, at most 300).
    #[arg(long)]
    warmup: Option<f64>,
    /// Bound on metal6's resident memory above its baseline.
    #[arg(long, default_value_t = 32.0)]
    max_rss_growth_mib: f64,
    /// Bound on the routers' proportional memory (PSS, all daemons) above its baseline.
    #[arg(long, default_value_t = 64.0)]
    max_frr_growth_mib: f64,
    /// Bound on the kernel's slab above its baseline.
    #[arg(long, default_value_t = 256.0)]
    max_slab_growth_mib: f64,
    /// Bound on open descriptors (metal6's, the routers') above their baseline.
    #[arg(long, default_value_t = 0)]
    max_fd_growth: u64,
    /// Where FRR's files and the run state go.
    #[arg(long, default_value = "emulation-soak")]
    workdir: PathBuf,
    /// Also write the whole report (every sample) as JSON here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The running emulation's work directory (its `--workdir`).
    #[arg(long, default_value = "emulation")]
    workdir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    shell: ShellArgs,
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
    /// Exit after creating the pairs (and, with --switch, one switching round at --at)
    /// instead of running until SIGTERM.
    #[arg(long)]
    once: bool,
    /// Also switch the ISLs up and down as the satellites move, in the satellite pods found
    /// in --netns-dir (identified by their addresses; always looked at, so that pairs whose
    /// ends are in pods are not made again).
    #[arg(long)]
    switch: bool,
    /// Where the container runtime keeps pod network namespaces.
    #[arg(long, default_value = "/run/netns")]
    netns_dir: PathBuf,
    /// Only namespaces whose name starts with this (containerd: `cni-`).
    #[arg(long, default_value = "cni-")]
    netns_prefix: String,
    /// Constellation time at start, seconds.
    #[arg(long, default_value_t = 0.0)]
    at: f64,
    /// Seconds between switching rounds (constellation time).
    #[arg(long, default_value_t = 10.0)]
    step: f64,
    /// Constellation seconds per wall-clock second.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// With --switch: after every round, compare the pods' links with the model and write
    /// the numbers `emulate check` gives (mismatches, ends, neighbours, the agent's memory
    /// and descriptors) to FILE in Prometheus' text format (node-exporter's textfile
    /// collector reads it), written aside and renamed.
    #[arg(long, value_name = "FILE", requires = "switch")]
    metrics: Option<PathBuf>,
    /// A constellation split over several workers: every worker as NAME=ADDRESS (its node
    /// address, the other end of its crossing ISLs), in the order the planes are split. The
    /// agent then makes only this worker's share: local pairs, and its end of each crossing
    /// ISL as a VXLAN to the other worker.
    #[arg(long, value_delimiter = ',', value_name = "NAME=ADDRESS,…", requires = "node_name")]
    nodes: Vec<String>,
    /// This worker's name among --nodes (the DaemonSet passes the pod's node name).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
}

/// `--nodes NAME=ADDRESS,…`: the workers' names in order and their underlay addresses.
fn named_addresses(list: &[String]) -> Result<(Vec<String>, Vec<std::net::Ipv6Addr>)> {
    let mut names = vec![];
    let mut addrs = vec![];
    for item in list {
        let (n, a) = item
            .split_once('=')
            .with_context(|| format!("--nodes {item}: NAME=ADDRESS (the worker's node address)"))?;
        names.push(n.to_owned());
        addrs.push(a.parse().with_context(|| format!("--nodes {item}: `{a}` is not an IPv6 address"))?);
    }
    Ok((names, addrs))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Network namespaces and veth pairs on this machine, through netlink.
    Netns,
    /// Kubernetes manifests (satellite pods with FRR, NADs, the link agent) into --out.
    K8s,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    shell: ShellArgs,
    #[arg(long, value_enum, default_value_t = Backend::Netns)]
    backend: Backend,
    /// Constellation time at start, seconds.
    #[arg(long, default_value_t = 0.0)]
    at: f64,
    /// Run this many seconds of constellation time (0: build, report, tear down).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Constellation seconds per wall-clock second.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Seconds between link-state updates (constellation time).
    #[arg(long, default_value_t = 10.0)]
    step: f64,
    /// Keep FILE an SVG of the constellation as it is now (rewritten after every link-state
    /// update): `metal6 serve --emulation-svg FILE` shows it on the dashboard.
    #[arg(long, value_name = "FILE")]
    draw: Option<PathBuf>,
    /// Start FRR (zebra + isisd) in every satellite namespace.
    #[arg(long)]
    frr: bool,
    /// Where FRR's configs, sockets and logs go, and, while the run lasts (`--duration`),
    /// its state for `metal6 emulate check`.
    #[arg(long, default_value = "emulation")]
    workdir: PathBuf,
    /// k8s backend: the directory the manifests go to.
    #[arg(long, required_if_eq("backend", "k8s"))]
    out: Option<PathBuf>,
    /// k8s backend: the worker the satellites are pinned to.
    #[arg(long, default_value = "w-01")]
    node: String,
    /// Split the constellation over these workers (comma-separated, two or more): whole
    /// planes each, the ISLs between workers VXLAN (`emulate plan --nodes` shows the split).
    /// netns backend: WORKER names, each emulated as a namespace on a shared fabric. k8s
    /// backend: WORKER=ADDRESS, the node's address (the remote of its crossing ISLs).
    #[arg(long, value_delimiter = ',', value_name = "WORKER,…")]
    nodes: Vec<String>,
    /// k8s backend with --nodes: the MTU of the network between the workers; the ISLs get at
    /// most this less 70 (VXLAN over IPv6). Required with several --nodes.
    #[arg(long)]
    underlay_mtu: Option<u32>,
    /// k8s backend: namespace of the constellation.
    #[arg(long, default_value = "constellation")]
    namespace: String,
    /// k8s backend: MTU of the links.
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
    /// k8s backend: image with the `metal6` binary for the link agent.
    #[arg(long, default_value = metal6_cluster::AGENT_IMAGE)]
    agent_image: String,
}

#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// Planes x satellites per plane, e.g. 72x22 (the default). With --tle: checked against
    /// the grid the TLEs make.
    #[arg(long)]
    shell: Option<String>,
    /// The constellation from TLEs (2LE or 3LE, as CelesTrak serves them) propagated with
    /// SGP4 instead of a Walker shell: planes, slots and phasing are inferred from the
    /// satellites' orbits; it must be one full shell.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["altitude_km", "inclination", "phasing", "star"])]
    tle: Option<PathBuf>,
    /// With --tle: the UTC time of t = 0 (default: the newest TLE epoch), e.g. 2026-12-01T00:00:00.
    #[arg(long, requires = "tle", value_name = "UTC", value_parser = parse_utc)]
    tle_start: Option<NaiveDateTime>,
    #[arg(long, default_value_t = 550.0)]
    altitude_km: f64,
    #[arg(long, default_value_t = 53.0)]
    inclination: f64,
    /// Walker phasing F (0 ≤ F < planes).
    #[arg(long, default_value_t = 1)]
    phasing: u32,
    /// Walker star (polar, 180° of planes, a seam) instead of delta.
    #[arg(long)]
    star: bool,
    /// Ground stations as NAME:LAT:LON, repeatable.
    #[arg(long = "station", value_name = "NAME:LAT:LON")]
    stations: Vec<String>,
    /// Minimum elevation of a ground link, degrees.
    #[arg(long, default_value_t = 25.0)]
    elevation_mask: f64,
    /// The per-node address block the satellites' /64s come from.
    #[arg(long, default_value = metal6_cluster::DEFAULT_BLOCK)]
    block: ipnet::Ipv6Net,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    shell: ShellArgs,
    /// Seconds since epoch of the plan.
    #[arg(long, default_value_t = 0.0)]
    at: f64,
    /// Also list link events from --at to this time (seconds).
    #[arg(long)]
    until: Option<f64>,
    /// Sampling step of the events, seconds.
    #[arg(long, default_value_t = 10.0)]
    step: f64,
    /// Spread the constellation over these workers (comma-separated): print which planes
    /// each gets, the links that stay local and those that cross, per border, and the most
    /// crossing links up at once from --at to --until.
    #[arg(long, value_delimiter = ',', value_name = "WORKER,…")]
    nodes: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct TleArgs {
    #[command(flatten)]
    shell: ShellArgs,
    /// The UTC epoch of the elements: t = 0.
    #[arg(long, value_name = "UTC", value_parser = parse_utc, default_value = "2026-01-01T00:00:00")]
    epoch: NaiveDateTime,
    /// Catalogue number of the first satellite.
    #[arg(long, default_value_t = 90_000)]
    first_norad: u64,
    /// Where to write them (default: standard output).
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DrawArgs {
    #[command(flatten)]
    shell: ShellArgs,
    #[arg(long, default_value_t = 0.0)]
    at: f64,
    /// Where to write the SVG.
    #[arg(long, short = 'f', default_value = "constellation.svg")]
    file: PathBuf,
}

fn parse_utc(s: &str) -> Result<NaiveDateTime, String> {
    let s = s.trim_end_matches('Z');
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|e| format!("{e}: a UTC time like 2026-12-01T00:00:00"))
}

fn parse_shell(s: &str) -> Result<(u32, u32)> {
    let (p, q) = s.split_once('x').context("--shell: PLANESxPER_PLANE, e.g. 72x22")?;
    let (planes, per_plane): (u32, u32) =
        (p.parse().context("--shell planes")?, q.parse().context("--shell per plane")?);
    if planes == 0 || per_plane == 0 {
        bail!("--shell: at least one plane of one satellite");
    }
    Ok((planes, per_plane))
}

/// The constellation of `--tle FILE`, with `file:line:` on what is wrong with it.
fn tle_constellation(path: &std::path::Path, start: Option<NaiveDateTime>) -> Result<TleConstellation> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --tle {}", path.display()))?;
    TleConstellation::parse(&text, start).map_err(|e| match e {
        TleError::Parse { line, column, message } => anyhow::anyhow!(
            "{}:{line}:{}: {message}",
            path.display(),
            column.map(|c| c.to_string()).unwrap_or_else(|| "1".into())
        ),
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

pub(crate) fn topology(a: &ShellArgs) -> Result<(Topology, Addressing)> {
    let tle = a.tle.as_deref().map(|p| tle_constellation(p, a.tle_start)).transpose()?;
    let (planes, per_plane) = match (&tle, &a.shell) {
        (Some(c), Some(s)) => {
            let want = parse_shell(s)?;
            if want != (c.shell.planes, c.shell.per_plane) {
                bail!(
                    "--shell {s}, but the TLEs make {}x{} ({} satellites)",
                    c.shell.planes,
                    c.shell.per_plane,
                    c.len()
                );
            }
            want
        }
        (Some(c), None) => (c.shell.planes, c.shell.per_plane),
        (None, s) => parse_shell(s.as_deref().unwrap_or("72x22"))?,
    };
    if tle.is_none() && a.phasing >= planes {
        bail!("--phasing {} must be below the number of planes ({planes})", a.phasing);
    }
    let mut stations = vec![];
    for st in &a.stations {
        let f: Vec<&str> = st.split(':').collect();
        let [name, lat, lon] = f.as_slice() else { bail!("--station {st}: NAME:LAT:LON") };
        stations.push(GroundStation {
            name: (*name).to_owned(),
            lat_deg: lat.parse().with_context(|| format!("--station {st}: latitude"))?,
            lon_deg: lon.parse().with_context(|| format!("--station {st}: longitude"))?,
        });
    }
    let count = u32::try_from(stations.len()).unwrap_or(u32::MAX);
    let mut topo = match tle {
        Some(c) => Topology::from_tle(c, stations),
        None => Topology::new(
            Shell {
                kind: if a.star { ShellKind::Star } else { ShellKind::Delta },
                planes,
                per_plane,
                phasing: a.phasing,
                altitude_km: a.altitude_km,
                inclination_deg: a.inclination,
            },
            stations,
        ),
    };
    topo.elevation_mask_deg = a.elevation_mask;
    let addr = Addressing::new(a.block, topo.shell.count(), count)?;
    Ok((topo, addr))
}

#[derive(Serialize)]
struct LinkOut {
    kind: metal6_emulation::LinkKind,
    a: String,
    b: String,
    a_addr: String,
    b_addr: String,
    distance_km: f64,
    delay_ms: f64,
}

fn end_name(t: &Topology, addr: &Addressing, e: End) -> (String, String) {
    match e {
        End::Sat { sat, iface } => {
            let (p, s) = t.plane_slot(sat);
            (format!("sat-{p}-{s}/{}", Addressing::iface_name(iface)), addr.interface(sat, iface).to_string())
        }
        End::Station { station } => (t.stations[station as usize].name.clone(), addr.station(station).to_string()),
    }
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn run_k8s(a: &RunArgs, format: Format) -> Result<ExitCode> {
    let (topo, addr) = topology(&a.shell)?;
    let (names, underlay) = named_addresses(&a.nodes)?;
    let part = partition(&topo, &names)?.filter(|p| p.workers.len() > 1);
    // One worker given as --nodes is that worker.
    let node = if names.len() == 1 { names[0].as_str() } else { a.node.as_str() };
    let underlay_mtu = match (&part, a.underlay_mtu) {
        (Some(_), None) => bail!(
            "--nodes over several workers: give --underlay-mtu (the MTU of the network between them; \
             the ISLs get 70 bytes less for VXLAN)"
        ),
        (_, m) => m.unwrap_or(0),
    };
    let out = a.out.as_ref().context("--backend k8s needs --out DIR")?;
    let e = metal6_cluster::Emulation {
        topology: &topo,
        addressing: &addr,
        workers: part.as_ref().map(|partition| metal6_cluster::Workers {
            partition,
            underlay: &underlay,
            underlay_mtu,
        }),
        node,
        namespace: &a.namespace,
        mtu: a.mtu,
        frr_image: metal6_cluster::FRR_IMAGE,
        agent_image: &a.agent_image,
    };
    let files = metal6_cluster::constellation(&e)?;
    let mut written = Vec::new();
    for f in &files {
        // The emulation's files are the same as `cluster render --emulation`'s; here flat.
        let name = f.path.rsplit('/').next().unwrap_or(&f.path);
        let path = out.join(name);
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        std::fs::write(&path, &f.text).with_context(|| format!("writing {}", path.display()))?;
        written.push(serde_json::json!({"path": path, "bytes": f.text.len()}));
    }
    let mut o = std::io::stdout().lock();
    if format == Format::Table {
        for w in &written {
            writeln!(o, "{}  {} bytes", w["path"].as_str().unwrap_or(""), w["bytes"])?;
        }
        writeln!(o, "apply after Multus (metal6 cluster render): kubectl apply -f {}", out.display())?;
    } else {
        output::write_data(&mut o, format, &written)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn agent(a: &AgentArgs) -> Result<ExitCode> {
    let (topo, addr) = topology(&a.shell)?;
    // Multi-threaded: attaching to pod namespaces runs on blocking threads.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let sats = topo.shell.count();
    let mut pods = rt.block_on(metal6_emunet::PodLinks::discover(&a.netns_dir, &a.netns_prefix, &addr, sats))?;
    let (names, underlay) = named_addresses(&a.nodes)?;
    let part = partition(&topo, &names)?;
    let me = match (&part, &a.node_name) {
        (Some(_), Some(n)) => {
            Some(names.iter().position(|x| x == n).with_context(|| format!("--node-name {n} is not among --nodes"))?)
        }
        _ => None,
    };
    let split = part.as_ref().zip(me).map(|(partition, me)| metal6_emunet::workers::Split {
        partition,
        me,
        underlay: &underlay,
    });
    let made = rt.block_on(metal6_emunet::host_veths(&topo, a.mtu, &pods.host_names(), split.as_ref()))?;
    let mut err = std::io::stderr();
    if split.is_some() {
        writeln!(
            err,
            "emulate agent: {} ISL veth pairs and {} crossing VXLAN ends created, {} kept",
            made.pairs, made.vxlan, made.kept
        )?;
    } else {
        writeln!(err, "emulate agent: {} ISL veth pairs created, {} kept", made.pairs, made.kept)?;
    }
    if !a.switch && a.once {
        return Ok(ExitCode::SUCCESS);
    }
    // The pairs stay when the agent stops: pods hold their ends.
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let started = std::time::Instant::now();
        let mut t = a.at;
        loop {
            if a.switch {
                // Pods come and go: look again every round (known ones keep their sockets).
                pods.refresh(&a.netns_dir, &a.netns_prefix, &addr, sats).await;
                let r = pods.apply_at(&topo, t).await?;
                writeln!(
                    err,
                    "emulate agent: t={t:.0} s: {} pods, {} ISLs up, {} down; {} ends switched, {} not ready",
                    pods.count(),
                    r.up,
                    r.down,
                    r.changed,
                    r.unsettled
                )?;
                if let Some(file) = &a.metrics {
                    let c = metal6_emunet::check::links(&pods.views(), &topo, t).await;
                    let me = metal6_emunet::check::process(std::process::id()).unwrap_or_default();
                    let text = metal6_emunet::check::prometheus(&c, r.unsettled, &me, &metal6_emunet::check::kernel());
                    let tmp = file.with_extension("prom.tmp");
                    std::fs::write(&tmp, text)
                        .and_then(|()| std::fs::rename(&tmp, file))
                        .with_context(|| format!("writing {}", file.display()))?;
                }
            }
            if a.once {
                return Ok(());
            }
            t += a.step;
            let due = std::time::Duration::from_secs_f64(((t - a.at) / a.speed.max(1e-6)).max(0.0));
            tokio::select! {
                _ = term.recv() => return Ok(()),
                r = tokio::signal::ctrl_c() => return r.map_err(anyhow::Error::from),
                () = tokio::time::sleep(due.saturating_sub(started.elapsed())) => {}
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The constellation at `t` into `file`, whole (written aside, then renamed): a reader never
/// sees half a picture. A picture that cannot be written is said, not fatal: the emulation
/// goes on.
fn draw_now(file: Option<&std::path::Path>, topo: &Topology, t: f64) -> Result<()> {
    let Some(file) = file else { return Ok(()) };
    let tmp = file.with_extension("svg.tmp");
    let r = std::fs::write(&tmp, metal6_emulation::draw::svg(topo, t)).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = r {
        writeln!(std::io::stderr(), "emulate: cannot write the picture {}: {e}", file.display())?;
    }
    Ok(())
}

fn partition(topo: &Topology, nodes: &[String]) -> Result<Option<Partition>> {
    if nodes.is_empty() {
        return Ok(None);
    }
    Partition::new(topo, nodes.to_vec()).map(Some).map_err(|e| anyhow::anyhow!("--nodes: {e}"))
}

fn write_partition(out: &mut impl Write, p: &PartitionPlan, until: f64) -> Result<()> {
    let rows: Vec<Vec<String>> = p
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker.clone(),
                format!("{}–{}", w.planes.start, w.planes.end.saturating_sub(1)),
                w.satellites.to_string(),
                w.local_links.to_string(),
            ]
        })
        .collect();
    output::write_table(out, &["WORKER", "PLANES", "SATELLITES", "LOCAL ISLS"], &rows)?;
    writeln!(out, "{} ISLs local, {} crossing (VXLAN):", p.local_links, p.crossing_links)?;
    for (a, b, n) in &p.per_border {
        writeln!(out, "  {a} ↔ {b}: {n}")?;
    }
    writeln!(
        out,
        "most crossing ISLs up at once until t = {until} s: {} (at t = {} s)",
        p.worst_crossing_up, p.worst_at
    )?;
    Ok(())
}

fn run_netns(a: &RunArgs, format: Format) -> Result<ExitCode> {
    let (topo, addr) = topology(&a.shell)?;
    let part = partition(&topo, &a.nodes)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let mut err = std::io::stderr();
        if let Some(p) = &part {
            write_partition(&mut err, &p.plan(&topo, a.at, a.at + a.duration, a.step.max(1.0)), a.at + a.duration)?;
        }
        let mem0 = mem_available_kib();
        let t0 = std::time::Instant::now();
        let mut emu = metal6_emunet::Emulation::create_on(&topo, &addr, a.at, part.as_ref()).await?;
        let create_s = t0.elapsed().as_secs_f64();
        let mem_mib = mem0.saturating_sub(mem_available_kib()) / 1024;
        writeln!(
            err,
            "emulate: {} satellites, {} interfaces in {create_s:.2} s ({:?}); {mem_mib} MiB",
            topo.shell.count(),
            emu.timings.interfaces,
            emu.timings
        )?;
        let netem = metal6_emunet::netem_available();
        writeln!(
            err,
            "emulate: netem {}",
            if netem { "available (delays applied)" } else { "not in this kernel: links run without delay" }
        )?;
        let mut delay_update_s = None;
        if netem {
            let t = std::time::Instant::now();
            let n = emu.set_delays(&topo, a.at).await?;
            delay_update_s = Some(t.elapsed().as_secs_f64());
            writeln!(err, "emulate: delays of {n} ISLs set with netem in {:.3} s", t.elapsed().as_secs_f64())?;
        }
        let frr = if a.frr {
            std::fs::create_dir_all(&a.workdir)?;
            Some(metal6_emunet::frr::start(&emu, &topo, &addr, &a.workdir.canonicalize()?)?)
        } else {
            None
        };
        let t1 = std::time::Instant::now();
        let n = emu.set_all(&topo, false).await?;
        emu.set_all(&topo, true).await?;
        let update_s = t1.elapsed().as_secs_f64() / 2.0;
        writeln!(err, "emulate: one full link-state update ({n} ISLs, {} interface ends) in {update_s:.3} s", 2 * n)?;
        // With emulated workers: each worker's share alone, as its agent would switch it while
        // the others switch theirs (here one after the other, on the one kernel).
        let mut per_worker = vec![];
        for w in 0..part.as_ref().map_or(0, |p| p.workers.len()) {
            let t = std::time::Instant::now();
            let ends = emu.set_all_worker(&topo, false, w).await?;
            emu.set_all_worker(&topo, true, w).await?;
            let s = t.elapsed().as_secs_f64() / 2.0;
            writeln!(err, "emulate: worker {}: its {ends} ISL ends in {s:.3} s", a.nodes[w])?;
            per_worker.push(s);
        }
        let update_worker_s =
            per_worker.iter().copied().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        // The measured round left every ISL up: back to the model at the start, for a run that
        // goes on (a build-and-report run tears down next).
        if a.duration > 0.0 {
            emu.set_to(&topo, a.at).await?;
        }
        // While it runs, `emulate check --workdir` finds it through its state file.
        let mut state = None;
        if a.duration > 0.0 {
            std::fs::create_dir_all(&a.workdir)?;
            let wd = a.workdir.canonicalize()?;
            let routers: std::collections::BTreeSet<u32> =
                if a.frr { (0..topo.shell.count()).collect() } else { Default::default() };
            let mut st = metal6_emunet::soak::RunState::new(&emu, a.at, &routers, a.frr.then_some(wd.as_path()));
            st.settled(&wd, a.at)?;
            state = Some((st, wd));
        }
        let mut t = a.at;
        let mut applied = 0usize;
        let wall = std::time::Instant::now();
        draw_now(a.draw.as_deref(), &topo, t)?;
        while t < a.at + a.duration {
            let next = (t + a.step).min(a.at + a.duration);
            let ev: Vec<_> = topo.events(t, next, a.step).into_iter().filter(|e| e.t > t).collect();
            if let Some((st, wd)) = state.as_mut() {
                metal6_emunet::soak::RunState::wait_for_readers(wd).await;
                st.switching(wd)?;
            }
            applied += emu.apply(&ev).await?;
            if netem {
                emu.set_delays(&topo, next).await?;
            }
            t = next;
            if let Some((st, wd)) = state.as_mut() {
                st.settled(wd, t)?;
            }
            draw_now(a.draw.as_deref(), &topo, t)?;
            let due = std::time::Duration::from_secs_f64((t - a.at) / a.speed.max(1e-3));
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep(due.saturating_sub(wall.elapsed())) => {}
            }
        }
        if let Some((_, wd)) = &state {
            metal6_emunet::soak::RunState::remove(wd);
        }
        drop(frr);
        let crossing = emu.timings.crossing;
        let t2 = std::time::Instant::now();
        drop(emu);
        let teardown_s = t2.elapsed().as_secs_f64();
        let report = serde_json::json!({"satellites": topo.shell.count(), "create_s": create_s, "update_s": update_s,
            "teardown_s": teardown_s, "memory_mib": mem_mib, "netem": netem, "delay_update_s": delay_update_s,
            "events_applied": applied, "workers": a.nodes.len().max(1), "crossing": crossing,
            "update_per_worker_s": update_worker_s,
            "per_border": part.as_ref().map(|p| p.plan(&topo, a.at, a.at, 1.0).per_border)});
        let mut out = std::io::stdout().lock();
        match format {
            Format::Table => writeln!(
                out,
                "create {create_s:.2} s, update {update_s:.3} s, teardown {teardown_s:.2} s, {mem_mib} MiB"
            )?,
            f => output::write_data(&mut out, f, &report)?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn parse_block(s: &str) -> Result<(u32, u32)> {
    let (p, q) = s.split_once('x').context("--routers: PLANESxSLOTS, e.g. 8x8 (0x0: none)")?;
    Ok((p.parse().context("--routers planes")?, q.parse().context("--routers slots")?))
}

fn soak(a: &SoakArgs, format: Format) -> Result<ExitCode> {
    let (topo, addr) = topology(&a.shell)?;
    if a.speed <= 0.0 || a.step <= 0.0 || a.duration <= 0.0 || a.check_every <= 0.0 {
        bail!("--speed, --step, --duration and --check-every must be above 0");
    }
    let (planes, slots) = parse_block(&a.routers)?;
    let routers = metal6_emulation::expect::sample(&topo, planes, slots);
    if !routers.is_empty() {
        for d in [metal6_emunet::frr::ZEBRA, metal6_emunet::frr::ISISD, "/usr/bin/vtysh"] {
            if !std::path::Path::new(d).exists() {
                bail!("{d} is missing: the routers need Debian's frr (`make deps` installs it), or --routers 0x0");
            }
        }
    }
    let cfg = metal6_emunet::soak::SoakConfig {
        at: a.at,
        duration: a.duration,
        speed: a.speed,
        step: a.step,
        routers,
        check_every: a.check_every,
        settle: std::time::Duration::from_secs_f64(a.settle.max(1.0)),
        warmup: a.warmup.unwrap_or((a.duration / 10.0).min(300.0)),
        max_rss_growth_mib: a.max_rss_growth_mib,
        max_frr_growth_mib: a.max_frr_growth_mib,
        max_slab_growth_mib: a.max_slab_growth_mib,
        max_fd_growth: a.max_fd_growth,
        workdir: a.workdir.clone(),
        kernel_before: metal6_emunet::check::kernel(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(async {
        let mut err = std::io::stderr();
        let mem0 = mem_available_kib();
        let t0 = std::time::Instant::now();
        let mut emu = metal6_emunet::Emulation::create(&topo, &addr, a.at).await?;
        let create_s = t0.elapsed().as_secs_f64();
        let per_sat = mem0.saturating_sub(mem_available_kib()) as f64 / f64::from(topo.shell.count().max(1));
        writeln!(
            err,
            "soak: {} satellites in {create_s:.1} s ({per_sat:.0} KiB each); {} routers; {:.0} s at {}× real time",
            topo.shell.count(),
            cfg.routers.len(),
            a.duration,
            a.speed
        )?;
        let r = metal6_emunet::soak::run(&mut emu, &topo, &addr, &cfg, create_s, per_sat, |line| {
            let _ = writeln!(std::io::stderr(), "{line}");
        })
        .await;
        drop(emu);
        r
    })?;
    if let Some(f) = &a.report {
        std::fs::write(f, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", f.display()))?;
    }
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => out.write_all(report.text().as_bytes())?,
        f => output::write_data(&mut out, f, &report)?,
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The model a run was started with: its own command line parsed again (paths as it saw them).
fn run_topology(state: &metal6_emunet::soak::RunState) -> Result<(Topology, Addressing)> {
    use clap::Parser;
    let cli = crate::Cli::try_parse_from(&state.argv).context("parsing the run's command line")?;
    let crate::Command::Emulate(cmd) = cli.command else { bail!("the run state is not an emulation's") };
    let mut shell = match cmd {
        EmulateCmd::Run(a) => a.shell,
        EmulateCmd::Soak(a) => a.shell,
        _ => bail!("the run state is not an emulation's"),
    };
    shell.tle = shell.tle.map(|p| state.cwd.join(p));
    topology(&shell)
}

fn check(a: &CheckArgs, format: Format) -> Result<ExitCode> {
    let state = metal6_emunet::soak::RunState::read(&a.workdir)?;
    let (topo, addr) = run_topology(&state)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let c = rt.block_on(metal6_emunet::soak::check_running(&a.workdir, &topo, &addr))?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            let l = &c.links;
            writeln!(
                out,
                "t = {:.0} s: {} ISL ends ({} up), {} ground links: {} mismatches",
                c.t, l.ends, l.ends_up, l.ground, l.mismatches
            )?;
            for e in &l.examples {
                writeln!(out, "  {e}")?;
            }
            if let Some(r) = &c.routing {
                writeln!(
                    out,
                    "routers {}: adjacencies {}/{}, routes {}/{}{}",
                    r.routers,
                    r.adjacencies,
                    r.adjacencies_expected,
                    r.routes,
                    r.routes_expected,
                    if r.converged() {
                        String::new()
                    } else if c.routing_moved {
                        " (links switched while looking)".to_owned()
                    } else {
                        format!(" ({} routers not yet as the model)", r.wrong)
                    }
                )?;
            }
            writeln!(
                out,
                "metal6 (pid {}): {} MiB RSS, {} descriptors; FRR: {} MiB PSS, {} descriptors; kernel slab {} MiB; \
                 IPv6 neighbours {} (most in one namespace {}; gc_thresh3 {}); netlink errors {}",
                c.pid,
                c.metal6.rss_kib / 1024,
                c.metal6.fds,
                c.frr.pss_kib / 1024,
                c.frr.fds,
                c.kernel.slab_kib / 1024,
                l.neighbours,
                l.neighbours_max,
                c.kernel.neigh_gc_thresh3,
                l.netlink_errors
            )?;
        }
        f => output::write_data(&mut out, f, &c)?,
    }
    Ok(if c.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn run(cmd: &EmulateCmd, format: Format) -> Result<ExitCode> {
    match cmd {
        EmulateCmd::Soak(a) => return soak(a, format),
        EmulateCmd::Check(a) => return check(a, format),
        EmulateCmd::Run(a) if a.backend == Backend::K8s => return run_k8s(a, format),
        EmulateCmd::Run(a) => return run_netns(a, format),
        EmulateCmd::Agent(a) => return agent(a),
        EmulateCmd::Tle(a) => {
            if a.shell.tle.is_some() {
                bail!("emulate tle writes a Walker shell's TLEs: --tle is its output, not an input");
            }
            let (topo, _) = topology(&a.shell)?;
            if topo.shell.count() > 99_999 || a.first_norad + u64::from(topo.shell.count()) > 100_000 {
                bail!(
                    "TLE catalogue numbers have five digits: {} satellites from {} do not fit",
                    topo.shell.count(),
                    a.first_norad
                );
            }
            let text = metal6_emulation::tle::walker_tles(&topo.shell, &a.epoch, a.first_norad);
            match &a.file {
                Some(f) => {
                    std::fs::write(f, text).with_context(|| format!("writing {}", f.display()))?;
                    writeln!(std::io::stdout(), "{}", f.display())?;
                }
                None => std::io::stdout().write_all(text.as_bytes())?,
            }
        }
        EmulateCmd::Draw(a) => {
            let (topo, _) = topology(&a.shell)?;
            std::fs::write(&a.file, metal6_emulation::draw::svg(&topo, a.at))
                .with_context(|| format!("writing {}", a.file.display()))?;
            writeln!(std::io::stdout(), "{}", a.file.display())?;
        }
        EmulateCmd::Plan(a) => {
            let (topo, addr) = topology(&a.shell)?;
            let links: Vec<LinkOut> = topo
                .links_at(a.at)
                .into_iter()
                .map(|l| {
                    let (an, aa) = end_name(&topo, &addr, l.a);
                    let (bn, ba) = end_name(&topo, &addr, l.b);
                    LinkOut {
                        kind: l.kind,
                        a: an,
                        b: bn,
                        a_addr: aa,
                        b_addr: ba,
                        distance_km: l.distance_km,
                        delay_ms: l.delay_ms,
                    }
                })
                .collect();
            let events = a.until.map(|u| topo.events(a.at, u, a.step)).unwrap_or_default();
            let until = a.until.unwrap_or(a.at);
            let part = partition(&topo, &a.nodes)?.map(|p| p.plan(&topo, a.at, until, a.step));
            let mut out = std::io::stdout().lock();
            match format {
                Format::Table => {
                    if let Some(c) = &topo.tle {
                        let sh = &c.shell;
                        writeln!(
                            out,
                            "from TLEs: {}x{} Walker {} with phasing {}, {:.0} km, {:.1}°; t = 0 at {} UTC",
                            sh.planes,
                            sh.per_plane,
                            if sh.kind == ShellKind::Star { "star" } else { "delta" },
                            sh.phasing,
                            sh.altitude_km,
                            sh.inclination_deg,
                            c.start
                        )?;
                    }
                    writeln!(out, "{} satellites, {} links up at t = {} s", topo.shell.count(), links.len(), a.at)?;
                    let rows: Vec<Vec<String>> = links
                        .iter()
                        .take(40)
                        .map(|l| vec![format!("{:?}", l.kind), l.a.clone(), l.b.clone(), format!("{:.2}", l.delay_ms)])
                        .collect();
                    output::write_table(&mut out, &["KIND", "FROM", "TO", "DELAY MS"], &rows)?;
                    if links.len() > 40 {
                        writeln!(out, "… {} more (-o json for all)", links.len() - 40)?;
                    }
                    if a.until.is_some() {
                        let ups = events.iter().filter(|e| e.up).count();
                        writeln!(out, "{} link events ({} up, {} down)", events.len(), ups, events.len() - ups)?;
                    }
                    if let Some(p) = &part {
                        write_partition(&mut out, p, until)?;
                    }
                }
                f => output::write_data(
                    &mut out,
                    f,
                    &serde_json::json!({"links": links, "events": events, "partition": part}),
                )?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
