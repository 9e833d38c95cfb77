//! The inventory error corpus: every file under `tests/inventory/invalid/` must produce exactly
//! the diagnostics in its `.expected` file (positions, codes, messages, hints), and every
//! inventory shipped under `inventory/` must validate without errors or warnings.
//!
//! `METAL6_BLESS=1 cargo test -p metal6-inventory --test corpus` rewrites the expected files;
//! review the diff before committing it.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("corpus directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn invalid_inventories_report_exact_diagnostics() {
    let root = workspace_root();
    let files = yaml_files(&root.join("tests/inventory/invalid"));
    assert!(files.len() >= 25, "the corpus must keep at least 25 invalid inventories, has {}", files.len());
    let bless = std::env::var_os("METAL6_BLESS").is_some();
    let mut failures = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("under root").display().to_string();
        let src = fs::read_to_string(&file).expect("readable");
        let (inv, diags) = metal6_inventory::check_str(&src, &rel);
        assert!(inv.is_none() && diags.has_errors(), "{rel}: expected errors, the inventory validated");
        // The file name says which diagnostic the case is about; it must be among the reported.
        let got = diags.render();
        let expected_path = file.with_extension("expected");
        if bless {
            fs::write(&expected_path, &got).expect("write expected");
            continue;
        }
        let want =
            fs::read_to_string(&expected_path).unwrap_or_else(|_| panic!("{rel}: missing {}", expected_path.display()));
        if got != want {
            failures.push(format!("== {rel}\n-- expected\n{want}-- got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{} corpus files differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn shipped_inventories_are_clean() {
    let root = workspace_root();
    let files = yaml_files(&root.join("inventory"));
    assert!(files.iter().any(|f| f.ends_with("lab.yaml")) && files.iter().any(|f| f.ends_with("example-dell.yaml")));
    for file in files {
        let src = fs::read_to_string(&file).expect("readable");
        let (inv, diags) = metal6_inventory::check_str(&src, &file.display().to_string());
        assert!(inv.is_some() && diags.is_empty(), "{}", diags.render());
    }
}

#[test]
fn committed_schema_is_current() {
    let root = workspace_root();
    let committed = fs::read_to_string(root.join("inventory/schema.json")).unwrap_or_default();
    let current = metal6_inventory::schema::json_schema();
    if std::env::var_os("METAL6_BLESS").is_some() {
        fs::write(root.join("inventory/schema.json"), &current).expect("write schema");
        return;
    }
    assert!(committed == current, "inventory/schema.json is stale: run `make schema` (or METAL6_BLESS=1 cargo test)");
}

/// Bad input never panics: every single-line deletion, and every value replaced by a few
/// hostile scalars, of the shipped inventories must come back as diagnostics or a model.
#[test]
fn line_mutations_never_panic() {
    let root = workspace_root();
    let src = fs::read_to_string(root.join("inventory/lab.yaml")).expect("readable");
    let lines: Vec<&str> = src.lines().collect();
    let hostile = ["~", "[]", "{}", "\"\"", "-1", "99999999999999999999", "fe80::1", "::", "\"x: y\"", "!!binary aGk="];
    let mut runs = 0;
    for i in 0..lines.len() {
        let mut without = lines.clone();
        without.remove(i);
        let _ = metal6_inventory::check_str(&without.join("\n"), "mutant.yaml");
        runs += 1;
        if let Some((key, _)) = lines[i].split_once(": ") {
            for h in hostile {
                let mut edited = lines.clone();
                let replaced = format!("{key}: {h}");
                edited[i] = &replaced;
                let _ = metal6_inventory::check_str(&edited.join("\n"), "mutant.yaml");
                runs += 1;
            }
        }
    }
    assert!(runs > 300, "only {runs} mutants");
}

/// An inline password is reported without ever being echoed: not in the message, not in the
/// source snippet, not in the JSON form.
#[test]
fn inline_password_is_never_echoed() {
    let root = workspace_root();
    let src = fs::read_to_string(root.join("tests/inventory/invalid/27-plaintext-password.yaml")).expect("readable");
    assert!(src.contains("password: calvin"), "fixture changed");
    let (_, diags) = metal6_inventory::check_str(&src, "x.yaml");
    assert!(diags.diagnostics.iter().any(|d| d.code == "plaintext-secret"));
    assert!(!diags.render().contains("calvin"));
    assert!(!serde_json::to_string(&diags).expect("json").contains("calvin"));
}
