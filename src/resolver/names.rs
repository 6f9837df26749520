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
    let mut out = String::with_capacity(6);
    push_short_hash(&mut out, fnv1a(text));
    out
}

/// The six hex digits of [`short_hash`] of a hash `h`, appended to `out` (`{:06x}` of its
/// low 24 bits).
fn push_short_hash(out: &mut String, h: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..6).rev() {
        out.push(char::from(HEX[((h >> (shift * 4)) & 0xf) as usize]));
    }
}

/// The name stem of a spec: its name, plus a hash of `namespace/name` when another spec of
/// the same name (another namespace) exists.
pub fn stem(key: &SpecKey, collides: bool) -> String {
    if !collides {
        return key.name.to_string();
    }
    // FNV-1a of `namespace/name`, without building that text.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.namespace.bytes().chain([b'/']).chain(key.name.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = String::with_capacity(key.name.len() + 7);
    out.push_str(&key.name);
    out.push('-');
    push_short_hash(&mut out, h);
    out
}

/// `asenet-<stem>-<what>`, shortened with a hash of the full name when longer than 80
/// characters. Inputs are ASCII (validated spec names, entry names and tag names).
pub fn owned_name(stem: &str, what: &str) -> String {
    owned_name_of(stem, &[what])
}

/// [`owned_name`] of `what` given in pieces (`["in-", entry, ".", tag]`), written straight
/// into the name (no intermediate text, no formatting machinery: one name per rule).
pub fn owned_name_of(stem: &str, what: &[&str]) -> String {
    let len = OWNED_PREFIX.len() + stem.len() + 1 + what.iter().map(|w| w.len()).sum::<usize>();
    let mut full = String::with_capacity(len);
    full.push_str(OWNED_PREFIX);
    full.push_str(stem);
    full.push('-');
    for w in what {
        full.push_str(w);
    }
    fit(full)
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
    let pieces = [
        DESCRIPTION_PREFIX,
        &owner.namespace,
        "/",
        &owner.name,
        ":",
        reason,
    ];
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    if len > MAX_DESCRIPTION && pieces.iter().all(|p| p.is_ascii()) {
        // ASCII: the first 140 characters are the first 140 bytes, written into a text of
        // that size (every owned rule keeps its description).
        let mut cut = String::with_capacity(MAX_DESCRIPTION);
        for p in pieces {
            let room = MAX_DESCRIPTION - cut.len();
            cut.push_str(p.get(..p.len().min(room)).unwrap_or_default());
        }
        return cut;
    }
    let mut full = String::with_capacity(len);
    for p in pieces {
        full.push_str(p);
    }
    // A text of at most 140 bytes has at most 140 characters: no need to count them.
    if full.len() <= MAX_DESCRIPTION {
        return full;
    }
    // The first 140 characters: cut in place at the 141st (at byte 140 for ASCII).
    let cut = if full.is_ascii() {
        Some(MAX_DESCRIPTION)
    } else {
        full.char_indices().nth(MAX_DESCRIPTION).map(|(i, _)| i)
    };
    if let Some(cut) = cut {
        full.truncate(cut);
    }
    full
}

/// The owning spec written in an owned rule's description, if the description has the
/// `asenet:<namespace>/<name>:` shape.
pub fn owner_from_description(desc: &str) -> Option<SpecKey> {
    owner_parts(desc).map(|(ns, name)| SpecKey::new(ns, name))
}

/// [`owner_from_description`] without allocating: `(namespace, name)` borrowed from `desc`.
pub(crate) fn owner_parts(desc: &str) -> Option<(&str, &str)> {
    let rest = desc.trim_start().strip_prefix(DESCRIPTION_PREFIX)?;
    // The first `:`, then the first `/` before it, found byte by byte (both ASCII, so the
    // cuts are char boundaries; the same parts as `split_once`).
    let key = rest.get(..rest.bytes().position(|b| b == b':')?)?;
    let slash = key.bytes().position(|b| b == b'/')?;
    let (ns, name) = (key.get(..slash)?, key.get(slash + 1..)?);
    // Byte by byte: a non-ASCII character fails as its first byte does.
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    (ok(ns) && ok(name)).then_some((ns, name))
}

