//! Deterministic generator of AseConnectivity specs and a matching snapshot, for the
//! resolve+diff benchmark (benches/resolve.rs) and its smoke test (tests/it/diff.rs).
//!
//! The world: `n` ASEs in VNets of 100 ASE subnets each (10.<v>.0.0/16), mixed versions
//! (V1/V2/V3), 5-20 inbound entries per spec (named services and raw ports; sources are
//! CIDRs, a service tag, or `environmentRef`s to other specs, some across namespaces), two
//! back ends per spec (one inside the VNet, one outside) whose NSGs are shared by 20 specs,
//! forced tunneling on some specs (a default route, or split /1 advertisements), and some
//! NSGs that already exist with foreign rules. A fixed-seed SplitMix64 drives every choice,
//! so the same `n` gives the same specs.

use std::net::Ipv4Addr;

use asenet::api::{
    AddressesSpec, AseConnectivity, AseConnectivitySpec, AseVersion, BackendSpec, DeletionPolicy,
    EnvironmentRef, EnvironmentSpec, ForcedTunnelingSpec, InboundSpec, Mode, NsgRef, OutboundSpec,
    PriorityBandSpec, ResourceRef, SourceSpec, TopologySpec, TunnelingStrategy,
};
use asenet::model::{Access, AddressSet, Direction, PortSet, Protocol, ResourceId, SecurityRule};
use asenet::snapshot::{
    EnvironmentState, NsgState, ServiceTagState, Snapshot, SubnetState, VnetState,
};
use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

const SUB: &str = "00000000-0000-0000-0000-00000000be4c";
const RG: &str = "bench";
/// Specs sharing one pair of back-end NSGs.
const SHARE: usize = 20;

pub struct World {
    pub specs: Vec<AseConnectivity>,
    pub snapshot: Snapshot,
}

/// SplitMix64: tiny, deterministic, good enough to spread choices.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn namespace(i: usize) -> String {
    format!("team-{}", i % 10)
}
fn name(i: usize) -> String {
    format!("ase-{i:05}")
}
fn id(segments: &[(&str, &str)]) -> ResourceId {
    ResourceId::network(SUB, RG, segments)
}
fn vnet_name(i: usize) -> String {
    format!("vnet-{}", i / 100)
}
fn subnet_id(i: usize) -> ResourceId {
    id(&[("virtualNetworks", &vnet_name(i)), ("subnets", &name(i))])
}
fn subnet_prefix(i: usize) -> Ipv4Net {
    let v = (i / 100) as u32;
    let slot = (i % 100) as u32;
    let base = (10u32 << 24) | ((v % 256) << 16) | (slot * 64);
    Ipv4Net::new(Ipv4Addr::from(base), 26).unwrap_or_default()
}
fn vip(i: usize) -> Ipv4Addr {
    let i = i as u32;
    Ipv4Addr::new(52, (i >> 16) as u8, (i >> 8) as u8, i as u8)
}
fn environment_id(i: usize) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/hostingEnvironments/{}",
        name(i)
    )
}
fn nsg_id(i: usize) -> ResourceId {
    id(&[("networkSecurityGroups", &format!("{}-nsg", name(i)))])
}
fn backend_nsg_id(group: usize, k: usize) -> ResourceId {
    id(&[("networkSecurityGroups", &format!("be-{group:04}-{k}"))])
}
fn rt_id(i: usize) -> ResourceId {
    id(&[("routeTables", &format!("{}-rt", name(i)))])
}
fn ports(p: &[&str]) -> Vec<IntOrString> {
    p.iter()
        .map(|s| IntOrString::String(s.to_string()))
        .collect()
}

fn version(i: usize) -> AseVersion {
    match i % 3 {
        0 => AseVersion::V1,
        1 => AseVersion::V2,
        _ => AseVersion::V3,
    }
}

