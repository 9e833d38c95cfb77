//! The installed node's cluster step (`metal6-installer cluster`, the `metal6-cluster.service`
//! first-boot unit): fetch this node's cluster files from `metal6 serve` with its token, put
//! them where containerd, the CNI runtime, systemd-networkd and kubeadm read them, then run
//! `kubeadm init` or `kubeadm join` when kubeadm is installed — and report each step to the
//! node's timeline (`cluster-staged`, `cluster-joining`, `cluster-joined`, `cluster-failed`).
//!
//! A node with no kubeadm file yet (joins need the CA hash, known after `kubeadm init`) reports
//! `cluster-waiting` and fails, so systemd retries it later.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use crate::console::say;
use crate::http::{self, Reporter};
use crate::plan::NodeFile;

/// Where each fetched file goes (relative to the root), and its mode.
const FILES: &[(&str, &str, u32)] = &[
    ("containerd.toml", "etc/containerd/config.toml", 0o644),
    ("10-metal6-pods.conflist", "etc/cni/net.d/10-metal6-pods.conflist", 0o644),
    // A drop-in of the network unit the installer wrote (10-metal6-boot.network).
    ("pod-routes.conf", "etc/systemd/network/10-metal6-boot.network.d/pod-routes.conf", 0o644),
];

/// The kubeadm configuration, 0600 (it holds the join token).
const KUBEADM_CONFIG: &str = "etc/metal6/kubeadm.yaml";

enum Fetched {
    Body(String),
    Missing,
}

/// `url` carries the node's token in its query: every message shows it redacted (the
/// console is captured by the BMC, and the token opens the node's kubeadm files).
fn fetch(agent: &ureq::Agent, url: &str, deadline: Instant) -> Result<Fetched> {
    let shown = http::redact(url);
    loop {
        match agent.get(url).call() {
            Ok(mut r) if r.status().as_u16() == 200 => {
                let body = r
                    .body_mut()
                    .with_config()
                    .limit(4 << 20)
                    .read_to_string()
                    .map_err(|e| anyhow!("reading {shown}: {}", http::error_text(&e)))?;
                return Ok(Fetched::Body(body));
            }
            Ok(r) if r.status().as_u16() == 404 => return Ok(Fetched::Missing),
            Ok(r) => bail!("GET {shown}: HTTP {}", r.status().as_u16()),
            Err(e) if Instant::now() < deadline => {
                say!("GET {shown}: {}; retrying", http::error_text(&e));
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => bail!("GET {shown}: {}", http::error_text(&e)),
        }
    }
}

fn write(root: &Path, rel: &str, body: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("metal6-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, body.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
}

/// Makes the running system take the new files before kubeadm needs them: containerd's
/// cgroup driver and CNI path, networkd's pod routes. Only on the live system (`root` = /).
fn reload_services(root: &Path) -> Vec<String> {
    if root != Path::new("/") {
        return vec!["not reloaded: --root is not /".into()];
    }
    let mut done = Vec::new();
    for (what, prog, args) in [
        ("containerd", "systemctl", &["try-restart", "containerd.service"][..]),
        ("networkd", "networkctl", &["reload"][..]),
    ] {
        let ok = Command::new(prog).args(args).status().is_ok_and(|s| s.success());
        done.push(format!("{what}: {}", if ok { "reloaded" } else { "reload failed" }));
    }
    done
}

/// `kubeadm` on PATH, if any.
fn find_kubeadm() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("kubeadm")).find(|c| c.is_file()))
        .unwrap_or(None)
}

