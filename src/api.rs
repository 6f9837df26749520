//! The `AseConnectivity` custom resource (group `asenet.io`, version `v1alpha1`): what a
//! user declares per App Service Environment, and the status asenet reports back.
//!
//! These are the raw, user-facing types: strings where the user writes addresses, ids and
//! ports, so that a typo reaches `validate` and gets an error naming the field, instead of
//! failing deserialisation without context. The same YAML is read by the CLI (`-f PATH`)
//! and applied with kubectl for the operator. See docs/design.md section 2.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The `x_kube(validation)` attributes become CEL rules (`x-kubernetes-validations`) in the
// generated CRD, so the API server rejects malformed ids and bands at `kubectl apply`;
// `validate` checks the same and more for the CLI, which has no API server. Strings that CEL
// rules read carry a maxLength (and lists a maxItems) so the API server's cost estimate of
// the rules stays bounded.
/// Desired network connectivity of one App Service Environment.
// Several printer columns share `type_ = "string"`, which clippy mistakes for a repeated
// attribute inside the derive's arguments.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "asenet.io",
    version = "v1alpha1",
    kind = "AseConnectivity",
    namespaced,
    status = "AseConnectivityStatus",
    shortname = "asec",
    doc = "Connectivity an Azure App Service Environment needs; asenet keeps the NSG rules and routes that implement it.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "InSync",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"InSync\")].status"
    ),
    printcolumn(name = "Changes", type_ = "integer", json_path = ".status.plan.total"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AseConnectivitySpec {
    /// `Apply` writes to Azure; `Plan` computes and reports the plan, never writes;
    /// `Observe` reports drift only.
    #[serde(default)]
    pub mode: Mode,
    /// What happens to the rules and routes this spec owns when the spec is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// The App Service Environment: its version and where its addresses come from.
    pub environment: EnvironmentSpec,
    /// The ASE's subnet (resource id). Its address range is read from Azure.
    #[x_kube(validation = Rule::new("self.resourceId.matches('^(?i)/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft[.]Network/virtualNetworks/[^/]+/subnets/[^/]+$')").message("subnet.resourceId must be /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}"))]
    pub subnet: ResourceRef,
    /// The NSG on the ASE's subnet: created if missing and associated with the subnet.
    pub network_security_group: NsgRef,
    /// Optional route table for the ASE's subnet (needed for forced tunneling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.resourceId.matches('^(?i)/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft[.]Network/routeTables/[^/]+$')").message("routeTable.resourceId must be /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/routeTables/{name}"))]
    pub route_table: Option<ResourceRef>,
    /// Address ranges inside the virtual network topology beyond the VNet's own address
    /// space (peered VNets, on-premises over VPN/ExpressRoute).
    #[serde(default)]
    pub topology: TopologySpec,
    /// Who may call the ASE's apps, per service.
    #[serde(default)]
    pub inbound: Vec<InboundSpec>,
    /// Endpoints the apps call: asenet opens their NSG to the source address the endpoint
    /// will see (the ASE subnet inside the topology, the ASE's outbound addresses outside).
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub backends: Vec<BackendSpec>,
    /// Outbound routing requirements.
    #[serde(default)]
    pub outbound: OutboundSpec,
}

/// How asenet acts on a spec.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// Compute the plan and apply it.
    #[default]
    Apply,
    /// Compute the plan and report it; never write to Azure.
    Plan,
    /// Report drift only; never write to Azure.
    Observe,
}

/// What to do with owned Azure entries when the spec is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Remove the rules and routes this spec owns (and resources asenet created for it).
    #[default]
    Delete,
    /// Leave everything in Azure as it is.
    Orphan,
}

/// ASE version: decides the required rules (docs/domain.md 1.2-1.4).
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum AseVersion {
    V1,
    V2,
    V3,
}

/// The App Service Environment itself.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// `V1`, `V2` or `V3`.
    pub version: AseVersion,
    /// `Microsoft.Web/hostingEnvironments` resource id; the ASE's addresses are read from it
    /// (`capacities/virtualip`, docs/domain.md 1.5) unless `addresses` gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^(?i)/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft[.]Web/hostingEnvironments/[^/]+$')").message("environment.resourceId must be /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/hostingEnvironments/{name}"))]
    pub resource_id: Option<String>,
    /// Explicit addresses, overriding what Azure reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<AddressesSpec>,
}

