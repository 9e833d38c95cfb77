//! Decision-engine scenarios on the lab inventory (lab-node-1: uefi-http, MAC
//! 52:54:00:6d:00:01, fd00:6d:1::100; lab-node-2: pxe, 52:54:00:6d:00:02, fd00:6d:1::101).

use std::net::Ipv6Addr;

use metal6_dhcp6::bindings::{BindingKey, Bindings, Change};
use metal6_dhcp6::policy::{Config, Engine, Event, Incoming, Outcome, RelayHop, Silence, Stage};
use metal6_dhcp6::wire::{self, ClientMsg, IaAddr, IaNa, Message, MsgType, Opt, code, status};

const SERVER_DUID: [u8; 10] = [0, 3, 0, 1, 0x02, 0x6d, 0, 0, 0, 1];
const NODE1_LL: &str = "fe80::5054:ff:fe6d:1";

fn engine() -> Engine {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inventory/lab.yaml")).expect("lab");
    let inv = metal6_inventory::check_str(&src, "lab.yaml").0.expect("valid");
    Engine::new(inv, Config { server_duid: SERVER_DUID.to_vec(), rapid_commit: true })
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().expect("address")
}

fn duid_llt(mac: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0, 1, 0, 1, 0x31, 0xdc, 0xd9, 0xd8];
    d.extend_from_slice(&mac);
    d
}

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0x6d, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0x6d, 0, 2];

fn ia(iaid: u32) -> Opt {
    Opt::IaNa(IaNa { iaid, t1: u32::MAX, t2: u32::MAX, opts: vec![] })
}

/// OVMF HttpBootDxe's Solicit shape (shared/notes/ovmf-ipv6-http-boot.md §2).
fn ovmf_http(t: MsgType, duid: Vec<u8>, iaid: u32, server: bool) -> ClientMsg {
    let mut opts = vec![Opt::ClientId(duid)];
    if server {
        opts.push(Opt::ServerId(SERVER_DUID.to_vec()));
    }
    opts.extend([
        Opt::ElapsedTime(0),
        ia(iaid),
        Opt::Oro(vec![59, 60, 23, 16]),
        Opt::ClientNii { kind: 1, major: 3, minor: 0 },
        Opt::ClientArch(vec![16]),
        Opt::VendorClass { enterprise: 343, data: vec![b"HTTPClient:Arch:00016:UNDI:003000".to_vec()] },
    ]);
    ClientMsg { msg_type: t, xid: [0x50, 0xe6, 0xfb], opts }
}

fn os_client(t: MsgType, duid: Vec<u8>, iaid: u32, server: bool) -> ClientMsg {
    let mut opts = vec![Opt::ClientId(duid)];
    if server {
        opts.push(Opt::ServerId(SERVER_DUID.to_vec()));
    }
    opts.extend([ia(iaid), Opt::Oro(vec![23, 24])]);
    ClientMsg { msg_type: t, xid: [1, 2, 3], opts }
}

fn run(e: &mut Engine, b: &mut Bindings, m: &ClientMsg, relays: &[RelayHop], src: &str) -> Outcome {
    e.handle(&Incoming { msg: m, relays, source: a(src), now: 1_000_000 }, b)
}

fn reply(o: Outcome) -> (ClientMsg, Vec<Change>, Vec<Event>) {
    match o {
        Outcome::Reply { reply, changes, events } => (reply, changes, events),
        Outcome::Silent { why, .. } => panic!("expected a reply, got silence: {why:?}"),
    }
}

fn leased(m: &ClientMsg) -> Vec<Ipv6Addr> {
    m.ia_nas()
        .flat_map(|ia| ia.opts.iter().filter_map(|o| if let Opt::IaAddr(x) = o { Some(x.addr) } else { None }))
        .collect()
}

