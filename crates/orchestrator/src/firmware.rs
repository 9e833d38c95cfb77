//! The firmware step: a node's components brought to its baseline through the BMC, one update
//! at a time in the baseline's order (iDRAC, then BIOS, then NICs: later ones may need the
//! earlier), as persisted sub-states:
//!
//! `Plan` (read the firmware inventory, pick the next component behind the baseline, check the
//! package's SHA-256 at the URL the BMC will fetch, adopt an update job already open on the
//! BMC or start `SimpleUpdate`) → `Updating { task }` (the task id is committed; a restart
//! polls it) → when the update waits for a host reset (Dell: Scheduled, RebootPending,
//! PendingActivation) → `Resetting { task, reset_ms }` (committed before the reset call) →
//! the task polled until final → `Plan` again; nothing behind → BIOS or netboot. An iDRAC
//! update restarts the BMC: its 503s and refused connections are waits, not failures, and
//! every call opens a fresh session (the restart forgets them all).

use std::time::Duration;

use metal6_inventory::Inventory;
use metal6_inventory::model::{FirmwareBaseline, Node};
use metal6_redfish::Bmc;
use metal6_redfish::bmc::JobStatus;
use serde_json::json;

use crate::apply::{Apply, BmcError, StepOutcome as O, now_ms};
use crate::machine::{BiosStep, FwStep, NodeRecord, State, hms};
use crate::store::History;

/// The node's profile names a firmware baseline.
pub fn baseline<'a>(inv: &'a Inventory, node: &Node) -> Option<(&'a str, &'a FirmwareBaseline)> {
    let name = inv.profile_of(node).firmware.as_deref()?;
    inv.firmware_baselines.get(name).map(|b| (name, b))
}

/// Where a node goes after its firmware: the BIOS when it has a profile, else netboot.
pub fn after(inv: &Inventory, node: &Node) -> State {
    if crate::bios::wanted(inv, node) {
        State::Bios(BiosStep::Plan { pass: 1 })
    } else {
        State::Netboot { cycled_ms: None }
    }
}

/// An enum as its serde name.
fn named<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// SHA-256 of what `url` serves, streamed: the BMC cannot check a package, we can, at the URL
/// it will fetch from.
pub async fn sha256_of_url(url: &str) -> Result<String, String> {
    use sha2::Digest;
    let client =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(1800)).build().map_err(|e| e.to_string())?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut h = sha2::Sha256::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading {url}: {e}"))? {
        h.update(&chunk);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The update waits for the host to reset before it installs.
fn waits_for_reset(j: &JobStatus) -> bool {
    matches!(j.state.as_str(), "Scheduled" | "RebootPending" | "PendingActivation")
}

