//! Semantic validation: raw structs → [`model::Inventory`], reporting every problem at once.
//!
//! Each check reports at the YAML path of the offending value; positions come from the located
//! tree. Duplicates are reported at the second occurrence with the first one named in the hint.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};

use ipnet::Ipv6Net;

use crate::diag::{Diagnostics, Severity};
use crate::ident::{Duid, DuidError, MacAddr, MacError, SecretRef, SecretRefError};
use crate::model::{self, AddressSource, BmcHost, DiskSelector, Role, Version};
use crate::path;
use crate::raw;
use crate::schema::did_you_mean;
use crate::tree::{Node as TreeNode, Path};

pub(crate) struct Ctx<'a> {
    pub tree: &'a TreeNode,
    pub diags: &'a mut Diagnostics,
}

impl Ctx<'_> {
    fn error(&mut self, code: &'static str, path: &Path, message: String, hint: Option<String>) {
        let pos = self.tree.locate(path);
        self.diags.push(Severity::Error, code, pos, path, message, hint);
    }
    fn warn(&mut self, code: &'static str, path: &Path, message: String, hint: Option<String>) {
        let pos = self.tree.locate(path);
        self.diags.push(Severity::Warning, code, pos, path, message, hint);
    }
    fn line_of(&self, path: &Path) -> u32 {
        self.tree.locate(path).line
    }

    /// Records `value` under `key`; on a repeat, reports at `path` naming the first holder.
    fn unique<K: std::hash::Hash + Eq>(
        &mut self,
        seen: &mut HashMap<K, Path>,
        key: K,
        path: Path,
        code: &'static str,
        what: String,
        hint: &str,
    ) {
        if let Some(first) = seen.get(&key) {
            let line = self.line_of(first);
            self.error(code, &path, format!("{what} is already used by {first} (line {line})"), Some(hint.to_owned()));
        } else {
            seen.insert(key, path);
        }
    }
}

/// Where an IPv6 address may appear, which decides which special ranges are misuse.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AddrUse {
    /// Node, boot server, pool: a global (or ULA) unicast address.
    Host,
    /// Gateway: link-local is fine (that is what RAs advertise).
    Gateway,
    /// DNS/NTP server: off-link is fine, link-local is not (no zone to go with it).
    Server,
}

/// DNS servers the provisioning link may list (RA RDNSS and DHCPv6 option 23 carry them all).
const MAX_DNS_SERVERS: usize = 16;

fn parse_addr(cx: &mut Ctx<'_>, text: &str, path: &Path, usage: AddrUse) -> Option<Ipv6Addr> {
    let addr = match text.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => a,
        Ok(IpAddr::V4(_)) => {
            cx.error(
                "ipv4-address",
                path,
                format!("`{text}` is an IPv4 address; metal6 sites are IPv6-only"),
                Some("use the IPv6 address of this host".into()),
            );
            return None;
        }
        Err(_) => {
            let hint = if text.starts_with('[') {
                "write the address without brackets here"
            } else {
                "write an IPv6 address such as 2001:db8:100::10"
            };
            cx.error("invalid-address", path, format!("`{text}` is not an IPv6 address"), Some(hint.into()));
            return None;
        }
    };
    let special = if addr.is_unspecified() {
        Some("the unspecified address ::")
    } else if addr.is_loopback() {
        Some("the loopback address ::1")
    } else if addr.is_multicast() {
        Some("a multicast address")
    } else if addr.to_ipv4_mapped().is_some() {
        Some("an IPv4-mapped address")
    } else {
        None
    };
    if let Some(what) = special {
        cx.error(
            "reserved-address",
            path,
            format!("{addr} is {what}"),
            Some("use a unicast address of the site".into()),
        );
        return None;
    }
    if addr.is_unicast_link_local() && usage != AddrUse::Gateway {
        cx.error(
            "link-local-misuse",
            path,
            format!("{addr} is link-local (fe80::/10)"),
            Some("link-local addresses need a zone and are not routed; use an address from the site prefix".into()),
        );
        return None;
    }
    Some(addr)
}

fn parse_prefix(cx: &mut Ctx<'_>, text: &str, path: &Path) -> Option<Ipv6Net> {
    let Ok(net) = text.parse::<Ipv6Net>() else {
        let hint = if text.contains('/') {
            "write an IPv6 prefix such as 2001:db8:100::/64"
        } else {
            "add the prefix length, e.g. /64"
        };
        cx.error("invalid-prefix", path, format!("`{text}` is not an IPv6 prefix"), Some(hint.into()));
        return None;
    };
    if net.addr() != net.network() {
        cx.error(
            "prefix-host-bits",
            path,
            format!("{net} has host bits set"),
            Some(format!("did you mean {}?", net.trunc())),
        );
        return None;
    }
    if net.network().is_unicast_link_local() || net.network().is_multicast() {
        cx.error(
            "link-local-misuse",
            path,
            format!("{net} is not a routable prefix"),
            Some("use the global or ULA prefix of the link".into()),
        );
        return None;
    }
    if net.prefix_len() > 120 {
        cx.error(
            "prefix-too-long",
            path,
            format!("{net} leaves too few addresses for nodes"),
            Some("use a /64 (or at most a /120)".into()),
        );
        return None;
    }
    Some(net)
}

/// A host address must be on the prefix and must not be the subnet-router anycast address or
/// one of the RFC 2526 reserved subnet anycast addresses (the top 128 of the subnet).
fn check_in_prefix(cx: &mut Ctx<'_>, addr: Ipv6Addr, net: Ipv6Net, path: &Path, allocated: bool) -> bool {
    let fix = if allocated { "; set `address:` or `index:` for this node" } else { "" };
    if !net.contains(&addr) {
        cx.error(
            "address-outside-prefix",
            path,
            format!("{addr} is outside the segment prefix {net}"),
            Some(format!("use an address in {net}{fix}")),
        );
        return false;
    }
    let host = u128::from(addr) & u128::from(net.hostmask());
    if host == 0 {
        cx.error(
            "subnet-router-anycast",
            path,
            format!("{addr} is the subnet-router anycast address of {net} (RFC 4291)"),
            Some(format!("pick another address in {net}{fix}")),
        );
        return false;
    }
    let size = u128::from(net.hostmask());
    // RFC 2526: for /64 in EUI-64 format the reserved IDs are FDFF:FFFF:FFFF:FF80..=FFFF; for
    // other lengths, the highest 128 addresses of the subnet.
    let reserved = if net.prefix_len() == 64 {
        (0xfdff_ffff_ffff_ff80..=0xfdff_ffff_ffff_ffff).contains(&host)
    } else {
        size >= 255 && host >= size - 127
    };
    if reserved {
        cx.error(
            "reserved-address",
            path,
            format!("{addr} is a reserved subnet anycast address (RFC 2526)"),
            Some(format!("pick another address in {net}{fix}")),
        );
        return false;
    }
    true
}

