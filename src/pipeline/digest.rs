//! A digest of what a plan reads of a snapshot: the controller keeps a component's outcome
//! through a resync when Azure still holds what the outcome was planned from (or what its
//! writes left), instead of resolving and diffing the same input again (docs/operator.md,
//! "What a reconcile does"). Shell code: keyed with process randomness, hashing through
//! `std::io::Write`, so it lives outside the pure core (tests/purity.rs).

use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};

use std::collections::{HashMap, HashSet};

use crate::model::ResourceId;
use crate::snapshot::{
    EnvironmentState, NsgState, RouteTableState, ServiceTagState, Snapshot, SubnetState, VnetState,
};

/// A digest of a snapshot ([`digest`]): 128 bits, keyed per process, so only
/// compared with digests taken by the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotDigest(u64, u64);

/// Two hashers with this process's keys.
fn writer() -> DigestWriter {
    static KEYS: std::sync::OnceLock<(RandomState, RandomState)> = std::sync::OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    DigestWriter(a.build_hasher(), b.build_hasher())
}

/// Feeds what is written or hashed into it to two differently keyed hashers.
struct DigestWriter(DefaultHasher, DefaultHasher);

impl std::io::Write for DigestWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        Hasher::write(self, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Hasher for DigestWriter {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// A digest of what a plan reads of the snapshot: every modelled field but the ETags.
/// The resolver and the diff read nothing else of it, save the raw JSON a plan that
/// removes specs reads (the tag naming a parent's creator): so two snapshots with the
/// same digest give the same plan of the same specs and scope when nothing is removed.
/// ETags and raw JSON only shape writes, and a write is only ever made from a fresh
/// plan. Without them, a snapshot in which a plan's writes were simulated
/// ([`crate::diff::apply_in_place`]) has the digest of what Azure answers once they are
/// made, so a controller can tell that Azure still holds what it wrote.
///
/// `None` if the snapshot does not serialise (nothing may be assumed of it then).
pub fn digest(snapshot: &Snapshot) -> Option<SnapshotDigest> {
    let mut d = Digests::default();
    d.add(snapshot);
    d.finish()
}

/// One resource of a snapshot, as [`Digests`] keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Entry {
    Vnet(ResourceId),
    Subnet(ResourceId),
    Nsg(ResourceId),
    RouteTable(ResourceId),
    Environment(ResourceId),
    Tag(String),
    TagVersion(String),
}

/// The digest of snapshots read one after the other, or of resources as they are read:
/// one hash per resource, the last one given of each resource kept, summed. The digest of
/// the parts of a component, each snapshot taken after its writes, is the digest of one
/// snapshot of the whole component read after them all: a VNet or an ASE two parts read
/// counts once, as the later part saw it (`controller::parts`). It is also what a read
/// of every resource one at a time gives ([`DigestGather`]), without the snapshot.
#[derive(Debug, Default)]
pub struct Digests {
    entries: HashMap<Entry, (u64, u64)>,
    /// A state did not serialise: no digest.
    malformed: bool,
}

/// The two halves of a keyed hash of `what`, tagged with `kind`.
fn hash_of(kind: u8, what: &impl serde::Serialize) -> Option<(u64, u64)> {
    let mut w = writer();
    w.write_u8(kind);
    serde_json::to_writer(&mut w, what).ok()?;
    Some((w.0.finish(), w.1.finish()))
}

impl Digests {
    fn put(&mut self, entry: Entry, hash: Option<(u64, u64)>) {
        match hash {
            Some(h) => {
                self.entries.insert(entry, h);
            }
            None => self.malformed = true,
        }
    }

    /// Every resource of `snapshot`, replacing what an earlier one gave of it.
    pub fn add(&mut self, snapshot: &Snapshot) {
        // Every field named, so that a field added to a state is added here too.
        let Snapshot {
            virtual_networks,
            subnets,
            network_security_groups,
            route_tables,
            environments,
            service_tags,
            service_tag_versions,
        } = snapshot;
        for v in virtual_networks.values() {
            self.add_vnet(v);
        }
        for s in subnets.values() {
            self.add_subnet(s);
        }
        for n in network_security_groups.values() {
            self.add_nsg(n);
        }
        for r in route_tables.values() {
            self.add_route_table(r);
        }
        for e in environments.values() {
            self.add_environment(e);
        }
        for (name, t) in service_tags {
            self.add_service_tag(name, t);
        }
        for (name, version) in service_tag_versions {
            self.add_service_tag_version(name, version);
        }
    }

    pub fn add_vnet(&mut self, v: &VnetState) {
        let VnetState {
            id,
            location,
            address_prefixes,
        } = v;
        let h = hash_of(0, &(id, location, address_prefixes));
        self.put(Entry::Vnet(id.clone()), h);
    }

    pub fn add_subnet(&mut self, s: &SubnetState) {
        let SubnetState {
            id,
            address_prefix,
            network_security_group,
            route_table,
            etag: _,
            raw: _,
        } = s;
        let h = hash_of(
            1,
            &(id, address_prefix, network_security_group, route_table),
        );
        self.put(Entry::Subnet(id.clone()), h);
    }

    pub fn add_nsg(&mut self, n: &NsgState) {
        let NsgState {
            id,
            location,
            etag: _,
            rules,
            raw_rules: _,
            raw: _,
        } = n;
        let h = hash_of(2, &(id, location, rules));
        self.put(Entry::Nsg(id.clone()), h);
    }

    pub fn add_route_table(&mut self, r: &RouteTableState) {
        let RouteTableState {
            id,
            location,
            etag: _,
            disable_bgp_route_propagation,
            routes,
            recorded_service_tags,
            raw_routes: _,
            raw: _,
        } = r;
        let fields = (
            id,
            location,
            disable_bgp_route_propagation,
            routes,
            recorded_service_tags,
        );
        let h = hash_of(3, &fields);
        self.put(Entry::RouteTable(id.clone()), h);
    }

    pub fn add_environment(&mut self, e: &EnvironmentState) {
        let h = hash_of(4, e);
        self.put(Entry::Environment(e.id.clone()), h);
    }

    pub fn add_service_tag(&mut self, name: &str, t: &ServiceTagState) {
        let h = hash_of(5, &(name, t));
        self.put(Entry::Tag(name.to_string()), h);
    }

    pub fn add_service_tag_version(&mut self, name: &str, version: &str) {
        let h = hash_of(6, &(name, version));
        self.put(Entry::TagVersion(name.to_string()), h);
    }

    /// The digest of what was added: `None` if a state did not serialise.
    pub fn finish(&self) -> Option<SnapshotDigest> {
        if self.malformed {
            return None;
        }
        let (a, b) = (self.entries.values()).fold((0u64, 0u64), |(a, b), (x, y)| {
            (a.wrapping_add(*x), b.wrapping_add(*y))
        });
        let mut w = writer();
        w.write_u64(a);
        w.write_u64(b);
        w.write_usize(self.entries.len());
        Some(SnapshotDigest(w.0.finish(), w.1.finish()))
    }
}

/// A [`crate::observe::Gather`] that keeps only the [`Digests`] of what is read: a
/// component's resources digested as they arrive, none of them held (a resync of a
/// component of 10,000 specs, which only compares).
#[derive(Debug, Default)]
pub struct DigestGather {
    pub digests: Digests,
    /// The locations of the VNets read (for the service tags to read).
    locations: HashMap<ResourceId, Option<String>>,
    /// The service tags given, lower-cased (names match ignoring case).
    tags: HashSet<String>,
}

impl crate::observe::Gather for DigestGather {
    fn nsg(&mut self, nsg: NsgState) {
        self.digests.add_nsg(&nsg);
    }
    fn route_table(&mut self, rt: RouteTableState) {
        self.digests.add_route_table(&rt);
    }
    fn vnet(&mut self, vnet: VnetState, subnets: Vec<SubnetState>) {
        self.digests.add_vnet(&vnet);
        subnets.iter().for_each(|s| self.digests.add_subnet(s));
        self.locations.insert(vnet.id, vnet.location);
    }
    fn environment(&mut self, env: EnvironmentState) {
        self.digests.add_environment(&env);
    }
    fn vnet_location(&self, subnet: &ResourceId) -> Option<String> {
        subnet
            .parent()
            .and_then(|v| self.locations.get(&v).cloned().flatten())
    }
    fn has_service_tag(&self, name: &str) -> bool {
        self.tags.contains(&name.to_ascii_lowercase())
    }
    fn add_service_tag(&mut self, tag: ServiceTagState, version: Option<String>) {
        self.tags.insert(tag.name.to_ascii_lowercase());
        if let Some(v) = version {
            self.digests.add_service_tag_version(&tag.name, &v);
        }
        self.digests.add_service_tag(&tag.name, &tag);
    }
}
