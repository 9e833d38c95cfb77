//! The per-node state machine, as data and pure decisions: what state a node is in, what the
//! evidence from `metal6 serve` says happened since a state was entered, and what a timeout
//! does. No I/O here; `apply` does the calls and persists what these functions return.
//!
//! Architecture Invariant: a wait advances only on evidence newer than the moment the state
//! was entered (or the power cycle was committed). "The BMC accepted the reset" is never
//! evidence; a DHCPv6 exchange, a boot fetch or an installer phase seen by the server is.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a node is. Recovery facts (a Dell job id, when a power cycle was committed) live in
/// the variant that needs them, so a restarted `apply` knows what it already did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum State {
    /// Selected, nothing done yet.
    Pending,
    /// The BMC answers with working credentials and the server is up.
    Preflight,
    /// Firmware to the node's baseline through the BMC, one component at a time.
    Firmware(FwStep),
    /// BIOS attributes through the BMC (Dell: a configuration job and a reboot).
    Bios(BiosStep),
    /// A one-time network boot is set and the node powered on or cycled at `cycled_ms`; waits
    /// for the firmware's DHCPv6 exchange, its boot fetch and the installer's first phase.
    /// `cycled_ms` is committed *before* the power call, so a crash right after it is
    /// resolved by reading the power state, never by a second cycle.
    Netboot { cycled_ms: Option<u64> },
    /// The installer runs: waits for `installed`.
    Install { since_ms: u64 },
    /// The installed system boots from disk: waits for `ready`.
    FirstBoot { since_ms: u64 },
    /// The node's cluster unit runs kubeadm: waits for `cluster-joined` (with `apply
    /// --cluster-dir`; the first control plane's report carries the CA hash for the joins).
    Cluster {
        since_ms: u64,
        /// The first control plane only: the join files were rendered from its CA hash; it
        /// now waits for its workload (Multus, the constellation's NADs).
        #[serde(default)]
        joins_rendered: bool,
    },
    /// Installed and ready.
    Done { ready_ms: u64 },
    /// Out of attempts or refused: an operator looks (`apply --retry NODE` resumes).
    NeedsAttention { step: Step, reason: String },
}

/// A firmware update, in sub-states that keep the task id across a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "sub", rename_all = "kebab-case")]
pub enum FwStep {
    /// Read the inventory, start the next component's update. `just_updated`: the component
    /// whose update completed last; still behind means the update did not take (park, do not
    /// flash it again).
    Plan {
        #[serde(default)]
        just_updated: Option<String>,
    },
    /// `SimpleUpdate` accepted: its task is polled.
    Updating { component: String, task: String },
    /// The update waits for a host reset, which was requested at `reset_ms` (committed first).
    Resetting { component: String, task: String, reset_ms: u64 },
}

/// The Dell BIOS job, in the sub-states the anchors converge on (notes: orchestration §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "sub", rename_all = "kebab-case")]
pub enum BiosStep {
    /// Read the attributes, plan, stage the next pass.
    Plan { pass: u32 },
    /// A pass is staged and its job exists: the id is kept so a restart polls it.
    Staged {
        pass: u32,
        job: Option<String>,
        /// The pass's attributes: verified from /Bios once the job is done.
        #[serde(default)]
        attrs: Vec<String>,
    },
    /// The host was reset to run the job at `reset_ms` (committed before the reset call).
    Running {
        pass: u32,
        job: Option<String>,
        reset_ms: u64,
        #[serde(default)]
        attrs: Vec<String>,
    },
}

/// The steps, for timeouts, attempt budgets and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Preflight,
    Firmware,
    Bios,
    Netboot,
    Install,
    FirstBoot,
    Cluster,
}

impl Step {
    pub const ALL: [Step; 7] =
        [Step::Preflight, Step::Firmware, Step::Bios, Step::Netboot, Step::Install, Step::FirstBoot, Step::Cluster];

