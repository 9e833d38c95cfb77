//! This host, as the boot server of the inventory: the provisioning interface, the boot
//! server's address (present, not tentative, not a DAD failure), the MTU, the sysctls that
//! decide how the host treats RAs and forwarding, the ports `metal6 serve` needs (free or held
//! by metal6) and whether nftables drops them.

use metal6_inventory::Inventory;

use crate::Check;
use crate::nft::{self, Verdict};
use crate::procnet::{self, IFA_F_DADFAILED, IFA_F_TENTATIVE, Proto};

/// Linux `IFF_UP`.
const IFF_UP: u32 = 0x1;

pub fn checks(inv: &Inventory) -> Vec<Check> {
    let ifname = &inv.site.interface;
    let mut out = vec![];
    let Some(flags) = procnet::sys(ifname, "flags") else {
        out.push(Check::fail(
            "host.interface",
            format!("no interface {ifname} on this host (site.provisioning.interface)"),
            "run doctor on the boot server, or name its provisioning interface in the inventory",
        ));
        return out;
    };
    let up = u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & IFF_UP != 0);
    let oper = procnet::sys(ifname, "operstate").unwrap_or_default();
    out.push(match (up, oper.as_str()) {
        (false, _) => Check::fail("host.interface", format!("{ifname} is down"), format!("ip link set {ifname} up")),
        (true, "up" | "unknown") => Check::ok("host.interface", format!("{ifname} is up (operstate {oper})")),
        // A bridge has carrier once one of its ports has: the lab's, and a hypervisor's, get
        // theirs when the nodes' (VMs') links come up.
        (true, o) if procnet::sys(ifname, "bridge/stp_state").is_some() => Check::warn(
            "host.interface",
            format!("{ifname} is a bridge with no port up yet (operstate {o})"),
            "nothing, if its ports come up with the nodes (VM taps); else add the uplink to the bridge",
        ),
        (true, o) => Check::fail(
            "host.interface",
            format!("{ifname} is up but has no carrier (operstate {o})"),
            "check the cable and the switch port",
        ),
    });
    out.push(address(inv));
    out.push(mtu(inv));
    out.push(sysctls(inv));
    let server = &inv.site.boot_server;
    let mut ports = vec![
        (Proto::Udp, 547, "DHCPv6"),
        (Proto::Udp, server.tftp_port, "TFTP"),
        (Proto::Tcp, server.http_port, "HTTP"),
    ];
    if let Some(p) = server.https_port {
        ports.push((Proto::Tcp, p, "HTTPS"));
    }
    // serve binds DHCPv6 on the wildcard address and the rest on the boot address: a socket
    // on either (or on another address of the link) collides; IPv4 sockets do not.
    let mut local: Vec<std::net::Ipv6Addr> =
        procnet::addresses().into_iter().filter(|a| &a.ifname == ifname).map(|a| a.addr).collect();
    local.push(server.address);
    for &(proto, port, what) in &ports {
        out.push(port_check(proto, port, what, &local));
    }
    out.push(firewall(ifname, &ports));
    out
}

