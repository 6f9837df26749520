//! What the controller keeps of a spec in its reflector store (issue 6: the process holds at
//! most 150 MiB with 10,000 specs). `controller::run` passes every object of its watch
//! streams through [`for_store`] before the reflector stores it, and
//! benches/store_memory.rs fills its store through the same function.
//!
//! Dropped, because the controller never reads them: `metadata.managedFields` and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation (together larger than the
//! spec for an object applied with `kubectl apply`). Dropped, because it is as large as the
//! spec: `status.rules`, the owned rules with their reasons. Of those rules the controller
//! needs two things, kept in the store-only annotation [`STORED_RULES`]:
//!
//! - a digest, to tell whether the status a reconcile computes differs from the one the
//!   object carries: the status is written only when it changed ([`status_unchanged`]);
//! - the NSGs and route tables the rules are in ([`rule_parents`]): a spec that moved to
//!   another NSG still owns rules in the old one, which puts the old one in its component.
//!   Only the parents the spec does not name itself are kept: every reader of
//!   [`rule_parents`] adds the spec's own NSGs and route table anyway
//!   (`index::linked_resources`), and a converged spec owns rules in no other, so the
//!   annotation of most specs is its first line alone (benches/store_memory.rs: the
//!   store of 10,000 specs with statuses 99.1 MiB, ~103 before; docs/benchmarks.md).
//!
//! A reconcile that must carry the previous rules over (a failed one: `next_status` keeps
//! them) reads the status from the API server first ([`rules_dropped`]).
//!
//! The annotation never leaves the process: the controller writes only the status (server-
//! side apply of the status alone) and the finalizers (a JSON patch of that list), and an
//! annotation of that name sent by the API server is removed before the store sees it.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use crate::api::{AseConnectivity, AseConnectivityStatus, OwnedRuleStatus};

/// The store-only annotation holding what the store keeps of `status.rules`: a first line
/// `<number of rules> <digest>`, then one line per parent.
pub const STORED_RULES: &str = "asenet.io/stored-status-rules";

/// The annotation `kubectl apply` (client-side) writes: the whole applied manifest again.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Shrinks an object for the reflector store (see the module documentation). For
/// `WatchStreamExt::modify` and `watcher::Event::modify`.
pub fn for_store(obj: &mut AseConnectivity) {
    obj.metadata.managed_fields = None;
    if let Some(annotations) = obj.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        annotations.remove(STORED_RULES);
        if annotations.is_empty() {
            obj.metadata.annotations = None;
        }
    }
    let Some(status) = obj.status.as_mut() else {
        return;
    };
    if status.rules.is_empty() {
        return;
    }
    let rules = std::mem::take(&mut status.rules);
    let mut kept = header(&rules);
    let named = super::index::shared_resources(obj);
    let parents: BTreeSet<&str> = (rules.iter())
        .map(|r| r.parent.as_str())
        .filter(|p| !named.contains(&super::index::normalise_id(p)))
        .collect();
    for parent in parents {
        kept.push('\n');
        kept.push_str(parent);
    }
    obj.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(STORED_RULES.to_string(), kept);
}

/// `<number of rules> <digest>`. The digest only ever compares with one computed by the
/// same process (the hasher's keys are fixed), so it need not be stable across versions.
fn header(rules: &[OwnedRuleStatus]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in rules {
        (
            r.parent.as_str(),
            r.name.as_str(),
            r.priority,
            r.reason.as_str(),
        )
            .hash(&mut h);
    }
    format!("{} {:016x}", rules.len(), h.finish())
}

fn stored(obj: &AseConnectivity) -> Option<&str> {
    obj.metadata
        .annotations
        .as_ref()?
        .get(STORED_RULES)
        .map(String::as_str)
}

/// True when [`for_store`] dropped the object's `status.rules`: a status computed from the
/// previous one (`next_status` keeps the rules of a failed reconcile) needs the status
/// read from the API server.
pub fn rules_dropped(obj: &AseConnectivity) -> bool {
    stored(obj).is_some()
}

/// The NSGs and route tables the object's `status.rules` are in, whether the store dropped
/// the rules or not (not normalised, possibly repeated). Of an object in the store: those
/// its spec does not name ([`super::index::shared_resources`]), which its readers add.
pub fn rule_parents(obj: &AseConnectivity) -> Vec<&str> {
    let mut out: Vec<&str> = obj
        .status
        .iter()
        .flat_map(|s| s.rules.iter().map(|r| r.parent.as_str()))
        .collect();
    if let Some(kept) = stored(obj) {
        out.extend(kept.lines().skip(1));
    }
    out
}

