//! Effective-flow evaluation: what an NSG does with a flow, the way Azure decides it
//! (docs/domain.md 2.3): the custom rules plus the six default rules (2.4) of the flow's
//! direction, in priority order, lowest number first; the first rule that matches decides.
//!
//! Pure, like the resolver and the diff: the caller builds a [`TagContext`] from the
//! snapshot (the VNet address spaces, the topology's extra prefixes, the service tags) and
//! passes the rules. Used by tests, by the diff (a foreign deny shadowing an owned allow)
//! and by `asenet verify`.
//!
//! Tag semantics and their simplifications (docs/domain.md 2.5):
//! - `VirtualNetwork` is the VNet address spaces plus whatever the caller adds (peered VNets,
//!   on-premises ranges: `topology.extraPrefixes`). The host address 168.63.129.16 is *not*
//!   counted in it, so load-balancer probes are attributed to `AllowAzureLoadBalancerInBound`.
//! - `AzureLoadBalancer` is 168.63.129.16/32.
//! - `Internet` is every address that is neither in `VirtualNetwork` nor `AzureLoadBalancer`
//!   (Azure's definition, "reachable via the public Internet", is not modelled further).
//! - Other service tags use their IPv4 prefixes from the snapshot; a tag the snapshot does
//!   not know matches no address (a rule using it never decides a concrete flow).
//! - Application security groups (`AddressSet::Other`) match nothing: their membership is
//!   not observed.
//!
//! Flows are either concrete 5-tuples ([`Flow`]) or sets ([`FlowSpec`], e.g. a
//! [`RequiredFlow`] whose source is a tag or a CIDR and whose source port is any). For a set,
//! a rule decides when it covers the whole set; a `Deny` that covers only part of it also
//! decides (part of the flow is denied, which is what `verify` must report); an `Allow` that
//! covers only part of it is passed over. A tag source matches a rule naming the same tag
//! or `*` by identity, even when the snapshot does not list the tag's prefixes; otherwise
//! the tag is resolved to its prefixes. For a concrete 5-tuple this is exactly Azure's
//! first-match evaluation.

pub mod routes;
pub mod verify;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::model::{
    canonical_tag, parse_prefix, Access, AddressSet, Direction, PortRange, PortSet, Protocol,
    ResourceId, SecurityRule,
};
use crate::resolver::RequiredFlow;
use crate::snapshot::Snapshot;

/// The host address behind the `AzureLoadBalancer` tag (docs/domain.md 2.5).
pub const AZURE_LOAD_BALANCER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

/// The six default rules of every NSG, exactly as ARM lists them (docs/domain.md 2.4).
pub fn default_rules() -> Vec<SecurityRule> {
    let rule = |name: &str,
                direction: Direction,
                priority: u32,
                source: AddressSet,
                destination: AddressSet,
                access: Access,
                description: &str| SecurityRule {
        name: name.to_string(),
        priority,
        direction,
        access,
        protocol: Protocol::Any,
        source,
        source_ports: PortSet::any(),
        destination,
        destination_ports: PortSet::any(),
        description: Some(description.to_string()),
    };
    let vnet = || AddressSet::Tag("VirtualNetwork".to_string());
    vec![
        rule(
            "AllowVnetInBound",
            Direction::Inbound,
            65000,
            vnet(),
            vnet(),
            Access::Allow,
            "Allow inbound traffic from all VMs in VNET",
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            Direction::Inbound,
            65001,
            AddressSet::Tag("AzureLoadBalancer".to_string()),
            AddressSet::Any,
            Access::Allow,
            "Allow inbound traffic from azure load balancer",
        ),
        rule(
            "DenyAllInBound",
            Direction::Inbound,
            65500,
            AddressSet::Any,
            AddressSet::Any,
            Access::Deny,
            "Deny all inbound traffic",
        ),
        rule(
            "AllowVnetOutBound",
            Direction::Outbound,
            65000,
            vnet(),
            vnet(),
            Access::Allow,
            "Allow outbound traffic from all VMs to all VMs in VNET",
        ),
        rule(
            "AllowInternetOutBound",
            Direction::Outbound,
            65001,
            AddressSet::Any,
            AddressSet::Tag("Internet".to_string()),
            Access::Allow,
            "Allow outbound traffic from all VMs to Internet",
        ),
        rule(
            "DenyAllOutBound",
            Direction::Outbound,
            65500,
            AddressSet::Any,
            AddressSet::Any,
            Access::Deny,
            "Deny all outbound traffic",
        ),
    ]
}

