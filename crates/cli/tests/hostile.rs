//! `metal6 serve` under hostile traffic, in namespaces: malformed and abusive DHCPv6, TFTP
//! requests never acknowledged, held HTTP connections and hostile Range headers, from several
//! hosts on one bridged segment at once, while real clients (dhclient -6, curl) keep working.
//! Also the state directory's lock and a damaged history that must not stop the server.
#![allow(clippy::print_stderr)] // the soak prints what it sent and what the server counted

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Netns, Server, link, metal6, root, wait_for, wait_link_local};

const NODE1_MAC: &str = "52:54:00:6d:00:01";
/// The bounds the soak holds the server to (see docs/security.md, "Bounded state").
const MAX_RSS_KIB: u64 = 256 * 1024;
const MAX_STATE_BYTES: u64 = 80 << 20;

/// A server namespace whose bridge `br0` (fd00:6d:1::1/64) has one port per host namespace;
/// `hosts[0]` carries lab-node-1's MAC, the others strangers' MACs.
fn segment(hosts: usize) -> (Netns, Vec<Netns>) {
    let srv = Netns::new();
    srv.exec("ip link add br0 type bridge mcast_snooping 0 && ip link set br0 up");
    srv.exec("ip -6 addr add fd00:6d:1::1/64 dev br0 nodad");
    let mut ns = Vec::new();
    for i in 0..hosts {
        let h = Netns::new();
        let mac = if i == 0 { NODE1_MAC.to_owned() } else { format!("02:00:00:00:66:{i:02x}") };
        link(&srv, &format!("p{i}"), &h, "eth0", &mac);
        srv.exec(&format!("ip link set p{i} master br0"));
        if i > 0 {
            h.exec(&format!("ip -6 addr add fd00:6d:1::{:x}/64 dev eth0 nodad", 0x200 + i));
        }
        wait_link_local(&h, "eth0");
        ns.push(h);
    }
    wait_link_local(&srv, "br0");
    (srv, ns)
}

fn artifacts() -> tempfile::TempDir {
    let www = tempfile::tempdir().expect("www");
    std::fs::create_dir_all(www.path().join("boot")).expect("boot dir");
    let data: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(www.path().join("boot/installer.efi"), data).expect("file");
    std::fs::write(www.path().join("installer.efi"), vec![7u8; 64 * 1024]).expect("file");
    www
}

