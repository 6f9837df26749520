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

/// The Azure parents a spec links to for planning: [`shared_resources`], its subnet, and
/// the parents its status says it still owns entries in (a spec that moved to another NSG
/// keeps owned rules in the old one until a plan that covers it deletes them). Normalised
/// ids.
pub fn linked_resources(spec: &AseConnectivity) -> BTreeSet<String> {
    let mut out = shared_resources(spec);
    out.insert(normalise_id(&spec.spec.subnet.resource_id));
    // From `status.rules`, or what the reflector store keeps of them (`store::for_store`).
    for parent in super::store::rule_parents(spec) {
        out.insert(normalise_id(parent));
    }
    out.remove("");
    out
}

/// The connected component of `root` in `all`: the specs linked to it, transitively, by a
/// shared NSG, route table or subnet ([`linked_resources`]) or by an `environmentRef` in
/// either direction. `root` itself is always in it (in the version given, which replaces
/// the one in `all`). Every contributor of every NSG or route table the component touches
/// is in it, so merged resources are planned whole. Sorted by key, without duplicates.
///
/// Linear in `all` (plus the component's edges); only `Arc`s are copied.
pub fn component(
    root: &Arc<AseConnectivity>,
    all: &[Arc<AseConnectivity>],
) -> Vec<Arc<AseConnectivity>> {
    use std::collections::{BTreeMap, HashMap, VecDeque};

    let root_key = key_of(root);
    let mut by_key: BTreeMap<Key, &Arc<AseConnectivity>> = BTreeMap::new();
    for spec in all {
        by_key.insert(key_of(spec), spec);
    }
    by_key.insert(root_key.clone(), root);

    // Resource id → specs linked to it; spec → specs it references and that reference it.
    let mut by_resource: HashMap<String, Vec<Key>> = HashMap::new();
    let mut edges: HashMap<Key, Vec<Key>> = HashMap::new();
    for (key, spec) in &by_key {
        for id in linked_resources(spec) {
            by_resource.entry(id).or_default().push(key.clone());
        }
        for target in references(spec) {
            if by_key.contains_key(&target) {
                edges.entry(key.clone()).or_default().push(target.clone());
                edges.entry(target).or_default().push(key.clone());
            }
        }
    }

    let mut seen: BTreeSet<Key> = BTreeSet::new();
    let mut queue = VecDeque::from([root_key.clone()]);
    seen.insert(root_key);
    while let Some(key) = queue.pop_front() {
        let Some(spec) = by_key.get(&key) else {
            continue;
        };
        let mut next: Vec<&Key> = edges
            .get(&key)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        for id in linked_resources(spec) {
            if let Some(keys) = by_resource.get(&id) {
                next.extend(keys.iter());
            }
        }
        for k in next {
            if seen.insert(k.clone()) {
                queue.push_back(k.clone());
            }
        }
    }
    seen.iter()
        .filter_map(|k| by_key.get(k).map(|s| Arc::clone(s)))
        .collect()
}

/// The Azure parents (normalised ids) a set of specs links to: the keys of the per-parent
/// locks a reconcile holds across plan and apply.
pub fn component_resources<'a>(
    specs: impl IntoIterator<Item = &'a Arc<AseConnectivity>>,
) -> BTreeSet<String> {
    specs
        .into_iter()
        .flat_map(|s| linked_resources(s))
        .collect()
}

/// What the controller reacts to in a spec's own watch events: its generation (the spec
/// changed), whether it is being deleted, and whether it carries the asenet finalizer (the
/// finalizer is added by a metadata patch, after which the next reconcile does the work).
/// A change of `status` alone, or of labels/annotations, gives the same value, so the
/// controller's own status writes neither re-reconcile the spec nor wake its dependents.
///
/// A predicate for `WatchStreamExt::predicate_filter`.
pub fn spec_change(spec: &AseConnectivity) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = &spec.metadata;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    meta.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == super::FINALIZER))
        .hash(&mut h);
    // Objects without a generation (no API server sets none, but fakes may) compare by
    // their resource version, as `predicates::generation` would let every event through.
    if meta.generation.is_none() {
        meta.resource_version.hash(&mut h);
    }
    Some(h.finish())
}
