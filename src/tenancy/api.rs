//! The tenancy custom resources (group `asenet.io`, version `v1alpha1`):
//!
//! - `AseTenancyPolicy` (cluster-scoped, created by the cluster's administrators): which
//!   namespaces may write which Azure scopes (subscriptions, resource groups, resource ids);
//! - `AseBackendGrant` (namespaced, created by the owner of a back-end NSG in the owner's
//!   namespace, like Gateway API's `ReferenceGrant`): which other namespaces may add rules
//!   to that NSG through `backends`.
//!
//! Raw, user-facing types as with `AseConnectivity`: ids are strings so that a typo reaches
//! [`super::PolicySet`] and gets an error naming the object, the field and the value. The
//! operator reads them from reflector stores, the CLI from `--policy FILE`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Which namespaces may write which Azure scopes.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "asenet.io",
    version = "v1alpha1",
    kind = "AseTenancyPolicy",
    shortname = "asetp",
    doc = "Azure scopes (subscriptions, resource groups, resource ids) that AseConnectivity specs in the named namespaces may write, when the operator runs with --tenancy enforce.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AseTenancyPolicySpec {
    /// The namespaces this policy applies to (exact names).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub namespaces: Vec<String>,
    /// More namespaces, by their labels (a standard label selector; `{}` selects every
    /// namespace). A namespace matches when it is named in `namespaces` or selected here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// What their specs may write: a spec's NSG, subnet and route table, and the NSGs of its
    /// back ends, must each lie in one of these scopes (a back-end NSG may instead be
    /// granted by an `AseBackendGrant`).
    #[schemars(length(max = 256))]
    pub scopes: Vec<AzureScope>,
}

/// One Azure scope; exactly one field is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.subscription) ? 1 : 0) + (has(self.resourceGroup) ? 1 : 0) + (has(self.resourceId) ? 1 : 0) == 1").message("set exactly one of subscription, resourceGroup, resourceId"))]
pub struct AzureScope {
    /// A subscription id: every resource in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub subscription: Option<String>,
    /// A resource group, `/subscriptions/{sub}/resourceGroups/{rg}`: every resource in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^(?i)/subscriptions/[^/]+/resourceGroups/[^/]+$')").message("resourceGroup must be /subscriptions/{sub}/resourceGroups/{rg}"))]
    pub resource_group: Option<String>,
    /// One resource id: that resource and its child resources (a virtual network's
    /// subnets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^(?i)/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+/[^/]+/[^/]+(/[^/]+/[^/]+)*$')").message("resourceId must be /subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}"))]
    pub resource_id: Option<String>,
}

/// Lets specs in other namespaces add rules to back-end NSGs this namespace owns.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "asenet.io",
    version = "v1alpha1",
    kind = "AseBackendGrant",
    namespaced,
    shortname = "asebg",
    doc = "Lets AseConnectivity specs in other namespaces name these NSGs in their backends; counts only for NSGs an AseTenancyPolicy lets this namespace write.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AseBackendGrantSpec {
    /// The back-end NSGs the grant covers.
    #[schemars(length(max = 256))]
    pub network_security_groups: Vec<GrantedNsg>,
    /// The namespaces whose specs may name them in `backends` (exact names).
    #[schemars(length(max = 256))]
    pub namespaces: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantedNsg {
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^(?i)/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft[.]Network/networkSecurityGroups/[^/]+$')").message("resourceId must be /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups/{name}"))]
    pub resource_id: String,
}
