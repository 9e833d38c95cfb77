//! `metal6 apply` on the QEMU lab with BMCs, as an operator runs it: `metal6 lab env` starts
//! the boot server and a Redfish BMC per node (tests/lab/qemu_bmc.py, a simulator that drives
//! the QEMU VM over QMP), and `metal6 apply` runs inside the lab's namespace.
//!
//! One run proves, on real OVMF firmware and the real installer:
//! - both lab nodes (UEFI HTTP boot and PXE) go from powered-off to `ready` concurrently
//!   through their BMCs, and each timeline shows the BMC actions before the server's events;
//! - `kill -9` of apply while lab-node-1 writes its image, then apply again: it resumes, the
//!   node ends `ready` with one image download and no second power-on or power cycle;
//! - lab-node-3, whose VM has no network, misses its SLA (a warning), is retried with backoff
//!   and parks in `needs-attention` naming its last evidence, while the others are unaffected;
//! - apply on the finished nodes does nothing and says so.
//!
//! Slow (minutes under TCG); its own test binary so it never shares the CPU with another VM test.

#![allow(clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::fleet::Fleet;
use common::{metal6, root, wait_for};
use serde_json::Value;

struct LabEnv {
    child: Child,
    work: PathBuf,
    info: Value,
}

impl Drop for LabEnv {
    fn drop(&mut self) {
        // SIGTERM: lab env stops QEMU, the BMCs and the server and deletes its namespace.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LabEnv {
    fn start(inventory: &Path, work: &Path, no_network: &[&str]) -> LabEnv {
        let mut cmd = Command::new(metal6());
        cmd.args(["lab", "env", "-i"]).arg(inventory).arg("--artifacts").arg(common::lab_artifacts());
        cmd.arg("--workdir").arg(work).args(["--memory", "1536"]);
        for n in no_network {
            cmd.args(["--no-network", n]);
        }
        std::fs::create_dir_all(work).expect("workdir");
        let log = std::fs::File::create(work.with_extension("log")).expect("log");
        let child = cmd
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("metal6 lab env");
        let mut env = LabEnv { child, work: work.to_owned(), info: Value::Null };
        let info = wait_for("lab env to come up", Duration::from_secs(120), || {
            if let Ok(Some(st)) = env.child.try_wait() {
                panic!(
                    "lab env exited ({st}):\n{}",
                    std::fs::read_to_string(work.with_extension("log")).unwrap_or_default()
                );
            }
            std::fs::read_to_string(work.join("env.json")).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
        });
        env.info = info;
        env
    }

    fn ns(&self) -> &str {
        self.info["ns"].as_str().expect("ns")
    }

    /// `metal6 apply` in the lab's namespace with the BMC password in its environment.
    fn apply_cmd(&self, args: &[&str]) -> Command {
        let password = std::fs::read_to_string(self.info["bmc_password_file"].as_str().expect("pw")).expect("password");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns()]).arg(metal6()).args(["apply", "-i"]);
        cmd.arg(self.info["inventory"].as_str().expect("inventory"));
        cmd.args(["--state-dir", self.info["state_dir"].as_str().expect("state")]);
        cmd.args(["--ca-file", self.info["bmc_ca"].as_str().expect("ca")]);
        cmd.args(args).env("METAL6_LAB_BMC_PASSWORD", password.trim()).current_dir(root());
        cmd
    }

    fn spawn_apply(&self, args: &[&str], log: &str) -> Child {
        let f = std::fs::File::create(self.work.join(log)).expect("log");
        self.apply_cmd(args).stdin(Stdio::null()).stdout(f.try_clone().expect("log")).stderr(f).spawn().expect("apply")
    }

    fn run_apply(&self, args: &[&str]) -> Output {
        self.apply_cmd(args).output().expect("apply")
    }

    /// The BMC simulator's counters for a node.
    fn sim(&self, node: &str) -> Value {
        let url = self.info["bmcs"]
            .as_array()
            .and_then(|b| b.iter().find(|e| e[0] == node))
            .and_then(|e| e[2].as_str())
            .expect("sim url")
            .to_owned();
        let out = Command::new("ip")
            .args(["netns", "exec", self.ns(), "curl", "-sS", "--max-time", "10", "--cacert"])
            .arg(self.info["bmc_ca"].as_str().expect("ca"))
            .arg(&url)
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn events(&self, node: &str) -> Vec<Value> {
        std::fs::read_to_string(self.work.join("state/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["node"] == node)
            .collect()
    }

    fn status(&self, node: &str) -> Value {
        let out = Command::new(metal6())
            .args(["status", "-o", "json", "--state-dir", self.info["state_dir"].as_str().expect("state"), node])
            .output()
            .expect("status");
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status json")
    }
}

/// The lab inventory plus lab-node-3 (UEFI HTTP, a BMC of its own).
fn inventory_with_node3(dir: &Path) -> PathBuf {
    let lab = std::fs::read_to_string(root().join("inventory/lab.yaml")).expect("lab.yaml");
    let text = lab.replace("$schema=./schema.json", &format!("$schema={}/inventory/schema.json", root().display()))
        + "
  - name: lab-node-3
    profile: lab-http
    nics:
      - name: eth0
        mac: 52:54:00:6d:00:03
        boot: true
    bmc:
      address: fd00:6d:b::3
      port: 8443
      username: admin
      password: env:METAL6_LAB_BMC_PASSWORD
    disk:
      path: /dev/vda
";
    let path = dir.join("lab3.yaml");
    std::fs::write(&path, text).expect("inventory");
    path
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn apply_takes_the_lab_from_power_off_to_ready_and_survives_kill_9() {
    require_netns!();
    require_tool!("qemu-system-x86_64");
    require_tool!("curl");
    common::build_lab_image();
    let work = root().join("target/apply-run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work");
    let inv = inventory_with_node3(&work);
    let env = LabEnv::start(&inv, &work.join("lab"), &["lab-node-3"]);
    // Short limits for lab-node-3's sake; the real nodes netboot in well under a minute.
    let args =
        ["--timeout", "netboot=150s", "--sla", "netboot=45s", "--attempts", "2", "--backoff", "2s", "--poll", "1s"];
    let mut first = env.spawn_apply(&args, "apply-1.log");
    // kill -9 while lab-node-1 writes its image.
    wait_for("lab-node-1 to write its image", Duration::from_secs(600), || {
        if let Ok(Some(st)) = first.try_wait() {
            panic!(
                "apply ended early ({st}):\n{}",
                std::fs::read_to_string(env.work.join("apply-1.log")).unwrap_or_default()
            );
        }
        if !env.events("lab-node-1").iter().any(|e| e["kind"] == "progress") {
            return None;
        }
        // ...and apply has recorded it (it reads the evidence every second).
        (env.status("lab-node-1")["record"]["state"]["state"] == "install").then_some(())
    });
    first.kill().expect("kill -9");
    let _ = first.wait();
    let st = env.status("lab-node-1");
    assert_eq!(st["record"]["state"]["state"], "install", "lab-node-1 after the kill: {st}");

    let mut second = env.spawn_apply(&args, "apply-2.log");
    let code = wait_for("the second apply to finish", Duration::from_secs(900), || second.try_wait().ok().flatten());
    let out = std::fs::read_to_string(env.work.join("apply-2.log")).unwrap_or_default();
    eprintln!("--- second apply\n{out}");
    assert_eq!(code.code(), Some(1), "lab-node-3 parks, so apply exits 1");
    assert!(out.contains("resume at install"), "the second apply resumes lab-node-1: {out}");
    assert!(out.contains("ready: 2/3"), "{out}");

    // lab-node-1: one power-on, no power cycle, two boots (netboot, then the disk), one image download.
    let s1 = env.sim("lab-node-1");
    assert_eq!(
        (s1["power_ons"].as_u64(), s1["power_cycles"].as_u64(), s1["boots"].as_u64()),
        (Some(1), Some(0), Some(2)),
        "{s1}"
    );
    assert_eq!(s1["boot_log"][0]["first"], "network", "{s1}");
    assert_eq!(s1["boot_log"][1]["first"], "disk", "the one-time override was consumed: {s1}");
    let downloads: Vec<Value> = env
        .events("lab-node-1")
        .into_iter()
        .filter(|e| e["kind"] == "boot-fetch" && e["path"] == "/images/lab/disk.raw")
        .collect();
    assert!(
        downloads.len() == 1 || downloads.iter().skip(1).all(|e| e["status"] == 206),
        "one install: one download, or one resumed by Range: {downloads:?}"
    );
    let s2 = env.sim("lab-node-2");
    assert_eq!((s2["power_ons"].as_u64(), s2["power_cycles"].as_u64()), (Some(1), Some(0)), "{s2}");
    assert_eq!(s2["boot_log"][0]["override"], "Pxe", "{s2}");

    // The timeline: BMC actions, then the server's evidence, in order.
    for node in ["lab-node-1", "lab-node-2"] {
        let st = env.status(node);
        assert_eq!(st["record"]["state"]["state"], "done", "{node}: {st}");
        let h = st["timeline"].as_array().expect("timeline");
        let at = |what: &str| {
            h.iter()
                .find(|l| l["what"].as_str().is_some_and(|w| w.contains(what)))
                .and_then(|l| l["ts_ms"].as_u64())
                .unwrap_or_else(|| panic!("{node}: no {what:?} in {h:?}"))
        };
        let order =
            [at("boot set"), at("powered on"), at("installer started"), at("installed"), at("node reported ready")];
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{node}: out of order {order:?} in {h:?}");
        // The server saw the node only after the power-on: evidence, not hope.
        let first_event = env.events(node).iter().filter_map(|e| e["ts_ms"].as_u64()).min().expect("events");
        assert!(first_event >= at("powered on"), "{node}: server events before the power-on");
    }

    // lab-node-3: an SLA warning, a retry with a power cycle, then needs-attention with a reason.
    let st = env.status("lab-node-3");
    let rec = &st["record"];
    assert_eq!(rec["state"]["state"], "needs-attention", "{st}");
    let reason = rec["state"]["reason"].as_str().expect("reason");
    assert!(reason.contains("netboot timed out 2 times"), "{reason}");
    assert!(reason.contains("last evidence: none"), "{reason}");
    assert!(reason.contains("waiting for the firmware's DHCPv6 exchange"), "{reason}");
    let kinds: Vec<&str> =
        st["timeline"].as_array().expect("timeline").iter().filter_map(|l| l["what"].as_str()).collect();
    let pos = |p: &str| kinds.iter().position(|k| k.contains(p)).unwrap_or_else(|| panic!("no {p:?} in {kinds:?}"));
    assert!(pos("SLA missed") < pos("timed out after") && pos("timed out after") < pos("power-cycled"), "{kinds:?}");
    let s3 = env.sim("lab-node-3");
    assert_eq!((s3["power_ons"].as_u64(), s3["power_cycles"].as_u64()), (Some(1), Some(1)), "{s3}");

    // Again, on the finished nodes: nothing to do, and the BMCs see no power call.
    let out = env.run_apply(&["--nodes", "lab-node-1,lab-node-2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to do: 2 node(s) already done"), "{}", text(&out));
    assert_eq!(env.sim("lab-node-1")["boots"], s1["boots"]);
    // Parked stays parked, with the way out named.
    let out = Command::new(metal6())
        .args(["plan", "-i"])
        .arg(&inv)
        .args(["--nodes", "lab-node-3", "--state-dir", env.info["state_dir"].as_str().expect("state")])
        .args(["--server", "http://[::1]:9/"])
        .output()
        .expect("plan");
    assert!(text(&out).contains("apply --retry lab-node-3"), "{}", text(&out));
}

/// Twelve nodes, four per BMC, every Redfish answer 100 ms late: apply keeps to two sessions
/// per BMC (counted by the BMCs), to four installs at once (seen by the server), and takes every
/// node to `ready` through the real server's events API.
#[test]
fn apply_drives_a_simulated_fleet_within_its_limits() {
    require_netns!();
    require_tool!("curl");
    require_tool!("python3");
    let fleet = Fleet::start(12, 4, 100, false);
    // node-011 names a system its BMC does not have: it parks, the others are unaffected.
    let inv = fleet.dir.path().join("fleet.yaml");
    let good = std::fs::read_to_string(&inv).expect("inventory");
    let (head, tail) = good.split_at(good.find("name: node-011").expect("node-011"));
    std::fs::write(&inv, format!("{head}{}", tail.replacen("system: \"4\"", "system: \"9\"", 1))).expect("write");
    let limits = ["--parallel", "12", "--per-bmc", "2", "--installs", "4", "--poll", "200ms"];
    // Doctor's preflight finds it before anything is powered on, and apply refuses to start.
    let out = fleet.apply(&limits);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("apply refused: doctor found 1 failure") && t.contains("node-011") && t.contains("no system \"9\""),
        "{t}"
    );
    // The rest of this test is apply's own handling of that node: past the preflight.
    let limits = ["--parallel", "12", "--per-bmc", "2", "--installs", "4", "--poll", "200ms", "--skip-doctor"];
    // Ctrl-C once some nodes install: apply stops, exit 130, every node resumable.
    let mut first = fleet.apply_cmd(&[&limits[..], &["--timeout", "preflight=8s", "--attempts", "1"]].concat());
    let mut child = first.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("apply");
    wait_for("installs to start", Duration::from_secs(60), || {
        fleet.serve.events().iter().any(|e| e["phase"] == "writing-image").then_some(())
    });
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let code = wait_for("apply to stop on Ctrl-C", Duration::from_secs(30), || child.try_wait().ok().flatten());
    assert_eq!(code.code(), Some(130), "Ctrl-C exits 130");
    let out = fleet.apply(&[&limits[..], &["--timeout", "preflight=8s", "--attempts", "1"]].concat());
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "node-011 parks: {t}");
    assert!(t.contains("resume at"), "the interrupted nodes resume: {t}");
    assert!(
        t.contains("ready: 11/"),
        "{t}\n--- sim\n{}",
        std::fs::read_to_string(fleet.dir.path().join("sim.log")).unwrap_or_default()
    );
    assert!(t.contains("preflight timed out 1 times") && t.contains("no system \"9\""), "{t}");
    // The operator fixes the inventory and resumes the parked node; nothing else is touched.
    std::fs::write(&inv, &good).expect("write");
    let out = fleet.apply(&[&limits[..], &["--retry", "node-011"]].concat());
    let t = text(&out);
    assert!(out.status.success() && t.contains("ready: 1/1"), "{t}");
    for b in fleet.bmcs() {
        // Four nodes want this BMC at once: the limit is what holds them to two.
        assert_eq!(b["peak_sessions"], 2, "{b}");
        assert_eq!(b["sessions_open"], 0, "{b}");
        for (id, s) in b["systems"].as_object().expect("systems") {
            // One power-on each, Ctrl-C or not: resumed nodes are not powered again.
            assert_eq!((s["power_ons"].as_u64(), s["installs_done"].as_u64()), (Some(1), Some(1)), "system {id}: {s}");
        }
    }
    let peak = fleet.peak_installs();
    assert!((1..=4).contains(&peak), "--installs 4 but {peak} installs overlapped");
    assert!(t.contains("apply CPU time:"), "{t}");
}

/// NODES (default 200) simulated nodes, 4 per BMC, through a real serve: every node ready and
/// no BMC over its limit. In `make test` (about 30 s); `make bench-apply` runs it in release
/// and prints the numbers.
#[test]
fn bench_apply() {
    require_netns!();
    let nodes: usize = std::env::var("NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let per_bmc = 2;
    let fleet = Fleet::start(nodes, 4, 100, false);
    let start = std::time::Instant::now();
    let out = fleet.apply(&["--parallel", &nodes.to_string(), "--per-bmc", &per_bmc.to_string(), "--installs", "64"]);
    let secs = start.elapsed().as_secs_f64();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let bmcs = fleet.bmcs();
    let peak = bmcs.iter().filter_map(|b| b["peak_sessions"].as_u64()).max().unwrap_or(0);
    let line = |p: &str| t.lines().find(|l| l.starts_with(p)).unwrap_or("(missing)").to_owned();
    eprintln!("bench-apply: {nodes} simulated nodes, {} BMCs (4 systems each, 100 ms per Redfish answer)", bmcs.len());
    eprintln!("{}", line("ready: "));
    eprintln!("wall time: {secs:.1} s");
    eprintln!("{}", line("apply CPU time: "));
    eprintln!("peak concurrent calls per BMC: {peak} (limit {per_bmc})");
    eprintln!("peak concurrent installs: {} (limit 64)", fleet.peak_installs());
    assert!(peak <= per_bmc, "a BMC saw {peak} sessions at once, over the limit {per_bmc}");
}

/// The cluster step with no operator step: apply renders the cluster files into serve's
/// `--cluster-dir`, the control plane's real `metal6-installer cluster` runs `kubeadm init`
/// (the simulator, which makes a CA) and reports the CA's hash, apply renders the join files
/// from it, and the workers' cluster units — failing while their join file is missing,
/// restarted like the systemd unit — join. The hash is checked against openssl's. The control
/// plane then applies the workload (Multus) with kubectl (simulated) and is done after it.
#[test]
fn apply_bootstraps_the_cluster_from_the_first_control_planes_report() {
    require_netns!();
    require_tool!("curl");
    require_tool!("openssl");
    let fleet = Fleet::start(3, 3, 20, true);
    let d = fleet.dir.path();
    let cdir = d.join("cluster");
    let out =
        fleet.apply(&["--poll", "200ms", "--timeout", "cluster=120s", "--cluster-dir", cdir.to_str().expect("utf-8")]);
    let t = text(&out);
    let logs = || {
        ["node-000", "node-001", "node-002"]
            .iter()
            .map(|n| std::fs::read_to_string(d.join("roots").join(n).join("cluster.log")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(out.status.success(), "{t}\n--- cluster units\n{}", logs());
    assert!(t.contains("ready: 3/3"), "{t}");
    let events = fleet.serve.events();
    let joined = |node: &str| {
        events
            .iter()
            .find(|e| e["node"] == node && e["phase"] == "cluster-joined")
            .unwrap_or_else(|| panic!("{node} never joined:\n{}", logs()))
            .clone()
    };
    let init = joined("node-000");
    assert_eq!(init["mode"], "init");
    // The hash as kubeadm's documentation computes it, from the CA the node made.
    let ca = d.join("roots/node-000/etc/kubernetes/pki/ca.crt");
    let o = common::sh(&format!(
        "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1",
        ca.display()
    ));
    let want = format!("sha256:{}", String::from_utf8_lossy(&o.stdout).trim());
    assert_eq!(init["ca_cert_hash"], want.as_str());
    for w in ["node-001", "node-002"] {
        assert_eq!(joined(w)["mode"], "join", "{w}");
        let join = std::fs::read_to_string(cdir.join("nodes").join(w).join("kubeadm-join.yaml")).expect("join file");
        assert!(join.contains(&want), "{w}'s join file carries the hash:\n{join}");
        // Its unit asked before the hash was known, and was restarted until the file came.
        let first = events.iter().position(|e| e["node"] == w && e["phase"] == "cluster-joined");
        assert!(first.is_some());
    }
    let st = Command::new(metal6())
        .args(["status", "-o", "json", "--state-dir"])
        .arg(d.join("state"))
        .arg("node-000")
        .output()
        .expect("status");
    let st = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(st.contains("join file(s) rendered with the CA hash"), "{st}");
    // The workload, once, from the first control plane, with its admin kubeconfig (kubectl
    // simulated): Multus's objects applied, and node-000 done only after it.
    let applied = events
        .iter()
        .find(|e| e["node"] == "node-000" && e["phase"] == "workload-applied")
        .unwrap_or_else(|| panic!("no workload-applied:\n{}", logs()));
    assert_eq!(applied["files"], serde_json::json!(["multus-thick.yaml"]));
    assert!(applied["objects"].as_u64().is_some_and(|n| n >= 3), "{applied}");
    assert!(d.join("roots/node-000/etc/metal6/manifests/multus-thick.yaml").exists());
    assert!(
        !events.iter().any(|e| e["node"] != "node-000" && e["phase"] == "workload-applied"),
        "workers apply nothing"
    );
    assert!(st.contains("workload-applied: multus-thick.yaml applied"), "{st}");
}
