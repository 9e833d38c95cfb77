//! Per-node documents rendered from `templates/` with askama: the iPXE script, the installer
//! plan and the installed system's systemd-networkd unit. Pure: inventory in, text out.
//!
//! Values come from the validated inventory and plan, so the network unit is correct by
//! construction (the node's inventory address, its segment's prefix length and gateway). JSON
//! values go through askama's `json` filter (serde_json), never string pasting. Documents can
//! carry the node's token; the server hands them only to that node.

pub mod timeline;

use std::collections::BTreeMap;

use askama::Template;
use metal6_inventory::model::{DiskSelector, Inventory, Node, SysctlValue};
use metal6_inventory::plan;

/// What a document needs besides the inventory.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The node's token for reporting events.
    pub token: &'a str,
    /// SHA-256 of the node image, from the image manifest, when known.
    pub image_sha256: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "node.ipxe", escape = "none")]
struct Ipxe<'a> {
    node: &'a Node,
    installer_url: String,
    server: String,
}

#[derive(Template)]
#[template(path = "node.network", escape = "none")]
struct Network<'a> {
    node: &'a Node,
    mac: String,
    mtu: u32,
    address: String,
    prefix_len: u8,
    gateway: String,
    dns: Vec<String>,
    domain: &'a str,
}

#[derive(Template)]
#[template(path = "installer-plan.json", escape = "none")]
struct InstallerPlan<'a> {
    node: &'a Node,
    image_url: String,
    image_sha256: Option<&'a str>,
    disk: &'a DiskSelector,
    mac: String,
    address: String,
    prefix_len: u8,
    gateway: String,
    dns: Vec<String>,
    domain: &'a str,
    mtu: u32,
    ssh_keys: &'a [String],
    sysctl: BTreeMap<String, SysctlValue>,
    events_url: String,
    token: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("rendering {document} for {node}")]
pub struct RenderError {
    pub document: &'static str,
    pub node: String,
    #[source]
    pub source: askama::Error,
}

fn err(document: &'static str, node: &Node) -> impl FnOnce(askama::Error) -> RenderError {
    let node = node.name.clone();
    move |source| RenderError { document, node, source }
}

/// askama drops a template's final newline; text files end with one.
fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The iPXE script: chain the installer UKI with the node's identity on its command line.
pub fn ipxe_script(inv: &Inventory, node: &Node) -> Result<String, RenderError> {
    let base = inv.site.boot_server.http_base();
    Ipxe { node, installer_url: format!("{base}{}", plan::INSTALLER_HTTP_PATH), server: base }
        .render()
        .map(with_newline)
        .map_err(err("ipxe", node))
}

/// systemd-networkd unit for the boot NIC of the installed system.
pub fn network_unit(inv: &Inventory, node: &Node) -> Result<String, RenderError> {
    let seg = inv.segment_of(node);
    Network {
        node,
        mac: node.boot_mac().to_string(),
        mtu: inv.site.mtu,
        address: node.address.to_string(),
        prefix_len: seg.prefix.prefix_len(),
        gateway: seg.router.to_string(),
        dns: inv.site.dns.iter().map(ToString::to_string).collect(),
        domain: &inv.site.domain,
    }
    .render()
    .map(with_newline)
    .map_err(err("network", node))
}

/// The installer's plan: what to write where, and the installed system's identity.
pub fn installer_plan(inv: &Inventory, node: &Node, cx: &Context<'_>) -> Result<String, RenderError> {
    let seg = inv.segment_of(node);
    let profile = inv.profile_of(node);
    let base = inv.server_base(node);
    InstallerPlan {
        node,
        image_url: format!("{base}images/{}/disk.raw", profile.image),
        image_sha256: cx.image_sha256,
        disk: &node.disk,
        mac: node.boot_mac().to_string(),
        address: node.address.to_string(),
        prefix_len: seg.prefix.prefix_len(),
        gateway: seg.router.to_string(),
        dns: inv.site.dns.iter().map(ToString::to_string).collect(),
        domain: &inv.site.domain,
        mtu: inv.site.mtu,
        ssh_keys: &inv.site.ssh_authorized_keys,
        sysctl: profile.sysctl.as_ref().and_then(|s| inv.sysctl_profiles.get(s)).cloned().unwrap_or_default(),
        events_url: format!("{base}v1/nodes/{}/events", node.name),
        token: cx.token,
    }
    .render()
    .map(with_newline)
    .map_err(err("installer-plan", node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn lab() -> Inventory {
        let src =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inventory/lab.yaml")).expect("lab");
        metal6_inventory::check_str(&src, "lab.yaml").0.expect("valid")
    }

    /// Golden files in tests/golden/render/; `METAL6_BLESS=1` rewrites them (review the diff).
    fn golden(name: &str, got: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/render").join(name);
        if std::env::var_os("METAL6_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            std::fs::write(&path, got).expect("write golden");
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "{name} differs from its golden file (METAL6_BLESS=1 to update)\n--- want\n{want}\n--- got\n{got}"
        );
    }

    const CX: Context<'static> = Context {
        token: "0123456789abcdef0123456789abcdef",
        image_sha256: Some("a3f1c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"),
    };

    #[test]
    fn lab_node_documents_match_golden_files() {
        let inv = lab();
        let n = &inv.nodes[0];
        golden("lab-node-1.ipxe", &ipxe_script(&inv, n).expect("ipxe"));
        golden("lab-node-1.network", &network_unit(&inv, n).expect("network"));
        golden("lab-node-1.plan.json", &installer_plan(&inv, n, &CX).expect("plan"));
    }

    #[test]
    fn plan_is_json_with_the_inventory_address() {
        let inv = lab();
        for n in &inv.nodes {
            let v: serde_json::Value =
                serde_json::from_str(&installer_plan(&inv, n, &CX).expect("plan")).expect("valid JSON");
            assert_eq!(v["network"]["address"], n.address.to_string());
            assert_eq!(v["network"]["prefix_len"], 64);
            assert_eq!(v["node"], n.name);
        }
    }

    #[test]
    fn network_unit_uses_the_segment_of_relayed_nodes() {
        let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inventory/example-dell.yaml"))
            .expect("dell");
        let inv = metal6_inventory::check_str(&src, "example-dell.yaml").0.expect("valid");
        let w12 = inv.node("w-12").expect("w-12");
        let unit = network_unit(&inv, w12).expect("network");
        assert!(unit.contains("Address=2001:db8:102::11c/64") && unit.contains("Gateway=2001:db8:102::1"), "{unit}");
        assert!(unit.contains("MTUBytes=9000"));
    }
}
