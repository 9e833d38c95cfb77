//! TLE input: a constellation given as two-line element sets (2LE or 3LE, as CelesTrak serves
//! them), propagated with SGP4, and arranged into the +grid the rest of the model uses.
//!
//! Propagation is the `sgp4` crate (maintained; a pure-Rust port of Vallado's reference SGP4/SDP4,
//! checked against the AIAA 2006-6753 verification cases), with WGS84 and the IAU sidereal time.
//! Its TEME positions are turned Earth-fixed by the Greenwich sidereal angle (polar motion and
//! UT1−UTC are ignored: metres, where links care about kilometres).
//!
//! The grid comes from the satellites' state at the emulation's start (`t = 0`, the newest TLE
//! epoch unless given), not from the raw elements — TLEs of one constellation are a day or more
//! apart, and a 53° shell's nodes regress ~5° a day:
//! - planes are satellites whose right ascension of the ascending node lies within
//!   [`PLANE_TOLERANCE_DEG`] of a neighbour's; every plane must hold the same number;
//! - a plane's slots go by argument of latitude, slot 0 of each plane the satellite nearest the
//!   previous plane's slot 0, so inter-plane ISLs join neighbours;
//! - the planes spanning 360° of node make a delta shell (the last plane links to the first, with
//!   the phase offset that joins nearest neighbours); a gap of half the sky makes a star shell
//!   with its seam there.
//!
//! A constellation that is not one full Walker-like shell is refused with what is wrong and
//! which satellites: several inclinations or altitudes (several shells, or satellites still
//! raising their orbits), uneven planes, repeated catalogue numbers, satellites that do not
//! propagate (decayed) over the first day.

use std::fmt::Write as _;

use sgp4::chrono::{Datelike, NaiveDateTime, TimeDelta, Timelike};

use crate::geometry::{EARTH_RADIUS_KM, Shell, ShellKind, Vec3};

/// Satellites within this much right ascension of each other share a plane.
pub const PLANE_TOLERANCE_DEG: f64 = 1.0;
/// One shell: inclinations within this of the mean.
pub const INCLINATION_TOLERANCE_DEG: f64 = 1.0;
/// One shell: altitudes within this of the mean (station-keeping is ±a few km; orbit raising
/// is hundreds).
pub const ALTITUDE_TOLERANCE_KM: f64 = 25.0;
/// Propagation is checked from `t = 0` over this long, every [`CHECK_STEP_S`].
pub const CHECK_HORIZON_S: f64 = 86_400.0;
const CHECK_STEP_S: f64 = 1_800.0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TleError {
    /// `column` is 1-based, where the TLE parser names one.
    #[error("line {line}{}: {message}", column.map(|c| format!(", column {c}")).unwrap_or_default())]
    Parse { line: usize, column: Option<usize>, message: String },
    #[error("no TLE in the file")]
    Empty,
    #[error("catalogue number {norad} appears twice (lines {first} and {second})")]
    Duplicate { norad: u64, first: usize, second: usize },
    #[error("{what} (line {line}) does not propagate {at}: {message}")]
    Propagation { what: String, line: usize, at: String, message: String },
    #[error(
        "more than one shell: inclinations from {min:.2}° ({min_sat}) to {max:.2}° ({max_sat}); \
         give one shell's satellites"
    )]
    Inclinations { min: f64, min_sat: String, max: f64, max_sat: String },
    #[error(
        "more than one shell: {sat} is at {alt:.0} km, the shell at {shell:.0} km (still raising its \
         orbit?); remove it"
    )]
    Altitude { sat: String, alt: f64, shell: f64 },
    #[error(
        "planes of different sizes: {sizes}; the +grid needs every plane full (remove satellites or \
         complete the plane)"
    )]
    UnevenPlanes { sizes: String },
}

/// One satellite of the set, in grid order.
#[derive(Clone)]
struct Sat {
    norad: u64,
    label: String,
    line: usize,
    lines: [String; 3],
    constants: sgp4::Constants,
    /// Minutes from its epoch to `t = 0`.
    offset_min: f64,
}

