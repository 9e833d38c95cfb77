//! `metal6 serve` in network namespaces against clients: our probe (firmware, iPXE, OS
//! shapes; relayed with option 79), the kernel's RA handling, dhclient, dhcpcd and perfdhcp.
//! Each test has its own namespaces, addresses and state directory.

mod common;

use std::time::Duration;

use common::{Server, lab_link, probe, root, wait_for};

const NODE1_MAC: &str = "52:54:00:6d:00:01";

#[test]
fn every_boot_stage_of_a_node_gets_its_inventory_address() {
    require_netns!();
    let (srv, cli) = lab_link(NODE1_MAC);
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &["--no-ra"]);
    // Firmware: UEFI HTTP boot, DUID-LLT.
    let (ok, a, err) = probe(&cli, &format!("--mac {NODE1_MAC} --duid llt --kind uefi-http --iaid 1001"));
    assert!(ok, "{err}");
    assert_eq!(a[0]["address"], "fd00:6d:1::100");
    assert_eq!(a[0]["bootfile_url"], "http://[fd00:6d:1::1]:8080/boot/installer.efi");
    assert_eq!(a[0]["vendor_class"], "343:HTTPClient");
    // iPXE / installer: DUID-LL, another IAID.
    let (ok, a, err) = probe(&cli, &format!("--mac {NODE1_MAC} --duid ll --kind ipxe --iaid 2002"));
    assert!(ok, "{err}");
    assert_eq!(a[0]["address"], "fd00:6d:1::100");
    assert_eq!(a[0]["bootfile_url"], "http://[fd00:6d:1::1]:8080/v1/nodes/lab-node-1/ipxe");
    // Installed OS with a DUID-EN (no MAC inside), seen through a relay that adds option 79;
    // the relay has an address on the link, as real relays do.
    cli.exec("ip -6 addr add fd00:6d:1::fe/64 dev m6c0 nodad");
    let (ok, a, err) = probe(
        &cli,
        &format!(
            "--mac {NODE1_MAC} --duid en --relay-link fd00:6d:1::fe --relay-mac --server fd00:6d:1::1 --iaid 3003"
        ),
    );
    assert!(ok, "{err}");
    assert_eq!(a[0]["address"], "fd00:6d:1::100");
    let events = server.events();
    let vias: Vec<&str> = events.iter().filter(|e| e["kind"] == "identity").filter_map(|e| e["via"].as_str()).collect();
    assert_eq!(vias, ["duid-mac", "duid-mac", "relay-link-layer"], "one identity event per stage: {events:?}");
    let leased: Vec<&str> =
        events.iter().filter(|e| e["kind"] == "leased").filter_map(|e| e["addr"].as_str()).collect();
    assert_eq!(leased, ["fd00:6d:1::100"; 3]);
    assert!(
        events.iter().filter(|e| e["kind"] == "identity").skip(1).all(|e| e["previous_duid"].is_string()),
        "identity changes name the previous DUID"
    );
}

#[test]
fn malformed_packets_are_dropped_and_counted_and_service_goes_on() {
    require_netns!();
    let (srv, cli) = lab_link(NODE1_MAC);
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &["--no-ra"]);
    let (ok, a, err) = probe(&cli, &format!("--mac {NODE1_MAC} --garbage 40"));
    assert!(ok, "{err}");
    assert_eq!(a[0]["address"], "fd00:6d:1::100");
    let dropped = wait_for("stats to count the garbage", Duration::from_secs(5), || {
        let s = server.stats();
        (s["dropped"]["malformed"].as_u64().unwrap_or(0) + s["dropped"]["bad-relay"].as_u64().unwrap_or(0) >= 40)
            .then_some(s)
    });
    assert_eq!(
        dropped["dropped"]["malformed"].as_u64().unwrap_or(0) + dropped["dropped"]["bad-relay"].as_u64().unwrap_or(0),
        40
    );
    assert!(server.log_text().contains("DHCPv6 listening") && !server.log_text().contains("panicked"));
}

