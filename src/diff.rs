//! The diff: desired state against the observed snapshot, in canonical form, giving a
//! `Plan` (docs/design.md section 3). Pure, like the resolver.
//!
//! A plan sorts work into buckets per Azure parent resource (the NSG, the route table, the
//! subnet association) before anything executes; `apply` only executes it and `report`
//! only renders it.
//!
//! Rules of the diff:
//! - Entries are compared in canonical form (the model types normalise `*`, `0-65535`,
//!   `0.0.0.0/0`, host bits, singular vs plural fields, tag casing; docs/domain.md 2.10);
//!   etag, id and provisioningState are not in the model. Owned entries are matched by
//!   name, case-insensitively (docs/domain.md 2.2).
//! - Owned entries carry the `asenet-` prefix. Ownership is read from the entry itself:
//!   an owned rule's owner from its description (`asenet:<namespace>/<name>:`); routes
//!   have no description in ARM (docs/domain.md 3.1), so an owned route's owner from its
//!   name (`resolver::route_owner`), never from which specs name its route table: a
//!   spec applied alone must not take over a route of another spec sharing the table.
//! - Owned entries not desired are deleted only when their owner is in scope
//!   (`specs` or `removing`). Entries of specs that failed to resolve are kept as they are.
//!   Owned-looking entries of unknown or out-of-scope owners are treated as foreign:
//!   carried unchanged, and reported as `UnknownOwner` only when they collide with
//!   something asenet wants.
//! - Subnet associations are added or changed to what a desired spec wants. They are
//!   removed only when the NSG or route table they point at is deleted: one asenet created
//!   for a spec being removed and that nothing remains in (`removal`, which also sets
//!   `ParentAction::Delete`). The plan thus holds every write `apply` makes
//!   ([`Plan::writes`]).
//! - Conflicts with foreign entries are reported, never fixed.
//! - Every collection is sorted, so the same input gives a byte-identical plan.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::SpecError;
use crate::evaluate::{rules_overlap, TagContext};
use crate::model::{
    Access, Caseless, Direction, Priority, PriorityBand, ResourceId, Route, SecurityRule, SpecKey,
};
use crate::resolver::{
    decode_tag_versions, encode_tag_versions, Desired, DesiredNsg, DesiredRouteTable, OwnedRoute,
    OwnedRule, RouteOwners,
};
use crate::snapshot::{NsgState, ParentState, RouteTableState, Snapshot};

/// The fewest NSGs one parallel task plans: small plans stay on the calling thread.
const NSGS_PER_TASK: usize = 32;

mod removal;

/// The ARM tag asenet puts on the NSGs and route tables it creates (value:
/// `namespace/name` of the spec it created it for). `removal` reads it back: only what
/// asenet created for a spec being removed is ever deleted.
pub const CREATED_BY_TAG: &str = "asenet.io/created-by";

/// What the plan may touch. Owned entries are deleted only when their owner (from the
/// description) is a spec in `specs` or `removing`; owned entries of specs the caller does
/// not know about (another team's directory, another cluster) are left alone.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Specs whose contributions are in the desired state.
    pub specs: BTreeSet<SpecKey>,
    /// Specs being deleted: everything they own goes.
    pub removing: BTreeSet<SpecKey>,
    /// Route tables named by specs that are not in the desired state (specs being removed),
    /// and which specs name them: the tables the diff must visit to delete a removed spec's
    /// routes (whose owner it reads from their names). Tables named in the desired state
    /// need no entry here.
    pub route_tables: BTreeMap<ResourceId, BTreeSet<SpecKey>>,
    /// Specs that may not write what they name (tenancy, `crate::tenancy`), with why. The
    /// pipeline treats them as invalid specs: not resolved, recorded as failed, so the diff
    /// keeps every entry they own exactly as it is. The diff itself does not read this.
    pub refused: BTreeMap<SpecKey, Vec<SpecError>>,
    /// When set, the plan is of this part of the component `specs` only: the pipeline
    /// reads and resolves the part's specs, and the other specs it is given are references
    /// ([`crate::resolver::Part`]). `specs` still holds the whole component, so entries its
    /// members own are theirs in every part.
    pub part: Option<Arc<PartOf>>,
}

/// A part of a component ([`Scope::part`]): the pipeline's side of
/// [`crate::resolver::Part`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartOf {
    /// The specs planned; closed under sharing (see [`crate::resolver::Part`]).
    pub build: BTreeSet<SpecKey>,
    /// Every valid spec of the component (shared by its parts).
    pub names: Arc<BTreeSet<SpecKey>>,
    /// The ASE addresses the component's parts have read (shared by them).
    pub environments: ReadEnvironments,
}

/// The ASE addresses read by the parts of one plan of a component, shared by the parts: a
/// part reads the ASEs of the specs it references, which other parts read too (each spec
/// is referenced from several parts), and a plan of the whole component reads each once.
/// A part takes the addresses an earlier part read rather than reading them again: one
/// plan, one reading of each ASE, as when the component is planned whole; a plan never
/// writes an ASE. Equal only to itself (a cache; it does not change what is planned).
#[derive(Debug, Clone, Default)]
pub struct ReadEnvironments(
    Arc<std::sync::Mutex<BTreeMap<ResourceId, crate::snapshot::EnvironmentState>>>,
);

impl PartialEq for ReadEnvironments {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl ReadEnvironments {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<ResourceId, crate::snapshot::EnvironmentState>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes out of `wanted` the ASEs read already, and gives their addresses.
    pub fn take_known(
        &self,
        wanted: &mut BTreeSet<ResourceId>,
    ) -> Vec<crate::snapshot::EnvironmentState> {
        let known = self.lock();
        let mut out = Vec::new();
        wanted.retain(|id| match known.get(id) {
            Some(env) => {
                out.push(env.clone());
                false
            }
            None => true,
        });
        out
    }

    /// Remembers the addresses read.
    pub fn remember<'a>(
        &self,
        read: impl IntoIterator<Item = &'a crate::snapshot::EnvironmentState>,
    ) {
        let mut known = self.lock();
        for env in read {
            known.entry(env.id.clone()).or_insert_with(|| env.clone());
        }
    }
}

