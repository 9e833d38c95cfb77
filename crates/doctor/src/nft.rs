//! Would this host's nftables ruleset drop a packet to one of our ports? Reads `nft -j list
//! ruleset` (the JSON schema of libnftables-json(5)) and walks the input and prerouting base
//! chains of the `ip6`, `inet` and `netdev`-less families in order, as the kernel would for a
//! new inbound packet on the provisioning interface: protocol, destination port, input
//! interface and conntrack state are decided exactly; any other condition (a source address,
//! a mark) makes a rule "may match", reported but not taken as the verdict.

use serde_json::Value;

use crate::procnet::Proto;

/// What a ruleset does to a new inbound packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Dropped or rejected, by this rule or policy (as `nft` would print it).
    Drop(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when no base chain looks at the packet.
    pub verdict: Option<Verdict>,
    /// Rules that drop it only under conditions not checked here.
    pub maybe: Vec<String>,
}

struct Packet<'a> {
    proto: Proto,
    port: u16,
    iface: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Unknown,
}

fn chains(doc: &Value) -> Vec<&Value> {
    doc["nftables"].as_array().into_iter().flatten().filter_map(|o| o.get("chain")).collect()
}

fn rules<'a>(doc: &'a Value, family: &str, table: &str, chain: &str) -> Vec<&'a Value> {
    doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["family"] == family && r["table"] == table && r["chain"] == chain)
        .collect()
}

/// Does `right` (a number, string, set or range) contain `v`?
fn contains(right: &Value, v: &Value) -> Tri {
    match right {
        Value::Object(o) if o.contains_key("set") => {
            let mut any_unknown = false;
            for item in o["set"].as_array().into_iter().flatten() {
                match contains(item, v) {
                    Tri::Yes => return Tri::Yes,
                    Tri::Unknown => any_unknown = true,
                    Tri::No => {}
                }
            }
            if any_unknown { Tri::Unknown } else { Tri::No }
        }
        Value::Object(o) if o.contains_key("range") => {
            let r = o["range"].as_array();
            match (r.and_then(|r| r.first()?.as_u64()), r.and_then(|r| r.get(1)?.as_u64()), v.as_u64()) {
                (Some(a), Some(b), Some(x)) => {
                    if a <= x && x <= b {
                        Tri::Yes
                    } else {
                        Tri::No
                    }
                }
                _ => Tri::Unknown,
            }
        }
        // A named set (`@allowed`): not resolved here.
        Value::String(s) if s.starts_with('@') => Tri::Unknown,
        Value::Array(items) => contains(&serde_json::json!({ "set": items }), v),
        other => {
            if other == v {
                Tri::Yes
            } else {
                Tri::No
            }
        }
    }
}

fn eval_match(m: &Value, p: &Packet<'_>) -> Tri {
    let op = m["op"].as_str().unwrap_or("==");
    let left = &m["left"];
    let right = &m["right"];
    let proto_name = match p.proto {
        Proto::Udp => "udp",
        Proto::Tcp => "tcp",
    };
    let r = if let Some(pl) = left.get("payload") {
        let field = pl["field"].as_str().unwrap_or("");
        let proto = pl["protocol"].as_str().unwrap_or("");
        if field == "dport" && (proto == proto_name || proto == "th") {
            contains(right, &Value::from(p.port))
        } else if matches!(proto, "udp" | "tcp") && proto != proto_name {
            // A match on the other protocol's header never matches our packet.
            Tri::No
        } else {
            Tri::Unknown
        }
    } else if let Some(meta) = left.get("meta") {
        match meta["key"].as_str().unwrap_or("") {
            "nfproto" => contains(right, &Value::from("ipv6")),
            "l4proto" => contains(right, &Value::from(proto_name)),
            "iifname" => contains(right, &Value::from(p.iface)),
            _ => Tri::Unknown,
        }
    } else if let Some(ct) = left.get("ct") {
        if ct["key"] == "state" {
            // A new inbound packet: ct state new.
            match right {
                Value::String(s) => {
                    if s == "new" {
                        Tri::Yes
                    } else {
                        Tri::No
                    }
                }
                _ => contains(right, &Value::from("new")),
            }
        } else {
            Tri::Unknown
        }
    } else {
        Tri::Unknown
    };
    match (op, r) {
        ("!=", Tri::Yes) => Tri::No,
        ("!=", Tri::No) => Tri::Yes,
        (_, r) => r,
    }
}

