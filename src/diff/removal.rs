//! Removal (`deletionPolicy: Delete`): which NSGs and route tables the plan deletes, and
//! which subnet associations it takes away first. Pure, part of the diff: the decision is
//! made here, from the snapshot and the plan's other buckets; `apply` only executes it.
//!
//! An NSG or route table is deleted only when all of these hold (the rules `apply` used to
//! judge by, unchanged):
//! - asenet created it for a spec being removed: its ARM tag `asenet.io/created-by` (the one
//!   the create writes, [`CREATED_BY_TAG`]) names a spec in `Scope::removing`;
//! - nothing remains in it once the plan's write is done (no foreign entry, no kept entry
//!   of a spec that failed to resolve, nothing another spec wants);
//! - every subnet using it (as read, or in ARM's back-references) is known to the
//!   snapshot: an unknown user keeps it;
//! - no subnet is planned to be associated with it.
//!
//! Subnets still associated with it after the plan's association changes are dissociated
//! first, every association of one subnet in one PUT (one write per changed parent), so
//! ARM accepts the delete.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{AssociationChange, Change, EntryChanges, ParentAction, ResourceKind, ResourcePlan};
use super::{Scope, CREATED_BY_TAG};
use crate::model::{ResourceId, SpecKey};
use crate::snapshot::Snapshot;

/// Marks the NSGs and route tables of `resources` that go as `ParentAction::Delete`, and
/// adds the dissociations their deletion needs to the subnet plans (creating a subnet plan
/// where there is none). `resources` stays sorted by kind, then id.
pub(super) fn plan_removals(resources: &mut Vec<ResourcePlan>, snapshot: &Snapshot, scope: &Scope) {
    if scope.removing.is_empty() {
        return;
    }
    // Per subnet: the associations to remove, and the specs whose removal takes them away.
    let mut dissociate: BTreeMap<ResourceId, (AssociationChange, BTreeSet<SpecKey>)> =
        BTreeMap::new();
    let mut doomed: Vec<usize> = Vec::new();
    for (i, rp) in resources.iter().enumerate() {
        if rp.kind == ResourceKind::Subnet {
            continue;
        }
        let Some((creator, users)) = removable(rp, resources, snapshot, scope) else {
            continue;
        };
        doomed.push(i);
        for subnet in users {
            let (change, by) = dissociate.entry(subnet).or_insert_with(|| {
                (
                    AssociationChange {
                        network_security_group: None,
                        route_table: None,
                    },
                    BTreeSet::new(),
                )
            });
            *field_mut(change, rp.kind) = Some(Change {
                from: Some(rp.id.clone()),
                to: None,
            });
            by.insert(creator.clone());
        }
    }
    for i in doomed {
        resources[i].action = ParentAction::Delete;
    }
    for (subnet, (change, by)) in dissociate {
        add_dissociation(resources, snapshot, subnet, change, by);
    }
    resources.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
}

/// Merges `change` into the plan of `subnet` (a subnet planned for another reason keeps its
/// other association change: both go in its one PUT).
fn add_dissociation(
    resources: &mut Vec<ResourcePlan>,
    snapshot: &Snapshot,
    subnet: ResourceId,
    change: AssociationChange,
    by: BTreeSet<SpecKey>,
) {
    if let Some(rp) = resources.iter_mut().find(|r| r.id == subnet) {
        let a = rp.association.get_or_insert(AssociationChange {
            network_security_group: None,
            route_table: None,
        });
        for kind in [ResourceKind::NetworkSecurityGroup, ResourceKind::RouteTable] {
            if let Some(c) = field_of(&change, kind) {
                *field_mut(a, kind) = Some(c.clone());
            }
        }
        rp.action = ParentAction::Update;
        return;
    }
    resources.push(ResourcePlan {
        etag: snapshot.subnets.get(&subnet).and_then(|s| s.etag.clone()),
        id: subnet,
        kind: ResourceKind::Subnet,
        action: ParentAction::Update,
        location: None,
        owners: by.into(),
        rules: EntryChanges::default(),
        routes: EntryChanges::default(),
        association: Some(change),
        conflicts: vec![],
        service_tags: None,
    });
}

/// The creator of `rp` and the subnets to dissociate from it, when it is to be deleted
/// (see the module docs).
fn removable(
    rp: &ResourcePlan,
    resources: &[ResourcePlan],
    snapshot: &Snapshot,
    scope: &Scope,
) -> Option<(SpecKey, BTreeSet<ResourceId>)> {
    let raw = match rp.kind {
        ResourceKind::NetworkSecurityGroup => snapshot
            .network_security_groups
            .get(&rp.id)
            .and_then(|n| n.raw.as_ref()),
        _ => snapshot
            .route_tables
            .get(&rp.id)
            .and_then(|r| r.raw.as_ref()),
    };
    let creator = if rp.action == ParentAction::Create {
        // The tag the create writes.
        rp.owners.iter().next().cloned()
    } else {
        raw?.string_at(&format!("/tags/{}", CREATED_BY_TAG.replace('/', "~1")))
            .and_then(|s| s.parse::<SpecKey>().ok())
    }?;
    if !scope.removing.contains(&creator) {
        return None;
    }
    let empty = match rp.kind {
        ResourceKind::NetworkSecurityGroup => rp.target_rules().is_empty(),
        _ => rp.target_routes().is_empty(),
    };
    if !empty {
        return None;
    }
    // Who uses it: ARM's back-references and the subnets read.
    let raw = raw.map(crate::snapshot::RawJson::value);
    let mut users: BTreeSet<ResourceId> = raw
        .as_ref()
        .and_then(|r| r.pointer("/properties/subnets"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("id").and_then(Value::as_str))
        .filter_map(|s| ResourceId::parse(s).ok())
        .collect();
    users.extend(
        snapshot
            .subnets
            .values()
            .filter(|s| current(s, rp.kind) == Some(&rp.id))
            .map(|s| s.id.clone()),
    );
    let mut dissociate = BTreeSet::new();
    for user in users {
        let Some(state) = snapshot.subnets.get(&user) else {
            // A user the snapshot does not know keeps it.
            return None;
        };
        let planned = resources
            .iter()
            .find(|r| r.kind == ResourceKind::Subnet && r.id == user)
            .and_then(|r| r.association.as_ref())
            .and_then(|a| field_of(a, rp.kind));
        match planned {
            // Something asenet wants points at it: it stays.
            Some(c) if c.to.as_ref() == Some(&rp.id) => return None,
            Some(_) => {}
            None if current(state, rp.kind) == Some(&rp.id) => {
                dissociate.insert(user);
            }
            None => {}
        }
    }
    Some((creator, dissociate))
}

/// The subnet's association with a resource of `kind`, as read.
fn current(subnet: &crate::snapshot::SubnetState, kind: ResourceKind) -> Option<&ResourceId> {
    match kind {
        ResourceKind::NetworkSecurityGroup => subnet.network_security_group.as_ref(),
        _ => subnet.route_table.as_ref(),
    }
}

fn field_of(a: &AssociationChange, kind: ResourceKind) -> Option<&Change<Option<ResourceId>>> {
    match kind {
        ResourceKind::NetworkSecurityGroup => a.network_security_group.as_ref(),
        _ => a.route_table.as_ref(),
    }
}

fn field_mut(
    a: &mut AssociationChange,
    kind: ResourceKind,
) -> &mut Option<Change<Option<ResourceId>>> {
    match kind {
        ResourceKind::NetworkSecurityGroup => &mut a.network_security_group,
        _ => &mut a.route_table,
    }
}
