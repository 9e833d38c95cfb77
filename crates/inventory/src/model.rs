//! The validated inventory: typed, cross-checked, with every default applied. Code downstream
//! (netboot, Redfish, image, cluster) takes these types and never re-validates.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use serde::Serialize;

use crate::ident::{Duid, MacAddr, SecretRef};
pub use crate::raw::{
    AttributeValue, BiosProfile, BootMethod, ComponentKind, FirmwareGate, GatedStep, HttpBoot, Role,
    RouterAdvertisements, SysctlValue,
};

/// The segment name of the provisioning link itself.
pub const LOCAL_SEGMENT: &str = "provisioning";

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The file it was read from, as given.
    pub source: String,
    pub site: Site,
    pub profiles: BTreeMap<String, Profile>,
    pub bios_profiles: BTreeMap<String, BiosProfile>,
    pub firmware_baselines: BTreeMap<String, FirmwareBaseline>,
    pub sysctl_profiles: BTreeMap<String, BTreeMap<String, SysctlValue>>,
    pub cluster: Option<Cluster>,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    /// Dotted, without a `v`: `1.31.4`.
    pub kubernetes_version: Version,
    pub pod_subnet: Ipv6Net,
    pub service_subnet: Ipv6Net,
    pub node_mask: u8,
    pub dns_domain: String,
    pub max_pods: u32,
    pub join_token: SecretRef,
    /// The API server address joins use.
    pub endpoint: Ipv6Addr,
    /// Indexes into `nodes` of the control-plane nodes; the first runs `kubeadm init`.
    pub control_plane: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub name: String,
    pub domain: String,
    pub interface: String,
    pub dns: Vec<Ipv6Addr>,
    pub ntp: Vec<Ipv6Addr>,
    pub mtu: u32,
    pub router_advertisements: RouterAdvertisements,
    pub boot_server: BootServer,
    pub dhcp: Dhcp,
    /// The provisioning link first, then relayed segments in file order.
    pub segments: Vec<Segment>,
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// [`LOCAL_SEGMENT`] for the provisioning link, else the relay's name.
    pub name: String,
    pub prefix: Ipv6Net,
    pub router: Ipv6Addr,
    /// The relay agent's link-address; `None` for the provisioning link.
    pub link_address: Option<Ipv6Addr>,
    pub host_offset: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootServer {
    pub address: Ipv6Addr,
    pub http_port: u16,
    pub tftp_port: u16,
    pub https_port: Option<u16>,
    /// PEM file of the CA HTTPS nodes' firmware must trust (Dell: given through Redfish).
    pub https_ca: Option<std::path::PathBuf>,
}

impl BootServer {
    /// `http://[addr]/` or `http://[addr]:port/`: the port is left out when it is 80 because
    /// Dell firmware rejects a port in the DHCPv6 bootfile-url (Dell KB 000286311).
    pub fn http_base(&self) -> String {
        url_base("http", self.address, self.http_port, 80)
    }

    pub fn tftp_base(&self) -> String {
        url_base("tftp", self.address, self.tftp_port, 69)
    }

    /// `https://[addr]/` or `https://[addr]:port/`; `None` without an `https_port`.
    pub fn https_base(&self) -> Option<String> {
        self.https_port.map(|p| url_base("https", self.address, p, 443))
    }
}

fn url_base(scheme: &str, addr: Ipv6Addr, port: u16, default: u16) -> String {
    if port == default { format!("{scheme}://[{addr}]/") } else { format!("{scheme}://[{addr}]:{port}/") }
}

#[derive(Debug, Clone, Serialize)]
pub struct Dhcp {
    pub preferred_lifetime: u32,
    pub valid_lifetime: u32,
    pub t1: u32,
    pub t2: u32,
    pub dynamic_pool: Option<(Ipv6Addr, Ipv6Addr)>,
    /// Relay agents allowed to send Relay-Forward; empty = any (see `raw::Dhcp`).
    pub trusted_relays: Vec<Ipv6Addr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub role: Role,
    pub boot: BootMethod,
    pub image: String,
    pub sysctl: Option<String>,
    pub bios: Option<String>,
    pub firmware: Option<String>,
    pub https: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FirmwareBaseline {
    pub components: Vec<FirmwareComponent>,
    pub gates: Vec<FirmwareGate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FirmwareComponent {
    pub kind: ComponentKind,
    pub name: Option<String>,
    pub version: Version,
    pub image_url: String,
    pub sha256: Option<String>,
}

/// A dotted firmware version (`1.8.2`, `7.00.00.181`), compared numerically part by part and
/// shown as written (Dell pads parts with zeros: `6.00.30.00`).
#[derive(Debug, Clone)]
pub struct Version {
    parts: Vec<u64>,
    text: String,
}

impl Version {
    pub fn parts(&self) -> &[u64] {
        &self.parts
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl std::str::FromStr for Version {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let parts: Result<Vec<u64>, _> = s.split('.').map(str::parse).collect();
        match parts {
            Ok(p) if !p.is_empty() => Ok(Version { parts: p, text: s.to_owned() }),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressSource {
    /// Written in the inventory.
    Explicit,
    /// `prefix + host_offset + index`.
    Allocated,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub fqdn: String,
    pub index: u64,
    pub profile: String,
    /// Index into [`Site::segments`].
    pub segment: usize,
    pub address: Ipv6Addr,
    pub address_source: AddressSource,
    pub bmc: Option<Bmc>,
    pub nics: Vec<Nic>,
    /// Index into `nics` of the NIC that netboots.
    pub boot_nic: usize,
    pub duids: Vec<Duid>,
    pub disk: DiskSelector,
    pub labels: BTreeMap<String, String>,
}

impl Node {
    pub fn boot_mac(&self) -> MacAddr {
        self.nics[self.boot_nic].mac
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Bmc {
    pub host: BmcHost,
    pub port: u16,
    pub username: String,
    pub password: SecretRef,
    /// The system's `Id` on a BMC that serves several; `None`: its first system.
    pub system: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum BmcHost {
    Ipv6(Ipv6Addr),
    Name(String),
}

impl Bmc {
    /// The Redfish service root, with an IPv6 literal bracketed (unbracketed literals are a
    /// classic failure of Dell tooling, see docs).
    pub fn redfish_url(&self) -> String {
        let host = match &self.host {
            BmcHost::Ipv6(a) => format!("[{a}]"),
            BmcHost::Name(n) => n.clone(),
        };
        if self.port == 443 {
            format!("https://{host}/redfish/v1")
        } else {
            format!("https://{host}:{}/redfish/v1", self.port)
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Nic {
    pub name: String,
    pub mac: MacAddr,
    pub boot: bool,
    /// The BMC's id of the NIC (Dell FQDD), when the inventory names it.
    pub bmc_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskSelector {
    Path(String),
    Serial(String),
    /// The smallest disk of at least this many bytes.
    MinSize(u64),
}

impl Inventory {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn profile_of(&self, node: &Node) -> &Profile {
        // Validation guarantees every node's profile exists.
        &self.profiles[&node.profile]
    }

    pub fn segment_of(&self, node: &Node) -> &Segment {
        &self.site.segments[node.segment]
    }

    /// Where this node fetches its installer, plan, image and reports events: the HTTPS base
    /// for profiles with `https: true` (validation guarantees the port), else the HTTP base.
    pub fn server_base(&self, node: &Node) -> String {
        let bs = &self.site.boot_server;
        match bs.https_base() {
            Some(https) if self.profile_of(node).https => https,
            _ => bs.http_base(),
        }
    }
}
