//! Redfish answers as a BMC sends them: any body bytes become a JSON value exactly as
//! `client` reads every answer (`client::fuzzing::body_of`: empty → null, JSON, or the text),
//! and that one value is handed to every reader metal6 has for BMC documents:
//!
//! - error bodies: `@Message.ExtendedInfo` / `error.code` / plain text (`extended_info`);
//! - collections and links (`members`, `link`), and job ids from `Location`s (`job_id`);
//! - Dell jobs, DMTF jobs and tasks (`job_status`, then `is_final` / `succeeded` / `failed`);
//! - firmware inventory members (`firmware_of`; an array stands for a whole collection), then
//!   the firmware plan against the Dell example's baseline (`firmware::plan`);
//! - BIOS attributes (`attributes`) and the attribute registry (`bios::Registry::from_json`),
//!   then BIOS planning (`bios::plan`) of the Dell example's profiles and of a profile made
//!   from the registry itself, against the document's own attributes as current values.
//!
//! Must never panic, and: a firmware plan has a step per baseline component, never updates a
//! component to an older version, and no gate that holds stops holding; a BIOS plan
//! accounts for every desired attribute exactly once (a pass, unchanged or refused), in at most
//! three non-empty passes, each change setting the desired value.
//!
//! Not covered: HTTP, TLS, sessions and retries (`client`: headers, not bodies), and the
//! facade's request sequences (`bmc::Bmc`); those run against the iDRAC simulator and
//! sushy-tools (`crates/cli/tests/redfish.rs`, `sushy.rs`).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metal6_inventory::Inventory;
use metal6_inventory::model::Version;
use metal6_redfish::bios::{self, Registry};
use metal6_redfish::bmc::{self, fuzzing as docs};
use metal6_redfish::client::fuzzing as answers;
use metal6_redfish::firmware;
use serde_json::Value;

/// Registry attributes turned into a desired profile (bounded work per input).
const MAX_SYNTH_ATTRS: usize = 64;

/// The Dell example inventory: its firmware baselines and its nodes' BIOS profiles.
fn fixture() -> &'static (Inventory, Vec<BTreeMap<String, Value>>) {
    static F: OnceLock<(Inventory, Vec<BTreeMap<String, Value>>)> = OnceLock::new();
    F.get_or_init(|| {
        let src = include_str!("../../inventory/example-dell.yaml");
        let (inv, diags) = metal6_inventory::check_str(src, "example-dell.yaml");
        let inv = inv.unwrap_or_else(|| panic!("example-dell.yaml must be valid:\n{}", diags.render()));
        let mut profiles: Vec<BTreeMap<String, Value>> =
            inv.nodes.iter().filter_map(|n| bios::desired_for(&inv, n)).map(|(_, attrs)| attrs).collect();
        profiles.dedup();
        (inv, profiles)
    })
}

fn check_job(doc: &Value) {
    let j = docs::job_status(doc, "/redfish/v1/Managers/iDRAC.Embedded.1/Oem/Dell/Jobs/JID_1");
    let _ = (j.is_final(), j.succeeded(), j.failed());
}

fn check_firmware(inv: &Inventory, body: &Value) {
    let docs_in: Vec<&Value> = match body {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let fw: Vec<bmc::Firmware> = docs_in.into_iter().map(docs::firmware_of).collect();
    for baseline in inv.firmware_baselines.values() {
        let plan = firmware::plan(baseline, &fw);
        assert_eq!(plan.steps.len(), baseline.components.len());
        for s in plan.updates() {
            let (Some(installed), Ok(target)) =
                (s.installed.as_deref().and_then(|v| v.parse::<Version>().ok()), s.baseline.parse::<Version>())
            else {
                continue;
            };
            assert!(installed < target, "{:?}: update from {installed} to {target} is not an upgrade", s.kind);
        }
        for g in &plan.gates {
            // Versions only go up, so a gate that holds now still holds after the plan.
            assert!(!g.holds_now || g.holds_after, "gate on {:?} {} stops holding", g.component, g.min_version);
        }
    }
}

/// A desired profile from the registry itself: for each enumeration, a value other than the
/// current one, so planning has real passes, read-only rules and forced values to weigh.
fn synthesized(reg: &Registry, current: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    reg.attributes
        .values()
        .filter_map(|a| {
            let cur = current.get(&a.attribute_name);
            let pick = a.value.iter().map(|v| Value::String(v.value_name.clone())).find(|v| Some(v) != cur)?;
            Some((a.attribute_name.clone(), pick))
        })
        .take(MAX_SYNTH_ATTRS)
        .collect()
}

fn check_bios_plan(reg: &Registry, current: &BTreeMap<String, Value>, desired: &BTreeMap<String, Value>) {
    let plan = bios::plan(reg, current, desired);
    assert!(plan.passes.len() <= 3, "{} passes", plan.passes.len());
    for (attr, want) in desired {
        let in_passes: Vec<&bios::Change> = plan.passes.iter().flatten().filter(|c| &c.attribute == attr).collect();
        let unchanged = plan.unchanged.iter().filter(|s| &s.attribute == attr).count();
        let refused = plan.refused.iter().filter(|r| &r.attribute == attr).count();
        assert_eq!(
            in_passes.len() + unchanged + refused,
            1,
            "{attr} accounted for {in_passes:?} {unchanged} {refused}"
        );
        for c in in_passes {
            assert_eq!(&c.desired, want, "{attr}");
        }
    }
    for pass in &plan.passes {
        assert!(!pass.is_empty(), "an empty pass");
    }
    let _ = plan.is_noop();
}

fuzz_target!(|data: &[u8]| {
    let (inv, profiles) = fixture();
    let body = answers::body_of(data);
    let _ = answers::extended_info(&body);
    if let Value::String(text) = &body {
        let _ = bmc::job_id(text);
    }
    for m in docs::members(&body) {
        let _ = bmc::job_id(&m);
    }
    for key in ["Systems", "Managers", "Bios", "EthernetInterfaces", "@odata.id"] {
        let _ = docs::link(&body, key);
    }
    check_job(&body);
    check_firmware(inv, &body);
    let current = docs::attributes(&body);
    let Ok(reg) = Registry::from_json(&body) else { return };
    for (attr, v) in &current {
        let _ = reg.check_value(attr, v);
        let _ = reg.read_only(attr, &current);
        let _ = reg.forced(attr, &current);
    }
    for desired in profiles {
        check_bios_plan(&reg, &current, desired);
    }
    check_bios_plan(&reg, &current, &synthesized(&reg, &current));
});
