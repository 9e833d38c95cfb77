//! The JSON Schema of the inventory, and the structural check that uses it.
//!
//! The schema is generated from [`crate::raw`] with schemars and committed as
//! `inventory/schema.json` for editors. [`check`] walks the located YAML tree against the same
//! schema and reports every unknown field, missing field, wrong type and unknown enum value at
//! once, with positions — serde's `deny_unknown_fields` would stop at the first. The walker
//! understands exactly the subset of JSON Schema that schemars emits for our types; a test
//! keeps it honest by checking the committed examples and an error corpus.

use serde_json::{Map, Value as Json};

use crate::diag::{Diagnostics, Severity};
use crate::raw;
use crate::tree::{Node, Path, Scalar, Value};

/// The inventory JSON Schema, pretty-printed with a trailing newline (the committed form).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(raw::Inventory);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

/// The schema the check walks, generated once per process: schemars builds it by reflection
/// over every `raw` type, which cost more than parsing and checking a small inventory (the
/// fuzz target ran at 100-200 inputs per second).
static SCHEMA: std::sync::LazyLock<Json> =
    std::sync::LazyLock::new(|| schemars::schema_for!(raw::Inventory).as_value().clone());

/// Structural check of a whole document. Returns `true` when no error was added.
pub fn check(root: &Node, diags: &mut Diagnostics) -> bool {
    let schema: &Json = &SCHEMA;
    let walker = Walker { defs: schema.get("$defs").and_then(Json::as_object) };
    let before = diags.count(Severity::Error);
    walker.check(root, schema, &Path::root(), diags);
    diags.count(Severity::Error) == before
}

struct Walker<'s> {
    defs: Option<&'s Map<String, Json>>,
}

