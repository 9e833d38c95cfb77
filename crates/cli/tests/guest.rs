//! netem delays, against the one real peer there is here: this machine's kernel has no
//! `sch_netem`, the lab image's Debian kernel has it as a module. The test boots that kernel
//! and image under QEMU (direct kernel boot from the node UKI's sections, the image disk as a
//! snapshot) with a data disk holding `metal6` and a script that `systemd.run` starts: it runs
//! `metal6 emulate run` on a 4 × 4 shell, then reports the ISL's qdisc and a ping across it on
//! the serial console, and the guest powers off. ~35 s of boot under TCG.

#![allow(clippy::print_stderr)] // skips say why

mod common;

use std::process::Command;

use common::{metal6, root};
use serde_json::Value;

const SHELL: &str = "--shell 4x4 --altitude-km 3000 --inclination 53";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SCRIPT: &str = r#"#!/bin/sh
exec >/dev/ttyS0 2>&1
echo "M6T-START $(uname -r)"
cd /tmp
/mnt/metal6 -o json emulate run SHELL --duration 20 --step 10 >/tmp/run.json 2>/tmp/run.err &
for i in $(seq 1 180); do grep -q "delays of" /tmp/run.err 2>/dev/null && break; sleep 1; done
sed 's/^/M6T-LOG /' /tmp/run.err
ns0=$(ls /run/netns | grep -- '-0-0$' | head -1)
ns1=$(ls /run/netns | grep -- '-0-1$' | head -1)
echo "M6T-QDISC $(tc -n "$ns0" qdisc show dev isl0 | head -1)"
ll=$(ip -n "$ns1" -6 addr show dev isl1 scope link | awk '/inet6/ {print $2}' | cut -d/ -f1)
echo "M6T-PING $(ip netns exec "$ns0" ping -6 -c 4 -i 0.5 "$ll%isl0" | tail -1)"
wait
printf 'M6T-REPORT %s\n' "$(tr -d '\n' < /tmp/run.json)"
echo M6T-END
"#;

#[test]
fn netem_delays_follow_the_links_in_a_guest_kernel() {
    for tool in ["qemu-system-x86_64", "objcopy", "mkfs.ext4"] {
        require_tool!(tool);
    }
    if !root().join("target/installer/metal6-installer").exists() {
        assert!(std::env::var_os("CI").is_none(), "build the installer first (make test does)");
        eprintln!(
            "SKIP: target/installer/metal6-installer missing (cargo build --profile installer -p metal6-installer)"
        );
        return;
    }
    common::build_lab_image();
    let lab = common::lab_artifacts().join("images/lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The node UKI's kernel, initramfs and command line (its root= names the image's root).
    let (linux, initrd, cmdline) = (d.join("linux"), d.join("initrd"), d.join("cmdline"));
    run(Command::new("objcopy")
        .arg(format!("--dump-section=.linux={}", linux.display()))
        .arg(format!("--dump-section=.initrd={}", initrd.display()))
        .arg(format!("--dump-section=.cmdline={}", cmdline.display()))
        .arg(lab.join("node.efi"))
        .arg(d.join("scratch.efi")));
    let cmd = std::fs::read_to_string(&cmdline).expect("cmdline");
    let root_arg = cmd.split_whitespace().find(|w| w.starts_with("root=")).expect("root= in the UKI").to_owned();
    // The data disk: metal6 (without debug info) and the script.
    let data = d.join("data");
    std::fs::create_dir(&data).expect("mkdir");
    run(Command::new("objcopy").arg("--strip-debug").arg(metal6()).arg(data.join("metal6")));
    std::fs::write(data.join("run.sh"), SCRIPT.replace("SHELL", SHELL)).expect("script");
    run(Command::new("chmod").args(["+x"]).arg(data.join("run.sh")));
    let img = d.join("data.img");
    run(Command::new("mkfs.ext4").args(["-q", "-L", "M6T", "-d"]).arg(&data).arg(&img).arg("256M"));
    let serial = d.join("serial.log");
    let append = format!(
        "{root_arg} ro console=ttyS0,115200 quiet systemd.run=\"/bin/sh -c 'mount -o ro /dev/vdb /mnt && /mnt/run.sh'\" \
         systemd.run_success_action=poweroff systemd.run_failure_action=poweroff"
    );
    let started = std::time::Instant::now();
    let status = Command::new("timeout")
        .arg("600")
        .args(["qemu-system-x86_64", "-machine", "q35", "-m", "2048", "-smp", "2", "-nographic", "-no-reboot"])
        .args(["-monitor", "none", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(&linux)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &append, "-drive"])
        .arg(format!("file={},if=virtio,format=raw,snapshot=on", lab.join("disk.raw").display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw,readonly=on", img.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("qemu");
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let marks: Vec<&str> = log.lines().filter(|l| l.contains("M6T-")).collect();
    eprintln!("guest ran {:.0} s:\n{}", started.elapsed().as_secs_f64(), marks.join("\n"));
    assert!(status.success() && log.contains("M6T-END"), "the guest did not finish (exit {status}): {}", tail(&log));
    let line = |tag: &str| marks.iter().find_map(|l| l.split_once(tag).map(|(_, r)| r.trim().to_owned()));
    // The link 0 -> 1 (isl0 -> isl1) as the model has it, on the host.
    let plan: Value = serde_json::from_str(&run(Command::new(metal6())
        .args(["-o", "json", "emulate", "plan"])
        .args(SHELL.split_whitespace())))
    .expect("plan");
    let delay_ms = plan["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["a"] == "sat-0-0/isl0"))
        .and_then(|l| l["delay_ms"].as_f64())
        .expect("the link 0 -> 1 is up");
    assert!(log.contains("netem available (delays applied)"), "{}", tail(&log));
    let qdisc = line("M6T-QDISC").unwrap_or_default();
    assert!(qdisc.contains("netem") && qdisc.contains(&format!("delay {:.1}ms", delay_ms)), "{qdisc} vs {delay_ms} ms");
    // min/avg/max: the minimum crosses the link twice, delayed each way; TCG adds some.
    let ping = line("M6T-PING").unwrap_or_default();
    let min: f64 = ping
        .split(" = ")
        .nth(1)
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no RTT in {ping:?}"));
    assert!(min >= 2.0 * delay_ms && min < 2.0 * delay_ms + 40.0, "RTT {min} ms for {delay_ms} ms each way");
    let report: Value = serde_json::from_str(&line("M6T-REPORT").unwrap_or_default()).expect("run report");
    assert_eq!(report["netem"], true);
    assert!(report["delay_update_s"].as_f64().is_some(), "{report}");
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
