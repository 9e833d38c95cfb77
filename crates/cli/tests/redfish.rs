//! `metal6 bmc` against the iDRAC-semantics simulator (`tests/redfish/idrac_sim.py`), which
//! serves the real iDRAC9 R750 capture over HTTPS and adds Dell's job, session and update
//! behaviour, in a namespace of its own with the BMC addresses of `tests/redfish/r750-sim.yaml`
//! on its loopback. Each Dell quirk the simulator can play has a test here. Skips with a
//! message when the capture (`../shared/fixtures/idrac9-r750`) is absent.

#![allow(clippy::print_stderr)] // skips say why

mod common;

use std::path::PathBuf;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::{Netns, Server, root, sh, wait_for};
use serde_json::Value;

const PASSWORD: &str = "calvin-sim-7f3a";
const INV: &str = "tests/redfish/r750-sim.yaml";

/// The capture: `METAL6_IDRAC_FIXTURE`, else `../shared` next to the checkout, else the
/// workplace's `/work/shared` (a fresh clone may live elsewhere).
fn capture() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("METAL6_IDRAC_FIXTURE") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![root().join("../shared/fixtures/idrac9-r750"), PathBuf::from("/work/shared/fixtures/idrac9-r750")],
    };
    let found = candidates.iter().find(|p| p.join("redfish/v1").is_dir()).cloned();
    if found.is_none() {
        eprintln!("SKIP: no iDRAC9 capture at {candidates:?} (set METAL6_IDRAC_FIXTURE)");
    }
    found
}

struct Sim {
    ns: Netns,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    fn start(fixture: &std::path::Path, extra: &[&str]) -> Sim {
        let ns = Netns::new();
        ns.exec(
            "ip link set lo up && ip -6 addr add fd00:6d:b::2/128 dev lo && ip -6 addr add fd00:6d:b::3/128 dev lo \
             && ip -6 addr add fd00:6d:b::4/128 dev lo && ip -6 addr add fd00:6d:b::5/128 dev lo",
        );
        Sim::start_in(ns, fixture, extra)
    }

    fn start_in(ns: Netns, fixture: &std::path::Path, extra: &[&str]) -> Sim {
        let dir = tempfile::tempdir().expect("tmp");
        common::tls_ca_and_leaf(dir.path(), &["fd00:6d:b::2", "fd00:6d:b::3", "fd00:6d:b::4", "fd00:6d:b::5"]);
        std::fs::write(dir.path().join("pw"), PASSWORD).expect("pw");
        let p = |f: &str| dir.path().join(f).to_str().expect("utf-8").to_owned();
        let (cert, key, pw) = (p("cert.pem"), p("key.pem"), p("pw"));
        let fx = fixture.to_str().expect("utf-8").to_owned();
        let script = root().join("tests/redfish/idrac_sim.py");
        let mut args = vec![
            script.to_str().expect("utf-8"),
            "--fixture",
            &fx,
            "--listen",
            "::",
            "--port",
            "8443",
            "--cert",
            &cert,
            "--key",
            &key,
            "--password-file",
            &pw,
        ];
        args.extend_from_slice(extra);
        let child = ns.spawn(std::path::Path::new("python3"), &args, &dir.path().join("sim.log"));
        let sim = Sim { ns, dir, child };
        wait_for("the simulator to listen", Duration::from_secs(20), || {
            std::fs::read_to_string(sim.dir.path().join("sim.log")).ok().filter(|l| l.contains("listening")).map(|_| ())
        });
        sim
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// `metal6 bmc ARGS` in the simulator's namespace, password in the environment.
    fn bmc(&self, args: &str) -> Output {
        let cmd = format!(
            "cd {} && METAL6_SIM_BMC_PASSWORD={PASSWORD} {} bmc {args}",
            root().display(),
            common::metal6().display()
        );
        let out = self.ns.try_exec(&cmd);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!all.contains(PASSWORD), "the BMC password was printed:\n{all}");
        out
    }