/// True when `status` is the status the object carries: equal to it, or, for an object
/// whose rules the store dropped, equal in every other field with rules of the same digest.
pub fn status_unchanged(obj: &AseConnectivity, status: &AseConnectivityStatus) -> bool {
    let Some(current) = obj.status.as_ref() else {
        return false;
    };
    let Some(kept) = stored(obj) else {
        return current == status;
    };
    // Every field by name: a field added to the status type must be added here.
    let AseConnectivityStatus {
        observed_generation,
        conditions,
        addresses,
        plan,
        rules,
    } = status;
    current.observed_generation == *observed_generation
        && current.conditions == *conditions
        && current.addresses == *addresses
        && current.plan == *plan
        && current.rules.is_empty()
        && kept.lines().next() == Some(header(rules).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn rule(parent: &str, name: &str) -> OwnedRuleStatus {
        OwnedRuleStatus {
            parent: parent.into(),
            name: name.into(),
            priority: Some(100),
            reason: "management port (ASE V1, required)".into(),
        }
    }

    fn object(rules: Vec<OwnedRuleStatus>) -> AseConnectivity {
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed");
        let mut obj = crate::load::load_specs(&[seed]).unwrap().remove(0).spec;
        obj.metadata.annotations = None;
        obj.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        obj.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{\"spec\":{}}".to_string()),
                ("team".to_string(), "network".to_string()),
                (STORED_RULES.to_string(), "0 0".to_string()),
            ]
            .into(),
        );
        obj.status = Some(AseConnectivityStatus {
            observed_generation: Some(1),
            rules,
            ..Default::default()
        });
        obj
    }

    #[test]
    fn the_store_keeps_neither_managed_fields_nor_the_last_applied_manifest_nor_the_rules() {
        let rules = vec![
            rule("/nsg/b", "r1"),
            rule("/nsg/a", "r2"),
            rule("/nsg/b", "r3"),
        ];
        let mut obj = object(rules.clone());
        let full_status = obj.status.clone().unwrap();
        for_store(&mut obj);
        assert_eq!(obj.metadata.managed_fields, None);
        let annotations = obj.metadata.annotations.clone().unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(annotations["team"], "network", "other annotations stay");
        assert!(obj.status.as_ref().unwrap().rules.is_empty());
        assert!(rules_dropped(&obj));
        assert_eq!(rule_parents(&obj), vec!["/nsg/a", "/nsg/b"]);

        assert!(status_unchanged(&obj, &full_status));
        let mut other_rules = full_status.clone();
        other_rules.rules[2].reason = "another reason".into();
        assert!(!status_unchanged(&obj, &other_rules));
        let mut fewer = full_status.clone();
        fewer.rules.pop();
        assert!(!status_unchanged(&obj, &fewer));
        let mut other_generation = full_status;
        other_generation.observed_generation = Some(2);
        assert!(!status_unchanged(&obj, &other_generation));
    }

    #[test]
    fn the_store_keeps_only_the_rule_parents_the_spec_does_not_name() {
        let mut obj = object(vec![]);
        let own = obj.spec.network_security_group.resource_id.clone();
        let rules = vec![
            // The spec's own NSG, spelt otherwise: still the spec's.
            rule(&format!("{}/", own.to_ascii_uppercase()), "r1"),
            rule("/nsg/old", "r2"),
        ];
        obj.status.as_mut().unwrap().rules = rules.clone();
        let full_status = obj.status.clone().unwrap();
        let linked_before = crate::controller::index::linked_resources(&obj);
        for_store(&mut obj);
        assert_eq!(rule_parents(&obj), vec!["/nsg/old"]);
        assert_eq!(
            crate::controller::index::linked_resources(&obj),
            linked_before,
            "what links the spec is what it was before the store shrank it"
        );
        assert!(status_unchanged(&obj, &full_status));
    }

    #[test]
    fn an_object_without_rules_keeps_no_annotation_of_them() {
        let mut obj = object(vec![]);
        obj.metadata.annotations = Some([(LAST_APPLIED.to_string(), "{}".to_string())].into());
        for_store(&mut obj);
        assert_eq!(obj.metadata.annotations, None);
        assert!(!rules_dropped(&obj));
        assert!(rule_parents(&obj).is_empty());
        let status = obj.status.clone().unwrap();
        assert!(status_unchanged(&obj, &status));
        let mut with_rules = status;
        with_rules.rules.push(rule("/nsg/a", "r1"));
        assert!(!status_unchanged(&obj, &with_rules));
    }
}