#[test]
fn ovmf_http_solicit_gets_an_advertise_firmware_accepts() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let (adv, changes, _) =
        reply(run(&mut e, &mut b, &ovmf_http(MsgType::Solicit, duid_llt(MAC1), 0x22db6e71, false), &[], NODE1_LL));
    assert_eq!(adv.msg_type, MsgType::Advertise);
    assert!(changes.is_empty(), "an Advertise commits nothing");
    let codes: Vec<u16> = adv.opts.iter().map(Opt::code).collect();
    assert_eq!(
        codes,
        vec![1, 2, 3, 7, 16, 59, 60],
        "order: ids, IA, preference, vendor class, bootfile-url, its parameters"
    );
    assert!(adv.opts.contains(&Opt::BootfileParam(vec![
        b"metal6.node=lab-node-1".to_vec(),
        b"metal6.server=http://[fd00:6d:1::1]:8080/".to_vec()
    ])));
    assert_eq!(leased(&adv), vec![a("fd00:6d:1::100")]);
    let ia = adv.ia_nas().next().expect("IA_NA");
    assert_eq!(ia.iaid, 0x22db6e71);
    assert!(ia.t1 <= ia.t2, "EDK2 Dhcp6Io.c:608");
    assert!(!ia.opts.iter().any(|o| o.code() == code::STATUS_CODE), "no status inside IA_NA (Debian OVMF hang)");
    assert!(adv.opts.contains(&Opt::Preference(255)));
    // EDK2 compares 10 bytes at vendor-class data offset 6 and wants option length >= 16.
    let bytes = Message::Client(adv.clone()).encode();
    let at = bytes.windows(4).position(|w| w == [0, 16, 0, 16]).expect("option 16, length 16");
    assert_eq!(&bytes[at + 4 + 6..at + 4 + 16], b"HTTPClient");
    assert!(adv.opts.contains(&Opt::BootfileUrl("http://[fd00:6d:1::1]:8080/boot/installer.efi".into())));
}

#[test]
fn two_ovmf_clients_with_one_duid_both_get_the_node_address() {
    // With RA M=1, OVMF's Ip6Config client (ORO {23}) runs beside HttpBootDxe's: same DUID,
    // different random IAIDs. Neither may starve the other.
    let (mut e, mut b) = (engine(), Bindings::default());
    let duid = duid_llt(MAC1);
    let ip6config = ClientMsg {
        msg_type: MsgType::Request,
        xid: [9, 9, 9],
        opts: vec![Opt::ClientId(duid.clone()), Opt::ServerId(SERVER_DUID.to_vec()), ia(0x1111), Opt::Oro(vec![23])],
    };
    let (r1, c1, _) = reply(run(&mut e, &mut b, &ip6config, &[], NODE1_LL));
    let (r2, c2, _) =
        reply(run(&mut e, &mut b, &ovmf_http(MsgType::Request, duid.clone(), 0x2222, true), &[], NODE1_LL));
    assert_eq!(leased(&r1), vec![a("fd00:6d:1::100")]);
    assert_eq!(leased(&r2), vec![a("fd00:6d:1::100")]);
    assert_eq!((c1.len(), c2.len(), b.len()), (1, 1, 2), "two bindings, one per (DUID, IAID)");
    assert!(!r2.opts.iter().any(|o| o.code() == code::STATUS_CODE));
}

#[test]
fn every_boot_stage_identity_gets_the_inventory_address() {
    // Firmware with DUID-LLT, then iPXE/installer with DUID-LL, then an OS with a DUID-EN seen
    // through a relay on the provisioning link that adds option 79.
    let (mut e, mut b) = (engine(), Bindings::default());
    let (r, _, ev) = reply(run(&mut e, &mut b, &os_client(MsgType::Request, duid_llt(MAC1), 1, true), &[], NODE1_LL));
    assert_eq!(leased(&r), vec![a("fd00:6d:1::100")]);
    assert!(ev.iter().any(|x| matches!(x, Event::Identity { via: metal6_inventory::identity::Via::DuidMac, .. })));
    let ll = vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x6d, 0, 1];
    let (r, _, ev) = reply(run(&mut e, &mut b, &os_client(MsgType::Request, ll, 2, true), &[], "fe80::1234"));
    assert_eq!(leased(&r), vec![a("fd00:6d:1::100")]);
    assert!(ev.iter().any(|x| matches!(x, Event::Identity { previous_duid: Some(_), .. })), "identity change logged");
    let en = vec![0, 2, 0, 0, 0xab, 0x11, 1, 2, 3, 4];
    let relay = RelayHop {
        hop_count: 0,
        link_addr: a("fd00:6d:1::fe"),
        peer_addr: a("fe80::abcd:1"),
        interface_id: Some(b"eth1".to_vec()),
        client_mac: Some(metal6_inventory::ident::MacAddr(MAC1)),
    };
    let (r, _, ev) = reply(run(
        &mut e,
        &mut b,
        &os_client(MsgType::Request, en, 3, true),
        std::slice::from_ref(&relay),
        "fd00:6d:1::fe",
    ));
    assert_eq!(leased(&r), vec![a("fd00:6d:1::100")]);
    assert!(
        ev.iter().any(|x| matches!(x, Event::Identity { via: metal6_inventory::identity::Via::RelayLinkLayer, .. }))
    );
}

