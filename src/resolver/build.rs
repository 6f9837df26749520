//! Phase 1 of resolving: what one spec asks for, before priorities are allocated and
//! before contributions of several specs are merged.
//!
//! Input: one `ValidSpec`, every other spec (for `environmentRef`s) and the snapshot.
//! Output: the spec's rules (priority not yet allocated: 0, or the observed one for a rule
//! shared with the snapshot), its route requirement, its subnet association, and its
//! addresses; or every error found.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::error::{SpecError, SpecErrorKind};
use crate::model::{
    push_decimal, push_ipv4, push_ipv4_net, Access, AddressSet, AseVersion, Direction, Fnv,
    PortRange, PortSet, PriorityBand, Protocol, ResourceId, SecurityRule, SpecKey,
    TunnelingStrategy,
};
use crate::snapshot::{Snapshot, VnetState};
use crate::validate::{
    InboundPorts, Source, ValidBackend, ValidForcedTunneling, ValidInbound, ValidSpec,
};

use super::names::{description, owned_name_of};

/// A rule a spec asks for, waiting for its priority.
#[derive(Debug, Clone)]
pub(crate) struct PendingRule {
    pub nsg: ResourceId,
    pub band: PriorityBand,
    /// Allocated once, here: `finish` sets its priority in place and moves the `Arc` into
    /// the desired state, so a component's ~200,000 rules never exist twice (issue 14's
    /// memory: the copy at the end of resolving was the process's high-water mark).
    pub rule: Arc<SecurityRule>,
    /// Shared by the desired rule and the plan's entries (`resolver::OwnedRule::reason`).
    pub reason: Arc<str>,
    pub required: bool,
    /// Field path of the NSG reference this rule lands in (for errors about the NSG).
    /// Shared by the rules of one NSG reference.
    pub field: Arc<str>,
}

/// What the route table of a spec must carry.
#[derive(Debug, Clone)]
pub(crate) enum RouteNeed {
    /// Only a default route is advertised: 0.0.0.0/0 -> Internet (domain.md 1.2.7).
    Default,
    /// One route per tag, the tag as the address prefix (domain.md 3.3); plus
    /// 0.0.0.0/0 -> Internet when `default` (0.0.0.0/0 is among the advertisements).
    Tags { tags: Vec<String>, default: bool },
    /// Routes for the tags' prefixes, split and aggregated against the advertisements;
    /// plus 0.0.0.0/0 -> Internet when `default` (domain.md 1.2.7: with 0.0.0.0/0 and more
    /// specific prefixes advertised, the table needs both).
    Prefixes {
        required: Vec<Ipv4Net>,
        advertised: Vec<Ipv4Net>,
        tags: Vec<String>,
        default: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct SpecBuild {
    pub key: SpecKey,
    pub stem: String,
    pub rules: Vec<PendingRule>,
    pub route_table: Option<ResourceId>,
    pub route_need: Option<RouteNeed>,
    pub subnet: ResourceId,
    pub nsg: ResourceId,
    /// Location for resources asenet may create (the ASE VNet's location).
    pub location: Option<String>,
    pub internet_addresses: Vec<Ipv4Addr>,
    pub subnet_range: Ipv4Net,
}

/// The addresses callees outside the topology see for `spec`: explicit addresses in the
/// spec, else the snapshot's view of its ASE (outbound list, else public VIP; docs/domain.md
/// 1.2.3, 1.5).
pub(crate) fn internet_addresses(spec: &ValidSpec, snapshot: &Snapshot) -> Vec<Ipv4Addr> {
    let explicit = spec.addresses.internet();
    if !explicit.is_empty() {
        return explicit;
    }
    let Some(env) = spec
        .environment_id
        .as_ref()
        .and_then(|id| snapshot.environments.get(id))
    else {
        return vec![];
    };
    let mut v: Vec<Ipv4Addr> = if env.outbound.is_empty() {
        env.public_vip.into_iter().collect()
    } else {
        env.outbound.clone()
    };
    v.sort();
    v.dedup();
    v
}

/// A spec of the input with the addresses callees outside the topology see for it
/// ([`internet_addresses`]), computed once per resolve: every `environmentRef` naming the
/// spec needs them.
pub(crate) struct Known<'a> {
    pub spec: &'a ValidSpec,
    pub internet: Vec<Ipv4Addr>,
}

impl<'a> Known<'a> {
    pub fn new(spec: &'a ValidSpec, snapshot: &Snapshot) -> Self {
        Known {
            spec,
            internet: internet_addresses(spec, snapshot),
        }
    }
}

/// The specs of the input by key.
pub(crate) type KnownSpecs<'a> = BTreeMap<SpecKey, Known<'a>>;

/// [`KnownSpecs`] indexed for lookups by key (every `environmentRef` is looked up twice;
/// an ordered map compares two texts per step).
pub(crate) type SpecIndex<'a> = std::collections::HashMap<&'a SpecKey, &'a Known<'a>, Fnv>;

pub(crate) fn spec_index<'a>(specs: &'a KnownSpecs<'a>) -> SpecIndex<'a> {
    specs.iter().collect()
}

/// The snapshot's VNets by their lower-cased id (`ResourceId::key`), so a subnet finds its
/// VNet by the key of its parent ([`ResourceId::parent_key`]) without parsing the parent.
pub(crate) type VnetsByKey<'a> = BTreeMap<&'a str, &'a VnetState>;

pub(crate) fn vnets_by_key(snapshot: &Snapshot) -> VnetsByKey<'_> {
    (snapshot.virtual_networks.iter())
        .map(|(id, v)| (id.key(), v))
        .collect()
}