    fn bmc_ok(&self, args: &str) -> String {
        let out = self.bmc(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "`metal6 bmc {args}` failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    fn state(&self) -> Value {
        let out = self.ns.try_exec(&format!("curl -sS --cacert {} https://[fd00:6d:b::2]:8443/sim/state", self.ca()));
        serde_json::from_slice(&out.stdout).expect("sim state JSON")
    }
}

fn std_args(sim: &Sim) -> String {
    format!("-i {INV} --ca-file {}", sim.ca())
}

#[test]
fn inventory_over_verified_tls_with_sessions_closed() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    let sim = Sim::start(&fx, &[]);
    let out = sim.bmc_ok(&format!("inventory {} r750", std_args(&sim)));
    for want in [
        "PowerEdge R750",
        "F54P1G3",
        "1.8.2",
        "6.00.30.00",
        "NIC.Integrated.1-1-1=e4:3d:1a:13:27:f0",
        "all inventory MACs found",
    ] {
        assert!(out.contains(want), "missing {want}:\n{out}");
    }
    let json: Value =
        serde_json::from_str(&sim.bmc_ok(&format!("inventory {} r750 -o json", std_args(&sim)))).expect("json");
    assert_eq!(json[0]["result"]["bmc"]["service_tag"], "F54P1G3");
    assert_eq!(json[0]["result"]["inventory_nics"][1]["bmc_id"], "NIC.Integrated.1-2-1");
    // A node whose boot MAC the BMC does not have fails the check (exit 1).
    let out = sim.bmc(&format!("inventory {} r750-custom", std_args(&sim)));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not on the BMC: e4:3d:1a:13:27:f3"));
    // Every session was deleted again (iDRAC has few slots).
    let st = sim.state();
    assert_eq!(st["sessions_open"], 0, "{st}");
    assert!(st["sessions_created"].as_u64() >= Some(3), "sessions, not Basic: {st}");
    // Certificates are verified: another CA fails at once (no retries of a TLS error)...
    let start = Instant::now();
    let other = sim.dir.path().join("other-ca.pem");
    let out = sim.bmc(&format!("inventory -i {INV} --ca-file {} r750", other.display()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("UnknownIssuer"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(start.elapsed() < Duration::from_secs(5), "a TLS failure was retried: {:?}", start.elapsed());
    // ...and --insecure is allowed, loudly.
    let out = sim.bmc(&format!("inventory -i {INV} --insecure r750"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS certificate verification is off"));
    // A wrong password is a clear error, and never shown.
    let bad = sim.ns.try_exec(&format!(
        "cd {} && METAL6_SIM_BMC_PASSWORD=wrong-pw-123 {} bmc inventory {} r750",
        root().display(),
        common::metal6().display(),
        std_args(&sim)
    ));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("login as root refused (HTTP 401)") && !text.contains("wrong-pw-123"), "{text}");
    let unset = sim.ns.try_exec(&format!(
        "cd {} && {} bmc inventory {} r750",
        root().display(),
        common::metal6().display(),
        std_args(&sim)
    ));
    assert!(
        String::from_utf8_lossy(&unset.stdout)
            .contains("secret env:METAL6_SIM_BMC_PASSWORD: the environment variable is not set")
    );
}

/// The acceptance check: the dense-pod worker profile of `inventory/example-dell.yaml`
/// planned against the R750: three changes, all in one pass.
#[test]
fn bios_plan_of_the_dense_worker_profile() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    // The simulator inventory carries example-dell.yaml's r750-dense profile unchanged.
    let profile = |path: &str| {
        let (inv, _) = metal6_inventory::load(&root().join(path)).expect("inventory");
        serde_json::to_value(&inv.bios_profiles["r750-dense"]).expect("json")
    };
    assert_eq!(profile("inventory/example-dell.yaml"), profile(INV));
    let sim = Sim::start(&fx, &[]);
    let out = sim.bmc_ok(&format!("bios plan {} r750", std_args(&sim)));
    let want = "r750: profile r750-dense: 3 change(s) in 1 pass\n\
                \x20 pass 1: HttpDev1Interface NIC.Slot.5-1 -> NIC.Integrated.1-1-1\n\
                \x20 pass 1: HttpDev1Protocol IPv4 -> IPv6\n\
                \x20 pass 1: WorkloadProfile NotConfigured -> TelcoOptimizedProfile\n";
    assert!(out.starts_with(want), "{out}");
    assert!(out.contains("unchanged: SysProfile=PerfOptimized (already set)"), "{out}");
    // Static IPv6 HTTP boot: this BIOS's registry takes IPv4 literals only; refused with why.
    let out = sim.bmc(&format!("bios plan {} r750-static", std_args(&sim)));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pass 1: HttpDev1Uri \"\" -> http://[fd00:6d:1::1]/boot/installer.efi"), "{text}");
    assert!(text.contains("refused: HttpDev1Ip=fd00:6d:1::111") && text.contains("takes no IPv6 literal"), "{text}");
    // Nothing was written by a plan.
    assert!(sim.state()["jobs"].as_object().is_some_and(serde_json::Map::is_empty));
}

fn bios_of(sim: &Sim, attr: &str) -> Value {
    sim.state()["bios"][attr].clone()
}

#[test]
fn bios_apply_one_shot_job_reboot_and_verify() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    let sim = Sim::start(&fx, &[]);
    // Without --reboot: staged only; twice clears the first attempt's job instead of SYS011.
    let out = sim.bmc_ok(&format!("bios apply {} r750", std_args(&sim)));
    assert!(out.contains("staged pass 1") && out.contains("reset the node to apply"), "{out}");
    sim.bmc_ok(&format!("bios apply {} r750", std_args(&sim)));
    let st = sim.state();
    assert_eq!(st["jobs"].as_object().map(serde_json::Map::len), Some(1), "stale job not cleared: {st}");
    assert_eq!(st["pending"]["WorkloadProfile"], "TelcoOptimizedProfile");
    let out = sim.bmc_ok(&format!("bios apply {} r750 --reboot", std_args(&sim)));
    assert!(out.contains("applied and verified 3 value(s)"), "{out}");
    assert_eq!(bios_of(&sim, "HttpDev1Protocol"), "IPv6");
    assert_eq!(bios_of(&sim, "HttpDev1Interface"), "NIC.Integrated.1-1-1");
    let st = sim.state();
    assert_eq!(st["counters"]["resets"], serde_json::json!(["ForceRestart"]));
    assert_eq!(st["counters"]["if_match_on_action"], 0, "If-Match sent on an action POST");
    assert!(sim.bmc_ok(&format!("bios apply {} r750 --reboot", std_args(&sim))).contains("already applied"));
}

