//! Routing inside the emulation: FRR IS-IS configuration per satellite, shared by the netns
//! backend (which runs Debian's FRR in each namespace) and the Kubernetes backend (which puts
//! it in each satellite pod's ConfigMap). ISLs are point-to-point circuits over link-local
//! addresses; the loopback /128 is advertised passively. Level-1-2 in one area: FRR 8.4's
//! `level-2-only` was seen not to regenerate its LSPs (metal6-emunet's docs).

use crate::topology::Topology;

/// IS-IS system id of satellite `sat`: `0000.XXXX.XXXX` from its index + 1.
pub fn system_id(sat: u32) -> String {
    let n = sat + 1;
    format!("0000.{:04x}.{:04x}", n >> 16, n & 0xffff)
}

pub fn isisd_conf(topo: &Topology, sat: u32) -> String {
    let (p, s) = topo.plane_slot(sat);
    let mut c = format!(
        "hostname sat-{p}-{s}\nlog stdout informational\n!\ninterface lo\n ipv6 router isis emu\n isis passive\n!\n"
    );
    for i in ["isl0", "isl1", "isl2", "isl3"] {
        c.push_str(&format!(
            "interface {i}\n ipv6 router isis emu\n isis network point-to-point\n isis hello-interval 1\n isis hello-multiplier 3\n!\n"
        ));
    }
    c.push_str(&format!(
        "router isis emu\n net 49.0001.{}.00\n metric-style wide\n lsp-gen-interval 1\n spf-interval 1\n!\n",
        system_id(sat)
    ));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shell, ShellKind};

    #[test]
    fn system_ids_and_config() {
        assert_eq!(system_id(0), "0000.0000.0001");
        assert_eq!(system_id(65535), "0000.0001.0000");
        let shell = Shell {
            kind: ShellKind::Delta,
            planes: 6,
            per_plane: 6,
            phasing: 1,
            altitude_km: 2000.0,
            inclination_deg: 53.0,
        };
        let c = isisd_conf(&Topology::new(shell, vec![]), 7);
        assert!(c.contains("hostname sat-1-1") && c.contains("net 49.0001.0000.0000.0008.00"));
        assert_eq!(c.matches("isis network point-to-point").count(), 4);
    }
}
