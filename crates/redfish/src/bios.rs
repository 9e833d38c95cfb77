//! BIOS planning against the attribute registry: what to stage, in how many passes, and why
//! anything cannot be staged. Pure: registry JSON, current values and the desired profile in,
//! a [`Plan`] out.
//!
//! The registry's `Dependencies` decide what is writable *given other values*. Dell examples
//! from the R750 capture (BIOS 1.8.2):
//! - `SysProfile NEQ Custom ⇒ ProcCStates.ReadOnly`, and `SysProfile EQU PerfOptimized ⇒
//!   ProcCStates.CurrentValue = Disabled`: under a preset profile the BIOS forces C-states.
//! - `HttpDev1EnDis EQU Disabled ⇒ HttpDev1Uri.ReadOnly`: enabling the device and setting its
//!   URI in one job is refused (SYS410), so the URI goes into a second pass.
//!
//! Dell writes several `MapFrom` conditions without `MapTerms`; the capture only makes sense
//! with OR (`HttpDev1Ip` is read-only when the device is disabled *or* DHCP is on), so a missing
//! term is OR and only an explicit `AND` is AND.

use std::collections::BTreeMap;

use metal6_inventory::model::{AttributeValue, Inventory, Node};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The subset of a `AttributeRegistry` we need.
#[derive(Debug, Clone)]
pub struct Registry {
    pub attributes: BTreeMap<String, AttrDef>,
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttrDef {
    pub attribute_name: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub immutable: bool,
    #[serde(default)]
    pub value: Vec<AllowedValue>,
    pub lower_bound: Option<i128>,
    pub upper_bound: Option<i128>,
    pub max_length: Option<u64>,
    pub min_length: Option<u64>,
    /// A regular expression string values must match (Dell: 73 attributes on the R750, e.g.
    /// `HttpDev1Ip` takes only IPv4 literals on BIOS 1.8.2).
    pub value_expression: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllowedValue {
    pub value_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dependency {
    pub dependency_for: String,
    pub dependency: MapRule,
    #[serde(rename = "Type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapRule {
    pub map_from: Vec<MapFrom>,
    pub map_to_attribute: String,
    pub map_to_property: String,
    pub map_to_value: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapFrom {
    pub map_from_attribute: String,
    pub map_from_condition: String,
    #[serde(default)]
    pub map_from_property: Option<String>,
    pub map_from_value: Value,
    #[serde(default)]
    pub map_terms: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the BIOS attribute registry does not parse: {0}")]
pub struct RegistryError(String);

impl Registry {
    /// From the registry document (`RegistryEntries.Attributes` and `.Dependencies`).
    pub fn from_json(doc: &Value) -> Result<Registry, RegistryError> {
        let entries = doc.get("RegistryEntries").ok_or_else(|| RegistryError("no RegistryEntries".into()))?;
        let defs: Vec<AttrDef> = serde_json::from_value(entries.get("Attributes").cloned().unwrap_or_default())
            .map_err(|e| RegistryError(format!("Attributes: {e}")))?;
        let dependencies: Vec<Dependency> =
            serde_json::from_value(entries.get("Dependencies").cloned().unwrap_or(Value::Array(vec![])))
                .map_err(|e| RegistryError(format!("Dependencies: {e}")))?;
        Ok(Registry {
            attributes: defs.into_iter().map(|d| (d.attribute_name.clone(), d)).collect(),
            dependencies: dependencies.into_iter().filter(|d| d.kind.is_empty() || d.kind == "Map").collect(),
        })
    }

    /// Whether `attr` is read-only when the BIOS holds `values`, and why. The registry's own
    /// `ReadOnly` flag describes the BIOS as it is now; where `ReadOnly` rules exist, they
    /// decide for any other state.
    pub fn read_only(&self, attr: &str, values: &BTreeMap<String, Value>) -> Option<String> {
        let def = self.attributes.get(attr)?;
        if def.immutable {
            return Some("immutable".into());
        }
        let mut rules = self.rules_for(attr, "ReadOnly").peekable();
        if rules.peek().is_none() {
            return def.read_only.then(|| "read-only in the registry".into());
        }
        rules
            .find(|d| d.dependency.map_to_value == Value::Bool(true) && matches(&d.dependency, values))
            .map(|d| describe(&d.dependency))
    }

    /// A value the BIOS forces on `attr` under `values`, with the rule.
    pub fn forced(&self, attr: &str, values: &BTreeMap<String, Value>) -> Option<(Value, String)> {
        self.rules_for(attr, "CurrentValue")
            .filter(|d| matches(&d.dependency, values))
            .last()
            .map(|d| (d.dependency.map_to_value.clone(), describe(&d.dependency)))
    }

    fn rules_for<'a>(&'a self, attr: &'a str, property: &'a str) -> impl Iterator<Item = &'a Dependency> + 'a {
        self.dependencies
            .iter()
            .filter(move |d| d.dependency.map_to_attribute == attr && d.dependency.map_to_property == property)
    }

    /// A desired value that the registry refuses outright (type, enumeration, bounds).
    pub fn check_value(&self, attr: &str, v: &Value) -> Result<(), String> {
        let Some(def) = self.attributes.get(attr) else {
            let names: Vec<&str> = self.attributes.keys().map(String::as_str).collect();
            return Err(match closest(attr, &names) {
                Some(s) => format!("no such attribute in the registry (did you mean `{s}`?)"),
                None => "no such attribute in the registry".into(),
            });
        };
        match (def.kind.as_str(), v) {
            ("Enumeration", Value::String(s)) => {
                if def.value.iter().any(|a| &a.value_name == s) {
                    Ok(())
                } else {
                    let allowed: Vec<&str> = def.value.iter().map(|a| a.value_name.as_str()).collect();
                    Err(format!("`{s}` is not allowed; allowed: {}", allowed.join(", ")))
                }
            }
            ("String", Value::String(s)) => {
                let n = s.chars().count() as u64;
                if def.max_length.is_some_and(|m| n > m) || def.min_length.is_some_and(|m| n < m) {
                    return Err(format!(
                        "length {n} outside {}..={}",
                        def.min_length.unwrap_or(0),
                        def.max_length.unwrap_or(0)
                    ));
                }
                match def.value_expression.as_deref().map(regex::Regex::new) {
                    Some(Ok(re)) if !re.is_match(s) => Err(format!(
                        "`{s}` does not match the registry's ValueExpression {}{}",
                        re.as_str(),
                        if s.parse::<std::net::Ipv6Addr>().is_ok() {
                            " (this BIOS takes no IPv6 literal here; a newer BIOS may)"
                        } else {
                            ""
                        }
                    )),
                    // An expression our regex engine cannot compile is not checked here;
                    // the BMC still validates it.
                    _ => Ok(()),
                }
            }
            ("Integer", Value::Number(n)) => match n.as_i64().map(i128::from) {
                // Dell writes u64::MAX for "no upper bound": i128 holds both ends.
                Some(i) if def.lower_bound.is_some_and(|l| i < l) || def.upper_bound.is_some_and(|u| i > u) => {
                    Err(format!(
                        "{i} outside {}..={}",
                        def.lower_bound.unwrap_or(i128::MIN),
                        def.upper_bound.unwrap_or(i128::MAX)
                    ))
                }
                Some(_) => Ok(()),
                None => Err("not an integer".into()),
            },
            ("Boolean", Value::Bool(_)) => Ok(()),
            ("Password", _) => Err("password attributes are not set through profiles".into()),
            (kind, v) => Err(format!("expected a {kind} value, got {v}")),
        }
    }
}

fn matches(rule: &MapRule, values: &BTreeMap<String, Value>) -> bool {
    let mut acc: Option<bool> = None;
    for c in &rule.map_from {
        if c.map_from_property.as_deref().is_some_and(|p| p != "CurrentValue") {
            // Only CurrentValue conditions appear in Dell registries; anything else we cannot
            // evaluate, and a rule we cannot evaluate does not apply.
            return false;
        }
        let cur = values.get(&c.map_from_attribute);
        let hit = match c.map_from_condition.as_str() {
            "EQU" => cur == Some(&c.map_from_value),
            "NEQ" => cur != Some(&c.map_from_value),
            "GTR" | "GEQ" | "LSS" | "LEQ" => {
                let (Some(a), Some(b)) = (cur.and_then(Value::as_i64), c.map_from_value.as_i64()) else { return false };
                match c.map_from_condition.as_str() {
                    "GTR" => a > b,
                    "GEQ" => a >= b,
                    "LSS" => a < b,
                    _ => a <= b,
                }
            }
            _ => return false,
        };
        acc = Some(match (acc, c.map_terms.as_deref()) {
            (None, _) => hit,
            (Some(a), Some("AND")) => a && hit,
            (Some(a), _) => a || hit,
        });
    }
    acc.unwrap_or(false)
}

fn describe(rule: &MapRule) -> String {
    let conds: Vec<String> = rule
        .map_from
        .iter()
        .map(|c| format!("{} {} {}", c.map_from_attribute, c.map_from_condition, plain(&c.map_from_value)))
        .collect();
    format!("{} while {}", rule.map_to_property, conds.join(" or "))
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn closest<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (strsim::jaro_winkler(&name.to_ascii_lowercase(), &n.to_ascii_lowercase()), *n))
        .filter(|(s, _)| *s > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n)
}

/// One attribute to change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub attribute: String,
    pub current: Value,
    pub desired: Value,
}

/// Why a desired attribute is not staged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub attribute: String,
    pub value: Value,
    pub reason: String,
}

/// A desired attribute that cannot be reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refused {
    pub attribute: String,
    pub value: Value,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Each pass is one settings job and one reboot; later passes need earlier ones applied
    /// (an attribute read-only now becomes writable once a gatekeeper changed).
    pub passes: Vec<Vec<Change>>,
    /// Already at the desired value, or forced to it by another setting.
    pub unchanged: Vec<Skipped>,
    pub refused: Vec<Refused>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.passes.is_empty() && self.refused.is_empty()
    }
}