struct Builder<'a> {
    spec: &'a ValidSpec,
    snapshot: &'a Snapshot,
    /// The observed rules of the NSG the last rule went to (a spec's rules come in runs
    /// per NSG): where [`Builder::rule`] looks for a rule it can share.
    observed: Option<(ResourceId, &'a [Arc<SecurityRule>])>,
    stem: String,
    subnet_range: Ipv4Net,
    rules: Vec<PendingRule>,
    /// Field path of the NSG reference of the rules being added.
    field: Arc<str>,
    errors: Vec<SpecError>,
}

/// Where the addresses of a required rule come from.
#[derive(Clone, Copy)]
enum Peer {
    Any,
    /// The ASE subnet's range.
    Subnet,
    Tag(&'static str),
}

/// One rule an ASE version requires; never switchable off.
struct RequiredRule {
    what: &'static str,
    direction: Direction,
    protocol: Protocol,
    source: Peer,
    destination: Peer,
    /// Port ranges; empty for all ports.
    ports: &'static [(u16, u16)],
    reason: &'static str,
}

const fn req(
    what: &'static str,
    direction: Direction,
    protocol: Protocol,
    (source, destination): (Peer, Peer),
    ports: &'static [(u16, u16)],
    reason: &'static str,
) -> RequiredRule {
    RequiredRule {
        what,
        direction,
        protocol,
        source,
        destination,
        ports,
        reason,
    }
}

use Direction::{Inbound as In, Outbound as Out};
use Peer::{Any, Subnet, Tag};
use Protocol::{Any as AnyProtocol, Tcp, Udp};

/// domain.md 1.2.1: management over SSL on 454-455, always required. The v1 article's
/// sample uses source INTERNET; the AppServiceManagement tag is the narrower, documented
/// source of that traffic (1.3.2, 1.3.5), used here.
#[rustfmt::skip]
const V1_REQUIRED: &[RequiredRule] = &[
    req("req-mgmt-in", In, Tcp, (Tag("AppServiceManagement"), Any), &[(454, 455)],
        "ASE V1 management 454-455 from AppServiceManagement (required; domain.md 1.2.1)"),
];

/// domain.md 1.3.4, the canonical ASEv2 list.
#[rustfmt::skip]
const V2_REQUIRED: &[RequiredRule] = &[
    req("req-mgmt-in", In, Tcp, (Tag("AppServiceManagement"), Any), &[(454, 455)],
        "ASE V2 management 454-455 from AppServiceManagement (required; domain.md 1.3.4)"),
    req("req-lb-in", In, Tcp, (Tag("AzureLoadBalancer"), Any), &[(16001, 16001)],
        "ASE V2 load balancer keep-alive 16001 (required; domain.md 1.3.4)"),
    req("req-intra-in", In, AnyProtocol, (Subnet, Subnet), &[],
        "ASE V2 subnet-to-subnet, all ports (required; domain.md 1.3.4)"),
    req("req-dns-out", Out, Udp, (Any, Any), &[(53, 53)],
        "ASE V2 outbound DNS 53/udp (required; domain.md 1.3.4)"),
    req("req-ntp-out", Out, Udp, (Any, Any), &[(123, 123)],
        "ASE V2 outbound NTP 123/udp (required; domain.md 1.3.3-1.3.4)"),
    req("req-web-out", Out, Tcp, (Any, Any), &[(80, 80), (443, 443)],
        "ASE V2 outbound 80, 443 to all IPs (required; domain.md 1.3.4)"),
    req("req-sql-out", Out, Tcp, (Any, Tag("Sql")), &[(1433, 1433)],
        "ASE V2 outbound Azure SQL 1433 to Sql (required; domain.md 1.3.4)"),
    req("req-monitor-out", Out, Tcp, (Any, Any), &[(12000, 12000)],
        "ASE V2 outbound monitoring 12000 (required; domain.md 1.3.4)"),
    req("req-intra-out", Out, AnyProtocol, (Any, Subnet), &[],
        "ASE V2 outbound to the ASE subnet, all ports (required; domain.md 1.3.4)"),
];

/// domain.md 1.4.2: the load balancer's health ping on 80, to the subnet range.
#[rustfmt::skip]
const V3_REQUIRED: &[RequiredRule] = &[
    req("req-lb-in", In, Tcp, (Tag("AzureLoadBalancer"), Subnet), &[(80, 80)],
        "ASE V3 load balancer health ping 80 (required; domain.md 1.4.2)"),
];

/// domain.md 1.4.2: allow the FTP health ping on 21 whenever FTP is used.
#[rustfmt::skip]
const V3_FTP_REQUIRED: RequiredRule =
    req("req-lb-ftp-in", In, Tcp, (Tag("AzureLoadBalancer"), Subnet), &[(21, 21)],
        "ASE V3 load balancer FTP health ping 21 (required with Ftp; domain.md 1.4.2)");

/// The reason of a required rule, allocated once per process: every spec of a version
/// shares it (10,000 specs hold ~100,000 required rules and ~10 distinct reasons).
fn required_reason(reason: &'static str) -> Arc<str> {
    static REASONS: std::sync::LazyLock<HashMap<&'static str, Arc<str>>> =
        std::sync::LazyLock::new(|| {
            V1_REQUIRED
                .iter()
                .chain(V2_REQUIRED)
                .chain(V3_REQUIRED)
                .chain([&V3_FTP_REQUIRED])
                .map(|r| (r.reason, Arc::from(r.reason)))
                .collect()
        });
    REASONS
        .get(reason)
        .cloned()
        .unwrap_or_else(|| Arc::from(reason))
}

/// What one inbound entry admits, gathered from its sources.
#[derive(Default)]
struct Callers<'a> {
    /// Every address admitted by one rule: listed prefixes and callers' addresses.
    prefixes: BTreeSet<Ipv4Net>,
    /// Tags, one rule each.
    tags: Vec<&'a str>,
    /// The specs whose outbound addresses are admitted (`itself` for the spec).
    specs: Vec<String>,
    /// The prefixes listed in the entry, in its order.
    listed: Vec<Ipv4Net>,
}