impl Scope {
    /// A scope of `specs` being planned and `removing` being deleted.
    pub fn new(
        specs: impl IntoIterator<Item = SpecKey>,
        removing: impl IntoIterator<Item = SpecKey>,
    ) -> Self {
        Scope {
            specs: specs.into_iter().collect(),
            removing: removing.into_iter().collect(),
            route_tables: BTreeMap::new(),
            refused: BTreeMap::new(),
            part: None,
        }
    }

    /// This scope with the refusals of a tenancy decision (`PolicySet::refusals`).
    pub fn with_refused(mut self, refused: BTreeMap<SpecKey, Vec<SpecError>>) -> Self {
        self.refused = refused;
        self
    }

    /// This scope planning only the part `part` of its specs.
    pub fn with_part(mut self, part: Arc<PartOf>) -> Self {
        self.part = Some(part);
        self
    }

    /// True when entries owned by `spec` may be deleted.
    pub fn covers(&self, spec: &SpecKey) -> bool {
        self.specs.contains(spec) || self.removing.contains(spec)
    }
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
    /// NSG or route table only: asenet created it for a spec being removed and nothing
    /// remains in it. Its remaining owned entries are removed (one PUT, when there are
    /// any), the subnets using it are dissociated (their own plans), then it is deleted.
    Delete,
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
    pub owners: Owners,
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
    /// Route table only: the service-tag change numbers to record in the table's ARM tag
    /// `asenet-service-tags` when it is written (`AppServiceManagement=70`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tags: Option<String>,
}

/// The specs contributing to one resource: sorted, without duplicates. A boxed slice, not
/// a `BTreeSet`: a plan of 10,000 specs has ~31,000 resources, most with one owner, and a
/// B-tree allocated a node for up to eleven keys for each (issue 14's memory). Serialises
/// as the list of its keys, as the set did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Owners(Box<[SpecKey]>);

impl Owners {
    pub fn contains(&self, key: &SpecKey) -> bool {
        self.0.binary_search(key).is_ok()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, SpecKey> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The owners that are also in `other`, in order.
    pub fn intersection<'a>(
        &'a self,
        other: &'a BTreeSet<SpecKey>,
    ) -> impl Iterator<Item = &'a SpecKey> + 'a {
        self.0.iter().filter(|k| other.contains(*k))
    }
}

impl FromIterator<SpecKey> for Owners {
    fn from_iter<I: IntoIterator<Item = SpecKey>>(iter: I) -> Self {
        let mut keys: Vec<SpecKey> = iter.into_iter().collect();
        keys.sort_unstable();
        keys.dedup();
        Owners(keys.into_boxed_slice())
    }
}

impl From<BTreeSet<SpecKey>> for Owners {
    fn from(set: BTreeSet<SpecKey>) -> Self {
        Owners(set.into_iter().collect())
    }
}

impl<const N: usize> From<[SpecKey; N]> for Owners {
    fn from(keys: [SpecKey; N]) -> Self {
        keys.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Owners {
    type Item = &'a SpecKey;
    type IntoIter = std::slice::Iter<'a, SpecKey>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
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
    /// Shared with the desired state's entry when the plan keeps or creates exactly it
    /// (no copy of a rule per plan).
    pub entry: Arc<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<SpecKey>,
    pub reason: Arc<str>,
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

/// The HTTP verb of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum WriteVerb {
    Put,
    Delete,
}

/// One request the plan makes `apply` send.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PlannedWrite {
    pub id: ResourceId,
    pub kind: ResourceKind,
    pub verb: WriteVerb,
}

/// A subnet association change (`to: None`: the association is removed).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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

impl ConflictKind {
    /// Stable name used in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::PriorityInBand => "priorityInBand",
            ConflictKind::ShadowsRequiredAllow => "shadowsRequiredAllow",
            ConflictKind::SameDestination => "sameDestination",
            ConflictKind::UnknownOwner => "unknownOwner",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plan helpers
// ---------------------------------------------------------------------------------------

impl Plan {
    /// True when applying the plan writes anything.
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(ResourcePlan::has_changes)
    }

    /// `(create, update, delete)` over every rule, route and subnet association.
    pub fn summary(&self) -> (usize, usize, usize) {
        self.resources.iter().fold((0, 0, 0), |(c, u, d), r| {
            let (rc, ru, rd) = r.counts();
            (c + rc, u + ru, d + rd)
        })
    }

    /// The resources that need a write, in plan order.
    pub fn changed(&self) -> impl Iterator<Item = &ResourcePlan> {
        self.resources.iter().filter(|r| r.has_changes())
    }

    /// The plan of one resource.
    pub fn resource(&self, id: &ResourceId) -> Option<&ResourcePlan> {
        self.resources.iter().find(|r| &r.id == id)
    }

    /// Every conflict, with the resource it belongs to.
    pub fn conflicts(&self) -> impl Iterator<Item = (&ResourcePlan, &Conflict)> {
        self.resources
            .iter()
            .flat_map(|r| r.conflicts.iter().map(move |c| (r, c)))
    }

    /// Every request `apply` sends to execute this plan (without the re-reads and retries
    /// ARM's answers may call for), in plan order. `apply` sends the PUTs of NSGs and route
    /// tables first, each subnet PUT after the PUTs of the resources it is (or will be)
    /// associated with, and the DELETEs last.
    pub fn writes(&self) -> Vec<PlannedWrite> {
        self.resources
            .iter()
            .flat_map(|r| {
                r.writes().into_iter().map(|verb| PlannedWrite {
                    id: r.id.clone(),
                    kind: r.kind,
                    verb,
                })
            })
            .collect()
    }

    /// The complete rule list an NSG PUT must carry. See [`ResourcePlan::target_rules`].
    pub fn target_rules(resource: &ResourcePlan) -> Vec<SecurityRule> {
        resource.target_rules()
    }

