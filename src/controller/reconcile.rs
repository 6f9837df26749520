//! `reconcile` and `error_policy`: one AseConnectivity spec at a time, level-triggered.
//!
//! Named steps (docs/style.md): check leadership → finalizer → take the locks of the Azure
//! parents of the spec's connected component (single flight per parent) → plan the
//! component (the specs linked to this one by a shared NSG, route table or subnet or an
//! `environmentRef`, transitively: every contributor of a merged NSG is in it, so merged
//! NSGs are computed whole, and the reads are proportional to the component, not the fleet)
//! → apply every writable change of the component (one plan per component: the outcome is
//! cached in `Context::outcomes`, and the other members reuse it without reading or writing
//! Azure until a member's spec changes or the resync interval passes) → status of this spec
//! from its part (server-side apply, only when it changed) → events. A reconcile never
//! branches on why it ran.
//!
//! Modes and shared resources: a spec in mode `Apply` writes the resources it touches, but a
//! resource several specs contribute to is written only when *every* contributing spec is
//! in mode `Apply`; otherwise the write is withheld and reported (`InSync=False`, reason
//! `SharedResourceNotApplied`, a Warning event). The PUT of an NSG carries its complete rule
//! list, so writing it would also apply the pending changes of a spec in mode `Plan` or
//! `Observe`, which those modes promise never to do.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as Finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::context::{fingerprint_in, Context, FIELD_MANAGER};
use super::engine::{EngineError, Planned};
use super::index::{self, key_of};
use super::metrics::ModeLabel;
use super::status::{self, has_changes, next_status, summarise, Finding, PlannedFinding};
use super::store;
use super::tenancy;
use crate::api::{AseConnectivity, AseConnectivityStatus, DeletionPolicy, Mode, PlanSummary};
use crate::diff::{self, Plan, ResourceKind, ResourcePlan, Scope};
use crate::error::{Category, ErrorCategory, SpecErrorKind};
use crate::model::{ResourceId, SpecKey};
use crate::pipeline;
use crate::resolver::SpecOutcome;

/// The finalizer that keeps a spec until what it owns in Azure is removed.
pub const FINALIZER: &str = "asenet.io/cleanup";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the spec has no namespace")]
    NoNamespace,
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<FinalizerError<Error>>),
    #[error("Azure: {0}")]
    Engine(#[source] EngineError),
    #[error("spec {spec} cannot be planned: {message}")]
    Spec {
        spec: SpecKey,
        kind: SpecErrorKind,
        message: String,
    },
    #[error("cleanup of {spec} waits: {message}")]
    CleanupBlocked { spec: SpecKey, message: String },
    #[error("tenancy is enforced but the AseTenancyPolicy, AseBackendGrant and Namespace objects are not read yet (are the tenancy CRDs installed?)")]
    TenancyNotReady,
}

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

