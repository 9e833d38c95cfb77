//! Firmware baselines: which components a node must update, in which order, and which gates
//! hold. Pure: the inventory's baseline and the BMC's firmware inventory in, a [`FwPlan`] out.
//!
//! Order is iDRAC → BIOS → NIC → storage → other: a newer iDRAC is what makes later updates
//! and BIOS jobs behave (notes §9), and a BIOS below the gate version cannot IPv6 HTTP boot.
//! Versions only go up: a component newer than the baseline is reported, never downgraded.

use metal6_inventory::model::{ComponentKind, FirmwareBaseline, GatedStep, Version};
use serde::Serialize;

use crate::bmc::Firmware;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Update,
    UpToDate,
    /// Installed is newer than the baseline: left alone.
    Newer,
    /// The BMC lists no such component.
    NotFound,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub kind: ComponentKind,
    /// The BMC's names of the matched devices (a NIC model can sit in several slots).
    pub devices: Vec<String>,
    /// The lowest installed version among them.
    pub installed: Option<String>,
    pub baseline: String,
    pub action: Action,
    pub image_url: String,
    /// The package's SHA-256 from the baseline, checked before the BMC is told to fetch it.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateStatus {
    pub component: ComponentKind,
    pub min_version: String,
    pub before: GatedStep,
    /// Holds with what is installed now.
    pub holds_now: bool,
    /// Holds once the plan ran.
    pub holds_after: bool,
}

/// `gate: bios >= 1.8.2 before ipv6-http-boot: holds now, holds after` (what `bmc firmware
/// plan` and `metal6 plan` print).
impl std::fmt::Display for GateStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn named<T: Serialize>(v: &T) -> String {
            serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        }
        let holds = |b: bool| if b { "holds" } else { "fails" };
        write!(
            f,
            "gate: {} >= {} before {}: {} now, {} after",
            named(&self.component),
            self.min_version,
            named(&self.before),
            holds(self.holds_now),
            holds(self.holds_after)
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FwPlan {
    pub steps: Vec<Step>,
    pub gates: Vec<GateStatus>,
}

impl FwPlan {
    pub fn updates(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.action == Action::Update)
    }

    /// Whether `step` may run now (every gate on it holds).
    pub fn allows(&self, step: GatedStep) -> bool {
        self.gates.iter().filter(|g| g.before == step).all(|g| g.holds_now)
    }
}

/// Dell lists `Installed-`, `Current-`, `Previous-` and `Available-` entries per device; the
/// running version is `Installed-` (DMTF services have no prefix).
fn installed(fw: &Firmware) -> bool {
    !["Current-", "Previous-", "Available-"].iter().any(|p| fw.id.starts_with(p))
}

fn is_kind(fw: &Firmware, kind: ComponentKind) -> bool {
    let id = &fw.id;
    match kind {
        ComponentKind::Idrac => id.contains("__iDRAC.") || fw.name.contains("Remote Access Controller"),
        ComponentKind::Bios => id.contains("__BIOS.") || fw.name == "BIOS",
        ComponentKind::Nic => id.contains("__NIC."),
        ComponentKind::Storage => id.contains("__RAID.") || id.contains("__Disk.") || id.contains("__NonRAID."),
        // Only with the component's `name` (applied by the caller): alone it would match all.
        ComponentKind::Other => false,
    }
}

