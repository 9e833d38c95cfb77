//! The BIOS step: a node's BIOS profile applied through its BMC, one pass at a time (a pass is
//! one settings job and one reset; later passes need earlier ones applied), as persisted
//! sub-states so a restart polls the job it created instead of creating another:
//!
//! `Plan` (read /Bios and the registry, plan, clear stale BIOS jobs, stage the pass) →
//! `Staged { job }` (the job id is committed) → `Running { job, reset_ms }` (the reset time is
//! committed *before* the reset call: a restart never resets twice) → the job polled from the
//! BMC until final → the values verified from `/Bios` itself (a Completed job is not proof,
//! notes: Dell reports done early) → the next pass, or netboot when nothing differs.

use std::collections::BTreeMap;

use metal6_inventory::Inventory;
use metal6_inventory::model::Node;
use metal6_redfish::bios::{self, Registry};
use metal6_redfish::{Bmc, RedfishError, Staged};
use serde_json::{Value, json};

use crate::apply::{Apply, BmcError, now_ms};
use crate::machine::{BiosStep, NodeRecord, State};
use crate::store::History;

/// The node's profile names a BIOS profile.
pub fn wanted(inv: &Inventory, node: &Node) -> bool {
    inv.profile_of(node).bios.is_some()
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(unset)".into(),
        v => v.to_string(),
    }
}

/// What the plan needs: current values, the settings object, the registry, and the firmware
/// inventory when the node's baseline gates BIOS work.
type Read = (BTreeMap<String, Value>, String, Value, Option<Vec<metal6_redfish::bmc::Firmware>>);

async fn read(b: &Bmc, gated: bool) -> Result<Read, RedfishError> {
    let (current, settings) = b.bios().await?;
    let registry = b.bios_registry().await?;
    let firmware = if gated { Some(b.firmware().await?) } else { None };
    Ok((current, settings, registry, firmware))
}

/// The firmware gates this BIOS pass would break: `bios-apply` always, `ipv6-http-boot` when
/// the pass touches the HTTP boot device while the profile asks for IPv6 (Dell BIOSes before
/// the gate's version cannot IPv6 HTTP boot: notes, dell-idrac-redfish).
pub fn gate_failures(
    inv: &Inventory,
    node: &Node,
    plan: &bios::Plan,
    installed: &[metal6_redfish::bmc::Firmware],
) -> Vec<String> {
    use metal6_inventory::model::GatedStep;
    let Some(baseline) = inv.profile_of(node).firmware.as_ref().and_then(|b| inv.firmware_baselines.get(b)) else {
        return vec![];
    };
    let fw = metal6_redfish::firmware::plan(baseline, installed);
    let ipv6_http = plan.passes.iter().flatten().any(|c| c.attribute.starts_with("HttpDev"))
        && bios::desired_for(inv, node).is_some_and(|(_, d)| d.values().any(|v| v == "IPv6"));
    let name = |v: &dyn erased::Named| v.named();
    fw.gates
        .iter()
        .filter(|g| match g.before {
            GatedStep::BiosApply => true,
            GatedStep::Ipv6HttpBoot => ipv6_http,
            GatedStep::Install => false,
        })
        .filter(|g| !g.holds_now)
        .map(|g| {
            let installed = fw.steps.iter().find(|s| s.kind == g.component).and_then(|s| s.installed.clone());
            format!(
                "{} >= {} before {} (installed: {})",
                name(&g.component),
                g.min_version,
                name(&g.before),
                installed.as_deref().unwrap_or("unknown")
            )
        })
        .collect()
}

/// Enums as their serde (kebab-case) names.
mod erased {
    pub trait Named {
        fn named(&self) -> String;
    }
    impl<T: serde::Serialize> Named for T {
        fn named(&self) -> String {
            serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        }
    }
}