/// True when `name` carries the owned prefix (case-insensitively, as Azure compares names).
pub fn is_owned_name(name: &str) -> bool {
    name.len() >= OWNED_PREFIX.len()
        && name[..OWNED_PREFIX.len()].eq_ignore_ascii_case(OWNED_PREFIX)
}

// ---------------------------------------------------------------------------------------
// Route owners. ARM routes have no description (docs/domain.md 3.1), so the owner of an
// owned route is read back from its name: `asenet-<stem>-<what>`, where `<what>` is one of
// the forms `assemble` writes (`internet-default`, `tag-<Tag>`, `<a.b.c.d>-<len>`) and the
// stem is the spec's name, or its name and a hash of `namespace/name` (see `stem`). The
// grammar of `<what>` makes the split exact: spec `ase` cannot claim `asenet-ase-one-...`,
// whose rest `one-...` is no `<what>`.
// ---------------------------------------------------------------------------------------

/// True when `what` is one of the suffixes `assemble` gives routes.
fn is_route_what(what: &str) -> bool {
    if what.eq_ignore_ascii_case("internet-default") {
        return true;
    }
    if let Some(tag) = what.strip_prefix("tag-") {
        return crate::model::looks_like_tag(tag);
    }
    match what.rsplit_once('-') {
        Some((addr, len)) => {
            addr.parse::<std::net::Ipv4Addr>().is_ok()
                && len.parse::<u8>().is_ok_and(|l| (1..=32).contains(&l))
                && !len.starts_with('0')
        }
        None => false,
    }
}

/// True when `rest` is the beginning of some `<what>` (what a name cut to 80 characters
/// keeps of it).
fn is_route_what_prefix(rest: &str) -> bool {
    let lower = rest.to_ascii_lowercase();
    "internet-default".starts_with(&lower)
        || "tag-".starts_with(&lower)
        || lower
            .strip_prefix("tag-")
            .is_some_and(|t| t.is_empty() || crate::model::looks_like_tag(t))
        || (!rest.is_empty()
            && rest.starts_with(|c: char| c.is_ascii_digit())
            && rest
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
            && rest.matches('-').count() <= 1)
}

/// The stems `key`'s entries may be named with: plain, and with the namespace hash.
fn stems_of(key: &SpecKey) -> [String; 2] {
    [stem(key, false), stem(key, true)]
}

/// How well the owned route `name` matches the stem `st`: `Some(len)` (the stem's length,
/// longer is more specific) when `name` is a name `assemble` gives a route of a spec with
/// that stem.
fn route_match(name: &str, st: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    let head = format!("{OWNED_PREFIX}{}", st.to_ascii_lowercase());
    // The full form: `asenet-<stem>-<what>`.
    if let Some(rest) = lower.strip_prefix(&head).and_then(|r| r.strip_prefix('-')) {
        let rest_cased = &name[name.len() - rest.len()..];
        if is_route_what(rest_cased) {
            return Some(st.len());
        }
    }
    // A name cut to 80 characters by `fit`: `<first characters>-<6 hex digits>`.
    if name.len() <= MAX_NAME {
        if let Some((cut, hash)) = lower.rsplit_once('-') {
            let hex = hash.len() == 6 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if hex && cut.len() > OWNED_PREFIX.len() {
                let whole = format!("{head}-");
                let fits = if cut.len() <= whole.len() {
                    whole.starts_with(cut)
                } else {
                    cut.strip_prefix(&whole).is_some_and(is_route_what_prefix)
                };
                // A cut name is at least 73 characters before trimming (see `fit`).
                if fits && cut.len() + 1 + hash.len() >= MAX_NAME - 8 {
                    return Some(st.len());
                }
            }
        }
    }
    None
}

