//! `metal6 cluster render`: the cluster stage's files (kubeadm, kubelet, containerd, per-node
//! pod networks, Multus, the constellation's NADs) from an inventory, into a directory.
//!
//! The join token is read from the inventory's reference now and written only into the files
//! that need it, mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use metal6_cluster::{Emulation, Options};
use serde::Serialize;

use crate::emulate_cmd::{ShellArgs, topology};
use crate::output::{Format, write_data, write_table};

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Render kubeadm init/join, kubelet, containerd, pod networks, Multus and NADs.
    Render(RenderArgs),
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Inventory file (with a `cluster` section).
    #[arg(short, long)]
    inventory: PathBuf,
    /// Output directory (created; files in it are replaced).
    #[arg(long)]
    out: PathBuf,
    /// sha256:… of the cluster CA's public key, known after `kubeadm init`; join files are
    /// rendered only with it.
    #[arg(long, value_name = "sha256:HEX")]
    ca_cert_hash: Option<String>,
    /// Also render the constellation's NetworkAttachmentDefinitions (shell options below).
    #[arg(long)]
    emulation: bool,
    /// The worker the satellites run on (default: the first worker).
    #[arg(long, requires = "emulation")]
    emulation_node: Option<String>,
    /// Namespace of the constellation's objects.
    #[arg(long, default_value = "constellation")]
    emulation_namespace: String,
    /// MTU of the emulated links.
    #[arg(long, default_value_t = 9000)]
    emulation_mtu: u32,
    #[command(flatten)]
    shell: ShellArgs,
}

#[derive(Debug, Serialize)]
struct Written {
    path: String,
    bytes: usize,
    secret: bool,
}

pub fn run(cmd: &ClusterCmd, format: Format) -> Result<ExitCode> {
    let ClusterCmd::Render(a) = cmd;
    let (inv, _) = metal6_inventory::load(&a.inventory).map_err(|e| match e {
        metal6_inventory::LoadError::Invalid(d) => anyhow!("{}", d.render()),
        other => other.into(),
    })?;
    let cluster = inv.cluster.as_ref().ok_or_else(|| anyhow!("{} has no `cluster` section", inv.source))?;
    let token = cluster.join_token.resolve()?;
    let emu = if a.emulation { Some(topology(&a.shell)?) } else { None };
    let node = match &a.emulation_node {
        Some(n) => n.clone(),
        None => inv
            .nodes
            .iter()
            .find(|n| inv.profile_of(n).role == metal6_inventory::model::Role::Worker)
            .map(|n| n.name.clone())
            .unwrap_or_default(),
    };
    let emulation = emu.as_ref().map(|(topology, addressing)| Emulation {
        topology,
        addressing,
        node: &node,
        namespace: &a.emulation_namespace,
        mtu: a.emulation_mtu,
    });
    let opts = Options { join_token: &token, ca_cert_hash: a.ca_cert_hash.as_deref(), emulation };
    let (files, notes) = metal6_cluster::render(&inv, &opts)?;
    let mut written = Vec::new();
    for f in &files {
        let path = a.out.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Replace, never append; secrets are 0600 from the first byte.
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if f.secret { 0o600 } else { 0o644 })
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(f.text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        written.push(Written { path: f.path.clone(), bytes: f.text.len(), secret: f.secret });
    }
    let mut out = std::io::stdout().lock();
    if format == Format::Table {
        let rows: Vec<Vec<String>> = written
            .iter()
            .map(|w| {
                vec![
                    w.path.clone(),
                    w.bytes.to_string(),
                    if w.secret { "0600 (join token)".into() } else { "0644".into() },
                ]
            })
            .collect();
        write_table(&mut out, &["FILE", "BYTES", "MODE"], &rows)?;
        for n in &notes {
            writeln!(out, "note: {n}")?;
        }
    } else {
        write_data(&mut out, format, &serde_json::json!({"out": a.out, "files": written, "notes": notes}))?;
    }
    Ok(ExitCode::SUCCESS)
}
