//! asenet keeps the network configuration of Azure App Service Environments correct.
//!
//! The pipeline (docs/design.md section 3), one module each:
//! `observe` → `validate` → `resolver` → `diff` → `apply` → `report`.
//! `model`, `snapshot` and `error` hold the types they share; `azure` is the ARM client
//! shell, `pipeline` chains the stages, `controller` and `cli` are the two ways to run it.

pub mod api;
pub mod apply;
pub mod azure;
pub mod cli;
pub mod controller;
pub mod diff;
pub mod error;
pub mod evaluate;
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
