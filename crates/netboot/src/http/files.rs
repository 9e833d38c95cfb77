//! Serving artifacts from the artifact root: path safety, byte ranges, validators.
//!
//! Everything here is decided from the request line, headers and file metadata, without I/O,
//! so each rule is a unit test. The server module opens and streams.

use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a path is refused. Every refusal is a 404 on the wire (no oracle for what exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `..`, a NUL, a backslash, an encoded separator, or a malformed escape.
    Traversal,
    /// The resolved file lies outside the root (a symlink pointing out).
    OutsideRoot,
}

/// Maps a URL path under `prefix` to a relative file path, refusing anything that could
/// climb out of the root. Percent-decoding happens once, here; decoded `/`, `\` and NUL are
/// refused rather than interpreted.
pub fn relative_path(url_path: &str) -> Result<PathBuf, Refusal> {
    let decoded = percent_decode(url_path).ok_or(Refusal::Traversal)?;
    let mut out = PathBuf::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => continue,
            ".." => return Err(Refusal::Traversal),
            s if s.contains(['\\', '\0']) || s.contains("%2f") || s.contains("%2F") => return Err(Refusal::Traversal),
            s => out.push(s),
        }
    }
    // Defence in depth: the result has only normal components.
    if out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Refusal::Traversal);
    }
    Ok(out)
}

/// After opening, the canonical path must still be inside the canonical root (symlinks out
/// of the root are refused).
pub fn check_inside(root_canonical: &Path, file_canonical: &Path) -> Result<(), Refusal> {
    if file_canonical.starts_with(root_canonical) { Ok(()) } else { Err(Refusal::OutsideRoot) }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if v == b'/' || v == b'\\' || v == 0 {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A strong validator from size and modification time (nanoseconds): it changes whenever the
/// file is replaced or rewritten.
pub fn etag(len: u64, modified: SystemTime) -> String {
    let ns = modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("\"{len:x}-{ns:x}\"")
}

/// The single byte range a `Range` header asks for, resolved against the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No (usable) Range header: send everything.
    Full,
    /// Inclusive first and last byte.
    Part(u64, u64),
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

/// RFC 9110 §14.2. Only single ranges are honoured; a multi-range request gets the whole
/// representation (allowed: a server may ignore Range).
pub fn parse_range(header: Option<&str>, len: u64) -> RangeReq {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeReq::Full };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeReq::Full };
    let (a, b) = (a.trim(), b.trim());
    // Anything but digits makes the header invalid, and an invalid Range is ignored (§14.2);
    // digits beyond u64 are a valid, huge position (clamped like any other past the end).
    let (Some(first), Some(last)) = (position(a), position(b)) else { return RangeReq::Full };
    let end = len.saturating_sub(1);
    let range = match (first, last) {
        (None, None) => return RangeReq::Full,
        // Suffix: the last N bytes.
        (None, Some(0)) => return RangeReq::Unsatisfiable,
        (None, Some(n)) => (len.saturating_sub(n), end),
        (Some(first), None) => (first, end),
        (Some(first), Some(last)) if last < first => return RangeReq::Full,
        (Some(first), Some(last)) => (first, last.min(end)),
    };
    if len == 0 || range.0 >= len {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(range.0, range.1)
}

/// A range position: `Some(None)` when empty, `Some(Some(n))` for 1*DIGIT (saturating at
/// `u64::MAX`), `None` when it is not a position at all (signs, spaces, letters).
fn position(s: &str) -> Option<Option<u64>> {
    if s.is_empty() {
        return Some(None);
    }
    if !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(Some(s.parse::<u64>().unwrap_or(u64::MAX)))
}

/// Conditional request outcome (RFC 9110 §13.2.2 order: If-None-Match before
/// If-Modified-Since; If-Range decides whether a Range is honoured).
pub fn not_modified(
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    etag: &str,
    modified: SystemTime,
) -> bool {
    if let Some(inm) = if_none_match {
        return inm.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag);
    }
    match if_modified_since.and_then(|d| httpdate::parse_http_date(d).ok()) {
        // HTTP dates have one-second resolution.
        Some(since) => {
            modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
                <= since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
        }
        None => false,
    }
}

