//! `apply`: drives every selected node through the state machine, concurrently, persisting
//! each step before it acts. The I/O half of the crate: BMC calls (Redfish), evidence from
//! `metal6 serve` (a node's timeline over HTTP), the store, the limits and the display.
//!
//! Limits are queues, never refusals: a node waits for a slot (`--parallel`), for a call slot
//! on its BMC (`--per-bmc`, every call sequence holds one for its whole session) and for an
//! install slot on the boot server (`--installs`, held from the power cycle until the
//! installer reports `installed`), and says which one it waits for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metal6_inventory::Inventory;
use metal6_inventory::model::{BootMethod, Node};
use metal6_redfish::{Bmc, BootTarget, ConnectOptions, PowerAction, RedfishError};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::machine::{Advance, Clock, NodeRecord, Policy, State, Step, advance, clock, hms, progress};
use crate::store::{History, Store, StoreError};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How `apply` reaches BMCs and the server, and its limits.
#[derive(Debug, Clone)]
pub struct Options {
    pub policy: Policy,
    /// Nodes driven at once; the rest queue.
    pub parallel: usize,
    /// Call sessions at once per BMC endpoint.
    pub per_bmc: usize,
    /// Installs at once per boot server.
    pub installs: usize,
    /// How often a waiting node reads its evidence.
    pub poll: Duration,
    pub ca_file: Option<std::path::PathBuf>,
    pub insecure: bool,
    /// Per HTTP request to a BMC.
    pub bmc_timeout: Duration,
    /// `metal6 serve`'s base URL, ending in `/`.
    pub server: String,
    /// Plain progress lines (one per transition) on stderr; the caller draws a table instead
    /// when this is false.
    pub lines: bool,
    /// Stop each node when it reaches the start of this step (left resumable there): e.g.
    /// `netboot` runs preflight and BIOS only.
    pub until: Option<Step>,
    /// The directory `metal6 serve --cluster-dir` serves: with an inventory `cluster`, apply
    /// renders into it and drives every node on to `cluster-joined`.
    pub cluster_dir: Option<std::path::PathBuf>,
}

/// A node's row for the progress display and the final report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub node: String,
    pub state: String,
    pub entered_ms: u64,
    pub attempt: u32,
    pub wait: Option<String>,
    pub last_evidence: Option<String>,
    pub sla_missed: bool,
}

impl Row {
    pub fn of(rec: &NodeRecord) -> Row {
        Row {
            node: rec.node.clone(),
            state: rec.state.label(),
            entered_ms: rec.entered_ms,
            attempt: rec.attempt,
            // A parked node waits for an operator: its reason is what it waits for.
            wait: match &rec.state {
                State::NeedsAttention { step, reason } => {
                    Some(format!("an operator: parked in {}: {reason} (apply --retry)", step.name()))
                }
                _ => rec.wait.clone(),
            },
            last_evidence: rec.last_evidence.clone(),
            sla_missed: rec.sla_warned,
        }
    }
}

/// Calls in flight per BMC endpoint, with the peak: what the per-BMC limit bounds.
#[derive(Debug, Default)]
pub struct BmcLoad {
    pub in_flight: AtomicUsize,
    pub peak: AtomicUsize,
}

/// A BMC endpoint's call slots and its load.
type BmcSlot = (Arc<Semaphore>, Arc<BmcLoad>);

#[derive(Debug)]
pub struct Apply {
    inv: Arc<Inventory>,
    store: Arc<dyn Store>,
    opts: Options,
    global: Arc<Semaphore>,
    installs: Arc<Semaphore>,
    bmcs: Mutex<HashMap<String, BmcSlot>>,
    http: reqwest::Client,
    pub cancel: CancellationToken,
    pub board: Mutex<BTreeMap<String, Row>>,
}

/// What one handler run decided.
pub(crate) enum StepOutcome {
    /// Persist this record with these history entries and go on at once.
    Commit(NodeRecord, Vec<History>),
    /// Nothing happened yet: wait, for this reason, with this newest evidence.
    Wait { reason: String, evidence: Option<String> },
    /// An operator has to act: no retry can help.
    Park(String),
}

/// What the clock left a waiting driver to do.
enum Tick {
    Wait,
    Again,
    Stop,
}

/// `--until STEP` holds a node that reached the start of STEP (or passed it: a node without a
/// BIOS profile goes from preflight straight to netboot).
fn reached(state: &State, until: Step) -> bool {
    use crate::machine::BiosStep;
    match until {
        Step::Firmware => matches!(
            state,
            State::Firmware(crate::machine::FwStep::Plan { .. })
                | State::Bios(BiosStep::Plan { pass: 1 })
                | State::Netboot { cycled_ms: None }
        ),
        Step::Bios => matches!(state, State::Bios(BiosStep::Plan { pass: 1 }) | State::Netboot { cycled_ms: None }),
        Step::Netboot => matches!(state, State::Netboot { cycled_ms: None }),
        _ => false,
    }
}

/// Per-driver memory that need not survive a restart (a restart sets `verify_power` again).
struct Driver {
    /// Waiting in the boot server's install queue (no clock runs against the node).
    queued: bool,
    /// Re-read the BMC before trusting a committed power cycle: set at start (a crash may
    /// have come between the commit and the call) and after a failed power call.
    verify_power: bool,
    install_permit: Option<OwnedSemaphorePermit>,
    failures_seen: HashSet<u64>,
}

