//! `plan`: what `apply` would do to each node and why, from what was observed (the BMC, the
//! server, the orchestrator's own record). A saved plan records a fingerprint of each node's
//! observation; applying it re-observes and refuses when a node changed since (Terraform's
//! "saved plan is stale"), naming the node and what changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use metal6_inventory::Inventory;
use metal6_inventory::model::{BootMethod, Node};
use metal6_redfish::Bmc;
use metal6_redfish::bios::{self, Registry};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::apply::Apply;
use crate::machine::State;
use crate::store::Store;

pub const PLAN_FORMAT: &str = "metal6-plan/1";

/// What was seen of one node. Everything here is part of the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// `On`, `Off`; absent when the BMC could not be read.
    pub power: Option<String>,
    /// `Once/UefiHttp`, `Disabled/None`.
    pub boot_override: Option<String>,
    /// Why the BMC could not be read.
    pub bmc_error: Option<String>,
    /// BIOS attributes that differ from the node's profile, as `Attr: now -> wanted`.
    pub bios_differs: Option<Vec<String>>,
    /// Components behind the node's firmware baseline, `kind installed -> baseline`, and the
    /// baseline's gates as they stand (`gate: bios >= 1.10.0 before ipv6-http-boot: fails
    /// now, holds after`).
    #[serde(default)]
    pub firmware: Option<Vec<String>>,
    /// The phase `metal6 serve` has for the node.
    pub served_phase: Option<String>,
    /// The image digest the installer last wrote to the node.
    pub installed_sha256: Option<String>,
    /// The digest of the node's image in the artifacts.
    pub artifact_sha256: Option<String>,
    /// The orchestrator's state and generation.
    pub state: Option<String>,
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub step: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub node: String,
    pub actions: Vec<Action>,
    pub observed: Observed,
    /// sha256 of the observation's canonical JSON.
    pub fingerprint: String,
}

impl NodePlan {
    pub fn nothing_to_do(&self) -> bool {
        self.actions.iter().all(|a| a.step == "nothing")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: String,
    pub created_ms: u64,
    /// sha256 of the inventory text the plan was made from.
    pub inventory_sha256: String,
    pub nodes: Vec<NodePlan>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn fingerprint(o: &Observed) -> String {
    sha256_hex(serde_json::to_string(o).unwrap_or_default().as_bytes())
}

/// What changed between two observations of a node, as `field: was X, now Y`.
pub fn changes(before: &Observed, now: &Observed) -> Vec<String> {
    let a = serde_json::to_value(before).unwrap_or_default();
    let b = serde_json::to_value(now).unwrap_or_default();
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return vec![] };
    let show = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "(none)".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    a.keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k} was {}, now {}", show(a.get(k)), show(b.get(k))))
        .collect()
}

/// An enum as its serde name.
fn named<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The first 12 characters of a digest for a person (a node reports its own: any text).
fn short(s: &str) -> &str {
    s.char_indices().nth(12).map_or(s, |(i, _)| &s[..i])
}

fn boot_name(inv: &Inventory, node: &Node) -> &'static str {
    match inv.profile_of(node).boot {
        BootMethod::Pxe => "PXE",
        BootMethod::Ipxe => "UEFI HTTP (iPXE)",
        BootMethod::UefiHttp | BootMethod::DhcpLessHttp => "UEFI HTTP",
    }
}

