//! What a reconcile reports, decided from what it found: the status, the events, the change
//! counters, which part of a plan the controller may write, and what `error_policy` does
//! with an error. Pure: no kube client, no async, no clock (the caller passes `now`), no
//! ARM; the shell (`reconcile.rs`) gathers the inputs, calls in here and executes the
//! decision (writes the status, publishes the events, counts the metrics).
//!
//! The status itself is computed by [`status::next_status`]; this module turns the raw
//! outcome of a reconcile (the component's plan after its writes, what it wrote, what is
//! withheld) into the finding `next_status` takes, and adds the events and counters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::status::{
    self, has_changes, next_status, summarise, summarise_counts, Finding, PlannedFinding,
};
use crate::api::{AseConnectivityStatus, DeletionPolicy, Mode, OwnedRuleStatus, PlanSummary};
use crate::diff::{ResourceKind, ResourcePlan};
use crate::error::{Category, ErrorCategory, SpecError, SpecErrorKind};
use crate::model::{ResourceId, SpecKey};
use crate::resolver::{Desired, Resolution};

/// The contributors that withhold the write of a resource (they are not in mode `Apply`),
/// by resource; resources nobody withholds are absent. Computed by the shell with
/// `pipeline::withheld_by`, the one rule the CLI and the operator share.
pub type Withheld = BTreeMap<ResourceId, BTreeSet<SpecKey>>;

/// What `error_policy` does with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Only a change of the spec can fix it.
    AwaitChange,
    /// A change in Azure or in another spec can fix it: look again at the next resync.
    Resync,
    /// Retry with exponential backoff.
    Backoff,
}

/// The policy of an error category: the one place `error_policy` takes its decision from.
pub fn policy(category: Category) -> Policy {
    match category {
        // An invalid field is fixed only by editing the spec. A refusal (tenancy) is lifted
        // by a policy or grant change, which wakes the spec (`controller::tenancy`), or by a
        // spec change.
        Category::InvalidField | Category::NotPermitted => Policy::AwaitChange,
        // A missing reference, a full band or a limit can be fixed by another spec or by
        // Azure: the resync looks again (and a change of a referenced spec wakes this one
        // through the index). Azure refusing (403, 400...) waits for a change there.
        Category::UnresolvedReference
        | Category::BandFull
        | Category::LimitExceeded
        | Category::Permanent
        | Category::CleanupBlocked => Policy::Resync,
        Category::Transient | Category::Kube | Category::TenancyNotReady => Policy::Backoff,
    }
}

/// The type of a Kubernetes event (kept free of the kube client's types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: EventKind,
    pub reason: &'static str,
    pub note: String,
    /// Published only when the status changed: a finding repeated by a resync is not news.
    pub news_only: bool,
}

impl Notice {
    fn always(kind: EventKind, reason: &'static str, note: String) -> Self {
        Notice {
            kind,
            reason,
            note,
            news_only: false,
        }
    }

    fn news(kind: EventKind, reason: &'static str, note: String) -> Self {
        Notice {
            news_only: true,
            ..Notice::always(kind, reason, note)
        }
    }
}

/// The spec a decision is about, as the object carries it.
pub struct Subject<'a> {
    pub key: &'a SpecKey,
    pub generation: Option<i64>,
    pub mode: Mode,
    /// The status the object carries (with its rules when [`Outcome::keeps_rules`]).
    pub prev: Option<&'a AseConnectivityStatus>,
}

/// What one reconcile of a spec ended with.
pub enum Outcome<'a> {
    /// Planning the component failed in Azure; `message` is the whole error chain.
    AzureFailed {
        category: ErrorCategory,
        message: &'a str,
    },
    /// Validation or resolution of the spec failed: nothing was planned for it.
    SpecFailed { errors: &'a [SpecError] },
    /// The component was planned, and its writable changes applied.
    Planned(Component<'a>),
}

/// What a report reads of a resource a reconcile wrote: its id, its owners and the counts
/// of its changes. The entries themselves were for the write: at the convergence of a
/// component of 10,000 specs they are ~200,000 created rules, and the reports of its
/// members read only these counts (issue 14's memory).
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenResource {
    pub id: ResourceId,
    pub owners: crate::diff::Owners,
    /// `(create, update, delete)`, [`ResourcePlan::counts`].
    pub counts: (usize, usize, usize),
}

impl From<&ResourcePlan> for WrittenResource {
    fn from(r: &ResourcePlan) -> Self {
        WrittenResource {
            id: r.id.clone(),
            owners: r.owners.clone(),
            counts: r.counts(),
        }
    }
}

/// The component's plan as a reconcile left it.
pub struct Component<'a> {
    pub resolution: &'a Resolution,
    /// The plan *after* this reconcile's writes (the written changes are no longer in it).
    pub plan: &'a [ResourcePlan],
    /// `plan` and the desired state it came from, indexed by spec ([`Parts::of`]).
    pub parts: &'a Parts,
    /// The resources this reconcile wrote (for the whole component), as planned before.
    pub written: &'a [WrittenResource],
    /// The resources of `plan` a contributor not in mode `Apply` withholds.
    pub withheld: &'a Withheld,
}

impl Outcome<'_> {
    /// Whether the status decided from this outcome carries the previous rules over, so the
    /// shell must pass the full previous status (the store drops `status.rules`).
    pub fn keeps_rules(&self) -> bool {
        match self {
            Outcome::AzureFailed { category, .. } => *category == ErrorCategory::Transient,
            Outcome::SpecFailed { .. } => true,
            Outcome::Planned(_) => false,
        }
    }
}