#[test]
fn bios_apply_two_passes_through_the_gatekeeper() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    let sim = Sim::start(&fx, &[]);
    let plan = sim.bmc_ok(&format!("bios plan {} r750-custom", std_args(&sim)));
    assert!(plan.contains("2 change(s) in 2 passes"), "{plan}");
    let out = sim.bmc_ok(&format!("bios apply {} r750-custom --reboot", std_args(&sim)));
    assert!(out.contains("applied and verified 2 value(s)"), "{out}");
    assert_eq!(bios_of(&sim, "SysProfile"), "Custom");
    assert_eq!(bios_of(&sim, "ProcCStates"), "Enabled");
    assert_eq!(sim.state()["counters"]["resets"].as_array().map(Vec::len), Some(2), "one reboot per pass");
}

/// Dell's older style: PATCH only stages; a config job is created explicitly.
#[test]
fn bios_apply_two_step_job_style() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    let sim = Sim::start(&fx, &["--job-style", "two-step"]);
    let out = sim.bmc_ok(&format!("bios apply {} r750 --reboot", std_args(&sim)));
    assert!(out.contains("applied and verified 3 value(s)"), "{out}");
}

#[test]
fn bios_apply_quirks() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    // 200 without Location (libredfish#97): the job is found in the queue.
    let sim = Sim::start(&fx, &["--quirk", "no-location"]);
    let out = sim.bmc_ok(&format!("bios apply {} r750 --reboot", std_args(&sim)));
    assert!(out.contains("applied and verified"), "{out}");
    drop(sim);
    // 503 while the BMC is busy after the reset: retried, not fatal.
    let sim = Sim::start(&fx, &["--quirk", "busy-after-reset=2"]);
    let out = sim.bmc_ok(&format!("bios apply {} r750 --reboot", std_args(&sim)));
    assert!(out.contains("applied and verified"), "{out}");
    drop(sim);
    // A job stuck with PR30 is a failure, named as such.
    let sim = Sim::start(&fx, &["--quirk", "stuck-pr30"]);
    let out = sim.bmc(&format!("bios apply {} r750 --reboot --job-timeout 30", std_args(&sim)));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("failed: Scheduled Job processing initialization failure."), "{text}");
    drop(sim);
    // Someone else's RAID job and a stale BIOS job in the queue: the stale BIOS job goes (it
    // would block ours), the RAID job stays (the whole queue was once cleared).
    let sim = Sim::start(&fx, &["--quirk", "job=RAIDConfiguration", "--quirk", "job=BIOSConfiguration"]);
    let before = sim.state();
    let out = sim.bmc_ok(&format!("bios apply {} r750 --reboot", std_args(&sim)));
    assert!(out.contains("applied and verified"), "{out}");
    let after = sim.state();
    let types = |s: &Value| -> Vec<(String, String)> {
        s["jobs"]
            .as_object()
            .map(|m| m.iter().map(|(id, j)| (id.clone(), j["JobType"].as_str().unwrap_or("").to_owned())).collect())
            .unwrap_or_default()
    };
    let raid: Vec<_> = types(&before).into_iter().filter(|(_, t)| t == "RAIDConfiguration").collect();
    assert_eq!(raid.len(), 1, "{before}");
    assert!(types(&after).contains(&raid[0]), "the RAID job was deleted: {after}");
    let stale: Vec<_> = types(&before).into_iter().filter(|(_, t)| t == "BIOSConfiguration").collect();
    assert!(!types(&after).contains(&stale[0]), "the stale BIOS job is still there: {after}");
    drop(sim);
    // Completed, but the BIOS silently kept one value: verification catches it.
    let sim = Sim::start(&fx, &["--quirk", "ignore=WorkloadProfile"]);
    let out = sim.bmc(&format!("bios apply {} r750 --reboot", std_args(&sim)));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("does not show it")
            && text.contains("WorkloadProfile: wanted TelcoOptimizedProfile, BIOS has NotConfigured"),
        "{text}"
    );
}

