//! What to answer: the DHCPv6 decision engine.
//!
//! [`Engine::handle`] takes one client message (already unwrapped from any relays), the relay
//! path it came through, its source and the time, and returns a reply (or a reason to stay
//! silent), the binding changes to make durable first, and node events. It never touches a
//! socket or a clock.
//!
//! Rules that real firmware imposes (see docs/quirks.md and the shared OVMF notes):
//! - Status codes only at message level, never inside IA_NA (Debian's OVMF hangs on them);
//!   no address for an IA means the IA is left out and NoAddrsAvail goes at top level.
//! - Advertise carries Preference 255 so EDK2 requests at once instead of waiting ~4 s.
//! - HTTP boot clients get vendor class 16 with "HTTPClient" at data offset 6, and the
//!   bootfile-url (59) is the last option but one (bootfile-param may follow), never first.
//! - PXE clients are *not* sent vendor class "PXEClient" (EDK2 would go looking for a BINL
//!   server on port 4011).

use std::collections::HashMap;
use std::net::Ipv6Addr;

use metal6_inventory::ident::{Duid, MacAddr};
use metal6_inventory::identity::{Clues, Identifier, Via, eui64_mac};
use metal6_inventory::model::{BootMethod, Inventory, Node};
use metal6_inventory::plan;
use serde::Serialize;

use crate::bindings::{Binding, BindingKey, Bindings, Change};
use crate::wire::{self, ClientMsg, IaAddr, IaNa, MsgType, Opt, code, status};

/// IA_NAs answered per message. Real clients send one (OVMF, iPXE, dhclient, systemd); each
/// answered IA can become a durable binding, so a Solicit with thousands of IA_NAs must not
/// become thousands of journal records. The rest are left out of the reply.
pub const MAX_IAS_PER_MESSAGE: usize = 4;

/// Bindings one inventory node may hold (one per DUID and IAID: firmware, iPXE, installer and
/// the installed OS each bring their own). A further one evicts the node's oldest; every
/// binding of a node carries the same inventory address, so eviction takes nothing away
/// from a client that comes back: it gets the same address again.
pub const MAX_BINDINGS_PER_NODE: usize = 16;

/// Pool bindings (unknown clients, Advertise reservations included) held at once. With a
/// large pool range this, not the range, bounds the table.
pub const MAX_POOL_BINDINGS: usize = 65_536;

/// How long a declined pool address stays out of the pool (RFC 8415 §18.4.7: the server
/// marks it not available).
pub const DECLINE_HOLD_SECS: u64 = 3600;

/// Server-side settings that are not in the inventory.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our DUID (option 2).
    pub server_duid: Vec<u8>,
    /// Honour Rapid Commit (RFC 8415 §18.3.1).
    pub rapid_commit: bool,
}

/// One relay the message passed through, outermost (nearest to us) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHop {
    pub hop_count: u8,
    pub link_addr: Ipv6Addr,
    pub peer_addr: Ipv6Addr,
    pub interface_id: Option<Vec<u8>>,
    pub client_mac: Option<MacAddr>,
}

/// A client message and where it came from.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    pub msg: &'a ClientMsg,
    pub relays: &'a [RelayHop],
    /// Source address of the UDP packet (a relay's address when relayed).
    pub source: Ipv6Addr,
    /// Unix time, seconds.
    pub now: u64,
}

/// Which boot stage a client is, from what it says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// UEFI HTTP boot (vendor class "HTTPClient").
    FirmwareHttp,
    /// UEFI PXE (client architecture option, no "HTTPClient").
    FirmwarePxe,
    /// iPXE (user class "iPXE").
    Ipxe,
    /// metal6's installer (user class [`INSTALLER_USER_CLASS`]).
    Installer,
    /// Anything else: the installed OS, test clients.
    Os,
}

/// The user class (15) metal6's installer sends, so the server can tell it which node it is
/// and where its server is (option 60): the installer UKI is the same file for every node.
pub const INSTALLER_USER_CLASS: &[u8] = b"metal6-installer";

pub fn stage_of(msg: &ClientMsg) -> Stage {
    if msg.user_classes().iter().any(|u| u.as_slice() == b"iPXE") {
        return Stage::Ipxe;
    }
    if msg.user_classes().iter().any(|u| u.as_slice() == INSTALLER_USER_CLASS) {
        return Stage::Installer;
    }
    match msg.vendor_class() {
        Some((_, data)) if data.first().is_some_and(|d| d.starts_with(b"HTTPClient")) => Stage::FirmwareHttp,
        _ if msg.arch().is_some() => Stage::FirmwarePxe,
        _ => Stage::Os,
    }
}

