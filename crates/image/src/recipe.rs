//! Image recipes (`images/*.yaml`): what goes into a node image and its installer.
//! Parsed with serde-saphyr (maintained; serde_yaml is deprecated), unknown fields refused,
//! errors with line and column.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The image name inventories refer to (`profiles.*.image`); outputs go under
    /// `images/NAME/` of the artifact root.
    pub name: String,
    pub debian: Debian,
    /// SOURCE_DATE_EPOCH for every stage: same recipe, same epoch, same outputs.
    pub epoch: u64,
    pub packages: Vec<String>,
    /// dpkg `path-exclude` globs: files never installed (docs, driver classes a fleet lacks).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Extra apt repositories, each with its signing key (e.g. the Kubernetes repository).
    #[serde(default)]
    pub apt_repositories: Vec<AptRepo>,
    /// systemd units to enable.
    #[serde(default)]
    pub services: Vec<String>,
    /// Files to add: path in the image → content.
    #[serde(default)]
    pub files: BTreeMap<String, FileSpec>,
    /// Kernel modules loaded at boot (modules-load.d).
    #[serde(default)]
    pub modules_load: Vec<String>,
    /// Kernel command line of the node's UKI (root= is added by the builder).
    #[serde(default)]
    pub kernel_cmdline: String,
    /// The density profile, raise-only (see `sysctl`).
    #[serde(default)]
    pub sysctl: BTreeMap<String, serde_json::Value>,
    /// Free space in the root filesystem beyond its content, in MiB (the installer grows it
    /// to the disk anyway).
    #[serde(default = "default_headroom")]
    pub root_headroom_mib: u64,
    pub installer: Installer,
    #[serde(default)]
    pub outputs: Outputs,
}

fn default_headroom() -> u64 {
    256
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debian {
    pub suite: String,
    pub mirror: String,
    #[serde(default = "default_variant")]
    pub variant: String,
}

fn default_variant() -> String {
    "minbase".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptRepo {
    pub name: String,
    /// A sources.list line; `[signed-by=/etc/apt/keyrings/NAME.asc]` is added.
    pub line: String,
    /// Path of the ASCII-armoured key, relative to the recipe.
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub content: String,
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installer {
    /// Modules the installer loads (with their dependencies): NIC and disk drivers, ext4.
    pub modules: Vec<String>,
    #[serde(default)]
    pub kernel_cmdline: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    #[serde(default = "yes")]
    pub qcow2: bool,
    /// An iPXE EFI binary on the build host to publish as `boot/ipxe.efi`, what `boot: ipxe`
    /// nodes chain-load (Debian's `ipxe` package: `/usr/lib/ipxe/snponly.efi`, iPXE on the
    /// firmware's own network driver). Copied as it is: no stage depends on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipxe: Option<std::path::PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs { qcow2: true, ipxe: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read { path: p.clone(), source })?;
    parse(&text, &p)
}

pub fn parse(text: &str, path: &str) -> Result<Recipe, RecipeError> {
    let r: Recipe =
        serde_saphyr::from_str(text).map_err(|e| RecipeError::Parse { path: path.into(), message: e.to_string() })?;
    let bad = |message: String| Err(RecipeError::Invalid { path: path.into(), message });
    if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return bad(format!("name `{}`: use letters, digits, - and _ (it is a URL path segment)", r.name));
    }
    if r.packages.iter().any(|p| p.contains(',') || p.contains(' ')) {
        return bad("packages: one package name per item".into());
    }
    if !r.packages.iter().any(|p| p.starts_with("linux-image")) {
        return bad("packages: a kernel (linux-image-amd64) is needed for the UKIs".into());
    }
    for f in r.files.keys() {
        if !f.starts_with('/') || f.split('/').any(|s| s == "..") {
            return bad(format!("files: `{f}` must be an absolute path without `..`"));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_recipes_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("images/").flatten() {
            if e.path().extension().is_some_and(|x| x == "yaml") {
                let r = load(&e.path()).unwrap_or_else(|e| panic!("{e}"));
                crate::sysctl::check(&r.sysctl).unwrap_or_else(|e| panic!("{}: {e:?}", r.name));
                n += 1;
            }
        }
        assert!(n >= 1);
    }

    #[test]
    fn mistakes_are_reported_with_a_position() {
        let e = parse("name: x\nepoch: 1\npakages: []\n", "r.yaml").expect_err("unknown field");
        let msg = e.to_string();
        assert!(msg.contains("pakages") && msg.contains("r.yaml"), "{msg}");
        assert!(msg.contains("line 3") || msg.contains("3:"), "position: {msg}");
    }
}
