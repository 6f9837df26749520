//! Tenancy: a namespace writes only where it is allowed (docs/operator.md, "Tenancy").
//!
//! A spec's `networkSecurityGroup`, `subnet`, `routeTable` and each back end's
//! `networkSecurityGroup` are free resource ids, and the operator's Azure identity can
//! usually reach far more than one team's resources. With tenancy enforced, the
//! `AseTenancyPolicy` objects ([`api`]) say which Azure scopes each namespace may write,
//! and `AseBackendGrant` objects let the owner of a back-end NSG (a namespace whose policy
//! covers it) open it to specs of other namespaces.
//!
//! This module is the pure decision: a [`PolicySet`] built from those objects (the
//! operator's reflector stores, or the CLI's `--policy FILE`) and a spec give a list of
//! [`Refusal`]s, each naming the field path, the resource id and the missing grant. No I/O.
//! The pipeline treats a refused spec like an invalid one ([`crate::diff::Scope::refused`]):
//! nothing it contributes is written, the entries it owns in Azure are kept as they are,
//! and the other specs are still planned.
//!
//! Only writes are checked: an `environmentRef` to another namespace's spec, or the ASE's
//! `environment.resourceId`, are read, never written.

pub mod api;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

pub use api::{
    AseBackendGrant, AseBackendGrantSpec, AseTenancyPolicy, AseTenancyPolicySpec, AzureScope,
    GrantedNsg,
};

use kube::core::{Selector, SelectorExt};

use crate::api::AseConnectivity;
use crate::error::{SpecError, SpecErrorKind};
use crate::model::{ResourceId, SpecKey};

/// Whether tenancy is enforced (`--tenancy`, chart value `tenancy.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TenancyMode {
    /// Every spec may write every resource the operator's identity can reach.
    Off,
    /// A spec may write only what the policies and grants allow; with no policy objects,
    /// nothing is allowed.
    #[default]
    Enforce,
}

impl TenancyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TenancyMode::Off => "off",
            TenancyMode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for TenancyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a tenancy mode (expected `enforce` or `off`)")]
pub struct ModeError {
    pub value: String,
}

impl FromStr for TenancyMode {
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(TenancyMode::Off),
            "enforce" => Ok(TenancyMode::Enforce),
            _ => Err(ModeError {
                value: s.to_string(),
            }),
        }
    }
}

/// A bad entry in a policy or grant object. The entry grants nothing (fail closed); the
/// rest of the object still counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{object}: {field}: `{value}` {message}")]
pub struct PolicyError {
    /// `AseTenancyPolicy/<name>` or `AseBackendGrant/<namespace>/<name>`.
    pub object: String,
    /// Field path, e.g. `spec.scopes[2].resourceGroup`.
    pub field: String,
    pub value: String,
    pub message: String,
}

/// One Azure scope, parsed. Comparisons ignore case, as ARM does (docs/domain.md 2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantable {
    Subscription(String),
    ResourceGroup {
        subscription: String,
        group: String,
    },
    /// The resource and its children (`…/virtualNetworks/v` covers `…/v/subnets/s`).
    Resource(ResourceId),
}

