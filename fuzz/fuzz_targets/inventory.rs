//! Inventory text as operators write it (any bytes, converted lossily to UTF-8 the way an
//! editor would show them; valid UTF-8 is taken as is) through everything pure that reads it:
//!
//! - `check_str`: YAML parse, schema check, typed model, validation, diagnostics rendered — and
//!   again with a diagnostics limit (`check_str_with`), which must agree on validity;
//! - for a valid inventory, what the commands and servers derive from the model: the per-node
//!   plan, the RA, the DHCPv6 engine, the per-node documents (iPXE, installer plan, networkd),
//!   BIOS profiles as Redfish attributes, firmware plans and the cluster stage's files;
//! - `writeback`: the NICs without a MAC, and filling some in as a text edit.
//!
//! Must never panic (Architecture Invariant: bad input is a diagnostic, never an abort), and:
//! an inventory comes back exactly when there is no error; a successful MAC fill still parses
//! and each filled NIC is no longer missing its MAC.
//!
//! Not covered: reading the file (`load`: size limit, non-UTF-8 refusal) and resolving secrets
//! (`ident::SecretRef::resolve`: env and files).
#![no_main]

use libfuzzer_sys::fuzz_target;
use metal6_inventory::ident::MacAddr;
use metal6_inventory::{Inventory, Limits, writeback};

/// Nodes whose derived documents are rendered, so one huge valid inventory stays fast.
const MAX_NODES: usize = 8;
/// NICs filled per input.
const MAX_FILLS: usize = 4;

fn derived(inv: &Inventory) {
    let _ = metal6_inventory::plan::plan(inv);
    let ra = metal6_ra::build_ra(&metal6_ra::RaConfig::from_inventory(inv, Some(MacAddr([2, 0, 0, 0, 0, 1]))));
    assert_eq!(ra.first(), Some(&metal6_ra::ICMPV6_ROUTER_ADVERTISEMENT));
    let _ = metal6_dhcp6::policy::Engine::new(
        inv.clone(),
        metal6_dhcp6::policy::Config { server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1], rapid_commit: true },
    );
    let cx = metal6_render::Context { token: "0123456789abcdef0123456789abcdef", image_sha256: None };
    for node in inv.nodes.iter().take(MAX_NODES) {
        let _ = metal6_inventory::plan::node_plan(inv, node);
        let _ = metal6_render::ipxe_script(inv, node);
        let _ = metal6_render::installer_plan(inv, node, &cx);
        let _ = metal6_render::network_unit(inv, node);
        let _ = metal6_redfish::bios::desired_for(inv, node);
    }
    for baseline in inv.firmware_baselines.values() {
        let _ = metal6_redfish::firmware::plan(baseline, &[]);
    }
    let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let hash = format!("sha256:{key}");
    let _ = metal6_cluster::render(
        inv,
        &metal6_cluster::Options {
            join_token: "abcdef.0123456789abcdef",
            certificate_key: key,
            ca_cert_hash: Some(hash.as_str()),
            emulation: None,
        },
    );
}

fn fill_missing_macs(text: &str) {
    let Ok(missing) = writeback::missing_macs(text) else { return };
    let mut fills: Vec<(String, String, MacAddr)> = Vec::new();
    for m in &missing {
        if fills.len() < MAX_FILLS && !fills.iter().any(|(n, c, _)| *n == m.node && *c == m.nic) {
            let i = u8::try_from(fills.len()).unwrap_or(u8::MAX);
            fills.push((m.node.clone(), m.nic.clone(), MacAddr([2, 0, 0, 0x6d, 0, i])));
        }
    }
    if fills.is_empty() {
        return;
    }
    let Ok(out) = writeback::fill_macs(text, &fills) else { return };
    let after = writeback::missing_macs(&out).unwrap_or_else(|e| panic!("filling MACs broke the file: {e}\n{out}"));
    // The first NIC of each name got its MAC: one fewer missing under that name.
    fn count(list: &[writeback::MissingMac], node: &str, nic: &str) -> usize {
        list.iter().filter(|m| m.node == node && m.nic == nic).count()
    }
    for (node, nic, _) in &fills {
        assert_eq!(
            count(&after, node, nic) + 1,
            count(&missing, node, nic),
            "NIC {nic} of node {node} still has no MAC after the fill:\n{out}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (inv, diags) = metal6_inventory::check_str(&text, "fuzz.yaml");
    assert_eq!(inv.is_some(), !diags.has_errors(), "an inventory comes back exactly when there is no error");
    let _ = diags.render();
    let limited = Limits { max_diagnostics: 3, ..Limits::DEFAULT };
    let (inv_limited, diags_limited) = metal6_inventory::check_str_with(&text, "fuzz.yaml", limited);
    assert_eq!(inv_limited.is_some(), inv.is_some(), "the diagnostics limit changed validity");
    let _ = diags_limited.render();
    if let Some(inv) = &inv {
        derived(inv);
    }
    fill_missing_macs(&text);
});