    /// The complete route list a route table PUT must carry.
    pub fn target_routes(resource: &ResourcePlan) -> Vec<Route> {
        resource.target_routes()
    }
}

impl ResourcePlan {
    /// This plan without its kept and foreign entries when it writes nothing
    /// ([`Detail::Writes`]); unchanged otherwise.
    pub fn without_unwritten_entries(mut self) -> Self {
        if !self.has_changes() {
            self.drop_unwritten_entries();
        }
        self
    }

    /// Drops the kept and foreign entries, which only a PUT of the resource reads: a caller
    /// done writing keeps the changes, owners and conflicts for its reports.
    pub fn drop_unwritten_entries(&mut self) {
        self.rules.keep = Vec::new();
        self.rules.foreign = Vec::new();
        self.routes.keep = Vec::new();
        self.routes.foreign = Vec::new();
    }

    /// True when the resource needs a write.
    pub fn has_changes(&self) -> bool {
        self.action != ParentAction::NoChange
    }

    /// `(create, update, delete)` of this resource's entries and association, plus one
    /// delete for the resource itself when it is deleted.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (c, u, d) = self.put_counts();
        let deleted = usize::from(self.action == ParentAction::Delete);
        (c, u, d + deleted)
    }

    /// `(create, update, delete)` of the PUT of this resource: its entries and association.
    /// An association set where there was none counts as a create, a removed one as a
    /// delete, a replaced one as an update.
    pub fn put_counts(&self) -> (usize, usize, usize) {
        let mut c = self.rules.create.len() + self.routes.create.len();
        let mut u = self.rules.update.len() + self.routes.update.len();
        let mut d = self.rules.delete.len() + self.routes.delete.len();
        if let Some(a) = &self.association {
            for ch in [&a.network_security_group, &a.route_table]
                .into_iter()
                .flatten()
            {
                match (&ch.from, &ch.to) {
                    (None, _) => c += 1,
                    (Some(_), None) => d += 1,
                    (Some(_), Some(_)) => u += 1,
                }
            }
        }
        (c, u, d)
    }

    /// The requests `apply` sends for this resource, in order: a PUT when it is created or
    /// its entries or associations change, then a DELETE when it is deleted.
    pub fn writes(&self) -> Vec<WriteVerb> {
        let put = match self.action {
            ParentAction::NoChange => false,
            ParentAction::Create | ParentAction::Update => true,
            ParentAction::Delete => self.rules.has_changes() || self.routes.has_changes(),
        };
        let mut out = Vec::new();
        if put {
            out.push(WriteVerb::Put);
        }
        if self.action == ParentAction::Delete {
            out.push(WriteVerb::Delete);
        }
        out
    }

    /// True when the subnet write of this plan only takes associations away.
    pub fn only_dissociates(&self) -> bool {
        self.association.as_ref().is_some_and(|a| {
            [&a.network_security_group, &a.route_table]
                .into_iter()
                .flatten()
                .all(|c| c.to.is_none())
        })
    }

    /// The complete rule list a PUT of this NSG must carry: foreign entries unchanged,
    /// owned entries kept, created and updated (after), sorted by direction, priority and
    /// name. Deleted entries are absent.
    pub fn target_rules(&self) -> Vec<SecurityRule> {
        self.rules.target(rule_order)
    }

    /// The complete route list a PUT of this route table must carry, sorted by name.
    pub fn target_routes(&self) -> Vec<Route> {
        self.routes.target(route_order)
    }
}

impl<T: Clone> EntryChanges<T> {
    /// The complete entry list a PUT of the parent must carry: foreign entries unchanged,
    /// owned entries kept, created and updated (after), in `order`. Deleted entries are
    /// absent.
    fn target(&self, order: fn(&T, &T) -> std::cmp::Ordering) -> Vec<T> {
        (self.target_shared(order).iter())
            .map(|e| T::clone(e))
            .collect()
    }

    /// [`EntryChanges::target`] as shared entries: the kept and created ones are the
    /// desired state's own, not copies.
    fn target_shared(&self, order: fn(&T, &T) -> std::cmp::Ordering) -> Vec<Arc<T>> {
        let mut out: Vec<Arc<T>> = self
            .foreign
            .iter()
            .map(|f| Arc::new(f.clone()))
            .chain(self.keep.iter().map(|p| Arc::clone(&p.entry)))
            .chain(self.create.iter().map(|p| Arc::clone(&p.entry)))
            .chain(self.update.iter().map(|u| Arc::new(u.after.clone())))
            .collect();
        out.sort_by(|a, b| order(a, b));
        out
    }
}

// Names compare as their lower-cased text ([`Caseless`] orders exactly like
// `to_ascii_lowercase()` strings, without building them on every comparison).
fn rule_order(a: &SecurityRule, b: &SecurityRule) -> std::cmp::Ordering {
    (a.direction, a.priority, Caseless(&a.name)).cmp(&(b.direction, b.priority, Caseless(&b.name)))
}

fn route_order(a: &Route, b: &Route) -> std::cmp::Ordering {
    Caseless(&a.name)
        .cmp(&Caseless(&b.name))
        .then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------------------
// The diff
// ---------------------------------------------------------------------------------------

pub use crate::resolver::is_owned_name;

/// The owner recorded in an owned rule's description (`asenet:<namespace>/<name>: ...`).
fn rule_owner(rule: &SecurityRule) -> Option<SpecKey> {
    rule.description
        .as_deref()
        .and_then(crate::resolver::owner_from_description)
}

/// How much of the entries of a resource it does not write a plan carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every entry: the kept and foreign entries of every resource (what `asenet plan`
    /// reports).
    Full,
    /// What the controller writes and reports: only the resources with a change or a
    /// conflict, and kept and foreign entries only in those it writes (a PUT carries the
    /// whole list). A resource with nothing to write and no conflict is dropped as soon as
    /// it is planned, so a plan never holds them all at once: a converged component of
    /// 10,000 specs has ~31,000 resources and ~200,000 kept rules (issue 14's memory). The
    /// controller's reports read nothing else ([`crate::controller::context::Shared`]). A
    /// plan that removes a spec is always [`Detail::Full`]: the removal reads what remains
    /// in each resource.
    Writes,
}

