//! The cluster stage's documents, rendered from the validated inventory: kubeadm
//! configuration for an IPv6 single-stack cluster, the kubelet sized for dense pods, containerd,
//! each node's primary pod network (local IPAM), Multus (thick) and the constellation's
//! NetworkAttachmentDefinitions. Pure: inventory and options in, files out; templates live in
//! `templates/cluster/` (askama), CNI JSON is built with serde_json.
//!
//! Addresses are planned here, not by Kubernetes: node `index` owns the `index`-th
//! `/node_mask` of the pod subnet (the controller-manager's own CIDR allocation is off), and a
//! satellite's interfaces are functions of its index in the emulation block
//! (`metal6_emulation::Addressing`). No central IPAM — that is what broke at thousands of pods.
//!
//! Secrets: the join token is an input (resolved by the caller from the inventory's
//! reference); the files that hold it are marked [`File::secret`].

use std::net::Ipv6Addr;

use askama::Template;
use ipnet::Ipv6Net;
use metal6_emulation::addressing::Addressing;
use metal6_emulation::topology::{IFACES, Topology};
use metal6_inventory::model::{Cluster, Inventory, Node, Role};
use serde_json::{Value, json};

/// The Multus image the manifests pin.
pub const MULTUS_IMAGE: &str = "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.1.4-thick";
/// FRR for the satellite pods (upstream's image; the netns backend uses Debian's FRR 8.4).
pub const FRR_IMAGE: &str = "quay.io/frrouting/frr:9.1.3";
/// The image with the `metal6` binary the link agent runs; metal6 publishes none, so sites
/// build it (any OCI builder: the binary and a Debian base) and name it here.
pub const AGENT_IMAGE: &str = "localhost/metal6:0.1.0";
pub use metal6_emulation::topology::SATS_PER_GROUND_SEGMENT;

/// The constellation whose links get NADs.
#[derive(Debug, Clone, Copy)]
pub struct Emulation<'a> {
    pub topology: &'a Topology,
    pub addressing: &'a Addressing,
    /// The worker the satellites run on (without `workers`).
    pub node: &'a str,
    /// Split over several workers instead: whole planes per worker, crossing ISLs VXLAN.
    pub workers: Option<Workers<'a>>,
    pub namespace: &'a str,
    pub mtu: u32,
    pub frr_image: &'a str,
    pub agent_image: &'a str,
}

/// A constellation over several workers: the split, each worker's node address (the remote
/// of the VXLAN ends the other workers make for it) and the underlay's MTU (the ISLs get it
/// less the VXLAN overhead, local ones too, so that a satellite sees one kind of link).
#[derive(Debug, Clone, Copy)]
pub struct Workers<'a> {
    pub partition: &'a metal6_emulation::partition::Partition,
    pub underlay: &'a [Ipv6Addr],
    pub underlay_mtu: u32,
}

