//! `metal6 plan` and `metal6 apply`: argument parsing, the saved-plan file, and drawing the
//! progress. Everything they decide lives in `metal6-orchestrator`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metal6_inventory::model::Inventory;
use metal6_orchestrator::machine::{Step, hms};
use metal6_orchestrator::plan::{PLAN_FORMAT, SavedPlan, sha256_hex};
use metal6_orchestrator::{Apply, NodePlan, Options, Policy, Row, SqliteStore, State, Store};

use crate::output::{Format, write_data, write_table};

/// What both commands need to observe nodes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Inventory file.
    #[arg(short, long)]
    inventory: PathBuf,
    /// Which nodes: `all`, names separated by commas, or `LABEL=VALUE`.
    #[arg(long, default_value = "all")]
    nodes: String,
    /// Where the orchestrator's database (`orchestrator.db`) is kept.
    #[arg(long, default_value = "/var/lib/metal6")]
    state_dir: PathBuf,
    /// `metal6 serve`'s URL; by default the inventory's boot server.
    #[arg(long)]
    server: Option<String>,
    #[command(flatten)]
    bmc: BmcAccess,
    /// Node records in this PostgreSQL database instead of `orchestrator.db`, so several
    /// apply workers (on one host or several) drive one fleet: each node is claimed by one.
    #[command(flatten)]
    state: crate::db_cmd::StateDbArgs,
    /// This worker's name in the node claims (keep it across restarts). Default: the host
    /// name and the state directory.
    #[arg(long, requires = "url", value_name = "NAME")]
    worker_name: Option<String>,
    /// A worker's claim on a node lapses this long after its last renewal (renewed every
    /// third of it while the worker runs); then another worker takes the node over.
    #[arg(long, requires = "url", default_value = "30s", value_name = "DURATION")]
    claim_lease: String,
}

/// How plan, apply and doctor reach the BMCs.
#[derive(Debug, Clone, clap::Args)]
pub struct BmcAccess {
    /// PEM file of the CA the BMCs' certificates must chain to (default: system roots).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify BMC certificates (logged for every BMC).
    #[arg(long)]
    pub insecure: bool,
    /// Call sessions at once per BMC (iDRACs fall over under parallel sessions).
    #[arg(long, default_value_t = 2)]
    pub per_bmc: usize,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    common: Common,
    /// Save the plan here; `metal6 apply FILE` applies exactly it, or refuses if nodes changed.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    common: Common,
    /// A plan saved by `metal6 plan --out`.
    plan: Option<PathBuf>,
    /// Nodes driven at once; the others queue.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// Installs at once per boot server (each pulls a whole image).
    #[arg(long, default_value_t = 32)]
    installs: usize,
    /// Resume a node parked in needs-attention (repeatable).
    #[arg(long, value_name = "NODE")]
    retry: Vec<String>,
    /// A step's hard timeout, e.g. `netboot=20m` (retries with backoff, then needs-attention).
    #[arg(long, value_name = "STEP=DURATION")]
    timeout: Vec<String>,
    /// A step's SLA, e.g. `install=30m` (a warning, not a failure).
    #[arg(long, value_name = "STEP=DURATION")]
    sla: Vec<String>,
    /// Attempts per step before needs-attention.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// First retry delay (doubles per attempt, ±50 % jitter, capped at 10 min), e.g. `30s`.
    #[arg(long, default_value = "30s")]
    backoff: String,
    /// How often a waiting node's evidence is read, e.g. `2s`.
    #[arg(long, default_value = "2s")]
    poll: String,
    /// Stop each node before this step (`firmware`, `bios` or `netboot`), resumable there: `--until
    /// netboot` applies the BIOS (and checks the BMC) without netbooting.
    #[arg(long, value_name = "STEP")]
    until: Option<String>,
    /// Start without `metal6 doctor`'s checks of this host and the nodes' BMCs (logged).
    #[arg(long)]
    skip_doctor: bool,
    /// The directory `metal6 serve --cluster-dir` serves. With an inventory `cluster`, apply
    /// renders the cluster files into it, the join files from the first control plane's CA
    /// hash, and drives every node on to `cluster-joined`.
    #[arg(long, value_name = "DIR")]
    cluster_dir: Option<PathBuf>,
}

