//! Effective-route evaluation: which next hop a subnet's traffic to a destination takes,
//! the way Azure decides it (docs/domain.md 3.2, 3.4), from the subnet's user-defined
//! routes, the prefixes ExpressRoute/VPN advertises over BGP and the system routes.
//!
//! Pure, like the NSG evaluator beside it: the caller passes the route table's routes, the
//! service tags' prefixes (a tag route stands for one route per tag prefix, 3.3), the
//! advertised prefixes and the VNet's address space. Used by the property tests of the
//! forced-tunneling routes and by `asenet verify`.
//!
//! Selection (3.4): longest prefix match; on an equal prefix a user-defined route beats a
//! BGP route, which beats a system route; among user-defined routes an explicit prefix
//! beats a service-tag route (3.3). System routes for the VNet's own ranges are preferred
//! even over a more specific BGP route (3.4, rule 3). `disableBgpRoutePropagation` removes
//! the BGP routes (3.1, 3.4 rule 6).
//!
//! A destination may be a whole prefix: the effective route is constant between the
//! boundaries of the routes that overlap it, so evaluating the first address of every
//! such piece covers every address of the prefix exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::model::{NextHopType, Route, RouteDestination};

/// Where an effective route comes from; the order is the tie-break on equal prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum RouteOrigin {
    /// The default system routes of every subnet (3.2).
    System,
    /// Learned from ExpressRoute/VPN over BGP.
    Bgp,
    /// A user-defined route whose address prefix is a service tag (3.3).
    UserTag,
    /// A user-defined route with an explicit prefix.
    User,
}

/// One route of the subnet's effective route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRoute {
    pub prefix: Ipv4Net,
    pub origin: RouteOrigin,
    pub next_hop: NextHopType,
    /// The UDR's name, the advertised prefix, or the system route's description.
    pub source: String,
}

/// The system routes' private ranges with next hop `None` (3.2).
const PRIVATE: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
];

/// Not Internet destinations at all: "this network", loopback, link-local, multicast and
/// reserved (RFC 6890).
const SPECIAL: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(224, 0, 0, 0), 3),
];

/// The private ranges of the system routes (next hop `None` outside the VNet, 3.2).
pub fn private_ranges() -> Vec<Ipv4Net> {
    PRIVATE
        .iter()
        .filter_map(|(a, l)| Ipv4Net::new(*a, *l).ok())
        .collect()
}

/// A subnet's effective route table. Built only by [`RoutingTable::new`], which always
/// puts the system default route first, so `routes` is never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    routes: Vec<EffectiveRoute>,
    /// The VNet's address space (its system routes win over more specific BGP routes).
    vnet: Vec<Ipv4Net>,
    /// Tag routes whose tag has no known prefixes (they route nothing).
    unknown_tags: BTreeSet<String>,
}

