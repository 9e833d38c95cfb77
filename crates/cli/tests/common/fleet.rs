//! A fleet of simulated nodes behind simulated BMCs (tests/lab/fleet_sim.py), a real
//! `metal6 serve` and `metal6 apply`: shared by apply.rs and dashboard.rs.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::{Netns, Server, metal6, root, wait_for};

/// A fleet of simulated nodes behind simulated BMCs (tests/lab/fleet_sim.py: several systems
/// per BMC, every Redfish answer `latency_ms` late) that install themselves against a real
/// `metal6 serve`, driven by `metal6 apply`. Returns apply's output and the BMCs' states.
pub struct Fleet {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    sim: Child,
    pub serve: Server,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.sim.kill();
        let _ = self.sim.wait();
    }
}

pub const FLEET_PASSWORD: &str = "fleet-sim-pw-9c1e";
pub const FLEET_SHA: &str = "5f3c0e1a9b7d2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6";

impl Fleet {
    /// With `cluster`, node-000 is the control plane of a cluster section, serve serves
    /// DIR/cluster, and every simulated node runs the real `metal6-installer cluster` after
    /// `ready` (with the kubeadm simulator of tests/cluster/).
    pub fn start(nodes: usize, systems_per_bmc: usize, latency_ms: u32, cluster: bool) -> Fleet {
        Fleet::start_with(nodes, systems_per_bmc, latency_ms, cluster, 1.0)
    }

    /// `install_seconds`: how long each simulated install writes its image.
    pub fn start_with(
        nodes: usize,
        systems_per_bmc: usize,
        latency_ms: u32,
        cluster: bool,
        install_seconds: f64,
    ) -> Fleet {
        let ns = Netns::new();
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        let bmcs = nodes.div_ceil(systems_per_bmc);
        let mut addrs = String::new();
        for b in 1..=bmcs {
            addrs.push_str(&format!(" && ip -6 addr add fd00:6d:b::{b:x}/128 dev lo nodad"));
        }
        for i in 0..nodes {
            addrs.push_str(&format!(" && ip -6 addr add fd00:6d:1::{:x}/128 dev lo nodad", 0x100 + i));
        }
        ns.exec(&format!(
            "ip link add m6d0 type veth peer name m6d1 && ip link set m6d0 up && ip link set m6d1 up && \
             ip -6 addr add fd00:6d:1::1/64 dev m6d0 nodad{addrs}"
        ));
        // The inventory: one profile, N nodes, each with its system on a shared BMC.
        let mut inv = String::from(
            "version: 1\nsite:\n  name: fleet\n  domain: fleet.metal6.test\n  provisioning:\n    interface: m6d0\n    \
             prefix: fd00:6d:1::/64\n    router: fd00:6d:1::1\n    dns: [fd00:6d:1::1]\n  boot_server:\n    \
             address: fd00:6d:1::1\n    http_port: 8080\nprofiles:\n  worker:\n    role: worker\n    boot: uefi-http\n    \
             image: bench\n  control-plane:\n    role: control-plane\n    boot: uefi-http\n    image: bench\n",
        );
        if cluster {
            inv.push_str(
                "cluster:\n  name: fleet\n  kubernetes_version: 1.31.4\n  pod_subnet: fd00:6d:4000::/56\n  \
                 service_subnet: fd00:6d:4100::/112\n  join_token: env:METAL6_JOIN_TOKEN\n",
            );
        }
        inv.push_str("nodes:\n");
        let mut list = vec![];
        for i in 0..nodes {
            let (b, sys) = (i / systems_per_bmc + 1, i % systems_per_bmc + 1);
            let name = format!("node-{i:03}");
            let addr = format!("fd00:6d:1::{:x}", 0x100 + i);
            let profile = if cluster && i == 0 { "control-plane" } else { "worker" };
            inv.push_str(&format!(
                "  - name: {name}\n    profile: {profile}\n    address: {addr}\n    nics:\n      - name: eth0\n        \
                 mac: 02:6d:00:00:{:02x}:{:02x}\n    bmc:\n      address: fd00:6d:b::{b:x}\n      port: 8443\n      \
                 username: admin\n      password: env:METAL6_FLEET_BMC_PASSWORD\n      system: \"{sys}\"\n    disk:\n      \
                 path: /dev/vda\n",
                i / 256,
                i % 256
            ));
            list.push(serde_json::json!({"name": name, "address": addr, "bmc_address": format!("fd00:6d:b::{b:x}"),
                "bmc_port": 8443, "system": sys.to_string()}));
        }
        std::fs::write(d.join("fleet.yaml"), inv).expect("inventory");
        std::fs::write(d.join("nodes.json"), serde_json::to_string(&list).expect("json")).expect("nodes");
        // Artifacts: what apply and serve read (the installer is never run here).
        std::fs::create_dir_all(d.join("artifacts/boot")).expect("dir");
        std::fs::create_dir_all(d.join("artifacts/images/bench")).expect("dir");
        std::fs::write(d.join("artifacts/boot/installer.efi"), b"not an installer").expect("efi");
        let manifest = serde_json::json!({"image": "bench",
            "outputs": [{"path": "images/bench/disk.raw", "bytes": 1, "sha256": FLEET_SHA}]});
        std::fs::write(d.join("artifacts/images/bench/manifest.json"), manifest.to_string()).expect("manifest");
        let bmc_ips: Vec<String> = (1..=bmcs).map(|b| format!("fd00:6d:b::{b:x}")).collect();
        super::tls_ca_and_leaf(d, &bmc_ips.iter().map(String::as_str).collect::<Vec<_>>());
        std::fs::write(d.join("pw"), FLEET_PASSWORD).expect("pw");
        let cdir = d.join("cluster");
        let artifacts = d.join("artifacts").to_str().expect("utf-8").to_owned();
        // The dashboard shows apply's wait reasons from its state dir.
        let apply_state = d.join("state").to_str().expect("utf-8").to_owned();
        let mut serve_args = vec!["--artifacts", &artifacts, "--no-ra", "--apply-state", &apply_state];
        let c = cdir.to_str().expect("utf-8").to_owned();
        if cluster {
            std::fs::create_dir_all(&cdir).expect("cluster dir");
            serve_args.extend(["--cluster-dir", &c]);
        }
        let serve = Server::start(&ns, &d.join("fleet.yaml"), "m6d0", &serve_args);
        let p = |f: &str| d.join(f).to_str().expect("utf-8").to_owned();
        let sim_script = root().join("tests/lab/fleet_sim.py");
        let latency = latency_ms.to_string();
        let install = install_seconds.to_string();
        let installer = root().join("target/debug/metal6-installer");
        let (kubeadm_dir, roots) = (root().join("tests/cluster"), p("roots"));
        let (cert, key, pw, nodes_json) = (p("cert.pem"), p("key.pem"), p("pw"), p("nodes.json"));
        let mut args = vec![
            sim_script.to_str().expect("utf-8"),
            "--cert",
            &cert,
            "--key",
            &key,
            "--password-file",
            &pw,
            "--nodes",
            &nodes_json,
            "--server",
            "http://[fd00:6d:1::1]:8080/",
            "--image-sha256",
            FLEET_SHA,
            "--latency-ms",
            &latency,
            "--post-seconds",
            "0.5",
            "--install-seconds",
            &install,
            "--reboot-seconds",
            "0.5",
        ];
        if cluster {
            assert!(installer.exists(), "{} is not built: cargo build --workspace --bins", installer.display());
            args.extend([
                "--cluster-installer",
                installer.to_str().expect("utf-8"),
                "--kubeadm-dir",
                kubeadm_dir.to_str().expect("utf-8"),
                "--roots",
                &roots,
                "--cluster-retry-seconds",
                "1",
            ]);
        }
        let sim = ns.spawn(Path::new("python3"), &args, &d.join("sim.log"));
        let fleet = Fleet { ns, dir, sim, serve };
        wait_for("the fleet simulator", Duration::from_secs(60), || {
            std::fs::read_to_string(fleet.dir.path().join("sim.log"))
                .ok()
                .filter(|l| l.contains("fleet_sim: ready"))
                .map(|_| ())
        });
        fleet
    }

