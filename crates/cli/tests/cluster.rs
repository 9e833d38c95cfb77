//! `metal6 cluster render` and what its files are checked against here:
//! - golden files for `inventory/example-dell.yaml` (`tests/golden/cluster/`, `make bless`);
//! - kubernetes-validate (pip, strict, the cluster's Kubernetes version) for every object it
//!   has a schema for, and the NAD CRD's own schema for the NADs;
//! - the CNI configurations executed by the real Debian CNI plugins (bridge, host-device,
//!   host-local, static, tuning, portmap) in namespaces, as a container runtime would run them:
//!   interfaces get the planned addresses and ping each other.
//!
//! kubeadm and the kubelet are not installable here, so their files are checked by the golden
//! files only (docs/cluster.md says what needs a real node).

#![allow(clippy::print_stderr)] // skips say why

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Netns, root, sh};
use serde_json::{Value, json};

const TOKEN: &str = "abcdef.0123456789abcdef";
/// A fixed certificate key for the golden set (renders without one make a random key).
const CERT_KEY: &str = "4d6574616c36206b75626561646d2063657274696669636174652d6b65792121";
const CA_HASH: &str = "sha256:0f5fd3fbc2a9a3e4b7a7b7f6c0e2f8b1c9d3e4a5b6c7d8e9f0a1b2c3d4e5f6a7";

fn render(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(common::metal6())
        .current_dir(root())
        .env("METAL6_JOIN_TOKEN", TOKEN)
        .env("METAL6_TEST_CERT_KEY", CERT_KEY)
        .args(["cluster", "render", "-i", "inventory/example-dell.yaml", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("run metal6")
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

const GOLDEN_ARGS: &[&str] = &[
    "--certificate-key",
    "env:METAL6_TEST_CERT_KEY",
    "--ca-cert-hash",
    CA_HASH,
    "--emulation",
    "--shell",
    "3x3",
    "--altitude-km",
    "2000",
    "--phasing",
    "1",
];

#[test]
fn example_dell_renders_the_golden_set() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = render(tmp.path(), GOLDEN_ARGS);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let golden = root().join("tests/golden/cluster/example-dell");
    let files = all_files(tmp.path());
    if std::env::var_os("METAL6_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&golden);
        for f in &files {
            let rel = f.strip_prefix(tmp.path()).expect("rel");
            std::fs::create_dir_all(golden.join(rel).parent().expect("parent")).expect("mkdir");
            std::fs::copy(f, golden.join(rel)).expect("copy");
        }
    }
    let want = all_files(&golden);
    let rel = |base: &Path, v: &[PathBuf]| -> Vec<PathBuf> {
        v.iter().map(|p| p.strip_prefix(base).expect("rel").to_path_buf()).collect()
    };
    assert_eq!(rel(tmp.path(), &files), rel(&golden, &want), "the set of files changed (METAL6_BLESS=1 to accept)");
    for f in &files {
        let r = f.strip_prefix(tmp.path()).expect("rel");
        let got = std::fs::read_to_string(f).expect("read");
        let exp = std::fs::read_to_string(golden.join(r)).expect("golden");
        assert!(got == exp, "{} differs from its golden file (METAL6_BLESS=1 to accept)", r.display());
    }
    // The token only where kubeadm needs it, and those files are 0600.
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(f).expect("meta").permissions()) & 0o777;
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let holds = text.contains(TOKEN);
        assert_eq!(holds, name.starts_with("kubeadm-"), "{}", f.display());
        assert_eq!(mode == 0o600, holds, "{} mode {mode:o}", f.display());
    }
    // Three control planes: cp-01 inits, cp-02/03 join as control planes, workers as workers.
    let join = std::fs::read_to_string(tmp.path().join("nodes/cp-02/kubeadm-join.yaml")).expect("join");
    assert!(
        join.contains("controlPlane:") && join.contains("apiServerEndpoint: \"[2001:db8:100::101]:6443\""),
        "{join}"
    );
    assert!(
        !std::fs::read_to_string(tmp.path().join("nodes/w-01/kubeadm-join.yaml"))
            .expect("join")
            .contains("controlPlane:")
    );
}

#[test]
fn without_the_ca_hash_no_join_files_and_a_note() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = render(tmp.path(), &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("note: join files need the cluster CA's hash"));
    assert!(!tmp.path().join("nodes/w-01/kubeadm-join.yaml").exists());
    let bad = Command::new(common::metal6())
        .current_dir(root())
        .env("METAL6_JOIN_TOKEN", "not-a-token")
        .args(["cluster", "render", "-i", "inventory/example-dell.yaml", "--out"])
        .arg(tmp.path())
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("join token does not have the form") && !err.contains("not-a-token"), "{err}");
}

