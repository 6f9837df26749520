//! Request statistics for `/_admin/stats` and [`crate::MockState::stats`].
//!
//! Counted per ARM request (admin calls are not counted): by method, by resource type (the
//! last collection segment of the path, e.g. `securityRules`, `operations`), by status, and
//! by the three together. Reset by `POST /_admin/reset`.

use std::collections::BTreeMap;

use serde::Serialize;

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub total: u64,
    pub by_method: BTreeMap<String, u64>,
    pub by_resource_type: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// Keyed `"<METHOD> <resourceType> <status>"`.
    pub by_request: BTreeMap<String, u64>,
    /// Requests answered by an injected fault.
    pub faults_injected: u64,
}

impl Stats {
    pub(crate) fn record(&mut self, method: &str, resource_type: &str, status: u16) {
        self.total += 1;
        *self.by_method.entry(method.to_owned()).or_default() += 1;
        *self
            .by_resource_type
            .entry(resource_type.to_owned())
            .or_default() += 1;
        *self.by_status.entry(status).or_default() += 1;
        *self
            .by_request
            .entry(format!("{method} {resource_type} {status}"))
            .or_default() += 1;
    }

    fn method(&self, method: &str) -> u64 {
        self.by_method.get(method).copied().unwrap_or(0)
    }

    /// GET requests (operation polls included).
    pub fn reads(&self) -> u64 {
        self.method("GET")
    }

    /// PUT and PATCH requests.
    pub fn writes(&self) -> u64 {
        self.method("PUT") + self.method("PATCH")
    }

    pub fn deletes(&self) -> u64 {
        self.method("DELETE")
    }

    /// Answers with status 429 (throttled or injected).
    pub fn throttled(&self) -> u64 {
        self.by_status.get(&429).copied().unwrap_or(0)
    }

    /// Count for one `"<METHOD> <resourceType> <status>"` combination.
    pub fn count(&self, method: &str, resource_type: &str, status: u16) -> u64 {
        self.by_request
            .get(&format!("{method} {resource_type} {status}"))
            .copied()
            .unwrap_or(0)
    }
}
