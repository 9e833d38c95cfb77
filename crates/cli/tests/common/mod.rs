//! Test fixtures for running the real `metal6` binary and real clients in network namespaces.
//!
//! Every namespace is named `m6t-<pid>-<n>`; a guard kills what runs in it and deletes it on
//! drop, and `Netns::new` first removes leftovers of earlier runs whose process is gone. Only
//! addresses inside these namespaces are used: nothing leaves the machine.

#![allow(dead_code, clippy::print_stderr)]

pub mod fleet;
pub mod lab;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why a namespace test cannot run here (not root, no `ip`); `None` when it can.
pub fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some("network namespace tests need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (`ip`) is not installed".into());
    }
    None
}

/// Returns early from a test with a message when namespaces cannot be used.
#[macro_export]
macro_rules! require_netns {
    () => {
        if let Some(why) = common::cannot_run() {
            eprintln!("SKIP: {why}");
            return;
        }
    };
}

/// Returns early with a message when a client tool is missing (`make deps` installs them).
#[macro_export]
macro_rules! require_tool {
    ($tool:expr) => {
        if !common::have($tool) {
            // In CI a missing peer is a missing install step, not a reason to skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is not installed: `make deps` should have installed it",
                $tool
            );
            eprintln!("SKIP: {} is not installed (run `make deps`)", $tool);
            return;
        }
    };
}

pub fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

