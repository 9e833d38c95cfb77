//! The soak: a constellation left running with its model time advanced faster than real time,
//! so links switch continuously, and checked the whole time. Every step compares the kernel's
//! link states with the model ([`check::links`]); every `check_every` seconds it samples what
//! could grow (metal6's and FRR's memory and descriptors, the kernel's slab, neighbour
//! entries) and waits for IS-IS on the routers to agree with the model
//! ([`check::routing_settled`]). It fails on any mismatch, on routing that does not settle,
//! on a netlink error, on a router that dies, and on growth past a stated bound after the
//! warm-up; its summary gives each resource's drift per hour and what would run out first
//! at 4,000 satellites.
//!
//! The running emulation also keeps [`RunState`] in its work directory, so that
//! `metal6 emulate check` can look at it from outside.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use metal6_emulation::{Addressing, Topology};
use serde::{Deserialize, Serialize};

use crate::check::{self, KernelUse, LinkCheck, ProcUse, RoutingCheck};
use crate::{Emulation, frr};

pub const STATE_FORMAT: &str = "metal6-emulation/1";

/// What a running emulation publishes in `WORKDIR/emulation.json` (rewritten whole, atomically)
/// for `metal6 emulate check`. `seq` is odd while links are being switched and even once the
/// kernel is as the model at `t`: a reader that sees the same even `seq` before and after its
/// look compared a settled kernel with the right instant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub format: String,
    pub pid: u32,
    /// The command line that started it and its working directory: the model is rebuilt
    /// from them, so a check cannot disagree with the run about the constellation.
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Satellite `i`'s namespace is `{namespace_prefix}{i}` under /run/netns.
    pub namespace_prefix: String,
    pub satellites: u32,
    pub t: f64,
    pub seq: u64,
    /// Satellites running FRR, and where their sockets are.
    pub routers: Vec<u32>,
    pub frr_dir: Option<PathBuf>,
}

impl RunState {
    pub fn new(emu: &Emulation, t: f64, routers: &BTreeSet<u32>, frr_dir: Option<&Path>) -> RunState {
        let first = emu.sats.first().map(|n| n.name.as_str()).unwrap_or_default();
        RunState {
            format: STATE_FORMAT.into(),
            pid: std::process::id(),
            argv: std::env::args().collect(),
            cwd: std::env::current_dir().unwrap_or_default(),
            namespace_prefix: first.strip_suffix('0').unwrap_or(first).to_owned(),
            satellites: u32::try_from(emu.sats.len()).unwrap_or(u32::MAX),
            t,
            seq: 0,
            routers: routers.iter().copied().collect(),
            frr_dir: frr_dir.map(Path::to_path_buf),
        }
    }

    pub fn path(workdir: &Path) -> PathBuf {
        workdir.join("emulation.json")
    }

    /// Writes it aside and renames it over the old one: a reader sees one or the other.
    pub fn write(&self, workdir: &Path) -> Result<()> {
        let p = Self::path(workdir);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))
    }

    pub fn read(workdir: &Path) -> Result<RunState> {
        let p = Self::path(workdir);
        let text =
            std::fs::read(&p).with_context(|| format!("reading {} (is an emulation running there?)", p.display()))?;
        let s: RunState = serde_json::from_slice(&text).with_context(|| format!("{}: not a run state", p.display()))?;
        anyhow::ensure!(
            s.format == STATE_FORMAT,
            "{}: format {}, this metal6 reads {STATE_FORMAT}",
            p.display(),
            s.format
        );
        Ok(s)
    }

    /// Marks links being switched (odd `seq`), then settled at `t` (even).
    pub fn switching(&mut self, workdir: &Path) -> Result<()> {
        self.seq |= 1;
        self.write(workdir)
    }

    pub fn settled(&mut self, workdir: &Path, t: f64) -> Result<()> {
        self.seq = (self.seq | 1) + 1;
        self.t = t;
        self.write(workdir)
    }

    /// The run is over: its state and hold files go.
    pub fn remove(workdir: &Path) {
        let _ = std::fs::remove_file(Self::path(workdir));
        let _ = std::fs::remove_file(Self::hold_path(workdir));
    }

    fn hold_path(workdir: &Path) -> PathBuf {
        workdir.join("check.hold")
    }

    /// The run side: before switching, waits while a reader (`emulate check`) holds the
    /// emulation still (an exclusive `flock` on `check.hold`, which the kernel drops when the
    /// reader exits, however it exits) — at most 60 s. Returns how long it waited (the soak
    /// moves its schedule by it).
    pub async fn wait_for_readers(workdir: &Path) -> Duration {
        let start = Instant::now();
        let Ok(mut file) = std::fs::File::open(Self::hold_path(workdir)) else { return start.elapsed() };
        while start.elapsed() < Duration::from_secs(60) {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                // Nobody holds it: let go at once and switch.
                Ok(_unlocked_on_drop) => break,
                Err((f, _)) => file = f,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }
}