fn inbound(i: usize, n: usize, e: usize, rng: &mut Rng) -> InboundSpec {
    let (service, raw) = match rng.below(7) {
        0 => (Some("Http"), vec![]),
        1 => (Some("Https"), vec![]),
        2 => (Some("Ftp"), vec![]),
        3 => (Some("WebDeploy"), vec![]),
        4 => (Some("RemoteDebugging"), vec![]),
        5 => (None, ports(&["8080"])),
        _ => (None, ports(&["9000-9010", "9443"])),
    };
    let mut from = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let src = match rng.below(6) {
            0 | 1 => SourceSpec {
                cidr: Some(format!(
                    "{}.{}.{}.0/24",
                    100 + rng.below(100),
                    rng.below(256),
                    rng.below(256)
                )),
                ..Default::default()
            },
            2 => SourceSpec {
                cidr: Some(format!("198.18.{}.{}", rng.below(256), rng.below(256))),
                ..Default::default()
            },
            3 => SourceSpec {
                service_tag: Some("AzureFrontDoor.Backend".to_string()),
                ..Default::default()
            },
            _ => {
                // Another ASE: its outbound addresses (domain.md 1.2.4).
                let j = (i + 1 + rng.below(50)) % n;
                SourceSpec {
                    environment_ref: Some(EnvironmentRef {
                        name: name(j),
                        namespace: (namespace(j) != namespace(i)).then(|| namespace(j)),
                    }),
                    ..Default::default()
                }
            }
        };
        from.push(src);
    }
    InboundSpec {
        name: format!("e{e}"),
        service: service.map(str::to_string),
        ports: raw,
        protocol: None,
        from,
    }
}

fn spec(i: usize, n: usize, rng: &mut Rng) -> AseConnectivity {
    let entries = 5 + rng.below(16);
    let group = i / SHARE;
    let slot = (i % SHARE) as i64;
    let backend = |k: usize, address: String, p: &[&str]| BackendSpec {
        name: if k == 0 {
            "db".into()
        } else {
            "partner".into()
        },
        address,
        ports: ports(p),
        protocol: None,
        network_security_group: NsgRef {
            resource_id: backend_nsg_id(group, k).to_string(),
            priorities: Some(PriorityBandSpec {
                from: 100 + slot * 50,
                to: 100 + slot * 50 + 49,
            }),
        },
    };
    // The group's VNet (groups never straddle VNets: 100 is a multiple of SHARE).
    let v = (group * SHARE / 100) % 256;
    let forced = match i % 13 {
        0 | 5 => Some(ForcedTunnelingSpec {
            advertised_prefixes: vec!["0.0.0.0/0".into()],
            strategy: TunnelingStrategy::DirectInternet,
            required_tags: None,
        }),
        9 if version(i) != AseVersion::V3 => Some(ForcedTunnelingSpec {
            advertised_prefixes: vec!["0.0.0.0/1".into(), "128.0.0.0/1".into()],
            strategy: TunnelingStrategy::DirectInternet,
            required_tags: None,
        }),
        _ => None,
    };
    let spec = AseConnectivitySpec {
        mode: Mode::Apply,
        deletion_policy: DeletionPolicy::Delete,
        environment: EnvironmentSpec {
            version: version(i),
            resource_id: Some(environment_id(i)),
            addresses: i.is_multiple_of(4).then(|| AddressesSpec {
                public_vip: Some(vip(i).to_string()),
                outbound: vec![],
                internal_ip: None,
            }),
        },
        subnet: ResourceRef {
            resource_id: subnet_id(i).to_string(),
        },
        network_security_group: NsgRef {
            resource_id: nsg_id(i).to_string(),
            priorities: Some(PriorityBandSpec {
                from: 100,
                to: 1999,
            }),
        },
        route_table: forced.as_ref().map(|_| ResourceRef {
            resource_id: rt_id(i).to_string(),
        }),
        topology: TopologySpec {
            extra_prefixes: if i.is_multiple_of(5) {
                vec!["172.16.0.0/12".into()]
            } else {
                vec![]
            },
        },
        inbound: (0..entries).map(|e| inbound(i, n, e, rng)).collect(),
        backends: vec![
            backend(0, format!("10.{v}.250.{}", 4 + (group % 200)), &["1433"]),
            backend(1, format!("203.0.113.{}", group % 250), &["443", "8443"]),
        ],
        outbound: OutboundSpec {
            forced_tunneling: forced,
        },
    };
    let mut s = AseConnectivity::new(&name(i), spec);
    s.metadata.namespace = Some(namespace(i));
    s
}

