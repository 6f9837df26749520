//! `reconcile` and `error_policy`: one AseConnectivity spec at a time, level-triggered.
//!
//! Named steps (docs/style.md), each a call into the core or the shell with its own
//! [`Error`] variant: check leadership → finalizer → `dereference` (the spec's connected
//! component: the specs linked to this one by a shared NSG, route table or subnet or an
//! `environmentRef`, transitively, so merged NSGs are computed whole and the reads are
//! proportional to the component, not the fleet; with the tenancy refusals; a shared view
//! from the store's partition, [`super::index::ComponentIndex::view`]) → a recent outcome
//! of the component's lineage is used as it is, without locks; otherwise take the locks of
//! the component's Azure parents (single flight per parent) → `plan_component` (plan →
//! narrow to what may be written ([`decide::take_writable`]) → write → re-diff; one plan per
//! component: the outcome is cached in `Context::outcomes`, and the other members reuse it
//! without reading or writing Azure until a member's spec changes or the resync interval
//! passes; the resync observes Azure again and keeps the outcome, without resolving, when
//! what it reads has the digest of the snapshot the outcome was planned from or left by
//! its writes, `pipeline::digest`) → `report` (status, events and change counters of this spec's part, read from
//! the outcome's per-spec index [`decide::Parts`] and decided by the pure
//! [`decide::decide`]; the status written by server-side apply only when it changed). A
//! deleted spec goes through `cleanup` instead, its decisions made by
//! [`decide::cleanup_start`] and [`decide::removal`]. A reconcile never branches on why it
//! ran; `error_policy` decides from the error's category alone ([`decide::policy`]).
//!
//! Modes and shared resources: a spec in mode `Apply` writes the resources it touches, but a
//! resource several specs contribute to is written only when *every* contributing spec is
//! in mode `Apply`; otherwise the write is withheld and reported (`InSync=False`, reason
//! `SharedResourceNotApplied`, a Warning event). The PUT of an NSG carries its complete rule
//! list, so writing it would also apply the pending changes of a spec in mode `Plan` or
//! `Observe`, which those modes promise never to do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as Finalizer};
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::context::{fingerprint_in, withheld, Context, MemberPrint, Shared, FIELD_MANAGER};
use super::decide::{
    self, Component, Departure, EventKind, Notice, Outcome, RemovalStep, Subject, WrittenResource,
};
use super::engine::{self, Planned};
use super::index::{key_of, ComponentView};
use super::metrics::ModeLabel;
use super::parts;
use super::status::summarise;
use super::store;
use super::tenancy;
use crate::api::{AseConnectivity, AseConnectivityStatus, Mode};
use crate::diff::{self, Plan, ResourcePlan, Scope};
use crate::error::{Category, SpecError, SpecErrorKind};
use crate::model::{ResourceId, SpecKey};
use crate::pipeline::PipelineError;
use crate::pipeline::SnapshotDigest;
use crate::resolver::SpecOutcome;

pub use super::decide::Policy;

/// The finalizer that keeps a spec until what it owns in Azure is removed.
pub const FINALIZER: &str = "asenet.io/cleanup";

