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
pub mod limits;
pub mod metrics;
pub mod ra;
pub mod shared;
pub mod stats;
pub mod tftp;
pub mod tokens;

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
    /// Certificate chain and key (PEM) for HTTPS on `site.boot_server.https_port`.
    pub tls: Option<TlsFiles>,
    /// What the dashboard at `/` shows beyond the server's events, and who may see it.
    pub dashboard: http::dashboard::Dashboard,
    /// Bindings and node events in a PostgreSQL database shared with other servers, instead
    /// of the lease journal (`--state postgres://…`).
    pub shared: Option<shared::SharedState>,
}

/// Where the HTTPS certificate chain (leaf first) and its private key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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
    #[error("the shared state")]
    Shared(#[from] metal6_db::DbError),
    #[error("cannot open the event log in {dir}")]
    Events {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock the state directory {dir}")]
    Lock {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state directory {dir} is in use by another metal6 serve{}; two servers on one \
         journal would overwrite each other's leases",
        holder.as_deref().map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, holder: Option<String> },
    #[error("{path} {problem}; {hint}")]
    TokenKeyInvalid { path: PathBuf, problem: String, hint: &'static str },
    #[error("the {what} {dir} is inside the artifact root {root}, which is served to anyone: move it out")]
    SecretsServed { what: &'static str, dir: PathBuf, root: PathBuf },
    #[error("{0}")]
    TlsSetup(&'static str),
    #[error("HTTPS")]
    Tls(#[from] http::tls::TlsError),
    #[error("the {service} service stopped: {reason}")]
    ServiceFailed { service: &'static str, reason: String },
}

/// An error and its causes on one line (`a: b: c`), for logs.
pub use metal6_db::error_chain;

/// Holds `STATE_DIR/serve.lock` (an exclusive `flock`, released by the kernel when the
/// process dies, so a crash never leaves a stale lock). The file says which pid holds it.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    pub fn acquire(dir: &Path) -> Result<StateLock, ServeError> {
        use std::io::{Seek, Write};
        let lock_err = |source| ServeError::Lock { dir: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(lock_err)?;
        let path = dir.join("serve.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
                return Err(ServeError::Locked { dir: dir.to_owned(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        file.set_len(0).map_err(lock_err)?;
        file.rewind().map_err(lock_err)?;
        writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
        Ok(StateLock { _file: file })
    }
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
    let _lock = StateLock::acquire(&opts.state_dir)?;
    // Everything under the artifact root is served to anyone, over HTTP and TFTP: the state
    // dir (token.key) and the cluster files (join token, certificate key) must not be.
    if let Some(root) = opts.artifacts.as_ref().and_then(|p| std::fs::canonicalize(p).ok()) {
        for (what, dir) in
            [("state directory", Some(&opts.state_dir)), ("cluster directory", opts.cluster_dir.as_ref())]
        {
            if let Some(d) = dir.and_then(|d| std::fs::canonicalize(d).ok())
                && d.starts_with(&root)
            {
                return Err(ServeError::SecretsServed { what, dir: d, root });
            }
        }
    }
    if inv.site.dhcp.trusted_relays.is_empty() && inv.site.segments.len() > 1 {
        tracing::warn!(
            "the inventory has relayed segments but no site.dhcp.trusted_relays: a Relay-Forward from any \
             source is served and its client link-layer address trusted to identify nodes; name your relays"
        );
    }
    let stats = Arc::new(stats::Stats::default());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (store, bindings) = match opts.shared.clone() {
        Some(state) => {
            // rust-postgres' blocking client runs a runtime of its own: not on a runtime thread.
            let inv2 = inv.clone();
            let (leases, bindings) = tokio::task::spawn_blocking(move || shared::open(state, &inv2, now))
                .await
                .map_err(|e| ServeError::ServiceFailed { service: "shared state", reason: e.to_string() })??;
            (dhcp::Store::Shared(leases), bindings)
        }
        None => {
            let (journal, bindings) = open_journal(&opts.state_dir, now)?;
            (dhcp::Store::Journal(journal), bindings)
        }
    };
    let (events, ev_report) = events::EventStore::open(&opts.state_dir)
        .map_err(|source| ServeError::Events { dir: opts.state_dir.clone(), source })?;
    if let Some(copy) = &ev_report.quarantined {
        tracing::error!(
            lines = ?ev_report.corrupt,
            copy = %copy.display(),
            "the event log had unreadable lines: they were skipped and the file copied aside"
        );
    }
    if let Some(why) = &ev_report.quarantine_failed {
        tracing::error!(
            lines = ?ev_report.corrupt,
            error = %why,
            "the event log has unreadable lines and could not be copied aside: it is kept as it is"
        );
    }
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
    if let Some(state) = opts.shared.clone() {
        let (tx, rx) = std::sync::mpsc::sync_channel(shared::SINK_QUEUE);
        shared::spawn_event_sink(state, rx, stats.clone())
            .map_err(|e| ServeError::ServiceFailed { service: "shared state", reason: e.to_string() })?;
        events.share_with(tx);
    }
    let https_port = inv.site.boot_server.https_port;
    match (https_port, &opts.tls, opts.http) {
        (Some(_), None, true) => {
            return Err(ServeError::TlsSetup(
                "the inventory has site.boot_server.https_port: pass --tls-cert and --tls-key (docs/security.md)",
            ));
        }
        (None, Some(_), _) => {
            return Err(ServeError::TlsSetup(
                "--tls-cert/--tls-key given, but the inventory has no site.boot_server.https_port to serve HTTPS on",
            ));
        }
        (Some(_), Some(_), false) => {
            return Err(ServeError::TlsSetup("--no-http turns HTTPS off too: drop --tls-cert/--tls-key, or --no-http"));
        }
        _ => {}
    }
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
        let tokens = tokens::NodeTokens::open(&opts.state_dir, token_key(&opts.state_dir)?)
            .map_err(|source| ServeError::TokenKey { dir: opts.state_dir.clone(), source })?;
        let state = Arc::new(http::HttpState {
            id: metal6_inventory::identity::Identifier::new(&inv),
            inv: Arc::new(inv.clone()),
            artifacts,
            cluster_dir: opts.cluster_dir.clone(),
            events: events.clone(),
            stats: stats.clone(),
            counters: http::HttpCounters::default(),
            tokens,
            conflicts: std::sync::Mutex::default(),
            dashboard: opts.dashboard.clone(),
        });
        info!(%addr, artifacts = ?opts.artifacts, "HTTP listening");
        if let (Some(port), Some(files)) = (https_port, &opts.tls) {
            let config = http::tls::server_config(&files.cert, &files.key)?;
            let addr = std::net::SocketAddr::from((state.inv.site.boot_server.address, port));
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::BindHttp { addr, source })?;
            info!(%addr, cert = %files.cert.display(), "HTTPS listening");
            tasks.spawn(http::tls::run(listener, state.clone(), config, cancel.clone()));
        }
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
            stats: stats.clone(),
            active: limits::PerSource::new(tftp::MAX_PER_SOURCE, tftp::MAX_TRANSFERS),
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
        socket,
        engine,
        bindings,
        store: Some(store),
        events,
        stats: stats.clone(),
        ifindex,
        limiter: dhcp::RateLimiter::new(64, 32, 100_000),
        unknown_seen: std::collections::HashSet::new(),
        outbox: Vec::new(),
        shared: false,
        me: None,
        live: Vec::new(),
    };
    let failure: Arc<std::sync::Mutex<Option<ServeError>>> = Arc::default();
    {
        let (cancel, failure) = (cancel.clone(), failure.clone());
        tasks.spawn_blocking(move || {
            if let Err(e) = service.run(cancel.clone()) {
                tracing::error!(error = %e, "DHCPv6 service failed; stopping metal6 serve");
                if let Ok(mut f) = failure.lock() {
                    f.get_or_insert(e);
                }
                cancel.cancel();
            }
        });
    }
    let stats_path = opts.state_dir.join("stats.json");
    tasks.spawn(write_stats_periodically(stats.clone(), stats_path.clone(), cancel.clone()));
    // A service that ends on its own (or panics) while the others run leaves a server that
    // answers half the protocol: stop all of it, so a supervisor restarts it whole.
    let mut drained_by = None;
    loop {
        let next = match drained_by {
            None => tokio::select! {
                r = tasks.join_next() => r,
                () = cancel.cancelled() => { drained_by = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE); continue; }
            },
            Some(deadline) => match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(left = tasks.len(), "services did not stop in time; abandoning them");
                    tasks.abort_all();
                    break;
                }
            },
        };
        let Some(r) = next else { break };
        if !cancel.is_cancelled() {
            let reason = match r {
                Err(e) if e.is_panic() => "panicked".to_owned(),
                Err(e) => e.to_string(),
                Ok(()) => "ended unexpectedly".to_owned(),
            };
            tracing::error!(%reason, "a service stopped; stopping metal6 serve");
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert(ServeError::ServiceFailed { service: "netboot", reason });
            }
            cancel.cancel();
        }
    }
    let snap = stats.snapshot();
    write_stats(&snap, &stats_path);
    match failure.lock().ok().and_then(|mut f| f.take()) {
        Some(e) => Err(e),
        None => Ok(snap),
    }
}

/// The lease journal, with what loading it found logged.
fn open_journal(dir: &Path, now: u64) -> Result<(leases::Journal, metal6_dhcp6::bindings::Bindings), ServeError> {
    let (journal, bindings, report) = leases::Journal::open(dir, now)?;
    info!(
        records = report.records,
        live = report.live,
        expired = report.expired,
        torn = report.torn,
        "lease journal loaded"
    );
    if let Some(copy) = &report.quarantined {
        tracing::error!(
            lines = ?report.corrupt,
            copy = %copy.display(),
            "the lease journal had damaged lines (not a crash's torn tail): the file was copied \
             aside before compaction; inspect the copy for bindings that may be lost"
        );
    }
    if let Some(why) = &report.quarantine_failed {
        tracing::error!(
            lines = ?report.corrupt,
            error = %why,
            "the lease journal has damaged lines and could not be copied aside: it is kept as it \
             is, not compacted; free space and restart to quarantine it"
        );
    }
    Ok((journal, bindings))
}

/// After shutdown is asked for, services get this long to drain (HTTP transfers get 5 s of
/// it); then whatever is left is aborted so the process always ends.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
///
/// Never regenerated behind the operator's back: a new key invalidates every node's token
/// (installed nodes could no longer report), so a key of the wrong size or readable by others
/// stops the server with the fix to make. Created atomically (a complete temporary file,
/// synced, then linked into place), so a crash leaves either no key or a whole one.
fn token_key(dir: &Path) -> Result<Vec<u8>, ServeError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join("token.key");
    let io_err = |source| ServeError::TokenKey { dir: dir.to_owned(), source };
    match std::fs::read(&path) {
        Ok(k) => {
            let invalid = |problem: String, hint| ServeError::TokenKeyInvalid { path: path.clone(), problem, hint };
            let mode = std::fs::metadata(&path).map_err(io_err)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(invalid(
                    format!("is readable by others (mode {:o})", mode & 0o777),
                    "anyone who reads it can forge every node's token: chmod 600 it (and rotate it if it leaked)",
                ));
            }
            if k.len() != 32 {
                return Err(invalid(
                    format!("holds {} bytes, not 32", k.len()),
                    "restore it from a backup, or delete it to make a new one (every node's token changes)",
                ));
            }
            return Ok(k);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)).map_err(io_err)?;
    let tmp = dir.join(format!("token.key.tmp-{}", std::process::id()));
    // A leftover from a crash of a process with the same pid (pid 1 in a container) must not
    // stop the start; the state-dir lock makes sure no one else is writing it.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err)?;
    f.write_all(&key).and_then(|()| f.sync_all()).map_err(io_err)?;
    // hard_link fails if a key appeared meanwhile: then that one is the key.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => token_key(dir),
        Err(e) => Err(io_err(e)),
    }
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
