//! `metal6 lab up`: one inventory node as a QEMU guest (OVMF, TCG) with a blank disk,
//! netbooted over IPv6 by a real `metal6 serve`, followed through its timeline until it
//! reports `ready` (or fails). What `make demo` shows and the end-to-end test runs.
//!
//! Everything lives in a network namespace of its own (`m6lab-<pid>-<node>`): a tap named after the
//! inventory's provisioning interface carries the boot server's addresses, the server and
//! QEMU run inside it, and nothing reaches another network. Leftover namespaces of dead runs
//! are removed first; this run's is removed on exit, on error and on Ctrl-C.
//!
//! The guest boots disk first, network second — the lab's version of "netboot when the disk
//! has nothing bootable": a blank disk falls through to UEFI HTTP (or PXE) boot, and after the
//! install the same VM boots the installed system from disk. QEMU knobs follow the shared
//! OVMF notes (§5-6): no IPv4 stack, a 3 s front-page wait (the DAD race), no option ROM.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use metal6_render::timeline::phase_of;
use serde::Serialize;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Debug, clap::Subcommand)]
pub enum LabCmd {
    /// Boot one inventory node in QEMU against metal6 serve and follow it until it is ready.
    Up(UpArgs),
    /// The lab with BMCs: every node a QEMU VM behind a Redfish BMC simulator, the boot server
    /// and the BMCs in one namespace; runs until Ctrl-C (drive it with `metal6 apply` inside).
    Env(EnvArgs),
    /// `make demo`: the lab with BMCs, then `metal6 apply` on it: every node powered on through
    /// its BMC with a one-time network boot, installed, and ready, shown live.
    Apply(LabApplyArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct EnvArgs {
    /// The lab inventory (its nodes need a `bmc` with an IPv6 address).
    #[arg(short, long, default_value = "inventory/lab.yaml")]
    inventory: PathBuf,
    /// The artifact root built by `metal6 image build`.
    #[arg(long, default_value = "artifacts")]
    artifacts: PathBuf,
    /// Where the server's state, the VMs' disks and logs, and `env.json` go (emptied first).
    #[arg(long, default_value = "lab/env")]
    workdir: PathBuf,
    /// Give this node's VM no network (it can never netboot: what a miscabled server does).
    #[arg(long, value_name = "NODE")]
    no_network: Vec<String>,
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
}

#[derive(Debug, clap::Args)]
pub struct LabApplyArgs {
    #[command(flatten)]
    env: EnvArgs,
    /// Arguments for `metal6 apply` after `--`, e.g. `-- --nodes lab-node-1`.
    #[arg(last = true)]
    apply_args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The lab inventory.
    #[arg(short, long, default_value = "inventory/lab.yaml")]
    inventory: PathBuf,
    /// The node to boot (its MAC and boot method come from the inventory).
    #[arg(long, default_value = "lab-node-1")]
    node: String,
    /// The artifact root built by `metal6 image build`.
    #[arg(long, default_value = "artifacts")]
    artifacts: PathBuf,
    /// Where the server's state, the guest's disk, serial log and the summary go.
    #[arg(long, default_value = "lab")]
    workdir: PathBuf,
    /// Size of the guest's blank disk, GiB.
    #[arg(long, default_value_t = 4)]
    disk_gib: u32,
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Copy the guest's serial console to stderr.
    #[arg(long)]
    console: bool,
    /// For nodes whose profile says `https`: a directory with `ca.pem`, and `cert.pem` and
    /// `key.pem` of the boot server signed by it. The server serves HTTPS with them and the
    /// firmware trusts `ca.pem` (OVMF's fw_cfg `etc/edk2/https/cacerts`); the artifacts'
    /// installer must have been built with the same CA (`image build --installer-ca`).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The CA the firmware trusts instead of `TLS_DIR/ca.pem` (to see a wrong one refused).
    #[arg(long, value_name = "PEM", requires = "tls_dir")]
    firmware_ca: Option<PathBuf>,
}

/// The end of a lab run, also written to `WORKDIR/summary.json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub node: String,
    pub result: String,
    pub seconds: f64,
    /// Seconds after QEMU started at which each phase was first reached.
    pub phases: Vec<(String, f64)>,
    pub state_dir: PathBuf,
    pub serial_log: PathBuf,
}

struct Lab {
    ns: String,
    children: Vec<Child>,
}

impl Lab {
    fn new(node: &str) -> Result<Lab> {
        remove_dead_namespaces();
        let ns = format!("m6lab-{}-{node}", std::process::id());
        run("ip", &["netns", "add", &ns])?;
        Ok(Lab { ns, children: vec![] })
    }

    fn exec(&self, script: &str) -> Result<()> {
        run("ip", &["netns", "exec", &self.ns, "sh", "-c", script])
    }

    fn spawn(&mut self, program: &Path, args: &[String], log: &Path) -> Result<()> {
        let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.children.push(child);
        Ok(())
    }