/// A reader's hold on a running emulation: while it is held the run does not switch links
/// (it finishes the step it is in). An exclusive `flock` on `WORKDIR/check.hold`, released on
/// drop or when the process ends; two readers take turns.
#[derive(Debug)]
pub struct Hold(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl Hold {
    pub async fn take(workdir: &Path) -> Result<Hold> {
        let p = RunState::hold_path(workdir);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        let start = Instant::now();
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => return Ok(Hold(l)),
                Err((f, _)) if start.elapsed() < Duration::from_secs(60) => file = f,
                Err((_, e)) => anyhow::bail!("{} stayed locked for 60 s (another check?): {e}", p.display()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `metal6 emulate check`: a running emulation looked at from outside.
#[derive(Debug, Clone, Serialize)]
pub struct RunningCheck {
    pub pid: u32,
    pub satellites: u32,
    /// The model instant the links were compared with (the run's settled `t`).
    pub t: f64,
    pub links: LinkCheck,
    /// Routers against the model, where there are any. Informational: the run keeps
    /// switching while vtysh is asked, so a router may be seconds behind; `routing_moved`
    /// says the run switched links while routing was being looked at.
    pub routing: Option<RoutingCheck>,
    pub routing_moved: bool,
    pub metal6: ProcUse,
    pub frr: ProcUse,
    pub kernel: KernelUse,
}

impl RunningCheck {
    pub fn ok(&self) -> bool {
        self.links.mismatches == 0 && self.links.netlink_errors == 0
    }
}

/// Attaches to the run's namespaces and compares them with the model at the run's `t`, as
/// many times as it takes to see the same settled `seq` before and after (up to 20 tries).
pub async fn check_running(workdir: &Path, topo: &Topology, addr: &Addressing) -> Result<RunningCheck> {
    let first = RunState::read(workdir)?;
    anyhow::ensure!(
        Path::new(&format!("/proc/{}", first.pid)).exists(),
        "the emulation of {} (pid {}) is not running",
        RunState::path(workdir).display(),
        first.pid
    );
    anyhow::ensure!(
        first.satellites == topo.shell.count(),
        "the run has {} satellites, its command line makes {}",
        first.satellites,
        topo.shell.count()
    );
    let rt = tokio::runtime::Handle::current();
    let names: Vec<PathBuf> = (0..first.satellites)
        .map(|i| Path::new(crate::netns::NETNS_DIR).join(format!("{}{i}", first.namespace_prefix)))
        .collect();
    let handles = tokio::task::spawn_blocking(move || -> Result<Vec<rtnetlink::Handle>> {
        let _g = rt.enter();
        names.iter().map(|p| crate::netns::attach(p)).collect()
    })
    .await??;
    let views = check::views_of(handles);
    // Hold the run still (it finishes the step it is in), then wait for a settled state.
    let _hold = Hold::take(workdir).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut changed = 0;
    while Instant::now() < deadline && changed < 20 {
        let before = RunState::read(workdir)?;
        if before.seq % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let links = check::links(&views, topo, before.t).await;
        let after = RunState::read(workdir)?;
        if after.seq != before.seq {
            changed += 1;
            continue;
        }
        let routers: BTreeSet<u32> = before.routers.iter().copied().collect();
        let (routing, routing_moved) = match &before.frr_dir {
            Some(dir) if !routers.is_empty() => {
                let r = check::routing(&views, dir, topo, addr, &routers, before.t).await?;
                (Some(r), RunState::read(workdir)?.seq != before.seq)
            }
            _ => (None, false),
        };
        let frr_pids = before.frr_dir.as_deref().map(|d| check::frr_pids(d, &routers)).unwrap_or_default();
        return Ok(RunningCheck {
            pid: before.pid,
            satellites: before.satellites,
            t: before.t,
            links,
            routing,
            routing_moved,
            metal6: check::process(before.pid).unwrap_or_default(),
            frr: sum_procs(&frr_pids),
            kernel: check::kernel(),
        });
    }
    anyhow::bail!("the run did not hold still for a look within 60 s (is it stuck switching?)")
}

/// The soak's settings; the bounds are what the summary states and the verdict applies.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub at: f64,
    /// Wall-clock seconds to run.
    pub duration: f64,
    /// Model seconds per wall-clock second.
    pub speed: f64,
    /// Model seconds between link-state updates.
    pub step: f64,
    pub routers: BTreeSet<u32>,
    /// Wall-clock seconds between resource samples and routing checks.
    pub check_every: f64,
    /// How long IS-IS may take to agree with the model after the links changed.
    pub settle: Duration,
    /// Samples before this (wall-clock seconds) are not the baseline: daemons and caches
    /// still growing into their working size.
    pub warmup: f64,
    pub max_rss_growth_mib: f64,
    pub max_frr_growth_mib: f64,
    pub max_slab_growth_mib: f64,
    pub max_fd_growth: u64,
    pub workdir: PathBuf,
    /// The kernel before the constellation was built: the neighbour table's "full" counter
    /// is compared with this, so overflows while it was built count too.
    pub kernel_before: KernelUse,
}

/// One sample of what could grow.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Wall-clock seconds since the soak started switching.
    pub at_s: f64,
    pub t: f64,
    pub metal6: ProcUse,
    pub frr: ProcUse,
    /// FRR's CPU seconds so far (user + system, all daemons).
    pub frr_cpu_s: f64,
    pub kernel: KernelUse,
    pub neighbours: usize,
    pub routing_wrong: usize,
    pub routing_settle_s: f64,
}

/// A resource's course over the soak, after the warm-up.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    pub name: String,
    pub unit: String,
    pub baseline: f64,
    pub end: f64,
    pub min: f64,
    pub max: f64,
    /// Least-squares slope, per hour.
    pub drift_per_hour: f64,
    /// Largest allowed rise above the baseline; `None`: reported, not bounded.
    pub bound: Option<f64>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub satellites: u32,
    pub shell: String,
    pub isl_ends: usize,
    pub routers: usize,
    pub wall_s: f64,
    pub model_from: f64,
    pub model_to: f64,
    pub orbits: f64,
    pub speed: f64,
    pub steps: u64,
    pub isls_switched: usize,
    /// Steps that started later than their schedule, and the worst lag.
    pub steps_late: u64,
    pub max_lag_s: f64,
    pub link_checks: u64,
    pub link_mismatches: usize,
    pub mismatch_examples: Vec<String>,
    /// The most entries the kernel's IPv6 neighbour table held at any step.
    pub neighbours_max: usize,
    /// Neighbour allocations the kernel refused because the table was full, from before the
    /// constellation was built to the end.
    pub neighbour_table_fulls: u64,
    pub netlink_errors: usize,
    pub netlink_error_examples: Vec<String>,
    pub routing_checks: u64,
    pub routing_unsettled: u64,
    pub routing_examples: Vec<String>,
    pub routing_settle_max_s: f64,
    pub first_convergence_s: f64,
    pub adjacencies_end: usize,
    pub adjacencies_expected_end: usize,
    pub frr_dead: Option<String>,
    pub create_s: f64,
    /// MemAvailable taken by the namespaces and links (before the routers started), per satellite.
    pub kernel_kib_per_satellite: f64,
    pub frr_pss_kib_per_router: f64,
    /// Cores FRR used on average over the soak, per router.
    pub frr_cores_per_router: f64,
    pub trends: Vec<Trend>,
    pub samples: Vec<Sample>,
    pub at_4000: String,
    pub passed: bool,
    pub failures: Vec<String>,
}

fn frr_cpu_s(pids: &[u32]) -> f64 {
    // utime and stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (USER_HZ = 100 on Linux).
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    ticks as f64 / 100.0
}

fn sum_procs(pids: &[u32]) -> ProcUse {
    let mut t = ProcUse::default();
    for p in pids {
        if let Some(u) = check::process(*p) {
            t += u;
        }
    }
    t
}

fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx * 3600.0
}

