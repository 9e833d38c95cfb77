//! Diagnostics: every problem found in an inventory, with where and what to do about it.
//!
//! The first line of a rendered diagnostic is `file:line:column: severity[code]: message`, the
//! form editors and CI annotators understand; then the YAML path, the offending source line with
//! a caret, and a hint. Codes are stable: tools and the test corpus match on them.
//!
//! An inventory with hundreds of thousands of broken nodes has millions of diagnostics; nobody
//! reads past the first screenful, and keeping them all costs gigabytes. With a limit,
//! [`Diagnostics`] keeps the first N in source order in full and only counts the others.

use std::fmt::{self, Write as _};

use serde::{Serialize, Serializer};

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
///
/// With a limit ([`Diagnostics::with_limit`]) only the first `limit` diagnostics in source order
/// are kept; the others are counted by severity ([`Diagnostics::omitted`],
/// [`Diagnostics::count`]) and never built: no path text, no copy of the file name. Memory is
/// bounded by twice the limit, whatever the number of problems in the file.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    pub file: String,
    source: String,
    /// The kept diagnostics; after [`Diagnostics::sort`], the first `limit` in source order.
    pub diagnostics: Vec<Diagnostic>,
    /// How many to keep; 0 keeps all.
    limit: usize,
    /// Counted but not kept, by severity (index: `severity_index`).
    omitted: [usize; 2],
    /// Once more than `limit` were found: the sort key of the last kept diagnostic. Every
    /// omitted one sorts at or after it, so a new one that does not sort before it is only
    /// counted. Boxed to keep `Diagnostics`, and the `LoadError` that carries it, small.
    cutoff: Option<Box<Cutoff>>,
    /// Whether the last `push` was kept, for `redact_last`.
    last_kept: bool,
}

/// The order of diagnostics: source position, then severity, then code and message.
type SortKey<'a> = (u32, u32, Severity, &'static str, &'a str);

fn sort_key(d: &Diagnostic) -> SortKey<'_> {
    (d.line, d.column, d.severity, d.code, &d.message)
}

/// The sort key of the last kept diagnostic, owned.
#[derive(Debug, Clone)]
struct Cutoff {
    line: u32,
    column: u32,
    severity: Severity,
    code: &'static str,
    message: String,
}

fn severity_index(s: Severity) -> usize {
    match s {
        Severity::Error => 0,
        Severity::Warning => 1,
    }
}

impl Diagnostics {
    /// Diagnostics of `file` (the name printed) whose text is `source`; every one is kept.
    pub fn new(file: impl Into<String>, source: &str) -> Self {
        Diagnostics { file: file.into(), source: source.to_owned(), ..Diagnostics::default() }
    }

    /// Like [`Diagnostics::new`], but keeps only the first `limit` diagnostics in source order
    /// (0: all) and counts the others.
    pub fn with_limit(file: impl Into<String>, source: &str, limit: usize) -> Self {
        Diagnostics { limit, ..Diagnostics::new(file, source) }
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
        self.last_kept = false;
        if !self.sorts_before_cutoff((pos.line, pos.column, severity, code, message.as_str())) {
            self.omitted[severity_index(severity)] += 1;
            return;
        }
        // Collect up to twice the limit, then sort and keep the first `limit`: O(log limit)
        // per diagnostic amortized, however the validator orders its findings.
        if self.limit > 0 && self.diagnostics.len() >= self.limit.saturating_mul(2) {
            self.sort();
            if !self.sorts_before_cutoff((pos.line, pos.column, severity, code, message.as_str())) {
                self.omitted[severity_index(severity)] += 1;
                return;
            }
        }
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
        self.last_kept = true;
    }

    fn sorts_before_cutoff(&self, key: SortKey<'_>) -> bool {
        self.cutoff.as_deref().is_none_or(|c| key < (c.line, c.column, c.severity, c.code, c.message.as_str()))
    }

    /// Marks the last diagnostic as one whose source line must not be shown (it may hold a
    /// secret written inline). Nothing to do when the last one was only counted.
    pub fn redact_last(&mut self) {
        if !self.last_kept {
            return;
        }
        if let Some(d) = self.diagnostics.last_mut() {
            d.redact = true;
        }
    }