/// A constellation from TLEs: the inferred shell and each satellite's propagator, in the grid
/// order of [`crate::Topology::sat`].
#[derive(Clone)]
pub struct TleConstellation {
    pub shell: Shell,
    /// `t = 0` of the emulation (UTC).
    pub start: NaiveDateTime,
    sats: Vec<Sat>,
}

impl std::fmt::Debug for TleConstellation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TleConstellation")
            .field("shell", &self.shell)
            .field("start", &self.start)
            .field("satellites", &self.sats.len())
            .finish()
    }
}

/// Greenwich mean sidereal angle (radians) at `at` (UTC taken for UT1).
pub fn sidereal_angle(at: &NaiveDateTime) -> f64 {
    sgp4::iau_epoch_to_sidereal_time(sgp4::julian_years_since_j2000(at))
}

fn deg(x: f64) -> f64 {
    x.to_degrees().rem_euclid(360.0)
}

/// Signed angle b − a in (−180, 180].
fn delta_deg(a: f64, b: f64) -> f64 {
    let d = (b - a).rem_euclid(360.0);
    if d > 180.0 { d - 360.0 } else { d }
}

struct Record {
    line: usize,
    lines: [String; 3],
    elements: sgp4::Elements,
}

fn parse(text: &str) -> Result<Vec<Record>, TleError> {
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end())).filter(|(_, l)| !l.trim().is_empty()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (n, l) = lines[i];
        let (name, at) = if l.starts_with("1 ") { (None, i) } else { (Some(l.trim().trim_start_matches("0 ")), i + 1) };
        let (Some(&(n1, l1)), Some(&(n2, l2))) = (lines.get(at), lines.get(at + 1)) else {
            return Err(TleError::Parse { line: n, column: None, message: "a TLE needs its lines 1 and 2".into() });
        };
        if !l1.starts_with("1 ") || !l2.starts_with("2 ") {
            let message = format!("expected TLE line {} here, found {:?}", if l1.starts_with("1 ") { 2 } else { 1 }, {
                let bad = if l1.starts_with("1 ") { l2 } else { l1 };
                bad.chars().take(24).collect::<String>()
            });
            return Err(TleError::Parse { line: if l1.starts_with("1 ") { n2 } else { n1 }, column: Some(1), message });
        }
        // The sgp4 crate computes `checksum - b'0'` without checking it is a digit (it
        // overflows, a panic in debug builds: found by fuzzing); check the shape first.
        for (n, l) in [(n1, l1), (n2, l2)] {
            let b = l.as_bytes();
            if b.len() != 69 || !b.is_ascii() {
                return Err(TleError::Parse {
                    line: n,
                    column: None,
                    message: format!("a TLE line is 69 ASCII characters, this one has {}", l.chars().count()),
                });
            }
            if !b[68].is_ascii_digit() {
                return Err(TleError::Parse {
                    line: n,
                    column: Some(69),
                    message: "the checksum is not a digit".into(),
                });
            }
        }
        let elements =
            sgp4::Elements::from_tle(name.map(str::to_owned), l1.as_bytes(), l2.as_bytes()).map_err(|e| {
                // The crate says which line and which characters (0-based), in its message.
                let message = e.to_string();
                let line = if message.contains("on TLE line 2") { n2 } else { n1 };
                let column = message
                    .split("between characters ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next()?.parse::<usize>().ok())
                    .map(|c| c + 1);
                TleError::Parse { line, column, message }
            })?;
        out.push(Record {
            line: n1,
            lines: [name.unwrap_or_default().to_owned(), l1.to_owned(), l2.to_owned()],
            elements,
        });
        i = at + 2;
    }
    if out.is_empty() {
        return Err(TleError::Empty);
    }
    Ok(out)
}

