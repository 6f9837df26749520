//! Parsing ARM request paths (domain.md 4.1, 4.5, 1.5).
//!
//! Segments are matched case-insensitively, as ARM does (RPC common-api-details, quoted in
//! domain.md 1.5); names keep the casing of the request so that create-time casing can be
//! echoed in ids (domain.md 4.10).

use http::StatusCode;

use crate::error::ArmError;
use crate::model::{ChildKind, Kind, Namespace};

/// What an ARM path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/subscriptions/{sub}/resourcegroups`
    ResourceGroups { sub: String },
    /// `/subscriptions/{sub}/resourcegroups/{rg}`
    ResourceGroup { sub: String, rg: String },
    /// Top-level collection at subscription (`rg: None`) or resource-group scope.
    Collection {
        sub: String,
        rg: Option<String>,
        kind: Kind,
    },
    Item {
        sub: String,
        rg: String,
        kind: Kind,
        name: String,
    },
    ChildCollection {
        sub: String,
        rg: String,
        kind: Kind,
        name: String,
        child: ChildKind,
    },
    ChildItem {
        sub: String,
        rg: String,
        kind: Kind,
        name: String,
        child: ChildKind,
        child_name: String,
    },
    /// `hostingEnvironments/{name}/capacities/virtualip` (domain.md 1.5).
    AseVip {
        sub: String,
        rg: String,
        name: String,
    },
    /// `hostingEnvironments/{name}/inboundNetworkDependenciesEndpoints` (domain.md 1.5).
    AseInbound {
        sub: String,
        rg: String,
        name: String,
    },
    /// `/subscriptions/{sub}/providers/Microsoft.Network/locations/{loc}/serviceTags`
    /// (`ServiceTags_List`, domain.md 5.1).
    ServiceTags { sub: String },
    /// `/subscriptions/{sub}/providers/Microsoft.Network/locations/{loc}/operations/{id}`
    OperationStatus { sub: String, id: String },
    /// `/subscriptions/{sub}/providers/Microsoft.Network/locations/{loc}/operationResults/{id}`
    OperationResult { sub: String, id: String },
}

impl Target {
    pub fn subscription(&self) -> &str {
        match self {
            Self::ResourceGroups { sub }
            | Self::ResourceGroup { sub, .. }
            | Self::Collection { sub, .. }
            | Self::Item { sub, .. }
            | Self::ChildCollection { sub, .. }
            | Self::ChildItem { sub, .. }
            | Self::AseVip { sub, .. }
            | Self::AseInbound { sub, .. }
            | Self::ServiceTags { sub }
            | Self::OperationStatus { sub, .. }
            | Self::OperationResult { sub, .. } => sub,
        }
    }

    pub fn namespace(&self) -> Namespace {
        match self {
            Self::ResourceGroups { .. } | Self::ResourceGroup { .. } => Namespace::Resources,
            Self::Collection { kind, .. }
            | Self::Item { kind, .. }
            | Self::ChildCollection { kind, .. }
            | Self::ChildItem { kind, .. } => kind.namespace(),
            Self::AseVip { .. } | Self::AseInbound { .. } => Namespace::Web,
            Self::ServiceTags { .. }
            | Self::OperationStatus { .. }
            | Self::OperationResult { .. } => Namespace::Network,
        }
    }

    /// Label for statistics ("networkSecurityGroups", "securityRules", "operations", ...).
    pub fn label(&self) -> &'static str {
        match self {
            Self::ResourceGroups { .. } | Self::ResourceGroup { .. } => "resourceGroups",
            Self::Collection { kind, .. } | Self::Item { kind, .. } => kind.label(),
            Self::ChildCollection { child, .. } | Self::ChildItem { child, .. } => child.segment(),
            Self::AseVip { .. } => "hostingEnvironments/capacities",
            Self::AseInbound { .. } => "hostingEnvironments/inboundNetworkDependenciesEndpoints",
            Self::ServiceTags { .. } => "serviceTags",
            Self::OperationStatus { .. } => "operations",
            Self::OperationResult { .. } => "operationResults",
        }
    }
}

fn not_found(path: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("The requested path '{path}' is not served by this resource manager."),
    )
}