/// Compares the desired state with the snapshot and sorts the work into a [`Plan`].
pub fn diff(desired: &Desired, snapshot: &Snapshot, scope: &Scope) -> Plan {
    diff_with(desired, snapshot, scope, Detail::Full)
}

/// [`diff`], carrying the entries `detail` asks for.
pub fn diff_with(desired: &Desired, snapshot: &Snapshot, scope: &Scope, detail: Detail) -> Plan {
    let failed = desired.failed_specs();
    let ctx = TagContext::from_snapshot(snapshot, &[]);
    let detail = if scope.removing.is_empty() {
        detail
    } else {
        Detail::Full
    };
    // What of a planned resource the plan keeps.
    let lean = |r: ResourcePlan| match detail {
        Detail::Full => Some(r),
        Detail::Writes if !r.has_changes() && r.conflicts.is_empty() => None,
        Detail::Writes => Some(r.without_unwritten_entries()),
    };

    // NSGs: desired ones, and observed ones holding owned rules of specs in scope; both
    // maps walked together in id order (one id comparison per step, not a lookup each).
    let touched = |nsg: &NsgState| {
        nsg.rules
            .iter()
            .any(|r| is_owned_name(&r.name) && rule_owner(r).is_some_and(|o| scope.covers(&o)))
    };
    let nsgs: Vec<_> = join(
        &desired.network_security_groups,
        &snapshot.network_security_groups,
    )
    .filter(|(_, want, have)| want.is_some() || have.is_some_and(touched))
    .collect();
    // Route tables: desired ones, tables named by desired subnets, tables of removed specs.
    let mut claimants: BTreeMap<&ResourceId, BTreeSet<SpecKey>> = BTreeMap::new();
    for (id, rt) in &desired.route_tables {
        let set = claimants.entry(id).or_default();
        set.extend(rt.routes.iter().map(|r| r.owner.clone()));
    }
    for sub in desired.subnets.values() {
        if let Some(rt) = &sub.route_table {
            claimants.entry(rt).or_default().insert(sub.owner.clone());
        }
    }
    for (id, specs) in &scope.route_tables {
        claimants
            .entry(id)
            .or_default()
            .extend(specs.iter().cloned());
    }
    // Sized once for every resource (a plan of 10,000 specs has ~31,000 of ~420 bytes
    // each; grown by doubling, it held up to twice that).
    let mut resources = Vec::with_capacity(nsgs.len() + claimants.len() + desired.subnets.len());
    // Each NSG is planned on its own, on every core (issue 14: "use both cores"), the plans
    // kept in id order. All of them: an indexed `par_extend` writes them into the space
    // reserved above. Some: gathered, then appended.
    let plan_one = |(id, want, have)| plan_nsg(id, want, have, scope, &failed, &ctx);
    let nsgs = nsgs.into_par_iter().with_min_len(NSGS_PER_TASK);
    match detail {
        Detail::Full => resources.par_extend(nsgs.map(plan_one)),
        Detail::Writes => {
            let mut kept: Vec<ResourcePlan> = nsgs.filter_map(|n| lean(plan_one(n))).collect();
            resources.append(&mut kept);
        }
    }

    // Who may own a route: every spec the plan knows, indexed once for all tables.
    let known = RouteOwners::new(scope.specs.iter().chain(&scope.removing).chain(&failed));
    for (id, claimed_by) in claimants {
        let want = desired.route_tables.get(id);
        let have = snapshot.route_tables.get(id);
        if want.is_none() && have.is_none() {
            continue;
        }
        resources.extend(lean(plan_route_table(
            id,
            want,
            have,
            &claimed_by,
            scope,
            &failed,
            &known,
        )));
    }

    plan_subnets(desired, snapshot, lean, &mut resources);
    if detail == Detail::Writes {
        // Reserved for every resource; a converged component keeps none.
        resources.shrink_to_fit();
    }

    // Already in this order (each kind is planned in id order); the keys are unique, so an
    // unstable sort gives the same order without the stable sort's scratch copy.
    resources.sort_unstable_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    removal::plan_removals(&mut resources, snapshot, scope);

    Plan {
        resources,
        errors: plan_errors(desired),
    }
}

/// The association changes of the desired subnets: set or changed to what their spec
/// wants, never removed here (`removal` takes associations away). Appended to `out`, each
/// as `lean` keeps it (the rule of the plan's [`Detail`]).
fn plan_subnets(
    desired: &Desired,
    snapshot: &Snapshot,
    lean: impl Fn(ResourcePlan) -> Option<ResourcePlan>,
    out: &mut Vec<ResourcePlan>,
) {
    for (id, want, have) in join(&desired.subnets, &snapshot.subnets) {
        let Some(want) = want else {
            continue;
        };
        let current_nsg = have.and_then(|s| s.network_security_group.clone());
        let current_rt = have.and_then(|s| s.route_table.clone());
        let nsg_change =
            (current_nsg.as_ref() != Some(&want.network_security_group)).then(|| Change {
                from: current_nsg.clone(),
                to: Some(want.network_security_group.clone()),
            });
        let rt_change = want.route_table.as_ref().and_then(|rt| {
            (current_rt.as_ref() != Some(rt)).then(|| Change {
                from: current_rt.clone(),
                to: Some(rt.clone()),
            })
        });
        let association =
            (nsg_change.is_some() || rt_change.is_some()).then_some(AssociationChange {
                network_security_group: nsg_change,
                route_table: rt_change,
            });
        out.extend(lean(ResourcePlan {
            id: id.clone(),
            kind: ResourceKind::Subnet,
            action: if association.is_some() {
                ParentAction::Update
            } else {
                ParentAction::NoChange
            },
            location: None,
            etag: have.and_then(|s| s.etag.clone()),
            owners: [want.owner.clone()].into(),
            rules: EntryChanges::default(),
            routes: EntryChanges::default(),
            association,
            conflicts: vec![],
            service_tags: None,
        }));
    }
}