fn check_url(cx: &mut Ctx<'_>, text: &str, path: &Path, schemes: &[&str]) {
    // Catch an unbracketed literal before the URL parser turns it into "invalid port".
    let authority = text.split_once("://").map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if let Some(auth) = authority {
        let host = auth.rsplit('@').next().unwrap_or(auth);
        if !host.starts_with('[') && host.matches(':').count() >= 2 {
            cx.error(
                "url-unbracketed-ipv6",
                path,
                format!("the IPv6 literal in `{text}` is not in brackets"),
                Some("write http://[2001:db8::1]/path; without brackets the colons read as a port".into()),
            );
            return;
        }
    }
    match url::Url::parse(text) {
        Ok(u) if schemes.contains(&u.scheme()) => {
            if !u.username().is_empty() || u.password().is_some() {
                cx.error(
                    "url-credentials",
                    path,
                    "URLs must not carry credentials".into(),
                    Some("the BMC and firmware cannot use them; serve the file without authentication".into()),
                );
                cx.diags.redact_last();
            }
        }
        Ok(u) => cx.error(
            "invalid-url",
            path,
            format!("scheme `{}` is not allowed here", u.scheme()),
            Some(format!("use {}", schemes.join(" or "))),
        ),
        Err(e) => cx.error("invalid-url", path, format!("`{text}` is not a URL: {e}"), None),
    }
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_label(cx: &mut Ctx<'_>, s: &str, path: &Path, what: &str) -> bool {
    if is_dns_label(s) {
        return true;
    }
    let hint = if is_dns_label(&s.to_ascii_lowercase()) {
        format!("use lower case: `{}`", s.to_ascii_lowercase())
    } else {
        "use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'".to_owned()
    };
    cx.error("invalid-name", path, format!("`{s}` is not a valid {what} (DNS label)"), Some(hint));
    false
}

fn check_ref<'n>(
    cx: &mut Ctx<'_>,
    name: &str,
    defined: impl Iterator<Item = &'n String>,
    path: &Path,
    section: &str,
) -> bool {
    let names: Vec<&str> = defined.map(String::as_str).collect();
    if names.contains(&name) {
        return true;
    }
    let hint = match did_you_mean(name, &names) {
        Some(m) => format!("did you mean `{m}`?"),
        None if names.is_empty() => format!("`{section}` defines none; add `{name}` there"),
        None => format!("`{section}` defines: {}", names.join(", ")),
    };
    cx.error("unknown-reference", path, format!("`{name}` is not defined in `{section}`"), Some(hint));
    false
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "B" | "" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = num * mult;
    // Sizes are well below 2^53 bytes; the cast is exact there.
    (1.0..9.0e15).contains(&bytes).then_some(bytes as u64)
}

/// Validates the whole inventory. Returns the model only when no error was found.
pub(crate) fn validate(cx: &mut Ctx<'_>, raw: &raw::Inventory, source: &str) -> Option<model::Inventory> {
    if raw.version != 1 {
        cx.error(
            "unsupported-version",
            &path!["version"],
            format!("inventory version {} is not supported", raw.version),
            Some("this metal6 reads `version: 1`".into()),
        );
    }
    let site = validate_site(cx, &raw.site);
    let profiles = validate_profiles(cx, raw);
    validate_bios(cx, &raw.bios_profiles);
    let baselines = validate_firmware(cx, &raw.firmware_baselines);
    validate_sysctls(cx, &raw.sysctl_profiles);
    let nodes = site.as_ref().map(|s| validate_nodes(cx, raw, s)).unwrap_or_default();
    check_unused_profiles(cx, raw);
    let cluster = match (&raw.cluster, &site) {
        (Some(c), Some(site)) => validate_cluster(cx, c, site, &profiles, &nodes),
        _ => None,
    };
    if cx.diags.has_errors() {
        return None;
    }
    Some(model::Inventory {
        source: source.to_owned(),
        site: site?,
        profiles,
        bios_profiles: raw.bios_profiles.clone(),
        firmware_baselines: baselines,
        sysctl_profiles: raw.sysctl_profiles.clone(),
        cluster,
        nodes,
    })
}

/// A secret reference; an inline secret is an error whose source line is never shown.
fn parse_secret(cx: &mut Ctx<'_>, text: &str, path: &Path, inline: &str, hint: &str) -> Option<SecretRef> {
    match text.parse::<SecretRef>() {
        Ok(r) => Some(r),
        Err(SecretRefError::Inline) => {
            cx.error("plaintext-secret", path, inline.into(), Some(hint.into()));
            cx.diags.redact_last();
            None
        }
        Err(e) => {
            cx.error(
                "invalid-secret-ref",
                path,
                e.to_string(),
                Some("write `env:VARIABLE` or `file:/path/to/file`".into()),
            );
            None
        }
    }
}