impl Error {
    /// The category of the error, in the one vocabulary (`crate::error::Category`): the
    /// metric label of `asenet_reconcile_errors_total{category}`, spelled like the
    /// condition and event reasons and the plan JSON.
    pub fn category(&self) -> Category {
        match self {
            Error::NoNamespace => Category::InvalidField,
            Error::Kube(_) => Category::Kube,
            Error::Finalizer(e) => match &**e {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.category()
                }
                _ => Category::Kube,
            },
            Error::Engine(e) => e.category.category(),
            Error::Spec { kind, .. } => kind.category(),
            Error::CleanupBlocked { .. } => Category::CleanupBlocked,
            Error::TenancyNotReady => Category::TenancyNotReady,
        }
    }

    pub fn policy(&self) -> Policy {
        match self {
            Error::NoNamespace => Policy::AwaitChange,
            Error::Kube(_) => Policy::Backoff,
            Error::Finalizer(e) => match &**e {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.policy()
                }
                _ => Policy::Backoff,
            },
            Error::Engine(e) => match e.category {
                ErrorCategory::Transient => Policy::Backoff,
                ErrorCategory::Permanent => Policy::Resync,
            },
            // An invalid field is fixed only by editing the spec. A missing reference, a full
            // band or a limit can be fixed by another spec or by Azure: the resync looks again
            // (and a change of a referenced spec wakes this one through the index).
            // A refusal (tenancy) is lifted by a policy or grant change, which wakes the spec
            // (`controller::tenancy`), or by a spec change.
            Error::Spec { kind, .. } => match kind {
                SpecErrorKind::InvalidField | SpecErrorKind::NotPermitted => Policy::AwaitChange,
                _ => Policy::Resync,
            },
            Error::CleanupBlocked { .. } => Policy::Resync,
            Error::TenancyNotReady => Policy::Backoff,
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn mode_label(obj: &AseConnectivity) -> ModeLabel {
    if obj.meta().deletion_timestamp.is_some() {
        return ModeLabel::cleanup;
    }
    match obj.spec.mode {
        Mode::Apply => ModeLabel::apply,
        Mode::Plan => ModeLabel::plan,
        Mode::Observe => ModeLabel::observe,
    }
}

/// Reconciles one spec. Called by the kube-runtime `Controller` (and directly by tests).
#[tracing::instrument(skip_all, fields(spec = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())))]
pub async fn reconcile(obj: Arc<AseConnectivity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    if !ctx.leadership.is_leader() {
        // A follower never writes: not to Azure, not even a finalizer or a status. It
        // reconciles everything when it becomes leader.
        debug!("not the leader; nothing to do");
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.time_reconcile();
    ctx.metrics.count_reconcile(mode_label(&obj));
    let failure_key = key_of(&obj);
    let api: Api<AseConnectivity> = Api::namespaced(ctx.client.clone(), &ns);
    let work = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &ctx, &api).await,
            Finalizer::Cleanup(obj) => cleanup(obj, &ctx).await,
        }
    });
    // Leadership lost (the Lease's renew deadline passed) or shutting down: the reconcile is
    // dropped wherever it waits (an ARM retry, a long-running operation, a parent's lock).
    // Writes are fenced in the ARM client too; this only stops the waiting. The next leader
    // reconciles everything afresh.
    let result = tokio::select! {
        biased;
        _ = ctx.leadership.lost() => {
            info!("no longer the leader (Lease lost or shutting down); reconcile cancelled");
            return Ok(Action::await_change());
        }
        result = work => result.map_err(|e| Error::Finalizer(Box::new(e))),
    };
    if result.is_ok() {
        if let Ok(mut failures) = ctx.failures.lock() {
            failures.remove(&failure_key);
        }
    }
    result
}

/// Decides what to do after a failed reconcile: permanent errors wait (their condition is
/// already in status), transient ones back off exponentially (5 s doubling, at most 5 min).
pub fn error_policy(obj: Arc<AseConnectivity>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.count_error(error.category());
    let key = key_of(&obj);
    match error.policy() {
        Policy::AwaitChange => {
            info!(spec = %format!("{}/{}", key.0, key.1), error = %error, "waiting for a change of the spec");
            Action::await_change()
        }
        Policy::Resync => {
            info!(spec = %format!("{}/{}", key.0, key.1), error = %error, "looking again at the next resync");
            Action::requeue(ctx.settings.resync)
        }
        Policy::Backoff => {
            let attempt = match ctx.failures.lock() {
                Ok(mut failures) => {
                    let n = failures.entry(key.clone()).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                }
                Err(_) => 1,
            };
            let delay = backoff(attempt);
            warn!(spec = %format!("{}/{}", key.0, key.1), error = %error, attempt, retry_in = ?delay, "transient error");
            Action::requeue(delay)
        }
    }
}

/// 5 s, 10 s, 20 s, ... capped at 300 s.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exp).min(300))
}

fn spec_key(obj: &AseConnectivity) -> SpecKey {
    obj.spec_key()
}

/// The specs to plan a reconcile of `obj` with: its connected component
/// ([`index::component`]) among the specs in the store that are not being deleted, with
/// `obj` in the version the controller handed over (newer than the store's or equal), and
/// the Azure parents they link to (the locks to hold). Sorted by key. The objects are shared
/// with the store: only a reconcile that plans copies them ([`owned`]), after it holds the
/// component's locks, so one copy per component is alive however many members wait.
fn component_specs(
    ctx: &Context,
    obj: &Arc<AseConnectivity>,
) -> (Vec<Arc<AseConnectivity>>, BTreeSet<String>) {
    let skip = index::key_ref(obj);
    let candidates: Vec<Arc<AseConnectivity>> = ctx
        .stores
        .all()
        .into_iter()
        .filter(|s| index::key_ref(s) != skip && s.meta().deletion_timestamp.is_none())
        .collect();
    // Sorted by key already.
    ctx.components
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .component_with_resources(obj, &candidates)
}

/// The engine plans from owned objects: a copy of the component, taken by the reconcile
/// that plans it.
fn owned(specs: &[Arc<AseConnectivity>]) -> Vec<AseConnectivity> {
    specs.iter().map(|s| (**s).clone()).collect()
}