impl Callers<'_> {
    /// How a reason names the callers: up to three prefixes, or their count, and the
    /// calling specs.
    fn describe(&self) -> String {
        // Written piece by piece into one text: the reason of most rules holds it.
        let mut from = String::new();
        match self.listed.len() {
            0 => {}
            n @ 1..=3 => {
                for (i, p) in self.listed[..n].iter().enumerate() {
                    if i > 0 {
                        from.push_str(", ");
                    }
                    crate::model::push_prefix_text(&mut from, p);
                }
            }
            n => from = format!("{n} prefixes"),
        }
        if !self.specs.is_empty() {
            if !from.is_empty() {
                from.push_str(" and ");
            }
            // Calls between ASEs are Internet calls (domain.md 1.2.4).
            from.push_str("the outbound addresses of ");
            for (i, s) in self.specs.iter().enumerate() {
                if i > 0 {
                    from.push_str(", ");
                }
                from.push_str(s);
            }
            from.push_str(" (domain.md 1.2.4)");
        }
        from
    }
}

impl<'a> Builder<'a> {
    #[allow(clippy::too_many_arguments)]
    fn rule(
        &mut self,
        nsg: &ResourceId,
        band: PriorityBand,
        what: &[&str],
        direction: Direction,
        protocol: Protocol,
        source: AddressSet,
        destination: AddressSet,
        ports: PortSet,
        reason: Arc<str>,
        required: bool,
    ) {
        let name = owned_name_of(&self.stem, what);
        let rule = SecurityRule {
            description: Some(description(&self.spec.key, &reason)),
            name,
            priority: 0,
            direction,
            access: Access::Allow,
            protocol,
            source,
            source_ports: PortSet::any(),
            destination,
            destination_ports: ports,
        };
        let rule = self.shared_with_observed(nsg, rule);
        self.rules.push(PendingRule {
            nsg: nsg.clone(),
            band,
            rule,
            reason,
            required,
            field: self.field.clone(),
        });
    }