fn trend(name: &str, unit: &str, samples: &[&Sample], f: impl Fn(&Sample) -> f64, bound: Option<f64>) -> Trend {
    let pts: Vec<(f64, f64)> = samples.iter().map(|s| (s.at_s, f(s))).collect();
    let baseline = pts.first().map_or(0.0, |p| p.1);
    let end = pts.last().map_or(0.0, |p| p.1);
    let min = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let ok = bound.is_none_or(|b| max - baseline <= b);
    Trend {
        name: name.into(),
        unit: unit.into(),
        baseline,
        end,
        min: if min.is_finite() { min } else { 0.0 },
        max: if max.is_finite() { max } else { 0.0 },
        drift_per_hour: slope_per_hour(&pts),
        bound,
        ok,
    }
}

/// Runs the soak on a constellation already built (`emu`, links as the model at `cfg.at`),
/// starting the routers itself. Returns the report; `passed` says the verdict.
pub async fn run(
    emu: &mut Emulation,
    topo: &Topology,
    addr: &Addressing,
    cfg: &SoakConfig,
    create_s: f64,
    kernel_kib_per_satellite: f64,
    mut progress: impl FnMut(&str),
) -> Result<SoakReport> {
    std::fs::create_dir_all(&cfg.workdir).with_context(|| format!("creating {}", cfg.workdir.display()))?;
    let workdir = cfg.workdir.canonicalize()?;
    let frr_dir = workdir.join("frr");
    let mut routers_frr = if cfg.routers.is_empty() {
        None
    } else {
        std::fs::create_dir_all(&frr_dir)?;
        // Starting waits for each zebra's socket: off the async workers.
        Some(tokio::task::block_in_place(|| frr::start_on(emu, topo, &frr_dir, &cfg.routers))?)
    };
    let frr_pids = routers_frr.as_ref().map(frr::Frr::pids).unwrap_or_default();
    let mut state = RunState::new(emu, cfg.at, &cfg.routers, routers_frr.as_ref().map(|_| frr_dir.as_path()));
    state.settled(&workdir, cfg.at)?;
    let views = emu.views();
    let mut failures = vec![];
    let mut report = SoakReport {
        satellites: topo.shell.count(),
        shell: format!(
            "{}x{} at {} km, {}°",
            topo.shell.planes, topo.shell.per_plane, topo.shell.altitude_km, topo.shell.inclination_deg
        ),
        isl_ends: 2 * topo.grid().len(),
        routers: cfg.routers.len(),
        wall_s: 0.0,
        model_from: cfg.at,
        model_to: cfg.at,
        orbits: 0.0,
        speed: cfg.speed,
        steps: 0,
        isls_switched: 0,
        steps_late: 0,
        max_lag_s: 0.0,
        link_checks: 0,
        link_mismatches: 0,
        mismatch_examples: vec![],
        neighbours_max: 0,
        neighbour_table_fulls: 0,
        netlink_errors: 0,
        netlink_error_examples: vec![],
        routing_checks: 0,
        routing_unsettled: 0,
        routing_examples: vec![],
        routing_settle_max_s: 0.0,
        first_convergence_s: 0.0,
        adjacencies_end: 0,
        adjacencies_expected_end: 0,
        frr_dead: None,
        create_s,
        kernel_kib_per_satellite,
        frr_pss_kib_per_router: 0.0,
        frr_cores_per_router: 0.0,
        trends: vec![],
        samples: vec![],
        at_4000: String::new(),
        passed: false,
        failures: vec![],
    };
    // The routers' first convergence: every adjacency and route of the model at the start.
    let mut last_routing = RoutingCheck::default();
    if routers_frr.is_some() {
        let first = Duration::from_secs(120).max(cfg.settle);
        let (r, s) = check::routing_settled(&views, &frr_dir, topo, addr, &cfg.routers, cfg.at, first).await?;
        report.first_convergence_s = s;
        progress(&format!(
            "soak: {} routers: {}/{} adjacencies, {}/{} routes after {s:.1} s",
            r.routers, r.adjacencies, r.adjacencies_expected, r.routes, r.routes_expected
        ));
        if !r.converged() {
            failures.push(format!("IS-IS did not converge in {s:.0} s at the start: {}", r.examples.join("; ")));
        }
        last_routing = r;
    }
    let start = Instant::now();
    let cpu0 = frr_cpu_s(&frr_pids);
    let mut t = cfg.at;
    let mut next_sample = 0.0;
    // Time spent waiting for routing to settle: the schedule moves by it (the model stands
    // still while the routers catch up), so a check never makes the steps after it late.
    let mut paused = 0.0;
    // Neighbour entries in the satellites' namespaces as of the last link check (every step
    // has one at its instant; this is the one at the start): a sample reuses it.
    let mut neighbours = check::links(&views, topo, t).await.neighbours;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= next_sample || elapsed >= cfg.duration {
            let began = Instant::now();
            // A sample: what could grow, and routing given time to settle on the model at t.
            let mut s = Sample {
                at_s: elapsed,
                t,
                metal6: check::process(std::process::id()).unwrap_or_default(),
                frr: sum_procs(&frr_pids),
                frr_cpu_s: frr_cpu_s(&frr_pids) - cpu0,
                kernel: check::kernel(),
                ..Sample::default()
            };
            if let Some(r) = routers_frr.as_mut()
                && let Some(d) = r.dead()
            {
                report.frr_dead = Some(d.clone());
                failures.push(d);
                break;
            }
            if routers_frr.is_some() {
                let (r, secs) =
                    check::routing_settled(&views, &frr_dir, topo, addr, &cfg.routers, t, cfg.settle).await?;
                report.routing_checks += 1;
                report.routing_settle_max_s = report.routing_settle_max_s.max(secs);
                s.routing_wrong = r.wrong;
                s.routing_settle_s = secs;
                if !r.converged() {
                    report.routing_unsettled += 1;
                    for e in &r.examples {
                        if report.routing_examples.len() < 10 {
                            report.routing_examples.push(format!("t={t:.0}: {e}"));
                        }
                    }
                }
                last_routing = r;
            }
            s.neighbours = neighbours;
            report.samples.push(s);
            progress(&format!(
                "soak: {:>5.0} s, t={t:.0}: {} ISLs switched, {} mismatches, routing {}, metal6 {} MiB / {} fds, FRR {} MiB PSS, slab {} MiB",
                elapsed,
                report.isls_switched,
                report.link_mismatches,
                if last_routing.converged() {
                    "settled".to_owned()
                } else {
                    format!("{} routers off", last_routing.wrong)
                },
                s.metal6.rss_kib / 1024,
                s.metal6.fds,
                s.frr.pss_kib / 1024,
                s.kernel.slab_kib / 1024
            ));
            next_sample = (elapsed / cfg.check_every).floor() * cfg.check_every + cfg.check_every;
            paused += began.elapsed().as_secs_f64();
            if elapsed >= cfg.duration {
                break;
            }
        }
        // One step: the events between t and t + step, then the kernel against the model.
        let next = t + cfg.step;
        let ev: Vec<_> = topo.events(t, next, cfg.step).into_iter().filter(|e| e.t > t).collect();
        paused += RunState::wait_for_readers(&workdir).await.as_secs_f64();
        state.switching(&workdir)?;
        match emu.apply(&ev).await {
            Ok(n) => report.isls_switched += n,
            Err(e) => {
                report.netlink_errors += 1;
                if report.netlink_error_examples.len() < 10 {
                    report.netlink_error_examples.push(format!("t={next:.0}: {e:#}"));
                }
                // Whatever failed, the next steps start again from the model.
                if let Err(e) = emu.set_to(topo, next).await {
                    report.netlink_errors += 1;
                    if report.netlink_error_examples.len() < 10 {
                        report.netlink_error_examples.push(format!("t={next:.0}: putting the links back: {e:#}"));
                    }
                }
            }
        }
        t = next;
        state.settled(&workdir, t)?;
        report.steps += 1;
        let lc: LinkCheck = check::links(&views, topo, t).await;
        report.link_checks += 1;
        report.link_mismatches += lc.mismatches;
        report.netlink_errors += lc.netlink_errors;
        neighbours = lc.neighbours;
        // The neighbour table is the kernel's, at every step: it fills in bursts as links come up.
        report.neighbours_max = report.neighbours_max.max(check::kernel().neigh_entries as usize);
        for e in lc.examples {
            if report.mismatch_examples.len() < 10 {
                report.mismatch_examples.push(format!("t={t:.0}: {e}"));
            }
        }
        // Keep to the schedule: model time `t` is due at (t - at) / speed wall seconds.
        let due = (t - cfg.at) / cfg.speed.max(1e-6) + paused;
        let now = start.elapsed().as_secs_f64();
        if now > due + cfg.step / cfg.speed.max(1e-6) {
            report.steps_late += 1;
        }
        report.max_lag_s = report.max_lag_s.max(now - due);
        let wait = Duration::from_secs_f64((due - now).max(0.0).min(cfg.duration - now).max(0.0));
        tokio::select! {
            r = &mut ctrl_c => {
                r?;
                failures.push("interrupted".into());
                break;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
    report.wall_s = start.elapsed().as_secs_f64();
    report.model_to = t;
    report.orbits = (t - cfg.at) / topo.shell.period_s();
    report.adjacencies_end = last_routing.adjacencies;
    report.adjacencies_expected_end = last_routing.adjacencies_expected;
    let cpu = frr_cpu_s(&frr_pids) - cpu0;
    if !cfg.routers.is_empty() {
        let n = cfg.routers.len() as f64;
        report.frr_cores_per_router = cpu / report.wall_s.max(1e-6) / n;
        report.frr_pss_kib_per_router = report.samples.last().map_or(0.0, |s| s.frr.pss_kib as f64) / n;
    }
    drop(routers_frr.take());
    RunState::remove(&workdir);

    let after: Vec<&Sample> = report.samples.iter().filter(|s| s.at_s >= cfg.warmup).collect();
    let after = if after.len() >= 2 { after } else { report.samples.iter().collect() };
    let mib = |k: u64| k as f64 / 1024.0;
    report.trends = vec![
        trend("metal6 RSS", "MiB", &after, |s| mib(s.metal6.rss_kib), Some(cfg.max_rss_growth_mib)),
        trend("metal6 descriptors", "", &after, |s| s.metal6.fds as f64, Some(cfg.max_fd_growth as f64)),
        trend("FRR PSS", "MiB", &after, |s| mib(s.frr.pss_kib), Some(cfg.max_frr_growth_mib)),
        trend("FRR RSS", "MiB", &after, |s| mib(s.frr.rss_kib), None),
        // A daemon holds a descriptor per vty client for a moment after the client left (the
        // routing checks are vtysh clients): one a router of slack.
        trend(
            "FRR descriptors",
            "",
            &after,
            |s| s.frr.fds as f64,
            Some((cfg.max_fd_growth + cfg.routers.len() as u64) as f64),
        ),
        trend("kernel slab", "MiB", &after, |s| mib(s.kernel.slab_kib), Some(cfg.max_slab_growth_mib)),
        trend("neighbour table", "entries", &after, |s| s.kernel.neigh_entries as f64, None),
        trend("neighbour forced GC", "runs", &after, |s| s.kernel.neigh_forced_gc as f64, None),
    ];
    let fulls = report
        .samples
        .last()
        .map_or(0, |s| s.kernel.neigh_table_fulls)
        .saturating_sub(cfg.kernel_before.neigh_table_fulls);
    report.neighbour_table_fulls = fulls;
    if fulls > 0 {
        failures.push(format!(
            "the IPv6 neighbour table was full {fulls} times since the constellation was built (\"neighbour table overflow\": raise gc_thresh3)"
        ));
    }
    for tr in report.trends.iter().filter(|t| !t.ok) {
        failures.push(format!(
            "{} grew {:.1} {} above its baseline (bound {:.1})",
            tr.name,
            tr.max - tr.baseline,
            tr.unit,
            tr.bound.unwrap_or(0.0)
        ));
    }
    // Above gc_thresh2 the kernel evicts entries on every allocation (forced GC) and at
    // gc_thresh3 refuses new ones: the table must stay below the first.
    let most = report.neighbours_max as u64;
    let thresh2 = report.samples.last().map_or(0, |s| s.kernel.neigh_gc_thresh2);
    if thresh2 > 0 && most > thresh2 {
        failures.push(format!(
            "the IPv6 neighbour table reached {most} entries, above gc_thresh2 ({thresh2}): the kernel evicts on every \
             allocation and refuses new entries at gc_thresh3 (the dense-pods profile raises both)"
        ));
    }
    if report.link_mismatches > 0 {
        failures.push(format!("{} link ends differed from the model", report.link_mismatches));
    }
    if report.routing_unsettled > 0 {
        failures.push(format!(
            "IS-IS disagreed with the model after {} s in {} of {} checks",
            cfg.settle.as_secs(),
            report.routing_unsettled,
            report.routing_checks
        ));
    }
    if report.netlink_errors > 0 {
        failures.push(format!("{} netlink errors", report.netlink_errors));
    }
    report.at_4000 = at_4000(&report);
    report.passed = failures.is_empty();
    report.failures = failures;
    Ok(report)
}

/// What would run out first with 4,000 satellites on this machine, from what the soak
/// measured: the kernel's memory for namespaces and links, metal6's descriptors (a netlink
/// socket per namespace), and FRR on every satellite (memory and CPU per router).
fn at_4000(r: &SoakReport) -> String {
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |l| l.0);
    let kernel = r.kernel_kib_per_satellite * 4000.0;
    let fds = r.samples.last().map_or(0.0, |s| s.metal6.fds as f64) / f64::from(r.satellites.max(1)) * 4000.0;
    let mut parts = vec![
        format!("namespaces and links ≈ {:.1} GiB of {:.1} GiB", kernel / 1048576.0, mem_total_kib / 1048576.0),
        format!("metal6 ≈ {fds:.0} descriptors (limit {nofile})"),
    ];
    // The neighbour table grows with the interfaces that come up (an MLD entry each).
    let neigh = r.neighbours_max as f64 / f64::from(r.satellites.max(1)) * 4000.0;
    let thresh2 = r.samples.last().map_or(0, |s| s.kernel.neigh_gc_thresh2) as f64;
    parts.push(format!("neighbour table ≈ {neigh:.0} entries (gc_thresh2 {thresh2:.0})"));
    let mut limit = ("kernel memory", kernel / mem_total_kib.max(1.0));
    if neigh / thresh2.max(1.0) > limit.1 {
        limit = ("the neighbour table (gc_thresh2)", neigh / thresh2.max(1.0));
    }
    if (fds / nofile.max(1) as f64) > limit.1 {
        limit = ("metal6's descriptor limit", fds / nofile.max(1) as f64);
    }
    if r.routers > 0 {
        let frr_mem = r.frr_pss_kib_per_router * 4000.0;
        let frr_cpu = r.frr_cores_per_router * 4000.0;
        parts.push(format!(
            "FRR on every satellite ≈ {:.1} GiB PSS and {frr_cpu:.1} of {cores:.0} cores at this switching rate",
            frr_mem / 1048576.0
        ));
        if (kernel + frr_mem) / mem_total_kib.max(1.0) > limit.1 {
            limit = ("memory with FRR on every satellite", (kernel + frr_mem) / mem_total_kib.max(1.0));
        }
        if frr_cpu / cores > limit.1 {
            limit = ("CPU for FRR on every satellite", frr_cpu / cores);
        }
    }
    format!("{}; first to run out: {} ({:.0} % of it)", parts.join("; "), limit.0, limit.1 * 100.0)
}

impl SoakReport {
    /// The one-page summary.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "soak {}: {} satellites ({} ISL ends), {} routers, {:.0} s wall, model {:.0} → {:.0} s ({:.0}× real time, {:.1} orbits)",
            if self.passed { "PASSED" } else { "FAILED" },
            self.satellites,
            self.isl_ends,
            self.routers,
            self.wall_s,
            self.model_from,
            self.model_to,
            self.speed,
            self.orbits
        );
        let _ = writeln!(o, "shell {}; created in {:.1} s", self.shell, self.create_s);
        let _ = writeln!(
            o,
            "steps {} ({} ISL switches; {} over a step behind schedule, worst lag {:.1} s); link checks {}: mismatches {}; netlink errors {}",
            self.steps,
            self.isls_switched,
            self.steps_late,
            self.max_lag_s,
            self.link_checks,
            self.link_mismatches,
            self.netlink_errors
        );
        if self.routers > 0 {
            let _ = writeln!(
                o,
                "IS-IS: converged in {:.1} s at the start; {} checks, {} unsettled, slowest settle {:.1} s; adjacencies at the end {}/{}",
                self.first_convergence_s,
                self.routing_checks,
                self.routing_unsettled,
                self.routing_settle_max_s,
                self.adjacencies_end,
                self.adjacencies_expected_end
            );
        }
        let _ = writeln!(
            o,
            "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}  ok",
            "after the warm-up", "baseline", "end", "min", "max", "drift/h", "bound"
        );
        for t in &self.trends {
            let name = if t.unit.is_empty() { t.name.clone() } else { format!("{} ({})", t.name, t.unit) };
            let bound = t.bound.map_or("-".to_owned(), |b| format!("+{b:.0}"));
            let _ = writeln!(
                o,
                "{name:<22} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>+10.2} {bound:>8}  {}",
                t.baseline,
                t.end,
                t.min,
                t.max,
                t.drift_per_hour,
                if t.ok { "yes" } else { "NO" }
            );
        }
        if let Some(k) = self.samples.last().map(|s| s.kernel) {
            let _ = writeln!(
                o,
                "IPv6 neighbour table: at most {} entries (gc_thresh2 {}, gc_thresh3 {}), full {} times",
                self.neighbours_max, k.neigh_gc_thresh2, k.neigh_gc_thresh3, self.neighbour_table_fulls
            );
        }
        let _ = writeln!(o, "at 4,000 satellites: {}", self.at_4000);
        for e in self.mismatch_examples.iter().chain(&self.routing_examples).chain(&self.netlink_error_examples) {
            let _ = writeln!(o, "  {e}");
        }
        for f in &self.failures {
            let _ = writeln!(o, "FAIL: {f}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn drift_is_the_least_squares_slope_per_hour() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i) * 360.0, 100.0 + f64::from(i))).collect();
        assert!((super::slope_per_hour(&pts) - 10.0).abs() < 1e-9, "1 per 360 s is 10 per hour");
        assert_eq!(super::slope_per_hour(&[(0.0, 5.0)]), 0.0);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), if i % 2 == 0 { 1.0 } else { 3.0 })).collect();
        assert!(super::slope_per_hour(&flat).abs() < 3600.0 * 0.25);
    }
}
