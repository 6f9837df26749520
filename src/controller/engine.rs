//! The seam between the controller and the pipeline (docs/design.md section 3).
//!
//! The controller never talks to ARM itself: it asks an [`Engine`] to plan (observe →
//! validate → resolve → diff) and to apply a plan. In production and in the controller
//! tests the engine is the real [`crate::pipeline::Pipeline`] (the tests point it at the
//! in-process mock ARM); the trait only keeps `Context` free of the pipeline's generics and
//! lets the controller decide *which part* of a plan is written.

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::api::AseConnectivity;
use crate::azure::ErrorCategory;
use crate::diff::Scope;
use crate::pipeline::{ApplyEvent, ApplyReport, Pipeline, PipelineError, PlanOutcome};

/// A failed plan or apply.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// Whether retrying can help: ARM throttling (429), 5xx, timeouts, 412 after
    /// re-planning are `Transient` (back off and retry); what only a change of the spec or
    /// of Azure can fix (403, 400 from ARM...) is `Permanent`. The category of the error
    /// that failed, as the ARM layer decided it (one vocabulary, issue 15).
    pub category: ErrorCategory,
    pub message: String,
}

impl From<PipelineError> for EngineError {
    fn from(e: PipelineError) -> Self {
        let category = e.category();
        // The whole chain: "failed to write NSG x: 403 AuthorizationFailed: ...".
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        EngineError { category, message }
    }
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
        specs: &'a [AseConnectivity],
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Planned, EngineError>>;

    /// Executes `planned.plan` (which the controller may have narrowed to the resources it
    /// is allowed to write).
    fn apply<'a>(
        &'a self,
        specs: &'a [AseConnectivity],
        scope: &'a Scope,
        planned: Planned,
    ) -> BoxFuture<'a, Result<ApplyReport, EngineError>>;
}

fn log_progress(event: ApplyEvent) {
    tracing::debug!(?event, "apply progress");
}

impl Engine for Pipeline {
    fn plan<'a>(
        &'a self,
        specs: &'a [AseConnectivity],
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Planned, EngineError>> {
        async move { Ok(Pipeline::plan(self, specs, scope).await?) }.boxed()
    }

    fn apply<'a>(
        &'a self,
        specs: &'a [AseConnectivity],
        scope: &'a Scope,
        planned: Planned,
    ) -> BoxFuture<'a, Result<ApplyReport, EngineError>> {
        async move { Ok(Pipeline::apply(self, specs, scope, planned, &log_progress).await?) }
            .boxed()
    }
}
