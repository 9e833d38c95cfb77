//! The installer plan (`GET /v1/nodes/NAME/plan.json`, rendered by metal6-render from
//! `templates/installer-plan.json`), and what the installer writes into the installed system.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub node: String,
    pub hostname: String,
    pub image: Image,
    pub disk: Disk,
    pub network: Network,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub sysctl: BTreeMap<String, serde_json::Value>,
    pub report: Report,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    pub url: String,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disk {
    Path(String),
    Serial(String),
    MinSize(u64),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Network {
    pub mac: String,
    pub address: Ipv6Addr,
    pub prefix_len: u8,
    // Gateway, DNS, MTU: the installed system gets them from the network unit the server
    // renders (one source), not from here.
}

/// The plan format this installer understands.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub events_url: String,
    pub token: String,
}

/// What the installed system's first-boot agent (`metal6-installer ready`) reads:
/// `/etc/metal6/node.json`, mode 0600 (it holds the node's token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeFile {
    pub node: String,
    pub address: Ipv6Addr,
    pub events_url: String,
    pub token: String,
    /// The inventory's sysctl profile for this node; applied raise-only at boot.
    pub sysctl: BTreeMap<String, serde_json::Value>,
}

fn write(root: &Path, rel: &str, body: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Writes the node's identity into the installed system mounted at `root`: its network unit
/// (rendered by the server from the inventory), hostname, hosts, SSH keys and node file.
pub fn configure_root(root: &Path, plan: &Plan, network_unit: &str) -> Result<()> {
    write(root, "etc/systemd/network/10-metal6-boot.network", network_unit, 0o644)?;
    let short = plan.node.as_str();
    write(root, "etc/hostname", &format!("{short}\n"), 0o644)?;
    write(
        root,
        "etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{} {short}\n",
            plan.network.address, plan.hostname
        ),
        0o644,
    )?;
    if !plan.ssh_authorized_keys.is_empty() {
        let mut keys = plan.ssh_authorized_keys.join("\n");
        keys.push('\n');
        std::fs::create_dir_all(root.join("root/.ssh")).context("creating /root/.ssh")?;
        std::fs::set_permissions(root.join("root/.ssh"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .context("chmod /root/.ssh")?;
        write(root, "root/.ssh/authorized_keys", &keys, 0o600)?;
    }
    let node = NodeFile {
        node: plan.node.clone(),
        address: plan.network.address,
        events_url: plan.report.events_url.clone(),
        token: plan.report.token.clone(),
        sysctl: plan.sysctl.clone(),
    };
    write(root, "etc/metal6/node.json", &(serde_json::to_string_pretty(&node)? + "\n"), 0o600)?;
    // The installed system reports to the same server with the same trust: the CA this
    // installer was built with, if any (HTTPS nodes).
    if let Ok(pem) = std::fs::read_to_string(crate::http::CA_PATH) {
        write(root, "etc/metal6/ca.pem", &pem, 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden plan of lab-node-1 (tests/golden/render), as the server renders it.
    fn golden() -> Plan {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/golden/render/lab-node-1.plan.json"
        ))
        .expect("golden plan");
        serde_json::from_str(&text).expect("the installer reads what the server renders")
    }

    #[test]
    fn reads_the_rendered_plan() {
        let p = golden();
        assert_eq!(p.node, "lab-node-1");
        assert_eq!(p.disk, Disk::Path("/dev/vda".into()));
        assert_eq!(p.network.address, "fd00:6d:1::100".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(p.sysctl["kernel.pid_max"], 4_194_304);
    }

    #[test]
    fn writes_identity_files_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let p = golden();
        configure_root(dir.path(), &p, "[Match]\nMACAddress=52:54:00:6d:00:01\n").expect("configure");
        let r = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
        assert_eq!(r("etc/hostname"), "lab-node-1\n");
        assert!(r("etc/hosts").contains("fd00:6d:1::100\tlab-node-1.lab.metal6.test lab-node-1"));
        assert!(r("etc/systemd/network/10-metal6-boot.network").starts_with("[Match]"));
        let node: NodeFile = serde_json::from_str(&r("etc/metal6/node.json")).expect("node file");
        assert_eq!(node.token, p.report.token);
        let mode = |f: &str| std::fs::metadata(dir.path().join(f)).expect(f).permissions().mode() & 0o777;
        assert_eq!(mode("etc/metal6/node.json"), 0o600);
        assert_eq!(mode("root/.ssh/authorized_keys"), 0o600);
        assert_eq!(mode("root/.ssh"), 0o700);
    }
}