    pub fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Firmware => "firmware",
            Step::Bios => "bios",
            Step::Netboot => "netboot",
            Step::Install => "install",
            Step::FirstBoot => "first-boot",
            Step::Cluster => "cluster",
        }
    }

    /// Steps that share one attempt budget: a retry of install or first-boot starts over at
    /// netboot (a power cycle), so the three count as one boot attempt.
    pub fn budget(self) -> Step {
        match self {
            Step::Netboot | Step::Install | Step::FirstBoot => Step::Netboot,
            other => other,
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|st| st.name() == s)
    }
}

impl State {
    pub fn step(&self) -> Option<Step> {
        match self {
            State::Pending | State::Done { .. } => None,
            State::Preflight => Some(Step::Preflight),
            State::Firmware(_) => Some(Step::Firmware),
            State::Bios(_) => Some(Step::Bios),
            State::Netboot { .. } => Some(Step::Netboot),
            State::Install { .. } => Some(Step::Install),
            State::FirstBoot { .. } => Some(Step::FirstBoot),
            State::Cluster { .. } => Some(Step::Cluster),
            State::NeedsAttention { step, .. } => Some(*step),
        }
    }

    /// Short name for tables: `netboot`, `bios/running`, `needs-attention`.
    pub fn label(&self) -> String {
        match self {
            State::Pending => "pending".into(),
            State::Preflight => "preflight".into(),
            State::Firmware(FwStep::Plan { .. }) => "firmware/plan".into(),
            State::Firmware(FwStep::Updating { .. }) => "firmware/updating".into(),
            State::Firmware(FwStep::Resetting { .. }) => "firmware/resetting".into(),
            State::Bios(BiosStep::Plan { .. }) => "bios/plan".into(),
            State::Bios(BiosStep::Staged { .. }) => "bios/staged".into(),
            State::Bios(BiosStep::Running { .. }) => "bios/running".into(),
            State::Netboot { .. } => "netboot".into(),
            State::Install { .. } => "install".into(),
            State::FirstBoot { .. } => "first-boot".into(),
            State::Cluster { .. } => "cluster".into(),
            State::Done { .. } => "done".into(),
            State::NeedsAttention { .. } => "needs-attention".into(),
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self, State::Done { .. } | State::NeedsAttention { .. })
    }
}

/// One node's persisted record. `generation` grows by one with every commit; a store refuses a
/// commit that is not based on the generation it holds (a second writer is fenced off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: String,
    pub generation: u64,
    pub state: State,
    /// When the current state was entered; evidence must be newer.
    pub entered_ms: u64,
    /// Attempt of the current step, from 1.
    pub attempt: u32,
    /// Backoff: nothing is started before this.
    pub retry_at_ms: Option<u64>,
    /// The step's SLA has been reported as missed.
    pub sla_warned: bool,
    /// What the node waits for and since when, as a person reads it.
    pub wait: Option<String>,
    /// The newest evidence seen, as a person reads it.
    pub last_evidence: Option<String>,
    pub updated_ms: u64,
}

impl NodeRecord {
    pub fn new(node: &str, now_ms: u64) -> NodeRecord {
        NodeRecord {
            node: node.to_owned(),
            generation: 0,
            state: State::Pending,
            entered_ms: now_ms,
            attempt: 1,
            retry_at_ms: None,
            sla_warned: false,
            wait: None,
            last_evidence: None,
            updated_ms: now_ms,
        }
    }

    /// The record in a new state: a new step starts at attempt 1, the same step keeps counting.
    pub fn enter(&self, state: State, now_ms: u64) -> NodeRecord {
        let budget = |s: &State| s.step().map(Step::budget);
        let same_step = budget(&self.state).is_some() && budget(&self.state) == budget(&state);
        NodeRecord {
            node: self.node.clone(),
            generation: self.generation,
            state,
            entered_ms: now_ms,
            attempt: if same_step { self.attempt } else { 1 },
            retry_at_ms: None,
            sla_warned: false,
            wait: None,
            last_evidence: self.last_evidence.clone(),
            updated_ms: now_ms,
        }
    }
}

