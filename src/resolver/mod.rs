//! The resolver: a pure function from validated specs and an Azure snapshot to the desired
//! state of every Azure resource the specs touch (docs/design.md section 3).
//!
//! Pure means: no async, no clock, no randomness, no environment, no I/O, no kube or Azure
//! SDK types (a test in `tests/purity.rs` reads this folder's sources to enforce it). All
//! collections that reach output are ordered, so the same input yields a byte-identical
//! result.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::error::SpecError;
use crate::model::{ResourceId, Route, SecurityRule, SpecKey};

mod assemble;
mod build;
mod flows;
pub mod names;
pub mod routes;

pub use assemble::{MAX_PREFIXES_PER_NSG, MAX_ROUTES, MAX_RULES, MAX_TAG_ROUTES};
pub use names::{is_owned_name, owner_from_description, route_owner, RouteOwners};

/// Resolves validated specs against a snapshot: the desired owned rules and routes of every
/// NSG and route table the specs touch, the subnet associations, and per spec either its
/// resolution or why it failed. Deterministic: specs are processed in sorted `SpecKey`
/// order whatever the input order (duplicates of a key: the first one wins).
pub fn resolve(
    specs: &[crate::validate::ValidSpec],
    snapshot: &crate::snapshot::Snapshot,
) -> Desired {
    assemble::resolve(specs, snapshot, &BTreeSet::new(), None)
}

/// [`resolve`] for a plan that also removes the specs in `removing`: their owned routes
/// are about to be deleted, so they cannot stand in for a route an active spec needs.
/// Owned routes of every other spec outside `specs` stay, and do.
pub fn resolve_removing(
    specs: &[crate::validate::ValidSpec],
    snapshot: &crate::snapshot::Snapshot,
    removing: &BTreeSet<SpecKey>,
) -> Desired {
    assemble::resolve(specs, snapshot, removing, None)
}

/// A part of a component resolved on its own ([`resolve_part`]): a component of 10,000
/// specs planned whole holds all its ~200,000 rules at once (issue 14's memory).
///
/// `build` must be closed under sharing: every spec of the component that contributes to
/// (or owns entries in) an NSG, route table or subnet of a spec in `build` is in `build`.
/// Then nothing a spec outside the part does changes the part's resources, and its
/// resolution is what resolving the whole component gives for them.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The specs whose contributions are built.
    pub build: &'a BTreeSet<SpecKey>,
    /// Every valid spec of the component: a name two namespaces use gets hashed rule names
    /// (`names::stem`), whichever parts the two specs are in.
    pub names: &'a BTreeSet<SpecKey>,
}

/// [`resolve_removing`] of the part `part.build` of a component. The other specs given are
/// references: `environmentRef`s to them resolve to their addresses, nothing of theirs is
/// built, and `Desired::specs` has only the part's specs.
pub fn resolve_part(
    specs: &[crate::validate::ValidSpec],
    snapshot: &crate::snapshot::Snapshot,
    removing: &BTreeSet<SpecKey>,
    part: &Part,
) -> Desired {
    assemble::resolve(specs, snapshot, removing, Some(part))
}

/// Rule and route names asenet owns start with this prefix (docs/design.md section 3).
pub const OWNED_PREFIX: &str = "asenet-";

/// The desired state of everything the specs touch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub network_security_groups: BTreeMap<ResourceId, DesiredNsg>,
    pub route_tables: BTreeMap<ResourceId, DesiredRouteTable>,
    /// Associations the specs need on their ASE subnets.
    pub subnets: BTreeMap<ResourceId, DesiredSubnet>,
    /// Per spec: what was resolved, or why it failed. Serialised as a map keyed by
    /// `namespace/name` (JSON keys must be strings), each resolved spec with its
    /// `requiredFlows` ([`Desired::required_flows`]).
    pub specs: BTreeMap<SpecKey, SpecOutcome>,
}

/// How `Desired` serialises: its fields, and per resolved spec the flows it requires
/// (computed here, not stored: see `flows.rs`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DesiredView<'a> {
    network_security_groups: &'a BTreeMap<ResourceId, DesiredNsg>,
    route_tables: &'a BTreeMap<ResourceId, DesiredRouteTable>,
    subnets: &'a BTreeMap<ResourceId, DesiredSubnet>,
    #[serde(serialize_with = "by_spec_text")]
    specs: BTreeMap<&'a SpecKey, OutcomeView<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
enum OutcomeView<'a> {
    #[serde(rename_all = "camelCase")]
    Resolved {
        #[serde(flatten)]
        resolution: &'a Resolution,
        required_flows: Vec<RequiredFlow>,
    },
    Failed {
        errors: &'a [SpecError],
    },
}