#[test]
fn unknown_clients_get_silence_without_a_pool() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let stranger = duid_llt([0x02, 0, 0, 0, 0, 9]);
    assert!(matches!(
        run(&mut e, &mut b, &os_client(MsgType::Solicit, stranger, 1, false), &[], "fe80::9"),
        Outcome::Silent { why: Silence::UnknownClient, .. }
    ));
}

#[test]
fn rfc8415_section16_validation() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let mut wrong_server = os_client(MsgType::Request, duid_llt(MAC1), 1, false);
    wrong_server.opts.push(Opt::ServerId(vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9]));
    assert!(matches!(
        run(&mut e, &mut b, &wrong_server, &[], NODE1_LL),
        Outcome::Silent { why: Silence::OtherServer, .. }
    ));
    let no_server = os_client(MsgType::Request, duid_llt(MAC1), 1, false);
    assert!(matches!(run(&mut e, &mut b, &no_server, &[], NODE1_LL), Outcome::Silent { why: Silence::Invalid, .. }));
    let solicit_with_server = os_client(MsgType::Solicit, duid_llt(MAC1), 1, true);
    assert!(matches!(
        run(&mut e, &mut b, &solicit_with_server, &[], NODE1_LL),
        Outcome::Silent { why: Silence::Invalid, .. }
    ));
    let advertise = ClientMsg { msg_type: MsgType::Advertise, xid: [0; 3], opts: vec![] };
    assert!(matches!(
        run(&mut e, &mut b, &advertise, &[], NODE1_LL),
        Outcome::Silent { why: Silence::NotForServers, .. }
    ));
}

#[test]
fn release_removes_the_binding_and_rapid_commit_creates_it() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let mut rc = os_client(MsgType::Solicit, duid_llt(MAC1), 7, false);
    rc.opts.push(Opt::RapidCommit);
    let (r, changes, _) = reply(run(&mut e, &mut b, &rc, &[], NODE1_LL));
    assert_eq!(r.msg_type, MsgType::Reply);
    assert!(r.opts.contains(&Opt::RapidCommit));
    assert_eq!(changes.len(), 1);
    let key = BindingKey { duid: duid_llt(MAC1), iaid: 7 };
    assert!(b.get(&key).is_some());
    let (r, changes, ev) =
        reply(run(&mut e, &mut b, &os_client(MsgType::Release, duid_llt(MAC1), 7, true), &[], NODE1_LL));
    assert!(r.opts.contains(&Opt::StatusCode(status::SUCCESS, "ok".into())));
    assert_eq!(changes, vec![Change::Remove(key.clone())]);
    assert!(b.get(&key).is_none());
    assert!(ev.iter().any(|x| matches!(x, Event::Released { .. })));
}

