//! Relay-Forward in, Relay-Reply out (RFC 8415 §19): the layers a relayed message comes
//! through, and the same layers around the reply. Pure; the server and the fuzzer share it.

use metal6_inventory::ident::MacAddr;

use crate::policy::RelayHop;
use crate::wire::{ClientMsg, Message, MsgType, Opt, RelayMsg};

/// Peels relay layers off, outermost first. `None` when a relay message carries no Relay
/// Message option or the innermost message is not a client message.
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
                        Opt::InterfaceId(id) => hop.interface_id = Some(id),
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
