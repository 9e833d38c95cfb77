//! Diagnostics: every problem found in an inventory, with where and what to do about it.
//!
//! The first line of a rendered diagnostic is `file:line:column: severity[code]: message`, the
//! form editors and CI annotators understand; then the YAML path, the offending source line with
//! a caret, and a hint. Codes are stable: tools and the test corpus match on them.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::tree::{Path, Pos};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable, kebab-case identifier (`duplicate-mac`, `unknown-field`, ...).
    pub code: &'static str,
    pub file: String,
    pub line: u32,
    pub column: u32,
    #[serde(skip)]
    pub len: u32,
    /// YAML path such as `nodes[3].nics[0].mac`; empty for syntax errors.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The source line may hold a secret: render no snippet.
    #[serde(skip)]
    pub redact: bool,
}

/// All diagnostics of one file, kept in source order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostics {
    pub file: String,
    #[serde(skip)]
    source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>, source: &str) -> Self {
        Diagnostics { file: file.into(), source: source.to_owned(), diagnostics: Vec::new() }
    }

    pub fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        pos: Pos,
        path: &Path,
        message: String,
        hint: Option<String>,
    ) {
        self.diagnostics.push(Diagnostic {
            severity,
            code,
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            len: pos.len,
            path: if path.0.is_empty() { String::new() } else { path.to_string() },
            message,
            hint,
            redact: false,
        });
    }

    /// Marks the last diagnostic as one whose source line must not be shown (it may hold a
    /// secret written inline).
    pub fn redact_last(&mut self) {
        if let Some(d) = self.diagnostics.last_mut() {
            d.redact = true;
        }
    }

    /// Only the diagnostics `keep` accepts (same file and source).
    pub fn retain(&mut self, keep: impl FnMut(&Diagnostic) -> bool) {
        self.diagnostics.retain(keep);
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == severity).count()
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// Source order, then severity, then code: stable output for snapshots and humans.
    pub fn sort(&mut self) {
        self.diagnostics.sort_by(|a, b| {
            (a.line, a.column, a.severity, a.code, &a.message).cmp(&(b.line, b.column, b.severity, b.code, &b.message))
        });
        self.diagnostics.dedup();
    }

    /// Human rendering: each diagnostic with its source line, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let lines: Vec<&str> = self.source.lines().collect();
        for d in &self.diagnostics {
            render_one(&mut out, d, &lines);
        }
        let (e, w) = (self.count(Severity::Error), self.count(Severity::Warning));
        let _ = writeln!(out, "{}: {} error{}, {} warning{}", self.file, e, plural(e), w, plural(w));
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn render_one(out: &mut String, d: &Diagnostic, lines: &[&str]) {
    let _ = writeln!(out, "{}:{}:{}: {}[{}]: {}", d.file, d.line, d.column, d.severity, d.code, d.message);
    if !d.path.is_empty() {
        let _ = writeln!(out, "    at {}", d.path);
    }
    if let Some(text) = d.line.checked_sub(1).and_then(|i| lines.get(i as usize)).filter(|_| !d.redact) {
        let gutter = d.line.to_string();
        let pad = " ".repeat(gutter.len());
        let col = d.column.saturating_sub(1) as usize;
        // Columns count characters; keep tabs as tabs so the caret lines up in a terminal.
        let lead: String = text.chars().take(col).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        let width = (d.len as usize).clamp(1, text.chars().count().saturating_sub(col).max(1));
        let _ = writeln!(out, " {pad} |");
        let _ = writeln!(out, " {gutter} | {text}");
        let _ = writeln!(out, " {pad} | {lead}{}", "^".repeat(width));
    }
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "    hint: {h}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;

    #[test]
    fn renders_position_path_caret_and_hint() {
        let src = "nodes:\n  - name: a\n    mac: zz\n";
        let mut d = Diagnostics::new("inv.yaml", src);
        d.push(
            Severity::Error,
            "invalid-mac",
            Pos { line: 3, column: 10, len: 2 },
            &path!["nodes", 0usize, "mac"],
            "`zz` is not a MAC address".into(),
            Some("write six hex pairs".into()),
        );
        let want = "inv.yaml:3:10: error[invalid-mac]: `zz` is not a MAC address\n    at nodes[0].mac\n   |\n 3 |     mac: zz\n   |          ^^\n    hint: write six hex pairs\ninv.yaml: 1 error, 0 warnings\n";
        assert_eq!(d.render(), want);
    }
}
