//! `metal6 doctor`: flags, and printing `metal6-doctor`'s report. `apply` runs the same checks
//! first through [`preflight`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use metal6_doctor::{Options, Report, Status};
use metal6_inventory::model::Inventory;

use crate::apply_cmd::BmcAccess;
use crate::output::{Format, write_data, write_table};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Inventory file.
    #[arg(short, long)]
    inventory: PathBuf,
    /// Which nodes the BMC and artifact checks cover: `all`, names separated by commas, or
    /// `LABEL=VALUE`.
    #[arg(long, default_value = "all")]
    nodes: String,
    /// Probe the provisioning link: Router Solicitation, a netbooting client's Solicit, and a
    /// Neighbor Solicitation for the boot server's address (needs root; bounded by --probe-time).
    #[arg(long)]
    network: bool,
    /// Seconds each link probe listens for answers.
    #[arg(long, default_value_t = 3.0)]
    probe_time: f64,
    /// Check the nodes' BMCs (Redfish): TLS, credentials, identity, NICs, firmware gates, BIOS,
    /// jobs. Read-only.
    #[arg(long)]
    bmc: bool,
    /// Check the artifact root `metal6 serve --artifacts` serves: manifests, digests, boot files.
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
    /// Skip the checks of this host (run doctor elsewhere than on the boot server).
    #[arg(long)]
    no_host: bool,
    #[command(flatten)]
    bmc_access: BmcAccess,
}

pub fn print(out: &mut impl Write, report: &Report, format: Format, only_problems: bool) -> Result<()> {
    if format != Format::Table {
        return write_data(out, format, report);
    }
    let rows: Vec<Vec<String>> = report
        .checks
        .iter()
        .filter(|c| !only_problems || c.status >= Status::Warn)
        .map(|c| {
            let mut saw = c.saw.clone();
            if let Some(f) = &c.fix {
                saw.push_str(&format!("\n    fix: {f}"));
            }
            vec![c.status.to_string().to_uppercase(), c.id.clone(), c.node.clone().unwrap_or_default(), saw]
        })
        .collect();
    // The fix goes on its own line under the finding: aligned columns would be too wide.
    let mut buf = vec![];
    write_table(&mut buf, &["STATUS", "CHECK", "NODE", "SAW"], &rows)?;
    out.write_all(&buf)?;
    let s = &report.summary;
    writeln!(out, "doctor: {} ok, {} warn, {} fail, {} skipped", s.ok, s.warn, s.fail, s.skip)?;
    Ok(())
}

pub fn run(a: &DoctorArgs, format: Format) -> Result<ExitCode> {
    let inv = crate::load_inventory(&a.inventory)?;
    let nodes = crate::apply_cmd::select(&inv, &a.nodes)?;
    let mut opts = Options::new(nodes);
    opts.host = !a.no_host;
    opts.network = a.network;
    opts.probe_time = Duration::from_secs_f64(a.probe_time.clamp(0.1, 60.0));
    opts.bmc = a.bmc;
    opts.artifacts = a.artifacts.clone();
    opts.ca_file = a.bmc_access.ca_file.clone();
    opts.insecure = a.bmc_access.insecure;
    opts.per_bmc = a.bmc_access.per_bmc;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(metal6_doctor::run(&inv, &opts));
    print(&mut std::io::stdout().lock(), &report, format, false)?;
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// What `apply` checks before it starts: this host when it holds the boot server's address
/// (apply may run on another host), and the BMCs of its nodes.
pub async fn preflight(inv: &Inventory, nodes: &[String], bmc: &BmcAccess) -> Report {
    let mut opts = Options::new(nodes.to_vec());
    opts.host = metal6_doctor::boot_server_is_local(inv);
    opts.bmc = true;
    opts.ca_file = bmc.ca_file.clone();
    opts.insecure = bmc.insecure;
    opts.per_bmc = bmc.per_bmc;
    metal6_doctor::run(inv, &opts).await
}
