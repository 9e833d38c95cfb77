//! A stateful DHCPv6 client (RFC 8415 §18.2.1: Solicit → Advertise → Request → Reply, or
//! Rapid Commit) for one interface, on metal6's own wire codec.
//!
//! It presents a DUID-LL built from the NIC's MAC (so the server's "which node is this?"
//! answers from the DUID alone, RFC 8415 §11.4) and the user class `metal6-installer`,
//! which makes the server add option 60: which node this is and where its server is. The
//! answer is the node's inventory address — the same one its firmware got.

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use metal6_dhcp6::policy::INSTALLER_USER_CLASS;
use metal6_dhcp6::wire::{self, ClientMsg, IaNa, Message, MsgType, Opt, code};

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("binding the DHCPv6 client port 546")]
    Bind(#[source] std::io::Error),
    #[error("sending on the interface")]
    Send(#[source] std::io::Error),
    #[error("no DHCPv6 server answered within {0:?}")]
    NoAnswer(Duration),
    #[error("the server answered without an address (status {0:?})")]
    NoAddress(Option<(u16, String)>),
}

/// What the server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub dns: Vec<Ipv6Addr>,
    /// Option 60's words (`metal6.node=…`, `metal6.server=…`).
    pub params: Vec<String>,
    /// The server that answered (its link-local address).
    pub server: Ipv6Addr,
}

pub fn duid_ll(mac: [u8; 6]) -> Vec<u8> {
    [&[0u8, 3, 0, 1][..], &mac].concat()
}

/// The client's messages: DUID-LL, one IA_NA, our user class, and ORO for DNS, domain list
/// and the boot-file parameters.
pub fn message(msg_type: MsgType, xid: [u8; 3], mac: [u8; 6], server_id: Option<&[u8]>, ia: IaNa) -> ClientMsg {
    let mut opts = vec![Opt::ClientId(duid_ll(mac))];
    if let Some(sid) = server_id {
        opts.push(Opt::ServerId(sid.to_vec()));
    }
    opts.push(Opt::ElapsedTime(0));
    opts.push(Opt::IaNa(ia));
    if msg_type == MsgType::Solicit {
        opts.push(Opt::RapidCommit);
    }
    opts.push(Opt::Oro(vec![code::DNS_SERVERS, code::DOMAIN_LIST, code::BOOTFILE_PARAM]));
    opts.push(Opt::UserClass(vec![INSTALLER_USER_CLASS.to_vec()]));
    ClientMsg { msg_type, xid, opts }
}

