//! The resolved plan of each node: everything metal6 will do for it, with every default and
//! reference resolved. `metal6 inventory show` prints it; the servers use the same functions,
//! so what an operator reviews is what the node gets.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ident::{MacAddr, SecretRef};
use crate::model::{
    AddressSource, AttributeValue, BootMethod, DiskSelector, FirmwareComponent, FirmwareGate, Inventory, Node, Role,
    SysctlValue,
};

/// Path of the installer UKI under the HTTP root (UEFI HTTP boot).
pub const INSTALLER_HTTP_PATH: &str = "boot/installer.efi";
/// Path of the installer UKI under the TFTP root (PXEv6).
pub const INSTALLER_TFTP_PATH: &str = "installer.efi";
/// Path of the iPXE binary under the HTTP root.
pub const IPXE_HTTP_PATH: &str = "boot/ipxe.efi";

#[derive(Debug, Clone, Serialize)]
pub struct NodePlan {
    pub name: String,
    pub fqdn: String,
    pub role: Role,
    pub profile: String,
    pub segment: String,
    /// `address/prefix-length`.
    pub address: String,
    pub address_source: AddressSource,
    pub gateway: String,
    pub dns: Vec<String>,
    pub boot: BootPlan,
    pub nics: Vec<NicPlan>,
    pub disk: DiskSelector,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmc: Option<BmcPlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysctl: Option<Named<BTreeMap<String, SysctlValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<Named<BTreeMap<String, AttributeValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwarePlan>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootPlan {
    pub method: BootMethod,
    pub mac: MacAddr,
    /// What DHCPv6 hands out as bootfile-url (or what the BIOS is programmed with).
    pub url: String,
    /// The per-node iPXE script, for `ipxe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NicPlan {
    pub name: String,
    pub mac: MacAddr,
    pub boot: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BmcPlan {
    pub url: String,
    pub username: String,
    /// The reference only; the password itself is never part of a plan.
    pub password: SecretRef,
}

#[derive(Debug, Clone, Serialize)]
pub struct Named<T> {
    pub name: String,
    pub values: T,
}

#[derive(Debug, Clone, Serialize)]
pub struct FirmwarePlan {
    pub baseline: String,
    pub components: Vec<FirmwareComponent>,
    pub gates: Vec<FirmwareGate>,
}

/// The boot URL a node gets for its boot method.
pub fn boot_url(inv: &Inventory, node: &Node) -> BootPlan {
    let server = &inv.site.boot_server;
    let method = inv.profile_of(node).boot;
    let (url, script_url) = match method {
        BootMethod::UefiHttp | BootMethod::DhcpLessHttp => {
            (format!("{}{INSTALLER_HTTP_PATH}", inv.server_base(node)), None)
        }
        BootMethod::Pxe => (format!("{}{INSTALLER_TFTP_PATH}", server.tftp_base()), None),
        BootMethod::Ipxe => (
            format!("{}{IPXE_HTTP_PATH}", server.http_base()),
            Some(format!("{}v1/nodes/{}/ipxe", server.http_base(), node.name)),
        ),
    };
    BootPlan { method, mac: node.boot_mac(), url, script_url }
}

pub fn node_plan(inv: &Inventory, node: &Node) -> NodePlan {
    let profile = inv.profile_of(node);
    let seg = inv.segment_of(node);
    NodePlan {
        name: node.name.clone(),
        fqdn: node.fqdn.clone(),
        role: profile.role,
        profile: node.profile.clone(),
        segment: seg.name.clone(),
        address: format!("{}/{}", node.address, seg.prefix.prefix_len()),
        address_source: node.address_source,
        gateway: seg.router.to_string(),
        dns: inv.site.dns.iter().map(ToString::to_string).collect(),
        boot: boot_url(inv, node),
        nics: node
            .nics
            .iter()
            .map(|n| NicPlan { name: n.name.clone(), mac: n.mac, boot: n.boot || node.nics.len() == 1 })
            .collect(),
        disk: node.disk.clone(),
        image: profile.image.clone(),
        bmc: node.bmc.as_ref().map(|b| BmcPlan {
            url: b.redfish_url(),
            username: b.username.clone(),
            password: b.password.clone(),
        }),
        sysctl: named(&profile.sysctl, |n| inv.sysctl_profiles.get(n).cloned()),
        bios: named(&profile.bios, |n| inv.bios_profiles.get(n).map(|b| b.attributes.clone())),
        firmware: profile.firmware.as_ref().and_then(|n| {
            inv.firmware_baselines.get(n).map(|fb| {
                let mut components = fb.components.clone();
                // Update order: iDRAC first (it runs the others), then BIOS, then NICs.
                components.sort_by_key(|c| c.kind);
                FirmwarePlan { baseline: n.clone(), components, gates: fb.gates.clone() }
            })
        }),
        labels: node.labels.clone(),
    }
}

fn named<T>(name: &Option<String>, f: impl Fn(&str) -> Option<T>) -> Option<Named<T>> {
    name.as_ref().and_then(|n| f(n).map(|values| Named { name: n.clone(), values }))
}

pub fn plan(inv: &Inventory) -> Vec<NodePlan> {
    inv.nodes.iter().map(|n| node_plan(inv, n)).collect()
}
