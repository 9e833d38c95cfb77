//! `metal6 bmc` against sushy-tools 2.2.0 (OpenStack's Redfish emulator, fake driver) over
//! HTTPS with Basic auth, on an IPv6 address in a namespace of its own: a Redfish peer that
//! is not ours. It has no SessionService (so Basic is used), delays power transitions by
//! 1-11 s, ignores `BootSourceOverrideEnabled` and rewrites UefiHttp without a URI to Pxe
//! (measured in the notes, §12) — metal6 must wait for the first and refuse the others.

#![allow(clippy::print_stderr)] // skips say why

mod common;

use std::path::PathBuf;
use std::process::{Child, Output};
use std::time::Duration;

use common::{Netns, root, sh, wait_for};

const PASSWORD: &str = "sushy-pw-42";

fn sushy() -> Option<PathBuf> {
    let p = root().join(".venv/bin/sushy-emulator");
    if p.exists() {
        return Some(p);
    }
    assert!(std::env::var_os("CI").is_none(), "sushy-tools is not installed: `make deps` should have installed it");
    eprintln!("SKIP: {} missing (run `make deps`)", p.display());
    None
}

struct Sushy {
    ns: Netns,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sushy {
    fn start(bin: &std::path::Path) -> Sushy {
        let ns = Netns::new();
        ns.exec("ip link set lo up && ip -6 addr add fd00:6d:b::5/128 dev lo");
        let dir = tempfile::tempdir().expect("tmp");
        common::tls_ca_and_leaf(dir.path(), &["fd00:6d:b::5"]);
        let d = dir.path().display();
        // sushy-tools already depends on bcrypt: the htpasswd line needs nothing else.
        let py = bin.with_file_name("python");
        sh(&format!(
            "{} -c \"import bcrypt;print('admin:'+bcrypt.hashpw(b'{PASSWORD}',bcrypt.gensalt(5)).decode())\" > {d}/htpasswd",
            py.display()
        ));
        std::fs::write(
            dir.path().join("sushy.conf"),
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = 'fd00:6d:b::5'\nSUSHY_EMULATOR_LISTEN_PORT = 8000\n\
                 SUSHY_EMULATOR_SSL_CERT = '{d}/cert.pem'\nSUSHY_EMULATOR_SSL_KEY = '{d}/key.pem'\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{d}/htpasswd'\nSUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef094', 'name': 'vm0', \
                 'power_state': 'Off', 'external_notifier': False, \
                 'nics': [{{'mac': '52:54:00:6d:0c:01', 'ip': '127.0.0.10'}}]}}]\n"
            ),
        )
        .expect("conf");
        let conf = dir.path().join("sushy.conf");
        let child = ns.spawn(bin, &["--config", conf.to_str().expect("utf-8")], &dir.path().join("sushy.log"));
        let s = Sushy { ns, dir, child };
        let ca = s.dir.path().join("ca.pem");
        wait_for("sushy-emulator to answer", Duration::from_secs(30), || {
            let o =
                s.ns.try_exec(&format!("curl -sf --cacert {} https://[fd00:6d:b::5]:8000/redfish/v1/", ca.display()));
            o.status.success().then_some(())
        });
        s
    }

    fn bmc(&self, args: &str, password: &str) -> Output {
        let cmd = format!(
            "cd {} && METAL6_SUSHY_PASSWORD={password} {} bmc {args} -i tests/redfish/sushy.yaml --ca-file {}/ca.pem vm0",
            root().display(),
            common::metal6().display(),
            self.dir.path().display()
        );
        let out = self.ns.try_exec(&cmd);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!all.contains(password), "the BMC password was printed:\n{all}");
        out
    }

    fn stdout(&self, args: &str) -> (bool, String) {
        let o = self.bmc(args, PASSWORD);
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

#[test]
fn sushy_inventory_power_and_boot_override() {
    require_netns!();
    require_tool!("openssl");
    let Some(bin) = sushy() else { return };
    let s = Sushy::start(&bin);
    let (ok, out) = s.stdout("inventory");
    assert!(ok && out.contains("52:54:00:6d:0c:01") && out.contains("all inventory MACs found"), "{out}");
    // Power transitions show late (1-11 s): metal6 waits until PowerState says so.
    let (ok, out) = s.stdout("power on");
    assert!(ok && out.contains("vm0   On"), "{out}");
    let (ok, out) = s.stdout("power off");
    assert!(ok && out.contains("vm0   Off"), "{out}");
    assert!(s.stdout("power status").1.contains("vm0   Off"));
    // Cycle of a node that is off powers it on (sushy offers no PowerCycle: 501).
    let (ok, out) = s.stdout("power cycle");
    assert!(ok && out.contains("vm0   On"), "{out}");
    // The override is read back: sushy keeps it Continuous, and turns UefiHttp into Pxe.
    let (ok, out) = s.stdout("boot-once pxe");
    assert!(!ok && out.contains("boot override is \"Continuous\", not \"Once\""), "{out}");
    let (ok, out) = s.stdout("boot-once uefi-http");
    assert!(!ok && out.contains("reads back as \"Pxe\", not \"UefiHttp\""), "{out}");
    // No BIOS on the fake driver (501) and no profile here: a clear error, not a crash.
    let (ok, out) = s.stdout("bios plan");
    assert!(!ok && out.contains("has no BIOS profile"), "{out}");
    // metal6 doctor's BMC checks that apply to a DMTF (non-Dell) BMC pass: TLS, login,
    // identity, the boot NIC's MAC; no BIOS (501) and no Dell job queue are skips, not failures.
    let out = s.ns.try_exec(&format!(
        "cd {} && METAL6_SUSHY_PASSWORD={PASSWORD} {} doctor --no-host --bmc -i tests/redfish/sushy.yaml --ca-file {}/ca.pem -o json",
        root().display(),
        common::metal6().display(),
        s.dir.path().display()
    ));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let status = |id: &str| {
        report["checks"].as_array().into_iter().flatten().find(|c| c["id"] == id).map(|c| c["status"].clone())
    };
    for id in ["bmc.connect", "bmc.identity", "bmc.boot-nic", "bmc.nics", "bmc.jobs"] {
        assert_eq!(status(id), Some("ok".into()), "{id}: {report:#}");
    }
    // Basic auth with a wrong password: 401, named.
    let o = s.bmc("inventory", "not-the-password");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() && text.contains("HTTP 401"), "{text}");
}
