//! `metal6 status`: every node's phase and how long it has been in it, from `metal6 serve`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::output::{Format, write_data, write_table};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Inventory file: the server is its boot server's HTTP address.
    #[arg(short, long, required_unless_present = "server")]
    inventory: Option<PathBuf>,
    /// Server URL instead, e.g. http://[2001:db8:100::10]/
    #[arg(long)]
    server: Option<String>,
    /// Keep refreshing (a live table in a terminal; Ctrl-C to stop).
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// With --watch: stop after this many refreshes.
    #[arg(long)]
    count: Option<u64>,
    /// With --watch: stop (exit 0) once NODE is in PHASE, e.g. `lab-node-1=ready`; exit 1
    /// if it reaches `failed` first.
    #[arg(long, value_name = "NODE=PHASE")]
    until: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct NodeStatus {
    name: String,
    address: String,
    mac: String,
    phase: String,
    since_ms: Option<u64>,
    last_event_ms: Option<u64>,
    events: u64,
}

fn server_url(a: &StatusArgs) -> Result<String> {
    if let Some(s) = &a.server {
        return Ok(if s.ends_with('/') { s.clone() } else { format!("{s}/") });
    }
    let Some(path) = &a.inventory else { bail!("give --inventory or --server") };
    let inv = crate::load_inventory(path)?;
    Ok(inv.site.boot_server.http_base())
}

/// `3s`, `4m05s`, `1h02m`, `2d03h`.
fn elapsed(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<NodeStatus>> {
    let resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    resp.json().await.with_context(|| format!("reading the node list from {url}"))
}

fn render(out: &mut impl Write, nodes: &[NodeStatus], format: Format) -> Result<()> {
    if format != Format::Table {
        return write_data(out, format, &nodes);
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.address.clone(),
                n.phase.clone(),
                n.since_ms.map_or_else(|| "-".into(), |t| elapsed(now.saturating_sub(t))),
                n.last_event_ms.map_or_else(|| "-".into(), |t| format!("{} ago", elapsed(now.saturating_sub(t)))),
                n.events.to_string(),
            ]
        })
        .collect();
    write_table(out, &["NODE", "ADDRESS", "PHASE", "FOR", "LAST EVENT", "EVENTS"], &rows)?;
    Ok(())
}

pub fn run(a: &StatusArgs, format: Format) -> Result<ExitCode> {
    let url = format!("{}v1/nodes", server_url(a)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let live = a.watch && format == Format::Table && std::io::stdout().is_terminal();
        let mut shown = 0u64;
        loop {
            let nodes = fetch(&client, &url).await?;
            let mut out = std::io::stdout().lock();
            if live {
                // Home the cursor and clear: the table redraws in place.
                write!(out, "\x1b[H\x1b[2J")?;
            }
            render(&mut out, &nodes, format)?;
            if live {
                writeln!(out, "\n{url} — every {:.0} s, Ctrl-C to stop", a.interval)?;
            }
            out.flush()?;
            drop(out);
            shown += 1;
            if let Some((node, phase)) = a.until.as_deref().and_then(|u| u.split_once('='))
                && let Some(n) = nodes.iter().find(|n| n.name == node)
            {
                if n.phase == phase {
                    return Ok(ExitCode::SUCCESS);
                }
                if n.phase == "failed" {
                    return Ok(ExitCode::from(1));
                }
            }
            if !a.watch || a.count.is_some_and(|c| shown >= c) {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                () = tokio::time::sleep(Duration::from_secs_f64(a.interval.max(0.1))) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn elapsed_formats() {
        assert_eq!(super::elapsed(3_400), "3s");
        assert_eq!(super::elapsed(245_000), "4m05s");
        assert_eq!(super::elapsed(3_720_000), "1h02m");
        assert_eq!(super::elapsed(183_600_000), "2d03h");
    }
}
