//! `metal6 bmc`: inventory, power, one-time boot, BIOS and firmware through each node's BMC
//! (Redfish), for one node, several, or `--all` in parallel with a limit.
//!
//! Credentials come from the inventory's references (`env:`/`file:`), read when a node's BMC
//! is contacted; they are never printed. Every session is deleted on the way out, errors
//! included. The exit status is 1 when any node failed.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use metal6_inventory::Limits;
use metal6_inventory::diag::Severity;
use metal6_inventory::ident::MacAddr;
use metal6_inventory::model::{GatedStep, Inventory, Node};
use metal6_orchestrator::Step;
use metal6_redfish::bios::{self, Registry};
use metal6_redfish::bmc::JobStatus;
use metal6_redfish::firmware;
use metal6_redfish::{Bmc, BootTarget, ConnectOptions, PowerAction, Staged};
use serde::Serialize;
use serde_json::{Value, json};

use crate::output::{Format, write_data, write_table};

#[derive(Debug, clap::Subcommand)]
pub enum BmcCmd {
    /// Model, service tag, BIOS and BMC versions and NIC MACs, checked against the inventory.
    Inventory {
        #[command(flatten)]
        target: Target,
        /// Fill missing NIC MACs into the inventory file from the BMC (NICs that name their
        /// `bmc_id`), changing nothing else in the file: comments and order stay.
        #[arg(long)]
        write_back: bool,
    },
    /// Power a node on, off or through a cycle (waits until the BMC reports it), or show it.
    Power {
        #[arg(value_enum)]
        action: PowerArg,
        #[command(flatten)]
        target: Target,
    },
    /// Boot once from UEFI HTTP, PXE or disk, in UEFI mode; read back to verify.
    BootOnce {
        #[arg(value_enum)]
        device: BootArg,
        #[command(flatten)]
        target: Target,
        /// Then reset the node (power it on if it is off) so it boots that way now.
        #[arg(long)]
        reset: bool,
    },
    /// The CAs the node's firmware trusts for HTTPS boot (the system's Boot/Certificates), and
    /// whether `site.boot_server.https_ca` is among them; with --add, add it when missing.
    BootCa {
        #[command(flatten)]
        target: Target,
        /// Add the inventory's HTTPS CA when the firmware does not have it (read back to verify).
        #[arg(long)]
        add: bool,
    },
    /// BIOS settings from the node's BIOS profile.
    #[command(subcommand)]
    Bios(BiosCmd),
    /// Firmware to the node's baseline.
    #[command(subcommand)]
    Firmware(FirmwareCmd),
}

#[derive(Debug, clap::Subcommand)]
pub enum BiosCmd {
    /// What would change, in how many passes, and what cannot (checked against the BIOS
    /// attribute registry and its dependencies).
    Plan(Target),
    /// Stage the plan as a BIOS job; with --reboot, reset, follow the job and verify the
    /// values by reading the BIOS again (pending values are not proof).
    Apply(Apply),
}