fn foreign(name: &str, priority: u32, access: Access, source: &str, port: &str) -> SecurityRule {
    SecurityRule {
        name: name.to_string(),
        priority,
        direction: Direction::Inbound,
        access,
        protocol: Protocol::Tcp,
        source: AddressSet::parse_one(source).unwrap_or(AddressSet::Any),
        source_ports: PortSet::any(),
        destination: AddressSet::Any,
        destination_ports: PortSet::parse_all([port]).unwrap_or_else(|_| PortSet::any()),
        description: Some("managed by the network team".into()),
    }
}

fn nsg(id: ResourceId, rules: Vec<SecurityRule>) -> NsgState {
    NsgState {
        id,
        location: Some("westeurope".into()),
        etag: Some("W/\"0\"".into()),
        rules: rules.into_iter().map(std::sync::Arc::new).collect(),
        raw_rules: Default::default(),
        raw: None,
    }
}

/// `n` specs and the snapshot they resolve against.
pub fn generate(n: usize) -> World {
    let mut rng = Rng(0x00a5_e4e7_2024_0001);
    let specs: Vec<AseConnectivity> = (0..n).map(|i| spec(i, n, &mut rng)).collect();

    let mut s = Snapshot::default();
    for v in 0..n.div_ceil(100) {
        s.insert_vnet(VnetState {
            id: id(&[("virtualNetworks", &format!("vnet-{v}"))]),
            location: Some("westeurope".into()),
            address_prefixes: vec![
                Ipv4Net::new(Ipv4Addr::new(10, (v % 256) as u8, 0, 0), 16).unwrap_or_default()
            ],
        });
    }
    for i in 0..n {
        s.insert_subnet(SubnetState {
            id: subnet_id(i),
            address_prefix: subnet_prefix(i),
            network_security_group: i.is_multiple_of(2).then(|| nsg_id(i)),
            route_table: None,
            etag: Some("W/\"0\"".into()),
            raw: None,
        });
        s.insert_environment(EnvironmentState {
            id: ResourceId::parse(&environment_id(i)).unwrap_or_else(|_| nsg_id(i)),
            public_vip: Some(vip(i)),
            outbound: vec![vip(i)],
            internal_ip: None,
            subnet: Some(subnet_id(i)),
        });
        // Every other ASE NSG exists, with foreign rules outside the band.
        if i.is_multiple_of(2) {
            s.insert_nsg(nsg(
                nsg_id(i),
                vec![
                    foreign("corp-rdp", 3000, Access::Allow, "172.16.0.0/12", "3389"),
                    foreign("deny-telnet", 4000, Access::Deny, "*", "23"),
                ],
            ));
        }
    }
    for group in 0..n.div_ceil(SHARE) {
        if group.is_multiple_of(3) {
            for k in 0..2 {
                s.insert_nsg(nsg(
                    backend_nsg_id(group, k),
                    vec![foreign(
                        "ops-ssh",
                        4090,
                        Access::Allow,
                        "10.255.0.0/24",
                        "22",
                    )],
                ));
            }
        }
    }
    s.insert_service_tag(ServiceTagState {
        name: "AppServiceManagement".into(),
        address_prefixes: [
            "13.66.140.0/26",
            "13.67.8.128/26",
            "13.69.64.128/26",
            "40.112.242.192/26",
            "70.37.57.58/32",
            "191.236.154.88/32",
        ]
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect(),
        network_features: vec!["API".into(), "NSG".into(), "UDR".into(), "FW".into()],
    });
    s.insert_service_tag(ServiceTagState {
        name: "AzureFrontDoor.Backend".into(),
        address_prefixes: ["147.243.0.0/16", "20.41.0.0/26"]
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
        network_features: vec!["API".into(), "NSG".into()],
    });
    World { specs, snapshot: s }
}

/// The specs as one multi-document YAML text, as a user would keep them in a folder.
pub fn to_yaml(specs: &[AseConnectivity]) -> String {
    let mut out = String::new();
    for s in specs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(s).unwrap_or_default());
    }
    out
}

/// Deserialises every document of a multi-document YAML text into `AseConnectivity`.
pub fn parse_yaml(yaml: &str) -> Vec<AseConnectivity> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| AseConnectivity::deserialize(doc).ok())
        .collect()
}