/// Decode `%XX` escapes; `None` when the escapes are malformed or not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parse an ARM path (without query string).
pub fn parse(path: &str) -> Result<Target, ArmError> {
    let trimmed = path.trim_end_matches('/');
    let raw: Vec<&str> = trimmed.split('/').skip(1).collect();
    let segments: Vec<String> = raw
        .iter()
        .map(|s| percent_decode(s))
        .collect::<Option<_>>()
        .ok_or_else(|| not_found(path))?;
    if segments.iter().any(String::is_empty) {
        return Err(not_found(path));
    }
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let seg = |i: usize| segments[i].clone();

    if lower.len() < 3 || lower[0] != "subscriptions" {
        return Err(not_found(path));
    }
    let sub = seg(1);
    match lower[2] {
        "resourcegroups" => match lower.len() {
            3 => Ok(Target::ResourceGroups { sub }),
            4 => Ok(Target::ResourceGroup { sub, rg: seg(3) }),
            n if n >= 7 && lower[4] == "providers" => {
                let namespace = Namespace::from_segment(lower[5]).ok_or_else(|| not_found(path))?;
                parse_provider(
                    path,
                    sub,
                    Some(seg(3)),
                    namespace,
                    &segments[6..],
                    &lower[6..],
                )
            }
            _ => Err(not_found(path)),
        },
        "providers" if lower.len() >= 5 => {
            let namespace = Namespace::from_segment(lower[3]).ok_or_else(|| not_found(path))?;
            parse_provider(path, sub, None, namespace, &segments[4..], &lower[4..])
        }
        _ => Err(not_found(path)),
    }
}

fn parse_provider(
    path: &str,
    sub: String,
    rg: Option<String>,
    namespace: Namespace,
    segments: &[String],
    lower: &[&str],
) -> Result<Target, ArmError> {
    // The Service Tag Discovery API lives at subscription scope too (domain.md 5.1).
    if rg.is_none()
        && namespace == Namespace::Network
        && lower.len() == 3
        && lower[0] == "locations"
        && lower[2] == "servicetags"
    {
        return Ok(Target::ServiceTags { sub });
    }
    // Operation status and result endpoints live at subscription scope (domain.md 4.5).
    if rg.is_none()
        && namespace == Namespace::Network
        && lower.len() == 4
        && lower[0] == "locations"
    {
        let id = segments[3].clone();
        return match lower[2] {
            "operations" => Ok(Target::OperationStatus { sub, id }),
            "operationresults" => Ok(Target::OperationResult { sub, id }),
            _ => Err(not_found(path)),
        };
    }
    let kind = Kind::from_segment(namespace, lower[0]).ok_or_else(|| {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type '{}' could not be found in the namespace '{}'.",
                segments[0],
                namespace.name()
            ),
        )
    })?;
    let Some(rg) = rg else {
        return match lower.len() {
            1 => Ok(Target::Collection {
                sub,
                rg: None,
                kind,
            }),
            _ => Err(not_found(path)),
        };
    };
    let name = || segments[1].clone();
    match lower.len() {
        1 => Ok(Target::Collection {
            sub,
            rg: Some(rg),
            kind,
        }),
        2 => Ok(Target::Item {
            sub,
            rg,
            kind,
            name: name(),
        }),
        3 if kind == Kind::HostingEnvironment
            && lower[2] == "inboundnetworkdependenciesendpoints" =>
        {
            Ok(Target::AseInbound {
                sub,
                rg,
                name: name(),
            })
        }
        4 if kind == Kind::HostingEnvironment
            && lower[2] == "capacities"
            && lower[3] == "virtualip" =>
        {
            Ok(Target::AseVip {
                sub,
                rg,
                name: name(),
            })
        }
        3 | 4 => {
            let child = ChildKind::from_segment(kind, lower[2]).ok_or_else(|| not_found(path))?;
            if lower.len() == 3 {
                Ok(Target::ChildCollection {
                    sub,
                    rg,
                    kind,
                    name: name(),
                    child,
                })
            } else {
                Ok(Target::ChildItem {
                    sub,
                    rg,
                    kind,
                    name: name(),
                    child,
                    child_name: segments[3].clone(),
                })
            }
        }
        _ => Err(not_found(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_case_insensitively_and_keep_name_casing() {
        let t = parse("/SUBSCRIPTIONS/s1/resourcegroups/MyRg/providers/microsoft.network/NETWORKSECURITYGROUPS/Nsg1/securityrules/R1").unwrap();
        assert_eq!(
            t,
            Target::ChildItem {
                sub: "s1".into(),
                rg: "MyRg".into(),
                kind: Kind::NetworkSecurityGroup,
                name: "Nsg1".into(),
                child: ChildKind::SecurityRule,
                child_name: "R1".into()
            }
        );
        assert_eq!(
            parse(
                "/subscriptions/s/providers/Microsoft.Network/locations/westeurope/operations/abc"
            )
            .unwrap(),
            Target::OperationStatus {
                sub: "s".into(),
                id: "abc".into()
            }
        );
        assert!(matches!(
            parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/hostingEnvironments/a/capacities/virtualip"),
            Ok(Target::AseVip { .. })
        ));
        assert!(matches!(
            parse("/subscriptions/s/providers/Microsoft.Network/routeTables"),
            Ok(Target::Collection {
                rg: None,
                kind: Kind::RouteTable,
                ..
            })
        ));
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in ["/", "/foo", "/subscriptions", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/bogus/x",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n/bogus/x",
            "/subscriptions/s//x", "/subscriptions/%zz/resourceGroups"] {
            assert_eq!(parse(path).unwrap_err().status, StatusCode::NOT_FOUND, "{path}");
        }
    }
}