/// `bios apply` and `firmware apply`.
#[derive(Debug, clap::Args)]
pub struct Apply {
    #[command(flatten)]
    target: Target,
    /// Reset the node when a job waits for it (without it: stage, and stop at the first
    /// step that needs a reset).
    #[arg(long)]
    reboot: bool,
    /// Seconds one job may take (Dell: 5-15 min with one or two reboots; Dell's scripts give
    /// up on an update after 30 min).
    #[arg(long, default_value_t = 1800)]
    job_timeout: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum FirmwareCmd {
    /// Each baseline component against what the BMC reports, in update order, and the gates.
    Plan(Target),
    /// Update what is below the baseline (iDRAC → BIOS → NIC) by SimpleUpdate from the
    /// baseline's image URLs; with --reboot, reset to install and verify the new versions.
    Apply(Apply),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PowerArg {
    On,
    Off,
    Cycle,
    Status,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BootArg {
    UefiHttp,
    Pxe,
    Disk,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Inventory file.
    #[arg(short, long)]
    inventory: PathBuf,
    /// Nodes by name.
    #[arg(required_unless_present = "all")]
    nodes: Vec<String>,
    /// Every node that has a BMC.
    #[arg(long, conflicts_with = "nodes")]
    all: bool,
    /// PEM file of the CA (or the self-signed certificates) the BMCs' TLS certificates must
    /// chain to. Without it, the system's roots.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Do not verify BMC certificates (logged as a warning for every BMC).
    #[arg(long)]
    insecure: bool,
    /// BMCs talked to at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Seconds per HTTP request.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// One node's outcome.
#[derive(Debug, Serialize)]
struct Outcome {
    node: String,
    ok: bool,
    #[serde(skip_serializing_if = "Value::is_null")]
    result: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Human summary for the table.
    #[serde(skip)]
    summary: Vec<String>,
}

pub fn run(cmd: &BmcCmd, format: Format) -> Result<ExitCode> {
    let target = match cmd {
        BmcCmd::Inventory { target: t, .. }
        | BmcCmd::Power { target: t, .. }
        | BmcCmd::BootOnce { target: t, .. }
        | BmcCmd::BootCa { target: t, .. } => t,
        BmcCmd::Bios(BiosCmd::Plan(t) | BiosCmd::Apply(Apply { target: t, .. })) => t,
        BmcCmd::Firmware(FirmwareCmd::Plan(t) | FirmwareCmd::Apply(Apply { target: t, .. })) => t,
    };
    let write_back = matches!(cmd, BmcCmd::Inventory { write_back: true, .. });
    let src = metal6_inventory::read(&target.inventory, Limits::DEFAULT)?;
    let file = target.inventory.display().to_string();
    let missing = metal6_inventory::writeback::missing_macs(&src)?;
    let (inv, placeholders) = if write_back && !missing.is_empty() {
        load_with_placeholders(&src, &file, &missing)?
    } else {
        match metal6_inventory::check_str_with(&src, &file, Limits::DEFAULT) {
            (Some(inv), _) => (inv, HashSet::new()),
            (None, d) => bail!("{}", crate::inventory_cmd::render_elsewhere(&d)),
        }
    };
    let names = select(&inv, target)?;
    // Warnings (an --insecure connection, a session that could not be deleted) go to stderr;
    // METAL6_LOG=debug shows every request's retries.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("METAL6_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let inv = Arc::new(inv);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let placeholders = Arc::new(placeholders);
    let mut outcomes = rt.block_on(run_all(cmd, target, inv, names, placeholders));
    let mut wrote = Ok(());
    if write_back && !missing.is_empty() {
        wrote = write_back_macs(&target.inventory, &src, &missing, &mut outcomes);
    }
    print(cmd, format, &outcomes)?;
    wrote?;
    Ok(if outcomes.iter().all(|o| o.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Validates the file with a unique locally administered placeholder for every missing MAC,
/// so that everything else is checked as usual and the BMCs can be reached. The placeholders
/// never leave this command: they are not written, and the MAC check ignores them.
fn load_with_placeholders(
    src: &str,
    file: &str,
    missing: &[metal6_inventory::writeback::MissingMac],
) -> Result<(Inventory, HashSet<MacAddr>)> {
    // Errors other than the missing MACs are reported from the file as it is (true positions).
    let (_, mut diags) = metal6_inventory::check_str(src, file);
    diags.retain(|d| d.severity == Severity::Error && d.code != "missing-mac");
    if diags.has_errors() {
        bail!("{}", diags.render());
    }
    let mut set = HashSet::new();
    let fills: Vec<(String, String, MacAddr)> = missing
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let [a, b] = u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes();
            let mac = MacAddr([0x02, 0x6d, 0x36, 0x00, a, b]);
            set.insert(mac);
            (m.node.clone(), m.nic.clone(), mac)
        })
        .collect();
    let text = metal6_inventory::writeback::fill_macs(src, &fills)?;
    match metal6_inventory::check_str(&text, file) {
        (Some(inv), _) => Ok((inv, set)),
        (None, d) => bail!("{}", d.render()),
    }
}

/// Adds to the last (CHECK) column of a node's row.
fn note(o: &mut Outcome, text: &str) {
    match o.summary.last_mut() {
        Some(last) if last != "all inventory MACs found" => {
            last.push_str("; ");
            last.push_str(text);
        }
        Some(last) => *last = text.to_owned(),
        None => o.summary.push(text.to_owned()),
    }
}

/// Fills each missing MAC the BMC reported (by the NIC's `bmc_id`) into the file, atomically.
fn write_back_macs(
    path: &std::path::Path,
    src: &str,
    missing: &[metal6_inventory::writeback::MissingMac],
    outcomes: &mut [Outcome],
) -> Result<()> {
    let mut fills = Vec::new();
    for o in outcomes.iter_mut() {
        let bmc_nics: Vec<(String, String)> = o.result["bmc"]["nics"]
            .as_array()
            .map(|a| {
                a.iter().filter_map(|n| Some((n["id"].as_str()?.to_owned(), n["mac"].as_str()?.to_owned()))).collect()
            })
            .unwrap_or_default();
        let node = o.node.clone();
        for m in missing.iter().filter(|m| m.node == node) {
            let Some(id) = &m.bmc_id else {
                o.ok = false;
                note(o, &format!("{}: no bmc_id, cannot fill its MAC", m.nic));
                continue;
            };
            match bmc_nics.iter().find(|(bid, _)| bid == id).and_then(|(_, mac)| mac.parse::<MacAddr>().ok()) {
                Some(mac) => fills.push((m.node.clone(), m.nic.clone(), mac)),
                None if o.error.is_none() => {
                    o.ok = false;
                    note(o, &format!("{}: the BMC has no NIC {id}", m.nic));
                }
                None => {}
            }
        }
    }
    if fills.is_empty() {
        return Ok(());
    }
    let text = metal6_inventory::writeback::fill_macs(src, &fills)?;
    replace_file(path, src, &text)?;
    let _ = writeln!(std::io::stderr(), "wrote {} MAC(s) into {}", fills.len(), path.display());
    for o in outcomes.iter_mut() {
        let n = fills.iter().filter(|(node, _, _)| node == &o.node).count();
        if n > 0 {
            note(o, &format!("filled {n} MAC(s)"));
            o.result["written_macs"] = json!(
                fills
                    .iter()
                    .filter(|(node, _, _)| node == &o.node)
                    .map(|(_, nic, mac)| json!({"nic": nic, "mac": mac.to_string()}))
                    .collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}

/// Replaces the inventory `path` (read as `before`) with `text`, losing nothing: the new text
/// must validate; a file edited meanwhile (the BMCs take a while) is left alone; a symlinked
/// inventory stays a symlink (its target is replaced); the new file is on disk (fsync of the
/// file, then of its directory) before and after the rename that swaps it in.
fn replace_file(path: &std::path::Path, before: &str, text: &str) -> Result<()> {
    let file = path.display().to_string();
    if let (None, d) = metal6_inventory::check_str(text, &file) {
        bail!(
            "not writing {file}: the filled-in inventory does not validate (a bug; nothing was changed):\n{}",
            d.render()
        );
    }
    let real = std::fs::canonicalize(path).with_context(|| format!("resolving {file}"))?;
    let now = std::fs::read_to_string(&real).with_context(|| format!("reading {}", real.display()))?;
    if now != before {
        bail!("{file} changed while the BMCs were asked; nothing written: run the command again");
    }
    let dir = real.parent().context("the inventory has no directory")?;
    let name = real.file_name().context("the inventory has no file name")?.to_string_lossy().into_owned();
    let tmp = dir.join(format!(".{name}.metal6-{}", std::process::id()));
    let write = || -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        if let Ok(meta) = std::fs::metadata(&real) {
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &real).with_context(|| format!("replacing {}", real.display()))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn select(inv: &Inventory, t: &Target) -> Result<Vec<String>> {
    if t.all {
        let names: Vec<String> = inv.nodes.iter().filter(|n| n.bmc.is_some()).map(|n| n.name.clone()).collect();
        if names.is_empty() {
            bail!("no node in {} has a bmc", inv.source);
        }
        return Ok(names);
    }
    for n in &t.nodes {
        match inv.node(n) {
            None => bail!("no node `{n}` in {}", inv.source),
            Some(node) if node.bmc.is_none() => bail!("node `{n}` has no bmc in {}", inv.source),
            Some(_) => {}
        }
    }
    Ok(t.nodes.clone())
}

async fn run_all(
    cmd: &BmcCmd,
    t: &Target,
    inv: Arc<Inventory>,
    names: Vec<String>,
    placeholders: Arc<HashSet<MacAddr>>,
) -> Vec<Outcome> {
    let limit = Arc::new(tokio::sync::Semaphore::new(t.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (inv, limit, name, t, ph) = (inv.clone(), limit.clone(), name.clone(), t.clone(), placeholders.clone());
        let op = Op::of(cmd);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, one_node(&inv, &name, &t, op, &ph).await)
        });
    }
    let mut out: Vec<(usize, Outcome)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(x) = r {
            out.push(x);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

/// The command, detached from clap's borrow so tasks can own it.
#[derive(Debug, Clone, Copy)]
enum Op {
    Inventory,
    Power(PowerArg),
    BootOnce(BootArg, bool),
    BootCa { add: bool },
    BiosPlan,
    BiosApply { reboot: bool, job_timeout: u64 },
    FirmwarePlan,
    FirmwareApply { reboot: bool, job_timeout: u64 },
}

impl Op {
    fn of(cmd: &BmcCmd) -> Op {
        match cmd {
            BmcCmd::Inventory { .. } => Op::Inventory,
            BmcCmd::Power { action, .. } => Op::Power(*action),
            BmcCmd::BootOnce { device, reset, .. } => Op::BootOnce(*device, *reset),
            BmcCmd::BootCa { add, .. } => Op::BootCa { add: *add },
            BmcCmd::Bios(BiosCmd::Plan(_)) => Op::BiosPlan,
            BmcCmd::Bios(BiosCmd::Apply(a)) => Op::BiosApply { reboot: a.reboot, job_timeout: a.job_timeout },
            BmcCmd::Firmware(FirmwareCmd::Plan(_)) => Op::FirmwarePlan,
            BmcCmd::Firmware(FirmwareCmd::Apply(a)) => {
                Op::FirmwareApply { reboot: a.reboot, job_timeout: a.job_timeout }
            }
        }
    }
}

async fn one_node(inv: &Inventory, name: &str, t: &Target, op: Op, placeholders: &HashSet<MacAddr>) -> Outcome {
    let fail = |e: anyhow::Error| Outcome {
        node: name.to_owned(),
        ok: false,
        result: Value::Null,
        error: Some(format!("{e:#}")),
        summary: vec![],
    };
    // `select` checked that the node exists and has a BMC.
    let Some(node) = inv.node(name) else { return fail(anyhow!("no such node")) };
    let Some(bmc_ref) = &node.bmc else { return fail(anyhow!("no bmc")) };
    // With a reset, the BIOS and firmware flows are the orchestrator's (one implementation).
    let with_reset = match op {
        Op::BiosApply { reboot: true, job_timeout } => Some((Step::Bios, job_timeout)),
        Op::FirmwareApply { reboot: true, job_timeout } => Some((Step::Firmware, job_timeout)),
        _ => None,
    };
    if let Some((step, job_timeout)) = with_reset {
        return match one_step(inv, node, t, step, job_timeout).await {
            Ok((result, summary, ok)) => Outcome { node: name.to_owned(), ok, result, error: None, summary },
            Err(e) => fail(e),
        };
    }
    let password = match bmc_ref.password.resolve() {
        Ok(p) => p,
        Err(e) => return fail(e.into()),
    };
    let mut opts = ConnectOptions::for_bmc(bmc_ref, password);
    opts.ca_file = t.ca_file.clone();
    opts.insecure = t.insecure;
    opts.timeout = Duration::from_secs(t.timeout.max(1));
    let bmc = match Bmc::connect(opts).await.with_context(|| format!("connecting to {}", bmc_ref.redfish_url())) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let r = match op {
        Op::Inventory => inventory(&bmc, node, placeholders).await,
        Op::Power(a) => power(&bmc, a).await,
        Op::BootOnce(d, reset) => boot_once(&bmc, d, reset).await,
        Op::BootCa { add } => boot_ca(&bmc, inv, add).await,
        Op::BiosPlan => bios_plan(&bmc, inv, node).await,
        Op::BiosApply { .. } => bios_stage(&bmc, inv, node).await,
        Op::FirmwarePlan => firmware_plan(&bmc, inv, node).await,
        Op::FirmwareApply { job_timeout, .. } => firmware_start(&bmc, inv, node, job_timeout).await,
    };
    bmc.logout().await;
    match r {
        Ok((result, summary, ok)) => Outcome { node: name.to_owned(), ok, result, error: None, summary },
        Err(e) => fail(e),
    }
}

/// `(data for JSON, lines for the table, success)`
type Done = Result<(Value, Vec<String>, bool)>;

/// `bios apply --reboot` / `firmware apply --reboot`: the orchestrator's step for this one
/// node, in memory, one attempt bounded by --job-timeout; what it did, from its history.
async fn one_step(inv: &Inventory, node: &Node, t: &Target, step: Step, job_timeout: u64) -> Done {
    let mut policy = metal6_orchestrator::Policy { attempts: 1, ..Default::default() };
    let limit = Duration::from_secs(job_timeout.max(1));
    *policy.timing_mut(step) = metal6_orchestrator::machine::Timing { sla: limit, timeout: limit };
    let opts = metal6_orchestrator::Options {
        policy,
        parallel: 1,
        per_bmc: 1,
        installs: 1,
        poll: Duration::from_secs(1),
        ca_file: t.ca_file.clone(),
        insecure: t.insecure,
        bmc_timeout: Duration::from_secs(t.timeout.max(1)),
        server: inv.site.boot_server.http_base(),
        lines: true,
        until: None,
        cluster_dir: None,
    };
    let (rec, history) = metal6_orchestrator::apply::one_step(Arc::new(inv.clone()), &node.name, step, opts).await?;
    if let metal6_orchestrator::State::NeedsAttention { reason, .. } = &rec.state {
        bail!("{reason}");
    }
    let data = json!({"result": rec.state.label(), "history": history});
    let line = match step {
        Step::Firmware => {
            let bname = inv.profile_of(node).firmware.clone().unwrap_or_default();
            let updated = history.iter().filter(|h| h.kind == "firmware-installed").count();
            format!("baseline {bname}: all components at or above it ({updated} updated)")
        }
        _ => {
            let staged: usize = history
                .iter()
                .filter(|h| h.kind == "bios-staged")
                .filter_map(|h| h.detail.get("attributes").and_then(Value::as_object).map(serde_json::Map::len))
                .sum();
            if staged == 0 { "already applied".to_owned() } else { format!("applied and verified {staged} value(s)") }
        }
    };
    Ok((data, vec![line], true))
}

fn progress(node: &str, line: &str) {
    let _ = writeln!(std::io::stderr(), "{node}: {line}");
}

async fn inventory(bmc: &Bmc, node: &Node, placeholders: &HashSet<MacAddr>) -> Done {
    let inv = bmc.inventory().await?;
    // Which inventory NICs the BMC knows, by MAC; a NIC naming its bmc_id must have that MAC.
    let mut checks = Vec::new();
    let mut problems = Vec::new();
    for nic in node.nics.iter().filter(|n| !placeholders.contains(&n.mac)) {
        let mac = nic.mac.to_string();
        let found = inv.nics.iter().find(|b| b.mac.as_deref() == Some(mac.as_str()));
        checks.push(json!({"nic": nic.name, "mac": mac, "bmc_id": found.map(|b| &b.id)}));
        match (&nic.bmc_id, found) {
            (Some(want), Some(b)) if &b.id != want => {
                problems.push(format!("{mac} is {} on the BMC, not {want}", b.id));
            }
            (_, None) => problems.push(format!("not on the BMC: {mac}")),
            _ => {}
        }
    }
    let ok = problems.is_empty();
    let check = if ok { "all inventory MACs found".to_owned() } else { problems.join("; ") };
    let cell = |v: &Option<String>| v.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let row = vec![
        cell(&inv.model),
        cell(&inv.service_tag),
        cell(&inv.bios_version),
        cell(&inv.bmc_firmware),
        cell(&inv.power),
        inv.nics.iter().map(|n| format!("{}={}", n.id, n.mac.as_deref().unwrap_or("?"))).collect::<Vec<_>>().join(" "),
        check,
    ];
    Ok((json!({"bmc": inv, "inventory_nics": checks, "problems": problems}), row, ok))
}

async fn power(bmc: &Bmc, a: PowerArg) -> Done {
    let wait = Duration::from_secs(120);
    let state = match a {
        PowerArg::Status => bmc.power_state().await?,
        PowerArg::On => bmc.power(PowerAction::On, wait).await?,
        PowerArg::Off => bmc.power(PowerAction::Off, wait).await?,
        PowerArg::Cycle => bmc.power(PowerAction::Cycle, wait).await?,
    };
    let ok = match a {
        PowerArg::Off => state == "Off",
        PowerArg::On | PowerArg::Cycle => state == "On",
        PowerArg::Status => true,
    };
    Ok((json!({"power": state}), vec![state], ok))
}

/// `bmc boot-ca`: the firmware's HTTPS boot CAs against the inventory's.
async fn boot_ca(bmc: &Bmc, inv: &Inventory, add: bool) -> Done {
    let ca = match &inv.site.boot_server.https_ca {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("site.boot_server.https_ca {}", p.display()))?)
        }
        None if add => bail!("--add needs site.boot_server.https_ca in the inventory"),
        None => None,
    };
    let no_store = || Ok((json!({"store": null}), vec!["no HTTPS boot certificate store".into(), "-".into()], !add));
    let (coll, count, have, added) = match &ca {
        Some(pem) => match bmc.boot_ca(pem, add).await? {
            Some(c) => (c.collection, c.count, c.present, c.added),
            None => return no_store(),
        },
        None => match bmc.boot_certificates().await? {
            Some((coll, certs)) => (coll, certs.len(), false, None),
            None => return no_store(),
        },
    };
    let state = match (&ca, have, &added) {
        (None, ..) => "no https_ca in the inventory".to_owned(),
        (Some(_), true, Some(_)) => "CA added".to_owned(),
        (Some(_), true, None) => "CA present".to_owned(),
        (Some(_), false, Some(_)) => "CA added but not listed afterwards".to_owned(),
        (Some(_), false, None) => "CA missing (--add)".to_owned(),
    };
    let ok = ca.is_none() || have || !add;
    Ok((
        json!({"store": coll, "certificates": count, "ca_present": have, "added": added}),
        vec![format!("{count} certificate(s) in {coll}"), state],
        ok,
    ))
}

async fn boot_once(bmc: &Bmc, d: BootArg, reset: bool) -> Done {
    let target = match d {
        BootArg::UefiHttp => BootTarget::UefiHttp,
        BootArg::Pxe => BootTarget::Pxe,
        BootArg::Disk => BootTarget::Disk,
    };
    bmc.boot_once(target).await?;
    if reset {
        let kind = if bmc.power_state().await? == "Off" { "On" } else { "ForceRestart" };
        bmc.reset(kind).await?;
    }
    let what =
        format!("{} once{}", serde_json::to_value(target)?.as_str().unwrap_or(""), if reset { ", reset" } else { "" });
    Ok((json!({"boot_once": target, "reset": reset}), vec![what], true))
}

struct BiosState {
    profile: String,
    desired: BTreeMap<String, Value>,
    current: BTreeMap<String, Value>,
    settings: String,
    registry: Registry,
}

async fn bios_state(bmc: &Bmc, inv: &Inventory, node: &Node) -> Result<BiosState> {
    let Some((profile, desired)) = bios::desired_for(inv, node) else {
        bail!("node {} has no BIOS profile (profiles.{}.bios)", node.name, node.profile)
    };
    let (current, settings) = bmc.bios().await?;
    let registry = Registry::from_json(&bmc.bios_registry().await?)?;
    Ok(BiosState { profile, desired, current, settings, registry })
}

fn plan_lines(p: &bios::Plan) -> Vec<String> {
    let mut lines = Vec::new();
    let n: usize = p.passes.iter().map(Vec::len).sum();
    lines.push(match (n, p.passes.len()) {
        (0, _) => "no changes".to_owned(),
        (n, 1) => format!("{n} change(s) in 1 pass"),
        (n, k) => format!("{n} change(s) in {k} passes (one job and reboot each)"),
    });
    for (i, pass) in p.passes.iter().enumerate() {
        for c in pass {
            lines.push(format!("  pass {}: {} {} -> {}", i + 1, c.attribute, plain(&c.current), plain(&c.desired)));
        }
    }
    for u in &p.unchanged {
        lines.push(format!("  unchanged: {}={} ({})", u.attribute, plain(&u.value), u.reason));
    }
    for r in &p.refused {
        lines.push(format!("  refused: {}={}: {}", r.attribute, plain(&r.value), r.reason));
    }
    lines
}

/// An enum as its serde (kebab-case) name.
fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Null => "(unset)".into(),
        v => v.to_string(),
    }
}

async fn bios_plan(bmc: &Bmc, inv: &Inventory, node: &Node) -> Done {
    let s = bios_state(bmc, inv, node).await?;
    let p = bios::plan(&s.registry, &s.current, &s.desired);
    let pending = bmc.bios_pending(&s.settings).await?;
    let mut lines = plan_lines(&p);
    if !pending.is_empty() {
        lines.push(format!("  note: {} value(s) already pending on the BMC (apply clears them first)", pending.len()));
    }
    lines[0] = format!("profile {}: {}", s.profile, lines[0]);
    Ok((json!({"profile": s.profile, "plan": p, "pending": pending}), lines, p.refused.is_empty()))
}

/// `bios apply` without --reboot: the first pass staged (a job that runs at the node's next
/// reset), after the same gate check and stale-job cleanup as the orchestrator's BIOS step.
/// With --reboot the orchestrator runs the whole step (`one_step`).
async fn bios_stage(bmc: &Bmc, inv: &Inventory, node: &Node) -> Done {
    let name = node.name.as_str();
    let s = bios_state(bmc, inv, node).await?;
    let p = bios::plan(&s.registry, &s.current, &s.desired);
    if !p.refused.is_empty() {
        let why: Vec<String> = p.refused.iter().map(|r| format!("{}: {}", r.attribute, r.reason)).collect();
        bail!("the BIOS profile {} cannot be applied as written:\n  {}", s.profile, why.join("\n  "));
    }
    let Some(changes) = p.passes.first() else {
        return Ok((json!({"result": "already-applied", "plan": p}), vec!["already applied".into()], true));
    };
    check_gates(bmc, inv, node, &p).await?;
    bmc.clear_stale(&s.settings).await?;
    let attrs: BTreeMap<String, Value> = changes.iter().map(|c| (c.attribute.clone(), c.desired.clone())).collect();
    let staged = bmc.stage_bios(&s.settings, &attrs).await?;
    if staged == Staged::Nothing {
        bail!("the BMC took the BIOS changes of pass 1 but has nothing pending to apply");
    }
    progress(name, &format!("pass 1: staged {} value(s): {staged:?}", attrs.len()));
    let rest = p.passes.len() - 1;
    let line = format!(
        "staged pass 1 ({staged:?}); reset the node to apply{}",
        if rest > 0 { format!(", then run apply again for {rest} more pass(es)") } else { String::new() }
    );
    Ok((json!({"result": "staged", "staged": staged, "plan": p}), vec![line], true))
}

/// The node's firmware gates on BIOS work: `bios-apply` always, `ipv6-http-boot` when the plan
/// touches the HTTP boot device while the profile asks for IPv6 (notes: Dell BIOS IPv6 HTTP
/// boot needs a recent BIOS).
async fn check_gates(bmc: &Bmc, inv: &Inventory, node: &Node, plan: &bios::Plan) -> Result<()> {
    let Ok((bname, baseline)) = baseline_of(inv, node) else { return Ok(()) };
    if baseline.gates.is_empty() {
        return Ok(());
    }
    let fw = firmware::plan(baseline, &bmc.firmware().await?);
    let ipv6_http = plan.passes.iter().flatten().any(|c| c.attribute.starts_with("HttpDev"))
        && bios::desired_for(inv, node).is_some_and(|(_, d)| d.values().any(|v| v == "IPv6"));
    let mut failing = Vec::new();
    for g in &fw.gates {
        let applies = match g.before {
            GatedStep::BiosApply => true,
            GatedStep::Ipv6HttpBoot => ipv6_http,
            GatedStep::Install => false,
        };
        if applies && !g.holds_now {
            let installed = fw.steps.iter().find(|s| s.kind == g.component).and_then(|s| s.installed.clone());
            failing.push(format!(
                "{} >= {} before {} (installed: {})",
                name(&g.component),
                g.min_version,
                name(&g.before),
                installed.as_deref().unwrap_or("unknown")
            ));
        }
    }
    if failing.is_empty() {
        return Ok(());
    }
    bail!(
        "firmware baseline {bname} gates this BIOS change:\n  {}\nrun `metal6 bmc firmware apply --reboot` first",
        failing.join("\n  ")
    )
}

fn baseline_of<'a>(
    inv: &'a Inventory,
    node: &Node,
) -> Result<(&'a str, &'a metal6_inventory::model::FirmwareBaseline)> {
    let Some(name) = inv.profile_of(node).firmware.as_deref() else {
        bail!("node {} has no firmware baseline (profiles.{}.firmware)", node.name, node.profile)
    };
    // Validation guarantees the reference resolves.
    let b = inv.firmware_baselines.get(name).ok_or_else(|| anyhow!("no firmware baseline {name}"))?;
    Ok((name, b))
}

fn fw_lines(p: &firmware::FwPlan) -> Vec<String> {
    let mut lines = Vec::new();
    for s in &p.steps {
        lines.push(format!(
            "  {} ({}): {} -> {}: {}",
            name(&s.kind),
            s.devices.first().map_or("-", String::as_str),
            s.installed.as_deref().unwrap_or("?"),
            s.baseline,
            name(&s.action)
        ));
    }
    lines.extend(p.gates.iter().map(|g| format!("  {g}")));
    lines
}

async fn firmware_plan(bmc: &Bmc, inv: &Inventory, node: &Node) -> Done {
    let (name, baseline) = baseline_of(inv, node)?;
    let p = firmware::plan(baseline, &bmc.firmware().await?);
    let n = p.updates().count();
    let mut lines = vec![format!("baseline {name}: {n} update(s)")];
    lines.extend(fw_lines(&p));
    let ok = p.gates.iter().all(|g| g.holds_after);
    Ok((json!({"baseline": name, "plan": p}), lines, ok))
}

/// `firmware apply` without --reboot: the first component behind the baseline started (its
/// package checked first); an update that needs a reset waits for the node's next one. With
/// --reboot the orchestrator runs the whole step, component by component (`one_step`).
async fn firmware_start(bmc: &Bmc, inv: &Inventory, node: &Node, job_timeout: u64) -> Done {
    let name = node.name.as_str();
    let (bname, baseline) = baseline_of(inv, node)?;
    let p = firmware::plan(baseline, &bmc.firmware().await?);
    let Some(step) = p.updates().next() else {
        let line = format!("baseline {bname}: all components at or above it");
        return Ok((json!({"baseline": bname, "updates": [], "behind": []}), vec![line], true));
    };
    let kind = self::name(&step.kind);
    progress(
        name,
        &format!("{kind}: {} -> {} from {}", step.installed.as_deref().unwrap_or("?"), step.baseline, step.image_url),
    );
    if let Some(want) = &step.sha256 {
        let got = metal6_orchestrator::firmware::sha256_of_url(&step.image_url).await.map_err(|e| anyhow!(e))?;
        if !got.eq_ignore_ascii_case(want) {
            bail!("{} has SHA-256 {got}, the baseline says {want}: not installing it", step.image_url);
        }
    }
    let task = bmc.simple_update(&step.image_url).await?;
    let report =
        |j: &JobStatus| progress(name, &format!("{}: {} {}", j.id, j.state, j.message.as_deref().unwrap_or("")));
    let waits =
        |j: &JobStatus| j.is_final() || matches!(j.state.as_str(), "Scheduled" | "RebootPending" | "PendingActivation");
    let j = bmc.wait_job(&task, Duration::from_secs(job_timeout), waits, report).await?;
    if j.failed() {
        bail!("update {task} failed: {} {}", j.state, j.message.unwrap_or_default());
    }
    let result = if j.succeeded() { "installed" } else { "scheduled, reset to install" };
    let line = format!("baseline {bname}: {kind} update {task} {result}; run apply again for the rest");
    Ok((json!({"baseline": bname, "updates": [{"kind": step.kind, "task": task, "result": result}]}), vec![line], true))
}

fn print(cmd: &BmcCmd, format: Format, outcomes: &[Outcome]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if format != Format::Table {
        return write_data(&mut out, format, &outcomes);
    }
    let header: &[&str] = match cmd {
        BmcCmd::Inventory { .. } => &["NODE", "MODEL", "SERVICE-TAG", "BIOS", "BMC", "POWER", "NICS", "CHECK"],
        BmcCmd::Power { .. } => &["NODE", "POWER"],
        BmcCmd::BootOnce { .. } => &["NODE", "BOOT"],
        BmcCmd::BootCa { .. } => &["NODE", "STORE", "HTTPS CA"],
        _ => &[],
    };
    if header.is_empty() {
        // Plans and applies: a block per node.
        for o in outcomes {
            match &o.error {
                Some(e) => writeln!(out, "{}: error: {e}", o.node)?,
                None => {
                    let mut lines = o.summary.iter();
                    writeln!(out, "{}: {}", o.node, lines.next().map_or("", String::as_str))?;
                    for l in lines {
                        writeln!(out, "{l}")?;
                    }
                }
            }
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let mut row = vec![o.node.clone()];
            match &o.error {
                Some(e) => row.push(format!("error: {e}")),
                None => row.extend(o.summary.iter().cloned()),
            }
            row
        })
        .collect();
    write_table(&mut out, header, &rows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::replace_file;

    fn lab() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inventory/lab.yaml")).expect("lab.yaml")
    }

    #[test]
    fn an_inventory_edited_meanwhile_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet.yaml");
        let (before, edited) = (lab(), format!("{}# edited by hand meanwhile\n", lab()));
        std::fs::write(&path, &edited).expect("write");
        let e = replace_file(&path, &before, &format!("{before}# filled\n")).expect_err("refused");
        assert!(e.to_string().contains("changed while the BMCs were asked"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), edited);
    }

    #[test]
    fn text_that_does_not_validate_is_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet.yaml");
        std::fs::write(&path, lab()).expect("write");
        let e = replace_file(&path, &lab(), "nodes: [").expect_err("refused");
        assert!(e.to_string().contains("does not validate"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), lab());
        replace_file(&path, &lab(), &format!("{}# filled\n", lab())).expect("valid text is written");
        assert!(std::fs::read_to_string(&path).expect("read").ends_with("# filled\n"));
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "no temporary file left");
    }
}