/// `90`, `90s`, `20m`, `1h`, `500ms`.
fn duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().with_context(|| format!("{s:?} is not a duration like 90s, 20m or 1h"))?;
    let secs = |mul: u64| n.checked_mul(mul).map(Duration::from_secs).with_context(|| format!("{s:?} is too long"));
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => secs(60)?,
        "h" => secs(3600)?,
        _ => bail!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)"),
    })
}

fn step_durations(list: &[String], policy: &mut Policy, sla: bool) -> Result<()> {
    for item in list {
        let Some((step, d)) = item.split_once('=') else { bail!("{item:?}: expected STEP=DURATION, e.g. netboot=20m") };
        let Some(step) = Step::parse(step) else {
            let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
            bail!("{item:?}: unknown step {step:?} (steps: {})", names.join(", "))
        };
        let t = policy.timing_mut(step);
        if sla {
            t.sla = duration(d)?;
        } else {
            t.timeout = duration(d)?;
        }
    }
    Ok(())
}

/// The selected node names, in inventory order.
pub(crate) fn select(inv: &Inventory, sel: &str) -> Result<Vec<String>> {
    if sel == "all" {
        return Ok(inv.nodes.iter().map(|n| n.name.clone()).collect());
    }
    if let Some((k, v)) = sel.split_once('=') {
        let names: Vec<String> =
            inv.nodes.iter().filter(|n| n.labels.get(k).is_some_and(|x| x == v)).map(|n| n.name.clone()).collect();
        if names.is_empty() {
            bail!("no node has the label {k}={v}");
        }
        return Ok(names);
    }
    let mut out = vec![];
    for name in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if inv.node(name).is_none() {
            let known: Vec<&str> = inv.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!("no node {name:?} in the inventory (nodes: {})", known.join(", "));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("METAL6_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

struct Setup {
    inv_text: String,
    apply: Arc<Apply>,
    nodes: Vec<String>,
    _lock: Option<std::fs::File>,
}

fn setup(
    c: &Common,
    policy: Policy,
    (parallel, installs, poll): (usize, usize, Duration),
    until: Option<Step>,
    cluster_dir: Option<PathBuf>,
    lock: bool,
) -> Result<Setup> {
    let inv_text =
        std::fs::read_to_string(&c.inventory).with_context(|| format!("reading {}", c.inventory.display()))?;
    let inv = crate::load_inventory(&c.inventory)?;
    let nodes = select(&inv, &c.nodes)?;
    std::fs::create_dir_all(&c.state_dir).with_context(|| format!("creating {}", c.state_dir.display()))?;
    // One apply per state dir: two would drive the same nodes twice (the store's generation
    // check would catch the second writer, but only after both acted).
    let lock = if lock {
        let path = c.state_dir.join("apply.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if f.try_lock().is_err() {
            bail!("another metal6 apply is running on {} (it holds {})", c.state_dir.display(), path.display());
        }
        Some(f)
    } else {
        None
    };
    let store: Arc<dyn Store> = match c.state.config()? {
        Some(db) => {
            let owner = c.worker_name.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let dir = std::fs::canonicalize(&c.state_dir).unwrap_or_else(|_| c.state_dir.clone());
                format!("{}:{}", host.trim(), dir.display())
            });
            let lease = duration(&c.claim_lease)?.max(Duration::from_secs(1));
            let target = db.target().to_owned();
            Arc::new(
                metal6_orchestrator::PgStore::open(db, &owner, lease)
                    .with_context(|| format!("opening the shared state {target}"))?,
            )
        }
        None => Arc::new(
            SqliteStore::open(&c.state_dir.join("orchestrator.db"))
                .with_context(|| format!("opening the orchestrator database in {}", c.state_dir.display()))?,
        ),
    };
    let server = match &c.server {
        Some(s) if s.ends_with('/') => s.clone(),
        Some(s) => format!("{s}/"),
        None => inv.site.boot_server.http_base(),
    };
    let opts = Options {
        policy,
        parallel,
        per_bmc: c.bmc.per_bmc,
        installs,
        poll,
        ca_file: c.bmc.ca_file.clone(),
        insecure: c.bmc.insecure,
        bmc_timeout: Duration::from_secs(30),
        server,
        lines: true,
        until,
        cluster_dir,
    };
    let apply = Arc::new(Apply::new(Arc::new(inv), store, opts)?);
    Ok(Setup { inv_text, apply, nodes, _lock: lock })
}

fn print_plan(out: &mut impl Write, plans: &[NodePlan], format: Format) -> Result<()> {
    if format != Format::Table {
        return write_data(out, format, &plans);
    }
    let mut rows = vec![];
    for p in plans {
        for (i, a) in p.actions.iter().enumerate() {
            let node = if i == 0 { p.node.clone() } else { String::new() };
            rows.push(vec![node, a.step.clone(), a.why.clone()]);
        }
    }
    write_table(out, &["NODE", "STEP", "WHY"], &rows)?;
    Ok(())
}

pub fn plan(a: &PlanArgs, format: Format) -> Result<ExitCode> {
    init_logs();
    let s = setup(&a.common, Policy::default(), (16, 32, Duration::from_secs(2)), None, None, false)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let plans = rt.block_on(s.apply.plan(&s.nodes));
    print_plan(&mut std::io::stdout().lock(), &plans, format)?;
    if let Some(path) = &a.out {
        let saved = SavedPlan {
            format: PLAN_FORMAT.into(),
            created_ms: metal6_orchestrator::apply::now_ms(),
            inventory_sha256: sha256_hex(s.inv_text.as_bytes()),
            nodes: plans,
        };
        let text = serde_json::to_string_pretty(&saved)? + "\n";
        // Saved plans are immutable: never overwrite one.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("saving the plan to {} (plans are not overwritten)", path.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        let _ = writeln!(
            std::io::stderr(),
            "plan saved to {}: `metal6 apply -i INVENTORY {}` applies it",
            path.display(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load_plan(path: &Path) -> Result<SavedPlan> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the plan {}", path.display()))?;
    let p: SavedPlan =
        serde_json::from_str(&text).with_context(|| format!("{} is not a saved metal6 plan", path.display()))?;
    if p.format != PLAN_FORMAT {
        bail!("{}: plan format {:?}, this metal6 reads {PLAN_FORMAT:?}", path.display(), p.format);
    }
    Ok(p)
}

/// Draws the live table in place (a terminal) until `done`.
async fn draw(apply: Arc<Apply>, done: tokio_util::sync::CancellationToken) {
    let mut lines_drawn = 0usize;
    loop {
        let rows: Vec<Row> = apply.board.lock().map(|b| b.values().cloned().collect()).unwrap_or_default();
        let now = metal6_orchestrator::apply::now_ms();
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.node.clone(),
                    r.state.clone(),
                    format!("{}s", now.saturating_sub(r.entered_ms) / 1000),
                    r.attempt.to_string(),
                    format!("{}{}", if r.sla_missed { "SLA MISSED: " } else { "" }, r.wait.clone().unwrap_or_default()),
                ]
            })
            .collect();
        let mut buf = Vec::new();
        let _ = write_table(&mut buf, &["NODE", "STATE", "FOR", "TRY", "WAITING FOR"], &table);
        let text = String::from_utf8_lossy(&buf);
        {
            let mut err = std::io::stderr().lock();
            if lines_drawn > 0 {
                let _ = write!(err, "\x1b[{lines_drawn}A\x1b[J");
            }
            let _ = err.write_all(text.as_bytes());
        }
        lines_drawn = text.lines().count();
        if done.is_cancelled() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = done.cancelled() => {}
        }
    }
}

