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

use std::io::Read as _;
use std::path::Path as FsPath;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use model::Inventory;

/// What checking an inventory may cost. An inventory with hundreds of thousands of broken
/// nodes has millions of diagnostics: an operator wants the first ones and a count, in bounded
/// time and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Diagnostics kept in full per file, the first in source order; the others are only
    /// counted ([`Diagnostics::omitted`]). 0 keeps all.
    pub max_diagnostics: usize,
    /// The largest inventory file [`read`] and the loaders accept, in bytes.
    pub max_file_size: u64,
}

impl Limits {
    /// What commands use: the first 50 diagnostics (a screenful or two), files up to 64 MiB.
    /// A 10,000-node inventory of the benchmark's shape (four NICs, a BMC and labels per node;
    /// `benches/validate.rs`) is 4.3 MiB, and the YAML parser's node budget
    /// ([`tree::yaml_options`]) stops such a file near 80,000 nodes, 35 MiB.
    pub const DEFAULT: Limits = Limits { max_diagnostics: 50, max_file_size: 64 << 20 };
    /// Every diagnostic, for callers that filter them afterwards ([`Diagnostics::retain`]);
    /// what [`check_str`] and [`load`] keep.
    pub const ALL_DIAGNOSTICS: Limits = Limits { max_diagnostics: 0, ..Limits::DEFAULT };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read inventory {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("inventory {} is larger than {}, the limit for an inventory file", .path, size_text(*.limit))]
    TooLarge { path: String, limit: u64 },
    #[error("inventory {} is invalid ({} errors)", .0.file, .0.count(Severity::Error))]
    Invalid(Diagnostics),
}

/// `64 MiB`, or the exact number of bytes when that is not a whole number of MiB.
fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) { format!("{} MiB", bytes / MIB) } else { format!("{bytes} bytes") }
}

/// Reads an inventory file, refusing one larger than `limits.max_file_size` after reading at
/// most one byte more than that: a disk image or an endless pipe given by mistake costs no
/// more memory than the largest inventory.
pub fn read(path: &FsPath, limits: Limits) -> Result<String, LoadError> {
    let read_error = |source: std::io::Error| LoadError::Read { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(limits.max_file_size.saturating_add(1)).read_to_end(&mut bytes).map_err(read_error)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limits.max_file_size {
        return Err(LoadError::TooLarge { path: path.display().to_string(), limit: limits.max_file_size });
    }
    String::from_utf8(bytes).map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Reads and validates an inventory file, keeping every diagnostic. Warnings come back with
/// the inventory.
pub fn load(path: &FsPath) -> Result<(Inventory, Diagnostics), LoadError> {
    load_with(path, Limits::ALL_DIAGNOSTICS)
}

/// Reads and validates an inventory file within `limits`. Warnings come back with the
/// inventory.
pub fn load_with(path: &FsPath, limits: Limits) -> Result<(Inventory, Diagnostics), LoadError> {
    let src = read(path, limits)?;
    match check_str_with(&src, &path.display().to_string(), limits) {
        (Some(inv), diags) => Ok((inv, diags)),
        (None, diags) => Err(LoadError::Invalid(diags)),
    }
}

/// Validates inventory text. `file` is the name used in diagnostics. The inventory is returned
/// only when there is no error; the diagnostics hold every error and warning, in source order.
pub fn check_str(src: &str, file: &str) -> (Option<Inventory>, Diagnostics) {
    check_str_with(src, file, Limits::ALL_DIAGNOSTICS)
}

/// Like [`check_str`], keeping only the first `limits.max_diagnostics` diagnostics in source
/// order and counting the others. The inventory is returned only when there is no error,
/// shown or not.
pub fn check_str_with(src: &str, file: &str, limits: Limits) -> (Option<Inventory>, Diagnostics) {
    let mut diags = Diagnostics::with_limit(file, src, limits.max_diagnostics);
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