enum Step {
    Verdict(Verdict),
    Jump(String),
    Goto(String),
    Return,
}

fn describe(rule: &Value) -> String {
    let handle = rule["handle"].as_u64().map(|h| format!(" (handle {h})")).unwrap_or_default();
    format!(
        "{} {} chain {}{handle}",
        rule["family"].as_str().unwrap_or("?"),
        rule["table"].as_str().unwrap_or("?"),
        rule["chain"].as_str().unwrap_or("?")
    )
}

/// Walks one chain; `None` when the packet falls off its end.
fn eval_chain(
    doc: &Value,
    family: &str,
    table: &str,
    chain: &str,
    p: &Packet<'_>,
    depth: u32,
    maybe: &mut Vec<String>,
) -> Option<Verdict> {
    if depth > 16 {
        return None;
    }
    for rule in rules(doc, family, table, chain) {
        let mut m = Tri::Yes;
        let mut step = None;
        for e in rule["expr"].as_array().into_iter().flatten() {
            if let Some(mm) = e.get("match") {
                match eval_match(mm, p) {
                    Tri::No => {
                        m = Tri::No;
                        break;
                    }
                    Tri::Unknown => m = Tri::Unknown,
                    Tri::Yes => {}
                }
            } else if e.get("accept").is_some() {
                step = Some(Step::Verdict(Verdict::Accept));
            } else if e.get("drop").is_some() || e.get("reject").is_some() {
                step = Some(Step::Verdict(Verdict::Drop(describe(rule))));
            } else if let Some(j) = e.get("jump") {
                step = j["target"].as_str().map(|t| Step::Jump(t.to_owned()));
            } else if let Some(g) = e.get("goto") {
                step = g["target"].as_str().map(|t| Step::Goto(t.to_owned()));
            } else if e.get("return").is_some() {
                step = Some(Step::Return);
            }
        }
        let Some(step) = step else { continue };
        match (m, step) {
            (Tri::No, _) => {}
            (Tri::Unknown, Step::Verdict(Verdict::Drop(d))) => maybe.push(d),
            (Tri::Unknown, _) => {}
            (Tri::Yes, Step::Verdict(v)) => return Some(v),
            (Tri::Yes, Step::Return) => return None,
            (Tri::Yes, Step::Jump(t)) => {
                if let Some(v) = eval_chain(doc, family, table, &t, p, depth + 1, maybe) {
                    return Some(v);
                }
            }
            (Tri::Yes, Step::Goto(t)) => return eval_chain(doc, family, table, &t, p, depth + 1, maybe),
        }
    }
    None
}

