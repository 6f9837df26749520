//! Errors about one spec, shared by `validate` and `resolver`.
//!
//! A spec error always names the spec, the field path and the offending value, and carries a
//! stable category used in metrics, events and conditions (docs/style.md rule 6). Errors of
//! one spec never stop the other specs from being planned.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::SpecKey;

/// The one vocabulary of error categories (issue 15), with its one spelling: PascalCase, the
/// spelling of the plan JSON's `errors[].kind` (docs/plan-json.md) and of Kubernetes
/// condition and event reasons. Metrics (`asenet_reconcile_errors_total{category}`),
/// events, conditions, the plan JSON and the resolve JSON all use [`Category::as_str`]; the
/// typed subsets below ([`SpecErrorKind`] of a spec, [`ErrorCategory`] of an Azure call)
/// convert into it and spell themselves through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// A spec field has a bad value ([`SpecErrorKind::InvalidField`]).
    InvalidField,
    /// A reference cannot be found ([`SpecErrorKind::UnresolvedReference`]).
    UnresolvedReference,
    /// The priority band is full ([`SpecErrorKind::BandFull`]).
    BandFull,
    /// An Azure limit would be exceeded ([`SpecErrorKind::LimitExceeded`]).
    LimitExceeded,
    /// Tenancy refuses the write ([`SpecErrorKind::NotPermitted`]).
    NotPermitted,
    /// Azure may answer differently later: back off and retry ([`ErrorCategory::Transient`]).
    Transient,
    /// Azure refuses until something changes ([`ErrorCategory::Permanent`]).
    Permanent,
    /// A Kubernetes API call failed.
    Kube,
    /// Removing what a deleted spec owns waits for something else.
    CleanupBlocked,
    /// Tenancy is enforced but its objects are not read yet.
    TenancyNotReady,
}

impl Category {
    /// Every category, for tests and documentation.
    pub const ALL: [Category; 10] = [
        Category::InvalidField,
        Category::UnresolvedReference,
        Category::BandFull,
        Category::LimitExceeded,
        Category::NotPermitted,
        Category::Transient,
        Category::Permanent,
        Category::Kube,
        Category::CleanupBlocked,
        Category::TenancyNotReady,
    ];

    /// The one spelling (see the type's documentation).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::InvalidField => "InvalidField",
            Category::UnresolvedReference => "UnresolvedReference",
            Category::BandFull => "BandFull",
            Category::LimitExceeded => "LimitExceeded",
            Category::NotPermitted => "NotPermitted",
            Category::Transient => "Transient",
            Category::Permanent => "Permanent",
            Category::Kube => "Kube",
            Category::CleanupBlocked => "CleanupBlocked",
            Category::TenancyNotReady => "TenancyNotReady",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets callers compare a category with its spelling (`error.category() == "Transient"`).
impl PartialEq<&str> for Category {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The categories of spec errors. Every one is permanent: it waits for a spec change (or a
/// change in Azure that the next observe sees), it is not retried with backoff. Serialised
/// in the one spelling of [`Category`]; the camelCase spelling older resolve JSON used is
/// still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SpecErrorKind {
    /// A field has a bad value (CIDR, port, band, name, unknown service...).
    #[serde(alias = "invalidField")]
    InvalidField,
    /// An `environmentRef`, subnet, VNet or ASE the spec needs cannot be found.
    #[serde(alias = "unresolvedReference")]
    UnresolvedReference,
    /// The spec's priority band has no free priority left for its rules.
    #[serde(alias = "bandFull")]
    BandFull,
    /// An Azure limit would be exceeded (rules or prefixes per NSG, routes per table).
    #[serde(alias = "limitExceeded")]
    LimitExceeded,
    /// The spec names an Azure resource its namespace may not write (tenancy,
    /// `src/tenancy/`): fixed by a policy or grant change, or by editing the spec.
    #[serde(alias = "notPermitted")]
    NotPermitted,
}

impl SpecErrorKind {
    pub fn category(self) -> Category {
        match self {
            SpecErrorKind::InvalidField => Category::InvalidField,
            SpecErrorKind::UnresolvedReference => Category::UnresolvedReference,
            SpecErrorKind::BandFull => Category::BandFull,
            SpecErrorKind::LimitExceeded => Category::LimitExceeded,
            SpecErrorKind::NotPermitted => Category::NotPermitted,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.category().as_str()
    }
}

impl From<SpecErrorKind> for Category {
    fn from(k: SpecErrorKind) -> Self {
        k.category()
    }
}

/// Whether a failed Azure call is worth retrying later with backoff (`Transient`) or must
/// wait for a change of the spec or of Azure (`Permanent`). Decided by the ARM layer
/// (`ArmError::category`), read by the CLI's exit codes and the operator's `error_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ErrorCategory {
    Transient,
    Permanent,
}

impl ErrorCategory {
    pub fn category(self) -> Category {
        match self {
            ErrorCategory::Transient => Category::Transient,
            ErrorCategory::Permanent => Category::Permanent,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.category().as_str()
    }
}

impl From<ErrorCategory> for Category {
    fn from(c: ErrorCategory) -> Self {
        c.category()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_has_one_distinct_pascal_case_spelling() {
        let mut seen = std::collections::BTreeSet::new();
        for c in Category::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "`{s}` spelled twice");
            assert!(
                s.starts_with(|ch: char| ch.is_ascii_uppercase())
                    && s.chars().all(|ch| ch.is_ascii_alphanumeric()),
                "`{s}` is not PascalCase"
            );
            assert_eq!(format!("{c}"), s);
        }
    }

    #[test]
    fn spec_error_kinds_serialise_as_their_category_and_still_read_the_old_camel_case() {
        for (kind, old) in [
            (SpecErrorKind::InvalidField, "invalidField"),
            (SpecErrorKind::UnresolvedReference, "unresolvedReference"),
            (SpecErrorKind::BandFull, "bandFull"),
            (SpecErrorKind::LimitExceeded, "limitExceeded"),
            (SpecErrorKind::NotPermitted, "notPermitted"),
        ] {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::json!(kind.category().as_str()));
            let read: SpecErrorKind = serde_json::from_value(serde_json::json!(old)).unwrap();
            assert_eq!(read, kind);
        }
    }

    #[test]
    fn azure_error_categories_are_spelled_by_the_one_vocabulary() {
        assert_eq!(ErrorCategory::Transient.as_str(), "Transient");
        assert_eq!(ErrorCategory::Permanent.as_str(), "Permanent");
        assert_eq!(Category::from(ErrorCategory::Transient), "Transient");
    }
}
