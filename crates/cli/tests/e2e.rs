//! The end-to-end path, as an operator runs it: `metal6 image build images/lab.yaml`, then
//! `metal6 lab up` boots a QEMU guest (OVMF, TCG) with a blank disk against a real
//! `metal6 serve`: UEFI HTTPv6 (and PXEv6/TFTP) boot → installer → image written → reboot
//! from disk → `ready`. Completion comes from the node's event stream (`lab up` follows it),
//! never from a sleep. Then the timeline is checked: the node had its inventory address at
//! every stage, the installed system runs with it, and the sysctl profiles are applied.
//!
//! Slow (minutes under TCG): `make e2e` runs it, and `make test` includes it.

#![allow(clippy::print_stderr)] // the test prints per-phase timings

mod common;

use std::path::{Path, PathBuf};

use common::root;
use serde_json::Value;

fn artifacts() -> PathBuf {
    common::lab_artifacts()
}

fn build_image() -> Value {
    common::build_lab_image()
}

fn recipe_sysctls() -> Vec<(String, i128)> {
    let text = std::fs::read_to_string(root().join("images/lab.yaml")).expect("recipe");
    let mut in_sysctl = false;
    let mut out = vec![];
    for line in text.lines() {
        if line.starts_with("sysctl:") {
            in_sysctl = true;
            continue;
        }
        if in_sysctl {
            let Some((k, v)) = line.strip_prefix("  ").and_then(|l| l.split_once(':')) else { break };
            out.push((k.trim().to_owned(), v.trim().parse().expect("numeric sysctl")));
        }
    }
    assert!(out.len() > 10, "recipe sysctls: {out:?}");
    out
}

fn check_sysctls(node: &str, ready: &Value) {
    // The image's profile (recipe), raise-only: every value at least what the recipe says.
    for (k, want) in recipe_sysctls() {
        let got: i128 = ready["image_sysctl"][&k]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{node}: {k} not read back: {}", ready["image_sysctl"]));
        assert!(got >= want, "{node}: {k} = {got}, recipe wants {want}");
    }
    // The inventory's per-node profile (lab.yaml dense-pods), read back by the agent.
    for (k, want) in
        [("net.ipv6.neigh.default.gc_thresh3", 65536), ("kernel.pid_max", 4_194_304), ("vm.max_map_count", 1_048_576)]
    {
        let got: i128 = ready["sysctl"][k].as_str().and_then(|v| v.parse().ok()).expect("node sysctl");
        assert!(got >= want, "{node}: {k} = {got}");
    }
}