/// Two maps by id walked together in id order: every id of either, with its value in
/// each (the id of `a` when both hold it, as a set built from `a` first keeps it).
fn join<'a, A, B>(
    a: &'a BTreeMap<ResourceId, A>,
    b: &'a BTreeMap<ResourceId, B>,
) -> impl Iterator<Item = (&'a ResourceId, Option<&'a A>, Option<&'a B>)> {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((x, _)), Some((y, _))) => x.cmp(y),
        };
        Some(match order {
            std::cmp::Ordering::Less => a.next().map(|(id, v)| (id, Some(v), None))?,
            std::cmp::Ordering::Greater => b.next().map(|(id, w)| (id, None, Some(w)))?,
            std::cmp::Ordering::Equal => {
                let (id, v) = a.next()?;
                (id, Some(v), b.next().map(|(_, w)| w))
            }
        })
    })
}

/// The errors of the specs that failed to resolve, sorted and without duplicates.
fn plan_errors(desired: &Desired) -> Vec<SpecError> {
    let mut errors: Vec<SpecError> = desired
        .specs
        .values()
        .filter_map(|o| match o {
            crate::resolver::SpecOutcome::Failed { errors } => Some(errors.iter().cloned()),
            crate::resolver::SpecOutcome::Resolved(_) => None,
        })
        .flatten()
        .collect();
    errors.sort();
    errors.dedup();
    errors
}

/// The bands of the specs contributing to an NSG. Specs without an explicit band (a
/// desired state built by hand) get the span of their rules' priorities.
fn bands_of(want: &DesiredNsg) -> std::borrow::Cow<'_, BTreeMap<SpecKey, PriorityBand>> {
    // The resolver gives every contributing spec a band: then there is nothing to add. A
    // spec's rules mostly come one after another, so its band is looked up once per run.
    let mut last: Option<&SpecKey> = None;
    let banded = want.rules.iter().all(|r| {
        let known = last == Some(&r.owner) || want.bands.contains_key(&r.owner);
        last = Some(&r.owner);
        known
    });
    if banded {
        return std::borrow::Cow::Borrowed(&want.bands);
    }
    let mut bands = want.bands.clone();
    let mut spans: BTreeMap<&SpecKey, (u32, u32)> = BTreeMap::new();
    for r in &want.rules {
        let e = spans
            .entry(&r.owner)
            .or_insert((r.rule.priority, r.rule.priority));
        e.0 = e.0.min(r.rule.priority);
        e.1 = e.1.max(r.rule.priority);
    }
    for (owner, (lo, hi)) in spans {
        if bands.contains_key(owner) {
            continue;
        }
        if let (Ok(from), Ok(to)) = (Priority::new(lo.into()), Priority::new(hi.into())) {
            bands.insert(owner.clone(), PriorityBand { from, to });
        }
    }
    std::borrow::Cow::Owned(bands)
}

