//! HTTP request heads as the artifact fast path reads them off the socket
//! (`netboot::http::fast::classify`: httparse, then artifact-or-hyper), and for an artifact the
//! pure rules `netboot::http::resolve_file` applies, in its order: the path
//! (`files::relative_path`), conditionals (`files::not_modified`), `If-Range`
//! (`files::if_range_allows`) and `Range` (`files::parse_range`) against a few file lengths.
//!
//! Must never panic, and:
//! - a complete head's length is within the buffer, and the head alone classifies the same;
//! - an artifact request is GET or HEAD with an origin-form path, no query, not the API's;
//! - an accepted path has only normal components (stays under the root);
//! - `RangeReq::Part(a, b)` for a file of `len` bytes has `a <= b < len`, so the response's
//!   `b - a + 1` never wraps and `Content-Range` never promises bytes past the end.
//!
//! Not covered: what needs the file system or the socket (canonicalizing, symlinks, sendfile,
//! the hyper path), and the header-to-rule glue inside `resolve_file` (in `http/mod.rs`),
//! which is mirrored here: which header feeds which rule.
#![no_main]

use std::path::{Component, Path};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use metal6_netboot::http::files::fuzzing::{Head, Next, classify};
use metal6_netboot::http::files::{self, RangeReq};

/// File lengths the rules are checked against: empty, one byte, a typical artifact, the
/// largest; plus one taken from the input.
const LENGTHS: [u64; 4] = [0, 1, 1 << 30, u64::MAX];

fn header<'a>(h: &'a Head, name: &str) -> Option<&'a str> {
    h.headers.get(name).and_then(|v| v.to_str().ok())
}

fn check_artifact(head: &Head, extra_len: u64) {
    assert!(head.method.as_str() == "GET" || head.method.as_str() == "HEAD", "{:?}", head.method);
    assert!(head.path.starts_with('/') && !head.path.contains('?'), "{:?}", head.path);
    assert!(head.path != "/metrics" && head.path != "/v1" && !head.path.starts_with("/v1/"), "{:?}", head.path);
    if let Ok(rel) = files::relative_path(&head.path) {
        assert!(rel.components().all(|c| matches!(c, Component::Normal(_))), "{:?} gave {rel:?}", head.path);
        let _ = files::content_type(&rel);
    }
    // An mtime with nanoseconds, as files have; and the epoch (a file without one).
    for modified in [UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789), UNIX_EPOCH] {
        for len in LENGTHS.into_iter().chain([extra_len]) {
            let etag = files::etag(len, modified);
            let _ =
                files::not_modified(header(head, "if-none-match"), header(head, "if-modified-since"), &etag, modified);
            let range = if files::if_range_allows(header(head, "if-range"), &etag, modified) {
                files::parse_range(header(head, "range"), len)
            } else {
                RangeReq::Full
            };
            if let RangeReq::Part(a, b) = range {
                assert!(a <= b && b < len, "range {a}-{b} of {len} bytes from {:?}", header(head, "range"));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let extra_len = data.iter().take(8).fold(0u64, |n, b| n << 8 | u64::from(*b));
    match classify(data) {
        Ok(Some(Next::Artifact { req, len })) => {
            assert!(len > 0 && len <= data.len(), "head length {len} of {} bytes", data.len());
            // The bytes after the head belong to the next request: the head alone is the same.
            match classify(&data[..len]) {
                Ok(Some(Next::Artifact { req: again, len: l })) => {
                    assert_eq!(
                        (l, &again.path, again.keep_alive, again.http10),
                        (len, &req.path, req.keep_alive, req.http10)
                    );
                }
                other => panic!("the head alone classified as {other:?}"),
            }
            check_artifact(&req, extra_len);
        }
        Ok(Some(Next::Hyper | Next::Closed)) | Ok(None) => {}
        Ok(Some(Next::Bad(status))) | Err(status) => {
            assert!(status.is_client_error(), "{status}");
        }
    }
    // The Range rule on its own, for header values httparse would not let through.
    if let Ok(text) = std::str::from_utf8(data) {
        for len in LENGTHS.into_iter().chain([extra_len]) {
            if let RangeReq::Part(a, b) = files::parse_range(Some(text), len) {
                assert!(a <= b && b < len, "range {a}-{b} of {len} bytes from {text:?}");
            }
        }
        if let Ok(rel) = files::relative_path(text) {
            assert!(rel.components().all(|c| matches!(c, Component::Normal(_))), "{text:?} gave {rel:?}");
            assert!(Path::new("/srv").join(&rel).starts_with("/srv"));
        }
    }
});
