//! validate: raw `AseConnectivity` specs (strings as the user wrote them) into typed values
//! (docs/design.md section 3, docs/style.md rule 7).
//!
//! Input comes from `load` (CLI) or the kube watcher (operator); the output, `ValidSpec`,
//! is the only spec type the resolver sees. Every problem of a spec is collected, not just
//! the first, and each `SpecError` names the spec, the field path
//! (`spec.inbound[1].from[0].cidr`), the value as written and what is wrong with it.
//!
//! What is *not* checked here: whether referenced specs, subnets or ASEs exist. Those need
//! the other specs and the snapshot, so the resolver reports them (`UnresolvedReference`)
//! and only the referring spec fails.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rayon::prelude::*;
use serde::Serialize;

use crate::api::{self, AseConnectivity, DeletionPolicy, Mode, NsgRef, PriorityBandSpec};
use crate::error::{SpecError, SpecErrorKind};
use crate::model::{
    check_azure_name, check_resource_id, looks_like_tag, parse_network, AseVersion, Caseless,
    PortRange, PortSet, Priority, PriorityBand, Protocol, ResourceId, SpecKey, TunnelingStrategy,
};

/// The band used when a spec gives none.
pub const DEFAULT_BAND: (u16, u16) = (100, 1999);

/// Inbound and backend entry names become part of Azure rule names
/// (`asenet-<spec>-in-<entry>`, at most 80 characters, docs/domain.md 2.2), so they are
/// kept short enough to leave room for the spec name.
pub const MAX_ENTRY_NAME: usize = 32;

/// `namespace/name` is written into every owned rule's description (at most 140
/// characters, docs/domain.md 2.1) together with a reason, so it must leave room for it.
pub const MAX_SPEC_KEY: usize = 100;

pub const NSG_TYPE: &str = "Microsoft.Network/networkSecurityGroups";
pub const SUBNET_TYPE: &str = "Microsoft.Network/virtualNetworks/subnets";
pub const ROUTE_TABLE_TYPE: &str = "Microsoft.Network/routeTables";
pub const ENVIRONMENT_TYPE: &str = "Microsoft.Web/hostingEnvironments";

/// A spec with every field parsed into model types.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidSpec {
    pub key: SpecKey,
    pub generation: Option<i64>,
    pub mode: Mode,
    pub deletion_policy: DeletionPolicy,
    pub version: AseVersion,
    /// The `Microsoft.Web/hostingEnvironments` id, when given.
    pub environment_id: Option<ResourceId>,
    /// Addresses written in the spec; they win over what the snapshot reports.
    pub addresses: ValidAddresses,
    pub subnet: ResourceId,
    pub network_security_group: ResourceId,
    /// The band this spec's rules may use in its own NSG.
    pub band: PriorityBand,
    pub route_table: Option<ResourceId>,
    /// Topology beyond the VNet's address space (peered VNets, on-premises).
    pub extra_prefixes: Vec<Ipv4Net>,
    pub inbound: Vec<ValidInbound>,
    pub backends: Vec<ValidBackend>,
    pub forced_tunneling: Option<ValidForcedTunneling>,
}

impl ValidSpec {
    /// True when some inbound entry asks for FTP (ASEv3 then needs the FTP health probe
    /// rule, docs/domain.md 1.4.2).
    pub fn uses_ftp(&self) -> bool {
        self.inbound
            .iter()
            .any(|i| matches!(i.ports, InboundPorts::Service(Service::Ftp)))
    }
}

/// Explicit ASE addresses (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAddresses {
    pub public_vip: Option<Ipv4Addr>,
    pub outbound: Vec<Ipv4Addr>,
    pub internal_ip: Option<Ipv4Addr>,
}

impl ValidAddresses {
    /// The addresses a callee outside the topology sees: the outbound list, else the VIP
    /// (docs/domain.md 1.2.3, 1.5).
    pub fn internet(&self) -> Vec<Ipv4Addr> {
        if !self.outbound.is_empty() {
            let mut v = self.outbound.clone();
            v.sort();
            v.dedup();
            v
        } else {
            self.public_vip.into_iter().collect()
        }
    }
}