fn validate_cluster(
    cx: &mut Ctx<'_>,
    c: &raw::Cluster,
    site: &model::Site,
    profiles: &BTreeMap<String, model::Profile>,
    nodes: &[model::Node],
) -> Option<model::Cluster> {
    let cp = path!["cluster"];
    check_label(cx, &c.name, &cp.key("name"), "cluster name");
    check_label(cx, &c.dns_domain.replace('.', "-"), &cp.key("dns_domain"), "DNS domain");
    let version = match c.kubernetes_version.trim_start_matches('v').parse::<Version>() {
        Ok(v) if v.parts().len() == 3 && v.parts()[0] == 1 => Some(v),
        _ => {
            cx.error(
                "invalid-version",
                &cp.key("kubernetes_version"),
                format!("`{}` is not a Kubernetes version", c.kubernetes_version),
                Some("write major.minor.patch, e.g. 1.31.4".into()),
            );
            None
        }
    };
    let pods = parse_prefix(cx, &c.pod_subnet, &cp.key("pod_subnet"));
    let services = parse_prefix(cx, &c.service_subnet, &cp.key("service_subnet"));
    if let Some(s) = services
        && s.prefix_len() < 108
    {
        cx.error(
            "service-subnet-too-large",
            &cp.key("service_subnet"),
            format!("{s} has {} host bits; kube-apiserver allows at most 20 for IPv6", 128 - s.prefix_len()),
            Some(format!("use a /108 or longer, e.g. {}/112", s.network())),
        );
    }
    if let Some(p) = pods
        && (c.node_mask <= p.prefix_len() || c.node_mask > 120)
    {
        cx.error(
            "node-mask",
            &cp.key("node_mask"),
            format!(
                "node_mask /{} must be longer than the pod subnet's /{} (and at most /120)",
                c.node_mask,
                p.prefix_len()
            ),
            Some(format!(
                "with pod_subnet {p}, node_mask 64 gives {} nodes",
                1u128 << (64u8.saturating_sub(p.prefix_len()).min(100))
            )),
        );
    }
    // The cluster's networks must not overlap each other or any provisioning segment.
    let mut nets: Vec<(String, Ipv6Net)> =
        site.segments.iter().map(|s| (format!("segment {}", s.name), s.prefix)).collect();
    for (key, net) in [("pod_subnet", pods), ("service_subnet", services)] {
        let Some(net) = net else { continue };
        if let Some((what, other)) = nets.iter().find(|(_, o)| o.contains(&net.network()) || net.contains(&o.network()))
        {
            cx.error(
                "overlapping-prefix",
                &cp.key(key),
                format!("{net} overlaps {what} ({other})"),
                Some("pods, services and the provisioning links need separate prefixes".into()),
            );
        }
        nets.push((key.to_owned(), net));
    }
    if c.max_pods == 0 || c.max_pods > 65_000 {
        cx.error(
            "invalid-max-pods",
            &cp.key("max_pods"),
            format!("max_pods {} is out of range", c.max_pods),
            Some("1..=65000".into()),
        );
    }
    let token = parse_secret(
        cx,
        &c.join_token,
        &cp.key("join_token"),
        "the join token is written inline",
        "write `env:VARIABLE` or `file:/path/to/file`, and create a new token",
    );
    // Each node's pod subnet is its index-th /node_mask: indexes must differ cluster-wide
    // (they may repeat across segments for node addresses, not for pods).
    let mut by_index: HashMap<u64, &str> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Some(first) = by_index.insert(n.index, &n.name) {
            cx.error(
                "duplicate-index",
                &path!["nodes"].index(i).key("index"),
                format!(
                    "node `{}` has index {}, as `{first}` does: both would get the same pod subnet",
                    n.name, n.index
                ),
                Some("give every node of the cluster its own `index:`".into()),
            );
        }
        if let Some(p) = pods {
            let bits = u32::from(c.node_mask.saturating_sub(p.prefix_len()));
            if bits < 64 && n.index >= (1u64 << bits) {
                cx.error(
                    "pod-subnet-full",
                    &path!["nodes"].index(i),
                    format!("node `{}` (index {}) has no /{} left in {p}", n.name, n.index, c.node_mask),
                    Some("use a larger pod_subnet or a longer node_mask".into()),
                );
            }
        }
    }
    let control_plane: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| profiles.get(&n.profile).is_some_and(|p| p.role == Role::ControlPlane))
        .map(|(i, _)| i)
        .collect();
    if control_plane.is_empty() && !nodes.is_empty() {
        cx.error(
            "no-control-plane",
            &cp,
            "the cluster has no control-plane node".into(),
            Some("give one profile `role: control-plane` and use it for one or three nodes".into()),
        );
    }
    let endpoint = match &c.control_plane_endpoint {
        Some(text) => parse_addr(cx, text, &cp.key("control_plane_endpoint"), AddrUse::Host),
        None => control_plane.first().map(|&i| nodes[i].address),
    };
    Some(model::Cluster {
        name: c.name.clone(),
        kubernetes_version: version?,
        pod_subnet: pods?,
        service_subnet: services?,
        node_mask: c.node_mask,
        dns_domain: c.dns_domain.clone(),
        max_pods: c.max_pods,
        join_token: token?,
        endpoint: endpoint?,
        control_plane,
    })
}