    fn any_exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|c| match c.try_wait() {
            Ok(Some(st)) => Some(format!("pid {} exited ({st})", c.id())),
            _ => None,
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_all_in(&self.ns);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn kill_all_in(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

/// `m6lab-<pid>` namespaces whose process is gone: a crashed or killed run's.
fn remove_dead_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) =
            name.strip_prefix("m6lab-").and_then(|p| p.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_all_in(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

pub fn run_cmd(cmd: &LabCmd) -> Result<ExitCode> {
    let a = match cmd {
        LabCmd::Up(a) => a,
        LabCmd::Env(a) => return env_cmd(a),
        LabCmd::Apply(a) => return lab_apply(a),
    };
    let summary = up(a)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{} {} in {:.1} s", summary.node, summary.result, summary.seconds)?;
    for (p, t) in &summary.phases {
        writeln!(out, "  {p:<14} at {t:7.1} s")?;
    }
    Ok(if summary.result == "ready" { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn up(a: &UpArgs) -> Result<Summary> {
    let inv = crate::load_inventory(&a.inventory)?;
    let Some(node) = inv.node(&a.node) else { bail!("{}: no node {}", a.inventory.display(), a.node) };
    let method = inv.profile_of(node).boot;
    let pxe = matches!(method, metal6_inventory::model::BootMethod::Pxe);
    for f in [OVMF_CODE, OVMF_VARS, "/usr/bin/qemu-system-x86_64"] {
        if !Path::new(f).exists() {
            bail!("{f} is missing (run `make deps`)");
        }
    }
    let artifacts = a.artifacts.canonicalize().with_context(|| format!("artifacts {}", a.artifacts.display()))?;
    if !artifacts.join("boot/installer.efi").exists() {
        bail!(
            "{} has no boot/installer.efi: run `metal6 image build images/lab.yaml --out {}`",
            artifacts.display(),
            artifacts.display()
        );
    }
    // Before anything needs cleaning up: from here on, Ctrl-C ends the run through the guards.
    let interrupted = ctrl_c_flag()?;
    let _ = std::fs::remove_dir_all(&a.workdir);
    let state = a.workdir.join("state");
    std::fs::create_dir_all(&state)?;
    let work = a.workdir.canonicalize()?;
    let state = state.canonicalize()?;
    let disk = work.join("disk.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", &disk.to_string_lossy(), &format!("{}G", a.disk_gib)])?;
    let vars = work.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars)?;

    let mut lab = Lab::new(&a.node)?;
    let iface = &inv.site.interface;
    let server = inv.site.boot_server.address;
    let plen = inv.site.segments.first().map_or(64, |s| s.prefix.prefix_len());
    let base = "ip link set lo up && sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0";
    // A node on a relayed segment sits behind a router namespace (see `Relayed`); the guest's
    // tap is then the router's, and the boot server's interface is a veth to the router.
    let mut relayed = if node.segment == 0 { None } else { Some(Relayed::new(&inv, node, &lab)?) };
    let tap = match &relayed {
        Some(r) => r.tap.clone(),
        None => {
            // The tap has no carrier until QEMU opens it, so its addresses are set by hand; the
            // link-local one is what RAs come from (OVMF ignores RAs from a global source).
            lab.exec(&format!(
                "{base} && ip tuntap add dev {iface} mode tap && sysctl -qw net.ipv6.conf.{iface}.addr_gen_mode=1 && \
                 ip link set {iface} up && ip -6 addr add fe80::1/64 dev {iface} nodad && \
                 ip -6 addr add {server}/{plen} dev {iface} nodad"
            ))?;
            iface.clone()
        }
    };
    let me = std::env::current_exe()?;
    let inv_path = a.inventory.canonicalize()?;
    let mut serve_args = serve_args(&inv_path, iface, &state, &artifacts);
    let https = inv.profile_of(node).https;
    // An inventory with an HTTPS port makes serve want a certificate even for nodes that boot
    // over plain HTTP: they get a throw-away one (nothing verifies it).
    let throwaway;
    let tls_dir = match (&a.tls_dir, https, inv.site.boot_server.https_port) {
        (None, true, _) => bail!(
            "{} boots over HTTPS (its profile says https): pass --tls-dir with the CA its installer was built with",
            a.node
        ),
        (None, false, Some(_)) => {
            throwaway = work.join("tls");
            self_signed(&throwaway, inv.site.boot_server.address)?;
            Some(&throwaway)
        }
        (dir, _, _) => dir.as_ref(),
    };
    let firmware_cacerts = match (tls_dir, https) {
        (Some(dir), _) => {
            let dir = dir.canonicalize().with_context(|| format!("--tls-dir {}", dir.display()))?;
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                if !dir.join(f).exists() {
                    bail!("--tls-dir {} has no {f}", dir.display());
                }
            }
            serve_args.extend([
                "--tls-cert".into(),
                dir.join("cert.pem").to_string_lossy().into_owned(),
                "--tls-key".into(),
                dir.join("key.pem").to_string_lossy().into_owned(),
            ]);
            let ca = a.firmware_ca.clone().unwrap_or_else(|| dir.join("ca.pem"));
            let esl = work.join("cacerts.esl");
            std::fs::write(&esl, efi_signature_list(&pem_to_der(&ca)?))?;
            https.then_some(esl)
        }
        (None, _) => None,
    };
    lab.spawn(&me, &serve_args, &work.join("serve.log"))?;
    let events = state.join("events.jsonl");
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(work.join("serve.log")).is_ok_and(|l| l.contains("DHCPv6 listening"))
    })
    .context("metal6 serve did not start (see serve.log)")?;

    let serial = work.join("serial.log");
    let mac = node.boot_mac().to_string();
    let mut qemu: Vec<String> = [
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        &a.memory.to_string(),
        "-display",
        "none",
        "-serial",
        &format!("file:{}", serial.display()),
        "-drive",
        &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
        "-drive",
        &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
        "-drive",
        &format!("if=none,id=d0,format=qcow2,file={},discard=unmap,detect-zeroes=unmap", disk.display()),
        "-device",
        "virtio-blk-pci,drive=d0,bootindex=0",
        "-netdev",
        &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        "-device",
        &format!("virtio-net-pci,netdev=n0,romfile=,bootindex=1,mac={mac}"),
        "-fw_cfg",
        "name=opt/org.tianocore/IPv4Support,string=n",
        "-fw_cfg",
        "name=opt/org.tianocore/IPv4PXESupport,string=n",
        "-boot",
        "menu=on,splash-time=3000",
        "-no-shutdown",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if !pxe {
        qemu.extend(["-fw_cfg".into(), "name=opt/org.tianocore/IPv6PXESupport,string=n".into()]);
    }
    // OVMF's TlsAuthConfigLib reads the CAs for HTTPS boot from this fw_cfg file (an array
    // of EFI_SIGNATURE_LISTs) into the TlsCaCertificate variable HttpDxe verifies with.
    if let Some(esl) = &firmware_cacerts {
        qemu.extend(["-fw_cfg".into(), format!("name=etc/edk2/https/cacerts,file={}", esl.display())]);
    }
    let started = Instant::now();
    match &mut relayed {
        // QEMU runs in the router's namespace, where its tap is; the router's daemons start
        // once QEMU has opened the tap (radvd will not advertise on a link without carrier).
        Some(r) => {
            r.lab.spawn(Path::new("/usr/bin/qemu-system-x86_64"), &qemu, &work.join("qemu.log"))?;
            r.start_daemons(&inv, &work)?;
        }
        None => lab.spawn(Path::new("/usr/bin/qemu-system-x86_64"), &qemu, &work.join("qemu.log"))?,
    }
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    writeln!(err, "lab: {} ({mac}, {method:?}) booting; serial console in {}", a.node, serial.display())?;

    let mut seen = 0usize;
    let mut console_pos = 0u64;
    let mut kernels = KernelStarts::default();
    let mut phases: Vec<(String, f64)> = vec![];
    let mut failures = 0;
    let deadline = started + Duration::from_secs(a.timeout);
    let result = loop {
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            break "interrupted".to_owned();
        }
        if a.console {
            console_pos = copy_new(&serial, console_pos, &mut err);
        }
        for (p, back) in kernels.scan(&serial) {
            let t = (started.elapsed().as_secs_f64() - back).max(0.0);
            phases.push((p.to_owned(), t));
            writeln!(err, "lab: [{t:7.1} s] {} → {p}", a.node)?;
        }
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut done = None;
        for line in lines.iter().skip(seen) {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if e.get("node").and_then(|n| n.as_str()) != Some(a.node.as_str()) {
                continue;
            }
            let t = started.elapsed().as_secs_f64();
            let Some(p) = phase_of(&e) else { continue };
            if !phases.iter().any(|(q, _)| q == p) {
                phases.push((p.to_owned(), t));
                writeln!(err, "lab: [{t:7.1} s] {} → {p}", a.node)?;
            }
            if e.get("kind").and_then(|k| k.as_str()) == Some("progress") {
                writeln!(err, "lab: [{t:7.1} s] image {}%", e.get("percent").and_then(|p| p.as_u64()).unwrap_or(0))?;
            }
            if e.get("kind").and_then(|k| k.as_str()) == Some("tls-rejected") {
                // Nothing in the lab changes the node's trust: waiting would only time out.
                writeln!(err, "lab: {}", e.get("error").and_then(|x| x.as_str()).unwrap_or("TLS rejected"))?;
                done = Some("failed: tls-rejected".to_owned());
            }
            match p {
                "ready" => done = Some("ready".to_owned()),
                "failed" => {
                    failures += 1;
                    writeln!(err, "lab: install failed: {}", e.get("error").and_then(|x| x.as_str()).unwrap_or("?"))?;
                    if failures >= 2 {
                        done = Some("failed".to_owned());
                    }
                }
                _ => {}
            }
        }
        seen = lines.len();
        if let Some(r) = done {
            break r;
        }
        if let Some(why) = lab.any_exited().or_else(|| relayed.as_mut().and_then(|r| r.lab.any_exited())) {
            break format!("aborted: {why} (see {})", work.display());
        }
        if Instant::now() > deadline {
            break "timed out".to_owned();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if a.console {
        copy_new(&serial, console_pos, &mut err);
    }
    let mut phases_sorted = phases;
    phases_sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
    let summary = Summary {
        node: a.node.clone(),
        result,
        seconds: started.elapsed().as_secs_f64(),
        phases: phases_sorted,
        state_dir: state,
        serial_log: serial,
    };
    std::fs::write(work.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    // The node's phases as a picture (what `metal6 status --timeline` draws from a live serve).
    let node_events: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e.get("node").and_then(|n| n.as_str()) == Some(a.node.as_str()))
        .collect();
    let end = node_events.iter().filter_map(|e| e.get("ts_ms").and_then(serde_json::Value::as_u64)).max().unwrap_or(0);
    let segs = metal6_render::timeline::segments(&node_events, end);
    std::fs::write(work.join("timeline.svg"), metal6_render::timeline::svg(&[(a.node.clone(), segs)], end))?;
    drop(relayed);
    drop(lab);
    Ok(summary)
}

/// A relayed segment, as a site has one: the node on its own prefix behind a router (a
/// namespace of its own) that forwards between the segment and the provisioning link, sends
/// the segment's Router Advertisements (radvd, a real router daemon) and relays DHCPv6 to the
/// boot server (ISC `dhcrelay -6`, a real relay agent, whose Relay-Forward carries the
/// segment's address as link-address). The boot server sees the node only through the relay:
///
/// ```text
///   server ns: IFACE (boot server address) ──veth── router ns: m6up (PREFIX::fe)
///                                                  router ns: m6seg0 (tap, the segment's router) ── QEMU
/// ```
struct Relayed {
    lab: Lab,
    tap: String,
    seg: metal6_inventory::model::Segment,
}

impl Relayed {
    const UPLINK: &'static str = "m6up";

    fn new(
        inv: &metal6_inventory::model::Inventory,
        node: &metal6_inventory::model::Node,
        server_ns: &Lab,
    ) -> Result<Relayed> {
        let seg = inv.segment_of(node);
        let link = &inv.site.segments[0];
        let iface = &inv.site.interface;
        let server = inv.site.boot_server.address;
        // The router's address on the provisioning link: ::fe of its prefix, as long as no
        // node or the boot server has it.
        let uplink_addr = std::net::Ipv6Addr::from(u128::from(link.prefix.network()) | 0xfe);
        if uplink_addr == server || inv.nodes.iter().any(|n| n.address == uplink_addr) {
            bail!("the lab's relay router wants {uplink_addr} on the provisioning link, but it is taken");
        }
        let lab = Lab::new(&format!("{}-r", node.name))?;
        let (up, tap) = (Self::UPLINK, "m6seg0".to_owned());
        run(
            "ip",
            &[
                "link",
                "add",
                "name",
                iface,
                "netns",
                &server_ns.ns,
                "type",
                "veth",
                "peer",
                "name",
                up,
                "netns",
                &lab.ns,
            ],
        )?;
        let base = "ip link set lo up && sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0";
        let (plen, seg_plen) = (link.prefix.prefix_len(), seg.prefix.prefix_len());
        server_ns.exec(&format!(
            "{base} && sysctl -qw net.ipv6.conf.{iface}.addr_gen_mode=1 && ip link set {iface} up && \
             ip -6 addr add fe80::1/64 dev {iface} nodad && ip -6 addr add {server}/{plen} dev {iface} nodad && \
             ip -6 route add {} via {uplink_addr} dev {iface}",
            seg.prefix
        ))?;
        let mut addrs = format!("ip -6 addr add {}/{seg_plen} dev {tap} nodad", seg.router);
        if let Some(la) = seg.link_address.filter(|la| *la != seg.router) {
            addrs.push_str(&format!(" && ip -6 addr add {la}/{seg_plen} dev {tap} nodad"));
        }
        lab.exec(&format!(
            "{base} && sysctl -qw net.ipv6.conf.all.forwarding=1 && \
             sysctl -qw net.ipv6.conf.{up}.addr_gen_mode=1 && ip link set {up} up && \
             ip -6 addr add fe80::2/64 dev {up} nodad && ip -6 addr add {uplink_addr}/{plen} dev {up} nodad && \
             ip tuntap add dev {tap} mode tap && sysctl -qw net.ipv6.conf.{tap}.addr_gen_mode=1 && \
             ip link set {tap} up && ip -6 addr add fe80::1/64 dev {tap} nodad && {addrs}"
        ))?;
        Ok(Relayed { lab, tap, seg: seg.clone() })
    }

    /// radvd and dhcrelay on the segment, once QEMU holds the tap.
    fn start_daemons(&mut self, inv: &metal6_inventory::model::Inventory, work: &Path) -> Result<()> {
        for tool in ["/usr/sbin/radvd", "/usr/sbin/dhcrelay"] {
            if !Path::new(tool).exists() {
                bail!("{tool} is missing (run `make deps`): the relayed lab needs a real router and relay");
            }
        }
        let carrier = format!("/sys/class/net/{}/carrier", self.tap);
        let ns = self.lab.ns.clone();
        wait_until(Duration::from_secs(20), || {
            Command::new("ip")
                .args(["netns", "exec", &ns, "cat", &carrier])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
        })
        .context("QEMU did not open the segment's tap")?;
        // The segment's RAs, with the site's flags (M: addresses from DHCPv6, through the
        // relay), from the router's link-local address; the router is the default router.
        let ra = &inv.site.router_advertisements;
        let on = |b: bool| if b { "on" } else { "off" };
        let conf = work.join("radvd.conf");
        std::fs::write(
            &conf,
            format!(
                "interface {tap} {{\n  AdvSendAdvert on;\n  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 10;\n  \
                 AdvManagedFlag {};\n  AdvOtherConfigFlag {};\n  AdvDefaultLifetime {};\n  AdvLinkMTU {};\n  \
                 prefix {} {{\n    AdvOnLink on;\n    AdvAutonomous {};\n  }};\n}};\n",
                on(ra.managed),
                on(ra.other_config),
                ra.router_lifetime,
                inv.site.mtu,
                self.seg.prefix,
                on(ra.autonomous),
                tap = self.tap,
            ),
        )?;
        let p = |p: PathBuf| p.to_string_lossy().into_owned();
        let radvd: Vec<String> = vec![
            "-n".into(),
            "-m".into(),
            "stderr".into(),
            "-C".into(),
            p(conf),
            "-p".into(),
            p(work.join("radvd.pid")),
        ];
        self.lab.spawn(Path::new("/usr/sbin/radvd"), &radvd, &work.join("radvd.log"))?;
        // dhcrelay -6: DHCPv6 from the segment (-l) to the boot server (-u), unicast.
        let relay: Vec<String> = vec![
            "-6".into(),
            "-d".into(),
            "-l".into(),
            self.tap.clone(),
            "-u".into(),
            format!("{}%{}", inv.site.boot_server.address, Self::UPLINK),
        ];
        self.lab.spawn(Path::new("/usr/sbin/dhcrelay"), &relay, &work.join("dhcrelay.log"))?;
        Ok(())
    }
}

/// A self-signed RSA certificate for `addr` in `dir` (`ca.pem` = `cert.pem`, `key.pem` 0600).
fn self_signed(dir: &Path, addr: std::net::Ipv6Addr) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    run(
        "sh",
        &[
            "-c",
            &format!(
                "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 \
                 -subj /CN=metal6-lab-throwaway -addext subjectAltName=IP:{addr} 2>/dev/null \
                 && chmod 600 key.pem && cp cert.pem ca.pem",
                dir.display()
            ),
        ],
    )
}

/// The DER of the first certificate in a PEM file (`openssl x509`, which the lab needs anyway).
fn pem_to_der(pem: &Path) -> Result<Vec<u8>> {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem)
        .output()
        .context("running openssl (make deps installs it)")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("{} is not a PEM certificate: {}", pem.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// One X.509 certificate as a UEFI `EFI_SIGNATURE_LIST` (UEFI 2.10 §32.4.1): the format of
/// `db` and of EDK2's `TlsCaCertificate`. GUIDs are stored little-endian in their first
/// three fields.
fn efi_signature_list(der: &[u8]) -> Vec<u8> {
    // EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072
    const X509: [u8; 16] =
        [0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72];
    // The signature owner: any GUID; this one says "metal6" in its last bytes.
    const OWNER: [u8; 16] =
        [0x6d, 0x36, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, b'm', b'e', b't', b'a', b'l', b'6'];
    let sig_size = 16 + der.len();
    let list_size = 16 + 4 + 4 + 4 + sig_size;
    let mut out = Vec::with_capacity(list_size);
    out.extend_from_slice(&X509);
    out.extend_from_slice(&u32::try_from(list_size).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // SignatureHeaderSize
    out.extend_from_slice(&u32::try_from(sig_size).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&OWNER);
    out.extend_from_slice(der);
    out
}

/// What `lab env` writes to `WORKDIR/env.json` for whoever drives it.
#[derive(Debug, Serialize)]
pub struct EnvInfo {
    /// The network namespace: run `ip netns exec NS metal6 apply ...` in it.
    pub ns: String,
    pub inventory: PathBuf,
    pub server: String,
    /// The CA the BMC simulator's certificate chains to (`apply --ca-file`).
    pub bmc_ca: PathBuf,
    /// The BMC password (0600); `apply` reads it from METAL6_LAB_BMC_PASSWORD.
    pub bmc_password_file: PathBuf,
    pub state_dir: PathBuf,
    /// Per node: its BMC's Redfish root and the simulator's state page.
    pub bmcs: Vec<(String, String, String)>,
}

/// The running lab with BMCs; everything stops and the namespace goes when it is dropped.
struct Env {
    lab: Lab,
    info: EnvInfo,
    work: PathBuf,
}

const BMC_PASSWORD_ENV: &str = "METAL6_LAB_BMC_PASSWORD";

fn start_env(a: &EnvArgs) -> Result<Env> {
    let inv = crate::load_inventory(&a.inventory)?;
    for f in [OVMF_CODE, OVMF_VARS, "/usr/bin/qemu-system-x86_64", "/usr/bin/openssl", "/usr/bin/python3"] {
        if !Path::new(f).exists() {
            bail!("{f} is missing (run `make deps`)");
        }
    }
    let sim = crate_root().join("tests/lab/qemu_bmc.py");
    if !sim.exists() {
        bail!("{} is missing: run from the metal6 source tree", sim.display());
    }
    let artifacts = a.artifacts.canonicalize().with_context(|| format!("artifacts {}", a.artifacts.display()))?;
    if !artifacts.join("boot/installer.efi").exists() {
        bail!(
            "{} has no boot/installer.efi: run `metal6 image build images/lab.yaml --out {}`",
            artifacts.display(),
            artifacts.display()
        );
    }
    let mut bmcs = vec![];
    for n in &inv.nodes {
        let Some(b) = &n.bmc else {
            bail!("{}: node {} has no bmc (the lab gives every node one)", a.inventory.display(), n.name)
        };
        let metal6_inventory::model::BmcHost::Ipv6(addr) = b.host else {
            bail!("{}: the lab needs the bmc address of {} as an IPv6 literal", a.inventory.display(), n.name)
        };
        bmcs.push((n, addr, b.port));
    }
    let _ = std::fs::remove_dir_all(&a.workdir);
    for d in ["state", "bmc", "vms", "apply"] {
        std::fs::create_dir_all(a.workdir.join(d))?;
    }
    let work = a.workdir.canonicalize()?;
    let state = work.join("state");
    let bmc_dir = work.join("bmc");
    // A CA and a leaf for every BMC address: apply verifies the BMCs' TLS like a real fleet's.
    let sans: Vec<String> = bmcs.iter().map(|(_, ip, _)| format!("IP:{ip}")).collect();
    std::fs::write(
        bmc_dir.join("leaf.cnf"),
        format!(
            "[leaf]\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            sans.join(",")
        ),
    )?;
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    run(
        "sh",
        &[
            "-c",
            &format!(
                "cd {} && openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 7 -subj /CN=metal6-lab-bmc-ca 2>/dev/null \
                 && openssl req {ec} -keyout key.pem -out leaf.csr -subj /CN=metal6-lab-bmc 2>/dev/null \
                 && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 7 \
                    -extfile leaf.cnf -extensions leaf 2>/dev/null && rm -f ca.key leaf.csr",
                bmc_dir.display()
            ),
        ],
    )?;
    let password: String = {
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))?;
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    let pw_file = bmc_dir.join("password");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&pw_file)?;
        f.write_all(password.as_bytes())?;
    }

    let mut lab = Lab::new("env")?;
    let iface = &inv.site.interface;
    let server = inv.site.boot_server.address;
    let plen = inv.site.segments.first().map_or(64, |s| s.prefix.prefix_len());
    let mut script = format!(
        "ip link set lo up && sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 && \
         ip link add {iface} type bridge mcast_snooping 0 && sysctl -qw net.ipv6.conf.{iface}.addr_gen_mode=1 && \
         ip link set {iface} up && ip -6 addr add fe80::1/64 dev {iface} nodad && \
         ip -6 addr add {server}/{plen} dev {iface} nodad"
    );
    let mut sim_args: Vec<String> = vec![
        sim.to_string_lossy().into(),
        "--cert".into(),
        bmc_dir.join("cert.pem").to_string_lossy().into(),
        "--key".into(),
        bmc_dir.join("key.pem").to_string_lossy().into(),
        "--user".into(),
        "admin".into(),
        "--password-file".into(),
        pw_file.to_string_lossy().into(),
        "--workdir".into(),
        work.join("vms").to_string_lossy().into(),
        "--memory".into(),
        a.memory.to_string(),
    ];
    let mut listed = vec![];
    for (i, (n, addr, port)) in bmcs.iter().enumerate() {
        let tap = format!("m6t{i}");
        script.push_str(&format!(
            " && ip tuntap add dev {tap} mode tap && ip link set {tap} master {iface} up && \
             ip -6 addr add {addr}/128 dev lo nodad"
        ));
        let nonet = if a.no_network.contains(&n.name) { ",nonet" } else { "" };
        sim_args.push("--node".into());
        sim_args.push(format!("{},{addr},{port},{},{tap}{nonet}", n.name, n.boot_mac()));
        listed.push((
            n.name.clone(),
            format!("https://[{addr}]:{port}/redfish/v1"),
            format!("https://[{addr}]:{port}/sim/state"),
        ));
    }
    for n in &a.no_network {
        if inv.node(n).is_none() {
            bail!("--no-network {n}: no such node");
        }
    }
    lab.exec(&script)?;
    let me = std::env::current_exe()?;
    let inv_path = a.inventory.canonicalize()?;
    let serve_args = serve_args(&inv_path, iface, &state, &artifacts);
    lab.spawn(&me, &serve_args, &work.join("serve.log"))?;
    lab.spawn(Path::new("/usr/bin/python3"), &sim_args, &work.join("bmc.log"))?;
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(work.join("serve.log")).is_ok_and(|l| l.contains("DHCPv6 listening"))
    })
    .context("metal6 serve did not start (see serve.log)")?;
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(work.join("bmc.log")).is_ok_and(|l| l.contains("qemu_bmc: ready"))
    })
    .context("the BMC simulator did not start (see bmc.log)")?;
    let info = EnvInfo {
        ns: lab.ns.clone(),
        inventory: inv_path,
        server: inv.site.boot_server.http_base(),
        bmc_ca: bmc_dir.join("ca.pem"),
        bmc_password_file: pw_file,
        state_dir: work.join("apply"),
        bmcs: listed,
    };
    std::fs::write(work.join("env.json"), serde_json::to_string_pretty(&info)? + "\n")?;
    Ok(Env { lab, info, work })
}

