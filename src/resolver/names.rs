//! Names and descriptions of owned rules and routes.
//!
//! Names are `asenet-<stem>-<what>`: `<stem>` is the spec's name, `<what>` says which
//! requirement or entry and which direction (`req-mgmt-in`, `in-web`, `in-web.Internet`,
//! `be-orders-sql`). They depend on nothing that changes with content (ports, addresses),
//! so a changed rule is updated in place rather than deleted and re-created.
//!
//! A short deterministic hash (FNV-1a, not std's hasher, whose output may change between
//! Rust releases) is added when a name would exceed 80 characters (docs/domain.md 2.2) or
//! when two specs of the same name in different namespaces would produce the same names.
//!
//! Descriptions are `asenet:<namespace>/<name>:<reason>`, at most 140 characters
//! (docs/domain.md 2.1), so the diff can read the owner back (`owner_from_description`).

use crate::model::SpecKey;

use super::OWNED_PREFIX;

/// Azure's limit on rule, route and resource names (docs/domain.md 2.2).
pub const MAX_NAME: usize = 80;
/// Azure's limit on a rule description (docs/domain.md 2.1).
pub const MAX_DESCRIPTION: usize = 140;
/// Descriptions of owned rules start with this marker.
pub const DESCRIPTION_PREFIX: &str = "asenet:";

/// 64-bit FNV-1a: small, stable across platforms and Rust versions.
pub fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Six hex digits of the FNV-1a hash.
pub fn short_hash(text: &str) -> String {
    format!("{:06x}", fnv1a(text) & 0xff_ffff)
}

/// The name stem of a spec: its name, plus a hash of `namespace/name` when another spec of
/// the same name (another namespace) exists.
pub fn stem(key: &SpecKey, collides: bool) -> String {
    if collides {
        format!("{}-{}", key.name, short_hash(&key.to_string()))
    } else {
        key.name.to_string()
    }
}

/// `asenet-<stem>-<what>`, shortened with a hash of the full name when longer than 80
/// characters. Inputs are ASCII (validated spec names, entry names and tag names).
pub fn owned_name(stem: &str, what: &str) -> String {
    fit(format!("{OWNED_PREFIX}{stem}-{what}"))
}

fn fit(full: String) -> String {
    if full.len() <= MAX_NAME {
        return full;
    }
    let h = short_hash(&full);
    let keep = MAX_NAME - 1 - h.len();
    let head = full
        .get(..keep)
        .unwrap_or(&full)
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{h}")
}

/// `asenet:<namespace>/<name>:<reason>`, cut to 140 characters.
pub fn description(owner: &SpecKey, reason: &str) -> String {
    let mut full = String::with_capacity(
        DESCRIPTION_PREFIX.len() + owner.namespace.len() + owner.name.len() + reason.len() + 2,
    );
    full.push_str(DESCRIPTION_PREFIX);
    full.push_str(&owner.namespace);
    full.push('/');
    full.push_str(&owner.name);
    full.push(':');
    full.push_str(reason);
    // A text of at most 140 bytes has at most 140 characters: no need to count them.
    if full.len() <= MAX_DESCRIPTION || full.chars().count() <= MAX_DESCRIPTION {
        return full;
    }
    full.chars().take(MAX_DESCRIPTION).collect()
}

/// The owning spec written in an owned rule's description, if the description has the
/// `asenet:<namespace>/<name>:` shape.
pub fn owner_from_description(desc: &str) -> Option<SpecKey> {
    owner_parts(desc).map(|(ns, name)| SpecKey::new(ns, name))
}

/// [`owner_from_description`] without allocating: `(namespace, name)` borrowed from `desc`.
pub(crate) fn owner_parts(desc: &str) -> Option<(&str, &str)> {
    let rest = desc.trim_start().strip_prefix(DESCRIPTION_PREFIX)?;
    let (key, _) = rest.split_once(':')?;
    let (ns, name) = key.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    (ok(ns) && ok(name)).then_some((ns, name))
}

/// True when `name` carries the owned prefix (case-insensitively, as Azure compares names).
pub fn is_owned_name(name: &str) -> bool {
    name.len() >= OWNED_PREFIX.len()
        && name[..OWNED_PREFIX.len()].eq_ignore_ascii_case(OWNED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::check_azure_name;

    #[test]
    fn descriptions_round_trip_their_owner() {
        let k = SpecKey::new("network", "ase-two");
        let d = description(&k, "management 454-455 (ASE V2, required)");
        assert!(d.starts_with("asenet:network/ase-two:management"));
        assert_eq!(owner_from_description(&d), Some(k));
        assert_eq!(owner_from_description("corp rule"), None);
        assert_eq!(owner_from_description("asenet:nope"), None);
    }

    #[test]
    fn long_descriptions_are_cut_to_140_characters() {
        let k = SpecKey::new("network", "ase-two");
        let d = description(&k, &"x".repeat(300));
        assert_eq!(d.chars().count(), 140);
        assert_eq!(owner_from_description(&d), Some(k));
    }

    #[test]
    fn long_names_are_hashed_into_80_valid_characters_deterministically() {
        let long = "a".repeat(70);
        let n = owned_name(&long, "in-web.AzureFrontDoor.Backend");
        assert_eq!(n.len(), 80);
        assert!(check_azure_name(&n).is_ok(), "{n}");
        assert_eq!(n, owned_name(&long, "in-web.AzureFrontDoor.Backend"));
        assert_ne!(n, owned_name(&long, "in-web.AzureFrontDoor.Frontend"));
        assert_eq!(owned_name("ase-two", "in-web"), "asenet-ase-two-in-web");
    }

    #[test]
    fn colliding_spec_names_get_distinct_stems() {
        let a = stem(&SpecKey::new("team-a", "ase"), true);
        let b = stem(&SpecKey::new("team-b", "ase"), true);
        assert_ne!(a, b);
        assert!(a.starts_with("ase-"));
        assert_eq!(stem(&SpecKey::new("team-a", "ase"), false), "ase");
    }
}