fn validate_site(cx: &mut Ctx<'_>, s: &raw::Site) -> Option<model::Site> {
    check_label(cx, &s.name, &path!["site", "name"], "site name");
    if s.domain.is_empty() || !s.domain.trim_end_matches('.').split('.').all(is_dns_label) {
        cx.error(
            "invalid-name",
            &path!["site", "domain"],
            format!("`{}` is not a valid DNS domain", s.domain),
            Some("use lower-case DNS labels separated by dots".into()),
        );
    }
    let p = &s.provisioning;
    let base = path!["site", "provisioning"];
    if p.interface.is_empty() || p.interface.len() > 15 || p.interface.contains(['/', ' ']) {
        cx.error(
            "invalid-interface",
            &base.key("interface"),
            format!("`{}` is not a Linux interface name", p.interface),
            Some("at most 15 characters, no '/' or spaces".into()),
        );
    }
    let prefix = parse_prefix(cx, &p.prefix, &base.key("prefix"));
    let router = parse_addr(cx, &p.router, &base.key("router"), AddrUse::Gateway);
    if let (Some(net), Some(r)) = (prefix, router) {
        check_gateway(cx, r, net, &base.key("router"));
    }
    let dns: Vec<Ipv6Addr> = p
        .dns
        .iter()
        .enumerate()
        .filter_map(|(i, a)| parse_addr(cx, a, &base.key("dns").index(i), AddrUse::Server))
        .collect();
    if p.dns.len() > MAX_DNS_SERVERS {
        cx.error(
            "too-many-dns-servers",
            &base.key("dns").index(MAX_DNS_SERVERS),
            format!("{} DNS servers; at most {MAX_DNS_SERVERS}", p.dns.len()),
            Some("resolvers use the first three; RAs and DHCPv6 carry every one to every node".into()),
        );
    }
    let ntp: Vec<Ipv6Addr> = p
        .ntp
        .iter()
        .enumerate()
        .filter_map(|(i, a)| parse_addr(cx, a, &base.key("ntp").index(i), AddrUse::Server))
        .collect();
    if !(1280..=65535).contains(&p.mtu) {
        cx.error(
            "invalid-mtu",
            &base.key("mtu"),
            format!("MTU {} is outside 1280..=65535", p.mtu),
            Some("IPv6 needs at least 1280 (RFC 8200)".into()),
        );
    }
    let ra = &p.router_advertisements;
    let rab = base.key("router_advertisements");
    if !(4..=1800).contains(&ra.max_interval) {
        cx.error(
            "invalid-ra",
            &rab.key("max_interval"),
            format!("{} s is outside 4..=1800 (RFC 4861)", ra.max_interval),
            None,
        );
    }
    if ra.router_lifetime != 0 && !(ra.max_interval..=9000).contains(&ra.router_lifetime) {
        cx.error(
            "invalid-ra",
            &rab.key("router_lifetime"),
            format!(
                "router lifetime {} s must be 0 or between max_interval ({}) and 9000 (RFC 4861)",
                ra.router_lifetime, ra.max_interval
            ),
            None,
        );
    }
    if ra.enabled && ra.router_lifetime == 0 {
        cx.warn(
            "slow-firmware-boot",
            &rab.key("router_lifetime"),
            "router lifetime 0 makes OVMF wait 12-13 s longer per HTTPv6 boot".into(),
            Some("keep 0 only if the nodes must not get a default route from the boot server".into()),
        );
    }
    if let Some(net) = prefix.filter(|n| ra.enabled && ra.autonomous && n.prefix_len() != 64) {
        cx.error(
            "slaac-needs-64",
            &rab.key("autonomous"),
            format!("SLAAC (autonomous: true) needs a /64, the prefix is /{}", net.prefix_len()),
            Some("set autonomous: false and let DHCPv6 assign addresses".into()),
        );
    }

    let bs = &s.boot_server;
    let bsp = path!["site", "boot_server"];
    let boot_addr = parse_addr(cx, &bs.address, &bsp.key("address"), AddrUse::Host);
    if let (Some(a), Some(net)) = (boot_addr, prefix) {
        check_in_prefix(cx, a, net, &bsp.key("address"), false);
    }
    if bs.https_port == Some(bs.http_port) {
        cx.error(
            "port-clash",
            &bsp.key("https_port"),
            format!("HTTPS and HTTP cannot share port {}", bs.http_port),
            Some("serve HTTPS on its own port, e.g. 443".into()),
        );
    }
    for (port, key) in
        [(bs.http_port, "http_port"), (bs.tftp_port, "tftp_port"), (bs.https_port.unwrap_or(443), "https_port")]
    {
        if port == 0 {
            cx.error("invalid-port", &bsp.key(key), "port 0 is not a listening port".into(), None);
        }
    }
    let dhcp = validate_dhcp(cx, &s.dhcp, prefix);

    let mut segments = Vec::new();
    if let (Some(net), Some(r)) = (prefix, router) {
        segments.push(model::Segment {
            name: model::LOCAL_SEGMENT.into(),
            prefix: net,
            router: r,
            link_address: None,
            host_offset: p.host_offset,
        });
    }
    let mut names: HashMap<String, Path> = HashMap::new();
    names.insert(model::LOCAL_SEGMENT.into(), base.clone());
    for (i, r) in s.relays.iter().enumerate() {
        let rp = path!["site", "relays", i];
        if check_label(cx, &r.name, &rp.key("name"), "segment name") {
            cx.unique(
                &mut names,
                r.name.clone(),
                rp.key("name"),
                "duplicate-name",
                format!("segment name `{}`", r.name),
                "give each relayed segment its own name",
            );
        }
        let net = parse_prefix(cx, &r.prefix, &rp.key("prefix"));
        if let Some(n) = net {
            for seg in &segments {
                if seg.prefix.contains(&n.network()) || n.contains(&seg.prefix.network()) {
                    cx.error(
                        "overlapping-prefix",
                        &rp.key("prefix"),
                        format!("{n} overlaps {} of segment `{}`", seg.prefix, seg.name),
                        Some("each segment needs its own prefix".into()),
                    );
                }
            }
        }
        let link = parse_addr(cx, &r.link_address, &rp.key("link_address"), AddrUse::Host);
        let gw = parse_addr(cx, &r.router, &rp.key("router"), AddrUse::Gateway);
        if let (Some(n), Some(l)) = (net, link) {
            check_in_prefix(cx, l, n, &rp.key("link_address"), false);
        }
        if let (Some(n), Some(g)) = (net, gw) {
            check_gateway(cx, g, n, &rp.key("router"));
        }
        if let (Some(n), Some(g), Some(l)) = (net, gw, link) {
            segments.push(model::Segment {
                name: r.name.clone(),
                prefix: n,
                router: g,
                link_address: Some(l),
                host_offset: r.host_offset,
            });
        }
    }
    for (i, key) in s.ssh_authorized_keys.iter().enumerate() {
        let mut parts = key.split_whitespace();
        let kind = parts.next().unwrap_or("");
        let blob = parts.next().unwrap_or("");
        let known = matches!(
            kind,
            "ssh-ed25519"
                | "ssh-rsa"
                | "ecdsa-sha2-nistp256"
                | "ecdsa-sha2-nistp384"
                | "ecdsa-sha2-nistp521"
                | "sk-ssh-ed25519@openssh.com"
                | "sk-ecdsa-sha2-nistp256@openssh.com"
        );
        let b64 = blob.len() >= 16 && blob.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if !known || !b64 || key.contains('\n') {
            cx.error(
                "invalid-ssh-key",
                &path!["site", "ssh_authorized_keys", i],
                "not an OpenSSH public key".into(),
                Some("paste one line of a .pub file: `ssh-ed25519 AAAA... comment` (never a private key)".into()),
            );
            // The value may be a private key pasted by mistake: do not show it.
            cx.diags.redact_last();
        }
    }
    Some(model::Site {
        name: s.name.clone(),
        domain: s.domain.trim_end_matches('.').to_owned(),
        interface: p.interface.clone(),
        dns,
        ntp,
        mtu: p.mtu,
        router_advertisements: ra.clone(),
        boot_server: model::BootServer {
            address: boot_addr?,
            http_port: bs.http_port,
            tftp_port: bs.tftp_port,
            https_port: bs.https_port,
            https_ca: bs.https_ca.as_ref().map(std::path::PathBuf::from),
        },
        dhcp: dhcp?,
        segments,
        ssh_authorized_keys: s.ssh_authorized_keys.clone(),
    })
}

