//! The density sysctls a recipe may set, what the kernel defaults to, and whether each is
//! global or per network namespace (measured on Debian's 6.1 and the host's 6.18, shared
//! notes image-building §7). The builder only ever raises a limit: a profile value below
//! the kernel default is refused at build time, and the node applies every value
//! `max(current, wanted)` at boot, for limits the kernel sizes from memory at run time.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One value for the whole kernel (e.g. the neighbour tables, which are shared).
    Global,
    /// Each network namespace (pod) has its own; new namespaces start from the default.
    PerNetns,
}

/// Known keys: (default on Debian 12's 6.1 kernel where fixed, scope). `None` = sized by the
/// kernel at boot (memory, CPUs): checked only at run time.
pub fn known(key: &str) -> Option<(Option<i128>, Scope)> {
    use Scope::*;
    let g = |d: i128| Some((Some(d), Global));
    Some(match key {
        "net.ipv4.neigh.default.gc_thresh1" | "net.ipv6.neigh.default.gc_thresh1" => g(128)?,
        "net.ipv4.neigh.default.gc_thresh2" | "net.ipv6.neigh.default.gc_thresh2" => g(512)?,
        "net.ipv4.neigh.default.gc_thresh3" | "net.ipv6.neigh.default.gc_thresh3" => g(1024)?,
        "net.ipv6.route.max_size" => (Some(2_147_483_647), PerNetns),
        "net.core.somaxconn" => (Some(4096), PerNetns),
        "net.core.netdev_max_backlog" => g(1000)?,
        "net.core.rmem_max" | "net.core.wmem_max" => g(212_992)?,
        "net.core.rmem_default" | "net.core.wmem_default" => g(212_992)?,
        "fs.inotify.max_user_instances" => g(128)?,
        "fs.inotify.max_user_watches" => (None, Global),
        "fs.file-max" => (None, Global),
        "fs.nr_open" => g(1_048_576)?,
        "kernel.pid_max" => (None, Global),
        "kernel.threads-max" => (None, Global),
        "vm.max_map_count" => g(65_530)?,
        "kernel.keys.maxkeys" => g(200)?,
        "kernel.keys.root_maxkeys" => g(1_000_000)?,
        "user.max_net_namespaces" => (None, Global),
        "net.netfilter.nf_conntrack_max" => (None, Global),
        k if k.starts_with("net.ipv6.conf.") || k.starts_with("net.ipv4.conf.") => (None, PerNetns),
        "net.ipv4.ip_forward" => (Some(0), PerNetns),
        k if k.starts_with("net.bridge.bridge-nf-call-") => (Some(0), PerNetns),
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {key} = {value} would lower the kernel default {default}; metal6 only raises limits")]
    Lowers { key: String, value: String, default: i128 },
    #[error("sysctl {key}: `{value}` is not a number")]
    NotNumber { key: String, value: String },
    #[error("sysctl {key}: not a key metal6 knows (add it to crates/image/src/sysctl.rs with its default and scope)")]
    Unknown { key: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    pub key: String,
    pub value: String,
    pub default: Option<i128>,
    pub scope: Scope,
}

/// Checks a profile; reports every problem.
pub fn check(profile: &BTreeMap<String, serde_json::Value>) -> Result<Vec<Checked>, Vec<SysctlError>> {
    let mut ok = vec![];
    let mut errs = vec![];
    for (key, v) in profile {
        let value = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let Some((default, scope)) = known(key) else {
            errs.push(SysctlError::Unknown { key: key.clone() });
            continue;
        };
        let Ok(n) = value.trim().parse::<i128>() else {
            errs.push(SysctlError::NotNumber { key: key.clone(), value });
            continue;
        };
        if let Some(d) = default.filter(|d| n < *d) {
            errs.push(SysctlError::Lowers { key: key.clone(), value, default: d });
            continue;
        }
        ok.push(Checked { key: key.clone(), value, default, scope });
    }
    if errs.is_empty() { Ok(ok) } else { Err(errs) }
}

/// The drop-in the node applies raise-only at boot: `key = value` lines, sorted.
pub fn conf(checked: &[Checked]) -> String {
    let mut s = String::from("# metal6 image sysctl profile; applied raise-only by metal6-sysctl.service\n");
    for c in checked {
        s.push_str(&format!("{} = {}\n", c.key, c.value));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lowering_a_default_is_refused_and_every_error_is_reported() {
        let p: BTreeMap<String, serde_json::Value> = serde_json::from_value(json!({
            "net.ipv6.route.max_size": 1048576,
            "net.ipv6.neigh.default.gc_thresh3": 65536,
            "vm.max_map_count": "lots",
            "kernel.made_up": 1,
        }))
        .expect("profile");
        let errs = check(&p).expect_err("refused");
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| matches!(e, SysctlError::Lowers { default: 2_147_483_647, .. })));
        let ok: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(json!({"net.ipv6.neigh.default.gc_thresh3": 65536, "kernel.pid_max": 4194304}))
                .expect("profile");
        let c = check(&ok).expect("ok");
        assert_eq!(c[1].scope, Scope::Global);
        assert_eq!(conf(&c).lines().nth(1), Some("kernel.pid_max = 4194304"));
    }
}
