//! Which specs depend on which: the mapper that turns a change of one spec into reconciles
//! of the others it affects.
//!
//! A spec S depends on a spec X when S names X in an `environmentRef` (S's rules admit X's
//! addresses, docs/design.md section 1.3), or when S and X contribute to the same NSG or
//! route table (a merged resource is planned whole, so X's change can move S's rules and
//! changes S's status). The relation is computed from the raw spec fields, before
//! validation, so that an invalid spec still wakes up the specs it would affect. Resource
//! ids compare case-insensitively, as ARM compares them (docs/domain.md 2.2).

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use crate::api::AseConnectivity;

/// The key a spec is known by: `(namespace, name)`.
pub type Key = (String, String);

pub fn key_of(spec: &AseConnectivity) -> Key {
    (
        spec.namespace().unwrap_or_else(|| "default".to_string()),
        spec.name_any(),
    )
}

fn normalise_id(id: &str) -> String {
    id.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The NSGs and route tables a spec contributes to (normalised ids).
pub fn shared_resources(spec: &AseConnectivity) -> BTreeSet<String> {
    let s = &spec.spec;
    let mut out = BTreeSet::new();
    out.insert(normalise_id(&s.network_security_group.resource_id));
    if let Some(rt) = &s.route_table {
        out.insert(normalise_id(&rt.resource_id));
    }
    for b in &s.backends {
        out.insert(normalise_id(&b.network_security_group.resource_id));
    }
    out.remove("");
    out
}

/// The specs a spec names in `environmentRef`s (namespace defaulted to its own).
pub fn references(spec: &AseConnectivity) -> BTreeSet<Key> {
    let (ns, _) = key_of(spec);
    spec.spec
        .inbound
        .iter()
        .flat_map(|i| i.from.iter())
        .filter_map(|src| src.environment_ref.as_ref())
        .map(|r| {
            (
                r.namespace.clone().unwrap_or_else(|| ns.clone()),
                r.name.clone(),
            )
        })
        .collect()
}

/// The specs (other than `changed` itself) to reconcile again because `changed` changed,
/// appeared or went away. Sorted and without duplicates.
pub fn dependents(changed: &AseConnectivity, all: &[Arc<AseConnectivity>]) -> Vec<Key> {
    let me = key_of(changed);
    let mine = shared_resources(changed);
    let mut out = BTreeSet::new();
    for other in all {
        let key = key_of(other);
        if key == me {
            continue;
        }
        let refers_to_me = references(other).contains(&me);
        let shares = !mine.is_disjoint(&shared_resources(other));
        if refers_to_me || shares {
            out.insert(key);
        }
    }
    out.into_iter().collect()
}

/// [`dependents`] as object references for `Controller::reconcile_on`.
pub fn dependent_refs(
    changed: &AseConnectivity,
    all: &[Arc<AseConnectivity>],
) -> Vec<ObjectRef<AseConnectivity>> {
    dependents(changed, all)
        .into_iter()
        .map(|(ns, name)| ObjectRef::new(&name).within(&ns))
        .collect()
}