/// The owner of the owned route `name` among `candidates`: the spec whose stem matches
/// most specifically (ties go to the smallest key), or `None` when no candidate gave it.
/// For many names against the same candidates, build a [`RouteOwners`] once instead.
pub fn route_owner<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a SpecKey>,
) -> Option<&'a SpecKey> {
    RouteOwners::new(candidates).owner(name)
}

/// Specs that may own a route, indexed by their lower-case stems, so finding the owner of
/// a route name costs a few hash lookups rather than a pass over every spec (a fleet
/// re-plan asks this for every observed route, against every spec in the input).
#[derive(Debug, Default)]
pub struct RouteOwners<'a> {
    by_stem: std::collections::HashMap<String, Vec<&'a SpecKey>>,
    keys: Vec<&'a SpecKey>,
}

impl<'a> RouteOwners<'a> {
    pub fn new(candidates: impl IntoIterator<Item = &'a SpecKey>) -> Self {
        let mut index = RouteOwners::default();
        for key in candidates {
            for mut st in stems_of(key) {
                st.make_ascii_lowercase();
                index.by_stem.entry(st).or_default().push(key);
            }
            index.keys.push(key);
        }
        index
    }

    /// The owner of `name` among these candidates (see [`route_owner`]).
    pub fn owner(&self, name: &str) -> Option<&'a SpecKey> {
        best(self.matches(name))
    }

    /// Every candidate that could have given `name`, with how specific its match is
    /// (the stem's length).
    pub fn matches(&self, name: &str) -> Vec<(usize, &'a SpecKey)> {
        let owned = is_owned_name(name);
        let lower = name.to_ascii_lowercase();
        let mut found = Vec::new();
        if owned {
            // The full form `asenet-<stem>-<what>`: the stem ends at one of the hyphens.
            let rest = lower.get(OWNED_PREFIX.len()..).unwrap_or_default();
            for (i, _) in rest.match_indices('-') {
                let Some(keys) = self.by_stem.get(&rest[..i]) else {
                    continue;
                };
                if is_route_what(&name[OWNED_PREFIX.len() + i + 1..]) {
                    found.extend(keys.iter().map(|k| (i, *k)));
                }
            }
            // A name cut by `fit` keeps only a prefix of the stem: rare, so every
            // candidate is tried.
            if is_cut(name, &lower) {
                for &k in &self.keys {
                    let m = stems_of(k)
                        .iter()
                        .filter_map(|st| route_match(name, st))
                        .max();
                    found.extend(m.map(|m| (m, k)));
                }
            }
        }
        found
    }
}

/// The most specific match; ties go to the smallest key.
pub fn best<'a>(matches: impl IntoIterator<Item = (usize, &'a SpecKey)>) -> Option<&'a SpecKey> {
    matches
        .into_iter()
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, k)| k)
}

