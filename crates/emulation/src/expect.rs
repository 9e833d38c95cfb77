//! What a running emulation must look like at an instant of the model: every ISL end up or
//! dormant, which satellites have a ground link, and, for IS-IS routers on a sample of the
//! satellites, how many adjacencies each has and which loopbacks it has routes to. The
//! checks of both backends (`metal6 emulate check`, the soak, the link agent) compare the
//! kernel and FRR with this; it is computed from [`Topology::links_at`] alone, so a check
//! can never agree with the code that switched the links by sharing its mistakes.

use std::collections::{BTreeMap, BTreeSet};

use crate::topology::{End, LinkKind, Topology};

/// The links of the model at one instant, per interface end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Every ISL end of the grid, `(satellite, interface)`: up (`true`) or down (dormant).
    pub isl: BTreeMap<(u32, u8), bool>,
    /// Satellites with a ground link: their `gsl0` is up.
    pub ground: BTreeSet<u32>,
}

impl Expected {
    pub fn at(topo: &Topology, t: f64) -> Expected {
        let mut up = BTreeSet::new();
        let mut ground = BTreeSet::new();
        for l in topo.links_at(t) {
            match (l.kind, l.a, l.b) {
                (LinkKind::Ground, End::Sat { sat, .. }, _) => {
                    ground.insert(sat);
                }
                (_, End::Sat { sat: a, .. }, End::Sat { sat: b, .. }) => {
                    up.insert((l.kind, a, b));
                }
                _ => {}
            }
        }
        let mut isl = BTreeMap::new();
        for (kind, a, b) in topo.grid() {
            let (ia, ib) = kind.ifaces();
            let on = up.contains(&(kind, a, b));
            isl.insert((a, ia), on);
            isl.insert((b, ib), on);
        }
        Expected { isl, ground }
    }

    /// ISL ends up.
    pub fn ends_up(&self) -> usize {
        self.isl.values().filter(|u| **u).count()
    }
}

/// IS-IS on a sample of the satellites, as the model has it: routers form an adjacency over
/// every ISL that is up with a router at both ends, and each reaches the loopback of every
/// other router connected to it through such links (and no other: satellites without a
/// router forward nothing by IS-IS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedRouting {
    pub adjacencies: BTreeMap<u32, usize>,
    /// Router → the other routers whose loopback it must have a route to.
    pub reach: BTreeMap<u32, BTreeSet<u32>>,
}

impl ExpectedRouting {
    pub fn of(topo: &Topology, e: &Expected, routers: &BTreeSet<u32>) -> ExpectedRouting {
        let mut adj: BTreeMap<u32, Vec<u32>> = routers.iter().map(|r| (*r, vec![])).collect();
        for (kind, a, b) in topo.grid() {
            let (ia, _) = kind.ifaces();
            if routers.contains(&a) && routers.contains(&b) && e.isl.get(&(a, ia)) == Some(&true) {
                adj.entry(a).or_default().push(b);
                adj.entry(b).or_default().push(a);
            }
        }
        // Connected components of the routers' graph; each router reaches its own, less itself.
        let mut component: BTreeMap<u32, usize> = BTreeMap::new();
        let mut members: Vec<BTreeSet<u32>> = vec![];
        for &start in routers {
            if component.contains_key(&start) {
                continue;
            }
            let id = members.len();
            let mut set = BTreeSet::new();
            let mut stack = vec![start];
            while let Some(r) = stack.pop() {
                if component.insert(r, id).is_some() {
                    continue;
                }
                set.insert(r);
                stack.extend(adj.get(&r).into_iter().flatten().filter(|n| !component.contains_key(n)));
            }
            members.push(set);
        }
        let reach = routers
            .iter()
            .map(|r| {
                let mut s = component.get(r).map(|c| members[*c].clone()).unwrap_or_default();
                s.remove(r);
                (*r, s)
            })
            .collect();
        ExpectedRouting { adjacencies: adj.into_iter().map(|(r, n)| (r, n.len())).collect(), reach }
    }
}

/// The satellites of planes `0..planes`, slots `0..slots` (clamped to the shell): a block
/// of the grid, so that its routers have neighbours in and across planes and the polar
/// switching of the cross-plane links reaches it as the satellites move.
pub fn sample(topo: &Topology, planes: u32, slots: u32) -> BTreeSet<u32> {
    let (planes, slots) = (planes.min(topo.shell.planes), slots.min(topo.shell.per_plane));
    (0..planes).flat_map(|p| (0..slots).map(move |s| topo.sat(p, s))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shell, ShellKind};

    fn shell(planes: u32, per: u32, incl: f64) -> Topology {
        Topology::new(
            Shell {
                kind: ShellKind::Delta,
                planes,
                per_plane: per,
                phasing: 1,
                altitude_km: 2000.0,
                inclination_deg: incl,
            },
            vec![],
        )
    }

    #[test]
    fn a_low_inclination_grid_is_all_up_and_routes_everywhere() {
        let topo = shell(6, 6, 53.0);
        let e = Expected::at(&topo, 0.0);
        assert_eq!(e.isl.len(), 4 * 36, "four ISL ends a satellite");
        assert_eq!(e.ends_up(), 4 * 36);
        let all: BTreeSet<u32> = (0..36).collect();
        let r = ExpectedRouting::of(&topo, &e, &all);
        assert!(r.adjacencies.values().all(|n| *n == 4), "{:?}", r.adjacencies);
        assert!(r.reach.values().all(|s| s.len() == 35));
        // A 2 × 3 block: inside it, 2 planes × 2 intra-plane links + 3 cross-plane links.
        let block = sample(&topo, 2, 3);
        assert_eq!(block.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2, 6, 7, 8]);
        let r = ExpectedRouting::of(&topo, &e, &block);
        assert_eq!(r.adjacencies.values().sum::<usize>(), 2 * (4 + 3));
        assert_eq!(r.adjacencies[&0], 2, "sat 0: isl0 to sat 1, isl2 to sat 6");
        assert!(r.reach.values().all(|s| s.len() == 5));
    }

    #[test]
    fn polar_cutoffs_take_ends_down_in_pairs_and_split_the_routers() {
        let topo = shell(6, 6, 88.0);
        // Some instant within an orbit has one of plane 0's cross-plane links down near a pole.
        let (t, e, down) = (0..120)
            .map(|k| f64::from(k) * 60.0)
            .map(|t| (t, Expected::at(&topo, t)))
            .find_map(|(t, e)| (0..6).find(|s| !e.isl[&(topo.sat(0, *s), 2)]).map(|s| (t, e, s)))
            .expect("a polar cutoff within two hours");
        for (kind, a, b) in topo.grid() {
            let (ia, ib) = kind.ifaces();
            assert_eq!(e.isl[&(a, ia)], e.isl[&(b, ib)], "both ends of {a}-{b} alike at {t}");
        }
        // Two routers joined only by that link are alone.
        let pair = |s: u32| [topo.sat(0, s), topo.sat(1, s)].into_iter().collect::<BTreeSet<u32>>();
        let r = ExpectedRouting::of(&topo, &e, &pair(down));
        assert!(r.adjacencies.values().all(|n| *n == 0) && r.reach.values().all(BTreeSet::is_empty), "{r:?}");
    }
}
