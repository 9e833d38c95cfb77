//! `metal6 serve` in network namespaces against clients: our probe (firmware, iPXE, OS
//! shapes; relayed with option 79), the kernel's RA handling, dhclient, dhcpcd and perfdhcp.
//! Each test has its own namespaces, addresses and state directory.

mod common;

use std::process::Output;
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
    // A client link MAC that is no inventory node's: every probe client (DUID-EN) is then an
    // unknown client with its own pool lease. (With a node's MAC, the EUI-64 source would make
    // them all that node, which holds at most 16 bindings.)
    let (srv, cli) = lab_link("02:00:00:00:00:99");
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

#[test]
fn dhclient_binds_the_inventory_address() {
    require_netns!();
    require_tool!("dhclient");
    let (srv, cli) = lab_link(NODE1_MAC);
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &["--no-ra"]);
    let d = server.state.path().display();
    // -sf /bin/true: no script, so nothing outside the namespace (resolv.conf) is touched.
    let out = cli.try_exec(&format!(
        "timeout 30 dhclient -6 -1 -v -lf {d}/dhclient.lease -pf {d}/dhclient.pid -sf /bin/true m6c0"
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lease = std::fs::read_to_string(server.state.path().join("dhclient.lease")).expect("lease file");
    assert!(lease.contains("iaaddr fd00:6d:1::100"), "{lease}");
    assert!(lease.contains("option dhcp6.name-servers fd00:6d:1::1"), "DNS from option 23: {lease}");
    assert!(lease.contains("lab.metal6.test"), "domain list from option 24: {lease}");
    cli.try_exec(&format!("kill $(cat {d}/dhclient.pid)"));
    common::lab::proved_cell(
        "dhclient",
        "direct",
        "netboot.rs: dhclient_binds_the_inventory_address",
        "iaaddr, DNS, domain",
    );
}

#[test]
fn dhcpcd_configures_the_inventory_address() {
    require_netns!();
    require_tool!("dhcpcd");
    let (srv, cli) = lab_link(NODE1_MAC);
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &["--no-ra"]);
    let conf = server.state.path().join("dhcpcd.conf");
    std::fs::write(&conf, "noipv4\nnoipv6rs\nipv6only\nduid\ninterface m6c0\n  ia_na 1\n").expect("conf");
    let out = dhcpcd_once(&cli, &conf, "m6c0");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inet6 fd00:6d:1::100/128"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    common::lab::proved_cell(
        "dhcpcd",
        "direct",
        "netboot.rs: dhcpcd_configures_the_inventory_address",
        "address on the NIC",
    );
}

/// dhcpcd in a client namespace: tmpfs over its state and run directories (`ip netns exec`
/// runs in a private mount namespace) keeps its DUID and lease files off the host; --script
/// /bin/true runs no hooks. Returns `ip -6 addr show` of `ifname` after the lease.
fn dhcpcd_once(cli: &common::Netns, conf: &std::path::Path, ifname: &str) -> Output {
    cli.try_exec(&format!(
        "mkdir -p /var/lib/dhcpcd /run/dhcpcd && mount -t tmpfs m6t /var/lib/dhcpcd && mount -t tmpfs m6t /run/dhcpcd && \
         timeout 30 dhcpcd -f {} --script /bin/true -1 -B {ifname} && ip -6 addr show dev {ifname} && dhcpcd -x {ifname}",
        conf.display()
    ))
}

/// The pool inventory's only node has MAC ...:01; load generators use an interface MAC outside
/// the inventory so their clients are unknown and served from the pool.
const STRANGER_MAC: &str = "02:6d:00:00:00:99";

fn perfdhcp_summary(out: &Output) -> (u64, u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |key: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok())).unwrap_or(0)
    };
    (num("sent packets:"), num("received packets:"), num("drops:"))
}