    /// Only the kept diagnostics `keep` accepts (same file and source). The omitted ones are
    /// only counts and stay counted: a caller that filters needs [`Diagnostics::new`].
    pub fn retain(&mut self, keep: impl FnMut(&Diagnostic) -> bool) {
        self.diagnostics.retain(keep);
    }

    pub fn has_errors(&self) -> bool {
        self.omitted[severity_index(Severity::Error)] > 0
            || self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// Every diagnostic of this severity found, shown or not.
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == severity).count() + self.omitted[severity_index(severity)]
    }

    /// How many diagnostics were found beyond the limit and are not in `diagnostics`.
    pub fn omitted(&self) -> usize {
        self.omitted.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty() && self.omitted() == 0
    }

    /// Source order, then severity, then code: stable output for snapshots and humans. With a
    /// limit, only the first `limit` stay; the others are counted as omitted.
    pub fn sort(&mut self) {
        self.diagnostics.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        self.diagnostics.dedup();
        if self.limit == 0 || self.diagnostics.len() <= self.limit {
            return;
        }
        for d in self.diagnostics.drain(self.limit..) {
            self.omitted[severity_index(d.severity)] += 1;
        }
        self.cutoff = self.diagnostics.last().map(|d| {
            Box::new(Cutoff {
                line: d.line,
                column: d.column,
                severity: d.severity,
                code: d.code,
                message: d.message.clone(),
            })
        });
    }

    /// Human rendering: each diagnostic with its source line, then a summary line.
    pub fn render(&self) -> String {
        self.render_with("")
    }

    /// Like [`Diagnostics::render`]; when diagnostics were omitted, a line before the summary
    /// says how many, followed by `see_all` in parentheses (how to see them: the caller knows
    /// its flags; empty for none).
    pub fn render_with(&self, see_all: &str) -> String {
        let mut out = String::new();
        let mut lines = Lines::new(&self.source);
        for d in &self.diagnostics {
            render_one(&mut out, d, lines.get(d.line));
        }
        let more: Vec<String> = [Severity::Error, Severity::Warning]
            .into_iter()
            .map(|s| (s, self.omitted[severity_index(s)]))
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{} more {s}{}", grouped(n), plural(n)))
            .collect();
        if !more.is_empty() {
            let _ = write!(out, "... and {}", more.join(" and "));
            if !see_all.is_empty() {
                let _ = write!(out, " ({see_all})");
            }
            out.push('\n');
        }
        let (e, w) = (self.count(Severity::Error), self.count(Severity::Warning));
        let _ = writeln!(out, "{}: {} error{}, {} warning{}", self.file, grouped(e), plural(e), grouped(w), plural(w));
        out
    }
}

/// The JSON (and YAML) form: `errors` and `warnings` count every diagnostic found, `omitted`
/// those beyond the limit that are not in `diagnostics`.
impl Serialize for Diagnostics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Report<'a> {
            file: &'a str,
            errors: usize,
            warnings: usize,
            omitted: usize,
            diagnostics: &'a [Diagnostic],
        }
        Report {
            file: &self.file,
            errors: self.count(Severity::Error),
            warnings: self.count(Severity::Warning),
            omitted: self.omitted(),
            diagnostics: &self.diagnostics,
        }
        .serialize(serializer)
    }
}

/// Source lines by number, for diagnostics in source order: one pass over the text instead of
/// a vector of every line of a file that may have millions.
struct Lines<'a> {
    source: &'a str,
    iter: std::str::Lines<'a>,
    /// How many lines `iter` has yielded; `last` is the last of them.
    taken: u32,
    last: Option<&'a str>,
}

impl<'a> Lines<'a> {
    fn new(source: &'a str) -> Self {
        Lines { source, iter: source.lines(), taken: 0, last: None }
    }