/// Keeps `STATE_DIR/board.json` — every node's state, wait reason, attempt and SLA — current
/// for `metal6 serve --apply-state` (the dashboard): rewritten (whole, then renamed) when it
/// changed, at most once a second, at least every 5 s while apply runs (`written_ms` says it
/// is alive), and once more at the end with `running: false`.
async fn publish_board(apply: Arc<Apply>, dir: PathBuf, done: tokio_util::sync::CancellationToken) {
    let path = dir.join("board.json");
    let tmp = dir.join("board.json.tmp");
    let mut last = String::new();
    let mut written = std::time::Instant::now();
    let mut first = true;
    loop {
        let finished = done.is_cancelled();
        let rows: Vec<Row> = apply.board.lock().map(|b| b.values().cloned().collect()).unwrap_or_default();
        let text = serde_json::to_string(&rows).unwrap_or_default();
        if first || finished || text != last || written.elapsed() >= Duration::from_secs(5) {
            first = false;
            written = std::time::Instant::now();
            let doc = serde_json::json!({
                "written_ms": metal6_orchestrator::apply::now_ms(), "running": !finished, "rows": rows,
            });
            let ok = std::fs::write(&tmp, doc.to_string() + "\n").and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = ok {
                tracing::debug!(error = %e, "cannot write {}", path.display());
            }
            last = text;
        }
        if finished {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = done.cancelled() => {}
        }
    }
}

