//! The emulation soak and `metal6 emulate check`, as a user runs them: a short soak of a
//! polar shell (its cross-plane links switch every few model minutes) with Debian's FRR on a
//! block of satellites passes, and `emulate check` looking at it from outside agrees; a link
//! taken down behind the emulation's back is named by `emulate check` and fails the soak.
//! `make soak-emulation` runs the same command for an hour at 2,000 satellites.

#![allow(clippy::print_stderr)] // skips say why

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// 8 planes × 8 at 2,000 km, 88°: every cross-plane link goes dormant twice an orbit (the
/// 75° cutoff), an orbit is 127 model minutes.
const SHELL: [&str; 8] = ["--shell", "8x8", "--altitude-km", "2000", "--inclination", "88", "--phasing", "1"];

fn metal6(args: &[&str]) -> Output {
    Command::new(common::metal6()).args(args).output().expect("metal6 runs")
}

fn soak(workdir: &Path, extra: &[&str]) -> Child {
    Command::new(common::metal6())
        .args(["emulate", "soak"])
        .args(SHELL)
        .arg("--workdir")
        .arg(workdir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("metal6 emulate soak starts")
}

/// Waits for the run's state file: its links are built and it is switching.
fn wait_running(workdir: &Path, child: &mut Child) {
    let end = Instant::now() + Duration::from_secs(120);
    while !workdir.join("emulation.json").exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the soak exited early ({st})");
        }
        assert!(Instant::now() < end, "no run state after 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check(workdir: &Path) -> (Option<i32>, Value, String) {
    let w = workdir.to_str().expect("utf-8");
    let json = metal6(&["-o", "json", "emulate", "check", "--workdir", w]);
    let table = metal6(&["emulate", "check", "--workdir", w]);
    assert_eq!(json.status.code(), table.status.code(), "{}", String::from_utf8_lossy(&table.stderr));
    let v: Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stderr)));
    (json.status.code(), v, String::from_utf8_lossy(&table.stdout).into_owned())
}

fn frr_installed() -> bool {
    if Path::new("/usr/lib/frr/isisd").exists() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "frr is not installed: `make deps` installs it");
    eprintln!("SKIP: frr is not installed");
    false
}

/// The kernel's IPv6 neighbour table is one for the whole machine, and the tests before this
/// one leave entries in it: with the kernel's defaults (gc_thresh2 = 512) the table alone can
/// fail the soak. As `make soak-emulation` does, the soak runs on a host tuned as a dense-pods
/// worker: the profile's three thresholds raised (never lowered) while it runs, put back after.
struct DenseNeighbours(Vec<(String, String)>);

impl DenseNeighbours {
    fn raise() -> DenseNeighbours {
        let mut old = vec![];
        for (k, want) in [("gc_thresh1", 8192u64), ("gc_thresh2", 32768), ("gc_thresh3", 65536)] {
            let f = format!("/proc/sys/net/ipv6/neigh/default/{k}");
            let have = std::fs::read_to_string(&f).expect("a sysctl").trim().to_owned();
            if have.parse::<u64>().is_ok_and(|h| h < want) {
                std::fs::write(&f, want.to_string()).expect("raising it (root)");
                old.push((f, have));
            }
        }
        DenseNeighbours(old)
    }
}

impl Drop for DenseNeighbours {
    fn drop(&mut self) {
        // gc_thresh3 first back down, so that each value stays above the one before it.
        for (f, v) in self.0.iter().rev() {
            let _ = std::fs::write(f, v);
        }
    }
}

