//! The QEMU lab from the tests' side: `metal6 lab up` on one node and the checks every
//! netbooted node's timeline must pass, and the record of which cell of the IPv6 boot matrix
//! a test proved (docs/boot-matrix.md is rendered from those records).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Boots `node` of `inventory` (relative to the source root) with `metal6 lab up` and follows
/// it to `ready`; panics with the console's and the timeline's tail otherwise. Returns the
/// summary, the node's events and the run's work dir.
pub fn up(inventory: &str, node: &str) -> (Value, Vec<Value>, PathBuf) {
    up_with(inventory, node, &super::lab_artifacts(), &[], "ready")
}

/// [`up`] with another artifact root, extra `lab up` arguments, and the result to expect
/// (`ready`, or e.g. `failed: tls-rejected`).
pub fn up_with(
    inventory: &str,
    node: &str,
    artifacts: &Path,
    extra: &[&str],
    want: &str,
) -> (Value, Vec<Value>, PathBuf) {
    let suffix: String = if want == "ready" {
        String::new()
    } else {
        format!("-{}", want.replace(|c: char| !c.is_ascii_alphanumeric(), "-"))
    };
    let work = super::root().join("target/lab-run").join(format!("{node}{suffix}"));
    // 900 s covers a cold, contended machine; METAL6_E2E_TIMEOUT shortens it when a failure is expected.
    let timeout = std::env::var("METAL6_E2E_TIMEOUT").unwrap_or_else(|_| "900".into());
    let out = Command::new(super::metal6())
        .args(["lab", "up", "-i", inventory, "--node", node, "--timeout", &timeout, "--artifacts"])
        .arg(artifacts)
        .arg("--workdir")
        .arg(&work)
        .args(extra)
        .current_dir(super::root())
        .output()
        .expect("metal6 lab up");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(work.join("summary.json")).unwrap_or_default())
        .unwrap_or_default();
    let events: Vec<Value> = std::fs::read_to_string(work.join("state/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &Value| e["node"] == node)
        .collect();
    if (want == "ready" && !out.status.success()) || summary["result"] != want {
        let serial = std::fs::read_to_string(work.join("serial.log")).unwrap_or_default();
        let tail: Vec<&str> = serial.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "{node}: wanted {want}, got {}\n--- lab up\n{}\n--- serial (tail)\n{}\n--- events\n{}",
            summary["result"],
            String::from_utf8_lossy(&out.stderr),
            tail.join("\n"),
            events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
        );
    }
    (summary, events, work)
}

/// Checks what every lab node's timeline must show; returns the ready event.
pub fn check_timeline(node: &str, address: &str, firmware_stage: &str, events: &[Value]) -> Value {
    // The inventory address at every stage: firmware, installer (DHCPv6), installed OS (ready).
    for stage in [firmware_stage, "installer"] {
        let leased: Vec<&Value> = events.iter().filter(|e| e["kind"] == "leased" && e["stage"] == stage).collect();
        assert!(!leased.is_empty(), "{node}: no {stage} lease in {events:?}");
        assert!(leased.iter().all(|e| e["addr"] == address), "{node}: {stage} got another address: {leased:?}");
    }
    let installer = events.iter().find(|e| e["phase"] == "installer").expect("installer phase");
    assert_eq!(installer["address"], address);
    // The timeline is complete and in order.
    let order = ["installer", "writing-image", "image-written", "configured", "installed", "ready"];
    let mut at = 0;
    for p in order {
        let i = events.iter().position(|e| e["phase"] == p && e["kind"] != "progress");
        let i = i.unwrap_or_else(|| panic!("{node}: no {p} phase in the timeline"));
        assert!(i >= at, "{node}: {p} out of order");
        at = i;
    }
    let ready = events.iter().find(|e| e["phase"] == "ready").expect("ready").clone();
    let global: Vec<&Value> =
        ready["addresses"].as_array().expect("addresses").iter().filter(|a| a["scope"] == "global").collect();
    assert!(
        global.iter().any(|a| a["address"] == address && a["prefix_len"] == 64),
        "{node}: installed OS has {global:?}"
    );
    assert_eq!(global.len(), 1, "{node}: only the inventory address, no SLAAC or DHCP extras: {global:?}");
    ready
}