fn address(inv: &Inventory) -> Check {
    let ifname = &inv.site.interface;
    let want = inv.site.boot_server.address;
    let all = procnet::addresses();
    let mine: Vec<_> = all.iter().filter(|a| &a.ifname == ifname).collect();
    let link_local = mine.iter().find(|a| a.addr.is_unicast_link_local());
    let id = "host.address";
    let Some(a) = mine.iter().find(|a| a.addr == want) else {
        if let Some(other) = all.iter().find(|a| a.addr == want) {
            return Check::fail(
                id,
                format!("the boot server's address {want} is on {}, not on {ifname}", other.ifname),
                format!(
                    "move it: ip -6 addr del {want}/{} dev {}; ip -6 addr add {want}/{} dev {ifname}",
                    other.prefix_len,
                    other.ifname,
                    inv.site.segments[0].prefix.prefix_len()
                ),
            );
        }
        return Check::fail(
            id,
            format!("{ifname} does not hold the boot server's address {want}"),
            format!("ip -6 addr add {want}/{} dev {ifname}", inv.site.segments[0].prefix.prefix_len()),
        );
    };
    if a.flags & IFA_F_DADFAILED != 0 {
        return Check::fail(
            id,
            format!(
                "{want} on {ifname}: duplicate address detection failed (dadfailed): another host on the link uses it"
            ),
            "find the other host (link.duplicate-address with --network names its MAC), free the address, then re-add it",
        );
    }
    if a.flags & IFA_F_TENTATIVE != 0 {
        return Check::fail(
            id,
            format!(
                "{want} on {ifname} is tentative: duplicate address detection has not finished, nothing can bind or send from it"
            ),
            "wait for DAD to finish (seconds; `ip -6 addr show dev IF` drops `tentative`), or check that the link has carrier",
        );
    }
    match link_local {
        None => Check::fail(
            id,
            format!("{want} on {ifname}, but no link-local address: RAs and DHCPv6 answers go out from one"),
            format!("sysctl -w net.ipv6.conf.{ifname}.addr_gen_mode=0 and bring {ifname} down and up"),
        ),
        Some(ll) if ll.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0 => Check::fail(
            id,
            format!("{want} on {ifname}, but its link-local {} is tentative or failed DAD", ll.addr),
            "wait for DAD, or find the host that uses the same link-local address",
        ),
        Some(ll) => Check::ok(id, format!("{want}/{} and {} on {ifname}, DAD done", a.prefix_len, ll.addr)),
    }
}

fn mtu(inv: &Inventory) -> Check {
    let ifname = &inv.site.interface;
    let want = inv.site.mtu;
    match procnet::sys(ifname, "mtu").and_then(|m| m.parse::<u32>().ok()) {
        Some(m) if m == want => {
            Check::ok("host.mtu", format!("{ifname} MTU {m}, as the inventory (site.provisioning.mtu)"))
        }
        Some(m) => Check::fail(
            "host.mtu",
            format!("{ifname} MTU {m}, the inventory says {want} (and the RAs tell the nodes {want})"),
            format!("ip link set {ifname} mtu {want}, or set site.provisioning.mtu to the link's real MTU"),
        ),
        None => Check::skip("host.mtu", format!("no MTU readable for {ifname}")),
    }
}

fn sysctls(inv: &Inventory) -> Check {
    let ifname = &inv.site.interface;
    let id = "host.sysctl";
    let (Some(fwd), Some(accept_ra)) = (procnet::conf(ifname, "forwarding"), procnet::conf(ifname, "accept_ra")) else {
        return Check::fail(
            id,
            format!("no IPv6 configuration for {ifname} (IPv6 disabled?)"),
            "enable IPv6 on the host",
        );
    };
    if procnet::conf(ifname, "disable_ipv6") == Some(1) {
        return Check::fail(
            id,
            format!("IPv6 is disabled on {ifname}"),
            format!("sysctl -w net.ipv6.conf.{ifname}.disable_ipv6=0"),
        );
    }
    let saw = format!("{ifname}: forwarding={fwd} accept_ra={accept_ra}");
    let we_route = inv.site.router_advertisements.enabled;
    if we_route && accept_ra > 0 && fwd == 0 {
        return Check::warn(
            id,
            format!("{saw}; this host sends the link's RAs and also accepts them: a rogue RA changes its own routes"),
            format!("sysctl -w net.ipv6.conf.{ifname}.accept_ra=0"),
        );
    }
    if we_route && fwd == 0 && inv.site.router_advertisements.router_lifetime > 0 {
        return Check::warn(
            id,
            format!("{saw}; the RAs make this host the nodes' default router, but it does not forward"),
            "netboot works (nodes talk only to this host); for installed nodes to reach beyond it: sysctl -w net.ipv6.conf.all.forwarding=1, or router_lifetime: 0",
        );
    }
    if !we_route && fwd == 1 && accept_ra < 2 {
        return Check::warn(
            id,
            format!("{saw}; the link's router advertises it, but a forwarding host ignores RAs unless accept_ra=2"),
            format!("sysctl -w net.ipv6.conf.{ifname}.accept_ra=2"),
        );
    }
    Check::ok(
        id,
        format!(
            "{saw}: consistent with this host's role ({})",
            if we_route { "it sends the link's RAs" } else { "the link's router sends RAs" }
        ),
    )
}