fn check_gateway(cx: &mut Ctx<'_>, gw: Ipv6Addr, net: Ipv6Net, path: &Path) {
    if gw.is_unicast_link_local() {
        return;
    }
    if !net.contains(&gw) {
        cx.error(
            "gateway-not-on-link",
            path,
            format!("gateway {gw} is not on-link: it is outside {net}"),
            Some(format!("use the router's address in {net} or its link-local address")),
        );
        return;
    }
    check_in_prefix(cx, gw, net, path, false);
}

fn validate_dhcp(cx: &mut Ctx<'_>, d: &raw::Dhcp, prefix: Option<Ipv6Net>) -> Option<model::Dhcp> {
    let dp = path!["site", "dhcp"];
    let t1 = d.t1.unwrap_or(d.preferred_lifetime / 2);
    let t2 = d.t2.unwrap_or(d.preferred_lifetime / 5 * 4);
    let mut ok = true;
    if d.valid_lifetime == 0 || d.preferred_lifetime > d.valid_lifetime {
        cx.error(
            "invalid-lifetimes",
            &dp.key("preferred_lifetime"),
            format!(
                "preferred lifetime {} must be at most the valid lifetime {} (and valid > 0)",
                d.preferred_lifetime, d.valid_lifetime
            ),
            Some("RFC 8415 §21.6".into()),
        );
        ok = false;
    }
    if t1 > t2 || t2 > d.preferred_lifetime {
        let at = if d.t2.is_some() { "t2" } else { "t1" };
        cx.error(
            "invalid-lifetimes",
            &dp.key(at),
            format!("need t1 ≤ t2 ≤ preferred lifetime, have {t1} / {t2} / {}", d.preferred_lifetime),
            Some("RFC 8415 §21.4".into()),
        );
        ok = false;
    }
    let mut pool = None;
    if let Some(p) = &d.dynamic_pool {
        let pp = dp.key("dynamic_pool");
        let start = parse_addr(cx, &p.start, &pp.key("start"), AddrUse::Host);
        let end = parse_addr(cx, &p.end, &pp.key("end"), AddrUse::Host);
        if let (Some(s), Some(e), Some(net)) = (start, end, prefix) {
            let in_net = check_in_prefix(cx, s, net, &pp.key("start"), false)
                & check_in_prefix(cx, e, net, &pp.key("end"), false);
            if in_net && s > e {
                cx.error("invalid-pool", &pp.key("end"), format!("pool end {e} is before its start {s}"), None);
            }
            pool = Some((s, e));
        }
        ok &= pool.is_some();
    }
    let mut trusted_relays = Vec::with_capacity(d.trusted_relays.len());
    for (i, text) in d.trusted_relays.iter().enumerate() {
        match parse_addr(cx, text, &dp.key("trusted_relays").index(i), AddrUse::Host) {
            Some(a) => trusted_relays.push(a),
            None => ok = false,
        }
    }
    ok.then_some(model::Dhcp {
        preferred_lifetime: d.preferred_lifetime,
        valid_lifetime: d.valid_lifetime,
        t1,
        t2,
        dynamic_pool: pool,
        trusted_relays,
    })
}

fn validate_profiles(cx: &mut Ctx<'_>, raw: &raw::Inventory) -> BTreeMap<String, model::Profile> {
    let mut out = BTreeMap::new();
    for (name, p) in &raw.profiles {
        let pp = path!["profiles", name];
        if p.image.is_empty() || !p.image.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            cx.error(
                "invalid-name",
                &pp.key("image"),
                format!("`{}` is not an image recipe name", p.image),
                Some("name a recipe in images/ without the .yaml extension".into()),
            );
        }
        if let Some(s) = &p.sysctl {
            check_ref(cx, s, raw.sysctl_profiles.keys(), &pp.key("sysctl"), "sysctl_profiles");
        }
        if let Some(b) = &p.bios {
            check_ref(cx, b, raw.bios_profiles.keys(), &pp.key("bios"), "bios_profiles");
        }
        if let Some(f) = &p.firmware {
            check_ref(cx, f, raw.firmware_baselines.keys(), &pp.key("firmware"), "firmware_baselines");
        }
        if p.https {
            if !matches!(p.boot, raw::BootMethod::UefiHttp | raw::BootMethod::DhcpLessHttp) {
                cx.error(
                    "https-boot-method",
                    &pp.key("https"),
                    format!("`https: true` needs UEFI HTTP boot, not `{}`", p.boot.name()),
                    Some(
                        "use `boot: uefi-http` (PXE fetches over TFTP; Debian's iPXE has no HTTPS); or drop `https`"
                            .into(),
                    ),
                );
            }
            if p.firmware.is_some() && p.bios.is_none() {
                cx.error(
                    "https-needs-bios",
                    &pp.key("https"),
                    "a Dell node that boots over HTTPS needs a BIOS profile".into(),
                    Some("name one under `bios:`: its step sets HttpDev1TlsMode and gives the BIOS the CA".into()),
                );
            }
            if p.bios.is_some() && raw.site.boot_server.https_ca.is_none() {
                cx.error(
                    "missing-https-ca",
                    &pp.key("https"),
                    "a Dell node that boots over HTTPS must be given the CA to trust".into(),
                    Some(
                        "set `site.boot_server.https_ca` to the CA's PEM file: apply puts it into the BIOS's HTTP \
                         boot certificates"
                            .into(),
                    ),
                );
            }
            if raw.site.boot_server.https_port.is_none() {
                cx.error(
                    "missing-https-port",
                    &pp.key("https"),
                    "`https: true` needs `site.boot_server.https_port`".into(),
                    Some("add `https_port: 443` (or another port) under site.boot_server".into()),
                );
            }
        }
        if p.boot == raw::BootMethod::DhcpLessHttp {
            let has_http =
                p.bios.as_ref().and_then(|b| raw.bios_profiles.get(b)).is_some_and(|b| b.http_boot.is_some());
            if !has_http {
                cx.error(
                    "missing-http-boot",
                    &pp.key("boot"),
                    "`dhcp-less-http` needs a BIOS profile with `http_boot`".into(),
                    Some("set `bios:` to a bios_profiles entry that has an `http_boot:` section".into()),
                );
            }
        }
        out.insert(
            name.clone(),
            model::Profile {
                role: p.role,
                boot: p.boot,
                image: p.image.clone(),
                sysctl: p.sysctl.clone(),
                bios: p.bios.clone(),
                firmware: p.firmware.clone(),
                https: p.https,
            },
        );
    }
    out
}

