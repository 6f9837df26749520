//! `verify`: every required flow of every resolved spec evaluated against the observed
//! NSGs, and every destination its forced tunneling promises against the observed route
//! tables. Pure: the pipeline observes and resolves, then calls [`verify`]; the report goes
//! to `report::verify` (text) or to serde (JSON).

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::routes::{forced_tunneling_requirements, RouteCheck, RoutingTable};
use super::{evaluate_required, TagContext, Verdict};
use crate::error::SpecError;
use crate::model::{Access, SpecKey};
use crate::resolver::{Desired, RequiredFlow, SpecOutcome};
use crate::snapshot::Snapshot;
use crate::validate::ValidSpec;

/// One required flow checked against the live NSG.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedFlow {
    pub spec: SpecKey,
    pub flow: RequiredFlow,
    pub verdict: Verdict,
    /// False when the NSG does not exist (the flow then counts as denied).
    pub nsg_exists: bool,
}

/// One destination a spec's forced tunneling must route to the Internet, checked against
/// the live route table, the advertised BGP routes and the system routes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedRoute {
    pub spec: SpecKey,
    #[serde(flatten)]
    pub check: RouteCheck,
}

/// The result of `verify`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub flows: Vec<VerifiedFlow>,
    /// Every required destination of every spec under forced tunneling (domain.md 1.2.7).
    pub routes: Vec<VerifiedRoute>,
    /// Specs that could not be verified (invalid or unresolvable).
    pub errors: Vec<SpecError>,
}

impl VerifyReport {
    pub fn denied(&self) -> impl Iterator<Item = &VerifiedFlow> {
        self.flows
            .iter()
            .filter(|f| f.verdict.access != Access::Allow)
    }
    /// Required destinations whose effective next hop is not the promised one.
    pub fn misrouted(&self) -> impl Iterator<Item = &VerifiedRoute> {
        self.routes.iter().filter(|r| !r.check.ok)
    }
    /// True when every required flow of every spec is allowed, every required destination
    /// takes the promised next hop, and every spec resolved.
    pub fn passed(&self) -> bool {
        self.denied().next().is_none()
            && self.misrouted().next().is_none()
            && self.errors.is_empty()
    }
}

/// Verifies the specs `active` resolved into `desired` against `snapshot`. `invalid` are
/// the errors of specs that never reached the resolver (validation, tenancy); they are
/// reported with the resolver's failures, sorted and without duplicates.
pub fn verify<'a>(
    active: &[ValidSpec],
    invalid: impl IntoIterator<Item = &'a SpecError>,
    desired: &Desired,
    snapshot: &Snapshot,
) -> VerifyReport {
    let mut report = VerifyReport::default();
    report.errors.extend(invalid.into_iter().cloned());
    let by_key: BTreeMap<&SpecKey, &ValidSpec> = active.iter().map(|v| (&v.key, v)).collect();
    for (key, outcome) in &desired.specs {
        if let SpecOutcome::Failed { errors } = outcome {
            report.errors.extend(errors.iter().cloned());
            continue;
        }
        let spec = by_key.get(key).copied();
        for flow in &desired.required_flows(key) {
            report.flows.push(verify_flow(key, spec, flow, snapshot));
        }
    }
    for spec in active {
        if matches!(desired.specs.get(&spec.key), Some(SpecOutcome::Resolved(_))) {
            report.routes.extend(verify_routes(spec, snapshot));
        }
    }
    report.errors.sort();
    report.errors.dedup();
    report
}

/// One required flow of the spec `key` against its live NSG; denied when the NSG is
/// missing.
fn verify_flow(
    key: &SpecKey,
    spec: Option<&ValidSpec>,
    flow: &RequiredFlow,
    snapshot: &Snapshot,
) -> VerifiedFlow {
    let extra = spec.map(|s| s.extra_prefixes.clone()).unwrap_or_default();
    let nsg = snapshot
        .network_security_groups
        .get(&flow.network_security_group);
    // `VirtualNetwork` of the ASE's own NSG is its VNet's space (domain.md 2.5).
    let ctx = match spec.filter(|s| s.network_security_group == flow.network_security_group) {
        Some(s) => match s.subnet.parent() {
            Some(vnet) => TagContext::for_vnet(snapshot, &vnet, &extra),
            None => TagContext::from_snapshot(snapshot, &extra),
        },
        None => TagContext::from_snapshot(snapshot, &extra),
    };
    let verdict = match nsg {
        Some(n) => evaluate_required(flow, &n.rules, &ctx),
        None => Verdict {
            access: Access::Deny,
            rule: "(network security group missing)".into(),
            priority: 0,
        },
    };
    VerifiedFlow {
        spec: key.clone(),
        flow: flow.clone(),
        verdict,
        nsg_exists: nsg.is_some(),
    }
}

/// The effective next hop of every destination `spec`'s forced tunneling promises
/// (evaluate::routes), from the live route table, but only if the live subnet is
/// associated with it (otherwise its routes do not apply, domain.md 3.5).
fn verify_routes(spec: &ValidSpec, snapshot: &Snapshot) -> Vec<VerifiedRoute> {
    let Some(ft) = &spec.forced_tunneling else {
        return Vec::new();
    };
    let associated = snapshot
        .subnets
        .get(&spec.subnet)
        .and_then(|s| s.route_table.as_ref());
    let table = associated.and_then(|id| snapshot.route_tables.get(id));
    let udrs = table.map(|t| t.routes.clone()).unwrap_or_default();
    let disable_bgp = table.is_some_and(|t| t.disable_bgp_route_propagation);
    let vnet = snapshot
        .vnet_of(&spec.subnet)
        .map(|v| v.address_prefixes.clone())
        .unwrap_or_default();
    let tags: BTreeMap<String, Vec<Ipv4Net>> = snapshot
        .service_tags
        .values()
        .map(|t| (t.name.clone(), t.address_prefixes.clone()))
        .collect();
    let required: BTreeMap<String, Vec<Ipv4Net>> = ft
        .required_tags
        .iter()
        .filter_map(|t| {
            snapshot
                .service_tag(t)
                .map(|s| (t.clone(), s.address_prefixes.clone()))
        })
        .collect();
    let routing = RoutingTable::new(&udrs, &tags, &ft.advertised, disable_bgp, &vnet);
    forced_tunneling_requirements(&required, &ft.advertised, &vnet)
        .iter()
        .map(|req| VerifiedRoute {
            spec: spec.key.clone(),
            check: routing.check(req),
        })
        .collect()
}
