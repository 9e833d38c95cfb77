//! The part of a TFTP request metal6 owns: which file a requested name may open.
//!
//! async-tftp (0.4) parses the RRQ/WRQ packet itself — opcode, NUL-terminated UTF-8 filename,
//! mode, option/value pairs — in a crate-private parser, and hands our handler
//! (`netboot::tftp::TftpHandler`) the filename as a `Path`. That parser is the library's and
//! cannot be called from here; this target splits its input the same way (async-tftp 0.4.2,
//! `src/parse.rs`: what it would refuse, we skip) only to reach the filename as the handler
//! gets it. An input that is not such a packet is taken as the filename itself, so the path
//! rules are fuzzed directly too.
//!
//! Then the handler's pure rules: the name as UTF-8 (`Path::to_str`) through
//! `http::files::relative_path`, the same rule as HTTP. Must never panic; an accepted path has
//! only normal components (no `..`, root, prefix or `.`), none holding a NUL, a backslash or a
//! separator, so joining it to the artifact root stays under the root (`check_inside` then
//! only has symlinks to catch, which needs a filesystem: `crates/cli/tests/tftp.rs`).
//! Write requests are refused before any path rule (`write_req_open`), so they add nothing.
//!
//! Not covered: the library's packet parser, option negotiation (blksize, tsize, timeout,
//! windowsize are the library's, bounded by `TftpServerBuilder` in `netboot::tftp`) and the
//! transfer itself.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use metal6_netboot::http::files;

const RRQ: u16 = 1;
const WRQ: u16 = 2;

/// A NUL-terminated UTF-8 string and what follows it (async-tftp's `parse_nul_str`).
fn nul_str(input: &[u8]) -> Option<(&str, &[u8])> {
    let end = input.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&input[..end]).ok()?, &input[end + 1..]))
}

/// The filename of an RRQ or WRQ the library would accept, with the opcode.
fn request_filename(p: &[u8]) -> Option<(u16, &str)> {
    let opcode = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
    if opcode != RRQ && opcode != WRQ {
        return None;
    }
    let (filename, rest) = nul_str(&p[2..])?;
    let (mode, mut rest) = nul_str(rest)?;
    if !["netascii", "octet", "mail"].iter().any(|m| mode.eq_ignore_ascii_case(m)) {
        return None;
    }
    // Options come in name/value pairs of NUL-terminated strings; their values are the
    // library's to judge (an unusable value is ignored, not refused).
    while !rest.is_empty() {
        let (_, r) = nul_str(rest)?;
        let (_, r) = nul_str(r)?;
        rest = r;
    }
    Some((opcode, filename))
}

fn check_path(requested: &str) {
    // What `TftpHandler::open` does before touching the disk.
    let Some(name) = Path::new(requested).to_str() else { return };
    let Ok(rel) = files::relative_path(name) else { return };
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

fuzz_target!(|data: &[u8]| {
    match request_filename(data) {
        Some((RRQ, filename)) => check_path(filename),
        Some(_) => {}
        None => {
            if let Ok(name) = std::str::from_utf8(data)
                && !name.contains('\0')
            {
                check_path(name);
            }
        }
    }
});
