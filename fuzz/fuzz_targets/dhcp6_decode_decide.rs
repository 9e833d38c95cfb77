//! Any UDP payload through the whole DHCPv6 path minus sockets, as `netboot::dhcp` runs it:
//! decode, peel relays, decide, wrap the reply in Relay-Reply layers, encode.
//!
//! Decided twice against fresh state (so a failing input reproduces alone): against the lab
//! inventory with a dynamic pool (unknown clients get addresses) and against the Dell example
//! (relays, several segments, no pool); each engine sees the message again an hour later, with
//! the bindings the first answer made (renewals, existing bindings, expiries).
//!
//! Must never panic, and holds the wire and policy invariants:
//! - what decodes re-encodes to something that decodes to the same message;
//! - a reply keeps the client's xid and DUID, carries our server DUID once, an Advertise has
//!   Preference 255, and no status code sits inside an IA_NA or IAADDR (Debian's OVMF hangs);
//! - at most `MAX_IAS_PER_MESSAGE` IA_NAs, each one the client sent;
//! - every binding change gives a node its inventory address, or a pool client a pool address;
//! - our wrapped reply, when it fits a datagram, decodes to what we meant to send.
//!
//! Not covered: the socket loop, rate limiting and the journal (`netboot::dhcp`). Relay
//! peeling and wrapping are the server's own (`metal6_dhcp6::relay`).
#![no_main]

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metal6_dhcp6::bindings::{Bindings, Change};
use metal6_dhcp6::policy::{Config, Engine, Incoming, MAX_IAS_PER_MESSAGE, MAX_POOL_BINDINGS, Outcome, RelayHop};
use metal6_dhcp6::relay;
use metal6_dhcp6::wire::{self, ClientMsg, MsgType, Opt};
use metal6_inventory::Inventory;

const SERVER_DUID: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0, 1];
/// The largest UDP payload: a bigger reply cannot be sent (and `wire` clamps its lengths).
const MAX_DATAGRAM: usize = 65_535;

fn inventories() -> &'static [Inventory; 2] {
    static INV: OnceLock<[Inventory; 2]> = OnceLock::new();
    INV.get_or_init(|| {
        let lab = include_str!("../../inventory/lab.yaml").replace(
            "    valid_lifetime: 7200\n",
            "    valid_lifetime: 7200\n    dynamic_pool: {start: \"fd00:6d:1::1:0\", end: \"fd00:6d:1::1:ff\"}\n",
        );
        let dell = include_str!("../../inventory/example-dell.yaml");
        let load = |src: &str, name: &str| {
            let (inv, diags) = metal6_inventory::check_str(src, name);
            inv.unwrap_or_else(|| panic!("{name} must be valid for this target:\n{}", diags.render()))
        };
        [load(&lab, "lab.yaml"), load(dell, "example-dell.yaml")]
    })
}

fn check_reply(client: &ClientMsg, reply: &ClientMsg) {
    assert!(matches!(reply.msg_type, MsgType::Advertise | MsgType::Reply), "{:?}", reply.msg_type);
    assert_eq!(reply.xid, client.xid);
    assert_eq!(reply.client_id(), client.client_id());
    let server_ids: Vec<&Opt> = reply.opts.iter().filter(|o| matches!(o, Opt::ServerId(_))).collect();
    assert_eq!(server_ids, [&Opt::ServerId(SERVER_DUID.to_vec())]);
    if reply.msg_type == MsgType::Advertise {
        assert!(reply.opts.contains(&Opt::Preference(255)), "Advertise without Preference 255");
    }
    let asked: Vec<u32> = client.ia_nas().map(|ia| ia.iaid).collect();
    let mut answered = 0;
    for ia in reply.ia_nas() {
        answered += 1;
        assert!(asked.contains(&ia.iaid), "IA_NA {} the client did not send", ia.iaid);
        for o in &ia.opts {
            match o {
                Opt::StatusCode(..) => panic!("status code inside IA_NA {}", ia.iaid),
                Opt::IaAddr(a) => {
                    assert!(!a.opts.iter().any(|o| matches!(o, Opt::StatusCode(..))), "status code inside IAADDR");
                    assert!(a.preferred <= a.valid, "preferred lifetime above valid");
                }
                _ => {}
            }
        }
    }
    assert!(answered <= MAX_IAS_PER_MESSAGE, "{answered} IA_NAs answered");
    // The first option is never the boot URL (EDK2 reads options in order; see policy docs).
    assert!(!matches!(reply.opts.first(), Some(Opt::BootfileUrl(_))));
}

fn check_changes(inv: &Inventory, changes: &[Change]) {
    for c in changes {
        let Change::Upsert(b) = c else { continue };
        match &b.node {
            Some(name) => {
                let node = inv.node(name).unwrap_or_else(|| panic!("binding for unknown node {name}"));
                assert_eq!(b.addr, node.address, "node {name} bound to another address");
            }
            None => {
                let (start, end) = inv.site.dhcp.dynamic_pool.expect("a pool binding without a pool");
                let a = u128::from(b.addr);
                assert!(u128::from(start) <= a && a <= u128::from(end), "pool binding {} outside the pool", b.addr);
            }
        }
    }
}

fn decide(inv: &Inventory, client: &ClientMsg, hops: &[RelayHop]) {
    let mut engine = Engine::new(inv.clone(), Config { server_duid: SERVER_DUID.to_vec(), rapid_commit: true });
    let mut bindings = Bindings::default();
    // A relayed message comes from the relay; a direct one from the client's link-local
    // address (lab-node-1's EUI-64, so the EUI-64 identification path runs too).
    let source: Ipv6Addr =
        (if hops.is_empty() { "fe80::5054:ff:fe6d:1" } else { "2001:db8:102::1" }).parse().expect("address");
    for now in [1_000_000, 1_000_000 + 3_600] {
        let inc = Incoming { msg: client, relays: hops, source, now };
        let Outcome::Reply { reply, changes, .. } = engine.handle(&inc, &mut bindings) else { continue };
        check_reply(client, &reply);
        check_changes(inv, &changes);
        assert!(bindings.pool_len() <= MAX_POOL_BINDINGS);
        let sent = relay::wrap(reply, hops);
        let bytes = sent.encode();
        if bytes.len() <= MAX_DATAGRAM {
            assert_eq!(wire::decode(&bytes).as_ref(), Ok(&sent), "our reply must decode to itself");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = wire::decode(data) else { return };
    // Decoding keeps everything it does not drop on purpose (NTP suboptions other than
    // addresses): encoding what it read must give back the same message.
    let again = wire::decode(&msg.encode());
    assert_eq!(again.as_ref(), Ok(&msg), "re-encoding changed the message");
    let Some((client, hops)) = relay::unwrap(msg) else { return };
    for inv in inventories() {
        decide(inv, &client, &hops);
    }
});