fn label(e: &sgp4::Elements) -> String {
    match &e.object_name {
        Some(n) if !n.is_empty() => format!("{n} ({})", e.norad_id),
        _ => format!("NORAD {}", e.norad_id),
    }
}

/// The state at `t = 0` the grid is built from.
struct State {
    raan: f64,
    incl: f64,
    /// Argument of latitude.
    u: f64,
    alt: f64,
}

fn state(r: [f64; 3], v: [f64; 3]) -> State {
    let h = [r[1] * v[2] - r[2] * v[1], r[2] * v[0] - r[0] * v[2], r[0] * v[1] - r[1] * v[0]];
    let hn = (h[0] * h[0] + h[1] * h[1] + h[2] * h[2]).sqrt();
    let incl = (h[2] / hn).clamp(-1.0, 1.0).acos();
    let raan = h[0].atan2(-h[1]);
    let (so, co) = raan.sin_cos();
    let u = (r[2] / incl.sin().max(1e-9)).atan2(r[0] * co + r[1] * so);
    let rn = (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt();
    State { raan: deg(raan), incl: incl.to_degrees(), u: deg(u), alt: rn - EARTH_RADIUS_KM }
}

impl TleConstellation {
    /// Reads a TLE set; `start` is `t = 0` (default: the newest epoch in the set).
    pub fn parse(text: &str, start: Option<NaiveDateTime>) -> Result<TleConstellation, TleError> {
        let records = parse(text)?;
        let mut seen = std::collections::HashMap::new();
        for r in &records {
            if let Some(first) = seen.insert(r.elements.norad_id, r.line) {
                return Err(TleError::Duplicate { norad: r.elements.norad_id, first, second: r.line });
            }
        }
        let start = start.unwrap_or_else(|| records.iter().map(|r| r.elements.datetime).max().unwrap_or_default());
        let mut sats = Vec::with_capacity(records.len());
        let mut states = Vec::with_capacity(records.len());
        for r in records {
            let what = label(&r.elements);
            let fail =
                |at: String, message: String| TleError::Propagation { what: what.clone(), line: r.line, at, message };
            let constants =
                sgp4::Constants::from_elements(&r.elements).map_err(|e| fail("at all".into(), e.to_string()))?;
            let offset_min = r
                .elements
                .datetime_to_minutes_since_epoch(&start)
                .map_err(|e| fail(format!("to {start}"), e.to_string()))?
                .0;
            let mut k = 0.0;
            while k <= CHECK_HORIZON_S {
                constants
                    .propagate(sgp4::MinutesSinceEpoch(offset_min + k / 60.0))
                    .map_err(|e| fail(format!("{:.1} h after the start ({start})", k / 3600.0), e.to_string()))?;
                k += CHECK_STEP_S;
            }
            let p = constants
                .propagate(sgp4::MinutesSinceEpoch(offset_min))
                .map_err(|e| fail(format!("at the start ({start})"), e.to_string()))?;
            states.push(state(p.position, p.velocity));
            sats.push(Sat {
                norad: r.elements.norad_id,
                label: what,
                line: r.line,
                lines: r.lines,
                constants,
                offset_min,
            });
        }
        let shell = arrange(&mut sats, &states)?;
        Ok(TleConstellation { shell, start, sats })
    }

    pub fn len(&self) -> usize {
        self.sats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sats.is_empty()
    }

    /// Name (or catalogue number) and source line of grid satellite `i`.
    pub fn satellite(&self, i: u32) -> Option<(&str, usize)> {
        self.sats.get(i as usize).map(|s| (s.label.as_str(), s.line))
    }

    /// Earth-fixed positions (km) of every satellite, in grid order, `t` seconds after the start.
    /// Past the checked day a satellite SGP4 gives up on stays where it was at the day's end.
    pub fn positions(&self, t: f64) -> Vec<Vec3> {
        let at = self.start + TimeDelta::nanoseconds((t * 1e9) as i64);
        let (s, c) = (-sidereal_angle(&at)).sin_cos();
        self.sats
            .iter()
            .map(|sat| {
                let p = sat
                    .constants
                    .propagate(sgp4::MinutesSinceEpoch(sat.offset_min + t / 60.0))
                    .or_else(|_| {
                        sat.constants.propagate(sgp4::MinutesSinceEpoch(sat.offset_min + CHECK_HORIZON_S / 60.0))
                    })
                    .map(|p| p.position)
                    .unwrap_or([0.0, 0.0, EARTH_RADIUS_KM]);
                Vec3 { x: p[0] * c - p[1] * s, y: p[0] * s + p[1] * c, z: p[2] }
            })
            .collect()
    }

    /// The set again as 3LE text, in grid order (what the Kubernetes link agent is given).
    pub fn to_3le(&self) -> String {
        let mut out = String::new();
        for s in &self.sats {
            let name = if s.lines[0].is_empty() { s.label.as_str() } else { s.lines[0].as_str() };
            // A name line that could read as line 1 ("1 FOO") must keep its "0 " tag
            // (found by fuzzing: the text handed to the link agent did not parse again).
            let name = name.trim();
            let name =
                if name.starts_with("1 ") || name.starts_with("2 ") { format!("0 {name}") } else { name.to_owned() };
            let _ = writeln!(out, "{name}\n{}\n{}", s.lines[1], s.lines[2]);
        }
        out
    }
}

/// Sorts `sats` into grid order (plane-major, slots by argument of latitude) and infers the shell.
fn arrange(sats: &mut Vec<Sat>, states: &[State]) -> Result<Shell, TleError> {
    let n = sats.len();
    let mean = |f: &dyn Fn(&State) -> f64| states.iter().map(f).sum::<f64>() / n as f64;
    let (incl, alt) = (mean(&|s| s.incl), mean(&|s| s.alt));
    let (lo, hi) = (0..n).fold((0, 0), |(lo, hi), i| {
        (if states[i].incl < states[lo].incl { i } else { lo }, if states[i].incl > states[hi].incl { i } else { hi })
    });
    if states[hi].incl - states[lo].incl > 2.0 * INCLINATION_TOLERANCE_DEG {
        return Err(TleError::Inclinations {
            min: states[lo].incl,
            min_sat: sats[lo].label.clone(),
            max: states[hi].incl,
            max_sat: sats[hi].label.clone(),
        });
    }
    if let Some(i) = (0..n).max_by(|a, b| (states[*a].alt - alt).abs().total_cmp(&(states[*b].alt - alt).abs()))
        && (states[i].alt - alt).abs() > ALTITUDE_TOLERANCE_KM
    {
        return Err(TleError::Altitude { sat: sats[i].label.clone(), alt: states[i].alt, shell: alt });
    }
    // Planes: sort by node, split where consecutive nodes are further apart than the tolerance.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| states[*a].raan.total_cmp(&states[*b].raan));
    let gap_after = |k: usize| delta_deg(states[order[k]].raan, states[order[(k + 1) % n]].raan).rem_euclid(360.0);
    let breaks: Vec<usize> = (0..n).filter(|&k| n > 1 && gap_after(k) > PLANE_TOLERANCE_DEG).collect();
    let mut planes: Vec<Vec<usize>> = Vec::new();
    if breaks.is_empty() {
        planes.push(order.clone());
    } else {
        // Start after the widest gap: a star shell's seam, or anywhere in a delta shell.
        let widest = breaks.iter().copied().max_by(|a, b| gap_after(*a).total_cmp(&gap_after(*b))).unwrap_or(0);
        let mut cur = Vec::new();
        for j in 1..=n {
            let k = (widest + j) % n;
            cur.push(order[k]);
            if breaks.contains(&k) {
                planes.push(std::mem::take(&mut cur));
            }
        }
    }
    // The usual size is the plane size; the others are named (a few of them).
    let mut counts = std::collections::BTreeMap::new();
    for p in &planes {
        *counts.entry(p.len()).or_insert(0usize) += 1;
    }
    let per = counts.iter().max_by_key(|(size, n)| (**n, **size)).map_or(0, |(size, _)| *size);
    let odd: Vec<String> = planes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.len() != per)
        .map(|(i, p)| format!("plane {i} (node {:.1}°) has {}", states[p[0]].raan, p.len()))
        .collect();
    if !odd.is_empty() {
        let more = if odd.len() > 5 { format!(" and {} more", odd.len() - 5) } else { String::new() };
        let sizes = format!(
            "{} planes, most with {per} satellites; {}{more}",
            planes.len(),
            odd[..odd.len().min(5)].join(", ")
        );
        return Err(TleError::UnevenPlanes { sizes });
    }
    let nodes: Vec<f64> = planes.iter().map(|p| states[p[0]].raan).collect();
    let np = planes.len();
    let kind = if np <= 2 {
        ShellKind::Star
    } else {
        let gaps: Vec<f64> = (0..np).map(|i| delta_deg(nodes[i], nodes[(i + 1) % np]).rem_euclid(360.0)).collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        // A delta shell's nodes are evenly spread; a star shell leaves half the sky empty.
        if gaps[np - 1] > 1.5 * sorted[np / 2] { ShellKind::Star } else { ShellKind::Delta }
    };
    // The grid starts at the lowest catalogue number: its plane first (a star shell's first
    // plane is the one after the seam), and it is slot 0.
    let lowest = |p: &Vec<usize>| p.iter().map(|&i| sats[i].norad).min().unwrap_or(u64::MAX);
    if kind == ShellKind::Delta {
        let first = (0..np).min_by_key(|&k| lowest(&planes[k])).unwrap_or(0);
        planes.rotate_left(first);
    }
    // Slots: by argument of latitude; slot 0 of plane p + 1 the one nearest plane p's slot 0.
    let mut prev_u: Option<f64> = None;
    for p in &mut planes {
        p.sort_by(|a, b| states[*a].u.total_cmp(&states[*b].u));
        if prev_u.is_none() {
            let l = lowest(p);
            let first = p.iter().position(|&i| sats[i].norad == l).unwrap_or(0);
            p.rotate_left(first);
        } else if let Some(u0) = prev_u {
            let first = nearest(states, p, u0);
            p.rotate_left(first);
        }
        prev_u = Some(states[p[0]].u);
    }
    // Delta: the last plane's slot 0 links to the first plane's slot `phasing`, its nearest.
    let phasing = match (kind, prev_u) {
        (ShellKind::Delta, Some(u_last)) if np > 2 => nearest(states, &planes[0], u_last),
        _ => 0,
    };
    let grid: Vec<usize> = planes.into_iter().flatten().collect();
    let mut taken: Vec<Option<Sat>> = std::mem::take(sats).into_iter().map(Some).collect();
    *sats = grid.iter().filter_map(|&i| taken[i].take()).collect();
    Ok(Shell {
        kind,
        planes: u32::try_from(np).unwrap_or(u32::MAX),
        per_plane: u32::try_from(per).unwrap_or(u32::MAX),
        phasing: u32::try_from(phasing).unwrap_or(0),
        altitude_km: alt,
        inclination_deg: incl,
    })
}