/// Client architectures (RFC 4578 / IANA registry) whose installer we serve: x86-64 UEFI.
fn is_x64_uefi(arch: u16) -> bool {
    matches!(arch, 7 | 9 | 16)
}

/// Why a message got no answer. Counted by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Silence {
    /// A server-to-client message type, or a type we do not serve.
    NotForServers,
    /// Required options missing or forbidden ones present (RFC 8415 §16).
    Invalid,
    /// Addressed to another server (Server Identifier is not ours).
    OtherServer,
    /// Not in the inventory and no dynamic pool.
    UnknownClient,
    /// A known node on a link where its address does not belong.
    WrongLink,
    /// Confirm without addresses, or addresses we cannot judge.
    CannotJudge,
    /// A Relay-Forward from a source that is not one of `site.dhcp.trusted_relays`.
    UntrustedRelay,
    /// A node this server's inventory describes differently from the generation the servers
    /// sharing one state database serve (`Engine::refuse`).
    InventoryMismatch,
}

/// Something worth a line in the node's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// The node showed up with a DUID/IAID/stage it did not use last time.
    Identity {
        node: String,
        via: Via,
        duid: String,
        iaid: Option<u32>,
        stage: Stage,
        previous_duid: Option<String>,
    },
    Leased {
        node: String,
        addr: Ipv6Addr,
        duid: String,
        iaid: u32,
        stage: Stage,
        msg: MsgType,
    },
    Released {
        node: String,
        addr: Ipv6Addr,
        duid: String,
        iaid: u32,
    },
    /// The client says the address is in use by someone else on the link.
    Declined {
        node: String,
        addr: Ipv6Addr,
        duid: String,
    },
    WrongLink {
        node: String,
        link: Ipv6Addr,
    },
    UnsupportedArch {
        node: String,
        arch: u16,
    },
    /// A request from another NIC of a node; the inventory address belongs to the boot NIC.
    NonBootNic {
        node: String,
        mac: MacAddr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply { reply: ClientMsg, changes: Vec<Change>, events: Vec<Event> },
    Silent { why: Silence, events: Vec<Event> },
}

/// The decision engine for one inventory.
#[derive(Debug)]
pub struct Engine {
    inv: Inventory,
    id: Identifier,
    cfg: Config,
    domain_list: Vec<u8>,
    /// Last (DUID, stage) seen per node, to log identity changes once.
    last_identity: HashMap<usize, (Vec<u8>, Option<u32>, Stage)>,
    /// Nodes not to answer for (indexes into the inventory's nodes).
    refused: std::collections::HashSet<usize>,
    /// Several servers sharing one pool: this one hands out only every `n`th address from the
    /// `k`th on (`share_pool`), so servers never pick the same free address.
    pool_share: Option<(u128, u128)>,
}

impl Engine {
    pub fn new(inv: Inventory, cfg: Config) -> Self {
        let id = Identifier::new(&inv);
        let domain_list = wire::encode_domain_list(&[&inv.site.domain]);
        Engine {
            inv,
            id,
            cfg,
            domain_list,
            last_identity: HashMap::new(),
            refused: Default::default(),
            pool_share: None,
        }
    }

    /// Hands out new pool addresses only from this server's stripe of the pool: the `k`th of
    /// every `n` (`None`: all of it). A client keeps the address it holds whatever its stripe.
    pub fn share_pool(&mut self, share: Option<(usize, usize)>) {
        self.pool_share = share.filter(|(k, n)| *n > 1 && k < n).map(|(k, n)| (k as u128, n as u128));
    }

