//! Every selected node's BMC: reachable with verified TLS and working credentials
//! (`bmc.connect`), the machine it answers for (`bmc.identity`: its NICs carry the node's MACs,
//! no two nodes share a service tag), the boot NIC and the other NICs' MACs (`bmc.boot-nic`,
//! `bmc.nics`), the firmware gates of the node's baseline (`bmc.firmware`), the BIOS settings
//! netboot depends on against the plan (`bmc.bios`) and the job queue (`bmc.jobs`). Read-only:
//! doctor stages, deletes and resets nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use metal6_inventory::Inventory;
use metal6_inventory::model::{BootMethod, Node};
use metal6_redfish::bios::{self, Registry};
use metal6_redfish::bmc::Inventory as BmcInventory;
use metal6_redfish::{Bmc, ConnectOptions, RedfishError};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::{Check, Options};

/// BMCs read at once, over all endpoints.
const PARALLEL: usize = 16;

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

pub async fn checks(inv: &Inventory, opts: &Options) -> Vec<Check> {
    let inv = Arc::new(inv.clone());
    let global = Arc::new(Semaphore::new(PARALLEL));
    let mut per: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let mut set = tokio::task::JoinSet::new();
    let mut out = vec![];
    for (i, node) in inv.nodes.iter().enumerate().filter(|(_, n)| opts.nodes.contains(&n.name)) {
        let Some(b) = &node.bmc else {
            out.push(Check::skip("bmc.connect", "no bmc in the inventory").for_node(&node.name));
            continue;
        };
        let slot =
            Arc::clone(per.entry(b.redfish_url()).or_insert_with(|| Arc::new(Semaphore::new(opts.per_bmc.max(1)))));
        let (inv, global, opts) = (Arc::clone(&inv), Arc::clone(&global), opts.clone());
        set.spawn(async move {
            let _g = global.acquire_owned().await;
            let _s = slot.acquire_owned().await;
            let node = &inv.nodes[i];
            let (checks, tag) = node_checks(&inv, node, &opts).await;
            (i, checks, tag)
        });
    }
    let mut results: Vec<(usize, Vec<Check>, Option<String>)> = set.join_all().await;
    results.sort_by_key(|(i, _, _)| *i);
    // Two nodes whose BMCs report one service tag are one machine.
    let mut tags: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (i, _, tag) in &results {
        if let Some(t) = tag {
            tags.entry(t.as_str()).or_default().push(&inv.nodes[*i].name);
        }
    }
    for (i, checks, _) in &results {
        out.extend(checks.iter().cloned());
        let name = &inv.nodes[*i].name;
        if let Some((tag, names)) = tags.iter().find(|(_, v)| v.len() > 1 && v.contains(&name.as_str())) {
            out.push(
                Check::fail(
                    "bmc.identity",
                    format!("the BMCs of {} all report service tag {tag}: they are one machine", names.join(", ")),
                    "correct bmc.address (or bmc.system) of the nodes that point at the wrong BMC",
                )
                .for_node(name),
            );
        }
    }
    out
}

async fn node_checks(inv: &Inventory, node: &Node, opts: &Options) -> (Vec<Check>, Option<String>) {
    let mut out = vec![];
    let Some(b) = &node.bmc else { return (out, None) };
    let n = node.name.as_str();
    let url = b.redfish_url();
    let password = match b.password.resolve() {
        Ok(p) => p,
        Err(e) => {
            out.push(
                Check::fail(
                    "bmc.connect",
                    format!("the BMC password {}: {e}", b.password),
                    "provide the secret the inventory names",
                )
                .for_node(n),
            );
            return (out, None);
        }
    };
    let mut co = ConnectOptions::for_bmc(b, password);
    co.ca_file = opts.ca_file.clone();
    co.insecure = opts.insecure;
    co.timeout = opts.bmc_timeout;
    co.retries = 1;
    let bmc = match Bmc::connect(co).await {
        Ok(bmc) => bmc,
        Err(e) => {
            out.push(connect_failed(&url, b, &e).for_node(n));
            return (out, None);
        }
    };
    let vendor = bmc.vendor.clone().unwrap_or_else(|| "unknown vendor".into());
    out.push(
        if opts.insecure {
            Check::warn(
                "bmc.connect",
                format!("{url} ({vendor}): logged in, TLS NOT verified (--insecure)"),
                "pass --ca-file with the BMC's CA instead of --insecure",
            )
        } else {
            Check::ok("bmc.connect", format!("{url} ({vendor}): TLS verified, logged in as {}", b.username))
        }
        .for_node(n),
    );
    let mut tag = None;
    match bmc.inventory().await {
        Ok(bi) => {
            tag = bi.service_tag.clone().or_else(|| bi.serial.clone()).filter(|t| !t.is_empty());
            out.extend(nic_checks(node, &bi).into_iter().map(|c| c.for_node(n)));
            out.push(bios_check(inv, node, &bmc, &bi).await.for_node(n));
        }
        Err(e) => out.push(
            Check::fail(
                "bmc.identity",
                format!("cannot read the system: {}", chain(&e)),
                "check the BMC's health (its web UI)",
            )
            .for_node(n),
        ),
    }
    out.push(firmware_check(inv, node, &bmc).await.for_node(n));
    out.push(jobs_check(&bmc).await.for_node(n));
    bmc.logout().await;
    (out, tag)
}