/// A named application service (docs/domain.md 1.2.1, 1.3.2, 1.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Service {
    Http,
    Https,
    Ftp,
    RemoteDebugging,
    WebDeploy,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Http,
        Service::Https,
        Service::Ftp,
        Service::RemoteDebugging,
        Service::WebDeploy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Http => "Http",
            Service::Https => "Https",
            Service::Ftp => "Ftp",
            Service::RemoteDebugging => "RemoteDebugging",
            Service::WebDeploy => "WebDeploy",
        }
    }

    /// TCP ports of the service on an ASE of `version`.
    pub fn ports(self, version: AseVersion) -> PortSet {
        let r = |lo, hi| PortRange::new(lo, hi);
        let s = PortRange::single;
        PortSet::from_ranges(match self {
            Service::Http => vec![s(80)],
            Service::Https => vec![s(443)],
            // FTP control, FTPS control, FTP data channels (1.2.1, 1.3.2, 1.4.2).
            Service::Ftp => vec![s(21), s(990), r(10001, 10020)],
            // Visual Studio remote debugging differs per version (1.2.1, 1.3.2, 1.4.2;
            // domain.md 7 point 9 notes the v1 list predates VS 2017).
            Service::RemoteDebugging => match version {
                AseVersion::V1 => vec![s(4016), s(4018), s(4020)],
                AseVersion::V2 => vec![s(4020), s(4022), s(4024)],
                AseVersion::V3 => vec![s(4022), s(4024), s(4026)],
            },
            Service::WebDeploy => vec![s(8172)],
        })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Service {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(())
    }
}

/// What an inbound entry opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum InboundPorts {
    Service(Service),
    Raw { ports: PortSet, protocol: Protocol },
}

/// One allowed source of inbound traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Prefix(Ipv4Net),
    Tag(String),
    /// Another spec's ASE (or this spec itself): its outbound addresses.
    Environment(SpecKey),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidInbound {
    pub name: String,
    pub ports: InboundPorts,
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidBackend {
    pub name: String,
    pub address: Ipv4Net,
    pub ports: PortSet,
    pub protocol: Protocol,
    pub network_security_group: ResourceId,
    pub band: PriorityBand,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidForcedTunneling {
    pub advertised: Vec<Ipv4Net>,
    pub strategy: TunnelingStrategy,
    /// The tags whose prefixes must reach the Internet directly; defaulted per version.
    pub required_tags: Vec<String>,
}

/// The CRD's version in the core's type: the core does not depend on the CRD types (issue
/// 15), so the conversion happens here, at the edge.
fn ase_version(v: api::AseVersion) -> AseVersion {
    match v {
        api::AseVersion::V1 => AseVersion::V1,
        api::AseVersion::V2 => AseVersion::V2,
        api::AseVersion::V3 => AseVersion::V3,
    }
}

/// The CRD's tunneling strategy in the core's type (see [`ase_version`]).
fn tunneling_strategy(s: api::TunnelingStrategy) -> TunnelingStrategy {
    match s {
        api::TunnelingStrategy::DirectInternet => TunnelingStrategy::DirectInternet,
        api::TunnelingStrategy::ServiceTag => TunnelingStrategy::ServiceTag,
    }
}

/// Validates every spec; returns the valid ones and the errors of the others. This is the
/// one validation path of every command (resolve, plan, apply, verify) and of the
/// operator's input.
///
/// A spec key given more than once makes every copy invalid: picking one copy would
/// silently ignore the other (issue 12), and which one is meant cannot be known. The
/// spec's entries already in Azure are then kept as they are, like any invalid spec's.
///
/// `specs` are objects or shared ones (`Arc<AseConnectivity>`, as the controller's store
/// holds them: a component is planned from them without a copy).
pub fn validate_all<S: std::borrow::Borrow<AseConnectivity> + Sync>(
    specs: &[S],
) -> (Vec<ValidSpec>, Vec<SpecError>) {
    let mut ok = Vec::with_capacity(specs.len());
    let mut errors = Vec::new();
    // Each key built once, and counted by reference.
    let keys: Vec<SpecKey> = specs.iter().map(|s| s.borrow().spec_key()).collect();
    let mut count: BTreeMap<&SpecKey, usize> = BTreeMap::new();
    for k in &keys {
        *count.entry(k).or_default() += 1;
    }
    // One run of specs per core, each with its own ids (an id both runs name is held
    // twice, not once per spec); the runs' results are joined in input order.
    let run = specs
        .len()
        .div_ceil(rayon::current_num_threads())
        .max(SPECS_PER_RUN);
    let runs: Vec<Vec<Result<ValidSpec, Vec<SpecError>>>> = (specs.par_chunks(run))
        .zip(keys.par_chunks(run))
        .map(|(specs, keys)| {
            let mut ids = Ids::default();
            let mut out = Vec::with_capacity(specs.len());
            for (spec, key) in specs.iter().zip(keys) {
                let n = count.get(key).copied().unwrap_or(0);
                if n > 1 && !key.name.is_empty() {
                    out.push(Err(vec![SpecError::new(
                        key,
                        SpecErrorKind::InvalidField,
                        "metadata.name",
                        key.to_string(),
                        format!("spec `{key}` is given {n} times; each spec must be given once (no copy is used)"),
                    )]));
                    continue;
                }
                out.push(validate_keyed(spec.borrow(), key.clone(), &mut ids));
            }
            out
        })
        .collect();
    for result in runs.into_iter().flatten() {
        match result {
            Ok(v) => ok.push(v),
            Err(e) => errors.extend(e),
        }
    }
    (ok, errors)
}

/// The fewest specs one parallel run validates: small inputs stay on the calling thread.
const SPECS_PER_RUN: usize = 256;

/// A field path such as `spec.inbound[1].from[0].cidr`, written out only when an error
/// names it (valid specs, the common case, never format their paths).
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    /// Whether a `.` separates this segment from its parent.
    dot: bool,
    name: &'a str,
    index: Option<usize>,
}

impl<'a> Path<'a> {
    fn root(name: &'a str) -> Self {
        Path {
            parent: None,
            dot: false,
            name,
            index: None,
        }
    }
    /// `self.name`
    fn field(&'a self, name: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            dot: true,
            name,
            index: None,
        }
    }
    /// `self.name[i]`
    fn item(&'a self, name: &'a str, i: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            dot: true,
            name,
            index: Some(i),
        }
    }
    /// `self[i]`
    fn at(&'a self, i: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            dot: false,
            name: "",
            index: Some(i),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.parent {
            write!(f, "{p}")?;
        }
        if self.dot {
            f.write_str(".")?;
        }
        f.write_str(self.name)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        Ok(())
    }
}