impl<'s> Walker<'s> {
    fn resolve(&self, mut schema: &'s Json) -> &'s Json {
        // $ref chains are short; bound the loop anyway so a bad schema cannot hang the check.
        for _ in 0..8 {
            let Some(r) = schema.get("$ref").and_then(Json::as_str) else { break };
            let name = r.trim_start_matches("#/$defs/");
            match self.defs.and_then(|d| d.get(name)) {
                Some(s) => schema = s,
                None => break,
            }
        }
        schema
    }

    fn check(&self, node: &Node, schema: &'s Json, path: &Path, diags: &mut Diagnostics) {
        let schema = self.resolve(schema);
        if let Some(branches) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Json::as_array) {
            self.check_alternatives(node, branches, path, diags);
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array) {
            let names: Vec<&str> = allowed.iter().filter_map(Json::as_str).collect();
            self.check_enum(node, &names, path, diags);
            return;
        }
        if let Some(c) = schema.get("const").and_then(Json::as_str) {
            self.check_enum(node, &[c], path, diags);
            return;
        }
        if !type_matches(schema, &node.value) {
            let want = expected_kinds(schema);
            let found = describe(&node.value);
            diags.push(
                Severity::Error,
                "wrong-type",
                node.pos,
                path,
                format!("expected {want}, found {found}"),
                type_hint(schema, &node.value),
            );
            return;
        }
        match &node.value {
            Value::Map(entries) => self.check_map(node, entries, schema, path, diags),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &path.index(i), diags);
                    }
                }
            }
            Value::Scalar(Scalar::Int(i)) => check_range(node, *i, schema, path, diags),
            Value::Scalar(_) => {}
        }
    }

    fn check_map(
        &self,
        node: &Node,
        entries: &[(crate::tree::Key, Node)],
        schema: &'s Json,
        path: &Path,
        diags: &mut Diagnostics,
    ) {
        let props = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties");
        let mut unknown: Vec<&str> = Vec::new();
        for (key, value) in entries {
            let child = path.key(&key.name);
            if let Some(s) = props.and_then(|p| p.get(&key.name)) {
                self.check(value, s, &child, diags);
                continue;
            }
            match additional {
                Some(Json::Bool(false)) => {
                    unknown.push(&key.name);
                    let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                    let here = if path.0.is_empty() { "at the top level".to_owned() } else { format!("in {path}") };
                    let hint = match did_you_mean(&key.name, &known) {
                        Some(s) => format!("did you mean `{s}`? fields here: {}", known.join(", ")),
                        None => format!("fields here: {}", known.join(", ")),
                    };
                    diags.push(
                        Severity::Error,
                        "unknown-field",
                        key.pos,
                        &child,
                        format!("unknown field `{}` {here}", key.name),
                        Some(hint),
                    );
                }
                Some(s @ Json::Object(_)) => self.check(value, s, &child, diags),
                _ => {}
            }
        }
        for req in schema.get("required").and_then(Json::as_array).into_iter().flatten().filter_map(Json::as_str) {
            // A misspelt required field is already reported as unknown with "did you mean";
            // a second error for the same line would be noise.
            if entries.iter().any(|(k, _)| k.name == req) || unknown.iter().any(|u| did_you_mean(u, &[req]).is_some()) {
                continue;
            }
            let description = props
                .and_then(|p| p.get(req))
                .map(|s| self.resolve(s))
                .and_then(|s| s.get("description"))
                .and_then(Json::as_str);
            let hint = match description {
                Some(d) => format!("add `{req}:` here ({})", first_sentence(d)),
                None => format!("add `{req}:` here"),
            };
            let mut pos = node.pos;
            pos.len = 1;
            diags.push(
                Severity::Error,
                "missing-field",
                pos,
                &path.key(req),
                format!("missing field `{req}`"),
                Some(hint),
            );
        }
    }

    /// `anyOf`/`oneOf` as schemars emits them: an optional value (`X | null`), a unit-variant
    /// enum (one `const` per variant), or an untagged scalar union.
    fn check_alternatives(&self, node: &Node, branches: &'s [Json], path: &Path, diags: &mut Diagnostics) {
        let consts: Vec<&str> =
            branches.iter().filter_map(|b| self.resolve(b).get("const").and_then(Json::as_str)).collect();
        if !consts.is_empty() && consts.len() == branches.len() {
            self.check_enum(node, &consts, path, diags);
            return;
        }
        let non_null: Vec<&Json> =
            branches.iter().filter(|b| self.resolve(b).get("type").and_then(Json::as_str) != Some("null")).collect();
        if matches!(node.value, Value::Scalar(Scalar::Null)) && non_null.len() < branches.len() {
            return;
        }
        if let [only] = non_null.as_slice() {
            self.check(node, only, path, diags);
            return;
        }
        // A union: accept the first branch that produces no errors.
        let mut best: Option<Diagnostics> = None;
        for b in &non_null {
            let mut scratch = Diagnostics::new(diags.file.clone(), "");
            self.check(node, b, path, &mut scratch);
            if !scratch.has_errors() {
                return;
            }
            if best.as_ref().is_none_or(|d| scratch.diagnostics.len() < d.diagnostics.len()) {
                best = Some(scratch);
            }
        }
        let kinds: Vec<String> = non_null.iter().map(|b| expected_kinds(self.resolve(b))).collect();
        diags.push(
            Severity::Error,
            "wrong-type",
            node.pos,
            path,
            format!("expected {}, found {}", join_or(&kinds), describe(&node.value)),
            None,
        );
    }

    fn check_enum(&self, node: &Node, allowed: &[&str], path: &Path, diags: &mut Diagnostics) {
        let list = allowed.join(", ");
        let Value::Scalar(Scalar::Str(s)) = &node.value else {
            let msg = format!("expected one of {list}, found {}", describe(&node.value));
            diags.push(Severity::Error, "wrong-type", node.pos, path, msg, None);
            return;
        };
        if allowed.contains(&s.as_str()) {
            return;
        }
        let hint = did_you_mean(s, allowed).map(|m| format!("did you mean `{m}`?"));
        diags.push(
            Severity::Error,
            "invalid-value",
            node.pos,
            path,
            format!("unknown value `{s}`; expected one of {list}"),
            hint,
        );
    }
}

fn type_names(schema: &Json) -> Vec<&str> {
    match schema.get("type") {
        Some(Json::String(t)) => vec![t.as_str()],
        Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    }
}

