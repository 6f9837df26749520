//! asenet keeps the network configuration of Azure App Service Environments correct.
//!
//! The pipeline (docs/design.md section 3), one module each:
//! `observe` → `validate` → `resolver` → `diff` → `apply` → `report`.
//! `model`, `snapshot` and `error` hold the types they share.

pub mod api;
pub mod diff;
pub mod error;
pub mod model;
pub mod resolver;
pub mod snapshot;
