//! The inventory file as operators write it: serde structs that mirror the YAML one to one.
//!
//! Addresses, MACs and references stay strings here so that a bad one becomes a diagnostic with
//! a position instead of aborting deserialization; [`crate::validate`] turns these into the typed
//! model. The JSON Schema (`inventory/schema.json`) is generated from these types, and the same
//! schema drives the structural check, so editor completion and `metal6 inventory check` cannot
//! disagree about which fields exist.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A metal6 inventory: one site, its profiles and its nodes.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Format version of this file. Only `1` exists.
    pub version: u32,
    pub site: Site,
    /// Named bundles a node refers to with `profile:`.
    pub profiles: BTreeMap<String, Profile>,
    /// Desired Dell BIOS attributes, by profile name.
    #[serde(default)]
    pub bios_profiles: BTreeMap<String, BiosProfile>,
    /// Firmware baselines (component versions and gates), by name.
    #[serde(default)]
    pub firmware_baselines: BTreeMap<String, FirmwareBaseline>,
    /// Kernel sysctl values baked into node images, by profile name.
    #[serde(default)]
    pub sysctl_profiles: BTreeMap<String, BTreeMap<String, SysctlValue>>,
    /// The Kubernetes cluster the nodes form (`metal6 cluster render`).
    #[serde(default)]
    pub cluster: Option<Cluster>,
    pub nodes: Vec<Node>,
}

/// An IPv6 single-stack Kubernetes cluster: control-plane nodes are those whose profile has
/// `role: control-plane`; the first of them runs `kubeadm init`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name (kubeadm `clusterName`), a DNS label.
    pub name: String,
    /// Kubernetes version, `1.31.4` (what kubeadm, kubelet and the validation target).
    pub kubernetes_version: String,
    /// Pod network, IPv6; every node gets a /`node_mask` of it.
    pub pod_subnet: String,
    /// Service network, IPv6, at most 20 bits of host part (/108 or longer: kube-apiserver's limit).
    pub service_subnet: String,
    /// Each node's share of `pod_subnet` (controller-manager `node-cidr-mask-size-ipv6`).
    #[serde(default = "default_node_mask")]
    pub node_mask: u8,
    #[serde(default = "default_dns_domain")]
    pub dns_domain: String,
    /// Kubelet `maxPods` on every node (the emulation needs ≥ 2,000 per worker).
    #[serde(default = "default_max_pods")]
    pub max_pods: u32,
    /// The kubeadm bootstrap token, by reference (`env:NAME` or `file:PATH`); its value has
    /// the form `abcdef.0123456789abcdef`.
    pub join_token: String,
    /// The API server's address for joins; default: the first control-plane node's address.
    #[serde(default)]
    pub control_plane_endpoint: Option<String>,
}

fn default_node_mask() -> u8 {
    64
}

fn default_dns_domain() -> String {
    "cluster.local".into()
}

fn default_max_pods() -> u32 {
    2500
}

/// The provisioning site: its network and the boot server on it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Short name of the site (a DNS label).
    pub name: String,
    /// DNS domain of the nodes; node FQDNs are `<name>.<domain>`.
    pub domain: String,
    pub provisioning: Provisioning,
    pub boot_server: BootServer,
    #[serde(default)]
    pub dhcp: Dhcp,
    /// Routed segments reached through DHCPv6 relays, each with its own prefix.
    #[serde(default)]
    pub relays: Vec<Relay>,
    /// OpenSSH public keys installed for root on every node (`ssh-ed25519 AAAA... comment`).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
}

/// The link the boot server sits on.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// Interface of the provisioning host on this link, e.g. `eno1` or `br-prov`.
    pub interface: String,
    /// IPv6 prefix of the link, e.g. `2001:db8:100::/64`.
    pub prefix: String,
    /// Default gateway of the nodes: an address in the prefix, or a link-local address.
    pub router: String,
    /// Recursive DNS servers handed out by DHCPv6 (option 23) and RA (RDNSS).
    #[serde(default)]
    pub dns: Vec<String>,
    /// NTP servers (DHCPv6 option 56).
    #[serde(default)]
    pub ntp: Vec<String>,
    /// Link MTU announced in Router Advertisements (IPv6 minimum 1280).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Interface identifier of the first allocated node address: a node without an explicit
    /// `address` gets `prefix + host_offset + index`.
    #[serde(default = "default_host_offset")]
    pub host_offset: u64,
    #[serde(default)]
    pub router_advertisements: RouterAdvertisements,
}

fn default_mtu() -> u32 {
    1500
}
fn default_host_offset() -> u64 {
    0x100
}