/// The slot of `plane` whose argument of latitude is nearest `u`.
fn nearest(states: &[State], plane: &[usize], u: f64) -> usize {
    (0..plane.len())
        .min_by(|a, b| delta_deg(u, states[plane[*a]].u).abs().total_cmp(&delta_deg(u, states[plane[*b]].u).abs()))
        .unwrap_or(0)
}

/// TLEs of a Walker shell whose satellites are where [`Shell::position`] puts them at `start`
/// (circular orbits; node shifted by the sidereal angle, mean motion from the altitude): for
/// emulating a designed constellation with SGP4, and for feeding other tools the same shell.
/// Catalogue numbers count from `first_norad`.
pub fn walker_tles(shell: &Shell, start: &NaiveDateTime, first_norad: u64) -> String {
    let gmst = sidereal_angle(start).to_degrees();
    let a = EARTH_RADIUS_KM + shell.altitude_km;
    let rev_per_day = 86_400.0 / (2.0 * std::f64::consts::PI * (a.powi(3) / crate::geometry::MU_EARTH).sqrt());
    let spread = match shell.kind {
        ShellKind::Delta => 360.0,
        ShellKind::Star => 180.0,
    };
    let year = start.format("%y").to_string();
    let day = f64::from(start.ordinal()) + f64::from(start.num_seconds_from_midnight()) / 86_400.0;
    let mut out = String::new();
    for p in 0..shell.planes {
        for s in 0..shell.per_plane {
            let norad = first_norad + u64::from(p * shell.per_plane + s);
            let raan = (spread * f64::from(p) / f64::from(shell.planes) + gmst).rem_euclid(360.0);
            let anomaly = (360.0 * f64::from(s) / f64::from(shell.per_plane)
                + 360.0 * f64::from(shell.phasing) * f64::from(p) / f64::from(shell.count()))
            .rem_euclid(360.0);
            let l1 = format!("1 {norad:05}U 26001A   {year}{day:012.8}  .00000000  00000-0  00000-0 0  999");
            let l2 = format!(
                "2 {norad:05} {:8.4} {raan:8.4} 0000001   0.0000 {anomaly:8.4} {rev_per_day:11.8}    1",
                shell.inclination_deg
            );
            let _ = writeln!(out, "M6-P{p:02}-S{s:02}\n{l1}{}\n{l2}{}", checksum(&l1), checksum(&l2));
        }
    }
    out
}

