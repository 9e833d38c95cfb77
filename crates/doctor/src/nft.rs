//! Would this host's nftables ruleset drop a packet to one of our ports? Reads `nft -j list
//! ruleset` (the JSON schema of libnftables-json(5)) and walks the base chains a new inbound
//! packet on the provisioning interface meets — `netdev`/`inet` ingress, then `ip6`/`inet`
//! prerouting and input, each hook's chains by priority — rule by rule as the kernel would.
//! Protocol, destination port (numbers, ranges, anonymous and named sets, comparisons), input
//! interface (with `*` wildcards) and conntrack state (`new`) are decided exactly; any other
//! condition (a source address, a mark) makes a rule "may match". A drop that may match is
//! reported, not taken as the verdict; so is a definite drop or drop policy reached after a
//! rule that may have accepted (or a verdict map that may decide).

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
    /// Drops that happen only under conditions not decided here.
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

impl Tri {
    fn of(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }
}

struct Walk<'a> {
    doc: &'a Value,
    p: Packet<'a>,
    maybe: Vec<String>,
    /// A rule that may have accepted (or a verdict map) came before: later drops are maybes.
    uncertain: bool,
}

fn objects<'a>(doc: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    doc["nftables"].as_array().into_iter().flatten().filter_map(move |o| o.get(kind))
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

