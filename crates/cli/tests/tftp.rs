//! The TFTP service of `metal6 serve` against tftp-hpa's and atftp's clients over IPv6:
//! byte-identical transfers (plain RFC 1350, and with blksize/tsize/windowsize), traversal and
//! writes refused, fetches in the node's timeline.

mod common;

use common::{Netns, Server, lab_link, root};

struct Fixture {
    _srv: Netns,
    cli: Netns,
    server: Server,
    www: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let (srv, cli) = lab_link("52:54:00:6d:00:02");
    cli.exec("ip -6 addr add fd00:6d:1::101/64 dev m6c0 nodad");
    let www = tempfile::tempdir().expect("www");
    let data: Vec<u8> = (0..3_000_017u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(www.path().join("installer.efi"), data).expect("file");
    std::os::unix::fs::symlink("/etc/passwd", www.path().join("passwd")).expect("symlink");
    let arg = www.path().to_str().expect("utf-8").to_owned();
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &["--no-ra", "--artifacts", &arg]);
    Fixture { _srv: srv, cli, server, www }
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    std::fs::read(a).ok().zip(std::fs::read(b).ok()).is_some_and(|(x, y)| x == y)
}

#[test]
fn tftp_hpa_and_atftp_fetch_byte_identical_files() {
    require_netns!();
    require_tool!("tftp");
    require_tool!("atftp");
    let f = fixture();
    let out = f.server.state.path();
    let want = f.www.path().join("installer.efi");
    // tftp-hpa: plain RFC 1350, 512-byte blocks, lock-step.
    let o = f.cli.try_exec(&format!(
        "cd {} && timeout 60 tftp -6 fd00:6d:1::1 -m binary -c get installer.efi hpa.efi",
        out.display()
    ));
    assert!(
        o.status.success() && same_file(&out.join("hpa.efi"), &want),
        "tftp-hpa: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // atftp with the options firmware uses: blksize, tsize and RFC 7440 windowsize.
    let o = f.cli.try_exec(&format!(
        "timeout 60 atftp --trace --option 'blksize 1428' --option 'tsize 0' --option 'windowsize 16' -g -r installer.efi -l {}/w.efi fd00:6d:1::1 69",
        out.display()
    ));
    let log = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && same_file(&out.join("w.efi"), &want), "atftp: {log}");
    let oack = log.lines().find(|l| l.starts_with("received OACK")).unwrap_or_default();
    assert!(
        oack.contains("windowsize: 16") && oack.contains("blksize: 1428") && oack.contains("tsize: 3000017"),
        "options acknowledged: {oack}"
    );
    assert!(
        log.lines().filter(|l| l.starts_with("sent ACK")).count() < 3000017 / 1428 / 8,
        "windowed: far fewer ACKs than blocks"
    );
    // Both fetches are in lab-node-2's timeline (identified by its source address).
    let fetches = f
        .server
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "boot-fetch" && e["node"] == "lab-node-2" && e["source"] == "tftp")
        .count();
    assert_eq!(fetches, 2);
}

#[test]
fn tftp_refuses_traversal_and_writes() {
    require_netns!();
    require_tool!("tftp");
    let f = fixture();
    let out = f.server.state.path();
    for path in [
        "../../etc/passwd",
        "/../etc/passwd",
        "%2e%2e/%2e%2e/etc/passwd",
        "..\\..\\etc\\passwd",
        "passwd",
        "/etc/passwd",
    ] {
        let o = f.cli.try_exec(&format!(
            "cd {} && timeout 20 tftp -6 fd00:6d:1::1 -m binary -c get '{path}' leak 2>&1",
            out.display()
        ));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text.contains("Error code 1") || text.contains("not found"), "{path}: {text}");
        assert!(std::fs::metadata(out.join("leak")).map_or(true, |m| m.len() == 0), "{path} leaked data");
    }
    std::fs::write(out.join("upload"), b"x").expect("write");
    let o = f.cli.try_exec(&format!(
        "cd {} && timeout 20 tftp -6 fd00:6d:1::1 -m binary -c put upload upload 2>&1",
        out.display()
    ));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("Error code 2") || text.to_lowercase().contains("denied"), "write refused: {text}");
    assert!(!f.www.path().join("upload").exists());
}

#[test]
fn tftp_rolls_block_numbers_over_refuses_netascii_and_retransmits() {
    require_netns!();
    require_tool!("tftp");
    require_tool!("python3");
    let f = fixture();
    let out = f.server.state.path();
    // 70,000 blocks of 512 bytes: block numbers pass 65535 and roll over to 0, as tftp-hpa's
    // client and EDK2 expect.
    let big: Vec<u8> = (0..70_000u32 * 512 + 99).map(|i| (i.wrapping_mul(2_246_822_519) >> 24) as u8).collect();
    std::fs::write(f.www.path().join("big.bin"), &big).expect("big file");
    let o = f.cli.try_exec(&format!(
        "cd {} && timeout 120 tftp -6 fd00:6d:1::1 -m binary -c get big.bin big.bin",
        out.display()
    ));
    assert!(
        o.status.success() && same_file(&out.join("big.bin"), &f.www.path().join("big.bin")),
        "rollover: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // netascii would rewrite a binary's line ends: refused, saying what to use instead.
    let o = f.cli.try_exec(&format!(
        "cd {} && timeout 20 tftp -6 fd00:6d:1::1 -m netascii -c get installer.efi ascii.efi 2>&1",
        out.display()
    ));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("octet (binary) mode only"), "netascii: {text}");
    // The edges a raw client can provoke: retransmission after 3 s, one transfer for a
    // repeated request, no answer to a duplicate ACK, nothing after the client's ERROR.
    let script = root().join("tests/netboot/tftp_edges.py");
    let o = f.cli.try_exec(&format!("timeout 60 python3 {} fd00:6d:1::1 installer.efi 3000017", script.display()));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    let retransmit = v["retransmit"].as_f64().expect("retransmit");
    assert!((2.5..6.0).contains(&retransmit), "block 1 resent after {retransmit} s");
    assert_eq!(
        (v["duplicate"].as_u64(), v["dup_ack"].as_u64(), v["after_error"].as_u64()),
        (Some(1), Some(0), Some(0)),
        "{v}"
    );
    let stats = f.server.stats();
    assert!(stats["refused"]["tftp-mode"].as_u64() >= Some(1), "{stats}");
}