#[test]
fn confirm_judges_the_address() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let confirm = |addr: &str| {
        let ia = Opt::IaNa(IaNa {
            iaid: 1,
            t1: 0,
            t2: 0,
            opts: vec![Opt::IaAddr(IaAddr { addr: a(addr), preferred: 0, valid: 0, opts: vec![] })],
        });
        ClientMsg { msg_type: MsgType::Confirm, xid: [4, 4, 4], opts: vec![Opt::ClientId(duid_llt(MAC1)), ia] }
    };
    let (r, ..) = reply(run(&mut e, &mut b, &confirm("fd00:6d:1::100"), &[], NODE1_LL));
    assert!(r.opts.iter().any(|o| matches!(o, Opt::StatusCode(status::SUCCESS, _))));
    let (r, ..) = reply(run(&mut e, &mut b, &confirm("fd00:99::5"), &[], NODE1_LL));
    assert!(r.opts.iter().any(|o| matches!(o, Opt::StatusCode(status::NOT_ON_LINK, _))));
}

#[test]
fn pxe_firmware_gets_tftp_and_no_pxeclient_echo() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let mut m = os_client(MsgType::Solicit, duid_llt(MAC2), 5, false);
    m.opts.push(Opt::ClientArch(vec![7]));
    m.opts.push(Opt::VendorClass { enterprise: 343, data: vec![b"PXEClient:Arch:00007:UNDI:003016".to_vec()] });
    m.opts.push(Opt::Oro(vec![59, 60]));
    let (r, ..) = reply(run(&mut e, &mut b, &m, &[], "fe80::5054:ff:fe6d:2"));
    assert!(!r.opts.iter().any(|o| o.code() == code::VENDOR_CLASS));
    assert!(r.opts.contains(&Opt::BootfileUrl("tftp://[fd00:6d:1::1]/installer.efi".into())));
    // EDK2 PXE reads option 60 as the boot file size; text there aborts the boot.
    assert!(!r.opts.iter().any(|o| o.code() == code::BOOTFILE_PARAM));
    // The HTTP-boot node's PXE attempt gets an address but no boot file (it is not its method).
    let mut m1 = m.clone();
    m1.opts[0] = Opt::ClientId(duid_llt(MAC1));
    let (r, ..) = reply(run(&mut e, &mut b, &m1, &[], NODE1_LL));
    assert!(!r.opts.iter().any(|o| o.code() == code::BOOTFILE_URL));
    assert_eq!(metal6_dhcp6::policy::stage_of(&m), Stage::FirmwarePxe);
}

#[test]
fn other_architectures_get_no_boot_file() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let mut m = ovmf_http(MsgType::Solicit, duid_llt(MAC1), 1, false);
    for o in &mut m.opts {
        if let Opt::ClientArch(a) = o {
            *a = vec![19]; // arm64 UEFI HTTP
        }
    }
    let (r, _, ev) = reply(run(&mut e, &mut b, &m, &[], NODE1_LL));
    assert!(!r.opts.iter().any(|o| o.code() == code::BOOTFILE_URL));
    assert!(ev.iter().any(|x| matches!(x, Event::UnsupportedArch { arch: 19, .. })));
}

#[test]
fn replies_reencode_and_decode() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let (r, ..) = reply(run(&mut e, &mut b, &ovmf_http(MsgType::Solicit, duid_llt(MAC1), 3, false), &[], NODE1_LL));
    let bytes = Message::Client(r.clone()).encode();
    assert_eq!(wire::decode(&bytes), Ok(Message::Client(r)));
}

#[test]
fn installer_learns_its_node_and_server_from_option_60() {
    let (mut e, mut b) = (engine(), Bindings::default());
    let duid_ll = [&[0u8, 3, 0, 1][..], &MAC1].concat();
    let mut m = os_client(MsgType::Solicit, duid_ll, 7, false);
    m.opts.push(Opt::UserClass(vec![metal6_dhcp6::policy::INSTALLER_USER_CLASS.to_vec()]));
    set_oro(&mut m, vec![23, 60]);
    assert_eq!(metal6_dhcp6::policy::stage_of(&m), Stage::Installer);
    let (r, ..) = reply(run(&mut e, &mut b, &m, &[], NODE1_LL));
    assert_eq!(leased(&r), vec![a("fd00:6d:1::100")], "the installer gets the node's inventory address");
    let params = r.opts.iter().find_map(|o| if let Opt::BootfileParam(p) = o { Some(p.clone()) } else { None });
    assert_eq!(
        params,
        Some(vec![b"metal6.node=lab-node-1".to_vec(), b"metal6.server=http://[fd00:6d:1::1]:8080/".to_vec()])
    );
    // No boot file for the installer: it is already booted.
    assert!(!r.opts.iter().any(|o| o.code() == code::BOOTFILE_URL));
    // An ordinary OS client asking for option 60 does not get it.
    let mut os = os_client(MsgType::Solicit, [&[0u8, 3, 0, 1][..], &MAC2].concat(), 1, false);
    set_oro(&mut os, vec![60]);
    let (r, ..) = reply(run(&mut e, &mut b, &os, &[], "fe80::5054:ff:fe6d:2"));
    assert!(!r.opts.iter().any(|o| o.code() == code::BOOTFILE_PARAM));
}

