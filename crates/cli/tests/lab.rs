//! `metal6 lab up` cleans up after itself: Ctrl-C (SIGINT) or SIGTERM while a guest runs ends
//! the server and QEMU and removes the lab's namespace; a dead run's namespace is removed by
//! the next run. The guest here boots nothing useful (the artifacts are placeholders): what is
//! checked is the lifecycle, in seconds, not the install (that is `e2e.rs`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{metal6, root, wait_for};

fn lab_namespaces(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("m6lab-{pid}-")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn interrupt_ends_the_guest_and_removes_the_namespace() {
    require_netns!();
    require_tool!("qemu-system-x86_64");
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists() {
        assert!(std::env::var_os("CI").is_none(), "ovmf is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let art = tmp.path().join("artifacts");
    std::fs::create_dir_all(art.join("boot")).expect("artifacts");
    std::fs::write(art.join("boot/installer.efi"), b"placeholder").expect("placeholder");
    for signal in ["INT", "TERM"] {
        let work = tmp.path().join(format!("run-{signal}"));
        let mut child = Command::new(metal6())
            .args(["lab", "up", "--node", "lab-node-1", "--timeout", "120", "--artifacts"])
            .arg(&art)
            .arg("--workdir")
            .arg(&work)
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lab up");
        let pid = child.id();
        // Running: its namespace exists and QEMU has started in it.
        wait_for("the lab namespace and QEMU", Duration::from_secs(30), || {
            let ns = lab_namespaces(pid);
            let pids = ns.first().map(|n| {
                let o = Command::new("ip").args(["netns", "pids", n]).output().expect("pids");
                String::from_utf8_lossy(&o.stdout).split_whitespace().count()
            });
            (pids.unwrap_or(0) >= 2).then_some(())
        });
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().expect("kill").success());
        let status = wait_for("lab up to exit", Duration::from_secs(30), || child.try_wait().expect("wait"));
        assert!(!status.success(), "an interrupted run is not a success");
        assert!(lab_namespaces(pid).is_empty(), "SIG{signal}: namespace left behind");
        let summary = std::fs::read_to_string(work.join("summary.json")).expect("summary");
        assert!(summary.contains("\"interrupted\""), "{summary}");
    }
}