/// Collects the errors of one spec.
struct Ctx<'i> {
    key: SpecKey,
    errors: Vec<SpecError>,
    ids: &'i mut Ids,
}

/// The ids parsed so far, by their text as written: specs of one component name the same
/// NSGs (shared back ends), and each such id is then held once (issue 14's memory). Keyed
/// by the exact text, so an id written with another casing keeps its own text for errors
/// and reports.
#[derive(Default)]
struct Ids(std::collections::HashMap<String, ResourceId>);

impl Ids {
    fn parse(&mut self, value: &str) -> Result<ResourceId, crate::model::ParseError> {
        if let Some(id) = self.0.get(value) {
            return Ok(id.clone());
        }
        let id = ResourceId::parse(value)?;
        self.0.insert(value.to_string(), id.clone());
        Ok(id)
    }
}

impl Ctx<'_> {
    fn err(
        &mut self,
        field: impl fmt::Display,
        value: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(SpecError::new(
            &self.key,
            SpecErrorKind::InvalidField,
            field.to_string(),
            value,
            message,
        ));
    }

    fn resource_id(&mut self, field: Path<'_>, value: &str, ty: &str) -> Option<ResourceId> {
        match self.ids.parse(value) {
            Ok(id) if id.is_type(ty) => match check_resource_id(&id) {
                Ok(()) => Some(id),
                Err(e) => {
                    self.err(field, value, e.to_string());
                    None
                }
            },
            Ok(id) => {
                self.err(
                    field,
                    value,
                    format!(
                        "`{value}` is a {} id; expected a {ty} id",
                        id.resource_type()
                    ),
                );
                None
            }
            Err(e) => {
                self.err(field, value, e.to_string());
                None
            }
        }
    }

    fn ip(&mut self, field: Path<'_>, value: &str) -> Option<Ipv4Addr> {
        match value.trim().parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    field,
                    value,
                    format!("`{value}` is not a valid IPv4 address"),
                );
                None
            }
        }
    }

    /// A user-written prefix: host bits must be clear (no silent widening).
    fn prefix(&mut self, field: Path<'_>, value: &str) -> Option<Ipv4Net> {
        match parse_network(value) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(field, value, e.to_string());
                None
            }
        }
    }

    fn band(&mut self, field: Path<'_>, band: Option<&PriorityBandSpec>) -> Option<PriorityBand> {
        let Some(b) = band else {
            return Some(PriorityBand {
                from: Priority::new(DEFAULT_BAND.0 as i64).ok()?,
                to: Priority::new(DEFAULT_BAND.1 as i64).ok()?,
            });
        };
        let value = || format!("{}-{}", b.from, b.to);
        let from = Priority::new(b.from);
        let to = Priority::new(b.to);
        match (from, to) {
            (Ok(from), Ok(to)) if from <= to => Some(PriorityBand { from, to }),
            (Ok(_), Ok(_)) => {
                self.err(
                    field,
                    value(),
                    format!(
                        "priority band `{}-{}` is empty: from must not exceed to",
                        b.from, b.to
                    ),
                );
                None
            }
            _ => {
                self.err(
                    field,
                    value(),
                    format!(
                        "priority band `{}-{}` must lie within 100-4096 (docs/domain.md 2.1)",
                        b.from, b.to
                    ),
                );
                None
            }
        }
    }

    fn nsg(&mut self, field: Path<'_>, nsg: &NsgRef) -> (Option<ResourceId>, Option<PriorityBand>) {
        let id = self.resource_id(field.field("resourceId"), &nsg.resource_id, NSG_TYPE);
        let band = self.band(field.field("priorities"), nsg.priorities.as_ref());
        (id, band)
    }

    fn ports(&mut self, field: Path<'_>, ports: &[IntOrString]) -> Option<PortSet> {
        if ports.is_empty() {
            self.err(field, "", "at least one port or port range is required");
            return None;
        }
        let mut ranges = Vec::new();
        let mut ok = true;
        for (i, p) in ports.iter().enumerate() {
            // A port given as a number in range is the port itself (what parsing its
            // decimal text gives), without writing that text.
            if let IntOrString::Int(n) = p {
                if let Ok(port) = u16::try_from(*n) {
                    ranges.push(PortRange::single(port));
                    continue;
                }
            }
            let text: std::borrow::Cow<str> = match p {
                IntOrString::Int(n) => n.to_string().into(),
                IntOrString::String(s) => s.as_str().into(),
            };
            match text.parse::<PortRange>() {
                Ok(r) => ranges.push(r),
                Err(e) => {
                    self.err(field.at(i), text.into_owned(), e.to_string());
                    ok = false;
                }
            }
        }
        ok.then(|| PortSet::from_ranges(ranges))
    }

    fn protocol(&mut self, field: Path<'_>, value: Option<&str>) -> Option<Protocol> {
        let Some(v) = value else {
            return Some(Protocol::Tcp);
        };
        match v.parse::<Protocol>() {
            Ok(p @ (Protocol::Tcp | Protocol::Udp | Protocol::Any)) => Some(p),
            _ => {
                self.err(
                    field,
                    v,
                    format!("`{v}` is not a supported protocol (Tcp, Udp or *)"),
                );
                None
            }
        }
    }

    /// Entry names: Azure name rules (2.2), short, no `.` (reserved as a separator in
    /// generated rule names), unique in the spec (case-insensitively, as Azure compares).
    ///
    /// `seen` maps the names so far to the list and index of their entry
    /// (`("inbound", 1)` stands for `spec.inbound[1].name`).
    fn entry_name<'a>(
        &mut self,
        field: Path<'_>,
        entry: (&'static str, usize),
        name: &'a str,
        seen: &mut BTreeMap<Caseless<'a>, (&'static str, usize)>,
    ) {
        if let Err(e) = check_azure_name(name) {
            self.err(field, name, e.to_string());
            return;
        }
        if name.len() > MAX_ENTRY_NAME {
            self.err(
                field,
                name,
                format!(
                    "`{name}` is longer than {MAX_ENTRY_NAME} characters; it becomes part of Azure rule names (at most 80, docs/domain.md 2.2)"
                ),
            );
        }
        if name.contains('.') {
            self.err(
                field,
                name,
                format!("`{name}` contains `.`, which generated rule names use as a separator"),
            );
        }
        if let Some((list, i)) = seen.insert(Caseless(name), entry) {
            self.err(
                field,
                name,
                format!("name `{name}` is already used by spec.{list}[{i}].name"),
            );
        }
    }
}

