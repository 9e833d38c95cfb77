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
}

/// Selection errors come before any BMC is contacted.
#[test]
fn bmc_selection_errors() {
    snapshot("bmc-unknown-node", &["bmc", "inventory", "-i", "inventory/lab.yaml", "lab-node-9"]);
    snapshot("bmc-node-without-bmc", &["bmc", "power", "status", "-i", "inventory/lab.yaml", "lab-node-1"]);
    snapshot("bmc-all-without-bmcs", &["bmc", "inventory", "-i", "inventory/lab.yaml", "--all"]);
}

#[test]
fn check_reports_every_error_and_exits_1() {
    snapshot("check-invalid", &["inventory", "check", "tests/inventory/invalid/41-many-errors-at-once.yaml"]);
    snapshot(
        "check-invalid-json",
        &["inventory", "check", "-o", "json", "tests/inventory/invalid/41-many-errors-at-once.yaml"],
    );
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
