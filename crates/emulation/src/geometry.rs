//! Orbits: Walker-delta and Walker-star shells on circular orbits (two-body, no J2), an Earth
//! rotating at its sidereal rate, and the geometry of visibility. Good to a few km over the
//! hours an emulation runs — what link delays (milliseconds) and topology need. Real
//! constellations come as TLEs instead, propagated with SGP4 ([`crate::tle`]).

use serde::{Deserialize, Serialize};

pub const EARTH_RADIUS_KM: f64 = 6371.0;
/// km³/s²
pub const MU_EARTH: f64 = 398_600.441_8;
/// rad/s
pub const EARTH_ROTATION: f64 = 7.292_115_9e-5;
pub const C_KM_S: f64 = 299_792.458;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShellKind {
    /// Planes spread over 360° of right ascension (Starlink-like inclined shells): the last
    /// plane links to the first with the phase offset.
    Delta,
    /// Planes over 180° (polar, Iridium-like): the first and last planes counter-rotate at
    /// the seam, so no ISL crosses it.
    Star,
}

/// One shell: `planes` × `per_plane` satellites, Walker phasing `phasing` (0..planes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shell {
    pub kind: ShellKind,
    pub planes: u32,
    pub per_plane: u32,
    pub phasing: u32,
    pub altitude_km: f64,
    pub inclination_deg: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundStation {
    pub name: String,
    pub lat_deg: f64,
    pub lon_deg: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vec3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

impl Vec3 {
    pub fn dist(self, o: Vec3) -> f64 {
        ((self.x - o.x).powi(2) + (self.y - o.y).powi(2) + (self.z - o.z).powi(2)).sqrt()
    }
    fn dot(self, o: Vec3) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    fn norm(self) -> f64 {
        self.dot(self).sqrt()
    }
    fn sub(self, o: Vec3) -> Vec3 {
        Vec3 { x: self.x - o.x, y: self.y - o.y, z: self.z - o.z }
    }
}

impl Shell {
    pub fn count(&self) -> u32 {
        self.planes * self.per_plane
    }

    /// Orbital period, seconds.
    pub fn period_s(&self) -> f64 {
        let a = EARTH_RADIUS_KM + self.altitude_km;
        2.0 * std::f64::consts::PI * (a.powi(3) / MU_EARTH).sqrt()
    }

    fn raan_spread(&self) -> f64 {
        match self.kind {
            ShellKind::Delta => 360.0,
            ShellKind::Star => 180.0,
        }
    }

    /// Earth-fixed position (km) of satellite (`plane`, `slot`) at `t` seconds.
    pub fn position(&self, plane: u32, slot: u32, t: f64) -> Vec3 {
        let a = EARTH_RADIUS_KM + self.altitude_km;
        let raan = (self.raan_spread() * f64::from(plane) / f64::from(self.planes)).to_radians();
        let total = f64::from(self.count());
        let phase = 360.0 * f64::from(slot) / f64::from(self.per_plane)
            + 360.0 * f64::from(self.phasing) * f64::from(plane) / total;
        let u = phase.to_radians() + 2.0 * std::f64::consts::PI * t / self.period_s();
        let i = self.inclination_deg.to_radians();
        // Inertial: rotate (cos u, sin u, 0) by inclination about x, then RAAN about z.
        let (xo, yo) = (a * u.cos(), a * u.sin());
        let (x1, y1, z1) = (xo, yo * i.cos(), yo * i.sin());
        let (xi, yi) = (x1 * raan.cos() - y1 * raan.sin(), x1 * raan.sin() + y1 * raan.cos());
        // Earth-fixed: undo the Earth's rotation since t = 0.
        let th = -EARTH_ROTATION * t;
        Vec3 { x: xi * th.cos() - yi * th.sin(), y: xi * th.sin() + yi * th.cos(), z: z1 }
    }
}

/// (latitude, longitude) in degrees of an Earth-fixed point.
pub fn lat_lon(p: Vec3) -> (f64, f64) {
    let lat = p.z.atan2((p.x * p.x + p.y * p.y).sqrt()).to_degrees();
    let lon = p.y.atan2(p.x).to_degrees();
    (lat, lon)
}

impl GroundStation {
    pub fn position(&self) -> Vec3 {
        let (la, lo) = (self.lat_deg.to_radians(), self.lon_deg.to_radians());
        Vec3 {
            x: EARTH_RADIUS_KM * la.cos() * lo.cos(),
            y: EARTH_RADIUS_KM * la.cos() * lo.sin(),
            z: EARTH_RADIUS_KM * la.sin(),
        }
    }

    /// Elevation of `sat` above this station's horizon, degrees.
    pub fn elevation_deg(&self, sat: Vec3) -> f64 {
        let g = self.position();
        let d = sat.sub(g);
        (d.dot(g) / (d.norm() * g.norm())).clamp(-1.0, 1.0).asin().to_degrees()
    }
}

/// Whether the straight line between two satellites clears the Earth (plus a margin for
/// the atmosphere, 80 km).
pub fn line_of_sight(a: Vec3, b: Vec3) -> bool {
    let d = b.sub(a);
    let t = (-a.dot(d) / d.dot(d)).clamp(0.0, 1.0);
    let closest = Vec3 { x: a.x + t * d.x, y: a.y + t * d.y, z: a.z + t * d.z };
    closest.norm() > EARTH_RADIUS_KM + 80.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starlink() -> Shell {
        Shell {
            kind: ShellKind::Delta,
            planes: 72,
            per_plane: 22,
            phasing: 39,
            altitude_km: 550.0,
            inclination_deg: 53.0,
        }
    }

    #[test]
    fn orbits_have_the_right_radius_period_and_inclination() {
        let s = starlink();
        assert!((s.period_s() / 60.0 - 95.6).abs() < 0.5, "LEO at 550 km: ~95.6 min, got {}", s.period_s() / 60.0);
        let mut max_lat: f64 = 0.0;
        for k in 0..200 {
            let p = s.position(3, 5, f64::from(k) * 30.0);
            assert!((p.norm() - (EARTH_RADIUS_KM + 550.0)).abs() < 1e-6);
            max_lat = max_lat.max(lat_lon(p).0.abs());
        }
        assert!((max_lat - 53.0).abs() < 0.5, "ground track reaches the inclination: {max_lat}");
        // After one period the satellite is back, less the Earth's rotation in between.
        let p0 = s.position(0, 0, 0.0);
        let p1 = s.position(0, 0, s.period_s());
        assert!((lat_lon(p0).0 - lat_lon(p1).0).abs() < 1e-6);
    }

    #[test]
    fn elevation_and_line_of_sight() {
        let gs = GroundStation { name: "null".into(), lat_deg: 0.0, lon_deg: 0.0 };
        let zenith = Vec3 { x: EARTH_RADIUS_KM + 550.0, y: 0.0, z: 0.0 };
        assert!((gs.elevation_deg(zenith) - 90.0).abs() < 1e-9);
        let antipode = Vec3 { x: -(EARTH_RADIUS_KM + 550.0), y: 0.0, z: 0.0 };
        assert!(gs.elevation_deg(antipode) < 0.0);
        assert!(!line_of_sight(zenith, antipode), "through the Earth");
        let near = Vec3 { x: EARTH_RADIUS_KM + 550.0, y: 500.0, z: 0.0 };
        assert!(line_of_sight(zenith, near));
    }
}