    /// `rule` as an `Arc`: the observed rule of the same name in `nsg` when it is `rule` in
    /// every field but the priority (allocated later, by `merge`), else a new one. In a
    /// converged component every owned rule is already in Azure: the desired state then
    /// holds the snapshot's rules instead of a second copy of each (issue 14's memory).
    /// `finish` copies a shared rule only if its priority changes.
    fn shared_with_observed(
        &mut self,
        nsg: &ResourceId,
        mut rule: SecurityRule,
    ) -> Arc<SecurityRule> {
        let observed = match &self.observed {
            Some((id, rules)) if id == nsg => *rules,
            _ => {
                let rules = (self.snapshot.network_security_groups.get(nsg))
                    .map_or(&[][..], |n| n.rules.as_slice());
                self.observed = Some((nsg.clone(), rules));
                rules
            }
        };
        let Some(o) = observed.iter().find(|o| o.name == rule.name) else {
            return Arc::new(rule);
        };
        rule.priority = o.priority;
        if **o == rule {
            Arc::clone(o)
        } else {
            rule.priority = 0;
            Arc::new(rule)
        }
    }

    fn error(&mut self, kind: SpecErrorKind, field: &str, value: String, message: String) {
        let e = SpecError::new(&self.spec.key, kind, field, value, message);
        self.errors.push(e);
    }

    fn unresolved(&mut self, field: &str, value: String, message: String) {
        self.error(SpecErrorKind::UnresolvedReference, field, value, message);
    }

    fn invalid(&mut self, field: &str, value: String, message: String) {
        self.error(SpecErrorKind::InvalidField, field, value, message);
    }

    /// The rules the ASE version requires; never switchable off.
    fn required(&mut self) {
        let spec = self.spec;
        let ftp = (spec.version == AseVersion::V3 && spec.uses_ftp()).then_some(&V3_FTP_REQUIRED);
        let table = match spec.version {
            AseVersion::V1 => V1_REQUIRED,
            AseVersion::V2 => V2_REQUIRED,
            AseVersion::V3 => V3_REQUIRED,
        };
        let peer = |p: Peer| match p {
            Peer::Any => AddressSet::Any,
            Peer::Subnet => AddressSet::prefixes([self.subnet_range]),
            Peer::Tag(t) => AddressSet::tag(t),
        };
        let rules: Vec<_> = table
            .iter()
            .chain(ftp)
            .map(|r| {
                let ports = if r.ports.is_empty() {
                    PortSet::any()
                } else {
                    PortSet::from_ranges(r.ports.iter().map(|(lo, hi)| PortRange::new(*lo, *hi)))
                };
                (r, peer(r.source), peer(r.destination), ports)
            })
            .collect();
        for (r, source, destination, ports) in rules {
            self.rule(
                &spec.network_security_group,
                spec.band,
                &[r.what],
                r.direction,
                r.protocol,
                source,
                destination,
                ports,
                required_reason(r.reason),
                true,
            );
        }
    }