#[test]
fn power_and_boot_once() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    let sim = Sim::start(&fx, &[]);
    let a = std_args(&sim);
    assert!(sim.bmc_ok(&format!("power status {a} r750")).contains("r750  On"));
    assert!(sim.bmc_ok(&format!("power off {a} r750")).contains("r750  Off"));
    assert!(sim.bmc_ok(&format!("power on {a} r750")).contains("r750  On"));
    assert!(sim.bmc_ok(&format!("power cycle {a} r750")).contains("r750  On"));
    assert_eq!(sim.state()["counters"]["resets"], serde_json::json!(["ForceOff", "On", "PowerCycle"]));
    sim.bmc_ok(&format!("boot-once uefi-http {a} r750"));
    let boot = sim.ns.try_exec(&format!(
        "curl -sS --cacert {} -u root:{PASSWORD} https://[fd00:6d:b::2]:8443/redfish/v1/Systems/System.Embedded.1",
        sim.ca()
    ));
    let sys: Value = serde_json::from_slice(&boot.stdout).expect("system");
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "UefiHttp");
    assert_eq!(sys["Boot"]["BootSourceOverrideEnabled"], "Once");
    assert_eq!(sys["Boot"]["BootSourceOverrideMode"], "UEFI");
    // Many nodes in parallel, one result each, in inventory order.
    let json: Value =
        serde_json::from_str(&sim.bmc_ok(&format!("power status {a} --all --parallel 2 -o json"))).expect("json");
    let names: Vec<&str> = json.as_array().expect("array").iter().filter_map(|o| o["node"].as_str()).collect();
    assert_eq!(names, ["r750", "r750-static", "r750-custom", "r750-https"]);
}

/// SimpleUpdate from `metal6 serve`: the simulated BMC downloads each package over IPv6 from
/// our HTTP server, iDRAC first (it restarts: 503s), then BIOS (scheduled until a reset).
/// A simulator whose packages come from a real `metal6 serve` on the provisioning address
/// (the BMC downloads them over IPv6), and the serve guards that must outlive it.
fn with_firmware_server(fx: &std::path::Path, quirks: &[&str]) -> (Sim, Server, Netns, tempfile::TempDir) {
    let (srv, cli) = common::lab_link("52:54:00:6d:0b:01");
    srv.exec(
        "ip link set lo up && ip -6 addr add fd00:6d:b::2/128 dev lo && ip -6 addr add fd00:6d:b::3/128 dev lo \
         && ip -6 addr add fd00:6d:b::4/128 dev lo",
    );
    let www = tempfile::tempdir().expect("www");
    std::fs::create_dir_all(www.path().join("firmware")).expect("dir");
    for (f, n) in
        [("iDRAC-with-Lifecycle-Controller_Firmware_7.00.00.181_A00.EXE", 300_000), ("BIOS_R750_1.15.2.EXE", 200_000)]
    {
        std::fs::write(www.path().join("firmware").join(f), vec![0x4d; n]).expect("package");
    }
    let artifacts = www.path().to_str().expect("utf-8").to_owned();
    // The inventory serves HTTPS too (r750-https): serve needs its certificate.
    let tls = www.path().join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    common::tls_rsa_ca_and_leaf(&tls, &["fd00:6d:1::1"]);
    let (cert, key) = (tls.join("cert.pem").display().to_string(), tls.join("key.pem").display().to_string());
    let serve = Server::start(
        &srv,
        &root().join(INV),
        "m6s0",
        &["--no-ra", "--no-tftp", "--artifacts", &artifacts, "--tls-cert", &cert, "--tls-key", &key],
    );
    (Sim::start_in(srv, fx, quirks), serve, cli, www)
}

/// "Completed, reboot pending" (notes §9): the update waits for a reset the same way.
#[test]
fn firmware_update_reboot_pending() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    let (sim, _serve, _cli, www) = with_firmware_server(&fx, &["--quirk", "reboot-pending"]);
    // With the baseline's SHA-256: a wrong one stops before the BMC is told anything.
    let pkg = www.path().join("firmware/iDRAC-with-Lifecycle-Controller_Firmware_7.00.00.181_A00.EXE");
    let sum = String::from_utf8_lossy(&sh(&format!("sha256sum {}", pkg.display())).stdout)
        .split_whitespace()
        .next()
        .expect("sum")
        .to_owned();
    let text = std::fs::read_to_string(root().join(INV)).expect("inventory");
    let line = "        image_url: http://[fd00:6d:1::1]/firmware/iDRAC-with-Lifecycle-Controller_Firmware_7.00.00.181_A00.EXE\n";
    assert!(text.contains(line));
    let with = |sha: &str| {
        let f = sim.dir.path().join(format!("sha-{}.yaml", &sha[..8]));
        std::fs::write(&f, text.replacen(line, &format!("{line}        sha256: {sha}\n"), 1)).expect("write");
        format!("-i {} --ca-file {}", f.display(), sim.ca())
    };
    let wrong = sim.bmc(&format!("firmware apply {} r750 --reboot --job-timeout 60", with(&"0".repeat(64))));
    let err = String::from_utf8_lossy(&wrong.stdout);
    assert!(!wrong.status.success() && err.contains("not installing it"), "{err}");
    assert!(sim.state()["jobs"].as_object().is_some_and(serde_json::Map::is_empty), "no update was started");
    let out = sim.bmc_ok(&format!("firmware apply {} r750 --reboot --job-timeout 60", with(&sum)));
    assert!(out.contains("all components at or above it"), "{out}");
}