/// Which part of a component's plan and desired state each spec's report reads: the
/// resources whose entries a spec owns, and the rules and routes it owns with their
/// reasons. Built once per planned outcome (the controller caches it with the outcome), so
/// the report of one member costs its own part, not a pass over the whole component (one
/// component of 10,000 specs has ~11,500 resources and ~200,000 rules; issue 14).
#[derive(Debug, Default)]
pub struct Parts {
    /// Positions in the plan of the resources each spec owns entries in.
    by_owner: HashMap<SpecKey, Vec<usize>>,
    /// Positions in the plan by resource id.
    by_id: HashMap<ResourceId, Vec<usize>>,
    /// The rules and routes each spec owns in the desired state, in the order
    /// [`status::owned_rules`] gives them.
    rules: HashMap<SpecKey, Vec<OwnedRule>>,
}

/// An [`OwnedRuleStatus`] with its parent id and reason shared (`Arc`s; the reasons of
/// required rules are shared by every spec of a version), not a string each: ~200,000 of
/// them in a component of 10,000 specs, held as long as its outcome is. The name is copied
/// rather than the whole rule kept alive for it.
#[derive(Debug)]
struct OwnedRule {
    parent: ResourceId,
    name: Box<str>,
    priority: Option<u32>,
    reason: Arc<str>,
}

impl Parts {
    pub fn of(plan: &[ResourcePlan], desired: &Desired) -> Parts {
        let mut parts = Parts::indexing(plan);
        status::all_owned_entries(desired).for_each(|e| parts.add(e));
        parts
    }

    /// [`Parts::of`], taking the desired NSGs and route tables out of `desired` (left
    /// empty, with its subnets): each is dropped as soon as its entries are indexed, so
    /// the index and the whole desired state never exist together (a component of 10,000
    /// specs has ~200,000 owned rules; issue 14's memory).
    pub fn taking(plan: &[ResourcePlan], desired: &mut Desired) -> Parts {
        let mut parts = Parts::indexing(plan);
        for (_, nsg) in std::mem::take(&mut desired.network_security_groups) {
            status::nsg_entries(&nsg).for_each(|e| parts.add(e));
        }
        for (_, rt) in std::mem::take(&mut desired.route_tables) {
            status::route_table_entries(&rt).for_each(|e| parts.add(e));
        }
        desired.subnets = Default::default();
        parts
    }

    /// Adds the parts of another part of the component, whose plan's resources were
    /// appended after the `offset` resources of this one's plan (a component planned in
    /// parts, `controller::parts`). The two have no spec and no resource in common.
    pub fn absorb(&mut self, other: Parts, offset: usize) {
        let Parts {
            by_owner,
            by_id,
            rules,
        } = other;
        for (owner, at) in by_owner {
            (self.by_owner.entry(owner).or_default()).extend(at.into_iter().map(|i| i + offset));
        }
        for (id, at) in by_id {
            (self.by_id.entry(id).or_default()).extend(at.into_iter().map(|i| i + offset));
        }
        for (owner, mut owned) in rules {
            self.rules.entry(owner).or_default().append(&mut owned);
        }
    }

    /// The positions of `plan`'s resources by owner and by id; no rules yet.
    fn indexing(plan: &[ResourcePlan]) -> Parts {
        let mut parts = Parts::default();
        for (i, r) in plan.iter().enumerate() {
            for owner in &r.owners {
                parts.by_owner.entry(owner.clone()).or_default().push(i);
            }
            parts.by_id.entry(r.id.clone()).or_default().push(i);
        }
        parts
    }

    fn add(&mut self, e: status::OwnedEntry<'_>) {
        self.rules
            .entry(e.owner.clone())
            .or_default()
            .push(OwnedRule {
                parent: e.parent.clone(),
                name: e.name.into(),
                priority: e.priority,
                reason: Arc::clone(e.reason),
            });
    }

    /// The resources of `plan` (the plan this was built from) that `key` owns entries in or
    /// that are among `touches`, in plan order: what `plan.iter().filter(|r|
    /// r.owners.contains(key) || touches.contains(&r.id))` gives, from the index.
    pub fn mine<'p>(
        &self,
        key: &SpecKey,
        touches: &BTreeSet<ResourceId>,
        plan: &'p [ResourcePlan],
    ) -> Vec<&'p ResourcePlan> {
        let mut at: Vec<usize> = self.by_owner.get(key).cloned().unwrap_or_default();
        for id in touches {
            at.extend(self.by_id.get(id).into_iter().flatten());
        }
        at.sort_unstable();
        at.dedup();
        at.into_iter().filter_map(|i| plan.get(i)).collect()
    }

    /// The rules and routes `key` owns in the desired state.
    pub fn rules(&self, key: &SpecKey) -> Vec<OwnedRuleStatus> {
        self.rules.get(key).map_or_else(Vec::new, |rules| {
            rules
                .iter()
                .map(|r| OwnedRuleStatus {
                    parent: r.parent.to_string(),
                    name: r.name.to_string(),
                    priority: r.priority,
                    reason: r.reason.to_string(),
                })
                .collect()
        })
    }
}