/// Validates one spec, returning every problem found.
pub fn validate(spec: &AseConnectivity) -> Result<ValidSpec, Vec<SpecError>> {
    validate_keyed(spec, spec.spec_key(), &mut Ids::default())
}

/// [`validate`] of a spec whose key (`spec.spec_key()`) the caller already built, sharing
/// the ids in `ids`.
fn validate_keyed(
    spec: &AseConnectivity,
    key: SpecKey,
    ids: &mut Ids,
) -> Result<ValidSpec, Vec<SpecError>> {
    let mut cx = Ctx {
        key: key.clone(),
        errors: Vec::new(),
        ids,
    };
    cx.metadata(&key);
    let s = &spec.spec;

    // Environment.
    let version = ase_version(s.environment.version);
    let environment_id = s.environment.resource_id.as_deref().and_then(|v| {
        cx.resource_id(
            Path::root("spec.environment.resourceId"),
            v,
            ENVIRONMENT_TYPE,
        )
    });
    let addresses = s
        .environment
        .addresses
        .as_ref()
        .map(|a| cx.addresses(a))
        .unwrap_or_default();

    // Subnet, NSG, route table, topology.
    let subnet = cx.resource_id(
        Path::root("spec.subnet.resourceId"),
        &s.subnet.resource_id,
        SUBNET_TYPE,
    );
    let (nsg, band) = cx.nsg(
        Path::root("spec.networkSecurityGroup"),
        &s.network_security_group,
    );
    let route_table = s.route_table.as_ref().and_then(|r| {
        cx.resource_id(
            Path::root("spec.routeTable.resourceId"),
            &r.resource_id,
            ROUTE_TABLE_TYPE,
        )
    });
    let route_table_ok = s.route_table.is_none() || route_table.is_some();
    let extra_prefixes = cx.prefixes(
        Path::root("spec.topology.extraPrefixes"),
        &s.topology.extra_prefixes,
    );

    // Inbound entries and backends share one namespace of entry names.
    let mut names = BTreeMap::new();
    let spec_root = Path::root("spec");
    // Lists sized for every entry (`filter_map` gives no lower bound, so `collect` would
    // grow them step by step).
    let mut inbound: Vec<ValidInbound> = Vec::with_capacity(s.inbound.len());
    inbound.extend(
        (s.inbound.iter().enumerate()).filter_map(|(i, entry)| {
            cx.inbound(spec_root.item("inbound", i), i, entry, &mut names)
        }),
    );
    let mut backends: Vec<ValidBackend> = Vec::with_capacity(s.backends.len());
    backends.extend(
        (s.backends.iter().enumerate())
            .filter_map(|(i, b)| cx.backend(spec_root.item("backends", i), i, b, &mut names)),
    );

    // Outbound.
    let forced_tunneling = s
        .outbound
        .forced_tunneling
        .as_ref()
        .map(|ft| cx.forced_tunneling(ft, s.route_table.is_some(), version));

    match (subnet, nsg, band) {
        (Some(subnet), Some(nsg), Some(band)) if cx.errors.is_empty() && route_table_ok => {
            Ok(ValidSpec {
                key,
                generation: spec.metadata.generation,
                mode: s.mode,
                deletion_policy: s.deletion_policy,
                version,
                environment_id,
                addresses,
                subnet,
                network_security_group: nsg,
                band,
                route_table,
                extra_prefixes,
                inbound,
                backends,
                forced_tunneling,
            })
        }
        _ => Err(cx.errors),
    }
}

