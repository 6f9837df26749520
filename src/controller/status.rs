//! The status the controller reports for one spec, computed from a plan (pure: the caller
//! passes the previous status and `now`).
//!
//! Conditions follow metav1.Condition semantics: one entry per type, `lastTransitionTime`
//! changes only when `status` flips, reasons are CamelCase and stable, messages say what a
//! person can do. The types:
//!
//! | type | True when |
//! | --- | --- |
//! | `Ready` | the controller did what the mode asks: `Apply` converged Azure; `Plan`/`Observe` computed the plan |
//! | `Resolved` | the spec validated and every reference (environmentRef, subnet, ASE) resolved |
//! | `InSync` | Azure matches the desired rules and routes of every resource the spec touches |
//! | `Degraded` | something needs a person: an invalid spec, an unresolvable reference, a full band, a foreign rule in conflict |
//!
//! The status is written only when [`AseConnectivityStatus`] differs from the previous one,
//! so a resync of a converged spec causes no write.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{AseConnectivityStatus, Mode, OwnedRuleStatus, PlanSummary, ResolvedAddresses};
use crate::diff::ResourcePlan;
use crate::error::SpecError;
use crate::model::{ResourceId, SpecKey};
use crate::resolver::{Desired, DesiredNsg, DesiredRouteTable, Resolution};

pub const READY: &str = "Ready";
pub const RESOLVED: &str = "Resolved";
pub const IN_SYNC: &str = "InSync";
pub const DEGRADED: &str = "Degraded";

/// What one reconcile found for a spec.
pub enum Finding<'a> {
    /// Validation or resolution failed: nothing was planned for the spec.
    SpecFailed { errors: &'a [SpecError] },
    /// The spec was planned (and, in mode Apply, what it may write was applied).
    Planned(PlannedFinding<'a>),
    /// ARM could not be reached or answered with a retryable error.
    Unavailable { message: String },
}

pub struct PlannedFinding<'a> {
    pub resolution: &'a Resolution,
    /// The rules and routes the spec owns in the desired state ([`owned_rules`]).
    pub rules: Vec<OwnedRuleStatus>,
    /// Changes still outstanding after this reconcile (all of them in Plan/Observe mode).
    pub pending: PlanSummary,
    /// Changes written by this reconcile.
    pub applied: PlanSummary,
    /// Shared resources not written because a co-owner is not in mode Apply, with the specs
    /// that block them.
    pub blocked: Vec<(ResourceId, BTreeSet<SpecKey>)>,
    /// Problems with foreign entries in resources the spec touches.
    pub conflicts: Vec<String>,
}

/// Counts the rule, route and association changes of some resource plans, as the CLI's
/// plan summary counts them (`ResourcePlan::counts`).
pub fn summarise<'a>(resources: impl IntoIterator<Item = &'a ResourcePlan>) -> PlanSummary {
    summarise_counts(resources.into_iter().map(ResourcePlan::counts))
}

/// [`summarise`] of `(create, update, delete)` counts ([`ResourcePlan::counts`]).
pub fn summarise_counts(counts: impl IntoIterator<Item = (usize, usize, usize)>) -> PlanSummary {
    let mut s = PlanSummary::default();
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    for (c, u, d) in counts {
        s.create = s.create.saturating_add(n(c));
        s.update = s.update.saturating_add(n(u));
        s.delete = s.delete.saturating_add(n(d));
    }
    s.total = s.create.saturating_add(s.update).saturating_add(s.delete);
    s
}

/// True when a resource plan needs a write.
pub fn has_changes(r: &ResourcePlan) -> bool {
    r.has_changes()
}

fn describe(s: &PlanSummary) -> String {
    format!(
        "{} change{} ({} create, {} update, {} delete)",
        s.total,
        if s.total == 1 { "" } else { "s" },
        s.create,
        s.update,
        s.delete
    )
}

/// The owned rules and routes of one spec in the desired state, with their reasons.
pub fn owned_rules(desired: &Desired, key: &SpecKey) -> Vec<OwnedRuleStatus> {
    all_owned_rules(desired)
        .filter(|(owner, _)| *owner == key)
        .map(|(_, rule)| rule)
        .collect()
}