fn connect_failed(url: &str, b: &metal6_inventory::model::Bmc, e: &RedfishError) -> Check {
    let text = chain(e);
    let fix = if matches!(e, RedfishError::Login { .. }) {
        format!("the BMC refused user {}: check the user and the secret behind {}", b.username, b.password)
    } else if e.is_tls() {
        "pass --ca-file with the CA that signed the BMC's certificate (or --insecure, which is logged)".to_owned()
    } else {
        format!(
            "check the BMC's address and the route to it from this host, and that Redfish answers on port {}",
            b.port
        )
    };
    Check::fail("bmc.connect", format!("{url}: {text}"), fix)
}

fn nic_checks(node: &Node, bi: &BmcInventory) -> Vec<Check> {
    let bmc_macs: Vec<(String, String)> =
        bi.nics.iter().filter_map(|n| n.mac.clone().map(|m| (n.id.clone(), m))).collect();
    let who = format!(
        "{} {}, service tag {}, BIOS {}",
        bi.vendor.as_deref().unwrap_or("?"),
        bi.model.as_deref().unwrap_or("?"),
        bi.service_tag.as_deref().or(bi.serial.as_deref()).unwrap_or("?"),
        bi.bios_version.as_deref().unwrap_or("?")
    );
    if bmc_macs.is_empty() {
        return vec![
            Check::ok("bmc.identity", who),
            Check::skip("bmc.boot-nic", "the BMC lists no NIC with a MAC: the boot NIC cannot be checked"),
        ];
    }
    let on_bmc = |mac: &str| bmc_macs.iter().find(|(_, m)| m == mac).map(|(id, _)| id.clone());
    let inv_macs: Vec<(String, String)> = node.nics.iter().map(|n| (n.name.clone(), n.mac.to_string())).collect();
    let listed = bmc_macs.iter().map(|(id, m)| format!("{id}={m}")).collect::<Vec<_>>().join(", ");
    let mut out = vec![];
    if inv_macs.iter().all(|(_, m)| on_bmc(m).is_none()) {
        out.push(Check::fail(
            "bmc.identity",
            format!(
                "{who}: none of {}'s MACs is on this BMC, it answers for another machine (it has {listed})",
                node.name
            ),
            "check bmc.address (and bmc.system) of this node, or its nics[].mac",
        ));
    } else {
        out.push(Check::ok("bmc.identity", who));
    }
    let boot = node.boot_mac().to_string();
    let boot_name = &node.nics[node.boot_nic].name;
    out.push(match on_bmc(&boot) {
        Some(id) => Check::ok("bmc.boot-nic", format!("boot NIC {boot_name} {boot} is {id}")),
        None => Check::fail(
            "bmc.boot-nic",
            format!("boot NIC {boot_name} {boot} is not on the BMC; the BMC has {listed}"),
            "correct the boot NIC's mac in the inventory (`metal6 bmc inventory NODE` shows the BMC's)",
        ),
    });
    let wrong: Vec<String> = inv_macs
        .iter()
        .filter(|(name, m)| name != boot_name && on_bmc(m).is_none())
        .map(|(name, m)| format!("{name} {m}"))
        .collect();
    let extra: Vec<String> = bmc_macs
        .iter()
        .filter(|(_, m)| !inv_macs.iter().any(|(_, im)| im == m))
        .map(|(id, m)| format!("{id}={m}"))
        .collect();
    out.push(if wrong.is_empty() {
        Check::ok(
            "bmc.nics",
            if extra.is_empty() {
                "every BMC NIC is in the inventory".to_owned()
            } else {
                format!("the inventory's NICs are on the BMC; not in the inventory: {}", extra.join(", "))
            },
        )
    } else {
        Check::fail(
            "bmc.nics",
            format!("not on the BMC: {}", wrong.join(", ")),
            "correct those MACs in the inventory (`metal6 bmc inventory NODE` shows the BMC's)",
        )
    });
    out
}

fn text(v: Option<&Value>) -> Option<String> {
    v.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
}

