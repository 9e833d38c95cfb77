//! The cluster step: the Kubernetes stage's files rendered into the directory `metal6 serve
//! --cluster-dir` serves, and each node waited for until it reports `cluster-joined`.
//!
//! No operator step: `apply` renders the init and per-node files when it starts; the first
//! control plane runs `kubeadm init` at its first boot and reports the cluster CA's hash with
//! `cluster-joined`; `apply` then renders the join files with that hash; the other nodes'
//! cluster units (which retry while their join file is missing) fetch them and join. The hash
//! is read from the node's own report each time, so a restarted `apply` renders them too.
//!
//! The file writing is shared with `metal6 cluster render` (one implementation).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use metal6_inventory::Inventory;
use metal6_inventory::model::Node;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Io(String),
    #[error("the inventory has no `cluster` section")]
    NoCluster,
    #[error("the cluster's join token: {0}")]
    Token(String),
    #[error("rendering the cluster files: {0}")]
    Render(#[from] metal6_cluster::RenderError),
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ClusterError {
    move |e| ClusterError::Io(format!("{what}: {e}"))
}

/// A written file, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub path: String,
    pub bytes: usize,
    pub secret: bool,
}

/// `OUT/certificate.key`: read when it exists (it must be 0600), else made from 32 random
/// bytes. It never goes into a node's directory, so `metal6 serve --cluster-dir OUT` never
/// serves it; it is in the control planes' own files only.
pub fn certificate_key_in(out: &Path) -> Result<String, ClusterError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let path = out.join("certificate.key");
    match std::fs::read_to_string(&path) {
        Ok(k) => {
            let mode = std::fs::metadata(&path).map_err(io(format!("{}", path.display())))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(ClusterError::Io(format!(
                    "{} is readable by others (mode {:o}): chmod 600 it, and render with a new key if it leaked",
                    path.display(),
                    mode & 0o777
                )));
            }
            return Ok(k.trim().to_owned());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ClusterError::Io(format!("reading {}: {e}", path.display()))),
    }
    std::fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(io("reading /dev/urandom".into()))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("creating {}", path.display())))?;
    writeln!(f, "{hex}").and_then(|()| f.sync_all()).map_err(io(format!("writing {}", path.display())))?;
    Ok(hex)
}

/// Writes rendered files under `out`: each replaced whole (a temporary file renamed over it,
/// so the server never serves half a file), secrets 0600 from the first byte.
pub fn write_files(out: &Path, files: &[metal6_cluster::File]) -> Result<Vec<Written>, ClusterError> {
    let mut written = Vec::new();
    for f in files {
        let path = out.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let tmp = path.with_extension("metal6-tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if f.secret { 0o600 } else { 0o644 })
            .open(&tmp)
            .map_err(io(format!("writing {}", tmp.display())))?;
        file.write_all(f.text.as_bytes()).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("replacing {}", path.display())))?;
        written.push(Written { path: f.path.clone(), bytes: f.text.len(), secret: f.secret });
    }
    Ok(written)
}

/// Renders the cluster's files (no constellation) into `out`: without the CA hash the init and
/// per-node files, with it the join files too.
pub fn render_into(inv: &Inventory, out: &Path, ca_cert_hash: Option<&str>) -> Result<Vec<Written>, ClusterError> {
    let cluster = inv.cluster.as_ref().ok_or(ClusterError::NoCluster)?;
    let token = cluster.join_token.resolve().map_err(|e| ClusterError::Token(e.to_string()))?;
    let certificate_key = certificate_key_in(out)?;
    let opts = metal6_cluster::Options {
        join_token: &token,
        certificate_key: &certificate_key,
        ca_cert_hash,
        emulation: None,
    };
    let (files, _) = metal6_cluster::render(inv, &opts)?;
    write_files(out, &files)
}

/// The node that runs `kubeadm init`.
pub fn first_control_plane(inv: &Inventory) -> Option<&Node> {
    inv.cluster.as_ref()?.control_plane.first().map(|&i| &inv.nodes[i])
}
