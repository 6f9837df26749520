//! Errors about one spec, shared by `validate` and `resolver`.
//!
//! A spec error always names the spec, the field path and the offending value, and carries a
//! stable category used in metrics, events and conditions (docs/style.md rule 6). Errors of
//! one spec never stop the other specs from being planned.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::SpecKey;

/// Stable error categories. Every category here is permanent: it waits for a spec change
/// (or a change in Azure that the next observe sees), it is not retried with backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SpecErrorKind {
    /// A field has a bad value (CIDR, port, band, name, unknown service...).
    InvalidField,
    /// An `environmentRef`, subnet, VNet or ASE the spec needs cannot be found.
    UnresolvedReference,
    /// The spec's priority band has no free priority left for its rules.
    BandFull,
    /// An Azure limit would be exceeded (rules or prefixes per NSG, routes per table).
    LimitExceeded,
    /// The spec names an Azure resource its namespace may not write (tenancy,
    /// `src/tenancy/`): fixed by a policy or grant change, or by editing the spec.
    NotPermitted,
}

impl SpecErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecErrorKind::InvalidField => "InvalidField",
            SpecErrorKind::UnresolvedReference => "UnresolvedReference",
            SpecErrorKind::BandFull => "BandFull",
            SpecErrorKind::LimitExceeded => "LimitExceeded",
            SpecErrorKind::NotPermitted => "NotPermitted",
        }
    }
}

/// One problem with one spec, e.g. `spec network/ase-two: spec.inbound[1].from[0].cidr:
/// `10.0.0.300/24` is not a valid IPv4 address or CIDR prefix`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, thiserror::Error,
)]
#[serde(rename_all = "camelCase")]
pub struct SpecError {
    pub spec: SpecKey,
    pub kind: SpecErrorKind,
    /// Field path, e.g. `spec.inbound[1].from[0].cidr`.
    pub field: String,
    /// The offending value as written (may be empty when the value is missing).
    pub value: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl SpecError {
    pub fn new(
        spec: &SpecKey,
        kind: SpecErrorKind,
        field: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        SpecError {
            spec: spec.clone(),
            kind,
            field: field.into(),
            value: value.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec {}: {}: {}", self.spec, self.field, self.message)
    }
}