/// What the ruleset `doc` does to a new `proto`/`port` packet arriving on `iface`.
pub fn evaluate(doc: &Value, proto: Proto, port: u16, iface: &str) -> Outcome {
    let p = Packet { proto, port, iface };
    let mut maybe = vec![];
    let mut verdict = None;
    for c in chains(doc) {
        let family = c["family"].as_str().unwrap_or("");
        let hook = c["hook"].as_str().unwrap_or("");
        if !matches!(family, "ip6" | "inet") || !matches!(hook, "input" | "prerouting") || c["type"] == "nat" {
            continue;
        }
        let (table, name) = (c["table"].as_str().unwrap_or(""), c["name"].as_str().unwrap_or(""));
        let v = eval_chain(doc, family, table, name, &p, 0, &mut maybe).unwrap_or_else(|| {
            if c["policy"] == "drop" {
                Verdict::Drop(format!("{family} {table} chain {name} (policy drop)"))
            } else {
                Verdict::Accept
            }
        });
        // Every base chain on the path must accept.
        match (&verdict, v) {
            (Some(Verdict::Drop(_)), _) => {}
            (_, v) => verdict = Some(v),
        }
    }
    Outcome { verdict, maybe }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ruleset(policy: &str, rules: Vec<Value>) -> Value {
        let mut objs = vec![
            json!({"table": {"family": "inet", "name": "f", "handle": 1}}),
            json!({"chain": {"family": "inet", "table": "f", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": policy}}),
            json!({"chain": {"family": "inet", "table": "f", "name": "svc", "handle": 2}}),
        ];
        objs.extend(rules.into_iter().map(|r| json!({ "rule": r })));
        json!({ "nftables": objs })
    }

    fn rule(chain: &str, handle: u64, expr: Value) -> Value {
        json!({"family": "inet", "table": "f", "chain": chain, "handle": handle, "expr": expr})
    }

    fn dport(proto: &str, right: Value) -> Value {
        json!({"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": right}})
    }

    #[test]
    fn a_drop_of_the_port_is_found_and_others_pass() {
        let doc = ruleset(
            "accept",
            vec![rule("input", 3, json!([dport("udp", json!(547)), {"counter": null}, {"drop": null}]))],
        );
        let out = evaluate(&doc, Proto::Udp, 547, "m6s0");
        assert_eq!(out.verdict, Some(Verdict::Drop("inet f chain input (handle 3)".into())));
        assert_eq!(evaluate(&doc, Proto::Udp, 69, "m6s0").verdict, Some(Verdict::Accept));
        assert_eq!(evaluate(&doc, Proto::Tcp, 547, "m6s0").verdict, Some(Verdict::Accept), "tcp is not udp");
    }

    #[test]
    fn order_sets_ranges_jumps_and_policy() {
        let doc = ruleset(
            "drop",
            vec![
                rule(
                    "input",
                    3,
                    json!([{"match": {"op": "==", "left": {"ct": {"key": "state"}}, "right": {"set": ["established", "related"]}}}, {"accept": null}]),
                ),
                rule(
                    "input",
                    4,
                    json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "m6s0"}}, {"jump": {"target": "svc"}}]),
                ),
                rule("svc", 5, json!([dport("udp", json!({"set": [547, {"range": [60, 70]}]})), {"accept": null}])),
                rule("svc", 6, json!([dport("tcp", json!(8080)), {"reject": null}])),
            ],
        );
        assert_eq!(evaluate(&doc, Proto::Udp, 547, "m6s0").verdict, Some(Verdict::Accept));
        assert_eq!(evaluate(&doc, Proto::Udp, 69, "m6s0").verdict, Some(Verdict::Accept), "in the range");
        assert_eq!(
            evaluate(&doc, Proto::Tcp, 8080, "m6s0").verdict,
            Some(Verdict::Drop("inet f chain svc (handle 6)".into()))
        );
        // Another interface does not take the jump and meets the policy.
        assert_eq!(
            evaluate(&doc, Proto::Udp, 547, "eth9").verdict,
            Some(Verdict::Drop("inet f chain input (policy drop)".into()))
        );
    }

    #[test]
    fn conditions_not_modelled_are_reported_not_decided() {
        let doc = ruleset(
            "accept",
            vec![rule(
                "input",
                7,
                json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "fe80::1"}}, dport("udp", json!(547)), {"drop": null}]),
            )],
        );
        let out = evaluate(&doc, Proto::Udp, 547, "m6s0");
        assert_eq!(out.verdict, Some(Verdict::Accept));
        assert_eq!(out.maybe, vec!["inet f chain input (handle 7)".to_owned()]);
        assert_eq!(evaluate(&json!({"nftables": []}), Proto::Udp, 547, "m6s0").verdict, None);
    }
}
