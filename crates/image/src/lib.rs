//! `metal6 image build`: reproducible node disk images and the installer UKI from a recipe
//! (`images/*.yaml`).
//!
//! Owns the recipe format, the raise-only sysctl rules, the stage keys and cache, and the
//! writers we keep in Rust because the tools make them irreproducible or need root: the
//! initramfs cpio, PE normalization of the UKIs, the kernel-module closure. The root
//! filesystem comes from mmdebstrap (Debian's own, reproducible with SOURCE_DATE_EPOCH);
//! ext4, FAT, GPT and qcow2 are written by e2fsprogs, dosfstools+mtools, util-linux and
//! qemu-img on plain files — no loop devices, no mounts (shared notes, image-building).
//! It must not depend on the netboot server or any network stack: it produces files that
//! `metal6 serve --artifacts` serves.

pub mod build;
pub mod cpio;
pub mod modules;
pub mod pe;
pub mod recipe;
pub mod sysctl;
mod tools;

pub use build::{Options, Report, build};
