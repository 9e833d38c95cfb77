//! Several `metal6 serve` on one PostgreSQL (Debian's, in a private data directory), behind a
//! real relay (ISC `dhcrelay -6` forwarding to every server), under perfdhcp's relayed load,
//! with a real client (dhclient -6) on a relayed segment: one server killed with SIGKILL
//! mid-run, then the database restarted mid-run.
//!
//! What the clients saw is captured on their links (tshark) and decoded with our codec; the
//! checks are against the database:
//! - every Reply a client received has its binding committed (the last Reply per IA is the row);
//! - no address was handed to two clients (in the Replies, and in the table);
//! - the survivor answers a Solicit at once and the killed server's client at its Rebind;
//! - every answered exchange of the node left one `leased` event (none lost, none twice),
//!   and the survivor's timeline has the events the other server recorded.
//!
//! Topology (each box a namespace; the relay forwards to both servers):
//!
//! ```text
//!   load (perfdhcp) --fd00:6d:1::/64-- relay --fd00:6d:a1::/64-- srv-a
//!   node (dhclient) --fd00:6d:2::/64--/     \--fd00:6d:a2::/64-- srv-b
//! ```

#![allow(clippy::print_stderr)] // skips say why; the measured times are printed

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{Netns, Server, root, wait_for};
use metal6_db::testpg::TestPg;
use metal6_dhcp6::wire::{self, Message, MsgType, Opt};

const NODE_MAC: &str = "52:54:00:6d:00:01";
/// perfdhcp's clients: a MAC outside the inventory, so they are served from the pool.
const LOAD_MAC: &str = "02:6d:00:00:00:99";

fn pg() -> Option<TestPg> {
    TestPg::start_or_skip()
}

/// The pool inventory with its node on the relayed segment and short timers, so a client
/// whose server died rebinds within seconds.
fn inventory(dir: &Path) -> std::path::PathBuf {
    let src = std::fs::read_to_string(root().join("tests/netboot/pool.yaml")).expect("pool inventory");
    let src = src.replace(
        "  dhcp:\n    preferred_lifetime: 3600\n    valid_lifetime: 7200\n",
        "  relays:\n    - name: rack2\n      link_address: fd00:6d:2::1\n      prefix: fd00:6d:2::/64\n      \
         router: fd00:6d:2::1\n  dhcp:\n    preferred_lifetime: 20\n    valid_lifetime: 40\n    t1: 4\n    t2: 6\n",
    );
    let src = src.replace(
        "  - name: pool-node-1\n    profile: worker\n",
        "  - name: pool-node-1\n    profile: worker\n    segment: rack2\n",
    );
    assert!(src.contains("segment: rack2") && src.contains("t2: 6"), "pool.yaml changed shape:\n{src}");
    let path = dir.join("shared.yaml");
    std::fs::write(&path, src).expect("write inventory");
    path
}

struct Lab {
    load: Netns,
    node: Netns,
    // Held for its namespace (dhcrelay runs in it).
    _relay: Netns,
    srv: [Netns; 2],
    dhcrelay: Child,
    relay_log: std::path::PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.dhcrelay.kill();
        let _ = self.dhcrelay.wait();
    }
}