impl Grantable {
    /// True when `id` lies in this scope.
    pub fn covers(&self, id: &ResourceId) -> bool {
        match self {
            Grantable::Subscription(s) => id.subscription().eq_ignore_ascii_case(s),
            Grantable::ResourceGroup {
                subscription,
                group,
            } => {
                id.subscription().eq_ignore_ascii_case(subscription)
                    && id.resource_group().eq_ignore_ascii_case(group)
            }
            Grantable::Resource(r) => {
                id == r
                    || id
                        .key()
                        .strip_prefix(r.key())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }

    /// Parses one `AzureScope` (exactly one field set).
    fn parse(scope: &AzureScope, object: &str, field: &str) -> Result<Self, PolicyError> {
        let err = |sub: &str, value: &str, message: &str| PolicyError {
            object: object.to_string(),
            field: format!("{field}{sub}"),
            value: value.to_string(),
            message: message.to_string(),
        };
        match (
            &scope.subscription,
            &scope.resource_group,
            &scope.resource_id,
        ) {
            (Some(s), None, None) => {
                if s.is_empty() || s.contains('/') {
                    return Err(err(
                        ".subscription",
                        s,
                        "is not a subscription id (no slashes, not empty)",
                    ));
                }
                Ok(Grantable::Subscription(s.clone()))
            }
            (None, Some(rg), None) => {
                let parts: Vec<&str> = rg.trim_end_matches('/').split('/').collect();
                match parts.as_slice() {
                    ["", subs, sub, groups, group]
                        if subs.eq_ignore_ascii_case("subscriptions")
                            && groups.eq_ignore_ascii_case("resourceGroups")
                            && !sub.is_empty()
                            && !group.is_empty() =>
                    {
                        Ok(Grantable::ResourceGroup {
                            subscription: sub.to_string(),
                            group: group.to_string(),
                        })
                    }
                    _ => Err(err(
                        ".resourceGroup",
                        rg,
                        "is not a resource group id (/subscriptions/{sub}/resourceGroups/{rg})",
                    )),
                }
            }
            (None, None, Some(id)) => ResourceId::parse(id)
                .map(Grantable::Resource)
                .map_err(|e| err(".resourceId", id, &e.to_string())),
            _ => Err(err(
                "",
                &serde_json::to_string(scope).unwrap_or_default(),
                "must set exactly one of subscription, resourceGroup, resourceId",
            )),
        }
    }
}

impl fmt::Display for Grantable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grantable::Subscription(s) => write!(f, "subscription {s}"),
            Grantable::ResourceGroup {
                subscription,
                group,
            } => write!(f, "/subscriptions/{subscription}/resourceGroups/{group}"),
            Grantable::Resource(r) => write!(f, "{r}"),
        }
    }
}

/// A parsed `AseTenancyPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub namespaces: BTreeSet<String>,
    /// `namespaceSelector`, matched against the labels of namespaces the set knows.
    pub selector: Option<Selector>,
    pub scopes: Vec<Grantable>,
}

/// A parsed `AseBackendGrant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grantor: the namespace the object lives in.
    pub namespace: String,
    pub name: String,
    pub network_security_groups: Vec<ResourceId>,
    /// The grantees.
    pub to: BTreeSet<String>,
}

/// Why one resource a spec names may not be written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refusal {
    /// Field path, e.g. `spec.backends[0].networkSecurityGroup.resourceId`.
    pub field: String,
    /// The resource id as written in the spec.
    pub resource_id: String,
    /// The grant that would allow it, for a person.
    pub missing: String,
}

impl Refusal {
    pub fn to_spec_error(&self, spec: &SpecKey) -> SpecError {
        SpecError::new(
            spec,
            SpecErrorKind::NotPermitted,
            self.field.clone(),
            self.resource_id.clone(),
            format!(
                "namespace `{}` may not write `{}`: missing {}",
                spec.namespace, self.resource_id, self.missing
            ),
        )
    }
}