impl Apply {
    pub fn new(inv: Arc<Inventory>, store: Arc<dyn Store>, opts: Options) -> Result<Apply, reqwest::Error> {
        metal6_redfish::init_tls();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Apply {
            global: Arc::new(Semaphore::new(opts.parallel.max(1))),
            installs: Arc::new(Semaphore::new(opts.installs.max(1))),
            bmcs: Mutex::new(HashMap::new()),
            http,
            cancel: CancellationToken::new(),
            board: Mutex::new(BTreeMap::new()),
            inv,
            store,
            opts,
        })
    }

    /// Peak concurrent call sessions per BMC endpoint seen in this run.
    pub fn bmc_peaks(&self) -> BTreeMap<String, usize> {
        let bmcs = self.bmcs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bmcs.iter().map(|(k, (_, load))| (k.clone(), load.peak.load(Ordering::SeqCst))).collect()
    }

    fn show(&self, rec: &NodeRecord) {
        let mut b = self.board.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        b.insert(rec.node.clone(), Row::of(rec));
    }

    /// A progress line: on stderr in line mode, else to the log (the table shows it).
    fn say(&self, node: &str, text: &str) {
        if self.opts.lines {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "[{}] {node}: {text}", hms(now_ms()));
        } else {
            info!(node, "{text}");
        }
    }

    /// A warning: a progress line in line mode, else a logged warning.
    fn warn(&self, node: &str, text: &str) {
        if self.opts.lines {
            self.say(node, text);
        } else {
            warn!(node, "{text}");
        }
    }

    /// Resets parked nodes to the start of the step they were parked in (`apply --retry`).
    pub fn retry(&self, nodes: &[String]) -> Result<Vec<String>, StoreError> {
        let mut done = vec![];
        for name in nodes {
            let Some(rec) = self.store.load(name)? else { continue };
            let State::NeedsAttention { step, reason } = &rec.state else { continue };
            let now = now_ms();
            // A cluster wait resumes from the park: what the node reports from now on counts.
            let restart = match step {
                Step::Cluster => State::Cluster { since_ms: rec.entered_ms, joins_rendered: false },
                _ => restart_state(*step),
            };
            let mut next = rec.enter(restart, now);
            next.attempt = 1;
            let h =
                History::new(now, "apply", "retry", format!("operator retry of {} (parked: {reason})", step.name()));
            self.store.commit(&next, &[h])?;
            done.push(name.clone());
        }
        Ok(done)
    }

    /// Drives `nodes` until each is done, parked, or Ctrl-C; returns their final records.
    pub async fn run(self: &Arc<Self>, nodes: Vec<String>) -> Result<Vec<NodeRecord>, StoreError> {
        let mut tasks = tokio::task::JoinSet::new();
        for name in &nodes {
            let rec = match self.store.load(name)? {
                Some(r) => r,
                None => match self.store.commit(
                    &NodeRecord::new(name, now_ms()),
                    &[History::new(now_ms(), "apply", "transition", "selected by apply: pending")],
                ) {
                    Ok(r) => r,
                    // Another worker on a shared store recorded it first.
                    Err(StoreError::Conflict { .. }) => {
                        self.store.load(name)?.unwrap_or_else(|| NodeRecord::new(name, now_ms()))
                    }
                    Err(e) => return Err(e),
                },
            };
            self.show(&rec);
            let me = Arc::clone(self);
            let name = name.clone();
            tasks.spawn(async move { me.drive(&name).await });
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Err(e)) => warn!("a node's driver stopped: {e}"),
                Err(e) => warn!("a node's driver panicked: {e}"),
                Ok(Ok(())) => {}
            }
        }
        let mut out = vec![];
        for name in &nodes {
            if let Some(r) = self.store.load(name)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.cancel.cancelled() => {}
        }
    }

    /// Drives a node while this worker holds its claim (several workers on a shared store:
    /// one drives each node; one waits while another's claim is live and takes the node over
    /// when it lapses), then gives the claim up. The `--parallel` slot comes first and the
    /// claim second: a worker claims only nodes it can drive now, so one worker never holds
    /// claims on nodes queued behind its own slots while another worker has slots free.
    async fn drive(self: &Arc<Self>, name: &str) -> Result<(), StoreError> {
        // Another worker was seen driving the node: while this worker waits for a slot of its
        // own, the table keeps saying so rather than "queued".
        let mut driven_elsewhere = false;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let Some(rec) = self.store.load(name)? else { return Ok(()) };
            // A node that needs nothing never takes a slot.
            if rec.state.is_final() {
                return Ok(());
            }
            let slot = if let Ok(p) = Arc::clone(&self.global).try_acquire_owned() {
                p
            } else {
                if !driven_elsewhere {
                    let mut r = rec.clone();
                    r.wait = Some(format!(
                        "queued since {}: {} nodes are being driven (--parallel)",
                        hms(now_ms()),
                        self.opts.parallel
                    ));
                    self.show(&r);
                }
                tokio::select! {
                    p = Arc::clone(&self.global).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return Ok(()),
                    },
                    () = self.cancel.cancelled() => return Ok(()),
                }
            };
            // The record may have moved on (another worker) while this task queued.
            let Some(rec) = self.store.load(name)? else { return Ok(()) };
            if rec.state.is_final() {
                return Ok(());
            }
            match self.store.claim(name)? {
                crate::store::Claim::Held => {
                    let r = self.drive_claimed(name).await;
                    // The claim goes before the slot: a queued node of ours may claim only once
                    // this one is given up, so a worker never holds more claims than slots.
                    if let Err(e) = self.store.release(name) {
                        warn!(node = name, "cannot release the claim: {e}");
                    }
                    drop(slot);
                    return r;
                }
                crate::store::Claim::Other { owner, for_ms } => {
                    // Waiting on another worker's claim holds no slot of ours.
                    drop(slot);
                    driven_elsewhere = true;
                    let mut r = rec.clone();
                    r.wait = Some(format!(
                        "driven by {owner}; taken over if its claim lapses (live for {} s)",
                        for_ms / 1000
                    ));
                    self.show(&r);
                    self.sleep(self.opts.poll.max(Duration::from_millis(500))).await;
                }
            }
        }
    }

    /// Drives a claimed node, holding one of this worker's `--parallel` slots, until it is
    /// final, parked, stopped by `--until` or cancelled.
    async fn drive_claimed(self: &Arc<Self>, name: &str) -> Result<(), StoreError> {
        let Some(node) = self.inv.node(name).cloned() else { return Ok(()) };
        let mut d = Driver { verify_power: true, install_permit: None, failures_seen: HashSet::new(), queued: false };
        let mut jitter_seed = name.bytes().fold(now_ms(), |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let Some(rec) = self.store.load(name)? else { return Ok(()) };
            self.show(&rec);
            if rec.state.is_final() {
                return Ok(());
            }
            if let Some(until) = self.opts.until
                && reached(&rec.state, until)
            {
                let mut r = rec.clone();
                r.wait = Some(format!("stopped before {} (--until)", until.name()));
                self.show(&r);
                return Ok(());
            }
            let now = now_ms();
            if let Some(at) = rec.retry_at_ms
                && now < at
            {
                let reason = format!("backing off until {} before attempt {}", hms(at), rec.attempt);
                if rec.wait.as_deref() != Some(reason.as_str()) {
                    let mut r = rec.clone();
                    r.wait = Some(reason);
                    r.updated_ms = now;
                    let r = self.store.commit(&r, &[])?;
                    self.show(&r);
                }
                self.sleep(Duration::from_millis(at - now).min(self.opts.poll)).await;
                continue;
            }
            // The handler runs first: evidence that arrived while apply was down (or just
            // before a deadline) advances the node before any timeout can cycle it again.
            match self.handle(&node, &rec, &mut d).await {
                StepOutcome::Commit(next, mut history) => {
                    // Every transition says from where to where: the timeline's durations.
                    for h in history.iter_mut().filter(|h| h.kind == "transition" && h.detail.is_null()) {
                        h.detail = json!({"from": rec.state.label(), "to": next.state.label()});
                    }
                    for h in history.iter().filter(|h| h.kind == "transition" || h.source == "bmc") {
                        self.say(name, &h.text);
                    }
                    if !matches!(next.state, State::Netboot { .. } | State::Install { .. }) {
                        d.install_permit = None;
                    }
                    let r = self.store.commit(&next, &history)?;
                    self.show(&r);
                }
                StepOutcome::Wait { reason, evidence } => {
                    let reason = format!("{reason} (since {})", hms(rec.entered_ms));
                    let mut r = rec.clone();
                    if rec.wait.as_deref() != Some(reason.as_str())
                        || (evidence.is_some() && rec.last_evidence != evidence)
                    {
                        r.wait = Some(reason);
                        if evidence.is_some() {
                            r.last_evidence = evidence;
                        }
                        r.updated_ms = now_ms();
                        r = self.store.commit(&r, &[])?;
                        self.show(&r);
                    }
                    // A node queued for an install slot is not late: the queue is ours.
                    if !d.queued {
                        jitter_seed =
                            jitter_seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        let jitter = (jitter_seed >> 11) as f64 / (1u64 << 53) as f64;
                        match self.on_clock(&r, jitter, &mut d)? {
                            Tick::Wait => {}
                            Tick::Again => continue,
                            Tick::Stop => return Ok(()),
                        }
                    }
                    self.sleep(self.opts.poll).await;
                }
                StepOutcome::Park(reason) => {
                    let step = rec.state.step().unwrap_or(Step::Preflight);
                    self.park(&rec, step, reason)?;
                    return Ok(());
                }
            }
        }
    }

    /// What the clock says about a waiting node: an SLA warning (once per attempt), a retry
    /// with backoff, or needs-attention.
    fn on_clock(&self, rec: &NodeRecord, jitter: f64, d: &mut Driver) -> Result<Tick, StoreError> {
        let name = rec.node.as_str();
        let now = now_ms();
        match clock(rec, &self.opts.policy, now, jitter) {
            Clock::Fine => Ok(Tick::Wait),
            Clock::SlaMissed { after } => {
                let step = rec.state.step().map_or("?", Step::name);
                let text = format!(
                    "SLA missed: {step} has taken more than {}s; {}",
                    after.as_secs(),
                    rec.wait.as_deref().unwrap_or("no wait reason")
                );
                self.warn(name, &text);
                let mut r = rec.clone();
                r.sla_warned = true;
                r.updated_ms = now;
                let r = self.store.commit(&r, &[History::new(now, "apply", "sla-missed", text)])?;
                self.show(&r);
                Ok(Tick::Wait)
            }
            Clock::Retry { .. }
                if matches!(
                    rec.state,
                    State::Firmware(crate::machine::FwStep::Updating { .. } | crate::machine::FwStep::Resetting { .. })
                ) =>
            {
                // An update still in flight on the BMC: starting it again would flash twice.
                let reason = format!(
                    "firmware update did not finish within {}s: {}; check the BMC's task list, then `metal6 apply --retry {name}`",
                    self.opts.policy.timing(Step::Firmware).timeout.as_secs(),
                    rec.wait.as_deref().unwrap_or("-")
                );
                self.park(rec, Step::Firmware, reason)?;
                Ok(Tick::Stop)
            }
            Clock::Retry { next, at_ms } => {
                let step = rec.state.step().unwrap_or(Step::Netboot);
                let text = format!(
                    "{} timed out after {}s (attempt {} of {}): {}; last evidence: {}; retrying at {}",
                    step.name(),
                    self.opts.policy.timing(step).timeout.as_secs(),
                    rec.attempt,
                    self.opts.policy.attempts,
                    rec.wait.as_deref().unwrap_or("-"),
                    rec.last_evidence.as_deref().unwrap_or("none"),
                    hms(at_ms)
                );
                self.say(name, &text);
                let mut r = rec.enter(restart_from(step, &rec.state), now);
                r.attempt = next;
                r.retry_at_ms = Some(at_ms);
                d.install_permit = None;
                let r = self.store.commit(&r, &[History::new(now, "apply", "retry", text)])?;
                self.show(&r);
                Ok(Tick::Again)
            }
            Clock::GiveUp => {
                let step = rec.state.step().unwrap_or(Step::Netboot);
                let reason = format!(
                    "{} timed out {} times ({}s each); last wait: {}; last evidence: {}",
                    step.name(),
                    rec.attempt,
                    self.opts.policy.timing(step).timeout.as_secs(),
                    rec.wait.as_deref().unwrap_or("-"),
                    rec.last_evidence.as_deref().unwrap_or("none since the step began")
                );
                self.park(rec, step, reason)?;
                Ok(Tick::Stop)
            }
        }
    }

    fn park(&self, rec: &NodeRecord, step: Step, reason: String) -> Result<(), StoreError> {
        let now = now_ms();
        self.warn(&rec.node, &format!("needs attention: {reason}"));
        let mut r = rec.enter(State::NeedsAttention { step, reason: reason.clone() }, now);
        r.attempt = rec.attempt;
        r.wait = Some(format!("needs attention: {reason}"));
        let r = self.store.commit(&r, &[History::new(now, "apply", "needs-attention", reason)])?;
        self.show(&r);
        Ok(())
    }

    async fn handle(&self, node: &Node, rec: &NodeRecord, d: &mut Driver) -> StepOutcome {
        let now = now_ms();
        match &rec.state {
            State::Pending => {
                let h = History::new(now, "apply", "transition", "preflight");
                StepOutcome::Commit(rec.enter(State::Preflight, now), vec![h])
            }
            State::Preflight => self.preflight(node, rec).await,
            // BIOS passes go through the same flow as `metal6 bmc bios apply` (crate::bios).
            State::Firmware(_) => crate::firmware::step(self, node, rec).await,
            State::Bios(_) => crate::bios::step(self, node, rec).await,
            State::Netboot { cycled_ms: None } => self.power_cycle(node, rec, d).await,
            State::Netboot { cycled_ms: Some(c) } => {
                if d.install_permit.is_none() {
                    // Resumed mid-install: count it against the boot server's limit again.
                    d.install_permit = Arc::clone(&self.installs).try_acquire_owned().ok();
                }
                if d.verify_power
                    && let Some(o) = self.verify_power(node, rec, d).await
                {
                    return o;
                }
                self.wait_evidence(node, rec, *c, d).await
            }
            State::Install { since_ms } => {
                if d.install_permit.is_none() {
                    d.install_permit = Arc::clone(&self.installs).try_acquire_owned().ok();
                }
                self.wait_evidence(node, rec, *since_ms, d).await
            }
            State::FirstBoot { since_ms } => self.wait_evidence(node, rec, *since_ms, d).await,
            State::Cluster { since_ms, joins_rendered } => {
                self.cluster_wait(node, rec, (*since_ms, *joins_rendered), d).await
            }
            State::Done { .. } | State::NeedsAttention { .. } => {
                StepOutcome::Wait { reason: "final".into(), evidence: None }
            }
        }
    }

    /// The BMC answers with working credentials, and the server is up.
    async fn preflight(&self, node: &Node, rec: &NodeRecord) -> StepOutcome {
        let now = now_ms();
        if node.bmc.is_none() {
            return StepOutcome::Park(
                "the inventory gives this node no bmc: apply drives nodes through their BMC".into(),
            );
        }
        // The server is needed from the netboot on; `--until netboot` (BIOS only) does without.
        if self.opts.until.is_none_or(|u| u > Step::Netboot) {
            let url = format!("{}v1/nodes", self.opts.server);
            match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    return StepOutcome::Wait {
                        reason: format!("metal6 serve answers {url} with {}", r.status()),
                        evidence: None,
                    };
                }
                Err(e) => {
                    return StepOutcome::Wait {
                        reason: format!("metal6 serve is not reachable at {url}: {e}"),
                        evidence: None,
                    };
                }
            }
        }
        let power = match self.with_bmc(node, async |b: &Bmc| b.power_state().await).await {
            Ok(p) => p,
            Err(BmcError::Fatal(e)) => return StepOutcome::Park(e),
            Err(BmcError::Transient(e)) => return StepOutcome::Wait { reason: e, evidence: None },
        };
        let next = if crate::firmware::baseline(&self.inv, node).is_some() {
            State::Firmware(crate::machine::FwStep::Plan { just_updated: None })
        } else {
            crate::firmware::after(&self.inv, node)
        };
        let mut h = History::new(now, "bmc", "preflight", format!("BMC answers, power {power}"));
        h.detail = json!({"power": power});
        let t = History::new(now, "apply", "transition", format!("preflight passed: {}", next.label()));
        StepOutcome::Commit(rec.enter(next, now), vec![h, t])
    }

    /// Sets the one-time network boot, commits the moment, then powers the node on or cycles it.
    async fn power_cycle(&self, node: &Node, rec: &NodeRecord, d: &mut Driver) -> StepOutcome {
        if d.install_permit.is_none() {
            match Arc::clone(&self.installs).try_acquire_owned() {
                Ok(p) => {
                    d.install_permit = Some(p);
                    d.queued = false;
                }
                Err(_) => {
                    let p = tokio::select! {
                        p = Arc::clone(&self.installs).acquire_owned() => p.ok(),
                        () = tokio::time::sleep(self.opts.poll) => None,
                        () = self.cancel.cancelled() => None,
                    };
                    match p {
                        Some(p) => {
                            d.install_permit = Some(p);
                            d.queued = false;
                        }
                        None => {
                            d.queued = true;
                            return StepOutcome::Wait {
                                reason: format!(
                                    "queued: {} installs run on the boot server (--installs)",
                                    self.opts.installs
                                ),
                                evidence: None,
                            };
                        }
                    }
                }
            }
        }
        let target = match self.inv.profile_of(node).boot {
            BootMethod::Pxe => BootTarget::Pxe,
            BootMethod::UefiHttp | BootMethod::Ipxe | BootMethod::DhcpLessHttp => BootTarget::UefiHttp,
        };
        let target_name = match target {
            BootTarget::Pxe => "PXE",
            _ => "UEFI HTTP",
        };
        if let Err(e) = self.with_bmc(node, async |b: &Bmc| b.boot_once(target).await).await {
            return bmc_wait(e, "setting the one-time boot");
        }
        // Past this point the power call follows its commit: Ctrl-C must come before both.
        if self.cancel.is_cancelled() {
            return StepOutcome::Wait { reason: "interrupted".into(), evidence: None };
        }
        // The moment is committed before the power call: evidence must be newer than it, and
        // a restart that finds it set re-reads the power state instead of cycling again.
        let cycled = now_ms();
        let mut r = rec.clone();
        r.state = State::Netboot { cycled_ms: Some(cycled) };
        r.entered_ms = cycled;
        r.updated_ms = cycled;
        r.wait = Some(format!("power {} requested", hms(cycled)));
        let h = History::new(cycled, "bmc", "boot-override", format!("one-time {target_name} boot set"));
        let r = match self.store.commit(&r, &[h]) {
            Ok(r) => r,
            Err(e) => {
                return StepOutcome::Wait { reason: format!("cannot persist the power cycle: {e}"), evidence: None };
            }
        };
        self.show(&r);
        let result = self
            .with_bmc(node, async |b: &Bmc| {
                let before = b.power_state().await?;
                let action = if before == "Off" { PowerAction::On } else { PowerAction::Cycle };
                b.power(action, Duration::ZERO).await?;
                Ok(before)
            })
            .await;
        let now = now_ms();
        match result {
            Ok(before) => {
                let what = if before == "Off" { "powered on" } else { "power-cycled" };
                let mut h =
                    History::new(now, "bmc", "power", format!("{what} (was {before}) to netboot over {target_name}"));
                h.detail = json!({"before": before, "attempt": r.attempt});
                let mut next = r.clone();
                next.wait = Some(format!("waiting for the firmware's DHCPv6 exchange (since {})", hms(cycled)));
                d.verify_power = false;
                StepOutcome::Commit(next, vec![h])
            }
            Err(e) => {
                // The call's outcome is unknown: read the power state before doing anything else.
                d.verify_power = true;
                let msg = match e {
                    BmcError::Fatal(m) | BmcError::Transient(m) => m,
                };
                let h = History::new(now, "bmc", "power-failed", format!("power call failed, outcome unknown: {msg}"));
                let mut next = r.clone();
                next.wait = Some("power call failed: re-reading the power state".into());
                StepOutcome::Commit(next, vec![h])
            }
        }
    }

    /// After a restart (or a failed power call): a committed cycle the BMC shows as Off never
    /// happened; power on now. On means it did (or the node was on): wait for evidence.
    async fn verify_power(&self, node: &Node, rec: &NodeRecord, d: &mut Driver) -> Option<StepOutcome> {
        let power = match self.with_bmc(node, async |b: &Bmc| b.power_state().await).await {
            Ok(p) => p,
            Err(e) => return Some(bmc_wait(e, "re-reading the power state")),
        };
        if power != "Off" {
            d.verify_power = false;
            return None;
        }
        if self.cancel.is_cancelled() {
            return Some(StepOutcome::Wait { reason: "interrupted".into(), evidence: None });
        }
        // A new moment, committed before the call like the first one: the evidence and the
        // clock start from this power-on, not from the lost one.
        let now = now_ms();
        let mut moment = rec.clone();
        moment.state = State::Netboot { cycled_ms: Some(now) };
        moment.entered_ms = now;
        moment.sla_warned = false;
        moment.updated_ms = now;
        let moment = match self.commit_now(&moment) {
            Ok(r) => r,
            Err(reason) => return Some(StepOutcome::Wait { reason, evidence: None }),
        };
        let h = match self.with_bmc(node, async |b: &Bmc| b.power(PowerAction::On, Duration::ZERO).await).await {
            Ok(_) => {
                d.verify_power = false;
                History::new(
                    now_ms(),
                    "bmc",
                    "power",
                    "powered on: the committed power cycle had not happened (the node was off)".to_owned(),
                )
            }
            Err(BmcError::Fatal(m) | BmcError::Transient(m)) => {
                History::new(now_ms(), "bmc", "power-failed", format!("power-on failed, outcome unknown: {m}"))
            }
        };
        Some(StepOutcome::Commit(moment, vec![h]))
    }

    async fn wait_evidence(&self, node: &Node, rec: &NodeRecord, since: u64, d: &mut Driver) -> StepOutcome {
        let url = format!("{}v1/nodes/{}/timeline?since_ms={since}", self.opts.server, node.name);
        let events: Vec<Value> = match self.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(v) => v,
                Err(e) => return StepOutcome::Wait { reason: format!("reading {url}: {e}"), evidence: None },
            },
            Ok(r) => return StepOutcome::Wait { reason: format!("{url}: {}", r.status()), evidence: None },
            Err(e) => return StepOutcome::Wait { reason: format!("metal6 serve not reachable: {e}"), evidence: None },
        };
        let p = progress(&events, since);
        // A node that does not trust the server's certificate stops there on every attempt.
        if let Some((_, why)) = &p.untrusted {
            return StepOutcome::Park(why.clone());
        }
        let evidence = p.last.as_ref().map(|(t, s)| format!("{s} at {}", hms(*t)));
        let now = now_ms();
        let mut history = vec![];
        for (ts, err) in &p.failures {
            if d.failures_seen.insert(*ts) {
                history.push(History::new(*ts, "node", "installer-failed", format!("installer reported: {err}")));
            }
        }
        match advance(&rec.state, &p) {
            Some(Advance::To(state, why)) => {
                let state = match state {
                    State::Done { ready_ms } if self.cluster_mode() => {
                        State::Cluster { since_ms: ready_ms, joins_rendered: false }
                    }
                    other => other,
                };
                let at = match &state {
                    State::Install { since_ms } | State::FirstBoot { since_ms } | State::Cluster { since_ms, .. } => {
                        *since_ms
                    }
                    State::Done { ready_ms } => *ready_ms,
                    _ => now,
                };
                let mut next = rec.enter(state, at.max(rec.entered_ms));
                next.last_evidence = evidence.or_else(|| rec.last_evidence.clone());
                let mut h = History::new(now, "apply", "transition", format!("{why}: {}", next.state.label()));
                h.detail = json!({"from": rec.state.label(), "to": next.state.label(), "evidence_ms": at});
                history.push(h);
                StepOutcome::Commit(next, history)
            }
            Some(Advance::Wait(reason)) if history.is_empty() => StepOutcome::Wait { reason, evidence },
            Some(Advance::Wait(_)) => {
                let mut r = rec.clone();
                r.last_evidence = evidence;
                StepOutcome::Commit(r, history)
            }
            None => StepOutcome::Wait { reason: "nothing to wait for".into(), evidence },
        }
    }

    /// The cluster step runs: an inventory `cluster` and a directory to render into.
    pub fn cluster_mode(&self) -> bool {
        self.opts.cluster_dir.is_some() && self.inv.cluster.is_some()
    }

    /// Before `run` in cluster mode: the init and per-node files (the join files follow the
    /// first control plane's report).
    pub fn prepare_cluster(&self) -> Result<Vec<crate::cluster::Written>, crate::cluster::ClusterError> {
        match &self.opts.cluster_dir {
            Some(dir) if self.inv.cluster.is_some() => crate::cluster::render_into(&self.inv, dir, None),
            _ => Ok(vec![]),
        }
    }

    /// Waits for the node's `cluster-joined`; the first control plane's carries the CA hash,
    /// and the join files are rendered from it before that node counts as done.
    async fn cluster_wait(
        &self,
        node: &Node,
        rec: &NodeRecord,
        (since, joins_rendered): (u64, bool),
        d: &mut Driver,
    ) -> StepOutcome {
        let url = format!("{}v1/nodes/{}/timeline?since_ms={since}", self.opts.server, node.name);
        let events: Vec<Value> = match self.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
            Ok(r) => return StepOutcome::Wait { reason: format!("{url}: {}", r.status()), evidence: None },
            Err(e) => return StepOutcome::Wait { reason: format!("metal6 serve not reachable: {e}"), evidence: None },
        };
        let p = crate::machine::cluster_progress(&events, since);
        let now = now_ms();
        let mut history = vec![];
        for (ts, why) in &p.failures {
            if d.failures_seen.insert(*ts) {
                history.push(History::new(*ts, "node", "cluster-failed", format!("kubeadm failed: {why}")));
            }
        }
        let first = crate::cluster::first_control_plane(&self.inv).is_some_and(|cp| cp.name == node.name);
        let Some(dir) = &self.opts.cluster_dir else { return StepOutcome::Park("no --cluster-dir".into()) };
        if let Some((ts, mode, hash)) = p.joined {
            if first && joins_rendered {
                // The workload comes from the same node, after its init.
                return match p.workload {
                    Some((wts, phase, detail)) if phase != "workload-failed" => {
                        let mut next = rec.enter(State::Done { ready_ms: wts }, wts.max(rec.entered_ms));
                        next.last_evidence = Some(format!("{phase}: {detail} at {}", hms(wts)));
                        let text = format!("{phase}: {detail}: done");
                        history.push(History::new(now, "apply", "transition", text));
                        StepOutcome::Commit(next, history)
                    }
                    Some((_, _, detail)) => StepOutcome::Park(format!(
                        "the workload failed on the first control plane: {detail} (re-run `metal6-installer cluster` there, or apply it by hand)"
                    )),
                    None => StepOutcome::Wait {
                        reason: "waiting for the workload (Multus, NADs) on the first control plane".into(),
                        evidence: Some(format!("cluster-joined ({mode}) at {}", hms(ts))),
                    },
                };
            }
            if first {
                let Some(hash) = hash else {
                    return StepOutcome::Park(format!(
                        "kubeadm {mode} succeeded but the report carries no CA hash: the join files cannot be rendered"
                    ));
                };
                let (inv, dir2, h) = (Arc::clone(&self.inv), dir.clone(), hash.clone());
                match tokio::task::spawn_blocking(move || crate::cluster::render_into(&inv, &dir2, Some(&h))).await {
                    Ok(Ok(w)) => {
                        let joins = w.iter().filter(|f| f.path.ends_with("kubeadm-join.yaml")).count();
                        let mut h = History::new(
                            now,
                            "apply",
                            "cluster-rendered",
                            format!("{joins} join file(s) rendered with the CA hash {hash}"),
                        );
                        h.detail = json!({"ca_cert_hash": hash, "files": w.len()});
                        history.push(h);
                    }
                    Ok(Err(e)) => {
                        return StepOutcome::Wait { reason: format!("rendering the join files: {e}"), evidence: None };
                    }
                    Err(e) => {
                        return StepOutcome::Wait { reason: format!("rendering the join files: {e}"), evidence: None };
                    }
                }
                let mut next = rec.clone();
                next.state = State::Cluster { since_ms: since, joins_rendered: true };
                next.last_evidence = Some(format!("cluster-joined ({mode}) at {}", hms(ts)));
                next.updated_ms = now;
                return StepOutcome::Commit(next, history);
            }
            let mut next = rec.enter(State::Done { ready_ms: ts }, ts.max(rec.entered_ms));
            next.last_evidence = Some(format!("cluster-joined ({mode}) at {}", hms(ts)));
            history.push(History::new(now, "apply", "transition", format!("kubeadm {mode} done: done")));
            return StepOutcome::Commit(next, history);
        }
        let reason = if first {
            "waiting for kubeadm init on the first control plane".to_owned()
        } else if dir.join("nodes").join(&node.name).join("kubeadm-join.yaml").exists() {
            "waiting for kubeadm join".to_owned()
        } else {
            "waiting for the first control plane's CA hash (no join file yet)".to_owned()
        };
        let evidence = p.waiting.map(|w| format!("the node reports: {w}"));
        if history.is_empty() {
            return StepOutcome::Wait { reason, evidence };
        }
        let mut r = rec.clone();
        r.last_evidence = evidence.or_else(|| rec.last_evidence.clone());
        StepOutcome::Commit(r, history)
    }

    fn bmc_slot(&self, url: &str) -> (Arc<Semaphore>, Arc<BmcLoad>) {
        let mut bmcs = self.bmcs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bmcs.entry(url.to_owned())
            .or_insert_with(|| (Arc::new(Semaphore::new(self.opts.per_bmc.max(1))), Arc::new(BmcLoad::default())))
            .clone()
    }

    /// One session with the node's BMC: waits for a call slot on that BMC, connects, runs
    /// `f`, logs out. The password is resolved here, used, and dropped.
    pub(crate) async fn with_bmc<T>(
        &self,
        node: &Node,
        f: impl AsyncFnOnce(&Bmc) -> Result<T, RedfishError>,
    ) -> Result<T, BmcError> {
        let Some(b) = &node.bmc else { return Err(BmcError::Fatal("no bmc in the inventory".into())) };
        let password =
            b.password.resolve().map_err(|e| BmcError::Fatal(format!("the BMC password of {}: {e}", node.name)))?;
        let url = b.redfish_url();
        let (sem, load) = self.bmc_slot(&url);
        // Not cancellable: a call that follows a commit must happen (Ctrl-C is checked before
        // the commits); the wait is bounded by the other calls on this BMC.
        let _permit = sem.acquire_owned().await.map_err(|_| BmcError::Transient("shutting down".into()))?;
        // Several workers on a shared store: act on a node only while holding its claim
        // (renewed here for a whole lease, longer than a call). A worker that stalled past its
        // lease finds the node taken over and does nothing.
        match self.store.claim(&node.name) {
            Ok(crate::store::Claim::Held) => {}
            Ok(crate::store::Claim::Other { owner, .. }) => {
                return Err(BmcError::Fatal(format!(
                    "{owner} drives {} now (this worker's claim lapsed): no BMC call",
                    node.name
                )));
            }
            Err(e) => return Err(BmcError::Transient(format!("cannot check the node's claim: {e}"))),
        }
        let n = load.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        load.peak.fetch_max(n, Ordering::SeqCst);
        let mut opts = ConnectOptions::for_bmc(b, password);
        opts.ca_file = self.opts.ca_file.clone();
        opts.insecure = self.opts.insecure;
        opts.timeout = self.opts.bmc_timeout;
        opts.retries = 2;
        let r = match Bmc::connect(opts).await {
            Ok(bmc) => {
                let r = f(&bmc).await;
                bmc.logout().await;
                r.map_err(|e| classify(&url, &e))
            }
            Err(e) => Err(classify(&url, &e)),
        };
        load.in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Commits `next` (the state that records the reset), then resets the host so a job or
    /// update waiting for it runs: On when off, else ForceRestart. The commit comes first, so
    /// a restart polls instead of resetting twice; a failed reset is recorded with its outcome
    /// unknown (the poll tells). `what` names the reason in the history.
    pub(crate) async fn commit_then_reset(&self, node: &Node, next: &NodeRecord, what: &str) -> StepOutcome {
        let committed = match self.commit_now(next) {
            Ok(r) => r,
            Err(reason) => return StepOutcome::Wait { reason, evidence: None },
        };
        let r = self
            .with_bmc(node, async |b: &Bmc| {
                let kind = if b.power_state().await? == "Off" { "On" } else { "ForceRestart" };
                b.reset(kind).await?;
                Ok(kind)
            })
            .await;
        let now = now_ms();
        let h = match r {
            Ok(kind) => History::new(now, "bmc", "power", format!("reset ({kind}) to {what}")),
            Err(BmcError::Fatal(m) | BmcError::Transient(m)) => History::new(
                now,
                "bmc",
                "power-failed",
                format!("reset to {what} failed, outcome unknown (it is polled): {m}"),
            ),
        };
        StepOutcome::Commit(committed, vec![h])
    }

    /// Commits a record at once (a step that must persist before it acts).
    pub(crate) fn commit_now(&self, rec: &NodeRecord) -> Result<NodeRecord, String> {
        let r = self.store.commit(rec, &[]).map_err(|e| format!("cannot persist: {e}"))?;
        self.show(&r);
        Ok(r)
    }

    /// Progress lines on stderr (off when the caller draws a table).
    pub fn set_lines(&mut self, on: bool) {
        self.opts.lines = on;
    }

    /// The node stopped where `--until` asked.
    pub fn stopped(&self, rec: &NodeRecord) -> bool {
        self.opts.until.is_some_and(|u| reached(&rec.state, u))
    }

    pub fn per_bmc(&self) -> usize {
        self.opts.per_bmc
    }

    /// Before `run`: nodes the plan says to reinstall start over from `pending`; nodes that
    /// report ready with the current image but have no record are recorded as done.
    pub fn prepare(&self, plans: &[crate::plan::NodePlan]) -> Result<(), StoreError> {
        let now = now_ms();
        for p in plans {
            let rec = self.store.load(&p.node)?;
            let written = if let Some(why) = p.actions.iter().find(|a| a.step == "reinstall") {
                match rec {
                    Some(rec) => {
                        let next = rec.enter(State::Pending, now);
                        self.store
                            .commit(
                                &next,
                                &[History::new(now, "apply", "transition", format!("reinstall: {}", why.why))],
                            )
                            .map(|_| ())
                    }
                    None => Ok(()),
                }
            } else if p.nothing_to_do() && rec.is_none() {
                let next = NodeRecord::new(&p.node, now).enter(State::Done { ready_ms: now }, now);
                self.store
                    .commit(
                        &next,
                        &[History::new(now, "apply", "transition", "found ready with the current image: done")],
                    )
                    .map(|_| ())
            } else {
                Ok(())
            };
            match written {
                // Another worker on a shared store wrote or drives it: its record stands.
                Ok(()) | Err(StoreError::Conflict { .. } | StoreError::NotOwner { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// The server's phase for a node and the image digest its installer last wrote.
    pub(crate) async fn served(&self, node: &str) -> (Option<String>, Option<String>) {
        let url = format!("{}v1/nodes/{node}/timeline", self.opts.server);
        let Ok(r) = self.http.get(&url).send().await else { return (None, None) };
        let Ok(events) = r.json::<Vec<Value>>().await else { return (None, None) };
        let mut phase = None;
        let mut sha = None;
        for e in &events {
            if let Some(p) = e.get("phase").and_then(Value::as_str) {
                phase = Some(p.to_owned());
                if p == "image-written" {
                    sha = e.get("sha256").and_then(Value::as_str).map(str::to_owned);
                }
            }
        }
        (phase, sha)
    }

    /// The digest of an image's disk in the artifacts, from its manifest on the server.
    pub(crate) async fn artifact_sha(&self, image: &str) -> Option<String> {
        let url = format!("{}images/{image}/manifest.json", self.opts.server);
        let m: Value = self.http.get(&url).send().await.ok()?.json().await.ok()?;
        m.get("outputs")?
            .as_array()?
            .iter()
            .find(|o| o.get("path").and_then(Value::as_str).is_some_and(|p| p.ends_with("disk.raw")))?
            .get("sha256")?
            .as_str()
            .map(str::to_owned)
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }
}

#[derive(Debug)]
pub(crate) enum BmcError {
    /// Worth waiting and retrying (unreachable, busy, 5xx).
    Transient(String),
    /// No retry helps (credentials refused, the resource missing).
    Fatal(String),
}

fn classify(url: &str, e: &RedfishError) -> BmcError {
    let text = format!("BMC {url}: {e}");
    match e.status() {
        Some(401 | 403) => BmcError::Fatal(format!("{text} (check the bmc username and password reference)")),
        _ => BmcError::Transient(text),
    }
}

fn bmc_wait(e: BmcError, doing: &str) -> StepOutcome {
    StepOutcome::from_bmc(e, doing)
}

impl StepOutcome {
    pub(crate) fn from_bmc(e: BmcError, doing: &str) -> StepOutcome {
        match e {
            BmcError::Fatal(m) => StepOutcome::Park(format!("{doing}: {m}")),
            BmcError::Transient(m) => StepOutcome::Wait { reason: format!("{doing}: {m}"), evidence: None },
        }
    }
}

/// One step of one node with a reset, as `metal6 bmc bios apply --reboot` and `metal6 bmc
/// firmware apply --reboot` run it: the same state machine and code as `apply`, in a store of
/// its own in memory (those commands are one-shot tools: nothing persists), started at the
/// step and stopped when the node leaves it, one attempt (a timeout or a refusal parks it).
/// Returns the final record and its history.
pub async fn one_step(
    inv: Arc<Inventory>,
    node: &str,
    step: Step,
    mut opts: Options,
) -> Result<(NodeRecord, Vec<History>), StoreError> {
    let store: Arc<dyn Store> = Arc::new(crate::store::SqliteStore::open(std::path::Path::new(":memory:"))?);
    opts.until = Some(match step {
        Step::Firmware => Step::Bios,
        _ => Step::Netboot,
    });
    opts.policy.attempts = 1;
    let now = now_ms();
    let rec = NodeRecord::new(node, now).enter(restart_state(step), now);
    store.commit(&rec, &[History::new(now, "apply", "transition", format!("{} only", step.name()))])?;
    let apply = Arc::new(Apply::new(inv, Arc::clone(&store), opts).map_err(|e| StoreError::Io(e.to_string()))?);
    let records = apply.run(vec![node.to_owned()]).await?;
    let rec = records.into_iter().next().unwrap_or(rec);
    Ok((rec, store.history(node)?))
}

/// Where a step starts over on a retry, from the state it was in (a cluster wait keeps its
/// start: evidence older than the node's ready belongs to an earlier install).
pub fn restart_from(step: Step, current: &State) -> State {
    match (step, current) {
        (Step::Cluster, State::Cluster { since_ms, .. }) => {
            State::Cluster { since_ms: *since_ms, joins_rendered: false }
        }
        _ => restart_state(step),
    }
}

/// Where a step starts over on a retry.
pub fn restart_state(step: Step) -> State {
    match step {
        Step::Preflight => State::Preflight,
        Step::Firmware => State::Firmware(crate::machine::FwStep::Plan { just_updated: None }),
        Step::Bios => State::Bios(crate::machine::BiosStep::Plan { pass: 1 }),
        Step::Netboot | Step::Install | Step::FirstBoot => State::Netboot { cycled_ms: None },
        // The node's cluster unit retries kubeadm by itself: a retry waits again (its whole
        // timeline counts: the report may have come while apply waited to retry).
        Step::Cluster => State::Cluster { since_ms: 0, joins_rendered: false },
    }
}