/// Explicit ASE addresses.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressesSpec {
    /// The public VIP (inbound, and outbound NAT address unless `outbound` says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_vip: Option<String>,
    /// Addresses seen by callees outside the topology; defaults to the public VIP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<String>,
    /// Internal load balancer address (ILB ASE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_ip: Option<String>,
}

/// A reference to an Azure resource by id.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    /// Full ARM resource id.
    #[schemars(length(max = 1024))]
    pub resource_id: String,
}

/// An NSG this spec contributes rules to, with the priority band its rules may use.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NsgRef {
    /// Full ARM resource id of the NSG.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^(?i)/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft[.]Network/networkSecurityGroups/[^/]+$')").message("networkSecurityGroup.resourceId must be /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups/{name}"))]
    pub resource_id: String,
    /// The band this spec's rules may use (default 100-1999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<PriorityBandSpec>,
}

/// An inclusive band of NSG priorities, both ends in 100-4096.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.from < self.to").message("priorities.from must be lower than priorities.to"))]
#[x_kube(validation = Rule::new("self.from >= 100 && self.from <= 4096 && self.to >= 100 && self.to <= 4096").message("priorities must lie within 100-4096 (the range Azure allows for NSG rules)"))]
pub struct PriorityBandSpec {
    #[schemars(range(min = 100, max = 4096))]
    pub from: i64,
    #[schemars(range(min = 100, max = 4096))]
    pub to: i64,
}

/// The virtual network topology beyond the VNet itself.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpec {
    /// Extra CIDR prefixes inside the topology (peered VNets, on-premises ranges).
    #[serde(default)]
    pub extra_prefixes: Vec<String>,
}

/// One kind of inbound traffic and who may send it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundSpec {
    /// Short name, unique in the spec; part of the Azure rule name.
    pub name: String,
    /// A named service: `Http`, `Https`, `Ftp`, `RemoteDebugging`, `WebDeploy`. Either this
    /// or `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Raw destination ports or ranges (`"8080"`, `"9000-9010"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<IntOrString>,
    /// Protocol for raw ports: `Tcp` (default), `Udp` or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Allowed sources.
    pub from: Vec<SourceSpec>,
}

/// A source of inbound traffic: exactly one of the fields. Every address (`0.0.0.0/0`,
/// `*`) is only admitted by `any: true`, never by a `cidr`, so that the whole Internet is
/// never opened by a typo (a `/0` or a host address with a lost prefix length).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// An IPv4 address or CIDR (host bits clear; not `/0`: use `any`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `true` admits every source address: the whole Internet. The explicit opt-in for
    /// what `0.0.0.0/0` or `*` would mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    /// A service tag (`VirtualNetwork`, `AzureFrontDoor.Backend`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tag: Option<String>,
    /// Another AseConnectivity spec: its ASE's outbound addresses (calls between ASEs are
    /// Internet calls, docs/domain.md 1.2.4). Naming this spec itself admits self-calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_ref: Option<EnvironmentRef>,
}

/// A reference to another AseConnectivity spec.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentRef {
    pub name: String,
    /// Defaults to the referring spec's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An endpoint the ASE's apps call, protected by an NSG asenet opens for them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// Short name, unique in the spec; part of the Azure rule name.
    pub name: String,
    /// IPv4 address or CIDR of the endpoint.
    pub address: String,
    /// Destination ports or ranges.
    pub ports: Vec<IntOrString>,
    /// `Tcp` (default), `Udp` or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The NSG protecting the endpoint.
    pub network_security_group: NsgRef,
}

/// Outbound requirements.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundSpec {
    /// Set when ExpressRoute or a VPN advertises routes that would capture the ASE's
    /// Internet-bound traffic (docs/domain.md 1.2.7, 1.3.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_tunneling: Option<ForcedTunnelingSpec>,
}

/// Forced tunneling and how asenet keeps the ASE's outbound Internet path.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForcedTunnelingSpec {
    /// The prefixes ExpressRoute/VPN advertises into the VNet (`0.0.0.0/0` for a default route).
    pub advertised_prefixes: Vec<String>,
    /// How to keep the Internet path.
    #[serde(default)]
    pub strategy: TunnelingStrategy,
    /// Service tags whose prefixes must reach the Internet directly (default:
    /// `AppServiceManagement` for V1/V2, none for V3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_tags: Option<Vec<String>>,
}

