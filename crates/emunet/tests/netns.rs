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

/// True (and a message) when not root; in CI that is a failure, since CI runs as root.
fn skip_unless_root() -> bool {
    if root() {
        return false;
    }
    assert!(std::env::var_os("CI").is_none(), "CI runs as root");
    eprintln!("SKIP: needs root");
    true
}

/// The link-local address of `dev` in `ns`.
fn link_local(ns: &str, dev: &str) -> String {
    let out = ip(ns, &format!("-6 -br addr show dev {dev}"));
    let w = out.split_whitespace().find(|w| w.starts_with("fe80::")).unwrap_or_else(|| panic!("no link-local: {out}"));
    w.split('/').next().unwrap_or(w).to_owned()
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
    if skip_unless_root() {
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
    // The fifth interface: a port of the ground segment's bridge, down without a ground link.
    assert!(links.lines().any(|l| l.starts_with("gsl0") && l.contains("DOWN")), "gsl0 in {links}");
    assert_eq!(emu.timings.interfaces, 180, "36 satellites x 5");
    let addrs = ip(&ns0, "-6 -br addr show dev lo");
    assert!(addrs.contains(&addr.loopback(0).to_string()), "{addrs}");
    // sat 0's isl0 peers with sat 1's isl1: ping its link-local across the veth.
    let ns1 = &emu.sats[1].name;
    let ll = link_local(ns1, "isl1");
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
    // All ISLs down: both ends dormant (not running: what routing daemons see as down), their
    // routes linkdown, addresses kept. Then up again.
    let n = emu.set_all(&topo, false).await.expect("down");
    assert_eq!(n, 72, "every ISL of the 6 x 6 grid");
    for (ns, dev) in [(ns0.as_str(), "isl0"), (ns1.as_str(), "isl1")] {
        let l = ip(ns, &format!("link show dev {dev}"));
        assert!(l.contains("state DORMANT") && l.contains("NO-CARRIER"), "{l}");
    }
    let routes = ip(&ns0, "-6 route show dev isl0");
    assert!(routes.lines().count() > 0 && routes.lines().all(|r| r.contains("linkdown")), "{routes}");
    assert!(ip(&ns0, "-6 addr show dev isl0").contains(&addr.interface(0, 0).to_string()));
    emu.set_all(&topo, true).await.expect("up");
    for (ns, dev) in [(ns0.as_str(), "isl0"), (ns1.as_str(), "isl1")] {
        let l = ip(ns, &format!("link show dev {dev}"));
        assert!(l.contains("state UP") && l.contains("LOWER_UP"), "{l}");
    }
    assert!(!ip(&ns0, "-6 route show dev isl0").contains("linkdown"));
    let names: Vec<String> = emu.sats.iter().map(|n| n.name.clone()).collect();
    drop(emu);
    let left = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().expect("list").stdout)
        .into_owned();
    assert!(names.iter().all(|n| !left.contains(n.as_str())), "namespaces left: {left}");
}