fn lab(dir: &Path) -> Lab {
    let (load, node, relay) = (Netns::new(), Netns::new(), Netns::new());
    let srv = [Netns::new(), Netns::new()];
    common::link(&relay, "m6r1", &load, "m6c0", LOAD_MAC);
    common::link(&relay, "m6r2", &node, "m6c0", NODE_MAC);
    common::link(&relay, "m6ra", &srv[0], "m6s0", "02:6d:00:00:0a:01");
    common::link(&relay, "m6rb", &srv[1], "m6s0", "02:6d:00:00:0a:02");
    relay.exec(
        "ip -6 addr add fd00:6d:1::fe/64 dev m6r1 nodad && ip -6 addr add fd00:6d:2::1/64 dev m6r2 nodad && \
         ip -6 addr add fd00:6d:a1::fe/64 dev m6ra nodad && ip -6 addr add fd00:6d:a2::fe/64 dev m6rb nodad",
    );
    srv[0].exec("ip -6 addr add fd00:6d:a1::1/64 dev m6s0 nodad");
    srv[1].exec("ip -6 addr add fd00:6d:a2::1/64 dev m6s0 nodad");
    for (ns, i) in [(&relay, "m6r1"), (&relay, "m6r2"), (&relay, "m6ra"), (&relay, "m6rb"), (&load, "m6c0")] {
        common::wait_link_local(ns, i);
    }
    common::wait_link_local(&node, "m6c0");
    common::wait_link_local(&srv[0], "m6s0");
    common::wait_link_local(&srv[1], "m6s0");
    let relay_log = dir.join("dhcrelay.log");
    let dhcrelay = relay.spawn(
        Path::new("/usr/sbin/dhcrelay"),
        &["-6", "-d", "-l", "m6r1", "-l", "m6r2", "-u", "fd00:6d:a1::1%m6ra", "-u", "fd00:6d:a2::1%m6rb"],
        &relay_log,
    );
    Lab { load, node, _relay: relay, srv, dhcrelay, relay_log }
}

fn start_server(ns: &Netns, inv: &Path, pg: &TestPg, name: &str) -> Server {
    let (url, pw) = (pg.url(), pg.password_ref());
    let args = ["--no-ra", "--no-http", "--no-tftp", "--state", &url, "--state-password", &pw, "--server-name", name];
    Server::start(ns, inv, "m6s0", &args)
}

/// tshark on a client link, writing every DHCPv6 packet to a file until dropped.
struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &Netns, ifname: &str, file: &Path) -> Capture {
        let log = file.with_extension("log");
        let f = file.to_str().expect("utf-8");
        let child =
            ns.spawn(Path::new("/usr/bin/tshark"), &["-q", "-n", "-i", ifname, "-f", "udp port 546", "-w", f], &log);
        wait_for("tshark to capture", Duration::from_secs(20), || {
            std::fs::read_to_string(&log).ok().filter(|l| l.contains("Capturing on")).map(|_| ())
        });
        Capture { child, file: file.to_owned() }
    }

    /// Stops the capture and decodes what it holds.
    fn messages(mut self) -> Vec<Seen> {
        // SIGINT: tshark flushes the file.
        let _ = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let out = std::process::Command::new("tshark")
            .args(["-n", "-r"])
            .arg(&self.file)
            .args(["-T", "fields", "-e", "frame.time_epoch", "-e", "udp.payload"])
            .output()
            .expect("tshark -r");
        let mut seen = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((t, payload)) = line.split_once('\t') else { continue };
            let Ok(t) = t.trim().parse::<f64>() else { continue };
            let hex: String = payload.chars().filter(char::is_ascii_hexdigit).collect();
            let bytes: Vec<u8> =
                (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
            let Ok(Message::Client(m)) = wire::decode(&bytes) else { continue };
            seen.push(Seen { t, server: m.server_id().map(<[u8]>::to_vec), msg: m });
        }
        seen
    }
}

/// A message a client link carried, with its capture time (Unix seconds).
struct Seen {
    t: f64,
    server: Option<Vec<u8>>,
    msg: wire::ClientMsg,
}