/// Whether a Range may be honoured given If-Range (an ETag or a date must still match).
pub fn if_range_allows(if_range: Option<&str>, etag: &str, modified: SystemTime) -> bool {
    match if_range.map(str::trim) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        Some(v) => {
            httpdate::parse_http_date(v).is_ok_and(|d| httpdate::fmt_http_date(d) == httpdate::fmt_http_date(modified))
        }
    }
}

pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        // OVMF accepts an NBP by `.efi` suffix or this type (notes §11).
        Some("efi") => "application/efi",
        Some("json") => "application/json",
        Some("txt" | "ipxe" | "network") => "text/plain; charset=utf-8",
        Some("yaml" | "yml") => "application/yaml",
        Some("qcow2" | "raw" | "img" | "zst" | "gz") => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

/// The fast path's request-head classifier (`http::fast`, a private module), re-exported for the
/// fuzz target `http_head` in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::super::fast::{Head, Next, classify};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        assert_eq!(relative_path("/boot/installer.efi"), Ok(PathBuf::from("boot/installer.efi")));
        assert_eq!(relative_path("boot//./x%20y.efi"), Ok(PathBuf::from("boot/x y.efi")));
        for bad in [
            "../etc/passwd",
            "/boot/../../etc/passwd",
            "%2e%2e/etc/passwd",
            "%2E%2E/x",
            "a/%2f/b",
            "a%5c..%5cb",
            "x%00",
            "%zz",
            "%2",
            "a\\..\\b",
        ] {
            assert!(relative_path(bad).is_err(), "{bad}");
        }
        assert_eq!(check_inside(Path::new("/srv/a"), Path::new("/srv/a/b")), Ok(()));
        assert_eq!(check_inside(Path::new("/srv/a"), Path::new("/etc/passwd")), Err(Refusal::OutsideRoot));
        assert_eq!(check_inside(Path::new("/srv/a"), Path::new("/srv/ab/c")), Err(Refusal::OutsideRoot));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), RangeReq::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-500"), 100), RangeReq::Part(0, 99));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), RangeReq::Part(50, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=9-2"), 100), RangeReq::Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), RangeReq::Unsatisfiable);
        // Hostile or broken ends: an invalid header is ignored, never a bogus length or a
        // panic (`bytes=5-x` once gave Content-Length 18446744073709551611).
        assert_eq!(parse_range(Some("bytes=5-x"), 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=+5-9"), 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=5-+9"), 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=x-"), 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=-x"), 100), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=5-99999999999999999999999"), 100), RangeReq::Part(5, 99));
        assert_eq!(parse_range(Some("bytes=99999999999999999999999-"), 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-99999999999999999999999"), 100), RangeReq::Part(0, 99));
        for (a, b) in [(0u64, 0u64), (5, 99), (99, 99)] {
            let RangeReq::Part(x, y) = parse_range(Some(&format!("bytes={a}-{b}")), 100) else { panic!("part") };
            assert!(x <= y && y < 100);
        }
    }

    #[test]
    fn validators() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let tag = etag(10, t);
        assert!(not_modified(Some(&tag), None, &tag, t));
        assert!(not_modified(Some(&format!("W/{tag}")), None, &tag, t));
        assert!(!not_modified(Some("\"other\""), Some(&httpdate::fmt_http_date(t)), &tag, t), "If-None-Match wins");
        assert!(not_modified(None, Some(&httpdate::fmt_http_date(t)), &tag, t));
        assert!(!not_modified(None, Some(&httpdate::fmt_http_date(t - Duration::from_secs(5))), &tag, t));
        assert!(if_range_allows(Some(&tag), &tag, t));
        assert!(!if_range_allows(Some("\"stale\""), &tag, t));
        assert!(if_range_allows(Some(&httpdate::fmt_http_date(t)), &tag, t));
    }
}