#[test]
fn firmware_baseline_through_metal6_serve() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    let (sim, _serve, _cli, _www) = with_firmware_server(&fx, &[]);
    let a = std_args(&sim);
    // A site that needs BIOS 1.10.0 for IPv6 HTTP boot: the BIOS change waits for firmware.
    let gated = sim.dir.path().join("gated.yaml");
    let text = std::fs::read_to_string(root().join(INV)).expect("inventory");
    std::fs::write(&gated, text.replace("min_version: 1.8.2", "min_version: 1.10.0")).expect("write");
    let g = format!("-i {} --ca-file {}", gated.display(), sim.ca());
    let plan = sim.bmc_ok(&format!("firmware plan {g} r750"));
    assert!(
        plan.contains("idrac (Integrated Dell Remote Access Controller): 6.00.30.00 -> 7.00.00.181: update"),
        "{plan}"
    );
    assert!(plan.contains("bios (BIOS): 1.8.2 -> 1.15.2: update"), "{plan}");
    assert!(plan.contains("gate: bios >= 1.10.0 before ipv6-http-boot: fails now, holds after"), "{plan}");
    let refused = sim.bmc(&format!("bios apply {g} r750 --reboot"));
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(
        !refused.status.success() && text.contains("bios >= 1.10.0 before ipv6-http-boot (installed: 1.8.2)"),
        "{text}"
    );
    assert!(sim.state()["jobs"].as_object().is_some_and(serde_json::Map::is_empty), "nothing staged");
    let out = sim.bmc_ok(&format!("firmware apply {g} r750 --reboot --job-timeout 60"));
    assert!(out.contains("all components at or above it"), "{out}");
    let out = sim.bmc_ok(&format!("bios apply {g} r750 --reboot"));
    assert!(out.contains("applied and verified 3 value(s)"), "{out}");
    let inv = sim.bmc_ok(&format!("inventory {a} r750"));
    assert!(inv.contains("1.15.2") && inv.contains("7.00.00.181"), "{inv}");
    let st = sim.state();
    let sizes: Vec<u64> = st["jobs"].as_object().expect("jobs").values().filter_map(|j| j["_bytes"].as_u64()).collect();
    assert_eq!(sizes.len(), 2, "{st}");
    assert!(sizes.contains(&300_000) && sizes.contains(&200_000), "{sizes:?}");
    assert_eq!(st["counters"]["resets"], serde_json::json!(["ForceRestart", "ForceRestart"]), "BIOS update, BIOS job");
    assert_eq!(st["counters"]["if_match_on_action"], 0);
    // The iDRAC restart dropped the session: metal6 logged in again, and closed what it opened.
    assert_eq!(st["sessions_open"], 0, "{st}");
}

/// `--write-back` fills the MACs of NICs that name their `bmc_id` from the BMC, changing
/// nothing else in the file; a NIC whose MAC disagrees with its bmc_id is reported.
#[test]
fn inventory_write_back_fills_missing_macs_only() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    let sim = Sim::start(&fx, &[]);
    let original = std::fs::read_to_string(root().join(INV)).expect("inventory");
    // r750's second NIC loses its MAC and names its BMC id instead; a comment stays next to it.
    let edited = original.replacen(
        "      - name: eno12409np1\n        mac: e4:3d:1a:13:27:f1\n",
        "      - name: eno12409np1   # the second 25G port\n        bmc_id: NIC.Integrated.1-2-1\n",
        1,
    );
    assert_ne!(edited, original);
    // The inventory is a symlink into a checkout, as operators keep them: it stays one.
    let real = sim.dir.path().join("checkout-fleet.yaml");
    std::fs::write(&real, &edited).expect("write");
    let file = sim.dir.path().join("fleet.yaml");
    std::os::unix::fs::symlink(&real, &file).expect("symlink");
    // Without --write-back the file is invalid, with a hint.
    let out = sim.bmc(&format!("inventory -i {} --ca-file {} r750", file.display(), sim.ca()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[missing-mac]"));
    let out = sim.bmc(&format!("inventory -i {} --ca-file {} r750 --write-back", file.display(), sim.ca()));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("filled 1 MAC(s)"));
    let after = std::fs::read_to_string(&file).expect("read");
    let want = edited.replacen(
        "        bmc_id: NIC.Integrated.1-2-1\n",
        "        bmc_id: NIC.Integrated.1-2-1\n        mac: e4:3d:1a:13:27:f1\n",
        1,
    );
    assert_eq!(after, want, "only the MAC line may change");
    assert!(std::fs::symlink_metadata(&file).expect("stat").file_type().is_symlink(), "still a symlink");
    let leftovers: Vec<_> = std::fs::read_dir(sim.dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".metal6-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let check = sh(&format!("{} inventory check {}", common::metal6().display(), file.display()));
    assert!(check.status.success());
    // The same BMC id with another NIC's MAC is a mismatch, reported and not "fixed".
    let wrong = after.replacen("mac: e4:3d:1a:13:27:f1", "mac: 70:b5:e8:f0:52:dc", 1);
    std::fs::write(&file, &wrong).expect("write");
    let out = sim.bmc(&format!("inventory -i {} --ca-file {} r750 --write-back", file.display(), sim.ca()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("70:b5:e8:f0:52:dc is NIC.Embedded.1-1-1 on the BMC, not NIC.Integrated.1-2-1")
    );
    assert_eq!(std::fs::read_to_string(&file).expect("read"), wrong);
}

/// `metal6 VERB -i INV --ca-file CA --state-dir STATE ARGS` (plan or apply) in the simulator's
/// namespace, password in the environment.
fn m6_cmd(sim: &Sim, state: &std::path::Path, verb: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &sim.ns.name]).arg(common::metal6()).args([verb, "-i", INV, "--ca-file", &sim.ca()]);
    cmd.arg("--state-dir").arg(state).args(args).env("METAL6_SIM_BMC_PASSWORD", PASSWORD).current_dir(root());
    cmd
}