impl RoutingTable {
    /// The effective routes of a subnet in a VNet with address space `vnet`, whose route
    /// table holds `udrs` (tag routes are expanded with `tags`, keyed case-insensitively),
    /// with `advertised` learned over BGP unless `disable_bgp_propagation`.
    pub fn new(
        udrs: &[Route],
        tags: &BTreeMap<String, Vec<Ipv4Net>>,
        advertised: &[Ipv4Net],
        disable_bgp_propagation: bool,
        vnet: &[Ipv4Net],
    ) -> Self {
        let mut t = RoutingTable {
            routes: Vec::new(),
            vnet: vnet.iter().map(|p| p.trunc()).collect(),
            unknown_tags: BTreeSet::new(),
        };
        let sys = |prefix: Ipv4Net, next_hop, source: &str| EffectiveRoute {
            prefix,
            origin: RouteOrigin::System,
            next_hop,
            source: source.to_string(),
        };
        t.routes
            .push(sys(Ipv4Net::default(), NextHopType::Internet, "default"));
        for p in private_ranges() {
            t.routes.push(sys(p, NextHopType::None, "private range"));
        }
        for p in &t.vnet {
            t.routes
                .push(sys(*p, NextHopType::VnetLocal, "virtual network"));
        }
        if !disable_bgp_propagation {
            for a in advertised {
                t.routes.push(EffectiveRoute {
                    prefix: a.trunc(),
                    origin: RouteOrigin::Bgp,
                    next_hop: NextHopType::VirtualNetworkGateway,
                    source: format!("advertised {a}"),
                });
            }
        }
        let lower: BTreeMap<String, &Vec<Ipv4Net>> = tags
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for r in udrs {
            match &r.address_prefix {
                RouteDestination::Prefix(p) => t.routes.push(EffectiveRoute {
                    prefix: p.trunc(),
                    origin: RouteOrigin::User,
                    next_hop: r.next_hop_type,
                    source: r.name.clone(),
                }),
                RouteDestination::Tag(tag) => match lower.get(&tag.to_ascii_lowercase()) {
                    Some(prefixes) if !prefixes.is_empty() => {
                        for p in prefixes.iter() {
                            t.routes.push(EffectiveRoute {
                                prefix: p.trunc(),
                                origin: RouteOrigin::UserTag,
                                next_hop: r.next_hop_type,
                                source: r.name.clone(),
                            });
                        }
                    }
                    _ => {
                        t.unknown_tags.insert(tag.clone());
                    }
                },
            }
        }
        t
    }

    /// Tag routes whose tag had no prefixes: they were left out of the table.
    pub fn unknown_tags(&self) -> &BTreeSet<String> {
        &self.unknown_tags
    }

    /// The route Azure picks for traffic to `dest` (3.4). There is always one: the system
    /// default route covers every address.
    pub fn effective(&self, dest: Ipv4Addr) -> &EffectiveRoute {
        let mut best: Option<&EffectiveRoute> = None;
        for r in self.routes.iter().filter(|r| r.prefix.contains(&dest)) {
            let better = match best {
                None => true,
                Some(b) => (r.prefix.prefix_len(), r.origin) > (b.prefix.prefix_len(), b.origin),
            };
            if better {
                best = Some(r);
            }
        }
        // The system default route (always `routes[0]`, see `new`) contains every address,
        // so `best` is always set and the fallback cannot index an empty list.
        let best = best.unwrap_or(&self.routes[0]);
        if best.origin == RouteOrigin::Bgp {
            // 3.4 rule 3: the VNet's own system route wins over a more specific BGP route.
            if let Some(v) = self.routes.iter().find(|r| {
                r.origin == RouteOrigin::System
                    && r.next_hop == NextHopType::VnetLocal
                    && r.prefix.contains(&dest)
            }) {
                return v;
            }
        }
        best
    }

    /// The first address of every piece of `prefix` on which the effective route is
    /// constant, together with that route; `extra` adds boundaries of its own (so that
    /// each piece lies wholly inside or outside each of them).
    pub fn pieces(&self, prefix: Ipv4Net, extra: &[Ipv4Net]) -> Vec<(Ipv4Addr, &EffectiveRoute)> {
        let lo = u32::from(prefix.network()) as u64;
        let hi = u32::from(prefix.broadcast()) as u64;
        let mut cuts: BTreeSet<u64> = BTreeSet::from([lo]);
        let bounds = self
            .routes
            .iter()
            .map(|r| r.prefix)
            .chain(extra.iter().copied());
        for p in bounds {
            let a = u32::from(p.network()) as u64;
            let b = u32::from(p.broadcast()) as u64 + 1;
            for c in [a, b] {
                if c > lo && c <= hi {
                    cuts.insert(c);
                }
            }
        }
        cuts.into_iter()
            .map(|c| {
                let ip = Ipv4Addr::from(c as u32);
                (ip, self.effective(ip))
            })
            .collect()
    }

