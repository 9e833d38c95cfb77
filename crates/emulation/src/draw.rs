//! `metal6 emulate draw`: the constellation at one instant as an SVG — equirectangular map
//! (4 px per degree), satellites coloured by plane, ISLs, ground stations and their links.
//! Links that cross the antimeridian are drawn as two halves.

use std::fmt::Write;

use crate::geometry::lat_lon;
use crate::topology::{End, LinkKind, Topology};

const W: f64 = 1440.0;
const H: f64 = 720.0;

fn xy(lat: f64, lon: f64) -> (f64, f64) {
    ((lon + 180.0) * W / 360.0, (90.0 - lat) * H / 180.0)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn segment(out: &mut String, a: (f64, f64), b: (f64, f64), class: &str) {
    let ((lat1, lon1), (lat2, lon2)) = (a, b);
    if (lon2 - lon1).abs() <= 180.0 {
        let (p, q) = (xy(lat1, lon1), xy(lat2, lon2));
        let _ =
            writeln!(out, r#"<line class="{class}" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#, p.0, p.1, q.0, q.1);
        return;
    }
    // Across the antimeridian: unwrap b next to a, cut at the map edge, draw both halves.
    let lon2u = if lon2 < lon1 { lon2 + 360.0 } else { lon2 - 360.0 };
    let edge = if lon2u > lon1 { 180.0 } else { -180.0 };
    let f = (edge - lon1) / (lon2u - lon1);
    let latm = lat1 + f * (lat2 - lat1);
    segment(out, (lat1, lon1), (latm, edge), class);
    segment(out, (latm, -edge), (lat2, lon2), class);
}

/// The SVG document for `topo` at `t` seconds.
pub fn svg(topo: &Topology, t: f64) -> String {
    let pos: Vec<(f64, f64)> = topo.positions(t).into_iter().map(lat_lon).collect();
    let mut out = String::new();
    let _ = writeln!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#);
    out.push_str(
        "<style>.grid{stroke:#ddd;stroke-width:0.5}.intra-plane{stroke:#3b7dd8;stroke-width:0.6}\
         .inter-plane{stroke:#e08a1e;stroke-width:0.6}.ground{stroke:#2a2;stroke-width:1.2;stroke-dasharray:3 2}\
         .gs{fill:#2a2}text{font:10px sans-serif}</style>\n",
    );
    let _ = writeln!(out, r##"<rect width="{W}" height="{H}" fill="#fbfbff"/>"##);
    for lon in (-180..=180).step_by(30) {
        let x = (f64::from(lon) + 180.0) * W / 360.0;
        let _ = writeln!(out, r#"<line class="grid" x1="{x:.1}" y1="0" x2="{x:.1}" y2="{H}"/>"#);
    }
    for lat in (-90..=90).step_by(30) {
        let y = (90.0 - f64::from(lat)) * H / 180.0;
        let _ = writeln!(out, r#"<line class="grid" x1="0" y1="{y:.1}" x2="{W}" y2="{y:.1}"/>"#);
    }
    for l in topo.links_at(t) {
        let here = |e: End| match e {
            End::Sat { sat, .. } => pos[sat as usize],
            End::Station { station } => {
                let s = &topo.stations[station as usize];
                (s.lat_deg, s.lon_deg)
            }
        };
        let class = match l.kind {
            LinkKind::IntraPlane => "intra-plane",
            LinkKind::InterPlane => "inter-plane",
            LinkKind::Ground => "ground",
        };
        segment(&mut out, here(l.a), here(l.b), class);
    }
    let planes = topo.shell.planes.max(1);
    for (i, (lat, lon)) in pos.iter().enumerate() {
        let (x, y) = xy(*lat, *lon);
        let (p, s) = topo.plane_slot(u32::try_from(i).unwrap_or(0));
        let hue = 360 * p / planes;
        let _ = writeln!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="2" fill="hsl({hue},70%,45%)"><title>sat {i} (plane {p}, slot {s})</title></circle>"#
        );
    }
    for s in &topo.stations {
        let (x, y) = xy(s.lat_deg, s.lon_deg);
        let _ = writeln!(
            out,
            r#"<rect class="gs" x="{:.1}" y="{:.1}" width="7" height="7"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x - 3.5,
            y - 3.5,
            x + 6.0,
            y + 4.0,
            esc(&s.name)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="8" y="{:.0}">{} planes × {} at {} km, {}°, t = {t:.0} s</text>"#,
        H - 8.0,
        topo.shell.planes,
        topo.shell.per_plane,
        topo.shell.altitude_km,
        topo.shell.inclination_deg
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{GroundStation, Shell, ShellKind};

    #[test]
    fn one_circle_per_satellite_and_a_line_per_link_half() {
        let shell = Shell {
            kind: ShellKind::Delta,
            planes: 6,
            per_plane: 6,
            phasing: 1,
            altitude_km: 550.0,
            inclination_deg: 53.0,
        };
        let topo = Topology::new(shell, vec![GroundStation { name: "a<b".into(), lat_deg: 0.0, lon_deg: 0.0 }]);
        let s = svg(&topo, 0.0);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<circle").count(), 36);
        let links = topo.links_at(0.0).len();
        let drawn = s.matches(r#"class="intra-plane""#).count()
            + s.matches(r#"class="inter-plane""#).count()
            + s.matches(r#"class="ground""#).count();
        assert!(drawn >= links && drawn <= 2 * links, "{drawn} lines for {links} links");
        assert!(s.contains("a&lt;b"), "names are escaped");
    }

    #[test]
    fn antimeridian_links_are_split_at_the_edge() {
        let mut out = String::new();
        segment(&mut out, (0.0, 170.0), (10.0, -170.0), "x");
        assert_eq!(out.matches("<line").count(), 2);
        assert!(out.contains(r#"x2="1440.0""#) && out.contains(r#"x1="0.0""#), "{out}");
    }
}