/// The TLE line checksum: digits summed, a minus sign counts one, modulo 10.
pub fn checksum(line: &str) -> u32 {
    line.chars().map(|c| if c == '-' { 1 } else { c.to_digit(10).unwrap_or(0) }).sum::<u32>() % 10
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topology;
    use crate::topology::{End, LinkKind};

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").expect("date")
    }

    fn walker(kind: ShellKind, planes: u32, per_plane: u32, phasing: u32, incl: f64) -> Shell {
        Shell { kind, planes, per_plane, phasing, altitude_km: 550.0, inclination_deg: incl }
    }

    // Vallado et al., "Revisiting Spacetrack Report #3" (AIAA 2006-6753), verification case
    // 00005 at t = 0: TEME r = (7022.46529266, -1400.08296755, 0.03995155) km (WGS72). The
    // Earth-fixed rotation keeps |r| and z.
    #[test]
    fn vallado_case_00005_at_epoch() {
        let tle = "1 00005U 58002B   00179.78495062  .00000023  00000-0  28098-4 0  4753\n\
                   2 00005  34.2682 348.7242 1859667 331.7664  19.3264 10.82419157413667\n";
        let c = TleConstellation::parse(tle, None).expect("parses");
        assert_eq!(c.len(), 1);
        assert_eq!(c.satellite(0), Some(("NORAD 5", 1)));
        let p = c.positions(0.0)[0];
        let want_rho = (7_022.465_292_66_f64.powi(2) + 1_400.082_967_55_f64.powi(2)).sqrt();
        let rho = (p.x * p.x + p.y * p.y).sqrt();
        assert!((rho - want_rho).abs() < 1.0, "equatorial radius {rho} vs {want_rho} (WGS84 vs 72)");
        assert!((p.z - 0.039_951_55).abs() < 1.0, "z {}", p.z);
    }

    #[test]
    fn sidereal_angle_at_j2000() {
        // GMST at 2000-01-01 12:00 UT1 is 280.46061837° (IAU 1982).
        let g = sidereal_angle(&at("2000-01-01T12:00:00")).to_degrees();
        assert!((g - 280.460_618_37).abs() < 1e-6, "{g}");
        // Six hours later the Earth has turned 90.2464°.
        let g6 = sidereal_angle(&at("2000-01-01T18:00:00")).to_degrees();
        assert!((delta_deg(g, g6) - 90.246_41).abs() < 1e-3, "{g6}");
    }

    #[test]
    fn checksums_follow_the_format() {
        // The ISS line from CelesTrak, checksum 2.
        assert_eq!(checksum("1 25544U 98067A   20194.88612269 -.00002218  00000-0 -31515-4 0  999"), 2);
    }

    /// Found by fuzzing: a checksum that is not a digit made the sgp4 crate overflow (a
    /// panic in debug builds), and a name that reads like line 1 ("1 FOO") was written back
    /// bare, so the 3LE handed to the link agent did not parse again.
    #[test]
    fn odd_checksums_and_names_are_errors_or_round_trip() {
        let start = at("2026-12-01T00:00:00");
        let text = walker_tles(&walker(ShellKind::Delta, 3, 3, 1, 53.0), &start, 100);
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let l1 = lines.iter().position(|l| l.starts_with("1 ")).expect("line 1");
        let mut bad = lines.clone();
        bad[l1].replace_range(68..69, "+");
        let e = TleConstellation::parse(&bad.join("\n"), None).expect_err("refused");
        assert!(e.to_string().contains("checksum is not a digit"), "{e}");
        lines[l1 - 1] = "0 1 FOO".into();
        let c = TleConstellation::parse(&lines.join("\n"), None).expect("parses");
        let again = TleConstellation::parse(&c.to_3le(), Some(c.start)).expect("the 3LE parses again");
        assert_eq!(again.shell, c.shell);
    }

    #[test]
    fn a_walker_shell_as_tles_comes_back_as_the_same_grid_and_orbits() {
        let start = at("2026-12-01T00:00:00");
        for shell in [walker(ShellKind::Delta, 72, 22, 1, 53.0), walker(ShellKind::Star, 6, 11, 0, 86.4)] {
            let text = walker_tles(&shell, &start, 80_000);
            for l in text.lines().filter(|l| l.starts_with("1 ") || l.starts_with("2 ")) {
                assert_eq!(l.len(), 69, "{l}");
            }
            let c = TleConstellation::parse(&text, None).expect("parses");
            assert_eq!(c.start, start);
            // What the link agent is shipped (3LE in grid order) makes the same grid again.
            let again = TleConstellation::parse(&c.to_3le(), Some(c.start)).expect("parses");
            let order = |c: &TleConstellation| {
                (0..c.shell.count()).map(|i| c.satellite(i).map(|s| s.0.to_owned())).collect::<Vec<_>>()
            };
            assert_eq!((order(&again), &again.shell), (order(&c), &c.shell));
            let got = &c.shell;
            assert_eq!(
                (got.kind, got.planes, got.per_plane, got.phasing),
                (shell.kind, 72.min(shell.planes), shell.per_plane, shell.phasing)
            );
            assert!((got.inclination_deg - shell.inclination_deg).abs() < 0.2, "{got:?}");
            assert!((got.altitude_km - 550.0).abs() < 15.0, "{got:?}");
            // Same satellite at the same index, within SGP4's short-period terms of the
            // two-body orbit (13-18 km here), over ten minutes.
            let topo = Topology::from_tle(c, vec![]);
            for t in [0.0, 600.0] {
                let sgp4 = topo.positions(t);
                for (i, p) in sgp4.iter().enumerate() {
                    let (pl, sl) = topo.plane_slot(u32::try_from(i).expect("index"));
                    let d = p.dist(shell.position(pl, sl, t));
                    assert!(d < 25.0, "{:?} sat {i} at t={t}: {d:.1} km from the Walker position", shell.kind);
                }
            }
            assert_eq!(
                topo.tle.as_ref().map(|c| c.satellite(0).map(|s| s.0.to_owned())),
                Some(Some("M6-P00-S00 (80000)".into()))
            );
        }
    }

    #[test]
    fn inter_plane_links_join_nearest_neighbours() {
        // F = 39 puts the next plane's same-index satellite 8.9° ahead, its predecessor 7.5°
        // behind: the TLE grid links the nearer one, and no ISL gets longer.
        let start = at("2026-12-01T00:00:00");
        let shell = walker(ShellKind::Delta, 72, 22, 39, 53.0);
        let walker_topo = Topology::new(shell.clone(), vec![]);
        let tle_topo =
            Topology::from_tle(TleConstellation::parse(&walker_tles(&shell, &start, 1), None).expect("parses"), vec![]);
        let longest = |t: &Topology| {
            t.links_at(0.0).iter().filter(|l| l.kind == LinkKind::InterPlane).map(|l| l.distance_km).fold(0.0, f64::max)
        };
        assert!(
            longest(&tle_topo) < longest(&walker_topo) - 50.0,
            "{} vs {}",
            longest(&tle_topo),
            longest(&walker_topo)
        );
        let links = tle_topo.links_at(0.0);
        assert_eq!(links.len(), 2 * 72 * 22, "53° never reaches the polar cut-off: the whole grid is up");
        let mut used = std::collections::BTreeSet::new();
        for l in &links {
            for e in [l.a, l.b] {
                assert!(matches!(e, End::Sat { .. }) && used.insert(e), "interface used twice: {e:?}");
            }
        }
    }

    #[test]
    fn bad_sets_are_refused_with_what_and_where() {
        let start = at("2026-12-01T00:00:00");
        let text = walker_tles(&walker(ShellKind::Delta, 6, 6, 1, 53.0), &start, 100);
        let lines: Vec<&str> = text.lines().collect();
        // One satellite missing: uneven planes.
        let short = lines[3..].join("\n");
        let e = TleConstellation::parse(&short, None).expect_err("refused");
        assert!(
            matches!(e, TleError::UnevenPlanes { .. })
                && e.to_string().contains("6 planes, most with 6 satellites; plane "),
            "{e}"
        );
        assert!(e.to_string().contains(") has 5;"), "{e}");
        // A second shell.
        let other = walker_tles(&walker(ShellKind::Delta, 6, 6, 1, 70.0), &start, 200);
        let e = TleConstellation::parse(&format!("{text}{other}"), None).expect_err("refused");
        assert!(matches!(e, TleError::Inclinations { .. }), "{e}");
        // A satellite still raising its orbit.
        let low = Shell { altitude_km: 350.0, ..walker(ShellKind::Delta, 1, 1, 0, 53.0) };
        let e =
            TleConstellation::parse(&format!("{text}{}", walker_tles(&low, &start, 300)), None).expect_err("refused");
        assert!(matches!(e, TleError::Altitude { .. }) && e.to_string().contains("(300) is at 3"), "{e}");
        // Twice the same satellite.
        let e = TleConstellation::parse(&format!("{text}{}", lines[..3].join("\n")), None).expect_err("refused");
        assert_eq!(e, TleError::Duplicate { norad: 100, first: 2, second: 110 });
        // A corrupted digit: the checksum catches it, on its line.
        let mut bad = lines.clone();
        let l = bad[5].replacen("53.0000", "53.0001", 1);
        bad[5] = &l;
        let e = TleConstellation::parse(&bad.join("\n"), None).expect_err("refused");
        assert!(
            matches!(e, TleError::Parse { line: 6, column: Some(69), .. }) && e.to_string().contains("checksum"),
            "{e}"
        );
        // A name without its lines.
        let e = TleConstellation::parse(&format!("{text}LONELY\n"), None).expect_err("refused");
        assert!(matches!(e, TleError::Parse { line: 109, .. }), "{e}");
        assert_eq!(TleConstellation::parse("\n\n", None).expect_err("refused"), TleError::Empty);
    }
}
