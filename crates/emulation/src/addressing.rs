//! Local IPAM: every address is a function of a per-node block and the satellite's index,
//! so no central allocator (what broke at thousands of pods) and the same answer in the
//! netns backend, the Kubernetes NADs and the routing config. Satellite `i` owns the `i`-th
//! /64 of the block; interface `k` (isl0..gsl0) is `::k+1`, the loopback `::ffff`. Ground
//! stations own /64s counted down from the top of the block.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use crate::topology::IFACES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    block: Ipv6Net,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressingError {
    #[error("block {block} is longer than /64: no /64 per satellite")]
    TooLong { block: Ipv6Net },
    #[error("block {block} has {have} /64s; {need} satellites and ground stations need more")]
    TooSmall { block: Ipv6Net, have: u128, need: u128 },
}

impl Addressing {
    /// Checks that `block` holds a /64 for each of `sats` satellites and `stations` stations.
    pub fn new(block: Ipv6Net, sats: u32, stations: u32) -> Result<Addressing, AddressingError> {
        if block.prefix_len() > 64 {
            return Err(AddressingError::TooLong { block });
        }
        let have = 1u128 << (64 - block.prefix_len());
        let need = u128::from(sats) + u128::from(stations);
        if need > have {
            return Err(AddressingError::TooSmall { block, have, need });
        }
        Ok(Addressing { block: block.trunc() })
    }

    fn subnet_bits(&self, index: u128) -> u128 {
        u128::from(self.block.network()) | (index << 64)
    }

    /// The whole per-node block.
    pub fn block(&self) -> Ipv6Net {
        self.block
    }

    pub fn satellite_subnet(&self, sat: u32) -> Ipv6Net {
        Ipv6Net::new(Ipv6Addr::from(self.subnet_bits(u128::from(sat))), 64).unwrap_or(self.block)
    }

    /// The address of interface `iface` (0..5) of satellite `sat`.
    pub fn interface(&self, sat: u32, iface: u8) -> Ipv6Addr {
        Ipv6Addr::from(self.subnet_bits(u128::from(sat)) | (u128::from(iface) + 1))
    }

    /// Which satellite interface an address is (the inverse of [`Addressing::interface`]),
    /// among `sats` satellites.
    pub fn owner(&self, a: Ipv6Addr, sats: u32) -> Option<(u32, u8)> {
        if !self.block.contains(&a) {
            return None;
        }
        let bits = u128::from(a) ^ u128::from(self.block.network());
        let sat = u32::try_from(bits >> 64).ok().filter(|s| *s < sats)?;
        let host = bits & u128::from(u64::MAX);
        let iface = u8::try_from(host.checked_sub(1)?).ok().filter(|i| usize::from(*i) < IFACES.len())?;
        (self.interface(sat, iface) == a).then_some((sat, iface))
    }

    pub fn loopback(&self, sat: u32) -> Ipv6Addr {
        Ipv6Addr::from(self.subnet_bits(u128::from(sat)) | 0xffff)
    }

    pub fn station(&self, station: u32) -> Ipv6Addr {
        let top = (1u128 << (64 - self.block.prefix_len())) - 1;
        Ipv6Addr::from(self.subnet_bits(top - u128::from(station)) | 1)
    }

    /// The name of a satellite interface's veth end while it waits on a Kubernetes node for
    /// its pod (host-device moves it in): `m6s01234isl0`, within Linux's 15 bytes for any
    /// index below 100,000.
    pub fn host_device_name(sat: u32, iface: u8) -> String {
        format!("m6s{sat:05}{}", Self::iface_name(iface))
    }

    pub fn iface_name(iface: u8) -> &'static str {
        IFACES.get(usize::from(iface)).copied().unwrap_or("?")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn addresses_are_unique_inside_the_block_and_deterministic() {
        let block: Ipv6Net = "fd00:5a7::/48".parse().expect("block");
        let a = Addressing::new(block, 4000, 16).expect("fits");
        let mut seen = BTreeSet::new();
        for s in 0..4000 {
            for k in 0..5 {
                let x = a.interface(s, k);
                assert!(block.contains(&x) && a.satellite_subnet(s).contains(&x));
                assert!(seen.insert(x), "duplicate {x}");
            }
            assert!(seen.insert(a.loopback(s)));
        }
        for g in 0..16 {
            assert!(seen.insert(a.station(g)) && block.contains(&a.station(g)));
        }
        assert_eq!(a.interface(1, 0), "fd00:5a7:0:1::1".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(a.loopback(0), "fd00:5a7::ffff".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(Addressing::iface_name(4), "gsl0");
    }

    #[test]
    fn blocks_too_small_or_too_long_are_refused() {
        let small: Ipv6Net = "fd00::/60".parse().expect("block");
        assert!(matches!(Addressing::new(small, 20, 0), Err(AddressingError::TooSmall { have: 16, .. })));
        let long: Ipv6Net = "fd00::/80".parse().expect("block");
        assert!(matches!(Addressing::new(long, 1, 0), Err(AddressingError::TooLong { .. })));
    }

    #[test]
    fn addresses_name_their_owner() {
        let a = Addressing::new("fd00:5a7::/48".parse().expect("block"), 100, 0).expect("addressing");
        for (sat, k) in [(0u32, 0u8), (7, 3), (99, 4)] {
            assert_eq!(a.owner(a.interface(sat, k), 100), Some((sat, k)));
        }
        assert_eq!(a.owner(a.loopback(7), 100), None, "the loopback is no interface");
        assert_eq!(a.owner(a.interface(150, 0), 100), None, "beyond the constellation");
        assert_eq!(a.owner("fd00:5a8::1".parse().expect("ip"), 100), None, "outside the block");
    }
}