/// The source tree: the BMC simulator and the lab inventory live there.
fn crate_root() -> PathBuf {
    std::env::current_dir().unwrap_or_default()
}

fn env_cmd(a: &EnvArgs) -> Result<ExitCode> {
    let interrupted = ctrl_c_flag()?;
    let mut env = start_env(a)?;
    let i = &env.info;
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "lab env up in namespace {} ({}/env.json); Ctrl-C stops it. Drive it with:",
        i.ns,
        env.work.display()
    )?;
    writeln!(
        err,
        "  {BMC_PASSWORD_ENV}=$(cat {}) ip netns exec {} metal6 apply -i {} --state-dir {} --ca-file {}",
        i.bmc_password_file.display(),
        i.ns,
        i.inventory.display(),
        i.state_dir.display(),
        i.bmc_ca.display()
    )?;
    drop(err);
    while !interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        if let Some(why) = env.lab.any_exited() {
            bail!("the lab stopped: {why} (see {})", env.work.display());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(ExitCode::SUCCESS)
}

fn lab_apply(a: &LabApplyArgs) -> Result<ExitCode> {
    let interrupted = ctrl_c_flag()?;
    let env = start_env(&a.env)?;
    let i = &env.info;
    let password = std::fs::read_to_string(&i.bmc_password_file)?;
    let me = std::env::current_exe()?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &i.ns])
        .arg(&me)
        .args(["apply", "-i"])
        .arg(&i.inventory)
        .arg("--state-dir")
        .arg(&i.state_dir)
        .arg("--ca-file")
        .arg(&i.bmc_ca)
        .args(&a.apply_args)
        .env(BMC_PASSWORD_ENV, password.trim())
        .stdin(Stdio::null())
        .spawn()
        .context("starting metal6 apply")?;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            // apply got the same SIGINT from the terminal; give it time to leave resumable states.
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "\nTimelines: metal6 status --state-dir {} NODE; server log, BMC log, serial consoles: {}/",
        i.state_dir.display(),
        env.work.display()
    )?;
    drop(err);
    drop(env);
    Ok(match status {
        Some(st) if st.success() => ExitCode::SUCCESS,
        Some(_) => ExitCode::from(1),
        None => ExitCode::from(130),
    })
}