impl Walk<'_> {
    /// Does `right` (a value, set, range, prefix or `@named` set) contain `v`?
    fn contains(&self, right: &Value, v: &Value, family: &str, table: &str) -> Tri {
        match right {
            Value::Object(o) if o.contains_key("set") => self.any(o["set"].as_array(), v, family, table),
            Value::Object(o) if o.contains_key("range") => {
                let r = o["range"].as_array();
                match (r.and_then(|r| r.first()?.as_u64()), r.and_then(|r| r.get(1)?.as_u64()), v.as_u64()) {
                    (Some(a), Some(b), Some(x)) => Tri::of(a <= x && x <= b),
                    _ => Tri::Unknown,
                }
            }
            Value::String(s) if s.starts_with('@') => {
                let name = &s[1..];
                match objects(self.doc, "set")
                    .find(|set| set["family"] == family && set["table"] == table && set["name"] == name)
                {
                    Some(set) => self.any(set["elem"].as_array(), v, family, table),
                    None => Tri::Unknown,
                }
            }
            Value::Array(items) => self.any(Some(items), v, family, table),
            Value::Object(o) if o.contains_key("elem") => self.contains(&o["elem"]["val"], v, family, table),
            Value::Object(_) => Tri::Unknown,
            other => Tri::of(other == v),
        }
    }

    fn any(&self, items: Option<&Vec<Value>>, v: &Value, family: &str, table: &str) -> Tri {
        let mut unknown = false;
        for item in items.into_iter().flatten() {
            match self.contains(item, v, family, table) {
                Tri::Yes => return Tri::Yes,
                Tri::Unknown => unknown = true,
                Tri::No => {}
            }
        }
        if unknown { Tri::Unknown } else { Tri::No }
    }

    fn eval_match(&self, m: &Value, family: &str, table: &str) -> Tri {
        let op = m["op"].as_str().unwrap_or("==");
        let (left, right) = (&m["left"], &m["right"]);
        let proto_name = match self.p.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        };
        // What the left side is for our packet, or the answer outright.
        let value: Value = if let Some(pl) = left.get("payload") {
            let proto = pl["protocol"].as_str().unwrap_or("");
            if matches!(proto, "udp" | "tcp" | "sctp" | "dccp" | "udplite") && proto != proto_name {
                // A header match of another protocol never applies, whatever the operator:
                // `tcp dport != 22` does not match a UDP packet.
                return Tri::No;
            }
            if pl["field"] == "dport" && (proto == proto_name || proto == "th") {
                Value::from(self.p.port)
            } else {
                return Tri::Unknown;
            }
        } else if let Some(meta) = left.get("meta") {
            match meta["key"].as_str().unwrap_or("") {
                "nfproto" => Value::from("ipv6"),
                "l4proto" => Value::from(proto_name),
                "iifname" => {
                    if let Some(pat) = right.as_str().and_then(|r| r.strip_suffix('*')) {
                        let t = Tri::of(self.p.iface.starts_with(pat));
                        return match (op, t) {
                            ("!=", Tri::Yes) => Tri::No,
                            ("!=", _) => Tri::Yes,
                            (_, t) => t,
                        };
                    }
                    Value::from(self.p.iface)
                }
                _ => return Tri::Unknown,
            }
        } else if let Some(ct) = left.get("ct") {
            if ct["key"] != "state" {
                return Tri::Unknown;
            }
            // A new inbound packet: ct state new.
            Value::from("new")
        } else {
            return Tri::Unknown;
        };
        match op {
            "==" | "in" => self.contains(right, &value, family, table),
            "!=" => match self.contains(right, &value, family, table) {
                Tri::Yes => Tri::No,
                Tri::No => Tri::Yes,
                Tri::Unknown => Tri::Unknown,
            },
            "<" | ">" | "<=" | ">=" => match (value.as_u64(), right.as_u64()) {
                (Some(x), Some(r)) => Tri::of(match op {
                    "<" => x < r,
                    ">" => x > r,
                    "<=" => x <= r,
                    _ => x >= r,
                }),
                _ => Tri::Unknown,
            },
            _ => Tri::Unknown,
        }
    }

    /// Walks one chain; `None` when the packet falls off its end (or returns).
    fn chain(&mut self, family: &str, table: &str, chain: &str, depth: u32) -> Option<Verdict> {
        if depth > 16 {
            self.uncertain = true;
            return None;
        }
        let rules: Vec<&Value> = objects(self.doc, "rule")
            .filter(|r| r["family"] == family && r["table"] == table && r["chain"] == chain)
            .collect();
        for rule in rules {
            let mut m = Tri::Yes;
            let mut step: Option<Step> = None;
            for e in rule["expr"].as_array().into_iter().flatten() {
                if let Some(mm) = e.get("match") {
                    match self.eval_match(mm, family, table) {
                        Tri::No => {
                            m = Tri::No;
                            break;
                        }
                        Tri::Unknown => m = Tri::Unknown,
                        Tri::Yes => {}
                    }
                } else if e.get("accept").is_some() {
                    step = Some(Step::Accept);
                } else if e.get("drop").is_some() || e.get("reject").is_some() {
                    step = Some(Step::Drop);
                } else if let Some(j) = e.get("jump") {
                    step = j["target"].as_str().map(|t| Step::Jump(t.to_owned()));
                } else if let Some(g) = e.get("goto") {
                    step = g["target"].as_str().map(|t| Step::Goto(t.to_owned()));
                } else if e.get("return").is_some() {
                    step = Some(Step::Return);
                } else if e.get("vmap").is_some() || e.get("xt").is_some() {
                    // A verdict map (or an iptables extension) decides by what we do not model.
                    step = Some(Step::Unknown);
                }
            }
            let Some(step) = step else { continue };
            if m == Tri::No {
                continue;
            }
            let certain = m == Tri::Yes && !self.uncertain;
            match step {
                Step::Drop if certain => return Some(Verdict::Drop(describe(rule))),
                Step::Drop => self.maybe.push(describe(rule)),
                Step::Accept if m == Tri::Yes => return Some(Verdict::Accept),
                Step::Return if m == Tri::Yes => return None,
                Step::Jump(t) | Step::Goto(t) if m == Tri::Unknown => {
                    // What the target does applies only sometimes: its drops are maybes.
                    self.uncertain = true;
                    let _ = self.chain(family, table, &t, depth + 1);
                }
                Step::Jump(t) => {
                    if let Some(v) = self.chain(family, table, &t, depth + 1) {
                        return Some(v);
                    }
                }
                Step::Goto(t) => return self.chain(family, table, &t, depth + 1),
                Step::Unknown => {
                    self.maybe.push(format!("{} (a verdict map)", describe(rule)));
                    self.uncertain = true;
                }
                // An accept or return that may apply: later drops may not be reached.
                Step::Accept | Step::Return => self.uncertain = true,
            }
        }
        None
    }
}

enum Step {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
    Return,
    Unknown,
}

/// Where a base chain's hook comes on the inbound path (ingress, prerouting, input).
fn hook_order(family: &str, hook: &str, device: Option<&str>, iface: &str) -> Option<u8> {
    match (family, hook) {
        ("netdev", "ingress") if device.is_none_or(|d| d == iface) => Some(0),
        ("inet", "ingress") if device.is_none_or(|d| d == iface) => Some(0),
        ("ip6" | "inet", "prerouting") => Some(1),
        ("ip6" | "inet", "input") => Some(2),
        _ => None,
    }
}

