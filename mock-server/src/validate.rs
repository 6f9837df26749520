//! Validation and canonical form of request bodies, with NRP's error codes.
//!
//! Every PUT body (and the seed, which goes through the same code) is checked here and turned
//! into the stored, canonical JSON that GET returns. The rules and codes come from
//! domain.md 2.1 (rule fields), 2.2 (names), 2.4 (default rules), 2.8 (rule validation
//! errors), 3.1 and 3.7 (routes), 4.3 and 4.4 (shapes and PUT semantics). Codes marked
//! "unconfirmed" in the README are the mock's choice where domain.md 7 lists an open question.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::error::ArmError;
use crate::model::{ChildKind, Kind};

/// Security rules per NSG (domain.md 2.7).
pub const MAX_RULES: usize = 1000;
/// Routes per route table (domain.md 3.6).
pub const MAX_ROUTES: usize = 400;

type Result<T> = std::result::Result<T, ArmError>;

/// Check a resource name against domain.md 2.2.
pub fn name(name: &str, kind_is_vnet: bool) -> Result<()> {
    let (min, max) = if kind_is_vnet { (2, 64) } else { (1, 80) };
    let chars: Vec<char> = name.chars().collect();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = chars.len() >= min
        && chars.len() <= max
        && chars.iter().all(|&c| word(c) || c == '.' || c == '-')
        && chars.first().is_some_and(|&c| c.is_ascii_alphanumeric())
        && chars.last().is_some_and(|&c| word(c));
    if ok {
        Ok(())
    } else {
        Err(ArmError::bad_request(
            "InvalidResourceName",
            format!(
                "Resource name {name} is invalid. The name can be up to {max} characters long. It must begin \
                 with a word character, and it must end with a word character or with '_'. The name may \
                 contain word characters or '.', '-', '_'."
            ),
        ))
    }
}

/// Resource group names: 1-90 of alphanumerics, `_`, `-`, `.`, `(`, `)`, not ending in `.`.
pub fn resource_group_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 90
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(ArmError::bad_request(
            "InvalidResourceGroupName",
            format!("Resource group name '{name}' is invalid."),
        ))
    }
}

/// Parse a request body into a JSON object (`InvalidRequestFormat` otherwise).
pub fn object(body: &[u8]) -> Result<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ArmError::invalid_request_format(
            "The request body is empty.",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ArmError::invalid_request_format(
            "The request body must be a JSON object.",
        )),
        Err(err) => Err(ArmError::invalid_request_format(err)),
    }
}

fn bad_format(message: impl std::fmt::Display) -> ArmError {
    ArmError::invalid_request_format(message)
}

/// The `properties` object of a body (absent or null = empty).
fn properties(body: &Map<String, Value>) -> Result<Map<String, Value>> {
    match body.get("properties") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(bad_format("'properties' must be an object.")),
    }
}

fn opt_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(bad_format(format!("'{key}' must be a string."))),
    }
}

fn opt_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad_format(format!("'{key}' must be a boolean."))),
    }
}

fn opt_str_list(map: &Map<String, Value>, key: &str) -> Result<Vec<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad_format(format!("'{key}' must be a list of strings.")))
            })
            .collect(),
        Some(_) => Err(bad_format(format!("'{key}' must be a list of strings."))),
    }
}

fn opt_array<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a [Value]> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(bad_format(format!("'{key}' must be an array."))),
    }
}

fn canonical_enum(value: &str, field: &str, allowed: &[&str]) -> Result<String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value))
        .map(|a| (*a).to_owned())
        .ok_or_else(|| {
            bad_format(format!(
                "Value '{value}' is not valid for '{field}'; expected one of {}.",
                allowed.join(", ")
            ))
        })
}

/// `location` normalised as ARM returns it ("West Europe" -> "westeurope").
pub fn normalize_location(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Location and tags of a tracked resource (domain.md 4.3, 4.4: location cannot change).
pub fn location_and_tags(
    body: &Map<String, Value>,
    existing_location: Option<&str>,
    id: &str,
) -> Result<(String, Option<Value>)> {
    let location = match (opt_str(body, "location")?, existing_location) {
        (Some(given), Some(existing)) => {
            let given = normalize_location(given);
            if given != existing {
                return Err(ArmError::bad_request(
                    "InvalidResourceLocation",
                    format!(
                        "The resource '{id}' already exists in location '{existing}'. A resource with \
                         the same name cannot be created in location '{given}'."
                    ),
                ));
            }
            given
        }
        (Some(given), None) if !given.trim().is_empty() => normalize_location(given),
        (None, Some(existing)) => existing.to_owned(),
        _ => {
            return Err(ArmError::bad_request(
                "LocationRequired",
                "The location property is required for this definition.",
            ))
        }
    };
    let tags = match body.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::Object(tags)) => {
            if tags.values().any(|v| !v.is_string()) {
                return Err(bad_format("Tag values must be strings."));
            }
            Some(Value::Object(tags.clone()))
        }
        Some(_) => Err(bad_format("'tags' must be an object."))?,
    };
    Ok((location, tags))
}