fn set_oro(m: &mut ClientMsg, codes: Vec<u16>) {
    m.opts.retain(|o| !matches!(o, Opt::Oro(_)));
    m.opts.push(Opt::Oro(codes));
}

fn pool_engine() -> Engine {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inventory/lab.yaml")).expect("lab");
    let src = src.replace(
        "    valid_lifetime: 7200\n",
        "    valid_lifetime: 7200\n    dynamic_pool: {start: \"fd00:6d:1::1000\", end: \"fd00:6d:1::1001\"}\n",
    );
    let inv = metal6_inventory::check_str(&src, "lab.yaml").0.expect("valid");
    Engine::new(inv, Config { server_duid: SERVER_DUID.to_vec(), rapid_commit: true })
}

/// One Rapid-Commit Solicit with thousands of IA_NAs for a known MAC once became one durable
/// binding per IA_NA (2.2 MB of journal in seconds). At most MAX_IAS_PER_MESSAGE are answered.
#[test]
fn ia_nas_per_message_are_capped() {
    use metal6_dhcp6::policy::MAX_IAS_PER_MESSAGE;
    let (mut e, mut b) = (engine(), Bindings::default());
    let mut m = os_client(MsgType::Solicit, duid_llt(MAC1), 0, false);
    m.opts.extend((1..3000).map(ia));
    m.opts.push(Opt::RapidCommit);
    let (r, changes, _) = reply(run(&mut e, &mut b, &m, &[], NODE1_LL));
    assert_eq!(r.ia_nas().count(), MAX_IAS_PER_MESSAGE);
    assert_eq!(changes.len(), MAX_IAS_PER_MESSAGE);
    assert_eq!(b.len(), MAX_IAS_PER_MESSAGE);
}

/// IAIDs varied across messages: the node keeps at most MAX_BINDINGS_PER_NODE, the oldest go
/// (journaled as removals), and every reply still carries the node's address.
#[test]
fn bindings_per_node_are_capped_oldest_first() {
    use metal6_dhcp6::policy::MAX_BINDINGS_PER_NODE;
    let (mut e, mut b) = (engine(), Bindings::default());
    let mut removed = 0;
    for (i, iaid) in (0..200u32).enumerate() {
        let mut m = os_client(MsgType::Solicit, duid_llt(MAC1), iaid, false);
        m.opts.push(Opt::RapidCommit);
        let now = 1_000_000 + i as u64;
        let (r, changes, _) = reply(e.handle(&Incoming { msg: &m, relays: &[], source: a(NODE1_LL), now }, &mut b));
        assert_eq!(leased(&r), vec![a("fd00:6d:1::100")]);
        removed += changes.iter().filter(|c| matches!(c, Change::Remove(_))).count();
    }
    assert_eq!(b.of_node("lab-node-1").count(), MAX_BINDINGS_PER_NODE);
    assert_eq!(removed, 200 - MAX_BINDINGS_PER_NODE);
    // The newest survive.
    assert!(b.get(&BindingKey { duid: duid_llt(MAC1), iaid: 199 }).is_some());
    assert!(b.get(&BindingKey { duid: duid_llt(MAC1), iaid: 0 }).is_none());
}