/// What the server saw of one node since a moment, from its timeline events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Firmware DHCPv6 (a lease with a `firmware-*` stage).
    pub firmware_dhcp: Option<u64>,
    /// The installer (or iPXE) fetched by the firmware, over HTTP or TFTP.
    pub boot_fetch: Option<u64>,
    /// The installer's first report.
    pub installer: Option<u64>,
    pub image_written: Option<(u64, Option<String>)>,
    pub installed: Option<u64>,
    pub ready: Option<u64>,
    /// The installer reported a failure (it retries by itself; counted).
    pub failures: Vec<(u64, String)>,
    /// The node refused the boot server's TLS certificate (`tls-rejected`): no retry helps.
    pub untrusted: Option<(u64, String)>,
    /// The newest event, described.
    pub last: Option<(u64, String)>,
}

fn str_of<'a>(e: &'a Value, k: &str) -> Option<&'a str> {
    e.get(k).and_then(Value::as_str)
}

/// One event as a person reads it: `leased fd00:6d:1::100 (firmware-http)`.
pub fn describe(e: &Value) -> String {
    let kind = str_of(e, "kind").unwrap_or("event");
    match kind {
        "leased" => format!(
            "DHCPv6 lease {} ({})",
            str_of(e, "addr").unwrap_or("?"),
            str_of(e, "stage").unwrap_or(str_of(e, "msg").unwrap_or("?"))
        ),
        "boot-fetch" => {
            format!("fetched {} over {}", str_of(e, "path").unwrap_or("?"), str_of(e, "source").unwrap_or("?"))
        }
        "phase" => format!("reported {}", str_of(e, "phase").unwrap_or("?")),
        "progress" => format!("image {}%", e.get("percent").and_then(Value::as_u64).unwrap_or(0)),
        "document" => format!("fetched its {}", str_of(e, "document").unwrap_or("?")),
        other => other.to_owned(),
    }
}

/// Classifies the events newer than `since_ms` (the server's `ts_ms`).
pub fn progress(events: &[Value], since_ms: u64) -> Progress {
    let mut p = Progress::default();
    for e in events {
        let Some(ts) = e.get("ts_ms").and_then(Value::as_u64) else { continue };
        if ts < since_ms {
            continue;
        }
        if p.last.as_ref().is_none_or(|(t, _)| ts >= *t) {
            p.last = Some((ts, describe(e)));
        }
        let first = |slot: &mut Option<u64>| {
            if slot.is_none() {
                *slot = Some(ts);
            }
        };
        match (str_of(e, "kind"), str_of(e, "phase")) {
            (Some("leased"), _) if str_of(e, "stage").is_some_and(|s| s.starts_with("firmware")) => {
                first(&mut p.firmware_dhcp);
            }
            (Some("boot-fetch"), _)
                if str_of(e, "path").is_some_and(|path| path.ends_with(".efi") || path.ends_with("ipxe")) =>
            {
                first(&mut p.boot_fetch);
            }
            (Some("phase"), Some("installer" | "writing-image" | "configured")) => first(&mut p.installer),
            (Some("phase"), Some("image-written")) => {
                first(&mut p.installer);
                if p.image_written.is_none() {
                    p.image_written = Some((ts, str_of(e, "sha256").map(str::to_owned)));
                }
            }
            (Some("phase"), Some("installed")) => {
                first(&mut p.installer);
                first(&mut p.installed);
            }
            (Some("phase"), Some("ready")) => first(&mut p.ready),
            (Some("phase"), Some("failed")) => {
                p.failures.push((ts, str_of(e, "error").unwrap_or("no reason given").to_owned()));
            }
            (Some("tls-rejected"), _) if p.untrusted.is_none() => {
                p.untrusted =
                    Some((ts, str_of(e, "error").unwrap_or("the node rejected the TLS certificate").to_owned()));
            }
            _ => {}
        }
    }
    p
}

/// A node's cluster step as its reports say since a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterProgress {
    /// `cluster-joined`: when, `init` or `join`, and the CA hash an init reports.
    pub joined: Option<(u64, String, Option<String>)>,
    /// `cluster-failed` reports (the unit retries by itself).
    pub failures: Vec<(u64, String)>,
    /// The newest `cluster-waiting` reason.
    pub waiting: Option<String>,
    /// The workload's outcome on the first control plane: `workload-applied`,
    /// `workload-skipped` or `workload-failed`, with what it said.
    pub workload: Option<(u64, String, String)>,
}