/// Every policy and grant in force, and the mode. Built once per plan (a reconcile, a CLI
/// run) so that every spec of one plan is judged against the same set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    mode: TenancyMode,
    policies: Vec<Policy>,
    grants: Vec<Grant>,
    /// The labels of every namespace known (the operator's Namespace store; the CLI's
    /// `Namespace` documents). A selector never matches a namespace not known here.
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl PolicySet {
    /// Tenancy off: everything is allowed.
    pub fn off() -> Self {
        PolicySet {
            mode: TenancyMode::Off,
            ..PolicySet::default()
        }
    }

    /// Tenancy enforced with these objects. Bad entries are dropped (they grant nothing)
    /// and returned, so the caller can report them (the CLI refuses to run, the operator
    /// logs them and publishes nothing they would allow).
    pub fn enforce<'a>(
        policies: impl IntoIterator<Item = &'a AseTenancyPolicy>,
        grants: impl IntoIterator<Item = &'a AseBackendGrant>,
    ) -> (Self, Vec<PolicyError>) {
        let mut errors = Vec::new();
        let mut set = PolicySet {
            mode: TenancyMode::Enforce,
            ..PolicySet::default()
        };
        for p in policies {
            let name = p.metadata.name.clone().unwrap_or_default();
            let object = format!("AseTenancyPolicy/{name}");
            let mut scopes = Vec::new();
            for (i, s) in p.spec.scopes.iter().enumerate() {
                match Grantable::parse(s, &object, &format!("spec.scopes[{i}]")) {
                    Ok(g) => scopes.push(g),
                    Err(e) => errors.push(e),
                }
            }
            let selector = match &p.spec.namespace_selector {
                None => None,
                Some(s) => match Selector::try_from(s.clone()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        errors.push(PolicyError {
                            object: object.clone(),
                            field: "spec.namespaceSelector".into(),
                            value: serde_json::to_string(s).unwrap_or_default(),
                            message: format!("is not a valid label selector: {e}"),
                        });
                        None
                    }
                },
            };
            set.policies.push(Policy {
                name,
                namespaces: p.spec.namespaces.iter().cloned().collect(),
                selector,
                scopes,
            });
        }
        for g in grants {
            // A grant without a namespace (a CLI file that gives none) lives in `default`,
            // as kubectl would create it.
            let namespace = g
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = g.metadata.name.clone().unwrap_or_default();
            let object = format!("AseBackendGrant/{namespace}/{name}");
            let mut nsgs = Vec::new();
            for (i, n) in g.spec.network_security_groups.iter().enumerate() {
                let field = format!("spec.networkSecurityGroups[{i}].resourceId");
                match ResourceId::parse(&n.resource_id) {
                    Ok(id) if id.is_type(crate::validate::NSG_TYPE) => nsgs.push(id),
                    Ok(_) => errors.push(PolicyError {
                        object: object.clone(),
                        field,
                        value: n.resource_id.clone(),
                        message: "is not a network security group id".into(),
                    }),
                    Err(e) => errors.push(PolicyError {
                        object: object.clone(),
                        field,
                        value: n.resource_id.clone(),
                        message: e.to_string(),
                    }),
                }
            }
            set.grants.push(Grant {
                namespace,
                name,
                network_security_groups: nsgs,
                to: g.spec.namespaces.iter().cloned().collect(),
            });
        }
        (set, errors)
    }

    /// This set with the labels of the namespaces it knows (for `namespaceSelector`).
    pub fn with_namespace_labels(
        mut self,
        labels: impl IntoIterator<Item = (String, BTreeMap<String, String>)>,
    ) -> Self {
        self.namespace_labels = labels.into_iter().collect();
        self
    }

    pub fn mode(&self) -> TenancyMode {
        self.mode
    }

    /// True when `policy` applies to `namespace`: named, or selected by its labels.
    fn applies(&self, policy: &Policy, namespace: &str) -> bool {
        policy.namespaces.contains(namespace)
            || match (&policy.selector, self.namespace_labels.get(namespace)) {
                (Some(selector), Some(labels)) => selector.matches(labels),
                _ => false,
            }
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// True when a policy lets `namespace` write `id` (grants aside).
    pub fn may_write(&self, namespace: &str, id: &ResourceId) -> bool {
        self.mode == TenancyMode::Off
            || self
                .policies
                .iter()
                .filter(|p| self.applies(p, namespace))
                .any(|p| p.scopes.iter().any(|s| s.covers(id)))
    }

    /// The grants naming `nsg` for `namespace`, and whether each counts (its grantor may
    /// write the NSG: a namespace cannot give away what it does not own).
    fn grants_for<'a>(
        &'a self,
        namespace: &'a str,
        nsg: &'a ResourceId,
    ) -> impl Iterator<Item = (&'a Grant, bool)> + 'a {
        self.grants
            .iter()
            .filter(move |g| g.to.contains(namespace) && g.network_security_groups.contains(nsg))
            .map(move |g| (g, self.may_write(&g.namespace, nsg)))
    }

    /// Everything `spec` names that its namespace may not write; empty when allowed.
    /// Ids that do not parse are left to `validate`, which fails the spec anyway.
    pub fn decide(&self, spec: &AseConnectivity) -> Vec<Refusal> {
        let mut out = Vec::new();
        if self.mode == TenancyMode::Off {
            return out;
        }
        let namespace = spec.metadata.namespace.as_deref().unwrap_or("default");
        let policy_missing = || {
            format!(
                "an AseTenancyPolicy scope for namespace `{namespace}` (this resource, its resource group or its subscription)"
            )
        };
        let s = &spec.spec;
        let own = [
            (
                "spec.networkSecurityGroup.resourceId",
                Some(&s.network_security_group.resource_id),
            ),
            ("spec.subnet.resourceId", Some(&s.subnet.resource_id)),
            (
                "spec.routeTable.resourceId",
                s.route_table.as_ref().map(|r| &r.resource_id),
            ),
        ];
        for (field, raw) in own {
            let Some(raw) = raw else { continue };
            let Ok(id) = ResourceId::parse(raw) else {
                continue;
            };
            if !self.may_write(namespace, &id) {
                out.push(Refusal {
                    field: field.to_string(),
                    resource_id: raw.clone(),
                    missing: policy_missing(),
                });
            }
        }
        for (i, b) in s.backends.iter().enumerate() {
            let raw = &b.network_security_group.resource_id;
            let Ok(id) = ResourceId::parse(raw) else {
                continue;
            };
            if self.may_write(namespace, &id) {
                continue;
            }
            let grants: Vec<(&Grant, bool)> = self.grants_for(namespace, &id).collect();
            if grants.iter().any(|(_, counts)| *counts) {
                continue;
            }
            let mut missing = format!(
                "an AseBackendGrant for namespace `{namespace}` naming this NSG, in a namespace an AseTenancyPolicy lets write it, or {}",
                policy_missing()
            );
            for (g, _) in &grants {
                missing.push_str(&format!(
                    "; AseBackendGrant {}/{} names it but namespace `{}` may not write it",
                    g.namespace, g.name, g.namespace
                ));
            }
            out.push(Refusal {
                field: format!("spec.backends[{i}].networkSecurityGroup.resourceId"),
                resource_id: raw.clone(),
                missing,
            });
        }
        out
    }

    /// The refusals of every spec that has any, as spec errors (kind `NotPermitted`), keyed
    /// like the pipeline keys specs.
    pub fn refusals<'a>(
        &self,
        specs: impl IntoIterator<Item = &'a AseConnectivity>,
    ) -> BTreeMap<SpecKey, Vec<SpecError>> {
        let mut out = BTreeMap::new();
        if self.mode == TenancyMode::Off {
            return out;
        }
        for spec in specs {
            let refusals = self.decide(spec);
            if refusals.is_empty() {
                continue;
            }
            let key = spec.spec_key();
            out.insert(
                key.clone(),
                refusals.iter().map(|r| r.to_spec_error(&key)).collect(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn id(rg: &str, ty: &str, name: &str) -> String {
        format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/{ty}/{name}")
    }

    fn spec(namespace: &str, backend_nsg: Option<String>) -> AseConnectivity {
        let mut yaml = format!(
            r#"
apiVersion: asenet.io/v1alpha1
kind: AseConnectivity
metadata: {{name: ase, namespace: {namespace}}}
spec:
  environment: {{version: V2}}
  subnet: {{resourceId: "{}/subnets/ase"}}
  networkSecurityGroup: {{resourceId: "{}"}}
  routeTable: {{resourceId: "{}"}}
"#,
            id("team-a", "virtualNetworks", "vnet"),
            id("team-a", "networkSecurityGroups", "ase-nsg"),
            id("team-a", "routeTables", "ase-rt"),
        );
        if let Some(nsg) = backend_nsg {
            yaml.push_str(&format!(
                "  backends:\n  - {{name: db, address: 10.9.0.4, ports: [\"1433\"], networkSecurityGroup: {{resourceId: \"{nsg}\"}}}}\n"
            ));
        }
        serde_yaml::from_str(&yaml).unwrap()
    }

    fn policy(name: &str, namespaces: &[&str], scopes: Vec<AzureScope>) -> AseTenancyPolicy {
        AseTenancyPolicy {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: AseTenancyPolicySpec {
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                namespace_selector: None,
                scopes,
            },
        }
    }

    fn rg(group: &str) -> AzureScope {
        AzureScope {
            resource_group: Some(format!("/subscriptions/{SUB}/resourceGroups/{group}")),
            ..Default::default()
        }
    }

    fn grant(namespace: &str, nsg: &str, to: &[&str]) -> AseBackendGrant {
        AseBackendGrant {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: AseBackendGrantSpec {
                network_security_groups: vec![GrantedNsg {
                    resource_id: nsg.into(),
                }],
                namespaces: to.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    fn fields(refusals: &[Refusal]) -> Vec<&str> {
        refusals.iter().map(|r| r.field.as_str()).collect()
    }

    #[test]
    fn tenancy_off_allows_everything() {
        let s = spec("a", Some(id("team-b", "networkSecurityGroups", "db-nsg")));
        assert!(PolicySet::off().decide(&s).is_empty());
        assert!(PolicySet::off().refusals([&s]).is_empty());
    }

    #[test]
    fn enforce_without_policies_refuses_every_written_resource() {
        let (set, errors) = PolicySet::enforce([], []);
        assert!(errors.is_empty());
        let s = spec("a", Some(id("team-b", "networkSecurityGroups", "db-nsg")));
        assert_eq!(
            fields(&set.decide(&s)),
            [
                "spec.networkSecurityGroup.resourceId",
                "spec.subnet.resourceId",
                "spec.routeTable.resourceId",
                "spec.backends[0].networkSecurityGroup.resourceId",
            ]
        );
    }

    /// One row of a decision table: (case, policies, grants, spec namespace, names the back
    /// end, expected refused fields).
    type Case<'a> = (
        &'a str,
        Vec<AseTenancyPolicy>,
        Vec<AseBackendGrant>,
        &'a str,
        bool,
        Vec<&'a str>,
    );

    /// The back end every table's spec names when the row says so.
    fn db() -> String {
        id("team-b", "networkSecurityGroups", "db-nsg")
    }

    fn check_decisions(cases: Vec<Case>) {
        for (case, policies, grants, namespace, with_backend, expected) in cases {
            let (set, errors) = PolicySet::enforce(&policies, &grants);
            assert!(errors.is_empty(), "{case}: {errors:?}");
            let s = spec(namespace, with_backend.then(db));
            assert_eq!(fields(&set.decide(&s)), expected, "case: {case}");
        }
    }

    #[test]
    fn the_decision_table_over_namespaces_and_grants() {
        let db = db();
        let a_policy = policy("a", &["a"], vec![rg("team-a")]);
        let b_policy = policy("b", &["b"], vec![rg("team-b")]);
        let backend = "spec.backends[0].networkSecurityGroup.resourceId";
        let cases: Vec<Case> = vec![
            (
                "own group, no back end",
                vec![a_policy.clone()],
                vec![],
                "a",
                false,
                vec![],
            ),
            (
                "another namespace, same objects",
                vec![a_policy.clone()],
                vec![],
                "c",
                false,
                vec![
                    "spec.networkSecurityGroup.resourceId",
                    "spec.subnet.resourceId",
                    "spec.routeTable.resourceId",
                ],
            ),
            (
                "back end of team b without a grant",
                vec![a_policy.clone(), b_policy.clone()],
                vec![],
                "a",
                true,
                vec![backend],
            ),
            (
                "back end granted by its owner",
                vec![a_policy.clone(), b_policy.clone()],
                vec![grant("b", &db, &["a"])],
                "a",
                true,
                vec![],
            ),
            (
                "grant for another namespace",
                vec![a_policy.clone(), b_policy.clone()],
                vec![grant("b", &db, &["c"])],
                "a",
                true,
                vec![backend],
            ),
            (
                "grant from a namespace that does not own the NSG",
                vec![a_policy.clone()],
                vec![grant("b", &db, &["a"])],
                "a",
                true,
                vec![backend],
            ),
            (
                "self-granted by the requesting namespace",
                vec![a_policy.clone(), b_policy.clone()],
                vec![grant("a", &db, &["a"])],
                "a",
                true,
                vec![backend],
            ),
        ];
        check_decisions(cases);
    }

    #[test]
    fn the_decision_table_over_scopes() {
        let db = db();
        let a_policy = policy("a", &["a"], vec![rg("team-a")]);
        let cases: Vec<Case> = vec![
            (
                "subscription scope covers everything in it",
                vec![policy(
                    "all",
                    &["a"],
                    vec![AzureScope {
                        subscription: Some(SUB.to_uppercase()),
                        ..Default::default()
                    }],
                )],
                vec![],
                "a",
                true,
                vec![],
            ),
            (
                "exact NSG id covers the back end",
                vec![
                    a_policy.clone(),
                    policy(
                        "db",
                        &["a"],
                        vec![AzureScope {
                            resource_id: Some(db.to_uppercase()),
                            ..Default::default()
                        }],
                    ),
                ],
                vec![],
                "a",
                true,
                vec![],
            ),
            (
                "VNet id covers its subnets, not the NSG or route table",
                vec![policy(
                    "vnet",
                    &["a"],
                    vec![AzureScope {
                        resource_id: Some(id("team-a", "virtualNetworks", "vnet")),
                        ..Default::default()
                    }],
                )],
                vec![],
                "a",
                false,
                vec![
                    "spec.networkSecurityGroup.resourceId",
                    "spec.routeTable.resourceId",
                ],
            ),
            (
                "a name prefix is not a child",
                vec![policy(
                    "vnet",
                    &["a"],
                    vec![
                        AzureScope {
                            resource_id: Some(id("team-a", "virtualNetworks", "vn")),
                            ..Default::default()
                        },
                        rg("team-a-other"),
                    ],
                )],
                vec![],
                "a",
                false,
                vec![
                    "spec.networkSecurityGroup.resourceId",
                    "spec.subnet.resourceId",
                    "spec.routeTable.resourceId",
                ],
            ),
        ];
        check_decisions(cases);
    }

    #[test]
    fn a_refusal_names_the_field_the_resource_and_the_missing_grant() {
        let db = id("team-b", "networkSecurityGroups", "db-nsg");
        let (set, _) = PolicySet::enforce(
            &[policy("a", &["a"], vec![rg("team-a")])],
            &[grant("b", &db, &["a"])],
        );
        let refused = set.refusals([&spec("a", Some(db.clone()))]);
        let errors = &refused[&SpecKey::new("a", "ase")];
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!(e.kind, SpecErrorKind::NotPermitted);
        assert_eq!(e.field, "spec.backends[0].networkSecurityGroup.resourceId");
        assert_eq!(e.value, db);
        assert!(e.message.contains(&db), "{}", e.message);
        assert!(
            e.message
                .contains("AseBackendGrant for namespace `a` naming this NSG"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("AseBackendGrant b/db names it but namespace `b` may not write it"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_policy_entries_grant_nothing_and_are_reported() {
        let bad = policy(
            "p",
            &["a"],
            vec![
                AzureScope {
                    resource_group: Some("/subscriptions/x/resourceGroup/team-a".into()),
                    ..Default::default()
                },
                AzureScope::default(),
                AzureScope {
                    subscription: Some(SUB.into()),
                    resource_group: Some(format!("/subscriptions/{SUB}/resourceGroups/x")),
                    ..Default::default()
                },
                AzureScope {
                    subscription: Some("a/b".into()),
                    ..Default::default()
                },
            ],
        );
        let mut bad_grant = grant("b", "/subscriptions/s/resourceGroups/r", &["a"]);
        bad_grant.spec.network_security_groups.push(GrantedNsg {
            resource_id: id("team-b", "routeTables", "rt"),
        });
        let (set, errors) = PolicySet::enforce(&[bad], &[bad_grant]);
        let fields: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.object.as_str(), e.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("AseTenancyPolicy/p", "spec.scopes[0].resourceGroup"),
                ("AseTenancyPolicy/p", "spec.scopes[1]"),
                ("AseTenancyPolicy/p", "spec.scopes[2]"),
                ("AseTenancyPolicy/p", "spec.scopes[3].subscription"),
                (
                    "AseBackendGrant/b/db",
                    "spec.networkSecurityGroups[0].resourceId"
                ),
                (
                    "AseBackendGrant/b/db",
                    "spec.networkSecurityGroups[1].resourceId"
                ),
            ]
        );
        assert!(errors[0]
            .to_string()
            .contains("`/subscriptions/x/resourceGroup/team-a`"));
        assert_eq!(set.decide(&spec("a", None)).len(), 3);
    }

    #[test]
    fn a_namespace_selector_matches_only_namespaces_whose_labels_are_known_and_match() {
        let selector = |yaml: &str| -> AseTenancyPolicy {
            let mut p = policy("sel", &[], vec![rg("team-a")]);
            p.spec.namespace_selector = Some(serde_yaml::from_str(yaml).unwrap());
            p
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let known = [
            ("x".to_string(), labels(&[("team", "a")])),
            ("y".to_string(), labels(&[("team", "b")])),
            ("bare".to_string(), labels(&[])),
        ];
        // (selector, namespace, allowed)
        let cases = [
            ("matchLabels: {team: a}", "x", true),
            ("matchLabels: {team: a}", "y", false),
            ("matchLabels: {team: a}", "unknown", false),
            (
                "matchExpressions: [{key: team, operator: NotIn, values: [b]}]",
                "x",
                true,
            ),
            (
                "matchExpressions: [{key: team, operator: NotIn, values: [b]}]",
                "bare",
                true,
            ),
            (
                "matchExpressions: [{key: team, operator: NotIn, values: [b]}]",
                "y",
                false,
            ),
            // Not known: no selector selects it, not even one every known label set passes.
            (
                "matchExpressions: [{key: team, operator: NotIn, values: [b]}]",
                "unknown",
                false,
            ),
            (
                "matchExpressions: [{key: team, operator: Exists}]",
                "bare",
                false,
            ),
            ("{}", "bare", true),
            ("{}", "unknown", false),
        ];
        for (yaml, namespace, allowed) in cases {
            let (set, errors) = PolicySet::enforce(&[selector(yaml)], []);
            assert!(errors.is_empty(), "{yaml}: {errors:?}");
            let set = set.with_namespace_labels(known.clone());
            assert_eq!(
                set.decide(&spec(namespace, None)).is_empty(),
                allowed,
                "{yaml} on namespace {namespace}"
            );
        }
        let (set, errors) = PolicySet::enforce(
            &[selector(
                "matchExpressions: [{key: team, operator: Maybe, values: [a]}]",
            )],
            [],
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.namespaceSelector");
        assert!(errors[0].to_string().contains("Maybe"), "{}", errors[0]);
        let set = set.with_namespace_labels(known);
        assert_eq!(
            set.decide(&spec("x", None)).len(),
            3,
            "a bad selector selects nothing"
        );
    }

    #[test]
    fn the_mode_parses_from_its_flag_value_and_rejects_others() {
        assert_eq!("off".parse(), Ok(TenancyMode::Off));
        assert_eq!("enforce".parse(), Ok(TenancyMode::Enforce));
        let e = "Enforce".parse::<TenancyMode>().unwrap_err();
        assert!(e.to_string().contains("`Enforce`"));
    }
}