/// Reads a Reply into a lease, or says why it holds none.
pub fn lease_of(reply: &ClientMsg, server: Ipv6Addr) -> Result<Lease, DhcpError> {
    let mut status = None;
    let mut lease: Option<Lease> = None;
    for o in &reply.opts {
        match o {
            Opt::StatusCode(c, t) if *c != 0 => status = Some((*c, t.clone())),
            Opt::IaNa(ia) => {
                for x in &ia.opts {
                    match x {
                        Opt::IaAddr(a) if a.valid > 0 => {
                            lease = Some(Lease {
                                address: a.addr,
                                preferred: a.preferred,
                                valid: a.valid,
                                dns: vec![],
                                params: vec![],
                                server,
                            });
                        }
                        Opt::StatusCode(c, t) if *c != 0 => status = Some((*c, t.clone())),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut lease = lease.ok_or(DhcpError::NoAddress(status))?;
    for o in &reply.opts {
        match o {
            Opt::DnsServers(d) => lease.dns.clone_from(d),
            Opt::BootfileParam(p) => lease.params = p.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect(),
            _ => {}
        }
    }
    Ok(lease)
}

/// Runs the exchange on interface `ifindex` until a lease or `deadline`.
pub fn acquire(ifindex: u32, mac: [u8; 6], within: Duration) -> Result<Lease, DhcpError> {
    let sock = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 546, 0, 0)).map_err(DhcpError::Bind)?;
    let all_servers = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2), 547, 0, ifindex);
    let deadline = Instant::now() + within;
    let iaid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    let ia = || IaNa { iaid, t1: 0, t2: 0, opts: vec![] };
    let mut xid = xid_seed(mac);
    while Instant::now() < deadline {
        xid = next_xid(xid);
        let solicit = message(MsgType::Solicit, xid, mac, None, ia());
        let Some((answer, from)) = exchange(&sock, all_servers, &solicit, deadline)? else { continue };
        if answer.msg_type == MsgType::Reply {
            return lease_of(&answer, from); // Rapid Commit
        }
        // Advertise: request what it offered, from the server that offered it.
        let offered = answer.ia_nas().next().cloned().unwrap_or_else(ia);
        xid = next_xid(xid);
        let request =
            message(MsgType::Request, xid, mac, answer.server_id(), IaNa { iaid, t1: 0, t2: 0, opts: offered.opts });
        if let Some((reply, from)) = exchange(&sock, all_servers, &request, deadline)?
            && reply.msg_type == MsgType::Reply
        {
            return lease_of(&reply, from);
        }
    }
    Err(DhcpError::NoAnswer(within))
}

/// Sends `msg` with RFC 8415 retransmission (1 s, doubling, at most 4 tries) and returns
/// the first well-formed answer with our transaction id. Malformed datagrams are skipped.
fn exchange(
    sock: &UdpSocket,
    to: SocketAddrV6,
    msg: &ClientMsg,
    deadline: Instant,
) -> Result<Option<(ClientMsg, Ipv6Addr)>, DhcpError> {
    let bytes = Message::Client(msg.clone()).encode();
    let mut rt = Duration::from_secs(1);
    for _ in 0..4 {
        sock.send_to(&bytes, to).map_err(DhcpError::Send)?;
        let until = (Instant::now() + rt).min(deadline);
        let mut buf = [0u8; 2048];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = sock.set_read_timeout(Some(left));
            let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
            let Ok(Message::Client(m)) = wire::decode(&buf[..n]) else { continue };
            if m.xid == msg.xid && matches!(m.msg_type, MsgType::Advertise | MsgType::Reply) {
                let from = match from.ip() {
                    std::net::IpAddr::V6(a) => a,
                    std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
                };
                return Ok(Some((m, from)));
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        rt = (rt * 2).min(Duration::from_secs(8));
    }
    Ok(None)
}

fn xid_seed(mac: [u8; 6]) -> [u8; 3] {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let b = t.to_be_bytes();
    [b[1] ^ mac[3], b[2] ^ mac[4], b[3] ^ mac[5]]
}

fn next_xid(x: [u8; 3]) -> [u8; 3] {
    let n = (u32::from_be_bytes([0, x[0], x[1], x[2]]).wrapping_mul(1_103_515_245).wrapping_add(12_345)) & 0xff_ffff;
    let b = n.to_be_bytes();
    [b[1], b[2], b[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use metal6_dhcp6::wire::IaAddr;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x6d, 0, 1];

    #[test]
    fn solicit_identifies_the_installer_and_asks_for_option_60() {
        let m = message(MsgType::Solicit, [1, 2, 3], MAC, None, IaNa { iaid: 7, t1: 0, t2: 0, opts: vec![] });
        assert_eq!(m.client_id(), Some(&[0, 3, 0, 1, 0x52, 0x54, 0, 0x6d, 0, 1][..]));
        assert_eq!(metal6_dhcp6::policy::stage_of(&m), metal6_dhcp6::policy::Stage::Installer);
        assert!(m.oro().contains(&60) && m.has(code::RAPID_COMMIT));
        // It survives our strict codec.
        let bytes = Message::Client(m.clone()).encode();
        assert_eq!(wire::decode(&bytes), Ok(Message::Client(m)));
    }

    #[test]
    fn a_reply_without_an_address_is_an_error_with_its_status() {
        let server = "fe80::1".parse().expect("addr");
        let reply = ClientMsg {
            msg_type: MsgType::Reply,
            xid: [1, 2, 3],
            opts: vec![Opt::StatusCode(2, "NoAddrsAvail".into())],
        };
        assert!(matches!(lease_of(&reply, server), Err(DhcpError::NoAddress(Some((2, _))))));
        let addr = "fd00:6d:1::100".parse().expect("addr");
        let ok = ClientMsg {
            msg_type: MsgType::Reply,
            xid: [1, 2, 3],
            opts: vec![
                Opt::IaNa(IaNa {
                    iaid: 1,
                    t1: 0,
                    t2: 0,
                    opts: vec![Opt::IaAddr(IaAddr { addr, preferred: 3600, valid: 7200, opts: vec![] })],
                }),
                Opt::BootfileParam(vec![b"metal6.node=lab-node-1".to_vec()]),
            ],
        };
        let l = lease_of(&ok, server).expect("lease");
        assert_eq!((l.address, l.params), (addr, vec!["metal6.node=lab-node-1".to_owned()]));
    }
}
