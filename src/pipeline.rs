//! The pipeline, the single code path the CLI and the operator share (docs/design.md
//! section 3): validate → observe → resolve → diff, then apply.
//!
//! Validation runs before observe because the typed resource ids it produces are what
//! observe reads; it needs no I/O. Specs that fail validation write nothing: they are
//! recorded as `Failed` in the desired state, so the diff keeps every entry they own
//! exactly as it is, while resources they share with valid specs are still planned.
//!
//! Removal: specs in `Scope::removing` are observed (their resources must be read) but not
//! resolved, so the diff deletes what they own. A removed spec with
//! `deletionPolicy: Orphan` is dropped from `removing`: its entries stay in Azure untouched.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use crate::api::{self, DeletionPolicy};
use crate::apply::{self, ApplyError, ApplyOptions};
use crate::azure::pacing::WritePacer;
use crate::azure::ArmClient;
pub use crate::azure::{ArmError, ErrorCategory};
use crate::diff::{self, Plan, ResourcePlan, Scope};
use crate::error::SpecError;
use crate::evaluate::verify;
use crate::model::SpecKey;
use crate::observe::{self, ObserveError, ServiceTagCache, ServiceTags, TagOptions, Targets};
use crate::resolver::{self, Desired, SpecOutcome};
use crate::snapshot::Snapshot;
use crate::validate::{self, ValidSpec};

mod digest;

pub use crate::apply::{ApplyEvent, ApplyReport, WriteAction, Written};
pub use crate::evaluate::verify::{VerifiedFlow, VerifiedRoute, VerifyReport};
pub use digest::{digest, DigestGather, Digests, SnapshotDigest};

/// Runs the CPU-bound part of an async caller (validating, resolving and diffing a
/// component: seconds of CPU on every core at 10,000 specs). On a multi-thread tokio
/// runtime the worker first hands its other tasks to another thread
/// (`tokio::task::block_in_place`), so the watches, the probes and the ARM calls queued on
/// that worker go on while it computes. On a current-thread runtime, or outside one, `f`
/// just runs.
pub fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Knobs of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Concurrent ARM reads (observe).
    pub max_concurrency: usize,
    /// Concurrent NSG/route-table/subnet writes (apply) per subscription, sized to cover
    /// ARM's write refill (10/s) times the latency of one write (PUT, LRO, final read):
    /// NRP's operations take about 10 s (domain.md 4.5), so 128.
    pub max_write_concurrency: usize,
    /// Re-reads and re-plans of one resource after 412 before giving up.
    pub max_replans: u32,
    /// NRP's write window per subscription (domain.md 4.8: 1,000 per 5 minutes), shared by
    /// every apply of this pipeline (`azure::pacing`).
    pub write_pacer: WritePacer,
    /// Service tags given explicitly (`--service-tags FILE`): when not empty, the only
    /// source; otherwise they are read from ARM (`observe::service_tag_sources`).
    pub service_tags: ServiceTags,
    /// Tags read from ARM, by location, shared by the runs of this pipeline.
    pub service_tag_cache: ServiceTagCache,
    /// How long tags read from ARM are reused: zero for the CLI (one read per location
    /// per run), the resync interval for the operator.
    pub service_tag_max_age: std::time::Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            max_concurrency: 8,
            max_write_concurrency: 128,
            max_replans: 5,
            write_pacer: WritePacer::nrp(),
            service_tags: ServiceTags::default(),
            service_tag_cache: ServiceTagCache::default(),
            service_tag_max_age: std::time::Duration::ZERO,
        }
    }
}

impl PipelineOptions {
    /// From the shared Azure flags (`--max-concurrency`, `--service-tags`).
    pub fn from_args(args: &crate::azure::AzureArgs) -> Result<Self, PipelineError> {
        let service_tags = match &args.service_tags {
            Some(path) => ServiceTags::load(path)?,
            None => ServiceTags::default(),
        };
        Ok(PipelineOptions {
            max_concurrency: args.max_concurrency.max(1),
            max_write_concurrency: args.max_write_concurrency.max(1),
            write_pacer: WritePacer::new(
                args.nrp_write_limit,
                std::time::Duration::from_secs(args.nrp_window_seconds.max(1)),
            ),
            service_tags,
            ..PipelineOptions::default()
        })
    }
}

/// What `plan` computed: the snapshot it read, the desired state, and the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOutcome {
    pub snapshot: Snapshot,
    pub desired: Desired,
    pub plan: Plan,
}

