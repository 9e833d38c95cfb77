//! `metal6 dhcp6 probe`: a DHCPv6 client for diagnostics.
//!
//! Asks a server what a given kind of client would get — UEFI HTTP firmware, PXE firmware,
//! an OS — directly or as a relay agent (optionally adding RFC 6939 option 79), and prints the
//! decoded answer. `--clients N` runs N distinct clients through Solicit/Request and records
//! every acknowledged address as a JSON line the moment its Reply arrives (load and crash
//! tests use this to check that no acknowledged lease is lost). `--garbage N` sends N
//! malformed messages first (the server must drop and count them, and keep answering).

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use metal6_dhcp6::wire::{self, ClientMsg, IaNa, Message, MsgType, Opt, RelayMsg};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// OVMF HttpBootDxe: arch 16, vendor class HTTPClient, ORO {59, 60, 23, 16}.
    UefiHttp,
    /// UEFI PXEv6: arch 7, vendor class PXEClient.
    Pxe,
    /// iPXE: user class "iPXE".
    Ipxe,
    /// An operating system: ORO {23, 24}.
    Os,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DuidKind {
    Llt,
    Ll,
    En,
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Interface to send on (for link-local multicast to ff02::1:2).
    #[arg(long)]
    interface: String,
    /// Server address; default ff02::1:2 (all DHCP servers and relays) on the interface.
    #[arg(long)]
    server: Option<Ipv6Addr>,
    #[arg(long, default_value_t = 547)]
    port: u16,
    /// The client's MAC (goes into DUID-LLT/LL, and into option 79 with --relay-mac).
    #[arg(long)]
    mac: String,
    #[arg(long, value_enum, default_value_t = DuidKind::Llt)]
    duid: DuidKind,
    #[arg(long, value_enum, default_value_t = ClientKind::Os)]
    kind: ClientKind,
    #[arg(long)]
    iaid: Option<u32>,
    /// Wrap the messages in a Relay-Forward with this link-address.
    #[arg(long)]
    relay_link: Option<Ipv6Addr>,
    /// With --relay-link: add option 79 with the client's MAC.
    #[arg(long)]
    relay_mac: bool,
    /// Stop after the Advertise.
    #[arg(long)]
    solicit_only: bool,
    /// Run this many distinct clients (DUID-EN numbered from 1) and report each lease.
    #[arg(long, default_value_t = 1)]
    clients: u32,
    /// Append every acknowledged lease here as a JSON line, as soon as it is acknowledged.
    #[arg(long)]
    acked: Option<PathBuf>,
    /// Send this many malformed messages before probing.
    #[arg(long, default_value_t = 0)]
    garbage: u32,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
}

#[derive(Serialize)]
struct Answer {
    client: u32,
    advertise: Option<String>,
    reply: Option<String>,
    address: Option<Ipv6Addr>,
    bootfile_url: Option<String>,
    vendor_class: Option<String>,
    status: Option<(u16, String)>,
}

fn ifindex(name: &str) -> Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .with_context(|| format!("interface {name}"))?;
    Ok(text.trim().parse()?)
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mac: metal6_inventory::ident::MacAddr = s.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(mac.0)
}

