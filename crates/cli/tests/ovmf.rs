//! Real UEFI firmware (Debian's OVMF, under QEMU TCG) netboots over IPv6 from `metal6 serve`.
//!
//! Only metal6 serves: DHCPv6, Router Advertisements and HTTP. The test is done when the
//! firmware's fetch of the boot URL the inventory planned for it, from the address the
//! inventory planned for it, shows up in the node's timeline — never after a fixed sleep. QEMU knobs follow shared/notes/ovmf-ipv6-http-boot.md §5-6: no
//! IPv4 stack (saves ~60 s), a 3 s front-page wait (the DAD race), no iPXE option ROM.

#![allow(clippy::print_stderr)] // the test reports its measured boot time

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Netns, Server, root, wait_for};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Boots OVMF with `mac` against `metal6 serve` (DHCPv6, RA, HTTP, TFTP) until the node's
/// fetch of `path` over `proto` ("http" or "tftp") is in its timeline. Returns the server and
/// that event; fails with the serial console and server log otherwise.
fn boot(mac: &str, node: &str, proto: &str, path: &str, pxe: bool) -> Option<(Server, serde_json::Value, Netns)> {
    if let Some(why) = common::cannot_run() {
        eprintln!("SKIP: {why}");
        return None;
    }
    for tool in ["qemu-system-x86_64"] {
        if !common::have(tool) {
            assert!(std::env::var_os("CI").is_none(), "{tool} is not installed: `make deps` should have installed it");
            eprintln!("SKIP: {tool} is not installed (run `make deps`)");
            return None;
        }
    }
    if !Path::new(OVMF_CODE).exists() {
        assert!(std::env::var_os("CI").is_none(), "{OVMF_CODE} missing: `make deps` installs ovmf");
        eprintln!("SKIP: {OVMF_CODE} missing (run `make deps`)");
        return None;
    }
    let ns = Netns::new();
    // The tap has no carrier until QEMU opens it, so give it its link-local address by hand:
    // RAs from a global source are ignored by OVMF (notes §13.5).
    ns.exec(
        "ip tuntap add dev m6tap0 mode tap && sysctl -qw net.ipv6.conf.m6tap0.addr_gen_mode=1 && \
         ip link set m6tap0 up && ip -6 addr add fe80::1/64 dev m6tap0 nodad && ip -6 addr add fd00:6d:1::1/64 dev m6tap0 nodad",
    );
    let work = tempfile::tempdir().expect("tmp");
    let www = work.path().join("www");
    std::fs::create_dir_all(www.join("boot")).expect("www");
    // Any bytes will do for this test: what is checked is who fetched what, and how.
    std::fs::write(www.join("boot/installer.efi"), vec![0u8; 64 * 1024]).expect("nbp");
    std::fs::write(www.join("installer.efi"), vec![0u8; 64 * 1024]).expect("nbp");
    let www_arg = www.to_str().expect("utf-8").to_owned();
    let server = Server::start(&ns, &root().join("inventory/lab.yaml"), "m6tap0", &["--artifacts", &www_arg]);
    let vars = work.path().join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("copy OVMF vars");
    let serial = work.path().join("serial.log");
    let qemu_log = work.path().join("qemu.log");
    let drive_code = format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}");
    let drive_vars = format!("if=pflash,format=raw,unit=1,file={}", vars.display());
    let serial_arg = format!("file:{}", serial.display());
    let nic = format!("virtio-net-pci,netdev=n0,romfile=,bootindex=1,mac={mac}");
    let mut args = vec![
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-m",
        "1024",
        "-smp",
        "1",
        "-display",
        "none",
        "-serial",
        &serial_arg,
        "-drive",
        &drive_code,
        "-drive",
        &drive_vars,
        "-netdev",
        "tap,id=n0,ifname=m6tap0,script=no,downscript=no",
        "-device",
        &nic,
        "-fw_cfg",
        "name=opt/org.tianocore/IPv4Support,string=n",
        "-fw_cfg",
        "name=opt/org.tianocore/IPv4PXESupport,string=n",
        "-boot",
        "menu=on,splash-time=3000",
    ];
    if !pxe {
        args.extend(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]);
    }
    let started = std::time::Instant::now();
    let mut qemu = ns.spawn(Path::new("/usr/bin/qemu-system-x86_64"), &args, &qemu_log);
    let fetched = std::panic::catch_unwind(|| {
        wait_for("OVMF to fetch its boot file", Duration::from_secs(240), || {
            server.events().into_iter().find(|e| {
                e["kind"] == "boot-fetch"
                    && e["node"] == node
                    && e["source"] == proto
                    && e["path"].as_str().is_some_and(|p| p.trim_start_matches('/') == path)
            })
        })
    });
    let elapsed = started.elapsed();
    let _ = qemu.kill();
    let _ = qemu.wait();
    let fetch = fetched.unwrap_or_else(|_| {
        panic!(
            "OVMF never fetched {path} over {proto}\n--- serial\n{}\n--- metal6\n{}",
            std::fs::read_to_string(&serial).unwrap_or_default(),
            server.log_text()
        )
    });
    eprintln!("OVMF ({proto}) fetched its boot file {:.1} s after QEMU start: {fetch}", elapsed.as_secs_f64());
    Some((server, fetch, ns))
}

#[test]
fn ovmf_pxe_boots_over_metal6_tftp() {
    // lab-node-2 boots `pxe`: DHCPv6 hands its PXE firmware tftp://[fd00:6d:1::1]/installer.efi.
    let Some((server, fetch, _ns)) = boot("52:54:00:6d:00:02", "lab-node-2", "tftp", "installer.efi", true) else {
        return;
    };
    assert_eq!(fetch["bytes"], 64 * 1024);
    let events = server.events();
    assert!(
        events.iter().any(|e| e["kind"] == "leased"
            && e["node"] == "lab-node-2"
            && e["stage"] == "firmware-pxe"
            && e["addr"] == "fd00:6d:1::101"),
        "{events:?}"
    );
}

#[test]
fn ovmf_http_boots_from_metal6_dhcpv6_and_ra() {
    let Some((server, fetch, _ns)) = boot("52:54:00:6d:00:01", "lab-node-1", "http", "boot/installer.efi", false)
    else {
        return;
    };
    assert_eq!(fetch["status"], 200);
    assert_eq!(fetch["bytes"], 64 * 1024);
    // The fetch was attributed to lab-node-1 by its source address, which our DHCPv6 leased to its UEFI HTTP client, identified by the MAC in its DUID.
    let events = server.events();
    assert!(
        events.iter().any(|e| e["kind"] == "leased"
            && e["node"] == "lab-node-1"
            && e["stage"] == "firmware-http"
            && e["addr"] == "fd00:6d:1::100"),
        "{events:?}"
    );
    // lab.yaml's RA has M=1, so OVMF also runs Ip6Config's DHCPv6 client: same DUID, another
    // random IAID (notes §7). Both bindings must get the node's address without conflict.
    let iaids = wait_for("both OVMF DHCPv6 clients to be leased the node address", Duration::from_secs(20), || {
        let mut iaids: Vec<u64> = server
            .events()
            .iter()
            .filter(|e| e["kind"] == "leased" && e["addr"] == "fd00:6d:1::100")
            .filter_map(|e| e["iaid"].as_u64())
            .collect();
        iaids.sort_unstable();
        iaids.dedup();
        (iaids.len() >= 2).then_some(iaids)
    });
    eprintln!("IAIDs leased fd00:6d:1::100: {iaids:?}");
    let stats = server.stats();
    assert!(stats["ra_sent"].as_u64().unwrap_or(0) >= 1, "{stats}");
}
