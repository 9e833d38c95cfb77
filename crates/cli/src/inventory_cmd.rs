//! `metal6 inventory ...`

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use metal6_inventory::plan::{self, NodePlan};
use metal6_inventory::{Diagnostics, Limits, LoadError};
use serde::Serialize;

use crate::output::{Format, write_data, write_table};

#[derive(Debug, Subcommand)]
pub enum InventoryCmd {
    /// Validate inventory files; report every problem with file:line:column and a hint.
    ///
    /// Exits 0 when the files are valid (warnings allowed), 1 when any has an error.
    Check {
        /// Inventory files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        #[command(flatten)]
        limit: MaxErrors,
    },
    /// Show the resolved plan of each node: addresses, boot URL, BMC URL, profile values.
    Show {
        /// Inventory file (YAML).
        file: PathBuf,
        /// Only this node, in detail.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        limit: MaxErrors,
    },
    /// Print the JSON Schema of the inventory format (for editor completion).
    Schema,
}

// How many diagnostics a file may print. An inventory with hundreds of thousands of broken
// nodes would otherwise print millions of lines: the first ones and a count are what an
// operator can act on, and the validator keeps no more than that in memory. (A plain comment:
// clap would make a doc comment here the about text of every command that flattens this.)
#[derive(Debug, clap::Args)]
pub struct MaxErrors {
    /// Show the first N errors and warnings of each file (0: all).
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_diagnostics)]
    max_errors: usize,
}

impl MaxErrors {
    fn limits(&self) -> Limits {
        Limits { max_diagnostics: self.max_errors, ..Limits::DEFAULT }
    }
}

/// Closes the "... and N more errors" line of a command that has `--max-errors`.
const SEE_ALL: &str = "use --max-errors 0 to see all";

/// Diagnostics as commands without `--max-errors` print them (they load with
/// `Limits::DEFAULT`): the first ones, and the command that shows them all.
pub(crate) fn render_elsewhere(d: &Diagnostics) -> String {
    d.render_with(&format!("`metal6 inventory check --max-errors 0 {}` shows all", d.file))
}

pub fn run(cmd: &InventoryCmd, format: Format) -> Result<ExitCode> {
    match cmd {
        InventoryCmd::Check { files, deny_warnings, limit } => check(files, *deny_warnings, limit.limits(), format),
        InventoryCmd::Show { file, node, limit } => show(file, node.as_deref(), limit.limits(), format),
        InventoryCmd::Schema => {
            io::stdout().write_all(metal6_inventory::schema::json_schema().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Serialize)]
struct CheckReport<'a> {
    valid: bool,
    files: Vec<&'a Diagnostics>,
}

fn check(files: &[PathBuf], deny_warnings: bool, limits: Limits, format: Format) -> Result<ExitCode> {
    let mut results = Vec::new();
    for f in files {
        let src = metal6_inventory::read(f, limits)?;
        let (_, diags) = metal6_inventory::check_str_with(&src, &f.display().to_string(), limits);
        results.push(diags);
    }
    let failed = |d: &Diagnostics| d.has_errors() || (deny_warnings && !d.is_empty());
    let valid = !results.iter().any(failed);
    match format {
        Format::Table => {
            // Diagnostics are for people and go to stderr; stdout stays empty so scripts can
            // tell "printed nothing" from "printed data".
            let mut err = io::stderr().lock();
            for d in &results {
                err.write_all(d.render_with(SEE_ALL).as_bytes())?;
            }
        }
        _ => write_data(&mut io::stdout().lock(), format, &CheckReport { valid, files: results.iter().collect() })?,
    }
    Ok(if valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn show(file: &std::path::Path, node: Option<&str>, limits: Limits, format: Format) -> Result<ExitCode> {
    let (inv, warnings) = match metal6_inventory::load_with(file, limits) {
        Ok(ok) => ok,
        Err(LoadError::Invalid(diags)) => {
            io::stderr().write_all(diags.render_with(SEE_ALL).as_bytes())?;
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if !warnings.is_empty() && format == Format::Table {
        io::stderr().write_all(warnings.render_with(SEE_ALL).as_bytes())?;
    }
    let mut plans = plan::plan(&inv);
    if let Some(name) = node {
        plans.retain(|p| p.name == name);
        if plans.is_empty() {
            let names: Vec<&str> = inv.nodes.iter().map(|n| n.name.as_str()).collect();
            let hint = metal6_inventory::schema::did_you_mean(name, &names)
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            anyhow::bail!("no node `{name}` in {}{hint}", file.display());
        }
    }
    let mut out = io::stdout().lock();
    match (format, node) {
        (Format::Table, None) => write_table(
            &mut out,
            &["NODE", "ROLE", "ADDRESS", "BOOT", "MAC", "BOOT URL", "BMC"],
            &plans.iter().map(summary_row).collect::<Vec<_>>(),
        )?,
        (Format::Table, Some(_)) => write_detail(&mut out, &plans[0])?,
        (_, None) => write_data(&mut out, format, &plans)?,
        (_, Some(_)) => write_data(&mut out, format, &plans[0])?,
    }
    Ok(ExitCode::SUCCESS)
}

fn summary_row(p: &NodePlan) -> Vec<String> {
    vec![
        p.name.clone(),
        ser(&p.role),
        p.address.clone(),
        ser(&p.boot.method),
        p.boot.mac.to_string(),
        p.boot.url.clone(),
        p.bmc.as_ref().map_or_else(|| "-".to_owned(), |b| b.url.clone()),
    ]
}

/// The serde name of an enum value (`control-plane`, `uefi-http`).
fn ser<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|j| j.as_str().map(str::to_owned)).unwrap_or_default()
}

/// One node in detail: the YAML form reads well as a key/value listing.
fn write_detail(out: &mut impl Write, p: &NodePlan) -> Result<()> {
    write_data(out, Format::Yaml, p)
}