fn plan_nsg(
    id: &ResourceId,
    want: Option<&DesiredNsg>,
    have: Option<&NsgState>,
    scope: &Scope,
    failed: &BTreeSet<SpecKey>,
    ctx: &TagContext,
) -> ResourcePlan {
    let wanted: BTreeMap<Caseless, &OwnedRule> = want
        .map(|w| {
            w.rules
                .iter()
                .map(|r| (Caseless(&r.rule.name), r))
                .collect()
        })
        .unwrap_or_default();
    let bands = want.map(bands_of).unwrap_or_default();
    // Owners come in runs (a spec's rules are contiguous in priority): repeats dropped
    // before the set sorts them.
    let mut runs: Vec<&SpecKey> = Vec::new();
    for o in wanted.values().map(|r| &r.owner).chain(bands.keys()) {
        if runs.last() != Some(&o) {
            runs.push(o);
        }
    }
    let mut owners: BTreeSet<SpecKey> = runs
        .into_iter()
        .collect::<BTreeSet<&SpecKey>>()
        .into_iter()
        .cloned()
        .collect();
    let mut ch = EntryChanges::<SecurityRule>::default();
    // Foreign entries, with whether they look owned (unknown owner).
    let mut foreign: Vec<(&SecurityRule, bool)> = Vec::new();

    let observed = have.map(|h| h.rules.as_slice()).unwrap_or_default();
    match_owned(observed, &wanted, &mut ch, |ch, rule| {
        if !is_owned_name(&rule.name) {
            foreign.push((rule, false));
            return;
        }
        match rule_owner(rule) {
            Some(o) if failed.contains(&o) => {
                owners.insert(o.clone());
                ch.keep.push(Planned {
                    entry: Arc::new(rule.clone()),
                    reason: format!("kept as is: spec {o} failed to resolve").into(),
                    owner: Some(o),
                });
            }
            Some(o) if scope.covers(&o) => {
                let reason = if scope.removing.contains(&o) {
                    format!("spec {o} is being removed")
                } else {
                    format!("no longer wanted by spec {o}")
                };
                owners.insert(o.clone());
                ch.delete.push(Planned {
                    entry: Arc::new(rule.clone()),
                    owner: Some(o),
                    reason: reason.into(),
                });
            }
            _ => foreign.push((rule, true)),
        }
    });

    let mut conflicts = Vec::new();
    let desired_rules: Vec<&OwnedRule> = wanted.values().copied().collect();
    for (rule, owned_looking) in &foreign {
        conflicts.extend(rule_conflicts(
            rule,
            *owned_looking,
            &desired_rules,
            &bands,
            ctx,
        ));
        ch.foreign.push((*rule).clone());
    }

    sort_changes(&mut ch, rule_order);
    conflicts.sort_by(|a: &Conflict, b: &Conflict| {
        (&a.foreign, a.kind, &a.owned, &a.message).cmp(&(&b.foreign, b.kind, &b.owned, &b.message))
    });
    conflicts.dedup();

    let changes = ch.has_changes();
    ResourcePlan {
        rules: ch,
        conflicts,
        ..parent_plan(
            id,
            ResourceKind::NetworkSecurityGroup,
            have.map(|h| (&h.location, &h.etag)),
            want.and_then(|w| w.location.as_ref()),
            changes,
            owners,
        )
    }
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// The kind of a conflict with a foreign `entry` ("rule", "route"), and how the entry is
/// described: an owned-looking entry whose owner is out of scope is an `UnknownOwner`.
fn foreign_kind(owned_looking: bool, entry: &str, kind: ConflictKind) -> (ConflictKind, String) {
    if owned_looking {
        (
            ConflictKind::UnknownOwner,
            format!("an asenet-named {entry} whose owner is not among the specs in scope"),
        )
    } else {
        (kind, format!("a foreign {entry}"))
    }
}

/// Conflicts of one foreign (or unknown-owner) rule with what asenet wants in the NSG.
fn rule_conflicts(
    rule: &SecurityRule,
    owned_looking: bool,
    desired: &[&OwnedRule],
    bands: &BTreeMap<SpecKey, PriorityBand>,
    ctx: &TagContext,
) -> Vec<Conflict> {
    let mut out = Vec::new();
    let same_slot = desired
        .iter()
        .find(|d| d.rule.direction == rule.direction && d.rule.priority == rule.priority);
    for (spec, band) in bands {
        if !band.contains(rule.priority) {
            continue;
        }
        let (kind, what) = foreign_kind(owned_looking, "rule", ConflictKind::PriorityInBand);
        out.push(Conflict {
            kind,
            foreign: rule.name.clone(),
            owned: same_slot.map(|d| d.rule.name.clone()),
            message: format!(
                "`{}` is {what} at {} priority {}, inside the band {}-{} of spec {spec}",
                rule.name,
                direction_word(rule.direction),
                rule.priority,
                band.from.get(),
                band.to.get(),
            ),
        });
    }
    if owned_looking && out.is_empty() {
        if let Some(d) = same_slot {
            out.push(Conflict {
                kind: ConflictKind::UnknownOwner,
                foreign: rule.name.clone(),
                owned: Some(d.rule.name.clone()),
                message: format!(
                    "`{}` is an asenet-named rule whose owner is not among the specs in scope; it holds {} priority {} that `{}` needs",
                    rule.name,
                    direction_word(rule.direction),
                    rule.priority,
                    d.rule.name
                ),
            });
        }
    }
    if rule.access == Access::Deny {
        for d in desired {
            if d.rule.access == Access::Allow
                && d.rule.direction == rule.direction
                && rule.priority < d.rule.priority
                && rules_overlap(rule, &d.rule, ctx)
            {
                let required = if d.required { "required " } else { "" };
                out.push(Conflict {
                    kind: ConflictKind::ShadowsRequiredAllow,
                    foreign: rule.name.clone(),
                    owned: Some(d.rule.name.clone()),
                    message: format!(
                        "deny `{}` (priority {}) matches traffic that the {required}allow `{}` (priority {}, spec {}) admits: {}",
                        rule.name, rule.priority, d.rule.name, d.rule.priority, d.owner, d.reason
                    ),
                });
            }
        }
    }
    out
}

fn plan_route_table(
    id: &ResourceId,
    want: Option<&DesiredRouteTable>,
    have: Option<&RouteTableState>,
    claimed_by: &BTreeSet<SpecKey>,
    scope: &Scope,
    failed: &BTreeSet<SpecKey>,
    known: &RouteOwners,
) -> ResourcePlan {
    let wanted: BTreeMap<Caseless, &OwnedRoute> = want
        .map(|w| {
            w.routes
                .iter()
                .map(|r| (Caseless(&r.route.name), r))
                .collect()
        })
        .unwrap_or_default();
    let mut owners: BTreeSet<SpecKey> = claimed_by.clone();
    owners.extend(wanted.values().map(|r| r.owner.clone()));
    let mut ch = EntryChanges::<Route>::default();
    let mut conflicts = Vec::new();
    // Who may own a route here: every spec the plan knows (`known`) and the specs naming
    // this table. The owner of an owned route is read from its own name (routes have no
    // description, docs/domain.md 3.1); a route no known spec named belongs to a spec
    // outside the input and is carried unchanged, even when specs in the input share the
    // table (issue 12).
    let here = RouteOwners::new(claimed_by.iter().chain(wanted.values().map(|r| &r.owner)));
    let mut foreign: Vec<(&Route, bool)> = Vec::new();

    let observed = have.map(|h| h.routes.as_slice()).unwrap_or_default();
    match_owned(observed, &wanted, &mut ch, |ch, route| {
        if !is_owned_name(&route.name) {
            foreign.push((route, false));
            return;
        }
        let matches = known.matches(&route.name).into_iter();
        match crate::resolver::names::best(matches.chain(here.matches(&route.name))) {
            Some(o) if failed.contains(o) => ch.keep.push(Planned {
                entry: Arc::new(route.clone()),
                owner: Some(o.clone()),
                reason: format!("kept as is: spec {o} failed to resolve").into(),
            }),
            Some(o) if scope.covers(o) => {
                let reason = if scope.removing.contains(o) {
                    format!("spec {o} is being removed")
                } else {
                    format!("no longer wanted by spec {o}")
                };
                ch.delete.push(Planned {
                    entry: Arc::new(route.clone()),
                    owner: Some(o.clone()),
                    reason: reason.into(),
                });
            }
            _ => foreign.push((route, true)),
        }
    });
    for (route, owned_looking) in foreign {
        conflicts.extend(route_conflicts(route, owned_looking, &wanted));
        ch.foreign.push(route.clone());
    }
    let service_tags = note_service_tags(&mut ch, want, have);
    sort_changes(&mut ch, route_order);
    conflicts.sort_by(|a, b| (&a.foreign, a.kind, &a.owned).cmp(&(&b.foreign, b.kind, &b.owned)));

    let changes = ch.has_changes();
    ResourcePlan {
        routes: ch,
        conflicts,
        service_tags,
        ..parent_plan(
            id,
            ResourceKind::RouteTable,
            have.map(|h| (&h.location, &h.etag)),
            want.and_then(|w| w.location.as_ref()),
            changes,
            owners,
        )
    }
}

/// Conflicts of one foreign (or unknown-owner) route with the owned routes asenet wants in
/// the table: the same destination, where Azure picks one of them.
fn route_conflicts(
    route: &Route,
    owned_looking: bool,
    wanted: &BTreeMap<Caseless, &OwnedRoute>,
) -> Vec<Conflict> {
    let mut out = Vec::new();
    for w in wanted.values() {
        if w.route.address_prefix == route.address_prefix {
            let (kind, what) = foreign_kind(owned_looking, "route", ConflictKind::SameDestination);
            out.push(Conflict {
                kind,
                foreign: route.name.clone(),
                owned: Some(w.route.name.clone()),
                message: format!(
                    "`{}` is {what} with the destination {} of `{}` (next hop {:?} vs {:?}); Azure picks one of them",
                    route.name,
                    route.address_prefix,
                    w.route.name,
                    route.next_hop_type,
                    w.route.next_hop_type
                ),
            });
        }
    }
    out
}

/// The service-tag change numbers to record on the route table, when they differ from the
/// ones recorded; a tag whose number moved is named in the reason of every owned route
/// that changes (domain.md 5.1).
fn note_service_tags(
    ch: &mut EntryChanges<Route>,
    want: Option<&DesiredRouteTable>,
    have: Option<&RouteTableState>,
) -> Option<String> {
    let none = BTreeMap::new();
    let recorded = have.map_or(&none, |h| &h.recorded_service_tags);
    let current = want.map(|w| &w.service_tags);
    let moved: Vec<String> = current
        .into_iter()
        .flatten()
        .filter_map(|(tag, n)| {
            let old = recorded
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(tag))
                .map(|(_, v)| v)?;
            (old != n).then(|| format!("service tag {tag} changed: changeNumber {old} -> {n}"))
        })
        .collect();
    if !moved.is_empty() {
        let note = format!(" ({})", moved.join("; "));
        for p in ch.create.iter_mut().chain(ch.delete.iter_mut()) {
            p.reason = format!("{}{note}", p.reason).into();
        }
        for u in ch.update.iter_mut() {
            u.reason.push_str(&note);
        }
    }
    current
        .filter(|c| !c.is_empty() && *c != recorded)
        .map(encode_tag_versions)
}