/// The entry names of a spec so far, each with the list and index of its entry
/// (`("inbound", 1)` stands for `spec.inbound[1].name`).
type Names<'a> = BTreeMap<Caseless<'a>, (&'static str, usize)>;

/// Kubernetes object names (RFC 1123): they become part of Azure rule names and of the
/// `asenet:<namespace>/<name>:` description marker, so only these characters are safe.
fn is_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The steps of [`validate`], one per part of the spec.
impl Ctx<'_> {
    /// The spec's name and namespace.
    fn metadata(&mut self, key: &SpecKey) {
        if key.name.is_empty() {
            self.err("metadata.name", "", "metadata.name is required");
        }
        let key_text = key.to_string();
        if key_text.len() > MAX_SPEC_KEY {
            self.err(
                "metadata.name",
                &*key.name,
                format!(
                    "`{key_text}` is longer than {MAX_SPEC_KEY} characters; it is recorded in rule descriptions (at most 140, docs/domain.md 2.1)"
                ),
            );
        }
        if !key.name.is_empty() && !is_k8s_name(&key.name) {
            self.err(
                "metadata.name",
                &*key.name,
                format!("`{}` is not a valid object name (lower-case letters, digits, `-`, `.`; starting and ending with a letter or digit)", key.name),
            );
        }
        if !is_k8s_name(&key.namespace) || key.namespace.contains('.') {
            self.err(
                "metadata.namespace",
                &*key.namespace,
                format!(
                    "`{}` is not a valid namespace (lower-case letters, digits, `-`)",
                    key.namespace
                ),
            );
        }
    }

    /// Addresses written in the spec.
    fn addresses(&mut self, a: &api::AddressesSpec) -> ValidAddresses {
        let mut addresses = ValidAddresses {
            public_vip: a
                .public_vip
                .as_deref()
                .and_then(|v| self.ip(Path::root("spec.environment.addresses.publicVip"), v)),
            ..ValidAddresses::default()
        };
        for (i, o) in a.outbound.iter().enumerate() {
            if let Some(ip) = self.ip(Path::root("spec.environment.addresses.outbound").at(i), o) {
                addresses.outbound.push(ip);
            }
        }
        addresses.internal_ip = a
            .internal_ip
            .as_deref()
            .and_then(|v| self.ip(Path::root("spec.environment.addresses.internalIp"), v));
        addresses
    }

    /// A list of prefixes, the valid ones in their order.
    fn prefixes(&mut self, field: Path<'_>, list: &[String]) -> Vec<Ipv4Net> {
        (list.iter().enumerate())
            .filter_map(|(i, p)| self.prefix(field.at(i), p))
            .collect()
    }

    /// One inbound entry `spec.inbound[i]` (at `f`): its name, ports and sources.
    fn inbound<'a>(
        &mut self,
        f: Path<'_>,
        i: usize,
        entry: &'a api::InboundSpec,
        names: &mut Names<'a>,
    ) -> Option<ValidInbound> {
        self.entry_name(f.field("name"), ("inbound", i), &entry.name, names);
        let ports = self.inbound_ports(f, entry);
        if entry.from.is_empty() {
            self.err(f.field("from"), "", "at least one source is required");
        }
        let mut sources: Vec<Source> = Vec::with_capacity(entry.from.len());
        sources.extend(
            (entry.from.iter().enumerate())
                .filter_map(|(j, src)| self.source(f.item("from", j), src)),
        );
        sources.sort();
        sources.dedup();
        Some(ValidInbound {
            name: entry.name.clone(),
            ports: ports?,
            sources,
        })
    }

    /// What an inbound entry opens: a named service, or raw ports with a protocol.
    fn inbound_ports(&mut self, f: Path<'_>, entry: &api::InboundSpec) -> Option<InboundPorts> {
        match (&entry.service, entry.ports.is_empty()) {
            (Some(svc), true) => {
                if entry.protocol.is_some() {
                    self.err(
                        f.field("protocol"),
                        entry.protocol.clone().unwrap_or_default(),
                        "`protocol` applies to raw `ports` only; a service has its own protocol",
                    );
                }
                match svc.parse::<Service>() {
                    Ok(s) => Some(InboundPorts::Service(s)),
                    Err(()) => {
                        let valid: Vec<&str> = Service::ALL.iter().map(|s| s.as_str()).collect();
                        self.err(
                            f.field("service"),
                            svc,
                            format!(
                                "unknown service `{svc}`; valid services are {}",
                                valid.join(", ")
                            ),
                        );
                        None
                    }
                }
            }
            (None, false) => {
                let protocol = self.protocol(f.field("protocol"), entry.protocol.as_deref());
                let ports = self.ports(f.field("ports"), &entry.ports);
                match (ports, protocol) {
                    (Some(ports), Some(protocol)) => Some(InboundPorts::Raw { ports, protocol }),
                    _ => None,
                }
            }
            (Some(svc), false) => {
                self.err(f, svc, "give either `service` or `ports`, not both");
                None
            }
            (None, true) => {
                self.err(f, "", "give either `service` or `ports`");
                None
            }
        }
    }

    /// One source of an inbound entry (at `sf`): exactly one of its kinds.
    fn source(&mut self, sf: Path<'_>, src: &api::SourceSpec) -> Option<Source> {
        let any = src.any == Some(true);
        let set = [
            src.cidr.is_some(),
            src.service_tag.is_some(),
            src.environment_ref.is_some(),
            any,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            self.err(
                sf,
                "",
                format!(
                    "a source needs exactly one of `cidr`, `serviceTag`, `environmentRef`, `any: true` ({set} given)"
                ),
            );
            return None;
        }
        // Every address is admitted only by the explicit `any: true`: a `/0` in a
        // `cidr` is as likely a typo as a meaning (issue 12).
        if any {
            Some(Source::Prefix(Ipv4Net::default()))
        } else if let Some(c) = &src.cidr {
            self.source_cidr(sf, c)
        } else if let Some(t) = &src.service_tag {
            self.source_tag(sf, t.trim())
        } else if let Some(r) = &src.environment_ref {
            let ns = r
                .namespace
                .clone()
                .unwrap_or_else(|| self.key.namespace.to_string());
            if r.name.trim().is_empty() {
                self.err(
                    sf.field("environmentRef.name"),
                    "",
                    "environmentRef.name is required",
                );
                None
            } else {
                Some(Source::Environment(SpecKey::new(ns, r.name.clone())))
            }
        } else {
            None
        }
    }

    /// A `cidr` source: a prefix, never `/0`.
    fn source_cidr(&mut self, sf: Path<'_>, c: &str) -> Option<Source> {
        if let Err(crate::model::ParseError::HostBits {
            len: 0, address, ..
        }) = parse_network(c)
        {
            self.err(
                sf.field("cidr"),
                c,
                format!("`{c}` has host bits set and a /0 length: it would admit every address (the whole Internet); write `{address}` for the single address, or `{{any: true}}` as the source if every address is meant"),
            );
            return None;
        }
        let p = self.prefix(sf.field("cidr"), c)?;
        if p.prefix_len() == 0 {
            self.err(
                sf.field("cidr"),
                c,
                format!("`{c}` admits every address (the whole Internet); write `{{any: true}}` as the source if that is meant"),
            );
            return None;
        }
        Some(Source::Prefix(p))
    }

    /// A `serviceTag` source: a tag name, never `*`.
    fn source_tag(&mut self, sf: Path<'_>, t: &str) -> Option<Source> {
        if t == "*" {
            self.err(
                sf.field("serviceTag"),
                t,
                "`*` admits every address (the whole Internet); write `{any: true}` as the source if that is meant",
            );
            None
        } else if looks_like_tag(t) {
            Some(Source::Tag(crate::model::canonical_tag(t)))
        } else {
            self.err(
                sf.field("serviceTag"),
                t,
                format!("`{t}` is not a service tag name (letters, digits, `.`, `_`)"),
            );
            None
        }
    }

    /// One backend `spec.backends[i]` (at `f`).
    fn backend<'a>(
        &mut self,
        f: Path<'_>,
        i: usize,
        b: &'a api::BackendSpec,
        names: &mut Names<'a>,
    ) -> Option<ValidBackend> {
        self.entry_name(f.field("name"), ("backends", i), &b.name, names);
        let address = self.prefix(f.field("address"), &b.address);
        let ports = self.ports(f.field("ports"), &b.ports);
        let protocol = self.protocol(f.field("protocol"), b.protocol.as_deref());
        let (nsg, band) = self.nsg(f.field("networkSecurityGroup"), &b.network_security_group);
        Some(ValidBackend {
            name: b.name.clone(),
            address: address?,
            ports: ports?,
            protocol: protocol?,
            network_security_group: nsg?,
            band: band?,
        })
    }

    /// `spec.outbound.forcedTunneling`: what is advertised, and which tags' traffic must
    /// keep its Internet path.
    fn forced_tunneling(
        &mut self,
        ft: &api::ForcedTunnelingSpec,
        has_route_table: bool,
        version: AseVersion,
    ) -> ValidForcedTunneling {
        let f = "spec.outbound.forcedTunneling";
        if !has_route_table {
            self.err(
                "spec.routeTable",
                "",
                "forced tunneling needs `spec.routeTable`: the routes that keep the Internet path live there (docs/domain.md 1.2.7)",
            );
        }
        if ft.advertised_prefixes.is_empty() {
            self.err(
                format!("{f}.advertisedPrefixes"),
                "",
                "at least one advertised prefix is required (0.0.0.0/0 for a default route)",
            );
        }
        let field = Path::root(f);
        let mut advertised: Vec<Ipv4Net> = (ft.advertised_prefixes.iter().enumerate())
            .filter_map(|(i, p)| self.prefix(field.item("advertisedPrefixes", i), p))
            .collect();
        advertised.sort();
        advertised.dedup();
        let required_tags = match &ft.required_tags {
            Some(tags) => {
                let mut out = Vec::new();
                for (i, t) in tags.iter().enumerate() {
                    if looks_like_tag(t.trim()) {
                        out.push(crate::model::canonical_tag(t.trim()));
                    } else {
                        self.err(
                            format!("{f}.requiredTags[{i}]"),
                            t,
                            format!("`{t}` is not a service tag name"),
                        );
                    }
                }
                out
            }
            // Management traffic must return on the path it came (domain.md 1.3.5); ASEv3
            // has no management traffic in the customer's VNet (1.4.2).
            None => match version {
                AseVersion::V1 | AseVersion::V2 => vec!["AppServiceManagement".to_string()],
                AseVersion::V3 => vec![],
            },
        };
        ValidForcedTunneling {
            advertised,
            strategy: tunneling_strategy(ft.strategy),
            required_tags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AseConnectivity {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn shared_ids_keep_the_text_each_spec_wrote() {
        let text = "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/networkSecurityGroups/Be";
        let mut ids = Ids::default();
        let first = ids.parse(text).unwrap();
        let again = ids.parse(text).unwrap();
        let lower = ids.parse(&text.to_ascii_lowercase()).unwrap();
        assert_eq!(again.as_str(), text);
        // Equal ids (ARM compares them without case), each with the text it was given.
        assert_eq!(lower, first);
        assert_eq!(lower.as_str(), text.to_ascii_lowercase());
        assert_eq!(ids.0.len(), 2);
        assert!(ids.parse("/subscriptions/s").is_err());
    }

    const BASE: &str = r#"
apiVersion: asenet.io/v1alpha1
kind: AseConnectivity
metadata: {name: ase, namespace: network}
spec:
  environment: {version: V2}
  subnet: {resourceId: /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/virtualNetworks/vnet/subnets/ase}
  networkSecurityGroup: {resourceId: /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/ase-nsg}
"#;

    #[test]
    fn a_minimal_spec_is_valid_with_the_default_band() {
        let v = validate(&spec(BASE)).unwrap();
        assert_eq!(v.band.from.get(), 100);
        assert_eq!(v.band.to.get(), 1999);
        assert_eq!(v.key.to_string(), "network/ase");
    }

    #[test]
    fn every_error_of_a_spec_is_reported() {
        let y = format!(
            "{BASE}  inbound:\n    - {{name: web, service: Htp, from: [{{cidr: 10.0.0.300/24}}]}}\n    - {{name: raw, ports: [\"70000\"], from: [{{cidr: 1.2.3.4}}, {{}}]}}\n"
        );
        let e = validate(&spec(&y)).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.inbound[0].service",
                "spec.inbound[0].from[0].cidr",
                "spec.inbound[1].ports[0]",
                "spec.inbound[1].from[1]"
            ]
        );
        assert!(e[0]
            .message
            .contains("Http, Https, Ftp, RemoteDebugging, WebDeploy"));
    }

    #[test]
    fn ids_of_the_wrong_type_are_rejected() {
        let y = BASE.replace(
            "virtualNetworks/vnet/subnets/ase}",
            "networkSecurityGroups/x}",
        );
        let e = validate(&spec(&y)).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "spec.subnet.resourceId");
        assert!(e[0]
            .message
            .contains("expected a Microsoft.Network/virtualNetworks/subnets id"));
    }

    #[test]
    fn services_are_case_insensitive_and_expand_per_version() {
        assert_eq!("https".parse::<Service>(), Ok(Service::Https));
        assert_eq!(
            Service::RemoteDebugging.ports(AseVersion::V3).to_strings(),
            vec!["4022", "4024", "4026"]
        );
        assert_eq!(
            Service::Ftp.ports(AseVersion::V1).to_strings(),
            vec!["21", "990", "10001-10020"]
        );
    }
}
