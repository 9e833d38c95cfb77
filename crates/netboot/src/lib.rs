//! `metal6 serve`: the netboot services on the provisioning link, in one process.
//!
//! This crate owns sockets, clocks, persistence and tasks; what to answer is decided by the
//! pure crates (`metal6-dhcp6`, `metal6-ra`) from the validated inventory. Services take a bound
//! socket and a cancellation token; `serve` binds them, runs them, and drains them on shutdown.
//! It must not depend on the Redfish or cluster crates.

pub mod dhcp;
pub mod events;
pub mod http;
pub mod leases;
pub mod metrics;
pub mod ra;
pub mod stats;
pub mod tftp;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metal6_dhcp6::policy::{Config, Engine};
use metal6_inventory::Inventory;
use metal6_inventory::ident::MacAddr;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub state_dir: PathBuf,
    /// Override of `site.provisioning.interface` (tests run in namespaces with other names).
    pub interface: Option<String>,
    /// DHCPv6 server port (547; tests may use another).
    pub dhcp_port: u16,
    pub router_advertisements: bool,
    /// Files served over HTTP (`/boot/installer.efi`, images, firmware); `None` serves none.
    pub artifacts: Option<PathBuf>,
    /// Rendered cluster files (`metal6 cluster render --out`), served per node.
    pub cluster_dir: Option<PathBuf>,
    /// Serve HTTP on the boot server's address and port.
    pub http: bool,
    /// Serve TFTP (read-only, from `artifacts`) on the boot server's address and port.
    pub tftp: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("interface {name} not found")]
    Interface {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind the DHCPv6 socket on port {port}")]
    BindDhcp {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the Router Advertisement socket on {interface}")]
    BindRa {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for HTTP on {addr}")]
    BindHttp {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("artifact root {path} is not a readable directory")]
    Artifacts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the token key in {dir}")]
    TokenKey {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] leases::JournalError),
    #[error("cannot open the event log in {dir}")]
    Events {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Index and MAC of a network interface, from sysfs.
pub fn interface_info(name: &str) -> std::io::Result<(u32, Option<MacAddr>)> {
    let base = Path::new("/sys/class/net").join(name);
    let idx = std::fs::read_to_string(base.join("ifindex"))?;
    let idx = idx.trim().parse::<u32>().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mac = std::fs::read_to_string(base.join("address")).ok().and_then(|m| m.trim().parse::<MacAddr>().ok());
    Ok((idx, mac))
}

/// Our DUID-LL from the interface MAC (stable across restarts, no state); DUID-EN under
/// enterprise 0 with a fixed tag when the interface has no MAC.
pub fn server_duid(mac: Option<MacAddr>) -> Vec<u8> {
    match mac {
        Some(m) => [&[0u8, 3, 0, 1][..], &m.0].concat(),
        None => vec![0, 2, 0, 0, 0, 0, b'm', b'e', b't', b'a', b'l', b'6'],
    }
}

/// Runs the services until `cancel` fires, then drains them.
pub async fn serve(
    inv: Inventory,
    opts: ServeOptions,
    cancel: CancellationToken,
) -> Result<stats::Snapshot, ServeError> {
    let iface = opts.interface.clone().unwrap_or_else(|| inv.site.interface.clone());
    let (ifindex, mac) =
        interface_info(&iface).map_err(|source| ServeError::Interface { name: iface.clone(), source })?;
    let stats = Arc::new(stats::Stats::default());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (journal, bindings, report) = leases::Journal::open(&opts.state_dir, now)?;
    info!(
        records = report.records,
        live = report.live,
        expired = report.expired,
        torn = report.torn,
        "lease journal loaded"
    );
    let events = events::EventStore::open(&opts.state_dir)
        .map_err(|source| ServeError::Events { dir: opts.state_dir.clone(), source })?;
    let socket =
        dhcp::bind(opts.dhcp_port, ifindex).map_err(|source| ServeError::BindDhcp { port: opts.dhcp_port, source })?;
    info!(interface = %iface, ifindex, port = opts.dhcp_port, "DHCPv6 listening");

    let mut tasks = tokio::task::JoinSet::new();
    if opts.router_advertisements && inv.site.router_advertisements.enabled {
        let sock =
            ra::bind(&iface, ifindex).map_err(|source| ServeError::BindRa { interface: iface.clone(), source })?;
        let ra = metal6_ra::build_ra(&metal6_ra::RaConfig::from_inventory(&inv, mac));
        let interval = Duration::from_secs(u64::from(inv.site.router_advertisements.max_interval));
        let (st, cn) = (stats.clone(), cancel.clone());
        tasks.spawn_blocking(move || ra::run(sock, ra, ifindex, interval, st, cn));
        info!(interface = %iface, "router advertisements on");
    }
    let events = Arc::new(events);
    if opts.http {
        raise_fd_limit();
        let addr = std::net::SocketAddr::from((inv.site.boot_server.address, inv.site.boot_server.http_port));
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::BindHttp { addr, source })?;
        let artifacts = match &opts.artifacts {
            Some(p) => {
                Some(std::fs::canonicalize(p).map_err(|source| ServeError::Artifacts { path: p.clone(), source })?)
            }
            None => None,
        };
        let token_key = token_key(&opts.state_dir)
            .map_err(|source| ServeError::TokenKey { dir: opts.state_dir.clone(), source })?;
        let state = Arc::new(http::HttpState {
            id: metal6_inventory::identity::Identifier::new(&inv),
            inv: Arc::new(inv.clone()),
            artifacts,
            cluster_dir: opts.cluster_dir.clone(),
            events: events.clone(),
            stats: stats.clone(),
            counters: http::HttpCounters::default(),
            token_key,
        });
        info!(%addr, artifacts = ?opts.artifacts, "HTTP listening");
        tasks.spawn(http::run(listener, state, cancel.clone()));
    }
    if let (true, Some(root)) = (opts.tftp, &opts.artifacts) {
        let root =
            std::fs::canonicalize(root).map_err(|source| ServeError::Artifacts { path: root.clone(), source })?;
        let addr = std::net::SocketAddr::from((inv.site.boot_server.address, inv.site.boot_server.tftp_port));
        let handler = tftp::TftpHandler {
            root,
            inv: Arc::new(inv.clone()),
            id: metal6_inventory::identity::Identifier::new(&inv),
            events: events.clone(),
        };
        let cancel = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = tftp::run(addr, handler, cancel).await {
                tracing::error!(error = %e, %addr, "TFTP service stopped");
            }
        });
    }
    let engine = Engine::new(inv, Config { server_duid: server_duid(mac), rapid_commit: true });
    let service = dhcp::DhcpService {
        socket: Arc::new(socket),
        engine,
        bindings,
        journal: Some(journal),
        events,
        stats: stats.clone(),
        ifindex,
        limiter: dhcp::RateLimiter::new(64, 32, 100_000),
    };
    tasks.spawn(service.run(cancel.clone()));
    let stats_path = opts.state_dir.join("stats.json");
    tasks.spawn(write_stats_periodically(stats.clone(), stats_path.clone(), cancel.clone()));
    while tasks.join_next().await.is_some() {}
    let snap = stats.snapshot();
    write_stats(&snap, &stats_path);
    Ok(snap)
}

/// The HTTP service takes up to 4,096 connections; systemd's default soft limit is 1,024
/// descriptors. Raise the soft limit to the hard one (no privilege needed).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok()
    {
        info!(from = soft, to = hard, "raised the open-file limit");
    }
}

/// 32 random bytes in `STATE_DIR/token.key` (mode 0600), created on first start.
fn token_key(dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("token.key");
    if let Ok(k) = std::fs::read(&path)
        && k.len() == 32
    {
        return Ok(k);
    }
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    std::io::Write::write_all(&mut f, &key)?;
    f.sync_all()?;
    Ok(key)
}

async fn write_stats_periodically(stats: Arc<stats::Stats>, path: PathBuf, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => write_stats(&stats.snapshot(), &path),
        }
    }
}

/// Written to a temporary file and renamed, so readers never see half a document.
fn write_stats(snap: &stats::Snapshot, path: &Path) {
    let tmp = path.with_extension("json.tmp");
    if let Ok(text) = serde_json::to_vec_pretty(snap)
        && std::fs::write(&tmp, text).is_ok()
    {
        let _ = std::fs::rename(&tmp, path);
    }
}
