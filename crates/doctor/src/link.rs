//! Active probes on the provisioning link, each bounded in time: a Router Solicitation (every
//! router that answers, its prefixes and M/O flags), a Solicit as a netbooting UEFI HTTP client
//! (every DHCPv6 server that answers), and a Neighbor Solicitation for the boot server's
//! address (anyone else who holds it). Our own answers are told apart by their source: an
//! address of this interface.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use metal6_dhcp6::wire::{self, ClientMsg, IaNa, Message, MsgType, Opt};
use metal6_inventory::Inventory;
use metal6_ra::Advertisement;
use socket2::{Domain, Protocol, Socket, Type};

use crate::Check;
use crate::procnet;

const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ALL_DHCP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// The probe's DUID-LL link-layer address: locally administered, not any node's.
const PROBE_MAC: [u8; 6] = [0x02, 0x00, 0x6d, 0x64, 0x6f, 0x63];

struct Iface {
    name: String,
    index: u32,
    mac: [u8; 6],
    /// Every address of the interface: answers from these are ours.
    ours: Vec<Ipv6Addr>,
}

fn iface(name: &str) -> Option<Iface> {
    let index = procnet::sys(name, "ifindex")?.parse().ok()?;
    let mac = procnet::sys(name, "address")
        .and_then(|m| m.parse::<metal6_inventory::ident::MacAddr>().ok())
        .map_or([0; 6], |m| m.0);
    let ours = procnet::addresses().into_iter().filter(|a| a.ifname == name).map(|a| a.addr).collect();
    Some(Iface { name: name.to_owned(), index, mac, ours })
}

fn mac_text(m: &[u8]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A raw ICMPv6 socket on the interface, as a `UdpSocket` (std reads datagrams and their
/// source from any datagram fd, without `unsafe` around socket2's uninitialised buffers).
fn icmp_socket(i: &Iface) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(i.name.as_bytes()))?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_if_v6(i.index)?;
    // Our own probes must not answer themselves.
    s.set_multicast_loop_v6(false)?;
    Ok(s.into())
}