pub fn apply(a: &ApplyArgs, format: Format) -> Result<ExitCode> {
    init_logs();
    let mut policy = Policy { attempts: a.attempts.max(1), backoff: duration(&a.backoff)?, ..Policy::default() };
    step_durations(&a.timeout, &mut policy, false)?;
    step_durations(&a.sla, &mut policy, true)?;
    let live = std::io::stderr().is_terminal() && format == Format::Table;
    let until = match &a.until {
        None => None,
        Some(u) => match Step::parse(u) {
            Some(s @ (Step::Firmware | Step::Bios | Step::Netboot)) => Some(s),
            _ => bail!(
                "--until {u}: apply stops before `firmware`, `bios` or `netboot` (the steps that need no netboot)"
            ),
        },
    };
    let mut s = setup(
        &a.common,
        policy,
        (a.parallel, a.installs, duration(&a.poll)?.max(Duration::from_millis(100))),
        until,
        a.cluster_dir.clone(),
        true,
    )?;
    if let Some(apply) = Arc::get_mut(&mut s.apply) {
        apply.set_lines(!live);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let apply = Arc::clone(&s.apply);
        if a.skip_doctor {
            tracing::warn!("--skip-doctor: apply starts without checking this host and the BMCs");
        } else {
            let c = &a.common;
            let report = crate::doctor_cmd::preflight(apply.inventory(), &s.nodes, &c.bmc).await;
            if report.summary.warn + report.summary.fail > 0 {
                crate::doctor_cmd::print(&mut std::io::stderr().lock(), &report, Format::Table, true)?;
            }
            if report.failed() {
                bail!(
                    "apply refused: doctor found {} failure(s), above; fix them, or pass --skip-doctor to start anyway",
                    report.summary.fail
                );
            }
        }
        let plans = match &a.plan {
            Some(path) => {
                let saved = load_plan(path)?;
                if saved.inventory_sha256 != sha256_hex(s.inv_text.as_bytes()) {
                    bail!("saved plan is stale: {} changed since the plan was made", a.common.inventory.display());
                }
                let stale = apply.stale(&saved).await;
                if !stale.is_empty() {
                    let mut msg = String::from("saved plan is stale: nodes changed since it was made:");
                    for (node, what) in &stale {
                        msg.push_str(&format!("\n  {node}: {}", what.join("; ")));
                    }
                    msg.push_str("\nrun `metal6 plan` again");
                    bail!(msg);
                }
                saved.nodes
            }
            None => apply.plan(&s.nodes).await,
        };
        // After the staleness check: a refused plan changes nothing.
        let plans = if a.retry.is_empty() {
            plans
        } else {
            let resumed = apply.retry(&a.retry)?;
            for n in &a.retry {
                if !resumed.contains(n) {
                    let _ =
                        writeln!(std::io::stderr(), "--retry {n}: not parked in needs-attention, nothing to resume");
                }
            }
            apply.plan(&plans.iter().map(|p| p.node.clone()).collect::<Vec<_>>()).await
        };
        print_plan(&mut std::io::stderr().lock(), &plans, Format::Table)?;
        let todo: Vec<String> = plans.iter().filter(|p| !p.nothing_to_do()).map(|p| p.node.clone()).collect();
        if todo.is_empty() {
            let _ = writeln!(std::io::stdout(), "nothing to do: {} node(s) already done", plans.len());
            return Ok(ExitCode::SUCCESS);
        }
        apply.prepare(&plans)?;
        let rendered = apply.prepare_cluster()?;
        if !rendered.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "cluster files: {} rendered into {} (join files follow the first control plane's CA hash)",
                rendered.len(),
                a.cluster_dir.as_deref().unwrap_or(Path::new("?")).display()
            );
        }
        // Ctrl-C: the first stops new steps (nodes stay resumable), the second exits at once.
        let cancel = apply.cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ =
                    writeln!(std::io::stderr(), "\ninterrupted: finishing the calls in flight; Ctrl-C again to abort");
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let drawn = tokio_util::sync::CancellationToken::new();
        let drawer = live.then(|| tokio::spawn(draw(Arc::clone(&apply), drawn.clone())));
        let board = tokio::spawn(publish_board(Arc::clone(&apply), a.common.state_dir.clone(), drawn.clone()));
        let records = apply.run(todo).await?;
        drawn.cancel();
        if let Some(d) = drawer {
            let _ = d.await;
        }
        let _ = board.await;
        report(&apply, &records, format)?;
        if apply.cancel.is_cancelled() {
            return Ok(ExitCode::from(130));
        }
        let finished = records.iter().all(|r| matches!(r.state, State::Done { .. }) || apply.stopped(r));
        Ok(if finished { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

/// This process's user + system CPU time, from /proc/self/stat (fields 14 and 15, in clock
/// ticks of 1/100 s on Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn report(apply: &Apply, records: &[metal6_orchestrator::NodeRecord], format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if format != Format::Table {
        return write_data(&mut out, format, &records);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let why = match &r.state {
                State::Done { ready_ms } => format!("ready at {}", hms(*ready_ms)),
                _ if apply.stopped(r) => format!("stopped before {} (--until)", r.state.label()),
                State::NeedsAttention { reason, .. } => reason.clone(),
                _ => r.wait.clone().unwrap_or_default(),
            };
            vec![r.node.clone(), r.state.label(), why]
        })
        .collect();
    write_table(&mut out, &["NODE", "RESULT", "DETAIL"], &rows)?;
    let done = records.iter().filter(|r| matches!(r.state, State::Done { .. })).count();
    writeln!(out, "ready: {done}/{}", records.len())?;
    if let Some(cpu) = cpu_seconds() {
        let per = cpu * 1000.0 / records.len().max(1) as f64;
        writeln!(out, "apply CPU time: {cpu:.2} s ({per:.1} ms per node)")?;
    }
    for (bmc, peak) in apply.bmc_peaks() {
        writeln!(out, "peak concurrent calls on {bmc}: {peak} (limit {})", apply.per_bmc())?;
    }
    Ok(())
}
