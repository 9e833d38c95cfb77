//! What the kernel says about this network namespace, from `/proc` and `/sys` (plain text, no
//! netlink): interface addresses with their DAD flags, bound sockets and the processes that
//! hold them. Parsers are pure and tested on captured text.

use std::net::Ipv6Addr;

/// `IFA_F_*` flags as `/proc/net/if_inet6` prints them (linux/if_addr.h).
pub const IFA_F_DADFAILED: u32 = 0x08;
pub const IFA_F_TENTATIVE: u32 = 0x40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    pub flags: u32,
    pub ifname: String,
}

/// `/proc/net/if_inet6`: `fd00006d000100000000000000000001 02 40 00 80 m6s0` (address,
/// ifindex, prefix length, scope, flags, name; all hex).
pub fn parse_if_inet6(text: &str) -> Vec<IfAddr> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[0].len() != 32 {
                return None;
            }
            let raw = u128::from_str_radix(f[0], 16).ok()?;
            Some(IfAddr {
                addr: Ipv6Addr::from(raw),
                prefix_len: u8::from_str_radix(f[2], 16).ok()?,
                flags: u32::from_str_radix(f[4], 16).ok()?,
                ifname: f[5].to_owned(),
            })
        })
        .collect()
}

pub fn addresses() -> Vec<IfAddr> {
    parse_if_inet6(&std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        })
    }
}

/// `(local address, inode)` of the sockets bound to local `port` in a `/proc/net/{udp6,tcp6}`
/// table (TCP: listening sockets only, state 0A). The address is printed as four 32-bit words
/// in host byte order.
pub fn parse_sockets(text: &str, proto: Proto, port: u16) -> Vec<(Ipv6Addr, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (addr, p) = f.get(1)?.rsplit_once(':')?;
            if u16::from_str_radix(p, 16).ok()? != port || (proto == Proto::Tcp && f.get(3) != Some(&"0A")) {
                return None;
            }
            if addr.len() != 32 {
                return None;
            }
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some((Ipv6Addr::from(bytes), f.get(9)?.parse().ok()?))
        })
        .collect()
}

/// Who holds IPv6 `port` on the wildcard address or one of `local` (what `metal6 serve`
/// binds would collide with): `(pid, command name)` per process; pid 0 for sockets whose
/// process this user cannot see (another user's, without root).
pub fn holders(proto: Proto, port: u16, local: &[Ipv6Addr]) -> Vec<(u32, String)> {
    let table = match proto {
        Proto::Udp => "/proc/net/udp6",
        Proto::Tcp => "/proc/net/tcp6",
    };
    let mut inodes: Vec<u64> = parse_sockets(&std::fs::read_to_string(table).unwrap_or_default(), proto, port)
        .into_iter()
        .filter(|(a, _)| a.is_unspecified() || local.contains(a))
        .map(|(_, i)| i)
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    if inodes.is_empty() {
        return vec![];
    }
    let mut found: Vec<(u32, String)> = vec![];
    let mut seen = vec![false; inodes.len()];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) else { continue };
            let Ok(inode) = inode.parse::<u64>() else { continue };
            if let Some(i) = inodes.iter().position(|x| *x == inode) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                if !found.iter().any(|(p, _)| *p == pid) {
                    found.push((pid, comm.trim().to_owned()));
                }
                seen[i] = true;
            }
        }
    }
    if seen.iter().any(|s| !s) {
        found.push((0, "a process doctor cannot see".into()));
    }
    found
}

/// A sysctl of an interface, `None` when absent.
pub fn conf(ifname: &str, key: &str) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/{key}")).ok()?.trim().parse().ok()
}

pub fn sys(ifname: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{key}")).ok().map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_inet6_lines() {
        let text = "fd00006d000100000000000000000001 02 40 00 c0 m6s0\n\
                    fe80000000000000505400fffe6d0001 02 40 20 80 m6s0\n\
                    00000000000000000000000000000001 01 80 10 80 lo\n\
                    garbage\n";
        let a = parse_if_inet6(text);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].addr, "fd00:6d:1::1".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(a[0].prefix_len, 64);
        assert_eq!(a[0].flags & IFA_F_TENTATIVE, IFA_F_TENTATIVE);
        assert_eq!(a[1].flags & IFA_F_TENTATIVE, 0);
        assert_eq!(a[2].ifname, "lo");
    }

    #[test]
    fn socket_tables() {
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          10: 00000000000000000000000000000000:0223 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123456 2 0000000000000000 0\n\
          11: 00000000000000000000000000000000:0045 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0\n";
        assert_eq!(parse_sockets(udp6, Proto::Udp, 547), vec![(Ipv6Addr::UNSPECIFIED, 123456)]);
        assert_eq!(parse_sockets(udp6, Proto::Udp, 69), vec![(Ipv6Addr::UNSPECIFIED, 777)]);
        // fd00:6d:1::1 as a little-endian kernel prints it, listening, and a connected socket.
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 6D0000FD000001000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 42 1\n\
           1: 6D0000FD000001000000000001000000:1F90 6D0000FD000001000000000002000000:9C40 01 00000000:00000000 00:00000000 00000000     0        0 43 1\n";
        let want: Ipv6Addr = "fd00:6d:1::1".parse().expect("addr");
        assert_eq!(parse_sockets(tcp6, Proto::Tcp, 8080), vec![(want, 42)], "listening only");
    }
}