pub fn cluster_progress(events: &[Value], since_ms: u64) -> ClusterProgress {
    let mut p = ClusterProgress::default();
    for e in events {
        let Some(ts) = e.get("ts_ms").and_then(Value::as_u64) else { continue };
        if ts < since_ms {
            continue;
        }
        match str_of(e, "phase") {
            Some("cluster-joined") if p.joined.is_none() => {
                let mode = str_of(e, "mode").unwrap_or("?").to_owned();
                p.joined = Some((ts, mode, str_of(e, "ca_cert_hash").map(str::to_owned)));
            }
            Some("cluster-failed") => {
                let why = str_of(e, "stderr").or_else(|| str_of(e, "reason")).unwrap_or("no reason given");
                p.failures.push((ts, why.lines().last().unwrap_or(why).to_owned()));
            }
            Some("cluster-waiting") => p.waiting = str_of(e, "reason").map(str::to_owned),
            Some(phase @ ("workload-applied" | "workload-skipped" | "workload-failed")) => {
                let detail = match phase {
                    "workload-applied" => format!(
                        "{} applied ({} objects)",
                        e.get("files")
                            .and_then(Value::as_array)
                            .map(|f| f.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default(),
                        e.get("objects").and_then(Value::as_u64).unwrap_or(0)
                    ),
                    _ => str_of(e, "stderr").or_else(|| str_of(e, "reason")).unwrap_or("no reason given").to_owned(),
                };
                p.workload = Some((ts, phase.to_owned(), detail));
            }
            _ => {}
        }
    }
    p
}

/// What the evidence means for a node waiting in `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Move on to this state; the evidence's time becomes its start.
    To(State, String),
    /// Still waiting, for this reason.
    Wait(String),
}

/// The evidence-driven transitions of the boot, install and first-boot waits.
pub fn advance(state: &State, p: &Progress) -> Option<Advance> {
    match state {
        State::Netboot { cycled_ms: Some(_) } => {
            // `ready` counts only after this install's `installed`: the old system posts
            // `ready` on every boot, e.g. when the firmware skipped the one-time network boot.
            if let Some(t) = p.ready.filter(|t| p.installed.is_some_and(|i| i <= *t)) {
                return Some(Advance::To(State::Done { ready_ms: t }, "node reported ready".into()));
            }
            if let Some(t) = p.installed {
                return Some(Advance::To(State::FirstBoot { since_ms: t }, "installer reported installed".into()));
            }
            if let Some(t) = p.installer {
                return Some(Advance::To(State::Install { since_ms: t }, "installer started".into()));
            }
            Some(Advance::Wait(match (p.firmware_dhcp, p.boot_fetch) {
                (_, Some(_)) => "waiting for the installer's first report".into(),
                (Some(_), None) => "waiting for the firmware to fetch its boot file".into(),
                (None, None) => "waiting for the firmware's DHCPv6 exchange".into(),
            }))
        }
        State::Install { .. } => {
            if let Some(t) = p.ready.filter(|t| p.installed.is_some_and(|i| i <= *t)) {
                return Some(Advance::To(State::Done { ready_ms: t }, "node reported ready".into()));
            }
            if let Some(t) = p.installed {
                return Some(Advance::To(State::FirstBoot { since_ms: t }, "installer reported installed".into()));
            }
            Some(Advance::Wait(if p.image_written.is_some() {
                "waiting for the installer to finish the configuration".into()
            } else {
                "waiting for the image to be written".into()
            }))
        }
        State::FirstBoot { .. } => match p.ready {
            Some(t) => Some(Advance::To(State::Done { ready_ms: t }, "node reported ready".into())),
            None => Some(Advance::Wait("waiting for the installed system to report ready".into())),
        },
        _ => None,
    }
}

/// Per-step limits: an SLA that warns and a hard timeout that retries, an attempt budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub sla: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub preflight: Timing,
    pub firmware: Timing,
    pub bios: Timing,
    pub netboot: Timing,
    pub install: Timing,
    pub first_boot: Timing,
    pub cluster: Timing,
    /// Attempts per step before `needs-attention`.
    pub attempts: u32,
    /// First retry delay; doubles per attempt, capped, with ±50 % jitter.
    pub backoff: Duration,
    pub backoff_cap: Duration,
}