fn port_check(proto: Proto, port: u16, what: &str, local: &[std::net::Ipv6Addr]) -> Check {
    let id = format!("host.port.{}", what.to_ascii_lowercase());
    let holders = procnet::holders(proto, port, local);
    if holders.is_empty() {
        return Check::ok(&id, format!("{proto} {port} ({what}) is free"));
    }
    let names: Vec<String> =
        holders.iter().map(|(pid, n)| if *pid == 0 { n.clone() } else { format!("{n} (pid {pid})") }).collect();
    if holders.iter().all(|(_, n)| n == "metal6") {
        return Check::ok(&id, format!("{proto} {port} ({what}) is held by metal6: {}", names.join(", ")));
    }
    if holders.iter().all(|(pid, n)| *pid == 0 || n == "metal6") {
        return Check::warn(
            &id,
            format!("{proto} {port} ({what}) is held by {}", names.join(", ")),
            "run doctor as root to name it (metal6 serve running as a service is fine)",
        );
    }
    Check::fail(
        &id,
        format!("{proto} {port} ({what}) is held by {}", names.join(", ")),
        format!(
            "stop it (another {what} server on the boot server answers nodes instead of metal6){}",
            if what.starts_with("HTTP") {
                ", or give metal6 another port (site.boot_server.http_port / https_port)"
            } else {
                ""
            }
        ),
    )
}

fn firewall(ifname: &str, ports: &[(Proto, u16, &str)]) -> Check {
    let id = "host.firewall";
    let out = match std::process::Command::new("nft").args(["-j", "list", "ruleset"]).output() {
        Ok(o) => o,
        Err(_) => return Check::skip(id, "nft is not installed: no nftables ruleset to check"),
    };
    if !out.status.success() {
        return Check::warn(
            id,
            format!("nft -j list ruleset failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            "run doctor as root to read the firewall",
        );
    }
    let doc: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(d) => d,
        Err(e) => {
            return Check::warn(
                id,
                format!("nft printed no JSON ruleset: {e}"),
                "check the nft version (JSON output needs nftables 0.9+)",
            );
        }
    };
    let mut dropped = vec![];
    let mut maybe = vec![];
    let mut fixes = vec![];
    for &(proto, port, what) in ports {
        let o = nft::evaluate(&doc, proto, port, ifname);
        if let Some(Verdict::Drop(by)) = o.verdict {
            dropped.push(format!("{proto} {port} ({what}) dropped by {by}"));
            // `inet f chain input (handle 3)`: accept before that rule, in that chain.
            let mut w = by.split_whitespace();
            if let (Some(family), Some(table), Some("chain"), Some(chain)) = (w.next(), w.next(), w.next(), w.next()) {
                let pos = by
                    .split("(handle ")
                    .nth(1)
                    .map(|h| format!(" position {}", h.trim_end_matches(')')))
                    .unwrap_or_default();
                fixes.push(format!(
                    "nft insert rule {family} {table} {chain}{pos} iifname {ifname} {} dport {port} accept",
                    proto.to_string().to_ascii_lowercase()
                ));
            }
        }
        maybe.extend(
            o.maybe.into_iter().map(|r| format!("{proto} {port} ({what}) by {r} under conditions not checked")),
        );
    }
    if !dropped.is_empty() {
        return Check::fail(
            id,
            format!("nftables drops new packets from {ifname}: {}", dropped.join("; ")),
            format!("accept them before the drop, in the chain that drops: {}", fixes.join("; ")),
        );
    }
    if !maybe.is_empty() {
        return Check::warn(
            id,
            format!("nftables may drop: {}", maybe.join("; ")),
            "check those rules' conditions against the nodes' addresses",
        );
    }
    Check::ok(
        id,
        format!(
            "nftables accepts new packets to {} on {ifname}",
            ports.iter().map(|(p, n, _)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
        ),
    )
}
