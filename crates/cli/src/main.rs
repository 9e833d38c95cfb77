//! `metal6`: the operator's command. Parses arguments, calls the library crates, formats their
//! results. It owns no domain logic: what a command decides lives in a library crate where it
//! can be tested without a terminal.

mod apply_cmd;
mod bmc_cmd;
mod cluster_cmd;
mod db_cmd;
mod doctor_cmd;
mod emulate_cmd;
mod image_cmd;
mod inventory_cmd;
mod lab_cmd;
mod output;
mod probe_cmd;
mod serve_cmd;
mod status_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::output::Format;

/// Bare metal to Kubernetes over IPv6-only networks.
#[derive(Debug, Parser)]
#[command(name = "metal6", version, propagate_version = true)]
pub struct Cli {
    /// Output format for commands that print data.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check, show and describe inventory files.
    #[command(subcommand)]
    Inventory(inventory_cmd::InventoryCmd),
    /// The satellite-constellation workload: topology, addressing, pictures.
    #[command(subcommand)]
    Emulate(emulate_cmd::EmulateCmd),
    /// Build node images and the installer UKI from recipes.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// A QEMU lab node netbooted over IPv6 by metal6 serve, followed until ready.
    #[command(subcommand)]
    Lab(lab_cmd::LabCmd),
    /// Talk to nodes' BMCs (Redfish): inventory, power, one-time boot, BIOS, firmware.
    #[command(subcommand)]
    Bmc(bmc_cmd::BmcCmd),
    /// The Kubernetes stage: kubeadm (IPv6), kubelet, containerd, Multus, NADs.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCmd),
    /// Run the netboot services (DHCPv6, Router Advertisements) for an inventory.
    Serve(serve_cmd::ServeArgs),
    /// What `apply` would do to each node and why (save it with --out to apply exactly it).
    Plan(apply_cmd::PlanArgs),
    /// Take nodes from power-off to installed and ready through their BMCs; resumable.
    Apply(apply_cmd::ApplyArgs),
    /// Find what will break a netboot before anything is powered on: this host, the
    /// provisioning link, the BMCs and the artifacts against the inventory.
    Doctor(doctor_cmd::DoctorArgs),
    /// Every node's phase, from a running `metal6 serve` (a live table with --watch).
    Status(status_cmd::StatusArgs),
    /// DHCPv6 diagnostics.
    #[command(subcommand)]
    Dhcp6(Dhcp6Cmd),
    /// The PostgreSQL database several servers share (`--state postgres://…`): schema
    /// migrations and status.
    #[command(subcommand)]
    Db(db_cmd::DbCmd),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum Dhcp6Cmd {
    /// Ask a DHCPv6 server what a given kind of client gets (firmware, iPXE, OS; direct or relayed).
    Probe(probe_cmd::ProbeArgs),
}

/// A valid inventory, or its first diagnostics rendered as the error (warnings are dropped: the
/// commands that show them, `inventory check` and `serve`, load on their own).
pub(crate) fn load_inventory(path: &std::path::Path) -> anyhow::Result<metal6_inventory::model::Inventory> {
    match metal6_inventory::load_with(path, metal6_inventory::Limits::DEFAULT) {
        Ok((inv, _)) => Ok(inv),
        Err(metal6_inventory::LoadError::Invalid(d)) => Err(anyhow::anyhow!("{}", inventory_cmd::render_elsewhere(&d))),
        Err(other) => Err(other.into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any reqwest client exists (`status` has one too): see `init_tls`.
    metal6_redfish::init_tls();
    let result = match &cli.command {
        Command::Inventory(cmd) => inventory_cmd::run(cmd, cli.output),
        Command::Emulate(cmd) => emulate_cmd::run(cmd, cli.output),
        Command::Image(cmd) => image_cmd::run(cmd, cli.output),
        Command::Lab(cmd) => lab_cmd::run_cmd(cmd),
        Command::Bmc(cmd) => bmc_cmd::run(cmd, cli.output),
        Command::Cluster(cmd) => cluster_cmd::run(cmd, cli.output),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Status(args) => status_cmd::run(args, cli.output),
        Command::Plan(args) => apply_cmd::plan(args, cli.output),
        Command::Apply(args) => apply_cmd::apply(args, cli.output),
        Command::Doctor(args) => doctor_cmd::run(args, cli.output),
        Command::Dhcp6(Dhcp6Cmd::Probe(args)) => probe_cmd::run(args),
        Command::Db(cmd) => db_cmd::run(cmd, cli.output),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "metal6", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(2)
        }
    }
}