#[test]
fn perfdhcp_direct_and_relayed_without_drops() {
    require_netns!();
    require_tool!("perfdhcp");
    let (srv, cli) = lab_link(STRANGER_MAC);
    let server = Server::start(&srv, &root().join("tests/netboot/pool.yaml"), "m6s0", &["--no-ra"]);
    let out = cli.try_exec("timeout 60 perfdhcp -6 -l m6c0 -r 200 -p 3 -R 1000");
    let (sent, received, drops) = perfdhcp_summary(&out);
    assert!(
        sent > 400 && received == sent && drops == 0,
        "direct: sent {sent} received {received} drops {drops}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Relayed: perfdhcp wraps every message in a Relay-Forward (-A 1) from the relay's address.
    cli.exec("ip -6 addr add fd00:6d:1::fe/64 dev m6c0 nodad");
    let out = cli.try_exec("timeout 60 perfdhcp -6 -l m6c0 -A 1 -r 100 -p 3 -R 500");
    let (sent, received, drops) = perfdhcp_summary(&out);
    assert!(
        sent > 200 && received == sent && drops == 0,
        "relayed: sent {sent} received {received} drops {drops}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let s = wait_for("relayed traffic in the stats", Duration::from_secs(5), || {
        let s = server.stats();
        s["received"]["relay-forw"].as_u64().filter(|n| *n > 200).map(|_| s)
    });
    assert!(s["dropped"].as_object().is_none_or(serde_json::Map::is_empty), "{s}");
    // Pool leases are distinct addresses in the pool.
    let journal = std::fs::read_to_string(server.state.path().join("leases.jsonl")).unwrap_or_default();
    assert!(journal.contains("\"addr\":\"fd00:6d:1::1:"), "pool addresses handed out");
}

#[test]
fn dhcrelay_relays_a_real_client_to_us() {
    require_netns!();
    require_tool!("dhcrelay");
    require_tool!("dhclient");
    // client ns --(m6c0 / m6r1)-- relay ns --(m6r0 / m6s0)-- server ns
    let srv = common::Netns::new();
    let relay = common::Netns::new();
    let cli = common::Netns::new();
    common::link(&srv, "m6s0", &relay, "m6r0", "02:6d:00:00:00:aa");
    common::link(&relay, "m6r1", &cli, "m6c0", NODE1_MAC);
    srv.exec(
        "ip -6 addr add fd00:6d:1::1/64 dev m6s0 nodad && ip -6 route add fd00:6d:2::/64 via fd00:6d:1::fe dev m6s0",
    );
    relay.exec("ip -6 addr add fd00:6d:1::fe/64 dev m6r0 nodad && ip -6 addr add fd00:6d:2::1/64 dev m6r1 nodad && sysctl -qw net.ipv6.conf.all.forwarding=1");
    for (ns, ifname) in [(&srv, "m6s0"), (&relay, "m6r0"), (&relay, "m6r1"), (&cli, "m6c0")] {
        common::wait_link_local(ns, ifname);
    }
    // An inventory whose node sits on the relayed segment.
    let src = std::fs::read_to_string(root().join("inventory/lab.yaml")).expect("lab");
    let src = src.replace(
        "  dhcp:\n    preferred_lifetime: 3600",
        "  relays:\n    - name: rack2\n      link_address: fd00:6d:2::1\n      prefix: fd00:6d:2::/64\n      router: fd00:6d:2::1\n  dhcp:\n    preferred_lifetime: 3600",
    );
    let src = src.replace(
        "  - name: lab-node-1\n    profile: lab-http\n",
        "  - name: lab-node-1\n    profile: lab-http\n    segment: rack2\n",
    );
    let dir = tempfile::tempdir().expect("tmp");
    let inv = dir.path().join("relayed.yaml");
    std::fs::write(&inv, src).expect("write inventory");
    let server = Server::start(&srv, &inv, "m6s0", &["--no-ra"]);
    let rlog = dir.path().join("dhcrelay.log");
    let mut dhcrelay = relay.spawn(
        std::path::Path::new("/usr/sbin/dhcrelay"),
        &["-6", "-d", "-l", "m6r1", "-u", "fd00:6d:1::1%m6r0"],
        &rlog,
    );
    let d = dir.path().display();
    let out = cli.try_exec(&format!("timeout 40 dhclient -6 -1 -v -lf {d}/c.lease -pf {d}/c.pid -sf /bin/true m6c0"));
    let lease = std::fs::read_to_string(dir.path().join("c.lease")).unwrap_or_default();
    assert!(
        lease.contains("iaaddr fd00:6d:2::100"),
        "relayed client gets its address on the relayed segment\nlease: {lease}\ndhclient: {}\nrelay: {}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&rlog).unwrap_or_default(),
        server.log_text()
    );
    cli.try_exec(&format!("kill $(cat {d}/c.pid)"));
    let test = "netboot.rs: dhcrelay_relays_a_real_client_to_us";
    common::lab::proved_cell("dhclient", "relayed", test, "ISC dhcrelay -6; address on the relayed segment");
    // dhcpcd through the same relay.
    let conf = dir.path().join("dhcpcd.conf");
    std::fs::write(&conf, "noipv4\nnoipv6rs\nipv6only\nduid\ninterface m6c0\n  ia_na 1\n").expect("conf");
    let out = dhcpcd_once(&cli, &conf, "m6c0");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("inet6 fd00:6d:2::100/128"),
        "dhcpcd through the relay: {text}\n{}\nrelay: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&rlog).unwrap_or_default()
    );
    common::lab::proved_cell("dhcpcd", "relayed", test, "ISC dhcrelay -6; address on the relayed segment");
    let _ = dhcrelay.kill();
    let _ = dhcrelay.wait();
}