/// For a node whose profile says `https`: the CA its firmware must trust
/// (`site.boot_server.https_ca`) is in the system's HTTPS boot certificates, added when
/// missing and read back. Idempotent: a restart checks again instead of remembering. The
/// history entry when it was added.
async fn ensure_boot_ca(apply: &Apply, node: &Node) -> Result<Option<History>, super::apply::StepOutcome> {
    use super::apply::StepOutcome as O;
    let inv = apply.inventory();
    if !inv.profile_of(node).https {
        return Ok(None);
    }
    // Validation requires it for a node with a BIOS profile.
    let Some(path) = inv.site.boot_server.https_ca.clone() else {
        return Err(O::Park("the node boots over HTTPS but site.boot_server.https_ca names no CA".into()));
    };
    let pem = std::fs::read_to_string(&path)
        .map_err(|e| O::Park(format!("site.boot_server.https_ca {}: {e}", path.display())))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(O::Park(format!("site.boot_server.https_ca {} holds no PEM certificate", path.display())));
    }
    match apply.with_bmc(node, async |b: &Bmc| b.boot_ca(&pem, true).await).await {
        Err(e) => Err(wait(e, "checking the HTTPS boot certificates")),
        Ok(None) => Err(O::Park(
            "the node boots over HTTPS but its BMC offers no HTTPS boot certificate store (Systems/…/Boot/Certificates)"
                .into(),
        )),
        Ok(Some(metal6_redfish::bmc::BootCa { added: None, .. })) => Ok(None),
        Ok(Some(metal6_redfish::bmc::BootCa { collection: coll, present: false, .. })) => {
            Err(O::Park(format!("the BMC took the HTTPS boot CA into {coll} but does not list it afterwards")))
        }
        Ok(Some(metal6_redfish::bmc::BootCa { collection: coll, added: Some(member), .. })) => {
            let mut h = History::new(
                now_ms(),
                "bmc",
                "boot-ca-added",
                format!("HTTPS boot CA {} added to {coll}", path.display()),
            );
            h.detail = json!({"collection": coll, "member": member});
            Ok(Some(h))
        }
    }
}

fn wait(e: BmcError, doing: &str) -> super::apply::StepOutcome {
    super::apply::StepOutcome::from_bmc(e, doing)
}