fn type_matches(schema: &Json, value: &Value) -> bool {
    let types = type_names(schema);
    if types.is_empty() {
        return true;
    }
    types.iter().any(|t| match (*t, value) {
        ("object", Value::Map(_)) | ("array", Value::Seq(_)) | ("null", Value::Scalar(Scalar::Null)) => true,
        ("boolean", Value::Scalar(Scalar::Bool(_))) | ("integer", Value::Scalar(Scalar::Int(_))) => true,
        ("number", Value::Scalar(Scalar::Int(_) | Scalar::Float(_))) => true,
        // serde reads any non-null scalar into a string field, keeping its source text.
        ("string", Value::Scalar(s)) => !matches!(s, Scalar::Null),
        _ => false,
    })
}

fn expected_kinds(schema: &Json) -> String {
    let kinds: Vec<String> = type_names(schema)
        .into_iter()
        .filter(|t| *t != "null")
        .map(|t| {
            match t {
                "object" => "a mapping",
                "array" => "a list",
                "boolean" => "a boolean (true/false)",
                "integer" => "an integer",
                "number" => "a number",
                "string" => "a string",
                other => other,
            }
            .to_owned()
        })
        .collect();
    if kinds.is_empty() { "a value".to_owned() } else { join_or(&kinds) }
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Scalar(Scalar::Str(s)) => format!("the string `{s}`"),
        Value::Scalar(Scalar::Int(i)) => format!("the integer {i}"),
        Value::Scalar(Scalar::Float(f)) => format!("the number {f}"),
        Value::Scalar(Scalar::Bool(b)) => format!("the boolean {b}"),
        other => other.kind().to_owned(),
    }
}

fn type_hint(schema: &Json, value: &Value) -> Option<String> {
    let types = type_names(schema);
    match value {
        Value::Scalar(Scalar::Null) if types.contains(&"object") || types.contains(&"array") => {
            Some("the key is there but has no value: indent its contents under it, or remove the key".to_owned())
        }
        Value::Scalar(Scalar::Str(_)) if types.contains(&"integer") => {
            Some("write the number without quotes".to_owned())
        }
        Value::Scalar(Scalar::Str(_)) if types.contains(&"array") => {
            Some("a list is written `[a, b]` or as `- item` lines".to_owned())
        }
        _ => None,
    }
}

fn check_range(node: &Node, v: i128, schema: &Json, path: &Path, diags: &mut Diagnostics) {
    // schemars states integer widths as `format` (uint16, uint32, ...) and a minimum.
    let (lo, hi): (i128, i128) = match schema.get("format").and_then(Json::as_str) {
        Some("uint8") => (0, u8::MAX.into()),
        Some("uint16") => (0, u16::MAX.into()),
        Some("uint32") => (0, u32::MAX.into()),
        Some("uint64" | "uint") => (0, u64::MAX.into()),
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        Some("int64") => (i64::MIN.into(), i64::MAX.into()),
        _ => (i128::MIN, i128::MAX),
    };
    if !(lo..=hi).contains(&v) {
        diags.push(Severity::Error, "out-of-range", node.pos, path, format!("{v} is out of range ({lo}..={hi})"), None);
    }
}

fn first_sentence(s: &str) -> &str {
    let s = s.lines().next().unwrap_or(s);
    s.split_once(". ").map_or(s.trim_end_matches('.'), |(a, _)| a)
}

/// The closest candidate to a misspelled name, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()), strsim::jaro_winkler(&lower, c), *c))
        .filter(|(d, jw, c)| *d <= (c.len() / 3).max(1) || *jw >= 0.88)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos_but_not_strangers() {
        assert_eq!(did_you_mean("macc", &["name", "mac", "boot"]), Some("mac"));
        assert_eq!(did_you_mean("adress", &["address", "segment"]), Some("address"));
        assert_eq!(did_you_mean("uefi-https", &["uefi-http", "pxe", "ipxe", "dhcp-less-http"]), Some("uefi-http"));
        assert_eq!(did_you_mean("colour", &["name", "mac", "boot"]), None);
    }

    #[test]
    fn schema_describes_the_top_level() {
        let s: Json = serde_json::from_str(&json_schema()).expect("schema is JSON");
        let props = s["properties"].as_object().expect("properties");
        for k in ["version", "site", "profiles", "nodes"] {
            assert!(props.contains_key(k), "{k}");
        }
        assert_eq!(s["additionalProperties"], Json::Bool(false));
    }
}