    /// Checks that every address of `req.prefixes`, outside `req.except`, has next hop
    /// `req.next_hop`.
    pub fn check(&self, req: &RouteRequirement) -> RouteCheck {
        let mut witness: Option<(Ipv4Addr, EffectiveRoute)> = None;
        let mut wrong: Option<(Ipv4Addr, EffectiveRoute)> = None;
        'outer: for p in &req.prefixes {
            for (ip, r) in self.pieces(*p, &req.except) {
                if req.except.iter().any(|e| e.contains(&ip)) {
                    continue;
                }
                if witness.is_none() {
                    witness = Some((ip, r.clone()));
                }
                if r.next_hop != req.next_hop {
                    wrong = Some((ip, r.clone()));
                    break 'outer;
                }
            }
        }
        let ok = wrong.is_none();
        let (address, route) = match wrong.or(witness) {
            Some((ip, r)) => (Some(ip), Some(r)),
            None => (None, None),
        };
        RouteCheck {
            destination: req.destination.clone(),
            expected: req.next_hop,
            ok,
            address,
            route,
        }
    }
}

/// A destination whose traffic must take one next hop: every address of `prefixes` that is
/// not in `except`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRequirement {
    /// What the destination is ("AppServiceManagement 13.66.140.0/26").
    pub destination: String,
    pub prefixes: Vec<Ipv4Net>,
    pub except: Vec<Ipv4Net>,
    pub next_hop: NextHopType,
}

/// The outcome of [`RoutingTable::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteCheck {
    pub destination: String,
    pub expected: NextHopType,
    pub ok: bool,
    /// The first address whose next hop is wrong, else the first address checked.
    pub address: Option<Ipv4Addr>,
    /// The effective route of `address`.
    pub route: Option<EffectiveRoute>,
}