/// Every owned rule and route of the desired state with its owner: NSGs first, then route
/// tables, each in the desired state's order ([`owned_rules`] of one owner is this, filtered).
pub fn all_owned_rules(desired: &Desired) -> impl Iterator<Item = (&SpecKey, OwnedRuleStatus)> {
    all_owned_entries(desired).map(|e| (e.owner, e.status()))
}

/// One owned rule or route of the desired state, borrowed: what its status says, before
/// any of it is copied.
#[derive(Debug, Clone, Copy)]
pub struct OwnedEntry<'a> {
    pub owner: &'a SpecKey,
    pub parent: &'a ResourceId,
    pub name: &'a str,
    /// `None` for a route.
    pub priority: Option<u32>,
    pub reason: &'a Arc<str>,
}

impl OwnedEntry<'_> {
    pub fn status(&self) -> OwnedRuleStatus {
        OwnedRuleStatus {
            parent: self.parent.to_string(),
            name: self.name.to_string(),
            priority: self.priority,
            reason: self.reason.to_string(),
        }
    }
}

/// [`all_owned_rules`] borrowed, with each entry's parent id.
pub fn all_owned_entries(desired: &Desired) -> impl Iterator<Item = OwnedEntry<'_>> {
    let rules = desired
        .network_security_groups
        .values()
        .flat_map(nsg_entries);
    let routes = desired.route_tables.values().flat_map(route_table_entries);
    rules.chain(routes)
}

/// The owned rules of one desired NSG, in order.
pub fn nsg_entries(nsg: &DesiredNsg) -> impl Iterator<Item = OwnedEntry<'_>> {
    nsg.rules.iter().map(move |r| OwnedEntry {
        owner: &r.owner,
        parent: &nsg.id,
        name: &r.rule.name,
        priority: Some(r.rule.priority),
        reason: &r.reason,
    })
}

/// The owned routes of one desired route table, in order.
pub fn route_table_entries(rt: &DesiredRouteTable) -> impl Iterator<Item = OwnedEntry<'_>> {
    rt.routes.iter().map(move |r| OwnedEntry {
        owner: &r.owner,
        parent: &rt.id,
        name: &r.route.name,
        priority: None,
        reason: &r.reason,
    })
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: None,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

fn unknown(type_: &str, reason: &str, message: String) -> Condition {
    Condition {
        status: "Unknown".to_string(),
        ..condition(type_, false, reason, message)
    }
}

/// Sets a condition, keeping `lastTransitionTime` when the status did not flip.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    mut new: Condition,
    generation: Option<i64>,
    now: &Time,
) {
    new.observed_generation = generation;
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                now.clone()
            };
            *old = new;
        }
        None => {
            new.last_transition_time = now.clone();
            conditions.push(new);
        }
    }
}