    pub fn apply(&self, args: &[&str]) -> Output {
        self.apply_cmd(args).output().expect("apply")
    }

    pub fn apply_cmd(&self, args: &[&str]) -> Command {
        self.apply_cmd_in(&self.dir.path().join("state"), args)
    }

    /// `metal6 apply` on the fleet with its own state directory (another worker).
    pub fn apply_cmd_in(&self, state_dir: &Path, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name])
            .arg(metal6())
            .arg("apply")
            .arg("-i")
            .arg(d.join("fleet.yaml"))
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--ca-file")
            .arg(d.join("ca.pem"))
            .args(args)
            .env("METAL6_FLEET_BMC_PASSWORD", FLEET_PASSWORD)
            .env("METAL6_JOIN_TOKEN", "abcdef.0123456789abcdef");
        cmd
    }

    /// Every BMC's /sim/state.
    pub fn bmcs(&self) -> Vec<Value> {
        let n = self.dir.path().join("nodes.json");
        let list: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(n).expect("nodes")).expect("json");
        let mut addrs: Vec<String> = list.iter().filter_map(|e| e["bmc_address"].as_str().map(str::to_owned)).collect();
        addrs.dedup();
        addrs
            .iter()
            .map(|a| {
                let out = self.ns.try_exec(&format!(
                    "curl -sS --max-time 10 --cacert {} https://[{a}]:8443/sim/state",
                    self.dir.path().join("ca.pem").display()
                ));
                serde_json::from_slice(&out.stdout).expect("sim state")
            })
            .collect()
    }

    /// The most installs (installer's first report to `installed`) that overlapped, from the
    /// server's events.
    pub fn peak_installs(&self) -> usize {
        let mut edges: Vec<(u64, i32)> = vec![];
        let mut open: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for e in self.serve.events() {
            let (Some(node), Some(ts)) = (e["node"].as_str(), e["ts_ms"].as_u64()) else { continue };
            match e["phase"].as_str() {
                Some("installer") if !open.contains_key(node) => {
                    open.insert(node.to_owned(), ts);
                    edges.push((ts, 1));
                }
                Some("installed") if e["kind"] != "progress" && open.remove(node).is_some() => {
                    edges.push((ts, -1));
                }
                _ => {}
            }
        }
        edges.sort_unstable();
        let (mut now, mut peak) = (0i32, 0i32);
        for (_, d) in edges {
            now += d;
            peak = peak.max(now);
        }
        usize::try_from(peak).unwrap_or(0)
    }
}