impl Serialize for Desired {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let specs = self
            .specs
            .iter()
            .map(|(k, o)| {
                let view = match o {
                    SpecOutcome::Resolved(resolution) => OutcomeView::Resolved {
                        resolution,
                        required_flows: self.required_flows(k),
                    },
                    SpecOutcome::Failed { errors } => OutcomeView::Failed { errors },
                };
                (k, view)
            })
            .collect();
        DesiredView {
            network_security_groups: &self.network_security_groups,
            route_tables: &self.route_tables,
            subnets: &self.subnets,
            specs,
        }
        .serialize(s)
    }
}

/// A map keyed by spec, serialised with `namespace/name` keys.
fn by_spec_text<S: Serializer, K: std::borrow::Borrow<SpecKey>, V: Serialize>(
    map: &BTreeMap<K, V>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(map.iter().map(|(k, v)| (k.borrow().to_string(), v)))
}

impl Desired {
    /// Every error of every failed spec, in spec order.
    pub fn errors(&self) -> Vec<SpecError> {
        self.specs
            .values()
            .filter_map(|o| match o {
                SpecOutcome::Failed { errors } => Some(errors.clone()),
                SpecOutcome::Resolved(_) => None,
            })
            .flatten()
            .collect()
    }

    /// Specs that failed to resolve. Their owned entries already in Azure are left exactly
    /// as they are (neither updated nor deleted) until the spec resolves again.
    pub fn failed_specs(&self) -> BTreeSet<SpecKey> {
        self.specs
            .iter()
            .filter(|(_, o)| matches!(o, SpecOutcome::Failed { .. }))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The owned rules one NSG must carry, merged from every contributing spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredNsg {
    pub id: ResourceId,
    /// Location for creating the NSG if it does not exist (the subnet's VNet location).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Sorted by direction, then priority.
    pub rules: Vec<OwnedRule>,
    /// The priority band of every spec contributing to this NSG (spec.networkSecurityGroup
    /// or backends[].networkSecurityGroup). The diff reports foreign rules inside a band.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "by_spec_text"
    )]
    pub bands: BTreeMap<SpecKey, crate::model::PriorityBand>,
}

/// A rule asenet owns, with the spec and requirement that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedRule {
    /// Shared with the plan's entries that keep or create it (`diff::Planned::entry`): a
    /// plan of 200,000 rules holds each rule once.
    #[serde(flatten)]
    pub rule: Arc<SecurityRule>,
    pub owner: SpecKey,
    /// Why the rule exists, for people: "management port (ASE V2, required; domain.md 1.3.4)".
    pub reason: Arc<str>,
    /// True for rules the ASE version requires; they can never be switched off.
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredRouteTable {
    pub id: ResourceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Sorted by name.
    pub routes: Vec<OwnedRoute>,
    /// The `changeNumber` of each service tag the routes were computed from (tag name ->
    /// change number; domain.md 5.1). asenet records it on the route table (ARM tag
    /// `SERVICE_TAGS_TAG`) when it writes the table, so a later plan can name both numbers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_tags: BTreeMap<String, String>,
}

/// The ARM tag on a route table holding the service-tag change numbers its owned routes
/// were computed from: `AppServiceManagement=69,Sql=96`.
pub const SERVICE_TAGS_TAG: &str = "asenet-service-tags";

/// `AppServiceManagement=69,Sql=96` from a map, and back (entries without `=` are skipped).
pub fn encode_tag_versions(v: &BTreeMap<String, String>) -> String {
    v.iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode_tag_versions(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|e| e.split_once('='))
        .map(|(k, n)| (k.trim().to_string(), n.trim().to_string()))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedRoute {
    /// Shared with the plan, like [`OwnedRule::rule`].
    #[serde(flatten)]
    pub route: Arc<Route>,
    pub owner: SpecKey,
    pub reason: Arc<str>,
}

/// The associations an ASE subnet must have.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredSubnet {
    pub id: ResourceId,
    pub network_security_group: ResourceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_table: Option<ResourceId>,
    pub owner: SpecKey,
}

/// The outcome of resolving one spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum SpecOutcome {
    Resolved(Resolution),
    Failed { errors: Vec<SpecError> },
}

/// What the resolver decided for one spec (reported in status and by `asenet resolve`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolution {
    /// Addresses a callee outside the topology sees (public VIP / outbound addresses).
    pub internet_addresses: Vec<std::net::Ipv4Addr>,
    /// The range a callee inside the topology sees (the ASE subnet).
    pub virtual_network_range: ipnet::Ipv4Net,
    /// Every Azure resource this spec contributes to (NSGs, route tables, its subnet).
    /// The flows it requires are derived on demand: [`Desired::required_flows`].
    pub touches: BTreeSet<ResourceId>,
}

/// A flow that must be allowed by an NSG once the plan is applied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequiredFlow {
    pub network_security_group: ResourceId,
    pub direction: crate::model::Direction,
    pub protocol: crate::model::Protocol,
    /// A concrete source address or a tag name the evaluator resolves.
    pub source: String,
    pub destination: String,
    pub port: u16,
    /// The rule's reason, shared with it.
    pub reason: Arc<str>,
}
