//! Node timelines as pictures: the phase each event puts a node in (one definition, used by
//! `metal6 serve`, `lab up`, `status` and mirrored by the dashboard's script), the phases as
//! segments in time, and an SVG with one bar per segment per node on a shared time axis — what
//! `metal6 status --timeline FILE` and `lab up` write. Pure: events in, text out.

use std::fmt::Write;

use serde_json::Value;

/// The phase an event puts a node in: an explicit `phase` (installer and system reports) wins;
/// otherwise derived from the server's own events.
pub fn phase_of(e: &Value) -> Option<&str> {
    if let Some(p) = e.get("phase").and_then(Value::as_str) {
        return Some(p);
    }
    Some(match e.get("kind").and_then(Value::as_str)? {
        "leased" => match e.get("stage").and_then(Value::as_str) {
            Some("firmware-http" | "firmware-pxe") => "firmware-dhcp",
            Some("ipxe") => "ipxe",
            _ => "dhcp",
        },
        "boot-fetch" => "netboot",
        "declined" => "address-conflict",
        "identity-conflict" => "identity-conflict",
        _ => return None,
    })
}

/// Phases that are moments, not spans: drawn as a thin bar where they happen.
const MOMENTS: [&str; 4] = ["ready", "cluster-joined", "failed", "tls-rejected"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub phase: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// A node's phases in time: a new segment at each change of phase; the last runs until
/// `now_ms` (a moment phase ends where it starts).
pub fn segments(events: &[Value], now_ms: u64) -> Vec<Segment> {
    let mut timed: Vec<(u64, &str)> =
        events.iter().filter_map(|e| Some((e.get("ts_ms").and_then(Value::as_u64)?, phase_of(e)?))).collect();
    timed.sort_by_key(|(t, _)| *t);
    let mut out: Vec<Segment> = vec![];
    for (t, p) in timed {
        if out.last().is_some_and(|s| s.phase == p) {
            continue;
        }
        if let Some(last) = out.last_mut() {
            last.end_ms = t;
        }
        out.push(Segment { phase: p.to_owned(), start_ms: t, end_ms: t });
    }
    if let Some(last) = out.last_mut()
        && !MOMENTS.contains(&last.phase.as_str())
    {
        last.end_ms = now_ms.max(last.start_ms);
    }
    out
}

/// Text for an XML attribute or element: the five markup characters escaped, and characters
/// XML 1.0 forbids (controls but tab, newline, return) replaced, so a node's report cannot
/// make the picture unreadable.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\t' | '\n' | '\r' => o.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// A fixed colour per known phase, a stable hue for any other.
pub fn color(phase: &str) -> String {
    // The dashboard's script has the same palette (crates/netboot/src/http/dashboard/dashboard.js).
    let known = [
        ("firmware-dhcp", "#8fb3e0"),
        ("dhcp", "#6a9bd6"),
        ("netboot", "#4f86c6"),
        ("ipxe", "#3b6fb0"),
        ("installer-kernel", "#b3a0e0"),
        ("installer-initramfs", "#a793dc"),
        ("installer", "#9c86d6"),
        ("writing-image", "#e0a35c"),
        ("image-written", "#d08a3c"),
        ("configured", "#7fb8c4"),
        ("installed", "#5aa0a8"),
        ("rebooting", "#c9c24f"),
        ("ready", "#4caf6a"),
        ("cluster-joined", "#2e8b57"),
        ("waiting", "#c0c6ce"),
        ("failed", "#d9534f"),
        ("tls-rejected", "#d9534f"),
        ("address-conflict", "#d9534f"),
        ("identity-conflict", "#d9534f"),
    ];
    if let Some((_, c)) = known.iter().find(|(p, _)| *p == phase) {
        return (*c).to_owned();
    }
    let h = phase.bytes().fold(0u32, |h, b| (h * 31 + u32::from(b)) % 360);
    format!("hsl({h}, 45%, 62%)")
}

fn dur(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// One row per node, a bar (`<rect class="bar" data-node=… data-phase=…>`) per segment, on a
/// time axis shared by all nodes from the first event to `now_ms`, with a legend.
pub fn svg(nodes: &[(String, Vec<Segment>)], now_ms: u64) -> String {
    let t0 = nodes.iter().flat_map(|(_, s)| s.iter().map(|s| s.start_ms)).min().unwrap_or(now_ms);
    let span = now_ms.saturating_sub(t0).max(1000) as f64;
    let (left, width, row, top) = (160.0, 900.0, 18.0, 24.0);
    let mut phases: Vec<&str> = vec![];
    for (_, segs) in nodes {
        for s in segs {
            if !phases.contains(&s.phase.as_str()) {
                phases.push(&s.phase);
            }
        }
    }
    let height = top + row * nodes.len() as f64 + 16.0 + 18.0 * phases.len().div_ceil(6) as f64;
    let x = |t: u64| left + (t.saturating_sub(t0)) as f64 / span * width;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        left + width + 40.0
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // The smallest round step that gives at most six ticks.
    let step = [1u64, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400]
        .iter()
        .map(|s| s * 1000)
        .find(|s| span / (*s as f64) <= 6.0)
        .unwrap_or(86_400_000);
    for t in (t0..=t0 + span as u64).step_by(usize::try_from(step).unwrap_or(usize::MAX)) {
        let _ = writeln!(
            o,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="#c5ccd4"/><text x="{3:.1}" y="14">+{4}</text>"##,
            x(t),
            top - 4.0,
            top + row * nodes.len() as f64,
            x(t) + 2.0,
            dur(t - t0)
        );
    }
    for (i, (name, segs)) in nodes.iter().enumerate() {
        let y = top + row * i as f64;
        let _ = writeln!(o, r#"<text x="4" y="{:.1}">{}</text>"#, y + row - 5.0, esc(name));
        for s in segs {
            let _ = writeln!(
                o,
                r#"<rect class="bar" data-node="{}" data-phase="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} {}</title></rect>"#,
                esc(name),
                esc(&s.phase),
                x(s.start_ms),
                y + 1.0,
                (x(s.end_ms) - x(s.start_ms)).max(2.0),
                row - 2.0,
                color(&s.phase),
                esc(name),
                esc(&s.phase),
                dur(s.end_ms - s.start_ms)
            );
        }
    }
    let legend_y = top + row * nodes.len() as f64 + 14.0;
    for (i, p) in phases.iter().enumerate() {
        let (lx, ly) = (4.0 + 170.0 * (i % 6) as f64, legend_y + 18.0 * (i / 6) as f64);
        let _ = writeln!(
            o,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 9.0,
            color(p),
            lx + 14.0,
            esc(p)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn phases_from_events() {
        assert_eq!(phase_of(&json!({"kind": "leased", "stage": "firmware-http"})), Some("firmware-dhcp"));
        assert_eq!(phase_of(&json!({"kind": "leased", "stage": "ipxe"})), Some("ipxe"));
        assert_eq!(phase_of(&json!({"kind": "leased", "stage": "os"})), Some("dhcp"));
        assert_eq!(phase_of(&json!({"kind": "boot-fetch"})), Some("netboot"));
        assert_eq!(phase_of(&json!({"kind": "progress", "phase": "writing-image"})), Some("writing-image"));
        assert_eq!(phase_of(&json!({"kind": "document"})), None);
    }

    #[test]
    fn segments_and_bars() {
        let events = vec![
            json!({"ts_ms": 1000, "kind": "leased", "stage": "firmware-http"}),
            json!({"ts_ms": 1500, "kind": "document"}),
            json!({"ts_ms": 3000, "kind": "boot-fetch"}),
            json!({"ts_ms": 9000, "phase": "writing-image"}),
            json!({"ts_ms": 9500, "phase": "writing-image"}),
            json!({"ts_ms": 20000, "phase": "ready"}),
        ];
        let s = segments(&events, 25_000);
        let names: Vec<&str> = s.iter().map(|s| s.phase.as_str()).collect();
        assert_eq!(names, ["firmware-dhcp", "netboot", "writing-image", "ready"]);
        assert_eq!((s[0].start_ms, s[0].end_ms), (1000, 3000));
        assert_eq!((s[2].start_ms, s[2].end_ms), (9000, 20000));
        assert_eq!((s[3].start_ms, s[3].end_ms), (20000, 20000), "ready is a moment");
        let picture = svg(&[("n<1>".to_owned(), s)], 25_000);
        assert_eq!(picture.matches(r#"class="bar""#).count(), 4);
        assert!(picture.contains(r#"data-node="n&lt;1&gt;" data-phase="writing-image""#));
        assert!(picture.starts_with("<svg") && picture.ends_with("</svg>\n"));
        // A node's report names its phase: controls cannot break the XML.
        let odd = segments(&[json!({"ts_ms": 1, "phase": "a\u{1}b\"<c>"})], 2);
        let picture = svg(&[("n".to_owned(), odd)], 2);
        assert!(picture.contains("a\u{fffd}b&quot;&lt;c&gt;") && !picture.contains('\u{1}'));
    }
}
