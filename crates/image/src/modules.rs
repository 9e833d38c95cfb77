//! Kernel modules for the installer initramfs: the closure of the wanted modules over the
//! kernel's `modules.dep`, in load order (dependencies first), so `/init` can `insmod` them
//! without depmod or modprobe.

use std::collections::{BTreeMap, BTreeSet};

/// `modules.dep`: `kernel/a/b.ko: kernel/c.ko kernel/d.ko` (paths relative to the module dir,
/// possibly compressed `.ko.xz`/`.ko.zst`). Returns module name → (path, deps' paths).
pub fn parse_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let (m, deps) = l.split_once(':')?;
            Some((name_of(m), (m.trim().to_owned(), deps.split_whitespace().map(str::to_owned).collect())))
        })
        .collect()
}

/// `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net` (dashes as underscores, as the kernel does).
pub fn name_of(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or("");
    let base = file.split(".ko").next().unwrap_or(file);
    base.replace('-', "_")
}

/// The patterns of `modules.alias` (`alias PATTERN MODULE`) for one module.
pub fn aliases_of(alias_file: &str, module: &str) -> Vec<String> {
    alias_file
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("alias")).then_some(())?;
            let (pat, m) = (f.next()?, f.next()?);
            (m.replace('-', "_") == module).then(|| pat.to_owned())
        })
        .collect()
}

/// Module paths to load, dependencies first; the names not found (built into the kernel, or
/// absent) come back separately.
pub fn closure(dep: &BTreeMap<String, (String, Vec<String>)>, wanted: &[String]) -> (Vec<String>, Vec<String>) {
    let by_path: BTreeMap<&str, &Vec<String>> = dep.values().map(|(p, d)| (p.as_str(), d)).collect();
    let mut order = vec![];
    let mut seen = BTreeSet::new();
    let mut missing = vec![];
    fn visit<'a>(
        p: &'a str,
        by_path: &BTreeMap<&'a str, &'a Vec<String>>,
        seen: &mut BTreeSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(p) {
            return;
        }
        if let Some(deps) = by_path.get(p) {
            // modules.dep lists deps so that the last is loaded first.
            for d in deps.iter().rev() {
                if let Some((k, _)) = by_path.get_key_value(d.as_str()) {
                    visit(k, by_path, seen, order);
                }
            }
        }
        order.push(p.to_owned());
    }
    for w in wanted {
        match dep.get(&w.replace('-', "_")) {
            Some((p, _)) => {
                if let Some((k, _)) = by_path.get_key_value(p.as_str()) {
                    visit(k, &by_path, &mut seen, &mut order);
                }
            }
            None => missing.push(w.clone()),
        }
    }
    (order, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first_and_once() {
        let dep = parse_dep(
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
             kernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\n\
             kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz\n\
             kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz\n\
             kernel/net/core/failover.ko.xz:\n",
        );
        let (order, missing) =
            closure(&dep, &["virtio_net".into(), "ext4".into(), "crc16".into(), "virtio_blk".into()]);
        assert_eq!(missing, vec!["virtio_blk".to_owned()], "built in or absent");
        let pos = |n: &str| order.iter().position(|p| name_of(p) == n).expect(n);
        assert!(pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"));
        assert!(pos("jbd2") < pos("ext4") && pos("crc16") < pos("ext4"));
        assert_eq!(order.len(), 7);
    }

    #[test]
    fn aliases_are_read_per_module() {
        let text = "# comment\nalias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_net\nalias virtio:d00000001v* virtio_net\n\
                    alias fs-ext4 ext4\nalias pci:v00008086d* e1000e\n";
        assert_eq!(aliases_of(text, "virtio_net").len(), 2);
        assert_eq!(aliases_of(text, "ext4"), vec!["fs-ext4".to_owned()]);
    }
}
