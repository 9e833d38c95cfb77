//! A YAML document as a tree of located nodes.
//!
//! serde stops at the first error, but operators want every problem of a file at once. So the
//! loader first reads the document into this tree (one parse, every key and value with its
//! line and column), checks its shape against the schema, and only then deserializes the typed
//! structs. The tree also answers "where is `nodes[3].nics[0].mac`?" for semantic errors found
//! later on typed data.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// 1-based line and column of a node in the source, and its length in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    pub len: u32,
}

impl Pos {
    fn of<T>(s: &Spanned<T>) -> Pos {
        let loc = &s.referenced;
        Pos {
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
            column: u32::try_from(loc.column()).unwrap_or(u32::MAX),
            len: u32::try_from(loc.span().len()).unwrap_or(0),
        }
    }
}

/// A scalar as YAML typed it (core schema).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub pos: Pos,
    pub name: String,
}

impl Value {
    /// How the value is named in "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(Scalar::Null) => "null",
            Value::Scalar(Scalar::Bool(_)) => "a boolean",
            Value::Scalar(Scalar::Int(_)) => "an integer",
            Value::Scalar(Scalar::Float(_)) => "a number",
            Value::Scalar(Scalar::Str(_)) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn key(&self, key: &str) -> Option<&Key> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, _)| k),
            _ => None,
        }
    }

    pub fn index(&self, i: usize) -> Option<&Node> {
        match &self.value {
            Value::Seq(items) => items.get(i),
            _ => None,
        }
    }

    /// Position of the deepest node on `path` that exists: a semantic error about a missing
    /// field points at the mapping that lacks it.
    pub fn locate(&self, path: &Path) -> Pos {
        let mut node = self;
        for seg in &path.0 {
            let next = match seg {
                Seg::Key(k) => node.get(k),
                Seg::Index(i) => node.index(*i),
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }

    /// Position of the key that ends `path` (for "unknown field" and "duplicate key").
    pub fn locate_key(&self, path: &Path) -> Option<Pos> {
        let (last, parent) = path.0.split_last()?;
        let Seg::Key(k) = last else { return None };
        let mut node = self;
        for seg in parent {
            node = match seg {
                Seg::Key(k) => node.get(k)?,
                Seg::Index(i) => node.index(*i)?,
            };
        }
        node.key(k).map(|k| k.pos)
    }
}

/// Where a value sits in the document, printed as `nodes[3].nics[0].mac`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Path(pub Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }
    pub fn key(&self, k: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }
    pub fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(i) => write!(f, "[{i}]")?,
                // Keys that are not identifiers (sysctl names, Dell attribute names with dots)
                // are quoted so the path stays unambiguous.
                Seg::Key(k) if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {
                    if n > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

/// Builds a [`Path`] from keys and indices: `path!["nodes", 3, "mac"]`.
#[macro_export]
macro_rules! path {
    ($($seg:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut p = $crate::tree::Path::root();
        $( p = $crate::tree::PathSeg::push($seg, p); )*
        p
    }};
}

/// Lets [`path!`] take both keys and indices.
pub trait PathSeg {
    fn push(self, p: Path) -> Path;
}
impl PathSeg for &str {
    fn push(self, p: Path) -> Path {
        p.key(self)
    }
}
impl PathSeg for &String {
    fn push(self, p: Path) -> Path {
        p.key(self)
    }
}
impl PathSeg for usize {
    fn push(self, p: Path) -> Path {
        p.index(self)
    }
}

// --- deserialization through serde-saphyr, which supplies the spans -------------------------

struct SpannedValue(Value);

impl<'de> Deserialize<'de> for SpannedValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(SpannedValue)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Int(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Int(v.into())))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::Scalar(i128::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Str(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Str(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Spanned<SpannedValue>>()? {
            items.push(Node { pos: Pos::of(&item), value: item.value.0 });
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry::<Spanned<KeyText>, Spanned<SpannedValue>>()? {
            let key = Key { pos: Pos::of(&k), name: k.value.0 };
            entries.push((key, Node { pos: Pos::of(&v), value: v.value.0 }));
        }
        Ok(Value::Map(entries))
    }
}

/// A mapping key as text. YAML allows any scalar as a key (`1: x`, `true: y`); our schema only
/// has string keys, so others are turned into their text and then rejected by the schema check
/// with a position, rather than failing the parse.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(ValueVisitor)?;
        let text = match v {
            Value::Scalar(Scalar::Str(s)) => s,
            Value::Scalar(Scalar::Int(i)) => i.to_string(),
            Value::Scalar(Scalar::Float(f)) => f.to_string(),
            Value::Scalar(Scalar::Bool(b)) => b.to_string(),
            Value::Scalar(Scalar::Null) => "~".to_owned(),
            other => return Err(de::Error::custom(format!("a mapping key must be a scalar, not {}", other.kind()))),
        };
        Ok(KeyText(text))
    }
}

/// Parser limits. serde-saphyr's defaults (250,000 nodes) guard against hostile documents but
/// stop at about 5,000 inventory nodes; a 50,000-node fleet needs ~2.5 M YAML nodes. The alias
/// and anchor guards (billion-laughs) stay at their defaults: inventories need few anchors.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: 4_000_000,
            max_events: 8_000_000,
        },
    }
}

/// Parses a YAML document into a located tree. Errors are YAML syntax errors (and duplicate
/// keys, which serde-saphyr rejects by default: a silently overwritten key is how a node loses
/// its MAC).
pub fn parse(src: &str) -> Result<Node, serde_saphyr::Error> {
    let root: Spanned<SpannedValue> = serde_saphyr::from_str_with_options(src, yaml_options())?;
    Ok(Node { pos: Pos::of(&root), value: root.value.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let src = "site:\n  name: lab\nnodes:\n  - name: a\n    nics:\n      - mac: 52:54:00:00:00:01\n";
        let t = parse(src).expect("valid yaml");
        assert_eq!(t.locate(&path!["nodes", 0usize, "nics", 0usize, "mac"]), Pos { line: 6, column: 14, len: 17 });
        assert_eq!(t.locate_key(&path!["site", "name"]).map(|p| (p.line, p.column)), Some((2, 3)));
        // A missing leaf resolves to its deepest existing parent.
        assert_eq!(t.locate(&path!["nodes", 0usize, "bmc", "address"]).line, 4);
    }

    #[test]
    fn scalars_are_typed_yaml_1_2() {
        let t = parse("a: 1\nb: true\nc: ~\nd: fd00::1\ne: 52:54:00:00:00:01\nf: yes\n").expect("valid yaml");
        let get = |k| t.get(k).map(|n| n.value.clone());
        assert_eq!(get("a"), Some(Value::Scalar(Scalar::Int(1))));
        assert_eq!(get("b"), Some(Value::Scalar(Scalar::Bool(true))));
        assert_eq!(get("c"), Some(Value::Scalar(Scalar::Null)));
        assert_eq!(get("d"), Some(Value::Scalar(Scalar::Str("fd00::1".into()))));
        // YAML 1.1 would read this as a sexagesimal integer.
        assert_eq!(get("e"), Some(Value::Scalar(Scalar::Str("52:54:00:00:00:01".into()))));
    }

    #[test]
    fn path_display() {
        assert_eq!(path!["nodes", 3usize, "nics", 0usize, "mac"].to_string(), "nodes[3].nics[0].mac");
        assert_eq!(
            path!["sysctl_profiles", "dense", "net.core.somaxconn"].to_string(),
            "sysctl_profiles.dense[\"net.core.somaxconn\"]"
        );
    }
}
