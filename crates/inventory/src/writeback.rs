//! Writing facts learned from BMCs back into the operator's inventory file — MACs of NICs that
//! name their `bmc_id` — as a text edit: comments, order, quoting and blank lines stay exactly
//! as they were; the only change is one `mac:` line per filled NIC, indented like its siblings.
//!
//! Pure (text in, text out). The BMC side lives in the Redfish client; the command glues them.

use crate::ident::MacAddr;
use crate::tree::{self, Node, Value};

/// A NIC whose `mac` is missing from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingMac {
    pub node: String,
    pub nic: String,
    /// Index of the NIC in the node's `nics` list.
    pub index: usize,
    pub bmc_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WritebackError {
    #[error("the inventory does not parse as YAML: {0}")]
    Syntax(String),
    #[error("node `{node}` has no NIC `{nic}`")]
    NoSuchNic { node: String, nic: String },
    #[error(
        "NIC `{nic}` of node `{node}` is written in flow style (`{{...}}`) on line {line}; add `mac: {mac}` there yourself"
    )]
    FlowStyle { node: String, nic: String, line: u32, mac: MacAddr },
    #[error("NIC `{nic}` of node `{node}` already has a MAC")]
    HasMac { node: String, nic: String },
}

fn nics_of(root: &Node) -> Vec<(String, &Node)> {
    let Some(Value::Seq(nodes)) = root.get("nodes").map(|n| &n.value) else { return vec![] };
    let mut out = Vec::new();
    for n in nodes {
        let name = match n.get("name").map(|v| &v.value) {
            Some(Value::Scalar(tree::Scalar::Str(s))) => s.clone(),
            _ => continue,
        };
        if let Some(Value::Seq(nics)) = n.get("nics").map(|v| &v.value) {
            for nic in nics {
                out.push((name.clone(), nic));
            }
        }
    }
    out
}

fn str_of(n: &Node, key: &str) -> Option<String> {
    match n.get(key).map(|v| &v.value) {
        Some(Value::Scalar(tree::Scalar::Str(s))) => Some(s.clone()),
        _ => None,
    }
}

/// Every NIC without a `mac`, in file order.
pub fn missing_macs(src: &str) -> Result<Vec<MissingMac>, WritebackError> {
    let root = tree::parse(src).map_err(|e| WritebackError::Syntax(e.to_string()))?;
    let mut out = Vec::new();
    let mut last_node = String::new();
    let mut index = 0;
    for (node, nic) in nics_of(&root) {
        if node != last_node {
            index = 0;
            last_node.clone_from(&node);
        }
        if nic.get("mac").is_none() {
            out.push(MissingMac {
                node: node.clone(),
                nic: str_of(nic, "name").unwrap_or_default(),
                index,
                bmc_id: str_of(nic, "bmc_id"),
            });
        }
        index += 1;
    }
    Ok(out)
}

/// The source's lines as the YAML parser numbers them, each with its break: a line ends at
/// `\r\n`, `\n` or a lone `\r` (YAML 1.2's line breaks). Counting `\n` alone put a MAC on the
/// wrong NIC when a lone carriage return sat in a comment (found by the inventory fuzzer).
fn yaml_lines(src: &str) -> Vec<&str> {
    let b = src.as_bytes();
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    while i < b.len() {
        let end = match b[i] {
            b'\n' => Some(i),
            b'\r' if b.get(i + 1) == Some(&b'\n') => Some(i + 1),
            b'\r' => Some(i),
            _ => None,
        };
        if let Some(end) = end {
            // ASCII breaks: these byte positions are character boundaries.
            out.push(&src[start..=end]);
            start = end + 1;
            i = end;
        }
        i += 1;
    }
    if start < b.len() {
        out.push(&src[start..]);
    }
    out
}

