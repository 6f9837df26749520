//! The JSON rendering of a plan: a stable schema for machines, documented field by field
//! in docs/plan-json.md. The schema is its own set of types (not the `Plan` structs), so
//! that refactoring the plan never changes the JSON by accident; a change to these types
//! is a change to `formatVersion` and to the document.
//!
//! Every key is always present (`null` or `[]` when empty), every list is sorted the way
//! the plan sorts it, and the output is pretty-printed with a trailing newline: the same
//! plan gives byte-identical JSON.

use serde::Serialize;

use crate::diff::{
    Change, Conflict, EntryChanges, ParentAction, Plan, Planned, ResourceKind, ResourcePlan, Update,
};
use crate::error::SpecError;
use crate::model::{Access, AddressSet, Direction, PortSet, ResourceId, Route, SecurityRule};

/// The version of the JSON schema; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanJson {
    format_version: u32,
    summary: SummaryJson,
    resources: Vec<ResourceJson>,
    errors: Vec<ErrorJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryJson {
    has_changes: bool,
    add: usize,
    change: usize,
    destroy: usize,
    conflicts: usize,
    errors: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CountsJson {
    add: usize,
    change: usize,
    destroy: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceJson {
    id: String,
    kind: &'static str,
    name: String,
    resource_group: String,
    action: &'static str,
    location: Option<String>,
    etag: Option<String>,
    owners: Vec<String>,
    summary: CountsJson,
    rules: Option<EntriesJson<RuleJson>>,
    routes: Option<EntriesJson<RouteJson>>,
    association: Option<AssociationJson>,
    conflicts: Vec<ConflictJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntriesJson<E> {
    create: Vec<PlannedJson<E>>,
    update: Vec<UpdateJson<E>>,
    delete: Vec<PlannedJson<E>>,
    keep: Vec<PlannedJson<E>>,
    foreign: Vec<E>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlannedJson<E> {
    owner: Option<String>,
    reason: String,
    entry: E,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateJson<E> {
    owner: String,
    reason: String,
    fields: Vec<String>,
    before: E,
    after: E,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuleJson {
    name: String,
    priority: u32,
    direction: &'static str,
    access: &'static str,
    protocol: &'static str,
    source_addresses: Vec<String>,
    source_ports: Vec<String>,
    destination_addresses: Vec<String>,
    destination_ports: Vec<String>,
    description: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteJson {
    name: String,
    address_prefix: String,
    next_hop_type: String,
    next_hop_ip_address: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AssociationJson {
    network_security_group: Option<ChangeJson>,
    route_table: Option<ChangeJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangeJson {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConflictJson {
    kind: &'static str,
    foreign: String,
    owned: Option<String>,
    message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorJson {
    spec: String,
    kind: &'static str,
    field: String,
    value: String,
    message: String,
}

/// Renders a plan as JSON (schema: docs/plan-json.md, `formatVersion` [`FORMAT_VERSION`]).
pub fn render_json(plan: &Plan) -> String {
    let (add, change, destroy) = plan.summary();
    let doc = PlanJson {
        format_version: FORMAT_VERSION,
        summary: SummaryJson {
            has_changes: plan.has_changes(),
            add,
            change,
            destroy,
            conflicts: plan.conflicts().count(),
            errors: plan.errors.len(),
        },
        resources: plan.resources.iter().map(resource).collect(),
        errors: plan.errors.iter().map(error).collect(),
    };
    // Serialising plain structs of strings, numbers and options to a String cannot fail
    // (no maps with non-string keys, no custom serialisers that error).
    let mut text = serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| format!("{{\"formatVersion\":{FORMAT_VERSION},\"error\":\"{e}\"}}"));
    text.push('\n');
    text
}

fn resource(r: &ResourcePlan) -> ResourceJson {
    let (add, change, destroy) = r.counts();
    ResourceJson {
        id: r.id.to_string(),
        kind: match r.kind {
            ResourceKind::NetworkSecurityGroup => "networkSecurityGroup",
            ResourceKind::RouteTable => "routeTable",
            ResourceKind::Subnet => "subnet",
        },
        name: r.id.name().to_string(),
        resource_group: r.id.resource_group().to_string(),
        action: match r.action {
            ParentAction::Create => "create",
            ParentAction::Update => "update",
            ParentAction::NoChange => "noChange",
            ParentAction::Delete => "delete",
        },
        location: r.location.clone(),
        etag: r.etag.clone(),
        owners: r.owners.iter().map(|o| o.to_string()).collect(),
        summary: CountsJson {
            add,
            change,
            destroy,
        },
        rules: (r.kind == ResourceKind::NetworkSecurityGroup).then(|| entries(&r.rules, rule)),
        routes: (r.kind == ResourceKind::RouteTable).then(|| entries(&r.routes, route)),
        association: (r.kind == ResourceKind::Subnet).then(|| {
            let a = r.association.as_ref();
            AssociationJson {
                network_security_group: a
                    .and_then(|a| a.network_security_group.as_ref())
                    .map(change_json),
                route_table: a.and_then(|a| a.route_table.as_ref()).map(change_json),
            }
        }),
        conflicts: r.conflicts.iter().map(conflict).collect(),
    }
}

fn entries<T, E>(ch: &EntryChanges<T>, conv: fn(&T) -> E) -> EntriesJson<E> {
    let planned = |p: &Planned<T>| PlannedJson {
        owner: p.owner.as_ref().map(|o| o.to_string()),
        reason: p.reason.to_string(),
        entry: conv(&p.entry),
    };
    EntriesJson {
        create: ch.create.iter().map(planned).collect(),
        update: ch
            .update
            .iter()
            .map(|u: &Update<T>| UpdateJson {
                owner: u.owner.to_string(),
                reason: u.reason.clone(),
                fields: u.fields.clone(),
                before: conv(&u.before),
                after: conv(&u.after),
            })
            .collect(),
        delete: ch.delete.iter().map(planned).collect(),
        keep: ch.keep.iter().map(planned).collect(),
        foreign: ch.foreign.iter().map(conv).collect(),
    }
}

fn addresses(a: &AddressSet) -> Vec<String> {
    match a {
        AddressSet::Prefixes(p) => p.iter().map(crate::model::prefix_text).collect(),
        other => vec![other.to_string()],
    }
}

fn ports(p: &PortSet) -> Vec<String> {
    p.to_strings()
}

fn rule(r: &SecurityRule) -> RuleJson {
    RuleJson {
        name: r.name.clone(),
        priority: r.priority,
        direction: match r.direction {
            Direction::Inbound => "Inbound",
            Direction::Outbound => "Outbound",
        },
        access: match r.access {
            Access::Allow => "Allow",
            Access::Deny => "Deny",
        },
        protocol: r.protocol.as_arm(),
        source_addresses: addresses(&r.source),
        source_ports: ports(&r.source_ports),
        destination_addresses: addresses(&r.destination),
        destination_ports: ports(&r.destination_ports),
        description: r.description.clone(),
    }
}

fn route(r: &Route) -> RouteJson {
    RouteJson {
        name: r.name.clone(),
        address_prefix: r.address_prefix.to_string(),
        next_hop_type: format!("{:?}", r.next_hop_type),
        next_hop_ip_address: r.next_hop_ip_address.map(|i| i.to_string()),
    }
}

fn change_json(c: &Change<Option<ResourceId>>) -> ChangeJson {
    ChangeJson {
        from: c.from.as_ref().map(|i| i.to_string()),
        to: c.to.as_ref().map(|i| i.to_string()),
    }
}

fn conflict(c: &Conflict) -> ConflictJson {
    ConflictJson {
        kind: c.kind.as_str(),
        foreign: c.foreign.clone(),
        owned: c.owned.clone(),
        message: c.message.clone(),
    }
}

fn error(e: &SpecError) -> ErrorJson {
    ErrorJson {
        spec: e.spec.to_string(),
        kind: e.kind.as_str(),
        field: e.field.clone(),
        value: e.value.clone(),
        message: e.message.clone(),
    }
}