/// Whether `name` has the shape of a name cut to 80 characters by `fit`.
fn is_cut(name: &str, lower: &str) -> bool {
    name.len() <= MAX_NAME
        && lower.rsplit_once('-').is_some_and(|(cut, hash)| {
            hash.len() == 6
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && cut.len() > OWNED_PREFIX.len()
                && cut.len() + 1 + hash.len() >= MAX_NAME - 8
        })
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
    fn a_route_belongs_to_the_spec_whose_name_it_carries_and_no_other() {
        let one = SpecKey::new("network", "ase-one");
        let two = SpecKey::new("network", "ase-two");
        let ase = SpecKey::new("network", "ase");
        let all = [ase.clone(), one.clone(), two.clone()];
        let owner = |name: &str| route_owner(name, &all).cloned();
        assert_eq!(owner("asenet-ase-one-internet-default"), Some(one.clone()));
        assert_eq!(owner("asenet-ase-two-internet-default"), Some(two.clone()));
        assert_eq!(owner("asenet-ase-internet-default"), Some(ase.clone()));
        assert_eq!(
            owner("asenet-ase-one-tag-AppServiceManagement"),
            Some(one.clone())
        );
        assert_eq!(owner("asenet-ase-one-52.0.0.0-8"), Some(one.clone()));
        assert_eq!(owner("ASENET-ASE-ONE-INTERNET-DEFAULT"), Some(one.clone()));
        // Not a name asenet gives a route of any of them.
        assert_eq!(owner("asenet-ase-three-internet-default"), None);
        assert_eq!(owner("asenet-ase-one-extra"), None);
        assert_eq!(owner("corp-default"), None);
        // Outside the candidates: nobody in the input owns it.
        assert_eq!(route_owner("asenet-ase-one-internet-default", [&two]), None);
        // The hashed stem of a name used in two namespaces names its namespace.
        let other = SpecKey::new("team", "ase-one");
        let hashed = owned_name(&stem(&other, true), "internet-default");
        assert_eq!(route_owner(&hashed, [&one, &other]), Some(&other));
        assert_eq!(route_owner(&hashed, [&one]), None);
    }

    #[test]
    fn a_route_name_cut_to_80_characters_still_names_its_owner() {
        let long = SpecKey::new("network", "a".repeat(60));
        let longer = SpecKey::new("network", format!("{}-b", "a".repeat(60)));
        for what in [
            "internet-default",
            "tag-AppServiceManagement",
            "52.123.45.0-24",
        ] {
            let n = owned_name(&stem(&long, false), what);
            assert_eq!(n.len(), 80, "{n}");
            assert_eq!(route_owner(&n, [&long, &longer]), Some(&long), "{n}");
            let m = owned_name(&stem(&longer, false), what);
            assert_eq!(route_owner(&m, [&long, &longer]), Some(&longer), "{m}");
        }
    }

    /// The owner by a pass over every candidate: the definition `RouteOwners` indexes.
    fn owner_by_scan<'a>(name: &str, keys: &[&'a SpecKey]) -> Option<&'a SpecKey> {
        if !is_owned_name(name) {
            return None;
        }
        best(keys.iter().filter_map(|k| {
            let m = stems_of(k)
                .iter()
                .filter_map(|st| route_match(name, st))
                .max();
            m.map(|m| (m, *k))
        }))
    }

    #[test]
    fn the_stem_index_finds_the_same_owner_as_a_pass_over_every_spec() {
        // Names that are prefixes of each other, hyphenated names, one namespace apart, and
        // names long enough to be cut to 80 characters.
        let long = "a".repeat(70);
        let specs: Vec<SpecKey> = [
            ("n1", "ase"),
            ("n1", "ase-two"),
            ("n2", "ase-two"),
            ("n1", "ase-two-web"),
            ("n1", "x"),
            ("n1", long.as_str()),
            ("n2", &format!("{long}-b")),
        ]
        .iter()
        .map(|(ns, n)| SpecKey::new(*ns, *n))
        .collect();
        let keys: Vec<&SpecKey> = specs.iter().collect();
        let whats = [
            "internet-default",
            "tag-AppServiceManagement",
            "10.0.0.0-16",
            "web-in",
            "tag-",
        ];
        let mut names = vec![
            "corp-route".to_string(),
            "asenet-".into(),
            "ASENET-ASE-10.1.0.0-24".into(),
        ];
        for k in &specs {
            for collides in [false, true] {
                for what in whats {
                    names.push(owned_name(&stem(k, collides), what));
                }
            }
        }
        let index = RouteOwners::new(keys.iter().copied());
        let mut owned = 0;
        for name in &names {
            for subset in [&keys[..], &keys[..3], &keys[3..]] {
                let sub = RouteOwners::new(subset.iter().copied());
                assert_eq!(sub.owner(name), owner_by_scan(name, subset), "{name}");
            }
            owned += usize::from(index.owner(name).is_some());
        }
        // The check is not vacuous: most generated names do have an owner.
        assert!(
            owned >= specs.len() * 2 * 3,
            "{owned} of {} names owned",
            names.len()
        );
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