#[test]
fn unknown_clients_get_no_answer() {
    require_netns!();
    // The client's interface MAC is not in the inventory either, so the EUI-64 source is no clue.
    let (srv, cli) = lab_link("52:54:00:99:99:99");
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &["--no-ra"]);
    let (ok, _, err) = probe(&cli, "--mac 52:54:00:99:99:99 --timeout 1");
    assert!(!ok && err.contains("no answer"), "{err}");
    let s = wait_for("the drop to be counted", Duration::from_secs(5), || {
        let s = server.stats();
        s["dropped"]["unknown-client"].as_u64().filter(|n| *n >= 1).map(|_| s)
    });
    assert!(s["sent"].as_object().is_none_or(serde_json::Map::is_empty), "nothing sent: {s}");
}

#[test]
fn router_advertisements_give_the_link_a_default_route() {
    require_netns!();
    let (srv, cli) = lab_link(NODE1_MAC);
    let _server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &[]);
    // The kernel's own RA processing is the peer: a default route via our link-local address,
    // learnt from an RA (proto ra), with the inventory's 1800 s router lifetime.
    let route = wait_for("a default route from our RA", Duration::from_secs(15), || {
        let out = cli.try_exec("ip -6 route show default");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("proto ra").then_some(text)
    });
    assert!(route.contains("via fe80::"), "{route}");
    let secs: u32 =
        route.split("expires ").nth(1).and_then(|r| r.split("sec").next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!((1700..=1800).contains(&secs), "router lifetime: {route}");
    let prefix = cli.try_exec("ip -6 route show fd00:6d:1::/64");
    assert!(!prefix.stdout.is_empty(), "on-link prefix from the PIO");
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_lease() {
    require_netns!();
    let (srv, cli) = lab_link(NODE1_MAC);
    let inv = root().join("tests/netboot/pool.yaml");
    let mut server = Server::start(&srv, &inv, "m6s0", &["--no-ra"]);
    let acked = server.state.path().join("acked.jsonl");
    let probe_log = server.state.path().join("probe.log");
    let acked_arg = acked.to_str().expect("utf-8").to_owned();
    let mut load = cli.spawn(
        &common::metal6(),
        &[
            "dhcp6",
            "probe",
            "--interface",
            "m6c0",
            "--mac",
            "02:00:00:00:00:01",
            "--clients",
            "100000",
            "--timeout",
            "0.3",
            "--acked",
            &acked_arg,
        ],
        &probe_log,
    );
    // Kill the server mid-stream, once a good number of leases were acknowledged.
    wait_for("200 acknowledged leases", Duration::from_secs(60), || {
        (std::fs::read_to_string(&acked).unwrap_or_default().lines().count() >= 200).then_some(())
    });
    let _ = server.child.kill(); // SIGKILL
    let _ = server.child.wait();
    let _ = load.kill();
    let _ = load.wait();
    let acked_addrs: Vec<String> = std::fs::read_to_string(&acked)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["address"].as_str().map(str::to_owned))
        .collect();
    assert!(acked_addrs.len() >= 200);
    // Every acknowledged address is in the journal the restarted server loads.
    let journal = std::fs::read_to_string(server.state.path().join("leases.jsonl")).expect("journal");
    let missing: Vec<&String> =
        acked_addrs.iter().filter(|a| !journal.contains(&format!("\"addr\":\"{a}\""))).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged leases missing from the journal: {:?}",
        missing.len(),
        acked_addrs.len(),
        &missing[..missing.len().min(5)]
    );
    // And the restarted server loads them all.
    let state_dir = server.state.path().to_str().expect("utf-8").to_owned();
    let restart_log = server.state.path().join("restart.log");
    let mut again = srv.spawn(
        &common::metal6(),
        &["serve", "-i", inv.to_str().expect("utf-8"), "--interface", "m6s0", "--state-dir", &state_dir, "--no-ra"],
        &restart_log,
    );
    let log = wait_for("the restarted server", Duration::from_secs(20), || {
        std::fs::read_to_string(&restart_log).ok().filter(|l| l.contains("DHCPv6 listening"))
    });
    let live: usize = log
        .split("live=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(live >= acked_addrs.len(), "restart loaded {live} leases, {} were acknowledged", acked_addrs.len());
    let _ = again.kill();
    let _ = again.wait();
}