impl Default for Policy {
    /// Minutes, not seconds: a Dell server's POST alone takes 3-10 minutes, a BIOS job longer
    /// (operators' complaint 4 in the notes is timeouts that were too short).
    fn default() -> Policy {
        let m = |min: u64| Duration::from_secs(min * 60);
        Policy {
            preflight: Timing { sla: m(2), timeout: m(5) },
            // Per component; an iDRAC update restarts the BMC, a BIOS update runs through POST.
            firmware: Timing { sla: m(30), timeout: m(90) },
            bios: Timing { sla: m(20), timeout: m(45) },
            netboot: Timing { sla: m(10), timeout: m(20) },
            install: Timing { sla: m(30), timeout: m(60) },
            first_boot: Timing { sla: m(10), timeout: m(20) },
            // kubeadm init pulls images and starts the control plane: minutes.
            cluster: Timing { sla: m(15), timeout: m(30) },
            attempts: 3,
            backoff: Duration::from_secs(30),
            backoff_cap: m(10),
        }
    }
}

impl Policy {
    pub fn timing(&self, step: Step) -> &Timing {
        match step {
            Step::Preflight => &self.preflight,
            Step::Firmware => &self.firmware,
            Step::Bios => &self.bios,
            Step::Netboot => &self.netboot,
            Step::Install => &self.install,
            Step::FirstBoot => &self.first_boot,
            Step::Cluster => &self.cluster,
        }
    }

    pub fn timing_mut(&mut self, step: Step) -> &mut Timing {
        match step {
            Step::Preflight => &mut self.preflight,
            Step::Firmware => &mut self.firmware,
            Step::Bios => &mut self.bios,
            Step::Netboot => &mut self.netboot,
            Step::Install => &mut self.install,
            Step::FirstBoot => &mut self.first_boot,
            Step::Cluster => &mut self.cluster,
        }
    }

    /// The delay before attempt `next` (2, 3, ...): `backoff * 2^(next-2)`, capped, scaled by
    /// `jitter` in [0, 1) to between 50 % and 150 %.
    pub fn backoff_for(&self, next: u32, jitter: f64) -> Duration {
        let exp = next.saturating_sub(2).min(20);
        let base = self.backoff.saturating_mul(1u32 << exp).min(self.backoff_cap);
        base.mul_f64(0.5 + jitter.clamp(0.0, 1.0))
    }
}

/// What the clock says about a node waiting in a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clock {
    Fine,
    /// The SLA passed (report once).
    SlaMissed {
        after: Duration,
    },
    /// The hard timeout passed: retry at this time, as attempt `next`.
    Retry {
        next: u32,
        at_ms: u64,
    },
    /// The hard timeout passed on the last attempt.
    GiveUp,
}

pub fn clock(rec: &NodeRecord, policy: &Policy, now_ms: u64, jitter: f64) -> Clock {
    let Some(step) = rec.state.step() else { return Clock::Fine };
    if rec.state.is_final() {
        return Clock::Fine;
    }
    let t = policy.timing(step);
    let waited = Duration::from_millis(now_ms.saturating_sub(rec.entered_ms));
    if waited >= t.timeout {
        if rec.attempt >= policy.attempts {
            return Clock::GiveUp;
        }
        let next = rec.attempt + 1;
        let delay = policy.backoff_for(next, jitter);
        return Clock::Retry { next, at_ms: now_ms + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX) };
    }
    if waited >= t.sla && !rec.sla_warned {
        return Clock::SlaMissed { after: t.sla };
    }
    Clock::Fine
}