/// A concrete 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    pub protocol: Protocol,
    pub source: Ipv4Addr,
    pub source_port: u16,
    pub destination: Ipv4Addr,
    pub destination_port: u16,
}

/// One end of a [`FlowSpec`]: any address, a set of prefixes, or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Endpoint {
    Any,
    Prefixes(Vec<Ipv4Net>),
    /// A tag name in canonical casing (`AzureLoadBalancer`, `AppServiceManagement`).
    Tag(String),
}

impl Endpoint {
    /// `*`, `0.0.0.0/0`, an IP, a CIDR or a tag name.
    pub fn parse(value: &str) -> Endpoint {
        let t = value.trim();
        if t == "*" || t.is_empty() {
            return Endpoint::Any;
        }
        match parse_prefix(t) {
            Ok(p) if p.prefix_len() == 0 => Endpoint::Any,
            Ok(p) => Endpoint::Prefixes(vec![p]),
            Err(_) => Endpoint::Tag(canonical_tag(t)),
        }
    }
    fn from_address_set(a: &AddressSet) -> Option<Endpoint> {
        match a {
            AddressSet::Any => Some(Endpoint::Any),
            AddressSet::Tag(t) => Some(Endpoint::Tag(t.clone())),
            AddressSet::Prefixes(p) => Some(Endpoint::Prefixes(p.iter().copied().collect())),
            AddressSet::Other(_) => None,
        }
    }
}

/// A set of flows: what a requirement describes ("TCP 454-455 from AppServiceManagement to
/// any address of the subnet, any source port").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowSpec {
    pub protocol: Protocol,
    pub source: Endpoint,
    pub source_ports: PortSet,
    pub destination: Endpoint,
    pub destination_ports: PortSet,
}

impl From<&Flow> for FlowSpec {
    fn from(f: &Flow) -> Self {
        FlowSpec {
            protocol: f.protocol,
            source: Endpoint::Prefixes(vec![Ipv4Net::from(f.source)]),
            source_ports: PortSet::from_ranges([PortRange::single(f.source_port)]),
            destination: Endpoint::Prefixes(vec![Ipv4Net::from(f.destination)]),
            destination_ports: PortSet::from_ranges([PortRange::single(f.destination_port)]),
        }
    }
}

impl From<&RequiredFlow> for FlowSpec {
    fn from(f: &RequiredFlow) -> Self {
        FlowSpec {
            protocol: f.protocol,
            source: Endpoint::parse(&f.source),
            source_ports: PortSet::any(),
            destination: Endpoint::parse(&f.destination),
            destination_ports: PortSet::from_ranges([PortRange::single(f.port)]),
        }
    }
}

/// The outcome of evaluating a flow: the access and the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub access: Access,
    /// Name of the deciding rule (a custom rule or one of the default rules).
    pub rule: String,
    pub priority: u32,
}

/// What the computed and service tags stand for (module docs list the simplifications).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagContext {
    virtual_network: Vec<Ipv4Net>,
    /// Keyed by lower-cased tag name.
    service_tags: BTreeMap<String, Vec<Ipv4Net>>,
}

impl TagContext {
    /// An empty context: `VirtualNetwork` is empty, no service tags.
    pub fn new() -> Self {
        TagContext::default()
    }

    /// `VirtualNetwork` = the address spaces of every VNet in the snapshot plus `extra`
    /// (peered and on-premises ranges); service tags from the snapshot.
    pub fn from_snapshot(snapshot: &Snapshot, extra: &[Ipv4Net]) -> Self {
        let vnet = snapshot
            .virtual_networks
            .values()
            .flat_map(|v| v.address_prefixes.iter().copied());
        Self::with_tags(snapshot, vnet.chain(extra.iter().copied()))
    }

