//! Router Solicitations as the RA service reads them (an ICMPv6 message from a raw socket, no
//! IPv6 header: `metal6_ra::parse_rs`), and Router Advertisements built from what the input
//! says (`metal6_ra::build_ra`, with the solicitation's link-layer address as the source MAC).
//!
//! Must never panic. A solicitation is accepted only when it is type 133 code 0 with well-formed
//! ND options, and the MAC it reports is that of its (last) source link-layer option. An RA is
//! type 134 and its ND options tile the message exactly (each with a non-zero length in 8-byte
//! units) as long as the RDNSS option can say its own length: `build_ra` saturates the RDNSS
//! length at 255 units, so more than 127 DNS servers (the inventory does not bound `dns`)
//! make a malformed option — exercised for panics, not for structure.
//!
//! Not covered: the socket, hop-limit and multicast handling in `netboot::ra` (kernel's job).
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use metal6_inventory::ident::MacAddr;
use metal6_ra::{ICMPV6_ROUTER_ADVERTISEMENT, ICMPV6_ROUTER_SOLICITATION, RaConfig, build_ra, parse_rs};

/// The most DNS servers whose RDNSS option length (1 + 2n units) fits its one-byte field.
const MAX_RDNSS_SERVERS: usize = 127;

/// Walks the ND options of a message whose fixed part is `fixed` bytes: `(type, bytes)` each,
/// or `None` when they do not tile the rest exactly.
fn nd_options(p: &[u8], fixed: usize) -> Option<Vec<(u8, &[u8])>> {
    let mut rest = p.get(fixed..)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(*rest.get(1)?) * 8;
        if len == 0 || len > rest.len() {
            return None;
        }
        out.push((rest[0], &rest[..len]));
        rest = &rest[len..];
    }
    Some(out)
}

fn check_rs(data: &[u8]) {
    let Ok(mac) = parse_rs(data) else { return };
    assert_eq!(data.first(), Some(&ICMPV6_ROUTER_SOLICITATION));
    assert_eq!(data.get(1), Some(&0));
    let opts = nd_options(data, 8).expect("an accepted RS has well-formed options");
    let slla = opts.iter().filter(|(t, o)| *t == 1 && o.len() == 8).map(|(_, o)| &o[2..8]).last();
    assert_eq!(mac.map(|m| m.0.to_vec()), slla.map(<[u8]>::to_vec), "the MAC is the last SLLA option's");
}

/// The input's bytes, cycled, so short inputs still vary every field.
struct Cycle<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cycle<'_> {
    fn byte(&mut self) -> u8 {
        let Some(b) = self.data.get(self.at % self.data.len().max(1)) else { return 0 };
        self.at += 1;
        *b
    }

    fn addr(&mut self) -> Ipv6Addr {
        Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|_| self.byte()))
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

/// An RA configuration taken from the input.
fn config(data: &[u8], source_mac: Option<MacAddr>) -> RaConfig {
    let mut c = Cycle { data, at: 0 };
    let prefix = c.addr();
    let flags = c.byte();
    // Up to 511 servers: past the 127 an RDNSS option can describe.
    let dns_count = usize::from(c.u16() & 0x1ff);
    let dns = (0..dns_count).map(|_| c.addr()).collect();
    RaConfig {
        managed: flags & 1 != 0,
        other_config: flags & 2 != 0,
        router_lifetime: c.u16(),
        prefix,
        prefix_len: c.byte(),
        autonomous: flags & 4 != 0,
        mtu: c.u32(),
        dns,
        dns_lifetime: c.u32(),
        source_mac,
    }
}

fn check_ra(c: &RaConfig) {
    let ra = build_ra(c);
    assert_eq!(ra.first(), Some(&ICMPV6_ROUTER_ADVERTISEMENT));
    if c.dns.len() > MAX_RDNSS_SERVERS {
        return;
    }
    let opts = nd_options(&ra, 16).expect("our RA's options tile it");
    let types: Vec<u8> = opts.iter().map(|(t, _)| *t).collect();
    let mut want = vec![3, 5];
    if !c.dns.is_empty() {
        want.push(25);
    }
    if c.source_mac.is_some() {
        want.push(1);
    }
    assert_eq!(types, want, "prefix, MTU, RDNSS when there are servers, source link-layer address");
}

fuzz_target!(|data: &[u8]| {
    check_rs(data);
    // An RA as the server builds it for any configuration, with and without a source MAC.
    let mac = parse_rs(data).ok().flatten();
    check_ra(&config(data, mac));
    check_ra(&config(data, Some(MacAddr([0x52, 0x54, 0, 0x6d, 0, 1]))));
    check_ra(&config(data, None));
});
