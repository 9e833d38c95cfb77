//! `metal6 doctor` against real peers in namespaces: this host as the boot server (the lab
//! inventory's `m6lab0`, fd00:6d:1::1) on a veth link to a second namespace. First a healthy
//! link with `metal6 serve` running: nothing fails. Then a rogue dnsmasq (Debian's, real)
//! advertising another prefix with M=0 and answering DHCPv6; then a tentative boot-server
//! address, ports held by another process and an nftables drop of UDP 547. The BMC checks are
//! in redfish.rs (iDRAC-semantics simulator) and sushy.rs.

#![allow(clippy::print_stderr)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Netns, Server, root, wait_for};
use serde_json::Value;

/// A peer process, killed and reaped when the test is done with it.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `metal6 doctor -i inventory/lab.yaml ARGS -o json` in `ns`: exit code and report.
fn doctor(ns: &Netns, args: &str) -> (i32, Value) {
    let out = ns.try_exec(&format!(
        "cd {} && {} doctor -i inventory/lab.yaml {args} -o json",
        root().display(),
        common::metal6().display()
    ));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor JSON ({e}):\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["format"], "metal6-doctor/1");
    (out.status.code().unwrap_or(-1), report)
}

/// The check with this id: (status, saw, fix).
fn check(report: &Value, id: &str) -> (String, String, String) {
    let c = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"));
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    (s("status"), s("saw"), s("fix"))
}

#[test]
fn doctor_finds_a_rogue_router_and_dhcp_server_a_tentative_address_a_held_port_and_a_firewall_drop() {
    require_netns!();
    require_tool!("dnsmasq");
    require_tool!("nft");
    let host = Netns::new();
    let rogue = Netns::new();
    common::link(&host, "m6lab0", &rogue, "m6r0", "02:6d:00:00:00:99");
    host.exec("sysctl -qw net.ipv6.conf.m6lab0.accept_ra=0 && ip -6 addr add fd00:6d:1::1/64 dev m6lab0 nodad");
    common::wait_link_local(&host, "m6lab0");
    common::wait_link_local(&rogue, "m6r0");

    // Healthy: metal6 serve holds its ports and sends the RAs; no other router or server.
    let artifacts = tempfile::tempdir().expect("artifacts");
    let art = artifacts.path().to_str().expect("utf-8").to_owned();
    let server = Server::start(&host, &root().join("inventory/lab.yaml"), "m6lab0", &["--artifacts", &art]);
    let (code, r) = doctor(&host, "--network --probe-time 2");
    assert_eq!(code, 0, "a healthy link passes: {r:#}");
    for id in
        ["host.interface", "host.address", "host.mtu", "link.routers", "link.dhcpv6-servers", "link.duplicate-address"]
    {
        assert_eq!(check(&r, id).0, "ok", "{id}: {r:#}");
    }
    for id in ["host.port.dhcpv6", "host.port.tftp", "host.port.http"] {
        let (st, saw, _) = check(&r, id);
        assert!(st == "ok" && saw.contains("held by metal6"), "{id}: {st} {saw}");
    }
    assert_eq!(check(&r, "host.firewall").0, "ok", "an empty ruleset drops nothing");
    drop(server);

    // A rogue dnsmasq: RAs for another prefix with M=0 (stateless), and DHCPv6 answers.
    rogue.exec("ip -6 addr add fd00:99::1/64 dev m6r0 nodad");
    let dir = tempfile::tempdir().expect("tmp");
    let lease = dir.path().join("dnsmasq.leases");
    let lease_arg = format!("--dhcp-leasefile={}", lease.display());
    let dnsmasq = Peer(rogue.spawn(
        Path::new("dnsmasq"),
        &[
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--pid-file=",
            "--interface=m6r0",
            "--bind-interfaces",
            "--enable-ra",
            "--dhcp-range=fd00:99::,ra-stateless,64",
            &lease_arg,
        ],
        &dir.path().join("dnsmasq.log"),
    ));
    wait_for("dnsmasq to start", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.path().join("dnsmasq.log")).ok().filter(|l| l.contains("started")).map(|_| ())
    });
    let (code, r) = doctor(&host, "--network --probe-time 3");
    assert_eq!(code, 1, "{r:#}");
    let (st, saw, fix) = check(&r, "link.routers");
    assert_eq!(st, "fail");
    for want in [
        "another prefix fd00:99::/64",
        "M=0 where the inventory says M=1",
        "another default router",
        "02:6d:00:00:00:99",
    ] {
        assert!(saw.contains(want), "{want}: {saw}");
    }
    assert!(fix.contains("stop its RAs"), "{fix}");
    let (st, saw, _) = check(&r, "link.dhcpv6-servers");
    assert_eq!(st, "fail");
    // The rogue's EUI-64 link-local address, from its MAC 02:6d:00:00:00:99.
    assert!(saw.contains("fe80::6d:ff:fe00:99") && saw.contains("status 2"), "the rogue server and its answer: {saw}");
    eprintln!("rogue dnsmasq:\n{}\n{}", check(&r, "link.routers").1, saw);
    drop(dnsmasq);

    // A tentative boot-server address (DAD of 100 probes, a second apart), UDP 69 and TCP 8080
    // held by another process, and nftables dropping UDP 547.
    host.exec(
        "ip -6 addr del fd00:6d:1::1/64 dev m6lab0 && sysctl -qw net.ipv6.conf.m6lab0.accept_dad=1 \
         net.ipv6.conf.m6lab0.dad_transmits=100 && ip -6 addr add fd00:6d:1::1/64 dev m6lab0",
    );
    let _holder = Peer(host.spawn(
        Path::new("python3"),
        &[
            "-c",
            "import socket, time\n\
             u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(('::', 69))\n\
             t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); t.bind(('::', 8080)); t.listen()\n\
             print('holding', flush=True); time.sleep(120)",
        ],
        &dir.path().join("holder.log"),
    ));
    wait_for("the port holder", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.path().join("holder.log")).ok().filter(|l| l.contains("holding")).map(|_| ())
    });
    host.exec(
        "nft add table inet m6t && nft add chain inet m6t input \"{ type filter hook input priority 0; policy accept; }\" \
         && nft add rule inet m6t input udp dport 547 counter drop",
    );
    let (code, r) = doctor(&host, "");
    assert_eq!(code, 1, "{r:#}");
    let (st, saw, _) = check(&r, "host.address");
    assert!(st == "fail" && saw.contains("tentative"), "{st}: {saw}");
    let (st, saw, fix) = check(&r, "host.port.tftp");
    assert!(st == "fail" && saw.contains("held by python3"), "{st}: {saw}");
    assert!(fix.contains("stop it"), "{fix}");
    let (st, saw, _) = check(&r, "host.port.http");
    assert!(st == "fail" && saw.contains("TCP 8080"), "{st}: {saw}");
    assert_eq!(check(&r, "host.port.dhcpv6").0, "ok", "547 is free");
    let (st, saw, fix) = check(&r, "host.firewall");
    assert!(st == "fail" && saw.contains("UDP 547 (DHCPv6) dropped by inet m6t chain input"), "{st}: {saw}");
    assert!(fix.contains("nft insert rule inet m6t input position 2 iifname m6lab0 udp dport 547 accept"), "{fix}");
    // The table form says the same, with the fixes, and the exit code says fail.
    let out = host.try_exec(&format!(
        "cd {} && {} doctor -i inventory/lab.yaml",
        root().display(),
        common::metal6().display()
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("FAIL    host.address") && text.contains("fix: ") && text.contains("doctor: "), "{text}");
}