pub(crate) async fn step(apply: &Apply, node: &Node, rec: &NodeRecord) -> O {
    let now = now_ms();
    let inv = apply.inventory();
    let State::Firmware(sub) = &rec.state else {
        return O::Wait { reason: "not in the firmware step".into(), evidence: None };
    };
    let Some((bname, baseline)) = baseline(inv, node) else {
        let next = rec.enter(after(inv, node), now);
        return O::Commit(next, vec![History::new(now, "apply", "transition", "no firmware baseline")]);
    };
    match sub {
        FwStep::Plan { just_updated } => {
            let read = apply
                .with_bmc(node, async |b: &Bmc| {
                    let fw = b.firmware().await?;
                    // An update someone (or an apply killed before it committed the task) left
                    // open is followed, not started again: an unreadable queue is a wait.
                    let open = b.open_jobs().await?;
                    Ok((fw, open))
                })
                .await;
            let (installed, open) = match read {
                Ok(r) => r,
                Err(e) => return O::from_bmc(e, "reading the firmware inventory"),
            };
            let plan = metal6_redfish::firmware::plan(baseline, &installed);
            let Some(update) = plan.updates().next().cloned() else {
                let next = rec.enter(after(inv, node), now);
                let text = format!("firmware at baseline {bname}: {}", next.state.label());
                return O::Commit(next, vec![History::new(now, "apply", "transition", text)]);
            };
            let component = named(&update.kind);
            if just_updated.as_deref() == Some(component.as_str()) {
                return O::Park(format!(
                    "{component} is still at {} after its update completed (baseline {}): the update did not take; \
                     check the package and the BMC, then `metal6 apply --retry {}`",
                    update.installed.as_deref().unwrap_or("?"),
                    update.baseline,
                    node.name
                ));
            }
            let what = format!("{component} {} -> {}", update.installed.as_deref().unwrap_or("?"), update.baseline);
            if let Some(j) = open.iter().find(|j| j.job_type.as_deref() == Some("FirmwareUpdate")) {
                let mut next = rec.clone();
                next.state = State::Firmware(FwStep::Updating { component: component.clone(), task: j.id.clone() });
                next.updated_ms = now;
                let h = History::new(
                    now,
                    "bmc",
                    "firmware-adopted",
                    format!("{what}: update {} already open on the BMC, followed", j.id),
                );
                return O::Commit(next, vec![h]);
            }
            if let Some(want) = &update.sha256 {
                match sha256_of_url(&update.image_url).await {
                    Ok(got) if got.eq_ignore_ascii_case(want) => {}
                    Ok(got) => {
                        return O::Park(format!(
                            "{} has SHA-256 {got}, the baseline says {want}: not installing it",
                            update.image_url
                        ));
                    }
                    Err(e) => return O::Wait { reason: format!("checking the package: {e}"), evidence: None },
                }
            }
            let url = update.image_url.clone();
            let task = match apply.with_bmc(node, async |b: &Bmc| b.simple_update(&url).await).await {
                Ok(t) => t,
                Err(e) => return O::from_bmc(e, &format!("starting the {component} update")),
            };
            let mut next = rec.clone();
            next.state = State::Firmware(FwStep::Updating { component, task: task.clone() });
            next.updated_ms = now;
            let mut h = History::new(now, "bmc", "firmware-update", format!("{what} from {url}: task {task}"));
            h.detail = json!({"task": task, "url": url});
            O::Commit(next, vec![h])
        }
        FwStep::Updating { component, task } | FwStep::Resetting { component, task, .. } => {
            let status = match apply.with_bmc(node, async |b: &Bmc| b.job(task).await).await {
                Ok(s) => s,
                // The iDRAC restarts itself to install its own update: 503s, refused connections.
                Err(BmcError::Transient(m)) => {
                    return O::Wait { reason: format!("polling update {task} ({component}): {m}"), evidence: None };
                }
                Err(e) => return O::from_bmc(e, &format!("polling update {task}")),
            };
            if status.failed() {
                return O::Park(format!(
                    "{component} update {task} failed: {} {}",
                    status.state,
                    status.message.unwrap_or_default()
                ));
            }
            if status.succeeded() {
                // The next component gets the step's whole timeout: entered anew.
                let next = rec.enter(State::Firmware(FwStep::Plan { just_updated: Some(component.clone()) }), now);
                let h = History::new(now, "bmc", "firmware-installed", format!("{component} update {task} completed"));
                return O::Commit(next, vec![h]);
            }
            if waits_for_reset(&status) && matches!(sub, FwStep::Updating { .. }) {
                // Committed before the reset: a restart polls, never resets twice.
                let mut resetting = rec.clone();
                resetting.state = State::Firmware(FwStep::Resetting {
                    component: component.clone(),
                    task: task.clone(),
                    reset_ms: now,
                });
                resetting.updated_ms = now;
                return apply.commit_then_reset(node, &resetting, &format!("install {component} ({task})")).await;
            }
            let since = match sub {
                FwStep::Resetting { reset_ms, .. } => format!(", reset at {}", hms(*reset_ms)),
                _ => String::new(),
            };
            O::Wait {
                reason: format!(
                    "waiting for update {task} ({component}{since}): {}{}{}",
                    status.state,
                    status.percent.map(|p| format!(" {p}%")).unwrap_or_default(),
                    status.message.map(|m| format!(" {m}")).unwrap_or_default()
                ),
                evidence: None,
            }
        }
    }
}