/// Receives until `deadline`, handing each datagram and its source to `f`.
fn receive(s: &UdpSocket, deadline: Instant, mut f: impl FnMut(&[u8], Ipv6Addr)) {
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now >= deadline || s.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).is_err() {
            return;
        }
        match s.recv_from(&mut buf) {
            Ok((n, std::net::SocketAddr::V6(src))) => f(&buf[..n], *src.ip()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

pub fn checks(inv: &Inventory, probe: Duration) -> Vec<Check> {
    let Some(i) = iface(&inv.site.interface) else {
        return vec![Check::skip("link", format!("no interface {}: no link probes", inv.site.interface))];
    };
    // Our own answers are told by this host's addresses: elsewhere, serve's would look rogue.
    if !i.ours.contains(&inv.site.boot_server.address) {
        return vec![Check::skip(
            "link",
            format!(
                "the boot server's address {} is not on {}: run --network on the boot server",
                inv.site.boot_server.address, i.name
            ),
        )];
    }
    vec![routers(inv, &i, probe), dhcp_servers(&i, probe), duplicate(inv, &i, probe)]
}

fn routers(inv: &Inventory, i: &Iface, probe: Duration) -> Check {
    let id = "link.routers";
    let s = match icmp_socket(i) {
        Ok(s) => s,
        Err(e) => return Check::skip(id, format!("no raw ICMPv6 socket ({e}): run doctor as root for link probes")),
    };
    // Router Solicitation with our source link-layer address (RFC 4861 §4.1).
    let mut rs = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    rs.extend_from_slice(&i.mac);
    if let Err(e) = s.send_to(&rs, SocketAddrV6::new(ALL_ROUTERS, 0, 0, i.index)) {
        return Check::skip(id, format!("cannot send a Router Solicitation on {}: {e}", i.name));
    }
    let mut seen: BTreeMap<Ipv6Addr, Advertisement> = BTreeMap::new();
    receive(&s, Instant::now() + probe, |p, src| {
        if let Ok(ra) = metal6_ra::parse_ra(p) {
            seen.insert(src, ra);
        }
    });
    let want = inv.site.segments[0].prefix;
    let ours_sends = inv.site.router_advertisements.enabled;
    let mut problems = vec![];
    let mut good = vec![];
    for (src, ra) in &seen {
        if i.ours.contains(src) {
            continue;
        }
        let who = format!("{src}{}", ra.source_mac.map(|m| format!(" ({m})")).unwrap_or_default());
        let prefixes: Vec<String> = ra.prefixes.iter().map(|(p, l, _, _)| format!("{p}/{l}")).collect();
        let mut why = vec![];
        if ours_sends && ra.router_lifetime > 0 {
            why.push(format!("another default router (lifetime {} s)", ra.router_lifetime));
        }
        for (p, l, _, _) in &ra.prefixes {
            if (*p, *l) != (want.network(), want.prefix_len()) {
                why.push(format!("another prefix {p}/{l}"));
            }
        }
        let want_flags = &inv.site.router_advertisements;
        if ra.managed != want_flags.managed {
            why.push(format!(
                "M={} where the inventory says M={} ({})",
                u8::from(ra.managed),
                u8::from(want_flags.managed),
                if ra.managed { "addresses from DHCPv6" } else { "addresses not from DHCPv6" }
            ));
        }
        if ra.other_config != want_flags.other_config {
            why.push(format!(
                "O={} where the inventory says O={}",
                u8::from(ra.other_config),
                u8::from(want_flags.other_config)
            ));
        }
        if ra.malformed {
            why.push("malformed options (hosts may still act on it)".into());
        }
        if why.is_empty() {
            good.push(format!(
                "{who}: M={} O={}, prefixes [{}]",
                u8::from(ra.managed),
                u8::from(ra.other_config),
                prefixes.join(", ")
            ));
        } else {
            problems.push(format!(
                "{who} (M={} O={}, prefixes [{}]): {}",
                u8::from(ra.managed),
                u8::from(ra.other_config),
                prefixes.join(", "),
                why.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        return Check::fail(
            id,
            format!("a router the inventory does not expect answered: {}", problems.join("; ")),
            format!(
                "stop its RAs on this link (or make it advertise {want} with M={}{}): firmware takes whichever RA it sees, and M=0 or another prefix gives a node the wrong address or none",
                u8::from(inv.site.router_advertisements.managed),
                if ours_sends { " and router lifetime 0" } else { "" }
            ),
        );
    }
    match (ours_sends, good.is_empty()) {
        (true, true) => Check::ok(
            id,
            format!("no other router answered in {:.1} s; metal6 serve sends this link's RAs", probe.as_secs_f64()),
        ),
        (true, false) => Check::ok(id, format!("other routers agree with the inventory: {}", good.join("; "))),
        (false, true) => Check::fail(
            id,
            format!(
                "no router answered a Router Solicitation in {:.1} s, and site.router_advertisements is off",
                probe.as_secs_f64()
            ),
            "firmware waits for an RA with M=1 before DHCPv6: fix the link's router, or let metal6 serve send RAs (site.router_advertisements.enabled)",
        ),
        (false, false) => {
            Check::ok(id, format!("the link's router advertises as the inventory says: {}", good.join("; ")))
        }
    }
}

fn dhcp_servers(i: &Iface, probe: Duration) -> Check {
    let id = "link.dhcpv6-servers";
    let sock = (|| -> std::io::Result<UdpSocket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.bind_device(Some(i.name.as_bytes()))?;
        s.set_multicast_if_v6(i.index)?;
        s.set_multicast_loop_v6(false)?;
        s.bind(&SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 546, 0, 0).into())?;
        Ok(s.into())
    })();
    let sock = match sock {
        Ok(s) => s,
        Err(e) => {
            return Check::skip(
                id,
                format!("cannot bind the DHCPv6 client port 546 on {} ({e}): a DHCPv6 client runs here?", i.name),
            );
        }
    };
    let duid = [&[0u8, 3, 0, 1][..], &PROBE_MAC].concat();
    let xid = [0x6d, 0x64, (std::process::id() & 0xff) as u8];
    // What OVMF's HttpBootDxe sends (see `metal6 dhcp6 probe --kind uefi-http`).
    let solicit = Message::Client(ClientMsg {
        msg_type: MsgType::Solicit,
        xid,
        opts: vec![
            Opt::ClientId(duid),
            Opt::ElapsedTime(0),
            Opt::IaNa(IaNa { iaid: 0x6d64, t1: 0, t2: 0, opts: vec![] }),
            Opt::Oro(vec![59, 60, 23, 16]),
            Opt::ClientNii { kind: 1, major: 3, minor: 0 },
            Opt::ClientArch(vec![16]),
            Opt::VendorClass { enterprise: 343, data: vec![b"HTTPClient:Arch:00016:UNDI:003000".to_vec()] },
        ],
    });
    if let Err(e) = sock.send_to(&solicit.encode(), SocketAddrV6::new(ALL_DHCP, 547, 0, i.index)) {
        return Check::skip(id, format!("cannot send a Solicit on {}: {e}", i.name));
    }
    let mut foreign: BTreeMap<Ipv6Addr, String> = BTreeMap::new();
    let mut ours = 0;
    receive(&sock, Instant::now() + probe, |p, src| {
        let Ok(Message::Client(m)) = wire::decode(p) else { return };
        if m.xid != xid || !matches!(m.msg_type, MsgType::Advertise | MsgType::Reply) {
            return;
        }
        if i.ours.contains(&src) {
            ours += 1;
            return;
        }
        let mut what = vec![];
        if let Some(sid) = m.server_id() {
            what.push(format!("DUID {}", mac_text(sid)));
        }
        for o in &m.opts {
            match o {
                Opt::IaNa(ia) => {
                    for x in &ia.opts {
                        match x {
                            Opt::IaAddr(a) => what.push(format!("offers {}", a.addr)),
                            Opt::StatusCode(c, t) => what.push(format!("IA status {c} {t:?}")),
                            _ => {}
                        }
                    }
                }
                Opt::BootfileUrl(u) => what.push(format!("bootfile {u}")),
                Opt::StatusCode(c, t) => what.push(format!("status {c} {t:?}")),
                Opt::Preference(p) => what.push(format!("preference {p}")),
                _ => {}
            }
        }
        foreign.insert(src, what.join(", "));
    });
    if !foreign.is_empty() {
        let list: Vec<String> = foreign.iter().map(|(a, w)| format!("{a}: {w}")).collect();
        return Check::fail(
            id,
            format!("a DHCPv6 server that is not this metal6 answered a netbooting client: {}", list.join("; ")),
            "stop it or keep it off this link (firmware takes the first or most preferred Advertise, not ours)",
        );
    }
    Check::ok(
        id,
        format!(
            "no other DHCPv6 server answered a UEFI HTTP client's Solicit in {:.1} s{}",
            probe.as_secs_f64(),
            if ours > 0 { " (metal6 answered)" } else { "" }
        ),
    )
}

fn duplicate(inv: &Inventory, i: &Iface, probe: Duration) -> Check {
    let id = "link.duplicate-address";
    let target = inv.site.boot_server.address;
    let s = match icmp_socket(i) {
        Ok(s) => s,
        Err(e) => return Check::skip(id, format!("no raw ICMPv6 socket ({e})")),
    };
    let t = target.octets();
    // Solicited-node multicast ff02::1:ffXX:XXXX (RFC 4291 §2.7.1).
    let group = Ipv6Addr::from([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]]);
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&t);
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&i.mac);
    if let Err(e) = s.send_to(&ns, SocketAddrV6::new(group, 0, 0, i.index)) {
        return Check::skip(id, format!("cannot send a Neighbor Solicitation on {}: {e}", i.name));
    }
    let mut others: BTreeMap<Ipv6Addr, String> = BTreeMap::new();
    receive(&s, Instant::now() + probe, |p, src| {
        // Neighbor Advertisement: type 136, target at 8..24, options after (type 2: target MAC).
        // Linux answers from the target address itself, so the source cannot tell ours from
        // theirs: the target link-layer address does (and our own kernel never sees the probe).
        if p.len() < 24 || p[0] != 136 || p[8..24] != t {
            return;
        }
        let mut mac = String::from("MAC not given");
        let mut opts = &p[24..];
        while opts.len() >= 8 {
            let len = usize::from(opts[1]) * 8;
            if len == 0 || len > opts.len() {
                break;
            }
            if opts[0] == 2 && len == 8 {
                mac = mac_text(&opts[2..8]);
            }
            opts = &opts[len..];
        }
        if mac != mac_text(&i.mac) {
            others.insert(src, mac);
        }
    });
    if others.is_empty() {
        Check::ok(id, format!("no other host answered for {target} in {:.1} s", probe.as_secs_f64()))
    } else {
        let list: Vec<String> = others.iter().map(|(a, m)| format!("{a} ({m})")).collect();
        Check::fail(
            id,
            format!("another host answers for the boot server's address {target}: {}", list.join(", ")),
            "remove the address from that host: nodes would send to whichever answers",
        )
    }
}
