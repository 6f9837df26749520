//! Prometheus metrics of the operator, served on `/metrics` by [`super::http`].
//!
//! Labels are low-cardinality on purpose (docs/style.md rule 10): an error category, a mode,
//! an HTTP verb and status, a change kind. Never a spec name or a resource id: those belong
//! in logs, events and status.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The mode label of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are written as Prometheus users expect them
pub enum ModeLabel {
    apply,
    plan,
    observe,
    cleanup,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: ModeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `crate::error::Category::as_str`: `Transient`, `Permanent`, `InvalidField`,
    /// `UnresolvedReference`, `BandFull`, `LimitExceeded`, `NotPermitted`, `Kube`,
    /// `CleanupBlocked`, `TenancyNotReady` (the spelling of condition reasons and plan JSON).
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArmLabels {
    pub verb: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// `create`, `update` or `delete`.
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentPlanLabels {
    /// `planned` (resolved and diffed) or `unchanged` (Azure held what the component's
    /// outcome was planned from: kept without resolving).
    pub outcome: String,
}

/// Every metric the controller exports, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ModeLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub arm_requests: Family<ArmLabels, Counter>,
    pub planned_changes: Family<ChangeLabels, Counter>,
    pub applied_changes: Family<ChangeLabels, Counter>,
    pub drift_detected: Counter,
    pub component_plans: Family<ComponentPlanLabels, Counter>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("asenet");
        let reconciles = Family::<ModeLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of AseConnectivity specs, by mode",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by error category",
            errors.clone(),
        );
        let reconcile_duration =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile (observe, plan, apply, status)",
            prometheus_client::registry::Unit::Seconds,
            reconcile_duration.clone(),
        );
        let arm_requests = Family::<ArmLabels, Counter>::default();
        registry.register(
            "arm_requests",
            "Azure Resource Manager requests, by HTTP verb and response status",
            arm_requests.clone(),
        );
        let planned_changes = Family::<ChangeLabels, Counter>::default();
        registry.register(
            "planned_changes",
            "Rule, route and association changes found by a plan",
            planned_changes.clone(),
        );
        let applied_changes = Family::<ChangeLabels, Counter>::default();
        registry.register(
            "applied_changes",
            "Rule, route and association changes written to Azure",
            applied_changes.clone(),
        );
        let drift_detected = Counter::default();
        registry.register(
            "drift_detected",
            "Reconciles that found changes for a spec whose status said InSync",
            drift_detected.clone(),
        );
        let component_plans = Family::<ComponentPlanLabels, Counter>::default();
        registry.register(
            "component_plans",
            "Components observed in Azure to be planned: planned (resolved and diffed) or unchanged (Azure held what their outcome was planned from; kept without resolving)",
            component_plans.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            reconcile_duration,
            arm_requests,
            planned_changes,
            applied_changes,
            drift_detected,
            component_plans,
            leader,
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The text exposition format (`/metrics`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// A component observed in Azure: `planned`, or kept `unchanged`.
    pub fn count_component_plan(&self, unchanged: bool) {
        let outcome = if unchanged { "unchanged" } else { "planned" };
        self.component_plans
            .get_or_create(&ComponentPlanLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn count_reconcile(&self, mode: ModeLabel) {
        self.reconciles.get_or_create(&ModeLabels { mode }).inc();
    }

    pub fn count_error(&self, category: crate::error::Category) {
        self.errors
            .get_or_create(&ErrorLabels {
                category: category.as_str().to_string(),
            })
            .inc();
    }

    pub fn count_changes(&self, applied: bool, summary: &crate::api::PlanSummary) {
        let family = if applied {
            &self.applied_changes
        } else {
            &self.planned_changes
        };
        for (action, n) in [
            ("create", summary.create),
            ("update", summary.update),
            ("delete", summary.delete),
        ] {
            if n > 0 {
                family
                    .get_or_create(&ChangeLabels {
                        action: action.to_string(),
                    })
                    .inc_by(u64::from(n));
            }
        }
    }

    /// Records one ARM response (called by the ARM client's observer hook).
    pub fn count_arm_request(&self, verb: &str, status: u16) {
        self.arm_requests
            .get_or_create(&ArmLabels {
                verb: verb.to_ascii_uppercase(),
                status,
            })
            .inc();
    }

    /// Starts a timer that observes the reconcile duration when dropped.
    pub fn time_reconcile(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            start: Instant::now(),
            histogram: &self.reconcile_duration,
        }
    }
}

/// Observes the elapsed time into the duration histogram on drop (every exit path counts).
pub struct ReconcileTimer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Counts every ARM HTTP attempt, by verb and status (`asenet_arm_requests_total`).
impl crate::azure::ArmObserver for Metrics {
    fn on_response(&self, method: &str, _resource_type: &str, status: u16) {
        self.count_arm_request(method, status);
    }
}