/// The first half of a plan: Azure observed for the specs ([`Pipeline::observe_for`]);
/// [`Observed::plan`] validates again, resolves and diffs. Between the two, a caller that
/// planned the same specs and scope from a snapshot of the same [`Observed::digest`] can
/// keep that plan: it would be this one (the controller's resync of a component nothing
/// changed in). The validated specs are not held meanwhile: ~20 MiB for a component of
/// 10,000 specs, which a kept plan never needs (issue 14's memory); validating them again
/// costs ~0.3 s there.
pub struct Observed<'a, S> {
    state: ObservedState<'a, S>,
}

enum ObservedState<'a, S> {
    Observed {
        specs: &'a [S],
        scope: &'a Scope,
        snapshot: Snapshot,
        detail: diff::Detail,
    },
    /// Planned in one step (an engine without the two halves): nothing to compare.
    Planned(PlanOutcome),
}

impl<S: Borrow<api::AseConnectivity> + Sync> Observed<'_, S> {
    /// A plan made in one step: it has no digest.
    pub fn planned(outcome: PlanOutcome) -> Self {
        Observed {
            state: ObservedState::Planned(outcome),
        }
    }

    /// The digest of the snapshot observed ([`digest`]); `None` for a plan made
    /// in one step.
    pub fn digest(&self) -> Option<SnapshotDigest> {
        match &self.state {
            ObservedState::Observed { snapshot, .. } => cpu_bound(|| digest(snapshot)),
            ObservedState::Planned(_) => None,
        }
    }

    /// Resolves and diffs (CPU-bound: [`cpu_bound`]).
    pub fn plan(self) -> PlanOutcome {
        match self.state {
            ObservedState::Observed {
                specs,
                scope,
                snapshot,
                detail,
            } => {
                let started = std::time::Instant::now();
                let (desired, plan) =
                    cpu_bound(|| Prepared::new(specs, scope).into_plan(&snapshot, detail));
                tracing::debug!(
                    specs = specs.len(),
                    validate_resolve_diff_ms = started.elapsed().as_millis() as u64,
                    "planned"
                );
                PlanOutcome {
                    snapshot,
                    desired,
                    plan,
                }
            }
            ObservedState::Planned(outcome) => outcome,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Arm(#[from] ArmError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl PipelineError {
    /// Transient errors are retried with backoff; permanent ones wait for a change.
    pub fn category(&self) -> ErrorCategory {
        match self {
            PipelineError::Arm(e) => e.category(),
            PipelineError::Observe(e) => e.category(),
            PipelineError::Apply(e) => e.category(),
        }
    }
}

/// The pipeline over one ARM client.
#[derive(Debug, Clone)]
pub struct Pipeline {
    arm: ArmClient,
    options: PipelineOptions,
}

/// Specs prepared for planning: validated, with the effective scope.
struct Prepared {
    /// Every valid spec, removed ones included (their resources are read): first those to
    /// resolve (not being removed, in the order given), then the removed ones. One vector,
    /// not two copies (a 10,000-spec component is planned whole).
    valid: Vec<ValidSpec>,
    /// How many of `valid` are resolved.
    active_len: usize,
    /// Validation errors by spec.
    invalid: BTreeMap<SpecKey, Vec<SpecError>>,
    scope: Scope,
}

impl Prepared {
    fn new<S: Borrow<api::AseConnectivity> + Sync>(specs: &[S], scope: &Scope) -> Self {
        let (mut valid, errors) = validate::validate_all(specs);
        // Refused specs (tenancy) are invalid specs: their refusals come first, so the
        // reason a status and an event show is `NotPermitted`.
        let mut invalid: BTreeMap<SpecKey, Vec<SpecError>> = scope.refused.clone();
        for e in errors {
            invalid.entry(e.spec.clone()).or_default().push(e);
        }
        // A part reports its own specs; the references' errors are their parts' to report.
        if let Some(part) = &scope.part {
            invalid.retain(|k, _| part.build.contains(k));
        }
        valid.retain(|v| !scope.refused.contains_key(&v.key));
        let mut scope = scope.clone();
        let policy: BTreeMap<SpecKey, DeletionPolicy> = valid
            .iter()
            .map(|v| (v.key.clone(), v.deletion_policy))
            .collect();
        // Orphan: leave Azure alone. The spec is neither resolved nor removed, and out of
        // scope, so the diff carries its entries unchanged as unknown-owner entries.
        let orphaned: BTreeSet<SpecKey> = scope
            .removing
            .iter()
            .filter(|k| policy.get(*k) == Some(&DeletionPolicy::Orphan))
            .cloned()
            .collect();
        let removed: BTreeSet<SpecKey> = scope.removing.clone();
        scope.removing.retain(|k| !orphaned.contains(k));
        scope.specs.retain(|k| !orphaned.contains(k));
        for v in valid.iter().filter(|v| scope.removing.contains(&v.key)) {
            if let Some(rt) = &v.route_table {
                scope
                    .route_tables
                    .entry(rt.clone())
                    .or_default()
                    .insert(v.key.clone());
            }
        }
        let (mut valid, leaving): (Vec<ValidSpec>, Vec<ValidSpec>) =
            valid.into_iter().partition(|v| !removed.contains(&v.key));
        let active_len = valid.len();
        valid.extend(leaving);
        Prepared {
            valid,
            active_len,
            invalid,
            scope,
        }
    }

    /// Valid specs to resolve (not being removed).
    fn active(&self) -> &[ValidSpec] {
        &self.valid[..self.active_len]
    }

    /// Every valid spec, removed ones included.
    fn all_valid(&self) -> &[ValidSpec] {
        &self.valid
    }

    /// What to read: the resources the specs planned touch, and the ASEs of the references
    /// of a part (their addresses are all a part reads of them).
    fn targets(&self) -> Targets {
        let Some(part) = &self.scope.part else {
            return Targets::of(self.all_valid());
        };
        let (planned, references): (Vec<&ValidSpec>, Vec<&ValidSpec>) =
            (self.valid.iter()).partition(|v| part.build.contains(&v.key));
        let mut targets = Targets::of(planned);
        targets
            .environments
            .extend(Targets::of(references).environments);
        targets
    }

    /// resolve + diff over `snapshot`: pure, used for the first plan and every re-plan.
    fn plan(&self, snapshot: &Snapshot, detail: diff::Detail) -> (Desired, Plan) {
        let desired = self.resolve(snapshot);
        let plan = diff::diff_with(&desired, snapshot, &self.scope, detail);
        (desired, plan)
    }

    /// [`Prepared::plan`] that drops the validated specs once resolved, before the diff:
    /// nothing in the plan needs them, and a component of 10,000 specs holds ~30 MiB of
    /// them (issue 14's memory).
    fn into_plan(self, snapshot: &Snapshot, detail: diff::Detail) -> (Desired, Plan) {
        let desired = self.resolve(snapshot);
        let Prepared {
            scope,
            valid,
            invalid,
            ..
        } = self;
        // Dropped here. Bound by `..`, they would stay in the partly moved `self` until it
        // leaves scope, after the diff (the heap profile of the sixteenth session found
        // them alive at the peak).
        drop((valid, invalid));
        let plan = diff::diff_with(&desired, snapshot, &scope, detail);
        (desired, plan)
    }

    /// The desired state of the active specs over `snapshot`, with the validation errors.
    fn resolve(&self, snapshot: &Snapshot) -> Desired {
        let removing = &self.scope.removing;
        let mut desired = match &self.scope.part {
            None => resolver::resolve_removing(self.active(), snapshot, removing),
            Some(part) => {
                let part = resolver::Part {
                    build: &part.build,
                    names: &part.names,
                };
                resolver::resolve_part(self.active(), snapshot, removing, &part)
            }
        };
        for (key, errors) in &self.invalid {
            desired
                .specs
                .entry(key.clone())
                .or_insert_with(|| SpecOutcome::Failed {
                    errors: errors.clone(),
                });
        }
        desired
    }
}

impl Pipeline {
    pub fn new(arm: ArmClient, options: PipelineOptions) -> Self {
        Pipeline { arm, options }
    }

    /// A pipeline from the shared Azure flags (the CLI and the operator).
    pub fn from_args(args: &crate::azure::AzureArgs) -> Result<Self, PipelineError> {
        let arm = ArmClient::from_args(args)?;
        Ok(Pipeline::new(arm, PipelineOptions::from_args(args)?))
    }

    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }

    pub fn options(&self) -> &PipelineOptions {
        &self.options
    }

    /// observe → validate → resolve → diff.
    pub async fn plan<S: Borrow<api::AseConnectivity> + Sync>(
        &self,
        specs: &[S],
        scope: &Scope,
    ) -> Result<PlanOutcome, PipelineError> {
        self.plan_with(specs, scope, diff::Detail::Full).await
    }

    /// [`Pipeline::plan`] whose plan carries the entries `detail` asks for (the controller:
    /// [`diff::Detail::Writes`]).
    pub async fn plan_with<S: Borrow<api::AseConnectivity> + Sync>(
        &self,
        specs: &[S],
        scope: &Scope,
        detail: diff::Detail,
    ) -> Result<PlanOutcome, PipelineError> {
        let started = std::time::Instant::now();
        let prepared = cpu_bound(|| Prepared::new(specs, scope));
        let validated = started.elapsed();
        let snapshot = self.observe_in(prepared.targets(), scope).await?;
        let observed = started.elapsed();
        let (desired, plan) = cpu_bound(|| prepared.into_plan(&snapshot, detail));
        tracing::debug!(
            specs = specs.len(),
            validate_ms = validated.as_millis() as u64,
            observe_ms = (observed - validated).as_millis() as u64,
            resolve_diff_ms = (started.elapsed() - observed).as_millis() as u64,
            "planned"
        );
        Ok(PlanOutcome {
            snapshot,
            desired,
            plan,
        })
    }

    /// The first half of [`Pipeline::plan_with`]: observe what the valid specs touch.
    /// [`Observed::plan`] is the second.
    pub async fn observe_for<'a, S: Borrow<api::AseConnectivity> + Sync>(
        &self,
        specs: &'a [S],
        scope: &'a Scope,
        detail: diff::Detail,
    ) -> Result<Observed<'a, S>, PipelineError> {
        let started = std::time::Instant::now();
        // What to read, without holding the validated specs through the reads.
        let targets = cpu_bound(|| Prepared::new(specs, scope).targets());
        let validated = started.elapsed();
        let snapshot = self.observe_in(targets, scope).await?;
        tracing::debug!(
            specs = specs.len(),
            validate_ms = validated.as_millis() as u64,
            observe_ms = (started.elapsed() - validated).as_millis() as u64,
            "observed"
        );
        Ok(Observed {
            state: ObservedState::Observed {
                specs,
                scope,
                snapshot,
                detail,
            },
        })
    }

    /// The digest of what [`Pipeline::observe_for`] would read for `specs` and `scope`
    /// (whole, not a part), each resource digested as it arrives and none kept: a
    /// component's resync that only compares ([`Digests`]). The specs are validated a
    /// slice at a time, for what to read.
    pub async fn observe_digest<S: Borrow<api::AseConnectivity> + Sync>(
        &self,
        specs: &[S],
        scope: &Scope,
    ) -> Result<Option<SnapshotDigest>, PipelineError> {
        const SLICE: usize = 1000;
        let started = std::time::Instant::now();
        let targets = cpu_bound(|| {
            let mut targets = Targets::default();
            for slice in specs.chunks(SLICE) {
                targets.extend(Prepared::new(slice, scope).targets());
            }
            targets
        });
        let tags = TagOptions {
            explicit: &self.options.service_tags,
            cache: &self.options.service_tag_cache,
            max_age: self.options.service_tag_max_age,
        };
        let mut gathered = DigestGather::default();
        let concurrency = self.options.max_concurrency;
        observe::observe_into(&self.arm, &targets, &tags, &mut gathered, concurrency).await?;
        tracing::debug!(
            specs = specs.len(),
            observe_ms = started.elapsed().as_millis() as u64,
            "observed for a digest"
        );
        Ok(gathered.digests.finish())
    }

    /// Reads what `specs` touch.
    pub async fn observe(&self, specs: &[ValidSpec]) -> Result<Snapshot, PipelineError> {
        self.observe_targets(&Targets::of(specs)).await
    }

    /// Reads `targets` for a plan in `scope`. A part of a component
    /// ([`diff::Scope::part`]) takes the ASEs an earlier part of the same plan read
    /// ([`diff::ReadEnvironments`]) rather than reading them again.
    async fn observe_in(
        &self,
        mut targets: Targets,
        scope: &Scope,
    ) -> Result<Snapshot, PipelineError> {
        let read_by_parts = scope.part.as_ref().map(|p| &p.environments);
        let known = read_by_parts.map(|r| r.take_known(&mut targets.environments));
        let mut snapshot = self.observe_targets(&targets).await?;
        if let Some(read) = read_by_parts {
            read.remember(snapshot.environments.values());
        }
        for env in known.into_iter().flatten() {
            snapshot.environments.insert(env.id.clone(), env);
        }
        Ok(snapshot)
    }

    async fn observe_targets(&self, targets: &Targets) -> Result<Snapshot, PipelineError> {
        let tags = TagOptions {
            explicit: &self.options.service_tags,
            cache: &self.options.service_tag_cache,
            max_age: self.options.service_tag_max_age,
        };
        Ok(
            observe::observe_with_tags(&self.arm, targets, &tags, self.options.max_concurrency)
                .await?,
        )
    }

    /// Executes `outcome.plan` (as computed by `plan`, possibly narrowed by the caller).
    /// A 412 re-reads that resource and re-plans it from the same specs and scope.
    pub async fn apply(
        &self,
        specs: &[api::AseConnectivity],
        scope: &Scope,
        outcome: PlanOutcome,
        progress: &(dyn Fn(ApplyEvent) + Send + Sync),
    ) -> Result<ApplyReport, PipelineError> {
        let snapshot = std::borrow::Cow::Owned(outcome.snapshot);
        self.apply_plan(specs, scope, snapshot, &outcome.plan, progress)
            .await
    }

    /// [`Pipeline::apply`] of `plan` computed from `snapshot`, for callers that keep the
    /// plan, the snapshot and the desired state for themselves: nothing of theirs is copied
    /// (a borrowed snapshot is copied only if a 412 makes the apply re-read a resource).
    pub async fn apply_plan<S: Borrow<api::AseConnectivity> + Sync>(
        &self,
        specs: &[S],
        scope: &Scope,
        snapshot: std::borrow::Cow<'_, Snapshot>,
        plan: &Plan,
        progress: &(dyn Fn(ApplyEvent) + Send + Sync),
    ) -> Result<ApplyReport, PipelineError> {
        // Deletions and dissociations are in the plan too.
        if !plan.has_changes() {
            return Ok(ApplyReport::default());
        }
        // Validated only if a 412 makes the apply re-plan: the validated specs of a
        // 10,000-spec component are not held through every apply (issue 14's memory).
        let prepared = std::sync::OnceLock::new();
        let replanner = |snapshot: &Snapshot| {
            prepared
                .get_or_init(|| Prepared::new(specs, scope))
                .plan(snapshot, diff::Detail::Full)
                .1
        };
        let options = ApplyOptions {
            max_concurrency: self.options.max_concurrency,
            max_write_concurrency: self.options.max_write_concurrency,
            max_replans: self.options.max_replans,
            pacer: self.options.write_pacer.clone(),
        };
        Ok(apply::execute(&self.arm, snapshot, plan, &replanner, &options, progress).await?)
    }

    /// Reads the live NSGs and evaluates every required flow of every spec.
    pub async fn verify(
        &self,
        specs: &[api::AseConnectivity],
    ) -> Result<VerifyReport, PipelineError> {
        self.verify_in(specs, &Scope::default()).await
    }

    /// `verify` where the specs in `scope.refused` (tenancy) are reported as errors and not
    /// read.
    pub async fn verify_in(
        &self,
        specs: &[api::AseConnectivity],
        scope: &Scope,
    ) -> Result<VerifyReport, PipelineError> {
        let prepared = Prepared::new(specs, scope);
        let snapshot = self.observe(prepared.all_valid()).await?;
        let desired = resolver::resolve(prepared.active(), &snapshot);
        Ok(verify::verify(
            prepared.active(),
            prepared.invalid.values().flatten(),
            &desired,
            &snapshot,
        ))
    }
}

