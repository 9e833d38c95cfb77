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

/// The cluster CA `kubeadm init` makes.
const CA_CERT: &str = "etc/kubernetes/pki/ca.crt";

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
    find_tool("kubeadm")
}

fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|c| c.is_file()))
        .unwrap_or(None)
}

/// The admin kubeconfig `kubeadm init` writes.
const ADMIN_CONF: &str = "etc/kubernetes/admin.conf";

/// The cluster's workload, applied once from the first control plane after `kubeadm init`:
/// Multus, and the constellation's NADs when they were rendered. Fetched from the server with
/// the node's token, kept under /etc/metal6/manifests, applied with `kubectl apply` and the
/// admin kubeconfig, retried while the fresh API server comes up; reported as
/// `workload-applying`, `workload-applied` (files, objects), `workload-skipped` (no kubectl)
/// or `workload-failed`.
fn workload(
    agent: &ureq::Agent,
    url: &dyn Fn(&str) -> String,
    root: &Path,
    reporter: &Reporter,
    deadline: Instant,
) -> Result<()> {
    let Some(kubectl) = find_tool("kubectl") else {
        reporter.post(&json!({"phase": "workload-skipped", "reason": "kubectl is not installed"}));
        say!("kubectl is not installed: the workload is not applied");
        return Ok(());
    };
    let mut files = Vec::new();
    for name in ["multus-thick.yaml", "nads.yaml"] {
        if let Fetched::Body(b) = fetch(agent, &url(name), deadline)? {
            let rel = format!("etc/metal6/manifests/{name}");
            write(root, &rel, &b, 0o644)?;
            files.push((name, root.join(rel)));
        }
    }
    if files.is_empty() {
        reporter.post(&json!({"phase": "workload-skipped", "reason": "the server has no workload for this cluster"}));
        return Ok(());
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    reporter.post(&json!({"phase": "workload-applying", "files": names}));
    let kubeconfig = root.join(ADMIN_CONF);
    let mut objects = 0usize;
    for (name, path) in &files {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["apply", "-f"])
                .arg(path)
                .output()
                .with_context(|| format!("running {}", kubectl.display()))?;
            if out.status.success() {
                objects += String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count();
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").to_owned();
            // A control plane minutes old may not answer yet: retry until the deadline.
            if Instant::now() + Duration::from_secs(3) < deadline && attempt < 20 {
                say!("kubectl apply -f {name}: {err}; retrying");
                std::thread::sleep(Duration::from_secs(3));
                continue;
            }
            bail!("kubectl apply -f {name} failed after {attempt} attempt(s): {err}");
        }
    }
    reporter.post(&json!({"phase": "workload-applied", "files": names, "objects": objects}));
    say!("workload applied: {} ({objects} objects)", names.join(", "));
    Ok(())
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
        // The hash every join needs (`--discovery-token-ca-cert-hash`): reported by the node
        // that made the CA, so the orchestrator renders the joins with no operator step.
        let ca = root.join(CA_CERT);
        let ca_cert_hash = if mode == "init" {
            match std::fs::read_to_string(&ca).map(|pem| ca_cert_hash(&pem)) {
                Ok(Some(h)) => Some(h),
                Ok(None) => {
                    say!("{}: not a certificate kubeadm's hash can be taken of", ca.display());
                    None
                }
                Err(e) => {
                    say!("reading {}: {e}", ca.display());
                    None
                }
            }
        } else {
            None
        };
        reporter.post(&json!({
            "phase": "cluster-joined",
            "mode": mode,
            "seconds": started.elapsed().as_secs_f64(),
            "ca_cert_hash": ca_cert_hash,
        }));
        if mode == "init" {
            // The cluster exists now: its workload goes on from here, once. Any failure —
            // a fetch, a write, kubectl — is reported, or the orchestrator would only see a
            // timeout.
            let deadline = Instant::now() + wait.max(Duration::from_secs(60));
            if let Err(e) = workload(&agent, &url, root, &reporter, deadline) {
                reporter.post(&json!({"phase": "workload-failed", "stderr": format!("{e:#}")}));
                return Err(e);
            }
        }
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

/// kubeadm's `--discovery-token-ca-cert-hash` of a PEM certificate: `sha256:` and the hex
/// SHA-256 of its DER SubjectPublicKeyInfo (kubeadm's `pubkeypin.Hash`; the same as
/// `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`). `None` when the
/// text is not one well-formed certificate. A small DER walk: no X.509 library in the
/// installer for the one field it needs.
pub fn ca_cert_hash(pem: &str) -> Option<String> {
    use sha2::{Digest, Sha256};
    let b64: String = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64_decode(&b64)?;
    let (cert, _) = der_tlv(&der, 0x30)?;
    let (tbs, _) = der_tlv(cert.1, 0x30)?;
    let mut rest = tbs.1;
    // version [0] EXPLICIT is optional; then serial, signature, issuer, validity, subject.
    if rest.first() == Some(&0xa0) {
        rest = der_tlv(rest, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30, 0x30, 0x30] {
        rest = der_tlv(rest, tag)?.1;
    }
    let ((whole, _), _) = der_tlv(rest, 0x30)?;
    let hex: String = Sha256::digest(whole).iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("sha256:{hex}"))
}

/// One DER element with `tag` at the start of `b`: ((the whole element, its content), what follows).
type Tlv<'a> = ((&'a [u8], &'a [u8]), &'a [u8]);

fn der_tlv(b: &[u8], tag: u8) -> Option<Tlv<'_>> {
    if *b.first()? != tag {
        return None;
    }
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = b.get(2..2 + n)?.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    let whole = b.get(..end)?;
    Some(((whole, &whole[head..]), &b[end..]))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod ca_hash_tests {
    /// An EC P-256 CA made with `openssl req -x509 -newkey ec ... -subj /CN=kubernetes`; the
    /// hash is what `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
    /// sha256sum` prints for it.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBfzCCASWgAwIBAgIUNVKTIZQN6QVzJuYLBMsDv9ujF/0wCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKa3ViZXJuZXRlczAeFw0yNjEyMDcwMzMzMDhaFw0zNjEyMDQw
MzMzMDhaMBUxEzARBgNVBAMMCmt1YmVybmV0ZXMwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASrahsHWgsVP0F1QmaETMI0kOUMu/CUpR9Veu/zWqXZjsate2CE9Fo5
+kURb7zw43Jvj+Y8frNmARfPWesrE1QUo1MwUTAdBgNVHQ4EFgQU0O6oz2Z7Qne1
vSOg5PgqUQe0uXcwHwYDVR0jBBgwFoAU0O6oz2Z7Qne1vSOg5PgqUQe0uXcwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiA9ntDxpbCTi+1tkPfHUajk
9Lc9n1NDF5wbsAhYa6SEIgIhAO7ee2i2tApfRarKeNI4xFoiJCgwnZgEBOd4r/r1
XQ2k
-----END CERTIFICATE-----
";

    #[test]
    fn the_hash_is_openssls() {
        assert_eq!(
            super::ca_cert_hash(CA).as_deref(),
            Some("sha256:d1ef41cf48eecd1b1ff7fa6b8a3e9c6e91e498bc08265ad5d076bad7c1bc4870")
        );
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(super::ca_cert_hash(""), None);
        assert_eq!(super::ca_cert_hash("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"), None);
        // Truncated: every prefix of the body fails cleanly.
        let body: String = CA.lines().filter(|l| !l.starts_with("-----")).collect();
        for cut in (0..body.len()).step_by(7) {
            let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----", &body[..cut]);
            assert_eq!(super::ca_cert_hash(&pem), None, "cut at {cut}");
        }
    }
}
