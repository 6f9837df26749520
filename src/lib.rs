//! asenet keeps the network configuration of Azure App Service Environments correct.
//!
//! The pipeline (docs/design.md section 3), one module each:
//! `observe` → `validate` → `resolver` → `diff` → `apply` → `report`.
//! `model`, `snapshot` and `error` hold the types they share; `azure` is the ARM client
//! shell (its options in `azure::config`, the JSON it writes in `azure::wire`), `pipeline`
//! chains the stages, `controller` and `cli` are the two ways to run it, `fixture` holds
//! the mock ARM seed of the demo and the tests. Imports point down this list and never in a
//! cycle; `tests/purity.rs` enforces it (issue 15).

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