async fn bios_check(inv: &Inventory, node: &Node, bmc: &Bmc, bi: &BmcInventory) -> Check {
    let id = "bmc.bios";
    let (current, settings) = match bmc.bios().await {
        Ok(b) => b,
        Err(e) => return Check::skip(id, format!("the BIOS attributes cannot be read: {}", chain(&e))),
    };
    // Values someone staged and no reset applied yet: the next reset applies them with ours.
    let pending: Vec<String> = bmc
        .bios_pending(&settings)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={}", text(Some(v)).unwrap_or_default()))
        .collect();
    let desired = bios::desired_for(inv, node);
    let want = |k: &str| desired.as_ref().and_then(|(_, d)| text(d.get(k)));
    let cur = |k: &str| text(current.get(k));
    let mut fails: Vec<(String, String)> = vec![];
    if let Some(mode) = cur("BootMode")
        && mode != "Uefi"
        && want("BootMode").as_deref() != Some("Uefi")
    {
        fails.push((
            format!("BootMode is {mode}: IPv6 HTTP and PXE boot need UEFI"),
            "add BootMode: Uefi to the node's BIOS profile (apply stages it)".into(),
        ));
    }
    let http = matches!(inv.profile_of(node).boot, BootMethod::UefiHttp | BootMethod::Ipxe | BootMethod::DhcpLessHttp);
    if http && current.contains_key("HttpDev1EnDis") {
        for (k, v) in [("HttpDev1EnDis", "Enabled"), ("HttpDev1Protocol", "IPv6")] {
            let eff = want(k).or_else(|| cur(k)).unwrap_or_default();
            if eff != v {
                fails.push((
                    format!("{k} is {eff}: HTTP boot over IPv6 needs {v}"),
                    format!("set {k}: {v} in the node's BIOS profile (or use http_boot:)"),
                ));
            }
        }
        let eff = want("HttpDev1Interface").or_else(|| cur("HttpDev1Interface")).unwrap_or_default();
        let boot = node.boot_mac().to_string();
        let nic_mac = bi.nics.iter().find(|n| n.id == eff).and_then(|n| n.mac.clone());
        let boot_id = bi.nics.iter().find(|n| n.mac.as_deref() == Some(boot.as_str())).map(|n| n.id.clone());
        if !bi.nics.is_empty() && nic_mac.as_deref() != Some(boot.as_str()) {
            fails.push((
                format!(
                    "HTTP boot uses {eff} ({}), but the inventory boots {} from {boot}",
                    nic_mac.as_deref().unwrap_or("no such NIC"),
                    node.name
                ),
                match boot_id {
                    Some(b) => format!("set HttpDev1Interface (http_boot.interface) to {b}"),
                    None => "fix the boot NIC's MAC first (bmc.boot-nic)".into(),
                },
            ));
        }
    }
    let mut changes = vec![];
    if let Some((name, d)) = &desired {
        match bmc.bios_registry().await.ok().and_then(|r| Registry::from_json(&r).ok()) {
            Some(reg) => {
                let p = bios::plan(&reg, &current, d);
                changes = p
                    .passes
                    .iter()
                    .flatten()
                    .map(|c| {
                        let (now, want) = (text(Some(&c.current)), text(Some(&c.desired)));
                        format!("{}: {} -> {}", c.attribute, now.unwrap_or_default(), want.unwrap_or_default())
                    })
                    .collect();
                for r in &p.refused {
                    fails.push((
                        format!("profile {name}: {} = {} cannot be set: {}", r.attribute, r.value, r.reason),
                        "change the BIOS profile: the BMC's attribute registry refuses this value".into(),
                    ));
                }
            }
            None => {
                changes =
                    d.iter().filter(|(k, v)| current.get(*k) != Some(*v)).map(|(k, v)| format!("{k} -> {v}")).collect()
            }
        }
    }
    if !fails.is_empty() {
        let (saw, fix): (Vec<String>, Vec<String>) = fails.into_iter().unzip();
        return Check::fail(id, saw.join("; "), fix.join("; "));
    }
    if !changes.is_empty() || !pending.is_empty() {
        let mut saw = vec![];
        if !changes.is_empty() {
            saw.push(format!("{} attribute(s) differ from the plan: {}", changes.len(), changes.join(", ")));
        }
        if !pending.is_empty() {
            saw.push(format!("values staged by someone and not applied yet: {}", pending.join(", ")));
        }
        if desired.is_none() {
            // No BIOS step runs for this node: nothing clears them, and our reset applies them.
            return Check::fail(
                id,
                saw.join("; "),
                "clear them (Dell: the Bios/Settings ClearPending action, or the iDRAC UI): apply's netboot reset would apply them",
            );
        }
        return Check::warn(
            id,
            saw.join("; "),
            "none needed: metal6 apply clears stale pending values and stages the plan's in a BIOS job (or metal6 bmc bios apply --reboot)",
        );
    }
    let mode = cur("BootMode").unwrap_or_else(|| "not reported".into());
    Check::ok(
        id,
        if http && current.contains_key("HttpDev1EnDis") {
            format!(
                "BootMode {mode}, HTTP boot {}/{} on {}, as planned",
                cur("HttpDev1EnDis").unwrap_or_default(),
                cur("HttpDev1Protocol").unwrap_or_default(),
                cur("HttpDev1Interface").unwrap_or_default()
            )
        } else {
            format!("BootMode {mode}; the plan changes nothing")
        },
    )
}