/// What forced tunneling promises (docs/domain.md 1.2.7, 1.3.5): every prefix of the
/// required service tags (`required`, by tag) goes straight to the Internet, and so does
/// every other Internet-bound destination (the ASE's outbound dependencies to any address,
/// 1.2.2, 1.3.4) except what the customer advertises more specifically than 0.0.0.0/0 (their
/// own on-premises ranges), the VNet, the private ranges and the special-purpose ranges.
pub fn forced_tunneling_requirements(
    required: &BTreeMap<String, Vec<Ipv4Net>>,
    advertised: &[Ipv4Net],
    vnet: &[Ipv4Net],
) -> Vec<RouteRequirement> {
    let mut out = Vec::new();
    for (tag, prefixes) in required {
        for p in prefixes {
            out.push(RouteRequirement {
                destination: format!("{tag} {p}"),
                prefixes: vec![p.trunc()],
                except: Vec::new(),
                next_hop: NextHopType::Internet,
            });
        }
    }
    let mut except: Vec<Ipv4Net> = advertised
        .iter()
        .filter(|a| a.prefix_len() > 0)
        .map(|a| a.trunc())
        .collect();
    except.extend(vnet.iter().map(|p| p.trunc()));
    except.extend(private_ranges());
    except.push(Ipv4Net::from(crate::evaluate::AZURE_LOAD_BALANCER));
    except.extend(
        SPECIAL
            .iter()
            .filter_map(|(a, l)| Ipv4Net::new(*a, *l).ok()),
    );
    except.sort();
    except.dedup();
    out.push(RouteRequirement {
        destination: "Internet (any other address, outbound dependencies)".into(),
        prefixes: vec![Ipv4Net::default()],
        except,
        next_hop: NextHopType::Internet,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn udr(name: &str, p: &str, hop: NextHopType) -> Route {
        Route {
            name: name.into(),
            address_prefix: RouteDestination::parse(p).unwrap(),
            next_hop_type: hop,
            next_hop_ip_address: None,
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_equal_prefixes_go_user_then_bgp_then_system() {
        let t = RoutingTable::new(
            &[udr("d", "0.0.0.0/0", NextHopType::Internet)],
            &BTreeMap::new(),
            &[n("0.0.0.0/0"), n("13.64.0.0/11")],
            false,
            &[n("10.0.0.0/16")],
        );
        let r = t.effective("8.8.8.8".parse().unwrap());
        assert_eq!(
            (r.origin, r.next_hop),
            (RouteOrigin::User, NextHopType::Internet)
        );
        let r = t.effective("13.66.140.1".parse().unwrap());
        assert_eq!(
            (r.origin, r.next_hop),
            (RouteOrigin::Bgp, NextHopType::VirtualNetworkGateway)
        );
        let r = t.effective("10.1.0.1".parse().unwrap());
        assert_eq!(r.next_hop, NextHopType::None);
        let r = t.effective("10.0.3.1".parse().unwrap());
        assert_eq!(r.next_hop, NextHopType::VnetLocal);
    }

    #[test]
    fn the_vnet_system_route_beats_a_more_specific_bgp_route() {
        let t = RoutingTable::new(
            &[],
            &BTreeMap::new(),
            &[n("10.0.1.0/24")],
            false,
            &[n("10.0.0.0/16")],
        );
        assert_eq!(
            t.effective("10.0.1.5".parse().unwrap()).next_hop,
            NextHopType::VnetLocal
        );
    }

    #[test]
    fn disabled_propagation_drops_the_bgp_routes() {
        let t = RoutingTable::new(&[], &BTreeMap::new(), &[n("0.0.0.0/0")], true, &[]);
        assert_eq!(
            t.effective("8.8.8.8".parse().unwrap()).next_hop,
            NextHopType::Internet
        );
    }

    #[test]
    fn a_tag_route_stands_for_its_prefixes_and_an_explicit_prefix_beats_it() {
        let tags = BTreeMap::from([(
            "AppServiceManagement".to_string(),
            vec![n("13.66.140.0/26")],
        )]);
        let t = RoutingTable::new(
            &[
                udr("tag", "AppServiceManagement", NextHopType::Internet),
                udr("nva", "13.66.140.0/26", NextHopType::VirtualAppliance),
            ],
            &tags,
            &[n("13.0.0.0/8")],
            false,
            &[],
        );
        assert_eq!(t.effective("13.66.140.1".parse().unwrap()).source, "nva");
        assert_eq!(
            t.effective("13.66.141.1".parse().unwrap()).next_hop,
            NextHopType::VirtualNetworkGateway
        );
    }

    #[test]
    fn a_prefix_is_checked_on_every_piece_not_only_its_first_address() {
        // 13.64.0.0/14 -> Internet, but a more specific advertisement takes 13.66.0.0/16.
        let t = RoutingTable::new(
            &[udr("m", "13.64.0.0/14", NextHopType::Internet)],
            &BTreeMap::new(),
            &[n("13.66.0.0/16")],
            false,
            &[],
        );
        let c = t.check(&RouteRequirement {
            destination: "m".into(),
            prefixes: vec![n("13.64.0.0/14")],
            except: vec![],
            next_hop: NextHopType::Internet,
        });
        assert!(!c.ok);
        assert_eq!(c.address, Some("13.66.0.0".parse().unwrap()));
        assert_eq!(c.route.unwrap().origin, RouteOrigin::Bgp);
    }

    #[test]
    fn internet_egress_needs_the_default_route_when_0_0_0_0_is_advertised() {
        let adv = [n("0.0.0.0/0"), n("13.64.0.0/11")];
        let req = forced_tunneling_requirements(&BTreeMap::new(), &adv, &[n("10.0.0.0/16")]);
        let without = RoutingTable::new(&[], &BTreeMap::new(), &adv, false, &[n("10.0.0.0/16")]);
        let c = without.check(&req[0]);
        assert!(!c.ok);
        assert_eq!(
            c.route.unwrap().next_hop,
            NextHopType::VirtualNetworkGateway
        );
        let with = RoutingTable::new(
            &[udr("d", "0.0.0.0/0", NextHopType::Internet)],
            &BTreeMap::new(),
            &adv,
            false,
            &[n("10.0.0.0/16")],
        );
        assert!(with.check(&req[0]).ok);
    }
}
