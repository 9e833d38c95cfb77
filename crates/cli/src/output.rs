//! Printing data: aligned tables for people, JSON and YAML for tools.

use std::io::{self, Write};

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Writes `value` as JSON or YAML; `Table` is handled by the caller.
pub fn write_data<T: Serialize>(out: &mut impl Write, format: Format, value: &T) -> Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, value).context("writing JSON")?;
            writeln!(out)?;
        }
        Format::Yaml => {
            let text = serde_saphyr::to_string(value).context("writing YAML")?;
            out.write_all(text.as_bytes())?;
        }
        Format::Table => anyhow::bail!("table output is not defined for this data"),
    }
    Ok(())
}

/// A plain aligned table: a header row and data rows, columns separated by two spaces.
pub fn write_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
