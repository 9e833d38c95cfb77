//! The node's network, from the installer's side: which NICs there are, bringing one up for
//! IPv6, and reading the addresses the kernel holds. Addresses and routes are set with the
//! initramfs's `ip` (busybox): the installer runs once per install, so a netlink stack would
//! buy nothing here. Reading needs no tool: /sys/class/net and /proc/net/if_inet6.

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// Ethernet interfaces (ARPHRD_ETHER), sorted by name.
pub fn nics(sys: &Path) -> Vec<Nic> {
    let mut out = vec![];
    let Ok(dir) = std::fs::read_dir(sys) else { return out };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).map(|s| s.trim().to_owned()).unwrap_or_default();
        if read("type") != "1" || name == "lo" {
            continue;
        }
        let (Some(mac), Ok(ifindex)) = (parse_mac(&read("address")), read("ifindex").parse()) else { continue };
        out.push(Nic { name, ifindex, mac });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Brings `nic` up without duplicate address detection (the addresses are the inventory's,
/// unique by validation; DAD would only cost a second per address) and waits for carrier
/// and a link-local address.
pub fn bring_up(nic: &Nic, wait: Duration) -> Result<()> {
    for knob in ["accept_dad", "dad_transmits"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/{knob}", nic.name), "0");
    }
    ip(&["link", "set", "lo", "up"])?;
    ip(&["link", "set", &nic.name, "up"])?;
    let deadline = Instant::now() + wait;
    loop {
        let carrier = std::fs::read_to_string(format!("/sys/class/net/{}/carrier", nic.name)).unwrap_or_default();
        let ll = addresses(nic.ifindex).iter().any(|a| a.scope == Scope::Link && !a.tentative);
        if carrier.trim() == "1" && ll {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{}: no carrier or link-local address after {wait:?}", nic.name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Gives `nic` its address, and a route to the server (which may be off the address's prefix
/// before the plan tells the prefix length). On the server's own link the server is a
/// neighbour; on a relayed segment (`gateway` given) it is reached through the segment's
/// router, which is made a neighbour first (a DHCPv6 address is a /128: nothing is on-link yet).
pub fn configure(
    nic: &Nic,
    addr: Ipv6Addr,
    prefix_len: u8,
    server: Option<Ipv6Addr>,
    gateway: Option<Ipv6Addr>,
) -> Result<()> {
    // No `nodad`: busybox ip lacks it, and bring_up turned DAD off for the interface.
    ip(&["-6", "addr", "replace", &format!("{addr}/{prefix_len}"), "dev", &nic.name])?;
    match (server, gateway) {
        (Some(s), Some(g)) => {
            ip(&["-6", "route", "replace", &format!("{g}/128"), "dev", &nic.name])?;
            ip(&["-6", "route", "replace", &format!("{s}/128"), "via", &g.to_string(), "dev", &nic.name])?;
        }
        (Some(s), None) => ip(&["-6", "route", "replace", &format!("{s}/128"), "dev", &nic.name])?,
        (None, _) => {}
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Global,
    Link,
    Host,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Addr {
    pub interface: String,
    #[serde(skip)]
    pub ifindex: u32,
    pub address: Ipv6Addr,
    pub prefix_len: u8,
    pub scope: Scope,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tentative: bool,
}

/// Parses /proc/net/if_inet6: `addr(32 hex) ifindex prefixlen scope flags name`, all hex.
pub fn parse_if_inet6(text: &str) -> Vec<Addr> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 6 || f[0].len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(f[0], 16).ok()?;
            let scope = match u8::from_str_radix(f[3], 16).ok()? {
                0x00 => Scope::Global,
                0x20 => Scope::Link,
                0x10 => Scope::Host,
                _ => Scope::Other,
            };
            Some(Addr {
                interface: f[5].to_owned(),
                ifindex: u32::from_str_radix(f[1], 16).ok()?,
                address: Ipv6Addr::from(bits),
                prefix_len: u8::from_str_radix(f[2], 16).ok()?,
                scope,
                // IFA_F_TENTATIVE | IFA_F_DADFAILED
                tentative: u32::from_str_radix(f[4], 16).ok()? & 0x48 != 0,
            })
        })
        .collect()
}

/// The IPv6 addresses of one interface (`ifindex`), or of all (0).
pub fn addresses(ifindex: u32) -> Vec<Addr> {
    let text = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    parse_if_inet6(&text).into_iter().filter(|a| ifindex == 0 || a.ifindex == ifindex).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_inet6_lines_become_addresses() {
        let text = "fd00006d000100000000000000000100 02 40 00 80     eth0\n\
                    fe80000000000000505400fffe6d0001 02 40 20 80     eth0\n\
                    00000000000000000000000000000001 01 80 10 80       lo\n\
                    fe80000000000000505400fffe6d0002 03 40 20 40     eth1\n\
                    garbage\n";
        let a = parse_if_inet6(text);
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].address, "fd00:6d:1::100".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!((a[0].prefix_len, a[0].scope, a[0].ifindex), (64, Scope::Global, 2));
        assert_eq!(a[1].scope, Scope::Link);
        assert!(!a[1].tentative && a[3].tentative);
        assert_eq!(a[2].scope, Scope::Host);
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("52:54:00:6d:00:01"), Some([0x52, 0x54, 0, 0x6d, 0, 1]));
        assert_eq!(parse_mac("52:54:00:6d:00"), None);
        assert_eq!(parse_mac("52:54:00:6d:00:01:02"), None);
        assert_eq!(mac_string([0x52, 0x54, 0, 0x6d, 0, 1]), "52:54:00:6d:00:01");
    }
}