impl Emulation<'_> {
    /// The worker satellite `sat` is pinned to.
    pub fn node_of(&self, sat: u32) -> &str {
        match &self.workers {
            Some(w) => &w.partition.workers[w.partition.worker_of(sat)],
            None => self.node,
        }
    }

    /// The MTU of every ISL.
    pub fn isl_mtu(&self) -> u32 {
        match &self.workers {
            Some(w) => self.mtu.min(w.underlay_mtu.saturating_sub(metal6_emulation::partition::VXLAN6_OVERHEAD)),
            None => self.mtu,
        }
    }

    fn where_(&self) -> String {
        match &self.workers {
            Some(w) => format!("{} (split by planes)", w.partition.workers.join(", ")),
            None => self.node.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The bootstrap token itself, `abcdef.0123456789abcdef`.
    pub join_token: &'a str,
    /// kubeadm's certificate key (64 hex digits): encrypts the control-plane certificates and
    /// CA keys `kubeadm init --upload-certs` puts in the `kubeadm-certs` Secret. Independent
    /// of the join token on purpose: every worker holds the token, and bootstrap-token
    /// holders may read that Secret for two hours, so a key derived from the token let any
    /// worker decrypt the cluster's CA keys. Only the control planes' files carry it.
    pub certificate_key: &'a str,
    /// `sha256:…` of the cluster CA's public key; join files need it, so they are rendered only
    /// when it is known (after `kubeadm init`).
    pub ca_cert_hash: Option<&'a str>,
    pub emulation: Option<Emulation<'a>>,
}

/// A rendered file, its path relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub text: String,
    /// Holds the join token: write it 0600, hand it only to its node.
    pub secret: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the inventory has no `cluster` section")]
    NoCluster,
    #[error("the join token does not have the form abcdef.0123456789abcdef (6 and 16 of [a-z0-9])")]
    BadToken,
    #[error("`{0}` is not a CA public key hash (sha256: and 64 hex digits)")]
    BadCaHash(String),
    /// Carries no text: the input is a secret.
    #[error("the certificate key is not 64 hex digits (32 bytes)")]
    BadCertificateKey,
    #[error("node {node} has index {index}, beyond the {count} /{mask} pod subnets of {subnet}")]
    PodSubnetFull { node: String, index: u64, count: u128, mask: u8, subnet: Ipv6Net },
    #[error("no node `{0}` for the emulation")]
    NoSuchNode(String),
    #[error("ISL MTU {mtu} (the underlay's {underlay} less 70 for VXLAN): IPv6 needs at least 1280")]
    IslMtu { mtu: u32, underlay: u32 },
    #[error("rendering {template}")]
    Template {
        template: &'static str,
        #[source]
        source: askama::Error,
    },
}

fn tmpl<T: Template>(t: &T, template: &'static str) -> Result<String, RenderError> {
    t.render().map_err(|source| RenderError::Template { template, source })
}

/// kubeadm's rule: the cluster DNS service is the 10th address of the service subnet.
pub fn cluster_dns(services: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(services.network()) + 10)
}

/// The node's share of the pod subnet: the `index`-th `/node_mask`.
pub fn node_pod_subnet(c: &Cluster, node: &Node) -> Result<Ipv6Net, RenderError> {
    let bits = c.node_mask - c.pod_subnet.prefix_len();
    let count = 1u128.checked_shl(u32::from(bits)).unwrap_or(u128::MAX);
    if u128::from(node.index) >= count {
        return Err(RenderError::PodSubnetFull {
            node: node.name.clone(),
            index: node.index,
            count,
            mask: c.node_mask,
            subnet: c.pod_subnet,
        });
    }
    let base = u128::from(c.pod_subnet.network());
    let net = base | (u128::from(node.index) << (128 - u32::from(c.node_mask)));
    Ok(Ipv6Net::new(Ipv6Addr::from(net), c.node_mask).unwrap_or(c.pod_subnet))
}

#[derive(Template)]
#[template(path = "cluster/kubeadm-init.yaml", escape = "none")]
struct Init<'a> {
    source: &'a str,
    cluster: &'a str,
    version: String,
    node: &'a str,
    address: Ipv6Addr,
    endpoint: Ipv6Addr,
    token: &'a str,
    certificate_key: String,
    pod_subnet: Ipv6Net,
    service_subnet: Ipv6Net,
    dns_domain: &'a str,
    max_pods: u32,
    cluster_dns: Ipv6Addr,
}

#[derive(Template)]
#[template(path = "cluster/kubeadm-join.yaml", escape = "none")]
struct Join<'a> {
    source: &'a str,
    cluster: &'a str,
    version: String,
    node: &'a str,
    address: Ipv6Addr,
    endpoint: Ipv6Addr,
    token: &'a str,
    ca_cert_hash: &'a str,
    control_plane: bool,
    certificate_key: String,
}

#[derive(Template)]
#[template(path = "cluster/containerd.toml", escape = "none")]
struct Containerd<'a> {
    cluster: &'a str,
}