fn validate_bios(cx: &mut Ctx<'_>, profiles: &BTreeMap<String, raw::BiosProfile>) {
    for (name, b) in profiles {
        for attr in b.attributes.keys() {
            if attr.is_empty() || !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                cx.error(
                    "invalid-attribute",
                    &path!["bios_profiles", name, "attributes", attr],
                    format!("`{attr}` is not a BIOS attribute name"),
                    Some("Dell attribute names are letters and digits, e.g. SysProfile".into()),
                );
            }
        }
        if let Some(uri) = b.http_boot.as_ref().and_then(|h| h.uri.as_ref()) {
            check_url(cx, uri, &path!["bios_profiles", name, "http_boot", "uri"], &["http", "https"]);
        }
    }
}

fn validate_firmware(
    cx: &mut Ctx<'_>,
    baselines: &BTreeMap<String, raw::FirmwareBaseline>,
) -> BTreeMap<String, model::FirmwareBaseline> {
    let mut out = BTreeMap::new();
    for (name, fb) in baselines {
        let bp = path!["firmware_baselines", name];
        let mut components = Vec::new();
        for (i, c) in fb.components.iter().enumerate() {
            let cp = bp.key("components").index(i);
            let version = c.version.parse::<Version>();
            if version.is_err() {
                cx.error(
                    "invalid-version",
                    &cp.key("version"),
                    format!("`{}` is not a dotted version", c.version),
                    Some("write numbers separated by dots, e.g. 1.8.2".into()),
                );
            }
            check_url(cx, &c.image_url, &cp.key("image_url"), &["http", "https"]);
            if let Some(h) = &c.sha256
                && (h.len() != 64 || !h.chars().all(|ch| ch.is_ascii_hexdigit()))
            {
                cx.error("invalid-sha256", &cp.key("sha256"), "a SHA-256 is 64 hex digits".into(), None);
            }
            if let Ok(v) = version {
                components.push(model::FirmwareComponent {
                    kind: c.kind,
                    name: c.name.clone(),
                    version: v,
                    image_url: c.image_url.clone(),
                    sha256: c.sha256.clone(),
                });
            }
        }
        for (i, g) in fb.gates.iter().enumerate() {
            if g.min_version.parse::<Version>().is_err() {
                cx.error(
                    "invalid-version",
                    &bp.key("gates").index(i).key("min_version"),
                    format!("`{}` is not a dotted version", g.min_version),
                    Some("write numbers separated by dots, e.g. 1.8.2".into()),
                );
            }
        }
        out.insert(name.clone(), model::FirmwareBaseline { components, gates: fb.gates.clone() });
    }
    out
}

fn validate_sysctls(cx: &mut Ctx<'_>, profiles: &BTreeMap<String, BTreeMap<String, raw::SysctlValue>>) {
    for (name, values) in profiles {
        for key in values.keys() {
            let ok = key.contains('.')
                && !key.starts_with('.')
                && !key.ends_with('.')
                && !key.contains("..")
                && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                cx.error(
                    "invalid-sysctl",
                    &path!["sysctl_profiles", name, key],
                    format!("`{key}` is not a sysctl name"),
                    Some("write it dotted, as `sysctl -a` prints it, e.g. net.core.somaxconn".into()),
                );
            }
        }
    }
}

fn check_unused_profiles(cx: &mut Ctx<'_>, raw: &raw::Inventory) {
    for name in raw.profiles.keys() {
        if !raw.nodes.iter().any(|n| &n.profile == name) {
            cx.warn("unused-profile", &path!["profiles", name], format!("profile `{name}` is used by no node"), None);
        }
    }
}

fn validate_nodes(cx: &mut Ctx<'_>, raw: &raw::Inventory, site: &model::Site) -> Vec<model::Node> {
    let mut names: HashMap<String, Path> = HashMap::new();
    let mut macs: HashMap<MacAddr, Path> = HashMap::new();
    let mut duids: HashMap<Duid, Path> = HashMap::new();
    let mut bmcs: HashMap<String, Path> = HashMap::new();
    let mut addrs: HashMap<Ipv6Addr, Path> = HashMap::new();
    // Infrastructure addresses first, so a node colliding with the router is reported at the node.
    addrs.insert(site.boot_server.address, path!["site", "boot_server", "address"]);
    for (i, seg) in site.segments.iter().enumerate() {
        let p = if i == 0 { path!["site", "provisioning", "router"] } else { path!["site", "relays", i - 1, "router"] };
        addrs.entry(seg.router).or_insert(p);
    }
    let mut out = Vec::with_capacity(raw.nodes.len());
    for (i, n) in raw.nodes.iter().enumerate() {
        let np = path!["nodes", i];
        let mut ok = check_label(cx, &n.name, &np.key("name"), "node name");
        if ok {
            cx.unique(
                &mut names,
                n.name.clone(),
                np.key("name"),
                "duplicate-name",
                format!("node name `{}`", n.name),
                "node names must be unique",
            );
        }
        ok &= check_ref(cx, &n.profile, raw.profiles.keys(), &np.key("profile"), "profiles");
        let segment = match &n.segment {
            // The provisioning link is segment 0, absent only when its prefix was invalid
            // (already reported).
            None => (!site.segments.is_empty()).then_some(0),
            Some(s) => {
                let idx = site.segments.iter().position(|seg| &seg.name == s);
                if idx.is_none() {
                    let names: Vec<&str> = site.segments.iter().skip(1).map(|s| s.name.as_str()).collect();
                    let hint = did_you_mean(s, &names).map_or_else(
                        || {
                            if names.is_empty() {
                                "site.relays defines no segments; omit `segment:` for the provisioning link".to_owned()
                            } else {
                                format!("site.relays defines: {}", names.join(", "))
                            }
                        },
                        |m| format!("did you mean `{m}`?"),
                    );
                    cx.error(
                        "unknown-reference",
                        &np.key("segment"),
                        format!("segment `{s}` is not defined in `site.relays`"),
                        Some(hint),
                    );
                }
                idx
            }
        };
        let index = n.index.unwrap_or(i as u64);
        let address = segment.and_then(|s| site.segments.get(s)).and_then(|seg| node_address(cx, n, index, seg, &np));
        if let Some(a) = address {
            let (at, how) = if n.address.is_some() { (np.key("address"), "") } else { (np.clone(), " (allocated)") };
            cx.unique(
                &mut addrs,
                a,
                at,
                "duplicate-address",
                format!("address {a}{how}"),
                "nodes, routers and the boot server each need their own address; \
                 a node without `address:` gets prefix + host_offset + index",
            );
        }
        let nics = validate_nics(cx, n, &np, &mut macs);
        let boot_nic = boot_nic(cx, &n.nics, &np);
        let mut node_duids = Vec::new();
        for (j, d) in n.duids.iter().enumerate() {
            let dp = np.key("duids").index(j);
            match d.parse::<Duid>() {
                Ok(duid) => {
                    cx.unique(
                        &mut duids,
                        duid.clone(),
                        dp,
                        "duplicate-duid",
                        format!("DUID {duid}"),
                        "a DUID identifies one node; remove it from one of them",
                    );
                    node_duids.push(duid);
                }
                Err(e) => cx.error("invalid-duid", &dp, e.to_string(), Some(duid_hint(&e))),
            }
        }
        let bmc = n.bmc.as_ref().and_then(|b| validate_bmc(cx, b, &np.key("bmc"), &mut bmcs));
        let disk = validate_disk(cx, &n.disk, &np.key("disk"));
        check_dell_boot_url(cx, raw, n, site, &np);
        for key in n.labels.keys() {
            if key.is_empty()
                || key.len() > 63
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            {
                cx.error(
                    "invalid-label",
                    &np.key("labels").key(key),
                    format!("`{key}` is not a label key"),
                    Some("use letters, digits, '-', '_', '.', '/' (Kubernetes label syntax)".into()),
                );
            }
        }
        let (Some(segment), Some(address), Some(nics), Some(boot_nic), Some(disk)) =
            (segment, address, nics, boot_nic, disk)
        else {
            continue;
        };
        if !ok || (n.bmc.is_some() && bmc.is_none()) {
            continue;
        }
        out.push(model::Node {
            name: n.name.clone(),
            fqdn: format!("{}.{}", n.name, site.domain),
            index,
            profile: n.profile.clone(),
            segment,
            address,
            address_source: if n.address.is_some() { AddressSource::Explicit } else { AddressSource::Allocated },
            bmc,
            nics,
            boot_nic,
            duids: node_duids,
            disk,
            labels: n.labels.clone(),
        });
    }
    out
}