    /// Line `number` (1-based), if the text has it.
    fn get(&mut self, number: u32) -> Option<&'a str> {
        if number == 0 {
            return None;
        }
        if number < self.taken {
            // Out of order (a caller that did not sort): start over.
            *self = Lines::new(self.source);
        }
        while self.taken < number {
            self.last = Some(self.iter.next()?);
            self.taken = self.taken.saturating_add(1);
        }
        self.last
    }
}

/// `1234567` as `1,234,567`: counts in the hundreds of thousands are read at a glance.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One diagnostic; `text` is its source line, if the file has it.
fn render_one(out: &mut String, d: &Diagnostic, text: Option<&str>) {
    let _ = writeln!(out, "{}:{}:{}: {}[{}]: {}", d.file, d.line, d.column, d.severity, d.code, d.message);
    if !d.path.is_empty() {
        let _ = writeln!(out, "    at {}", d.path);
    }
    if let Some(text) = text.filter(|_| !d.redact) {
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

    fn push_at(d: &mut Diagnostics, severity: Severity, line: u32) {
        let pos = Pos { line, column: 1, len: 4 };
        d.push(severity, "invalid-mac", pos, &path!["nodes", line as usize], format!("problem {line}"), None);
    }

    #[test]
    fn a_limit_keeps_the_first_in_source_order_and_counts_the_rest() {
        let src: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let mut d = Diagnostics::with_limit("inv.yaml", &src, 3);
        // Reverse order: each new diagnostic sorts before every kept one, the worst case.
        for line in (1..=20).rev() {
            let severity = if line % 5 == 0 { Severity::Warning } else { Severity::Error };
            push_at(&mut d, severity, line);
        }
        d.sort();
        assert_eq!(d.diagnostics.iter().map(|x| x.line).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!((d.count(Severity::Error), d.count(Severity::Warning), d.omitted()), (16, 4, 17));
        assert!(d.has_errors() && !d.is_empty());
        let text = d.render_with("use --max-errors 0 to see all");
        assert!(text.starts_with("inv.yaml:1:1: error[invalid-mac]: problem 1\n"), "{text}");
        assert!(
            text.ends_with(
                " 3 | line 3\n   | ^^^^\n\
                 ... and 13 more errors and 4 more warnings (use --max-errors 0 to see all)\n\
                 inv.yaml: 16 errors, 4 warnings\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&d).expect("serializes");
        assert_eq!(
            (json["errors"].as_u64(), json["warnings"].as_u64(), json["omitted"].as_u64()),
            (Some(16), Some(4), Some(17))
        );
        assert_eq!(json["diagnostics"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn without_a_limit_everything_is_kept() {
        let mut d = Diagnostics::new("inv.yaml", "a\nb\n");
        for line in [2, 1, 2] {
            push_at(&mut d, Severity::Error, line);
        }
        d.sort();
        // The repeated diagnostic is reported once.
        assert_eq!((d.diagnostics.len(), d.omitted(), d.count(Severity::Error)), (2, 0, 2));
        assert!(!d.render().contains("more error"));
    }

    #[test]
    fn redact_last_leaves_kept_diagnostics_alone_when_the_last_was_only_counted() {
        let mut d = Diagnostics::with_limit("inv.yaml", "a\nb\nc\n", 1);
        for line in 1..=3 {
            push_at(&mut d, Severity::Error, line);
        }
        // The third push sorted the buffer (keeping line 1) and only counted line 3.
        d.redact_last();
        d.sort();
        assert_eq!(d.diagnostics.len(), 1);
        assert!(!d.diagnostics[0].redact);
        assert_eq!(d.omitted(), 2);
    }

    #[test]
    fn source_lines_in_any_order() {
        let mut lines = Lines::new("one\ntwo\nthree");
        assert_eq!(lines.get(2), Some("two"));
        assert_eq!(lines.get(2), Some("two"));
        assert_eq!(lines.get(3), Some("three"));
        assert_eq!(lines.get(1), Some("one"));
        assert_eq!(lines.get(4), None);
        assert_eq!(lines.get(3), Some("three"));
        assert_eq!(lines.get(0), None);
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(123_456), "123,456");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
