//! Fault injection (issue 3): make the next N matching requests fail in a chosen way.
//!
//! Faults come from the config file (`faults:`) and from `POST /_admin/faults`. A fault matches
//! a method (or any) and a path pattern (a case-insensitive substring, or a glob when it
//! contains `*` or `?`). The kinds reproduce what ARM clients must survive (domain.md 4.7,
//! 4.8, 4.5): an error status with an ARM code (429 with `Retry-After`, 500, 503,
//! 409 `AnotherOperationInProgress`, 412 `PreconditionFailed`), added latency, a connection
//! closed without a response, a long-running operation that ends `Failed`, and operation
//! URLs (`Azure-AsyncOperation`, `Location`) pointing at another origin (a hostile or
//! misrouted answer: a client must not send its token there, issue 13).

use serde::{Deserialize, Serialize};

/// One fault to arm.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultSpec {
    /// HTTP method to match (`GET`, `PUT`, ...); absent or `*` matches every method.
    #[serde(default)]
    pub method: Option<String>,
    /// Path pattern: case-insensitive substring, or glob (`*`, `?`) matched against the whole
    /// path. Absent matches every ARM path (admin paths never match).
    #[serde(default)]
    pub path: Option<String>,
    /// How many matching requests the fault applies to (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// What happens to a matching request.
    #[serde(flatten)]
    pub action: FaultAction,
}

fn one() -> u32 {
    1
}

/// What a fault does to the request it matches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FaultAction {
    /// Answer with `status` and an ARM error body instead of processing the request.
    #[serde(rename_all = "camelCase")]
    Error {
        status: u16,
        /// ARM error code; a sensible default is derived from the status.
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        /// `Retry-After` in ARM seconds (default 1 on 429 and 503).
        #[serde(default)]
        retry_after: Option<f64>,
    },
    /// Delay the request by `ms` milliseconds (real time), then process it normally.
    #[serde(rename_all = "camelCase")]
    Latency { ms: u64 },
    /// Close the connection without sending a response.
    Reset,
    /// Process the write, but make its long-running operation end `Failed` with this error.
    #[serde(rename_all = "camelCase")]
    LroFailed {
        #[serde(default = "default_lro_code")]
        code: String,
        #[serde(default = "default_lro_message")]
        message: String,
        /// Keep the written properties (resource ends `Failed`) instead of rolling back to the
        /// previous version (default: roll back).
        #[serde(default)]
        keep_write: bool,
    },
    /// Process the request normally, but point the `Azure-AsyncOperation` and `Location`
    /// headers of its answer at `origin` (`scheme://host[:port]`; path and query kept).
    #[serde(rename_all = "camelCase")]
    ForeignPollUrl { origin: String },
}

fn default_lro_code() -> String {
    "InternalServerError".to_owned()
}

fn default_lro_message() -> String {
    "An error occurred while processing the operation (injected fault).".to_owned()
}

impl FaultAction {
    /// The default ARM code for an injected error status.
    pub fn default_code(status: u16) -> &'static str {
        match status {
            400 => "BadRequest",
            404 => "NotFound",
            409 => "AnotherOperationInProgress",
            412 => "PreconditionFailed",
            429 => "SubscriptionRequestsThrottled",
            500 => "InternalServerError",
            502 => "BadGateway",
            503 => "ServiceUnavailable",
            504 => "GatewayTimeout",
            _ => "InjectedFault",
        }
    }
}

/// A fault waiting for requests, with what is left of its count.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingFault {
    pub id: u64,
    pub remaining: u32,
    #[serde(flatten)]
    pub spec: FaultSpec,
}

/// The list of armed faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    next_id: u64,
    pending: Vec<PendingFault>,
}

impl Faults {
    pub(crate) fn add(&mut self, spec: FaultSpec) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        if spec.count > 0 {
            self.pending.push(PendingFault {
                id,
                remaining: spec.count,
                spec,
            });
        }
        id
    }

    pub(crate) fn list(&self) -> Vec<PendingFault> {
        self.pending.clone()
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    /// Take one use of the first fault matching this request, if any.
    pub(crate) fn take(&mut self, method: &str, path: &str) -> Option<FaultAction> {
        let index = self
            .pending
            .iter()
            .position(|fault| fault.matches(method, path))?;
        let fault = &mut self.pending[index];
        let action = fault.spec.action.clone();
        fault.remaining -= 1;
        if fault.remaining == 0 {
            self.pending.remove(index);
        }
        Some(action)
    }
}

impl PendingFault {
    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = match self.spec.method.as_deref() {
            None | Some("*") | Some("") => true,
            Some(m) => m.eq_ignore_ascii_case(method),
        };
        let path_ok = match self.spec.path.as_deref() {
            None | Some("") => true,
            Some(pattern) => pattern_matches(pattern, path),
        };
        method_ok && path_ok
    }
}

/// Case-insensitive match: glob when the pattern has `*`/`?`, substring otherwise.
pub(crate) fn pattern_matches(pattern: &str, path: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let path = path.to_ascii_lowercase();
    if pattern.contains(['*', '?']) {
        glob(pattern.as_bytes(), path.as_bytes())
    } else {
        path.contains(&pattern)
    }
}

/// Iterative glob matcher (`*` any run, `?` one byte) without backtracking blow-up.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_and_substring_patterns_match_case_insensitively() {
        let path = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/networkSecurityGroups/nsg1";
        assert!(pattern_matches("networksecuritygroups", path));
        assert!(pattern_matches("*/NetworkSecurityGroups/*", path));
        assert!(pattern_matches("/subscriptions/*/nsg?", path));
        assert!(!pattern_matches("*/routeTables/*", path));
        assert!(!pattern_matches("routetables", path));
    }

    #[test]
    fn a_fault_is_used_up_after_its_count() {
        let mut faults = Faults::default();
        faults.add(FaultSpec {
            method: Some("PUT".into()),
            path: Some("nsg".into()),
            count: 2,
            action: FaultAction::Reset,
        });
        assert!(faults.take("GET", "/nsg").is_none());
        assert!(faults.take("put", "/nsg").is_some());
        assert!(faults.take("PUT", "/nsg").is_some());
        assert!(faults.take("PUT", "/nsg").is_none());
    }

    #[test]
    fn fault_specs_parse_from_yaml() {
        let spec: FaultSpec = serde_yaml::from_str(
            "{method: PUT, path: '*/securityRules/*', count: 3, kind: error, status: 429, retryAfter: 2}",
        )
        .unwrap();
        assert_eq!(spec.count, 3);
        assert!(matches!(
            spec.action,
            FaultAction::Error { status: 429, .. }
        ));
        let spec: FaultSpec = serde_json::from_str(r#"{"kind":"lroFailed","code":"X"}"#).unwrap();
        assert!(matches!(spec.action, FaultAction::LroFailed { .. }));
    }
}