/// `metal6 serve` for the lab: the inventory, the namespace's link, a state dir, the artifacts.
fn serve_args(inventory: &Path, iface: &str, state: &Path, artifacts: &Path) -> Vec<String> {
    let p = |p: &Path| p.to_string_lossy().into_owned();
    vec![
        "serve".into(),
        "-i".into(),
        p(inventory),
        "--interface".into(),
        iface.into(),
        "--state-dir".into(),
        p(state),
        "--artifacts".into(),
        p(artifacts),
    ]
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > end {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Boot steps on the guest's serial console, which no event reports. The installer's
/// initramfs prints `metal6: installer initramfs at UPTIME s` (the installer UKI boots `quiet`,
/// so its kernel prints no banner): the installer's kernel started UPTIME seconds before that
/// line, which is when the firmware had the UKI downloaded and handed over. The installed
/// system's kernel prints its `Linux version` banner. The console has no timestamps: the lab
/// notes when a line first appears, to its poll interval (250 ms).
#[derive(Debug, Default)]
struct KernelStarts {
    pos: u64,
    partial: Vec<u8>,
    named: Vec<&'static str>,
}

impl KernelStarts {
    /// A line longer than this is a firmware screen, not a kernel message: dropped.
    const MAX_LINE: usize = 64 * 1024;

    /// New phases, each with how many seconds before now it was reached.
    fn scan(&mut self, path: &Path) -> Vec<(&'static str, f64)> {
        use std::io::{Read, Seek, SeekFrom};
        let mut new = vec![];
        let Ok(mut f) = std::fs::File::open(path) else { return vec![] };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return vec![];
        }
        let Ok(n) = f.read_to_end(&mut new) else { return vec![] };
        self.pos += n as u64;
        self.feed(&new)
    }

    fn feed(&mut self, bytes: &[u8]) -> Vec<(&'static str, f64)> {
        let mut found = vec![];
        for &b in bytes {
            if b != b'\n' {
                if self.partial.len() < Self::MAX_LINE {
                    self.partial.push(b);
                }
                continue;
            }
            let line = strip_ansi(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
            let after_installer = self.named.contains(&"installer-initramfs");
            let mut name = |p: &'static str, back: f64| {
                if !self.named.contains(&p) {
                    self.named.push(p);
                    found.push((p, back));
                }
            };
            if let Some(up) = line
                .split_once("metal6: installer initramfs at ")
                .and_then(|(_, r)| r.trim_end_matches(" s").trim().parse::<f64>().ok())
                .filter(|up| up.is_finite() && *up >= 0.0)
            {
                name("installer-kernel", up);
                name("installer-initramfs", 0.0);
            } else if is_kernel_banner(&line) {
                // Before the installer's line, a banner is the installer's (a UKI without
                // `quiet`); after it, the installed system's.
                name(if after_installer { "node-kernel" } else { "installer-kernel" }, 0.0);
            }
        }
        found
    }
}

/// The kernel's first message, `Linux version …`, at the start of a line or after a printk
/// timestamp (`[    0.000000] `), possibly behind a firmware screen's escape sequences.
fn is_kernel_banner(line: &str) -> bool {
    let Some(at) = line.find("Linux version ") else { return false };
    let before = line[..at].trim();
    before.is_empty() || (before.starts_with('[') && before.ends_with(']'))
}

/// Copies what the serial log gained since `pos` to `out`; returns the new position.
fn copy_new(path: &Path, pos: u64, out: &mut impl Write) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return pos };
    if f.seek(SeekFrom::Start(pos)).is_err() {
        return pos;
    }
    let mut buf = vec![];
    let n = f.read_to_end(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf);
    // Firmware screens are full of escape sequences: keep the text lines only.
    for line in BufReader::new(text.as_bytes()).lines().map_while(Result::ok) {
        let clean: String = strip_ansi(&line);
        if !clean.trim().is_empty() {
            let _ = writeln!(out, "  | {clean}");
        }
    }
    pos + n as u64
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) if !c.is_control() => out.push(c),
            _ => {}
        }
    }
    out
}