/// A declined pool address is held out of the pool instead of going to the next client.
#[test]
fn a_declined_pool_address_is_not_handed_out_again() {
    let (mut e, mut b) = (pool_engine(), Bindings::default());
    let stranger = |n: u8| duid_llt([2, 0, 0, 0, 0, n]);
    let mut rc = os_client(MsgType::Solicit, stranger(1), 1, false);
    rc.opts.push(Opt::RapidCommit);
    let (r, _, _) = reply(run(&mut e, &mut b, &rc, &[], "fe80::1"));
    let first = leased(&r)[0];
    let (_, changes, _) =
        reply(run(&mut e, &mut b, &os_client(MsgType::Decline, stranger(1), 1, true), &[], "fe80::1"));
    assert_eq!(changes.len(), 2, "removal plus the hold, both journaled: {changes:?}");
    for n in 2..5 {
        let mut rc = os_client(MsgType::Solicit, stranger(n), 1, false);
        rc.opts.push(Opt::RapidCommit);
        if let Outcome::Reply { reply, .. } = run(&mut e, &mut b, &rc, &[], "fe80::2") {
            assert!(!leased(&reply).contains(&first), "declined {first} handed to client {n}");
        }
    }
}

/// A Relay-Forward vouches for the client's MAC (option 79). With trusted_relays set, only
/// those sources may relay; anyone else who forges one gets silence, even naming a node's MAC.
#[test]
fn relayed_messages_only_from_trusted_relays_when_named() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inventory/lab.yaml")).expect("lab");
    let src = src
        .replace("    valid_lifetime: 7200\n", "    valid_lifetime: 7200\n    trusted_relays: [\"fd00:6d:1::fe\"]\n");
    let inv = metal6_inventory::check_str(&src, "lab.yaml").0.expect("valid");
    let mut e = Engine::new(inv, Config { server_duid: SERVER_DUID.to_vec(), rapid_commit: true });
    let mut b = Bindings::default();
    let relay = RelayHop {
        hop_count: 0,
        link_addr: a("fd00:6d:1::fe"),
        peer_addr: a("fe80::abcd:1"),
        interface_id: None,
        client_mac: Some(metal6_inventory::ident::MacAddr(MAC1)),
    };
    let en = vec![0, 2, 0, 0, 0xab, 0x11, 1, 2, 3, 4];
    let m = os_client(MsgType::Solicit, en, 3, false);
    let forged = run(&mut e, &mut b, &m, std::slice::from_ref(&relay), "fd00:6d:1::bad");
    assert!(matches!(forged, Outcome::Silent { why: Silence::UntrustedRelay, .. }), "{forged:?}");
    let (r, _, _) = reply(run(&mut e, &mut b, &m, std::slice::from_ref(&relay), "fd00:6d:1::fe"));
    assert_eq!(leased(&r), vec![a("fd00:6d:1::100")]);
}

/// What ISC dhcrelay on lab-matrix's rack2 adds: the segment's link-address and the client's
/// link-local source (matrix-relayed's EUI-64), no option 79.
fn rack2_relay() -> RelayHop {
    RelayHop {
        hop_count: 0,
        link_addr: a("fd00:6d:2::1"),
        peer_addr: a("fe80::5054:ff:fe6d:3"),
        interface_id: None,
        client_mac: None,
    }
}

fn matrix_engine() -> Engine {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inventory/lab-matrix.yaml"))
        .expect("lab-matrix");
    let inv = metal6_inventory::check_str(&src, "lab-matrix.yaml").0.expect("valid");
    Engine::new(inv, Config { server_duid: SERVER_DUID.to_vec(), rapid_commit: true })
}