    /// The callers one inbound entry `spec.inbound[i]` admits. Calls between ASEs are
    /// Internet calls, even in one VNet: the callee sees the caller's outbound addresses
    /// (design.md 1.3; domain.md 1.2.4).
    fn callers(&mut self, i: usize, entry: &'a ValidInbound, specs: &SpecIndex) -> Callers<'a> {
        let mut c = Callers::default();
        for (j, src) in entry.sources.iter().enumerate() {
            match src {
                Source::Prefix(p) => {
                    c.prefixes.insert(*p);
                    c.listed.push(*p);
                }
                Source::Tag(t) => c.tags.push(t),
                Source::Environment(other) => {
                    // Reported by `unresolved_environment_refs`, before the subnet was
                    // looked up.
                    let Some(o) = specs.get(other) else {
                        continue;
                    };
                    let addrs = &o.internet;
                    if addrs.is_empty() {
                        self.unresolved(
                            &format!("spec.inbound[{i}].from[{j}].environmentRef"),
                            other.to_string(),
                            format!(
                                "the ASE of spec `{other}` has no known outbound address (set spec.environment.addresses or an environment.resourceId present in the snapshot)"
                            ),
                        );
                        continue;
                    }
                    c.prefixes.extend(addrs.iter().map(|a| Ipv4Net::from(*a)));
                    c.specs.push(if *other == self.spec.key {
                        "itself".into()
                    } else {
                        [&*other.namespace, "/", &*other.name].concat()
                    });
                }
            }
        }
        c
    }

    /// The rules of one inbound entry: its destination is the ASE subnet range
    /// (domain.md 1.4.2; design.md 1.1); one rule for its addresses, one per tag (a rule
    /// may not list several tags, domain.md 2.6).
    fn inbound(&mut self, entry: &ValidInbound, callers: Callers<'_>) {
        let spec = self.spec;
        let (ports, protocol, what) = match &entry.ports {
            InboundPorts::Service(s) => (
                s.ports(spec.version),
                Protocol::Tcp,
                std::borrow::Cow::Borrowed(s.as_str()),
            ),
            InboundPorts::Raw { ports, protocol } => {
                let mut what = String::from("ports ");
                ports.push_text(&mut what);
                (ports.clone(), *protocol, what.into())
            }
        };
        let subnet = AddressSet::prefixes([self.subnet_range]);
        let from = callers.describe();
        if !callers.prefixes.is_empty() {
            self.rule(
                &spec.network_security_group,
                spec.band,
                &["in-", &entry.name],
                Direction::Inbound,
                protocol,
                AddressSet::prefixes(callers.prefixes),
                subnet.clone(),
                ports.clone(),
                ["inbound `", &entry.name, "`: ", &what, " from ", &from]
                    .concat()
                    .into(),
                false,
            );
        }
        for t in callers.tags {
            self.rule(
                &spec.network_security_group,
                spec.band,
                &["in-", &entry.name, ".", t],
                Direction::Inbound,
                protocol,
                AddressSet::tag(t),
                subnet.clone(),
                ports.clone(),
                ["inbound `", &entry.name, "`: ", &what, " from ", t]
                    .concat()
                    .into(),
                false,
            );
        }
    }

    /// The rule of one back end `spec.backends[i]`: inside the topology it sees the ASE
    /// subnet, outside the ASE's outbound addresses (design.md section 1 point 2;
    /// domain.md 1.2.3).
    fn backend(
        &mut self,
        i: usize,
        be: &ValidBackend,
        topology: &[Ipv4Net],
        internet: &[Ipv4Addr],
    ) {
        let mut field = String::from("spec.backends[");
        push_decimal(&mut field, i as u64);
        field.push_str("].networkSecurityGroup");
        self.field = Arc::from(field);
        let subnet_range = self.subnet_range;
        let inside = topology.iter().any(|t| t.contains(&be.address));
        let (source, seen) = if inside {
            let mut seen = String::from("inside the topology, sees the ASE subnet ");
            push_ipv4_net(&mut seen, &subnet_range);
            (AddressSet::prefixes([subnet_range]), seen)
        } else if internet.is_empty() {
            self.unresolved(
                &format!("spec.backends[{i}].address"),
                be.address.to_string(),
                "the back end is outside the topology, so it sees the ASE's outbound addresses, but none is known (set spec.environment.addresses or an environment.resourceId present in the snapshot)".to_string(),
            );
            return;
        } else {
            let mut seen = String::from("outside the topology, sees the ASE's outbound ");
            for (i, a) in internet.iter().enumerate() {
                if i > 0 {
                    seen.push(',');
                }
                push_ipv4(&mut seen, *a);
            }
            (
                AddressSet::prefixes(internet.iter().map(|a| Ipv4Net::from(*a))),
                seen,
            )
        };
        let key = &self.spec.key;
        self.rule(
            &be.network_security_group,
            be.band,
            &["be-", &be.name],
            Direction::Inbound,
            be.protocol,
            source,
            AddressSet::prefixes([be.address]),
            be.ports.clone(),
            format!(
                "back end `{}` called by {key}: {seen} (domain.md 1.2.3)",
                be.name
            )
            .into(),
            false,
        );
    }

    /// What the route table must carry under forced tunneling (domain.md 1.2.7, 1.3.5,
    /// 3.3, 3.4). When 0.0.0.0/0 is advertised, `0.0.0.0/0 -> Internet` is always needed:
    /// it carries every Internet-bound flow the ASE must make directly (1.2.2, 1.3.4).
    /// More specific advertisements beat it by longest prefix match (3.4), so the required
    /// tags' prefixes get routes of their own in addition, at least as specific as every
    /// advertisement they overlap.
    fn route_need(
        &mut self,
        ft: &ValidForcedTunneling,
        snapshot: &Snapshot,
        location: Option<&str>,
    ) -> RouteNeed {
        let default = ft.advertised.iter().any(|p| p.prefix_len() == 0);
        let only_default = ft.advertised.iter().all(|p| p.prefix_len() == 0);
        let f = "spec.outbound.forcedTunneling.requiredTags";
        let location = location.unwrap_or("unknown");
        match ft.strategy {
            TunnelingStrategy::DirectInternet if only_default => RouteNeed::Default,
            TunnelingStrategy::DirectInternet => {
                let mut required = Vec::new();
                for t in &ft.required_tags {
                    match snapshot.service_tag(t) {
                        Some(s) => required.extend(s.address_prefixes.iter().map(|p| p.trunc())),
                        None => self.unresolved(f, t.clone(),
                            format!("service tag `{t}` is not in the snapshot for location `{location}`: neither ARM's Service Tags API nor --service-tags provided it; its prefixes are needed for the routes")),
                    }
                }
                RouteNeed::Prefixes {
                    required,
                    advertised: ft.advertised.clone(),
                    tags: ft.required_tags.clone(),
                    default,
                }
            }
            TunnelingStrategy::ServiceTag => {
                for t in &ft.required_tags {
                    self.check_tag_route(f, t, ft, snapshot, location);
                }
                RouteNeed::Tags {
                    tags: ft.required_tags.clone(),
                    default,
                }
            }
        }
    }

    /// Whether the service tag `t` can carry a tag route (domain.md 3.3, 3.4).
    fn check_tag_route(
        &mut self,
        f: &str,
        t: &str,
        ft: &ValidForcedTunneling,
        snapshot: &Snapshot,
        location: &str,
    ) {
        match snapshot.service_tag(t) {
            Some(s) if s.usable_in_routes() => {
                // A tag route is one UDR per tag prefix; an advertisement strictly inside
                // one of them wins by longest prefix match (3.4), so the promise (the
                // tag's addresses go to the Internet) would not hold.
                let inner = s.address_prefixes.iter().find_map(|tp| {
                    ft.advertised
                        .iter()
                        .find(|a| a.prefix_len() > tp.prefix_len() && tp.contains(*a))
                        .map(|a| (*tp, *a))
                });
                if let Some((tp, a)) = inner {
                    self.invalid(f, t.to_string(),
                        format!("advertised prefix {a} is more specific than {tp} of service tag `{t}`: a tag route would lose to it (domain.md 3.4); use strategy DirectInternet"));
                }
            }
            Some(_) => self.invalid(f, t.to_string(),
                format!("service tag `{t}` may not be used in routes (its networkFeatures lack UDR, domain.md 3.3); use strategy DirectInternet")),
            None => self.unresolved(f, t.to_string(),
                format!("service tag `{t}` is not in the snapshot for location `{location}`: neither ARM's Service Tags API nor --service-tags provided it; cannot check that it may be used in routes")),
        }
    }
}

/// At most how many rules `spec` asks for: the required ones, one per inbound entry and
/// per tag it admits, one per back end. The rule list is sized once (each rule is large,
/// and growing the list copies every rule and touches fresh memory).
fn rule_count(spec: &ValidSpec) -> usize {
    let tags: usize = (spec.inbound.iter())
        .map(|e| {
            1 + e
                .sources
                .iter()
                .filter(|s| matches!(s, Source::Tag(_)))
                .count()
        })
        .sum();
    let required = match spec.version {
        AseVersion::V1 => V1_REQUIRED.len(),
        AseVersion::V2 => V2_REQUIRED.len(),
        AseVersion::V3 => V3_REQUIRED.len() + 1,
    };
    required + tags + spec.backends.len()
}

/// `environmentRef`s naming no spec. They are wrong whatever Azure holds: reported first,
/// and also when the subnet is missing too (a spec applied to a cluster whose Azure lacks
/// its subnet still shows the error in its own input).
fn unresolved_environment_refs(spec: &ValidSpec, specs: &SpecIndex) -> Vec<SpecError> {
    let mut errors = Vec::new();
    for (i, entry) in spec.inbound.iter().enumerate() {
        for (j, src) in entry.sources.iter().enumerate() {
            if let Source::Environment(other) = src {
                if !specs.contains_key(other) {
                    errors.push(SpecError::new(
                        &spec.key,
                        SpecErrorKind::UnresolvedReference,
                        format!("spec.inbound[{i}].from[{j}].environmentRef"),
                        other.to_string(),
                        format!(
                            "environmentRef `{other}` names no AseConnectivity spec in the input"
                        ),
                    ));
                }
            }
        }
    }
    errors
}

/// Builds one spec's contributions.
pub(crate) fn build(
    known: &Known,
    specs: &SpecIndex,
    snapshot: &Snapshot,
    vnets: &VnetsByKey,
    stem: String,
) -> Result<SpecBuild, Vec<SpecError>> {
    let spec = known.spec;
    let mut errors = unresolved_environment_refs(spec, specs);
    let Some(subnet_state) = snapshot.subnets.get(&spec.subnet) else {
        errors.push(SpecError::new(
            &spec.key,
            SpecErrorKind::UnresolvedReference,
            "spec.subnet.resourceId",
            spec.subnet.to_string(),
            format!(
                "subnet `{}` is not in the snapshot; its address range is needed for the rules",
                spec.subnet
            ),
        ));
        return Err(errors);
    };
    let subnet_range = subnet_state.address_prefix.trunc();
    // `snapshot.vnet_of`, by key.
    let vnet = (spec.subnet.parent_key()).and_then(|k| vnets.get(k).copied());
    let location = vnet.and_then(|v| v.location.clone());
    let mut b = Builder {
        spec,
        snapshot,
        observed: None,
        stem,
        subnet_range,
        rules: Vec::with_capacity(rule_count(spec)),
        field: Arc::from("spec.networkSecurityGroup"),
        errors,
    };

    // The topology: the VNet's address space plus extra prefixes (design.md section 1 point
    // 2; domain.md 1.2.3).
    let mut topology: Vec<Ipv4Net> = spec.extra_prefixes.clone();
    topology.push(subnet_range);
    if let Some(v) = vnet {
        topology.extend(v.address_prefixes.iter().map(|p| p.trunc()));
    } else if !spec.backends.is_empty() {
        b.unresolved(
            "spec.subnet.resourceId",
            spec.subnet.to_string(),
            format!(
                "the virtual network of subnet `{}` is not in the snapshot; its address space decides which back ends are inside the topology",
                spec.subnet
            ),
        );
    }

    let internet = known.internet.clone();
    b.required();
    for (i, entry) in spec.inbound.iter().enumerate() {
        let callers = b.callers(i, entry, specs);
        b.inbound(entry, callers);
    }
    for (i, be) in spec.backends.iter().enumerate() {
        b.backend(i, be, &topology, &internet);
    }
    let route_need =
        (spec.forced_tunneling.as_ref()).map(|ft| b.route_need(ft, snapshot, location.as_deref()));

    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    Ok(SpecBuild {
        key: spec.key.clone(),
        stem: b.stem,
        rules: b.rules,
        route_table: spec.route_table.clone(),
        route_need,
        subnet: spec.subnet.clone(),
        nsg: spec.network_security_group.clone(),
        location,
        internet_addresses: internet,
        subnet_range,
    })
}
