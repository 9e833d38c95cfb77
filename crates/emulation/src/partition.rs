//! One constellation over several workers: contiguous plane ranges per worker, so that every
//! intra-plane ISL stays on one worker and only the cross-plane ISLs at a range's borders
//! (and the Walker-delta seam, last plane to first) cross between workers. A crossing ISL is
//! a VXLAN over the workers' IPv6 underlay on each side, its VNI derived from the link's
//! place in the grid, so both workers compute the same one with no coordination.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

use crate::topology::{End, LinkKind, Topology};

/// VNIs of crossing ISLs are `VNI_BASE + link id` (the link's index in [`Topology::grid`]):
/// clear of the small VNIs other overlays on a cluster tend to use, and below 2^24 for grids
/// of up to `(2^24 − VNI_BASE) / 2` satellites (two ISLs each): ≈ 7.8 million.
pub const VNI_BASE: u32 = 0x10_0000;
/// The most satellites a split constellation may have: its VNIs must stay below 2^24.
pub const MAX_SPLIT_SATELLITES: u32 = ((1 << 24) - VNI_BASE) / 2;

/// What VXLAN over IPv6 adds to a frame: outer IPv6 (40) + UDP (8) + VXLAN (8) + the inner
/// Ethernet header (14). An ISL carried across workers has at most the underlay's MTU less this.
pub const VXLAN6_OVERHEAD: u32 = 70;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("no workers to spread the constellation over")]
    NoWorkers,
    #[error("{workers} workers for {planes} planes: a worker gets whole planes, so at most {planes} workers")]
    TooManyWorkers { workers: usize, planes: u32 },
    #[error("worker {0} is named twice")]
    Duplicate(String),
    #[error(
        "{0} satellites: a split constellation's VNIs (two ISLs a satellite) must stay below 2^24, at most {MAX_SPLIT_SATELLITES} satellites"
    )]
    TooLarge(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub workers: Vec<String>,
    /// Worker `i` holds planes `starts[i]..starts[i + 1]`.
    starts: Vec<u32>,
    per_plane: u32,
}

/// An ISL whose ends are on different workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Crossing {
    pub kind: LinkKind,
    pub a: u32,
    pub b: u32,
    /// Index in [`Topology::grid`].
    pub link: u32,
    pub vni: u32,
    pub worker_a: usize,
    pub worker_b: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerShare {
    pub worker: String,
    pub planes: Range<u32>,
    pub satellites: u32,
    /// ISLs with both ends on this worker.
    pub local_links: usize,
}

/// The plan a user sees before anything is built.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionPlan {
    pub workers: Vec<WorkerShare>,
    pub local_links: usize,
    pub crossing_links: usize,
    /// Crossing ISLs between each pair of workers (names, in worker order).
    pub per_border: Vec<(String, String, usize)>,
    /// The most crossing ISLs up at once over the window looked at, and when.
    pub worst_crossing_up: usize,
    pub worst_at: f64,
}

impl Partition {
    /// Planes split as evenly as they go: the first `planes % workers` workers get one more.
    pub fn new(topo: &Topology, workers: Vec<String>) -> Result<Partition, PartitionError> {
        let planes = topo.shell.planes;
        if workers.is_empty() {
            return Err(PartitionError::NoWorkers);
        }
        if workers.len() > planes as usize {
            return Err(PartitionError::TooManyWorkers { workers: workers.len(), planes });
        }
        for (i, w) in workers.iter().enumerate() {
            if workers[..i].contains(w) {
                return Err(PartitionError::Duplicate(w.clone()));
            }
        }
        if workers.len() > 1 && topo.shell.count() > MAX_SPLIT_SATELLITES {
            return Err(PartitionError::TooLarge(topo.shell.count()));
        }
        let n = u32::try_from(workers.len()).unwrap_or(u32::MAX);
        let (base, extra) = (planes / n, planes % n);
        let mut starts = vec![0];
        for i in 0..n {
            let last = starts[i as usize];
            starts.push(last + base + u32::from(i < extra));
        }
        Ok(Partition { workers, starts, per_plane: topo.shell.per_plane })
    }

    pub fn planes_of(&self, worker: usize) -> Range<u32> {
        self.starts[worker]..self.starts[worker + 1]
    }

    /// The worker a satellite (plane-major index) runs on.
    pub fn worker_of(&self, sat: u32) -> usize {
        let plane = sat / self.per_plane.max(1);
        self.starts.partition_point(|s| *s <= plane).saturating_sub(1).min(self.workers.len() - 1)
    }

    /// Every ISL of the grid whose ends are on different workers.
    pub fn crossing(&self, topo: &Topology) -> Vec<Crossing> {
        topo.grid()
            .into_iter()
            .enumerate()
            .filter_map(|(i, (kind, a, b))| {
                let (wa, wb) = (self.worker_of(a), self.worker_of(b));
                let link = u32::try_from(i).unwrap_or(u32::MAX);
                (wa != wb).then_some(Crossing { kind, a, b, link, vni: VNI_BASE + link, worker_a: wa, worker_b: wb })
            })
            .collect()
    }