/// The actions for one node, from its observation. Pure.
pub fn actions(inv: &Inventory, node: &Node, o: &Observed, record: Option<&State>, cluster: bool) -> Vec<Action> {
    let a = |step: &str, why: String| Action { step: step.into(), why };
    let current_image = match (&o.installed_sha256, &o.artifact_sha256) {
        (Some(i), Some(want)) => i == want,
        _ => false,
    };
    // Only a digest known to differ is a reason to reinstall: a server that lost the node's
    // events (or artifacts without a manifest) proves nothing.
    let known_stale = matches!((&o.installed_sha256, &o.artifact_sha256), (Some(i), Some(want)) if i != want);
    let mut out = vec![];
    match record {
        Some(State::NeedsAttention { step, reason }) => {
            return vec![a(
                "attention",
                format!("parked in {}: {reason} (`metal6 apply --retry {}` resumes it)", step.name(), node.name),
            )];
        }
        Some(State::Done { .. }) if !known_stale => {
            return vec![a("nothing", "done: installed and ready with the current image".into())];
        }
        Some(State::Done { .. }) => out.push(a(
            "reinstall",
            format!(
                "image digest differs: installed {}, artifacts {}",
                o.installed_sha256.as_deref().map_or("unknown", short),
                o.artifact_sha256.as_deref().map_or("unknown", short)
            ),
        )),
        Some(State::Pending) | None => {
            if o.served_phase.as_deref() == Some("ready") && current_image {
                return vec![a("nothing", "the node reports ready with the current image".into())];
            }
        }
        Some(other) => {
            return vec![a("resume", format!("resume at {}: apply was interrupted there", other.label()))];
        }
    }
    if node.bmc.is_none() {
        out.push(a("attention", "no bmc in the inventory: apply cannot power this node".into()));
        return out;
    }
    if let Some(e) = &o.bmc_error {
        out.push(a("preflight", format!("the BMC could not be read: {e}; apply retries it")));
    }
    if let Some(baseline) = &inv.profile_of(node).firmware {
        match &o.firmware {
            Some(lines) if lines.iter().all(|l| l.starts_with("gate:")) => {}
            Some(lines) => {
                let behind = lines.iter().filter(|l| !l.starts_with("gate:")).count();
                out.push(a(
                    "firmware",
                    format!(
                        "baseline {baseline}: {behind} component(s) behind, one update at a time: {}",
                        lines.join("; ")
                    ),
                ));
            }
            None => out.push(a("firmware", format!("baseline {baseline}: not read, planned when apply reads it"))),
        }
    }
    if let Some(profile) = &inv.profile_of(node).bios {
        match &o.bios_differs {
            Some(d) if d.is_empty() => {}
            Some(d) => {
                out.push(a("bios", format!("profile {profile}: {} attribute(s) differ: {}", d.len(), d.join(", "))))
            }
            None => out.push(a("bios", format!("profile {profile}: not read, planned when apply reads it"))),
        }
    }
    let power = match o.power.as_deref() {
        Some("Off") => "power on (now Off)",
        Some(_) => "power cycle (now On)",
        None => "power on or cycle",
    };
    out.push(a("netboot", format!("one-time {} boot, {power}", boot_name(inv, node))));
    out.push(a(
        "install",
        format!(
            "image {}{}",
            inv.profile_of(node).image,
            o.artifact_sha256.as_deref().map(|s| format!(" (sha256 {})", short(s))).unwrap_or_default()
        ),
    ));
    out.push(a("ready", "wait for the installed system to report ready".into()));
    if cluster {
        let first = crate::cluster::first_control_plane(inv).is_some_and(|cp| cp.name == node.name);
        out.push(a(
            "cluster",
            if first {
                "kubeadm init; its CA hash renders the other nodes' join files".into()
            } else {
                "kubeadm join, once the first control plane reported the CA hash".into()
            },
        ));
    }
    out
}