async fn publish(
    ctx: &Context,
    obj: &AseConnectivity,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish an event");
    }
}

/// The status the object carries, in full. The reflector store drops `status.rules`
/// ([`store::for_store`]); a status computed from the previous one that keeps them (a
/// failed reconcile) needs them, so they are read from the API server then.
async fn full_status(
    api: &Api<AseConnectivity>,
    obj: &AseConnectivity,
) -> Result<Option<AseConnectivityStatus>, Error> {
    if !store::rules_dropped(obj) {
        return Ok(obj.status.clone());
    }
    let current = api.get_status(&obj.name_any()).await.map_err(Error::Kube)?;
    Ok(current.status)
}

/// Writes the status by server-side apply when it differs from what the object carries
/// ([`store::status_unchanged`]: the store keeps a digest of the rules, not the rules).
/// Returns whether it wrote.
async fn write_status(
    api: &Api<AseConnectivity>,
    obj: &AseConnectivity,
    status: &AseConnectivityStatus,
) -> Result<bool, Error> {
    if store::status_unchanged(obj, status) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": "asenet.io/v1alpha1",
        "kind": "AseConnectivity",
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(true)
}

fn resource_names(resources: &[&ResourcePlan]) -> String {
    resources
        .iter()
        .map(|r| r.id.name().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The outcome of a component a reconcile works from, and what it wrote to get it.
struct ComponentOutcome {
    /// The plan *after* this reconcile's writes (the written changes are no longer in it).
    planned: Arc<Planned>,
    /// The resources this reconcile wrote, as planned before the write.
    written: Vec<ResourcePlan>,
}

enum ComponentError {
    Plan(EngineError),
    Apply(EngineError),
    LostLeadership,
}

/// Plans the component and applies every writable change in it: every changed parent whose
/// contributors are all in mode `Apply` ([`pipeline::withheld_by`]), whichever member runs
/// the reconcile. On success the post-apply outcome is cached for the other members.
async fn plan_and_apply(
    ctx: &Context,
    specs: &[Arc<AseConnectivity>],
    scope: &Scope,
    members: Vec<index::Key>,
) -> Result<ComponentOutcome, ComponentError> {
    // Never work from (or leave behind) an outcome of a failed attempt.
    ctx.outcomes.invalidate(&members);
    let print = fingerprint_in(specs, scope);
    let specs = &owned(specs);
    let planned = ctx
        .engine
        .plan(specs, scope)
        .await
        .map_err(ComponentError::Plan)?;
    let read_only = pipeline::read_only_specs(specs);
    let written: Vec<ResourcePlan> = planned
        .plan
        .resources
        .iter()
        .filter(|r| has_changes(r) && pipeline::withheld_by(r, &read_only).is_empty())
        .cloned()
        .collect();
    // A resource re-read and re-planned during apply (412, transient operation failure) was
    // written from a plan this outcome does not hold: the outcome is used for this
    // reconcile's status but not cached, so the next member plans afresh.
    let mut cacheable = true;
    let planned = if written.is_empty() {
        planned
    } else {
        if !ctx.leadership.is_leader() {
            info!("lost leadership before applying; not writing");
            return Err(ComponentError::LostLeadership);
        }
        let narrowed = Plan {
            resources: written.clone(),
            errors: vec![],
        };
        let report = ctx
            .engine
            .apply(
                specs,
                scope,
                Planned {
                    plan: narrowed.clone(),
                    snapshot: planned.snapshot.clone(),
                    desired: planned.desired.clone(),
                },
            )
            .await
            .map_err(ComponentError::Apply)?;
        debug!(
            writes = report.writes(),
            replans = report.replans,
            "{}",
            report.summary_line()
        );
        cacheable = report.replans == 0;
        let applied = summarise(written.iter());
        ctx.metrics.count_changes(true, &applied);
        info!(changes = applied.total, resources = %resource_names(&written.iter().collect::<Vec<_>>()), "applied");
        // What Azure holds now, and the plan from there: the written changes are gone, the
        // withheld ones remain.
        let snapshot = diff::apply_to_snapshot(&narrowed, &planned.snapshot);
        let plan = diff::diff(&planned.desired, &snapshot, scope);
        Planned {
            snapshot,
            desired: planned.desired,
            plan,
        }
    };
    let planned = Arc::new(planned);
    if cacheable {
        ctx.outcomes
            .put(members, print, planned.clone(), ctx.settings.resync);
    } else {
        debug!("resources were re-planned during apply; outcome not cached");
    }
    Ok(ComponentOutcome { planned, written })
}

async fn apply(
    obj: Arc<AseConnectivity>,
    ctx: &Context,
    api: &Api<AseConnectivity>,
) -> Result<Action, Error> {
    let key = spec_key(&obj);
    let mode = obj.spec.mode;
    let generation = obj.meta().generation;
    let (specs, parents) = component_specs(ctx, &obj);
    // Tenancy: members that may not write what they name are planned as invalid specs.
    let policy = tenancy::policy_set(ctx).ok_or(Error::TenancyNotReady)?;
    let scope = Scope::new(specs.iter().map(|s| spec_key(s)), [])
        .with_refused(policy.refusals(specs.iter().map(|s| &**s)));
    // Single flight: no other reconcile plans or writes these parents until this one has
    // applied and cached the outcome (released on return), so a second member of the
    // component waits here and then finds the fresh outcome.
    let _parents = ctx.locks.acquire(&parents).await;

    // One plan per component: a recent outcome with the same inputs is used as it is (no
    // ARM read, no write); otherwise observe → validate → resolve → diff → apply.
    let members: Vec<index::Key> = specs.iter().map(|s| key_of(s)).collect();
    let cached = ctx.outcomes.get(
        &members,
        &fingerprint_in(&specs, &scope),
        ctx.settings.resync,
    );
    let ComponentOutcome { planned, written } = match cached {
        Some(planned) => {
            debug!(
                specs = members.len(),
                "component planned recently; using its outcome"
            );
            ComponentOutcome {
                planned,
                written: vec![],
            }
        }
        None => match plan_and_apply(ctx, &specs, &scope, members).await {
            Ok(o) => o,
            Err(ComponentError::LostLeadership) => return Ok(Action::await_change()),
            Err(ComponentError::Apply(e)) => return Err(Error::Engine(e)),
            Err(ComponentError::Plan(e)) => {
                if e.category == ErrorCategory::Transient {
                    // A stable message: a repeated failure does not rewrite the status (which
                    // would re-trigger the spec and skip the backoff); the details are logged.
                    let finding = Finding::Unavailable {
                        message: status::transient_summary(&e.message),
                    };
                    let prev = full_status(api, &obj).await?;
                    let status =
                        next_status(prev.as_ref(), &key, generation, mode, &finding, &now());
                    write_status(api, &obj, &status).await?;
                }
                return Err(Error::Engine(e));
            }
        },
    };

    let resolution = match planned.desired.specs.get(&key) {
        Some(SpecOutcome::Resolved(r)) => r.clone(),
        Some(SpecOutcome::Failed { errors }) => {
            let finding = Finding::SpecFailed { errors };
            let prev = full_status(api, &obj).await?;
            let status = next_status(prev.as_ref(), &key, generation, mode, &finding, &now());
            let message = status
                .conditions
                .iter()
                .find(|c| c.type_ == status::RESOLVED)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let kind = errors
                .first()
                .map(|e| e.kind)
                .unwrap_or(SpecErrorKind::InvalidField);
            if write_status(api, &obj, &status).await? {
                publish(
                    ctx,
                    &obj,
                    EventType::Warning,
                    kind.as_str(),
                    message.clone(),
                )
                .await;
            }
            return Err(Error::Spec {
                spec: key,
                kind,
                message,
            });
        }
        None => {
            return Err(Error::Engine(EngineError {
                category: ErrorCategory::Permanent,
                message: format!("the pipeline returned no outcome for spec {key}"),
            }))
        }
    };

    // This spec's part: the resources it owns entries in or touches.
    let is_mine = |r: &ResourcePlan| r.owners.contains(&key) || resolution.touches.contains(&r.id);
    let read_only = pipeline::read_only_specs(specs.iter().map(|s| &**s));
    let mine: Vec<&ResourcePlan> = planned
        .plan
        .resources
        .iter()
        .filter(|r| is_mine(r))
        .collect();
    // Still changed after this reconcile's writes: withheld, or planned in mode Plan/Observe.
    let changed: Vec<&ResourcePlan> = mine.iter().copied().filter(|r| has_changes(r)).collect();
    let mine_written: Vec<&ResourcePlan> = written.iter().filter(|r| is_mine(r)).collect();
    let found = summarise(mine_written.iter().copied().chain(changed.iter().copied()));
    if found.total > 0 {
        ctx.metrics.count_changes(false, &found);
        let was_in_sync = obj
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::IN_SYNC))
            .is_some_and(|c| c.status == "True");
        if was_in_sync {
            ctx.metrics.drift_detected.inc();
        }
    }

    let blocked: Vec<(&ResourcePlan, BTreeSet<SpecKey>)> = changed
        .iter()
        .map(|r| (*r, pipeline::withheld_by(r, &read_only)))
        .filter(|(_, by)| !by.is_empty())
        .collect();
    let pending = summarise(changed.iter().copied());
    let applied = match mode {
        Mode::Apply => summarise(mine_written.iter().copied()),
        Mode::Plan | Mode::Observe => PlanSummary::default(),
    };

    let conflicts: Vec<String> = mine
        .iter()
        .flat_map(|r| {
            r.conflicts
                .iter()
                .map(move |c| format!("{}: {}", r.id.name(), c.message))
        })
        .collect();
    let finding = Finding::Planned(PlannedFinding {
        resolution: &resolution,
        desired: &planned.desired,
        pending,
        applied,
        blocked: blocked
            .iter()
            .map(|(r, by)| (r.id.clone(), by.clone()))
            .collect(),
        conflicts: conflicts.clone(),
    });
    // The rules are computed afresh: the previous status without them (as the store keeps
    // it) gives the same result.
    let status = next_status(
        obj.status.as_ref(),
        &key,
        generation,
        mode,
        &finding,
        &now(),
    );
    let status_changed = write_status(api, &obj, &status).await?;

    // Events: every write (this reconcile's, for the whole component), and every new finding
    // (a finding repeated by a resync is not news: the status did not change).
    if !written.is_empty() {
        let all = summarise(written.iter());
        let note = format!(
            "applied {} change(s) to {}",
            all.total,
            resource_names(&written.iter().collect::<Vec<_>>())
        );
        publish(ctx, &obj, EventType::Normal, "Applied", note).await;
    }
    if status_changed && pending.total > 0 {
        match mode {
            Mode::Plan => {
                let note = format!(
                    "{} change(s) planned for {} ({} create, {} update, {} delete); mode Plan never writes",
                    pending.total,
                    resource_names(&changed),
                    pending.create,
                    pending.update,
                    pending.delete
                );
                publish(ctx, &obj, EventType::Normal, "ChangesPlanned", note).await;
            }
            Mode::Observe => {
                let note = format!(
                    "{} difference(s) between Azure and the spec in {}",
                    pending.total,
                    resource_names(&changed)
                );
                publish(ctx, &obj, EventType::Warning, "DriftDetected", note).await;
            }
            // A change left that nobody withholds (a cached outcome is never written) is
            // pending until the next fresh plan, without an event.
            Mode::Apply if !blocked.is_empty() => {
                let names: Vec<&ResourcePlan> = blocked.iter().map(|(r, _)| *r).collect();
                let note = format!(
                    "not writing {}: shared with specs not in mode Apply",
                    resource_names(&names)
                );
                publish(
                    ctx,
                    &obj,
                    EventType::Warning,
                    "SharedResourceNotApplied",
                    note,
                )
                .await;
            }
            Mode::Apply => {}
        }
    }
    if status_changed && !conflicts.is_empty() {
        publish(
            ctx,
            &obj,
            EventType::Warning,
            "ForeignConflict",
            conflicts.join("; "),
        )
        .await;
    }
    Ok(Action::requeue(ctx.settings.resync))
}