/// The envelope of a tracked resource.
fn tracked(
    id: &str,
    name: &str,
    kind: Kind,
    location: &str,
    tags: Option<Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    out.insert("name".into(), json!(name));
    out.insert("type".into(), json!(kind.type_name()));
    out.insert("location".into(), json!(location));
    if let Some(tags) = tags {
        out.insert("tags".into(), tags);
    }
    out
}

fn child_envelope(id: &str, name: &str, child: ChildKind, properties: Map<String, Value>) -> Value {
    json!({ "id": id, "name": name, "type": child.type_name(), "properties": properties })
}

/// Name of a child object in a parent's array (`name` required, domain.md 2.2).
fn child_name(item: &Value, what: &str) -> Result<String> {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_format(format!("Every item of '{what}' needs a string 'name'.")))?;
    name_check(name)?;
    Ok(name.to_owned())
}

fn name_check(n: &str) -> Result<()> {
    name(n, false)
}

fn child_properties(item: &Value) -> Result<Map<String, Value>> {
    match item {
        Value::Object(map) => properties(map),
        _ => Err(bad_format("Child resources must be objects.")),
    }
}

fn no_duplicates(names: &[String], what: &str) -> Result<()> {
    for (i, a) in names.iter().enumerate() {
        if names[..i].iter().any(|b| b.eq_ignore_ascii_case(a)) {
            return Err(bad_format(format!("Duplicate name '{a}' in '{what}'.")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Addresses and ports (domain.md 2.1, 2.5, 2.8)

/// Service tags accepted in rules and routes (domain.md 2.5, 3.3). Regional variants
/// (`Tag.Region`) of every tag except the three computed ones are accepted as well.
const SERVICE_TAGS: &[&str] = &[
    "VirtualNetwork",
    "AzureLoadBalancer",
    "Internet",
    "VIRTUAL_NETWORK",
    "AZURE_LOADBALANCER",
    "INTERNET",
    "AppServiceManagement",
    "AppService",
    "Sql",
    "SqlManagement",
    "Storage",
    "EventHub",
    "ServiceBus",
    "AzureCloud",
    "AzureMonitor",
    "AzureActiveDirectory",
    "AzureKeyVault",
    "AzureContainerRegistry",
    "AzureCosmosDB",
    "AzureTrafficManager",
    "ApiManagement",
    "AzureFrontDoor.Backend",
    "AzureFrontDoor.Frontend",
    "AzureFrontDoor.FirstParty",
    "GatewayManager",
    "AzureBackup",
    "AzureDevOps",
    "MicrosoftContainerRegistry",
    "AzurePlatformDNS",
    "AzurePlatformIMDS",
    "AzurePlatformLKM",
    "AzureUpdateDelivery",
    "GuestAndHybridManagement",
    "AzureResourceManager",
    "AzureSiteRecovery",
    "DataFactory",
    "HDInsight",
    "BatchNodeManagement",
    "LogicApps",
    "PowerBI",
    "AzureMachineLearning",
    "AzureDatabricks",
    "AzureConnectors",
    "ActionGroup",
    "AzureArcInfrastructure",
    "AzureSignalR",
];

const COMPUTED_TAGS: &[&str] = &[
    "VirtualNetwork",
    "AzureLoadBalancer",
    "Internet",
    "VIRTUAL_NETWORK",
    "AZURE_LOADBALANCER",
    "INTERNET",
];

/// Whether `value` names a service tag (case-insensitive, with optional `.Region`).
pub fn is_service_tag(value: &str) -> bool {
    let known = |v: &str| SERVICE_TAGS.iter().any(|t| t.eq_ignore_ascii_case(v));
    if known(value) {
        return true;
    }
    match value.rsplit_once('.') {
        Some((base, region)) => {
            known(base)
                && !COMPUTED_TAGS.iter().any(|t| t.eq_ignore_ascii_case(base))
                && !region.is_empty()
                && region.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// A parsed address: a single IP or a network in canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    Net(IpNet),
}

/// Why an address failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    Invalid,
    /// Host bits set; carries the canonical network.
    HostBitsSet(IpNet),
}

/// Parse an IP or a CIDR whose host bits are zero (domain.md 2.8, 2.10).
pub fn parse_address(value: &str) -> std::result::Result<Address, AddressError> {
    if let Ok(ip) = IpAddr::from_str(value) {
        return Ok(Address::Ip(ip));
    }
    let net = IpNet::from_str(value).map_err(|_| AddressError::Invalid)?;
    if net.trunc() == net {
        Ok(Address::Net(net))
    } else {
        Err(AddressError::HostBitsSet(net.trunc()))
    }
}

/// Parse a CIDR as a network (a bare IP counts as /32 or /128).
pub fn parse_network(value: &str) -> std::result::Result<IpNet, AddressError> {
    match parse_address(value)? {
        Address::Ip(ip) => Ok(IpNet::from(ip)),
        Address::Net(net) => Ok(net),
    }
}

fn valid_port_range(value: &str) -> bool {
    let port = |s: &str| {
        !s.is_empty()
            && s.len() <= 5
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|p| p <= 65535)
    };
    if value == "*" || port(value) {
        return true;
    }
    match value.split_once('-') {
        Some((lo, hi)) if port(lo) && port(hi) => lo.parse::<u32>().ok() <= hi.parse::<u32>().ok(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Security rules (domain.md 2.1, 2.8)

/// Canonical security rule from a request object (the whole `{name, properties}` item).
pub fn security_rule(id: &str, name: &str, props: &Map<String, Value>) -> Result<Value> {
    let missing = |field: &str| {
        ArmError::bad_request(
            "SecurityRuleParameterMissing",
            format!("Required security rule parameter {field} is missing for security rule with Id: {id}."),
        )
    };
    let protocol = opt_str(props, "protocol")?.ok_or_else(|| missing("Protocol"))?;
    let protocol = canonical_enum(
        protocol,
        "protocol",
        &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"],
    )?;
    let access = opt_str(props, "access")?.ok_or_else(|| missing("Access"))?;
    let access = canonical_enum(access, "access", &["Allow", "Deny"])?;
    let direction = opt_str(props, "direction")?.ok_or_else(|| missing("Direction"))?;
    let direction = canonical_enum(direction, "direction", &["Inbound", "Outbound"])?;
    let priority = match props.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|p| i32::try_from(*p).is_ok())
            .ok_or_else(|| bad_format("'priority' must be a 32-bit integer."))?,
        Some(_) => return Err(bad_format("'priority' must be an integer.")),
    };
    if !(100..=4096).contains(&priority) {
        return Err(ArmError::bad_request(
            "SecurityRuleInvalidPriority",
            format!("Security rule has invalid Priority. Value provided: {priority} Allowed range 100-4096."),
        ));
    }

    let mut out = Map::new();
    out.insert("provisioningState".into(), json!("Succeeded"));
    out.insert("protocol".into(), json!(protocol));
    out.insert("access".into(), json!(access));
    out.insert("direction".into(), json!(direction));
    out.insert("priority".into(), json!(priority));
    if let Some(description) = opt_str(props, "description")? {
        out.insert("description".into(), json!(description));
    }

    for side in ["source", "destination"] {
        let (singular_key, plural_key) = (format!("{side}PortRange"), format!("{side}PortRanges"));
        let singular = opt_str(props, &singular_key)?;
        let plural = opt_str_list(props, &plural_key)?;
        if singular.is_none() && plural.is_empty() {
            return Err(missing(&upper_first(&singular_key)));
        }
        for value in singular
            .into_iter()
            .chain(plural.iter().map(String::as_str))
        {
            if !valid_port_range(value) {
                return Err(ArmError::bad_request(
                    "SecurityRuleInvalidPortRange",
                    format!(
                        "Security rule has invalid Port range. Value provided: {value}. Value should be an \
                         integer OR integer range with '-' delimiter. Valid range 0-65535."
                    ),
                ));
            }
        }
        if let Some(value) = singular {
            out.insert(singular_key, json!(value));
        }
        out.insert(plural_key, json!(plural));

        let (singular_key, plural_key, asg_key) = (
            format!("{side}AddressPrefix"),
            format!("{side}AddressPrefixes"),
            format!("{side}ApplicationSecurityGroups"),
        );
        let singular = opt_str(props, &singular_key)?;
        let plural = opt_str_list(props, &plural_key)?;
        let asgs = opt_array(props, &asg_key)?;
        if singular.is_none() && plural.is_empty() && asgs.is_empty() {
            let side_cap = upper_first(side);
            return Err(ArmError::bad_request(
                "SecurityRuleParametersMissing",
                format!(
                    "Required security rule parameters are missing for security rule with Id: {id}. Security \
                     rule must specify {side_cap}AddressPrefixes, {side_cap}AddressPrefix, or \
                     {side_cap}ApplicationSecurityGroups."
                ),
            ));
        }
        if !asgs.is_empty() && (singular.is_some() || !plural.is_empty()) {
            return Err(ArmError::bad_request(
                "SecurityRuleParameterConflict",
                format!(
                    "Security rule {id} cannot specify both address prefixes and application security groups \
                     for the {side}."
                ),
            ));
        }
        let invalid_prefix = |value: &str| {
            ArmError::bad_request(
                "SecurityRuleInvalidAddressPrefix",
                format!("Security rule {id} has invalid Address prefix. Value provided: {value}"),
            )
        };
        if let Some(value) = singular {
            if value != "*" && !is_service_tag(value) && parse_address(value).is_err() {
                return Err(invalid_prefix(value));
            }
            out.insert(singular_key.clone(), json!(value));
        }
        for value in &plural {
            if parse_address(value).is_err() {
                if value == "*" || is_service_tag(value) {
                    return Err(ArmError::bad_request(
                        "SecurityRuleParameterContainsUnsupportedValue",
                        format!(
                            "Security rule parameter {} for rule with Id {id} cannot specify existing \
                             VIRTUALNETWORK, INTERNET, AZURELOADBALANCER, '*' or system tags. Unsupported value \
                             used: {value}.",
                            upper_first(&singular_key)
                        ),
                    ));
                }
                return Err(invalid_prefix(value));
            }
        }
        out.insert(plural_key, json!(plural));
        if !asgs.is_empty() {
            if asgs
                .iter()
                .any(|a| a.get("id").and_then(Value::as_str).is_none())
            {
                return Err(bad_format(format!(
                    "Every item of '{asg_key}' needs an 'id'."
                )));
            }
            out.insert(asg_key, Value::Array(asgs.to_vec()));
        }
    }
    Ok(child_envelope(id, name, ChildKind::SecurityRule, out))
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Priority and direction must be unique among an NSG's rules (domain.md 2.3, 2.8).
pub fn rule_conflicts(rules: &[Value]) -> Result<()> {
    if rules.len() > MAX_RULES {
        return Err(ArmError::bad_request(
            "SecurityRulesLimitExceeded",
            format!("A network security group can have at most {MAX_RULES} security rules; {} were given.", rules.len()),
        ));
    }
    let key = |rule: &Value| {
        (
            rule["properties"]["priority"].as_i64(),
            rule["properties"]["direction"].as_str().map(str::to_owned),
        )
    };
    for (i, rule) in rules.iter().enumerate() {
        if let Some(other) = rules[..i].iter().find(|other| key(other) == key(rule)) {
            return Err(ArmError::bad_request(
                "SecurityRuleConflict",
                format!(
                    "Security rule {} conflicts with rule {}. Rules cannot have the same Priority and Direction. \
                     To learn more, see aka.ms/nsgrules.",
                    rule["name"].as_str().unwrap_or_default(),
                    other["name"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

/// The six default rules of every NSG, as the API shows them (domain.md 2.4).
pub fn default_security_rules(nsg_id: &str) -> Vec<Value> {
    const DEFAULTS: [(&str, &str, &str, &str, i64, &str); 6] = [
        (
            "AllowVnetInBound",
            "Allow inbound traffic from all VMs in VNET",
            "VirtualNetwork",
            "VirtualNetwork",
            65000,
            "Inbound",
        ),
        (
            "AllowAzureLoadBalancerInBound",
            "Allow inbound traffic from azure load balancer",
            "AzureLoadBalancer",
            "*",
            65001,
            "Inbound",
        ),
        (
            "DenyAllInBound",
            "Deny all inbound traffic",
            "*",
            "*",
            65500,
            "Inbound",
        ),
        (
            "AllowVnetOutBound",
            "Allow outbound traffic from all VMs to all VMs in VNET",
            "VirtualNetwork",
            "VirtualNetwork",
            65000,
            "Outbound",
        ),
        (
            "AllowInternetOutBound",
            "Allow outbound traffic from all VMs to Internet",
            "*",
            "Internet",
            65001,
            "Outbound",
        ),
        (
            "DenyAllOutBound",
            "Deny all outbound traffic",
            "*",
            "*",
            65500,
            "Outbound",
        ),
    ];
    DEFAULTS
        .iter()
        .map(
            |(name, description, source, destination, priority, direction)| {
                let access = if name.starts_with("Deny") {
                    "Deny"
                } else {
                    "Allow"
                };
                json!({
                    "id": format!("{nsg_id}/defaultSecurityRules/{name}"),
                    "name": name,
                    "type": ChildKind::DefaultSecurityRule.type_name(),
                    "properties": {
                        "provisioningState": "Succeeded",
                        "description": description,
                        "protocol": "*",
                        "sourcePortRange": "*",
                        "destinationPortRange": "*",
                        "sourceAddressPrefix": source,
                        "destinationAddressPrefix": destination,
                        "access": access,
                        "priority": priority,
                        "direction": direction,
                        "sourcePortRanges": [],
                        "destinationPortRanges": [],
                        "sourceAddressPrefixes": [],
                        "destinationAddressPrefixes": [],
                    }
                })
            },
        )
        .collect()
}

/// Canonical NSG (domain.md 2.1, 4.3, 4.4: the rule list is replaced by the one sent).
pub fn network_security_group(
    id: &str,
    name: &str,
    body: &Map<String, Value>,
    existing_location: Option<&str>,
    resource_guid: &str,
) -> Result<Value> {
    let (location, tags) = location_and_tags(body, existing_location, id)?;
    let props = properties(body)?;
    let rules = opt_array(&props, "securityRules")?;
    let mut names = Vec::with_capacity(rules.len());
    let mut canonical = Vec::with_capacity(rules.len());
    for item in rules {
        let rule_name = child_name(item, "securityRules")?;
        let rule_id = format!("{id}/securityRules/{rule_name}");
        canonical.push(security_rule(
            &rule_id,
            &rule_name,
            &child_properties(item)?,
        )?);
        names.push(rule_name);
    }
    no_duplicates(&names, "securityRules")?;
    rule_conflicts(&canonical)?;
    let mut out = tracked(id, name, Kind::NetworkSecurityGroup, &location, tags);
    out.insert(
        "properties".into(),
        json!({
            "provisioningState": "Succeeded",
            "resourceGuid": resource_guid,
            "flushConnection": opt_bool(&props, "flushConnection")?.unwrap_or(false),
            "securityRules": canonical,
            "defaultSecurityRules": default_security_rules(id),
        }),
    );
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Routes (domain.md 3.1, 3.7)

const NEXT_HOP_TYPES: &[&str] = &[
    "VirtualNetworkGateway",
    "VnetLocal",
    "Internet",
    "VirtualAppliance",
    "None",
];

/// Canonical route.
pub fn route(id: &str, name: &str, props: &Map<String, Value>) -> Result<Value> {
    let prefix = opt_str(props, "addressPrefix")?.ok_or_else(|| {
        ArmError::bad_request(
            "RouteAddressPrefixMissing",
            format!("Address prefix of route {id} cannot be null or empty."),
        )
    })?;
    if !is_service_tag(prefix) {
        match parse_network(prefix) {
            Ok(_) => {}
            Err(AddressError::HostBitsSet(net)) => {
                return Err(ArmError::bad_request(
                    "InvalidCIDRNotation",
                    format!(
                        "The address prefix {prefix} in resource {id} has an invalid CIDR notation. For the \
                         given prefix length, the address prefix should be {net}."
                    ),
                ))
            }
            Err(AddressError::Invalid) => {
                return Err(ArmError::bad_request(
                    "InvalidRouteAddressPrefix",
                    format!("Route {id} has an invalid address prefix: {prefix}."),
                ))
            }
        }
    }
    let next_hop = opt_str(props, "nextHopType")?.ok_or_else(|| {
        bad_format(format!(
            "Required property 'nextHopType' is missing in route {name}."
        ))
    })?;
    let next_hop = canonical_enum(next_hop, "nextHopType", NEXT_HOP_TYPES)?;
    let ip = opt_str(props, "nextHopIpAddress")?.filter(|ip| !ip.is_empty());
    let mut out = Map::new();
    out.insert("provisioningState".into(), json!("Succeeded"));
    out.insert("addressPrefix".into(), json!(prefix));
    out.insert("nextHopType".into(), json!(next_hop));
    out.insert("hasBgpOverride".into(), json!(false));
    match (next_hop.as_str(), ip) {
        ("VirtualAppliance", None) => {
            return Err(ArmError::bad_request(
                "MissingNextHopIpAddress",
                format!("NextHopIpAddress cannot be Null or Empty in route {name} when NextHopType is VirtualAppliance."),
            ))
        }
        ("VirtualAppliance", Some(ip)) => {
            if IpAddr::from_str(ip).is_err() {
                return Err(ArmError::bad_request(
                    "InvalidNextHopIpAddress",
                    format!("NextHopIpAddress {ip} in route {name} is not a valid IP address."),
                ));
            }
            out.insert("nextHopIpAddress".into(), json!(ip));
        }
        (other, Some(ip)) => {
            return Err(ArmError::bad_request(
                "NextHopIpAddressNotAllowed",
                format!(
                    "NextHopIpAddress {ip} is not allowed in route {name} when NextHopType is {other}; it is only \
                     allowed with VirtualAppliance."
                ),
            ))
        }
        (_, None) => {}
    }
    Ok(child_envelope(id, name, ChildKind::Route, out))
}

/// At most 400 routes per table (domain.md 3.6).
pub fn route_limit(routes: &[Value]) -> Result<()> {
    if routes.len() > MAX_ROUTES {
        return Err(ArmError::bad_request(
            "RouteTableRoutesLimitExceeded",
            format!(
                "A route table can have at most {MAX_ROUTES} routes; {} were given.",
                routes.len()
            ),
        ));
    }
    Ok(())
}

/// Canonical route table (domain.md 3.1).
pub fn route_table(
    id: &str,
    name: &str,
    body: &Map<String, Value>,
    existing_location: Option<&str>,
    resource_guid: &str,
) -> Result<Value> {
    let (location, tags) = location_and_tags(body, existing_location, id)?;
    let props = properties(body)?;
    let routes = opt_array(&props, "routes")?;
    let mut names = Vec::new();
    let mut canonical = Vec::new();
    for item in routes {
        let route_name = child_name(item, "routes")?;
        let route_id = format!("{id}/routes/{route_name}");
        canonical.push(route(&route_id, &route_name, &child_properties(item)?)?);
        names.push(route_name);
    }
    no_duplicates(&names, "routes")?;
    route_limit(&canonical)?;
    let mut out = tracked(id, name, Kind::RouteTable, &location, tags);
    out.insert(
        "properties".into(),
        json!({
            "provisioningState": "Succeeded",
            "resourceGuid": resource_guid,
            "disableBgpRoutePropagation": opt_bool(&props, "disableBgpRoutePropagation")?.unwrap_or(false),
            "routes": canonical,
        }),
    );
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Subnets and virtual networks (domain.md 4.3, 4.4, 2.9, 3.5)

/// Looks up referenced resources while validating a subnet.
pub trait References {
    /// The stored id (create-time casing) of an existing resource of `kind`, or `None`.
    fn resolve(&self, kind: Kind, id: &str) -> Option<String>;
}

fn reference(
    props: &Map<String, Value>,
    key: &str,
    kind: Kind,
    subnet_id: &str,
    refs: &dyn References,
) -> Result<Option<Value>> {
    let Some(value) = props.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let target = value
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_format(format!("'{key}' must be an object with an 'id'.")))?;
    let resolved = refs.resolve(kind, target).ok_or_else(|| {
        ArmError::bad_request(
            "InvalidResourceReference",
            format!(
                "Resource {target} referenced by resource {subnet_id} was not found. Please make sure that the \
                 referenced resource exists, and that both resources are in the same region."
            ),
        )
    })?;
    Ok(Some(json!({ "id": resolved })))
}

/// Canonical subnet; `vnet_space` is the VNet's address space for the range check.
pub fn subnet(
    id: &str,
    name: &str,
    props: &Map<String, Value>,
    vnet_space: &[IpNet],
    refs: &dyn References,
) -> Result<Value> {
    let single = opt_str(props, "addressPrefix")?.filter(|p| !p.is_empty());
    let many = opt_str_list(props, "addressPrefixes")?;
    // Both given: the stored subnet keeps addressPrefix (domain.md 4.4, open question 10).
    let prefixes: Vec<String> = match single {
        Some(p) => vec![p.to_owned()],
        None => many,
    };
    if prefixes.is_empty() {
        return Err(ArmError::bad_request(
            "AddressPrefixStringCannotBeNullOrEmpty",
            format!("Address prefix string for resource {id} cannot be null or empty."),
        ));
    }
    for prefix in &prefixes {
        let net = match parse_address(prefix) {
            Ok(Address::Net(net)) => net,
            Ok(Address::Ip(_)) | Err(AddressError::Invalid) => {
                return Err(ArmError::bad_request(
                    "InvalidAddressPrefixFormat",
                    format!("Address prefix {prefix} of resource {id} is not formatted correctly. It should follow CIDR notation, for example 10.0.0.0/24."),
                ))
            }
            Err(AddressError::HostBitsSet(net)) => {
                return Err(ArmError::bad_request(
                    "InvalidCIDRNotation",
                    format!(
                        "The address prefix {prefix} in resource {id} has an invalid CIDR notation. For the given \
                         prefix length, the address prefix should be {net}."
                    ),
                ))
            }
        };
        if !vnet_space.is_empty() && !vnet_space.iter().any(|space| space.contains(&net)) {
            return Err(ArmError::bad_request(
                "NetcfgSubnetRangeOutsideVnet",
                format!("Subnet '{name}' is not valid because its IP address range is outside the IP address range of virtual network."),
            ));
        }
    }

    let mut out = Map::new();
    // Writable fields kept as sent (domain.md 4.3).
    for key in [
        "serviceEndpoints",
        "serviceEndpointPolicies",
        "natGateway",
        "defaultOutboundAccess",
        "sharingScope",
        "ipAllocations",
    ] {
        if let Some(value) = props.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), value.clone());
        }
    }
    if single.is_some() {
        out.insert("addressPrefix".into(), json!(prefixes[0]));
    } else {
        out.insert("addressPrefixes".into(), json!(prefixes));
    }
    out.insert("provisioningState".into(), json!("Succeeded"));
    if let Some(nsg) = reference(
        props,
        "networkSecurityGroup",
        Kind::NetworkSecurityGroup,
        id,
        refs,
    )? {
        out.insert("networkSecurityGroup".into(), nsg);
    }
    if let Some(rt) = reference(props, "routeTable", Kind::RouteTable, id, refs)? {
        out.insert("routeTable".into(), rt);
    }
    let mut delegations = Vec::new();
    for item in opt_array(props, "delegations")? {
        let delegation_name = child_name(item, "delegations")?;
        let delegation_props = child_properties(item)?;
        let service = opt_str(&delegation_props, "serviceName")?
            .ok_or_else(|| bad_format("A delegation needs 'properties.serviceName'."))?;
        delegations.push(json!({
            "id": format!("{id}/delegations/{delegation_name}"),
            "name": delegation_name,
            "type": "Microsoft.Network/virtualNetworks/subnets/delegations",
            "properties": { "serviceName": service, "actions": [], "provisioningState": "Succeeded" },
        }));
    }
    out.insert("delegations".into(), Value::Array(delegations));
    for (key, default) in [
        ("privateEndpointNetworkPolicies", "Disabled"),
        ("privateLinkServiceNetworkPolicies", "Enabled"),
    ] {
        let value = opt_str(props, key)?.unwrap_or(default);
        out.insert(key.into(), json!(value));
    }
    Ok(child_envelope(id, name, ChildKind::Subnet, out))
}

/// The networks of a subnet's prefix(es).
pub fn subnet_networks(subnet: &Value) -> Vec<IpNet> {
    let props = &subnet["properties"];
    let mut prefixes: Vec<&str> = props["addressPrefix"].as_str().into_iter().collect();
    if let Some(many) = props["addressPrefixes"].as_array() {
        prefixes.extend(many.iter().filter_map(Value::as_str));
    }
    prefixes
        .into_iter()
        .filter_map(|p| parse_network(p).ok())
        .collect()
}

/// Subnets of one VNet must not overlap.
pub fn subnet_overlaps(subnets: &[Value]) -> Result<()> {
    let nets: Vec<(String, Vec<IpNet>)> = subnets
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                subnet_networks(s),
            )
        })
        .collect();
    for (i, (name, mine)) in nets.iter().enumerate() {
        for (other, theirs) in &nets[..i] {
            if mine
                .iter()
                .any(|a| theirs.iter().any(|b| a.contains(b) || b.contains(a)))
            {
                return Err(ArmError::bad_request(
                    "NetcfgSubnetRangesOverlap",
                    format!("Subnet '{name}' is not valid because its IP address range overlaps with that of an existing subnet '{other}' in the virtual network."),
                ));
            }
        }
    }
    Ok(())
}

/// The VNet's address space from a request.
pub fn address_space(props: &Map<String, Value>, id: &str) -> Result<Vec<IpNet>> {
    let space = match props.get("addressSpace") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(space)) => space,
        Some(_) => return Err(bad_format("'addressSpace' must be an object.")),
    };
    opt_str_list(space, "addressPrefixes")?
        .iter()
        .map(|prefix| match parse_address(prefix) {
            Ok(Address::Net(net)) => Ok(net),
            Err(AddressError::HostBitsSet(net)) => Err(ArmError::bad_request(
                "InvalidCIDRNotation",
                format!("The address prefix {prefix} in resource {id} has an invalid CIDR notation. For the given prefix length, the address prefix should be {net}."),
            )),
            _ => Err(ArmError::bad_request(
                "InvalidAddressPrefixFormat",
                format!("Address prefix {prefix} of resource {id} is not formatted correctly."),
            )),
        })
        .collect()
}

/// Canonical virtual network with its inline subnets (domain.md 4.3; a VNet PUT replaces
/// the subnet list, 4.4).
pub fn virtual_network(
    id: &str,
    name: &str,
    body: &Map<String, Value>,
    existing_location: Option<&str>,
    resource_guid: &str,
    refs: &dyn References,
) -> Result<Value> {
    let (location, tags) = location_and_tags(body, existing_location, id)?;
    let props = properties(body)?;
    let space = address_space(&props, id)?;
    let mut names = Vec::new();
    let mut subnets = Vec::new();
    for item in opt_array(&props, "subnets")? {
        let subnet_name = child_name(item, "subnets")?;
        let subnet_id = format!("{id}/subnets/{subnet_name}");
        subnets.push(subnet(
            &subnet_id,
            &subnet_name,
            &child_properties(item)?,
            &space,
            refs,
        )?);
        names.push(subnet_name);
    }
    no_duplicates(&names, "subnets")?;
    subnet_overlaps(&subnets)?;
    let mut out_props = Map::new();
    out_props.insert("provisioningState".into(), json!("Succeeded"));
    out_props.insert("resourceGuid".into(), json!(resource_guid));
    out_props.insert(
        "addressSpace".into(),
        json!({ "addressPrefixes": space.iter().map(ToString::to_string).collect::<Vec<_>>() }),
    );
    if let Some(dhcp) = props.get("dhcpOptions").filter(|v| v.is_object()) {
        out_props.insert("dhcpOptions".into(), dhcp.clone());
    }
    out_props.insert("subnets".into(), Value::Array(subnets));
    out_props.insert("virtualNetworkPeerings".into(), json!([]));
    out_props.insert(
        "enableDdosProtection".into(),
        json!(opt_bool(&props, "enableDdosProtection")?.unwrap_or(false)),
    );
    let mut out = tracked(id, name, Kind::VirtualNetwork, &location, tags);
    out.insert("properties".into(), Value::Object(out_props));
    Ok(Value::Object(out))
}

/// Canonical resource group (Microsoft.Resources).
pub fn resource_group(
    id: &str,
    name: &str,
    body: &Map<String, Value>,
    existing_location: Option<&str>,
) -> Result<Value> {
    let (location, tags) = location_and_tags(body, existing_location, id)?;
    let mut out = tracked(id, name, Kind::ResourceGroup, &location, tags);
    out.insert(
        "properties".into(),
        json!({ "provisioningState": "Succeeded" }),
    );
    Ok(Value::Object(out))
}

/// Extract the `properties` of a child PUT body.
pub fn child_body_properties(body: &Map<String, Value>) -> Result<Map<String, Value>> {
    properties(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(props: Value) -> Result<Value> {
        let Value::Object(map) = props else { panic!() };
        security_rule("/x/securityRules/r", "r", &map)
    }

    fn base() -> Value {
        json!({"protocol":"tcp","sourcePortRange":"*","destinationPortRange":"443","sourceAddressPrefix":"10.0.0.0/24",
               "destinationAddressPrefix":"*","access":"allow","priority":200,"direction":"inbound"})
    }

    fn code(result: Result<Value>) -> String {
        result.unwrap_err().code
    }

    #[test]
    fn a_valid_rule_is_canonicalised() {
        let out = rule(base()).unwrap();
        assert_eq!(out["properties"]["protocol"], "Tcp");
        assert_eq!(out["properties"]["access"], "Allow");
        assert_eq!(out["properties"]["sourcePortRanges"], json!([]));
        assert_eq!(
            out["type"],
            "Microsoft.Network/networkSecurityGroups/securityRules"
        );
    }

    #[test]
    fn rule_validation_uses_nrp_codes() {
        let with = |key: &str, value: Value| {
            let mut body = base();
            body[key] = value;
            rule(body)
        };
        assert_eq!(
            code(with("priority", json!(99))),
            "SecurityRuleInvalidPriority"
        );
        assert_eq!(
            code(with("priority", json!(4097))),
            "SecurityRuleInvalidPriority"
        );
        assert_eq!(
            code(with("destinationPortRange", json!("any"))),
            "SecurityRuleInvalidPortRange"
        );
        assert_eq!(
            code(with("destinationPortRange", json!("80-70"))),
            "SecurityRuleInvalidPortRange"
        );
        assert_eq!(
            code(with("destinationPortRange", json!("65536"))),
            "SecurityRuleInvalidPortRange"
        );
        assert_eq!(
            code(with("sourceAddressPrefix", json!("any"))),
            "SecurityRuleInvalidAddressPrefix"
        );
        assert_eq!(
            code(with("sourceAddressPrefix", json!("10.0.0.1/24"))),
            "SecurityRuleInvalidAddressPrefix"
        );
        assert_eq!(
            code(with("sourceAddressPrefix", json!("NoSuchTag"))),
            "SecurityRuleInvalidAddressPrefix"
        );
        assert!(with("sourceAddressPrefix", json!("Sql.WestEurope")).is_ok());
        assert!(with("sourceAddressPrefix", json!("AppServiceManagement")).is_ok());
        let mut plural = base();
        plural
            .as_object_mut()
            .unwrap()
            .remove("sourceAddressPrefix");
        plural["sourceAddressPrefixes"] = json!(["10.0.0.0/24", "VirtualNetwork"]);
        assert_eq!(
            code(rule(plural)),
            "SecurityRuleParameterContainsUnsupportedValue"
        );
        let mut missing = base();
        missing
            .as_object_mut()
            .unwrap()
            .remove("sourceAddressPrefix");
        assert_eq!(code(rule(missing)), "SecurityRuleParametersMissing");
        let mut missing = base();
        missing.as_object_mut().unwrap().remove("protocol");
        assert_eq!(code(rule(missing)), "SecurityRuleParameterMissing");
        assert_eq!(code(with("priority", json!("100"))), "InvalidRequestFormat");
        assert_eq!(code(with("priority", json!(1e300))), "InvalidRequestFormat");
    }

    #[test]
    fn rules_with_the_same_priority_and_direction_conflict() {
        let a = rule(base()).unwrap();
        let mut b = a.clone();
        b["name"] = json!("other");
        assert_eq!(
            rule_conflicts(&[a.clone(), b.clone()]).unwrap_err().code,
            "SecurityRuleConflict"
        );
        b["properties"]["direction"] = json!("Outbound");
        assert!(rule_conflicts(&[a, b]).is_ok());
    }

    #[test]
    fn route_validation_follows_section_3_7() {
        let r = |props: Value| {
            let Value::Object(map) = props else { panic!() };
            route("/x/routes/r", "r", &map)
        };
        assert_eq!(
            code(r(
                json!({"addressPrefix":"10.0.0.0/8","nextHopType":"VirtualAppliance"})
            )),
            "MissingNextHopIpAddress"
        );
        assert_eq!(
            code(r(
                json!({"addressPrefix":"10.0.0.0/8","nextHopType":"Internet","nextHopIpAddress":"10.1.1.1"})
            )),
            "NextHopIpAddressNotAllowed"
        );
        assert!(
            r(json!({"addressPrefix":"AppServiceManagement","nextHopType":"internet"})).is_ok()
        );
        assert!(r(json!({"addressPrefix":"10.0.0.0/8","nextHopType":"VirtualAppliance","nextHopIpAddress":"10.1.1.1"})).is_ok());
    }

    #[test]
    fn names_follow_section_2_2() {
        assert!(name("nsg-1_", false).is_ok());
        assert!(name("a", false).is_ok());
        assert!(name("a", true).is_err());
        assert!(name("-a", false).is_err());
        assert!(name("a-", false).is_err());
        assert!(name(&"a".repeat(81), false).is_err());
        assert!(name("a b", false).is_err());
    }

    #[test]
    fn there_are_six_default_rules() {
        let rules = default_security_rules("/n");
        assert_eq!(rules.len(), 6);
        assert_eq!(rules[2]["name"], "DenyAllInBound");
        assert_eq!(rules[2]["properties"]["access"], "Deny");
    }
}
