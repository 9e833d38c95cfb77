//! Snapshot tests of the real `metal6` binary: help texts, error output and exit codes.
//!
//! Each case runs the binary from the workspace root and compares `exit code + stdout + stderr`
//! with `tests/snapshots/<name>.txt`. `METAL6_BLESS=1 cargo test -p metal6-cli` rewrites them;
//! review the diff before committing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_metal6"))
        .args(args)
        .current_dir(root())
        .env_remove("COLUMNS")
        .env("NO_COLOR", "1")
        .output()
        .expect("metal6 runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn snapshot(name: &str, args: &[&str]) {
    let (code, stdout, stderr) = run(args);
    let got = format!("$ metal6 {}\nexit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}", args.join(" "));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.txt"));
    if std::env::var_os("METAL6_BLESS").is_some() {
        std::fs::write(&path, &got).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(got == want, "snapshot {name} differs (METAL6_BLESS=1 to update)\n--- want\n{want}\n--- got\n{got}");
}

#[test]
fn help_texts() {
    snapshot("help", &["--help"]);
    snapshot("inventory-help", &["inventory", "--help"]);
    snapshot("inventory-check-help", &["inventory", "check", "--help"]);
    snapshot("inventory-show-help", &["inventory", "show", "--help"]);
    snapshot("bmc-help", &["bmc", "--help"]);
    snapshot("bmc-bios-apply-help", &["bmc", "bios", "apply", "--help"]);
    snapshot("doctor-help", &["doctor", "--help"]);
}

/// Selection errors come before any BMC is contacted.
#[test]
fn bmc_selection_errors() {
    snapshot("bmc-unknown-node", &["bmc", "inventory", "-i", "inventory/lab.yaml", "lab-node-9"]);
    snapshot("bmc-node-without-bmc", &["bmc", "power", "status", "-i", "tests/netboot/pool.yaml", "pool-node-1"]);
    snapshot("bmc-all-without-bmcs", &["bmc", "inventory", "-i", "tests/netboot/pool.yaml", "--all"]);
}

#[test]
fn check_reports_every_error_and_exits_1() {
    snapshot("check-invalid", &["inventory", "check", "tests/inventory/invalid/41-many-errors-at-once.yaml"]);
    snapshot(
        "check-invalid-json",
        &["inventory", "check", "-o", "json", "tests/inventory/invalid/41-many-errors-at-once.yaml"],
    );
}

/// `--max-errors N` prints the first N diagnostics in file order and counts the others; the
/// JSON form has the shown ones and the counts.
#[test]
fn check_max_errors_prints_the_first_and_a_count() {
    let file = "tests/inventory/invalid/41-many-errors-at-once.yaml";
    snapshot("check-max-errors", &["inventory", "check", "--max-errors", "2", file]);
    snapshot("check-max-errors-json", &["inventory", "check", "--max-errors", "1", "-o", "json", file]);
}

/// Tens of thousands of broken nodes print 50 diagnostics and a count, not hundreds of
/// thousands of lines.
#[test]
fn check_cuts_a_flood_of_errors() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("flood.yaml");
    let mut src = String::from(
        "version: 1\nsite:\n  name: flood\n  domain: flood.metal6.test\n  provisioning:\n    interface: prov0\n    \
         prefix: fd00:c0::/64\n    router: fd00:c0::1\n  boot_server:\n    address: fd00:c0::2\nprofiles:\n  worker:\n    \
         role: worker\n    boot: uefi-http\n    image: lab\nnodes:\n",
    );
    for i in 0..20_000 {
        src.push_str(&format!(
            "  - name: n{i}\n    profile: worker\n    nics:\n      - name: eth0\n        mac: zz:{i}\n    \
             disk:\n      path: /dev/vda\n"
        ));
    }
    std::fs::write(&path, &src).expect("write the inventory");
    let name = path.to_str().expect("UTF-8 temporary path");

    let (code, stdout, stderr) = run(&["inventory", "check", name]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(stderr.matches(": error[invalid-mac]: ").count(), 50);
    let tail =
        format!("... and 19,950 more errors (use --max-errors 0 to see all)\n{name}: 20,000 errors, 0 warnings\n");
    assert!(stderr.ends_with(&tail), "{}", &stderr[stderr.len().saturating_sub(500)..]);

    let (code, stdout, _) = run(&["inventory", "check", "--max-errors", "5", "-o", "json", name]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let file = &report["files"][0];
    let counts = (file["errors"].as_u64(), file["warnings"].as_u64(), file["omitted"].as_u64());
    assert_eq!(counts, (Some(20_000), Some(0), Some(19_995)));
    assert_eq!(file["diagnostics"].as_array().map(Vec::len), Some(5));
    assert_eq!(file["diagnostics"][0]["path"], "nodes[0].nics[0].mac");
}

#[test]
fn check_valid_files_exits_0() {
    snapshot("check-valid", &["inventory", "check", "inventory/lab.yaml", "inventory/example-dell.yaml"]);
}

#[test]
fn unreadable_file_and_usage_errors_exit_2() {
    snapshot("check-missing-file", &["inventory", "check", "does/not/exist.yaml"]);
    snapshot("unknown-node", &["inventory", "show", "inventory/lab.yaml", "--node", "lab-node-9"]);
    snapshot("bad-output-format", &["inventory", "show", "inventory/lab.yaml", "-o", "xml"]);
}

#[test]
fn show_plans() {
    snapshot("show-lab", &["inventory", "show", "inventory/lab.yaml"]);
    snapshot("show-lab-node-json", &["inventory", "show", "inventory/lab.yaml", "--node", "lab-node-1", "-o", "json"]);
    snapshot(
        "show-dell-node-yaml",
        &["inventory", "show", "inventory/example-dell.yaml", "--node", "w-12", "-o", "yaml"],
    );
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let (code, stdout, _) = run(&["inventory", "schema"]);
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(root().join("inventory/schema.json")).expect("committed schema");
    assert_eq!(stdout, committed);
}

#[test]
fn completions_cover_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, _) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        assert!(stdout.contains("inventory") && stdout.contains("check"), "{shell} completion lacks subcommands");
    }
}