/// Set when SIGINT/SIGTERM arrives, so the loop ends and the guards clean up. Returns only
/// once both handlers are installed: a signal before that would kill the process with its
/// namespace still there.
fn ctrl_c_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return drop(ready_tx.send(Err(e))),
        };
        rt.block_on(async move {
            let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(i), Ok(t)) => (i, t),
                (Err(e), _) | (_, Err(e)) => return drop(ready_tx.send(Err(e))),
            };
            let _ = ready_tx.send(Ok(()));
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            f.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    });
    ready_rx.recv().context("signal handler thread")?.context("installing signal handlers")?;
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_come_from_events() {
        let e = |v: serde_json::Value| phase_of(&v).map(str::to_owned);
        assert_eq!(
            e(serde_json::json!({"kind": "leased", "stage": "firmware-http"})).as_deref(),
            Some("firmware-dhcp")
        );
        assert_eq!(e(serde_json::json!({"kind": "leased", "stage": "installer"})).as_deref(), Some("dhcp"));
        assert_eq!(e(serde_json::json!({"kind": "phase", "phase": "ready"})).as_deref(), Some("ready"));
        assert_eq!(e(serde_json::json!({"kind": "document"})), None);
        assert_eq!(strip_ansi("\x1b[2J\x1b[01;01HBdsDxe: loading"), "BdsDxe: loading");
    }

    #[test]
    fn kernel_starts_are_found_across_reads() {
        let mut k = KernelStarts::default();
        assert!(k.feed(b"BdsDxe: loading Boot0001\r\n\x1b[2Jmetal6: installer init").is_empty());
        assert_eq!(k.feed(b"ramfs at 2.47 s\r\n"), [("installer-kernel", 2.47), ("installer-initramfs", 0.0)]);
        assert!(k.feed(b"[    1.2] metal6-installer: Linux version is not a start\n").is_empty());
        assert!(k.feed(b"metal6: installer initramfs at 9.1 s\n").is_empty(), "a second installer run is not named");
        assert_eq!(
            k.feed(b"\x1b[0m[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org)\n"),
            [("node-kernel", 0.0)]
        );
        assert!(k.feed(b"[ 0.0] Linux version 6.1\n").is_empty(), "later restarts are not named");

        // A UKI without `quiet`: its banner is the installer's kernel.
        let mut k = KernelStarts::default();
        let screen = vec![b'x'; KernelStarts::MAX_LINE * 2];
        assert!(k.feed(&screen).is_empty());
        assert!(k.partial.len() <= KernelStarts::MAX_LINE, "a line without an end stays bounded");
        assert_eq!(
            k.feed(b"\nLinux version 6.1\nmetal6: installer initramfs at 1.5 s\n"),
            [("installer-kernel", 0.0), ("installer-initramfs", 0.0)]
        );
        assert!(k.feed(b"metal6: installer initramfs at nan s\n").is_empty());
    }
}