#[derive(Template)]
#[template(path = "cluster/multus-thick.yaml", escape = "none")]
struct Multus<'a> {
    cluster: &'a str,
    image: &'a str,
}

struct Nad {
    name: String,
    owner: String,
    /// The worker whose pod uses it (split constellations only).
    worker: String,
    config: String,
}

#[derive(Template)]
#[template(path = "cluster/nads.yaml", escape = "none")]
struct Nads<'a> {
    shell: String,
    node: String,
    count: u32,
    block: String,
    namespace: &'a str,
    nads: Vec<Nad>,
}

fn valid_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    t.split_once('.').is_some_and(|(a, b)| ok(a, 6) && ok(b, 16))
}

fn valid_ca_hash(h: &str) -> bool {
    h.strip_prefix("sha256:").is_some_and(|x| x.len() == 64 && x.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every file of the cluster stage, in a stable order, plus notes for the operator.
pub fn render(inv: &Inventory, opts: &Options<'_>) -> Result<(Vec<File>, Vec<String>), RenderError> {
    let c = inv.cluster.as_ref().ok_or(RenderError::NoCluster)?;
    if !valid_token(opts.join_token) {
        return Err(RenderError::BadToken);
    }
    if let Some(h) = opts.ca_cert_hash
        && !valid_ca_hash(h)
    {
        return Err(RenderError::BadCaHash(h.to_owned()));
    }
    if !(opts.certificate_key.len() == 64 && opts.certificate_key.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(RenderError::BadCertificateKey);
    }
    let mut files = Vec::new();
    let mut notes = Vec::new();
    let version = c.kubernetes_version.to_string();
    let cert_key = opts.certificate_key.to_ascii_lowercase();
    // Validation guarantees at least one control-plane node when there are nodes.
    let first_cp = c.control_plane.first().map(|&i| &inv.nodes[i]);
    if let Some(cp) = first_cp {
        let text = tmpl(
            &Init {
                source: &inv.source,
                cluster: &c.name,
                version: version.clone(),
                node: &cp.name,
                address: cp.address,
                endpoint: c.endpoint,
                token: opts.join_token,
                certificate_key: cert_key.clone(),
                pod_subnet: c.pod_subnet,
                service_subnet: c.service_subnet,
                dns_domain: &c.dns_domain,
                max_pods: c.max_pods,
                cluster_dns: cluster_dns(c.service_subnet),
            },
            "kubeadm-init.yaml",
        )?;
        files.push(File { path: format!("nodes/{}/kubeadm-init.yaml", cp.name), text, secret: true });
    }
    for node in &inv.nodes {
        if first_cp.is_some_and(|cp| cp.name == node.name) {
            continue;
        }
        let Some(hash) = opts.ca_cert_hash else { continue };
        let control_plane = inv.profile_of(node).role == Role::ControlPlane;
        let text = tmpl(
            &Join {
                source: &inv.source,
                cluster: &c.name,
                version: version.clone(),
                node: &node.name,
                address: node.address,
                endpoint: c.endpoint,
                token: opts.join_token,
                ca_cert_hash: hash,
                control_plane,
                certificate_key: cert_key.clone(),
            },
            "kubeadm-join.yaml",
        )?;
        files.push(File { path: format!("nodes/{}/kubeadm-join.yaml", node.name), text, secret: true });
    }
    if opts.ca_cert_hash.is_none() && inv.nodes.len() > 1 {
        notes.push(
            "join files need the cluster CA's hash: after `kubeadm init`, render again with --ca-cert-hash sha256:..."
                .into(),
        );
    }
    for node in &inv.nodes {
        let subnet = node_pod_subnet(c, node)?;
        files.push(File {
            path: format!("nodes/{}/10-metal6-pods.conflist", node.name),
            text: pretty(&primary_cni(subnet)),
            secret: false,
        });
        files.push(File {
            path: format!("nodes/{}/pod-routes.conf", node.name),
            text: pod_routes(inv, c, node)?,
            secret: false,
        });
    }
    files.push(File {
        path: "containerd/config.toml".into(),
        text: tmpl(&Containerd { cluster: &c.name }, "containerd.toml")?,
        secret: false,
    });
    files.push(File {
        path: "multus/multus-thick.yaml".into(),
        text: tmpl(&Multus { cluster: &c.name, image: MULTUS_IMAGE }, "multus-thick.yaml")?,
        secret: false,
    });
    if let Some(e) = &opts.emulation {
        let names = e.workers.map_or_else(|| vec![e.node.to_owned()], |w| w.partition.workers.clone());
        if let Some(n) = names.iter().find(|n| inv.node(n).is_none()) {
            return Err(RenderError::NoSuchNode(n.clone()));
        }
        files.extend(constellation(e)?);
    }
    Ok((files, notes))
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The node's primary pod network: a bridge with host-local addresses from the node's own
/// pod subnet; pods route through the bridge, nodes route each other's pod subnets.
pub fn primary_cni(subnet: Ipv6Net) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "metal6-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "m6pods0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet.to_string()}]],
                    "routes": [{"dst": "::/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// systemd-networkd routes (a drop-in for the node's provisioning unit) to the pod subnets of
/// the nodes on the same segment; other segments' pod subnets go via the segment's router,
/// which must carry them (docs/cluster.md).
fn pod_routes(inv: &Inventory, c: &Cluster, node: &Node) -> Result<String, RenderError> {
    let mut out = format!(
        "# Pod subnets of {}'s neighbours on segment {}, via their node addresses (metal6).\n",
        node.name,
        inv.segment_of(node).name
    );
    for other in inv.nodes.iter().filter(|o| o.name != node.name && o.segment == node.segment) {
        let net = node_pod_subnet(c, other)?;
        out.push_str(&format!("[Route]\nDestination={net}\nGateway={}\n\n", other.address));
    }
    Ok(out)
}

/// The host-side veth end name of a satellite interface (`Addressing::host_device_name`).
pub fn device_name(sat: u32, iface: u8) -> String {
    Addressing::host_device_name(sat, iface)
}

pub fn ground_segment(sat: u32) -> u32 {
    sat / SATS_PER_GROUND_SEGMENT
}

fn tuning(mtu: u32) -> Value {
    // IFNAME is replaced by the interface name by the tuning plugin: one config for all.
    json!({"type": "tuning", "mtu": mtu, "sysctl": {
        "net.ipv6.conf.IFNAME.accept_dad": "0",
        "net.ipv6.conf.IFNAME.accept_ra": "0"
    }})
}

/// One ISL end: the pre-created veth end moved into the pod, its /128 from local IPAM.
pub fn isl_config(e: &Emulation<'_>, sat: u32, iface: u8) -> Value {
    let name = format!("sat-{sat:05}-{}", Addressing::iface_name(iface));
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "host-device",
                "device": device_name(sat, iface),
                "ipam": {"type": "static", "addresses": [{"address": format!("{}/128", e.addressing.interface(sat, iface))}]}
            },
            tuning(e.isl_mtu())
        ]
    })
}

