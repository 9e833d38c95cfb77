//! dhcproto as an independent decoder: what we encode, it reads the same way. The last two
//! tests pin the dhcproto behaviours that made us write our own codec (see `wire` docs); if a
//! dhcproto release fixes them, these fail and the decision can be revisited.

use dhcproto::{Decodable, Decoder, v6};
use metal6_dhcp6::wire::{ClientMsg, IaAddr, IaNa, Message, MsgType, Opt};

#[test]
fn dhcproto_reads_our_reply() {
    let reply = Message::Client(ClientMsg {
        msg_type: MsgType::Reply,
        xid: [1, 2, 3],
        opts: vec![
            Opt::ClientId(vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            Opt::ServerId(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]),
            Opt::IaNa(IaNa {
                iaid: 7,
                t1: 1800,
                t2: 2880,
                opts: vec![Opt::IaAddr(IaAddr {
                    addr: "fd00:6d:1::100".parse().expect("addr"),
                    preferred: 3600,
                    valid: 7200,
                    opts: vec![],
                })],
            }),
            Opt::DnsServers(vec!["fd00:6d:1::1".parse().expect("addr")]),
        ],
    });
    let m = v6::Message::decode(&mut Decoder::new(&reply.encode())).expect("dhcproto decodes it");
    assert_eq!(m.msg_type(), v6::MessageType::Reply);
    assert_eq!(m.opts().iter().count(), 4);
    let Some(v6::DhcpOption::IANA(ia)) = m.opts().get(v6::OptionCode::IANA) else { panic!("IA_NA") };
    assert_eq!((ia.id, ia.t1, ia.t2), (7, 1800, 2880));
}

#[test]
fn dhcproto_loses_the_client_message_in_a_relay_forward() {
    let solicit = Message::Client(ClientMsg {
        msg_type: MsgType::Solicit,
        xid: [1, 2, 3],
        opts: vec![Opt::ClientId(vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6])],
    });
    let relay = Message::Relay(metal6_dhcp6::wire::RelayMsg {
        msg_type: MsgType::RelayForw,
        hop_count: 0,
        link_addr: "2001:db8::1".parse().expect("addr"),
        peer_addr: "fe80::1".parse().expect("addr"),
        opts: vec![Opt::RelayMsg(Box::new(solicit))],
    });
    let r = v6::RelayMessage::decode(&mut Decoder::new(&relay.encode())).expect("header decodes");
    assert_eq!(r.opts().iter().count(), 0, "dhcproto now keeps the relayed message: revisit wire.rs");
}

#[test]
fn dhcproto_reads_truncated_options_as_a_shorter_message() {
    let truncated = [1u8, 1, 2, 3, 0, 1, 0, 10, 0, 3];
    let m = v6::Message::decode(&mut Decoder::new(&truncated)).expect("dhcproto accepts it");
    assert_eq!(m.opts().iter().count(), 0, "dhcproto now rejects truncation: revisit wire.rs");
    assert!(metal6_dhcp6::wire::decode(&truncated).is_err());
}
