//! TFTP as metal6 serves it: the request parser, option negotiation, the sender's state
//! machine under arbitrary ACKs and timeouts, and which file a requested name may open.
//!
//! The input is a request datagram; when it parses, the bytes after its last NUL drive a
//! transfer of a file whose length comes from the first eight of them: each following pair is
//! an ACK number, a pair starting 0xff 0xff a timeout. Must never panic, and the sender must
//! only ever name blocks of the file (or the OACK, block 0, before any data), never move
//! backwards, and end only by `Done` after the client acknowledged the last block or by
//! `GiveUp` after its retries. Then the handler's pure path rules (`http::files`), as before.
//!
//! Not covered: the socket and file I/O around it (`crates/cli/tests/tftp.rs` runs tftp-hpa's
//! and atftp's clients against the real server).
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use metal6_netboot::http::files;
use metal6_tftp::{Limits, Sender, Step};

fn check_path(requested: &str) {
    // What `TftpHandler::open` does before touching the disk.
    let Ok(rel) = files::relative_path(requested) else { return };
    let root = Path::new("/srv/metal6/artifacts");
    for c in rel.components() {
        let Component::Normal(seg) = c else { panic!("{requested:?} gave a {c:?} component") };
        let seg = seg.to_str().expect("segments of a UTF-8 name are UTF-8");
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{requested:?} gave segment {seg:?}");
        assert!(!seg.contains(['/', '\\', '\0']), "{requested:?} gave segment {seg:?}");
    }
    let full = root.join(&rel);
    assert!(full.starts_with(root), "{requested:?} left the root: {}", full.display());
    assert_eq!(files::check_inside(root, &full), Ok(()));
}

fn drive(req: &metal6_tftp::Request, script: &[u8]) {
    let (len_bytes, acks) = script.split_at(script.len().min(8));
    let mut l = [0u8; 8];
    l[..len_bytes.len()].copy_from_slice(len_bytes);
    // Up to 4 GiB: enough for the 16-bit block numbers to wrap many times.
    let len = u64::from_le_bytes(l) & 0xffff_ffff;
    let neg = metal6_tftp::negotiate(&req.options, Limits { max_blksize: 1428, max_windowsize: 64 }, len);
    assert!((8..=1428).contains(&neg.blksize) || neg.blksize == 512);
    assert!((1..=64).contains(&neg.windowsize));
    let mut s = Sender::new(&neg, len, 3);
    let blocks = s.blocks();
    assert_eq!(blocks, len / u64::from(neg.blksize) + 1);
    let mut low = 0;
    let check = |step: &Step, low: &mut u64| match step {
        Step::Send(r) => {
            assert!(r.start < r.end && r.end <= blocks + 1, "{r:?} of {blocks}");
            assert!(r.start >= *low, "moved back: {r:?} after {low}");
            assert!(r.start > 0 || (neg.oack.is_some() && r.end == 1), "block 0 is the OACK alone");
            assert!(r.end - r.start <= u64::from(neg.windowsize));
            *low = r.start;
        }
        Step::Wait | Step::Done | Step::GiveUp => {}
    };
    let first = s.start();
    check(&first, &mut low);
    for pair in acks.chunks_exact(2) {
        let ack = (pair != [0xff, 0xff]).then(|| u16::from_be_bytes([pair[0], pair[1]]));
        let step = match ack {
            Some(n) => s.on_ack(n),
            None => s.on_timeout(),
        };
        check(&step, &mut low);
        if step == Step::Done {
            // Only the ACK of the last block ends a transfer, and only once it was sent.
            assert_eq!(ack, Some(Sender::wire_number(blocks)), "done on {ack:?} of {blocks} blocks");
            assert!(low + u64::from(neg.windowsize) > blocks, "done before the last window was sent");
            return;
        }
        if step == Step::GiveUp {
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match metal6_tftp::parse_request(data) {
        Ok(req) => {
            check_path(&req.filename);
            let end = data.iter().rposition(|b| *b == 0).map_or(data.len(), |i| i + 1);
            drive(&req, &data[end..]);
        }
        Err(_) => {
            if let Ok(name) = std::str::from_utf8(data)
                && !name.contains('\0')
            {
                check_path(name);
            }
        }
    }
});