/// A ground segment: one bridge, each satellite's address from its pod annotation (`ips`).
pub fn ground_config(e: &Emulation<'_>, segment: u32) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": format!("gsl-seg{segment}"),
        "plugins": [
            {
                "type": "bridge",
                "bridge": format!("m6gs{segment}"),
                "isGateway": false,
                "ipMasq": false,
                "ipam": {"type": "static"},
                "capabilities": {"ips": true}
            },
            tuning(e.mtu)
        ]
    })
}

/// The Multus network-selection annotation of satellite `sat`: its ISL ends by NAD, and its
/// ground link with the address local IPAM gives it.
pub fn annotation(e: &Emulation<'_>, sat: u32) -> Value {
    let mut nets: Vec<Value> = isl_ends(e.topology)
        .into_iter()
        .filter(|(s, _)| *s == sat)
        .map(|(s, k)| json!({"name": format!("sat-{s:05}-{}", IFACES[usize::from(k)]), "interface": IFACES[usize::from(k)]}))
        .collect();
    nets.push(json!({
        "name": format!("gsl-seg{}", ground_segment(sat)),
        "interface": "gsl0",
        "ips": [format!("{}/128", e.addressing.interface(sat, 4))]
    }));
    Value::Array(nets)
}

/// Every (satellite, interface) that is an ISL end in the +grid.
fn isl_ends(t: &Topology) -> Vec<(u32, u8)> {
    let mut ends: Vec<(u32, u8)> = t
        .grid()
        .into_iter()
        .flat_map(|(kind, a, b)| {
            let (ia, ib) = kind.ifaces();
            [(a, ia), (b, ib)]
        })
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends
}