/// Inserts `mac: M` into each named NIC's mapping, after the mapping's last line that starts
/// a key, with the indentation of its keys.
pub fn fill_macs(src: &str, fills: &[(String, String, MacAddr)]) -> Result<String, WritebackError> {
    let root = tree::parse(src).map_err(|e| WritebackError::Syntax(e.to_string()))?;
    let lines = yaml_lines(src);
    // (line index to insert after, text), applied bottom-up so indices stay valid.
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for (node, nic, mac) in fills {
        let found = nics_of(&root)
            .into_iter()
            .find(|(n, m)| n == node && str_of(m, "name").as_deref() == Some(nic.as_str()))
            .map(|(_, m)| m);
        let Some(m) = found else { return Err(WritebackError::NoSuchNic { node: node.clone(), nic: nic.clone() }) };
        if m.get("mac").is_some() {
            return Err(WritebackError::HasMac { node: node.clone(), nic: nic.clone() });
        }
        let Value::Map(entries) = &m.value else {
            return Err(WritebackError::NoSuchNic { node: node.clone(), nic: nic.clone() });
        };
        // Block style: every key starts its own line, after indentation or the list's `- `.
        let block = entries.iter().all(|(k, _)| {
            let line = lines.get(k.pos.line as usize - 1).copied().unwrap_or("");
            let before: String = line.chars().take(k.pos.column as usize - 1).collect();
            before.trim_start_matches(' ').trim_start_matches("- ").trim().is_empty()
        });
        let Some((first, _)) = entries.first() else {
            return Err(WritebackError::NoSuchNic { node: node.clone(), nic: nic.clone() });
        };
        if !block {
            return Err(WritebackError::FlowStyle {
                node: node.clone(),
                nic: nic.clone(),
                line: first.pos.line,
                mac: *mac,
            });
        }
        let indent = " ".repeat(first.pos.column as usize - 1);
        // After the last line of the mapping: the line before the next key of the list item's
        // parent is hard to know, so insert after the last key's value line.
        let (last_key, last_val) =
            entries.last().map(|(k, v)| (k.pos.line, v.pos.line)).unwrap_or((first.pos.line, first.pos.line));
        let after = last_key.max(last_val) as usize;
        let eol = if src.contains("\r\n") { "\r\n" } else { "\n" };
        inserts.push((after, format!("{indent}mac: {mac}{eol}")));
    }
    inserts.sort_by_key(|x| std::cmp::Reverse(x.0));
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    if let Some(l) = out.last_mut()
        && !l.ends_with('\n')
    {
        l.push('\n');
    }
    for (after, text) in inserts {
        out.insert(after.min(out.len()), text);
    }
    Ok(out.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzer's finding: a lone carriage return in a comment is a line break to the YAML
    /// parser, so the MAC went in one line too low, onto the next NIC (a duplicate `mac`).
    #[test]
    fn a_lone_carriage_return_does_not_move_the_fill() {
        let src = "version: 1\nnodes:\n  - name: n1\n    nics:\n      - name: a\n# \r        mac: 02:00:00:00:00:0a\n      - name: b\n      - name: c\n        mac: 02:00:00:00:00:0c\n";
        let missing = missing_macs(src).expect("parses");
        assert_eq!(missing.iter().map(|m| m.nic.as_str()).collect::<Vec<_>>(), ["b"]);
        let out = fill_macs(src, &[("n1".into(), "b".into(), MacAddr([2, 0, 0, 0, 0, 0xb]))]).expect("filled");
        assert!(missing_macs(&out).expect("still parses").is_empty(), "{out:?}");
        assert!(out.contains("      - name: b\n        mac: 02:00:00:00:00:0b\n"), "{out:?}");
        assert_eq!(yaml_lines("a\r\nb\rc\nd"), ["a\r\n", "b\r", "c\n", "d"]);
    }

    const SRC: &str = "\
# fleet
nodes:
  - name: w-01   # rack 1
    nics:
      - name: eno1
        bmc_id: NIC.Integrated.1-1-1   # the 25G port
        boot: true

      - name: eno2
        mac: \"b0:7b:25:20:01:01\"
      - {name: eno3, bmc_id: NIC.Slot.5-1}
  - name: w-02
    nics:
      - bmc_id: NIC.Integrated.1-1-1
        name: eno1
";

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("mac")
    }

    #[test]
    fn finds_what_is_missing() {
        let m = missing_macs(SRC).expect("parse");
        let names: Vec<(&str, &str, usize, Option<&str>)> =
            m.iter().map(|x| (x.node.as_str(), x.nic.as_str(), x.index, x.bmc_id.as_deref())).collect();
        assert_eq!(
            names,
            vec![
                ("w-01", "eno1", 0, Some("NIC.Integrated.1-1-1")),
                ("w-01", "eno3", 2, Some("NIC.Slot.5-1")),
                ("w-02", "eno1", 0, Some("NIC.Integrated.1-1-1")),
            ]
        );
    }

    #[test]
    fn inserts_one_line_and_keeps_everything_else() {
        let out = fill_macs(
            SRC,
            &[
                ("w-01".into(), "eno1".into(), mac("e4:3d:1a:13:27:f0")),
                ("w-02".into(), "eno1".into(), mac("e4:3d:1a:13:27:f2")),
            ],
        )
        .expect("fill");
        let want = SRC
            .replace("        boot: true\n", "        boot: true\n        mac: e4:3d:1a:13:27:f0\n")
            .replace("        name: eno1\n", "        name: eno1\n        mac: e4:3d:1a:13:27:f2\n");
        assert_eq!(out, want);
        assert_eq!(missing_macs(&out).expect("parse").len(), 1, "only the flow-style NIC is left");
    }

    #[test]
    fn crlf_files_stay_crlf() {
        let src = SRC.replace('\n', "\r\n");
        let out = fill_macs(&src, &[("w-02".into(), "eno1".into(), mac("e4:3d:1a:13:27:f2"))]).expect("fill");
        assert!(out.contains("        name: eno1\r\n        mac: e4:3d:1a:13:27:f2\r\n"), "{out:?}");
        assert!(!out.replace("\r\n", "").contains('\n'), "mixed line endings");
    }

    #[test]
    fn flow_style_and_wrong_targets_are_refused() {
        let e = fill_macs(SRC, &[("w-01".into(), "eno3".into(), mac("b8:3f:d2:90:97:c4"))]).expect_err("refused");
        assert!(e.to_string().contains("flow style") && e.to_string().contains("line 11"), "{e}");
        let e = fill_macs(SRC, &[("w-01".into(), "eno2".into(), mac("b8:3f:d2:90:97:c4"))]).expect_err("refused");
        assert!(matches!(e, WritebackError::HasMac { .. }));
        let e = fill_macs(SRC, &[("w-09".into(), "eno1".into(), mac("b8:3f:d2:90:97:c4"))]).expect_err("refused");
        assert!(matches!(e, WritebackError::NoSuchNic { .. }));
    }
}
