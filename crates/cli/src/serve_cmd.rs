//! `metal6 serve`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use metal6_inventory::LoadError;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Inventory file (YAML).
    #[arg(short, long)]
    inventory: PathBuf,
    /// Where leases, node events and stats are kept.
    #[arg(long, default_value = "/var/lib/metal6")]
    state_dir: PathBuf,
    /// Serve on this interface instead of `site.provisioning.interface`.
    #[arg(long)]
    interface: Option<String>,
    /// DHCPv6 server port.
    #[arg(long, default_value_t = 547)]
    dhcp_port: u16,
    /// Do not send Router Advertisements (a router on the link already does).
    #[arg(long)]
    no_ra: bool,
    /// Directory served over HTTP: boot files (`boot/installer.efi`), images, firmware.
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// Output of `metal6 cluster render`: each node gets its own files from it
    /// (`/v1/nodes/NAME/cluster/FILE`, only to that node).
    #[arg(long)]
    cluster_dir: Option<PathBuf>,
    /// Do not serve HTTP (another server provides boot files and the events API).
    #[arg(long)]
    no_http: bool,
    /// Do not serve TFTP (it is served only with --artifacts).
    #[arg(long)]
    no_tftp: bool,
    /// HTTPS certificate chain, PEM, leaf first: for the boot server's address (and name),
    /// signed by the CA the nodes' firmware and installer trust. Needs
    /// `site.boot_server.https_port` in the inventory.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM; readable by its owner only (a file path, never the
    /// key itself on the command line).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// The state dir of a `metal6 apply` (its `board.json`): the dashboard shows each node's
    /// orchestrator state, wait reason and SLA from it.
    #[arg(long, value_name = "DIR")]
    apply_state: Option<PathBuf>,
    /// The SVG a running `metal6 emulate run --draw FILE` keeps current: the dashboard shows it.
    #[arg(long, value_name = "FILE")]
    emulation_svg: Option<PathBuf>,
    /// Guard the dashboard with Basic auth as this user (with --dashboard-password).
    #[arg(long, requires = "dashboard_password")]
    dashboard_user: Option<String>,
    /// The dashboard password, by reference: `env:NAME` or `file:PATH` (never the value).
    #[arg(long, requires = "dashboard_user", value_name = "REF")]
    dashboard_password: Option<String>,
    #[command(flatten)]
    state: crate::db_cmd::StateDbArgs,
    /// This server's name in the shared state (written with every binding and event; keep it
    /// across restarts). Default: the host name and the state directory.
    #[arg(long, requires = "url", value_name = "NAME")]
    server_name: Option<String>,
    /// Make this server's inventory the generation every server sharing the state serves
    /// (servers running another one refuse the nodes they describe differently).
    #[arg(long, requires = "url")]
    publish_inventory: bool,
}

/// `HOST:STATE_DIR`: stable across restarts, distinct for two servers on one host.
fn default_server_name(state_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    format!("{}:{}", host.trim(), dir.display())
}

pub fn run(args: &ServeArgs) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("METAL6_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (inv, warnings) = match metal6_inventory::load_with(&args.inventory, metal6_inventory::Limits::DEFAULT) {
        Ok(ok) => ok,
        Err(LoadError::Invalid(diags)) => {
            std::io::stderr().write_all(crate::inventory_cmd::render_elsewhere(&diags).as_bytes())?;
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if !warnings.is_empty() {
        std::io::stderr().write_all(crate::inventory_cmd::render_elsewhere(&warnings).as_bytes())?;
    }
    let opts = metal6_netboot::ServeOptions {
        state_dir: args.state_dir.clone(),
        interface: args.interface.clone(),
        dhcp_port: args.dhcp_port,
        router_advertisements: !args.no_ra,
        artifacts: args.artifacts.clone(),
        cluster_dir: args.cluster_dir.clone(),
        http: !args.no_http,
        tftp: !args.no_tftp,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()).map(|(cert, key)| metal6_netboot::TlsFiles { cert, key }),
        dashboard: metal6_netboot::http::dashboard::Dashboard {
            apply_state: args.apply_state.clone(),
            emulation_svg: args.emulation_svg.clone(),
            auth: match (&args.dashboard_user, &args.dashboard_password) {
                (Some(user), Some(reference)) => {
                    let r: metal6_inventory::ident::SecretRef = reference
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--dashboard-password: {e} (give env:NAME or file:PATH)"))?;
                    let password = r.resolve().map_err(|e| anyhow::anyhow!("--dashboard-password: {e}"))?;
                    Some((user.clone(), password))
                }
                _ => None,
            },
            ..Default::default()
        },
        shared: args.state.config()?.map(|db| metal6_netboot::shared::SharedState {
            db,
            server: args.server_name.clone().unwrap_or_else(|| default_server_name(&args.state_dir)),
            publish_inventory: args.publish_inventory,
        }),
    };
    log_panics();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let result = rt.block_on(async {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let mut signalled = false;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
                }
                if signalled {
                    // A second signal: the operator does not want to wait for the drain.
                    tracing::warn!("second signal: exiting now");
                    std::process::exit(130);
                }
                signalled = true;
                tracing::info!("shutting down");
                on_signal.cancel();
            }
        });
        let snap = metal6_netboot::serve(inv, opts, cancel).await.context("metal6 serve")?;
        tracing::info!(received = ?snap.received, sent = ?snap.sent, dropped = ?snap.dropped, "stopped");
        Ok(ExitCode::SUCCESS)
    });
    // Dropping a runtime waits for every blocking thread without limit; a read stuck on a
    // vanished interface must not keep the process alive after the services stopped.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// A panic in any task is logged where operators look (the tracing log, with its location)
/// and counted in `/metrics`; the task ends and the server goes on, or stops cleanly when the
/// task was a whole service (`metal6_netboot::serve` watches them).
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        metal6_netboot::stats::PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%location, %message, "a task panicked");
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
    }));
}
