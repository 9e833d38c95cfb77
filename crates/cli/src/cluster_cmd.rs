//! `metal6 cluster render`: the cluster stage's files (kubeadm, kubelet, containerd, per-node
//! pod networks, Multus, the constellation's NADs) from an inventory, into a directory.
//!
//! The join token is read from the inventory's reference now and written only into the files
//! that need it, mode 0600.

use std::io::Write;
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
    Render(Box<RenderArgs>),
    /// Each node's cluster step (staged, joining, joined, failed), from the timeline that
    /// `metal6 serve` keeps; exit 1 while any node has failed.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Inventory file: the server is its boot server's HTTP address.
    #[arg(short, long)]
    inventory: PathBuf,
    /// Server URL instead of the inventory's, e.g. http://[2001:db8:100::10]/
    #[arg(long)]
    server: Option<String>,
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
    /// kubeadm's certificate key (64 hex digits) by reference, `env:NAME` or `file:PATH`.
    /// Default: OUT/certificate.key, made on the first render (random, mode 0600) and reused,
    /// so init and the control-plane joins agree across renders.
    #[arg(long, value_name = "REF")]
    certificate_key: Option<metal6_inventory::ident::SecretRef>,
    /// Also render the constellation's NetworkAttachmentDefinitions (shell options below).
    #[arg(long)]
    emulation: bool,
    /// The worker the satellites run on (default: the first worker).
    #[arg(long, requires = "emulation")]
    emulation_node: Option<String>,
    /// Split the constellation over these workers instead (comma-separated, in plane order;
    /// `workers`: every worker of the inventory, in file order): whole planes each, pods
    /// pinned to their worker, the ISLs between workers VXLAN between the nodes' addresses;
    /// the ISL MTU is the site MTU less 70.
    #[arg(long, value_delimiter = ',', requires = "emulation", conflicts_with = "emulation_node")]
    emulation_nodes: Vec<String>,
    /// Namespace of the constellation's objects.
    #[arg(long, default_value = "constellation")]
    emulation_namespace: String,
    /// MTU of the emulated links.
    #[arg(long, default_value_t = 9000)]
    emulation_mtu: u32,
    /// Image with the `metal6` binary for the constellation's link agent.
    #[arg(long, default_value = metal6_cluster::AGENT_IMAGE)]
    agent_image: String,
    #[command(flatten)]
    shell: ShellArgs,
}

pub fn run(cmd: &ClusterCmd, format: Format) -> Result<ExitCode> {
    match cmd {
        ClusterCmd::Render(a) => render(a, format),
        ClusterCmd::Status(a) => status(a, format),
    }
}

#[derive(Debug, Serialize)]
struct NodeCluster {
    node: String,
    role: String,
    /// The node's latest cluster phase; `-` before its first.
    cluster: String,
    mode: Option<String>,
    detail: Option<String>,
}

fn status(a: &StatusArgs, format: Format) -> Result<ExitCode> {
    let inv = crate::load_inventory(&a.inventory)?;
    let base = a.server.clone().unwrap_or_else(|| inv.site.boot_server.http_base());
    let base = if base.ends_with('/') { base } else { format!("{base}/") };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).no_proxy().build()?;
    let mut rows = Vec::new();
    for n in &inv.nodes {
        let url = format!("{base}v1/nodes/{}/timeline", n.name);
        let events: Vec<serde_json::Value> = rt
            .block_on(async { client.get(&url).send().await?.error_for_status()?.json().await })
            .with_context(|| format!("GET {url}"))?;
        let last = events.iter().rev().find(|e| e["phase"].as_str().is_some_and(|p| p.starts_with("cluster-")));
        let s = |k: &str| last.and_then(|e| e[k].as_str()).map(str::to_owned);
        rows.push(NodeCluster {
            node: n.name.clone(),
            role: serde_json::to_value(inv.profile_of(n).role)?.as_str().unwrap_or("").to_owned(),
            cluster: s("phase").unwrap_or_else(|| "-".into()),
            mode: s("mode"),
            detail: s("reason").or_else(|| s("stderr").map(|e| e.lines().last().unwrap_or("").to_owned())),
        });
    }
    let mut out = std::io::stdout().lock();
    if format == Format::Table {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.node.clone(),
                    r.role.clone(),
                    r.cluster.clone(),
                    r.mode.clone().unwrap_or_default(),
                    r.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        write_table(&mut out, &["NODE", "ROLE", "CLUSTER", "KUBEADM", "DETAIL"], &table)?;
    } else {
        write_data(&mut out, format, &rows)?;
    }
    Ok(if rows.iter().any(|r| r.cluster == "cluster-failed") { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn render(a: &RenderArgs, format: Format) -> Result<ExitCode> {
    let inv = crate::load_inventory(&a.inventory)?;
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
    let mut split = None;
    let names: Vec<String> = if a.emulation_nodes == ["workers"] {
        inv.nodes
            .iter()
            .filter(|n| inv.profile_of(n).role == metal6_inventory::model::Role::Worker)
            .map(|n| n.name.clone())
            .collect()
    } else {
        a.emulation_nodes.clone()
    };
    if let (Some((topology, _)), false) = (&emu, names.is_empty()) {
        let part = metal6_emulation::partition::Partition::new(topology, names.clone())
            .map_err(|e| anyhow!("--emulation-nodes: {e}"))?;
        let mut underlay = vec![];
        for n in &names {
            let node = inv.node(n).ok_or_else(|| anyhow!("--emulation-nodes: no node `{n}` in {}", inv.source))?;
            let plan = metal6_inventory::plan::node_plan(&inv, node);
            let addr = plan.address.split('/').next().unwrap_or_default();
            underlay.push(addr.parse::<std::net::Ipv6Addr>().map_err(|e| anyhow!("node {n}'s address {addr}: {e}"))?);
        }
        split = Some((part, underlay));
    }
    let workers = split.as_ref().map(|(partition, underlay)| metal6_cluster::Workers {
        partition,
        underlay,
        underlay_mtu: inv.site.mtu,
    });
    let emulation = emu.as_ref().map(|(topology, addressing)| Emulation {
        topology,
        addressing,
        workers,
        node: &node,
        namespace: &a.emulation_namespace,
        mtu: a.emulation_mtu,
        frr_image: metal6_cluster::FRR_IMAGE,
        agent_image: &a.agent_image,
    });
    let certificate_key = match &a.certificate_key {
        Some(r) => r.resolve()?,
        None => metal6_orchestrator::cluster::certificate_key_in(&a.out)?,
    };
    let opts = Options {
        join_token: &token,
        certificate_key: &certificate_key,
        ca_cert_hash: a.ca_cert_hash.as_deref(),
        emulation,
    };
    let (files, notes) = metal6_cluster::render(&inv, &opts)?;
    let written = metal6_orchestrator::cluster::write_files(&a.out, &files)?;
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
