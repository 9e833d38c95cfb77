//! `metal6 db`: the shared state database (`--state postgres://…`) several servers use.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use metal6_db::DbConfig;

use crate::output::{Format, write_data};

/// Where shared state lives, for the commands that can use it.
#[derive(Debug, Clone, clap::Args)]
pub struct StateDbArgs {
    /// Keep state in PostgreSQL, shared with other servers, instead of this host's files:
    /// `postgres://USER@HOST[:PORT]/DB`. No password in it (see --state-password). TLS is
    /// verified: add `?sslrootcert=CA.pem` for a private CA; `sslmode=disable` only with a
    /// Unix-socket host (`?host=/run/postgresql`).
    #[arg(long = "state", value_name = "URL")]
    pub url: Option<String>,
    /// The database password by reference: `env:NAME` or `file:PATH` (never the value).
    #[arg(long, requires = "url", value_name = "REF")]
    pub state_password: Option<String>,
}

impl StateDbArgs {
    pub fn config(&self) -> Result<Option<DbConfig>> {
        let Some(url) = &self.url else { return Ok(None) };
        let password = match &self.state_password {
            Some(r) => Some(
                r.parse::<metal6_inventory::ident::SecretRef>()
                    .map_err(|e| anyhow::anyhow!("--state-password: {e} (give env:NAME or file:PATH)"))?,
            ),
            None => None,
        };
        Ok(Some(DbConfig::parse(url, password)?))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum DbCmd {
    /// Apply the schema migrations this metal6 knows (servers also do at start).
    Migrate(DbArgs),
    /// The schema version and the migrations not yet applied.
    Status(DbArgs),
}

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    #[command(flatten)]
    state: StateDbArgs,
}

pub fn run(cmd: &DbCmd, format: Format) -> Result<ExitCode> {
    let (DbCmd::Migrate(a) | DbCmd::Status(a)) = cmd;
    let Some(cfg) = a.state.config()? else { anyhow::bail!("give the database with --state postgres://…") };
    let mut client = cfg.connect()?;
    if let DbCmd::Migrate(_) = cmd {
        let applied = metal6_db::migrate::migrate(&mut client).context("migrating")?;
        let mut out = std::io::stdout().lock();
        if applied.is_empty() {
            writeln!(out, "already at schema version {}", metal6_db::migrate::known())?;
        } else {
            writeln!(out, "applied migrations {applied:?}; now at schema version {}", metal6_db::migrate::known())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let status = metal6_db::migrate::status(&mut client)?;
    let generation = if status.version > 0 { metal6_db::leases::current_generation(&mut client)? } else { None };
    let mut out = std::io::stdout().lock();
    if format == Format::Table {
        writeln!(out, "schema version {} (this metal6 knows {})", status.version, status.known)?;
        if status.pending.is_empty() {
            writeln!(out, "no migration pending")?;
        } else {
            writeln!(out, "pending migrations: {:?} (run `metal6 db migrate`)", status.pending)?;
        }
        match &generation {
            Some((n, g)) => writeln!(out, "inventory generation {n}: {} nodes, sha256 {}", g.nodes.len(), g.sha256)?,
            None => writeln!(out, "no inventory generation published yet")?,
        }
    } else {
        let value = serde_json::json!({
            "version": status.version,
            "known": status.known,
            "pending": status.pending,
            "inventory_generation": generation.as_ref().map(|(n, g)| serde_json::json!({"generation": n, "sha256": g.sha256, "nodes": g.nodes.len()})),
        });
        write_data(&mut out, format, &value)?;
    }
    // A database behind this binary (or ahead of it) is not one a server will use.
    Ok(if status.version == status.known { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