impl Apply {
    /// Observes one node: its BMC, the server's view, the stored record.
    pub async fn observe(&self, node: &Node, store: &dyn Store) -> Observed {
        let rec = store.load(&node.name).ok().flatten();
        let mut o = Observed {
            power: None,
            boot_override: None,
            bmc_error: None,
            bios_differs: None,
            firmware: None,
            served_phase: None,
            installed_sha256: None,
            artifact_sha256: None,
            state: rec.as_ref().map(|r| r.state.label()),
            generation: rec.as_ref().map_or(0, |r| r.generation),
        };
        if node.bmc.is_some() {
            let inv = self.inventory();
            let want_bios = bios::desired_for(inv, node);
            let baseline = crate::firmware::baseline(inv, node).map(|(_, b)| b);
            let r = self
                .with_bmc(node, async |b: &Bmc| {
                    let power = b.power_state().await?;
                    let (en, tgt) = b.boot_override().await?;
                    let mut differs = None;
                    if let Some((_, desired)) = &want_bios {
                        let (current, _) = b.bios().await?;
                        let reg = b.bios_registry().await?;
                        if let Ok(reg) = Registry::from_json(&reg) {
                            let p = bios::plan(&reg, &current, desired);
                            differs = Some(
                                p.passes
                                    .iter()
                                    .flatten()
                                    .map(|c| format!("{}: {} -> {}", c.attribute, c.current, c.desired))
                                    .collect::<Vec<_>>(),
                            );
                        }
                    }
                    let mut firmware = None;
                    if let Some(baseline) = baseline {
                        let p = metal6_redfish::firmware::plan(baseline, &b.firmware().await?);
                        let mut lines: Vec<String> = p
                            .updates()
                            .map(|s| {
                                format!(
                                    "{} {} -> {}",
                                    named(&s.kind),
                                    s.installed.as_deref().unwrap_or("?"),
                                    s.baseline
                                )
                            })
                            .collect();
                        lines.extend(p.gates.iter().map(ToString::to_string));
                        firmware = Some(lines);
                    }
                    Ok((power, format!("{en}/{tgt}"), differs, firmware))
                })
                .await;
            match r {
                Ok((p, b, d, f)) => {
                    o.power = Some(p);
                    o.boot_override = Some(b);
                    o.bios_differs = d;
                    o.firmware = f;
                }
                Err(crate::apply::BmcError::Fatal(e) | crate::apply::BmcError::Transient(e)) => o.bmc_error = Some(e),
            }
        }
        let (phase, sha) = self.served(&node.name).await;
        o.served_phase = phase;
        o.installed_sha256 = sha;
        o.artifact_sha256 = self.artifact_sha(&self.inventory().profile_of(node).image).await;
        o
    }

    /// Plans every node (BMCs read in parallel, within the per-BMC limit).
    pub async fn plan(self: &Arc<Self>, nodes: &[String]) -> Vec<NodePlan> {
        let mut set = tokio::task::JoinSet::new();
        for (i, name) in nodes.iter().enumerate() {
            let me = Arc::clone(self);
            let name = name.clone();
            set.spawn(async move {
                let node = me.inventory().node(&name)?.clone();
                let store = me.store();
                let observed = me.observe(&node, store.as_ref()).await;
                let rec = store.load(&node.name).ok().flatten();
                let actions =
                    actions(me.inventory(), &node, &observed, rec.as_ref().map(|r| &r.state), me.cluster_mode());
                Some((i, NodePlan { node: node.name.clone(), actions, fingerprint: fingerprint(&observed), observed }))
            });
        }
        let mut out: Vec<(usize, NodePlan)> = set.join_all().await.into_iter().flatten().collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, p)| p).collect()
    }

    /// A saved plan's nodes whose observation changed since, with what changed.
    pub async fn stale(self: &Arc<Self>, saved: &SavedPlan) -> BTreeMap<String, Vec<String>> {
        let names: Vec<String> = saved.nodes.iter().map(|n| n.node.clone()).collect();
        let now = self.plan(&names).await;
        let mut out = BTreeMap::new();
        for old in &saved.nodes {
            match now.iter().find(|n| n.node == old.node) {
                Some(new) if new.fingerprint == old.fingerprint => {}
                Some(new) => {
                    out.insert(old.node.clone(), changes(&old.observed, &new.observed));
                }
                None => {
                    out.insert(old.node.clone(), vec!["no longer in the inventory".into()]);
                }
            }
        }
        out
    }
}
