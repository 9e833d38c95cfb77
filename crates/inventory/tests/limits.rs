//! Floods and oversized files: an inventory with tens of thousands of broken nodes keeps only
//! the first diagnostics in full and counts the others exactly; a file beyond the size limit
//! is refused before it is read into memory.

use std::fmt::Write as _;
use std::path::PathBuf;

use metal6_inventory::{Limits, LoadError, Severity};

/// A valid site and `n` nodes with one malformed MAC each (one `invalid-mac` error per node),
/// plus a profile no node uses: one warning, written before every node but found by the
/// validator after all of them.
fn broken_fleet(n: usize) -> String {
    let mut s = String::from(
        "version: 1\nsite:\n  name: flood\n  domain: flood.metal6.test\n  provisioning:\n    interface: prov0\n    \
         prefix: fd00:c0::/64\n    router: fd00:c0::1\n    dns: [fd00:c0::1]\n  boot_server:\n    address: fd00:c0::2\n\
         profiles:\n  spare:\n    role: worker\n    boot: pxe\n    image: lab\n  worker:\n    role: worker\n    \
         boot: uefi-http\n    image: lab\nnodes:\n",
    );
    for i in 0..n {
        let _ = write!(
            s,
            "  - name: n{i}\n    profile: worker\n    nics:\n      - name: eth0\n        mac: zz:{i}\n    \
             disk:\n      path: /dev/vda\n"
        );
    }
    s
}

#[test]
fn a_flood_keeps_the_first_diagnostics_and_counts_the_rest() {
    let n = 20_000;
    let src = broken_fleet(n);
    let limits = Limits { max_diagnostics: 50, ..Limits::DEFAULT };
    let (inv, diags) = metal6_inventory::check_str_with(&src, "flood.yaml", limits);
    assert!(inv.is_none() && diags.has_errors());
    assert_eq!(diags.diagnostics.len(), 50);
    assert_eq!((diags.count(Severity::Error), diags.count(Severity::Warning)), (n, 1));
    assert_eq!(diags.omitted(), n + 1 - 50);

    // The first 50 in file order: the unused profile, then the first 49 nodes.
    assert_eq!(diags.diagnostics[0].code, "unused-profile");
    let paths: Vec<&str> = diags.diagnostics[1..].iter().map(|d| d.path.as_str()).collect();
    let want: Vec<String> = (0..49).map(|i| format!("nodes[{i}].nics[0].mac")).collect();
    assert_eq!(paths, want);

    // Exactly what the unlimited check reports first.
    let (_, all) = metal6_inventory::check_str(&src, "flood.yaml");
    assert_eq!(all.diagnostics.len(), n + 1);
    assert_eq!(all.omitted(), 0);
    assert_eq!(all.diagnostics[..50], diags.diagnostics[..]);

    let text = diags.render_with("use --max-errors 0 to see all");
    assert_eq!(text.matches(": error[invalid-mac]: ").count(), 49);
    assert_eq!(text.matches(": warning[unused-profile]: ").count(), 1);
    assert!(
        text.ends_with(
            "... and 19,951 more errors (use --max-errors 0 to see all)\nflood.yaml: 20,000 errors, 1 warning\n"
        ),
        "{}",
        &text[text.len().saturating_sub(400)..]
    );
    // The shown part is the unlimited rendering's beginning, diagnostic for diagnostic.
    let shown = text.split("... and ").next().unwrap_or_default();
    assert!(all.render().starts_with(shown));

    let json = serde_json::to_value(&diags).expect("serializes");
    let counts = (json["errors"].as_u64(), json["warnings"].as_u64(), json["omitted"].as_u64());
    assert_eq!(counts, (Some(20_000), Some(1), Some(19_951)));
    assert_eq!(json["diagnostics"].as_array().map(Vec::len), Some(50));
}

#[test]
fn a_limit_of_zero_keeps_everything() {
    let src = broken_fleet(200);
    let limits = Limits { max_diagnostics: 0, ..Limits::DEFAULT };
    let (_, diags) = metal6_inventory::check_str_with(&src, "flood.yaml", limits);
    assert_eq!((diags.diagnostics.len(), diags.omitted()), (201, 0));
    assert!(!diags.render_with("use --max-errors 0 to see all").contains("... and"));
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("metal6-inventory-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write temporary file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn files_beyond_the_size_limit_are_refused() {
    let src = broken_fleet(3);
    let file = TempFile::new("size.yaml", src.as_bytes());
    let exact = Limits { max_file_size: src.len() as u64, ..Limits::DEFAULT };
    assert_eq!(metal6_inventory::read(&file.0, exact).expect("fits"), src);

    let smaller = Limits { max_file_size: src.len() as u64 - 1, ..Limits::DEFAULT };
    let err = metal6_inventory::read(&file.0, smaller).expect_err("one byte too many");
    assert!(matches!(err, LoadError::TooLarge { limit, .. } if limit == src.len() as u64 - 1), "{err:?}");
    assert!(
        err.to_string().ends_with(&format!("is larger than {} bytes, the limit for an inventory file", src.len() - 1))
    );
    assert!(matches!(metal6_inventory::load_with(&file.0, smaller), Err(LoadError::TooLarge { .. })));

    let default = metal6_inventory::read(&file.0, Limits::DEFAULT).expect("fits the default");
    assert_eq!(default, src);
    assert!(
        LoadError::TooLarge { path: "x.yaml".into(), limit: Limits::DEFAULT.max_file_size }
            .to_string()
            .contains("larger than 64 MiB")
    );
}

#[test]
fn load_with_bounds_the_diagnostics_of_an_invalid_file() {
    let file = TempFile::new("flood.yaml", broken_fleet(500).as_bytes());
    let limits = Limits { max_diagnostics: 10, ..Limits::DEFAULT };
    match metal6_inventory::load_with(&file.0, limits) {
        Err(LoadError::Invalid(d)) => {
            assert_eq!((d.diagnostics.len(), d.omitted(), d.count(Severity::Error)), (10, 491, 500));
        }
        other => panic!("expected an invalid inventory, got {:?}", other.map(|_| ())),
    }
}