fn node_address(cx: &mut Ctx<'_>, n: &raw::Node, index: u64, seg: &model::Segment, np: &Path) -> Option<Ipv6Addr> {
    if let Some(text) = &n.address {
        let a = parse_addr(cx, text, &np.key("address"), AddrUse::Host)?;
        return check_in_prefix(cx, a, seg.prefix, &np.key("address"), false).then_some(a);
    }
    let at = if n.index.is_some() { np.key("index") } else { np.key("name") };
    let host = u128::from(seg.host_offset) + u128::from(index);
    if host > u128::from(seg.prefix.hostmask()) {
        cx.error(
            "allocation-overflow",
            &at,
            format!("index {index} + host_offset {} does not fit in {}", seg.host_offset, seg.prefix),
            Some("set `address:` or a smaller `index:`".into()),
        );
        return None;
    }
    let a = Ipv6Addr::from(u128::from(seg.prefix.network()) | host);
    check_in_prefix(cx, a, seg.prefix, &at, true).then_some(a)
}

fn validate_nics(
    cx: &mut Ctx<'_>,
    n: &raw::Node,
    np: &Path,
    macs: &mut HashMap<MacAddr, Path>,
) -> Option<Vec<model::Nic>> {
    if n.nics.is_empty() {
        cx.error(
            "no-nics",
            &np.key("nics"),
            format!("node `{}` has no NICs", n.name),
            Some("list at least the NIC it netboots from, with its MAC".into()),
        );
        return None;
    }
    let mut names: HashMap<&str, Path> = HashMap::new();
    let mut out = Vec::new();
    for (j, nic) in n.nics.iter().enumerate() {
        let p = np.key("nics").index(j);
        if let Some(first) = names.get(nic.name.as_str()) {
            let line = cx.line_of(first);
            cx.error(
                "duplicate-name",
                &p.key("name"),
                format!("NIC name `{}` is already used by {first} (line {line})", nic.name),
                Some("NIC names must be unique within a node".into()),
            );
        } else {
            names.insert(&nic.name, p.key("name"));
        }
        let Some(mac_text) = &nic.mac else {
            let hint = if nic.bmc_id.is_some() {
                "run `metal6 bmc inventory --write-back NODE` to fill it in from the BMC, or write it here"
            } else {
                "write the MAC, or add `bmc_id` (e.g. NIC.Integrated.1-1-1) and run `metal6 bmc inventory --write-back`"
            };
            cx.error(
                "missing-mac",
                &p,
                format!("NIC `{}` of node `{}` has no MAC", nic.name, n.name),
                Some(hint.into()),
            );
            continue;
        };
        match mac_text.parse::<MacAddr>() {
            Ok(mac) => {
                cx.unique(
                    macs,
                    mac,
                    p.key("mac"),
                    "duplicate-mac",
                    format!("MAC {mac}"),
                    "every NIC has its own MAC; look for a copy-paste",
                );
                out.push(model::Nic { name: nic.name.clone(), mac, boot: nic.boot, bmc_id: nic.bmc_id.clone() });
            }
            Err(e) => {
                let hint = match e {
                    MacError::Malformed(_) => "write six hex pairs separated by ':', e.g. 52:54:00:12:34:56",
                    MacError::Multicast(_) | MacError::Zero(_) => {
                        "a NIC's own address is unicast and not zero; copy it from the NIC label or the BMC NIC inventory"
                    }
                };
                cx.error("invalid-mac", &p.key("mac"), e.to_string(), Some(hint.into()));
            }
        }
    }
    (out.len() == n.nics.len()).then_some(out)
}

