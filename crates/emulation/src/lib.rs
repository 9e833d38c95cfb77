//! The constellation an emulation runs: Walker shells propagated on circular orbits (or TLEs
//! propagated with SGP4), the +grid inter-satellite links (ISLs) with the usual seam and polar
//! rules, ground links by
//! elevation mask, per-link delay from distance, link up/down events over time, the
//! deterministic per-satellite addressing the emulation backends and the cluster stage
//! share, and an SVG picture.
//!
//! Pure: numbers in, topology out. No namespaces, no netlink, no I/O — the backends
//! (network namespaces, Kubernetes) apply what this crate computes.

pub mod addressing;
pub mod draw;
pub mod expect;
pub mod geometry;
pub mod partition;
pub mod routing;
pub mod tle;
pub mod topology;

pub use addressing::Addressing;
pub use geometry::{GroundStation, Shell, ShellKind};
pub use tle::TleConstellation;
pub use topology::{Link, LinkEvent, LinkKind, Topology};