/// The Azure resources named in a spec (its NSG, subnet and route table).
fn own_resource_ids(obj: &AseConnectivity) -> BTreeSet<ResourceId> {
    let s = &obj.spec;
    [
        Some(&s.network_security_group.resource_id),
        Some(&s.subnet.resource_id),
        s.route_table.as_ref().map(|r| &r.resource_id),
    ]
    .into_iter()
    .flatten()
    .filter_map(|id| ResourceId::parse(id).ok())
    .collect()
}

async fn cleanup(obj: Arc<AseConnectivity>, ctx: &Context) -> Result<Action, Error> {
    let key = spec_key(&obj);
    ctx.outcomes.forget_spec(&key_of(&obj));
    if obj.spec.deletion_policy == DeletionPolicy::Orphan {
        publish(
            ctx,
            &obj,
            EventType::Normal,
            "Orphaned",
            "deletionPolicy Orphan: the rules and routes this spec owns stay in Azure".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    if obj.spec.mode != Mode::Apply {
        publish(
            ctx,
            &obj,
            EventType::Normal,
            "CleanupSkipped",
            format!(
                "mode {:?} never writes to Azure: the rules and routes this spec owns are left as they are",
                obj.spec.mode
            ),
        )
        .await;
        return Ok(Action::await_change());
    }

    // The removed spec is passed with the others (the pipeline reads its resources) and
    // named in `removing` (it is not resolved, so the diff deletes what it owns).
    let (specs, parents) = component_specs(ctx, &obj);
    let others: Vec<&Arc<AseConnectivity>> = specs.iter().filter(|s| spec_key(s) != key).collect();
    // Tenancy: the other members are judged as in a reconcile; the removed spec's cleanup
    // writes only the resources its namespace may write (docs/operator.md, "Tenancy").
    let policy = tenancy::policy_set(ctx).ok_or(Error::TenancyNotReady)?;
    let not_permitted: BTreeSet<ResourceId> = policy
        .decide(&obj)
        .iter()
        .filter_map(|r| ResourceId::parse(&r.resource_id).ok())
        .collect();
    let scope = Scope::new(others.iter().map(|s| spec_key(s)), [key.clone()])
        .with_refused(policy.refusals(others.iter().map(|s| &***s)));
    let _parents = ctx.locks.acquire(&parents).await;
    // Azure is about to change under the component: every cached outcome of its members
    // (with or without the removed spec) is stale.
    for spec in &specs {
        ctx.outcomes.forget_spec(&key_of(spec));
    }
    let specs = owned(&specs);
    let planned = ctx
        .engine
        .plan(&specs, &scope)
        .await
        .map_err(Error::Engine)?;
    let own_ids = own_resource_ids(&obj);
    let owned_by_me = |r: &ResourcePlan| {
        r.owners.contains(&key)
            || own_ids.contains(&r.id)
            || r.rules
                .delete
                .iter()
                .any(|d| d.owner.as_ref() == Some(&key))
            || r.routes
                .delete
                .iter()
                .any(|d| d.owner.as_ref() == Some(&key))
    };
    // Its own NSG and route table go along even without changes: apply deletes them when
    // asenet created them for this spec and they are now empty.
    let mine: Vec<&ResourcePlan> = planned
        .plan
        .resources
        .iter()
        .filter(|r| (has_changes(r) && owned_by_me(r)) || own_ids.contains(&r.id))
        .filter(|r| !not_permitted.contains(&r.id))
        .collect();
    if !not_permitted.is_empty() {
        let ids: Vec<String> = not_permitted.iter().map(|id| id.to_string()).collect();
        publish(
            ctx,
            &obj,
            EventType::Warning,
            SpecErrorKind::NotPermitted.as_str(),
            format!(
                "not removing what this spec owns in {}: namespace `{}` may not write it; it stays in Azure as it is",
                ids.join(", "),
                key.namespace
            ),
        )
        .await;
    }
    let read_only = pipeline::read_only_specs(others.iter().map(|s| &***s));
    let blockers: BTreeSet<SpecKey> = mine
        .iter()
        .flat_map(|r| pipeline::withheld_by(r, &read_only))
        .collect();
    if !blockers.is_empty() {
        let by: Vec<String> = blockers.iter().map(|k| k.to_string()).collect();
        let message = format!(
            "{} shared with {} (not in mode Apply); set them to mode Apply, or set this spec's deletionPolicy to Orphan",
            resource_names(&mine),
            by.join(", ")
        );
        publish(
            ctx,
            &obj,
            EventType::Warning,
            "CleanupBlocked",
            message.clone(),
        )
        .await;
        return Err(Error::CleanupBlocked { spec: key, message });
    }
    if !mine.iter().any(|r| has_changes(r)) && mine.iter().all(|r| r.kind == ResourceKind::Subnet) {
        return Ok(Action::await_change());
    }
    if !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let removed = summarise(mine.iter().copied());
    let narrowed = Planned {
        plan: Plan {
            resources: mine.iter().map(|r| (*r).clone()).collect(),
            errors: vec![],
        },
        ..planned.clone()
    };
    let report = ctx
        .engine
        .apply(&specs, &scope, narrowed)
        .await
        .map_err(Error::Engine)?;
    ctx.metrics.count_changes(true, &removed);
    info!(writes = report.writes(), "{}", report.summary_line());
    publish(
        ctx,
        &obj,
        EventType::Normal,
        "CleanedUp",
        format!(
            "removed what this spec owned from {} ({} change(s))",
            resource_names(&mine),
            removed.total
        ),
    )
    .await;
    Ok(Action::await_change())
}