struct Sat {
    name: String,
    index: u32,
    plane: u32,
    node: String,
    frr_conf: String,
    networks: String,
}

#[derive(Template)]
#[template(path = "cluster/satellites.yaml", escape = "none")]
struct Sats<'a> {
    shell: String,
    node: String,
    count: u32,
    namespace: &'a str,
    frr_image: &'a str,
    sats: Vec<Sat>,
}

#[derive(Template)]
#[template(path = "cluster/link-agent.yaml", escape = "none")]
struct Agent<'a> {
    shell: String,
    node: String,
    /// Split: the workers the DaemonSet runs on (empty: `node` alone).
    nodes: Vec<String>,
    namespace: &'a str,
    agent_image: &'a str,
    command: Vec<String>,
    /// The TLE set, indented for the ConfigMap's block scalar; empty for a Walker shell.
    tle: String,
}

/// The satellites' address block `metal6 emulate` uses unless told otherwise (`--block`).
pub const DEFAULT_BLOCK: &str = "fd00:5a7::/48";

/// Where the link agent finds the TLEs of a constellation given by them.
pub const TLE_DIR: &str = "/etc/metal6";

/// The Kubernetes backend of the emulation: the NADs, one FRR pod (and its config) per
/// satellite, and the node's link agent.
pub fn constellation(e: &Emulation<'_>) -> Result<Vec<File>, RenderError> {
    if let Some(w) = &e.workers
        && e.isl_mtu() < 1280
    {
        return Err(RenderError::IslMtu { mtu: e.isl_mtu(), underlay: w.underlay_mtu });
    }
    let s = &e.topology.shell;
    let shell = format!("{}x{}", s.planes, s.per_plane);
    let sats = (0..s.count())
        .map(|i| {
            let loopback = e.addressing.loopback(i);
            Sat {
                name: format!("sat-{i:05}"),
                index: i,
                plane: e.topology.plane_slot(i).0,
                node: e.node_of(i).to_owned(),
                frr_conf: format!(
                    "interface lo\n ipv6 address {loopback}/128\n!\n{}",
                    metal6_emulation::routing::isisd_conf(e.topology, i)
                ),
                networks: annotation(e, i).to_string(),
            }
        })
        .collect();
    let satellites = tmpl(
        &Sats {
            shell: shell.clone(),
            node: e.where_(),
            count: s.count(),
            namespace: e.namespace,
            frr_image: e.frr_image,
            sats,
        },
        "satellites.yaml",
    )?;
    let mut command: Vec<String> = ["metal6", "emulate", "agent", "--shell"].iter().map(|x| (*x).to_owned()).collect();
    command.push(shell.clone());
    let orbit = match &e.topology.tle {
        // The agent propagates the same TLEs from the same start: the same grid and links.
        Some(c) => vec![
            ("--tle", format!("{TLE_DIR}/constellation.tle")),
            ("--tle-start", c.start.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
        ],
        None => vec![
            ("--altitude-km", s.altitude_km.to_string()),
            ("--inclination", s.inclination_deg.to_string()),
            ("--phasing", s.phasing.to_string()),
        ],
    };
    for (flag, v) in orbit.into_iter().chain([("--mtu", e.isl_mtu().to_string())]) {
        command.push(flag.into());
        command.push(v);
    }
    // The agent finds its pods by their addresses: it must know the block they come from.
    if e.addressing.block().to_string() != DEFAULT_BLOCK {
        command.extend(["--block".into(), e.addressing.block().to_string()]);
    }
    let mut nodes = vec![];
    if let Some(w) = &e.workers {
        // The same split on every worker: the names in order, each with its node address;
        // the pod's own node name comes from the downward API (NODE_NAME).
        let list: Vec<String> = w.partition.workers.iter().zip(w.underlay).map(|(n, a)| format!("{n}={a}")).collect();
        command.extend(["--nodes".into(), list.join(","), "--node-name".into(), "$(NODE_NAME)".into()]);
        nodes = w.partition.workers.clone();
    }
    if s.kind == metal6_emulation::ShellKind::Star && e.topology.tle.is_none() {
        command.push("--star".into());
    }
    let tle = e
        .topology
        .tle
        .as_ref()
        .map(|c| c.to_3le().lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    let agent = tmpl(
        &Agent { shell, node: e.where_(), nodes, namespace: e.namespace, agent_image: e.agent_image, command, tle },
        "link-agent.yaml",
    )?;
    Ok(vec![
        File { path: "emulation/nads.yaml".into(), text: nads(e)?, secret: false },
        File { path: "emulation/satellites.yaml".into(), text: satellites, secret: false },
        File { path: "emulation/link-agent.yaml".into(), text: agent, secret: false },
    ])
}

fn nads(e: &Emulation<'_>) -> Result<String, RenderError> {
    let count = e.topology.shell.count();
    let mut list = Vec::new();
    for (sat, iface) in isl_ends(e.topology) {
        let config = isl_config(e, sat, iface);
        list.push(Nad {
            name: config["name"].as_str().unwrap_or_default().to_owned(),
            owner: format!("sat-{sat:05}"),
            worker: if e.workers.is_some() { e.node_of(sat).to_owned() } else { String::new() },
            config: config.to_string(),
        });
    }
    for seg in 0..count.div_ceil(SATS_PER_GROUND_SEGMENT) {
        let config = ground_config(e, seg);
        list.push(Nad {
            name: format!("gsl-seg{seg}"),
            owner: format!("ground-segment-{seg}"),
            worker: String::new(),
            config: config.to_string(),
        });
    }
    let s = &e.topology.shell;
    tmpl(
        &Nads {
            shell: format!("{}x{}", s.planes, s.per_plane),
            node: e.where_(),
            count,
            block: e.addressing.block().to_string(),
            namespace: e.namespace,
            nads: list,
        },
        "nads.yaml",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_hashes() {
        assert!(valid_token("abcdef.0123456789abcdef"));
        assert!(
            !valid_token("ABCDEF.0123456789abcdef")
                && !valid_token("abcdef0123456789abcdef")
                && !valid_token("abc.def")
        );
        assert!(valid_ca_hash(&format!("sha256:{}", "a".repeat(64))));
        assert!(!valid_ca_hash("sha256:xyz") && !valid_ca_hash(&"a".repeat(64)));
    }

    #[test]
    fn dns_is_the_tenth_service_address() {
        assert_eq!(
            cluster_dns("2001:db8:4100::/112".parse().expect("net")),
            "2001:db8:4100::a".parse::<Ipv6Addr>().expect("ip")
        );
    }

    #[test]
    fn device_names_fit_linux() {
        assert_eq!(device_name(12, 0), "m6s00012isl0");
        assert!(device_name(99_999, 4).len() <= 15);
    }
}