pub fn plan(baseline: &FirmwareBaseline, inventory: &[Firmware]) -> FwPlan {
    let mut comps: Vec<_> = baseline.components.iter().collect();
    // Stable: components of one kind keep the inventory's order.
    comps.sort_by_key(|c| c.kind);
    let mut steps = Vec::new();
    for c in comps {
        let matched: Vec<&Firmware> = inventory
            .iter()
            .filter(|f| installed(f) && (is_kind(f, c.kind) || (c.kind == ComponentKind::Other && c.name.is_some())))
            .filter(|f| c.name.as_deref().is_none_or(|n| f.name.contains(n)))
            .collect();
        let lowest = matched
            .iter()
            .filter_map(|f| f.version.parse::<Version>().ok().map(|v| (v, f)))
            .min_by(|a, b| a.0.cmp(&b.0));
        let (installed, action) = match (&lowest, matched.first()) {
            (Some((v, _)), _) if *v < c.version => (Some(v.to_string()), Action::Update),
            (Some((v, _)), _) if *v > c.version => (Some(v.to_string()), Action::Newer),
            (Some((v, _)), _) => (Some(v.to_string()), Action::UpToDate),
            // A version we cannot compare (`00.2A.2B`): update unless it is the same string.
            (None, Some(f)) if f.version == c.version.to_string() => (Some(f.version.clone()), Action::UpToDate),
            (None, Some(f)) => (Some(f.version.clone()), Action::Update),
            (None, None) => (None, Action::NotFound),
        };
        steps.push(Step {
            kind: c.kind,
            devices: matched.iter().map(|f| f.name.clone()).collect(),
            installed,
            baseline: c.version.to_string(),
            action,
            image_url: c.image_url.clone(),
            sha256: c.sha256.clone(),
        });
    }
    let version_of = |kind: ComponentKind, after: bool| -> Option<Version> {
        let s = steps.iter().find(|s| s.kind == kind)?;
        if after && s.action == Action::Update {
            return s.baseline.parse().ok();
        }
        s.installed.as_deref()?.parse().ok()
    };
    let gates = baseline
        .gates
        .iter()
        .map(|g| {
            let min: Option<Version> = g.min_version.parse().ok();
            let holds = |after: bool| match (version_of(g.component, after), &min) {
                (Some(v), Some(m)) => &v >= m,
                _ => false,
            };
            GateStatus {
                component: g.component,
                min_version: g.min_version.clone(),
                before: g.before,
                holds_now: holds(false),
                holds_after: holds(true),
            }
        })
        .collect();
    FwPlan { steps, gates }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metal6_inventory::model::{FirmwareComponent, FirmwareGate};

    fn fw(id: &str, name: &str, version: &str) -> Firmware {
        Firmware { id: id.into(), name: name.into(), version: version.into(), updateable: true }
    }

    fn comp(kind: ComponentKind, name: Option<&str>, v: &str) -> FirmwareComponent {
        FirmwareComponent {
            kind,
            name: name.map(Into::into),
            version: v.parse().expect("version"),
            image_url: format!("http://[2001:db8::10]/{v}.EXE"),
            sha256: None,
        }
    }

    #[test]
    fn order_gates_and_no_downgrades() {
        let inv = vec![
            fw("Installed-159-1.8.2__BIOS.Setup.1-1", "BIOS", "1.8.2"),
            fw("Previous-159-1.2.4__BIOS.Setup.1-1", "BIOS", "1.2.4"),
            fw(
                "Installed-25227-6.00.30.00__iDRAC.Embedded.1-1",
                "Integrated Dell Remote Access Controller",
                "6.00.30.00",
            ),
            fw(
                "Installed-108089-21.80.16.95__NIC.Integrated.1-1-1",
                "Broadcom Adv. Dual 25Gb Ethernet - E4:3D:1A:13:27:F0",
                "21.80.16.95",
            ),
            fw(
                "Installed-108089-21.80.16.95__NIC.Integrated.1-2-1",
                "Broadcom Adv. Dual 25Gb Ethernet - E4:3D:1A:13:27:F1",
                "21.80.16.95",
            ),
            fw("Installed-0-24.40.10.00__NIC.Slot.5-1", "Mellanox Network Adapter - B8:3F:D2:90:97:C4", "24.40.10.00"),
        ];
        let baseline = FirmwareBaseline {
            components: vec![
                comp(ComponentKind::Nic, Some("Broadcom"), "22.91.5"),
                comp(ComponentKind::Bios, None, "1.15.2"),
                comp(ComponentKind::Nic, Some("Mellanox"), "24.0.0"),
                comp(ComponentKind::Idrac, None, "7.00.00.181"),
                comp(ComponentKind::Storage, Some("PERC"), "1.0"),
            ],
            gates: vec![
                FirmwareGate {
                    component: ComponentKind::Bios,
                    min_version: "1.10.0".into(),
                    before: GatedStep::Ipv6HttpBoot,
                },
                FirmwareGate {
                    component: ComponentKind::Idrac,
                    min_version: "6.00.30.00".into(),
                    before: GatedStep::BiosApply,
                },
            ],
        };
        let p = plan(&baseline, &inv);
        let kinds: Vec<(ComponentKind, Action)> = p.steps.iter().map(|s| (s.kind, s.action)).collect();
        assert_eq!(
            kinds,
            vec![
                (ComponentKind::Idrac, Action::Update),
                (ComponentKind::Bios, Action::Update),
                (ComponentKind::Nic, Action::Update),
                (ComponentKind::Nic, Action::Newer),
                (ComponentKind::Storage, Action::NotFound),
            ]
        );
        assert_eq!(p.steps[1].installed.as_deref(), Some("1.8.2"), "Installed-, not Previous-");
        assert_eq!(p.steps[2].devices.len(), 2, "both Broadcom ports");
        assert!(!p.allows(GatedStep::Ipv6HttpBoot) && p.gates[0].holds_after);
        assert!(p.allows(GatedStep::BiosApply));
    }
}