#[test]
fn tshark_finds_nothing_malformed_in_what_we_send() {
    require_netns!();
    require_tool!("tshark");
    let (srv, cli) = lab_link(NODE1_MAC);
    let dir = tempfile::tempdir().expect("tmp");
    let pcap = dir.path().join("cap.pcap");
    let cap_log = dir.path().join("tshark.log");
    let pcap_s = pcap.to_str().expect("utf-8").to_owned();
    let mut capture = srv.spawn(
        std::path::Path::new("/usr/bin/tshark"),
        &["-i", "m6s0", "-w", &pcap_s, "-f", "udp port 546 or udp port 547 or icmp6"],
        &cap_log,
    );
    wait_for("tshark to capture", Duration::from_secs(30), || {
        std::fs::read_to_string(&cap_log).ok().filter(|l| l.contains("Capturing on")).map(|_| ())
    });
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &[]);
    cli.exec("ip -6 addr add fd00:6d:1::fe/64 dev m6c0 nodad");
    for args in [
        "--kind os --duid en --iaid 5 --relay-link fd00:6d:1::fe --relay-mac --server fd00:6d:1::1",
        "--kind uefi-http --duid llt --iaid 1",
        "--kind pxe --duid ll --iaid 2",
        "--kind ipxe --duid llt --iaid 3",
        "--kind os --iaid 4",
    ] {
        let (ok, _, err) = probe(&cli, &format!("--mac {NODE1_MAC} {args}"));
        assert!(ok, "{err}");
    }
    wait_for("an RA", Duration::from_secs(15), || (server.stats()["ra_sent"].as_u64().unwrap_or(0) >= 2).then_some(()));
    drop(server);
    let _ = std::process::Command::new("kill").args(["-INT", &capture.id().to_string()]).status();
    let _ = capture.wait();
    let out = std::process::Command::new("tshark")
        .args(["-r", &pcap_s, "-Y", "dhcpv6 || icmpv6.type == 134"])
        .output()
        .expect("tshark -r");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.lines().filter(|l| l.contains("Advertise")).count() >= 4 && listing.contains("Router Advertisement"),
        "{listing}"
    );
    assert!(listing.contains("Relay-reply"), "our Relay-Reply was captured: {listing}");
    // Our packets: sent from the server side. Anything malformed or at expert level warning+
    // fails the test (tshark severities: 0x00600000 warn, 0x00800000 error).
    let bad = std::process::Command::new("tshark")
        .args(["-r", &pcap_s, "-Y", "(dhcpv6.msgtype == 2 || dhcpv6.msgtype == 7 || dhcpv6.msgtype == 13 || icmpv6.type == 134) && (_ws.malformed || _ws.expert.severity >= 0x00600000)", "-V"])
        .output()
        .expect("tshark -Y");
    assert!(bad.stdout.is_empty(), "tshark flags our packets:\n{}", String::from_utf8_lossy(&bad.stdout));
}