/// What the ruleset `doc` does to a new `proto`/`port` packet arriving on `iface`.
pub fn evaluate(doc: &Value, proto: Proto, port: u16, iface: &str) -> Outcome {
    let mut base: Vec<(u8, i64, &Value)> = objects(doc, "chain")
        .filter(|c| c["type"] != "nat")
        .filter_map(|c| {
            let order = hook_order(
                c["family"].as_str().unwrap_or(""),
                c["hook"].as_str().unwrap_or(""),
                c["dev"].as_str(),
                iface,
            )?;
            Some((order, c["prio"].as_i64().unwrap_or(0), c))
        })
        .collect();
    base.sort_by_key(|(order, prio, _)| (*order, *prio));
    let mut walk = Walk { doc, p: Packet { proto, port, iface }, maybe: vec![], uncertain: false };
    let mut verdict = None;
    for (_, _, c) in base {
        let (family, table, name) =
            (c["family"].as_str().unwrap_or(""), c["table"].as_str().unwrap_or(""), c["name"].as_str().unwrap_or(""));
        walk.uncertain = false;
        let v = match walk.chain(family, table, name, 0) {
            Some(v) => v,
            None if c["policy"] == "drop" => {
                let d = format!("{family} {table} chain {name} (policy drop)");
                if walk.uncertain {
                    walk.maybe.push(d);
                    Verdict::Accept
                } else {
                    Verdict::Drop(d)
                }
            }
            None => Verdict::Accept,
        };
        // Every base chain on the path must accept; the first drop is the verdict.
        if let Verdict::Drop(_) = v {
            return Outcome { verdict: Some(v), maybe: walk.maybe };
        }
        verdict = Some(v);
    }
    Outcome { verdict, maybe: walk.maybe }
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
    fn negations_of_another_protocol_comparisons_and_named_sets() {
        let doc = ruleset(
            "accept",
            vec![
                rule(
                    "input",
                    3,
                    json!([{"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"drop": null}]),
                ),
                rule(
                    "input",
                    4,
                    json!([{"match": {"op": "<", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 100}}, {"drop": null}]),
                ),
            ],
        );
        assert_eq!(
            evaluate(&doc, Proto::Udp, 547, "m6s0").verdict,
            Some(Verdict::Accept),
            "tcp != 22 is not about UDP"
        );
        assert_eq!(
            evaluate(&doc, Proto::Udp, 69, "m6s0").verdict,
            Some(Verdict::Drop("inet f chain input (handle 4)".into()))
        );
        let mut doc = ruleset("drop", vec![rule("input", 5, json!([dport("udp", json!("@svc")), {"accept": null}]))]);
        doc["nftables"].as_array_mut().expect("array").push(
            json!({"set": {"family": "inet", "table": "f", "name": "svc", "type": "inet_service", "elem": [547, 69]}}),
        );
        assert_eq!(evaluate(&doc, Proto::Udp, 547, "m6s0").verdict, Some(Verdict::Accept));
        assert!(matches!(evaluate(&doc, Proto::Udp, 53, "m6s0").verdict, Some(Verdict::Drop(_))));
    }

    #[test]
    fn a_drop_after_an_accept_that_may_apply_is_only_a_maybe() {
        // The usual DHCPv6 rule: accept from link-local sources, then policy drop.
        let doc = ruleset(
            "drop",
            vec![
                rule(
                    "input",
                    3,
                    json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "fe80::", "len": 10}}}}, dport("udp", json!(547)), {"accept": null}]),
                ),
                rule(
                    "input",
                    4,
                    json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "m6*"}}, dport("tcp", json!(8080)), {"accept": null}]),
                ),
            ],
        );
        let out = evaluate(&doc, Proto::Udp, 547, "m6s0");
        assert_eq!(out.verdict, Some(Verdict::Accept));
        assert_eq!(out.maybe, vec!["inet f chain input (policy drop)".to_owned()]);
        assert_eq!(evaluate(&doc, Proto::Tcp, 8080, "m6s0").verdict, Some(Verdict::Accept), "iifname wildcard");
        assert!(matches!(evaluate(&doc, Proto::Tcp, 8080, "eth0").verdict, Some(Verdict::Drop(_))));
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
