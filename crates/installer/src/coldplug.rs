//! Loading only the drivers this machine needs, before anything else runs: the installer
//! initramfs has no udev, so the installer matches the `modalias` of every device in sysfs
//! against the aliases of the modules the image builder put in (`/etc/metal6/modules.json`,
//! from the kernel's modules.alias), and loads the matches with their dependencies. Passes
//! repeat until nothing new loads (virtio devices appear only once virtio_pci is loaded).
//! Modules the recipe names that drive no device (ext4, crc32c) are always loaded;
//! dependencies only with what needs them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::console::say;

#[derive(Debug, Clone, Deserialize)]
pub struct Module {
    pub name: String,
    /// Names of the modules it needs, loaded before it.
    #[serde(default)]
    pub deps: Vec<String>,
    /// modules.alias patterns (`pci:v00008086d00001572sv*…`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Named in the recipe (not only pulled in as a dependency).
    #[serde(default)]
    pub named: bool,
}

const DEVICE_BUSES: &[&str] = &["pci:", "virtio:", "usb:", "acpi:", "of:", "platform:", "scsi:", "hid:", "nvme:"];

fn is_device_driver(m: &Module) -> bool {
    m.aliases.iter().any(|a| DEVICE_BUSES.iter().any(|b| a.starts_with(b)))
}

/// fnmatch(3) without flags: `*`, `?`, `[set]` / `[!set]` with ranges.
pub fn glob(pat: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    fn m(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| m(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && m(&p[1..], &t[1..]),
            Some('[') => {
                let Some(close) = p.iter().skip(2).position(|&c| c == ']').map(|i| i + 2) else {
                    return t.first() == Some(&'[') && m(&p[1..], &t[1..]);
                };
                let Some(&c) = t.first() else { return false };
                let (neg, set) = if p[1] == '!' || p[1] == '^' { (true, &p[2..close]) } else { (false, &p[1..close]) };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && m(&p[close + 1..], &t[1..])
            }
            Some(&c) => t.first() == Some(&c) && m(&p[1..], &t[1..]),
        }
    }
    m(&p, &t)
}

/// Which modules to load for these device aliases, in `index` order (dependencies first).
pub fn wanted(index: &[Module], modaliases: &[String], loaded: &BTreeSet<String>) -> Vec<String> {
    fn walk<'a>(m: &'a Module, index: &'a [Module], want: &mut BTreeSet<&'a str>) {
        if want.insert(&m.name) {
            for d in &m.deps {
                if let Some(dm) = index.iter().find(|x| &x.name == d) {
                    walk(dm, index, want);
                }
            }
        }
    }
    let mut want: BTreeSet<&str> = BTreeSet::new();
    for m in index {
        if (m.named && !is_device_driver(m)) || m.aliases.iter().any(|a| modaliases.iter().any(|d| glob(a, d))) {
            walk(m, index, &mut want);
        }
    }
    index
        .iter()
        .filter(|m| want.contains(m.name.as_str()) && !loaded.contains(&m.name))
        .map(|m| m.name.clone())
        .collect()
}

fn modaliases(sys: &Path) -> Vec<String> {
    let mut out = vec![];
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else { return out };
    for bus in buses.flatten() {
        let Ok(devs) = std::fs::read_dir(bus.path().join("devices")) else { continue };
        for d in devs.flatten() {
            if let Ok(a) = std::fs::read_to_string(d.path().join("modalias")) {
                out.push(a.trim().to_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub fn run(index_path: &Path, module_dir: &Path) -> Result<()> {
    let index: Vec<Module> = serde_json::from_str(
        &std::fs::read_to_string(index_path).with_context(|| format!("reading {}", index_path.display()))?,
    )
    .context("parsing the module index")?;
    let mut loaded = BTreeSet::new();
    for _pass in 0..4 {
        let todo = wanted(&index, &modaliases(Path::new("/sys")), &loaded);
        if todo.is_empty() {
            break;
        }
        for name in todo {
            let path = module_dir.join(format!("{name}.ko"));
            match Command::new("insmod").arg(&path).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    if !err.contains("File exists") {
                        say!("insmod {name}: {}", err.trim());
                    }
                }
                Err(e) => say!("insmod {name}: {e}"),
            }
            loaded.insert(name);
        }
    }
    say!("drivers loaded: {}", loaded.iter().cloned().collect::<Vec<_>>().join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        assert!(glob("pci:v00001AF4d00001000sv*sd*bc*sc*i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"));
        assert!(!glob("pci:v00008086d00001572sv*", "pci:v00001AF4d00001000sv00001AF4"));
        assert!(glob("virtio:d00000001v*", "virtio:d00000001v00001AF4"));
        assert!(glob("a?c[0-9][!x]", "abc5y") && !glob("a?c[0-9][!x]", "abc5x"));
        assert!(glob("*", "") && !glob("?", ""));
    }

    #[test]
    fn only_present_devices_and_alias_less_modules_load_dependencies_first() {
        let m = |n: &str, d: &[&str], a: &[&str]| Module {
            name: n.into(),
            deps: d.iter().map(|s| (*s).to_owned()).collect(),
            aliases: a.iter().map(|s| (*s).to_owned()).collect(),
            named: !["failover", "net_failover", "mlxfw"].contains(&n),
        };
        let index = vec![
            m("failover", &[], &[]),
            m("net_failover", &["failover"], &[]),
            m("virtio_pci", &[], &["pci:v00001AF4d*sv*sd*bc*sc*i*"]),
            m("virtio_net", &["net_failover"], &["virtio:d00000001v*"]),
            m("mlxfw", &[], &[]),
            m("mlx5_core", &["mlxfw"], &["pci:v000015B3d00001017sv*sd*bc*sc*i*"]),
            m("ext4", &[], &["fs-ext4"]),
        ];
        let pci = vec!["pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00".to_owned()];
        let first = wanted(&index, &pci, &BTreeSet::new());
        assert_eq!(first, ["virtio_pci", "ext4"], "no mlx5 (nor its mlxfw), no virtio_net yet");
        let loaded: BTreeSet<String> = first.into_iter().collect();
        let mut now = pci.clone();
        now.push("virtio:d00000001v00001AF4".into());
        assert_eq!(wanted(&index, &now, &loaded), ["failover", "net_failover", "virtio_net"]);
    }
}
