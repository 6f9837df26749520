//! A digest of what a plan reads of a snapshot: the controller keeps a component's outcome
//! through a resync when Azure still holds what the outcome was planned from (or what its
//! writes left), instead of resolving and diffing the same input again (docs/operator.md,
//! "What a reconcile does"). Shell code: keyed with process randomness, hashing through
//! `std::io::Write`, so it lives outside the pure core (tests/purity.rs).

use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};

use crate::snapshot::{NsgState, RouteTableState, Snapshot, SubnetState, VnetState};

/// A digest of a snapshot ([`digest`]): 128 bits, keyed per process, so only
/// compared with digests taken by the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotDigest(u64, u64);

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
    static KEYS: std::sync::OnceLock<(RandomState, RandomState)> = std::sync::OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    let mut w = DigestWriter(a.build_hasher(), b.build_hasher());
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
    w.write_usize(virtual_networks.len());
    for v in virtual_networks.values() {
        let VnetState {
            id,
            location,
            address_prefixes,
        } = v;
        serde_json::to_writer(&mut w, &(id, location, address_prefixes)).ok()?;
    }
    w.write_usize(subnets.len());
    for s in subnets.values() {
        let SubnetState {
            id,
            address_prefix,
            network_security_group,
            route_table,
            etag: _,
            raw: _,
        } = s;
        let fields = (id, address_prefix, network_security_group, route_table);
        serde_json::to_writer(&mut w, &fields).ok()?;
    }
    w.write_usize(network_security_groups.len());
    for n in network_security_groups.values() {
        let NsgState {
            id,
            location,
            etag: _,
            rules,
            raw_rules: _,
            raw: _,
        } = n;
        serde_json::to_writer(&mut w, &(id, location, rules)).ok()?;
    }
    w.write_usize(route_tables.len());
    for r in route_tables.values() {
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
        serde_json::to_writer(&mut w, &fields).ok()?;
    }
    w.write_usize(environments.len());
    for e in environments.values() {
        serde_json::to_writer(&mut w, e).ok()?;
    }
    serde_json::to_writer(&mut w, service_tags).ok()?;
    serde_json::to_writer(&mut w, service_tag_versions).ok()?;
    Some(SnapshotDigest(w.0.finish(), w.1.finish()))
}