/// Every object with a published schema validates strictly for the cluster's version; the
/// NADs validate against the CRD the Multus manifest installs; their CNI JSON follows CNI 1.0.
#[test]
fn objects_validate_for_the_target_kubernetes() {
    let Some(kv) = common::kubernetes_validate() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    assert!(render(tmp.path(), GOLDEN_ARGS).status.success());
    for f in
        ["multus/multus-thick.yaml", "emulation/nads.yaml", "emulation/satellites.yaml", "emulation/link-agent.yaml"]
    {
        let out = Command::new(&kv)
            .args(["--strict", "-k", "1.31.4", "--quiet", "--no-warn"])
            .arg(tmp.path().join(f))
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{f}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A broken object must fail the same check (the validator is not a no-op here).
    let broken = tmp.path().join("broken.yaml");
    let multus = std::fs::read_to_string(tmp.path().join("multus/multus-thick.yaml")).expect("read");
    std::fs::write(&broken, multus.replace("hostNetwork: true", "hostNetwork: true\n      hostNetwrk: true"))
        .expect("write");
    let out = Command::new(&kv)
        .args(["--strict", "-k", "1.31.4", "--quiet", "--no-warn"])
        .arg(&broken)
        .output()
        .expect("run");
    assert!(!out.status.success(), "a misspelt field passed validation");
    // NADs: the CRD's schema (spec.config a string) and CNI 1.0 inside it.
    let text = std::fs::read_to_string(tmp.path().join("emulation/nads.yaml")).expect("read");
    let mut n = 0;
    for doc in text.split("\n---\n") {
        let v: Value = serde_saphyr::from_str(doc).expect("yaml");
        if v["kind"] != "NetworkAttachmentDefinition" {
            continue;
        }
        n += 1;
        assert_eq!(v["apiVersion"], "k8s.cni.cncf.io/v1");
        let name = v["metadata"]["name"].as_str().expect("name");
        assert!(
            name.len() <= 253 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        let spec = v["spec"].as_object().expect("spec");
        assert_eq!(spec.keys().collect::<Vec<_>>(), ["config"], "CRD spec allows only config");
        let cni: Value = serde_json::from_str(spec["config"].as_str().expect("config string")).expect("CNI JSON");
        check_cni_1_0(&cni, name);
    }
    assert_eq!(n, 9 * 4 + 1, "3x3 shell: four ISL ends per satellite, one ground segment");
    // Every satellite pod names NADs that exist, and its FRR config carries its loopback.
    let names: std::collections::HashSet<String> = text
        .split("\n---\n")
        .filter_map(|d| serde_saphyr::from_str::<Value>(d).ok())
        .filter_map(|v| v["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let sats = std::fs::read_to_string(tmp.path().join("emulation/satellites.yaml")).expect("read");
    let mut pods = 0;
    for doc in sats.split("\n---\n") {
        let v: Value = serde_saphyr::from_str(doc).expect("yaml");
        match v["kind"].as_str() {
            Some("Pod") => {
                pods += 1;
                let nets: Value = serde_json::from_str(
                    v["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"].as_str().expect("annotation"),
                )
                .expect("networks JSON");
                let nets = nets.as_array().expect("list");
                assert_eq!(nets.len(), 5, "4 ISLs + ground: {nets:?}");
                for n in nets {
                    assert!(names.contains(n["name"].as_str().expect("name")), "{n} names no NAD");
                }
            }
            Some("ConfigMap") => {
                let conf = v["data"]["frr.conf"].as_str().expect("frr.conf");
                assert!(conf.contains("ipv6 address fd00:5a7:") && conf.contains("router isis emu"), "{conf}");
            }
            _ => {}
        }
    }
    assert_eq!(pods, 9);
}

/// CNI spec 1.0 §1 (network configuration list): cniVersion, name (matching the NAD here),
/// non-empty plugins each with a type; capabilities an object of booleans.
fn check_cni_1_0(cni: &Value, nad: &str) {
    assert_eq!(cni["cniVersion"], "1.0.0", "{nad}");
    assert_eq!(cni["name"], nad);
    let name = cni["name"].as_str().expect("name");
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)), "{name}");
    let plugins = cni["plugins"].as_array().expect("plugins");
    assert!(!plugins.is_empty());
    for p in plugins {
        assert!(p["type"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        if let Some(c) = p.get("capabilities") {
            assert!(c.as_object().expect("object").values().all(Value::is_boolean), "{p}");
        }
    }
}

// ---- executing the CNI configurations ---------------------------------------------------

/// What a container runtime does with a conflist (libcni): each plugin in order, with the
/// list's name and version, the previous result, and runtimeConfig for its capabilities.
fn cni(node: &Netns, cmd: &str, pod: &Netns, ifname: &str, list: &Value, runtime: &Value) -> Value {
    let plugins: Vec<Value> = list["plugins"].as_array().expect("plugins").clone();
    let order: Vec<Value> = if cmd == "DEL" { plugins.into_iter().rev().collect() } else { plugins };
    let mut prev = Value::Null;
    for mut p in order {
        p["cniVersion"] = list["cniVersion"].clone();
        p["name"] = list["name"].clone();
        if !prev.is_null() {
            p["prevResult"] = prev.clone();
        }
        if let Some(caps) = p.get("capabilities").and_then(Value::as_object) {
            let rc: serde_json::Map<String, Value> =
                caps.keys().filter_map(|k| runtime.get(k).map(|v| (k.clone(), v.clone()))).collect();
            p["runtimeConfig"] = Value::Object(rc);
        }
        let ty = p["type"].as_str().expect("type").to_owned();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.name, &format!("/usr/lib/cni/{ty}")])
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("c-{}-{ifname}", pod.name))
            .env("CNI_NETNS", format!("/run/netns/{}", pod.name))
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn plugin");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), p.to_string().as_bytes()).expect("write");
        let out = child.wait_with_output().expect("plugin");
        assert!(
            out.status.success(),
            "{ty} {cmd} failed: {}{}\nconfig: {p}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if cmd == "ADD" {
            prev = serde_json::from_slice(&out.stdout).expect("CNI result JSON");
        }
    }
    prev
}

