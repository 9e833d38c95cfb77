//! Relay-Forward in, Relay-Reply out (RFC 8415 §19): the layers a relayed message comes
//! through, and the same layers around the reply. Pure; the server and the fuzzer share it.

use metal6_inventory::ident::MacAddr;

use crate::policy::RelayHop;
use crate::wire::{ClientMsg, Message, MsgType, Opt, RelayMsg};

/// The longest Interface-ID we echo. Relays use an interface name or a short circuit id; the
/// reply carries every hop's back, so a 60 KB one would make a 60 KB reply per request,
/// queued until its journal batch is durable.
pub const MAX_INTERFACE_ID: usize = 128;

/// Peels relay layers off, outermost first. `None` when a relay message carries no Relay
/// Message option, an Interface-ID longer than [`MAX_INTERFACE_ID`], or the innermost
/// message is not a client message.
pub fn unwrap(msg: Message) -> Option<(ClientMsg, Vec<RelayHop>)> {
    let mut hops = Vec::new();
    let mut cur = msg;
    loop {
        match cur {
            Message::Client(c) => return Some((c, hops)),
            Message::Relay(r) if r.msg_type == MsgType::RelayForw => {
                let mut inner = None;
                let mut hop = RelayHop {
                    hop_count: r.hop_count,
                    link_addr: r.link_addr,
                    peer_addr: r.peer_addr,
                    interface_id: None,
                    client_mac: None,
                };
                for o in r.opts {
                    match o {
                        Opt::RelayMsg(m) => inner = Some(*m),
                        Opt::InterfaceId(id) if id.len() <= MAX_INTERFACE_ID => hop.interface_id = Some(id),
                        Opt::InterfaceId(_) => return None,
                        Opt::ClientLinkLayer { htype: 1, addr } => {
                            hop.client_mac = <[u8; 6]>::try_from(addr.as_slice()).ok().map(MacAddr)
                        }
                        _ => {}
                    }
                }
                hops.push(hop);
                cur = inner?;
            }
            Message::Relay(_) => return None,
        }
    }
}

/// Wraps a reply in Relay-Reply layers matching the Relay-Forward path (RFC 8415 §19.3),
/// echoing each relay's Interface-Id.
pub fn wrap(reply: ClientMsg, hops: &[RelayHop]) -> Message {
    let mut msg = Message::Client(reply);
    for hop in hops.iter().rev() {
        let mut opts = Vec::with_capacity(2);
        if let Some(id) = &hop.interface_id {
            opts.push(Opt::InterfaceId(id.clone()));
        }
        opts.push(Opt::RelayMsg(Box::new(msg)));
        msg = Message::Relay(RelayMsg {
            msg_type: MsgType::RelayRepl,
            hop_count: hop.hop_count,
            link_addr: hop.link_addr,
            peer_addr: hop.peer_addr,
            opts,
        });
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(interface_id: Vec<u8>) -> Message {
        let client = ClientMsg { msg_type: MsgType::Solicit, xid: [1, 2, 3], opts: vec![] };
        Message::Relay(RelayMsg {
            msg_type: MsgType::RelayForw,
            hop_count: 0,
            link_addr: "2001:db8:1::1".parse().expect("addr"),
            peer_addr: "fe80::1".parse().expect("addr"),
            opts: vec![Opt::InterfaceId(interface_id), Opt::RelayMsg(Box::new(Message::Client(client)))],
        })
    }

    #[test]
    fn interface_ids_are_echoed_up_to_a_bound() {
        let (client, hops) = unwrap(relayed(b"eth1".to_vec())).expect("unwrapped");
        let Message::Relay(reply) = wrap(client, &hops) else { panic!("a Relay-Reply") };
        assert_eq!(reply.msg_type, MsgType::RelayRepl);
        assert!(reply.opts.contains(&Opt::InterfaceId(b"eth1".to_vec())));
        assert!(unwrap(relayed(vec![7; MAX_INTERFACE_ID + 1])).is_none(), "a 60 KB echo is not ours to send");
    }
}