/// How routes keep the ASE's required traffic off the tunnel.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TunnelingStrategy {
    /// `0.0.0.0/0 -> Internet` whenever 0.0.0.0/0 is advertised; when more specific
    /// prefixes are advertised, also one route per required prefix (split to be at least
    /// as specific as the advertisements, aggregated to fit the route table).
    #[default]
    DirectInternet,
    /// One route per required service tag (`AppServiceManagement -> Internet`), where the
    /// tag may be used in routes (docs/domain.md 3.3), plus `0.0.0.0/0 -> Internet`
    /// whenever 0.0.0.0/0 is advertised.
    ServiceTag,
}

/// What asenet reports back.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_formats)]
pub struct AseConnectivityStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Resolved`, `InSync`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<ResolvedAddresses>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSummary>,
    /// The rules this spec owns, with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<OwnedRuleStatus>,
}

/// The addresses the resolver used for this ASE.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedAddresses {
    /// Source address seen by callees outside the topology.
    #[serde(default)]
    pub internet: Vec<String>,
    /// Source range seen by callees inside the topology (the ASE subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_network: Option<String>,
}

/// Counts of planned changes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub create: u32,
    pub update: u32,
    pub delete: u32,
    pub total: u32,
}

/// One owned rule or route.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnedRuleStatus {
    /// The NSG or route table id.
    pub parent: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    pub reason: String,
}

/// Rewrites the integer formats schemars derives from Rust's types (`uint32` for `u32`,
/// `uint8`, `int16`, ...) to the two the Kubernetes API server knows, `int32` and `int64`:
/// any other format makes every `kubectl apply` of the CRD print `Warning: unrecognized
/// format "uint32"`. An unsigned type keeps its `minimum: 0`, so nothing is lost; `u32`
/// becomes `int64` because its values do not all fit an `int32`. Applied to the status
/// type, where the unsigned counters and priorities live; a test over the whole generated
/// CRD keeps the spec free of them too.
fn kubernetes_formats(schema: &mut schemars::Schema) {
    if let Some(obj) = schema.as_object_mut() {
        let format = obj.get("format").and_then(|f| f.as_str());
        let known = match format {
            None | Some("int32" | "int64") => None,
            Some("int8" | "int16" | "uint8" | "uint16") => Some("int32"),
            Some(_) => Some("int64"),
        };
        // `Option<u32>` is `type: [integer, "null"]` until kube rewrites it to `nullable`.
        let integer = match obj.get("type") {
            Some(serde_json::Value::String(t)) => t == "integer",
            Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
            _ => false,
        };
        if let (true, Some(known)) = (integer, known) {
            obj.insert("format".into(), known.into());
        }
    }
    schemars::transform::transform_subschemas(&mut kubernetes_formats, schema);
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::Value;

    /// Formats the API server recognises (apiextensions-apiserver
    /// `pkg/apiserver/validation/formats.go`, compared with `-` removed), plus the integer
    /// and number formats of OpenAPI that it accepts on those types.
    const STRING_FORMATS: &[&str] = &[
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
    ];

    fn unknown_formats(path: &str, node: &Value, out: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(format)) = map.get("format") {
                    let known = match map.get("type").and_then(Value::as_str) {
                        Some("integer") => ["int32", "int64"].contains(&format.as_str()),
                        Some("number") => ["float", "double"].contains(&format.as_str()),
                        _ => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
                    };
                    if !known {
                        out.push(format!("{path}: {format}"));
                    }
                }
                for (k, v) in map {
                    unknown_formats(&format!("{path}.{k}"), v, out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    unknown_formats(&format!("{path}[{i}]"), v, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_format_in_the_generated_crd_is_one_the_api_server_knows() {
        let crd = serde_json::to_value(super::AseConnectivity::crd()).unwrap();
        let mut unknown = Vec::new();
        unknown_formats("crd", &crd, &mut unknown);
        assert!(unknown.is_empty(), "unrecognized formats: {unknown:#?}");
        // The walk does see formats: the status counters are integers with a format.
        let plan = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["plan"]["properties"]["total"];
        assert_eq!(plan["format"], "int64", "{plan}");
        assert_eq!(plan["minimum"], 0.0, "{plan}");
    }
}