/// `apply` without its doctor preflight: the simulator serves one R750 capture behind four
/// BMC addresses, so four inventory nodes with their own MACs are one machine whose NICs
/// carry only r750's — which doctor rightly refuses (`doctor_against_the_idrac_simulator`).
fn apply_cmd(sim: &Sim, state: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = m6_cmd(sim, state, "apply", args);
    cmd.arg("--skip-doctor");
    cmd
}

/// `metal6 doctor --bmc` on Dell semantics: the healthy node passes what it can; a boot NIC MAC
/// the BMC does not have, four nodes on one machine, a BIOS below the baseline's gate and a
/// stale job are each reported with their fix; apply refuses to start on them.
#[test]
fn doctor_against_the_idrac_simulator() {
    require_netns!();
    require_tool!("openssl");
    let Some(fx) = capture() else { return };
    // The gate asks for more than the capture's BIOS 1.8.2 and the baseline offers no newer
    // BIOS: no apply can make it hold.
    let text = std::fs::read_to_string(root().join(INV)).expect("inventory");
    let gated = text.replace("      - kind: bios\n        version: 1.15.2\n        image_url: http://[fd00:6d:1::1]/firmware/BIOS_R750_1.15.2.EXE\n", "      - kind: bios\n        version: 1.8.2\n        image_url: http://[fd00:6d:1::1]/firmware/BIOS_R750_1.8.2.EXE\n")
        .replace("        min_version: 1.8.2", "        min_version: 1.9.0");
    assert_ne!(gated, text);
    let dir = tempfile::tempdir().expect("tmp");
    let inv = dir.path().join("gated.yaml");
    std::fs::write(&inv, gated).expect("write");
    for (quirk, job_status, job_text) in [
        ("job=BIOSConfiguration", "warn", "stale BIOS configuration job"),
        ("job=RAIDConfiguration", "fail", "RAIDConfiguration"),
    ] {
        let sim = Sim::start(&fx, &["--quirk", quirk]);
        let doctor = |inv: &std::path::Path, nodes: &str| {
            let out = sim.ns.try_exec(&format!(
                "cd {} && METAL6_SIM_BMC_PASSWORD={PASSWORD} {} doctor --no-host --bmc -i {} --ca-file {} --nodes {nodes} -o json",
                root().display(),
                common::metal6().display(),
                inv.display(),
                sim.ca()
            ));
            assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
            let r: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
            (out.status.code(), r)
        };
        let find = |r: &Value, node: &str, id: &str| -> (String, String, String) {
            let c = r["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["node"] == node && c["id"] == id)
                .unwrap_or_else(|| panic!("no {id} for {node}: {r:#}"))
                .clone();
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("saw"), s("fix"))
        };
        let (code, r) = doctor(&inv, "r750,r750-custom");
        assert_eq!(code, Some(1), "{r:#}");
        // r750: reachable over verified TLS, its boot NIC is NIC.Integrated.1-1-1.
        assert_eq!(find(&r, "r750", "bmc.connect").0, "ok");
        let (st, saw, _) = find(&r, "r750", "bmc.boot-nic");
        assert!(st == "ok" && saw.contains("e4:3d:1a:13:27:f0 is NIC.Integrated.1-1-1"), "{st}: {saw}");
        // The BIOS below the gate, with the fix.
        let (st, saw, fix) = find(&r, "r750", "bmc.firmware");
        assert_eq!(st, "fail", "{saw}");
        assert!(saw.contains("bios >= 1.9.0 before ipv6-http-boot: fails now, fails after (installed 1.8.2)"), "{saw}");
        assert!(fix.contains("baseline r750-2026q3"), "{fix}");
        // The stale job: a BIOS job apply deletes itself (warn), someone's RAID job (fail).
        let (st, saw, fix) = find(&r, "r750", "bmc.jobs");
        assert!(st == job_status && saw.contains(job_text), "{st}: {saw}");
        assert!(!fix.is_empty(), "a fix for the job: {saw}");
        // r750-custom: the boot NIC MAC the inventory has is not on the BMC.
        let (st, saw, fix) = find(&r, "r750-custom", "bmc.boot-nic");
        assert!(st == "fail" && saw.contains("e4:3d:1a:13:27:f3 is not on the BMC"), "{st}: {saw}");
        assert!(
            saw.contains("NIC.Integrated.1-1-1=e4:3d:1a:13:27:f0") && fix.contains("metal6 bmc inventory"),
            "{fix}"
        );
        // ...and the capture's HTTP boot device is IPv4 on NIC.Slot.5-1, which r750-custom's
        // profile leaves alone (r750's sets both: a warning, apply stages them).
        let (st, saw, fix) = find(&r, "r750-custom", "bmc.bios");
        assert!(st == "fail" && saw.contains("HttpDev1Protocol is IPv4"), "{st}: {saw}");
        assert!(saw.contains("HTTP boot uses NIC.Slot.5-1 (b8:3f:d2:90:97:c4)"), "{saw}");
        assert!(fix.contains("HttpDev1Protocol: IPv6"), "{fix}");
        let (st, saw, _) = find(&r, "r750", "bmc.bios");
        assert!(st == "warn" && saw.contains("HttpDev1Protocol: IPv4 -> IPv6"), "{st}: {saw}");
        // Two nodes, one machine (one service tag).
        let (st, saw, _) = find(&r, "r750", "bmc.identity");
        assert_eq!(st, "ok", "{saw}");
        assert!(
            r["checks"].as_array().into_iter().flatten().any(|c| c["id"] == "bmc.identity"
                && c["status"] == "fail"
                && c["saw"].as_str().unwrap_or_default().contains("report service tag F54P1G3")),
            "{r:#}"
        );
        // Every session was closed.
        assert_eq!(sim.state()["sessions_open"], 0);
        if job_status == "warn" {
            // A BMC certificate from another CA: the TLS failure, with the fix for it.
            let out = sim.ns.try_exec(&format!(
                "cd {} && METAL6_SIM_BMC_PASSWORD={PASSWORD} {} doctor --no-host --bmc -i {INV} --ca-file {} --nodes r750 -o json",
                root().display(),
                common::metal6().display(),
                sim.dir.path().join("other-ca.pem").display()
            ));
            let r: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
            let (st, saw, fix) = find(&r, "r750", "bmc.connect");
            assert!(st == "fail" && saw.contains("UnknownIssuer"), "{st}: {saw}");
            assert!(fix.contains("--ca-file"), "{fix}");
        }
        if job_status == "fail" {
            // apply runs the same checks first and refuses to start on a failure.
            let state = tempfile::tempdir().expect("state");
            let out = m6_cmd(&sim, state.path(), "apply", &["--nodes", "r750-custom", "--until", "netboot"])
                .output()
                .expect("apply");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains("apply refused: doctor found") && err.contains("bmc.boot-nic"), "{err}");
            assert!(!err.contains(PASSWORD));
            assert_eq!(sim.state()["counters"]["resets"].as_array().map(Vec::len), Some(0), "nothing was reset");
        }
    }
}

