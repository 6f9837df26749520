//! asenet keeps the network configuration of Azure App Service Environments correct.
//!
//! The pipeline (docs/design.md section 3), one module each, in the order it runs:
//! `load` (CLI) or the kube watcher (operator) → `validate` → `observe` → `resolver` →
//! `diff` → `apply` → `report`. Validation comes before observe: the typed resource ids it
//! produces are what observe reads, and it needs no I/O. `verify` observes and resolves,
//! then evaluates (`evaluate::verify`).
//!
//! Four layers; imports point down this list and never in a cycle:
//!
//! - **core** (pure: no I/O, no async, no clock, no kube client or Azure SDK): `model`,
//!   `snapshot`, `error`, `validate`, `resolver`, `diff`, `evaluate`, `report` and the
//!   decisions of `tenancy`. It decides; its input is data and its output is data (a
//!   `Desired`, a `Plan`, a verify report, rendered text).
//! - **shell**: `azure` (the ARM client; its options in `azure::config`, the JSON it writes
//!   in `azure::wire`), `observe` (reads Azure into a `Snapshot`), `apply` (executes a
//!   `Plan`), `load` and `logging`; `pipeline` wires the stages; `fixture` holds the mock
//!   ARM seed of the demo and the tests.
//! - **controller**: the operator (watch, reconcile, status, events).
//! - **cli**: the commands; it chooses a format and prints what `report` renders.
//!
//! `tests/purity.rs` enforces the purity of the core and the import graph;
//! `tests/structure.rs` the length of functions (issue 15).

#![forbid(unsafe_code)]

pub mod api;
pub mod apply;
pub mod azure;
pub mod cli;
pub mod controller;
pub mod diff;
pub mod error;
pub mod evaluate;
pub mod fixture;
pub mod load;
pub mod logging;
pub mod model;
pub mod observe;
pub mod pipeline;
pub mod report;
pub mod resolver;
pub mod snapshot;
pub mod tenancy;
pub mod validate;