/// What the shell does after a reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write (server-side apply, only when it differs); `None`: leave it.
    pub status: Option<AseConnectivityStatus>,
    /// In order.
    pub events: Vec<Notice>,
    /// The changes found for the spec (`asenet_planned_changes_total`), when there are any.
    pub found: Option<PlanSummary>,
    /// The spec was in sync and no longer is (`asenet_drift_detected_total`).
    pub drift: bool,
}

/// Decides the status, events and counters of a reconcile of `subject`.
pub fn decide(subject: &Subject<'_>, outcome: &Outcome<'_>, now: &Time) -> Decision {
    let status = |finding: &Finding<'_>| {
        next_status(subject.prev, subject.generation, subject.mode, finding, now)
    };
    match outcome {
        // A permanent Azure error waits for a change; the status keeps the best knowledge.
        Outcome::AzureFailed {
            category: ErrorCategory::Permanent,
            ..
        } => Decision::quiet(None),
        // A stable message: a repeated failure does not rewrite the status (which would
        // re-trigger the spec and skip the backoff); the details are logged.
        Outcome::AzureFailed {
            category: ErrorCategory::Transient,
            message,
        } => Decision::quiet(Some(status(&Finding::Unavailable {
            message: status::transient_summary(message),
        }))),
        Outcome::SpecFailed { errors } => {
            let (kind, message) = spec_failure(errors);
            Decision {
                events: vec![Notice::news(EventKind::Warning, kind.as_str(), message)],
                ..Decision::quiet(Some(status(&Finding::SpecFailed { errors })))
            }
        }
        Outcome::Planned(c) => planned(subject, c, status),
    }
}

impl Decision {
    fn quiet(status: Option<AseConnectivityStatus>) -> Self {
        Decision {
            status,
            events: vec![],
            found: None,
            drift: false,
        }
    }
}

/// The category and message of a spec that failed validation or resolution: its first
/// error's kind, and every error (the `Resolved` condition's message).
pub fn spec_failure(errors: &[SpecError]) -> (SpecErrorKind, String) {
    let kind = errors
        .first()
        .map(|e| e.kind)
        .unwrap_or(SpecErrorKind::InvalidField);
    (kind, status::spec_error_message(errors))
}

fn planned(
    subject: &Subject<'_>,
    c: &Component<'_>,
    status: impl Fn(&Finding<'_>) -> AseConnectivityStatus,
) -> Decision {
    let key = subject.key;
    // This spec's part: the resources it owns entries in or touches.
    let mine: Vec<&ResourcePlan> = c.parts.mine(key, &c.resolution.touches, c.plan);
    // Still changed after this reconcile's writes: withheld, or planned in mode Plan/Observe.
    let changed: Vec<&ResourcePlan> = mine.iter().copied().filter(|r| has_changes(r)).collect();
    let mine_written: Vec<(usize, usize, usize)> = (c.written.iter())
        .filter(|w| w.owners.contains(key) || c.resolution.touches.contains(&w.id))
        .map(|w| w.counts)
        .collect();
    let found =
        summarise_counts((mine_written.iter().copied()).chain(changed.iter().map(|r| r.counts())));
    let blocked: Vec<(&ResourcePlan, &BTreeSet<SpecKey>)> = changed
        .iter()
        .filter_map(|r| c.withheld.get(&r.id).map(|by| (*r, by)))
        .filter(|(_, by)| !by.is_empty())
        .collect();
    let pending = summarise(changed.iter().copied());
    let conflicts: Vec<String> = mine
        .iter()
        .flat_map(|r| {
            r.conflicts
                .iter()
                .map(move |c| format!("{}: {}", r.id.name(), c.message))
        })
        .collect();
    let finding = Finding::Planned(PlannedFinding {
        resolution: c.resolution,
        rules: c.parts.rules(key),
        pending,
        applied: match subject.mode {
            Mode::Apply => summarise_counts(mine_written.iter().copied()),
            Mode::Plan | Mode::Observe => PlanSummary::default(),
        },
        blocked: blocked
            .iter()
            .map(|(r, by)| (r.id.clone(), (*by).clone()))
            .collect(),
        conflicts: conflicts.clone(),
    });
    let mut events = Vec::new();
    // Every write of this reconcile, for the whole component.
    if !c.written.is_empty() {
        let note = format!(
            "applied {} change(s) to {}",
            summarise_counts(c.written.iter().map(|w| w.counts)).total,
            names(c.written.iter().map(|w| &w.id))
        );
        events.push(Notice::always(EventKind::Normal, "Applied", note));
    }
    if pending.total > 0 {
        let withheld: Vec<&ResourcePlan> = blocked.iter().map(|(r, _)| *r).collect();
        events.extend(pending_notice(subject.mode, &pending, &changed, &withheld));
    }
    if !conflicts.is_empty() {
        let note = conflicts.join("; ");
        events.push(Notice::news(EventKind::Warning, "ForeignConflict", note));
    }
    Decision {
        status: Some(status(&finding)),
        events,
        found: (found.total > 0).then_some(found),
        drift: found.total > 0 && was_in_sync(subject.prev),
    }
}

/// The event for changes still pending after a reconcile, by mode.
fn pending_notice(
    mode: Mode,
    pending: &PlanSummary,
    changed: &[&ResourcePlan],
    withheld: &[&ResourcePlan],
) -> Option<Notice> {
    match mode {
        Mode::Plan => Some(Notice::news(
            EventKind::Normal,
            "ChangesPlanned",
            format!(
                "{} change(s) planned for {} ({} create, {} update, {} delete); mode Plan never writes",
                pending.total,
                resource_names(changed.iter().copied()),
                pending.create,
                pending.update,
                pending.delete
            ),
        )),
        Mode::Observe => Some(Notice::news(
            EventKind::Warning,
            "DriftDetected",
            format!(
                "{} difference(s) between Azure and the spec in {}",
                pending.total,
                resource_names(changed.iter().copied())
            ),
        )),
        // A change left that nobody withholds (a cached outcome is never written) is
        // pending until the next fresh plan, without an event.
        Mode::Apply if withheld.is_empty() => None,
        Mode::Apply => Some(Notice::news(
            EventKind::Warning,
            "SharedResourceNotApplied",
            format!(
                "not writing {}: shared with specs not in mode Apply",
                resource_names(withheld.iter().copied())
            ),
        )),
    }
}

fn was_in_sync(prev: Option<&AseConnectivityStatus>) -> bool {
    prev.and_then(|s| s.conditions.iter().find(|c| c.type_ == status::IN_SYNC))
        .is_some_and(|c| c.status == "True")
}

/// `a, b, c`: the names of some resources.
pub fn resource_names<'a>(resources: impl IntoIterator<Item = &'a ResourcePlan>) -> String {
    names(resources.into_iter().map(|r| &r.id))
}

