//! What a reconcile reports, decided from what it found: the status, the events, the change
//! counters, which part of a plan the controller may write, and what `error_policy` does
//! with an error. Pure: no kube client, no async, no clock (the caller passes `now`), no
//! ARM; the shell (`reconcile.rs`) gathers the inputs, calls in here and executes the
//! decision (writes the status, publishes the events, counts the metrics).
//!
//! The status itself is computed by [`status::next_status`]; this module turns the raw
//! outcome of a reconcile (the component's plan after its writes, what it wrote, what is
//! withheld) into the finding `next_status` takes, and adds the events and counters.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::status::{self, has_changes, next_status, summarise, Finding, PlannedFinding};
use crate::api::{AseConnectivityStatus, DeletionPolicy, Mode, PlanSummary};
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

/// The component's plan as a reconcile left it.
pub struct Component<'a> {
    pub resolution: &'a Resolution,
    pub desired: &'a Desired,
    /// The plan *after* this reconcile's writes (the written changes are no longer in it).
    pub plan: &'a [ResourcePlan],
    /// The resources this reconcile wrote (for the whole component), as planned before.
    pub written: &'a [ResourcePlan],
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
        next_status(
            subject.prev,
            subject.key,
            subject.generation,
            subject.mode,
            finding,
            now,
        )
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
    let is_mine =
        |r: &&ResourcePlan| r.owners.contains(key) || c.resolution.touches.contains(&r.id);
    let mine: Vec<&ResourcePlan> = c.plan.iter().filter(is_mine).collect();
    // Still changed after this reconcile's writes: withheld, or planned in mode Plan/Observe.
    let changed: Vec<&ResourcePlan> = mine.iter().copied().filter(|r| has_changes(r)).collect();
    let mine_written: Vec<&ResourcePlan> = c.written.iter().filter(is_mine).collect();
    let found = summarise(mine_written.iter().copied().chain(changed.iter().copied()));
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
        desired: c.desired,
        pending,
        applied: match subject.mode {
            Mode::Apply => summarise(mine_written.iter().copied()),
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
            summarise(c.written.iter()).total,
            resource_names(c.written.iter())
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
    resources
        .into_iter()
        .map(|r| r.id.name().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The part of a fresh plan a reconcile writes: every changed resource nobody withholds,
/// whichever member of the component runs the reconcile.
pub fn writable(plan: &[ResourcePlan], withheld: &Withheld) -> Vec<ResourcePlan> {
    plan.iter()
        .filter(|r| has_changes(r) && !withheld.contains_key(&r.id))
        .cloned()
        .collect()
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