/// `12:03:04` (UTC) for reasons and timelines.
pub fn hms(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(ts: u64, v: Value) -> Value {
        let mut v = v;
        v["ts_ms"] = json!(ts);
        v
    }

    #[test]
    fn only_evidence_after_the_state_was_entered_counts() {
        let events = vec![
            ev(100, json!({"kind": "leased", "stage": "firmware-http", "addr": "fd00::1"})),
            ev(110, json!({"kind": "boot-fetch", "path": "/boot/installer.efi", "source": "http"})),
            ev(120, json!({"kind": "phase", "phase": "installer"})),
            ev(130, json!({"kind": "phase", "phase": "installed"})),
            ev(140, json!({"kind": "phase", "phase": "ready"})),
        ];
        // An earlier install's events are history, not evidence for this power cycle.
        let p = progress(&events, 200);
        assert_eq!(p, Progress::default());
        let st = State::Netboot { cycled_ms: Some(200) };
        assert_eq!(advance(&st, &p), Some(Advance::Wait("waiting for the firmware's DHCPv6 exchange".into())));
        let p = progress(&events, 105);
        assert_eq!(p.firmware_dhcp, None);
        assert_eq!(p.boot_fetch, Some(110));
        assert_eq!(advance(&st, &p), Some(Advance::To(State::Done { ready_ms: 140 }, "node reported ready".into())));
        assert_eq!(p.last, Some((140, "reported ready".into())));
    }

    #[test]
    fn ready_without_this_installs_installed_is_the_old_system() {
        // The firmware skipped the network boot: the old disk booted and said ready.
        let st = State::Netboot { cycled_ms: Some(0) };
        let p = progress(&[ev(5, json!({"kind": "phase", "phase": "ready"}))], 0);
        assert!(matches!(advance(&st, &p), Some(Advance::Wait(_))), "{:?}", advance(&st, &p));
        let inst = State::Install { since_ms: 0 };
        assert!(matches!(advance(&inst, &p), Some(Advance::Wait(_))));
    }

    #[test]
    fn netboot_waits_name_what_is_missing() {
        let st = State::Netboot { cycled_ms: Some(0) };
        let p = progress(&[ev(5, json!({"kind": "leased", "stage": "firmware-pxe", "addr": "fd00::2"}))], 0);
        assert_eq!(advance(&st, &p), Some(Advance::Wait("waiting for the firmware to fetch its boot file".into())));
        assert_eq!(p.last, Some((5, "DHCPv6 lease fd00::2 (firmware-pxe)".into())));
        let p = progress(&[ev(6, json!({"kind": "phase", "phase": "writing-image"}))], 0);
        assert_eq!(advance(&st, &p), Some(Advance::To(State::Install { since_ms: 6 }, "installer started".into())));
        // The OS's own DHCPv6 (stage os) is no firmware evidence.
        let p = progress(&[ev(7, json!({"kind": "leased", "stage": "os"}))], 0);
        assert_eq!(p.firmware_dhcp, None);
    }

    #[test]
    fn install_and_first_boot_advance_on_phases() {
        let inst = State::Install { since_ms: 0 };
        let written = progress(&[ev(9, json!({"kind": "phase", "phase": "image-written", "sha256": "ab"}))], 0);
        assert_eq!(written.image_written, Some((9, Some("ab".into()))));
        assert!(matches!(advance(&inst, &written), Some(Advance::Wait(w)) if w.contains("configuration")));
        let done = progress(&[ev(9, json!({"kind": "phase", "phase": "installed"}))], 0);
        assert_eq!(
            advance(&inst, &done),
            Some(Advance::To(State::FirstBoot { since_ms: 9 }, "installer reported installed".into()))
        );
        let fb = State::FirstBoot { since_ms: 0 };
        assert!(matches!(advance(&fb, &done), Some(Advance::Wait(_))));
        let failed = progress(&[ev(3, json!({"kind": "phase", "phase": "failed", "error": "disk gone"}))], 0);
        assert_eq!(failed.failures, vec![(3, "disk gone".into())]);
        assert_eq!(advance(&State::Pending, &done), None);
        // A node that refuses the server's certificate: the first refusal, kept (apply parks).
        let refused = progress(
            &[
                ev(4, json!({"kind": "tls-rejected", "phase": "failed", "error": "the node rejected (UnknownCA)"})),
                ev(5, json!({"kind": "tls-rejected", "error": "again"})),
            ],
            0,
        );
        assert_eq!(refused.untrusted, Some((4, "the node rejected (UnknownCA)".into())));
    }

    #[test]
    fn cluster_reports_are_read_after_the_state_began() {
        let events = vec![
            ev(1, json!({"phase": "cluster-joined", "mode": "init", "ca_cert_hash": "sha256:old"})),
            ev(5, json!({"phase": "cluster-waiting", "reason": "no kubeadm file yet"})),
            ev(6, json!({"phase": "cluster-failed", "stderr": "[preflight]\nPort 6443 is in use"})),
            ev(9, json!({"phase": "cluster-joined", "mode": "init", "ca_cert_hash": "sha256:new"})),
        ];
        let p = cluster_progress(&events, 2);
        assert_eq!(p.joined, Some((9, "init".into(), Some("sha256:new".into()))));
        assert_eq!(p.failures, vec![(6, "Port 6443 is in use".into())]);
        assert_eq!(p.waiting.as_deref(), Some("no kubeadm file yet"));
        assert_eq!(cluster_progress(&events, 10), ClusterProgress::default());
    }

    #[test]
    fn timeouts_warn_then_retry_with_backoff_then_give_up() {
        let policy = Policy {
            netboot: Timing { sla: Duration::from_secs(10), timeout: Duration::from_secs(30) },
            backoff: Duration::from_secs(4),
            backoff_cap: Duration::from_secs(10),
            ..Policy::default()
        };
        let mut rec = NodeRecord::new("n", 0).enter(State::Netboot { cycled_ms: Some(0) }, 1_000);
        assert_eq!(clock(&rec, &policy, 5_000, 0.5), Clock::Fine);
        assert_eq!(clock(&rec, &policy, 11_000, 0.5), Clock::SlaMissed { after: Duration::from_secs(10) });
        rec.sla_warned = true;
        assert_eq!(clock(&rec, &policy, 12_000, 0.5), Clock::Fine);
        // Attempt 2 after 4 s (jitter 0.5 = no change), attempt 3 after 8 s, capped at 10 s.
        assert_eq!(clock(&rec, &policy, 31_000, 0.5), Clock::Retry { next: 2, at_ms: 35_000 });
        rec.attempt = 2;
        assert_eq!(clock(&rec, &policy, 31_000, 0.5), Clock::Retry { next: 3, at_ms: 39_000 });
        assert_eq!(policy.backoff_for(9, 0.5), Duration::from_secs(10));
        assert_eq!(policy.backoff_for(2, 0.0), Duration::from_secs(2));
        assert_eq!(policy.backoff_for(2, 0.999), Duration::from_secs(4).mul_f64(1.499));
        rec.attempt = 3;
        assert_eq!(clock(&rec, &policy, 31_000, 0.5), Clock::GiveUp);
        // Final states have no clock.
        let parked = rec.enter(State::NeedsAttention { step: Step::Netboot, reason: "x".into() }, 0);
        assert_eq!(clock(&parked, &policy, u64::MAX, 0.5), Clock::Fine);
    }

    #[test]
    fn a_new_step_starts_at_attempt_one_and_states_round_trip() {
        let mut rec = NodeRecord::new("n", 0).enter(State::Netboot { cycled_ms: None }, 0);
        rec.attempt = 3;
        assert_eq!(rec.enter(State::Netboot { cycled_ms: Some(5) }, 5).attempt, 3);
        // Install and first boot share the boot's budget: a retry that reinstalls counts.
        assert_eq!(rec.enter(State::Install { since_ms: 5 }, 5).attempt, 3);
        assert_eq!(rec.enter(State::FirstBoot { since_ms: 5 }, 5).attempt, 3);
        assert_eq!(rec.enter(State::Bios(BiosStep::Plan { pass: 1 }), 5).attempt, 1);
        for st in [
            State::Pending,
            State::Bios(BiosStep::Running {
                pass: 1,
                job: Some("JID_1".into()),
                reset_ms: 9,
                attrs: vec!["SysProfile".into()],
            }),
            State::Netboot { cycled_ms: Some(1) },
            State::NeedsAttention { step: Step::Install, reason: "r".into() },
        ] {
            let text = serde_json::to_string(&st).expect("json");
            assert_eq!(serde_json::from_str::<State>(&text).expect("back"), st, "{text}");
        }
        assert_eq!(hms(3_723_000), "01:02:03");
    }
}