/// The key of a spec (`default` namespace when none is set, as kubectl would); see
/// [`api::AseConnectivity::spec_key`].
pub fn spec_key(spec: &api::AseConnectivity) -> SpecKey {
    spec.spec_key()
}

/// Every spec key in `specs` (the scope a CLI run plans: exactly the files given).
pub fn scope_of(specs: &[api::AseConnectivity]) -> Scope {
    Scope::new(specs.iter().map(spec_key), [])
}

/// `scope_of(specs)` with the refusals of `policy` (tenancy): the specs it refuses write
/// nothing, and the entries they own stay as they are.
pub fn scope_under(specs: &[api::AseConnectivity], policy: &crate::tenancy::PolicySet) -> Scope {
    scope_of(specs).with_refused(policy.refusals(specs))
}

/// Specs whose `mode` forbids writing to Azure (`Plan`, `Observe`).
pub fn read_only_specs<'a>(
    specs: impl IntoIterator<Item = &'a api::AseConnectivity>,
) -> BTreeSet<SpecKey> {
    specs
        .into_iter()
        .filter(|s| s.spec.mode != api::Mode::Apply)
        .map(spec_key)
        .collect()
}

/// The contributors of `resource` that forbid writing it. A parent is written whole (one
/// PUT carries every contributor's rules), so one read-only contributor withholds the write
/// of the whole resource; the CLI and the operator both follow this rule.
pub fn withheld_by(resource: &ResourcePlan, read_only: &BTreeSet<SpecKey>) -> BTreeSet<SpecKey> {
    resource.owners.intersection(read_only).cloned().collect()
}
