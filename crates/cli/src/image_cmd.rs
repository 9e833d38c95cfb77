//! `metal6 image build`: a recipe in, an artifact root out (what `metal6 serve --artifacts`
//! serves): `boot/installer.efi`, `installer.efi` (TFTP), `images/NAME/{disk.raw, disk.qcow2,
//! node.efi, manifest.json, SHA256SUMS}`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::output::{self, Format};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Build a node image and the installer UKI from a recipe.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The recipe (images/*.yaml).
    recipe: PathBuf,
    /// The artifact root to write into.
    #[arg(long, default_value = "artifacts")]
    out: PathBuf,
    /// Stage cache (content-addressed; safe to delete).
    #[arg(long, env = "METAL6_IMAGE_CACHE", default_value = "/var/cache/metal6/images")]
    cache: PathBuf,
    /// The metal6-installer binary (make builds it with `--profile installer`); default: next
    /// to this metal6 binary.
    #[arg(long, env = "METAL6_INSTALLER")]
    installer: Option<PathBuf>,
    /// The CA certificate (PEM) the installer trusts for HTTPS: the one that signed
    /// `metal6 serve --tls-cert`. Needed for profiles with `https: true`.
    #[arg(long, value_name = "PEM")]
    installer_ca: Option<PathBuf>,
}

pub fn run(cmd: &ImageCmd, format: Format) -> Result<ExitCode> {
    let ImageCmd::Build(a) = cmd;
    let installer_bin = match &a.installer {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("metal6-installer"),
    };
    let opts = metal6_image::Options {
        recipe_path: a.recipe.clone(),
        out: a.out.clone(),
        cache: a.cache.clone(),
        installer_bin,
        installer_ca: a.installer_ca.clone(),
    };
    let started = std::time::Instant::now();
    let mut err = std::io::stderr();
    let mut progress = |line: &str| {
        let _ = writeln!(err, "[{:6.1}s] {line}", started.elapsed().as_secs_f64());
    };
    let report = metal6_image::build(&opts, &mut progress)?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = report
                .stages
                .iter()
                .map(|s| {
                    vec![
                        s.stage.to_owned(),
                        if s.cached { "cached".into() } else { "built".into() },
                        format!("{:.1}", s.seconds),
                        s.key[..16].to_owned(),
                    ]
                })
                .collect();
            output::write_table(&mut out, &["STAGE", "RESULT", "SECONDS", "KEY"], &rows)?;
            writeln!(out)?;
            let rows: Vec<Vec<String>> = report
                .outputs
                .iter()
                .map(|o| vec![o.path.clone(), format!("{}", o.bytes >> 20), o.sha256.clone()])
                .collect();
            output::write_table(&mut out, &["OUTPUT", "MIB", "SHA256"], &rows)?;
            writeln!(out, "\nmanifest: {}", a.out.join(&report.manifest).display())?;
        }
        f => output::write_data(&mut out, f, &report)?,
    }
    Ok(ExitCode::SUCCESS)
}
