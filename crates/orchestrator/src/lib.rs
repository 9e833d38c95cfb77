//! The fleet orchestrator: `metal6 plan` and `metal6 apply` take selected nodes from power-off
//! to installed and ready, through their BMCs, with one persisted state machine per node.
//!
//! - [`machine`]: the states, the evidence rules and the timeout policy — pure, no I/O.
//! - [`store`]: durable records and history behind the [`store::Store`] trait (SQLite here),
//!   and [`store_pg`]: the same on PostgreSQL with claims, for several apply workers.
//! - [`apply`]: the drivers (one task per node), the limits, BMC calls and evidence reads.
//! - [`firmware`]: the firmware step, one component at a time (the update task kept, polled).
//! - [`bios`]: the BIOS step as persisted sub-states (a Dell job id kept, polled on resume).
//! - [`cluster`]: the cluster step's files (shared with `metal6 cluster render`) and the join
//!   files rendered from the first control plane's CA hash.
//! - [`plan`]: observations, per-node actions, saved plans and their staleness check.
//!
//! What this crate must not do: serve anything (the netboot server is `metal6-netboot`, read
//! over its HTTP API only, so `apply` can run on another host), or print (the CLI draws the
//! tables; `apply` writes progress lines only when asked to).

pub mod apply;
pub mod bios;
pub mod cluster;
pub mod firmware;
pub mod machine;
pub mod plan;
pub mod store;
pub mod store_pg;

pub use apply::{Apply, Options, Row};
pub use machine::{NodeRecord, Policy, State, Step};
pub use plan::{NodePlan, SavedPlan};
pub use store::{Claim, History, SqliteStore, Store};
pub use store_pg::PgStore;