/// A node on a relayed segment (inventory/lab-matrix.yaml's matrix-relayed, segment rack2):
/// the installer's option 60 names the segment's router, through which it must reach the
/// server (its lease is a /128, nothing is on-link). A node on the server's link gets none.
#[test]
fn a_relayed_installer_learns_its_segments_router_from_option_60() {
    let (mut e, mut b) = (matrix_engine(), Bindings::default());
    let mac3 = [0x52, 0x54, 0, 0x6d, 0, 3];
    let mut m = os_client(MsgType::Solicit, [&[0u8, 3, 0, 1][..], &mac3].concat(), 7, false);
    m.opts.push(Opt::UserClass(vec![metal6_dhcp6::policy::INSTALLER_USER_CLASS.to_vec()]));
    set_oro(&mut m, vec![23, 60]);
    let relay = rack2_relay();
    let (r, ..) = reply(run(&mut e, &mut b, &m, std::slice::from_ref(&relay), "fd00:6d:1::fe"));
    assert_eq!(leased(&r), vec![a("fd00:6d:2::100")], "the address on the node's own segment");
    let params = r.opts.iter().find_map(|o| if let Opt::BootfileParam(p) = o { Some(p.clone()) } else { None });
    assert_eq!(
        params,
        Some(vec![
            b"metal6.node=matrix-relayed".to_vec(),
            b"metal6.server=http://[fd00:6d:1::1]:8080/".to_vec(),
            b"metal6.gateway=fd00:6d:2::1".to_vec()
        ])
    );
    // matrix-ipxe is on the server's link: no gateway.
    let mac4 = [0x52, 0x54, 0, 0x6d, 0, 4];
    let mut m = os_client(MsgType::Solicit, [&[0u8, 3, 0, 1][..], &mac4].concat(), 7, false);
    m.opts.push(Opt::UserClass(vec![metal6_dhcp6::policy::INSTALLER_USER_CLASS.to_vec()]));
    set_oro(&mut m, vec![60]);
    let (r, ..) = reply(run(&mut e, &mut b, &m, &[], "fe80::5054:ff:fe6d:4"));
    let params = r.opts.iter().find_map(|o| if let Opt::BootfileParam(p) = o { Some(p.clone()) } else { None });
    assert_eq!(params.map(|p| p.len()), Some(2), "node and server only");
}

/// iPXE's DUID is DUID-UUID from SMBIOS, all zeros on a board (or VM) without a UUID
/// (docs/quirks.md 34): never an identity by itself. Behind a relay without option 79 the
/// node is still found, by the EUI-64 of the relay's peer-address (the client's link-local
/// source), and gets its script URL.
#[test]
fn ipxe_with_a_zero_duid_uuid_is_found_by_its_link_local_source_even_relayed() {
    let (mut e, mut b) = (matrix_engine(), Bindings::default());
    let zero_uuid = [&[0u8, 4][..], &[0u8; 16]].concat();
    let mut m = os_client(MsgType::Solicit, zero_uuid.clone(), 0xcbb8_a19d, false);
    m.opts.push(Opt::UserClass(vec![b"iPXE".to_vec()]));
    set_oro(&mut m, vec![59, 23]);
    // Directly on the link: the source is iPXE's EUI-64 link-local address.
    let (r, _, events) = reply(run(&mut e, &mut b, &m, &[], "fe80::5054:ff:fe6d:4"));
    assert_eq!(leased(&r), vec![a("fd00:6d:1::101")]);
    assert!(events.iter().any(|ev| format!("{ev:?}").contains("Eui64Source")), "{events:?}");
    let url = r.opts.iter().find_map(|o| if let Opt::BootfileUrl(u) = o { Some(u.clone()) } else { None });
    assert_eq!(url.as_deref(), Some("http://[fd00:6d:1::1]:8080/v1/nodes/matrix-ipxe/ipxe"));
    // The same DUID from a host the inventory does not know: silence, not matrix-ipxe's address.
    let stranger = run(&mut e, &mut b, &m, &[], "fe80::5054:ff:fe00:99");
    assert!(matches!(stranger, Outcome::Silent { why: Silence::UnknownClient, .. }), "{stranger:?}");
    // Relayed (no option 79): the relay's peer-address is the client's link-local source.
    let relay = rack2_relay();
    let (r, ..) = reply(run(&mut e, &mut b, &m, std::slice::from_ref(&relay), "fd00:6d:1::fe"));
    assert_eq!(leased(&r), vec![a("fd00:6d:2::100")], "matrix-relayed, found through the relay's peer-address");
}