/// The Replies among `seen`, as (DUID, xid, IAID, address) per address given.
fn replies(seen: &[Seen]) -> Vec<(Vec<u8>, [u8; 3], u32, Ipv6Addr)> {
    let mut out = Vec::new();
    for s in seen.iter().filter(|s| s.msg.msg_type == MsgType::Reply) {
        let duid = s.msg.client_id().unwrap_or_default().to_vec();
        for ia in s.msg.ia_nas() {
            for o in &ia.opts {
                if let Opt::IaAddr(a) = o {
                    out.push((duid.clone(), s.msg.xid, ia.iaid, a.addr));
                }
            }
        }
    }
    out
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The lab with both servers on `pg`, captures on both client links, and the node's dhclient
/// running through the relay (it renews at T1 = 4 s).
struct Running {
    dir: tempfile::TempDir,
    lab: Lab,
    servers: [Server; 2],
    load_cap: Capture,
    node_cap: Capture,
    dhclient: Child,
}

fn running(pg: &TestPg) -> Running {
    let dir = tempfile::tempdir().expect("tmp");
    let inv = inventory(dir.path());
    let lab = lab(dir.path());
    let servers = [start_server(&lab.srv[0], &inv, pg, "srv-a"), start_server(&lab.srv[1], &inv, pg, "srv-b")];
    let load_cap = Capture::start(&lab.load, "m6c0", &dir.path().join("load.pcap"));
    let node_cap = Capture::start(&lab.node, "m6c0", &dir.path().join("node.pcap"));
    let d = dir.path().display();
    let dhclient = format!("exec dhclient -6 -d -v -lf {d}/node.lease -pf {d}/node.pid -sf /bin/true m6c0");
    let dhclient = lab.node.spawn(Path::new("/bin/sh"), &["-c", &dhclient], &dir.path().join("dhclient.log"));
    Running { dir, lab, servers, load_cap, node_cap, dhclient }
}

fn perfdhcp_summary(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains("sent packets") || l.contains("received packets") || l.contains("drops"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The bindings table as (DUID hex, IAID) -> (address, node).
fn table(pg: &TestPg) -> BTreeMap<(String, u32), (Ipv6Addr, String)> {
    let out = pg.psql("metal6", "SELECT encode(duid, 'hex'), iaid, host(addr), coalesce(node, '') FROM bindings");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Some(((f.first()?.to_string(), f.get(1)?.parse().ok()?), (f.get(2)?.parse().ok()?, f.get(3)?.to_string())))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every Reply's binding is the table's (the last Reply per IA), and no address went to two
/// clients. Returns how many Replies were checked.
fn check_replies(pg: &TestPg, replies: &[(Vec<u8>, [u8; 3], u32, Ipv6Addr)], what: &str) -> usize {
    let rows = table(pg);
    let mut last: BTreeMap<(String, u32), Ipv6Addr> = BTreeMap::new();
    let mut owners: BTreeMap<Ipv6Addr, BTreeSet<String>> = BTreeMap::new();
    for (duid, _, iaid, addr) in replies {
        last.insert((hex(duid), *iaid), *addr);
        owners.entry(*addr).or_default().insert(hex(duid));
    }
    let shared: Vec<_> = owners.iter().filter(|(_, o)| o.len() > 1).collect();
    assert!(shared.is_empty(), "{what}: addresses handed to two clients: {shared:?}");
    let missing: Vec<_> = last.iter().filter(|(k, a)| rows.get(*k).map(|r| r.0) != Some(**a)).take(10).collect();
    assert!(missing.is_empty(), "{what}: Replies whose binding is not committed (of {} IAs): {missing:?}", last.len());
    let mut addrs = BTreeSet::new();
    for (addr, node) in rows.values() {
        assert!(node.is_empty() || *addr == "fd00:6d:2::100".parse::<Ipv6Addr>().expect("addr"), "{node} at {addr}");
        if node.is_empty() {
            assert!(addrs.insert(*addr), "{what}: pool address {addr} bound twice in the table");
        }
    }
    replies.len()
}

fn leased_events(pg: &TestPg, node: &str) -> Vec<serde_json::Value> {
    let out = pg.psql("metal6", &format!("SELECT body FROM node_events WHERE node = '{node}' ORDER BY seq"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "leased")
        .collect()
}

#[test]
fn two_servers_behind_one_relay_lose_nothing_when_one_is_killed() {
    require_netns!();
    require_tool!("dhcrelay");
    require_tool!("perfdhcp");
    require_tool!("dhclient");
    require_tool!("tshark");
    let Some(pg) = pg() else { return };
    let Running { dir, lab, servers, load_cap, node_cap, mut dhclient } = running(&pg);
    let bound = wait_for("the node's lease", Duration::from_secs(30), || {
        servers.iter().position(|s| {
            s.events().iter().any(|e| {
                e["kind"] == "leased" && e["node"] == "pool-node-1" && e["source"] == "dhcpv6" && e["msg"] == "request"
            })
        })
    });
    // Load: perfdhcp's relayed 4-way exchanges from 3,000 clients, in the background.
    let load_log = dir.path().join("perfdhcp.log");
    let mut perf = lab.load.spawn(
        Path::new("/usr/sbin/perfdhcp"),
        &["-6", "-l", "m6c0", "-r", "100", "-p", "16", "-R", "3000"],
        &load_log,
    );
    std::thread::sleep(Duration::from_secs(5));
    // SIGKILL the node's server mid-run.
    let [a, b] = servers;
    let (victim, survivor) = if bound == 0 { (a, b) } else { (b, a) };
    let mut victim = victim;
    let _ = victim.child.kill();
    let _ = victim.child.wait();
    let killed_at = unix_now();
    // The node's Renews go to the dead server; at T2 it rebinds, and the survivor answers.
    wait_for("the survivor to answer the node's Rebind", Duration::from_secs(20), || {
        survivor
            .events()
            .iter()
            .any(|e| {
                e["kind"] == "leased" && e["node"] == "pool-node-1" && e["msg"] == "rebind" && e["source"] == "dhcpv6"
            })
            .then_some(())
    });
    let perf_done = perf.wait().expect("perfdhcp");
    let summary = perfdhcp_summary(&std::fs::read_to_string(&load_log).unwrap_or_default());
    let _ = dhclient.kill();
    let _ = dhclient.wait();
    let load_seen = load_cap.messages();
    let node_seen = node_cap.messages();
    let node_replies = replies(&node_seen);
    // The node's first Rebind (dhclient sends it at T2, or at its next Renew retransmission
    // when that is later: REN_TIMEOUT is 10 s) and the survivor's Reply to it.
    let rebind = node_seen.iter().find(|s| s.msg.msg_type == MsgType::Rebind).expect("the node rebound");
    let answer = node_seen
        .iter()
        .find(|s| s.msg.msg_type == MsgType::Reply && s.msg.xid == rebind.msg.xid)
        .expect("the Rebind answered");
    let rebind_latency = answer.t - rebind.t;
    assert!(rebind_latency < 1.0, "the survivor took {rebind_latency:.3} s to answer the Rebind");
    let load_replies = replies(&load_seen);
    // The survivor kept answering Solicits: its Advertises after the kill, and the longest
    // silence between two of them in the 5 s after it.
    let survivor_duid = load_seen
        .iter()
        .filter(|s| s.msg.msg_type == MsgType::Advertise && s.t > killed_at + 1.0)
        .find_map(|s| s.server.clone())
        .expect("Advertises after the kill");
    let mut times: Vec<f64> = load_seen
        .iter()
        .filter(|s| s.msg.msg_type == MsgType::Advertise && s.server.as_ref() == Some(&survivor_duid))
        .map(|s| s.t)
        .filter(|t| *t >= killed_at - 1.0 && *t <= killed_at + 5.0)
        .collect();
    times.sort_by(f64::total_cmp);
    let longest_silence = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let after_kill = times.iter().filter(|t| **t > killed_at).count();
    // Clients are shared out between the two servers by DUID: the survivor answers its own
    // share all along, and the dead server's once its heartbeat lapsed.
    let victim_name = if bound == 0 { "srv-a" } else { "srv-b" };
    let both = ["srv-a".to_owned(), "srv-b".to_owned()];
    let takeover = load_seen
        .iter()
        .filter(|s| {
            s.msg.msg_type == MsgType::Advertise && s.t > killed_at && s.server.as_ref() == Some(&survivor_duid)
        })
        .find(|s| metal6_netboot::shared::answers(&both, victim_name, s.msg.client_id().unwrap_or_default()))
        .map(|s| s.t - killed_at)
        .expect("the survivor took over the dead server's clients");
    eprintln!(
        "survivor: {after_kill} Advertises in the 5 s after the kill, longest silence {longest_silence:.3} s; \
         first Advertise to the dead server's share {takeover:.2} s after the kill"
    );
    let bound_s = metal6_netboot::shared::HEARTBEAT_LAPSE.as_secs_f64() + 2.0;
    assert!(
        after_kill > 150 && longest_silence < 0.5 && takeover < bound_s,
        "the survivor stalled after the kill: {after_kill} Advertises, {longest_silence:.3} s of silence, \
         took over after {takeover:.2} s (bound {bound_s} s)"
    );
    eprintln!(
        "perfdhcp ({perf_done}): {summary}; {} load Replies, {} node Replies; Rebind sent {:.1} s after the kill, answered in {rebind_latency:.3} s",
        load_replies.len(),
        node_replies.len(),
        rebind.t - killed_at,
    );
    assert!(
        load_replies.len() > 500,
        "too little load got through: {summary}\n{}",
        std::fs::read_to_string(&lab.relay_log).unwrap_or_default()
    );
    check_replies(&pg, &load_replies, "load");
    check_replies(&pg, &node_replies, "node");
    // Events: one `leased` per answered exchange of the node (its Replies' distinct xids),
    // written by whichever server answered, none lost with the killed one, none twice.
    let xids: BTreeSet<[u8; 3]> = node_replies.iter().map(|r| r.1).collect();
    let events = leased_events(&pg, "pool-node-1");
    assert_eq!(events.len(), xids.len(), "leased events in the database vs exchanges answered: {events:#?}");
    // The survivor's own timeline took in what the killed server recorded.
    wait_for("the survivor to follow the events", Duration::from_secs(5), || {
        let local = survivor.events().iter().filter(|e| e["kind"] == "leased" && e["node"] == "pool-node-1").count();
        (local == events.len()).then_some(())
    });
    let stats = survivor.stats();
    assert!(stats["db"]["followed"].as_u64().unwrap_or(0) > 0, "the survivor followed nothing: {stats}");
    drop(lab);
}

#[test]
fn a_database_restart_under_load_loses_no_acknowledged_binding() {
    require_netns!();
    require_tool!("dhcrelay");
    require_tool!("perfdhcp");
    require_tool!("dhclient");
    require_tool!("tshark");
    let Some(pg) = pg() else { return };
    let Running { dir, lab, servers, load_cap, node_cap, mut dhclient } = running(&pg);
    wait_for("the node's lease", Duration::from_secs(30), || {
        servers
            .iter()
            .any(|s| s.events().iter().any(|e| e["kind"] == "leased" && e["node"] == "pool-node-1"))
            .then_some(())
    });
    // New clients at 100/s and Renews of what they got at 50/s, for 16 s.
    let load_log = dir.path().join("perfdhcp.log");
    let mut perf = lab.load.spawn(
        Path::new("/usr/sbin/perfdhcp"),
        &["-6", "-l", "m6c0", "-r", "100", "-f", "50", "-p", "16", "-R", "3000"],
        &load_log,
    );
    std::thread::sleep(Duration::from_secs(5));
    // A crash of the database (no shutdown checkpoint), 3 s down, then back.
    pg.stop_server("immediate");
    let down_at = unix_now();
    std::thread::sleep(Duration::from_secs(3));
    pg.start_server();
    let up_at = unix_now();
    let _ = perf.wait().expect("perfdhcp");
    let summary = perfdhcp_summary(&std::fs::read_to_string(&load_log).unwrap_or_default());
    // Both servers leave degraded mode on their own and write what they answered meanwhile.
    for s in &servers {
        wait_for("the server to leave degraded mode", Duration::from_secs(15), || {
            let st = s.stats();
            (st["db"]["degraded"] == false && st["db"]["deferred"] == 0).then_some(())
        });
    }
    let _ = dhclient.kill();
    let _ = dhclient.wait();
    let load_seen = load_cap.messages();
    let node_replies = replies(&node_cap.messages());
    let load_replies = replies(&load_seen);
    let degraded: u64 = servers.iter().map(|s| s.stats()["db"]["degraded_replies"].as_u64().unwrap_or(0)).sum();
    let during = load_seen.iter().filter(|s| s.msg.msg_type == MsgType::Reply && s.t > down_at && s.t < up_at).count();
    let after = load_seen.iter().filter(|s| s.msg.msg_type == MsgType::Reply && s.t > up_at + 2.0).count();
    eprintln!(
        "perfdhcp: {summary}; {} load Replies ({during} while the database was down, {after} from 2 s after it was \
         back), {} node Replies; {degraded} renewals answered degraded",
        load_replies.len(),
        node_replies.len()
    );
    assert!(degraded > 0, "no renewal was answered while the database was down");
    assert!(after > 100, "the servers did not recover: {after} Replies after the restart");
    for s in &servers {
        let log = s.log_text();
        assert!(log.contains("degraded") && log.contains("leaving degraded mode"), "{log}");
    }
    check_replies(&pg, &load_replies, "load");
    check_replies(&pg, &node_replies, "node");
}

#[test]
fn a_server_with_another_inventory_refuses_the_nodes_it_disagrees_on() {
    require_netns!();
    require_tool!("dhcrelay");
    require_tool!("dhclient");
    let Some(pg) = pg() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let inv = inventory(dir.path());
    // The same inventory with the node at another address.
    let other = dir.path().join("other.yaml");
    let text = std::fs::read_to_string(&inv).expect("read");
    let text = text.replace("    segment: rack2\n", "    segment: rack2\n    address: fd00:6d:2::bad\n");
    std::fs::write(&other, text).expect("write");
    let lab = lab(dir.path());
    let a = start_server(&lab.srv[0], &inv, &pg, "srv-a");
    let b = start_server(&lab.srv[1], &other, &pg, "srv-b");
    assert!(b.log_text().contains("differs from the generation"), "{}", b.log_text());
    let d = dir.path().display();
    let out = lab.node.try_exec(&format!("timeout 30 dhclient -6 -1 -lf {d}/n.lease -pf {d}/n.pid -sf /bin/true m6c0"));
    let lease = std::fs::read_to_string(dir.path().join("n.lease")).unwrap_or_default();
    assert!(lease.contains("iaaddr fd00:6d:2::100"), "{lease}\n{}", String::from_utf8_lossy(&out.stderr));
    lab.node.try_exec(&format!("kill $(cat {d}/n.pid)"));
    wait_for("srv-b to count the refusal", Duration::from_secs(5), || {
        (b.stats()["dropped"]["inventory-mismatch"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    assert_eq!(b.stats()["db"]["refused_nodes"], 1);
    assert!(
        !b.events().iter().any(|e| e["kind"] == "leased" && e["source"] == "dhcpv6" && e["addr"] == "fd00:6d:2::bad")
    );
    // srv-b publishes its inventory: now srv-a is the one that disagrees, and says so.
    drop(b);
    let (url, pw) = (pg.url(), pg.password_ref());
    let args = [
        "--no-ra",
        "--no-http",
        "--no-tftp",
        "--state",
        &url,
        "--state-password",
        &pw,
        "--server-name",
        "srv-b",
        "--publish-inventory",
    ];
    let _b = Server::start(&lab.srv[1], &other, "m6s0", &args);
    wait_for("srv-a to notice the new generation", Duration::from_secs(10), || {
        (a.stats()["db"]["refused_nodes"] == 1).then_some(())
    });
    assert!(a.log_text().contains("another inventory generation was published"), "{}", a.log_text());
    let out = pg.psql("metal6", "SELECT count(*) FROM inventory_generations");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    // What operators look at: `metal6 db status`, and `migrate` on a current database.
    let db = |args: &[&str]| {
        std::process::Command::new(common::metal6())
            .args(args)
            .args(["--state", &url, "--state-password", &pw])
            .output()
            .expect("metal6 db")
    };
    let out = db(&["-o", "json", "db", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(out.status.success(), "{status}");
    assert_eq!(
        (status["version"].clone(), status["inventory_generation"]["generation"].clone()),
        (metal6_db::migrate::known().into(), 2.into())
    );
    let out = db(&["db", "migrate"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("already at schema version {}", metal6_db::migrate::known()))
    );
    // A password on the command line is refused before anything connects.
    let out = std::process::Command::new(common::metal6())
        .args(["db", "status", "--state", "postgres://metal6:secret@db.invalid/metal6"])
        .output()
        .expect("metal6 db");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("by reference") && !err.contains("secret@"), "{err}");
}

/// Two `metal6 apply` workers on one PostgreSQL drive a simulated fleet (tests/lab/fleet_sim.py,
/// the Dell-job simulator, through a real serve); one is killed with SIGKILL while nodes are
/// in flight. The other takes its nodes over once their claims lapse, every node ends `ready`,
/// and no node is powered on or installed twice (the simulator counts both).
#[test]
fn two_apply_workers_share_a_fleet_and_one_takes_over_when_the_other_dies() {
    require_netns!();
    require_tool!("curl");
    require_tool!("python3");
    let Some(pg) = pg() else { return };
    let fleet = common::fleet::Fleet::start_with(8, 4, 50, false, 4.0);
    let (url, pw) = (pg.url(), pg.password_ref());
    let args = |name: &str| {
        vec![
            // Each worker drives at most 4 of the 8 nodes at once (and claims only those), so
            // both hold nodes however far apart they start.
            "--parallel".to_owned(),
            "4".into(),
            "--installs".into(),
            "4".into(),
            "--poll".into(),
            "200ms".into(),
            "--skip-doctor".into(),
            "--state".into(),
            url.clone(),
            "--state-password".into(),
            pw.clone(),
            "--worker-name".into(),
            name.into(),
            "--claim-lease".into(),
            "3s".into(),
        ]
    };
    let spawn = |name: &str| {
        let dir = fleet.dir.path().join(name);
        let log = std::fs::File::create(fleet.dir.path().join(format!("{name}.log"))).expect("log");
        let a = args(name);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fleet
            .apply_cmd_in(&dir, &a)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("apply")
    };
    let mut wa = spawn("wa");
    let mut wb = spawn("wb");
    let owned = |who: &str| -> usize {
        let out = pg.psql(
            "metal6",
            &format!("SELECT count(*) FROM apply_nodes WHERE owner = '{who}' AND record->'state'->>'state' <> 'done'"),
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    };
    // Kill wa while it drives nodes and some install.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let log = |n: &str| std::fs::read_to_string(fleet.dir.path().join(format!("{n}.log"))).unwrap_or_default();
    let held = loop {
        let (a, b) = (owned("wa"), owned("wb"));
        // A worker claims only nodes it has a --parallel slot for.
        assert!(a <= 4 && b <= 4, "wa owns {a}, wb owns {b}");
        if a > 0 && fleet.serve.events().iter().any(|e| e["phase"] == "writing-image") {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wa never drove a node while installs ran: wa owns {a}, wb owns {b}\nwa:\n{}\nwb:\n{}",
            log("wa"),
            log("wb")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = wa.kill();
    let _ = wa.wait();
    let done = wait_for("wb to finish", Duration::from_secs(120), || {
        let b = owned("wb");
        assert!(b <= 4, "wb owns {b} after taking over");
        wb.try_wait().ok().flatten()
    });
    let wb_log = log("wb");
    assert!(done.success() && wb_log.contains("ready: 8/8"), "wb ({done}):\n{wb_log}");
    let q = |sql: &str| String::from_utf8_lossy(&pg.psql("metal6", sql).stdout).trim().to_owned();
    assert_eq!(q("SELECT count(*) FROM apply_nodes WHERE record->'state'->>'state' = 'done'"), "8");
    let takeovers: usize =
        q("SELECT count(*) FROM apply_history WHERE entry->>'kind' = 'takeover'").parse().unwrap_or(0);
    assert!(takeovers >= held, "{held} nodes held by wa at its death, {takeovers} taken over");
    for b in fleet.bmcs() {
        for (id, s) in b["systems"].as_object().expect("systems") {
            assert_eq!((s["power_ons"].as_u64(), s["installs_done"].as_u64()), (Some(1), Some(1)), "system {id}: {s}");
        }
    }
    eprintln!("wa held {held} nodes when killed; {takeovers} taken over by wb");
}

/// TLS to the database is verified by default: against a PostgreSQL with TLS on `[::1]`
/// (loopback), `metal6 db status` connects when the server's certificate chains to
/// `sslrootcert` and names the host, and refuses when it chains to another CA; plain text over
/// TCP is refused before anything connects.
#[test]
fn tls_to_the_database_is_verified() {
    let dir = tempfile::tempdir().expect("tmp");
    common::tls_ca_and_leaf(dir.path(), &["::1"]);
    let port = std::net::TcpListener::bind("[::1]:0").expect("a free port").local_addr().expect("addr").port();
    let files = metal6_db::testpg::TlsFiles { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
    let Some(pg) = TestPg::start_tls(&files, port) else {
        assert!(std::env::var_os("CI").is_none(), "PostgreSQL is not installed: `make deps` should have installed it");
        eprintln!("SKIP: PostgreSQL is not installed (run `make deps`)");
        return;
    };
    let status = |ca: &str| {
        let url = format!("postgres://metal6@[::1]:{port}/metal6?sslrootcert={}", dir.path().join(ca).display());
        std::process::Command::new(common::metal6())
            .args(["db", "status", "--state", &url, "--state-password", &pg.password_ref()])
            .output()
            .expect("metal6 db status")
    };
    let ok = status("ca.pem");
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("schema version 0"),
        "verified TLS: {}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        pg.log()
    );
    let bad = status("other-ca.pem");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("cannot connect") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let plain = std::process::Command::new(common::metal6())
        .args(["db", "status", "--state", &format!("postgres://metal6@[::1]:{port}/metal6?sslmode=disable")])
        .output()
        .expect("metal6 db status");
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success() && err.contains("only for a Unix-socket host"), "{err}");
}

/// A node's own reports (HTTP) on a shared state: 202 only once committed, a retried report
/// (same id, as the installer sends it) stored once, the other server's timeline has it, and
/// while the database is down the node is told to retry (503) instead of being told "recorded".
#[test]
fn node_reports_are_committed_shared_and_stored_once() {
    require_netns!();
    require_tool!("curl");
    let Some(pg) = pg() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let inv = inventory(dir.path());
    let (a_ns, b_ns) = (Netns::new(), Netns::new());
    let (url, pw) = (pg.url(), pg.password_ref());
    let mut servers = Vec::new();
    for (ns, name) in [(&a_ns, "srv-a"), (&b_ns, "srv-b")] {
        // The boot server's address and the node's, on this namespace's own loopback.
        ns.exec("ip link add m6s0 type veth peer name m6s1 && ip link set m6s0 up && ip link set m6s1 up && ip -6 addr add fd00:6d:1::1/128 dev lo nodad && ip -6 addr add fd00:6d:2::100/128 dev lo nodad");
        let args = ["--no-ra", "--no-tftp", "--state", &url, "--state-password", &pw, "--server-name", name];
        let s = Server::start(ns, &inv, "m6s0", &args);
        wait_for("HTTP to listen", Duration::from_secs(10), || s.log_text().contains("HTTP listening").then_some(()));
        servers.push(s);
    }
    let post = |ns: &Netns, id: &str| -> String {
        let body = format!(r#"{{"kind":"progress","phase":"writing-image","percent":50,"id":"{id}"}}"#);
        let out = ns.try_exec(&format!(
            "curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 --interface fd00:6d:2::100 -X POST \
             -H 'content-type: application/json' -d '{body}' 'http://[fd00:6d:1::1]/v1/nodes/pool-node-1/events'"
        ));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The installer's retry of a report whose answer it lost: the same id, twice.
    assert_eq!(post(&a_ns, "r1"), "202");
    assert_eq!(post(&a_ns, "r1"), "202");
    let count = |id: &str| {
        let out = pg.psql("metal6", &format!("SELECT count(*) FROM node_events WHERE id = 'node-pool-node-1-{id}'"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(count("r1"), "1");
    let reports = |s: &Server| s.events().iter().filter(|e| e["kind"] == "progress" && e["id"] == "r1").count();
    assert_eq!(reports(&servers[0]), 1, "stored once locally too");
    wait_for("srv-b to follow the report", Duration::from_secs(5), || (reports(&servers[1]) == 1).then_some(()));
    // The database down: the node is told to retry, not that its report is recorded.
    pg.stop_server("fast");
    assert_eq!(post(&a_ns, "r2"), "503");
    pg.start_server();
    let code = wait_for("the report to be taken again", Duration::from_secs(20), || {
        let c = post(&a_ns, "r2");
        (c == "202").then_some(c)
    });
    assert_eq!(code, "202");
    assert_eq!(count("r2"), "1");
}