    /// Stops answering for the named nodes (replacing any earlier list): several servers share
    /// one state and another inventory generation describes these nodes differently, so an
    /// answer from this one could contradict theirs. Names not in this inventory are ignored
    /// (a node only the other generation has is unknown here anyway).
    pub fn refuse(&mut self, names: &[String]) {
        self.refused =
            self.inv.nodes.iter().enumerate().filter(|(_, n)| names.contains(&n.name)).map(|(i, _)| i).collect();
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    pub fn handle(&mut self, inc: &Incoming<'_>, bindings: &mut Bindings) -> Outcome {
        let m = inc.msg;
        let silent = |why| Outcome::Silent { why, events: Vec::new() };
        // A relay vouches for the client's link and MAC (option 79): only the relays the
        // operator named may, when they named any.
        let trusted = &self.inv.site.dhcp.trusted_relays;
        if !inc.relays.is_empty() && !trusted.is_empty() && !trusted.contains(&inc.source) {
            return silent(Silence::UntrustedRelay);
        }
        let has_client = m.client_id().is_some();
        let server_id = m.server_id();
        // RFC 8415 §16: which messages must / must not carry which identifiers.
        let valid = match m.msg_type {
            MsgType::Solicit | MsgType::Rebind | MsgType::Confirm => has_client && server_id.is_none(),
            MsgType::Request | MsgType::Renew | MsgType::Release | MsgType::Decline => {
                has_client && server_id.is_some()
            }
            MsgType::InformationRequest => true,
            _ => return silent(Silence::NotForServers),
        };
        if !valid {
            return silent(Silence::Invalid);
        }
        if server_id.is_some_and(|s| s != self.cfg.server_duid.as_slice()) {
            return silent(Silence::OtherServer);
        }
        let duid = m.client_id().map(|c| Duid::from_bytes(c.to_vec()));
        let duid = match duid {
            Some(Ok(d)) => Some(d),
            Some(Err(_)) => return silent(Silence::Invalid),
            None => None,
        };
        let segment = self.segment_for(inc);
        let innermost = inc.relays.last();
        let link_local_source = match innermost {
            Some(r) => Some(r.peer_addr).filter(Ipv6Addr::is_unicast_link_local),
            None => Some(inc.source).filter(Ipv6Addr::is_unicast_link_local),
        };
        let relay_mac = innermost.and_then(|r| r.client_mac);
        let clues = Clues { duid: duid.as_ref(), relay_mac, link_local_source, source: None };
        let stage = stage_of(m);
        let mut events = Vec::new();
        let node = self.id.identify(&clues);
        if let Some((idx, _)) = node
            && self.refused.contains(&idx)
        {
            return silent(Silence::InventoryMismatch);
        }
        if let Some((idx, via)) = node {
            let first_iaid = m.ia_nas().next().map(|ia| ia.iaid);
            self.note_identity(idx, via, duid.as_ref(), first_iaid, stage, &mut events);
            let n = &self.inv.nodes[idx];
            if Some(n.segment) != segment {
                let link = innermost.map_or(inc.source, |r| r.link_addr);
                events.push(Event::WrongLink { node: n.name.clone(), link });
                return Outcome::Silent { why: Silence::WrongLink, events };
            }
            // The sending NIC, when the packet tells: the relay's option 79 or an EUI-64 source.
            let sender = relay_mac.or_else(|| link_local_source.and_then(eui64_mac));
            if let Some(mac) = sender.filter(|mac| *mac != n.boot_mac() && self.id.node_by_mac(*mac) == Some(idx)) {
                events.push(Event::NonBootNic { node: n.name.clone(), mac });
            }
        } else if self.inv.site.dhcp.dynamic_pool.is_none() || segment != Some(0) {
            // Unknown clients get nothing unless a pool exists (pools serve the provisioning link).
            return silent(Silence::UnknownClient);
        }
        let node_idx = node.map(|(i, _)| i);
        let non_boot_nic = events.iter().any(|e| matches!(e, Event::NonBootNic { .. }));
        let mut out = Reply::new(m, &self.cfg.server_duid);
        let mut changes = Vec::new();
        let duid_bytes = m.client_id().unwrap_or_default().to_vec();
        match m.msg_type {
            MsgType::Solicit | MsgType::Request | MsgType::Renew | MsgType::Rebind => {
                let rapid = m.msg_type == MsgType::Solicit && self.cfg.rapid_commit && m.has(code::RAPID_COMMIT);
                let commit = m.msg_type != MsgType::Solicit || rapid;
                out.msg.msg_type =
                    if m.msg_type == MsgType::Solicit && !rapid { MsgType::Advertise } else { MsgType::Reply };
                let mut any = false;
                for ia in m.ia_nas().take(MAX_IAS_PER_MESSAGE) {
                    let key = BindingKey { duid: duid_bytes.clone(), iaid: ia.iaid };
                    let addr = match node_idx {
                        Some(_) if non_boot_nic => None,
                        Some(i) => Some(self.inv.nodes[i].address),
                        None => self.pool_address(&key, bindings, inc.now),
                    };
                    let Some(addr) = addr else { continue };
                    any = true;
                    out.push_ia(ia, addr, &self.inv, m.msg_type);
                    if commit {
                        let node_name = node_idx.map(|i| self.inv.nodes[i].name.clone());
                        let b = Binding {
                            key,
                            addr,
                            node: node_name.clone(),
                            expires: inc.now + u64::from(self.inv.site.dhcp.valid_lifetime),
                        };
                        if let Some(node) = &node_name {
                            changes.extend(evict_oldest(bindings, node, &b.key));
                        }
                        let change = Change::Upsert(b);
                        bindings.apply(&change);
                        changes.push(change);
                        if let Some(node) = node_name {
                            events.push(Event::Leased {
                                node,
                                addr,
                                duid: hex(&duid_bytes),
                                iaid: ia.iaid,
                                stage,
                                msg: m.msg_type,
                            });
                        }
                    } else if node_idx.is_none() {
                        // Advertise reserves nothing durable, but hand the same address to the
                        // same IA when its Request follows.
                        bindings.apply(&Change::Upsert(Binding { key, addr, node: None, expires: inc.now + 60 }));
                    }
                }
                if !any && m.ia_nas().next().is_some() {
                    out.status(status::NO_ADDRS_AVAIL, "no address for this client");
                }
                if rapid {
                    out.msg.opts.push(Opt::RapidCommit);
                }
                if out.msg.msg_type == MsgType::Advertise {
                    out.msg.opts.push(Opt::Preference(255));
                }
                self.config_options(&mut out, m, node_idx, stage, &mut events);
            }
            MsgType::Release | MsgType::Decline => {
                for ia in m.ia_nas().take(MAX_IAS_PER_MESSAGE) {
                    let key = BindingKey { duid: duid_bytes.clone(), iaid: ia.iaid };
                    let Some(b) = bindings.get(&key).cloned() else { continue };
                    let change = Change::Remove(key);
                    bindings.apply(&change);
                    changes.push(change);
                    if m.msg_type == MsgType::Decline && b.node.is_none() {
                        // Someone else uses this pool address: keep it out of the pool.
                        let hold = Change::Upsert(Binding {
                            key: declined_key(b.addr),
                            addr: b.addr,
                            node: None,
                            expires: inc.now + DECLINE_HOLD_SECS,
                        });
                        bindings.apply(&hold);
                        changes.push(hold);
                    }
                    if let Some(node) = b.node {
                        let duid = hex(&duid_bytes);
                        events.push(if m.msg_type == MsgType::Release {
                            Event::Released { node, addr: b.addr, duid, iaid: ia.iaid }
                        } else {
                            Event::Declined { node, addr: b.addr, duid }
                        });
                    }
                }
                out.msg.msg_type = MsgType::Reply;
                out.status(status::SUCCESS, "ok");
            }
            MsgType::Confirm => {
                let addrs: Vec<Ipv6Addr> = m.ia_nas().flat_map(ia_addrs).collect();
                if addrs.is_empty() {
                    return Outcome::Silent { why: Silence::CannotJudge, events };
                }
                let seg = segment.and_then(|s| self.inv.site.segments.get(s));
                let on_link = |a: &Ipv6Addr| match node_idx {
                    Some(i) => *a == self.inv.nodes[i].address,
                    None => seg.is_some_and(|s| s.prefix.contains(a)),
                };
                out.msg.msg_type = MsgType::Reply;
                if addrs.iter().all(on_link) {
                    out.status(status::SUCCESS, "on link");
                } else {
                    out.status(status::NOT_ON_LINK, "not on link");
                }
            }
            MsgType::InformationRequest => {
                out.msg.msg_type = MsgType::Reply;
                self.config_options(&mut out, m, node_idx, stage, &mut events);
            }
            _ => return Outcome::Silent { why: Silence::NotForServers, events },
        }
        Outcome::Reply { reply: out.finish(), changes, events }
    }

    /// The segment the client is on: the link of the relay nearest to it, or our own link.
    fn segment_for(&self, inc: &Incoming<'_>) -> Option<usize> {
        let Some(r) = inc.relays.last() else { return Some(0) };
        self.inv
            .site
            .segments
            .iter()
            .position(|s| s.link_address == Some(r.link_addr) || s.prefix.contains(&r.link_addr))
    }

    fn pool_address(&self, key: &BindingKey, bindings: &mut Bindings, now: u64) -> Option<Ipv6Addr> {
        let (start, end) = self.inv.site.dhcp.dynamic_pool?;
        if bindings.get(key).is_none() && bindings.pool_len() >= MAX_POOL_BINDINGS {
            bindings.prune_expired_now_and_then(now);
            if bindings.pool_len() >= MAX_POOL_BINDINGS {
                return None;
            }
        }
        let inv = &self.inv;
        let share = self.pool_share;
        let lo = u128::from(start);
        let reserved = |a: Ipv6Addr| {
            share.is_some_and(|(k, n)| u128::from(a).wrapping_sub(lo) % n != k)
                || a == inv.site.boot_server.address
                || inv.site.segments.iter().any(|s| s.router == a)
                || inv.nodes.iter().any(|n| n.address == a)
        };
        bindings.pool_address(key, start, end, now, &reserved)
    }

    fn note_identity(
        &mut self,
        idx: usize,
        via: Via,
        duid: Option<&Duid>,
        iaid: Option<u32>,
        stage: Stage,
        events: &mut Vec<Event>,
    ) {
        let bytes = duid.map(|d| d.0.clone()).unwrap_or_default();
        let current = (bytes.clone(), iaid, stage);
        let previous = self.last_identity.insert(idx, current.clone());
        if previous.as_ref() == Some(&current) {
            return;
        }
        events.push(Event::Identity {
            node: self.inv.nodes[idx].name.clone(),
            via,
            duid: hex(&bytes),
            iaid,
            stage,
            previous_duid: previous.filter(|p| p.0 != bytes).map(|p| hex(&p.0)),
        });
    }

    /// Options besides addresses: netboot (16/59) for firmware, DNS/domain/NTP when asked.
    fn config_options(
        &self,
        out: &mut Reply,
        m: &ClientMsg,
        node: Option<usize>,
        stage: Stage,
        events: &mut Vec<Event>,
    ) {
        let oro = m.oro();
        let site = &self.inv.site;
        // Firmware needs DNS only for a hostname boot URL, and ours are IPv6 literals; the
        // layout proven on OVMF has no option 23 (shared notes, OVMF §1).
        let firmware = matches!(stage, Stage::FirmwareHttp | Stage::FirmwarePxe);
        if !firmware && oro.contains(&code::DNS_SERVERS) && !site.dns.is_empty() {
            out.msg.opts.push(Opt::DnsServers(site.dns.clone()));
        }
        if !firmware && oro.contains(&code::DOMAIN_LIST) {
            out.msg.opts.push(Opt::DomainList(self.domain_list.clone()));
        }
        if !firmware && oro.contains(&code::NTP_SERVER) && !site.ntp.is_empty() {
            out.msg.opts.push(Opt::NtpServers(site.ntp.clone()));
        }
        let Some(n) = node.map(|i| &self.inv.nodes[i]) else { return };
        if stage == Stage::Installer {
            if oro.contains(&code::BOOTFILE_PARAM) {
                out.msg.opts.push(Opt::BootfileParam(self.node_params(n)));
            }
            return;
        }
        if let Some(arch) = m.arch().filter(|a| !is_x64_uefi(*a)) {
            events.push(Event::UnsupportedArch { node: n.name.clone(), arch });
            return;
        }
        if let Some(url) = self.bootfile_url(n, stage) {
            if stage == Stage::FirmwareHttp {
                out.msg.opts.push(Opt::VendorClass { enterprise: 343, data: vec![b"HTTPClient".to_vec()] });
            }
            out.msg.opts.push(Opt::BootfileUrl(url));
            // RFC 5970 parameters for the boot file, when asked for: which node this is and
            // where its server is, so a generic boot image (iPXE script, installer) need not
            // guess. After option 59, which EDK2 reads as a C string (notes §3). Never to PXE
            // firmware: EDK2's PxeBcExtractBootFileParam reads the first parameter as the boot
            // file size (1-5 digits, 512-byte units) and aborts the boot on anything else.
            if oro.contains(&code::BOOTFILE_PARAM) && stage != Stage::FirmwarePxe {
                out.msg.opts.push(Opt::BootfileParam(self.node_params(n)));
            }
        }
    }

    /// Option 60's parameters: which node this is and where its server is, and for a node on
    /// a relayed segment the router to reach it through (DHCPv6 has no route option, and a
    /// leased /128 puts nothing on-link: without it the installer would look for the server
    /// as a neighbour on the segment).
    fn node_params(&self, n: &Node) -> Vec<Vec<u8>> {
        let server = self.inv.server_base(n);
        let mut params =
            vec![format!("metal6.node={}", n.name).into_bytes(), format!("metal6.server={server}").into_bytes()];
        if n.segment != 0 {
            params.push(format!("metal6.gateway={}", self.inv.segment_of(n).router).into_bytes());
        }
        params
    }

    /// The URL a boot stage of this node gets, if its boot method uses that stage.
    fn bootfile_url(&self, n: &Node, stage: Stage) -> Option<String> {
        let boot = plan::boot_url(&self.inv, n);
        match (stage, boot.method) {
            (Stage::Ipxe, _) => boot
                .script_url
                .or_else(|| Some(format!("{}v1/nodes/{}/ipxe", self.inv.site.boot_server.http_base(), n.name))),
            (Stage::FirmwareHttp, BootMethod::UefiHttp | BootMethod::DhcpLessHttp | BootMethod::Ipxe) => Some(boot.url),
            (Stage::FirmwarePxe, BootMethod::Pxe) => Some(boot.url),
            _ => None,
        }
    }
}

/// Makes room for `key` among `node`'s bindings: when the node already holds
/// [`MAX_BINDINGS_PER_NODE`] others, its oldest (earliest expiry) goes.
fn evict_oldest(bindings: &mut Bindings, node: &str, key: &BindingKey) -> Option<Change> {
    if bindings.get(key).is_some() {
        return None;
    }
    let held: Vec<&Binding> = bindings.of_node(node).collect();
    if held.len() < MAX_BINDINGS_PER_NODE {
        return None;
    }
    let oldest = held.iter().min_by_key(|b| (b.expires, &b.key))?.key.clone();
    let change = Change::Remove(oldest);
    bindings.apply(&change);
    Some(change)
}

/// The placeholder that holds a declined pool address: no client's DUID starts with a zero
/// type of length 8 followed by our tag, so it can collide with no real binding.
fn declined_key(addr: Ipv6Addr) -> BindingKey {
    BindingKey { duid: [&b"\0\0declined"[..], &addr.octets()].concat(), iaid: 0 }
}

fn ia_addrs(ia: &IaNa) -> impl Iterator<Item = Ipv6Addr> + '_ {
    ia.opts.iter().filter_map(|o| if let Opt::IaAddr(a) = o { Some(a.addr) } else { None })
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A reply under construction; options are ordered as firmware needs them.
struct Reply {
    msg: ClientMsg,
    status: Option<(u16, &'static str)>,
}

impl Reply {
    fn new(m: &ClientMsg, server_duid: &[u8]) -> Self {
        let mut opts = Vec::with_capacity(8);
        if let Some(c) = m.client_id() {
            opts.push(Opt::ClientId(c.to_vec()));
        }
        opts.push(Opt::ServerId(server_duid.to_vec()));
        Reply { msg: ClientMsg { msg_type: MsgType::Reply, xid: m.xid, opts }, status: None }
    }

