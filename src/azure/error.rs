//! Errors of the ARM shell, with the stable category every caller (CLI exit codes, the
//! operator's backoff, metrics) decides on (docs/style.md rule 6).

// The category of an ARM error belongs to the one vocabulary of error categories, in the
// core (issue 15).
pub use crate::error::ErrorCategory;

/// ARM error codes that mean "try again later" even when the HTTP status is a 4xx or the
/// failure arrived in a long-running operation's status body (docs/domain.md 4.7).
const TRANSIENT_CODES: &[&str] = &[
    "AnotherOperationInProgress",
    "RetryableErrorDueToAnotherOperation",
    "InternalServerError",
    "ServiceUnavailable",
    "GatewayTimeout",
    "OperationTimedOut",
    "TooManyRequests",
    "SubscriptionRequestsThrottled",
    "PreconditionFailed",
];

/// A failed ARM call, carrying Azure's error code and message where Azure gave one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArmError {
    /// ARM answered with an error status (after the retry policy gave up, for retriable ones).
    #[error("{method} {resource}: HTTP {status} {code}: {message}")]
    Http {
        method: String,
        resource: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The write was accepted but its long-running operation ended `Failed` or `Canceled`
    /// (docs/domain.md 4.5); code and message come from the operation status body.
    #[error("{resource}: long-running operation ended {status}: {code}: {message}")]
    OperationFailed {
        resource: String,
        status: String,
        code: String,
        message: String,
    },
    /// The long-running operation did not finish within the configured time.
    #[error("{resource}: long-running operation still {status} after {waited_secs} s")]
    OperationTimeout {
        resource: String,
        status: String,
        waited_secs: u64,
    },
    /// No HTTP answer at all (connection refused/reset, timeout, TLS).
    #[error("{method} {resource}: no response from ARM: {message}")]
    Connection {
        method: String,
        resource: String,
        message: String,
    },
    /// Getting a token failed.
    #[error("cannot get an ARM token: {0}")]
    Credential(String),
    /// ARM answered 2xx with a body asenet cannot read.
    #[error("{resource}: unexpected response body: {message}")]
    Decode { resource: String, message: String },
    /// Bad endpoint, CA file or credential settings.
    #[error("ARM client configuration: {0}")]
    Config(String),
    /// The write fence was closed (this replica is no longer the leader): the request was
    /// not sent.
    #[error("{method} {resource}: not sent: this replica no longer holds the leader Lease")]
    Fenced { method: String, resource: String },
    /// ARM pointed a follow-up request (`nextLink`, `Azure-AsyncOperation`, `Location`) at
    /// another origin than the endpoint; it is not followed, so the token never leaves the
    /// endpoint it was issued for (issue 13).
    #[error("{resource}: {field} `{url}` is not on the ARM endpoint `{endpoint}` (same scheme, host and port required); not followed")]
    ForeignUrl {
        resource: String,
        field: String,
        url: String,
        endpoint: String,
    },
}

impl ArmError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            ArmError::Http { status, code, .. } => {
                if matches!(status, 408 | 412 | 429 | 500..=599)
                    || TRANSIENT_CODES.contains(&code.as_str())
                {
                    ErrorCategory::Transient
                } else {
                    ErrorCategory::Permanent
                }
            }
            ArmError::OperationFailed { code, .. } => {
                if TRANSIENT_CODES.contains(&code.as_str()) {
                    ErrorCategory::Transient
                } else {
                    ErrorCategory::Permanent
                }
            }
            ArmError::OperationTimeout { .. }
            | ArmError::Connection { .. }
            | ArmError::Credential(_)
            | ArmError::Fenced { .. } => ErrorCategory::Transient,
            ArmError::Decode { .. } | ArmError::Config(_) | ArmError::ForeignUrl { .. } => {
                ErrorCategory::Permanent
            }
        }
    }

    /// The HTTP status, for `Http` errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ArmError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Azure's error code, where there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ArmError::Http { code, .. } | ArmError::OperationFailed { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// 412 `PreconditionFailed`: someone wrote the resource after we read it (domain.md 4.6).
    pub fn is_precondition_failed(&self) -> bool {
        self.status() == Some(412)
    }

    /// Worth re-reading the resource and writing again: a lost If-Match race, or an
    /// operation that failed for a transient reason (the mock rolls the write back and
    /// stamps a new etag, so the retry must start from a fresh read).
    pub fn needs_reobserve(&self) -> bool {
        self.is_precondition_failed()
            || (matches!(self, ArmError::OperationFailed { .. })
                && self.category() == ErrorCategory::Transient)
    }
}