/// The run's SVG timeline (`lab up` writes it with the function `metal6 status --timeline`
/// uses): a bar for each phase the node went through, left to right in time, starting with
/// the firmware's DHCP and ending with `ready`; their order of first appearance is the order
/// `lab up` saw the phases live (its summary, which also holds the kernel phases it read from
/// the console: those are not events and have no bar).
fn check_timeline_svg(node: &str, svg: &Path, summary: &Value) {
    let text = std::fs::read_to_string(svg).unwrap_or_else(|e| panic!("{}: {e}", svg.display()));
    let key = format!(r#"data-node="{node}" data-phase=""#);
    let bars: Vec<(&str, f64)> = text
        .match_indices(&key)
        .map(|(at, m)| {
            let rest = &text[at + m.len()..];
            let phase = &rest[..rest.find('"').unwrap_or(0)];
            let x = rest
                .split_once(r#" x=""#)
                .and_then(|(_, r)| r.split('"').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            (phase, x)
        })
        .collect();
    let phases: Vec<&str> = bars.iter().map(|(p, _)| *p).collect();
    assert_eq!(phases.first(), Some(&"firmware-dhcp"), "{node}: {phases:?}");
    assert_eq!(phases.last(), Some(&"ready"), "{node}: {phases:?}");
    assert!(bars.windows(2).all(|w| w[0].1 <= w[1].1), "{node}: bars left to right: {bars:?}");
    assert!(phases.windows(2).all(|w| w[0] != w[1]), "{node}: a bar per phase change: {phases:?}");
    let mut first: Vec<&str> = vec![];
    for p in &phases {
        if !first.contains(p) {
            first.push(p);
        }
    }
    let live: Vec<&str> = summary["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p[0].as_str())
        .filter(|p| phases.contains(p))
        .collect();
    assert_eq!(first, live, "{node}: the timeline's phases in the order lab up saw them");
    for p in ["netboot", "installer", "writing-image", "installed"] {
        assert!(phases.contains(&p), "{node}: {p} in the timeline: {phases:?}");
    }
}

fn print_timings(summary: &Value) {
    eprintln!("{} {} in {:.1} s", summary["node"], summary["result"], summary["seconds"].as_f64().unwrap_or(0.0));
    for p in summary["phases"].as_array().into_iter().flatten() {
        eprintln!("  {:<14} at {:7.1} s", p[0].as_str().unwrap_or("?"), p[1].as_f64().unwrap_or(0.0));
    }
}

#[test]
fn blank_disk_to_ready_over_ipv6_http_then_pxe() {
    if let Some(why) = common::cannot_run() {
        eprintln!("SKIP: {why}");
        return;
    }
    for tool in ["qemu-system-x86_64", "mmdebstrap", "mkfs.vfat", "sfdisk"] {
        if !common::have(tool) {
            assert!(std::env::var_os("CI").is_none(), "{tool} is not installed: `make deps` should have installed it");
            eprintln!("SKIP: {tool} is not installed (run `make deps`)");
            return;
        }
    }
    let report = build_image();
    eprintln!("image build: {}", report["stages"]);
    assert!(Path::new(&artifacts().join("images/lab/disk.raw.sha256")).exists());

    // UEFI HTTP boot (lab-node-1).
    let (summary, events, work) = common::lab::up("inventory/lab.yaml", "lab-node-1");
    print_timings(&summary);
    check_timeline_svg("lab-node-1", &work.join("timeline.svg"), &summary);
    let fetch = events.iter().find(|e| e["kind"] == "boot-fetch").expect("firmware fetched the installer");
    assert_eq!(fetch["source"], "http");
    assert_eq!(fetch["path"], "/boot/installer.efi");
    let ready = common::lab::check_timeline("lab-node-1", "fd00:6d:1::100", "firmware-http", &events);
    check_sysctls("lab-node-1", &ready);
    let written = events.iter().find(|e| e["phase"] == "image-written").expect("image-written");
    let want_sha = std::fs::read_to_string(artifacts().join("images/lab/disk.raw.sha256")).expect("sha");
    assert_eq!(Some(written["sha256"].as_str().unwrap_or("")), want_sha.split_whitespace().next());
    let test = "e2e.rs: blank_disk_to_ready_over_ipv6_http_then_pxe";
    common::lab::proved_cell("OVMF HTTP", "direct", test, "lab-node-1: DHCPv6 + RA, installer.efi over HTTP");
    common::lab::proved_cell("installer", "direct", test, "lab-node-1: DHCPv6 lease, plan, image written");
    common::lab::proved_cell("installed OS", "direct", test, "lab-node-1: ready on its inventory address");

    // PXEv6 over our TFTP (lab-node-2): the same installer, the same checks.
    let (summary, events, _) = common::lab::up("inventory/lab.yaml", "lab-node-2");
    print_timings(&summary);
    let fetch = events.iter().find(|e| e["kind"] == "boot-fetch").expect("firmware fetched the installer");
    assert_eq!(fetch["source"], "tftp");
    let ready = common::lab::check_timeline("lab-node-2", "fd00:6d:1::101", "firmware-pxe", &events);
    check_sysctls("lab-node-2", &ready);
    common::lab::proved_cell("OVMF PXE", "direct", test, "lab-node-2: DHCPv6 + RA, installer.efi over TFTP");
}
