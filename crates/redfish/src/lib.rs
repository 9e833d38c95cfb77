//! Redfish for metal6: a small client of our own on reqwest, a facade ([`bmc::Bmc`]) in
//! metal6's terms, and pure planning of BIOS settings ([`bios`]) and firmware baselines
//! ([`firmware`]).
//!
//! Why not a Redfish crate: nv-redfish 0.22 (the maintained one, evaluated in
//! `docs/redfish.md`) is sound but strict — it fails to decode sushy-tools' service root
//! (no `Links`) and DMTF's own mockup, needs a 2+ minute release rebuild per change on this
//! machine, and leaves exactly the Dell parts we need (job styles, SYS011/no-Location, registry
//! dependencies) to the caller. Our surface is ~20 endpoints with tolerant decoding; the
//! facade keeps the choice reversible.
//!
//! This crate does no printing and never logs a password: credentials arrive resolved in
//! [`client::ConnectOptions`], whose `Debug` redacts them.

pub mod bios;
pub mod bmc;
pub mod client;
pub mod firmware;

pub use bmc::{Bmc, BootTarget, PowerAction, Staged};
pub use client::{ConnectOptions, RedfishError};

/// Installs rustls' ring provider as the process default. reqwest is built without a provider
/// (aws-lc-rs needs cmake and minutes of C build here), so every reqwest client in the process
/// — not only ours: Cargo unifies the feature — needs this before it is built. Idempotent.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
