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
    #[arg(short, long, required_unless_present_any = ["server", "state_dir"])]
    inventory: Option<PathBuf>,
    /// The state dir of `metal6 apply`: show each node's orchestrator state and what it waits
    /// for; with NODE, its whole timeline (BMC actions, the server's events, transitions).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// One node's timeline (needs --state-dir; the server's events too with -i or --server).
    node: Option<String>,
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
    /// Write every node's phases as an SVG timeline (one bar per phase per node, on a shared
    /// time axis) to FILE, from the server's timelines.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["watch", "state_dir", "until"])]
    timeline: Option<PathBuf>,
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
    if let Some(dir) = &a.state_dir {
        return orchestrator_status(a, dir, format);
    }
    let base = server_url(a)?;
    let url = format!("{base}v1/nodes");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        if let Some(file) = &a.timeline {
            let nodes = fetch(&client, &url).await?;
            let now = now_ms();
            let mut rows = vec![];
            for n in &nodes {
                // Inventory names are DNS labels: nothing to percent-encode.
                let turl = format!("{base}v1/nodes/{}/timeline", n.name);
                let resp = client.get(&turl).send().await.with_context(|| format!("GET {turl}"))?;
                if !resp.status().is_success() {
                    bail!("GET {turl}: {}", resp.status());
                }
                let events: Vec<serde_json::Value> = resp.json().await.with_context(|| format!("reading {turl}"))?;
                rows.push((n.name.clone(), metal6_render::timeline::segments(&events, now)));
            }
            let bars: usize = rows.iter().map(|(_, s)| s.len()).sum();
            std::fs::write(file, metal6_render::timeline::svg(&rows, now))
                .with_context(|| format!("writing {}", file.display()))?;
            writeln!(std::io::stdout(), "timeline: {} nodes, {bars} phase bars -> {}", rows.len(), file.display())?;
            return Ok(ExitCode::SUCCESS);
        }
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

/// One line of a node's merged timeline.
#[derive(Debug, Serialize)]
struct Line {
    ts_ms: u64,
    source: String,
    what: String,
}

fn open_store(dir: &std::path::Path) -> Result<metal6_orchestrator::SqliteStore> {
    let db = dir.join("orchestrator.db");
    if !db.exists() {
        bail!("{} has no orchestrator database: has `metal6 apply --state-dir {}` run?", dir.display(), dir.display());
    }
    metal6_orchestrator::SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))
}

fn orchestrator_status(a: &StatusArgs, dir: &std::path::Path, format: Format) -> Result<ExitCode> {
    use metal6_orchestrator::Store;
    use metal6_orchestrator::machine::hms;
    let store = open_store(dir)?;
    let mut out = std::io::stdout().lock();
    let Some(node) = &a.node else {
        let records = store.all()?;
        if format != Format::Table {
            write_data(&mut out, format, &records)?;
            return Ok(ExitCode::SUCCESS);
        }
        let now = now_ms();
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                let detail = match &r.state {
                    metal6_orchestrator::State::NeedsAttention { reason, .. } => reason.clone(),
                    metal6_orchestrator::State::Done { ready_ms } => format!("ready at {}", hms(*ready_ms)),
                    _ => r.wait.clone().unwrap_or_default(),
                };
                let detail = if r.sla_warned { format!("SLA MISSED: {detail}") } else { detail };
                vec![
                    r.node.clone(),
                    r.state.label(),
                    elapsed(now.saturating_sub(r.entered_ms)),
                    r.attempt.to_string(),
                    detail,
                    r.last_evidence.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        write_table(&mut out, &["NODE", "STATE", "FOR", "TRY", "WAITING FOR / DETAIL", "LAST EVIDENCE"], &rows)?;
        return Ok(ExitCode::SUCCESS);
    };
    let Some(rec) = store.load(node)? else { bail!("{} has no record of {node}", dir.display()) };
    let mut lines: Vec<Line> =
        store.history(node)?.into_iter().map(|h| Line { ts_ms: h.ts_ms, source: h.source, what: h.text }).collect();
    // The server's side, when it can be reached: DHCPv6, boot fetches, the installer's phases.
    if a.inventory.is_some() || a.server.is_some() {
        let url = format!("{}v1/nodes/{node}/timeline", server_url(a)?);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let events: Result<Vec<serde_json::Value>> = rt.block_on(async {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
            let r = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
            r.json().await.with_context(|| format!("reading {url}"))
        });
        match events {
            Ok(events) => {
                for e in &events {
                    if e.get("kind").and_then(|k| k.as_str()) == Some("progress") {
                        continue;
                    }
                    let Some(ts) = e.get("ts_ms").and_then(serde_json::Value::as_u64) else { continue };
                    let source = e.get("source").and_then(|s| s.as_str()).unwrap_or("serve");
                    lines.push(Line {
                        ts_ms: ts,
                        source: format!("serve/{source}"),
                        what: metal6_orchestrator::machine::describe(e),
                    });
                }
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "warning: the server's events are not shown: {e:#}");
            }
        }
    }
    lines.sort_by_key(|l| l.ts_ms);
    // Durations per state, from the transitions the orchestrator recorded.
    let mut phases: Vec<(String, u64)> = vec![];
    let transitions: Vec<(u64, String)> = store
        .history(node)?
        .into_iter()
        .filter(|h| h.kind == "transition")
        .map(|h| (h.ts_ms, h.detail.get("to").and_then(|t| t.as_str()).map_or_else(|| h.text.clone(), str::to_owned)))
        .collect();
    for w in transitions.windows(2) {
        phases.push((w[0].1.clone(), w[1].0.saturating_sub(w[0].0)));
    }
    if format != Format::Table {
        let v = serde_json::json!({"record": rec, "timeline": lines, "durations_ms": phases});
        write_data(&mut out, format, &v)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{node}: {} (attempt {})", rec.state.label(), rec.attempt)?;
    if let Some(w) = &rec.wait {
        writeln!(out, "  {w}")?;
    }
    if let Some(e) = &rec.last_evidence {
        writeln!(out, "  last evidence: {e}")?;
    }
    writeln!(out)?;
    let rows: Vec<Vec<String>> = lines.iter().map(|l| vec![hms(l.ts_ms), l.source.clone(), l.what.clone()]).collect();
    write_table(&mut out, &["TIME", "SOURCE", "WHAT"], &rows)?;
    if !phases.is_empty() {
        let d: Vec<String> = phases.iter().map(|(p, ms)| format!("{p} {}", elapsed(*ms))).collect();
        writeln!(out, "\ntime per state: {}", d.join(", "))?;
    }
    Ok(ExitCode::SUCCESS)
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
