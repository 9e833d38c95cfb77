//! Router Advertisements (RFC 4861 §4.2) for the provisioning link, and Router Solicitation
//! parsing. Pure: bytes in, bytes out. The server sends them from its link-local address with
//! hop limit 255 — OVMF's Ip6Dxe ignores an RA that is not (shared OVMF notes §7) — and the
//! kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket.

use std::net::Ipv6Addr;

use metal6_inventory::ident::MacAddr;
use metal6_inventory::model::Inventory;

pub const ICMPV6_ROUTER_SOLICITATION: u8 = 133;
pub const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;

/// What goes into our RAs, resolved from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaConfig {
    pub managed: bool,
    pub other_config: bool,
    pub router_lifetime: u16,
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    pub autonomous: bool,
    pub mtu: u32,
    pub dns: Vec<Ipv6Addr>,
    /// RDNSS lifetime: RFC 8106 §5.1 recommends at least 3 × MaxRtrAdvInterval.
    pub dns_lifetime: u32,
    pub source_mac: Option<MacAddr>,
}

impl RaConfig {
    pub fn from_inventory(inv: &Inventory, source_mac: Option<MacAddr>) -> Self {
        let ra = &inv.site.router_advertisements;
        let local = &inv.site.segments[0];
        RaConfig {
            managed: ra.managed,
            other_config: ra.other_config,
            router_lifetime: u16::try_from(ra.router_lifetime).unwrap_or(9000),
            prefix: local.prefix.network(),
            prefix_len: local.prefix.prefix_len(),
            autonomous: ra.autonomous,
            mtu: inv.site.mtu,
            dns: inv.site.dns.clone(),
            dns_lifetime: ra.max_interval.saturating_mul(3),
            source_mac,
        }
    }
}

/// The most DNS servers one RDNSS option can carry (RFC 8106: length in 8-octet units, u8).
pub const MAX_RDNSS: usize = 127;