#[test]
fn a_short_soak_holds_and_check_agrees_from_outside() {
    require_netns!();
    if !frr_installed() {
        return;
    }
    let _tuned = DenseNeighbours::raise();
    let dir = tempfile::tempdir().expect("tempdir");
    let (work, report) = (dir.path().join("work"), dir.path().join("report.json"));
    let mut child = soak(
        &work,
        &[
            "--duration",
            "90",
            "--speed",
            "60",
            "--check-every",
            "15",
            "--routers",
            "4x4",
            "--report",
            report.to_str().expect("utf-8"),
        ],
    );
    wait_running(&work, &mut child);
    // From outside, while it switches: every end as the model says at the run's instant.
    let (code, v, table) = check(&work);
    assert_eq!(code, Some(0), "{table}");
    assert_eq!(v["links"]["ends"], 256, "8 × 8 satellites × 4 ISL ends: {v}");
    assert_eq!(v["links"]["mismatches"], 0, "{v}");
    assert_eq!(v["routing"]["routers"], 16, "{v}");
    assert!(v["metal6"]["fds"].as_u64().unwrap_or(0) > 64, "a socket a namespace at least: {v}");
    assert!(table.contains("256 ISL ends") && table.contains("0 mismatches"), "{table}");
    let out = child.wait_with_output().expect("soak ends");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{summary}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(summary.starts_with("soak PASSED: 64 satellites (256 ISL ends), 16 routers"), "{summary}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    // The links really moved, every step was checked, and routing was checked against them.
    assert!(r["isls_switched"].as_u64().unwrap_or(0) >= 20, "polar switching: {}", r["isls_switched"]);
    assert!(r["link_checks"].as_u64().unwrap_or(0) >= 300, "a check a step: {}", r["link_checks"]);
    assert_eq!(r["link_mismatches"], 0);
    assert!(r["routing_checks"].as_u64().unwrap_or(0) >= 5, "{}", r["routing_checks"]);
    assert_eq!(r["routing_unsettled"], 0, "{summary}");
    assert!(r["adjacencies_expected_end"].as_u64().unwrap_or(0) > 0);
    assert_eq!(r["adjacencies_end"], r["adjacencies_expected_end"], "{summary}");
    assert!(r["trends"].as_array().expect("trends").iter().all(|t| t["ok"] == true), "{summary}");
    assert!(summary.contains("at 4,000 satellites:") && summary.contains("first to run out:"), "{summary}");
    assert!(!work.join("emulation.json").exists(), "the run state goes with the run");
}

#[test]
fn a_link_changed_behind_its_back_is_named_and_fails_the_soak() {
    require_netns!();
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    // No routers: the kernel's links alone, slow enough that the model barely moves.
    let mut child =
        soak(&work, &["--duration", "25", "--speed", "10", "--check-every", "5", "--routers", "0x0", "--warmup", "0"]);
    wait_running(&work, &mut child);
    let (code, v, table) = check(&work);
    assert_eq!(code, Some(0), "{table}");
    assert_eq!(v["links"]["mismatches"], 0, "{v}");
    assert!(v["routing"].is_null(), "no routers: {v}");
    // Satellite 5 (plane 0, slot 5): its isl0 to slot 6 stays up in the model all along.
    let state: Value =
        serde_json::from_slice(&std::fs::read(work.join("emulation.json")).expect("state")).expect("json");
    let ns = format!("{}5", state["namespace_prefix"].as_str().expect("prefix"));
    let down = Command::new("ip").args(["-n", &ns, "link", "set", "isl0", "down"]).output().expect("ip");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let (code, v, table) = check(&work);
    assert_eq!(code, Some(1), "{table}");
    // Its peer's end loses its carrier: both ends are off.
    assert!(v["links"]["mismatches"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(table.contains("sat-0-5/isl0: kernel administratively down, model up"), "{table}");
    let out = child.wait_with_output().expect("soak ends");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{summary}");
    assert!(summary.starts_with("soak FAILED"), "{summary}");
    assert!(summary.contains(": sat-0-5/isl0: kernel administratively down, model up"), "{summary}");
    assert!(summary.contains("link ends differed from the model"), "{summary}");
    // Nothing left of either run.
    let left = Command::new("ip").args(["netns", "list"]).output().expect("ip");
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&ns), "namespaces removed with the run");
}