    /// Like [`TagContext::from_snapshot`], with `VirtualNetwork` limited to one VNet's
    /// address space plus `extra`.
    pub fn for_vnet(snapshot: &Snapshot, vnet: &ResourceId, extra: &[Ipv4Net]) -> Self {
        let prefixes = snapshot
            .virtual_networks
            .get(vnet)
            .map(|v| v.address_prefixes.clone())
            .unwrap_or_default();
        Self::with_tags(snapshot, prefixes.into_iter().chain(extra.iter().copied()))
    }

    fn with_tags(snapshot: &Snapshot, vnet: impl Iterator<Item = Ipv4Net>) -> Self {
        let mut ctx = TagContext::new().with_virtual_network(vnet);
        for t in snapshot.service_tags.values() {
            ctx = ctx.with_service_tag(&t.name, t.address_prefixes.iter().copied());
        }
        ctx
    }

    /// Adds prefixes to `VirtualNetwork`.
    pub fn with_virtual_network(mut self, prefixes: impl IntoIterator<Item = Ipv4Net>) -> Self {
        self.virtual_network
            .extend(prefixes.into_iter().map(|p| p.trunc()));
        self.virtual_network.sort();
        self.virtual_network.dedup();
        self
    }

    /// Adds (or extends) a service tag.
    pub fn with_service_tag(
        mut self,
        name: &str,
        prefixes: impl IntoIterator<Item = Ipv4Net>,
    ) -> Self {
        let entry = self
            .service_tags
            .entry(name.to_ascii_lowercase())
            .or_default();
        entry.extend(prefixes.into_iter().map(|p| p.trunc()));
        entry.sort();
        entry.dedup();
        self
    }

    pub fn virtual_network(&self) -> &[Ipv4Net] {
        &self.virtual_network
    }

    /// The prefixes a tag stands for, or `None` for `Internet` (a complement) and for
    /// unknown tags.
    fn tag_prefixes(&self, tag: &str) -> Option<Vec<Ipv4Net>> {
        match canonical_tag(tag).as_str() {
            "VirtualNetwork" => Some(self.virtual_network.clone()),
            "AzureLoadBalancer" => Some(vec![Ipv4Net::from(AZURE_LOAD_BALANCER)]),
            "Internet" => None,
            _ => self.service_tags.get(&tag.to_ascii_lowercase()).cloned(),
        }
    }

    /// True when `ip` belongs to `tag`.
    pub fn tag_contains(&self, tag: &str, ip: Ipv4Addr) -> bool {
        if canonical_tag(tag) == "Internet" {
            return self.is_internet(ip);
        }
        self.tag_prefixes(tag)
            .is_some_and(|p| p.iter().any(|n| n.contains(&ip)))
    }

    fn is_internet(&self, ip: Ipv4Addr) -> bool {
        ip != AZURE_LOAD_BALANCER && !self.virtual_network.iter().any(|n| n.contains(&ip))
    }

    /// A representative address of a tag (its first prefix's first address), for callers
    /// that want a concrete 5-tuple. `Internet` gives the first address outside the
    /// `VirtualNetwork` prefixes among a few public candidates.
    pub fn representative(&self, tag: &str) -> Option<Ipv4Addr> {
        if canonical_tag(tag) == "Internet" {
            return [
                Ipv4Addr::new(203, 0, 113, 10),
                Ipv4Addr::new(198, 51, 100, 10),
                Ipv4Addr::new(8, 8, 8, 8),
            ]
            .into_iter()
            .find(|ip| self.is_internet(*ip));
        }
        self.tag_prefixes(tag)?.first().map(|p| p.network())
    }
}

/// How much of a set a rule's field covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cover {
    None,
    Partial,
    Full,
}

impl Cover {
    fn and(self, other: Cover) -> Cover {
        self.min(other)
    }
}

fn net_inside(inner: &Ipv4Net, outer: &Ipv4Net) -> bool {
    outer.contains(inner)
}