async fn firmware_check(inv: &Inventory, node: &Node, bmc: &Bmc) -> Check {
    let id = "bmc.firmware";
    let Some(name) = inv.profile_of(node).firmware.as_deref() else {
        return Check::skip(id, "the node's profile names no firmware baseline");
    };
    let Some(baseline) = inv.firmware_baselines.get(name) else {
        return Check::skip(id, format!("no baseline {name}"));
    };
    let fw = match bmc.firmware().await {
        Ok(f) => f,
        Err(e) => {
            return Check::fail(
                id,
                format!("the firmware inventory cannot be read: {}", chain(&e)),
                "check the BMC's UpdateService",
            );
        }
    };
    let plan = metal6_redfish::firmware::plan(baseline, &fw);
    let installed = |k| {
        plan.steps.iter().find(|s| s.kind == k).and_then(|s| s.installed.clone()).unwrap_or_else(|| "not found".into())
    };
    let behind: Vec<String> = plan
        .updates()
        .map(|s| format!("{:?} {} -> {}", s.kind, s.installed.as_deref().unwrap_or("?"), s.baseline))
        .collect();
    let never: Vec<String> = plan
        .gates
        .iter()
        .filter(|g| !g.holds_now && !g.holds_after)
        .map(|g| format!("{g} (installed {})", installed(g.component)))
        .collect();
    if !never.is_empty() {
        return Check::fail(
            id,
            never.join("; "),
            format!(
                "add the component at or above the gate's version to baseline {name} (apply installs it first), or update it by hand"
            ),
        );
    }
    let later: Vec<String> = plan
        .gates
        .iter()
        .filter(|g| !g.holds_now)
        .map(|g| format!("{g} (installed {})", installed(g.component)))
        .collect();
    if !later.is_empty() || !behind.is_empty() {
        return Check::warn(
            id,
            format!("baseline {name}: {}", later.into_iter().chain(behind).collect::<Vec<_>>().join("; ")),
            "none needed: metal6 apply updates these first, one at a time (or metal6 bmc firmware apply --reboot)",
        );
    }
    Check::ok(id, format!("baseline {name}: every component current, {} gate(s) hold", plan.gates.len()))
}

async fn jobs_check(bmc: &Bmc) -> Check {
    let id = "bmc.jobs";
    let open = match bmc.open_jobs().await {
        Ok(o) => o,
        Err(e) => {
            return Check::fail(
                id,
                format!("the job queue cannot be read: {}", chain(&e)),
                "check the BMC's job service",
            );
        }
    };
    let show = |j: &metal6_redfish::bmc::JobStatus| {
        format!("{} ({}, {})", j.id, j.job_type.as_deref().unwrap_or("unknown type"), j.state)
    };
    // Kinds apply itself makes (and follows, or deletes when stale), and jobs already running
    // (apply waits for them) are warnings: after a crash, apply resumes its own. Anything else
    // queued runs at the next reset, which apply's would be.
    let ours = |j: &&metal6_redfish::bmc::JobStatus| {
        j.state == "Running" || matches!(j.job_type.as_deref(), Some("BIOSConfiguration" | "FirmwareUpdate"))
    };
    let (known, others): (Vec<_>, Vec<_>) = open.iter().partition(ours);
    if !others.is_empty() {
        return Check::fail(
            id,
            format!(
                "open jobs: {}: the next reset (apply's) runs them with ours",
                others.iter().map(|j| show(j)).collect::<Vec<_>>().join(", ")
            ),
            "let them finish, or delete them from the iDRAC job queue, before apply resets the node",
        );
    }
    if !known.is_empty() {
        return Check::warn(
            id,
            format!(
                "open jobs: {}: a stale BIOS configuration job blocks a new one (SYS011), a scheduled update runs at the next reset",
                known.iter().map(|j| show(j)).collect::<Vec<_>>().join(", ")
            ),
            "none if apply made them (it resumes its own, and its BIOS step deletes stale BIOS configuration jobs); otherwise delete them from the iDRAC job queue",
        );
    }
    Check::ok(
        id,
        if bmc.vendor.as_deref() == Some("Dell") {
            "no open jobs".to_owned()
        } else {
            "no Dell job queue (not an iDRAC): nothing queued to run".to_owned()
        },
    )
}