pub fn run(a: &ProbeArgs) -> Result<ExitCode> {
    let idx = ifindex(&a.interface)?;
    let mac = parse_mac(&a.mac)?;
    let sock =
        UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, if a.relay_link.is_some() { 547 } else { 546 }, 0, 0))
            .context("binding the client port (546; is another client running?)")?;
    sock.set_read_timeout(Some(Duration::from_secs_f64(a.timeout)))?;
    let server = SocketAddrV6::new(a.server.unwrap_or(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2)), a.port, 0, idx);
    for i in 0..a.garbage {
        // Truncated options, bad lengths, empty and oversized headers.
        let junk: &[&[u8]] = &[&[1, 2, 3, 4, 0, 1, 0, 200, 0, 3], &[3], &[12, 0, 1, 2], &[1, 0, 0, 0, 0, 7, 0, 5, 1]];
        sock.send_to(junk[i as usize % junk.len()], server)?;
    }
    let mut acked = match &a.acked {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("{}", p.display()))?,
        ),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let mut failures = 0u32;
    for client in 1..=a.clients {
        let duid = match (a.duid, a.clients) {
            (_, n) if n > 1 => [&[0u8, 2, 0, 0, 0xab, 0x11][..], &client.to_be_bytes()].concat(),
            (DuidKind::Llt, _) => [&[0u8, 1, 0, 1, 0x31, 0xdc, 0xd9, 0xd8][..], &mac].concat(),
            (DuidKind::Ll, _) => [&[0u8, 3, 0, 1][..], &mac].concat(),
            (DuidKind::En, _) => vec![0, 2, 0, 0, 0xab, 0x11, 1, 2, 3, 4],
        };
        let iaid = a.iaid.unwrap_or(client);
        let answer = exchange(a, &sock, server, &mac, &duid, iaid, client)?;
        if answer.address.is_none() {
            failures += 1;
        }
        if let (Some(f), Some(addr)) = (acked.as_mut(), answer.address.filter(|_| answer.reply.is_some())) {
            writeln!(f, "{}", serde_json::json!({"client": client, "address": addr}))?;
            f.flush()?;
        }
        serde_json::to_writer(&mut out, &answer)?;
        writeln!(out)?;
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn client_opts(a: &ProbeArgs, duid: &[u8], iaid: u32) -> Vec<Opt> {
    let mut opts =
        vec![Opt::ClientId(duid.to_vec()), Opt::ElapsedTime(0), Opt::IaNa(IaNa { iaid, t1: 0, t2: 0, opts: vec![] })];
    match a.kind {
        ClientKind::UefiHttp => opts.extend([
            Opt::Oro(vec![59, 60, 23, 16]),
            Opt::ClientNii { kind: 1, major: 3, minor: 0 },
            Opt::ClientArch(vec![16]),
            Opt::VendorClass { enterprise: 343, data: vec![b"HTTPClient:Arch:00016:UNDI:003000".to_vec()] },
        ]),
        ClientKind::Pxe => opts.extend([
            Opt::Oro(vec![59, 60, 23]),
            Opt::ClientArch(vec![7]),
            Opt::VendorClass { enterprise: 343, data: vec![b"PXEClient:Arch:00007:UNDI:003016".to_vec()] },
        ]),
        ClientKind::Ipxe => opts.extend([Opt::Oro(vec![59, 23]), Opt::UserClass(vec![b"iPXE".to_vec()])]),
        ClientKind::Os => opts.push(Opt::Oro(vec![23, 24])),
    }
    opts
}

fn exchange(
    a: &ProbeArgs,
    sock: &UdpSocket,
    server: SocketAddrV6,
    mac: &[u8; 6],
    duid: &[u8],
    iaid: u32,
    client: u32,
) -> Result<Answer> {
    let xid = [(client >> 16) as u8, (client >> 8) as u8, client as u8];
    let solicit = ClientMsg { msg_type: MsgType::Solicit, xid, opts: client_opts(a, duid, iaid) };
    let mut ans = Answer {
        client,
        advertise: None,
        reply: None,
        address: None,
        bootfile_url: None,
        vendor_class: None,
        status: None,
    };
    let Some(adv) = roundtrip(a, sock, server, mac, solicit)? else { return Ok(ans) };
    ans.advertise = Some(format!("{:?}", adv.msg_type));
    describe(&adv, &mut ans);
    if a.solicit_only || ans.address.is_none() {
        return Ok(ans);
    }
    let mut opts = client_opts(a, duid, iaid);
    if let Some(sid) = adv.server_id() {
        opts.insert(1, Opt::ServerId(sid.to_vec()));
    }
    // Request the advertised address.
    if let Some(Opt::IaNa(ia)) = adv.opts.iter().find(|o| matches!(o, Opt::IaNa(_))) {
        for o in opts.iter_mut() {
            if let Opt::IaNa(mine) = o {
                mine.opts = ia.opts.clone();
            }
        }
    }
    let request = ClientMsg { msg_type: MsgType::Request, xid: [xid[0] ^ 0x80, xid[1], xid[2]], opts };
    ans.address = None;
    if let Some(reply) = roundtrip(a, sock, server, mac, request)? {
        ans.reply = Some(format!("{:?}", reply.msg_type));
        describe(&reply, &mut ans);
    }
    Ok(ans)
}

fn describe(m: &ClientMsg, ans: &mut Answer) {
    for o in &m.opts {
        match o {
            Opt::IaNa(ia) => {
                for x in &ia.opts {
                    if let Opt::IaAddr(addr) = x {
                        ans.address = Some(addr.addr);
                    }
                }
            }
            Opt::BootfileUrl(u) => ans.bootfile_url = Some(u.clone()),
            Opt::VendorClass { enterprise, data } => {
                ans.vendor_class = Some(format!(
                    "{enterprise}:{}",
                    data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<Vec<_>>().join(",")
                ));
            }
            Opt::StatusCode(c, t) => ans.status = Some((*c, t.clone())),
            _ => {}
        }
    }
}

/// Sends one message (wrapped as a relay if asked) and waits for the answer with its xid.
fn roundtrip(
    a: &ProbeArgs,
    sock: &UdpSocket,
    server: SocketAddrV6,
    mac: &[u8; 6],
    msg: ClientMsg,
) -> Result<Option<ClientMsg>> {
    let xid = msg.xid;
    let packet = match a.relay_link {
        None => Message::Client(msg),
        Some(link) => {
            let mut opts = vec![Opt::InterfaceId(b"probe0".to_vec())];
            if a.relay_mac {
                opts.push(Opt::ClientLinkLayer { htype: 1, addr: mac.to_vec() });
            }
            opts.push(Opt::RelayMsg(Box::new(Message::Client(msg))));
            Message::Relay(RelayMsg {
                msg_type: MsgType::RelayForw,
                hop_count: 0,
                link_addr: link,
                peer_addr: "fe80::abcd:1".parse()?,
                opts,
            })
        }
    };
    let bytes = packet.encode();
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    // Up to three transmissions, as a client would (RFC 8415 retransmission, shortened).
    for _ in 0..3 {
        sock.send_to(&bytes, server)?;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok((n, _)) = sock.recv_from(&mut buf) else { break };
            let Ok(m) = wire::decode(&buf[..n]) else { continue };
            let inner = match m {
                Message::Client(c) => c,
                Message::Relay(r) => {
                    match r.opts.into_iter().find_map(|o| if let Opt::RelayMsg(m) = o { Some(*m) } else { None }) {
                        Some(Message::Client(c)) => c,
                        _ => continue,
                    }
                }
            };
            if inner.xid == xid {
                return Ok(Some(inner));
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    if a.clients == 1 {
        bail!("no answer from {server} within {:.1} s", a.timeout);
    }
    Ok(None)
}