/// A failed reconcile, one variant per step, carrying what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Dereference: the object is not namespaced.
    #[error("the spec has no namespace")]
    NoNamespace,
    /// Dereference: the tenancy objects are not read yet.
    #[error("tenancy is enforced but the AseTenancyPolicy, AseBackendGrant and Namespace objects are not read yet (are the tenancy CRDs installed?)")]
    TenancyNotReady,
    /// Plan: observing Azure or planning the component failed.
    #[error("planning the component failed: {}", engine::describe(.0))]
    Plan(#[source] PipelineError),
    /// Plan: the pipeline planned the component without this spec.
    #[error("the pipeline returned no outcome for spec {spec}")]
    NoOutcome { spec: SpecKey },
    /// Validate/resolve: the spec cannot be planned.
    #[error("spec {spec} cannot be planned: {message}")]
    Spec {
        spec: SpecKey,
        kind: SpecErrorKind,
        message: String,
    },
    /// Apply: writing the plan to Azure failed.
    #[error("applying the plan failed: {}", engine::describe(.0))]
    Apply(#[source] PipelineError),
    /// Cleanup: a resource of the deleted spec is withheld by another spec.
    #[error("cleanup of {spec} waits: {message}")]
    CleanupBlocked { spec: SpecKey, message: String },
    /// Status: a Kubernetes API request failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),
    /// The finalizer (adding or removing it, or the step it wrapped) failed.
    #[error("{0}")]
    Finalizer(#[source] Box<FinalizerError<Error>>),
}

impl Error {
    /// The category of the error, in the one vocabulary (`crate::error::Category`): the
    /// metric label of `asenet_reconcile_errors_total{category}`, spelled like the
    /// condition and event reasons and the plan JSON.
    pub fn category(&self) -> Category {
        match self {
            Error::NoNamespace => Category::InvalidField,
            Error::TenancyNotReady => Category::TenancyNotReady,
            Error::Plan(e) | Error::Apply(e) => e.category().category(),
            Error::NoOutcome { .. } => Category::Permanent,
            Error::Spec { kind, .. } => kind.category(),
            Error::CleanupBlocked { .. } => Category::CleanupBlocked,
            Error::Kube(_) => Category::Kube,
            Error::Finalizer(e) => match &**e {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.category()
                }
                _ => Category::Kube,
            },
        }
    }

    /// What `error_policy` does: decided by the category alone ([`decide::policy`]).
    pub fn policy(&self) -> Policy {
        decide::policy(self.category())
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

/// The specs to plan a reconcile of `obj` with: its connected component
/// ([`super::index::ComponentIndex::view`]) among the specs in the store that are not being
/// deleted, with `obj` in the version the controller handed over (newer than the store's or
/// equal), and the Azure parents they link to (the locks to hold). Sorted by key. The
/// objects are shared with the store, and planned from without a copy. When the stores are
/// versioned and unchanged since the partition was computed, the view is taken from it
/// without listing the store ([`super::index::ComponentIndex::view_of_version`]); when
/// the events since then only replaced objects the partition holds, those are read by key
/// and the partition brought up to date ([`super::index::ComponentIndex::view_after`]).
fn component_view(ctx: &Context, obj: &Arc<AseConnectivity>) -> Arc<ComponentView> {
    // Read before the objects: a view computed from them is at least that version's.
    let version = ctx.stores.version();
    let components = || ctx.components.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(view) = version.and_then(|v| components().view_of_version(obj, v)) {
        return view;
    }
    // Only objects replaced since the partition's version (status writes, mostly): those
    // read by key, not the whole store listed.
    if let Some(version) = version {
        let seen = components().version();
        let changed = seen.and_then(|from| {
            let keys = ctx.stores.changed_between(from, version)?;
            keys.iter()
                .map(|k| ctx.stores.get(k))
                .collect::<Option<Vec<_>>>()
        });
        if let (Some(from), Some(changed)) = (seen, changed) {
            let mut index = components();
            if index.version() == Some(from) {
                if let Some(view) = index.view_after(obj, version, &changed) {
                    return view;
                }
            }
        }
    }
    let stored = ctx.stores.objects();
    let mut index = components();
    let view = index.view(obj, &stored);
    index.seen_version(version);
    view
}

async fn publish(ctx: &Context, obj: &AseConnectivity, notice: &Notice) {
    let event = Event {
        type_: match notice.kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        },
        reason: notice.reason.to_string(),
        note: Some(notice.note.clone()),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, reason = notice.reason, "could not publish an event");
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

/// The body of the status write: server-side apply of the status alone.
#[derive(serde::Serialize)]
struct StatusApply<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    status: &'a AseConnectivityStatus,
}

/// Writes the status by server-side apply when it differs from what the object carries
/// ([`store::status_unchanged`]: the store keeps a digest of the rules, not the rules).
/// Returns whether it wrote.
///
/// The request is `Api::patch_status`'s, sent without reading the object the API server
/// answers with: nothing here uses it (the new status reaches the store by the watch), and
/// deserialising it was the largest part of a status-only reconcile's CPU at 5,000 specs
/// (issue 14). The patch is serialised from the status directly, not through a JSON tree.
async fn write_status(
    api: &Api<AseConnectivity>,
    obj: &AseConnectivity,
    status: &AseConnectivityStatus,
) -> Result<bool, Error> {
    if store::status_unchanged(obj, status) {
        return Ok(false);
    }
    let patch = StatusApply {
        api_version: &AseConnectivity::api_version(&()),
        kind: &AseConnectivity::kind(&()),
        status,
    };
    let mut request = kube::core::Request::new(api.resource_url())
        .patch_subresource(
            "status",
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .map_err(|e| Error::Kube(kube::Error::BuildRequest(e)))?;
    request.extensions_mut().insert("patch_status");
    api.clone()
        .into_client()
        .request_text(request)
        .await
        .map_err(Error::Kube)?;
    Ok(true)
}

/// The report step: decides from `outcome` ([`decide::decide`]), counts the changes, writes
/// the status when it changed and publishes the events.
async fn report(
    ctx: &Context,
    api: &Api<AseConnectivity>,
    obj: &AseConnectivity,
    outcome: &Outcome<'_>,
) -> Result<(), Error> {
    let key = obj.spec_key();
    let prev = if outcome.keeps_rules() {
        full_status(api, obj).await?
    } else {
        obj.status.clone()
    };
    let subject = Subject {
        key: &key,
        generation: obj.meta().generation,
        mode: obj.spec.mode,
        prev: prev.as_ref(),
    };
    let decision = decide::decide(&subject, outcome, &now());
    if let Some(found) = &decision.found {
        ctx.metrics.count_changes(false, found);
    }
    if decision.drift {
        ctx.metrics.drift_detected.inc();
    }
    let status_changed = match &decision.status {
        Some(status) => write_status(api, obj, status).await?,
        None => false,
    };
    for notice in &decision.events {
        if status_changed || !notice.news_only {
            publish(ctx, obj, notice).await;
        }
    }
    Ok(())
}

/// A spec's connected component, ready to plan: its members (sorted by key) and the Azure
/// parents to lock ([`ComponentView`]), and the tenancy refusals to plan them with.
struct Members {
    view: Arc<ComponentView>,
    refused: BTreeMap<SpecKey, Vec<SpecError>>,
}

impl Members {
    /// The scope to plan the members in.
    fn scope(&self) -> Scope {
        Scope::new(self.view.specs.iter().map(|s| s.spec_key()), [])
            .with_refused(self.refused.clone())
    }
}

/// The dereference step of a reconcile: the component of `obj` and the tenancy refusals
/// of its members (members that may not write what they name are planned as invalid specs).
fn dereference(ctx: &Context, obj: &Arc<AseConnectivity>) -> Result<Members, Error> {
    let view = component_view(ctx, obj);
    let policy = tenancy::policy_set(ctx).ok_or(Error::TenancyNotReady)?;
    let refused = policy.refusals(view.specs.iter().map(|s| &**s));
    Ok(Members { view, refused })
}

/// The outcome of a component a reconcile works from, and what it wrote to get it.
struct ComponentOutcome {
    /// The plan *after* this reconcile's writes (the written changes are no longer in it).
    shared: Arc<Shared>,
    /// The resources this reconcile wrote, as planned before the write.
    written: Vec<WrittenResource>,
}

impl ComponentOutcome {
    fn cached(shared: Arc<Shared>) -> Self {
        ComponentOutcome {
            shared,
            written: vec![],
        }
    }
}

enum ComponentError {
    Plan(PipelineError),
    Apply(PipelineError),
    LostLeadership,
}

/// A recent outcome planned from a view of this component's lineage (same members, same
/// fingerprints), found without locks and without a fingerprint (members without tenancy
/// refusals only): what every member's reconcile but the first finds during a resync.
fn cached_outcome(ctx: &Context, m: &Members) -> Option<ComponentOutcome> {
    if !m.refused.is_empty() {
        return None;
    }
    let shared = ctx.outcomes.get_view(&m.view, ctx.settings.resync)?;
    debug!(
        specs = m.view.keys.len(),
        "component planned recently from this lineage; using its outcome"
    );
    Some(ComponentOutcome::cached(shared))
}

/// One plan per component: a recent outcome with the same inputs is used as it is (no ARM
/// read, no write); otherwise [`plan_and_apply`]. Called with the component's locks held.
async fn plan_component(ctx: &Context, m: &Members) -> Result<ComponentOutcome, ComponentError> {
    if let Some(hit) = cached_outcome(ctx, m) {
        return Ok(hit);
    }
    let scope = m.scope();
    let print = fingerprint_in(&m.view.specs, &scope);
    if let Some(shared) = ctx.outcomes.get(&m.view.keys, &print, ctx.settings.resync) {
        debug!(
            specs = m.view.keys.len(),
            "component planned recently; using its outcome"
        );
        return Ok(ComponentOutcome::cached(shared));
    }
    plan_and_apply(ctx, m, &scope, print).await
}

/// Plans the component and applies every writable change in it ([`decide::take_writable`]):
/// plan → narrow → write → re-diff → cache. On success the post-apply outcome is cached for
/// the other members.
///
/// The outcome of these members as they are, when it is the plan of what Azure held, is
/// kept by a resync that finds Azure unchanged: the component is read into a digest
/// (`Engine::observe_digest`: each resource hashed as it arrives and dropped, where a
/// snapshot of a 10,000-spec component is ~120 MiB; issue 14), and only when Azure changed
/// is it read again to be planned. Resolving and diffing again would give the outcome back.
async fn plan_and_apply(
    ctx: &Context,
    m: &Members,
    scope: &Scope,
    print: Vec<MemberPrint>,
) -> Result<ComponentOutcome, ComponentError> {
    let started = std::time::Instant::now();
    let ms = |since: std::time::Instant| since.elapsed().as_millis() as u64;
    // The store's objects, shared: a component is planned and written without a copy of
    // its specs (10,000 of them in one component, issue 14's memory).
    let specs = &m.view.specs;
    let failed = |e| plan_failed(ctx, m, e);
    // Nothing is removed here (the scope of live members): the digest decides (see
    // `pipeline::digest`).
    match ctx.outcomes.observed(&m.view.keys, &print) {
        Some(seen) if scope.removing.is_empty() => {
            let digest = (ctx.engine.observe_digest(specs, scope).await).map_err(failed)?;
            if let Some(kept) = keep_unchanged(ctx, m, &print, seen, digest, started) {
                return Ok(kept);
            }
        }
        _ => planning_afresh(ctx, m),
    }
    let parts = crate::pipeline::cpu_bound(|| parts::parts(specs, ctx.settings.plan_part_specs));
    if parts.len() > 1 && scope.removing.is_empty() {
        return plan_and_apply_parts(ctx, m, scope, print, &parts).await;
    }
    let observed = ctx.engine.observe(specs, scope).await.map_err(failed)?;
    let digest = scope
        .removing
        .is_empty()
        .then(|| observed.digest())
        .flatten();
    let mut planned = observed.plan();
    let plan_ms = ms(started);
    let step = std::time::Instant::now();
    let held = withheld(&planned.plan.resources, specs.iter().map(|s| &**s));
    let written = decide::take_writable(&mut planned.plan.resources, &held);
    let narrow_ms = ms(step);
    let step = std::time::Instant::now();
    // The snapshot the outcome is the plan of: the one observed, or after writes the one
    // they leave (what Azure answers once they are made, when none was re-planned).
    let (planned, cacheable, written, planned_from) = if written.is_empty() {
        (planned, true, vec![], digest)
    } else {
        write(ctx, specs, scope, planned, written, true).await?
    };
    let write_ms = ms(step);
    let step = std::time::Instant::now();
    let shared = Arc::new(crate::pipeline::cpu_bound(|| Shared::new(planned, specs)));
    debug!(
        target: "asenet::controller::timing",
        specs = specs.len(),
        plan_ms,
        narrow_ms,
        write_ms,
        index_ms = ms(step),
        "component planned"
    );
    cache_outcome(ctx, m, print, planned_from, cacheable, &shared);
    Ok(ComponentOutcome { shared, written })
}

/// A failed read or plan of `m`: its outcome is forgotten, so that nothing works from (or
/// leaves behind) an outcome of a failed attempt.
fn plan_failed(ctx: &Context, m: &Members, e: PipelineError) -> ComponentError {
    ctx.outcomes.invalidate(&m.view.keys);
    ComponentError::Plan(e)
}

/// The cached outcome of `m` kept and made young again when Azure has the digest it was
/// stored with (`seen`); otherwise it is dropped and the component is planned afresh
/// (each counted in `asenet_component_plans_total`).
fn keep_unchanged(
    ctx: &Context,
    m: &Members,
    print: &[MemberPrint],
    seen: SnapshotDigest,
    digest: Option<SnapshotDigest>,
    started: std::time::Instant,
) -> Option<ComponentOutcome> {
    let kept =
        (digest.filter(|d| *d == seen)).and_then(|d| ctx.outcomes.renew(&m.view.keys, print, d));
    let Some(shared) = kept else {
        planning_afresh(ctx, m);
        return None;
    };
    debug!(
        specs = m.view.keys.len(),
        observe_ms = started.elapsed().as_millis() as u64,
        "Azure unchanged since the component was planned; keeping its outcome"
    );
    ctx.metrics.count_component_plan(true);
    Some(ComponentOutcome::cached(shared))
}

/// Forgets the outcome of `m` before it is planned again, and counts the plan.
fn planning_afresh(ctx: &Context, m: &Members) {
    ctx.outcomes.invalidate(&m.view.keys);
    ctx.metrics.count_component_plan(false);
}

/// Caches a planned outcome with the digest of the snapshot it is the plan of. A resource
/// re-planned during apply (412, transient operation failure) was written from a plan the
/// outcome does not hold: such an outcome serves this reconcile's status but is not
/// cached, so the next member plans afresh.
fn cache_outcome(
    ctx: &Context,
    m: &Members,
    print: Vec<MemberPrint>,
    planned_from: Option<SnapshotDigest>,
    cacheable: bool,
    shared: &Arc<Shared>,
) {
    if !cacheable {
        debug!("resources were re-planned during apply; outcome not cached");
        return;
    }
    let view = m.refused.is_empty().then_some(&*m.view);
    let resync = ctx.settings.resync;
    (ctx.outcomes).put(
        m.view.keys.to_vec(),
        print,
        view,
        planned_from,
        shared.clone(),
        resync,
    );
}

/// [`plan_and_apply`] of a component of more than `Settings::plan_part_specs` specs: its
/// `parts` (`controller::parts`) planned and written one after the other, each holding
/// only its own rules; their outcomes joined into the component's. (A resync that finds
/// Azure as the parts left it keeps the outcome before this is called, as for a whole
/// component: [`plan_and_apply`].)
async fn plan_and_apply_parts(
    ctx: &Context,
    m: &Members,
    scope: &Scope,
    print: Vec<MemberPrint>,
    parts: &[Vec<usize>],
) -> Result<ComponentOutcome, ComponentError> {
    let started = std::time::Instant::now();
    let specs = &m.view.specs;
    let inputs = crate::pipeline::cpu_bound(|| parts::inputs(specs, scope, parts));
    let failed = |e| plan_failed(ctx, m, e);
    let mut joined: Option<Shared> = None;
    let mut written = Vec::new();
    // What Azure holds once every part is written: each part's snapshot after its writes,
    // a later part's read of a VNet or an ASE replacing an earlier one's.
    let mut left = crate::pipeline::Digests::default();
    let mut cacheable = true;
    for (given, scope) in &inputs {
        let observed = ctx.engine.observe(given, scope).await.map_err(failed)?;
        let mut planned = observed.plan();
        let held = withheld(&planned.plan.resources, given.iter().map(|s| &**s));
        let writable = decide::take_writable(&mut planned.plan.resources, &held);
        let (planned, ok, mut wrote) = if writable.is_empty() {
            (planned, true, vec![])
        } else {
            // The digest of the state the writes leave is taken below, with the others.
            let (planned, ok, wrote, _) =
                write(ctx, given, scope, planned, writable, false).await?;
            (planned, ok, wrote)
        };
        // After `write`, the snapshot is the one its writes leave.
        if ok {
            crate::pipeline::cpu_bound(|| left.add(&planned.snapshot));
        }
        cacheable &= ok;
        written.append(&mut wrote);
        let part = crate::pipeline::cpu_bound(|| Shared::new(planned, given));
        match joined.as_mut() {
            Some(j) => j.absorb(part),
            None => joined = Some(part),
        }
    }
    let shared = Arc::new(joined.unwrap_or_else(|| Shared::new(Planned::default(), specs)));
    debug!(
        target: "asenet::controller::timing",
        specs = specs.len(),
        parts = parts.len(),
        total_ms = started.elapsed().as_millis() as u64,
        "component planned in parts"
    );
    cache_outcome(ctx, m, print, left.finish(), cacheable, &shared);
    Ok(ComponentOutcome { shared, written })
}

/// Writes `written` (the plan narrowed to what may be written) and returns the plan from
/// what Azure holds now, whether it may be cached (nothing was re-planned), what the
/// reports read of `written`, and the digest of the snapshot the writes leave (when it may
/// be cached and `digest_after`).
async fn write(
    ctx: &Context,
    specs: &[Arc<AseConnectivity>],
    scope: &Scope,
    planned: Planned,
    written: Vec<ResourcePlan>,
    digest_after: bool,
) -> Result<(Planned, bool, Vec<WrittenResource>, Option<SnapshotDigest>), ComponentError> {
    if !ctx.leadership.is_leader() {
        info!("lost leadership before applying; not writing");
        return Err(ComponentError::LostLeadership);
    }
    let narrowed = Plan {
        resources: written,
        errors: vec![],
    };
    // The plan is re-computed after the writes: the first one is not held through them
    // (`written` has the part written).
    let Planned {
        mut snapshot,
        desired,
        plan: _,
    } = planned;
    // Nothing of the plan is copied for the apply (issue 14: at 5,000 specs the copies
    // took about as long as resolving).
    let report = ctx
        .engine
        .apply(specs, scope, &snapshot, &narrowed)
        .await
        .map_err(ComponentError::Apply)?;
    debug!(
        writes = report.writes(),
        replans = report.replans,
        "{}",
        report.summary_line()
    );
    let applied = summarise(narrowed.resources.iter());
    ctx.metrics.count_changes(true, &applied);
    info!(changes = applied.total, resources = %decide::resource_names(&narrowed.resources), "applied");
    // What Azure holds now, and the plan from there: the written changes are gone, the
    // withheld ones remain.
    diff::apply_in_place(&narrowed, &mut snapshot);
    let cacheable = report.replans == 0;
    let observed = (cacheable && digest_after)
        .then(|| crate::pipeline::cpu_bound(|| crate::pipeline::digest(&snapshot)))
        .flatten();
    // The entries were for the PUT bodies and the line above; reports read the counts.
    // Dropped before the re-plan.
    let written: Vec<WrittenResource> = narrowed.resources.iter().map(Into::into).collect();
    drop(narrowed);
    let plan = crate::pipeline::cpu_bound(|| {
        diff::diff_with(&desired, &snapshot, scope, diff::Detail::Writes)
    });
    let now_planned = Planned {
        snapshot,
        desired,
        plan,
    };
    Ok((now_planned, cacheable, written, observed))
}

/// The reconcile of a live spec, as named steps: dereference → lock the parents → plan the
/// component (and apply what it may write) → report this spec's part.
async fn apply(
    obj: Arc<AseConnectivity>,
    ctx: &Context,
    api: &Api<AseConnectivity>,
) -> Result<Action, Error> {
    let key = obj.spec_key();
    let members = dereference(ctx, &obj)?;
    let outcome = match cached_outcome(ctx, &members) {
        Some(hit) => Ok(hit),
        None => {
            // Single flight: no other reconcile plans or writes these parents until this
            // one has applied and cached the outcome (released after planning), so a
            // second member of the component waits here and then finds the fresh outcome.
            let _parents = ctx.locks.acquire(&members.view.parents).await;
            plan_component(ctx, &members).await
        }
    };
    let ComponentOutcome { shared, written } = match outcome {
        Ok(o) => o,
        Err(ComponentError::LostLeadership) => return Ok(Action::await_change()),
        Err(ComponentError::Apply(e)) => return Err(Error::Apply(e)),
        Err(ComponentError::Plan(e)) => {
            let message = engine::describe(&e);
            let outcome = Outcome::AzureFailed {
                category: e.category(),
                message: &message,
            };
            report(ctx, api, &obj, &outcome).await?;
            return Err(Error::Plan(e));
        }
    };
    let planned = &shared.planned;
    let resolution = match planned.desired.specs.get(&key) {
        Some(SpecOutcome::Resolved(r)) => r,
        Some(SpecOutcome::Failed { errors }) => {
            report(ctx, api, &obj, &Outcome::SpecFailed { errors }).await?;
            let (kind, message) = decide::spec_failure(errors);
            return Err(Error::Spec {
                spec: key,
                kind,
                message,
            });
        }
        None => return Err(Error::NoOutcome { spec: key }),
    };
    let outcome = Outcome::Planned(Component {
        resolution,
        plan: &planned.plan.resources,
        parts: &shared.parts,
        written: &written,
        withheld: &shared.withheld,
    });
    report(ctx, api, &obj, &outcome).await?;
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

/// The cleanup of a deleted spec, as named steps: decide whether it touches Azure →
/// dereference the component without it → lock the parents → plan → decide the removal →
/// apply it → report.
async fn cleanup(obj: Arc<AseConnectivity>, ctx: &Context) -> Result<Action, Error> {
    let key = obj.spec_key();
    ctx.outcomes.forget_spec(&key_of(&obj));
    if let Some(notice) = decide::cleanup_start(obj.spec.deletion_policy, obj.spec.mode) {
        publish(ctx, &obj, &notice).await;
        return Ok(Action::await_change());
    }
    let departing = dereference_departing(ctx, &obj)?;
    let _parents = ctx.locks.acquire(&departing.view.parents).await;
    // Azure is about to change under the component: every cached outcome of its members
    // (with or without the removed spec) is stale.
    for key in departing.view.keys.iter() {
        ctx.outcomes.forget_spec(key);
    }
    let specs = &departing.view.specs;
    let planned = ctx
        .engine
        .plan(specs, &departing.scope)
        .await
        .map_err(Error::Plan)?;
    let others = specs.iter().map(|s| &**s).filter(|s| s.spec_key() != key);
    let withheld = withheld(&planned.plan.resources, others);
    let own_ids = own_resource_ids(&obj);
    let removal = decide::removal(&Departure {
        key: &key,
        own_ids: &own_ids,
        not_permitted: &departing.not_permitted,
        plan: &planned.plan.resources,
        withheld: &withheld,
    });
    if let Some(notice) = &removal.refused {
        publish(ctx, &obj, notice).await;
    }
    let (resources, removed, done) = match removal.step {
        RemovalStep::Blocked { notice, message } => {
            publish(ctx, &obj, &notice).await;
            return Err(Error::CleanupBlocked { spec: key, message });
        }
        RemovalStep::Nothing => return Ok(Action::await_change()),
        RemovalStep::Remove {
            resources,
            removed,
            done,
        } => (resources, removed, done),
    };
    if !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let narrowed = Plan {
        resources: resources.into_iter().cloned().collect(),
        errors: vec![],
    };
    let report = ctx
        .engine
        .apply(specs, &departing.scope, &planned.snapshot, &narrowed)
        .await
        .map_err(Error::Apply)?;
    ctx.metrics.count_changes(true, &removed);
    info!(writes = report.writes(), "{}", report.summary_line());
    publish(ctx, &obj, &done).await;
    Ok(Action::await_change())
}

/// A deleted spec's component, ready to plan without it.
struct Departing {
    /// The component, the deleted spec included (the pipeline reads its resources), and
    /// the parents to lock.
    view: Arc<ComponentView>,
    /// The others, resolved; the deleted spec named in `removing` (it is not resolved, so
    /// the diff deletes what it owns).
    scope: Scope,
    /// What the deleted spec's namespace may not write: it stays in Azure.
    not_permitted: BTreeSet<ResourceId>,
}

/// The dereference step of a cleanup. Tenancy: the other members are judged as in a
/// reconcile; the removed spec's cleanup writes only the resources its namespace may write
/// (docs/operator.md, "Tenancy").
fn dereference_departing(ctx: &Context, obj: &Arc<AseConnectivity>) -> Result<Departing, Error> {
    let key = obj.spec_key();
    let view = component_view(ctx, obj);
    let others: Vec<&AseConnectivity> = view
        .specs
        .iter()
        .map(|s| &**s)
        .filter(|s| s.spec_key() != key)
        .collect();
    let policy = tenancy::policy_set(ctx).ok_or(Error::TenancyNotReady)?;
    let not_permitted = policy
        .decide(obj)
        .iter()
        .filter_map(|r| ResourceId::parse(&r.resource_id).ok())
        .collect();
    let scope = Scope::new(others.iter().map(|s| s.spec_key()), [key])
        .with_refused(policy.refusals(others.iter().copied()));
    Ok(Departing {
        view,
        scope,
        not_permitted,
    })
}