    /// Satellites, local and crossing links per worker and border, and the most crossing
    /// links up at once between `from` and `until` (sampled every `step` seconds).
    pub fn plan(&self, topo: &Topology, from: f64, until: f64, step: f64) -> PartitionPlan {
        let grid = topo.grid();
        let mut local = vec![0usize; self.workers.len()];
        let mut borders: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for (_, a, b) in &grid {
            let (wa, wb) = (self.worker_of(*a), self.worker_of(*b));
            if wa == wb {
                local[wa] += 1;
            } else {
                *borders.entry((wa.min(wb), wa.max(wb))).or_default() += 1;
            }
        }
        let crossing_of = |l: &crate::Link| match (l.a, l.b) {
            (End::Sat { sat: a, .. }, End::Sat { sat: b, .. }) => {
                l.kind != LinkKind::Ground && self.worker_of(a) != self.worker_of(b)
            }
            _ => false,
        };
        let (mut worst, mut worst_at) = (0, from);
        let mut t = from;
        loop {
            let up = topo.links_at(t).iter().filter(|l| crossing_of(l)).count();
            if up > worst {
                (worst, worst_at) = (up, t);
            }
            if t >= until || step <= 0.0 {
                break;
            }
            t = (t + step).min(until);
        }
        PartitionPlan {
            workers: self
                .workers
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let planes = self.planes_of(i);
                    WorkerShare {
                        worker: w.clone(),
                        satellites: (planes.end - planes.start) * self.per_plane,
                        planes,
                        local_links: local[i],
                    }
                })
                .collect(),
            local_links: local.iter().sum(),
            crossing_links: borders.values().sum(),
            per_border: borders
                .into_iter()
                .map(|((a, b), n)| (self.workers[a].clone(), self.workers[b].clone(), n))
                .collect(),
            worst_crossing_up: worst,
            worst_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shell, ShellKind};

    fn topo(kind: ShellKind, planes: u32, per: u32, incl: f64) -> Topology {
        Topology::new(
            Shell { kind, planes, per_plane: per, phasing: 1, altitude_km: 2000.0, inclination_deg: incl },
            vec![],
        )
    }

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("w-{i:02}")).collect()
    }

    #[test]
    fn planes_split_evenly_and_contiguously() {
        let t = topo(ShellKind::Delta, 7, 5, 53.0);
        let p = Partition::new(&t, names(3)).expect("partition");
        assert_eq!((p.planes_of(0), p.planes_of(1), p.planes_of(2)), (0..3, 3..5, 5..7));
        for sat in 0..35 {
            let w = p.worker_of(sat);
            assert!(p.planes_of(w).contains(&(sat / 5)), "sat {sat} on {w}");
        }
        assert_eq!(Partition::new(&t, vec![]), Err(PartitionError::NoWorkers));
        assert_eq!(Partition::new(&t, names(8)), Err(PartitionError::TooManyWorkers { workers: 8, planes: 7 }));
        let dup = vec!["a".to_owned(), "a".to_owned()];
        assert_eq!(Partition::new(&t, dup), Err(PartitionError::Duplicate("a".into())));
    }

    #[test]
    fn only_cross_plane_links_at_borders_and_the_seam_cross() {
        // 6 × 6 delta over two workers: planes 0–2 and 3–5. Crossing: 2 → 3 and the seam 5 → 0,
        // six links each; every intra-plane link is local.
        let t = topo(ShellKind::Delta, 6, 6, 53.0);
        let p = Partition::new(&t, names(2)).expect("partition");
        let c = p.crossing(&t);
        assert_eq!(c.len(), 12);
        assert!(c.iter().all(|x| x.kind == LinkKind::InterPlane));
        assert!(c.iter().all(|x| x.vni == VNI_BASE + x.link && x.vni < 1 << 24));
        let plan = p.plan(&t, 0.0, 0.0, 10.0);
        assert_eq!(plan.crossing_links, 12);
        assert_eq!(plan.local_links + plan.crossing_links, t.grid().len());
        assert_eq!(plan.per_border, vec![("w-01".into(), "w-02".into(), 12)]);
        assert_eq!(plan.workers[0].satellites, 18);
        // At 53° nothing is cut by the polar rule: all twelve are up.
        assert_eq!(plan.worst_crossing_up, 12);
        // A star shell has no seam: only the border between the two ranges.
        let star = topo(ShellKind::Star, 6, 6, 88.0);
        let p = Partition::new(&star, names(2)).expect("partition");
        assert_eq!(p.crossing(&star).len(), 6);
        // One worker: nothing crosses.
        let one = Partition::new(&t, names(1)).expect("one");
        assert!(one.crossing(&t).is_empty());
    }

    #[test]
    fn the_worst_case_counts_crossing_links_up_at_once() {
        // Polar orbits: crossing links go down near the poles, so fewer are up at any instant.
        let t = topo(ShellKind::Delta, 6, 6, 88.0);
        let p = Partition::new(&t, names(3)).expect("partition");
        let plan = p.plan(&t, 0.0, 7200.0, 60.0);
        assert_eq!(plan.crossing_links, 18, "three borders (two, and the seam) of six");
        // The same count from the crossing list and the links up at each instant.
        let crossing: std::collections::BTreeSet<(u32, u32)> = p.crossing(&t).iter().map(|c| (c.a, c.b)).collect();
        let up_at = |at: f64| {
            t.links_at(at)
                .iter()
                .filter(|l| match (l.a, l.b) {
                    (End::Sat { sat: a, .. }, End::Sat { sat: b, .. }) => crossing.contains(&(a, b)),
                    _ => false,
                })
                .count()
        };
        let counts: Vec<usize> = (0..=120).map(|k| up_at(f64::from(k) * 60.0)).collect();
        assert_eq!(plan.worst_crossing_up, counts.iter().copied().max().unwrap_or(0));
        assert_eq!(up_at(plan.worst_at), plan.worst_crossing_up);
        assert!(counts.iter().any(|c| *c < plan.worst_crossing_up), "the count moves with the poles: {counts:?}");
    }
}
