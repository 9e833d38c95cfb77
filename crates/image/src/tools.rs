//! Running the external tools of the pipeline (mmdebstrap, mkfs.ext4, mkfs.vfat, mcopy,
//! sfdisk, objcopy, qemu-img, tar, strip, ldd): each call captured, and a failure reported
//! with the tool's own last words.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{shown} failed ({}):\n{}", out.status, tail.join("\n"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], passing each stderr line the tool prints to `progress` as it comes (for the
/// long steps: mmdebstrap's `I: …` lines), and keeping the tail for the error.
pub fn run_streaming(cmd: &mut Command, progress: &mut dyn FnMut(&str)) -> Result<()> {
    use std::io::BufRead;
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    if let Some(err) = child.stderr.take() {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(msg) = line.strip_prefix("I: ") {
                progress(msg);
            }
            tail.push_back(line);
            if tail.len() > 15 {
                tail.pop_front();
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{shown} failed ({status}):\n{}", tail.into_iter().collect::<Vec<_>>().join("\n"));
    }
    Ok(())
}

pub fn run_stdin(cmd: &mut Command, input: &str) -> Result<String> {
    use std::io::Write;
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first line a tool prints for `--version` (or `-V`), for the manifest and cache keys.
pub fn version(tool: &str) -> String {
    for flag in ["--version", "-V"] {
        if let Ok(o) = Command::new(tool).arg(flag).stdin(Stdio::null()).output() {
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            if let Some(l) = text.lines().find(|l| !l.trim().is_empty()) {
                return l.trim().to_owned();
            }
        }
    }
    "unknown".into()
}

pub fn require(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file())))
        .collect();
    if !missing.is_empty() {
        bail!("missing tools: {} (run `make deps`)", missing.join(", "));
    }
    Ok(())
}

/// Shared-library closure of an ELF binary, from ldd: absolute paths, the loader included.
pub fn shared_libs(bin: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd").arg(bin).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") {
        return Ok(vec![]);
    }
    let mut libs = vec![];
    for l in text.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => l.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_owned());
        } else if l.contains("not found") {
            bail!("{}: {l}", bin.display());
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}