/// The ICMPv6 body of a Router Advertisement (checksum left zero for the kernel).
pub fn build_ra(c: &RaConfig) -> Vec<u8> {
    let mut p = Vec::with_capacity(96);
    let flags = (u8::from(c.managed) << 7) | (u8::from(c.other_config) << 6);
    // type, code, checksum, cur hop limit 64, flags, router lifetime, reachable, retrans.
    p.extend_from_slice(&[ICMPV6_ROUTER_ADVERTISEMENT, 0, 0, 0, 64, flags]);
    p.extend_from_slice(&c.router_lifetime.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    // Prefix Information (type 3, 4 × 8 bytes): L always (the prefix is on-link), A as configured.
    let pio_flags = 0x80 | (u8::from(c.autonomous) << 6);
    p.extend_from_slice(&[3, 4, c.prefix_len, pio_flags]);
    p.extend_from_slice(&u32::MAX.to_be_bytes()); // valid lifetime: infinite
    p.extend_from_slice(&u32::MAX.to_be_bytes()); // preferred lifetime: infinite
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&c.prefix.octets());
    // MTU (type 5, 1 × 8 bytes).
    p.extend_from_slice(&[5, 1, 0, 0]);
    p.extend_from_slice(&c.mtu.to_be_bytes());
    // RDNSS (RFC 8106, type 25): 8 bytes + 16 per server.
    if !c.dns.is_empty() {
        // The length is in units of 8 octets in one byte: 127 servers at most, or the option
        // is malformed (found by fuzzing; the inventory allows far fewer).
        let dns = &c.dns[..c.dns.len().min(MAX_RDNSS)];
        let units = u8::try_from(1 + 2 * dns.len()).unwrap_or(u8::MAX);
        p.extend_from_slice(&[25, units, 0, 0]);
        p.extend_from_slice(&c.dns_lifetime.to_be_bytes());
        for d in dns {
            p.extend_from_slice(&d.octets());
        }
    }
    // Source link-layer address (type 1, 1 × 8 bytes).
    if let Some(mac) = c.source_mac {
        p.extend_from_slice(&[1, 1]);
        p.extend_from_slice(&mac.0);
    }
    p
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RsError {
    #[error("not the Router Solicitation or Advertisement expected")]
    NotRs,
    #[error("Router Solicitation too short ({0} bytes)")]
    Short(usize),
    #[error("malformed ND option")]
    BadOption,
}

/// Checks an ICMPv6 packet (as read from a raw socket: no IPv6 header) is a well-formed Router
/// Solicitation (RFC 4861 §6.1.1) and returns its source link-layer address, if any.
pub fn parse_rs(p: &[u8]) -> Result<Option<MacAddr>, RsError> {
    if p.first() != Some(&ICMPV6_ROUTER_SOLICITATION) || p.get(1) != Some(&0) {
        return Err(RsError::NotRs);
    }
    if p.len() < 8 {
        return Err(RsError::Short(p.len()));
    }
    let mut opts = &p[8..];
    let mut mac = None;
    while !opts.is_empty() {
        let len = usize::from(*opts.get(1).ok_or(RsError::BadOption)?) * 8;
        if len == 0 || len > opts.len() {
            return Err(RsError::BadOption);
        }
        if opts[0] == 1 && len == 8 {
            mac = Some(MacAddr([opts[2], opts[3], opts[4], opts[5], opts[6], opts[7]]));
        }
        opts = &opts[len..];
    }
    Ok(mac)
}

/// A Router Advertisement as a host sees it (what `metal6 doctor` compares with the inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub managed: bool,
    pub other_config: bool,
    /// 0: not a default router.
    pub router_lifetime: u16,
    /// Prefix Information options: prefix, length, on-link (L), autonomous (A).
    pub prefixes: Vec<(Ipv6Addr, u8, bool, bool)>,
    pub mtu: Option<u32>,
    pub source_mac: Option<MacAddr>,
    /// An option had a bad length; the options before it are kept (a host acts on the rest).
    pub malformed: bool,
}

