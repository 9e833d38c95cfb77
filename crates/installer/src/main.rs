//! `metal6-installer`: the program inside the installer UKI and the installed system.
//!
//! - `install` (what the installer initramfs runs): DHCPv6 for the node's inventory address,
//!   the plan from `metal6 serve`, the image streamed to disk and verified, the partition
//!   table grown, network/hostname/SSH keys written into the installed root, the disk made
//!   bootable last, each phase reported, reboot. See `install` for the phases and `disk` for
//!   the invariant that keeps a half-written or unconfigured disk unbootable.
//! - `ready` (the installed system's `metal6-ready.service`): raise-only sysctls and the
//!   `ready` event with addresses and sysctl values.
//!
//! It must not depend on tokio or the server crates: it runs in a minimal initramfs and
//! talks to the server only over HTTP and DHCPv6.

mod cluster;
mod cmdline;
mod coldplug;
mod console;
mod dhcp;
mod disk;
mod gpt;
mod http;
mod install;
mod net;
mod plan;
mod ready;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "metal6-installer", version, about = "metal6's on-node installer and first-boot agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install this node (reads metal6.* from the kernel command line; DHCPv6 tells the rest).
    Install {
        /// Kernel command line to read instead of /proc/cmdline.
        #[arg(long)]
        cmdline: Option<String>,
    },
    /// Load the drivers for the devices present (the installer initramfs has no udev).
    Coldplug {
        #[arg(long, default_value = "/etc/metal6/modules.json")]
        index: PathBuf,
        #[arg(long, default_value = "/lib/modules")]
        dir: PathBuf,
    },
    /// Apply a `key = value` sysctl file raise-only (the image's profile, at boot).
    Sysctl { file: PathBuf },
    /// Fetch this node's cluster files from the server and run kubeadm init/join when kubeadm
    /// is installed (the metal6-cluster.service first-boot unit).
    Cluster {
        #[arg(long, default_value = "/etc/metal6/node.json")]
        node_file: PathBuf,
        /// Where the files go (the installed system's root; tests use a directory).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Seconds to keep retrying an unreachable server.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
    /// Report `ready` from the installed system.
    Ready {
        #[arg(long, default_value = "/etc/metal6/node.json")]
        node_file: PathBuf,
        /// Seconds to wait for the address and the server.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Install { cmdline } => {
            let text = cmdline.unwrap_or_else(|| std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
            install::run(cmdline::parse(text.split_whitespace()))
        }
        Cmd::Coldplug { index, dir } => coldplug::run(&index, &dir),
        Cmd::Sysctl { file } => ready::apply_file(&file),
        Cmd::Ready { node_file, wait } => ready::run(&node_file, Duration::from_secs(wait)),
        Cmd::Cluster { node_file, root, wait } => cluster::run(&node_file, &root, Duration::from_secs(wait)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            console::line(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