/// How many passes we plan before calling a profile unreachable.
const MAX_PASSES: usize = 3;

/// Plans `desired` against `current` under `registry`.
pub fn plan(registry: &Registry, current: &BTreeMap<String, Value>, desired: &BTreeMap<String, Value>) -> Plan {
    let mut out = Plan::default();
    let mut todo: BTreeMap<String, Value> = BTreeMap::new();
    for (attr, want) in desired {
        if let Err(reason) = registry.check_value(attr, want) {
            out.refused.push(Refused { attribute: attr.clone(), value: want.clone(), reason });
            continue;
        }
        todo.insert(attr.clone(), want.clone());
    }
    // The values the BIOS will hold after every pass, as far as we can predict them.
    let mut state = current.clone();
    for _ in 0..MAX_PASSES {
        let mut pass = Vec::new();
        let mut after = state.clone();
        for (attr, want) in &todo {
            if state.get(attr) == Some(want) {
                continue;
            }
            if registry.read_only(attr, &state).is_some() {
                continue;
            }
            pass.push(Change {
                attribute: attr.clone(),
                current: current.get(attr).cloned().unwrap_or(Value::Null),
                desired: want.clone(),
            });
            after.insert(attr.clone(), want.clone());
        }
        // What the staged values force on other attributes.
        for attr in registry.attributes.keys() {
            if let Some((v, _)) = registry.forced(attr, &after) {
                after.insert(attr.clone(), v);
            }
        }
        // A value the same pass forces away (PerfOptimized with C-states on) cannot be had:
        // out of the pass, refused below with the rule.
        pass.retain(|c| after.get(&c.attribute) == Some(&c.desired));
        for c in &pass {
            todo.remove(&c.attribute);
        }
        state = after;
        if pass.is_empty() {
            break;
        }
        out.passes.push(pass);
    }
    for (attr, want) in desired {
        if out.refused.iter().any(|r| &r.attribute == attr) || out.passes.iter().flatten().any(|c| &c.attribute == attr)
        {
            continue;
        }
        if state.get(attr) == Some(want) {
            let reason = match registry.forced(attr, &state) {
                Some((v, rule)) if &v == want && current.get(attr) != Some(want) => format!("forced by {rule}"),
                Some((v, rule)) if &v == want => format!("already set (and forced: {rule})"),
                _ => "already set".into(),
            };
            out.unchanged.push(Skipped { attribute: attr.clone(), value: want.clone(), reason });
            continue;
        }
        let reason = match (registry.forced(attr, &state), registry.read_only(attr, &state)) {
            (Some((v, rule)), _) => format!("the BIOS forces {} ({rule})", plain(&v)),
            (None, Some(rule)) => format!("stays read-only: {rule}"),
            (None, None) => "not reachable within the pass limit".into(),
        };
        out.refused.push(Refused { attribute: attr.clone(), value: want.clone(), reason });
    }
    out
}

