//! Resource kinds the mock serves and how their ids are spelled (domain.md 4.1, 1.5).

use serde::{Deserialize, Serialize};

/// Resource-provider namespace, used to pick the accepted api-versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Resources,
    Network,
    Web,
}

impl Namespace {
    pub fn name(self) -> &'static str {
        match self {
            Self::Resources => "Microsoft.Resources",
            Self::Network => "Microsoft.Network",
            Self::Web => "Microsoft.Web",
        }
    }

    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment.to_ascii_lowercase().as_str() {
            "microsoft.resources" => Some(Self::Resources),
            "microsoft.network" => Some(Self::Network),
            "microsoft.web" => Some(Self::Web),
            _ => None,
        }
    }
}

/// A top-level (tracked) resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    ResourceGroup,
    NetworkSecurityGroup,
    RouteTable,
    VirtualNetwork,
    HostingEnvironment,
}

impl Kind {
    pub const PROVIDER_KINDS: [Kind; 4] = [
        Kind::NetworkSecurityGroup,
        Kind::RouteTable,
        Kind::VirtualNetwork,
        Kind::HostingEnvironment,
    ];

    pub fn namespace(self) -> Namespace {
        match self {
            Self::ResourceGroup => Namespace::Resources,
            Self::HostingEnvironment => Namespace::Web,
            _ => Namespace::Network,
        }
    }

    /// The collection segment in URLs and ids (create-time casing of ARM).
    pub fn segment(self) -> &'static str {
        match self {
            Self::ResourceGroup => "resourceGroups",
            Self::NetworkSecurityGroup => "networkSecurityGroups",
            Self::RouteTable => "routeTables",
            Self::VirtualNetwork => "virtualNetworks",
            Self::HostingEnvironment => "hostingEnvironments",
        }
    }

    /// The ARM `type` field.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::ResourceGroup => "Microsoft.Resources/resourceGroups",
            Self::NetworkSecurityGroup => "Microsoft.Network/networkSecurityGroups",
            Self::RouteTable => "Microsoft.Network/routeTables",
            Self::VirtualNetwork => "Microsoft.Network/virtualNetworks",
            Self::HostingEnvironment => "Microsoft.Web/hostingEnvironments",
        }
    }

    /// A short label for statistics.
    pub fn label(self) -> &'static str {
        match self {
            Self::ResourceGroup => "resourceGroups",
            other => other.segment(),
        }
    }

    pub fn from_segment(namespace: Namespace, segment: &str) -> Option<Self> {
        let segment = segment.to_ascii_lowercase();
        Self::PROVIDER_KINDS.into_iter().find(|kind| {
            kind.namespace() == namespace && kind.segment().eq_ignore_ascii_case(&segment)
        })
    }

    pub fn children(self) -> &'static [ChildKind] {
        match self {
            Self::NetworkSecurityGroup => {
                &[ChildKind::SecurityRule, ChildKind::DefaultSecurityRule]
            }
            Self::RouteTable => &[ChildKind::Route],
            Self::VirtualNetwork => &[ChildKind::Subnet],
            _ => &[],
        }
    }

    /// Whether clients may PUT/DELETE this kind through the mock.
    pub fn writable(self) -> bool {
        !matches!(self, Self::HostingEnvironment)
    }

    /// The id of a resource of this kind.
    pub fn id(self, subscription: &str, resource_group: &str, name: &str) -> String {
        match self {
            Self::ResourceGroup => format!("/subscriptions/{subscription}/resourceGroups/{name}"),
            _ => format!(
                "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{}/{}/{name}",
                self.namespace().name(),
                self.segment()
            ),
        }
    }
}

/// A child resource kind, stored inline in its parent's `properties` (domain.md 4.1, 3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    SecurityRule,
    DefaultSecurityRule,
    Route,
    Subnet,
}

impl ChildKind {
    /// Both the URL segment and the parent's array property.
    pub fn segment(self) -> &'static str {
        match self {
            Self::SecurityRule => "securityRules",
            Self::DefaultSecurityRule => "defaultSecurityRules",
            Self::Route => "routes",
            Self::Subnet => "subnets",
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            Self::SecurityRule => "Microsoft.Network/networkSecurityGroups/securityRules",
            Self::DefaultSecurityRule => {
                "Microsoft.Network/networkSecurityGroups/defaultSecurityRules"
            }
            Self::Route => "Microsoft.Network/routeTables/routes",
            Self::Subnet => "Microsoft.Network/virtualNetworks/subnets",
        }
    }

    pub fn parent(self) -> Kind {
        match self {
            Self::SecurityRule | Self::DefaultSecurityRule => Kind::NetworkSecurityGroup,
            Self::Route => Kind::RouteTable,
            Self::Subnet => Kind::VirtualNetwork,
        }
    }

    pub fn writable(self) -> bool {
        !matches!(self, Self::DefaultSecurityRule)
    }

    pub fn from_segment(parent: Kind, segment: &str) -> Option<Self> {
        parent
            .children()
            .iter()
            .copied()
            .find(|child| child.segment().eq_ignore_ascii_case(segment))
    }
}