/// Every error of a spec, `field: message; ...` (the `Resolved` condition's message).
pub fn spec_error_message(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The status after a reconcile. `prev` is the status the object carried.
pub fn next_status(
    prev: Option<&AseConnectivityStatus>,
    generation: Option<i64>,
    mode: Mode,
    finding: &Finding<'_>,
    now: &Time,
) -> AseConnectivityStatus {
    let mut status = prev.cloned().unwrap_or_default();
    let conditions = match finding {
        // Only Ready changes: what was resolved and planned before is still the best
        // knowledge; the error is retried with backoff.
        Finding::Unavailable { message } => vec![condition(
            READY,
            false,
            "AzureUnavailable",
            format!("{message}; retrying with backoff"),
        )],
        Finding::SpecFailed { errors } => {
            status.observed_generation = generation;
            status.plan = None;
            spec_failed(errors)
        }
        Finding::Planned(p) => {
            status.observed_generation = generation;
            status.addresses = Some(ResolvedAddresses {
                internet: p
                    .resolution
                    .internet_addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
                virtual_network: Some(p.resolution.virtual_network_range.to_string()),
            });
            status.plan = Some(p.pending);
            status.rules = p.rules.clone();
            planned(p, mode)
        }
    };
    for c in conditions {
        set_condition(&mut status.conditions, c, generation, now);
    }
    order(status)
}

/// Ready, Resolved, InSync and Degraded of a spec that could not be planned.
fn spec_failed(errors: &[SpecError]) -> Vec<Condition> {
    let reason = errors
        .first()
        .map(|e| e.kind.as_str())
        .unwrap_or("InvalidField");
    let message = spec_error_message(errors);
    vec![
        condition(READY, false, reason, message.clone()),
        condition(RESOLVED, false, reason, message.clone()),
        unknown(
            IN_SYNC,
            "NotPlanned",
            "the spec could not be planned; the rules and routes it owns in Azure are left as they are".into(),
        ),
        condition(
            DEGRADED,
            true,
            reason,
            format!("{message}; fix the spec (asenet retries when it or what it references changes)"),
        ),
    ]
}

/// Resolved, InSync, Ready and Degraded (in the order they are set) of a planned spec.
fn planned(p: &PlannedFinding<'_>, mode: Mode) -> Vec<Condition> {
    let internet = p
        .resolution
        .internet_addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let resolved = condition(
        RESOLVED,
        true,
        "Resolved",
        format!(
            "callees outside the topology see {}; callees inside see {}",
            if internet.is_empty() {
                "no address"
            } else {
                &internet
            },
            p.resolution.virtual_network_range
        ),
    );
    let pending = describe(&p.pending);
    let (in_sync, reason, message) = in_sync(p, mode, &pending);
    let ready = match mode {
        Mode::Apply => condition(
            READY,
            in_sync,
            if in_sync { "Converged" } else { reason },
            if in_sync {
                "Azure has the rules and routes this spec needs".to_string()
            } else {
                message.clone()
            },
        ),
        Mode::Plan => condition(
            READY,
            true,
            "Planned",
            format!("plan computed ({pending}); mode Plan never writes to Azure"),
        ),
        Mode::Observe => condition(
            READY,
            true,
            "Observed",
            format!("Azure observed ({pending} pending); mode Observe never writes to Azure"),
        ),
    };
    let degraded = if p.conflicts.is_empty() {
        condition(DEGRADED, false, "Healthy", "no problems found".to_string())
    } else {
        condition(
            DEGRADED,
            true,
            "ForeignConflict",
            format!(
                "{}; asenet never changes rules it does not own: fix or remove them in Azure",
                p.conflicts.join("; ")
            ),
        )
    };
    vec![
        resolved,
        condition(IN_SYNC, in_sync, reason, message),
        ready,
        degraded,
    ]
}

/// Whether Azure matches the spec after the reconcile, with the InSync reason and message.
fn in_sync(p: &PlannedFinding<'_>, mode: Mode, pending: &str) -> (bool, &'static str, String) {
    if p.pending.total == 0 {
        return if p.applied.total > 0 {
            (true, "Applied", format!("applied {}", describe(&p.applied)))
        } else {
            (
                true,
                "NoChanges",
                "Azure matches the desired rules and routes".to_string(),
            )
        };
    }
    match mode {
        Mode::Plan => (
            false,
            "ChangesPlanned",
            format!("{pending} planned, see status.plan; mode Plan never writes: set spec.mode to Apply to apply them"),
        ),
        Mode::Observe => (
            false,
            "DriftDetected",
            format!("{pending} between Azure and the spec; mode Observe only reports: set spec.mode to Apply to converge"),
        ),
        Mode::Apply => {
            let blocked = p
                .blocked
                .iter()
                .map(|(id, by)| {
                    let by: Vec<String> = by.iter().map(|k| k.to_string()).collect();
                    format!("{} (shared with {})", id.name(), by.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ");
            (
                false,
                "SharedResourceNotApplied",
                format!("{pending} not written: {blocked} is shared with specs not in mode Apply; set every contributing spec to mode Apply"),
            )
        }
    }
}

/// Conditions in a fixed order (Ready, Resolved, InSync, Degraded), so that equal states
/// compare equal.
fn order(mut status: AseConnectivityStatus) -> AseConnectivityStatus {
    let rank = |t: &str| match t {
        READY => 0,
        RESOLVED => 1,
        IN_SYNC => 2,
        DEGRADED => 3,
        _ => 4,
    };
    status.conditions.sort_by_key(|c| rank(&c.type_));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn last_transition_time_changes_only_when_the_status_flips() {
        let mut conds = vec![];
        set_condition(
            &mut conds,
            condition(READY, false, "A", "a".into()),
            Some(1),
            &t(10),
        );
        set_condition(
            &mut conds,
            condition(READY, false, "B", "b".into()),
            Some(2),
            &t(20),
        );
        assert_eq!(conds[0].last_transition_time, t(10));
        assert_eq!(conds[0].reason, "B");
        assert_eq!(conds[0].observed_generation, Some(2));
        set_condition(
            &mut conds,
            condition(READY, true, "C", "c".into()),
            Some(2),
            &t(30),
        );
        assert_eq!(conds[0].last_transition_time, t(30));
        assert_eq!(conds.len(), 1);
    }
}

/// A stable summary of a transient Azure error for the `AzureUnavailable` condition: what
/// kind of failure it was (reading or writing; HTTP status and ARM error code, no response,
/// a long-running operation), never the changing parts (resource names, request ids,
/// retry times). A repeated failure of the same kind then gives the same status, so it is
/// not rewritten: the status write would wake the spec at once and skip `error_policy`'s
/// backoff. The full message goes to the log.
pub fn transient_summary(message: &str) -> String {
    let op = if message.starts_with("reading ") {
        "reading from Azure"
    } else if message.starts_with("writing ") {
        "writing to Azure"
    } else {
        "calling Azure"
    };
    let what = if let Some(at) = message.find("HTTP ") {
        // "HTTP 429 SubscriptionRequestsThrottled: ..." → "HTTP 429 SubscriptionRequestsThrottled"
        let rest = &message[at + 5..];
        let mut words = rest.split([' ', ':']).filter(|w| !w.is_empty());
        match (words.next(), words.next()) {
            (Some(code), Some(arm)) if code.chars().all(|c| c.is_ascii_digit()) => {
                format!("HTTP {code} {arm}")
            }
            (Some(code), _) if code.chars().all(|c| c.is_ascii_digit()) => format!("HTTP {code}"),
            _ => "an HTTP error".to_string(),
        }
    } else if message.contains("no response from ARM") {
        "no response from ARM".to_string()
    } else if message.contains("long-running operation still") {
        "a long-running operation did not finish in time".to_string()
    } else if message.contains("long-running operation ended") {
        "a long-running operation failed".to_string()
    } else if message.contains("cannot get an ARM token") {
        "cannot get an ARM token".to_string()
    } else {
        "a transient error".to_string()
    };
    format!("{op} failed: {what}")
}

#[cfg(test)]
mod transient_tests {
    use super::*;

    #[test]
    fn the_transient_summary_is_stable_across_resources_and_attempts() {
        let a = transient_summary("reading /subscriptions/1/resourceGroups/n/providers/Microsoft.Network/networkSecurityGroups/a: GET /subscriptions/1/.../a: HTTP 429 SubscriptionRequestsThrottled: retry after 4 s (request 1f2e)");
        let b = transient_summary("reading /subscriptions/1/resourceGroups/n/providers/Microsoft.Network/networkSecurityGroups/b: GET /subscriptions/1/.../b: HTTP 429 SubscriptionRequestsThrottled: retry after 17 s (request 9a0c)");
        assert_eq!(a, b);
        assert_eq!(
            a,
            "reading from Azure failed: HTTP 429 SubscriptionRequestsThrottled"
        );
        assert_eq!(
            transient_summary("writing x: PUT x: HTTP 503 ServiceUnavailable: busy"),
            "writing to Azure failed: HTTP 503 ServiceUnavailable"
        );
        assert_eq!(
            transient_summary("reading y: GET y: no response from ARM: connection reset"),
            "reading from Azure failed: no response from ARM"
        );
        assert_eq!(
            transient_summary("something else"),
            "calling Azure failed: a transient error"
        );
    }

    #[test]
    fn a_repeated_transient_failure_does_not_change_the_status() {
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t2 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let first = Finding::Unavailable {
            message: transient_summary(
                "reading a: GET a: HTTP 429 SubscriptionRequestsThrottled: retry after 3 s",
            ),
        };
        let s1 = next_status(None, Some(1), Mode::Apply, &first, &t1);
        let again = Finding::Unavailable {
            message: transient_summary(
                "reading b: GET b: HTTP 429 SubscriptionRequestsThrottled: retry after 9 s",
            ),
        };
        let s2 = next_status(Some(&s1), Some(1), Mode::Apply, &again, &t2);
        assert_eq!(s1, s2, "same status: no write, the backoff applies");
        let ready = s2.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, "AzureUnavailable");
        assert!(
            ready
                .message
                .contains("HTTP 429 SubscriptionRequestsThrottled"),
            "{}",
            ready.message
        );
    }
}
