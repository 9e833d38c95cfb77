//! Several workers emulated on one machine: each worker is a namespace with its own underlay
//! address on a shared fabric segment (a bridge in a namespace of its own), and an ISL whose
//! ends are on different workers ([`metal6_emulation::partition`]) is a VXLAN over that fabric
//! instead of a veth pair: at each end a VXLAN device made by that end's worker (its UDP socket
//! stays in the worker's namespace, on the underlay) and created straight into the satellite's
//! namespace with the interface's usual name and index. The satellite sees an interface like
//! any other: same name, same addresses, same MTU, switched the same way (operational state).
//!
//! On real workers the underlay is the node network and each worker runs the link agent; here
//! the fabric bridge stands in for it, which proves the encapsulation, the VNIs and the
//! addressing, but not a physical network's MTU, loss or latency.

use std::net::Ipv6Addr;

use anyhow::{Context, Result};
use metal6_emulation::partition::Crossing;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan};

use crate::Netns;

/// The fabric's prefix: worker `i`'s underlay address is `FABRIC_PREFIX::(i + 1)/64`.
pub const FABRIC_PREFIX: [u16; 4] = [0xfd00, 0x6d, 0xfab, 0];
/// The fabric's MTU: room for a 1,500-byte ISL frame plus VXLAN over IPv6 (70 bytes), as an
/// inventory's 9000 gives a real underlay.
pub const FABRIC_MTU: u32 = 9000;
/// MTU of every ISL, local or crossing, so a satellite cannot tell them apart: the veth
/// default, well under the fabric's MTU less the VXLAN overhead.
pub const ISL_MTU: u32 = 1500;
pub const VXLAN_PORT: u16 = 4789;
// A full ISL frame fits the fabric with VXLAN over IPv6 around it.
const _: () = assert!(ISL_MTU + metal6_emulation::partition::VXLAN6_OVERHEAD <= FABRIC_MTU);
/// Interface index of a worker's fabric port, in the worker's namespace.
const FAB_INDEX: u32 = 2;
const BRIDGE_INDEX: u32 = 2;

pub fn underlay(worker: usize) -> Ipv6Addr {
    let [a, b, c, d] = FABRIC_PREFIX;
    Ipv6Addr::new(a, b, c, d, 0, 0, 0, u16::try_from(worker + 1).unwrap_or(u16::MAX))
}

/// The fabric and the workers' namespaces, wired and addressed.
#[derive(Debug)]
pub struct Fabric {
    pub fabric: Netns,
    pub workers: Vec<Netns>,
}

impl Fabric {
    /// Makes the fabric namespace (a bridge) and one namespace per worker with a port on it,
    /// MTU [`FABRIC_MTU`], and its underlay address. `names[i]` names worker `i`'s namespace.
    /// Call on a blocking thread inside a runtime, like [`Netns::create`]; then [`Fabric::wire`].
    pub fn create(prefix: &str, workers: usize) -> Result<Fabric> {
        let fabric = Netns::create(&format!("{prefix}-fabric"))?;
        let workers = (0..workers).map(|i| Netns::create(&format!("{prefix}-w{i}"))).collect::<Result<Vec<_>>>()?;
        Ok(Fabric { fabric, workers })
    }

    pub async fn wire(&self) -> Result<()> {
        let br = rtnetlink::LinkBridge::new("br0").index(BRIDGE_INDEX).mtu(FABRIC_MTU).build();
        self.fabric.handle.link().add(br).execute().await.context("fabric bridge")?;
        self.fabric.handle.link().set(LinkUnspec::new_with_index(BRIDGE_INDEX).up().build()).execute().await?;
        for (i, w) in self.workers.iter().enumerate() {
            let port = 100 + u32::try_from(i).unwrap_or(0);
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(format!("w{i}"))
                .index(port)
                .mtu(FABRIC_MTU)
                .setns_by_fd(self.fabric.raw_fd())
                .build();
            let msg = LinkVeth::new("fab0", &format!("w{i}"))
                .index(FAB_INDEX)
                .mtu(FABRIC_MTU)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            w.handle.link().add(msg).execute().await.with_context(|| format!("worker {i}'s fabric port"))?;
            self.fabric
                .handle
                .link()
                .set(LinkUnspec::new_with_index(port).controller(BRIDGE_INDEX).up().build())
                .execute()
                .await?;
            w.handle.link().set(LinkUnspec::new_with_index(FAB_INDEX).up().build()).execute().await?;
            w.handle.link().set(LinkUnspec::new_with_index(1).up().build()).execute().await?;
            w.handle
                .address()
                .add(FAB_INDEX, std::net::IpAddr::V6(underlay(i)), 64)
                .execute()
                .await
                .with_context(|| format!("worker {i}'s underlay address"))?;
        }
        Ok(())
    }
}

/// A Kubernetes worker's view of a split constellation (the link agent's `--nodes` and
/// `--node-name`): the partition, which worker this is, and every worker's underlay address
/// (its node address, where the other workers send its crossing links).
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    pub partition: &'a metal6_emulation::partition::Partition,
    pub me: usize,
    pub underlay: &'a [Ipv6Addr],
}

/// One end of a crossing ISL: made by `worker` (its socket on the worker's underlay) straight
/// into `sat`'s namespace as `name` with `index`, to the peer worker's underlay address.
pub fn vxlan_end(
    c: &Crossing,
    worker: usize,
    peer: usize,
    name: &str,
    index: u32,
    sat: &Netns,
) -> rtnetlink::packet_route::link::LinkMessage {
    LinkVxlan::new(name, c.vni)
        .local6(underlay(worker))
        .remote6(underlay(peer))
        .port(VXLAN_PORT)
        .learning(false)
        .index(index)
        .mtu(ISL_MTU)
        .setns_by_fd(sat.raw_fd())
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn underlay_addresses_are_per_worker() {
        assert_eq!(super::underlay(0), "fd00:6d:fab::1".parse::<std::net::Ipv6Addr>().expect("addr"));
        assert_eq!(super::underlay(1), "fd00:6d:fab::2".parse::<std::net::Ipv6Addr>().expect("addr"));
    }
}