/// Router Advertisements sent by `metal6 serve` on the provisioning link.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterAdvertisements {
    /// Send RAs at all (turn off when a real router already advertises the link).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// M flag: addresses come from DHCPv6.
    #[serde(default = "yes")]
    pub managed: bool,
    /// O flag: other configuration (DNS, NTP) comes from DHCPv6.
    #[serde(default = "yes")]
    pub other_config: bool,
    /// A flag of the prefix: hosts may also form SLAAC addresses (needs a /64).
    #[serde(default)]
    pub autonomous: bool,
    /// Router lifetime in seconds; 0 means "not a default router". OVMF waits 12-13 s longer
    /// per HTTPv6 boot with 0 (see docs), so the default is 1800.
    #[serde(default = "default_router_lifetime")]
    pub router_lifetime: u32,
    /// Maximum interval between unsolicited RAs, seconds (RFC 4861: 4..=1800).
    #[serde(default = "default_ra_interval")]
    pub max_interval: u32,
}

fn yes() -> bool {
    true
}
fn default_router_lifetime() -> u32 {
    1800
}
fn default_ra_interval() -> u32 {
    60
}

impl Default for RouterAdvertisements {
    fn default() -> Self {
        RouterAdvertisements {
            enabled: true,
            managed: true,
            other_config: true,
            autonomous: false,
            router_lifetime: default_router_lifetime(),
            max_interval: default_ra_interval(),
        }
    }
}

/// Where `metal6 serve` listens.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootServer {
    /// The boot server's IPv6 address on the provisioning link.
    pub address: String,
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    #[serde(default = "default_tftp_port")]
    pub tftp_port: u16,
    /// HTTPS port for profiles with `https: true` (metal6 serve then needs `--tls-cert` and
    /// `--tls-key`); absent: no HTTPS.
    #[serde(default)]
    pub https_port: Option<u16>,
    /// The CA certificate (PEM file; a public certificate, not a secret) that signed the
    /// HTTPS certificate: Dell BIOSes of `https: true` nodes are given it through Redfish
    /// (the system's `Boot/Certificates`). A path, relative to the working directory like
    /// `file:` references.
    #[serde(default)]
    pub https_ca: Option<String>,
}

fn default_http_port() -> u16 {
    80
}
fn default_tftp_port() -> u16 {
    69
}

/// DHCPv6 timers and the optional pool for clients that are not in the inventory.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    /// Preferred lifetime of leased addresses, seconds.
    #[serde(default = "default_preferred")]
    pub preferred_lifetime: u32,
    /// Valid lifetime of leased addresses, seconds.
    #[serde(default = "default_valid")]
    pub valid_lifetime: u32,
    /// Renew time T1, seconds (default: half the preferred lifetime).
    #[serde(default)]
    pub t1: Option<u32>,
    /// Rebind time T2, seconds (default: 0.8 × the preferred lifetime).
    #[serde(default)]
    pub t2: Option<u32>,
    /// Addresses for unknown clients. Without it, unknown clients get no answer.
    #[serde(default)]
    pub dynamic_pool: Option<Pool>,
    /// Source addresses of the DHCPv6 relay agents whose Relay-Forward messages are served
    /// (their Client Link-Layer Address option identifies nodes). When set, relayed messages
    /// from any other source are dropped; when empty, any source is accepted (warned at start).
    #[serde(default)]
    pub trusted_relays: Vec<String>,
}

fn default_preferred() -> u32 {
    3600
}
fn default_valid() -> u32 {
    7200
}

impl Default for Dhcp {
    fn default() -> Self {
        Dhcp {
            preferred_lifetime: default_preferred(),
            valid_lifetime: default_valid(),
            t1: None,
            t2: None,
            dynamic_pool: None,
            trusted_relays: Vec::new(),
        }
    }
}

/// An inclusive address range inside the provisioning prefix.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub start: String,
    pub end: String,
}

/// A routed segment whose DHCPv6 traffic reaches us through a relay agent.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// Name nodes use in `segment:`.
    pub name: String,
    /// The relay's link-address in Relay-Forward messages (an address on that segment).
    pub link_address: String,
    pub prefix: String,
    pub router: String,
    #[serde(default = "default_host_offset")]
    pub host_offset: u64,
}

/// What a node is and how it boots.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub role: Role,
    /// How the firmware reaches the installer.
    pub boot: BootMethod,
    /// Image recipe name (`images/<name>.yaml`).
    pub image: String,
    /// Name of a `sysctl_profiles` entry.
    #[serde(default)]
    pub sysctl: Option<String>,
    /// Name of a `bios_profiles` entry (Dell nodes).
    #[serde(default)]
    pub bios: Option<String>,
    /// Name of a `firmware_baselines` entry (Dell nodes).
    #[serde(default)]
    pub firmware: Option<String>,
    /// Fetch the installer, its plan and the image over HTTPS (`site.boot_server.https_port`),
    /// the server's certificate verified by the firmware and by the installer (docs/security.md).
    /// UEFI HTTP boot only (`uefi-http`, `dhcp-less-http`).
    #[serde(default)]
    pub https: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BootMethod {
    /// UEFI HTTP boot: DHCPv6 hands out an `http://[addr]/...` bootfile-url.
    UefiHttp,
    /// UEFI PXEv6: DHCPv6 hands out a `tftp://[addr]/...` bootfile-url.
    Pxe,
    /// Chain-load iPXE, which then fetches a per-node script.
    Ipxe,
    /// No DHCPv6: the BIOS is programmed over Redfish with a static address and the boot URI.
    DhcpLessHttp,
}