/// Parses an ICMPv6 Router Advertisement (RFC 4861 §4.2; no IPv6 header). Every option's
/// length is checked; unknown options are skipped; at the first malformed option parsing stops
/// with `malformed` set (what came before is still reported: a rogue RA is a finding, not
/// noise).
pub fn parse_ra(p: &[u8]) -> Result<Advertisement, RsError> {
    if p.first() != Some(&ICMPV6_ROUTER_ADVERTISEMENT) || p.get(1) != Some(&0) {
        return Err(RsError::NotRs);
    }
    if p.len() < 16 {
        return Err(RsError::Short(p.len()));
    }
    let mut ra = Advertisement {
        managed: p[5] & 0x80 != 0,
        other_config: p[5] & 0x40 != 0,
        router_lifetime: u16::from_be_bytes([p[6], p[7]]),
        prefixes: vec![],
        mtu: None,
        source_mac: None,
        malformed: false,
    };
    let mut opts = &p[16..];
    while !opts.is_empty() {
        let len = usize::from(opts.get(1).copied().unwrap_or(0)) * 8;
        if len == 0 || len > opts.len() {
            ra.malformed = true;
            break;
        }
        let o = &opts[..len];
        match (o[0], len) {
            (1, 8) => ra.source_mac = Some(MacAddr([o[2], o[3], o[4], o[5], o[6], o[7]])),
            (3, 32) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&o[16..32]);
                ra.prefixes.push((Ipv6Addr::from(a), o[2], o[3] & 0x80 != 0, o[3] & 0x40 != 0));
            }
            (5, 8) => ra.mtu = Some(u32::from_be_bytes([o[4], o[5], o[6], o[7]])),
            (1 | 3 | 5, _) => {
                ra.malformed = true;
                break;
            }
            _ => {}
        }
        opts = &opts[len..];
    }
    Ok(ra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RaConfig {
        RaConfig {
            managed: false,
            other_config: false,
            router_lifetime: 1800,
            prefix: "fd00:1::".parse().expect("addr"),
            prefix_len: 64,
            autonomous: true,
            mtu: 1500,
            dns: vec![],
            dns_lifetime: 180,
            source_mac: Some(MacAddr([0xde, 0x1f, 0xd5, 0x6e, 0x4c, 0x23])),
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn matches_the_ra_ovmf_accepted() {
        // shared/notes/ovmf-ipv6-http-boot.md §7, dnsmasq ra-only mode, checksum zeroed.
        let want = hex("86 00 00 00 40 00 07 08 00 00 00 00 00 00 00 00
             03 04 40 c0 ff ff ff ff ff ff ff ff 00 00 00 00 fd 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00
             05 01 00 00 00 00 05 dc
             01 01 de 1f d5 6e 4c 23");
        assert_eq!(build_ra(&cfg()), want);
    }

    #[test]
    fn flags_and_rdnss() {
        let mut c = cfg();
        c.managed = true;
        c.other_config = true;
        c.autonomous = false;
        c.dns = vec!["fd00:1::1".parse().expect("addr")];
        let ra = build_ra(&c);
        assert_eq!(ra[5], 0xc0, "M and O");
        assert_eq!(ra[16 + 3], 0x80, "L without A");
        let rdnss = ra.windows(2).position(|w| w == [25, 3]).expect("RDNSS with one server");
        assert_eq!(&ra[rdnss + 4..rdnss + 8], &180u32.to_be_bytes());
        // More servers than one option can carry: the option still describes its own length.
        c.dns = (0..200u16).map(|i| Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, i)).collect();
        let ra = build_ra(&c);
        let at = ra.windows(2).position(|w| w[0] == 25 && w[1] == 255).expect("RDNSS at its largest");
        assert_eq!(ra.len() - at, 255 * 8 + 8, "RDNSS (127 servers), then the source link-layer option");
    }

    #[test]
    fn advertisements_read_back() {
        let mut c = cfg();
        c.managed = true;
        c.dns = vec!["fd00:1::1".parse().expect("addr")];
        let ra = parse_ra(&build_ra(&c)).expect("our own RA");
        assert!(ra.managed && !ra.other_config);
        assert_eq!(ra.router_lifetime, 1800);
        assert_eq!(ra.prefixes, vec![("fd00:1::".parse().expect("addr"), 64, true, true)]);
        assert_eq!(ra.mtu, Some(1500));
        assert_eq!(ra.source_mac, c.source_mac);
        // A prefix option of the wrong size, and one running past the end.
        assert!(!ra.malformed);
        let mut bad = build_ra(&c);
        bad[17] = 3;
        let ra = parse_ra(&bad).expect("kept");
        assert!(ra.malformed && ra.managed && ra.prefixes.is_empty(), "the flags stay");
        let ra = parse_ra(&hex("86 00 00 00 40 80 07 08 00 00 00 00 00 00 00 00 03 09")).expect("kept");
        assert!(ra.malformed && ra.managed && ra.router_lifetime == 0x0708);
        assert_eq!(parse_ra(&hex("85 00 00 00")), Err(RsError::NotRs));
    }

    #[test]
    fn router_solicitations() {
        assert_eq!(
            parse_rs(&hex("85 00 00 00 00 00 00 00 01 01 52 54 00 12 34 56")),
            Ok(Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])))
        );
        assert_eq!(parse_rs(&hex("85 00 00 00 00 00 00 00")), Ok(None));
        assert_eq!(parse_rs(&hex("85 00 00 00 00 00 00 00 01 00")), Err(RsError::BadOption));
        assert_eq!(parse_rs(&hex("86 00 00 00")), Err(RsError::NotRs));
        assert_eq!(parse_rs(&hex("85 00 00")), Err(RsError::Short(3)));
    }
}