pub(crate) async fn step(apply: &Apply, node: &Node, rec: &NodeRecord) -> super::apply::StepOutcome {
    use super::apply::StepOutcome as O;
    let now = now_ms();
    let State::Bios(sub) = &rec.state else { return O::Wait { reason: "not in the BIOS step".into(), evidence: None } };
    let Some((profile, desired)) = bios::desired_for(apply.inventory(), node) else {
        let next = rec.enter(State::Netboot { cycled_ms: None }, now);
        return O::Commit(next, vec![History::new(now, "apply", "transition", "no BIOS profile: netboot")]);
    };
    match sub {
        BiosStep::Plan { pass } => {
            let pass = *pass;
            let inv = apply.inventory();
            // The firmware's trust first: the TLS mode the passes set is useless without it.
            let mut notes = match ensure_boot_ca(apply, node).await {
                Ok(h) => h.into_iter().collect::<Vec<_>>(),
                Err(outcome) => return outcome,
            };
            let gated = inv
                .profile_of(node)
                .firmware
                .as_ref()
                .and_then(|b| inv.firmware_baselines.get(b))
                .is_some_and(|b| !b.gates.is_empty());
            let (current, settings, registry, firmware) =
                match apply.with_bmc(node, async |b: &Bmc| read(b, gated).await).await {
                    Ok(r) => r,
                    Err(e) => return wait(e, "reading the BIOS"),
                };
            let registry = match Registry::from_json(&registry) {
                Ok(r) => r,
                Err(e) => return O::Park(format!("the BMC's BIOS attribute registry: {e}")),
            };
            let p = bios::plan(&registry, &current, &desired);
            if !p.refused.is_empty() {
                let why: Vec<String> = p.refused.iter().map(|r| format!("{}: {}", r.attribute, r.reason)).collect();
                return O::Park(format!("BIOS profile {profile} cannot be applied as written: {}", why.join("; ")));
            }
            let Some(changes) = p.passes.first() else {
                let next = rec.enter(State::Netboot { cycled_ms: None }, now);
                let text = format!("BIOS matches profile {profile}: netboot");
                notes.push(History::new(now, "apply", "transition", text));
                return O::Commit(next, notes);
            };
            let failing = gate_failures(inv, node, &p, firmware.as_deref().unwrap_or_default());
            if !failing.is_empty() {
                return O::Park(format!(
                    "the firmware baseline gates this BIOS change: {}; run `metal6 bmc firmware apply --reboot` first",
                    failing.join("; ")
                ));
            }
            if pass > 8 {
                return O::Park(format!("BIOS profile {profile} still differs after {} passes", pass - 1));
            }
            let attrs: BTreeMap<String, Value> =
                changes.iter().map(|c| (c.attribute.clone(), c.desired.clone())).collect();
            let what: Vec<String> = changes
                .iter()
                .map(|c| format!("{} {} -> {}", c.attribute, plain(&c.current), plain(&c.desired)))
                .collect();
            let staged = apply
                .with_bmc(node, async |b: &Bmc| {
                    // Someone's stale BIOS job or pending values would make the BMC refuse ours
                    // (SYS011); other job types are left alone.
                    b.clear_stale(&settings).await?;
                    b.stage_bios(&settings, &attrs).await
                })
                .await;
            let staged = match staged {
                Ok(s) => s,
                Err(e) => return wait(e, "staging the BIOS pass"),
            };
            let job = match staged {
                Staged::Job(id) => Some(id),
                Staged::PendingWithoutJob => None,
                Staged::Nothing => {
                    return O::Park(format!("the BMC took the BIOS changes of pass {pass} but has nothing pending"));
                }
            };
            let mut h = History::new(
                now,
                "bmc",
                "bios-staged",
                format!("BIOS pass {pass} staged ({}): {}", job.as_deref().unwrap_or("no job"), what.join(", ")),
            );
            h.detail = json!({"pass": pass, "job": job, "attributes": attrs});
            let mut next = rec.clone();
            next.state = State::Bios(BiosStep::Staged { pass, job, attrs: attrs.keys().cloned().collect() });
            next.updated_ms = now;
            notes.push(h);
            O::Commit(next, notes)
        }
        BiosStep::Staged { pass, job, attrs } => {
            // Committed before the reset: a restart finds `Running` and polls, never resets again.
            let mut running = rec.clone();
            running.state =
                State::Bios(BiosStep::Running { pass: *pass, job: job.clone(), reset_ms: now, attrs: attrs.clone() });
            running.updated_ms = now;
            apply.commit_then_reset(node, &running, &format!("run BIOS pass {pass}")).await
        }
        BiosStep::Running { pass, job, reset_ms, attrs } => {
            let pass = *pass;
            if let Some(id) = job {
                let status = match apply.with_bmc(node, async |b: &Bmc| b.job(id).await).await {
                    Ok(s) => s,
                    Err(e) => return wait(e, &format!("polling BIOS job {id}")),
                };
                if status.failed() {
                    return O::Park(format!(
                        "BIOS job {id} failed: {} {}",
                        status.state,
                        status.message.unwrap_or_default()
                    ));
                }
                if !status.succeeded() {
                    let reason = format!(
                        "waiting for BIOS job {id} (pass {pass}, reset at {}): {}{}",
                        crate::machine::hms(*reset_ms),
                        status.state,
                        status.message.map(|m| format!(" {m}")).unwrap_or_default()
                    );
                    return O::Wait { reason, evidence: None };
                }
            }
            // Verify from /Bios itself.
            let current = match apply.with_bmc(node, async |b: &Bmc| b.bios().await).await {
                Ok((c, _)) => c,
                Err(e) => return wait(e, "reading the BIOS after the job"),
            };
            let wrong: Vec<String> = desired
                .iter()
                .filter(|(k, v)| current.get(*k).is_some_and(|c| c != *v))
                .map(|(k, v)| {
                    format!("{k}: wanted {}, BIOS has {}", plain(v), current.get(k).map_or("(unset)".into(), plain))
                })
                .collect();
            // Without a job the values apply at the reset, unannounced: wait for them (the
            // step's timeout bounds it). A completed job whose own values the BIOS does not
            // show is Dell's "no delta" (dellemc-openmanage-ansible-modules#495): staging it
            // again would reset the server again for nothing, so the node parks.
            if job.is_none() && !wrong.is_empty() {
                return O::Wait {
                    reason: format!("waiting for the pending BIOS values to apply: {}", wrong.join("; ")),
                    evidence: None,
                };
            }
            let not_shown: Vec<&String> =
                wrong.iter().filter(|w| attrs.iter().any(|a| w.starts_with(&format!("{a}:")))).collect();
            if !not_shown.is_empty() {
                let list: Vec<&str> = not_shown.iter().map(|s| s.as_str()).collect();
                return O::Park(format!(
                    "BIOS pass {pass} finished but the BIOS does not show it: {}",
                    list.join("; ")
                ));
            }
            let text = format!(
                "BIOS pass {pass} done{}",
                job.as_ref().map(|j| format!(" ({j} completed)")).unwrap_or_default()
            );
            let mut next = rec.clone();
            next.state = State::Bios(BiosStep::Plan { pass: pass + 1 });
            next.updated_ms = now;
            // Values that a completed job did not set are caught by the next plan (it stages
            // them again) and by the pass limit: the BIOS ignoring a value does not loop forever.
            let mut h = History::new(now, "bmc", "bios-verified", text);
            h.detail = json!({"pass": pass, "still_differs": wrong});
            O::Commit(next, vec![h])
        }
    }
}
