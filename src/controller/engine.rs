//! The seam between the controller and the pipeline (docs/design.md section 3).
//!
//! The controller never talks to ARM itself: it asks an [`Engine`] to plan (observe →
//! validate → resolve → diff) and to apply a plan. In production and in the controller
//! tests the engine is the real [`crate::pipeline::Pipeline`] (the tests point it at the
//! in-process mock ARM); the trait only keeps `Context` free of the pipeline's generics and
//! lets the controller decide *which part* of a plan is written.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::api::AseConnectivity;
use crate::diff::{Plan, Scope};
use crate::pipeline::{
    ApplyEvent, ApplyReport, Observed, Pipeline, PipelineError, PlanOutcome, SnapshotDigest,
};
use crate::snapshot::Snapshot;

/// The whole chain of a failed plan or apply, for logs and the `AzureUnavailable`
/// condition: "failed to write NSG x: 403 AuthorizationFailed: ...".
pub fn describe(e: &PipelineError) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// The result of planning: the snapshot it was computed from, the desired state (per spec
/// outcomes included) and the plan.
pub type Planned = PlanOutcome;

/// Plans and applies for the controller.
pub trait Engine: Send + Sync {
    /// Observes Azure and plans every resource the specs touch. `specs` are all specs in the
    /// controller's store, so merged NSGs are computed whole.
    fn plan<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Planned, PipelineError>>;

    /// [`Engine::plan`] in two halves: this one observes Azure for the specs,
    /// [`Observed::plan`] resolves and diffs. A caller holding the plan of the same specs
    /// and scope over a snapshot of the same [`Observed::digest`] keeps it instead (a
    /// resync of a component in which nothing changed). By default the engine plans in one
    /// step, without a digest, so nothing is kept.
    fn observe<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Observed<'a, Arc<AseConnectivity>>, PipelineError>> {
        self.plan(specs, scope)
            .map(|planned| planned.map(Observed::planned))
            .boxed()
    }

    /// The digest of what [`Engine::observe`] reads for the specs (`pipeline::Digests`),
    /// for a caller that only compares it. By default, observed and digested whole.
    fn observe_digest<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Option<SnapshotDigest>, PipelineError>> {
        self.observe(specs, scope)
            .map(|observed| observed.map(|o| o.digest()))
            .boxed()
    }

    /// Executes `plan` (which the controller may have narrowed to the resources it is
    /// allowed to write), computed from `snapshot`.
    fn apply<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
        snapshot: &'a Snapshot,
        plan: &'a Plan,
    ) -> BoxFuture<'a, Result<ApplyReport, PipelineError>>;
}

fn log_progress(event: ApplyEvent) {
    tracing::debug!(?event, "apply progress");
}

impl Engine for Pipeline {
    fn plan<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Planned, PipelineError>> {
        // Kept and foreign entries only where written: the reports read none
        // (`context::Shared`), and a component of 10,000 specs keeps ~200,000 rules.
        Pipeline::plan_with(self, specs, scope, crate::diff::Detail::Writes).boxed()
    }

    fn observe<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Observed<'a, Arc<AseConnectivity>>, PipelineError>> {
        Pipeline::observe_for(self, specs, scope, crate::diff::Detail::Writes).boxed()
    }

    fn observe_digest<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Option<SnapshotDigest>, PipelineError>> {
        Pipeline::observe_digest(self, specs, scope).boxed()
    }

    fn apply<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
        snapshot: &'a Snapshot,
        plan: &'a Plan,
    ) -> BoxFuture<'a, Result<ApplyReport, PipelineError>> {
        let snapshot = std::borrow::Cow::Borrowed(snapshot);
        async move { Pipeline::apply_plan(self, specs, scope, snapshot, plan, &log_progress).await }
            .boxed()
    }
}