    /// One IA_NA with one address. No status code inside (Debian OVMF hang). Addresses the
    /// client asked for that are not its address are returned with zero lifetimes (RFC 8415
    /// §18.3.4) on Renew/Rebind so it stops using them.
    fn push_ia(&mut self, ia: &IaNa, addr: Ipv6Addr, inv: &Inventory, t: MsgType) {
        let d = &inv.site.dhcp;
        let mut opts =
            vec![Opt::IaAddr(IaAddr { addr, preferred: d.preferred_lifetime, valid: d.valid_lifetime, opts: vec![] })];
        if matches!(t, MsgType::Renew | MsgType::Rebind) {
            for old in ia_addrs(ia).filter(|a| *a != addr) {
                opts.push(Opt::IaAddr(IaAddr { addr: old, preferred: 0, valid: 0, opts: vec![] }));
            }
        }
        self.msg.opts.push(Opt::IaNa(IaNa { iaid: ia.iaid, t1: d.t1, t2: d.t2, opts }));
    }

    fn status(&mut self, code: u16, text: &'static str) {
        self.status = Some((code, text));
    }

    fn finish(mut self) -> ClientMsg {
        if let Some((c, t)) = self.status {
            // Top level, right after the IAs and before Preference and the netboot options.
            let at =
                self.msg.opts.iter().rposition(|o| matches!(o, Opt::IaNa(_) | Opt::ServerId(_))).map_or(0, |i| i + 1);
            self.msg.opts.insert(at, Opt::StatusCode(c, t.to_owned()));
        }
        self.msg
    }
}
