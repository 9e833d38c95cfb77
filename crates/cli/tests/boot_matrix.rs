//! The cells of the IPv6 boot matrix beyond the provisioning link's OVMF HTTP and PXE boots
//! (those are e2e.rs), blank disk → `ready` in QEMU against a real `metal6 serve`, nodes from
//! inventory/lab-matrix.yaml:
//!
//! - **relayed**: the node on its own /64 behind a router namespace (radvd for the segment's
//!   RAs, ISC `dhcrelay -6` relaying to the boot server): UEFI HTTP boot, installer and the
//!   installed system all on the segment's inventory address, every DHCPv6 exchange relayed.
//! - **iPXE**: OVMF HTTP-boots Debian's iPXE (snponly.efi), iPXE runs its own DHCPv6 (user
//!   class "iPXE"), fetches its per-node script and chains the installer.
//! - **HTTPS**: OVMF trusts the lab CA (fw_cfg `etc/edk2/https/cacerts`) and fetches the
//!   installer over HTTPS (TLS 1.2 DHE: Debian 12's OVMF has no elliptic curves); the
//!   installer, built with the same CA, fetches its plan and image and reports over HTTPS,
//!   and so does the installed system. First the same boot with the firmware trusting another
//!   CA: the boot stops, and the node's timeline says it rejected the server's certificate.
//!
//! One test runs the cells one after another (two TCG guests at once would only slow both).
//! Each proved cell is recorded for docs/boot-matrix.md (`common::lab::proved_cell`).

#![allow(clippy::print_stderr)]

mod common;

use serde_json::Value;

const INVENTORY: &str = "inventory/lab-matrix.yaml";

fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn relayed_ipxe_and_https_boot_cells() {
    if let Some(why) = common::cannot_run() {
        eprintln!("SKIP: {why}");
        return;
    }
    for tool in ["qemu-system-x86_64", "mmdebstrap", "radvd", "dhcrelay"] {
        if !common::have(tool) {
            assert!(std::env::var_os("CI").is_none(), "{tool} is not installed: `make deps` should have installed it");
            eprintln!("SKIP: {tool} is not installed (run `make deps`)");
            return;
        }
    }
    let report = common::build_lab_image();
    let published: Vec<&str> =
        report["outputs"].as_array().into_iter().flatten().filter_map(|o| o["path"].as_str()).collect();
    assert!(published.contains(&"boot/ipxe.efi"), "the lab recipe publishes iPXE: {published:?}");
    let test = "boot_matrix.rs: relayed_ipxe_and_https_boot_cells";

    // Relayed: every DHCPv6 exchange came through the relay, with the segment's link-address.
    let (summary, events, work) = common::lab::up(INVENTORY, "matrix-relayed");
    eprintln!("matrix-relayed ready in {:.1} s", summary["seconds"].as_f64().unwrap_or(0.0));
    let ready = common::lab::check_timeline("matrix-relayed", "fd00:6d:2::100", "firmware-http", &events);
    let fetch = events_of(&events, "boot-fetch");
    assert_eq!(fetch.first().map(|e| &e["path"]), Some(&Value::from("/boot/installer.efi")), "{fetch:?}");
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("state/stats.json")).unwrap_or_default())
            .unwrap_or_default();
    let relayed = stats["received"]["relay-forw"].as_u64().unwrap_or(0);
    assert!(relayed >= 4, "the firmware's and the installer's exchanges came relayed: {stats}");
    let relay_log = std::fs::read_to_string(work.join("dhcrelay.log")).unwrap_or_default();
    assert!(relay_log.contains("Relaying Reply to fe80::5054:ff:fe6d:3"), "dhcrelay carried our replies:\n{relay_log}");
    // The installed system's route to the server is the segment's router.
    assert!(ready["addresses"].to_string().contains("fd00:6d:2::100"), "{ready}");
    common::lab::proved_cell("OVMF HTTP", "relayed", test, "radvd RA (M=1), dhcrelay -6, installer.efi over HTTP");
    common::lab::proved_cell("installer", "relayed", test, "lease through the relay; server via the segment's router");
    common::lab::proved_cell(
        "installed OS",
        "relayed",
        test,
        "ready reported from fd00:6d:2::100 through the segment's router",
    );

    // iPXE: firmware fetched iPXE, iPXE leased with its own DHCPv6 and fetched its script,
    // then the installer came through iPXE, and the node installed and came up.
    let (summary, events, _) = common::lab::up(INVENTORY, "matrix-ipxe");
    eprintln!("matrix-ipxe ready in {:.1} s", summary["seconds"].as_f64().unwrap_or(0.0));
    common::lab::check_timeline("matrix-ipxe", "fd00:6d:1::101", "firmware-http", &events);
    let order: Vec<String> = events
        .iter()
        .filter_map(|e| match e["kind"].as_str() {
            Some("boot-fetch") => Some(format!("fetch {}", e["path"].as_str().unwrap_or("?"))),
            Some("leased") if e["stage"] == "ipxe" => Some("ipxe lease".to_owned()),
            Some("document") if e["document"] == "ipxe" => Some("ipxe script".to_owned()),
            _ => None,
        })
        .collect();
    let want = ["fetch /boot/ipxe.efi", "ipxe lease", "ipxe script", "fetch /boot/installer.efi"];
    assert_eq!(&order[..4.min(order.len())], &want, "iPXE's path through the timeline: {order:?}");
    let ipxe_lease = events.iter().find(|e| e["kind"] == "leased" && e["stage"] == "ipxe").expect("ipxe lease");
    assert_eq!(ipxe_lease["addr"], "fd00:6d:1::101", "iPXE gets the inventory address too");
    common::lab::proved_cell(
        "iPXE",
        "direct",
        test,
        "snponly.efi: own DHCPv6 (user class iPXE), per-node script, installer chained",
    );

    // HTTPS: first the key ingredient broken (the firmware trusts another CA), then the boot.
    let tls = common::lab::lab_tls();
    let (https_artifacts, _) = common::lab::build_lab_image_with_ca(&tls.join("ca.pem"));
    let tls_dir = tls.display().to_string();
    let other = tls.join("other-ca.pem").display().to_string();
    let (_, events, _) = common::lab::up_with(
        INVENTORY,
        "matrix-https",
        &https_artifacts,
        &["--tls-dir", &tls_dir, "--firmware-ca", &other],
        "failed: tls-rejected",
    );
    let rejected = events.iter().find(|e| e["kind"] == "tls-rejected").expect("tls-rejected");
    assert_eq!(rejected["phase"], "failed");
    assert!(events.iter().all(|e| e["kind"] != "boot-fetch"), "nothing was fetched: {events:?}");
    let (summary, events, work) =
        common::lab::up_with(INVENTORY, "matrix-https", &https_artifacts, &["--tls-dir", &tls_dir], "ready");
    eprintln!("matrix-https ready in {:.1} s", summary["seconds"].as_f64().unwrap_or(0.0));
    common::lab::check_timeline("matrix-https", "fd00:6d:1::102", "firmware-http", &events);
    let serial = std::fs::read_to_string(work.join("serial.log")).unwrap_or_default();
    assert!(serial.contains("URI: https://[fd00:6d:1::1]:8443/boot/installer.efi"), "OVMF booted from the HTTPS URL");
    assert!(serial.contains("server https://[fd00:6d:1::1]:8443/"), "the installer talks HTTPS");
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("state/stats.json")).unwrap_or_default())
            .unwrap_or_default();
    // Firmware download, plan, network unit, image, events, the installed system's ready.
    assert!(stats["tls"]["ok"].as_u64().unwrap_or(0) >= 5, "{stats}");
    assert!(stats["tls"].get("rejected-by-client").is_none(), "{stats}");
    common::lab::proved_cell("OVMF HTTPS", "direct", test, "fw_cfg CA, TLS 1.2 DHE; a wrong CA stops the boot");
}
