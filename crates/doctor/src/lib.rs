//! `metal6 doctor`: what will break an IPv6 netboot, found before a single server is powered
//! on. The inventory says what should be; each check reads what is — this host's interface,
//! addresses, sysctls, ports and nftables ruleset (`host`), the artifacts (`artifacts`), the
//! provisioning link by active probes (`link`: routers, DHCPv6 servers, a duplicate of the
//! boot server's address) and every node's BMC (`bmc`) — and says ok, warn or fail, what it
//! saw and the fix.
//!
//! The seam: the CLI builds [`Options`], calls [`run`] and prints the [`Report`]; `metal6
//! apply` calls the same [`run`] for its nodes and refuses to start on a failure. Each check
//! has a stable id (`docs/doctor.md` lists them with their source of truth); the JSON form of
//! a report is [`Report`] serialized, format [`FORMAT`].

pub mod artifacts;
pub mod bmc;
pub mod host;
pub mod link;
mod nft;
mod procnet;

use std::path::PathBuf;
use std::time::Duration;

use metal6_inventory::Inventory;
use serde::Serialize;

/// The JSON report's `format`.
pub const FORMAT: &str = "metal6-doctor/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Not checked, with why (a tool missing, nothing to check).
    Skip,
    /// Works, but something an operator should know or `apply` will change.
    Warn,
    /// Will break a netboot.
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable: `host.address`, `link.routers`, `bmc.boot-nic`, … (docs/doctor.md).
    pub id: String,
    /// The node a BMC or artifact check is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub status: Status,
    /// What was seen.
    pub saw: String,
    /// What to do about it (on warn and fail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(id: &str, saw: impl Into<String>) -> Check {
        Check { id: id.into(), node: None, status: Status::Ok, saw: saw.into(), fix: None }
    }
    pub fn skip(id: &str, saw: impl Into<String>) -> Check {
        Check { id: id.into(), node: None, status: Status::Skip, saw: saw.into(), fix: None }
    }
    pub fn warn(id: &str, saw: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { id: id.into(), node: None, status: Status::Warn, saw: saw.into(), fix: Some(fix.into()) }
    }
    pub fn fail(id: &str, saw: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { id: id.into(), node: None, status: Status::Fail, saw: saw.into(), fix: Some(fix.into()) }
    }
    #[must_use]
    pub fn for_node(mut self, node: &str) -> Check {
        self.node = Some(node.to_owned());
        self
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub skip: usize,
    pub warn: usize,
    pub fail: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub checks: Vec<Check>,
    pub summary: Summary,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Ok => summary.ok += 1,
                Status::Skip => summary.skip += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
            }
        }
        Report { format: FORMAT, checks, summary }
    }

    pub fn failed(&self) -> bool {
        self.summary.fail > 0
    }
}

/// Which checks to run, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The nodes BMC and artifact checks are about (inventory names).
    pub nodes: Vec<String>,
    /// This host: interface, addresses, MTU, sysctls, ports, firewall.
    pub host: bool,
    /// Active probes on the provisioning link (Router Solicitation, Solicit, Neighbor
    /// Solicitation), each bounded by `probe_time`.
    pub network: bool,
    pub probe_time: Duration,
    /// The BMCs of `nodes`.
    pub bmc: bool,
    /// The artifact root `metal6 serve --artifacts` serves.
    pub artifacts: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub bmc_timeout: Duration,
    /// Sessions at once per BMC endpoint.
    pub per_bmc: usize,
}

impl Options {
    pub fn new(nodes: Vec<String>) -> Options {
        Options {
            nodes,
            host: true,
            network: false,
            probe_time: Duration::from_secs(3),
            bmc: false,
            artifacts: None,
            ca_file: None,
            insecure: false,
            bmc_timeout: Duration::from_secs(20),
            per_bmc: 2,
        }
    }
}

/// Whether this host (this network namespace) holds the boot server's address: where the
/// host checks and link probes mean something.
pub fn boot_server_is_local(inv: &Inventory) -> bool {
    procnet::addresses().iter().any(|a| a.addr == inv.site.boot_server.address)
}

/// Runs the checks `opts` asks for. Host and artifact checks read files; the link probes
/// block for at most `probe_time` each (on a blocking thread); BMCs are read in parallel,
/// `per_bmc` sessions at once per endpoint.
pub async fn run(inv: &Inventory, opts: &Options) -> Report {
    let mut checks = vec![];
    if opts.host {
        checks.extend(host::checks(inv));
    }
    if let Some(dir) = &opts.artifacts {
        let (inv2, dir, nodes) = (inv.clone(), dir.clone(), opts.nodes.clone());
        match tokio::task::spawn_blocking(move || artifacts::checks(&inv2, &dir, &nodes)).await {
            Ok(c) => checks.extend(c),
            Err(e) => checks.push(Check::fail("artifacts", format!("the artifact check stopped: {e}"), "report it")),
        }
    }
    if opts.network {
        let (inv2, t) = (inv.clone(), opts.probe_time);
        match tokio::task::spawn_blocking(move || link::checks(&inv2, t)).await {
            Ok(c) => checks.extend(c),
            Err(e) => checks.push(Check::fail("link", format!("the link probes stopped: {e}"), "report it")),
        }
    }
    if opts.bmc {
        checks.extend(bmc::checks(inv, opts).await);
    }
    Report::new(checks)
}