fn sort_changes<T>(ch: &mut EntryChanges<T>, order: fn(&T, &T) -> std::cmp::Ordering) {
    ch.create.sort_by(|a, b| order(&a.entry, &b.entry));
    ch.update.sort_by(|a, b| order(&a.after, &b.after));
    ch.delete.sort_by(|a, b| order(&a.entry, &b.entry));
    ch.keep.sort_by(|a, b| order(&a.entry, &b.entry));
    ch.foreign.sort_by(order);
}

/// Simulates what Azure holds after `plan` is applied to `snapshot`: rule and route lists
/// replaced by the target lists, missing NSGs and route tables created, deleted ones
/// removed, associations set or removed. For tests and benchmarks ("re-planning after
/// applying a plan is empty"); `raw` JSON of entries that were written is dropped, the
/// foreign entries' raw JSON is kept.
pub fn apply_to_snapshot(plan: &Plan, snapshot: &Snapshot) -> Snapshot {
    let mut out = snapshot.clone();
    apply_in_place(plan, &mut out);
    out
}

/// [`apply_to_snapshot`] on the snapshot itself (no copy of it).
pub fn apply_in_place(plan: &Plan, out: &mut Snapshot) {
    for r in plan.resources.iter().filter(|r| r.has_changes()) {
        if r.action == ParentAction::Delete {
            out.network_security_groups.remove(&r.id);
            out.route_tables.remove(&r.id);
            continue;
        }
        match r.kind {
            // The desired rules themselves, not copies (issue 14's memory: after the
            // writes of a 10,000-spec component its snapshot holds every owned rule).
            ResourceKind::NetworkSecurityGroup => replace_entries(
                &mut out.network_security_groups,
                r,
                r.rules.target_shared(rule_order),
                r.rules.foreign.iter().map(|f| f.name.as_str()),
            ),
            ResourceKind::RouteTable => {
                replace_entries(
                    &mut out.route_tables,
                    r,
                    r.target_routes(),
                    r.routes.foreign.iter().map(|f| f.name.as_str()),
                );
                // The write records the versions on the table (`wire`).
                if let (Some(versions), Some(table)) =
                    (&r.service_tags, out.route_tables.get_mut(&r.id))
                {
                    table.recorded_service_tags = decode_tag_versions(versions);
                }
            }
            ResourceKind::Subnet => {
                let (Some(a), Some(subnet)) = (&r.association, out.subnets.get_mut(&r.id)) else {
                    continue;
                };
                if let Some(c) = &a.network_security_group {
                    subnet.network_security_group = c.to.clone();
                }
                if let Some(c) = &a.route_table {
                    subnet.route_table = c.to.clone();
                }
            }
        }
    }
}

/// `r`'s parent in `parents` (created when missing) with its entries replaced by
/// `targets`; the raw JSON of every entry but the `foreign` ones (by name) is dropped.
fn replace_entries<'f, S: ParentState>(
    parents: &mut BTreeMap<ResourceId, S>,
    r: &ResourcePlan,
    targets: Vec<S::Entry>,
    foreign: impl Iterator<Item = &'f str>,
) {
    let foreign: BTreeSet<String> = foreign.map(str::to_ascii_lowercase).collect();
    let parent = parents
        .entry(r.id.clone())
        .or_insert_with(|| S::empty(r.id.clone(), r.location.clone()));
    *parent.entries_mut() = targets;
    parent.raw_entries_mut().retain(|k| foreign.contains(k));
}