fn boot_nic(cx: &mut Ctx<'_>, nics: &[raw::Nic], np: &Path) -> Option<usize> {
    let boot: Vec<usize> = nics.iter().enumerate().filter(|(_, n)| n.boot).map(|(i, _)| i).collect();
    match (boot.as_slice(), nics.len()) {
        ([one], _) => Some(*one),
        ([], 1) => Some(0),
        ([], 0) => None,
        ([], _) => {
            cx.error(
                "boot-nic",
                &np.key("nics"),
                "no NIC is marked `boot: true`".into(),
                Some("mark the NIC the node netboots from".into()),
            );
            None
        }
        ([_, second, ..], _) => {
            cx.error(
                "boot-nic",
                &np.key("nics").index(*second).key("boot"),
                "more than one NIC is marked `boot: true`".into(),
                Some("a node netboots from exactly one NIC".into()),
            );
            None
        }
    }
}

fn duid_hint(e: &DuidError) -> String {
    match e {
        DuidError::Malformed(_) => "write the DUID as hex bytes, e.g. 00:03:00:01:52:54:00:12:34:56".into(),
        _ => "copy the DUID from the server log or `metal6 status`".into(),
    }
}

fn validate_bmc(cx: &mut Ctx<'_>, b: &raw::Bmc, bp: &Path, seen: &mut HashMap<String, Path>) -> Option<model::Bmc> {
    let text = b.address.trim_start_matches('[').trim_end_matches(']');
    let host = match text.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => parse_addr(cx, text, &bp.key("address"), AddrUse::Host).map(BmcHost::Ipv6),
        Ok(IpAddr::V4(_)) => {
            cx.error(
                "ipv4-address",
                &bp.key("address"),
                format!("`{text}` is an IPv4 address; metal6 sites are IPv6-only"),
                Some("give the BMC's IPv6 address or a host name that resolves to it".into()),
            );
            None
        }
        Err(_)
            if !text.is_empty()
                && text.trim_end_matches('.').split('.').all(|l| is_dns_label(&l.to_ascii_lowercase())) =>
        {
            Some(BmcHost::Name(text.to_ascii_lowercase()))
        }
        Err(_) => {
            cx.error(
                "invalid-address",
                &bp.key("address"),
                format!("`{text}` is neither an IPv6 address nor a host name"),
                None,
            );
            None
        }
    };
    if let Some(h) = &host {
        let mut key = match h {
            BmcHost::Ipv6(a) => a.to_string(),
            BmcHost::Name(n) => n.clone(),
        };
        // One BMC may serve several nodes only as distinct systems of it.
        if let Some(sys) = &b.system {
            key = format!("{key}:{}/{sys}", b.port);
        }
        cx.unique(
            seen,
            key,
            bp.key("address"),
            "duplicate-bmc",
            format!("BMC `{text}`"),
            "each node has its own BMC, or its own `system` on a shared one",
        );
    }
    let password = parse_secret(
        cx,
        &b.password,
        &bp.key("password"),
        "the BMC password is written inline",
        "keep it out of the inventory: write `env:VARIABLE` or `file:/path/to/file`, and rotate the exposed password",
    );
    if b.username.is_empty() {
        cx.error("invalid-credentials", &bp.key("username"), "the BMC username is empty".into(), None);
    }
    if b.system.as_ref().is_some_and(|s| s.is_empty() || s.contains('/')) {
        cx.error(
            "invalid-bmc-system",
            &bp.key("system"),
            "a BMC system is named by its Id, e.g. `System.Embedded.1` or `2`".into(),
            Some("give the last part of the system's /redfish/v1/Systems/<Id> path".into()),
        );
    }
    Some(model::Bmc {
        host: host?,
        port: b.port,
        username: b.username.clone(),
        password: password?,
        system: b.system.clone(),
    })
}

fn validate_disk(cx: &mut Ctx<'_>, d: &raw::Disk, dp: &Path) -> Option<DiskSelector> {
    let given = [d.path.is_some(), d.serial.is_some(), d.size.is_some()].iter().filter(|x| **x).count();
    if given != 1 {
        cx.error(
            "disk-selector",
            dp,
            format!("give exactly one of `path`, `serial` or `size` (found {given})"),
            Some("`path: /dev/disk/by-path/...` is the most precise".into()),
        );
        return None;
    }
    if let Some(p) = &d.path {
        if !p.starts_with("/dev/") {
            cx.error(
                "disk-selector",
                &dp.key("path"),
                format!("`{p}` is not a device path"),
                Some("use /dev/..., e.g. /dev/disk/by-path/pci-0000:00:04.0".into()),
            );
            return None;
        }
        return Some(DiskSelector::Path(p.clone()));
    }
    if let Some(s) = &d.serial {
        return Some(DiskSelector::Serial(s.clone()));
    }
    let size = d.size.as_deref().unwrap_or_default();
    match parse_size(size) {
        Some(b) => Some(DiskSelector::MinSize(b)),
        None => {
            cx.error(
                "disk-selector",
                &dp.key("size"),
                format!("`{size}` is not a size"),
                Some("write a number and a unit: 480GB, 447GiB, 2TB".into()),
            );
            None
        }
    }
}

/// Dell firmware ignores URLs with a port (Dell KB 000286311): a Dell node that HTTP-boots
/// needs the boot server on port 80.
fn check_dell_boot_url(cx: &mut Ctx<'_>, raw: &raw::Inventory, n: &raw::Node, site: &model::Site, np: &Path) {
    let Some(p) = raw.profiles.get(&n.profile) else { return };
    let http = matches!(p.boot, raw::BootMethod::UefiHttp | raw::BootMethod::DhcpLessHttp);
    let dell = p.bios.is_some() || p.firmware.is_some();
    if http && dell && p.https && site.boot_server.https_port.is_some_and(|port| port != 443) {
        cx.warn(
            "boot-url-port",
            &np.key("profile"),
            format!(
                "node `{}` HTTPS-boots Dell firmware from port {}",
                n.name,
                site.boot_server.https_port.unwrap_or(443)
            ),
            Some("Dell BIOS rejects a port in the boot URL (KB 000286311); serve HTTPS on port 443".into()),
        );
    } else if http && dell && !p.https && site.boot_server.http_port != 80 {
        cx.warn(
            "boot-url-port",
            &np.key("profile"),
            format!("node `{}` HTTP-boots Dell firmware from port {}", n.name, site.boot_server.http_port),
            Some("Dell BIOS rejects a port in the DHCPv6 bootfile-url (KB 000286311); serve HTTP on port 80".into()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("480GB"), Some(480_000_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5TB"), Some(1_500_000_000_000));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("0GB"), None);
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("r750-01"));
        assert!(!is_dns_label("R750"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
