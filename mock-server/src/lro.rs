//! Long-running operations (domain.md 4.5).
//!
//! Every NRP write starts an [`Operation`]: the resource shows `Updating` (or `Deleting`)
//! until the operation's deadline passes on the ARM clock, then `Succeeded` (or it is
//! removed). The status endpoint (`.../locations/{loc}/operations/{id}`) always answers 200
//! with `{"status": ...}`; the result endpoint (`.../operationResults/{id}`) answers 202 while
//! running and then what the synchronous call would have. An injected `lroFailed` fault
//! makes the operation end `Failed`, with the write rolled back (or kept, on request).

use std::time::Instant;

use serde_json::{json, Value};
use time::OffsetDateTime;

/// Whether the operation writes or deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Delete,
}

/// Terminal state of an operation (NRP's `AzureAsyncOperationResult.status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpState {
    InProgress,
    Succeeded,
    Failed { code: String, message: String },
}

/// An injected failure for the operation (see `faults`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LroFailure {
    pub code: String,
    pub message: String,
    pub keep_write: bool,
}

/// One long-running operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    pub location: String,
    /// Lower-case id of the top-level resource the operation works on.
    pub resource_key: String,
    pub kind: OpKind,
    /// The top-level entry is removed when the operation completes (top-level DELETE).
    pub removes_entry: bool,
    pub started: OffsetDateTime,
    pub deadline: Instant,
    pub failure: Option<LroFailure>,
    pub state: OpState,
}

impl Operation {
    pub fn in_progress(&self) -> bool {
        self.state == OpState::InProgress
    }

    /// The status body NRP returns: `{"status": ...}` plus `error` when failed.
    pub fn status_body(&self) -> Value {
        match &self.state {
            OpState::InProgress => json!({ "status": "InProgress" }),
            OpState::Succeeded => json!({ "status": "Succeeded" }),
            OpState::Failed { code, message } => json!({
                "status": "Failed",
                "error": { "code": code, "message": message, "details": [] },
            }),
        }
    }
}

/// The absolute status URL (`Azure-AsyncOperation`) of an operation (domain.md 4.5).
pub fn status_url(base: &str, sub: &str, location: &str, id: &str, api_version: &str) -> String {
    format!("{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operations/{id}?api-version={api_version}")
}

/// The absolute result URL (`Location`) of an operation (domain.md 4.5).
pub fn result_url(base: &str, sub: &str, location: &str, id: &str, api_version: &str) -> String {
    format!("{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operationResults/{id}?api-version={api_version}")
}