fn nets_intersect(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// How much of the prefixes `subject` the prefixes `rule` cover.
fn cover_prefixes(rule: &[Ipv4Net], subject: &[Ipv4Net]) -> Cover {
    if subject.is_empty() {
        return Cover::None;
    }
    if subject
        .iter()
        .all(|s| rule.iter().any(|r| net_inside(s, r)))
    {
        Cover::Full
    } else if subject
        .iter()
        .any(|s| rule.iter().any(|r| nets_intersect(s, r)))
    {
        Cover::Partial
    } else {
        Cover::None
    }
}

/// How much of `subject` the complement of `vnet` (the `Internet` tag) covers.
fn cover_internet(ctx: &TagContext, subject: &[Ipv4Net]) -> Cover {
    let lb = Ipv4Net::from(AZURE_LOAD_BALANCER);
    let inside = || ctx.virtual_network.iter().chain(std::iter::once(&lb));
    let all_inside = subject.iter().all(|s| inside().any(|v| net_inside(s, v)));
    let none_touch = subject
        .iter()
        .all(|s| !inside().any(|v| nets_intersect(s, v)));
    if subject.is_empty() || all_inside {
        Cover::None
    } else if none_touch {
        Cover::Full
    } else {
        Cover::Partial
    }
}

/// How much of the endpoint `subject` the rule's address field `rule` covers.
fn cover_address(rule: &AddressSet, subject: &Endpoint, ctx: &TagContext) -> Cover {
    match (rule, subject) {
        (AddressSet::Any, _) => Cover::Full,
        (AddressSet::Other(_), _) => Cover::None,
        (AddressSet::Tag(r), Endpoint::Tag(s)) if r.eq_ignore_ascii_case(s) => Cover::Full,
        (AddressSet::Tag(_) | AddressSet::Prefixes(_), Endpoint::Any) => {
            // A rule naming part of the address space covers part of "any address" as
            // long as it names something at all.
            match rule_prefixes(rule, ctx) {
                RulePrefixes::Internet => Cover::Partial,
                RulePrefixes::Known(p) if !p.is_empty() => Cover::Partial,
                RulePrefixes::Known(_) => Cover::None,
            }
        }
        (_, Endpoint::Tag(s)) => match ctx.tag_prefixes(s) {
            Some(prefixes) => cover_address(rule, &Endpoint::Prefixes(prefixes), ctx),
            None if canonical_tag(s) == "Internet" => match rule_prefixes(rule, ctx) {
                // The subject is "everything outside the VNet": a prefix rule outside
                // the VNet covers part of it.
                RulePrefixes::Internet => Cover::Full,
                RulePrefixes::Known(p) => {
                    if cover_internet(ctx, &p) == Cover::None {
                        Cover::None
                    } else {
                        Cover::Partial
                    }
                }
            },
            // An unknown service tag: Azure's service ranges are public, so `Internet`
            // covers it; nothing else can be decided.
            None => match rule_prefixes(rule, ctx) {
                RulePrefixes::Internet => Cover::Full,
                RulePrefixes::Known(_) => Cover::None,
            },
        },
        (_, Endpoint::Prefixes(subject)) => match rule_prefixes(rule, ctx) {
            RulePrefixes::Internet => cover_internet(ctx, subject),
            RulePrefixes::Known(p) => cover_prefixes(&p, subject),
        },
    }
}

enum RulePrefixes {
    Internet,
    Known(Vec<Ipv4Net>),
}

fn rule_prefixes(rule: &AddressSet, ctx: &TagContext) -> RulePrefixes {
    match rule {
        AddressSet::Any => RulePrefixes::Known(vec![Ipv4Net::default()]),
        AddressSet::Prefixes(p) => RulePrefixes::Known(p.iter().copied().collect()),
        AddressSet::Tag(t) if canonical_tag(t) == "Internet" => RulePrefixes::Internet,
        AddressSet::Tag(t) => RulePrefixes::Known(ctx.tag_prefixes(t).unwrap_or_default()),
        AddressSet::Other(_) => RulePrefixes::Known(vec![]),
    }
}

fn cover_ports(rule: &PortSet, subject: &PortSet) -> Cover {
    if rule.covers(subject) {
        Cover::Full
    } else if rule.intersects(subject) {
        Cover::Partial
    } else {
        Cover::None
    }
}

fn cover_protocol(rule: Protocol, subject: Protocol) -> Cover {
    if rule == Protocol::Any || rule == subject {
        Cover::Full
    } else if subject == Protocol::Any {
        Cover::Partial
    } else {
        Cover::None
    }
}

fn cover_rule(rule: &SecurityRule, flow: &FlowSpec, ctx: &TagContext) -> Cover {
    let mut c = cover_protocol(rule.protocol, flow.protocol);
    if c == Cover::None {
        return c;
    }
    c = c.and(cover_ports(
        &rule.destination_ports,
        &flow.destination_ports,
    ));
    if c == Cover::None {
        return c;
    }
    c = c.and(cover_ports(&rule.source_ports, &flow.source_ports));
    if c == Cover::None {
        return c;
    }
    c = c.and(cover_address(&rule.source, &flow.source, ctx));
    if c == Cover::None {
        return c;
    }
    c.and(cover_address(&rule.destination, &flow.destination, ctx))
}

/// True when `rule` matches at least part of `flow` (ignoring direction).
pub fn rule_matches(rule: &SecurityRule, flow: &FlowSpec, ctx: &TagContext) -> bool {
    cover_rule(rule, flow, ctx) != Cover::None
}

/// True when the traffic two rules match overlaps: protocols, both port sets and both
/// address sets intersect (and the direction is the same). Used by the diff to find a
/// foreign deny that shadows an owned allow.
pub fn rules_overlap(a: &SecurityRule, b: &SecurityRule, ctx: &TagContext) -> bool {
    if a.direction != b.direction {
        return false;
    }
    let (Some(source), Some(destination)) = (
        Endpoint::from_address_set(&b.source),
        Endpoint::from_address_set(&b.destination),
    ) else {
        return false;
    };
    let flow = FlowSpec {
        protocol: b.protocol,
        source,
        source_ports: b.source_ports.clone(),
        destination,
        destination_ports: b.destination_ports.clone(),
    };
    rule_matches(a, &flow, ctx)
}

/// Evaluates a set of flows against an NSG's custom rules plus the default rules, in
/// priority order (docs/domain.md 2.3). See the module docs for partial matches.
pub fn evaluate_spec(
    rules: &[impl std::borrow::Borrow<SecurityRule>],
    direction: Direction,
    flow: &FlowSpec,
    ctx: &TagContext,
) -> Verdict {
    let defaults = default_rules();
    let mut ordered: Vec<&SecurityRule> = rules
        .iter()
        .map(std::borrow::Borrow::borrow)
        .chain(defaults.iter())
        .filter(|r| r.direction == direction)
        .collect();
    // Priorities are unique per direction in a valid NSG; the name breaks ties in
    // hand-made rule lists so that the answer is still deterministic.
    ordered.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    for rule in ordered {
        let decides = match cover_rule(rule, flow, ctx) {
            Cover::Full => true,
            Cover::Partial => rule.access == Access::Deny,
            Cover::None => false,
        };
        if decides {
            return Verdict {
                access: rule.access,
                rule: rule.name.clone(),
                priority: rule.priority,
            };
        }
    }
    // Unreachable with the default rules in the list (DenyAll* matches everything); kept
    // as a total answer rather than a panic.
    Verdict {
        access: Access::Deny,
        rule: "DenyAll".to_string(),
        priority: 65500,
    }
}

/// Evaluates one concrete 5-tuple: exactly Azure's first-match evaluation.
pub fn evaluate(
    rules: &[impl std::borrow::Borrow<SecurityRule>],
    direction: Direction,
    flow: &Flow,
    ctx: &TagContext,
) -> Verdict {
    evaluate_spec(rules, direction, &FlowSpec::from(flow), ctx)
}

/// Evaluates a flow the resolver says must be allowed. Its source and destination may be
/// addresses, CIDRs, `*` or tags; any source port.
pub fn evaluate_required(
    flow: &RequiredFlow,
    rules: &[impl std::borrow::Borrow<SecurityRule>],
    ctx: &TagContext,
) -> Verdict {
    evaluate_spec(rules, flow.direction, &FlowSpec::from(flow), ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn ctx() -> TagContext {
        TagContext::new()
            .with_virtual_network([net("10.0.0.0/16")])
            .with_service_tag("AppServiceManagement", [net("13.64.0.0/16")])
    }
    fn rule(name: &str, prio: u32, access: Access, src: &str, ports: &[&str]) -> SecurityRule {
        SecurityRule {
            name: name.into(),
            priority: prio,
            direction: Direction::Inbound,
            access,
            protocol: Protocol::Tcp,
            source: AddressSet::parse_one(src).unwrap(),
            source_ports: PortSet::any(),
            destination: AddressSet::Any,
            destination_ports: PortSet::parse_all(ports.iter().copied()).unwrap(),
            description: None,
        }
    }
    fn tcp(src: &str, dst: &str, port: u16) -> Flow {
        Flow {
            protocol: Protocol::Tcp,
            source: ip(src),
            source_port: 50000,
            destination: ip(dst),
            destination_port: port,
        }
    }

    #[test]
    fn default_rules_are_the_six_documented_ones() {
        let d = default_rules();
        let names: Vec<(&str, u32)> = d.iter().map(|r| (r.name.as_str(), r.priority)).collect();
        assert_eq!(
            names,
            vec![
                ("AllowVnetInBound", 65000),
                ("AllowAzureLoadBalancerInBound", 65001),
                ("DenyAllInBound", 65500),
                ("AllowVnetOutBound", 65000),
                ("AllowInternetOutBound", 65001),
                ("DenyAllOutBound", 65500),
            ]
        );
    }

    #[test]
    fn verdicts_follow_priority_order_and_first_match() {
        let rules = vec![
            rule(
                "asenet-web",
                200,
                Access::Allow,
                "192.23.1.2",
                &["80", "443"],
            ),
            rule("foreign-deny", 150, Access::Deny, "192.23.1.0/24", &["443"]),
            rule(
                "asenet-mgmt",
                100,
                Access::Allow,
                "AppServiceManagement",
                &["454-455"],
            ),
        ];
        let c = ctx();
        let table: &[(Flow, Access, &str)] = &[
            // an allowed source on an allowed port
            (
                tcp("192.23.1.2", "10.0.1.4", 80),
                Access::Allow,
                "asenet-web",
            ),
            // a foreign deny at a lower number shadows the allow
            (
                tcp("192.23.1.2", "10.0.1.4", 443),
                Access::Deny,
                "foreign-deny",
            ),
            // an unlisted Internet source falls through to DenyAllInBound
            (
                tcp("203.0.113.9", "10.0.1.4", 80),
                Access::Deny,
                "DenyAllInBound",
            ),
            // VNet traffic is admitted by AllowVnetInBound
            (
                tcp("10.0.2.4", "10.0.1.4", 1433),
                Access::Allow,
                "AllowVnetInBound",
            ),
            // the load balancer probe by AllowAzureLoadBalancerInBound
            (
                tcp("168.63.129.16", "10.0.1.4", 16001),
                Access::Allow,
                "AllowAzureLoadBalancerInBound",
            ),
            // a service tag resolved from the snapshot prefixes
            (
                tcp("13.64.1.1", "10.0.1.4", 454),
                Access::Allow,
                "asenet-mgmt",
            ),
        ];
        for (flow, access, name) in table {
            let v = evaluate(&rules, Direction::Inbound, flow, &c);
            assert_eq!((v.access, v.rule.as_str()), (*access, *name), "{flow:?}");
        }
    }

    #[test]
    fn internet_tag_is_everything_outside_the_virtual_network() {
        let c = ctx();
        assert!(c.tag_contains("Internet", ip("8.8.8.8")));
        assert!(!c.tag_contains("Internet", ip("10.0.9.9")));
        assert!(!c.tag_contains("Internet", AZURE_LOAD_BALANCER));
        assert!(
            !c.tag_contains("Sql.WestUS", ip("8.8.8.8")),
            "unknown tags match nothing"
        );
        let deny_internet = SecurityRule {
            source: AddressSet::tag("Internet"),
            ..rule("deny-internet", 100, Access::Deny, "*", &["*"])
        };
        let out = evaluate(
            std::slice::from_ref(&deny_internet),
            Direction::Inbound,
            &tcp("8.8.8.8", "10.0.1.4", 80),
            &c,
        );
        assert_eq!(out.rule, "deny-internet");
        let vnet = evaluate(
            &[deny_internet],
            Direction::Inbound,
            &tcp("10.0.3.3", "10.0.1.4", 80),
            &c,
        );
        assert_eq!(vnet.rule, "AllowVnetInBound");
        let outbound = evaluate(
            &[] as &[SecurityRule],
            Direction::Outbound,
            &tcp("10.0.1.4", "8.8.8.8", 443),
            &c,
        );
        assert_eq!(outbound.rule, "AllowInternetOutBound");
    }

    #[test]
    fn tag_sources_match_rules_by_identity_or_by_prefixes() {
        let required = |src: &str, port: u16| RequiredFlow {
            network_security_group: ResourceId::network(
                "s",
                "rg",
                &[("networkSecurityGroups", "n")],
            ),
            direction: Direction::Inbound,
            protocol: Protocol::Tcp,
            source: src.into(),
            destination: "*".into(),
            port,
            reason: "test".into(),
        };
        let rules = vec![
            rule(
                "asenet-mgmt",
                100,
                Access::Allow,
                "AppServiceManagement",
                &["454-455"],
            ),
            rule("asenet-sub", 110, Access::Allow, "10.0.1.0/26", &["80"]),
        ];
        // by identity, even without prefixes in the context
        let v = evaluate_required(
            &required("AppServiceManagement", 454),
            &rules,
            &TagContext::new(),
        );
        assert_eq!((v.access, v.rule.as_str()), (Access::Allow, "asenet-mgmt"));
        // AzureLoadBalancer falls to its default rule
        let v = evaluate_required(&required("AzureLoadBalancer", 80), &rules, &ctx());
        assert_eq!(v.rule, "AllowAzureLoadBalancerInBound");
        // a CIDR source covered by the rule
        let v = evaluate_required(&required("10.0.1.0/26", 80), &rules, &TagContext::new());
        assert_eq!(v.rule, "asenet-sub");
        // a wider CIDR only partly covered by the allow: not all of it is admitted
        let v = evaluate_required(&required("10.0.1.0/24", 80), &rules, &TagContext::new());
        assert_eq!(
            (v.access, v.rule.as_str()),
            (Access::Deny, "DenyAllInBound")
        );
        // a deny covering part of the set decides
        let mut with_deny = rules.clone();
        with_deny.push(rule("foreign", 105, Access::Deny, "10.0.1.8/29", &["*"]));
        let v = evaluate_required(&required("10.0.1.0/26", 80), &with_deny, &TagContext::new());
        assert_eq!((v.access, v.rule.as_str()), (Access::Deny, "foreign"));
    }

    #[test]
    fn overlapping_rules_are_detected_across_tags_and_prefixes() {
        let c = ctx();
        let allow = rule(
            "asenet-web",
            200,
            Access::Allow,
            "192.23.1.2",
            &["80", "443"],
        );
        assert!(rules_overlap(
            &rule("d", 100, Access::Deny, "Internet", &["443"]),
            &allow,
            &c
        ));
        assert!(rules_overlap(
            &rule("d", 100, Access::Deny, "*", &["*"]),
            &allow,
            &c
        ));
        assert!(!rules_overlap(
            &rule("d", 100, Access::Deny, "VirtualNetwork", &["*"]),
            &allow,
            &c
        ));
        assert!(!rules_overlap(
            &rule("d", 100, Access::Deny, "192.23.1.0/24", &["8080"]),
            &allow,
            &c
        ));
        let mgmt = rule(
            "asenet-mgmt",
            110,
            Access::Allow,
            "AppServiceManagement",
            &["454-455"],
        );
        assert!(rules_overlap(
            &rule("d", 100, Access::Deny, "Internet", &["*"]),
            &mgmt,
            &c
        ));
        assert!(rules_overlap(
            &rule("d", 100, Access::Deny, "13.64.5.0/24", &["454"]),
            &mgmt,
            &c
        ));
    }
}
