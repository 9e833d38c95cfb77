//! Property tests of the wire codec: arbitrary bytes never panic, and whatever decodes
//! re-encodes to the same bytes (the codec is lossless, so replies echo options exactly).

use metal6_dhcp6::wire::{self, ClientMsg, IaAddr, IaNa, Message, MsgType, Opt};
use proptest::prelude::*;

fn opt() -> impl Strategy<Value = Opt> {
    let addr = any::<[u8; 16]>().prop_map(std::net::Ipv6Addr::from);
    let leaf = prop_oneof![
        proptest::collection::vec(any::<u8>(), 3..40).prop_map(Opt::ClientId),
        proptest::collection::vec(any::<u8>(), 3..40).prop_map(Opt::ServerId),
        proptest::collection::vec(any::<u16>(), 0..8).prop_map(Opt::Oro),
        any::<u8>().prop_map(Opt::Preference),
        any::<u16>().prop_map(Opt::ElapsedTime),
        (any::<u16>(), "[a-zA-Z ]{0,20}").prop_map(|(c, t)| Opt::StatusCode(c, t)),
        Just(Opt::RapidCommit),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..3).prop_map(Opt::UserClass),
        (any::<u32>(), proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..3))
            .prop_map(|(enterprise, data)| Opt::VendorClass { enterprise, data }),
        proptest::collection::vec(addr.clone(), 0..3).prop_map(Opt::DnsServers),
        proptest::collection::vec(addr.clone(), 0..3).prop_map(Opt::NtpServers),
        "[a-z:/\\[\\]0-9.]{0,40}".prop_map(Opt::BootfileUrl),
        proptest::collection::vec(any::<u16>(), 1..3).prop_map(Opt::ClientArch),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 1..10))
            .prop_map(|(htype, addr)| Opt::ClientLinkLayer { htype, addr }),
        (200u16..300, proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(c, d)| Opt::Other(c, d)),
    ];
    leaf.prop_recursive(2, 16, 4, move |inner| {
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u32>(), proptest::collection::vec(inner.clone(), 0..3))
                .prop_map(|(iaid, t1, t2, opts)| Opt::IaNa(IaNa { iaid, t1, t2, opts })),
            (addr.clone(), any::<u32>(), any::<u32>(), proptest::collection::vec(inner, 0..2))
                .prop_map(|(addr, preferred, valid, opts)| Opt::IaAddr(IaAddr { addr, preferred, valid, opts })),
        ]
    })
}

fn message() -> impl Strategy<Value = Message> {
    (1u8..12, any::<[u8; 3]>(), proptest::collection::vec(opt(), 0..8))
        .prop_map(|(t, xid, opts)| Message::Client(ClientMsg { msg_type: MsgType::from(t), xid, opts }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = wire::decode(&bytes) {
            // Lossless: what decodes re-encodes to the same bytes.
            prop_assert_eq!(m.encode(), bytes);
        }
    }

    #[test]
    fn encode_then_decode_is_identity(m in message()) {
        let bytes = m.encode();
        prop_assert_eq!(wire::decode(&bytes).expect("own encoding decodes"), m);
    }
}