fn cleanup_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("m6t-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_all_in(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn kill_all_in(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

impl Netns {
    pub fn new() -> Netns {
        cleanup_leftovers();
        let name = format!("m6t-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        sh(&format!("ip netns add {name}"));
        let ns = Netns { name };
        ns.exec("ip link set lo up");
        // DAD would delay every address by a second or more; these links are private.
        ns.exec("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0");
        ns
    }

    /// Runs a shell command in the namespace and asserts it succeeds.
    pub fn exec(&self, cmd: &str) -> Output {
        sh(&format!("ip netns exec {} sh -c '{}'", self.name, cmd.replace('\'', "'\\''")))
    }

    /// Runs a command in the namespace, returning its output whatever the exit code.
    pub fn try_exec(&self, cmd: &str) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", cmd]).output().expect("spawn ip netns exec")
    }

    pub fn spawn(&self, program: &Path, args: &[&str], log: &Path) -> Child {
        let log = std::fs::File::create(log).expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn in namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Waits until `ifname` in `ns` has a link-local address (before that, nothing can be sent).
pub fn wait_link_local(ns: &Netns, ifname: &str) {
    wait_for("a link-local address", Duration::from_secs(10), || {
        let out = ns.try_exec(&format!("ip -6 addr show dev {ifname} scope link"));
        String::from_utf8_lossy(&out.stdout).contains("fe80::").then_some(())
    });
}

/// The usual pair: a server namespace with `m6s0` (fd00:6d:1::1/64) and a client namespace
/// with `m6c0` carrying `client_mac`, both with link-local addresses up.
pub fn lab_link(client_mac: &str) -> (Netns, Netns) {
    let (srv, cli) = (Netns::new(), Netns::new());
    link(&srv, "m6s0", &cli, "m6c0", client_mac);
    srv.exec("ip -6 addr add fd00:6d:1::1/64 dev m6s0 nodad");
    wait_link_local(&srv, "m6s0");
    wait_link_local(&cli, "m6c0");
    (srv, cli)
}

/// Runs `metal6 dhcp6 probe` in `ns`; returns the JSON answers, one per client.
pub fn probe(ns: &Netns, args: &str) -> (bool, Vec<serde_json::Value>, String) {
    let out = ns.try_exec(&format!("{} dhcp6 probe --interface m6c0 {args}", metal6().display()));
    let answers = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (out.status.success(), answers, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A veth pair between two namespaces, both ends up, with the given MAC on `b`'s end.
pub fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str, b_mac: &str) {
    sh(&format!("ip link add {a_if} netns {} type veth peer name {b_if} netns {}", a.name, b.name));
    b.exec(&format!("ip link set {b_if} address {b_mac}"));
    a.exec(&format!("ip link set {a_if} up"));
    b.exec(&format!("ip link set {b_if} up"));
}

pub fn sh(cmd: &str) -> Output {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("spawn sh");
    assert!(out.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn metal6() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_metal6"))
}

/// Where the lab image is built for the tests that boot it (`make e2e`, the guest test).
pub fn lab_artifacts() -> PathBuf {
    root().join("target/lab-artifacts")
}

/// Builds the lab image (cached across runs by content) into [`lab_artifacts`]; the build
/// report. Needs the installer (`cargo build --profile installer -p metal6-installer`).
pub fn build_lab_image() -> serde_json::Value {
    let out = Command::new(metal6())
        .args(["image", "build", "images/lab.yaml", "-o", "json", "--out"])
        .arg(lab_artifacts())
        .arg("--installer")
        .arg(root().join("target/installer/metal6-installer"))
        .current_dir(root())
        .output()
        .expect("metal6 image build");
    assert!(out.status.success(), "metal6 image build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("build report")
}

/// The kubernetes-validate `make deps` puts into `.venv`; `None` (a skip, failing in CI) without.
pub fn kubernetes_validate() -> Option<PathBuf> {
    let p = root().join(".venv/bin/kubernetes-validate");
    if p.exists() {
        return Some(p);
    }
    assert!(std::env::var_os("CI").is_none(), "kubernetes-validate missing: `make deps` installs it");
    eprintln!("SKIP: {} missing (run `make deps`)", p.display());
    None
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; never a fixed sleep.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `metal6 serve` in a namespace; killed on drop (with the namespace).
pub struct Server {
    pub child: Child,
    pub state: tempfile::TempDir,
    pub log: PathBuf,
}

impl Server {
    pub fn start(ns: &Netns, inventory: &Path, interface: &str, extra: &[&str]) -> Server {
        let state = tempfile::tempdir().expect("state dir");
        let log = state.path().join("serve.log");
        let inv = inventory.to_str().expect("utf-8 path").to_owned();
        let st = state.path().to_str().expect("utf-8 path").to_owned();
        let mut args = vec!["serve", "-i", &inv, "--interface", interface, "--state-dir", &st];
        args.extend_from_slice(extra);
        let child = ns.spawn(&metal6(), &args, &log);
        let mut s = Server { child, state, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.log_text().contains("DHCPv6 listening") {
            let exited = s.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "metal6 serve did not start listening ({}):\n{}",
                exited.map_or_else(|| "timed out after 20 s".to_owned(), |st| st.to_string()),
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn stats(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state.path().join("stats.json")).unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA (`ca.pem`) and a server certificate signed by it (`cert.pem`, `key.pem`) for the given
/// IP SANs, in `dir` — what operators do for BMCs: a site CA, pinned with `--ca-file`. Also
/// `other-ca.pem`, a CA that signed nothing here.
pub fn tls_ca_and_leaf(dir: &Path, ips: &[&str]) {
    tls_ca_and_leaf_with(dir, ips, "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes");
}

/// [`tls_ca_and_leaf`] with RSA keys: what firmware without elliptic curves needs (Debian 12's
/// OVMF). The key is mode 0600, as `metal6 serve --tls-key` requires.
pub fn tls_rsa_ca_and_leaf(dir: &Path, ips: &[&str]) {
    tls_ca_and_leaf_with(dir, ips, "-newkey rsa:2048 -nodes");
}

fn tls_ca_and_leaf_with(dir: &Path, ips: &[&str], ec: &str) {
    let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    std::fs::write(
        dir.join("leaf.cnf"),
        format!(
            "[leaf]\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            sans.join(",")
        ),
    )
    .expect("cnf");
    let d = dir.display();
    sh(&format!(
        "cd {d} && openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=metal6-test-ca 2>/dev/null \
         && openssl req {ec} -keyout key.pem -out leaf.csr -subj /CN=bmc 2>/dev/null \
         && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 \
            -extfile leaf.cnf -extensions leaf 2>/dev/null \
         && openssl req -x509 {ec} -keyout other.key -out other-ca.pem -days 2 -subj /CN=someone-else 2>/dev/null \
         && chmod 600 key.pem"
    ));
}
