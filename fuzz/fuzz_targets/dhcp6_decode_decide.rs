//! Any UDP payload through the whole DHCPv6 path minus sockets: decode, unwrap relays, decide
//! (against the lab inventory, with a dynamic pool), encode the reply. Must never panic.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use metal6_dhcp6::bindings::Bindings;
use metal6_dhcp6::policy::{Config, Engine, Incoming, Outcome, RelayHop};
use metal6_dhcp6::wire::{self, Message, Opt};

fn engine() -> &'static Mutex<(Engine, Bindings)> {
    static E: OnceLock<Mutex<(Engine, Bindings)>> = OnceLock::new();
    E.get_or_init(|| {
        let src = include_str!("../../inventory/lab.yaml").replace(
            "    valid_lifetime: 7200\n",
            "    valid_lifetime: 7200\n    dynamic_pool: {start: \"fd00:6d:1::1:0\", end: \"fd00:6d:1::1:ff\"}\n",
        );
        let inv = metal6_inventory::check_str(&src, "lab.yaml").0.expect("lab inventory is valid");
        Mutex::new((Engine::new(inv, Config { server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1], rapid_commit: true }), Bindings::default()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = wire::decode(data) else { return };
    // Unwrap relays the way the server does.
    let mut hops = Vec::new();
    let mut cur = msg;
    let client = loop {
        match cur {
            Message::Client(c) => break c,
            Message::Relay(r) => {
                let inner = r.opts.iter().find_map(|o| if let Opt::RelayMsg(m) = o { Some((**m).clone()) } else { None });
                hops.push(RelayHop { hop_count: r.hop_count, link_addr: r.link_addr, peer_addr: r.peer_addr, interface_id: None, client_mac: None });
                match inner {
                    Some(m) => cur = m,
                    None => return,
                }
            }
        }
    };
    let Ok(mut guard) = engine().lock() else { return };
    let (engine, bindings) = &mut *guard;
    let inc = Incoming { msg: &client, relays: &hops, source: "fe80::5054:ff:fe6d:1".parse().expect("addr"), now: 1_000_000 };
    if let Outcome::Reply { reply, .. } = engine.handle(&inc, bindings) {
        let bytes = Message::Client(reply).encode();
        assert!(wire::decode(&bytes).is_ok(), "our own reply must decode");
    }
});