/// `ip -6 route show proto isis` in `ns`: destination → the outgoing devices (several for
/// equal-cost routes, which `ip` prints as indented `nexthop` lines).
fn isis_routes(ns: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![];
    for l in ip(ns, "-6 route show proto isis").lines() {
        let words: Vec<&str> = l.split_whitespace().collect();
        let dev = words.iter().position(|w| *w == "dev").and_then(|i| words.get(i + 1)).map(|d| (*d).to_owned());
        if !l.starts_with(char::is_whitespace) {
            out.push((words.first().map_or_else(String::new, |w| (*w).to_owned()), dev.into_iter().collect()));
        } else if let (Some(last), Some(d)) = (out.last_mut(), dev) {
            last.1.push(d);
        }
    }
    out
}

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < end, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_isis_converges_and_reroutes_around_a_failed_link() {
    if skip_unless_root() {
        return;
    }
    if !frr_installed() {
        return;
    }
    let (topo, addr) = small();
    let mut emu = Emulation::create(&topo, &addr, 0.0).await.expect("create");
    let dir = tempfile_dir();
    let mut frr = metal6_emunet::frr::start(&emu, &topo, &addr, &dir).expect("frr");
    let started = std::time::Instant::now();
    let ns: Vec<String> = emu.sats.iter().map(|n| n.name.clone()).collect();
    // Converged: every satellite has an IS-IS route to each other satellite's loopback.
    wait_until("IS-IS to converge on 36 satellites", 120, || {
        if let Some(d) = frr.dead() {
            panic!("{d}");
        }
        ns.iter().all(|n| isis_routes(n).iter().filter(|(d, _)| d.ends_with(":ffff")).count() >= 35).then_some(())
    });
    eprintln!("IS-IS converged in {:.1} s", started.elapsed().as_secs_f64());
    let target = format!("{}", addr.loopback(1));
    let via = |n: &str| isis_routes(n).into_iter().find(|(d, _)| *d == target).map(|(_, dev)| dev);
    assert_eq!(via(&ns[0]), Some(vec!["isl0".to_owned()]), "sat 1 is sat 0's isl0 neighbour");
    // The ISL between sat 0 and sat 1 fails: both ends down, as a link event.
    let ev = metal6_emulation::LinkEvent {
        t: 1.0,
        up: false,
        kind: metal6_emulation::LinkKind::IntraPlane,
        a: metal6_emulation::topology::End::Sat { sat: 0, iface: 0 },
        b: metal6_emulation::topology::End::Sat { sat: 1, iface: 1 },
    };
    let t = std::time::Instant::now();
    emu.apply(std::slice::from_ref(&ev)).await.expect("link down");
    let dev = wait_until("the route to sat 1 to leave isl0", 60, || {
        via(&ns[0]).filter(|d| !d.is_empty() && !d.iter().any(|x| x == "isl0"))
    });
    eprintln!("rerouted via {dev:?} in {:.1} s", t.elapsed().as_secs_f64());
    // The link comes back: the adjacency forms again and the route returns to it.
    let t = std::time::Instant::now();
    emu.apply(&[metal6_emulation::LinkEvent { t: 2.0, up: true, ..ev }]).await.expect("link up");
    wait_until("the route to sat 1 to return to isl0", 60, || via(&ns[0]).filter(|d| d == &vec!["isl0".to_owned()]));
    eprintln!("back on isl0 in {:.1} s", t.elapsed().as_secs_f64());
    drop(frr);
    drop(emu);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's FRR is installed (else the test is skipped, and in CI fails).
fn frr_installed() -> bool {
    if std::path::Path::new(metal6_emunet::frr::ISISD).exists() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "frr is not installed: `make deps` installs it");
    eprintln!("SKIP: frr is not installed");
    false
}

/// A directory for one test's FRR (tests run at once: each its own).
fn tempfile_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("m6e-frr-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ground_station_reaches_the_satellite_it_sees() {
    if skip_unless_root() {
        return;
    }
    let (mut topo, addr) = small();
    topo.stations.push(metal6_emulation::GroundStation { name: "null-island".into(), lat_deg: 0.0, lon_deg: 0.0 });
    topo.elevation_mask_deg = 10.0;
    let linked: Vec<u32> = topo
        .links_at(0.0)
        .iter()
        .filter_map(|l| match l.a {
            metal6_emulation::topology::End::Sat { sat, iface: 4 } => Some(sat),
            _ => None,
        })
        .collect();
    assert_eq!(linked.len(), 1, "one satellite above 10° over (0, 0) at t=0: {linked:?}");
    let emu = Emulation::create(&topo, &addr, 0.0).await.expect("create");
    let sat = linked[0];
    let up: Vec<usize> =
        (0..36).filter(|i| ip(&emu.sats[*i].name, "-br link show dev gsl0").contains(" UP ")).collect();
    assert_eq!(up, vec![sat as usize], "only the linked satellite's gsl0 is up");
    let ll = link_local(&emu.sats[sat as usize].name, "gsl0");
    let st = &emu.stations[0].name;
    let ping = Command::new("ip")
        .args(["netns", "exec", st, "ping", "-6", "-c", "1", "-W", "2", &format!("{ll}%seg0")])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "station → satellite {sat}: {}", String::from_utf8_lossy(&ping.stdout));
}

/// Global addresses of every satellite's interfaces: (satellite, interface, address).
fn global_addresses(emu: &Emulation) -> std::collections::BTreeSet<(usize, String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for (i, ns) in emu.sats.iter().enumerate() {
        for l in ip(&ns.name, "-6 -o addr show scope global").lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if let (Some(dev), Some(a)) = (w.get(1), w.get(3)) {
                out.insert((i, (*dev).to_owned(), (*a).to_owned()));
            }
        }
    }
    out
}