/// The plan of an NSG or route table, its entries left for the caller to set: `have` is
/// its observed `(location, etag)` when it exists, `changes` whether any entry changes.
fn parent_plan(
    id: &ResourceId,
    kind: ResourceKind,
    have: Option<(&Option<String>, &Option<String>)>,
    desired_location: Option<&String>,
    changes: bool,
    owners: BTreeSet<SpecKey>,
) -> ResourcePlan {
    ResourcePlan {
        id: id.clone(),
        kind,
        action: parent_action(have.is_some(), changes),
        location: parent_location(have.map(|h| h.0), desired_location),
        etag: have.and_then(|h| h.1.clone()),
        owners: owners.into(),
        rules: EntryChanges::default(),
        routes: EntryChanges::default(),
        association: None,
        conflicts: vec![],
        service_tags: None,
    }
}

/// What happens to an NSG or route table: created when it does not exist, else one PUT
/// when any of its entries changes.
fn parent_action(exists: bool, changes: bool) -> ParentAction {
    match (exists, changes) {
        (false, _) => ParentAction::Create,
        (true, true) => ParentAction::Update,
        (true, false) => ParentAction::NoChange,
    }
}

/// The location of a parent: the observed one when it exists (`observed` is `Some`), else
/// the one desired for creating it.
fn parent_location(observed: Option<&Option<String>>, desired: Option<&String>) -> Option<String> {
    match observed {
        Some(location) => location.clone(),
        None => desired.cloned(),
    }
}

/// A rule or route as the diff sees it.
trait Entry: Clone {
    fn name(&self) -> &str;
    /// `self` under another name (the observed casing of a wanted entry's name).
    fn renamed(&self, name: &str) -> Self;
    fn changed_fields(&self, other: &Self) -> Vec<&'static str>;
}

impl Entry for SecurityRule {
    fn name(&self) -> &str {
        &self.name
    }
    fn renamed(&self, name: &str) -> Self {
        SecurityRule {
            name: name.to_string(),
            ..self.clone()
        }
    }
    fn changed_fields(&self, other: &Self) -> Vec<&'static str> {
        SecurityRule::changed_fields(self, other)
    }
}

impl Entry for Route {
    fn name(&self) -> &str {
        &self.name
    }
    fn renamed(&self, name: &str) -> Self {
        Route {
            name: name.to_string(),
            ..self.clone()
        }
    }
    fn changed_fields(&self, other: &Self) -> Vec<&'static str> {
        Route::changed_fields(self, other)
    }
}

/// A desired owned entry: the entry, its owner and its reason.
trait Wanted<T> {
    fn entry(&self) -> &Arc<T>;
    fn owner(&self) -> &SpecKey;
    fn reason(&self) -> &Arc<str>;
}

impl Wanted<SecurityRule> for OwnedRule {
    fn entry(&self) -> &Arc<SecurityRule> {
        &self.rule
    }
    fn owner(&self) -> &SpecKey {
        &self.owner
    }
    fn reason(&self) -> &Arc<str> {
        &self.reason
    }
}

impl Wanted<Route> for OwnedRoute {
    fn entry(&self) -> &Arc<Route> {
        &self.route
    }
    fn owner(&self) -> &SpecKey {
        &self.owner
    }
    fn reason(&self) -> &Arc<str> {
        &self.reason
    }
}

/// Sorts the observed entries of a parent against the wanted owned ones: an observed entry
/// whose name is wanted is kept or updated, keeping its observed casing (ARM names are
/// case-insensitive; a casing change alone is no reason to write); every other observed
/// entry (foreign, or owned but not wanted) goes to `other`; wanted entries not observed are created. Shared by rules and
/// routes.
fn match_owned<'h, T: Entry + PartialEq + 'h, O: Borrow<T>, W: Wanted<T>>(
    observed: &'h [O],
    wanted: &BTreeMap<Caseless<'_>, &W>,
    ch: &mut EntryChanges<T>,
    mut other: impl FnMut(&mut EntryChanges<T>, &'h T),
) {
    let mut seen: BTreeSet<Caseless> = BTreeSet::new();
    // Every wanted entry is kept, updated or created: sized once (entries are large).
    ch.keep.reserve(wanted.len().min(observed.len()));
    for entry in observed {
        let entry: &'h T = entry.borrow();
        let key = Caseless(entry.name());
        match wanted.get(&key) {
            Some(w) => {
                seen.insert(key);
                keep_or_update(ch, entry, w.entry(), w.owner(), w.reason());
            }
            None => other(ch, entry),
        }
    }
    ch.create.reserve(wanted.len().saturating_sub(seen.len()));
    for (key, w) in wanted {
        if !seen.contains(key) {
            ch.create.push(Planned {
                entry: Arc::clone(w.entry()),
                owner: Some(w.owner().clone()),
                reason: Arc::clone(w.reason()),
            });
        }
    }
}

/// An owned entry that is wanted: kept when no field differs, updated (listing the fields
/// that change) otherwise; the update's `after` is the wanted entry under the observed
/// name (the fields compared ignore names, so it is built only for an update). A kept
/// entry is the observed one; when it equals the wanted one in every byte (the converged
/// case), the plan shares the desired state's copy instead of making another. Shared by
/// rules and routes.
fn keep_or_update<T: Entry + PartialEq>(
    ch: &mut EntryChanges<T>,
    observed: &T,
    wanted: &Arc<T>,
    owner: &SpecKey,
    reason: &Arc<str>,
) {
    // The desired entry is the observed one itself (the resolver shares a rule Azure
    // already holds as wanted, `resolver::build`): kept, nothing to compare.
    if std::ptr::eq(observed, &**wanted) {
        ch.keep.push(Planned {
            entry: Arc::clone(wanted),
            owner: Some(owner.clone()),
            reason: Arc::clone(reason),
        });
        return;
    }
    let fields = observed.changed_fields(wanted);
    if fields.is_empty() {
        let entry = if observed == &**wanted {
            Arc::clone(wanted)
        } else {
            Arc::new(observed.clone())
        };
        ch.keep.push(Planned {
            entry,
            owner: Some(owner.clone()),
            reason: Arc::clone(reason),
        });
    } else {
        ch.update.push(Update {
            before: observed.clone(),
            after: wanted.renamed(observed.name()),
            fields: fields.into_iter().map(String::from).collect(),
            owner: owner.clone(),
            reason: reason.to_string(),
        });
    }
}