fn addrs(ns: &Netns, dev: &str) -> String {
    String::from_utf8_lossy(&ns.exec(&format!("ip -6 addr show dev {dev}")).stdout).into_owned()
}

fn ping(ns: &Netns, target: &str) -> bool {
    ns.try_exec(&format!("ping -6 -c 2 -i 0.2 -W 2 {target}")).status.success()
}

/// Debian's CNI plugins are installed (else the test is skipped, and in CI fails).
fn cni_plugins() -> bool {
    if Path::new("/usr/lib/cni/host-device").exists() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "containernetworking-plugins missing: `make deps` installs it");
    eprintln!("SKIP: /usr/lib/cni missing (run `make deps`)");
    false
}

/// A Walker-delta shell at 2,000 km and 80° (phasing 1): cross-plane links go down near the poles.
fn polar_shell(planes: u32, per_plane: u32) -> metal6_emulation::topology::Topology {
    use metal6_emulation::geometry::{Shell, ShellKind};
    let shell =
        Shell { kind: ShellKind::Delta, planes, per_plane, phasing: 1, altitude_km: 2000.0, inclination_deg: 80.0 };
    metal6_emulation::topology::Topology::new(shell, vec![])
}

#[test]
fn cni_configs_run_on_the_debian_plugins() {
    require_netns!();
    if !cni_plugins() {
        return;
    }
    use metal6_emulation::addressing::Addressing;
    // 80°: the inter-plane links cross the polar cut-off, so they go down and up.
    let topo = polar_shell(3, 3);
    let addressing = Addressing::new("fd00:5a7::/48".parse().expect("block"), 9, 0).expect("addressing");
    let e = metal6_cluster::Emulation {
        topology: &topo,
        addressing: &addressing,
        workers: None,
        node: "w-01",
        namespace: "constellation",
        mtu: 9000,
        frr_image: metal6_cluster::FRR_IMAGE,
        agent_image: metal6_cluster::AGENT_IMAGE,
    };
    // The node (a namespace standing in for the worker's host netns) and two satellite pods
    // joined by the intra-plane ISL 0 -> 1 (isl0 of sat 0, isl1 of sat 1).
    let node = Netns::new();
    let (s0, s1) = (Netns::new(), Netns::new());
    // The node's link agent makes every ISL's veth pair, down, with the NADs' device names.
    node.exec("ip link set lo up");
    let agent = node.try_exec(&format!(
        "{} emulate agent --shell 3x3 --altitude-km 2000 --inclination 80 --phasing 1 --mtu 9000 --once",
        common::metal6().display()
    ));
    assert!(agent.status.success(), "{}", String::from_utf8_lossy(&agent.stderr));
    let links = String::from_utf8_lossy(&node.exec("ip -o link show type veth").stdout).into_owned();
    assert_eq!(links.lines().count(), 2 * topo.grid().len(), "{links}");
    assert!(links.lines().all(|l| l.contains("mtu 9000") && l.contains("state DOWN")), "{links}");
    // Again: nothing new, nothing broken (the agent restarts next to running pods).
    let again = node.try_exec(&format!(
        "{} emulate agent --shell 3x3 --altitude-km 2000 --inclination 80 --phasing 1 --mtu 9000 --once",
        common::metal6().display()
    ));
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 ISL veth pairs created"));
    let none = json!({});
    cni(&node, "ADD", &s0, "isl0", &metal6_cluster::isl_config(&e, 0, 0), &none);
    cni(&node, "ADD", &s1, "isl1", &metal6_cluster::isl_config(&e, 1, 1), &none);
    let (a0, a1) = (addressing.interface(0, 0), addressing.interface(1, 1));
    assert!(addrs(&s0, "isl0").contains(&format!("{a0}/128")), "{}", addrs(&s0, "isl0"));
    assert!(addrs(&s1, "isl1").contains(&format!("{a1}/128")));
    assert!(String::from_utf8_lossy(&s0.exec("ip link show isl0").stdout).contains("mtu 9000"), "tuning applied");
    assert_eq!(String::from_utf8_lossy(&s0.exec("sysctl -n net.ipv6.conf.isl0.accept_dad").stdout).trim(), "0");
    // Routed the way IS-IS would: the peer's /128 on the link.
    s0.exec(&format!("ip -6 route add {a1}/128 dev isl0"));
    s1.exec(&format!("ip -6 route add {a0}/128 dev isl1"));
    assert!(ping(&s0, &a1.to_string()), "ISL ping {a0} -> {a1}");
    // Ground segment: a bridge on the node, addresses from the pod annotation's `ips`.
    let gsl = metal6_cluster::ground_config(&e, 0);
    for (sat, pod) in [(0u32, &s0), (1, &s1)] {
        let ann = metal6_cluster::annotation(&e, sat);
        let ips = ann
            .as_array()
            .and_then(|a| a.iter().find(|n| n["interface"] == "gsl0"))
            .map(|n| n["ips"].clone())
            .expect("gsl ips");
        cni(&node, "ADD", pod, "gsl0", &gsl, &json!({"ips": ips}));
    }
    let (g0, g1) = (addressing.interface(0, 4), addressing.interface(1, 4));
    assert!(addrs(&s1, "gsl0").contains(&format!("{g1}/128")));
    s0.exec(&format!("ip -6 route add {g1}/128 dev gsl0"));
    s1.exec(&format!("ip -6 route add {g0}/128 dev gsl0"));
    assert!(ping(&s0, &g1.to_string()), "ground segment ping {g0} -> {g1}");
    // The primary pod network of w-01: an address from w-01's own pod subnet.
    let (inv, _) = metal6_inventory::load(&root().join("inventory/example-dell.yaml")).expect("inventory");
    let c = inv.cluster.as_ref().expect("cluster");
    let w01 = inv.node("w-01").expect("w-01");
    let subnet = metal6_cluster::node_pod_subnet(c, w01).expect("subnet");
    let pod = Netns::new();
    let res = cni(&node, "ADD", &pod, "eth0", &metal6_cluster::primary_cni(subnet), &json!({"portMappings": []}));
    let ip: ipnet::Ipv6Net = res["ips"][0]["address"].as_str().expect("address").parse().expect("net");
    assert!(subnet.contains(&ip.addr()), "{ip} not in {subnet}");
    let gw = res["ips"][0]["gateway"].as_str().expect("gateway").to_owned();
    assert!(ping(&pod, &gw), "pod -> its bridge gateway {gw}");
    // Link switching: the agent finds the satellite pods by their addresses and switches an
    // inter-plane ISL as the polar rule says, at a time it is down and at one it is up.
    let is_up = |t: f64, a: u32| {
        topo.links_at(t)
            .iter()
            .any(|l| matches!(l.a, metal6_emulation::topology::End::Sat { sat, iface: 2 } if sat == a))
    };
    let (la, lb, t_down, t_up) = topo
        .grid()
        .into_iter()
        // Satellites without a pod yet (0 and 1 have theirs): one pod per satellite.
        .filter(|(k, a, b)| *k == metal6_emulation::LinkKind::InterPlane && *a > 1 && *b > 1)
        .find_map(|(_, a, b)| {
            let times: Vec<f64> = (0..400).map(|i| f64::from(i) * 60.0).collect();
            let down = times.iter().copied().find(|t| !is_up(*t, a))?;
            let up = times.iter().copied().find(|t| is_up(*t, a))?;
            Some((a, b, down, up))
        })
        .expect("an inter-plane ISL that goes down and up");
    let (pa, pb) = (Netns::new(), Netns::new());
    // As the satellite pods' sysctls say: a link that goes down keeps its addresses (the agent
    // finds its pods by them).
    for ns in [&s0, &s1, &pa, &pb] {
        ns.exec("sysctl -qw net.ipv6.conf.all.keep_addr_on_down=1");
    }
    cni(&node, "ADD", &pa, "isl2", &metal6_cluster::isl_config(&e, la, 2), &none);
    cni(&node, "ADD", &pb, "isl3", &metal6_cluster::isl_config(&e, lb, 3), &none);
    // One round (--once) at t; again while an end is not ready (its carrier came up just now
    // and the kernel's link watch has not caught up), as the running agent's next round would.
    let metrics = std::env::temp_dir().join(format!("m6t-{}-agent.prom", std::process::id()));
    let agent = |t: f64| {
        node.try_exec(&format!(
            "{} emulate agent --shell 3x3 --altitude-km 2000 --inclination 80 --phasing 1 --mtu 9000 --switch \
             --once --netns-prefix m6t-{}- --at {t} --metrics {}",
            common::metal6().display(),
            std::process::id(),
            metrics.display()
        ))
    };
    // The agent's check of the pods against the model, as node-exporter would read it.
    let gauge = |name: &str| -> f64 {
        let text = std::fs::read_to_string(&metrics).expect("the agent's metrics file");
        let line = text.lines().find(|l| l.starts_with(&format!("metal6_emulation_{name} "))).expect(name);
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
    };
    let switch = |t: f64| {
        let mut report = String::new();
        for _ in 0..5 {
            let o = agent(t);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            report = String::from_utf8_lossy(&o.stderr).into_owned();
            if report.contains(", 0 not ready") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        report
    };
    let state =
        |ns: &Netns, dev: &str| String::from_utf8_lossy(&ns.exec(&format!("ip link show {dev}")).stdout).into_owned();
    let report = switch(t_down);
    // (In a 3 x 3 shell the Earth blocks the intra-plane links: 0 -> 1 is down too.) Both ends
    // of both links are in pods here: four ends go dormant.
    assert!(report.contains("4 pods, 0 ISLs up, 2 down; 4 ends switched, 0 not ready"), "{report}");
    assert!(report.contains("0 ISL veth pairs created"), "pairs with both ends in pods are not made again: {report}");
    for (ns, dev) in [(&pa, "isl2"), (&pb, "isl3"), (&s0, "isl0"), (&s1, "isl1")] {
        let st = state(ns, dev);
        assert!(st.contains("state DORMANT") && st.contains("NO-CARRIER"), "{dev} at t={t_down}: {st}");
    }
    // The next round at the same time changes nothing.
    assert!(switch(t_down).contains("0 ends switched, 0 not ready"));
    let report = switch(t_up);
    assert!(report.contains("4 pods, 1 ISLs up, 1 down; 2 ends switched, 0 not ready"), "{report}");
    for (ns, dev) in [(&pa, "isl2"), (&pb, "isl3")] {
        let st = state(ns, dev);
        assert!(st.contains("state UP") && st.contains("LOWER_UP"), "{dev} up again at t={t_up}: {st}");
    }
    assert!(state(&s0, "isl0").contains("state DORMANT"), "0 -> 1 stays down");
    // Settled: the pods' four ends are as the model says.
    assert_eq!((gauge("isl_ends"), gauge("isl_ends_up"), gauge("link_mismatches")), (4.0, 2.0, 0.0));
    assert!(gauge("agent_open_fds") > 0.0 && gauge("agent_resident_bytes") > 0.0);
    // An end taken down behind the agent's back (its carrier then leaves the peer too) is a
    // mismatch the agent reports rather than fights: it sets operational states only.
    pa.exec("ip link set isl2 down");
    let o = agent(t_up);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(gauge("link_mismatches") >= 1.0, "{}", std::fs::read_to_string(&metrics).unwrap_or_default());
    pa.exec("ip link set isl2 up");
    let _ = std::fs::remove_file(&metrics);
    // DEL in reverse order: host-device hands the veth end back to the node.
    cni(&node, "DEL", &s0, "isl0", &metal6_cluster::isl_config(&e, 0, 0), &none);
    let back = node.try_exec(&format!("ip link show {}", metal6_cluster::device_name(0, 0)));
    assert!(back.status.success(), "the ISL end is back on the node after DEL");
    sh("true");
}

// ---- bootstrap on the node ------------------------------------------------------------

fn installer() -> PathBuf {
    ["target/debug/metal6-installer", "target/installer/metal6-installer"]
        .iter()
        .map(|p| root().join(p))
        .find(|p| p.exists())
        .expect("metal6-installer is not built: `make unit` (or cargo build --workspace --bins) first")
}

/// The lab inventory with lab-node-1 as the control plane and a cluster section.
fn lab_cluster_inventory(dir: &Path) -> PathBuf {
    let lab = std::fs::read_to_string(root().join("inventory/lab.yaml")).expect("lab");
    let text = lab.replacen("  lab-http:\n    role: worker", "  lab-http:\n    role: control-plane", 1)
        + "\ncluster:\n  name: lab\n  kubernetes_version: 1.31.4\n  pod_subnet: fd00:6d:4000::/56\n  \
           service_subnet: fd00:6d:4100::/112\n  join_token: env:METAL6_JOIN_TOKEN\n";
    let p = dir.join("lab-cluster.yaml");
    std::fs::write(&p, text).expect("write");
    p
}

/// `metal6-installer cluster` on a "node" (a namespace with lab-node-1's address) against a
/// real `metal6 serve --cluster-dir`: files fetched with the node's token and put in place,
/// kubeadm run when present (here the kubeadm simulator in tests/cluster/), each step in the
/// timeline and in `metal6 cluster status`; another node cannot fetch them.
#[test]
fn bootstrap_fetches_the_nodes_files_and_reports() {
    require_netns!();
    require_tool!("curl");
    let tmp = tempfile::tempdir().expect("tmp");
    let inv = lab_cluster_inventory(tmp.path());
    let cdir = tmp.path().join("cluster");
    let out = Command::new(common::metal6())
        .current_dir(root())
        .env("METAL6_JOIN_TOKEN", TOKEN)
        .args(["cluster", "render", "-i"])
        .arg(&inv)
        .arg("--out")
        .arg(&cdir)
        .args(["--ca-cert-hash", CA_HASH])
        .output()
        .expect("render");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (srv, cli) = common::lab_link("52:54:00:6d:00:01");
    cli.exec("ip -6 addr add fd00:6d:1::100/64 dev m6c0 nodad && ip -6 addr add fd00:6d:1::101/64 dev m6c0 nodad");
    let c = cdir.to_str().expect("utf-8").to_owned();
    let _server = common::Server::start(&srv, &inv, "m6s0", &["--no-ra", "--no-tftp", "--cluster-dir", &c]);
    let base = "http://[fd00:6d:1::1]:8080";
    // The node's identity as the installer leaves it: its token comes from its own plan.
    let plan = cli.exec(&format!("curl -sS -g --interface fd00:6d:1::100 {base}/v1/nodes/lab-node-1/plan.json"));
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan");
    let token = plan["report"]["token"].as_str().expect("token").to_owned();
    let node_file = tmp.path().join("node.json");
    std::fs::write(
        &node_file,
        json!({"node": "lab-node-1", "address": "fd00:6d:1::100", "events_url": format!("{base}/v1/nodes/lab-node-1/events"),
               "token": token, "sysctl": {}})
        .to_string(),
    )
    .expect("node.json");
    // Another node (lab-node-2's address) gets none of lab-node-1's files.
    let stolen = cli.try_exec(&format!(
        "curl -sS -g -o /dev/null -w '%{{http_code}}' --interface fd00:6d:1::101 {base}/v1/nodes/lab-node-1/cluster/kubeadm-init.yaml"
    ));
    assert_eq!(String::from_utf8_lossy(&stolen.stdout), "403");
    let run = |rootfs: &Path, path: &str, fail: bool| {
        cli.try_exec(&format!(
            "PATH={path} KUBEADM_SIM_FAIL={} {} cluster --node-file {} --root {} --wait 10",
            u8::from(fail),
            installer().display(),
            node_file.display(),
            rootfs.display()
        ))
    };
    let status = || {
        let o = srv.try_exec(&format!("{} cluster status -i {} -o json", common::metal6().display(), inv.display()));
        let v: Value = serde_json::from_slice(&o.stdout).expect("status json");
        (o.status.code(), v[0].clone())
    };
    // 1. No kubeadm on the node: files staged, reported.
    let r1 = tmp.path().join("root1");
    let o = run(&r1, "/usr/bin:/bin", false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = |p: &str| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(r1.join(p)).expect(p).permissions()) & 0o777
    };
    assert_eq!(mode("etc/metal6/kubeadm.yaml"), 0o600);
    assert_eq!(mode("etc/containerd/config.toml"), 0o644);
    let kubeadm = std::fs::read_to_string(r1.join("etc/metal6/kubeadm.yaml")).expect("kubeadm");
    assert!(kubeadm.contains("kind: InitConfiguration") && kubeadm.contains(TOKEN));
    let conflist = std::fs::read_to_string(r1.join("etc/cni/net.d/10-metal6-pods.conflist")).expect("cni");
    assert!(conflist.contains("fd00:6d:4000::/64"), "lab-node-1 has index 0: the first /64\n{conflist}");
    assert!(r1.join("etc/systemd/network/10-metal6-boot.network.d/pod-routes.conf").exists());
    let (code, s) = status();
    assert_eq!(
        (code, s["cluster"].as_str(), s["detail"].as_str()),
        (Some(0), Some("cluster-staged"), Some("kubeadm is not installed"))
    );
    // 2. kubeadm present (the simulator): init runs and is reported.
    let sim = root().join("tests/cluster");
    let o = run(&tmp.path().join("root2"), &format!("{}:/usr/bin:/bin", sim.display()), false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(status().1["cluster"], "cluster-joined");
    assert_eq!(status().1["mode"], "init");
    // 3. kubeadm fails: the failure and its message are in the timeline; status exits 1.
    let o = run(&tmp.path().join("root3"), &format!("{}:/usr/bin:/bin", sim.display()), true);
    assert!(!o.status.success());
    let (code, s) = status();
    assert_eq!((code, s["cluster"].as_str()), (Some(1), Some("cluster-failed")));
    assert!(s["detail"].as_str().is_some_and(|d| d.contains("Port 6443 is in use")), "{s}");
}

/// The certificate key once was derived from the join token, which every worker holds: any
/// worker could decrypt the CA keys `kubeadm init --upload-certs` stores. Now it is random
/// per output directory (or given by reference), kept 0600 outside every node's directory,
/// and reused when the same directory is rendered again (init and joins must agree).
#[test]
fn the_certificate_key_is_random_kept_and_only_in_control_plane_files() {
    let key_of = |dir: &Path| {
        let init = std::fs::read_to_string(dir.join("nodes/cp-01/kubeadm-init.yaml")).expect("init");
        init.lines()
            .find_map(|l| l.strip_prefix("certificateKey: "))
            .expect("certificateKey")
            .trim_matches('"')
            .to_owned()
    };
    let (a, b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    assert!(render(a.path(), &["--ca-cert-hash", CA_HASH]).status.success());
    assert!(render(b.path(), &["--ca-cert-hash", CA_HASH]).status.success());
    let (ka, kb) = (key_of(a.path()), key_of(b.path()));
    assert_eq!(ka.len(), 64);
    assert_ne!(ka, kb, "same token, different keys: not derived from the token");
    let stored = std::fs::read_to_string(a.path().join("certificate.key")).expect("stored key");
    assert_eq!(stored.trim(), ka);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(a.path().join("certificate.key")).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(render(a.path(), &["--ca-cert-hash", CA_HASH]).status.success());
    assert_eq!(key_of(a.path()), ka, "a second render keeps the key");
    for f in all_files(a.path()) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if text.contains(&ka) {
            let rel = f.strip_prefix(a.path()).expect("inside").to_string_lossy().into_owned();
            assert!(
                rel == "certificate.key" || rel.starts_with("nodes/cp-"),
                "{rel} carries the certificate key but is no control plane's file"
            );
        }
    }
    // A key readable by others is refused rather than used.
    std::fs::set_permissions(a.path().join("certificate.key"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = render(a.path(), &["--ca-cert-hash", CA_HASH]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("readable by others"));
}

/// `cluster render --emulation --emulation-nodes`: the split from the inventory — each
/// worker's node address is the remote of its crossing ISLs, the site MTU less 70 every ISL's.
#[test]
fn cluster_render_splits_the_constellation_over_inventory_workers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut args: Vec<&str> = GOLDEN_ARGS.to_vec();
    args.extend(["--emulation-nodes", "w-01,w-02,w-03"]);
    let out = render(tmp.path(), &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sats = std::fs::read_to_string(tmp.path().join("emulation/satellites.yaml")).expect("satellites");
    for w in ["w-01", "w-02", "w-03"] {
        assert_eq!(sats.matches(&format!("nodeName: {w}\n")).count(), 3, "a plane of three on {w}");
    }
    let agent = std::fs::read_to_string(tmp.path().join("emulation/link-agent.yaml")).expect("agent");
    let (inv, _) = metal6_inventory::load(&root().join("inventory/example-dell.yaml")).expect("inventory");
    let addr = |n: &str| {
        let p = metal6_inventory::plan::node_plan(&inv, inv.node(n).expect("node"));
        p.address.split('/').next().unwrap_or_default().to_owned()
    };
    let list = format!("w-01={},w-02={},w-03={}", addr("w-01"), addr("w-02"), addr("w-03"));
    assert!(agent.contains(&list) && agent.contains("\"--mtu\",\"8930\""), "{agent}");
    // `workers`: all twenty of the inventory's, over a shell of twenty planes.
    let mut all: Vec<&str> = GOLDEN_ARGS.iter().map(|a| if *a == "3x3" { "20x3" } else { *a }).collect();
    all.extend(["--emulation-nodes", "workers"]);
    let out = render(tmp.path(), &all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sats = std::fs::read_to_string(tmp.path().join("emulation/satellites.yaml")).expect("satellites");
    assert!((1..=20).all(|i| sats.matches(&format!("nodeName: w-{i:02}\n")).count() == 3), "a plane each");
    // A worker the inventory does not have is refused by name.
    let mut bad: Vec<&str> = GOLDEN_ARGS.to_vec();
    bad.extend(["--emulation-nodes", "w-01,w-99"]);
    let out = render(tmp.path(), &bad);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node `w-99`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A constellation split over two workers on Kubernetes (issue #21), as rendered and run:
/// `emulate run --backend k8s --nodes` pins each plane range's pods to its worker, labels the
/// NADs with it and gives every ISL the underlay MTU less VXLAN's 70 bytes; the link agent,
/// run with its DaemonSet's own command line on two "nodes" (namespaces joined by an underlay
/// link), makes each node's share — local veth pairs, and its end of each crossing ISL as a
/// VXLAN to the other node — and host-device moves a crossing ISL's two ends into two pods on
/// the two nodes, which then ping each other through the tunnel; the agent switches that ISL
/// dormant and up again at the model's instants, and the ping follows.
#[test]
fn a_split_constellation_crosses_workers_over_vxlan() {
    require_netns!();
    if !cni_plugins() {
        return;
    }
    use metal6_emulation::addressing::Addressing;
    // 4 × 3 at 2,000 km, 80°: cross-plane links go down near the poles; planes 0–1 on n1,
    // 2–3 on n2.
    let topo = polar_shell(4, 3);
    // A block of its own: the other agent test's pods (same prefix, same process) are not ours.
    let addressing = Addressing::new("fd00:5a8::/48".parse().expect("block"), 12, 0).expect("addressing");
    let (n1, n2) = (Netns::new(), Netns::new());
    let nodes = format!("{}=fd00:77::1,{}=fd00:77::2", n1.name, n2.name);
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(common::metal6())
        .args(["emulate", "run", "--backend", "k8s", "--shell", "4x3", "--altitude-km", "2000", "--inclination", "80"])
        .args(["--phasing", "1", "--mtu", "9000", "--underlay-mtu", "9000", "--block", "fd00:5a8::/48"])
        .args(["--nodes", &nodes, "--out"])
        .arg(dir.path())
        .output()
        .expect("render");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sats = std::fs::read_to_string(dir.path().join("satellites.yaml")).expect("satellites");
    assert_eq!(sats.matches(&format!("nodeName: {}", n1.name)).count(), 6, "planes 0–1");
    assert_eq!(sats.matches(&format!("nodeName: {}", n2.name)).count(), 6, "planes 2–3");
    let nads = std::fs::read_to_string(dir.path().join("nads.yaml")).expect("nads");
    assert_eq!(nads.matches(&format!("metal6.io/worker: \"{}\"", n1.name)).count(), 24, "4 ISL ends × 6 satellites");
    // Every ISL, local or crossing, gets 9000 − 70; the ground segment's bridge keeps 9000.
    assert_eq!(nads.matches("\\\"mtu\\\":8930").count(), 48, "12 satellites × 4 ISL ends");
    assert_eq!(nads.matches("\\\"mtu\\\":9000").count(), 1, "the ground segment's bridge is local: 9000");
    let agent = std::fs::read_to_string(dir.path().join("link-agent.yaml")).expect("agent");
    assert!(agent.contains("fieldPath: spec.nodeName") && agent.contains("operator: In"), "{agent}");
    let line = agent.lines().find(|l| l.trim_start().starts_with("command:")).expect("command");
    let command: Vec<String> =
        serde_json::from_str(line.trim_start().trim_start_matches("command:").trim()).expect("JSON command");
    // The underlay: the two nodes on one link.
    let (u1, u2) = (format!("u{}", std::process::id() % 10_000), format!("v{}", std::process::id() % 10_000));
    n1.exec(&format!("ip link add {u1} mtu 9000 type veth peer name {u2} mtu 9000 netns {}", n2.name));
    for (n, dev, a) in [(&n1, &u1, "fd00:77::1"), (&n2, &u2, "fd00:77::2")] {
        n.exec(&format!("ip link set lo up && ip -6 addr add {a}/64 dev {dev} nodad && ip link set {dev} up"));
    }
    // Each node's agent, with the DaemonSet's command and its own node name.
    for n in [&n1, &n2] {
        let args: Vec<String> = command[1..].iter().map(|a| a.replace("$(NODE_NAME)", &n.name)).collect();
        let run = n.try_exec(&format!("{} {} --once", common::metal6().display(), args.join(" ")));
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        // 6 intra-plane + 3 cross-plane local pairs, and 6 crossing ends (border and seam).
        assert!(
            String::from_utf8_lossy(&run.stderr).contains("9 ISL veth pairs and 6 crossing VXLAN ends created"),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let vx = String::from_utf8_lossy(&n1.exec("ip -d -o link show type vxlan").stdout).into_owned();
    assert_eq!(vx.lines().count(), 6, "{vx}");
    assert!(vx.lines().all(|l| l.contains("remote fd00:77::2") && l.contains("mtu 8930")), "{vx}");
    // The crossing ISL from sat 3 (plane 1, slot 0, on n1) to sat 6 (plane 2, slot 0, on n2).
    let part =
        metal6_emulation::partition::Partition::new(&topo, vec![n1.name.clone(), n2.name.clone()]).expect("split");
    let c = part.crossing(&topo).into_iter().find(|c| (c.a, c.b) == (3, 6)).expect("3 → 6 crosses");
    assert!(
        vx.contains(&format!("{}: ", metal6_cluster::device_name(3, 2))) && vx.contains(&format!("vxlan id {}", c.vni))
    );
    let underlay = ["fd00:77::1".parse().expect("ip"), "fd00:77::2".parse().expect("ip")];
    let e = metal6_cluster::Emulation {
        topology: &topo,
        addressing: &addressing,
        workers: Some(metal6_cluster::Workers { partition: &part, underlay: &underlay, underlay_mtu: 9000 }),
        node: "",
        namespace: "constellation",
        mtu: 9000,
        frr_image: metal6_cluster::FRR_IMAGE,
        agent_image: metal6_cluster::AGENT_IMAGE,
    };
    let (p3, p6) = (Netns::new(), Netns::new());
    let none = json!({});
    cni(&n1, "ADD", &p3, "isl2", &metal6_cluster::isl_config(&e, 3, 2), &none);
    cni(&n2, "ADD", &p6, "isl3", &metal6_cluster::isl_config(&e, 6, 3), &none);
    let (a3, a6) = (addressing.interface(3, 2), addressing.interface(6, 3));
    assert!(addrs(&p3, "isl2").contains(&format!("{a3}/128")), "{}", addrs(&p3, "isl2"));
    // As the satellite pods' sysctls say (satellites.yaml): no forwarding over a linkdown route.
    for p in [&p3, &p6] {
        p.exec("sysctl -qw net.ipv6.conf.all.ignore_routes_with_linkdown=1");
    }
    p3.exec(&format!("ip -6 route add {a6}/128 dev isl2"));
    p6.exec(&format!("ip -6 route add {a3}/128 dev isl3"));
    assert!(ping(&p3, &a6.to_string()), "ISL ping across the workers {a3} -> {a6}");
    // The agent switches the crossing ISL as the model says: dormant near the pole, then up.
    let is_up = |t: f64| {
        topo.links_at(t).iter().any(|l| matches!(l.a, metal6_emulation::topology::End::Sat { sat: 3, iface: 2 }))
    };
    let times: Vec<f64> = (0..400).map(|i| f64::from(i) * 60.0).collect();
    let t_down = times.iter().copied().find(|t| !is_up(*t)).expect("3 → 6 goes down");
    let t_up = times.iter().copied().find(|t| *t > t_down && is_up(*t)).expect("and up again");
    let switch = |t: f64| {
        let args: Vec<String> = command[1..].iter().map(|a| a.replace("$(NODE_NAME)", &n1.name)).collect();
        let o = n1.try_exec(&format!(
            "{} {} --switch --once --netns-prefix m6t-{}- --at {t}",
            common::metal6().display(),
            args.join(" "),
            std::process::id()
        ));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let report = switch(t_down);
    assert!(report.contains("2 pods") && report.contains("0 not ready"), "{report}");
    for (p, dev) in [(&p3, "isl2"), (&p6, "isl3")] {
        let st = String::from_utf8_lossy(&p.exec(&format!("ip link show {dev}")).stdout).into_owned();
        assert!(st.contains("state DORMANT"), "{dev} at t={t_down}: {st}");
    }
    assert!(!ping(&p3, &a6.to_string()), "no traffic over a dormant crossing ISL");
    switch(t_up);
    assert!(String::from_utf8_lossy(&p3.exec("ip link show isl2").stdout).contains("state UP"));
    assert!(ping(&p3, &a6.to_string()), "the crossing ISL carries traffic again at t={t_up}");
}
