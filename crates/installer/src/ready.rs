//! `metal6-installer ready`: the installed system's first word to its server, on every boot
//! (`metal6-ready.service`). Applies the node's sysctl profile **raise-only** (a value below
//! the running kernel's is left alone and reported), waits until the inventory address is
//! usable, and posts `ready` with the addresses the kernel holds and the sysctl values it
//! reads back — what the end-to-end test compares with the inventory and the recipe.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::console::{say, uptime};
use crate::http::{self, Reporter};
use crate::net;
use crate::plan::NodeFile;

fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The value to write so that nothing is lowered: field-wise max for numeric values (also
/// multi-field ones like `net.ipv4.tcp_rmem`); `None` when the current value already meets it.
/// Non-numeric values are written as asked.
pub fn raised(current: &str, wanted: &str) -> Option<String> {
    let nums = |s: &str| s.split_whitespace().map(str::parse::<i128>).collect::<Result<Vec<_>, _>>();
    match (nums(current), nums(wanted)) {
        (Ok(c), Ok(w)) if c.len() == w.len() && !c.is_empty() => {
            let m: Vec<i128> = c.iter().zip(&w).map(|(a, b)| *a.max(b)).collect();
            (m != c).then(|| m.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
        }
        _ => (current.split_whitespace().ne(wanted.split_whitespace())).then(|| wanted.to_owned()),
    }
}

/// Applies `profile` raise-only; returns what each key reads now, and the keys left lower.
pub fn apply_sysctls(profile: &BTreeMap<String, Value>) -> (BTreeMap<String, String>, Vec<String>) {
    let mut read = BTreeMap::new();
    let mut kept_higher = vec![];
    for (k, v) in profile {
        let path = proc_path(k);
        let Ok(cur) = std::fs::read_to_string(&path) else {
            say!("sysctl {k}: not in this kernel");
            continue;
        };
        let want = as_text(v);
        match raised(cur.trim(), &want) {
            Some(new) => {
                if let Err(e) = std::fs::write(&path, &new) {
                    say!("sysctl {k} = {new}: {e}");
                }
            }
            None if raised(&want, cur.trim()).is_some() => kept_higher.push(k.clone()),
            None => {}
        }
        let now = std::fs::read_to_string(&path).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
        say!("sysctl {k} = {now}");
        read.insert(k.clone(), now);
    }
    (read, kept_higher)
}

/// `key = value` lines (sysctl.d syntax: `#` and `;` comments, a leading `-` ignored).
pub fn parse_conf(text: &str) -> BTreeMap<String, Value> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().trim_start_matches('-').to_owned(), Value::String(v.trim().to_owned())))
        .collect()
}

/// Applies a sysctl file raise-only.
pub fn apply_file(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, kept_higher) = apply_sysctls(&parse_conf(&text));
    for k in kept_higher {
        say!("sysctl {k}: the kernel's value is higher than the profile's; kept");
    }
    Ok(())
}

pub fn run(node_file: &Path, wait: Duration) -> Result<()> {
    let node: NodeFile = serde_json::from_str(
        &std::fs::read_to_string(node_file).with_context(|| format!("reading {}", node_file.display()))?,
    )
    .with_context(|| format!("parsing {}", node_file.display()))?;
    let (sysctl, kept_higher) = apply_sysctls(&node.sysctl);
    // The image's own drop-in (/etc/sysctl.d) was applied by systemd-sysctl; report it too.
    let image_sysctl = image_sysctls(Path::new("/etc/metal6/image-sysctl.conf"));
    let deadline = Instant::now() + wait;
    let addrs = loop {
        let addrs = net::addresses(0);
        if addrs.iter().any(|a| a.address == node.address && !a.tentative) {
            break addrs;
        }
        if Instant::now() >= deadline {
            bail!("{} is not configured on any interface after {wait:?}: {addrs:?}", node.address);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let event = json!({
        "phase": "ready",
        "addresses": addrs.iter().filter(|a| a.scope != net::Scope::Host).collect::<Vec<_>>(),
        "sysctl": sysctl,
        "image_sysctl": image_sysctl,
        "sysctl_kept_higher": kept_higher,
        "kernel": kernel,
        "uptime_s": uptime(),
    });
    let reporter = Reporter::new(http::agent(), &node.events_url, Some(&node.token));
    let deadline = Instant::now() + wait;
    while !reporter.post(&event) {
        if Instant::now() >= deadline {
            bail!("the server did not take the ready event");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    say!("reported ready: {} up {:.1} s", node.address, uptime());
    Ok(())
}

/// `key = value` lines of the image's sysctl drop-in, with what the kernel reads now.
fn image_sysctls(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_conf(&text)
        .into_keys()
        .filter_map(|k| {
            let now = std::fs::read_to_string(proc_path(&k)).ok()?;
            Some((k, now.split_whitespace().collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{parse_conf, raised};

    #[test]
    fn conf_files_parse_like_sysctl_d() {
        let c = parse_conf("# c\n; c\nkernel.pid_max = 4194304\n-net.core.somaxconn=8192\n\nbad line\n");
        assert_eq!(c.len(), 2);
        assert_eq!(c["net.core.somaxconn"], "8192");
    }

    #[test]
    fn sysctls_are_only_raised() {
        assert_eq!(raised("1024", "8192").as_deref(), Some("8192"));
        assert_eq!(raised("2147483647", "1048576"), None, "never lower net.ipv6.route.max_size");
        assert_eq!(raised("4096 131072 6291456", "4096 87380 16777216").as_deref(), Some("4096 131072 16777216"));
        assert_eq!(raised("cubic", "bbr").as_deref(), Some("bbr"));
        assert_eq!(raised("bbr", "bbr"), None);
        assert_eq!(raised("1 2", "3").as_deref(), Some("3"), "shape mismatch: written as asked");
    }
}
