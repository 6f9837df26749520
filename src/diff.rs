//! The diff: desired state against the observed snapshot, in canonical form, giving a
//! `Plan` (docs/design.md section 3). Pure, like the resolver.
//!
//! A plan sorts work into buckets per Azure parent resource (the NSG, the route table, the
//! subnet association) before anything executes; `apply` only executes it and `report`
//! only renders it.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::error::SpecError;
use crate::model::{ResourceId, Route, SecurityRule, SpecKey};

/// What the plan may touch. Owned entries are deleted only when their owner (from the
/// description) is a spec in `specs` or `removing`; owned entries of specs the caller does
/// not know about (another team's directory, another cluster) are left alone.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Specs whose contributions are in the desired state.
    pub specs: BTreeSet<SpecKey>,
    /// Specs being deleted: everything they own goes.
    pub removing: BTreeSet<SpecKey>,
}

/// Per Azure parent resource, what to change.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Sorted by kind, then id.
    pub resources: Vec<ResourcePlan>,
    /// Specs that could not be planned; their owned entries are kept as they are.
    pub errors: Vec<SpecError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ResourceKind {
    NetworkSecurityGroup,
    RouteTable,
    Subnet,
}

/// What happens to the parent resource itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ParentAction {
    /// It does not exist: create it (with the entries in `create`).
    Create,
    /// It exists and at least one entry or the association changes: one PUT.
    Update,
    /// Nothing to write.
    NoChange,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePlan {
    pub id: ResourceId,
    pub kind: ResourceKind,
    pub action: ParentAction,
    /// Location for a create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The etag observed, sent as `If-Match` on the write (docs/domain.md 4.6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Specs contributing to this resource.
    pub owners: BTreeSet<SpecKey>,
    /// NSG only.
    #[serde(skip_serializing_if = "EntryChanges::is_empty")]
    pub rules: EntryChanges<SecurityRule>,
    /// Route table only.
    #[serde(skip_serializing_if = "EntryChanges::is_empty")]
    pub routes: EntryChanges<Route>,
    /// Subnet only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association: Option<AssociationChange>,
    /// Problems with foreign entries that asenet reports but never fixes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
}

/// Changes to the child entries (rules or routes) of one parent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryChanges<T> {
    pub create: Vec<Planned<T>>,
    pub update: Vec<Update<T>>,
    pub delete: Vec<Planned<T>>,
    /// Owned entries already right.
    pub keep: Vec<Planned<T>>,
    /// Entries asenet does not own: carried unchanged on every write.
    pub foreign: Vec<T>,
}

impl<T> Default for EntryChanges<T> {
    fn default() -> Self {
        EntryChanges {
            create: vec![],
            update: vec![],
            delete: vec![],
            keep: vec![],
            foreign: vec![],
        }
    }
}

impl<T> EntryChanges<T> {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.update.is_empty()
            && self.delete.is_empty()
            && self.keep.is_empty()
            && self.foreign.is_empty()
    }
    /// True when a write is needed.
    pub fn has_changes(&self) -> bool {
        !(self.create.is_empty() && self.update.is_empty() && self.delete.is_empty())
    }
}

/// An owned entry with its owner and reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Planned<T> {
    pub entry: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<SpecKey>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Update<T> {
    pub before: T,
    pub after: T,
    /// Names of the fields that change (`priority`, `source`, `destinationPorts`...).
    pub fields: Vec<String>,
    pub owner: SpecKey,
    pub reason: String,
}

/// A subnet association change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationChange {
    pub network_security_group: Option<Change<Option<ResourceId>>>,
    pub route_table: Option<Change<Option<ResourceId>>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change<T> {
    pub from: T,
    pub to: T,
}

/// A problem with a foreign entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub kind: ConflictKind,
    /// The foreign entry's name.
    pub foreign: String,
    /// The owned entry (or requirement) it collides with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owned: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConflictKind {
    /// A foreign rule uses a priority inside a spec's band.
    PriorityInBand,
    /// A foreign deny with a lower priority number matches traffic a required allow admits.
    ShadowsRequiredAllow,
    /// A foreign route with the same destination as an owned route.
    SameDestination,
    /// An owned-looking entry whose owner is not among the specs in scope.
    UnknownOwner,
}