fn flood(ns: &Netns, mode: &str, seconds: u32, log: &Path) -> Child {
    let script = root().join("tests/hostile/flood.py");
    let out = std::fs::File::create(log).expect("log");
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3"])
        .arg(&script)
        .args([mode, "fd00:6d:1::1", "--seconds", &seconds.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn flood")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// The pid of `metal6 serve` itself (the child is `ip netns exec`, which execs it: same pid).
fn serve_pid(server: &Server) -> u32 {
    server.child.id()
}

#[test]
fn hostile_traffic_from_several_hosts_does_not_stop_real_clients() {
    require_netns!();
    require_tool!("dhclient");
    require_tool!("curl");
    require_tool!("python3");
    let (srv, hosts) = segment(4);
    let www = artifacts();
    let arg = www.path().to_str().expect("utf-8").to_owned();
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "br0", &["--no-ra", "--artifacts", &arg]);
    let node = &hosts[0];
    node.exec("ip -6 addr add fd00:6d:1::100/64 dev eth0 nodad");
    let logs = tempfile::tempdir().expect("logs");
    const SECONDS: u32 = 40;
    let mut floods = vec![
        flood(&hosts[1], "dhcp", SECONDS, &logs.path().join("dhcp.log")),
        flood(&hosts[2], "tftp", SECONDS, &logs.path().join("tftp.log")),
        flood(&hosts[3], "http", SECONDS, &logs.path().join("http.log")),
        flood(&hosts[3], "dhcp", SECONDS, &logs.path().join("dhcp2.log")),
    ];
    let pid = serve_pid(&server);
    let d = server.state.path().display().to_string();
    let started = Instant::now();
    let (mut leases, mut fetches, mut peak_rss) = (0, 0, 0);
    while started.elapsed() < Duration::from_secs(u64::from(SECONDS)) {
        // A whole exchange each time (Solicit, Advertise, Request, Reply), never a cached lease.
        let _ = std::fs::remove_file(format!("{d}/dhclient.lease"));
        let out = node.try_exec(&format!(
            "timeout 40 dhclient -6 -1 -lf {d}/dhclient.lease -pf {d}/dhclient.pid -sf /bin/true eth0; \
             kill $(cat {d}/dhclient.pid) 2>/dev/null; true"
        ));
        let lease = std::fs::read_to_string(format!("{d}/dhclient.lease")).unwrap_or_default();
        assert!(
            lease.contains("iaaddr fd00:6d:1::100"),
            "dhclient got no lease under the flood after {leases} good ones: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        leases += 1;
        let out = node.try_exec(
            "curl -sS -g --max-time 20 -o /dev/null -w '%{http_code} %{size_download}' \
             http://[fd00:6d:1::1]:8080/boot/installer.efi",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200 1048576",
            "curl failed under the flood after {fetches} good fetches: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fetches += 1;
        peak_rss = peak_rss.max(rss_kib(pid));
    }
    for f in &mut floods {
        let _ = f.wait();
    }
    let sent: Vec<String> = ["dhcp", "tftp", "http", "dhcp2"]
        .iter()
        .map(|m| std::fs::read_to_string(logs.path().join(format!("{m}.log"))).unwrap_or_default())
        .collect();
    eprintln!("floods: {sent:?}; dhclient leases {leases}, curl fetches {fetches}, peak RSS {peak_rss} KiB");
    assert!(leases >= 3 && fetches >= 3, "too few client rounds: {leases} leases, {fetches} fetches");
    for s in &sent {
        assert!(s.contains("\"sent\""), "a flood did not run: {s}");
    }
    let _ = node.try_exec(&format!("pkill -f 'dhclient.*{d}'; sleep 0.2"));
    // Alive, and it answers a new client at once.
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "metal6 serve died: {}", server.log_text());
    let out =
        node.try_exec(&format!("{} dhcp6 probe --interface eth0 --mac {NODE1_MAC} --timeout 5", metal6().display()));
    assert!(out.status.success(), "no answer after the flood: {}", String::from_utf8_lossy(&out.stderr));
    let stats = wait_for("stats to show the flood", Duration::from_secs(5), || {
        let s = server.stats();
        (s["dropped"]["malformed"].as_u64().unwrap_or(0) > 0).then_some(s)
    });
    eprintln!("dropped: {}; refused: {}; panics: {}", stats["dropped"], stats["refused"], stats["panics"]);
    assert_eq!(stats["panics"], 0, "{}", server.log_text());
    // The limits did the work (without them the floods would have been served).
    for (what, key) in [("refused", "http-per-source"), ("refused", "tftp-per-source"), ("dropped", "rate-limited")] {
        assert!(stats[what][key].as_u64().unwrap_or(0) > 0, "{what}.{key} never fired: {stats}");
    }
    assert!(stats["leases"].as_u64().unwrap_or(u64::MAX) <= 2 * 16 + 4, "bindings unbounded: {stats}");
    let rss = rss_kib(pid).max(peak_rss);
    assert!(rss <= MAX_RSS_KIB, "RSS {rss} KiB > {MAX_RSS_KIB} KiB");
    let state = dir_bytes(server.state.path());
    assert!(state <= MAX_STATE_BYTES, "state dir at {state} bytes");
    let log = server.log_text();
    assert!(!log.contains("panicked") && !log.contains("stack overflow"), "{log}");

    // SIGTERM with TFTP transfers never acknowledged and HTTP connections held: the process
    // ends within the shutdown grace (it once sat in a futex wait for minutes).
    let mut held = vec![
        flood(&hosts[2], "tftp", 30, &logs.path().join("tftp-held.log")),
        flood(&hosts[3], "http", 30, &logs.path().join("http-held.log")),
    ];
    // Wait until the held transfers are really there (the server counts their refusals
    // once each source is at its limit), then ask it to stop.
    let refused = |s: &serde_json::Value, k: &str| s["refused"][k].as_u64().unwrap_or(0);
    let (http0, tftp0) = (refused(&stats, "http-per-source"), refused(&stats, "tftp-per-source"));
    wait_for("the held floods to reach their limits", Duration::from_secs(30), || {
        let s = server.stats();
        (refused(&s, "http-per-source") > http0 && refused(&s, "tftp-per-source") > tftp0).then_some(())
    });
    let t = Instant::now();
    let mut server = server;
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = wait_for("metal6 serve to exit after SIGTERM", Duration::from_secs(20), || {
        server.child.try_wait().ok().flatten()
    });
    eprintln!("exited {status} {:.1} s after SIGTERM", t.elapsed().as_secs_f64());
    assert!(status.success(), "{}", server.log_text());
    assert!(t.elapsed() < Duration::from_secs(15));
    for h in &mut held {
        let _ = h.kill();
        let _ = h.wait();
    }
}

#[test]
fn a_second_server_on_one_state_dir_is_refused_and_damaged_history_is_kept_aside() {
    require_netns!();
    let (srv, _hosts) = segment(1);
    let state = tempfile::tempdir().expect("state");
    // History damaged by something else than our own crash: bad UTF-8 in the event log, a
    // broken line in the middle of the lease journal.
    std::fs::write(state.path().join("events.jsonl"), b"{\"node\":\"lab-node-1\",\"kind\":\"x\"}\n\xff\xfe\n")
        .expect("w");
    let good = r#"{"Upsert":{"key":{"duid":[0,3,0,1,82,84,0,109,0,1],"iaid":1},"addr":"fd00:6d:1::100","node":"lab-node-1","expires":99999999999}}"#;
    std::fs::write(state.path().join("leases.jsonl"), format!("{good}\n{{broken\n{good}\n")).expect("w");
    let st = state.path().to_str().expect("utf-8");
    let inv = root().join("inventory/lab.yaml");
    let inv = inv.to_str().expect("utf-8");
    let first_log = state.path().join("first.log");
    let mut first =
        srv.spawn(&metal6(), &["serve", "-i", inv, "--interface", "br0", "--state-dir", st, "--no-ra"], &first_log);
    wait_for("the first server to listen", Duration::from_secs(20), || {
        std::fs::read_to_string(&first_log).ok().filter(|l| l.contains("DHCPv6 listening")).map(|_| ())
    });
    let log = std::fs::read_to_string(&first_log).expect("log");
    assert!(log.contains("lease journal had damaged lines") && log.contains("event log had unreadable lines"), "{log}");
    let names: Vec<String> = std::fs::read_dir(state.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("leases.jsonl.corrupt-")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("events.jsonl.corrupt-")), "{names:?}");
    let second = Command::new("ip")
        .args(["netns", "exec", &srv.name])
        .arg(metal6())
        .args(["serve", "-i", inv, "--interface", "br0", "--state-dir", st, "--no-ra", "--dhcp-port", "5547"])
        .output()
        .expect("second serve");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second server started on the same state dir");
    assert!(err.contains("in use by another metal6 serve") && err.contains(&format!("pid {}", first.id())), "{err}");
    let _ = first.kill();
    let _ = first.wait();
    // A state dir inside the artifact root would serve token.key to anyone: refused.
    let parent = state.path().parent().expect("parent").to_str().expect("utf-8").to_owned();
    let exposed = Command::new("ip")
        .args(["netns", "exec", &srv.name])
        .arg(metal6())
        .args(["serve", "-i", inv, "--interface", "br0", "--state-dir", st, "--no-ra", "--artifacts", &parent])
        .output()
        .expect("serve");
    let err = String::from_utf8_lossy(&exposed.stderr);
    assert!(!exposed.status.success() && err.contains("inside the artifact root"), "{err}");
}
