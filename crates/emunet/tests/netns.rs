//! The netns backend against the real kernel: a 6 × 6 shell (2,000 km up, so every grid link
//! has line of sight) becomes 36 namespaces with 144 veth ends, addressed by the plan; ping
//! crosses an ISL; links switch state; everything is gone after drop. Needs root.

#![allow(clippy::print_stderr)]

use std::process::Command;

use metal6_emulation::{Addressing, Shell, ShellKind, Topology};
use metal6_emunet::Emulation;

fn root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ip(ns: &str, args: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(format!("ip -n {ns} {args}")).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

pub fn small() -> (Topology, Addressing) {
    let shell = Shell {
        kind: ShellKind::Delta,
        planes: 6,
        per_plane: 6,
        phasing: 1,
        altitude_km: 2000.0,
        inclination_deg: 53.0,
    };
    let topo = Topology::new(shell, vec![]);
    let addr = Addressing::new("fd00:5a7::/48".parse().expect("block"), 36, 0).expect("addressing");
    (topo, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_shell_becomes_namespaces_and_links() {
    if !root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIP: needs root");
        return;
    }
    let (topo, addr) = small();
    let emu = Emulation::create(&topo, &addr, 0.0).await.expect("create");
    eprintln!("timings: {:?}", emu.timings);
    assert_eq!(emu.sats.len(), 36);
    let ns0 = emu.sats[0].name.clone();
    let links = ip(&ns0, "-br link");
    for i in ["isl0", "isl1", "isl2", "isl3"] {
        assert!(links.lines().any(|l| l.starts_with(i) && l.contains("UP")), "{i} in {links}");
    }
    let addrs = ip(&ns0, "-6 -br addr show dev lo");
    assert!(addrs.contains(&addr.loopback(0).to_string()), "{addrs}");
    // sat 0's isl0 peers with sat 1's isl1: ping its link-local across the veth.
    let ns1 = &emu.sats[1].name;
    let ll = ip(ns1, "-6 -br addr show dev isl1");
    let ll = ll
        .split_whitespace()
        .find(|w| w.starts_with("fe80::"))
        .expect("link-local")
        .split('/')
        .next()
        .expect("addr")
        .to_owned();
    let ping = Command::new("ip")
        .args(["netns", "exec", &ns0, "ping", "-6", "-c", "1", "-W", "2", &format!("{ll}%isl0")])
        .output()
        .expect("ping");
    assert!(
        ping.status.success(),
        "{}{}\n{}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr),
        ip(&ns0, "-6 addr"),
        ip(ns1, "-6 addr")
    );
    // All ISLs down, then up again.
    let n = emu.set_all(&topo, false).await.expect("down");
    assert_eq!(n, 144);
    assert!(ip(&ns0, "-br link show dev isl0").contains("DOWN"));
    emu.set_all(&topo, true).await.expect("up");
    assert!(ip(&ns0, "-br link show dev isl0").contains("UP"));
    let names: Vec<String> = emu.sats.iter().map(|n| n.name.clone()).collect();
    drop(emu);
    let left = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().expect("list").stdout)
        .into_owned();
    assert!(names.iter().all(|n| !left.contains(n.as_str())), "namespaces left: {left}");
}