fn record_of(state: &std::path::Path, node: &str) -> Value {
    let out = std::process::Command::new(common::metal6())
        .args(["status", "-o", "json", "--state-dir"])
        .arg(state)
        .arg(node)
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The BIOS step under `apply`, on Dell job semantics: two passes (a gatekeeper attribute),
/// each one job and one reset. apply is killed (-9) while pass 1's job runs; the next apply
/// polls the job id it persisted instead of staging or resetting again.
#[test]
fn apply_bios_step_resumes_the_same_job_after_kill_9() {
    require_netns!();
    require_tool!("openssl");
    require_tool!("curl");
    let Some(fx) = capture() else { return };
    // A BIOS job that runs for a while, as a real one does through POST.
    let sim = Sim::start(&fx, &["--job-seconds", "6"]);
    let state = tempfile::tempdir().expect("state");
    let args = ["--nodes", "r750-custom", "--until", "netboot", "--poll", "200ms"];
    let log = state.path().join("apply-1.log");
    let mut first = apply_cmd(&sim, state.path(), &args)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(state.path().join("apply-1.err")).expect("log"))
        .spawn()
        .expect("apply");
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        if let Ok(Some(st)) = first.try_wait() {
            panic!(
                "apply ended early ({st}): {}",
                std::fs::read_to_string(state.path().join("apply-1.err")).unwrap_or_default()
            );
        }
        let r = record_of(state.path(), "r750-custom");
        // Committed as running, and the BMC runs it (the reset went out): a crash in the job.
        if r["record"]["state"]["sub"] == "running"
            && let Some(job) = r["record"]["state"]["job"].as_str()
            && sim.state()["jobs"][job]["JobState"] == "Running"
        {
            break job.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "pass 1's job never ran; record {r}\n--- apply\n{}",
            std::fs::read_to_string(state.path().join("apply-1.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    first.kill().expect("kill -9");
    let _ = first.wait();
    let running = sim.state();
    assert_eq!(running["jobs"][&job]["JobState"], "Running", "killed while the job runs: {running}");

    let out = apply_cmd(&sim, state.path(), &args).output().expect("apply");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("resume at bios/running"), "{text}");
    assert!(text.contains("stopped before netboot"), "{text}");
    assert!(!text.contains(PASSWORD), "the BMC password was printed");
    let st = sim.state();
    assert_eq!(bios_of(&sim, "SysProfile"), "Custom");
    assert_eq!(bios_of(&sim, "ProcCStates"), "Enabled");
    assert_eq!(st["counters"]["resets"].as_array().map(Vec::len), Some(2), "one reset per pass, none repeated: {st}");
    assert_eq!(st["jobs"].as_object().map(serde_json::Map::len), Some(2), "one job per pass: {st}");
    let history = record_of(state.path(), "r750-custom")["timeline"].to_string();
    assert!(
        history.contains(&format!("BIOS pass 1 done ({job} completed)")),
        "the persisted job was polled: {history}"
    );
    // Only what the killed apply left is open (a kill -9 cannot log out; iDRAC expires it): one
    // session if the kill came during a call, none between calls. The second left nothing.
    assert_eq!(st["sessions_open"], running["sessions_open"], "the second apply closed every session it opened: {st}");
    assert!(running["sessions_open"].as_u64() <= Some(1), "{running}");

    // Once applied, plan says nothing is left for the BIOS, and a saved plan goes stale when
    // the node changes: apply names the node and the change.
    let plan = state.path().join("plan.json");
    let out = m6_cmd(&sim, state.path(), "plan", &["--nodes", "r750-custom", "--out", plan.to_str().expect("utf-8")])
        .output()
        .expect("plan");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.contains("resume at netboot"), "{text}");
    assert!(!text.contains("bios"), "the BIOS matches now: {text}");
    sim.bmc_ok(&format!("power off {} r750-custom", std_args(&sim)));
    let out = apply_cmd(&sim, state.path(), &[plan.to_str().expect("utf-8")]).output().expect("apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("saved plan is stale") && err.contains("r750-custom: power was On, now Off"), "{err}");
    // A node with a firmware baseline: plan lists the components behind it and the gates.
    let out =
        m6_cmd(&sim, state.path(), "plan", &["--nodes", "r750", "--server", "http://[::1]:9/"]).output().expect("plan");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "firmware",
        "baseline r750-2026q3: 2 component(s) behind",
        "idrac 6.00.30.00 -> 7.00.00.181",
        "bios 1.8.2 -> 1.15.2",
        "gate: idrac >= 6.00.30.00 before bios-apply: holds now, holds after",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

/// HTTPS boot on a Dell node (r750-https: `https: true`): the BIOS profile gains
/// `HttpDev1TlsMode = OneWay` (the registry's real attribute and value), and the CA the BIOS
/// must trust goes into the system's `Boot/Certificates` — by `metal6 bmc boot-ca --add`, and
/// by apply's BIOS step before it stages anything, once (a second run finds it there).
#[test]
fn https_boot_ca_and_tls_mode_on_a_dell_bios() {
    require_netns!();
    require_tool!("openssl");
    require_tool!("curl");
    let Some(fx) = capture() else { return };
    let sim = Sim::start(&fx, &[]);
    let a = std_args(&sim);
    // The capture's store is empty: the CA is missing, and saying so is not a failure.
    let out = sim.bmc_ok(&format!("boot-ca {a} r750-https"));
    assert!(out.contains("0 certificate(s)") && out.contains("CA missing (--add)"), "{out}");
    let plan = sim.bmc_ok(&format!("bios plan {a} r750-https"));
    assert!(plan.contains("HttpDev1TlsMode") && plan.contains("OneWay"), "{plan}");

    // apply: the CA first, then the BIOS pass with the TLS mode, verified from /Bios.
    let state = tempfile::tempdir().expect("state");
    let args = ["--nodes", "r750-https", "--until", "netboot", "--poll", "200ms"];
    let out = apply_cmd(&sim, state.path(), &args).output().expect("apply");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert_eq!(bios_of(&sim, "HttpDev1TlsMode"), "OneWay");
    let st = sim.state();
    assert_eq!(st["counters"]["boot_certs_added"], 1, "{st}");
    let history = record_of(state.path(), "r750-https")["timeline"].to_string();
    assert!(history.contains("HTTPS boot CA") && history.contains("added to"), "{history}");
    let store = sim.ns.try_exec(&format!(
        "curl -sS --cacert {} -u root:{PASSWORD} https://[fd00:6d:b::5]:8443/redfish/v1/Systems/System.Embedded.1/Boot/Certificates/HttpBootCert.1",
        sim.ca()
    ));
    let cert: Value = serde_json::from_slice(&store.stdout).expect("certificate");
    let ca = std::fs::read_to_string(root().join("tests/redfish/https-boot-ca.pem")).expect("ca");
    assert_eq!(cert["CertificateString"].as_str().map(str::trim), Some(ca.trim()));

    // Idempotent: the CLI finds it, --add adds nothing, a second apply adds nothing.
    let out = sim.bmc_ok(&format!("boot-ca {a} --add r750-https"));
    assert!(out.contains("1 certificate(s)") && out.contains("CA present"), "{out}");
    let out = apply_cmd(&sim, tempfile::tempdir().expect("state").path(), &args).output().expect("apply");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sim.state()["counters"]["boot_certs_added"], 1, "added once");
}