/// The attributes a node's BIOS profile asks for, with `http_boot` spelled out as Dell
/// `HttpDev1*` attributes (IPv6, the node's boot URL unless the profile names one, and with
/// `static_address` the node's inventory address, gateway and DNS instead of DHCPv6), and
/// `HttpDev1TlsMode: OneWay` for a profile with `https: true`.
/// `None` when the node's profile has no BIOS profile.
pub fn desired_for(inv: &Inventory, node: &Node) -> Option<(String, BTreeMap<String, Value>)> {
    let name = inv.profile_of(node).bios.clone()?;
    let profile = inv.bios_profiles.get(&name)?;
    let mut out: BTreeMap<String, Value> = profile
        .attributes
        .iter()
        .map(|(k, v)| {
            let v = match v {
                AttributeValue::Bool(b) => Value::Bool(*b),
                AttributeValue::Int(i) => Value::from(*i),
                AttributeValue::Str(s) => Value::String(s.clone()),
            };
            (k.clone(), v)
        })
        .collect();
    // HTTPS boot: the HTTP device verifies the server (one-way TLS) against the certificates
    // in the system's Boot/Certificates, which the BIOS step fills from site.boot_server.https_ca.
    // A profile that stops using HTTPS takes the TLS mode back (only where it manages the
    // HTTP device itself: `http_boot`).
    if inv.profile_of(node).https {
        out.insert("HttpDev1TlsMode".into(), Value::String("OneWay".into()));
    } else if profile.http_boot.is_some() {
        out.insert("HttpDev1TlsMode".into(), Value::String("None".into()));
    }
    if let Some(hb) = &profile.http_boot {
        let uri = hb.uri.clone().unwrap_or_else(|| metal6_inventory::plan::boot_url(inv, node).url);
        for (k, v) in [
            ("HttpDev1EnDis", "Enabled"),
            ("HttpDev1Protocol", "IPv6"),
            ("HttpDev1Interface", hb.interface.as_str()),
            ("HttpDev1Uri", uri.as_str()),
        ] {
            out.insert(k.into(), Value::String(v.into()));
        }
        if hb.static_address {
            let seg = inv.segment_of(node);
            out.insert("HttpDev1DhcpEnDis".into(), "Disabled".into());
            out.insert("HttpDev1Ip".into(), node.address.to_string().into());
            out.insert("HttpDev1Mask".into(), seg.prefix.prefix_len().to_string().into());
            out.insert("HttpDev1Gateway".into(), seg.router.to_string().into());
            if let Some(dns) = inv.site.dns.first() {
                out.insert("HttpDev1DnsDhcpEnDis".into(), "Disabled".into());
                out.insert("HttpDev1Dns1".into(), dns.to_string().into());
            }
        }
    }
    Some((name, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A registry in the capture's shape with the two Dell gatekeepers of the module docs.
    fn registry() -> Registry {
        let doc = json!({"RegistryEntries": {
        "Attributes": [
            {"AttributeName": "SysProfile", "Type": "Enumeration", "ReadOnly": false,
             "Value": [{"ValueName": "PerfOptimized"}, {"ValueName": "PerfPerWattOptimizedOs"}, {"ValueName": "Custom"}]},
            {"AttributeName": "ProcCStates", "Type": "Enumeration", "ReadOnly": true,
             "Value": [{"ValueName": "Enabled"}, {"ValueName": "Disabled"}]},
            {"AttributeName": "HttpDev1EnDis", "Type": "Enumeration", "ReadOnly": false,
             "Value": [{"ValueName": "Enabled"}, {"ValueName": "Disabled"}]},
            {"AttributeName": "HttpDev1DhcpEnDis", "Type": "Enumeration", "ReadOnly": false,
             "Value": [{"ValueName": "Enabled"}, {"ValueName": "Disabled"}]},
            {"AttributeName": "HttpDev1Uri", "Type": "String", "ReadOnly": false, "MaxLength": 20},
            {"AttributeName": "HttpDev1Ip", "Type": "String", "ReadOnly": false, "MaxLength": 39},
            {"AttributeName": "HttpDev1VlanId", "Type": "Integer", "ReadOnly": true, "LowerBound": 1, "UpperBound": 4094}
        ],
        "Dependencies": [
            {"DependencyFor": "ProcCStates", "Type": "Map", "Dependency": {"MapFrom": [
                {"MapFromAttribute": "SysProfile", "MapFromCondition": "EQU", "MapFromProperty": "CurrentValue", "MapFromValue": "PerfOptimized"}],
                "MapToAttribute": "ProcCStates", "MapToProperty": "CurrentValue", "MapToValue": "Disabled"}},
            {"DependencyFor": "ProcCStates", "Type": "Map", "Dependency": {"MapFrom": [
                {"MapFromAttribute": "SysProfile", "MapFromCondition": "EQU", "MapFromProperty": "CurrentValue", "MapFromValue": "PerfPerWattOptimizedOs"}],
                "MapToAttribute": "ProcCStates", "MapToProperty": "CurrentValue", "MapToValue": "Enabled"}},
            {"DependencyFor": "ProcCStates", "Type": "Map", "Dependency": {"MapFrom": [
                {"MapFromAttribute": "SysProfile", "MapFromCondition": "NEQ", "MapFromProperty": "CurrentValue", "MapFromValue": "Custom"}],
                "MapToAttribute": "ProcCStates", "MapToProperty": "ReadOnly", "MapToValue": true}},
            {"DependencyFor": "HttpDev1Uri", "Type": "Map", "Dependency": {"MapFrom": [
                {"MapFromAttribute": "HttpDev1EnDis", "MapFromCondition": "EQU", "MapFromProperty": "CurrentValue", "MapFromValue": "Disabled"}],
                "MapToAttribute": "HttpDev1Uri", "MapToProperty": "ReadOnly", "MapToValue": true}},
            {"DependencyFor": "HttpDev1Ip", "Type": "Map", "Dependency": {"MapFrom": [
                {"MapFromAttribute": "HttpDev1EnDis", "MapFromCondition": "EQU", "MapFromProperty": "CurrentValue", "MapFromValue": "Disabled"},
                {"MapFromAttribute": "HttpDev1DhcpEnDis", "MapFromCondition": "EQU", "MapFromProperty": "CurrentValue", "MapFromValue": "Enabled"}],
                "MapToAttribute": "HttpDev1Ip", "MapToProperty": "ReadOnly", "MapToValue": true}}
        ]}});
        Registry::from_json(&doc).expect("registry")
    }

    fn values(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).expect("map")
    }

    #[test]
    fn gatekeeper_first_then_the_dependent_attribute() {
        let cur = values(
            json!({"HttpDev1EnDis": "Disabled", "HttpDev1Uri": "", "SysProfile": "PerfOptimized", "ProcCStates": "Disabled"}),
        );
        let want = values(json!({"HttpDev1EnDis": "Enabled", "HttpDev1Uri": "http://[::1]/a"}));
        let p = plan(&registry(), &cur, &want);
        assert_eq!(p.passes.len(), 2, "{p:?}");
        assert_eq!(p.passes[0][0].attribute, "HttpDev1EnDis");
        assert_eq!(p.passes[1][0].attribute, "HttpDev1Uri");
        assert!(p.refused.is_empty());
    }

    #[test]
    fn preset_profile_forces_c_states() {
        let r = registry();
        let cur = values(json!({"SysProfile": "PerfPerWattOptimizedOs", "ProcCStates": "Enabled"}));
        // ProcCStates=Disabled comes with PerfOptimized: one pass, ProcCStates not sent.
        let p = plan(&r, &cur, &values(json!({"SysProfile": "PerfOptimized", "ProcCStates": "Disabled"})));
        assert_eq!(
            p.passes,
            vec![vec![Change {
                attribute: "SysProfile".into(),
                current: json!("PerfPerWattOptimizedOs"),
                desired: json!("PerfOptimized")
            }]]
        );
        assert_eq!(p.unchanged[0].attribute, "ProcCStates");
        assert!(p.unchanged[0].reason.contains("forced by CurrentValue while SysProfile EQU PerfOptimized"), "{p:?}");
        // C-states on with PerfOptimized cannot be had.
        let p = plan(&r, &cur, &values(json!({"SysProfile": "PerfOptimized", "ProcCStates": "Enabled"})));
        assert_eq!(p.refused.len(), 1, "{p:?}");
        assert!(p.refused[0].reason.contains("forces Disabled"), "{p:?}");
        // Custom unlocks it: SysProfile first, C-states in the second pass.
        let p = plan(&r, &cur, &values(json!({"SysProfile": "Custom", "ProcCStates": "Disabled"})));
        assert_eq!(p.passes.len(), 2, "{p:?}");
        assert_eq!(p.passes[1][0].attribute, "ProcCStates");
    }

    #[test]
    fn a_value_the_same_pass_forces_away_is_refused() {
        let cur = values(json!({"SysProfile": "Custom", "ProcCStates": "Disabled"}));
        let p = plan(&registry(), &cur, &values(json!({"SysProfile": "PerfOptimized", "ProcCStates": "Enabled"})));
        assert_eq!(p.passes.len(), 1, "{p:?}");
        assert_eq!(p.passes[0][0].attribute, "SysProfile");
        assert_eq!(p.refused.len(), 1, "{p:?}");
        assert!(p.refused[0].reason.contains("forces Disabled"), "{p:?}");
    }

    #[test]
    fn conditions_without_terms_are_or() {
        let r = registry();
        let on_dhcp = values(json!({"HttpDev1EnDis": "Enabled", "HttpDev1DhcpEnDis": "Enabled"}));
        assert!(r.read_only("HttpDev1Ip", &on_dhcp).is_some(), "DHCP on alone makes the address read-only");
        let static_ = values(json!({"HttpDev1EnDis": "Enabled", "HttpDev1DhcpEnDis": "Disabled"}));
        assert!(r.read_only("HttpDev1Ip", &static_).is_none());
        // No rule lifts VlanId's static ReadOnly.
        assert!(r.read_only("HttpDev1VlanId", &static_).is_some());
    }

    #[test]
    fn values_are_checked_against_the_registry() {
        let r = registry();
        let p = plan(
            &r,
            &BTreeMap::new(),
            &values(
                json!({"SysProfle": "Custom", "SysProfile": "Fast", "HttpDev1Uri": "http://[2001:db8::1]/long/path", "HttpDev1VlanId": 5000}),
            ),
        );
        let reasons: BTreeMap<&str, &str> =
            p.refused.iter().map(|r| (r.attribute.as_str(), r.reason.as_str())).collect();
        assert!(reasons["SysProfle"].contains("did you mean `SysProfile`"), "{reasons:?}");
        assert!(reasons["SysProfile"].contains("allowed: PerfOptimized, PerfPerWattOptimizedOs, Custom"));
        assert!(reasons["HttpDev1Uri"].contains("length"));
        assert!(reasons["HttpDev1VlanId"].contains("outside 1..=4094"));
        assert!(p.passes.is_empty());
    }

    #[test]
    fn nothing_to_do_is_a_noop() {
        let cur = values(json!({"SysProfile": "PerfOptimized", "ProcCStates": "Disabled"}));
        let p = plan(&registry(), &cur, &values(json!({"SysProfile": "PerfOptimized"})));
        assert!(p.is_noop() && p.unchanged.len() == 1, "{p:?}");
    }
}