/// Issue #21's proof on one machine: the 6 × 6 shell over two emulated workers. Planes 0–2
/// on w-01, 3–5 on w-02; the twelve cross-plane ISLs between them (the border and the seam)
/// are VXLAN over the fabric, the rest veth pairs. The satellites get the same addresses as in
/// the one-worker run, FRR IS-IS converges across the fabric, and a crossing ISL switched
/// dormant makes the route leave it and come back to it when it is up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_over_two_emulated_workers_routes_across_the_fabric() {
    if skip_unless_root() {
        return;
    }
    if !frr_installed() {
        return;
    }
    let (topo, addr) = small();
    let one = Emulation::create(&topo, &addr, 0.0).await.expect("one worker");
    let addresses_one = global_addresses(&one);
    assert_eq!(addresses_one.len(), 36 * 6, "five interfaces and the loopback a satellite");
    drop(one);

    let part = metal6_emulation::partition::Partition::new(&topo, vec!["w-01".into(), "w-02".into()]).expect("split");
    let crossing = part.crossing(&topo);
    assert_eq!(crossing.len(), 12);
    let mut emu = Emulation::create_on(&topo, &addr, 0.0, Some(&part)).await.expect("two workers");
    assert_eq!(emu.timings.crossing, 12);
    assert_eq!(global_addresses(&emu), addresses_one, "the same addresses as on one worker");
    // The crossing ends are VXLAN devices with the link's VNI, to the other worker's underlay;
    // the local ones veth.
    let c = crossing.iter().find(|c| c.a == topo.sat(2, 0)).expect("plane 2 slot 0 crosses to plane 3");
    let (na, nb) = (emu.sats[c.a as usize].name.clone(), emu.sats[c.b as usize].name.clone());
    let dev = ip(&na, "-d link show isl2");
    assert!(dev.contains(&format!("vxlan id {}", c.vni)) && dev.contains("remote fd00:6d:fab::2"), "{dev}");
    assert!(dev.contains("mtu 1500") && dev.contains("state UP"), "{dev}");
    assert!(ip(&na, "-d link show isl0").contains("veth"), "intra-plane links stay veth");
    // A ping across the crossing ISL itself, link-local to link-local, before any routing.
    let peer = link_local(&nb, "isl3");
    let ping = Command::new("ip")
        .args(["netns", "exec", &na, "ping", "-6", "-c", "2", "-W", "2", &format!("{peer}%isl2")])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "ping over the VXLAN: {}", String::from_utf8_lossy(&ping.stdout));

    let dir = tempfile_dir();
    let mut frr = metal6_emunet::frr::start(&emu, &topo, &addr, &dir).expect("frr");
    let ns: Vec<String> = emu.sats.iter().map(|n| n.name.clone()).collect();
    let started = std::time::Instant::now();
    wait_until("IS-IS to converge on 36 satellites over two workers", 120, || {
        if let Some(d) = frr.dead() {
            panic!("{d}");
        }
        ns.iter().all(|n| isis_routes(n).iter().filter(|(d, _)| d.ends_with(":ffff")).count() >= 35).then_some(())
    });
    eprintln!("IS-IS converged across the fabric in {:.1} s", started.elapsed().as_secs_f64());
    let target = addr.loopback(c.b).to_string();
    let via = |n: &str| isis_routes(n).into_iter().find(|(d, _)| *d == target).map(|(_, dev)| dev);
    assert_eq!(via(&na), Some(vec!["isl2".to_owned()]), "its neighbour across the border: over the VXLAN");
    let ev = metal6_emulation::LinkEvent {
        t: 1.0,
        up: false,
        kind: c.kind,
        a: metal6_emulation::topology::End::Sat { sat: c.a, iface: 2 },
        b: metal6_emulation::topology::End::Sat { sat: c.b, iface: 3 },
    };
    emu.apply(std::slice::from_ref(&ev)).await.expect("crossing link down");
    assert!(ip(&na, "link show isl2").contains("state DORMANT"));
    let dev = wait_until("the route to leave the dormant crossing ISL", 60, || {
        via(&na).filter(|d| !d.is_empty() && !d.iter().any(|x| x == "isl2"))
    });
    eprintln!("rerouted via {dev:?}");
    emu.apply(&[metal6_emulation::LinkEvent { t: 2.0, up: true, ..ev }]).await.expect("crossing link up");
    wait_until("the route to return to the crossing ISL", 60, || via(&na).filter(|d| d == &vec!["isl2".to_owned()]));
    drop(frr);
    let names: Vec<String> = emu.sats.iter().map(|n| n.name.clone()).collect();
    drop(emu);
    let left = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().expect("list").stdout)
        .into_owned();
    let prefix = names[0].strip_suffix('0').unwrap_or(&names[0]).to_owned();
    for gone in ["fabric", "w0", "w1"] {
        assert!(!left.contains(&format!("{prefix}{gone}")), "{gone} left: {left}");
    }
    assert!(names.iter().all(|n| !left.contains(n.as_str())), "left: {left}");
    let _ = std::fs::remove_dir_all(&dir);
}
