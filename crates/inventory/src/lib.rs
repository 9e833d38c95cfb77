//! The metal6 inventory: the YAML file operators edit, turned into a validated plan.
//!
//! This crate owns the inventory format (`raw`), its JSON Schema, validation with precise
//! diagnostics, the typed model every other metal6 crate consumes, and the per-node plan
//! (`plan`). It does no I/O beyond reading the inventory file, has no async runtime and never
//! resolves secrets: BMC passwords stay references (`env:`/`file:`) until the component that
//! needs one reads it.
//!
//! # Why serde-saphyr
//!
//! serde_yaml is deprecated. serde-saphyr is maintained, pure Rust, YAML 1.2 (so
//! `52:54:00:12:34:56` stays a string instead of becoming a sexagesimal number), rejects
//! duplicate keys, and gives every value a line and column (`Spanned`). We parse once into a
//! located tree (`tree`), check its shape against the generated JSON Schema to report *all*
//! structural errors at once (`schema`), then deserialize the typed structs and validate their
//! meaning (`validate`), looking positions up in the tree.

pub mod diag;
pub mod ident;
pub mod identity;
pub mod model;
pub mod plan;
pub mod raw;
pub mod schema;
pub mod tree;
mod validate;
pub mod writeback;

use std::path::Path as FsPath;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use model::Inventory;

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read inventory {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("inventory {} is invalid ({} errors)", .0.file, .0.count(Severity::Error))]
    Invalid(Diagnostics),
}

/// Reads and validates an inventory file. Warnings come back with the inventory.
pub fn load(path: &FsPath) -> Result<(Inventory, Diagnostics), LoadError> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: name.clone(), source })?;
    match check_str(&src, &name) {
        (Some(inv), diags) => Ok((inv, diags)),
        (None, diags) => Err(LoadError::Invalid(diags)),
    }
}

/// Validates inventory text. `file` is the name used in diagnostics. The inventory is returned
/// only when there is no error; the diagnostics hold every error and warning, in source order.
pub fn check_str(src: &str, file: &str) -> (Option<Inventory>, Diagnostics) {
    let mut diags = Diagnostics::new(file, src);
    let tree = match tree::parse(src) {
        Ok(t) => t,
        Err(e) => {
            push_yaml_error(&mut diags, src, &e);
            return (None, diags);
        }
    };
    if !schema::check(&tree, &mut diags) {
        diags.sort();
        return (None, diags);
    }
    let raw: raw::Inventory = match serde_saphyr::from_str_with_options(src, tree::yaml_options()) {
        Ok(r) => r,
        Err(e) => {
            // The structural check should have caught this; report it rather than hide it.
            push_yaml_error(&mut diags, src, &e);
            return (None, diags);
        }
    };
    let inv = validate::validate(&mut validate::Ctx { tree: &tree, diags: &mut diags }, &raw, file);
    diags.sort();
    (inv, diags)
}

fn push_yaml_error(diags: &mut Diagnostics, src: &str, e: &serde_saphyr::Error) {
    let loc = e.location();
    let pos = tree::Pos {
        line: loc.as_ref().map_or(1, |l| u32::try_from(l.line()).unwrap_or(1)),
        column: loc.as_ref().map_or(1, |l| u32::try_from(l.column()).unwrap_or(1)),
        len: 1,
    };
    let opts = serde_saphyr::render_options! { formatter: &serde_saphyr::UserMessageFormatter, snippets: serde_saphyr::SnippetMode::Off };
    let mut msg = e.render_with_options(opts);
    // The message ends with "at line L, column C", which the diagnostic already says.
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    let code = if msg.contains("duplicate mapping key") { "duplicate-key" } else { "yaml-syntax" };
    let line = src.lines().nth(pos.line.saturating_sub(1) as usize).unwrap_or("");
    let hint = if code == "duplicate-key" {
        "a repeated key would silently override the first; keep one"
    } else if line.trim_end().ends_with(':') && line.contains("::") {
        // `address: fd00:c0::` ends in ':', which YAML reads as the start of another mapping.
        "an IPv6 address ending in ':' must be quoted: \"fd00:c0::\""
    } else {
        "check quotes, brackets and indentation on this line and the lines before it"
    };
    let hint = Some(hint.to_owned());
    diags.push(Severity::Error, code, pos, &tree::Path::root(), msg, hint);
}
