//! "Which node is this?" — answered here, once, for every protocol.
//!
//! A request carries clues: a DUID (DHCPv6), the client link-layer address a relay added
//! (RFC 6939 option 79), the packet's link-local source address, a source address. They are
//! tried in a fixed order, each documented, and the first that names an inventory node wins:
//!
//! 1. **DUID-LLT / DUID-LL MAC** — the MAC inside the DUID. OVMF, iPXE and dhclient use these.
//! 2. **Relay option 79** — the MAC the first relay saw on the client's link; trustworthy
//!    because the relay, not the client, adds it.
//! 3. **EUI-64 link-local source** — the MAC encoded in `fe80::…ff:fe…` (EDK2 and Linux
//!    without stable-privacy addresses). RFC 7217 / RFC 8981 addresses carry no MAC and are
//!    simply not matched.
//! 4. **Known DUID** — a DUID listed under the node's `duids:` (DUID-EN, DUID-UUID, or any DUID
//!    whose MAC is not one of the node's NICs, e.g. an OS using another NIC's MAC).
//! 5. **Assigned address** — for HTTP and TFTP: the request's source is a node's inventory
//!    address (the address DHCPv6 gave it).
//!
//! A MAC matches any NIC of a node, so a DUID built from a non-boot NIC still finds the host.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use serde::Serialize;

use crate::ident::{Duid, MacAddr};
use crate::model::Inventory;

/// How a node was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    DuidMac,
    RelayLinkLayer,
    Eui64Source,
    KnownDuid,
    AssignedAddress,
}

/// What a request offers to identify its sender.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clues<'a> {
    pub duid: Option<&'a Duid>,
    /// RFC 6939 client link-layer address (Ethernet only).
    pub relay_mac: Option<MacAddr>,
    /// The packet's source address when it is link-local (direct clients only).
    pub link_local_source: Option<Ipv6Addr>,
    /// The packet's source address (HTTP, TFTP).
    pub source: Option<Ipv6Addr>,
}

/// Index from identifiers to node positions, built once per inventory.
#[derive(Debug, Clone, Default)]
pub struct Identifier {
    by_mac: HashMap<MacAddr, usize>,
    by_duid: HashMap<Duid, usize>,
    by_addr: HashMap<Ipv6Addr, usize>,
}

impl Identifier {
    pub fn new(inv: &Inventory) -> Self {
        let mut id = Identifier::default();
        for (i, n) in inv.nodes.iter().enumerate() {
            for nic in &n.nics {
                id.by_mac.insert(nic.mac, i);
            }
            for d in &n.duids {
                id.by_duid.insert(d.clone(), i);
            }
            id.by_addr.insert(n.address, i);
        }
        id
    }

    /// The node (index into `Inventory::nodes`) the clues point to, and how.
    pub fn identify(&self, clues: &Clues<'_>) -> Option<(usize, Via)> {
        let by_mac = |m: MacAddr| self.by_mac.get(&m).copied();
        clues
            .duid
            .and_then(Duid::mac)
            .and_then(by_mac)
            .map(|i| (i, Via::DuidMac))
            .or_else(|| clues.relay_mac.and_then(by_mac).map(|i| (i, Via::RelayLinkLayer)))
            .or_else(|| clues.link_local_source.and_then(eui64_mac).and_then(by_mac).map(|i| (i, Via::Eui64Source)))
            .or_else(|| clues.duid.and_then(|d| self.by_duid.get(d)).map(|&i| (i, Via::KnownDuid)))
            .or_else(|| clues.source.and_then(|a| self.by_addr.get(&a)).map(|&i| (i, Via::AssignedAddress)))
    }

    /// The node owning a MAC address, if any.
    pub fn node_by_mac(&self, mac: MacAddr) -> Option<usize> {
        self.by_mac.get(&mac).copied()
    }
}

/// The MAC inside a modified EUI-64 link-local address (`fe80::XXXX:XXff:feXX:XXXX`).
pub fn eui64_mac(a: Ipv6Addr) -> Option<MacAddr> {
    let o = a.octets();
    if !a.is_unicast_link_local() || o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    let mac = MacAddr([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]);
    // A "MAC" with the group bit set cannot be a NIC's: the address was not EUI-64 derived.
    (mac.0[0] & 1 == 0).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Inventory {
        let src =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inventory/lab.yaml")).expect("lab");
        crate::check_str(&src, "lab.yaml").0.expect("valid lab")
    }

    #[test]
    fn every_clue_in_order() {
        let inv = lab();
        let id = Identifier::new(&inv);
        let llt: Duid = "00:01:00:01:31:dc:d9:d8:52:54:00:6d:00:01".parse().expect("duid");
        let ll: Duid = "00:03:00:01:52:54:00:6d:00:02".parse().expect("duid");
        let en: Duid = "00:02:00:00:ab:11:01:02:03:04".parse().expect("duid");
        assert_eq!(id.identify(&Clues { duid: Some(&llt), ..Clues::default() }), Some((0, Via::DuidMac)));
        assert_eq!(id.identify(&Clues { duid: Some(&ll), ..Clues::default() }), Some((1, Via::DuidMac)));
        let mac1: MacAddr = "52:54:00:6d:00:01".parse().expect("mac");
        assert_eq!(
            id.identify(&Clues { duid: Some(&en), relay_mac: Some(mac1), ..Clues::default() }),
            Some((0, Via::RelayLinkLayer))
        );
        let eui: Ipv6Addr = "fe80::5054:ff:fe6d:2".parse().expect("addr");
        assert_eq!(
            id.identify(&Clues { duid: Some(&en), link_local_source: Some(eui), ..Clues::default() }),
            Some((1, Via::Eui64Source))
        );
        assert_eq!(id.identify(&Clues { duid: Some(&en), ..Clues::default() }), None);
        let src: Ipv6Addr = "fd00:6d:1::101".parse().expect("addr");
        assert_eq!(id.identify(&Clues { source: Some(src), ..Clues::default() }), Some((1, Via::AssignedAddress)));
    }

    #[test]
    fn eui64_extraction() {
        assert_eq!(
            eui64_mac("fe80::5054:ff:fe12:3456".parse().expect("a")).map(|m| m.to_string()),
            Some("52:54:00:12:34:56".into())
        );
        // Stable-privacy (RFC 7217) address: no ff:fe in the middle.
        assert_eq!(eui64_mac("fe80::1c3a:9b2f:77e1:4d0a".parse().expect("a")), None);
        assert_eq!(eui64_mac("fd00::5054:ff:fe12:3456".parse().expect("a")), None);
    }
}