/// `a, b, c`: the names of some resource ids.
fn names<'a>(ids: impl IntoIterator<Item = &'a ResourceId>) -> String {
    ids.into_iter()
        .map(|id| id.name().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The part of a fresh plan a reconcile writes: every changed resource nobody withholds,
/// whichever member of the component runs the reconcile. Moved out of `plan` (in order),
/// not copied: the plan of a 10,000-spec component is large, and what remains of it is
/// planned again after the writes.
///
/// Both parts are sized exactly: at the convergence of such a component nearly every
/// resource is written, and the written part is held through the writes and the re-plan
/// after them (grown by doubling, it held up to twice its size; issue 14's memory).
pub fn take_writable(plan: &mut Vec<ResourcePlan>, withheld: &Withheld) -> Vec<ResourcePlan> {
    let writable = |r: &ResourcePlan| has_changes(r) && !withheld.contains_key(&r.id);
    let n = plan.iter().filter(|r| writable(r)).count();
    if n == 0 {
        return Vec::new();
    }
    let mut written = Vec::with_capacity(n);
    let mut rest = Vec::with_capacity(plan.len() - n);
    for r in std::mem::take(plan) {
        if writable(&r) {
            written.push(r);
        } else {
            rest.push(r);
        }
    }
    *plan = rest;
    written
}

/// Whether the deletion of a spec touches Azure at all. `Some`: it does not, publish the
/// notice and let the spec go.
pub fn cleanup_start(policy: DeletionPolicy, mode: Mode) -> Option<Notice> {
    if policy == DeletionPolicy::Orphan {
        return Some(Notice::always(
            EventKind::Normal,
            "Orphaned",
            "deletionPolicy Orphan: the rules and routes this spec owns stay in Azure".into(),
        ));
    }
    (mode != Mode::Apply).then(|| {
        Notice::always(
            EventKind::Normal,
            "CleanupSkipped",
            format!(
                "mode {mode:?} never writes to Azure: the rules and routes this spec owns are left as they are"
            ),
        )
    })
}

/// A deleted spec's component, planned without it.
pub struct Departure<'a> {
    pub key: &'a SpecKey,
    /// The NSG, subnet and route table the spec names.
    pub own_ids: &'a BTreeSet<ResourceId>,
    /// The resources the spec's namespace may not write (tenancy).
    pub not_permitted: &'a BTreeSet<ResourceId>,
    pub plan: &'a [ResourcePlan],
    /// Withheld by the *other* members not in mode `Apply`.
    pub withheld: &'a Withheld,
}

/// What the cleanup of a deleted spec does.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal<'a> {
    /// Published first: part of what the spec owns stays, tenancy refuses the write.
    pub refused: Option<Notice>,
    pub step: RemovalStep<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RemovalStep<'a> {
    /// A resource is shared with a spec not in mode `Apply`: wait (the finalizer stays).
    Blocked { notice: Notice, message: String },
    /// Nothing of the spec is left in Azure.
    Nothing,
    /// Write `resources` (the plan narrowed to the spec's part); then publish `done`.
    Remove {
        resources: Vec<&'a ResourcePlan>,
        removed: PlanSummary,
        done: Notice,
    },
}

