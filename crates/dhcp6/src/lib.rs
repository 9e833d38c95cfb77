//! metal6 DHCPv6: the wire codec and the decision engine, without I/O.
//!
//! `wire` turns UDP payloads into messages and back, strictly. `policy` decides what to answer
//! (and which bindings change), given the inventory, the binding table and the time; the
//! server in `metal6-netboot` owns sockets, persistence and clocks and only carries out these
//! decisions. Nothing here does I/O, reads a clock or depends on an async runtime.

pub mod bindings;
pub mod policy;
pub mod relay;
pub mod wire;