pub fn run(node_file: &Path, root: &Path, wait: Duration) -> Result<()> {
    let node: NodeFile = serde_json::from_str(
        &std::fs::read_to_string(node_file).with_context(|| format!("reading {}", node_file.display()))?,
    )
    .with_context(|| format!("parsing {}", node_file.display()))?;
    let Some(base) = node.events_url.strip_suffix("/events") else {
        bail!("unexpected events URL {}", http::redact(&node.events_url));
    };
    let agent = http::agent();
    let reporter = Reporter::new(agent.clone(), &node.events_url, Some(&node.token));
    let url = |file: &str| format!("{base}/cluster/{file}?token={}", node.token);
    let deadline = Instant::now() + wait;
    let mut staged = Vec::new();
    for (file, dest, mode) in FILES {
        match fetch(&agent, &url(file), deadline)? {
            Fetched::Body(b) => {
                write(root, dest, &b, *mode)?;
                staged.push(*dest);
            }
            Fetched::Missing => {
                reporter.post(
                    &json!({"phase": "cluster-waiting", "reason": format!("the server has no {file} for this node")}),
                );
                bail!("the server has no {file} for {} (is it serving --cluster-dir?)", node.node);
            }
        }
    }
    let (mode, config) = match fetch(&agent, &url("kubeadm-init.yaml"), deadline)? {
        Fetched::Body(b) => ("init", b),
        Fetched::Missing => match fetch(&agent, &url("kubeadm-join.yaml"), deadline)? {
            Fetched::Body(b) => ("join", b),
            Fetched::Missing => {
                let reason = "no kubeadm file for this node yet (joins need the cluster CA's hash)";
                reporter.post(&json!({"phase": "cluster-waiting", "reason": reason}));
                bail!("{reason}");
            }
        },
    };
    write(root, KUBEADM_CONFIG, &config, 0o600)?;
    staged.push(KUBEADM_CONFIG);
    say!("cluster files in place: {}", staged.join(", "));
    let Some(kubeadm) = find_kubeadm() else {
        reporter.post(
            &json!({"phase": "cluster-staged", "mode": mode, "files": staged, "reason": "kubeadm is not installed"}),
        );
        say!("kubeadm is not installed: files staged, kubeadm {mode} not run");
        return Ok(());
    };
    let services = reload_services(root);
    reporter.post(&json!({"phase": "cluster-joining", "mode": mode, "files": staged, "services": services}));
    let config_path = root.join(KUBEADM_CONFIG);
    let started = Instant::now();
    let mut cmd = Command::new(&kubeadm);
    cmd.arg(mode).arg("--config").arg(&config_path);
    if mode == "init" {
        // For the other control-plane nodes (their join files carry the certificate key).
        cmd.arg("--upload-certs");
    }
    let out = cmd.output().with_context(|| format!("running {}", kubeadm.display()))?;
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    if out.status.success() {
        reporter.post(&json!({"phase": "cluster-joined", "mode": mode, "seconds": started.elapsed().as_secs_f64()}));
        say!("kubeadm {mode} done in {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    // kubeadm may have written kubelet.conf before failing: reset so the unit (which skips
    // nodes that have it) can try again.
    let reset = Command::new(&kubeadm).args(["reset", "-f"]).status().is_ok_and(|s| s.success());
    reporter.post(&json!({
        "phase": "cluster-failed",
        "mode": mode,
        "exit": out.status.code(),
        "stderr": tail(&out.stderr),
        "reset": reset,
    }));
    bail!("kubeadm {mode} failed ({}): {}", out.status, tail(&out.stderr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// One HTTP exchange on a local port: reads the request, answers `response`, closes.
    fn serve_once(response: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(response);
        });
        format!("http://127.0.0.1:{port}/v1/nodes/a/cluster/kubeadm-init.yaml?token=0123456789abcdef")
    }

    /// The token must not reach the console or the error the unit's log keeps, on any of
    /// fetch's failure paths.
    #[test]
    fn fetch_errors_do_not_show_the_token() {
        // No proxy from the environment: the test talks to its own port.
        let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).http_status_as_error(false).build().into();
        let answers: [&'static [u8]; 2] = [
            // A body that is not text, and shorter than announced: reading it fails.
            b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n\xff\xfe\xfd",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
        ];
        for answer in answers {
            let url = serve_once(answer);
            let e = match fetch(&agent, &url, Instant::now()) {
                Ok(_) => panic!("{url}: fetched"),
                Err(e) => format!("{e:#}"),
            };
            assert!(!e.contains("0123456789abcdef"), "{e}");
            assert!(e.contains("kubeadm-init.yaml?token=REDACTED"), "{e}");
        }
    }
}