/// Decides the cleanup of a deleted spec from its component's plan without it.
pub fn removal<'a>(d: &Departure<'a>) -> Removal<'a> {
    let key = d.key;
    let owned_by_me = |r: &ResourcePlan| {
        r.owners.contains(key)
            || d.own_ids.contains(&r.id)
            || r.rules.delete.iter().any(|e| e.owner.as_ref() == Some(key))
            || r.routes
                .delete
                .iter()
                .any(|e| e.owner.as_ref() == Some(key))
    };
    // Its own NSG and route table go along even without changes: apply deletes them when
    // asenet created them for this spec and they are now empty.
    let mine: Vec<&ResourcePlan> = d
        .plan
        .iter()
        .filter(|r| (has_changes(r) && owned_by_me(r)) || d.own_ids.contains(&r.id))
        .filter(|r| !d.not_permitted.contains(&r.id))
        .collect();
    let refused = (!d.not_permitted.is_empty()).then(|| {
        let ids: Vec<String> = d.not_permitted.iter().map(|id| id.to_string()).collect();
        Notice::always(
            EventKind::Warning,
            SpecErrorKind::NotPermitted.as_str(),
            format!(
                "not removing what this spec owns in {}: namespace `{}` may not write it; it stays in Azure as it is",
                ids.join(", "),
                key.namespace
            ),
        )
    });
    let blockers: BTreeSet<&SpecKey> = mine
        .iter()
        .filter_map(|r| d.withheld.get(&r.id))
        .flatten()
        .collect();
    let step = if !blockers.is_empty() {
        let by: Vec<String> = blockers.iter().map(|k| k.to_string()).collect();
        let message = format!(
            "{} shared with {} (not in mode Apply); set them to mode Apply, or set this spec's deletionPolicy to Orphan",
            resource_names(mine.iter().copied()),
            by.join(", ")
        );
        RemovalStep::Blocked {
            notice: Notice::always(EventKind::Warning, "CleanupBlocked", message.clone()),
            message,
        }
    } else if !mine.iter().any(|r| has_changes(r))
        && mine.iter().all(|r| r.kind == ResourceKind::Subnet)
    {
        RemovalStep::Nothing
    } else {
        let removed = summarise(mine.iter().copied());
        let done = Notice::always(
            EventKind::Normal,
            "CleanedUp",
            format!(
                "removed what this spec owned from {} ({} change(s))",
                resource_names(mine.iter().copied()),
                removed.total
            ),
        );
        RemovalStep::Remove {
            resources: mine,
            removed,
            done,
        }
    };
    Removal { refused, step }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{Conflict, ConflictKind, EntryChanges, ParentAction, Planned};
    use crate::model::{NextHopType, Route, RouteDestination};

    const RT: &str = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/routeTables/rt";
    const SUBNET: &str =
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/a";

    fn me() -> SpecKey {
        SpecKey::new("network", "ase-one")
    }

    fn other() -> SpecKey {
        SpecKey::new("network", "ase-two")
    }

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    fn route(name: &str, owner: &SpecKey) -> Planned<Route> {
        Planned {
            entry: Route {
                name: name.into(),
                address_prefix: RouteDestination::Prefix("0.0.0.0/0".parse().unwrap()),
                next_hop_type: NextHopType::Internet,
                next_hop_ip_address: None,
            }
            .into(),
            owner: Some(owner.clone()),
            reason: "test".into(),
        }
    }

    /// The route table `rt`, contributed to by `owners`, creating `create` routes of the
    /// first owner and deleting `delete`.
    fn rt(owners: &[SpecKey], create: usize, delete: usize) -> ResourcePlan {
        let routes = EntryChanges {
            create: (0..create)
                .map(|i| route(&format!("c{i}"), &owners[0]))
                .collect(),
            delete: (0..delete)
                .map(|i| route(&format!("d{i}"), &owners[0]))
                .collect(),
            ..EntryChanges::default()
        };
        ResourcePlan {
            id: id(RT),
            kind: ResourceKind::RouteTable,
            action: if routes.has_changes() {
                ParentAction::Update
            } else {
                ParentAction::NoChange
            },
            location: None,
            etag: None,
            owners: owners.iter().cloned().collect(),
            rules: EntryChanges::default(),
            routes,
            association: None,
            conflicts: vec![],
            service_tags: None,
        }
    }

    fn subnet() -> ResourcePlan {
        ResourcePlan {
            id: id(SUBNET),
            kind: ResourceKind::Subnet,
            ..rt(&[me()], 0, 0)
        }
    }

    fn conflicted(mut r: ResourcePlan) -> ResourcePlan {
        r.conflicts.push(Conflict {
            kind: ConflictKind::SameDestination,
            foreign: "theirs".into(),
            owned: Some("c0".into()),
            message: "foreign route `theirs` has the destination of `c0`".into(),
        });
        r
    }

    fn resolution() -> Resolution {
        Resolution {
            internet_addresses: vec!["52.1.2.3".parse().unwrap()],
            virtual_network_range: "10.0.1.0/24".parse().unwrap(),
            touches: [id(RT)].into(),
        }
    }

    fn in_sync_status(value: &str) -> AseConnectivityStatus {
        let mut s = AseConnectivityStatus::default();
        status::set_condition(
            &mut s.conditions,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: status::IN_SYNC.into(),
                status: value.into(),
                reason: "Before".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: t(),
            },
            Some(1),
            &t(),
        );
        s
    }

    fn t() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap())
    }

    /// What a reconcile found, as the table writes it.
    enum Found {
        Azure(ErrorCategory),
        Spec(SpecErrorKind),
        Planned {
            plan: Vec<ResourcePlan>,
            written: Vec<WrittenResource>,
            withheld_by: Option<SpecKey>,
        },
    }

    struct Row {
        situation: &'static str,
        mode: Mode,
        /// `InSync` of the previous status, if any.
        was_in_sync: Option<&'static str>,
        found: Found,
        /// `(type, status, reason)` of every condition, in order; `None`: no status write.
        conditions: Option<&'static [(&'static str, &'static str, &'static str)]>,
        /// `(reason, kind, news_only)` of every event, in order.
        events: &'static [(&'static str, EventKind, bool)],
        changes_found: u32,
        drift: bool,
    }

    const PLANNED_IN_SYNC: &[(&str, &str, &str)] = &[
        ("Ready", "True", "Converged"),
        ("Resolved", "True", "Resolved"),
        ("InSync", "True", "Applied"),
        ("Degraded", "False", "Healthy"),
    ];

    fn planned(
        plan: Vec<ResourcePlan>,
        written: Vec<ResourcePlan>,
        withheld_by: Option<SpecKey>,
    ) -> Found {
        Found::Planned {
            plan,
            written: written.iter().map(WrittenResource::from).collect(),
            withheld_by,
        }
    }

    fn table() -> Vec<Row> {
        [converging_rows(), pending_rows(), failed_rows()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Apply converges: writes, no change, repaired drift.
    fn converging_rows() -> Vec<Row> {
        use EventKind::Normal;
        vec![
            Row {
                situation: "a new spec whose changes were applied",
                mode: Mode::Apply,
                was_in_sync: None,
                found: planned(vec![rt(&[me()], 0, 0)], vec![rt(&[me()], 2, 0)], None),
                conditions: Some(PLANNED_IN_SYNC),
                events: &[("Applied", Normal, false)],
                changes_found: 2,
                drift: false,
            },
            Row {
                situation: "a converged spec: no change, no event",
                mode: Mode::Apply,
                was_in_sync: Some("True"),
                found: planned(vec![rt(&[me()], 0, 0)], vec![], None),
                conditions: Some(&[
                    ("Ready", "True", "Converged"),
                    ("Resolved", "True", "Resolved"),
                    ("InSync", "True", "NoChanges"),
                    ("Degraded", "False", "Healthy"),
                ]),
                events: &[],
                changes_found: 0,
                drift: false,
            },
            Row {
                situation: "drift detected and repaired in mode Apply",
                mode: Mode::Apply,
                was_in_sync: Some("True"),
                found: planned(vec![rt(&[me()], 0, 0)], vec![rt(&[me()], 0, 1)], None),
                conditions: Some(PLANNED_IN_SYNC),
                events: &[("Applied", Normal, false)],
                changes_found: 1,
                drift: true,
            },
        ]
    }

    /// Changes left: in mode Observe or Plan, withheld, a conflict, not this spec's part.
    fn pending_rows() -> Vec<Row> {
        use EventKind::{Normal, Warning};
        vec![
            Row {
                situation: "drift detected in mode Observe is reported, not written",
                mode: Mode::Observe,
                was_in_sync: Some("True"),
                found: planned(vec![rt(&[me()], 1, 0)], vec![], None),
                conditions: Some(&[
                    ("Ready", "True", "Observed"),
                    ("Resolved", "True", "Resolved"),
                    ("InSync", "False", "DriftDetected"),
                    ("Degraded", "False", "Healthy"),
                ]),
                events: &[("DriftDetected", Warning, true)],
                changes_found: 1,
                drift: true,
            },
            Row {
                situation: "changes planned in mode Plan",
                mode: Mode::Plan,
                was_in_sync: None,
                found: planned(vec![rt(&[me()], 3, 0)], vec![], None),
                conditions: Some(&[
                    ("Ready", "True", "Planned"),
                    ("Resolved", "True", "Resolved"),
                    ("InSync", "False", "ChangesPlanned"),
                    ("Degraded", "False", "Healthy"),
                ]),
                events: &[("ChangesPlanned", Normal, true)],
                changes_found: 3,
                drift: false,
            },
            Row {
                situation: "a shared resource withheld by a spec in mode Plan",
                mode: Mode::Apply,
                was_in_sync: Some("False"),
                found: planned(vec![rt(&[me(), other()], 1, 0)], vec![], Some(other())),
                conditions: Some(&[
                    ("Ready", "False", "SharedResourceNotApplied"),
                    ("Resolved", "True", "Resolved"),
                    ("InSync", "False", "SharedResourceNotApplied"),
                    ("Degraded", "False", "Healthy"),
                ]),
                events: &[("SharedResourceNotApplied", Warning, true)],
                changes_found: 1,
                drift: false,
            },
            Row {
                situation: "a foreign conflict in a resource the spec touches",
                mode: Mode::Apply,
                was_in_sync: None,
                found: planned(vec![conflicted(rt(&[me()], 0, 0))], vec![], None),
                conditions: Some(&[
                    ("Ready", "True", "Converged"),
                    ("Resolved", "True", "Resolved"),
                    ("InSync", "True", "NoChanges"),
                    ("Degraded", "True", "ForeignConflict"),
                ]),
                events: &[("ForeignConflict", Warning, true)],
                changes_found: 0,
                drift: false,
            },
            Row {
                situation: "another spec's resource is not this spec's part",
                mode: Mode::Observe,
                was_in_sync: Some("True"),
                found: planned(
                    vec![ResourcePlan {
                        id: id(SUBNET),
                        ..rt(&[other()], 1, 0)
                    }],
                    vec![],
                    None,
                ),
                conditions: Some(&[
                    ("Ready", "True", "Observed"),
                    ("Resolved", "True", "Resolved"),
                    ("InSync", "True", "NoChanges"),
                    ("Degraded", "False", "Healthy"),
                ]),
                events: &[],
                changes_found: 0,
                drift: false,
            },
        ]
    }

    /// Nothing planned: an invalid or refused spec, an ARM error.
    fn failed_rows() -> Vec<Row> {
        use EventKind::Warning;
        vec![
            Row {
                situation: "an invalid spec",
                mode: Mode::Apply,
                was_in_sync: Some("True"),
                found: Found::Spec(SpecErrorKind::InvalidField),
                conditions: Some(&[
                    ("Ready", "False", "InvalidField"),
                    ("Resolved", "False", "InvalidField"),
                    ("InSync", "Unknown", "NotPlanned"),
                    ("Degraded", "True", "InvalidField"),
                ]),
                events: &[("InvalidField", Warning, true)],
                changes_found: 0,
                drift: false,
            },
            Row {
                situation: "a spec tenancy does not permit",
                mode: Mode::Apply,
                was_in_sync: None,
                found: Found::Spec(SpecErrorKind::NotPermitted),
                conditions: Some(&[
                    ("Ready", "False", "NotPermitted"),
                    ("Resolved", "False", "NotPermitted"),
                    ("InSync", "Unknown", "NotPlanned"),
                    ("Degraded", "True", "NotPermitted"),
                ]),
                events: &[("NotPermitted", Warning, true)],
                changes_found: 0,
                drift: false,
            },
            Row {
                situation: "a transient ARM error",
                mode: Mode::Apply,
                was_in_sync: Some("True"),
                found: Found::Azure(ErrorCategory::Transient),
                conditions: Some(&[
                    ("Ready", "False", "AzureUnavailable"),
                    ("InSync", "True", "Before"),
                ]),
                events: &[],
                changes_found: 0,
                drift: false,
            },
            Row {
                situation: "a permanent ARM error",
                mode: Mode::Apply,
                was_in_sync: Some("True"),
                found: Found::Azure(ErrorCategory::Permanent),
                conditions: None,
                events: &[],
                changes_found: 0,
                drift: false,
            },
        ]
    }

    #[test]
    fn every_situation_decides_its_conditions_events_and_counters() {
        let key = me();
        let resolution = resolution();
        let desired = Desired::default();
        for row in table() {
            let prev = row.was_in_sync.map(in_sync_status);
            let subject = Subject {
                key: &key,
                generation: Some(2),
                mode: row.mode,
                prev: prev.as_ref(),
            };
            let errors = match &row.found {
                Found::Spec(kind) => vec![SpecError::new(&key, *kind, "spec.f", "v", "bad")],
                _ => vec![],
            };
            let mut withheld = Withheld::new();
            let decision = match &row.found {
                Found::Azure(category) => {
                    let message = "reading rt: GET rt: HTTP 429 TooManyRequests: later";
                    let outcome = Outcome::AzureFailed {
                        category: *category,
                        message,
                    };
                    assert_eq!(outcome.keeps_rules(), *category == ErrorCategory::Transient);
                    decide(&subject, &outcome, &t())
                }
                Found::Spec(_) => {
                    let outcome = Outcome::SpecFailed { errors: &errors };
                    assert!(outcome.keeps_rules());
                    decide(&subject, &outcome, &t())
                }
                Found::Planned {
                    plan,
                    written,
                    withheld_by,
                } => {
                    if let Some(by) = withheld_by {
                        withheld.insert(id(RT), [by.clone()].into());
                    }
                    let parts = Parts::of(plan, &desired);
                    let outcome = Outcome::Planned(Component {
                        resolution: &resolution,
                        parts: &parts,
                        plan,
                        written,
                        withheld: &withheld,
                    });
                    assert!(!outcome.keeps_rules());
                    decide(&subject, &outcome, &t())
                }
            };
            let conditions = decision.status.as_ref().map(|s| {
                s.conditions
                    .iter()
                    .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                conditions.as_deref(),
                row.conditions,
                "conditions: {}",
                row.situation
            );
            let events: Vec<_> = decision
                .events
                .iter()
                .map(|e| (e.reason, e.kind, e.news_only))
                .collect();
            assert_eq!(events, row.events, "events: {}", row.situation);
            assert_eq!(
                decision.found.map_or(0, |f| f.total),
                row.changes_found,
                "changes found: {}",
                row.situation
            );
            assert_eq!(decision.drift, row.drift, "drift: {}", row.situation);
        }
    }

    #[test]
    fn an_invalid_spec_reports_every_error_in_its_event_and_its_error() {
        let key = me();
        let errors = [
            SpecError::new(&key, SpecErrorKind::BandFull, "spec.a", "1", "full"),
            SpecError::new(&key, SpecErrorKind::InvalidField, "spec.b", "2", "bad"),
        ];
        let (kind, message) = spec_failure(&errors);
        assert_eq!(kind, SpecErrorKind::BandFull);
        assert_eq!(message, "spec.a: full; spec.b: bad");
        let subject = Subject {
            key: &key,
            generation: Some(1),
            mode: Mode::Apply,
            prev: None,
        };
        let decision = decide(&subject, &Outcome::SpecFailed { errors: &errors }, &t());
        assert_eq!(decision.events[0].note, message);
        let status = decision.status.unwrap();
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.plan, None);
    }

    #[test]
    fn the_applied_event_names_every_resource_the_component_wrote() {
        let key = me();
        let resolution = resolution();
        let desired = Desired::default();
        let mut theirs = subnet();
        theirs.owners = [other()].into();
        theirs.routes = rt(&[other()], 1, 0).routes;
        let written: Vec<WrittenResource> =
            [rt(&[me()], 2, 0), theirs].iter().map(Into::into).collect();
        let parts = Parts::of(&[], &desired);
        let outcome = Outcome::Planned(Component {
            resolution: &resolution,
            parts: &parts,
            plan: &[],
            written: &written,
            withheld: &Withheld::new(),
        });
        let subject = Subject {
            key: &key,
            generation: Some(1),
            mode: Mode::Apply,
            prev: None,
        };
        let decision = decide(&subject, &outcome, &t());
        assert_eq!(decision.events[0].note, "applied 3 change(s) to rt, a");
        // This spec's part counts only its own resource.
        assert_eq!(decision.found.map(|f| f.total), Some(2));
        assert_eq!(decision.status.unwrap().plan.map(|p| p.total), Some(0));
    }

    #[test]
    fn error_policy_waits_resyncs_or_backs_off_by_category() {
        for (category, expected) in [
            (Category::InvalidField, Policy::AwaitChange),
            (Category::NotPermitted, Policy::AwaitChange),
            (Category::UnresolvedReference, Policy::Resync),
            (Category::BandFull, Policy::Resync),
            (Category::LimitExceeded, Policy::Resync),
            (Category::Permanent, Policy::Resync),
            (Category::CleanupBlocked, Policy::Resync),
            (Category::Transient, Policy::Backoff),
            (Category::Kube, Policy::Backoff),
            (Category::TenancyNotReady, Policy::Backoff),
        ] {
            assert_eq!(policy(category), expected, "{category}");
        }
    }

    #[test]
    fn only_changed_resources_nobody_withholds_are_written() {
        let mut shared = rt(&[me(), other()], 1, 0);
        shared.id = id(SUBNET);
        let plan = [rt(&[me()], 1, 0), subnet(), shared];
        let withheld: Withheld = [(id(SUBNET), [other()].into())].into();
        let mut rest = plan.to_vec();
        let written = take_writable(&mut rest, &withheld);
        assert_eq!(written, vec![plan[0].clone()]);
        assert_eq!(rest, plan[1..].to_vec());
    }

    #[test]
    fn a_deleted_spec_in_mode_apply_with_policy_delete_cleans_up_otherwise_not() {
        let rows = [
            (DeletionPolicy::Orphan, Mode::Apply, Some("Orphaned")),
            (DeletionPolicy::Orphan, Mode::Plan, Some("Orphaned")),
            (DeletionPolicy::Delete, Mode::Plan, Some("CleanupSkipped")),
            (
                DeletionPolicy::Delete,
                Mode::Observe,
                Some("CleanupSkipped"),
            ),
            (DeletionPolicy::Delete, Mode::Apply, None),
        ];
        for (policy, mode, reason) in rows {
            let notice = cleanup_start(policy, mode);
            assert_eq!(
                notice.as_ref().map(|n| n.reason),
                reason,
                "{policy:?} {mode:?}"
            );
            assert!(notice.is_none_or(|n| n.kind == EventKind::Normal && !n.news_only));
        }
    }

    fn departure<'a>(
        key: &'a SpecKey,
        own_ids: &'a BTreeSet<ResourceId>,
        not_permitted: &'a BTreeSet<ResourceId>,
        plan: &'a [ResourcePlan],
        withheld: &'a Withheld,
    ) -> Departure<'a> {
        Departure {
            key,
            own_ids,
            not_permitted,
            plan,
            withheld,
        }
    }

    #[test]
    fn the_cleanup_removes_what_the_spec_owns_unless_it_is_withheld_or_not_permitted() {
        let key = me();
        let own: BTreeSet<ResourceId> = [id(RT), id(SUBNET)].into();
        let none = BTreeSet::new();
        let free = Withheld::new();
        // The spec's route table loses its two routes; its subnet stays as it is.
        let plan = [rt(&[me()], 0, 2), subnet()];
        let removal = removal(&departure(&key, &own, &none, &plan, &free));
        assert_eq!(removal.refused, None);
        let RemovalStep::Remove {
            resources,
            removed,
            done,
        } = removal.step
        else {
            panic!("expected a removal: {removal:?}");
        };
        assert_eq!(resources, vec![&plan[0], &plan[1]]);
        assert_eq!((removed.delete, removed.total), (2, 2));
        assert_eq!(done.reason, "CleanedUp");
        assert_eq!(
            done.note,
            "removed what this spec owned from rt, a (2 change(s))"
        );

        // Shared with a spec not in mode Apply: blocked.
        let withheld: Withheld = [(id(RT), [other()].into())].into();
        let blocked = super::removal(&departure(&key, &own, &none, &plan, &withheld));
        let RemovalStep::Blocked { notice, message } = blocked.step else {
            panic!("expected blocked: {blocked:?}");
        };
        assert_eq!(notice.reason, "CleanupBlocked");
        assert!(message.contains("shared with network/ase-two"), "{message}");

        // Tenancy refuses the route table: it stays, only the unchanged subnet is left.
        let refused: BTreeSet<ResourceId> = [id(RT)].into();
        let kept = super::removal(&departure(&key, &own, &refused, &plan, &withheld));
        assert_eq!(kept.refused.map(|n| n.reason), Some("NotPermitted"));
        assert_eq!(kept.step, RemovalStep::Nothing);
    }
}