/// Records that the calling test proved one cell of the IPv6 boot matrix: `client` booted or
/// configured itself over `path` (`direct` or `relayed`). Written to
/// `target/boot-matrix/CLIENT--PATH.json`; `scripts/boot-matrix.py` renders docs/boot-matrix.md
/// from these records, and `make unit` fails when the committed table claims a cell no test
/// proved in that run (or misses one that was).
pub fn proved_cell(client: &str, path: &str, test: &str, evidence: &str) {
    let dir = super::root().join("target/boot-matrix");
    std::fs::create_dir_all(&dir).expect("target/boot-matrix");
    let slug = |s: &str| s.to_lowercase().replace(' ', "-");
    let record = serde_json::json!({"client": client, "path": path, "test": test, "evidence": evidence});
    std::fs::write(dir.join(format!("{}--{}.json", slug(client), slug(path))), record.to_string() + "\n")
        .expect("boot-matrix record");
}

/// The lab's HTTPS material in `target/lab-tls` (kept across runs: the installer built with
/// its CA is cached by content): `ca.pem`, the boot server's `cert.pem`/`key.pem` for
/// fd00:6d:1::1, and `other-ca.pem` (a CA nobody used). RSA, because Debian 12's OVMF has no
/// elliptic curves. Made again when missing or within 3 days of expiry.
pub fn lab_tls() -> PathBuf {
    let dir = super::root().join("target/lab-tls");
    let fresh = dir.join("other-ca.pem").exists()
        && super::sh(&format!("openssl x509 -checkend 259200 -noout -in {}/ca.pem", dir.display())).status.success();
    if !fresh {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("target/lab-tls");
        let days = "30";
        let sans = "IP:fd00:6d:1::1";
        std::fs::write(
            dir.join("leaf.cnf"),
            format!("[leaf]\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName={sans}\n"),
        )
        .expect("cnf");
        let rsa = "-newkey rsa:2048 -nodes";
        let o = super::sh(&format!(
            "cd {} && openssl req -x509 {rsa} -keyout ca.key -out ca.pem -days {days} -subj /CN=metal6-lab-ca 2>&1 \
             && openssl req {rsa} -keyout key.pem -out leaf.csr -subj /CN=metal6-lab-boot 2>&1 \
             && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days {days} \
                -extfile leaf.cnf -extensions leaf 2>&1 \
             && openssl req -x509 {rsa} -keyout other.key -out other-ca.pem -days {days} -subj /CN=someone-else 2>&1 \
             && chmod 600 key.pem && rm -f ca.key other.key leaf.csr",
            dir.display()
        ));
        assert!(o.status.success(), "lab TLS material: {}", String::from_utf8_lossy(&o.stdout));
    }
    dir
}

/// The lab image with an installer that trusts `ca` (cached by content, like
/// [`super::build_lab_image`]), into `target/lab-artifacts-https`.
pub fn build_lab_image_with_ca(ca: &Path) -> (PathBuf, Value) {
    let out_dir = super::root().join("target/lab-artifacts-https");
    let out = Command::new(super::metal6())
        .args(["image", "build", "images/lab.yaml", "-o", "json", "--out"])
        .arg(&out_dir)
        .arg("--installer")
        .arg(super::root().join("target/installer/metal6-installer"))
        .arg("--installer-ca")
        .arg(ca)
        .current_dir(super::root())
        .output()
        .expect("metal6 image build");
    assert!(out.status.success(), "metal6 image build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    (out_dir, serde_json::from_slice(&out.stdout).expect("build report"))
}