impl BootMethod {
    /// The name the inventory spells it with.
    pub fn name(self) -> &'static str {
        match self {
            BootMethod::UefiHttp => "uefi-http",
            BootMethod::Pxe => "pxe",
            BootMethod::Ipxe => "ipxe",
            BootMethod::DhcpLessHttp => "dhcp-less-http",
        }
    }
}

/// Desired BIOS state of a Dell node.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BiosProfile {
    /// Dell BIOS attribute name → desired value, checked against the node's attribute registry.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Program the BIOS HTTP boot device for IPv6 (needed by `boot: dhcp-less-http`).
    #[serde(default)]
    pub http_boot: Option<HttpBoot>,
}

/// A BIOS attribute value: Dell registries have enumerations/strings, integers and booleans.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum AttributeValue {
    Bool(bool),
    Int(i64),
    Str(String),
}

/// Dell `HttpDev1*` settings for DHCP-less IPv6 HTTP boot.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpBoot {
    /// The NIC FQDD, e.g. `NIC.Integrated.1-1-1`.
    pub interface: String,
    /// Boot URI; defaults to the node's installer URL on the boot server.
    #[serde(default)]
    pub uri: Option<String>,
    /// Program the node's inventory address statically instead of using DHCPv6.
    #[serde(default)]
    pub static_address: bool,
}

/// Component versions a node must run, with ordering gates.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirmwareBaseline {
    pub components: Vec<FirmwareComponent>,
    #[serde(default)]
    pub gates: Vec<FirmwareGate>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirmwareComponent {
    /// What it is; updates run iDRAC → BIOS → NIC → others.
    pub kind: ComponentKind,
    /// Substring of the component's name in the BMC firmware inventory.
    #[serde(default)]
    pub name: Option<String>,
    /// Minimum version, dotted numbers (`1.8.2`, `7.00.00.181`).
    pub version: String,
    /// Where the BMC fetches the update package (SimpleUpdate ImageURI).
    pub image_url: String,
    /// SHA-256 of the package, hex.
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    Idrac,
    Bios,
    Nic,
    Storage,
    Other,
}

/// "Component X must be at least version V before step S."
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirmwareGate {
    pub component: ComponentKind,
    pub min_version: String,
    pub before: GatedStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GatedStep {
    /// Enabling UEFI HTTP boot over IPv6.
    Ipv6HttpBoot,
    /// Applying the BIOS profile.
    BiosApply,
    /// Installing the node.
    Install,
}

/// A sysctl value: a number, or a string for multi-value keys such as `net.ipv4.tcp_rmem`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SysctlValue {
    Int(i64),
    Str(String),
}

/// One machine.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Host name (a DNS label, unique in the inventory).
    pub name: String,
    /// Name of an entry in `profiles`.
    pub profile: String,
    /// Position used for address allocation; defaults to the node's position in this list.
    /// Set it to keep addresses stable when nodes are reordered.
    #[serde(default)]
    pub index: Option<u64>,
    /// The node's IPv6 address; allocated from the segment's prefix when absent.
    #[serde(default)]
    pub address: Option<String>,
    /// Name of a `site.relays` segment; absent means the provisioning link.
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub bmc: Option<Bmc>,
    pub nics: Vec<Nic>,
    /// DUIDs this node is known to present (hex, colon-separated), for clients whose DUID
    /// does not carry the MAC.
    #[serde(default)]
    pub duids: Vec<String>,
    pub disk: Disk,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The node's baseboard management controller (Dell iDRAC).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bmc {
    /// IPv6 address or host name of the BMC.
    pub address: String,
    #[serde(default = "default_bmc_port")]
    pub port: u16,
    pub username: String,
    /// A reference, never the password: `env:VARIABLE` or `file:/path/to/file`.
    pub password: String,
    /// The node's system `Id` when one BMC serves several (a chassis manager, a multi-host
    /// BMC); default: the BMC's first system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

fn default_bmc_port() -> u16 {
    443
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Interface name in the installed OS (e.g. `eno1`).
    pub name: String,
    /// Required; with `bmc_id`, `metal6 bmc inventory --write-back` fills it in from the BMC.
    #[serde(default)]
    pub mac: Option<String>,
    /// The BMC's id of this NIC (Redfish EthernetInterface id; on Dell the FQDD, e.g.
    /// `NIC.Integrated.1-1-1`, the value BIOS `HttpDev1Interface` takes).
    #[serde(default)]
    pub bmc_id: Option<String>,
    /// This NIC netboots; exactly one per node.
    #[serde(default)]
    pub boot: bool,
}

/// Which disk the installer writes: exactly one of `path`, `serial` or `size`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Device path, preferably stable (`/dev/disk/by-path/...`).
    #[serde(default)]
    pub path: Option<String>,
    /// Disk serial number as the kernel reports it.
    #[serde(default)]
    pub serial: Option<String>,
    /// The smallest disk at least this large, e.g. `480GB` or `447GiB`.
    #[serde(default)]
    pub size: Option<String>,
}
